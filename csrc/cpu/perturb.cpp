// perturb and philox_bits on the CPU: replicate, draw, scale, add and cast in one pass.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "../checks.h"
#include "../philox.h"
#include "../sampling.h"
#include "philox_lanes.h"
#include "strata.h"
#include "vec_math.h"

namespace smoothkern {
namespace {

// Elements drawn per task: z stays in L1 for every level, several tasks per CIFAR example
// (measurements: benchmarks/RESULTS.md, "Kernel constants").
constexpr int64_t kBlock = 1024;
// Tasks below ~16k elements cost more to hand to a thread than to run.
constexpr int64_t kGrainElements = 16384;
// A stratified draw costs about as much as this many i.i.d. ones (benchmarks/RESULTS.md).
constexpr int64_t kStrataCost = 2;

// Writes z to every level's row: out_b points at row (i * S + 0) * B + b, element j0; one level
// further is `row_stride` values on. float32 product then sum, as the reference:
// noisy = float(x) + sigma * z. sigma_b as in perturb_block.
template <typename scalar_t>
SMOOTHKERN_VEC_INLINE void write_levels(const float* z, const scalar_t* xb, const float* sigma_b,
                                        int64_t level_stride, bool per_element, scalar_t* out_b,
                                        int64_t row_stride, int64_t levels, int64_t len) {
  for (int64_t s = 0; s < levels; ++s) {
    const float* sd = sigma_b + s * level_stride;
    scalar_t* row = out_b + s * row_stride;
    if (per_element) {
      for (int64_t j = 0; j < len; ++j) {
        const float scaled = sd[j] * z[j];
        row[j] = static_cast<scalar_t>(static_cast<float>(xb[j]) + scaled);
      }
    } else {
      const float sd0 = sd[0];
      for (int64_t j = 0; j < len; ++j) {
        const float scaled = sd0 * z[j];
        row[j] = static_cast<scalar_t>(static_cast<float>(xb[j]) + scaled);
      }
    }
  }
}

// One i.i.d. or antithetic task: elements [j0, j0 + len) of (sample i, example b), drawn once,
// written for every level. The draw is vector code throughout: Philox words from the
// hand-written lanes of philox_lanes.h (GCC's auto-vectorised philox4x32_10 was ~3x slower
// per lane), then Box-Muller with the straight-line log and cos of vec_math.h (std::log /
// std::cos kept the Gaussian path scalar). sigma_b points at sigma[0, b] (per example) or
// sigma[0, b, j0] (per element); one level further is `level_stride` floats on.
template <typename scalar_t>
SMOOTHKERN_CPU_CLONES void perturb_block(const scalar_t* xb, const float* sigma_b,
                                         int64_t level_stride, bool per_element,
                                         scalar_t* out_b, int64_t batch, int64_t n,
                                         int64_t levels, int64_t len, int64_t j0, uint32_t sample,
                                         uint32_t example, uint32_t k0, uint32_t k1,
                                         NoiseKind kind, Sampling sampling) {
  alignas(64) float z[kBlock], u2[kBlock];
  // antithetic: sample 2k + 1 draws sample 2k's i.i.d. z, negated below
  const bool negate = sampling == Sampling::kAntithetic && (sample & 1u);
  if (sampling == Sampling::kAntithetic) sample &= ~1u;
  // Philox words from the hand-written lanes (philox_lanes.h, the same words as philox4x32_10):
  // counter (j0 + j, sample, example, 0), element j across the lanes.
  alignas(64) uint32_t samples[kBlock], r0[kBlock], r1[kBlock];
  for (int64_t j = 0; j < len; ++j) samples[j] = sample;
  lanes::philox({samples, static_cast<uint32_t>(j0), example, 0, k0, k1, r0, r1, nullptr, nullptr},
                static_cast<int>(len));
  for (int64_t j = 0; j < len; ++j) {
    z[j] = uint_to_unit(r0[j]);
    u2[j] = uint_to_unit(r1[j]);
  }
  switch (kind) {
    case NoiseKind::kGaussian:
      for (int64_t j = 0; j < len; ++j) {
        const float u1 = z[j] < kGaussU1Floor ? kGaussU1Floor : z[j];
        z[j] = std::sqrt(-2.0f * log_f32(u1)) * cos_angle_f32(kTwoPi * u2[j]);
      }
      break;
    case NoiseKind::kUniform:
      for (int64_t j = 0; j < len; ++j) z[j] = kSqrt3 * (2.0f * z[j] - 1.0f);
      break;
  }
  if (negate) {
    for (int64_t j = 0; j < len; ++j) z[j] = -z[j];
  }
  write_levels(z, xb, sigma_b, level_stride, per_element, out_b, batch * n, levels, len);
}

// Per-thread scratch of the stratified tasks: the prefix words and every level's round keys.
struct StrataScratch {
  std::vector<uint32_t> words;
  std::vector<strata::LevelKeys> keys;
};

// One stratified task: elements [j0, j0 + len) (len <= strata::kLanes) of example b, every
// sample start .. start + count - 1 (strata.h). out_b points at row b (sample start, level 0),
// element j0; one sample further is levels * batch * n values on.
template <typename scalar_t>
SMOOTHKERN_CPU_CLONES void perturb_strata(const scalar_t* xb, const float* sigma_b,
                                          int64_t level_stride, bool per_element,
                                          scalar_t* out_b, int64_t batch, int64_t n,
                                          int64_t levels, int len, uint32_t j0, int64_t start,
                                          int64_t count, int64_t prefix, uint32_t example,
                                          uint32_t k0, uint32_t k1, NoiseKind kind,
                                          StrataScratch& scratch) {
  using namespace strata;
  const int64_t end = start + count;
  const int top = bit_length32(static_cast<uint32_t>(end - 1));
  const int low_levels = bit_length32(static_cast<uint32_t>(prefix - 1));  // levels below P
  LevelKeys* keys = scratch.keys.data();
  for (int level = 2; level <= top; ++level) {
    if (level == 2) {
      level_keys<1>(keys[level], level, len, j0, example, k0, k1);
    } else {
      level_keys<kSwapRounds>(keys[level], level, len, j0, example, k0, k1);
    }
  }
  uint32_t* words = scratch.words.data();
  alignas(64) uint32_t zeros[kLanes];
  fill(zeros, 0, len);
  own_words(words, zeros, len, j0, example, k0, k1);
  for (int level = 1; level <= low_levels; ++level) {
    const int64_t half = int64_t{1} << (level - 1);
    const int64_t ranks = std::min(half, prefix - half);
    switch (level_rounds(level)) {
      case 0: extend_prefix<0>(words, keys[level], level, 0, ranks, len, j0, example, k0, k1);
              break;
      case 1: extend_prefix<1>(words, keys[level], level, 0, ranks, len, j0, example, k0, k1);
              break;
      default: extend_prefix<kSwapRounds>(words, keys[level], level, 0, ranks, len, j0, example,
                                          k0, k1);
    }
  }
  const bool gaussian = kind == NoiseKind::kGaussian;
  alignas(64) float z[kLanes];
  alignas(64) uint32_t chained[kLanes];
  Chains chains;
  for (int64_t i = start; i < end; ++i) {
    const uint32_t* word = i < prefix ? words + i * kLanes : chained;
    if (i >= prefix) {  // prefix = 2**low_levels: walk down to a point below it
      for (int j = 0; j < len; ++j) {
        chains.point[j] = static_cast<uint32_t>(i);
        chains.taken[j] = chains.covered[j] = chains.flips[j] = 0;
      }
      for (int level = bit_length32(static_cast<uint32_t>(i)); level > low_levels; --level) {
        switch (level_rounds(level)) {
          case 0: chain_level<0>(chains, keys[level], level, len, j0, example, k0, k1); break;
          case 1: chain_level<1>(chains, keys[level], level, len, j0, example, k0, k1); break;
          default: chain_level<kSwapRounds>(chains, keys[level], level, len, j0, example, k0, k1);
        }
      }
      for (int j = 0; j < len; ++j) {
        const uint32_t rest = words[static_cast<int>(chains.point[j]) * kLanes + j];
        chained[j] = (chains.taken[j] | (rest & ~chains.covered[j])) ^ chains.flips[j];
      }
    }
    words_to_noise(word, z, len, gaussian);
    write_levels(z, xb, sigma_b, level_stride, per_element,
                 out_b + (i - start) * levels * batch * n, batch * n, levels, len);
  }
}

// example_index: nullptr (row b draws as example b) or int64 [B], the counter word of each row.
template <typename scalar_t>
void perturb_impl(const scalar_t* x, const float* sigma, bool per_element, scalar_t* out,
                  int64_t batch, int64_t levels, int64_t n, uint64_t seed, int64_t start,
                  int64_t count, NoiseKind kind, const int64_t* example_index,
                  Sampling sampling) {
  const uint32_t k0 = static_cast<uint32_t>(seed);
  const uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / kBlock);
  const int64_t level_stride = per_element ? batch * n : batch;
  if (sampling == Sampling::kStratified) {
    // Tasks of (example, kLanes elements) x all samples: each shares its levels' round keys
    // and its prefix words among the samples (strata.h).
    constexpr int64_t lanes = strata::kLanes;
    const int64_t lane_blocks = (n + lanes - 1) / lanes;
    const int64_t prefix = strata::prefix_size(start, start + count);
    const int top = bit_length32(static_cast<uint32_t>(start + count - 1));
    // The same least work per thread as below, counting a stratified draw as kStrataCost
    // i.i.d. ones.
    const int64_t strata_grain =
        std::max<int64_t>(1, kGrainElements / (lanes * count * kStrataCost));
    at::parallel_for(0, batch * lane_blocks, strata_grain, [&](int64_t lo, int64_t hi) {
      StrataScratch scratch;
      scratch.words.resize(prefix * lanes);
      scratch.keys.resize(top + 1);
      for (int64_t task = lo; task < hi; ++task) {
        const int64_t block = task % lane_blocks;
        const int64_t b = task / lane_blocks;
        const int64_t j0 = block * lanes;
        const float* sigma_b = per_element ? sigma + b * n + j0 : sigma + b;
        perturb_strata(x + b * n + j0, sigma_b, level_stride, per_element, out + b * n + j0,
                       batch, n, levels, static_cast<int>(std::min(lanes, n - j0)),
                       static_cast<uint32_t>(j0), start, count, prefix,
                       static_cast<uint32_t>(example_index ? example_index[b] : b), k0, k1, kind,
                       scratch);
      }
    });
    return;
  }
  at::parallel_for(0, count * batch * blocks, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t block = task % blocks;
      const int64_t b = (task / blocks) % batch;
      const int64_t i = task / (blocks * batch);
      const int64_t j0 = block * kBlock;
      const float* sigma_b = per_element ? sigma + b * n + j0 : sigma + b;
      perturb_block(x + b * n + j0, sigma_b, level_stride, per_element,
                    out + ((i * levels) * batch + b) * n + j0, batch, n, levels,
                    std::min(kBlock, n - j0), j0, static_cast<uint32_t>(start + i),
                    static_cast<uint32_t>(example_index ? example_index[b] : b), k0, k1,
                    kind, sampling);
    }
  });
}

