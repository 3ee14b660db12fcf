/*
 * test_api.c -- the contract's edges: configuration, every argument error
 * with its exact status, failures that leave the model unchanged, error
 * strings, versions, pixel conversion.
 */
#include <stdio.h>

#include "testutil.h"

static glow_model *tiny(int32_t n_classes) {
  glow_config cfg =
      tu_config(8, 8, 1, 2, 2, 4, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  cfg.n_classes = n_classes;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  assert_non_null(m);
  return m;
}

static void test_config_defaults(void **state) {
  (void)state;
  glow_config c;
  memset(&c, 0xAB, sizeof c);
  glow_config_init(&c);
  assert_int_equal(c.size, sizeof(glow_config));
  assert_int_equal(c.height, 32);
  assert_int_equal(c.width, 32);
  assert_int_equal(c.channels, 3);
  assert_int_equal(c.levels, 3);
  assert_int_equal(c.depth, 32);
  assert_int_equal(c.hidden, 512);
  assert_int_equal(c.coupling, GLOW_COUPLING_AFFINE);
  assert_int_equal(c.permutation, GLOW_PERMUTE_CONV1X1);
  assert_int_equal(c.n_bits, 8);
  assert_int_equal(c.n_classes, 0);
  assert_int_equal(c.learn_top, 1);
  assert_float_equal(c.class_weight, 0.01f, 0.0);
  assert_int_equal(c.seed, 0);
  glow_config_init(NULL); /* no-op */
}

/* Each invalid config gets its own status and leaves *out NULL. */
static void expect_create_error(glow_config cfg, int status) {
  glow_model *m = (glow_model *)(uintptr_t)1;
  int rc = glow_model_create(&cfg, &m);
  if (rc != status)
    fail_msg("expected %d, got %d (%s)", status, rc, glow_last_error());
  assert_null(m);
  assert_true(strlen(glow_last_error()) > 10);
}

static void test_create_errors(void **state) {
  (void)state;
  glow_config ok = tu_config(8, 8, 1, 2, 2, 4, 0, 0), c;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(NULL, &m), GLOW_ERR_NULL);
  assert_int_equal(glow_model_create(&ok, NULL), GLOW_ERR_NULL);
  c = ok, c.size = 0, expect_create_error(c, GLOW_ERR_CONFIG_SIZE);
  c = ok, c.size = GLOW_CONFIG_SIZE_V1 - 8;
  expect_create_error(c, GLOW_ERR_CONFIG_SIZE);
  c = ok, c.height = 0, expect_create_error(c, GLOW_ERR_SHAPE);
  c = ok, c.width = -8, expect_create_error(c, GLOW_ERR_SHAPE);
  c = ok, c.channels = 0, expect_create_error(c, GLOW_ERR_SHAPE);
  c = ok, c.height = 7, c.levels = 1, expect_create_error(c, GLOW_ERR_SHAPE);
  c = ok, c.height = 6, expect_create_error(c, GLOW_ERR_SHAPE); /* 6 % 4 */
  c = ok, c.levels = 0, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.levels = 17, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.depth = 0, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.hidden = 0, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.coupling = 2, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.permutation = -1, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.permutation = 4, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.n_bits = 0, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.n_bits = 9, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.n_classes = -1, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.learn_top = 2, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.class_weight = -1.0f, expect_create_error(c, GLOW_ERR_CONFIG);
  c = ok, c.class_weight = NAN, expect_create_error(c, GLOW_ERR_CONFIG);
}

/* A caller built against an older, shorter struct gets defaults for the
 * fields it does not have; a newer, longer one is read up to what this
 * version knows. */
static void test_config_size_growth(void **state) {
  (void)state;
  struct {
    glow_config base;
    int32_t future_field;
  } big;
  big.base = tu_config(8, 8, 1, 2, 2, 4, 0, 0);
  big.base.size = sizeof big;
  big.future_field = 123;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&big.base, &m), GLOW_OK);
  glow_config out;
  glow_config_init(&out);
  assert_int_equal(glow_model_config(m, &out), GLOW_OK);
  assert_int_equal(out.height, 8);
  assert_int_equal(out.depth, 2);
  assert_int_equal(out.hidden, 4);
  assert_int_equal(out.size, sizeof out);
  assert_int_equal(glow_model_config(m, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_model_config(NULL, &out), GLOW_ERR_NULL);
  out.size = 4;
  assert_int_equal(glow_model_config(m, &out), GLOW_ERR_CONFIG_SIZE);
  glow_model_free(m);
}

