// The sampling designs of smoothkern/noise/sampling.py in C++, for the CPU and CUDA kernels.
//
// antithetic: z(2k + 1) = -z(2k), z(2k) the i.i.d. draw of sample 2k.
// stratified: a nested Latin hypercube by doubling. Sample i of level l = bit_length(i) has the
// parent p = perm_l(i - 2**(l-1)) (swap-or-not keyed by Philox counter (j, l, b, 2)); it shares
// the parent's first l - 1 bits, flips bit l and keeps its own Philox word below. The chain of
// parents ends at sample 0 after at most l steps; no state across samples.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "philox.h"

namespace smoothkern {

// The ops' integer argument (smoothkern.noise.sampling.Sampling.code).
enum class Sampling : int64_t { kIid = 0, kAntithetic = 1, kStratified = 2 };

constexpr uint32_t kStrataStream = 2;   // last counter word of the permutation keys
constexpr int kSwapRounds = 12;         // swap-or-not rounds on 4 or more points
constexpr uint32_t kGolden = 0x9E3779B9u;

// lowbias32 (C. Wellons): a bijection of the 32-bit words.
SMOOTHKERN_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

SMOOTHKERN_HD int bit_length32(uint32_t c) {
  int level = 0;
  while (c) {
    ++level;
    c >>= 1;
  }
  return level;
}

// A keyed bijection of [0, 2**n), n <= 31 (swap-or-not, Hoang, Morris and Rogaway 2012).
SMOOTHKERN_HD uint32_t swap_or_not(uint32_t x, int n, const PhiloxOut& key) {
  if (n == 0) return 0;
  const uint32_t size_minus_one = (1u << n) - 1u;
  const int rounds = n >= 2 ? kSwapRounds : 1;
  for (int q = 0; q < rounds; ++q) {
    const uint32_t round_key = mix32((key.r0 + static_cast<uint32_t>(q) * kGolden) ^ key.r1);
    const uint32_t bit_key = mix32((key.r2 + static_cast<uint32_t>(q) * kGolden) ^ key.r3);
    const uint32_t offset =
        1u + static_cast<uint32_t>((static_cast<uint64_t>(round_key) * size_minus_one) >> 32);
    const uint32_t partner = x ^ offset;
    const uint32_t rep = x > partner ? x : partner;
    if (mix32(rep ^ bit_key) >> 31) x = partner;
  }
  return x;
}

// Bits of a 32-bit word below depth `level` (depth 1 is the top bit); level in 0..32.
SMOOTHKERN_HD uint32_t own_mask(int level) {
  return level == 0 ? 0xFFFFFFFFu : ((1u << (32 - level)) - 1u);
}

// The nested Latin hypercube's word U of (seed, example, sample, element).
SMOOTHKERN_HD uint32_t stratified_word(uint32_t element, uint32_t sample, uint32_t example,
                                       uint32_t k0, uint32_t k1) {
  uint32_t word = 0, flips = 0, point = sample;
  int need = 32;
  while (true) {
    const int level = bit_length32(point);
    const uint32_t own = philox4x32_10(element, point, example, 0, k0, k1).r0;
    const uint32_t take = own_mask(level) & ~(need == 32 ? 0u : own_mask(need));
    word |= own & take;
    if (point == 0) break;
    flips |= 1u << (32 - level);
    const int n = level - 1;
    const uint32_t rank = point - (1u << n);
    const PhiloxOut key = philox4x32_10(element, static_cast<uint32_t>(level), example,
                                        kStrataStream, k0, k1);
    point = swap_or_not(rank, n, key);
    need = level;
  }
  return word ^ flips;
}

// Inverse normal CDF on (0, 1/2] (Acklam's rational approximation, relative error 1.2e-9):
// lower_normal_quantile below, from two parts so that the CPU op can run the central one over
// many draws at once (csrc/cpu/strata.h).
SMOOTHKERN_HD double acklam_tail(double t) {
  const double q = sqrt(-2.0 * log(t));
  return (((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q - 2.400758277161838e+00)
            * q - 2.549732539343734e+00) * q + 4.374664141464968e+00) * q
          + 2.938163982698783e+00)
         / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q + 2.445134137142996e+00)
             * q + 3.754408661907416e+00) * q + 1.0);
}

SMOOTHKERN_HD double acklam_central(double t) {
  const double q = t - 0.5;
  const double r = q * q;
  return (((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r - 2.759285104469687e+02)
            * r + 1.383577518672690e+02) * r - 3.066479806614716e+01) * r
          + 2.506628277459239e+00) * q
         / (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r - 1.556989798598866e+02)
              * r + 6.680131188771972e+01) * r - 1.328068155288572e+01) * r + 1.0);
}

SMOOTHKERN_HD bool acklam_in_tail(double t) { return t < 0.02425; }

SMOOTHKERN_HD double lower_normal_quantile(double t) {
  return acklam_in_tail(t) ? acklam_tail(t) : acklam_central(t);
}

// The lower tail t = min(u, 1 - u) of the word's u = (U + 1/2) / 2**32 (exact in double).
SMOOTHKERN_HD double word_lower_tail(uint32_t word) {
  const uint32_t low = word >= 0x80000000u ? ~word : word;
  return (2.0 * static_cast<double>(low) + 1.0) * 0x1p-33;
}

// z from a uniform 32-bit word, u = (U + 1/2) / 2**32, through the lower tail t = min(u, 1 - u)
// so that U and ~U give z and -z exactly.
SMOOTHKERN_HD float word_to_noise(uint32_t word, bool gaussian) {
  const bool upper = word >= 0x80000000u;
  const double t = word_lower_tail(word);
  const double mag = gaussian ? -lower_normal_quantile(t) : 1.7320508075688772 * (1.0 - 2.0 * t);
  return static_cast<float>(upper ? mag : -mag);
}

// The ops' sampling argument as the enum; an unknown code is an error.
inline Sampling check_sampling(int64_t sampling) {
  if (sampling < 0 || sampling > 2) {
    throw std::invalid_argument("perturb: unknown sampling " + std::to_string(sampling) +
                                " (0 iid, 1 antithetic, 2 stratified: Sampling.code)");
  }
  return static_cast<Sampling>(sampling);
}

// z(seed, b, i, j) under a design; `gaussian` false: uniform.
SMOOTHKERN_HD float sampled_noise(uint32_t element, uint32_t sample, uint32_t example,
                                  uint32_t k0, uint32_t k1, bool gaussian, Sampling sampling) {
  if (sampling == Sampling::kStratified) {
    return word_to_noise(stratified_word(element, sample, example, k0, k1), gaussian);
  }
  const uint32_t drawn = sampling == Sampling::kAntithetic ? (sample & ~1u) : sample;
  const PhiloxOut r = philox4x32_10(element, drawn, example, 0, k0, k1);
  const float z = gaussian ? gaussian_noise(r.r0, r.r1) : uniform_noise(r.r0);
  return (sampling == Sampling::kAntithetic && (sample & 1u)) ? -z : z;
}

}  // namespace smoothkern
