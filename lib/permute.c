/*
 * permute.c -- the channel mixing of a flow step: the invertible 1x1
 * convolution (plain or LU-decomposed) and the fixed permutations.
 *
 * Weights act on a pixel's channel row vector: y = x W, W[in][out], the
 * layout of a 1x1 HWIO convolution kernel.  Determinants and inverses are
 * computed in double with LAPACKE from the current parameters on every call,
 * so a host that writes the parameters never sees a stale inverse.
 */
#include <math.h>
#include <stdlib.h>

#include <lapacke.h>

#include "glow_internal.h"

/* Fill q (c x c, row-major) with a random rotation: the Q factor of a
 * Gaussian matrix, as openai/glow initialises its 1x1 weights. */
static int random_rotation(int32_t c, uint64_t seed, uint64_t stream,
                           double *q, double *tau) {
  for (int64_t i = 0; i < (int64_t)c * c; i++)
    q[i] = glow__normal(seed, stream, (uint64_t)i);
  if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, c, c, q, c, tau) != 0)
    return GLOW_ERR_NUMERIC;
  if (LAPACKE_dorgqr(LAPACK_ROW_MAJOR, c, c, c, q, c, tau) != 0)
    return GLOW_ERR_NUMERIC;
  return GLOW_OK;
}

/* LU parametrisation of the rotation q: q = P L U with P from partial
 * pivoting, L unit lower, U upper; U's diagonal is stored as sign * e^s. */
