/*
 * conv.c -- the numeric kernels: convolutions as large GEMMs.
 *
 * A 3x3 "same" convolution over NHWC data is im2col followed by one
 * matrix product (glow__gemm) per chunk of images: rows are pixels of the
 * chunk, columns the 9*cin taps, so the GEMM is as large as the scratch
 * buffer allows.
 */
#include <string.h>

#include "kernels.h"

int64_t glow__conv3x3_col_per_image(int32_t h, int32_t w, int32_t cin) {
  return (int64_t)h * w * 9 * cin;
}

/* Patch matrix of one image: row (y, x) holds the 3x3 neighbourhood, tap
 * (ky, kx) at columns [(ky*3 + kx)*cin, +cin), zeros outside the image. */
static inline GLOW__ALWAYS_INLINE void im2col_image(const float *x, int64_t ldx,
                                                    int32_t h, int32_t w,
                                                    int32_t cin, float *col) {
  const int64_t k = 9 * (int64_t)cin;
  for (int32_t y = 0; y < h; y++) {
    for (int32_t xx = 0; xx < w; xx++) {
      float *row = col + ((int64_t)y * w + xx) * k;
      for (int32_t ky = 0; ky < 3; ky++) {
        int32_t sy = y + ky - 1;
        for (int32_t kx = 0; kx < 3; kx++) {
          int32_t sx = xx + kx - 1;
          float *dst = row + (ky * 3 + kx) * (int64_t)cin;
          if (sy < 0 || sy >= h || sx < 0 || sx >= w)
            memset(dst, 0, sizeof(float) * (size_t)cin);
          else
            memcpy(dst, x + ((int64_t)sy * w + sx) * ldx,
                   sizeof(float) * (size_t)cin);
        }
      }
    }
  }
}

/* A coupling's first convolution reads few channels (c/2), where a call
 * to memcpy per tap costs more than the copy: with cin a constant, the
 * compiler inlines the copies. */
static void im2col(const float *x, int64_t ldx, int32_t h, int32_t w,
                   int32_t cin, float *col) {
  switch (cin) {
  case 1: im2col_image(x, ldx, h, w, 1, col); break;
  case 2: im2col_image(x, ldx, h, w, 2, col); break;
  case 3: im2col_image(x, ldx, h, w, 3, col); break;
  case 4: im2col_image(x, ldx, h, w, 4, col); break;
  case 6: im2col_image(x, ldx, h, w, 6, col); break;
  case 8: im2col_image(x, ldx, h, w, 8, col); break;
  case 12: im2col_image(x, ldx, h, w, 12, col); break;
  case 16: im2col_image(x, ldx, h, w, 16, col); break;
  default: im2col_image(x, ldx, h, w, cin, col); break;
  }
}

/* Pixels [q0, q1) of y (h x w x cout) of one image = the sum of the nine
 * taps' outputs z (h x w x 9*cout, tap t at columns [t*cout, +cout)),
 * each shifted by its offset, zero outside the image, in tap order; then
 * ep (or NULL) on each pixel's sums, the operations of
 * glow__epilogue_apply while they are at hand. */
static inline GLOW__ALWAYS_INLINE void
sum_taps_image(const float *z, int32_t h, int32_t w, int32_t cout, float *y,
               int64_t q0, int64_t q1, const glow__epilogue *ep) {
  const int32_t nt = 9 * cout;
  int32_t yy = (int32_t)(q0 / w), xx = (int32_t)(q0 % w);
  for (int64_t q = q0; q < q1; q++) {
    float *out = y + q * cout;
    for (int32_t co = 0; co < cout; co++)
      out[co] = 0.0f;
    if (yy > 0 && yy < h - 1 && xx > 0 && xx < w - 1) {
      /* Inside the image: all nine taps, no tests. */
      const float *at = z + ((int64_t)(yy - 1) * w + (xx - 1)) * nt;
      for (int32_t ky = 0; ky < 3; ky++)
        for (int32_t kx = 0; kx < 3; kx++) {
          const float *src =
              at + ((int64_t)ky * w + kx) * nt + (ky * 3 + kx) * cout;
          for (int32_t co = 0; co < cout; co++)
            out[co] += src[co];
        }
    } else {
      for (int32_t ky = 0; ky < 3; ky++) {
        int32_t sy = yy + ky - 1;
        if (sy < 0 || sy >= h)
          continue;
        for (int32_t kx = 0; kx < 3; kx++) {
          int32_t sx = xx + kx - 1;
          if (sx < 0 || sx >= w)
            continue;
          const float *src =
              z + ((int64_t)sy * w + sx) * nt + (ky * 3 + kx) * cout;
          for (int32_t co = 0; co < cout; co++)
            out[co] += src[co];
        }
      }
    }
    if (ep)
      for (int32_t co = 0; co < cout; co++) {
        const float t = (out[co] + ep->bias[co]) * ep->scale[co];
        out[co] = ep->relu && !(t > 0.0f) ? 0.0f : t;
      }
    if (++xx == w) { /* the next pixel starts a row */
      xx = 0;
      yy++;
    }
  }
}

