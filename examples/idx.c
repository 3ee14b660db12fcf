/*
 * idx.c -- IDX reader (http://yann.lecun.com/exdb/mnist/ format): a
 * big-endian header of magic, dimension sizes, then unsigned bytes.  zlib's
 * gzread reads gzipped and plain files alike.
 */
#include "idx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

static int read_u32(gzFile f, uint32_t *v) {
  unsigned char b[4];
  if (gzread(f, b, 4) != 4)
    return -1;
  *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
  return 0;
}

/* Read an IDX file of unsigned bytes with `ndim` dimensions. */
static uint8_t *read_idx(const char *path, uint32_t ndim, uint32_t *dims,
                         char *err, size_t err_len) {
  gzFile f = gzopen(path, "rb");
  if (!f) {
    snprintf(err, err_len, "cannot open %s", path);
    return NULL;
  }
  uint32_t magic = 0;
  uint8_t *data = NULL;
  size_t total = 1;
  if (read_u32(f, &magic) || magic != (0x0800u | ndim)) {
    snprintf(err, err_len, "%s: not an IDX file of %u-d bytes", path, ndim);
    goto done;
  }
  for (uint32_t i = 0; i < ndim; i++) {
    if (read_u32(f, &dims[i]) || dims[i] == 0 || dims[i] > (1u << 24)) {
      snprintf(err, err_len, "%s: bad dimension %u", path, i);
      goto done;
    }
    total *= dims[i];
  }
  data = malloc(total);
  if (!data || gzread(f, data, (unsigned)total) != (int)total) {
    snprintf(err, err_len, "%s: truncated", path);
    free(data);
    data = NULL;
  }
done:
  gzclose(f);
  return data;
}

int idx_load(const char *images, const char *labels, idx_set *out, char *err,
             size_t err_len) {
  memset(out, 0, sizeof *out);
  uint32_t d[3], dl[1];
  out->pixels = read_idx(images, 3, d, err, err_len);
  if (!out->pixels)
    return -1;
  out->n = (int32_t)d[0];
  out->h = (int32_t)d[1];
  out->w = (int32_t)d[2];
  if (labels) {
    out->labels = read_idx(labels, 1, dl, err, err_len);
    if (!out->labels || dl[0] != d[0]) {
      if (out->labels)
        snprintf(err, err_len, "%s: %u labels for %u images", labels, dl[0],
                 d[0]);
      idx_free(out);
      return -1;
    }
  }
  return 0;
}

void idx_free(idx_set *s) {
  free(s->pixels);
  free(s->labels);
  memset(s, 0, sizeof *s);
}
