/*
 * workspace.c -- the scratch memory of one pass, sized from the layers'
 * own statements of what they need (glow__needs), and the training
 * workspaces a model keeps between calls.
 */
#include <stdlib.h>

#include "model.h"

int glow__model_gemm_own(const glow_model *m) {
  return m->opts.gemm == GLOW_GEMM_AUTO && glow__gemm_own_available();
}

/* malloc of count elements (at least one), counted in ws->bytes. */
static void *ws_buf(glow__ws *ws, int64_t count, size_t elem) {
  if (count < 1)
    count = 1;
  ws->bytes += count * (int64_t)elem;
  return glow__malloc((size_t)count * elem);
}

static glow__needs needs_of(const glow__layer *ly);

/* Each layer's cache (glow__needs.cache), zeroed: ws->cache[i] into one
 * buffer.  Not activation memory: not in ws->bytes. */
static int alloc_caches(const glow_model *m, glow__ws *ws) {
  int64_t total = 0;
  for (int32_t i = 0; i < m->n_layers; i++)
    total += needs_of(&m->layers[i]).cache;
  ws->cache = glow__calloc((size_t)(m->n_layers > 0 ? m->n_layers : 1),
                           sizeof *ws->cache);
  ws->cache_buf = glow__calloc((size_t)(total > 0 ? total : 1), sizeof(float));
  if (!ws->cache || !ws->cache_buf)
    return GLOW_ERR_NOMEM;
  for (int64_t i = 0, at = 0; i < m->n_layers; i++) {
    const int64_t floats = needs_of(&m->layers[i]).cache;
    ws->cache[i] = floats > 0 ? ws->cache_buf + at : NULL;
    at += floats;
  }
  return GLOW_OK;
}

int glow__ws_alloc(const glow_model *m, int32_t n, glow__ws *ws) {
  const glow__needs *nd = &m->needs;
  memset(ws, 0, sizeof *ws);
  ws->n = n;
  ws->n_total = n;
  ws->cap = n;
  /* Every size in int64: n * per-image sizes overflow int32 long before
   * the batch check's n * D <= INT32_MAX stops them. */
  const int64_t nd_floats = (int64_t)n * m->dim;
  /* Chunk images so the patch matrix stays near 16 MiB but never below
   * one image: large enough for efficient GEMMs, small enough to cache. */
  const int64_t per = nd->patches > 0 ? nd->patches : 1;
  int64_t chunk = ((INT64_C(4) << 20) + per - 1) / per;
  if (chunk > n)
    chunk = n;
  if (chunk < 1)
    chunk = 1;
  glow__scratch *s = &ws->s;
  s->conv.cap = chunk * per;
  ws->tensor[0] = ws_buf(ws, nd_floats, sizeof(float));
  ws->tensor[1] = ws_buf(ws, nd_floats, sizeof(float));
  ws->ld = ws_buf(ws, n, sizeof(double));
  s->act = ws_buf(ws, n * nd->act, sizeof(float));
  s->conv.patches = ws_buf(ws, s->conv.cap, sizeof(float));
  const int own = glow__model_gemm_own(m);
  if (own)
    s->conv.pack = ws_buf(ws, GLOW__GEMM_PACK, sizeof(float));
  s->chan_f = ws_buf(ws, 3 * nd->chan, sizeof(float));
  s->pixel_f = ws_buf(ws, n * nd->pixels, sizeof(float));
  s->chan_d = ws_buf(ws, 2 * nd->chan, sizeof(double));
  s->mat64 = ws_buf(ws, 2 * nd->mat * nd->mat + nd->mat, sizeof(double));
  s->mat32 = ws_buf(ws, nd->mat * nd->mat, sizeof(float));
  if (!ws->tensor[0] || !ws->tensor[1] || !ws->ld || !s->act ||
      !s->conv.patches || (own && !s->conv.pack) || !s->chan_f || !s->pixel_f ||
      !s->chan_d || !s->mat64 || !s->mat32 || alloc_caches(m, ws) != GLOW_OK) {
    glow__ws_free(ws);
    return glow__fail(GLOW_ERR_NOMEM,
                      "out of memory for the workspace of a batch of %d", n);
  }
  return GLOW_OK;
}

/* A layer's needs, as it states them. */
static glow__needs needs_of(const glow__layer *ly) {
  glow__needs nd = {0};
  if (ly->ops->needs)
    ly->ops->needs(ly, &nd);
  return nd;
}

