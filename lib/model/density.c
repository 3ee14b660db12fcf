/*
 * density.c -- the log-density of an image from its latent and its
 * log-determinant: what glow_log_prob, glow_bits_per_dim and the training
 * loss all report.
 */
#include "model.h"

double glow__log_prob(const float *eps, int64_t dim, double logdet) {
  double sq = 0.0;
  for (int64_t j = 0; j < dim; j++)
    sq += (double)eps[j] * eps[j];
  return -0.5 * sq - 0.5 * GLOW__LOG_2PI * (double)dim + logdet;
}
