// Philox4x32-10 over many lanes at once, for the CPU kernels' stratified draws.
//
// GCC vectorises philox4x32_10 in a loop, but the 32x32 -> 64-bit products go through 64-bit
// lanes and back (zero-extend, multiply, permute), 5.6 ns per lane on an AVX-512 core against
// 1.6 ns written with vpmuludq on even and odd lanes (benchmarks/RESULTS.md). Same words as
// philox.h, bit for bit (the stratified tests compare the op with the reference).
#pragma once

#include <cstdint>

#include "../philox.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#include <immintrin.h>
#define SMOOTHKERN_PHILOX_X86 1
#endif

namespace smoothkern {
namespace lanes {

// Outputs of lane j: counter (j0 + j, c1[j], c2, c3). r1, r2, r3 may be null (not stored).
struct PhiloxLanes {
  const uint32_t* c1;
  uint32_t j0, c2, c3, k0, k1;
  uint32_t *r0, *r1, *r2, *r3;
};

inline void philox_scalar(const PhiloxLanes& p, int from, int len) {
  for (int j = from; j < len; ++j) {
    const PhiloxOut r = philox4x32_10(p.j0 + static_cast<uint32_t>(j), p.c1[j], p.c2, p.c3,
                                      p.k0, p.k1);
    p.r0[j] = r.r0;
    if (p.r1) p.r1[j] = r.r1;
    if (p.r2) p.r2[j] = r.r2;
    if (p.r3) p.r3[j] = r.r3;
  }
}

#ifdef SMOOTHKERN_PHILOX_X86

// GCC 12 warns inside the intrinsics (their _mm512_undefined_epi32 pass-through operand).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// hi and lo words of a * m per lane, m the same word in every lane (so also in the even
// positions that vpmuludq reads for the odd lanes).
__attribute__((target("avx512f"))) inline void mulhilo16(__m512i a, __m512i m, __m512i* lo,
                                                          __m512i* hi) {
  const __m512i even = _mm512_mul_epu32(a, m);                       // lanes 0, 2, ...
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);  // lanes 1, 3, ...
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  *lo = _mm512_mullo_epi32(a, m);
}

__attribute__((target("avx512f"))) inline int philox_avx512(const PhiloxLanes& p, int len) {
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int j = 0;
  for (; j + 16 <= len; j += 16) {
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(p.j0 + j)), iota);
    __m512i c1 = _mm512_loadu_si512(p.c1 + j);
    __m512i c2 = _mm512_set1_epi32(static_cast<int>(p.c2));
    __m512i c3 = _mm512_set1_epi32(static_cast<int>(p.c3));
    uint32_t k0 = p.k0, k1 = p.k1;
    for (int round = 0; round < kPhiloxRounds; ++round) {
      __m512i lo0, hi0, lo1, hi1;
      mulhilo16(c0, m0, &lo0, &hi0);
      mulhilo16(c2, m1, &lo1, &hi1);
      c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
      c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
      c1 = lo1;
      c3 = lo0;
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    _mm512_storeu_si512(p.r0 + j, c0);
    if (p.r1) _mm512_storeu_si512(p.r1 + j, c1);
    if (p.r2) _mm512_storeu_si512(p.r2 + j, c2);
    if (p.r3) _mm512_storeu_si512(p.r3 + j, c3);
  }
  return j;
}

// mulhilo16 on 8 lanes.
__attribute__((target("avx2"))) inline void mulhilo8(__m256i a, __m256i m, __m256i* lo,
                                                      __m256i* hi) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  *lo = _mm256_mullo_epi32(a, m);
}

__attribute__((target("avx2"))) inline int philox_avx2(const PhiloxLanes& p, int len) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int j = 0;
  for (; j + 8 <= len; j += 8) {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(p.j0 + j)), iota);
    __m256i c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.c1 + j));
    __m256i c2 = _mm256_set1_epi32(static_cast<int>(p.c2));
    __m256i c3 = _mm256_set1_epi32(static_cast<int>(p.c3));
    uint32_t k0 = p.k0, k1 = p.k1;
    for (int round = 0; round < kPhiloxRounds; ++round) {
      __m256i lo0, hi0, lo1, hi1;
      mulhilo8(c0, m0, &lo0, &hi0);
      mulhilo8(c2, m1, &lo1, &hi1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c1 = lo1;
      c3 = lo0;
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p.r0 + j), c0);
    if (p.r1) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p.r1 + j), c1);
    if (p.r2) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p.r2 + j), c2);
    if (p.r3) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p.r3 + j), c3);
  }
  return j;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif  // SMOOTHKERN_PHILOX_X86

// The widest vector unit this CPU has, checked once.
enum class Isa { kScalar, kAvx2, kAvx512 };

inline Isa detect_isa() {
#ifdef SMOOTHKERN_PHILOX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2")) return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

inline Isa isa() {
  static const Isa found = detect_isa();
  return found;
}

// Philox words of lanes 0 .. len - 1 (p's layout).
inline void philox(const PhiloxLanes& p, int len) {
  int done = 0;
#ifdef SMOOTHKERN_PHILOX_X86
  switch (isa()) {
    case Isa::kAvx512: done = philox_avx512(p, len); break;
    case Isa::kAvx2: done = philox_avx2(p, len); break;
    case Isa::kScalar: break;
  }
#endif
  philox_scalar(p, done, len);
}

}  // namespace lanes
}  // namespace smoothkern
