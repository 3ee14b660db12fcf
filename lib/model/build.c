/*
 * build.c -- a model from its configuration: the list of layers, the
 * tables of named tensors and fixed buffers they register, the parameter
 * buffers, and the initial weights.
 *
 * The flow, level by level: a squeeze, `depth` flow steps, then a split
 * (every level but the top) or the top prior.  The layers of one step are
 * listed once, below; everything else (tensor names, shapes, scratch,
 * model files) follows from what each layer registers.
 */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

/* The layers of one flow step, in forward order. */
static const glow__layer_ops *const step_layers[] = {
    &glow__actnorm_layer,
    &glow__permute_layer,
    &glow__coupling_layer,
};
#define STEP_LAYERS ((int32_t)(sizeof step_layers / sizeof step_layers[0]))

/* Each step draws its random initial values from 4 streams of its own,
 * from 1 + 4 * (its index over all levels); each layer knows which of the
 * four it uses. */
#define STREAMS_PER_STEP 4

static int32_t layer_count(const glow_config *cfg) {
  return cfg->levels * (2 + cfg->depth * STEP_LAYERS);
}

static void place(glow__layer *ly, const glow__layer_ops *ops, int32_t l,
                  int32_t k, const char *prefix) {
  ly->ops = ops;
  ly->level = l;
  ly->step = k;
  snprintf(ly->prefix, sizeof ly->prefix, "%s", prefix);
}

/* The layer list of a configuration: kinds and positions. */
static void plan(const glow_config *cfg, glow__layer *layers) {
  char pre[GLOW__NAME_MAX];
  int32_t i = 0;
  for (int32_t l = 0; l < cfg->levels; l++) {
    snprintf(pre, sizeof pre, "level.%d", l);
    place(&layers[i++], &glow__squeeze_layer, l, -1, pre);
    for (int32_t k = 0; k < cfg->depth; k++) {
      snprintf(pre, sizeof pre, "level.%d.step.%d", l, k);
      for (int32_t j = 0; j < STEP_LAYERS; j++)
        place(&layers[i++], step_layers[j], l, k, pre);
    }
    if (l < cfg->levels - 1) {
      snprintf(pre, sizeof pre, "level.%d", l);
      place(&layers[i++], &glow__split_layer, l, -1, pre);
    } else {
      place(&layers[i++], &glow__top_layer, l, -1, "top");
    }
  }
}

/* Segments of the layer list: each flow step's layers together, every
 * other layer alone.  Recompute-mode training keeps each segment's input
 * and rebuilds the segment from it. */
static int plan_segments(glow_model *m) {
  m->seg_first = glow__calloc((size_t)m->n_layers + 1, sizeof *m->seg_first);
  if (!m->seg_first)
    return GLOW_ERR_NOMEM;
  int32_t s = 0;
  for (int32_t i = 0; i < m->n_layers; i++) {
    const glow__layer *ly = &m->layers[i], *prev = &m->layers[i - (i > 0)];
    if (i == 0 || ly->step < 0 || prev->step != ly->step ||
        prev->level != ly->level)
      m->seg_first[s++] = i;
  }
  m->n_segs = s;
  m->seg_first[s] = m->n_layers;
  return GLOW_OK;
}

/* One registration pass over every layer (and the class head): shapes
 * flow from each layer's output to the next one's input, and latent
 * blocks are laid out in layer order. */
static void register_all(glow_model *m) {
  const glow_config *cfg = &m->cfg;
  glow__registry *r = &m->reg;
  glow__shape shape = {cfg->height, cfg->width, cfg->channels};
  int64_t eps_off = 0;
  r->n_tensors = 0;
  r->n_params = 0;
  r->n_fixed = 0;
  r->n_fixed_values = 0;
  for (int32_t i = 0; i < m->n_layers; i++) {
    glow__layer *ly = &m->layers[i];
    const int32_t first = r->n_tensors;
    ly->in = shape;
    ly->ops->build(ly, cfg, r);
    ly->tensors = glow__reg_since(r, first);
    /* Latent blocks in layer order. */
    const int64_t block = glow__latent_floats(ly);
    ly->eps_off = block > 0 ? eps_off : 0;
    eps_off += block;
    shape = ly->out;
  }
  if (cfg->n_classes > 0)
    glow__classifier_register(&m->cls, r, &glow__model_top(m)->in,
                              cfg->n_classes);
}

