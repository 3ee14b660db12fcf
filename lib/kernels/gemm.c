/*
 * gemm.c -- single-precision matrix products: libglow's own kernel, in an
 * AVX-512 and an AVX2+FMA version, or the CBLAS.
 *
 * The kernel follows the usual blocked scheme (as in BLIS and OpenBLAS):
 * op(B) in blocks of KC x NC, as panels NR columns wide, op(A) in blocks of
 * MC x KC, as panels MR rows high, and a register-blocked micro-kernel
 * multiplies one A panel by one B panel into an MR x NR tile of C: 12 x 32
 * in 24 of AVX-512's 32 vector registers, 6 x 16 in 12 of AVX2's 16.
 * Glow's products are tall and narrow (rows are pixels, columns a few to a
 * few hundred channels), where packing costs as much as the arithmetic, so
 * operands are packed only where the layout demands it: a row-major A is
 * read in place (a broadcast per row and step), and the weight gradients
 * A^T B, whose inner dimension is the pixels, read both A and B in place.
 * It exists because libglow runs its products single-threaded inside its
 * own threads, where the CBLAS may be held to older instructions (an
 * OpenBLAS forced to its AVX2 kernels by OPENBLAS_CORETYPE runs at half the
 * rate of AVX-512 on such a CPU), and because its sums are in a fixed
 * order: each element of C adds its K products in KC blocks, one fused
 * multiply-add after the other from zero within a block, the blocks in
 * order, whatever M, N or the tile it is in, so that a row of the result
 * does not depend on how many rows the product has.  Both versions keep
 * that order with the same KC, so they give the same bits.
 *
 * The instruction set is chosen once per process: AVX-512F, else AVX2 with
 * FMA, else the CBLAS; GLOW_GEMM_ISA=avx2 in the environment keeps an
 * AVX-512 CPU to the AVX2 version, which is how that version is tested and
 * measured.  Builds configured with -DGLOW_GEMM_KERNEL=OFF have only the
 * CBLAS (which CI uses to test that path on machines with the kernel).
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) &&        \
    !defined(GLOW_NO_GEMM_KERNEL)
#define GLOW__HAVE_GEMM_KERNEL 1
#include <immintrin.h>
#endif

#define KC GLOW__GEMM_KC
#define MC GLOW__GEMM_MC
#define NC GLOW__GEMM_NC

/* ---- Which kernel --------------------------------------------------------- */

int glow__gemm_runs(glow__gemm_isa isa) {
  switch (isa) {
  case GLOW__GEMM_CBLAS: return 1;
#ifdef GLOW__HAVE_GEMM_KERNEL
  case GLOW__GEMM_AVX2:
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  case GLOW__GEMM_AVX512: return __builtin_cpu_supports("avx512f") != 0;
#endif
  default: return 0;
  }
}

/* The best this CPU runs, no better than GLOW_GEMM_ISA allows. */
static glow__gemm_isa choose_isa(void) {
  const char *cap = getenv("GLOW_GEMM_ISA");
  glow__gemm_isa isa =
      cap && strcmp(cap, "avx2") == 0 ? GLOW__GEMM_AVX2 : GLOW__GEMM_AVX512;
  while (!glow__gemm_runs(isa))
    isa--; /* ends at the CBLAS, which always runs */
  return isa;
}

glow__gemm_isa glow__gemm_isa_used(void) {
  /* Chosen once: a process runs one version throughout, and the
   * environment is not read on every product.  Threads racing here compute
   * the same value. */
  static atomic_int chosen = -1;
  int isa = atomic_load_explicit(&chosen, memory_order_relaxed);
  if (isa < 0) {
    isa = (int)choose_isa();
    atomic_store_explicit(&chosen, isa, memory_order_relaxed);
  }
  return (glow__gemm_isa)isa;
}

int glow__gemm_own_available(void) {
  return glow__gemm_isa_used() != GLOW__GEMM_CBLAS;
}

void glow__epilogue_apply(const glow__epilogue *ep, const float *x, float *y,
                          int64_t ld, int64_t m, int64_t n) {
  const float *b = ep->bias, *s = ep->scale;
  for (int64_t i = 0; i < m; i++) {
    const float *xi = x + i * ld;
    float *yi = y + i * ld;
    if (ep->relu) /* fused: one sweep instead of two */
      for (int64_t j = 0; j < n; j++) {
        const float t = (xi[j] + b[j]) * s[j];
        yi[j] = t > 0.0f ? t : 0.0f;
      }
    else
      for (int64_t j = 0; j < n; j++)
        yi[j] = (xi[j] + b[j]) * s[j];
  }
}

/* ep from column col on (its bias and scale shifted), in *at. */
static const glow__epilogue *epilogue_from(const glow__epilogue *ep,
                                           int64_t col, glow__epilogue *at) {
  if (!ep)
    return NULL;
  *at = (glow__epilogue){ep->bias + col, ep->scale + col, ep->relu};
  return at;
}

/* The operands of one product, where its result goes and what is done to
 * it there (ep: NULL, or applied with the last KC block).  With group > 0,
 * op(B) (ta = tb = 0 only) is a row of matrices, each group columns wide
 * and stored with row stride ldb, the next gstride floats after the last:
 * column j of op(B) is column (j0 + j) % group of the matrix at
 * b + ((j0 + j) / group) * gstride.  A 3x3 weight in HWIO layout is such
 * a row: the nine taps' cin x cout matrices, which the tap path of a
 * convolution multiplies as they lie, without rearranging them first. */
typedef struct {
  int ta, tb;
  const float *a, *b;
  int64_t lda, ldb;
  int64_t group, gstride, j0;
  float *c;
  int64_t ldc;
  const glow__epilogue *ep;
} operands;

/* Column j of grouped op(B) (o->group > 0): its offset from o->b in *off,
 * and how many columns from j on lie side by side in one matrix. */
static inline int64_t group_run(const operands *o, int64_t j, int64_t *off) {
  const int64_t col = o->j0 + j, g = col / o->group, in = col % o->group;
  *off = g * o->gstride + in;
  return o->group - in;
}

#ifdef GLOW__HAVE_GEMM_KERNEL

/* ---- Packing (plain C, compiled for each version below) ------------------ */

/* n floats from src to dst in fixed-size pieces, each a move or two: the
 * rows packed here are often narrower than a panel (a product of 4 or 12
 * channels), where a call to memcpy per row of 16 to 48 bytes, and the
 * zeros after it, took longer than the product: a 4 x 4 weight gradient
 * over 12,544 pixels ran at 2.2 GFLOP/s, and 4.2 with these copies and
 * one memset per partial panel. */
