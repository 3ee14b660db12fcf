/*
 * gemm_peak -- single-precision GEMM rates: of the CBLAS libglow links
 * (OpenBLAS by default), the reference peak for bench/compare, and of
 * libglow's own kernel, in each version this CPU runs.
 *
 *   gemm_peak [--kernel cblas|avx512|avx2] [--op nn|tn|nt]
 *             [--shape M N K] [--team T] [--cpu] [N] [REPS]
 *
 * Times C = op(A) op(B), M x N with inner dimension K (default N x N x N,
 * N = 2048), REPS times (default 5) after one warm-up call, and prints the
 * best rate and the median as one JSON object: {"impl": "cblas_sgemm",
 * "size": N, "gflops": G, ...}.
 *   --kernel  cblas (default): cblas_sgemm, on the BLAS's own threads
 *             (OPENBLAS_NUM_THREADS, else every core), as libglow uses it.
 *             avx512, avx2: that version of the own kernel, on the calling
 *             thread, as each of libglow's shards runs it (compare it with
 *             OPENBLAS_NUM_THREADS=1); an error where the CPU lacks it.
 *   --op      nn (default): A B, the convolutions' forward products;
 *             tn: A^T B, the weight gradients (K is the pixels); nt: A B^T,
 *             the input gradients.  Operands are contiguous.
 *   --team    split the product between T threads as libglow does for a
 *             batch of fewer images than threads (glow__gemm: columns or
 *             rows of whole tiles), on the kernel glow__sgemm would use
 *   --cpu     rates per second of the process's CPU time instead of wall
 *             time: on a shared machine, what the kernel does while it
 *             runs (single-threaded runs only: the CBLAS with
 *             OPENBLAS_NUM_THREADS=1).
 */
#define _POSIX_C_SOURCE 200809L

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

/* Seconds of the clock the rates are of: wall time, or with --cpu the
 * process's CPU time. */
static clockid_t g_clock = CLOCK_MONOTONIC;

static double now(void) {
  struct timespec t;
  clock_gettime(g_clock, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
  glow__gemm_isa isa;
  int ta, tb;
  int m, n, k, reps;
  int team; /* --team: members splitting the product */
} job;

static int usage(void) {
  fprintf(stderr, "usage: gemm_peak [--kernel cblas|avx512|avx2] "
                  "[--op nn|tn|nt] [--shape M N K] [--team T] [--cpu] [N] "
                  "[REPS]\n");
  return 2;
}

/* Options into *j; 0 on success. */
static int parse(int argc, char **argv, job *j) {
  int pos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--kernel") == 0 && i + 1 < argc) {
      a = argv[++i];
      j->isa = strcmp(a, "avx512") == 0  ? GLOW__GEMM_AVX512
               : strcmp(a, "avx2") == 0  ? GLOW__GEMM_AVX2
               : strcmp(a, "cblas") == 0 ? GLOW__GEMM_CBLAS
                                         : (glow__gemm_isa)-1;
      if ((int)j->isa < 0)
        return 1;
    } else if (strcmp(a, "--op") == 0 && i + 1 < argc) {
      a = argv[++i];
      if (strlen(a) != 2 || strspn(a, "nt") != 2 || strcmp(a, "tt") == 0)
        return 1;
      j->ta = a[0] == 't';
      j->tb = a[1] == 't';
    } else if (strcmp(a, "--team") == 0 && i + 1 < argc) {
      j->team = atoi(argv[++i]);
      if (j->team < 1 || j->team > 64)
        return 1;
    } else if (strcmp(a, "--cpu") == 0) {
      g_clock = CLOCK_PROCESS_CPUTIME_ID;
    } else if (strcmp(a, "--shape") == 0 && i + 3 < argc) {
      j->m = atoi(argv[++i]);
      j->n = atoi(argv[++i]);
      j->k = atoi(argv[++i]);
      pos = pos > 1 ? pos : 1; /* the next number is REPS */
    } else if (a[0] != '-' && pos == 0) {
      j->m = j->n = j->k = atoi(a);
      pos++;
    } else if (a[0] != '-' && pos == 1) {
      j->reps = atoi(a);
      pos++;
    } else {
      return 1;
    }
  }
  return j->m < 1 || j->n < 1 || j->k < 1 || j->reps < 1;
}

