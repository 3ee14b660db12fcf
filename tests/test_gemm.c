/*
 * test_gemm.c -- glow__sgemm, the matrix product under every convolution:
 * every kernel this CPU runs (the CBLAS, the own kernel's AVX-512 and
 * AVX2 versions) against a double-precision reference, over shapes that
 * cover whole and partial register tiles (12 x 32 and 6 x 16) and blocks,
 * all four transpose combinations and both overwrite and accumulate; the
 * own kernel's promise that a row of the result does not depend on how
 * many rows the product has, in each version; that the two versions give
 * the same bits; which version glow__sgemm runs; that a product split
 * between a team's threads (glow__gemm) gives glow__sgemm's bits; that
 * an epilogue applied by the kernel gives the bits of a pass after it;
 * and that a B of matrices side by side (glow__gemm_groups) gives the
 * bits of the same columns stored as one.
 */
#include "testutil.h"

#include "kernels.h"

/* C = op(A) op(B) (+ C0, row stride ldc0) in double, A and B as
 * glow__sgemm reads them; C is m x n, contiguous. */
static void reference(int ta, int tb, int64_t m, int64_t n, int64_t k,
                      const float *a, int64_t lda, const float *b, int64_t ldb,
                      const float *c0, int64_t ldc0, double *c) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = c0 ? c0[i * ldc0 + j] : 0.0;
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

/* The kernels, the CBLAS first. */
static const glow__gemm_isa kernels[] = {GLOW__GEMM_CBLAS, GLOW__GEMM_AVX512,
                                         GLOW__GEMM_AVX2};
enum { N_KERNELS = sizeof kernels / sizeof kernels[0] };

static const char *kernel_name(glow__gemm_isa isa) {
  return isa == GLOW__GEMM_AVX512 ? "AVX-512"
         : isa == GLOW__GEMM_AVX2 ? "AVX2"
                                  : "CBLAS";
}

/* The own kernel's versions this CPU runs, into isa; how many. */
static int own_kernels(glow__gemm_isa isa[N_KERNELS]) {
  int count = 0;
  for (int i = 0; i < N_KERNELS; i++)
    if (kernels[i] != GLOW__GEMM_CBLAS && glow__gemm_runs(kernels[i]))
      isa[count++] = kernels[i];
  return count;
}

/* Floats of a rows x cols matrix with row stride ld whose buffer ends at
 * its last element, so that a read past it leaves the allocation (which
 * the sanitizer build reports). */
static int64_t tight(int64_t rows, int64_t cols, int64_t ld) {
  return (rows - 1) * ld + cols;
}

/* One product through every kernel this CPU runs, each against the
 * reference, with C's columns past n left as they were, and the own
 * kernel's versions against each other, bit for bit; fails with the kernel
 * and the shape.  Returns the kernels run. */
