/*
 * infer.c -- the public inference calls: argument checks, a workspace per
 * call, the flow, and the reductions (log-density, bits per dimension).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "glow_internal.h"

/* Checks shared by every call that takes a batch (also used by train.c). */
int glow__check_batch(const glow_model *m, int32_t n, const char *fn) {
  if (n < 1)
    return glow__fail(GLOW_ERR_BATCH, "%s: batch size n = %d must be >= 1",
                      fn, n);
  if ((int64_t)n * m->dim > INT32_MAX)
    return glow__fail(GLOW_ERR_BATCH,
                      "%s: batch of %d images of %lld values is too large", fn,
                      n, (long long)m->dim);
  return GLOW_OK;
}

int glow__check_labels(const glow_model *m, const int32_t *labels,
                        int32_t n, const char *fn) {
  const int32_t k = m->cfg.n_classes;
  if (k == 0 && labels)
    return glow__fail(GLOW_ERR_LABEL,
                      "%s: labels given to an unconditional model (pass NULL)",
                      fn);
  if (k > 0 && !labels)
    return glow__fail(GLOW_ERR_LABEL,
                      "%s: the model is conditional on %d classes and needs "
                      "labels",
                      fn, k);
  for (int32_t i = 0; k > 0 && i < n; i++)
    if (labels[i] < 0 || labels[i] >= k)
      return glow__fail(GLOW_ERR_LABEL,
                        "%s: labels[%d] = %d is outside [0, %d)", fn, i,
                        labels[i], k);
  return GLOW_OK;
}

double glow__log_prob(const float *eps, int64_t dim, double logdet) {
  double sq = 0.0;
  for (int64_t j = 0; j < dim; j++)
    sq += (double)eps[j] * eps[j];
  return -0.5 * sq - 0.5 * GLOW__LOG_2PI * (double)dim + logdet;
}

/* Model, input and output pointers, batch size and labels. */
static int check_call(const glow_model *m, const void *in, const void *out,
                      const int32_t *labels, int32_t n, const char *fn) {
  if (!m || !in || !out)
    return glow__fail(GLOW_ERR_NULL, "%s: %s is NULL", fn,
                      !m ? "model" : !in ? "input" : "output");
  int rc = glow__check_batch(m, n, fn);
  return rc ? rc : glow__check_labels(m, labels, n, fn);
}

/* ---- Sharded passes ---------------------------------------------------------
 * Each shard allocates its own workspace and runs the flow on its images;
 * the caller checks the merged outputs, so messages name batch indices. */

typedef struct {
  const glow_model *m;
  const float *in;        /* x (forward) or eps (inverse) */
  const int32_t *labels;
  float *out;             /* eps (forward) or x (inverse) */
  double *ld;             /* forward: per-image log-determinants */
  float *ztop;            /* forward, optional: the top latent z */
  float scale;            /* inverse: temperature of eps */
  int inverse;            /* 1: the inverse pass, 0: the forward */
  glow__shard *sh;
} pass_job;

/* One shard of a forward (eps, logdets and optionally the top latent out)
 * or of an inverse pass. */
static void pass_shard(void *arg, int32_t s) {
  pass_job *j = arg;
  const glow_model *m = j->m;
  const glow__shard *sh = &j->sh[s];
  const int64_t d = m->dim, at = sh->first;
  const int32_t *labels = j->labels ? j->labels + at : NULL;
  glow__ws ws;
  int rc = glow__ws_alloc(m, sh->count, &ws);
  if (!rc && j->inverse)
    rc = glow__flow_inverse(m, &ws, j->in + at * d, j->scale, labels,
                            j->out + at * d);
  else if (!rc)
    rc = glow__flow_forward(m, m->params, &ws, j->in + at * d, labels,
                            j->out + at * d);
  if (!rc && !j->inverse) {
    memcpy(j->ld + at, ws.ld, sizeof(double) * (size_t)sh->count);
    if (j->ztop) { /* the forward leaves the top latent in ws.z */
      const glow__level *top = &m->levels[m->cfg.levels - 1];
      const int64_t zs = (int64_t)top->h * top->w * top->c;
      memcpy(j->ztop + at * zs, ws.z, sizeof(float) * (size_t)(sh->count * zs));
    }
  }
  glow__ws_free(&ws);
  glow__shard_done(&j->sh[s], rc);
}

/* Forward pass into eps, with per-image logdets in ld and, if ztop is not
 * NULL, the top latent z (n x h*w*c of the top level). */
