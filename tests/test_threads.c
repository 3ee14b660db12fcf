/*
 * test_threads.c -- GLOW_OPT_THREADS: a batch split into shards on threads.
 *
 * ctest runs this with OPENBLAS_NUM_THREADS=1, the setting the option is
 * made for: the BLAS single-threaded inside libglow's threads.  Every call
 * must give the same results for every thread count up to float rounding,
 * and the same bits for the same thread count.  A batch of fewer images
 * than threads splits each image's products between a team of threads;
 * this test splits every product, however small (glow__team_split_all).
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <pthread.h>
#include <sched.h>

#include "testutil.h"

#include "model.h"

enum { N = 7 }; /* odd, so shards differ in size */

/* Thread counts to try: none of libglow's own, uneven and even splits,
 * one image per shard, and more threads than images. */
static const int32_t thread_counts[] = {1, 2, 3, 4, 7, 9};
enum { N_COUNTS = sizeof thread_counts / sizeof thread_counts[0] };

/* A conditional two-level model with every layer doing work. */
static glow_model *make_model(int32_t coupling, int32_t perm, const float *x,
                              const int32_t *labels) {
  glow_config cfg = tu_config(8, 8, 3, 2, 2, 16, coupling, perm);
  cfg.n_classes = 3;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, 3);
  assert_int_equal(glow_data_init(m, x, labels, N), GLOW_OK);
  tu_perturb(m, 0.02, 4);
  return m;
}

/* n = N images of the shape make_model's models take; *d: values each. */
static float *probe_images(uint64_t seed, int64_t *d) {
  glow_config probe =
      tu_config(8, 8, 3, 2, 2, 16, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *shape = NULL;
  assert_int_equal(glow_model_create(&probe, &shape), GLOW_OK);
  float *x = tu_images(shape, N, seed);
  *d = glow_model_dim(shape);
  glow_model_free(shape);
  return x;
}

static void test_option(void **state) {
  (void)state;
  int64_t lo = -1, hi = -1, v = -1;
  assert_int_equal(glow_option_bounds(GLOW_OPT_THREADS, &lo, &hi), GLOW_OK);
  assert_int_equal(lo, 0);
  assert_int_equal(hi, 256);
  glow_config cfg =
      tu_config(4, 4, 1, 1, 1, 4, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_REVERSE);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  assert_int_equal(glow_get_option(m, GLOW_OPT_THREADS, &v), GLOW_OK);
  assert_int_equal(v, 0); /* automatic by default */
  assert_int_equal(glow_option_bounds(GLOW_OPT_GEMM, &lo, &hi), GLOW_OK);
  assert_int_equal(lo, GLOW_GEMM_AUTO);
  assert_int_equal(hi, GLOW_GEMM_BLAS);
  assert_int_equal(glow_get_option(m, GLOW_OPT_GEMM, &v), GLOW_OK);
  assert_int_equal(v, GLOW_GEMM_AUTO);
  assert_int_equal(glow_set_option(m, GLOW_OPT_GEMM, 2), GLOW_ERR_ARG);
  assert_int_equal(glow__model_gemm_own(m), glow__gemm_own_available());
  /* ctest runs this file again with GLOW_GEMM_ISA=avx2: on the AVX2
   * kernel wherever the CPU has it. */
  const char *isa = getenv("GLOW_GEMM_ISA");
  if (isa && strcmp(isa, "avx2") == 0 && glow__gemm_runs(GLOW__GEMM_AVX2))
    assert_int_equal(glow__gemm_isa_used(), GLOW__GEMM_AVX2);
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 3), GLOW_OK);
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 257), GLOW_ERR_ARG);
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, -1), GLOW_ERR_ARG);
  assert_int_equal(glow_get_option(m, GLOW_OPT_THREADS, &v), GLOW_OK);
  assert_int_equal(v, 3); /* a refused value leaves it */
  assert_int_equal(glow__threads(m), 3);
  /* Automatic, with OpenBLAS on one thread (this test's environment), on
   * either kernel: one thread per CPU of the affinity mask. */
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 0), GLOW_OK);
  cpu_set_t set;
  assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
  const int32_t cpus = CPU_COUNT(&set);
  assert_int_equal(glow__threads(m), cpus < 256 ? cpus : 256);
  assert_int_equal(glow_set_option(m, GLOW_OPT_GEMM, GLOW_GEMM_BLAS), GLOW_OK);
  assert_int_equal(glow__model_gemm_own(m), 0);
  assert_int_equal(glow__threads(m), cpus < 256 ? cpus : 256);
  glow_model_free(m);
}

