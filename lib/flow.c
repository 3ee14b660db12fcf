/*
 * flow.c -- the data path of the whole model.
 *
 * Forward, for each level l = 0 .. L-1:
 *   squeeze 2x2 -> K x (actnorm -> permutation -> coupling) ->
 *   split off half as level l's latent (all but the top level) or
 *   standardise by the top prior (top level).
 * Inverse runs exactly backwards.  The backward pass (training) runs the
 * forward, then walks the same path backwards, propagating dL/d(tensor) and
 * rebuilding each step's input from its output with the step's inverse, so
 * that its memory does not grow with depth (or, in store mode, reading what
 * the forward kept).  All work in a caller-sized workspace (ws->z holds the
 * current tensor, ws->g its gradient), so no call allocates inside loops.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "glow_internal.h"

/* Tests the exponent bits, an integer OR that vectorises, so that the
 * training pass can afford it after every layer. */
int glow__all_finite(const float *v, int64_t count) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < count; i++) {
    uint32_t b;
    memcpy(&b, &v[i], sizeof b);
    bad |= (b & 0x7f800000u) == 0x7f800000u;
  }
  return !bad;
}

static int lds_finite(const glow__ws *ws) {
  for (int32_t i = 0; i < ws->n; i++)
    if (!isfinite(ws->ld[i]))
      return 0;
  return 1;
}

static int not_finite(const char *what, int32_t l, int32_t k,
                      const char *layer) {
  if (k < 0)
    return glow__fail(GLOW_ERR_NUMERIC,
                      "the %s is not finite: first at level %d %s", what, l,
                      layer);
  return glow__fail(GLOW_ERR_NUMERIC,
                    "the %s is not finite: first at level %d step %d %s",
                    what, l, k, layer);
}

static int step_forward(const glow_model *m, const float *P,
                        const glow__level *lv, int32_t l, int32_t k,
                        glow__ws *ws, double *shared) {
  const glow__step *s = &lv->steps[k];
  const int64_t hw = (int64_t)lv->h * lv->w, rows = ws->n * hw;
  const int64_t count = rows * lv->c;
  double perm_ld = 0.0;
  if (ws->saved) { /* store mode: keep what the backward pass reads */
    ws->keep = &ws->saved[(int64_t)l * m->cfg.depth + k];
    memcpy(ws->keep->x, ws->z, sizeof(float) * (size_t)count);
  }
  glow__actnorm_forward(&s->an, P, ws->z, rows, 0, ws);
  *shared += (double)hw * glow__actnorm_logdet(&s->an, P);
  if (ws->check && (!glow__all_finite(ws->z, count) || !isfinite(*shared)))
    return not_finite("forward pass", l, k, "actnorm");
  if (glow__permute_forward(&s->perm, P, ws, rows, &perm_ld))
    return glow__fail(GLOW_ERR_NUMERIC,
                      "the 1x1 weight of level %d step %d is singular", l, k);
  *shared += (double)hw * perm_ld;
  if (ws->check && (!glow__all_finite(ws->z, count) || !isfinite(*shared)))
    return not_finite("forward pass", l, k, "permutation");
  glow__coupling_forward(&s->cpl, P, ws, lv->h, lv->w);
  ws->keep = NULL;
  if (ws->check && (!glow__all_finite(ws->z, count) || !lds_finite(ws)))
    return not_finite("forward pass", l, k, "coupling");
  return GLOW_OK;
}

int glow__flow_forward(const glow_model *m, const float *P, glow__ws *ws,
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
      int rc = step_forward(m, P, lv, l, k, ws, &shared);
      if (rc)
        return rc;
    }
    if (l < cfg->levels - 1)
      glow__split_forward(m, lv, ws, eps);
    else
      glow__top_forward(m, lv, ws, labels, eps);
    if (ws->check) {
      int ok = lds_finite(ws);
      for (int32_t i = 0; ok && i < ws->n; i++)
        ok = glow__all_finite(eps + (int64_t)i * m->dim + lv->eps_off,
                              (int64_t)lv->h * lv->w * lv->zc);
      if (!ok)
        return not_finite("forward pass", l, -1,
                          l < cfg->levels - 1 ? "split prior" : "top prior");
    }
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

/* ---- Backward ------------------------------------------------------------ */

/* 1 if the gradients of a layer's parameters are all finite: its tensors'
 * range of G, taken from the tensor table, so that it cannot drift from the
 * layout. */
static int grads_finite(const glow_model *m, const float *G, glow__span s) {
  if (s.count == 0)
    return 1;
  const glow__tensor *a = &m->tensors[s.first];
  const glow__tensor *b = &m->tensors[s.first + s.count - 1];
  return glow__all_finite(G + a->offset,
                          b->offset + glow__tensor_count(b) - a->offset);
}

