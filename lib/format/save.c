/*
 * save.c -- writing a model file (docs/format.md) to a caller's buffer or,
 * atomically, to a path: a temporary file of a short name in the same
 * directory, flushed, then renamed over it.  Only a regular file (or
 * nothing) is replaced, and only a model with finite parameters saved.
 *
 * The file: the safetensors header with the tensors' names, shapes and
 * offsets and the metadata (metadata.c), then every tensor's data in the
 * order of glow__file_tensors.
 */
#define _GNU_SOURCE /* O_PATH; fsync, openat, renameat */

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
  glow__free(p->t);
  glow__free(p->header);
}

static int plan_file(const glow_model *m, plan *p) {
  memset(p, 0, sizeof *p);
  int rc = glow__file_tensors(m, &p->t, &p->n);
  if (rc)
    return rc;
  glow__st_entry *e = glow__calloc((size_t)p->n, sizeof *e);
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
    rc = glow__st_build(e, p->n, kv, GLOW__N_META, &p->header, &p->header_len);
  glow__free(e);
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
                        s->path,
                        glow__os_error(w < 0 ? errno : EIO, why, sizeof why));
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

/* The one check that every save makes: a model file holds finite
 * parameters only, so that every file libglow writes is one it loads. */
static int check_params(const glow_model *m, const char *fn) {
  const int32_t bad = glow__nonfinite_tensor(m, m->params);
  if (bad < 0)
    return GLOW_OK;
  return glow__fail(GLOW_ERR_NUMERIC,
                    "%s: parameter tensor '%s' holds a non-finite value; not "
                    "saving a model that could not be loaded",
                    fn, m->reg.tensors[bad].name);
}

int glow__save_buffer(const glow_model *m, void *buf, size_t cap,
                      size_t *size) {
  /* A write, not a size query: the model must be one a load accepts. */
  int rc = buf ? check_params(m, "glow_model_save_buffer") : GLOW_OK;
  if (rc)
    return rc;
  plan p;
  rc = plan_file(m, &p);
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

/* What a save may replace: nothing, or a regular file that is writable.
 * The path itself is examined, not what a symbolic link names: a link is
 * refused, so that neither the link nor its target changes behind the
 * caller's back (a link to /dev/null must never become a regular file).
 * *mode gets the rwx bits of the file to replace, or -1. */
static int check_target(const char *path, int *mode) {
  char why[128];
  struct stat st;
  *mode = -1;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT)
      return GLOW_OK;
    return glow__fail(GLOW_ERR_IO,
                      "glow_model_save: cannot access "
                      "'%.200s': %s",
                      path, glow__os_error(errno, why, sizeof why));
  }
  if (S_ISDIR(st.st_mode))
    return glow__fail(GLOW_ERR_IO,
                      "glow_model_save: '%.200s' is a "
                      "directory",
                      path);
  if (S_ISLNK(st.st_mode))
    return glow__fail(GLOW_ERR_IO,
                      "glow_model_save: '%.200s' is a symbolic link; not "
                      "replacing it (save to the path it names)",
                      path);
  if (!S_ISREG(st.st_mode))
    return glow__fail(GLOW_ERR_IO,
                      "glow_model_save: '%.200s' is not a regular file; not "
                      "replacing it",
                      path);
  if (!(st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) || access(path, W_OK) != 0)
    return glow__fail(GLOW_ERR_IO,
                      "glow_model_save: '%.200s' is read-only; not "
                      "replacing it",
                      path);
  /* Only the permission bits: setuid, setgid and sticky are not carried
   * over to a file the library writes. */
  *mode = (int)(st.st_mode & 0777);
  return GLOW_OK;
}

/* The directory that holds `path`, opened, so that the temporary file is
 * named relative to it: its name then stays short whatever the length of
 * the path, and the rename stays within one file system. */
