/*
 * safetensors.c -- the safetensors container, independent of what the
 * tensors mean (the rest of format/ maps them to a model).
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON, then
 * the data section.  The JSON is an object mapping each tensor name to
 * {"dtype", "shape", "data_offsets": [begin, end]} (byte offsets relative to
 * the data section, end exclusive), plus an optional "__metadata__" object
 * of string values.  The header is untrusted: every number is checked
 * before it is used as a size or an offset, and sizes are computed in
 * uint64 with explicit overflow checks.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "format.h"

/* Integers above 2^53 are not exact in the double that cJSON parses into,
 * so larger offsets or dimensions cannot be trusted (8 PiB of data). */
#define MAX_EXACT 9007199254740992.0

/* Element sizes of the dtypes the safetensors format defines; libglow
 * models use F32 only, but the container accepts any of them so that a
 * wrong dtype is reported as such rather than as a malformed header. */
static const struct {
  const char *name;
  uint32_t bytes;
} dtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8},
};

/* ---- Little-endian conversion -------------------------------------------- */

uint64_t glow__st_get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

void glow__st_put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++, v >>= 8)
    p[i] = (uint8_t)v;
}

void glow__st_get_f32(const uint8_t *src, float *dst, size_t n) {
  for (size_t i = 0; i < n; i++, src += 4) {
    uint32_t u = (uint32_t)src[0] | (uint32_t)src[1] << 8 |
                 (uint32_t)src[2] << 16 | (uint32_t)src[3] << 24;
    memcpy(&dst[i], &u, 4);
  }
}

void glow__st_put_f32(const float *src, uint8_t *dst, size_t n) {
  for (size_t i = 0; i < n; i++, dst += 4) {
    uint32_t u;
    memcpy(&u, &src[i], 4);
    dst[0] = (uint8_t)u;
    dst[1] = (uint8_t)(u >> 8);
    dst[2] = (uint8_t)(u >> 16);
    dst[3] = (uint8_t)(u >> 24);
  }
}

/* ---- Parsing ------------------------------------------------------------- */

/* cJSON's allocation hooks are process-wide and carry no context, so they
 * point at these trampolines, which take the library's allocator as it is
 * at each call. */
static void *cjson_malloc(size_t size) { return glow__malloc(size); }
static void cjson_free(void *ptr) { glow__free(ptr); }

static void install_hooks(void) {
  cJSON_Hooks hooks = {cjson_malloc, cjson_free};
  cJSON_InitHooks(&hooks);
}

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

/* A non-negative integer that the double holds exactly. */
static int get_index(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v))
    return 0;
  double d = v->valuedouble;
  if (!(d >= 0.0 && d <= MAX_EXACT) || d != floor(d))
    return 0;
  *out = (uint64_t)d;
  return 1;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const glow__st_entry *)a)->name,
                ((const glow__st_entry *)b)->name);
}

