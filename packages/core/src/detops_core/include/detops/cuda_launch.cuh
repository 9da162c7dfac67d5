// CUDA launch helpers: the current stream of a tensor's device, grid sizing, and error
// checks that turn a failed launch into a Python exception naming the kernel.
#pragma once

#include <cuda_runtime.h>
#include <detops/checks.h>
#include <torch/csrc/stable/accelerator.h>

#include <algorithm>
#include <cstdint>

namespace detops::cuda {

inline cudaStream_t current_stream(const torch::stable::Tensor& on) {
  auto stream = torch::stable::accelerator::getCurrentStream(on.get_device_index());
  return static_cast<cudaStream_t>(stream.nativeHandle());
}

// Blocks for a grid-stride loop over `n` items: enough to fill the device, never zero.
inline unsigned int grid_for(int64_t n, int threads_per_block, int64_t max_blocks = 65535) {
  int64_t blocks = (n + threads_per_block - 1) / threads_per_block;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(blocks, max_blocks)));
}

inline void check_launch(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail(kernel, "CUDA launch failed: ", cudaGetErrorString(err));
}

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(what, "CUDA error: ", cudaGetErrorString(err));
}

}  // namespace detops::cuda

// Grid-stride loop: every index in [0, n) visited once whatever the grid size.
#define DETOPS_CUDA_LOOP(i, n)                                                           \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