/* A layer's activations per image. */
static int64_t act_per_image(const glow__layer *ly) { return needs_of(ly).act; }

/* Floats per image of the tail of its activations that recompute mode
 * keeps (glow__needs.tail). */
static int64_t tail_per_image(const glow__layer *ly) {
  return needs_of(ly).tail;
}

static int64_t in_floats(const glow__layer *ly, int32_t n) {
  return glow__rows(&ly->in, n) * ly->in.c;
}

/* What the training forward keeps.  Store mode: every layer's input (the
 * first layer's is the caller's) and activations, the memory that grows
 * with levels * depth.  Recompute mode: each segment's input, its
 * checkpoint, from which the backward rebuilds the segment, and the tails
 * of the layers' activations that the rebuild copies instead of computing
 * (glow__needs.tail; no larger than a step's input). */
static int alloc_kept(const glow_model *m, int32_t n, glow__ws *ws) {
  const int32_t nl = m->n_layers;
  /* Which layers' inputs are kept (the first layer's is the caller's x):
   * one walk over the sorted segment starts. */
  int64_t total = 0;
  for (int32_t i = 1, s = 1; i < nl; i++) { /* s: the next segment start */
    const int start = s < m->n_segs && m->seg_first[s] == i;
    s += start;
    if (ws->store || start)
      total += in_floats(&m->layers[i], n);
  }
  for (int32_t i = 0; i < nl; i++)
    total += n * (ws->store ? act_per_image(&m->layers[i])
                            : tail_per_image(&m->layers[i]));
  ws->keep_buf = ws_buf(ws, total, sizeof(float));
  if (!ws->keep_buf)
    return GLOW_ERR_NOMEM;
  float *next = ws->keep_buf;
  for (int32_t i = 1, s = 1; i < nl; i++) {
    const int start = s < m->n_segs && m->seg_first[s] == i;
    s += start;
    if (ws->store || start) {
      ws->kept.in[i] = next;
      next += in_floats(&m->layers[i], n);
    }
  }
  for (int32_t i = 0; ws->store && i < nl; i++)
    if (act_per_image(&m->layers[i]) > 0) {
      ws->kept.act[i] = next;
      next += n * act_per_image(&m->layers[i]);
    }
  for (int32_t i = 0; !ws->store && i < nl; i++)
    if (tail_per_image(&m->layers[i]) > 0) {
      ws->kept.tail[i] = next;
      next += n * tail_per_image(&m->layers[i]);
    }
  ws->kept.left = ws->store ? ws->handoffs : NULL;
  return GLOW_OK;
}

/* Recompute mode: room to rebuild the largest segment: its layers'
 * inputs but the first (the checkpoint), and their activations, which go
 * to the activation scratch (made larger if a segment needs more than its
 * one layer's worth). */
static int alloc_replay(const glow_model *m, int32_t n, glow__ws *ws) {
  int64_t most_in = 0, most_act = 0;
  for (int32_t s = 0; s < m->n_segs; s++) {
    int64_t in = 0, act = 0;
    for (int32_t i = m->seg_first[s]; i < m->seg_first[s + 1]; i++) {
      if (i > m->seg_first[s])
        in += in_floats(&m->layers[i], n);
      act += n * act_per_image(&m->layers[i]);
    }
    most_in = in > most_in ? in : most_in;
    most_act = act > most_act ? act : most_act;
  }
  const int64_t have = n * m->needs.act;
  if (most_act > have) {
    glow__free(ws->s.act);
    ws->bytes -= (have > 0 ? have : 1) * (int64_t)sizeof(float);
    ws->s.act = ws_buf(ws, most_act, sizeof(float));
  }
  ws->replay_buf = ws_buf(ws, most_in, sizeof(float));
  ws->replay.left = ws->handoffs;
  ws->replay.tail = ws->kept.tail; /* what the first run kept */
  return ws->replay_buf && ws->s.act ? GLOW_OK : GLOW_ERR_NOMEM;
}

void glow__ws_replay_route(const glow_model *m, glow__ws *ws, int32_t seg) {
  const int32_t first = m->seg_first[seg], last = m->seg_first[seg + 1];
  float *in = ws->replay_buf, *act = ws->s.act;
  for (int32_t i = first; i < last; i++) {
    const glow__layer *ly = &m->layers[i];
    ws->replay.in[i] = NULL;
    if (i > first) {
      ws->replay.in[i] = in;
      in += in_floats(ly, ws->n);
    }
    ws->replay.act[i] = act_per_image(ly) > 0 ? act : NULL;
    act += ws->n * act_per_image(ly);
  }
  if (last < m->n_layers)
    ws->replay.in[last] = NULL; /* the segment's output: a tensor buffer */
}

