/*
 * glow_internal.h -- declarations shared by the library's source files.
 * Nothing here is part of the public interface.
 */
#ifndef GLOW_INTERNAL_H
#define GLOW_INTERNAL_H

#include <stdint.h>
#include <stddef.h>

#include "glow.h"

/* ---- Errors (error.c) --------------------------------------------------- */

/* Record a detailed message for the calling thread and return `status`. */
int glow__fail(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Inlined even where the compiler would not: bodies specialised on a
 * constant argument (a channel count, a tile width). */
#if defined(__GNUC__)
#define GLOW__ALWAYS_INLINE __attribute__((always_inline))
#else
#define GLOW__ALWAYS_INLINE
#endif

/* ---- Threads (parallel.c) -------------------------------------------------
 * A call's batch splits into at most GLOW__MAX_THREADS shards of whole
 * images, one per thread; see parallel.c. */
#define GLOW__MAX_THREADS 256
typedef struct {
  int32_t first, count; /* images [first, first + count) of the batch */
  int rc;               /* the shard's status */
  char msg[512];        /* its glow_last_error() when rc != 0 */
} glow__shard;
/* Threads for a call on m: GLOW_OPT_THREADS, or the automatic choice. */
int32_t glow__threads(const glow_model *m);
/* n images split into *count = min(threads, n) shards, in a new array
 * (free() it); NULL after recording NOMEM. */
glow__shard *glow__shards_new(int32_t n, int32_t threads, int32_t *count);
/* Record a shard's status and, on failure, the message of the thread that
 * ran it (messages are per thread). */
void glow__shard_done(glow__shard *sh, int rc);
/* The first failed shard's status and message, raised again in the calling
 * thread; GLOW_OK if none failed. */
int glow__shards_status(const glow__shard *sh, int32_t count);
/* fn(ctx, s) for every shard s in [0, shards), one thread per shard, the
 * calling thread taking shard 0; returns when all are done.  A thread
 * that cannot be started leaves its shard to the calling thread. */
void glow__parallel(int32_t shards, void (*fn)(void *ctx, int32_t shard),
                    void *ctx);
/* A batch of n images on m's threads: the shards into *sh (where fn finds
 * them through ctx), fn run on each, *sh freed; the first failed shard's
 * status. */
int glow__run_shards(const glow_model *m, int32_t n, glow__shard **sh,
                     void (*fn)(void *ctx, int32_t shard), void *ctx);

/* ---- Random numbers (rng.c) ----------------------------------------------
 * Counter-based: the value at index i depends only on (seed, stream, i), so
 * results do not depend on how work is split across threads. */
uint64_t glow__hash64(uint64_t seed, uint64_t stream, uint64_t i);
double glow__uniform(uint64_t seed, uint64_t stream, uint64_t i); /* [0,1) */
/* Standard normal at index i (pairs of indices share one Box-Muller draw). */
double glow__normal(uint64_t seed, uint64_t stream, uint64_t i);

/* ---- Argument checks (infer.c) ------------------------------------------- */

/* n in [1, INT32_MAX / D]: BATCH otherwise. */
int glow__check_batch(const glow_model *m, int32_t n, const char *fn);
/* Labels present exactly for conditional models, each in range: LABEL. */
int glow__check_labels(const glow_model *m, const int32_t *labels, int32_t n,
                       const char *fn);

/* ---- Log-density and bits per dimension (infer.c) ------------------------
 * The one definition of the reported densities and of the training loss. */

#define GLOW__LN_2 0.69314718055994530941723212145818
#define GLOW__LOG_2PI 1.8378770664093454835606594728112

/* log p(x) in nats of one image from its latent eps (dim floats) and its
 * log-determinant: sum_j log N(eps_j; 0, 1) + logdet, in double. */
double glow__log_prob(const float *eps, int64_t dim, double logdet);

/* Bits per dimension of an image of log-density logp (nats) under the
 * discretised model of n_bits data: (-logp + D n_bits ln 2) / (D ln 2). */
static inline double glow__bits_per_dim(double logp, int64_t dim,
                                        int32_t n_bits) {
  const double d = (double)dim;
  return (-logp + d * n_bits * GLOW__LN_2) / (d * GLOW__LN_2);
}

/* ---- Configuration (config.c) ------------------------------------------- */

/* Copy a caller's config (read up to cfg->size) into *out, validating it. */
int glow__config_read(const glow_config *cfg, glow_config *out);
/* Validate a complete config. */
int glow__config_check(const glow_config *cfg);

/* ---- Matrix products (gemm.c) --------------------------------------------
 * Blocking of libglow's own kernel: MR x NR register tiles, op(A) packed
 * in MC x KC blocks and op(B) in KC x NC blocks. */
#define GLOW__GEMM_MR 12
#define GLOW__GEMM_NR 32
#define GLOW__GEMM_KC 256
#define GLOW__GEMM_MC 192
#define GLOW__GEMM_NC 2048
/* Floats of packing scratch the own kernel needs. */
#define GLOW__GEMM_PACK                                                        \
  ((int64_t)GLOW__GEMM_MC * GLOW__GEMM_KC + (int64_t)GLOW__GEMM_KC * GLOW__GEMM_NC)
/* 1 if this CPU runs the own kernel (AVX-512F on x86-64). */
int glow__gemm_own_available(void);
/* 1 if calls on m use it: GLOW_OPT_GEMM allows it and the CPU has it. */
int glow__gemm_own(const glow_model *m);
/* C (m x n, row stride ldc) = op(A) op(B), or C += op(A) op(B) when
 * accumulate != 0, where op(A) is m x k (A^T if ta; row stride lda of A as
 * stored), op(B) k x n likewise.  With pack (GLOW__GEMM_PACK floats) the
 * own kernel computes it, else the CBLAS. */
void glow__sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k,
                 const float *a, int64_t lda, const float *b, int64_t ldb,
                 int accumulate, float *c, int64_t ldc, float *pack);

