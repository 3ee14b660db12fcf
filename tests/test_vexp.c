/*
 * test_vexp.c -- the exponentials in vectors: glow__exp, and glow__sigmoid
 * (the affine coupling's scale: s, 1 - s and log s), against double
 * precision over sweeps of the floats and at the edges (infinities, NaN,
 * results that are subnormal, round to zero or overflow), and the same
 * bits from every instruction set this CPU runs, whatever the run a value
 * is in.
 */
#include <string.h>

#include "testutil.h"

#include "kernels.h"

/* The spacing of floats at |r| (the smallest subnormal at most). */
static double float_ulp(double r) {
  int e;
  frexp(fabs(r), &e);
  const double u = ldexp(1.0, e - 24);
  return u < 0x1p-149 ? 0x1p-149 : u;
}

/* |got - want| in units of want's float spacing. */
static double ulps(float got, double want) {
  return fabs((double)got - want) / float_ulp(want);
}

/* s = 1 / (1 + e^-x), and log s, in double without cancelling. */
static void reference(double x, double *s, double *one_minus, double *log_s) {
  *s = 1.0 / (1.0 + exp(-x));
  *one_minus = 1.0 / (1.0 + exp(x));
  *log_s = x < 0.0 ? x - log1p(exp(x)) : -log1p(exp(-x));
}

#define SWEEP 4096

typedef struct {
  double s, one_minus, log_s; /* the largest errors, in ulps */
  int64_t count;
} worst;

/* v[0, n) through glow__sigmoid, each result's error in w. */
static void compare(const float *v, int n, worst *w) {
  float s[SWEEP], om[SWEEP], ls[SWEEP];
  glow__sigmoid(v, n, s, om, ls);
  for (int i = 0; i < n; i++) {
    double rs, rom, rls;
    reference(v[i], &rs, &rom, &rls);
    w->s = fmax(w->s, ulps(s[i], rs));
    w->one_minus = fmax(w->one_minus, ulps(om[i], rom));
    w->log_s = fmax(w->log_s, ulps(ls[i], rls));
  }
  w->count += n;
}

static void test_accuracy(void **state) {
  (void)state;
  float v[SWEEP];
  worst w = {0};
  int fill = 0;
  /* Every 3001st float pattern with |x| <= 110: all exponents, and
   * mantissas all over, positive and negative. */
  for (uint64_t b = 0; b <= 0xffffffffu; b += 3001) {
    const uint32_t bits = (uint32_t)b;
    float x;
    memcpy(&x, &bits, sizeof x);
    if (!(fabsf(x) <= 110.0f))
      continue;
    v[fill++] = x;
    if (fill == SWEEP) {
      compare(v, fill, &w);
      fill = 0;
    }
  }
  compare(v, fill, &w);
  assert_true(w.count > 500000);
  /* The same formula on the C library's expf and log1pf: 2.8 and 1.5. */
  assert_true(w.s <= 3.0);
  assert_true(w.one_minus <= 3.0);
  assert_true(w.log_s <= 2.5);
  assert_true(w.s > 0.0); /* the sweep did compare */
}

static void test_edges(void **state) {
  (void)state;
  const float v[] = {INFINITY, -INFINITY, NAN,    0.0f,    -0.0f,
                     200.0f,   -200.0f,   -87.5f, -100.0f, -103.5f};
  enum { N = sizeof v / sizeof v[0] };
  float s[N], om[N], ls[N];
  glow__sigmoid(v, N, s, om, ls);
  assert_true(s[0] == 1.0f && om[0] == 0.0f && ls[0] == 0.0f);
  assert_true(s[1] == 0.0f && om[1] == 1.0f && isinf(ls[1]) && ls[1] < 0);
  assert_true(isnan(s[2]) && isnan(om[2]) && isnan(ls[2]));
  for (int i = 3; i <= 4; i++) /* sigmoid(+-0) = 1/2 exactly */
    assert_true(s[i] == 0.5f && om[i] == 0.5f);
  assert_true(s[5] == 1.0f && om[5] == 0.0f && ls[5] == 0.0f);
  assert_true(s[6] == 0.0f && om[6] == 1.0f && ls[6] == -200.0f);
  /* Subnormal results, to within one of their spacing (2^-149). */
  for (int i = 7; i <= 9; i++) {
    double rs, rom, rls;
    reference(v[i], &rs, &rom, &rls);
    assert_true(rs < 0x1p-126);
    assert_true(ulps(s[i], rs) <= 1.0);
    assert_true(ulps(ls[i], rls) <= 1.0);
    assert_true(om[i] == 1.0f);
  }
  assert_true(s[9] > 0.0f); /* e^-103.5 rounds to the smallest, not 0 */
}

/* Values at the edges of both functions' ranges, spread over the random
 * values the tests below compare across instruction sets. */
static void add_edges(float *v, int n) {
  static const float edges[] = {
      INFINITY, -INFINITY, NAN,     -NAN,     0.0f,   -0.0f,  1e-30f, -1e-30f,
      -87.5f,   -103.5f,   -104.0f, -1000.0f, 88.72f, 88.73f, 200.0f, -200.0f};
  const int count = (int)(sizeof edges / sizeof edges[0]);
  for (int i = 0; i < count && 7 + 37 * i < n; i++)
    v[7 + 37 * i] = edges[i];
}

