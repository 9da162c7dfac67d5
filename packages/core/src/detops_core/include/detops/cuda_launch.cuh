// The one way detops launches CUDA kernels, and what a CUDA backend needs around it: its
// base (detops::CudaBackend, the backend concept of detops/backend.h with the CUDA device
// guard), the current stream, grid sizing and launch checks that turn a failed launch into
// a Python exception naming the op.
//
//   detops::cuda::launch<my_kernel<S, T>>(op, detops::cuda::over(n, stream), args...);
//
// Device selection: the entry point constructs `Backend::Guard` (detops::cuda::Guard)
// before its first backend call, so launches, allocations and stream queries below it run
// on the inputs' device. launch() itself never sets a device: a guard per launch would
// switch the device once per kernel and hide an entry that forgot its guard, and code that
// allocates scratch tensors between launches needs the device set anyway. The stream is
// the one the caller passes, from current_stream(tensor) or, below the guard,
// current_stream().
//
// Package code never writes `<<<...>>>`: the same sources then also build as C++ against the
// CPU emulation of the CUDA execution model (DETOPS_CUDA_EMULATION, detops/cuda_emulation.h),
// which runs every kernel in CI without a GPU and registers the entry points as
// `detops_emulated` ops for CPU tensors.
#pragma once

#ifdef DETOPS_CUDA_EMULATION
#include <detops/cuda_emulation.h>
#else
#include <cuda_runtime.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/macros.h>
#ifndef USE_CUDA
#error "detops: CUDA sources need USE_CUDA (detops_add_extension sets it for _C_cuda)"
#endif
#endif

#include <detops/backend.h>
#include <detops/checks.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cstdint>
#include <utility>

// Registers a package's CUDA entry points: `DETOPS_CUDA_LIBRARY_IMPL(m) { m.impl(...); }`.
#ifdef DETOPS_CUDA_EMULATION
#define DETOPS_CUDA_LIBRARY_IMPL(m) STABLE_TORCH_LIBRARY_IMPL(detops_emulated, CPU, m)
#else
#define DETOPS_CUDA_LIBRARY_IMPL(m) STABLE_TORCH_LIBRARY_IMPL(detops, CUDA, m)
#endif

namespace detops::cuda {

#ifdef DETOPS_CUDA_EMULATION
// Emulated kernels run on CPU tensors: there is no device to select and no stream.
struct DeviceGuard {
  explicit DeviceGuard(int) {}
};
inline cudaStream_t current_stream(const torch::stable::Tensor&) {
  return nullptr;
}
inline cudaStream_t current_stream() {
  return nullptr;
}
#else
using DeviceGuard = torch::stable::accelerator::DeviceGuard;

// The stable Stream::nativeHandle() exists only from torch 2.13. The C shim's CUDA getter
// is in every torch we support (2.11 on) but is exported by libtorch_cuda, not
// libtorch_cpu, which is why _C_cuda links libtorch_cuda (see detops_coreConfig.cmake).
inline cudaStream_t current_stream(torch::stable::accelerator::DeviceIndex device) {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device, &stream));
  return static_cast<cudaStream_t>(stream);
}

inline cudaStream_t current_stream(const torch::stable::Tensor& on) {
  return current_stream(on.get_device_index());
}

// For code below an entry point's guard that no longer holds a tensor.
inline cudaStream_t current_stream() {
  return current_stream(torch::stable::accelerator::getCurrentDeviceIndex());
}
#endif

// The CUDA backends' guard: the tensor's device is current while it lives.
class Guard {
 public:
  explicit Guard(const torch::stable::Tensor& on) : device_(on.get_device_index()) {}

 private:
  DeviceGuard device_;
};

// Blocks for a grid-stride loop over `n` items: enough to fill the device, never zero.
inline unsigned int grid_for(int64_t n, int threads_per_block, int64_t max_blocks = 65535) {
  int64_t blocks = (n + threads_per_block - 1) / threads_per_block;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(blocks, max_blocks)));
}

inline void check_launch(const char* op) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail(op, "CUDA launch failed: ", cudaGetErrorString(err));
}

// Where and how a kernel runs. `file` is the caller's source file (a default argument is
// evaluated at the call site): the emulation reports launches per "<file> <kernel>".
struct Shape {
  dim3 blocks, threads;
  cudaStream_t stream;
  const char* file;
  Shape(dim3 b, dim3 t, cudaStream_t s, const char* f = __builtin_FILE())
      : blocks(b), threads(t), stream(s), file(f) {}
};

// A grid-stride launch over `n` items (see DETOPS_CUDA_LOOP).
inline Shape over(int64_t n, cudaStream_t stream, int threads = 256,
                  const char* file = __builtin_FILE()) {
  return Shape(grid_for(n, threads), static_cast<unsigned int>(threads), stream, file);
}

// Launches Kernel with `args` (converted to its parameter types) and raises, naming `op`,
// when the launch fails.
template <auto Kernel, typename... Args>
void launch(const char* op, const Shape& shape, Args&&... args) {
#ifdef DETOPS_CUDA_EMULATION
  // A kernel in a header several files include takes the flag of whichever file's copy of
  // this function the linker keeps: such kernels declare no `__shared__` (the emulation
  // aborts if one is reached while blocks run at once).
#ifdef DETOPS_EMULATION_SHARED_MEMORY
  constexpr bool shared_memory = true;
#else
  constexpr bool shared_memory = false;
#endif
  emulation::launch_emulated<Kernel>(Kernel, shape.file, shared_memory, shape.blocks, shape.threads,
                                     std::forward<Args>(args)...);
#else
  // clang-format splits the launch chevrons in a .cuh.
  // clang-format off
  Kernel<<<shape.blocks, shape.threads, 0, shape.stream>>>(std::forward<Args>(args)...);
  // clang-format on
#endif
  check_launch(op);
}

}  // namespace detops::cuda

namespace detops {

// What every CUDA backend derives from (detops/backend.h).
struct CudaBackend {
  static constexpr Device kDevice = Device::kCuda;
  using Guard = cuda::Guard;
};

static_assert(is_backend<CudaBackend>());

}  // namespace detops

// Grid-stride loop: every index in [0, n) visited once whatever the grid size.
#define DETOPS_CUDA_LOOP(i, n)                                                           \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
