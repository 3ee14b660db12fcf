/*
 * save.c -- writing a model file (docs/format.md) to a caller's buffer or,
 * atomically, to a path: a temporary file next to it, flushed, then
 * renamed over it.
 *
 * The file: the safetensors header with the tensors' names, shapes and
 * offsets and the metadata (metadata.c), then every tensor's data in the
 * order of glow__file_tensors.
 */
#define _POSIX_C_SOURCE 200809L /* fsync, strndup */

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"

/* Bytes converted per write: large enough for few system calls, small
 * enough for the stack. */
#define CHUNK 8192

/* What a save writes: the tensors with their offsets, and the header. */
typedef struct {
  glow__ftensor *t;
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
  int rc = glow__file_tensors(m, &p->t, &p->n);
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
  const char *kv[2 * GLOW__N_META];
  char vals[GLOW__N_META][32];
  rc = glow__meta_write(m, kv, vals);
  if (!rc)
    rc = glow__st_build(e, p->n, kv, GLOW__N_META, &p->header,
                        &p->header_len);
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
                        s->path, glow__os_error(w < 0 ? errno : EIO, why,
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
    const glow__ftensor *t = &p->t[i];
    const glow__fixed *fx = t->param ? NULL : &m->reg.fixed[t->fixed];
    for (int64_t j = 0; j < t->count && !rc; j += CHUNK / 4) {
      int64_t k = t->count - j < CHUNK / 4 ? t->count - j : CHUNK / 4;
      const float *src = vals;
      if (t->param)
        src = m->params + t->offset + j;
      else if (fx->kind == GLOW__FIXED_SIGN)
        src = fx->sign + j;
      else /* channel indices < 2^24 are exact in float */
        for (int64_t q = 0; q < k; q++)
          vals[q] = (float)fx->index[j + q];
      glow__st_put_f32(src, bytes, (size_t)k);
      rc = sink_write(s, bytes, (size_t)k * 4);
    }
  }
  return rc;
}

int glow__save_buffer(const glow_model *m, void *buf, size_t cap,
                      size_t *size) {
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

int glow__save_file(const glow_model *m, const char *path) {
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
                      path, glow__os_error(errno, why, sizeof why));
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
                    path, glow__os_error(errno, why, sizeof why));
    plan_free(&p);
    free(tmp);
    return rc;
  }
  /* A replaced file keeps its permissions; a new one gets the umask's. */
  if (mode >= 0 && fchmod(fd, (mode_t)mode) != 0)
    rc = glow__fail(GLOW_ERR_IO,
                    "glow_model_save: setting the permissions of '%.200s': "
                    "%s",
                    tmp, glow__os_error(errno, why, sizeof why));
  sink s = {.fd = fd, .path = tmp};
  if (!rc)
    rc = emit(m, &p, &s);
  plan_free(&p);
  if (!rc && fsync(fd) != 0)
    rc = glow__fail(GLOW_ERR_IO, "glow_model_save: flushing '%.200s': %s",
                    tmp, glow__os_error(errno, why, sizeof why));
  if (close(fd) != 0 && !rc)
    rc = glow__fail(GLOW_ERR_IO, "glow_model_save: closing '%.200s': %s",
                    tmp, glow__os_error(errno, why, sizeof why));
  if (!rc && rename(tmp, path) != 0)
    rc = glow__fail(GLOW_ERR_IO,
                    "glow_model_save: renaming the temporary file to "
                    "'%.200s': %s",
                    path, glow__os_error(errno, why, sizeof why));
  if (rc)
    unlink(tmp);
  else
    sync_parent(path);
  free(tmp);
  return rc;
}
