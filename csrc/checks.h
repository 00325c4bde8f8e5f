// Argument checks shared by the CPU and CUDA kernels of each op, so both reject the same inputs
// with the same messages. The device check stays with each kernel.
#pragma once

#include <ATen/core/Tensor.h>

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

}  // namespace smoothkern
