/*
 * test_io.c -- model files: round trips, the safetensors layout, parameter
 * introspection, atomic saving, and one test per kind of bad file.
 *
 * Bad files are made from a valid one by editing its JSON header with
 * cJSON (and, where the case needs it, its data section), after checking
 * that the unedited rebuild loads, so that each failure is caused by the
 * edit under test.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "model.h" /* m->initialized */
#include "testutil.h"

static char tmpdir[64];

static int setup_dir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/glow_test_io_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

/* Remove tmpdir and everything in it (one level of subdirectories). */
static void remove_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
      continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
      chmod(p, 0700);
      remove_tree(p);
    } else {
      unlink(p);
    }
  }
  closedir(d);
  rmdir(dir);
}

static int teardown_dir(void **state) {
  (void)state;
  remove_tree(tmpdir);
  return 0;
}

static void path_in(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s", tmpdir, name);
}

/* Number of entries in tmpdir whose name contains `part`. */
static int count_files(const char *part) {
  DIR *d = opendir(tmpdir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strstr(e->d_name, part))
      n++;
  closedir(d);
  return n;
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)n + 1);
  assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return b;
}

static void write_all(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(b, 1, n, f), n);
  fclose(f);
}

/* A small perturbed model, so that every layer does real work. */
static glow_model *make_model(int32_t coupling, int32_t perm, int32_t n_classes,
                              int32_t learn_top) {
  glow_config cfg = tu_config(8, 8, 2, 2, 2, 6, coupling, perm);
  cfg.n_classes = n_classes;
  cfg.learn_top = learn_top;
  cfg.class_weight = 0.3f;
  cfg.seed = UINT64_C(0xFEEDFACECAFEBEEF); /* all 64 bits round trip */
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, 17);
  return m;
}

/* The smallest model: 4x4x1, one level, one step, 2 hidden channels. */
static glow_model *tiny_model(int32_t perm) {
  glow_config cfg = tu_config(4, 4, 1, 1, 1, 2, GLOW_COUPLING_AFFINE, perm);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, 3);
  return m;
}

