/*
 * load.c -- reading a model file from memory or a path, trusting nothing:
 * the container is validated (safetensors.c), then the configuration in
 * the metadata (metadata.c), then the model is built from it (refusing one
 * that needs more parameters than the data holds); the file's tensors
 * must be exactly the model's, names and shapes, and the fixed buffers
 * what their kinds say.  Only then is the model handed out.
 */
#define _POSIX_C_SOURCE 200809L /* open, pread */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"

/* Bytes converted per read. */
#define CHUNK 8192

/* Where the bytes come from: memory or a file descriptor of `size` bytes. */
typedef struct {
  const uint8_t *mem;
  int fd;
  uint64_t size;
} source;

static int src_read(const source *s, uint64_t off, void *dst, size_t n) {
  if (off > s->size || n > s->size - off) /* callers check; kept as a guard */
    return glow__fail(GLOW_ERR_FORMAT, "model file: read past the end");
  if (s->mem) {
    memcpy(dst, s->mem + off, n);
    return GLOW_OK;
  }
  uint8_t *b = dst;
  while (n > 0) {
    ssize_t r = pread(s->fd, b, n, (off_t)off);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      char why[128];
      return glow__fail(GLOW_ERR_IO, "glow_model_load: reading: %s",
                        r < 0 ? glow__os_error(errno, why, sizeof why)
                              : "the file shrank while it was read");
    }
    b += r;
    off += (uint64_t)r;
    n -= (size_t)r;
  }
  return GLOW_OK;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const glow__ftensor *)a)->name,
                ((const glow__ftensor *)b)->name);
}

static int find_name(const void *key, const void *t) {
  return strcmp(key, ((const glow__ftensor *)t)->name);
}

static void shape_text(char *buf, size_t n, int32_t ndim,
                       const uint64_t *shape) {
  size_t at = 0;
  buf[0] = '\0';
  for (int32_t d = 0; d < ndim && at < n; d++) {
    int w = snprintf(buf + at, n - at, d ? ", %" PRIu64 : "%" PRIu64, shape[d]);
    if (w < 0)
      break;
    at += (size_t)w;
  }
}

/* The file's tensors are exactly the model's: for each header entry its
 * tensor (sorted t, by name) in which[i]. */
static int match(const glow__st_header *h, glow__ftensor *t, int32_t n,
                 glow__ftensor **which) {
  qsort(t, (size_t)n, sizeof *t, by_name);
  for (int32_t i = 0; i < h->n_entries; i++) {
    const glow__st_entry *e = &h->entries[i];
    glow__ftensor *f = bsearch(e->name, t, (size_t)n, sizeof *t, find_name);
    if (!f)
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: unexpected tensor '%.64s' (not part of "
                        "a model of this configuration)",
                        e->name);
    if (strcmp(e->dtype, "F32"))
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s' has dtype %.16s; model files "
                        "hold F32 only",
                        f->name, e->dtype);
    int same = e->ndim == f->ndim;
    for (int32_t d = 0; same && d < f->ndim; d++)
      same = e->shape[d] == (uint64_t)f->shape[d];
    if (!same) {
      char got[160], want[160];
      uint64_t fs[GLOW__ST_MAX_DIMS];
      for (int32_t d = 0; d < f->ndim; d++)
        fs[d] = (uint64_t)f->shape[d];
      shape_text(got, sizeof got, e->ndim, e->shape);
      shape_text(want, sizeof want, f->ndim, fs);
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s' has shape [%s], the "
                        "configuration gives [%s]",
                        f->name, got, want);
    }
    f->seen = 1; /* the container already refused duplicate names */
    which[i] = f;
  }
  for (int32_t i = 0; i < n; i++)
    if (!t[i].seen)
      return glow__fail(GLOW_ERR_FORMAT, "model file: tensor '%s' is missing",
                        t[i].name);
  return GLOW_OK;
}

/* A fixed buffer, read into v, checked against its kind, then stored. */
static int store_fixed(glow_model *m, const glow__ftensor *t, const float *v,
                       uint8_t *used) {
  glow__fixed *f = &m->reg.fixed[t->fixed];
  const int32_t c = f->count;
  if (f->kind == GLOW__FIXED_SIGN) {
    for (int32_t j = 0; j < c; j++) {
      if (v[j] != 1.0f && v[j] != -1.0f)
        return glow__fail(GLOW_ERR_FORMAT,
                          "model file: tensor '%s': entry %d = %g is not a "
                          "sign (+1 or -1)",
                          t->name, j, (double)v[j]);
      f->sign[j] = v[j];
    }
    return GLOW_OK;
  }
  memset(used, 0, (size_t)c);
  for (int32_t j = 0; j < c; j++) {
    if (!(v[j] >= 0.0f && v[j] < (float)c) || v[j] != floorf(v[j]))
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s': entry %d = %g is not a "
                        "channel index in [0, %d)",
                        t->name, j, (double)v[j], c);
    int32_t k = (int32_t)v[j];
    if (used[k])
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s' is not a permutation: "
                        "channel %d appears twice",
                        t->name, k);
    if (f->kind == GLOW__FIXED_REVERSAL && k != c - 1 - j)
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s' is not the channel reversal "
                        "that permutation 'reverse' means",
                        t->name);
    used[k] = 1;
    f->index[j] = k;
  }
  return GLOW_OK;
}

