// Row kernels: residual add + RMSNorm (+ int8 quantize), the Mamba-2 gated RMSNorm, and the block
// Hadamard rotation of out_proj's input fused with its quantization; embedding gather; argmax and
// top-k over logits.
#include <cfloat>
#include "common.cuh"
#include "kernels.cuh"

namespace me {

__device__ __forceinline__ void emit(size_t i, float v, float scale, float* out, int8_t* outQ) {
  if (outQ)
    outQ[i] = (int8_t)quant8(v, scale);
  else
    out[i] = qdq(v, scale);
}

// One block per row, up to NV float4 per thread held in registers: every load is issued before the
// reduction, so the kernel costs about one memory latency (a strided loop that stores as it goes
// waits for each load in turn).
template <int NV>
__global__ void addRmsnormKernel(float* __restrict__ hidden, const float* __restrict__ add, int D, const float* __restrict__ w, float eps,
                                 float* __restrict__ out, int8_t* __restrict__ outQ, float scale) {
  __shared__ float scratch[32];
  const int D4 = D / 4;
  float4 wv[NV];
#pragma unroll
  for (int j = 0; j < NV; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < D4) wv[j] = __ldg((const float4*)w + i);
  }
  pdlWait();
  pdlRelease();
  float4* hrow = (float4*)(hidden + (size_t)blockIdx.x * D);
  const float4* arow = add ? (const float4*)(add + (size_t)blockIdx.x * D) : nullptr;
  float4 v[NV];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < NV; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < D4) {
      v[j] = hrow[i];
      if (arow) {
        const float4 a = arow[i];
        v[j].x += a.x, v[j].y += a.y, v[j].z += a.z, v[j].w += a.w;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < NV; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < D4) {
      if (arow) hrow[i] = v[j];
      ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    }
  }
  ss = blockSum(ss, scratch);
  const float r = 1.f / sqrtf(ss / D + eps);
#pragma unroll
  for (int j = 0; j < NV; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= D4) continue;
    const float4 o = make_float4(v[j].x * r * wv[j].x, v[j].y * r * wv[j].y, v[j].z * r * wv[j].z, v[j].w * r * wv[j].w);
    const size_t e = (size_t)blockIdx.x * D + 4 * i;
    if (outQ) {
      *(char4*)(outQ + e) = make_char4(quant8(o.x, scale), quant8(o.y, scale), quant8(o.z, scale), quant8(o.w, scale));
    } else {
      *(float4*)(out + e) = make_float4(qdq(o.x, scale), qdq(o.y, scale), qdq(o.z, scale), qdq(o.w, scale));
    }
  }
}

cudaError_t addRmsnormQuant(float* hidden, const float* add, int M, int D, const float* w, float eps, float* out, int8_t* outQ, float scale,
                            cudaStream_t s) {
  if (D % 4 != 0 || D > 4 * 1024 * 4) return cudaErrorInvalidValue;
  const int D4 = D / 4;
  const int nv = (D4 + 1023) / 1024;
  int threads = ((D4 + nv - 1) / nv + 31) / 32 * 32;
  if (threads < 64) threads = 64;
  switch (nv) {
    case 1:
      return launch(addRmsnormKernel<1>, M, threads, 0, s, hidden, add, D, w, eps, out, outQ, scale);
    case 2:
      return launch(addRmsnormKernel<2>, M, threads, 0, s, hidden, add, D, w, eps, out, outQ, scale);
    default:
      return launch(addRmsnormKernel<4>, M, threads, 0, s, hidden, add, D, w, eps, out, outQ, scale);
  }
}

