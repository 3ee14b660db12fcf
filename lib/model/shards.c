/*
 * shards.c -- a batch split into shards of whole images, run on threads.
 *
 * Every image goes through the flow on its own: actnorms and 1x1 convs
 * act per pixel, a coupling's convolutions per image, and only the
 * parameter gradients and the loss sum over the batch.  So a call splits
 * its batch into contiguous shards, gives each a workspace of its own and
 * runs them on threads; a training call then adds the shards' gradients in
 * shard order.  Two multi-threaded GEMMs at once fight over the same
 * cores, so this pays only when the BLAS runs single-threaded inside the
 * shards: the automatic setting shards only then (see GLOW_OPT_THREADS).
 *
 * A batch of fewer images than threads has fewer shards than threads:
 * each shard then gets a team (core.h) of the threads left over, which
 * split its products, so that one image uses every core.
 *
 * The threads come from the model's crew (crew.c): started by the first
 * call that needs them and parked between calls, so that later calls
 * neither pay for starting them nor find them placed on the caller's own
 * core.  A call that cannot start one runs that thread's shards itself.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"

/* OpenBLAS's own thread count, when the CBLAS is OpenBLAS.  Weak: with
 * another CBLAS the symbol is absent and the pointer NULL. */
extern int openblas_get_num_threads(void) __attribute__((weak));

/* CPUs this process may run on (its affinity mask, which taskset and
 * container CPU sets narrow), else the online count. */
static int32_t cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return CPU_COUNT(&set);
  long c = sysconf(_SC_NPROCESSORS_ONLN);
  return c > 0 ? (int32_t)c : 1;
}

int32_t glow__threads(const glow_model *m) {
  if (m->opts.threads > 0)
    return m->opts.threads;
  /* Automatic: shard when the products run single-threaded, with the own
   * kernel or a BLAS known to run one thread.  A multi-threaded or unknown
   * BLAS keeps the cores to itself. */
  if (!glow__model_gemm_own(m) &&
      (!openblas_get_num_threads || openblas_get_num_threads() != 1))
    return 1;
  int32_t c = cpu_count();
  return c < GLOW__MAX_THREADS ? c : GLOW__MAX_THREADS;
}

glow__shard *glow__shards_new(int32_t n, int32_t threads, int32_t *count) {
  const int32_t k = threads < n ? threads : n;
  glow__shard *sh = glow__malloc(sizeof *sh * (size_t)k);
  if (!sh) {
    glow__fail(GLOW_ERR_NOMEM, "out of memory for %d shards", k);
    return NULL;
  }
  for (int32_t s = 0; s < k; s++) {
    /* Sizes differ by at most one image. */
    sh[s].first = (int32_t)((int64_t)n * s / k);
    sh[s].count = (int32_t)((int64_t)n * (s + 1) / k) - sh[s].first;
    sh[s].ws = NULL;
    sh[s].rc = GLOW_OK;
    sh[s].msg[0] = '\0';
  }
  *count = k;
  return sh;
}

void glow__shard_done(glow__shard *sh, int rc) {
  sh->rc = rc;
  if (rc)
    snprintf(sh->msg, sizeof sh->msg, "%s", glow_last_error());
}

int glow__shards_status(const glow__shard *sh, int32_t count) {
  for (int32_t s = 0; s < count; s++)
    if (sh[s].rc) /* the message into the calling thread's slot */
      return glow__fail(sh[s].rc, "%s", sh[s].msg);
  return GLOW_OK;
}

glow__crew *glow__model_crew(const glow_model *m) {
  return m->opts.keep_workspace ? m->crew : NULL;
}

typedef struct {
  void (*fn)(void *ctx, int32_t shard);
  void *ctx;
  int32_t shard;
} worker;

static void work(void *arg) {
  const worker *w = arg;
  w->fn(w->ctx, w->shard);
}

void glow__parallel(glow__crew *crew, int32_t shards,
                    void (*fn)(void *ctx, int32_t shard), void *ctx) {
  if (shards < 2) {
    if (shards == 1)
      fn(ctx, 0);
    return;
  }
  worker *w = glow__malloc(sizeof *w * (size_t)shards);
  glow__hand **hand = glow__calloc((size_t)shards, sizeof *hand);
  if (!w || !hand) { /* no room to start threads: the caller runs them all */
    glow__free(w);
    glow__free(hand);
    for (int32_t s = 0; s < shards; s++)
      fn(ctx, s);
    return;
  }
  for (int32_t s = 1; s < shards; s++) {
    w[s] = (worker){fn, ctx, s};
    hand[s] = glow__crew_run(crew, work, &w[s]);
  }
  fn(ctx, 0);
  /* Shards whose thread did not start, then the others' ends. */
  for (int32_t s = 1; s < shards; s++)
    if (!hand[s])
      fn(ctx, s);
  for (int32_t s = 1; s < shards; s++)
    glow__hand_join(hand[s]);
  glow__free(w);
  glow__free(hand);
}

