/*
 * glow_driver.c -- the C side of the Python binding's tests.
 *
 * The tests compile this program against include/glow.h and the library
 * under test, run it, and compare what it writes with what the binding
 * computes, bit for bit.
 *
 *   glow_driver info
 *       Print "key value" lines: sizeof and field offsets of glow_config
 *       and glow_tensor_info, the status, enumeration and option
 *       constants, the header and run-time versions, and the file the
 *       library was loaded from.
 *
 *   glow_driver run OUTDIR key=value...
 *       Build a model, either from a config (the keys height, width,
 *       channels, levels, depth, hidden, coupling, permutation, n_bits,
 *       n_classes, learn_top, class_weight, seed over glow_config_init's
 *       defaults) or from a file (load=PATH), then write raw native-endian
 *       arrays into OUTDIR:
 *         params.bin                     glow_params() after creation/load
 *         tensors.txt                    "name offset count shape..." lines
 *                                        from glow_tensor_get
 *         file.bin                       glow_model_save_buffer
 *       and, given n=N and x=FILE (N x D float32) [labels=FILE (N int32)]:
 *         eps.bin logdet.bin             glow_forward
 *         logdet2.bin logp.bin bpd.bin   glow_logdet, log_prob, bits_per_dim
 *         inverse.bin                    glow_inverse(eps)
 *         pixels.bin                     glow_postprocess(x)
 *         pre.bin                        glow_preprocess(pixels, pre_seed)
 *         sample.bin                     glow_sample(n, temperature,
 *                                                    sample_seed, labels)
 *         logits.bin probs.bin           glow_classify (conditional models)
 *         lerp.bin slerp.bin             of eps rows 0 and 1 at t = 0.3
 *         direction.bin                  row 0 against rows 1..n-1
 *         shift.bin                      eps + 1.5 * direction (n >= 2)
 *       With backward_mode=M, glow_set_option(GLOW_OPT_BACKWARD_MODE, M)
 *       first.  With train=1, after those: glow_data_init(x), then
 *       glow_backward(x):
 *         params_init.bin loss.bin grads.bin
 *       With save=PATH, last: glow_model_save(PATH).
 *       OUTDIR/status.txt gets a "call status" line per call.  A failing
 *       inference call ends the run with exit status 1; data_init, backward
 *       and save only record their status.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <glow.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what) {
  fprintf(stderr, "glow_driver: %s\n", what);
  exit(2);
}

/* The lists below read as tables. */
/* clang-format off */
static void info(void) {
  printf("sizeof_config %zu\n", sizeof(glow_config));
#define OFF(f) printf("offset_%s %zu\n", #f, offsetof(glow_config, f));
  OFF(size) OFF(height) OFF(width) OFF(channels) OFF(levels) OFF(depth)
  OFF(hidden) OFF(coupling) OFF(permutation) OFF(n_bits) OFF(n_classes)
  OFF(learn_top) OFF(class_weight) OFF(seed)
#undef OFF
#define CONST(c) printf("%s %d\n", #c, (int)(c));
  CONST(GLOW_OK) CONST(GLOW_ERR_NULL) CONST(GLOW_ERR_BATCH)
  CONST(GLOW_ERR_SHAPE) CONST(GLOW_ERR_CONFIG) CONST(GLOW_ERR_CONFIG_SIZE)
  CONST(GLOW_ERR_LABEL) CONST(GLOW_ERR_ARG) CONST(GLOW_ERR_NOMEM)
  CONST(GLOW_ERR_NUMERIC) CONST(GLOW_ERR_UNSUPPORTED) CONST(GLOW_ERR_STATE)
  CONST(GLOW_ERR_IO) CONST(GLOW_ERR_FORMAT) CONST(GLOW_ERR_VERSION)
  CONST(GLOW_ERR_BUFFER)
  CONST(GLOW_COUPLING_AFFINE) CONST(GLOW_COUPLING_ADDITIVE)
  CONST(GLOW_PERMUTE_CONV1X1) CONST(GLOW_PERMUTE_CONV1X1_LU)
  CONST(GLOW_PERMUTE_REVERSE) CONST(GLOW_PERMUTE_SHUFFLE)
  CONST(GLOW_OPT_BACKWARD_MODE) CONST(GLOW_OPT_KEEP_WORKSPACE)
  CONST(GLOW_OPT_THREADS) CONST(GLOW_OPT_GEMM)
  CONST(GLOW_BACKWARD_RECOMPUTE) CONST(GLOW_BACKWARD_STORE)
  CONST(GLOW_GEMM_AUTO) CONST(GLOW_GEMM_BLAS)
  CONST(GLOW_TENSOR_MAX_DIMS)
  CONST(GLOW_VERSION_MAJOR) CONST(GLOW_VERSION_NUMBER)
#undef CONST
  printf("sizeof_tensor_info %zu\n", sizeof(glow_tensor_info));
#define TOFF(f) printf("tensor_offset_%s %zu\n", #f, offsetof(glow_tensor_info, f));
  TOFF(size) TOFF(ndim) TOFF(name) TOFF(offset) TOFF(count) TOFF(shape)
#undef TOFF
  printf("version_string %s\n", glow_version_string());
  printf("version_number %u\n", (unsigned)glow_version_number());
  Dl_info where;
  if (dladdr((void *)glow_forward, &where) && where.dli_fname)
    printf("library %s\n", where.dli_fname);
}
/* clang-format on */

