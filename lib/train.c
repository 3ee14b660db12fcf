/*
 * train.c -- data-dependent initialisation and the backward pass.
 */
#include "glow_internal.h"

int glow_data_init(glow_model *m, const float *x, const int32_t *labels,
                   int32_t n) {
  (void)x, (void)labels, (void)n;
  if (!m)
    return glow__fail(GLOW_ERR_NULL, "glow_data_init: model is NULL");
  return glow__fail(GLOW_ERR_UNSUPPORTED,
                    "glow_data_init is not available in this release");
}

int glow_backward(glow_model *m, const float *x, const int32_t *labels,
                  int32_t n, float *loss) {
  (void)x, (void)labels, (void)n, (void)loss;
  if (!m)
    return glow__fail(GLOW_ERR_NULL, "glow_backward: model is NULL");
  return glow__fail(GLOW_ERR_UNSUPPORTED,
                    "glow_backward is not available in this release");
}
