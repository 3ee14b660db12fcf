/*
 * test_oom.c -- the replaceable allocator, and out of memory at every
 * allocation of every call: for N = 0, 1, 2, ... allocation N fails,
 * until the call makes fewer than N + 1 allocations and succeeds.  Every
 * failure must be GLOW_ERR_NOMEM with a message, leave the model
 * bit-identical (parameters, gradients) and usable, and leak nothing (the
 * allocator counts live blocks; ASan checks the rest).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "testutil.h"

/* ---- A counting allocator that fails on demand ----------------------------- */

typedef struct {
  atomic_long calls;  /* allocations so far */
  atomic_long live;   /* blocks not yet freed */
  atomic_long fail_at; /* the allocation that fails, -1: none */
  atomic_int failed;  /* whether it has */
} counter;

static counter ctr = {0, 0, -1, 0};

/* 1 if this allocation is the one to fail. */
static int should_fail(counter *c) {
  const long k = atomic_fetch_add(&c->calls, 1);
  if (k != atomic_load(&c->fail_at))
    return 0;
  atomic_store(&c->failed, 1);
  return 1;
}

static void *t_malloc(void *ctx, size_t size) {
  counter *c = ctx;
  if (size == 0)
    fail_msg("malloc of 0 bytes");
  if (should_fail(c))
    return NULL;
  void *p = malloc(size);
  atomic_fetch_add(&c->live, p != NULL);
  return p;
}

static void *t_calloc(void *ctx, size_t count, size_t size) {
  counter *c = ctx;
  if (count == 0 || size == 0)
    fail_msg("calloc of 0 bytes");
  if (should_fail(c))
    return NULL;
  void *p = calloc(count, size);
  atomic_fetch_add(&c->live, p != NULL);
  return p;
}

static void *t_realloc(void *ctx, void *ptr, size_t size) {
  counter *c = ctx;
  if (!ptr || size == 0)
    fail_msg("realloc(%p, %zu)", ptr, size);
  if (should_fail(c))
    return NULL;
  return realloc(ptr, size);
}

static void t_free(void *ctx, void *ptr) {
  counter *c = ctx;
  if (!ptr)
    fail_msg("free(NULL)");
  atomic_fetch_sub(&c->live, 1);
  free(ptr);
}

static const glow_allocator counting = {sizeof counting, t_malloc, t_calloc,
                                        t_realloc, t_free, &ctr};

static void arm(long n) {
  atomic_store(&ctr.calls, 0);
  atomic_store(&ctr.failed, 0);
  atomic_store(&ctr.fail_at, n);
}

/* ---- The allocator's own rules ---------------------------------------------- */

static void test_allocator_rules(void **state) {
  (void)state;
  glow_allocator bad = counting;
  bad.size = GLOW_ALLOCATOR_SIZE_V1 - 1;
  assert_int_equal(glow_set_allocator(&bad), GLOW_ERR_ARG);
  bad = counting;
  bad.free_fn = NULL;
  assert_int_equal(glow_set_allocator(&bad), GLOW_ERR_NULL);
  assert_int_equal(glow_set_allocator(&counting), GLOW_OK);
  arm(-1);
  glow_config cfg = tu_config(4, 4, 1, 1, 1, 2, GLOW_COUPLING_AFFINE,
                              GLOW_PERMUTE_CONV1X1_LU);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  assert_true(atomic_load(&ctr.calls) > 0); /* it went through the hook */
  assert_true(atomic_load(&ctr.live) > 0);
  /* Not while a model lives: its memory came from this allocator. */
  assert_int_equal(glow_set_allocator(NULL), GLOW_ERR_STATE);
  assert_non_null(strstr(glow_last_error(), "model"));
  size_t size;
  assert_int_equal(glow_model_save_buffer(m, NULL, 0, &size), GLOW_OK);
  uint8_t *b = malloc(size);
  assert_int_equal(glow_model_save_buffer(m, b, size, &size), GLOW_OK);
  glow_model *back = NULL;
  const long before = atomic_load(&ctr.calls);
  assert_int_equal(glow_model_load_buffer(b, size, &back), GLOW_OK);
  /* A node per JSON value of the header: cJSON allocates through it. */
  assert_true(atomic_load(&ctr.calls) > before + 100);
  glow_model_free(back);
  glow_model_free(m);
  free(b);
  assert_int_equal(atomic_load(&ctr.live), 0);
  assert_int_equal(glow_set_allocator(NULL), GLOW_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_allocator_rules),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