static int check_product(int ta, int tb, int64_t m, int64_t n, int64_t k,
                         int accumulate, float *pack) {
  /* Leading dimensions wider than the operands, as the convolutions pass
   * (a row stride of c for c/2 channels). */
  const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
  const size_t bytes = sizeof(float) * (size_t)(m * ldc);
  float *a =
      random_floats(ta ? tight(k, m, lda) : tight(m, k, lda), 11 + (uint64_t)m);
  float *b =
      random_floats(tb ? tight(n, k, ldb) : tight(k, n, ldb), 13 + (uint64_t)n);
  float *c0 = random_floats(m * ldc, 17);
  float *c = malloc(bytes), *own = malloc(bytes);
  double *ref = malloc(sizeof(double) * (size_t)(m * n));
  reference(ta, tb, m, n, k, a, lda, b, ldb, accumulate ? c0 : NULL, ldc, ref);
  /* Float sums of k unit-variance products: error ~ sqrt(k) eps. */
  const double tol = 1e-5 * (4.0 + sqrt((double)k)) * 4.0;
  int runs = 0, owns = 0;
  for (int p = 0; p < N_KERNELS; p++) {
    const glow__gemm_isa isa = kernels[p];
    if (!glow__gemm_runs(isa))
      continue;
    memcpy(c, c0, bytes);
    glow__sgemm_on(isa, ta, tb, m, n, k, a, lda, b, ldb, accumulate, c, ldc,
                   pack, NULL);
    runs++;
    for (int64_t i = 0; i < m * ldc; i++) {
      const int64_t row = i / ldc, col = i % ldc;
      const double want = col < n ? ref[row * n + col] : c0[i];
      if (!(fabs(c[i] - want) <= (col < n ? tol : 0.0)))
        fail_msg("%s %c%c m=%lld n=%lld k=%lld%s: C[%lld][%lld] = %g, "
                 "expected %g",
                 kernel_name(isa), ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)m,
                 (long long)n, (long long)k, accumulate ? " (accumulate)" : "",
                 (long long)row, (long long)col, (double)c[i], want);
    }
    if (isa == GLOW__GEMM_CBLAS)
      continue;
    /* The same sums in the same order: the same bits. */
    if (owns++ == 0)
      memcpy(own, c, bytes);
    else if (memcmp(own, c, bytes) != 0)
      fail_msg("%s %c%c m=%lld n=%lld k=%lld%s: not the bits of %s",
               kernel_name(isa), ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)m,
               (long long)n, (long long)k, accumulate ? " (accumulate)" : "",
               kernel_name(kernels[1]));
  }
  free(a);
  free(b);
  free(c);
  free(c0);
  free(own);
  free(ref);
  return runs;
}

static void test_products(void **state) {
  (void)state;
  /* Around the tiles (AVX-512 12 x 32, AVX2 6 x 16, and the short tiles
   * of 8 and 4 rows that a product's last rows get) and blocks (KC 256,
   * MC 192): whole tiles, one row or column past them, partial ones. */
  static const int64_t ms[] = {1, 4, 5, 8, 9, 12, 13, 37, 193, 400};
  static const int64_t ns[] = {1, 8, 16, 23, 32, 33, 108, 143};
  static const int64_t ks[] = {1, 7, 54, 255, 257, 600};
  float *pack = malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK);
  glow__gemm_isa own[N_KERNELS];
  const int n_own = own_kernels(own);
  print_message("  own kernel versions on this CPU: %d%s%s\n", n_own,
                n_own > 0 ? ", first " : "",
                n_own > 0 ? kernel_name(own[0]) : "");
  int64_t checks = 0;
  for (int t = 0; t < 4; t++)
    for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
      for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
        for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++) {
          /* Every shape once; the largest only for a few combinations. */
          if (ms[im] * ns[in] * ks[ik] > 4000000 && (t != 0 || ik % 2))
            continue;
          checks += check_product(t & 1, t >> 1, ms[im], ns[in], ks[ik],
                                  (int)((im + in + ik) % 2), pack);
        }
  /* Wider than one NC block of B, in each layout of the operands. */
  for (int t = 0; t < 4; t++)
    checks +=
        check_product(t & 1, t >> 1, 3, GLOW__GEMM_NC + 40, 9, t % 2, pack);
  print_message("  %lld products checked\n", (long long)checks);
  free(pack);
}

/* The own kernel sums each element's products in a fixed order, so the
 * first rows of a product come out the same, bit for bit, whatever the
 * number of rows below them: shards of any size give the same images.  In
 * each version. */