/* ---- run ------------------------------------------------------------------ */

static const char *outdir;
static FILE *status_file;

static void record(const char *call, int rc) {
  fprintf(status_file, "%s %d\n", call, rc);
  fflush(status_file);
}

/* Record an inference call's status; stop on failure. */
static void need(const char *call, int rc) {
  record(call, rc);
  if (rc != GLOW_OK) {
    fprintf(stderr, "glow_driver: %s: %s\n", call, glow_last_error());
    exit(1);
  }
}

static void write_file(const char *name, const void *data, size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", outdir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0)
    die(strerror(errno));
}

static void *read_file(const char *path, size_t bytes) {
  void *buf = malloc(bytes ? bytes : 1);
  FILE *f = fopen(path, "rb");
  if (!buf || !f)
    die("cannot open an input file");
  if (fread(buf, 1, bytes, f) != bytes || fgetc(f) != EOF)
    die("an input file has the wrong size");
  fclose(f);
  return buf;
}

static void *xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p)
    die("out of memory");
  return p;
}

/* tensors.txt: "name offset count shape..." per parameter tensor. */
static void write_tensors(const glow_model *m) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tensors.txt", outdir);
  FILE *f = fopen(path, "w");
  if (!f)
    die(strerror(errno));
  for (int32_t i = 0; i < glow_tensor_count(m); i++) {
    glow_tensor_info t;
    t.size = sizeof t;
    need("tensor_get", glow_tensor_get(m, i, &t));
    fprintf(f, "%s %lld %lld", t.name, (long long)t.offset, (long long)t.count);
    for (int32_t k = 0; k < t.ndim; k++)
      fprintf(f, " %d", t.shape[k]);
    fputc('\n', f);
  }
  if (fclose(f) != 0)
    die(strerror(errno));
}

static long long int_value(const char *s) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 0);
  if (errno || *end || end == s)
    die("bad integer argument");
  return v;
}