static inline GLOW__ALWAYS_INLINE void copy_short(float *dst, const float *src,
                                                  int64_t n) {
  for (; n >= 16; n -= 16, dst += 16, src += 16)
    memcpy(dst, src, sizeof(float) * 16);
  if (n >= 8) {
    memcpy(dst, src, sizeof(float) * 8);
    n -= 8, dst += 8, src += 8;
  }
  if (n >= 4) {
    memcpy(dst, src, sizeof(float) * 4);
    n -= 4, dst += 4, src += 4;
  }
  if (n >= 2) {
    memcpy(dst, src, sizeof(float) * 2);
    n -= 2, dst += 2, src += 2;
  }
  if (n)
    *dst = *src;
}

/* mc columns x kc rows of a row-major A (row stride lda), as mc rows of
 * A^T in panels of mr rows: panel r holds, for each k, its mr values, which
 * lie side by side in A; rows past mc are zero.  (A row-major op(A) = A is
 * never packed: the kernel reads its rows in place.) */
static inline GLOW__ALWAYS_INLINE void pack_at(const float *a, int64_t lda,
                                               int64_t mc, int64_t kc,
                                               int64_t mr, float *pa) {
  for (int64_t ir = 0; ir < mc; ir += mr) {
    const int64_t rows = mc - ir < mr ? mc - ir : mr;
    const float *src = a + ir;
    if (rows < mr) /* zero past mc: one sweep, not a few floats per row */
      memset(pa, 0, sizeof(float) * (size_t)(kc * mr));
    for (int64_t k = 0; k < kc; k++, pa += mr) {
      if (rows == 12) /* whole panels: fixed-size copies, inlined */
        memcpy(pa, src + k * lda, sizeof(float) * 12);
      else if (rows == 6)
        memcpy(pa, src + k * lda, sizeof(float) * 6);
      else
        copy_short(pa, src + k * lda, rows);
    }
  }
}

/* Rows [p0, p0 + kc) x columns [j0, j0 + nc) of op(B), element (k, j) at
 * b[k*rs + j*cs], into panels nr columns wide, zero past nc.  AVX-512's
 * whole panels of a row-major op(B) go two at a time, each row's 256
 * bytes into the two panels that share them: 512 x 512 weights streamed
 * from memory (2 KiB from row to row) packed at 20 GB/s so, against 17 a
 * panel at a time. */
static inline GLOW__ALWAYS_INLINE void pack_b(const float *b, int64_t rs,
                                              int64_t cs, int64_t kc,
                                              int64_t nc, int64_t nr,
                                              float *pb) {
  int64_t jr = 0;
  if (cs == 1 && nr == 32)
    for (; jr + 64 <= nc; jr += 64, pb += 64 * kc)
      for (int64_t k = 0; k < kc; k++) {
        memcpy(pb + k * 32, b + k * rs + jr, sizeof(float) * 32);
        memcpy(pb + (kc + k) * 32, b + k * rs + jr + 32, sizeof(float) * 32);
      }
  for (; jr < nc; jr += nr) {
    const int64_t cols = nc - jr < nr ? nc - jr : nr;
    const float *src = b + jr * cs;
    if (cols < nr) /* zero past nc, as pack_at */
      memset(pb, 0, sizeof(float) * (size_t)(kc * nr));
    for (int64_t k = 0; k < kc; k++, pb += nr) {
      if (cs == 1 && cols == 32) { /* whole panels: fixed-size copies */
        memcpy(pb, src + k * rs, sizeof(float) * 32);
      } else if (cs == 1 && cols == 16) {
        memcpy(pb, src + k * rs, sizeof(float) * 16);
      } else if (cs == 1) {
        copy_short(pb, src + k * rs, cols);
      } else {
        for (int64_t j = 0; j < cols; j++)
          pb[j] = src[k * rs + j * cs];
      }
    }
  }
}

/* kc rows of len floats, from src (row stride ls) to dst (row stride ld):
 * one run of a grouped op(B)'s columns.  A run is cut where a matrix, a
 * panel or the block ends, so it is 1 to nr floats long, most often a
 * matrix's whole width (its output channels, 4 to 48); each row is then a
 * move or two of a fixed size where the length is one of the usual ones. */
static inline GLOW__ALWAYS_INLINE void copy_runs(float *dst, int64_t ld,
                                                 const float *src, int64_t ls,
                                                 int64_t kc, int64_t len) {
#define GLOW__RUN(L)                                                           \
  case L:                                                                      \
    for (int64_t k = 0; k < kc; k++)                                           \
      memcpy(dst + k * ld, src + k * ls, sizeof(float) * (L));                 \
    return;
  switch (len) {
    GLOW__RUN(4)
    GLOW__RUN(8)
    GLOW__RUN(12)
    GLOW__RUN(16)
    GLOW__RUN(24)
    GLOW__RUN(32)
  default:
    for (int64_t k = 0; k < kc; k++)
      copy_short(dst + k * ld, src + k * ls, len);
  }
#undef GLOW__RUN
}

/* Rows [p0, p0 + kc) x columns [jc, jc + nc) of a grouped op(B) (see
 * operands), as pack_b: the block is a few runs of columns (split where a
 * matrix or a panel ends), found for up to RUNS runs at a time, and each
 * run is copied whole, all kc rows, before the next.  Run by run rather
 * than row by row, each row's copy has the run's fixed length: fashion's
 * zero convolutions (runs of 4 and 8 floats) packed so took 0.4 to 1 us
 * less of their 6 to 13 us products. */
#define RUNS 64
static inline GLOW__ALWAYS_INLINE void pack_b_groups(const operands *o,
                                                     int64_t p0, int64_t jc,
                                                     int64_t kc, int64_t nc,
                                                     int64_t nr, float *pb) {
  if (nc % nr) /* zero past nc */
    memset(pb + (nc - nc % nr) * kc, 0, sizeof(float) * (size_t)(kc * nr));
  for (int64_t j0 = 0; j0 < nc;) {
    const float *src[RUNS];
    float *dst[RUNS];
    int64_t len[RUNS], runs = 0;
    for (; j0 < nc && runs < RUNS; j0 += len[runs++]) {
      int64_t off;
      const int64_t jr = j0 - j0 % nr, panel_left = jr + nr - j0;
      len[runs] = group_run(o, jc + j0, &off);
      if (len[runs] > panel_left)
        len[runs] = panel_left;
      if (len[runs] > nc - j0)
        len[runs] = nc - j0;
      src[runs] = o->b + off + p0 * o->ldb;
      dst[runs] = pb + jr * kc + (j0 - jr);
    }
    for (int64_t r = 0; r < runs; r++)
      copy_runs(dst[r], nr, src[r], o->ldb, kc, len[r]);
  }
}
#undef RUNS

