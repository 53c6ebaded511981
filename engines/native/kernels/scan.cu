// Mamba-1 selective scan (Gu & Dao 2023): h = exp(dt*A) h + dt*B*x ; y = (C·h + D x) * silu(z),
// dt = softplus(dt_proj(dt_low) + bias). Float32 state; B and C optionally fake-quantized to int8
// (the recipes' SSM inputs). The decode step fuses dt_proj; prefill walks time with the state in
// registers, one thread per channel.
#include "common.cuh"
#include "kernels.cuh"

namespace me {

__device__ __forceinline__ void scan1Out(const Scan1& p, size_t i, float v) {
  if (p.yq)
    p.yq[i] = (int8_t)quant8(v, p.outScale);
  else
    p.y[i] = qdq(v, p.outScale);
}

// four lanes per channel: each takes a quarter of the dt_proj dot product (chunks of 8 weights, round
// robin) and a contiguous quarter of the states. Everything a lane needs is loaded into registers
// before it is used, weights before pdlWait().
constexpr int SCAN_SUB = 4;
constexpr int SCAN_DTC = 8;  // dt_proj chunks of 8 per lane: dt_rank up to 256

template <int NPL>  // states per lane (N <= 4 * NPL)
__global__ void scan1StepKernel(Scan1 p, float* __restrict__ states, long long slotStride, const int* __restrict__ slots) {
  extern __shared__ float sm[];  // [dt_low (R) | B (N) | C (N)] of this row
  const int m = blockIdx.y;
  const int R = p.R, N = p.N, E = p.E;
  const int ch = blockIdx.x * (blockDim.x / SCAN_SUB) + threadIdx.x / SCAN_SUB;
  const int sub = threadIdx.x % SCAN_SUB;
  const bool live = ch < E;
  const int c = live ? ch : 0;
  const int n0 = sub * NPL;
  const bool vec = R % 8 == 0 && R <= 8 * SCAN_SUB * SCAN_DTC;  // else a plain loop below
  uint4 wv[SCAN_DTC];
#pragma unroll
  for (int j = 0; j < SCAN_DTC; j++) {
    const int r0 = (sub + SCAN_SUB * j) * 8;
    wv[j] = vec && r0 < R ? __ldg((const uint4*)(p.dtW + (size_t)c * R + r0)) : make_uint4(0, 0, 0, 0);
  }
  float A[NPL];
#pragma unroll
  for (int i = 0; i < NPL; i++) A[i] = n0 + i < N ? __ldg(p.A + (size_t)c * N + n0 + i) : 0.f;
  const float bias = __ldg(p.dtB + c), Dc = __ldg(p.D + c);
  // the state too: only this kernel writes it (the same layer's step before, long finished)
  float* h = states + (long long)slots[m] * slotStride + (size_t)c * N;
  float hv[NPL];
#pragma unroll
  for (int i = 0; i < NPL; i++) hv[i] = n0 + i < N ? h[n0 + i] : 0.f;
  pdlWait();
  pdlRelease();

  const float* row = p.dbl + (size_t)m * p.lddbl;
  const float x = p.x[(size_t)m * E + c];
  const float z = p.z[(size_t)m * p.ldz + c];
  for (int i = threadIdx.x; i < R + 2 * N; i += blockDim.x) {
    float v = row[i];
    if (i >= R + N)
      v = qdq(v, p.sC);
    else if (i >= R)
      v = qdq(v, p.sB);
    sm[i] = v;
  }
  __syncthreads();
  float d = 0.f;
  if (!vec)
    for (int r = sub; r < R; r += SCAN_SUB) d += __half2float(p.dtW[(size_t)c * R + r]) * sm[r];
#pragma unroll
  for (int j = 0; j < SCAN_DTC; j++) {
    const int r0 = (sub + SCAN_SUB * j) * 8;
    if (vec && r0 < R) {
      const __half2* hh = (const __half2*)&wv[j];
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const float2 f = __half22float2(hh[q]);
        d += f.x * sm[r0 + 2 * q] + f.y * sm[r0 + 2 * q + 1];
      }
    }
  }
  d += __shfl_xor_sync(0xffffffffu, d, 1);
  d += __shfl_xor_sync(0xffffffffu, d, 2);
  const float dt = softplusf(d + bias);
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < NPL; i++) {
    if (n0 + i < N) {
      hv[i] = expf(dt * A[i]) * hv[i] + dt * sm[R + n0 + i] * x;
      acc += hv[i] * sm[R + N + n0 + i];
    }
  }
  if (live)
#pragma unroll
    for (int i = 0; i < NPL; i++)
      if (n0 + i < N) h[n0 + i] = hv[i];
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  if (live && sub == 0) scan1Out(p, (size_t)m * E + ch, (acc + Dc * x) * siluf(z));
}

