// Large fresh CPU outputs: ask Linux for transparent huge pages before the first touch.
//
// A kernel that writes a new 100+ MB output (RoI pooling, the input gradient of a pooling
// op) otherwise takes one page fault per 4 KiB, which on virtual machines costs more than
// the arithmetic, and faults from several threads contend. With THP in "madvise" mode,
// madvise(MADV_HUGEPAGE) on the untouched buffer makes the faults 2 MiB each. This is the
// same advice torch gives with THP_MEM_ALLOC_ENABLE=1. Best effort: where madvise or THP
// is unavailable nothing changes.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace detops {

// Call on a tensor just allocated and not yet written. Only whole 2 MiB pages inside the
// buffer are advised; buffers under 4 MiB are left alone.
inline void advise_huge_pages(const torch::stable::Tensor& fresh) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!fresh.is_cpu()) return;
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const size_t bytes = static_cast<size_t>(fresh.numel()) * fresh.element_size();
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(fresh.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + bytes) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)fresh;
#endif
}

}  // namespace detops