/* ---- AVX-512: 12 x 32 tiles ------------------------------------------------ */

#define MR 12
#define NR 32

#define GLOW__KERNEL __attribute__((target("avx512f"))) static

/* The epilogue (glow__epilogue) on one vector v of a tile's row, whose
 * columns' bias and scale are b and s: (v + b) * s, then max(v, 0), which
 * is v where v > 0 and 0 otherwise (NaN and -0 included), as the scalar
 * pass has it. */
GLOW__KERNEL inline GLOW__ALWAYS_INLINE __m512 epilogue16(__m512 v, __m512 b,
                                                          __m512 s, int relu) {
  v = _mm512_mul_ps(_mm512_add_ps(v, b), s);
  return relu ? _mm512_max_ps(v, _mm512_setzero_ps()) : v;
}

/* Store the m x n (<= MR x NR) tile held in acc at c, added to what c
 * holds when accumulate != 0: tile + c, in that order, whatever the tile's
 * size; then the epilogue ep (NULL: none; its bias and scale start at the
 * tile's first column) on the result. */
GLOW__KERNEL inline GLOW__ALWAYS_INLINE void
store_tile(__m512 acc[MR][2], float *c, int64_t ldc, int64_t m, int64_t n,
           int accumulate, const glow__epilogue *ep, const int w) {
  const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
  const __mmask16 m1 = n >= 32  ? 0xffff
                       : n > 16 ? (__mmask16)((1u << (n - 16)) - 1)
                                : 0;
  __m512 b0 = _mm512_setzero_ps(), b1 = b0, s0 = b0, s1 = b0;
  if (ep) {
    b0 = _mm512_maskz_loadu_ps(m0, ep->bias);
    s0 = _mm512_maskz_loadu_ps(m0, ep->scale);
    if (w > 1) {
      b1 = _mm512_maskz_loadu_ps(m1, ep->bias + 16);
      s1 = _mm512_maskz_loadu_ps(m1, ep->scale + 16);
    }
  }
  for (int64_t i = 0; i < m; i++) {
    float *ci = c + i * ldc;
    __m512 v0 = acc[i][0];
    if (accumulate)
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
    if (ep)
      v0 = epilogue16(v0, b0, s0, ep->relu);
    _mm512_mask_storeu_ps(ci, m0, v0);
    if (w > 1) {
      __m512 v1 = acc[i][1];
      if (accumulate)
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
      if (ep)
        v1 = epilogue16(v1, b1, s1, ep->relu);
      _mm512_mask_storeu_ps(ci + 16, m1, v1);
    }
  }
}

/* Each kernel below is a body for `rows` rows and w vectors of `lanes`
 * columns, constants where inlined.  w is 2, or 1 where the tile has
 * n <= lanes columns (the last of a product 36 wide, or one 18 wide, on
 * AVX-512), which halves its work.  rows is the register tile's, or one of
 * two shorter counts (r1, r2) where the tile has no more rows than that:
 * a product's last row tile is often short (an image's 16 pixels at
 * cifar's third level, 49 at fashion's second, a weight gradient's 18
 * rows), and computing rows that are not stored cost as much as the rows
 * that are.  Each element is summed the same way whatever the count, so
 * the bits do not change. */
#define GLOW__WIDTHS(lanes, body, ...)                                         \
  do {                                                                         \
    if (n > (lanes))                                                           \
      body(__VA_ARGS__, 2);                                                    \
    else                                                                       \
      body(__VA_ARGS__, 1);                                                    \
  } while (0)
#define GLOW__TILES(r0, r1, r2, lanes, body, ...)                              \
  do {                                                                         \
    if (m > (r1))                                                              \
      GLOW__WIDTHS(lanes, body, __VA_ARGS__, r0);                              \
    else if (m > (r2))                                                         \
      GLOW__WIDTHS(lanes, body, __VA_ARGS__, r1);                              \
    else                                                                       \
      GLOW__WIDTHS(lanes, body, __VA_ARGS__, r2);                              \
  } while (0)

/* The m x n tile at c = the product of a packed A panel and a B panel over
 * kc (see store_tile). */
