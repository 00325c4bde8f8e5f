// The noise contract of smoothkern/noise/philox.py in C++, shared by the CPU and CUDA kernels.
//
// z(seed, b, i, j): counter (j, i, b, 0), key (seed lo, seed hi), Philox4x32-10; uniform and
// Box-Muller Gaussian exactly as the Python reference and Triton's tl.rand / tl.randn.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SMOOTHKERN_HD __host__ __device__ __forceinline__
#else
#define SMOOTHKERN_HD inline
#endif

namespace smoothkern {

// The distribution of the standard draw; the values are smoothkern.noise.NoiseKind's `code`,
// which the perturb schema takes as an int.
enum class NoiseKind : int64_t { kGaussian = 0, kUniform = 1 };

// Philox4x32 constants (Salmon et al., SC'11), the same as Triton's and noise/philox.py's.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

constexpr float kUnitScale = 4.6566127342e-10f;  // 2**-31, Triton's uint_to_uniform_float
constexpr float kGaussU1Floor = 1.0e-7f;
constexpr float kTwoPi = 6.283185307179586f;
constexpr float kSqrt3 = 1.7320508075688772f;

struct PhiloxOut {
  uint32_t r0, r1, r2, r3;
};

SMOOTHKERN_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  const uint64_t prod = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(prod >> 32);
  return static_cast<uint32_t>(prod);
#endif
}

SMOOTHKERN_HD PhiloxOut philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                      uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < kPhiloxRounds; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo(kPhiloxM0, c0, &hi0);
    const uint32_t lo1 = mulhilo(kPhiloxM1, c2, &hi1);
    c0 = hi1 ^ c1 ^ k0;
    c2 = hi0 ^ c3 ^ k1;
    c1 = lo1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return {c0, c1, c2, c3};
}

// uint32 -> [0, 1): reinterpret as int32, fold negatives with -x - 1 (= ~x, no overflow).
SMOOTHKERN_HD float uint_to_unit(uint32_t r) {
  const int32_t s = static_cast<int32_t>(r);
  const int32_t folded = s < 0 ? ~s : s;
  return static_cast<float>(folded) * kUnitScale;
}

SMOOTHKERN_HD float uniform_noise(uint32_t r0) {
  return kSqrt3 * (2.0f * uint_to_unit(r0) - 1.0f);
}

// Box-Muller, first output; u1 floored so log stays finite.
SMOOTHKERN_HD float gaussian_noise(uint32_t r0, uint32_t r1) {
  float u1 = uint_to_unit(r0);
  u1 = u1 < kGaussU1Floor ? kGaussU1Floor : u1;
  const float u2 = uint_to_unit(r1);
  return sqrtf(-2.0f * logf(u1)) * cosf(kTwoPi * u2);
}

}  // namespace smoothkern