/* Every instruction set gives the plain version's bits, for runs of any
 * length and start. */
static void test_same_bits(void **state) {
  (void)state;
  enum { N = 1000 };
  float v[N], s0[N], om0[N], ls0[N], s[N], om[N], ls[N];
  uint64_t seed = 7;
  for (int i = 0; i < N; i++)
    v[i] = (float)(tu_normal(&seed) * (i % 3 ? 4.0 : 40.0));
  add_edges(v, N);
  glow__sigmoid_on(GLOW__GEMM_CBLAS, v, N, s0, om0, ls0);
  int versions = 0;
  for (int isa = GLOW__GEMM_CBLAS; isa <= GLOW__GEMM_AVX512; isa++) {
    if (!glow__gemm_runs((glow__gemm_isa)isa))
      continue;
    versions++;
    const int64_t runs[] = {1, 3, 17, 64, 333};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
      memset(s, 0, sizeof s);
      memset(om, 0, sizeof om);
      memset(ls, 0, sizeof ls);
      for (int64_t i0 = 5; i0 < N; i0 += runs[r]) {
        const int64_t n = N - i0 < runs[r] ? N - i0 : runs[r];
        glow__sigmoid_on((glow__gemm_isa)isa, v + i0, n, s + i0, om + i0,
                         ls + i0);
      }
      assert_memory_equal(s + 5, s0 + 5, sizeof(float) * (N - 5));
      assert_memory_equal(om + 5, om0 + 5, sizeof(float) * (N - 5));
      assert_memory_equal(ls + 5, ls0 + 5, sizeof(float) * (N - 5));
    }
  }
  assert_true(versions >= 1);
}

/* Every 3001st float pattern from -105 to 90: each result within one ulp
 * of e^x (the C library's expf: within half of one, as a rule). */
static void test_exp_accuracy(void **state) {
  (void)state;
  float v[SWEEP], y[SWEEP];
  double most = 0.0;
  int64_t count = 0;
  int fill = 0;
  for (uint64_t b = 0; b <= 0xffffffffu + (uint64_t)3001; b += 3001) {
    if (b <= 0xffffffffu) {
      const uint32_t bits = (uint32_t)b;
      float x;
      memcpy(&x, &bits, sizeof x);
      if (!(x >= -105.0f && x <= 88.7f))
        continue;
      v[fill++] = x;
      if (fill < SWEEP)
        continue;
    }
    glow__exp(v, fill, y);
    for (int i = 0; i < fill; i++)
      most = fmax(most, ulps(y[i], exp((double)v[i])));
    count += fill;
    fill = 0;
  }
  assert_true(count > 500000);
  assert_true(most <= 1.0);
  assert_true(most > 0.0);
}

static void test_exp_edges(void **state) {
  (void)state;
  float v[] = {INFINITY, -INFINITY, NAN,     0.0f,    -0.0f,   88.72f,
               88.73f,   1000.0f,   -104.0f, -103.5f, -100.0f, -87.5f};
  enum { N = sizeof v / sizeof v[0] };
  float y[N];
  glow__exp(v, N, y);
  assert_true(isinf(y[0]) && y[0] > 0 && y[1] == 0.0f && isnan(y[2]));
  assert_true(y[3] == 1.0f && y[4] == 1.0f);
  assert_true(isfinite(y[5]) && ulps(y[5], exp((double)v[5])) <= 1.0);
  assert_true(isinf(y[6]) && isinf(y[7])); /* past the largest float */
  assert_true(y[8] == 0.0f);               /* below half the smallest */
  for (int i = 9; i < N; i++)              /* subnormal */
    assert_true(y[i] > 0.0f && ulps(y[i], exp((double)v[i])) <= 1.0);
  /* In place: the same values. */
  float w[N];
  memcpy(w, v, sizeof v);
  glow__exp(w, N, w);
  for (int i = 0; i < N; i++)
    assert_true(w[i] == y[i] || (isnan(w[i]) && isnan(y[i])));
}

/* glow__exp_on from every instruction set: the plain version's bits. */
static void test_exp_same_bits(void **state) {
  (void)state;
  enum { N = 1000 };
  float v[N], y0[N], y[N];
  uint64_t seed = 11;
  for (int i = 0; i < N; i++)
    v[i] = (float)(tu_normal(&seed) * (i % 3 ? 3.0 : 40.0));
  add_edges(v, N);
  glow__exp_on(GLOW__GEMM_CBLAS, v, N, y0);
  for (int isa = GLOW__GEMM_CBLAS; isa <= GLOW__GEMM_AVX512; isa++) {
    if (!glow__gemm_runs((glow__gemm_isa)isa))
      continue;
    for (int64_t run = 1; run <= 333; run = run * 3 + 2) {
      memset(y, 0, sizeof y);
      for (int64_t i0 = 0; i0 < N; i0 += run)
        glow__exp_on((glow__gemm_isa)isa, v + i0, N - i0 < run ? N - i0 : run,
                     y + i0);
      assert_memory_equal(y, y0, sizeof y);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_accuracy),  cmocka_unit_test(test_edges),
      cmocka_unit_test(test_same_bits), cmocka_unit_test(test_exp_accuracy),
      cmocka_unit_test(test_exp_edges), cmocka_unit_test(test_exp_same_bits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