GLOW__KERNEL inline GLOW__ALWAYS_INLINE void
micro_kernel_body(int64_t kc, const float *pa, const float *pb, float *c,
                  int64_t ldc, int64_t m, int64_t n, int accumulate,
                  const glow__epilogue *ep, const int rows, const int w) {
  __m512 acc[MR][2];
  for (int i = 0; i < rows; i++)
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++, pa += MR, pb += NR) {
    const __m512 b0 = _mm512_loadu_ps(pb), b1 = _mm512_loadu_ps(pb + 16);
    for (int i = 0; i < rows; i++) {
      const __m512 ai = _mm512_set1_ps(pa[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      if (w > 1)
        acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile(acc, c, ldc, m, n, accumulate, ep, w);
}

GLOW__KERNEL void micro_kernel(int64_t kc, const float *pa, const float *pb,
                               float *c, int64_t ldc, int64_t m, int64_t n,
                               int accumulate, const glow__epilogue *ep) {
  GLOW__TILES(12, 8, 4, 16, micro_kernel_body, kc, pa, pb, c, ldc, m, n,
              accumulate, ep);
}

/* The same for op(A) = A^T and B both read where they lie: A^T's panel is
 * MR adjacent values of each of the kc rows of A (stride lda; a packed
 * panel is the case lda = MR), B's the NR leading values of each of its kc
 * rows (stride ldb; a partial panel is packed, zero past n, for these
 * loads).  The weight gradients' products, whose inner dimension is every
 * pixel of a shard, would otherwise pack both operands for as few flops per
 * value as they have output columns. */
GLOW__KERNEL inline GLOW__ALWAYS_INLINE void
micro_kernel_tn_body(int64_t kc, const float *a, int64_t lda, const float *b,
                     int64_t ldb, float *c, int64_t ldc, int64_t m, int64_t n,
                     int accumulate, const glow__epilogue *ep, const int rows,
                     const int w) {
  __m512 acc[MR][2];
  for (int i = 0; i < rows; i++)
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++, a += lda, b += ldb) {
    const __m512 b0 = _mm512_loadu_ps(b);
    const __m512 b1 = w > 1 ? _mm512_loadu_ps(b + 16) : b0;
    for (int i = 0; i < rows; i++) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      if (w > 1)
        acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile(acc, c, ldc, m, n, accumulate, ep, w);
}

GLOW__KERNEL void micro_kernel_tn(int64_t kc, const float *a, int64_t lda,
                                  const float *b, int64_t ldb, float *c,
                                  int64_t ldc, int64_t m, int64_t n,
                                  int accumulate, const glow__epilogue *ep) {
  GLOW__TILES(12, 8, 4, 16, micro_kernel_tn_body, kc, a, lda, b, ldb, c, ldc, m,
              n, accumulate, ep);
}

/* The same with A read where it lies, row-major with row stride lda (its
 * m rows; the panel's other rows repeat the first and are not stored):
 * packing a row-major A costs a strided load per element, as much as the
 * products themselves when B is narrow. */
GLOW__KERNEL inline GLOW__ALWAYS_INLINE void
micro_kernel_rows_body(int64_t kc, const float *a, int64_t lda, const float *pb,
                       int64_t ldb, float *c, int64_t ldc, int64_t m, int64_t n,
                       int accumulate, const glow__epilogue *ep, const int rows,
                       const int w) {
  __m512 acc[MR][2];
  const float *row[MR];
  for (int i = 0; i < rows; i++) {
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    row[i] = a + (i < m ? i : 0) * lda;
  }
  for (int64_t k = 0; k < kc; k++, pb += ldb) {
    const __m512 b0 = _mm512_loadu_ps(pb), b1 = _mm512_loadu_ps(pb + 16);
    for (int i = 0; i < rows; i++) {
      const __m512 ai = _mm512_set1_ps(row[i][k]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      if (w > 1)
        acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile(acc, c, ldc, m, n, accumulate, ep, w);
}

GLOW__KERNEL void micro_kernel_rows(int64_t kc, const float *a, int64_t lda,
                                    const float *pb, int64_t ldb, float *c,
                                    int64_t ldc, int64_t m, int64_t n,
                                    int accumulate, const glow__epilogue *ep) {
  GLOW__TILES(12, 8, 4, 16, micro_kernel_rows_body, kc, a, lda, pb, ldb, c, ldc,
              m, n, accumulate, ep);
}

/* micro_kernel_rows for the first row tile of a block, with B's panel
 * read where it lies and copied, as it is read, into the packed panel at
 * pb for the row tiles after it: its two vectors of row k at b0 + k * ldb
 * and b1 + k * ldb (b0 + 16 for a plain B; two of a grouped B's matrices
 * where a vector lies in each).  The weights then come from memory once,
 * while the first tile's arithmetic runs, instead of in a packing pass of
 * their own before it: cifar's 512 x 512 weights, cold, multiplied by 16
 * rows in 74 to 81 us against 90 to 93 (64 rows: 197 against 217 to 220;
 * docs/performance.md).  The rows PF ahead
 * are prefetched into L2, not L1: rows 2 KiB apart share a few L1 sets,
 * where prefetched lines evicted each other before use. */
#define PF 32
GLOW__KERNEL inline GLOW__ALWAYS_INLINE void
micro_kernel_fill_body(int64_t kc, const float *a, int64_t lda, const float *b0,
                       const float *b1, int64_t ldb, float *pb, float *c,
                       int64_t ldc, int64_t m, int64_t n, int accumulate,
                       const glow__epilogue *ep, const int rows) {
  __m512 acc[MR][2];
  const float *row[MR];
  const uintptr_t ahead = sizeof(float) * (uintptr_t)(PF * ldb);
  for (int i = 0; i < rows; i++) {
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    row[i] = a + (i < m ? i : 0) * lda;
  }
  for (int64_t k = 0, at = 0; k < kc; k++, at += ldb, pb += NR) {
    /* Addresses as integers: the rows past the weight's end are
     * prefetched too, which is harmless, but not pointers into it. */
    _mm_prefetch((const char *)((uintptr_t)(b0 + at) + ahead), _MM_HINT_T1);
    _mm_prefetch((const char *)((uintptr_t)(b1 + at) + ahead), _MM_HINT_T1);
    const __m512 v0 = _mm512_loadu_ps(b0 + at), v1 = _mm512_loadu_ps(b1 + at);
    _mm512_store_ps(pb, v0);
    _mm512_store_ps(pb + 16, v1);
    for (int i = 0; i < rows; i++) {
      const __m512 ai = _mm512_set1_ps(row[i][k]);
      acc[i][0] = _mm512_fmadd_ps(ai, v0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, v1, acc[i][1]);
    }
  }
  store_tile(acc, c, ldc, m, n, accumulate, ep, 2);
}
#undef PF

GLOW__KERNEL void micro_kernel_fill(int64_t kc, const float *a, int64_t lda,
                                    const float *b0, const float *b1,
                                    int64_t ldb, float *pb, float *c,
                                    int64_t ldc, int64_t m, int64_t n,
                                    int accumulate, const glow__epilogue *ep) {
  if (m > 8)
    micro_kernel_fill_body(kc, a, lda, b0, b1, ldb, pb, c, ldc, m, n,
                           accumulate, ep, 12);
  else if (m > 4)
    micro_kernel_fill_body(kc, a, lda, b0, b1, ldb, pb, c, ldc, m, n,
                           accumulate, ep, 8);
  else
    micro_kernel_fill_body(kc, a, lda, b0, b1, ldb, pb, c, ldc, m, n,
                           accumulate, ep, 4);
}

#undef MR
#undef NR

/* ---- AVX2 + FMA: 6 x 16 tiles ---------------------------------------------
 * The AVX-512 kernels above with 8-lane vectors: 12 accumulators, two B
 * vectors and a broadcast fill 15 of the 16 registers. */

#define MR 6
#define NR 16

#define GLOW__KERNEL2 __attribute__((target("avx2,fma"))) static

/* As epilogue16, on 8 lanes. */
GLOW__KERNEL2 inline GLOW__ALWAYS_INLINE __m256 epilogue8(__m256 v, __m256 b,
                                                          __m256 s, int relu) {
  v = _mm256_mul_ps(_mm256_add_ps(v, b), s);
  return relu ? _mm256_max_ps(v, _mm256_setzero_ps()) : v;
}

/* As store_tile.  AVX2 has no mask registers, and its masked store is slow
 * on some CPUs, so a partial tile goes through a buffer (a tile's store is
 * not in the loop), and the scalar pass applies its epilogue. */
GLOW__KERNEL2 inline GLOW__ALWAYS_INLINE void
store_tile2(__m256 acc[MR][2], float *c, int64_t ldc, int64_t m, int64_t n,
            int accumulate, const glow__epilogue *ep, const int w) {
  if (n == 8 * w) { /* whole vectors */
    for (int i = 0; i < MR && i < m; i++)
      for (int v = 0; v < w; v++) {
        float *cv = c + i * ldc + 8 * v;
        __m256 x = acc[i][v];
        if (accumulate)
          x = _mm256_add_ps(x, _mm256_loadu_ps(cv));
        if (ep)
          x = epilogue8(x, _mm256_loadu_ps(ep->bias + 8 * v),
                        _mm256_loadu_ps(ep->scale + 8 * v), ep->relu);
        _mm256_storeu_ps(cv, x);
      }
    return;
  }
  float t[MR][NR];
  for (int i = 0; i < MR && i < m; i++) { /* the rows computed */
    _mm256_storeu_ps(t[i], acc[i][0]);
    _mm256_storeu_ps(t[i] + 8, acc[i][1]);
  }
  for (int64_t i = 0; i < m; i++) {
    float *ci = c + i * ldc;
    for (int64_t j = 0; j < n; j++)
      ci[j] = accumulate ? t[i][j] + ci[j] : t[i][j];
  }
  if (ep)
    glow__epilogue_apply(ep, c, c, ldc, m, n);
}

GLOW__KERNEL2 inline GLOW__ALWAYS_INLINE void
avx2_kernel_body(int64_t kc, const float *pa, const float *pb, float *c,
                 int64_t ldc, int64_t m, int64_t n, int accumulate,
                 const glow__epilogue *ep, const int rows, const int w) {
  __m256 acc[MR][2];
  for (int i = 0; i < rows; i++)
    acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++, pa += MR, pb += NR) {
    const __m256 b0 = _mm256_loadu_ps(pb), b1 = _mm256_loadu_ps(pb + 8);
    for (int i = 0; i < rows; i++) {
      const __m256 ai = _mm256_set1_ps(pa[i]);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      if (w > 1)
        acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile2(acc, c, ldc, m, n, accumulate, ep, w);
}

GLOW__KERNEL2 void avx2_kernel(int64_t kc, const float *pa, const float *pb,
                               float *c, int64_t ldc, int64_t m, int64_t n,
                               int accumulate, const glow__epilogue *ep) {
  GLOW__TILES(6, 4, 4, 8, avx2_kernel_body, kc, pa, pb, c, ldc, m, n,
              accumulate, ep);
}

/* As micro_kernel_tn. */
GLOW__KERNEL2 inline GLOW__ALWAYS_INLINE void
avx2_kernel_tn_body(int64_t kc, const float *a, int64_t lda, const float *b,
                    int64_t ldb, float *c, int64_t ldc, int64_t m, int64_t n,
                    int accumulate, const glow__epilogue *ep, const int rows,
                    const int w) {
  __m256 acc[MR][2];
  for (int i = 0; i < rows; i++)
    acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++, a += lda, b += ldb) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = w > 1 ? _mm256_loadu_ps(b + 8) : b0;
    for (int i = 0; i < rows; i++) {
      const __m256 ai = _mm256_set1_ps(a[i]);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      if (w > 1)
        acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile2(acc, c, ldc, m, n, accumulate, ep, w);
}

GLOW__KERNEL2 void avx2_kernel_tn(int64_t kc, const float *a, int64_t lda,
                                  const float *b, int64_t ldb, float *c,
                                  int64_t ldc, int64_t m, int64_t n,
                                  int accumulate, const glow__epilogue *ep) {
  GLOW__TILES(6, 4, 4, 8, avx2_kernel_tn_body, kc, a, lda, b, ldb, c, ldc, m, n,
              accumulate, ep);
}

/* As micro_kernel_rows. */
GLOW__KERNEL2 inline GLOW__ALWAYS_INLINE void
avx2_kernel_rows_body(int64_t kc, const float *a, int64_t lda, const float *pb,
                      int64_t ldb, float *c, int64_t ldc, int64_t m, int64_t n,
                      int accumulate, const glow__epilogue *ep, const int rows,
                      const int w) {
  __m256 acc[MR][2];
  const float *row[MR];
  for (int i = 0; i < rows; i++) {
    acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    row[i] = a + (i < m ? i : 0) * lda;
  }
  for (int64_t k = 0; k < kc; k++, pb += ldb) {
    const __m256 b0 = _mm256_loadu_ps(pb), b1 = _mm256_loadu_ps(pb + 8);
    for (int i = 0; i < rows; i++) {
      const __m256 ai = _mm256_set1_ps(row[i][k]);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      if (w > 1)
        acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile2(acc, c, ldc, m, n, accumulate, ep, w);
}

GLOW__KERNEL2 void avx2_kernel_rows(int64_t kc, const float *a, int64_t lda,
                                    const float *pb, int64_t ldb, float *c,
                                    int64_t ldc, int64_t m, int64_t n,
                                    int accumulate, const glow__epilogue *ep) {
  GLOW__TILES(6, 4, 4, 8, avx2_kernel_rows_body, kc, a, lda, pb, ldb, c, ldc, m,
              n, accumulate, ep);
}

#undef MR
#undef NR

/* ---- The blocked product, for either version ------------------------------ */

/* One instruction set's register tile, packing and micro-kernels (packed
 * A and B, A^T and B in place, A's rows in place and B packed).  With
 * op(A) = A^T and B in place, A^T is packed too where the block has more
 * than tn_pack_cols columns: each A^T panel is then read once per B panel, and
 * the AVX2 version's narrower panels read it twice as often (packing made
 * its weight gradients 7 to 20% faster, and AVX-512's none). */
typedef void pack_b_fn(const float *b, int64_t rs, int64_t cs, int64_t kc,
                       int64_t nc, int64_t nr, float *pb);
typedef void pack_groups_fn(const operands *o, int64_t p0, int64_t jc,
                            int64_t kc, int64_t nc, int64_t nr, float *pb);

typedef struct {
  int64_t mr, nr, tn_pack_cols;
  pack_b_fn *pack_b;
  pack_groups_fn *pack_groups;
  void (*packed)(int64_t kc, const float *pa, const float *pb, float *c,
                 int64_t ldc, int64_t m, int64_t n, int accumulate,
                 const glow__epilogue *ep);
  void (*tn)(int64_t kc, const float *a, int64_t lda, const float *b,
             int64_t ldb, float *c, int64_t ldc, int64_t m, int64_t n,
             int accumulate, const glow__epilogue *ep);
  void (*rows)(int64_t kc, const float *a, int64_t lda, const float *b,
               int64_t ldb, float *c, int64_t ldc, int64_t m, int64_t n,
               int accumulate, const glow__epilogue *ep);
  /* rows, packing B's whole panel as it reads it (NULL: none). */
  void (*fill)(int64_t kc, const float *a, int64_t lda, const float *b0,
               const float *b1, int64_t ldb, float *pb, float *c, int64_t ldc,
               int64_t m, int64_t n, int accumulate, const glow__epilogue *ep);
} tiles;

/* The packing, compiled for AVX-512F where that version calls it: its
 * copies then move a cache line at a time, which packed weights streamed
 * from memory at 17 GB/s against 12 to 14 in 16-byte moves.  The AVX2
 * version's stays generic: 32-byte moves packed no faster. */
GLOW__KERNEL void pack_b_avx512(const float *b, int64_t rs, int64_t cs,
                                int64_t kc, int64_t nc, int64_t nr, float *pb) {
  pack_b(b, rs, cs, kc, nc, nr, pb);
}
GLOW__KERNEL void pack_groups_avx512(const operands *o, int64_t p0, int64_t jc,
                                     int64_t kc, int64_t nc, int64_t nr,
                                     float *pb) {
  pack_b_groups(o, p0, jc, kc, nc, nr, pb);
}
static void pack_b_plain(const float *b, int64_t rs, int64_t cs, int64_t kc,
                         int64_t nc, int64_t nr, float *pb) {
  pack_b(b, rs, cs, kc, nc, nr, pb);
}
static void pack_groups_plain(const operands *o, int64_t p0, int64_t jc,
                              int64_t kc, int64_t nc, int64_t nr, float *pb) {
  pack_b_groups(o, p0, jc, kc, nc, nr, pb);
}

static const tiles avx512_tiles = {.mr = 12,
                                   .nr = 32,
                                   .tn_pack_cols = INT64_MAX,
                                   .pack_b = pack_b_avx512,
                                   .pack_groups = pack_groups_avx512,
                                   .packed = micro_kernel,
                                   .tn = micro_kernel_tn,
                                   .rows = micro_kernel_rows,
                                   .fill = micro_kernel_fill};
static const tiles avx2_tiles = {.mr = 6,
                                 .nr = 16,
                                 .tn_pack_cols = 32,
                                 .pack_b = pack_b_plain,
                                 .pack_groups = pack_groups_plain,
                                 .packed = avx2_kernel,
                                 .tn = avx2_kernel_tn,
                                 .rows = avx2_kernel_rows,
                                 .fill = NULL};

/* Whole panels per block, so GLOW__GEMM_PACK holds either version's
 * MC x KC and KC x NC. */
_Static_assert(MC % 12 == 0 && NC % 32 == 0, "AVX-512: whole panels");
_Static_assert(MC % 6 == 0 && NC % 16 == 0, "AVX2: whole panels");

/* A product of A and B (both as stored) with at most this many rows reads
 * B's whole panels in place rather than packing them: packing costs a
 * read and a write of all of B, which only pays when many row tiles read
 * each panel (a cifar image at batch 1 has 16 to 256 rows, against 512 x
 * 512 weights).  Not where B's rows lie a multiple of 256 bytes apart: a
 * panel's rows then fall into a few cache sets and evict each other
 * (reading 512 x 512 weights in place ran at two thirds of the packed
 * rate, and 128 x 128 ones no faster on two threads than on one). */
#define B_IN_PLACE_ROWS 96
static inline int b_in_place(const operands *o, int64_t m) {
  if (o->tb || o->group)
    return 0;
  return o->ta || (m <= B_IN_PLACE_ROWS && o->ldb % 64 != 0);
}

/* Whether the first row tile of each block packs B's whole panels as it
 * multiplies them (tiles.fill) instead of a packing pass before it: where
 * A's rows are read in place and B is packed, and each 16 columns of a
 * panel lie side by side in B (a grouped B's matrices 16k columns wide,
 * from a column 16j on: cifar's third level's zero convolutions, not the
 * first two's 12 and 24). */
static inline int fills(const tiles *t, const operands *o, int b_place) {
  return t->fill && !o->ta && !o->tb && !b_place &&
         (!o->group || (o->group % 16 == 0 && o->j0 % 16 == 0));
}

/* Where row pc of op(B)'s columns [j, j + 16) and [j + 16, j + 32) lie,
 * for a block that fills. */
static inline void fill_source(const operands *o, int64_t pc, int64_t j,
                               const float **b0, const float **b1) {
  if (!o->group) {
    *b0 = o->b + pc * o->ldb + j;
    *b1 = *b0 + 16;
    return;
  }
  int64_t off;
  (void)group_run(o, j, &off);
  *b0 = o->b + off + pc * o->ldb;
  (void)group_run(o, j + 16, &off);
  *b1 = o->b + off + pc * o->ldb;
}

/* Rows [ic, ic + mc) x columns [jc, jc + nc) of C, over the inner block
 * [pc, pc + kc), op(B)'s block packed at pb (b_place, B read in place:
 * only its last panel, when partial; fill: only its last panel, when
 * partial, the first row tile packing the others); acc: add to C; last:
 * the last inner block, whose tiles' stores apply o->ep.  op(A) is packed
 * at pa only when it is A^T, and then, with B in place, only a last
 * partial panel, or every panel of a block wider than t->tn_pack_cols. */
static inline GLOW__ALWAYS_INLINE void
multiply_block(const tiles *t, const operands *o, int b_place, int fill,
               int64_t ic, int64_t mc, int64_t jc, int64_t nc, int64_t pc,
               int64_t kc, int acc, int last, float *pa, float *pb) {
  const int tn = o->ta && !o->tb;
  /* Panels of A^T read in place. */
  const int64_t full = tn && nc <= t->tn_pack_cols ? mc - mc % t->mr : 0;
  if (o->ta && full < mc)
    pack_at(o->a + pc * o->lda + ic + full, o->lda, mc - full, kc, t->mr,
            pa + full * kc);
  for (int64_t jr = 0; jr < nc; jr += t->nr) {
    const int64_t nr = nc - jr < t->nr ? nc - jr : t->nr;
    /* B's panel in place where whole and b_place, else packed. */
    const int place = b_place && nr == t->nr;
    const float *bt = place ? o->b + pc * o->ldb + jc + jr : pb + jr * kc;
    const int64_t ldbt = place ? o->ldb : t->nr;
    /* The epilogue from the panel's first column. */
    glow__epilogue pe;
    const glow__epilogue *ep = last ? epilogue_from(o->ep, jc + jr, &pe) : NULL;
    for (int64_t ir = 0; ir < mc; ir += t->mr) {
      const int64_t mr = mc - ir < t->mr ? mc - ir : t->mr;
      float *ct = o->c + (ic + ir) * o->ldc + jc + jr;
      if (fill && ir == 0 && nr == t->nr) {
        const float *b0, *b1;
        fill_source(o, pc, jc + jr, &b0, &b1);
        t->fill(kc, o->a + ic * o->lda + pc, o->lda, b0, b1, o->ldb,
                pb + jr * kc, ct, o->ldc, mr, nr, acc, ep);
      } else if (tn && ir < full)
        t->tn(kc, o->a + pc * o->lda + ic + ir, o->lda, bt, ldbt, ct, o->ldc,
              mr, nr, acc, ep);
      else if (tn)
        t->tn(kc, pa + ir * kc, t->mr, bt, ldbt, ct, o->ldc, mr, nr, acc,
              ep); /* packed A^T */
      else if (o->ta)
        t->packed(kc, pa + ir * kc, pb + jr * kc, ct, o->ldc, mr, nr, acc, ep);
      else
        t->rows(kc, o->a + (ic + ir) * o->lda + pc, o->lda, bt, ldbt, ct,
                o->ldc, mr, nr, acc, ep);
    }
  }
}

/* Which operands are packed: op(B) unless it is B itself with op(A) = A^T
 * (the weight gradients: both read in place) or with A and few rows (see
 * B_IN_PLACE_ROWS), but for B's last panel when partial, which the kernels
 * read whole; op(A) see multiply_block.  The KC blocks run in order, each
 * adding to what the last left in C. */
static inline GLOW__ALWAYS_INLINE void own_sgemm(const tiles *t,
                                                 const operands *o, int64_t m,
                                                 int64_t n, int64_t k,
                                                 int accumulate, float *pack) {
  /* Element strides of op(B) (k x n). */
  const int64_t brs = o->tb ? 1 : o->ldb, bcs = o->tb ? o->ldb : 1;
  const int b_place = b_in_place(o, m), fill = fills(t, o, b_place);
  /* Panels on cache lines: a vector load across two lines costs two. */
  float *pa = (float *)(((uintptr_t)pack + 63) & ~(uintptr_t)63);
  float *pb = pa + (int64_t)MC * KC;
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = n - jc < NC ? n - jc : NC;
    for (int64_t pc = 0; pc < k; pc += KC) {
      const int64_t kc = k - pc < KC ? k - pc : KC;
      const int64_t whole = nc - nc % t->nr; /* columns in whole panels */
      if (b_place || fill) { /* here only a last partial panel */
        if (whole < nc && o->group)
          t->pack_groups(o, pc, jc + whole, kc, nc - whole, t->nr,
                         pb + whole * kc);
        else if (whole < nc)
          t->pack_b(o->b + pc * o->ldb + jc + whole, o->ldb, 1, kc, nc - whole,
                    t->nr, pb + whole * kc);
      } else if (o->group)
        t->pack_groups(o, pc, jc, kc, nc, t->nr, pb);
      else
        t->pack_b(o->b + pc * brs + jc * bcs, brs, bcs, kc, nc, t->nr, pb);
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = m - ic < MC ? m - ic : MC;
        multiply_block(t, o, b_place, fill && ic == 0, ic, mc, jc, nc, pc, kc,
                       accumulate || pc > 0, pc + kc == k, pa, pb);
      }
    }
  }
  if (k == 0) { /* an empty sum: no block stored C */
    if (!accumulate)
      for (int64_t i = 0; i < m; i++)
        memset(o->c + i * o->ldc, 0, sizeof(float) * (size_t)n);
    if (o->ep)
      glow__epilogue_apply(o->ep, o->c, o->c, o->ldc, m, n);
  }
}

/* own_sgemm for each version, inlined with its tiles as constants: the
 * tile sizes fold into the loops and the kernels are called directly,
 * which matters for Glow's products with few columns or a short inner
 * dimension (a 1x1 convolution of 12 channels), whose tiles are short.
 * The AVX-512 one is compiled for AVX-512F, as its packing of A^T is
 * inlined (see pack_b_avx512).  The AVX2 one stays generic: compiled for
 * AVX2, with its kernels then inlined, it ran 1.5% slower (fashion, batch
 * 64). */
GLOW__KERNEL void own_sgemm_avx512(const operands *o, int64_t m, int64_t n,
                                   int64_t k, int accumulate, float *pack) {
  own_sgemm(&avx512_tiles, o, m, n, k, accumulate, pack);
}

static void own_sgemm_avx2(const operands *o, int64_t m, int64_t n, int64_t k,
                           int accumulate, float *pack) {
  own_sgemm(&avx2_tiles, o, m, n, k, accumulate, pack);
}

#endif /* GLOW__HAVE_GEMM_KERNEL */

/* The CBLAS's product of o: one call, or one per run of columns of a
 * grouped op(B); then the epilogue as a pass. */
static void cblas_product(const operands *o, int64_t m, int64_t n, int64_t k,
                          int accumulate) {
  const float beta = accumulate ? 1.0f : 0.0f;
  if (!o->group)
    cblas_sgemm(CblasRowMajor, o->ta ? CblasTrans : CblasNoTrans,
                o->tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f,
                o->a, (int)o->lda, o->b, (int)o->ldb, beta, o->c, (int)o->ldc);
  else
    for (int64_t j = 0; j < n;) {
      int64_t off;
      int64_t run = group_run(o, j, &off);
      if (run > n - j)
        run = n - j;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)run,
                  (int)k, 1.0f, o->a, (int)o->lda, o->b + off, (int)o->ldb,
                  beta, o->c + j, (int)o->ldc);
      j += run;
    }
  if (o->ep)
    glow__epilogue_apply(o->ep, o->c, o->c, o->ldc, m, n);
}

/* o's product on isa's kernel (pack as for glow__sgemm_on). */
static void product_on(glow__gemm_isa isa, const operands *o, int64_t m,
                       int64_t n, int64_t k, int accumulate, float *pack) {
#ifdef GLOW__HAVE_GEMM_KERNEL
  if (isa == GLOW__GEMM_AVX2) {
    own_sgemm_avx2(o, m, n, k, accumulate, pack);
    return;
  }
  if (isa == GLOW__GEMM_AVX512) {
    own_sgemm_avx512(o, m, n, k, accumulate, pack);
    return;
  }
#else
  (void)isa; /* always the CBLAS: glow__gemm_runs() says no other */
#endif
  (void)pack;
  cblas_product(o, m, n, k, accumulate);
}

void glow__sgemm_on(glow__gemm_isa isa, int ta, int tb, int64_t m, int64_t n,
                    int64_t k, const float *a, int64_t lda, const float *b,
                    int64_t ldb, int accumulate, float *c, int64_t ldc,
                    float *pack, const glow__epilogue *ep) {
  const operands o = {ta, tb, a, b, lda, ldb, 0, 0, 0, c, ldc, ep};
  product_on(isa, &o, m, n, k, accumulate, pack);
}

void glow__sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k,
                 const float *a, int64_t lda, const float *b, int64_t ldb,
                 int accumulate, float *c, int64_t ldc, float *pack) {
  glow__sgemm_on(pack ? glow__gemm_isa_used() : GLOW__GEMM_CBLAS, ta, tb, m, n,
                 k, a, lda, b, ldb, accumulate, c, ldc, pack, NULL);
}

/* ---- Products split between a team ---------------------------------------- */

typedef struct {
  const glow__conv_scratch *cs;
  glow__gemm_isa isa;
  const operands *o;
  int accumulate, by_cols;
  int64_t m, n, k, unit;
  /* The members' packing buffers, each used by one chunk at a time: a
   * member's slot is taken with the chunk (busy[p] = 1) and given back
   * after it. */
  atomic_int busy[GLOW__GEMM_TEAM_MAX];
  int32_t slots;
} split_job;

/* A free packing buffer of j's team, marked busy; its slot in *slot. */
static float *take_pack(split_job *j, int32_t *slot) {
  for (;;)
    for (int32_t p = 0; p < j->slots; p++) {
      int expect = 0;
      if (atomic_compare_exchange_strong(&j->busy[p], &expect, 1)) {
        *slot = p;
        return p == 0 || !j->cs->team_pack ? j->cs->pack : j->cs->team_pack[p];
      }
    }
}

/* Chunk c's columns (by_cols) or rows of C, in whole units of tiles. */
static void split_chunk(void *ctx, int32_t c, int32_t chunks) {
  split_job *j = ctx;
  const operands *o = j->o;
  const int64_t len = j->by_cols ? j->n : j->m;
  int64_t lo, hi;
  glow__part_range((len + j->unit - 1) / j->unit, c, chunks, &lo, &hi);
  lo *= j->unit;
  hi = hi * j->unit < len ? hi * j->unit : len;
  if (lo >= hi)
    return;
  int32_t slot;
  float *pack = take_pack(j, &slot);
  operands part = *o;
  glow__epilogue pe; /* the chunk's columns of the epilogue */
  part.ep = epilogue_from(o->ep, j->by_cols ? lo : 0, &pe);
  if (j->by_cols) {
    if (o->group)
      part.j0 += lo;
    else
      part.b += o->tb ? lo * o->ldb : lo;
    part.c += lo;
    product_on(j->isa, &part, j->m, hi - lo, j->k, j->accumulate, pack);
  } else {
    part.a += o->ta ? lo : lo * o->lda;
    part.c += lo * o->ldc;
    product_on(j->isa, &part, hi - lo, j->n, j->k, j->accumulate, pack);
  }
  atomic_store(&j->busy[slot], 0);
}

/* The largest chunk's share of len split into `chunks` ranges of whole
 * units: 1/chunks at best. */
static double largest_share(int64_t len, int64_t unit, int32_t chunks) {
  const int64_t units = (len + unit - 1) / unit;
  const int64_t most = (units + chunks - 1) / chunks * unit;
  return (double)(most < len ? most : len) / (double)len;
}

/* o's product with cs's packing buffer, split between cs's team as
 * glow__gemm says. */
static void split_product(const glow__conv_scratch *cs, const operands *o,
                          int64_t m, int64_t n, int64_t k, int accumulate) {
  const glow__gemm_isa isa =
      cs->pack ? glow__gemm_isa_used() : GLOW__GEMM_CBLAS;
  int32_t parts = glow__team_size(cs->team);
  const double flops = 2.0 * (double)m * (double)n * (double)k;
  if (parts < 2 || (flops < 1.0e6 && !glow__team_split_all)) {
    product_on(isa, o, m, n, k, accumulate, cs->pack);
    return;
  }
  if (parts > GLOW__GEMM_TEAM_MAX)
    parts = GLOW__GEMM_TEAM_MAX;
  /* Whole register tiles per chunk (the CBLAS: 16 either way).  By rows
   * where op(A) and C, m * (k + n) floats, outweigh op(B), k * n: each
   * member then reads and writes only its own rows, which the next
   * product, split the same way, finds in its own cache (a cifar image's
   * first level: its 3x3 and zero convolutions 20% faster so on two
   * threads), and packs all of op(B).  Otherwise by columns where every
   * member can have a chunk, each packing only its own part of op(B); by
   * rows where op(B) is too narrow for that and rows balance better. */
  const int64_t mr = isa == GLOW__GEMM_AVX512 ? 12 : isa ? 6 : 16;
  const int64_t nr = isa == GLOW__GEMM_AVX512 ? 32 : 16;
  const int32_t want = parts * GLOW__TEAM_CHUNKS;
  const int rows_first = (double)m * (double)(k + n) > (double)k * (double)n &&
                         (m + mr - 1) / mr >= parts;
  const int by_cols =
      !rows_first && ((n + nr - 1) / nr >= parts ||
                      largest_share(n, nr, want) <= largest_share(m, mr, want));
  const int64_t unit = by_cols ? nr : mr;
  const int64_t units = ((by_cols ? n : m) + unit - 1) / unit;
  split_job j = {.cs = cs,
                 .isa = isa,
                 .o = o,
                 .accumulate = accumulate,
                 .by_cols = by_cols,
                 .m = m,
                 .n = n,
                 .k = k,
                 .unit = unit,
                 .slots = parts};
  for (int32_t p = 0; p < parts; p++)
    atomic_init(&j.busy[p], 0);
  glow__team_run(cs->team, split_chunk, &j,
                 (int32_t)(units < want ? units : want));
}

void glow__gemm(const glow__conv_scratch *cs, int ta, int tb, int64_t m,
                int64_t n, int64_t k, const float *a, int64_t lda,
                const float *b, int64_t ldb, int accumulate, float *c,
                int64_t ldc, const glow__epilogue *ep) {
  const operands o = {ta, tb, a, b, lda, ldb, 0, 0, 0, c, ldc, ep};
  split_product(cs, &o, m, n, k, accumulate);
}

void glow__gemm_groups(const glow__conv_scratch *cs, int64_t m, int64_t n,
                       int64_t k, const float *a, int64_t lda, const float *b,
                       int64_t ldb, int64_t group, int64_t gstride, float *c,
                       int64_t ldc) {
  const operands o = {0, 0, a, b, lda, ldb, group, gstride, 0, c, ldc, NULL};
  split_product(cs, &o, m, n, k, 0);
}
