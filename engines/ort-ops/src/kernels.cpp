// Each kernel makes one pass over its state (read once, written once) where the onnxruntime graph
// it replaces made five or more, one per elementwise node. exp and log are our own branch-free
// polynomials so the loops vectorize: a call to the C library's expf would not (it cost ~4 ns a
// value, more than the memory traffic it sits between). On x86-64 (GCC) every kernel is built for
// AVX2 + FMA and for the baseline, the Mamba-1 ones also for AVX-512 (bound by exp, they run about
// twice as fast in 16 lanes as in 8), and isa() picks one per machine; on aarch64 NEON is the baseline.
#include "kernels.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ME_X86 1
#endif

namespace me {

Isa isa() {
  static const Isa chosen = [] {
    Isa best = Isa::portable;
#if defined(__aarch64__)
    best = Isa::neon;  // every aarch64 CPU has it
#endif
#ifdef ME_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq"))
      best = Isa::avx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      best = Isa::avx2;
#endif
    const char* want = std::getenv("MAMBA_EDGE_ORT_OPS_ISA");
    if (want && std::strcmp(want, "portable") == 0) return Isa::portable;
    if (want && std::strcmp(want, "avx2") == 0 && best == Isa::avx512) return Isa::avx2;
    return best;
  }();
  return chosen;
}

const char* isaName(Isa i) {
  switch (i) {
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    case Isa::neon:
      return "neon";
    default:
      return "portable";
  }
}

namespace {

// A kernel's body, inlined into each instruction set's version below.
#define ME_BODY __attribute__((always_inline)) inline

inline float bitsToFloat(int32_t i) { return __builtin_bit_cast(float, i); }
inline int32_t floatToBits(float f) { return __builtin_bit_cast(int32_t, f); }
inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// exp(v) = 2^n · e^r with n = round(v / ln 2), |r| ≤ ln 2 / 2, e^r by a degree-6 polynomial
// (Cephes' expf coefficients); relative error ~1e-7 over the clamped range.
inline float expf_(float v) {
  v = clampf(v, -87.3f, 88.3f);
  const float shifter = 12582912.f;  // 1.5·2^23: adding it leaves round(v / ln 2) in the low mantissa bits
  const float t = v * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  const float r = v - n * 0.693359375f + n * 2.12194440e-4f;  // ln 2 split in two for an exact first product
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  return p * bitsToFloat((floatToBits(t) - floatToBits(shifter) + 127) << 23);
}

// log(v) for normal v > 0: v = m · 2^e with m in [√½, √2), log m by Cephes' logf polynomial.
inline float logf_(float v) {
  const int32_t bits = floatToBits(v);
  int32_t e = ((bits >> 23) & 0xff) - 126;  // v = m · 2^e, m in [0.5, 1)
  float m = bitsToFloat((bits & 0x007fffff) | 0x3f000000);
  const bool low = m < 0.70710678118654752f;
  e = low ? e - 1 : e;
  m = low ? m + m - 1.f : m - 1.f;
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  const float fe = static_cast<float>(e);
  float y = p * m * z - 2.12194440e-4f * fe - 0.5f * z;
  return m + y + 0.693359375f * fe;
}

// softplus with PyTorch's threshold: v above 20 passes through; below, log1p(exp(v)) with log1p
// computed as log(w) · u / (w - 1), w = 1 + u, which keeps its accuracy where u is tiny.
inline float softplus(float v) {
  const float u = expf_(v < 20.f ? v : 20.f);
  const float w = 1.f + u;
  const float d = w - 1.f;
  const float l = d == 0.f ? u : logf_(w) * (u / (d == 0.f ? 1.f : d));
  return v > 20.f ? v : l;
}

inline float silu(float v) { return v / (1.f + expf_(-v)); }

ME_BODY void convStepBody(int64_t r0, int64_t r1, int64_t K, int64_t C, const float* x, const float* state, const float* wT,
                          const float* bias, float* __restrict y, float* __restrict stateOut) {
  for (int64_t b = r0; b < r1; b++) {
    const float* st = state + b * (K - 1) * C;  // st and so may be the same rows (a step in place)
    const float* __restrict xb = x + b * C;
    float* __restrict yb = y + b * C;
    float* so = stateOut + b * (K - 1) * C;
    const float* __restrict wLast = wT + (K - 1) * C;
    for (int64_t c = 0; c < C; c++) yb[c] = (bias ? bias[c] : 0.f) + xb[c] * wLast[c];
    for (int64_t k = 0; k < K - 1; k++) {
      const float* __restrict s = st + k * C;
      const float* __restrict w = wT + k * C;
      for (int64_t c = 0; c < C; c++) yb[c] += s[c] * w[c];
    }
    for (int64_t c = 0; c < C; c++) yb[c] = silu(yb[c]);
    // the window moves on by one row: rows 1..K-2 of the old state, then x (row k is written only
    // after row k is last read, so this holds in place too)
    for (int64_t k = 0; k + 1 < K - 1; k++)
      for (int64_t c = 0; c < C; c++) so[k * C + c] = st[(k + 1) * C + c];
    for (int64_t c = 0; c < C; c++) so[(K - 2) * C + c] = xb[c];
  }
}

// One token of one sequence, channels [e0, e1) of E (rows of h are E apart):
//   dt = softplus(dtRaw); h' = exp(dt·A) h + (dt·x) ⊗ B; y = (C·h' + D·x)·silu(z).
// hin and hout may be the same array (a scan updates in place); dtRaw, x, z, y are the token's rows,
// Bm, Cm its N values. Inlined into each clone, so it is built for each instruction set.
__attribute__((always_inline)) inline void selectiveToken(int64_t N, int64_t E, int64_t e0, int64_t e1, const float* hin, float* hout,
                                                          const float* dtRaw, const float* x, const float* Bm, const float* Cm,
                                                          const float* z, const float* A, const float* D, float* __restrict y,
                                                          float* __restrict scratch) {
  const int64_t W = e1 - e0;
  float* __restrict dt = scratch;
  float* __restrict dx = scratch + W;
  const float* __restrict xr = x + e0;
  const float* __restrict dr = dtRaw + e0;
  float* __restrict yr = y + e0;
  for (int64_t i = 0; i < W; i++) {
    dt[i] = softplus(dr[i]);
    dx[i] = dt[i] * xr[i];
    yr[i] = 0.f;
  }
  for (int64_t n = 0; n < N; n++) {
    const float bn = Bm[n], cn = Cm[n];
    const float* hr = hin + n * E + e0;
    float* ho = hout + n * E + e0;
    const float* __restrict ar = A + n * E + e0;
    for (int64_t i = 0; i < W; i++) {
      const float v = expf_(dt[i] * ar[i]) * hr[i] + dx[i] * bn;
      ho[i] = v;
      yr[i] += cn * v;
    }
  }
  const float* __restrict zr = z + e0;
  const float* __restrict Dr = D + e0;
  for (int64_t i = 0; i < W; i++) yr[i] = (yr[i] + Dr[i] * xr[i]) * silu(zr[i]);
}

ME_BODY void selectiveStepBody(int64_t r0, int64_t r1, int64_t N, int64_t E, const float* h, const float* dtRaw, const float* x,
                               const float* Bm, const float* Cm, const float* z, const float* A, const float* D, float* y, float* hOut,
                               float* scratch) {
  for (int64_t b = r0; b < r1; b++)
    selectiveToken(N, E, 0, E, h + b * N * E, hOut + b * N * E, dtRaw + b * E, x + b * E, Bm + b * N, Cm + b * N, z + b * E, A, D,
                   y + b * E, scratch);
}

ME_BODY void selectiveScanBody(int64_t T, int64_t N, int64_t E, int64_t e0, int64_t e1, const float* h0, const float* dtRaw, const float* x,
                               const float* Bm, const float* Cm, const float* z, const float* A, const float* D, float* y, float* h,
                               float* scratch) {
  for (int64_t t = 0; t < T; t++)
    selectiveToken(N, E, e0, e1, t == 0 ? h0 : h, h, dtRaw + t * E, x + t * E, Bm + t * N, Cm + t * N, z + t * E, A, D, y + t * E, scratch);
}

inline float ssdDt(float raw, float bias, float dtMin, float dtMax) { return clampf(softplus(raw + bias), dtMin, dtMax); }

// Eight floats as one value (GCC/Clang vector extension): AVX registers in the AVX2 build, two
// SSE or NEON registers elsewhere. aligned(4): loads and stores at any float's address.
typedef float f8 __attribute__((vector_size(32), aligned(4), may_alias));

inline float sum8(f8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// One head of one token: S' = dA·S + (dt·x) ⊗ B; y = S'·C + D·x, for S (P, N). Sin and Sout may be the same array.
// Rows go four at a time: each row's C·S' is a sum over n, and four independent sums keep the FMA
// units busy where a single one would wait on its own previous addition at every step.
__attribute__((always_inline)) inline void ssdHead(int64_t P, int64_t N, float dt, float dA, float Dh, const float* x, const float* bg,
                                                   const float* cg, const float* Sin, float* Sout, float* y) {
  constexpr int R = 4;
  int64_t p = 0;
  if (N % 8 == 0)
    for (; p + R <= P; p += R) {
      const float* s = Sin + p * N;
      float* o = Sout + p * N;
      float d[R];
      for (int r = 0; r < R; r++) d[r] = dt * x[p + r];
      f8 acc[R] = {};
      for (int64_t n = 0; n < N; n += 8) {
        const f8 b = *reinterpret_cast<const f8*>(bg + n), c = *reinterpret_cast<const f8*>(cg + n);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
          const f8 v = *reinterpret_cast<const f8*>(s + r * N + n) * dA + d[r] * b;
          *reinterpret_cast<f8*>(o + r * N + n) = v;
          acc[r] += v * c;
        }
      }
      for (int r = 0; r < R; r++) y[p + r] = sum8(acc[r]) + Dh * x[p + r];
    }
  for (; p < P; p++) {
    const float dx = dt * x[p];
    const float* sr = Sin + p * N;
    float* so = Sout + p * N;
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < N; n++) {
      const float v = sr[n] * dA + dx * bg[n];
      so[n] = v;
      acc += v * cg[n];
    }
    y[p] = acc + Dh * x[p];
  }
}

ME_BODY void ssdStepBody(int64_t r0, int64_t r1, int64_t H, int64_t P, int64_t N, int64_t G, const float* S, const float* dtRaw,
                         const float* x, const float* Bm, const float* Cm, const float* dtBias, const float* A, const float* D, float dtMin,
                         float dtMax, float* y, float* SOut) {
  const int64_t perGroup = H / G;
  for (int64_t b = r0; b < r1; b++)
    for (int64_t hd = 0; hd < H; hd++) {
      const float dt = ssdDt(dtRaw[b * H + hd], dtBias[hd], dtMin, dtMax);
      const int64_t g = hd / perGroup, at = (b * H + hd) * P * N;
      ssdHead(P, N, dt, expf_(dt * A[hd]), D[hd], x + (b * H + hd) * P, Bm + (b * G + g) * N, Cm + (b * G + g) * N, S + at, SOut + at,
              y + (b * H + hd) * P);
    }
}

ME_BODY void ssdScanBody(int64_t T, int64_t H, int64_t h0, int64_t h1, int64_t P, int64_t N, int64_t G, const float* S0, const float* dtRaw,
                         const float* x, const float* Bm, const float* Cm, const float* dtBias, const float* A, const float* D, float dtMin,
                         float dtMax, float* y, float* S) {
  const int64_t perGroup = H / G;
  for (int64_t t = 0; t < T; t++)
    for (int64_t hd = h0; hd < h1; hd++) {
      const float dt = ssdDt(dtRaw[t * H + hd], dtBias[hd], dtMin, dtMax);
      const int64_t g = hd / perGroup, at = hd * P * N;
      ssdHead(P, N, dt, expf_(dt * A[hd]), D[hd], x + (t * H + hd) * P, Bm + (t * G + g) * N, Cm + (t * G + g) * N, (t == 0 ? S0 : S) + at,
              S + at, y + (t * H + hd) * P);
    }
}

}  // namespace

