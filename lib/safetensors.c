/*
 * safetensors.c -- model files in the safetensors format.
 */
#include "glow_internal.h"

int glow_model_save(const glow_model *m, const char *path) {
  if (!m || !path)
    return glow__fail(GLOW_ERR_NULL, "glow_model_save: %s is NULL",
                      !m ? "model" : "path");
  return glow__fail(GLOW_ERR_UNSUPPORTED,
                    "glow_model_save is not available in this release");
}

int glow_model_load(const char *path, glow_model **out) {
  if (out)
    *out = NULL;
  if (!path || !out)
    return glow__fail(GLOW_ERR_NULL, "glow_model_load: %s is NULL",
                      !path ? "path" : "out");
  return glow__fail(GLOW_ERR_UNSUPPORTED,
                    "glow_model_load is not available in this release");
}
