// perturb and philox_bits on CUDA: one thread draws VEC consecutive elements of one
// (sample, example) row once and writes them for every noise level, with 16-byte stores.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "../checks.h"
#include "../philox.h"
#include "../sampling.h"
#include "grid.h"
#include "vec.cuh"

namespace smoothkern {
namespace {

constexpr int kThreads = 256;

template <NoiseKind kKind>
__device__ __forceinline__ float draw(int64_t j, uint32_t sample, uint32_t example, uint32_t k0,
                                      uint32_t k1) {
  const PhiloxOut r = philox4x32_10(static_cast<uint32_t>(j), sample, example, 0, k0, k1);
  if constexpr (kKind == NoiseKind::kGaussian) {
    return gaussian_noise(r.r0, r.r1);
  } else {
    return uniform_noise(r.r0);
  }
}

// Grid: x over element packs, y (strided) over rows = (sample, example) pairs.
// kVec > 1 only when n % kVec == 0 and x, out are 16-byte aligned (checked by the launcher).
// sigma is [S, B] (per_element false) or [S, B, N] (per_element true). example_index is
// nullptr (row b draws as example b) or int64 [B], the counter word of each row (mod 2**32).
template <typename scalar_t, int kVec, NoiseKind kKind>
__global__ void perturb_kernel(const scalar_t* __restrict__ x, const float* __restrict__ sigma,
                               bool per_element, const int64_t* __restrict__ example_index,
                               scalar_t* __restrict__ out, int64_t batch, int64_t levels,
                               int64_t n, uint32_t k0, uint32_t k1, int64_t start,
                               int64_t rows, Sampling sampling) {
  using P = Pack<scalar_t, kVec>;
  const int64_t j0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  if (j0 >= n) return;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t b = row % batch;
    const int64_t i = row / batch;
    const uint32_t example = static_cast<uint32_t>(example_index ? example_index[b] : b);
    float xv[kVec], z[kVec];
    if (kVec > 1) {
      const P p = *reinterpret_cast<const P*>(x + b * n + j0);
#pragma unroll
      for (int v = 0; v < kVec; ++v) xv[v] = static_cast<float>(p.v[v]);
    } else {
      xv[0] = static_cast<float>(x[b * n + j0]);
    }
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      const uint32_t sample = static_cast<uint32_t>(start + i);
      z[v] = sampling == Sampling::kIid
                 ? draw<kKind>(j0 + v, sample, example, k0, k1)
                 : sampled_noise(static_cast<uint32_t>(j0 + v), sample, example, k0, k1,
                                 kKind == NoiseKind::kGaussian, sampling);
    }
    for (int64_t s = 0; s < levels; ++s) {
      float sd[kVec];
      if (per_element) {  // uniform across the block: no divergence
        const float* src = sigma + (s * batch + b) * n + j0;
#pragma unroll
        for (int v = 0; v < kVec; ++v) sd[v] = src[v];
      } else {
        const float one = sigma[s * batch + b];
#pragma unroll
        for (int v = 0; v < kVec; ++v) sd[v] = one;
      }
      P p;
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        // _rn intrinsics: no fused multiply-add, so the rounding equals the CPU reference.
        p.v[v] = static_cast<scalar_t>(__fadd_rn(xv[v], __fmul_rn(sd[v], z[v])));
      }
      scalar_t* dst = out + ((i * levels + s) * batch + b) * n + j0;
      if (kVec > 1) {
        *reinterpret_cast<P*>(dst) = p;
      } else {
        dst[0] = p.v[0];
      }
    }
  }
}