static uint8_t *save_mem(const glow_model *m, size_t *len) {
  size_t need = 0;
  assert_int_equal(glow_model_save_buffer(m, NULL, 0, &need), GLOW_OK);
  uint8_t *b = malloc(need);
  assert_int_equal(glow_model_save_buffer(m, b, need, len), GLOW_OK);
  assert_int_equal(*len, need);
  return b;
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* ---- Comparing models ---------------------------------------------------- */

static void assert_same_config(const glow_model *a, const glow_model *b) {
  glow_config x, y;
  glow_config_init(&x);
  glow_config_init(&y);
  assert_int_equal(glow_model_config(a, &x), GLOW_OK);
  assert_int_equal(glow_model_config(b, &y), GLOW_OK);
  assert_int_equal(x.height, y.height);
  assert_int_equal(x.width, y.width);
  assert_int_equal(x.channels, y.channels);
  assert_int_equal(x.levels, y.levels);
  assert_int_equal(x.depth, y.depth);
  assert_int_equal(x.hidden, y.hidden);
  assert_int_equal(x.coupling, y.coupling);
  assert_int_equal(x.permutation, y.permutation);
  assert_int_equal(x.n_bits, y.n_bits);
  assert_int_equal(x.n_classes, y.n_classes);
  assert_int_equal(x.learn_top, y.learn_top);
  assert_memory_equal(&x.class_weight, &y.class_weight, sizeof(float));
  assert_true(x.seed == y.seed);
}

/* Same config, parameters, fixed buffers (through their effect), state;
 * forward, inverse and sampling bit for bit; zero gradients in b. */
static void assert_same_model(glow_model *a, glow_model *b) {
  assert_same_config(a, b);
  const int64_t np = glow_param_count(a);
  assert_int_equal(glow_param_count(b), np);
  assert_memory_equal(glow_params(a), glow_params(b), sizeof(float) * np);
  for (int64_t i = 0; i < np; i++)
    assert_true(glow_grads(b)[i] == 0.0f);
  assert_int_equal(a->initialized, b->initialized);

  glow_config cfg;
  glow_config_init(&cfg);
  glow_model_config(a, &cfg);
  const int32_t n = 2;
  const int64_t d = glow_model_dim(a);
  int32_t labels[2] = {1, 0};
  const int32_t *lab = cfg.n_classes ? labels : NULL;
  float *x = tu_images(a, n, 99);
  float *ea = malloc(sizeof(float) * n * d),
        *eb = malloc(sizeof(float) * n * d);
  float *xa = malloc(sizeof(float) * n * d),
        *xb = malloc(sizeof(float) * n * d);
  float la[2], lb[2];
  assert_int_equal(glow_forward(a, x, lab, n, ea, la), GLOW_OK);
  assert_int_equal(glow_forward(b, x, lab, n, eb, lb), GLOW_OK);
  assert_memory_equal(ea, eb, sizeof(float) * n * d);
  assert_memory_equal(la, lb, sizeof la);
  assert_int_equal(glow_inverse(a, ea, lab, n, xa), GLOW_OK);
  assert_int_equal(glow_inverse(b, ea, lab, n, xb), GLOW_OK);
  assert_memory_equal(xa, xb, sizeof(float) * n * d);
  assert_int_equal(glow_sample(a, n, 0.7f, 5, lab, xa), GLOW_OK);
  assert_int_equal(glow_sample(b, n, 0.7f, 5, lab, xb), GLOW_OK);
  assert_memory_equal(xa, xb, sizeof(float) * n * d);
  free(x);
  free(ea);
  free(eb);
  free(xa);
  free(xb);
}

/* ---- Round trips --------------------------------------------------------- */

/* Every coupling and permutation through a file: the loaded model is the
 * same model, bit for bit, including the actnorm state. */
static void test_roundtrip_file_all_kinds(void **state) {
  (void)state;
  char path[256];
  path_in(path, sizeof path, "rt.safetensors");
  for (int32_t c = 0; c < 2; c++)
    for (int32_t p = 0; p < 4; p++) {
      glow_model *m = make_model(c, p, 0, 1);
      m->initialized = (c + p) % 2; /* both states round trip */
      assert_int_equal(glow_model_save(m, path), GLOW_OK);
      glow_model *back = NULL;
      assert_int_equal(glow_model_load(path, &back), GLOW_OK);
      assert_non_null(back);
      assert_same_model(m, back);
      glow_model_free(back);
      glow_model_free(m);
    }
}

/* Conditional, no learned top prior, three levels: the optional tensors. */
static void test_roundtrip_conditional(void **state) {
  (void)state;
  glow_model *m =
      make_model(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1_LU, 3, 0);
  size_t len;
  uint8_t *b = save_mem(m, &len);
  glow_model *back = NULL;
  assert_int_equal(glow_model_load_buffer(b, len, &back), GLOW_OK);
  assert_same_model(m, back);
  int32_t i;
  assert_int_equal(glow_tensor_find(back, "classifier.weight", &i), GLOW_OK);
  assert_int_equal(glow_tensor_find(back, "top.prior", &i), GLOW_ERR_ARG);
  glow_model_free(back);
  glow_model_free(m);
  free(b);

  glow_config cfg = tu_config(8, 16, 1, 3, 1, 4, GLOW_COUPLING_ADDITIVE,
                              GLOW_PERMUTE_SHUFFLE);
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  tu_perturb(m, 0.05, 8);
  b = save_mem(m, &len);
  assert_int_equal(glow_model_load_buffer(b, len, &back), GLOW_OK);
  assert_same_model(m, back);
  glow_model_free(back);
  glow_model_free(m);
  free(b);
}

/* The buffer variant writes exactly the file's bytes; saving is
 * deterministic; a loaded model saves to the same bytes again. */
static void test_roundtrip_buffer_matches_file(void **state) {
  (void)state;
  char path[256];
  path_in(path, sizeof path, "buf.safetensors");
  glow_model *m = make_model(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_REVERSE, 2, 1);
  assert_int_equal(glow_model_save(m, path), GLOW_OK);
  size_t flen, blen, blen2;
  uint8_t *f = read_all(path, &flen);
  uint8_t *b = save_mem(m, &blen);
  assert_int_equal(flen, blen);
  assert_memory_equal(f, b, flen);
  glow_model *back = NULL;
  assert_int_equal(glow_model_load_buffer(b, blen, &back), GLOW_OK);
  uint8_t *b2 = save_mem(back, &blen2);
  assert_int_equal(blen2, blen);
  assert_memory_equal(b2, b, blen);
  glow_model_free(back);
  glow_model_free(m);
  free(f);
  free(b);
  free(b2);
}

/* Size query, too small a buffer, NULL rules. */
static void test_save_buffer_size_rules(void **state) {
  (void)state;
  glow_model *m = tiny_model(GLOW_PERMUTE_CONV1X1);
  size_t need = 0, got = 0;
  assert_int_equal(glow_model_save_buffer(m, NULL, 0, &need), GLOW_OK);
  assert_true(need > 8 + 4 * (size_t)glow_param_count(m));
  uint8_t *b = malloc(need + 16);
  memset(b, 0xAB, need + 16);
  assert_int_equal(glow_model_save_buffer(m, b, need - 1, &got),
                   GLOW_ERR_BUFFER);
  assert_int_equal(got, need);
  assert_true(b[0] == 0xAB && b[need - 2] == 0xAB); /* untouched */
  assert_int_equal(glow_model_save_buffer(m, b, need + 16, &got), GLOW_OK);
  assert_int_equal(got, need);
  assert_true(b[need] == 0xAB); /* nothing past the file */
  assert_int_equal(glow_model_save_buffer(NULL, b, need, &got), GLOW_ERR_NULL);
  assert_int_equal(glow_model_save_buffer(m, b, need, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_model_save_buffer(m, NULL, need, &got), GLOW_ERR_NULL);
  free(b);
  glow_model_free(m);
}

/* The file is plain safetensors: header length, a JSON object whose
 * entries agree with glow_tensor_get(), the data section 8-aligned and
 * starting with the parameter buffer, buffers named as documented. */
static void test_file_layout(void **state) {
  (void)state;
  glow_model *m =
      make_model(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1_LU, 0, 1);
  m->initialized = 1;
  size_t len;
  uint8_t *b = save_mem(m, &len);
  uint64_t n = get_u64(b);
  assert_true(n < len - 8);
  assert_int_equal((8 + n) % 8, 0);
  cJSON *h = cJSON_ParseWithLength((const char *)b + 8, (size_t)n);
  assert_non_null(h);
  assert_true(cJSON_IsObject(h));
  const cJSON *md = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
  assert_string_equal(
      cJSON_GetObjectItemCaseSensitive(md, "glow.format_version")->valuestring,
      "1");
  assert_string_equal(
      cJSON_GetObjectItemCaseSensitive(md, "glow.library_version")->valuestring,
      glow_version_string());
  assert_string_equal(
      cJSON_GetObjectItemCaseSensitive(md, "glow.initialized")->valuestring,
      "1");
  assert_string_equal(
      cJSON_GetObjectItemCaseSensitive(md, "glow.config.permutation")
          ->valuestring,
      "conv1x1_lu");
  assert_string_equal(
      cJSON_GetObjectItemCaseSensitive(md, "glow.config.class_weight")
          ->valuestring,
      "0.3");
  assert_string_equal(
      cJSON_GetObjectItemCaseSensitive(md, "glow.config.seed")->valuestring,
      "18369614221190020847");

  const uint8_t *data = b + 8 + n;
  const int32_t nt = glow_tensor_count(m);
  for (int32_t i = 0; i < nt; i++) {
    glow_tensor_info info = {.size = sizeof info};
    assert_int_equal(glow_tensor_get(m, i, &info), GLOW_OK);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(h, info.name);
    assert_non_null(e);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(e, "dtype")->valuestring, "F32");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    assert_int_equal(cJSON_GetArraySize(shape), info.ndim);
    for (int32_t d = 0; d < info.ndim; d++)
      assert_int_equal(cJSON_GetArrayItem(shape, d)->valueint, info.shape[d]);
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    double begin = cJSON_GetArrayItem(off, 0)->valuedouble;
    double end = cJSON_GetArrayItem(off, 1)->valuedouble;
    assert_true(begin == 4.0 * (double)info.offset);
    assert_true(end - begin == 4.0 * (double)info.count);
  }
  /* The data section starts with the parameters, little-endian. */
  const float *p = glow_params(m);
  for (int64_t i = 0; i < glow_param_count(m); i++) {
    uint32_t u;
    memcpy(&u, &p[i], 4);
    const uint8_t *q = data + 4 * i;
    assert_true(q[0] == (u & 0xFF) && q[1] == (u >> 8 & 0xFF) &&
                q[2] == (u >> 16 & 0xFF) && q[3] == u >> 24);
  }
  /* LU buffers: a permutation and signs per step, after the parameters. */
  const cJSON *perm =
      cJSON_GetObjectItemCaseSensitive(h, "level.1.step.1.invconv.perm");
  const cJSON *sign =
      cJSON_GetObjectItemCaseSensitive(h, "level.1.step.1.invconv.sign");
  assert_non_null(perm);
  assert_non_null(sign);
  assert_true(cJSON_GetArrayItem(
                  cJSON_GetObjectItemCaseSensitive(perm, "data_offsets"), 0)
                  ->valuedouble >= 4.0 * (double)glow_param_count(m));
  /* tensors: parameters + 2 buffers per step, plus __metadata__ */
  assert_int_equal(cJSON_GetArraySize(h), nt + 2 * 2 * 2 + 1);
  cJSON_Delete(h);
  free(b);
  glow_model_free(m);
}

/* ---- Introspection ------------------------------------------------------- */

static void test_tensor_introspection(void **state) {
  (void)state;
  glow_model *m = make_model(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1, 2, 1);
  const int32_t nt = glow_tensor_count(m);
  assert_true(nt > 10);
  int64_t at = 0;
  for (int32_t i = 0; i < nt; i++) {
    glow_tensor_info info = {.size = sizeof info};
    assert_int_equal(glow_tensor_get(m, i, &info), GLOW_OK);
    assert_int_equal(info.size, sizeof info);
    assert_int_equal(info.offset, at); /* back to back, in index order */
    assert_true(info.ndim >= 1 && info.ndim <= GLOW_TENSOR_MAX_DIMS);
    int64_t count = 1;
    for (int32_t d = 0; d < GLOW_TENSOR_MAX_DIMS; d++) {
      if (d < info.ndim) {
        assert_true(info.shape[d] > 0);
        count *= info.shape[d];
      } else {
        assert_int_equal(info.shape[d], 0);
      }
    }
    assert_int_equal(info.count, count);
    at += count;
    int32_t j = -5;
    assert_int_equal(glow_tensor_find(m, info.name, &j), GLOW_OK);
    assert_int_equal(j, i); /* names are unique */
  }
  assert_int_equal(at, glow_param_count(m));

  /* A documented name and shape: [3][3][c/2][hidden] at level 1 (c = 16). */
  int32_t i;
  assert_int_equal(
      glow_tensor_find(m, "level.1.step.1.coupling.conv1.weight", &i), GLOW_OK);
  glow_tensor_info info = {.size = sizeof info};
  assert_int_equal(glow_tensor_get(m, i, &info), GLOW_OK);
  assert_int_equal(info.ndim, 4);
  assert_int_equal(info.shape[0], 3);
  assert_int_equal(info.shape[1], 3);
  assert_int_equal(info.shape[2], 8);
  assert_int_equal(info.shape[3], 6);

  /* Errors. */
  assert_int_equal(glow_tensor_count(NULL), -1);
  assert_int_equal(glow_tensor_get(NULL, 0, &info), GLOW_ERR_NULL);
  assert_int_equal(glow_tensor_get(m, 0, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_tensor_get(m, -1, &info), GLOW_ERR_ARG);
  assert_int_equal(glow_tensor_get(m, nt, &info), GLOW_ERR_ARG);
  info.size = GLOW_TENSOR_INFO_SIZE_V1 - 1;
  assert_int_equal(glow_tensor_get(m, 0, &info), GLOW_ERR_ARG);
  assert_int_equal(glow_tensor_find(m, "no.such.tensor", &i), GLOW_ERR_ARG);
  assert_int_equal(i, -1);
  assert_int_equal(glow_tensor_find(m, NULL, &i), GLOW_ERR_NULL);
  assert_int_equal(glow_tensor_find(m, "top.prior", NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_tensor_find(NULL, "top.prior", &i), GLOW_ERR_NULL);

  /* A caller struct larger than ours: the tail is left alone. */
  struct {
    glow_tensor_info info;
    uint64_t future;
  } big;
  memset(&big, 0x5A, sizeof big);
  big.info.size = sizeof big;
  assert_int_equal(glow_tensor_get(m, 0, &big.info), GLOW_OK);
  assert_int_equal(big.info.size, sizeof big);
  assert_true(big.future == UINT64_C(0x5A5A5A5A5A5A5A5A));
  assert_string_equal(big.info.name, "level.0.step.0.actnorm.bias");
  glow_model_free(m);
}

/* ---- Saving -------------------------------------------------------------- */

/* Saving over a file replaces it and leaves no temporary file; a save that
 * fails half-way (file size limit) leaves the old file intact. */
static void test_save_atomic_replace(void **state) {
  (void)state;
  char path[256];
  path_in(path, sizeof path, "atomic.safetensors");
  glow_model *a = tiny_model(GLOW_PERMUTE_SHUFFLE);
  glow_model *big =
      make_model(GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1, 0, 1);
  assert_int_equal(glow_model_save(big, path), GLOW_OK);
  assert_int_equal(chmod(path, 0640), 0);
  assert_int_equal(glow_model_save(a, path), GLOW_OK); /* replaces */
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0640); /* permissions kept */
  /* ... but not setuid, setgid or sticky bits. */
  assert_int_equal(chmod(path, 06750), 0);
  assert_int_equal(glow_model_save(a, path), GLOW_OK);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0750);
  glow_model *back = NULL;
  assert_int_equal(glow_model_load(path, &back), GLOW_OK);
  assert_same_model(a, back);
  glow_model_free(back);
  assert_int_equal(count_files(".tmp-"), 0);

  size_t len_before;
  uint8_t *before = read_all(path, &len_before);
  /* Writes beyond 4 KiB now fail with EFBIG (SIGXFSZ ignored). */
  struct rlimit old, lim;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  lim.rlim_cur = 4096;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  int rc = glow_model_save(big, path);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, prev);
  assert_int_equal(rc, GLOW_ERR_IO);
  assert_non_null(strstr(glow_last_error(), "writing"));
  size_t len_after;
  uint8_t *after = read_all(path, &len_after);
  assert_int_equal(len_after, len_before);
  assert_memory_equal(after, before, len_before);
  assert_int_equal(count_files(".tmp-"), 0);
  free(before);
  free(after);
  glow_model_free(a);
  glow_model_free(big);
}

