/*
 * flow.c -- the data path of the whole model.
 *
 * Forward, for each level l = 0 .. L-1:
 *   squeeze 2x2 -> K x (actnorm -> permutation -> coupling) ->
 *   split off half as level l's latent (all but the top level) or
 *   standardise by the top prior (top level).
 * Inverse runs exactly backwards.  Both work in a caller-sized workspace
 * (ws->z holds the current tensor), so no call allocates inside the loops.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "glow_internal.h"

static int step_forward(float *P, const glow__level *lv, int32_t l, int32_t k,
                        glow__ws *ws, double *shared) {
  const glow__step *s = &lv->steps[k];
  const int64_t hw = (int64_t)lv->h * lv->w, rows = ws->n * hw;
  double perm_ld = 0.0;
  glow__actnorm_forward(&s->an, P, ws->z, rows, 0, ws);
  *shared += (double)hw * glow__actnorm_logdet(&s->an, P);
  if (glow__permute_forward(&s->perm, P, ws, rows, &perm_ld))
    return glow__fail(GLOW_ERR_NUMERIC,
                      "the 1x1 weight of level %d step %d is singular", l, k);
  *shared += (double)hw * perm_ld;
  glow__coupling_forward(&s->cpl, P, ws, lv->h, lv->w);
  return GLOW_OK;
}

int glow__flow_forward(const glow_model *m, float *P, glow__ws *ws,
                       const float *x, const int32_t *labels, float *eps) {
  const glow_config *cfg = &m->cfg;
  int32_t h = cfg->height, w = cfg->width, c = cfg->channels;
  double shared = 0.0; /* log-determinant terms equal for every image */
  memcpy(ws->z, x, sizeof(float) * (size_t)(ws->n * m->dim));
  for (int32_t i = 0; i < ws->n; i++)
    ws->ld[i] = 0.0;
  for (int32_t l = 0; l < cfg->levels; l++) {
    const glow__level *lv = &m->levels[l];
    glow__squeeze(ws->z, ws->n, h, w, c, ws->t);
    glow__ws_swap(ws);
    for (int32_t k = 0; k < cfg->depth; k++) {
      int rc = step_forward(P, lv, l, k, ws, &shared);
      if (rc)
        return rc;
    }
    if (l < cfg->levels - 1)
      glow__split_forward(m, lv, ws, eps);
    else
      glow__top_forward(m, lv, ws, labels, eps);
    h = lv->h;
    w = lv->w;
    c = lv->c / 2;
  }
  for (int32_t i = 0; i < ws->n; i++)
    ws->ld[i] += shared;
  return GLOW_OK;
}

int glow__flow_inverse(const glow_model *m, glow__ws *ws, const float *eps,
                       float scale, const int32_t *labels, float *x) {
  const glow_config *cfg = &m->cfg;
  const float *P = m->params;
  for (int32_t l = cfg->levels - 1; l >= 0; l--) {
    const glow__level *lv = &m->levels[l];
    const int64_t rows = ws->n * (int64_t)lv->h * lv->w;
    if (l == cfg->levels - 1)
      glow__top_inverse(m, lv, ws, labels, eps, scale);
    else
      glow__split_inverse(m, lv, ws, eps, scale);
    for (int32_t k = cfg->depth - 1; k >= 0; k--) {
      const glow__step *s = &lv->steps[k];
      glow__coupling_inverse(&s->cpl, P, ws, lv->h, lv->w);
      if (glow__permute_inverse(&s->perm, P, ws, rows))
        return glow__fail(GLOW_ERR_NUMERIC,
                          "the 1x1 weight of level %d step %d is singular", l,
                          k);
      glow__actnorm_inverse(&s->an, P, ws->z, rows, ws);
    }
    glow__unsqueeze(ws->z, ws->n, 2 * lv->h, 2 * lv->w, lv->c / 4, ws->t);
    glow__ws_swap(ws);
  }
  memcpy(x, ws->z, sizeof(float) * (size_t)(ws->n * m->dim));
  return GLOW_OK;
}

static void *alloc_floats(int64_t count, size_t elem) {
  return malloc((size_t)(count > 0 ? count : 1) * elem);
}

int glow__ws_alloc(const glow_model *m, int32_t n, glow__ws *ws) {
  const glow_config *cfg = &m->cfg;
  memset(ws, 0, sizeof *ws);
  ws->n = n;
  const int64_t hid = cfg->hidden, mc = m->max_c;
  const int64_t ch = hid > mc ? hid : mc;
  int64_t per = 0; /* largest im2col need of one image */
  for (int32_t l = 0; l < cfg->levels; l++) {
    const glow__level *lv = &m->levels[l];
    int32_t cin = hid > lv->c / 2 ? (int32_t)hid : lv->c / 2;
    int64_t need = glow__conv3x3_col_per_image(lv->h, lv->w, cin);
    if (need > per)
      per = need;
  }
  /* Chunk images so the patch matrix stays near 16 MiB but never below
   * one image: large enough for efficient GEMMs, small enough to cache. */
  int64_t chunk = ((INT64_C(4) << 20) + per - 1) / per;
  if (chunk > n)
    chunk = n;
  if (chunk < 1)
    chunk = 1;
  ws->col.cap = chunk * per;
  ws->z = alloc_floats(n * m->dim, sizeof(float));
  ws->t = alloc_floats(n * m->dim, sizeof(float));
  ws->a = alloc_floats(n * m->max_hw * hid, sizeof(float));
  ws->b = alloc_floats(n * m->max_hw * hid, sizeof(float));
  ws->h = alloc_floats(n * m->max_hw * mc, sizeof(float));
  ws->col.buf = alloc_floats(ws->col.cap, sizeof(float));
  ws->col.wbuf = alloc_floats(9 * ch * mc, sizeof(float));
  ws->ld = alloc_floats(n, sizeof(double));
  ws->w64 = alloc_floats(2 * mc * mc + mc, sizeof(double));
  ws->w32 = alloc_floats(mc * mc, sizeof(float));
  ws->fscr = alloc_floats(ch, sizeof(float));
  ws->dscr = alloc_floats(2 * ch, sizeof(double));
  if (!ws->z || !ws->t || !ws->a || !ws->b || !ws->h || !ws->col.buf ||
      !ws->col.wbuf ||
      !ws->ld || !ws->w64 || !ws->w32 || !ws->fscr || !ws->dscr) {
    glow__ws_free(ws);
    return glow__fail(GLOW_ERR_NOMEM,
                      "out of memory for the workspace of a batch of %d", n);
  }
  return GLOW_OK;
}

void glow__ws_free(glow__ws *ws) {
  free(ws->z);
  free(ws->t);
  free(ws->a);
  free(ws->b);
  free(ws->h);
  free(ws->col.buf);
  free(ws->col.wbuf);
  free(ws->ld);
  free(ws->w64);
  free(ws->w32);
  free(ws->fscr);
  free(ws->dscr);
  memset(ws, 0, sizeof *ws);
}
