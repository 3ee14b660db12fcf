/*
 * infer.c -- the inference calls: a workspace per shard of the batch, the
 * flow, and the reductions (log-density, bits per dimension, the class
 * head).  They read the model only, so they may run concurrently.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* ---- Sharded passes ---------------------------------------------------------
 * Each shard allocates its own workspace and runs the flow on its images;
 * the caller checks the merged outputs, so messages name batch indices. */

typedef struct {
  const glow_model *m;
  const float *in; /* x (forward) or eps (inverse) */
  const int32_t *labels;
  float *out;  /* eps (forward) or x (inverse) */
  double *ld;  /* forward: per-image log-determinants */
  float *ztop; /* forward, optional: the top latent z */
  float scale; /* inverse: temperature of eps */
  int inverse; /* 1: the inverse pass, 0: the forward */
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
  const glow__mode plain = {0};
  glow__ws *ws = sh->ws;
  int rc = GLOW_OK;
  if (j->inverse)
    rc = glow__flow_inverse(m, ws, j->in + at * d, j->scale, labels,
                            j->out + at * d);
  else if (!rc)
    rc = glow__flow_forward(m, ws, &plain, j->in + at * d, labels,
                            j->out + at * d);
  if (!rc && !j->inverse) {
    memcpy(j->ld + at, ws->ld, sizeof(double) * (size_t)sh->count);
    if (j->ztop) { /* the top latent, which the forward leaves in ws->top */
      const glow__layer *top = glow__model_top(m);
      const int64_t zs = glow__rows(&top->in, 1) * top->in.c;
      memcpy(j->ztop + at * zs, ws->top,
             sizeof(float) * (size_t)(sh->count * zs));
    }
  }
  glow__shard_done(&j->sh[s], rc);
}

/* Forward pass into eps, with per-image logdets in ld and, if ztop is not
 * NULL, the top latent z (n x h*w*c of the top level). */
static int run_forward(const glow_model *m, const float *x,
                       const int32_t *labels, int32_t n, float *eps, double *ld,
                       float *ztop, const char *fn) {
  pass_job j = {
      .m = m, .in = x, .labels = labels, .out = eps, .ld = ld, .ztop = ztop};
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
                        "%s: the log-determinant of image %d is not finite", fn,
                        i);
  return GLOW_OK;
}

int glow_forward(const glow_model *m, const float *x, const int32_t *labels,
                 int32_t n, float *eps, float *logdet) {
  int rc = glow__check_call(m, x, eps, labels, n, "glow_forward");
  if (rc)
    return rc;
  double *ld = glow__malloc(sizeof(double) * (size_t)n);
  if (!ld)
    return glow__fail(GLOW_ERR_NOMEM, "glow_forward: out of memory");
  rc = run_forward(m, x, labels, n, eps, ld, NULL, "glow_forward");
  if (!rc && logdet)
    for (int32_t i = 0; i < n; i++)
      logdet[i] = (float)ld[i];
  glow__free(ld);
  return rc;
}

/* log p(x) per image in double: sum log N(eps; 0, 1) + logdet. */
static int log_prob64(const glow_model *m, const float *x,
                      const int32_t *labels, int32_t n, double *out,
                      const char *fn) {
  int rc;
  float *eps = glow__malloc(sizeof(float) * (size_t)(n * m->dim));
  double *ld = glow__malloc(sizeof(double) * (size_t)n);
  if (!eps || !ld)
    rc = glow__fail(GLOW_ERR_NOMEM, "%s: out of memory", fn);
  else
    rc = run_forward(m, x, labels, n, eps, ld, NULL, fn);
  for (int32_t i = 0; !rc && i < n; i++)
    out[i] = glow__log_prob(eps + (int64_t)i * m->dim, m->dim, ld[i]);
  glow__free(eps);
  glow__free(ld);
  return rc;
}

/* Run a per-image double reduction and convert to float outputs. */
static int reduce(const glow_model *m, const float *x, const int32_t *labels,
                  int32_t n, float *out, int bits, const char *fn) {
  int rc = glow__check_call(m, x, out, labels, n, fn);
  if (rc)
    return rc;
  double *lp = glow__malloc(sizeof(double) * (size_t)n);
  if (!lp)
    return glow__fail(GLOW_ERR_NOMEM, "%s: out of memory", fn);
  rc = log_prob64(m, x, labels, n, lp, fn);
  for (int32_t i = 0; !rc && i < n; i++) {
    out[i] = bits ? (float)glow__bits_per_dim(lp[i], m->dim, m->cfg.n_bits)
                  : (float)lp[i];
    /* A finite latent far out in the tails can still have a density
     * beyond float range. */
    if (!isfinite(out[i]))
      rc = glow__fail(GLOW_ERR_NUMERIC,
                      "%s: the %s of image %d is not finite in float (input "
                      "far out of range)",
                      fn, bits ? "bits per dimension" : "log-density", i);
  }
  glow__free(lp);
  return rc;
}

