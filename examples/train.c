/*
 * train -- train a Glow model on Fashion-MNIST (or any IDX image set) with
 * libglow computing the loss and its gradients, and this host program doing
 * everything else: data loading, dequantisation, Adam with warm-up, Polyak
 * averaging, gradient clipping, recovery from divergence, evaluation,
 * checkpoints and sample pictures.
 *
 *   train [options]            (train --help lists them)
 *
 * Output folder: model.safetensors (the model, averaged weights when Polyak
 * averaging is on), optimizer.bin (Adam state, for --resume), samples.png
 * (one row per temperature; one column per class for conditional models),
 * log.csv (the training curve) and curve.png (the same, drawn).
 *
 * Built with MPI (dist.c), the same program trains data-parallel:
 *
 *   mpirun -np N train [options]
 *
 * --batch stays the global batch; every rank reads the data, follows the
 * one shuffled order and computes its contiguous N-th of each batch.  The
 * gradients are summed in rank order (dist_sum_ordered), and every rank
 * then makes the same decisions (skip, roll back, clip) from the same
 * reduced numbers and the same Adam step, so the ranks hold the same
 * parameters throughout; a checksum confirms it at the start, at every
 * snapshot and at the end.  Rank 0 alone prints and writes files.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <glow.h>

#include "curve.h"
#include "dist.h"
#include "idx.h"
#include "png_grid.h"

/* ---- messages ------------------------------------------------------------ */

/* Rank 0 speaks for all: what every rank knows, only it prints. */
static void say(const char *fmt, ...) {
  if (dist_rank())
    return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
}

/* A failure only this rank saw: say so, naming the rank, and end every
 * rank (the others may be waiting for this one in a collective). */
static _Noreturn void fail(const char *fmt, ...) {
  fprintf(stderr, "\ntrain");
  if (dist_size() > 1)
    fprintf(stderr, " (rank %d of %d)", dist_rank(), dist_size());
  fputs(": ", stderr);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  dist_abort(1);
}

/* ---- options -------------------------------------------------------------- */

typedef struct {
  glow_config cfg;
  const char *data, *out, *resume;
  int32_t batch, warmup, init_batch, eval_batch, store, threads;
  double lr, minutes, polyak, clip, eval_every;
  int32_t cosine;
  int64_t max_steps;
} options;

static void usage(void) {
  puts("usage: train [options]\n"
       "model (ignored with --resume, which reads them from the model file):\n"
       "  --levels L (2)  --depth K (8)  --hidden H (128)\n"
       "  --coupling affine|additive (affine)\n"
       "  --permutation conv|lu|reverse|shuffle (lu)\n"
       "  --n-bits B (8)  --classes N (10; 0 = unconditional)\n"
       "  --learn-top 0|1 (1)  --class-weight W (0.01)  --seed S (1)\n"
       "training:\n"
       "  --batch N (32)  --lr R (1e-3)  --warmup STEPS (200)\n"
       "  --decay none|cosine (none; cosine: to 0 over the time or step "
       "budget)\n"
       "  --minutes M (4.5, training time)  --steps N (no limit)\n"
       "  --polyak DECAY (0.999; 0 = off)  --clip NORM (50; 0 = off)\n"
       "  --eval-every MINUTES (0 = only at the end)\n"
       "  --backward store|recompute (store: faster, memory grows with K)\n"
       "  --threads T (0: one per CPU the process may use)\n"
       "under mpirun -np N: --batch is the global batch, a multiple of N\n"
       "files:\n"
       "  --data DIR (/usr/share/datasets/fashion-mnist)\n"
       "  --out DIR (out)  --resume DIR (continue from DIR/model.safetensors)");
}

static int parse_coupling(const char *s) {
  return !strcmp(s, "additive") ? GLOW_COUPLING_ADDITIVE
         : !strcmp(s, "affine") ? GLOW_COUPLING_AFFINE
                                : -1;
}

static int parse_permutation(const char *s) {
  static const char *const names[] = {"conv", "lu", "reverse", "shuffle"};
  for (int i = 0; i < 4; i++)
    if (!strcmp(s, names[i]))
      return i; /* the GLOW_PERMUTE_* values, in order */
  return -1;
}

