// Small device helpers shared by the kernels.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <utility>

namespace me {

// Programmatic dependent launch (sm_90 and later). A kernel started with launch() may begin while
// the kernel before it in the stream is still running: until pdlWait() returns it may only read
// what no earlier kernel writes (weights), so its launch and first weight loads overlap the previous
// kernel's tail. Every kernel started with launch() calls pdlWait() before touching activations,
// then pdlRelease() so that the next one may be scheduled. A kernel that alone writes a state (the
// SSM steps) may read it before the wait: each kernel releases only after its own wait, so when one
// starts every kernel but the one before it has finished. Below sm_90 both are no-ops and
// launch() is an ordinary launch.
__device__ __forceinline__ void pdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdlRelease() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
bool pdlEnabled();  // device is sm_90+ and MAMBA_EDGE_PDL is not 0

template <class... P, class... A>
cudaError_t launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A&&... args) {
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = s;
  cfg.attrs = at, cfg.numAttrs = pdlEnabled() ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, k, std::forward<A>(args)...);
}

__device__ __forceinline__ float siluf(float x) { return x / (1.f + __expf(-x)); }
// PyTorch's softplus with threshold 20
__device__ __forceinline__ float softplusf(float x) { return x > 20.f ? x : log1pf(__expf(x)); }

// symmetric int8 as onnxruntime's QuantizeLinear does it: x / s rounded half to even, saturated
__device__ __forceinline__ int quant8(float v, float s) {
  float q = rintf(v / s);
  return (int)fminf(fmaxf(q, -128.f), 127.f);
}
__device__ __forceinline__ float qdq(float v, float s) { return s > 0.f ? (float)quant8(v, s) * s : v; }

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result
__device__ __forceinline__ float blockSum(float v, float* scratch /* 32 floats */) {
  v = warpSum(v);
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
  __syncthreads();
  if (l == 0) scratch[w] = v;
  __syncthreads();
  const int nw = blockDim.x >> 5;
  v = l < nw ? scratch[l] : 0.f;
  return warpSum(v);
}

// Batch-1 norms taken from partial sums of squares: a producer's blocks each write their share of
// its output row's sum of squares (sumSquaresOut), and a consumer's blocks add those few numbers up
// (rmsFromParts) instead of reading the whole row. No atomics: the same sums in the same order on
// every run. Every thread of the block calls them.
__device__ __forceinline__ void sumSquaresOut(float sq, float* out) {
  __shared__ float scratch[32];
  sq = blockSum(sq, scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = sq;
}
// 1 / rms of a row of n values from its nPart partial sums of squares
__device__ __forceinline__ float rmsFromParts(const float* part, int nPart, int n, float eps) {
  __shared__ float scratch[32];
  float ss = 0.f;
  for (int i = threadIdx.x; i < nPart; i += blockDim.x) ss += part[i];
  return 1.f / sqrtf(blockSum(ss, scratch) / n + eps);
}

// one causal-conv step of one channel: window = [state (K-1, oldest first), x]; the state shifts
__device__ __forceinline__ float convStepOne(float x, const float* w, float b, float* st, int K) {
  float acc = b;
  float prev[8];
#pragma unroll
  for (int k = 0; k < 8; k++)
    if (k < K - 1) prev[k] = st[k];
#pragma unroll
  for (int k = 0; k < 8; k++)
    if (k < K - 1) acc += w[k] * prev[k];
  acc += w[K - 1] * x;
#pragma unroll
  for (int k = 0; k < 8; k++)
    if (k < K - 2) st[k] = prev[k + 1];
  st[K - 2] = x;
  return siluf(acc);
}

}  // namespace me
