/*
 * permute.c -- the channel mixing of a flow step: the invertible 1x1
 * convolution (plain or LU-decomposed) and the fixed permutations.
 *
 * Weights act on a pixel's channel row vector: y = x W, W[in][out], the
 * layout of a 1x1 HWIO convolution kernel.  Determinants and inverses are
 * computed in double with LAPACK from the current parameters on every call,
 * so a host that writes the parameters never sees a stale inverse.
 *
 * LAPACK is called through LAPACKE's column-major *_work functions only,
 * with scratch from the workspace or the library's allocator: the others
 * allocate with malloc behind glow_set_allocator's back, and print when
 * that fails.  Matrices are transposed in place around each call, the same
 * copies LAPACKE's row-major interface makes, so results are unchanged.
 *
 * Hand-off: the input x (the weight's gradient is x^T dL/dy).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "layer.h"

typedef struct {
  int32_t kind; /* GLOW_PERMUTE_* */
  int32_t c;
  int64_t weight;              /* CONV1X1: [c][c], y = x W (W[in][out]) */
  int64_t lower, upper, log_s; /* CONV1X1_LU: W = P L (U + diag(sign e^s)) */
  int32_t *perm;               /* REVERSE/SHUFFLE: y[j] = x[perm[j]];
                                  LU: P[perm[j]][j] = 1 (fixed buffer) */
  float *sign;                 /* LU: sign of U's diagonal (fixed buffer) */
} permute;

static void build(glow__layer *ly, const glow_config *cfg, glow__registry *r) {
  permute tmp, *p = ly->self ? ly->self : &tmp;
  const int32_t c = ly->in.c;
  const char *pre = ly->prefix;
  ly->out = ly->in;
  p->kind = cfg->permutation;
  p->c = c;
  switch (p->kind) {
  case GLOW_PERMUTE_CONV1X1:
    p->weight =
        glow__reg_tensor(r, pre, "invconv.weight", 2, (const int32_t[]){c, c});
    break;
  case GLOW_PERMUTE_CONV1X1_LU:
    p->lower =
        glow__reg_tensor(r, pre, "invconv.lower", 2, (const int32_t[]){c, c});
    p->upper =
        glow__reg_tensor(r, pre, "invconv.upper", 2, (const int32_t[]){c, c});
    p->log_s =
        glow__reg_tensor(r, pre, "invconv.log_s", 1, (const int32_t[]){c});
    p->perm = glow__reg_index(r, pre, "invconv.perm", c, GLOW__FIXED_INDEX);
    p->sign = glow__reg_sign(r, pre, "invconv.sign", c);
    break;
  default:
    p->perm =
        glow__reg_index(r, pre, "permute.index", c,
                        p->kind == GLOW_PERMUTE_REVERSE ? GLOW__FIXED_REVERSAL
                                                        : GLOW__FIXED_INDEX);
  }
}

/* Floats of the parameters a learned weight is made of: W, or L, U and
 * log_s (0 for a fixed permutation). */
static int64_t key_floats(const permute *pm) {
  const int64_t cc = (int64_t)pm->c * pm->c;
  return pm->kind == GLOW_PERMUTE_CONV1X1      ? cc
         : pm->kind == GLOW_PERMUTE_CONV1X1_LU ? 2 * cc + pm->c
                                               : 0;
}

/* A workspace's cache (glow__pass.cache) of what the weight gives and
 * every call would otherwise derive again, 0.8 ms a call for a cifar image
 * at batch 1: a header, then the parameters it was derived from (the key),
 * for the LU parametrisation W in float (built from its factors), and
 * W^{-1} in float.  Valid while the parameters are those of the key, bit
 * for bit. */
typedef struct {
  uint32_t have; /* HAVE_* */
  uint32_t unused;
  double logabsdet; /* log|det W| (CONV1X1) */
} cache_head;
enum { HEAD_FLOATS = sizeof(cache_head) / sizeof(float) };
enum { HAVE_LOGDET = 1, HAVE_W = 2, HAVE_INV = 4 };

