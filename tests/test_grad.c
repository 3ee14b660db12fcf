/*
 * test_grad.c -- training: data-dependent init, the backward pass against
 * finite differences, its two memory modes, its error paths, and a short
 * learning run.
 */
#include <stdio.h>

#include "model.h"
#include "testutil.h"

#define LN2 0.69314718055994530942
#define LOG_2PI 1.8378770664093454836

static const int32_t couplings[] = {GLOW_COUPLING_AFFINE,
                                    GLOW_COUPLING_ADDITIVE};
static const int32_t perms[] = {GLOW_PERMUTE_CONV1X1, GLOW_PERMUTE_CONV1X1_LU,
                                GLOW_PERMUTE_REVERSE, GLOW_PERMUTE_SHUFFLE};

/* The tensor `name`, and its offset in glow_params(). */
static const glow__tensor *tensor_named(const glow_model *m, const char *name) {
  int32_t i = -1;
  if (glow_tensor_find(m, name, &i) != GLOW_OK)
    fail_msg("no tensor '%s'", name);
  return &m->reg.tensors[i];
}

static int64_t tensor_offset(const glow_model *m, const char *name) {
  return tensor_named(m, name)->offset;
}

/* ---- An independent loss, in double --------------------------------------
 * The flow's forward (the spec, tested elsewhere) gives eps and the
 * per-image log-determinant in double; the rest of the loss is written out
 * here from the header's definition, not through the library's backward
 * code. */
static double loss64(glow_model *m, const float *x, const int32_t *labels,
                     int32_t n) {
  const int64_t d = m->dim;
  const glow__mode plain = {0};
  glow__ws ws;
  float *eps = malloc(sizeof(float) * (size_t)(n * d));
  assert_int_equal(glow__ws_alloc(m, n, &ws), GLOW_OK);
  assert_int_equal(glow__flow_forward(m, &ws, &plain, x, labels, eps), GLOW_OK);
  double bpd = 0.0;
  for (int32_t i = 0; i < n; i++) {
    double sq = 0.0;
    for (int64_t j = 0; j < d; j++)
      sq += (double)eps[i * d + j] * eps[i * d + j];
    double lp = -0.5 * sq - 0.5 * LOG_2PI * (double)d + ws.ld[i];
    bpd += (-lp + (double)d * m->cfg.n_bits * LN2) / ((double)d * LN2);
  }
  double loss = bpd / n;
  const int32_t nc = m->cfg.n_classes;
  if (nc > 0) { /* the classifier on the spatial mean of the top latent */
    const glow__shape *top = &glow__model_top(m)->in;
    const int32_t c = top->c;
    const int64_t hw = (int64_t)top->h * top->w;
    const float *W = m->params + tensor_offset(m, "classifier.weight");
    const float *b = m->params + tensor_offset(m, "classifier.bias");
    double ce = 0.0;
    for (int32_t i = 0; i < n; i++) {
      double lse = 0.0, mx = -1e300, own = 0.0;
      double *lg = malloc(sizeof(double) * (size_t)nc);
      for (int32_t j = 0; j < nc; j++) {
        double v = b[j];
        for (int32_t k = 0; k < c; k++) {
          double mean = 0.0;
          for (int64_t p = 0; p < hw; p++)
            mean += ws.top[((int64_t)i * hw + p) * c + k];
          v += mean / (double)hw * W[k * nc + j];
        }
        lg[j] = v;
        mx = v > mx ? v : mx;
      }
      for (int32_t j = 0; j < nc; j++)
        lse += exp(lg[j] - mx);
      own = lg[labels[i]];
      ce += mx + log(lse) - own;
      free(lg);
    }
    loss += m->cfg.class_weight * ce / n / LN2;
  }
  glow__ws_free(&ws);
  free(eps);
  return loss;
}

/* A tiny model with every parameter moved off its initial value (so that
 * zero-initialised layers do real work), initialised from data, then moved
 * again so that no actnorm sits exactly at its data-init point. */
static glow_model *tiny_model(glow_config cfg, const float *x,
                              const int32_t *labels, int32_t n, uint64_t seed) {
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, seed);
  assert_int_equal(glow_data_init(m, x, labels, n), GLOW_OK);
  tu_perturb(m, 0.02, seed + 1);
  return m;
}

/* The gradient of one call, on zeroed grads. */
static void gradient(glow_model *m, const float *x, const int32_t *labels,
                     int32_t n, float *g, float *loss) {
  assert_int_equal(glow_zero_grad(m), GLOW_OK);
  int rc = glow_backward(m, x, labels, n, loss);
  if (rc)
    fail_msg("glow_backward: %s", glow_last_error());
  memcpy(g, glow_grads(m), sizeof(float) * (size_t)glow_param_count(m));
}

/* ---- Walking the data path ------------------------------------------------
 * glow__flow_forward's path, layer by layer through the layer interface,
 * with every coupling network evaluated again here from the kernels and
 * the tensor table so that a test can see inside it: visit() receives
 * every actnorm's output, before the ReLU that follows it inside a network
 * (relu = 1). */
typedef void (*visit_fn)(void *ctx, const float *v, int64_t rows, int32_t c,
                         int relu, const char *what, int32_t l, int32_t k);

/* The offset of tensor <ly's prefix>.coupling.<suffix>. */
static int64_t coupling_tensor(const glow_model *m, const glow__layer *ly,
                               const char *suffix) {
  char name[GLOW__NAME_MAX + 32];
  snprintf(name, sizeof name, "%s.coupling.%s", ly->prefix, suffix);
  return tensor_offset(m, name);
}

/* The network of the coupling ly up to its second actnorm, on x. */
static void visit_network(glow_model *m, const glow__layer *ly, const float *x,
                          glow__ws *ws, visit_fn visit, void *ctx) {
  const float *P = m->params;
  const int32_t n = ws->n, c = ly->in.c, hid = m->cfg.hidden;
  const int64_t rows = glow__rows(&ly->in, n);
  float *a = malloc(sizeof(float) * (size_t)(rows * hid));
  float *b = malloc(sizeof(float) * (size_t)(rows * hid));
  glow__conv3x3(x, c, n, ly->in.h, ly->in.w, c / 2,
                P + coupling_tensor(m, ly, "conv1.weight"), hid, a, &ws->s.conv,
                NULL);
  const glow__an an1 = {hid, coupling_tensor(m, ly, "actnorm1.bias"),
                        coupling_tensor(m, ly, "actnorm1.logs")};
  glow__an_forward(&an1, P, NULL, a, a, rows, 0, &ws->s);
  visit(ctx, a, rows, hid, 1, "coupling actnorm1", ly->level, ly->step);
  for (int64_t i = 0; i < rows * hid; i++)
    a[i] = a[i] > 0.0f ? a[i] : 0.0f;
  glow__matmul(a, hid, rows, hid, P + coupling_tensor(m, ly, "conv2.weight"),
               hid, b, &ws->s.conv, NULL);
  const glow__an an2 = {hid, coupling_tensor(m, ly, "actnorm2.bias"),
                        coupling_tensor(m, ly, "actnorm2.logs")};
  glow__an_forward(&an2, P, NULL, b, b, rows, 0, &ws->s);
  visit(ctx, b, rows, hid, 1, "coupling actnorm2", ly->level, ly->step);
  free(a);
  free(b);
}

