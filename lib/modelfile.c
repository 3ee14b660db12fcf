/*
 * modelfile.c -- a model as a safetensors file (docs/format.md), and the
 * parameter introspection that the file writer shares with hosts.
 *
 * Saving: the parameter tensors in glow_params() order (so the data section
 * starts with a copy of the parameter buffer), then each step's fixed
 * buffers; the configuration and state go to the header's metadata.
 *
 * Loading never trusts the input: safetensors.c validates the container,
 * then the configuration in the metadata is validated and the model is
 * built from it (refusing any that needs more parameters than the data
 * holds), the file's tensors must be exactly the model's, names and
 * shapes, and the fixed buffers must be true permutations and signs.
 * Only then is the model handed out.
 */
#define _POSIX_C_SOURCE 200809L /* open, pread, fsync, newlocale */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "glow_internal.h"

/* Bytes converted per write or read: large enough for few system calls,
 * small enough for the stack. */
#define CHUNK 8192

/* ---- Parameter introspection --------------------------------------------- */

/* The one description of parameter tensor i, for hosts and the writer. */
static void tensor_info(const glow_model *m, int32_t i, glow_tensor_info *t) {
  const glow__tensor *src = &m->tensors[i];
  memset(t, 0, sizeof *t);
  t->size = (uint32_t)sizeof *t;
  t->ndim = src->ndim;
  t->name = src->name;
  t->offset = src->offset;
  t->count = glow__tensor_count(src);
  for (int32_t d = 0; d < src->ndim; d++)
    t->shape[d] = src->shape[d];
}

int32_t glow_tensor_count(const glow_model *m) {
  return m ? m->n_tensors : -1;
}

int glow_tensor_get(const glow_model *m, int32_t index,
                    glow_tensor_info *out) {
  if (!m || !out)
    return glow__fail(GLOW_ERR_NULL, "glow_tensor_get: %s is NULL",
                      !m ? "model" : "out");
  if (out->size < GLOW_TENSOR_INFO_SIZE_V1)
    return glow__fail(GLOW_ERR_ARG,
                      "glow_tensor_get: out->size %u is smaller than %u: set "
                      "it to sizeof(glow_tensor_info)",
                      (unsigned)out->size, (unsigned)GLOW_TENSOR_INFO_SIZE_V1);
  if (index < 0 || index >= m->n_tensors)
    return glow__fail(GLOW_ERR_ARG,
                      "glow_tensor_get: index %d outside [0, %d)", index,
                      m->n_tensors);
  glow_tensor_info t;
  tensor_info(m, index, &t);
  /* A newer caller's larger struct keeps the fields we do not know. */
  uint32_t keep = out->size;
  memcpy(out, &t, keep < sizeof t ? keep : sizeof t);
  out->size = keep;
  return GLOW_OK;
}

int glow_tensor_find(const glow_model *m, const char *name, int32_t *index) {
  if (!m || !name || !index)
    return glow__fail(GLOW_ERR_NULL, "glow_tensor_find: %s is NULL",
                      !m ? "model" : !name ? "name" : "index");
  for (int32_t i = 0; i < m->n_tensors; i++)
    if (!strcmp(m->tensors[i].name, name)) {
      *index = i;
      return GLOW_OK;
    }
  *index = -1;
  return glow__fail(GLOW_ERR_ARG, "glow_tensor_find: no tensor '%.80s'",
                    name);
}

/* ---- The file's tensors -------------------------------------------------- */

enum {
  FT_PARAM, /* a parameter tensor: glow_params() + offset          */
  FT_INDEX, /* a step's permutation indices (glow__permute.perm)   */
  FT_SIGN   /* an LU step's diagonal signs (glow__permute.sign)    */
};

typedef struct {
  char name[GLOW__NAME_MAX];
  int32_t kind;
  int32_t ndim;
  int32_t shape[GLOW_TENSOR_MAX_DIMS];
  int64_t count;
  int64_t offset;       /* FT_PARAM: first element in the parameters */
  int32_t level, step;  /* FT_INDEX, FT_SIGN: whose buffer            */
  int seen;             /* loading: found in the file                 */
} ftensor;

