// The kernels of the native runner, each callable on raw device pointers (no engine, no TensorRT):
// the runner and the TensorRT plugins only adapt shapes and buffers to these launchers.
// Conventions: row-major; linear weights in PyTorch's (out, in) layout; activations between
// kernels in float32 or int8 (symmetric, static per-tensor scale); SSM and conv states in float32.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace me {

// ---- linear layers: y[m, n] = sum_k x[m, k] * W[n, k] (rescaled) + bias[n] -----------------------
enum WType : int { W_F16 = 0, W_I8 = 1, W_I4 = 2 };

struct LinearW {
  int type;            // WType
  int N, K;            // outputs, inputs
  const void* w;       // F16: (N, K) half; I8: (N, K) int8; I4: (N, K/group, group/2) bytes, low nibble first, zero point 8
  const float* scale;  // I8: (N) per output channel; I4: (N, K/group); F16: null
  int group;           // I4 group size (a multiple of 32)
  const float* bias;   // (N) or null
  int packed;          // I4 only: w is in the tensor-core tile order of packI4 (see i4Packable)
  // Packed I4 only, optional: scratch that lets a decode GEMV split K across blocks (partial sums
  // and one arrival counter per 16-row tile, zeroed once; the last block to arrive resets it). Small
  // matrices need the split to reach enough of the GPU. One workspace serves every linear layer of
  // a stream (kernels of one stream never run their split phases at the same time).
  float* ws;          // GEMV_WS_FLOATS floats
  unsigned* wsCount;  // GEMV_WS_TILES counters
};
constexpr int GEMV_WS_FLOATS = 1 << 17;
constexpr int GEMV_WS_TILES = 1 << 16;

// 4-bit weights in tile order: for each 16-row tile and each 64 inputs, 32 lanes × 4 words, each word
// the eight weights one lane of an m16n8k16 tensor-core product needs (see linear.cu). Decode then
// runs on tensor cores: one instruction per 256 weights, any batch up to 8 at the cost of one.
bool i4Packable(const LinearW& W);  // N % 16 == 0, K % 64 == 0, group % 64 == 0
// packs W.w (row-major 4-bit) into out (N * K / 2 bytes, device memory)
cudaError_t packI4(const LinearW& W, void* out, cudaStream_t s);

// The causal-conv step fused into a decode GEMV's epilogue: output columns [c0, c0+C) are conv
// channels; their new input goes through one conv step (state (C, K-1) per sequence, oldest
// first), silu, then an optional fake quantization per channel.
struct ConvStep {
  int c0, C, K;
  const float* w;  // (C, K)
  const float* b;  // (C) or null
  float* states;   // state of channel c, row m: states + slots[m] * slotStride + c * (K-1)
  long long slotStride;
  const int* slots;     // (M)
  const float* qscale;  // (C) quantize-dequantize scale per channel (0: none), or null
  float* xc;
  int ldxc;  // (M, C) output after silu (and fake quantization)
  int8_t* xq;
  float xqScale;
  int ldxq;  // optional int8 copy (scale xqScale) for the next linear
};

// The block's RMSNorm fused into a decode GEMV's input: x[m, k] = hidden[m, k] / rms(hidden[m]) * w[k],
// then quantized with `scale` (int8 for W_I8; fake-quantized when scale > 0 otherwise). Each block
// computes the rows' norms itself, exactly as addRmsnormQuant does.
struct NormIn {
  const float* hidden;  // (M, lda)
  const float* w;
  float eps;
  float scale;
  // batch 1: the row's sum of squares as nPart partial sums written by the GEMV that last added
  // into hidden (its ssOut), instead of a reduction over the row in every block
  const float* part;
  int nPart;
  // the rotation over the whole row, E = hm · hb (hm 12 or 20; 0 or 1: blocks of hb only): after the
  // blocks' transforms, the Paley Hadamard matrix H_hm mixes the hm blocks
  int hm;
};

