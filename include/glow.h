/*
 * glow.h -- the public interface of libglow, a C library for Glow, the
 * normalizing flow of Kingma & Dhariwal (2018), "Glow: Generative Flow with
 * Invertible 1x1 Convolutions".
 *
 * This header is the whole contract: everything a program may rely on is
 * declared and documented here.
 *
 * ------------------------------------------------------------------------
 * Conventions (apply to every function below unless it says otherwise)
 * ------------------------------------------------------------------------
 * Status.   Functions that can fail return int: GLOW_OK (0) on success or a
 *           negative GLOW_ERR_* code.  Codes are pinned and never reused.
 *           glow_status_string() names a code; glow_last_error() gives the
 *           detailed message of the calling thread's last failure.
 *           The library never aborts, exits or prints because of a
 *           caller's mistake.
 *
 * Failure.  A failed call leaves the model unchanged.  Output buffers may
 *           have been partly written and must not be trusted.
 *
 * Images.   float32, batch-major NHWC: element (i, y, x, c) of a batch of n
 *           images of shape H x W x C is at ((i*H + y)*W + x)*C + c.
 *           Preprocessed images lie in [-0.5, 0.5].
 *
 * Latents.  float32, n x D with D = H*W*C.  Row i holds the standardized
 *           latent (eps) of every level of image i: the factored-out levels
 *           first (level 0 first), the top level last.  Each level's block
 *           is row-major in that level's own (h, w, c) shape; see
 *           glow_latent_layout().  Under the model eps ~ N(0, I).
 *
 * Labels.   const int32_t *, n entries in [0, n_classes) for a conditional
 *           model (n_classes > 0), where they are required; NULL for an
 *           unconditional model, where passing labels is an error.
 *
 * Batch.    n is an int32_t >= 1 with n * D <= 2^31 - 1 (GLOW_ERR_BATCH
 *           otherwise); a configuration with D > 2^31 - 1 is refused.  Caller buffers must hold the documented
 *           number of elements.  The library keeps no pointer to a caller
 *           buffer after a call returns.
 *
 * Threads.  Inference calls (glow_forward, glow_inverse, glow_logdet,
 *           glow_log_prob, glow_bits_per_dim, glow_sample, glow_classify,
 *           glow_preprocess, glow_postprocess, glow_model_save*, and the
 *           const queries) may run concurrently on one model.  Calls that
 *           change a model (glow_data_init, glow_backward, glow_zero_grad,
 *           glow_set_option, writes through glow_params or glow_grads) need
 *           exclusive access to it.  Different models are independent; the
 *           glow_latent_* functions touch no model.  A call may split its
 *           batch over threads of its own (GLOW_OPT_THREADS); their work
 *           ends before it returns, and the model keeps them, parked, for
 *           its next calls unless GLOW_OPT_KEEP_WORKSPACE is 0.  They
 *           block every signal, and keep the CPU affinity and scheduling
 *           settings of the thread whose call started them.  A process
 *           forked while no other thread was in a call on a model may go
 *           on using that model: it starts threads of its own.
 *
 * Memory.   Each call allocates the scratch memory it needs, but for its
 *           workspaces, which the model keeps for its next calls unless
 *           GLOW_OPT_KEEP_WORKSPACE is 0 (then each call frees all it
 *           allocated before returning).  A model owns its parameters and
 *           gradients (glow_params, glow_grads) and those workspaces;
 *           glow_model_free frees all of it.
 *           All of it comes from the allocator of glow_set_allocator().
 *           The default one, the C library's, advises the kernel to back
 *           blocks of 4 MiB or more with transparent huge pages (Linux,
 *           madvise MADV_HUGEPAGE; mere advice, which a system with them
 *           off ignores): a fresh workspace is then first touched in a few
 *           large page faults instead of one every 4 KiB.
 */
#ifndef GLOW_H
#define GLOW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Versioning --------------------------------------------------------- */

#define GLOW_VERSION_MAJOR 0
#define GLOW_VERSION_MINOR 2
#define GLOW_VERSION_PATCH 0
#define GLOW_VERSION_NUMBER                                                    \
  (GLOW_VERSION_MAJOR * 10000 + GLOW_VERSION_MINOR * 100 + GLOW_VERSION_PATCH)

/* ---- Export macro --------------------------------------------------------
 * The library is built with hidden visibility; only GLOW_API symbols are
 * exported.  Define GLOW_API yourself to override. */
#ifndef GLOW_API
#if defined(__GNUC__) && __GNUC__ >= 4
#define GLOW_API __attribute__((visibility("default")))
#else
#define GLOW_API
#endif
#endif

/* ---- Status codes (pinned) ---------------------------------------------- */

#define GLOW_OK 0
/** A required pointer argument was NULL. */
#define GLOW_ERR_NULL (-1)
/** The batch size n was < 1, or n * D (D = height * width * channels)
 *  exceeds 2^31 - 1 (INT32_MAX) values. */
#define GLOW_ERR_BATCH (-2)
/** Image shape invalid: a size <= 0, height/width not divisible by
 *  2^levels, or more than 2^31 - 1 values per image. */
#define GLOW_ERR_SHAPE (-3)
/** Some other configuration field is out of range (levels, depth, hidden,
 *  coupling, permutation, n_bits, n_classes, learn_top, class_weight). */
#define GLOW_ERR_CONFIG (-4)
/** glow_config.size is smaller than GLOW_CONFIG_SIZE_V1 (or zero). */
#define GLOW_ERR_CONFIG_SIZE (-5)
/** Labels missing for a conditional model, given to an unconditional
 *  model, or a label outside [0, n_classes). */