/* Backward of one flow step.  On entry ws->z holds the step's output y (in
 * recompute mode; unused in store mode) and ws->g = dL/dy; on return ws->z
 * holds the step's input x and ws->g = dL/dx. */
static int step_backward(const glow_model *m, const glow__level *lv,
                         int32_t l, int32_t k, glow__ws *ws) {
  const glow__step *s = &lv->steps[k];
  const float *P = m->params;
  float *G = ws->G;
  const int64_t hw = (int64_t)lv->h * lv->w, rows = ws->n * hw;
  const int64_t count = rows * lv->c;
  const size_t bytes = sizeof(float) * (size_t)count;
  /* dL/d(a per-pixel logdet term): every pixel of every image. */
  const double ld_weight = (double)rows * ws->gld;
  const glow__saved *sv = ws->saved
                              ? &ws->saved[(int64_t)l * m->cfg.depth + k]
                              : NULL;
  const float *r1, *r2, *nn;
  if (sv) {
    /* Store mode: the input and the network's activations were kept; redo
     * the two channel-sized layers: ws->u = a1 (actnorm output), ws->z =
     * a2 (the coupling's input).  Their log-determinants are not needed. */
    memcpy(ws->z, sv->x, bytes);
    glow__actnorm_forward(&s->an, P, ws->z, rows, 0, ws);
    memcpy(ws->u, ws->z, bytes);
    if (glow__permute_forward(&s->perm, P, ws, rows, NULL))
      goto singular;
    r1 = sv->r1;
    r2 = sv->r2;
    nn = sv->nn;
  } else {
    /* Recompute mode: invert the coupling.  Its network runs on y1 = x1,
     * which leaves exactly the activations its backward needs. */
    glow__coupling_inverse(&s->cpl, P, ws, lv->h, lv->w);
    r1 = ws->a;
    r2 = ws->b;
    nn = ws->h;
  }
  glow__coupling_backward(&s->cpl, P, G, ws->z, r1, r2, nn, ws->g, lv->h,
                          lv->w, ws);
  if (!glow__all_finite(ws->g, count) ||
      !grads_finite(m, G, s->cpl.tensors))
    return not_finite("gradient", l, k, "coupling");
  if (sv) {
    /* Later steps read their own kept input; only the level's first step
     * hands its input on, in ws->z, to the unsqueeze. */
    if (k == 0)
      memcpy(ws->z, sv->x, bytes);
  } else {
    if (glow__permute_inverse(&s->perm, P, ws, rows))
      goto singular;
    memcpy(ws->u, ws->z, bytes);
    glow__actnorm_inverse(&s->an, P, ws->z, rows, ws);
  }
  if (glow__permute_backward(&s->perm, P, G, ws->u, ws->g, ws->gt, rows,
                             ld_weight, ws))
    goto singular;
  glow__ws_swap_grad(ws);
  if (!glow__all_finite(ws->g, count) ||
      !grads_finite(m, G, s->perm.tensors))
    return not_finite("gradient", l, k, "permutation");
  glow__actnorm_backward(&s->an, P, G, ws->u, ws->g, rows, 0, ld_weight, ws);
  if (!glow__all_finite(ws->g, count) || !grads_finite(m, G, s->an.tensors))
    return not_finite("gradient", l, k, "actnorm");
  return GLOW_OK;
singular:
  return glow__fail(GLOW_ERR_NUMERIC,
                    "the 1x1 weight of level %d step %d is singular, or its "
                    "inverse overflows float",
                    l, k);
}

