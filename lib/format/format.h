/*
 * format.h -- model files (docs/format.md): the safetensors container, the
 * metadata codec, the list of a model's file tensors, and the writer and
 * reader built on them.  Other parts of the library need nothing from here
 * but the four entry points at the end.
 */
#ifndef GLOW_FORMAT_H
#define GLOW_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* The safetensors container (safetensors.c): an 8-byte little-endian header
 * length N, N bytes of JSON header, then the data section.  The JSON is
 * parsed by cJSON; its tree stays opaque to the rest of the library. */
#define GLOW__ST_MAX_HEADER (UINT64_C(100) * 1024 * 1024) /* as safetensors */
/* A model file's header names each tensor once, in at most
 * GLOW__ST_MAX_ENTRY bytes of JSON (a name of under 64 bytes, dtype, up to
 * four dimensions and two offsets, with room for another writer's
 * whitespace), and every tensor holds at least one F32, 4 bytes of data;
 * the metadata takes at most GLOW__ST_MAX_META bytes.  So the header of a
 * file with d bytes of data needs at most MAX_META + MAX_ENTRY * d / 4
 * bytes: a longer one is refused before it is parsed, and parsing costs
 * memory in proportion to the data, never more. */
#define GLOW__ST_MAX_ENTRY UINT64_C(256)
#define GLOW__ST_MAX_META (UINT64_C(64) * 1024)
static inline uint64_t glow__st_header_bound(uint64_t data_len) {
  const uint64_t tensors = data_len / 4;
  if (tensors > (GLOW__ST_MAX_HEADER - GLOW__ST_MAX_META) / GLOW__ST_MAX_ENTRY)
    return GLOW__ST_MAX_HEADER;
  return GLOW__ST_MAX_META + GLOW__ST_MAX_ENTRY * tensors;
}
#define GLOW__ST_MAX_DIMS 8

/* One tensor of a header.  In a parsed header `name` and `dtype` point into
 * the JSON tree; offsets are relative to the data section, end exclusive. */
typedef struct {
  const char *name;
  const char *dtype;
  uint32_t elem_bytes; /* size of one element of dtype */
  int32_t ndim;
  uint64_t shape[GLOW__ST_MAX_DIMS];
  uint64_t begin, end;
} glow__st_entry;

typedef struct {
  struct cJSON *root;      /* the whole header */
  struct cJSON *metadata;  /* "__metadata__", NULL if absent */
  glow__st_entry *entries; /* sorted by begin: the order of the data */
  int32_t n_entries;
} glow__st_header;

/* Parse and validate a header: text holds `len` bytes plus a NUL at
 * text[len]; data_len is the size of the data section that follows.  On
 * success every tensor has a known dtype, a shape whose byte size fits
 * uint64 and equals end - begin, a unique name, and the tensors tile the
 * data section exactly (no overlap, gap or trailing byte); metadata values
 * are strings with unique keys.  GLOW_ERR_FORMAT (with a message) or
 * GLOW_ERR_NOMEM otherwise; *out then owns nothing. */
int glow__st_parse(const char *text, uint64_t len, uint64_t data_len,
                   glow__st_header *out);
void glow__st_free(glow__st_header *h);
/* The metadata value of `key`, or NULL if absent. */
const char *glow__st_meta(const glow__st_header *h, const char *key);

/* Header JSON for `n` entries (name, dtype, shape, offsets set by the
 * caller) and `n_meta` metadata pairs meta[2i] -> meta[2i+1], padded with
 * spaces so that the data section starts 8-byte aligned.  *out (malloc'd,
 * NUL-terminated, *len bytes before the NUL) is the caller's to free. */
int glow__st_build(const glow__st_entry *e, int32_t n, const char *const *meta,
                   int32_t n_meta, char **out, uint64_t *len);

/* Little-endian conversion, whatever the host's byte order. */
uint64_t glow__st_get_u64(const uint8_t *p);
void glow__st_put_u64(uint8_t *p, uint64_t v);
void glow__st_get_f32(const uint8_t *src, float *dst, size_t n);
void glow__st_put_f32(const float *src, uint8_t *dst, size_t n);

/* ---- A model's file tensors (tensors.c) ------------------------------------ */

typedef struct {
  char name[GLOW__NAME_MAX];
  int param; /* 1: a parameter tensor, 0: a fixed buffer */
  int32_t ndim;
  int32_t shape[GLOW_TENSOR_MAX_DIMS];
  int64_t count;
  int64_t offset; /* parameter: first element in the parameters */
  int32_t fixed;  /* fixed buffer: its index in the model's registry */
  int seen;       /* loading: found in the file */
} glow__ftensor;

/* Every tensor of the model's file, in file order: the parameter tensors,
 * then the fixed buffers, as the layers registered them.  *out is the
 * caller's to free. */
int glow__file_tensors(const glow_model *m, glow__ftensor **out, int32_t *n);

/* ---- Metadata (metadata.c) ---------------------------------------------------- */

/* Pairs a model's metadata has. */
#define GLOW__N_META 16
/* The metadata pairs of a model: kv[2i] -> kv[2i+1], values kept in vals. */
int glow__meta_write(const glow_model *m, const char **kv, char (*vals)[32]);
/* The format version first, so that a newer file is reported as such
 * rather than as malformed; then the state and the whole configuration,
 * validated. */
int glow__meta_read(const glow__st_header *h, glow_config *cfg,
                    int *initialized);

/* ---- Entry points (save.c, load.c) --------------------------------------------- *
 * Arguments already checked by the caller; as glow_model_save_buffer,
 * glow_model_save, glow_model_load_buffer and glow_model_load. */
int glow__save_buffer(const glow_model *m, void *buf, size_t cap, size_t *size);
int glow__save_file(const glow_model *m, const char *path);
int glow__load_buffer(const void *data, size_t len, glow_model **out);
int glow__load_file(const char *path, glow_model **out);

#endif /* GLOW_FORMAT_H */
