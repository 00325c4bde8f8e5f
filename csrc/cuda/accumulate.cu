// accumulate_ on CUDA: one read of chunk[k, N] with 16-byte loads.
//
// Each thread owns VEC consecutive elements and runs Welford over a slice of the k rows. With
// few elements (B = 1, CIFAR: N = 3072) one slice would leave the GPU idle, so the rows are cut
// into `slices` along grid.y; each slice writes its partial (mean, m2, |a| sum, log sum) to a
// small workspace and a second kernel Chan-merges the slices, in order, into the state.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../checks.h"
#include "grid.h"
#include "moments.cuh"
#include "vec.cuh"

namespace smoothkern {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float log_acc(float v) { return logf(v); }
__device__ __forceinline__ double log_acc(double v) { return log(v); }

// Grid: x over element packs, y over row slices. state = {mean, m2, abs_sum, log_sum}, each [N];
// work = [slices, 4, N] (unused when slices == 1: the slice merges straight into the state).
template <typename scalar_t, typename acc_t, int kVec>
__global__ void accumulate_kernel(const scalar_t* __restrict__ chunk, acc_t* __restrict__ mean,
                                  acc_t* __restrict__ m2, acc_t* __restrict__ abs_sum,
                                  acc_t* __restrict__ log_sum, acc_t* __restrict__ work,
                                  int64_t k, int64_t n, int64_t seen, int64_t rows_per_slice,
                                  acc_t eps) {
  using P = Pack<scalar_t, kVec>;
  const int64_t j0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  if (j0 >= n) return;
  const int64_t r0 = blockIdx.y * rows_per_slice;
  const int64_t r1 = min(k, r0 + rows_per_slice);
  Moments<acc_t> m[kVec];
#pragma unroll
  for (int v = 0; v < kVec; ++v) m[v] = {0, 0, 0, 0};
  for (int64_t r = r0; r < r1; ++r) {
    acc_t a[kVec];
    if (kVec > 1) {
      const P p = *reinterpret_cast<const P*>(chunk + r * n + j0);
#pragma unroll
      for (int v = 0; v < kVec; ++v) a[v] = static_cast<acc_t>(p.v[v]);
    } else {
      a[0] = static_cast<acc_t>(chunk[r * n + j0]);
    }
    const acc_t inv = acc_t(1) / static_cast<acc_t>(r - r0 + 1);
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      welford_add(m[v], a[v], inv);
      const acc_t mag = a[v] < 0 ? -a[v] : a[v];
      m[v].abs_sum += mag;
      m[v].log_sum += log_acc(mag + eps);
    }
  }
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    const int64_t j = j0 + v;
    if (gridDim.y == 1) {
      Moments<acc_t> s = {mean[j], m2[j], abs_sum[j], log_sum[j]};
      merge(s, seen, m[v], k);
      mean[j] = s.mean;
      m2[j] = s.m2;
      abs_sum[j] = s.abs_sum;
      log_sum[j] = s.log_sum;
    } else {
      acc_t* w = work + blockIdx.y * 4 * n + j;
      w[0] = m[v].mean;
      w[n] = m[v].m2;
      w[2 * n] = m[v].abs_sum;
      w[3 * n] = m[v].log_sum;
    }
  }
}

template <typename acc_t>
__global__ void merge_slices_kernel(acc_t* __restrict__ mean, acc_t* __restrict__ m2,
                                    acc_t* __restrict__ abs_sum, acc_t* __restrict__ log_sum,
                                    const acc_t* __restrict__ work, int64_t k, int64_t n,
                                    int64_t seen, int64_t slices, int64_t rows_per_slice) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  // The chunk's own moments first (slice by slice), then one merge into the state, the same
  // grouping as the single-slice path and the reference.
  Moments<acc_t> c = {work[j], work[n + j], work[2 * n + j], work[3 * n + j]};
  int64_t got = min(k, rows_per_slice);
  for (int64_t s = 1; s < slices; ++s) {
    const acc_t* w = work + s * 4 * n + j;
    const int64_t rows = min(k - s * rows_per_slice, rows_per_slice);
    merge(c, got, Moments<acc_t>{w[0], w[n], w[2 * n], w[3 * n]}, rows);
    got += rows;
  }
  Moments<acc_t> st = {mean[j], m2[j], abs_sum[j], log_sum[j]};
  merge(st, seen, c, k);
  mean[j] = st.mean;
  m2[j] = st.m2;
  abs_sum[j] = st.abs_sum;
  log_sum[j] = st.log_sum;
}

