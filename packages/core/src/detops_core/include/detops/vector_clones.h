// DETOPS_VECTOR_CLONES: put on a CPU loop function whose per-element math vectorises, so that
// it is also compiled for x86-64-v4 (AVX-512) and AVX2 and the widest the CPU has is picked at
// load time (four and two times the vector width of x86-64's baseline SSE2, which wheels
// target). Every function the loop calls must be inlined into it.
//
// Builds keep floating-point contraction off (-ffp-contract=off), so no version fuses a
// multiply-add and all of them round identically: the clones change speed, not results.
// A loop with selects between floating-point values vectorises only if its source file is
// also compiled with -fno-trapping-math (torch runs with FP exceptions masked).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define DETOPS_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define DETOPS_VECTOR_CLONES
#endif
