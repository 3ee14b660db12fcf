/*
 * test_crew.c -- the threads a model keeps between calls (crew.c).
 *
 * A crew's thread runs a job, parks when the job is joined and runs a
 * later job, asleep or not in between; jobs taken at once run at once, on
 * different threads, up to the crew's bound and beyond it on threads of
 * their own; concurrent callers share one crew; a crew released or freed
 * leaves no thread behind; its threads block the host's signals.  A model
 * keeps its calls' threads while GLOW_OPT_KEEP_WORKSPACE is 1, with the
 * same results as threads started per call, ends them when asked and with
 * the model, and a forked child goes on using it.  A thread that cannot
 * start (pthread_create failing, injected through the linker's --wrap)
 * leaves the crew's count as it was, and a model's call then runs its
 * shards or a smaller team on the threads it has, with the same bits.
 * Thread counts are read from /proc/self/task.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#include "core.h"
#include "model.h"

/* pthread_create as the library calls it (tests/CMakeLists.txt links this
 * file with --wrap=pthread_create): after `starts_left` more threads
 * (negative: no limit), every start fails with EAGAIN, as when a process
 * is out of threads. */
int __real_pthread_create(pthread_t *t, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);
static atomic_int starts_left = -1, starts_tried, starts_failed;

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg) {
  atomic_fetch_add(&starts_tried, 1);
  int left = atomic_load(&starts_left);
  while (left >= 0) {
    if (left == 0) {
      atomic_fetch_add(&starts_failed, 1);
      return EAGAIN;
    }
    if (atomic_compare_exchange_weak(&starts_left, &left, left - 1))
      break;
  }
  return __real_pthread_create(t, attr, fn, arg);
}

/* From now on, `n` more threads start (negative: all); the counts from 0. */
static void allow_starts(int n) {
  atomic_store(&starts_left, n);
  atomic_store(&starts_tried, 0);
  atomic_store(&starts_failed, 0);
}

/* Each thread's number, from 1, given the first time it runs a job. */
static atomic_int next_id;
static _Thread_local int my_id;