#define GLOW_ERR_LABEL (-6)
/** A scalar argument is out of range (e.g. a negative or non-finite
 *  temperature, an unknown level index). */
#define GLOW_ERR_ARG (-7)
/** Memory allocation failed. */
#define GLOW_ERR_NOMEM (-8)
/** A numerical failure: a singular 1x1 weight, a non-finite result. */
#define GLOW_ERR_NUMERIC (-9)
/** The operation is not supported by this build of the library. */
#define GLOW_ERR_UNSUPPORTED (-10)
/** The model is not in a state that allows the call. */
#define GLOW_ERR_STATE (-11)
/** An operating-system I/O operation failed (open, read, write, rename). */
#define GLOW_ERR_IO (-12)
/** A model file or buffer is malformed. */
#define GLOW_ERR_FORMAT (-13)
/** A model file was written by a newer, incompatible format version. */
#define GLOW_ERR_VERSION (-14)
/** A caller buffer is too small. */
#define GLOW_ERR_BUFFER (-15)

/* ---- Enumerations ------------------------------------------------------- */

/** Coupling layer type (glow_config.coupling). */
#define GLOW_COUPLING_AFFINE 0   /* y2 = (x2 + shift) * sigmoid(h + 2) */
#define GLOW_COUPLING_ADDITIVE 1 /* y2 = x2 + h                        */

/** Channel permutation of each flow step (glow_config.permutation). */
#define GLOW_PERMUTE_CONV1X1 0    /* learned invertible 1x1 convolution   */
#define GLOW_PERMUTE_CONV1X1_LU 1 /* the same, LU-decomposed              */
#define GLOW_PERMUTE_REVERSE 2    /* fixed channel reversal               */
#define GLOW_PERMUTE_SHUFFLE 3    /* fixed random channel shuffle          */

/* ---- Configuration ------------------------------------------------------ */

/**
 * Model configuration.  Call glow_config_init() first, then change fields.
 * `size` must stay the first member: the library reads a caller's struct
 * only up to `size` bytes, and fields are only ever appended, so a program
 * built against this header keeps working with later versions.
 */
typedef struct glow_config {
  uint32_t size;       /* sizeof(glow_config), set by glow_config_init    */
  int32_t height;      /* input height, divisible by 2^levels (32)         */
  int32_t width;       /* input width, divisible by 2^levels (32)          */
  int32_t channels;    /* input channels, >= 1 (3)                         */
  int32_t levels;      /* L, number of scales, 1..16 (3)                   */
  int32_t depth;       /* K, flow steps per level, >= 1 (32)               */
  int32_t hidden;      /* channels of the coupling network, >= 1 (512)     */
  int32_t coupling;    /* GLOW_COUPLING_* (AFFINE)                         */
  int32_t permutation; /* GLOW_PERMUTE_* (CONV1X1)                         */
  int32_t n_bits;      /* bits per pixel of the data, 1..8 (8)             */
  int32_t n_classes;   /* 0 = unconditional, else class-conditional (0)    */
  int32_t learn_top;   /* 1 = learned top prior, 0 = standard normal (1)   */
  float class_weight;  /* weight of the classification loss, >= 0 (0.01)   */
  uint64_t seed;       /* seed of the weight initialisation (0)            */
} glow_config;

/** Size of the first version of glow_config; smaller sizes are rejected. */
#define GLOW_CONFIG_SIZE_V1 ((uint32_t)(offsetof(glow_config, seed) + 8))

/** Fill *cfg with the defaults above and set cfg->size.  NULL is a no-op. */
GLOW_API void glow_config_init(glow_config *cfg);

/* ---- Model lifetime ----------------------------------------------------- */

/** Opaque model handle. */
typedef struct glow_model glow_model;

/**
 * Create a model with initial weights drawn from cfg->seed (the same config
 * gives bit-identical weights).  On success *out owns a new model that the
 * caller frees with glow_model_free().  On failure *out is set to NULL (when
 * out is not NULL).
 * Errors: NULL, CONFIG_SIZE, SHAPE, CONFIG, NOMEM.
 */
GLOW_API int glow_model_create(const glow_config *cfg, glow_model **out);

/** Free a model and everything it owns.  NULL is a no-op. */
GLOW_API void glow_model_free(glow_model *m);

/** D = height * width * channels, the size of one image and one latent;
 *  -1 if m is NULL. */
GLOW_API int64_t glow_model_dim(const glow_model *m);

/**
 * Copy the model's configuration into *out.  The caller sets out->size
 * (normally via glow_config_init); only that many bytes are written, and
 * out->size is left as the caller set it.
 * Errors: NULL, CONFIG_SIZE.
 */
GLOW_API int glow_model_config(const glow_model *m, glow_config *out);

/**
 * Where level `level`'s latent lies in a latent row: its shape (*h, *w, *c)
 * and the offset of its block from the start of the row.  Level 0 is the
 * first factored-out level, level L-1 the top.  Any output pointer may be
 * NULL.  Errors: NULL (m), ARG (level outside [0, L)).
 */
GLOW_API int glow_latent_layout(const glow_model *m, int32_t level, int32_t *h,
                                int32_t *w, int32_t *c, int64_t *offset);

/* ---- Inference ---------------------------------------------------------- */

