/*
 * test_flow.c -- whole-model properties: exact inversion for every coupling
 * and permutation, consistency of the scoring calls, sampling.
 */
#include <stdio.h>

#include "testutil.h"

static const int32_t couplings[] = {GLOW_COUPLING_AFFINE,
                                    GLOW_COUPLING_ADDITIVE};
static const int32_t perms[] = {GLOW_PERMUTE_CONV1X1, GLOW_PERMUTE_CONV1X1_LU,
                                GLOW_PERMUTE_REVERSE, GLOW_PERMUTE_SHUFFLE};

/* inverse(forward(x)) == x within 1e-4 on a perturbed model, and the
 * latent is far from the input (the flow did something). */
static void round_trip(int32_t coupling, int32_t perm, int32_t n_classes) {
  glow_config cfg = tu_config(8, 8, 3, 2, 3, 16, coupling, perm);
  cfg.n_classes = n_classes;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, 11);
  const int32_t n = 3;
  const int64_t d = glow_model_dim(m);
  float *x = tu_images(m, n, 5);
  float *eps = malloc(sizeof(float) * (size_t)(n * d));
  float *back = malloc(sizeof(float) * (size_t)(n * d));
  int32_t labels[3] = {0, 1, 2};
  const int32_t *lab = n_classes ? labels : NULL;
  float ld[3];
  assert_int_equal(glow_forward(m, x, lab, n, eps, ld), GLOW_OK);
  assert_int_equal(glow_inverse(m, eps, lab, n, back), GLOW_OK);
  double err = tu_max_abs_diff(x, back, n * d);
  double moved = tu_max_abs_diff(x, eps, n * d);
  if (err > 1e-4)
    fail_msg("coupling %d perm %d: round trip error %g", coupling, perm, err);
  assert_true(moved > 0.1);
  for (int i = 0; i < n; i++)
    assert_true(isfinite(ld[i]) && ld[i] != 0.0f);
  free(x);
  free(eps);
  free(back);
  glow_model_free(m);
}

static void test_round_trip_all(void **state) {
  (void)state;
  for (size_t c = 0; c < 2; c++)
    for (size_t p = 0; p < 4; p++)
      round_trip(couplings[c], perms[p], 0);
}

static void test_round_trip_conditional(void **state) {
  (void)state;
  round_trip(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1, 3);
}

/* Three levels, one channel, odd-ish sizes: 8x16x1. */
static void test_round_trip_three_levels(void **state) {
  (void)state;
  glow_config cfg = tu_config(8, 16, 1, 3, 2, 8, GLOW_COUPLING_AFFINE,
                              GLOW_PERMUTE_CONV1X1_LU);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, 3);
  const int32_t n = 2;
  const int64_t d = glow_model_dim(m);
  float *x = tu_images(m, n, 9);
  float *eps = malloc(sizeof(float) * (size_t)(n * d));
  float *back = malloc(sizeof(float) * (size_t)(n * d));
  assert_int_equal(glow_forward(m, x, NULL, n, eps, NULL), GLOW_OK);
  assert_int_equal(glow_inverse(m, eps, NULL, n, back), GLOW_OK);
  assert_true(tu_max_abs_diff(x, back, n * d) <= 1e-4);
  free(x);
  free(eps);
  free(back);
  glow_model_free(m);
}

/* log_prob = sum log N(eps) + logdet; bpd follows from log_prob; logdet
 * matches forward's; each image's results do not depend on the batch. */