// x: float32 (W_F16 / W_I4) or int8 with scale xScale (W_I8). Decode (M <= 8 rows per launch,
// bandwidth-bound GEMV) or prefill (tensor-core GEMM); `linear` picks.
// addToY: y += result (a residual update) instead of y = result
// ssOut (batch 1, with addToY, where gemvSumSquaresParts(W) > 0): also writes that many partial sums
// of the squares of y's new row, for the next GEMV's NormIn.part.
cudaError_t gemv(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, const ConvStep* ep, cudaStream_t s,
                 const NormIn* norm = nullptr, int addToY = 0, float* ssOut = nullptr);
// how many partial sums of squares a batch-1 GEMV of W writes (0: it cannot), with or without a
// fused norm of its input; at most GEMV_SS_PARTS
int gemvSumSquaresParts(const LinearW& W, bool norm = false);
// whether a batch-1 GEMV of W can take its input's norm from partial sums (NormIn.part)
bool gemvTakesPartialNorm(const LinearW& W);
constexpr int GEMV_SS_PARTS = 4096;
// tuning: forces the batch-1 4-bit row GEMV's warps per 16-row tile (P) and tiles per block
// (P * tpb <= 16) instead of its rule; 0, 0 restores the rule. Not thread-safe; for sweeps only.
void setI4RowGrid(int P, int tpb);
// the grid the batch-1 4-bit row GEMV takes for N x K (norm: with its RMSNorm), and its resident blocks per multiprocessor
void i4RowPlan(int N, int K, bool norm, int* P, int* tpb, int* blocks, int* resident);
cudaError_t gemm(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, cudaStream_t s);
cudaError_t linear(const LinearW& W, const void* x, int lda, float xScale, int M, float* y, int ldy, cudaStream_t s);

// ---- causal depthwise conv1d over T rows of one sequence (prefill) --------------------------------
// in: (T, ldin) with channel c at column c0 + c; out (T, C) = fake-quant(silu(conv)); state (C, K-1)
// continued and updated; xq (optional) int8 of out with xqScale.
cudaError_t conv1dPrefill(const float* in, int ldin, int c0, int T, int C, int K, const float* w, const float* b, float* state,
                          const float* qscale, float* out, int8_t* xq, float xqScale, cudaStream_t s);
// one step for M sequences: in (M, ldin); state of row m at states + slots[m]*slotStride
cudaError_t conv1dStep(const float* in, int ldin, int c0, int M, int C, int K, const float* w, const float* b, float* states,
                       long long slotStride, const int* slots, const float* qscale, float* out, int8_t* xq, float xqScale, cudaStream_t s);

// ---- Mamba-1 selective scan ----------------------------------------------------------------------
struct Scan1 {
  int E, N, R;
  const float* dbl;
  int lddbl;           // (rows, R + 2N): [dt_low | B | C] from x_proj
  const float* dtRaw;  // prefill: (T, E) dt_proj output without bias; step: null (dt_proj fused)
  const __half* dtW;   // (E, R) dt_proj weight (step)
  const float* dtB;    // (E) dt_proj bias
  const float* A;      // (E, N)
  const float* D;      // (E)
  const float* x;      // (rows, E) SSM input after conv (and fake quantization)
  const float* z;
  int ldz;       // gate
  float sB, sC;  // fake-quantization scales of B and C (0: none)
  // output y = (C·h + D x) * silu(z): float32, or int8 with outScale (outInt8), or fake-quantized (outScale > 0)
  float* y;
  int8_t* yq;
  float outScale;
};
// prefill: T rows of one sequence, state h (E, N)
cudaError_t scan1Prefill(const Scan1& p, int T, float* h, cudaStream_t s);
// step: M sequences; state of row m at states + slots[m]*slotStride
cudaError_t scan1Step(const Scan1& p, int M, float* states, long long slotStride, const int* slots, cudaStream_t s);

