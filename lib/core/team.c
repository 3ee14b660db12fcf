/*
 * team.c -- threads that share the work of one shard, step by step.
 *
 * A batch of fewer images than cores has fewer shards than cores, and an
 * image's passes are a long chain of short steps (a cifar image at batch 1
 * runs some 300 products of 0.05 to 1 ms).  A team is the shard's thread
 * plus helpers started for the call, which share each such step: the
 * caller posts a job of chunks (GLOW__TEAM_CHUNKS per member), every
 * member takes chunks until none is left, and the caller returns when all
 * are done.  Chunks are taken, not assigned, so that a member the system
 * has descheduled (a busy machine) before it took one holds up nothing.
 *
 * Starting threads per step would cost more than the short steps
 * themselves, so helpers wait for the next job by spinning for up to about
 * a millisecond (a step usually follows within microseconds) and then
 * sleep on a condition variable, so that a team whose caller works alone
 * for a while does not hold a core.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "core.h"

/* The job word: its generation (bits 32-63), its number of chunks (16-31)
 * and the next chunk to take (0-15).  One atomic word, so that a member
 * takes a chunk only of the job it saw posted. */
#define GEN(s) ((uint32_t)((s) >> 32))
#define TOTAL(s) ((uint32_t)((s) >> 16) & 0xffffu)
#define NEXT(s) ((uint32_t)(s)&0xffffu)
#define MAX_CHUNKS 0xffff

typedef struct {
  glow__team *team;
  glow__hand *hand;
} member;

struct glow__team {
  int32_t size; /* members, the caller's thread included */
  void (*fn)(void *ctx, int32_t chunk, int32_t chunks);
  void *ctx;
  _Atomic uint64_t job; /* see GEN, TOTAL, NEXT */
  atomic_int done;      /* chunks of the current job finished */
  atomic_int stopping;  /* helpers are to return */
  pthread_mutex_t lock; /* for the sleepers only */
  pthread_cond_t wake;  /* helpers: a new job, or stop */
  pthread_cond_t all;   /* the caller: the last chunk is done */
  int32_t sleepers;     /* helpers waiting on wake, under lock */
  int caller_sleeps;    /* the caller waits on all, under lock */
  member *members;      /* [1, size): the helpers */
};

/* A job other than generation `seen` is posted, or the team stops. */
static int news(const void *p, uint32_t seen) {
  const glow__team *t = p;
  return GEN(atomic_load_explicit(&t->job, memory_order_acquire)) != seen ||
         atomic_load_explicit(&t->stopping, memory_order_acquire);
}

/* All `total` chunks of the current job are done. */
static int all_done(const void *p, uint32_t total) {
  const glow__team *t = p;
  return (uint32_t)atomic_load_explicit(&t->done, memory_order_acquire) ==
         total;
}

/* Take and run chunks of job generation gen until none is left. */
static void take_chunks(glow__team *t, uint32_t gen) {
  uint64_t s = atomic_load_explicit(&t->job, memory_order_acquire);
  while (GEN(s) == gen && NEXT(s) < TOTAL(s)) {
    if (!atomic_compare_exchange_weak_explicit(
            &t->job, &s, s + 1, memory_order_acq_rel, memory_order_acquire))
      continue; /* s now holds the word's current value */
    /* The job cannot finish before this chunk does, so its function and
     * context stay as they were posted. */
    t->fn(t->ctx, (int32_t)NEXT(s), (int32_t)TOTAL(s));
    const int finished =
        atomic_fetch_add_explicit(&t->done, 1, memory_order_acq_rel) + 1;
    if ((uint32_t)finished == TOTAL(s)) {
      pthread_mutex_lock(&t->lock);
      if (t->caller_sleeps)
        pthread_cond_signal(&t->all);
      pthread_mutex_unlock(&t->lock);
    }
    s = atomic_load_explicit(&t->job, memory_order_acquire);
  }
}

static void helper(void *arg) {
  glow__team *t = ((member *)arg)->team;
  uint32_t seen = 0;
  for (;;) {
    if (!glow__spin_until(news, t, seen)) {
      pthread_mutex_lock(&t->lock);
      t->sleepers++;
      while (!news(t, seen))
        pthread_cond_wait(&t->wake, &t->lock);
      t->sleepers--;
      pthread_mutex_unlock(&t->lock);
    }
    if (atomic_load_explicit(&t->stopping, memory_order_acquire))
      return;
    seen = GEN(atomic_load_explicit(&t->job, memory_order_acquire));
    take_chunks(t, seen);
  }
}

