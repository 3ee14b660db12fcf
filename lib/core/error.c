/*
 * error.c -- status strings and the per-thread detailed error message.
 */
#define _POSIX_C_SOURCE 200809L /* the XSI strerror_r */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core.h"

/* One message per thread, so that concurrent inference calls on a shared
 * model never overwrite each other's diagnostics. */
static _Thread_local char last_error[512];

int glow__fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

const char *glow_last_error(void) { return last_error; }

const char *glow__os_error(int err, char *buf, size_t n) {
  if (strerror_r(err, buf, n) != 0)
    snprintf(buf, n, "error %d", err);
  return buf;
}

const char *glow_status_string(int status) {
  switch (status) {
  case GLOW_OK: return "ok";
  case GLOW_ERR_NULL: return "required pointer argument is NULL";
  case GLOW_ERR_BATCH: return "invalid batch size";
  case GLOW_ERR_SHAPE: return "invalid image shape";
  case GLOW_ERR_CONFIG: return "invalid configuration";
  case GLOW_ERR_CONFIG_SIZE: return "configuration struct size too small";
  case GLOW_ERR_LABEL: return "invalid or missing labels";
  case GLOW_ERR_ARG: return "argument out of range";
  case GLOW_ERR_NOMEM: return "out of memory";
  case GLOW_ERR_NUMERIC: return "numerical failure";
  case GLOW_ERR_UNSUPPORTED: return "operation not supported";
  case GLOW_ERR_STATE: return "model state does not allow this call";
  case GLOW_ERR_IO: return "input/output error";
  case GLOW_ERR_FORMAT: return "malformed model data";
  case GLOW_ERR_VERSION: return "unsupported format version";
  case GLOW_ERR_BUFFER: return "buffer too small";
  default: return "unknown status";
  }
}