static int parse_args(int argc, char **argv, options *o) {
  glow_config_init(&o->cfg);
  o->cfg.levels = 2;
  o->cfg.depth = 8;
  o->cfg.hidden = 128;
  o->cfg.permutation = GLOW_PERMUTE_CONV1X1_LU;
  o->cfg.n_classes = 10;
  o->cfg.seed = 1;
  o->data = "/usr/share/datasets/fashion-mnist";
  o->out = "out";
  o->resume = NULL;
  o->batch = 32;
  o->warmup = 200;
  o->init_batch = 512;
  o->eval_batch = 500;
  o->lr = 1e-3;
  o->minutes = 4.5;
  o->polyak = 0.999;
  o->clip = 50.0;
  o->eval_every = 0.0;
  o->max_steps = -1;
  o->store = 1;
  o->threads = 0;
  o->cosine = 0;
  for (int i = 1; i < argc; i++) {
    const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(k, "--help") || !strcmp(k, "-h"))
      return dist_rank() ? 1 : (usage(), 1);
    if (!v) {
      say("train: %s needs a value\n", k);
      return -1;
    }
    i++;
    glow_config *c = &o->cfg;
    if (!strcmp(k, "--levels"))
      c->levels = atoi(v);
    else if (!strcmp(k, "--depth"))
      c->depth = atoi(v);
    else if (!strcmp(k, "--hidden"))
      c->hidden = atoi(v);
    else if (!strcmp(k, "--coupling"))
      c->coupling = parse_coupling(v);
    else if (!strcmp(k, "--permutation"))
      c->permutation = parse_permutation(v);
    else if (!strcmp(k, "--n-bits"))
      c->n_bits = atoi(v);
    else if (!strcmp(k, "--classes"))
      c->n_classes = atoi(v);
    else if (!strcmp(k, "--learn-top"))
      c->learn_top = atoi(v);
    else if (!strcmp(k, "--class-weight"))
      c->class_weight = (float)atof(v);
    else if (!strcmp(k, "--seed"))
      c->seed = strtoull(v, NULL, 10);
    else if (!strcmp(k, "--batch"))
      o->batch = atoi(v);
    else if (!strcmp(k, "--lr"))
      o->lr = atof(v);
    else if (!strcmp(k, "--warmup"))
      o->warmup = atoi(v);
    else if (!strcmp(k, "--minutes"))
      o->minutes = atof(v);
    else if (!strcmp(k, "--steps"))
      o->max_steps = atoll(v);
    else if (!strcmp(k, "--polyak"))
      o->polyak = atof(v);
    else if (!strcmp(k, "--clip"))
      o->clip = atof(v);
    else if (!strcmp(k, "--eval-every"))
      o->eval_every = atof(v);
    else if (!strcmp(k, "--decay"))
      o->cosine = !strcmp(v, "cosine") ? 1 : !strcmp(v, "none") ? 0 : -1;
    else if (!strcmp(k, "--backward"))
      o->store = !strcmp(v, "store") ? 1 : !strcmp(v, "recompute") ? 0 : -1;
    else if (!strcmp(k, "--threads"))
      o->threads = atoi(v);
    else if (!strcmp(k, "--data"))
      o->data = v;
    else if (!strcmp(k, "--out"))
      o->out = v;
    else if (!strcmp(k, "--resume"))
      o->resume = v;
    else {
      say("train: unknown option %s (see --help)\n", k);
      return -1;
    }
  }
  if (o->batch < 1 || o->lr <= 0 || o->minutes <= 0 || o->polyak < 0 ||
      o->polyak >= 1 || o->clip < 0 || o->warmup < 0 || o->store < 0 ||
      o->cosine < 0 || o->threads < 0) {
    say("train: an option is out of range (see --help)\n");
    return -1;
  }
  /* Every rank takes an equal, contiguous share of each batch. */
  if (o->batch % dist_size()) {
    say("train: --batch %d does not split over %d ranks: give a multiple "
        "of %d\n",
        o->batch, dist_size(), dist_size());
    return -1;
  }
  return 0;
}

/* ---- helpers ---------------------------------------------------------------- */

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static _Noreturn void die(const char *what, int rc) {
  fail("%s failed: %s: %s", what, glow_status_string(rc), glow_last_error());
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    fail("out of memory");
  return p;
}

static void path_join(char *buf, size_t len, const char *dir,
                      const char *name) {
  snprintf(buf, len, "%s/%s", dir, name);
}

