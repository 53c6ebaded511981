// y = x·Wᵀ for 4-bit W as com.microsoft MatMulNBits stores it. onnxruntime's own MatMulNBits is
// fast for one row of x, but with float activations it dequantizes all of W on every run with more
// rows: at batch 8 it took 3–5 × its batch-1 time on the demo and mamba-130m shapes, twice a float
// MatMul. Here W is regrouped once (Q4Packed: 16 outputs side by side) and each weight, unpacked in
// registers, serves every row of x (up to 8 at a time), like a float matrix product's inner kernel.
// x86-64 (GCC) gets AVX-512 and AVX2 versions, chosen at load, aarch64 a NEON one; other machines
// the portable loop.
#include <cstring>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ME_Q4_X86 1
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f")
// GCC 12's own AVX-512 headers start some intrinsics from an undefined register (its PR 105593)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define ME_NS q4avx512
#define VEC __m512
#define VW 16
#define ME_SMALL_G 4
#define ME_LARGE_G 2
#define ME_LARGE_M 8
#define V_ZERO() _mm512_setzero_ps()
#define V_BCAST(p) _mm512_set1_ps(*(p))
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_store_ps(p, v)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_NIBBLES(p, lo, hi)                                                                       \
  do {                                                                                             \
    const __m512i q_ = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); \
    lo = _mm512_cvtepi32_ps(_mm512_and_si512(q_, _mm512_set1_epi32(15)));                          \
    hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(q_, 4));                                             \
  } while (0)
#include "matmul_q4_simd.inc"
#pragma GCC diagnostic pop
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define ME_NS q4avx2
#define VEC __m256
#define VW 8
#define ME_SMALL_G 1
#define ME_LARGE_G 1
#define ME_LARGE_M 4
#define V_ZERO() _mm256_setzero_ps()
#define V_BCAST(p) _mm256_broadcast_ss(p)
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_store_ps(p, v)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_NIBBLES(p, lo, hi)                                                                       \
  do {                                                                                             \
    const __m256i q_ = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); \
    lo = _mm256_cvtepi32_ps(_mm256_and_si256(q_, _mm256_set1_epi32(15)));                          \
    hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(q_, 4));                                             \
  } while (0)
#include "matmul_q4_simd.inc"
#pragma GCC pop_options
#endif

#if defined(__aarch64__) && defined(__ARM_NEON)
#define ME_Q4_NEON 1
#include <arm_neon.h>

namespace {
// four bytes (at any address) → their low and high nibbles as four floats each
inline void nibbles4(const uint8_t* p, float32x4_t& lo, float32x4_t& hi) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  const uint32x4_t q = vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(w))));
  lo = vcvtq_f32_u32(vandq_u32(q, vdupq_n_u32(15)));
  hi = vcvtq_f32_u32(vshrq_n_u32(q, 4));
}
}  // namespace
#define ME_NS q4neon
#define VEC float32x4_t
#define VW 4
#define ME_SMALL_G 1
#define ME_LARGE_G 1
#define ME_LARGE_M 4
#define V_ZERO() vdupq_n_f32(0.f)
#define V_BCAST(p) vld1q_dup_f32(p)
#define V_LOAD(p) vld1q_f32(p)
#define V_STORE(p, v) vst1q_f32(p, v)
#define V_FMA(a, b, c) vfmaq_f32(c, a, b)
#define V_ADD(a, b) vaddq_f32(a, b)
#define V_NIBBLES(p, lo, hi) nibbles4(p, lo, hi)
#include "matmul_q4_simd.inc"
#endif

namespace me {
namespace {

// Any machine: per group and row of x, 16 sums the compiler can keep in vector registers (NEON on aarch64).
void matmulPortable(const Q4Packed& p, int64_t M, int64_t g0, int64_t g1, const float* x, float* y) {
  const int64_t xs = p.blocks * 2 * p.half;
  for (int64_t g = g0; g < g1; g++)
    for (int64_t m = 0; m < M; m++) {
      float acc[16] = {};
      for (int64_t b = 0; b < p.blocks; b++) {
        const float *sc = p.scale(g, b), *off = p.offset(g, b), *xb = x + m * xs + b * 2 * p.half;
        for (int64_t i = 0; i < p.half; i++) {
          const uint8_t* q = p.bytes(g, b, i);
          const float xl = xb[2 * i], xh = xb[2 * i + 1];
          for (int r = 0; r < 16; r++)
            acc[r] += (static_cast<float>(q[r] & 15) * sc[r] + off[r]) * xl + (static_cast<float>(q[r] >> 4) * sc[r] + off[r]) * xh;
        }
      }
      const int64_t n0 = g * 16, n = p.n - n0 < 16 ? p.n - n0 : 16;
      for (int64_t r = 0; r < n; r++) y[m * p.n + n0 + r] = acc[r];
    }
}

}  // namespace

void q4Pack(int64_t N, int64_t blocks, int64_t half, const uint8_t* w, const float* s, Q4Packed& p) {
  p.n = N;
  p.groups = (N + 15) / 16;
  p.blocks = blocks;
  p.half = half;
  p.w.assign(static_cast<size_t>(p.groups * blocks * half * 16), 0x88);  // padding rows: q = 8, weight 0
  p.s.assign(static_cast<size_t>(p.groups * blocks * 16), 0.f);
  p.o.assign(p.s.size(), 0.f);
  for (int64_t n = 0; n < N; n++)
    for (int64_t b = 0; b < blocks; b++) {
      const int64_t g = n / 16, r = n % 16, at = (g * blocks + b) * 16 + r;
      p.s[at] = s[n * blocks + b];
      p.o[at] = -8.f * s[n * blocks + b];
      for (int64_t i = 0; i < half; i++) p.w[((g * blocks + b) * half + i) * 16 + r] = w[(n * blocks + b) * half + i];
    }
}

void q4MatMul(const Q4Packed& p, int64_t M, int64_t g0, int64_t g1, const float* x, float* y) {
  [[maybe_unused]] const Isa isa = me::isa();
#ifdef ME_Q4_X86
  if (isa == Isa::avx512) return q4avx512::matmul(p, M, g0, g1, x, y);
  if (isa == Isa::avx2) return q4avx2::matmul(p, M, g0, g1, x, y);
#endif
#ifdef ME_Q4_NEON
  if (isa == Isa::neon) return q4neon::matmul(p, M, g0, g1, x, y);
#endif
  matmulPortable(p, M, g0, g1, x, y);
}

}  // namespace me
