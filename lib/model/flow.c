/*
 * flow.c -- the data path of the whole model: every layer in turn.
 *
 * Forward, layer by layer from the image: for each level, a squeeze, K
 * flow steps (actnorm -> permutation -> coupling), then a split that
 * factors out half of the channels as that level's latent, or, at the top,
 * the top prior that standardises what is left.  The inverse runs the
 * same list backwards.  Each layer reads one buffer and writes the other;
 * this file alone decides which is which.
 */
#include <math.h>

#include "model.h"

glow__pass glow__pass_of(const glow_model *m, glow__ws *ws,
                         const int32_t *labels, float *eps, glow__logdet *ld) {
  glow__pass p = {0};
  p.P = m->params;
  p.n = ws->n;
  p.labels = labels;
  p.eps = eps;
  p.dim = m->dim;
  p.scale = 1.0f;
  p.ld = ld;
  p.s = &ws->s;
  p.n_total = ws->n_total;
  return p;
}

static int lds_finite(const glow__pass *p) {
  for (int32_t i = 0; i < p->n; i++)
    if (!isfinite(p->ld->image[i]))
      return 0;
  return isfinite(p->ld->shared);
}

/* After a checked forward layer: its output, the log-determinants so far
 * and its latent block must be finite; the message names the layer. */
static int check_forward(const glow_model *m, const glow__layer *ly,
                         const glow__pass *p, const float *y) {
  int ok = lds_finite(p);
  if (ok && ly->out.c > 0)
    ok = glow__all_finite(y, glow__rows(&ly->out, p->n) * ly->out.c);
  const int64_t block = glow__latent_floats(ly);
  for (int32_t i = 0; ok && block > 0 && i < p->n; i++)
    ok = glow__all_finite(p->eps + (int64_t)i * m->dim + ly->eps_off, block);
  if (ok)
    return GLOW_OK;
  if (ly->step < 0)
    return glow__fail(GLOW_ERR_NUMERIC,
                      "the forward pass is not finite: first at level %d %s",
                      ly->level, ly->ops->name);
  return glow__fail(GLOW_ERR_NUMERIC,
                    "the forward pass is not finite: first at level %d step "
                    "%d %s",
                    ly->level, ly->step, ly->ops->name);
}

int glow__flow_run(const glow_model *m, glow__ws *ws, const glow__pass *p,
                   int32_t first, int32_t last, const float *in,
                   const glow__mode *mode, const float **out) {
  const glow__route *rt = mode->route;
  for (int32_t i = first; i < last; i++) {
    const glow__layer *ly = &m->layers[i];
    float *y = NULL, *keep = ws->s.act;
    glow__handoff *left = NULL;
    if (ly->out.c > 0) {
      y = rt && rt->in && i + 1 < m->n_layers ? rt->in[i + 1] : NULL;
      if (!y) /* the tensor buffer that does not hold the input */
        y = in == ws->tensor[0] ? ws->tensor[1] : ws->tensor[0];
    }
    if (rt && rt->act && rt->act[i])
      keep = rt->act[i];
    if (rt && rt->left)
      left = &rt->left[i];
    glow__pass lp = *p; /* with this layer's kept tail, if any */
    lp.tail = rt && rt->tail ? rt->tail[i] : NULL;
    lp.tail_kept = lp.tail && mode->rebuild;
    lp.cache = ws->cache[i];
    int rc = ly->ops->forward(ly, &lp, in, y, keep, left);
    if (!rc && mode->check && !ly->ops->rearranges)
      rc = check_forward(m, ly, p, y);
    if (rc)
      return rc;
    if (y)
      in = y;
  }
  if (out)
    *out = in;
  return GLOW_OK;
}

int glow__flow_forward(const glow_model *m, glow__ws *ws,
                       const glow__mode *mode, const float *x,
                       const int32_t *labels, float *eps) {
  glow__logdet ld = {0.0, ws->ld};
  glow__pass p = glow__pass_of(m, ws, labels, eps, &ld);
  p.init = mode->init;
  for (int32_t i = 0; i < ws->n; i++)
    ws->ld[i] = 0.0;
  int rc = glow__flow_run(m, ws, &p, 0, m->n_layers, x, mode, &ws->top);
  if (rc)
    return rc;
  for (int32_t i = 0; i < ws->n; i++)
    ws->ld[i] += ld.shared;
  return GLOW_OK;
}

int glow__flow_inverse(const glow_model *m, glow__ws *ws, const float *eps,
                       float scale, const int32_t *labels, float *x) {
  glow__logdet unused = {0.0, ws->ld};
  /* The pass writes no latent here: eps is only read. */
  glow__pass p = glow__pass_of(m, ws, labels, (float *)eps, &unused);
  p.scale = scale;
  const float *y = NULL; /* the top prior starts from the latents alone */
  for (int32_t i = m->n_layers - 1; i >= 0; i--) {
    const glow__layer *ly = &m->layers[i];
    /* The first layer writes the caller's buffer directly. */
    float *out = i == 0               ? x
                 : y == ws->tensor[0] ? ws->tensor[1]
                                      : ws->tensor[0];
    p.cache = ws->cache[i];
    int rc = ly->ops->inverse(ly, &p, y, out);
    if (rc)
      return rc;
    y = out;
  }
  return GLOW_OK;
}
