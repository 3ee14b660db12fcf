/*
 * api.h -- shared by the public entry points: the argument checks, in one
 * place, so that every call reports the same mistake the same way.
 */
#ifndef GLOW_API_H
#define GLOW_API_H

#include <stdint.h>

#include "model.h"

/* n in [1, INT32_MAX / D]: BATCH otherwise. */
int glow__check_batch(const glow_model *m, int32_t n, const char *fn);
/* Labels present exactly for conditional models, each in range: LABEL. */
int glow__check_labels(const glow_model *m, const int32_t *labels, int32_t n,
                       const char *fn);
/* Batch size, then labels. */
int glow__check_batch_labels(const glow_model *m, const int32_t *labels,
                             int32_t n, const char *fn);
/* Model, input and output pointers (NULL), batch size, labels. */
int glow__check_call(const glow_model *m, const void *in, const void *out,
                     const int32_t *labels, int32_t n, const char *fn);
/* Model, input and output pointers and batch size, for calls without
 * labels. */
int glow__check_io(const glow_model *m, const void *in, const void *out,
                   int32_t n, const char *fn);
/* Latent vectors a, b and out present and dim >= 1. */
int glow__check_vectors(const void *a, const void *b, const void *out,
                        int64_t dim, const char *fn);
/* A finite float argument named `what`: ARG otherwise. */
int glow__check_finite(float v, const char *what, const char *fn);

#endif /* GLOW_API_H */
