// bitsandbytes' 4-bit (nf4 / fp4) product with float32 sums on the CUDA cores, for 1-8 rows: the decode step's
// 4-bit linears where the tensor-core kernel (four_bit_mma.cu) does not run: float32 inputs, block sizes of 32.
// Compiled at run time by NVRTC (four_bit_cuda.py puts four_bit_common.cuh first, appends the FOUR_BIT_GEMV
// instances it needs and defines INPUT_KIND). No headers: NVRTC's built-ins cover the vector types, shuffles and
// __byte_perm.
//
// Why CUDA and not Triton: one weight's value is a lookup in the 16-entry code table. Held in shared memory, the
// table's 16 words sit in 16 different banks, so a warp's 32 lookups never conflict (lanes that want the same entry
// share its word); Triton's loads cannot place a table there, and its global-memory lookups cost the Triton kernel
// ~30% of its time (docs/BENCHMARKS.md, H19). A byte's two nibbles become table addresses with two logic operations
// per four bytes and one byte permute each, so a weight costs a permute, a shared load and one multiply-add per row.
//
// Order of the sums, the same at any row count (deterministic decoding relies on it) and set only by `splits`: each
// lane sums its chunk's 32 products in order (high nibble, then low, byte by byte), scales that sum by the chunk's
// block absmax (a chunk never straddles two quantisation blocks: the block size is a multiple of 32), adds it to its
// running sum chunk after chunk; the warp's 32 running sums are added by a fixed butterfly, and the splits' sums in
// split order.

#define MAX_WARPS 8  // a block's warps at most

// Eight consecutive inputs of one row, as floats (16 bytes of bf16 / fp16, 32 of float32).
__device__ __forceinline__ void load_inputs(const input_t* p, float v[8]) {
#if INPUT_KIND == 2
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
#else
  const uint4 packed = __ldg(reinterpret_cast<const uint4*>(p));
  const u32 words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#if INPUT_KIND == 0
    v[2 * i] = __uint_as_float(words[i] << 16);
    v[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
#else
    float low, high;
    asm("cvt.f32.f16 %0, %1;" : "=f"(low) : "h"(static_cast<u16>(words[i] & 0xffffu)));
    asm("cvt.f32.f16 %0, %1;" : "=f"(high) : "h"(static_cast<u16>(words[i] >> 16)));
    v[2 * i] = low;
    v[2 * i + 1] = high;
#endif
  }
#endif
}

// The weights are read once a token: past L1, which keeps the inputs every warp of the SM reads.
__device__ __forceinline__ uint4 load_weights(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ u32 word_of(const uint4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}

// The code value at a byte of `offsets` (its nibble times 4): the table is aligned to 256 bytes, so one byte permute
// puts that byte into the table's shared-memory address (no add), and the load takes the address as it is.
__device__ __forceinline__ float code_at(u32 table, u32 offsets, u32 byte) {
  float value;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(value) : "r"(__byte_perm(offsets, table, 0x7650u + byte)));
  return value;
}

// x [ROWS, k] → out [ROWS, n]; packed: weight (o, i) is byte (o·k + i) / 2, high nibble first; absmax: one float per
// `blocksize` weights; code: the 16 values. A block's warps form groups of `splits` warps; each group computes OUTS
// outputs, its warps taking every splits-th pass along K (more warps in flight for the narrower layers: ~15 a
// multiprocessor at 4,096 outputs without), and a lane reads 16-byte chunks (32 weights) of each output.
template <int ROWS, int OUTS>
__device__ __forceinline__ void four_bit_gemv(const input_t* __restrict__ x, const uint4* __restrict__ packed,
                                              const float* __restrict__ absmax, const float* __restrict__ code,
                                              const float* __restrict__ bias, input_t* __restrict__ out, int n,
                                              int k, int blocksize, int has_bias, int splits) {
  __shared__ __align__(256) float table[16];
  __shared__ float partial[MAX_WARPS][OUTS * ROWS];
  if (threadIdx.x < 16) table[threadIdx.x] = code[threadIdx.x];
  __syncthreads();
  const u32 table_at = static_cast<u32>(__cvta_generic_to_shared(table));
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int split = warp % splits;
  const int first = (blockIdx.x * ((blockDim.x >> 5) / splits) + warp / splits) * OUTS;
  const int chunks = k >> 5;
  const int chunks_per_block = blocksize >> 5;
  const int blocks_per_output = k / blocksize;

  float acc[OUTS][ROWS];
#pragma unroll
  for (int o = 0; o < OUTS; ++o)
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[o][r] = 0.0f;

  for (int c = lane + 32 * split; first < n && c < chunks; c += 32 * splits) {
    uint4 weights[OUTS];
    float scales[OUTS];
    const int block = c / chunks_per_block;
#pragma unroll
    for (int o = 0; o < OUTS; ++o) {
      const bool ok = first + o < n;
      const size_t output = static_cast<size_t>(ok ? first + o : first);
      weights[o] = ok ? load_weights(packed + output * chunks + c) : make_uint4(0u, 0u, 0u, 0u);
      scales[o] = ok ? __ldg(absmax + output * blocks_per_output + block) : 0.0f;
    }
    float part[OUTS][ROWS];
#pragma unroll
    for (int o = 0; o < OUTS; ++o)
#pragma unroll
      for (int r = 0; r < ROWS; ++r) part[o][r] = 0.0f;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      float in[ROWS][8];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) load_inputs(x + static_cast<size_t>(r) * k + c * 32 + q * 8, in[r]);
#pragma unroll
      for (int o = 0; o < OUTS; ++o) {
        const u32 word = word_of(weights[o], q);
        const u32 highs = (word >> 2) & 0x3c3c3c3cu;  // byte j: its high nibble times 4
        const u32 lows = (word << 2) & 0x3c3c3c3cu;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float high = code_at(table_at, highs, j);
          const float low = code_at(table_at, lows, j);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            part[o][r] = fmaf(high, in[r][2 * j], part[o][r]);
            part[o][r] = fmaf(low, in[r][2 * j + 1], part[o][r]);
          }
        }
      }
    }
#pragma unroll
    for (int o = 0; o < OUTS; ++o)
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[o][r] = fmaf(part[o][r], scales[o], acc[o][r]);
  }

#pragma unroll
  for (int o = 0; o < OUTS; ++o) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      float sum = acc[o][r];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      if (lane == 0) partial[warp][o * ROWS + r] = sum;
    }
  }
  __syncthreads();
  // The group's first warp adds its splits' sums in order and writes.
  if (split != 0) return;
  for (int i = lane; i < OUTS * ROWS; i += 32) {
    const int o = i / ROWS;
    const int r = i % ROWS;
    const int output = first + o;
    if (output >= n) continue;
    float sum = partial[warp][i];
    for (int s = 1; s < splits; ++s) sum += partial[warp + s][i];
    if (has_bias) sum += bias[output];
    out[static_cast<size_t>(r) * n + output] = from_float(sum);
  }
}

#define FOUR_BIT_GEMV(ROWS, OUTS)                                                                           \
  extern "C" __global__ void __launch_bounds__(32 * MAX_WARPS) four_bit_gemv_r##ROWS##_o##OUTS(             \
      const input_t* __restrict__ x, const uint4* __restrict__ packed, const float* __restrict__ absmax,   \
      const float* __restrict__ code, const float* __restrict__ bias, input_t* __restrict__ out, int n,    \
      int k, int blocksize, int has_bias, int splits) {                                                     \
    four_bit_gemv<ROWS, OUTS>(x, packed, absmax, code, bias, out, n, k, blocksize, has_bias, splits);      \
  }