at::Tensor perturb_cpu(const at::Tensor& x, const at::Tensor& sigma, int64_t seed, int64_t start,
                       int64_t count, int64_t noise,
                       const std::optional<at::Tensor>& example_index, int64_t sampling) {
  TORCH_CHECK(x.device().is_cpu() && sigma.device().is_cpu(), "perturb: tensors must be on CPU");
  const Sampling design = check_sampling(sampling);
  TORCH_CHECK(!example_index.has_value() || example_index->device().is_cpu(),
              "perturb: example_index must be on the CPU, as x");
  const NoiseKind kind = check_perturb_args(x, sigma, start, count, noise);
  check_example_index(example_index, x.size(0));
  const int64_t batch = x.size(0);
  const int64_t levels = sigma.size(0);
  const int64_t n = x.numel() / batch;
  const at::Tensor xc = x.contiguous();
  const at::Tensor sc = sigma.contiguous();
  std::vector<int64_t> shape = x.sizes().vec();
  shape[0] = count * levels * batch;
  at::Tensor out = at::empty(shape, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const at::Tensor ic = example_index.has_value() ? example_index->contiguous() : at::Tensor();
  const int64_t* index = ic.defined() ? ic.const_data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "perturb_cpu", [&] {
    perturb_impl<scalar_t>(xc.const_data_ptr<scalar_t>(), sc.const_data_ptr<float>(),
                           sc.dim() == 3, out.mutable_data_ptr<scalar_t>(), batch, levels, n,
                           static_cast<uint64_t>(seed), start, count, kind, index, design);
  });
  return out;
}

