/*
 * model.c -- creating and freeing models, their configuration, and the
 * flat parameter and gradient buffers.
 */
#include <stdlib.h>
#include <string.h>

#include "api.h"

void glow_config_init(glow_config *cfg) {
  if (cfg)
    glow__config_defaults(cfg);
}

int glow_model_create(const glow_config *cfg, glow_model **out) {
  if (out)
    *out = NULL;
  if (!cfg || !out)
    return glow__fail(GLOW_ERR_NULL, "glow_model_create: %s is NULL",
                      !cfg ? "cfg" : "out");
  glow_config c;
  int rc = glow__config_read(cfg, &c);
  if (rc)
    return rc;
  glow_model *m = NULL;
  rc = glow__model_new(&c, INT64_MAX, &m);
  if (rc)
    return rc;
  rc = glow__model_init(m);
  if (rc) {
    glow__model_free(m);
    return rc;
  }
  *out = m;
  return GLOW_OK;
}

void glow_model_free(glow_model *m) { glow__model_free(m); }

int64_t glow_model_dim(const glow_model *m) { return m ? m->dim : -1; }

int glow_model_config(const glow_model *m, glow_config *out) {
  if (!m || !out)
    return glow__fail(GLOW_ERR_NULL, "glow_model_config: %s is NULL",
                      !m ? "model" : "out");
  if (out->size < GLOW_CONFIG_SIZE_V1)
    return glow__fail(GLOW_ERR_CONFIG_SIZE,
                      "glow_model_config: out->size %u is smaller than %u",
                      (unsigned)out->size, (unsigned)GLOW_CONFIG_SIZE_V1);
  uint32_t keep = out->size;
  size_t n = keep < sizeof m->cfg ? keep : sizeof m->cfg;
  memcpy(out, &m->cfg, n);
  out->size = keep;
  return GLOW_OK;
}

int64_t glow_param_count(const glow_model *m) {
  return m ? m->reg.n_params : -1;
}

float *glow_params(glow_model *m) { return m ? m->params : NULL; }

float *glow_grads(glow_model *m) { return m ? m->grads : NULL; }

int glow_zero_grad(glow_model *m) {
  if (!m)
    return glow__fail(GLOW_ERR_NULL, "glow_zero_grad: model is NULL");
  memset(m->grads, 0, sizeof(float) * (size_t)m->reg.n_params);
  return GLOW_OK;
}
