/*
 * sample_threads -- samples from a fixed model, written to a file, and a
 * comparison of two such files.  sample_threads.sh runs it under different
 * BLAS thread counts.
 *
 *   sample_threads write FILE      write 32 samples (raw floats)
 *   sample_threads compare A B     exit 1 unless A and B agree to 1e-5
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glow.h"

enum { N = 32 };

static int write_samples(const char *path) {
  glow_config cfg;
  glow_config_init(&cfg);
  cfg.height = cfg.width = 16;
  cfg.channels = 3;
  cfg.levels = 2;
  cfg.depth = 3;
  cfg.hidden = 64;
  cfg.seed = 11;
  glow_model *m = NULL;
  if (glow_model_create(&cfg, &m))
    return 1;
  /* Move the zero-initialised layers so that every layer does work. */
  float *p = glow_params(m);
  for (int64_t i = 0; i < glow_param_count(m); i++)
    p[i] += 0.01f * (float)((i * 7919) % 13 - 6);
  const int64_t d = glow_model_dim(m);
  float *x = malloc(sizeof(float) * (size_t)(N * d));
  FILE *f = fopen(path, "wb");
  int rc = !x || !f || glow_sample(m, N, 0.8f, 5, NULL, x) ||
           fwrite(x, sizeof(float), (size_t)(N * d), f) != (size_t)(N * d);
  if (f)
    rc |= fclose(f) != 0;
  free(x);
  glow_model_free(m);
  return rc;
}

static float *read_all(const char *path, long *count) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  float *v = malloc((size_t)bytes);
  if (v && fread(v, 1, (size_t)bytes, f) != (size_t)bytes) {
    free(v);
    v = NULL;
  }
  fclose(f);
  *count = bytes / (long)sizeof(float);
  return v;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "write"))
    return write_samples(argv[2]);
  if (argc != 4 || strcmp(argv[1], "compare"))
    return 2;
  long na = 0, nb = 0;
  float *a = read_all(argv[2], &na), *b = read_all(argv[3], &nb);
  if (!a || !b || na != nb || na == 0)
    return 1;
  double worst = 0.0;
  int same = memcmp(a, b, sizeof(float) * (size_t)na) == 0;
  for (long i = 0; i < na; i++) {
    double d = fabs((double)a[i] - b[i]) / (1.0 + fabs((double)a[i]));
    if (!(d <= worst))
      worst = d; /* NaN-safe */
  }
  printf("%ld values, %s, largest relative difference %.3g\n", na,
         same ? "bit-identical" : "not bit-identical", worst);
  free(a);
  free(b);
  return worst <= 1e-5 ? 0 : 1;
}
