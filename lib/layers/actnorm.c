/*
 * actnorm.c -- activation normalisation, y = (x + bias) * exp(logs) per
 * channel, with openai/glow's data-dependent initialisation: a flow step's
 * first layer, and a building block of the coupling networks.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layer.h"

void glow__an_register(glow__an *an, glow__registry *r, const char *prefix,
                       const char *name, int32_t c) {
  char sub[GLOW__NAME_MAX];
  an->c = c;
  snprintf(sub, sizeof sub, "%s.bias", name);
  an->bias = glow__reg_tensor(r, prefix, sub, 1, (const int32_t[]){c});
  snprintf(sub, sizeof sub, "%s.logs", name);
  an->logs = glow__reg_tensor(r, prefix, sub, 1, (const int32_t[]){c});
}

/* Set bias and logs so that this batch comes out zero-mean, unit-variance
 * per channel: bias = -mean, logs = log(1 / (std + 1e-6)) with the biased
 * std.  The 1e-6 keeps a constant channel finite.  Statistics in double:
 * the sums run over every pixel of the batch. */
static void actnorm_init(const glow__an *an, float *P, const float *x,
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

/* The layer as the operation glow__epilogue describes: bias, and
 * exp(logs) into s->chan_f. */
static glow__epilogue an_epilogue(const glow__an *an, const float *P, int relu,
                                  glow__scratch *s) {
  float *scale = s->chan_f;
  glow__exp(P + an->logs, an->c, scale);
  return (glow__epilogue){P + an->bias, scale, relu};
}

typedef struct {
  glow__epilogue ep;
  const float *x;
  float *y;
  int32_t c;
} an_rows;

/* Rows [lo, hi) of the actnorm (and ReLU) forward: the pass a product's
 * epilogue would make, so that both give the same bits. */
static void an_forward_rows(void *ctx, int64_t lo, int64_t hi) {
  const an_rows *j = ctx;
  glow__epilogue_apply(&j->ep, j->x + lo * j->c, j->y + lo * j->c, j->c,
                       hi - lo, j->c);
}

void glow__an_forward(const glow__an *an, const float *P, float *init,
                      const float *x, float *y, int64_t rows, int relu,
                      glow__scratch *s) {
  /* Data-dependent init writes the parameters through the one writable
   * pointer there is; P, the same buffer, then reads the new values. */
  if (init)
    actnorm_init(an, init, x, rows, s->chan_d);
  const int32_t c = an->c;
  an_rows job = {an_epilogue(an, P, relu, s), x, y, c};
  /* Rows are independent: a team (a batch smaller than the threads)
   * splits them. */
  glow__team_for(s->conv.team, rows, 16384 / c + 1, an_forward_rows, &job);
}

const glow__epilogue *glow__an_epilogue(const glow__an *an, const float *P,
                                        const float *init, int relu,
                                        glow__scratch *s, glow__epilogue *ep) {
  if (init)
    return NULL;
  *ep = an_epilogue(an, P, relu, s);
  return ep;
}

/* Backward, given the layer's output y (after the ReLU when relu != 0).
 * With v = (x + b) e^s:
 *   dL/dv = dL/dy [v > 0 if relu]        (y > 0 exactly where v > 0)
 *   dL/db = e^s sum dL/dv,  dL/ds = sum dL/dv v + ld_weight,
 *   dL/dx = e^s dL/dv,
 * where ld_weight is dL/ds through the log-determinant (rows * h*w *
 * dL/dlogdet for a flow step, 0 inside a coupling network).  Where dL/dv
 * is nonzero, v equals y, so the output alone suffices. */
void glow__an_backward(const glow__an *an, const float *P, float *G,
                       const float *y, const float *gy, float *gx, int64_t rows,
                       int relu, double ld_weight, glow__scratch *s) {
  const int32_t c = an->c;
  const float *ls = P + an->logs;
  float *restrict scale = s->chan_f, *restrict pg = s->chan_f + c;
  float *restrict pgy = s->chan_f + 2 * c;
  double *sg = s->chan_d, *sgy = s->chan_d + c;
  glow__exp(ls, c, scale);
  for (int32_t j = 0; j < c; j++) {
    sg[j] = 0.0;
    sgy[j] = 0.0;
  }
  /* In place on gx: the loop below then reads and writes one buffer, which
   * the compiler vectorises (a conditional read of a second one it does
   * not). */
  if (gx != gy)
    memcpy(gx, gy, sizeof(float) * (size_t)(rows * c));
  /* The sums run over every pixel of the batch: float partial sums over
   * blocks of rows, which vectorise, added up in double. */
  enum { BLOCK = 32 };
  for (int64_t r0 = 0; r0 < rows; r0 += BLOCK) {
    const int64_t r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;
    for (int32_t j = 0; j < c; j++)
      pg[j] = pgy[j] = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
      float *restrict gv = gx + r * c;
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

/* ---- The flow layer ----------------------------------------------------------
 * A step's actnorm: its log-determinant is h*w*sum(logs) for every image,
 * and its backward reads only its output. */

static void build(glow__layer *ly, const glow_config *cfg, glow__registry *r) {
  (void)cfg;
  ly->out = ly->in;
  glow__an tmp, *an = ly->self ? ly->self : &tmp;
  glow__an_register(an, r, ly->prefix, "actnorm", ly->in.c);
}

static void needs(const glow__layer *ly, glow__needs *nd) {
  nd->chan = ly->in.c;
}

static int forward(const glow__layer *ly, const glow__pass *p, const float *x,
                   float *y, float *keep, glow__handoff *left) {
  (void)keep;
  const glow__an *an = ly->self;
  const int64_t hw = (int64_t)ly->in.h * ly->in.w;
  glow__an_forward(an, p->P, p->init, x, y, glow__rows(&ly->in, p->n), 0, p->s);
  double sum = 0.0; /* log|det| per pixel */
  for (int32_t j = 0; j < an->c; j++)
    sum += p->P[an->logs + j];
  p->ld->shared += (double)hw * sum;
  if (left)
    *left = (glow__handoff){x, y, NULL};
  return GLOW_OK;
}

static int inverse(const glow__layer *ly, const glow__pass *p, const float *y,
                   float *x) {
  const glow__an *an = ly->self;
  const int32_t c = an->c;
  const int64_t rows = glow__rows(&ly->in, p->n);
  const float *b = p->P + an->bias, *ls = p->P + an->logs;
  float *inv = p->s->chan_f;
  for (int32_t j = 0; j < c; j++)
    inv[j] = -ls[j];
  glow__exp(inv, c, inv);
  for (int64_t r = 0; r < rows; r++) {
    const float *v = y + r * c;
    float *u = x + r * c;
    for (int32_t j = 0; j < c; j++)
      u[j] = v[j] * inv[j] - b[j];
  }
  return GLOW_OK;
}

static int backward(const glow__layer *ly, const glow__pass *p,
                    const glow__handoff *h, const float *gy, float *gx,
                    float *G) {
  const int64_t rows = glow__rows(&ly->in, p->n);
  /* dL/d(a per-pixel logdet term): every pixel of every image. */
  const double ld_weight = (double)rows * p->gld;
  glow__an_backward(ly->self, p->P, G, h->y, gy, gx, rows, 0, ld_weight, p->s);
  return GLOW_OK;
}

const glow__layer_ops glow__actnorm_layer = {
    .name = "actnorm",
    .size = sizeof(glow__an),
    .build = build,
    .needs = needs,
    .forward = forward,
    .inverse = inverse,
    .backward = backward,
};
