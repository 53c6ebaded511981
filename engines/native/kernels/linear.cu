// Linear layers. Decode: bandwidth-bound GEMVs, one warp per two output rows (fp16, int8: dp4a with
// int32 accumulation) streaming 16-byte weight loads, up to 8 activation rows per pass; 4-bit weights
// in tensor-core tile order run on mma.sync (dequantized exactly into fp16 fragments, any batch up to
// 8 at the cost of one; small matrices split K across blocks), otherwise on CUDA cores from fp16
// inputs staged in shared memory. Every decode GEMV issues its first weight loads before pdlWait(),
// so they overlap the previous kernel.
// Prefill: a tensor-core GEMM (WMMA: fp16 x fp16 -> fp32, or int8 x int8 -> int32), 4-bit weights
// dequantized to fp16 tiles.
#include <mma.h>
#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>
#include "common.cuh"
#include "i4.cuh"
#include "kernels.cuh"

namespace me {

template <int WT>
struct Epl;
template <>
struct Epl<W_F16> {
  static constexpr int v = 8;
};
template <>
struct Epl<W_I8> {
  static constexpr int v = 16;
};
template <>
struct Epl<W_I4> {
  static constexpr int v = 32;
};

constexpr int GEMV_MT = 8;  // activation rows per pass
constexpr int GEMV_RW = 2;  // weight rows per warp: activations loaded once serve both
constexpr int GEMV_U = 2;   // iterations whose weight loads are in flight together

// warps that split K (small matrices: so enough warps stream) and blocks of a row-major decode GEMV
struct GemvGrid {
  int ks;
  unsigned blocks;
};

template <int WT>
__device__ __forceinline__ size_t byteOff(int k) {
  return WT == W_F16 ? (size_t)k * 2 : WT == W_I8 ? (size_t)k : (size_t)k / 2;
}

// this lane's 16 bytes of RW row-major weight rows (from wbase, rows rowBytes apart) for U steps of
// the warp (step it0 + u * ks), zeros past the matrix
template <int WT, int U, int RW>
__device__ __forceinline__ void loadRows(uint4 (&wq)[U][RW], const uint8_t* wbase, size_t rowBytes, int n0, int N, int K, int nIt, int it0,
                                         int ks) {
  constexpr int EPL = Epl<WT>::v;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int it = it0 + u * ks;
    const int k = it * 32 * EPL + lane * EPL;
    const bool ok = n0 < N && it < nIt && k < K;
#pragma unroll
    for (int r = 0; r < RW; r++)
      wq[u][r] = ok && n0 + r < N ? __ldg((const uint4*)(wbase + r * rowBytes + byteOff<WT>(k))) : make_uint4(0, 0, 0, 0);
  }
}

// four normalized inputs (h * r * w, fake-quantized when s > 0)
__device__ __forceinline__ float4 normed4(const NormIn& n, const float* hrow, int k, float r, float s) {
  const float4 h = __ldg((const float4*)(hrow + k)), w = __ldg((const float4*)(n.w + k));
  return make_float4(qdq(h.x * r * w.x, s), qdq(h.y * r * w.y, s), qdq(h.z * r * w.z, s), qdq(h.w * r * w.w, s));
}
__device__ __forceinline__ uint32_t pack4(float4 v, float s) {
  return (uint32_t)(quant8(v.x, s) & 0xff) | ((uint32_t)(quant8(v.y, s) & 0xff) << 8) | ((uint32_t)(quant8(v.z, s) & 0xff) << 16) |
         ((uint32_t)(quant8(v.w, s) & 0xff) << 24);
}
// 1 / rms of each of the block's input rows (the fused RMSNorm), computed by the whole block; rows
// from M on get a value that is never used
template <int MT>
__device__ __forceinline__ void rowRms(const NormIn& nin, int M, int K, int lda, float (&rn)[MT]) {
  __shared__ float scratch[32];
#pragma unroll
  for (int m = 0; m < MT; m++) {
    float ss = 0.f;
    if (m < M)
      for (int i = threadIdx.x; i < K; i += blockDim.x) {
        const float v = nin.hidden[(size_t)m * lda + i];
        ss += v * v;
      }
    ss = blockSum(ss, scratch);
    rn[m] = 1.f / sqrtf(ss / K + nin.eps);
  }
}

// output (m, n) of a decode GEMV: times the per-channel scale (int8), plus bias, then the fused conv
// step, an add into y, or a plain store
__device__ __forceinline__ float gemvOut(const LinearW& W, int m, int n, float v, float* __restrict__ y, int ldy, const ConvStep& ep,
                                         int hasEp,
                                         int addToY) {  // returns the value stored
  if (W.type == W_I8) v *= __ldg(W.scale + n);
  if (W.bias) v += __ldg(W.bias + n);
  if (hasEp && n >= ep.c0 && n < ep.c0 + ep.C) {
    const int c = n - ep.c0;
    float* st = ep.states + (long long)ep.slots[m] * ep.slotStride + (size_t)c * (ep.K - 1);
    float o = convStepOne(v, ep.w + (size_t)c * ep.K, ep.b ? ep.b[c] : 0.f, st, ep.K);
    if (ep.xq) ep.xq[(size_t)m * ep.ldxq + c] = (int8_t)quant8(o, ep.xqScale);
    if (ep.qscale) o = qdq(o, ep.qscale[c]);
    ep.xc[(size_t)m * ep.ldxc + c] = o;
    return o;
  }
  float* out = y + (size_t)m * ldy + n;
  if (addToY) v += *out;
  *out = v;
  return v;
}

// Brings the conv state and weights that output (m, n)'s conv step will read towards L2, before
// pdlWait(): only this GEMV writes that state (the same layer's step before), and the epilogue's
// loads then wait on L2 rather than DRAM, with no register held meanwhile.
__device__ __forceinline__ void prefetchConvStep(const ConvStep& ep, int m, int n) {
  if (n < ep.c0 || n >= ep.c0 + ep.C) return;
  const int c = n - ep.c0;
  const float* st = ep.states + (long long)ep.slots[m] * ep.slotStride + (size_t)c * (ep.K - 1);
  asm volatile("prefetch.global.L2 [%0];" ::"l"(st));
  asm volatile("prefetch.global.L2 [%0];" ::"l"(st + ep.K - 2));  // (it may straddle two lines)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(ep.w + (size_t)c * ep.K));
}

// 1 / rms of a row from the partial sums of squares its producer left (NormIn.part), by the block
__device__ __forceinline__ float partRms(const NormIn& nin, int K) { return rmsFromParts(nin.part, nin.nPart, K, nin.eps); }

