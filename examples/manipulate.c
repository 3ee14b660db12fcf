/*
 * manipulate -- latent manipulation with a trained model (the Glow paper's
 * figure 6): encode images, find an attribute direction from labels, move
 * images along it, and interpolate between two images.
 *
 *   manipulate MODEL [OUT_DIR] [--with CLASS] [--without CLASS]
 *              [--data DIR] [--count N]
 *
 * CLASS is a Fashion-MNIST class name (tshirt trouser pullover dress coat
 * sandal shirt sneaker bag boot) or number.  The direction is the mean
 * latent of the --with class (default sneaker) minus that of the --without
 * class (default boot), over N test images of each (default 500).
 * Writes OUT_DIR/manipulate.png: one row per image of the --without class,
 * moved by -1 .. +1 times the direction, the original in the middle; and
 * OUT_DIR/interpolate.png: spherical interpolation between two images.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glow.h>

#include "idx.h"
#include "png_grid.h"

static const char *const class_names[] = {
    "tshirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt",   "sneaker",  "bag",   "boot"};

static void check(int rc, const char *what) {
  if (rc != GLOW_OK) {
    fprintf(stderr, "manipulate: %s: %s (%s)\n", what, glow_status_string(rc),
            glow_last_error());
    exit(1);
  }
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    exit(1);
  return p;
}

static int parse_class(const char *s) {
  for (int i = 0; i < 10; i++)
    if (!strcmp(s, class_names[i]))
      return i;
  char *end;
  long v = strtol(s, &end, 10);
  return *end == 0 && v >= 0 && v < 10 ? (int)v : -1;
}

typedef struct {
  glow_model *m;
  glow_config cfg;
  int64_t d;
  idx_set data;
} context;

/* Encode up to `count` test images of class k into eps (count x D);
 * returns how many; their indices go to idx. */
static int32_t encode_class(context *c, int k, int32_t count, float *eps,
                            int32_t *idx) {
  int32_t n = 0;
  for (int32_t i = 0; i < c->data.n && n < count; i++)
    if (c->data.labels[i] == k)
      idx[n++] = i;
  uint8_t *px = xmalloc((size_t)(n * c->d));
  float *x = xmalloc(sizeof(float) * (size_t)(n * c->d));
  int32_t *lab = xmalloc(sizeof(int32_t) * (size_t)(n ? n : 1));
  for (int32_t i = 0; i < n; i++) {
    memcpy(px + i * c->d, c->data.pixels + (size_t)idx[i] * c->d, (size_t)c->d);
    lab[i] = k;
  }
  if (n > 0) {
    check(glow_preprocess(c->m, px, n, 7, x), "preprocess");
    check(glow_forward(c->m, x, c->cfg.n_classes ? lab : NULL, n, eps, NULL),
          "encoding");
  }
  free(px);
  free(x);
  free(lab);
  return n;
}

/* Decode n latents (with label k for conditional models) into pixels.
 * Far from the data (a long move along a direction) the inverse of a
 * trained flow can overflow; such an image becomes a grey tile instead of
 * failing the whole picture. */
static int failed_tiles = 0;

static void decode(context *c, const float *eps, int32_t n, int k,
                   uint8_t *px) {
  float *x = xmalloc(sizeof(float) * (size_t)(n * c->d));
  int32_t *lab = xmalloc(sizeof(int32_t) * (size_t)n);
  const int32_t *labels = c->cfg.n_classes ? lab : NULL;
  for (int32_t i = 0; i < n; i++)
    lab[i] = k;
  int rc = glow_inverse(c->m, eps, labels, n, x);
  if (rc == GLOW_ERR_NUMERIC) {
    for (int32_t i = 0; i < n; i++) { /* one by one, to find the culprits */
      float *xi = x + (size_t)i * c->d;
      if (glow_inverse(c->m, eps + (size_t)i * c->d, labels, 1, xi)) {
        for (int64_t j = 0; j < c->d; j++)
          xi[j] = 0.0f; /* mid-grey */
        failed_tiles++;
      }
    }
    rc = GLOW_OK;
  }
  check(rc, "decoding");
  check(glow_postprocess(c->m, x, n, px), "postprocess");
  free(x);
  free(lab);
}