static void test_save_null_args(void **state) {
  (void)state;
  glow_model *m = tiny_model(GLOW_PERMUTE_CONV1X1);
  assert_int_equal(glow_model_save(NULL, "/tmp/x"), GLOW_ERR_NULL);
  assert_int_equal(glow_model_save(m, NULL), GLOW_ERR_NULL);
  assert_int_equal(glow_model_save(m, ""), GLOW_ERR_IO);
  glow_model_free(m);
}

static void test_save_to_directory(void **state) {
  (void)state;
  glow_model *m = tiny_model(GLOW_PERMUTE_CONV1X1);
  assert_int_equal(glow_model_save(m, tmpdir), GLOW_ERR_IO);
  assert_non_null(strstr(glow_last_error(), "directory"));
  glow_model_free(m);
}

/* A read-only file is not replaced, even by root, whom the rename would
 * let through. */
static void test_save_readonly_target(void **state) {
  (void)state;
  char path[256];
  path_in(path, sizeof path, "readonly.safetensors");
  write_all(path, "keep", 4);
  assert_int_equal(chmod(path, 0444), 0);
  glow_model *m = tiny_model(GLOW_PERMUTE_CONV1X1);
  assert_int_equal(glow_model_save(m, path), GLOW_ERR_IO);
  assert_non_null(strstr(glow_last_error(), "read-only"));
  size_t len;
  uint8_t *b = read_all(path, &len);
  assert_int_equal(len, 4);
  assert_memory_equal(b, "keep", 4);
  assert_int_equal(count_files(".tmp-"), 0);
  free(b);
  glow_model_free(m);
}

/* Places where no file can be created: a missing directory, a read-only
 * directory (unless root, who may write there), /proc. */
static void test_save_unwritable_location(void **state) {
  (void)state;
  char path[256];
  glow_model *m = tiny_model(GLOW_PERMUTE_CONV1X1);
  path_in(path, sizeof path, "missing/dir/model.safetensors");
  assert_int_equal(glow_model_save(m, path), GLOW_ERR_IO);
  assert_int_equal(glow_model_save(m, "/proc/self/glow.safetensors"),
                   GLOW_ERR_IO);
  if (geteuid() != 0) {
    char dir[128];
    path_in(dir, sizeof dir, "rodir");
    assert_int_equal(mkdir(dir, 0555), 0);
    path_in(path, sizeof path, "rodir/model.safetensors");
    assert_int_equal(glow_model_save(m, path), GLOW_ERR_IO);
    assert_int_equal(access(path, F_OK), -1);
  }
  glow_model_free(m);
}

/* What save refuses to replace stays what it was: a FIFO, a socket, a
 * symbolic link (to a device, to a FIFO, even to a regular file). */
static void expect_save_refused(glow_model *m, const char *path, mode_t type,
                                const char *part) {
  int rc = glow_model_save(m, path);
  if (rc != GLOW_ERR_IO)
    fail_msg("save over '%s': %d (%s)", path, rc, glow_last_error());
  if (!strstr(glow_last_error(), part))
    fail_msg("message '%s' lacks '%s'", glow_last_error(), part);
  struct stat st;
  assert_int_equal(lstat(path, &st), 0);
  assert_int_equal(st.st_mode & S_IFMT, type);
  assert_int_equal(count_files(".tmp-"), 0);
}

