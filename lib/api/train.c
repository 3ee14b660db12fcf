/*
 * train.c -- the training calls: data-dependent initialisation and the
 * backward pass (loss and gradients).
 *
 * Both training calls work on scratch and commit only on success: data
 * init restores the parameters if anything fails, and glow_backward adds
 * its gradients to glow_grads() only after every layer's have been checked.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* openai/glow's data-dependent initialisation: one forward pass in which
 * every actnorm (each step's, and the two inside each coupling network)
 * first sets its parameters from the statistics of its own input, then
 * applies them, so that later layers see already-normalised activations. */
int glow_data_init(glow_model *m, const float *x, const int32_t *labels,
                   int32_t n) {
  static const char fn[] = "glow_data_init";
  if (!m || !x)
    return glow__fail(GLOW_ERR_NULL, "%s: %s is NULL", fn, !m ? "model" : "x");
  int rc = glow__check_batch_labels(m, labels, n, fn);
  if (rc)
    return rc;
  const size_t pbytes = sizeof(float) * (size_t)m->reg.n_params;
  float *backup = glow__malloc(pbytes > 0 ? pbytes : 1);
  float *eps = glow__malloc(sizeof(float) * (size_t)(n * m->dim));
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
  /* The one pass that writes parameters. */
  const glow__mode mode = {.check = 1, .init = m->params};
  rc = glow__flow_forward(m, &ws, &mode, x, labels, eps);
  if (!rc && !glow__all_finite(m->params, m->reg.n_params))
    rc = glow__fail(GLOW_ERR_NUMERIC,
                    "%s: the initialised parameters are not finite", fn);
  if (rc) /* leave the model as it was */
    memcpy(m->params, backup, pbytes);
  else
    m->initialized = 1;
done:
  glow__ws_free(&ws);
  glow__free(backup);
  glow__free(eps);
  return rc;
}

/* The training workspaces of this call, one per shard: the kept ones if
 * they fit (as many, each with room for its shard, in this mode;
 * glow_set_option frees them when the mode changes), else new ones.
 * Reusing them saves the page faults of touching fresh memory, which in
 * store mode cost as much as the network evaluations the mode saves.
 * Every buffer is written before it is read, and the convolution chunks
 * depend only on the shard's size, so kept workspaces give the same bits. */
static int train_ws(glow_model *m, const glow__shard *sh, int32_t shards) {
  const int store = m->opts.backward_mode == GLOW_BACKWARD_STORE;
  int fits = m->n_train_ws == shards;
  for (int32_t s = 0; fits && s < shards; s++)
    fits = m->train_ws[s].cap >= sh[s].count && m->train_ws[s].store == store;
  if (fits)
    return GLOW_OK;
  glow__train_ws_release(m); /* the old ones, before allocating anew */
  m->train_ws = glow__calloc((size_t)shards, sizeof *m->train_ws);
  if (!m->train_ws)
    return glow__fail(GLOW_ERR_NOMEM, "glow_backward: out of memory");
  for (int32_t s = 0; s < shards; s++) {
    int rc = glow__ws_alloc_train(m, sh[s].count, store, &m->train_ws[s]);
    if (rc) {
      glow__train_ws_release(m);
      return rc;
    }
    m->n_train_ws = s + 1;
  }
  return GLOW_OK;
}

typedef struct {
  const glow_model *m;
  const float *x;
  const int32_t *labels;
  int32_t n;
  glow__shard *sh;
  double *loss; /* per shard */
} train_job;

/* One shard's forward and backward, its gradients into its own
 * ws->param_grad. */
static void train_shard(void *arg, int32_t s) {
  train_job *j = arg;
  const glow_model *m = j->m;
  glow__ws *ws = j->sh[s].ws;
  const int32_t first = j->sh[s].first;
  ws->n = j->sh[s].count;
  ws->n_total = j->n;
  memset(ws->param_grad, 0, sizeof(float) * (size_t)m->reg.n_params);
  int rc =
      glow__flow_backward(m, ws, j->x + (int64_t)first * m->dim,
                          j->labels ? j->labels + first : NULL, &j->loss[s]);
  glow__shard_done(&j->sh[s], rc);
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

/* The commit of glow_backward, on as many threads as it had shards, each
 * taking a slice of the parameters.  Phase 0: the shards' gradients summed
 * into the first shard's buffer in shard order, then grads added (so the
 * result depends on the number of shards, never on the slicing), each sum
 * tested; phase 1, once all are finite: the sums copied to grads. */
typedef struct {
  const glow_model *m;
  int32_t shards;
  int phase;
  int *bad; /* phase 0: per slice, 1 if a sum is not finite */
} commit_job;

static void commit_slice(void *arg, int32_t t) {
  commit_job *j = arg;
  const int64_t np = j->m->reg.n_params;
  const int64_t lo = np * t / j->shards, hi = np * (t + 1) / j->shards;
  float *G = j->m->train_ws[0].param_grad;
  if (j->phase == 1) {
    memcpy(j->m->grads + lo, G + lo, sizeof(float) * (size_t)(hi - lo));
    return;
  }
  for (int32_t s = 1; s < j->shards; s++) {
    const float *Gs = j->m->train_ws[s].param_grad;
    for (int64_t i = lo; i < hi; i++)
      G[i] += Gs[i];
  }
  j->bad[t] = !add_finite(j->m->grads + lo, G + lo, hi - lo);
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
                      !m   ? "model"
                      : !x ? "x"
                           : "loss");
  int rc = glow__check_batch_labels(m, labels, n, fn);
  if (rc)
    return rc;
  if (!m->initialized)
    return glow__fail(GLOW_ERR_STATE,
                      "%s: the model's actnorms are not initialised: call "
                      "glow_data_init on a batch of data first",
                      fn);
  int32_t shards;
  glow__shard *sh = glow__shards_new(n, glow__threads(m), &shards);
  if (!sh)
    return GLOW_ERR_NOMEM;
  double *losses = glow__malloc(sizeof(double) * (size_t)shards);
  rc = losses ? train_ws(m, sh, shards)
              : glow__fail(GLOW_ERR_NOMEM, "%s: out of memory", fn);
  double loss64 = 0.0;
  if (!rc) {
    for (int32_t s = 0; s < shards; s++)
      sh[s].ws = &m->train_ws[s];
    train_job j = {m, x, labels, n, sh, losses};
    rc = glow__parallel_shards(m, sh, shards, 1, train_shard, &j);
  }
  /* Commit only if every sum stays finite, so that a failed call leaves
   * the gradient buffer as it was: the sums go to the scratch buffer in
   * one pass that also tests them, and are copied over only if all are
   * finite. */
  int *bad = rc ? NULL : glow__calloc((size_t)shards, sizeof *bad);
  if (!rc && !bad)
    rc = glow__fail(GLOW_ERR_NOMEM, "%s: out of memory", fn);
  if (!rc) {
    commit_job c = {m, shards, 0, bad};
    glow__parallel(glow__model_crew(m), shards, commit_slice, &c);
    for (int32_t t = 0; t < shards && !rc; t++)
      if (bad[t])
        rc = sum_failure(m->grads, m->train_ws[0].param_grad, m->reg.n_params,
                         fn);
    c.phase = 1;
    if (!rc)
      glow__parallel(glow__model_crew(m), shards, commit_slice, &c);
  }
  for (int32_t s = 0; !rc && s < shards; s++)
    loss64 += losses[s];
  if (!rc)
    *loss = (float)loss64;
  glow__free(bad);
  if (!m->opts.keep_workspace)
    glow__train_ws_release(m);
  glow__free(sh);
  glow__free(losses);
  return rc;
}