// The block Hadamard rotation of one block of hb (128..4096) values per CUDA block: each thread holds
// four consecutive values; butterflies of span 1-2 run in registers, 4-64 through warp shuffles,
// and wider ones through shared memory.
__global__ void rotateKernel(RowPost p, const float* __restrict__ y, float* __restrict__ out, int8_t* __restrict__ outQ) {
  extern __shared__ float4 sm4[];
  const int m = blockIdx.y, hb = p.hb, t = threadIdx.x, lane = t & 31;
  const float4 w = p.nPart ? __ldg((const float4*)(p.w + (size_t)blockIdx.x * hb) + t) : make_float4(1.f, 1.f, 1.f, 1.f);
  pdlWait();
  pdlRelease();
  const size_t base = (size_t)m * p.E + (size_t)blockIdx.x * hb;
  float4 v = *(const float4*)(y + base + 4 * t);
  if (p.nPart) {  // the gated RMSNorm over the whole row, from the producer's partial sums
    const float r = rmsFromParts(p.part, p.nPart, p.E, p.eps);
    v = make_float4(v.x * r * w.x, v.y * r * w.y, v.z * r * w.z, v.w * r * w.w);
  }
  float a = v.x + v.y, b = v.x - v.y, c = v.z + v.w, d = v.z - v.w;  // span 1
  v = make_float4(a + c, b + d, a - c, b - d);                       // span 2
  for (int dl = 1; dl < 32 && 4 * dl < hb; dl <<= 1) {               // spans 4..64
    float4 o;
    o.x = __shfl_xor_sync(0xffffffffu, v.x, dl), o.y = __shfl_xor_sync(0xffffffffu, v.y, dl);
    o.z = __shfl_xor_sync(0xffffffffu, v.z, dl), o.w = __shfl_xor_sync(0xffffffffu, v.w, dl);
    if (lane & dl)
      v = make_float4(o.x - v.x, o.y - v.y, o.z - v.z, o.w - v.w);
    else
      v = make_float4(v.x + o.x, v.y + o.y, v.z + o.z, v.w + o.w);
  }
  for (int dt = 32; 4 * dt < hb; dt <<= 1) {  // spans 128 and up
    sm4[t] = v;
    __syncthreads();
    const float4 o = sm4[t ^ dt];
    __syncthreads();
    if (t & dt)
      v = make_float4(o.x - v.x, o.y - v.y, o.z - v.z, o.w - v.w);
    else
      v = make_float4(v.x + o.x, v.y + o.y, v.z + o.z, v.w + o.w);
  }
  const float post = rsqrtf((float)hb);
  const size_t e = base + 4 * t;
  const float4 r = make_float4(v.x * post, v.y * post, v.z * post, v.w * post);
  if (outQ)
    *(char4*)(outQ + e) = make_char4(quant8(r.x, p.scale), quant8(r.y, p.scale), quant8(r.z, p.scale), quant8(r.w, p.scale));
  else
    *(float4*)(out + e) = make_float4(qdq(r.x, p.scale), qdq(r.y, p.scale), qdq(r.z, p.scale), qdq(r.w, p.scale));
}

// Paley-I Hadamard matrices of orders 12 and 20 (q = 11, 19), one row per word: bit j set where
// H[i][j] = -1 (the same matrices as engines/builder/hadamard.ts builds)
__constant__ unsigned kPaley12[12] = {0x0, 0xb89, 0x713, 0xe25, 0xc4b, 0x897, 0x12f, 0x25d, 0x4b9, 0x971, 0x2e3, 0x5c5};
__constant__ unsigned kPaley20[20] = {0x0,     0x9ea19, 0x3d433, 0x7a865, 0xf50c9, 0xea193, 0xd4327, 0xa864f, 0x50c9f, 0xa193d,
                                      0x4327b, 0x864f5, 0xc9eb,  0x193d5, 0x327a9, 0x64f51, 0xc9ea1, 0x93d43, 0x27a87, 0x4f50d};

// sm (hm blocks of hb) ← sm · (H_hm ⊗ I_hb): out[a' · hb + c] = Σ_a H[a][a'] · sm[a · hb + c]
__device__ void mixBlocks(float* sm, int hm, int hb) {
  const unsigned* rows = hm == 12 ? kPaley12 : kPaley20;
  for (int c = threadIdx.x; c < hb; c += blockDim.x) {
    float v[20];
    for (int a = 0; a < hm; a++) v[a] = sm[a * hb + c];
    for (int a2 = 0; a2 < hm; a2++) {
      float acc = 0.f;
      for (int a = 0; a < hm; a++) acc += (rows[a] >> a2 & 1u) ? -v[a] : v[a];
      sm[a2 * hb + c] = acc;
    }
  }
}