/* With cout a constant the compiler unrolls the few channels of the
 * couplings' usual shapes; a loop of cout = 2..12 iterations would not
 * vectorise. */
static void sum_taps(const float *z, int32_t h, int32_t w, int32_t cout,
                     float *y, int64_t q0, int64_t q1,
                     const glow__epilogue *ep) {
  switch (cout) {
  case 2: sum_taps_image(z, h, w, 2, y, q0, q1, ep); break;
  case 3: sum_taps_image(z, h, w, 3, y, q0, q1, ep); break;
  case 4: sum_taps_image(z, h, w, 4, y, q0, q1, ep); break;
  case 6: sum_taps_image(z, h, w, 6, y, q0, q1, ep); break;
  case 8: sum_taps_image(z, h, w, 8, y, q0, q1, ep); break;
  case 12: sum_taps_image(z, h, w, 12, y, q0, q1, ep); break;
  case 16: sum_taps_image(z, h, w, 16, y, q0, q1, ep); break;
  default: sum_taps_image(z, h, w, cout, y, q0, q1, ep); break;
  }
}

/* Pixels [lo, hi) of a chunk of images: their tap sums, then ep. */
typedef struct {
  const float *z;
  int32_t h, w, cout;
  float *y;
  const glow__epilogue *ep;
} taps_job;

static void sum_taps_rows(void *ctx, int64_t lo, int64_t hi) {
  const taps_job *j = ctx;
  const int64_t hw = (int64_t)j->h * j->w;
  for (int64_t r = lo; r < hi;) {
    const int64_t i = r / hw, q0 = r - i * hw;
    const int64_t q1 = hi - i * hw < hw ? hi - i * hw : hw;
    /* y's sums end here, not in the product: ep is applied here too */
    sum_taps(j->z + i * hw * 9 * j->cout, j->h, j->w, j->cout,
             j->y + i * hw * j->cout, q0, q1, j->ep);
    r += q1 - q0;
  }
}

/* Few output channels (the coupling's last conv, hidden -> c, and its
 * first when hidden < c/2): the patch matrix would be 9*cin wide for a GEMM
 * only cout wide.  Instead one GEMM computes every tap's contribution,
 * Z = X [W_00 .. W_22] (9*cout wide), and a cheap pass sums the nine
 * shifted taps into y.  The weight is read as it lies: wr NULL, the HWIO
 * weight wt, whose taps are the cin x cout matrices of that row
 * (glow__gemm_groups), or wr in that row's layout, wr[ci][t*cout + co] =
 * W[t][ci][co].  Reading wt in place spares a pass that rearranged it on
 * every call, which on two threads cost more than it saved: each thread
 * read lines of wr the other had written, and the cores share no cache. */
