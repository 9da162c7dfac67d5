// What the test toolkit (detops_core.testing.emulation) reads and sets in a `_C_emulated`
// library with ctypes: the per-kernel launch counts, for the `nox -s cuda` report, the
// order blocks run in and how many run at once.
#include <detops/cuda_emulation.h>

#include <cstdint>
#include <map>
#include <sstream>
#include <string>

namespace {

// "name\tvalue\n" per kernel, kept until the next call from this thread.
const char* table(const std::map<std::string, int64_t>& values) {
  static thread_local std::string text;
  std::ostringstream out;
  for (const auto& [name, value] : values) out << name << '\t' << value << '\n';
  text = out.str();
  return text.c_str();
}

}  // namespace

extern "C" __attribute__((visibility("default"))) const char* detops_emulated_launches() {
  detops::cuda::emulation::Record& r = detops::cuda::emulation::record();
  std::lock_guard<std::mutex> lock(r.mutex);
  return table(r.launches);
}

extern "C" __attribute__((visibility("default"))) const char* detops_emulated_widest() {
  detops::cuda::emulation::Record& r = detops::cuda::emulation::record();
  std::lock_guard<std::mutex> lock(r.mutex);
  return table(r.widest);
}

extern "C" __attribute__((visibility("default"))) void detops_emulated_block_schedule(
    uint64_t seed) {
  detops::cuda::emulation::block_schedule.store(seed);
}

extern "C" __attribute__((visibility("default"))) void detops_emulated_blocks_at_once(
    unsigned int blocks) {
  detops::cuda::emulation::blocks_at_once.store(blocks);
}