/**
 * Map images to latents.  x: n x D image batch (NHWC).  eps: n x D output.
 * logdet: NULL or n outputs, log|det d eps / dx| per image in nats, so that
 * log p(x) = sum_j log N(eps_j; 0, 1) + logdet.
 * Errors: NULL, BATCH, LABEL, NUMERIC (singular 1x1 weight, non-finite
 * latent), NOMEM.
 */
GLOW_API int glow_forward(const glow_model *m, const float *x,
                          const int32_t *labels, int32_t n, float *eps,
                          float *logdet);

/**
 * Map latents back to images: the exact inverse of glow_forward.
 * eps: n x D latents.  x: n x D output.
 * Errors: NULL, BATCH, LABEL, NUMERIC (singular 1x1 weight, non-finite
 * output), NOMEM.
 */
GLOW_API int glow_inverse(const glow_model *m, const float *eps,
                          const int32_t *labels, int32_t n, float *x);

/** log|det d eps / dx| per image (n outputs).  Errors as glow_forward. */
GLOW_API int glow_logdet(const glow_model *m, const float *x,
                         const int32_t *labels, int32_t n, float *logdet);

/** Log density of each image in nats (n outputs):
 *  sum_j log N(eps_j; 0, 1) + logdet.  Errors as glow_forward; NUMERIC
 *  also when a finite latent's density is beyond float range. */
GLOW_API int glow_log_prob(const glow_model *m, const float *x,
                           const int32_t *labels, int32_t n, float *logp);

/**
 * Bits per dimension of each image (n outputs) under the discretised model
 * of n_bits data: (-log p(x) + D * n_bits * ln 2) / (D * ln 2).
 * Errors as glow_log_prob.
 */
GLOW_API int glow_bits_per_dim(const glow_model *m, const float *x,
                               const int32_t *labels, int32_t n, float *bpd);

/**
 * Draw n images at temperature T: glow_inverse(T * eps) with eps ~ N(0, I)
 * from a generator seeded by `seed`.  Image i's noise depends only on
 * (seed, i): not on n, not on threads.  The same seed gives bit-identical
 * images on every run with the same thread counts.  With libglow's own
 * GEMM kernel (GLOW_OPT_GEMM) image i is the same bits whatever n and the
 * number of threads; through a CBLAS, whose rounding depends on its threads
 * and on the size of each product, images agree to float rounding
 * (relative 1e-5).  T = 0 gives the mode.  x: n x D output.
 * Far in the tails, at high temperature, the inverse of a trained model can
 * overflow float range; such an image is redrawn with fresh noise (still a
 * function of seed and i), up to 16 times, so a batch does not fail for a
 * rare outlier.  This samples the model restricted to finite images.
 * Errors: NULL, BATCH, LABEL, ARG (T < 0 or not finite), NUMERIC (a
 * parameter tensor holds a non-finite value, named in glow_last_error(),
 * or an image is still not finite after 16 draws, e.g. at an extreme
 * temperature), NOMEM.
 */
GLOW_API int glow_sample(const glow_model *m, int32_t n, float temperature,
                         uint64_t seed, const int32_t *labels, float *x);

/**
 * 8-bit NHWC pixels (n x D) to model input x (n x D): keep the top n_bits of
 * each pixel, scale to [-0.5, 0.5) and add uniform dequantisation noise
 * U(0, 2^-n_bits) from a generator seeded by `seed`.  Allocates nothing.
 * Errors: NULL, BATCH.
 */
GLOW_API int glow_preprocess(const glow_model *m, const uint8_t *pixels,
                             int32_t n, uint64_t seed, float *x);

/**
 * Model input or output x (n x D) back to 8-bit pixels: the n_bits bin that
 * x falls in (clipped to the valid range), scaled back to 0..255.
 * Non-finite values map to 0.  Errors: NULL, BATCH.
 */
GLOW_API int glow_postprocess(const glow_model *m, const float *x, int32_t n,
                              uint8_t *pixels);

/**
 * Class prediction of a conditional model: the classifier head that the
 * training loss uses (a linear map of the top-level latent averaged over
 * positions).  logits and probs are n x n_classes outputs (row-major), the
 * raw scores and their softmax; either may be NULL, not both.  No labels are
 * needed.  May run concurrently with other inference calls.
 * Errors: NULL, BATCH, STATE (an unconditional model has no classifier),
 * NUMERIC (as glow_forward, or a logit beyond float range), NOMEM.
 */
GLOW_API int glow_classify(const glow_model *m, const float *x, int32_t n,
                           float *logits, float *probs);

/* ---- Latent arithmetic ---------------------------------------------------
 * Pure functions over caller buffers of latent rows (dim floats each,
 * normally dim = glow_model_dim()); no model, no allocation, thread-safe.
 * Sums are taken in double.  `out` may be the same buffer as an input.
 * Errors: NULL (a vector), ARG (dim < 1, a non-finite t or scale), BATCH
 * (a set with fewer than one row).
 */

/** out = (1 - t) a + t b. */
GLOW_API int glow_latent_lerp(const float *a, const float *b, int64_t dim,
                              float t, float *out);

/**
 * Spherical interpolation: along the great circle from a to b, with the
 * norm interpolated too, so that points between two Gaussian latents keep a
 * typical norm (a straight line passes through atypically short vectors).
 * Exactly: out = ((1-t)|a| + t|b|) * slerp(a/|a|, b/|b|, t).  Nearly
 * parallel vectors fall back to the straight line.  Errors also: ARG if a
 * or b is the zero vector, or they point in opposite directions.
 */
