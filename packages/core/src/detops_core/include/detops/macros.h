// Qualifiers for code compiled by both the host compiler and nvcc: the per-element math
// that CPU and CUDA kernels share is written once with these.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DETOPS_HOST_DEVICE __host__ __device__
#else
#define DETOPS_HOST_DEVICE
#endif

#define DETOPS_INLINE DETOPS_HOST_DEVICE inline
