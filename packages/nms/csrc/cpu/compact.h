// Compaction of structure-of-arrays candidate columns, shared by the CPU NMS kernels: once
// dead candidates are the majority of a range, later passes go faster without them.
#pragma once

#include <cstdint>

namespace detops::nms::cpu {

// Moves the live entries (dead[j] == 0) of [begin, end), in `dead` and in every column, to
// the front of that range in their order, and returns the range's new end.
template <typename Mark, typename... Column>
int64_t compact_live(Mark* dead, int64_t begin, int64_t end, Column*... columns) {
  int64_t w = begin;
  for (int64_t j = begin; j < end; ++j) {
    if (dead[j]) continue;
    ((columns[w] = columns[j]), ...);
    dead[w] = 0;
    ++w;
  }
  return w;
}

}  // namespace detops::nms::cpu
