/*
 * top.c -- the prior of the top level's latent: a learned per-position
 * (mean, logs) tensor (or N(0, 1) without learn_top) plus, for a
 * conditional model, a learned per-class offset.  The layer reports
 * eps = (z - mean) * exp(-logs) and adds -sum(logs) to the
 * log-determinant.  It is the flow's sink: nothing passes on, and its
 * backward starts the gradient.
 *
 * Hand-off: the input z only (the classifier head reads it too).
 */
#include <math.h>

#include "layer.h"

typedef struct {
  int32_t c, learn_top, n_classes;
  int64_t top;       /* learn_top: [h][w][2c], mean/logs interleaved */
  int64_t class_emb; /* n_classes > 0: [n_classes][2c] */
} top_prior;

static void build(glow__layer *ly, const glow_config *cfg, glow__registry *r) {
  top_prior tmp, *tp = ly->self ? ly->self : &tmp;
  const int32_t c2 = 2 * ly->in.c;
  ly->out = (glow__shape){0, 0, 0};
  tp->c = ly->in.c;
  tp->learn_top = cfg->learn_top;
  tp->n_classes = cfg->n_classes;
  if (cfg->learn_top)
    tp->top = glow__reg_tensor(r, ly->prefix, "prior", 3,
                               (const int32_t[]){ly->in.h, ly->in.w, c2});
  if (cfg->n_classes > 0)
    tp->class_emb = glow__reg_tensor(r, ly->prefix, "class_embed", 2,
                                     (const int32_t[]){cfg->n_classes, c2});
}

/* (mean, logs) at position q, channel k, for one label. */
static inline void top_params(const top_prior *tp, const float *P,
                              int32_t label, int64_t q, int32_t k, float *mean,
                              float *logs) {
  const int32_t c2 = 2 * tp->c;
  float mu = 0.0f, ls = 0.0f;
  if (tp->learn_top) {
    mu = P[tp->top + q * c2 + 2 * k];
    ls = P[tp->top + q * c2 + 2 * k + 1];
  }
  if (tp->n_classes > 0) {
    mu += P[tp->class_emb + (int64_t)label * c2 + 2 * k];
    ls += P[tp->class_emb + (int64_t)label * c2 + 2 * k + 1];
  }
  *mean = mu;
  *logs = ls;
}

static int forward(const glow__layer *ly, const glow__pass *p, const float *x,
                   float *y, float *keep, glow__handoff *left) {
  (void)y;
  (void)keep;
  const top_prior *tp = ly->self;
  const int32_t c = tp->c;
  const int64_t hw = (int64_t)ly->in.h * ly->in.w;
  for (int32_t i = 0; i < p->n; i++) {
    const float *z = x + (int64_t)i * hw * c;
    float *e = p->eps + (int64_t)i * p->dim + ly->eps_off;
    const int32_t label = p->labels ? p->labels[i] : 0;
    double ld = 0.0;
    for (int64_t q = 0; q < hw; q++)
      for (int32_t k = 0; k < c; k++) {
        float mean, logs;
        top_params(tp, p->P, label, q, k, &mean, &logs);
        e[q * c + k] = (z[q * c + k] - mean) * expf(-logs);
        ld -= logs;
      }
    p->ld->image[i] += ld;
  }
  if (left)
    *left = (glow__handoff){x, NULL, NULL};
  return GLOW_OK;
}

/* The eps block (times p->scale) -> x, the top latent. */
static int inverse(const glow__layer *ly, const glow__pass *p, const float *y,
                   float *x) {
  (void)y;
  const top_prior *tp = ly->self;
  const int32_t c = tp->c;
  const int64_t hw = (int64_t)ly->in.h * ly->in.w;
  for (int32_t i = 0; i < p->n; i++) {
    float *z = x + (int64_t)i * hw * c;
    const float *e = p->eps + (int64_t)i * p->dim + ly->eps_off;
    const int32_t label = p->labels ? p->labels[i] : 0;
    for (int64_t q = 0; q < hw; q++)
      for (int32_t k = 0; k < c; k++) {
        float mean, logs;
        top_params(tp, p->P, label, q, k, &mean, &logs);
        z[q * c + k] = mean + expf(logs) * (p->scale * e[q * c + k]);
      }
  }
  return GLOW_OK;
}

/* As for the split: dL/dz = eps geps e^{-logs}, dL/dmean = -dL/dz,
 * dL/dlogs = -eps^2 geps - gld. */
static int backward(const glow__layer *ly, const glow__pass *p,
                    const glow__handoff *h, const float *gy, float *gx,
                    float *G) {
  (void)h;
  (void)gy;
  const top_prior *tp = ly->self;
  const int32_t c = tp->c, c2 = 2 * c;
  const int64_t hw = (int64_t)ly->in.h * ly->in.w;
  const float geps = p->geps, gld = p->gld;
  for (int32_t i = 0; i < p->n; i++) {
    const float *e = p->eps + (int64_t)i * p->dim + ly->eps_off;
    float *g = gx + (int64_t)i * hw * c;
    const int32_t label = p->labels ? p->labels[i] : 0;
    float *gt = tp->learn_top ? G + tp->top : NULL;
    float *gc =
        tp->n_classes > 0 ? G + tp->class_emb + (int64_t)label * c2 : NULL;
    for (int64_t q = 0; q < hw; q++)
      for (int32_t k = 0; k < c; k++) {
        float mean, logs;
        top_params(tp, p->P, label, q, k, &mean, &logs);
        float ev = e[q * c + k] * geps;
        float gz = ev * expf(-logs);
        float gl = -ev * e[q * c + k] - gld;
        g[q * c + k] = gz;
        if (gt) {
          gt[q * c2 + 2 * k] -= gz;
          gt[q * c2 + 2 * k + 1] += gl;
        }
        if (gc) {
          gc[2 * k] -= gz;
          gc[2 * k + 1] += gl;
        }
      }
  }
  return GLOW_OK;
}

const glow__layer_ops glow__top_layer = {
    .name = "top prior",
    .size = sizeof(top_prior),
    .build = build,
    .forward = forward,
    .inverse = inverse,
    .backward = backward,
};