/* ---- Kernels (kernels.c) ------------------------------------------------- */

/* Scratch for convolutions and products: `cap` floats of patches or tap
 * outputs, room for one rearranged weight (9 * max cin * max cout floats)
 * and the GEMM kernel's packing buffer. */
typedef struct {
  float *buf;
  int64_t cap;
  float *wbuf;
  float *pack; /* GLOW__GEMM_PACK floats for the own GEMM kernel, or NULL:
                  the CBLAS computes the products */
} glow__col;

/* y (n*h*w x cout) = conv3x3_same(x) where x has rows of stride ldx >= cin
 * (only the first cin channels are read).  w: [3][3][cin][cout] (HWIO). */
void glow__conv3x3(const float *x, int64_t ldx, int32_t n, int32_t h,
                   int32_t w, int32_t cin, const float *wt, int32_t cout,
                   float *y, glow__col *col);
/* Floats of im2col scratch the conv above needs for one image. */
int64_t glow__conv3x3_col_per_image(int32_t h, int32_t w, int32_t cin);

/* y (rows x cout) = x (rows x cin, stride ldx) * w (cin x cout). */
void glow__matmul(const float *x, int64_t ldx, int64_t rows, int32_t cin,
                  const float *wt, int32_t cout, float *y, glow__col *col);

/* Backward of glow__conv3x3 (gy contiguous, n*h*w x cout):
 * gx (n*h*w x cin, contiguous, overwritten) = dL/dx, using wflip (9 * cin *
 * cout floats, not col->wbuf) for the flipped weight. */
void glow__conv3x3_grad_input(const float *gy, int32_t n, int32_t h,
                              int32_t w, int32_t cin, const float *wt,
                              int32_t cout, float *gx, float *wflip,
                              glow__col *col);
/* gw ([3][3][cin][cout]) += dL/dW, x with row stride ldx. */
void glow__conv3x3_grad_weight(const float *x, int64_t ldx, int32_t n,
                               int32_t h, int32_t w, int32_t cin,
                               const float *gy, int32_t cout, float *gw,
                               glow__col *col);
/* Backward of glow__matmul: gw (cin x cout) += x^T gy and, when gx is not
 * NULL, gx (rows x cin, overwritten) = gy W^T. */
void glow__matmul_grad(const float *x, int64_t ldx, int64_t rows,
                       int32_t cin, const float *wt, int32_t cout,
                       const float *gy, float *gw, float *gx,
                       glow__col *col);

/* ---- Parameters (model.c) ------------------------------------------------ */

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
 * model's tensor table from index `first`, so one contiguous range of the
 * flat buffer (none for count 0).  Recorded while the table is built. */
typedef struct {
  int32_t first, count;
} glow__span;

