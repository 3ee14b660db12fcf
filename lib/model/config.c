/*
 * config.c -- defaults and validation of glow_config.
 */
#include <math.h>
#include <string.h>

#include "model.h"

void glow__config_defaults(glow_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->size = (uint32_t)sizeof *cfg;
  cfg->height = 32;
  cfg->width = 32;
  cfg->channels = 3;
  cfg->levels = 3;
  cfg->depth = 32;
  cfg->hidden = 512;
  cfg->coupling = GLOW_COUPLING_AFFINE;
  cfg->permutation = GLOW_PERMUTE_CONV1X1;
  cfg->n_bits = 8;
  cfg->n_classes = 0;
  cfg->learn_top = 1;
  cfg->class_weight = 0.01f;
  cfg->seed = 0;
}

/* Limits that keep every size computation far from int32/int64 overflow. */
#define GLOW__MAX_SIDE 65536
#define GLOW__MAX_CHANNELS 4096
#define GLOW__MAX_LEVELS 16
#define GLOW__MAX_DEPTH 4096
#define GLOW__MAX_HIDDEN 65536
#define GLOW__MAX_CLASSES 1000000
/* One image must fit a batch: n * D <= INT32_MAX with n = 1. */
#define GLOW__MAX_DIM INT64_C(2147483647)

int glow__config_check(const glow_config *c) {
  if (c->height <= 0 || c->width <= 0 || c->channels <= 0 ||
      c->height > GLOW__MAX_SIDE || c->width > GLOW__MAX_SIDE ||
      c->channels > GLOW__MAX_CHANNELS)
    return glow__fail(GLOW_ERR_SHAPE,
                      "image shape %dx%dx%d: each size must be in 1..%d "
                      "(channels 1..%d)",
                      c->height, c->width, c->channels, GLOW__MAX_SIDE,
                      GLOW__MAX_CHANNELS);
  if (c->levels < 1 || c->levels > GLOW__MAX_LEVELS)
    return glow__fail(GLOW_ERR_CONFIG, "levels = %d: must be in 1..%d",
                      c->levels, GLOW__MAX_LEVELS);
  int64_t div = INT64_C(1) << c->levels;
  if (c->height % div || c->width % div)
    return glow__fail(GLOW_ERR_SHAPE,
                      "image %dx%d: height and width must be divisible by "
                      "2^levels = %lld",
                      c->height, c->width, (long long)div);
  if ((int64_t)c->height * c->width * c->channels > GLOW__MAX_DIM)
    return glow__fail(GLOW_ERR_SHAPE,
                      "image %dx%dx%d is too large (at most 2^31 - 1 values)",
                      c->height, c->width, c->channels);
  if (c->depth < 1 || c->depth > GLOW__MAX_DEPTH)
    return glow__fail(GLOW_ERR_CONFIG, "depth = %d: must be in 1..%d", c->depth,
                      GLOW__MAX_DEPTH);
  if (c->hidden < 1 || c->hidden > GLOW__MAX_HIDDEN)
    return glow__fail(GLOW_ERR_CONFIG, "hidden = %d: must be in 1..%d",
                      c->hidden, GLOW__MAX_HIDDEN);
  if (c->coupling != GLOW_COUPLING_AFFINE &&
      c->coupling != GLOW_COUPLING_ADDITIVE)
    return glow__fail(GLOW_ERR_CONFIG,
                      "coupling = %d: must be GLOW_COUPLING_AFFINE (0) or "
                      "GLOW_COUPLING_ADDITIVE (1)",
                      c->coupling);
  if (c->permutation < GLOW_PERMUTE_CONV1X1 ||
      c->permutation > GLOW_PERMUTE_SHUFFLE)
    return glow__fail(GLOW_ERR_CONFIG,
                      "permutation = %d: must be one of GLOW_PERMUTE_* (0..3)",
                      c->permutation);
  if (c->n_bits < 1 || c->n_bits > 8)
    return glow__fail(GLOW_ERR_CONFIG, "n_bits = %d: must be in 1..8",
                      c->n_bits);
  if (c->n_classes < 0 || c->n_classes > GLOW__MAX_CLASSES)
    return glow__fail(GLOW_ERR_CONFIG, "n_classes = %d: must be in 0..%d",
                      c->n_classes, GLOW__MAX_CLASSES);
  if (c->learn_top != 0 && c->learn_top != 1)
    return glow__fail(GLOW_ERR_CONFIG, "learn_top = %d: must be 0 or 1",
                      c->learn_top);
  if (!isfinite(c->class_weight) || c->class_weight < 0.0f)
    return glow__fail(GLOW_ERR_CONFIG,
                      "class_weight = %g: must be finite and >= 0",
                      (double)c->class_weight);
  return GLOW_OK;
}

int glow__config_read(const glow_config *cfg, glow_config *out) {
  if (!cfg)
    return glow__fail(GLOW_ERR_NULL, "config is NULL");
  if (cfg->size < GLOW_CONFIG_SIZE_V1)
    return glow__fail(GLOW_ERR_CONFIG_SIZE,
                      "config size %u is smaller than %u: call "
                      "glow_config_init() first",
                      (unsigned)cfg->size, (unsigned)GLOW_CONFIG_SIZE_V1);
  glow__config_defaults(out);
  /* Read only what the caller's struct has and this version knows. */
  size_t n = cfg->size < sizeof *out ? cfg->size : sizeof *out;
  memcpy(out, cfg, n);
  out->size = (uint32_t)sizeof *out;
  return glow__config_check(out);
}
