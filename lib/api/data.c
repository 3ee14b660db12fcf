/*
 * data.c -- pixels to model inputs and back: n-bit reduction and uniform
 * dequantisation, as openai/glow's preprocessing.
 */
#include <math.h>

#include "api.h"

#define GLOW__DEQUANT_STREAM UINT64_C(0x4445515541)

int glow_preprocess(const glow_model *m, const uint8_t *pixels, int32_t n,
                    uint64_t seed, float *x) {
  int rc = glow__check_io(m, pixels, x, n, "glow_preprocess");
  if (rc)
    return rc;
  const int shift = 8 - m->cfg.n_bits;
  const float bins = (float)(1 << m->cfg.n_bits);
  const int64_t count = n * m->dim;
  for (int64_t i = 0; i < count; i++) {
    float bin = (float)(pixels[i] >> shift);
    float u = (float)glow__uniform(seed, GLOW__DEQUANT_STREAM, (uint64_t)i);
    x[i] = (bin + u) / bins - 0.5f;
  }
  return GLOW_OK;
}

int glow_postprocess(const glow_model *m, const float *x, int32_t n,
                     uint8_t *pixels) {
  int rc = glow__check_io(m, x, pixels, n, "glow_postprocess");
  if (rc)
    return rc;
  const int shift = 8 - m->cfg.n_bits;
  const int bins = 1 << m->cfg.n_bits;
  const int64_t count = n * m->dim;
  for (int64_t i = 0; i < count; i++) {
    float v = (x[i] + 0.5f) * (float)bins;
    int b = isfinite(v) ? (v <= 0.0f          ? 0
                           : v >= (float)bins ? bins - 1
                                              : (int)v)
                        : 0;
    pixels[i] = (uint8_t)(b << shift);
  }
  return GLOW_OK;
}
