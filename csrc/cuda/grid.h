// Launch-grid arithmetic of the CUDA kernels, as plain host C++ (no CUDA headers), so the tests
// compile and check it at the limits without a GPU (tests/test_kernels_grid.py).
#pragma once

#include <algorithm>
#include <cstdint>

namespace smoothkern {

// CUDA's limit on grid.y (and z); grid.x goes to 2**31 - 1.
constexpr int64_t kMaxGridY = 65535;
// Resident threads per SM on A100/H100 (2048): one full wave is enough to hide load latency in
// a streaming kernel; splitting the rows further only adds partial results to write and merge.
constexpr int64_t kTargetThreadsPerSm = 2048;
// Each row slice keeps at least this many rows, so its partial moments stay cheap to merge.
constexpr int64_t kMinRowsPerSlice = 8;

struct RowSlices {
  int64_t slices;          // grid.y: row slices actually used (<= kMaxGridY)
  int64_t rows_per_slice;  // rows of every slice but the last
};

// How accumulate cuts chunk[k, N] along its rows: none when the element threads alone
// (`threads_x`, one per pack of elements) already fill the GPU (`sms` SMs); else enough slices to
// fill it, each of at least kMinRowsPerSlice rows, at most kMaxGridY of them.
inline RowSlices accumulate_row_slices(int64_t k, int64_t threads_x, int64_t sms) {
  const int64_t want = std::max<int64_t>(1, sms) * kTargetThreadsPerSm;
  if (k <= 0 || threads_x >= want) return {1, std::max<int64_t>(k, 1)};
  const int64_t fill = (want + threads_x - 1) / threads_x;
  const int64_t slices = std::clamp<int64_t>(
      fill, 1, std::min<int64_t>(kMaxGridY, std::max<int64_t>(1, k / kMinRowsPerSlice)));
  const int64_t rows_per_slice = (k + slices - 1) / slices;
  return {(k + rows_per_slice - 1) / rows_per_slice, rows_per_slice};
}

// perturb: grid.y strides over the count * B rows, at most kMaxGridY programs along it.
inline int64_t perturb_grid_y(int64_t rows) { return std::clamp<int64_t>(rows, 1, kMaxGridY); }

}  // namespace smoothkern