static int cmp_double(const void *x, const void *y) {
  const double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

int main(int argc, char **argv) {
  job j = {GLOW__GEMM_CBLAS, 0, 0, 2048, 2048, 2048, 5, 1};
  if (parse(argc, argv, &j))
    return usage();
  if (!glow__gemm_runs(j.isa)) {
    fprintf(stderr, "gemm_peak: this CPU does not run that kernel\n");
    return 1;
  }
  /* A is m x k (k x m for tn), B k x n (n x k for nt), all contiguous. */
  const int lda = j.ta ? j.m : j.k, ldb = j.tb ? j.k : j.n;
  const size_t na = (size_t)j.m * (size_t)j.k, nb = (size_t)j.k * (size_t)j.n,
               nc = (size_t)j.m * (size_t)j.n;
  float *a = malloc(sizeof(float) * na), *b = malloc(sizeof(float) * nb),
        *c = malloc(sizeof(float) * nc),
        *pack =
            malloc(sizeof(float) * (size_t)GLOW__GEMM_PACK * (size_t)j.team);
  double *dt = malloc(sizeof(double) * (size_t)j.reps);
  if (!a || !b || !c || !pack || !dt) {
    fprintf(stderr, "gemm_peak: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < na; i++)
    a[i] = (float)((i * 7 + 3) % 17) / 17.0f - 0.5f;
  for (size_t i = 0; i < nb; i++)
    b[i] = (float)((i * 5 + 1) % 13) / 13.0f - 0.5f;
  /* --team: the product split between a team's threads, as a batch of
   * fewer images than threads runs it (each member its own packing). */
  float *team_pack[64];
  for (int p = 0; p < j.team; p++)
    team_pack[p] = pack + (int64_t)p * GLOW__GEMM_PACK;
  if (j.team > 1 && j.isa != GLOW__GEMM_CBLAS &&
      j.isa != glow__gemm_isa_used()) {
    fprintf(stderr, "gemm_peak: --team runs the kernel this CPU uses\n");
    return 1;
  }
  glow__conv_scratch cs = {0};
  cs.pack = j.isa == GLOW__GEMM_CBLAS ? NULL : pack;
  cs.team = glow__team_start(NULL, j.team);
  cs.team_pack = cs.pack ? team_pack : NULL;
  for (int r = -1; r < j.reps; r++) { /* r = -1 is the warm-up */
    const double t0 = now();
    if (j.team > 1)
      glow__gemm(&cs, j.ta, j.tb, j.m, j.n, j.k, a, lda, b, ldb, 0, c, j.n,
                 NULL);
    else
      glow__sgemm_on(j.isa, j.ta, j.tb, j.m, j.n, j.k, a, lda, b, ldb, 0, c,
                     j.n, pack, NULL);
    if (r >= 0)
      dt[r] = now() - t0;
  }
  qsort(dt, (size_t)j.reps, sizeof *dt, cmp_double);
  const double flops = 2.0 * j.m * (double)j.n * j.k;
  const char *impl = j.isa == GLOW__GEMM_AVX512 ? "own_avx512"
                     : j.isa == GLOW__GEMM_AVX2 ? "own_avx2"
                                                : "cblas_sgemm";
  printf("{\"impl\": \"%s\", \"op\": \"%c%c\", \"size\": %d, \"m\": %d, "
         "\"n\": %d, \"k\": %d, \"gflops\": %.2f, \"gflops_median\": %.2f, "
         "\"check\": %g}\n",
         impl, j.ta ? 't' : 'n', j.tb ? 't' : 'n', j.m, j.m, j.n, j.k,
         flops / dt[0] / 1e9, flops / dt[j.reps / 2] / 1e9, (double)c[nc / 2]);
  free(a);
  free(b);
  free(c);
  glow__team_stop(cs.team);
  free(pack);
  free(dt);
  return 0;
}
