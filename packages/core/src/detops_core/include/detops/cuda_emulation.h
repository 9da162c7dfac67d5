// CPU emulation of the CUDA execution model, so the real `.cu` sources of every package run
// in CI on machines without a GPU (the `nox -s cuda` session), under AddressSanitizer,
// UndefinedBehaviorSanitizer and, for kernels with barriers, ThreadSanitizer.
//
// Included instead of <cuda_runtime.h> when a `.cu` file is compiled as C++ with
// DETOPS_CUDA_EMULATION defined (detops_add_extension's `_C_emulated` target). It defines the
// CUDA keywords, the built-in index variables, __syncthreads, atomics and the few runtime
// calls the packages use, and launch_emulated(), which detops::cuda::launch calls instead of
// `<<<...>>>`:
// - every block runs on blockDim OS threads, one per CUDA thread, so barriers and shared
//   memory behave as on a GPU and ThreadSanitizer sees real concurrency; the threads are
//   kept from launch to launch (starting them per launch cost more than the kernels);
// - the blocks run in grid order, or in a seeded shuffled one, and one at a time or several
//   at once (block_schedule, blocks_at_once);
// - `__shared__` variables are function statics: one copy, reused block after block, which
//   is what a block sees on a GPU as long as no two blocks run at the same time. So a file
//   that declares `__shared__` (its emulated unit is compiled with
//   DETOPS_EMULATION_SHARED_MEMORY, see detops_emulation.cmake) always runs its blocks one
//   at a time, and a `__shared__` declaration reached while blocks run at once aborts;
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

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
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
#define DETOPS_EMULATION_CAT2(a, b) a##b
#define DETOPS_EMULATION_CAT(a, b) DETOPS_EMULATION_CAT2(a, b)
#define __shared__                                                                               \
  ::detops::cuda::emulation::SharedMemoryGuard DETOPS_EMULATION_CAT(detops_shared_memory_guard_, \
                                                                    __COUNTER__);                \
  static
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
// that have not yet returned from the kernel. Arrivals and departures are one atomic word
// (threads expected << 32 | arrived) and waiters sleep on a 32-bit generation counter
// (a futex): a mutex and condition variable woke every waiter to fight over the mutex at
// each barrier, which cost more system time than the kernels' work. The acquire/release
// pairs order every write before a barrier before every read after it, which is what
// ThreadSanitizer checks.
class BlockBarrier {
 public:
  // Only while no thread is at the barrier.
  void reset(unsigned int threads) {
    state_.store(uint64_t(threads) << 32, std::memory_order_release);
  }

  // `on_release` runs in the last thread to arrive, before any waiter goes on.
  void arrive_and_wait(const std::function<void()>& on_release = {}) {
    const uint32_t generation = generation_.load(std::memory_order_acquire);
    const uint64_t s = state_.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (arrived(s) == expected(s)) {
      if (on_release) on_release();
      release(s);
      return;
    }
    for (uint32_t g = generation; g == generation;
         g = generation_.load(std::memory_order_acquire)) {
      generation_.wait(g, std::memory_order_acquire);
    }
  }

  void leave() {
    const uint64_t s =
        state_.fetch_sub(uint64_t(1) << 32, std::memory_order_acq_rel) - (uint64_t(1) << 32);
    if (arrived(s) > 0 && arrived(s) == expected(s)) release(s);
  }

 private:
  static uint32_t arrived(uint64_t s) { return static_cast<uint32_t>(s); }
  static uint32_t expected(uint64_t s) { return static_cast<uint32_t>(s >> 32); }

  // Every thread still in the kernel has arrived, so nobody else changes state_ meanwhile.
  void release(uint64_t s) {
    state_.store(s & ~uint64_t(0xffffffff), std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    generation_.notify_all();
  }

  std::atomic<uint64_t> state_{0};
  std::atomic<uint32_t> generation_{0};
};

inline thread_local BlockBarrier* current_block = nullptr;
// How many blocks of the running launch run at the same time (1: one at a time).
inline thread_local unsigned int blocks_running = 1;

// Declared by every `__shared__` (see the macro above): one copy of a function static is
// not per block, so a kernel that reaches one while blocks run at once would share it
// between blocks, unlike a GPU.
struct SharedMemoryGuard {
  SharedMemoryGuard() {
    if (blocks_running > 1) {
      std::fprintf(stderr,
                   "detops CUDA emulation: a __shared__ variable was declared while %u blocks ran "
                   "at once; its file must be compiled with DETOPS_EMULATION_SHARED_MEMORY\n",
                   blocks_running);
      std::abort();
    }
  }
};
inline thread_local cudaError_t last_error = cudaSuccess;

struct Record {
  std::mutex mutex;
  std::map<std::string, int64_t> launches;
  std::map<std::string, int64_t> widest;  // the most blocks a launch ran at the same time
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

// The OS threads that run the emulated CUDA threads, started on demand and kept for later
// launches; one launch at a time. Thread i runs `job(i)` for i < threads, then waits again.
class Workers {
 public:
  void run(unsigned int threads, const std::function<void(unsigned int)>& job) {
    std::lock_guard<std::mutex> one_launch(launch_);
    std::unique_lock<std::mutex> lock(mutex_);
    for (; started_ < threads; ++started_) std::thread(&Workers::loop, this, started_).detach();
    job_ = &job;
    active_ = running_ = threads;
    ++generation_;
    start_.notify_all();
    finished_.wait(lock, [&] { return running_ == 0; });
    active_ = 0;
    job_ = nullptr;
  }

