/*
 * registry.c -- how layers declare what they own: parameter tensors in the
 * flat buffer, fixed buffers beside it, and the scratch they need.
 */
#include <stdio.h>

#include "layer.h"

int64_t glow__reg_tensor(glow__registry *r, const char *prefix,
                         const char *suffix, int32_t ndim,
                         const int32_t *shape) {
  int64_t count = 1;
  for (int32_t i = 0; i < ndim; i++)
    count *= shape[i];
  const int64_t off = r->n_params;
  if (r->tensors) {
    glow__tensor *t = &r->tensors[r->n_tensors];
    snprintf(t->name, sizeof t->name, "%s.%s", prefix, suffix);
    t->offset = off;
    t->ndim = ndim;
    memset(t->shape, 0, sizeof t->shape);
    memcpy(t->shape, shape, sizeof(int32_t) * (size_t)ndim);
  }
  r->n_tensors++;
  r->n_params += count;
  return off;
}

/* The next fixed-buffer entry and `count` values of the pools. */
static glow__fixed *reg_fixed(glow__registry *r, const char *prefix,
                              const char *suffix, int32_t count, int32_t kind) {
  glow__fixed *f = NULL;
  if (r->tensors) {
    f = &r->fixed[r->n_fixed];
    snprintf(f->name, sizeof f->name, "%s.%s", prefix, suffix);
    f->kind = kind;
    f->count = count;
    f->index = NULL;
    f->sign = NULL;
  }
  r->n_fixed++;
  r->n_fixed_values += count;
  return f;
}

int32_t *glow__reg_index(glow__registry *r, const char *prefix,
                         const char *suffix, int32_t count, int32_t kind) {
  const int64_t at = r->n_fixed_values;
  glow__fixed *f = reg_fixed(r, prefix, suffix, count, kind);
  if (!f)
    return NULL;
  return f->index = r->int_pool + at;
}

float *glow__reg_sign(glow__registry *r, const char *prefix, const char *suffix,
                      int32_t count) {
  const int64_t at = r->n_fixed_values;
  glow__fixed *f = reg_fixed(r, prefix, suffix, count, GLOW__FIXED_SIGN);
  if (!f)
    return NULL;
  return f->sign = r->float_pool + at;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

void glow__needs_max(glow__needs *acc, const glow__needs *more) {
  acc->act = max64(acc->act, more->act);
  acc->grad_act = max64(acc->grad_act, more->grad_act);
  acc->patches = max64(acc->patches, more->patches);
  acc->conv_weight = max64(acc->conv_weight, more->conv_weight);
  acc->chan = max64(acc->chan, more->chan);
  acc->mat = max64(acc->mat, more->mat);
  acc->pixels = max64(acc->pixels, more->pixels);
}
