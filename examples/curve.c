/*
 * curve.c -- log.csv as a picture: two panels of bits/dim, over steps and
 * over minutes, with axes, tick labels in a tiny built-in font, train as a
 * blue line and test as orange squares joined by a line.
 */
#include "curve.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "png_grid.h"

/* ---- the log ----------------------------------------------------------------
 */

typedef struct {
  double minutes, step, train, test; /* test: NAN where not evaluated */
} row;

/* Next comma-separated number of *s; NAN for an empty field. */
static double field(const char **s) {
  const char *p = *s, *comma = strchr(p, ','); /* strtod stops before it */
  char *end;
  double v = strtod(p, &end);
  if (end == p)
    v = NAN;
  *s = comma ? comma + 1 : p + strlen(p);
  return v;
}

/* The rows of `path`; a resumed run starts its seconds at 0 again, so its
 * rows continue from the last time before them. */
static row *read_log(const char *path, int *count) {
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  char line[512];
  row *rows = NULL;
  int n = 0, cap = 0;
  double offset = 0.0, last = 0.0;
  while (fgets(line, sizeof line, f)) {
    const char *s = line;
    double sec = field(&s), step = field(&s), train = field(&s);
    double test = field(&s);
    if (!isfinite(sec) || !isfinite(step)) /* the header */
      continue;
    if (sec + offset < last)
      offset = last;
    last = sec + offset;
    if (n == cap) {
      cap = cap ? 2 * cap : 256;
      row *bigger = realloc(rows, sizeof *rows * (size_t)cap);
      if (!bigger)
        break;
      rows = bigger;
    }
    rows[n++] = (row){last / 60.0, step, train, test};
  }
  fclose(f);
  *count = n;
  if (n == 0) {
    free(rows);
    return NULL;
  }
  return rows;
}

/* ---- drawing ----------------------------------------------------------------
 */

typedef struct {
  uint8_t *px;
  int w, h;
} canvas;

typedef struct {
  uint8_t r, g, b;
} color;

static const color black = {0, 0, 0}, grey = {225, 225, 225},
                   blue = {31, 119, 180}, orange = {255, 127, 14};

static void dot(canvas *c, int x, int y, color k) {
  if (x < 0 || y < 0 || x >= c->w || y >= c->h)
    return;
  uint8_t *p = c->px + 3 * ((size_t)y * c->w + x);
  p[0] = k.r, p[1] = k.g, p[2] = k.b;
}

static void box(canvas *c, int x, int y, int w, int h, color k) {
  for (int j = 0; j < h; j++)
    for (int i = 0; i < w; i++)
      dot(c, x + i, y + j, k);
}

/* Bresenham, two pixels thick. */
static void line(canvas *c, int x0, int y0, int x1, int y1, color k) {
  int dx = abs(x1 - x0), dy = -abs(y1 - y0);
  int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
  for (;;) {
    box(c, x0, y0, 2, 2, k);
    if (x0 == x1 && y0 == y1)
      return;
    int e2 = 2 * err;
    if (e2 >= dy)
      err += dy, x0 += sx;
    if (e2 <= dx)
      err += dx, y0 += sy;
  }
}

/* A 3x5 font, scaled 2x: each glyph is five rows of three bits. */
static const char glyph_chars[] = "0123456789.-+/abdeimnprstu";
static const uint8_t glyphs[][5] = {
    {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7},
    {5, 5, 7, 1, 1}, {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1},
    {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}, {0, 0, 0, 0, 2}, {0, 0, 7, 0, 0},
    {0, 2, 7, 2, 0}, {1, 1, 2, 4, 4}, {0, 3, 5, 5, 3}, {4, 6, 5, 5, 6},
    {1, 3, 5, 5, 3}, {0, 2, 7, 4, 3}, {2, 0, 2, 2, 2}, {0, 6, 7, 5, 5},
    {0, 6, 5, 5, 5}, {0, 6, 5, 6, 4}, {0, 5, 6, 4, 4}, {0, 3, 6, 3, 6},
    {2, 7, 2, 2, 3}, {0, 5, 5, 5, 3}};

enum { GLYPH_W = 8, GLYPH_H = 10 }; /* advance and height, in pixels */

static void text(canvas *c, int x, int y, const char *s, color k) {
  for (; *s; s++, x += GLYPH_W) {
    const char *at = strchr(glyph_chars, *s);
    if (!at) /* spaces and anything else: blank */
      continue;
    const uint8_t *g = glyphs[at - glyph_chars];
    for (int r = 0; r < 5; r++)
      for (int b = 0; b < 3; b++)
        if (g[r] >> (2 - b) & 1)
          box(c, x + 2 * b, y + 2 * r, 2, 2, k);
  }
}

/* ---- panels ----------------------------------------------------------------
 */

typedef struct {
  int x, y, w, h;        /* plot area on the canvas */
  double x0, x1, y0, y1; /* data range */
} panel;