static void test_save_not_regular_file(void **state) {
  (void)state;
  glow_model *m = tiny_model(GLOW_PERMUTE_CONV1X1);
  char path[256], target[256];
  path_in(path, sizeof path, "save-fifo");
  assert_int_equal(mkfifo(path, 0600), 0);
  expect_save_refused(m, path, S_IFIFO, "not a regular file");
  path_in(path, sizeof path, "socket");
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_true(s >= 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  assert_true(strlen(path) < sizeof addr.sun_path);
  memcpy(addr.sun_path, path, strlen(path) + 1);
  assert_int_equal(bind(s, (struct sockaddr *)&addr, sizeof addr), 0);
  expect_save_refused(m, path, S_IFSOCK, "not a regular file");
  close(s);
  path_in(path, sizeof path, "to-null");
  assert_int_equal(symlink("/dev/null", path), 0);
  expect_save_refused(m, path, S_IFLNK, "symbolic link");
  struct stat st;
  assert_int_equal(stat("/dev/null", &st), 0);
  assert_true(S_ISCHR(st.st_mode));
  path_in(target, sizeof target, "save-fifo");
  path_in(path, sizeof path, "to-fifo");
  assert_int_equal(symlink(target, path), 0);
  expect_save_refused(m, path, S_IFLNK, "symbolic link");
  path_in(target, sizeof target, "regular.safetensors");
  write_all(target, "keep", 4);
  path_in(path, sizeof path, "to-regular");
  assert_int_equal(symlink(target, path), 0);
  expect_save_refused(m, path, S_IFLNK, "symbolic link");
  size_t len;
  uint8_t *b = read_all(target, &len);
  assert_int_equal(len, 4);
  free(b);
  glow_model_free(m);
}

/* A file name of 250 bytes, within the usual 255-byte limit: the
 * temporary file's name must fit as well. */
static void test_save_long_name(void **state) {
  (void)state;
  char name[251], path[512];
  memset(name, 'n', 250);
  name[250] = '\0';
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  glow_model *m = tiny_model(GLOW_PERMUTE_CONV1X1_LU);
  int rc = glow_model_save(m, path);
  if (rc != GLOW_OK)
    fail_msg("250-byte name: %d (%s)", rc, glow_last_error());
  assert_int_equal(glow_model_save(m, path), GLOW_OK); /* and replaced */
  glow_model *back = NULL;
  assert_int_equal(glow_model_load(path, &back), GLOW_OK);
  assert_same_model(m, back);
  assert_int_equal(count_files(".tmp-"), 0);
  unlink(path);
  glow_model_free(back);
  glow_model_free(m);
}

/* A model with a non-finite parameter is not saved: every file libglow
 * writes is one it loads. */
static void test_save_non_finite_params(void **state) {
  (void)state;
  glow_model *m = tiny_model(GLOW_PERMUTE_CONV1X1);
  int32_t idx;
  assert_int_equal(glow_tensor_find(m, "level.0.step.0.invconv.weight", &idx),
                   GLOW_OK);
  glow_tensor_info info = {.size = sizeof info};
  assert_int_equal(glow_tensor_get(m, idx, &info), GLOW_OK);
  glow_params(m)[info.offset + 1] = NAN;
  char path[256];
  path_in(path, sizeof path, "nan.safetensors");
  assert_int_equal(glow_model_save(m, path), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "invconv.weight"));
  assert_int_equal(access(path, F_OK), -1);
  size_t size = 0;
  assert_int_equal(glow_model_save_buffer(m, NULL, 0, &size), GLOW_OK);
  uint8_t *b = malloc(size);
  memset(b, 0x5a, size);
  size_t got = 1;
  assert_int_equal(glow_model_save_buffer(m, b, size, &got), GLOW_ERR_NUMERIC);
  assert_non_null(strstr(glow_last_error(), "invconv.weight"));
  assert_int_equal(got, 1); /* not written on this error */
  assert_int_equal(b[0], 0x5a);
  assert_int_equal(count_files(".tmp-"), 0);
  free(b);
  glow_model_free(m);
}

/* ---- Loading: the path --------------------------------------------------- */

static void expect_load_path(const char *path, int code, const char *part) {
  glow_model *m = (glow_model *)(uintptr_t)1;
  int rc = glow_model_load(path, &m);
  if (rc != code)
    fail_msg("load '%s': %d, expected %d (%s)", path, rc, code,
             glow_last_error());
  assert_null(m);
  if (part && !strstr(glow_last_error(), part))
    fail_msg("message '%s' lacks '%s'", glow_last_error(), part);
}

static void test_load_null_args(void **state) {
  (void)state;
  glow_model *m = (glow_model *)(uintptr_t)1;
  assert_int_equal(glow_model_load(NULL, &m), GLOW_ERR_NULL);
  assert_null(m);
  assert_int_equal(glow_model_load("/tmp/x", NULL), GLOW_ERR_NULL);
  m = (glow_model *)(uintptr_t)1;
  assert_int_equal(glow_model_load_buffer(NULL, 10, &m), GLOW_ERR_NULL);
  assert_null(m);
  uint8_t b[16] = {0};
  assert_int_equal(glow_model_load_buffer(b, sizeof b, NULL), GLOW_ERR_NULL);
}

static void test_load_nonexistent_path(void **state) {
  (void)state;
  char path[256];
  path_in(path, sizeof path, "does-not-exist.safetensors");
  expect_load_path(path, GLOW_ERR_IO, "cannot open");
}

static void test_load_directory(void **state) {
  (void)state;
  expect_load_path(tmpdir, GLOW_ERR_IO, "directory");
}

static void test_load_not_regular_file(void **state) {
  (void)state;
  char path[256];
  path_in(path, sizeof path, "fifo");
  assert_int_equal(mkfifo(path, 0600), 0);
  expect_load_path(path, GLOW_ERR_IO, "regular");
  unlink(path);
}

/* A file cut anywhere, including inside the length field. */
static void test_load_truncated(void **state) {
  (void)state;
  glow_model *m = tiny_model(GLOW_PERMUTE_CONV1X1_LU);
  size_t len;
  uint8_t *b = save_mem(m, &len);
  for (size_t cut = 0; cut < len; cut++) {
    uint8_t *copy = malloc(cut ? cut : 1); /* exact size, for ASan */
    memcpy(copy, b, cut);
    glow_model *out = (glow_model *)(uintptr_t)1;
    int rc = glow_model_load_buffer(copy, cut, &out);
    if (rc != GLOW_ERR_FORMAT)
      fail_msg("cut at %zu of %zu: %d (%s)", cut, len, rc, glow_last_error());
    assert_null(out);
    free(copy);
  }
  char path[256];
  path_in(path, sizeof path, "truncated.safetensors");
  write_all(path, b, len - 1);
  expect_load_path(path, GLOW_ERR_FORMAT, NULL);
  write_all(path, b, 5);
  expect_load_path(path, GLOW_ERR_FORMAT, "too short");
  write_all(path, b, 0);
  expect_load_path(path, GLOW_ERR_FORMAT, "too short");
  free(b);
  glow_model_free(m);
}

/* ---- Loading: header editing --------------------------------------------- */

/* A model file taken apart: its header as a cJSON tree and its data. */
typedef struct {
  cJSON *h;
  uint8_t *data;
  size_t data_len;
} parts;

static parts split_file(const glow_model *m) {
  size_t len;
  uint8_t *b = save_mem(m, &len);
  uint64_t n = get_u64(b);
  parts p;
  p.h = cJSON_ParseWithLength((const char *)b + 8, (size_t)n);
  assert_non_null(p.h);
  p.data_len = len - 8 - (size_t)n;
  p.data = malloc(p.data_len + 64);
  memcpy(p.data, b + 8 + n, p.data_len);
  free(b);
  return p;
}

/* Header text (exactly as given) and data into one exactly-sized file. */
static uint8_t *join_raw(const char *text, size_t tlen, const uint8_t *data,
                         size_t data_len, size_t *len) {
  *len = 8 + tlen + data_len;
  uint8_t *b = malloc(*len);
  uint64_t n = tlen;
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(n >> (8 * i));
  memcpy(b + 8, text, tlen);
  memcpy(b + 8 + tlen, data, data_len);
  return b;
}

static uint8_t *join(const parts *p, size_t *len) {
  char *text = cJSON_PrintUnformatted(p->h);
  uint8_t *b = join_raw(text, strlen(text), p->data, p->data_len, len);
  cJSON_free(text);
  return b;
}

static void free_parts(parts *p) {
  cJSON_Delete(p->h);
  free(p->data);
}