static int run_forward(const glow_model *m, const float *x,
                       const int32_t *labels, int32_t n, float *eps,
                       double *ld, float *ztop, const char *fn) {
  pass_job j = {.m = m, .in = x, .labels = labels, .out = eps, .ld = ld,
                .ztop = ztop};
  int rc = glow__run_shards(m, n, &j.sh, pass_shard, &j);
  if (rc)
    return rc;
  if (!glow__all_finite(eps, n * m->dim))
    return glow__fail(GLOW_ERR_NUMERIC,
                      "%s: the latent is not finite (input or parameters "
                      "out of range)",
                      fn);
  for (int32_t i = 0; i < n; i++)
    if (!isfinite(ld[i]))
      return glow__fail(GLOW_ERR_NUMERIC,
                        "%s: the log-determinant of image %d is not finite",
                        fn, i);
  return GLOW_OK;
}

int glow_forward(glow_model *m, const float *x, const int32_t *labels,
                 int32_t n, float *eps, float *logdet) {
  int rc = check_call(m, x, eps, labels, n, "glow_forward");
  if (rc)
    return rc;
  double *ld = malloc(sizeof(double) * (size_t)n);
  if (!ld)
    return glow__fail(GLOW_ERR_NOMEM, "glow_forward: out of memory");
  rc = run_forward(m, x, labels, n, eps, ld, NULL, "glow_forward");
  if (!rc && logdet)
    for (int32_t i = 0; i < n; i++)
      logdet[i] = (float)ld[i];
  free(ld);
  return rc;
}

/* log p(x) per image in double: sum log N(eps; 0, 1) + logdet. */
static int log_prob64(glow_model *m, const float *x, const int32_t *labels,
                      int32_t n, double *out, const char *fn) {
  int rc;
  float *eps = malloc(sizeof(float) * (size_t)(n * m->dim));
  double *ld = malloc(sizeof(double) * (size_t)n);
  if (!eps || !ld)
    rc = glow__fail(GLOW_ERR_NOMEM, "%s: out of memory", fn);
  else
    rc = run_forward(m, x, labels, n, eps, ld, NULL, fn);
  for (int32_t i = 0; !rc && i < n; i++)
    out[i] = glow__log_prob(eps + (int64_t)i * m->dim, m->dim, ld[i]);
  free(eps);
  free(ld);
  return rc;
}

/* Run a per-image double reduction and convert to float outputs. */
static int reduce(glow_model *m, const float *x, const int32_t *labels,
                  int32_t n, float *out, int bits, const char *fn) {
  int rc = check_call(m, x, out, labels, n, fn);
  if (rc)
    return rc;
  double *lp = malloc(sizeof(double) * (size_t)n);
  if (!lp)
    return glow__fail(GLOW_ERR_NOMEM, "%s: out of memory", fn);
  rc = log_prob64(m, x, labels, n, lp, fn);
  for (int32_t i = 0; !rc && i < n; i++)
    out[i] = bits ? (float)glow__bits_per_dim(lp[i], m->dim, m->cfg.n_bits)
                  : (float)lp[i];
  free(lp);
  return rc;
}

int glow_log_prob(glow_model *m, const float *x, const int32_t *labels,
                  int32_t n, float *logp) {
  return reduce(m, x, labels, n, logp, 0, "glow_log_prob");
}

int glow_bits_per_dim(glow_model *m, const float *x, const int32_t *labels,
                      int32_t n, float *bpd) {
  return reduce(m, x, labels, n, bpd, 1, "glow_bits_per_dim");
}

int glow_logdet(glow_model *m, const float *x, const int32_t *labels,
                int32_t n, float *logdet) {
  int rc = check_call(m, x, logdet, labels, n, "glow_logdet");
  if (rc)
    return rc;
  float *eps = malloc(sizeof(float) * (size_t)(n * m->dim));
  if (!eps)
    return glow__fail(GLOW_ERR_NOMEM, "glow_logdet: out of memory");
  rc = glow_forward(m, x, labels, n, eps, logdet);
  free(eps);
  return rc;
}

/* Inverse of eps scaled by `scale`, with the output checked. */
static int run_inverse(glow_model *m, const float *eps, float scale,
                       const int32_t *labels, int32_t n, float *x,
                       const char *fn) {
  pass_job j = {.m = m, .in = eps, .labels = labels, .out = x,
                .scale = scale, .inverse = 1};
  int rc = glow__run_shards(m, n, &j.sh, pass_shard, &j);
  if (!rc && !glow__all_finite(x, n * m->dim))
    rc = glow__fail(GLOW_ERR_NUMERIC,
                    "%s: the output is not finite (latent or parameters out "
                    "of range)",
                    fn);
  return rc;
}