static void test_rows_independent_of_m(void **state) {
  (void)state;
  glow__gemm_isa own[N_KERNELS];
  const int n_own = own_kernels(own);
  if (n_own == 0)
    skip();
  float *pack = malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK);
  const int64_t n = 70, k = 300, rows = 500;
  for (int v = 0; v < n_own; v++)
    for (int ta = 0; ta < 2; ta++) {
      const int64_t lda = ta ? rows : k;
      float *a = random_floats((ta ? k : rows) * lda, 5);
      float *b = random_floats(k * n, 6);
      float *full = malloc(sizeof(float) * (size_t)(rows * n));
      float *part = malloc(sizeof(float) * (size_t)(rows * n));
      glow__sgemm_on(own[v], ta, 0, rows, n, k, a, lda, b, n, 0, full, n, pack,
                     NULL);
      static const int64_t ms[] = {1, 4, 5, 7, 8, 9, 12, 16, 100, 191, 250};
      for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        glow__sgemm_on(own[v], ta, 0, ms[i], n, k, a, lda, b, n, 0, part, n,
                       pack, NULL);
        assert_memory_equal(part, full, sizeof(float) * (size_t)(ms[i] * n));
      }
      free(a);
      free(b);
      free(full);
      free(part);
    }
  free(pack);
}

/* glow__sgemm runs the best version this CPU has, AVX-512F before AVX2,
 * held to AVX2 by GLOW_GEMM_ISA=avx2 (ctest runs test_threads so), and
 * the CBLAS without a packing buffer. */
static void test_kernel_choice(void **state) {
  (void)state;
  assert_true(glow__gemm_runs(GLOW__GEMM_CBLAS));
  /* Every CPU with AVX-512F has AVX2 and FMA. */
  if (glow__gemm_runs(GLOW__GEMM_AVX512))
    assert_true(glow__gemm_runs(GLOW__GEMM_AVX2));
  const char *cap = getenv("GLOW_GEMM_ISA");
  const int avx2_only = cap && strcmp(cap, "avx2") == 0;
  glow__gemm_isa best = GLOW__GEMM_CBLAS;
  if (glow__gemm_runs(GLOW__GEMM_AVX512) && !avx2_only)
    best = GLOW__GEMM_AVX512;
  else if (glow__gemm_runs(GLOW__GEMM_AVX2))
    best = GLOW__GEMM_AVX2;
  assert_int_equal(glow__gemm_isa_used(), best);
  assert_int_equal(glow__gemm_own_available(), best != GLOW__GEMM_CBLAS);
  /* With a packing buffer, that version's bits; without, the CBLAS's. */
  const int64_t m = 37, n = 45, k = 300;
  float *a = random_floats(m * k, 3), *b = random_floats(k * n, 4);
  float *pack = malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK);
  float *c = malloc(sizeof(float) * (size_t)(m * n));
  float *expect = malloc(sizeof(float) * (size_t)(m * n));
  for (int with_pack = 0; with_pack < 2; with_pack++) {
    glow__sgemm_on(with_pack ? best : GLOW__GEMM_CBLAS, 0, 0, m, n, k, a, k, b,
                   n, 0, expect, n, pack, NULL);
    glow__sgemm(0, 0, m, n, k, a, k, b, n, 0, c, n, with_pack ? pack : NULL);
    assert_memory_equal(c, expect, sizeof(float) * (size_t)(m * n));
  }
  free(a);
  free(b);
  free(pack);
  free(c);
  free(expect);
}

/* A product split between the members of a team, by rows or columns of
 * whole tiles: glow__sgemm's bits on the own kernel (every element summed
 * by one thread in the one order), and the reference's values on the
 * CBLAS, for teams of 2 to 5 and shapes whose rows or columns do not
 * split evenly, fewer tiles than members included. */