static void write_png(context *c, const char *dir, const char *name,
                      const uint8_t *px, int rows, int cols) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (png_write_grid(path, px, rows, cols, c->cfg.height, c->cfg.width,
                     c->cfg.channels, 2)) {
    fprintf(stderr, "manipulate: cannot write %s\n", path);
    exit(1);
  }
  printf("%s\n", path);
}

int main(int argc, char **argv) {
  const char *model = NULL, *out = ".";
  const char *data = "/usr/share/datasets/fashion-mnist";
  int with = 7, without = 9; /* sneaker, ankle boot */
  int32_t count = 500;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--with"))
      with = parse_class(v), i++;
    else if (!strcmp(a, "--without"))
      without = parse_class(v), i++;
    else if (!strcmp(a, "--data"))
      data = v, i++;
    else if (!strcmp(a, "--count"))
      count = atoi(v), i++;
    else if (!model)
      model = a;
    else
      out = a;
  }
  if (!model || with < 0 || without < 0 || with == without || count < 1) {
    fprintf(stderr, "usage: manipulate MODEL [OUT_DIR] [--with CLASS] "
                    "[--without CLASS] [--data DIR] [--count N]\n");
    return 2;
  }
  context c;
  check(glow_model_load(model, &c.m), model);
  glow_config_init(&c.cfg);
  check(glow_model_config(c.m, &c.cfg), "config");
  c.d = glow_model_dim(c.m);
  char img[1024], lab[1024], err[256];
  snprintf(img, sizeof img, "%s/t10k-images-idx3-ubyte.gz", data);
  snprintf(lab, sizeof lab, "%s/t10k-labels-idx1-ubyte.gz", data);
  if (idx_load(img, lab, &c.data, err, sizeof err) ||
      (int64_t)c.data.h * c.data.w != c.d) {
    fprintf(stderr, "manipulate: %s\n",
            *err ? err : "the data does not match the model's image size");
    return 1;
  }

  /* The attribute direction: mean latent with minus mean latent without. */
  float *e1 = xmalloc(sizeof(float) * (size_t)(count * c.d));
  float *e0 = xmalloc(sizeof(float) * (size_t)(count * c.d));
  int32_t *i1 = xmalloc(sizeof(int32_t) * (size_t)count);
  int32_t *i0 = xmalloc(sizeof(int32_t) * (size_t)count);
  int32_t n1 = encode_class(&c, with, count, e1, i1);
  int32_t n0 = encode_class(&c, without, count, e0, i0);
  float *dir = xmalloc(sizeof(float) * (size_t)c.d);
  check(glow_latent_direction(e1, n1, e0, n0, c.d, dir), "direction");
  printf("direction %s - %s from %d and %d test images\n", class_names[with],
         class_names[without], n1, n0);

  /* Rows: images of the `without` class moved along the direction. */
  enum { ROWS = 6, COLS = 9 };
  float *row = xmalloc(sizeof(float) * (size_t)(COLS * c.d));
  uint8_t *px = xmalloc((size_t)(ROWS * COLS * c.d));
  for (int r = 0; r < ROWS && r < n0; r++)
    for (int k = 0; k < COLS; k++) {
      float scale = (float)(k - COLS / 2) / (COLS / 2); /* -1 .. 1 */
      check(glow_latent_shift(e0 + (size_t)r * c.d, dir, 1, c.d, scale,
                              row + (size_t)k * c.d),
            "shift");
      if (k == COLS - 1)
        decode(&c, row, COLS, without, px + (size_t)r * COLS * c.d);
    }
  write_png(&c, out, "manipulate.png", px, ROWS < n0 ? ROWS : n0, COLS);

  /* Interpolation between the first image of each class. */
  for (int k = 0; k < COLS; k++)
    check(glow_latent_slerp(e0, e1, c.d, (float)k / (COLS - 1),
                            row + (size_t)k * c.d),
          "slerp");
  decode(&c, row, COLS, without, px);
  write_png(&c, out, "interpolate.png", px, 1, COLS);

  if (failed_tiles)
    printf("%d images could not be decoded (out of float range): grey "
           "tiles\n",
           failed_tiles);
  free(e1);
  free(e0);
  free(i1);
  free(i0);
  free(dir);
  free(row);
  free(px);
  idx_free(&c.data);
  glow_model_free(c.m);
  return 0;
}
