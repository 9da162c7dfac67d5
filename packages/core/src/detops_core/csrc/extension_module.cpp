// The `_C` extension module. Importing it registers the op schemas and CPU kernels (static
// initialisers in the other translation units); `build_info()` says how it was built.
#include <pybind11/pybind11.h>
#include <torch/headeronly/version.h>

PYBIND11_MODULE(_C, m) {
  m.doc() = DETOPS_PACKAGE_NAME " native ops (registered under torch.ops.detops)";
  m.def("build_info", [] {
    pybind11::dict info;
    info["package"] = DETOPS_PACKAGE_NAME;
    info["built_with_cuda"] = static_cast<bool>(DETOPS_BUILT_WITH_CUDA);
    info["torch_headers"] = TORCH_VERSION;
    info["torch_target_version"] = static_cast<unsigned long long>(TORCH_TARGET_VERSION);
    return info;
  });
}
