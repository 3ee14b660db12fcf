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

/* Inverse of the above: ws->z = z1 (n, h, w, c/2) -> (n, h, w, c). */
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
