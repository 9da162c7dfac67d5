// What the test toolkit (detops_core.testing.emulation) reads and sets in a `_C_emulated`
// library with ctypes: the per-kernel launch counts, for the `nox -s cuda` report, and the
// order blocks run in.
#include <detops/cuda_emulation.h>

#include <cstdint>
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

extern "C" __attribute__((visibility("default"))) void detops_emulated_block_schedule(
    uint64_t seed) {
  detops::cuda::emulation::block_schedule.store(seed);
}
