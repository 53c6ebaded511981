// GPTQ (Frantar et al. 2022) for the builder: the same algorithm as engines/builder/quantize.ts's
// quantizeInt4Gptq, in double precision, with the cubic parts blocked and spread over threads:
//   1. H ← XᵀX with dead inputs set to 1 and damping added; columns reordered (act-order);
//   2. U, upper triangular with UᵀU = H⁻¹, as P R⁻¹ P where P reverses the order and P H P = R Rᵀ
//      (one blocked Cholesky factorization and one blocked triangular inverse);
//   3. the column recurrence, independent across output rows: each thread takes tiles of rows, and
//      applies each block of columns' errors to the columns after it as one matrix product.
// Also the quadratic forms vᵀHv of the error measure (reconstructionError in quantize.ts).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <numeric>
#include <vector>

#include "parallel.h"

namespace {

constexpr int kBlock = 64;  // tile edge of the blocked factorizations

// C[i][j] -= Σ_k A[i][k] · B[k][j] for i < rows, j < cols, k < depth (row strides lda, ldb, ldc).
// By strips of 8 columns of B, each kept in cache while every 4 rows of A take their 4 × 8 of C
// (held in registers) from it.
HOT void gemmSub(double* C, int ldc, const double* A, int lda, const double* B, int ldb, int rows, int cols, int depth) {
  constexpr int MR = 4, NR = 8;
  for (int j0 = 0; j0 < cols; j0 += NR) {
    const int jw = std::min(NR, cols - j0);
    for (int i0 = 0; i0 < rows; i0 += MR) {
      const int iw = std::min(MR, rows - i0);
      if (iw == MR && jw == NR) {
        double acc[MR][NR] = {};
        for (int k = 0; k < depth; k++) {
          const double* b = B + (size_t)k * ldb + j0;
          for (int r = 0; r < MR; r++) {
            const double a = A[(size_t)(i0 + r) * lda + k];
#pragma omp simd
            for (int j = 0; j < NR; j++) acc[r][j] += a * b[j];
          }
        }
        for (int r = 0; r < MR; r++) {
          double* c = C + (size_t)(i0 + r) * ldc + j0;
#pragma omp simd
          for (int j = 0; j < NR; j++) c[j] -= acc[r][j];
        }
      } else {
        for (int r = 0; r < iw; r++) {
          double* c = C + (size_t)(i0 + r) * ldc + j0;
          for (int j = 0; j < jw; j++) {
            double t = 0;
            for (int k = 0; k < depth; k++) t += A[(size_t)(i0 + r) * lda + k] * B[(size_t)k * ldb + j0 + j];
            c[j] -= t;
          }
        }
      }
    }
  }
}

// Lower Cholesky factor of the n × n symmetric A, in place (the upper triangle is left as it was):
// right-looking by blocks of kBlock; the trailing update (most of the work) is spread over threads.
// A pivot below `floor` is clamped to it, as the TypeScript version does.
void cholesky(double* A, int n, int threads) {
  std::vector<double> panelT;  // the panel transposed: (kBlock, n)
  for (int k0 = 0; k0 < n; k0 += kBlock) {
    const int k1 = std::min(n, k0 + kBlock), nb = k1 - k0;
    // the diagonal block, unblocked
    for (int j = k0; j < k1; j++) {
      double* rj = A + (size_t)j * n;
      double s = rj[j];
      for (int k = k0; k < j; k++) s -= rj[k] * rj[k];
      const double d = std::sqrt(std::max(s, 1e-12));
      rj[j] = d;
      for (int i = j + 1; i < k1; i++) {
        double* ri = A + (size_t)i * n;
        double t = ri[j];
        for (int k = k0; k < j; k++) t -= ri[k] * rj[k];
        ri[j] = t / d;
      }
    }
    if (k1 == n) break;
    // the panel below it: L[i][k0..k1) = A[i][k0..k1) · L_kk⁻ᵀ, rows independent
    parallelFor(n - k1, 64, threads, [&](int b, int e) {
      for (int i = k1 + b; i < k1 + e; i++) {
        double* ri = A + (size_t)i * n;
        for (int j = k0; j < k1; j++) {
          const double* rj = A + (size_t)j * n;
          double t = ri[j];
          for (int k = k0; k < j; k++) t -= ri[k] * rj[k];
          ri[j] = t / rj[j];
        }
      }
    });
    // trailing lower triangle: A[i][j] -= Σ_k L[i][k] L[j][k] for k1 ≤ j ≤ i
    const int m = n - k1;
    panelT.assign((size_t)nb * m, 0.0);
    for (int j = 0; j < m; j++)
      for (int k = 0; k < nb; k++) panelT[(size_t)k * m + j] = A[(size_t)(k1 + j) * n + k0 + k];
    const int tiles = (m + kBlock - 1) / kBlock;
    parallelFor(tiles, 1, threads, [&](int b, int) {
      const int i0 = b * kBlock, i1 = std::min(m, i0 + kBlock);
      // the tiles of this block row left of (and on) the diagonal
      for (int j0 = 0; j0 < i1; j0 += kBlock) {
        const int j1 = std::min(i1, j0 + kBlock);
        gemmSub(A + (size_t)(k1 + i0) * n + k1 + j0, n, A + (size_t)(k1 + i0) * n + k0, n, panelT.data() + j0, m, i1 - i0, j1 - j0, nb);
      }
    });
  }
}

// X = R⁻¹ for the lower triangular n × n R (row-major, upper triangle ignored); X is lower
// triangular. Block columns are independent, so threads take them in turn; within one, block row I
// is −R_II⁻¹ Σ_{J ≤ K < I} R_IK X_KJ.
void lowerInverse(const double* R, double* X, int n, int threads) {
  std::memset(X, 0, sizeof(double) * (size_t)n * n);
  const int blocks = (n + kBlock - 1) / kBlock;
  parallelFor(blocks, 1, threads, [&](int J, int) {
    const int j0 = J * kBlock, j1 = std::min(n, j0 + kBlock), w = j1 - j0;
    std::vector<double> acc((size_t)kBlock * kBlock);
    for (int I = J; I < blocks; I++) {
      const int i0 = I * kBlock, i1 = std::min(n, i0 + kBlock), h = i1 - i0;
      // acc = −Σ_K R_IK X_KJ (K from J to I − 1); on the diagonal block, the identity
      std::fill(acc.begin(), acc.end(), 0.0);
      if (I == J)
        for (int r = 0; r < h; r++) acc[(size_t)r * kBlock + r] = 1.0;
      for (int K = J; K < I; K++) {
        const int c0 = K * kBlock, c1 = std::min(n, c0 + kBlock);
        gemmSub(acc.data(), kBlock, R + (size_t)i0 * n + c0, n, X + (size_t)c0 * n + j0, n, h, w, c1 - c0);
      }
      // X_IJ = R_II⁻¹ acc, by forward substitution down the rows
      for (int r = 0; r < h; r++) {
        const double* rr = R + (size_t)(i0 + r) * n + i0;
        double* xr = X + (size_t)(i0 + r) * n + j0;
        const double* ar = acc.data() + (size_t)r * kBlock;
        for (int c = 0; c < w; c++) xr[c] = ar[c];
        for (int k = 0; k < r; k++) {
          const double a = rr[k];
          const double* xk = X + (size_t)(i0 + k) * n + j0;
#pragma omp simd
          for (int c = 0; c < w; c++) xr[c] -= a * xk[c];
        }
        const double d = rr[r];
        for (int c = 0; c < w; c++) xr[c] /= d;
      }
    }
  });
}

// rounds halves up, as JavaScript's Math.round does
inline int q4(double w, double s) { return (int)std::max(-8.0, std::min(7.0, std::floor(w / s + 0.5))); }

// A group's scale from its n values, as groupScale in quantize.ts defines it: absmax maps the
// largest |w| to 7; search takes, of kSearch scales from the smallest that clips nothing down by 1 %
// steps, the one with the least squared rounding error. The error sums run in 4 lanes, in the order
// the TypeScript version adds them; a later candidate must win by a relative 1e-12, so that
// contracted multiply-adds cannot change the choice.
constexpr int kSearch = 40;
HOT double groupScale(const double* v, int n, bool search) {
  double pos = 0, neg = 0;
  for (int c = 0; c < n; c++) {
    pos = std::max(pos, v[c]);
    neg = std::max(neg, -v[c]);
  }
  if (pos == 0 && neg == 0) return 1;
  if (!search) return (float)(std::max(pos, neg) / 7);
  const double s0 = std::max(pos / 7, neg / 8);
  double best = s0, bestErr = INFINITY;
  for (int i = 0; i < kSearch; i++) {
    const double s = s0 * (1 - i * 0.01), inv = 1 / s;
    double acc[4] = {0, 0, 0, 0};
    int c = 0;
    for (; c + 4 <= n; c += 4)
      for (int l = 0; l < 4; l++) {
        const double q = std::min(7.0, std::max(-8.0, std::floor(v[c + l] * inv + 0.5)));
        const double d = v[c + l] - q * s;
        acc[l] += d * d;
      }
    for (; c < n; c++) {
      const double q = std::min(7.0, std::max(-8.0, std::floor(v[c] * inv + 0.5)));
      const double d = v[c] - q * s;
      acc[c & 3] += d * d;
    }
    const double err = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    if (err < bestErr * (1 - 1e-12)) bestErr = err, best = s;
  }
  return (float)best;
}

// the recurrence over one tile of rows: Wt (rows, n) in quantization order, updated in place. By
// blocks of whole groups, about 128 columns: each column's error updates the rest of its block at
// once, and the columns after the block in one product at its end (GPTQ's lazy batch updates: the
// same sums, regrouped; a group's scale sees every update made before its first column).
HOT void recurrence(double* Wt, int rows, int n, const double* U, const int* order, int group, int nG, bool actOrder, bool search,
                    int8_t* q, float* scale, int inDim) {
  const int kLazy = group * std::max(1, 128 / group);
  std::vector<double> err((size_t)rows * kLazy);
  for (int k0 = 0; k0 < n; k0 += kLazy) {
    const int k1 = std::min(n, k0 + kLazy);
    for (int k = k0; k < k1; k++) {
      const int i = order[k], g = i / group;
      const double d = U[(size_t)k * n + k];
      const double* u = U + (size_t)k * n;
      for (int r = 0; r < rows; r++) {
        double* w = Wt + (size_t)r * n;
        float* sr = scale + (size_t)r * nG;
        if (!actOrder && i % group == 0) {
          // the group's scale from its weights as updated so far
          sr[g] = (float)groupScale(w + k, std::min(n, k + group) - k, search);
        }
        const double s = sr[g];
        const int qv = q4(w[k], s);
        q[(size_t)r * inDim + i] = (int8_t)qv;
        const double e = (w[k] - qv * s) / d;
        err[(size_t)r * kLazy + (k - k0)] = e;
#pragma omp simd
        for (int c = k + 1; c < k1; c++) w[c] -= e * u[c];
      }
    }
    if (k1 < n) gemmSub(Wt + k1, n, err.data(), kLazy, U + (size_t)k0 * n + k1, n, rows, n - k1, k1 - k0);
  }
}

}  // namespace