static void walk(glow_model *m, const float *x, int32_t n, visit_fn visit,
                 void *ctx) {
  float *eps = malloc(sizeof(float) * (size_t)(n * m->dim));
  glow__ws ws;
  assert_int_equal(glow__ws_alloc(m, n, &ws), GLOW_OK);
  glow__logdet ld = {0.0, ws.ld};
  glow__pass p = {.P = m->params,
                  .n = n,
                  .eps = eps,
                  .dim = m->dim,
                  .scale = 1.0f,
                  .ld = &ld,
                  .s = &ws.s,
                  .n_total = n};
  const float *in = x;
  for (int32_t i = 0; i < m->n_layers; i++) {
    const glow__layer *ly = &m->layers[i];
    if (ly->out.c == 0)
      break; /* the top prior: nothing inside to see */
    float *out = in == ws.tensor[0] ? ws.tensor[1] : ws.tensor[0];
    if (ly->ops == &glow__coupling_layer)
      visit_network(m, ly, in, &ws, visit, ctx);
    assert_int_equal(ly->ops->forward(ly, &p, in, out, ws.s.act, NULL),
                     GLOW_OK);
    if (ly->ops == &glow__actnorm_layer)
      visit(ctx, out, glow__rows(&ly->out, n), ly->out.c, 0, "actnorm",
            ly->level, ly->step);
    in = out;
  }
  glow__ws_free(&ws);
  free(eps);
}

/* FNV-1a over the on/off state of every ReLU in the coupling networks. */
static void relu_hash(void *ctx, const float *v, int64_t rows, int32_t c,
                      int relu, const char *what, int32_t l, int32_t k) {
  (void)what, (void)l, (void)k;
  uint64_t *hash = ctx;
  for (int64_t i = 0; relu && i < rows * c; i++)
    *hash = (*hash ^ (uint64_t)(v[i] > 0.0f)) * 0x100000001b3ULL;
}

static uint64_t relu_pattern(glow_model *m, const float *x, int32_t n) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  walk(m, x, n, relu_hash, &hash);
  return hash;
}

/* ---- Convolution kernels against a direct sum -------------------------------
 * Both paths of each kernel -- the patch matrix, and the narrow-output
 * taps (cout < cin) -- against the definition in double: the forward, its
 * input gradient (the adjoint) and its weight gradient (added to what gw
 * holds), with input rows of a stride wider than cin, chunks of one image
 * and of the whole batch. */
static double conv_ref(const float *x, int64_t ldx, int32_t i, int32_t h,
                       int32_t w, int32_t py, int32_t px, int32_t cin,
                       const float *wt, int32_t cout, int32_t co) {
  double acc = 0.0;
  for (int32_t ky = 0; ky < 3; ky++)
    for (int32_t kx = 0; kx < 3; kx++) {
      int32_t sy = py + ky - 1, sx = px + kx - 1;
      if (sy < 0 || sy >= h || sx < 0 || sx >= w)
        continue;
      const float *xv = x + (((int64_t)i * h + sy) * w + sx) * ldx;
      for (int32_t ci = 0; ci < cin; ci++)
        acc += (double)xv[ci] * wt[((ky * 3 + kx) * cin + ci) * cout + co];
    }
  return acc;
}

static void test_conv_kernels(void **state) {
  (void)state;
  const int32_t n = 3, h = 5, w = 4;
  const int32_t shapes[][2] = {{6, 2}, {2, 6}, {3, 3}, {7, 1}};
  uint64_t s = 99;
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    const int32_t cin = shapes[k][0], cout = shapes[k][1];
    const int64_t ldx = cin + 2, rows = (int64_t)n * h * w;
    const int64_t per =
        glow__conv3x3_col_per_image(h, w, cin > cout ? cin : cout);
    const int64_t nw = 9 * (int64_t)cin * cout;
    float *x = malloc(sizeof(float) * (size_t)(rows * ldx));
    float *wt = malloc(sizeof(float) * (size_t)nw);
    float *gy = malloc(sizeof(float) * (size_t)(rows * cout));
    float *y = malloc(sizeof(float) * (size_t)(rows * cout));
    float *gx = malloc(sizeof(float) * (size_t)(rows * cin));
    float *gw = malloc(sizeof(float) * (size_t)nw);
    float *gw0 = malloc(sizeof(float) * (size_t)nw);
    float *wflip = malloc(sizeof(float) * (size_t)nw);
    double *rgx = calloc((size_t)(rows * cin), sizeof(double));
    double *rgw = calloc((size_t)nw, sizeof(double));
    for (int64_t i = 0; i < rows * ldx; i++)
      x[i] = (float)tu_normal(&s);
    for (int64_t i = 0; i < nw; i++) {
      wt[i] = (float)tu_normal(&s);
      gw0[i] = (float)tu_normal(&s);
    }
    for (int64_t i = 0; i < rows * cout; i++)
      gy[i] = (float)tu_normal(&s);
    /* The adjoint and the weight gradient, straight from the definition:
     * y[p][co] reads x[p + off_t][ci] through W[t][ci][co]. */
    for (int32_t i = 0; i < n; i++)
      for (int32_t py = 0; py < h; py++)
        for (int32_t px = 0; px < w; px++)
          for (int32_t t = 0; t < 9; t++) {
            int32_t sy = py + t / 3 - 1, sx = px + t % 3 - 1;
            if (sy < 0 || sy >= h || sx < 0 || sx >= w)
              continue;
            const int64_t p = ((int64_t)i * h + py) * w + px;
            const int64_t q = ((int64_t)i * h + sy) * w + sx;
            for (int32_t ci = 0; ci < cin; ci++)
              for (int32_t co = 0; co < cout; co++) {
                const int64_t wi = ((int64_t)t * cin + ci) * cout + co;
                rgx[q * cin + ci] += (double)gy[p * cout + co] * wt[wi];
                rgw[wi] += (double)x[q * ldx + ci] * gy[p * cout + co];
              }
          }
    /* Chunked or not, through the CBLAS and (where the CPU has it) the
     * own GEMM kernel. */
    for (int variant = 0; variant < 4; variant++) {
      const int chunked = variant & 1, own = variant >> 1;
      if (own && !glow__gemm_own_available())
        continue;
      glow__conv_scratch col = {0}; /* no team */
      col.cap = chunked ? per : n * per;
      col.patches = malloc(sizeof(float) * (size_t)col.cap);
      col.weight = malloc(sizeof(float) * (size_t)nw);
      col.pack = own ? malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK) : NULL;
      glow__conv3x3(x, ldx, n, h, w, cin, wt, cout, y, &col, NULL);
      glow__conv3x3_grad_input(gy, n, h, w, cin, wt, cout, gx, wflip, &col);
      memcpy(gw, gw0, sizeof(float) * (size_t)nw);
      glow__conv3x3_grad_weight(x, ldx, n, h, w, cin, gy, cout, gw, &col);
      double ey = 0.0, egx = 0.0, egw = 0.0;
      for (int32_t i = 0; i < n; i++)
        for (int32_t py = 0; py < h; py++)
          for (int32_t px = 0; px < w; px++)
            for (int32_t co = 0; co < cout; co++) {
              const int64_t p = ((int64_t)i * h + py) * w + px;
              double r = conv_ref(x, ldx, i, h, w, py, px, cin, wt, cout, co);
              ey = fmax(ey, fabs(y[p * cout + co] - r));
            }
      for (int64_t i = 0; i < rows * cin; i++)
        egx = fmax(egx, fabs(gx[i] - rgx[i]));
      for (int64_t i = 0; i < nw; i++)
        egw = fmax(egw, fabs(gw[i] - (gw0[i] + rgw[i])));
      /* Sums of at most 9 cin (or 9 cout, or n h w) unit-variance
       * products, in float. */
      if (!(ey < 1e-4 && egx < 1e-4 && egw < 1e-3))
        fail_msg("conv %d -> %d (%s, %s): errors %g (y), %g (dx), %g (dW)", cin,
                 cout, chunked ? "one image per chunk" : "one chunk",
                 own ? "own GEMM" : "CBLAS", ey, egx, egw);
      free(col.patches);
      free(col.weight);
      free(col.pack);
    }
    free(x);
    free(wt);
    free(gy);
    free(y);
    free(gx);
    free(gw);
    free(gw0);
    free(wflip);
    free(rgx);
    free(rgw);
  }
}