static void expect_load_bytes(const uint8_t *b, size_t len, int code,
                              const char *part) {
  glow_model *m = (glow_model *)(uintptr_t)1;
  int rc = glow_model_load_buffer(b, len, &m);
  if (rc != code)
    fail_msg("load: %d, expected %d (%s)", rc, code, glow_last_error());
  if (code != GLOW_OK) {
    assert_null(m);
    if (part && !strstr(glow_last_error(), part))
      fail_msg("message '%s' lacks '%s'", glow_last_error(), part);
  }
  glow_model_free(code == GLOW_OK ? m : NULL);
}

static void expect_load(const parts *p, int code, const char *part) {
  size_t len;
  uint8_t *b = join(p, &len);
  expect_load_bytes(b, len, code, part);
  free(b);
}

/* A valid model file of the given permutation, checked to load when
 * rebuilt unedited. */
static parts valid_parts(int32_t perm) {
  glow_model *m = tiny_model(perm);
  parts p = split_file(m);
  glow_model_free(m);
  expect_load(&p, GLOW_OK, NULL);
  return p;
}

static cJSON *entry(const parts *p, const char *name) {
  cJSON *e = cJSON_GetObjectItemCaseSensitive(p->h, name);
  assert_non_null(e);
  return e;
}

static void offsets(const parts *p, const char *name, size_t *begin,
                    size_t *end) {
  cJSON *o = cJSON_GetObjectItemCaseSensitive(entry(p, name), "data_offsets");
  *begin = (size_t)cJSON_GetArrayItem(o, 0)->valuedouble;
  *end = (size_t)cJSON_GetArrayItem(o, 1)->valuedouble;
}

static void set_offsets(parts *p, const char *name, double begin, double end) {
  cJSON *e = entry(p, name);
  cJSON_ReplaceItemInObjectCaseSensitive(
      e, "data_offsets",
      cJSON_CreateDoubleArray((const double[]){begin, end}, 2));
}

static void set_shape(parts *p, const char *name, const double *dims, int n) {
  cJSON_ReplaceItemInObjectCaseSensitive(entry(p, name), "shape",
                                         cJSON_CreateDoubleArray(dims, n));
}

static void set_meta(parts *p, const char *key, const char *value) {
  cJSON *md = entry(p, "__metadata__");
  if (cJSON_GetObjectItemCaseSensitive(md, key))
    cJSON_ReplaceItemInObjectCaseSensitive(md, key, cJSON_CreateString(value));
  else
    cJSON_AddStringToObject(md, key, value);
}

/* The name of the tensor whose data comes last. */
static const char *last_tensor(const parts *p) {
  const char *name = NULL;
  double best = -1;
  for (cJSON *e = p->h->child; e; e = e->next) {
    if (!strcmp(e->string, "__metadata__"))
      continue;
    cJSON *o = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    double b = cJSON_GetArrayItem(o, 0)->valuedouble;
    if (b > best) {
      best = b;
      name = e->string;
    }
  }
  return name;
}

/* Remove a tensor and its bytes, shifting later tensors down, so that the
 * file stays a well-formed container. */
static void drop_tensor(parts *p, const char *name) {
  size_t b, e;
  offsets(p, name, &b, &e);
  memmove(p->data + b, p->data + e, p->data_len - e);
  p->data_len -= e - b;
  cJSON_DeleteItemFromObjectCaseSensitive(p->h, name);
  for (cJSON *t = p->h->child; t; t = t->next) {
    if (!strcmp(t->string, "__metadata__"))
      continue;
    size_t tb, te;
    offsets(p, t->string, &tb, &te);
    if (tb >= e)
      set_offsets(p, t->string, (double)(tb - (e - b)), (double)(te - (e - b)));
  }
}

/* Pointer to a tensor's floats in the data. */
static float *tensor_floats(parts *p, const char *name) {
  size_t b, e;
  offsets(p, name, &b, &e);
  return (float *)(void *)(p->data +
                           b); /* data is malloc-aligned, b % 4 == 0 */
}

static void test_load_header_length_past_end(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  size_t len;
  uint8_t *b = join(&p, &len);
  for (uint64_t bad = len - 7; bad <= len + 100; bad += 37) {
    for (int i = 0; i < 8; i++)
      b[i] = (uint8_t)(bad >> (8 * i));
    expect_load_bytes(b, len, GLOW_ERR_FORMAT, "past the end");
  }
  free(b);
  free_parts(&p);
}

static void test_load_header_length_absurd(void **state) {
  (void)state;
  const uint64_t bad[] = {UINT64_MAX, UINT64_MAX - 7, UINT64_C(1) << 63,
                          (UINT64_C(100) << 20) + 1};
  uint8_t b[64] = {0};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    for (int i = 0; i < 8; i++)
      b[i] = (uint8_t)(bad[k] >> (8 * i));
    expect_load_bytes(b, sizeof b, GLOW_ERR_FORMAT, "limit");
  }
}

static void test_load_header_not_object(void **state) {
  (void)state;
  const char *texts[] = {"[1, 2, 3]",
                         "\"text\"",
                         "42",
                         "null",
                         "{\"a\": ",
                         "{} {}",
                         "",
                         "   ",
                         "{\"__metadata__\": {}}x",
                         "{\"a\\u0000b\": 1}"};
  const uint8_t data[4] = {0};
  for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
    size_t len;
    uint8_t *b = join_raw(texts[k], strlen(texts[k]), data, 4, &len);
    expect_load_bytes(b, len, GLOW_ERR_FORMAT, NULL);
    free(b);
  }
  /* a raw NUL byte inside the header */
  size_t len;
  uint8_t *b = join_raw("{\"a\":1}\0  ", 10, data, 0, &len);
  expect_load_bytes(b, len, GLOW_ERR_FORMAT, "NUL");
  free(b);
  b = join_raw("[]", 2, data, 0, &len);
  expect_load_bytes(b, len, GLOW_ERR_FORMAT, "not a JSON object");
  free(b);
  /* an object, but not a model: no metadata */
  b = join_raw("{}", 2, data, 0, &len);
  expect_load_bytes(b, len, GLOW_ERR_FORMAT, "not a libglow model");
  free(b);
}

/* Only a real escape \u0000 is refused: an escaped backslash followed by
 * the letters u0000 is ordinary text, and loads. */
static void test_load_escaped_nul(void **state) {
  (void)state;
  /* Values (as C strings) of an extra metadata key that cJSON writes with
   * an escaped backslash before u0000. */
  const char *fine[] = {"\\u0000", "a\\\\u0000", "\\u0000\\"};
  for (size_t k = 0; k < sizeof fine / sizeof fine[0]; k++) {
    parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
    set_meta(&p, "note", fine[k]);
    char *text = cJSON_PrintUnformatted(p.h);
    assert_non_null(strstr(text, "u0000"));
    cJSON_free(text);
    expect_load(&p, GLOW_OK, NULL);
    free_parts(&p);
  }
  /* The same place in the JSON text holding a real escape, alone or after
   * an escaped backslash. */
  const char *bad[] = {"\\u0000", "x\\u0000", "\\\\\\u0000", "\\\\\\\\\\u0000"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
    set_meta(&p, "note", "@@");
    char *text = cJSON_PrintUnformatted(p.h);
    char *at = strstr(text, "@@");
    assert_non_null(at);
    size_t tlen = strlen(text) - 2 + strlen(bad[k]);
    char *edited = malloc(tlen + 1);
    memcpy(edited, text, (size_t)(at - text));
    strcpy(edited + (at - text), bad[k]);
    strcat(edited, at + 2);
    size_t len;
    uint8_t *b = join_raw(edited, tlen, p.data, p.data_len, &len);
    expect_load_bytes(b, len, GLOW_ERR_FORMAT, "NUL");
    free(b);
    free(edited);
    cJSON_free(text);
    free_parts(&p);
  }
}

