// The backend concept: what a device provides to a package's entry points.
//
// Every native op is an entry point, a static member function of `<Op>Entry<Backend>` in
// csrc/<topic>_entry.h, registered once per device by csrc/cpu/<op>_kernel.cpp and
// csrc/cuda/<op>_kernel.cu with that file's backend, `cpu::<Op>Backend` or
// `cuda::<Op>Backend`. The entry point does everything that does not depend on the device:
// argument checks, empty cases, allocation, dtype dispatch, and it constructs the device
// guard, `const typename Backend::Guard guard(tensor);`, before the first backend call. The
// backend holds only loops (CPU) or thread mapping and launches (CUDA); it never selects a
// device itself.
//
// Every backend provides
//   static constexpr detops::Device kDevice;          // which device its kernels run on
//   struct Guard { explicit Guard(const Tensor&); };   // RAII: makes the tensor's device
//                                                      // current (a no-op on the CPU)
// and gets both by deriving from detops::CpuBackend (here) or detops::CudaBackend
// (detops/cuda_launch.cuh). Anything else (per-op launchers such as forward / backward /
// run, samplers, and limits or capabilities as named `static constexpr` members such as
// kMaxBoxes, kMaxLevels, kColumnBytes) is package-specific: the entry header that calls it
// documents it, and a backend lacking it fails to compile there.
//
// Every entry class template starts with `static_assert(detops::is_backend<Backend>());`,
// which names the missing part when a backend does not satisfy the concept. (C++17
// detection idiom, not C++20 concepts: most targets build as C++17.)
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <type_traits>

namespace detops {

// The device a backend's kernels run on. A CUDA backend built against the CPU emulation
// (DETOPS_CUDA_EMULATION) is still kCuda: it behaves as it does on a GPU.
enum class Device {
  kCpu,
  kCuda,
};

// The CPU's guard: there is no device to select.
struct HostGuard {
  explicit HostGuard(const torch::stable::Tensor&) {}
};

// What every CPU backend derives from.
struct CpuBackend {
  static constexpr Device kDevice = Device::kCpu;
  using Guard = HostGuard;
};

// Whether the backend's kernels read tensor data on the host: true on the CPU, where the
// entry can check data-dependent arguments (indices, levels) for free; false on CUDA, where
// reading device data on the host would synchronise the stream.
template <typename Backend>
constexpr bool reads_data_on_host() {
  return Backend::kDevice == Device::kCpu;
}

namespace backend_detail {

template <typename B, typename = void>
struct has_device : std::false_type {};
template <typename B>
struct has_device<B, std::void_t<decltype(B::kDevice)>>
    : std::is_same<std::remove_cv_t<decltype(B::kDevice)>, Device> {};

template <typename B, typename = void>
struct has_guard : std::false_type {};
template <typename B>
struct has_guard<B, std::void_t<typename B::Guard>>
    : std::bool_constant<std::is_constructible_v<typename B::Guard, const torch::stable::Tensor&> &&
                         !std::is_convertible_v<const torch::stable::Tensor&, typename B::Guard> &&
                         !std::is_default_constructible_v<typename B::Guard>> {};

}  // namespace backend_detail

// True when Backend satisfies the concept above; fails to compile, naming what is missing,
// otherwise. Use as `static_assert(is_backend<Backend>());`.
template <typename Backend>
constexpr bool is_backend() {
  static_assert(backend_detail::has_device<Backend>::value,
                "detops backend: needs `static constexpr detops::Device kDevice` (derive from "
                "detops::CpuBackend or detops::CudaBackend)");
  static_assert(backend_detail::has_guard<Backend>::value,
                "detops backend: needs a `Guard` type constructed explicitly from a "
                "`const torch::stable::Tensor&` and only from it (derive from "
                "detops::CpuBackend or detops::CudaBackend)");
  return backend_detail::has_device<Backend>::value && backend_detail::has_guard<Backend>::value;
}

static_assert(is_backend<CpuBackend>());

}  // namespace detops