static void needs(const glow__layer *ly, glow__needs *nd) {
  const permute *pm = ly->self;
  const int64_t cc = (int64_t)ly->in.c * ly->in.c;
  nd->chan = ly->in.c;
  nd->mat = ly->in.c;
  /* The LU parametrisation also keeps W, which the plain one has in P. */
  const int64_t mats = pm->kind == GLOW_PERMUTE_CONV1X1_LU ? 2 : 1;
  nd->cache = key_floats(pm) > 0 ? HEAD_FLOATS + key_floats(pm) + mats * cc : 0;
}

/* The pass's cache for the parameters in P now: its header in *h, emptied
 * (and keyed to them) where they changed since it was filled.  NULL where
 * the pass has none. */
static float *cache_for(const permute *pm, const glow__pass *p, cache_head *h) {
  float *cache = p->cache;
  if (!cache)
    return NULL;
  const int64_t cc = (int64_t)pm->c * pm->c;
  /* The key's pieces, as they lie in P. */
  const int lu = pm->kind == GLOW_PERMUTE_CONV1X1_LU;
  const int pieces = lu ? 3 : 1;
  const int64_t at[3] = {lu ? pm->lower : pm->weight, lu ? pm->upper : 0,
                         lu ? pm->log_s : 0};
  const int64_t len[3] = {cc, cc, pm->c};
  memcpy(h, cache, sizeof *h);
  float *key = cache + HEAD_FLOATS;
  int same = h->have != 0;
  for (int64_t i = 0, off = 0; same && i < pieces; off += len[i], i++)
    same = memcmp(key + off, p->P + at[i], sizeof(float) * (size_t)len[i]) == 0;
  if (!same) {
    for (int64_t i = 0, off = 0; i < pieces; off += len[i], i++)
      memcpy(key + off, p->P + at[i], sizeof(float) * (size_t)len[i]);
    *h = (cache_head){0};
    memcpy(cache, h, sizeof *h);
  }
  return cache;
}

/* The cached W (which == HAVE_W, LU only) or W^{-1} (HAVE_INV), c x c
 * floats. */
static float *cached_matrix(const permute *pm, float *cache, uint32_t which) {
  const int64_t cc = (int64_t)pm->c * pm->c;
  float *w = cache + HEAD_FLOATS + key_floats(pm);
  return which == HAVE_W || pm->kind != GLOW_PERMUTE_CONV1X1_LU ? w : w + cc;
}

/* Record that the cache now holds `which` (and logabsdet). */
static void cache_has(float *cache, cache_head *h, uint32_t which) {
  h->have |= which;
  memcpy(cache, h, sizeof *h);
}

/* a (c x c) transposed in place: row-major to column-major and back. */
static void transpose(double *a, int32_t c) {
  for (int64_t i = 0; i < c; i++)
    for (int64_t j = i + 1; j < c; j++) {
      double t = a[i * c + j];
      a[i * c + j] = a[j * c + i];
      a[j * c + i] = t;
    }
}

/* The QR factorisation's and Q's scratch, as LAPACK asks for it (the
 * optimal size, which LAPACKE's allocating interface also uses). */
static int qr_work(int32_t c, double *q, double *tau, double **work,
                   lapack_int *lwork) {
  double a = 0.0, b = 0.0;
  if (LAPACKE_dgeqrf_work(LAPACK_COL_MAJOR, c, c, q, c, tau, &a, -1) ||
      LAPACKE_dorgqr_work(LAPACK_COL_MAJOR, c, c, c, q, c, tau, &b, -1))
    return GLOW_ERR_NUMERIC;
  *lwork = (lapack_int)(a > b ? a : b);
  if (*lwork < c)
    *lwork = c;
  *work = glow__malloc(sizeof **work * (size_t)*lwork);
  return *work ? GLOW_OK : GLOW_ERR_NOMEM;
}

/* Fill q (c x c, row-major) with a random rotation: the Q factor of a
 * Gaussian matrix, as openai/glow initialises its 1x1 weights. */