// Sums each warp's partial dot products (over lanes, then over the ks warps that split K) and
// writes output (m, n0 + r) from lane m * RW + r.
template <int MT, int RW>
__device__ __forceinline__ void gemvFinish(float (&acc)[MT][RW], const LinearW& W, int M, float* __restrict__ y, int ldy,
                                           const ConvStep& ep, int hasEp, int ks, int n0, int part, int addToY, float* ssOut = nullptr) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int N = W.N;
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int r = 0; r < RW; r++) acc[m][r] = warpSum(acc[m][r]);
  if (ks > 1) {
    __shared__ float red[8][MT * RW];
    if (lane == 0)
#pragma unroll
      for (int m = 0; m < MT; m++)
#pragma unroll
        for (int r = 0; r < RW; r++) red[warp][m * RW + r] = acc[m][r];
    __syncthreads();
    if (part == 0)
#pragma unroll
      for (int m = 0; m < MT; m++)
#pragma unroll
        for (int r = 0; r < RW; r++) {
          float s = 0.f;
          for (int q = 0; q < ks; q++) s += red[warp + q][m * RW + r];
          acc[m][r] = s;
        }
  }
  const int m = lane / RW, r = lane % RW, n = n0 + r;
  const bool mine = !(part != 0 || lane >= MT * RW || m >= M || n >= N || n0 >= N);
  if (!mine && !ssOut) return;
  float h = 0.f;
  if (mine) {
    float v = 0.f;
#pragma unroll
    for (int mm = 0; mm < MT; mm++)
#pragma unroll
      for (int rr = 0; rr < RW; rr++)
        if (mm * RW + rr == lane) v = acc[mm][rr];
    h = gemvOut(W, m, n, v, y, ldy, ep, hasEp, addToY);
  }
  if (ssOut) sumSquaresOut(h * h, ssOut);  // batch 1 only: every output is row 0's
}

// fp16 and int8 weights
template <int WT, int MT, bool NORM>
__global__ void __launch_bounds__(256)
    gemvKernel(LinearW W, const void* __restrict__ xv, int lda, float xScale, int M, float* __restrict__ y, int ldy, ConvStep ep, int hasEp,
               int ks, NormIn nin, int addToY, float* __restrict__ ssOut) {
  constexpr int EPL = Epl<WT>::v;
  constexpr int CH = 32 * EPL;
  constexpr int RW = GEMV_RW, U = GEMV_U;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * (8 / ks) + warp / ks) * RW;
  const int part = warp % ks;
  const int K = W.K, N = W.N;
  const int nIt = (K + CH - 1) / CH;
  const size_t rowBytes = byteOff<WT>(K);
  const uint8_t* wbase = (const uint8_t*)W.w + (size_t)n0 * rowBytes;
  uint4 wq[U][RW];
  auto loadW = [&](int it0) { loadRows<WT>(wq, wbase, rowBytes, n0, N, K, nIt, it0, ks); };
  loadW(part);  // weights only: may overlap the previous kernel
  if (hasEp && part == 0 && lane < MT * RW && lane / RW < M && n0 + lane % RW < N) prefetchConvStep(ep, lane / RW, n0 + lane % RW);
  pdlWait();
  pdlRelease();

  float acc[MT][RW];
  int iacc[MT][RW];
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int r = 0; r < RW; r++) acc[m][r] = 0.f, iacc[m][r] = 0;
  float rn[MT];  // 1 / rms of each input row (fused norm)
  if constexpr (NORM) {
    if (nin.part && M == 1)
      rn[0] = partRms(nin, K);
    else
      rowRms<MT>(nin, M, K, lda, rn);
  }
  const float fs = WT == W_I8 ? 0.f : nin.scale;  // float inputs: fake quantization in normed4
  // four (or, fused, normalized) inputs of row m at column k
  auto in4 = [&](int m, int k) -> float4 {
    if constexpr (NORM)
      return normed4(nin, nin.hidden + (size_t)m * lda, k, rn[m], fs);
    else
      return __ldg((const float4*)((const float*)xv + (size_t)m * lda + k));
  };

  for (int it0 = part; it0 < nIt && n0 < N; it0 += ks * U) {
    if (it0 != part) loadW(it0);
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int it = it0 + u * ks;
      const int k = it * CH + lane * EPL;
      if (!(it < nIt && k < K)) continue;
      if constexpr (WT == W_F16) {
#pragma unroll
        for (int m = 0; m < MT; m++) {
          if (m >= M) break;
          const float4 a = in4(m, k), b = in4(m, k + 4);
#pragma unroll
          for (int r = 0; r < RW; r++) {
            const __half2* h = (const __half2*)&wq[u][r];
            const float2 w0 = __half22float2(h[0]), w1 = __half22float2(h[1]), w2 = __half22float2(h[2]), w3 = __half22float2(h[3]);
            acc[m][r] += w0.x * a.x + w0.y * a.y + w1.x * a.z + w1.y * a.w + w2.x * b.x + w2.y * b.y + w3.x * b.z + w3.y * b.w;
          }
        }
      } else if constexpr (WT == W_I8) {
#pragma unroll
        for (int m = 0; m < MT; m++) {
          if (m >= M) break;
          uint4 a;
          if constexpr (NORM) {
            const float* hrow = nin.hidden + (size_t)m * lda;
            a.x = pack4(normed4(nin, hrow, k, rn[m], 0.f), nin.scale);
            a.y = pack4(normed4(nin, hrow, k + 4, rn[m], 0.f), nin.scale);
            a.z = pack4(normed4(nin, hrow, k + 8, rn[m], 0.f), nin.scale);
            a.w = pack4(normed4(nin, hrow, k + 12, rn[m], 0.f), nin.scale);
          } else {
            a = __ldg((const uint4*)((const int8_t*)xv + (size_t)m * lda + k));
          }
#pragma unroll
          for (int r = 0; r < RW; r++) {
            int s = iacc[m][r];
            s = __dp4a((int)wq[u][r].x, (int)a.x, s);
            s = __dp4a((int)wq[u][r].y, (int)a.y, s);
            s = __dp4a((int)wq[u][r].z, (int)a.z, s);
            s = __dp4a((int)wq[u][r].w, (int)a.w, s);
            iacc[m][r] = s;
          }
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int r = 0; r < RW; r++)
      if constexpr (WT == W_I8) acc[m][r] = (float)iacc[m][r] * xScale;  // exact below 2^24 per lane
  gemvFinish<MT, RW>(acc, W, M, y, ldy, ep, hasEp, ks, n0, part, addToY, ssOut);
}

// 4-bit weights. The block first stages its input rows in shared memory as fp16, in the pair order
// dequant8 produces and swizzled so the lanes' 16-byte reads do not collide in banks: fp32 inputs
// read straight from L1 by every warp made the kernel L1-bound. Each warp then streams four weight
// rows, 32 weights per lane per step, dequantized exactly into fp16 and multiplied in fp16 four
// terms at a time, added in fp32 and scaled per group.
constexpr int I4_RW = 4;
__device__ __forceinline__ int i4Slot(int b) { return b ^ ((b >> 3) & 3); }

// U: steps of weights loaded at once. With one input row a warp loads all its steps before it
// computes (one memory round trip per warp: rows are short, so latency, not bandwidth, bounds them).
template <int MT, int U, bool NORM>
__global__ void __launch_bounds__(256) gemvI4Kernel(LinearW W, const float* __restrict__ x, int lda, int M, float* __restrict__ y, int ldy,
                                                    ConvStep ep, int hasEp, int ks, NormIn nin, int addToY) {
  constexpr int RW = I4_RW, CH = 1024;
  extern __shared__ uint4 xs[];  // (M, K / 8) slots of four half2
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * (8 / ks) + warp / ks) * RW;
  const int part = warp % ks;
  const int K = W.K, N = W.N, KB = K / 8;
  const int nIt = (K + CH - 1) / CH;
  const size_t rowBytes = (size_t)K / 2;
  const uint8_t* wbase = (const uint8_t*)W.w + (size_t)n0 * rowBytes;
  uint4 wq[U][RW];
  auto loadW = [&](int it0) { loadRows<W_I4>(wq, wbase, rowBytes, n0, N, K, nIt, it0, ks); };
  loadW(part);  // weights only: may overlap the previous kernel
  pdlWait();
  pdlRelease();

  float rn[MT];
  if constexpr (NORM) rowRms<MT>(nin, M, K, lda, rn);
#pragma unroll 4
  for (int i = threadIdx.x; i < M * KB; i += blockDim.x) {
    const int m = i / KB, b = i - m * KB;
    float4 a, c;
    if constexpr (NORM) {
      const float* hrow = nin.hidden + (size_t)m * lda;
      float r = 0.f;
#pragma unroll
      for (int mm = 0; mm < MT; mm++)
        if (mm == m) r = rn[mm];
      a = normed4(nin, hrow, 8 * b, r, nin.scale), c = normed4(nin, hrow, 8 * b + 4, r, nin.scale);
    } else {
      a = __ldg((const float4*)(x + (size_t)m * lda + 8 * b)), c = __ldg((const float4*)(x + (size_t)m * lda + 8 * b + 4));
    }
    __half2 h[4] = {__floats2half2_rn(a.x, c.x), __floats2half2_rn(a.y, c.y), __floats2half2_rn(a.z, c.z), __floats2half2_rn(a.w, c.w)};
    xs[(size_t)m * KB + i4Slot(b)] = *(uint4*)h;
  }
  __syncthreads();

  const bool pow2 = (W.group & (W.group - 1)) == 0;
  const int gsh = __ffs(W.group) - 1, nG = K / W.group;
  float acc[MT][RW];
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int r = 0; r < RW; r++) acc[m][r] = 0.f;
  for (int it0 = part; it0 < nIt && n0 < N; it0 += ks * U) {
    if (it0 != part) loadW(it0);
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int it = it0 + u * ks;
      const int k = it * CH + lane * 32;
      if (!(it < nIt && k < K)) continue;
      const int g = pow2 ? k >> gsh : k / W.group;
      float sc[RW];
#pragma unroll
      for (int r = 0; r < RW; r++) sc[r] = n0 + r < N ? __ldg(W.scale + (size_t)(n0 + r) * nG + g) : 0.f;
#pragma unroll
      for (int m = 0; m < MT; m++) {
        if (m >= M) break;
        float p[RW];
#pragma unroll
        for (int r = 0; r < RW; r++) p[r] = 0.f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const uint4 xv = xs[(size_t)m * KB + i4Slot(k / 8 + j)];
          const __half2* xh = (const __half2*)&xv;
#pragma unroll
          for (int r = 0; r < RW; r++) {
            __half2 d[4];
            dequant8(((const uint32_t*)&wq[u][r])[j], d);
            __half2 h = __hmul2(d[0], xh[0]);
            h = __hfma2(d[1], xh[1], h);
            h = __hfma2(d[2], xh[2], h);
            h = __hfma2(d[3], xh[3], h);
            const float2 f = __half22float2(h);
            p[r] += f.x + f.y;
          }
        }
#pragma unroll
        for (int r = 0; r < RW; r++) acc[m][r] += p[r] * sc[r];
      }
    }
  }
  gemvFinish<MT, RW>(acc, W, M, y, ldy, ep, hasEp, ks, n0, part, addToY);
}