static int thread_id(void) {
  if (!my_id)
    my_id = atomic_fetch_add(&next_id, 1) + 1;
  return my_id;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Threads of this process. */
static int tasks(void) {
  DIR *d = opendir("/proc/self/task");
  assert_non_null(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* The thread count once it settles at `want` (a joined thread leaves the
 * list a moment after): the count itself, so that a mismatch shows it. */
static int tasks_settled(int want) {
  int n = tasks();
  for (int i = 0; i < 400 && n != want; i++) {
    sleep_ms(5);
    n = tasks();
  }
  return n;
}

/* The thread count once it stops falling for 50 ms. */
static int tasks_steady(void) {
  int n = tasks();
  for (int quiet = 0; quiet < 10;) {
    sleep_ms(5);
    const int now = tasks();
    quiet = now < n ? 0 : quiet + 1;
    n = now < n ? now : n;
  }
  return n;
}

typedef struct {
  int id;               /* the thread that ran the job */
  int ms;               /* how long the job takes */
  int value;            /* written by the job */
  atomic_int *together; /* jobs arrived, when they must meet */
  int meet;             /* how many must arrive */
  int met;              /* 1 if all arrived within 10 s */
  int blocked;          /* 1 if the thread blocks SIGINT and SIGTERM */
} job;

static void run_job(void *arg) {
  job *j = arg;
  j->id = thread_id();
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, NULL, &mask);
  j->blocked = sigismember(&mask, SIGINT) && sigismember(&mask, SIGTERM);
  if (j->ms)
    sleep_ms(j->ms);
  if (j->together) {
    atomic_fetch_add(j->together, 1);
    for (int i = 0; i < 10000 && atomic_load(j->together) < j->meet; i++)
      sleep_ms(1);
    j->met = atomic_load(j->together) >= j->meet;
  }
  j->value = 42;
}

static void test_reuse(void **state) {
  (void)state;
  const int base = tasks_steady();
  glow__crew *c = glow__crew_new();
  assert_non_null(c);
  job a = {0}, b = {0}, d = {0}, e = {0};
  glow__hand *h = glow__crew_run(c, run_job, &a);
  assert_non_null(h);
  glow__hand_join(h);
  assert_int_equal(a.value, 42);
  assert_int_not_equal(a.id, thread_id()); /* not the caller */
  assert_true(a.blocked); /* the host's signals go to its own threads */
  /* At once: the parked thread, spinning. */
  glow__hand_join(glow__crew_run(c, run_job, &b));
  assert_int_equal(b.id, a.id);
  /* After a pause long enough for it to sleep. */
  sleep_ms(30);
  glow__hand_join(glow__crew_run(c, run_job, &d));
  assert_int_equal(d.id, a.id);
  assert_int_equal(d.value, 42);
  /* A job long enough for the joiner to sleep. */
  e.ms = 30;
  glow__hand_join(glow__crew_run(c, run_job, &e));
  assert_int_equal(e.id, a.id);
  assert_int_equal(e.value, 42);
  assert_int_equal(tasks(), base + 1);
  glow__crew_free(c);
  assert_int_equal(tasks_settled(base), base);
  glow__hand_join(NULL);
  glow__crew_release(NULL);
  glow__crew_free(NULL);
}

enum { K = 4 };

/* `count` jobs that can only finish together run on as many threads at
 * once. */
static void meet(glow__crew *c, job *jobs, int count) {
  atomic_int together = 0;
  glow__hand **h = calloc((size_t)count, sizeof *h);
  assert_non_null(h);
  for (int k = 0; k < count; k++) {
    jobs[k] = (job){0};
    jobs[k].together = &together;
    jobs[k].meet = count;
    h[k] = glow__crew_run(c, run_job, &jobs[k]);
    assert_non_null(h[k]);
  }
  for (int k = 0; k < count; k++)
    glow__hand_join(h[k]);
  for (int k = 0; k < count; k++) {
    assert_true(jobs[k].met);
    for (int l = 0; l < k; l++)
      assert_int_not_equal(jobs[k].id, jobs[l].id);
  }
  free(h);
}

static int has_id(const job *jobs, int id) {
  for (int k = 0; k < K; k++)
    if (jobs[k].id == id)
      return 1;
  return 0;
}

static void test_together(void **state) {
  (void)state;
  const int base = tasks_steady();
  glow__crew *c = glow__crew_new();
  job first[K], second[K];
  meet(c, first, K);
  meet(c, second, K); /* the same threads again, no new one */
  for (int k = 0; k < K; k++)
    assert_true(has_id(first, second[k].id));
  assert_int_equal(tasks(), base + K);
  /* Released: the threads end, and the crew starts new ones. */
  glow__crew_release(c);
  assert_int_equal(tasks_settled(base), base);
  meet(c, second, K);
  for (int k = 0; k < K; k++)
    assert_false(has_id(first, second[k].id));
  glow__crew_free(c);
  assert_int_equal(tasks_settled(base), base);
}

/* More jobs at once than c may keep threads for: c keeps its bound of
 * them (the others run on threads of their own, which end), until it is
 * freed. */
static void fill_and_free(glow__crew *c, int base) {
  enum { MORE = GLOW__CREW_MAX + 4 };
  job *jobs = calloc(MORE, sizeof *jobs);
  assert_non_null(jobs);
  meet(c, jobs, MORE);
  assert_int_equal(tasks_settled(base + GLOW__CREW_MAX), base + GLOW__CREW_MAX);
  glow__crew_free(c);
  assert_int_equal(tasks_settled(base), base);
  free(jobs);
}

/* Beyond GLOW__CREW_MAX hands at once, jobs run on threads of their own,
 * which end with them. */
static void test_full(void **state) {
  (void)state;
  const int base = tasks_steady();
  fill_and_free(glow__crew_new(), base);
}

static void test_no_crew(void **state) {
  (void)state;
  const int base = tasks_steady();
  job a = {0}, b = {0};
  glow__hand_join(glow__crew_run(NULL, run_job, &a));
  glow__hand_join(glow__crew_run(NULL, run_job, &b));
  assert_int_equal(a.value, 42);
  assert_int_equal(b.value, 42);
  assert_int_not_equal(a.id, b.id); /* each job a thread of its own */
  assert_true(a.blocked && b.blocked);
  assert_int_equal(tasks_settled(base), base);
}

/* A thread that cannot start: no hand, the job not run, and the crew's
 * count given back, so that the crew later still keeps GLOW__CREW_MAX
 * threads; a parked thread still takes jobs meanwhile. */
static void test_cannot_start(void **state) {
  (void)state;
  const int base = tasks_steady();
  glow__crew *c = glow__crew_new();
  job a = {0}, b = {0};
  allow_starts(0);
  for (int i = 0; i < 5; i++)
    assert_null(glow__crew_run(c, run_job, &a));
  assert_null(glow__crew_run(NULL, run_job, &a));
  assert_int_equal(atomic_load(&starts_failed), 6);
  assert_int_equal(a.value, 0);
  assert_int_equal(tasks(), base);
  /* One more thread starts: it parks, and serves the next job while
   * starts fail again, and a second job at once gets none. */
  allow_starts(1);
  glow__hand_join(glow__crew_run(c, run_job, &a));
  assert_int_equal(a.value, 42);
  glow__hand *h = glow__crew_run(c, run_job, &b);
  assert_non_null(h);
  assert_null(glow__crew_run(c, run_job, &a));
  glow__hand_join(h);
  assert_int_equal(b.id, a.id);
  assert_int_equal(atomic_load(&starts_tried), 2);
  assert_int_equal(tasks(), base + 1);
  /* Every failed start was given back: the crew fills to its bound. */
  allow_starts(-1);
  fill_and_free(c, base);
}

/* Callers of one crew, each running jobs one at a time. */
enum { CALLERS = 3, ROUNDS = 300 };

typedef struct {
  glow__crew *crew;
  atomic_int *count;
  int ids[ROUNDS];
} caller;

static void count_job(void *arg) {
  caller *who = arg;
  atomic_fetch_add(who->count, 1);
}

static void *call_many(void *arg) {
  caller *who = arg;
  for (int r = 0; r < ROUNDS; r++) {
    job j = {0};
    glow__hand *h = glow__crew_run(who->crew, run_job, &j);
    glow__hand *g = glow__crew_run(who->crew, count_job, who);
    glow__hand_join(h);
    glow__hand_join(g);
    who->ids[r] = j.id;
  }
  return NULL;
}

static void test_shared(void **state) {
  (void)state;
  const int base = tasks_steady();
  glow__crew *c = glow__crew_new();
  atomic_int count = 0;
  caller who[CALLERS];
  pthread_t tid[CALLERS];
  for (int i = 0; i < CALLERS; i++) {
    who[i].crew = c;
    who[i].count = &count;
    assert_int_equal(pthread_create(&tid[i], NULL, call_many, &who[i]), 0);
  }
  for (int i = 0; i < CALLERS; i++)
    pthread_join(tid[i], NULL);
  assert_int_equal(atomic_load(&count), CALLERS * ROUNDS);
  /* Never more than two jobs per caller at once, so never more threads:
   * the 900 jobs that recorded theirs ran on at most six. */
  int ids[2 * CALLERS + 1], distinct = 0;
  for (int i = 0; i < CALLERS; i++)
    for (int r = 0; r < ROUNDS; r++) {
      int seen = 0;
      for (int k = 0; k < distinct; k++)
        seen |= ids[k] == who[i].ids[r];
      if (!seen && distinct <= 2 * CALLERS)
        ids[distinct++] = who[i].ids[r];
    }
  assert_true(distinct <= 2 * CALLERS);
  assert_true(tasks_steady() <= base + 2 * CALLERS);
  glow__crew_free(c);
  assert_int_equal(tasks_settled(base), base);
}

/* ---- A model's kept threads ------------------------------------------ */

enum { N = 3 };

static glow_model *make_model(float **x) {
  glow_config cfg =
      tu_config(8, 8, 3, 2, 2, 16, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  *x = tu_images(m, N, 7);
  assert_int_equal(glow_data_init(m, *x, NULL, N), GLOW_OK);
  tu_perturb(m, 0.05, 3);
  return m;
}

/* glow_forward of the first n images into a new buffer of D + 1 floats
 * per image (latent, then log-determinant). */
static float *encode(const glow_model *m, const float *x, int32_t n) {
  const int64_t d = glow_model_dim(m);
  float *out = malloc(sizeof(float) * (size_t)((d + 1) * n));
  assert_non_null(out);
  assert_int_equal(glow_forward(m, x, NULL, n, out, out + d * n), GLOW_OK);
  return out;
}

static void same_bits(const float *a, const float *b, int64_t count) {
  assert_memory_equal(a, b, sizeof(float) * (size_t)count);
}

static void test_model_keeps(void **state) {
  (void)state;
  const int base = tasks_steady();
  float *x = NULL;
  glow_model *m = make_model(&x);
  const int64_t d = glow_model_dim(m);
  const int64_t len = (d + 1) * 2;
  /* One thread: none of the model's own. */
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 1), GLOW_OK);
  free(encode(m, x, 2));
  assert_int_equal(tasks(), base);
  /* Two shards on threads of the call's own, the reference (through a
   * CBLAS the bits depend on the shards' sizes, so the same count). */
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 2), GLOW_OK);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  float *ref = encode(m, x, 2);
  assert_int_equal(tasks_settled(base), base);
  /* Kept: one thread besides the caller, the same bits. */
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
  for (int r = 0; r < 10; r++) {
    float *z = encode(m, x, 2);
    same_bits(z, ref, len);
    free(z);
    assert_int_equal(tasks(), base + 1);
  }
  /* Not kept: none between calls, the same bits. */
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  assert_int_equal(tasks_settled(base), base);
  float *z = encode(m, x, 2);
  same_bits(z, ref, len);
  free(z);
  assert_int_equal(tasks_settled(base), base);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
  /* Another thread count ends them; the next call keeps as many as it
   * needs. */
  z = encode(m, x, 2);
  free(z);
  assert_int_equal(tasks(), base + 1);
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 3), GLOW_OK);
  assert_int_equal(tasks_settled(base), base);
  z = encode(m, x, 3);
  free(z);
  assert_int_equal(tasks(), base + 2);
  glow_model_free(m);
  assert_int_equal(tasks_settled(base), base);
  free(ref);
  free(x);
}

