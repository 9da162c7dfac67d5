// The `_C` extension module: a thin pybind11 layer over the package's ops library
// (`lib<package>_ops.so`, found next to it through the rpath $ORIGIN). Importing `_C` loads
// that library, whose static initialisers register the op schemas and CPU kernels;
// `build_info()` says how it was built.
#include <detops/ops_library.h>
#include <pybind11/pybind11.h>

extern "C" const DetopsOpsInfo* DETOPS_OPS_INFO_FN();

PYBIND11_MODULE(_C, m) {
  m.doc() = DETOPS_PACKAGE_NAME
      " native ops (registered under torch.ops.detops by " DETOPS_OPS_LIBRARY ")";
  m.def("build_info", [] {
    const DetopsOpsInfo* ops = DETOPS_OPS_INFO_FN();
    pybind11::dict info;
    info["package"] = ops->package;
    info["built_with_cuda"] = static_cast<bool>(ops->built_with_cuda);
    info["torch_headers"] = ops->torch_headers;
    info["torch_target_version"] = ops->torch_target_version;
    info["ops_library"] = DETOPS_OPS_LIBRARY;
    return info;
  });
}
