/*
 * kernels.h -- the numeric kernels: matrix products (gemm.c) and the
 * convolutions built on them (conv.c).  They know shapes and buffers, not
 * models or layers.
 */
#ifndef GLOW_KERNELS_H
#define GLOW_KERNELS_H

#include <stdint.h>

#include "core.h"

/* ---- Matrix products (gemm.c) ----------------------------------------------
 * Blocking of libglow's own kernel, the same for its AVX-512 (12 x 32
 * register tiles) and AVX2 (6 x 16) versions: op(A) packed in MC x KC
 * blocks and op(B) in KC x NC blocks.  KC fixes the order of the sums
 * (each element of C adds its products KC at a time, the blocks in order),
 * so both versions give the same bits. */
#define GLOW__GEMM_KC 256
#define GLOW__GEMM_MC 192
#define GLOW__GEMM_NC 2048
/* Floats of packing scratch the own kernel needs, either version: the
 * blocks, and room to start them on a cache line. */
#define GLOW__GEMM_PACK                                                        \
  ((int64_t)GLOW__GEMM_MC * GLOW__GEMM_KC +                                    \
   (int64_t)GLOW__GEMM_KC * GLOW__GEMM_NC + 16)
/* What computes a product: the CBLAS, or a version of the own kernel
 * (ordered: a CPU that runs one runs those before it). */
typedef enum {
  GLOW__GEMM_CBLAS = 0,
  GLOW__GEMM_AVX2 = 1,  /* AVX2 and FMA */
  GLOW__GEMM_AVX512 = 2 /* AVX-512F */
} glow__gemm_isa;
/* 1 if this CPU, and this build, run isa's kernel (always the CBLAS). */
int glow__gemm_runs(glow__gemm_isa isa);
/* The version glow__sgemm's own kernel runs: the best this CPU has,
 * AVX-512F, then AVX2 with FMA, held to AVX2 by GLOW_GEMM_ISA=avx2 in the
 * environment; the CBLAS where neither runs.  Chosen at the first call,
 * the same for the rest of the process. */
glow__gemm_isa glow__gemm_isa_used(void);
/* 1 if the own kernel runs here: glow__gemm_isa_used() is not the CBLAS. */
int glow__gemm_own_available(void);
/* What a product does to each element of its result once the sum is
 * complete: an actnorm, and the ReLU after it, applied to column j as
 *   C = (C + bias[j]) * scale[j],  then C = C > 0 ? C : 0 when relu,
 * in float, the same operations a separate pass over C would do, so the
 * bits are the same; only the pass over memory goes.  bias and scale have
 * n floats.  NULL where a product has none. */
typedef struct {
  const float *bias, *scale;
  int32_t relu;
} glow__epilogue;
/* That pass: y = ep(x) for m rows of n floats, both with row stride ld
 * (x == y allowed).  How a product without the epilogue in its kernel (the
 * CBLAS, the tap path of a convolution) applies it, and the actnorm
 * forward itself, so that fused and separate give the same bits. */
void glow__epilogue_apply(const glow__epilogue *ep, const float *x, float *y,
                          int64_t ld, int64_t m, int64_t n);

/* C (m x n, row stride ldc) = op(A) op(B), or C += op(A) op(B) when
 * accumulate != 0, where op(A) is m x k (A^T if ta; row stride lda of A as
 * stored), op(B) k x n likewise.  With pack (GLOW__GEMM_PACK floats) the
 * own kernel computes it (glow__gemm_isa_used()), else the CBLAS. */
void glow__sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k,
                 const float *a, int64_t lda, const float *b, int64_t ldb,
                 int accumulate, float *c, int64_t ldc, float *pack);
/* The same on isa's kernel, which must run here (glow__gemm_runs); pack
 * as above unless isa is the CBLAS; then ep (or NULL) applied to C, by the
 * own kernel as it stores each tile's complete sums. */
void glow__sgemm_on(glow__gemm_isa isa, int ta, int tb, int64_t m, int64_t n,
                    int64_t k, const float *a, int64_t lda, const float *b,
                    int64_t ldb, int accumulate, float *c, int64_t ldc,
                    float *pack, const glow__epilogue *ep);

/* ---- Convolutions (conv.c) ------------------------------------------------- */

/* Scratch for convolutions and products: `cap` floats of patches or tap
 * outputs (room for at least one image), room for a weight gradient's taps
 * and the GEMM kernel's packing buffer. */
typedef struct {
  float *patches;
  int64_t cap;
  float *weight; /* a 3x3 weight gradient's taps (the tap path) */
  float *pack;   /* GLOW__GEMM_PACK floats for the own GEMM kernel, or NULL:
                    the CBLAS computes the products */
  /* A team that splits each product (NULL: the calling thread alone), and
   * packing buffers for the chunks it runs at once: team_pack[p] for
   * p >= 1 (slot 0 is `pack`), NULL where pack is. */
  glow__team *team;
  float *const *team_pack;
} glow__conv_scratch;

/* Most members of a team whose products glow__gemm splits (the largest
 * GLOW_OPT_THREADS). */
#define GLOW__GEMM_TEAM_MAX 256

