/*
 * layer.h -- the one interface every layer of the flow implements, and the
 * building blocks that layers share.
 *
 * A model is a list of layers (squeeze, actnorm, permutation, coupling,
 * split prior, top prior), each mapping a tensor of n images of shape `in`
 * to one of shape `out`.  A layer
 *   - registers its parameter tensors and fixed buffers (build), and sets
 *     their initial values (init);
 *   - states the scratch it needs (needs), which the workspace sizes;
 *   - runs forward (x -> y, adding its log-determinant), inverse (y -> x)
 *     and backward (dL/dy -> dL/dx, adding its parameter gradients).
 * The caller owns every buffer: x and y are always distinct, and which
 * buffer holds what after a call is the caller's business.  What a forward
 * leaves for the backward is a glow__handoff it fills in; the backward
 * reads nothing else, so a hand-off kept from the training forward (store
 * mode) and one from running the forward again (recompute mode) serve
 * alike.
 *
 * A prior layer writes (forward) or reads (inverse) its block of the
 * latent rows.  The top prior is a sink: nothing passes on (out.c == 0,
 * y == NULL, and its backward gets no dL/dy).
 */
#ifndef GLOW_LAYER_H
#define GLOW_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "kernels.h"

/* ---- Registration ---------------------------------------------------------- */

#define GLOW__NAME_MAX 64

/* One named tensor in the flat parameter buffer. */
typedef struct {
  char name[GLOW__NAME_MAX];
  int64_t offset; /* into params/grads, in floats */
  int32_t ndim;
  int32_t shape[4];
} glow__tensor;

/* Number of floats of a tensor: the product of its shape. */
static inline int64_t glow__tensor_count(const glow__tensor *t) {
  int64_t count = 1;
  for (int32_t d = 0; d < t->ndim; d++)
    count *= t->shape[d];
  return count;
}

/* The parameter tensors of one layer: `count` consecutive entries of the
 * tensor table from index `first`, so one contiguous range of the flat
 * buffer (none for count 0). */
typedef struct {
  int32_t first, count;
} glow__span;

/* A fixed buffer: state that is not trained but saved with the model (a
 * permutation, the signs of an LU weight's diagonal). */
enum {
  GLOW__FIXED_INDEX,    /* a permutation of [0, count) */
  GLOW__FIXED_REVERSAL, /* the permutation count-1, ..., 1, 0 */
  GLOW__FIXED_SIGN      /* entries +1 or -1 */
};
typedef struct {
  char name[GLOW__NAME_MAX];
  int32_t kind; /* GLOW__FIXED_* */
  int32_t count;
  int32_t *index; /* INDEX, REVERSAL: the values */
  float *sign;    /* SIGN: the values */
} glow__fixed;

/* Where layers register what they own.  The model builds its table in two
 * passes over the same code: a sizing pass (tensors == NULL) that only
 * counts, then a naming pass that fills the tables and hands out fixed
 * buffers from pools sized by the first. */
typedef struct {
  glow__tensor *tensors;
  int32_t n_tensors;
  int64_t n_params;
  glow__fixed *fixed;
  int32_t n_fixed;
  int64_t n_fixed_values; /* ints and floats handed out so far */
  int32_t *int_pool;
  float *float_pool;
} glow__registry;

/* Register a parameter tensor named prefix + suffix; its offset is the
 * running parameter count. */
int64_t glow__reg_tensor(glow__registry *r, const char *prefix,
                         const char *suffix, int32_t ndim,
                         const int32_t *shape);
/* Register a fixed buffer of `count` entries; NULL in the sizing pass. */
int32_t *glow__reg_index(glow__registry *r, const char *prefix,
                         const char *suffix, int32_t count, int32_t kind);
float *glow__reg_sign(glow__registry *r, const char *prefix, const char *suffix,
                      int32_t count);
/* The tensors registered since the table held `first` of them. */
static inline glow__span glow__reg_since(const glow__registry *r,
                                         int32_t first) {
  glow__span s = {first, r->n_tensors - first};
  return s;
}

/* ---- Scratch ------------------------------------------------------------------
 * What a layer may borrow during a pass, sized by the workspace from every
 * layer's glow__needs, so that no pass allocates. */
typedef struct {
  int64_t act;         /* floats per image a layer leaves for its backward */
  int64_t tail;        /* of those, floats per image at their end that
                          recompute mode keeps from the training forward,
                          so that rebuilding the layer need not compute
                          them again (glow__pass.tail); 0: none */
  int64_t grad_act;    /* floats per image of gradient scratch */
  int64_t patches;     /* floats per image of convolution patches */
  int64_t conv_weight; /* floats of one conv weight (gradient taps, flip) */
  int64_t chan;        /* the widest per-channel vector */
  int64_t mat;         /* order of the largest 1x1 weight */
  int64_t pixels;      /* floats per image of per-pixel terms */
  /* Floats this layer keeps in each workspace from call to call, not per
   * image (glow__pass.cache); a workspace holds every layer's, so
   * glow__needs_max leaves this one out. */
  int64_t cache;
} glow__needs;