/* count floats of encode's output against ref: the same bits on the own
 * kernel; through a CBLAS, whose split products may round differently,
 * within 1e-4. */
static void like(const glow_model *m, const float *z, const float *ref,
                 int64_t count) {
  if (glow__model_gemm_own(m))
    same_bits(z, ref, count);
  else
    assert_true(tu_max_abs_diff(z, ref, count) < 1e-4);
}

/* A model's call whose threads cannot start runs their shards itself, or
 * with a smaller team, and gives the same results; once threads start
 * again, it keeps them. */
static void test_model_cannot_start(void **state) {
  (void)state;
  const int base = tasks_steady();
  float *x = NULL;
  glow_model *m = make_model(&x);
  const int64_t len = (glow_model_dim(m) + 1) * 2;
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 2), GLOW_OK);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  float *ref = encode(m, x, 2);
  /* Shards: threads of the call's own, then of the crew. */
  for (int keep = 0; keep <= 1; keep++) {
    assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, keep),
                     GLOW_OK);
    allow_starts(0);
    float *z = encode(m, x, 2);
    assert_int_equal(atomic_load(&starts_failed), 1);
    same_bits(z, ref, len); /* the same two shards, on the caller */
    free(z);
    assert_int_equal(tasks(), base);
  }
  allow_starts(-1);
  free(encode(m, x, 2));
  assert_int_equal(tasks(), base + 1);
  allow_starts(0); /* the parked thread needs no start */
  float *z = encode(m, x, 2);
  assert_int_equal(atomic_load(&starts_tried), 0);
  same_bits(z, ref, len);
  free(z);
  /* A team for one image: of three, of two where one helper cannot
   * start, of two again with the parked helper and one that cannot. */
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 1), GLOW_OK);
  float *one = encode(m, x, 1);
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 3), GLOW_OK);
  glow__team_split_all = 1;
  const int allow[3] = {-1, 1, 0}, tried[3] = {2, 2, 1}, failed[3] = {0, 1, 1};
  for (int r = 0; r < 3; r++) {
    if (r < 2) { /* none parked; at r = 2, the one r = 1 left */
      assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
      assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
    }
    allow_starts(allow[r]);
    z = encode(m, x, 1);
    assert_int_equal(atomic_load(&starts_tried), tried[r]);
    assert_int_equal(atomic_load(&starts_failed), failed[r]);
    like(m, z, one, glow_model_dim(m) + 1);
    free(z);
    assert_int_equal(tasks(), base + (r == 0 ? 2 : 1));
  }
  glow__team_split_all = 0;
  allow_starts(-1);
  glow_model_free(m);
  assert_int_equal(tasks_settled(base), base);
  free(one);
  free(ref);
  free(x);
}

