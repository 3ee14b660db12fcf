/*
 * vexp.c -- exponentials for runs of values at a time: e^x, and from it
 * the affine coupling's scale s = sigmoid(v) with 1 - s and log s.
 *
 * A fashion-sized image computes some 4,700 sigmoids per pass and its
 * actnorms some 4,100 scales e^logs (a cifar-sized one, 98,000); with the
 * C library's expf and log1pf, called once per value, the sigmoids alone
 * took 9% of a batch-1 forward pass.  Here they are written in basic float
 * operations only (add, multiply, divide, compare and select, and integer
 * arithmetic on the bits), so that the loops vectorise, and every value
 * goes through the same operations whatever its position in the run: an
 * image's results do not depend on how its values were grouped.  The
 * loops are compiled for AVX-512F and AVX2 as well, chosen as the product
 * kernel's version is (glow__gemm_isa_used): a sigmoid takes 1.0 ns a
 * value in vectors of 16, 2.0 in vectors of 8 and 4.9 in SSE2's 4,
 * against 8.4 through the C library.
 *
 * The polynomials for exp and log are the coefficients of Cephes's
 * single-precision expf and logf (S. L. Moshier), with the usual range
 * reductions.  Over the floats, e^x is within 1 ulp, s and 1 - s within
 * 2.9 and log s within 2.0 (test_vexp), where the same formula on the C
 * library's expf and log1pf gives 2.8 and 1.5.
 */
#include <stdint.h>
#include <string.h>

#include "kernels.h"

static inline float from_bits(uint32_t b) {
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

static inline uint32_t to_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b;
}

/* e^x, NaN for NaN.  x = n ln 2 + r with n an integer and |r| <= ln 2 / 2
 * (ln 2 in two parts, the first exact times any n here), e^r by a
 * polynomial, then times 2^n.  Where 2^n is not a normal float the
 * result is scaled in two steps, each exact but the last, which rounds
 * once: below n = -126 by 2^(n + 64) and then 2^-64, into the subnormals;
 * above 127 by 2^(n - 1) and then 2, to infinity beyond the largest
 * float.  Below -104 the result rounds to zero, above 89 it is infinite. */
static inline float exp_float(float x) {
  const float magic = 0x1.8p23f; /* adding it rounds to an integer */
  x = x < -104.0f ? -104.0f : x;
  x = x > 89.0f ? 89.0f : x;
  const float t = x * 0x1.715476p+0f + magic; /* x log2(e), rounded */
  const float n = t - magic;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  const float z = r * r;
  const float p =
      (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) *
             r +
         4.1665795894e-2f) *
            r +
        1.6666665459e-1f) *
           r +
       5.0000001201e-1f) *
          z +
      r + 1.0f;
  /* n is the integer in t's low mantissa bits (t and magic share their
   * exponent).  For NaN it is meaningless but within +-1.3e9 (the
   * difference of the bits, read as a two's-complement integer), so that
   * e + 127 does not overflow, and p is NaN. */
  const int32_t ni = (int32_t)(to_bits(t) - to_bits(magic));
  const int32_t sub = ni<-126, big = ni> 127;
  const int32_t e = sub ? ni + 64 : big ? ni - 1 : ni;
  const float y = p * from_bits((uint32_t)(e + 127) << 23);
  /* Both computed either way: the loop then selects, not branches. */
  const float tiny = y * 0x1p-64f, huge = y * 2.0f;
  return sub ? tiny : big ? huge : y;
}

/* log(1 + e) for e in [0, 1], given u = 1 + e (rounded) and ru = 1 / u.
 * log u with u = 2^k m, m in [sqrt(1/2), sqrt(2)], by a polynomial in
 * f = m - 1 (exact); then the rounding of 1 + e, which e - (u - 1) gives
 * exactly, adds that difference over u, so that small e keep their
 * relative precision. */
static inline float log1p_unit(float e, float u, float ru) {
  const int32_t big = u > 0x1.6a09e6p+0f; /* sqrt(2) */
  const float k = big ? 1.0f : 0.0f;
  const float half = u * 0.5f;
  const float f = (big ? half : u) - 1.0f;
  const float z = f * f;
  float y =
      ((((((((7.0376836292e-2f * f - 1.1514610310e-1f) * f + 1.1676998740e-1f) *
                f -
            1.2420140846e-1f) *
               f +
           1.4249322787e-1f) *
              f -
          1.6668057665e-1f) *
             f +
         2.0000714765e-1f) *
            f -
        2.4999993993e-1f) *
           f +
       3.3333331174e-1f) *
      f * z;
  y += k * -2.12194440e-4f;
  y += -0.5f * z;
  const float lu = (f + y) + k * 0.693359375f;
  return lu + (e - (u - 1.0f)) * ru;
}

