/*
 * simd.h — the AVX2 kernels' switch of the FF-map stage (src/dixon/noise.c,
 * src/dixon/correct.c; internal, not installed): x86-64 with GCC/Clang
 * compiles them, the CPU decides at run time (psp_dixon_have_avx2), the
 * portable code elsewhere, with the same results. Not "fma": no operation
 * may be contracted, the results must not depend on the path.
 */
#ifndef PSP_DIXON_SIMD_H
#define PSP_DIXON_SIMD_H

#include <stdbool.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PSP_AVX2_KERNEL 1
#include <immintrin.h>
#define PSP_TARGET_AVX2 __attribute__((target("avx2,popcnt,bmi")))
#endif

static inline bool psp_dixon_have_avx2(void) {
#ifdef PSP_AVX2_KERNEL
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") &&
         __builtin_cpu_supports("bmi");
#else
  return false;
#endif
}

#endif