static void test_team_split(void **state) {
  (void)state;
  glow__team_split_all = 1; /* split every product */
  static const int64_t shapes[][3] = {
      {1, 1, 1},      {5, 8, 7},       {13, 33, 54}, {16, 512, 300},
      {256, 108, 64}, {400, 143, 257}, {37, 2100, 9}};
  enum { N_SHAPES = sizeof shapes / sizeof shapes[0], MAX_TEAM = 5 };
  float *packs = malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK * MAX_TEAM);
  float *team_pack[MAX_TEAM];
  for (int p = 0; p < MAX_TEAM; p++)
    team_pack[p] = packs + (int64_t)p * GLOW__GEMM_PACK;
  int64_t checks = 0;
  for (int32_t size = 2; size <= MAX_TEAM; size++) {
    glow__team *team = glow__team_start(NULL, size);
    assert_non_null(team);
    assert_int_equal(glow__team_size(team), size);
    for (int own = 0; own < 2; own++) {
      if (own && !glow__gemm_own_available())
        continue;
      glow__conv_scratch cs = {0};
      cs.pack = own ? packs : NULL;
      cs.team = team;
      cs.team_pack = own ? team_pack : NULL;
      for (int t = 0; t < 4; t++)
        for (int i = 0; i < N_SHAPES; i++) {
          const int ta = t & 1, tb = t >> 1, acc = (t + i) % 2;
          const int64_t m = shapes[i][0], n = shapes[i][1], k = shapes[i][2];
          const int64_t lda = ta ? m : k, ldb = tb ? k : n, ldc = n + 3;
          float *a = random_floats(m * k, 31 + (uint64_t)i);
          float *b = random_floats(k * n, 37 + (uint64_t)i);
          float *c0 = random_floats(m * ldc, 41);
          const size_t bytes = sizeof(float) * (size_t)(m * ldc);
          float *one = malloc(bytes), *split = malloc(bytes);
          memcpy(one, c0, bytes);
          memcpy(split, c0, bytes);
          glow__sgemm(ta, tb, m, n, k, a, lda, b, ldb, acc, one, ldc,
                      own ? packs + (int64_t)(MAX_TEAM - 1) * GLOW__GEMM_PACK
                          : NULL);
          glow__gemm(&cs, ta, tb, m, n, k, a, lda, b, ldb, acc, split, ldc,
                     NULL);
          if (own)
            assert_memory_equal(split, one, bytes);
          double *ref = malloc(sizeof(double) * (size_t)(m * n));
          reference(ta, tb, m, n, k, a, lda, b, ldb, acc ? c0 : NULL, ldc, ref);
          const double tol = 1e-5 * (4.0 + sqrt((double)k)) * 4.0;
          for (int64_t r = 0; r < m; r++)
            for (int64_t j = 0; j < ldc; j++) {
              const float got = split[r * ldc + j];
              if (j >= n)
                assert_true(got == c0[r * ldc + j]); /* untouched */
              else if (!(fabs(got - ref[r * n + j]) <= tol))
                fail_msg("team of %d, %s, %c%c m=%lld n=%lld k=%lld: "
                         "C[%lld][%lld] = %g, expected %g",
                         size, own ? "own kernel" : "CBLAS", ta ? 'T' : 'N',
                         tb ? 'T' : 'N', (long long)m, (long long)n,
                         (long long)k, (long long)r, (long long)j, (double)got,
                         ref[r * n + j]);
            }
          checks++;
          free(ref);
          free(a);
          free(b);
          free(c0);
          free(one);
          free(split);
        }
    }
    glow__team_stop(team);
  }
  print_message("  %lld split products checked\n", (long long)checks);
  glow__team_stop(NULL); /* a no-op */
  assert_null(glow__team_start(NULL, 1));
  free(packs);
  glow__team_split_all = 0;
}

/* The epilogue (an actnorm and its ReLU applied as the product stores its
 * sums) gives the bits of the product followed by the pass
 * (C + bias) * scale, max(., 0), written out here, on every kernel, alone
 * and split between a team of 3: shapes with partial tiles, two and three
 * KC blocks, an empty inner dimension, both transposes of A and both
 * overwrite and accumulate.  Bias and scale are random of either sign, so
 * that the ReLU zeroes some of the values (asserted). */