static void test_scores_agree(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 2, 2, 2, 8, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  cfg.n_bits = 5;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, 21);
  const int32_t n = 4;
  const int64_t d = glow_model_dim(m);
  float *x = tu_images(m, n, 13);
  float *eps = malloc(sizeof(float) * (size_t)(n * d));
  float ld[4], ld2[4], lp[4], bpd[4], one;
  assert_int_equal(glow_forward(m, x, NULL, n, eps, ld), GLOW_OK);
  assert_int_equal(glow_logdet(m, x, NULL, n, ld2), GLOW_OK);
  assert_int_equal(glow_log_prob(m, x, NULL, n, lp), GLOW_OK);
  assert_int_equal(glow_bits_per_dim(m, x, NULL, n, bpd), GLOW_OK);
  for (int i = 0; i < n; i++) {
    double sq = 0.0;
    for (int64_t j = 0; j < d; j++)
      sq += (double)eps[i * d + j] * eps[i * d + j];
    double want = -0.5 * sq - 0.5 * d * log(2 * M_PI) + ld[i];
    assert_float_equal(ld2[i], ld[i], 1e-6 * fabs(ld[i]) + 1e-6);
    assert_float_equal(lp[i], want, 1e-5 * fabs(want) + 1e-4);
    double b = (-want + d * 5 * log(2.0)) / (d * log(2.0));
    assert_float_equal(bpd[i], b, 1e-5);
    /* the same image alone */
    assert_int_equal(glow_log_prob(m, x + i * d, NULL, 1, &one), GLOW_OK);
    assert_float_equal(one, lp[i], 1e-5 * fabs(lp[i]) + 1e-4);
  }
  free(x);
  free(eps);
  glow_model_free(m);
}

/* Same seed, same images; another seed, other images; T = 0 is the mode,
 * the inverse of the zero latent; samples are eps at temperature T. */
static void test_sampling(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 1, 2, 2, 8, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, 2);
  const int32_t n = 3;
  const int64_t d = glow_model_dim(m);
  size_t bytes = sizeof(float) * (size_t)(n * d);
  float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
  float *z = calloc(1, bytes), *eps = malloc(bytes);
  assert_int_equal(glow_sample(m, n, 0.7f, 42, NULL, a), GLOW_OK);
  assert_int_equal(glow_sample(m, n, 0.7f, 42, NULL, b), GLOW_OK);
  assert_memory_equal(a, b, bytes);
  assert_int_equal(glow_sample(m, n, 0.7f, 43, NULL, c), GLOW_OK);
  assert_true(tu_max_abs_diff(a, c, n * d) > 0.01);
  /* The first image's noise does not depend on the batch size (its pixels
   * agree to float rounding: GEMM blocking varies with the batch). */
  assert_int_equal(glow_sample(m, 1, 0.7f, 42, NULL, c), GLOW_OK);
  assert_true(tu_max_abs_diff(a, c, d) <= 1e-5);
  /* T = 0: the mode. */
  assert_int_equal(glow_sample(m, n, 0.0f, 42, NULL, a), GLOW_OK);
  assert_int_equal(glow_inverse(m, z, NULL, n, b), GLOW_OK);
  assert_true(tu_max_abs_diff(a, b, n * d) <= 1e-6);
  /* Samples at T encode to latents with standard deviation near T. */
  const int32_t big = 64;
  float *s = malloc(sizeof(float) * (size_t)(big * d));
  float *e = malloc(sizeof(float) * (size_t)(big * d));
  assert_int_equal(glow_sample(m, big, 0.5f, 1, NULL, s), GLOW_OK);
  assert_int_equal(glow_forward(m, s, NULL, big, e, NULL), GLOW_OK);
  double sq = 0.0;
  for (int64_t i = 0; i < big * d; i++)
    sq += (double)e[i] * e[i];
  double sd = sqrt(sq / (double)(big * d));
  assert_true(fabs(sd - 0.5) < 0.02);
  free(a);
  free(b);
  free(c);
  free(z);
  free(eps);
  free(s);
  free(e);
  glow_model_free(m);
}

/* At a temperature where the inverse overflows for many images, sampling
 * redraws those (deterministically per seed and image index) instead of
 * failing; at an absurd temperature it gives up with NUMERIC. */