static inline GLOW__ALWAYS_INLINE void sigmoid_run(const float *v, int64_t n,
                                                   float *s, float *one_minus,
                                                   float *log_s) {
  for (int64_t i = 0; i < n; i++) {
    const float x = v[i];
    /* e = e^{-|x|} <= 1, so nothing overflows, and s and 1 - s are
     * 1 / (1 + e) and e / (1 + e) in the order of x's sign: each to full
     * precision, where 1 - s would cancel. */
    const float e = exp_float(x < 0.0f ? x : -x);
    const float u = 1.0f + e;
    const float ru = 1.0f / u;
    const float eu = e * ru;
    s[i] = x >= 0.0f ? ru : eu;
    one_minus[i] = x >= 0.0f ? eu : ru;
    /* log s = log(1 / (1 + e)) for x >= 0, log(e / (1 + e)) otherwise. */
    log_s[i] = (x < 0.0f ? x : 0.0f) - log1p_unit(e, u, ru);
  }
}

static inline GLOW__ALWAYS_INLINE void exp_run(const float *x, int64_t n,
                                               float *y) {
  for (int64_t i = 0; i < n; i++)
    y[i] = exp_float(x[i]);
}

/* The loops compiled for each instruction set: the same operations, in
 * vectors of 4, 8 or 16 values, so the same bits (this file is compiled
 * without contracting a multiply and an add into one). */
static void sigmoid_plain(const float *v, int64_t n, float *s, float *one_minus,
                          float *log_s) {
  sigmoid_run(v, n, s, one_minus, log_s);
}

static void exp_plain(const float *x, int64_t n, float *y) { exp_run(x, n, y); }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GLOW__HAVE_VEXP_ISA 1
#define AVX2 __attribute__((target("avx2"))) static void
#define AVX512 __attribute__((target("avx512f"))) static void
AVX2 sigmoid_avx2(const float *v, int64_t n, float *s, float *one_minus,
                  float *log_s) {
  sigmoid_run(v, n, s, one_minus, log_s);
}
AVX512 sigmoid_avx512(const float *v, int64_t n, float *s, float *one_minus,
                      float *log_s) {
  sigmoid_run(v, n, s, one_minus, log_s);
}
AVX2 exp_avx2(const float *x, int64_t n, float *y) { exp_run(x, n, y); }
AVX512 exp_avx512(const float *x, int64_t n, float *y) { exp_run(x, n, y); }
#undef AVX2
#undef AVX512
#endif

/* The vectors isa asks for, where this CPU has them: 2 for AVX-512F, 1
 * for AVX2, 0 for the compiler's baseline. */
static int width(glow__gemm_isa isa) {
#ifdef GLOW__HAVE_VEXP_ISA
  if (isa == GLOW__GEMM_AVX512 && __builtin_cpu_supports("avx512f"))
    return 2;
  if (isa >= GLOW__GEMM_AVX2 && __builtin_cpu_supports("avx2"))
    return 1;
#else
  (void)isa;
#endif
  return 0;
}

void glow__sigmoid_on(glow__gemm_isa isa, const float *v, int64_t n, float *s,
                      float *one_minus, float *log_s) {
  switch (width(isa)) {
#ifdef GLOW__HAVE_VEXP_ISA
  case 2: sigmoid_avx512(v, n, s, one_minus, log_s); return;
  case 1: sigmoid_avx2(v, n, s, one_minus, log_s); return;
#endif
  default: sigmoid_plain(v, n, s, one_minus, log_s); return;
  }
}

void glow__sigmoid(const float *v, int64_t n, float *s, float *one_minus,
                   float *log_s) {
  glow__sigmoid_on(glow__gemm_isa_used(), v, n, s, one_minus, log_s);
}

void glow__exp_on(glow__gemm_isa isa, const float *x, int64_t n, float *y) {
  switch (width(isa)) {
#ifdef GLOW__HAVE_VEXP_ISA
  case 2: exp_avx512(x, n, y); return;
  case 1: exp_avx2(x, n, y); return;
#endif
  default: exp_plain(x, n, y); return;
  }
}

void glow__exp(const float *x, int64_t n, float *y) {
  glow__exp_on(glow__gemm_isa_used(), x, n, y);
}
