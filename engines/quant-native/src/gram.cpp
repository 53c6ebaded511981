// XᵀX of calibration inputs (GPTQ's Hessians), added to a double-precision sum: one window's rows
// at a time, in single precision within the window as a float matrix product would be. Only the
// lower triangle is computed (the product is symmetric), in 64 × 64 tiles spread over threads, each
// from 4 × 16 register tiles over the window's rows, and copied to the upper.
#include <algorithm>
#include <cstddef>
#include <new>
#include <vector>

#include "parallel.h"

namespace {

constexpr int kTile = 64;

// C (64 × 64, row stride 64) = Σ_r X[r][i0 + i] X[r][j0 + j] over `rows` rows of X (row stride n),
// for i < h, j < w
HOT void tile(const float* X, int rows, int n, int i0, int h, int j0, int w, float* C) {
  constexpr int MR = 4, NR = 16;
  for (int ii = 0; ii < h; ii += MR)
    for (int jj = 0; jj < w; jj += NR) {
      const int ih = std::min(MR, h - ii), jw = std::min(NR, w - jj);
      float acc[MR][NR] = {};
      if (ih == MR && jw == NR) {
        for (int r = 0; r < rows; r++) {
          const float* x = X + (size_t)r * n;
          const float* b = x + j0 + jj;
          for (int m = 0; m < MR; m++) {
            const float a = x[i0 + ii + m];
#pragma omp simd
            for (int j = 0; j < NR; j++) acc[m][j] += a * b[j];
          }
        }
      } else {
        for (int r = 0; r < rows; r++) {
          const float* x = X + (size_t)r * n;
          for (int m = 0; m < ih; m++)
            for (int j = 0; j < jw; j++) acc[m][j] += x[i0 + ii + m] * x[j0 + jj + j];
        }
      }
      for (int m = 0; m < ih; m++)
        for (int j = 0; j < jw; j++) C[(size_t)(ii + m) * kTile + jj + j] = acc[m][j];
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
      std::vector<float> C((size_t)kTile * kTile);
      for (int J = 0; J <= I; J++) {
        const int j0 = J * kTile, w = std::min(kTile, n - j0);
        tile(X, rows, n, i0, h, j0, w, C.data());
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
