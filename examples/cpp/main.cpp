// detops from C++ without Python: open the detops ops libraries, load an AOTInductor
// package made by torch._inductor.aoti_compile_and_package, run it on inputs saved by
// torch.save in Python, and print the outputs.
//
//   detops_aoti_run MODEL.pt2 INPUTS.pt [LIBRARY.so ...]
//
// The libraries (each package's lib<package>_ops.so, then its _C_cuda.so on a CUDA build of
// torch) come from the command line and from DETOPS_OPS_LIBRARIES (`:`-separated, as
// `python -m detops_core --libraries detops_roi detops_nms` prints it). Opening one runs its
// static initialisers, which register its ops under torch.ops.detops; the package's
// generated code then calls them through the dispatcher.
//
// Output, one line per output tensor (floats with 9 significant digits: they read back as
// the same float32):
//   output <i> <dtype> <d0>x<d1>... : <v0> <v1> ...
#include <ATen/ATen.h>
#include <dlfcn.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// The C struct every lib<package>_ops.so returns from <package>_ops_info()
// (detops/ops_library.h in detops-core); declared here so the example needs no detops headers.
struct DetopsOpsInfo {
  const char* package;
  int built_with_cuda;
  const char* torch_headers;
  unsigned long long torch_target_version;
};

void open_library(const std::string& path) {
  // RTLD_NOW: a missing symbol fails here, naming it, rather than in the middle of a run.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    throw std::runtime_error("cannot load " + path + ": " + dlerror());
  }
  std::smatch m;
  const std::regex ops_name(R"(lib(\w+)_ops\.so$)");
  if (std::regex_search(path, m, ops_name)) {
    using InfoFn = const DetopsOpsInfo* (*)();
    auto info = reinterpret_cast<InfoFn>(dlsym(handle, (m[1].str() + "_ops_info").c_str()));
    if (info != nullptr) {
      std::printf("loaded %s (%s, torch headers %s)\n", path.c_str(), info()->package,
                  info()->torch_headers);
      return;
    }
  }
  std::printf("loaded %s\n", path.c_str());
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(sep, start);
    if (end == std::string::npos) end = text.size();
    if (end > start) parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

// The tensors of a torch.save'd tensor, or tuple / list of tensors.
std::vector<at::Tensor> load_inputs(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot read " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  c10::IValue value = torch::jit::pickle_load(bytes);
  std::vector<at::Tensor> tensors;
  if (value.isTensor()) {
    tensors.push_back(value.toTensor());
  } else if (value.isTuple()) {
    for (const c10::IValue& v : value.toTupleRef().elements()) tensors.push_back(v.toTensor());
  } else if (value.isList()) {
    for (const c10::IValue& v : value.toListRef()) tensors.push_back(v.toTensor());
  } else {
    throw std::runtime_error(path + " holds neither a tensor nor a tuple or list of tensors");
  }
  return tensors;
}

void print_output(size_t index, const at::Tensor& output) {
  at::Tensor t = output.detach().to(at::kCPU).contiguous();
  std::string shape;
  for (int64_t d = 0; d < t.dim(); ++d) shape += (d ? "x" : "") + std::to_string(t.size(d));
  std::printf("output %zu %s %s :", index, std::string(c10::toString(t.scalar_type())).c_str(),
              t.dim() ? shape.c_str() : "scalar");
  at::Tensor flat = t.reshape(-1);
  if (at::isFloatingType(t.scalar_type())) {
    at::Tensor values = flat.to(at::kDouble);
    const double* v = values.const_data_ptr<double>();
    for (int64_t i = 0; i < values.numel(); ++i) std::printf(" %.9g", v[i]);
  } else {
    at::Tensor values = flat.to(at::kLong);
    const int64_t* v = values.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < values.numel(); ++i) std::printf(" %lld", static_cast<long long>(v[i]));
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s MODEL.pt2 INPUTS.pt [LIBRARY.so ...]\n"
                 "  (or the libraries in DETOPS_OPS_LIBRARIES, ':'-separated)\n",
                 argv[0]);
    return 2;
  }
  try {
    std::vector<std::string> libraries;
    if (const char* env = std::getenv("DETOPS_OPS_LIBRARIES")) libraries = split(env, ':');
    for (int i = 3; i < argc; ++i) libraries.emplace_back(argv[i]);
    if (libraries.empty()) {
      std::fprintf(stderr, "no detops libraries given: a package calling detops ops cannot run\n");
      return 2;
    }
    for (const std::string& lib : libraries) open_library(lib);

    std::vector<at::Tensor> inputs = load_inputs(argv[2]);
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    std::vector<at::Tensor> outputs = loader.run(inputs);
    std::printf("ran %s on %zu input(s): %zu output(s)\n", argv[1], inputs.size(), outputs.size());
    for (size_t i = 0; i < outputs.size(); ++i) print_output(i, outputs[i]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