static int open_parent(const char *path, int *dfd) {
  char why[128];
  const char *slash = strrchr(path, '/');
  const size_t len = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
  char *dir = glow__malloc(len + 1);
  if (!dir)
    return glow__fail(GLOW_ERR_NOMEM, "glow_model_save: out of memory");
  memcpy(dir, slash ? path : ".", len);
  dir[len] = '\0';
  *dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
#ifdef O_PATH
  if (*dfd < 0 && errno == EACCES) /* write and search permission suffice */
    *dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
#endif
  int rc = GLOW_OK;
  if (*dfd < 0)
    rc = glow__fail(GLOW_ERR_IO,
                    "glow_model_save: cannot open the directory of "
                    "'%.200s': %s",
                    path, glow__os_error(errno, why, sizeof why));
  glow__free(dir);
  return rc;
}

/* A new temporary file in the directory dfd, named into tmp (n bytes):
 * ".glow.tmp-<pid>-<counter>", at most 40 bytes, unique among this
 * process's saves and created exclusively against everyone else's. */
static int create_temp(int dfd, const char *path, char *tmp, size_t n,
                       int *fd) {
  static atomic_uint counter;
  char why[128];
  *fd = -1;
  for (int tries = 0; tries < 100 && *fd < 0; tries++) {
    snprintf(tmp, n, ".glow.tmp-%ld-%u", (long)getpid(),
             atomic_fetch_add(&counter, 1u));
    *fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (*fd < 0 && errno != EEXIST)
      break;
  }
  if (*fd >= 0)
    return GLOW_OK;
  return glow__fail(GLOW_ERR_IO,
                    "glow_model_save: cannot create a temporary file next "
                    "to '%.200s': %s",
                    path, glow__os_error(errno, why, sizeof why));
}

/* The planned file into fd, with the permissions of the file it replaces
 * (mode >= 0), flushed to disk and closed. */
static int write_temp(const glow_model *m, const plan *p, int fd, int mode,
                      const char *path) {
  char why[128];
  int rc = GLOW_OK;
  if (mode >= 0 && fchmod(fd, (mode_t)mode) != 0)
    rc = glow__fail(GLOW_ERR_IO,
                    "glow_model_save: setting the permissions of the "
                    "temporary file next to '%.200s': %s",
                    path, glow__os_error(errno, why, sizeof why));
  sink s = {.fd = fd, .path = path};
  if (!rc)
    rc = emit(m, p, &s);
  if (!rc && fsync(fd) != 0)
    rc = glow__fail(GLOW_ERR_IO, "glow_model_save: flushing '%.200s': %s", path,
                    glow__os_error(errno, why, sizeof why));
  if (close(fd) != 0 && !rc)
    rc = glow__fail(GLOW_ERR_IO, "glow_model_save: closing '%.200s': %s", path,
                    glow__os_error(errno, why, sizeof why));
  return rc;
}

int glow__save_file(const glow_model *m, const char *path) {
  char why[128], tmp[48];
  int mode, dfd = -1, fd = -1;
  if (!*path)
    return glow__fail(GLOW_ERR_IO, "glow_model_save: the path is empty");
  int rc = check_params(m, "glow_model_save");
  if (!rc)
    rc = check_target(path, &mode);
  if (rc)
    return rc;
  plan p;
  rc = plan_file(m, &p);
  if (rc)
    return rc;
  rc = open_parent(path, &dfd);
  if (!rc)
    rc = create_temp(dfd, path, tmp, sizeof tmp, &fd);
  if (!rc) {
    rc = write_temp(m, &p, fd, mode, path);
    if (!rc && renameat(dfd, tmp, AT_FDCWD, path) != 0)
      rc = glow__fail(GLOW_ERR_IO,
                      "glow_model_save: renaming the temporary file to "
                      "'%.200s': %s",
                      path, glow__os_error(errno, why, sizeof why));
    if (rc)
      unlinkat(dfd, tmp, 0);
    else /* the new directory entry; best effort, the data is safe */
      (void)fsync(dfd);
  }
  if (dfd >= 0)
    close(dfd);
  plan_free(&p);
  return rc;
}