static int random_rotation(int32_t c, uint64_t seed, uint64_t stream, double *q,
                           double *tau) {
  for (int64_t i = 0; i < (int64_t)c * c; i++)
    q[i] = glow__normal(seed, stream, (uint64_t)i);
  double *work = NULL;
  lapack_int lwork = 0;
  int rc = qr_work(c, q, tau, &work, &lwork);
  if (rc)
    return rc;
  transpose(q, c);
  if (LAPACKE_dgeqrf_work(LAPACK_COL_MAJOR, c, c, q, c, tau, work, lwork) ||
      LAPACKE_dorgqr_work(LAPACK_COL_MAJOR, c, c, c, q, c, tau, work, lwork))
    rc = GLOW_ERR_NUMERIC;
  transpose(q, c);
  glow__free(work);
  return rc;
}

/* LU parametrisation of the rotation q: q = P L U with P from partial
 * pivoting, L unit lower, U upper; U's diagonal is stored as sign * e^s. */
static int lu_from_rotation(permute *p, float *P, double *q, lapack_int *ipiv) {
  const int32_t c = p->c;
  transpose(q, c);
  const lapack_int info =
      LAPACKE_dgetrf_work(LAPACK_COL_MAJOR, c, c, q, c, ipiv);
  transpose(q, c);
  if (info != 0)
    return GLOW_ERR_NUMERIC;
  for (int32_t i = 0; i < c; i++)
    p->perm[i] = i;
  for (int32_t i = 0; i < c; i++) { /* row interchanges -> permutation */
    int32_t j = ipiv[i] - 1, t = p->perm[i];
    p->perm[i] = p->perm[j];
    p->perm[j] = t;
  }
  for (int32_t i = 0; i < c; i++)
    for (int32_t j = 0; j < c; j++) {
      double v = q[(int64_t)i * c + j];
      P[p->lower + (int64_t)i * c + j] = i > j ? (float)v : 0.0f;
      P[p->upper + (int64_t)i * c + j] = i < j ? (float)v : 0.0f;
      if (i == j) {
        p->sign[i] = v < 0 ? -1.0f : 1.0f;
        P[p->log_s + i] = (float)log(fabs(v));
      }
    }
  return GLOW_OK;
}

/* Fixed permutations as their kind says; 1x1 weights a random rotation,
 * from the step's stream 0, as openai/glow initialises them. */
static int init(const glow__layer *ly, float *P, uint64_t seed,
                uint64_t stream) {
  permute *p = ly->self;
  const int32_t c = p->c;
  if (p->kind == GLOW_PERMUTE_REVERSE) {
    for (int32_t j = 0; j < c; j++)
      p->perm[j] = c - 1 - j;
    return GLOW_OK;
  }
  if (p->kind == GLOW_PERMUTE_SHUFFLE) {
    for (int32_t j = 0; j < c; j++)
      p->perm[j] = j;
    for (int32_t j = c - 1; j > 0; j--) { /* Fisher-Yates */
      int32_t k = (int32_t)(glow__hash64(seed, stream, (uint64_t)j) %
                            (uint64_t)(j + 1));
      int32_t t = p->perm[j];
      p->perm[j] = p->perm[k];
      p->perm[k] = t;
    }
    return GLOW_OK;
  }
  double *q = glow__malloc(sizeof *q * ((size_t)c * c + c));
  lapack_int *ipiv = glow__malloc(sizeof *ipiv * (size_t)c);
  int rc = q && ipiv ? GLOW_OK : GLOW_ERR_NOMEM;
  if (!rc)
    rc = random_rotation(c, seed, stream, q, q + (size_t)c * c);
  if (!rc && p->kind == GLOW_PERMUTE_CONV1X1)
    for (int64_t i = 0; i < (int64_t)c * c; i++)
      P[p->weight + i] = (float)q[i];
  else if (!rc)
    rc = lu_from_rotation(p, P, q, ipiv);
  glow__free(q);
  glow__free(ipiv);
  if (rc == GLOW_ERR_NOMEM)
    return glow__fail(rc,
                      "initialising the 1x1 weight of level %d step %d: "
                      "out of memory",
                      ly->level, ly->step);
  if (rc)
    return glow__fail(rc,
                      "initialising the 1x1 weight of level %d step %d "
                      "failed",
                      ly->level, ly->step);
  return GLOW_OK;
}