GLOW_API int glow_latent_slerp(const float *a, const float *b, int64_t dim,
                               float t, float *out);

/**
 * Attribute direction (Glow paper, section 5, figure 6): the mean of the
 * n_with latents of `with` (n_with x dim) minus the mean of the n_without
 * latents of `without`.  direction: dim outputs.
 */
GLOW_API int glow_latent_direction(const float *with, int32_t n_with,
                                   const float *without, int32_t n_without,
                                   int64_t dim, float *direction);

/** out[i] = z[i] + scale * direction for each of the n rows of z (n x dim);
 *  out: n x dim outputs. */
GLOW_API int glow_latent_shift(const float *z, const float *direction,
                               int32_t n, int64_t dim, float scale, float *out);

/* ---- Training ----------------------------------------------------------- */

/*
 * Training is done by the host: glow_data_init once, then per batch
 * glow_zero_grad, glow_backward (once, or once per micro-batch, since it
 * adds), and any optimizer that updates glow_params() in place from
 * glow_grads().  The library keeps no optimizer state and no copy of the
 * parameters, so the next call simply sees the new values.
 */

/**
 * Data-dependent initialisation (as openai/glow), from the batch x (n x D;
 * labels as for glow_forward).  One forward pass in which every actnorm --
 * each flow step's and the two inside each coupling network -- in data
 * order first sets bias = -mean and logs = log(1 / (std + 1e-6)) from its
 * own input on this batch (per channel, biased std), then applies them.  So
 * each actnorm's output on this batch has zero mean and unit variance per
 * channel; a constant channel gets a large but finite scale (1e6).  Other
 * parameters and glow_grads() are untouched.  Marks the model
 * initialised, which glow_backward requires.  Use a batch large enough for
 * stable statistics (openai/glow uses a few hundred images).
 * A second call initialises again from its own batch: it overwrites every
 * actnorm's parameters (trained values included) and leaves the gradients
 * alone.
 * The initialised flag is part of the model's state: glow_model_save and
 * glow_model_load keep it.  A host that restores its own checkpoint by
 * writing glow_params() of a new model must still call glow_data_init once
 * (then overwrite the parameters with the checkpoint's), or save and load
 * with glow_model_save/glow_model_load instead.
 * On failure the parameters are restored and the model is unchanged.
 * Errors: NULL, BATCH, LABEL, NOMEM, NUMERIC (a layer's output is not
 * finite; the message names it).
 */
GLOW_API int glow_data_init(glow_model *m, const float *x,
                            const int32_t *labels, int32_t n);

/** Number of trainable float parameters; -1 if m is NULL. */
GLOW_API int64_t glow_param_count(const glow_model *m);

/**
 * The model's flat parameter buffer (glow_param_count() floats), owned by
 * the model and valid until glow_model_free().  The host may write it, for
 * example from an optimizer; the next call sees the new values.  Fixed
 * buffers (permutations, LU pivots and signs) are not part of it.  NULL if
 * m is NULL.
 */
GLOW_API float *glow_params(glow_model *m);

/** The flat gradient buffer, same length and layout as glow_params().
 *  Zero after glow_model_create().  NULL if m is NULL. */
GLOW_API float *glow_grads(glow_model *m);

/** Set every gradient to zero.  Errors: NULL. */
GLOW_API int glow_zero_grad(glow_model *m);

/**
 * Loss and its exact gradient for the batch x (n x D; labels as for
 * glow_forward).  *loss receives
 *   mean over the batch of bits/dim (glow_bits_per_dim)
 *   + class_weight * mean cross-entropy / ln 2   (conditional models),
 * where the cross-entropy is that of the classifier head on the top
 * latent z before standardisation: logits = mean_hw(z) W + b, with
 * W = "classifier.weight" [c][n_classes] and b = "classifier.bias".
 * The gradient with respect to every parameter is ADDED to glow_grads(),
 * so that micro-batches accumulate: two calls on halves of a batch add up
 * to the gradient of the sum of their (half-batch mean) losses.  Entries
 * of an LU weight outside the triangles it uses get 0.
 *
 * Memory and time: see GLOW_OPT_BACKWARD_MODE.  By default the pass keeps
 * each flow step's input, not its activations, and runs the step's forward
 * again when its backward needs them: the same gradients as keeping
 * everything, for memory that grows with depth only by those inputs.  The
 * model keeps the call's workspace for the next call unless
 * GLOW_OPT_KEEP_WORKSPACE is 0.
 *
 * On failure neither glow_grads() nor the parameters change, and *loss is
 * not written.  One exception: with GLOW_OPT_KEEP_WORKSPACE, a call that
 * needs a larger workspace frees the kept one before allocating the new
 * one, so if that allocation fails (NOMEM) the model keeps no workspace.
 * Errors: NULL (m, x or loss), BATCH, LABEL, STATE (glow_data_init was
 * never called on this model), NOMEM, NUMERIC (a singular 1x1 weight, or a
 * loss, activation or gradient that is not finite: glow_last_error() names
 * the layer where it first appears, e.g. "level 1 step 3 coupling"; or
 * glow_grads() already holds a non-finite value, or adding this batch's
 * gradients to it overflows).
 */
GLOW_API int glow_backward(glow_model *m, const float *x, const int32_t *labels,
                           int32_t n, float *loss);

/* ---- Options ------------------------------------------------------------
 * Run-time settings of a model, set and read by number so that new ones
 * never change a struct.  They are not saved in model files.  Setting one
 * changes the model (exclusive access); reading one is an inference-class
 * call. */