int glow_log_prob(const glow_model *m, const float *x, const int32_t *labels,
                  int32_t n, float *logp) {
  return reduce(m, x, labels, n, logp, 0, "glow_log_prob");
}

int glow_bits_per_dim(const glow_model *m, const float *x,
                      const int32_t *labels, int32_t n, float *bpd) {
  return reduce(m, x, labels, n, bpd, 1, "glow_bits_per_dim");
}

int glow_logdet(const glow_model *m, const float *x, const int32_t *labels,
                int32_t n, float *logdet) {
  int rc = glow__check_call(m, x, logdet, labels, n, "glow_logdet");
  if (rc)
    return rc;
  float *eps = glow__malloc(sizeof(float) * (size_t)(n * m->dim));
  if (!eps)
    return glow__fail(GLOW_ERR_NOMEM, "glow_logdet: out of memory");
  rc = glow_forward(m, x, labels, n, eps, logdet);
  glow__free(eps);
  return rc;
}

/* Inverse of eps scaled by `scale`, with the output checked. */
static int run_inverse(const glow_model *m, const float *eps, float scale,
                       const int32_t *labels, int32_t n, float *x,
                       const char *fn) {
  pass_job j = {.m = m,
                .in = eps,
                .labels = labels,
                .out = x,
                .scale = scale,
                .inverse = 1};
  int rc = glow__run_shards(m, n, &j.sh, pass_shard, &j);
  if (!rc && !glow__all_finite(x, n * m->dim))
    rc = glow__fail(GLOW_ERR_NUMERIC,
                    "%s: the output is not finite (latent or parameters out "
                    "of range)",
                    fn);
  return rc;
}

int glow_inverse(const glow_model *m, const float *eps, const int32_t *labels,
                 int32_t n, float *x) {
  int rc = glow__check_call(m, eps, x, labels, n, "glow_inverse");
  return rc ? rc : run_inverse(m, eps, 1.0f, labels, n, x, "glow_inverse");
}

int glow_classify(const glow_model *m, const float *x, int32_t n, float *logits,
                  float *probs) {
  static const char fn[] = "glow_classify";
  if (!m || !x || (!logits && !probs))
    return glow__fail(GLOW_ERR_NULL, "%s: %s is NULL", fn,
                      !m   ? "model"
                      : !x ? "x"
                           : "both logits and probs");
  if (m->cfg.n_classes == 0)
    return glow__fail(GLOW_ERR_STATE,
                      "%s: the model is unconditional (n_classes = 0) and "
                      "has no classifier",
                      fn);
  int rc = glow__check_batch(m, n, fn);
  if (rc)
    return rc;
  const glow__layer *top = glow__model_top(m);
  const int32_t nc = m->cfg.n_classes, c = top->in.c;
  /* The top latent z does not depend on the label; only its
   * standardisation does, so any valid label will do for the pass. */
  const int64_t zsize = glow__rows(&top->in, 1) * c;
  int32_t *labels = glow__calloc((size_t)n, sizeof *labels);
  float *eps = glow__malloc(sizeof(float) * (size_t)(n * m->dim));
  float *z = glow__malloc(sizeof(float) * (size_t)(n * zsize));
  double *ld = glow__malloc(sizeof(double) * (size_t)n);
  double *buf = glow__malloc(sizeof(double) * (size_t)(c + nc));
  if (!labels || !eps || !z || !ld || !buf)
    rc = glow__fail(GLOW_ERR_NOMEM, "%s: out of memory", fn);
  if (!rc)
    rc = run_forward(m, x, labels, n, eps, ld, z, fn);
  for (int32_t i = 0; !rc && i < n; i++) {
    double *lg = buf + c, mx = -HUGE_VAL, se = 0.0;
    glow__classifier_logits(&m->cls, m->params, z + i * zsize, buf, lg);
    for (int32_t j = 0; j < nc && !rc; j++)
      if (!isfinite((float)lg[j])) /* a classifier parameter out of range */
        rc = glow__fail(GLOW_ERR_NUMERIC,
                        "%s: logit %d of image %d is not finite in float "
                        "(classifier parameters out of range)",
                        fn, j, i);
    if (rc)
      break;
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
  glow__free(labels);
  glow__free(eps);
  glow__free(z);
  glow__free(ld);
  glow__free(buf);
  return rc;
}