/* W of an LU step in double: W[perm[i]][k] = (L U')[i][k]. */
static void lu_weight(const permute *p, const float *P, double *w) {
  const int32_t c = p->c;
  const float *L = P + p->lower, *U = P + p->upper, *s = P + p->log_s;
  for (int32_t i = 0; i < c; i++)
    for (int32_t k = 0; k < c; k++) {
      /* (L U')[i][k] = sum_{j <= min(i,k)} L[i][j] U'[j][k] */
      double acc = 0.0;
      int32_t top = i < k ? i : k;
      for (int32_t j = 0; j <= top; j++) {
        double l = j == i ? 1.0 : L[(int64_t)i * c + j];
        double u =
            j == k ? p->sign[k] * exp((double)s[k]) : U[(int64_t)j * c + k];
        acc += l * u;
      }
      w[(int64_t)p->perm[i] * c + k] = acc;
    }
}

/* The weight in double, whichever parametrisation. */
static void weight64(const permute *p, const float *P, double *w) {
  if (p->kind == GLOW_PERMUTE_CONV1X1_LU) {
    lu_weight(p, P, w);
    return;
  }
  for (int64_t i = 0; i < (int64_t)p->c * p->c; i++)
    w[i] = P[p->weight + i];
}

/* W in double in s->mat64 (c x c), factored in place by LU with partial
 * pivoting, column-major (the pivots follow it in s->mat64), and
 * log|det W| into *logabsdet when that is not NULL.  NUMERIC if W is
 * singular or log|det W| is not finite. */
static int factor64(const permute *p, const float *P, glow__scratch *s,
                    double *logabsdet) {
  const int32_t c = p->c;
  double *a = s->mat64;
  lapack_int *ipiv = (lapack_int *)(s->mat64 + (size_t)c * c);
  weight64(p, P, a);
  transpose(a, c);
  if (LAPACKE_dgetrf_work(LAPACK_COL_MAJOR, c, c, a, c, ipiv) != 0)
    return GLOW_ERR_NUMERIC;
  if (logabsdet) {
    double sum = 0.0;
    for (int32_t i = 0; i < c; i++)
      sum += log(fabs(a[(int64_t)i * c + i]));
    if (!isfinite(sum))
      return GLOW_ERR_NUMERIC;
    *logabsdet = sum;
  }
  return GLOW_OK;
}

/* W^{-1} in double in s->mat64 (c x c, row-major), from factor64's
 * factorisation.  The one inversion of a 1x1 weight: the inverse pass
 * (rebuilding a step's input) and the plain weight's gradient (W^{-T})
 * both use it.  NUMERIC if W is singular.
 * dgetri's scratch is the last c*c doubles of s->mat64 (2c^2 + c of
 * them): LAPACK's optimal size is c times a block size, and where the
 * block is c or more it takes the unblocked path, which needs only c; so
 * this is the optimal path, as LAPACKE's allocating interface takes. */
static int inverse64(const permute *p, const float *P, glow__scratch *s) {
  const int32_t c = p->c;
  int rc = factor64(p, P, s, NULL);
  if (rc)
    return rc;
  lapack_int *ipiv = (lapack_int *)(s->mat64 + (size_t)c * c);
  double *work = s->mat64 + (size_t)c * c + c;
  if (LAPACKE_dgetri_work(LAPACK_COL_MAJOR, c, s->mat64, c, ipiv, work,
                          (lapack_int)c * c) != 0)
    return GLOW_ERR_NUMERIC;
  transpose(s->mat64, c);
  return GLOW_OK;
}

static void gather(const int32_t *perm, const float *x, float *y, int64_t rows,
                   int32_t c) {
  for (int64_t r = 0; r < rows; r++)
    for (int32_t j = 0; j < c; j++)
      y[r * c + j] = x[r * c + perm[j]];
}

static void scatter(const int32_t *perm, const float *y, float *x, int64_t rows,
                    int32_t c) {
  for (int64_t r = 0; r < rows; r++)
    for (int32_t j = 0; j < c; j++)
      x[r * c + perm[j]] = y[r * c + j];
}

/* W^{-1} in float in s->mat32; NUMERIC if W is singular or its inverse
 * does not fit float. */
