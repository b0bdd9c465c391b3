// bitsandbytes' 4-bit (nf4 / fp4) product on the tensor cores, for 1-8 rows of bfloat16 or float16 inputs: the decode
// step's 4-bit linears. Compiled by NVRTC after four_bit_common.cuh (four_bit_cuda.py appends the FOUR_BIT_MMA
// instances); float32 inputs keep four_bit_gemv.cu.
//
// Why: four_bit_gemv.cu spends a shared-memory lookup and a multiply-add per weight and row, so at one row its
// lookups alone match the card's weight bandwidth (32 weights a clock a multiprocessor each) and at 8 rows the
// multiply-adds bound it (docs/BENCHMARKS.md, H38). Here one lookup gives two weights, already in the input's
// format, in the register layout of an m16n8k16 tensor-core product, which multiplies them by all 8 rows at once.
// The lookup table has 256 entries, one a byte (both nibbles), each held 32 times, once for each lane, so lane l's
// copies all lie in bank l and a warp's lookups never conflict (32 KB a block, filled once a block).
//
// Layout: the weights are bitsandbytes' as they are (weight (o, i) is byte (o·k + i) / 2, high nibble first). A warp
// computes a tile of 16 outputs and walks K in steps of 64 weights (a quantisation block or part of one: block sizes
// are multiples of 64). Thread (g, t) = (lane / 4, lane % 4) reads bytes 8t..8t+7 of a step's 32 for outputs g and
// g + 8, and 16 inputs, 16t..16t+15, of row g. The step's four products (j = 0..3) take, as the pair at logical
// K 2t (+ 8), byte 8t + 2j (+ 1): K's order inside a step is permuted alike for the weights and the inputs, which a
// sum does not see, so every load is contiguous.
//
// Order of the sums, the same at any row count (deterministic decoding relies on it) and set only by `splits` and
// UNROLL: a step's four products accumulate in the tensor core (float32) in j order; that sum is scaled by its block's
// absmax and added to the thread's running sums step after step; a tile's `splits` warps take alternate runs of UNROLL
// steps and their sums are added in split order. A product's output for one row does not depend on the other rows.

#if INPUT_KIND != 2

#define MMA_MAX_WARPS 16  // a block's warps at most: tiles times splits
#define TABLE_COPIES 32   // one per lane

