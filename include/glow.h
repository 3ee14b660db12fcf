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
 * Batch.    n is an int32_t >= 1.  Caller buffers must hold the documented
 *           number of elements.  The library keeps no pointer to a caller
 *           buffer after a call returns.
 *
 * Threads.  Inference calls (glow_forward, glow_inverse, glow_logdet,
 *           glow_log_prob, glow_bits_per_dim, glow_sample, glow_preprocess,
 *           glow_postprocess, and the const queries) may run concurrently on
 *           one model.  Calls that change a model (glow_data_init,
 *           glow_backward, glow_zero_grad, writes through glow_params or
 *           glow_grads) need exclusive access to it.  Different models are
 *           independent.
 *
 * Memory.   Each call allocates the scratch memory it needs and frees it
 *           before returning; a model owns only its parameters.
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
#define GLOW_VERSION_MINOR 1
#define GLOW_VERSION_PATCH 0
#define GLOW_VERSION_NUMBER \
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
/** The batch size n was < 1, or n * D does not fit the address space. */
#define GLOW_ERR_BATCH (-2)
/** Image shape invalid: a size <= 0, or height/width not divisible by
 *  2^levels. */
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
GLOW_API int glow_latent_layout(const glow_model *m, int32_t level,
                                int32_t *h, int32_t *w, int32_t *c,
                                int64_t *offset);

/* ---- Inference ---------------------------------------------------------- */

/**
 * Map images to latents.  x: n x D image batch (NHWC).  eps: n x D output.
 * logdet: NULL or n outputs, log|det d eps / dx| per image in nats, so that
 * log p(x) = sum_j log N(eps_j; 0, 1) + logdet.
 * Errors: NULL, BATCH, LABEL, NUMERIC (singular 1x1 weight, non-finite
 * latent), NOMEM.
 */
GLOW_API int glow_forward(glow_model *m, const float *x, const int32_t *labels,
                          int32_t n, float *eps, float *logdet);

/**
 * Map latents back to images: the exact inverse of glow_forward.
 * eps: n x D latents.  x: n x D output.
 * Errors: NULL, BATCH, LABEL, NUMERIC (singular 1x1 weight, non-finite
 * output), NOMEM.
 */
GLOW_API int glow_inverse(glow_model *m, const float *eps,
                          const int32_t *labels, int32_t n, float *x);

/** log|det d eps / dx| per image (n outputs).  Errors as glow_forward. */
GLOW_API int glow_logdet(glow_model *m, const float *x, const int32_t *labels,
                         int32_t n, float *logdet);

/** Log density of each image in nats (n outputs):
 *  sum_j log N(eps_j; 0, 1) + logdet.  Errors as glow_forward. */
GLOW_API int glow_log_prob(glow_model *m, const float *x,
                           const int32_t *labels, int32_t n, float *logp);

/**
 * Bits per dimension of each image (n outputs) under the discretised model
 * of n_bits data: (-log p(x) + D * n_bits * ln 2) / (D * ln 2).
 * Errors as glow_forward.
 */
GLOW_API int glow_bits_per_dim(glow_model *m, const float *x,
                               const int32_t *labels, int32_t n, float *bpd);

/**
 * Draw n images at temperature T: glow_inverse(T * eps) with eps ~ N(0, I)
 * from a generator seeded by `seed`.  The same seed gives the same images on
 * every run and thread count; T = 0 gives the mode.  x: n x D output.
 * Errors: NULL, BATCH, LABEL, ARG (T < 0 or not finite), NUMERIC, NOMEM.
 */
GLOW_API int glow_sample(glow_model *m, int32_t n, float temperature,
                         uint64_t seed, const int32_t *labels, float *x);

/**
 * 8-bit NHWC pixels (n x D) to model input x (n x D): keep the top n_bits of
 * each pixel, scale to [-0.5, 0.5) and add uniform dequantisation noise
 * U(0, 2^-n_bits) from a generator seeded by `seed`.
 * Errors: NULL, BATCH, NOMEM.
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

/* ---- Training ----------------------------------------------------------- */

/**
 * Data-dependent initialisation of every actnorm from the batch x (n x D):
 * each actnorm's bias and log-scale are set so that its output on this
 * batch has zero mean and unit variance per channel.
 * Errors: NULL, BATCH, LABEL, NOMEM, NUMERIC, UNSUPPORTED (this release).
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
 * Loss and gradients for the batch x (n x D): loss = mean bits/dim (+
 * class_weight * cross-entropy / ln 2 for conditional models).  Gradients
 * are ADDED to glow_grads(), so that micro-batches accumulate.
 * Errors: NULL, BATCH, LABEL, NOMEM, NUMERIC, UNSUPPORTED (this release).
 */
GLOW_API int glow_backward(glow_model *m, const float *x,
                           const int32_t *labels, int32_t n, float *loss);

/* ---- Model files -------------------------------------------------------- */

/** Write the model to `path`.  Errors: NULL, IO, UNSUPPORTED (this
 *  release). */
GLOW_API int glow_model_save(const glow_model *m, const char *path);

/** Read a model from `path` into a new *out (NULL on failure).
 *  Errors: NULL, IO, FORMAT, VERSION, UNSUPPORTED (this release). */
GLOW_API int glow_model_load(const char *path, glow_model **out);

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