template <int MT, int U>
static cudaError_t launchGemvI4(dim3 grid, size_t smem, const LinearW& W, const void* x, int lda, int M, float* y, int ldy,
                                const ConvStep& ep, int hasEp, int ks, const NormIn& nin, bool hasNorm, int addToY, cudaStream_t s) {
  auto k = hasNorm ? gemvI4Kernel<MT, U, true> : gemvI4Kernel<MT, U, false>;
  if (smem > 48 * 1024)
    if (cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)) return e;
  return launch(k, grid, 256, smem, s, W, (const float*)x, lda, M, y, ldy, ep, hasEp, ks, nin, addToY);
}

// ---- 4-bit weights on tensor cores (decode) ------------------------------------------------------
// Tile order: word ((T * K/64 + G) * 32 + lane) * 4 + j holds, for row tile T (rows 16T..16T+15) and
// k tile t = 4G + j (inputs 16t..16t+15), the eight weights lane (g = lane / 4, c = lane % 4) holds in
// an m16n8k16 A fragment: nibble 0/4 = rows g, inputs 2c/2c+1; 1/5 = row g+8, same inputs; 2/6 = row
// g, inputs 2c+8/2c+9; 3/7 = row g+8, inputs 2c+8/2c+9. dequant8 then yields the fragment directly.
__host__ __device__ inline size_t i4PackedNibble(int K, int n, int k) {
  const int T = n >> 4, r = n & 15, t = k >> 4, kk = k & 15;
  const int hi = r >> 3, g = r & 7, upper = kk >> 3, c = (kk & 7) >> 1, second = kk & 1;
  const size_t word = (((size_t)T * (K / 64) + (t >> 2)) * 32 + g * 4 + c) * 4 + (t & 3);
  return word * 8 + hi + 2 * upper + 4 * second;
}

bool i4Packable(const LinearW& W) { return W.type == W_I4 && W.N % 16 == 0 && W.K % 64 == 0 && W.group % 64 == 0; }

__global__ void packI4Kernel(const uint8_t* __restrict__ in, int N, int K, uint32_t* __restrict__ out) {
  const size_t words = (size_t)N * K / 8;
  for (size_t w = blockIdx.x * (size_t)blockDim.x + threadIdx.x; w < words; w += (size_t)gridDim.x * blockDim.x) {
    const int j = w & 3, lane = (w >> 2) & 31;
    const size_t tg = w >> 7;
    const int G = (int)(tg % (K / 64)), T = (int)(tg / (K / 64));
    const int g = lane >> 2, c = lane & 3, t = 4 * G + j;
    uint32_t v = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
      const int hi = i & 1, upper = (i >> 1) & 1, second = i >> 2;
      const int n = 16 * T + g + 8 * hi, k = 16 * t + 2 * c + 8 * upper + second;
      const uint8_t byte = in[(size_t)n * (K / 2) + k / 2];
      v |= (uint32_t)((k & 1) ? byte >> 4 : byte & 15) << (4 * i);
    }
    out[w] = v;
  }
}

cudaError_t packI4(const LinearW& W, void* out, cudaStream_t s) {
  if (!i4Packable(W) || W.packed) return cudaErrorInvalidValue;
  packI4Kernel<<<1024, 256, 0, s>>>((const uint8_t*)W.w, W.N, W.K, (uint32_t*)out);
  return cudaGetLastError();
}