// 4-bit GPTQ of W (outDim, inDim) row-major with XᵀX (inDim, inDim): writes q (outDim, inDim) in
// [-8, 7] and scale (outDim, ceil(inDim / group)), exactly as quantizeInt4Gptq defines them.
// Returns 0, or -1 on bad arguments, -2 when memory runs out.
EXPORT int meq_gptq_int4(const float* W0, int outDim, int inDim, int group, const double* xtx, double damp, int actOrder, int scaleSearch,
                         int threads, int8_t* q, float* scale) {
  if (!W0 || !xtx || !q || !scale || outDim <= 0 || inDim <= 0 || group <= 0 || threads <= 0) return -1;
  try {
    const int n = inDim, nG = (inDim + group - 1) / group;
    const bool search = scaleSearch != 0;
    std::vector<double> H(xtx, xtx + (size_t)n * n);
    std::vector<char> dead(n, 0);
    double meanDiag = 0;
    for (int i = 0; i < n; i++) meanDiag += H[(size_t)i * n + i];
    meanDiag /= n;
    for (int i = 0; i < n; i++) {
      if (H[(size_t)i * n + i] == 0) {
        H[(size_t)i * n + i] = 1;  // an input that never fired: its weights do not matter
        dead[i] = 1;
      }
      H[(size_t)i * n + i] += damp * meanDiag;
    }
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    if (actOrder)
      std::sort(order.begin(), order.end(), [&](int a, int b) {
        const double da = H[(size_t)a * n + a], db = H[(size_t)b * n + b];
        return da > db || (da == db && a < b);
      });
    // A = P Hp P (Hp: H in quantization order), factored in place into R
    std::vector<double> A((size_t)n * n);
    for (int i = 0; i < n; i++)
      for (int j = 0; j < n; j++) A[(size_t)i * n + j] = H[(size_t)order[n - 1 - i] * n + order[n - 1 - j]];
    std::vector<double>().swap(H);
    cholesky(A.data(), n, threads);
    std::vector<double> X((size_t)n * n);
    lowerInverse(A.data(), X.data(), n, threads);
    std::vector<double>().swap(A);
    // U = P X P: U[k][c] = X[n-1-k][n-1-c], upper triangular
    std::vector<double> U((size_t)n * n, 0.0);
    for (int k = 0; k < n; k++)
      for (int c = k; c < n; c++) U[(size_t)k * n + c] = X[(size_t)(n - 1 - k) * n + (n - 1 - c)];
    std::vector<double>().swap(X);
    std::vector<double> vals(group);
    if (actOrder)  // static group scales from the original weights
      for (int o = 0; o < outDim; o++)
        for (int g = 0; g < nG; g++) {
          const int c0 = g * group;
          const int len = std::min(n, c0 + group) - c0;
          for (int c = 0; c < len; c++) vals[c] = dead[c0 + c] ? 0.0 : (double)W0[(size_t)o * n + c0 + c];
          scale[(size_t)o * nG + g] = (float)groupScale(vals.data(), len, search);
        }
    constexpr int kTile = 32;  // rows per task: U is read once per tile
    parallelFor(outDim, kTile, threads, [&](int b, int e) {
      std::vector<double> Wt((size_t)(e - b) * n);
      for (int r = 0; r < e - b; r++)
        for (int k = 0; k < n; k++) {
          const int c = order[k];
          Wt[(size_t)r * n + k] = dead[c] ? 0.0 : (double)W0[(size_t)(b + r) * n + c];
        }
      recurrence(Wt.data(), e - b, n, U.data(), order.data(), group, nG, actOrder != 0, search, q + (size_t)b * n, scale + (size_t)b * nG,
                 n);
    });
    return 0;
  } catch (const std::bad_alloc&) {
    return -2;
  }
}