// ---- Mamba-2 SSD ---------------------------------------------------------------------------------
struct Ssd {
  int H, P, N, G;  // heads, head dim, state size, groups
  const float* xbc;
  int ldxbc;  // (rows, H*P + 2*G*N): [x | B | C] after conv
  const float* dtRaw;
  int lddt;                     // (rows, H) before bias
  const float *dtBias, *A, *D;  // (H)
  float dtLo, dtHi;
  const float* z;
  int ldz;  // gate (applied here when gateHere)
  int gateHere;
  float* y;  // (rows, H*P)
};
// prefill over T rows of one sequence, recurrent form with the state in registers; state (H, P, N)
cudaError_t ssdPrefill(const Ssd& p, int T, float* S, cudaStream_t s);
// one decode step of M rows; ssOut (batch 1): ssdStepParts(H, P) partial sums of squares of y's row,
// for the out_proj GEMV that takes the gated RMSNorm (NormIn.part)
cudaError_t ssdStep(const Ssd& p, int M, float* states, long long slotStride, const int* slots, cudaStream_t s, float* ssOut = nullptr);
int ssdStepParts(int H, int P);

// ---- norms, rotation, quantization --------------------------------------------------------------
// hidden (M, D) += add (if add); out = hidden / rms * w: float32 (fake-quantized when scale > 0 and
// outQ is null) or int8 with scale into outQ.
cudaError_t addRmsnormQuant(float* hidden, const float* add, int M, int D, const float* w, float eps, float* out, int8_t* outQ, float scale,
                            cudaStream_t s);
// per row of y (M, E): optional gate silu(z) before (or after) an RMSNorm over groups of gs channels
// (gs = 0: no norm), then an optional block Hadamard rotation (block hb, 0: none), then output as
// above (float32 / fake-quantized / int8).
struct RowPost {
  int E;
  const float* z;
  int ldz;
  int gate;
  int normBeforeGate;
  int gs;
  const float* w;
  float eps;
  int hb;
  float scale;
  // batch 1, y already gated: the norm over the whole row (weights w) from nPart partial sums of
  // squares (the SSD step's), so the rotation runs in E / hb blocks instead of one for the row
  const float* part;
  int nPart;
  // the rotation over the whole row, E = hm · hb (hm 12 or 20; 0 or 1: blocks of hb only): after the
  // blocks' transforms, the Paley Hadamard matrix H_hm mixes the hm blocks
  int hm;
};
cudaError_t rowNormRotateQuant(const RowPost& p, const float* y, int M, float* out, int8_t* outQ, cudaStream_t s);

// ---- calibration statistics (the builder's, stats.cu) ----------------------------------------------
// of x (rows, ld), columns [0, width): atomically, the largest |x| (as float bits) into *amax, each
// column's into chan[c] (if chan), and a count per bin of |x| into hist (bins bins, if hist); the
// first kStatSharedBins bins are counted in shared memory first.
constexpr int kStatSharedBins = 16384;
cudaError_t activationStats(const float* x, int ld, int rows, int width, unsigned* amax, unsigned* chan, unsigned long long* hist, int bins,
                            cudaStream_t s);
// G (n, n) += XᵀX for X (rows, ld): the 64 × 64 tiles on and below the diagonal (mirror the lower
// triangle to read G whole); float sums over the rows, added into G in double.
cudaError_t gramAdd(const float* X, int ld, int rows, int n, double* G, cudaStream_t s);

// ---- embedding, argmax, top-k -------------------------------------------------------------------
cudaError_t embed(const __half* table, int D, const int* tokens, int M, float* out, cudaStream_t s);
// rows of a 4-bit table (vocab, D / group, group / 2), low nibble first, zero point 8, scales (vocab, D / group)
cudaError_t embedI4(const uint8_t* table, const float* scale, int group, int D, const int* tokens, int M, float* out, cudaStream_t s);
// scratch: 2 * 64 * M floats of device memory
cudaError_t argmax(const float* logits, int M, int V, int* out, float* scratch, cudaStream_t s);
// the k largest (value, then lowest index first) of each row: values (M, k), indices (M, k); k <= 256
cudaError_t topk(const float* logits, int M, int V, int k, float* vals, int* idx, cudaStream_t s);

}  // namespace me