/* The product of glow__sgemm with cs's packing buffer, split between the
 * members of cs->team when it has one and the product is large enough:
 * into chunks of whole register tiles of C's columns or rows, each chunk
 * computed by one member with one of the team's packing buffers.
 * Every element of C is then summed by one member in the order one
 * thread sums it, so the result is the same bits as glow__sgemm's.
 * Products of under a million FLOPs (2mnk) run on the calling thread:
 * waking the team costs about as much (unless glow__team_split_all).
 * ep (or NULL) is then applied to C, as by glow__sgemm_on. */
void glow__gemm(const glow__conv_scratch *cs, int ta, int tb, int64_t m,
                int64_t n, int64_t k, const float *a, int64_t lda,
                const float *b, int64_t ldb, int accumulate, float *c,
                int64_t ldc, const glow__epilogue *ep);

/* glow__gemm of A (m x k, row stride lda) and B = [B_0 B_1 ...], n
 * columns in matrices `group` wide (the last one cut at n), B_t at
 * b + t * gstride with row stride ldb, into C (overwritten) without an
 * epilogue: the nine taps of a 3x3 weight (HWIO: group cout, gstride
 * cin * cout, ldb cout) multiplied as one row without rearranging them.
 * On the own kernel, the same sums in the same order as glow__gemm of the
 * row stored as one matrix, so the same bits; the CBLAS gets a product per
 * run of columns in one matrix. */
void glow__gemm_groups(const glow__conv_scratch *cs, int64_t m, int64_t n,
                       int64_t k, const float *a, int64_t lda, const float *b,
                       int64_t ldb, int64_t group, int64_t gstride, float *c,
                       int64_t ldc);

/* y (n*h*w x cout) = conv3x3_same(x) where x has rows of stride ldx >= cin
 * (only the first cin channels are read).  w: [3][3][cin][cout] (HWIO).
 * ep (or NULL): applied to y (see glow__epilogue). */
void glow__conv3x3(const float *x, int64_t ldx, int32_t n, int32_t h, int32_t w,
                   int32_t cin, const float *wt, int32_t cout, float *y,
                   glow__conv_scratch *cs, const glow__epilogue *ep);
/* Floats of patch scratch the conv above needs for one image. */
int64_t glow__conv3x3_col_per_image(int32_t h, int32_t w, int32_t cin);
/* Floats of a 3x3 weight: the scratch its gradients need (cs->weight,
 * and the flipped weight of glow__conv3x3_grad_input). */
static inline int64_t glow__conv3x3_weight_floats(int32_t cin, int32_t cout) {
  return (int64_t)9 * cin * cout;
}

/* y (rows x cout) = x (rows x cin, stride ldx) * w (cin x cout), then ep
 * (or NULL). */
void glow__matmul(const float *x, int64_t ldx, int64_t rows, int32_t cin,
                  const float *wt, int32_t cout, float *y,
                  glow__conv_scratch *cs, const glow__epilogue *ep);

/* Backward of glow__conv3x3 (gy contiguous, n*h*w x cout):
 * gx (n*h*w x cin, contiguous, overwritten) = dL/dx, using wflip (9 * cin *
 * cout floats, not cs->weight) for the flipped weight. */
void glow__conv3x3_grad_input(const float *gy, int32_t n, int32_t h, int32_t w,
                              int32_t cin, const float *wt, int32_t cout,
                              float *gx, float *wflip, glow__conv_scratch *cs);
/* gw ([3][3][cin][cout]) += dL/dW, x with row stride ldx. */
void glow__conv3x3_grad_weight(const float *x, int64_t ldx, int32_t n,
                               int32_t h, int32_t w, int32_t cin,
                               const float *gy, int32_t cout, float *gw,
                               glow__conv_scratch *cs);
/* Backward of glow__matmul: gw (cin x cout) += x^T gy and, when gx is not
 * NULL, gx (rows x cin, overwritten) = gy W^T. */
void glow__matmul_grad(const float *x, int64_t ldx, int64_t rows, int32_t cin,
                       const float *wt, int32_t cout, const float *gy,
                       float *gw, float *gx, glow__conv_scratch *cs);

/* ---- Exponentials (vexp.c) ------------------------------------------------ */

/* For i < n: y[i] = e^x[i], to within an ulp (0 below about -103.9,
 * infinity above 88.72, NaN for NaN); x == y allowed.  Element by
 * element: each value's result depends on that value only, not on n or
 * its position. */
void glow__exp(const float *x, int64_t n, float *y);
/* For i < n: s[i] = sigmoid(v[i]), one_minus[i] = 1 - s[i] and log_s[i] =
 * log s[i], each to within 3 ulp, from one exponential and without
 * overflow for v of any size (NaN gives NaN); element by element, as
 * glow__exp. */
void glow__sigmoid(const float *v, int64_t n, float *s, float *one_minus,
                   float *log_s);
/* The same computed with isa's vectors (the C compiler's baseline where
 * this CPU lacks them, or for the CBLAS): the same bits whatever isa. */
void glow__exp_on(glow__gemm_isa isa, const float *x, int64_t n, float *y);
void glow__sigmoid_on(glow__gemm_isa isa, const float *v, int64_t n, float *s,
                      float *one_minus, float *log_s);

#endif /* GLOW_KERNELS_H */
