/*
 * coupling.c -- affine and additive coupling layers and their network.
 *
 * The first half of the channels (x1) passes through unchanged and drives a
 * small convolutional network NN(x1); the second half is transformed:
 *   affine:   y2 = (x2 + shift) * sigmoid(raw + 2), NN output (shift, raw)
 *             interleaved along channels, as in openai/glow;
 *   additive: y2 = x2 + NN(x1).
 * NN = conv3x3 -> actnorm -> ReLU -> conv1x1 -> actnorm -> ReLU -> zconv.
 */
#include <math.h>

#include "glow_internal.h"

void glow__zconv_apply(const glow__zconv *zc, const float *P, const float *x,
                       int64_t ldx, int32_t h, int32_t w, float *y,
                       glow__ws *ws) {
  const int32_t co = zc->cout, n = ws->n;
  glow__conv3x3(x, ldx, n, h, w, zc->cin, P + zc->weight, co, y, &ws->col);
  const float *b = P + zc->bias, *s = P + zc->logs;
  float *scale = ws->fscr;
  for (int32_t j = 0; j < co; j++)
    scale[j] = expf(GLOW__ZCONV_LOGSCALE * s[j]);
  const int64_t rows = (int64_t)n * h * w;
  for (int64_t r = 0; r < rows; r++) {
    float *v = y + r * co;
    for (int32_t j = 0; j < co; j++)
      v[j] = (v[j] + b[j]) * scale[j];
  }
}

/* NN(x1), where x1 is the first c/2 channels of ws->z: the hidden
 * activations into ws->a and ws->b, the output into ws->h, or all three
 * into ws->keep when the store-mode training forward keeps them.  Returns
 * the output. */
static const float *network(const glow__coupling *cp, const float *P,
                           glow__ws *ws, int32_t h, int32_t w) {
  const int32_t n = ws->n, c = cp->c, hid = cp->hidden;
  const int64_t rows = (int64_t)n * h * w;
  float *a = ws->keep ? ws->keep->r1 : ws->a;
  float *b = ws->keep ? ws->keep->r2 : ws->b;
  float *out = ws->keep ? ws->keep->nn : ws->h;
  glow__conv3x3(ws->z, c, n, h, w, c / 2, P + cp->w1, hid, a, &ws->col);
  glow__actnorm_forward(&cp->an1, P, a, rows, 1, ws);
  glow__matmul(a, hid, rows, hid, P + cp->w2, hid, b, &ws->col);
  glow__actnorm_forward(&cp->an2, P, b, rows, 1, ws);
  glow__zconv_apply(&cp->out, P, b, hid, h, w, out, ws);
  return out;
}

/* The affine coupling's scale s = sigmoid(v), with 1 - s and e = e^{-|v|}
 * (so that log s = min(v, 0) - log1p(e)), from one exp.  With e <= 1,
 * s and 1 - s are 1 / (1 + e) and e / (1 + e), in the order of v's sign:
 * each has full precision, where 1.0f - s would cancel for large v, and
 * nothing overflows for v of any size. */
typedef struct {
  float s, one_minus, e;
} sigmoid_parts;

static inline sigmoid_parts sigmoid3(float v) {
  const float e = expf(-fabsf(v));
  const float r = 1.0f / (1.0f + e); /* sigmoid(|v|) */
  sigmoid_parts q;
  q.e = e;
  q.s = v >= 0.0f ? r : e * r;
  q.one_minus = v >= 0.0f ? e * r : r;
  return q;
}

void glow__coupling_forward(const glow__coupling *cp, const float *P,
                            glow__ws *ws, int32_t h, int32_t w) {
  const int32_t c = cp->c, half = c / 2;
  const int64_t hw = (int64_t)h * w;
  const float *out = network(cp, P, ws, h, w);
  for (int32_t i = 0; i < ws->n; i++) {
    float *z = ws->z + (int64_t)i * hw * c;
    const float *nn = out + (int64_t)i * hw * (cp->out.cout);
    if (cp->kind == GLOW_COUPLING_ADDITIVE) {
      for (int64_t p = 0; p < hw; p++)
        for (int32_t k = 0; k < half; k++)
          z[p * c + half + k] += nn[p * half + k];
      continue;
    }
    double ld = 0.0;
    for (int64_t p = 0; p < hw; p++) {
      float acc = 0.0f; /* one pixel's few terms; summed in double below */
      for (int32_t k = 0; k < half; k++) {
        float raw = nn[p * c + 2 * k + 1] + 2.0f;
        float *v = &z[p * c + half + k];
        sigmoid_parts q = sigmoid3(raw);
        *v = (*v + nn[p * c + 2 * k]) * q.s;
        acc += (raw < 0.0f ? raw : 0.0f) - log1pf(q.e); /* log s */
      }
      ld += acc;
    }
    ws->ld[i] += ld;
  }
}

