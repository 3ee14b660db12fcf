/*
 * prior.c -- the Gaussian priors of the latents and their standardisation.
 *
 * Each factored-out half z2 of a level has the conditional prior
 * N(mean(z1), exp(logs(z1))^2), where (mean, logs) come interleaved from a
 * zero-initialised 3x3 conv of the kept half z1.  The top latent's prior is
 * a learned per-position (mean, logs) tensor (or N(0, 1)) plus, for a
 * conditional model, a learned per-class offset.  The library reports
 * eps = (z - mean) * exp(-logs) and adds -sum(logs) to the log-determinant,
 * so that log p(z) = log N(eps; 0, 1) + logdet.
 */
#include <math.h>
#include <string.h>

#include "glow_internal.h"

/* Split: ws->z (n, h, w, c) -> eps block of z2, ws->z = z1 (n, h, w, c/2). */
void glow__split_forward(const glow_model *m, const glow__level *lv,
                         glow__ws *ws, float *eps) {
  const int32_t c = lv->c, half = c / 2;
  const int64_t hw = (int64_t)lv->h * lv->w;
  glow__zconv_apply(&lv->prior, m->params, ws->z, c, lv->h, lv->w, ws->h, ws);
  for (int32_t i = 0; i < ws->n; i++) {
    const float *z = ws->z + (int64_t)i * hw * c;
    const float *pr = ws->h + (int64_t)i * hw * c;
    float *e = eps + (int64_t)i * m->dim + lv->eps_off;
    float *z1 = ws->t + (int64_t)i * hw * half;
    double ld = 0.0;
    for (int64_t p = 0; p < hw; p++) {
      for (int32_t k = 0; k < half; k++) {
        float mean = pr[p * c + 2 * k], logs = pr[p * c + 2 * k + 1];
        e[p * half + k] = (z[p * c + half + k] - mean) * expf(-logs);
        ld -= logs;
      }
      memcpy(z1 + p * half, z + p * c, sizeof(float) * (size_t)half);
    }
    ws->ld[i] += ld;
  }
  glow__ws_swap(ws);
}

/* Inverse of the above: ws->z = z1 (n, h, w, c/2) -> (n, h, w, c).  The
 * prior network's output on z1 stays in ws->h (glow__split_backward reads
 * it). */
void glow__split_inverse(const glow_model *m, const glow__level *lv,
                         glow__ws *ws, const float *eps, float scale) {
  const int32_t c = lv->c, half = c / 2;
  const int64_t hw = (int64_t)lv->h * lv->w;
  glow__zconv_apply(&lv->prior, m->params, ws->z, half, lv->h, lv->w, ws->h,
                    ws);
  for (int32_t i = 0; i < ws->n; i++) {
    const float *z1 = ws->z + (int64_t)i * hw * half;
    const float *pr = ws->h + (int64_t)i * hw * c;
    const float *e = eps + (int64_t)i * m->dim + lv->eps_off;
    float *z = ws->t + (int64_t)i * hw * c;
    for (int64_t p = 0; p < hw; p++) {
      memcpy(z + p * c, z1 + p * half, sizeof(float) * (size_t)half);
      for (int32_t k = 0; k < half; k++) {
        float mean = pr[p * c + 2 * k], logs = pr[p * c + 2 * k + 1];
        z[p * c + half + k] = mean + expf(logs) * (scale * e[p * half + k]);
      }
    }
  }
  glow__ws_swap(ws);
}

/* Top prior (mean, logs) at position p, channel k, for one label. */
static inline void top_params(const glow_model *m, const glow__level *lv,
                              int32_t label, int64_t p, int32_t k,
                              float *mean, float *logs) {
  const int32_t c2 = 2 * lv->c;
  float mu = 0.0f, ls = 0.0f;
  if (m->cfg.learn_top) {
    mu = m->params[m->top + p * c2 + 2 * k];
    ls = m->params[m->top + p * c2 + 2 * k + 1];
  }
  if (m->cfg.n_classes > 0) {
    mu += m->params[m->class_emb + (int64_t)label * c2 + 2 * k];
    ls += m->params[m->class_emb + (int64_t)label * c2 + 2 * k + 1];
  }
  *mean = mu;
  *logs = ls;
}