static void test_sample_redraws_overflow(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 1, 2, 2, 8, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.1, 5);
  const int32_t n = 64;
  const int64_t d = glow_model_dim(m);
  float *x = malloc(sizeof(float) * (size_t)(n * d));
  float *e = malloc(sizeof(float) * (size_t)(n * d));
  float *y = malloc(sizeof(float) * (size_t)(n * d));
  /* Precondition: at T = 6 a good share of latents overflow. */
  uint64_t s = 9;
  for (int64_t i = 0; i < n * d; i++)
    e[i] = (float)(6.0 * tu_normal(&s));
  assert_int_equal(glow_inverse(m, e, NULL, n, x), GLOW_ERR_NUMERIC);
  int bad = 0;
  for (int32_t i = 0; i < n; i++)
    for (int64_t j = 0; j < d; j++)
      if (!isfinite(x[i * d + j])) {
        bad++;
        break;
      }
  assert_true(bad > n / 8 && bad < n);
  assert_int_equal(glow_sample(m, n, 6.0f, 3, NULL, x), GLOW_OK);
  for (int64_t i = 0; i < n * d; i++)
    assert_true(isfinite(x[i]));
  /* Redraws depend on the image index, not on the batch. */
  assert_int_equal(glow_sample(m, 16, 6.0f, 3, NULL, y), GLOW_OK);
  for (int64_t i = 0; i < 16 * d; i++)
    if (!(fabs(x[i] - y[i]) <= 1e-4 * (1.0 + fabs(x[i]))))
      fail_msg("image %lld pixel %lld: %g in a batch of 64, %g of 16",
               (long long)(i / d), (long long)(i % d), x[i], y[i]);
  assert_int_equal(glow_sample(m, 4, 1e4f, 3, NULL, y), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "after 16 draws"));
  free(x);
  free(e);
  free(y);
  glow_model_free(m);
}

/* Same config, same weights; another seed, other weights. */
static void test_creation_deterministic(void **state) {
  (void)state;
  glow_config cfg = tu_config(8, 8, 3, 2, 2, 8, GLOW_COUPLING_AFFINE,
                              GLOW_PERMUTE_CONV1X1_LU);
  glow_model *a = NULL, *b = NULL;
  assert_int_equal(glow_model_create(&cfg, &a), GLOW_OK);
  assert_int_equal(glow_model_create(&cfg, &b), GLOW_OK);
  assert_int_equal(glow_param_count(a), glow_param_count(b));
  assert_memory_equal(glow_params(a), glow_params(b),
                      sizeof(float) * (size_t)glow_param_count(a));
  glow_model_free(b);
  cfg.seed = 8;
  assert_int_equal(glow_model_create(&cfg, &b), GLOW_OK);
  assert_memory_not_equal(glow_params(a), glow_params(b),
                          sizeof(float) * (size_t)glow_param_count(a));
  glow_model_free(a);
  glow_model_free(b);
}

/* Parameter writes are seen by the next call. */
static void test_param_writes_visible(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(4, 4, 1, 1, 1, 4, GLOW_COUPLING_ADDITIVE, GLOW_PERMUTE_REVERSE);
  cfg.learn_top = 1;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  float x[16], lp0, lp1;
  for (int i = 0; i < 16; i++)
    x[i] = 0.03f * (float)i - 0.2f;
  assert_int_equal(glow_log_prob(m, x, NULL, 1, &lp0), GLOW_OK);
  /* The step's actnorm log-scales come first: raise one by 0.5 nats. */
  glow_params(m)[4] += 0.5f; /* level.0.step.0.actnorm.logs[0] */
  assert_int_equal(glow_log_prob(m, x, NULL, 1, &lp1), GLOW_OK);
  assert_float_not_equal(lp0, lp1, 1e-3);
  glow_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_all),
      cmocka_unit_test(test_round_trip_conditional),
      cmocka_unit_test(test_round_trip_three_levels),
      cmocka_unit_test(test_scores_agree),
      cmocka_unit_test(test_sampling),
      cmocka_unit_test(test_sample_redraws_overflow),
      cmocka_unit_test(test_creation_deterministic),
      cmocka_unit_test(test_param_writes_visible),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