/* The states of all layers in one block, each aligned for any type. */
static int alloc_states(glow_model *m) {
  const size_t align = sizeof(long double) > 16 ? sizeof(long double) : 16;
  size_t total = 0;
  for (int32_t i = 0; i < m->n_layers; i++)
    total += (m->layers[i].ops->size + align - 1) / align * align;
  m->layer_state = glow__calloc(1, total > 0 ? total : 1);
  if (!m->layer_state)
    return GLOW_ERR_NOMEM;
  char *at = m->layer_state;
  for (int32_t i = 0; i < m->n_layers; i++) {
    glow__layer *ly = &m->layers[i];
    ly->self = ly->ops->size ? at : NULL;
    at += (ly->ops->size + align - 1) / align * align;
  }
  return GLOW_OK;
}

static int alloc_model(glow_model *m, int64_t max_params) {
  glow__registry *r = &m->reg;
  m->n_layers = layer_count(&m->cfg);
  m->layers = glow__calloc((size_t)m->n_layers, sizeof *m->layers);
  if (!m->layers)
    return GLOW_ERR_NOMEM;
  plan(&m->cfg, m->layers);
  if (plan_segments(m))
    return GLOW_ERR_NOMEM;
  register_all(m); /* sizing pass: no state, no tables */
  /* Checked before allocating: every buffer below is at most n_params. */
  if (r->n_params > max_params)
    return GLOW_ERR_FORMAT;
  const size_t nv = (size_t)(r->n_fixed_values > 0 ? r->n_fixed_values : 1);
  r->tensors = glow__calloc((size_t)(r->n_tensors > 0 ? r->n_tensors : 1),
                            sizeof *r->tensors);
  r->fixed =
      glow__calloc((size_t)(r->n_fixed > 0 ? r->n_fixed : 1), sizeof *r->fixed);
  r->int_pool = glow__calloc(nv, sizeof *r->int_pool);
  r->float_pool = glow__calloc(nv, sizeof *r->float_pool);
  m->params = glow__calloc((size_t)(r->n_params > 0 ? r->n_params : 1),
                           sizeof *m->params);
  m->grads = glow__calloc((size_t)(r->n_params > 0 ? r->n_params : 1),
                          sizeof *m->grads);
  if (!r->tensors || !r->fixed || !r->int_pool || !r->float_pool ||
      !m->params || !m->grads || alloc_states(m))
    return GLOW_ERR_NOMEM;
  register_all(m); /* naming pass: states and tables filled */
  for (int32_t i = 0; i < m->n_layers; i++) {
    const glow__layer *ly = &m->layers[i];
    glow__needs nd = {0};
    if (ly->ops->needs)
      ly->ops->needs(ly, &nd);
    glow__needs_max(&m->needs, &nd);
  }
  return GLOW_OK;
}

/* FLOPs of one image's products in a forward pass, about: every weight
 * of a layer is used once per pixel of its input (a 3x3 convolution's
 * taps, a 1x1 convolution's matrix), so 2 * parameters * pixels, summed
 * over the layers; the few other parameters (biases, actnorm's) add
 * little. */
static double product_flops(const glow_model *m) {
  double flops = 0.0;
  for (int32_t i = 0; i < m->n_layers; i++) {
    const glow__layer *ly = &m->layers[i];
    int64_t params = 0;
    for (int32_t t = 0; t < ly->tensors.count; t++)
      params += glow__tensor_count(&m->reg.tensors[ly->tensors.first + t]);
    flops += 2.0 * (double)params * ly->in.h * ly->in.w;
  }
  return flops;
}

