/*
 * train.c -- the training calls: data-dependent initialisation, the
 * backward pass (loss and gradients) and the training options.
 *
 * Both training calls work on scratch and commit only on success: data
 * init restores the parameters if anything fails, and glow_backward adds
 * its gradients to glow_grads() only after every layer's have been checked.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "glow_internal.h"

/* The batch and label checks of the inference calls (infer.c). */
static int check_args(const glow_model *m, const int32_t *labels,
                      int32_t n, const char *fn) {
  int rc = glow__check_batch(m, n, fn);
  return rc ? rc : glow__check_labels(m, labels, n, fn);
}

/* openai/glow's data-dependent initialisation: one forward pass in which
 * every actnorm (each step's, and the two inside each coupling network)
 * first sets its parameters from the statistics of its own input, then
 * applies them, so that later layers see already-normalised activations. */
int glow_data_init(glow_model *m, const float *x, const int32_t *labels,
                   int32_t n) {
  static const char fn[] = "glow_data_init";
  if (!m || !x)
    return glow__fail(GLOW_ERR_NULL, "%s: %s is NULL", fn,
                      !m ? "model" : "x");
  int rc = check_args(m, labels, n, fn);
  if (rc)
    return rc;
  const size_t pbytes = sizeof(float) * (size_t)m->n_params;
  float *backup = malloc(pbytes > 0 ? pbytes : 1);
  float *eps = malloc(sizeof(float) * (size_t)(n * m->dim));
  glow__ws ws;
  memset(&ws, 0, sizeof ws);
  if (!backup || !eps) {
    rc = glow__fail(GLOW_ERR_NOMEM, "%s: out of memory", fn);
    goto done;
  }
  memcpy(backup, m->params, pbytes);
  rc = glow__ws_alloc(m, n, &ws);
  if (rc)
    goto done;
  ws.init_params = m->params; /* the one pass that writes parameters */
  ws.check = 1;
  rc = glow__flow_forward(m, m->params, &ws, x, labels, eps);
  if (!rc && !glow__all_finite(m->params, m->n_params))
    rc = glow__fail(GLOW_ERR_NUMERIC,
                    "%s: the initialised parameters are not finite", fn);
  if (rc) /* leave the model as it was */
    memcpy(m->params, backup, pbytes);
  else
    m->initialized = 1;
done:
  glow__ws_free(&ws);
  free(backup);
  free(eps);
  return rc;
}

void glow__train_release(glow_model *m) {
  if (m->train_ws) {
    glow__ws_free(m->train_ws);
    free(m->train_ws);
    m->train_ws = NULL;
  }
}

/* The training workspace for this call: the kept one if it fits (room
 * for n images; glow_set_option frees it when the mode changes), else a
 * new one.  Reusing it saves the page faults of touching fresh memory,
 * which in store mode cost as much as the network evaluations the mode
 * saves.  Every buffer is written before it is read, and the convolution
 * chunks depend only on n, so a larger workspace gives the same bits. */
static int train_ws(glow_model *m, int32_t n, glow__ws **out) {
  const int store = m->backward_mode == GLOW_BACKWARD_STORE;
  glow__ws *ws = m->train_ws;
  if (ws && ws->cap >= n && (ws->saved != NULL) == store) {
    ws->n = n;
    *out = ws;
    return GLOW_OK;
  }
  glow__train_release(m); /* the old one, before allocating anew */
  ws = malloc(sizeof *ws);
  if (!ws)
    return glow__fail(GLOW_ERR_NOMEM, "glow_backward: out of memory");
  int rc = glow__ws_alloc_train(m, n, store, ws);
  if (rc) {
    free(ws);
    return rc;
  }
  *out = ws;
  return GLOW_OK;
}

/* G[i] += grads[i] for every i; 1 if every sum is finite.  Tests the
 * exponent bits, as glow__all_finite does, so that the loop vectorises. */
static int add_finite(const float *grads, float *G, int64_t count) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < count; i++) {
    float v = G[i] + grads[i];
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    bad |= (b & 0x7f800000u) == 0x7f800000u;
    G[i] = v;
  }
  return !bad;
}

/* After add_finite failed (sum = grads + this batch's finite gradients):
 * the first parameter whose sum is not finite, and why.  A value that the
 * host left non-finite is not this batch's overflow: it gets its own
 * message. */
static int sum_failure(const float *grads, const float *sum, int64_t count,
                       const char *fn) {
  int64_t i = 0;
  while (i < count - 1 && isfinite(grads[i]) && isfinite(sum[i]))
    i++;
  if (!isfinite(grads[i]))
    return glow__fail(GLOW_ERR_NUMERIC,
                      "%s: glow_grads() already holds a non-finite value at "
                      "index %lld; call glow_zero_grad",
                      fn, (long long)i);
  return glow__fail(GLOW_ERR_NUMERIC,
                    "%s: adding this batch's gradients to glow_grads() "
                    "overflows (parameter %lld)",
                    fn, (long long)i);
}

