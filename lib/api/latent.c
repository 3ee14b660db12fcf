/*
 * latent.c -- arithmetic on latent rows that hosts doing latent
 * manipulation would otherwise write again and again.  Pure functions over
 * caller buffers: no model, no allocation.  Sums run in double.
 */
#include <math.h>

#include "api.h"

/* The vector checks plus a finite interpolation parameter. */
static int check_interp(const float *a, const float *b, const float *out,
                        int64_t dim, float t, const char *fn) {
  int rc = glow__check_vectors(a, b, out, dim, fn);
  return rc ? rc : glow__check_finite(t, "t", fn);
}

int glow_latent_lerp(const float *a, const float *b, int64_t dim, float t,
                     float *out) {
  int rc = check_interp(a, b, out, dim, t, "glow_latent_lerp");
  if (rc)
    return rc;
  for (int64_t i = 0; i < dim; i++)
    out[i] = (float)((1.0 - t) * a[i] + (double)t * b[i]);
  return GLOW_OK;
}

int glow_latent_slerp(const float *a, const float *b, int64_t dim, float t,
                      float *out) {
  int rc = check_interp(a, b, out, dim, t, "glow_latent_slerp");
  if (rc)
    return rc;
  double aa = 0.0, bb = 0.0, ab = 0.0;
  for (int64_t i = 0; i < dim; i++) {
    aa += (double)a[i] * a[i];
    bb += (double)b[i] * b[i];
    ab += (double)a[i] * b[i];
  }
  if (aa == 0.0 || bb == 0.0)
    return glow__fail(GLOW_ERR_ARG,
                      "glow_latent_slerp: a zero vector has no direction");
  /* Rotate the unit direction by t of the angle, and interpolate the norm
   * linearly: out = ((1-t)|a| + t|b|) slerp(a/|a|, b/|b|, t). */
  const double na = sqrt(aa), nb = sqrt(bb);
  double cosw = ab / (na * nb);
  cosw = cosw > 1.0 ? 1.0 : cosw < -1.0 ? -1.0 : cosw;
  const double w = acos(cosw), s = sin(w);
  const double norm = (1.0 - t) * na + (double)t * nb;
  /* Nearly parallel: the great circle degenerates, lerp is exact enough. */
  double ka = (1.0 - t) / na, kb = (double)t / nb;
  if (s > 1e-6) {
    ka = sin((1.0 - t) * w) / (s * na);
    kb = sin((double)t * w) / (s * nb);
  } else {
    double len = sqrt(ka * ka * aa + 2 * ka * kb * ab + kb * kb * bb);
    if (!(len > 1e-12))
      return glow__fail(GLOW_ERR_ARG, "glow_latent_slerp: opposite vectors "
                                      "have no unique great circle");
    ka /= len;
    kb /= len;
  }
  for (int64_t i = 0; i < dim; i++)
    out[i] = (float)(norm * (ka * a[i] + kb * b[i]));
  return GLOW_OK;
}

int glow_latent_direction(const float *with, int32_t n_with,
                          const float *without, int32_t n_without, int64_t dim,
                          float *direction) {
  int rc = glow__check_vectors(with, without, direction, dim,
                               "glow_latent_direction");
  if (rc)
    return rc;
  if (n_with < 1 || n_without < 1)
    return glow__fail(GLOW_ERR_BATCH,
                      "glow_latent_direction: each set needs at least one "
                      "latent (got %d and %d)",
                      n_with, n_without);
  for (int64_t j = 0; j < dim; j++) {
    double s1 = 0.0, s0 = 0.0;
    for (int32_t i = 0; i < n_with; i++)
      s1 += with[(int64_t)i * dim + j];
    for (int32_t i = 0; i < n_without; i++)
      s0 += without[(int64_t)i * dim + j];
    direction[j] = (float)(s1 / n_with - s0 / n_without);
  }
  return GLOW_OK;
}

int glow_latent_shift(const float *z, const float *direction, int32_t n,
                      int64_t dim, float scale, float *out) {
  int rc = glow__check_vectors(z, direction, out, dim, "glow_latent_shift");
  if (rc)
    return rc;
  if (n < 1)
    return glow__fail(GLOW_ERR_BATCH, "glow_latent_shift: n = %d must be >= 1",
                      n);
  rc = glow__check_finite(scale, "scale", "glow_latent_shift");
  if (rc)
    return rc;
  for (int32_t i = 0; i < n; i++)
    for (int64_t j = 0; j < dim; j++)
      out[(int64_t)i * dim + j] =
          z[(int64_t)i * dim + j] + scale * direction[j];
  return GLOW_OK;
}
