// The per-kernel launch counts of a `_C_emulated` library, read by the test toolkit with
// ctypes (detops_core.testing.emulated_launches) for the `nox -s cuda` report.
#include <detops/cuda_emulation.h>

#include <sstream>
#include <string>

extern "C" __attribute__((visibility("default"))) const char* detops_emulated_launches() {
  static thread_local std::string text;
  detops::cuda::emulation::Record& r = detops::cuda::emulation::record();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::ostringstream out;
  for (const auto& [name, count] : r.launches) out << name << '\t' << count << '\n';
  text = out.str();
  return text.c_str();
}
