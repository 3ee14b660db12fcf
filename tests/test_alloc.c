/*
 * test_alloc.c -- the default allocator advises the kernel to back large
 * blocks (a model's parameters, its workspaces) with transparent huge
 * pages, and a caller's own allocator gets no such advice.
 *
 * What the kernel made of the advice is read from /proc/self/smaps: the
 * mapping that holds the middle of the parameter buffer is eligible for
 * huge pages ("THPeligible: 1").  Where the system's mode is "always"
 * every such mapping is eligible, advised or not, and where it is "never"
 * none is: the tests that need the "madvise" mode (Debian's default) skip
 * elsewhere, and so do all of them where /proc or the mode cannot be read.
 */
#include <stdio.h>

#include "testutil.h"

/* The system's transparent huge page mode: 'a'lways, 'm'advise, 'n'ever,
 * or 0 where it cannot be read. */
static char thp_mode(void) {
  FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  if (!f)
    return 0;
  char line[128] = {0};
  const int got = fgets(line, sizeof line, f) != NULL;
  fclose(f);
  const char *open = got ? strchr(line, '[') : NULL;
  return open ? open[1] : 0;
}

/* THPeligible of the mapping holding address a: 0 or 1, or -1 where
 * smaps has no such field or no such mapping. */
static int thp_eligible(const void *a) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f)
    return -1;
  char line[512];
  int inside = 0, eligible = -1;
  while (eligible < 0 && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) /* a mapping's first line */
      inside = (uintptr_t)a >= lo && (uintptr_t)a < hi;
    else if (inside && sscanf(line, "THPeligible: %d", &eligible) == 1)
      break;
  }
  fclose(f);
  return eligible;
}

/* A model of about 16 MiB of parameters (levels 1, depth 12, hidden 512). */
static glow_model *big_model(void) {
  glow_config cfg = tu_config(8, 8, 3, 1, 12, 512, GLOW_COUPLING_AFFINE,
                              GLOW_PERMUTE_CONV1X1);
  glow_model *m = NULL;
  assert_int_equal(glow_model_create(&cfg, &m), GLOW_OK);
  assert_true(glow_param_count(m) * (int64_t)sizeof(float) > (12 << 20));
  return m;
}

/* The middle of the parameters: inside the advised, 2 MiB-aligned
 * interior of a block of more than 4 MiB beyond it on each side. */
static const float *middle(glow_model *m) {
  return glow_params(m) + glow_param_count(m) / 2;
}

static void test_default_allocator_advises(void **state) {
  (void)state;
  const char mode = thp_mode();
  if (mode != 'm' && mode != 'a')
    skip();
  glow_model *m = big_model();
  const int eligible = thp_eligible(middle(m));
  glow_model_free(m);
  if (eligible < 0)
    skip(); /* a kernel without THPeligible in smaps */
  assert_int_equal(eligible, 1);
}

static void *own_malloc(void *ctx, size_t size) {
  (void)ctx;
  return malloc(size);
}

static void *own_calloc(void *ctx, size_t count, size_t size) {
  (void)ctx;
  return calloc(count, size);
}

static void *own_realloc(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  return realloc(ptr, size);
}

static void own_free(void *ctx, void *ptr) {
  (void)ctx;
  free(ptr);
}

static void test_own_allocator_not_advised(void **state) {
  (void)state;
  if (thp_mode() != 'm')
    skip(); /* "always" makes every mapping eligible */
  const glow_allocator own = {sizeof own,  own_malloc, own_calloc,
                              own_realloc, own_free,   NULL};
  assert_int_equal(glow_set_allocator(&own), GLOW_OK);
  glow_model *m = big_model();
  const int eligible = thp_eligible(middle(m));
  glow_model_free(m);
  assert_int_equal(glow_set_allocator(NULL), GLOW_OK);
  if (eligible < 0)
    skip();
  assert_int_equal(eligible, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* First, while no block of this process has been advised: a later
       * block of the caller's allocator could reuse a range of the heap
       * that an earlier one advised. */
      cmocka_unit_test(test_own_allocator_not_advised),
      cmocka_unit_test(test_default_allocator_advises),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
