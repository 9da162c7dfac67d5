// dtype dispatch without macros: the body is a generic lambda that receives a tag whose
// `type` is the element type. Lambdas may contain commas and kernel launches freely.
#pragma once

#include <detops/checks.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

namespace detops {

template <typename T>
struct type_tag {
  using type = T;
};

// Element type used for arithmetic: narrow floats compute in float32.
template <typename T>
struct acc_type {
  using type = float;
};
template <>
struct acc_type<double> {
  using type = double;
};
template <typename T>
using acc_t = typename acc_type<T>::type;

template <typename F>
decltype(auto) dispatch_floating(ScalarType t, const char* op, const char* arg, F&& body) {
  switch (t) {
    case ScalarType::Float: return body(type_tag<float>{});
    case ScalarType::Double: return body(type_tag<double>{});
    case ScalarType::Half: return body(type_tag<torch::headeronly::Half>{});
    case ScalarType::BFloat16: return body(type_tag<torch::headeronly::BFloat16>{});
    default:
      fail(op, arg, " has unsupported dtype ", dtype_name(t),
           "; expected float32, float64, float16 or bfloat16");
  }
}

}  // namespace detops
