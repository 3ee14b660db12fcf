/*
 * fuzz_load.c -- libFuzzer target over the in-memory model loader.
 *
 * Properties checked on every input, beyond the sanitizers' own:
 *   - a failed load returns a negative status, leaves *out NULL and sets a
 *     message;
 *   - a successful load gives a model that saves, reloads, and saves again
 *     to the same bytes, with the same parameters (round trip and
 *     determinism);
 *   - a small loaded model runs forward and inverse without crashing (a
 *     numerical failure status is fine: parameter values are not checked).
 * A broken property aborts, which libFuzzer reports as a crash.
 *
 * Built as the libFuzzer target fuzz_load (clang, -DGLOW_FUZZ=ON) and into
 * the corpus replay driver fuzz_replay (any compiler; replay.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "glow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *save(const glow_model *m, size_t *len) {
  size_t need = 0;
  if (glow_model_save_buffer(m, NULL, 0, &need) != GLOW_OK || need < 8)
    abort();
  uint8_t *b = malloc(need);
  if (!b)
    abort();
  if (glow_model_save_buffer(m, b, need, len) != GLOW_OK || *len != need)
    abort();
  return b;
}

/* Forward then inverse of one zero image, if the model is small enough to
 * keep the fuzzer fast. */
static void run_small(glow_model *m) {
  const int64_t d = glow_model_dim(m);
  if (d > 1024 || glow_param_count(m) > (1 << 16))
    return;
  glow_config cfg;
  glow_config_init(&cfg);
  if (glow_model_config(m, &cfg) != GLOW_OK)
    abort();
  const int32_t label = 0;
  const int32_t *labels = cfg.n_classes > 0 ? &label : NULL;
  float *x = calloc((size_t)d, sizeof *x),
        *eps = calloc((size_t)d, sizeof *eps);
  if (!x || !eps)
    abort();
  float logdet;
  int rc = glow_forward(m, x, labels, 1, eps, &logdet);
  if (rc != GLOW_OK && rc != GLOW_ERR_NUMERIC)
    abort();
  rc = glow_inverse(m, eps, labels, 1, x);
  if (rc != GLOW_OK && rc != GLOW_ERR_NUMERIC)
    abort();
  free(x);
  free(eps);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  glow_model *m = (glow_model *)&size; /* must be overwritten */
  int rc = glow_model_load_buffer(data, size, &m);
  if (rc != GLOW_OK) {
    if (rc >= 0 || m != NULL || glow_last_error()[0] == '\0')
      abort();
    return 0;
  }
  if (!m)
    abort();
  size_t len1, len2;
  uint8_t *b1 = save(m, &len1);
  glow_model *m2 = NULL;
  if (glow_model_load_buffer(b1, len1, &m2) != GLOW_OK)
    abort();
  uint8_t *b2 = save(m2, &len2);
  const int64_t np = glow_param_count(m);
  if (len1 != len2 || memcmp(b1, b2, len1) != 0 || glow_param_count(m2) != np ||
      memcmp(glow_params(m), glow_params(m2), sizeof(float) * (size_t)np))
    abort();
  run_small(m);
  free(b1);
  free(b2);
  glow_model_free(m2);
  glow_model_free(m);
  return 0;
}
