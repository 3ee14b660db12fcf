/*
 * tensors.c -- the tensors of a model file, in file order: the parameter
 * tensors in glow_params() order (so the data section starts with a copy
 * of the parameter buffer), then the fixed buffers the layers registered.
 */
#include <stdio.h>
#include <stdlib.h>

#include "format.h"

int glow__file_tensors(const glow_model *m, glow__ftensor **out, int32_t *n) {
  const glow__registry *r = &m->reg;
  const int64_t total = (int64_t)r->n_tensors + r->n_fixed;
  if (total > INT32_MAX)
    return glow__fail(GLOW_ERR_FORMAT, "model file: too many tensors");
  glow__ftensor *t = glow__calloc((size_t)(total > 0 ? total : 1), sizeof *t);
  if (!t)
    return glow__fail(GLOW_ERR_NOMEM, "model file: out of memory");
  for (int32_t i = 0; i < r->n_tensors; i++) {
    const glow__tensor *src = &r->tensors[i];
    snprintf(t[i].name, sizeof t[i].name, "%s", src->name);
    t[i].param = 1;
    t[i].ndim = src->ndim;
    memcpy(t[i].shape, src->shape, sizeof t[i].shape);
    t[i].count = glow__tensor_count(src);
    t[i].offset = src->offset;
  }
  for (int32_t f = 0; f < r->n_fixed; f++) {
    glow__ftensor *d = &t[r->n_tensors + f];
    snprintf(d->name, sizeof d->name, "%s", r->fixed[f].name);
    d->ndim = 1;
    d->shape[0] = r->fixed[f].count;
    d->count = r->fixed[f].count;
    d->fixed = f;
  }
  *out = t;
  *n = (int32_t)total;
  return GLOW_OK;
}