/* Small xorshift generator for shuffling (the host's own randomness). */
static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void shuffle(int32_t *idx, int32_t n, uint64_t *s) {
  for (int32_t i = n - 1; i > 0; i--) {
    int32_t j = (int32_t)(rng_next(s) % (uint64_t)(i + 1));
    int32_t t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
}

/* ---- data ------------------------------------------------------------------- */

typedef struct {
  idx_set set;
  int32_t *order, pos;
  uint64_t rng;
} dataset;

static void load_split(const options *o, const char *prefix, dataset *d) {
  char img[1024], lab[1024], err[256];
  snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", o->data, prefix);
  snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", o->data, prefix);
  if (idx_load(img, lab, &d->set, err, sizeof err))
    fail("%s\n(install Debian's dataset-fashion-mnist, or pass --data DIR)",
         err);
  d->order = xmalloc(sizeof(int32_t) * (size_t)d->set.n);
  for (int32_t i = 0; i < d->set.n; i++)
    d->order[i] = i;
  d->pos = d->set.n; /* shuffle on first use */
  d->rng = 0x9E3779B97F4A7C15ULL;
}

/* Next n images (and labels) of a reshuffled pass over the data. */
static void next_batch(dataset *d, int32_t n, uint8_t *px, int32_t *labels) {
  const size_t dim = (size_t)d->set.h * d->set.w;
  for (int32_t i = 0; i < n; i++) {
    if (d->pos == d->set.n) {
      shuffle(d->order, d->set.n, &d->rng);
      d->pos = 0;
    }
    int32_t k = d->order[d->pos++];
    memcpy(px + i * dim, d->set.pixels + (size_t)k * dim, dim);
    if (labels)
      labels[i] = d->set.labels[k];
  }
}

/* ---- optimizer ------------------------------------------------------------ */

/* Adam, with Polyak averaging of the weights, and a snapshot of everything
 * to go back to when training diverges. */
typedef struct {
  int64_t n, t;
  float *m, *v, *avg;
  double lr_scale; /* lowered after each divergence */
} adam;

typedef struct {
  float *params;
  adam opt;
  int64_t step;
  int valid;
} snapshot;

static void adam_init(adam *a, int64_t n, const float *params) {
  a->n = n;
  a->t = 0;
  a->lr_scale = 1.0;
  a->m = calloc((size_t)n, sizeof(float));
  a->v = calloc((size_t)n, sizeof(float));
  a->avg = xmalloc(sizeof(float) * (size_t)n);
  if (!a->m || !a->v)
    fail("out of memory");
  memcpy(a->avg, params, sizeof(float) * (size_t)n);
}

static void adam_free(adam *a) {
  free(a->m);
  free(a->v);
  free(a->avg);
}

static void adam_copy(adam *dst, const adam *src) {
  size_t b = sizeof(float) * (size_t)src->n;
  dst->n = src->n;
  dst->t = src->t;
  dst->lr_scale = src->lr_scale;
  memcpy(dst->m, src->m, b);
  memcpy(dst->v, src->v, b);
  memcpy(dst->avg, src->avg, b);
}

/* Scale g to global L2 norm <= clip; returns the norm before clipping. */
static double clip_grads(float *g, int64_t n, double clip) {
  double sq = 0.0;
  for (int64_t i = 0; i < n; i++)
    sq += (double)g[i] * g[i];
  double norm = sqrt(sq);
  if (clip > 0 && norm > clip) {
    float s = (float)(clip / norm);
    for (int64_t i = 0; i < n; i++)
      g[i] *= s;
  }
  return norm;
}

static void adam_step(adam *a, float *p, const float *g, double lr,
                      double polyak) {
  const float b1 = 0.9f, b2 = 0.999f, e = 1e-8f;
  a->t++;
  const double c1 = 1.0 - pow(b1, (double)a->t);
  const double c2 = 1.0 - pow(b2, (double)a->t);
  const float step = (float)(lr * sqrt(c2) / c1);
  for (int64_t i = 0; i < a->n; i++) {
    a->m[i] = b1 * a->m[i] + (1 - b1) * g[i];
    a->v[i] = b2 * a->v[i] + (1 - b2) * g[i] * g[i];
    p[i] -= step * a->m[i] / (sqrtf(a->v[i]) + e);
  }
  if (polyak > 0) {
    /* Debiased early on, so the average is useful from the first steps. */
    float d = (float)fmin(polyak, (1.0 + (double)a->t) / (10.0 + (double)a->t));
    for (int64_t i = 0; i < a->n; i++)
      a->avg[i] = d * a->avg[i] + (1 - d) * p[i];
  }
}

/* optimizer.bin: magic, n, t, lr_scale, then the raw (not averaged)
 * weights, m, v, avg.  The model file holds the averaged weights. */
static int adam_save(const adam *a, const float *params, const char *path) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f)
    return -1;
  int ok = fwrite("GLOWADAM", 8, 1, f) == 1 &&
           fwrite(&a->n, sizeof a->n, 1, f) == 1 &&
           fwrite(&a->t, sizeof a->t, 1, f) == 1 &&
           fwrite(&a->lr_scale, sizeof a->lr_scale, 1, f) == 1 &&
           fwrite(params, sizeof(float), (size_t)a->n, f) == (size_t)a->n &&
           fwrite(a->m, sizeof(float), (size_t)a->n, f) == (size_t)a->n &&
           fwrite(a->v, sizeof(float), (size_t)a->n, f) == (size_t)a->n &&
           fwrite(a->avg, sizeof(float), (size_t)a->n, f) == (size_t)a->n;
  ok = fclose(f) == 0 && ok;
  return ok && rename(tmp, path) == 0 ? 0 : -1;
}

static int adam_load(adam *a, float *params, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return -1;
  char magic[8];
  int64_t n = -1;
  int ok = fread(magic, 8, 1, f) == 1 && !memcmp(magic, "GLOWADAM", 8) &&
           fread(&n, sizeof n, 1, f) == 1 && n == a->n &&
           fread(&a->t, sizeof a->t, 1, f) == 1 &&
           fread(&a->lr_scale, sizeof a->lr_scale, 1, f) == 1 &&
           fread(params, sizeof(float), (size_t)n, f) == (size_t)n &&
           fread(a->m, sizeof(float), (size_t)n, f) == (size_t)n &&
           fread(a->v, sizeof(float), (size_t)n, f) == (size_t)n &&
           fread(a->avg, sizeof(float), (size_t)n, f) == (size_t)n;
  fclose(f);
  return ok ? 0 : -1;
}

/* ---- evaluation and pictures --------------------------------------------- */

/* Mean test bits/dim over the whole set, with fixed dequantisation noise.
 * Each chunk of `batch` images is shared out over the ranks as a training
 * batch is.  Every image's bits/dim goes to its own slot of one array that
 * the ranks then add up (one rank writes each slot: the sum is exact), and
 * every rank adds the slots in image order, as one process does. */