static int weight_inverse(const permute *p, const float *P, glow__scratch *s) {
  int rc = inverse64(p, P, s);
  if (rc)
    return rc;
  const double *a = s->mat64;
  for (int64_t i = 0; i < (int64_t)p->c * p->c; i++) {
    if (!isfinite(a[i]) || fabs(a[i]) > 3.0e38)
      return GLOW_ERR_NUMERIC;
    s->mat32[i] = (float)a[i];
  }
  return GLOW_OK;
}

/* Gradient of log|det W| (times ld_weight) and of the data term gw = x^T g
 * for the LU parametrisation, in double.  With A = L U' (W = P A, U' = U +
 * diag(sign e^s)) and GA = P^T gW:
 *   dL/dL = GA U'^T (strict lower part), dL/dU' = L^T GA,
 *   dL/dU = strict upper part of dL/dU', dL/ds = diag(dL/dU') * U'_kk +
 *   ld_weight (the logdet is sum(s) per pixel).
 * Entries outside the triangles do not enter the weight: their gradient is
 * 0, so an optimizer leaves them where they are. */
static void lu_backward(const permute *p, const float *P, float *G,
                        const float *gw, double ld_weight, double *ga,
                        double *up) {
  const int32_t c = p->c;
  const float *L = P + p->lower, *U = P + p->upper, *s = P + p->log_s;
  for (int32_t i = 0; i < c; i++)
    for (int32_t k = 0; k < c; k++) {
      ga[(int64_t)i * c + k] = gw[(int64_t)p->perm[i] * c + k];
      up[(int64_t)i * c + k] = i == k  ? p->sign[k] * exp((double)s[k])
                               : i < k ? U[(int64_t)i * c + k]
                                       : 0.0;
    }
  for (int32_t i = 0; i < c; i++)
    for (int32_t j = 0; j < c; j++) {
      double acc = 0.0;
      if (i > j) { /* (GA U'^T)[i][j] = sum_{k >= j} GA[i][k] U'[j][k] */
        for (int32_t k = j; k < c; k++)
          acc += ga[(int64_t)i * c + k] * up[(int64_t)j * c + k];
        G[p->lower + (int64_t)i * c + j] += (float)acc;
      } else { /* (L^T GA)[i][j] = sum_{r >= i} L[r][i] GA[r][j] */
        acc = ga[(int64_t)i * c + j];
        for (int32_t r = i + 1; r < c; r++)
          acc += (double)L[(int64_t)r * c + i] * ga[(int64_t)r * c + j];
        if (i < j)
          G[p->upper + (int64_t)i * c + j] += (float)acc;
        else
          G[p->log_s + i] += (float)(acc * up[(int64_t)i * c + i] + ld_weight);
      }
    }
}

static int singular(const glow__layer *ly, int in_forward) {
  return glow__fail(GLOW_ERR_NUMERIC,
                    "the 1x1 weight of level %d step %d is singular%s",
                    ly->level, ly->step,
                    in_forward ? "" : ", or its inverse overflows float");
}

/* log|det W| per pixel: the sum of log|U_kk| of W's factorisation, or
 * sum(log_s) of the LU parametrisation; 0 for a permutation. */
static int forward(const glow__layer *ly, const glow__pass *p, const float *x,
                   float *y, float *keep, glow__handoff *left) {
  (void)keep;
  const permute *pm = ly->self;
  const int32_t c = pm->c;
  const int64_t rows = glow__rows(&ly->in, p->n);
  double ld = 0.0;
  switch (pm->kind) {
  case GLOW_PERMUTE_REVERSE:
  case GLOW_PERMUTE_SHUFFLE: gather(pm->perm, x, y, rows, c); break;
  case GLOW_PERMUTE_CONV1X1: {
    cache_head h;
    float *cache = cache_for(pm, p, &h);
    if (cache && (h.have & HAVE_LOGDET)) {
      ld = h.logabsdet;
    } else {
      if (factor64(pm, p->P, p->s, &ld))
        return singular(ly, 1);
      if (cache) {
        h.logabsdet = ld;
        cache_has(cache, &h, HAVE_LOGDET);
      }
    }
    glow__matmul(x, c, rows, c, p->P + pm->weight, c, y, &p->s->conv, NULL);
    break;
  }
  default: { /* LU */
    for (int32_t i = 0; i < c; i++)
      ld += p->P[pm->log_s + i];
    cache_head h;
    float *cache = cache_for(pm, p, &h);
    float *w = cache ? cached_matrix(pm, cache, HAVE_W) : p->s->mat32;
    if (!cache || !(h.have & HAVE_W)) {
      lu_weight(pm, p->P, p->s->mat64);
      for (int64_t i = 0; i < (int64_t)c * c; i++)
        w[i] = (float)p->s->mat64[i];
      if (cache)
        cache_has(cache, &h, HAVE_W);
    }
    glow__matmul(x, c, rows, c, w, c, y, &p->s->conv, NULL);
  }
  }
  p->ld->shared += (double)ly->in.h * ly->in.w * ld;
  if (left)
    *left = (glow__handoff){x, y, NULL};
  return GLOW_OK;
}

