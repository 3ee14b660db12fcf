/*
 * crew.c -- threads a model keeps between the calls that use them.
 *
 * A call on several threads used to start them and join them before it
 * returned.  Starting costs tens of microseconds, but the larger loss was
 * where a new thread runs: the scheduler places it by its fork balancing,
 * which weighs each core's recent load, and right after a call every core
 * was busy.  In back-to-back calls of two shards of one image each on two
 * cores, half of the new threads were placed on the caller's own core and
 * ran their shard after the caller had finished its own, so that half of
 * the calls took twice as long.  A parked thread woken for the next call
 * is placed by the wake-up path instead, which keeps it on the core it last
 * ran on while that core is idle.
 *
 * So a crew keeps the threads its calls start: each hand, once its job is
 * done and joined, parks (spinning for a moment, then asleep) until a later
 * call takes it.  A hand is taken by one caller at a time, so concurrent
 * callers of one model each get hands of their own.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "core.h"

/* How long a waiting thread spins before it sleeps, in nanoseconds:
 * waking a sleeping thread costs tens of microseconds on a virtual
 * machine, as much as a step of a small image, while the gaps between one
 * shard's steps, and between a host's back-to-back calls, are mostly
 * shorter than this. */
#define SPIN_NS 1000000
#define YIELD_NS 50000

enum { IDLE, POSTED, DONE, STOP };

struct glow__hand {
  glow__crew *crew; /* NULL: a thread of its own, for one job */
  pthread_t tid;
  void (*fn)(void *arg);
  void *arg;
  atomic_int state;      /* IDLE, POSTED, DONE or STOP */
  pthread_mutex_t lock;  /* for the sleepers only */
  pthread_cond_t posted; /* the hand: a job, or stop */
  pthread_cond_t done;   /* the joiner: the job is done */
  int hand_sleeps;       /* under lock */
  int joiner_sleeps;     /* under lock */
  glow__hand *next;      /* in the crew's idle list */
};

struct glow__crew {
  pthread_mutex_t lock;
  glow__hand *idle; /* parked hands */
  int32_t count;    /* hands started, parked or not */
  uint64_t forks;   /* fork_count when made: its threads are this process's
                       * while the count is the same */
};

/* Forks this process has made children by, as seen by the child: a child
 * counts one more than its parent did, so a crew made before the fork is
 * not the child's (see crew_here). */
static _Atomic uint64_t fork_count;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void count_fork(void) {
  atomic_fetch_add_explicit(&fork_count, 1, memory_order_relaxed);
}

static void watch_forks(void) { pthread_atfork(NULL, NULL, count_fork); }

int64_t glow__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* After the first YIELD_NS the loop yields the core at each turn: on a
 * machine with more runnable threads than cores (other work), the thread
 * this one waits for may need it.  No pause instruction in the loop: on a
 * virtual machine, pause-loop exiting can turn a spinning thread's pauses
 * into exits to the hypervisor. */
int glow__spin_until(int (*ready)(const void *p, uint32_t a), const void *p,
                     uint32_t a) {
  int64_t start = 0, ns = 0;
  for (uint32_t i = 0;; i++) {
    if (ready(p, a))
      return 1;
    if ((i & 255) == 255 ||
        ns - start > YIELD_NS) { /* the clock now and then */
      ns = glow__now_ns();
      if (!start)
        start = ns;
      else if (ns - start > SPIN_NS)
        return 0;
      else if (ns - start > YIELD_NS)
        sched_yield();
    }
  }
}

static int has_job(const void *p, uint32_t unused) {
  (void)unused;
  const int s = atomic_load_explicit(&((const glow__hand *)p)->state,
                                     memory_order_acquire);
  return s == POSTED || s == STOP;
}

static int is_done(const void *p, uint32_t unused) {
  (void)unused;
  return atomic_load_explicit(&((const glow__hand *)p)->state,
                              memory_order_acquire) == DONE;
}

/* Store state s and wake whoever sleeps on cond for it.  The flag is read
 * under the lock, which the sleeper holds from setting it to waiting, so
 * a sleeper either sees s or gets the signal. */
static void set_state(glow__hand *h, int s, pthread_cond_t *cond,
                      const int *sleeps) {
  atomic_store_explicit(&h->state, s, memory_order_release);
  pthread_mutex_lock(&h->lock);
  if (*sleeps)
    pthread_cond_signal(cond);
  pthread_mutex_unlock(&h->lock);
}

static void wait_for(glow__hand *h, int (*ready)(const void *p, uint32_t a),
                     pthread_cond_t *cond, int *sleeps) {
  if (glow__spin_until(ready, h, 0))
    return;
  pthread_mutex_lock(&h->lock);
  *sleeps = 1;
  while (!ready(h, 0))
    pthread_cond_wait(cond, &h->lock);
  *sleeps = 0;
  pthread_mutex_unlock(&h->lock);
}