static void test_epilogue(void **state) {
  (void)state;
  static const int64_t shapes[][3] = {{1, 1, 1},      {13, 33, 54},
                                      {40, 17, 300},  {100, 128, 600},
                                      {25, 512, 129}, {7, 45, 0}};
  enum { N_SHAPES = sizeof shapes / sizeof shapes[0], TEAM = 3 };
  float *packs = malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK * TEAM);
  float *team_pack[TEAM];
  for (int p = 0; p < TEAM; p++)
    team_pack[p] = packs + (int64_t)p * GLOW__GEMM_PACK;
  glow__team *team = glow__team_start(NULL, TEAM);
  assert_non_null(team);
  glow__team_split_all = 1;
  int64_t checks = 0, relu_zeros = 0;
  for (int i = 0; i < N_SHAPES; i++) {
    const int64_t m = shapes[i][0], n = shapes[i][1], k = shapes[i][2];
    float *bias = random_floats(n, 51 + (uint64_t)i);
    float *scale = random_floats(n, 53 + (uint64_t)i);
    scale[0] = 0.5f;
    for (int t = 0; t < 4; t++) {
      const int ta = t & 1, acc = t >> 1, relu = (t + i) % 2;
      const int64_t lda = ta ? m : k, ldc = n + 5;
      const glow__epilogue ep = {bias, scale, relu};
      float *a = random_floats((ta ? k : m) * lda, 57 + (uint64_t)i);
      float *b = random_floats(k * n, 59 + (uint64_t)i);
      float *c0 = random_floats(m * ldc, 61);
      const size_t bytes = sizeof(float) * (size_t)(m * ldc);
      float *want = malloc(bytes), *got = malloc(bytes);
      for (int p = 0; p < N_KERNELS; p++) {
        if (!glow__gemm_runs(kernels[p]))
          continue;
        const int own = kernels[p] != GLOW__GEMM_CBLAS;
        float *pack = own ? packs : NULL;
        memcpy(want, c0, bytes);
        glow__sgemm_on(kernels[p], ta, 0, m, n, k, a, lda, b, n, acc, want, ldc,
                       pack, NULL);
        for (int64_t r = 0; r < m; r++)
          for (int64_t j = 0; j < n; j++) {
            float v = (want[r * ldc + j] + bias[j]) * scale[j];
            if (relu && !(v > 0.0f)) {
              v = 0.0f;
              relu_zeros++;
            }
            want[r * ldc + j] = v;
          }
        memcpy(got, c0, bytes);
        glow__sgemm_on(kernels[p], ta, 0, m, n, k, a, lda, b, n, acc, got, ldc,
                       pack, &ep);
        if (memcmp(got, want, bytes) != 0)
          fail_msg("%s, %c, m=%lld n=%lld k=%lld acc=%d relu=%d: the "
                   "epilogue differs from the pass after the product",
                   kernel_name(kernels[p]), ta ? 'T' : 'N', (long long)m,
                   (long long)n, (long long)k, acc, relu);
        if (!own || kernels[p] != glow__gemm_isa_used())
          continue;
        glow__conv_scratch cs = {0};
        cs.pack = packs;
        cs.team = team;
        cs.team_pack = team_pack;
        memcpy(got, c0, bytes);
        glow__gemm(&cs, ta, 0, m, n, k, a, lda, b, n, acc, got, ldc, &ep);
        assert_memory_equal(got, want, bytes);
        checks++;
      }
      free(a);
      free(b);
      free(c0);
      free(want);
      free(got);
    }
    free(bias);
    free(scale);
  }
  glow__team_split_all = 0;
  glow__team_stop(team);
  free(packs);
  assert_true(relu_zeros > 0);
  print_message("  %lld split products with an epilogue checked\n",
                (long long)checks);
}

/* A 3x3 convolution with fewer output channels than input ones takes the
 * tap path: a product per tap, then the tap sums, which apply the
 * epilogue to each pixel's sums as they end.  That must give the bits of
 * the convolution without it followed by glow__epilogue_apply, on every
 * kernel, for the tap sums' unrolled channel counts and another, with and
 * without the ReLU, and at the values where the two could part: a NaN
 * bias (NaN, or 0 after the ReLU) and a zero scale on negative sums (-0,
 * or +0 after the ReLU). */
