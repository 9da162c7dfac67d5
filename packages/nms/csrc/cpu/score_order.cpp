#include "cpu/score_order.h"

#include <array>
#include <cmath>
#include <cstring>

namespace detops::nms::cpu {
namespace {

// LSD radix sort of (key, value) pairs by key, 8 bits a pass; stable, so values with equal
// keys keep their input order. Passes whose digit is the same for every key are skipped.
template <typename Key>
void radix_sort(std::vector<Key>& keys, std::vector<int64_t>& values) {
  const size_t n = keys.size();
  std::vector<Key> keys_tmp(n);
  std::vector<int64_t> values_tmp(n);
  for (unsigned shift = 0; shift < 8 * sizeof(Key); shift += 8) {
    std::array<size_t, 257> start{};
    for (size_t i = 0; i < n; ++i) ++start[((keys[i] >> shift) & 0xFF) + 1];
    bool trivial = false;
    for (size_t d = 1; d <= 256; ++d) trivial |= (start[d] == n);
    if (trivial) continue;
    for (size_t d = 1; d <= 256; ++d) start[d] += start[d - 1];
    for (size_t i = 0; i < n; ++i) {
      const size_t dst = start[(keys[i] >> shift) & 0xFF]++;
      keys_tmp[dst] = keys[i];
      values_tmp[dst] = values[i];
    }
    keys.swap(keys_tmp);
    values.swap(values_tmp);
  }
}

template <typename Float, typename Bits>
Bits descending_key(Float score) {
  static_assert(sizeof(Float) == sizeof(Bits));
  if (std::isnan(score)) return 0;            // NaN first
  const Float normalised = score + Float(0);  // -0 and +0 compare equal: give them one key
  Bits bits;
  std::memcpy(&bits, &normalised, sizeof(bits));
  constexpr Bits sign = Bits(1) << (8 * sizeof(Bits) - 1);
  const Bits ascending = (bits & sign) ? ~bits : (bits | sign);
  return ~ascending;  // never 0 for a non-NaN score
}

template <typename Float, typename Bits>
std::vector<int64_t> order_by_score_impl(const Float* scores, int64_t n) {
  std::vector<Bits> keys(n);
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) {
    keys[i] = descending_key<Float, Bits>(scores[i]);
    order[i] = i;
  }
  radix_sort(keys, order);
  return order;
}

}  // namespace

std::vector<int64_t> order_by_score(const float* scores, int64_t n) {
  return order_by_score_impl<float, uint32_t>(scores, n);
}

std::vector<int64_t> order_by_score(const double* scores, int64_t n) {
  return order_by_score_impl<double, uint64_t>(scores, n);
}

void group_by_class(const int64_t* class_of, std::vector<int64_t>& order) {
  std::vector<uint64_t> keys(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    keys[i] = static_cast<uint64_t>(class_of[order[i]]) ^ (uint64_t(1) << 63);
  }
  radix_sort(keys, order);
}

}  // namespace detops::nms::cpu