// Each kernel once per instruction set: the body inlined into a function compiled for it (the
// bodies' loops vectorize to that width), and a dispatch on isa(). ME_VERSIONS_AVX2 leaves out the
// AVX-512 version: the SSD kernels, bound by moving their state, gained nothing in 16 lanes and were
// mostly slower (scripts/ort-kernels-bench.mjs; docs/cpu-performance.md), so AVX-512 machines run AVX2 there.
#ifdef ME_X86
#define ME_DISPATCH(name, params, args, wide) \
  void name params {                          \
    switch (isa()) {                          \
      case Isa::avx512:                       \
        return name##wide args;               \
      case Isa::avx2:                         \
        return name##Avx2 args;               \
      default:                                \
        return name##Body args;               \
    }                                         \
  }
#define ME_VERSIONS_AVX2(name, params, args)                                            \
  __attribute__((target("arch=x86-64-v3"))) void name##Avx2 params { name##Body args; } \
  ME_DISPATCH(name, params, args, Avx2)
#define ME_VERSIONS(name, params, args)                                                   \
  __attribute__((target("arch=x86-64-v4"))) void name##Avx512 params { name##Body args; } \
  __attribute__((target("arch=x86-64-v3"))) void name##Avx2 params { name##Body args; }   \
  ME_DISPATCH(name, params, args, Avx512)