glow__team *glow__team_start(glow__crew *crew, int32_t size) {
  if (size < 2)
    return NULL;
  glow__team *t = glow__calloc(1, sizeof *t);
  member *mb = glow__calloc((size_t)size, sizeof *mb);
  if (!t || !mb) {
    glow__free(t);
    glow__free(mb);
    return NULL;
  }
  t->members = mb;
  atomic_init(&t->job, 0);
  atomic_init(&t->done, 0);
  atomic_init(&t->stopping, 0);
  pthread_mutex_init(&t->lock, NULL);
  pthread_cond_init(&t->wake, NULL);
  pthread_cond_init(&t->all, NULL);
  /* A helper that cannot start leaves the team smaller. */
  t->size = 1;
  for (int32_t p = 1; p < size; p++) {
    mb[p].team = t;
    mb[p].hand = glow__crew_run(crew, helper, &mb[p]);
    if (!mb[p].hand)
      break;
    t->size = p + 1;
  }
  if (t->size < 2) {
    glow__team_stop(t);
    return NULL;
  }
  return t;
}

int32_t glow__team_size(const glow__team *t) { return t ? t->size : 1; }

void glow__team_run(glow__team *t,
                    void (*fn)(void *ctx, int32_t chunk, int32_t chunks),
                    void *ctx, int32_t chunks) {
  if (chunks > MAX_CHUNKS)
    chunks = MAX_CHUNKS;
  if (!t || chunks < 2) {
    for (int32_t c = 0; c < chunks; c++)
      fn(ctx, c, chunks);
    return;
  }
  t->fn = fn;
  t->ctx = ctx;
  atomic_store_explicit(&t->done, 0, memory_order_relaxed);
  const uint32_t gen =
      GEN(atomic_load_explicit(&t->job, memory_order_relaxed)) + 1;
  atomic_store_explicit(&t->job, (uint64_t)gen << 32 | (uint64_t)chunks << 16,
                        memory_order_release);
  pthread_mutex_lock(&t->lock);
  if (t->sleepers)
    pthread_cond_broadcast(&t->wake);
  pthread_mutex_unlock(&t->lock);
  take_chunks(t, gen);
  if (glow__spin_until(all_done, t, (uint32_t)chunks))
    return;
  pthread_mutex_lock(&t->lock);
  t->caller_sleeps = 1;
  while (!all_done(t, (uint32_t)chunks))
    pthread_cond_wait(&t->all, &t->lock);
  t->caller_sleeps = 0;
  pthread_mutex_unlock(&t->lock);
}

void glow__team_stop(glow__team *t) {
  if (!t)
    return;
  pthread_mutex_lock(&t->lock);
  atomic_store_explicit(&t->stopping, 1, memory_order_release);
  pthread_cond_broadcast(&t->wake);
  pthread_mutex_unlock(&t->lock);
  for (int32_t p = 1; p < t->size; p++)
    glow__hand_join(t->members[p].hand);
  pthread_cond_destroy(&t->all);
  pthread_cond_destroy(&t->wake);
  pthread_mutex_destroy(&t->lock);
  glow__free(t->members);
  glow__free(t);
}

int glow__team_split_all = 0;

typedef struct {
  void (*fn)(void *ctx, int64_t lo, int64_t hi);
  void *ctx;
  int64_t count;
} range_job;

static void range_chunk(void *ctx, int32_t c, int32_t chunks) {
  const range_job *j = ctx;
  int64_t lo, hi;
  glow__part_range(j->count, c, chunks, &lo, &hi);
  if (lo < hi)
    j->fn(j->ctx, lo, hi);
}

void glow__team_for(glow__team *t, int64_t count, int64_t grain,
                    void (*fn)(void *ctx, int64_t lo, int64_t hi), void *ctx) {
  if (!t || count < 2 || (count < 2 * grain && !glow__team_split_all)) {
    if (count > 0)
      fn(ctx, 0, count);
    return;
  }
  int64_t chunks = (int64_t)t->size * GLOW__TEAM_CHUNKS;
  if (chunks > count)
    chunks = count;
  range_job j = {fn, ctx, count};
  glow__team_run(t, range_chunk, &j, (int32_t)chunks);
}