static void test_tap_epilogue(void **state) {
  (void)state;
  static const int32_t couts[] = {4, 5, 12};
  const int32_t n = 2, h = 5, w = 6, cin = 16;
  const int64_t rows = (int64_t)n * h * w;
  float *x = random_floats(rows * cin, 71);
  float *packs = malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK);
  int64_t nan_seen = 0, neg_zero_seen = 0;
  for (size_t ci = 0; ci < sizeof couts / sizeof couts[0]; ci++) {
    const int32_t cout = couts[ci];
    float *wt = random_floats(9 * (int64_t)cin * cout, 73 + ci);
    float *bias = random_floats(cout, 79 + ci);
    float *scale = random_floats(cout, 83 + ci);
    bias[1] = NAN;
    bias[2] = -1e6f; /* every sum negative, then times 0 */
    scale[2] = 0.0f;
    glow__conv_scratch cs = {0};
    cs.cap = rows * 9 * cout;
    cs.patches = malloc(sizeof(float) * (size_t)cs.cap);
    const size_t bytes = sizeof(float) * (size_t)(rows * cout);
    float *want = malloc(bytes), *got = malloc(bytes);
    for (int own = 0; own <= 1; own++) {
      if (own && !glow__gemm_own_available())
        continue;
      cs.pack = own ? packs : NULL;
      for (int relu = 0; relu <= 1; relu++) {
        const glow__epilogue ep = {bias, scale, relu};
        glow__conv3x3(x, cin, n, h, w, cin, wt, cout, want, &cs, NULL);
        glow__epilogue_apply(&ep, want, want, cout, rows, cout);
        glow__conv3x3(x, cin, n, h, w, cin, wt, cout, got, &cs, &ep);
        if (memcmp(got, want, bytes) != 0)
          fail_msg("cout %d, %s, relu %d: the tap sums' epilogue differs "
                   "from the pass after them",
                   cout, own ? "own kernel" : "CBLAS", relu);
        for (int64_t r = 0; r < rows; r++) {
          nan_seen += isnan(got[r * cout + 1]);
          neg_zero_seen +=
              got[r * cout + 2] == 0.0f && signbit(got[r * cout + 2]);
        }
      }
    }
    free(cs.patches);
    free(want);
    free(got);
    free(wt);
    free(bias);
    free(scale);
  }
  free(packs);
  free(x);
  assert_true(nan_seen > 0 && neg_zero_seen > 0); /* the edges were there */
}

/* glow__gemm_groups: B as matrices `group` columns wide side by side, the
 * nine taps of a 3x3 weight read where they lie.  On the own kernel, alone
 * and split between a team of 3 (chunks that start inside a matrix), the
 * bits of glow__sgemm on the same columns stored as one matrix; on the
 * CBLAS, the reference's values.  Matrices with rows longer than the
 * group (ldb > group) and gaps between them, products of one and two KC
 * blocks and MC blocks, a last matrix cut short, and C's columns past n
 * untouched. */
