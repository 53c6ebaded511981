// The fused prefill and decode-step kernels behind the onnxruntime custom operators (ops.cpp): plain C++ over
// float arrays, no onnxruntime types, so each is one pass over its state. Rows are sequences of the
// batch; every function handles rows [r0, r1) so the caller can split a batch across threads.
#pragma once
#include <cstdint>
#include <vector>

namespace me {

// The instruction set the kernels run in: the best this CPU has, or less where
// MAMBA_EDGE_ORT_OPS_ISA (portable, avx2) asks for less, so the tests run every version on one machine.
enum class Isa { portable, neon, avx2, avx512 };
Isa isa();
const char* isaName(Isa i);

// Causal depthwise conv, one step: window = [state (K-1 rows), x]; y = silu(Σ_k window_k · w_k + bias);
// the new state is the window's last K-1 rows. x (B, C), state and state_out (B, K-1, C) time-major,
// wT (K, C), bias (C) or null; y (B, C). state and stateOut may be the same array (a step in place).
void convStep(int64_t r0, int64_t r1, int64_t K, int64_t C, const float* x, const float* state, const float* wT, const float* bias,
              float* y, float* stateOut);

// Mamba-1 selective state update, one step, state-major h (B, N, E):
//   dt = softplus(dtRaw) (PyTorch's threshold 20); h' = exp(dt·A) h + (dt·x) ⊗ B;
//   y = (C·h' + D·x) · silu(z)
// dtRaw, x, z, y (B, E); Bm, Cm (B, N); A (N, E); D (E). `scratch` holds 2·E floats per call. h and hOut
// may be the same array.
void selectiveStep(int64_t r0, int64_t r1, int64_t N, int64_t E, const float* h, const float* dtRaw, const float* x, const float* Bm,
                   const float* Cm, const float* z, const float* A, const float* D, float* y, float* hOut, float* scratch);

// The same over T tokens of one sequence (prefill), channels [e0, e1) only (channels are independent,
// so threads split them): h starts as h0 (N, E) and ends as the state after the last token; dtRaw,
// x, z, y (T, E); Bm, Cm (T, N). `scratch` holds 2·(e1 − e0) floats.
void selectiveScan(int64_t T, int64_t N, int64_t E, int64_t e0, int64_t e1, const float* h0, const float* dtRaw, const float* x,
                   const float* Bm, const float* Cm, const float* z, const float* A, const float* D, float* y, float* h, float* scratch);

// Mamba-2 (SSD) state update, one step, S (B, H, P, N), heads grouped G to a B/C group:
//   dt = clip(softplus(dtRaw + dtBias), dtMin, dtMax) per head; S' = exp(dt·A) S + (dt·x) ⊗ B;
//   y = S'·C + D·x
// dtRaw (B, H); x, y (B, H·P); Bm, Cm (B, G·N); dtBias, A, D (H). S and SOut may be the same array.
void ssdStep(int64_t r0, int64_t r1, int64_t H, int64_t P, int64_t N, int64_t G, const float* S, const float* dtRaw, const float* x,
             const float* Bm, const float* Cm, const float* dtBias, const float* A, const float* D, float dtMin, float dtMax, float* y,
             float* SOut);

// The same over T tokens of one sequence (prefill), heads [h0, h1) only: S starts as S0 (H, P, N)
// and ends as the state after the last token; dtRaw (T, H); x, y (T, H·P); Bm, Cm (T, G·N).
void ssdScan(int64_t T, int64_t H, int64_t h0, int64_t h1, int64_t P, int64_t N, int64_t G, const float* S0, const float* dtRaw,
             const float* x, const float* Bm, const float* Cm, const float* dtBias, const float* A, const float* D, float dtMin,
             float dtMax, float* y, float* S);

}  // namespace me

namespace me {

// 4-bit weights (matmul_q4.cpp) regrouped from MatMulNBits' layout (N rows of `blocks` blocks of
// `half` bytes, inputs 2i and 2i + 1 of a block in the low and high nibble of byte i, value (q − 8)·s)
// so that the bytes of 16 rows at one position lie side by side: one 16-byte load then holds two
// inputs' weights for 16 outputs. Rows past N (the last group's padding) are zero.
struct Q4Packed {
  int64_t n = 0, groups = 0, blocks = 0, half = 0;
  std::vector<uint8_t> w;   // [groups][blocks][half][16]
  std::vector<float> s, o;  // [groups][blocks][16]: the scale, and −8 × it
  const uint8_t* bytes(int64_t g, int64_t b, int64_t i) const { return w.data() + ((g * blocks + b) * half + i) * 16; }
  const float* scale(int64_t g, int64_t b) const { return s.data() + (g * blocks + b) * 16; }
  const float* offset(int64_t g, int64_t b) const { return o.data() + (g * blocks + b) * 16; }
};

// Regroups W: w (N, blocks, half) bytes, s (N, blocks).
void q4Pack(int64_t N, int64_t blocks, int64_t half, const uint8_t* w, const float* s, Q4Packed& p);

// y (M, N) = x · Wᵀ for the outputs of groups [g0, g1) (16 each), so threads can split them. x is
// (M, blocks·2·half) with zeros past the true input width.
void q4MatMul(const Q4Packed& p, int64_t M, int64_t g0, int64_t g1, const float* x, float* y);

}  // namespace me
