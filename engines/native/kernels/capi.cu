// extern "C" entry points for each kernel on raw device pointers, so the kernels can be checked one
// by one (scripts/gpu/kernel_check.py calls these through ctypes on PyTorch tensors). Each call
// synchronizes and returns the CUDA error code (0 = success).
#include <algorithm>
#include <vector>
#include "kernels.cuh"

using namespace me;

static int done(cudaError_t e) {
  if (e != cudaSuccess) return (int)e;
  return (int)cudaDeviceSynchronize();
}

// 4-bit weights come row-major; where their shape allows, they are packed into tile order first, as
// the runner does on load (with a split-K workspace), so the kernels check the layout the runner uses
template <class F>
static int withLayout(LinearW W, F&& f) {
  if (!i4Packable(W)) return done(f(W));
  void* packed = nullptr;
  cudaError_t e = cudaMalloc(&packed, (size_t)W.N * W.K / 2);
  if (!e) e = cudaMalloc(&W.ws, GEMV_WS_FLOATS * sizeof(float));
  if (!e) e = cudaMalloc(&W.wsCount, GEMV_WS_TILES * sizeof(unsigned));
  if (!e) e = cudaMemset(W.wsCount, 0, GEMV_WS_TILES * sizeof(unsigned));
  if (!e) e = packI4(W, packed, 0);
  if (!e) {
    W.w = packed, W.packed = 1;
    e = f(W);
  }
  const int rc = done(e);
  cudaFree(packed);
  cudaFree(W.ws);
  cudaFree(W.wsCount);
  return rc;
}

