// Compiled into every `lib<package>_ops.so` next to the package's CPU sources: the exported
// `<package>_ops_info()` (name from DETOPS_OPS_INFO_FN), which the pybind11 `_C` calls for
// build_info() and a C++ program can look up with dlsym.
#include <detops/ops_library.h>
#include <torch/headeronly/version.h>

extern "C" __attribute__((visibility("default"))) const DetopsOpsInfo* DETOPS_OPS_INFO_FN() {
  static const DetopsOpsInfo info{DETOPS_PACKAGE_NAME, DETOPS_BUILT_WITH_CUDA, TORCH_VERSION,
                                  static_cast<unsigned long long>(TORCH_TARGET_VERSION)};
  return &info;
}