/* ---- Gradients against finite differences ---------------------------------
 *
 * The loss is smooth except where a ReLU input in a coupling network
 * crosses zero; tiny networks have few units, each carrying a large share of
 * the gradient, so a difference step across such a kink is off by tens of
 * percent.  Hence, for every parameter tensor with analytic gradient g_t,
 * along unit directions v:
 *   - central differences of the loss in double (loss64), Richardson-
 *     extrapolated over h and h/2 (error O(h^4)), h = 1e-3;
 *   - compared with g_t . (the step actually taken), the float-rounded
 *     parameters minus the originals, so parameter rounding is no error;
 *   - only if no ReLU changes state between theta - h v and theta + h v
 *     (relu_pattern); otherwise h shrinks by 4 (up to three times).
 * Directions: v = g_t / |g_t|, where a factor of two is off by 0.5 |g_t|, a
 * wrong sign by 2 |g_t| and a missing term by its projection on g_t; and two
 * random Gaussian v, which also see terms that g_t lacks altogether.
 * Tolerance: GRAD_TOL |g_t| + FD_NOISE / h, the second part covering the
 * float rounding of the forward (the loss is accurate to ~2e-8; the
 * extrapolated difference amplifies that by 3 / h).  The check is shown to
 * be able to fail: the doubled and the negated gradient fail it, on every
 * tensor. */
#define FD_STEP 1e-3
#define GRAD_TOL 0.02
#define FD_NOISE 6e-8

typedef struct {
  double fd;  /* finite-difference directional derivative */
  double an;  /* the analytic one along the same steps */
  double tol; /* allowed |fd - an| */
  int shrunk; /* times h was divided by 4 */
} fd_result;

static fd_result directional_fd(glow_model *m, const float *x,
                                const int32_t *labels, int32_t n, int64_t off,
                                const double *v, int64_t count, const float *g,
                                double gnorm) {
  float *p = glow_params(m) + off;
  float *saved = malloc(sizeof(float) * (size_t)count);
  memcpy(saved, p, sizeof(float) * (size_t)count);
  const uint64_t base = relu_pattern(m, x, n);
  fd_result r = {0.0, 0.0, 0.0, 0};
  for (double h = FD_STEP;; h /= 4, r.shrunk++) {
    /* Points theta + t v, t = h, -h, h/2, -h/2, and their weights in
     * (4 d(h/2) - d(h)) / 3 with d(s) = (f(s) - f(-s)) / (2 s). */
    const double t[4] = {h, -h, h / 2, -h / 2};
    const double wgt[4] = {-1 / (6 * h), 1 / (6 * h), 4 / (3 * h),
                           -4 / (3 * h)};
    int smooth = 1;
    r.fd = r.an = 0.0;
    for (int q = 0; q < 4; q++) {
      double gd = 0.0;
      for (int64_t i = 0; i < count; i++) {
        p[i] = (float)((double)saved[i] + t[q] * v[i]);
        gd += (double)g[i] * ((double)p[i] - (double)saved[i]);
      }
      if (q < 2 && relu_pattern(m, x, n) != base)
        smooth = 0;
      r.fd += wgt[q] * loss64(m, x, labels, n);
      r.an += wgt[q] * gd;
    }
    r.tol = GRAD_TOL * gnorm + FD_NOISE / h;
    if (smooth)
      break;
    if (r.shrunk == 3)
      fail_msg("no step down to %g avoids a ReLU kink", h);
  }
  memcpy(p, saved, sizeof(float) * (size_t)count);
  free(saved);
  return r;
}

static int64_t tensor_size(const glow__tensor *t) {
  int64_t count = 1;
  for (int32_t i = 0; i < t->ndim; i++)
    count *= t->shape[i];
  return count;
}

/* Check every tensor of a tiny model of this config; returns the number of
 * tensors checked. */