/** Option numbers (pinned). */
#define GLOW_OPT_BACKWARD_MODE 1
#define GLOW_OPT_KEEP_WORKSPACE 2
#define GLOW_OPT_THREADS 3
#define GLOW_OPT_GEMM 4

/** Values of GLOW_OPT_BACKWARD_MODE, bounds [0, 1], default RECOMPUTE.
 *
 * Both modes give the same loss and the same gradients, bit for bit, for
 * the same GLOW_OPT_THREADS and GLOW_OPT_GEMM, on any finite input: the
 * backward pass reads what the forward computed, kept or computed again
 * from the same values, never a reconstruction through an inverse.
 *
 * RECOMPUTE: the forward keeps each flow step's input and its coupling
 *   network's output (n h w c floats each per step at its level (h, w, c);
 *   the output n h w c/2 for an additive coupling), and the input of every
 *   squeeze and prior; the backward runs each step's forward again from
 *   its input, just before that step's backward, taking the network's
 *   output from what was kept instead of running its last convolution
 *   again.  Memory: those tensors, growing with depth by 2c/(4 c + 2 hidden)
 *   of what STORE keeps per step, plus one step's activations (about
 *   4 n h w hidden floats at the largest level), the gradients of one
 *   tensor and a 16 MiB convolution scratch.  Time: the same in every
 *   case, about one forward pass more than STORE, less the couplings' last
 *   convolutions (a fifth of a forward pass of the default shape).
 * STORE: the forward keeps every layer's input and every network's
 *   activations, about n h w (4 c + 2 hidden) floats per step: memory
 *   linear in depth, and no forward runs twice.
 * docs/performance.md has measured times and memory of both. */
#define GLOW_BACKWARD_RECOMPUTE 0
#define GLOW_BACKWARD_STORE 1

/* GLOW_OPT_KEEP_WORKSPACE, bounds [0, 1], default 1.
 * 1: the model keeps the workspaces its calls used, for the next calls:
 *    - glow_backward's (one per shard, see GLOW_OPT_THREADS), reused by
 *      every call with as many shards, none larger than the one it was
 *      allocated for (a larger batch, or another number of shards,
 *      replaces them); freed when GLOW_OPT_BACKWARD_MODE is set to another
 *      value;
 *    - the inference calls' (glow_forward, glow_inverse, glow_logdet,
 *      glow_log_prob, glow_bits_per_dim, glow_sample, glow_classify), one
 *      per shard, up to 16 idle ones, shared by concurrent callers: a call
 *      takes the smallest idle one that holds its shard, or allocates one,
 *      and gives it back.  A repeated call of the same or a smaller batch
 *      then allocates only small tables (a few hundred bytes per shard);
 *    - the threads of GLOW_OPT_THREADS, parked between calls.
 *    All are freed (the threads ended) when this option is set to 0 and
 *    with the model; the workspaces also when GLOW_OPT_GEMM is set to
 *    another value, the threads when GLOW_OPT_THREADS is.  Kept
 *    workspaces save the cost of allocating and first touching fresh
 *    memory on every call: about 10% of a STORE-mode step with the default
 *    allocator's huge pages (see "Memory" above), three times the step
 *    without them (docs/performance.md).  A kept workspace also keeps
 *    what each 1x1 weight gives (its log-determinant, its inverse), used
 *    again only while the parameters are the same bits: a call after
 *    glow_params() was written to computes them afresh.
 * 0: every call allocates its workspaces and starts its threads, and
 *    frees and ends them before returning: nothing is held between calls,
 *    at that cost.
 * Results do not depend on whether or which workspace or thread was kept. */