__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// One warp per 16-row tile and share of K: the P = ks * splits warps of a tile (ks in one block,
// `splits` blocks) take its groups of 64 inputs round robin, up to U at a time. Before pdlWait() a
// warp starts copying its weights and their scales into shared memory (cp.async: no registers hold
// the bytes in flight, so the whole grid fits on the GPU at once and streams in one wave). Inputs
// are read straight into B fragments (fp32 -> fp16; rows beyond M are zeros). Warps of a block add
// up in shared memory, blocks of a split tile through the workspace: the last to arrive finishes.
constexpr int I4T_U = 16;
__device__ __forceinline__ void cpAsync4(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src));
#endif
}
__device__ __forceinline__ void cpAsync16(void* dst, const void* src, bool ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src), "r"(ok ? 16 : 0));
#endif
}
__device__ __forceinline__ void cpAsyncCommit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>  // until at most N committed groups are still in flight
__device__ __forceinline__ void cpAsyncWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

template <bool NORM>
__global__ void __launch_bounds__(256, 4)
    gemvI4TcKernel(LinearW W, const float* __restrict__ x, int lda, int M, float* __restrict__ y, int ldy, ConvStep ep, int hasEp, int ks,
                   int splits, int U, NormIn nin, int addToY) {
  extern __shared__ uint4 wsm[];  // per warp: U groups × 32 lanes × 16 bytes, then U × 16 row scales
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int tb = blockIdx.x / splits, sp = blockIdx.x - tb * splits;
  const int T = tb * (8 / ks) + warp / ks, part = warp % ks;
  const int K = W.K, N = W.N, nG = K / 64, P = ks * splits, G0 = sp * ks + part;
  const bool live = 16 * T < N;
  const int g = lane >> 2, c = lane & 3;
  const int nS = K / W.group, gpg = W.group / 64;
  const uint4* wp = (const uint4*)W.w + (size_t)(live ? T : 0) * nG * 32 + lane;
  const float* srow = W.scale + (size_t)(live ? 16 * T + (lane & 15) : 0) * nS;  // lanes 0-15: scales of row 16T + lane
  uint4* mine = wsm + (size_t)warp * U * 36 + lane;
  float* ssm = (float*)(wsm + (size_t)warp * U * 36 + U * 32);  // (U, 16)
  auto loadW = [&](int Gb) {
#pragma unroll
    for (int u = 0; u < I4T_U; u++) {
      const int G = Gb + u * P;
      const bool ok = live && u < U && G < nG;
      if (u < U) cpAsync16(mine + u * 32, wp + (size_t)(ok ? G : 0) * 32, ok);
      if (ok && lane < 16) cpAsync4(ssm + u * 16 + lane, srow + G / gpg);
    }
  };
  loadW(G0);  // weights only: may overlap the previous kernel
  pdlWait();
  pdlRelease();

  const bool rowOk = g < M;
  float rn = 1.f;
  if constexpr (NORM) {
    float r[8];
    rowRms<8>(nin, M, K, lda, r);
#pragma unroll
    for (int m = 0; m < 8; m++)
      if (m == g) rn = r[m];
  }
  const float* xrow = (NORM ? nin.hidden : x) + (size_t)(rowOk ? g : 0) * lda + 2 * c;
  // inputs k and k + 1 of this lane's row as a B-fragment half2 (normalized when fused)
  auto in2 = [&](int k) -> uint32_t {
    if (!rowOk) return 0u;
    float2 v = __ldg((const float2*)(xrow + k));
    if constexpr (NORM) {
      const float2 w = __ldg((const float2*)(nin.w + 2 * c + k));
      v = make_float2(qdq(v.x * rn * w.x, nin.scale), qdq(v.y * rn * w.y, nin.scale));
    }
    const __half2 h = __floats2half2_rn(v.x, v.y);
    return *(const uint32_t*)&h;
  };

  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int Gb = G0; Gb < nG && live; Gb += P * U) {
    if (Gb != G0) {
      __syncwarp();  // every lane is done with the previous batch's scales
      loadW(Gb);
    }
    cpAsyncCommit();
    cpAsyncWait<0>();
    __syncwarp();  // the scales were copied by other lanes of the warp
#pragma unroll 2
    for (int u = 0; u < I4T_U; u++) {
      const int G = Gb + u * P;
      if (u >= U || G >= nG) break;
      uint32_t b[4][2];
#pragma unroll
      for (int j = 0; j < 4; j++) b[j][0] = in2(64 * G + 16 * j), b[j][1] = in2(64 * G + 16 * j + 8);
      const uint4 wq = mine[u * 32];
      const __half2 sc0 = __float2half2_rn(ssm[u * 16 + g]), sc1 = __float2half2_rn(ssm[u * 16 + g + 8]);
      const uint32_t* q = (const uint32_t*)&wq;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        __half2 d[4];
        dequant8(q[j], d);
        uint32_t a[4];
        const __half2 a0 = __hmul2(d[0], sc0), a1 = __hmul2(d[1], sc1), a2 = __hmul2(d[2], sc0), a3 = __hmul2(d[3], sc1);
        a[0] = *(const uint32_t*)&a0, a[1] = *(const uint32_t*)&a1, a[2] = *(const uint32_t*)&a2, a[3] = *(const uint32_t*)&a3;
        mma16816(acc, a, b[j][0], b[j][1]);
      }
    }
  }
  if (!live) {  // a warp past the last tile only zero-filled its slots: let those copies land
    cpAsyncCommit();
    cpAsyncWait<0>();
  }
  if (ks > 1) {
    __shared__ float red[8][4][32];
#pragma unroll
    for (int i = 0; i < 4; i++) red[warp][i][lane] = acc[i];
    __syncthreads();
    if (part != 0) return;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float sum = 0.f;
      for (int q = 0; q < ks; q++) sum += red[warp + q][i][lane];
      acc[i] = sum;
    }
  }
  if (!live) return;
  if (splits > 1) {
    float* partial = W.ws + ((size_t)T * splits + sp) * 128;
#pragma unroll
    for (int i = 0; i < 4; i++) partial[i * 32 + lane] = acc[i];
    __threadfence();
    unsigned arrived = 0;
    if (lane == 0) arrived = atomicAdd(W.wsCount + T, 1u);
    arrived = __shfl_sync(0xffffffffu, arrived, 0);
    if (arrived != (unsigned)splits - 1) return;
    __threadfence();
    const float* all = W.ws + (size_t)T * splits * 128;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float sum = 0.f;
      for (int q = 0; q < splits; q++) sum += __ldcg(all + q * 128 + i * 32 + lane);
      acc[i] = sum;
    }
    if (lane == 0) W.wsCount[T] = 0;  // ready for the next launch
  }
  // D fragment: acc[0..1] = rows g, batch 2c and 2c+1; acc[2..3] = row g + 8, same batch rows
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int m = 2 * c + (i & 1), n = 16 * T + g + 8 * (i >> 1);
    if (m < M && n < N) gemvOut(W, m, n, acc[i], y, ldy, ep, hasEp, addToY);
  }
}