static double evaluate(glow_model *m, const dataset *test, int32_t batch,
                       int conditional) {
  const int64_t dim = glow_model_dim(m);
  const int32_t n = test->set.n, rank = dist_rank(), ranks = dist_size();
  float *x = xmalloc(sizeof(float) * (size_t)(batch * dim));
  float *bpd = calloc((size_t)n + 1, sizeof(float));
  int32_t *labels = xmalloc(sizeof(int32_t) * (size_t)batch);
  if (!bpd)
    fail("out of memory");
  for (int32_t i0 = 0; i0 < n; i0 += batch) {
    const int32_t nb = n - i0 < batch ? n - i0 : batch;
    const int32_t lo = (int32_t)((int64_t)nb * rank / ranks);
    const int32_t hi = (int32_t)((int64_t)nb * (rank + 1) / ranks);
    if (hi == lo)
      continue;
    /* The whole chunk: an image's noise depends on its place in it. */
    int rc = glow_preprocess(m, test->set.pixels + (size_t)i0 * dim, nb,
                             (uint64_t)i0, x);
    for (int32_t i = 0; i < nb; i++)
      labels[i] = test->set.labels[i0 + i];
    if (!rc)
      rc = glow_bits_per_dim(m, x + (int64_t)lo * dim,
                             conditional ? labels + lo : NULL, hi - lo,
                             bpd + i0 + lo);
    if (rc)
      die("evaluation", rc);
  }
  dist_sum_disjoint(bpd, n);
  double sum = 0.0;
  for (int32_t i = 0; i < n; i++)
    sum += bpd[i];
  free(x);
  free(bpd);
  free(labels);
  return sum / n;
}

/* Rows of temperatures; columns are classes for a conditional model. */
static void write_samples(glow_model *m, const char *path, int32_t n_classes,
                          int32_t h, int32_t w, int32_t c) {
  static const float temps[] = {0.0f, 0.5f, 0.7f, 0.8f, 0.9f, 1.0f};
  const int rows = 6, cols = n_classes > 0 ? n_classes : 10;
  const int64_t dim = glow_model_dim(m);
  float *x = xmalloc(sizeof(float) * (size_t)(cols * dim));
  uint8_t *px = xmalloc((size_t)(rows * cols * dim));
  int32_t *labels = xmalloc(sizeof(int32_t) * (size_t)cols);
  for (int k = 0; k < cols; k++)
    labels[k] = k;
  for (int r = 0; r < rows; r++) {
    int rc = glow_sample(m, cols, temps[r], 1000 + (uint64_t)r,
                         n_classes > 0 ? labels : NULL, x);
    if (!rc)
      rc = glow_postprocess(m, x, cols, px + (size_t)r * cols * dim);
    if (rc)
      die("sampling", rc);
  }
  if (png_write_grid(path, px, rows, cols, h, w, c, 2))
    fprintf(stderr, "train: could not write %s\n", path);
  free(x);
  free(px);
  free(labels);
}

/* ---- training ------------------------------------------------------------- */

/* What each rank tells every other after its share of a step. */
typedef struct {
  double clock;  /* seconds since the start; rank 0's is the run's clock */
  float loss;    /* mean over this rank's images */
  int32_t rc;    /* GLOW_OK, or GLOW_ERR_NUMERIC: the batch is unusable */
  char why[112]; /* what was not finite */
} report;

typedef struct {
  const options *o;
  glow_model *m;
  dataset train, test;
  adam opt;
  snapshot good;
  int64_t step, first_step, dim, n_params;
  int64_t last_spike; /* step of the last skipped batch */
  int32_t spikes;     /* skipped batches in a row, about */
  double ema, start, last_print, last_eval, grad_norm;
  /* The last evaluation during the run: its step (-1: none) and result,
   * which the final one reuses when no step came after it. */
  int64_t eval_step;
  double eval_bpd;
  /* Rank 0's clock, the same on every rank, so that the time budget, the
   * evaluations and a cosine schedule are decided alike everywhere. */
  double clock;
  int conditional, tty;
  int rank, ranks; /* this process, and how many train together */
  int32_t local;   /* images of each batch this rank computes */
  report *reports; /* one per rank */
  FILE *log;       /* rank 0 only */
  uint8_t *px;
  float *x;
  int32_t *labels;
} trainer;

/* 64-bit checksum of n bytes, eight at a time (not cryptographic: it
 * catches ranks that drifted apart, not an adversary). */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w = 0;
    memcpy(&w, b + i, n - i < 8 ? n - i : 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  return h;
}

/* End every rank, with rank 0's message, unless all passed the same value:
 * a mismatch means the ranks no longer train one model. */
static void check_same(uint64_t value, const char *what) {
  int other;
  if (dist_same(value, &other))
    return;
  say("\ntrain: rank %d's %s differ from rank 0's; stopping\n", other, what);
  dist_exit(1);
}

/* Parameters and the whole optimizer state. */
static void check_state(const trainer *t) {
  const size_t b = sizeof(float) * (size_t)t->n_params;
  const adam *a = &t->opt;
  uint64_t h = hash_bytes(1469598103934665603ULL, &a->t, sizeof a->t);
  h = hash_bytes(h, &a->lr_scale, sizeof a->lr_scale);
  h = hash_bytes(h, glow_params(t->m), b);
  h = hash_bytes(h, a->m, b);
  h = hash_bytes(h, a->v, b);
  h = hash_bytes(h, a->avg, b);
  char what[96];
  snprintf(what, sizeof what, "parameters or optimizer state at step %lld",
           (long long)t->step);
  check_same(h, what);
}