/* GLOW_OPT_THREADS, bounds [0, 256], default 0 (automatic).
 * How many threads of its own a call on this model runs.  Every image goes
 * through the flow on its own, so a call with t > 1 threads splits its
 * batch of n into min(t, n) shards of consecutive images, sizes differing
 * by at most one, and runs each shard with its own workspace on a thread
 * of its own; the calling thread runs the first.  glow_backward then adds
 * the shards' gradients in shard order.  With fewer images than threads
 * (n < t), each shard of a model whose flow steps have at least 8 million FLOPs
 * of products per image each (the cifar shape of docs/performance.md has 84,
 * the fashion shape 6) gets a team of the threads left over (t / n of them,
 * give or take one), which split the shard's matrix products between them by
 * columns or rows of the result, so that one image uses every core: each value
 * of a product is still summed by one thread, in the order one thread sums it.
 * Steps of 2 to 8 million FLOPs (fashion's) are shared where that pays,
 * which depends on the machine: on the own kernel a call of one image times
 * itself, the first 8 calls of every 64 taking turns between a team and one
 * thread, and the other 56 run the way whose fastest call was faster (the
 * same bits either way; concurrent callers share the timing).  Smaller
 * steps are too short to share (on the machine measured there, a team made
 * them slower).  The threads' work ends before the call returns.  While
 * GLOW_OPT_KEEP_WORKSPACE is 1 the model keeps the threads for its next calls:
 * each spins for about a millisecond after its work, then sleeps until a call
 * takes it.  Later calls then neither pay for starting threads nor find a new
 * one placed on the calling thread's own core, where the scheduler often puts a
 * thread started just after every core was busy (docs/performance.md).
 * Concurrent callers take different threads; a model keeps up to 256, and a
 * call that needs more starts and ends its own for the rest.  Setting this
 * option to another value, or GLOW_OPT_KEEP_WORKSPACE to 0, ends them, as
 * glow_model_free does; with GLOW_OPT_KEEP_WORKSPACE 0 each call starts its
 * threads and ends them before returning (an idle model holds none).  A thread
 * that cannot be started leaves its shard to the calling thread.
 * glow_data_init always runs on the calling thread alone: its statistics
 * are those of the whole batch.
 *
 * The matrix products then run single-threaded inside each shard.  With
 * libglow's own kernel (GLOW_OPT_GEMM) that is always so.  Through the
 * CBLAS it pays only if the BLAS runs single-threaded there: two
 * multi-threaded products at once fight for the same cores.  With
 * OpenBLAS set OPENBLAS_NUM_THREADS=1 in the environment (or call
 * openblas_set_num_threads(1)).
 *   0: automatic: one thread per CPU the process may run on (its affinity
 *      mask) when the products run single-threaded: on the own kernel, or
 *      on OpenBLAS running one thread (openblas_get_num_threads() == 1).
 *      Otherwise 1, leaving the cores to the BLAS's threads.
 *   1: no threads of libglow's own; the BLAS may thread each product.
 *   t: t threads, whatever the BLAS does.
 * docs/performance.md compares the shards with OpenBLAS's own threads.
 *
 * Results: the same bits for the same number of threads.  On the own
 * kernel the inference calls give the same bits for every number of
 * threads (each image's arithmetic does not depend on its shard or its
 * team), and glow_backward the same bits for every t >= n; through
 * OpenBLAS, whose rounding of a row depends on the number of rows in the
 * product, they agree up to float rounding.  glow_backward's loss and
 * gradients are sums over shards: equal up to float rounding across
 * numbers of shards.
 * Memory: the shards' workspaces together hold about what one for the
 * whole batch would; glow_backward adds one parameter-sized gradient
 * buffer per shard beyond the first. */

/** Values of GLOW_OPT_GEMM, bounds [0, 1], default AUTO: what computes the
 * matrix products (the convolutions and the 1x1 convs).
 * AUTO: libglow's own single-threaded kernel on x86-64 CPUs with AVX-512F
 *   or, failing that, with AVX2 and FMA (chosen at run time), else the
 *   CBLAS.  It sums each product's terms in a fixed order, so an image's
 *   results do not depend on the batch it is in or on the number of
 *   threads; its AVX-512 and AVX2 versions sum in the same order and give
 *   the same products, bit for bit.  It needs about 2.2 MiB of packing
 *   scratch per thread, part of each call's workspace.  The environment
 *   variable GLOW_GEMM_ISA=avx2, read once per process at its first
 *   product, holds a CPU with AVX-512F to the AVX2 version (to test or
 *   measure it there); other values are ignored.
 * BLAS: the CBLAS libglow was linked with, always.
 * The two agree up to float rounding.  Which is faster depends on the
 * CBLAS and the CPU (docs/performance.md). */
#define GLOW_GEMM_AUTO 0
#define GLOW_GEMM_BLAS 1

/**
 * Set option `option` of model m to `value`.  Takes effect from the next
 * call.
 * Errors: NULL, ARG (unknown option, or value outside its bounds; see
 * glow_option_bounds); the option then keeps its value.
 */
GLOW_API int glow_set_option(glow_model *m, int32_t option, int64_t value);

/** Read option `option` of model m into *value.
 *  Errors: NULL, ARG (unknown option). */
GLOW_API int glow_get_option(const glow_model *m, int32_t option,
                             int64_t *value);

/** The valid values of option `option`: [*lower, *upper].
 *  Errors: NULL, ARG (unknown option). */
GLOW_API int glow_option_bounds(int32_t option, int64_t *lower, int64_t *upper);

/* ---- Model files -------------------------------------------------------- */

/*
 * A model file is a safetensors file (docs/format.md has the full layout):
 * an 8-byte little-endian header length N, N bytes of JSON naming every
 * tensor with its dtype, shape and byte offsets, then the raw little-endian
 * data.  Any safetensors reader can open it.  The header's "__metadata__"
 * holds the configuration, the format version, the library version and
 * whether the actnorms were initialised from data.  Every tensor is F32:
 * the parameters, named and shaped as glow_tensor_get() reports them and
 * stored first in glow_params() order, so that the data section begins
 * with an exact copy of the parameter buffer; then the fixed buffers
 * (permutations, LU signs).  Gradients are not saved.
 *
 * Round trip.  A loaded model computes bit-identical results (forward,
 * inverse, sampling) to the saved one, has an identical parameter buffer
 * and configuration, zero gradients, and the same actnorm state.  Saving
 * the same model twice gives identical bytes.
 *
 * Untrusted input.  The loaders treat every file or buffer as hostile:
 * whatever its content they return a status, read nothing outside the
 * input, and either build a complete, validated model or nothing.  A
 * forged configuration is refused before the model is allocated: a model
 * needing far more parameters than the input holds is never built.
 * Memory needed: the model, plus the header's JSON tree.
 *
 * Load errors (file and buffer):
 *   NULL     a pointer argument is NULL;
 *   IO       (files) the path does not exist, is a directory or not a
 *            regular file, or cannot be read;
 *   FORMAT   the input is malformed: shorter than 8 bytes, a header length
 *            beyond the input, above 100 MiB, or above what a model with
 *            that much data can need (64 KiB of metadata plus 256 bytes
 *            per 4 bytes of data; checked before parsing, so a header's
 *            JSON tree costs memory in proportion to the data), a header
 *            that is not a JSON object, a tensor missing, duplicated,
 *            unexpected, not F32, of
 *            the wrong shape, with offsets that overlap, leave a gap, run
 *            past the end or disagree with its shape, a shape whose size
 *            overflows, metadata missing or malformed, a configuration that
 *            fails validation (the reason is in glow_last_error()), a
 *            permutation that is not one, a sign other than +-1, a
 *            parameter that is not finite (the tensor is named);
 *   VERSION  the file's format version is newer than this library reads;
 *   NOMEM    out of memory.
 * On failure *out is NULL and nothing is left allocated.
 *
 * Threads.  Saving reads the model only and may run concurrently with the
 * inference calls; loading touches no existing model.
 */