static void add_buffer(ftensor *t, int32_t kind, int32_t l, int32_t k,
                       int32_t c, const char *suffix) {
  snprintf(t->name, sizeof t->name, "level.%d.step.%d.%s", l, k, suffix);
  t->kind = kind;
  t->ndim = 1;
  t->shape[0] = c;
  t->count = c;
  t->level = l;
  t->step = k;
}

/* Every tensor of the model's file, in file order: the parameter tensors
 * (through tensor_info, as glow_tensor_get reports them), then per step its
 * fixed buffers. */
static int file_tensors(const glow_model *m, ftensor **out, int32_t *n) {
  const glow_config *cfg = &m->cfg;
  const int32_t steps = cfg->levels * cfg->depth;
  int32_t per_step = cfg->permutation == GLOW_PERMUTE_CONV1X1_LU ? 2
                     : cfg->permutation == GLOW_PERMUTE_CONV1X1  ? 0
                                                                 : 1;
  int64_t total = (int64_t)m->n_tensors + (int64_t)per_step * steps;
  if (total > INT32_MAX)
    return glow__fail(GLOW_ERR_FORMAT, "model file: too many tensors");
  ftensor *t = calloc((size_t)total, sizeof *t);
  if (!t)
    return glow__fail(GLOW_ERR_NOMEM, "model file: out of memory");
  int32_t i = 0;
  for (; i < m->n_tensors; i++) {
    glow_tensor_info info;
    tensor_info(m, i, &info);
    snprintf(t[i].name, sizeof t[i].name, "%s", info.name);
    t[i].kind = FT_PARAM;
    t[i].ndim = info.ndim;
    memcpy(t[i].shape, info.shape, sizeof t[i].shape);
    t[i].count = info.count;
    t[i].offset = info.offset;
  }
  for (int32_t l = 0; l < cfg->levels; l++)
    for (int32_t k = 0; k < cfg->depth; k++) {
      int32_t c = m->levels[l].steps[k].perm.c;
      if (per_step == 1) {
        add_buffer(&t[i++], FT_INDEX, l, k, c, "permute.index");
      } else if (per_step == 2) {
        add_buffer(&t[i++], FT_INDEX, l, k, c, "invconv.perm");
        add_buffer(&t[i++], FT_SIGN, l, k, c, "invconv.sign");
      }
    }
  *out = t;
  *n = (int32_t)total;
  return GLOW_OK;
}

/* ---- Metadata ------------------------------------------------------------ */

static const char *const coupling_names[] = {"affine", "additive"};
static const char *const permutation_names[] = {"conv1x1", "conv1x1_lu",
                                                "reverse", "shuffle"};

/* The int32 fields of glow_config, stored as decimal strings. */
static const struct {
  const char *key;
  size_t offset;
} int_fields[] = {
    {"glow.config.height", offsetof(glow_config, height)},
    {"glow.config.width", offsetof(glow_config, width)},
    {"glow.config.channels", offsetof(glow_config, channels)},
    {"glow.config.levels", offsetof(glow_config, levels)},
    {"glow.config.depth", offsetof(glow_config, depth)},
    {"glow.config.hidden", offsetof(glow_config, hidden)},
    {"glow.config.n_bits", offsetof(glow_config, n_bits)},
    {"glow.config.n_classes", offsetof(glow_config, n_classes)},
    {"glow.config.learn_top", offsetof(glow_config, learn_top)},
};
#define N_INT_FIELDS ((int32_t)(sizeof int_fields / sizeof int_fields[0]))
/* format_version, library_version, initialized, the int fields, coupling,
 * permutation, class_weight, seed. */
#define N_META (3 + N_INT_FIELDS + 4)

static int bad_meta(const char *key, const char *v, const char *want) {
  return glow__fail(GLOW_ERR_FORMAT,
                    "model file: metadata '%s' = '%.32s' is not %s", key, v,
                    want);
}

/* Text <-> float in the "C" locale whatever the host program's locale, so
 * that a file reads the same everywhere.  Writes the shortest decimal that
 * reads back as exactly v. */
static int float_to_text(float v, char *buf, size_t n) {
  locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  if (!c)
    return glow__fail(GLOW_ERR_NOMEM, "model file: cannot create the C "
                                      "locale");
  locale_t old = uselocale(c);
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, n, "%.*g", prec, (double)v);
    if (strtof(buf, NULL) == v)
      break;
  }
  uselocale(old);
  freelocale(c);
  return GLOW_OK;
}