__global__ void rowPostKernel(RowPost p, const float* __restrict__ y, float* __restrict__ out, int8_t* __restrict__ outQ) {
  extern __shared__ float sm[];  // one row
  __shared__ float scratch[32];
  pdlWait();
  pdlRelease();
  const int m = blockIdx.x, E = p.E;
  const float* z = p.z ? p.z + (size_t)m * p.ldz : nullptr;
  for (int i = threadIdx.x; i < E; i += blockDim.x) {
    float v = y[(size_t)m * E + i];
    if (p.gate && !p.normBeforeGate) v *= siluf(z[i]);
    sm[i] = v;
  }
  __syncthreads();
  if (p.gs > 0) {
    for (int g0 = 0; g0 < E; g0 += p.gs) {
      float ss = 0.f;
      for (int i = g0 + threadIdx.x; i < g0 + p.gs; i += blockDim.x) ss += sm[i] * sm[i];
      ss = blockSum(ss, scratch);
      const float r = 1.f / sqrtf(ss / p.gs + p.eps);
      for (int i = g0 + threadIdx.x; i < g0 + p.gs; i += blockDim.x) sm[i] = sm[i] * r * p.w[i];
    }
    __syncthreads();
  }
  if (p.gate && p.normBeforeGate)
    for (int i = threadIdx.x; i < E; i += blockDim.x) sm[i] *= siluf(z[i]);
  __syncthreads();
  float post = 1.f;
  if (p.hb > 1) {
    // in-place fast Walsh-Hadamard transform of each block of hb: x · H (Sylvester order)
    for (int len = 1; len < p.hb; len <<= 1) {
      for (int q = threadIdx.x; q < E / 2; q += blockDim.x) {
        const int i = (q / len) * 2 * len + (q % len), j = i + len;
        const float a = sm[i], b = sm[j];
        sm[i] = a + b;
        sm[j] = a - b;
      }
      __syncthreads();
    }
    post = rsqrtf((float)p.hb);
    if (p.hm > 1) {
      mixBlocks(sm, p.hm, p.hb);
      __syncthreads();
      post = rsqrtf((float)p.hb * (float)p.hm);
    }
  }
  for (int i = threadIdx.x; i < E; i += blockDim.x) emit((size_t)m * E + i, sm[i] * post, p.scale, out, outQ);
}

cudaError_t rowNormRotateQuant(const RowPost& p, const float* y, int M, float* out, int8_t* outQ, cudaStream_t s) {
  if (p.nPart > 0 && (M != 1 || p.gate || !p.w || p.hb < 128 || p.hb > 4096)) return cudaErrorInvalidValue;
  if (p.hb > 1 && (p.E % p.hb != 0 || (p.hb & (p.hb - 1)) != 0)) return cudaErrorInvalidValue;
  if (p.gs > 0 && p.E % p.gs != 0) return cudaErrorInvalidValue;
  const bool whole = p.hm > 1;  // the mix across blocks needs the row in one CUDA block
  if (whole && ((p.hm != 12 && p.hm != 20) || p.hm * p.hb != p.E || p.nPart > 0)) return cudaErrorInvalidValue;
  if ((p.gs == 0 || p.nPart > 0) && !p.gate && !whole && p.hb >= 128 && p.hb <= 4096)
    return launch(rotateKernel, dim3(p.E / p.hb, M), p.hb / 4, (size_t)p.hb * sizeof(float), s, p, y, out, outQ);
  const size_t smem = (size_t)p.E * sizeof(float);
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(rowPostKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e) return e;
  }
  return launch(rowPostKernel, M, 1024, smem, s, p, y, out, outQ);
}

__global__ void embedKernel(const __half* __restrict__ table, int D, const int* __restrict__ tokens, float* __restrict__ out) {
  pdlWait();
  pdlRelease();
  const int m = blockIdx.x;
  const __half* row = table + (size_t)tokens[m] * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) out[(size_t)m * D + i] = __half2float(row[i]);
}

cudaError_t embed(const __half* table, int D, const int* tokens, int M, float* out, cudaStream_t s) {
  return launch(embedKernel, M, 256, 0, s, table, D, tokens, out);
}

__global__ void embedI4Kernel(const uint8_t* __restrict__ table, const float* __restrict__ scale, int group, int D,
                              const int* __restrict__ tokens, float* __restrict__ out) {
  pdlWait();
  pdlRelease();
  const int m = blockIdx.x;
  const size_t row = (size_t)tokens[m];
  const uint8_t* bytes = table + row * (D / 2);
  const float* s = scale + row * (D / group);
  for (int i = threadIdx.x; i < D / 2; i += blockDim.x) {
    const uint8_t b = bytes[i];
    const float sc = s[2 * i / group];  // a group is even-sized: both nibbles share its scale
    out[(size_t)m * D + 2 * i] = (float)((int)(b & 15) - 8) * sc;
    out[(size_t)m * D + 2 * i + 1] = (float)((int)(b >> 4) - 8) * sc;
  }
}

cudaError_t embedI4(const uint8_t* table, const float* scale, int group, int D, const int* tokens, int M, float* out, cudaStream_t s) {
  return launch(embedI4Kernel, M, 256, 0, s, table, scale, group, D, tokens, out);
}

// (v, i) ranks above (bv, bi): larger value first, then the lower index
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

