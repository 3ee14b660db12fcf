/*
 * alloc.c -- the one door through which the library allocates: the
 * process-wide allocator of glow_set_allocator (the C library's by
 * default), a count of live models (the allocator may change only while
 * none exists), and a per-thread mark of the last failed allocation, which
 * lets code that calls into other libraries (cJSON) tell running out of
 * memory from other failures.
 */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "core.h"

/* The default allocator asks for transparent huge pages for blocks of at
 * least HUGE_MIN bytes: it advises the kernel (madvise) to back the
 * block's 2 MiB-aligned interior with huge pages.  A model's parameters
 * and its workspaces are such blocks, written in full soon after they are
 * allocated; with 4 KiB pages their first touch costs a page fault every
 * 4 KiB, which on a virtual machine made a store-mode training call with
 * a fresh workspace take 4 times as long as one reusing its workspace on
 * a fashion-sized model, and 2.6 times on a cifar-sized one; with the
 * advice, 1.1 times (docs/performance.md).  Only advice:
 * where the system has transparent huge pages off, or none are free, the
 * block is as malloc gave it.  A caller's own allocator
 * (glow_set_allocator) gets no such advice. */
static void *advise_huge(void *p, size_t size) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  enum { HUGE_MIN = 4 << 20, HUGE_ALIGN = 2 << 20 };
  if (p && size >= HUGE_MIN) {
    const uintptr_t lo =
        ((uintptr_t)p + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1);
    const uintptr_t hi = ((uintptr_t)p + size) & ~(uintptr_t)(HUGE_ALIGN - 1);
    const int saved = errno; /* a refusal is no error of the caller's */
    if (hi > lo)
      (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    errno = saved;
  }
#else
  (void)size;
#endif
  return p;
}

static void *sys_malloc(void *ctx, size_t size) {
  (void)ctx;
  return advise_huge(malloc(size), size);
}

static void *sys_calloc(void *ctx, size_t count, size_t size) {
  (void)ctx;
  /* count * size does not overflow where calloc succeeded. */
  void *p = calloc(count, size);
  return advise_huge(p, p ? count * size : 0);
}

static void *sys_realloc(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  return advise_huge(realloc(ptr, size), size);
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
