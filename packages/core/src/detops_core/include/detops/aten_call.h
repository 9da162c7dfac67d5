// Calls into ATen operators that the stable ABI does not wrap, through the dispatcher's
// boxed entry point. Used for device-side sorting and compaction where writing our own
// would only duplicate what torch already does well.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/stableivalue_conversions.h>
#include <torch/csrc/stable/tensor.h>

#include <array>
#include <optional>
#include <utility>

namespace detops {

using torch::stable::Tensor;

// torch.sort(self, stable=True, dim=dim, descending=descending): (values, indices).
inline std::pair<Tensor, Tensor> sort_stable(const Tensor& self, int64_t dim, bool descending) {
  using torch::stable::detail::from;
  using torch::stable::detail::to;
  std::array<StableIValue, 4> stack{from(self), from(std::optional<bool>(true)), from(dim),
                                    from(descending)};
  STABLE_TORCH_ERROR_CODE_CHECK(
      torch_call_dispatcher("aten::sort", "stable", stack.data(), TORCH_ABI_VERSION));
  return {to<Tensor>(stack[0]), to<Tensor>(stack[1])};
}

// Indices of the nonzero elements of a 1-D tensor, ascending, as an int64 tensor [K].
inline Tensor nonzero_1d(const Tensor& self) {
  using torch::stable::detail::from;
  using torch::stable::detail::to;
  std::array<StableIValue, 1> stack{from(self)};
  STABLE_TORCH_ERROR_CODE_CHECK(
      torch_call_dispatcher("aten::nonzero", "", stack.data(), TORCH_ABI_VERSION));
  Tensor idx = to<Tensor>(stack[0]);
  return torch::stable::reshape(idx, {idx.size(0)});
}

}  // namespace detops
