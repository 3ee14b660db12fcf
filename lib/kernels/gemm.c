/*
 * gemm.c -- single-precision matrix products: libglow's own AVX-512
 * kernel, or the CBLAS.
 *
 * The kernel follows the usual blocked scheme (as in BLIS and OpenBLAS):
 * op(B) in blocks of KC x NC, as panels NR columns wide, op(A) in blocks of
 * MC x KC, as panels MR rows high, and a register-blocked micro-kernel
 * multiplies one A panel by one B panel into an MR x NR tile of C, held in
 * 24 of the 32 vector registers.  Glow's products are tall and narrow
 * (rows are pixels, columns a few to a few hundred channels), where packing
 * costs as much as the arithmetic, so operands are packed only where the
 * layout demands it: a row-major A is read in place (a broadcast per row
 * and step), and the weight gradients A^T B, whose inner dimension is the
 * pixels, read both A and B in place.  It exists because libglow
 * runs its products single-threaded inside its own threads, where the
 * CBLAS may be held to older instructions (an OpenBLAS forced to its AVX2
 * kernels by OPENBLAS_CORETYPE runs at half the rate of AVX-512 on such a
 * CPU), and because its sums are in a fixed order: each element of C adds
 * its K products in KC blocks, in order, whatever M, N or the tile it is
 * in, so that a row of the result does not depend on how many rows the
 * product has.  Machines without AVX-512F use the CBLAS, as do builds
 * configured with -DGLOW_GEMM_KERNEL=OFF (which CI uses to test that path
 * on machines that have it).
 */
#include <stdint.h>
#include <string.h>

#include <cblas.h>

#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) &&        \
    !defined(GLOW_NO_GEMM_KERNEL)
#define GLOW__HAVE_AVX512_KERNEL 1
#include <immintrin.h>
#endif

#define MR GLOW__GEMM_MR
#define NR GLOW__GEMM_NR
#define KC GLOW__GEMM_KC
#define MC GLOW__GEMM_MC
#define NC GLOW__GEMM_NC

/* Whole panels per block: the packing buffers hold MC x KC and KC x NC. */
_Static_assert(MC % MR == 0 && NC % NR == 0, "blocks of whole panels");

int glow__gemm_own_available(void) {
#ifdef GLOW__HAVE_AVX512_KERNEL
  return __builtin_cpu_supports("avx512f") != 0;
#else
  return 0;
#endif
}

#ifdef GLOW__HAVE_AVX512_KERNEL

/* mc columns x kc rows of a row-major A (row stride lda), as mc rows of
 * A^T in panels of MR rows: panel r holds, for each k, its MR values, which
 * lie side by side in A; rows past mc are zero.  (A row-major op(A) = A is
 * never packed: the kernel reads its rows in place.) */
static void pack_at(const float *a, int64_t lda, int64_t mc, int64_t kc,
                    float *pa) {
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int64_t mr = mc - ir < MR ? mc - ir : MR;
    const float *src = a + ir;
    if (mr == MR) { /* a whole panel: fixed-size copies */
      for (int64_t k = 0; k < kc; k++, pa += MR)
        memcpy(pa, src + k * lda, sizeof(float) * MR);
      continue;
    }
    for (int64_t k = 0; k < kc; k++, pa += MR) {
      memcpy(pa, src + k * lda, sizeof(float) * (size_t)mr);
      for (int64_t i = mr; i < MR; i++)
        pa[i] = 0.0f;
    }
  }
}

/* Rows [p0, p0 + kc) x columns [j0, j0 + nc) of op(B), element (k, j) at
 * b[k*rs + j*cs], into panels NR columns wide, zero past nc. */
static void pack_b(const float *b, int64_t rs, int64_t cs, int64_t kc,
                   int64_t nc, float *pb) {
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t nr = nc - jr < NR ? nc - jr : NR;
    const float *src = b + jr * cs;
    if (cs == 1 && nr == NR) { /* fixed-size copies, inlined */
      for (int64_t k = 0; k < kc; k++, pb += NR)
        memcpy(pb, src + k * rs, sizeof(float) * NR);
      continue;
    }
    for (int64_t k = 0; k < kc; k++, pb += NR) {
      if (cs == 1) {
        memcpy(pb, src + k * rs, sizeof(float) * (size_t)nr);
      } else {
        for (int64_t j = 0; j < nr; j++)
          pb[j] = src[k * rs + j * cs];
      }
      for (int64_t j = nr; j < NR; j++)
        pb[j] = 0.0f;
    }
  }
}

