// Each kernel makes one pass over its state (read once, written once) where the onnxruntime graph
// it replaces made five or more, one per elementwise node. exp and log are our own branch-free
// polynomials so the loops vectorize: a call to the C library's expf would not (it cost ~4 ns a
// value, more than the memory traffic it sits between). On x86-64 every kernel is built twice, for
// AVX2 + FMA and for the baseline, and the loader picks one per machine; on aarch64 NEON is the baseline.
#include "kernels.h"

#include <cmath>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ME_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ME_CLONES
#endif

namespace me {
namespace {

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
  int32_t e = ((bits >> 23) & 0xff) - 126;                  // v = m · 2^e, m in [0.5, 1)
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

}  // namespace

ME_CLONES void convStep(int64_t r0, int64_t r1, int64_t K, int64_t C, const float* x, const float* state, const float* wT, const float* bias,
                        float* __restrict y, float* __restrict stateOut) {
  for (int64_t b = r0; b < r1; b++) {
    const float* __restrict st = state + b * (K - 1) * C;
    const float* __restrict xb = x + b * C;
    float* __restrict yb = y + b * C;
    float* __restrict so = stateOut + b * (K - 1) * C;
    const float* __restrict wLast = wT + (K - 1) * C;
    for (int64_t c = 0; c < C; c++) yb[c] = (bias ? bias[c] : 0.f) + xb[c] * wLast[c];
    for (int64_t k = 0; k < K - 1; k++) {
      const float* __restrict s = st + k * C;
      const float* __restrict w = wT + k * C;
      for (int64_t c = 0; c < C; c++) yb[c] += s[c] * w[c];
    }
    for (int64_t c = 0; c < C; c++) yb[c] = silu(yb[c]);
    // the window moves on by one row: rows 1..K-2 of the old state, then x
    for (int64_t k = 0; k + 1 < K - 1; k++)
      for (int64_t c = 0; c < C; c++) so[k * C + c] = st[(k + 1) * C + c];
    for (int64_t c = 0; c < C; c++) so[(K - 2) * C + c] = xb[c];
  }
}

ME_CLONES void selectiveStep(int64_t r0, int64_t r1, int64_t N, int64_t E, const float* h, const float* dtRaw, const float* x,
                             const float* Bm, const float* Cm, const float* z, const float* A, const float* D, float* __restrict y,
                             float* __restrict hOut, float* __restrict scratch) {
  float* __restrict dt = scratch;
  float* __restrict dx = scratch + E;
  for (int64_t b = r0; b < r1; b++) {
    const float* __restrict xb = x + b * E;
    const float* __restrict dr = dtRaw + b * E;
    float* __restrict yb = y + b * E;
    for (int64_t e = 0; e < E; e++) {
      dt[e] = softplus(dr[e]);
      dx[e] = dt[e] * xb[e];
      yb[e] = 0.f;
    }
    for (int64_t n = 0; n < N; n++) {
      const float bn = Bm[b * N + n], cn = Cm[b * N + n];
      const float* __restrict hr = h + (b * N + n) * E;
      const float* __restrict ar = A + n * E;
      float* __restrict ho = hOut + (b * N + n) * E;
      for (int64_t e = 0; e < E; e++) {
        const float v = expf_(dt[e] * ar[e]) * hr[e] + dx[e] * bn;
        ho[e] = v;
        yb[e] += cn * v;
      }
    }
    const float* __restrict zb = z + b * E;
    for (int64_t e = 0; e < E; e++) yb[e] = (yb[e] + D[e] * xb[e]) * silu(zb[e]);
  }
}

ME_CLONES void ssdStep(int64_t r0, int64_t r1, int64_t H, int64_t P, int64_t N, int64_t G, const float* S, const float* dtRaw, const float* x,
                       const float* Bm, const float* Cm, const float* dtBias, const float* A, const float* D, float dtMin, float dtMax,
                       float* __restrict y, float* __restrict SOut) {
  const int64_t perGroup = H / G;
  for (int64_t b = r0; b < r1; b++) {
    for (int64_t hd = 0; hd < H; hd++) {
      const float dt = clampf(softplus(dtRaw[b * H + hd] + dtBias[hd]), dtMin, dtMax);
      const float dA = expf_(dt * A[hd]);
      const int64_t g = hd / perGroup;
      const float* __restrict bg = Bm + (b * G + g) * N;
      const float* __restrict cg = Cm + (b * G + g) * N;
      for (int64_t p = 0; p < P; p++) {
        const int64_t row = (b * H + hd) * P + p;
        const float xv = x[b * H * P + hd * P + p];
        const float dx = dt * xv;
        const float* __restrict sr = S + row * N;
        float* __restrict so = SOut + row * N;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; n++) {
          const float v = sr[n] * dA + dx * bg[n];
          so[n] = v;
          acc += v * cg[n];
        }
        y[b * H * P + hd * P + p] = acc + D[hd] * xv;
      }
    }
  }
}

}  // namespace me
