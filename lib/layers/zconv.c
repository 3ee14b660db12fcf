/*
 * zconv.c -- the zero-initialised 3x3 convolution with bias and output
 * scale, y = (conv(x, w) + bias) * exp(3 * logs): the last layer of every
 * coupling network and the network of every split prior (openai/glow's
 * conv2d_zeros).  Starting at zero makes each coupling start as the
 * identity and each prior as N(0, 1).
 */
#include <math.h>
#include <stdio.h>

#include "layer.h"

void glow__zconv_register(glow__zconv *zc, glow__registry *r,
                          const char *prefix, const char *name, int32_t cin,
                          int32_t cout) {
  char sub[GLOW__NAME_MAX];
  zc->cin = cin;
  zc->cout = cout;
  snprintf(sub, sizeof sub, "%s.weight", name);
  zc->weight =
      glow__reg_tensor(r, prefix, sub, 4, (const int32_t[]){3, 3, cin, cout});
  snprintf(sub, sizeof sub, "%s.bias", name);
  zc->bias = glow__reg_tensor(r, prefix, sub, 1, (const int32_t[]){cout});
  snprintf(sub, sizeof sub, "%s.logs", name);
  zc->logs = glow__reg_tensor(r, prefix, sub, 1, (const int32_t[]){cout});
}

void glow__zconv_forward(const glow__zconv *zc, const float *P, const float *x,
                         int64_t ldx, int32_t n, int32_t h, int32_t w, float *y,
                         glow__scratch *s) {
  const int32_t co = zc->cout;
  const float *ls = P + zc->logs;
  float *scale = s->chan_f;
  for (int32_t j = 0; j < co; j++)
    scale[j] = GLOW__ZCONV_LOGSCALE * ls[j];
  glow__exp(scale, co, scale);
  /* (conv + bias) * scale is the products' epilogue (glow__epilogue), so
   * the convolution applies it: the same operations a pass after it would
   * make, and the same bits. */
  const glow__epilogue ep = {P + zc->bias, scale, 0};
  glow__conv3x3(x, ldx, n, h, w, zc->cin, P + zc->weight, co, y, &s->conv, &ep);
}

/* Backward of y = (conv(x) + bias) e^{3 logs}, given the input x (row
 * stride ldx) and the output y.  g holds dL/dy and is overwritten; gx
 * (rows x cin, contiguous) receives dL/dx. */
void glow__zconv_backward(const glow__zconv *zc, const float *P, float *G,
                          const float *x, int64_t ldx, const float *y, float *g,
                          float *gx, int32_t n, int32_t h, int32_t w,
                          glow__scratch *s) {
  const int32_t co = zc->cout;
  const int64_t rows = (int64_t)n * h * w;
  const float *ls = P + zc->logs;
  float *scale = s->chan_f;
  double *sg = s->chan_d, *sgy = s->chan_d + co;
  for (int32_t j = 0; j < co; j++) {
    scale[j] = GLOW__ZCONV_LOGSCALE * ls[j];
    sg[j] = 0.0;
    sgy[j] = 0.0;
  }
  glow__exp(scale, co, scale);
  /* dL/dlogs = 3 sum g y; dL/du = g e^{3 logs} for u = conv + bias. */
  for (int64_t r = 0; r < rows; r++) {
    float *gv = g + r * co;
    const float *yv = y + r * co;
    for (int32_t j = 0; j < co; j++) {
      sgy[j] += (double)gv[j] * yv[j];
      gv[j] *= scale[j];
      sg[j] += gv[j];
    }
  }
  for (int32_t j = 0; j < co; j++) {
    G[zc->bias + j] += (float)sg[j];
    G[zc->logs + j] += (float)(GLOW__ZCONV_LOGSCALE * sgy[j]);
  }
  glow__conv3x3_grad_weight(x, ldx, n, h, w, zc->cin, g, co, G + zc->weight,
                            &s->conv);
  glow__conv3x3_grad_input(g, n, h, w, zc->cin, P + zc->weight, co, gx,
                           s->wflip, &s->conv);
}