int glow__flow_backward(const glow_model *m, glow__ws *ws, const float *x,
                        const int32_t *labels, double *loss) {
  const glow_config *cfg = &m->cfg;
  const int32_t n = ws->n, top = cfg->levels - 1;
  const double D = (double)m->dim;
  float *G = ws->G;

  /* 1. Forward, keeping what the backward pass needs (store mode) and
   *    naming the first layer whose output is not finite. */
  ws->check = 1;
  int rc = glow__flow_forward(m, m->params, ws, x, labels, ws->eps);
  ws->check = 0;
  ws->keep = NULL; /* also after a failure inside a step */
  if (rc)
    return rc;

  /* 2. Loss: mean over the batch of bits/dim (glow_bits_per_dim), in
   *    double: the bits/dim of the mean log-density, since it is affine. */
  double logp = 0.0;
  for (int32_t i = 0; i < n; i++)
    logp += glow__log_prob(ws->eps + (int64_t)i * m->dim, m->dim, ws->ld[i]);
  /* A shard's share of the batch mean; 1 (exactly) when not sharded. */
  const double share = (double)n / ws->n_total;
  *loss = share * glow__bits_per_dim(logp / n, m->dim, cfg->n_bits);
  ws->geps = (float)(1.0 / ((double)ws->n_total * D * GLOW__LN_2));
  ws->gld = -ws->geps;

  /* 3. The top: its prior, and the classifier on the same latent.  ws->z
   *    still holds the top latent, ws->g becomes its gradient. */
  const glow__level *lt = &m->levels[top];
  const int64_t top_count = (int64_t)n * lt->h * lt->w * lt->c;
  glow__top_backward(m, lt, ws, labels, ws->eps, G);
  if (!glow__all_finite(ws->g, top_count) ||
      !grads_finite(m, G, m->top_tensors))
    return not_finite("gradient", top, -1, "top prior");
  if (cfg->n_classes > 0) {
    double ce = glow__classifier_backward(m, lt, ws, labels, G);
    *loss += share * cfg->class_weight * ce / GLOW__LN_2;
    if (!isfinite(ce) || !glow__all_finite(ws->g, top_count) ||
        !grads_finite(m, G, m->cls_tensors))
      return not_finite("gradient", top, -1, "classifier");
  }
  if (!isfinite(*loss))
    return glow__fail(GLOW_ERR_NUMERIC, "the loss is not finite");

  /* 4. Every level from the top down: the split (rebuilding z2 from its
   *    latent), the K steps in reverse, the unsqueeze. */
  for (int32_t l = top; l >= 0; l--) {
    const glow__level *lv = &m->levels[l];
    if (l < top) {
      /* The inverse leaves the prior network's output in ws->h, where
       * the backward reads it. */
      glow__split_inverse(m, lv, ws, ws->eps, 1.0f);
      glow__split_backward(m, lv, ws, ws->eps, G);
      if (!glow__all_finite(ws->g, (int64_t)n * lv->h * lv->w * lv->c) ||
          !grads_finite(m, G, lv->prior.tensors))
        return not_finite("gradient", l, -1, "split prior");
    }
    for (int32_t k = cfg->depth - 1; k >= 0; k--) {
      rc = step_backward(m, lv, l, k, ws);
      if (rc)
        return rc;
    }
    glow__unsqueeze(ws->z, n, 2 * lv->h, 2 * lv->w, lv->c / 4, ws->t);
    glow__ws_swap(ws);
    glow__unsqueeze(ws->g, n, 2 * lv->h, 2 * lv->w, lv->c / 4, ws->gt);
    glow__ws_swap_grad(ws);
  }
  return GLOW_OK;
}

/* ---- Workspaces ------------------------------------------------------------ */

/* malloc of count elements (at least one), counted in ws->bytes. */
static void *ws_buf(glow__ws *ws, int64_t count, size_t elem) {
  if (count < 1)
    count = 1;
  ws->bytes += count * (int64_t)elem;
  return malloc((size_t)count * elem);
}

int glow__ws_alloc(const glow_model *m, int32_t n, glow__ws *ws) {
  const glow_config *cfg = &m->cfg;
  memset(ws, 0, sizeof *ws);
  ws->n = n;
  ws->n_total = n;
  ws->cap = n;
  /* Every size in int64: n * max_hw * hidden overflows int32 long before
   * the batch check's n * D <= INT32_MAX stops it. */
  const int64_t hid = cfg->hidden, mc = m->max_c;
  const int64_t ch = hid > mc ? hid : mc;
  const int64_t nd = (int64_t)n * m->dim, nhw = (int64_t)n * m->max_hw;
  int64_t per = 0; /* largest im2col need of one image */
  for (int32_t l = 0; l < cfg->levels; l++) {
    const glow__level *lv = &m->levels[l];
    int32_t cin = hid > lv->c / 2 ? (int32_t)hid : lv->c / 2;
    int64_t need = glow__conv3x3_col_per_image(lv->h, lv->w, cin);
    if (need > per)
      per = need;
  }
  /* Chunk images so the patch matrix stays near 16 MiB but never below
   * one image: large enough for efficient GEMMs, small enough to cache.
   * Every backward convolution needs at most as much: each works on the
   * patches of its narrower side, min(cin, cout) <= max(hidden, c/2). */
  int64_t chunk = ((INT64_C(4) << 20) + per - 1) / per;
  if (chunk > n)
    chunk = n;
  if (chunk < 1)
    chunk = 1;
  ws->col.cap = chunk * per;
  ws->z = ws_buf(ws, nd, sizeof(float));
  ws->t = ws_buf(ws, nd, sizeof(float));
  ws->a = ws_buf(ws, nhw * hid, sizeof(float));
  ws->b = ws_buf(ws, nhw * hid, sizeof(float));
  ws->h = ws_buf(ws, nhw * mc, sizeof(float));
  ws->col.buf = ws_buf(ws, ws->col.cap, sizeof(float));
  ws->col.wbuf = ws_buf(ws, 9 * ch * mc, sizeof(float));
  const int own = glow__gemm_own(m);
  if (own)
    ws->col.pack = ws_buf(ws, GLOW__GEMM_PACK, sizeof(float));
  ws->ld = ws_buf(ws, n, sizeof(double));
  ws->w64 = ws_buf(ws, 2 * mc * mc + mc, sizeof(double));
  ws->w32 = ws_buf(ws, mc * mc, sizeof(float));
  ws->fscr = ws_buf(ws, 3 * ch, sizeof(float));
  ws->dscr = ws_buf(ws, 2 * ch, sizeof(double));
  if (!ws->z || !ws->t || !ws->a || !ws->b || !ws->h || !ws->col.buf ||
      !ws->col.wbuf || (own && !ws->col.pack) ||
      !ws->ld || !ws->w64 || !ws->w32 || !ws->fscr || !ws->dscr) {
    glow__ws_free(ws);
    return glow__fail(GLOW_ERR_NOMEM,
                      "out of memory for the workspace of a batch of %d", n);
  }
  return GLOW_OK;
}

