/*
 * test_harden.c -- promises under hostile use: configurations that can
 * never run, and inputs or parameters that push results out of float
 * range.  Every call that returns numbers either returns finite ones or
 * GLOW_ERR_NUMERIC with a message.
 */
#include <float.h>
#include <stdio.h>

#include "testutil.h"

/* A small model, perturbed by `scale` (couplings start as the identity);
 * conditional when n_classes > 0. */
static glow_model *small(int32_t coupling, int32_t n_classes, double scale) {
  glow_config cfg = tu_config(8, 8, 2, 2, 2, 4, coupling, GLOW_PERMUTE_CONV1X1);
  cfg.n_classes = n_classes;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  if (scale > 0)
    tu_perturb(m, scale, 11);
  return m;
}

static void expect_numeric(int rc, const char *part) {
  if (rc != GLOW_ERR_NUMERIC)
    fail_msg("expected GLOW_ERR_NUMERIC, got %d (%s)", rc, glow_last_error());
  if (part && !strstr(glow_last_error(), part))
    fail_msg("message '%s' lacks '%s'", glow_last_error(), part);
}

/* The offset of the parameter tensor `name`. */
static float *param(glow_model *m, const char *name, int64_t *count) {
  int32_t idx;
  assert_int_equal(glow_tensor_find(m, name, &idx), GLOW_OK);
  glow_tensor_info info = {.size = sizeof info};
  assert_int_equal(glow_tensor_get(m, idx, &info), GLOW_OK);
  if (count)
    *count = info.count;
  return glow_params(m) + info.offset;
}

/* H x W x C = 2^31 exactly: no batch of one image fits n * D <= 2^31 - 1,
 * so the configuration is refused at creation. */
static void test_dimension_limit(void **state) {
  (void)state;
  glow_config cfg = tu_config(32768, 65536, 1, 1, 1, 1, GLOW_COUPLING_ADDITIVE,
                              GLOW_PERMUTE_REVERSE);
  glow_model *m = (glow_model *)(uintptr_t)1;
  int rc = glow_model_create(&cfg, &m);
  if (rc != GLOW_ERR_SHAPE)
    fail_msg("2^31 values per image: %d (%s)", rc, glow_last_error());
  assert_null(m);
  assert_non_null(strstr(glow_last_error(), "too large"));
}

/* A value of 1e20 gives a finite latent (the couplings, still the
 * identity, do not amplify it) whose density underflows float: log_prob
 * must say so instead of returning -inf. */
static void test_log_prob_not_finite(void **state) {
  (void)state;
  glow_model *m = small(GLOW_COUPLING_ADDITIVE, 0, 0.0);
  float *x = tu_images(m, 2, 5);
  float out[2];
  assert_int_equal(glow_log_prob(m, x, NULL, 2, out), GLOW_OK);
  x[3] = 1e20f;
  expect_numeric(glow_log_prob(m, x, NULL, 2, out), "log-density");
  x[3] = 1e30f;
  expect_numeric(glow_bits_per_dim(m, x, NULL, 2, out), "bits per dimension");
  free(x);
  glow_model_free(m);
}

/* A NaN or a huge classifier weight: no NaN or inf logits with GLOW_OK. */
static void test_classify_not_finite(void **state) {
  (void)state;
  glow_model *m = small(GLOW_COUPLING_AFFINE, 3, 0.05);
  float *x = tu_images(m, 2, 6);
  float logits[6], probs[6];
  int64_t count;
  float *w = param(m, "classifier.weight", &count);
  assert_int_equal(glow_classify(m, x, 2, logits, probs), GLOW_OK);
  w[0] = NAN;
  expect_numeric(glow_classify(m, x, 2, logits, NULL), "logit");
  expect_numeric(glow_classify(m, x, 2, NULL, probs), "logit");
  /* Class 0's logit is FLT_MAX (1 + s), class 1's FLT_MAX (1 - s), where
   * s is the sum of the averaged top latent: one of them exceeds float
   * range unless s is exactly 0. */
  float *b = param(m, "classifier.bias", NULL);
  for (int64_t i = 0; i < count; i++)
    w[i] = i % 3 == 0 ? FLT_MAX : i % 3 == 1 ? -FLT_MAX : 0.0f;
  b[0] = b[1] = FLT_MAX;
  expect_numeric(glow_classify(m, x, 2, logits, probs), "logit");
  free(x);
  glow_model_free(m);
}

/* An infinite actnorm log-scale makes the inverse map everything to the
 * bias: finite images that mean nothing.  Sampling names the tensor. */
static void test_sample_non_finite_params(void **state) {
  (void)state;
  glow_model *m = small(GLOW_COUPLING_AFFINE, 0, 0.05);
  const int64_t d = glow_model_dim(m);
  float *x = malloc(sizeof(float) * (size_t)(2 * d));
  assert_int_equal(glow_sample(m, 2, 0.7f, 3, NULL, x), GLOW_OK);
  float *logs = param(m, "level.0.step.0.actnorm.logs", NULL);
  const float keep = logs[1];
  logs[1] = INFINITY;
  expect_numeric(glow_sample(m, 2, 0.7f, 3, NULL, x),
                 "level.0.step.0.actnorm.logs");
  logs[1] = NAN;
  expect_numeric(glow_sample(m, 2, 0.7f, 3, NULL, x),
                 "level.0.step.0.actnorm.logs");
  logs[1] = keep;
  assert_int_equal(glow_sample(m, 2, 0.7f, 3, NULL, x), GLOW_OK);
  free(x);
  glow_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dimension_limit),
      cmocka_unit_test(test_log_prob_not_finite),
      cmocka_unit_test(test_classify_not_finite),
      cmocka_unit_test(test_sample_non_finite_params),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
