// roi_align forward and backward on CPU over one or more feature maps ("levels"): every
// RoI is pooled from its own level. roi_align is the one-level case; multi_level_roi_align
// passes the FPN levels and each RoI's level.
#pragma once

#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/align_tables.h"
#include "cpu/roi_cpu.h"
#include "roi_geometry.h"

namespace detops::roi::cpu {

struct LevelShape {
  int64_t height, width;
  double scale;
};

struct AlignParams {
  int64_t pooled_h, pooled_w, sampling_ratio;
  bool aligned;
};

// Tables of every RoI (built in parallel), each on its own level's map.
template <typename T>
std::vector<AlignTables<T>> build_tables(const Rois<T>& rois, const std::vector<int64_t>& level,
                                         const std::vector<LevelShape>& levels,
                                         const AlignParams& p) {
  const int64_t k = rois.size();
  std::vector<AlignTables<T>> tables(static_cast<size_t>(k));
  const T offset = p.aligned ? T(0.5) : T(0);
  parallel(k, 64.0 * static_cast<double>(p.pooled_h + p.pooled_w), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (level[i] < 0) continue;  // no level: never read
      const LevelShape& lv = levels[static_cast<size_t>(level[i])];
      const T* r = &rois.box[4 * i];
      const AlignBox<T> box = align_box(r[0], r[1], r[2], r[3], static_cast<T>(lv.scale), offset,
                                        !p.aligned, p.pooled_h, p.pooled_w, p.sampling_ratio);
      tables[i].build(box, p.pooled_h, p.pooled_w, lv.height, lv.width);
    }
  });
  return tables;
}

// One RoI, one channel: out[ph * pooled_w + pw] for every bin. `buf` holds >= span values.
template <bool kUnitStride, typename S, typename T>
void align_plane(const AlignTables<T>& t, const S* plane, int64_t sy, int64_t sx, int64_t pooled_h,
                 int64_t pooled_w, T* buf, T* out) {
  const int64_t span = t.x.hi - t.x.lo;
  for (int64_t ph = 0; ph < pooled_h; ++ph) {
    std::fill(buf, buf + span, T(0));
    for (int64_t e = t.y.offset[ph]; e < t.y.offset[ph + 1]; ++e) {
      const T wy = t.y.weight[e];
      const S* row = plane + t.y.pos[e] * sy + t.x.lo * sx;
      if constexpr (kUnitStride) {
        for (int64_t j = 0; j < span; ++j) buf[j] += wy * static_cast<T>(row[j]);
      } else {
        for (int64_t j = 0; j < span; ++j) buf[j] += wy * static_cast<T>(row[j * sx]);
      }
    }
    for (int64_t pw = 0; pw < pooled_w; ++pw) {
      T acc = T(0);
      for (int64_t e = t.x.offset[pw]; e < t.x.offset[pw + 1]; ++e) {
        acc += t.x.weight[e] * buf[t.x.pos[e] - t.x.lo];
      }
      out[ph * pooled_w + pw] = acc / t.count;
    }
  }
}

// Adjoint of align_plane: grad_plane (row stride `width`) += the bins' gradient `g`
// (already divided by count). `buf` holds >= span values.
template <typename T>
void align_plane_backward(const AlignTables<T>& t, const T* g, int64_t pooled_h, int64_t pooled_w,
                          int64_t width, T* buf, T* grad_plane) {
  const int64_t span = t.x.hi - t.x.lo;
  for (int64_t ph = 0; ph < pooled_h; ++ph) {
    if (t.y.offset[ph] == t.y.offset[ph + 1]) continue;
    std::fill(buf, buf + span, T(0));
    for (int64_t pw = 0; pw < pooled_w; ++pw) {
      const T gv = g[ph * pooled_w + pw];
      for (int64_t e = t.x.offset[pw]; e < t.x.offset[pw + 1]; ++e) {
        buf[t.x.pos[e] - t.x.lo] += t.x.weight[e] * gv;
      }
    }
    for (int64_t e = t.y.offset[ph]; e < t.y.offset[ph + 1]; ++e) {
      const T wy = t.y.weight[e];
      T* row = grad_plane + t.y.pos[e] * width + t.x.lo;
      for (int64_t j = 0; j < span; ++j) row[j] += wy * buf[j];
    }
  }
}

