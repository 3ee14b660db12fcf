/*
 * model.h -- a model as the library holds it: its configuration, its list
 * of layers with their parameters, the workspaces that passes run in, the
 * passes themselves (forward, inverse, the training pass) and the threads
 * that run a batch in shards.
 */
#ifndef GLOW_MODEL_H
#define GLOW_MODEL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core.h"
#include "layer.h"

/* ---- Configuration (config.c) ------------------------------------------------ */

/* The defaults of every field (glow_config_init's). */
void glow__config_defaults(glow_config *cfg);
/* Copy a caller's config (read up to cfg->size) into *out, validating it. */
int glow__config_read(const glow_config *cfg, glow_config *out);
/* Validate a complete config. */
int glow__config_check(const glow_config *cfg);

/* ---- The model (build.c) ------------------------------------------------------- */

/* Options (glow_set_option), as glow.h gives their defaults. */
typedef struct {
  int32_t backward_mode;  /* GLOW_OPT_BACKWARD_MODE */
  int32_t keep_workspace; /* GLOW_OPT_KEEP_WORKSPACE */
  int32_t threads;        /* GLOW_OPT_THREADS, 0 = automatic */
  int32_t gemm;           /* GLOW_OPT_GEMM */
} glow__options;

typedef struct glow__ws glow__ws;

/* Inference workspaces kept between calls (GLOW_OPT_KEEP_WORKSPACE), for
 * concurrent callers: a shard takes one that holds its images, or makes
 * one, and gives it back at the end. */
#define GLOW__POOL_MAX 16
typedef struct {
  pthread_mutex_t lock;
  glow__ws *idle[GLOW__POOL_MAX]; /* not in use, each heap-allocated */
  int32_t count;
} glow__pool;

/* Batch-1 calls of models whose steps are too short for a team to pay
 * everywhere but long enough for it to pay on some machines, or at some
 * times (GLOW__TEAM_TRY_STEP_FLOPS to GLOW__TEAM_MIN_STEP_FLOPS), time
 * themselves: each round of GLOW__CHOICE_ROUND calls starts with
 * GLOW__CHOICE_PROBES calls run alone and with a team in turn, and
 * the rest run the way whose fastest probe was faster.  Only on the own
 * kernel, where both ways give the same bits.  Atomics: concurrent
 * callers share it, and a lost update only blurs one round's timing. */
#define GLOW__CHOICE_ROUND 64
#define GLOW__CHOICE_PROBES 8
typedef struct {
  _Atomic uint32_t calls;   /* calls counted, for the rounds */
  _Atomic uint64_t best[2]; /* this round's fastest probe, ns: alone, team */
  _Atomic int team;         /* 1: the calls after the probes use a team */
} glow__team_choice;

struct glow_model {
  glow_config cfg;
  int64_t dim;         /* D = H*W*C */
  glow__layer *layers; /* in forward order; the last is the top prior */
  int32_t n_layers;
  /* Segments: seg_first[s] .. seg_first[s+1] - 1, a flow step's layers or
   * one other layer. */
  int32_t *seg_first;
  int32_t n_segs;
  void *layer_state;     /* one block holding every layer's own state */
  glow__classifier cls;  /* conditional models: the class head */
  glow__needs needs;     /* the largest of the layers' scratch needs */
  glow__registry reg;    /* the tensor table and the fixed buffers */
  float *params, *grads; /* reg.n_params floats each */
  int initialized;       /* actnorms set from data */
  glow__options opts;
  glow__pool pool;             /* kept inference workspaces */
  glow__crew *crew;            /* kept threads (glow__model_crew) */
  glow__team_choice choice[2]; /* batch-1 teams: inference, training */
  glow__ws *train_ws;          /* kept training workspaces, one per shard */
  double flops_per_image;      /* of the products of a forward pass, about */
  int32_t n_train_ws;          /* how many train_ws holds (0: none) */
};

/* A model for a complete, validated config: layers, the tensor table and a
 * zeroed parameter buffer, fixed buffers zero, so the caller must set the
 * initial weights (glow__model_init) or fill them from a file.  Fails with
 * GLOW_ERR_FORMAT, before allocating the parameters, when the model would
 * hold more than max_params floats: a loader passes a bound from its
 * input's size, so that a forged config cannot make it allocate much more
 * than the file.  On failure *out is NULL. */
int glow__model_new(const glow_config *cfg, int64_t max_params,
                    glow_model **out);
