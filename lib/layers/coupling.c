/*
 * coupling.c -- affine and additive coupling layers and their network.
 *
 * The first half of the channels (x1) passes through unchanged and drives a
 * small convolutional network NN(x1); the second half is transformed:
 *   affine:   y2 = (x2 + shift) * sigmoid(raw + 2), NN output (shift, raw)
 *             interleaved along channels, as in openai/glow;
 *   additive: y2 = x2 + NN(x1).
 * NN = conv3x3 -> actnorm -> ReLU -> conv1x1 -> actnorm -> ReLU -> zconv.
 *
 * Hand-off: the network's activations on x1 (= y1), which forward and
 * inverse compute alike, laid out in `act` as r1 (rows x hidden, after the
 * first actnorm and ReLU), r2 (rows x hidden, after the second) and the
 * output nn (rows x cout).
 */
#include <math.h>
#include <string.h>

#include "layer.h"

typedef struct {
  int32_t kind; /* GLOW_COUPLING_* */
  int32_t c, hidden;
  int64_t w1; /* [3][3][c/2][hidden] */
  glow__an an1;
  int64_t w2; /* [hidden][hidden] */
  glow__an an2;
  glow__zconv out; /* hidden -> c (affine) or c/2 (additive) */
} coupling;

/* Standard deviation of openai/glow's default weight initialiser. */
#define INIT_STD 0.05

static void build(glow__layer *ly, const glow_config *cfg, glow__registry *r) {
  coupling tmp, *cp = ly->self ? ly->self : &tmp;
  const int32_t c = ly->in.c, hid = cfg->hidden;
  ly->out = ly->in;
  cp->kind = cfg->coupling;
  cp->c = c;
  cp->hidden = hid;
  cp->w1 = glow__reg_tensor(r, ly->prefix, "coupling.conv1.weight", 4,
                            (const int32_t[]){3, 3, c / 2, hid});
  glow__an_register(&cp->an1, r, ly->prefix, "coupling.actnorm1", hid);
  cp->w2 = glow__reg_tensor(r, ly->prefix, "coupling.conv2.weight", 2,
                            (const int32_t[]){hid, hid});
  glow__an_register(&cp->an2, r, ly->prefix, "coupling.actnorm2", hid);
  glow__zconv_register(&cp->out, r, ly->prefix, "coupling.conv3", hid,
                       cfg->coupling == GLOW_COUPLING_AFFINE ? c : c / 2);
}

static void init_normal(float *P, int64_t off, int64_t count, uint64_t seed,
                        uint64_t stream) {
  for (int64_t i = 0; i < count; i++)
    P[off + i] = (float)(INIT_STD * glow__normal(seed, stream, (uint64_t)i));
}

/* N(0, 0.05) for the network's first two convolutions (the step's streams
 * 1 and 2); the zero conv and the actnorms start at zero. */
