// Calibration statistics of an activation tensor on the GPU: its absolute maximum, per-channel
// maxima, a histogram of |x| (the builder's percentile.ts bins: the float32 bit pattern of |x|
// shifted right by 15, from exponent 103 up) and XᵀX (float sums over one window's rows, added
// into double sums, as the builder's native XᵀX does on the CPU).
#include "kernels.cuh"

namespace me {

namespace {

constexpr int kStatThreads = 256;
constexpr int kStatRows = 128;  // rows per block
constexpr unsigned kFirstBin = (127u - 24u) << 8;

__device__ __forceinline__ int histBin(float a, int bins) {
  const int b = (int)(__float_as_uint(a) >> 15) - (int)kFirstBin;
  return b < 0 ? 0 : b >= bins ? bins - 1 : b;
}

// x (rows, ld), columns [0, width): thread = column, block = kStatRows rows. |x| are non-negative,
// so their bit patterns order as unsigned integers (atomicMax on the bits).
__global__ void statsKernel(const float* x, int ld, int rows, int width, unsigned* amax, unsigned* chan, unsigned long long* hist,
                            int bins) {
  extern __shared__ unsigned local[];  // bins [0, kStatSharedBins) of this block, when hist
  const int shared = hist ? kStatSharedBins : 0;
  for (int i = threadIdx.x; i < shared; i += blockDim.x) local[i] = 0;
  __syncthreads();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  const int r0 = blockIdx.y * kStatRows, r1 = min(rows, r0 + kStatRows);
  float m = 0.f;
  if (c < width) {
    for (int r = r0; r < r1; r++) {
      const float a = fabsf(x[(size_t)r * ld + c]);
      m = fmaxf(m, a);
      if (hist) {
        const int b = histBin(a, bins);
        if (b < shared)
          atomicAdd(&local[b], 1u);
        else
          atomicAdd(&hist[b], 1ull);
      }
    }
    if (chan) atomicMax(&chan[c], __float_as_uint(m));
  }
  // the block's maximum
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  __shared__ float warpMax[kStatThreads / 32];
  if ((threadIdx.x & 31) == 0) warpMax[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    float bm = 0.f;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) bm = fmaxf(bm, warpMax[w]);
    atomicMax(amax, __float_as_uint(bm));
  }
  for (int i = threadIdx.x; i < shared; i += blockDim.x)
    if (local[i]) atomicAdd(&hist[i], (unsigned long long)local[i]);
}

constexpr int kTile = 64, kDepth = 16;

// G (n, n) += XᵀX over X (rows, ld), tiles of 64 × 64 on and below the diagonal only (G's upper
// triangle outside the diagonal tiles is left alone); 256 threads, 4 × 4 outputs each, float sums
// over the rows, added once into G.
__global__ void __launch_bounds__(256) gramKernel(const float* X, int ld, int rows, int n, double* G) {
  // the tile (ti, tj), ti >= tj, of the blockIdx.x-th lower tile in row order
  int ti = (int)((sqrtf(8.f * blockIdx.x + 1.f) - 1.f) * 0.5f);
  while ((ti + 1) * (ti + 2) / 2 <= (int)blockIdx.x) ti++;
  while (ti * (ti + 1) / 2 > (int)blockIdx.x) ti--;
  const int tj = blockIdx.x - ti * (ti + 1) / 2;
  const int i0 = ti * kTile, j0 = tj * kTile;
  __shared__ float A[kDepth][kTile], B[kDepth][kTile];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int r0 = 0; r0 < rows; r0 += kDepth) {
    for (int k = threadIdx.x; k < kDepth * kTile; k += blockDim.x) {
      const int r = k / kTile, col = k % kTile;
      const bool in = r0 + r < rows;
      A[r][col] = in && i0 + col < n ? X[(size_t)(r0 + r) * ld + i0 + col] : 0.f;
      B[r][col] = in && j0 + col < n ? X[(size_t)(r0 + r) * ld + j0 + col] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kDepth; r++) {
      float a[4], b[4];
#pragma unroll
      for (int u = 0; u < 4; u++) a[u] = A[r][ty * 4 + u], b[u] = B[r][tx * 4 + u];
#pragma unroll
      for (int u = 0; u < 4; u++)
#pragma unroll
        for (int v = 0; v < 4; v++) acc[u][v] = fmaf(a[u], b[v], acc[u][v]);
    }
    __syncthreads();
  }
  for (int u = 0; u < 4; u++)
    for (int v = 0; v < 4; v++) {
      const int i = i0 + ty * 4 + u, j = j0 + tx * 4 + v;
      if (i < n && j < n) G[(size_t)i * n + j] += (double)acc[u][v];
    }
}

}  // namespace

cudaError_t activationStats(const float* x, int ld, int rows, int width, unsigned* amax, unsigned* chan, unsigned long long* hist, int bins,
                            cudaStream_t s) {
  if (rows <= 0 || width <= 0) return cudaSuccess;
  const size_t smem = hist ? kStatSharedBins * sizeof(unsigned) : 0;
  static const cudaError_t opt =
      cudaFuncSetAttribute(statsKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(kStatSharedBins * sizeof(unsigned)));
  if (opt != cudaSuccess) return opt;
  const dim3 grid((width + kStatThreads - 1) / kStatThreads, (rows + kStatRows - 1) / kStatRows);
  statsKernel<<<grid, kStatThreads, smem, s>>>(x, ld, rows, width, amax, chan, hist, bins);
  return cudaGetLastError();
}

cudaError_t gramAdd(const float* X, int ld, int rows, int n, double* G, cudaStream_t s) {
  if (rows <= 0 || n <= 0) return cudaSuccess;
  const int t = (n + kTile - 1) / kTile;
  gramKernel<<<t*(t + 1) / 2, 256, 0, s>>>(X, ld, rows, n, G);
  return cudaGetLastError();
}

}  // namespace me