static int run(int argc, char **argv) {
  glow_config cfg;
  glow_config_init(&cfg);
  const char *load = NULL, *x_path = NULL, *labels_path = NULL, *save = NULL;
  long long n = 0;
  float temperature = 1.0f;
  unsigned long long sample_seed = 0, pre_seed = 0;
  int train = 0;
  long long backward_mode = -1;
  for (int i = 0; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq)
      die("arguments are key=value");
    *eq = '\0';
    const char *k = argv[i], *v = eq + 1;
    /* A table of keys. */
    /* clang-format off */
#define INT_FIELD(f) else if (!strcmp(k, #f)) cfg.f = (int32_t)int_value(v);
    if (!strcmp(k, "load")) load = v;
    INT_FIELD(height) INT_FIELD(width) INT_FIELD(channels) INT_FIELD(levels)
    INT_FIELD(depth) INT_FIELD(hidden) INT_FIELD(coupling)
    INT_FIELD(permutation) INT_FIELD(n_bits) INT_FIELD(n_classes)
    INT_FIELD(learn_top)
    else if (!strcmp(k, "class_weight")) cfg.class_weight = strtof(v, NULL);
    else if (!strcmp(k, "seed")) cfg.seed = strtoull(v, NULL, 0);
    else if (!strcmp(k, "n")) n = int_value(v);
    else if (!strcmp(k, "x")) x_path = v;
    else if (!strcmp(k, "labels")) labels_path = v;
    else if (!strcmp(k, "temperature")) temperature = strtof(v, NULL);
    else if (!strcmp(k, "sample_seed")) sample_seed = strtoull(v, NULL, 0);
    else if (!strcmp(k, "pre_seed")) pre_seed = strtoull(v, NULL, 0);
    else if (!strcmp(k, "train")) train = (int)int_value(v);
    else if (!strcmp(k, "backward_mode")) backward_mode = int_value(v);
    else if (!strcmp(k, "save")) save = v;
    else die("unknown key");
#undef INT_FIELD
    /* clang-format on */
  }

  glow_model *m = NULL;
  if (load)
    need("load", glow_model_load(load, &m));
  else
    need("create", glow_model_create(&cfg, &m));
  const int64_t d = glow_model_dim(m), p = glow_param_count(m);
  write_file("params.bin", glow_params(m), sizeof(float) * (size_t)p);
  write_tensors(m);
  size_t file_size = 0;
  need("save_buffer", glow_model_save_buffer(m, NULL, 0, &file_size));
  void *file = xmalloc(file_size);
  need("save_buffer", glow_model_save_buffer(m, file, file_size, &file_size));
  write_file("file.bin", file, file_size);
  free(file);
  if (backward_mode >= 0)
    need("set_option",
         glow_set_option(m, GLOW_OPT_BACKWARD_MODE, backward_mode));

  if (x_path) {
    if (n < 1 || n > 4096)
      die("n must be in 1..4096");
    const size_t nd = (size_t)n * (size_t)d, sz = nd * sizeof(float);
    const int32_t nn = (int32_t)n;
    float *x = read_file(x_path, sz);
    int32_t *labels = labels_path
                          ? read_file(labels_path, (size_t)n * sizeof(int32_t))
                          : NULL;
    float *eps = xmalloc(sz), *back = xmalloc(sz), *s = xmalloc(sz);
    float *pre = xmalloc(sz), *v = xmalloc((size_t)n * sizeof(float));
    uint8_t *pixels = xmalloc(nd);

    need("forward", glow_forward(m, x, labels, nn, eps, v));
    write_file("eps.bin", eps, sz);
    write_file("logdet.bin", v, (size_t)n * sizeof(float));
    need("logdet", glow_logdet(m, x, labels, nn, v));
    write_file("logdet2.bin", v, (size_t)n * sizeof(float));
    need("log_prob", glow_log_prob(m, x, labels, nn, v));
    write_file("logp.bin", v, (size_t)n * sizeof(float));
    need("bits_per_dim", glow_bits_per_dim(m, x, labels, nn, v));
    write_file("bpd.bin", v, (size_t)n * sizeof(float));
    need("inverse", glow_inverse(m, eps, labels, nn, back));
    write_file("inverse.bin", back, sz);
    need("postprocess", glow_postprocess(m, x, nn, pixels));
    write_file("pixels.bin", pixels, nd);
    need("preprocess", glow_preprocess(m, pixels, nn, pre_seed, pre));
    write_file("pre.bin", pre, sz);
    need("sample", glow_sample(m, nn, temperature, sample_seed, labels, s));
    write_file("sample.bin", s, sz);

    glow_config got;
    got.size = sizeof got;
    need("model_config", glow_model_config(m, &got));
    if (got.n_classes > 0) {
      const size_t nk = (size_t)n * (size_t)got.n_classes * sizeof(float);
      float *logits = xmalloc(nk), *probs = xmalloc(nk);
      need("classify", glow_classify(m, x, nn, logits, probs));
      write_file("logits.bin", logits, nk);
      write_file("probs.bin", probs, nk);
      free(logits), free(probs);
    }
    if (n >= 2) { /* latent arithmetic on the rows of eps */
      float *row = xmalloc((size_t)d * sizeof(float));
      need("latent_lerp", glow_latent_lerp(eps, eps + d, d, 0.3f, row));
      write_file("lerp.bin", row, (size_t)d * sizeof(float));
      need("latent_slerp", glow_latent_slerp(eps, eps + d, d, 0.3f, row));
      write_file("slerp.bin", row, (size_t)d * sizeof(float));
      need("latent_direction",
           glow_latent_direction(eps, 1, eps + d, nn - 1, d, row));
      write_file("direction.bin", row, (size_t)d * sizeof(float));
      need("latent_shift", glow_latent_shift(eps, row, nn, d, 1.5f, back));
      write_file("shift.bin", back, sz);
      free(row);
    }

    if (train) {
      int rc = glow_data_init(m, x, labels, nn);
      record("data_init", rc);
      if (rc == GLOW_OK)
        write_file("params_init.bin", glow_params(m),
                   sizeof(float) * (size_t)p);
      float loss = 0.0f;
      rc = glow_backward(m, x, labels, nn, &loss);
      record("backward", rc);
      if (rc == GLOW_OK) {
        write_file("loss.bin", &loss, sizeof loss);
        write_file("grads.bin", glow_grads(m), sizeof(float) * (size_t)p);
      }
    }
    free(x), free(labels), free(eps), free(back), free(s), free(pre), free(v);
    free(pixels);
  }
  if (save)
    record("save", glow_model_save(m, save));
  glow_model_free(m);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "info")) {
    info();
    return 0;
  }
  if (argc >= 3 && !strcmp(argv[1], "run")) {
    outdir = argv[2];
    char path[4096];
    snprintf(path, sizeof path, "%s/status.txt", outdir);
    status_file = fopen(path, "w");
    if (!status_file)
      die(strerror(errno));
    int rc = run(argc - 3, argv + 3);
    fclose(status_file);
    return rc;
  }
  fprintf(stderr, "usage: glow_driver info | run OUTDIR key=value...\n");
  return 2;
}