// Multiprocessors of the current device, asked once, as the GEMV grids are planned for. MAMBA_EDGE_SMS=n
// plans them as if there were n (checking on a large GPU the grids a small one, such as the Orin
// Nano's 8, would run; the blocks still spread over every multiprocessor there is).
static int smCount() {
  static const int n = [] {
    if (const char* env = std::getenv("MAMBA_EDGE_SMS"); env && std::atoi(env) > 0) return std::atoi(env);
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev)) cudaGetLastError(), v = 16;
    return v;
  }();
  return n;
}

// One input row (batch 1, the latency-bound case) over the same tile order on CUDA cores. Each warp
// owns one 16-row tile and every P-th group of 64 inputs; P is chosen so that a warp has about
// I4R_U groups, and it loads their 16 bytes per lane, and one row scale per lane, into registers
// before pdlWait(): the step is one memory round trip with I4R_U × 512 bytes in flight per warp.
// The block then stages the input row once in shared memory as fp16, in the order the lanes read
// it: lane (g, c)'s word j holds rows g and g + 8 at inputs 2c, 2c + 1, 2c + 8, 2c + 9 of k tile j,
// so its eight input pairs of a group are 32 contiguous bytes. The row (and the norm's weights,
// before the wait) first arrive in shared memory by cp.async, every copy in flight at once and no
// register held: a load-convert-store loop waited once per pass. Products are added in fp16 two words
// at a time, then in fp32 per group scale; lanes of a row add up by shuffles, the P warps of a tile
// in shared memory: no workspace, no atomics, the same sums in the same order on every run.
constexpr int I4R_U = 8;
constexpr int I4R_MAXK = 8192;  // shared memory: the staged row (2K bytes), the raw row (4K) and the norm's (4K): 80 KB
template <bool NORM>
__global__ void __launch_bounds__(512) gemvI4RowKernel(LinearW W, const float* __restrict__ x, float* __restrict__ y, int ldy, ConvStep ep,
                                                       int hasEp, int P, NormIn nin, int addToY, float* __restrict__ ssOut) {
  extern __shared__ uint4 rowSm[];
  __half2* xs = (__half2*)rowSm;        // (K / 2) input pairs, in i4RowSlot order
  float* raw = (float*)(xs + W.K / 2);  // the input row as read (K floats), then the norm weights (K floats)
  __shared__ float red[16][16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int T = blockIdx.x * (blockDim.x / 32 / P) + warp / P, part = warp % P;
  const int K = W.K, N = W.N, nG = K / 64, nS = K / W.group, gpg = W.group / 64;
  const bool live = 16 * T < N;
  const int g = lane >> 2, c = lane & 3;
  const uint4* wp = (const uint4*)W.w + (size_t)(live ? T : 0) * nG * 32 + lane;
  const float* srow = W.scale + (size_t)(live ? 16 * T + (lane & 15) : 0) * nS;  // lane l: row 16T + l % 16
  uint4 wq[I4R_U];
  float sq[I4R_U];
  auto loadW = [&](int Gb) {
#pragma unroll
    for (int u = 0; u < I4R_U; u++) {
      const int G = Gb + u * P;
      const bool ok = live && G < nG;
      wq[u] = ok ? __ldg(wp + (size_t)G * 32) : make_uint4(0, 0, 0, 0);
      sq[u] = ok ? __ldg(srow + G / gpg) : 0.f;
    }
  };
  // 16 bytes per copy, round robin over the block
  auto stage = [&](float* dst, const float* src) {
    for (int i = threadIdx.x; i < K / 4; i += blockDim.x) cpAsync16(dst + 4 * i, src + 4 * i, true);
  };
  loadW(part);  // weights only: may overlap the previous kernel
  if constexpr (NORM) stage(raw + K, nin.w);
  if (hasEp && live && part == 0 && c == 0) prefetchConvStep(ep, 0, 16 * T + g), prefetchConvStep(ep, 0, 16 * T + g + 8);
  pdlWait();
  pdlRelease();
  stage(raw, NORM ? nin.hidden : x);
  cpAsyncCommit();

  float rn = 1.f;  // (its loads overlap the copies)
  if constexpr (NORM) {
    if (nin.part) {  // the producer's partial sums: one short sum per block instead of the row's
      rn = partRms(nin, K);
    } else {
      float r[1];
      rowRms<1>(nin, 1, K, K, r);
      rn = r[0];
    }
  }
  cpAsyncWait<0>();
  __syncthreads();
  for (int k = 2 * threadIdx.x; k < K; k += 2 * blockDim.x) {
    float2 v = *(const float2*)(raw + k);
    if constexpr (NORM) {
      const float2 w = *(const float2*)(raw + K + k);
      v = make_float2(qdq(v.x * rn * w.x, nin.scale), qdq(v.y * rn * w.y, nin.scale));
    }
    xs[i4RowSlot(k)] = __floats2half2_rn(v.x, v.y);
  }
  __syncthreads();

  float a0 = 0.f, a1 = 0.f;  // rows 16T + g and 16T + g + 8
  for (int Gb = part; Gb < nG && live; Gb += P * I4R_U) {
    if (Gb != part) loadW(Gb);
#pragma unroll
    for (int u = 0; u < I4R_U; u++) {
      const int G = Gb + u * P;
      if (G >= nG) break;
      const float s0 = __shfl_sync(0xffffffffu, sq[u], g), s1 = __shfl_sync(0xffffffffu, sq[u], g + 8);
      const uint4* xp = (const uint4*)(xs + (G * 4 + c) * 8);
      const uint4 xv[2] = {xp[0], xp[1]};
      const __half2* xh = (const __half2*)xv;  // (lo, hi) pairs of k tiles 0..3
      const uint32_t* q = (const uint32_t*)&wq[u];
      float p0 = 0.f, p1 = 0.f;
#pragma unroll
      for (int jj = 0; jj < 4; jj += 2) {
        __half2 h0 = __float2half2_rn(0.f), h1 = h0;
#pragma unroll
        for (int j = jj; j < jj + 2; j++) {
          __half2 d[4];
          dequant8(q[j], d);
          h0 = __hfma2(d[0], xh[2 * j], h0), h0 = __hfma2(d[2], xh[2 * j + 1], h0);
          h1 = __hfma2(d[1], xh[2 * j], h1), h1 = __hfma2(d[3], xh[2 * j + 1], h1);
        }
        const float2 f0 = __half22float2(h0), f1 = __half22float2(h1);
        p0 += f0.x + f0.y, p1 += f1.x + f1.y;
      }
      a0 += p0 * s0, a1 += p1 * s1;
    }
  }
#pragma unroll
  for (int o = 1; o < 4; o <<= 1) a0 += __shfl_xor_sync(0xffffffffu, a0, o), a1 += __shfl_xor_sync(0xffffffffu, a1, o);
  if (P > 1) {
    if (c == 0) red[warp][g] = a0, red[warp][g + 8] = a1;
    __syncthreads();
    a0 = a1 = 0.f;
    if (part == 0)
      for (int q = 0; q < P; q++) a0 += red[warp + q][g], a1 += red[warp + q][g + 8];
  }
  if (ssOut) {  // y += result, and this block's share of the new row's sum of squares
    float sq = 0.f;
    if (live && part == 0 && c == 0) {
      float* y0 = y + 16 * T + g;
      const float b0 = W.bias ? __ldg(W.bias + 16 * T + g) : 0.f, b1 = W.bias ? __ldg(W.bias + 16 * T + g + 8) : 0.f;
      const float h0 = y0[0] + a0 + b0, h1 = y0[8] + a1 + b1;
      y0[0] = h0, y0[8] = h1;
      sq = h0 * h0 + h1 * h1;
    }
    sumSquaresOut(sq, ssOut);  // every thread of the block is still here
    return;
  }
  if (!live || c != 0 || part != 0) return;
  gemvOut(W, 0, 16 * T + g, a0, y, ldy, ep, hasEp, addToY);
  gemvOut(W, 0, 16 * T + g + 8, a1, y, ldy, ep, hasEp, addToY);
}

// The grid: P warps per 16-row tile (each summing every P-th group of 64 inputs) and tpb tiles per
// block. First guess: P such that each warp has at most I4R_U groups, and more (down to two groups
// each, at most 16) while the grid has fewer than 16 warps per multiprocessor: small matrices are
// bound by latency, so they want many short warps; as many tiles per block as keep it within 256
// threads (one tile, up to 512, where P > 8). That grid stands if it runs in one wave. If it does not
// (the occupancy API says how many blocks stay resident, so registers and shared memory count, on any
// GPU), a block left for a second wave pays the row staging and a memory round trip again, where a
// warp's second pass over its groups pays one more round trip: then the grid of the fewest
// 2 × waves + passes is taken, with the most warps at work, at least two groups each and at most 12
// per tile, then blocks of about 8 warps (the sweep behind this rule: docs/cuda-performance.md).
struct I4RowGrid {
  int P, tpb;
  unsigned blocks;
};
static I4RowGrid i4RowGridOf(int tiles, int P, int tpb) { return {P, tpb, (unsigned)((tiles + tpb - 1) / tpb)}; }
static int gI4RowP = 0, gI4RowTpb = 0;  // setI4RowGrid's override (0: the rule above)
void setI4RowGrid(int P, int tpb) { gI4RowP = P, gI4RowTpb = tpb; }
static auto i4RowKernel(bool norm) { return norm ? gemvI4RowKernel<true> : gemvI4RowKernel<false>; }
static cudaError_t i4RowAllowSmem(bool norm, size_t smem) {  // with its static shared memory above the 48 KB that needs no opt-in
  return smem > 40 * 1024 ? cudaFuncSetAttribute(i4RowKernel(norm), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) : cudaSuccess;
}
static size_t i4RowSmem(int K, bool norm) { return (size_t)K * (norm ? 10 : 6); }  // staged fp16 row, raw row (and norm weights)
static int i4RowResident(bool norm, int threads, int K) {                          // blocks per multiprocessor
  int n = 0;
  const size_t smem = i4RowSmem(K, norm);
  if (i4RowAllowSmem(norm, smem) || cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, i4RowKernel(norm), threads, smem))
    cudaGetLastError(), n = 0;
  return std::max(n, 1);
}
static I4RowGrid i4RowSearch(int N, int K, bool norm) {
  const int tiles = N / 16, nG = K / 64;
  const long long sms = smCount();
  auto waves = [&](int P, int tpb) {
    const long long resident = sms * i4RowResident(norm, 32 * P * tpb, K);
    return (i4RowGridOf(tiles, P, tpb).blocks + resident - 1) / resident;
  };
  int P = std::min(16, (nG + I4R_U - 1) / I4R_U);
  while ((long long)tiles * P < 16LL * sms && 2 * P <= nG / 2 && 2 * P <= 16) P *= 2;
  int tpb = std::max(1, 8 / P);
  if (waves(P, tpb) <= 1) return i4RowGridOf(tiles, P, tpb);
  long long bestCost = -1;
  for (int p = 1; p <= std::min(12, std::max(1, nG / 2)); p++)
    for (int t = 1; p * t <= 16 && t <= tiles; t++) {
      const long long passes = ((nG + p - 1) / p + I4R_U - 1) / I4R_U, cost = 2 * waves(p, t) + passes;
      if (bestCost < 0 || cost < bestCost || (cost == bestCost && (p > P || (p == P && std::abs(t - 8 / p) < std::abs(tpb - 8 / p)))))
        P = p, tpb = t, bestCost = cost;
    }
  return i4RowGridOf(tiles, P, tpb);
}
static I4RowGrid i4RowGrid(int N, int K, bool norm) {  // the search above, once per shape
  const int tiles = N / 16, nG = K / 64;
  if (gI4RowP > 0 && gI4RowTpb > 0) {
    const int P = std::min(gI4RowP, nG), tpb = std::max(1, std::min(gI4RowTpb, 16 / P));
    return i4RowGridOf(tiles, P, tpb);
  }
  static std::mutex mu;
  static std::map<std::tuple<int, int, bool>, I4RowGrid> known;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(N, K, norm);
  if (auto it = known.find(key); it != known.end()) return it->second;
  return known[key] = i4RowSearch(N, K, norm);
}
void i4RowPlan(int N, int K, bool norm, int* P, int* tpb, int* blocks, int* resident) {
  const I4RowGrid g = i4RowGrid(N, K, norm);
  *P = g.P, *tpb = g.tpb, *blocks = (int)g.blocks, *resident = i4RowResident(norm, 32 * g.P * g.tpb, K);
}
static bool i4RowFits(const LinearW& W) { return W.type == W_I4 && W.packed && W.K <= I4R_MAXK; }
template <int WT>
static GemvGrid gemvGrid(const LinearW& W);
int gemvSumSquaresParts(const LinearW& W, bool norm) {
  const unsigned b = W.type == W_F16  ? gemvGrid<W_F16>(W).blocks
                     : W.type == W_I8 ? gemvGrid<W_I8>(W).blocks
                     : i4RowFits(W)   ? i4RowGrid(W.N, W.K, norm).blocks
                                      : 0;
  return b <= (unsigned)GEMV_SS_PARTS ? (int)b : 0;
}
// (the row-major CUDA-core 4-bit kernel would take the norm, but it recomputes it anyway)
bool gemvTakesPartialNorm(const LinearW& W) { return W.type == W_F16 || W.type == W_I8 || i4RowFits(W); }