static int px_x(const panel *p, double v) {
  return p->x + (int)lround((v - p->x0) / (p->x1 - p->x0) * (p->w - 1));
}

static int px_y(const panel *p, double v) {
  return p->y + p->h - 1 -
         (int)lround((v - p->y0) / (p->y1 - p->y0) * (p->h - 1));
}

/* A round tick spacing: 1, 2 or 5 times a power of ten, about 5 ticks. */
static double tick_step(double range) {
  double raw = range / 5.0, p = pow(10.0, floor(log10(raw)));
  return raw / p < 1.5   ? p
         : raw / p < 3.5 ? 2 * p
         : raw / p < 7.5 ? 5 * p
                         : 10 * p;
}

static void axes(canvas *c, const panel *p, const char *xname) {
  char label[32];
  double s = tick_step(p->x1 - p->x0);
  for (double v = ceil(p->x0 / s) * s; v <= p->x1 + 1e-9 * s; v += s) {
    box(c, px_x(p, v), p->y, 1, p->h, grey);
    snprintf(label, sizeof label, "%g", fabs(v) < 1e-9 * s ? 0.0 : v);
    text(c, px_x(p, v) - (int)strlen(label) * GLYPH_W / 2, p->y + p->h + 6,
         label, black);
  }
  s = tick_step(p->y1 - p->y0);
  for (double v = ceil(p->y0 / s) * s; v <= p->y1 + 1e-9 * s; v += s) {
    box(c, p->x, px_y(p, v), p->w, 1, grey);
    snprintf(label, sizeof label, "%g", v);
    text(c, p->x - 6 - (int)strlen(label) * GLYPH_W, px_y(p, v) - 4, label,
         black);
  }
  box(c, p->x, p->y + p->h - 1, p->w, 2, black);
  box(c, p->x - 1, p->y, 2, p->h, black);
  text(c, p->x + p->w / 2 - (int)strlen(xname) * GLYPH_W / 2, p->y + p->h + 22,
       xname, black);
  text(c, p->x - 40, p->y - 16, "bits/dim", black);
}

/* One series: a line through its points; squares on the test points. */
static void plot(canvas *c, const panel *p, const row *rows, int n,
                 int over_steps, int test, color k) {
  int have = 0, lx = 0, ly = 0;
  for (int i = 0; i < n; i++) {
    double v = test ? rows[i].test : rows[i].train;
    if (!isfinite(v))
      continue;
    int x = px_x(p, over_steps ? rows[i].step : rows[i].minutes);
    int y = px_y(p, v);
    if (have)
      line(c, lx, ly, x, y, k);
    if (test)
      box(c, x - 3, y - 3, 7, 7, k);
    have = 1, lx = x, ly = y;
  }
}

/* The range of bits/dim over both series, with a margin. */
static void value_range(const row *rows, int n, double *lo, double *hi) {
  *lo = INFINITY, *hi = -INFINITY;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < 2; k++) {
      double v = k ? rows[i].test : rows[i].train;
      if (isfinite(v))
        *lo = fmin(*lo, v), *hi = fmax(*hi, v);
    }
  if (!isfinite(*lo))
    *lo = 0, *hi = 1;
  double pad = fmax(0.05 * (*hi - *lo), 0.01);
  *lo -= pad, *hi += pad;
}

int curve_write(const char *csv, const char *png) {
  int n = 0;
  row *rows = read_log(csv, &n);
  if (!rows)
    return -1;
  enum { PW = 360, PH = 240, LEFT = 64, TOP = 44, GAP = 100 };
  canvas c = {NULL, 2 * PW + 2 * LEFT + GAP / 2 + 30, TOP + PH + 48};
  c.px = malloc((size_t)c.w * c.h * 3);
  if (!c.px) {
    free(rows);
    return -1;
  }
  memset(c.px, 255, (size_t)c.w * c.h * 3);
  double lo, hi;
  value_range(rows, n, &lo, &hi);
  double s0 = rows[0].step, s1 = rows[n - 1].step, m1 = rows[n - 1].minutes;
  panel steps = {LEFT, TOP, PW, PH, s0, s1 > s0 ? s1 : s0 + 1, lo, hi};
  panel mins = {2 * LEFT + PW + GAP / 2, TOP, PW, PH, 0,
                m1 > 0 ? m1 : 1,         lo,  hi};
  for (int k = 0; k < 2; k++) {
    const panel *p = k ? &mins : &steps;
    axes(&c, p, k ? "minutes" : "step");
    plot(&c, p, rows, n, !k, 0, blue);
    plot(&c, p, rows, n, !k, 1, orange);
  }
  box(&c, c.w - 150, 10, 16, 4, blue);
  text(&c, c.w - 128, 7, "train", black);
  box(&c, c.w - 76, 8, 7, 7, orange);
  text(&c, c.w - 62, 7, "test", black);
  int rc = png_write_canvas(png, c.px, c.w, c.h, 3);
  free(c.px);
  free(rows);
  return rc;
}
