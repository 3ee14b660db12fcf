/*
 * idx.h -- reading the IDX files of MNIST and Fashion-MNIST, gzipped or not.
 */
#ifndef GLOW_EXAMPLE_IDX_H
#define GLOW_EXAMPLE_IDX_H

#include <stddef.h>
#include <stdint.h>

/* Images: n x h x w bytes; labels: n bytes (or NULL). */
typedef struct {
  int32_t n, h, w;
  uint8_t *pixels;
  uint8_t *labels;
} idx_set;

/* Read `images` and (optionally, may be NULL) `labels`.  Returns 0 or -1
 * with a message in err. */
int idx_load(const char *images, const char *labels, idx_set *out, char *err,
             size_t err_len);
void idx_free(idx_set *s);

#endif
