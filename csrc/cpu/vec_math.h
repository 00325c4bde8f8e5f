// Straight-line float32 log and cos(2*pi*u) for the CPU kernels' element loops.
//
// std::log / std::cos are opaque calls that keep a loop scalar; these are plain arithmetic and
// selects, so GCC vectorises the loops that use them (given -fno-trapping-math, see setup_ext.py).
// Both stay within a few ulp of the libm functions (tests/test_kernels_*.py check it).
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

// Element loops are compiled for AVX-512, AVX2 and the baseline, picked at load time (GCC/Clang
// function multiversioning): wider lanes where they exist, and the build still runs on any
// x86-64. setup_ext.py compiles with -ffp-contract=off, so no fused multiply-add changes the
// reference's rounding in any of the three.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define SMOOTHKERN_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SMOOTHKERN_CPU_CLONES
#endif

// GCC does not inline a plain function into a target_clones clone on its own (the call stays,
// and the loop around it stays scalar); forcing it keeps the element loops vectorised.
#if defined(__GNUC__) || defined(__clang__)
#define SMOOTHKERN_VEC_INLINE inline __attribute__((always_inline))
#else
#define SMOOTHKERN_VEC_INLINE inline
#endif

namespace smoothkern {

// Natural log for finite x > 0 as straight-line float code, so the element loop vectorises
// (std::log is an opaque call). Range reduction to m in [sqrt(1/2), sqrt(2)) and the minimax
// polynomial of Moshier's Cephes logf; within 2 ulp of std::log (tests/test_kernels_accumulate.py).
SMOOTHKERN_VEC_INLINE float log_f32(float x) {
  const bool tiny = x < FLT_MIN;  // subnormal: scale into the normal range first
  const float xs = tiny ? x * 8388608.0f : x;  // 2**23
  uint32_t bits;
  std::memcpy(&bits, &xs, sizeof bits);
  int32_t e = static_cast<int32_t>(bits >> 23) - 127 - (tiny ? 23 : 0);
  uint32_t mbits = (bits & 0x007FFFFFu) | 0x3F800000u;  // mantissa as a float in [1, 2)
  float m;
  std::memcpy(&m, &mbits, sizeof m);
  const bool high = m > 1.41421356f;
  m = high ? 0.5f * m : m;
  e = high ? e + 1 : e;
  const float f = m - 1.0f;
  const float fe = static_cast<float>(e);
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = f * z * p;
  y += -2.12194440e-4f * fe;  // ln 2 split in two words keeps e * ln 2 exact
  y += -0.5f * z;
  float r = f + y;
  r += 0.693359375f * fe;
  r = x > FLT_MAX ? x : r;  // +inf stays +inf
  r = x == 0.0f ? -INFINITY : r;
  return x != x ? x : r;     // NaN stays NaN
}

// cos(t) for t = fl(2*pi*u), u in [0, 1): the Box-Muller angle. Folds t into [0, pi/2] with
// exact subtractions (Sterbenz) plus the low word of pi, then Cephes' sin/cos polynomials.
SMOOTHKERN_VEC_INLINE float cos_angle_f32(float t) {
  constexpr float kTwoPiHi = 6.28318548f, kTwoPiLo = -1.74845553e-7f;
  constexpr float kPiHi = 3.14159274f, kPiLo = -8.74227766e-8f;
  constexpr float kHalfPiHi = 1.57079637f, kHalfPiLo = -4.37113883e-8f;
  float a = t > kPiHi ? (kTwoPiHi - t) + kTwoPiLo : t;  // cos is even: |t - 2 pi|
  const bool flip = a > kHalfPiHi;                       // cos(a) = -cos(pi - a)
  a = flip ? (kPiHi - a) + kPiLo : a;
  const bool use_sin = a > 0.785398163f;                 // cos(a) = sin(pi/2 - a)
  const float x = use_sin ? (kHalfPiHi - a) + kHalfPiLo : a;
  const float z = x * x;
  const float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * x + x;
  const float c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z +
                   4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
  const float r = use_sin ? s : c;
  return flip ? -r : r;
}

}  // namespace smoothkern
