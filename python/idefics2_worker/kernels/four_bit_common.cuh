// What the 4-bit CUDA kernels share (four_bit_gemv.cu, four_bit_mma.cu): the input kind, its type, the rounding of
// the outputs. four_bit_cuda.py puts this first in the source it compiles.

#ifndef INPUT_KIND
#define INPUT_KIND 0  // 0 bfloat16, 1 float16, 2 float32: the input's and the output's dtype
#endif

typedef unsigned short u16;
typedef unsigned int u32;

#if INPUT_KIND == 2
typedef float input_t;
#else
typedef u16 input_t;
#endif

// Rounded to nearest even, as torch's casts round.
__device__ __forceinline__ input_t from_float(float f) {
#if INPUT_KIND == 2
  return f;
#else
  u16 h;
#if INPUT_KIND == 0
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
#else
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
#endif
  return h;
#endif
}