/* ---- Layers -------------------------------------------------------------- */

/* Activation normalisation: y = (x + bias) * exp(logs), per channel. */
typedef struct {
  int32_t c;
  int64_t bias, logs; /* offsets of [c] tensors */
  glow__span tensors;
} glow__actnorm;

/* Channel mixing of a flow step. */
typedef struct {
  int32_t kind; /* GLOW_PERMUTE_* */
  int32_t c;
  int64_t weight;                /* CONV1X1: [c][c], y = x W (W[in][out]) */
  int64_t lower, upper, log_s;   /* CONV1X1_LU: W = P L (U + diag(sign e^s)) */
  int32_t *perm;                 /* REVERSE/SHUFFLE: y[j] = x[perm[j]];
                                    LU: P[perm[j]][j] = 1 */
  float *sign;                   /* LU: sign of U's diagonal */
  glow__span tensors;            /* none for REVERSE/SHUFFLE */
} glow__permute;

/* Zero-initialised 3x3 conv with bias and output scale:
 * y = (conv(x, w) + bias) * exp(3 * logs), openai/glow's conv2d_zeros. */
#define GLOW__ZCONV_LOGSCALE 3.0f
typedef struct {
  int32_t cin, cout;
  int64_t weight, bias, logs;
  glow__span tensors;
} glow__zconv;

/* Coupling: NN(x1) = zconv(relu(an2(conv1x1(relu(an1(conv3x3(x1))))))). */
typedef struct {
  int32_t kind; /* GLOW_COUPLING_* */
  int32_t c, hidden;
  int64_t w1;        /* [3][3][c/2][hidden] */
  glow__actnorm an1;
  int64_t w2;        /* [hidden][hidden] */
  glow__actnorm an2;
  glow__zconv out;   /* hidden -> c (affine) or c/2 (additive) */
  glow__span tensors; /* all of the above: w1 .. out */
} glow__coupling;

typedef struct {
  glow__actnorm an;
  glow__permute perm;
  glow__coupling cpl;
} glow__step;

typedef struct {
  int32_t h, w, c;  /* shape inside the level, after its squeeze */
  int32_t zc;       /* channels of this level's latent block */
  int64_t eps_off;  /* offset of its block within a latent row */
  glow__step *steps;
  glow__zconv prior; /* split prior, all levels but the top */
} glow__level;

/* ---- Per-call scratch ---------------------------------------------------- */

/* What the store-mode training forward keeps of one flow step, so that the
 * backward pass needs neither the step's inverse nor its network again. */
typedef struct {
  float *x;       /* the step's input, rows x c */
  float *r1, *r2; /* coupling network after each actnorm + ReLU, rows x hid */
  float *nn;      /* coupling network output, rows x cout */
} glow__saved;

typedef struct {
  int32_t n;        /* images of this call (of this shard, if sharded) */
  int32_t n_total;  /* images of the whole batch, which the training loss
                       averages over (n when the call is not sharded) */
  int32_t cap;      /* images the buffers below hold (n <= cap): a kept
                       training workspace serves any smaller batch */
  float *z, *t;     /* n*D each: current tensor and a spare */
  float *a, *b;     /* n*maxhw*hidden: coupling network activations */
  float *h;         /* n*maxhw*maxc: coupling / prior network outputs */
  glow__col col;
  double *ld;       /* n: per-image log-determinant accumulator */
  double *w64;      /* 3*maxc*maxc doubles for 1x1 weights */
  float *fscr;      /* 3*max(maxc, hidden) floats: per-channel factors
                       and partial sums */
  double *dscr;     /* 2*max(maxc, hidden) doubles: channel statistics */
  float *w32;       /* maxc*maxc floats: a 1x1 weight or its inverse */
  float *init_params; /* data-dependent init: the parameters (the same
                         buffer as the forward's P) that each actnorm sets
                         before applying itself; NULL otherwise, so that
                         every other pass only reads parameters, through
                         const pointers */
  int check;        /* forward: fail naming the first non-finite layer */
  /* Training only (glow__ws_alloc_train); NULL/0 otherwise. */
  float *eps;       /* n*D: the latents of the training forward */
  float *g, *gt;    /* n*D each: dL/d(current tensor) and a spare */
  float *u;         /* n*D: a step's permutation input, kept */
  float *ga, *gb;   /* n*maxhw*max(hidden, maxc): network gradients */
  float *gh;        /* n*maxhw*maxc: dL/d(a network's output) */
  float *wflip;     /* 9*max(hidden, maxc)*maxc: a flipped conv weight */
  float *wg32;      /* maxc*maxc: data term of a 1x1 weight gradient */
  double *cls;      /* conditional models: 2*c_top + n_classes */
  float *G;         /* n_params: this call's parameter gradients */
  glow__saved *saved; /* store mode: levels*depth steps; else NULL */
  float *saved_buf;
  glow__saved *keep;  /* forward: where the current step keeps its
                         activations (store mode), else NULL */
  float geps;       /* dL/deps = eps * geps, 1 / (n D ln 2) */
  float gld;        /* dL/dlogdet of each image, -geps */
  int64_t bytes;    /* activation memory: all but the n_params buffer G */
} glow__ws;