static cudaError_t launchGemvI4Row(const LinearW& W, const void* x, float* y, int ldy, const ConvStep& ep, int hasEp, const NormIn& nin,
                                   bool hasNorm, int addToY, float* ssOut, cudaStream_t s) {
  const I4RowGrid gr = i4RowGrid(W.N, W.K, hasNorm);
  const size_t smem = i4RowSmem(W.K, hasNorm);
  if (cudaError_t e = i4RowAllowSmem(hasNorm, smem)) return e;
  auto k = i4RowKernel(hasNorm);
  return launch(k, dim3(gr.blocks), 32 * gr.P * gr.tpb, smem, s, W, (const float*)x, y, ldy, ep, hasEp, gr.P, nin, addToY, ssOut);
}

// P warps per tile (a power of two): as many as keep at least two groups of 64 inputs per warp
// while the whole grid stays resident (4 blocks per multiprocessor); at most 8 in one block, more
// only with a workspace
static cudaError_t launchGemvI4Tc(const LinearW& W, const void* x, int lda, int M, float* y, int ldy, const ConvStep& ep, int hasEp,
                                  const NormIn& nin, bool hasNorm, int addToY, cudaStream_t s) {
  const int sms = smCount();
  const int tiles = W.N / 16, nG = W.K / 64;
  const bool canSplit = W.ws && W.wsCount && tiles <= GEMV_WS_TILES;
  auto blocks = [&](long long p) { return (tiles + 8 / std::min(p, 8LL) - 1) / (8 / std::min(p, 8LL)) * std::max(p / 8, 1LL); };
  int P = 1;
  while (2 * P <= nG / 2 && blocks(2 * P) <= 4LL * sms &&
         (2 * P <= 8 || (canSplit && (long long)tiles * 2 * P / 8 * 128 <= GEMV_WS_FLOATS)))
    P *= 2;
  const int ks = P < 8 ? P : 8, splits = P / ks;
  const int U = std::min(I4T_U, (nG + P - 1) / P);
  const size_t smem = (size_t)8 * U * 36 * sizeof(uint4);
  auto k = hasNorm ? gemvI4TcKernel<true> : gemvI4TcKernel<false>;
  if (smem > 40 * 1024)  // with its static shared memory above the 48 KB that needs no opt-in
    if (cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)) return e;
  return launch(k, dim3((unsigned)blocks(P)), 256, smem, s, W, (const float*)x, lda, M, y, ldy, ep, hasEp, ks, splits, U, nin, addToY);
}