static int inverse(const glow__layer *ly, const glow__pass *p, const float *y,
                   float *x) {
  const permute *pm = ly->self;
  const int32_t c = pm->c;
  const int64_t rows = glow__rows(&ly->in, p->n);
  if (pm->kind == GLOW_PERMUTE_REVERSE || pm->kind == GLOW_PERMUTE_SHUFFLE) {
    scatter(pm->perm, y, x, rows, c);
  } else {
    cache_head h;
    float *cache = cache_for(pm, p, &h);
    const float *inv = p->s->mat32;
    if (cache && (h.have & HAVE_INV)) {
      inv = cached_matrix(pm, cache, HAVE_INV);
    } else {
      if (weight_inverse(pm, p->P, p->s))
        return singular(ly, 0);
      if (cache) {
        memcpy(cached_matrix(pm, cache, HAVE_INV), p->s->mat32,
               sizeof(float) * (size_t)c * c);
        cache_has(cache, &h, HAVE_INV);
      }
    }
    glow__matmul(y, c, rows, c, inv, c, x, &p->s->conv, NULL);
  }
  return GLOW_OK;
}

static int backward(const glow__layer *ly, const glow__pass *p,
                    const glow__handoff *h, const float *gy, float *gx,
                    float *G) {
  const permute *pm = ly->self;
  const int32_t c = pm->c;
  const int64_t rows = glow__rows(&ly->in, p->n);
  /* dL/d(a per-pixel logdet term): every pixel of every image. */
  const double ld_weight = (double)rows * p->gld;
  glow__scratch *s = p->s;
  if (pm->kind == GLOW_PERMUTE_REVERSE || pm->kind == GLOW_PERMUTE_SHUFFLE) {
    scatter(pm->perm, gy, gx, rows, c); /* y[j] = x[perm[j]] */
    return GLOW_OK;
  }
  if (pm->kind == GLOW_PERMUTE_CONV1X1) {
    /* dL/dW = x^T g + ld_weight W^{-T}; the inverse in double. */
    if (inverse64(pm, p->P, s))
      return singular(ly, 0);
    const double *a = s->mat64;
    float *gw = G + pm->weight;
    for (int32_t i = 0; i < c; i++)
      for (int32_t j = 0; j < c; j++)
        gw[(int64_t)i * c + j] += (float)(ld_weight * a[(int64_t)j * c + i]);
    glow__matmul_grad(h->x, c, rows, c, p->P + pm->weight, c, gy, gw, gx,
                      &s->conv);
    return GLOW_OK;
  }
  /* LU: the data term through the composed weight, then the chain rule. */
  lu_weight(pm, p->P, s->mat64);
  for (int64_t i = 0; i < (int64_t)c * c; i++) {
    s->mat32[i] = (float)s->mat64[i];
    s->mat_grad[i] = 0.0f;
  }
  glow__matmul_grad(h->x, c, rows, c, s->mat32, c, gy, s->mat_grad, gx,
                    &s->conv);
  lu_backward(pm, p->P, G, s->mat_grad, ld_weight, s->mat64,
              s->mat64 + (size_t)c * c);
  return GLOW_OK;
}

const glow__layer_ops glow__permute_layer = {
    .name = "permutation",
    .size = sizeof(permute),
    .build = build,
    .init = init,
    .needs = needs,
    .forward = forward,
    .inverse = inverse,
    .backward = backward,
};