static int check_gradients(glow_config cfg, const char *what) {
  const int32_t n = 3;
  int32_t labels[3] = {0, 2, 0};
  const int32_t *lab = cfg.n_classes ? labels : NULL;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  float *x = tu_images(m, n, 77);
  glow_model_free(m);
  m = tiny_model(cfg, x, lab, n, 5);
  const int64_t np = glow_param_count(m);
  float *g = malloc(sizeof(float) * (size_t)np), loss;
  gradient(m, x, lab, n, g, &loss);
  /* The returned loss is the loss that is differentiated. */
  double ref = loss64(m, x, lab, n);
  if (!(fabs(loss - ref) <= 1e-6 * fabs(ref)))
    fail_msg("%s: loss %.8f, independent loss %.8f", what, loss, ref);
  uint64_t s = 1234;
  double worst = 0.0;
  int shrunk = 0;
  double maxtol = 0.0;
  for (int32_t t = 0; t < m->reg.n_tensors; t++) {
    const glow__tensor *tn = &m->reg.tensors[t];
    const int64_t count = tensor_size(tn);
    const float *gt = g + tn->offset;
    double *v = malloc(sizeof(double) * (size_t)count);
    double gn = 0.0;
    for (int64_t i = 0; i < count; i++)
      gn += (double)gt[i] * gt[i];
    gn = sqrt(gn);
    /* Every tensor influences the loss of this batch: no vacuous check. */
    if (!(gn > 1e-4))
      fail_msg("%s: %s has gradient norm %g", what, tn->name, gn);
    for (int dir = 0; dir < 3; dir++) {
      double vn = 0.0;
      for (int64_t i = 0; i < count; i++) {
        v[i] = dir == 0 ? gt[i] : tu_normal(&s);
        vn += v[i] * v[i];
      }
      for (int64_t i = 0; i < count; i++)
        v[i] /= sqrt(vn);
      fd_result r = directional_fd(m, x, lab, n, tn->offset, v, count, gt, gn);
      double err = fabs(r.an - r.fd) / gn;
      worst = err > worst ? err : worst;
      shrunk += r.shrunk;
      if (r.tol / gn > maxtol)
        maxtol = r.tol / gn;
      if (!(fabs(r.an - r.fd) <= r.tol))
        fail_msg("%s: %s, direction %d: analytic %.6g, finite difference "
                 "%.6g (|g| %.3g, step shrunk %d times)",
                 what, tn->name, dir, r.an, r.fd, gn, r.shrunk);
      /* The same check fails a doubled or a negated gradient. */
      const double tol2 = r.tol + GRAD_TOL * gn;
      if (dir == 0) {
        assert_true(fabs(2 * r.an - r.fd) > tol2);
        assert_true(fabs(-r.an - r.fd) > r.tol);
      }
    }
    free(v);
  }
  printf("  %-31s %2d tensors: worst error %.1e of |g|, widest tolerance "
         "%.3f of |g|, step shrunk %d times in %d checks\n",
         what, m->reg.n_tensors, worst, maxtol, shrunk, 3 * m->reg.n_tensors);
  int checked = m->reg.n_tensors;
  free(g);
  free(x);
  glow_model_free(m);
  return checked;
}

/* 8x8x1, L = 2, K = 2, hidden 6: level 0 is 4x4x4, level 1 2x2x8, so the
 * convolutions take both of their kernel paths (narrow and wide output) and
 * every tap sees image borders and interior. */
static glow_config grad_config(int32_t coupling, int32_t perm) {
  return tu_config(8, 8, 1, 2, 2, 6, coupling, perm);
}

static void test_gradients_all_layers(void **state) {
  (void)state;
  static const char *cn[] = {"affine", "additive"};
  static const char *pn[] = {"1x1", "1x1 LU", "reverse", "shuffle"};
  for (size_t c = 0; c < 2; c++)
    for (size_t p = 0; p < 4; p++) {
      char what[64];
      snprintf(what, sizeof what, "%s, %s", cn[c], pn[p]);
      check_gradients(grad_config(couplings[c], perms[p]), what);
    }
}

/* hidden < c/2 at every level (8x8x3, L = 2: c/2 = 6 and 12, hidden 5):
 * the coupling's first conv takes its narrow-output ("taps") path, in the
 * forward and in its weight gradient, and its last conv's input gradient
 * (hidden < c) the taps path too. */
static void test_gradients_narrow_hidden(void **state) {
  (void)state;
  static const char *what[] = {"hidden < c/2, affine",
                               "hidden < c/2, additive"};
  for (size_t c = 0; c < 2; c++) {
    glow_config cfg =
        tu_config(8, 8, 3, 2, 2, 5, couplings[c], GLOW_PERMUTE_CONV1X1_LU);
    glow_model *m = NULL;
    assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
    for (int32_t l = 0; l < cfg.levels; l++)
      assert_true(cfg.hidden < glow__model_prior(m, l)->in.c / 2);
    glow_model_free(m);
    check_gradients(cfg, what[c]);
  }
}

/* The label-dependent parts: class embedding and classifier, with a class
 * weight large enough that the classifier's gradient into the flow is a
 * visible part of every flow tensor's gradient. */
static void test_gradients_conditional(void **state) {
  (void)state;
  glow_config cfg = grad_config(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1_LU);
  cfg.n_classes = 3;
  cfg.class_weight = 1.0f;
  check_gradients(cfg, "conditional, learned top");
  cfg.learn_top = 0;
  cfg.class_weight = 0.01f;
  cfg.n_bits = 5;
  check_gradients(cfg, "conditional, fixed top, 5 bits");
}

/* LU entries outside the triangles do not enter the weight: exactly 0. */
static void test_lu_masked_entries(void **state) {
  (void)state;
  glow_config cfg = grad_config(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1_LU);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  float *x = tu_images(m, 2, 3);
  glow_model_free(m);
  m = tiny_model(cfg, x, NULL, 2, 9);
  float *g = malloc(sizeof(float) * (size_t)glow_param_count(m)), loss;
  gradient(m, x, NULL, 2, g, &loss);
  int nonzero = 0;
  for (int32_t l = 0; l < cfg.levels; l++)
    for (int32_t k = 0; k < cfg.depth; k++) {
      char name[64];
      snprintf(name, sizeof name, "level.%d.step.%d.invconv.lower", l, k);
      const glow__tensor *tl = tensor_named(m, name);
      const int64_t lower = tl->offset;
      const int32_t pc = tl->shape[0];
      snprintf(name, sizeof name, "level.%d.step.%d.invconv.upper", l, k);
      const int64_t upper = tensor_offset(m, name);
      for (int32_t i = 0; i < pc; i++)
        for (int32_t j = 0; j < pc; j++) {
          float gl = g[lower + i * pc + j];
          float gu = g[upper + i * pc + j];
          if (i <= j)
            assert_true(gl == 0.0f);
          else
            nonzero += gl != 0.0f;
          if (i >= j)
            assert_true(gu == 0.0f);
          else
            nonzero += gu != 0.0f;
        }
    }
  assert_true(nonzero > 0);
  free(g);
  free(x);
  glow_model_free(m);
}

/* ---- Memory modes ---------------------------------------------------------- */

/* Store mode and recompute mode: the same loss (the same forward) and the
 * same gradients up to rounding, on a deeper model where rebuilding inputs
 * through 2 x 4 inverses has room to drift. */
static void test_modes_agree(void **state) {
  (void)state;
  for (size_t c = 0; c < 2; c++) {
    glow_config cfg =
        tu_config(8, 8, 2, 2, 4, 8, couplings[c], GLOW_PERMUTE_CONV1X1);
    glow_model *m = NULL;
    assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
    const int32_t n = 4;
    float *x = tu_images(m, n, 31);
    glow_model_free(m);
    m = tiny_model(cfg, x, NULL, n, 13);
    const int64_t np = glow_param_count(m);
    float *gr = malloc(sizeof(float) * (size_t)np);
    float *gs = malloc(sizeof(float) * (size_t)np), lr, ls;
    int64_t mode = -1;
    assert_int_equal(glow_get_option(m, GLOW_OPT_BACKWARD_MODE, &mode),
                     GLOW_OK);
    assert_int_equal(mode, GLOW_BACKWARD_RECOMPUTE); /* the default */
    gradient(m, x, NULL, n, gr, &lr);
    assert_int_equal(
        glow_set_option(m, GLOW_OPT_BACKWARD_MODE, GLOW_BACKWARD_STORE),
        GLOW_OK);
    gradient(m, x, NULL, n, gs, &ls);
    assert_true(lr == ls);
    /* Per tensor: difference relative to the tensor's gradient norm. */
    double worst = 0.0;
    for (int32_t t = 0; t < m->reg.n_tensors; t++) {
      const glow__tensor *tn = &m->reg.tensors[t];
      const int64_t count = tensor_size(tn);
      double dn = 0.0, gn = 0.0;
      for (int64_t i = 0; i < count; i++) {
        double d = (double)gr[tn->offset + i] - gs[tn->offset + i];
        dn += d * d;
        gn += (double)gs[tn->offset + i] * gs[tn->offset + i];
      }
      assert_true(gn > 0.0);
      double rel = sqrt(dn / gn);
      if (rel > worst)
        worst = rel;
      if (!(rel <= 1e-4))
        fail_msg("%s: modes differ by %g of |g|", tn->name, rel);
    }
    printf("  coupling %d: modes differ by at most %.1e of |g|\n", couplings[c],
           worst);
    free(gr);
    free(gs);
    free(x);
    glow_model_free(m);
  }
}

