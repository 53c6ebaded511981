// Moves sequence states between their slots and a bucket's batched state tensors, so that a step
// over any set of slots is one gather, one enqueueV3 and one scatter, all inside the bucket's CUDA
// graph (the slot ids are read from device memory, so the graph does not change with them).
#include <cuda_runtime.h>

#include "slots.h"

namespace {

__global__ void moveRows(const MeTrtRows* __restrict__ rows, float* slots, int64_t slotFloats, const int32_t* __restrict__ ids,
                         int toBucket) {
  const MeTrtRows r = rows[blockIdx.y];
  const int b = blockIdx.z;
  const int64_t slot = ids[b];
  float* bucket = r.bucket + static_cast<int64_t>(b) * r.floats;
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < r.floats; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (toBucket)
      bucket[i] = slots[slot * slotFloats + r.offset + i];
    else
      slots[slot * slotFloats + r.offset + i] = bucket[i];
  }
}

}  // namespace

cudaError_t meTrtMoveRows(const MeTrtRows* rows, int tensors, float* slots, int64_t slotFloats, const int32_t* ids, int batch, int toBucket,
                          int64_t maxRowFloats, cudaStream_t stream) {
  if (tensors == 0 || batch == 0) return cudaSuccess;
  const int threads = 256;
  int64_t blocks = (maxRowFloats + threads - 1) / threads;
  if (blocks > 64) blocks = 64;
  moveRows<<<dim3(static_cast<unsigned>(blocks), tensors, batch), threads, 0, stream>>>(rows, slots, slotFloats, ids, toBucket);
  return cudaGetLastError();
}