/** Version of the model file format that this library writes; it reads
 *  this version and older ones. */
#define GLOW_FORMAT_VERSION 1

/**
 * Write the model to the file `path`, atomically: the bytes go to a new
 * temporary file in the same directory (".glow.tmp-<pid>-<n>", a short
 * name whatever the length of `path`), which is flushed to disk and then
 * renamed over `path`.  A crash or a failure never leaves a partly written
 * file under `path`; on failure `path` is untouched and the temporary file
 * is removed (a crash may leave the temporary file behind).
 * Only a regular file is replaced, and only if it is writable (a write
 * permission bit set, and writable by this process): the rename would
 * otherwise silently bypass the file's protection.  Anything else under
 * `path` is an error and is left in place: a directory, a device, a FIFO,
 * a socket, and a symbolic link, whatever it points to (save to the path
 * it names instead).  The new file keeps the read, write and execute
 * permission bits (0777) of the one it replaces, not its setuid, setgid or
 * sticky bits (a new file gets 0666 less the umask).  A model whose
 * parameters are not all finite is not saved: every file this library
 * writes is one it loads.
 * Errors: NULL, NUMERIC (a parameter tensor holds a non-finite value,
 * named in glow_last_error()), IO (path empty, or not a regular file, or
 * read-only; the directory is not writable, a write or the rename failed;
 * the OS reason is in glow_last_error()), NOMEM.
 */
GLOW_API int glow_model_save(const glow_model *m, const char *path);

/**
 * Read the model file at `path` into a new model, which the caller frees
 * with glow_model_free().  The file is read with plain reads (no mapping),
 * so it may be replaced or removed afterwards.  On failure *out is NULL.
 * Errors: see "Load errors" above.
 */
GLOW_API int glow_model_load(const char *path, glow_model **out);

/**
 * Write the model file's exact bytes into the caller's buffer `buf` of
 * `cap` bytes, for hosts without a file system or bindings that keep the
 * bytes themselves.  *size receives the number of bytes the file takes
 * whenever the call returns GLOW_OK or GLOW_ERR_BUFFER; on any other error
 * (NULL, NUMERIC, or NOMEM: the file's layout could not be planned in
 * memory, or the file would not fit in size_t) *size is not written.
 *   - Size query: buf NULL and cap 0 return GLOW_OK and write nothing else.
 *   - cap < *size: GLOW_ERR_BUFFER, buf untouched.
 *   - Otherwise the first *size bytes of buf hold the file, identical to
 *     what glow_model_save() writes.
 * Errors: NULL (m or size NULL, or buf NULL with cap > 0), BUFFER, NUMERIC
 * (as glow_model_save; the size query still answers), NOMEM.
 */
GLOW_API int glow_model_save_buffer(const glow_model *m, void *buf, size_t cap,
                                    size_t *size);

/**
 * Read a model from the `len` bytes at `data` (the bytes of a model file)
 * into a new model, which the caller frees with glow_model_free().  The
 * model does not refer to `data` afterwards.  On failure *out is NULL.
 * Errors: see "Load errors" above (IO does not occur).
 */
GLOW_API int glow_model_load_buffer(const void *data, size_t len,
                                    glow_model **out);

/* ---- Parameter introspection -------------------------------------------- */

/*
 * The flat parameter buffer (glow_params(), glow_grads()) is a sequence of
 * named tensors, stored back to back in index order: tensor i starts where
 * tensor i-1 ends, the first at offset 0, and the counts add up to
 * glow_param_count().  Each is row-major in its shape (last axis fastest).
 * Names are stable across releases of one file format version; they and
 * the meaning of every axis are listed in docs/format.md, for example
 *   level.0.step.3.coupling.conv1.weight   [3][3][c/2][hidden]  (HWIO)
 * The model file writer enumerates tensors through the same table, so a
 * file's parameter tensors are exactly these, in this order.  Fixed
 * buffers (permutations, LU signs) are not parameters and are not listed.
 *
 * The table is fixed when the model is created and never changes, so these
 * queries may run concurrently with anything but glow_model_free().
 */

/** Most dimensions a parameter tensor has. */
#define GLOW_TENSOR_MAX_DIMS 4

/**
 * Description of one parameter tensor.  Set `size` to sizeof(the struct)
 * before the call: fields are only ever appended, and the library writes
 * no more than `size` bytes, so a program built against this header keeps
 * working with later versions.  A size below GLOW_TENSOR_INFO_SIZE_V1 is
 * GLOW_ERR_ARG (GLOW_ERR_CONFIG_SIZE is glow_config's alone).
 */