/* A kept workspace gives bit-identical results to a fresh one (so no
 * buffer is read before this call writes it), also for a smaller batch,
 * is reused for any batch it has room for while the mode stays, freed when
 * the mode changes, replaced by a larger batch, and freed on request and
 * with the model (the sanitizer build checks the latter). */
static void test_keep_workspace(void **state) {
  (void)state;
  glow_config cfg = tu_config(8, 8, 2, 2, 2, 8, GLOW_COUPLING_AFFINE,
                              GLOW_PERMUTE_CONV1X1_LU);
  cfg.n_classes = 2;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  const int32_t n = 3;
  int32_t labels[3] = {1, 0, 1};
  float *x = tu_images(m, n, 4), *x2 = tu_images(m, n, 5);
  glow_model_free(m);
  m = tiny_model(cfg, x, labels, n, 8);
  /* One shard, so one workspace to follow (sharding: test_threads). */
  assert_int_equal(glow_set_option(m, GLOW_OPT_THREADS, 1), GLOW_OK);
  const int64_t np = glow_param_count(m);
  const size_t bytes = sizeof(float) * (size_t)np;
  float *g0 = malloc(bytes), *g1 = malloc(bytes), *gs = malloc(bytes);
  float l0, l1, ls;
  /* Kept by default; not kept when asked. */
  gradient(m, x, labels, n, g0, &l0);
  assert_non_null(m->train_ws);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  assert_null(m->train_ws);
  gradient(m, x, labels, n, g0, &l0);
  assert_null(m->train_ws);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
  gradient(m, x2, labels, n, g1, &l1); /* fills the kept workspace */
  const glow__ws *kept = m->train_ws;
  assert_non_null(kept);
  gradient(m, x, labels, n, g1, &l1);
  assert_ptr_equal(m->train_ws, kept);
  assert_true(l1 == l0);
  assert_memory_equal(g0, g1, bytes);
  /* Setting the mode it already has keeps the workspace. */
  assert_int_equal(
      glow_set_option(m, GLOW_OPT_BACKWARD_MODE, GLOW_BACKWARD_RECOMPUTE),
      GLOW_OK);
  assert_ptr_equal(m->train_ws, kept);
  /* Another mode: the old workspace is freed at once, a new one comes with
   * the next call, and the same gradients up to rounding. */
  assert_int_equal(
      glow_set_option(m, GLOW_OPT_BACKWARD_MODE, GLOW_BACKWARD_STORE), GLOW_OK);
  assert_null(m->train_ws);
  gradient(m, x, labels, n, gs, &ls);
  assert_non_null(m->train_ws);
  assert_true(m->train_ws->store);
  assert_true(ls == l0);
  double dmax = 0.0, gmax = 0.0;
  for (int64_t i = 0; i < np; i++) {
    dmax = fmax(dmax, fabs((double)gs[i] - g0[i]));
    gmax = fmax(gmax, fabs((double)g0[i]));
  }
  assert_true(dmax <= 1e-5 * gmax);
  /* A smaller batch: the same workspace, and the same bits as a fresh
   * one. */
  const glow__ws *kept_store = m->train_ws;
  float *g2 = malloc(bytes), *g2f = malloc(bytes), l2, l2f;
  assert_int_equal(glow_zero_grad(m), GLOW_OK);
  assert_int_equal(glow_backward(m, x, labels, 2, &l2), GLOW_OK);
  memcpy(g2, glow_grads(m), bytes);
  assert_ptr_equal(m->train_ws, kept_store);
  assert_int_equal(m->train_ws->n, 2);
  assert_int_equal(m->train_ws->cap, n);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  assert_null(m->train_ws);
  gradient(m, x, labels, 2, g2f, &l2f);
  assert_true(l2 == l2f);
  assert_memory_equal(g2, g2f, bytes);
  /* A larger batch replaces it. */
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
  assert_int_equal(glow_backward(m, x, labels, 2, &ls), GLOW_OK);
  assert_int_equal(m->train_ws->cap, 2);
  assert_int_equal(glow_backward(m, x, labels, n, &ls), GLOW_OK);
  assert_int_equal(m->train_ws->n, n);
  assert_int_equal(m->train_ws->cap, n);
  free(g2);
  free(g2f);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  assert_null(m->train_ws);
  /* Freed with the model. */
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 1), GLOW_OK);
  assert_int_equal(glow_backward(m, x, labels, n, &ls), GLOW_OK);
  assert_non_null(m->train_ws);
  free(g0);
  free(g1);
  free(gs);
  free(x);
  free(x2);
  glow_model_free(m);
}

/* Recompute mode's workspace grows with depth by its checkpoints, one step
 * input per step, and each step's coupling network output (as large as
 * the step's input for an affine coupling), and keeps no other
 * activations; store mode's grows by the kept activations of each added
 * step. */
