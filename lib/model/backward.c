/*
 * backward.c -- the training pass: the forward, the loss, then every layer
 * backwards from the top, propagating dL/d(tensor) and adding each
 * layer's parameter gradients.
 *
 * A layer's backward reads what its forward left (its hand-off).  In store
 * mode the forward kept every hand-off.  In recompute mode it kept only
 * the input of each segment (a flow step, or one other layer); the
 * backward rebuilds a segment's hand-offs by running its forward again
 * from that input, just before it needs them.  The rebuilt hand-offs are
 * the forward's own, bit for bit, whatever the input: the layers' inverses
 * are never trusted to reconstruct anything.  Either way the same backward
 * runs.
 */
#include <math.h>

#include "model.h"

/* 1 if the gradients of a layer's parameters are all finite: its tensors'
 * range of G, taken from the tensor table, so that it cannot drift from the
 * layout. */
static int grads_finite(const glow_model *m, const float *G, glow__span s) {
  if (s.count == 0)
    return 1;
  const glow__tensor *a = &m->reg.tensors[s.first];
  const glow__tensor *b = &m->reg.tensors[s.first + s.count - 1];
  return glow__all_finite(G + a->offset,
                          b->offset + glow__tensor_count(b) - a->offset);
}

static int not_finite(const glow__layer *ly, const char *what) {
  if (ly->step < 0)
    return glow__fail(GLOW_ERR_NUMERIC,
                      "the gradient is not finite: first at level %d %s",
                      ly->level, what);
  return glow__fail(GLOW_ERR_NUMERIC,
                    "the gradient is not finite: first at level %d step %d "
                    "%s",
                    ly->level, ly->step, what);
}

/* The loss of the forward's latents: mean over the batch of bits/dim
 * (glow_bits_per_dim), in double -- the bits/dim of the mean log-density,
 * since it is affine -- as this shard's share of the batch's. */
static double flow_loss(const glow_model *m, const glow__ws *ws) {
  double logp = 0.0;
  for (int32_t i = 0; i < ws->n; i++)
    logp += glow__log_prob(ws->eps + (int64_t)i * m->dim, m->dim, ws->ld[i]);
  /* 1 (exactly) when not sharded. */
  const double share = (double)ws->n / ws->n_total;
  return share * glow__bits_per_dim(logp / ws->n, m->dim, m->cfg.n_bits);
}

/* The class head on the top latent z: its cross-entropy term into *loss,
 * its gradient added to g = dL/dz and to G. */
static int head_backward(const glow_model *m, glow__ws *ws, const glow__pass *p,
                         const float *z, const int32_t *labels, float *g,
                         double *loss) {
  const glow__layer *top = glow__model_top(m);
  const double share = (double)ws->n / ws->n_total;
  double ce = glow__classifier_backward(&m->cls, m->params, ws->param_grad, z,
                                        labels, ws->n, ws->n_total,
                                        m->cfg.class_weight, g, ws->head);
  *loss += share * m->cfg.class_weight * ce / GLOW__LN_2;
  if (!isfinite(ce) ||
      !glow__all_finite(g, glow__rows(&top->in, p->n) * top->in.c) ||
      !grads_finite(m, ws->param_grad, m->cls.tensors))
    return not_finite(top, "classifier");
  return GLOW_OK;
}

/* One segment's hand-offs: kept by the forward (store mode), or rebuilt
 * by running the segment's forward again from its checkpoint. */
static int segment_handoffs(const glow_model *m, glow__ws *ws,
                            const glow__pass *p, int32_t seg, const float *x) {
  if (ws->store)
    return GLOW_OK;
  const int32_t first = m->seg_first[seg];
  glow__ws_replay_route(m, ws, seg);
  const glow__mode replay = {.route = &ws->replay, .rebuild = 1};
  const float *in = first == 0 ? x : ws->kept.in[first];
  return glow__flow_run(m, ws, p, first, m->seg_first[seg + 1], in, &replay,
                        NULL);
}

int glow__flow_backward(const glow_model *m, glow__ws *ws, const float *x,
                        const int32_t *labels, double *loss) {
  const double D = (double)m->dim;

  /* 1. Forward, keeping what the mode keeps and naming the first layer
   *    whose output is not finite. */
  const glow__mode mode = {.check = 1, .route = &ws->kept};
  int rc = glow__flow_forward(m, ws, &mode, x, labels, ws->eps);
  if (rc)
    return rc;

  /* 2. Loss and the gradients that start the backward pass. */
  *loss = flow_loss(m, ws);
  /* Rebuilding a segment adds to log-determinants again: into ws->ld,
   * whose values the loss no longer needs. */
  glow__logdet rebuilt = {0.0, ws->ld};
  /* A rebuilt prior writes the same latents again. */
  glow__pass p = glow__pass_of(m, ws, labels, ws->eps, &rebuilt);
  p.geps = (float)(1.0 / ((double)ws->n_total * D * GLOW__LN_2));
  p.gld = -p.geps;

  /* 3. Every segment from the top down, every layer in it from its last:
   *    g is dL/d(its output), none above the top prior. */
  const float *g = NULL;
  for (int32_t seg = m->n_segs - 1; seg >= 0; seg--) {
    if ((rc = segment_handoffs(m, ws, &p, seg, x)))
      return rc;
    for (int32_t i = m->seg_first[seg + 1] - 1; i >= m->seg_first[seg]; i--) {
      const glow__layer *ly = &m->layers[i];
      const glow__handoff *h = &ws->handoffs[i];
      float *gx = g == ws->grad[0] ? ws->grad[1] : ws->grad[0];
      rc = ly->ops->backward(ly, &p, h, g, gx, ws->param_grad);
      if (rc)
        return rc;
      g = gx;
      if (!ly->ops->rearranges &&
          (!glow__all_finite(g, glow__rows(&ly->in, p.n) * ly->in.c) ||
           !grads_finite(m, ws->param_grad, ly->tensors)))
        return not_finite(ly, ly->ops->name);
      if (ly->out.c > 0)
        continue;
      /* The top: the class head on the same latent, then the whole loss. */
      if (m->cfg.n_classes > 0 &&
          (rc = head_backward(m, ws, &p, h->x, labels, gx, loss)))
        return rc;
      if (!isfinite(*loss))
        return glow__fail(GLOW_ERR_NUMERIC, "the loss is not finite");
    }
  }
  return GLOW_OK;
}
