/*
 * quickstart -- the library's inference calls on a freshly created model:
 * sample images, encode them to latents, decode them back, score them.
 *
 *   quickstart [height width channels]     (default 28 28 1)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <glow.h>

#define CHECK(call)                                                            \
  do {                                                                         \
    int rc_ = (call);                                                          \
    if (rc_ != GLOW_OK) {                                                      \
      fprintf(stderr, "%s failed: %s (%s)\n", #call, glow_status_string(rc_),  \
              glow_last_error());                                              \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

int main(int argc, char **argv) {
  glow_config cfg;
  glow_config_init(&cfg); /* defaults, then the fields we care about */
  cfg.height = argc > 3 ? atoi(argv[1]) : 28;
  cfg.width = argc > 3 ? atoi(argv[2]) : 28;
  cfg.channels = argc > 3 ? atoi(argv[3]) : 1;
  cfg.levels = 2;
  cfg.depth = 8;
  cfg.hidden = 128;

  glow_model *m = NULL;
  CHECK(glow_model_create(&cfg, &m));
  const int32_t n = 16;
  const int64_t d = glow_model_dim(m);
  printf("libglow %s: %dx%dx%d images, %d levels x %d steps, %lld "
         "parameters\n",
         glow_version_string(), cfg.height, cfg.width, cfg.channels, cfg.levels,
         cfg.depth, (long long)glow_param_count(m));

  float *x = malloc(sizeof(float) * (size_t)(n * d));
  float *eps = malloc(sizeof(float) * (size_t)(n * d));
  float *back = malloc(sizeof(float) * (size_t)(n * d));
  float *logdet = malloc(sizeof(float) * (size_t)n);
  float *bpd = malloc(sizeof(float) * (size_t)n);
  if (!x || !eps || !back || !logdet || !bpd)
    return 1;

  CHECK(glow_sample(m, n, 0.7f, 2026, NULL, x));
  printf("sampled %d images at temperature 0.7\n", n);

  CHECK(glow_forward(m, x, NULL, n, eps, logdet));
  CHECK(glow_inverse(m, eps, NULL, n, back));
  double err = 0.0, sd = 0.0;
  for (int64_t i = 0; i < n * d; i++) {
    err = fmax(err, fabs((double)x[i] - back[i]));
    sd += (double)eps[i] * eps[i];
  }
  printf("encoded and decoded them: max round-trip error %.2e, latent std "
         "%.3f (0.7 expected), logdet of the first %.2f nats\n",
         err, sqrt(sd / (double)(n * d)), logdet[0]);

  CHECK(glow_bits_per_dim(m, x, NULL, n, bpd));
  printf("their bits/dim under the model: %.3f (first image)\n", bpd[0]);

  free(x);
  free(eps);
  free(back);
  free(logdet);
  free(bpd);
  glow_model_free(m);
  return err < 1e-3 ? 0 : 1;
}
