// Gather / scatter of sequence states between slots and a bucket's batched state tensors (slots.cu).
#pragma once
#include <cuda_runtime_api.h>
#include <stdint.h>

/** One state tensor of a bucket: its batched buffer, and where its row sits in a slot (floats). */
struct MeTrtRows {
  float* bucket;
  int64_t floats;
  int64_t offset;
};

/** rows (device, `tensors` entries) ⇄ slots[ids[b]] for b < batch: to the bucket when toBucket, else back. */
cudaError_t meTrtMoveRows(const MeTrtRows* rows, int tensors, float* slots, int64_t slotFloats, const int32_t* ids, int batch, int toBucket,
                          int64_t maxRowFloats, cudaStream_t stream);