/* Shards: contiguous, covering the batch, sizes differing by at most 1. */
static void test_shard_split(void **state) {
  (void)state;
  for (int32_t n = 1; n <= 12; n++)
    for (int32_t t = 1; t <= 14; t++) {
      int32_t count = 0;
      glow__shard *sh = glow__shards_new(n, t, &count);
      assert_non_null(sh);
      assert_int_equal(count, t < n ? t : n);
      int32_t next = 0, lo = n, hi = 0;
      for (int32_t s = 0; s < count; s++) {
        assert_int_equal(sh[s].first, next);
        next += sh[s].count;
        lo = sh[s].count < lo ? sh[s].count : lo;
        hi = sh[s].count > hi ? sh[s].count : hi;
      }
      assert_int_equal(next, n);
      assert_true(lo >= 1 && hi - lo <= 1);
      free(sh);
    }
}

/* Every inference call's outputs for one thread count. */
typedef struct {
  float *eps, *ld, *x, *samples, *bpd, *logp, *probs;
} outputs;

/* Every inference call once, on m's current options, into new outputs;
 * *rc gets the first failure.  No cmocka assertion: it also runs on
 * threads of the test's own. */
static outputs run_calls(const glow_model *m, const float *x,
                         const int32_t *labels, int *rc) {
  const int64_t d = glow_model_dim(m);
  outputs o;
  o.eps = malloc(sizeof(float) * (size_t)(N * d));
  o.x = malloc(sizeof(float) * (size_t)(N * d));
  o.samples = malloc(sizeof(float) * (size_t)(N * d));
  o.ld = malloc(sizeof(float) * N);
  o.bpd = malloc(sizeof(float) * N);
  o.logp = malloc(sizeof(float) * N);
  o.probs = malloc(sizeof(float) * N * 3);
  *rc = glow_forward(m, x, labels, N, o.eps, o.ld);
  if (!*rc)
    *rc = glow_inverse(m, o.eps, labels, N, o.x);
  if (!*rc)
    *rc = glow_sample(m, N, 0.7f, 99, labels, o.samples);
  if (!*rc)
    *rc = glow_bits_per_dim(m, x, labels, N, o.bpd);
  if (!*rc)
    *rc = glow_log_prob(m, x, labels, N, o.logp);
  if (!*rc)
    *rc = glow_classify(m, x, N, NULL, o.probs);
  return o;
}

static outputs infer_all(glow_model *m, int32_t threads, const float *x,
                         const int32_t *labels) {
  int rc;
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, threads), GLOW_OK);
  outputs o = run_calls(m, x, labels, &rc);
  if (rc)
    fail_msg("inference on %d threads: %s", threads, glow_last_error());
  return o;
}

static void outputs_free(outputs *o) {
  free(o->eps);
  free(o->ld);
  free(o->x);
  free(o->samples);
  free(o->bpd);
  free(o->logp);
  free(o->probs);
}

/* Every output of a and b the same, bit for bit (images of d values). */
static void assert_same_bits(const outputs *a, const outputs *b, int64_t d) {
  const size_t big = sizeof(float) * (size_t)(N * d), small = sizeof(float) * N;
  assert_memory_equal(a->eps, b->eps, big);
  assert_memory_equal(a->ld, b->ld, small);
  assert_memory_equal(a->x, b->x, big);
  assert_memory_equal(a->samples, b->samples, big);
  assert_memory_equal(a->bpd, b->bpd, small);
  assert_memory_equal(a->logp, b->logp, small);
  assert_memory_equal(a->probs, b->probs, small * 3);
}

/* Largest |a - b| over the largest |b|. */
static double rel_diff(const float *a, const float *b, int64_t n) {
  double top = 0.0;
  for (int64_t i = 0; i < n; i++)
    top = fmax(top, fabs((double)b[i]));
  return tu_max_abs_diff(a, b, n) / top;
}

/* With the own GEMM kernel every image's arithmetic is the same in any
 * shard: the same bits for every thread count.  OpenBLAS's sgemm rounds a
 * row differently with the number of rows in the product, even on one
 * thread, so through the CBLAS shards of other sizes change the last bits:
 * outputs agree to float rounding across thread counts, and bit for bit
 * for the same count. */
