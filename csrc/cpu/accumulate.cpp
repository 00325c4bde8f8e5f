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
#include <cfloat>
#include <cmath>
#include <cstring>

namespace smoothkern {
namespace {

// Elements per task: four float buffers of 256 elements are 4 KiB, in L1 next to the streamed
// rows; 128/256/1024 were within 5% on 3x224x224, k=400 (2 cores), 256 splits CIFAR-sized
// states (N = 3072·B) into enough tasks for both cores.
constexpr int64_t kBlock = 256;
// Below ~32k chunk values a task is cheaper to run than to hand to another thread.
constexpr int64_t kGrainValues = 32768;

// Natural log for finite x > 0 as straight-line float code, so the element loop vectorises
// (std::log is an opaque call). Range reduction to m in [sqrt(1/2), sqrt(2)) and the minimax
// polynomial of Moshier's Cephes logf; within 2 ulp of std::log (tests/test_kernels_accumulate).
inline float log_f32(float x) {
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

inline float log_acc(float x) { return log_f32(x); }
inline double log_acc(double x) { return std::log(x); }

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
    alignas(64) acc_t c_mean[kBlock], c_m2[kBlock], c_abs[kBlock], c_log[kBlock];
    for (int64_t block = lo; block < hi; ++block) {
      const int64_t j0 = block * kBlock;
      const int64_t len = std::min(kBlock, n - j0);
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
  });
}

void accumulate_cpu(at::Tensor& mean, at::Tensor& m2, at::Tensor& abs_sum, at::Tensor& log_sum,
                    const at::Tensor& chunk, int64_t count, double eps) {
  TORCH_CHECK(chunk.dim() == 2, "accumulate_: chunk must be [k, N], got ", chunk.sizes());
  TORCH_CHECK(chunk.is_floating_point(), "accumulate_: chunk must be floating point");
  TORCH_CHECK(count >= 0, "accumulate_: count must be non-negative");
  const int64_t k = chunk.size(0);
  const int64_t n = chunk.size(1);
  for (const at::Tensor* t : {&mean, &m2, &abs_sum, &log_sum}) {
    TORCH_CHECK(t->device().is_cpu() && chunk.device().is_cpu(),
                "accumulate_: tensors must be on CPU");
    TORCH_CHECK(t->dim() == 1 && t->size(0) == n && t->is_contiguous(),
                "accumulate_: state tensors must be contiguous [N] with N = chunk.size(1)");
    TORCH_CHECK(t->scalar_type() == mean.scalar_type(),
                "accumulate_: state tensors must share one dtype");
  }
  TORCH_CHECK(mean.scalar_type() == at::kFloat || mean.scalar_type() == at::kDouble,
              "accumulate_: state must be float32 or float64");
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
