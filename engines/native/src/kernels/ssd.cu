// Mamba-2 SSM (Dao & Gu 2024): scalar decay per head, B and C shared by groups of heads.
// S = exp(dt*A) S + dt * x ⊗ B ; y = S·C + D x (then the gate, here or after the gated norm).
// One warp per (head, channel p); each lane holds N/32 state entries in registers.
#include "common.cuh"
#include "kernels.cuh"

namespace me {

constexpr int SSD_NJ = 8;  // N up to 256

__device__ __forceinline__ float ssdDt(const Ssd& p, size_t row, int h) {
  const float dt = softplusf(p.dtRaw[row * p.lddt + h] + p.dtBias[h]);
  return fminf(fmaxf(dt, p.dtLo), p.dtHi);
}

__global__ void ssdStepKernel(Ssd p, float* __restrict__ states, long long slotStride, const int* __restrict__ slots) {
  pdlWait();
  pdlRelease();
  const int h = blockIdx.x, m = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int H = p.H, P = p.P, N = p.N, G = p.G, nj = N / 32;
  const int g = h / (H / G);
  const float* row = p.xbc + (size_t)m * p.ldxbc;
  const float* Bm = row + H * P + g * N;
  const float* Cm = row + H * P + G * N + g * N;
  const float dt = ssdDt(p, m, h);
  const float dA = expf(dt * p.A[h]);
  float Bv[SSD_NJ], Cv[SSD_NJ];
#pragma unroll
  for (int j = 0; j < SSD_NJ; j++) if (j < nj) Bv[j] = Bm[lane + 32 * j], Cv[j] = Cm[lane + 32 * j];
  float* Sbase = states + (long long)slots[m] * slotStride;
  for (int pp = warp; pp < P; pp += blockDim.x >> 5) {
    const float x = row[h * P + pp];
    float* S = Sbase + ((size_t)h * P + pp) * N;
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < SSD_NJ; j++) {
      if (j < nj) {
        const float s = S[lane + 32 * j] * dA + dt * x * Bv[j];
        S[lane + 32 * j] = s;
        acc += s * Cv[j];
      }
    }
    acc = warpSum(acc);
    if (lane == 0) {
      float y = acc + p.D[h] * x;
      if (p.gateHere) y *= siluf(p.z[(size_t)m * p.ldz + h * P + pp]);
      p.y[(size_t)m * H * P + h * P + pp] = y;
    }
  }
}

__global__ void ssdPrefillKernel(Ssd p, int T, float* __restrict__ S) {
  const int h = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int pp = blockIdx.y * (blockDim.x >> 5) + warp;
  const int H = p.H, P = p.P, N = p.N, G = p.G, nj = N / 32;
  if (pp >= P) return;
  const int g = h / (H / G);
  float s[SSD_NJ];
  float* Sp = S + ((size_t)h * P + pp) * N;
#pragma unroll
  for (int j = 0; j < SSD_NJ; j++) s[j] = j < nj ? Sp[lane + 32 * j] : 0.f;
  const float A = p.A[h], D = p.D[h];
  for (int t = 0; t < T; t++) {
    const float* row = p.xbc + (size_t)t * p.ldxbc;
    const float dt = ssdDt(p, t, h);
    const float dA = expf(dt * A);
    const float x = row[h * P + pp];
    const float dx = dt * x;
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < SSD_NJ; j++) {
      if (j < nj) {
        s[j] = s[j] * dA + dx * row[H * P + g * N + lane + 32 * j];
        acc += s[j] * row[H * P + G * N + g * N + lane + 32 * j];
      }
    }
    acc = warpSum(acc);
    if (lane == 0) {
      float y = acc + D * x;
      if (p.gateHere) y *= siluf(p.z[(size_t)t * p.ldz + h * P + pp]);
      p.y[(size_t)t * H * P + h * P + pp] = y;
    }
  }
#pragma unroll
  for (int j = 0; j < SSD_NJ; j++) if (j < nj) Sp[lane + 32 * j] = s[j];
}

static bool ssdShapeOk(const Ssd& p) { return p.N % 32 == 0 && p.N <= 32 * SSD_NJ && p.G > 0 && p.H % p.G == 0; }

cudaError_t ssdPrefill(const Ssd& p, int T, float* S, cudaStream_t s) {
  if (!ssdShapeOk(p)) return cudaErrorInvalidValue;
  ssdPrefillKernel<<<dim3(p.H, (p.P + 3) / 4), 128, 0, s>>>(p, T, S);
  return cudaGetLastError();
}

cudaError_t ssdStep(const Ssd& p, int M, float* states, long long slotStride, const int* slots, cudaStream_t s) {
  if (!ssdShapeOk(p)) return cudaErrorInvalidValue;
  return launch(ssdStepKernel, dim3(p.H, M), 256, 0, s, p, states, slotStride, slots);
}

}  // namespace me