static void *hand_main(void *arg) {
  glow__hand *h = arg;
  if (!h->crew) { /* one job, joined by pthread_join */
    h->fn(h->arg);
    return NULL;
  }
  for (;;) {
    wait_for(h, has_job, &h->posted, &h->hand_sleeps);
    if (atomic_load_explicit(&h->state, memory_order_acquire) == STOP)
      return NULL;
    h->fn(h->arg);
    set_state(h, DONE, &h->done, &h->joiner_sleeps);
  }
}

static void hand_free(glow__hand *h) {
  pthread_cond_destroy(&h->done);
  pthread_cond_destroy(&h->posted);
  pthread_mutex_destroy(&h->lock);
  glow__free(h);
}

/* A new thread running fn(arg), in crew c (NULL: its own); NULL if none
 * could be started. */
static glow__hand *hand_start(glow__crew *c, void (*fn)(void *arg), void *arg) {
  glow__hand *h = glow__calloc(1, sizeof *h);
  if (!h)
    return NULL;
  h->crew = c;
  h->fn = fn;
  h->arg = arg;
  atomic_init(&h->state, POSTED);
  if (pthread_mutex_init(&h->lock, NULL) != 0) {
    glow__free(h);
    return NULL;
  }
  pthread_cond_init(&h->posted, NULL);
  pthread_cond_init(&h->done, NULL);
  /* The thread starts with every signal blocked, so that the host's
   * signals go to the host's own threads, whichever caller started it. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  const int rc = pthread_create(&h->tid, NULL, hand_main, h);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    hand_free(h);
    return NULL;
  }
  return h;
}

glow__crew *glow__crew_new(void) {
  glow__crew *c = glow__calloc(1, sizeof *c);
  if (!c)
    return NULL;
  if (pthread_mutex_init(&c->lock, NULL) != 0) {
    glow__free(c);
    return NULL;
  }
  pthread_once(&fork_once, watch_forks);
  c->forks = atomic_load_explicit(&fork_count, memory_order_relaxed);
  return c;
}

/* 1 if c's threads are this process's: a child forked from the process
 * that started them has none of them, so it starts threads of its own and
 * never touches c's lock, which another thread may have held at the
 * fork. */
static int crew_here(const glow__crew *c) {
  return c &&
         c->forks == atomic_load_explicit(&fork_count, memory_order_relaxed);
}

glow__hand *glow__crew_run(glow__crew *c, void (*fn)(void *arg), void *arg) {
  if (!crew_here(c))
    return hand_start(NULL, fn, arg);
  pthread_mutex_lock(&c->lock);
  glow__hand *h = c->idle;
  const int room = !h && c->count < GLOW__CREW_MAX;
  if (h)
    c->idle = h->next;
  else if (room)
    c->count++; /* given back below if the thread cannot start */
  pthread_mutex_unlock(&c->lock);
  if (h) {
    h->fn = fn;
    h->arg = arg;
    set_state(h, POSTED, &h->posted, &h->hand_sleeps);
    return h;
  }
  h = hand_start(room ? c : NULL, fn, arg);
  if (room && !h) {
    pthread_mutex_lock(&c->lock);
    c->count--;
    pthread_mutex_unlock(&c->lock);
  }
  return h;
}

void glow__hand_join(glow__hand *h) {
  if (!h)
    return;
  glow__crew *c = h->crew;
  if (!c) {
    pthread_join(h->tid, NULL);
    hand_free(h);
    return;
  }
  wait_for(h, is_done, &h->done, &h->joiner_sleeps);
  atomic_store_explicit(&h->state, IDLE, memory_order_relaxed);
  pthread_mutex_lock(&c->lock);
  h->next = c->idle;
  c->idle = h;
  pthread_mutex_unlock(&c->lock);
}

void glow__crew_release(glow__crew *c) {
  if (!c)
    return;
  if (!crew_here(c)) {
    /* A forked child: the threads do not exist here, and a hand's lock
     * may have been held by its thread at the fork, so only the memory
     * is freed.  (The list is whole: the fork was made while no call was
     * running on the model, which glow.h asks for.) */
    for (glow__hand *h = c->idle, *next; h; h = next) {
      next = h->next;
      glow__free(h);
    }
    c->idle = NULL;
    c->count = 0;
    return;
  }
  pthread_mutex_lock(&c->lock);
  glow__hand *h = c->idle;
  c->idle = NULL;
  pthread_mutex_unlock(&c->lock);
  int32_t ended = 0;
  while (h) {
    glow__hand *next = h->next;
    set_state(h, STOP, &h->posted, &h->hand_sleeps);
    pthread_join(h->tid, NULL);
    hand_free(h);
    ended++;
    h = next;
  }
  pthread_mutex_lock(&c->lock);
  c->count -= ended;
  pthread_mutex_unlock(&c->lock);
}

void glow__crew_free(glow__crew *c) {
  if (!c)
    return;
  glow__crew_release(c);
  if (crew_here(c))
    pthread_mutex_destroy(&c->lock);
  glow__free(c);
}
