/*
 * metadata.c -- a model file's metadata: the format version, the model's
 * state and its whole configuration, as strings in the safetensors
 * header's "__metadata__" (docs/format.md), and back, validated.
 */
#define _POSIX_C_SOURCE 200809L /* newlocale, uselocale */

#include <inttypes.h>
#include <locale.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"

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
_Static_assert(GLOW__N_META == 3 + N_INT_FIELDS + 4,
               "format_version, library_version, initialized, the int "
               "fields, coupling, permutation, class_weight, seed");

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
int glow__meta_write(const glow_model *m, const char **kv, char (*vals)[32]) {
  const glow_config *c = &m->cfg;
  int32_t i = 0;
  kv[2 * i] = "glow.format_version";
  snprintf(vals[i], 32, "%d", GLOW_FORMAT_VERSION);
  kv[2 * i + 1] = vals[i];
  i++;
  kv[2 * i] = "glow.library_version";
  kv[2 * i + 1] = GLOW__VERSION_TEXT;
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
    return glow__fail(GLOW_ERR_FORMAT, "model file: metadata has no '%s'", key);
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
int glow__meta_read(const glow__st_header *h, glow_config *cfg,
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
                      version, GLOW_FORMAT_VERSION, GLOW__VERSION_TEXT);
  int rc = need_meta(h, "glow.initialized", &v);
  if (rc)
    return rc;
  if (strcmp(v, "0") && strcmp(v, "1"))
    return bad_meta("glow.initialized", v, "0 or 1");
  *initialized = v[0] == '1';

  glow__config_defaults(cfg);
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
  if ((rc = text_to_float("glow.config.class_weight", v, &cfg->class_weight)))
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