static void test_memory_in_depth(void **state) {
  (void)state;
  int64_t bytes[2][2];
  const int32_t depth[2] = {2, 8};
  for (int d = 0; d < 2; d++) {
    glow_config cfg = tu_config(16, 16, 1, 2, depth[d], 32,
                                GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
    glow_model *m = NULL;
    assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
    for (int store = 0; store < 2; store++) {
      glow__ws ws;
      assert_int_equal(glow__ws_alloc_train(m, 16, store, &ws), GLOW_OK);
      bytes[d][store] = ws.bytes;
      glow__ws_free(&ws);
    }
    glow_model_free(m);
  }
  printf("  workspace bytes: recompute %lld (K=2) %lld (K=8); store %lld "
         "(K=2) %lld (K=8)\n",
         (long long)bytes[0][0], (long long)bytes[1][0], (long long)bytes[0][1],
         (long long)bytes[1][1]);
  /* Recompute mode: the 6 extra steps' inputs at each level (16 images of
   * 8x8x4 and 4x4x8) and their network outputs (as many floats), plus the
   * routes' five pointers and a hand-off per added layer. */
  const int64_t ckpt = (int64_t)2 * 6 * 16 * (8 * 8 * 4 + 4 * 4 * 8) * 4;
  const int64_t books = (int64_t)6 * 2 * 3 * (5 * 8 + 3 * 8);
  assert_true(bytes[1][0] - bytes[0][0] >= ckpt);
  assert_true(bytes[1][0] - bytes[0][0] <= ckpt + books);
  /* Store mode: at least the 6 extra steps' hidden activations. */
  assert_true(bytes[1][1] - bytes[0][1] >=
              (int64_t)6 * 16 * 64 * 2 * 32 * (int64_t)sizeof(float));
}

/* ---- Data-dependent initialisation ---------------------------------------- */

/* Mean 0 and variance 1 per channel of rows x c values. */
static void assert_normalised(const float *v, int64_t rows, int32_t c,
                              const char *what, int32_t l, int32_t k) {
  for (int32_t j = 0; j < c; j++) {
    double s = 0.0, sq = 0.0;
    for (int64_t r = 0; r < rows; r++)
      s += v[r * c + j];
    double mean = s / (double)rows;
    for (int64_t r = 0; r < rows; r++)
      sq += (v[r * c + j] - mean) * (v[r * c + j] - mean);
    double var = sq / (double)rows;
    if (!(fabs(mean) < 1e-5 && fabs(var - 1.0) < 1e-4))
      fail_msg("level %d step %d %s channel %d: mean %g variance %g", l, k,
               what, j, mean, var);
  }
}

static void visit_normalised(void *ctx, const float *v, int64_t rows, int32_t c,
                             int relu, const char *what, int32_t l, int32_t k) {
  (void)relu;
  (*(int *)ctx)++;
  assert_normalised(v, rows, c, what, l, k);
}

/* After glow_data_init(x), every actnorm's output on x -- each step's, and
 * each coupling network's two, before their ReLU -- is normalised. */
static void test_data_init_normalises(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 2, 2, 3, 8, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, 3); /* couplings and priors do real work */
  const int32_t n = 6;
  float *x = tu_images(m, n, 17);
  assert_int_equal(m->initialized, 0);
  assert_int_equal(glow_data_init(m, x, NULL, n), GLOW_OK);
  assert_int_equal(m->initialized, 1);
  int visited = 0;
  walk(m, x, n, visit_normalised, &visited);
  assert_int_equal(visited, 3 * cfg.levels * cfg.depth);
  free(x);
  glow_model_free(m);
}

static int all_finite(const float *v, int64_t count) {
  for (int64_t i = 0; i < count; i++)
    if (!isfinite(v[i]))
      return 0;
  return 1;
}

/* A constant input channel has zero variance: its actnorm scale must stay
 * finite (1 / 1e-6), and so must everything downstream. */
static void test_data_init_constant_channel(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 2, 2, 2, 8, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  const int32_t n = 4;
  float *x = tu_images(m, n, 8);
  for (int64_t i = 0; i < n * m->dim; i += 2)
    x[i + 1] = 0.25f; /* channel 1 constant in every image */
  assert_int_equal(glow_data_init(m, x, NULL, n), GLOW_OK);
  assert_true(all_finite(glow_params(m), glow_param_count(m)));
  /* Squeeze puts input channel 1 at channels 4..7 of level 0. */
  const int64_t logs = tensor_offset(m, "level.0.step.0.actnorm.logs");
  const int64_t bias = tensor_offset(m, "level.0.step.0.actnorm.bias");
  for (int32_t j = 4; j < 8; j++) {
    assert_true(fabs(m->params[logs + j] - log(1e6)) < 1e-3);
    assert_true(m->params[bias + j] == -0.25f);
  }
  float *eps = malloc(sizeof(float) * (size_t)(n * m->dim)), loss;
  assert_int_equal(glow_forward(m, x, NULL, n, eps, NULL), GLOW_OK);
  assert_true(all_finite(eps, n * m->dim));
  assert_int_equal(glow_backward(m, x, NULL, n, &loss), GLOW_OK);
  assert_true(isfinite(loss));
  assert_true(all_finite(glow_grads(m), glow_param_count(m)));
  free(eps);
  free(x);
  glow_model_free(m);
}

/* A batch that makes a layer non-finite: NUMERIC naming it, and the
 * parameters (and the initialised flag) as they were. */
static void test_data_init_failure_restores(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 1, 2, 2, 8, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  const int64_t np = glow_param_count(m);
  float *before = malloc(sizeof(float) * (size_t)np);
  memcpy(before, glow_params(m), sizeof(float) * (size_t)np);
  float *x = tu_images(m, 2, 8);
  x[5] = INFINITY;
  assert_int_equal(glow_data_init(m, x, NULL, 2), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "level 0 step 0 actnorm"));
  assert_memory_equal(before, glow_params(m), sizeof(float) * (size_t)np);
  assert_int_equal(m->initialized, 0);
  free(before);
  free(x);
  glow_model_free(m);
}

/* ---- glow_backward's contract ---------------------------------------------- */

static void test_backward_requires_init(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 1, 2, 2, 8, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  float *x = tu_images(m, 2, 8), loss = -1.0f;
  assert_int_equal(glow_backward(m, x, NULL, 2, &loss), GLOW_ERR_STATE);
  assert_non_null(strstr(glow_last_error(), "glow_data_init"));
  assert_true(loss == -1.0f);
  for (int64_t i = 0; i < glow_param_count(m); i++)
    assert_true(glow_grads(m)[i] == 0.0f);
  assert_int_equal(glow_data_init(m, x, NULL, 2), GLOW_OK);
  assert_int_equal(glow_backward(m, x, NULL, 2, &loss), GLOW_OK);
  free(x);
  glow_model_free(m);
}

/* The loss is the mean of glow_bits_per_dim; gradients add up: two calls
 * give exactly twice one, and the two halves of a batch give twice the
 * whole batch's (each call differentiates its own mean). */
static void test_loss_and_accumulation(void **state) {
  (void)state;
  glow_config cfg = tu_config(8, 8, 2, 2, 2, 8, GLOW_COUPLING_AFFINE,
                              GLOW_PERMUTE_CONV1X1_LU);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  const int32_t n = 4;
  float *x = tu_images(m, n, 41);
  glow_model_free(m);
  m = tiny_model(cfg, x, NULL, n, 2);
  const int64_t np = glow_param_count(m), d = glow_model_dim(m);
  float *one = malloc(sizeof(float) * (size_t)np), loss, loss2, bpd[4];
  gradient(m, x, NULL, n, one, &loss);
  assert_int_equal(glow_bits_per_dim(m, x, NULL, n, bpd), GLOW_OK);
  double mean = ((double)bpd[0] + bpd[1] + bpd[2] + bpd[3]) / 4;
  assert_float_equal(loss, mean, 1e-6 * mean);
  assert_int_equal(glow_backward(m, x, NULL, n, &loss2), GLOW_OK);
  assert_true(loss2 == loss);
  for (int64_t i = 0; i < np; i++)
    assert_true(glow_grads(m)[i] == 2.0f * one[i]);
  /* Micro-batches. */
  double gmax = 0.0, dmax = 0.0;
  assert_int_equal(glow_zero_grad(m), GLOW_OK);
  assert_int_equal(glow_backward(m, x, NULL, 2, &loss), GLOW_OK);
  assert_int_equal(glow_backward(m, x + 2 * d, NULL, 2, &loss2), GLOW_OK);
  for (int64_t i = 0; i < np; i++) {
    double ref = 2.0 * one[i];
    gmax = fmax(gmax, fabs(ref));
    dmax = fmax(dmax, fabs(glow_grads(m)[i] - ref));
  }
  assert_true(dmax <= 1e-4 * gmax);
  free(one);
  free(x);
  glow_model_free(m);
}

