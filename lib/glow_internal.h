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

/* ---- Random numbers (rng.c) ----------------------------------------------
 * Counter-based: the value at index i depends only on (seed, stream, i), so
 * results do not depend on how work is split across threads. */
uint64_t glow__hash64(uint64_t seed, uint64_t stream, uint64_t i);
double glow__uniform(uint64_t seed, uint64_t stream, uint64_t i); /* [0,1) */
/* Standard normal at index i (pairs of indices share one Box-Muller draw). */
double glow__normal(uint64_t seed, uint64_t stream, uint64_t i);

/* ---- Configuration (config.c) ------------------------------------------- */

/* Copy a caller's config (read up to cfg->size) into *out, validating it. */
int glow__config_read(const glow_config *cfg, glow_config *out);
/* Validate a complete config. */
int glow__config_check(const glow_config *cfg);

/* ---- Kernels (kernels.c) ------------------------------------------------- */

/* Scratch for convolutions: `cap` floats of patches or tap outputs, and
 * room for one rearranged weight (9 * max cin * max cout floats). */
typedef struct {
  float *buf;
  int64_t cap;
  float *wbuf;
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
                  const float *wt, int32_t cout, float *y);

/* Stable log(sigmoid(v)). */
double glow__log_sigmoid(double v);

/* ---- Parameters (model.c) ------------------------------------------------ */

#define GLOW__NAME_MAX 64

/* One named tensor in the flat parameter buffer. */
typedef struct {
  char name[GLOW__NAME_MAX];
  int64_t offset; /* into params/grads, in floats */
  int32_t ndim;
  int32_t shape[4];
} glow__tensor;

/* ---- Layers -------------------------------------------------------------- */

/* Activation normalisation: y = (x + bias) * exp(logs), per channel. */
typedef struct {
  int32_t c;
  int64_t bias, logs; /* offsets of [c] tensors */
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
} glow__permute;

/* Zero-initialised 3x3 conv with bias and output scale:
 * y = (conv(x, w) + bias) * exp(3 * logs), openai/glow's conv2d_zeros. */
#define GLOW__ZCONV_LOGSCALE 3.0f
typedef struct {
  int32_t cin, cout;
  int64_t weight, bias, logs;
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

typedef struct {
  int32_t n;
  float *z, *t;     /* n*D each: current tensor and a spare */
  float *a, *b;     /* n*maxhw*hidden: coupling network activations */
  float *h;         /* n*maxhw*maxc: coupling / prior network outputs */
  glow__col col;
  double *ld;       /* n: per-image log-determinant accumulator */
  double *w64;      /* 3*maxc*maxc doubles for 1x1 weights */
  float *fscr;      /* max(maxc, hidden) floats: per-channel factors */
  double *dscr;     /* 2*max(maxc, hidden) doubles: channel statistics */
  float *w32;       /* 2*maxc*maxc floats: 1x1 weight and inverse */
  int init;         /* data-dependent init while running forward */
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
  /* parameters */
  int64_t n_params;
  float *params, *grads;
  glow__tensor *tensors;
  int32_t n_tensors, cap_tensors;
  int32_t *int_pool;   /* storage for permutations */
  float *sign_pool;    /* storage for LU signs */
  int initialized;     /* actnorms set from data */
};

int glow__ws_alloc(const glow_model *m, int32_t n, glow__ws *ws);
void glow__ws_free(glow__ws *ws);
static inline void glow__ws_swap(glow__ws *ws) {
  float *tmp = ws->z;
  ws->z = ws->t;
  ws->t = tmp;
}

/* actnorm.c */
/* ws supplies scratch (fscr, dscr) and the init flag; relu != 0 applies
 * max(y, 0) in the same sweep. */
void glow__actnorm_forward(const glow__actnorm *an, float *P, float *x,
                           int64_t rows, int relu, glow__ws *ws);
void glow__actnorm_inverse(const glow__actnorm *an, const float *P, float *x,
                           int64_t rows, glow__ws *ws);
double glow__actnorm_logdet(const glow__actnorm *an, const float *P);

/* permute.c: forward/inverse act on ws->z (n*h*w rows of c), may swap. */
int glow__permute_init(glow__permute *p, float *P, uint64_t seed,
                       uint64_t stream);
int glow__permute_forward(const glow__permute *p, const float *P,
                          glow__ws *ws, int64_t rows, double *logdet);
int glow__permute_inverse(const glow__permute *p, const float *P,
                          glow__ws *ws, int64_t rows);

/* coupling.c: act on ws->z in place. */
void glow__coupling_forward(const glow__coupling *cp, float *P, glow__ws *ws,
                            int32_t h, int32_t w);
void glow__coupling_inverse(const glow__coupling *cp, const float *P,
                            glow__ws *ws, int32_t h, int32_t w);
/* y (ws->n*h*w x cout) = zconv(x), x with row stride ldx. */
void glow__zconv_apply(const glow__zconv *zc, const float *P, const float *x,
                       int64_t ldx, int32_t h, int32_t w, float *y,
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

/* flow.c: the whole model, on a prepared workspace. */
int glow__flow_forward(const glow_model *m, float *P, glow__ws *ws,
                       const float *x, const int32_t *labels, float *eps);
int glow__flow_inverse(const glow_model *m, glow__ws *ws, const float *eps,
                       float scale, const int32_t *labels, float *x);

#endif /* GLOW_INTERNAL_H */