static void conv3x3_taps(const float *x, int64_t ldx, int32_t nb, int32_t h,
                         int32_t w, int32_t cin, const float *wt,
                         const float *wr, int32_t cout, float *y,
                         glow__conv_scratch *cs, const glow__epilogue *ep) {
  const int32_t nt = 9 * cout;
  const int64_t hw = (int64_t)h * w;
  float *z = cs->patches;
  if (wr)
    glow__gemm(cs, 0, 0, nb * hw, nt, cin, x, ldx, wr, nt, 0, z, nt, NULL);
  else
    glow__gemm_groups(cs, nb * hw, nt, cin, x, ldx, wt, cout, cout,
                      (int64_t)cin * cout, z, nt);
  /* Pixels are independent: a team splits them, each member mostly
   * summing taps of the rows its part of the product wrote. */
  taps_job job = {z, h, w, cout, y, ep};
  glow__team_for(cs->team, nb * hw, 512 / cout + 1, sum_taps_rows, &job);
}

/* The convolution: the patch-matrix path reads the HWIO weight wt, the
 * tap path (cout < cin) wt or wr as conv3x3_taps says. */
static void conv3x3_run(const float *x, int64_t ldx, int32_t n, int32_t h,
                        int32_t w, int32_t cin, const float *wt,
                        const float *wr, int32_t cout, float *y,
                        glow__conv_scratch *cs, const glow__epilogue *ep) {
  const int64_t hw = (int64_t)h * w;
  const int taps = cout < cin;
  /* Scratch per image: the patch matrix, or the tap outputs. */
  const int64_t per =
      taps ? hw * 9 * cout : glow__conv3x3_col_per_image(h, w, cin);
  int32_t chunk = (int32_t)(cs->cap / per);
  if (chunk < 1)
    chunk = 1; /* the workspace guarantees room for one image */
  for (int32_t i0 = 0; i0 < n; i0 += chunk) {
    int32_t nb = n - i0 < chunk ? n - i0 : chunk;
    const float *xb = x + (int64_t)i0 * hw * ldx;
    float *yb = y + (int64_t)i0 * hw * cout;
    if (taps) {
      conv3x3_taps(xb, ldx, nb, h, w, cin, wt, wr, cout, yb, cs, ep);
      continue;
    }
    for (int32_t i = 0; i < nb; i++)
      im2col(xb + (int64_t)i * hw * ldx, ldx, h, w, cin,
             cs->patches + (int64_t)i * per);
    glow__gemm(cs, 0, 0, nb * hw, cout, 9 * cin, cs->patches, 9 * cin, wt, cout,
               0, yb, cout, ep);
  }
}

void glow__conv3x3(const float *x, int64_t ldx, int32_t n, int32_t h, int32_t w,
                   int32_t cin, const float *wt, int32_t cout, float *y,
                   glow__conv_scratch *cs, const glow__epilogue *ep) {
  conv3x3_run(x, ldx, n, h, w, cin, wt, NULL, cout, y, cs, ep);
}

void glow__matmul(const float *x, int64_t ldx, int64_t rows, int32_t cin,
                  const float *wt, int32_t cout, float *y,
                  glow__conv_scratch *cs, const glow__epilogue *ep) {
  glow__gemm(cs, 0, 0, rows, cout, cin, x, ldx, wt, cout, 0, y, cout, ep);
}

/* ---- Backward ------------------------------------------------------------
 *
 * For y = conv3x3_same(x, W), W[t][ci][co] with tap t = ky*3 + kx reading
 * x at offset (ky-1, kx-1):
 *   dL/dx = conv3x3_same(dL/dy, W') with W'[t][co][ci] = W[8-t][ci][co],
 *           because the tap opposite t reads the offset -(ky-1, kx-1);
 *   dL/dW[t][ci][co] = sum over pixels p of x[p + off_t][ci] dL/dy[p][co].
 * Both are large GEMMs over the whole batch; each works on the patch matrix
 * of the narrower of its two operands, as the forward convolution does. */

