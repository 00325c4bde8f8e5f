// Argument checks shared by the CPU and CUDA kernels of each op, so both reject the same inputs
// with the same messages. The device check stays with each kernel.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "philox.h"

namespace smoothkern {

// accumulate_: chunk [k, N] floating point; four contiguous [N] state tensors of one dtype,
// float32 or float64; count >= 0.
inline void check_accumulate_args(const at::Tensor& mean, const at::Tensor& m2,
                                  const at::Tensor& abs_sum, const at::Tensor& log_sum,
                                  const at::Tensor& chunk, int64_t count) {
  TORCH_CHECK(chunk.dim() == 2, "accumulate_: chunk must be [k, N], got ", chunk.sizes());
  TORCH_CHECK(chunk.is_floating_point(), "accumulate_: chunk must be floating point");
  TORCH_CHECK(count >= 0, "accumulate_: count must be non-negative");
  const int64_t n = chunk.size(1);
  for (const at::Tensor* t : {&mean, &m2, &abs_sum, &log_sum}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == n && t->is_contiguous(),
                "accumulate_: state tensors must be contiguous [N] with N = chunk.size(1)");
    TORCH_CHECK(t->scalar_type() == mean.scalar_type(),
                "accumulate_: state tensors must share one dtype");
  }
  TORCH_CHECK(mean.scalar_type() == at::kFloat || mean.scalar_type() == at::kDouble,
              "accumulate_: state must be float32 or float64");
}

// Sample, example and element indices are uint32 Philox counter words: at most 2**32 of each,
// past which the noise would silently repeat (ops/perturb.py's check_perturb_args makes the
// same checks).
constexpr int64_t kMaxCounter = int64_t(1) << 32;

// perturb: x [B, ...] floating point with B >= 1 (N elements per example), sigma float32 [S, B]
// (per example) or [S, B, N] (per element), a known noise kind, start/count >= 0 with
// start + count <= 2**32, B and N at most 2**32. Returns the noise kind.
inline NoiseKind check_perturb_args(const at::Tensor& x, const at::Tensor& sigma, int64_t start,
                                    int64_t count, int64_t noise) {
  TORCH_CHECK(x.dim() >= 1 && x.size(0) >= 1, "perturb: x must be [B, ...] with B >= 1");
  TORCH_CHECK(x.is_floating_point(), "perturb: x must be floating point, got ", x.scalar_type());
  const int64_t batch = x.size(0);
  const int64_t n = x.numel() / batch;
  TORCH_CHECK(sigma.scalar_type() == at::kFloat &&
                  ((sigma.dim() == 2 && sigma.size(1) == batch) ||
                   (sigma.dim() == 3 && sigma.size(1) == batch && sigma.size(2) == n)),
              "perturb: sigma must be float32 [S, B] or [S, B, N] with B = x.size(0) and N "
              "elements per example, got ", sigma.scalar_type(), " ", sigma.sizes());
  TORCH_CHECK(noise == static_cast<int64_t>(NoiseKind::kGaussian) ||
                  noise == static_cast<int64_t>(NoiseKind::kUniform),
              "perturb: unknown noise kind ", noise, " (0 gaussian, 1 uniform: NoiseKind.code)");
  TORCH_CHECK(start >= 0 && count >= 0, "perturb: start and count must be non-negative");
  TORCH_CHECK(count <= kMaxCounter && start <= kMaxCounter - count,
              "perturb: sample indices reach start + count = ", start, " + ", count,
              " > 2**32 (the sample index is a 32-bit Philox counter word)");
  TORCH_CHECK(n <= kMaxCounter && batch <= kMaxCounter,
              "perturb: more than 2**32 examples or 2**32 elements per example");
  return static_cast<NoiseKind>(noise);
}

// perturb's example_index (when given): int64 [B]. Its values are not read (on a GPU that would
// synchronise on every perturb): every kernel takes each modulo 2**32 (the uint32 counter
// word), and keeping them in 0 .. 2**32 - 1 is the caller's part (the public entry points check
// them once per call). The device check stays with each kernel.
inline void check_example_index(const std::optional<at::Tensor>& example_index, int64_t batch) {
  if (!example_index.has_value()) return;
  const at::Tensor& idx = *example_index;
  TORCH_CHECK(idx.scalar_type() == at::kLong,
              "perturb: example_index must be int64 (LongTensor), got ", idx.scalar_type());
  TORCH_CHECK(idx.dim() == 1 && idx.size(0) == batch,
              "perturb: example_index must be [B] with B = x.size(0) = ", batch, ", got ",
              idx.sizes());
}

// philox_bits: three int64 index tensors of one shape (each word is taken modulo 2**32).
inline void check_philox_bits_args(const at::Tensor& example, const at::Tensor& sample,
                                   const at::Tensor& element) {
  TORCH_CHECK(example.scalar_type() == at::kLong && sample.scalar_type() == at::kLong &&
                  element.scalar_type() == at::kLong,
              "philox_bits: indices must be int64");
  TORCH_CHECK(example.sizes() == sample.sizes() && sample.sizes() == element.sizes(),
              "philox_bits: indices must have the same shape");
}

}  // namespace smoothkern