/* Initial weights from cfg.seed: each layer's own, by layer. */
int glow__model_init(glow_model *m);
void glow__model_free(glow_model *m);
/* The first parameter tensor of m whose values in `params` (a buffer of
 * m's layout) are not all finite, or -1 if all are. */
int32_t glow__nonfinite_tensor(const glow_model *m, const float *params);
/* The prior layer whose latent block is level l's, or NULL. */
const glow__layer *glow__model_prior(const glow_model *m, int32_t level);
/* The top prior, the flow's last layer. */
static inline const glow__layer *glow__model_top(const glow_model *m) {
  return &m->layers[m->n_layers - 1];
}

/* ---- Workspaces (workspace.c) ------------------------------------------------- */

/* Where a forward run puts what it produces, by layer index (each array
 * n_layers long; a NULL array or entry: the default). */
typedef struct {
  float **in;          /* in[i]: where layer i's input goes (layer i-1
                          writes its output there), else one of the
                          workspace's two tensor buffers */
  float **act;         /* act[i]: where layer i leaves its activations,
                          else the scratch */
  glow__handoff *left; /* left[i]: layer i's hand-off, else none */
  float **tail;        /* tail[i]: where layer i keeps the tail of its
                          activations (glow__needs.tail), else nowhere */
} glow__route;

/* Scratch of one pass over n images, allocated once per call (or kept,
 * for training), so that no pass allocates inside its loops. */
struct glow__ws {
  int32_t n;        /* images of this call (of this shard, if sharded) */
  int32_t n_total;  /* images of the whole batch, which the training loss
                       averages over (n when the call is not sharded) */
  int32_t cap;      /* images the buffers hold (n <= cap): a kept
                       training workspace serves any smaller batch */
  float *tensor[2]; /* n*D each: a layer's input and its output, taking
                       turns */
  const float *top; /* after a forward: the top latent z */
  float *io[2];     /* inference only: n*D each for the calling side of a
                       pass (sampling's noise and redraws) */
  double *ld;       /* n: per-image log-determinant */
  glow__scratch s;  /* what layers borrow */
  /* cache[i]: layer i's glow__needs.cache floats (NULL where none), in
   * cache_buf; they live as long as the workspace. */
  float **cache;
  float *cache_buf;
  /* Training only (glow__ws_alloc_train); NULL otherwise. */
  float *eps; /* n*D: the latents of the training forward */
  /* n*D each: dL/d(a layer's output) and dL/d(its input), taking turns */
  float *grad[2];
  double *head;      /* the classifier head's scratch */
  float *param_grad; /* n_params: this call's parameter gradients */
  int store;         /* 1: store mode, 0: recompute mode */
  /* What the training forward keeps: in store mode every layer's input,
   * activations and hand-off; in recompute mode the input of every
   * segment's first layer (its checkpoint) and the layers' activation
   * tails (glow__needs.tail), which `replay` shares. */
  glow__route kept;
  /* Recompute mode: one segment's inputs, activations and hand-offs,
   * rebuilt from its checkpoint. */
  glow__route replay;
  glow__handoff *handoffs; /* n_layers hand-offs, for both routes */
  float **ptrs;            /* the routes' pointer arrays, 5 * n_layers */
  float *keep_buf;         /* what `kept` points into */
  /* The inputs `replay` points to (its activations are in s.act). */
  float *replay_buf;
  int64_t bytes; /* activation memory: all but param_grad */
  /* A team's packing buffers, kept with the workspace: team_cap - 1 of
   * GLOW__GEMM_PACK floats in team_packs, team_pack[p] member p's (p >= 1;
   * team_pack[0] unused). */
  float *team_packs;
  float **team_pack;
  int32_t team_cap;
};

/* 1 if passes on m use libglow's own GEMM kernel: GLOW_OPT_GEMM allows it
 * and the CPU has it. */
int glow__model_gemm_own(const glow_model *m);
int glow__ws_alloc(const glow_model *m, int32_t n, glow__ws *ws);
/* A workspace for glow__flow_backward: glow__ws_alloc's buffers plus the
 * gradients', and what the mode keeps: in store mode (store != 0) every
 * layer's hand-off, in recompute mode the segments' checkpoints and room
 * to rebuild one segment. */
int glow__ws_alloc_train(const glow_model *m, int32_t n, int store,
                         glow__ws *ws);