static int by_offset(const void *a, const void *b) {
  const glow__st_entry *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

static int by_string(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The metadata object: string values, no key twice. */
static int check_metadata(const cJSON *md) {
  if (!cJSON_IsObject(md))
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: __metadata__ is not a JSON object");
  int32_t n = 0;
  for (const cJSON *v = md->child; v; v = v->next) {
    if (!cJSON_IsString(v))
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: metadata value of '%.64s' is not a "
                        "string",
                        v->string);
    if (n == INT32_MAX)
      return glow__fail(GLOW_ERR_FORMAT, "model file: too many metadata keys");
    n++;
  }
  if (n < 2)
    return GLOW_OK;
  const char **keys = glow__malloc(sizeof *keys * (size_t)n);
  if (!keys)
    return glow__fail(GLOW_ERR_NOMEM, "model file: out of memory");
  int32_t i = 0;
  for (const cJSON *v = md->child; v; v = v->next)
    keys[i++] = v->string;
  qsort(keys, (size_t)n, sizeof *keys, by_string);
  int rc = GLOW_OK;
  for (i = 1; i < n && !rc; i++)
    if (!strcmp(keys[i - 1], keys[i]))
      rc =
          glow__fail(GLOW_ERR_FORMAT,
                     "model file: metadata key '%.64s' appears twice", keys[i]);
  glow__free(keys);
  return rc;
}

/* One tensor's description: dtype, shape and offsets, each consistent. */
static int parse_entry(const cJSON *obj, uint64_t data_len, glow__st_entry *e) {
  const char *name = obj->string;
  e->name = name;
  if (!cJSON_IsObject(obj))
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: tensor '%.64s' is not a JSON object", name);
  const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
  for (const cJSON *f = obj->child; f; f = f->next) {
    const cJSON **slot = !strcmp(f->string, "dtype")          ? &dtype
                         : !strcmp(f->string, "shape")        ? &shape
                         : !strcmp(f->string, "data_offsets") ? &offs
                                                              : NULL;
    if (!slot)
      continue; /* unknown fields are ignored, as other readers do */
    if (*slot)
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%.64s' has '%s' twice", name,
                        f->string);
    *slot = f;
  }
  if (!cJSON_IsString(dtype))
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: tensor '%.64s' has no dtype string", name);
  e->dtype = dtype->valuestring;
  e->elem_bytes = 0;
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (!strcmp(e->dtype, dtypes[i].name))
      e->elem_bytes = dtypes[i].bytes;
  if (!e->elem_bytes)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: tensor '%.64s' has unknown dtype '%.16s'",
                      name, e->dtype);

  if (!cJSON_IsArray(shape))
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: tensor '%.64s' has no shape array", name);
  int ndim = cJSON_GetArraySize(shape);
  if (ndim > GLOW__ST_MAX_DIMS)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: tensor '%.64s' has %d dimensions (at most "
                      "%d)",
                      name, ndim, GLOW__ST_MAX_DIMS);
  e->ndim = ndim;
  int32_t d = 0, empty = 0;
  for (const cJSON *v = shape->child; v; v = v->next, d++) {
    if (!get_index(v, &e->shape[d]))
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%.64s': shape[%d] is not a "
                        "non-negative integer",
                        name, d);
    empty |= e->shape[d] == 0;
  }
  /* A zero dimension makes the tensor empty however large the others. */
  uint64_t bytes = empty ? 0 : e->elem_bytes;
  for (d = 0; d < ndim && !empty; d++) {
    if (bytes > UINT64_MAX / e->shape[d])
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%.64s': the size of its shape "
                        "overflows 64 bits",
                        name);
    bytes *= e->shape[d];
  }

  if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
      !get_index(offs->child, &e->begin) ||
      !get_index(offs->child->next, &e->end))
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: tensor '%.64s': data_offsets is not a pair "
                      "of non-negative integers",
                      name);
  if (e->begin > e->end)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: tensor '%.64s': data_offsets [%" PRIu64
                      ", %" PRIu64 "] run backwards",
                      name, e->begin, e->end);
  if (e->end > data_len)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: tensor '%.64s': data_offsets end %" PRIu64
                      " runs past the end of the %" PRIu64 "-byte data section",
                      name, e->end, data_len);
  if (e->end - e->begin != bytes)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: tensor '%.64s': data_offsets span %" PRIu64
                      " bytes but dtype and shape need %" PRIu64,
                      name, e->end - e->begin, bytes);
  return GLOW_OK;
}

/* Names unique; the tensors tile [0, data_len) exactly.  Leaves the entries
 * sorted by offset. */
static int check_tiling(glow__st_entry *e, int32_t n, uint64_t data_len) {
  qsort(e, (size_t)n, sizeof *e, by_name);
  for (int32_t i = 1; i < n; i++)
    if (!strcmp(e[i - 1].name, e[i].name))
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensor '%.64s' appears twice", e[i].name);
  qsort(e, (size_t)n, sizeof *e, by_offset);
  uint64_t at = 0;
  for (int32_t i = 0; i < n; i++) {
    if (e[i].begin < at)
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: tensors '%.64s' and '%.64s' overlap",
                        e[i - 1].name, e[i].name);
    if (e[i].begin > at)
      return glow__fail(GLOW_ERR_FORMAT,
                        "model file: %" PRIu64 " unused bytes (a gap) before "
                        "tensor '%.64s'",
                        e[i].begin - at, e[i].name);
    at = e[i].end;
  }
  if (at != data_len)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: %" PRIu64 " bytes after the last tensor",
                      data_len - at);
  return GLOW_OK;
}

/* Whether the JSON text (already parsed, so every backslash is inside a
 * string) escapes a NUL character, which cJSON would decode into a string
 * cut short.  Escapes are read pairwise from the left, so that the text
 * \\u0000 (an escaped backslash, then the letters u0000) holds none: an
 * escape \u0000 is one only after an even number of backslashes. */
static int has_escaped_nul(const char *text) {
  for (const char *p = strchr(text, '\\'); p; p = strchr(p + 2, '\\')) {
    if (p[1] == 'u' && !strncmp(p + 2, "0000", 4))
      return 1;
    if (!p[1])
      break;
  }
  return 0;
}