static void test_load_missing_tensor(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  drop_tensor(&p, "level.0.step.0.coupling.conv2.weight");
  expect_load(&p, GLOW_ERR_FORMAT,
              "'level.0.step.0.coupling.conv2.weight' "
              "is missing");
  free_parts(&p);
  /* a missing fixed buffer */
  p = valid_parts(GLOW_PERMUTE_CONV1X1_LU);
  drop_tensor(&p, "level.0.step.0.invconv.sign");
  expect_load(&p, GLOW_ERR_FORMAT, "is missing");
  free_parts(&p);
}

static void test_load_duplicate_tensor(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  const char *name = "level.0.step.0.actnorm.logs";
  cJSON_AddItemToObject(p.h, name, cJSON_Duplicate(entry(&p, name), 1));
  expect_load(&p, GLOW_ERR_FORMAT, "appears twice");
  free_parts(&p);
  /* __metadata__ twice */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_AddItemToObject(p.h, "__metadata__",
                        cJSON_Duplicate(entry(&p, "__metadata__"), 1));
  expect_load(&p, GLOW_ERR_FORMAT, "twice");
  free_parts(&p);
  /* a metadata key twice */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_AddStringToObject(entry(&p, "__metadata__"), "glow.config.depth", "1");
  expect_load(&p, GLOW_ERR_FORMAT, "twice");
  free_parts(&p);
}

static void test_load_unexpected_tensor(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON *e = cJSON_Duplicate(entry(&p, "level.0.step.0.actnorm.logs"), 1);
  cJSON_AddItemToObject(p.h, "level.0.step.0.extra", e);
  size_t b, end;
  offsets(&p, "level.0.step.0.actnorm.logs", &b, &end);
  memcpy(p.data + p.data_len, p.data + b, end - b); /* room was reserved */
  set_offsets(&p, "level.0.step.0.extra", (double)p.data_len,
              (double)(p.data_len + end - b));
  p.data_len += end - b;
  expect_load(&p, GLOW_ERR_FORMAT, "unexpected tensor 'level.0.step.0.extra'");
  free_parts(&p);
  /* a fixed buffer that this permutation does not have */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_AddItemToObject(
      p.h, "level.0.step.0.permute.index",
      cJSON_Duplicate(entry(&p, "level.0.step.0.actnorm.bias"), 1));
  set_offsets(&p, "level.0.step.0.permute.index", (double)p.data_len,
              (double)p.data_len + 16);
  memset(p.data + p.data_len, 0, 16);
  p.data_len += 16;
  expect_load(&p, GLOW_ERR_FORMAT, "unexpected tensor");
  free_parts(&p);
}

static void test_load_wrong_dtype(void **state) {
  (void)state;
  const char *name = "level.0.step.0.coupling.conv2.weight";
  /* same element size: reaches the model's F32 check */
  const char *same[] = {"I32", "U32", "f32"};
  for (size_t k = 0; k < 3; k++) {
    parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
    cJSON_ReplaceItemInObjectCaseSensitive(entry(&p, name), "dtype",
                                           cJSON_CreateString(same[k]));
    expect_load(&p, GLOW_ERR_FORMAT, k < 2 ? "F32 only" : "unknown dtype");
    free_parts(&p);
  }
  /* another element size: the offsets no longer match */
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_ReplaceItemInObjectCaseSensitive(entry(&p, name), "dtype",
                                         cJSON_CreateString("F16"));
  expect_load(&p, GLOW_ERR_FORMAT, "dtype and shape need");
  free_parts(&p);
  /* not a string */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_ReplaceItemInObjectCaseSensitive(entry(&p, name), "dtype",
                                         cJSON_CreateNumber(4));
  expect_load(&p, GLOW_ERR_FORMAT, "dtype");
  free_parts(&p);
}

static void test_load_wrong_shape(void **state) {
  (void)state;
  /* [2][2] (4 floats) instead of [2][2]'s transpose cannot be told apart,
   * so change the shape's rank: conv2 is [hidden][hidden] = [2][2]. */
  const char *name = "level.0.step.0.coupling.conv2.weight";
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_shape(&p, name, (const double[]){4}, 1);
  expect_load(&p, GLOW_ERR_FORMAT,
              "has shape [4], the configuration gives "
              "[2, 2]");
  free_parts(&p);
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_shape(&p, name, (const double[]){1, 4}, 2);
  expect_load(&p, GLOW_ERR_FORMAT, "has shape");
  free_parts(&p);
  /* not integers */
  const double bad[][2] = {{2, 2.5}, {-2, -2}};
  for (int k = 0; k < 2; k++) {
    p = valid_parts(GLOW_PERMUTE_CONV1X1);
    set_shape(&p, name, bad[k], 2);
    expect_load(&p, GLOW_ERR_FORMAT, "not a non-negative integer");
    free_parts(&p);
  }
  /* too many dimensions */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_shape(&p, name, (const double[]){1, 1, 1, 1, 1, 1, 1, 2, 2}, 9);
  expect_load(&p, GLOW_ERR_FORMAT, "dimensions");
  free_parts(&p);
  /* no shape */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_DeleteItemFromObjectCaseSensitive(entry(&p, name), "shape");
  expect_load(&p, GLOW_ERR_FORMAT, "no shape");
  free_parts(&p);
}

static void test_load_shape_overflow(void **state) {
  (void)state;
  const char *name = "level.0.step.0.coupling.conv2.weight";
  const double dims[][4] = {
      {4294967296.0, 4294967296.0, 1, 1},
      {2199023255552.0, 1048576, 4, 1}, /* 2^63 elements: * 4 bytes overflows */
      {9007199254740992.0, 9007199254740992.0, 0, 1}};
  for (int k = 0; k < 2; k++) {
    parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
    set_shape(&p, name, dims[k], 4);
    expect_load(&p, GLOW_ERR_FORMAT, "overflows");
    free_parts(&p);
  }
  /* a zero dimension after huge ones: an empty tensor, not an overflow */
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_shape(&p, name, dims[2], 3);
  expect_load(&p, GLOW_ERR_FORMAT, "need 0");
  free_parts(&p);
}

static void test_load_overlapping_offsets(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  size_t b, e;
  offsets(&p, "level.0.step.0.actnorm.bias", &b, &e);
  /* logs (same shape, stored just after) onto bias's bytes */
  set_offsets(&p, "level.0.step.0.actnorm.logs", (double)b, (double)e);
  expect_load(&p, GLOW_ERR_FORMAT, "overlap");
  free_parts(&p);
  /* partial overlap: shift logs back by one float */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  offsets(&p, "level.0.step.0.actnorm.logs", &b, &e);
  set_offsets(&p, "level.0.step.0.actnorm.logs", (double)b - 4, (double)e - 4);
  expect_load(&p, GLOW_ERR_FORMAT, "overlap");
  free_parts(&p);
}

static void test_load_gap_in_offsets(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  const char *last = last_tensor(&p);
  size_t b, e;
  offsets(&p, last, &b, &e);
  memmove(p.data + b + 4, p.data + b, e - b);
  p.data_len += 4;
  set_offsets(&p, last, (double)b + 4, (double)e + 4);
  expect_load(&p, GLOW_ERR_FORMAT, "gap");
  free_parts(&p);
}

static void test_load_offsets_past_end(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  const char *last = last_tensor(&p);
  size_t b, e;
  offsets(&p, last, &b, &e);
  set_offsets(&p, last, (double)b + 4, (double)e + 4);
  expect_load(&p, GLOW_ERR_FORMAT, "past the end");
  free_parts(&p);
  /* far past, near 2^53 */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  last = last_tensor(&p);
  set_offsets(&p, last, 9007199254740000.0,
              9007199254740000.0 + (double)(e - b));
  expect_load(&p, GLOW_ERR_FORMAT, "past the end");
  free_parts(&p);
}