at::Tensor philox_bits_cpu(int64_t seed, const at::Tensor& example, const at::Tensor& sample,
                           const at::Tensor& element) {
  check_philox_bits_args(example, sample, element);
  TORCH_CHECK(example.device().is_cpu() && sample.device().is_cpu() && element.device().is_cpu(),
              "philox_bits: example, sample and element must all be on the CPU");
  const uint64_t key = static_cast<uint64_t>(seed);
  const at::Tensor e = example.contiguous(), s = sample.contiguous(), j = element.contiguous();
  std::vector<int64_t> shape = example.sizes().vec();
  shape.push_back(4);
  at::Tensor out = at::empty(shape, example.options());
  const int64_t* pe = e.const_data_ptr<int64_t>();
  const int64_t* ps = s.const_data_ptr<int64_t>();
  const int64_t* pj = j.const_data_ptr<int64_t>();
  int64_t* po = out.mutable_data_ptr<int64_t>();
  for (int64_t t = 0; t < e.numel(); ++t) {
    const PhiloxOut r = philox4x32_10(static_cast<uint32_t>(pj[t]), static_cast<uint32_t>(ps[t]),
                                      static_cast<uint32_t>(pe[t]), 0,
                                      static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
    po[4 * t] = r.r0;
    po[4 * t + 1] = r.r1;
    po[4 * t + 2] = r.r2;
    po[4 * t + 3] = r.r3;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(smoothkern, CPU, m) {
  m.impl("perturb", &perturb_cpu);
  m.impl("philox_bits", &philox_bits_cpu);
}

}  // namespace smoothkern
