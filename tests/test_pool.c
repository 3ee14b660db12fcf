/*
 * test_pool.c -- inference calls keep their workspaces in the model
 * (GLOW_OPT_KEEP_WORKSPACE): a repeated call of the same or a smaller
 * batch allocates no workspace, gives the same bits as a call with fresh
 * workspaces, and the kept ones are freed on request and with the model;
 * what they keep of the 1x1 weights follows the parameters.
 * An allocator of the test's own counts what the library allocates.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "testutil.h"

typedef struct {
  atomic_long calls, bytes, largest, live;
} tally;

static tally t;

static void count(size_t size) {
  atomic_fetch_add(&t.calls, 1);
  atomic_fetch_add(&t.bytes, (long)size);
  long big = atomic_load(&t.largest);
  while ((long)size > big &&
         !atomic_compare_exchange_weak(&t.largest, &big, (long)size))
    ;
}

static void *t_malloc(void *ctx, size_t size) {
  (void)ctx;
  count(size);
  void *p = malloc(size);
  atomic_fetch_add(&t.live, p != NULL);
  return p;
}

static void *t_calloc(void *ctx, size_t n, size_t size) {
  (void)ctx;
  count(n * size);
  void *p = calloc(n, size);
  atomic_fetch_add(&t.live, p != NULL);
  return p;
}

static void *t_realloc(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  count(size);
  return realloc(ptr, size);
}

static void t_free(void *ctx, void *ptr) {
  (void)ctx;
  atomic_fetch_sub(&t.live, ptr != NULL);
  free(ptr);
}

static void reset(void) {
  atomic_store(&t.calls, 0);
  atomic_store(&t.bytes, 0);
  atomic_store(&t.largest, 0);
}

static int setup(void **state) {
  (void)state;
  glow_allocator a = {sizeof a, t_malloc, t_calloc, t_realloc, t_free, NULL};
  return glow_set_allocator(&a);
}

static int teardown(void **state) {
  (void)state;
  return glow_set_allocator(NULL);
}

static glow_model *model_with(int32_t threads, int32_t permutation) {
  glow_config cfg =
      tu_config(8, 8, 3, 2, 2, 16, GLOW_COUPLING_AFFINE, permutation);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  float *x = tu_images(m, 8, 3);
  tu_perturb(m, 0.05, 4);
  assert_int_equal(glow_data_init(m, x, NULL, 8), GLOW_OK);
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, threads), GLOW_OK);
  free(x);
  return m;
}

static glow_model *model(int32_t threads) {
  return model_with(threads, GLOW_PERMUTE_CONV1X1_LU);
}

/* A repeated forward, inverse or sampling call allocates no more than the
 * small per-call tables (the shards, per-image values): nothing of the
 * size of one batch of images, and under a tenth of what the first call
 * allocated (a hundredth where the first includes the own GEMM kernel's
 * packing buffers; the test's model is tiny). */
static void test_repeated_calls_allocate_no_workspace(void **state) {
  (void)state;
  for (int32_t threads = 1; threads <= 2; threads++) {
    glow_model *m = model(threads);
    const int64_t d = glow_model_dim(m);
    float *x = tu_images(m, 6, 9);
    float *eps = malloc(sizeof(float) * (size_t)(6 * d));
    float *back = malloc(sizeof(float) * (size_t)(6 * d));
    float *ld = malloc(sizeof(float) * 6);
    for (int call = 0; call < 3; call++) {
      reset();
      assert_int_equal(glow_forward(m, x, NULL, 6, eps, ld), GLOW_OK);
      assert_int_equal(glow_inverse(m, eps, NULL, call == 2 ? 3 : 6, back),
                       GLOW_OK);
      assert_int_equal(glow_sample(m, call == 2 ? 2 : 6, 0.7f, 5, NULL, back),
                       GLOW_OK);
      static long first;
      if (call == 0) {
        first = atomic_load(&t.bytes);
        continue;
      }
      printf("  %d thread(s), call %d: %ld allocations, %ld bytes (first "
             "call %ld), largest %ld\n",
             threads, call + 1, atomic_load(&t.calls), atomic_load(&t.bytes),
             first, atomic_load(&t.largest));
      assert_true(atomic_load(&t.largest) < (long)(sizeof(float) * 6 * d));
      assert_true(atomic_load(&t.bytes) * 10 < first);
    }
    free(x);
    free(eps);
    free(back);
    free(ld);
    glow_model_free(m);
  }
}

/* Kept workspaces give the bits fresh ones give, also for a smaller batch
 * in a larger workspace. */