/* The largest of each need: what a workspace for all of them holds. */
void glow__needs_max(glow__needs *acc, const glow__needs *more);

typedef struct {
  glow__conv_scratch conv; /* patches, gradient taps, GEMM packing */
  /* A layer's network activations where nothing keeps them
   * (n * needs.act). */
  float *act;
  float *grad_act; /* training: gradients of those (n * needs.grad_act) */
  float *wflip;    /* training: a flipped conv weight */
  float *chan_f;   /* 3 * chan floats: per-channel factors, partial sums */
  float *pixel_f;  /* n * pixels floats: a term per pixel, summed after */
  double *chan_d;  /* 2 * chan doubles: per-channel statistics */
  /* 2 * mat^2 + mat doubles: a 1x1 weight in double, factored in place,
   * with its pivots. */
  double *mat64;
  float *mat32;    /* mat^2 floats: a 1x1 weight or its inverse */
  float *mat_grad; /* training: mat^2 floats, a 1x1 weight's data term */
} glow__scratch;

/* ---- Passes -------------------------------------------------------------------- */

/* Log-determinant accumulator: terms equal for every image (actnorm, 1x1
 * convolutions) go to `shared` once, per-image terms to `image`; the
 * flow adds the two at the end. */
typedef struct {
  double shared;
  double *image; /* n entries */
} glow__logdet;

/* Everything a pass gives its layers besides x and y. */
typedef struct {
  const float *P;        /* parameters, read only */
  float *init;           /* data-dependent init: P, writable, for layers
                            that set their parameters from their input;
                            NULL in every other pass */
  int32_t n;             /* images */
  const int32_t *labels; /* conditional models: n labels */
  float *eps;            /* latent rows (n x D): written by the priors'
                            forward, read by their inverse and backward */
  int64_t dim;           /* D, the length of a latent row */
  float scale;           /* inverse: the latents' multiplier (temperature) */
  glow__logdet *ld;      /* forward: accumulates log|det| */
  glow__scratch *s;
  /* Backward: dL/deps = eps * geps for the Gaussian term of the loss, and
   * dL/dlogdet of each image, gld. */
  float geps, gld;
  int32_t n_total; /* images of the whole batch (the loss's mean) */
  /* Recompute mode (glow__needs.tail): where the forward keeps the last
   * n * tail floats of its activations (NULL: nowhere), and whether they
   * are there already (tail_kept: this forward rebuilds one that ran on
   * the same input, so the layer copies them instead of computing them)
   * or are to be written there.  Set per layer by the flow. */
  float *tail;
  int tail_kept;
  /* The layer's needs.cache floats in this workspace, zero when the
   * workspace was made, kept from call to call (NULL: none).  Set per
   * layer by the flow. */
  float *cache;
} glow__pass;

/* What a forward or an inverse leaves for the backward. */
typedef struct {
  const float *x;   /* the layer's input */
  const float *y;   /* its output (NULL for the top prior) */
  const float *act; /* its activations, in a layout of its own, or NULL */
} glow__handoff;

/* ---- The interface --------------------------------------------------------------- */

typedef struct {
  int32_t h, w, c;
} glow__shape;

typedef struct glow__layer glow__layer;

typedef struct {
  const char *name; /* in messages: "actnorm", "coupling", ... */
  size_t size;      /* bytes of the layer's own state (glow__layer.self) */
  int rearranges;   /* 1 if its output only moves its input's values: the
                       finite checks skip it, and name the layer that
                       computes first */
  /* Set the output shape and register tensors and fixed buffers under
   * ly->prefix; in the naming pass also fill the layer's state. */
  void (*build)(glow__layer *ly, const glow_config *cfg, glow__registry *r);
  /* Initial values of its parameters and fixed buffers (may be NULL:
   * zeros), from the model's seed and this layer's random stream. */
  int (*init)(const glow__layer *ly, float *P, uint64_t seed, uint64_t stream);
  void (*needs)(const glow__layer *ly, glow__needs *nd);
  /* x (n x in) -> y (n x out).  keep: n * needs.act floats where it puts
   * what its backward reads; *left describes all of that. */
  int (*forward)(const glow__layer *ly, const glow__pass *p, const float *x,
                 float *y, float *keep, glow__handoff *left);
  /* y -> x (priors read their latent block, times p->scale). */
  int (*inverse)(const glow__layer *ly, const glow__pass *p, const float *y,
                 float *x);
  /* gy = dL/dy (NULL for a sink) -> gx = dL/dx, dL/dparameters added to
   * G (the flat gradient layout). */
  int (*backward)(const glow__layer *ly, const glow__pass *p,
                  const glow__handoff *h, const float *gy, float *gx, float *G);
} glow__layer_ops;

struct glow__layer {
  const glow__layer_ops *ops;
  int32_t level, step;         /* where it sits; step -1 outside the steps */
  char prefix[GLOW__NAME_MAX]; /* its tensors' names start with this */
  glow__shape in, out;
  int64_t eps_off; /* priors: their block's offset in a row */
  glow__span tensors;
  void *self; /* ops->size bytes of layer state */
};

