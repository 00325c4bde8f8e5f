// Operator schemas of the smoothkern library; the kernels live in cpu/ and cuda/.
//
// Seeds are uint64 in Python; schemas carry int64, so callers pass the seed reinterpreted as
// signed and kernels cast it back (static_cast<uint64_t>).
#include <Python.h>
#include <torch/library.h>

// `import smoothkern._C` loads this library (and runs the registrations below).
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(smoothkern, m) {
  // x[B, ...], sigma[S, B] or [S, B, N] float32 -> noisy[count*S*B, ...] in x.dtype, row
  // (i*S + s)*B + b; start + count <= 2**32. noise: the NoiseKind (0 gaussian, 1 uniform).
  // example_index: int64 [B], the examples' indices in the caller's data, used as counter
  // word 2 instead of b; each value is taken modulo 2**32 (not read on the host: no sync), and
  // keeping them in 0 .. 2**32 - 1 is the caller's part. sampling: the Sampling design
  // (0 iid, 1 antithetic, 2 stratified; csrc/sampling.h).
  m.def(
      "perturb(Tensor x, Tensor sigma, int seed, int start, int count, int noise, "
      "Tensor? example_index=None, int sampling=0) -> Tensor");
  // Welford/Chan update of the running statistics with chunk[k, N]; count = samples seen before.
  m.def(
      "accumulate_(Tensor(a!) mean, Tensor(b!) m2, Tensor(c!) abs_sum, Tensor(d!) log_sum, "
      "Tensor chunk, int count, float eps) -> ()");
  // The four Philox words (int64 holding uint32) for counters (element, sample, example, 0).
  m.def("philox_bits(int seed, Tensor example, Tensor sample, Tensor element) -> Tensor");
}