void glow__coupling_inverse(const glow__coupling *cp, const float *P,
                            glow__ws *ws, int32_t h, int32_t w) {
  const int32_t c = cp->c, half = c / 2;
  const int64_t hw = (int64_t)h * w;
  const float *out = network(cp, P, ws, h, w);
  for (int32_t i = 0; i < ws->n; i++) {
    float *z = ws->z + (int64_t)i * hw * c;
    const float *nn = out + (int64_t)i * hw * (cp->out.cout);
    for (int64_t p = 0; p < hw; p++)
      for (int32_t k = 0; k < half; k++) {
        float *v = &z[p * c + half + k];
        if (cp->kind == GLOW_COUPLING_ADDITIVE)
          *v -= nn[p * half + k];
        else
          *v = *v / sigmoid3(nn[p * c + 2 * k + 1] + 2.0f).s -
               nn[p * c + 2 * k];
      }
  }
}

/* Backward of y = (conv(x) + bias) e^{3 logs}, given the input x (row
 * stride ldx) and the output y.  g holds dL/dy and is overwritten; gx
 * (rows x cin, contiguous) receives dL/dx. */
void glow__zconv_backward(const glow__zconv *zc, const float *P, float *G,
                          const float *x, int64_t ldx, const float *y,
                          float *g, float *gx, int32_t h, int32_t w,
                          glow__ws *ws) {
  const int32_t co = zc->cout, n = ws->n;
  const int64_t rows = (int64_t)n * h * w;
  const float *s = P + zc->logs;
  float *scale = ws->fscr;
  double *sg = ws->dscr, *sgy = ws->dscr + co;
  for (int32_t j = 0; j < co; j++) {
    scale[j] = expf(GLOW__ZCONV_LOGSCALE * s[j]);
    sg[j] = 0.0;
    sgy[j] = 0.0;
  }
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
                            &ws->col);
  glow__conv3x3_grad_input(g, n, h, w, zc->cin, P + zc->weight, co, gx,
                           ws->wflip, &ws->col);
}

/* Backward of the coupling, given its input x (rows x c) and its network's
 * activations on x1 (r1, r2 after each actnorm and ReLU, output nn).  g
 * holds dL/dy on entry and dL/dx on return.  Parameter gradients are added
 * to G; ws->gld is dL/dlogdet of each image.  Affine, per element with
 * s = sigmoid(raw + 2), y2 = (x2 + shift) s, logdet += log s:
 *   dL/dx2 = dL/dshift = dL/dy2 s,
 *   dL/draw = (1 - s) (dL/dy2 y2 + dL/dlogdet),
 * since ds/draw = s (1 - s) and d log s / draw = 1 - s.  x1 passes through
 * and also feeds the network, so dL/dx1 = dL/dy1 + the network's
 * backward. */
void glow__coupling_backward(const glow__coupling *cp, const float *P,
                             float *G, const float *x, const float *r1,
                             const float *r2, const float *nn, float *g,
                             int32_t h, int32_t w, glow__ws *ws) {
  const int32_t c = cp->c, half = c / 2, hid = cp->hidden, n = ws->n;
  const int32_t co = cp->out.cout;
  const int64_t rows = (int64_t)n * h * w;
  const float gld = ws->gld;
  float *gnn = ws->gh;
  for (int64_t r = 0; r < rows; r++) {
    float *gv = g + r * c + half;
    const float *xv = x + r * c + half, *o = nn + r * co;
    float *gn = gnn + r * co;
    if (cp->kind == GLOW_COUPLING_ADDITIVE) {
      for (int32_t k = 0; k < half; k++)
        gn[k] = gv[k];
      continue;
    }
    for (int32_t k = 0; k < half; k++) {
      sigmoid_parts q = sigmoid3(o[2 * k + 1] + 2.0f);
      float y2 = (xv[k] + o[2 * k]) * q.s;
      float gy = gv[k];
      gv[k] = gy * q.s;
      gn[2 * k] = gy * q.s;
      gn[2 * k + 1] = q.one_minus * (gy * y2 + gld);
    }
  }
  /* The network backwards: zconv, actnorm2+ReLU, conv1x1, actnorm1+ReLU,
   * conv3x3, with dL/d(activations) in ws->ga and ws->gb. */
  glow__zconv_backward(&cp->out, P, G, r2, hid, nn, gnn, ws->ga, h, w, ws);
  glow__actnorm_backward(&cp->an2, P, G, r2, ws->ga, rows, 1, 0.0, ws);
  glow__matmul_grad(r1, hid, rows, hid, P + cp->w2, hid, ws->ga, G + cp->w2,
                    ws->gb, &ws->col);
  glow__actnorm_backward(&cp->an1, P, G, r1, ws->gb, rows, 1, 0.0, ws);
  glow__conv3x3_grad_weight(x, c, n, h, w, half, ws->gb, hid, G + cp->w1,
                            &ws->col);
  glow__conv3x3_grad_input(ws->gb, n, h, w, half, P + cp->w1, hid, ws->ga,
                           ws->wflip, &ws->col);
  for (int64_t r = 0; r < rows; r++) {
    float *gv = g + r * c;
    const float *gi = ws->ga + r * half;
    for (int32_t k = 0; k < half; k++)
      gv[k] += gi[k];
  }
}
