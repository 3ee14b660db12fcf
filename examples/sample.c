/*
 * sample -- pictures of samples from a trained model.
 *
 *   sample MODEL [OUT_DIR] [--columns N] [--seed S]
 *
 * Writes OUT_DIR/temperatures.png: one row per temperature 0, 0.25, 0.6,
 * 0.7, 0.8, 0.9, 1.0 (the Glow paper's figure 8); for a conditional model
 * the columns cycle through the classes.  A conditional model also gets
 * OUT_DIR/classes.png: one row per class at temperature 0.7 (figure 10).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glow.h>

#include "png_grid.h"

static void check(int rc, const char *what) {
  if (rc != GLOW_OK) {
    fprintf(stderr, "sample: %s: %s (%s)\n", what, glow_status_string(rc),
            glow_last_error());
    exit(1);
  }
}

/* rows x cols samples; row r at temperature temps[r] (or t0 when temps is
 * NULL) with labels from label_of(r, c). */
static void grid(glow_model *m, const glow_config *cfg, const char *path,
                 int rows, int cols, const float *temps, float t0, int by_row,
                 uint64_t seed) {
  const int64_t d = glow_model_dim(m);
  float *x = malloc(sizeof(float) * (size_t)(cols * d));
  uint8_t *px = malloc((size_t)(rows * cols * d));
  int32_t *labels = malloc(sizeof(int32_t) * (size_t)cols);
  if (!x || !px || !labels)
    exit(1);
  for (int r = 0; r < rows; r++) {
    for (int c = 0; c < cols; c++)
      labels[c] = cfg->n_classes ? (by_row ? r : c) % cfg->n_classes : 0;
    check(glow_sample(m, cols, temps ? temps[r] : t0, seed + (uint64_t)r,
                      cfg->n_classes ? labels : NULL, x),
          "sampling");
    check(glow_postprocess(m, x, cols, px + (size_t)r * cols * d),
          "postprocess");
  }
  if (png_write_grid(path, px, rows, cols, cfg->height, cfg->width,
                     cfg->channels, 2)) {
    fprintf(stderr, "sample: cannot write %s\n", path);
    exit(1);
  }
  printf("%s: %d x %d samples\n", path, rows, cols);
  free(x);
  free(px);
  free(labels);
}

int main(int argc, char **argv) {
  const char *model = NULL, *out = ".";
  int cols = 10;
  uint64_t seed = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--columns") && i + 1 < argc)
      cols = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
      seed = strtoull(argv[++i], NULL, 10);
    else if (!model)
      model = argv[i];
    else
      out = argv[i];
  }
  if (!model || cols < 1) {
    fprintf(stderr, "usage: sample MODEL [OUT_DIR] [--columns N] "
                    "[--seed S]\n");
    return 2;
  }
  glow_model *m = NULL;
  check(glow_model_load(model, &m), model);
  glow_config cfg;
  glow_config_init(&cfg);
  check(glow_model_config(m, &cfg), "config");
  if (cfg.channels != 1 && cfg.channels != 3) {
    fprintf(stderr, "sample: %d channels cannot be shown as PNG\n",
            cfg.channels);
    return 1;
  }
  static const float temps[] = {0.0f, 0.25f, 0.6f, 0.7f, 0.8f, 0.9f, 1.0f};
  char path[1024];
  snprintf(path, sizeof path, "%s/temperatures.png", out);
  grid(m, &cfg, path, 7, cols, temps, 0, 0, seed);
  if (cfg.n_classes > 0) {
    snprintf(path, sizeof path, "%s/classes.png", out);
    grid(m, &cfg, path, cfg.n_classes, cols, NULL, 0.7f, 1, seed + 100);
  }
  glow_model_free(m);
  return 0;
}