/* Argument errors, and failures leave grads and params untouched. */
static void test_backward_errors(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 1, 2, 2, 8, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  cfg.n_classes = 3;
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  float *x = tu_images(m, 2, 8), loss;
  int32_t labels[2] = {0, 2}, bad[2] = {0, 3}, neg[2] = {-1, 0};
  assert_int_equal(glow_data_init(NULL, x, labels, 2), GLOW_ERR_NULL);
  assert_int_equal(glow_data_init(m, NULL, labels, 2), GLOW_ERR_NULL);
  assert_int_equal(glow_data_init(m, x, labels, 0), GLOW_ERR_BATCH);
  assert_int_equal(glow_data_init(m, x, NULL, 2), GLOW_ERR_LABEL);
  assert_int_equal(glow_data_init(m, x, bad, 2), GLOW_ERR_LABEL);
  assert_int_equal(m->initialized, 0);
  assert_int_equal(glow_data_init(m, x, labels, 2), GLOW_OK);
  const int64_t np = glow_param_count(m);
  float *params = malloc(sizeof(float) * (size_t)np);
  for (int64_t i = 0; i < np; i++)
    glow_grads(m)[i] = (float)i; /* something to keep */
  memcpy(params, glow_params(m), sizeof(float) * (size_t)np);
  assert_int_equal(glow_backward(NULL, x, labels, 2, &loss), GLOW_ERR_NULL);
  assert_int_equal(glow_backward(m, NULL, labels, 2, &loss), GLOW_ERR_NULL);
  assert_int_equal(glow_backward(m, x, labels, 2, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_backward(m, x, labels, 0, &loss), GLOW_ERR_BATCH);
  assert_int_equal(glow_backward(m, x, labels, -3, &loss), GLOW_ERR_BATCH);
  assert_int_equal(glow_backward(m, x, NULL, 2, &loss), GLOW_ERR_LABEL);
  assert_int_equal(glow_backward(m, x, bad, 2, &loss), GLOW_ERR_LABEL);
  assert_int_equal(glow_backward(m, x, neg, 2, &loss), GLOW_ERR_LABEL);
  /* A non-finite activation deep in the model: a coupling network whose
   * output scale overflows. */
  m->params[tensor_offset(m, "level.1.step.1.coupling.conv3.logs")] =
      40.0f; /* exp(120) */
  m->params[tensor_offset(m, "level.1.step.1.coupling.conv3.bias")] = 1.0f;
  memcpy(params, glow_params(m), sizeof(float) * (size_t)np);
  assert_int_equal(glow_backward(m, x, labels, 2, &loss), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "level 1 step 1 coupling"));
  for (int64_t i = 0; i < np; i++)
    assert_true(glow_grads(m)[i] == (float)i);
  assert_memory_equal(params, glow_params(m), sizeof(float) * (size_t)np);
  /* A finite forward pass whose gradient is not: a 1x1 weight with a tiny
   * (but representable) pivot, whose inverse transpose -- the gradient of
   * log|det W| -- overflows float. */
  glow_model *v = NULL;
  cfg.n_classes = 0;
  assert_int_equal(glow_model_create(&cfg, &v), GLOW_OK);
  assert_int_equal(glow_data_init(v, x, NULL, 2), GLOW_OK);
  const glow__tensor *tw = tensor_named(v, "level.0.step.1.invconv.weight");
  const int64_t pw = tw->offset;
  const int32_t pc = tw->shape[0];
  for (int32_t i = 0; i < pc; i++)
    for (int32_t j = 0; j < pc; j++)
      v->params[pw + i * pc + j] = i == j ? 1.0f : 0.0f;
  v->params[pw] = 1e-40f;
  float *ev = malloc(sizeof(float) * (size_t)(2 * v->dim));
  assert_int_equal(glow_forward(v, x, NULL, 2, ev, NULL), GLOW_OK);
  /* Recompute mode meets it first when inverting W to rebuild the step's
   * input; store mode, in the gradient itself. */
  assert_int_equal(glow_backward(v, x, NULL, 2, &loss), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "level 0 step 1"));
  assert_int_equal(
      glow_set_option(v, GLOW_OPT_BACKWARD_MODE, GLOW_BACKWARD_STORE), GLOW_OK);
  assert_int_equal(glow_backward(v, x, NULL, 2, &loss), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "gradient"));
  assert_non_null(strstr(glow_last_error(), "level 0 step 1 permutation"));
  for (int64_t i = 0; i < glow_param_count(v); i++)
    assert_true(glow_grads(v)[i] == 0.0f);
  free(ev);
  glow_model_free(v);
  /* Unconditional models take no labels. */
  glow_model *u = NULL;
  assert_int_equal(glow_model_create(&cfg, &u), GLOW_OK);
  assert_int_equal(glow_data_init(u, x, NULL, 2), GLOW_OK);
  assert_int_equal(glow_backward(u, x, labels, 2, &loss), GLOW_ERR_LABEL);
  /* A non-finite value that the host left in glow_grads() is reported as
   * such, not as this batch's overflow; grads and *loss stay as they were,
   * until glow_zero_grad clears it. */
  const size_t gbytes = sizeof(float) * (size_t)glow_param_count(u);
  float *gsave = malloc(gbytes);
  const float bad_values[2] = {NAN, -INFINITY};
  for (int b = 0; b < 2; b++) {
    assert_int_equal(glow_zero_grad(u), GLOW_OK);
    glow_grads(u)[3] = 0.5f;
    glow_grads(u)[7] = bad_values[b];
    memcpy(gsave, glow_grads(u), gbytes);
    loss = -1.0f;
    assert_int_equal(glow_backward(u, x, NULL, 2, &loss), GLOW_ERR_NUMERIC);
    assert_non_null(strstr(glow_last_error(),
                           "already holds a non-finite value at index 7"));
    assert_non_null(strstr(glow_last_error(), "glow_zero_grad"));
    assert_memory_equal(gsave, glow_grads(u), gbytes);
    assert_true(loss == -1.0f);
  }
  assert_int_equal(glow_zero_grad(u), GLOW_OK);
  assert_int_equal(glow_backward(u, x, NULL, 2, &loss), GLOW_OK);
  free(gsave);
  glow_model_free(u);
  free(params);
  free(x);
  glow_model_free(m);
}