/* GLOW_OK, or FORMAT naming `key` if s is not plain decimal notation, or
 * NOMEM if the C locale cannot be created (as in float_to_text). */
static int text_to_float(const char *key, const char *s, float *out) {
  size_t len = strlen(s);
  /* Plain decimal notation only: no "inf", "nan", hex or spaces, which
   * strtof would also accept. */
  if (len == 0 || len > 64 || strspn(s, "0123456789+-.eE") != len)
    return bad_meta(key, s, "a decimal number");
  locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  if (!c)
    return glow__fail(GLOW_ERR_NOMEM, "model file: cannot create the C "
                                      "locale");
  locale_t old = uselocale(c);
  char *end = NULL;
  *out = strtof(s, &end);
  uselocale(old);
  freelocale(c);
  return end == s + len ? GLOW_OK : bad_meta(key, s, "a decimal number");
}

/* Decimal digits only, at most UINT64_MAX. */
static int text_to_u64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  if (!*s)
    return 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return 0;
    uint64_t d = (uint64_t)(*s - '0');
    if (v > (UINT64_MAX - d) / 10)
      return 0;
    v = v * 10 + d;
  }
  *out = v;
  return 1;
}

/* An optional '-' and decimal digits, within int32_t. */
static int text_to_i32(const char *s, int32_t *out) {
  int neg = *s == '-';
  uint64_t v;
  if (!text_to_u64(s + neg, &v) || v > (uint64_t)INT32_MAX + (uint64_t)neg)
    return 0;
  *out = neg ? (int32_t)(-(int64_t)v) : (int32_t)v;
  return 1;
}

/* The metadata pairs of a model; the values live in vals. */
static int write_meta(const glow_model *m, const char **kv,
                      char (*vals)[32]) {
  const glow_config *c = &m->cfg;
  int32_t i = 0;
  kv[2 * i] = "glow.format_version";
  snprintf(vals[i], 32, "%d", GLOW_FORMAT_VERSION);
  kv[2 * i + 1] = vals[i];
  i++;
  kv[2 * i] = "glow.library_version";
  kv[2 * i + 1] = glow_version_string();
  i++;
  kv[2 * i] = "glow.initialized";
  kv[2 * i + 1] = m->initialized ? "1" : "0";
  i++;
  for (int32_t f = 0; f < N_INT_FIELDS; f++, i++) {
    int32_t v;
    memcpy(&v, (const char *)c + int_fields[f].offset, sizeof v);
    snprintf(vals[i], 32, "%d", v);
    kv[2 * i] = int_fields[f].key;
    kv[2 * i + 1] = vals[i];
  }
  kv[2 * i] = "glow.config.coupling";
  kv[2 * i + 1] = coupling_names[c->coupling];
  i++;
  kv[2 * i] = "glow.config.permutation";
  kv[2 * i + 1] = permutation_names[c->permutation];
  i++;
  kv[2 * i] = "glow.config.class_weight";
  int rc = float_to_text(c->class_weight, vals[i], 32);
  if (rc)
    return rc;
  kv[2 * i + 1] = vals[i];
  i++;
  kv[2 * i] = "glow.config.seed";
  snprintf(vals[i], 32, "%" PRIu64, c->seed);
  kv[2 * i + 1] = vals[i];
  return GLOW_OK;
}

static int need_meta(const glow__st_header *h, const char *key,
                     const char **v) {
  *v = glow__st_meta(h, key);
  if (!*v)
    return glow__fail(GLOW_ERR_FORMAT, "model file: metadata has no '%s'",
                      key);
  return GLOW_OK;
}

static int name_index(const char *v, const char *const *names, int32_t n) {
  for (int32_t i = 0; i < n; i++)
    if (!strcmp(v, names[i]))
      return i;
  return -1;
}

/* Format version first, so that a newer file is reported as such rather
 * than as malformed; then the state and the whole configuration. */
