/*
 * testutil.h -- helpers shared by the cmocka tests.
 */
#ifndef GLOW_TESTUTIL_H
#define GLOW_TESTUTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "glow.h"

/* Deterministic test randomness (xorshift64*), independent of the library. */
static inline uint64_t tu_next(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1DULL;
}

static inline double tu_uniform(uint64_t *s) {
  return (double)(tu_next(s) >> 11) * 0x1.0p-53;
}

static inline double tu_normal(uint64_t *s) {
  double u1 = 1.0 - tu_uniform(s), u2 = tu_uniform(s);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* A small config: h x w x c images, L levels, K steps. */
static inline glow_config tu_config(int32_t h, int32_t w, int32_t c,
                                    int32_t levels, int32_t depth,
                                    int32_t hidden, int32_t coupling,
                                    int32_t permutation) {
  glow_config cfg;
  glow_config_init(&cfg);
  cfg.height = h;
  cfg.width = w;
  cfg.channels = c;
  cfg.levels = levels;
  cfg.depth = depth;
  cfg.hidden = hidden;
  cfg.coupling = coupling;
  cfg.permutation = permutation;
  cfg.seed = 7;
  return cfg;
}

/* Move every parameter away from its initial value, so that zero-initialised
 * layers (couplings, priors) do real work. */
static inline void tu_perturb(glow_model *m, double scale, uint64_t seed) {
  float *p = glow_params(m);
  int64_t n = glow_param_count(m);
  uint64_t s = seed | 1;
  for (int64_t i = 0; i < n; i++)
    p[i] += (float)(scale * tu_normal(&s));
}

/* n images of values in [-0.5, 0.5). */
static inline float *tu_images(const glow_model *m, int32_t n, uint64_t seed) {
  int64_t d = glow_model_dim(m);
  float *x = malloc(sizeof(float) * (size_t)(n * d));
  uint64_t s = seed | 1;
  for (int64_t i = 0; i < n * d; i++)
    x[i] = (float)(tu_uniform(&s) - 0.5);
  return x;
}

static inline double tu_max_abs_diff(const float *a, const float *b,
                                     int64_t n) {
  double m = 0.0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= m))
      m = d; /* also catches NaN */
  }
  return m;
}

#endif
