/*
 * gemm_peak -- the single-precision GEMM rate of the CBLAS libglow links
 * (OpenBLAS by default), as a reference peak for bench/compare.
 *
 *   gemm_peak [N] [REPS]
 *
 * Times cblas_sgemm on N x N matrices (default 2048), REPS times (default
 * 5) after one warm-up call, and prints the best rate as one JSON object:
 * {"impl": "cblas_sgemm", "size": N, "gflops": G}.  The thread count is
 * the BLAS's own (OPENBLAS_NUM_THREADS, else every core), as libglow uses.
 */
#define _POSIX_C_SOURCE 200809L

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2048;
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  if (n < 1 || reps < 1) {
    fprintf(stderr, "usage: gemm_peak [N] [REPS]\n");
    return 2;
  }
  size_t count = (size_t)n * (size_t)n;
  float *a = malloc(sizeof(float) * count), *b = malloc(sizeof(float) * count),
        *c = malloc(sizeof(float) * count);
  if (!a || !b || !c) {
    fprintf(stderr, "gemm_peak: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < count; i++) {
    a[i] = (float)((i * 7 + 3) % 17) / 17.0f - 0.5f;
    b[i] = (float)((i * 5 + 1) % 13) / 13.0f - 0.5f;
  }
  double best = 1e30;
  for (int r = 0; r <= reps; r++) {
    double t0 = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n,
                b, n, 0.0f, c, n);
    double dt = now() - t0;
    if (r > 0 && dt < best) /* r = 0 is the warm-up */
      best = dt;
  }
  printf("{\"impl\": \"cblas_sgemm\", \"size\": %d, \"gflops\": %.2f, "
         "\"check\": %g}\n",
         n, 2.0 * n * (double)n * n / best / 1e9, (double)c[count / 2]);
  free(a);
  free(b);
  free(c);
  return 0;
}