static int read_meta(const glow__st_header *h, glow_config *cfg,
                     int *initialized) {
  const char *v = glow__st_meta(h, "glow.format_version");
  if (!v)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: no glow.format_version in the metadata: "
                      "not a libglow model");
  uint64_t version;
  if (!text_to_u64(v, &version) || version == 0)
    return bad_meta("glow.format_version", v, "a positive integer");
  if (version > GLOW_FORMAT_VERSION)
    return glow__fail(GLOW_ERR_VERSION,
                      "model file: format version %" PRIu64
                      " is newer than version %d, the newest this library "
                      "(%s) reads",
                      version, GLOW_FORMAT_VERSION, glow_version_string());
  int rc = need_meta(h, "glow.initialized", &v);
  if (rc)
    return rc;
  if (strcmp(v, "0") && strcmp(v, "1"))
    return bad_meta("glow.initialized", v, "0 or 1");
  *initialized = v[0] == '1';

  glow_config_init(cfg);
  for (int32_t f = 0; f < N_INT_FIELDS; f++) {
    int32_t x;
    if ((rc = need_meta(h, int_fields[f].key, &v)))
      return rc;
    if (!text_to_i32(v, &x))
      return bad_meta(int_fields[f].key, v, "a 32-bit decimal integer");
    memcpy((char *)cfg + int_fields[f].offset, &x, sizeof x);
  }
  if ((rc = need_meta(h, "glow.config.coupling", &v)))
    return rc;
  if ((cfg->coupling = name_index(v, coupling_names, 2)) < 0)
    return bad_meta("glow.config.coupling", v, "affine or additive");
  if ((rc = need_meta(h, "glow.config.permutation", &v)))
    return rc;
  if ((cfg->permutation = name_index(v, permutation_names, 4)) < 0)
    return bad_meta("glow.config.permutation", v,
                    "conv1x1, conv1x1_lu, reverse or shuffle");
  if ((rc = need_meta(h, "glow.config.class_weight", &v)))
    return rc;
  if ((rc = text_to_float("glow.config.class_weight", v,
                           &cfg->class_weight)))
    return rc;
  if ((rc = need_meta(h, "glow.config.seed", &v)))
    return rc;
  if (!text_to_u64(v, &cfg->seed))
    return bad_meta("glow.config.seed", v, "a 64-bit unsigned integer");

  if (glow__config_check(cfg)) {
    char why[256];
    snprintf(why, sizeof why, "%s", glow_last_error());
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: the configuration is invalid: %s", why);
  }
  return GLOW_OK;
}

/* ---- Writing ------------------------------------------------------------- */

/* What a save writes: the tensors with their offsets, and the header. */
typedef struct {
  ftensor *t;
  int32_t n;
  char *header;
  uint64_t header_len;
  uint64_t total; /* bytes of the whole file */
} plan;

static void plan_free(plan *p) {
  free(p->t);
  free(p->header);
}

static int plan_file(const glow_model *m, plan *p) {
  memset(p, 0, sizeof *p);
  int rc = file_tensors(m, &p->t, &p->n);
  if (rc)
    return rc;
  glow__st_entry *e = calloc((size_t)p->n, sizeof *e);
  if (!e) {
    plan_free(p);
    return glow__fail(GLOW_ERR_NOMEM, "model file: out of memory");
  }
  uint64_t at = 0;
  for (int32_t i = 0; i < p->n; i++) {
    e[i].name = p->t[i].name;
    e[i].dtype = "F32";
    e[i].ndim = p->t[i].ndim;
    for (int32_t d = 0; d < p->t[i].ndim; d++)
      e[i].shape[d] = (uint64_t)p->t[i].shape[d];
    e[i].begin = at;
    at += 4 * (uint64_t)p->t[i].count;
    e[i].end = at;
  }
  const char *kv[2 * N_META];
  char vals[N_META][32];
  rc = write_meta(m, kv, vals);
  if (!rc)
    rc = glow__st_build(e, p->n, kv, N_META, &p->header, &p->header_len);
  free(e);
  if (rc) {
    plan_free(p);
    return rc;
  }
  p->total = 8 + p->header_len + at;
  return GLOW_OK;
}

/* Where the bytes go: a caller's buffer (checked to be large enough) or a
 * file descriptor. */
typedef struct {
  uint8_t *buf;
  size_t pos;
  int fd;
  const char *path;
} sink;

static const char *os_error(int err, char *buf, size_t n) {
  if (strerror_r(err, buf, n) != 0)
    snprintf(buf, n, "error %d", err);
  return buf;
}