extern "C" {

int me_k_linear(int gemmOnly, int wtype, int N, int K, const void* w, const float* scale, int group, const float* bias, const void* x,
                int lda, float xScale, int M, float* y, int ldy) {
  return withLayout(LinearW{wtype, N, K, w, scale, group, bias, 0}, [&](const LinearW& W) {
    return gemmOnly ? gemm(W, x, lda, xScale, M, y, ldy, 0) : gemv(W, x, lda, xScale, M, y, ldy, nullptr, 0);
  });
}

// decode GEMV with the RMSNorm fused into its input and the result added into y
int me_k_gemv_norm(int wtype, int N, int K, const void* w, const float* scale, int group, const float* bias, const float* hidden,
                   const float* normW, float eps, float nScale, int M, float* y, int ldy) {
  NormIn n{hidden, normW, eps, nScale};
  return withLayout(LinearW{wtype, N, K, w, scale, group, bias, 0},
                    [&](const LinearW& W) { return gemv(W, hidden, K, nScale, M, y, ldy, nullptr, 0, &n, 1); });
}

// batch-1 GEMV adding into y (one row) that also writes the partial sums of squares of y's new row
// into ss (their count into *parts); then a second GEMV (W2: N2 × N) that takes its input's RMSNorm
// from those partial sums, adding into y2: the pair out_proj -> next in_proj of the runner. Both
// have weights of type wtype (4-bit: groups of 128); x is int8 with scale xScale for int8 weights.
int me_k_gemv_ss_pair(int wtype, int N, int K, const void* w, const float* scale, const void* x, float xScale, float* y, float* ss,
                      int* parts, int N2, const void* w2, const float* scale2, const float* normW, float eps, float nScale, float* y2) {
  return withLayout(LinearW{wtype, N, K, w, scale, 128, nullptr, 0}, [&](const LinearW& W) {
    const int n = gemvSumSquaresParts(W);
    if (n == 0) return cudaErrorNotSupported;
    cudaError_t e = cudaMemcpy(parts, &n, sizeof(int), cudaMemcpyHostToDevice);
    if (!e) e = gemv(W, x, K, xScale, 1, y, N, nullptr, 0, nullptr, 1, ss);
    if (e) return e;
    return (cudaError_t)withLayout(LinearW{wtype, N2, N, w2, scale2, 128, nullptr, 0}, [&](const LinearW& W2) {
      if (!gemvTakesPartialNorm(W2)) return cudaErrorNotSupported;
      NormIn nin{y, normW, eps, nScale, ss, n};
      return gemv(W2, y, N, nScale, 1, y2, N2, nullptr, 0, &nin, 1);
    });
  });
}

int me_k_conv1d_prefill(const float* in, int ldin, int c0, int T, int C, int K, const float* w, const float* b, float* state,
                        const float* qscale, float* out, int8_t* xq, float xqScale) {
  return done(conv1dPrefill(in, ldin, c0, T, C, K, w, b, state, qscale, out, xq, xqScale, 0));
}

int me_k_conv1d_step(const float* in, int ldin, int c0, int M, int C, int K, const float* w, const float* b, float* states,
                     long long slotStride, const int* slots, const float* qscale, float* out, int8_t* xq, float xqScale) {
  return done(conv1dStep(in, ldin, c0, M, C, K, w, b, states, slotStride, slots, qscale, out, xq, xqScale, 0));
}

int me_k_scan1(int prefill, int E, int N, int R, const float* dbl, int lddbl, const float* dtRaw, const __half* dtW, const float* dtB,
               const float* A, const float* D, const float* x, const float* z, int ldz, float sB, float sC, float* y, int8_t* yq,
               float outScale, int rows, float* states, long long slotStride, const int* slots) {
  Scan1 p{E, N, R, dbl, lddbl, dtRaw, dtW, dtB, A, D, x, z, ldz, sB, sC, y, yq, outScale};
  return done(prefill ? scan1Prefill(p, rows, states, 0) : scan1Step(p, rows, states, slotStride, slots, 0));
}

int me_k_ssd(int prefill, int H, int P, int N, int G, const float* xbc, int ldxbc, const float* dtRaw, int lddt, const float* dtBias,
             const float* A, const float* D, float dtLo, float dtHi, const float* z, int ldz, int gate, float* y, int rows, float* states,
             long long slotStride, const int* slots, float* ssOut) {
  Ssd p{H, P, N, G, xbc, ldxbc, dtRaw, lddt, dtBias, A, D, dtLo, dtHi, z, ldz, gate, y};
  return done(prefill ? ssdPrefill(p, rows, states, 0) : ssdStep(p, rows, states, slotStride, slots, 0, ssOut));
}

int me_k_add_rmsnorm(float* hidden, const float* add, int M, int D, const float* w, float eps, float* out, int8_t* outQ, float scale) {
  return done(addRmsnormQuant(hidden, add, M, D, w, eps, out, outQ, scale, 0));
}

int me_k_row_post(int E, const float* z, int ldz, int gate, int normBeforeGate, int gs, const float* w, float eps, int hb, float scale,
                  const float* y, int M, float* out, int8_t* outQ, const float* part, int nPart, int hm) {
  RowPost p{E, z, ldz, gate, normBeforeGate, gs, w, eps, hb, scale, part, nPart, hm};
  return done(rowNormRotateQuant(p, y, M, out, outQ, 0));
}

// Times batch-1 GEMVs of W (N x K, 4-bit: groups of 128, packed as the runner packs them) over
// `copies` copies of the weights in turn, so that each call streams them from DRAM rather than L2:
// *ms = mean milliseconds per call over `iters` back-to-back calls (inter-kernel gaps included).
// norm: the 4-bit in_proj's form, its RMSNorm taken from nPart partial sums. Inputs are zeros: the
// time does not depend on them.
int me_k_gemv_time(int wtype, int N, int K, const void* w, const float* scale, int norm, int nPart, int copies, int iters, float* ms) {
  const size_t wBytes = wtype == W_F16 ? (size_t)N * K * 2 : wtype == W_I8 ? (size_t)N * K : (size_t)N * K / 2;
  const size_t sFloats = wtype == W_I4 ? (size_t)N * (K / 128) : wtype == W_I8 ? (size_t)N : 0;
  std::vector<void*> bufs;
  auto alloc = [&](size_t bytes) -> void* {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes ? bytes : 4)) return nullptr;
    bufs.push_back(p);
    cudaMemset(p, 0, bytes ? bytes : 4);
    return p;
  };
  cudaError_t e = cudaSuccess;
  std::vector<LinearW> Ws;
  float* x = (float*)alloc((size_t)K * 4);
  float* y = (float*)alloc((size_t)N * 4);
  float* nw = (float*)alloc((size_t)K * 4);
  float* ss = (float*)alloc((size_t)std::max(nPart, 1) * 4);
  float* ws = (float*)alloc(GEMV_WS_FLOATS * 4);
  unsigned* wsCount = (unsigned*)alloc(GEMV_WS_TILES * 4);
  if (!x || !y || !nw || !ss || !ws || !wsCount) e = cudaErrorMemoryAllocation;
  for (int c = 0; c < copies && !e; c++) {
    LinearW W{wtype, N, K, nullptr, nullptr, 128, nullptr, 0, ws, wsCount};
    void* wc = alloc(wBytes);
    float* sc = sFloats ? (float*)alloc(sFloats * 4) : nullptr;
    if (!wc || (sFloats && !sc)) {
      e = cudaErrorMemoryAllocation;
      break;
    }
    if (sc) e = cudaMemcpy(sc, scale, sFloats * 4, cudaMemcpyDeviceToDevice);
    W.scale = sc;
    if (!e && wtype == W_I4 && i4Packable(W)) {
      W.w = w;
      e = packI4(W, wc, 0);
      W.packed = 1;
    } else if (!e) {
      e = cudaMemcpy(wc, w, wBytes, cudaMemcpyDeviceToDevice);
    }
    W.w = wc;
    Ws.push_back(W);
  }
  cudaEvent_t a = nullptr, b = nullptr;
  if (!e) e = cudaEventCreate(&a);
  if (!e) e = cudaEventCreate(&b);
  const NormIn nin{x, nw, 1e-5f, 0.f, nPart > 0 ? ss : nullptr, nPart};
  auto run = [&](int i) {
    const LinearW& W = Ws[i % Ws.size()];
    return norm ? gemv(W, x, K, 0.f, 1, y, N, nullptr, 0, &nin, 1) : gemv(W, x, K, 0.02f, 1, y, N, nullptr, 0);
  };
  for (int i = 0; i < 2 * copies && !e; i++) e = run(i);
  if (!e) e = cudaEventRecord(a, 0);
  for (int i = 0; i < iters && !e; i++) e = run(i);
  if (!e) e = cudaEventRecord(b, 0);
  if (!e) e = cudaEventSynchronize(b);
  if (!e) e = cudaEventElapsedTime(ms, a, b);
  if (!e) *ms /= iters;
  if (a) cudaEventDestroy(a);
  if (b) cudaEventDestroy(b);
  for (void* p : bufs) cudaFree(p);
  return e ? (int)e : (int)cudaGetLastError();
}

