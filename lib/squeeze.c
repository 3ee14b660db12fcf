/*
 * squeeze.c -- space-to-depth by 2x2 and back.  Output channel index is
 * c*4 + 2*dy + dx, the order of openai/glow's squeeze2d.
 */

#include "glow_internal.h"

/* x: (n, h, w, c) -> y: (n, h/2, w/2, 4c). */
void glow__squeeze(const float *x, int32_t n, int32_t h, int32_t w,
                   int32_t c, float *y) {
  const int32_t h2 = h / 2, w2 = w / 2;
  for (int64_t i = 0; i < n; i++)
    for (int32_t yy = 0; yy < h2; yy++)
      for (int32_t xx = 0; xx < w2; xx++) {
        float *dst = y + ((i * h2 + yy) * w2 + xx) * 4 * c;
        for (int32_t dy = 0; dy < 2; dy++)
          for (int32_t dx = 0; dx < 2; dx++) {
            const float *src = x + ((i * h + 2 * yy + dy) * w + 2 * xx + dx) * c;
            for (int32_t k = 0; k < c; k++)
              dst[k * 4 + 2 * dy + dx] = src[k];
          }
      }
}

/* y: (n, h/2, w/2, 4c) -> x: (n, h, w, c); h, w, c are x's shape. */
void glow__unsqueeze(const float *y, int32_t n, int32_t h, int32_t w,
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
