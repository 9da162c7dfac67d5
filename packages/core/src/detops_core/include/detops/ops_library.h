// The plain shared library a detops package's ops live in, `lib<package>_ops.so`: op
// schemas and CPU kernels, linked against libtorch_cpu only, no Python. Loading it (dlopen,
// torch.ops.load_library, or as a dependency of the pybind11 `_C`) registers the ops under
// torch.ops.detops. It exports one C function, `<package>_ops_info`, saying how it was built.
#pragma once

extern "C" {

struct DetopsOpsInfo {
  const char* package;                      // "detops_nms", ...
  int built_with_cuda;                      // 1 when the package's `_C_cuda.so` was built
  const char* torch_headers;                // torch version of the headers compiled against
  unsigned long long torch_target_version;  // TORCH_TARGET_VERSION (oldest torch it loads on)
};

}  // extern "C"