// the batch-1 4-bit row GEMV's grid for the following calls (see setI4RowGrid; 0, 0: its own rule)
int me_k_i4row_grid(int P, int tpb) {
  setI4RowGrid(P, tpb);
  return 0;
}

// that rule's grid for N x K: out = {P, tiles per block, blocks, resident blocks per multiprocessor}
int me_k_i4row_plan(int N, int K, int norm, int* out) {
  if (N < 16 || N % 16 || K < 128 || K % 128) return (int)cudaErrorInvalidValue;
  i4RowPlan(N, K, norm != 0, out, out + 1, out + 2, out + 3);
  return 0;
}

int me_k_embed(const __half* table, int D, const int* tokens, int M, float* out) { return done(embed(table, D, tokens, M, out, 0)); }
int me_k_embed_i4(const uint8_t* table, const float* scale, int group, int D, const int* tokens, int M, float* out) {
  return done(embedI4(table, scale, group, D, tokens, M, out, 0));
}

int me_k_argmax(const float* logits, int M, int V, int* out, float* scratch) { return done(argmax(logits, M, V, out, scratch, 0)); }

int me_k_topk(const float* logits, int M, int V, int k, float* vals, int* idx) { return done(topk(logits, M, V, k, vals, idx, 0)); }

}  // extern "C"