int64_t sm_count(int device) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

template <typename scalar_t, typename acc_t, int kVec>
void launch_accumulate(const at::Tensor& chunk, at::Tensor& mean, at::Tensor& m2,
                       at::Tensor& abs_sum, at::Tensor& log_sum, int64_t seen, double eps) {
  const int64_t k = chunk.size(0), n = chunk.size(1);
  const int64_t threads_x = (n + kVec - 1) / kVec;
  // Row slices only when the element threads alone leave the GPU idle (grid.h).
  const RowSlices cut = accumulate_row_slices(k, threads_x, sm_count(chunk.get_device()));
  const int64_t rows_per_slice = cut.rows_per_slice;
  const int64_t used = cut.slices;
  at::Tensor work;
  if (used > 1) work = at::empty({used, 4, n}, mean.options());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>((threads_x + kThreads - 1) / kThreads),
                  static_cast<unsigned>(used));
  accumulate_kernel<scalar_t, acc_t, kVec><<<grid, kThreads, 0, stream>>>(
      chunk.const_data_ptr<scalar_t>(), mean.data_ptr<acc_t>(), m2.data_ptr<acc_t>(),
      abs_sum.data_ptr<acc_t>(), log_sum.data_ptr<acc_t>(),
      used > 1 ? work.data_ptr<acc_t>() : nullptr, k, n, seen, rows_per_slice,
      static_cast<acc_t>(eps));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (used > 1) {
    merge_slices_kernel<acc_t><<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads,
                                 0, stream>>>(
        mean.data_ptr<acc_t>(), m2.data_ptr<acc_t>(), abs_sum.data_ptr<acc_t>(),
        log_sum.data_ptr<acc_t>(), work.const_data_ptr<acc_t>(), k, n, seen, used,
        rows_per_slice);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void accumulate_cuda(at::Tensor& mean, at::Tensor& m2, at::Tensor& abs_sum, at::Tensor& log_sum,
                     const at::Tensor& chunk, int64_t count, double eps) {
  check_accumulate_args(mean, m2, abs_sum, log_sum, chunk, count);
  for (const at::Tensor* t : {&mean, &m2, &abs_sum, &log_sum}) {
    TORCH_CHECK(t->device() == chunk.device() && chunk.is_cuda(),
                "accumulate_: tensors must be on the chunk's CUDA device");
  }
  const int64_t k = chunk.size(0), n = chunk.size(1);
  if (k == 0 || n == 0) return;
  const c10::cuda::CUDAGuard guard(chunk.device());
  const at::Tensor c = chunk.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "accumulate_cuda", [&] {
    constexpr int kVec = pack_size<scalar_t>();
    const bool vector_ok = n % kVec == 0 && is_aligned(c.const_data_ptr(), kVectorBytes);
    if (mean.scalar_type() == at::kFloat) {
      if (vector_ok) {
        launch_accumulate<scalar_t, float, kVec>(c, mean, m2, abs_sum, log_sum, count, eps);
      } else {
        launch_accumulate<scalar_t, float, 1>(c, mean, m2, abs_sum, log_sum, count, eps);
      }
    } else {
      if (vector_ok) {
        launch_accumulate<scalar_t, double, kVec>(c, mean, m2, abs_sum, log_sum, count, eps);
      } else {
        launch_accumulate<scalar_t, double, 1>(c, mean, m2, abs_sum, log_sum, count, eps);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(smoothkern, CUDA, m) { m.impl("accumulate_", &accumulate_cuda); }

}  // namespace smoothkern