static void test_queries(void **state) {
  (void)state;
  glow_model *m = tiny(0);
  assert_int_equal(glow_model_dim(m), 64);
  assert_int_equal(glow_model_dim(NULL), -1);
  assert_int_equal(glow_param_count(NULL), -1);
  assert_null(glow_params(NULL));
  assert_null(glow_grads(NULL));
  assert_int_equal(glow_zero_grad(NULL), GLOW_ERR_NULL);
  assert_true(glow_param_count(m) > 0);
  /* Latent blocks tile the row: level 0 (4x4x2) then the top (2x2x8). */
  int32_t h, w, c;
  int64_t off, total = 0;
  assert_int_equal(glow_latent_layout(m, 0, &h, &w, &c, &off), GLOW_OK);
  assert_int_equal(h, 4), assert_int_equal(w, 4), assert_int_equal(c, 2);
  assert_int_equal(off, 0);
  total += (int64_t)h * w * c;
  assert_int_equal(glow_latent_layout(m, 1, &h, &w, &c, &off), GLOW_OK);
  assert_int_equal(h, 2), assert_int_equal(w, 2), assert_int_equal(c, 8);
  assert_int_equal(off, 32);
  total += (int64_t)h * w * c;
  assert_int_equal(total, glow_model_dim(m));
  assert_int_equal(glow_latent_layout(m, 1, NULL, NULL, NULL, NULL), GLOW_OK);
  assert_int_equal(glow_latent_layout(m, 2, &h, &w, &c, &off), GLOW_ERR_ARG);
  assert_int_equal(glow_latent_layout(m, -1, &h, &w, &c, &off), GLOW_ERR_ARG);
  assert_int_equal(glow_latent_layout(NULL, 0, &h, &w, &c, &off),
                   GLOW_ERR_NULL);
  glow_model_free(m);
  glow_model_free(NULL);
}

/* Snapshot of the parameters, to prove failed calls change nothing. */
typedef struct {
  float *p;
  size_t bytes;
} snap;

static snap take(glow_model *m) {
  snap s = {NULL, sizeof(float) * (size_t)glow_param_count(m)};
  s.p = malloc(s.bytes);
  memcpy(s.p, glow_params(m), s.bytes);
  return s;
}

static void unchanged(glow_model *m, snap *s) {
  assert_memory_equal(s->p, glow_params(m), s->bytes);
  free(s->p);
}