/* The data sets, read by every rank for itself. */
static void check_data(const trainer *t) {
  uint64_t h = 1469598103934665603ULL;
  const dataset *d[2] = {&t->train, &t->test};
  for (int k = 0; k < 2; k++) {
    const idx_set *s = &d[k]->set;
    const int32_t shape[3] = {s->n, s->h, s->w};
    h = hash_bytes(h, shape, sizeof shape);
    h = hash_bytes(h, s->pixels, (size_t)s->n * (size_t)s->h * (size_t)s->w);
    if (s->labels)
      h = hash_bytes(h, s->labels, (size_t)s->n);
  }
  check_same(h, "training or test data");
}

static void take_snapshot(trainer *t) {
  memcpy(t->good.params, glow_params(t->m),
         sizeof(float) * (size_t)t->n_params);
  adam_copy(&t->good.opt, &t->opt);
  t->good.step = t->step;
  t->good.valid = 1;
  /* A state worth going back to is one that every rank holds. */
  check_state(t);
}

/* Back to the last good state with half the learning rate. */
static void recover(trainer *t, const char *why) {
  if (!t->good.valid) {
    say("\ntrain: %s before any good state; giving up\n", why);
    dist_exit(1);
  }
  double scale = t->opt.lr_scale * 0.5;
  memcpy(glow_params(t->m), t->good.params,
         sizeof(float) * (size_t)t->n_params);
  adam_copy(&t->opt, &t->good.opt);
  t->opt.lr_scale = scale;
  t->good.opt.lr_scale = scale;
  say("%sstep %lld: %s; restored step %lld, learning rate now %.2e\n",
      t->tty ? "\r\033[K" : "", (long long)t->step, why,
      (long long)t->good.step, t->o->lr * scale);
  t->step = t->good.step;
}

/* Linear warm-up, then (by default) a cosine decay to zero over the
 * budget: whichever of the time and step budgets runs out first. */
static double learning_rate(const trainer *t) {
  const options *o = t->o;
  double warm =
      o->warmup > 0 ? fmin(1.0, (double)(t->opt.t + 1) / o->warmup) : 1.0;
  double decay = 1.0;
  if (o->cosine) {
    double done = t->clock / (o->minutes * 60.0);
    if (o->max_steps > 0)
      done = fmax(done, (double)(t->step - t->first_step) /
                            (double)(o->max_steps - t->first_step));
    decay = 0.5 * (1.0 + cos(3.14159265358979 * fmin(done, 1.0)));
  }
  return o->lr * t->opt.lr_scale * warm * decay;
}

/* A batch whose loss is not finite or far above the running average is
 * not used.  One such batch may just be unusual; several close together
 * mean the weights have gone bad: back to the last good state. */
static int reject_batch(trainer *t, const char *why) {
  t->spikes = t->step - t->last_spike < 20 ? t->spikes + 1 : 1;
  t->last_spike = t->step;
  if (t->spikes >= 3) {
    recover(t, why);
    t->spikes = 0;
  } else {
    say("%sstep %lld: %s; batch skipped\n", t->tty ? "\r\033[K" : "",
        (long long)t->step, why);
  }
  return -1;
}

/* This rank's share of the next batch: the mean loss of its images, and
 * their gradients in glow_grads().  Every rank draws and dequantises the
 * whole batch (cheap next to the flow): an image's noise depends on its
 * place in the batch. */
static report local_step(trainer *t) {
  const options *o = t->o;
  report r;
  memset(&r, 0, sizeof r);
  next_batch(&t->train, o->batch, t->px, t->labels);
  int rc = glow_preprocess(t->m, t->px, o->batch,
                           (uint64_t)t->step * 7919u + o->cfg.seed, t->x);
  if (rc)
    die("preprocess", rc);
  const int64_t first = (int64_t)t->rank * t->local;
  glow_zero_grad(t->m);
  rc = glow_backward(t->m, t->x + first * t->dim,
                     t->conditional ? t->labels + first : NULL, t->local,
                     &r.loss);
  if (rc && rc != GLOW_ERR_NUMERIC)
    die("backward", rc);
  r.rc = rc || !isfinite(r.loss) ? GLOW_ERR_NUMERIC : GLOW_OK;
  if (r.rc)
    snprintf(r.why, sizeof r.why, "%s",
             rc ? glow_last_error() : "non-finite loss");
  r.clock = now() - t->start;
  return r;
}

/* Every rank's report to every rank.  The batch's loss is the mean of the
 * ranks' (equal shares), added in rank order.  Returns 0, or -1 with the
 * first failing rank's reason in why. */
static int gather_reports(trainer *t, const report *mine, float *loss,
                          char *why, size_t len) {
  dist_allgather(mine, t->reports, sizeof *mine);
  t->clock = t->reports[0].clock;
  double sum = 0.0;
  for (int r = 0; r < t->ranks; r++) {
    const report *p = &t->reports[r];
    if (p->rc) {
      if (t->ranks > 1)
        snprintf(why, len, "rank %d: %s", r, p->why);
      else
        snprintf(why, len, "%s", p->why);
      return -1;
    }
    sum += p->loss;
  }
  *loss = (float)(sum / t->ranks);
  return 0;
}