#define GLOW__KERNEL __attribute__((target("avx512f"))) static

/* Store the m x n (<= MR x NR) tile held in acc at c, added to what c
 * holds when accumulate != 0: tile + c, in that order, whatever the tile's
 * size. */
GLOW__KERNEL inline GLOW__ALWAYS_INLINE void
store_tile(__m512 acc[MR][2], float *c, int64_t ldc, int64_t m, int64_t n,
           int accumulate, const int w) {
  const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
  const __mmask16 m1 = n >= 32  ? 0xffff
                       : n > 16 ? (__mmask16)((1u << (n - 16)) - 1)
                                : 0;
  for (int64_t i = 0; i < m; i++) {
    float *ci = c + i * ldc;
    __m512 v0 = acc[i][0];
    if (accumulate)
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
    _mm512_mask_storeu_ps(ci, m0, v0);
    if (w > 1) {
      __m512 v1 = acc[i][1];
      if (accumulate)
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
      _mm512_mask_storeu_ps(ci + 16, m1, v1);
    }
  }
}

/* Each kernel below is a body for w 16-wide vectors of columns, a constant
 * where inlined: 2, or 1 where the tile has n <= 16 columns (the last of a
 * product 36 wide, or one 18 wide), which halves its work. */
#define GLOW__WIDTHS(body, ...)                                                \
  do {                                                                         \
    if (n > 16)                                                                \
      body(__VA_ARGS__, 2);                                                    \
    else                                                                       \
      body(__VA_ARGS__, 1);                                                    \
  } while (0)

/* The m x n tile at c = the product of a packed A panel and a B panel over
 * kc (see store_tile). */