void glow__top_forward(const glow_model *m, const glow__level *lv,
                       glow__ws *ws, const int32_t *labels, float *eps) {
  const int32_t c = lv->c;
  const int64_t hw = (int64_t)lv->h * lv->w;
  for (int32_t i = 0; i < ws->n; i++) {
    const float *z = ws->z + (int64_t)i * hw * c;
    float *e = eps + (int64_t)i * m->dim + lv->eps_off;
    int32_t label = labels ? labels[i] : 0;
    double ld = 0.0;
    for (int64_t p = 0; p < hw; p++)
      for (int32_t k = 0; k < c; k++) {
        float mean, logs;
        top_params(m, lv, label, p, k, &mean, &logs);
        e[p * c + k] = (z[p * c + k] - mean) * expf(-logs);
        ld -= logs;
      }
    ws->ld[i] += ld;
  }
}

/* ws->z = top latent (n, h, w, c) from its eps block. */
void glow__top_inverse(const glow_model *m, const glow__level *lv,
                       glow__ws *ws, const int32_t *labels, const float *eps,
                       float scale) {
  const int32_t c = lv->c;
  const int64_t hw = (int64_t)lv->h * lv->w;
  for (int32_t i = 0; i < ws->n; i++) {
    float *z = ws->z + (int64_t)i * hw * c;
    const float *e = eps + (int64_t)i * m->dim + lv->eps_off;
    int32_t label = labels ? labels[i] : 0;
    for (int64_t p = 0; p < hw; p++)
      for (int32_t k = 0; k < c; k++) {
        float mean, logs;
        top_params(m, lv, label, p, k, &mean, &logs);
        z[p * c + k] = mean + expf(logs) * (scale * e[p * c + k]);
      }
  }
}

/* ---- Backward -------------------------------------------------------------
 * With eps = (z - mean) e^{-logs}, dL/deps = eps * geps (the Gaussian term
 * of the loss) and logdet -= logs (weight gld = dL/dlogdet):
 *   dL/dz = eps geps e^{-logs},  dL/dmean = -dL/dz,
 *   dL/dlogs = -eps^2 geps - gld. */

void glow__split_backward(const glow_model *m, const glow__level *lv,
                          glow__ws *ws, const float *eps, float *G) {
  const int32_t c = lv->c, half = c / 2;
  const int64_t hw = (int64_t)lv->h * lv->w, rows = ws->n * hw;
  const float geps = ws->geps, gld = ws->gld;
  /* The prior network's output on z1, as glow__split_inverse left it. */
  const float *pr = ws->h;
  float *gpr = ws->gh;
  for (int32_t i = 0; i < ws->n; i++) {
    const float *e = eps + (int64_t)i * m->dim + lv->eps_off;
    for (int64_t p = 0; p < hw; p++) {
      const int64_t r = i * hw + p;
      const float *o = pr + r * c;
      float *go = gpr + r * c, *gz2 = ws->gt + r * c + half;
      for (int32_t k = 0; k < half; k++) {
        float ev = e[p * half + k] * geps;
        gz2[k] = ev * expf(-o[2 * k + 1]);
        go[2 * k] = -gz2[k];
        go[2 * k + 1] = -ev * e[p * half + k] - gld;
      }
    }
  }
  /* z1 reaches the loss twice: through the next level (ws->g) and through
   * the prior network. */
  glow__zconv_backward(&lv->prior, m->params, G, ws->z, c, pr, gpr, ws->ga,
                       lv->h, lv->w, ws);
  for (int64_t r = 0; r < rows; r++)
    for (int32_t k = 0; k < half; k++)
      ws->gt[r * c + k] = ws->g[r * half + k] + ws->ga[r * half + k];
  glow__ws_swap_grad(ws);
}

