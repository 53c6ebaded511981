// Causal depthwise conv1d + silu: prefill over T rows of one sequence (one thread per channel,
// walking time with the window in registers, its inputs loaded eight rows ahead) and a single step
// for a batch of sequences.
#include "common.cuh"
#include "kernels.cuh"

namespace me {

// one step of the prefill: output of row t from the window and x, then the window shifts
__device__ __forceinline__ void convPrefillStep(float x, const float (&wk)[8], float (&win)[8], float bias, float qs, int K, int t, int C,
                                                int c, float* __restrict__ out, int8_t* __restrict__ xq, float xqScale) {
  float acc = bias;
#pragma unroll
  for (int k = 0; k < 7; k++)
    if (k < K - 1) acc += wk[k] * win[k];
#pragma unroll
  for (int k = 0; k < 8; k++)
    if (k == K - 1) acc += wk[k] * x;
#pragma unroll
  for (int k = 0; k < 7; k++)
    if (k < K - 2) win[k] = win[k + 1];
#pragma unroll
  for (int k = 0; k < 7; k++)
    if (k == K - 2) win[k] = x;
  float o = siluf(acc);
  if (xq) xq[(size_t)t * C + c] = (int8_t)quant8(o, xqScale);
  out[(size_t)t * C + c] = qdq(o, qs);
}

__global__ void conv1dPrefillKernel(const float* __restrict__ in, int ldin, int c0, int T, int C, int K, const float* __restrict__ w,
                                    const float* __restrict__ b, float* __restrict__ state, const float* __restrict__ qscale,
                                    float* __restrict__ out, int8_t* __restrict__ xq, float xqScale) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float win[8], wk[8];
#pragma unroll
  for (int k = 0; k < 8; k++) {
    win[k] = k < K - 1 ? state[(size_t)c * (K - 1) + k] : 0.f;
    wk[k] = k < K ? w[(size_t)c * K + k] : 0.f;
  }
  const float bias = b ? b[c] : 0.f;
  const float qs = qscale ? qscale[c] : 0.f;
  constexpr int CT = 8;  // inputs loaded ahead: one memory round trip per CT steps instead of one per step
  float xs[CT];
#pragma unroll
  for (int i = 0; i < CT; i++) xs[i] = i < T ? in[(size_t)i * ldin + c0 + c] : 0.f;
  for (int t0 = 0; t0 < T; t0 += CT) {
    float nx[CT];
#pragma unroll
    for (int i = 0; i < CT; i++) nx[i] = t0 + CT + i < T ? in[(size_t)(t0 + CT + i) * ldin + c0 + c] : 0.f;
#pragma unroll
    for (int i = 0; i < CT; i++) {
      const int t = t0 + i;
      if (t >= T) break;
      convPrefillStep(xs[i], wk, win, bias, qs, K, t, C, c, out, xq, xqScale);
    }
#pragma unroll
    for (int i = 0; i < CT; i++) xs[i] = nx[i];
  }
#pragma unroll
  for (int k = 0; k < 7; k++)
    if (k < K - 1) state[(size_t)c * (K - 1) + k] = win[k];
}

__global__ void conv1dStepKernel(const float* __restrict__ in, int ldin, int c0, int M, int C, int K, const float* __restrict__ w,
                                 const float* __restrict__ b, float* __restrict__ states, long long slotStride,
                                 const int* __restrict__ slots, const float* __restrict__ qscale, float* __restrict__ out,
                                 int8_t* __restrict__ xq, float xqScale) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
  if (c >= C) return;
  float* st = states + (long long)slots[m] * slotStride + (size_t)c * (K - 1);
  float o = convStepOne(in[(size_t)m * ldin + c0 + c], w + (size_t)c * K, b ? b[c] : 0.f, st, K);
  if (xq) xq[(size_t)m * C + c] = (int8_t)quant8(o, xqScale);
  out[(size_t)m * C + c] = qdq(o, qscale ? qscale[c] : 0.f);
}

cudaError_t conv1dPrefill(const float* in, int ldin, int c0, int T, int C, int K, const float* w, const float* b, float* state,
                          const float* qscale, float* out, int8_t* xq, float xqScale, cudaStream_t s) {
  if (K < 2 || K > 8) return cudaErrorInvalidValue;
  conv1dPrefillKernel<<<(C + 127) / 128, 128, 0, s>>>(in, ldin, c0, T, C, K, w, b, state, qscale, out, xq, xqScale);
  return cudaGetLastError();
}

cudaError_t conv1dStep(const float* in, int ldin, int c0, int M, int C, int K, const float* w, const float* b, float* states,
                       long long slotStride, const int* slots, const float* qscale, float* out, int8_t* xq, float xqScale, cudaStream_t s) {
  if (K < 2 || K > 8) return cudaErrorInvalidValue;
  conv1dStepKernel<<<dim3((C + 127) / 128, M), 128, 0, s>>>(in, ldin, c0, M, C, K, w, b, states, slotStride, slots, qscale, out, xq,
                                                            xqScale);
  return cudaGetLastError();
}

}  // namespace me
