/*
 * test_latent.c -- latent arithmetic helpers and class prediction.
 */
#include <stdio.h>

#include "testutil.h"

static double dot(const float *a, const float *b, int n) {
  double s = 0;
  for (int i = 0; i < n; i++)
    s += (double)a[i] * b[i];
  return s;
}

static void test_lerp(void **state) {
  (void)state;
  float a[4] = {1, 2, 3, 4}, b[4] = {-1, 0, 5, 4}, o[4];
  assert_int_equal(glow_latent_lerp(a, b, 4, 0.0f, o), GLOW_OK);
  assert_memory_equal(o, a, sizeof a);
  assert_int_equal(glow_latent_lerp(a, b, 4, 1.0f, o), GLOW_OK);
  assert_memory_equal(o, b, sizeof b);
  assert_int_equal(glow_latent_lerp(a, b, 4, 0.25f, o), GLOW_OK);
  assert_float_equal(o[0], 0.5f, 1e-7);
  assert_float_equal(o[1], 1.5f, 1e-7);
  assert_float_equal(o[2], 3.5f, 1e-7);
  /* in place, extrapolation */
  assert_int_equal(glow_latent_lerp(a, b, 4, 2.0f, a), GLOW_OK);
  assert_float_equal(a[0], -3.0f, 1e-7);
  assert_int_equal(glow_latent_lerp(NULL, b, 4, 0.5f, o), GLOW_ERR_NULL);
  assert_int_equal(glow_latent_lerp(a, b, 0, 0.5f, o), GLOW_ERR_ARG);
  assert_int_equal(glow_latent_lerp(a, b, 4, NAN, o), GLOW_ERR_ARG);
}

static void test_slerp(void **state) {
  (void)state;
  enum { D = 64 };
  float a[D], b[D], o[D], l[D];
  uint64_t s = 3;
  for (int i = 0; i < D; i++)
    a[i] = (float)tu_normal(&s), b[i] = (float)tu_normal(&s);
  assert_int_equal(glow_latent_slerp(a, b, D, 0.0f, o), GLOW_OK);
  assert_true(tu_max_abs_diff(o, a, D) < 1e-5);
  assert_int_equal(glow_latent_slerp(a, b, D, 1.0f, o), GLOW_OK);
  assert_true(tu_max_abs_diff(o, b, D) < 1e-5);
  /* The point at t lies at t times the angle, on the plane of a and b. */
  double na = sqrt(dot(a, a, D)), nb = sqrt(dot(b, b, D));
  double w = acos(dot(a, b, D) / (na * nb));
  assert_int_equal(glow_latent_slerp(a, b, D, 0.3f, o), GLOW_OK);
  double no = sqrt(dot(o, o, D));
  assert_float_equal(acos(dot(a, o, D) / (na * no)), 0.3 * w, 1e-4);
  assert_float_equal(acos(dot(o, b, D) / (no * nb)), 0.7 * w, 1e-4);
  /* For two roughly orthogonal Gaussian latents the midpoint keeps the
   * norm, where the straight line's midpoint is about 1/sqrt(2) shorter. */
  assert_int_equal(glow_latent_slerp(a, b, D, 0.5f, o), GLOW_OK);
  assert_int_equal(glow_latent_lerp(a, b, D, 0.5f, l), GLOW_OK);
  double mid = sqrt(dot(o, o, D)), lin = sqrt(dot(l, l, D));
  assert_true(mid > 0.9 * sqrt(na * nb));
  assert_true(lin < 0.85 * sqrt(na * nb));
  /* Parallel vectors fall back to the straight line. */
  for (int i = 0; i < D; i++)
    b[i] = 2.0f * a[i];
  assert_int_equal(glow_latent_slerp(a, b, D, 0.5f, o), GLOW_OK);
  for (int i = 0; i < D; i++)
    assert_float_equal(o[i], 1.5f * a[i], 1e-5);
  float z[D] = {0};
  assert_int_equal(glow_latent_slerp(a, z, D, 0.5f, o), GLOW_ERR_ARG);
  assert_int_equal(glow_latent_slerp(a, b, D, INFINITY, o), GLOW_ERR_ARG);
  assert_int_equal(glow_latent_slerp(a, b, D, 0.5f, NULL), GLOW_ERR_NULL);
}