int glow_backward(glow_model *m, const float *x, const int32_t *labels,
                  int32_t n, float *loss) {
  static const char fn[] = "glow_backward";
  if (!m || !x || !loss)
    return glow__fail(GLOW_ERR_NULL, "%s: %s is NULL", fn,
                      !m ? "model" : !x ? "x" : "loss");
  int rc = check_args(m, labels, n, fn);
  if (rc)
    return rc;
  if (!m->initialized)
    return glow__fail(GLOW_ERR_STATE,
                      "%s: the model's actnorms are not initialised: call "
                      "glow_data_init on a batch of data first",
                      fn);
  glow__ws *ws = NULL;
  rc = train_ws(m, n, &ws);
  if (rc)
    return rc;
  memset(ws->G, 0, sizeof(float) * (size_t)m->n_params);
  double loss64 = 0.0;
  rc = glow__flow_backward(m, ws, x, labels, &loss64);
  /* Commit only if every sum stays finite, so that a failed call leaves
   * the gradient buffer as it was: the sums go to the scratch buffer in
   * one pass that also tests them, and are copied over only if all are
   * finite. */
  if (!rc && !add_finite(m->grads, ws->G, m->n_params))
    rc = sum_failure(m->grads, ws->G, m->n_params, fn);
  if (!rc) {
    memcpy(m->grads, ws->G, sizeof(float) * (size_t)m->n_params);
    *loss = (float)loss64;
  }
  if (m->keep_workspace) {
    m->train_ws = ws;
  } else {
    glow__ws_free(ws);
    free(ws);
    m->train_ws = NULL;
  }
  return rc;
}

/* ---- Options ---------------------------------------------------------------
 * One table of bounds, read by the setter and by glow_option_bounds, so the
 * documented range and the enforced one cannot drift apart. */

static int option_bounds(int32_t option, int64_t *lo, int64_t *hi) {
  switch (option) {
  case GLOW_OPT_BACKWARD_MODE:
    *lo = GLOW_BACKWARD_RECOMPUTE;
    *hi = GLOW_BACKWARD_STORE;
    return GLOW_OK;
  case GLOW_OPT_KEEP_WORKSPACE:
    *lo = 0;
    *hi = 1;
    return GLOW_OK;
  default:
    return glow__fail(GLOW_ERR_ARG, "unknown option %d", option);
  }
}

int glow_option_bounds(int32_t option, int64_t *lower, int64_t *upper) {
  if (!lower || !upper)
    return glow__fail(GLOW_ERR_NULL, "glow_option_bounds: %s is NULL",
                      !lower ? "lower" : "upper");
  int64_t lo, hi;
  int rc = option_bounds(option, &lo, &hi);
  if (rc)
    return rc;
  *lower = lo;
  *upper = hi;
  return GLOW_OK;
}

int glow_set_option(glow_model *m, int32_t option, int64_t value) {
  if (!m)
    return glow__fail(GLOW_ERR_NULL, "glow_set_option: model is NULL");
  int64_t lo, hi;
  int rc = option_bounds(option, &lo, &hi);
  if (rc)
    return rc;
  if (value < lo || value > hi)
    return glow__fail(GLOW_ERR_ARG,
                      "glow_set_option: value %lld of option %d is outside "
                      "[%lld, %lld]",
                      (long long)value, option, (long long)lo, (long long)hi);
  switch (option) {
  case GLOW_OPT_BACKWARD_MODE:
    if (m->backward_mode != value) /* the kept workspace is the old mode's */
      glow__train_release(m);
    m->backward_mode = (int32_t)value;
    break;
  case GLOW_OPT_KEEP_WORKSPACE:
    m->keep_workspace = (int32_t)value;
    if (!value)
      glow__train_release(m);
    break;
  }
  return GLOW_OK;
}

int glow_get_option(const glow_model *m, int32_t option, int64_t *value) {
  if (!m || !value)
    return glow__fail(GLOW_ERR_NULL, "glow_get_option: %s is NULL",
                      !m ? "model" : "value");
  int64_t lo, hi;
  int rc = option_bounds(option, &lo, &hi);
  if (rc)
    return rc;
  switch (option) {
  case GLOW_OPT_BACKWARD_MODE:
    *value = m->backward_mode;
    break;
  case GLOW_OPT_KEEP_WORKSPACE:
    *value = m->keep_workspace;
    break;
  }
  return GLOW_OK;
}
