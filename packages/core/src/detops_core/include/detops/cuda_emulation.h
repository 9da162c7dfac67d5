// CPU emulation of the CUDA execution model, so the real `.cu` sources of every package run
// in CI on machines without a GPU (the `nox -s cuda` session), under AddressSanitizer,
// UndefinedBehaviorSanitizer and, for kernels with barriers, ThreadSanitizer.
//
// Included instead of <cuda_runtime.h> when a `.cu` file is compiled as C++ with
// DETOPS_CUDA_EMULATION defined (detops_add_extension's `_C_emulated` target). It defines the
// CUDA keywords, the built-in index variables, __syncthreads, atomics and the few runtime
// calls the packages use, and launch_emulated(), which detops::cuda::launch calls instead of
// `<<<...>>>`:
// - every block runs in turn on blockDim OS threads, one per CUDA thread, so barriers and
//   shared memory behave as on a GPU and ThreadSanitizer sees real concurrency;
// - `__shared__` variables are function statics: one copy, reused block after block, which
//   is what a block sees on a GPU (blocks never run at the same time here);
// - a thread that leaves the kernel no longer counts at later barriers of its block (as on
//   sm_70+); atomics are std::atomic_ref operations;
// - launch configurations a GPU rejects (an empty grid or block, grid.y or grid.z above
//   65535, more than 1024 threads per block) set cudaErrorInvalidConfiguration, which
//   check_launch turns into an exception, as on a GPU.
// Every launch is counted per kernel ("<file stem> <kernel>"), for the per-kernel report.
#pragma once

#ifndef DETOPS_CUDA_EMULATION
#error "detops/cuda_emulation.h is only for the CPU emulation build (DETOPS_CUDA_EMULATION)"
#endif

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __shared__ static
#define __launch_bounds__(...)

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidConfiguration = 9 };

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace detops::cuda::emulation {

// A block barrier that threads can leave: __syncthreads waits for the threads of the block
// that have not yet returned from the kernel.
class BlockBarrier {
 public:
  void reset(unsigned int threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    expected_ = threads;
    arrived_ = 0;
  }

  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == expected_) {
      release();
    } else {
      ready_.wait(lock, [&] { return generation_ != generation; });
    }
  }

  void leave() {
    std::lock_guard<std::mutex> lock(mutex_);
    --expected_;
    if (arrived_ > 0 && arrived_ == expected_) release();
  }

 private:
  void release() {
    arrived_ = 0;
    ++generation_;
    ready_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  unsigned int expected_ = 0, arrived_ = 0;
  uint64_t generation_ = 0;
};

inline thread_local BlockBarrier* current_block = nullptr;
inline thread_local cudaError_t last_error = cudaSuccess;

struct Record {
  std::mutex mutex;
  std::map<std::string, int64_t> launches;
};

inline Record& record() {
  static Record r;
  return r;
}

// "roi_align forward_kernel" from the caller's file and the kernel's pretty name.
inline std::string kernel_name(const char* file, const char* pretty) {
  std::string stem(file);
  stem = stem.substr(stem.find_last_of('/') + 1);
  stem = stem.substr(0, stem.find('.'));
  const std::string suffix = "_kernel";
  if (stem.size() > suffix.size() &&
      stem.compare(stem.size() - suffix.size(), suffix.size(), suffix) == 0) {
    stem.resize(stem.size() - suffix.size());
  }
  std::string k(pretty);
  const size_t at = k.find("Kernel = ");
  k = at == std::string::npos ? k : k.substr(at + 9);
  k = k.substr(0, k.find_first_of("<;]"));
  k = k.substr(k.rfind("::") == std::string::npos ? 0 : k.rfind("::") + 2);
  return stem + " " + k;
}

inline bool valid_config(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  return grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 0x7fffffffu && grid.y <= 65535 &&
         grid.z <= 65535 && threads >= 1 && threads <= 1024 && block.z <= 64;
}

// Runs kernel(params...) on grid x block emulated threads; see the file comment.
template <typename... Params>
void run(dim3 grid, dim3 block, void (*kernel)(Params...), std::tuple<Params...> params) {
  const unsigned int threads = block.x * block.y * block.z;
  BlockBarrier sync, done;
  done.reset(threads);
  sync.reset(threads);
  auto worker = [&](unsigned int t) {
    threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    blockDim = block;
    gridDim = grid;
    current_block = &sync;
    for (unsigned int z = 0; z < grid.z; ++z) {
      for (unsigned int y = 0; y < grid.y; ++y) {
        for (unsigned int x = 0; x < grid.x; ++x) {
          blockIdx = {x, y, z};
          std::apply(kernel, params);
          sync.leave();
          // Everyone has left the block before its barrier is re-armed for the next one.
          done.arrive_and_wait();
          if (t == 0) sync.reset(threads);
          done.arrive_and_wait();
        }
      }
    }
    current_block = nullptr;
  };
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
  for (std::thread& th : pool) th.join();
}

template <auto Kernel, typename... Params, typename... Args>
void launch_emulated(void (*)(Params...), const char* file, dim3 grid, dim3 block, Args&&... args) {
  {
    Record& r = record();
    std::lock_guard<std::mutex> lock(r.mutex);
    ++r.launches[kernel_name(file, __PRETTY_FUNCTION__)];
  }
  if (!valid_config(grid, block)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  // Arguments are converted to the kernel's parameter types and copied, as a launch does.
  run(grid, block, Kernel, std::tuple<Params...>(std::forward<Args>(args)...));
}

}  // namespace detops::cuda::emulation

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = detops::cuda::emulation::last_error;
  detops::cuda::emulation::last_error = cudaSuccess;
  return e;
}

inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "invalid configuration argument (emulated)";
}

inline void __syncthreads() {
  detops::cuda::emulation::current_block->arrive_and_wait();
}

template <typename T>
inline T atomicAdd(T* address, std::type_identity_t<T> value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}

template <typename T>
inline T atomicCAS(T* address, T expected, T desired) {
  std::atomic_ref<T>(*address).compare_exchange_strong(expected, desired);
  return expected;
}

inline int __ffsll(long long v) {
  return __builtin_ffsll(v);
}
inline int __popcll(unsigned long long v) {
  return __builtin_popcountll(v);
}

// CUDA's min/max are global overloads callable without std::.
template <typename A, typename B>
inline auto min(A a, B b) -> decltype(a + b) {
  return b < a ? b : a;
}
template <typename A, typename B>
inline auto max(A a, B b) -> decltype(a + b) {
  return a < b ? b : a;
}