static void test_inference_across_threads(void **state) {
  (void)state;
  const int32_t labels[N] = {0, 2, 1, 1, 0, 2, 2};
  int64_t d = 0;
  float *x = probe_images(21, &d);
  for (int32_t variant = 0; variant < 4; variant++) {
    const int lu = variant & 1, blas = variant >> 1;
    glow_model *m = make_model(
        GLOW_COUPLING_AFFINE,
        lu ? GLOW_PERMUTE_CONV1X1_LU : GLOW_PERMUTE_CONV1X1, x, labels);
    assert_int_equal(glow_set_option(m, GLOW_OPT_GEMM,
                                     blas ? GLOW_GEMM_BLAS : GLOW_GEMM_AUTO),
                     GLOW_OK);
    const int same_bits = glow__model_gemm_own(m);
    outputs ref = infer_all(m, 1, x, labels);
    /* Not a trivial round trip: the inverse gives the images back. */
    assert_true(tu_max_abs_diff(ref.x, x, N * d) < 1e-4);
    for (int32_t k = 1; k < N_COUNTS; k++) {
      outputs o = infer_all(m, thread_counts[k], x, labels);
      if (same_bits)
        assert_same_bits(&o, &ref, d);
      assert_true(rel_diff(o.eps, ref.eps, N * d) < 1e-5);
      assert_true(rel_diff(o.ld, ref.ld, N) < 1e-5);
      assert_true(rel_diff(o.x, ref.x, N * d) < 1e-5);
      assert_true(rel_diff(o.samples, ref.samples, N * d) < 1e-5);
      assert_true(rel_diff(o.bpd, ref.bpd, N) < 1e-6);
      assert_true(rel_diff(o.logp, ref.logp, N) < 1e-6);
      assert_true(tu_max_abs_diff(o.probs, ref.probs, N * 3) < 1e-5);
      outputs again = infer_all(m, thread_counts[k], x, labels);
      assert_same_bits(&again, &o, d);
      outputs_free(&again);
      outputs_free(&o);
    }
    outputs_free(&ref);
    glow_model_free(m);
  }
  free(x);
}

/* One caller of run_calls on a thread of its own. */
typedef struct {
  const glow_model *m;
  const float *x;
  const int32_t *labels;
  outputs o;
  int rc;
} caller;

static void *call_all(void *arg) {
  caller *c = arg;
  c->o = run_calls(c->m, c->x, c->labels, &c->rc);
  return NULL;
}

/* Inference calls from several threads at once on one model, each call
 * sharding its batch on threads of its own: every caller gets the bits of
 * a lone caller.  Under ThreadSanitizer (scripts/test.sh --tsan) this is
 * the check that concurrent inference shares nothing it writes. */
static void test_concurrent_callers(void **state) {
  (void)state;
  enum { CALLERS = 4 };
  const int32_t labels[N] = {2, 0, 1, 1, 2, 0, 0};
  int64_t d = 0;
  float *x = probe_images(23, &d);
  glow_model *m =
      make_model(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1_LU, x, labels);
  outputs ref = infer_all(m, 2, x, labels);
  caller c[CALLERS];
  pthread_t tid[CALLERS];
  for (int k = 0; k < CALLERS; k++) {
    c[k] = (caller){.m = m, .x = x, .labels = labels};
    assert_int_equal(pthread_create(&tid[k], NULL, call_all, &c[k]), 0);
  }
  for (int k = 0; k < CALLERS; k++)
    assert_int_equal(pthread_join(tid[k], NULL), 0);
  for (int k = 0; k < CALLERS; k++) {
    assert_int_equal(c[k].rc, GLOW_OK);
    assert_same_bits(&c[k].o, &ref, d);
    outputs_free(&c[k].o);
  }
  outputs_free(&ref);
  glow_model_free(m);
  free(x);
}

/* glow_backward for one thread count on zeroed gradients. */
static float backward(glow_model *m, int32_t threads, const float *x,
                      const int32_t *labels, int32_t n, float *g) {
  float loss = 0.0f;
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, threads), GLOW_OK);
  assert_int_equal(glow_zero_grad(m), GLOW_OK);
  int rc = glow_backward(m, x, labels, n, &loss);
  if (rc)
    fail_msg("glow_backward: %s", glow_last_error());
  memcpy(g, glow_grads(m), sizeof(float) * (size_t)glow_param_count(m));
  return loss;
}