static int lu_from_rotation(glow__permute *p, float *P, double *q,
                            lapack_int *ipiv) {
  const int32_t c = p->c;
  if (LAPACKE_dgetrf(LAPACK_ROW_MAJOR, c, c, q, c, ipiv) != 0)
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

int glow__permute_init(glow__permute *p, float *P, uint64_t seed,
                       uint64_t stream) {
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
  double *q = malloc(sizeof *q * ((size_t)c * c + c));
  lapack_int *ipiv = malloc(sizeof *ipiv * (size_t)c);
  int rc = q && ipiv ? GLOW_OK : GLOW_ERR_NOMEM;
  if (!rc)
    rc = random_rotation(c, seed, stream, q, q + (size_t)c * c);
  if (!rc && p->kind == GLOW_PERMUTE_CONV1X1)
    for (int64_t i = 0; i < (int64_t)c * c; i++)
      P[p->weight + i] = (float)q[i];
  else if (!rc)
    rc = lu_from_rotation(p, P, q, ipiv);
  free(q);
  free(ipiv);
  return rc;
}

/* W of an LU step in double: W[perm[i]][k] = (L U')[i][k]. */
static void lu_weight(const glow__permute *p, const float *P, double *w) {
  const int32_t c = p->c;
  const float *L = P + p->lower, *U = P + p->upper, *s = P + p->log_s;
  for (int32_t i = 0; i < c; i++)
    for (int32_t k = 0; k < c; k++) {
      /* (L U')[i][k] = sum_{j <= min(i,k)} L[i][j] U'[j][k] */
      double acc = 0.0;
      int32_t top = i < k ? i : k;
      for (int32_t j = 0; j <= top; j++) {
        double l = j == i ? 1.0 : L[(int64_t)i * c + j];
        double u = j == k ? p->sign[k] * exp((double)s[k])
                          : U[(int64_t)j * c + k];
        acc += l * u;
      }
      w[(int64_t)p->perm[i] * c + k] = acc;
    }
}

/* The weight in double, whichever parametrisation. */
static void weight64(const glow__permute *p, const float *P, double *w) {
  if (p->kind == GLOW_PERMUTE_CONV1X1_LU) {
    lu_weight(p, P, w);
    return;
  }
  for (int64_t i = 0; i < (int64_t)p->c * p->c; i++)
    w[i] = P[p->weight + i];
}

/* W in double in ws->w64 (c x c), factored in place by LU with partial
 * pivoting (the pivots follow it in ws->w64), and log|det W| into
 * *logabsdet when that is not NULL.  NUMERIC if W is singular or log|det W|
 * is not finite. */
static int factor64(const glow__permute *p, const float *P, glow__ws *ws,
                    double *logabsdet) {
  const int32_t c = p->c;
  double *a = ws->w64;
  lapack_int *ipiv = (lapack_int *)(ws->w64 + (size_t)c * c);
  weight64(p, P, a);
  if (LAPACKE_dgetrf(LAPACK_ROW_MAJOR, c, c, a, c, ipiv) != 0)
    return GLOW_ERR_NUMERIC;
  if (logabsdet) {
    double s = 0.0;
    for (int32_t i = 0; i < c; i++)
      s += log(fabs(a[(int64_t)i * c + i]));
    if (!isfinite(s))
      return GLOW_ERR_NUMERIC;
    *logabsdet = s;
  }
  return GLOW_OK;
}

/* W^{-1} in double in ws->w64 (c x c), from factor64's factorisation.
 * The one inversion of a 1x1 weight: the inverse pass (rebuilding a step's
 * input) and the plain weight's gradient (W^{-T}) both use it.  NUMERIC if
 * W is singular. */
static int inverse64(const glow__permute *p, const float *P, glow__ws *ws) {
  const int32_t c = p->c;
  int rc = factor64(p, P, ws, NULL);
  if (rc)
    return rc;
  lapack_int *ipiv = (lapack_int *)(ws->w64 + (size_t)c * c);
  if (LAPACKE_dgetri(LAPACK_ROW_MAJOR, c, ws->w64, c, ipiv) != 0)
    return GLOW_ERR_NUMERIC;
  return GLOW_OK;
}

static void gather(const int32_t *perm, const float *x, float *y,
                   int64_t rows, int32_t c) {
  for (int64_t r = 0; r < rows; r++)
    for (int32_t j = 0; j < c; j++)
      y[r * c + j] = x[r * c + perm[j]];
}

static void scatter(const int32_t *perm, const float *y, float *x,
                    int64_t rows, int32_t c) {
  for (int64_t r = 0; r < rows; r++)
    for (int32_t j = 0; j < c; j++)
      x[r * c + perm[j]] = y[r * c + j];
}

int glow__permute_forward(const glow__permute *p, const float *P,
                          glow__ws *ws, int64_t rows, double *logdet) {
  const int32_t c = p->c;
  switch (p->kind) {
  case GLOW_PERMUTE_REVERSE:
  case GLOW_PERMUTE_SHUFFLE:
    gather(p->perm, ws->z, ws->t, rows, c);
    if (logdet)
      *logdet = 0.0;
    break;
  case GLOW_PERMUTE_CONV1X1:
    if (logdet) { /* the only reason to factor W here */
      int rc = factor64(p, P, ws, logdet);
      if (rc)
        return rc;
    }
    glow__matmul(ws->z, c, rows, c, P + p->weight, c, ws->t, &ws->col);
    break;
  default: { /* LU */
    if (logdet) {
      double s = 0.0;
      for (int32_t i = 0; i < c; i++)
        s += P[p->log_s + i];
      *logdet = s;
    }
    lu_weight(p, P, ws->w64);
    for (int64_t i = 0; i < (int64_t)c * c; i++)
      ws->w32[i] = (float)ws->w64[i];
    glow__matmul(ws->z, c, rows, c, ws->w32, c, ws->t, &ws->col);
  }
  }
  glow__ws_swap(ws);
  return GLOW_OK;
}

/* W^{-1} in float in ws->w32; NUMERIC if W is singular or its inverse
 * does not fit float. */
static int weight_inverse(const glow__permute *p, const float *P,
                          glow__ws *ws) {
  int rc = inverse64(p, P, ws);
  if (rc)
    return rc;
  const double *a = ws->w64;
  for (int64_t i = 0; i < (int64_t)p->c * p->c; i++) {
    if (!isfinite(a[i]) || fabs(a[i]) > 3.0e38)
      return GLOW_ERR_NUMERIC;
    ws->w32[i] = (float)a[i];
  }
  return GLOW_OK;
}

int glow__permute_inverse(const glow__permute *p, const float *P,
                          glow__ws *ws, int64_t rows) {
  const int32_t c = p->c;
  if (p->kind == GLOW_PERMUTE_REVERSE || p->kind == GLOW_PERMUTE_SHUFFLE) {
    scatter(p->perm, ws->z, ws->t, rows, c);
  } else {
    int rc = weight_inverse(p, P, ws);
    if (rc)
      return rc;
    glow__matmul(ws->z, c, rows, c, ws->w32, c, ws->t, &ws->col);
  }
  glow__ws_swap(ws);
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
static void lu_backward(const glow__permute *p, const float *P, float *G,
                        const float *gw, double ld_weight, double *ga,
                        double *up) {
  const int32_t c = p->c;
  const float *L = P + p->lower, *U = P + p->upper, *s = P + p->log_s;
  for (int32_t i = 0; i < c; i++)
    for (int32_t k = 0; k < c; k++) {
      ga[(int64_t)i * c + k] = gw[(int64_t)p->perm[i] * c + k];
      up[(int64_t)i * c + k] =
          i == k ? p->sign[k] * exp((double)s[k])
                 : i < k ? U[(int64_t)i * c + k] : 0.0;
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
          G[p->log_s + i] +=
              (float)(acc * up[(int64_t)i * c + i] + ld_weight);
      }
    }
}

int glow__permute_backward(const glow__permute *p, const float *P, float *G,
                           const float *x, const float *g, float *gx,
                           int64_t rows, double ld_weight, glow__ws *ws) {
  const int32_t c = p->c;
  if (p->kind == GLOW_PERMUTE_REVERSE || p->kind == GLOW_PERMUTE_SHUFFLE) {
    scatter(p->perm, g, gx, rows, c); /* y[j] = x[perm[j]] */
    return GLOW_OK;
  }
  if (p->kind == GLOW_PERMUTE_CONV1X1) {
    /* dL/dW = x^T g + ld_weight W^{-T}; the inverse in double. */
    int rc = inverse64(p, P, ws);
    if (rc)
      return rc;
    const double *a = ws->w64;
    float *gw = G + p->weight;
    for (int32_t i = 0; i < c; i++)
      for (int32_t j = 0; j < c; j++)
        gw[(int64_t)i * c + j] += (float)(ld_weight * a[(int64_t)j * c + i]);
    glow__matmul_grad(x, c, rows, c, P + p->weight, c, g, gw, gx, &ws->col);
    return GLOW_OK;
  }
  /* LU: the data term through the composed weight, then the chain rule. */
  lu_weight(p, P, ws->w64);
  for (int64_t i = 0; i < (int64_t)c * c; i++) {
    ws->w32[i] = (float)ws->w64[i];
    ws->wg32[i] = 0.0f;
  }
  glow__matmul_grad(x, c, rows, c, ws->w32, c, g, ws->wg32, gx,
                    &ws->col);
  lu_backward(p, P, G, ws->wg32, ld_weight, ws->w64, ws->w64 + (size_t)c * c);
  return GLOW_OK;
}
