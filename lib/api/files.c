/*
 * files.c -- saving and loading models (the work is in lib/format/).
 */
#include "api.h"
#include "format.h"

int glow_model_save_buffer(const glow_model *m, void *buf, size_t cap,
                           size_t *size) {
  if (!m || !size || (!buf && cap > 0))
    return glow__fail(GLOW_ERR_NULL, "glow_model_save_buffer: %s is NULL",
                      !m      ? "model"
                      : !size ? "size"
                              : "buf");
  return glow__save_buffer(m, buf, cap, size);
}

int glow_model_save(const glow_model *m, const char *path) {
  if (!m || !path)
    return glow__fail(GLOW_ERR_NULL, "glow_model_save: %s is NULL",
                      !m ? "model" : "path");
  return glow__save_file(m, path);
}

int glow_model_load_buffer(const void *data, size_t len, glow_model **out) {
  if (out)
    *out = NULL;
  if (!data || !out)
    return glow__fail(GLOW_ERR_NULL, "glow_model_load_buffer: %s is NULL",
                      !data ? "data" : "out");
  return glow__load_buffer(data, len, out);
}

int glow_model_load(const char *path, glow_model **out) {
  if (out)
    *out = NULL;
  if (!path || !out)
    return glow__fail(GLOW_ERR_NULL, "glow_model_load: %s is NULL",
                      !path ? "path" : "out");
  return glow__load_file(path, out);
}
