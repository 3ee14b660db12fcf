/*
 * dist.h -- the few collective operations a data-parallel trainer needs,
 * over MPI when the program is built with it (GLOW_WITH_MPI), else for a
 * single process.  The library knows nothing of this: ranks exchange the
 * host's flat buffers (gradients, parameters, model-file bytes).
 *
 * Every call except dist_rank, dist_size and dist_abort is collective:
 * every rank calls it, in the same order, with the same sizes.
 */
#ifndef GLOW_EXAMPLE_DIST_H
#define GLOW_EXAMPLE_DIST_H

#include <stddef.h>
#include <stdint.h>

/* Start (MPI_Init) and stop (MPI_Finalize).  dist_init returns 0 or -1. */
int dist_init(int *argc, char ***argv);
void dist_finalize(void);

/* This process's rank, 0 .. dist_size() - 1. */
int dist_rank(void);
int dist_size(void);

/* End every rank now with status `code` (MPI_Abort): for a failure that
 * only this rank saw, so that the others do not wait for it forever. */
_Noreturn void dist_abort(int code);

/* End this rank with status `code` after the others agreed to end too
 * (every rank calls it, after the same collective decision). */
_Noreturn void dist_exit(int code);

/* root's `bytes` bytes at buf to every rank's buf. */
void dist_bcast(void *buf, size_t bytes, int root);

/* Each rank's `bytes` bytes at mine, to every rank's all[rank * bytes]. */
void dist_allgather(const void *mine, void *all, size_t bytes);

/* x[i] = the sum over ranks of their x[i], where for every i at most one
 * rank's x[i] is not zero: the sum is then exact whatever the order. */
void dist_sum_disjoint(float *x, int64_t n);

/* The sum over ranks of each rank's x[0 .. n), in rank order
 * ((x_0 + x_1) + x_2) + ..., the same bits on every rank.  See dist.c for
 * why it is not one MPI_Allreduce.  The first call sets up scratch for n;
 * later calls must pass the same n. */
void dist_sum_ordered(float *x, int64_t n);

/* 1 if every rank passed the same value, else 0; *first_other gets the
 * lowest rank whose value differs from rank 0's (or -1). */
int dist_same(uint64_t value, int *first_other);

#endif
