// Argument validation at the op boundary. Every failure names the op, the argument and
// what was expected, and surfaces in Python as a RuntimeError.
#pragma once

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace detops {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Long: return "int64";
    case ScalarType::Int: return "int32";
    case ScalarType::Short: return "int16";
    case ScalarType::Char: return "int8";
    case ScalarType::Byte: return "uint8";
    case ScalarType::Bool: return "bool";
    default: return "an unsupported dtype";
  }
}

inline bool is_floating(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half ||
         t == ScalarType::BFloat16;
}

inline std::string shape_str(const Tensor& t) {
  std::ostringstream ss;
  ss << '[';
  for (int64_t d = 0; d < t.dim(); ++d) ss << (d ? ", " : "") << t.size(d);
  ss << ']';
  return ss.str();
}

inline std::string device_str(const Tensor& t) {
  std::ostringstream ss;
  ss << (t.is_cuda() ? "cuda:" : (t.is_cpu() ? "cpu" : "device:"));
  if (!t.is_cpu()) ss << static_cast<int>(t.get_device_index());
  return ss.str();
}

// Size arithmetic on user-given int64 values (output sizes, paddings, dilations): false
// when the exact result does not fit in int64, so a check can report the real arguments
// instead of wrapped numbers (signed overflow is undefined behaviour).
inline bool mul_fits(int64_t a, int64_t b, int64_t& out) {
  return !__builtin_mul_overflow(a, b, &out);
}
inline bool add_fits(int64_t a, int64_t b, int64_t& out) {
  return !__builtin_add_overflow(a, b, &out);
}

template <typename... Parts>
[[noreturn]] void fail(const char* op, const Parts&... parts) {
  std::ostringstream ss;
  ss << op << ": ";
  (ss << ... << parts);
  throw std::runtime_error(ss.str());
}

template <typename... Parts>
inline void check(bool ok, const char* op, const Parts&... parts) {
  if (!ok) fail(op, parts...);
}

// Ends the message of a check that torchvision makes with torch._assert (the shape of RoI
// boxes): the Python wrappers (detops_core.errors.raises_assertions, which holds the same
// text) re-raise such an error as an AssertionRuntimeError, an AssertionError as
// torchvision's is and still a RuntimeError as every detops argument error is.
inline constexpr const char kAssertionTag[] = " [assertion]";

template <typename... Parts>
inline void check_assertion(bool ok, const char* op, const Parts&... parts) {
  if (!ok) fail(op, parts..., kAssertionTag);
}

inline void check_defined(const char* op, const char* name, const Tensor& t) {
  check(t.defined(), op, name, " must be a tensor, got an undefined tensor");
}

inline void check_floating(const char* op, const char* name, const Tensor& t) {
  check(is_floating(t.scalar_type()), op, name,
        " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ",
        dtype_name(t.scalar_type()));
}

inline void check_same_dtype(const char* op, const char* name_a, const Tensor& a,
                             const char* name_b, const Tensor& b) {
  check(a.scalar_type() == b.scalar_type(), op, name_a, " and ", name_b,
        " must have the same dtype, got ", dtype_name(a.scalar_type()), " and ",
        dtype_name(b.scalar_type()));
}

inline bool same_device(const Tensor& a, const Tensor& b) {
  return a.is_cpu() == b.is_cpu() && a.is_cuda() == b.is_cuda() &&
         (a.is_cpu() || a.get_device_index() == b.get_device_index());
}

inline void check_same_device(const char* op, const char* name_a, const Tensor& a,
                              const char* name_b, const Tensor& b) {
  check(same_device(a, b), op, name_a, " and ", name_b, " must be on the same device, got ",
        device_str(a), " and ", device_str(b));
}

inline void check_dim(const char* op, const char* name, const Tensor& t, int64_t dim,
                      const char* expected_shape) {
  check(t.dim() == dim, op, name, " must be a ", dim, "-D tensor of shape ", expected_shape,
        ", got shape ", shape_str(t));
}

}  // namespace detops