/* The layer types, in their own files. */
extern const glow__layer_ops glow__squeeze_layer;  /* squeeze.c */
extern const glow__layer_ops glow__actnorm_layer;  /* actnorm.c */
extern const glow__layer_ops glow__permute_layer;  /* permute.c */
extern const glow__layer_ops glow__coupling_layer; /* coupling.c */
extern const glow__layer_ops glow__split_layer;    /* split.c */
extern const glow__layer_ops glow__top_layer;      /* top.c */

/* Floats per image of a layer's latent block: what a prior standardises
 * and does not pass on (0 for every other layer). */
static inline int64_t glow__latent_floats(const glow__layer *ly) {
  if (ly->in.c <= ly->out.c) /* not a prior (a squeeze widens) */
    return 0;
  return (int64_t)ly->in.h * ly->in.w * (ly->in.c - ly->out.c);
}

/* Rows (pixels of all images) of a layer's input. */
static inline int64_t glow__rows(const glow__shape *s, int32_t n) {
  return (int64_t)n * s->h * s->w;
}

/* ---- Building blocks ----------------------------------------------------------- */

/* Activation normalisation, y = (x + bias) * exp(logs) per channel: a flow
 * step's first layer and part of every coupling network (actnorm.c). */
typedef struct {
  int32_t c;
  int64_t bias, logs; /* offsets of [c] tensors */
} glow__an;
void glow__an_register(glow__an *an, glow__registry *r, const char *prefix,
                       const char *name, int32_t c);
/* y = actnorm(x) (x == y allowed), max(y, 0) if relu.  With init, the
 * parameters are first set from x's statistics. */
void glow__an_forward(const glow__an *an, const float *P, float *init,
                      const float *x, float *y, int64_t rows, int relu,
                      glow__scratch *s);
/* The actnorm (and ReLU if relu) as the epilogue of the product that makes
 * its input: filled in at ep, its scale in s->chan_f (valid until the next
 * actnorm), and ep returned; the same bits as glow__an_forward after the
 * product.  NULL when data-dependent init (init) must see the product's
 * result first: then call glow__an_forward. */
const glow__epilogue *glow__an_epilogue(const glow__an *an, const float *P,
                                        const float *init, int relu,
                                        glow__scratch *s, glow__epilogue *ep);
/* Backward given the output y (after the ReLU if relu); gx = dL/dx from
 * gy = dL/dy (gx == gy allowed, and cheapest); ld_weight: dL/dlogs through the
 * log-determinant.  Adds to G. */
void glow__an_backward(const glow__an *an, const float *P, float *G,
                       const float *y, const float *gy, float *gx, int64_t rows,
                       int relu, double ld_weight, glow__scratch *s);

/* Zero-initialised 3x3 conv with bias and output scale (zconv.c):
 * y = (conv(x, w) + bias) * exp(3 * logs), openai/glow's conv2d_zeros. */
#define GLOW__ZCONV_LOGSCALE 3.0f
typedef struct {
  int32_t cin, cout;
  int64_t weight, bias, logs;
} glow__zconv;
void glow__zconv_register(glow__zconv *zc, glow__registry *r,
                          const char *prefix, const char *name, int32_t cin,
                          int32_t cout);
/* y (n*h*w x cout) = zconv(x), x with row stride ldx. */
void glow__zconv_forward(const glow__zconv *zc, const float *P, const float *x,
                         int64_t ldx, int32_t n, int32_t h, int32_t w, float *y,
                         glow__scratch *s);
/* x: input (stride ldx), y: output; g: dL/dy (overwritten); gx (rows x
 * cin, overwritten): dL/dx.  Adds to G. */
void glow__zconv_backward(const glow__zconv *zc, const float *P, float *G,
                          const float *x, int64_t ldx, const float *y, float *g,
                          float *gx, int32_t n, int32_t h, int32_t w,
                          glow__scratch *s);

/* The class head of a conditional model (classifier.c): logits = mean over
 * positions of the top latent z, times W, plus b. */
typedef struct {
  int32_t c, n_classes;
  int64_t hw;
  int64_t weight, bias;
  glow__span tensors;
} glow__classifier;
void glow__classifier_register(glow__classifier *cl, glow__registry *r,
                               const glow__shape *top, int32_t n_classes);
/* Doubles of scratch the two calls below need. */
static inline int64_t glow__classifier_scratch(const glow__classifier *cl) {
  return 2 * (int64_t)cl->c + cl->n_classes;
}
/* One image: hbar (c) and logits (n_classes), in double. */
void glow__classifier_logits(const glow__classifier *cl, const float *P,
                             const float *z, double *hbar, double *logits);
/* Adds class_weight / (n_total ln 2) times the cross-entropy's gradient to
 * g (dL/dz, n images) and G; returns the mean cross-entropy over the n
 * images in nats. */
double glow__classifier_backward(const glow__classifier *cl, const float *P,
                                 float *G, const float *z,
                                 const int32_t *labels, int32_t n,
                                 int32_t n_total, float class_weight, float *g,
                                 double *scratch);

#endif /* GLOW_LAYER_H */
