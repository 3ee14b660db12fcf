/*
 * classifier.c -- the class head of a conditional model: a linear
 * classifier on the spatial mean of the top latent, trained with
 * class_weight times its cross-entropy (openai/glow's ycond loss).  Not a
 * flow layer: it reads the top latent and adds to its gradient.
 */
#include <math.h>

#include "layer.h"

void glow__classifier_register(glow__classifier *cl, glow__registry *r,
                               const glow__shape *top, int32_t n_classes) {
  const int32_t first = r->n_tensors;
  cl->c = top->c;
  cl->hw = (int64_t)top->h * top->w;
  cl->n_classes = n_classes;
  cl->weight = glow__reg_tensor(r, "classifier", "weight", 2,
                                (const int32_t[]){top->c, n_classes});
  cl->bias = glow__reg_tensor(r, "classifier", "bias", 1,
                              (const int32_t[]){n_classes});
  cl->tensors = glow__reg_since(r, first);
}

void glow__classifier_logits(const glow__classifier *cl, const float *P,
                             const float *z, double *hbar, double *logits) {
  const int32_t c = cl->c, nc = cl->n_classes;
  const float *W = P + cl->weight, *b = P + cl->bias;
  for (int32_t k = 0; k < c; k++)
    hbar[k] = 0.0;
  for (int64_t q = 0; q < cl->hw; q++)
    for (int32_t k = 0; k < c; k++)
      hbar[k] += z[q * c + k];
  for (int32_t k = 0; k < c; k++)
    hbar[k] /= (double)cl->hw;
  for (int32_t j = 0; j < nc; j++) {
    double v = b[j];
    for (int32_t k = 0; k < c; k++)
      v += hbar[k] * W[(int64_t)k * nc + j];
    logits[j] = v;
  }
}

/* CE = logsumexp(logits) - logits[label], in double.  dL/dlogits =
 * w (softmax - onehot) with w = class_weight / (n_total ln 2); the mean
 * over positions spreads dL/dmean evenly. */
double glow__classifier_backward(const glow__classifier *cl, const float *P,
                                 float *G, const float *z,
                                 const int32_t *labels, int32_t n,
                                 int32_t n_total, float class_weight, float *g,
                                 double *scratch) {
  const int32_t c = cl->c, nc = cl->n_classes;
  const int64_t hw = cl->hw;
  const float *W = P + cl->weight;
  const double wt = (double)class_weight / ((double)n_total * GLOW__LN_2);
  double *hbar = scratch, *gh = scratch + c, *lg = scratch + 2 * c;
  double ce = 0.0;
  for (int32_t i = 0; i < n; i++) {
    glow__classifier_logits(cl, P, z + (int64_t)i * hw * c, hbar, lg);
    double top = -HUGE_VAL;
    for (int32_t j = 0; j < nc; j++)
      if (lg[j] > top)
        top = lg[j];
    double se = 0.0;
    for (int32_t j = 0; j < nc; j++)
      se += exp(lg[j] - top);
    ce += top + log(se) - lg[labels[i]];
    for (int32_t k = 0; k < c; k++)
      gh[k] = 0.0;
    for (int32_t j = 0; j < nc; j++) {
      double d = wt * (exp(lg[j] - top) / se - (j == labels[i]));
      G[cl->bias + j] += (float)d;
      for (int32_t k = 0; k < c; k++) {
        G[cl->weight + (int64_t)k * nc + j] += (float)(hbar[k] * d);
        gh[k] += d * W[(int64_t)k * nc + j];
      }
    }
    float *gi = g + (int64_t)i * hw * c;
    for (int64_t q = 0; q < hw; q++)
      for (int32_t k = 0; k < c; k++)
        gi[q * c + k] += (float)(gh[k] / (double)hw);
  }
  return ce / (double)n;
}