static int sink_write(sink *s, const void *p, size_t n) {
  if (s->buf) {
    memcpy(s->buf + s->pos, p, n);
    s->pos += n;
    return GLOW_OK;
  }
  const uint8_t *b = p;
  while (n > 0) {
    ssize_t w = write(s->fd, b, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      char why[128];
      return glow__fail(GLOW_ERR_IO, "glow_model_save: writing '%.200s': %s",
                        s->path, os_error(w < 0 ? errno : EIO, why,
                                          sizeof why));
    }
    b += w;
    n -= (size_t)w;
  }
  return GLOW_OK;
}

static int emit(const glow_model *m, const plan *p, sink *s) {
  uint8_t bytes[CHUNK];
  float vals[CHUNK / 4];
  glow__st_put_u64(bytes, p->header_len);
  int rc = sink_write(s, bytes, 8);
  if (!rc)
    rc = sink_write(s, p->header, (size_t)p->header_len);
  for (int32_t i = 0; i < p->n && !rc; i++) {
    const ftensor *t = &p->t[i];
    const glow__permute *perm =
        t->kind == FT_PARAM ? NULL : &m->levels[t->level].steps[t->step].perm;
    for (int64_t j = 0; j < t->count && !rc; j += CHUNK / 4) {
      int64_t k = t->count - j < CHUNK / 4 ? t->count - j : CHUNK / 4;
      const float *src = vals;
      if (t->kind == FT_PARAM)
        src = m->params + t->offset + j;
      else if (t->kind == FT_SIGN)
        src = perm->sign + j;
      else /* channel indices < 2^24 are exact in float */
        for (int64_t q = 0; q < k; q++)
          vals[q] = (float)perm->perm[j + q];
      glow__st_put_f32(src, bytes, (size_t)k);
      rc = sink_write(s, bytes, (size_t)k * 4);
    }
  }
  return rc;
}

int glow_model_save_buffer(const glow_model *m, void *buf, size_t cap,
                           size_t *size) {
  if (!m || !size || (!buf && cap > 0))
    return glow__fail(GLOW_ERR_NULL, "glow_model_save_buffer: %s is NULL",
                      !m ? "model" : !size ? "size" : "buf");
  plan p;
  int rc = plan_file(m, &p);
  if (rc)
    return rc;
  if (p.total > SIZE_MAX) {
    plan_free(&p);
    return glow__fail(GLOW_ERR_NOMEM,
                      "glow_model_save_buffer: the file does not fit in "
                      "memory");
  }
  *size = (size_t)p.total;
  if (!buf) {
    plan_free(&p);
    return GLOW_OK;
  }
  if (cap < p.total) {
    plan_free(&p);
    return glow__fail(GLOW_ERR_BUFFER,
                      "glow_model_save_buffer: the buffer holds %zu bytes, "
                      "the model needs %zu",
                      cap, *size);
  }
  sink s = {.buf = buf, .fd = -1};
  rc = emit(m, &p, &s);
  plan_free(&p);
  return rc;
}

/* Flush the directory entry of a renamed file.  Best effort: some file
 * systems cannot sync a directory, and the data itself is already safe. */