static void test_inference_errors(void **state) {
  (void)state;
  glow_model *m = tiny(0);
  snap s = take(m);
  float x[2 * 64] = {0}, e[2 * 64], v[2];
  int32_t lab[2] = {0, 1};
  /* NULL pointers */
  assert_int_equal(glow_forward(NULL, x, NULL, 1, e, v), GLOW_ERR_NULL);
  assert_int_equal(glow_forward(m, NULL, NULL, 1, e, v), GLOW_ERR_NULL);
  assert_int_equal(glow_forward(m, x, NULL, 1, NULL, v), GLOW_ERR_NULL);
  assert_int_equal(glow_inverse(m, NULL, NULL, 1, x), GLOW_ERR_NULL);
  assert_int_equal(glow_inverse(m, e, NULL, 1, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_logdet(m, x, NULL, 1, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_log_prob(m, NULL, NULL, 1, v), GLOW_ERR_NULL);
  assert_int_equal(glow_bits_per_dim(NULL, x, NULL, 1, v), GLOW_ERR_NULL);
  assert_int_equal(glow_sample(m, 1, 1.0f, 0, NULL, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_sample(NULL, 1, 1.0f, 0, NULL, x), GLOW_ERR_NULL);
  /* batch size */
  assert_int_equal(glow_forward(m, x, NULL, 0, e, v), GLOW_ERR_BATCH);
  assert_int_equal(glow_inverse(m, e, NULL, -3, x), GLOW_ERR_BATCH);
  assert_int_equal(glow_log_prob(m, x, NULL, 0, v), GLOW_ERR_BATCH);
  assert_int_equal(glow_bits_per_dim(m, x, NULL, 0, v), GLOW_ERR_BATCH);
  assert_int_equal(glow_sample(m, 0, 1.0f, 0, NULL, x), GLOW_ERR_BATCH);
  assert_int_equal(glow_forward(m, x, NULL, INT32_MAX, e, v), GLOW_ERR_BATCH);
  /* labels to an unconditional model */
  assert_int_equal(glow_forward(m, x, lab, 1, e, v), GLOW_ERR_LABEL);
  assert_int_equal(glow_sample(m, 1, 1.0f, 0, lab, x), GLOW_ERR_LABEL);
  /* temperature */
  assert_int_equal(glow_sample(m, 1, NAN, 0, NULL, x), GLOW_ERR_ARG);
  assert_int_equal(glow_sample(m, 1, INFINITY, 0, NULL, x), GLOW_ERR_ARG);
  assert_int_equal(glow_sample(m, 1, -0.5f, 0, NULL, x), GLOW_ERR_ARG);
  assert_non_null(strstr(glow_last_error(), "temperature"));
  unchanged(m, &s);
  glow_model_free(m);
}

static void test_label_errors(void **state) {
  (void)state;
  glow_model *m = tiny(3);
  snap s = take(m);
  float x[2 * 64] = {0}, e[2 * 64];
  int32_t good[2] = {0, 2}, high[2] = {0, 3}, neg[2] = {-1, 0};
  assert_int_equal(glow_forward(m, x, NULL, 2, e, NULL), GLOW_ERR_LABEL);
  assert_non_null(strstr(glow_last_error(), "needs labels"));
  assert_int_equal(glow_forward(m, x, high, 2, e, NULL), GLOW_ERR_LABEL);
  assert_non_null(strstr(glow_last_error(), "labels[1] = 3"));
  assert_int_equal(glow_inverse(m, e, neg, 2, x), GLOW_ERR_LABEL);
  assert_int_equal(glow_sample(m, 2, 1.0f, 0, high, x), GLOW_ERR_LABEL);
  assert_int_equal(glow_sample(m, 2, 1.0f, 0, NULL, x), GLOW_ERR_LABEL);
  assert_int_equal(glow_forward(m, x, good, 2, e, NULL), GLOW_OK);
  unchanged(m, &s);
  glow_model_free(m);
}

/* A singular 1x1 weight is a numeric error on both directions, not NaNs. */
static void test_singular_weight(void **state) {
  (void)state;
  glow_model *m = tiny(0);
  /* level.0.step.0: actnorm bias [4], logs [4], then invconv.weight [4][4] */
  float *w = glow_params(m) + 8;
  for (int i = 0; i < 4; i++)
    w[i * 4 + 1] = w[i * 4 + 0]; /* two equal columns */
  float x[64], e[64] = {0};
  for (int i = 0; i < 64; i++)
    x[i] = 0.01f * (float)i - 0.3f;
  assert_int_equal(glow_inverse(m, e, NULL, 1, x), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "level 0 step 0"));
  assert_int_equal(glow_forward(m, x, NULL, 1, e, NULL), GLOW_ERR_NUMERIC);
  assert_int_equal(glow_sample(m, 1, 1.0f, 3, NULL, x), GLOW_ERR_NUMERIC);
  glow_model_free(m);
}

/* Non-finite inputs are reported, not passed on. */
static void test_non_finite_input(void **state) {
  (void)state;
  glow_model *m = tiny(0);
  float x[64], e[64];
  for (int i = 0; i < 64; i++)
    x[i] = 0.1f;
  x[17] = NAN;
  assert_int_equal(glow_forward(m, x, NULL, 1, e, NULL), GLOW_ERR_NUMERIC);
  for (int i = 0; i < 64; i++)
    e[i] = 0.0f;
  e[5] = INFINITY;
  assert_int_equal(glow_inverse(m, e, NULL, 1, x), GLOW_ERR_NUMERIC);
  glow_model_free(m);
}

static void test_status_strings(void **state) {
  (void)state;
  /* Every pinned code has its own text; others get a generic one. */
  for (int a = 0; a >= -15; a--) {
    assert_string_not_equal(glow_status_string(a), "unknown status");
    for (int b = a - 1; b >= -15; b--)
      assert_string_not_equal(glow_status_string(a), glow_status_string(b));
  }
  assert_string_equal(glow_status_string(-999), "unknown status");
  assert_string_equal(glow_status_string(1), "unknown status");
  assert_int_equal(GLOW_ERR_NULL, -1);
  assert_int_equal(GLOW_ERR_BUFFER, -15);
}

static void test_version(void **state) {
  (void)state;
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", GLOW_VERSION_MAJOR,
           GLOW_VERSION_MINOR, GLOW_VERSION_PATCH);
  assert_string_equal(glow_version_string(), want);
  assert_int_equal(glow_version_number(), GLOW_VERSION_NUMBER);
  assert_int_equal(GLOW_VERSION_NUMBER, GLOW_VERSION_MAJOR * 10000 +
                                            GLOW_VERSION_MINOR * 100 +
                                            GLOW_VERSION_PATCH);
}

/* The last error is per thread and survives successful calls. */
static void test_last_error(void **state) {
  (void)state;
  glow_model *m = tiny(0);
  float x[64] = {0}, e[64];
  assert_int_equal(glow_forward(m, x, NULL, 0, e, NULL), GLOW_ERR_BATCH);
  assert_non_null(strstr(glow_last_error(), "glow_forward"));
  assert_non_null(strstr(glow_last_error(), "n = 0"));
  glow_model_free(m);
}

static void test_pixels(void **state) {
  (void)state;
  glow_config cfg = tu_config(4, 4, 2, 1, 1, 4, 0, 0);
  glow_model *m8 = NULL, *m5 = NULL;
  assert_int_equal(glow_model_create(&cfg, &m8), GLOW_OK);
  cfg.n_bits = 5;
  assert_int_equal(glow_model_create(&cfg, &m5), GLOW_OK);
  enum { N = 8, D = 32 };
  uint8_t px[N * D], back[N * D];
  float x[N * D], x2[N * D];
  for (int i = 0; i < N * D; i++)
    px[i] = (uint8_t)(i * 37 + 11);
  /* 8 bits: values in [-0.5, 0.5), each in its pixel's bin, round trip. */
  assert_int_equal(glow_preprocess(m8, px, N, 1, x), GLOW_OK);
  for (int i = 0; i < N * D; i++) {
    assert_true(x[i] >= -0.5f && x[i] < 0.5f);
    assert_true(x[i] >= px[i] / 256.0f - 0.5f - 1e-6f);
    assert_true(x[i] <= (px[i] + 1) / 256.0f - 0.5f + 1e-6f);
  }
  assert_int_equal(glow_postprocess(m8, x, N, back), GLOW_OK);
  assert_memory_equal(px, back, sizeof px);
  /* Same seed, same noise; another seed, other noise. */
  assert_int_equal(glow_preprocess(m8, px, N, 1, x2), GLOW_OK);
  assert_memory_equal(x, x2, sizeof x);
  assert_int_equal(glow_preprocess(m8, px, N, 2, x2), GLOW_OK);
  assert_memory_not_equal(x, x2, sizeof x);
  /* 5 bits: the top five bits survive. */
  assert_int_equal(glow_preprocess(m5, px, N, 1, x), GLOW_OK);
  assert_int_equal(glow_postprocess(m5, x, N, back), GLOW_OK);
  for (int i = 0; i < N * D; i++)
    assert_int_equal(back[i], px[i] & 0xF8);
  /* Out-of-range and non-finite values are clipped. */
  x[0] = 3.0f, x[1] = -3.0f, x[2] = NAN;
  assert_int_equal(glow_postprocess(m8, x, 1, back), GLOW_OK);
  assert_int_equal(back[0], 255);
  assert_int_equal(back[1], 0);
  assert_int_equal(back[2], 0);
  /* errors */
  assert_int_equal(glow_preprocess(NULL, px, 1, 0, x), GLOW_ERR_NULL);
  assert_int_equal(glow_preprocess(m8, NULL, 1, 0, x), GLOW_ERR_NULL);
  assert_int_equal(glow_preprocess(m8, px, 1, 0, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_preprocess(m8, px, 0, 0, x), GLOW_ERR_BATCH);
  assert_int_equal(glow_postprocess(m8, x, -1, back), GLOW_ERR_BATCH);
  assert_int_equal(glow_postprocess(m8, NULL, 1, back), GLOW_ERR_NULL);
  glow_model_free(m8);
  glow_model_free(m5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_defaults),
      cmocka_unit_test(test_create_errors),
      cmocka_unit_test(test_config_size_growth),
      cmocka_unit_test(test_queries),
      cmocka_unit_test(test_inference_errors),
      cmocka_unit_test(test_label_errors),
      cmocka_unit_test(test_singular_weight),
      cmocka_unit_test(test_non_finite_input),
      cmocka_unit_test(test_status_strings),
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_last_error),
      cmocka_unit_test(test_pixels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
