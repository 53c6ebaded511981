// 4-bit weight helpers of the GEMVs (linear.cu), in a header for kernels that share them.
#pragma once
#include <cuda_fp16.h>
#include <cstdint>

namespace me {

__device__ __forceinline__ __half2 asHalf2(uint32_t v) { return *reinterpret_cast<__half2*>(&v); }

// Eight 4-bit weights (one 32-bit word, low nibble first) as four half2 holding q - 8 exactly, in the
// order (k0,k4) (k1,k5) (k2,k6) (k3,k7): each pair is masked straight into the mantissa of 1024.
__device__ __forceinline__ void dequant8(uint32_t q, __half2* d) {
  const __half2 off = asHalf2(0x64086408u), sixteenth = asHalf2(0x2C002C00u), off16 = asHalf2(0xD480D480u);  // 1032, 1/16, -72
  const uint32_t q8 = q >> 8;
  d[0] = __hsub2(asHalf2((q & 0x000F000Fu) | 0x64006400u), off);               // 1024 + n
  d[1] = __hfma2(asHalf2((q & 0x00F000F0u) | 0x64006400u), sixteenth, off16);  // (1024 + 16 n) / 16 - 72
  d[2] = __hsub2(asHalf2((q8 & 0x000F000Fu) | 0x64006400u), off);
  d[3] = __hfma2(asHalf2((q8 & 0x00F000F0u) | 0x64006400u), sixteenth, off16);
}

// The batch-1 row GEMV's staging order of an fp16 input row (see gemvI4RowKernel in linear.cu).
__device__ __forceinline__ int i4RowSlot(int k) {  // half2 slot of inputs (k, k + 1), k even
  const int G = k >> 6, j = (k >> 4) & 3, r = k & 15;
  return ((G * 4 + ((r & 7) >> 1)) * 4 + j) * 2 + (r >> 3);
}

}  // namespace me
