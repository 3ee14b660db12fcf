/*
 * sample.c -- glow_sample: Gaussian noise at a temperature, through the
 * inverse flow, with counter-based noise so that an image depends only on
 * the seed and its index in the batch.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* Stream of the sampling generator (distinct from weight initialisation);
 * redraw a uses stream + a. */
#define GLOW__SAMPLE_STREAM UINT64_C(0x5a4d504c45)
#define GLOW__SAMPLE_TRIES 16

/* Noise of image `image` at redraw `attempt`: a function of the seed, the
 * image's index and the attempt only, never of the batch. */
static void draw_noise(uint64_t seed, int32_t attempt, int64_t image,
                       int64_t dim, float *eps) {
  for (int64_t j = 0; j < dim; j++)
    eps[j] = (float)glow__normal(seed, GLOW__SAMPLE_STREAM + (uint64_t)attempt,
                                 (uint64_t)(image * dim + j));
}

/* Far in the tails, at high temperature, the inverse of a trained flow can
 * overflow float range for a few images.  Those are redrawn (up to
 * GLOW__SAMPLE_TRIES times) rather than failing the whole batch.  The n
 * images are those of the batch from index `first` on, which the noise and
 * the messages use; labels and x point at the first one's. */
static int sample_batch(const glow_model *m, glow__ws *ws, int32_t first,
                        int32_t n, float t, uint64_t seed,
                        const int32_t *labels, float *x, float *eps, float *xb,
                        int32_t *idx, int32_t *lab) {
  const int64_t d = m->dim;
  for (int32_t i = 0; i < n; i++)
    draw_noise(seed, 0, (int64_t)first + i, d, eps + i * d);
  int rc = glow__flow_inverse(m, ws, eps, t, labels, x);
  for (int32_t attempt = 1; !rc; attempt++) {
    int32_t nb = 0;
    for (int32_t i = 0; i < n; i++)
      if (!glow__all_finite(x + i * d, d))
        idx[nb++] = i;
    if (nb == 0)
      return GLOW_OK;
    if (attempt == GLOW__SAMPLE_TRIES)
      return glow__fail(GLOW_ERR_NUMERIC,
                        "glow_sample: image %d is not finite after %d draws "
                        "(parameters out of range, or temperature too high)",
                        first + idx[0], GLOW__SAMPLE_TRIES);
    for (int32_t b = 0; b < nb; b++) {
      draw_noise(seed, attempt, (int64_t)first + idx[b], d, eps + b * d);
      lab[b] = labels ? labels[idx[b]] : 0;
    }
    ws->n = nb; /* a smaller batch in the same workspace */
    rc = glow__flow_inverse(m, ws, eps, t, labels ? lab : NULL, xb);
    for (int32_t b = 0; !rc && b < nb; b++)
      memcpy(x + idx[b] * d, xb + b * d, sizeof(float) * (size_t)d);
  }
  return rc;
}

typedef struct {
  const glow_model *m;
  float temperature;
  uint64_t seed;
  const int32_t *labels;
  float *x;
  glow__shard *sh;
} sample_job;

static void sample_shard(void *arg, int32_t s) {
  sample_job *j = arg;
  const glow_model *m = j->m;
  const int32_t first = j->sh[s].first, n = j->sh[s].count;
  int32_t *idx = glow__malloc(sizeof(int32_t) * (size_t)n);
  int32_t *lab = glow__malloc(sizeof(int32_t) * (size_t)n);
  glow__ws *ws = j->sh[s].ws;
  int rc = GLOW_OK;
  if (!idx || !lab)
    rc = glow__fail(GLOW_ERR_NOMEM, "glow_sample: out of memory");
  /* The noise and the redrawn images in the workspace's own buffers. */
  if (!rc)
    rc = sample_batch(m, ws, first, n, j->temperature, j->seed,
                      j->labels ? j->labels + first : NULL,
                      j->x + (int64_t)first * m->dim, ws->io[0], ws->io[1], idx,
                      lab);
  glow__free(idx);
  glow__free(lab);
  glow__shard_done(&j->sh[s], rc);
}

int glow_sample(const glow_model *m, int32_t n, float temperature,
                uint64_t seed, const int32_t *labels, float *x) {
  static const char fn[] = "glow_sample";
  if (!m || !x)
    return glow__fail(GLOW_ERR_NULL, "%s: %s is NULL", fn,
                      !m ? "model" : "output");
  int rc = glow__check_batch_labels(m, labels, n, fn);
  if (rc)
    return rc;
  if (!isfinite(temperature) || temperature < 0.0f)
    return glow__fail(GLOW_ERR_ARG,
                      "%s: temperature %g must be finite and >= 0", fn,
                      (double)temperature);
  /* A non-finite parameter can give finite images that mean nothing (an
   * infinite actnorm log-scale maps every image to its bias). */
  const int32_t bad = glow__nonfinite_tensor(m, m->params);
  if (bad >= 0)
    return glow__fail(GLOW_ERR_NUMERIC,
                      "%s: parameter tensor '%s' holds a non-finite value", fn,
                      m->reg.tensors[bad].name);
  sample_job j = {m, temperature, seed, labels, x, NULL};
  return glow__run_shards(m, n, &j.sh, sample_shard, &j);
}