static void test_direction_and_shift(void **state) {
  (void)state;
  /* Two rows with, three without, dim 3. */
  const float with[6] = {1, 2, 3, 3, 2, 1};
  const float without[9] = {0, 0, 0, 3, 3, 3, -3, 0, 6};
  float d[3], z[6] = {1, 1, 1, 2, 2, 2}, o[6];
  assert_int_equal(glow_latent_direction(with, 2, without, 3, 3, d), GLOW_OK);
  assert_float_equal(d[0], 2.0 - 0.0, 1e-6);
  assert_float_equal(d[1], 2.0 - 1.0, 1e-6);
  assert_float_equal(d[2], 2.0 - 3.0, 1e-6);
  assert_int_equal(glow_latent_shift(z, d, 2, 3, 0.5f, o), GLOW_OK);
  const float want[6] = {2, 1.5f, 0.5f, 3, 2.5f, 1.5f};
  assert_true(tu_max_abs_diff(o, want, 6) < 1e-6);
  assert_int_equal(glow_latent_shift(z, d, 2, 3, 0.5f, z), GLOW_OK);
  assert_memory_equal(z, o, sizeof o); /* in place */
  assert_int_equal(glow_latent_direction(with, 0, without, 3, 3, d),
                   GLOW_ERR_BATCH);
  assert_int_equal(glow_latent_direction(with, 2, NULL, 3, 3, d),
                   GLOW_ERR_NULL);
  assert_int_equal(glow_latent_shift(z, d, 0, 3, 1.0f, o), GLOW_ERR_BATCH);
  assert_int_equal(glow_latent_shift(z, d, 2, 3, NAN, o), GLOW_ERR_ARG);
}

static const float *tensor(glow_model *m, const char *name) {
  int32_t i;
  glow_tensor_info info;
  info.size = sizeof info;
  assert_int_equal(glow_tensor_find(m, name, &i), GLOW_OK);
  assert_int_equal(glow_tensor_get(m, i, &info), GLOW_OK);
  return glow_params(m) + info.offset;
}

/* Logits are mean_hw(z_top) W + b, with z_top rebuilt from the top eps
 * block and the top prior; probabilities are their softmax. */
static void test_classify(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 1, 2, 2, 6, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  cfg.n_classes = 3;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.1, 8);
  const int32_t n = 4, nc = 3;
  const int64_t d = glow_model_dim(m);
  float *x = tu_images(m, n, 4);
  float *eps = malloc(sizeof(float) * (size_t)(n * d));
  float logits[12], probs[12], p2[12];
  int32_t lab[4] = {2, 1, 0, 2};
  assert_int_equal(glow_classify(m, x, n, logits, probs), GLOW_OK);
  assert_int_equal(glow_classify(m, x, n, NULL, p2), GLOW_OK);
  assert_memory_equal(probs, p2, sizeof probs);
  assert_int_equal(glow_forward(m, x, lab, n, eps, NULL), GLOW_OK);
  int32_t h, w, c;
  int64_t off;
  assert_int_equal(glow_latent_layout(m, 1, &h, &w, &c, &off), GLOW_OK);
  const float *top = tensor(m, "top.prior");
  const float *emb = tensor(m, "top.class_embed");
  const float *W = tensor(m, "classifier.weight");
  const float *b = tensor(m, "classifier.bias");
  for (int i = 0; i < n; i++) {
    double hbar[8] = {0}, sum = 0, mx = -1e30, lg[3];
    for (int p = 0; p < h * w; p++)
      for (int k = 0; k < c; k++) {
        double mean = top[p * 2 * c + 2 * k] + emb[lab[i] * 2 * c + 2 * k];
        double logs =
            top[p * 2 * c + 2 * k + 1] + emb[lab[i] * 2 * c + 2 * k + 1];
        hbar[k] += (mean + exp(logs) * eps[i * d + off + p * c + k]) / (h * w);
      }
    for (int j = 0; j < nc; j++) {
      lg[j] = b[j];
      for (int k = 0; k < c; k++)
        lg[j] += hbar[k] * W[k * nc + j];
      assert_float_equal(logits[i * nc + j], lg[j], 1e-4);
      mx = fmax(mx, lg[j]);
    }
    for (int j = 0; j < nc; j++)
      sum += exp(lg[j] - mx);
    double psum = 0;
    for (int j = 0; j < nc; j++) {
      assert_float_equal(probs[i * nc + j], exp(lg[j] - mx) / sum, 1e-5);
      psum += probs[i * nc + j];
    }
    assert_float_equal(psum, 1.0, 1e-5);
  }
  /* The logits must not be trivial. */
  assert_true(fabs(logits[0] - logits[1]) > 1e-3);
  assert_int_equal(glow_classify(m, x, 0, logits, probs), GLOW_ERR_BATCH);
  assert_int_equal(glow_classify(m, x, n, NULL, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_classify(NULL, x, n, logits, NULL), GLOW_ERR_NULL);
  glow_model_free(m);
  cfg.n_classes = 0;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  assert_int_equal(glow_classify(m, x, n, logits, probs), GLOW_ERR_STATE);
  glow_model_free(m);
  free(x);
  free(eps);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lerp),
      cmocka_unit_test(test_slerp),
      cmocka_unit_test(test_direction_and_shift),
      cmocka_unit_test(test_classify),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