template <int WT, int MT>
static cudaError_t launchGemvMT(dim3 grid, const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy,
                                const ConvStep& ep, int hasEp, int ks, const NormIn& nin, bool hasNorm, int addToY, float* ssOut,
                                cudaStream_t s) {
  if (hasNorm) return launch(gemvKernel<WT, MT, true>, grid, 256, 0, s, W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, addToY, ssOut);
  return launch(gemvKernel<WT, MT, false>, grid, 256, 0, s, W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, addToY, ssOut);
}

template <int WT>
static GemvGrid gemvGrid(const LinearW& W) {
  const int rw = WT == W_I4 ? I4_RW : GEMV_RW;
  const long long warps = (W.N + rw - 1) / rw;
  const int nIt = (W.K + 32 * Epl<WT>::v - 1) / (32 * Epl<WT>::v);
  int ks = 1;
  while (ks < 8 && 2 * ks <= nIt && warps * ks < 4096) ks *= 2;  // small matrices: split K so enough warps stream
  const long long perBlock = 8 / ks;
  return {ks, (unsigned)((warps + perBlock - 1) / perBlock)};
}

template <int WT>
static cudaError_t launchGemv(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, const ConvStep& ep,
                              int hasEp, const NormIn& nin, bool hasNorm, int addToY, float* ssOut, cudaStream_t s) {
  const int nIt = (W.K + 32 * Epl<WT>::v - 1) / (32 * Epl<WT>::v);
  const GemvGrid gg = gemvGrid<WT>(W);
  const int ks = gg.ks;
  dim3 grid(gg.blocks);
  if constexpr (WT == W_I4) {
    if (M == 1 && i4RowFits(W)) return launchGemvI4Row(W, x, y, ldy, ep, hasEp, nin, hasNorm, addToY, ssOut, s);
    if (W.packed) return launchGemvI4Tc(W, x, lda, M, y, ldy, ep, hasEp, nin, hasNorm, addToY, s);
    const size_t smem = (size_t)M * W.K * 2;
    const int steps = (nIt + ks - 1) / ks;  // per warp
    if (M <= 1) {
      if (steps <= 1) return launchGemvI4<1, 1>(grid, smem, W, x, lda, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, s);
      if (steps <= 2) return launchGemvI4<1, 2>(grid, smem, W, x, lda, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, s);
      if (steps <= 3) return launchGemvI4<1, 3>(grid, smem, W, x, lda, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, s);
      return launchGemvI4<1, 4>(grid, smem, W, x, lda, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, s);
    }
    if (M <= 2) return launchGemvI4<2, 1>(grid, smem, W, x, lda, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, s);
    if (M <= 4) return launchGemvI4<4, 1>(grid, smem, W, x, lda, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, s);
    return launchGemvI4<8, 1>(grid, smem, W, x, lda, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, s);
  } else {
    if (M <= 1) return launchGemvMT<WT, 1>(grid, W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, ssOut, s);
    if (M <= 2) return launchGemvMT<WT, 2>(grid, W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, ssOut, s);
    if (M <= 4) return launchGemvMT<WT, 4>(grid, W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, ssOut, s);
    return launchGemvMT<WT, 8>(grid, W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY, ssOut, s);
  }
}

static cudaError_t checkShape(const LinearW& W) {
  const int epl = W.type == W_F16 ? 8 : W.type == W_I8 ? 16 : 32;
  if (W.K % epl != 0) return cudaErrorInvalidValue;
  if (W.type == W_I4 && (W.group % 32 != 0 || W.K % W.group != 0)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

cudaError_t gemv(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, const ConvStep* ep, cudaStream_t s,
                 const NormIn* norm, int addToY, float* ssOut) {
  if (cudaError_t e = checkShape(W)) return e;
  if (ssOut && (M != 1 || !addToY || ep || gemvSumSquaresParts(W, norm != nullptr) == 0)) return cudaErrorInvalidValue;
  const size_t xElem = W.type == W_I8 ? 1 : 4;
  // the CUDA-core 4-bit kernel stages its input rows in shared memory (2 bytes per input): at most 96 KB
  const int mt = W.type == W_I4 && !W.packed ? (int)std::min<long long>(GEMV_MT, 98304 / (2LL * W.K)) : GEMV_MT;
  if (mt < 1) return cudaErrorInvalidValue;
  for (int m0 = 0; m0 < M; m0 += mt) {
    const int mc = M - m0 < mt ? M - m0 : mt;
    ConvStep e{};
    if (ep) {
      e = *ep;
      e.slots += m0;
      e.xc += (size_t)m0 * e.ldxc;
      if (e.xq) e.xq += (size_t)m0 * e.ldxq;
    }
    NormIn nin{};
    if (norm) {
      nin = *norm;
      nin.hidden += (size_t)m0 * lda;
    }
    const void* xm = (const uint8_t*)x + (size_t)m0 * lda * xElem;
    float* ym = y ? y + (size_t)m0 * ldy : nullptr;
    cudaError_t err;
    if (W.type == W_F16)
      err = launchGemv<W_F16>(W, xm, lda, xScale, mc, ym, ldy, e, ep != nullptr, nin, norm != nullptr, addToY, ssOut, s);
    else if (W.type == W_I8)
      err = launchGemv<W_I8>(W, xm, lda, xScale, mc, ym, ldy, e, ep != nullptr, nin, norm != nullptr, addToY, ssOut, s);
    else
      err = launchGemv<W_I4>(W, xm, lda, xScale, mc, ym, ldy, e, ep != nullptr, nin, norm != nullptr, addToY, ssOut, s);
    if (err) return err;
  }
  return cudaGetLastError();
}

// ---- tensor-core GEMM (prefill) -------------------------------------------------------------------
using namespace nvcuda;
constexpr int BM = 64, BN = 64, BK = 32;

// One 16-deep slice of a warp's 32 x 32 tile: its 2 x 2 fragments from A rows at a (row stride lda)
// and B columns at b (stride ldb), for int8 (int32 accumulators) and fp16 (fp32) alike.
template <class T, class Acc>
__device__ __forceinline__ void warpMma(wmma::fragment<wmma::accumulator, 16, 16, 16, Acc> (&c)[2][2], const T* a, int lda, const T* b,
                                        int ldb) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
  for (int i = 0; i < 2; i++) wmma::load_matrix_sync(fa[i], a + 16 * i * lda, lda);
#pragma unroll
  for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], b + 16 * j * ldb, ldb);
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) wmma::mma_sync(c[i][j], fa[i], fb[j], c[i][j]);
}
// the warp's 32 x 32 accumulators into the block's output tile (row stride BN + 4) at cs
template <class Acc>
__device__ __forceinline__ void storeTile(wmma::fragment<wmma::accumulator, 16, 16, 16, Acc> (&c)[2][2], Acc* cs) {
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) wmma::store_matrix_sync(cs + 16 * i * (BN + 4) + 16 * j, c[i][j], BN + 4, wmma::mem_row_major);
}