static void sync_parent(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path))
                    : strdup(".");
  if (!dir)
    return;
  int fd = open(dir, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

int glow_model_save(const glow_model *m, const char *path) {
  if (!m || !path)
    return glow__fail(GLOW_ERR_NULL, "glow_model_save: %s is NULL",
                      !m ? "model" : "path");
  char why[128];
  struct stat st;
  int mode = -1; /* rwx bits of the file being replaced */
  if (!*path)
    return glow__fail(GLOW_ERR_IO, "glow_model_save: the path is empty");
  if (stat(path, &st) == 0) {
    /* Only the permission bits: setuid, setgid and sticky are not
     * carried over to a file the library writes. */
    mode = (int)(st.st_mode & 0777);
    if (S_ISDIR(st.st_mode))
      return glow__fail(GLOW_ERR_IO, "glow_model_save: '%.200s' is a "
                                     "directory", path);
    if (!(st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) ||
        access(path, W_OK) != 0)
      return glow__fail(GLOW_ERR_IO,
                        "glow_model_save: '%.200s' is read-only; not "
                        "replacing it", path);
  } else if (errno != ENOENT) {
    return glow__fail(GLOW_ERR_IO, "glow_model_save: cannot access "
                                   "'%.200s': %s",
                      path, os_error(errno, why, sizeof why));
  }
  plan p;
  int rc = plan_file(m, &p);
  if (rc)
    return rc;

  /* A unique name next to the target, so that the rename stays within one
   * file system and is atomic. */
  static atomic_uint counter;
  size_t tlen = strlen(path) + 64;
  char *tmp = malloc(tlen);
  if (!tmp) {
    plan_free(&p);
    return glow__fail(GLOW_ERR_NOMEM, "glow_model_save: out of memory");
  }
  int fd = -1;
  for (int tries = 0; tries < 100 && fd < 0; tries++) {
    snprintf(tmp, tlen, "%s.tmp-%ld-%u", path, (long)getpid(),
             atomic_fetch_add(&counter, 1u));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST)
      break;
  }
  if (fd < 0) {
    rc = glow__fail(GLOW_ERR_IO,
                    "glow_model_save: cannot create a temporary file next "
                    "to '%.200s': %s",
                    path, os_error(errno, why, sizeof why));
    plan_free(&p);
    free(tmp);
    return rc;
  }
  /* A replaced file keeps its permissions; a new one gets the umask's. */
  if (mode >= 0 && fchmod(fd, (mode_t)mode) != 0)
    rc = glow__fail(GLOW_ERR_IO,
                    "glow_model_save: setting the permissions of '%.200s': "
                    "%s",
                    tmp, os_error(errno, why, sizeof why));
  sink s = {.fd = fd, .path = tmp};
  if (!rc)
    rc = emit(m, &p, &s);
  plan_free(&p);
  if (!rc && fsync(fd) != 0)
    rc = glow__fail(GLOW_ERR_IO, "glow_model_save: flushing '%.200s': %s",
                    tmp, os_error(errno, why, sizeof why));
  if (close(fd) != 0 && !rc)
    rc = glow__fail(GLOW_ERR_IO, "glow_model_save: closing '%.200s': %s",
                    tmp, os_error(errno, why, sizeof why));
  if (!rc && rename(tmp, path) != 0)
    rc = glow__fail(GLOW_ERR_IO,
                    "glow_model_save: renaming the temporary file to "
                    "'%.200s': %s",
                    path, os_error(errno, why, sizeof why));
  if (rc)
    unlink(tmp);
  else
    sync_parent(path);
  free(tmp);
  return rc;
}

/* ---- Reading ------------------------------------------------------------- */

/* Where the bytes come from: memory or a file descriptor of `size` bytes. */
typedef struct {
  const uint8_t *mem;
  int fd;
  uint64_t size;
} source;

static int src_read(const source *s, uint64_t off, void *dst, size_t n) {
  if (off > s->size || n > s->size - off) /* callers check; kept as a guard */
    return glow__fail(GLOW_ERR_FORMAT, "model file: read past the end");
  if (s->mem) {
    memcpy(dst, s->mem + off, n);
    return GLOW_OK;
  }
  uint8_t *b = dst;
  while (n > 0) {
    ssize_t r = pread(s->fd, b, n, (off_t)off);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      char why[128];
      return glow__fail(GLOW_ERR_IO, "glow_model_load: reading: %s",
                        r < 0 ? os_error(errno, why, sizeof why)
                              : "the file shrank while it was read");
    }
    b += r;
    off += (uint64_t)r;
    n -= (size_t)r;
  }
  return GLOW_OK;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const ftensor *)a)->name, ((const ftensor *)b)->name);
}

static int find_name(const void *key, const void *t) {
  return strcmp(key, ((const ftensor *)t)->name);
}

static void shape_text(char *buf, size_t n, int32_t ndim,
                       const uint64_t *shape) {
  size_t at = 0;
  buf[0] = '\0';
  for (int32_t d = 0; d < ndim && at < n; d++) {
    int w = snprintf(buf + at, n - at, d ? ", %" PRIu64 : "%" PRIu64,
                     shape[d]);
    if (w < 0)
      break;
    at += (size_t)w;
  }
}