int glow__ws_alloc_train(const glow_model *m, int32_t n, int store,
                         glow__ws *ws) {
  int rc = glow__ws_alloc(m, n, ws);
  if (rc)
    return rc;
  const glow_config *cfg = &m->cfg;
  const int64_t hid = cfg->hidden, mc = m->max_c;
  const int64_t ch = hid > mc ? hid : mc;
  const int64_t nd = (int64_t)n * m->dim, nhw = (int64_t)n * m->max_hw;
  const glow__level *top = &m->levels[cfg->levels - 1];
  ws->eps = ws_buf(ws, nd, sizeof(float));
  ws->g = ws_buf(ws, nd, sizeof(float));
  ws->gt = ws_buf(ws, nd, sizeof(float));
  ws->u = ws_buf(ws, nd, sizeof(float));
  ws->ga = ws_buf(ws, nhw * ch, sizeof(float));
  ws->gb = ws_buf(ws, nhw * ch, sizeof(float));
  ws->gh = ws_buf(ws, nhw * mc, sizeof(float));
  ws->wflip = ws_buf(ws, 9 * ch * mc, sizeof(float));
  ws->wg32 = ws_buf(ws, mc * mc, sizeof(float));
  ws->cls = ws_buf(ws, 2 * (int64_t)top->c + cfg->n_classes, sizeof(double));
  /* Parameter-sized, not activation memory: not in ws->bytes. */
  ws->G = malloc(sizeof(float) * (size_t)(m->n_params > 0 ? m->n_params : 1));
  int ok = ws->eps && ws->g && ws->gt && ws->u && ws->ga && ws->gb &&
           ws->gh && ws->wflip && ws->wg32 && ws->cls && ws->G;
  if (ok && store) {
    /* Every step's input, network activations and output: the memory that
     * recompute mode does without, growing with levels * depth. */
    const int64_t steps = (int64_t)cfg->levels * cfg->depth;
    int64_t total = 0;
    for (int32_t l = 0; l < cfg->levels; l++) {
      const glow__level *lv = &m->levels[l];
      const int64_t rows = (int64_t)n * lv->h * lv->w;
      total += (int64_t)cfg->depth * rows *
               (lv->c + 2 * hid + lv->steps[0].cpl.out.cout);
    }
    ws->saved = ws_buf(ws, steps, sizeof *ws->saved);
    ws->saved_buf = ws_buf(ws, total, sizeof(float));
    ok = ws->saved && ws->saved_buf;
    float *next = ws->saved_buf;
    for (int32_t l = 0; ok && l < cfg->levels; l++) {
      const glow__level *lv = &m->levels[l];
      const int64_t rows = (int64_t)n * lv->h * lv->w;
      for (int32_t k = 0; k < cfg->depth; k++) {
        glow__saved *sv = &ws->saved[(int64_t)l * cfg->depth + k];
        sv->x = next;
        sv->r1 = sv->x + rows * lv->c;
        sv->r2 = sv->r1 + rows * hid;
        sv->nn = sv->r2 + rows * hid;
        next = sv->nn + rows * lv->steps[k].cpl.out.cout;
      }
    }
  }
  if (!ok) {
    glow__ws_free(ws);
    return glow__fail(GLOW_ERR_NOMEM,
                      "out of memory for the training workspace of a batch "
                      "of %d%s",
                      n, store ? " in store mode (recompute mode needs less)"
                               : "");
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
  free(ws->col.pack);
  free(ws->ld);
  free(ws->w64);
  free(ws->w32);
  free(ws->fscr);
  free(ws->dscr);
  free(ws->eps);
  free(ws->g);
  free(ws->gt);
  free(ws->u);
  free(ws->ga);
  free(ws->gb);
  free(ws->gh);
  free(ws->wflip);
  free(ws->wg32);
  free(ws->cls);
  free(ws->G);
  free(ws->saved);
  free(ws->saved_buf);
  memset(ws, 0, sizeof *ws);
}