int glow__ws_alloc_train(const glow_model *m, int32_t n, int store,
                         glow__ws *ws) {
  int rc = glow__ws_alloc(m, n, ws);
  if (rc)
    return rc;
  const glow__needs *nd = &m->needs;
  const int64_t nd_floats = (int64_t)n * m->dim, nl = m->n_layers;
  glow__scratch *s = &ws->s;
  ws->store = store;
  ws->eps = ws_buf(ws, nd_floats, sizeof(float));
  ws->grad[0] = ws_buf(ws, nd_floats, sizeof(float));
  ws->grad[1] = ws_buf(ws, nd_floats, sizeof(float));
  s->grad_act = ws_buf(ws, n * nd->grad_act, sizeof(float));
  /* Both only for gradients: a forward pass reads 3x3 weights in place. */
  s->conv.weight = ws_buf(ws, nd->conv_weight, sizeof(float));
  s->wflip = ws_buf(ws, nd->conv_weight, sizeof(float));
  s->mat_grad = ws_buf(ws, nd->mat * nd->mat, sizeof(float));
  ws->head = ws_buf(ws, glow__classifier_scratch(&m->cls), sizeof(double));
  ws->handoffs = ws_buf(ws, nl, sizeof *ws->handoffs);
  ws->ptrs = ws_buf(ws, 5 * nl, sizeof *ws->ptrs);
  /* Parameter-sized, not activation memory: not in ws->bytes. */
  const int64_t np = m->reg.n_params;
  ws->param_grad = glow__malloc(sizeof(float) * (size_t)(np > 0 ? np : 1));
  int ok = ws->eps && ws->grad[0] && ws->grad[1] && s->grad_act &&
           s->conv.weight && s->wflip && s->mat_grad && ws->head &&
           ws->handoffs && ws->ptrs && ws->param_grad;
  if (ok) {
    for (int64_t i = 0; i < 5 * nl; i++)
      ws->ptrs[i] = NULL;
    ws->kept.in = ws->ptrs;
    ws->kept.act = ws->ptrs + nl;
    ws->replay.in = ws->ptrs + 2 * nl;
    ws->replay.act = ws->ptrs + 3 * nl;
    ws->kept.tail = ws->ptrs + 4 * nl;
    ok = alloc_kept(m, n, ws) == GLOW_OK &&
         (store || alloc_replay(m, n, ws) == GLOW_OK);
  }
  if (!ok) {
    glow__ws_free(ws);
    return glow__fail(
        GLOW_ERR_NOMEM,
        "out of memory for the training workspace of a batch "
        "of %d%s",
        n, store ? " in store mode (recompute mode needs less)" : "");
  }
  return GLOW_OK;
}

/* Room in ws for a team of `size` members' packing buffers: 1 if there is. */
static int team_room(glow__ws *ws, int32_t size) {
  if (size <= ws->team_cap)
    return 1;
  float *packs = glow__malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK *
                              (size_t)(size - 1));
  float **ptrs = glow__malloc(sizeof *ptrs * (size_t)size);
  if (!packs || !ptrs) {
    glow__free(packs);
    glow__free(ptrs);
    return 0;
  }
  glow__free(ws->team_packs);
  glow__free(ws->team_pack);
  ptrs[0] = NULL;
  for (int32_t p = 1; p < size; p++)
    ptrs[p] = packs + (int64_t)(p - 1) * GLOW__GEMM_PACK;
  ws->team_packs = packs;
  ws->team_pack = ptrs;
  ws->team_cap = size;
  return 1;
}

void glow__ws_team_start(const glow_model *m, glow__ws *ws, int32_t size) {
  ws->s.conv.team = NULL;
  if (size < 2)
    return;
  const int own = glow__model_gemm_own(m);
  if (own && !team_room(ws, size))
    return; /* no memory for the buffers: the shard works alone */
  ws->s.conv.team = glow__team_start(glow__model_crew(m), size);
  ws->s.conv.team_pack = own ? ws->team_pack : NULL;
}

