/*
 * test_layers.c -- log-determinants against brute force.
 *
 * For each layer type, and for the whole model, the Jacobian of the map on
 * one small input is built column by column with central differences, and
 * log|det J| (LU in double) is compared with the layer's own logdet.  The
 * shapes are chosen so that a missing h*w factor or a wrong sign moves the
 * answer by far more than the tolerance.
 */
#include <stdio.h>

#include <lapacke.h>

#include "model.h"
#include "testutil.h"

/* A map of one input of `dim` floats to `dim` floats, with its logdet. */
typedef struct {
  void (*apply)(void *ctx, const float *in, float *out, double *logdet);
  void *ctx;
  int64_t dim;
} layer_map;

static double brute_logdet(const layer_map *f, const float *x0) {
  const int64_t d = f->dim;
  const float step = 1e-2f;
  double *jac = malloc(sizeof(double) * (size_t)(d * d));
  float *x = malloc(sizeof(float) * (size_t)d);
  float *yp = malloc(sizeof(float) * (size_t)d);
  float *ym = malloc(sizeof(float) * (size_t)d);
  double ld;
  for (int64_t j = 0; j < d; j++) {
    memcpy(x, x0, sizeof(float) * (size_t)d);
    x[j] = x0[j] + step;
    double hp = (double)x[j];
    f->apply(f->ctx, x, yp, &ld);
    x[j] = x0[j] - step;
    double hm = (double)x[j];
    f->apply(f->ctx, x, ym, &ld);
    for (int64_t i = 0; i < d; i++) /* row-major J[i][j] = dy_i/dx_j */
      jac[i * d + j] = ((double)yp[i] - (double)ym[i]) / (hp - hm);
  }
  lapack_int *ipiv = malloc(sizeof(lapack_int) * (size_t)d);
  assert_int_equal(LAPACKE_dgetrf(LAPACK_ROW_MAJOR, (lapack_int)d,
                                  (lapack_int)d, jac, (lapack_int)d, ipiv),
                   0);
  double s = 0.0;
  for (int64_t i = 0; i < d; i++)
    s += log(fabs(jac[i * d + i]));
  free(ipiv);
  free(jac);
  free(x);
  free(yp);
  free(ym);
  return s;
}

static void check_layer(const layer_map *f, const char *what, double tol) {
  uint64_t s = 99;
  float *x = malloc(sizeof(float) * (size_t)f->dim);
  float *y = malloc(sizeof(float) * (size_t)f->dim);
  for (int64_t i = 0; i < f->dim; i++)
    x[i] = (float)(tu_uniform(&s) - 0.5);
  double claimed;
  f->apply(f->ctx, x, y, &claimed);
  double brute = brute_logdet(f, x);
  printf("  %-28s logdet %10.5f  brute force %10.5f\n", what, claimed, brute);
  if (!(fabs(claimed - brute) <= tol))
    fail_msg("%s: logdet %g, brute force %g", what, claimed, brute);
  /* The check must be able to fail: the layer must do something. */
  assert_true(fabs(brute) > 20 * tol || strcmp(what, "squeeze") == 0);
  free(x);
  free(y);
}

/* Context: a model, one of its layers, a workspace for one image. */
typedef struct {
  glow_model *m;
  const glow__layer *ly;
  glow__ws ws;
  float eps[512];
  float y[512];
} layer_ctx;

/* `scale`: how far parameters move from their initial values.  The whole
 * model composes many layers, so it gets a smaller one to keep its
 * Jacobian well enough conditioned for float32 differences. */
static void setup(layer_ctx *c, int32_t coupling, int32_t perm, double scale) {
  /* 4x4x2 input, two levels: level 0 runs at 2x2x8, so h*w = 4. */
  glow_config cfg = tu_config(4, 4, 2, 2, 2, 6, coupling, perm);
  assert_int_equal(glow_model_create(&cfg, &c->m), GLOW_OK);
  tu_perturb(c->m, scale, 17);
  c->ly = NULL;
  assert_int_equal(glow__ws_alloc(c->m, 1, &c->ws), GLOW_OK);
}

/* The first layer named `name` (in the order of the flow). */
static const glow__layer *find_layer(const layer_ctx *c, const char *name) {
  for (int32_t i = 0; i < c->m->n_layers; i++)
    if (!strcmp(c->m->layers[i].ops->name, name))
      return &c->m->layers[i];
  fail_msg("no layer '%s'", name);
  return NULL;
}

/* Floats of the map of layer ly: its input, which maps one-to-one onto its
 * output and its latent block. */
static int64_t layer_dim(const glow__layer *ly) {
  return (int64_t)ly->in.h * ly->in.w * ly->in.c;
}

static void teardown_ctx(layer_ctx *c) {
  glow__ws_free(&c->ws);
  glow_model_free(c->m);
}

/* One layer's forward through the layer interface: out = (y, its latent
 * block), ld = the log-determinant it added, shared and per image. */