template <typename scalar_t, int kVec>
void launch_perturb(const at::Tensor& x, const at::Tensor& sigma, const int64_t* index,
                    at::Tensor& out, int64_t batch, int64_t levels, int64_t n, uint64_t seed,
                    int64_t start, int64_t count, NoiseKind kind, Sampling sampling) {
  const int64_t rows = count * batch;
  const int64_t packs = (n + kVec - 1) / kVec;
  const dim3 grid(static_cast<unsigned>((packs + kThreads - 1) / kThreads),
                  static_cast<unsigned>(perturb_grid_y(rows)));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const scalar_t* src = x.const_data_ptr<scalar_t>();
  const float* sd = sigma.const_data_ptr<float>();
  const bool per_element = sigma.dim() == 3;
  scalar_t* dst = out.mutable_data_ptr<scalar_t>();
  switch (kind) {
    case NoiseKind::kGaussian:
      perturb_kernel<scalar_t, kVec, NoiseKind::kGaussian><<<grid, kThreads, 0, stream>>>(
          src, sd, per_element, index, dst, batch, levels, n, k0, k1, start, rows, sampling);
      break;
    case NoiseKind::kUniform:
      perturb_kernel<scalar_t, kVec, NoiseKind::kUniform><<<grid, kThreads, 0, stream>>>(
          src, sd, per_element, index, dst, batch, levels, n, k0, k1, start, rows, sampling);
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor perturb_cuda(const at::Tensor& x, const at::Tensor& sigma, int64_t seed, int64_t start,
                        int64_t count, int64_t noise,
                        const std::optional<at::Tensor>& example_index, int64_t sampling) {
  const Sampling design = check_sampling(sampling);
  TORCH_CHECK(x.is_cuda() && sigma.device() == x.device(),
              "perturb: x and sigma must be on the same CUDA device");
  TORCH_CHECK(!example_index.has_value() || example_index->device() == x.device(),
              "perturb: example_index must be on x's CUDA device");
  const NoiseKind kind = check_perturb_args(x, sigma, start, count, noise);
  check_example_index(example_index, x.size(0));  // layout only: no synchronisation
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t batch = x.size(0), levels = sigma.size(0), n = x.numel() / batch;
  const at::Tensor xc = x.contiguous(), sc = sigma.contiguous();
  std::vector<int64_t> shape = x.sizes().vec();
  shape[0] = count * levels * batch;
  at::Tensor out = at::empty(shape, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const at::Tensor ic = example_index.has_value() ? example_index->contiguous() : at::Tensor();
  const int64_t* index = ic.defined() ? ic.const_data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "perturb_cuda", [&] {
    constexpr int kVec = pack_size<scalar_t>();
    const bool vector_ok = n % kVec == 0 && is_aligned(xc.const_data_ptr(), kVectorBytes) &&
                           is_aligned(out.const_data_ptr(), kVectorBytes);
    if (vector_ok) {
      launch_perturb<scalar_t, kVec>(xc, sc, index, out, batch, levels, n, seed, start, count,
                                     kind, design);
    } else {
      launch_perturb<scalar_t, 1>(xc, sc, index, out, batch, levels, n, seed, start, count,
                                  kind, design);
    }
  });
  return out;
}

__global__ void philox_bits_kernel(const int64_t* example, const int64_t* sample,
                                   const int64_t* element, int64_t* out, int64_t total,
                                   uint32_t k0, uint32_t k1) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= total) return;
  const PhiloxOut r = philox4x32_10(static_cast<uint32_t>(element[t]),
                                    static_cast<uint32_t>(sample[t]),
                                    static_cast<uint32_t>(example[t]), 0, k0, k1);
  out[4 * t] = r.r0;
  out[4 * t + 1] = r.r1;
  out[4 * t + 2] = r.r2;
  out[4 * t + 3] = r.r3;
}

at::Tensor philox_bits_cuda(int64_t seed, const at::Tensor& example, const at::Tensor& sample,
                            const at::Tensor& element) {
  check_philox_bits_args(example, sample, element);
  TORCH_CHECK(example.is_cuda() && sample.device() == example.device() &&
                  element.device() == example.device(),
              "philox_bits: example, sample and element must be on the same CUDA device");
  const c10::cuda::CUDAGuard guard(example.device());
  const at::Tensor e = example.contiguous(), s = sample.contiguous(), j = element.contiguous();
  std::vector<int64_t> shape = example.sizes().vec();
  shape.push_back(4);
  at::Tensor out = at::empty(shape, example.options());
  const int64_t total = e.numel();
  if (total == 0) return out;
  const uint64_t key = static_cast<uint64_t>(seed);
  philox_bits_kernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0,
                       c10::cuda::getCurrentCUDAStream()>>>(
      e.const_data_ptr<int64_t>(), s.const_data_ptr<int64_t>(), j.const_data_ptr<int64_t>(),
      out.mutable_data_ptr<int64_t>(), total, static_cast<uint32_t>(key),
      static_cast<uint32_t>(key >> 32));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(smoothkern, CUDA, m) {
  m.impl("perturb", &perturb_cuda);
  m.impl("philox_bits", &philox_bits_cuda);
}

}  // namespace smoothkern
