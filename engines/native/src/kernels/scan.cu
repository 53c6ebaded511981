// Mamba-1 selective scan (Gu & Dao 2023): h = exp(dt*A) h + dt*B*x ; y = (C·h + D x) * silu(z),
// dt = softplus(dt_proj(dt_low) + bias). Float32 state; B and C optionally fake-quantized to int8
// (the recipes' SSM inputs). The decode step fuses dt_proj; prefill walks time with the state in
// registers, one thread per channel.
#include "common.cuh"
#include "kernels.cuh"

namespace me {

__device__ __forceinline__ void scan1Out(const Scan1& p, size_t i, float v) {
  if (p.yq) p.yq[i] = (int8_t)quant8(v, p.outScale);
  else p.y[i] = qdq(v, p.outScale);
}

// four lanes per channel: each takes a quarter of the dt_proj dot product and of the states
constexpr int SCAN_SUB = 4;

__global__ void scan1StepKernel(Scan1 p, float* __restrict__ states, long long slotStride, const int* __restrict__ slots) {
  extern __shared__ float sm[];  // [dt_low (R) | B (N) | C (N)] of this row
  const int m = blockIdx.y;
  const int R = p.R, N = p.N, E = p.E;
  const float* row = p.dbl + (size_t)m * p.lddbl;
  for (int i = threadIdx.x; i < R + 2 * N; i += blockDim.x) {
    float v = row[i];
    if (i >= R + N) v = qdq(v, p.sC);
    else if (i >= R) v = qdq(v, p.sB);
    sm[i] = v;
  }
  __syncthreads();
  const int ch = blockIdx.x * (blockDim.x / SCAN_SUB) + threadIdx.x / SCAN_SUB;
  const int sub = threadIdx.x % SCAN_SUB;
  const bool live = ch < E;
  float d = 0.f;
  if (live) {
    const __half* wr = p.dtW + (size_t)ch * R;
    if (R % 8 == 0) {
      // 16-byte loads: the four lanes of a channel read 64 contiguous bytes of its row at a time
      for (int r0 = sub * 8; r0 < R; r0 += SCAN_SUB * 8) {
        const uint4 v = __ldg((const uint4*)(wr + r0));
        const __half2* h = (const __half2*)&v;
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const float2 f = __half22float2(h[j]);
          d += f.x * sm[r0 + 2 * j] + f.y * sm[r0 + 2 * j + 1];
        }
      }
    } else {
      for (int r = sub; r < R; r += SCAN_SUB) d += __half2float(wr[r]) * sm[r];
    }
  }
  d += __shfl_xor_sync(0xffffffffu, d, 1);
  d += __shfl_xor_sync(0xffffffffu, d, 2);
  const float dt = softplusf(d + (live ? p.dtB[ch] : 0.f));
  const float x = live ? p.x[(size_t)m * E + ch] : 0.f;
  float acc = 0.f;
  if (live) {
    float* h = states + (long long)slots[m] * slotStride + (size_t)ch * N;
    const float* A = p.A + (size_t)ch * N;
    for (int n = sub; n < N; n += SCAN_SUB) {
      const float hn = expf(dt * A[n]) * h[n] + dt * sm[R + n] * x;
      h[n] = hn;
      acc += hn * sm[R + N + n];
    }
  }
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  if (live && sub == 0) scan1Out(p, (size_t)m * E + ch, (acc + p.D[ch] * x) * siluf(p.z[(size_t)m * p.ldz + ch]));
}

template <int NMAX>
__global__ void scan1PrefillKernel(Scan1 p, int T, float* __restrict__ hs) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= p.E) return;
  const int R = p.R, N = p.N, E = p.E;
  float h[NMAX], A[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; n++) {
    h[n] = n < N ? hs[(size_t)ch * N + n] : 0.f;
    A[n] = n < N ? p.A[(size_t)ch * N + n] : 0.f;
  }
  const float bias = p.dtB[ch], Dc = p.D[ch];
  for (int t = 0; t < T; t++) {
    const float dt = softplusf(p.dtRaw[(size_t)t * E + ch] + bias);
    const float x = p.x[(size_t)t * E + ch];
    const float* row = p.dbl + (size_t)t * p.lddbl + R;
    float acc = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; n++) {
      if (n < N) {
        h[n] = expf(dt * A[n]) * h[n] + dt * qdq(row[n], p.sB) * x;
        acc += h[n] * qdq(row[N + n], p.sC);
      }
    }
    scan1Out(p, (size_t)t * E + ch, (acc + Dc * x) * siluf(p.z[(size_t)t * p.ldz + ch]));
  }
#pragma unroll
  for (int n = 0; n < NMAX; n++) if (n < N) hs[(size_t)ch * N + n] = h[n];
}

cudaError_t scan1Prefill(const Scan1& p, int T, float* h, cudaStream_t s) {
  const int blocks = (p.E + 63) / 64;
  if (p.N <= 16) scan1PrefillKernel<16><<<blocks, 64, 0, s>>>(p, T, h);
  else if (p.N <= 64) scan1PrefillKernel<64><<<blocks, 64, 0, s>>>(p, T, h);
  else return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t scan1Step(const Scan1& p, int M, float* states, long long slotStride, const int* slots, cudaStream_t s) {
  scan1StepKernel<<<dim3((p.E + 31) / 32, M), 32 * SCAN_SUB, (p.R + 2 * p.N) * sizeof(float), s>>>(p, states, slotStride, slots);
  return cudaGetLastError();
}

}  // namespace me