struct glow_model {
  glow_config cfg;
  int64_t dim;
  int32_t max_hw, max_c;
  glow__level *levels;
  glow__step *step_pool;
  /* top prior */
  int64_t top;        /* learn_top: [h][w][2c], mean/logs interleaved */
  int64_t class_emb;  /* n_classes > 0: [n_classes][2c] */
  int64_t cls_w, cls_b; /* classifier head [c][n_classes], [n_classes] */
  glow__span top_tensors; /* top prior and class embedding */
  glow__span cls_tensors; /* classifier head */
  /* parameters */
  int64_t n_params;
  float *params, *grads;
  glow__tensor *tensors;
  int32_t n_tensors, cap_tensors;
  int32_t *int_pool;   /* storage for permutations */
  float *sign_pool;    /* storage for LU signs */
  int initialized;     /* actnorms set from data */
  /* Training options (train.c); zero, the defaults, after creation. */
  int32_t backward_mode;  /* GLOW_OPT_BACKWARD_MODE */
  int32_t keep_workspace; /* GLOW_OPT_KEEP_WORKSPACE */
  int32_t threads;        /* GLOW_OPT_THREADS, 0 = automatic */
  int32_t gemm;           /* GLOW_OPT_GEMM */
  glow__ws *train_ws;     /* kept training workspaces, one per shard */
  int32_t train_shards;   /* how many train_ws holds (0: none) */
};

int glow__ws_alloc(const glow_model *m, int32_t n, glow__ws *ws);
/* A workspace for glow__flow_backward: glow__ws_alloc's buffers plus the
 * gradients', and in store mode (store != 0) every step's activations. */
int glow__ws_alloc_train(const glow_model *m, int32_t n, int store,
                         glow__ws *ws);
void glow__ws_free(glow__ws *ws);
static inline void glow__ws_swap(glow__ws *ws) {
  float *tmp = ws->z;
  ws->z = ws->t;
  ws->t = tmp;
}
static inline void glow__ws_swap_grad(glow__ws *ws) {
  float *tmp = ws->g;
  ws->g = ws->gt;
  ws->gt = tmp;
}

/* actnorm.c */
/* ws supplies scratch (fscr, dscr) and, during data-dependent init, the
 * writable parameters (ws->init_params); relu != 0 applies max(y, 0) in the
 * same sweep. */
void glow__actnorm_forward(const glow__actnorm *an, const float *P, float *x,
                           int64_t rows, int relu, glow__ws *ws);
void glow__actnorm_inverse(const glow__actnorm *an, const float *P, float *x,
                           int64_t rows, glow__ws *ws);
double glow__actnorm_logdet(const glow__actnorm *an, const float *P);
/* y: the output (after ReLU if relu); g: dL/dy in, dL/dx out; ld_weight:
 * dL/dlogs through the log-determinant.  Adds to G (params layout). */
void glow__actnorm_backward(const glow__actnorm *an, const float *P,
                            float *G, const float *y, float *g, int64_t rows,
                            int relu, double ld_weight, glow__ws *ws);

/* permute.c: forward/inverse act on ws->z (n*h*w rows of c), may swap.
 * The forward's logdet may be NULL where it is not needed (which spares the
 * plain weight's factorisation). */
int glow__permute_init(glow__permute *p, float *P, uint64_t seed,
                       uint64_t stream);
int glow__permute_forward(const glow__permute *p, const float *P,
                          glow__ws *ws, int64_t rows, double *logdet);