void glow__conv3x3_grad_input(const float *gy, int32_t n, int32_t h, int32_t w,
                              int32_t cin, const float *wt, int32_t cout,
                              float *gx, float *wflip, glow__conv_scratch *cs) {
  /* A conv from cout channels to cin, with W' in the layout of the path
   * it takes, built in one pass from W. */
  if (cin < cout) /* taps: wflip[co][t*cin + ci] = W'[t][co][ci] */
    for (int32_t co = 0; co < cout; co++) {
      float *dst = wflip + (int64_t)co * 9 * cin;
      for (int32_t t = 0; t < 9; t++)
        for (int32_t ci = 0; ci < cin; ci++)
          dst[t * cin + ci] = wt[((int64_t)(8 - t) * cin + ci) * cout + co];
    }
  else /* patch matrix: wflip[t][co][ci] = W' (HWIO) */
    for (int32_t t = 0; t < 9; t++)
      for (int32_t ci = 0; ci < cin; ci++)
        for (int32_t co = 0; co < cout; co++)
          wflip[((int64_t)t * cout + co) * cin + ci] =
              wt[((int64_t)(8 - t) * cin + ci) * cout + co];
  conv3x3_run(gy, cout, n, h, w, cout, wflip, wflip, cin, gx, cs, NULL);
}

void glow__conv3x3_grad_weight(const float *x, int64_t ldx, int32_t n,
                               int32_t h, int32_t w, int32_t cin,
                               const float *gy, int32_t cout, float *gw,
                               glow__conv_scratch *cs) {
  const int64_t hw = (int64_t)h * w;
  /* Narrow output (the coupling's last conv): patches of gy, 9*cout wide,
   * instead of patches of x, 9*cin wide.  With S = patches(gy) the product
   * S^T x holds, at [t*cout + co][ci], sum_p gy[p + off_t][co] x[p][ci],
   * which is dL/dW at the opposite tap 8-t.  S^T x rather than x^T S: the
   * register tiles are 12 rows by 32 columns, and 9*cout (36 or 72 for a
   * fashion-sized coupling) fills rows of 12 where as columns it would
   * leave a part-filled panel (36 = 32 + 4); the same products summed in
   * the same order, so the same bits, at 1.3 to 1.6 times the rate. */
  const int taps = cout < cin;
  const int64_t per = glow__conv3x3_col_per_image(h, w, taps ? cout : cin);
  int32_t chunk = (int32_t)(cs->cap / per);
  if (chunk < 1)
    chunk = 1;
  const int32_t nt = 9 * cout;
  for (int32_t i0 = 0; i0 < n; i0 += chunk) {
    const int32_t nb = n - i0 < chunk ? n - i0 : chunk;
    const float *xb = x + (int64_t)i0 * hw * ldx;
    const float *gb = gy + (int64_t)i0 * hw * cout;
    if (taps) {
      for (int32_t i = 0; i < nb; i++)
        im2col(gb + (int64_t)i * hw * cout, cout, h, w, cout,
               cs->patches + (int64_t)i * per);
      glow__gemm(cs, 1, 0, nt, cin, nb * hw, cs->patches, nt, xb, ldx, i0 > 0,
                 cs->weight, cin, NULL);
    } else {
      for (int32_t i = 0; i < nb; i++)
        im2col(xb + (int64_t)i * hw * ldx, ldx, h, w, cin,
               cs->patches + (int64_t)i * per);
      glow__gemm(cs, 1, 0, 9 * cin, cout, nb * hw, cs->patches, 9 * cin, gb,
                 cout, 1, gw, cout, NULL);
    }
  }
  if (taps) /* [t][co][ci] -> gw[8-t][ci][co] */
    for (int32_t t = 0; t < 9; t++)
      for (int32_t co = 0; co < cout; co++) {
        const float *src = cs->weight + ((int64_t)t * cout + co) * cin;
        float *dst = gw + (int64_t)(8 - t) * cin * cout + co;
        for (int32_t ci = 0; ci < cin; ci++)
          dst[ci * cout] += src[ci];
      }
}

void glow__matmul_grad(const float *x, int64_t ldx, int64_t rows, int32_t cin,
                       const float *wt, int32_t cout, const float *gy,
                       float *gw, float *gx, glow__conv_scratch *cs) {
  /* dL/dW += x^T gy, dL/dx = gy W^T. */
  glow__gemm(cs, 1, 0, cin, cout, rows, x, ldx, gy, cout, 1, gw, cout, NULL);
  if (gx)
    glow__gemm(cs, 0, 1, rows, cin, cout, gy, cout, wt, cout, 0, gx, cin, NULL);
}
