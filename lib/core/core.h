/*
 * core.h -- what every part of the library shares: error reporting, the
 * finite test, counter-based random numbers and a few constants.  Nothing
 * here knows about models; nothing here is public.
 */
#ifndef GLOW_CORE_H
#define GLOW_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "glow.h"

/* ---- Errors (error.c) ---------------------------------------------------- */

/* Record a detailed message for the calling thread and return `status`. */
int glow__fail(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The system's text for errno value err, in buf (thread-safe). */
const char *glow__os_error(int err, char *buf, size_t n);

/* ---- Memory (alloc.c) ----------------------------------------------------
 * Every allocation of the library goes through these, and so through the
 * allocator of glow_set_allocator.  A size of 0 is served as 1, so NULL
 * always means out of memory; glow__free(NULL) is a no-op. */
void *glow__malloc(size_t size);
void *glow__calloc(size_t count, size_t size);
void *glow__realloc(void *ptr, size_t size);
void glow__free(void *ptr);
/* A per-thread mark set by every failed allocation: cleared before a call
 * into a library that reports failures without saying why (cJSON), read
 * after it. */
void glow__oom_clear(void);
int glow__oom_seen(void);
/* Live models, counted so that the allocator changes only while none
 * exists (their memory came from the allocator in place). */
void glow__models_add(int delta);

/* ---- Compiler help ------------------------------------------------------- */

/* Inlined even where the compiler would not: bodies specialised on a
 * constant argument (a channel count, a tile width). */
#if defined(__GNUC__)
#define GLOW__ALWAYS_INLINE __attribute__((always_inline))
#else
#define GLOW__ALWAYS_INLINE
#endif

/* ---- Finite values --------------------------------------------------------- */

/* 1 if none of the count floats at v is Inf or NaN.  Tests the exponent
 * bits, an integer OR that vectorises, so that the training pass can
 * afford it after every layer. */
static inline int glow__all_finite(const float *v, int64_t count) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < count; i++) {
    uint32_t b;
    memcpy(&b, &v[i], sizeof b);
    bad |= (b & 0x7f800000u) == 0x7f800000u;
  }
  return !bad;
}

/* ---- Random numbers (rng.c) ------------------------------------------------
 * Counter-based: the value at index i depends only on (seed, stream, i), so
 * results do not depend on how work is split across threads. */
uint64_t glow__hash64(uint64_t seed, uint64_t stream, uint64_t i);
double glow__uniform(uint64_t seed, uint64_t stream, uint64_t i); /* [0,1) */
/* Standard normal at index i (pairs of indices share one Box-Muller draw). */
double glow__normal(uint64_t seed, uint64_t stream, uint64_t i);

/* ---- Crews (crew.c) -------------------------------------------------------
 * Threads kept between calls: a call takes a parked one for a job, or
 * starts one, and joining the job parks the thread again.  Thread-safe:
 * concurrent callers take different threads. */
typedef struct glow__crew glow__crew;
typedef struct glow__hand glow__hand; /* a thread running a job */
/* At most this many threads in a crew; a call that needs more (many
 * concurrent callers) starts threads of its own for the rest. */
#define GLOW__CREW_MAX 256
/* An empty crew; NULL when out of memory. */
glow__crew *glow__crew_new(void);
/* fn(arg) on a parked thread of c, else on a new one that joins c (up to
 * a bound), else on a thread of its own that ends with the job (always so
 * for c NULL, and in a process forked from the one that made c); NULL if
 * no thread could be started. */
glow__hand *glow__crew_run(glow__crew *c, void (*fn)(void *arg), void *arg);
/* Wait for h's job to return; h's thread then parks in its crew, or ends.
 * NULL is a no-op. */
void glow__hand_join(glow__hand *h);
/* End and join c's parked threads (none may be running a job); the crew
 * stays usable.  NULL is a no-op. */
void glow__crew_release(glow__crew *c);
/* glow__crew_release, then free c; NULL is a no-op. */
void glow__crew_free(glow__crew *c);
/* The monotonic clock, in nanoseconds. */
int64_t glow__now_ns(void);
/* Spin until ready(p, a) holds, for up to about a millisecond; 1 if it
 * did, 0 if the time ran out (the caller then sleeps on its own terms). */
int glow__spin_until(int (*ready)(const void *p, uint32_t a), const void *p,
                     uint32_t a);

/* ---- Teams (team.c) -------------------------------------------------------
 * Threads that share each step of one shard's pass: the calling thread
 * and `size - 1` helpers. */
typedef struct glow__team glow__team;
/* A team of `size` members: the caller and size - 1 helper threads from
 * crew (glow__crew_run), which wait for jobs.  NULL when size < 2 or no
 * helper could be started (the caller then works alone); a team may start
 * smaller than asked. */
glow__team *glow__team_start(glow__crew *crew, int32_t size);
/* Members of t (1 for NULL). */
int32_t glow__team_size(const glow__team *t);
/* fn(ctx, c, chunks) for every chunk c in [0, chunks) (at most 65535),
 * each exactly once, on whichever member takes it, the caller included;
 * returns when all are done.  With t NULL, or chunks < 2, the caller runs
 * them in order.  Chunks are taken, not assigned: a member that the
 * system has descheduled before it took one does not hold up the job.
 * One job at a time, from one thread at a time. */
void glow__team_run(glow__team *t,
                    void (*fn)(void *ctx, int32_t chunk, int32_t chunks),
                    void *ctx, int32_t chunks);
/* Chunks per member that splits aim for: more balance uneven chunks and
 * descheduled members, but each costs a call and its own packing (3 made a
 * cifar image at batch 1 take 50 ms on two threads where 1 took 38 to 44,
 * on a quiet machine). */
#define GLOW__TEAM_CHUNKS 1
/* 1: teams split all work, however small (for the tests, so that small
 * models exercise every split); 0, the default: only work that pays for
 * waking the team. */
extern int glow__team_split_all;
/* Join the helpers (back to their crew) and free t; NULL is a no-op. */
void glow__team_stop(glow__team *t);

/* fn(ctx, lo, hi) over [0, count) in contiguous ranges, a few per member
 * of t, for element-wise work whose result does not depend on the split;
 * below 2 * grain elements the caller does it all (unless
 * glow__team_split_all). */
void glow__team_for(glow__team *t, int64_t count, int64_t grain,
                    void (*fn)(void *ctx, int64_t lo, int64_t hi), void *ctx);

/* The range [*lo, *hi) of part p of `units` split into `parts` contiguous
 * ranges whose sizes differ by at most one. */
static inline void glow__part_range(int64_t units, int32_t p, int32_t parts,
                                    int64_t *lo, int64_t *hi) {
  *lo = units * p / parts;
  *hi = units * (p + 1) / parts;
}

/* ---- Constants ------------------------------------------------------------- */

/* "MAJOR.MINOR.PATCH" of this library, from glow.h's macros. */
#define GLOW__STR2(x) #x
#define GLOW__STR(x) GLOW__STR2(x)
#define GLOW__VERSION_TEXT                                                     \
  GLOW__STR(GLOW_VERSION_MAJOR)                                                \
  "." GLOW__STR(GLOW_VERSION_MINOR) "." GLOW__STR(GLOW_VERSION_PATCH)

#define GLOW__LN_2 0.69314718055994530941723212145818
#define GLOW__LOG_2PI 1.8378770664093454835606594728112

#endif /* GLOW_CORE_H */
