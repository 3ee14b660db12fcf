/*
 * alloc.c -- the one door through which the library allocates: the
 * process-wide allocator of glow_set_allocator (the C library's by
 * default), a count of live models (the allocator may change only while
 * none exists), and a per-thread mark of the last failed allocation, which
 * lets code that calls into other libraries (cJSON) tell running out of
 * memory from other failures.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "core.h"

static void *sys_malloc(void *ctx, size_t size) {
  (void)ctx;
  return malloc(size);
}

static void *sys_calloc(void *ctx, size_t count, size_t size) {
  (void)ctx;
  return calloc(count, size);
}

static void *sys_realloc(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  return realloc(ptr, size);
}

static void sys_free(void *ctx, void *ptr) {
  (void)ctx;
  free(ptr);
}

static const glow_allocator sys = {sizeof sys,  sys_malloc, sys_calloc,
                                   sys_realloc, sys_free,   NULL};

/* Written only by glow_set_allocator, which the header restricts to times
 * when no other call runs and no model exists. */
static glow_allocator current = {sizeof current, sys_malloc, sys_calloc,
                                 sys_realloc,    sys_free,   NULL};

static atomic_int live_models;
static _Thread_local int oom_mark;

static void *mark(void *p) {
  if (!p)
    oom_mark = 1;
  return p;
}

/* Sizes of 0 become 1, so that the hook never sees a request for nothing
 * and NULL always means failure. */
void *glow__malloc(size_t size) {
  return mark(current.malloc_fn(current.ctx, size ? size : 1));
}

void *glow__calloc(size_t count, size_t size) {
  if (!count || !size)
    count = size = 1;
  return mark(current.calloc_fn(current.ctx, count, size));
}

void *glow__realloc(void *ptr, size_t size) {
  if (!ptr)
    return glow__malloc(size);
  return mark(current.realloc_fn(current.ctx, ptr, size ? size : 1));
}

void glow__free(void *ptr) {
  if (ptr)
    current.free_fn(current.ctx, ptr);
}

void glow__oom_clear(void) { oom_mark = 0; }
int glow__oom_seen(void) { return oom_mark; }

void glow__models_add(int delta) { atomic_fetch_add(&live_models, delta); }

int glow_set_allocator(const glow_allocator *a) {
  static const char fn[] = "glow_set_allocator";
  if (a && a->size < GLOW_ALLOCATOR_SIZE_V1)
    return glow__fail(GLOW_ERR_ARG, "%s: a->size %u is smaller than %u", fn,
                      (unsigned)a->size, (unsigned)GLOW_ALLOCATOR_SIZE_V1);
  if (a && (!a->malloc_fn || !a->calloc_fn || !a->realloc_fn || !a->free_fn))
    return glow__fail(GLOW_ERR_NULL,
                      "%s: a function of the allocator is "
                      "NULL",
                      fn);
  const int live = atomic_load(&live_models);
  if (live > 0) /* their memory came from the allocator in place */
    return glow__fail(GLOW_ERR_STATE,
                      "%s: %d model(s) exist; free them before changing the "
                      "allocator",
                      fn, live);
  current = a ? *a : sys;
  current.size = sizeof current;
  return GLOW_OK;
}