/* Copy every tensor's data into the model, in file order. */
static int read_data(const source *src, uint64_t data_off,
                     const glow__st_header *h, glow__ftensor **which,
                     glow_model *m) {
  uint8_t bytes[CHUNK];
  int32_t widest = 1; /* the longest fixed buffer */
  for (int32_t f = 0; f < m->reg.n_fixed; f++)
    if (m->reg.fixed[f].count > widest)
      widest = m->reg.fixed[f].count;
  float *vals = glow__malloc(sizeof *vals * (size_t)widest);
  uint8_t *used = glow__malloc((size_t)widest);
  int rc = vals && used ? GLOW_OK
                        : glow__fail(GLOW_ERR_NOMEM, "model file: out of "
                                                     "memory");
  for (int32_t i = 0; i < h->n_entries && !rc; i++) {
    const glow__ftensor *t = which[i];
    const uint64_t at = data_off + h->entries[i].begin;
    for (int64_t j = 0; j < t->count && !rc; j += CHUNK / 4) {
      int64_t k = t->count - j < CHUNK / 4 ? t->count - j : CHUNK / 4;
      rc = src_read(src, at + 4 * (uint64_t)j, bytes, (size_t)k * 4);
      if (!rc)
        glow__st_get_f32(bytes, t->param ? m->params + t->offset + j : vals + j,
                         (size_t)k);
    }
    if (!rc && !t->param)
      rc = store_fixed(m, t, vals, used);
  }
  glow__free(vals);
  glow__free(used);
  return rc;
}

static int load(const source *src, glow_model **out) {
  uint8_t head[8];
  if (src->size < 8)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: %" PRIu64 " bytes, too short for the "
                      "8-byte header length",
                      src->size);
  int rc = src_read(src, 0, head, 8);
  if (rc)
    return rc;
  const uint64_t n = glow__st_get_u64(head);
  if (n > GLOW__ST_MAX_HEADER)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: header length %" PRIu64
                      " is above the limit of %" PRIu64 " bytes",
                      n, GLOW__ST_MAX_HEADER);
  if (n > src->size - 8)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: header length %" PRIu64
                      " runs past the end of the %" PRIu64 "-byte input",
                      n, src->size);
  const uint64_t need = glow__st_header_bound(src->size - 8 - n);
  if (n > need) /* refused before a byte of it is parsed */
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: header length %" PRIu64 " is more than "
                      "the %" PRIu64 " bytes that a model with %" PRIu64
                      " bytes of data can need",
                      n, need, src->size - 8 - n);
  char *text = glow__malloc((size_t)n + 1);
  if (!text)
    return glow__fail(GLOW_ERR_NOMEM, "model file: out of memory");
  rc = src_read(src, 8, text, (size_t)n);
  text[n] = '\0';
  const uint64_t data_off = 8 + n, data_len = src->size - data_off;
  glow__st_header h;
  if (!rc)
    rc = glow__st_parse(text, n, data_len, &h);
  glow__free(text);
  if (rc)
    return rc;

  glow_config cfg;
  int initialized = 0;
  glow_model *m = NULL;
  glow__ftensor *t = NULL;
  glow__ftensor **which = NULL;
  int32_t nt = 0;
  rc = glow__meta_read(&h, &cfg, &initialized);
  /* The data must hold the parameters, so a model needing far more is a
   * forgery, refused before its buffers are allocated.  The bound is loose
   * so that a file merely missing a tensor is reported as such below. */
  if (!rc)
    rc = glow__model_new(&cfg, 2 * (int64_t)(data_len / 4) + 65536, &m);
  if (!rc)
    rc = glow__file_tensors(m, &t, &nt);
  if (!rc && !(which = glow__calloc((size_t)h.n_entries + 1, sizeof *which)))
    rc = glow__fail(GLOW_ERR_NOMEM, "model file: out of memory");
  if (!rc)
    rc = match(&h, t, nt, which);
  if (!rc)
    rc = read_data(src, data_off, &h, which, m);
  const int32_t bad = rc ? -1 : glow__nonfinite_tensor(m, m->params);
  if (bad >= 0) /* no model computes anything meaningful from these */
    rc = glow__fail(GLOW_ERR_FORMAT,
                    "model file: tensor '%s' holds a non-finite value",
                    m->reg.tensors[bad].name);
  glow__free(which);
  glow__free(t);
  glow__st_free(&h);
  if (rc) {
    glow__model_free(m);
    return rc;
  }
  m->initialized = initialized;
  *out = m;
  return GLOW_OK;
}

int glow__load_buffer(const void *data, size_t len, glow_model **out) {
  source src = {.mem = data, .fd = -1, .size = (uint64_t)len};
  return load(&src, out);
}

int glow__load_file(const char *path, glow_model **out) {
  char why[128];
  /* O_NONBLOCK: opening a FIFO must not hang; it is refused below. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return glow__fail(GLOW_ERR_IO, "glow_model_load: cannot open '%.200s': %s",
                      path, glow__os_error(errno, why, sizeof why));
  struct stat st;
  int rc = GLOW_OK;
  if (fstat(fd, &st) != 0)
    rc = glow__fail(GLOW_ERR_IO, "glow_model_load: cannot stat '%.200s': %s",
                    path, glow__os_error(errno, why, sizeof why));
  else if (S_ISDIR(st.st_mode))
    rc = glow__fail(GLOW_ERR_IO, "glow_model_load: '%.200s' is a directory",
                    path);
  else if (!S_ISREG(st.st_mode))
    rc = glow__fail(GLOW_ERR_IO,
                    "glow_model_load: '%.200s' is not a regular file", path);
  if (!rc) {
    source src = {.mem = NULL, .fd = fd, .size = (uint64_t)st.st_size};
    rc = load(&src, out);
  }
  close(fd);
  return rc;
}
