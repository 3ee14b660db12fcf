/*
 * checks.c -- argument checks of the public entry points.
 */
#include <math.h>

#include "api.h"

int glow__check_batch(const glow_model *m, int32_t n, const char *fn) {
  if (n < 1)
    return glow__fail(GLOW_ERR_BATCH, "%s: batch size n = %d must be >= 1", fn,
                      n);
  if ((int64_t)n * m->dim > INT32_MAX)
    return glow__fail(GLOW_ERR_BATCH,
                      "%s: batch of %d images of %lld values is too large", fn,
                      n, (long long)m->dim);
  return GLOW_OK;
}

int glow__check_labels(const glow_model *m, const int32_t *labels, int32_t n,
                       const char *fn) {
  const int32_t k = m->cfg.n_classes;
  if (k == 0 && labels)
    return glow__fail(GLOW_ERR_LABEL,
                      "%s: labels given to an unconditional model (pass NULL)",
                      fn);
  if (k > 0 && !labels)
    return glow__fail(GLOW_ERR_LABEL,
                      "%s: the model is conditional on %d classes and needs "
                      "labels",
                      fn, k);
  for (int32_t i = 0; k > 0 && i < n; i++)
    if (labels[i] < 0 || labels[i] >= k)
      return glow__fail(GLOW_ERR_LABEL,
                        "%s: labels[%d] = %d is outside [0, %d)", fn, i,
                        labels[i], k);
  return GLOW_OK;
}

int glow__check_batch_labels(const glow_model *m, const int32_t *labels,
                             int32_t n, const char *fn) {
  int rc = glow__check_batch(m, n, fn);
  return rc ? rc : glow__check_labels(m, labels, n, fn);
}

int glow__check_io(const glow_model *m, const void *in, const void *out,
                   int32_t n, const char *fn) {
  if (!m || !in || !out)
    return glow__fail(GLOW_ERR_NULL, "%s: %s is NULL", fn,
                      !m    ? "model"
                      : !in ? "input"
                            : "output");
  return glow__check_batch(m, n, fn);
}

int glow__check_call(const glow_model *m, const void *in, const void *out,
                     const int32_t *labels, int32_t n, const char *fn) {
  int rc = glow__check_io(m, in, out, n, fn);
  return rc ? rc : glow__check_labels(m, labels, n, fn);
}

int glow__check_vectors(const void *a, const void *b, const void *out,
                        int64_t dim, const char *fn) {
  if (!a || !b || !out)
    return glow__fail(GLOW_ERR_NULL, "%s: a vector argument is NULL", fn);
  if (dim < 1)
    return glow__fail(GLOW_ERR_ARG, "%s: dim = %lld must be >= 1", fn,
                      (long long)dim);
  return GLOW_OK;
}

int glow__check_finite(float v, const char *what, const char *fn) {
  if (!isfinite(v))
    return glow__fail(GLOW_ERR_ARG, "%s: %s is not finite", fn, what);
  return GLOW_OK;
}
