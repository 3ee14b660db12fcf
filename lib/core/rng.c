/*
 * rng.c -- counter-based random numbers.
 *
 * Every draw is a pure function of (seed, stream, index), built on the
 * splitmix64 finaliser.  That makes sampling and dequantisation noise
 * reproducible whatever the batch split or thread count.
 */
#include <math.h>

#include "core.h"

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t glow__hash64(uint64_t seed, uint64_t stream, uint64_t i) {
  uint64_t k = mix64(seed + 0x9e3779b97f4a7c15ULL);
  k = mix64(k ^ (stream * 0xd6e8feb86659fd93ULL + 0x632be59bd9b4e019ULL));
  return mix64(k + i * 0x9e3779b97f4a7c15ULL);
}

double glow__uniform(uint64_t seed, uint64_t stream, uint64_t i) {
  return (double)(glow__hash64(seed, stream, i) >> 11) * 0x1.0p-53;
}

double glow__normal(uint64_t seed, uint64_t stream, uint64_t i) {
  uint64_t pair = i >> 1;
  /* u1 in (0, 1] so that log(u1) is finite. */
  double u1 = 1.0 - glow__uniform(seed, stream, 2 * pair);
  double u2 = glow__uniform(seed, stream, 2 * pair + 1);
  double r = sqrt(-2.0 * log(u1));
  double a = 6.283185307179586476925287 * u2;
  return (i & 1) ? r * sin(a) : r * cos(a);
}