/* The batch's gradient, on every rank.  A rank's is the mean over its
 * share, so 1/N of it is its part of the batch mean (exactly, when N is a
 * power of two: the library's own shard of the same images gets the same
 * bits), and the parts are added in rank order, as the library adds its
 * threads' shards. */
static void reduce_grads(trainer *t) {
  if (t->ranks == 1)
    return;
  float *g = glow_grads(t->m);
  const float k = (float)t->ranks;
  for (int64_t i = 0; i < t->n_params; i++)
    g[i] /= k;
  dist_sum_ordered(g, t->n_params);
}

/* One step; returns 0, or -1 when the batch was rejected.  Every decision
 * below is taken from numbers that are the same on every rank. */
static int train_step(trainer *t) {
  const options *o = t->o;
  float loss = 0.0f;
  char why[160];
  report mine = local_step(t);
  if (gather_reports(t, &mine, &loss, why, sizeof why))
    return reject_batch(t, why);
  if (t->ema > 0 && t->opt.t > o->warmup &&
      loss > t->ema + fmax(1.0, 0.25 * t->ema)) {
    snprintf(why, sizeof why, "loss %.2f, far above the average %.2f", loss,
             t->ema);
    return reject_batch(t, why);
  }
  reduce_grads(t);
  t->grad_norm = clip_grads(glow_grads(t->m), t->n_params, o->clip);
  if (!isfinite(t->grad_norm)) /* the ranks' finite parts overflowed */
    return reject_batch(t, "the summed gradient is not finite");
  adam_step(&t->opt, glow_params(t->m), glow_grads(t->m), learning_rate(t),
            o->polyak);
  t->ema = t->ema > 0 ? 0.98 * t->ema + 0.02 * loss : loss;
  t->step++;
  /* Snapshots are cheap next to a step (a few copies of the parameters). */
  if (t->step % 50 == 0 && t->step - t->last_spike > 20)
    take_snapshot(t);
  return 0;
}

/* The progress line (rank 0): images/s are the whole batch's, that is,
 * over all ranks. */
static void print_progress(trainer *t, double elapsed, double budget) {
  static double last_step_time = 0;
  static int64_t last_step = 0;
  double dt = elapsed - last_step_time;
  double ips = dt > 0 ? (double)(t->step - last_step) * t->o->batch / dt : 0;
  last_step_time = elapsed;
  last_step = t->step;
  double left = fmax(0.0, budget - elapsed);
  fprintf(stderr,
          "%sstep %6lld | %6.0f img/s | train %.3f bits/dim | lr "
          "%.2e | %d:%02d elapsed, ETA %d:%02d%s",
          t->tty ? "\r\033[K" : "", (long long)t->step, ips, t->ema,
          learning_rate(t), (int)elapsed / 60, (int)elapsed % 60,
          (int)left / 60, (int)left % 60, t->tty ? "" : "\n");
  fprintf(t->log, "%.1f,%lld,%.4f,,%.3e,%.3g\n", elapsed, (long long)t->step,
          t->ema, learning_rate(t), t->grad_norm);
  fflush(t->log);
}

/* Test bits/dim of the averaged weights (the ones that get saved). */
static double evaluate_averaged(trainer *t) {
  float *p = glow_params(t->m);
  size_t bytes = sizeof(float) * (size_t)t->n_params;
  float *keep = xmalloc(bytes);
  memcpy(keep, p, bytes);
  if (t->o->polyak > 0)
    memcpy(p, t->opt.avg, bytes);
  double bpd = evaluate(t->m, &t->test, t->o->eval_batch, t->conditional);
  memcpy(p, keep, bytes);
  free(keep);
  return bpd;
}

/* ---- setting up ---------------------------------------------------------- */

/* The bytes of the file at path. */
static uint8_t *read_file(const char *path, uint64_t *len) {
  FILE *f = fopen(path, "rb");
  long size = -1;
  if (f && fseek(f, 0, SEEK_END) == 0)
    size = ftell(f);
  if (size < 0 || fseek(f, 0, SEEK_SET) != 0)
    fail("cannot read %s: %s", path, strerror(errno));
  uint8_t *bytes = xmalloc((size_t)size);
  if (fread(bytes, 1, (size_t)size, f) != (size_t)size)
    fail("cannot read all of %s", path);
  fclose(f);
  *len = (uint64_t)size;
  return bytes;
}

/* A new model whose actnorms are initialised from the data (openai/glow's
 * data-dependent init) on a larger first batch.  Every rank draws that
 * batch, to stay at the same place in the data; rank 0 alone initialises
 * (and returns) the model, on the whole batch. */