static void test_backward_shards(void **state) {
  (void)state;
  const int32_t labels[N] = {1, 0, 2, 2, 1, 0, 1};
  int64_t d = 0;
  float *x = probe_images(31, &d);
  for (int32_t mode = 0; mode < 2; mode++) {
    glow_model *m =
        make_model(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1_LU, x, labels);
    assert_int_equal(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, mode), GLOW_OK);
    const int64_t np = glow_param_count(m);
    const size_t bytes = sizeof(float) * (size_t)np;
    float *g1 = malloc(bytes), *g = malloc(bytes), *again = malloc(bytes);
    const float l1 = backward(m, 1, x, labels, N, g1);
    double gmax = 0.0;
    for (int64_t i = 0; i < np; i++)
      gmax = fmax(gmax, fabs((double)g1[i]));
    assert_true(gmax > 0.0);
    for (int32_t k = 1; k < N_COUNTS; k++) {
      const int32_t t = thread_counts[k];
      const float l = backward(m, t, x, labels, N, g);
      /* Sums in another order: equal up to rounding. */
      assert_true(fabs((double)l - l1) <= 1e-6 * fabs((double)l1));
      assert_true(tu_max_abs_diff(g, g1, np) <= 1e-5 * gmax);
      /* The same thread count again: the same bits, with the workspaces
       * kept from the last call or fresh. */
      assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
      float la = backward(m, t, x, labels, N, again);
      assert_true(la == l);
      assert_memory_equal(again, g, bytes);
      assert_int_equal(m->n_train_ws, t < N ? t : N);
      la = backward(m, t, x, labels, N, again);
      assert_true(la == l);
      assert_memory_equal(again, g, bytes);
      assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
      assert_null(m->train_ws);
    }
    /* Kept workspaces serve a smaller batch with as many shards, and give
     * what fresh ones give. */
    assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
    (void)backward(m, 3, x, labels, N, g);
    const glow__ws *kept = m->train_ws;
    const float lk = backward(m, 3, x, labels, N - 2, again);
    assert_ptr_equal(m->train_ws, kept);
    assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
    const float lf = backward(m, 3, x, labels, N - 2, g);
    assert_true(lk == lf);
    assert_memory_equal(again, g, bytes);
    free(g1);
    free(g);
    free(again);
    glow_model_free(m);
  }
  free(x);
}

/* A failure in a shard that another thread ran: the calling thread gets
 * its status and message, and the gradients stay as they were. */
static void test_shard_failure(void **state) {
  (void)state;
  const int32_t labels[N] = {1, 0, 2, 2, 1, 0, 1};
  int64_t d = 0;
  float *x = probe_images(41, &d);
  glow_model *m =
      make_model(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1, x, labels);
  const int64_t np = glow_param_count(m);
  const size_t bytes = sizeof(float) * (size_t)np;
  float *before = malloc(bytes);
  float *eps = malloc(sizeof(float) * (size_t)(N * d));
  float loss = 0.0f;
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 3), GLOW_OK);
  assert_int_equal(glow_backward(m, x, labels, N, &loss), GLOW_OK);
  memcpy(before, glow_grads(m), bytes);
  /* Image 5 is in the third shard, [4, 7), which thread 2 runs. */
  x[5 * d + 17] = NAN;
  assert_int_equal(glow_backward(m, x, labels, N, &loss), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "level 0 step 0"));
  assert_memory_equal(glow_grads(m), before, bytes);
  assert_int_equal(glow_forward(m, x, labels, N, eps, NULL), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "glow_forward"));
  free(before);
  free(eps);
  free(x);
  glow_model_free(m);
}

/* Fewer images than threads: the same shards, with teams splitting each
 * shard's products, give the bits of one thread per shard, for inference
 * and for the gradients (own kernel). */
/* Teams by the size of a model's steps: cifar-shaped steps of 27 MFLOP
 * get one, fashion's of 6 MFLOP do not, whatever the number of steps. */
