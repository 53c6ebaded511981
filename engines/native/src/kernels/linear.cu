// Linear layers. Decode: a bandwidth-bound GEMV, one warp (or a few, splitting K) per output row,
// 16-byte weight loads, several in flight, up to 8 activation rows per pass (int8: dp4a with int32
// accumulation; 4-bit: dequantized in registers, one scale per group). Prefill: a tensor-core GEMM
// (WMMA: fp16 x fp16 -> fp32, or int8 x int8 -> int32), 4-bit weights dequantized to fp16 tiles.
#include <mma.h>
#include "common.cuh"
#include "kernels.cuh"

namespace me {

template <int WT> struct Epl;
template <> struct Epl<W_F16> { static constexpr int v = 8; };
template <> struct Epl<W_I8> { static constexpr int v = 16; };
template <> struct Epl<W_I4> { static constexpr int v = 32; };

constexpr int GEMV_MT = 8;  // activation rows per pass

// rows per warp: activations loaded once serve RW weight rows
template <int WT> struct Rw { static constexpr int v = 2; };
template <> struct Rw<W_I4> { static constexpr int v = 4; };

template <int WT>
__device__ __forceinline__ size_t byteOff(int k) { return WT == W_F16 ? (size_t)k * 2 : WT == W_I8 ? (size_t)k : (size_t)k / 2; }

// four normalized inputs (h * r * w, fake-quantized when s > 0)
__device__ __forceinline__ float4 normed4(const NormIn& n, const float* hrow, int k, float r, float s) {
  const float4 h = __ldg((const float4*)(hrow + k)), w = __ldg((const float4*)(n.w + k));
  return make_float4(qdq(h.x * r * w.x, s), qdq(h.y * r * w.y, s), qdq(h.z * r * w.z, s), qdq(h.w * r * w.w, s));
}
__device__ __forceinline__ uint32_t pack4(float4 v, float s) {
  return (uint32_t)(quant8(v.x, s) & 0xff) | ((uint32_t)(quant8(v.y, s) & 0xff) << 8) | ((uint32_t)(quant8(v.z, s) & 0xff) << 16) |
         ((uint32_t)(quant8(v.w, s) & 0xff) << 24);
}

template <int WT, int MT>
__global__ void __launch_bounds__(256) gemvKernel(LinearW W, const void* __restrict__ xv, int lda, float xScale, int M, float* __restrict__ y,
                                                  int ldy, ConvStep ep, int hasEp, int ks, NormIn nin, int hasNorm, int addToY) {
  constexpr int EPL = Epl<WT>::v;
  constexpr int CH = 32 * EPL;
  constexpr int RW = Rw<WT>::v;
  constexpr int U = 2;  // iterations whose weight loads are in flight together
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * (8 / ks) + warp / ks) * RW;
  const int part = warp % ks;
  const int K = W.K, N = W.N;
  float acc[MT][RW];
  int iacc[MT][RW];
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int r = 0; r < RW; r++) acc[m][r] = 0.f, iacc[m][r] = 0;
  float rn[MT];  // 1 / rms of each input row (fused norm)
  if (hasNorm) {
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
  const float fs = WT == W_I8 ? 0.f : nin.scale;  // float inputs: fake quantization in normed4

  if (n0 < N) {
    const int nIt = (K + CH - 1) / CH;
    const size_t rowBytes = byteOff<WT>(K);
    const uint8_t* wbase = (const uint8_t*)W.w + (size_t)n0 * rowBytes;
    for (int it0 = part; it0 < nIt; it0 += ks * U) {
      uint4 wq[U][RW];
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int it = it0 + u * ks;
        const int k = it * CH + lane * EPL;
        const bool ok = it < nIt && k < K;
#pragma unroll
        for (int r = 0; r < RW; r++)
          wq[u][r] = ok && n0 + r < N ? __ldg((const uint4*)(wbase + r * rowBytes + byteOff<WT>(k))) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int it = it0 + u * ks;
        const int k = it * CH + lane * EPL;
        if (!(it < nIt && k < K)) continue;
        if constexpr (WT == W_F16) {
#pragma unroll
          for (int m = 0; m < MT; m++) {
            if (m >= M) break;
            const float4* xp = (const float4*)((const float*)xv + (size_t)m * lda + k);
            float4 a, b;
            if (hasNorm) {
              const float* hrow = nin.hidden + (size_t)m * lda;
              a = normed4(nin, hrow, k, rn[m], fs), b = normed4(nin, hrow, k + 4, rn[m], fs);
            } else {
              a = __ldg(xp), b = __ldg(xp + 1);
            }
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
            if (hasNorm) {
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
        } else {
          float sc[RW];
#pragma unroll
          for (int r = 0; r < RW; r++) sc[r] = n0 + r < N ? __ldg(W.scale + (size_t)(n0 + r) * (K / W.group) + k / W.group) : 0.f;
#pragma unroll
          for (int m = 0; m < MT; m++) {
            if (m >= M) break;
            const float4* xp = (const float4*)((const float*)xv + (size_t)m * lda + k);
            float xr[32];
#pragma unroll
            for (int j = 0; j < 8; j++) {
              const float4 a = hasNorm ? normed4(nin, nin.hidden + (size_t)m * lda, k + 4 * j, rn[m], fs) : __ldg(xp + j);
              xr[4 * j] = a.x, xr[4 * j + 1] = a.y, xr[4 * j + 2] = a.z, xr[4 * j + 3] = a.w;
            }
#pragma unroll
            for (int r = 0; r < RW; r++) {
              const uint32_t* q = (const uint32_t*)&wq[u][r];
              float p = 0.f;
#pragma unroll
              for (int j = 0; j < 4; j++)
#pragma unroll
                for (int i = 0; i < 8; i++)  // nibble - 8 as float through the 2^23 trick
                  p += (__int_as_float(0x4B000000 | ((q[j] >> (4 * i)) & 15u)) - 8388616.f) * xr[8 * j + i];
              acc[m][r] += p * sc[r];
            }
          }
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int r = 0; r < RW; r++) {
      if constexpr (WT == W_I8) acc[m][r] = (float)iacc[m][r];  // exact below 2^24 per lane
      acc[m][r] = warpSum(acc[m][r]);
    }
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
  // lane (m * RW + r) finishes output (m, n0 + r)
  const int m = lane / RW, r = lane % RW, n = n0 + r;
  if (part != 0 || lane >= MT * RW || m >= M || n >= N) return;
  float v = 0.f;
#pragma unroll
  for (int mm = 0; mm < MT; mm++)
#pragma unroll
    for (int rr = 0; rr < RW; rr++)
      if (mm * RW + rr == lane) v = acc[mm][rr];
  if constexpr (WT == W_I8) v *= __ldg(W.scale + n) * xScale;
  if (W.bias) v += __ldg(W.bias + n);
  if (hasEp && n >= ep.c0 && n < ep.c0 + ep.C) {
    const int c = n - ep.c0;
    float* st = ep.states + (long long)ep.slots[m] * ep.slotStride + (size_t)c * (ep.K - 1);
    float o = convStepOne(v, ep.w + (size_t)c * ep.K, ep.b ? ep.b[c] : 0.f, st, ep.K);
    if (ep.xq) ep.xq[(size_t)m * ep.ldxq + c] = (int8_t)quant8(o, ep.xqScale);
    if (ep.qscale) o = qdq(o, ep.qscale[c]);
    ep.xc[(size_t)m * ep.ldxc + c] = o;
  } else if (addToY) {
    y[(size_t)m * ldy + n] += v;
  } else {
    y[(size_t)m * ldy + n] = v;
  }
}

template <int WT>
static void launchGemv(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, const ConvStep& ep, int hasEp, const NormIn& nin,
                       int hasNorm, int addToY, cudaStream_t s) {
  constexpr int RW = Rw<WT>::v;
  const long long warps = (W.N + RW - 1) / RW;
  int ks = 1;
  while (ks < 8 && warps * ks < 4096) ks *= 2;  // small matrices: split K so enough warps stream
  const long long perBlock = 8 / ks;
  dim3 grid((unsigned)((warps + perBlock - 1) / perBlock));
  if (M <= 1) gemvKernel<WT, 1><<<grid, 256, 0, s>>>(W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY);
  else if (M <= 2) gemvKernel<WT, 2><<<grid, 256, 0, s>>>(W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY);
  else if (M <= 4) gemvKernel<WT, 4><<<grid, 256, 0, s>>>(W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY);
  else gemvKernel<WT, 8><<<grid, 256, 0, s>>>(W, x, lda, xScale, M, y, ldy, ep, hasEp, ks, nin, hasNorm, addToY);
}

static cudaError_t checkShape(const LinearW& W) {
  const int epl = W.type == W_F16 ? 8 : W.type == W_I8 ? 16 : 32;
  if (W.K % epl != 0) return cudaErrorInvalidValue;
  if (W.type == W_I4 && (W.group % 32 != 0 || W.K % W.group != 0)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

cudaError_t gemv(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, const ConvStep* ep, cudaStream_t s,
                 const NormIn* norm, int addToY) {
  if (cudaError_t e = checkShape(W)) return e;
  const size_t xElem = W.type == W_I8 ? 1 : 4;
  for (int m0 = 0; m0 < M; m0 += GEMV_MT) {
    const int mc = M - m0 < GEMV_MT ? M - m0 : GEMV_MT;
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
    if (W.type == W_F16) launchGemv<W_F16>(W, xm, lda, xScale, mc, ym, ldy, e, ep != nullptr, nin, norm != nullptr, addToY, s);
    else if (W.type == W_I8) launchGemv<W_I8>(W, xm, lda, xScale, mc, ym, ldy, e, ep != nullptr, nin, norm != nullptr, addToY, s);
    else launchGemv<W_I4>(W, xm, lda, xScale, mc, ym, ldy, e, ep != nullptr, nin, norm != nullptr, addToY, s);
  }
  return cudaGetLastError();
}

// ---- tensor-core GEMM (prefill) -------------------------------------------------------------------
using namespace nvcuda;
constexpr int BM = 64, BN = 64, BK = 32;

template <int WT>
__global__ void __launch_bounds__(128) gemmKernel(LinearW W, const void* __restrict__ xv, int lda, float xScale, int M, float* __restrict__ y, int ldy) {
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
      for (int ks = 0; ks < BK / 16; ks++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> a[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> b[2];
#pragma unroll
        for (int i = 0; i < 2; i++) wmma::load_matrix_sync(a[i], &As[ks][wm + 16 * i][0], 32);
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], &Bs[ks][wn + 16 * j][0], 32);
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
          for (int j = 0; j < 2; j++) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::store_matrix_sync((int*)&Cs[wm + 16 * i][wn + 16 * j], c[i][j], BN + 4, wmma::mem_row_major);
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
            const uint8_t byte = ((const uint8_t*)W.w)[(size_t)gn * (K / 2) + gk / 2];
            const int q = ((gk & 1) ? (byte >> 4) : (byte & 15)) - 8;
            wv = __float2half((float)q * W.scale[(size_t)gn * nG + gk / W.group]);
          }
        }
        Bs[r][kk] = wv;
      }
      __syncthreads();
#pragma unroll
      for (int ks = 0; ks < BK / 16; ks++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[2];
#pragma unroll
        for (int i = 0; i < 2; i++) wmma::load_matrix_sync(a[i], &As[wm + 16 * i][16 * ks], BK + 8);
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], &Bs[wn + 16 * j][16 * ks], BK + 8);
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
          for (int j = 0; j < 2; j++) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::store_matrix_sync(&Cs[wm + 16 * i][wn + 16 * j], c[i][j], BN + 4, wmma::mem_row_major);
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
  if (W.type == W_F16) gemmKernel<W_F16><<<grid, 128, 0, s>>>(W, x, lda, xScale, M, y, ldy);
  else if (W.type == W_I8) gemmKernel<W_I8><<<grid, 128, 0, s>>>(W, x, lda, xScale, M, y, ldy);
  else gemmKernel<W_I4><<<grid, 128, 0, s>>>(W, x, lda, xScale, M, y, ldy);
  return cudaGetLastError();
}

cudaError_t linear(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, cudaStream_t s) {
  // the GEMV's vector loads need K a multiple of its lane width; the GEMM takes any K
  if (M <= GEMV_MT && checkShape(W) == cudaSuccess) return gemv(W, x, lda, xScale, M, y, ldy, nullptr, s);
  return gemm(W, x, lda, xScale, M, y, ldy, s);
}

}  // namespace me
