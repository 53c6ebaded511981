// Causal depthwise conv1d + silu: prefill over T rows of one sequence (one thread per channel,
// walking time with the window in registers) and a single step for a batch of sequences.
#include "common.cuh"
#include "kernels.cuh"

namespace me {

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
  for (int t = 0; t < T; t++) {
    const float x = in[(size_t)t * ldin + c0 + c];
    float acc = bias;
#pragma unroll
    for (int k = 0; k < 7; k++) if (k < K - 1) acc += wk[k] * win[k];
#pragma unroll
    for (int k = 0; k < 8; k++) if (k == K - 1) acc += wk[k] * x;
#pragma unroll
    for (int k = 0; k < 7; k++) if (k < K - 2) win[k] = win[k + 1];
#pragma unroll
    for (int k = 0; k < 7; k++) if (k == K - 2) win[k] = x;
    float o = siluf(acc);
    if (xq) xq[(size_t)t * C + c] = (int8_t)quant8(o, xqScale);
    out[(size_t)t * C + c] = qdq(o, qs);
  }
#pragma unroll
  for (int k = 0; k < 7; k++) if (k < K - 1) state[(size_t)c * (K - 1) + k] = win[k];
}

__global__ void conv1dStepKernel(const float* __restrict__ in, int ldin, int c0, int M, int C, int K, const float* __restrict__ w,
                                 const float* __restrict__ b, float* __restrict__ states, long long slotStride, const int* __restrict__ slots,
                                 const float* __restrict__ qscale, float* __restrict__ out, int8_t* __restrict__ xq, float xqScale) {
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
  conv1dStepKernel<<<dim3((C + 127) / 128, M), 128, 0, s>>>(in, ldin, c0, M, C, K, w, b, states, slotStride, slots, qscale, out, xq, xqScale);
  return cudaGetLastError();
}

}  // namespace me
