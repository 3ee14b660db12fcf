/*
 * make_seeds.c -- write the fuzzer's seed corpus: small valid model files
 * covering every coupling, permutation and optional tensor.
 *
 *   fuzz_make_seeds DIR
 *
 * tests/fuzz/corpus/ holds the output of this program as committed (format
 * version 1 files that must keep loading); the test suite also runs it
 * afresh, so that what the current writer produces is replayed too.
 */
#include <stdio.h>

#include "glow.h"
#include "model.h" /* m->initialized, for one seed */

typedef struct {
  const char *name;
  int32_t h, w, c, levels, depth, hidden, coupling, permutation, n_classes,
      learn_top, initialized;
} seed;

static const seed seeds[] = {
    {"affine-conv1x1", 4, 4, 1, 1, 1, 2, GLOW_COUPLING_AFFINE,
     GLOW_PERMUTE_CONV1X1, 0, 1, 0},
    {"additive-lu", 4, 4, 1, 1, 1, 2, GLOW_COUPLING_ADDITIVE,
     GLOW_PERMUTE_CONV1X1_LU, 0, 1, 0},
    {"affine-reverse-init", 4, 4, 1, 1, 2, 2, GLOW_COUPLING_AFFINE,
     GLOW_PERMUTE_REVERSE, 0, 1, 1},
    {"additive-shuffle-cond-notop", 4, 4, 1, 1, 1, 2, GLOW_COUPLING_ADDITIVE,
     GLOW_PERMUTE_SHUFFLE, 2, 0, 0},
    {"affine-lu-2levels", 4, 4, 1, 2, 1, 2, GLOW_COUPLING_AFFINE,
     GLOW_PERMUTE_CONV1X1_LU, 0, 1, 0},
};

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    const seed *s = &seeds[i];
    glow_config cfg;
    glow_config_init(&cfg);
    cfg.height = s->h;
    cfg.width = s->w;
    cfg.channels = s->c;
    cfg.levels = s->levels;
    cfg.depth = s->depth;
    cfg.hidden = s->hidden;
    cfg.coupling = s->coupling;
    cfg.permutation = s->permutation;
    cfg.n_classes = s->n_classes;
    cfg.learn_top = s->learn_top;
    cfg.seed = 1000 + i;
    glow_model *m = NULL;
    if (glow_model_create(&cfg, &m) != GLOW_OK) {
      fprintf(stderr, "%s: %s\n", s->name, glow_last_error());
      return 1;
    }
    /* Nonzero everywhere, so that the zero-initialised layers count. */
    float *p = glow_params(m);
    for (int64_t j = 0; j < glow_param_count(m); j++)
      p[j] += 0.01f * (float)((j * 7919) % 13 - 6);
    m->initialized = s->initialized;
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", argv[1], s->name);
    if (glow_model_save(m, path) != GLOW_OK) {
      fprintf(stderr, "%s: %s\n", path, glow_last_error());
      glow_model_free(m);
      return 1;
    }
    glow_model_free(m);
  }
  return 0;
}