void glow__ws_team_stop(glow__ws *ws) {
  glow__team_stop(ws->s.conv.team);
  ws->s.conv.team = NULL;
}

void glow__ws_free(glow__ws *ws) {
  glow__scratch *s = &ws->s;
  glow__team_stop(s->conv.team);
  glow__free(ws->team_packs);
  glow__free(ws->team_pack);
  glow__free(ws->tensor[0]);
  glow__free(ws->tensor[1]);
  glow__free(ws->io[0]);
  glow__free(ws->io[1]);
  glow__free(ws->ld);
  glow__free(s->act);
  glow__free(s->conv.patches);
  glow__free(s->conv.weight);
  glow__free(s->conv.pack);
  glow__free(s->chan_f);
  glow__free(s->pixel_f);
  glow__free(ws->cache);
  glow__free(ws->cache_buf);
  glow__free(s->chan_d);
  glow__free(s->mat64);
  glow__free(s->mat32);
  glow__free(ws->eps);
  glow__free(ws->grad[0]);
  glow__free(ws->grad[1]);
  glow__free(s->grad_act);
  glow__free(s->wflip);
  glow__free(s->mat_grad);
  glow__free(ws->head);
  glow__free(ws->param_grad);
  glow__free(ws->handoffs);
  glow__free(ws->ptrs);
  glow__free(ws->keep_buf);
  glow__free(ws->replay_buf);
  memset(ws, 0, sizeof *ws);
}

void glow__train_ws_release(glow_model *m) {
  for (int32_t s = 0; s < m->n_train_ws; s++)
    glow__ws_free(&m->train_ws[s]);
  glow__free(m->train_ws);
  m->train_ws = NULL;
  m->n_train_ws = 0;
}

/* The pool lives in the model, which inference calls see as const: its
 * lock makes taking and giving safe between them, and models are never
 * defined const (glow__model_new allocates them), so writing it through a
 * cast is defined. */
static glow__pool *pool_of(const glow_model *m) {
  return (glow__pool *)&m->pool;
}

int glow__ws_take(const glow_model *m, int32_t n, glow__ws **out) {
  glow__pool *pool = pool_of(m);
  glow__ws *ws = NULL;
  pthread_mutex_lock(&pool->lock);
  int32_t best = -1;
  for (int32_t i = 0; i < pool->count; i++)
    if (pool->idle[i]->cap >= n &&
        (best < 0 || pool->idle[i]->cap < pool->idle[best]->cap))
      best = i;
  if (best >= 0) {
    ws = pool->idle[best];
    pool->idle[best] = pool->idle[--pool->count];
  }
  pthread_mutex_unlock(&pool->lock);
  if (!ws) {
    const int64_t nd = (int64_t)n * m->dim;
    ws = glow__calloc(1, sizeof *ws);
    if (!ws)
      return glow__fail(GLOW_ERR_NOMEM,
                        "out of memory for the workspace of a batch of %d", n);
    int rc = glow__ws_alloc(m, n, ws);
    if (!rc) {
      ws->io[0] = ws_buf(ws, nd, sizeof(float));
      ws->io[1] = ws_buf(ws, nd, sizeof(float));
      if (!ws->io[0] || !ws->io[1]) {
        glow__ws_free(ws);
        rc = glow__fail(GLOW_ERR_NOMEM,
                        "out of memory for the workspace of a batch of %d", n);
      }
    }
    if (rc) {
      glow__free(ws);
      return rc;
    }
  }
  ws->n = n;
  ws->n_total = n;
  *out = ws;
  return GLOW_OK;
}

void glow__ws_give(const glow_model *m, glow__ws *ws) {
  if (!ws)
    return;
  glow__pool *pool = pool_of(m);
  int kept = 0;
  pthread_mutex_lock(&pool->lock);
  if (m->opts.keep_workspace && pool->count < GLOW__POOL_MAX) {
    pool->idle[pool->count++] = ws;
    kept = 1;
  }
  pthread_mutex_unlock(&pool->lock);
  if (!kept) {
    glow__ws_free(ws);
    glow__free(ws);
  }
}

void glow__pool_release(glow_model *m) {
  glow__pool *pool = &m->pool;
  pthread_mutex_lock(&pool->lock);
  for (int32_t i = 0; i < pool->count; i++) {
    glow__ws_free(pool->idle[i]);
    glow__free(pool->idle[i]);
  }
  pool->count = 0;
  pthread_mutex_unlock(&pool->lock);
}
