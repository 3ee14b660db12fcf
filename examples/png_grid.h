/*
 * png_grid.h -- write 8-bit images, or a grid of them, as PNG (libpng).
 */
#ifndef GLOW_EXAMPLE_PNG_GRID_H
#define GLOW_EXAMPLE_PNG_GRID_H

#include <stdint.h>

/* One h x w image of c channels (1 grey, 3 RGB), row-major.  0 or -1. */
int png_write_canvas(const char *path, const uint8_t *pixels, int w, int h,
                     int c);

/* rows x cols images of h x w x c (c = 1 grey or 3 RGB), row-major in
 * `pixels`, with a `pad`-pixel white border between them.  Returns 0 or -1. */
int png_write_grid(const char *path, const uint8_t *pixels, int rows, int cols,
                   int h, int w, int c, int pad);

#endif