void glow__top_backward(const glow_model *m, const glow__level *lv,
                        glow__ws *ws, const int32_t *labels, const float *eps,
                        float *G) {
  const int32_t c = lv->c, c2 = 2 * c;
  const int64_t hw = (int64_t)lv->h * lv->w;
  const float geps = ws->geps, gld = ws->gld;
  for (int32_t i = 0; i < ws->n; i++) {
    const float *e = eps + (int64_t)i * m->dim + lv->eps_off;
    float *g = ws->g + (int64_t)i * hw * c;
    const int32_t label = labels ? labels[i] : 0;
    float *gt = m->cfg.learn_top ? G + m->top : NULL;
    float *gc = m->cfg.n_classes > 0 ? G + m->class_emb + (int64_t)label * c2
                                     : NULL;
    for (int64_t p = 0; p < hw; p++)
      for (int32_t k = 0; k < c; k++) {
        float mean, logs;
        top_params(m, lv, label, p, k, &mean, &logs);
        float ev = e[p * c + k] * geps;
        float gz = ev * expf(-logs);
        float gl = -ev * e[p * c + k] - gld;
        g[p * c + k] = gz;
        if (gt) {
          gt[p * c2 + 2 * k] -= gz;
          gt[p * c2 + 2 * k + 1] += gl;
        }
        if (gc) {
          gc[2 * k] -= gz;
          gc[2 * k + 1] += gl;
        }
      }
  }
}

/* Classifier head of one image: hbar = mean over positions of its top
 * latent z (hw x c), logits = hbar W + b, in double. */
void glow__classifier_logits(const glow_model *m, const glow__level *lv,
                             const float *z, double *hbar, double *logits) {
  const int32_t c = lv->c, nc = m->cfg.n_classes;
  const int64_t hw = (int64_t)lv->h * lv->w;
  const float *W = m->params + m->cls_w, *b = m->params + m->cls_b;
  for (int32_t k = 0; k < c; k++)
    hbar[k] = 0.0;
  for (int64_t p = 0; p < hw; p++)
    for (int32_t k = 0; k < c; k++)
      hbar[k] += z[p * c + k];
  for (int32_t k = 0; k < c; k++)
    hbar[k] /= (double)hw;
  for (int32_t j = 0; j < nc; j++) {
    double v = b[j];
    for (int32_t k = 0; k < c; k++)
      v += hbar[k] * W[(int64_t)k * nc + j];
    logits[j] = v;
  }
}

/* CE = logsumexp(logits) - logits[label], in double.  dL/dlogits =
 * w (softmax - onehot) with w = class_weight / (n ln 2), n the whole
 * batch's size (ws->n_total); the mean over positions spreads dL/dmean
 * evenly.  Returns the mean over this workspace's ws->n images. */
double glow__classifier_backward(const glow_model *m, const glow__level *lv,
                                 glow__ws *ws, const int32_t *labels,
                                 float *G) {
  const int32_t c = lv->c, nc = m->cfg.n_classes;
  const int64_t hw = (int64_t)lv->h * lv->w;
  const float *W = m->params + m->cls_w;
  const double wt = (double)m->cfg.class_weight /
                    ((double)ws->n_total * GLOW__LN_2);
  double *hbar = ws->cls, *gh = ws->cls + c, *lg = ws->cls + 2 * c;
  double ce = 0.0;
  for (int32_t i = 0; i < ws->n; i++) {
    glow__classifier_logits(m, lv, ws->z + (int64_t)i * hw * c, hbar, lg);
    double top = -HUGE_VAL;
    for (int32_t j = 0; j < nc; j++)
      if (lg[j] > top)
        top = lg[j];
    double se = 0.0;
    for (int32_t j = 0; j < nc; j++)
      se += exp(lg[j] - top);
    ce += top + log(se) - lg[labels[i]];
    for (int32_t k = 0; k < c; k++)
      gh[k] = 0.0;
    for (int32_t j = 0; j < nc; j++) {
      double d = wt * (exp(lg[j] - top) / se - (j == labels[i]));
      G[m->cls_b + j] += (float)d;
      for (int32_t k = 0; k < c; k++) {
        G[m->cls_w + (int64_t)k * nc + j] += (float)(hbar[k] * d);
        gh[k] += d * W[(int64_t)k * nc + j];
      }
    }
    float *g = ws->g + (int64_t)i * hw * c;
    for (int64_t p = 0; p < hw; p++)
      for (int32_t k = 0; k < c; k++)
        g[p * c + k] += (float)(gh[k] / (double)hw);
  }
  return ce / (double)ws->n;
}
