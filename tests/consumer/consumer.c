/* A C program built against the installed libglow: create, sample, encode,
 * decode.  Exits non-zero on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <glow.h>

int main(void) {
  glow_config cfg;
  glow_config_init(&cfg);
  cfg.height = cfg.width = 8;
  cfg.channels = 1;
  cfg.levels = 2;
  cfg.depth = 2;
  cfg.hidden = 8;
  glow_model *m = NULL;
  if (glow_model_create(&cfg, &m) != GLOW_OK) {
    fprintf(stderr, "create: %s\n", glow_last_error());
    return 1;
  }
  int64_t d = glow_model_dim(m);
  float *x = malloc(sizeof(float) * (size_t)(2 * d));
  float *eps = malloc(sizeof(float) * (size_t)(2 * d));
  float *back = malloc(sizeof(float) * (size_t)(2 * d));
  int rc = glow_sample(m, 2, 0.7f, 1, NULL, x);
  if (!rc)
    rc = glow_forward(m, x, NULL, 2, eps, NULL);
  if (!rc)
    rc = glow_inverse(m, eps, NULL, 2, back);
  double err = 0.0;
  for (int64_t i = 0; !rc && i < 2 * d; i++)
    err = fmax(err, fabs(x[i] - back[i]));
  printf("libglow %s: round trip error %g\n", glow_version_string(), err);
  free(x);
  free(eps);
  free(back);
  glow_model_free(m);
  return rc || err > 1e-4 || glow_version_number() != GLOW_VERSION_NUMBER;
}
