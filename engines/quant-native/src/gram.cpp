// XᵀX of calibration inputs (GPTQ's Hessians), added to a double-precision sum: one window's rows
// at a time, in single precision within the window as a float matrix product would be. Only the
// lower triangle is computed (the product is symmetric), in 64 × 64 tiles spread over threads, each
// from 4 × 16 register tiles over panels of the window's rows packed contiguous, and copied to the
// upper.
#include <algorithm>
#include <cstddef>
#include <new>
#include <vector>

#include "parallel.h"

namespace {

constexpr int kTile = 64;

// C (64 × 64, row stride 64) = Σ_r A[r][i] B[r][j] over `rows` rows of the packed panels A and B
// (rows × 64 each, contiguous, zero past the matrix's edge), in 4 × 16 register tiles
HOT void tile(const float* A, const float* B, int rows, float* C) {
  constexpr int MR = 4, NR = 16;
  for (int ii = 0; ii < kTile; ii += MR)
    for (int jj = 0; jj < kTile; jj += NR) {
      float acc[MR][NR] = {};
      for (int r = 0; r < rows; r++) {
        const float* a = A + (size_t)r * kTile + ii;
        const float* b = B + (size_t)r * kTile + jj;
        for (int m = 0; m < MR; m++) {
#pragma omp simd
          for (int j = 0; j < NR; j++) acc[m][j] += a[m] * b[j];
        }
      }
      for (int m = 0; m < MR; m++)
        for (int j = 0; j < NR; j++) C[(size_t)(ii + m) * kTile + jj + j] = acc[m][j];
    }
}

// columns [c0, c0 + 64) of X (rows, n) into a contiguous panel, zeros past column n
void pack(const float* X, int rows, int n, int c0, float* P) {
  const int w = std::min(kTile, n - c0);
  for (int r = 0; r < rows; r++) {
    const float* x = X + (size_t)r * n + c0;
    float* p = P + (size_t)r * kTile;
    std::copy(x, x + w, p);
    std::fill(p + w, p + kTile, 0.f);
  }
}

}  // namespace

// acc (n × n, row-major, double) += XᵀX for X (rows, n) row-major. Returns 0, or -1 on bad arguments,
// -2 when memory runs out.
EXPORT int meq_gram_add(const float* X, int rows, int n, int threads, double* acc) {
  if (!X || !acc || rows < 0 || n <= 0 || threads <= 0) return -1;
  try {
    const int tiles = (n + kTile - 1) / kTile;
    // tile rows from the bottom (the longest first), one at a time per thread
    parallelFor(tiles, 1, threads, [&](int b, int) {
      const int I = tiles - 1 - b, i0 = I * kTile, h = std::min(kTile, n - i0);
      std::vector<float> C((size_t)kTile * kTile), A((size_t)rows * kTile), B((size_t)rows * kTile);
      pack(X, rows, n, i0, A.data());
      for (int J = 0; J <= I; J++) {
        const int j0 = J * kTile, w = std::min(kTile, n - j0);
        if (J < I) pack(X, rows, n, j0, B.data());
        tile(A.data(), J < I ? B.data() : A.data(), rows, C.data());  // the diagonal tile: A with itself
        for (int i = 0; i < h; i++)
          for (int j = 0; j < w && j0 + j <= i0 + i; j++) {
            double& lower = acc[(size_t)(i0 + i) * n + j0 + j];
            lower += C[(size_t)i * kTile + j];
            acc[(size_t)(j0 + j) * n + i0 + i] = lower;  // its mirror in the upper triangle
          }
      }
    });
    return 0;
  } catch (const std::bad_alloc&) {
    return -2;
  }
}
