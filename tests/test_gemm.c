/*
 * test_gemm.c -- glow__sgemm, the matrix product under every convolution:
 * the own kernel and the CBLAS path against a double-precision reference,
 * over shapes that cover whole and partial register tiles and blocks, all
 * four transpose combinations and both overwrite and accumulate; and the
 * own kernel's promise that a row of the result does not depend on how
 * many rows the product has.
 */
#include "testutil.h"

#include "kernels.h"

/* C = op(A) op(B) (+ C0) in double, A and B as glow__sgemm reads them. */
static void reference(int ta, int tb, int64_t m, int64_t n, int64_t k,
                      const float *a, int64_t lda, const float *b,
                      int64_t ldb, const float *c0, double *c) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = c0 ? c0[i * n + j] : 0.0;
      for (int64_t p = 0; p < k; p++)
        s += (double)(ta ? a[p * lda + i] : a[i * lda + p]) *
             (tb ? b[j * ldb + p] : b[p * ldb + j]);
      c[i * n + j] = s;
    }
}

static float *random_floats(int64_t count, uint64_t seed) {
  float *v = malloc(sizeof(float) * (size_t)(count > 0 ? count : 1));
  uint64_t s = seed | 1;
  for (int64_t i = 0; i < count; i++)
    v[i] = (float)tu_normal(&s);
  return v;
}

/* One product through one path; fails with the shape on a bad element. */
static void check_product(int ta, int tb, int64_t m, int64_t n, int64_t k,
                          int accumulate, float *pack) {
  /* Leading dimensions wider than the operands, as the convolutions pass
   * (a row stride of c for c/2 channels). */
  const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5;
  float *a = random_floats((ta ? k : m) * lda, 11 + (uint64_t)m);
  float *b = random_floats((tb ? n : k) * ldb, 13 + (uint64_t)n);
  float *c = random_floats(m * n, 17);
  float *c0 = malloc(sizeof(float) * (size_t)(m * n));
  memcpy(c0, c, sizeof(float) * (size_t)(m * n));
  double *ref = malloc(sizeof(double) * (size_t)(m * n));
  reference(ta, tb, m, n, k, a, lda, b, ldb, accumulate ? c0 : NULL, ref);
  glow__sgemm(ta, tb, m, n, k, a, lda, b, ldb, accumulate, c, n, pack);
  /* Float sums of k unit-variance products: error ~ sqrt(k) eps. */
  const double tol = 1e-5 * (4.0 + sqrt((double)k)) * 4.0;
  for (int64_t i = 0; i < m * n; i++)
    if (!(fabs(c[i] - ref[i]) <= tol))
      fail_msg("%s %c%c m=%lld n=%lld k=%lld%s: C[%lld] = %g, expected %g",
               pack ? "own" : "CBLAS", ta ? 'T' : 'N', tb ? 'T' : 'N',
               (long long)m, (long long)n, (long long)k,
               accumulate ? " (accumulate)" : "", (long long)i, (double)c[i],
               ref[i]);
  free(a);
  free(b);
  free(c);
  free(c0);
  free(ref);
}

static void test_products(void **state) {
  (void)state;
  /* Around the tile (12 x 32) and block (KC 256, MC 192) sizes. */
  static const int64_t ms[] = {1, 5, 12, 13, 37, 193, 400};
  static const int64_t ns[] = {1, 4, 18, 32, 33, 108, 130};
  static const int64_t ks[] = {1, 7, 54, 255, 257, 600};
  float *pack = glow__gemm_own_available()
                    ? malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK)
                    : NULL;
  if (!pack)
    print_message("  this CPU has no AVX-512F: the CBLAS path only\n");
  int64_t checks = 0;
  for (int path = 0; path < 2; path++) {
    if (path == 1 && !pack)
      break;
    for (int t = 0; t < 4; t++)
      for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
          for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++) {
            /* Every shape once; the largest only for a few combinations. */
            if (ms[im] * ns[in] * ks[ik] > 4000000 && (t != 0 || ik % 2))
              continue;
            check_product(t & 1, t >> 1, ms[im], ns[in], ks[ik],
                          (int)((im + in + ik) % 2), path ? pack : NULL);
            checks++;
          }
  }
  /* Wider than one NC block of B. */
  if (pack)
    check_product(0, 0, 3, GLOW__GEMM_NC + 40, 9, 0, pack);
  print_message("  %lld products checked\n", (long long)checks);
  free(pack);
}

/* The own kernel sums each element's products in a fixed order, so the
 * first rows of a product come out the same, bit for bit, whatever the
 * number of rows below them: shards of any size give the same images. */
static void test_rows_independent_of_m(void **state) {
  (void)state;
  if (!glow__gemm_own_available())
    skip();
  float *pack = malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK);
  const int64_t n = 70, k = 300, rows = 500;
  for (int ta = 0; ta < 2; ta++) {
    const int64_t lda = ta ? rows : k;
    float *a = random_floats((ta ? k : rows) * lda, 5);
    float *b = random_floats(k * n, 6);
    float *full = malloc(sizeof(float) * (size_t)(rows * n));
    float *part = malloc(sizeof(float) * (size_t)(rows * n));
    glow__sgemm(ta, 0, rows, n, k, a, lda, b, n, 0, full, n, pack);
    static const int64_t ms[] = {1, 7, 12, 100, 191, 250};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
      glow__sgemm(ta, 0, ms[i], n, k, a, lda, b, n, 0, part, n, pack);
      assert_memory_equal(part, full, sizeof(float) * (size_t)(ms[i] * n));
    }
    free(a);
    free(b);
    free(full);
    free(part);
  }
  free(pack);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_products),
      cmocka_unit_test(test_rows_independent_of_m),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