int glow_inverse(glow_model *m, const float *eps, const int32_t *labels,
                 int32_t n, float *x) {
  int rc = check_call(m, eps, x, labels, n, "glow_inverse");
  return rc ? rc : run_inverse(m, eps, 1.0f, labels, n, x, "glow_inverse");
}

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
                        const int32_t *labels, float *x, float *eps,
                        float *xb, int32_t *idx, int32_t *lab) {
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
  const size_t count = (size_t)(n * m->dim);
  float *eps = malloc(sizeof(float) * count);
  float *xb = malloc(sizeof(float) * count);
  int32_t *idx = malloc(sizeof(int32_t) * (size_t)n);
  int32_t *lab = malloc(sizeof(int32_t) * (size_t)n);
  glow__ws ws;
  memset(&ws, 0, sizeof ws);
  int rc = GLOW_OK;
  if (!eps || !xb || !idx || !lab)
    rc = glow__fail(GLOW_ERR_NOMEM, "glow_sample: out of memory");
  if (!rc)
    rc = glow__ws_alloc(m, n, &ws);
  if (!rc)
    rc = sample_batch(m, &ws, first, n, j->temperature, j->seed,
                      j->labels ? j->labels + first : NULL,
                      j->x + (int64_t)first * m->dim, eps, xb, idx, lab);
  glow__ws_free(&ws);
  free(eps);
  free(xb);
  free(idx);
  free(lab);
  glow__shard_done(&j->sh[s], rc);
}

int glow_sample(glow_model *m, int32_t n, float temperature, uint64_t seed,
                const int32_t *labels, float *x) {
  static const char fn[] = "glow_sample";
  if (!m || !x)
    return glow__fail(GLOW_ERR_NULL, "%s: %s is NULL", fn,
                      !m ? "model" : "output");
  int rc = glow__check_batch(m, n, fn);
  if (!rc)
    rc = glow__check_labels(m, labels, n, fn);
  if (rc)
    return rc;
  if (!isfinite(temperature) || temperature < 0.0f)
    return glow__fail(GLOW_ERR_ARG,
                      "%s: temperature %g must be finite and >= 0", fn,
                      (double)temperature);
  sample_job j = {m, temperature, seed, labels, x, NULL};
  return glow__run_shards(m, n, &j.sh, sample_shard, &j);
}

int glow_classify(glow_model *m, const float *x, int32_t n, float *logits,
                  float *probs) {
  static const char fn[] = "glow_classify";
  if (!m || !x || (!logits && !probs))
    return glow__fail(GLOW_ERR_NULL, "%s: %s is NULL", fn,
                      !m ? "model" : !x ? "x" : "both logits and probs");
  if (m->cfg.n_classes == 0)
    return glow__fail(GLOW_ERR_STATE,
                      "%s: the model is unconditional (n_classes = 0) and "
                      "has no classifier",
                      fn);
  int rc = glow__check_batch(m, n, fn);
  if (rc)
    return rc;
  const glow__level *top = &m->levels[m->cfg.levels - 1];
  const int32_t nc = m->cfg.n_classes;
  /* The top latent z does not depend on the label; only its
   * standardisation does, so any valid label will do for the pass. */
  const int64_t zsize = (int64_t)top->h * top->w * top->c;
  int32_t *labels = calloc((size_t)n, sizeof *labels);
  float *eps = malloc(sizeof(float) * (size_t)(n * m->dim));
  float *z = malloc(sizeof(float) * (size_t)(n * zsize));
  double *ld = malloc(sizeof(double) * (size_t)n);
  double *buf = malloc(sizeof(double) * (size_t)(top->c + nc));
  if (!labels || !eps || !z || !ld || !buf)
    rc = glow__fail(GLOW_ERR_NOMEM, "%s: out of memory", fn);
  if (!rc)
    rc = run_forward(m, x, labels, n, eps, ld, z, fn);
  for (int32_t i = 0; !rc && i < n; i++) {
    double *lg = buf + top->c, mx = -HUGE_VAL, se = 0.0;
    glow__classifier_logits(m, top, z + i * zsize, buf, lg);
    for (int32_t j = 0; j < nc; j++)
      mx = lg[j] > mx ? lg[j] : mx;
    for (int32_t j = 0; j < nc; j++)
      se += exp(lg[j] - mx);
    for (int32_t j = 0; j < nc; j++) {
      if (logits)
        logits[(int64_t)i * nc + j] = (float)lg[j];
      if (probs)
        probs[(int64_t)i * nc + j] = (float)(exp(lg[j] - mx) / se);
    }
  }
  free(labels);
  free(eps);
  free(z);
  free(ld);
  free(buf);
  return rc;
}