static void test_team_threshold(void **state) {
  (void)state;
  const int saved = glow__team_split_all;
  glow__team_split_all = 0;
  const struct {
    int32_t hw, c, levels, depth, hidden, team;
  } cases[] = {
      {32, 3, 3, 2, 256, 2},  /* 165 MFLOP, 27.5 a step */
      {32, 3, 3, 16, 256, 2}, /* the same steps, eight times as many */
      {28, 1, 2, 8, 128, 1},  /* fashion: 99 MFLOP, 6.2 a step */
      {28, 1, 2, 64, 128, 1}, /* the same steps, 790 MFLOP */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    glow_config cfg = tu_config(
        cases[i].hw, cases[i].hw, cases[i].c, cases[i].levels, cases[i].depth,
        cases[i].hidden, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
    glow_model *m = NULL;
    assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
    assert_int_equal(glow__shard_team(m, 2, 1, 0), cases[i].team);
    assert_int_equal(glow__shard_team(m, 2, 2, 1), 1); /* a shard each */
    glow_model_free(m);
  }
  glow__team_split_all = saved;
}

/* The batch-1 choice between a team and one thread, for steps between
 * GLOW__TEAM_TRY_STEP_FLOPS and GLOW__TEAM_MIN_STEP_FLOPS: probes
 * take turns, the faster way's fastest probe wins the round, and every
 * way gives the same bits. */
static void test_team_choice(void **state) {
  (void)state;
  glow__team_choice c;
  glow__choice_reset(&c);
  const uint64_t times[2][2] = {{900, 400}, {300, 700}}; /* alone, team */
  for (int round = 0; round < 3; round++) {
    const int faster = round == 1 ? 0 : 1;
    for (int i = 0; i < GLOW__CHOICE_PROBES; i++) {
      int probe = -2;
      const int team = glow__choice_take(&c, &probe);
      /* each way probed on even and odd calls (Thue-Morse order) */
      const int thue_morse[8] = {0, 1, 1, 0, 1, 0, 0, 1};
      assert_int_equal(probe, thue_morse[i % 8]);
      assert_int_equal(team, probe);
      /* round 2 records nothing: the choice of round 1 stands */
      if (round < 2)
        glow__choice_record(&c, probe, times[round % 2][probe] + i);
    }
    const int chosen = round == 2 ? 0 : faster;
    for (int i = GLOW__CHOICE_PROBES; i < GLOW__CHOICE_ROUND; i++) {
      int probe = -2;
      assert_int_equal(glow__choice_take(&c, &probe), chosen);
      assert_int_equal(probe, -1);
    }
  }
  /* Which calls choose: batch 1 on two threads, steps of 2 to 8 MFLOP,
   * the own kernel; inference and training apart. */
  const int saved = glow__team_split_all;
  glow__team_split_all = 0;
  glow_config fashion = tu_config(28, 28, 1, 2, 8, 128, GLOW_COUPLING_AFFINE,
                                  GLOW_PERMUTE_CONV1X1);
  glow_config wide = tu_config(32, 32, 3, 3, 2, 256, GLOW_COUPLING_AFFINE,
                               GLOW_PERMUTE_CONV1X1);
  glow_config tiny = tu_config(16, 16, 3, 2, 4, 64, GLOW_COUPLING_AFFINE,
                               GLOW_PERMUTE_CONV1X1);
  glow_model *f = NULL, *w = NULL, *t = NULL;
  assert_int_equal(glow_model_create(&fashion, &f), GLOW_OK);
  assert_int_equal(glow_model_create(&wide, &w), GLOW_OK);
  assert_int_equal(glow_model_create(&tiny, &t), GLOW_OK);
  const int own = glow__model_gemm_own(f);
  glow__team_choice *ci = glow__choice_for(f, 2, 1, 0);
  glow__team_choice *ct = glow__choice_for(f, 2, 1, 1);
  if (own) {
    assert_non_null(ci);
    assert_non_null(ct);
    assert_ptr_not_equal(ci, ct);
  } else {
    assert_null(ci); /* through a CBLAS a team changes the bits */
  }
  assert_null(glow__choice_for(f, 2, 2, 0)); /* a shard each */
  assert_null(glow__choice_for(f, 1, 1, 0)); /* one thread */
  assert_null(glow__choice_for(w, 2, 1, 0)); /* always a team */
  assert_null(glow__choice_for(t, 2, 1, 0)); /* never */
  glow_model_free(w);
  glow_model_free(t);
  /* Every way the same bits: 150 calls span probes of both ways and
   * chosen ones, against one thread's result. */
  float *x = tu_images(f, 8, 61);
  assert_int_equal(glow_data_init(f, x, NULL, 8), GLOW_OK);
  tu_perturb(f, 0.02, 5);
  const int64_t d = glow_model_dim(f);
  float *ref = malloc(sizeof(float) * (size_t)(d + 1));
  float *z = malloc(sizeof(float) * (size_t)(d + 1));
  assert_int_equal(glow_set_option(f, GLOW_OPT_THREADS, 1), GLOW_OK);
  assert_int_equal(glow_forward(f, x, NULL, 1, ref, ref + d), GLOW_OK);
  assert_int_equal(glow_set_option(f, GLOW_OPT_THREADS, 2), GLOW_OK);
  for (int i = 0; i < 150; i++) {
    assert_int_equal(glow_forward(f, x, NULL, 1, z, z + d), GLOW_OK);
    assert_memory_equal(z, ref, sizeof(float) * (size_t)(d + 1));
  }
  if (own) /* the calls went through the choice */
    assert_int_equal(atomic_load(&f->choice[0].calls), 150);
  free(z);
  free(ref);
  free(x);
  glow_model_free(f);
  glow__team_split_all = saved;
}

static void test_teams(void **state) {
  (void)state;
  const int32_t labels[N] = {2, 1, 0, 2, 1, 0, 1};
  int64_t d = 0;
  float *x = probe_images(51, &d);
  glow_model *m =
      make_model(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1_LU, x, labels);
  if (!glow__model_gemm_own(m)) {
    glow_model_free(m);
    free(x);
    skip();
  }
  /* Team sizes: the threads left over, shared out; none for a model this
   * small (0.3 MFLOP per image) unless the test forces them. */
  assert_true(m->flops_per_image > 1e5 && m->flops_per_image < 1e7);
  assert_int_equal(glow__shard_team(m, 5, 2, 0), 2);
  assert_int_equal(glow__shard_team(m, 5, 2, 1), 3);
  assert_int_equal(glow__shard_team(m, 4, 4, 0), 1);
  glow__team_split_all = 0;
  assert_int_equal(glow__shard_team(m, 5, 2, 1), 1);
  glow__team_split_all = 1;
  const int64_t np = glow_param_count(m);
  const size_t gbytes = sizeof(float) * (size_t)np;
  float *g1 = malloc(gbytes), *g = malloc(gbytes);
  float *e1 = malloc(sizeof(float) * (size_t)(2 * d));
  float *e = malloc(sizeof(float) * (size_t)(2 * d));
  float *x1 = malloc(sizeof(float) * (size_t)(2 * d));
  float *xi = malloc(sizeof(float) * (size_t)(2 * d));
  float ld1[2], ld[2];
  for (int32_t n = 1; n <= 2; n++) {
    for (int32_t mode = 0; mode < 2; mode++) {
      assert_int_equal(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, mode),
                       GLOW_OK);
      /* n shards of one image; then teams of up to 5 threads each. */
      const float l1 = backward(m, n, x, labels, n, g1);
      for (int32_t t = n + 1; t <= 5; t++) {
        const float l = backward(m, t, x, labels, n, g);
        assert_true(l == l1);
        assert_memory_equal(g, g1, gbytes);
      }
    }
    assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 1), GLOW_OK);
    assert_int_equal(glow_forward(m, x, labels, n, e1, ld1), GLOW_OK);
    assert_int_equal(glow_inverse(m, e1, labels, n, x1), GLOW_OK);
    assert_true(tu_max_abs_diff(x1, x, n * d) < 1e-4);
    for (int32_t t = 2; t <= 5; t++) {
      assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, t), GLOW_OK);
      assert_int_equal(glow_forward(m, x, labels, n, e, ld), GLOW_OK);
      assert_memory_equal(e, e1, sizeof(float) * (size_t)(n * d));
      assert_memory_equal(ld, ld1, sizeof(float) * (size_t)n);
      assert_int_equal(glow_inverse(m, e1, labels, n, xi), GLOW_OK);
      assert_memory_equal(xi, x1, sizeof(float) * (size_t)(n * d));
    }
  }
  free(g1);
  free(g);
  free(e1);
  free(e);
  free(x1);
  free(xi);
  glow_model_free(m);
  free(x);
}

int main(void) {
  glow__team_split_all = 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_option),
      cmocka_unit_test(test_shard_split),
      cmocka_unit_test(test_inference_across_threads),
      cmocka_unit_test(test_backward_shards),
      cmocka_unit_test(test_concurrent_callers),
      cmocka_unit_test(test_shard_failure),
      cmocka_unit_test(test_team_threshold),
      cmocka_unit_test(test_team_choice),
      cmocka_unit_test(test_teams),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