// Eight bytes of one output's step: read once a token, past L1.
__device__ __forceinline__ uint2 load_step_weights(const uint2* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// Sixteen bytes of a packed step (two outputs' eight): read once a token, past L1.
__device__ __forceinline__ uint4 load_step_bytes(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// The block's table of code-value pairs, TABLE_COPIES copies (one a lane): entry (h, l), h the high nibble, holds h's
// value in the low half (the even input, first along K) and l's in the high. Synchronises the block.
__device__ __forceinline__ void fill_code_table(u32* table, const float* __restrict__ code, int lane, int warp,
                                                int warps) {
  for (int h = warp; h < 16; h += warps) {
    const u32 first = from_float(__ldg(code + h));
#pragma unroll
    for (int l = 0; l < 16; ++l)
      table[(h * 16 + l) * TABLE_COPIES + lane] = first | (static_cast<u32>(from_float(__ldg(code + l))) << 16);
  }
  __syncthreads();
}

__device__ __forceinline__ void mma_m16n8k16(float d[4], const u32 a[4], u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32."
#if INPUT_KIND == 0
      "bf16.bf16"
#else
      "f16.f16"
#endif
      ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The pair of byte `byte` of `word`: entry byte · 32 + the lane's copy. A byte permute isolates the byte and one
// shift-add places it (lane_at: the table's shared-memory address plus the lane's copy, 4 · lane).
__device__ __forceinline__ u32 pair_of(u32 lane_at, u32 word, int byte) {
  const u32 entry = __byte_perm(word, 0u, 0x4440u | byte);
  u32 pair;
  asm("ld.shared.u32 %0, [%1];" : "=r"(pair) : "r"(lane_at + (entry << 7)));
  return pair;
}

// One step: four products of the pairs of 16 bytes (8 of output low, 8 of output low + 8) by the 16 inputs, into a
// float32 sum the step's absmax scales.
__device__ __forceinline__ void four_bit_step(u32 lane_at, uint2 low_bytes, uint2 high_bytes,
                                              uint4 in_a, uint4 in_b, float low_scale, float high_scale,
                                              float acc[4]) {
  const u32 inputs_at[8] = {in_a.x, in_a.y, in_a.z, in_a.w, in_b.x, in_b.y, in_b.z, in_b.w};
  float step_sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const u32 low_word = j < 2 ? low_bytes.x : low_bytes.y;
    const u32 high_word = j < 2 ? high_bytes.x : high_bytes.y;
    const int byte = (2 * j) & 3;
    const u32 a[4] = {
        pair_of(lane_at, low_word, byte),
        pair_of(lane_at, high_word, byte),
        pair_of(lane_at, low_word, byte + 1),
        pair_of(lane_at, high_word, byte + 1),
    };
    mma_m16n8k16(step_sum, a, inputs_at[2 * j], inputs_at[2 * j + 1]);
  }
  acc[0] = fmaf(step_sum[0], low_scale, acc[0]);
  acc[1] = fmaf(step_sum[1], low_scale, acc[1]);
  acc[2] = fmaf(step_sum[2], high_scale, acc[2]);
  acc[3] = fmaf(step_sum[3], high_scale, acc[3]);
}

// x [rows ≤ 8, k] → out [rows, n], as four_bit_gemv.cu's; splits: warps a tile; the block's warps are tiles × splits,
// consecutive warps sharing a tile. A warp takes runs of UNROLL consecutive steps (their loads issued together),
// every splits-th run; block_shift: log2 of the steps a quantisation block. Outputs past n and rows past `rows` read
// output 0's weights and row 0's inputs: a product's output (output, row) uses only that output's weights and that
// row's inputs, and theirs are not written, so the loads need no conditions.
template <int UNROLL>
__device__ __forceinline__ void four_bit_mma(const input_t* __restrict__ x, const uint2* __restrict__ packed,
                                             const float* __restrict__ absmax, const float* __restrict__ code,
                                             const float* __restrict__ bias, input_t* __restrict__ out, int n,
                                             int k, int rows, int block_shift, int has_bias, int splits) {
  __shared__ u32 table[256 * TABLE_COPIES];
  __shared__ float partial[MMA_MAX_WARPS][4][32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  fill_code_table(table, code, lane, warp, warps);

  const int g = lane >> 2;
  const int t = lane & 3;
  const int split = warp % splits;
  const int tile = blockIdx.x * (warps / splits) + warp / splits;
  const int low = tile * 16 + g;  // this thread's outputs: low and low + 8
  const int steps = k >> 6;
  const u32 lane_at = static_cast<u32>(__cvta_generic_to_shared(table)) + 4 * lane;
  const int blocks_an_output = (k >> 6) >> block_shift;
  // 8 bytes a step and output (k / 16 of them an output); 16 inputs (two 16-byte loads) a step and row.
  const size_t low_row = low < n ? low : 0;
  const size_t high_row = low + 8 < n ? low + 8 : 0;
  const uint2* low_weights = packed + low_row * (k >> 4) + t;
  const uint2* high_weights = packed + high_row * (k >> 4) + t;
  const float* low_scales = absmax + low_row * blocks_an_output;
  const float* high_scales = absmax + high_row * blocks_an_output;
  const uint4* inputs = reinterpret_cast<const uint4*>(x) + static_cast<size_t>(g < rows ? g : 0) * (k >> 3) + 2 * t;

  // acc: (output low, row 2t), (low, 2t + 1), (low + 8, 2t), (low + 8, 2t + 1): the product's accumulator layout.
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  int step = split * UNROLL;
  const uint2* low_at = low_weights + 4 * step;
  const uint2* high_at = high_weights + 4 * step;
  const uint4* inputs_at = inputs + 8 * step;
  const int run_stride = splits * UNROLL;
  for (; step + UNROLL <= steps; step += run_stride) {
    uint2 low_bytes[UNROLL], high_bytes[UNROLL];
    uint4 in_a[UNROLL], in_b[UNROLL];
    float low_scale[UNROLL], high_scale[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      low_bytes[u] = load_step_weights(low_at + 4 * u);
      high_bytes[u] = load_step_weights(high_at + 4 * u);
      in_a[u] = __ldg(inputs_at + 8 * u);
      in_b[u] = __ldg(inputs_at + 8 * u + 1);
      const int block = (step + u) >> block_shift;
      low_scale[u] = __ldg(low_scales + block);
      high_scale[u] = __ldg(high_scales + block);
    }
    low_at += 4 * run_stride;
    high_at += 4 * run_stride;
    inputs_at += 8 * run_stride;
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
      four_bit_step(lane_at, low_bytes[u], high_bytes[u], in_a[u], in_b[u], low_scale[u], high_scale[u], acc);
  }
  // The last run, shorter than UNROLL, falls to the warp whose turn it is (the others' next run starts past the end).
  for (; step < steps; ++step) {
    four_bit_step(lane_at, load_step_weights(low_weights + 4 * step), load_step_weights(high_weights + 4 * step),
                  __ldg(inputs + 8 * step), __ldg(inputs + 8 * step + 1), __ldg(low_scales + (step >> block_shift)),
                  __ldg(high_scales + (step >> block_shift)), acc);
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) partial[warp][i][lane] = acc[i];
  __syncthreads();
  // The tile's first warp adds its splits' sums in order and writes.
  if (split != 0) return;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int output = low + (i >= 2 ? 8 : 0);
    const int row = 2 * t + (i & 1);
    if (output >= n || row >= rows) continue;
    float sum = partial[warp][i][lane];
    for (int s = 1; s < splits; ++s) sum += partial[warp + s][i][lane];
    if (has_bias) sum += bias[output];
    out[static_cast<size_t>(row) * n + output] = from_float(sum);
  }
}

#define FOUR_BIT_MMA(UNROLL)                                                                                   \
  extern "C" __global__ void __launch_bounds__(32 * MMA_MAX_WARPS) four_bit_mma_u##UNROLL(                    \
      const input_t* __restrict__ x, const uint2* __restrict__ packed, const float* __restrict__ absmax,      \
      const float* __restrict__ code, const float* __restrict__ bias, input_t* __restrict__ out, int n, int k, \
      int rows, int block_shift, int has_bias, int splits) {                                                   \
    four_bit_mma<UNROLL>(x, packed, absmax, code, bias, out, n, k, rows, block_shift, has_bias, splits);        \
  }

// The same product from a layout packed once (four_bit_cuda.pack_for_mma), so that a warp's step is one 16-byte load
// a lane: for tile T (16 outputs) and step s, 32 lanes' 16 bytes, lane (g, t)'s being bytes 8t..8t+7 of output 16T + g's
// step s, then those of output 16T + g + 8; absmax for tile T and quantisation block b as 8 pairs (output 16T + g,
// output 16T + g + 8). Why (H45): the kernel above issues ~7 global load requests a warp and 512 bytes of weights, each
// touching up to 8 lines (two 8-byte weight loads from 8 rows, two absmax loads from 8 rows, two input loads), where the
// CUDA-core kernel issues 2.5, and its warps wait on them. Here a warp computes TILES tiles a step, which share the
// inputs' loads: TILES weight loads, TILES absmax pairs and two input loads for TILES · 512 bytes. Tiles are padded to
// a multiple of 4 (the padding's outputs are computed, not written). Each output's sums are ordered as in the kernel
// above at the same splits and UNROLL, so the two give the same bits.
// LENGTH steps from `step` of a warp's TILES packed tiles, their loads issued together.
template <int LENGTH, int TILES>
__device__ __forceinline__ void packed_run(u32 lane_at, const uint4* tile_weights, const float2* tile_scales,
                                           const uint4* inputs, int step, int steps, int blocks_an_output,
                                           int block_shift, float (&acc)[TILES][4]) {
  uint4 bytes[LENGTH][TILES];
  float2 scale[LENGTH][TILES];
  uint4 in_a[LENGTH], in_b[LENGTH];
#pragma unroll
  for (int u = 0; u < LENGTH; ++u) {
    const int block = (step + u) >> block_shift;
#pragma unroll
    for (int j = 0; j < TILES; ++j) {
      bytes[u][j] = load_step_bytes(tile_weights + static_cast<size_t>(j) * steps * 32 + (step + u) * 32);
      scale[u][j] = __ldg(tile_scales + (static_cast<size_t>(j) * blocks_an_output + block) * 8);
    }
    in_a[u] = __ldg(inputs + 8 * (step + u));
    in_b[u] = __ldg(inputs + 8 * (step + u) + 1);
  }
#pragma unroll
  for (int u = 0; u < LENGTH; ++u)
#pragma unroll
    for (int j = 0; j < TILES; ++j)
      four_bit_step(lane_at, make_uint2(bytes[u][j].x, bytes[u][j].y), make_uint2(bytes[u][j].z, bytes[u][j].w),
                    in_a[u], in_b[u], scale[u][j].x, scale[u][j].y, acc[j]);
}

// Programmatic dependent launch (programmatic_launch.py): the kernel after this one may place its blocks now; this
// one waits for the kernel before it to finish before reading its output. Without such a launch, both do nothing.
__device__ __forceinline__ void let_next_kernel_start() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" : : : "memory");
#endif
}