int glow__st_parse(const char *text, uint64_t len, uint64_t data_len,
                   glow__st_header *out) {
  memset(out, 0, sizeof *out);
  /* cJSON reads C strings: a NUL byte, raw or escaped, would silently cut
   * a name or the header short. */
  if (memchr(text, '\0', (size_t)len))
    return glow__fail(GLOW_ERR_FORMAT, "model file: header contains a NUL "
                                       "byte");
  pthread_once(&hooks_once, install_hooks);
  const char *end = NULL;
  glow__oom_clear(); /* cJSON's NULL does not say why */
  cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
  if (!root && glow__oom_seen())
    return glow__fail(GLOW_ERR_NOMEM,
                      "model file: out of memory for the header's JSON tree");
  if (!root)
    return glow__fail(GLOW_ERR_FORMAT,
                      "model file: header is not valid JSON (error near "
                      "byte %lld of %" PRIu64 ")",
                      end ? (long long)(end - text) : -1LL, len);
  out->root = root;
  int rc = GLOW_OK;
  if (has_escaped_nul(text)) {
    rc = glow__fail(GLOW_ERR_FORMAT,
                    "model file: header contains an escaped NUL character "
                    "(\\u0000)");
    goto fail;
  }
  if (!cJSON_IsObject(root)) {
    rc = glow__fail(GLOW_ERR_FORMAT, "model file: header is not a JSON "
                                     "object");
    goto fail;
  }
  int32_t n = 0;
  for (cJSON *v = root->child; v; v = v->next) {
    if (!strcmp(v->string, "__metadata__")) {
      if (out->metadata) {
        rc = glow__fail(GLOW_ERR_FORMAT,
                        "model file: __metadata__ appears twice");
        goto fail;
      }
      out->metadata = v;
    } else if (n == INT32_MAX) {
      rc = glow__fail(GLOW_ERR_FORMAT, "model file: too many tensors");
      goto fail;
    } else {
      n++;
    }
  }
  if (out->metadata && (rc = check_metadata(out->metadata)))
    goto fail;
  out->entries = glow__calloc(n ? (size_t)n : 1, sizeof *out->entries);
  if (!out->entries) {
    rc = glow__fail(GLOW_ERR_NOMEM, "model file: out of memory");
    goto fail;
  }
  int32_t i = 0;
  for (cJSON *v = root->child; v; v = v->next)
    if (v != out->metadata &&
        (rc = parse_entry(v, data_len, &out->entries[i++])))
      goto fail;
  out->n_entries = n;
  if ((rc = check_tiling(out->entries, n, data_len)))
    goto fail;
  return GLOW_OK;
fail:
  glow__st_free(out);
  return rc;
}

void glow__st_free(glow__st_header *h) {
  if (!h)
    return;
  cJSON_Delete(h->root);
  glow__free(h->entries);
  memset(h, 0, sizeof *h);
}

const char *glow__st_meta(const glow__st_header *h, const char *key) {
  const cJSON *v =
      h->metadata ? cJSON_GetObjectItemCaseSensitive(h->metadata, key) : NULL;
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- Writing ------------------------------------------------------------- */

/* A growing string; `oom` latches the first allocation failure so that the
 * builder can check once at the end. */
typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_reserve(sbuf *b, size_t more) {
  if (b->oom || b->cap - b->len > more)
    return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len <= more)
    cap *= 2;
  char *p = glow__realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return;
  }
  b->p = p;
  b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n) {
  sb_reserve(b, n);
  if (b->oom)
    return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void sb_printf(sbuf *b, const char *fmt, ...) {
  char tmp[128]; /* only numbers go through here */
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    b->oom = 1;
    return;
  }
  sb_put(b, tmp, (size_t)n);
}

/* A JSON string literal. */
static void sb_str(sbuf *b, const char *s) {
  sb_put(b, "\"", 1);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      char esc[2] = {'\\', (char)ch};
      sb_put(b, esc, 2);
    } else if (ch < 0x20) {
      sb_printf(b, "\\u%04x", ch);
    } else {
      sb_put(b, s, 1);
    }
  }
  sb_put(b, "\"", 1);
}

int glow__st_build(const glow__st_entry *e, int32_t n, const char *const *meta,
                   int32_t n_meta, char **out, uint64_t *len) {
  sbuf b = {0};
  sb_put(&b, "{", 1);
  if (n_meta > 0) {
    sb_put(&b, "\"__metadata__\":{", 16);
    for (int32_t i = 0; i < n_meta; i++) {
      if (i)
        sb_put(&b, ",", 1);
      sb_str(&b, meta[2 * i]);
      sb_put(&b, ":", 1);
      sb_str(&b, meta[2 * i + 1]);
    }
    sb_put(&b, "}", 1);
  }
  for (int32_t i = 0; i < n; i++) {
    if (i || n_meta > 0)
      sb_put(&b, ",", 1);
    sb_str(&b, e[i].name);
    sb_put(&b, ":{\"dtype\":", 10);
    sb_str(&b, e[i].dtype);
    sb_put(&b, ",\"shape\":[", 10);
    for (int32_t d = 0; d < e[i].ndim; d++)
      sb_printf(&b, d ? ",%" PRIu64 : "%" PRIu64, e[i].shape[d]);
    sb_printf(&b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", e[i].begin,
              e[i].end);
  }
  sb_put(&b, "}", 1);
  /* Spaces, which JSON ignores, align the data section to 8 bytes (the
   * length field is 8 bytes), as the reference writer does. */
  while (!b.oom && b.len % 8)
    sb_put(&b, " ", 1);
  if (b.oom) {
    glow__free(b.p);
    return glow__fail(GLOW_ERR_NOMEM, "model file: out of memory for the "
                                      "header");
  }
  *out = b.p;
  *len = b.len;
  return GLOW_OK;
}
