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

/* The affine coupling's scales, s = sigmoid(raw + 2) for each value of
 * x2, go through glow__sigmoid a tile at a time: rows [r0, r0 + nr),
 * channels [k0, k0 + nk) of x2, at most RUN values, gathered from the
 * network's output (raw is every other channel).  Tiles are whole rows,
 * as many as fit, or pieces of one row longer than RUN, in row order. */
#define RUN 256

typedef struct {
  int64_t r0, nr;                           /* rows; nr = 0: past the last */
  int32_t k0, nk;                           /* channels of x2 */
  float s[RUN], one_minus[RUN], log_s[RUN]; /* value (r, k) at r * nk + k */
} scale_tile;

/* The tile from row r0, channel k0 on (k0 < half), within rows [.., hi). */
static void tile_at(scale_tile *t, int64_t r0, int32_t k0, int32_t half,
                    int64_t hi) {
  t->r0 = r0;
  t->k0 = k0;
  t->nk = half - k0 < RUN ? half - k0 : RUN;
  const int64_t fit = k0 == 0 && half <= RUN ? RUN / half : 1;
  t->nr = hi - r0 < fit ? hi - r0 : fit;
}

/* The tile after t. */
static void tile_next(scale_tile *t, int32_t half, int64_t hi) {
  if (t->k0 + t->nk < half)
    tile_at(t, t->r0, t->k0 + t->nk, half, hi);
  else
    tile_at(t, t->r0 + t->nr, 0, half, hi);
}

/* t's scales from the network's output nn (co channels a row). */
static void tile_scales(scale_tile *t, const float *nn, int32_t co) {
  float raw[RUN];
  for (int64_t r = 0; r < t->nr; r++)
    for (int32_t k = 0; k < t->nk; k++)
      raw[r * t->nk + k] = nn[(t->r0 + r) * co + 2 * (t->k0 + k) + 1] + 2.0f;
  glow__sigmoid(raw, t->nr * t->nk, t->s, t->one_minus, t->log_s);
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
  if (j->cp->kind == GLOW_COUPLING_ADDITIVE) {
    for (int64_t r = lo; r < hi; r++) {
      const float *u = j->in + r * c, *nn = j->nn + r * co;
      float *v = j->out + r * c;
      for (int32_t k = 0; k < half; k++) {
        v[k] = u[k];
        v[half + k] = u[half + k] + nn[k];
      }
    }
    return;
  }
  scale_tile t;
  float acc = 0.0f; /* one pixel's few terms; summed in double */
  for (tile_at(&t, lo, 0, half, hi); t.nr > 0; tile_next(&t, half, hi)) {
    tile_scales(&t, j->nn, co);
    for (int64_t i = 0; i < t.nr; i++) {
      const int64_t r = t.r0 + i;
      const float *u = j->in + r * c, *nn = j->nn + r * co;
      float *v = j->out + r * c;
      for (int32_t q = 0; q < t.nk; q++) {
        const int32_t k = t.k0 + q;
        v[k] = u[k];
        v[half + k] = (u[half + k] + nn[2 * k]) * t.s[i * t.nk + q];
        acc += t.log_s[i * t.nk + q];
      }
      if (t.k0 + t.nk == half) { /* the pixel's last channel */
        j->terms[r] = acc;
        acc = 0.0f;
      }
    }
  }
}

/* Rows each part of a team takes at least: a row is a sigmoid and its
 * logarithm per channel of x2, gathered and used one at a time, a few ns
 * each; waking the team costs microseconds. */
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
  if (j->cp->kind == GLOW_COUPLING_ADDITIVE) {
    for (int64_t r = lo; r < hi; r++) {
      const float *v = j->in + r * c, *nn = j->nn + r * co;
      float *u = j->out + r * c;
      for (int32_t k = 0; k < half; k++) {
        u[k] = v[k];
        u[half + k] = v[half + k] - nn[k];
      }
    }
    return;
  }
  scale_tile t;
  for (tile_at(&t, lo, 0, half, hi); t.nr > 0; tile_next(&t, half, hi)) {
    tile_scales(&t, j->nn, co);
    for (int64_t i = 0; i < t.nr; i++) {
      const int64_t r = t.r0 + i;
      const float *v = j->in + r * c, *nn = j->nn + r * co;
      float *u = j->out + r * c;
      for (int32_t q = 0; q < t.nk; q++) {
        const int32_t k = t.k0 + q;
        u[k] = v[k];
        u[half + k] = v[half + k] / t.s[i * t.nk + q] - nn[2 * k];
      }
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

/* The affine coupling's element-wise backward for rows [0, rows): gx's
 * second half and the network's output gradient gnn (see backward). */
static void couple_backward_rows(const coupling *cp, const float *x,
                                 const float *nn, const float *gy, float gld,
                                 int64_t rows, float *gx, float *gnn) {
  const int32_t c = cp->c, half = c / 2, co = cp->out.cout;
  scale_tile t;
  for (tile_at(&t, 0, 0, half, rows); t.nr > 0; tile_next(&t, half, rows)) {
    tile_scales(&t, nn, co);
    for (int64_t i = 0; i < t.nr; i++) {
      const int64_t r = t.r0 + i;
      const float *o = nn + r * co;
      for (int32_t q = 0; q < t.nk; q++) {
        const int32_t k = t.k0 + q;
        const float sk = t.s[i * t.nk + q];
        const float y2 = (x[r * c + half + k] + o[2 * k]) * sk;
        const float g2 = gy[r * c + half + k];
        gx[r * c + half + k] = g2 * sk;
        gnn[r * co + 2 * k] = g2 * sk;
        gnn[r * co + 2 * k + 1] = t.one_minus[i * t.nk + q] * (g2 * y2 + gld);
      }
    }
  }
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
  if (cp->kind == GLOW_COUPLING_ADDITIVE)
    for (int64_t r = 0; r < rows; r++)
      for (int32_t k = 0; k < half; k++)
        gnn[r * co + k] = gx[r * c + half + k] = gy[r * c + half + k];
  else
    couple_backward_rows(cp, x, nn, gy, gld, rows, gx, gnn);
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