static void apply_layer(void *p, const float *in, float *out, double *ld) {
  layer_ctx *c = p;
  const glow__layer *ly = c->ly;
  glow__logdet acc = {0.0, c->ws.ld};
  glow__pass pass = {.P = c->m->params,
                     .n = 1,
                     .eps = c->eps,
                     .dim = c->m->dim,
                     .scale = 1.0f,
                     .ld = &acc,
                     .s = &c->ws.s,
                     .n_total = 1};
  c->ws.ld[0] = 0.0;
  assert_int_equal(ly->ops->forward(ly, &pass, in, ly->out.c ? c->y : NULL,
                                    c->ws.s.act, NULL),
                   GLOW_OK);
  const int64_t ny = (int64_t)ly->out.h * ly->out.w * ly->out.c;
  const int64_t block = layer_dim(ly) - ny;
  memcpy(out, c->y, sizeof(float) * (size_t)ny);
  memcpy(out + ny, c->eps + ly->eps_off, sizeof(float) * (size_t)block);
  *ld = acc.shared + acc.image[0];
}

static void apply_model(void *p, const float *in, float *out, double *ld) {
  layer_ctx *c = p;
  float v;
  assert_int_equal(glow_forward(c->m, in, NULL, 1, out, &v), GLOW_OK);
  *ld = v;
}

static void check_named(layer_ctx *c, const char *name, const char *what,
                        double tol) {
  c->ly = find_layer(c, name);
  layer_map f = {apply_layer, c, layer_dim(c->ly)};
  check_layer(&f, what, tol);
}

static void test_layer_logdets(void **state) {
  (void)state;
  static const int32_t perms[] = {GLOW_PERMUTE_CONV1X1,
                                  GLOW_PERMUTE_CONV1X1_LU};
  static const char *const pname[] = {"1x1 conv", "1x1 conv (LU)"};
  for (int pi = 0; pi < 2; pi++) {
    layer_ctx c;
    setup(&c, GLOW_COUPLING_AFFINE, perms[pi], 0.3);
    check_named(&c, "permutation", pname[pi], 2e-3);
    if (pi == 0) {
      check_named(&c, "actnorm", "actnorm", 2e-3);
      check_named(&c, "coupling", "affine coupling", 2e-3);
      check_named(&c, "split prior", "split prior", 2e-3);
      check_named(&c, "top prior", "top prior", 2e-3);
      assert_int_equal(layer_dim(c.ly), 1 * 1 * 16);
      check_named(&c, "squeeze", "squeeze", 1e-3);
      assert_int_equal(layer_dim(c.ly), 32);
    }
    teardown_ctx(&c);
  }
}

/* Additive coupling is volume preserving: logdet 0, and so is J. */
static void test_additive_coupling_logdet(void **state) {
  (void)state;
  layer_ctx c;
  setup(&c, GLOW_COUPLING_ADDITIVE, GLOW_PERMUTE_CONV1X1, 0.3);
  c.ly = find_layer(&c, "coupling");
  layer_map f = {apply_layer, &c, layer_dim(c.ly)};
  assert_int_equal(f.dim, 32);
  uint64_t s = 5;
  float x[32], y[32];
  for (int i = 0; i < 32; i++)
    x[i] = (float)(tu_uniform(&s) - 0.5);
  double claimed;
  f.apply(f.ctx, x, y, &claimed);
  assert_true(claimed == 0.0);
  assert_true(fabs(brute_logdet(&f, x)) < 1e-3);
  /* ...while it changes its input. */
  assert_true(tu_max_abs_diff(x, y, 32) > 1e-2);
  teardown_ctx(&c);
}

/* The whole model, every coupling and permutation. */
static void test_model_logdet(void **state) {
  (void)state;
  for (int32_t cp = 0; cp < 2; cp++)
    for (int32_t pm = 0; pm < 4; pm++) {
      layer_ctx c;
      setup(&c, cp, pm, 0.1);
      layer_map f = {apply_model, &c, glow_model_dim(c.m)};
      char what[64];
      snprintf(what, sizeof what, "model coupling %d perm %d", cp, pm);
      check_layer(&f, what, 5e-3);
      teardown_ctx(&c);
    }
}

/* The affine coupling's element-wise part, bit for bit: y2 = (x2 + shift)
 * s and each pixel's log s summed over its channels k = 0, 1, ... from
 * 0.0f, then each image's pixels in order in double, computed here from
 * the network's output one value at a time (glow__sigmoid of one value)
 * against the layer, whose values go through glow__sigmoid in runs of at
 * most 256: pixels of 6 scales, whose runs hold 42 pixels, and pixels of
 * 260, which take two runs each.  Again with a team of 3 splitting the rows (at other pixels),
 * and the inverse, whose bits must not depend on the team either on the
 * own kernel. */
