// The CUDA accumulate's arithmetic (Welford step, Chan's merge), free of ATen so the tests can
// compile it alone to PTX and check that no fused multiply-add appears (tests/test_kernels_grid.py).
#pragma once

#include <cstdint>

namespace smoothkern {

template <typename acc_t>
struct Moments {
  acc_t mean, m2, abs_sum, log_sum;
};

// One Welford step with inv = 1 / (rows seen + 1), rounded like the C++ kernel: built with
// --fmad=false (setup_ext.py), so the products are not contracted into the sums.
template <typename acc_t>
__device__ __forceinline__ void welford_add(Moments<acc_t>& m, acc_t a, acc_t inv) {
  const acc_t delta = a - m.mean;
  m.mean += delta * inv;
  m.m2 += delta * (a - m.mean);
}

// Chan's merge of (n_b, b) into (n_a, a); the weights in double, then rounded to acc_t.
template <typename acc_t>
__device__ __forceinline__ void merge(Moments<acc_t>& a, int64_t n_a, const Moments<acc_t>& b,
                                      int64_t n_b) {
  const int64_t n = n_a + n_b;
  const acc_t delta = b.mean - a.mean;
  a.mean += delta * static_cast<acc_t>(static_cast<double>(n_b) / n);
  a.m2 += b.m2 + delta * delta * static_cast<acc_t>(static_cast<double>(n_a) * n_b / n);
  a.abs_sum += b.abs_sum;
  a.log_sum += b.log_sum;
}

}  // namespace smoothkern