// Prefill walks time one thread per channel with the state in registers. The inputs of the next TC
// steps (dt, x, z of its channel in registers; B and C of those rows, shared by the block's channels,
// through shared memory) are loaded while the current ones are used: one memory round trip per TC
// steps instead of one per step (TC 8 for states up to 16, 2 up to 64: the registers).
constexpr int SCAN_PT = 64;  // threads (channels) per block of the prefill

template <int NMAX, int TC>
struct Scan1Chunk {
  static constexpr int BC = 2 * NMAX * TC / SCAN_PT;  // this thread's share of the chunk's [B | C] rows
  float dt[TC], x[TC], z[TC];
  float bc[BC];
};

template <int NMAX, int TC>
__device__ __forceinline__ void scan1LoadChunk(const Scan1& p, int T, int t0, int ch, bool live, Scan1Chunk<NMAX, TC>& k) {
  const int E = p.E, N = p.N, R = p.R;
#pragma unroll
  for (int i = 0; i < TC; i++) {
    const bool ok = live && t0 + i < T;
    const size_t r = (size_t)(t0 + i);
    k.dt[i] = ok ? p.dtRaw[r * E + ch] : 0.f;
    k.x[i] = ok ? p.x[r * E + ch] : 0.f;
    k.z[i] = ok ? p.z[r * p.ldz + ch] : 0.f;
  }
#pragma unroll
  for (int j = 0; j < k.BC; j++) {
    const int e = threadIdx.x + j * SCAN_PT, t = e / (2 * N), n = e % (2 * N);
    k.bc[j] = e < TC * 2 * N && t0 + t < T ? p.dbl[(size_t)(t0 + t) * p.lddbl + R + n] : 0.f;  // (used a chunk later)
  }
}

template <int NMAX, int TC>
__global__ void __launch_bounds__(SCAN_PT) scan1PrefillKernel(Scan1 p, int T, float* __restrict__ hs) {
  __shared__ float bc[2][TC][2 * NMAX];  // [B | C] of the chunk's rows, two chunks in turn
  const int ch = blockIdx.x * SCAN_PT + threadIdx.x;
  const bool live = ch < p.E;  // (no early return: every thread stages its share of B and C)
  const int c = live ? ch : 0;
  const int N = p.N, E = p.E;
  float h[NMAX], A[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; n++) {
    h[n] = n < N ? hs[(size_t)c * N + n] : 0.f;
    A[n] = n < N ? p.A[(size_t)c * N + n] : 0.f;
  }
  const float bias = p.dtB[c], Dc = p.D[c];
  Scan1Chunk<NMAX, TC> cur, next;
  scan1LoadChunk<NMAX, TC>(p, T, 0, c, live, cur);
  for (int t0 = 0, buf = 0; t0 < T; t0 += TC, buf ^= 1) {
#pragma unroll
    for (int j = 0; j < cur.BC; j++) {
      const int e = threadIdx.x + j * SCAN_PT;
      const int n = e % (2 * N);
      if (e < TC * 2 * N) bc[buf][e / (2 * N)][n] = qdq(cur.bc[j], n < N ? p.sB : p.sC);
    }
    __syncthreads();  // (two buffers: a thread writes this one again only after all passed the next barrier)
    if (t0 + TC < T) scan1LoadChunk<NMAX, TC>(p, T, t0 + TC, c, live, next);
#pragma unroll
    for (int i = 0; i < TC; i++) {
      if (t0 + i >= T) break;
      const float dt = softplusf(cur.dt[i] + bias), x = cur.x[i];
      const float* row = bc[buf][i];
      float acc = 0.f;
#pragma unroll
      for (int n = 0; n < NMAX; n++) {
        if (n < N) {
          h[n] = expf(dt * A[n]) * h[n] + dt * row[n] * x;
          acc += h[n] * row[N + n];
        }
      }
      if (live) scan1Out(p, (size_t)(t0 + i) * E + ch, (acc + Dc * x) * siluf(cur.z[i]));
    }
    cur = next;
  }
  if (live)
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) hs[(size_t)ch * N + n] = h[n];
}

cudaError_t scan1Prefill(const Scan1& p, int T, float* h, cudaStream_t s) {
  const int blocks = (p.E + SCAN_PT - 1) / SCAN_PT;
  if (p.N <= 16)
    scan1PrefillKernel<16, 8><<<blocks, SCAN_PT, 0, s>>>(p, T, h);
  else if (p.N <= 64)
    scan1PrefillKernel<64, 2><<<blocks, SCAN_PT, 0, s>>>(p, T, h);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t scan1Step(const Scan1& p, int M, float* states, long long slotStride, const int* slots, cudaStream_t s) {
  if (p.N > 4 * 16) return cudaErrorInvalidValue;
  const dim3 grid((p.E + 31) / 32, M);
  const size_t smem = (p.R + 2 * p.N) * sizeof(float);
  if (p.N <= 16) return launch(scan1StepKernel<4>, grid, 32 * SCAN_SUB, smem, s, p, states, slotStride, slots);
  return launch(scan1StepKernel<16>, grid, 32 * SCAN_SUB, smem, s, p, states, slotStride, slots);
}

}  // namespace me