// 4-bit round-to-nearest of W (outDim, inDim), groups of `group` inputs, scales by groupScale: q and
// scale as meq_gptq_int4 writes them. Returns 0, or -1 on bad arguments.
EXPORT int meq_rtn_int4(const float* W, int outDim, int inDim, int group, int scaleSearch, int threads, int8_t* q, float* scale) {
  if (!W || !q || !scale || outDim <= 0 || inDim <= 0 || group <= 0 || threads <= 0) return -1;
  const int nG = (inDim + group - 1) / group;
  parallelFor(outDim, 64, threads, [&](int b, int e) {
    std::vector<double> vals(group);
    for (int o = b; o < e; o++) {
      const float* w = W + (size_t)o * inDim;
      for (int g = 0; g < nG; g++) {
        const int c0 = g * group, len = std::min(inDim, c0 + group) - c0;
        for (int c = 0; c < len; c++) vals[c] = w[c0 + c];
        const float s = (float)groupScale(vals.data(), len, scaleSearch != 0);
        scale[(size_t)o * nG + g] = s;
        for (int c = c0; c < c0 + len; c++) q[(size_t)o * inDim + c] = (int8_t)q4(w[c], s);
      }
    }
  });
  return 0;
}

// out[r] = vᵣᵀ H vᵣ for the m vectors V (m, n) row-major and the symmetric H (n, n).
EXPORT int meq_quadratic_forms(const double* H, int n, const double* V, int m, int threads, double* out) {
  if (!H || !V || !out || n <= 0 || m <= 0 || threads <= 0) return -1;
  try {
    // H is read once: each thread takes rows of H and accumulates every vector's partial sum
    const int parts = std::max(1, std::min(threads, n));
    std::vector<double> partial((size_t)parts * m, 0.0);
    std::atomic<int> slot{0};
    const int chunk = (n + parts - 1) / parts;
    parallelFor(n, chunk, parts, [&](int b, int e) {
      double* acc = partial.data() + (size_t)slot.fetch_add(1) * m;
      for (int i = b; i < e; i++) {
        const double* h = H + (size_t)i * n;
        for (int r = 0; r < m; r++) {
          const double* v = V + (size_t)r * n;
          double s = 0;
#pragma omp simd reduction(+ : s)
          for (int j = 0; j < n; j++) s += h[j] * v[j];
          acc[r] += v[i] * s;
        }
      }
    });
    for (int r = 0; r < m; r++) {
      double s = 0;
      for (int p = 0; p < parts; p++) s += partial[(size_t)p * m + r];
      out[r] = s;
    }
    return 0;
  } catch (const std::bad_alloc&) {
    return -2;
  }
}
