/*
 * dist.c -- collectives for the data-parallel trainer: Open MPI (or any
 * MPI) when built with GLOW_WITH_MPI, else the trivial single-process
 * versions, so that the trainer has one code path.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef GLOW_WITH_MPI
#include <mpi.h>

static int my_rank = 0, n_ranks = 1;

int dist_init(int *argc, char ***argv) {
#ifdef OPEN_MPI
  /* Ranks wait for each other in every step's collectives.  Open MPI
   * busy-polls while it waits, which on cores shared with other work (or
   * with more ranks than cores) takes the CPU from the ranks still
   * computing: on 2 busy cores, 2 ranks trained 1.4 times as fast with
   * yielding as without.  A setting of the user's own wins. */
  setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
#endif
  /* Only the main thread calls MPI; the library runs threads of its own
   * inside each rank (GLOW_OPT_THREADS). */
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) !=
      MPI_SUCCESS)
    return -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n_ranks);
  return 0;
}

static void sum_free(void);

void dist_finalize(void) {
  sum_free();
  MPI_Finalize();
}

int dist_rank(void) { return my_rank; }
int dist_size(void) { return n_ranks; }

_Noreturn void dist_abort(int code) {
  fflush(stdout);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  exit(code); /* MPI_Abort does not return; this keeps the compiler sure */
}

_Noreturn void dist_exit(int code) {
  dist_finalize();
  exit(code);
}

/* MPI counts are int: large buffers go in pieces of 1 GiB. */
void dist_bcast(void *buf, size_t bytes, int root) {
  const size_t piece = (size_t)1 << 30;
  for (size_t off = 0; off < bytes; off += piece) {
    size_t len = bytes - off < piece ? bytes - off : piece;
    MPI_Bcast((char *)buf + off, (int)len, MPI_BYTE, root, MPI_COMM_WORLD);
  }
}

void dist_allgather(const void *mine, void *all, size_t bytes) {
  if (bytes > INT_MAX)
    dist_abort(1);
  MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE,
                MPI_COMM_WORLD);
}

void dist_sum_disjoint(float *x, int64_t n) {
  const int64_t piece = INT_MAX;
  for (int64_t off = 0; off < n; off += piece) {
    int64_t len = n - off < piece ? n - off : piece;
    MPI_Allreduce(MPI_IN_PLACE, x + off, (int)len, MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  }
}

/* Why not one MPI_Allreduce: MPI_SUM is declared commutative and
 * associative, so MPI may add the ranks' buffers in any order and
 * grouping, and Open MPI chooses its algorithm (hence the order) by
 * message size, rank count, network and tuning.  Float addition is not
 * associative: from three ranks on, the result would depend on those
 * choices, and not match the library's own sum over threads, which adds
 * the shards' gradients in shard order.  So the sum is built from two
 * collectives that move data without adding it: MPI_Alltoallv hands each
 * rank the N parts of its slice of the buffer (a reduce-scatter whose
 * reduction we do), the rank adds them in rank order, and MPI_Allgatherv
 * gives every rank every slice.  Each rank sends and receives
 * 2 (N - 1) / N times the buffer, what a ring allreduce moves. */
static struct {
  int64_t n;
  int *count, *first; /* per rank: its slice of the buffer */
  int *recv_count;    /* my slice's size, once per rank */
  int *recv_first;    /* where each rank's part of my slice lands */
  float *parts;       /* N parts of my slice, rank by rank */
} sum;

static void sum_free(void) {
  free(sum.count);
  free(sum.first);
  free(sum.recv_count);
  free(sum.recv_first);
  free(sum.parts);
  memset(&sum, 0, sizeof sum);
}

static void sum_setup(int64_t n) {
  const int k = n_ranks;
  sum.n = n;
  sum.count = malloc(sizeof(int) * (size_t)k);
  sum.first = malloc(sizeof(int) * (size_t)k);
  sum.recv_count = malloc(sizeof(int) * (size_t)k);
  sum.recv_first = malloc(sizeof(int) * (size_t)k);
  if (!sum.count || !sum.first || !sum.recv_count || !sum.recv_first) {
    fprintf(stderr, "train: out of memory\n");
    dist_abort(1);
  }
  for (int r = 0; r < k; r++) {
    int64_t lo = n * r / k, hi = n * (r + 1) / k;
    if (hi > INT_MAX) { /* displacements are int */
      fprintf(stderr, "train: %lld floats are too many to sum over MPI\n",
              (long long)n);
      dist_abort(1);
    }
    sum.first[r] = (int)lo;
    sum.count[r] = (int)(hi - lo);
  }
  const int mine = (int)(n * (my_rank + 1) / k - n * my_rank / k);
  for (int r = 0; r < k; r++) {
    sum.recv_count[r] = mine;
    sum.recv_first[r] = r * mine;
  }
  sum.parts = malloc(sizeof(float) * ((size_t)mine * (size_t)k + 1));
  if (!sum.parts) {
    fprintf(stderr, "train: out of memory\n");
    dist_abort(1);
  }
}

void dist_sum_ordered(float *x, int64_t n) {
  if (n_ranks == 1)
    return;
  if (!sum.parts)
    sum_setup(n);
  if (n != sum.n)
    dist_abort(1); /* a programming error: one buffer size per run */
  const int mine = sum.count[my_rank];
  MPI_Alltoallv(x, sum.count, sum.first, MPI_FLOAT, sum.parts, sum.recv_count,
                sum.recv_first, MPI_FLOAT, MPI_COMM_WORLD);
  float *acc = x + sum.first[my_rank];
  memcpy(acc, sum.parts, sizeof(float) * (size_t)mine);
  for (int r = 1; r < n_ranks; r++) {
    const float *part = sum.parts + (size_t)r * (size_t)mine;
    for (int i = 0; i < mine; i++)
      acc[i] += part[i];
  }
  MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, sum.count, sum.first,
                 MPI_FLOAT, MPI_COMM_WORLD);
}

int dist_same(uint64_t value, int *first_other) {
  uint64_t *all = malloc(sizeof(uint64_t) * (size_t)n_ranks);
  if (!all)
    dist_abort(1);
  MPI_Allgather(&value, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
  *first_other = -1;
  for (int r = 1; r < n_ranks && *first_other < 0; r++)
    if (all[r] != all[0])
      *first_other = r;
  free(all);
  return *first_other < 0;
}

#else /* one process: every collective is the identity */

int dist_init(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  return 0;
}

void dist_finalize(void) {}
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
_Noreturn void dist_abort(int code) { exit(code); }
_Noreturn void dist_exit(int code) { exit(code); }

void dist_bcast(void *buf, size_t bytes, int root) {
  (void)buf;
  (void)bytes;
  (void)root;
}

void dist_allgather(const void *mine, void *all, size_t bytes) {
  memmove(all, mine, bytes);
}

void dist_sum_disjoint(float *x, int64_t n) {
  (void)x;
  (void)n;
}

void dist_sum_ordered(float *x, int64_t n) {
  (void)x;
  (void)n;
}

int dist_same(uint64_t value, int *first_other) {
  (void)value;
  *first_other = -1;
  return 1;
}

#endif