static glow_model *new_model(trainer *t) {
  const options *o = t->o;
  const int32_t n = o->init_batch;
  uint8_t *px = xmalloc((size_t)n * (size_t)t->dim);
  int32_t *lab = xmalloc(sizeof(int32_t) * (size_t)n);
  next_batch(&t->train, n, px, lab);
  glow_model *m = NULL;
  if (t->rank == 0) {
    glow_config cfg = o->cfg;
    cfg.height = t->train.set.h;
    cfg.width = t->train.set.w;
    cfg.channels = 1;
    int rc = glow_model_create(&cfg, &m);
    if (rc)
      die("creating the model", rc);
    float *x = xmalloc(sizeof(float) * (size_t)n * (size_t)t->dim);
    rc = glow_preprocess(m, px, n, 12345, x);
    if (!rc)
      rc = glow_data_init(m, x, cfg.n_classes > 0 ? lab : NULL, n);
    if (rc)
      die("data-dependent initialisation", rc);
    free(x);
  }
  free(px);
  free(lab);
  return m;
}

/* rank 0's model file, as bytes. */
static uint8_t *model_bytes(glow_model *m, uint64_t *len) {
  size_t size = 0;
  int rc = glow_model_save_buffer(m, NULL, 0, &size);
  uint8_t *bytes = rc ? NULL : xmalloc(size);
  if (!rc)
    rc = glow_model_save_buffer(m, bytes, size, &size);
  if (rc)
    die("writing the model to send it", rc);
  *len = size;
  return bytes;
}

/* Every rank's model, the same bits: rank 0 reads it (to resume) or makes
 * it, and every rank loads rank 0's model file bytes. */
static void setup_model(trainer *t) {
  const options *o = t->o;
  uint8_t *bytes = NULL;
  uint64_t len = 0;
  if (!o->resume) {
    t->m = new_model(t);
    if (t->ranks == 1)
      return;
    if (t->rank == 0) {
      bytes = model_bytes(t->m, &len);
      glow_model_free(t->m);
      t->m = NULL;
    }
  } else if (t->rank == 0) {
    char path[1024];
    path_join(path, sizeof path, o->resume, "model.safetensors");
    bytes = read_file(path, &len);
  }
  dist_bcast(&len, sizeof len, 0);
  if (t->rank)
    bytes = xmalloc((size_t)len);
  dist_bcast(bytes, (size_t)len, 0);
  int rc = glow_model_load_buffer(bytes, (size_t)len, &t->m);
  free(bytes);
  if (rc)
    die(o->resume ? "loading the model to resume" : "loading rank 0's model",
        rc);
}

/* Rank 0 reads the optimizer state that the resumed run left, if any, and
 * every rank gets it. */
static void resume_adam(trainer *t) {
  char path[1024];
  path_join(path, sizeof path, t->o->resume, "optimizer.bin");
  adam *a = &t->opt;
  int32_t ok = t->rank == 0 && adam_load(a, glow_params(t->m), path) == 0;
  dist_bcast(&ok, sizeof ok, 0);
  if (!ok)
    return;
  const size_t b = sizeof(float) * (size_t)a->n;
  dist_bcast(&a->t, sizeof a->t, 0);
  dist_bcast(&a->lr_scale, sizeof a->lr_scale, 0);
  dist_bcast(glow_params(t->m), b, 0);
  dist_bcast(a->m, b, 0);
  dist_bcast(a->v, b, 0);
  dist_bcast(a->avg, b, 0);
  say("resumed Adam state at step %lld\n", (long long)a->t);
}

/* The run-time options of every rank's model. */
static void set_options(trainer *t) {
  const options *o = t->o;
  /* Store mode keeps every step's activations (fast; memory grows with K);
   * keeping the workspace between steps saves re-faulting it each time. */
  int rc =
      glow_set_option(t->m, GLOW_OPT_BACKWARD_MODE,
                      o->store ? GLOW_BACKWARD_STORE : GLOW_BACKWARD_RECOMPUTE);
  if (!rc)
    rc = glow_set_option(t->m, GLOW_OPT_KEEP_WORKSPACE, 1);
  if (!rc)
    rc = glow_set_option(t->m, GLOW_OPT_THREADS, o->threads);
  if (rc)
    die("setting options", rc);
}

/* Model, optimizer and buffers, the same on every rank (checked). */
static void setup(trainer *t) {
  const options *o = t->o;
  load_split(o, "train", &t->train);
  load_split(o, "t10k", &t->test);
  check_data(t);
  t->dim = (int64_t)t->train.set.h * t->train.set.w;
  setup_model(t);
  glow_config cfg;
  glow_config_init(&cfg);
  glow_model_config(t->m, &cfg);
  t->conditional = cfg.n_classes > 0;
  set_options(t);
  t->n_params = glow_param_count(t->m);
  adam_init(&t->opt, t->n_params, glow_params(t->m));
  adam_init(&t->good.opt, t->n_params, glow_params(t->m));
  t->good.params = xmalloc(sizeof(float) * (size_t)t->n_params);
  if (o->resume)
    resume_adam(t);
  t->step = t->first_step = t->opt.t;
  take_snapshot(t);
  t->px = xmalloc((size_t)o->batch * (size_t)t->dim);
  t->x = xmalloc(sizeof(float) * (size_t)o->batch * (size_t)t->dim);
  t->labels = xmalloc(sizeof(int32_t) * (size_t)o->batch);
  t->reports = xmalloc(sizeof(report) * (size_t)t->ranks);
  if (t->rank == 0) {
    char path[1024];
    path_join(path, sizeof path, o->out, "log.csv");
    t->log = fopen(path, o->resume ? "a" : "w");
    if (!t->log)
      fail("cannot write %s", path);
    if (!o->resume)
      fprintf(t->log, "seconds,step,train_bpd,test_bpd,lr,grad_norm\n");
  }
  say("libglow %s | %dx%d | L=%d K=%d hidden %d | %s coupling | %lld "
      "parameters | batch %d",
      glow_version_string(), cfg.height, cfg.width, cfg.levels, cfg.depth,
      cfg.hidden, cfg.coupling == GLOW_COUPLING_AFFINE ? "affine" : "additive",
      (long long)t->n_params, o->batch);
  if (t->ranks > 1)
    say(" over %d ranks", t->ranks);
  say(" | %.1f min\n", o->minutes);
}

