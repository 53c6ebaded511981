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

// Decode: a block takes SSD_SW warps × SSD_SR channels p of one head; each lane holds N / 32 state
// entries of each of its warp's channels. The state is loaded before pdlWait(): only this kernel
// writes it (the same layer's step before, long finished), so its loads, the bulk of the kernel's
// bytes, overlap the previous kernel. At batch 1 with ssOut, each block also writes the sum of
// squares of the y it wrote, from which out_proj's GEMV takes the gated RMSNorm (NormIn.part).
constexpr int SSD_SW = 4, SSD_SR = 4;
constexpr int SSD_ROWS = SSD_SW * SSD_SR;  // channels per block

__global__ void __launch_bounds__(SSD_SW * 32)
    ssdStepKernel(Ssd p, float* __restrict__ states, long long slotStride, const int* __restrict__ slots, float* __restrict__ ssOut) {
  const int H = p.H, P = p.P, N = p.N, G = p.G, nj = N / 32;
  const int bph = (P + SSD_ROWS - 1) / SSD_ROWS;
  const int h = blockIdx.x / bph, m = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int p0 = (blockIdx.x % bph) * SSD_ROWS + warp * SSD_SR;
  float* S = states + (long long)slots[m] * slotStride + ((size_t)h * P + p0) * N + lane;
  float s[SSD_SR][SSD_NJ];
#pragma unroll
  for (int r = 0; r < SSD_SR; r++)
#pragma unroll
    for (int j = 0; j < SSD_NJ; j++) s[r][j] = p0 + r < P && j < nj ? S[(size_t)r * N + 32 * j] : 0.f;
  pdlWait();
  pdlRelease();
  const int g = h / (H / G);
  const float* row = p.xbc + (size_t)m * p.ldxbc;
  const float* Bm = row + H * P + g * N + lane;
  const float* Cm = row + H * P + G * N + g * N + lane;
  const float dt = ssdDt(p, m, h);
  const float dA = expf(dt * p.A[h]), Dh = p.D[h];
  float Bv[SSD_NJ], Cv[SSD_NJ], x[SSD_SR], z[SSD_SR];
#pragma unroll
  for (int j = 0; j < SSD_NJ; j++) Bv[j] = j < nj ? Bm[32 * j] : 0.f, Cv[j] = j < nj ? Cm[32 * j] : 0.f;
#pragma unroll
  for (int r = 0; r < SSD_SR; r++) {
    const bool ok = p0 + r < P;
    x[r] = ok ? row[h * P + p0 + r] : 0.f;
    z[r] = ok && p.gateHere ? p.z[(size_t)m * p.ldz + h * P + p0 + r] : 0.f;
  }
  float sq = 0.f;
#pragma unroll
  for (int r = 0; r < SSD_SR; r++) {
    float acc = 0.f;
    const float dx = dt * x[r];
#pragma unroll
    for (int j = 0; j < SSD_NJ; j++) {
      s[r][j] = s[r][j] * dA + dx * Bv[j];
      acc += s[r][j] * Cv[j];
    }
    acc = warpSum(acc);
    float y = acc + Dh * x[r];
    if (p.gateHere) y *= siluf(z[r]);
    if (p0 + r < P) {
#pragma unroll
      for (int j = 0; j < SSD_NJ; j++)
        if (j < nj) S[(size_t)r * N + 32 * j] = s[r][j];
      if (lane == r) p.y[(size_t)m * H * P + h * P + p0 + r] = y, sq += y * y;
    }
  }
  if (ssOut) sumSquaresOut(sq, ssOut);
}

// Prefill: the inputs of the next SSD_TA steps (dt, x, z, and this lane's B and C entries) are loaded
// while the current ones are used, one memory round trip per SSD_TA steps instead of one per step.
constexpr int SSD_TA = 2;
struct SsdIn {
  float dtRaw, x, z, b[SSD_NJ], c[SSD_NJ];
};

__device__ __forceinline__ void ssdLoad(const Ssd& p, int T, int t, int h, int pp, int g, int lane, SsdIn& r) {
  if (t >= T) return;
  const int H = p.H, P = p.P, N = p.N, G = p.G, nj = N / 32;
  const float* row = p.xbc + (size_t)t * p.ldxbc;
  r.dtRaw = p.dtRaw[(size_t)t * p.lddt + h];
  r.x = row[h * P + pp];
  r.z = p.gateHere ? p.z[(size_t)t * p.ldz + h * P + pp] : 0.f;
#pragma unroll
  for (int j = 0; j < SSD_NJ; j++)
    if (j < nj) r.b[j] = row[H * P + g * N + lane + 32 * j], r.c[j] = row[H * P + G * N + g * N + lane + 32 * j];
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
  const float A = p.A[h], D = p.D[h], bias = p.dtBias[h];
  SsdIn cur[SSD_TA], next[SSD_TA];
#pragma unroll
  for (int i = 0; i < SSD_TA; i++) ssdLoad(p, T, i, h, pp, g, lane, cur[i]);
  for (int t0 = 0; t0 < T; t0 += SSD_TA) {
#pragma unroll
    for (int i = 0; i < SSD_TA; i++) ssdLoad(p, T, t0 + SSD_TA + i, h, pp, g, lane, next[i]);
#pragma unroll
    for (int i = 0; i < SSD_TA; i++) {
      const int t = t0 + i;
      if (t >= T) break;
      const SsdIn& r = cur[i];
      const float dt = fminf(fmaxf(softplusf(r.dtRaw + bias), p.dtLo), p.dtHi);  // as ssdDt
      const float dA = expf(dt * A), dx = dt * r.x;
      float acc = 0.f;
#pragma unroll
      for (int j = 0; j < SSD_NJ; j++) {
        if (j < nj) {
          s[j] = s[j] * dA + dx * r.b[j];
          acc += s[j] * r.c[j];
        }
      }
      acc = warpSum(acc);
      if (lane == 0) {
        float y = acc + D * r.x;
        if (p.gateHere) y *= siluf(r.z);
        p.y[(size_t)t * H * P + h * P + pp] = y;
      }
    }
#pragma unroll
    for (int i = 0; i < SSD_TA; i++) cur[i] = next[i];
  }
#pragma unroll
  for (int j = 0; j < SSD_NJ; j++)
    if (j < nj) Sp[lane + 32 * j] = s[j];
}

static bool ssdShapeOk(const Ssd& p) { return p.N % 32 == 0 && p.N <= 32 * SSD_NJ && p.G > 0 && p.H % p.G == 0; }

cudaError_t ssdPrefill(const Ssd& p, int T, float* S, cudaStream_t s) {
  if (!ssdShapeOk(p)) return cudaErrorInvalidValue;
  ssdPrefillKernel<<<dim3(p.H, (p.P + 3) / 4), 128, 0, s>>>(p, T, S);
  return cudaGetLastError();
}

int ssdStepParts(int H, int P) { return H * ((P + SSD_ROWS - 1) / SSD_ROWS); }

cudaError_t ssdStep(const Ssd& p, int M, float* states, long long slotStride, const int* slots, cudaStream_t s, float* ssOut) {
  if (!ssdShapeOk(p) || (ssOut && M != 1)) return cudaErrorInvalidValue;
  return launch(ssdStepKernel, dim3(ssdStepParts(p.H, p.P), M), SSD_SW * 32, 0, s, p, states, slotStride, slots, ssOut);
}

}  // namespace me