template <int WT>
__global__ void __launch_bounds__(128)
    gemmKernel(LinearW W, const void* __restrict__ xv, int lda, float xScale, int M, float* __restrict__ y, int ldy) {
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  const int K = W.K;
  __shared__ __align__(32) float Cs[BM][BN + 4];
  if constexpr (WT == W_I8) {
    __shared__ __align__(32) int8_t As[BK / 16][BM][32];
    __shared__ __align__(32) int8_t Bs[BK / 16][BN][32];
    wmma::fragment<wmma::accumulator, 16, 16, 16, int> c[2][2];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::fill_fragment(c[i][j], 0);
    const int8_t* x = (const int8_t*)xv;
    const int8_t* w = (const int8_t*)W.w;
    for (int k0 = 0; k0 < K; k0 += BK) {
      for (int i = tid; i < BM * BK; i += 128) {
        const int r = i / BK, kk = i % BK, gk = k0 + kk;
        As[kk / 16][r][kk % 16] = (m0 + r < M && gk < K) ? x[(size_t)(m0 + r) * lda + gk] : 0;
        Bs[kk / 16][r][kk % 16] = (n0 + r < W.N && gk < K) ? w[(size_t)(n0 + r) * K + gk] : 0;
      }
      __syncthreads();
#pragma unroll
      for (int ks = 0; ks < BK / 16; ks++) warpMma(c, &As[ks][wm][0], 32, &Bs[ks][wn][0], 32);
      __syncthreads();
    }
    storeTile(c, (int*)&Cs[wm][wn]);
    __syncthreads();
    for (int i = tid; i < BM * BN; i += 128) {
      const int r = i / BN, cc = i % BN, gm = m0 + r, gn = n0 + cc;
      if (gm < M && gn < W.N) {
        float v = (float)((int*)&Cs[r][0])[cc] * xScale * W.scale[gn];
        if (W.bias) v += W.bias[gn];
        y[(size_t)gm * ldy + gn] = v;
      }
    }
  } else {
    __shared__ __align__(32) __half As[BM][BK + 8];
    __shared__ __align__(32) __half Bs[BN][BK + 8];
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[2][2];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::fill_fragment(c[i][j], 0.f);
    const float* x = (const float*)xv;
    const int nG = WT == W_I4 ? K / W.group : 1;
    for (int k0 = 0; k0 < K; k0 += BK) {
      for (int i = tid; i < BM * BK; i += 128) {
        const int r = i / BK, kk = i % BK, gk = k0 + kk;
        As[r][kk] = __float2half((m0 + r < M && gk < K) ? x[(size_t)(m0 + r) * lda + gk] : 0.f);
        const int gn = n0 + r;
        __half wv = __float2half(0.f);
        if (gn < W.N && gk < K) {
          if constexpr (WT == W_F16) {
            wv = ((const __half*)W.w)[(size_t)gn * K + gk];
          } else {
            int q;
            if (W.packed) {
              const size_t nib = i4PackedNibble(K, gn, gk);
              q = (int)((((const uint32_t*)W.w)[nib >> 3] >> (4 * (nib & 7))) & 15u) - 8;
            } else {
              const uint8_t byte = ((const uint8_t*)W.w)[(size_t)gn * (K / 2) + gk / 2];
              q = ((gk & 1) ? (byte >> 4) : (byte & 15)) - 8;
            }
            wv = __float2half((float)q * W.scale[(size_t)gn * nG + gk / W.group]);
          }
        }
        Bs[r][kk] = wv;
      }
      __syncthreads();
#pragma unroll
      for (int ks = 0; ks < BK / 16; ks++) warpMma(c, &As[wm][16 * ks], BK + 8, &Bs[wn][16 * ks], BK + 8);
      __syncthreads();
    }
    storeTile(c, &Cs[wm][wn]);
    __syncthreads();
    for (int i = tid; i < BM * BN; i += 128) {
      const int r = i / BN, cc = i % BN, gm = m0 + r, gn = n0 + cc;
      if (gm < M && gn < W.N) {
        float v = Cs[r][cc];
        if (W.bias) v += W.bias[gn];
        y[(size_t)gm * ldy + gn] = v;
      }
    }
  }
}

cudaError_t gemm(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, cudaStream_t s) {
  if (W.type == W_I4 && (W.group % 32 != 0 || W.K % W.group != 0 || W.K % 2 != 0)) return cudaErrorInvalidValue;
  dim3 grid((W.N + BN - 1) / BN, (M + BM - 1) / BM);
  if (W.type == W_F16)
    gemmKernel<W_F16><<<grid, 128, 0, s>>>(W, x, lda, xScale, M, y, ldy);
  else if (W.type == W_I8)
    gemmKernel<W_I8><<<grid, 128, 0, s>>>(W, x, lda, xScale, M, y, ldy);
  else
    gemmKernel<W_I4><<<grid, 128, 0, s>>>(W, x, lda, xScale, M, y, ldy);
  return cudaGetLastError();
}

cudaError_t linear(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, cudaStream_t s) {
  // the GEMV's vector loads need K a multiple of its lane width; the GEMM takes any K
  if (M <= GEMV_MT && checkShape(W) == cudaSuccess) return gemv(W, x, lda, xScale, M, y, ldy, nullptr, s);
  return gemm(W, x, lda, xScale, M, y, ldy, s);
}

}  // namespace me