/* clang-format off */
typedef struct glow_tensor_info {
  uint32_t size;        /* sizeof(glow_tensor_info), set by the caller    */
  int32_t ndim;         /* number of dimensions, 1..GLOW_TENSOR_MAX_DIMS */
  const char *name;     /* e.g. "level.1.step.7.coupling.conv1.weight";
                           owned by the model, valid until
                           glow_model_free()                              */
  int64_t offset;       /* first element in glow_params()/glow_grads()    */
  int64_t count;        /* number of elements, the product of shape       */
  int32_t shape[GLOW_TENSOR_MAX_DIMS]; /* sizes, outermost first; entries
                           from ndim on are 0                             */
} glow_tensor_info;
/* clang-format on */

/** Size of the first version of glow_tensor_info; smaller sizes are
 *  rejected. */
#define GLOW_TENSOR_INFO_SIZE_V1                                               \
  ((uint32_t)(offsetof(glow_tensor_info, shape) +                              \
              GLOW_TENSOR_MAX_DIMS * sizeof(int32_t)))

/** Number of parameter tensors; -1 if m is NULL. */
GLOW_API int32_t glow_tensor_count(const glow_model *m);

/**
 * Describe parameter tensor `index` (0 <= index < glow_tensor_count()) in
 * *out.  out->size is left as the caller set it; fields beyond it are not
 * written.
 * Errors: NULL (m or out), ARG (index out of range, or out->size smaller
 * than GLOW_TENSOR_INFO_SIZE_V1: note ARG, not the CONFIG_SIZE that
 * glow_model_config returns for an undersized glow_config).
 */
GLOW_API int glow_tensor_get(const glow_model *m, int32_t index,
                             glow_tensor_info *out);

/**
 * The index of the parameter tensor called `name` (exact, case-sensitive
 * match), for glow_tensor_get().  Linear in the number of tensors.
 * Errors: NULL (m, name or index), ARG (no tensor of that name; *index is
 * then -1).
 */
GLOW_API int glow_tensor_find(const glow_model *m, const char *name,
                              int32_t *index);

/* ---- Memory --------------------------------------------------------------- */

/**
 * A replaceable allocator (since 0.2).  Every allocation the library makes
 * goes through it: models, the scratch of every call, model-file buffers,
 * the JSON tree of a file's header.  (Threads that a call starts allocate
 * their stacks through the C library; so may the CBLAS and LAPACK for
 * their internal buffers.)  Each function gets `ctx` first:
 *   malloc_fn(ctx, size)          size >= 1
 *   calloc_fn(ctx, count, size)   count, size >= 1; zeroed memory
 *   realloc_fn(ctx, ptr, size)    ptr from this allocator, size >= 1
 *   free_fn(ctx, ptr)             ptr from this allocator, never NULL
 * Memory must be aligned as malloc's is.  Returning NULL makes the call
 * that asked fail with GLOW_ERR_NOMEM, leaving the model as it was.  The
 * functions may be called from any thread, concurrently (a call may run
 * its batch on threads of its own, and inference calls may run at once).
 * Set `size` to sizeof(glow_allocator): fields are only ever appended.
 */
typedef struct glow_allocator {
  uint32_t size; /* sizeof(glow_allocator), set by the caller */
  void *(*malloc_fn)(void *ctx, size_t size);
  void *(*calloc_fn)(void *ctx, size_t count, size_t size);
  void *(*realloc_fn)(void *ctx, void *ptr, size_t size);
  void (*free_fn)(void *ctx, void *ptr);
  void *ctx; /* passed to each function as it is */
} glow_allocator;

/** Size of the first version of glow_allocator. */
#define GLOW_ALLOCATOR_SIZE_V1                                                 \
  ((uint32_t)(offsetof(glow_allocator, ctx) + sizeof(void *)))

/**
 * Make *a the process-wide allocator of the library (it is copied), or
 * with a NULL, the C library's malloc, calloc, realloc and free again
 * (with the huge-page advice of "Memory" above, which the library gives
 * no allocator of the caller's).
 * Call it while no model exists, normally once at start-up, and while no
 * other libglow call runs in any thread: memory is always freed by the
 * allocator that gave it, so the allocator may not change under live
 * models (refused, see STATE below) nor under a call in progress (not
 * detected; undefined behaviour).  Model files' headers are parsed with the system's cJSON, whose
 * allocation hooks are process-wide: libglow routes them to this
 * allocator from its first model load on.  A host that uses cJSON itself
 * gets its cJSON memory from this allocator too, and must not install
 * cJSON hooks of its own (libglow would then allocate through them, and
 * could not tell a failed allocation from a malformed header).
 * Errors: ARG (a->size smaller than GLOW_ALLOCATOR_SIZE_V1), NULL (one of
 * the functions is NULL), STATE (a model exists; the allocator is then
 * unchanged).
 */
GLOW_API int glow_set_allocator(const glow_allocator *a);

/* ---- Errors and version ------------------------------------------------- */

/** Static text naming a status code ("unknown status" for others). */
GLOW_API const char *glow_status_string(int status);

/**
 * Detailed message of the calling thread's last failed call ("" if none).
 * Owned by the library; valid until this thread's next libglow call.
 */
GLOW_API const char *glow_last_error(void);

/** The library's version at run time, "MAJOR.MINOR.PATCH". */
GLOW_API const char *glow_version_string(void);

/** MAJOR*10000 + MINOR*100 + PATCH at run time. */
GLOW_API uint32_t glow_version_number(void);

#ifdef __cplusplus
}
#endif

#endif /* GLOW_H */