static void test_options(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(4, 4, 1, 1, 1, 4, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_REVERSE);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  int64_t v = -5, lo = -5, hi = -5;
  assert_int_equal(glow_option_bounds(GLOW_OPT_BACKWARD_MODE, &lo, &hi),
                   GLOW_OK);
  assert_int_equal(lo, GLOW_BACKWARD_RECOMPUTE);
  assert_int_equal(hi, GLOW_BACKWARD_STORE);
  assert_int_equal(glow_get_option(m, GLOW_OPT_BACKWARD_MODE, &v), GLOW_OK);
  assert_int_equal(v, GLOW_BACKWARD_RECOMPUTE);
  assert_int_equal(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, 1), GLOW_OK);
  assert_int_equal(glow_get_option(m, GLOW_OPT_BACKWARD_MODE, &v), GLOW_OK);
  assert_int_equal(v, GLOW_BACKWARD_STORE);
  assert_int_equal(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, 2), GLOW_ERR_ARG);
  assert_int_equal(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, -1),
                   GLOW_ERR_ARG);
  assert_int_equal(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, INT64_C(1) << 40),
                   GLOW_ERR_ARG);
  assert_int_equal(glow_get_option(m, GLOW_OPT_BACKWARD_MODE, &v), GLOW_OK);
  assert_int_equal(v, GLOW_BACKWARD_STORE); /* failed sets change nothing */
  assert_int_equal(glow_set_option(m, 0, 0), GLOW_ERR_ARG);
  assert_int_equal(glow_set_option(m, 999, 0), GLOW_ERR_ARG);
  assert_int_equal(glow_get_option(m, 999, &v), GLOW_ERR_ARG);
  assert_int_equal(glow_option_bounds(999, &lo, &hi), GLOW_ERR_ARG);
  assert_int_equal(glow_option_bounds(GLOW_OPT_KEEP_WORKSPACE, &lo, &hi),
                   GLOW_OK);
  assert_true(lo == 0 && hi == 1);
  assert_int_equal(glow_get_option(m, GLOW_OPT_KEEP_WORKSPACE, &v), GLOW_OK);
  assert_int_equal(v, 1); /* the default: kept */
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 2),
                   GLOW_ERR_ARG);
  assert_int_equal(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, 0), GLOW_OK);
  assert_int_equal(glow_get_option(m, GLOW_OPT_KEEP_WORKSPACE, &v), GLOW_OK);
  assert_int_equal(v, 0);
  assert_int_equal(glow_set_option(NULL, GLOW_OPT_BACKWARD_MODE, 0),
                   GLOW_ERR_NULL);
  assert_int_equal(glow_get_option(NULL, GLOW_OPT_BACKWARD_MODE, &v),
                   GLOW_ERR_NULL);
  assert_int_equal(glow_get_option(m, GLOW_OPT_BACKWARD_MODE, NULL),
                   GLOW_ERR_NULL);
  assert_int_equal(glow_option_bounds(GLOW_OPT_BACKWARD_MODE, NULL, &hi),
                   GLOW_ERR_NULL);
  glow_model_free(m);
}

/* ---- Learning -------------------------------------------------------------- */

/* Adam, written as a host would, on a fixed synthetic data set of 8x8
 * images: each one of four smooth patterns at a random contrast plus a
 * little noise.  The loss, averaged over windows of 50 steps, must fall in
 * every window, and by more than 1 bit/dim overall.  (Adam on a data set
 * this degenerate spikes now and then at larger learning rates, as flows
 * do; 5e-4 keeps single-step rises below 0.1 while the windows fall by more
 * than 0.1.) */
static void test_learning(void **state) {
  (void)state;
  glow_config cfg =
      tu_config(8, 8, 1, 2, 2, 16, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  const int32_t n = 32, steps = 300, window = 50;
  const int64_t d = glow_model_dim(m), np = glow_param_count(m);
  float *x = malloc(sizeof(float) * (size_t)(n * d));
  uint64_t s = 2024;
  for (int32_t i = 0; i < n; i++) {
    int pat = i % 4;
    double contrast = 0.15 + 0.2 * tu_uniform(&s);
    for (int32_t y = 0; y < 8; y++)
      for (int32_t xx = 0; xx < 8; xx++) {
        double v = pat == 0   ? (y - 3.5) / 3.5
                   : pat == 1 ? (xx - 3.5) / 3.5
                   : pat == 2 ? cos(0.8 * (y + xx))
                              : sin(0.9 * y) * cos(0.7 * xx);
        x[(int64_t)i * d + y * 8 + xx] =
            (float)(contrast * v + 0.02 * tu_normal(&s));
      }
  }
  assert_int_equal(glow_data_init(m, x, NULL, n), GLOW_OK);
  float *params = glow_params(m), *grads = glow_grads(m);
  double *m1 = calloc((size_t)np, sizeof(double));
  double *m2 = calloc((size_t)np, sizeof(double));
  const double lr = 5e-4, b1 = 0.9, b2 = 0.999;
  double win = 0.0, prev = INFINITY, first = 0.0, last = 0.0;
  for (int32_t t = 1; t <= steps; t++) {
    float loss;
    assert_int_equal(glow_zero_grad(m), GLOW_OK);
    assert_int_equal(glow_backward(m, x, NULL, n, &loss), GLOW_OK);
    for (int64_t i = 0; i < np; i++) {
      m1[i] = b1 * m1[i] + (1 - b1) * grads[i];
      m2[i] = b2 * m2[i] + (1 - b2) * grads[i] * grads[i];
      double mh = m1[i] / (1 - pow(b1, t)), vh = m2[i] / (1 - pow(b2, t));
      params[i] -= (float)(lr * mh / (sqrt(vh) + 1e-8));
    }
    win += loss;
    if (t % window == 0) {
      win /= window;
      if (t == window)
        first = win;
      last = win;
      if (!(win < prev))
        fail_msg("step %d: mean loss %.4f over the last %d steps, %.4f "
                 "before",
                 t, win, window, prev);
      prev = win;
      win = 0.0;
    }
  }
  printf("  mean loss: first %d steps %.3f, last %d steps %.3f bits/dim\n",
         window, first, window, last);
  assert_true(last < first - 1.0);
  free(m1);
  free(m2);
  free(x);
  glow_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gradients_all_layers),
      cmocka_unit_test(test_gradients_narrow_hidden),
      cmocka_unit_test(test_gradients_conditional),
      cmocka_unit_test(test_conv_kernels),
      cmocka_unit_test(test_lu_masked_entries),
      cmocka_unit_test(test_modes_agree),
      cmocka_unit_test(test_keep_workspace),
      cmocka_unit_test(test_memory_in_depth),
      cmocka_unit_test(test_data_init_normalises),
      cmocka_unit_test(test_data_init_constant_channel),
      cmocka_unit_test(test_data_init_failure_restores),
      cmocka_unit_test(test_backward_requires_init),
      cmocka_unit_test(test_loss_and_accumulation),
      cmocka_unit_test(test_backward_errors),
      cmocka_unit_test(test_options),
      cmocka_unit_test(test_learning),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