/* Bytes after the last tensor. */
static void test_load_trailing_bytes(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  memset(p.data + p.data_len, 0, 4);
  p.data_len += 4;
  expect_load(&p, GLOW_ERR_FORMAT, "after the last tensor");
  free_parts(&p);
}

/* Offsets that are not a pair of ordered non-negative integers. */
static void test_load_bad_offsets(void **state) {
  (void)state;
  const char *name = "level.0.step.0.actnorm.bias";
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  size_t b, e;
  offsets(&p, name, &b, &e);
  set_offsets(&p, name, (double)e, (double)b);
  expect_load(&p, GLOW_ERR_FORMAT, "backwards");
  free_parts(&p);
  const double bad[][2] = {{-16, 0}, {0.5, 16.5}, {1e300, 1e300}};
  for (int k = 0; k < 3; k++) {
    p = valid_parts(GLOW_PERMUTE_CONV1X1);
    set_offsets(&p, name, bad[k][0], bad[k][1]);
    expect_load(&p, GLOW_ERR_FORMAT, "data_offsets");
    free_parts(&p);
  }
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_ReplaceItemInObjectCaseSensitive(
      entry(&p, name), "data_offsets",
      cJSON_CreateDoubleArray((const double[]){0, 16, 32}, 3));
  expect_load(&p, GLOW_ERR_FORMAT, "pair");
  free_parts(&p);
  /* an entry that is not an object */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_ReplaceItemInObjectCaseSensitive(p.h, name, cJSON_CreateNumber(1));
  expect_load(&p, GLOW_ERR_FORMAT, "not a JSON object");
  free_parts(&p);
}

/* Configurations that fail validation are malformed files. */
static void test_load_invalid_config(void **state) {
  (void)state;
  const char *cases[][2] = {
      {"glow.config.height", "5"},    {"glow.config.levels", "0"},
      {"glow.config.n_bits", "9"},    {"glow.config.hidden", "-1"},
      {"glow.config.learn_top", "2"}, {"glow.config.class_weight", "-1"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
    set_meta(&p, cases[k][0], cases[k][1]);
    expect_load(&p, GLOW_ERR_FORMAT, "configuration is invalid");
    free_parts(&p);
  }
  /* valid, but not the model whose tensors the file holds */
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_meta(&p, "glow.config.hidden", "1");
  expect_load(&p, GLOW_ERR_FORMAT, "has shape");
  free_parts(&p);
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_meta(&p, "glow.config.permutation", "reverse");
  expect_load(&p, GLOW_ERR_FORMAT, NULL);
  free_parts(&p);
}

/* A tiny file claiming a huge model fails before allocating it. */
static void test_load_forged_huge_config(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_meta(&p, "glow.config.depth", "4096");
  set_meta(&p, "glow.config.hidden", "65536");
  expect_load(&p, GLOW_ERR_FORMAT, "parameters");
  free_parts(&p);
}

/* A file holding +Inf or NaN in a parameter is not a model. */
static void test_load_non_finite_params(void **state) {
  (void)state;
  const char *names[] = {"level.0.step.0.actnorm.logs",
                         "level.0.step.0.invconv.weight",
                         "level.0.step.0.coupling.conv1.weight"};
  const float bad[] = {INFINITY, NAN, -INFINITY};
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
    parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
    float v = bad[k];
    memcpy(tensor_floats(&p, names[k]), &v, sizeof v); /* little-endian */
    expect_load(&p, GLOW_ERR_FORMAT, names[k]);
    free_parts(&p);
  }
}

/* A header far longer than the model's tensors could need is refused
 * before it is parsed: here a valid header with a 4 MiB array in a field
 * that readers ignore. */
static void test_load_header_bound(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  const size_t n = 2u << 20;
  char *pad = malloc(2 * n + 3);
  pad[0] = '[';
  for (size_t i = 0; i < n; i++) {
    pad[1 + 2 * i] = '0';
    pad[2 + 2 * i] = ',';
  }
  pad[2 * n] = ']';
  pad[2 * n + 1] = '\0';
  cJSON_AddItemToObject(entry(&p, "level.0.step.0.actnorm.bias"), "padding",
                        cJSON_CreateRaw(pad));
  free(pad);
  expect_load(&p, GLOW_ERR_FORMAT, "header length");
  free_parts(&p);
}

static void test_load_future_version(void **state) {
  (void)state;
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_meta(&p, "glow.format_version", "2");
  expect_load(&p, GLOW_ERR_VERSION, "newer");
  free_parts(&p);
  /* a future version is reported as such even if the rest is unknown */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_meta(&p, "glow.format_version", "12");
  cJSON_DeleteItemFromObjectCaseSensitive(entry(&p, "__metadata__"),
                                          "glow.config.depth");
  expect_load(&p, GLOW_ERR_VERSION, NULL);
  free_parts(&p);
  const char *bad[] = {"0", "-1", "1.0", "", "99999999999999999999999", " 1"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    p = valid_parts(GLOW_PERMUTE_CONV1X1);
    set_meta(&p, "glow.format_version", bad[k]);
    expect_load(&p, GLOW_ERR_FORMAT, "glow.format_version");
    free_parts(&p);
  }
}

static void test_load_bad_metadata(void **state) {
  (void)state;
  /* no metadata at all */
  parts p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_DeleteItemFromObjectCaseSensitive(p.h, "__metadata__");
  expect_load(&p, GLOW_ERR_FORMAT, "not a libglow model");
  free_parts(&p);
  /* metadata not an object, a value not a string */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_ReplaceItemInObjectCaseSensitive(p.h, "__metadata__",
                                         cJSON_CreateString("x"));
  expect_load(&p, GLOW_ERR_FORMAT, "__metadata__");
  free_parts(&p);
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  cJSON_ReplaceItemInObjectCaseSensitive(
      entry(&p, "__metadata__"), "glow.config.depth", cJSON_CreateNumber(1));
  expect_load(&p, GLOW_ERR_FORMAT, "not a string");
  free_parts(&p);
  /* each required key missing */
  const char *keys[] = {"glow.initialized",         "glow.config.height",
                        "glow.config.width",        "glow.config.channels",
                        "glow.config.levels",       "glow.config.depth",
                        "glow.config.hidden",       "glow.config.coupling",
                        "glow.config.permutation",  "glow.config.n_bits",
                        "glow.config.n_classes",    "glow.config.learn_top",
                        "glow.config.class_weight", "glow.config.seed"};
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
    p = valid_parts(GLOW_PERMUTE_CONV1X1);
    cJSON_DeleteItemFromObjectCaseSensitive(entry(&p, "__metadata__"), keys[k]);
    expect_load(&p, GLOW_ERR_FORMAT, keys[k]);
    free_parts(&p);
  }
  /* malformed values */
  const char *vals[][2] = {
      {"glow.initialized", "yes"},
      {"glow.initialized", "10"},
      {"glow.config.depth", "1x"},
      {"glow.config.depth", "+1"},
      {"glow.config.depth", "2147483648"},
      {"glow.config.depth", " 1"},
      {"glow.config.depth", ""},
      {"glow.config.coupling", "Affine"},
      {"glow.config.coupling", "0"},
      {"glow.config.permutation", "lu"},
      {"glow.config.class_weight", "nan"},
      {"glow.config.class_weight", "inf"},
      {"glow.config.class_weight", "0x1p-3"},
      {"glow.config.class_weight", "1e"},
      {"glow.config.seed", "-1"},
      {"glow.config.seed", "18446744073709551616"},
  };
  for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++) {
    p = valid_parts(GLOW_PERMUTE_CONV1X1);
    set_meta(&p, vals[k][0], vals[k][1]);
    expect_load(&p, GLOW_ERR_FORMAT, vals[k][0]);
    free_parts(&p);
  }
  /* unknown keys (other tools', future compatible ones) are ignored, and
   * the library version is informative */
  p = valid_parts(GLOW_PERMUTE_CONV1X1);
  set_meta(&p, "format", "pt");
  set_meta(&p, "glow.something_new", "1");
  cJSON_DeleteItemFromObjectCaseSensitive(entry(&p, "__metadata__"),
                                          "glow.library_version");
  expect_load(&p, GLOW_OK, NULL);
  free_parts(&p);
}