/* ---- the run ------------------------------------------------------------- */

static void run(trainer *t) {
  const options *o = t->o;
  const double budget = o->minutes * 60.0;
  t->start = now();
  for (;;) {
    if (t->clock >= budget || (o->max_steps >= 0 && t->step >= o->max_steps))
      break;
    train_step(t);
    if (t->rank == 0 && now() - t->last_print > 1.0) {
      t->last_print = now();
      print_progress(t, now() - t->start, budget);
    }
    if (o->eval_every > 0 && t->clock - t->last_eval > o->eval_every * 60.0) {
      double bpd = evaluate_averaged(t);
      t->last_eval = t->clock;
      t->eval_step = t->step;
      t->eval_bpd = bpd;
      if (t->rank == 0)
        fprintf(t->log, "%.1f,%lld,%.4f,%.4f,%.3e\n", now() - t->start,
                (long long)t->step, t->ema, bpd, learning_rate(t));
      say("%sstep %lld: test %.4f bits/dim\n", t->tty ? "\r\033[K" : "",
          (long long)t->step, bpd);
    }
  }
}

/* Rank 0: the last log row (unless the run's last evaluation wrote it),
 * the files and the pictures. */
static void finish(trainer *t, double bpd, double train_time) {
  const options *o = t->o;
  if (t->eval_step != t->step)
    fprintf(t->log, "%.1f,%lld,%.4f,%.4f,%.3e\n", train_time,
            (long long)t->step, t->ema, bpd, learning_rate(t));
  fclose(t->log);
  fprintf(stderr,
          "%s%lld steps in %.1f min (%.0f img/s); test %.4f "
          "bits/dim on %d images\n",
          t->tty ? "\r\033[K" : "", (long long)t->step, train_time / 60.0,
          (double)(t->step - t->first_step) * o->batch / train_time, bpd,
          t->test.set.n);

  /* Save the averaged weights with the raw ones' optimizer state. */
  char path[1024], png[1024], log[1024], curve[1024];
  path_join(path, sizeof path, o->out, "optimizer.bin");
  if (adam_save(&t->opt, glow_params(t->m), path))
    fprintf(stderr, "train: could not write %s\n", path);
  if (o->polyak > 0)
    memcpy(glow_params(t->m), t->opt.avg, sizeof(float) * (size_t)t->n_params);
  path_join(path, sizeof path, o->out, "model.safetensors");
  int rc = glow_model_save(t->m, path);
  if (rc)
    die("saving the model", rc);
  glow_config cfg;
  glow_config_init(&cfg);
  glow_model_config(t->m, &cfg);
  path_join(png, sizeof png, o->out, "samples.png");
  write_samples(t->m, png, cfg.n_classes, cfg.height, cfg.width, 1);
  path_join(log, sizeof log, o->out, "log.csv");
  path_join(curve, sizeof curve, o->out, "curve.png");
  if (curve_write(log, curve))
    fprintf(stderr, "train: could not write %s\n", curve);
  printf("test bits/dim: %.4f\nmodel: %s\nsamples: %s\ncurve: %s\n", bpd, path,
         png, curve);
}

static void release(trainer *t) {
  adam_free(&t->opt);
  adam_free(&t->good.opt);
  free(t->good.params);
  free(t->px);
  free(t->x);
  free(t->labels);
  free(t->reports);
  free(t->train.order);
  free(t->test.order);
  idx_free(&t->train.set);
  idx_free(&t->test.set);
  glow_model_free(t->m);
}

int main(int argc, char **argv) {
  if (dist_init(&argc, &argv)) {
    fprintf(stderr, "train: MPI did not start\n");
    return 1;
  }
  options o;
  int pr = parse_args(argc, argv, &o);
  if (pr) {
    dist_finalize();
    return pr > 0 ? 0 : 2;
  }
  if (dist_rank() == 0 && mkdir(o.out, 0777) && errno != EEXIST)
    fail("cannot create %s", o.out);
  trainer t;
  memset(&t, 0, sizeof t);
  t.o = &o;
  t.rank = dist_rank();
  t.ranks = dist_size();
  t.local = o.batch / t.ranks;
  t.tty = t.rank == 0 && isatty(2);
  t.eval_step = -1;
  setup(&t);
  run(&t);
  double train_time = now() - t.start;
  /* Every rank takes the same branch: the evaluations are decided on rank
   * 0's clock. */
  double bpd = t.eval_step == t.step ? t.eval_bpd : evaluate_averaged(&t);
  check_state(&t);
  if (t.rank == 0)
    finish(&t, bpd, train_time);
  release(&t);
  dist_finalize();
  return 0;
}