void glow__ws_free(glow__ws *ws);
/* An inference workspace for n images: from m's pool (the smallest idle
 * one that holds n) or new; *out NULL after recording NOMEM.  Safe to
 * call from concurrent inference calls on m. */
int glow__ws_take(const glow_model *m, int32_t n, glow__ws **out);
/* Give a taken workspace back: into the pool while the option keeps
 * workspaces and the pool has room, else freed.  NULL is a no-op. */
void glow__ws_give(const glow_model *m, glow__ws *ws);
/* Free the pool's idle workspaces. */
void glow__pool_release(glow_model *m);
/* Recompute mode: point ws->replay at room for segment seg's layers. */
void glow__ws_replay_route(const glow_model *m, glow__ws *ws, int32_t seg);
/* Start a team of `size` members for passes on ws (glow__team_start),
 * growing ws's packing buffers for it; ws->s.conv then splits products
 * between them.  Where memory or threads are short, a smaller team or
 * none: the pass still runs, on fewer threads. */
void glow__ws_team_start(const glow_model *m, glow__ws *ws, int32_t size);
/* Stop ws's team, if any. */
void glow__ws_team_stop(glow__ws *ws);
/* Free the model's kept training workspaces. */
void glow__train_ws_release(glow_model *m);

/* ---- Passes (flow.c, backward.c) ---------------------------------------------- */

/* How a forward pass runs. */
typedef struct {
  int check;   /* fail naming the first layer whose output is not finite */
  float *init; /* data-dependent init: the parameters, which the layers
                  that have such an init set from their input */
  const glow__route *route; /* where outputs go; NULL: nothing is kept */
  int rebuild; /* recompute mode's second run of a segment: the route's
                  tails hold what the first run computed */
} glow__mode;

/* What a pass on workspace ws gives its layers: the parameters, ws's n
 * images and scratch, labels, latents eps, log-determinants into ld;
 * scale 1, no data-dependent init, no gradient weights. */
glow__pass glow__pass_of(const glow_model *m, glow__ws *ws,
                         const int32_t *labels, float *eps, glow__logdet *ld);
/* x -> eps (n x D) and ws->ld, on a prepared workspace; ws->top is then
 * the top latent.  Reads m->params only (but through mode->init), so
 * inference may run concurrently. */
int glow__flow_forward(const glow_model *m, glow__ws *ws,
                       const glow__mode *mode, const float *x,
                       const int32_t *labels, float *eps);
/* Layers [first, last) of a forward pass p, from `in` (layer first's
 * input).  *out (if not NULL) gets the tensor the run ends with: the last
 * layer's output, or, if that is the top prior, its input. */
int glow__flow_run(const glow_model *m, glow__ws *ws, const glow__pass *p,
                   int32_t first, int32_t last, const float *in,
                   const glow__mode *mode, const float **out);
/* eps * scale -> x. */
int glow__flow_inverse(const glow_model *m, glow__ws *ws, const float *eps,
                       float scale, const int32_t *labels, float *x);
/* The training pass on a glow__ws_alloc_train workspace: the forward, the
 * loss (mean bits/dim + class_weight * mean cross-entropy / ln 2) into
 * *loss, and its gradient into ws->param_grad (added; the caller zeroes
 * it).  For a shard (ws->n < ws->n_total) both are its share of the whole
 * batch's, whose means are over n_total images: the shards' sum is the
 * batch's.
 * NUMERIC, naming the layer, where a value or gradient is not finite. */
int glow__flow_backward(const glow_model *m, glow__ws *ws, const float *x,
                        const int32_t *labels, double *loss);

/* ---- Densities (density.c) --------------------------------------------------------
 * The one definition of the reported densities and of the training loss. */

/* log p(x) in nats of one image from its latent eps (dim floats) and its
 * log-determinant: sum_j log N(eps_j; 0, 1) + logdet, in double. */
double glow__log_prob(const float *eps, int64_t dim, double logdet);

/* Bits per dimension of an image of log-density logp (nats) under the
 * discretised model of n_bits data: (-logp + D n_bits ln 2) / (D ln 2). */
static inline double glow__bits_per_dim(double logp, int64_t dim,
                                        int32_t n_bits) {
  const double d = (double)dim;
  return (-logp + d * n_bits * GLOW__LN_2) / (d * GLOW__LN_2);
}