int glow__model_new(const glow_config *cfg, int64_t max_params,
                    glow_model **out) {
  *out = NULL;
  glow_model *m = glow__calloc(1, sizeof *m);
  if (!m)
    return glow__fail(GLOW_ERR_NOMEM, "creating a model: out of memory");
  if (pthread_mutex_init(&m->pool.lock, NULL) != 0) {
    glow__free(m);
    return glow__fail(GLOW_ERR_NOMEM, "creating a model: out of resources "
                                      "for a lock");
  }
  m->crew = glow__crew_new();
  if (!m->crew) {
    pthread_mutex_destroy(&m->pool.lock);
    glow__free(m);
    return glow__fail(GLOW_ERR_NOMEM, "creating a model: out of memory");
  }
  glow__choice_reset(&m->choice[0]);
  glow__choice_reset(&m->choice[1]);
  glow__models_add(1); /* until glow__model_free */
  m->cfg = *cfg;
  m->dim = (int64_t)cfg->height * cfg->width * cfg->channels;
  m->opts.keep_workspace = 1; /* the other options' defaults are 0 */
  int rc = alloc_model(m, max_params);
  const int64_t need = m->reg.n_params;
  if (rc) {
    glow__model_free(m);
    if (rc == GLOW_ERR_FORMAT)
      return glow__fail(rc,
                        "the configuration needs %lld parameters, more than "
                        "the input allows (%lld)",
                        (long long)need, (long long)max_params);
    return glow__fail(rc, "creating a model: out of memory");
  }
  m->flops_per_image = product_flops(m);
  *out = m;
  return GLOW_OK;
}

/* Zeros where a layer has no init of its own: actnorms start as the
 * identity until glow_data_init, zero convs make each coupling start as
 * the identity and each prior as N(0, 1).  Random values depend only on
 * the seed and the step, never on the order of initialisation. */
int glow__model_init(glow_model *m) {
  for (int32_t i = 0; i < m->n_layers; i++) {
    const glow__layer *ly = &m->layers[i];
    if (!ly->ops->init)
      continue;
    const uint64_t step =
        (uint64_t)ly->level * (uint64_t)m->cfg.depth + (uint64_t)ly->step;
    int rc =
        ly->ops->init(ly, m->params, m->cfg.seed, 1 + STREAMS_PER_STEP * step);
    if (rc)
      return rc;
  }
  return GLOW_OK;
}

void glow__model_free(glow_model *m) {
  if (!m)
    return;
  glow__train_ws_release(m);
  glow__pool_release(m);
  glow__crew_free(m->crew); /* after the workspaces, whose teams it ran */
  pthread_mutex_destroy(&m->pool.lock);
  glow__free(m->layers);
  glow__free(m->seg_first);
  glow__free(m->layer_state);
  glow__free(m->reg.tensors);
  glow__free(m->reg.fixed);
  glow__free(m->reg.int_pool);
  glow__free(m->reg.float_pool);
  glow__free(m->params);
  glow__free(m->grads);
  glow__free(m);
  glow__models_add(-1);
}

int32_t glow__nonfinite_tensor(const glow_model *m, const float *params) {
  const glow__registry *r = &m->reg;
  if (glow__all_finite(params, r->n_params)) /* the common case, at once */
    return -1;
  for (int32_t i = 0; i < r->n_tensors; i++)
    if (!glow__all_finite(params + r->tensors[i].offset,
                          glow__tensor_count(&r->tensors[i])))
      return i;
  return -1;
}

const glow__layer *glow__model_prior(const glow_model *m, int32_t level) {
  for (int32_t i = 0; i < m->n_layers; i++) {
    const glow__layer *ly = &m->layers[i];
    if (ly->level == level && glow__latent_floats(ly) > 0)
      return ly;
  }
  return NULL;
}