/* Shard s's share of the threads left over. */
static int32_t team_share(int32_t threads, int32_t shards, int32_t s) {
  return (int32_t)((int64_t)threads * (s + 1) / shards -
                   (int64_t)threads * s / shards);
}

static double steps(const glow_model *m) {
  return (double)m->cfg.levels * m->cfg.depth;
}

int32_t glow__shard_team(const glow_model *m, int32_t threads, int32_t shards,
                         int32_t s) {
  if (shards >= threads ||
      (m->flops_per_image < GLOW__TEAM_MIN_STEP_FLOPS * steps(m) &&
       !glow__team_split_all))
    return 1;
  return team_share(threads, shards, s);
}

glow__team_choice *glow__choice_for(const glow_model *m, int32_t threads,
                                    int32_t shards, int training) {
  const double f = m->flops_per_image / steps(m);
  if (shards != 1 || threads < 2 || glow__team_split_all ||
      f < GLOW__TEAM_TRY_STEP_FLOPS || f >= GLOW__TEAM_MIN_STEP_FLOPS ||
      !glow__model_gemm_own(m))
    return NULL;
  return (glow__team_choice *)&m->choice[training ? 1 : 0];
}

void glow__choice_reset(glow__team_choice *c) {
  atomic_store(&c->calls, 0);
  atomic_store(&c->best[0], UINT64_MAX);
  atomic_store(&c->best[1], UINT64_MAX);
  atomic_store(&c->team, 0);
}

int glow__choice_take(glow__team_choice *c, int *probe) {
  const uint32_t i =
      atomic_fetch_add_explicit(&c->calls, 1, memory_order_relaxed) %
      GLOW__CHOICE_ROUND;
  if (i < GLOW__CHOICE_PROBES) {
    /* Alone or team in the Thue-Morse order (0 1 1 0 1 0 0 1), not
     * alternately: a host that alternates two calls (an encode and a
     * decode) then has each way timed on both. */
    *probe = (int)((i ^ i >> 1 ^ i >> 2) & 1); /* parity of i < 8 */
    return *probe;
  }
  *probe = -1;
  if (i == GLOW__CHOICE_PROBES) { /* the round's probes are in: choose */
    const uint64_t alone = atomic_exchange(&c->best[0], UINT64_MAX);
    const uint64_t team = atomic_exchange(&c->best[1], UINT64_MAX);
    if (alone != UINT64_MAX || team != UINT64_MAX)
      atomic_store(&c->team, team < alone);
  }
  return atomic_load_explicit(&c->team, memory_order_relaxed);
}

void glow__choice_record(glow__team_choice *c, int way, uint64_t ns) {
  uint64_t best = atomic_load_explicit(&c->best[way], memory_order_relaxed);
  while (ns < best && !atomic_compare_exchange_weak(&c->best[way], &best, ns))
    ;
}

int glow__parallel_shards(const glow_model *m, const glow__shard *sh,
                          int32_t shards, int training,
                          void (*fn)(void *ctx, int32_t shard), void *ctx) {
  const int32_t threads = glow__threads(m);
  glow__team_choice *choice = glow__choice_for(m, threads, shards, training);
  int probe = -1;
  const int team = choice && glow__choice_take(choice, &probe);
  const int64_t start = probe >= 0 ? glow__now_ns() : 0;
  for (int32_t s = 0; s < shards; s++)
    glow__ws_team_start(m, sh[s].ws,
                        team ? team_share(threads, shards, s)
                             : glow__shard_team(m, threads, shards, s));
  glow__parallel(glow__model_crew(m), shards, fn, ctx);
  for (int32_t s = 0; s < shards; s++)
    glow__ws_team_stop(sh[s].ws);
  if (probe >= 0)
    glow__choice_record(choice, probe, (uint64_t)(glow__now_ns() - start));
  return glow__shards_status(sh, shards);
}

int glow__run_shards(const glow_model *m, int32_t n, glow__shard **sh,
                     void (*fn)(void *ctx, int32_t shard), void *ctx) {
  int32_t shards;
  const int32_t threads = glow__threads(m);
  *sh = glow__shards_new(n, threads, &shards);
  if (!*sh)
    return GLOW_ERR_NOMEM;
  int rc = GLOW_OK;
  for (int32_t s = 0; !rc && s < shards; s++)
    rc = glow__ws_take(m, (*sh)[s].count, &(*sh)[s].ws);
  if (!rc)
    rc = glow__parallel_shards(m, *sh, shards, 0, fn, ctx);
  for (int32_t s = 0; s < shards; s++)
    glow__ws_give(m, (*sh)[s].ws);
  glow__free(*sh);
  *sh = NULL;
  return rc;
}
