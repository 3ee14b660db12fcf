/*
 * tensors.c -- introspection: the named parameter tensors and the layout
 * of the latent rows.
 */
#include <string.h>

#include "api.h"

int32_t glow_tensor_count(const glow_model *m) {
  return m ? m->reg.n_tensors : -1;
}

int glow_tensor_get(const glow_model *m, int32_t index, glow_tensor_info *out) {
  if (!m || !out)
    return glow__fail(GLOW_ERR_NULL, "glow_tensor_get: %s is NULL",
                      !m ? "model" : "out");
  if (out->size < GLOW_TENSOR_INFO_SIZE_V1)
    return glow__fail(GLOW_ERR_ARG,
                      "glow_tensor_get: out->size %u is smaller than %u: set "
                      "it to sizeof(glow_tensor_info)",
                      (unsigned)out->size, (unsigned)GLOW_TENSOR_INFO_SIZE_V1);
  if (index < 0 || index >= m->reg.n_tensors)
    return glow__fail(GLOW_ERR_ARG, "glow_tensor_get: index %d outside [0, %d)",
                      index, m->reg.n_tensors);
  const glow__tensor *src = &m->reg.tensors[index];
  glow_tensor_info t;
  memset(&t, 0, sizeof t);
  t.size = (uint32_t)sizeof t;
  t.ndim = src->ndim;
  t.name = src->name;
  t.offset = src->offset;
  t.count = glow__tensor_count(src);
  for (int32_t d = 0; d < src->ndim; d++)
    t.shape[d] = src->shape[d];
  /* A newer caller's larger struct keeps the fields we do not know. */
  uint32_t keep = out->size;
  memcpy(out, &t, keep < sizeof t ? keep : sizeof t);
  out->size = keep;
  return GLOW_OK;
}

int glow_tensor_find(const glow_model *m, const char *name, int32_t *index) {
  if (!m || !name || !index)
    return glow__fail(GLOW_ERR_NULL, "glow_tensor_find: %s is NULL",
                      !m      ? "model"
                      : !name ? "name"
                              : "index");
  for (int32_t i = 0; i < m->reg.n_tensors; i++)
    if (!strcmp(m->reg.tensors[i].name, name)) {
      *index = i;
      return GLOW_OK;
    }
  *index = -1;
  return glow__fail(GLOW_ERR_ARG, "glow_tensor_find: no tensor '%.80s'", name);
}

int glow_latent_layout(const glow_model *m, int32_t level, int32_t *h,
                       int32_t *w, int32_t *c, int64_t *offset) {
  if (!m)
    return glow__fail(GLOW_ERR_NULL, "glow_latent_layout: model is NULL");
  const glow__layer *ly = glow__model_prior(m, level);
  if (!ly)
    return glow__fail(GLOW_ERR_ARG,
                      "glow_latent_layout: level %d outside [0, %d)", level,
                      m->cfg.levels);
  if (h)
    *h = ly->in.h;
  if (w)
    *w = ly->in.w;
  if (c)
    *c = ly->in.c - ly->out.c; /* the channels the prior does not pass on */
  if (offset)
    *offset = ly->eps_off;
  return GLOW_OK;
}