static void test_kept_same_bits(void **state) {
  (void)state;
  glow_model *m = model(2);
  const int64_t d = glow_model_dim(m);
  float *x = tu_images(m, 6, 2);
  const size_t bytes = sizeof(float) * (size_t)(6 * d);
  float *a = malloc(bytes), *b = malloc(bytes), *sa = malloc(bytes);
  float *sb = malloc(bytes);
  assert_int_equal(glow_forward(m, x, NULL, 6, a, NULL), GLOW_OK); /* warm */
  assert_int_equal(glow_forward(m, x, NULL, 4, a, NULL), GLOW_OK);
  assert_int_equal(glow_sample(m, 4, 0.8f, 3, NULL, sa), GLOW_OK);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  assert_int_equal(glow_forward(m, x, NULL, 4, b, NULL), GLOW_OK);
  assert_int_equal(glow_sample(m, 4, 0.8f, 3, NULL, sb), GLOW_OK);
  assert_memory_equal(a, b, sizeof(float) * (size_t)(4 * d));
  assert_memory_equal(sa, sb, sizeof(float) * (size_t)(4 * d));
  free(x);
  free(a);
  free(b);
  free(sa);
  free(sb);
  glow_model_free(m);
}

/* Setting the option to 0 frees the kept workspaces; so does freeing the
 * model (the live count returns to where it was). */
static void test_kept_freed(void **state) {
  (void)state;
  const long before = atomic_load(&t.live);
  glow_model *m = model(2);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  const long bare = atomic_load(&t.live); /* the model alone */
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
  const int64_t d = glow_model_dim(m);
  float *x = tu_images(m, 4, 1), *eps = malloc(sizeof(float) * (size_t)(4 * d));
  assert_int_equal(glow_forward(m, x, NULL, 4, eps, NULL), GLOW_OK);
  assert_true(atomic_load(&t.live) > bare); /* kept */
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  assert_int_equal(atomic_load(&t.live), bare);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
  assert_int_equal(glow_forward(m, x, NULL, 4, eps, NULL), GLOW_OK);
  glow_model_free(m);
  assert_int_equal(atomic_load(&t.live), before);
  free(x);
  free(eps);
}

/* A kept workspace keeps what each 1x1 weight gives (log|det W|, W^{-1},
 * an LU weight's W) from call to call, for as long as the parameters are
 * the same bits.  After the caller changes them, a model that computed with
 * the old ones gives the bits of a model that never saw them, in forward
 * and inverse. */
static void test_kept_weights_follow_params(void **state) {
  (void)state;
  const int32_t kinds[] = {GLOW_PERMUTE_CONV1X1, GLOW_PERMUTE_CONV1X1_LU};
  for (int k = 0; k < 2; k++) {
    glow_model *a = model_with(1, kinds[k]), *b = model_with(1, kinds[k]);
    const int64_t d = glow_model_dim(a);
    const size_t bytes = sizeof(float) * (size_t)(4 * d);
    float *x = tu_images(a, 4, 5), *za = malloc(bytes), *zb = malloc(bytes);
    float *xa = malloc(bytes), *xb = malloc(bytes);
    float lda[4], ldb[4], before[4];
    assert_int_equal(glow_forward(a, x, NULL, 4, za, before), GLOW_OK);
    assert_int_equal(glow_inverse(a, za, NULL, 4, xa), GLOW_OK);
    tu_perturb(a, 0.02, 11);
    tu_perturb(b, 0.02, 11);
    assert_int_equal(glow_forward(a, x, NULL, 4, za, lda), GLOW_OK);
    assert_int_equal(glow_forward(b, x, NULL, 4, zb, ldb), GLOW_OK);
    assert_memory_equal(za, zb, bytes);
    assert_memory_equal(lda, ldb, sizeof lda);
    assert_true(lda[0] != before[0]); /* the change reached log|det| */
    assert_int_equal(glow_inverse(a, za, NULL, 4, xa), GLOW_OK);
    assert_int_equal(glow_inverse(b, za, NULL, 4, xb), GLOW_OK);
    assert_memory_equal(xa, xb, bytes);
    /* Again, from what a's workspace kept: the bits it computed. */
    assert_int_equal(glow_forward(a, x, NULL, 4, za, lda), GLOW_OK);
    assert_memory_equal(za, zb, bytes);
    assert_memory_equal(lda, ldb, sizeof lda);
    assert_int_equal(glow_inverse(a, za, NULL, 4, xa), GLOW_OK);
    assert_memory_equal(xa, xb, bytes);
    free(x);
    free(za);
    free(zb);
    free(xa);
    free(xb);
    glow_model_free(a);
    glow_model_free(b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_repeated_calls_allocate_no_workspace),
      cmocka_unit_test(test_kept_same_bits),
      cmocka_unit_test(test_kept_freed),
      cmocka_unit_test(test_kept_weights_follow_params),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