// the best of each thread's candidates, reduced over a 256-thread block; candidates rank below (pv, pi)
__device__ void blockBest(const float* row, int V, float pv, int pi, float& outV, int& outI) {
  __shared__ float sv[256];
  __shared__ int si[256];
  float bv = -FLT_MAX;
  int bi = 0x7fffffff;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = row[i];
    const bool below = v < pv || (v == pv && i > pi);
    if (below && better(v, i, bv, bi)) bv = v, bi = i;
  }
  sv[threadIdx.x] = bv, si[threadIdx.x] = bi;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s && better(sv[threadIdx.x + s], si[threadIdx.x + s], sv[threadIdx.x], si[threadIdx.x]))
      sv[threadIdx.x] = sv[threadIdx.x + s], si[threadIdx.x] = si[threadIdx.x + s];
    __syncthreads();
  }
  outV = sv[0], outI = si[0];
  __syncthreads();
}

__global__ void topkKernel(const float* __restrict__ logits, int V, int k, float* vals, int* idx) {
  const float* row = logits + (size_t)blockIdx.x * V;
  float pv = INFINITY;
  int pi = -1;
  for (int r = 0; r < k; r++) {
    float v;
    int i;
    blockBest(row, V, pv, pi, v, i);
    if (threadIdx.x == 0) {
      if (vals) vals[(size_t)blockIdx.x * k + r] = v;
      idx[(size_t)blockIdx.x * k + r] = i;
    }
    pv = v, pi = i;
  }
}

// argmax in two passes: ARGMAX_PARTS blocks per row find the best of their slice, one block per row
// picks among them (lowest index on ties, as top-k)
constexpr int ARGMAX_PARTS = 64;
__global__ void argmaxPartKernel(const float* __restrict__ logits, int V, float* pv, int* pi) {
  pdlWait();
  pdlRelease();
  const int m = blockIdx.y, part = blockIdx.x;
  const int per = (V + ARGMAX_PARTS - 1) / ARGMAX_PARTS, a = part * per, b = min(V, a + per);
  __shared__ float sv[256];
  __shared__ int si[256];
  float bv = -FLT_MAX;
  int bi = 0x7fffffff;
  for (int i = a + threadIdx.x; i < b; i += blockDim.x) {
    const float v = logits[(size_t)m * V + i];
    if (better(v, i, bv, bi)) bv = v, bi = i;
  }
  sv[threadIdx.x] = bv, si[threadIdx.x] = bi;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k && better(sv[threadIdx.x + k], si[threadIdx.x + k], sv[threadIdx.x], si[threadIdx.x]))
      sv[threadIdx.x] = sv[threadIdx.x + k], si[threadIdx.x] = si[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) pv[m * ARGMAX_PARTS + part] = sv[0], pi[m * ARGMAX_PARTS + part] = si[0];
}

__global__ void argmaxFinalKernel(const float* pv, const int* pi, int* out) {
  pdlWait();
  pdlRelease();
  const int m = blockIdx.x;
  float bv = pv[m * ARGMAX_PARTS + threadIdx.x];
  int bi = pi[m * ARGMAX_PARTS + threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, bv, o);
    const int i = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(v, i, bv, bi)) bv = v, bi = i;
  }
  __shared__ float wv[ARGMAX_PARTS / 32];
  __shared__ int wi[ARGMAX_PARTS / 32];
  if ((threadIdx.x & 31) == 0) wv[threadIdx.x >> 5] = bv, wi[threadIdx.x >> 5] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < ARGMAX_PARTS / 32; w++)
      if (better(wv[w], wi[w], wv[0], wi[0])) wv[0] = wv[w], wi[0] = wi[w];
    out[m] = wi[0];
  }
}

cudaError_t argmax(const float* logits, int M, int V, int* out, float* scratch, cudaStream_t s) {
  float* pv = scratch;
  int* pi = (int*)(scratch + (size_t)M * ARGMAX_PARTS);
  if (cudaError_t e = launch(argmaxPartKernel, dim3(ARGMAX_PARTS, M), 256, 0, s, logits, V, pv, pi)) return e;
  return launch(argmaxFinalKernel, M, ARGMAX_PARTS, 0, s, pv, pi, out);
}

cudaError_t topk(const float* logits, int M, int V, int k, float* vals, int* idx, cudaStream_t s) {
  if (k < 1 || k > 256 || k > V) return cudaErrorInvalidValue;
  topkKernel<<<M, 256, 0, s>>>(logits, V, k, vals, idx);
  return cudaGetLastError();
}

}  // namespace me
