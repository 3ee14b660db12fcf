/*
 * squeeze.c -- space-to-depth by 2x2 and back, the first layer of every
 * level.  Output channel index is c*4 + 2*dy + dx, the order of
 * openai/glow's squeeze2d.  A permutation of the values: no parameters,
 * log-determinant 0, and its gradient is the unsqueeze of dL/dy.
 */

#include "layer.h"

/* x: (n, h, w, c) -> y: (n, h/2, w/2, 4c). */
static void squeeze(const float *x, int32_t n, int32_t h, int32_t w, int32_t c,
                    float *y) {
  const int32_t h2 = h / 2, w2 = w / 2;
  for (int64_t i = 0; i < n; i++)
    for (int32_t yy = 0; yy < h2; yy++)
      for (int32_t xx = 0; xx < w2; xx++) {
        float *dst = y + ((i * h2 + yy) * w2 + xx) * 4 * c;
        for (int32_t dy = 0; dy < 2; dy++)
          for (int32_t dx = 0; dx < 2; dx++) {
            const float *src =
                x + ((i * h + 2 * yy + dy) * w + 2 * xx + dx) * c;
            for (int32_t k = 0; k < c; k++)
              dst[k * 4 + 2 * dy + dx] = src[k];
          }
      }
}

/* y: (n, h/2, w/2, 4c) -> x: (n, h, w, c); h, w, c are x's shape. */
static void unsqueeze(const float *y, int32_t n, int32_t h, int32_t w,
                      int32_t c, float *x) {
  const int32_t h2 = h / 2, w2 = w / 2;
  for (int64_t i = 0; i < n; i++)
    for (int32_t yy = 0; yy < h2; yy++)
      for (int32_t xx = 0; xx < w2; xx++) {
        const float *src = y + ((i * h2 + yy) * w2 + xx) * 4 * c;
        for (int32_t dy = 0; dy < 2; dy++)
          for (int32_t dx = 0; dx < 2; dx++) {
            float *dst = x + ((i * h + 2 * yy + dy) * w + 2 * xx + dx) * c;
            for (int32_t k = 0; k < c; k++)
              dst[k] = src[k * 4 + 2 * dy + dx];
          }
      }
}

static void build(glow__layer *ly, const glow_config *cfg, glow__registry *r) {
  (void)cfg;
  (void)r;
  ly->out = (glow__shape){ly->in.h / 2, ly->in.w / 2, 4 * ly->in.c};
}

static int forward(const glow__layer *ly, const glow__pass *p, const float *x,
                   float *y, float *keep, glow__handoff *left) {
  (void)keep;
  squeeze(x, p->n, ly->in.h, ly->in.w, ly->in.c, y);
  if (left)
    *left = (glow__handoff){x, y, NULL};
  return GLOW_OK;
}

static int inverse(const glow__layer *ly, const glow__pass *p, const float *y,
                   float *x) {
  unsqueeze(y, p->n, ly->in.h, ly->in.w, ly->in.c, x);
  return GLOW_OK;
}

static int backward(const glow__layer *ly, const glow__pass *p,
                    const glow__handoff *h, const float *gy, float *gx,
                    float *G) {
  (void)h;
  (void)G;
  unsqueeze(gy, p->n, ly->in.h, ly->in.w, ly->in.c, gx);
  return GLOW_OK;
}

const glow__layer_ops glow__squeeze_layer = {
    .name = "squeeze",
    .rearranges = 1,
    .build = build,
    .forward = forward,
    .inverse = inverse,
    .backward = backward,
};