static void check_coupling_bits(glow_config cfg, int32_t channels) {
  enum { N = 5, TEAM = 3 };
  layer_ctx c;
  assert_int_equal(glow_model_create(&cfg, &c.m), GLOW_OK);
  tu_perturb(c.m, 0.3, 21);
  assert_int_equal(glow__ws_alloc(c.m, N, &c.ws), GLOW_OK);
  c.ly = find_layer(&c, "coupling");
  const int32_t ch = c.ly->in.c, half = ch / 2, hid = cfg.hidden;
  const int64_t hw = (int64_t)c.ly->in.h * c.ly->in.w, rows = N * hw;
  assert_int_equal(ch, channels);
  assert_true(rows * half > 256); /* more than one run of scales */
  float *x = malloc(sizeof(float) * (size_t)(rows * ch));
  float *y = malloc(sizeof(float) * (size_t)(rows * ch));
  float *y_team = malloc(sizeof(float) * (size_t)(rows * ch));
  float *back = malloc(sizeof(float) * (size_t)(rows * ch));
  float *back_team = malloc(sizeof(float) * (size_t)(rows * ch));
  uint64_t seed = 3;
  for (int64_t i = 0; i < rows * ch; i++)
    x[i] = (float)tu_normal(&seed);
  float *packs = malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK * TEAM);
  float *team_pack[TEAM];
  for (int t = 0; t < TEAM; t++)
    team_pack[t] = packs + (int64_t)t * GLOW__GEMM_PACK;
  double ld[2][N];
  for (int team = 0; team <= 1; team++) {
    glow__scratch *sc = &c.ws.s;
    glow__team *tm = team ? glow__team_start(NULL, TEAM) : NULL;
    assert_true(!team || tm);
    sc->conv.team = tm;
    sc->conv.team_pack = sc->conv.pack ? team_pack : NULL;
    glow__team_split_all = team;
    glow__logdet acc = {0.0, c.ws.ld};
    glow__pass pass = {.P = c.m->params,
                       .n = N,
                       .eps = NULL,
                       .dim = c.m->dim,
                       .scale = 1.0f,
                       .ld = &acc,
                       .s = sc,
                       .n_total = N};
    for (int i = 0; i < N; i++)
      c.ws.ld[i] = 0.0;
    float *out = team ? y_team : y;
    assert_int_equal(c.ly->ops->forward(c.ly, &pass, x, out, sc->act, NULL),
                     GLOW_OK);
    memcpy(ld[team], c.ws.ld, sizeof ld[team]);
    if (!team) { /* the reference, from the network's output */
      const int32_t co = 2 * half;
      const float *nn = sc->act + 2 * rows * hid;
      for (int32_t i = 0; i < N; i++) {
        double sum = 0.0;
        for (int64_t q = 0; q < hw; q++) {
          const int64_t r = i * hw + q;
          float terms = 0.0f;
          for (int32_t k = 0; k < half; k++) {
            const float raw = nn[r * co + 2 * k + 1] + 2.0f;
            float sg, om, ls;
            glow__sigmoid(&raw, 1, &sg, &om, &ls);
            const float want = (x[r * ch + half + k] + nn[r * co + 2 * k]) * sg;
            assert_true(memcmp(&want, &y[r * ch + half + k], sizeof want) == 0);
            assert_true(y[r * ch + k] == x[r * ch + k]);
            terms += ls;
          }
          sum += terms;
        }
        assert_true(memcmp(&sum, &ld[0][i], sizeof sum) == 0);
        assert_true(sum < -1.0); /* the scales are not all 1 */
      }
    }
    float *inv = team ? back_team : back;
    assert_int_equal(c.ly->ops->inverse(c.ly, &pass, out, inv), GLOW_OK);
    glow__team_split_all = 0;
    sc->conv.team = NULL;
    sc->conv.team_pack = NULL;
    glow__team_stop(tm);
  }
  /* A team gives one thread's bits on the own kernel; through a CBLAS its
   * split products may round differently (the header says so). */
  if (c.ws.s.conv.pack) {
    assert_memory_equal(y_team, y, sizeof(float) * (size_t)(rows * ch));
    assert_memory_equal(ld[1], ld[0], sizeof ld[0]);
    assert_memory_equal(back_team, back, sizeof(float) * (size_t)(rows * ch));
  } else {
    assert_true(tu_max_abs_diff(y_team, y, rows * ch) < 1e-4);
  }
  assert_true(tu_max_abs_diff(back, x, rows * ch) < 1e-4);
  assert_true(tu_max_abs_diff(back_team, x, rows * ch) < 1e-4);
  free(packs);
  free(x);
  free(y);
  free(y_team);
  free(back);
  free(back_team);
  teardown_ctx(&c);
}

static void test_coupling_bits(void **state) {
  (void)state;
  /* 12 channels at 4 x 4: 6 scales a pixel, so runs of 256 end inside
   * pixels. */
  check_coupling_bits(
      tu_config(8, 8, 3, 1, 1, 8, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1),
      12);
  /* 520 channels at 1 x 1: 260 scales a pixel, more than a run holds. */
  check_coupling_bits(
      tu_config(2, 2, 130, 1, 1, 4, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1),
      520);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layer_logdets),
      cmocka_unit_test(test_additive_coupling_logdet),
      cmocka_unit_test(test_model_logdet),
      cmocka_unit_test(test_coupling_bits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