/* The file's tensors are exactly the model's: for each header entry its
 * tensor (sorted t, by name) in which[i]. */
static int match(const glow__st_header *h, ftensor *t, int32_t n,
                 ftensor **which) {
  qsort(t, (size_t)n, sizeof *t, by_name);
  for (int32_t i = 0; i < h->n_entries; i++) {
    const glow__st_entry *e = &h->entries[i];
    ftensor *f = bsearch(e->name, t, (size_t)n, sizeof *t, find_name);
    if (!f)
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: unexpected tensor '%.64s' (not part of "
                        "a model of this configuration)",
                        e->name);
    if (strcmp(e->dtype, "F32"))
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s' has dtype %.16s; model files "
                        "hold F32 only",
                        f->name, e->dtype);
    int same = e->ndim == f->ndim;
    for (int32_t d = 0; same && d < f->ndim; d++)
      same = e->shape[d] == (uint64_t)f->shape[d];
    if (!same) {
      char got[160], want[160];
      uint64_t fs[GLOW__ST_MAX_DIMS];
      for (int32_t d = 0; d < f->ndim; d++)
        fs[d] = (uint64_t)f->shape[d];
      shape_text(got, sizeof got, e->ndim, e->shape);
      shape_text(want, sizeof want, f->ndim, fs);
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s' has shape [%s], the "
                        "configuration gives [%s]",
                        f->name, got, want);
    }
    f->seen = 1; /* the container already refused duplicate names */
    which[i] = f;
  }
  for (int32_t i = 0; i < n; i++)
    if (!t[i].seen)
      return glow__fail(GLOW_ERR_FORMAT, "model file: tensor '%s' is missing",
                        t[i].name);
  return GLOW_OK;
}

/* A fixed buffer, read into v, checked, then stored in its step. */
static int store_buffer(glow_model *m, const ftensor *t, const float *v,
                        uint8_t *used) {
  glow__permute *p = &m->levels[t->level].steps[t->step].perm;
  const int32_t c = p->c;
  if (t->kind == FT_SIGN) {
    for (int32_t j = 0; j < c; j++) {
      if (v[j] != 1.0f && v[j] != -1.0f)
        return glow__fail(GLOW_ERR_FORMAT,
                          "model file: tensor '%s': entry %d = %g is not a "
                          "sign (+1 or -1)",
                          t->name, j, (double)v[j]);
      p->sign[j] = v[j];
    }
    return GLOW_OK;
  }
  memset(used, 0, (size_t)c);
  for (int32_t j = 0; j < c; j++) {
    if (!(v[j] >= 0.0f && v[j] < (float)c) || v[j] != floorf(v[j]))
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s': entry %d = %g is not a "
                        "channel index in [0, %d)",
                        t->name, j, (double)v[j], c);
    int32_t k = (int32_t)v[j];
    if (used[k])
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s' is not a permutation: "
                        "channel %d appears twice",
                        t->name, k);
    if (p->kind == GLOW_PERMUTE_REVERSE && k != c - 1 - j)
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%s' is not the channel reversal "
                        "that permutation 'reverse' means",
                        t->name);
    used[k] = 1;
    p->perm[j] = k;
  }
  return GLOW_OK;
}

/* Copy every tensor's data into the model, in file order. */
static int read_data(const source *src, uint64_t data_off,
                     const glow__st_header *h, ftensor **which,
                     glow_model *m) {
  uint8_t bytes[CHUNK];
  float *vals = malloc(sizeof *vals * (size_t)m->max_c);
  uint8_t *used = malloc((size_t)m->max_c);
  int rc = vals && used ? GLOW_OK
                        : glow__fail(GLOW_ERR_NOMEM, "model file: out of "
                                                     "memory");
  for (int32_t i = 0; i < h->n_entries && !rc; i++) {
    const ftensor *t = which[i];
    const uint64_t at = data_off + h->entries[i].begin;
    for (int64_t j = 0; j < t->count && !rc; j += CHUNK / 4) {
      int64_t k = t->count - j < CHUNK / 4 ? t->count - j : CHUNK / 4;
      rc = src_read(src, at + 4 * (uint64_t)j, bytes, (size_t)k * 4);
      if (!rc)
        glow__st_get_f32(bytes, t->kind == FT_PARAM
                                    ? m->params + t->offset + j
                                    : vals + j,
                         (size_t)k);
    }
    if (!rc && t->kind != FT_PARAM)
      rc = store_buffer(m, t, vals, used);
  }
  free(vals);
  free(used);
  return rc;
}

