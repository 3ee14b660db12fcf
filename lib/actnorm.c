/*
 * actnorm.c -- activation normalisation, y = (x + bias) * exp(logs) per
 * channel, with openai/glow's data-dependent initialisation.
 */
#include <math.h>

#include "glow_internal.h"

/* Set bias and logs so that this batch comes out zero-mean, unit-variance
 * per channel: bias = -mean, logs = log(1 / (std + 1e-6)) with the biased
 * std.  The 1e-6 keeps a constant channel finite.  Statistics in double:
 * the sums run over every pixel of the batch. */
static void actnorm_init(const glow__actnorm *an, float *P, const float *x,
                         int64_t rows, double *acc) {
  const int32_t c = an->c;
  for (int32_t j = 0; j < 2 * c; j++)
    acc[j] = 0.0;
  for (int64_t r = 0; r < rows; r++)
    for (int32_t j = 0; j < c; j++)
      acc[j] += x[r * c + j];
  for (int32_t j = 0; j < c; j++)
    acc[j] /= (double)rows;
  for (int64_t r = 0; r < rows; r++)
    for (int32_t j = 0; j < c; j++) {
      double d = x[r * c + j] - acc[j];
      acc[c + j] += d * d;
    }
  for (int32_t j = 0; j < c; j++) {
    double sd = sqrt(acc[c + j] / (double)rows);
    P[an->bias + j] = (float)-acc[j];
    P[an->logs + j] = (float)log(1.0 / (sd + 1e-6));
  }
}

void glow__actnorm_forward(const glow__actnorm *an, const float *P, float *x,
                           int64_t rows, int relu, glow__ws *ws) {
  /* Data-dependent init writes the parameters through the one writable
   * pointer there is; P, the same buffer, then reads the new values. */
  if (ws->init_params)
    actnorm_init(an, ws->init_params, x, rows, ws->dscr);
  const int32_t c = an->c;
  const float *b = P + an->bias, *s = P + an->logs;
  float *scale = ws->fscr;
  for (int32_t j = 0; j < c; j++)
    scale[j] = expf(s[j]);
  for (int64_t r = 0; r < rows; r++) {
    float *v = x + r * c;
    if (relu) /* fused: one sweep instead of two */
      for (int32_t j = 0; j < c; j++) {
        float y = (v[j] + b[j]) * scale[j];
        v[j] = y > 0.0f ? y : 0.0f;
      }
    else
      for (int32_t j = 0; j < c; j++)
        v[j] = (v[j] + b[j]) * scale[j];
  }
}

void glow__actnorm_inverse(const glow__actnorm *an, const float *P, float *x,
                           int64_t rows, glow__ws *ws) {
  const int32_t c = an->c;
  const float *b = P + an->bias, *s = P + an->logs;
  float *inv = ws->fscr;
  for (int32_t j = 0; j < c; j++)
    inv[j] = expf(-s[j]);
  for (int64_t r = 0; r < rows; r++) {
    float *v = x + r * c;
    for (int32_t j = 0; j < c; j++)
      v[j] = v[j] * inv[j] - b[j];
  }
}

/* log|det| per pixel: sum of logs (the caller multiplies by h*w). */
double glow__actnorm_logdet(const glow__actnorm *an, const float *P) {
  double s = 0.0;
  for (int32_t j = 0; j < an->c; j++)
    s += P[an->logs + j];
  return s;
}

/* Backward, given the layer's output y (after the ReLU when relu != 0):
 * g holds dL/dy on entry and dL/dx on return.  With v = (x + b) e^s:
 *   dL/dv = dL/dy [v > 0 if relu]        (y > 0 exactly where v > 0)
 *   dL/db = e^s sum dL/dv,  dL/ds = sum dL/dv v + ld_weight,
 *   dL/dx = e^s dL/dv,
 * where ld_weight is dL/ds through the log-determinant (rows * h*w *
 * dL/dlogdet for a flow step, 0 inside a coupling network).  Where dL/dv
 * is nonzero, v equals y, so the output alone suffices. */
void glow__actnorm_backward(const glow__actnorm *an, const float *P,
                            float *G, const float *y, float *g, int64_t rows,
                            int relu, double ld_weight, glow__ws *ws) {
  const int32_t c = an->c;
  const float *s = P + an->logs;
  float *restrict scale = ws->fscr, *restrict pg = ws->fscr + c;
  float *restrict pgy = ws->fscr + 2 * c;
  double *sg = ws->dscr, *sgy = ws->dscr + c;
  for (int32_t j = 0; j < c; j++) {
    scale[j] = expf(s[j]);
    sg[j] = 0.0;
    sgy[j] = 0.0;
  }
  /* The sums run over every pixel of the batch: float partial sums over
   * blocks of rows, which vectorise, added up in double. */
  enum { BLOCK = 32 };
  for (int64_t r0 = 0; r0 < rows; r0 += BLOCK) {
    const int64_t r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;
    for (int32_t j = 0; j < c; j++)
      pg[j] = pgy[j] = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
      float *restrict gv = g + r * c;
      const float *restrict yv = y + r * c;
      for (int32_t j = 0; j < c; j++) {
        const float gj = relu && !(yv[j] > 0.0f) ? 0.0f : gv[j];
        pg[j] += gj;
        pgy[j] += gj * yv[j];
        gv[j] = gj * scale[j];
      }
    }
    for (int32_t j = 0; j < c; j++) {
      sg[j] += pg[j];
      sgy[j] += pgy[j];
    }
  }
  for (int32_t j = 0; j < c; j++) {
    G[an->bias + j] += (float)(scale[j] * sg[j]);
    G[an->logs + j] += (float)(sgy[j] + ld_weight);
  }
}