int glow__permute_inverse(const glow__permute *p, const float *P,
                          glow__ws *ws, int64_t rows);
/* x: the input (rows x c); g: dL/dy; gx (overwritten): dL/dx; ld_weight:
 * dL/d(log|det W|).  Adds to G.  NUMERIC if W is singular. */
int glow__permute_backward(const glow__permute *p, const float *P, float *G,
                           const float *x, const float *g, float *gx,
                           int64_t rows, double ld_weight, glow__ws *ws);

/* coupling.c: act on ws->z in place. */
void glow__coupling_forward(const glow__coupling *cp, const float *P,
                            glow__ws *ws, int32_t h, int32_t w);
void glow__coupling_inverse(const glow__coupling *cp, const float *P,
                            glow__ws *ws, int32_t h, int32_t w);
/* y (ws->n*h*w x cout) = zconv(x), x with row stride ldx. */
void glow__zconv_apply(const glow__zconv *zc, const float *P, const float *x,
                       int64_t ldx, int32_t h, int32_t w, float *y,
                       glow__ws *ws);
/* x: the coupling's input; r1, r2, nn: its network's activations on x1;
 * g: dL/dy in, dL/dx out.  Adds to G; uses ws->gld and ws->ga/gb/gh. */
void glow__coupling_backward(const glow__coupling *cp, const float *P,
                             float *G, const float *x, const float *r1,
                             const float *r2, const float *nn, float *g,
                             int32_t h, int32_t w, glow__ws *ws);
/* x: input (stride ldx), y: output; g: dL/dy (overwritten); gx (rows x
 * cin, overwritten): dL/dx.  Adds to G. */
void glow__zconv_backward(const glow__zconv *zc, const float *P, float *G,
                          const float *x, int64_t ldx, const float *y,
                          float *g, float *gx, int32_t h, int32_t w,
                          glow__ws *ws);

/* squeeze.c */
void glow__squeeze(const float *x, int32_t n, int32_t h, int32_t w,
                   int32_t c, float *y);
void glow__unsqueeze(const float *y, int32_t n, int32_t h, int32_t w,
                     int32_t c, float *x);

/* prior.c */
void glow__split_forward(const glow_model *m, const glow__level *lv,
                         glow__ws *ws, float *eps);
void glow__split_inverse(const glow_model *m, const glow__level *lv,
                         glow__ws *ws, const float *eps, float scale);
void glow__top_forward(const glow_model *m, const glow__level *lv,
                       glow__ws *ws, const int32_t *labels, float *eps);
void glow__top_inverse(const glow_model *m, const glow__level *lv,
                       glow__ws *ws, const int32_t *labels, const float *eps,
                       float scale);
/* Backward of the split, right after glow__split_inverse rebuilt z: ws->z =
 * the level's tensor z (rows x c), ws->h = the prior network's output on z1
 * (which the inverse leaves there), ws->g = dL/dz1 (rows x c/2) -> ws->g =
 * dL/dz (rows x c).  eps: the forward's latents.  Adds to G. */
void glow__split_backward(const glow_model *m, const glow__level *lv,
                          glow__ws *ws, const float *eps, float *G);
/* Backward of the top prior: ws->z = the top latent -> ws->g = dL/dz
 * (overwritten).  Adds to G. */
void glow__top_backward(const glow_model *m, const glow__level *lv,
                        glow__ws *ws, const int32_t *labels, const float *eps,
                        float *G);
/* Classifier on mean_hw(ws->z) (the top latent): adds class_weight /
 * (n ln 2) times the cross-entropy's gradient to ws->g and G; returns the
 * mean cross-entropy over the batch in nats. */
void glow__classifier_logits(const glow_model *m, const glow__level *lv,
                             const float *z, double *hbar, double *logits);
double glow__classifier_backward(const glow_model *m, const glow__level *lv,
                                 glow__ws *ws, const int32_t *labels,
                                 float *G);

/* train.c: free the kept training workspace (glow_model_free calls it). */
void glow__train_release(glow_model *m);

/* flow.c: 1 if none of the count floats at v is Inf or NaN. */
int glow__all_finite(const float *v, int64_t count);

/* flow.c: the whole model, on a prepared workspace.  The forward reads the
 * parameters P (m->params) only, so inference may run concurrently; only
 * glow_data_init's pass writes them, through ws->init_params. */
