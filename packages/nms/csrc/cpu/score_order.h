// Orderings that NMS needs on the CPU, computed with stable radix sorts.
#pragma once

#include <cstdint>
#include <vector>

namespace detops::nms::cpu {

// Positions 0..n-1 in the order torch.sort(scores, stable=True, descending=True) gives:
// decreasing score, NaN first (torch ranks NaN above everything), ties by position.
std::vector<int64_t> order_by_score(const float* scores, int64_t n);
std::vector<int64_t> order_by_score(const double* scores, int64_t n);

// Stable reorder of `order` by ascending class_of[order[i]]: each class becomes one
// contiguous run that keeps the order it had inside `order`.
void group_by_class(const int64_t* class_of, std::vector<int64_t>& order);

}  // namespace detops::nms::cpu