__device__ __forceinline__ void wait_for_previous_kernel() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" : : : "memory");
#endif
}

template <int UNROLL, int TILES>
__device__ __forceinline__ void four_bit_mma_packed(const input_t* __restrict__ x, const uint4* __restrict__ weights,
                                                    const float2* __restrict__ scales,
                                                    const float* __restrict__ code, const float* __restrict__ bias,
                                                    input_t* __restrict__ out, int n, int k, int rows,
                                                    int block_shift, int has_bias, int splits) {
  __shared__ u32 table[256 * TABLE_COPIES];  // after the products: each warp's sums, for the split adds
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  let_next_kernel_start();
  fill_code_table(table, code, lane, warp, warps);  // the code is the layer's, no kernel of the step writes it
  wait_for_previous_kernel();

  const int g = lane >> 2;
  const int t = lane & 3;
  const int split = warp % splits;
  const int first_tile = (blockIdx.x * (warps / splits) + warp / splits) * TILES;
  const int steps = k >> 6;
  const int blocks_an_output = steps >> block_shift;
  const u32 lane_at = static_cast<u32>(__cvta_generic_to_shared(table)) + 4 * lane;
  // Tile first_tile + j's step s: weights[(first_tile + j) · steps · 32 + s · 32 + lane]; its block b's absmax pairs:
  // scales[((first_tile + j) · blocks + b) · 8 + g].
  const uint4* tile_weights = weights + static_cast<size_t>(first_tile) * steps * 32 + lane;
  const float2* tile_scales = scales + static_cast<size_t>(first_tile) * blocks_an_output * 8 + g;
  const uint4* inputs = reinterpret_cast<const uint4*>(x) + static_cast<size_t>(g < rows ? g : 0) * (k >> 3) + 2 * t;

  float acc[TILES][4];
#pragma unroll
  for (int j = 0; j < TILES; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
  int step = split * UNROLL;
  const int run_stride = splits * UNROLL;
  for (; step + UNROLL <= steps; step += run_stride)
    packed_run<UNROLL, TILES>(lane_at, tile_weights, tile_scales, inputs, step, steps, blocks_an_output, block_shift, acc);
  // The last run, shorter than UNROLL, falls to the warp whose turn it is, one step at a time as above.
  for (; step < steps; ++step)
    packed_run<1, TILES>(lane_at, tile_weights, tile_scales, inputs, step, steps, blocks_an_output, block_shift, acc);

  __syncthreads();  // every warp is done with the table
  float* partial = reinterpret_cast<float*>(table) + warp * (TILES * 4 * 32);
#pragma unroll
  for (int j = 0; j < TILES; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[(j * 4 + i) * 32 + lane] = acc[j][i];
  __syncthreads();
  if (split != 0) return;
#pragma unroll
  for (int j = 0; j < TILES; ++j) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int output = (first_tile + j) * 16 + g + (i >= 2 ? 8 : 0);
      const int row = 2 * t + (i & 1);
      if (output >= n || row >= rows) continue;
      float sum = acc[j][i];
      for (int s = 1; s < splits; ++s) sum += partial[s * (TILES * 4 * 32) + (j * 4 + i) * 32 + lane];
      if (has_bias) sum += bias[output];
      out[static_cast<size_t>(row) * n + output] = from_float(sum);
    }
  }
}

#define FOUR_BIT_MMA_PACKED(UNROLL, TILES)                                                                         \
  extern "C" __global__ void __launch_bounds__(32 * MMA_MAX_WARPS) four_bit_mma_packed_u##UNROLL##_t##TILES(        \
      const input_t* __restrict__ x, const uint4* __restrict__ weights, const float2* __restrict__ scales,          \
      const float* __restrict__ code, const float* __restrict__ bias, input_t* __restrict__ out, int n, int k,      \
      int rows, int block_shift, int has_bias, int splits) {                                                        \
    four_bit_mma_packed<UNROLL, TILES>(x, weights, scales, code, bias, out, n, k, rows, block_shift, has_bias,     \
                                       splits);                                                                     \
  }

#else
#define FOUR_BIT_MMA(UNROLL)
#define FOUR_BIT_MMA_PACKED(UNROLL, TILES)
#endif
