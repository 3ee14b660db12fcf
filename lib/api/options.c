/*
 * options.c -- the per-model options (GLOW_OPT_*).  One table of bounds,
 * read by the setter and by glow_option_bounds, so that the documented
 * range and the enforced one cannot drift apart.
 */
#include "api.h"

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
  case GLOW_OPT_THREADS:
    *lo = 0;
    *hi = GLOW__MAX_THREADS;
    return GLOW_OK;
  case GLOW_OPT_GEMM:
    *lo = GLOW_GEMM_AUTO;
    *hi = GLOW_GEMM_BLAS;
    return GLOW_OK;
  default: return glow__fail(GLOW_ERR_ARG, "unknown option %d", option);
  }
}

int glow_option_bounds(int32_t option, int64_t *lower, int64_t *upper) {
  if (!lower || !upper)
    return glow__fail(GLOW_ERR_NULL, "glow_option_bounds: %s is NULL",
                      !lower ? "lower" : "upper");
  int64_t lo = 0, hi = 0;
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
  int64_t lo = 0, hi = 0;
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
    if (m->opts.backward_mode !=
        value) /* the kept workspace is the old mode's */
      glow__train_ws_release(m);
    m->opts.backward_mode = (int32_t)value;
    break;
  case GLOW_OPT_KEEP_WORKSPACE:
    m->opts.keep_workspace = (int32_t)value;
    if (!value) {
      glow__train_ws_release(m);
      glow__pool_release(m);
      glow__crew_release(m->crew);
    }
    break;
  case GLOW_OPT_THREADS:
    if (m->opts.threads != value) { /* no more parked threads than needed */
      glow__crew_release(m->crew);
      glow__choice_reset(&m->choice[0]); /* timed on the old count */
      glow__choice_reset(&m->choice[1]);
    }
    m->opts.threads =
        (int32_t)value; /* kept workspaces adapt on the next call */
    break;
  case GLOW_OPT_GEMM:
    if (m->opts.gemm != value) { /* the kept workspaces' packing buffers */
      glow__train_ws_release(m);
      glow__pool_release(m);
    }
    m->opts.gemm = (int32_t)value;
    break;
  }
  return GLOW_OK;
}

int glow_get_option(const glow_model *m, int32_t option, int64_t *value) {
  if (!m || !value)
    return glow__fail(GLOW_ERR_NULL, "glow_get_option: %s is NULL",
                      !m ? "model" : "value");
  int64_t lo = 0, hi = 0;
  int rc = option_bounds(option, &lo, &hi);
  if (rc)
    return rc;
  switch (option) {
  case GLOW_OPT_BACKWARD_MODE: *value = m->opts.backward_mode; break;
  case GLOW_OPT_KEEP_WORKSPACE: *value = m->opts.keep_workspace; break;
  case GLOW_OPT_THREADS: *value = m->opts.threads; break;
  case GLOW_OPT_GEMM: *value = m->opts.gemm; break;
  }
  return GLOW_OK;
}
