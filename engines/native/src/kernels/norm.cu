// Row kernels: residual add + RMSNorm (+ int8 quantize), the Mamba-2 gated RMSNorm, and the block
// Hadamard rotation of out_proj's input fused with its quantization; embedding gather; argmax and
// top-k over logits.
#include <cfloat>
#include "common.cuh"
#include "kernels.cuh"

namespace me {

__device__ __forceinline__ void emit(size_t i, float v, float scale, float* out, int8_t* outQ) {
  if (outQ) outQ[i] = (int8_t)quant8(v, scale);
  else out[i] = qdq(v, scale);
}

__global__ void addRmsnormKernel(float* __restrict__ hidden, const float* __restrict__ add, int D, const float* __restrict__ w, float eps,
                                 float* __restrict__ out, int8_t* __restrict__ outQ, float scale) {
  __shared__ float scratch[32];
  float* hrow = hidden + (size_t)blockIdx.x * D;
  float ss = 0.f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    float v = hrow[i];
    if (add) hrow[i] = v = v + add[(size_t)blockIdx.x * D + i];
    ss += v * v;
  }
  ss = blockSum(ss, scratch);
  const float r = 1.f / sqrtf(ss / D + eps);
  for (int i = threadIdx.x; i < D; i += blockDim.x) emit((size_t)blockIdx.x * D + i, hrow[i] * r * w[i], scale, out, outQ);
}

cudaError_t addRmsnormQuant(float* hidden, const float* add, int M, int D, const float* w, float eps, float* out, int8_t* outQ, float scale, cudaStream_t s) {
  addRmsnormKernel<<<M, 256, 0, s>>>(hidden, add, D, w, eps, out, outQ, scale);
  return cudaGetLastError();
}

__global__ void rotateKernel(RowPost p, const float* __restrict__ y, float* __restrict__ out, int8_t* __restrict__ outQ) {
  extern __shared__ float sm[];  // one Hadamard block of one row
  const int m = blockIdx.y, hb = p.hb;
  const size_t base = (size_t)m * p.E + (size_t)blockIdx.x * hb;
  for (int i = threadIdx.x; i < hb; i += blockDim.x) sm[i] = y[base + i];
  __syncthreads();
  for (int len = 1; len < hb; len <<= 1) {
    for (int q = threadIdx.x; q < hb / 2; q += blockDim.x) {
      const int i = (q / len) * 2 * len + (q % len), j = i + len;
      const float a = sm[i], b = sm[j];
      sm[i] = a + b;
      sm[j] = a - b;
    }
    __syncthreads();
  }
  const float post = rsqrtf((float)hb);
  for (int i = threadIdx.x; i < hb; i += blockDim.x) emit(base + i, sm[i] * post, p.scale, out, outQ);
}

__global__ void rowPostKernel(RowPost p, const float* __restrict__ y, float* __restrict__ out, int8_t* __restrict__ outQ) {
  extern __shared__ float sm[];  // one row
  __shared__ float scratch[32];
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
  }
  for (int i = threadIdx.x; i < E; i += blockDim.x) emit((size_t)m * E + i, sm[i] * post, p.scale, out, outQ);
}

cudaError_t rowNormRotateQuant(const RowPost& p, const float* y, int M, float* out, int8_t* outQ, cudaStream_t s) {
  if (p.hb > 1 && (p.E % p.hb != 0 || (p.hb & (p.hb - 1)) != 0)) return cudaErrorInvalidValue;
  if (p.gs > 0 && p.E % p.gs != 0) return cudaErrorInvalidValue;
  if (p.gs == 0 && !p.gate && p.hb > 1) {
    const size_t sm = (size_t)p.hb * sizeof(float);
    if (sm > 48 * 1024) {
      cudaError_t e = cudaFuncSetAttribute(rotateKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
      if (e) return e;
    }
    rotateKernel<<<dim3(p.E / p.hb, M), p.hb / 2 < 1024 ? (p.hb / 2 < 32 ? 32 : p.hb / 2) : 1024, sm, s>>>(p, y, out, outQ);
    return cudaGetLastError();
  }
  const size_t smem = (size_t)p.E * sizeof(float);
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(rowPostKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e) return e;
  }
  rowPostKernel<<<M, 1024, smem, s>>>(p, y, out, outQ);
  return cudaGetLastError();
}

__global__ void embedKernel(const __half* __restrict__ table, int D, const int* __restrict__ tokens, float* __restrict__ out) {
  const int m = blockIdx.x;
  const __half* row = table + (size_t)tokens[m] * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) out[(size_t)m * D + i] = __half2float(row[i]);
}

cudaError_t embed(const __half* table, int D, const int* tokens, int M, float* out, cudaStream_t s) {
  embedKernel<<<M, 256, 0, s>>>(table, D, tokens, out);
  return cudaGetLastError();
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
  argmaxPartKernel<<<dim3(ARGMAX_PARTS, M), 256, 0, s>>>(logits, V, pv, pi);
  argmaxFinalKernel<<<M, ARGMAX_PARTS, 0, s>>>(pv, pi, out);
  return cudaGetLastError();
}

cudaError_t topk(const float* logits, int M, int V, int k, float* vals, int* idx, cudaStream_t s) {
  if (k < 1 || k > 256 || k > V) return cudaErrorInvalidValue;
  topkKernel<<<M, 256, 0, s>>>(logits, V, k, vals, idx);
  return cudaGetLastError();
}

}  // namespace me
