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

/* NN(x1) into ws->h, where x1 is the first c/2 channels of ws->z. */
static void network(const glow__coupling *cp, float *P, glow__ws *ws,
                    int32_t h, int32_t w) {
  const int32_t n = ws->n, c = cp->c, hid = cp->hidden;
  const int64_t rows = (int64_t)n * h * w;
  glow__conv3x3(ws->z, c, n, h, w, c / 2, P + cp->w1, hid, ws->a, &ws->col);
  glow__actnorm_forward(&cp->an1, P, ws->a, rows, 1, ws);
  glow__matmul(ws->a, hid, rows, hid, P + cp->w2, hid, ws->b);
  glow__actnorm_forward(&cp->an2, P, ws->b, rows, 1, ws);
  glow__zconv_apply(&cp->out, P, ws->b, hid, h, w, ws->h, ws);
}

static inline float sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

static inline float log_sigmoidf(float v) {
  return v >= 0.0f ? -log1pf(expf(-v)) : v - log1pf(expf(v));
}

void glow__coupling_forward(const glow__coupling *cp, float *P, glow__ws *ws,
                            int32_t h, int32_t w) {
  const int32_t c = cp->c, half = c / 2;
  const int64_t hw = (int64_t)h * w;
  network(cp, P, ws, h, w);
  for (int32_t i = 0; i < ws->n; i++) {
    float *z = ws->z + (int64_t)i * hw * c;
    const float *nn = ws->h + (int64_t)i * hw * (cp->out.cout);
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
        *v = (*v + nn[p * c + 2 * k]) * sigmoidf(raw);
        acc += log_sigmoidf(raw);
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
  /* The network only reads parameters when ws->init is 0. */
  network(cp, (float *)P, ws, h, w);
  for (int32_t i = 0; i < ws->n; i++) {
    float *z = ws->z + (int64_t)i * hw * c;
    const float *nn = ws->h + (int64_t)i * hw * (cp->out.cout);
    for (int64_t p = 0; p < hw; p++)
      for (int32_t k = 0; k < half; k++) {
        float *v = &z[p * c + half + k];
        if (cp->kind == GLOW_COUPLING_ADDITIVE)
          *v -= nn[p * half + k];
        else
          *v = *v / sigmoidf(nn[p * c + 2 * k + 1] + 2.0f) -
               nn[p * c + 2 * k];
      }
  }
}