static void test_groups(void **state) {
  (void)state;
  static const int64_t groups[] = {1, 4, 12, 48, 100};
  static const int64_t shapes[][3] = {
      /* m, matrices (n = group * matrices - cut), k */
      {1, 9, 7},
      {13, 9, 300},
      {100, 3, 54},
      {300, 9, 257}};
  enum { N_SHAPES = sizeof shapes / sizeof shapes[0], TEAM = 3 };
  float *packs = malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK * TEAM);
  float *team_pack[TEAM];
  for (int p = 0; p < TEAM; p++)
    team_pack[p] = packs + (int64_t)p * GLOW__GEMM_PACK;
  glow__team *team = glow__team_start(NULL, TEAM);
  assert_non_null(team);
  int64_t checks = 0;
  for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
    for (int i = 0; i < N_SHAPES; i++) {
      const int64_t group = groups[g], m = shapes[i][0], k = shapes[i][2];
      const int64_t cut = (i % 2) * (group / 2), n = group * shapes[i][1] - cut;
      const int64_t ldb = group + i % 2 * 3, gstride = k * ldb + 5;
      const int64_t ldc = n + 3;
      float *b = random_floats(gstride * shapes[i][1], 71 + (uint64_t)g);
      float *a = random_floats(m * k, 73 + (uint64_t)i);
      float *flat = malloc(sizeof(float) * (size_t)(k * n)); /* one matrix */
      for (int64_t p = 0; p < k; p++)
        for (int64_t j = 0; j < n; j++)
          flat[p * n + j] = b[j / group * gstride + p * ldb + j % group];
      double *ref = malloc(sizeof(double) * (size_t)(m * n));
      reference(0, 0, m, n, k, a, k, flat, n, NULL, 0, ref);
      const double tol = 1e-5 * (4.0 + sqrt((double)k)) * 4.0;
      float *c0 = random_floats(m * ldc, 79);
      const size_t bytes = sizeof(float) * (size_t)(m * ldc);
      float *want = malloc(bytes), *got = malloc(bytes);
      for (int kind = 0; kind < N_KERNELS; kind++) {
        if (!glow__gemm_runs(kernels[kind]) ||
            (kernels[kind] != GLOW__GEMM_CBLAS &&
             kernels[kind] != glow__gemm_isa_used()))
          continue; /* glow__gemm_groups runs the one glow__sgemm runs */
        const int own = kernels[kind] != GLOW__GEMM_CBLAS;
        memcpy(want, c0, bytes);
        glow__sgemm_on(kernels[kind], 0, 0, m, n, k, a, k, flat, n, 0, want,
                       ldc, own ? packs : NULL, NULL);
        for (int split = 0; split < 2; split++) {
          glow__conv_scratch cs = {0};
          cs.pack = own ? packs : NULL;
          cs.team = split ? team : NULL;
          cs.team_pack = own && split ? team_pack : NULL;
          glow__team_split_all = split;
          memcpy(got, c0, bytes);
          glow__gemm_groups(&cs, m, n, k, a, k, b, ldb, group, gstride, got,
                            ldc);
          glow__team_split_all = 0;
          if (own && memcmp(got, want, bytes) != 0)
            fail_msg("%s, group %lld, m=%lld n=%lld k=%lld%s: not the bits "
                     "of the product of the matrices as one",
                     kernel_name(kernels[kind]), (long long)group, (long long)m,
                     (long long)n, (long long)k, split ? ", team of 3" : "");
          for (int64_t r = 0; r < m; r++)
            for (int64_t j = 0; j < ldc; j++)
              if (j >= n)
                assert_true(got[r * ldc + j] == c0[r * ldc + j]);
              else if (!(fabs(got[r * ldc + j] - ref[r * n + j]) <= tol))
                fail_msg("%s, group %lld: C[%lld][%lld] = %g, expected %g",
                         kernel_name(kernels[kind]), (long long)group,
                         (long long)r, (long long)j, (double)got[r * ldc + j],
                         ref[r * n + j]);
          checks++;
        }
      }
      free(a);
      free(b);
      free(flat);
      free(ref);
      free(c0);
      free(want);
      free(got);
    }
  glow__team_stop(team);
  free(packs);
  print_message("  %lld grouped products checked\n", (long long)checks);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_products),
      cmocka_unit_test(test_rows_independent_of_m),
      cmocka_unit_test(test_kernel_choice),
      cmocka_unit_test(test_team_split),
      cmocka_unit_test(test_epilogue),
      cmocka_unit_test(test_groups),
      cmocka_unit_test(test_tap_epilogue),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