/* Fixed buffers must be what they claim: permutations, reversals, signs. */
static void test_load_bad_permutation(void **state) {
  (void)state;
  /* tiny models have c = 4 channels at level 0 */
  const float bad[][4] = {{0, 1, 1, 3},    /* not a permutation */
                          {0, 1, 2, 4},    /* out of range */
                          {0, 1, 2, -1},   /* negative */
                          {0, 1, 2.5f, 3}, /* not an integer */
                          {0, 1, 2, NAN}};
  const int32_t kinds[] = {GLOW_PERMUTE_SHUFFLE, GLOW_PERMUTE_CONV1X1_LU};
  const char *names[] = {"level.0.step.0.permute.index",
                         "level.0.step.0.invconv.perm"};
  for (int kind = 0; kind < 2; kind++)
    for (int k = 0; k < 5; k++) {
      parts p = valid_parts(kinds[kind]);
      memcpy(tensor_floats(&p, names[kind]), bad[k], sizeof bad[k]);
      expect_load(&p, GLOW_ERR_FORMAT,
                  k == 0 ? "not a permutation" : "not a channel index");
      free_parts(&p);
    }
  /* a valid permutation, but 'reverse' means exactly c-1-j */
  parts p = valid_parts(GLOW_PERMUTE_REVERSE);
  memcpy(tensor_floats(&p, "level.0.step.0.permute.index"),
         (const float[]){3, 2, 0, 1}, 16);
  expect_load(&p, GLOW_ERR_FORMAT, "reversal");
  free_parts(&p);
  /* any permutation is a valid shuffle: the file is authoritative */
  p = valid_parts(GLOW_PERMUTE_SHUFFLE);
  memcpy(tensor_floats(&p, "level.0.step.0.permute.index"),
         (const float[]){3, 2, 0, 1}, 16);
  expect_load(&p, GLOW_OK, NULL);
  free_parts(&p);
}

static void test_load_bad_sign(void **state) {
  (void)state;
  const float bad[] = {0.0f, 0.5f, -2.0f, NAN, INFINITY};
  for (int k = 0; k < 5; k++) {
    parts p = valid_parts(GLOW_PERMUTE_CONV1X1_LU);
    tensor_floats(&p, "level.0.step.0.invconv.sign")[2] = bad[k];
    expect_load(&p, GLOW_ERR_FORMAT, "not a sign");
    free_parts(&p);
  }
}

/* ---- The Python reader in docs/format.md --------------------------------- */

/* The source tree, from this file's path (CMake compiles it by absolute
 * path). */
static void source_path(char *buf, size_t n, const char *rel) {
  const char *env = getenv("GLOW_SOURCE_DIR");
  if (env) {
    snprintf(buf, n, "%s/%s", env, rel);
    return;
  }
  const char *f = __FILE__;
  const char *cut = strstr(f, "tests/test_io.c");
  assert_non_null(cut);
  snprintf(buf, n, "%.*s%s", (int)(cut - f), f, rel);
}

static void test_python_reader_doc(void **state) {
  (void)state;
  if (system("python3 -c 'import json, struct' >/dev/null 2>&1") != 0) {
    print_message("python3 not available: skipping\n");
    skip();
  }
  char doc[512];
  source_path(doc, sizeof doc, "docs/format.md");
  size_t len;
  uint8_t *md = read_all(doc, &len);
  md[len] = '\0';
  const char *start = strstr((const char *)md, "```python\n");
  assert_non_null(start);
  start += strlen("```python\n");
  const char *end = strstr(start, "```");
  assert_non_null(end);
  int lines = 0;
  for (const char *c = start; c < end; c++)
    lines += *c == '\n';
  assert_true(lines <= 10);
  char script[256], model[256], cmd[1024];
  path_in(script, sizeof script, "read_model.py");
  path_in(model, sizeof model, "py.safetensors");
  write_all(script, start, (size_t)(end - start));
  free(md);

  /* 8x8x1: level 0 has c = 4 channels; known actnorm biases. */
  glow_config cfg =
      tu_config(8, 8, 1, 1, 1, 4, GLOW_COUPLING_AFFINE, GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  int32_t i;
  assert_int_equal(glow_tensor_find(m, "level.0.step.0.actnorm.bias", &i),
                   GLOW_OK);
  glow_tensor_info info = {.size = sizeof info};
  assert_int_equal(glow_tensor_get(m, i, &info), GLOW_OK);
  assert_int_equal(info.count, 4);
  const float bias[4] = {0.5f, -1.25f, 2.0f, 3.75f};
  memcpy(glow_params(m) + info.offset, bias, sizeof bias);
  assert_int_equal(glow_model_save(m, model), GLOW_OK);
  glow_model_free(m);

  snprintf(cmd, sizeof cmd, "python3 '%s' '%s' 2>&1", script, model);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char out[512] = {0};
  size_t got = fread(out, 1, sizeof out - 1, p);
  int status = pclose(p);
  out[got] = '\0';
  if (status != 0)
    fail_msg("python3 failed (%d): %s", status, out);
  assert_string_equal(out, "8 8 1 [4] (0.5, -1.25, 2.0, 3.75)\n");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_file_all_kinds),
      cmocka_unit_test(test_roundtrip_conditional),
      cmocka_unit_test(test_roundtrip_buffer_matches_file),
      cmocka_unit_test(test_save_buffer_size_rules),
      cmocka_unit_test(test_file_layout),
      cmocka_unit_test(test_tensor_introspection),
      cmocka_unit_test(test_save_atomic_replace),
      cmocka_unit_test(test_save_null_args),
      cmocka_unit_test(test_save_to_directory),
      cmocka_unit_test(test_save_readonly_target),
      cmocka_unit_test(test_save_unwritable_location),
      cmocka_unit_test(test_save_not_regular_file),
      cmocka_unit_test(test_save_long_name),
      cmocka_unit_test(test_save_non_finite_params),
      cmocka_unit_test(test_load_null_args),
      cmocka_unit_test(test_load_nonexistent_path),
      cmocka_unit_test(test_load_directory),
      cmocka_unit_test(test_load_not_regular_file),
      cmocka_unit_test(test_load_truncated),
      cmocka_unit_test(test_load_header_length_past_end),
      cmocka_unit_test(test_load_header_length_absurd),
      cmocka_unit_test(test_load_header_not_object),
      cmocka_unit_test(test_load_escaped_nul),
      cmocka_unit_test(test_load_missing_tensor),
      cmocka_unit_test(test_load_duplicate_tensor),
      cmocka_unit_test(test_load_unexpected_tensor),
      cmocka_unit_test(test_load_wrong_dtype),
      cmocka_unit_test(test_load_wrong_shape),
      cmocka_unit_test(test_load_shape_overflow),
      cmocka_unit_test(test_load_overlapping_offsets),
      cmocka_unit_test(test_load_gap_in_offsets),
      cmocka_unit_test(test_load_offsets_past_end),
      cmocka_unit_test(test_load_trailing_bytes),
      cmocka_unit_test(test_load_bad_offsets),
      cmocka_unit_test(test_load_invalid_config),
      cmocka_unit_test(test_load_forged_huge_config),
      cmocka_unit_test(test_load_non_finite_params),
      cmocka_unit_test(test_load_header_bound),
      cmocka_unit_test(test_load_future_version),
      cmocka_unit_test(test_load_bad_metadata),
      cmocka_unit_test(test_load_bad_permutation),
      cmocka_unit_test(test_load_bad_sign),
      cmocka_unit_test(test_python_reader_doc),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