int glow__flow_forward(const glow_model *m, const float *P, glow__ws *ws,
                       const float *x, const int32_t *labels, float *eps);
int glow__flow_inverse(const glow_model *m, glow__ws *ws, const float *eps,
                       float scale, const int32_t *labels, float *x);
/* The training pass on a glow__ws_alloc_train workspace: the forward, the
 * loss (mean bits/dim + class_weight * mean cross-entropy / ln 2) into
 * *loss, and its gradient into ws->G (added; the caller zeroes it).  For
 * a shard (ws->n < ws->n_total) both are its share of the whole batch's,
 * whose means are over n_total images: the shards' sum is the batch's.
 * NUMERIC, naming the layer, where a value or gradient is not finite. */
int glow__flow_backward(const glow_model *m, glow__ws *ws, const float *x,
                        const int32_t *labels, double *loss);

/* ==== Model files (model.c, safetensors.c, modelfile.c) ==================
 * Owned by the model-file code; other layers need nothing from here. */

/* A model for a complete, validated config: levels, the tensor table and a
 * zeroed parameter buffer; permutations and signs are all zero, so the
 * caller must initialise the weights (glow_model_create) or fill them from
 * a file.  Fails with GLOW_ERR_FORMAT, before allocating the parameters,
 * when the model would hold more than max_params floats: a loader passes a
 * bound from its input's size, so that a forged config cannot make it
 * allocate much more than the file.  On failure *out is NULL. */
int glow__model_new(const glow_config *cfg, int64_t max_params,
                    glow_model **out);

/* The safetensors container (safetensors.c): an 8-byte little-endian header
 * length N, N bytes of JSON header, then the data section.  The JSON is
 * parsed by cJSON; its tree stays opaque to the rest of the library. */
#define GLOW__ST_MAX_HEADER (UINT64_C(100) * 1024 * 1024) /* as safetensors */
#define GLOW__ST_MAX_DIMS 8

/* One tensor of a header.  In a parsed header `name` and `dtype` point into
 * the JSON tree; offsets are relative to the data section, end exclusive. */
typedef struct {
  const char *name;
  const char *dtype;
  uint32_t elem_bytes; /* size of one element of dtype */
  int32_t ndim;
  uint64_t shape[GLOW__ST_MAX_DIMS];
  uint64_t begin, end;
} glow__st_entry;

typedef struct {
  struct cJSON *root;       /* the whole header */
  struct cJSON *metadata;   /* "__metadata__", NULL if absent */
  glow__st_entry *entries;  /* sorted by begin: the order of the data */
  int32_t n_entries;
} glow__st_header;

/* Parse and validate a header: text holds `len` bytes plus a NUL at
 * text[len]; data_len is the size of the data section that follows.  On
 * success every tensor has a known dtype, a shape whose byte size fits
 * uint64 and equals end - begin, a unique name, and the tensors tile the
 * data section exactly (no overlap, gap or trailing byte); metadata values
 * are strings with unique keys.  GLOW_ERR_FORMAT (with a message) or
 * GLOW_ERR_NOMEM otherwise; *out then owns nothing. */
int glow__st_parse(const char *text, uint64_t len, uint64_t data_len,
                   glow__st_header *out);
void glow__st_free(glow__st_header *h);
/* The metadata value of `key`, or NULL if absent. */
const char *glow__st_meta(const glow__st_header *h, const char *key);

/* Header JSON for `n` entries (name, dtype, shape, offsets set by the
 * caller) and `n_meta` metadata pairs meta[2i] -> meta[2i+1], padded with
 * spaces so that the data section starts 8-byte aligned.  *out (malloc'd,
 * NUL-terminated, *len bytes before the NUL) is the caller's to free. */
int glow__st_build(const glow__st_entry *e, int32_t n,
                   const char *const *meta, int32_t n_meta, char **out,
                   uint64_t *len);

/* Little-endian conversion, whatever the host's byte order. */
uint64_t glow__st_get_u64(const uint8_t *p);
void glow__st_put_u64(uint8_t *p, uint64_t v);
void glow__st_get_f32(const uint8_t *src, float *dst, size_t n);
void glow__st_put_f32(const float *src, uint8_t *dst, size_t n);

/* ==== End of model files ================================================ */

#endif /* GLOW_INTERNAL_H */
