// Qualifiers for code compiled by both the host compiler and nvcc: the per-element math
// that CPU and CUDA kernels share is written once with these.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DETOPS_HOST_DEVICE __host__ __device__
#else
#define DETOPS_HOST_DEVICE
#endif

#define DETOPS_INLINE DETOPS_HOST_DEVICE inline

// For per-element math that CPU loops must vectorise: a call left in a loop stops its
// vectorisation, and the compiler's inlining heuristics give up on larger functions once a
// file holds many instantiations (DETOPS_VECTOR_CLONES compiles each loop three times).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define DETOPS_FORCE_INLINE DETOPS_HOST_DEVICE __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define DETOPS_FORCE_INLINE inline __attribute__((always_inline))
#else
#define DETOPS_FORCE_INLINE inline
#endif
