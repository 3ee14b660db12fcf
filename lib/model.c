/*
 * model.c -- building a model: its shapes, the named tensors of the flat
 * parameter buffer, and the initial weights.  Also the parameter accessors.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glow_internal.h"

/* Standard deviation of openai/glow's default weight initialiser. */
#define GLOW__INIT_STD 0.05

/* Append a tensor to the table; its offset is the running parameter count.
 * During the sizing pass (m->tensors == NULL) only the count grows. */
static int64_t reg(glow_model *m, int32_t ndim, const int32_t *shape,
                   const char *fmt, ...) {
  int64_t count = 1;
  for (int32_t i = 0; i < ndim; i++)
    count *= shape[i];
  int64_t off = m->n_params;
  if (m->tensors) {
    glow__tensor *t = &m->tensors[m->n_tensors];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->offset = off;
    t->ndim = ndim;
    memset(t->shape, 0, sizeof t->shape);
    memcpy(t->shape, shape, sizeof(int32_t) * (size_t)ndim);
  }
  m->n_tensors++;
  m->n_params += count;
  return off;
}

/* The tensors registered since the table held `first` of them. */
static glow__span since(const glow_model *m, int32_t first) {
  glow__span s = {first, m->n_tensors - first};
  return s;
}

#define SHAPE(...) ((const int32_t[]){__VA_ARGS__})
#define NDIM(...) ((int32_t)(sizeof((int32_t[]){__VA_ARGS__}) / sizeof(int32_t)))
#define TENSOR(m, shape_args, ...)                                                \
  reg(m, NDIM shape_args, SHAPE shape_args, __VA_ARGS__)

static void reg_actnorm(glow_model *m, glow__actnorm *an, int32_t c,
                        const char *prefix) {
  const int32_t first = m->n_tensors;
  an->c = c;
  an->bias = TENSOR(m, (c), "%s.bias", prefix);
  an->logs = TENSOR(m, (c), "%s.logs", prefix);
  an->tensors = since(m, first);
}

static void reg_zconv(glow_model *m, glow__zconv *zc, int32_t cin,
                      int32_t cout, const char *prefix) {
  const int32_t first = m->n_tensors;
  zc->cin = cin;
  zc->cout = cout;
  zc->weight = TENSOR(m, (3, 3, cin, cout), "%s.weight", prefix);
  zc->bias = TENSOR(m, (cout), "%s.bias", prefix);
  zc->logs = TENSOR(m, (cout), "%s.logs", prefix);
  zc->tensors = since(m, first);
}

static void reg_step(glow_model *m, glow__step *s, int32_t c, int32_t l,
                     int32_t k) {
  const glow_config *cfg = &m->cfg;
  char pre[GLOW__NAME_MAX], sub[GLOW__NAME_MAX + 32];
  snprintf(pre, sizeof pre, "level.%d.step.%d", l, k);

  snprintf(sub, sizeof sub, "%s.actnorm", pre);
  reg_actnorm(m, &s->an, c, sub);

  glow__permute *p = &s->perm;
  int32_t first = m->n_tensors;
  p->kind = cfg->permutation;
  p->c = c;
  if (p->kind == GLOW_PERMUTE_CONV1X1) {
    p->weight = TENSOR(m, (c, c), "%s.invconv.weight", pre);
  } else if (p->kind == GLOW_PERMUTE_CONV1X1_LU) {
    p->lower = TENSOR(m, (c, c), "%s.invconv.lower", pre);
    p->upper = TENSOR(m, (c, c), "%s.invconv.upper", pre);
    p->log_s = TENSOR(m, (c), "%s.invconv.log_s", pre);
  }
  p->tensors = since(m, first);

  glow__coupling *cp = &s->cpl;
  const int32_t hid = cfg->hidden;
  first = m->n_tensors;
  cp->kind = cfg->coupling;
  cp->c = c;
  cp->hidden = hid;
  cp->w1 = TENSOR(m, (3, 3, c / 2, hid), "%s.coupling.conv1.weight", pre);
  snprintf(sub, sizeof sub, "%s.coupling.actnorm1", pre);
  reg_actnorm(m, &cp->an1, hid, sub);
  cp->w2 = TENSOR(m, (hid, hid), "%s.coupling.conv2.weight", pre);
  snprintf(sub, sizeof sub, "%s.coupling.actnorm2", pre);
  reg_actnorm(m, &cp->an2, hid, sub);
  snprintf(sub, sizeof sub, "%s.coupling.conv3", pre);
  reg_zconv(m, &cp->out, hid,
            cfg->coupling == GLOW_COUPLING_AFFINE ? c : c / 2, sub);
  cp->tensors = since(m, first);
}