/* ---- Threads (shards.c) ---------------------------------------------------------
 * A call's batch splits into at most GLOW__MAX_THREADS shards of whole
 * images, one per thread. */
#define GLOW__MAX_THREADS 256
typedef struct {
  int32_t first, count; /* images [first, first + count) of the batch */
  glow__ws *ws;         /* its workspace (inference: from the pool) */
  int rc;               /* the shard's status */
  char msg[512];        /* its glow_last_error() when rc != 0 */
} glow__shard;
/* Threads for a call on m: GLOW_OPT_THREADS, or the automatic choice. */
int32_t glow__threads(const glow_model *m);
/* Members of shard s's team when a batch on `threads` threads has `shards`
 * shards: 1 when every thread has a shard, else the threads left over
 * shared out, sizes differing by at most one; 1 also for models whose
 * flow steps have less than GLOW__TEAM_MIN_STEP_FLOPS of products per
 * image each, too short to share (glow__team_split_all overrides that).
 * The step, not the image, decides: a team splits each step's products,
 * and on the machine measured a team of two made a batch-1 call faster
 * from about 10 MFLOP a step (1.05 to 1.5 times), slower at 6 (fashion:
 * 0.89) and below, however many steps (docs/performance.md). */
#define GLOW__TEAM_MIN_STEP_FLOPS 8.0e6
#define GLOW__TEAM_TRY_STEP_FLOPS 2.0e6
int32_t glow__shard_team(const glow_model *m, int32_t threads, int32_t shards,
                         int32_t s);
/* The choice a call of `shards` shards on `threads` threads makes for
 * batch-1 teams (glow__team_choice): m's for inference or training, or
 * NULL where the fixed rule of glow__shard_team applies. */
glow__team_choice *glow__choice_for(const glow_model *m, int32_t threads,
                                    int32_t shards, int training);
/* Start c fresh: no probes, alone. */
void glow__choice_reset(glow__team_choice *c);
/* For the next call under c: 1 to run with a team; *probe is the way
 * probed (0 alone, 1 team) when the call is a probe, else -1. */
int glow__choice_take(glow__team_choice *c, int *probe);
/* A probe of way `way` took ns nanoseconds. */
void glow__choice_record(glow__team_choice *c, int way, uint64_t ns);
/* n images split into *count = min(threads, n) shards, in a new array
 * (free() it); NULL after recording NOMEM. */
glow__shard *glow__shards_new(int32_t n, int32_t threads, int32_t *count);
/* Record a shard's status and, on failure, the message of the thread that
 * ran it (messages are per thread). */
void glow__shard_done(glow__shard *sh, int rc);
/* The first failed shard's status and message, raised again in the calling
 * thread; GLOW_OK if none failed. */
int glow__shards_status(const glow__shard *sh, int32_t count);
/* fn(ctx, s) for every shard s in [0, shards), one thread per shard (from
 * crew, see glow__crew_run), the calling thread taking shard 0; returns
 * when all are done.  A thread that cannot be started leaves its shard to
 * the calling thread. */
void glow__parallel(glow__crew *crew, int32_t shards,
                    void (*fn)(void *ctx, int32_t shard), void *ctx);
/* The crew a call on m takes its threads from: the model's while it keeps
 * workspaces (GLOW_OPT_KEEP_WORKSPACE), else NULL (threads of the call's
 * own, ended before it returns). */
glow__crew *glow__model_crew(const glow_model *m);
/* fn(ctx, s) for every shard as glow__parallel, each shard's workspace
 * sh[s].ws with its team (glow__shard_team, or as glow__choice_for
 * chooses) started before and stopped after; the first failed shard's
 * status.  training: 1 for glow_backward's shards (timed apart from the
 * inference calls'). */
int glow__parallel_shards(const glow_model *m, const glow__shard *sh,
                          int32_t shards, int training,
                          void (*fn)(void *ctx, int32_t shard), void *ctx);
/* A batch of n images of an inference call on m's threads: the shards into
 * *sh (where fn finds them through ctx), each with a workspace from m's
 * pool (glow__ws_take), taken in shard order before any thread starts and
 * given back after all end, so that a call needs as many workspaces as it
 * has shards whatever the threads' timing; fn run on each; *sh freed; the
 * first failed shard's status. */
int glow__run_shards(const glow_model *m, int32_t n, glow__shard **sh,
                     void (*fn)(void *ctx, int32_t shard), void *ctx);

#endif /* GLOW_MODEL_H */