static int load(const source *src, glow_model **out) {
  uint8_t head[8];
  if (src->size < 8)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: %" PRIu64 " bytes, too short for the "
                      "8-byte header length",
                      src->size);
  int rc = src_read(src, 0, head, 8);
  if (rc)
    return rc;
  const uint64_t n = glow__st_get_u64(head);
  if (n > GLOW__ST_MAX_HEADER)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: header length %" PRIu64
                      " is above the limit of %" PRIu64 " bytes",
                      n, GLOW__ST_MAX_HEADER);
  if (n > src->size - 8)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: header length %" PRIu64
                      " runs past the end of the %" PRIu64 "-byte input",
                      n, src->size);
  char *text = malloc((size_t)n + 1);
  if (!text)
    return glow__fail(GLOW_ERR_NOMEM, "model file: out of memory");
  rc = src_read(src, 8, text, (size_t)n);
  text[n] = '\0';
  const uint64_t data_off = 8 + n, data_len = src->size - data_off;
  glow__st_header h;
  if (!rc)
    rc = glow__st_parse(text, n, data_len, &h);
  free(text);
  if (rc)
    return rc;

  glow_config cfg;
  int initialized = 0;
  glow_model *m = NULL;
  ftensor *t = NULL;
  ftensor **which = NULL;
  int32_t nt = 0;
  rc = read_meta(&h, &cfg, &initialized);
  /* The data must hold the parameters, so a model needing far more is a
   * forgery, refused before its buffers are allocated.  The bound is loose
   * so that a file merely missing a tensor is reported as such below. */
  if (!rc)
    rc = glow__model_new(&cfg, 2 * (int64_t)(data_len / 4) + 65536, &m);
  if (!rc)
    rc = file_tensors(m, &t, &nt);
  if (!rc && !(which = calloc((size_t)h.n_entries + 1, sizeof *which)))
    rc = glow__fail(GLOW_ERR_NOMEM, "model file: out of memory");
  if (!rc)
    rc = match(&h, t, nt, which);
  if (!rc)
    rc = read_data(src, data_off, &h, which, m);
  free(which);
  free(t);
  glow__st_free(&h);
  if (rc) {
    glow_model_free(m);
    return rc;
  }
  m->initialized = initialized;
  *out = m;
  return GLOW_OK;
}

int glow_model_load_buffer(const void *data, size_t len, glow_model **out) {
  if (out)
    *out = NULL;
  if (!data || !out)
    return glow__fail(GLOW_ERR_NULL, "glow_model_load_buffer: %s is NULL",
                      !data ? "data" : "out");
  source src = {.mem = data, .fd = -1, .size = (uint64_t)len};
  return load(&src, out);
}

int glow_model_load(const char *path, glow_model **out) {
  if (out)
    *out = NULL;
  if (!path || !out)
    return glow__fail(GLOW_ERR_NULL, "glow_model_load: %s is NULL",
                      !path ? "path" : "out");
  char why[128];
  /* O_NONBLOCK: opening a FIFO must not hang; it is refused below. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return glow__fail(GLOW_ERR_IO, "glow_model_load: cannot open '%.200s': %s",
                      path, os_error(errno, why, sizeof why));
  struct stat st;
  int rc = GLOW_OK;
  if (fstat(fd, &st) != 0)
    rc = glow__fail(GLOW_ERR_IO, "glow_model_load: cannot stat '%.200s': %s",
                    path, os_error(errno, why, sizeof why));
  else if (S_ISDIR(st.st_mode))
    rc = glow__fail(GLOW_ERR_IO, "glow_model_load: '%.200s' is a directory",
                    path);
  else if (!S_ISREG(st.st_mode))
    rc = glow__fail(GLOW_ERR_IO,
                    "glow_model_load: '%.200s' is not a regular file", path);
  if (!rc) {
    source src = {.mem = NULL, .fd = fd, .size = (uint64_t)st.st_size};
    rc = load(&src, out);
  }
  close(fd);
  return rc;
}
