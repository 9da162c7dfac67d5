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
#include "roi_math.h"

namespace detops::roi::cpu {

struct AlignParams {
  int64_t pooled_h, pooled_w, sampling_ratio;
  bool aligned;  // ps_roi_align's boxes are those of aligned roi_align
};

// Tables of every RoI (built in parallel), each on its own level's map.
template <typename T>
std::vector<AlignTables<T>> build_tables(const Rois<T>& rois, const std::vector<int64_t>& level,
                                         const std::vector<MapShape>& maps, const AlignParams& p) {
  const int64_t k = rois.size();
  std::vector<AlignTables<T>> tables(static_cast<size_t>(k));
  parallel(k, 64.0 * static_cast<double>(p.pooled_h + p.pooled_w), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (level[i] < 0) continue;  // no level: never read
      const MapShape& m = maps[static_cast<size_t>(level[i])];
      const T* r = &rois.box[4 * i];
      const AlignBox<T> box = roi_align_box(r[0], r[1], r[2], r[3], static_cast<T>(m.scale),
                                            p.aligned, p.pooled_h, p.pooled_w, p.sampling_ratio);
      tables[i].build(box, p.pooled_h, p.pooled_w, m.height, m.width);
    }
  });
  return tables;
}

// Each RoI's level: a.levels (checked by the entry), or 0 for roi_align.
inline std::vector<int64_t> levels_of(const AlignArgs& a) {
  if (!a.levels.defined()) return std::vector<int64_t>(static_cast<size_t>(a.num_rois()), 0);
  const int64_t* data = a.levels.const_data_ptr<int64_t>();
  return std::vector<int64_t>(data, data + a.num_rois());
}

// The column stride of a plane, as a template argument: a unit stride lets the row loop
// read contiguous values (and vectorise).
enum class ColumnStride { kUnit, kAny };

// One RoI, one channel: out[ph * pooled_w + pw] for every bin. `buf` holds >= span values.
template <ColumnStride kStride, typename S, typename T>
void align_plane(const AlignTables<T>& t, const S* plane, int64_t sy, int64_t sx, int64_t pooled_h,
                 int64_t pooled_w, T* buf, T* out) {
  const int64_t span = t.x.hi - t.x.lo;
  for (int64_t ph = 0; ph < pooled_h; ++ph) {
    std::fill(buf, buf + span, T(0));
    for (int64_t e = t.y.offset[ph]; e < t.y.offset[ph + 1]; ++e) {
      const T wy = t.y.weight[e];
      const S* row = plane + t.y.pos[e] * sy + t.x.lo * sx;
      if constexpr (kStride == ColumnStride::kUnit) {
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

// Forward over levels into out [K, C, pooled_h, pooled_w] (K, C > 0).
template <typename S>
void align_forward(const AlignArgs& a, const std::vector<Tensor>& inputs, Tensor& out) {
  using T = acc_t<S>;
  const int64_t c = a.channels;
  const Rois<T> rois = read_rois<S, T>(a.rois, a.batch);
  const int64_t k = rois.size();
  const AlignParams p{a.pooled_h, a.pooled_w, a.sampling_ratio, a.aligned};
  std::vector<const S*> data;
  std::vector<Strides> strides;
  int64_t max_width = 1;
  for (size_t l = 0; l < inputs.size(); ++l) {
    data.push_back(inputs[l].const_data_ptr<S>());
    strides.push_back(strides_of(inputs[l]));
    max_width = std::max(max_width, inputs[l].size(3));
  }
  const std::vector<int64_t> level = levels_of(a);
  const std::vector<AlignTables<T>> tables = build_tables(rois, level, a.maps, p);
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
      const Strides& st = strides[l];
      const S* plane = data[l] + st.plane(rois.batch[r], ch);
      if (st.x == 1) {
        align_plane<ColumnStride::kUnit>(tables[r], plane, st.y, st.x, p.pooled_h, p.pooled_w,
                                         buf.data(), bin_out.data());
      } else {
        align_plane<ColumnStride::kAny>(tables[r], plane, st.y, st.x, p.pooled_h, p.pooled_w,
                                        buf.data(), bin_out.data());
      }
      for (int64_t b = 0; b < bins; ++b) dst[b] = static_cast<S>(bin_out[b]);
    }
  });
}

// Backward over levels into grads[l] [N, C, H_l, W_l], in grad's dtype. Thread work is
// split by gradient plane (channel, level, image); each plane's single writer adds its RoIs
// in index order, in float32 (or float64) whatever the storage type.
template <typename S>
void align_backward(const AlignArgs& a, const Tensor& grad, std::vector<Tensor>& grads) {
  using T = acc_t<S>;
  const int64_t n = a.batch, c = a.channels;
  const Rois<T> rois = read_rois<S, T>(a.rois, n);
  const int64_t k = rois.size();
  const AlignParams p{a.pooled_h, a.pooled_w, a.sampling_ratio, a.aligned};
  const std::vector<MapShape>& maps = a.maps;
  const int64_t num_levels = static_cast<int64_t>(maps.size());
  std::vector<S*> grad_data;
  int64_t max_plane = 1, max_width = 1;
  for (size_t l = 0; l < maps.size(); ++l) {
    grad_data.push_back(grads[l].template mutable_data_ptr<S>());
    max_plane = std::max(max_plane, maps[l].height * maps[l].width);
    max_width = std::max(max_width, maps[l].width);
  }
  const std::vector<int64_t> level = levels_of(a);
  const std::vector<AlignTables<T>> tables = build_tables(rois, level, maps, p);
  std::vector<int64_t> key(static_cast<size_t>(k));
  // RoIs without a level go to an extra group that no gradient plane visits.
  for (int64_t r = 0; r < k; ++r)
    key[r] = level[r] < 0 ? num_levels * n : level[r] * n + rois.batch[r];
  const auto groups = bucket(key, num_levels * n + 1);

  const S* g_data = grad.const_data_ptr<S>();
  const Strides gs = strides_of(grad);
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
      const MapShape& m = maps[l];
      const int64_t area = m.height * m.width;
      accumulate_plane(grad_data[l] + (b * c + ch) * area, area, scratch, [&](T* acc) {
        for (int64_t r : groups[l * n + b]) {
          const AlignTables<T>& t = tables[r];
          const S* gr = g_data + r * gs.n + ch * gs.c;
          for (int64_t ph = 0; ph < p.pooled_h; ++ph) {
            for (int64_t pw = 0; pw < p.pooled_w; ++pw) {
              g[ph * p.pooled_w + pw] = static_cast<T>(gr[ph * gs.y + pw * gs.x]) / t.count;
            }
          }
          align_plane_backward(t, g.data(), p.pooled_h, p.pooled_w, m.width, buf.data(), acc);
        }
      });
    }
  });
}

}  // namespace detops::roi::cpu
