// accumulate_ on the CPU: one read of chunk[k, N] updates mean, m2, abs_sum and log_sum.
//
// Each task owns a block of elements, runs Welford over the k rows into small buffers that stay
// in L1 (the inner loop runs along contiguous elements, so it vectorises), then Chan-merges the
// chunk's moments into the running state, exactly like StreamingStats._merge_moments.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "../checks.h"
#include "vec_math.h"

namespace smoothkern {
namespace {

// Elements per task: four 1 KiB buffers stay in L1, 12 tasks for N = 3072 (measurements:
// benchmarks/RESULTS.md, "Kernel constants").
constexpr int64_t kBlock = 256;
// Below ~32k chunk values a task is cheaper to run than to hand to another thread.
constexpr int64_t kGrainValues = 32768;

inline float log_acc(float x) { return log_f32(x); }
inline double log_acc(double x) { return std::log(x); }

// One block of elements [j0, j0 + len): Welford over the k rows, then Chan's merge.
template <typename scalar_t, typename acc_t>
SMOOTHKERN_CPU_CLONES void accumulate_block(const scalar_t* chunk, acc_t* mean, acc_t* m2,
                                            acc_t* abs_sum, acc_t* log_sum, int64_t j0,
                                            int64_t len, int64_t k, int64_t n, acc_t w_mean,
                                            acc_t w_m2, acc_t eps) {
  alignas(64) acc_t c_mean[kBlock], c_m2[kBlock], c_abs[kBlock], c_log[kBlock];
  std::fill_n(c_mean, len, acc_t(0));
  std::fill_n(c_m2, len, acc_t(0));
  std::fill_n(c_abs, len, acc_t(0));
  std::fill_n(c_log, len, acc_t(0));
  for (int64_t r = 0; r < k; ++r) {
    const scalar_t* row = chunk + r * n + j0;
    const acc_t inv = acc_t(1) / static_cast<acc_t>(r + 1);
    for (int64_t j = 0; j < len; ++j) {
      const acc_t a = static_cast<acc_t>(row[j]);
      const acc_t delta = a - c_mean[j];
      c_mean[j] += delta * inv;
      c_m2[j] += delta * (a - c_mean[j]);
      const acc_t mag = std::abs(a);
      c_abs[j] += mag;
      c_log[j] += log_acc(mag + eps);
    }
  }
  acc_t* mean_b = mean + j0;
  acc_t* m2_b = m2 + j0;
  acc_t* abs_b = abs_sum + j0;
  acc_t* log_b = log_sum + j0;
  for (int64_t j = 0; j < len; ++j) {
    const acc_t delta = c_mean[j] - mean_b[j];
    mean_b[j] += delta * w_mean;
    m2_b[j] += c_m2[j] + delta * delta * w_m2;
    abs_b[j] += c_abs[j];
    log_b[j] += c_log[j];
  }
}

template <typename scalar_t, typename acc_t>
void accumulate_impl(const scalar_t* chunk, acc_t* mean, acc_t* m2, acc_t* abs_sum,
                     acc_t* log_sum, int64_t k, int64_t n, int64_t seen, acc_t eps) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, kGrainValues / (kBlock * std::max<int64_t>(k, 1)));
  const int64_t total = seen + k;
  // Chan's weights, in double like the Python reference, then rounded to acc_t.
  const acc_t w_mean = static_cast<acc_t>(static_cast<double>(k) / total);
  const acc_t w_m2 = static_cast<acc_t>(static_cast<double>(seen) * k / total);
  at::parallel_for(0, blocks, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t block = lo; block < hi; ++block) {
      const int64_t j0 = block * kBlock;
      accumulate_block(chunk, mean, m2, abs_sum, log_sum, j0, std::min(kBlock, n - j0), k, n,
                       w_mean, w_m2, eps);
    }
  });
}

void accumulate_cpu(at::Tensor& mean, at::Tensor& m2, at::Tensor& abs_sum, at::Tensor& log_sum,
                    const at::Tensor& chunk, int64_t count, double eps) {
  check_accumulate_args(mean, m2, abs_sum, log_sum, chunk, count);
  for (const at::Tensor* t : {&mean, &m2, &abs_sum, &log_sum}) {
    TORCH_CHECK(t->device().is_cpu() && chunk.device().is_cpu(),
                "accumulate_: tensors must be on CPU");
  }
  const int64_t k = chunk.size(0);
  const int64_t n = chunk.size(1);
  if (k == 0 || n == 0) return;
  const at::Tensor c = chunk.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "accumulate_cpu", [&] {
    if (mean.scalar_type() == at::kFloat) {
      accumulate_impl<scalar_t, float>(c.const_data_ptr<scalar_t>(), mean.data_ptr<float>(),
                                       m2.data_ptr<float>(), abs_sum.data_ptr<float>(),
                                       log_sum.data_ptr<float>(), k, n, count,
                                       static_cast<float>(eps));
    } else {
      accumulate_impl<scalar_t, double>(c.const_data_ptr<scalar_t>(), mean.data_ptr<double>(),
                                        m2.data_ptr<double>(), abs_sum.data_ptr<double>(),
                                        log_sum.data_ptr<double>(), k, n, count, eps);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(smoothkern, CPU, m) { m.impl("accumulate_", &accumulate_cpu); }

}  // namespace smoothkern