GLOW__KERNEL inline GLOW__ALWAYS_INLINE void
micro_kernel_body(int64_t kc, const float *pa, const float *pb, float *c,
                  int64_t ldc, int64_t m, int64_t n, int accumulate,
                  const int w) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; i++)
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++, pa += MR, pb += NR) {
    const __m512 b0 = _mm512_loadu_ps(pb), b1 = _mm512_loadu_ps(pb + 16);
    for (int i = 0; i < MR; i++) {
      const __m512 ai = _mm512_set1_ps(pa[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      if (w > 1)
        acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile(acc, c, ldc, m, n, accumulate, w);
}

GLOW__KERNEL void micro_kernel(int64_t kc, const float *pa, const float *pb,
                               float *c, int64_t ldc, int64_t m, int64_t n,
                               int accumulate) {
  GLOW__WIDTHS(micro_kernel_body, kc, pa, pb, c, ldc, m, n, accumulate);
}

/* The same for op(A) = A^T and B both read where they lie: A^T's panel is
 * MR adjacent values of each of the kc rows of A (stride lda; a packed
 * panel is the case lda = MR), B's the n <= NR leading values of each of
 * its kc rows (stride ldb, masked).  The weight gradients' products, whose
 * inner dimension is every pixel of a shard, would otherwise pack both
 * operands for as few flops per value as they have output columns. */
GLOW__KERNEL inline GLOW__ALWAYS_INLINE void
micro_kernel_tn_body(int64_t kc, const float *a, int64_t lda, const float *b,
                     int64_t ldb, float *c, int64_t ldc, int64_t m, int64_t n,
                     int accumulate, const int w) {
  const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
  const __mmask16 m1 = n >= 32  ? 0xffff
                       : n > 16 ? (__mmask16)((1u << (n - 16)) - 1)
                                : 0;
  __m512 acc[MR][2];
  for (int i = 0; i < MR; i++)
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++, a += lda, b += ldb) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
    const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + 16);
    for (int i = 0; i < MR; i++) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      if (w > 1)
        acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile(acc, c, ldc, m, n, accumulate, w);
}

GLOW__KERNEL void micro_kernel_tn(int64_t kc, const float *a, int64_t lda,
                                  const float *b, int64_t ldb, float *c,
                                  int64_t ldc, int64_t m, int64_t n,
                                  int accumulate) {
  GLOW__WIDTHS(micro_kernel_tn_body, kc, a, lda, b, ldb, c, ldc, m, n,
               accumulate);
}

/* The same with A read where it lies, row-major with row stride lda (its
 * m rows; the panel's other rows repeat the first and are not stored):
 * packing a row-major A costs a strided load per element, as much as the
 * products themselves when B is narrow. */
GLOW__KERNEL inline GLOW__ALWAYS_INLINE void
micro_kernel_rows_body(int64_t kc, const float *a, int64_t lda, const float *pb,
                       float *c, int64_t ldc, int64_t m, int64_t n,
                       int accumulate, const int w) {
  __m512 acc[MR][2];
  const float *row[MR];
  for (int i = 0; i < MR; i++) {
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    row[i] = a + (i < m ? i : 0) * lda;
  }
  for (int64_t k = 0; k < kc; k++, pb += NR) {
    const __m512 b0 = _mm512_loadu_ps(pb), b1 = _mm512_loadu_ps(pb + 16);
    for (int i = 0; i < MR; i++) {
      const __m512 ai = _mm512_set1_ps(row[i][k]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      if (w > 1)
        acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile(acc, c, ldc, m, n, accumulate, w);
}

GLOW__KERNEL void micro_kernel_rows(int64_t kc, const float *a, int64_t lda,
                                    const float *pb, float *c, int64_t ldc,
                                    int64_t m, int64_t n, int accumulate) {
  GLOW__WIDTHS(micro_kernel_rows_body, kc, a, lda, pb, c, ldc, m, n,
               accumulate);
}

/* Which operands are packed: op(B) unless it is B itself with op(A) = A^T
 * (the weight gradients: both read in place); op(A) only when it is A^T,
 * and then, with B in place, only a last partial panel.  A row-major A is
 * read in place. */
static void own_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k,
                      const float *a, int64_t lda, const float *b, int64_t ldb,
                      int accumulate, float *c, int64_t ldc, float *pack) {
  /* Element strides of op(B) (k x n). */
  const int64_t brs = tb ? 1 : ldb, bcs = tb ? ldb : 1;
  const int tn = ta && !tb;
  float *pa = pack, *pb = pack + (int64_t)MC * KC;
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = n - jc < NC ? n - jc : NC;
    for (int64_t pc = 0; pc < k; pc += KC) {
      const int64_t kc = k - pc < KC ? k - pc : KC;
      const int acc = accumulate || pc > 0;
      if (!tn)
        pack_b(b + pc * brs + jc * bcs, brs, bcs, kc, nc, pb);
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = m - ic < MC ? m - ic : MC;
        const int64_t full = tn ? mc - mc % MR : 0; /* panels in place */
        if (ta && full < mc)
          pack_at(a + pc * lda + ic + full, lda, mc - full, kc, pa + full * kc);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = nc - jr < NR ? nc - jr : NR;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = mc - ir < MR ? mc - ir : MR;
            float *ct = c + (ic + ir) * ldc + jc + jr;
            if (tn && ir < full)
              micro_kernel_tn(kc, a + pc * lda + ic + ir, lda,
                              b + pc * ldb + jc + jr, ldb, ct, ldc, mr, nr,
                              acc);
            else if (tn)
              micro_kernel_tn(kc, pa + ir * kc, MR, b + pc * ldb + jc + jr, ldb,
                              ct, ldc, mr, nr, acc); /* packed A^T */
            else if (ta)
              micro_kernel(kc, pa + ir * kc, pb + jr * kc, ct, ldc, mr, nr,
                           acc);
            else
              micro_kernel_rows(kc, a + (ic + ir) * lda + pc, lda, pb + jr * kc,
                                ct, ldc, mr, nr, acc);
          }
        }
      }
    }
  }
  if (k == 0 && !accumulate) /* an empty sum */
    for (int64_t i = 0; i < m; i++)
      memset(c + i * ldc, 0, sizeof(float) * (size_t)n);
}

#endif /* GLOW__HAVE_AVX512_KERNEL */

void glow__sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k,
                 const float *a, int64_t lda, const float *b, int64_t ldb,
                 int accumulate, float *c, int64_t ldc, float *pack) {
#ifdef GLOW__HAVE_AVX512_KERNEL
  if (pack) {
    own_sgemm(ta, tb, m, n, k, a, lda, b, ldb, accumulate, c, ldc, pack);
    return;
  }
#else
  (void)pack; /* never set: glow__gemm_own_available() is 0 */
#endif
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, a,
              (int)lda, b, (int)ldb, accumulate ? 1.0f : 0.0f, c, (int)ldc);
}
