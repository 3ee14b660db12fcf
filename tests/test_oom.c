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
  atomic_long calls;   /* allocations so far */
  atomic_long live;    /* blocks not yet freed */
  atomic_long fail_at; /* the allocation that fails, -1: none */
  atomic_int failed;   /* whether it has */
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
                                        t_realloc,       t_free,   &ctr};

/* Fail allocation n (-1: none) from now on, counting from 0. */
static void arm(long n) {
  atomic_store(&ctr.calls, 0);
  atomic_store(&ctr.failed, 0);
  atomic_store(&ctr.fail_at, n);
}

/* No more failures; whether the armed one happened. */
static int disarm(void) {
  atomic_store(&ctr.fail_at, -1);
  return atomic_load(&ctr.failed);
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

/* ---- The loop ------------------------------------------------------------------ */

#define N 3 /* images per batch */

/* A conditional model with LU 1x1 convs, its inputs, and room for every
 * call's outputs: `out` for this run, `ref` for the reference. */
typedef struct {
  glow_model *m;
  glow_config cfg;
  int64_t dim, np;
  float *x, *eps;
  int32_t labels[N];
  float *out, *ref;  /* outputs, each large enough for any call */
  int64_t out_count; /* floats of `out` the current call writes */
  glow_model *made;  /* a model a call created or loaded */
  uint8_t *file;     /* the model's file bytes */
  size_t file_len;
  char path[128]; /* where save writes */
  char dir[64];
} fixture;

static fixture fx;

typedef int (*call)(fixture *f);

/* Run `fn` with allocation n failing, for n = 0, 1, ... until it succeeds
 * without a failure; every failure clean.  Returns the number of failure
 * points; *absorbed counts failures the call survived (a shard thread's
 * bookkeeping, whose shards the calling thread then runs). */
static long oom_loop(fixture *f, const char *name, call fn, long *absorbed) {
  const size_t pbytes = sizeof(float) * (size_t)f->np;
  float *params = malloc(pbytes), *grads = malloc(pbytes);
  memcpy(params, glow_params(f->m), pbytes);
  memcpy(grads, glow_grads(f->m), pbytes);
  *absorbed = 0;
  for (long n = 0;; n++) {
    /* A message of another kind, which a failure must replace. */
    assert_int_equal(glow_zero_grad(NULL), GLOW_ERR_NULL);
    const long live = atomic_load(&ctr.live);
    arm(n);
    int rc = fn(f);
    if (!disarm()) {
      if (rc != GLOW_OK)
        fail_msg("%s: %d without a failed allocation (%s)", name, rc,
                 glow_last_error());
      free(params);
      free(grads);
      return n;
    }
    if (rc == GLOW_OK) { /* survived: it must have computed the same */
      ++*absorbed;
      if (memcmp(f->out, f->ref, sizeof(float) * (size_t)f->out_count))
        fail_msg("%s: allocation %ld failed, the call went on and "
                 "computed something else",
                 name, n);
      continue;
    }
    if (rc != GLOW_ERR_NOMEM)
      fail_msg("%s: allocation %ld failed: status %d (%s)", name, n, rc,
               glow_last_error());
    if (!strstr(glow_last_error(), "memory"))
      fail_msg("%s: allocation %ld: message '%s'", name, n, glow_last_error());
    if (atomic_load(&ctr.live) != live)
      fail_msg("%s: allocation %ld: %ld blocks leaked", name, n,
               atomic_load(&ctr.live) - live);
    if (memcmp(params, glow_params(f->m), pbytes) ||
        memcmp(grads, glow_grads(f->m), pbytes))
      fail_msg("%s: allocation %ld: the model changed", name, n);
  }
}

/* The reference: the call once without failures, its outputs kept. */
static void reference(fixture *f, call fn) {
  arm(-1);
  assert_int_equal(fn(f), GLOW_OK);
  memcpy(f->ref, f->out, sizeof(float) * (size_t)f->out_count);
}

/* The loop, then the outputs of its successful run against the
 * reference; prints the number of failure points. */
static void check_call(fixture *f, const char *name, call fn) {
  reference(f, fn);
  memset(f->out, 0, sizeof(float) * (size_t)f->out_count);
  long absorbed;
  const long points = oom_loop(f, name, fn, &absorbed);
  int64_t threads;
  assert_int_equal(glow_get_option(f->m, GLOW_OPT_THREADS, &threads), GLOW_OK);
  if (threads <= 1 && absorbed)
    fail_msg("%s: %ld failures ignored on one thread", name, absorbed);
  if (memcmp(f->out, f->ref, sizeof(float) * (size_t)f->out_count))
    fail_msg("%s: the successful run differs from the reference", name);
  printf("oom: %-34s %4ld failure points", name, points);
  if (absorbed)
    printf(" (%ld absorbed: a thread not started)", absorbed);
  printf("\n");
}

/* ---- The calls ------------------------------------------------------------------ */

static int do_forward(fixture *f) {
  f->out_count = N * f->dim + N;
  return glow_forward(f->m, f->x, f->labels, N, f->out, f->out + N * f->dim);
}

static int do_inverse(fixture *f) {
  f->out_count = N * f->dim;
  return glow_inverse(f->m, f->eps, f->labels, N, f->out);
}

static int do_sample(fixture *f) {
  f->out_count = N * f->dim;
  return glow_sample(f->m, N, 0.8f, 5, f->labels, f->out);
}

static int do_log_prob(fixture *f) {
  f->out_count = N;
  return glow_log_prob(f->m, f->x, f->labels, N, f->out);
}

static int do_preprocess(fixture *f) {
  uint8_t px[N * 128];
  assert_true(N * f->dim <= (int64_t)sizeof px);
  for (int64_t i = 0; i < N * f->dim; i++)
    px[i] = (uint8_t)(i * 37);
  f->out_count = N * f->dim;
  return glow_preprocess(f->m, px, N, 9, f->out);
}

static int do_classify(fixture *f) {
  const int32_t k = f->cfg.n_classes;
  f->out_count = 2 * N * k;
  return glow_classify(f->m, f->x, N, f->out, f->out + N * k);
}

/* Gradients and loss into out; the model's gradients zeroed after a
 * success, so that every run starts from the same state. */
static int do_backward(fixture *f) {
  f->out_count = f->np + 1;
  int rc = glow_backward(f->m, f->x, f->labels, N, f->out + f->np);
  if (rc == GLOW_OK) {
    memcpy(f->out, glow_grads(f->m), sizeof(float) * (size_t)f->np);
    assert_int_equal(glow_zero_grad(f->m), GLOW_OK);
  }
  return rc;
}

/* The parameters a model ends with, into out, then that model freed. */
static int take_params(fixture *f, int rc) {
  f->out_count = f->np;
  if (rc == GLOW_OK) {
    assert_non_null(f->made);
    assert_int_equal(glow_param_count(f->made), f->np);
    memcpy(f->out, glow_params(f->made), sizeof(float) * (size_t)f->np);
    glow_model_free(f->made);
  } else if (f->made) {
    fail_msg("a failed call left a model");
  }
  f->made = NULL;
  return rc;
}

static int do_create(fixture *f) {
  return take_params(f, glow_model_create(&f->cfg, &f->made));
}

static int do_load_buffer(fixture *f) {
  return take_params(f, glow_model_load_buffer(f->file, f->file_len, &f->made));
}

static int do_load_file(fixture *f) {
  return take_params(f, glow_model_load(f->path, &f->made));
}

/* Data-dependent init on a copy of the model (loaded from its bytes before
 * the allocation count starts), its parameters into out. */
static int do_data_init(fixture *f) {
  const long fail_at = atomic_load(&ctr.fail_at);
  atomic_store(&ctr.fail_at, -1);
  glow_model *copy = NULL;
  assert_int_equal(glow_model_load_buffer(f->file, f->file_len, &copy),
                   GLOW_OK);
  const size_t pbytes = sizeof(float) * (size_t)f->np;
  float *before = malloc(pbytes);
  memcpy(before, glow_params(copy), pbytes);
  arm(fail_at); /* counting from here */
  int rc = glow_data_init(copy, f->x, f->labels, N);
  if (rc != GLOW_OK && memcmp(before, glow_params(copy), pbytes))
    fail_msg("glow_data_init: a failure changed the parameters");
  f->out_count = f->np;
  memcpy(f->out, glow_params(copy), pbytes);
  glow_model_free(copy);
  free(before);
  return rc;
}

/* The file's bytes (as floats, rounded up) into out, and the file
 * removed; a failed save leaves neither the file nor a temporary one. */
static int do_save_file(fixture *f) {
  int rc = glow_model_save(f->m, f->path);
  f->out_count = (int64_t)(f->file_len + 3) / 4;
  memset(f->out, 0, sizeof(float) * (size_t)f->out_count);
  if (rc == GLOW_OK) {
    FILE *fp = fopen(f->path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(f->out, 1, f->file_len + 1, fp), f->file_len);
    fclose(fp);
    unlink(f->path);
  }
  assert_int_equal(access(f->path, F_OK), -1);
  return rc;
}

static int do_save_buffer(fixture *f) {
  size_t size = 0;
  f->out_count = (int64_t)(f->file_len + 3) / 4;
  memset(f->out, 0, sizeof(float) * (size_t)f->out_count);
  int rc = glow_model_save_buffer(f->m, f->out, f->file_len, &size);
  assert_true(rc != GLOW_OK || size == f->file_len);
  return rc;
}

/* ---- Fixture and tests ------------------------------------------------------------- */

static int setup(void **state) {
  (void)state;
  if (glow_set_allocator(&counting) != GLOW_OK)
    return -1;
  arm(-1);
  fixture *f = &fx;
  f->cfg = tu_config(8, 8, 2, 2, 2, 4, GLOW_COUPLING_AFFINE,
                     GLOW_PERMUTE_CONV1X1_LU);
  f->cfg.n_classes = 3;
  if (glow_model_create(&f->cfg, &f->m) != GLOW_OK)
    return -1;
  tu_perturb(f->m, 0.05, 21);
  f->dim = glow_model_dim(f->m);
  f->np = glow_param_count(f->m);
  f->x = tu_images(f->m, N, 4);
  for (int32_t i = 0; i < N; i++)
    f->labels[i] = i % f->cfg.n_classes;
  if (glow_data_init(f->m, f->x, f->labels, N) != GLOW_OK)
    return -1;
  f->eps = malloc(sizeof(float) * (size_t)(N * f->dim));
  if (glow_forward(f->m, f->x, f->labels, N, f->eps, NULL) != GLOW_OK)
    return -1;
  assert_int_equal(glow_model_save_buffer(f->m, NULL, 0, &f->file_len),
                   GLOW_OK);
  f->file = malloc(f->file_len);
  assert_int_equal(
      glow_model_save_buffer(f->m, f->file, f->file_len, &f->file_len),
      GLOW_OK);
  int64_t room = f->np + 1 > N * f->dim + N ? f->np + 1 : N * f->dim + N;
  if (room < (int64_t)f->file_len / 4 + 1)
    room = (int64_t)f->file_len / 4 + 1;
  f->out = calloc((size_t)room, sizeof(float));
  f->ref = calloc((size_t)room, sizeof(float));
  snprintf(f->dir, sizeof f->dir, "/tmp/glow_test_oom_XXXXXX");
  if (!mkdtemp(f->dir))
    return -1;
  snprintf(f->path, sizeof f->path, "%s/model.safetensors", f->dir);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  fixture *f = &fx;
  glow_model_free(f->m);
  free(f->x);
  free(f->eps);
  free(f->file);
  free(f->out);
  free(f->ref);
  rmdir(f->dir); /* fails, and the test with it, if a file was left */
  if (atomic_load(&ctr.live) != 0)
    return -1;
  return glow_set_allocator(NULL) == GLOW_OK ? 0 : -1;
}

static void set_threads(int64_t t) {
  assert_int_equal(glow_set_option(fx.m, GLOW_OPT_THREADS, t), GLOW_OK);
}

/* Creation and files, which run on the calling thread. */
static void test_oom_models_and_files(void **state) {
  (void)state;
  fixture *f = &fx;
  set_threads(1);
  check_call(f, "glow_model_create", do_create);
  check_call(f, "glow_model_load_buffer", do_load_buffer);
  assert_int_equal(glow_model_save(f->m, f->path), GLOW_OK);
  check_call(f, "glow_model_load", do_load_file);
  unlink(f->path);
  check_call(f, "glow_model_save_buffer", do_save_buffer);
  check_call(f, "glow_model_save", do_save_file);
  check_call(f, "glow_data_init", do_data_init);
}

/* Inference and training on 1 and 2 threads. */
static void test_oom_passes(void **state) {
  (void)state;
  fixture *f = &fx;
  char name[64];
  static const struct {
    const char *name;
    call fn;
  } calls[] = {
      {"glow_forward", do_forward},   {"glow_inverse", do_inverse},
      {"glow_sample", do_sample},     {"glow_log_prob", do_log_prob},
      {"glow_classify", do_classify}, {"glow_preprocess", do_preprocess}};
  /* Without kept workspaces every call allocates all it needs; with them
   * (the default) a call that finds its workspaces kept allocates little,
   * and one that does not allocates them for the next. */
  for (int64_t keep = 0; keep <= 1; keep++)
    for (int64_t t = 1; t <= 2; t++) {
      assert_int_equal(glow_set_option(f->m, GLOW_OPT_KEEP_WORKSPACE, keep),
                       GLOW_OK);
      set_threads(t);
      for (size_t k = 0; k < sizeof calls / sizeof calls[0]; k++) {
        snprintf(name, sizeof name, "%s, %lld thread(s)%s", calls[k].name,
                 (long long)t, keep ? ", kept" : "");
        check_call(f, name, calls[k].fn);
      }
      for (int64_t mode = 0; mode <= 1; mode++) {
        assert_int_equal(glow_set_option(f->m, GLOW_OPT_BACKWARD_MODE, mode),
                         GLOW_OK);
        snprintf(name, sizeof name, "glow_backward (%s), %lld thread(s)%s",
                 mode ? "store" : "recompute", (long long)t,
                 keep ? ", kept" : "");
        check_call(f, name, do_backward);
      }
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_allocator_rules),
      cmocka_unit_test_setup_teardown(test_oom_models_and_files, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_oom_passes, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
