// Stratified draws for the CPU perturb: the words of csrc/sampling.h's stratified_word, bit for
// bit, computed for a block of elements and all samples of a call at once.
//
// stratified_word walks each sample's parent chain alone, recomputing at every step the level's
// permutation key (a Philox call) and the swap-or-not round keys (24 mixes) although they depend
// only on (element, level). Here a task holds one example and kLanes elements:
//   * the round keys of every level are drawn once per task and shared by all samples;
//   * the words of samples 0 .. P-1 are built level by level from their parents' words (one
//     Philox word and one permutation each, as smoothkern.noise.sampling.stratified_prefix_bits);
//   * a sample at or past P (P = 2**k) walks its chain one level at a time down to a point
//     below P and takes the rest of its word from there (l - k level steps at level l).
// P is chosen per call from a cost model (prefix_size). Every loop runs over the lanes, so it
// vectorises (the prefix reads its parents with a gather); the Philox words come from
// philox_lanes.h and the Gaussian's inverse CDF runs its central part over the lanes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../philox.h"
#include "../sampling.h"
#include "philox_lanes.h"
#include "vec_math.h"

namespace smoothkern {
namespace strata {

// Elements per task: 64 keeps B = 1, N = 784 at 13 tasks (balanced on a few threads) and a
// prefix of 50 words per lane at 13 KiB.
constexpr int kLanes = 64;
// Largest prefix kept (words per lane): 256 KiB per task.
constexpr int64_t kMaxPrefix = 1024;

// Bits below depth `level` (own_mask of sampling.h) and the bit at depth `level`, level 1..32.
SMOOTHKERN_VEC_INLINE uint32_t low_bits(int level) {
  return level >= 32 ? 0u : ((1u << (32 - level)) - 1u);
}
SMOOTHKERN_VEC_INLINE uint32_t level_bit(int level) { return 1u << (32 - level); }

// Swap-or-not rounds of a level's permutation (sampling.h's swap_or_not: none on one point,
// one on two, kSwapRounds from four up).
SMOOTHKERN_VEC_INLINE int level_rounds(int level) {
  return level <= 1 ? 0 : (level == 2 ? 1 : kSwapRounds);
}

// The round constants of one level's permutation, per lane: partner offset and bit key of
// each round (what swap_or_not derives from the level's Philox key on every call).
struct LevelKeys {
  alignas(64) uint32_t offset[kSwapRounds][kLanes];
  alignas(64) uint32_t bit[kSwapRounds][kLanes];
};

SMOOTHKERN_VEC_INLINE void fill(uint32_t* a, uint32_t value, int len) {
  for (int j = 0; j < len; ++j) a[j] = value;
}

// Round constants of `level` >= 2 (kRounds = level_rounds(level)), elements j0 .. j0 + len - 1.
template <int kRounds>
SMOOTHKERN_VEC_INLINE void level_keys(LevelKeys& keys, int level, int len, uint32_t j0,
                                      uint32_t example, uint32_t k0, uint32_t k1) {
  alignas(64) uint32_t c1[kLanes], r0[kLanes], r1[kLanes], r2[kLanes], r3[kLanes];
  fill(c1, static_cast<uint32_t>(level), len);
  lanes::philox({c1, j0, example, kStrataStream, k0, k1, r0, r1, r2, r3}, len);
  const uint32_t size_minus_one = (1u << (level - 1)) - 1u;
  for (int q = 0; q < kRounds; ++q) {
    for (int j = 0; j < len; ++j) {
      const uint32_t round_key = mix32((r0[j] + static_cast<uint32_t>(q) * kGolden) ^ r1[j]);
      keys.bit[q][j] = mix32((r2[j] + static_cast<uint32_t>(q) * kGolden) ^ r3[j]);
      keys.offset[q][j] =
          1u + static_cast<uint32_t>((static_cast<uint64_t>(round_key) * size_minus_one) >> 32);
    }
  }
}

// The own Philox words (counter word 3 is 0: the noise's) of lanes at points c1[j].
SMOOTHKERN_VEC_INLINE void own_words(uint32_t* out, const uint32_t* c1, int len, uint32_t j0,
                                     uint32_t example, uint32_t k0, uint32_t k1) {
  lanes::philox({c1, j0, example, 0, k0, k1, out, nullptr, nullptr, nullptr}, len);
}

// swap_or_not of sampling.h on every lane, x[j] <- perm(x[j]), with the level's round
// constants. Rounds outside, lanes inside: a round's lanes are independent, so several vectors
// are in flight at once (the rounds of one lane form a long chain of multiplies).
template <int kRounds>
SMOOTHKERN_VEC_INLINE void permute(uint32_t* x, const LevelKeys& keys, int len) {
  for (int q = 0; q < kRounds; ++q) {
    for (int j = 0; j < len; ++j) {
      const uint32_t partner = x[j] ^ keys.offset[q][j];
      const uint32_t rep = x[j] > partner ? x[j] : partner;
      x[j] = (mix32(rep ^ keys.bit[q][j]) >> 31) ? partner : x[j];
    }
  }
}

// Words of the samples at ranks [r0, r1) of `level` from their parents' words (rows below
// 2**(level-1) of `words`, kLanes per row): the parent's first level-1 bits, bit `level`
// flipped, the sample's own Philox word below.
template <int kRounds>
SMOOTHKERN_VEC_INLINE void extend_prefix(uint32_t* words, const LevelKeys& keys, int level,
                                         int64_t r0, int64_t r1, int len, uint32_t j0,
                                         uint32_t example, uint32_t k0, uint32_t k1) {
  const uint32_t half = 1u << (level - 1);  // the level's first sample
  const uint32_t low = low_bits(level), flip = level_bit(level);
  alignas(64) uint32_t counter[kLanes], own[kLanes], parent[kLanes], fresh[kLanes];
  for (int64_t r = r0; r < r1; ++r) {
    const uint32_t sample = half + static_cast<uint32_t>(r);
    fill(counter, sample, len);
    own_words(own, counter, len, j0, example, k0, k1);
    fill(parent, kRounds == 0 ? 0u : static_cast<uint32_t>(r), len);
    permute<kRounds>(parent, keys, len);
    // The new row goes to `fresh` (whose address never leaves this function) and is copied:
    // a store into `words`, or into an array handed to a call, beside the parents' gather made
    // GCC version the loop for aliasing and run the scalar copy.
    for (int j = 0; j < len; ++j) {
      // An int index (parent < kMaxPrefix): GCC gathers with 32-bit offsets only.
      const uint32_t above = words[static_cast<int>(parent[j]) * kLanes + j] ^ flip;
      fresh[j] = (own[j] & low) | (above & ~low);
    }
    std::memcpy(words + static_cast<int64_t>(sample) * kLanes, fresh, sizeof(uint32_t) * len);
  }
}

// One level of the chains of lanes whose point is at `level` (points below 2**level); the
// others keep their state. Per lane: the point, the bits taken so far, which depths they cover
// (low_bits of the last level taken) and the flipped depths.
struct Chains {
  alignas(64) uint32_t point[kLanes];
  alignas(64) uint32_t taken[kLanes];
  alignas(64) uint32_t covered[kLanes];
  alignas(64) uint32_t flips[kLanes];
};

template <int kRounds>
SMOOTHKERN_VEC_INLINE void chain_level(Chains& c, const LevelKeys& keys, int level, int len,
                                       uint32_t j0, uint32_t example, uint32_t k0, uint32_t k1) {
  const uint32_t half = 1u << (level - 1);
  const uint32_t low = low_bits(level), flip = level_bit(level);
  alignas(64) uint32_t parent[kLanes], own[kLanes];
  own_words(own, c.point, len, j0, example, k0, k1);
  for (int j = 0; j < len; ++j) parent[j] = kRounds == 0 ? 0u : c.point[j] - half;
  permute<kRounds>(parent, keys, len);
  for (int j = 0; j < len; ++j) {
    const uint32_t point = c.point[j];
    const bool here = point >= half;  // points stay below 2**level
    c.taken[j] |= here ? (own[j] & low & ~c.covered[j]) : 0u;
    c.covered[j] = here ? low : c.covered[j];
    c.flips[j] |= here ? flip : 0u;
    c.point[j] = here ? parent[j] : point;
  }
}

// word_to_noise of sampling.h over len words. Gaussian: Acklam's central formula for every lane
// in one loop that vectorises (95 % of draws are central), then the tails' log and sqrt lane by
// lane; the same double operations as the scalar function, so the same floats.
SMOOTHKERN_VEC_INLINE void words_to_noise(const uint32_t* words, float* z, int len,
                                          bool gaussian) {
  if (!gaussian) {
    for (int j = 0; j < len; ++j) z[j] = word_to_noise(words[j], false);
    return;
  }
  for (int j = 0; j < len; ++j) {
    const double mag = -acklam_central(word_lower_tail(words[j]));
    z[j] = static_cast<float>(words[j] >= 0x80000000u ? mag : -mag);
  }
  // The tail lanes listed without a branch (one lane in 20 would mispredict), then redrawn.
  int tails[kLanes];
  int count = 0;
  for (int j = 0; j < len; ++j) {
    tails[count] = j;
    count += acklam_in_tail(word_lower_tail(words[j]));
  }
  for (int t = 0; t < count; ++t) z[tails[t]] = word_to_noise(words[tails[t]], true);
}

// The prefix size P for samples [start, end): end itself (every sample read from the prefix)
// or a power of two 2**k with the samples past it chained, whichever costs fewer lane steps
// (one Philox word and one permutation per lane): P for the prefix, l - k for each chained
// sample of level l. Ties go to the plain prefix.
inline int64_t prefix_size(int64_t start, int64_t end) {
  const int top = bit_length32(static_cast<uint32_t>(end - 1));
  int64_t best = end;
  int64_t best_cost = end <= kMaxPrefix ? end : std::numeric_limits<int64_t>::max();
  for (int k = 0; (int64_t{1} << k) < end && (int64_t{1} << k) <= kMaxPrefix; ++k) {
    const int64_t size = int64_t{1} << k;
    int64_t cost = size;
    for (int level = k + 1; level <= top; ++level) {
      const int64_t lo = std::max({start, size, int64_t{1} << (level - 1)});
      const int64_t hi = std::min(end, int64_t{1} << level);
      if (hi > lo) cost += (hi - lo) * (level - k);
    }
    if (cost < best_cost) {
      best_cost = cost;
      best = size;
    }
  }
  return best;
}

}  // namespace strata
}  // namespace smoothkern
