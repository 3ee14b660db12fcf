/*
 * png_grid.c -- PNG output through libpng.
 */
#include "png_grid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

int png_write_canvas(const char *path, const uint8_t *pixels, int w, int h,
                     int c) {
  if (c != 1 && c != 3)
    return -1;
  png_image image;
  memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = (png_uint_32)w;
  image.height = (png_uint_32)h;
  image.format = c == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  return png_image_write_to_file(&image, path, 0, pixels, 0, NULL) ? 0 : -1;
}

int png_write_grid(const char *path, const uint8_t *pixels, int rows, int cols,
                   int h, int w, int c, int pad) {
  if (c != 1 && c != 3)
    return -1;
  const int W = cols * w + (cols + 1) * pad, H = rows * h + (rows + 1) * pad;
  uint8_t *canvas = malloc((size_t)W * H * c);
  if (!canvas)
    return -1;
  memset(canvas, 255, (size_t)W * H * c);
  for (int r = 0; r < rows; r++)
    for (int k = 0; k < cols; k++) {
      const uint8_t *img = pixels + ((size_t)r * cols + k) * h * w * c;
      for (int y = 0; y < h; y++)
        memcpy(canvas + ((size_t)(pad + r * (h + pad) + y) * W + pad +
                         k * (w + pad)) *
                            c,
               img + (size_t)y * w * c, (size_t)w * c);
    }
  int rc = png_write_canvas(path, canvas, W, H, c);
  free(canvas);
  return rc;
}