static int init(const glow__layer *ly, float *P, uint64_t seed,
                uint64_t stream) {
  const coupling *cp = ly->self;
  init_normal(P, cp->w1, (int64_t)9 * (cp->c / 2) * cp->hidden, seed,
              stream + 1);
  init_normal(P, cp->w2, (int64_t)cp->hidden * cp->hidden, seed, stream + 2);
  return GLOW_OK;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static void needs(const glow__layer *ly, glow__needs *nd) {
  const coupling *cp = ly->self;
  const int64_t hw = (int64_t)ly->in.h * ly->in.w, hid = cp->hidden;
  const int64_t half = cp->c / 2, co = cp->out.cout;
  nd->act = hw * (2 * hid + co);
  /* The network's output, last in act: recompute mode keeps it, so that
   * rebuilding the step runs the zero convolution (a fifth of a cifar
   * step's FLOPs) once, not twice; as large as the step's input. */
  nd->tail = hw * co;
  nd->grad_act = hw * (max64(hid, half) + hid + co);
  /* Every convolution works on the patches of its narrower side, at most
   * max(hidden, c/2) channels wide. */
  nd->patches = glow__conv3x3_col_per_image(ly->in.h, ly->in.w,
                                            (int32_t)max64(hid, half));
  nd->conv_weight =
      glow__conv3x3_weight_floats((int32_t)hid, (int32_t)max64(half, co));
  nd->chan = max64(hid, cp->c);
  nd->pixels = hw; /* the affine log-determinant's terms */
}

/* NN(x1), x1 the first c/2 channels of x (rows of c), into act. */
static const float *network(const coupling *cp, const glow__pass *p,
                            const glow__shape *sh, const float *x, float *act) {
  const int32_t n = p->n, c = cp->c, hid = cp->hidden;
  const int64_t rows = glow__rows(sh, n);
  float *r1 = act, *r2 = act + rows * hid, *nn = r2 + rows * hid;
  /* Each actnorm and ReLU is applied by the product before it, as it
   * stores its sums (a pass over r1 or r2 saved), except in
   * data-dependent init, which needs the product's result first. */
  glow__epilogue ep;
  glow__conv3x3(x, c, n, sh->h, sh->w, c / 2, p->P + cp->w1, hid, r1,
                &p->s->conv,
                glow__an_epilogue(&cp->an1, p->P, p->init, 1, p->s, &ep));
  if (p->init)
    glow__an_forward(&cp->an1, p->P, p->init, r1, r1, rows, 1, p->s);
  glow__matmul(r1, hid, rows, hid, p->P + cp->w2, hid, r2, &p->s->conv,
               glow__an_epilogue(&cp->an2, p->P, p->init, 1, p->s, &ep));
  if (p->init)
    glow__an_forward(&cp->an2, p->P, p->init, r2, r2, rows, 1, p->s);
  const size_t nn_bytes = sizeof(float) * (size_t)(rows * cp->out.cout);
  if (p->tail_kept) { /* the same values the first run computed */
    memcpy(nn, p->tail, nn_bytes);
    return nn;
  }
  glow__zconv_forward(&cp->out, p->P, r2, hid, n, sh->h, sh->w, nn, p->s);
  if (p->tail)
    memcpy(p->tail, nn, nn_bytes);
  return nn;
}

/* The affine coupling's scale s = sigmoid(v), with 1 - s and e = e^{-|v|}
 * (so that log s = min(v, 0) - log1p(e)), from one exp.  With e <= 1,
 * s and 1 - s are 1 / (1 + e) and e / (1 + e), in the order of v's sign:
 * each has full precision, where 1.0f - s would cancel for large v, and
 * nothing overflows for v of any size. */
typedef struct {
  float s, one_minus, e;
} sigmoid_parts;

static inline sigmoid_parts sigmoid3(float v) {
  const float e = expf(-fabsf(v));
  const float r = 1.0f / (1.0f + e); /* sigmoid(|v|) */
  sigmoid_parts q;
  q.e = e;
  q.s = v >= 0.0f ? r : e * r;
  q.one_minus = v >= 0.0f ? e * r : r;
  return q;
}

/* Rows [lo, hi) of the coupling itself, given the network's output: y
 * (out) from x (in), and for the affine coupling each pixel's log s summed
 * over its channels into terms[row]. */
typedef struct {
  const coupling *cp;
  const float *in, *nn; /* the layer's input (x, or y inverse), NN's output */
  float *out, *terms;   /* its output; the affine forward's terms */
} couple_rows;

static void couple_forward_rows(void *ctx, int64_t lo, int64_t hi) {
  const couple_rows *j = ctx;
  const int32_t c = j->cp->c, half = c / 2, co = j->cp->out.cout;
  for (int64_t r = lo; r < hi; r++) {
    const float *u = j->in + r * c, *nn = j->nn + r * co;
    float *v = j->out + r * c;
    if (j->cp->kind == GLOW_COUPLING_ADDITIVE) {
      for (int32_t k = 0; k < half; k++) {
        v[k] = u[k];
        v[half + k] = u[half + k] + nn[k];
      }
      continue;
    }
    float acc = 0.0f; /* one pixel's few terms; summed in double */
    for (int32_t k = 0; k < half; k++) {
      float raw = nn[2 * k + 1] + 2.0f;
      sigmoid_parts t = sigmoid3(raw);
      v[k] = u[k];
      v[half + k] = (u[half + k] + nn[2 * k]) * t.s;
      acc += (raw < 0.0f ? raw : 0.0f) - log1pf(t.e); /* log s */
    }
    j->terms[r] = acc;
  }
}

/* Rows each part of a team takes at least: a row is a sigmoid and a
 * logarithm per channel of x2, some 20 ns each. */
static int64_t couple_grain(int32_t half) { return 256 / half + 1; }

static int forward(const glow__layer *ly, const glow__pass *p, const float *x,
                   float *y, float *keep, glow__handoff *left) {
  const coupling *cp = ly->self;
  const int64_t hw = (int64_t)ly->in.h * ly->in.w, rows = hw * p->n;
  couple_rows job = {cp, x, network(cp, p, &ly->in, x, keep), y, p->s->pixel_f};
  /* Rows are independent (a team splits them), and each image's terms are
   * then summed in pixel order, as one thread would. */
  glow__team_for(p->s->conv.team, rows, couple_grain(cp->c / 2),
                 couple_forward_rows, &job);
  if (cp->kind == GLOW_COUPLING_AFFINE)
    for (int32_t i = 0; i < p->n; i++) {
      double ld = 0.0;
      for (int64_t q = 0; q < hw; q++)
        ld += job.terms[i * hw + q];
      p->ld->image[i] += ld;
    }
  if (left)
    *left = (glow__handoff){x, y, keep};
  return GLOW_OK;
}

/* Rows [lo, hi) of the inverse coupling, given the network's output
 * (couple_rows, terms unused): x (out) from y (in). */
static void couple_inverse_rows(void *ctx, int64_t lo, int64_t hi) {
  const couple_rows *j = ctx;
  const int32_t c = j->cp->c, half = c / 2, co = j->cp->out.cout;
  for (int64_t r = lo; r < hi; r++) {
    const float *v = j->in + r * c, *nn = j->nn + r * co;
    float *u = j->out + r * c;
    for (int32_t k = 0; k < half; k++) {
      const float y2 = v[half + k];
      u[k] = v[k];
      if (j->cp->kind == GLOW_COUPLING_ADDITIVE)
        u[half + k] = y2 - nn[k];
      else
        u[half + k] = y2 / sigmoid3(nn[2 * k + 1] + 2.0f).s - nn[2 * k];
    }
  }
}

static int inverse(const glow__layer *ly, const glow__pass *p, const float *y,
                   float *x) {
  const coupling *cp = ly->self;
  const int64_t rows = glow__rows(&ly->in, p->n);
  /* The network on y1 = x1, into the scratch. */
  couple_rows job = {cp, y, network(cp, p, &ly->in, y, p->s->act), x, NULL};
  glow__team_for(p->s->conv.team, rows, couple_grain(cp->c / 2),
                 couple_inverse_rows, &job);
  return GLOW_OK;
}

/* Backward, given the input x and the network's activations.  Affine, per
 * element with s = sigmoid(raw + 2), y2 = (x2 + shift) s, logdet += log s:
 *   dL/dx2 = dL/dshift = dL/dy2 s,
 *   dL/draw = (1 - s) (dL/dy2 y2 + dL/dlogdet),
 * since ds/draw = s (1 - s) and d log s / draw = 1 - s.  x1 passes through
 * and also feeds the network, so dL/dx1 = dL/dy1 + the network's
 * backward. */
static int backward(const glow__layer *ly, const glow__pass *p,
                    const glow__handoff *h, const float *gy, float *gx,
                    float *G) {
  const coupling *cp = ly->self;
  const int32_t c = cp->c, half = c / 2, hid = cp->hidden, n = p->n;
  const int32_t co = cp->out.cout, hh = ly->in.h, ww = ly->in.w;
  const int64_t rows = glow__rows(&ly->in, n);
  const float *r1 = h->act, *r2 = r1 + rows * hid, *nn = r2 + rows * hid;
  const float *x = h->x, *P = p->P;
  const float gld = p->gld;
  /* Gradient scratch: ga (rows x max(hidden, c/2)), gb (rows x hidden),
   * gnn (rows x cout). */
  float *ga = p->s->grad_act;
  float *gb = ga + rows * max64(hid, half), *gnn = gb + rows * hid;
  for (int64_t r = 0; r < rows; r++) {
    const float *gv = gy + r * c + half;
    float *go = gx + r * c + half;
    const float *xv = x + r * c + half, *o = nn + r * co;
    float *gn = gnn + r * co;
    if (cp->kind == GLOW_COUPLING_ADDITIVE) {
      for (int32_t k = 0; k < half; k++)
        gn[k] = go[k] = gv[k];
      continue;
    }
    for (int32_t k = 0; k < half; k++) {
      sigmoid_parts q = sigmoid3(o[2 * k + 1] + 2.0f);
      float y2 = (xv[k] + o[2 * k]) * q.s;
      float g2 = gv[k];
      go[k] = g2 * q.s;
      gn[2 * k] = g2 * q.s;
      gn[2 * k + 1] = q.one_minus * (g2 * y2 + gld);
    }
  }
  /* The network backwards: zconv, actnorm2+ReLU, conv1x1, actnorm1+ReLU,
   * conv3x3, the gradients passing between ga and gb. */
  glow__zconv_backward(&cp->out, P, G, r2, hid, nn, gnn, ga, n, hh, ww, p->s);
  glow__an_backward(&cp->an2, P, G, r2, ga, ga, rows, 1, 0.0, p->s);
  glow__matmul_grad(r1, hid, rows, hid, P + cp->w2, hid, ga, G + cp->w2, gb,
                    &p->s->conv);
  glow__an_backward(&cp->an1, P, G, r1, gb, gb, rows, 1, 0.0, p->s);
  glow__conv3x3_grad_weight(x, c, n, hh, ww, half, gb, hid, G + cp->w1,
                            &p->s->conv);
  glow__conv3x3_grad_input(gb, n, hh, ww, half, P + cp->w1, hid, ga,
                           p->s->wflip, &p->s->conv);
  for (int64_t r = 0; r < rows; r++) {
    const float *gv = gy + r * c, *gi = ga + r * half;
    float *go = gx + r * c;
    for (int32_t k = 0; k < half; k++)
      go[k] = gv[k] + gi[k];
  }
  return GLOW_OK;
}

const glow__layer_ops glow__coupling_layer = {
    .name = "coupling",
    .size = sizeof(coupling),
    .build = build,
    .init = init,
    .needs = needs,
    .forward = forward,
    .inverse = inverse,
    .backward = backward,
};