/* Lay out levels and register every tensor (sizing or naming pass). */
static void layout(glow_model *m) {
  const glow_config *cfg = &m->cfg;
  int32_t h = cfg->height, w = cfg->width, c = cfg->channels;
  int64_t eps_off = 0;
  m->n_params = 0;
  m->n_tensors = 0;
  m->max_hw = 0;
  m->max_c = 0;
  for (int32_t l = 0; l < cfg->levels; l++) {
    glow__level *lv = &m->levels[l];
    h /= 2;
    w /= 2;
    c *= 4;
    lv->h = h;
    lv->w = w;
    lv->c = c;
    lv->steps = m->step_pool + (int64_t)l * cfg->depth;
    lv->eps_off = eps_off;
    if ((int64_t)h * w > m->max_hw)
      m->max_hw = h * w;
    if (c > m->max_c)
      m->max_c = c;
    for (int32_t k = 0; k < cfg->depth; k++)
      reg_step(m, &lv->steps[k], c, l, k);
    if (l < cfg->levels - 1) {
      char pre[GLOW__NAME_MAX];
      snprintf(pre, sizeof pre, "level.%d.prior", l);
      reg_zconv(m, &lv->prior, c / 2, c, pre);
      lv->zc = c / 2;
      c /= 2;
    } else {
      lv->zc = c;
    }
    eps_off += (int64_t)h * w * lv->zc;
  }
  const glow__level *top = &m->levels[cfg->levels - 1];
  int32_t first = m->n_tensors;
  if (cfg->learn_top)
    m->top = TENSOR(m, (top->h, top->w, 2 * top->c), "top.prior");
  if (cfg->n_classes > 0)
    m->class_emb = TENSOR(m, (cfg->n_classes, 2 * top->c), "top.class_embed");
  m->top_tensors = since(m, first);
  first = m->n_tensors;
  if (cfg->n_classes > 0) {
    m->cls_w = TENSOR(m, (top->c, cfg->n_classes), "classifier.weight");
    m->cls_b = TENSOR(m, (cfg->n_classes), "classifier.bias");
  }
  m->cls_tensors = since(m, first);
}

static int alloc_model(glow_model *m, int64_t max_params) {
  const glow_config *cfg = &m->cfg;
  m->levels = calloc((size_t)cfg->levels, sizeof *m->levels);
  m->step_pool =
      calloc((size_t)cfg->levels * (size_t)cfg->depth, sizeof *m->step_pool);
  if (!m->levels || !m->step_pool)
    return GLOW_ERR_NOMEM;
  layout(m); /* sizing pass */
  /* Checked before allocating: every buffer below is at most n_params. */
  if (m->n_params > max_params)
    return GLOW_ERR_FORMAT;
  m->cap_tensors = m->n_tensors;
  m->tensors = calloc((size_t)m->cap_tensors, sizeof *m->tensors);
  m->params = calloc((size_t)m->n_params, sizeof *m->params);
  m->grads = calloc((size_t)m->n_params, sizeof *m->grads);
  /* Fixed permutations and LU signs: at most one channel row per step. */
  int64_t per_step_c = 0;
  for (int32_t l = 0; l < cfg->levels; l++)
    per_step_c += m->levels[l].c;
  int64_t fixed = per_step_c * cfg->depth;
  m->int_pool = calloc((size_t)fixed, sizeof *m->int_pool);
  m->sign_pool = calloc((size_t)fixed, sizeof *m->sign_pool);
  if (!m->tensors || !m->params || !m->grads || !m->int_pool ||
      !m->sign_pool)
    return GLOW_ERR_NOMEM;
  layout(m); /* naming pass */
  int64_t used = 0;
  for (int32_t l = 0; l < cfg->levels; l++)
    for (int32_t k = 0; k < cfg->depth; k++) {
      glow__permute *p = &m->levels[l].steps[k].perm;
      p->perm = m->int_pool + used;
      p->sign = m->sign_pool + used;
      used += p->c;
    }
  return GLOW_OK;
}