#else
#define ME_VERSIONS(name, params, args) \
  void name params { name##Body args; }
#define ME_VERSIONS_AVX2 ME_VERSIONS
#endif

ME_VERSIONS(convStep,
            (int64_t r0, int64_t r1, int64_t K, int64_t C, const float* x, const float* state, const float* wT, const float* bias, float* y,
             float* stateOut),
            (r0, r1, K, C, x, state, wT, bias, y, stateOut))
ME_VERSIONS(selectiveStep,
            (int64_t r0, int64_t r1, int64_t N, int64_t E, const float* h, const float* dtRaw, const float* x, const float* Bm,
             const float* Cm, const float* z, const float* A, const float* D, float* y, float* hOut, float* scratch),
            (r0, r1, N, E, h, dtRaw, x, Bm, Cm, z, A, D, y, hOut, scratch))
ME_VERSIONS(selectiveScan,
            (int64_t T, int64_t N, int64_t E, int64_t e0, int64_t e1, const float* h0, const float* dtRaw, const float* x, const float* Bm,
             const float* Cm, const float* z, const float* A, const float* D, float* y, float* h, float* scratch),
            (T, N, E, e0, e1, h0, dtRaw, x, Bm, Cm, z, A, D, y, h, scratch))
ME_VERSIONS_AVX2(ssdStep,
                 (int64_t r0, int64_t r1, int64_t H, int64_t P, int64_t N, int64_t G, const float* S, const float* dtRaw, const float* x,
                  const float* Bm, const float* Cm, const float* dtBias, const float* A, const float* D, float dtMin, float dtMax, float* y,
                  float* SOut),
                 (r0, r1, H, P, N, G, S, dtRaw, x, Bm, Cm, dtBias, A, D, dtMin, dtMax, y, SOut))
ME_VERSIONS_AVX2(ssdScan,
                 (int64_t T, int64_t H, int64_t h0, int64_t h1, int64_t P, int64_t N, int64_t G, const float* S0, const float* dtRaw,
                  const float* x, const float* Bm, const float* Cm, const float* dtBias, const float* A, const float* D, float dtMin,
                  float dtMax, float* y, float* S),
                 (T, H, h0, h1, P, N, G, S0, dtRaw, x, Bm, Cm, dtBias, A, D, dtMin, dtMax, y, S))

}  // namespace me
