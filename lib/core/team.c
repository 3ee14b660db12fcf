/*
 * team.c -- threads that share the work of one shard, step by step.
 *
 * A batch of fewer images than cores has fewer shards than cores, and an
 * image's passes are a long chain of short steps (a cifar image at batch 1
 * runs some 400 products of 0.05 to 1 ms).  A team is the shard's thread
 * plus helpers started for the call, which split each such step between
 * them: the caller publishes a job, every member runs its part, the caller
 * returns when all have.  Starting threads per step would cost more than
 * the short steps themselves, so helpers wait for the next job by spinning
 * briefly (a step usually follows within microseconds) and then sleep on a
 * condition variable, so that a team whose caller works alone for a while
 * does not hold a core.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "core.h"

/* The spin loop has no pause instruction: on a virtual machine, pause-loop
 * exiting can turn a spinning thread's pauses into exits to the
 * hypervisor (docs/performance.md measures the difference). */
#define SPIN_PAUSE() ((void)0)

/* How long a waiting thread spins before it sleeps, in nanoseconds:
 * waking a sleeping thread cost tens of microseconds on the virtual
 * machines of docs/performance.md, as much as a step of a small image,
 * while the gaps between one shard's steps are mostly shorter than this. */
#define SPIN_NS 1000000

typedef struct {
  glow__team *team;
  int32_t part;
  pthread_t tid;
} member;

struct glow__team {
  int32_t size; /* members, the caller's thread included */
  void (*fn)(void *ctx, int32_t part, int32_t parts);
  void *ctx;
  atomic_uint gen;     /* bumped for every job, and to stop */
  atomic_int pending;  /* helpers still running the current job */
  atomic_int stopping; /* helpers are to return */
  pthread_mutex_t lock;
  pthread_cond_t wake; /* helpers: a new job or stop */
  pthread_cond_t done; /* the caller: the last helper finished */
  int32_t sleepers;    /* helpers waiting on wake, under lock */
  int caller_sleeps;   /* the caller waits on done, under lock */
  member *members;     /* [1, size): the helpers */
};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spin until ready(arg) or SPIN_NS have passed; 1 if ready. */
static int spin_until(int (*ready)(const glow__team *t, unsigned seen),
                      const glow__team *t, unsigned seen) {
  int64_t start = 0;
  for (uint32_t i = 0;; i++) {
    if (ready(t, seen))
      return 1;
    SPIN_PAUSE();
    if ((i & 255) == 255) { /* the clock only now and then */
      const int64_t ns = now_ns();
      if (!start)
        start = ns;
      else if (ns - start > SPIN_NS)
        return 0;
    }
  }
}

static int job_posted(const glow__team *t, unsigned seen) {
  return atomic_load_explicit(&t->gen, memory_order_acquire) != seen;
}

static int job_done(const glow__team *t, unsigned seen) {
  (void)seen;
  return atomic_load_explicit(&t->pending, memory_order_acquire) == 0;
}

/* Wait until the job generation differs from seen; returns it. */
static unsigned wait_job(glow__team *t, unsigned seen) {
  if (spin_until(job_posted, t, seen))
    return atomic_load_explicit(&t->gen, memory_order_acquire);
  pthread_mutex_lock(&t->lock);
  t->sleepers++;
  unsigned g;
  while ((g = atomic_load_explicit(&t->gen, memory_order_acquire)) == seen)
    pthread_cond_wait(&t->wake, &t->lock);
  t->sleepers--;
  pthread_mutex_unlock(&t->lock);
  return g;
}

static void *helper(void *arg) {
  member *me = arg;
  glow__team *t = me->team;
  unsigned seen = 0;
  for (;;) {
    seen = wait_job(t, seen);
    if (atomic_load_explicit(&t->stopping, memory_order_acquire))
      return NULL;
    t->fn(t->ctx, me->part, t->size);
    if (atomic_fetch_sub_explicit(&t->pending, 1, memory_order_acq_rel) == 1) {
      pthread_mutex_lock(&t->lock);
      if (t->caller_sleeps)
        pthread_cond_signal(&t->done);
      pthread_mutex_unlock(&t->lock);
    }
  }
}

/* Publish a new generation (a job or stop) and wake sleeping helpers. */
static void publish(glow__team *t) {
  pthread_mutex_lock(&t->lock);
  atomic_fetch_add_explicit(&t->gen, 1, memory_order_acq_rel);
  if (t->sleepers)
    pthread_cond_broadcast(&t->wake);
  pthread_mutex_unlock(&t->lock);
}

glow__team *glow__team_start(int32_t size) {
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
  atomic_init(&t->gen, 0);
  atomic_init(&t->pending, 0);
  atomic_init(&t->stopping, 0);
  pthread_mutex_init(&t->lock, NULL);
  pthread_cond_init(&t->wake, NULL);
  pthread_cond_init(&t->done, NULL);
  /* A helper that cannot start leaves the team smaller. */
  t->size = 1;
  for (int32_t p = 1; p < size; p++) {
    mb[p] = (member){t, p, 0};
    if (pthread_create(&mb[p].tid, NULL, helper, &mb[p]) != 0)
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
                    void (*fn)(void *ctx, int32_t part, int32_t parts),
                    void *ctx) {
  if (!t) {
    fn(ctx, 0, 1);
    return;
  }
  t->fn = fn;
  t->ctx = ctx;
  atomic_store_explicit(&t->pending, t->size - 1, memory_order_relaxed);
  publish(t);
  fn(ctx, 0, t->size);
  if (spin_until(job_done, t, 0))
    return;
  pthread_mutex_lock(&t->lock);
  t->caller_sleeps = 1;
  while (atomic_load_explicit(&t->pending, memory_order_acquire) != 0)
    pthread_cond_wait(&t->done, &t->lock);
  t->caller_sleeps = 0;
  pthread_mutex_unlock(&t->lock);
}

void glow__team_stop(glow__team *t) {
  if (!t)
    return;
  atomic_store_explicit(&t->stopping, 1, memory_order_release);
  publish(t);
  for (int32_t p = 1; p < t->size; p++)
    pthread_join(t->members[p].tid, NULL);
  pthread_cond_destroy(&t->done);
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

static void range_part(void *ctx, int32_t p, int32_t parts) {
  const range_job *j = ctx;
  int64_t lo, hi;
  glow__part_range(j->count, p, parts, &lo, &hi);
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
  range_job j = {fn, ctx, count};
  glow__team_run(t, range_part, &j);
}