// Forward over levels: output [K, C, pooled_h, pooled_w] in the inputs' dtype.
template <typename S>
Tensor align_forward(const char* op, const std::vector<Tensor>& inputs,
                     const std::vector<double>& scales, const Tensor& rois_in,
                     const std::vector<int64_t>* level_of, const AlignParams& p) {
  using T = acc_t<S>;
  const Tensor& first = inputs[0];
  const int64_t n = first.size(0), c = first.size(1);
  const Rois<T> rois = read_rois<S, T>(op, rois_in, n);
  const int64_t k = rois.size();
  std::vector<LevelShape> levels;
  std::vector<const S*> data;
  std::vector<Strides4> strides;
  int64_t max_width = 1;
  for (size_t l = 0; l < inputs.size(); ++l) {
    levels.push_back({inputs[l].size(2), inputs[l].size(3), scales[l]});
    data.push_back(inputs[l].const_data_ptr<S>());
    strides.emplace_back(inputs[l]);
    max_width = std::max(max_width, inputs[l].size(3));
  }
  const std::vector<int64_t> zeros(level_of == nullptr ? static_cast<size_t>(k) : 0, 0);
  const std::vector<int64_t>& level = level_of == nullptr ? zeros : *level_of;

  Tensor out = fresh_output(rois_in, {k, c, p.pooled_h, p.pooled_w}, first.scalar_type());
  if (k == 0 || c == 0) return out;
  const std::vector<AlignTables<T>> tables = build_tables(rois, level, levels, p);
  double work = 0;
  for (const auto& t : tables) work += t.work();
  S* out_data = out.mutable_data_ptr<S>();
  const int64_t bins = p.pooled_h * p.pooled_w;

  parallel(c * k, work / static_cast<double>(k), [&](int64_t begin, int64_t end) {
    std::vector<T> buf(static_cast<size_t>(max_width));
    std::vector<T> bin_out(static_cast<size_t>(bins));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t ch = i / k, r = i % k;
      S* dst = out_data + (r * c + ch) * bins;
      if (level[r] < 0) {
        std::fill(dst, dst + bins, S(0));
        continue;
      }
      const size_t l = static_cast<size_t>(level[r]);
      const Strides4& st = strides[l];
      const S* plane = data[l] + st.plane(rois.batch[r], ch);
      if (st.x == 1) {
        align_plane<true>(tables[r], plane, st.y, st.x, p.pooled_h, p.pooled_w, buf.data(),
                          bin_out.data());
      } else {
        align_plane<false>(tables[r], plane, st.y, st.x, p.pooled_h, p.pooled_w, buf.data(),
                           bin_out.data());
      }
      for (int64_t b = 0; b < bins; ++b) dst[b] = static_cast<S>(bin_out[b]);
    }
  });
  return out;
}

// Backward over levels: one [N, C, H_l, W_l] gradient per level, in grad's dtype. Thread
// work is split by gradient plane (channel, level, image); each plane's single writer adds
// its RoIs in index order, in float32 (or float64) whatever the storage type.
template <typename S>
std::vector<Tensor> align_backward(const char* op, const Tensor& grad, const Tensor& rois_in,
                                   const std::vector<int64_t>* level_of,
                                   const std::vector<LevelShape>& levels, int64_t n, int64_t c,
                                   const AlignParams& p) {
  using T = acc_t<S>;
  const Rois<T> rois = read_rois<S, T>(op, rois_in, n);
  const int64_t k = rois.size();
  const int64_t num_levels = static_cast<int64_t>(levels.size());
  std::vector<Tensor> grads;
  std::vector<S*> grad_data;
  int64_t max_plane = 1, max_width = 1;
  for (const LevelShape& lv : levels) {
    grads.push_back(fresh_output(grad, {n, c, lv.height, lv.width}));
    grad_data.push_back(grads.back().template mutable_data_ptr<S>());
    max_plane = std::max(max_plane, lv.height * lv.width);
    max_width = std::max(max_width, lv.width);
  }
  const std::vector<int64_t> zeros(level_of == nullptr ? static_cast<size_t>(k) : 0, 0);
  const std::vector<int64_t>& level = level_of == nullptr ? zeros : *level_of;
  const std::vector<AlignTables<T>> tables = build_tables(rois, level, levels, p);
  std::vector<int64_t> key(static_cast<size_t>(k));
  // RoIs without a level go to an extra group that no gradient plane visits.
  for (int64_t r = 0; r < k; ++r)
    key[r] = level[r] < 0 ? num_levels * n : level[r] * n + rois.batch[r];
  const auto groups = bucket(key, num_levels * n + 1);

  const S* g_data = grad.const_data_ptr<S>();
  const Strides4 gs(grad);
  const int64_t bins = p.pooled_h * p.pooled_w;
  const int64_t planes = c * num_levels * n;
  double work = static_cast<double>(max_plane);
  for (const auto& t : tables) work += t.work() / static_cast<double>(num_levels * n);

  parallel(planes, work, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(static_cast<size_t>(max_width));
    std::vector<T> g(static_cast<size_t>(bins));
    std::vector<T> scratch;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t ch = i / (num_levels * n);
      const int64_t l = (i / n) % num_levels;
      const int64_t b = i % n;
      const LevelShape& lv = levels[l];
      const int64_t area = lv.height * lv.width;
      accumulate_plane(grad_data[l] + (b * c + ch) * area, area, scratch, [&](T* acc) {
        for (int64_t r : groups[l * n + b]) {
          const AlignTables<T>& t = tables[r];
          const S* gr = g_data + r * gs.n + ch * gs.c;
          for (int64_t ph = 0; ph < p.pooled_h; ++ph) {
            for (int64_t pw = 0; pw < p.pooled_w; ++pw) {
              g[ph * p.pooled_w + pw] = static_cast<T>(gr[ph * gs.y + pw * gs.x]) / t.count;
            }
          }
          align_plane_backward(t, g.data(), p.pooled_h, p.pooled_w, lv.width, buf.data(), acc);
        }
      });
    }
  });
  return grads;
}

}  // namespace detops::roi::cpu