static void test_fork(void **state) {
  (void)state;
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(TSAN)
  /* ThreadSanitizer does not support threads started after a fork of a
   * process with threads. */
  skip();
#endif
  float *x = NULL;
  glow_model *m = make_model(&x);
  const int64_t d = glow_model_dim(m);
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 2), GLOW_OK);
  float *ref = encode(m, x, 2); /* the model now has a parked thread */
  const pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) { /* the child: its parent's parked thread is not here */
    alarm(60);    /* a call waiting for that thread fails the test, not hangs */
    int ok = 1;
    for (int r = 0; r < 3 && ok; r++) {
      float *z = malloc(sizeof(float) * (size_t)((d + 1) * 2));
      ok = z && glow_forward(m, x, NULL, 2, z, z + 2 * d) == GLOW_OK &&
           memcmp(z, ref, sizeof(float) * (size_t)((d + 1) * 2)) == 0;
      free(z);
    }
    ok = ok && glow_set_option(m, GLOW_OPT_THREADS, 1) == GLOW_OK;
    glow_model_free(m);
    free(ref);
    free(x);
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  /* The parent's thread is still there and still works. */
  float *z = encode(m, x, 2);
  same_bits(z, ref, (d + 1) * 2);
  free(z);
  glow_model_free(m);
  free(ref);
  free(x);
}

static void *nothing(void *arg) { return arg; }

int main(void) {
  /* A first thread, so that a sanitizer's runtime starts its own threads
   * before any test counts. */
  pthread_t t;
  if (pthread_create(&t, NULL, nothing, NULL) == 0)
    pthread_join(t, NULL);
  tasks_steady(); /* and until that thread has left the list */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reuse),
      cmocka_unit_test(test_together),
      cmocka_unit_test(test_full),
      cmocka_unit_test(test_no_crew),
      cmocka_unit_test(test_shared),
      cmocka_unit_test(test_model_keeps),
      cmocka_unit_test(test_fork),
      cmocka_unit_test(test_cannot_start),
      cmocka_unit_test(test_model_cannot_start),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