static void init_normal(glow_model *m, int64_t off, int64_t count,
                        uint64_t stream) {
  for (int64_t i = 0; i < count; i++)
    m->params[off + i] =
        (float)(GLOW__INIT_STD * glow__normal(m->cfg.seed, stream, (uint64_t)i));
}

/* Initial weights: N(0, 0.05) for the coupling networks' first two convs, a
 * random rotation for 1x1 weights, zeros elsewhere (actnorms start as the
 * identity until glow_data_init; zero convs make each coupling start as the
 * identity).  Streams are per tensor, so weights depend only on the seed. */
static int init_weights(glow_model *m) {
  const glow_config *cfg = &m->cfg;
  uint64_t stream = 1;
  for (int32_t l = 0; l < cfg->levels; l++)
    for (int32_t k = 0; k < cfg->depth; k++, stream += 4) {
      glow__step *s = &m->levels[l].steps[k];
      const glow__coupling *cp = &s->cpl;
      int rc = glow__permute_init(&s->perm, m->params, cfg->seed, stream);
      if (rc)
        return glow__fail(rc, "initialising the 1x1 weight of level %d step "
                              "%d failed", l, k);
      init_normal(m, cp->w1, (int64_t)9 * (cp->c / 2) * cp->hidden,
                  stream + 1);
      init_normal(m, cp->w2, (int64_t)cp->hidden * cp->hidden, stream + 2);
    }
  return GLOW_OK;
}

int glow__model_new(const glow_config *cfg, int64_t max_params,
                    glow_model **out) {
  *out = NULL;
  glow_model *m = calloc(1, sizeof *m);
  if (!m)
    return glow__fail(GLOW_ERR_NOMEM, "creating a model: out of memory");
  m->cfg = *cfg;
  m->dim = (int64_t)cfg->height * cfg->width * cfg->channels;
  int rc = alloc_model(m, max_params);
  int64_t need = m->n_params;
  if (rc) {
    glow_model_free(m);
    if (rc == GLOW_ERR_FORMAT)
      return glow__fail(rc,
                        "the configuration needs %lld parameters, more than "
                        "the input allows (%lld)",
                        (long long)need, (long long)max_params);
    return glow__fail(rc, "creating a model: out of memory");
  }
  *out = m;
  return GLOW_OK;
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
  rc = init_weights(m);
  if (rc) {
    glow_model_free(m);
    return rc;
  }
  *out = m;
  return GLOW_OK;
}

void glow_model_free(glow_model *m) {
  if (!m)
    return;
  glow__train_release(m);
  free(m->levels);
  free(m->step_pool);
  free(m->tensors);
  free(m->params);
  free(m->grads);
  free(m->int_pool);
  free(m->sign_pool);
  free(m);
}

int64_t glow_model_dim(const glow_model *m) { return m ? m->dim : -1; }

int glow_latent_layout(const glow_model *m, int32_t level, int32_t *h,
                       int32_t *w, int32_t *c, int64_t *offset) {
  if (!m)
    return glow__fail(GLOW_ERR_NULL, "glow_latent_layout: model is NULL");
  if (level < 0 || level >= m->cfg.levels)
    return glow__fail(GLOW_ERR_ARG,
                      "glow_latent_layout: level %d outside [0, %d)", level,
                      m->cfg.levels);
  const glow__level *lv = &m->levels[level];
  if (h)
    *h = lv->h;
  if (w)
    *w = lv->w;
  if (c)
    *c = lv->zc;
  if (offset)
    *offset = lv->eps_off;
  return GLOW_OK;
}

int64_t glow_param_count(const glow_model *m) {
  return m ? m->n_params : -1;
}

float *glow_params(glow_model *m) { return m ? m->params : NULL; }

float *glow_grads(glow_model *m) { return m ? m->grads : NULL; }

int glow_zero_grad(glow_model *m) {
  if (!m)
    return glow__fail(GLOW_ERR_NULL, "glow_zero_grad: model is NULL");
  memset(m->grads, 0, sizeof(float) * (size_t)m->n_params);
  return GLOW_OK;
}
