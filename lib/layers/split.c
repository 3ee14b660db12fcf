/*
 * split.c -- the split at the end of every level but the top: half of the
 * channels (z2) leave the flow as that level's latent, the other half (z1)
 * pass on to the next level.
 *
 * z2 has the conditional prior N(mean(z1), exp(logs(z1))^2), where (mean,
 * logs) come interleaved from a zero-initialised 3x3 conv of z1.  The layer
 * reports eps = (z2 - mean) * exp(-logs) and adds -sum(logs) to the
 * log-determinant, so that log p(z2 | z1) = log N(eps; 0, 1) + logdet.
 *
 * Hand-off: the prior network's output on z1 (rows x c, mean and logs
 * interleaved).
 */
#include <math.h>
#include <string.h>

#include "layer.h"

typedef struct {
  int32_t c; /* channels of the input; half pass on */
  glow__zconv prior;
} split;

static void build(glow__layer *ly, const glow_config *cfg, glow__registry *r) {
  (void)cfg;
  split tmp, *sp = ly->self ? ly->self : &tmp;
  sp->c = ly->in.c;
  ly->out = (glow__shape){ly->in.h, ly->in.w, ly->in.c / 2};
  glow__zconv_register(&sp->prior, r, ly->prefix, "prior", ly->in.c / 2,
                       ly->in.c);
}

static void needs(const glow__layer *ly, glow__needs *nd) {
  const int64_t hw = (int64_t)ly->in.h * ly->in.w, c = ly->in.c;
  nd->act = hw * c;
  nd->grad_act = hw * (c + c / 2);
  nd->patches = glow__conv3x3_col_per_image(ly->in.h, ly->in.w, ly->in.c / 2);
  nd->conv_weight = glow__conv3x3_weight_floats(ly->in.c / 2, ly->in.c);
  nd->chan = c;
}

/* x (n, h, w, c) -> eps block of z2, y = z1 (n, h, w, c/2). */
static int forward(const glow__layer *ly, const glow__pass *p, const float *x,
                   float *y, float *keep, glow__handoff *left) {
  const split *sp = ly->self;
  const int32_t c = sp->c, half = c / 2;
  const int64_t hw = (int64_t)ly->in.h * ly->in.w;
  glow__zconv_forward(&sp->prior, p->P, x, c, p->n, ly->in.h, ly->in.w, keep,
                      p->s);
  for (int32_t i = 0; i < p->n; i++) {
    const float *z = x + (int64_t)i * hw * c;
    const float *pr = keep + (int64_t)i * hw * c;
    float *e = p->eps + (int64_t)i * p->dim + ly->eps_off;
    float *z1 = y + (int64_t)i * hw * half;
    double ld = 0.0;
    for (int64_t q = 0; q < hw; q++) {
      for (int32_t k = 0; k < half; k++) {
        float mean = pr[q * c + 2 * k], logs = pr[q * c + 2 * k + 1];
        e[q * half + k] = (z[q * c + half + k] - mean) * expf(-logs);
        ld -= logs;
      }
      memcpy(z1 + q * half, z + q * c, sizeof(float) * (size_t)half);
    }
    p->ld->image[i] += ld;
  }
  if (left)
    *left = (glow__handoff){x, y, keep};
  return GLOW_OK;
}

/* y = z1 (n, h, w, c/2) and the eps block (times p->scale) -> x. */
static int inverse(const glow__layer *ly, const glow__pass *p, const float *y,
                   float *x) {
  const split *sp = ly->self;
  const int32_t c = sp->c, half = c / 2;
  const int64_t hw = (int64_t)ly->in.h * ly->in.w;
  const float scale = p->scale;
  float *pr_all = p->s->act; /* the prior network's output, scratch */
  glow__zconv_forward(&sp->prior, p->P, y, half, p->n, ly->in.h, ly->in.w,
                      pr_all, p->s);
  for (int32_t i = 0; i < p->n; i++) {
    const float *z1 = y + (int64_t)i * hw * half;
    const float *pr = pr_all + (int64_t)i * hw * c;
    const float *e = p->eps + (int64_t)i * p->dim + ly->eps_off;
    float *z = x + (int64_t)i * hw * c;
    for (int64_t q = 0; q < hw; q++) {
      memcpy(z + q * c, z1 + q * half, sizeof(float) * (size_t)half);
      for (int32_t k = 0; k < half; k++) {
        float mean = pr[q * c + 2 * k], logs = pr[q * c + 2 * k + 1];
        z[q * c + half + k] = mean + expf(logs) * (scale * e[q * half + k]);
      }
    }
  }
  return GLOW_OK;
}

/* With eps = (z2 - mean) e^{-logs}, dL/deps = eps * geps (the Gaussian
 * term of the loss) and logdet -= logs (weight gld = dL/dlogdet):
 *   dL/dz2 = eps geps e^{-logs},  dL/dmean = -dL/dz2,
 *   dL/dlogs = -eps^2 geps - gld.
 * z1 reaches the loss twice: through the next level (gy) and through the
 * prior network. */
static int backward(const glow__layer *ly, const glow__pass *p,
                    const glow__handoff *h, const float *gy, float *gx,
                    float *G) {
  const split *sp = ly->self;
  const int32_t c = sp->c, half = c / 2;
  const int64_t hw = (int64_t)ly->in.h * ly->in.w;
  const int64_t rows = glow__rows(&ly->in, p->n);
  const float geps = p->geps, gld = p->gld;
  const float *pr = h->act;
  /* Gradient scratch: of the network's output (rows x c), and of its
   * input (rows x c/2). */
  float *gpr = p->s->grad_act, *gz1 = gpr + rows * c;
  for (int32_t i = 0; i < p->n; i++) {
    const float *e = p->eps + (int64_t)i * p->dim + ly->eps_off;
    for (int64_t q = 0; q < hw; q++) {
      const int64_t r = i * hw + q;
      const float *o = pr + r * c;
      float *go = gpr + r * c, *gz2 = gx + r * c + half;
      for (int32_t k = 0; k < half; k++) {
        float ev = e[q * half + k] * geps;
        gz2[k] = ev * expf(-o[2 * k + 1]);
        go[2 * k] = -gz2[k];
        go[2 * k + 1] = -ev * e[q * half + k] - gld;
      }
    }
  }
  glow__zconv_backward(&sp->prior, p->P, G, h->x, c, pr, gpr, gz1, p->n,
                       ly->in.h, ly->in.w, p->s);
  for (int64_t r = 0; r < rows; r++)
    for (int32_t k = 0; k < half; k++)
      gx[r * c + k] = gy[r * half + k] + gz1[r * half + k];
  return GLOW_OK;
}

const glow__layer_ops glow__split_layer = {
    .name = "split prior",
    .size = sizeof(split),
    .build = build,
    .needs = needs,
    .forward = forward,
    .inverse = inverse,
    .backward = backward,
};
