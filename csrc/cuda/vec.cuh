// 16-byte packs for vector loads and stores on the GPU.
#pragma once

#include <cstdint>

namespace smoothkern {

constexpr int kVectorBytes = 16;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements per 16-byte pack of T (4 floats, 8 halves, 2 doubles).
template <typename T>
constexpr int pack_size() {
  return kVectorBytes / static_cast<int>(sizeof(T));
}

inline bool is_aligned(const void* ptr, int bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

}  // namespace smoothkern