 private:
  void loop(unsigned int index) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return generation_ != seen && index < active_; });
      seen = generation_;
      const std::function<void(unsigned int)>* job = job_;
      lock.unlock();
      (*job)(index);
      lock.lock();
      if (--running_ == 0) finished_.notify_one();
    }
  }

  std::mutex launch_, mutex_;
  std::condition_variable start_, finished_;
  const std::function<void(unsigned int)>* job_ = nullptr;
  unsigned int started_ = 0, active_ = 0, running_ = 0;
  uint64_t generation_ = 0;
};

// This process's workers. Never destroyed: detached threads wait on it until the process
// ends. A forked child has none of its parent's threads, so it starts its own.
inline Workers& workers() {
  static std::mutex mutex;
  static Workers* current = nullptr;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(mutex);
  if (current == nullptr || owner != getpid()) {
    current = new Workers;
    owner = getpid();
  }
  return *current;
}

// The order the blocks of a launch run in: 0 (the default) for x fastest, then y, then z;
// any other value seeds a shuffled order, the same for the same seed and grid, so a result
// that depends on the order of the blocks (atomics adding floats) shows, and reproduces.
inline std::atomic<uint64_t> block_schedule{0};

// Block `i` of the launch's order.
class BlockOrder {
 public:
  explicit BlockOrder(dim3 grid) : grid_(grid) {
    const uint64_t seed = block_schedule.load();
    if (seed == 0) return;
    shuffled_.resize(size());
    for (uint64_t i = 0; i < shuffled_.size(); ++i) shuffled_[i] = i;
    std::mt19937_64 random(seed ^ (size() * 0x9E3779B97F4A7C15ull));
    std::shuffle(shuffled_.begin(), shuffled_.end(), random);
  }
  uint64_t size() const { return uint64_t(grid_.x) * grid_.y * grid_.z; }
  uint3 operator[](uint64_t i) const {
    const uint64_t b = shuffled_.empty() ? i : shuffled_[i];
    return {static_cast<unsigned int>(b % grid_.x),
            static_cast<unsigned int>(b / grid_.x % grid_.y),
            static_cast<unsigned int>(b / (uint64_t(grid_.x) * grid_.y))};
  }

 private:
  dim3 grid_;
  std::vector<uint64_t> shuffled_;
};

// How many blocks of a launch run at the same time (at most; 1 is the default) in files that
// declare no `__shared__`; the test toolkit's block_schedule(package, seed, at_once) sets it
// through detops_emulated_blocks_at_once.
inline std::atomic<unsigned int> blocks_at_once{1};

// One slot of blocks running at the same time: its threads run blocks slot, slot + slots,
// ... of the launch's order, one after the other.
struct BlockSlot {
  BlockBarrier sync, done;
  std::function<void()> rearm;
};

// Runs kernel(params...) on grid x block emulated threads; see the file comment.
// Returns how many blocks ran at the same time.
template <typename... Params>
unsigned int run(dim3 grid, dim3 block, bool shared_memory, void (*kernel)(Params...),
                 std::tuple<Params...> params) {
  const unsigned int threads = block.x * block.y * block.z;
  const BlockOrder order(grid);
  const unsigned int slots = shared_memory
                                 ? 1u
                                 : static_cast<unsigned int>(std::min<uint64_t>(
                                       std::max(1u, blocks_at_once.load()), order.size()));
  std::unique_ptr<BlockSlot[]> slot(new BlockSlot[slots]);
  for (unsigned int s = 0; s < slots; ++s) {
    BlockSlot& b = slot[s];
    b.done.reset(threads);
    b.sync.reset(threads);
    // Every thread has left a block, and its barrier is re-armed, before any enters the next.
    b.rearm = [&b, threads] { b.sync.reset(threads); };
  }
  workers().run(threads * slots, [&](unsigned int w) {
    const unsigned int t = w % threads;
    BlockSlot& b = slot[w / threads];
    threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    blockDim = block;
    gridDim = grid;
    current_block = &b.sync;
    blocks_running = slots;
    for (uint64_t i = w / threads; i < order.size(); i += slots) {
      blockIdx = order[i];
      std::apply(kernel, params);
      b.sync.leave();
      b.done.arrive_and_wait(b.rearm);
    }
    current_block = nullptr;
    blocks_running = 1;
  });
  return slots;
}

// `shared_memory`: the kernel's file declares `__shared__` (its blocks run one at a time).
template <auto Kernel, typename... Params, typename... Args>
void launch_emulated(void (*)(Params...), const char* file, bool shared_memory, dim3 grid,
                     dim3 block, Args&&... args) {
  const std::string name = kernel_name(file, __PRETTY_FUNCTION__);
  {
    Record& r = record();
    std::lock_guard<std::mutex> lock(r.mutex);
    ++r.launches[name];
  }
  if (!valid_config(grid, block)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  // Arguments are converted to the kernel's parameter types and copied, as a launch does.
  const unsigned int slots =
      run(grid, block, shared_memory, Kernel, std::tuple<Params...>(std::forward<Args>(args)...));
  Record& r = record();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.widest[name] = std::max<int64_t>(r.widest[name], slots);
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

inline int atomicMax(int* address, int value) {
  std::atomic_ref<int> a(*address);
  int old = a.load();
  while (old < value && !a.compare_exchange_weak(old, value)) {
  }
  return old;
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
