// The kernels of engines/ort-ops against the same arithmetic in double precision, without
// onnxruntime: a plain program, so it also runs where onnxruntime cannot, such as under qemu-aarch64
// for the Jetson's CPU (CI does both). Exits non-zero, naming the case, when an error exceeds its bound.
// MAMBA_EDGE_ORT_OPS_ISA picks a lesser instruction set, as in the library.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "../src/kernels.h"

namespace {

int failures = 0;

// a deterministic stream in [-1, 1)
struct Stream {
  uint32_t x;
  float next() { return (x = x * 1664525u + 1013904223u) / 2147483648.f - 1.f; }
  std::vector<float> take(size_t n, float scale = 1.f) {
    std::vector<float> v(n);
    for (auto& e : v) e = scale * next();
    return v;
  }
};

void report(const char* what, double err, double ref, double bound) {
  const double rel = ref > 0 ? err / ref : err;
  std::printf("%-44s max rel. error %.2e (bound %.0e)%s\n", what, rel, bound, rel <= bound ? "" : "  FAILED");
  if (!(rel <= bound)) failures++;
}

template <typename A, typename B>
void compare(const char* what, const A& got, const B& want, double bound) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < want.size(); i++) err = std::fmax(err, std::fabs(got[i] - want[i])), ref = std::fmax(ref, std::fabs(want[i]));
  report(what, err, ref, bound);
}

double softplus(double v) { return v > 20 ? v : std::log1p(std::exp(v)); }
double silu(double v) { return v / (1 + std::exp(-v)); }

void checkQ4() {
  const int shapes[][4] = {{11, 200, 40, 128}, {3, 96, 16, 32}, {8, 256, 64, 128}, {1, 130, 21, 64}};
  for (const auto& sh : shapes) {
    const int M = sh[0], K = sh[1], N = sh[2], block = sh[3], blocks = (K + block - 1) / block, half = block / 2;
    Stream s{static_cast<uint32_t>(K * 7 + N)};
    std::vector<uint8_t> w(static_cast<size_t>(N * blocks * half));
    for (auto& b : w) b = static_cast<uint8_t>((s.next() + 1.f) * 127.99f);
    std::vector<float> sc = s.take(static_cast<size_t>(N * blocks), 0.05f), x(static_cast<size_t>(M * blocks * block), 0.f),
                       y(static_cast<size_t>(M * N));
    for (int m = 0; m < M; m++)
      for (int k = 0; k < K; k++) x[static_cast<size_t>(m * blocks * block + k)] = 2.f * s.next();
    me::Q4Packed p;
    me::q4Pack(N, blocks, half, w.data(), sc.data(), p);
    me::q4MatMul(p, M, 0, p.groups, x.data(), y.data());
    std::vector<double> want(static_cast<size_t>(M * N));
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
          const int byte = w[static_cast<size_t>((n * blocks + k / block) * half + (k % block) / 2)];
          want[static_cast<size_t>(m * N + n)] += ((k % 2 ? byte >> 4 : byte & 15) - 8) *
                                                  double(sc[static_cast<size_t>(n * blocks + k / block)]) *
                                                  x[static_cast<size_t>(m * blocks * block + k)];
        }
    char what[64];
    std::snprintf(what, sizeof what, "MatMulQ4 M %d K %d N %d block %d", M, K, N, block);
    compare(what, y, want, 2e-6);
  }
}

void checkSsd(int64_t P, int64_t N, bool inPlace) {
  const int64_t B = 2, H = 4, G = 2;
  Stream s{static_cast<uint32_t>(P * 100 + N)};
  std::vector<float> S = s.take(static_cast<size_t>(B * H * P * N), 2.f), dt = s.take(static_cast<size_t>(B * H), 3.f),
                     x = s.take(static_cast<size_t>(B * H * P)), Bm = s.take(static_cast<size_t>(B * G * N)),
                     Cm = s.take(static_cast<size_t>(B * G * N)), dtBias = s.take(static_cast<size_t>(H)),
                     A = s.take(static_cast<size_t>(H), 4.f), D = s.take(static_cast<size_t>(H)), y(static_cast<size_t>(B * H * P));
  for (auto& a : A) a = -std::fabs(a);
  std::vector<double> wantS(S.begin(), S.end()), wantY(y.size());
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++) {
      const double d =
          std::fmin(std::fmax(softplus(dt[static_cast<size_t>(b * H + h)] + double(dtBias[static_cast<size_t>(h)])), 0.01), 0.4);
      const int64_t g = h / (H / G);
      for (int64_t p = 0; p < P; p++) {
        double acc = 0;
        for (int64_t n = 0; n < N; n++) {
          double& v = wantS[static_cast<size_t>(((b * H + h) * P + p) * N + n)];
          v = std::exp(d * A[static_cast<size_t>(h)]) * v +
              d * x[static_cast<size_t>((b * H + h) * P + p)] * Bm[static_cast<size_t>((b * G + g) * N + n)];
          acc += v * Cm[static_cast<size_t>((b * G + g) * N + n)];
        }
        wantY[static_cast<size_t>((b * H + h) * P + p)] =
            acc + D[static_cast<size_t>(h)] * double(x[static_cast<size_t>((b * H + h) * P + p)]);
      }
    }
  std::vector<float> out(inPlace ? 0 : S.size());
  float* sOut = inPlace ? S.data() : out.data();
  me::ssdStep(0, B, H, P, N, G, S.data(), dt.data(), x.data(), Bm.data(), Cm.data(), dtBias.data(), A.data(), D.data(), 0.01f, 0.4f,
              y.data(), sOut);
  char what[64];
  std::snprintf(what, sizeof what, "SsdStep P %lld N %lld%s: state", static_cast<long long>(P), static_cast<long long>(N),
                inPlace ? " in place" : "");
  compare(what, inPlace ? S : out, wantS, 2e-6);
  std::snprintf(what, sizeof what, "SsdStep P %lld N %lld%s: y", static_cast<long long>(P), static_cast<long long>(N),
                inPlace ? " in place" : "");
  compare(what, y, wantY, 2e-6);
}

void checkSelective() {
  const int64_t B = 3, N = 4, E = 40;
  Stream s{99};
  std::vector<float> h = s.take(static_cast<size_t>(B * N * E), 3.f), dt(static_cast<size_t>(B * E)),
                     x = s.take(static_cast<size_t>(B * E), 2.f), Bm = s.take(static_cast<size_t>(B * N)),
                     Cm = s.take(static_cast<size_t>(B * N)), z = s.take(static_cast<size_t>(B * E), 6.f),
                     A = s.take(static_cast<size_t>(N * E)), D = s.take(static_cast<size_t>(E)), y(static_cast<size_t>(B * E)),
                     scratch(static_cast<size_t>(2 * E));
  for (size_t i = 0; i < dt.size(); i++)
    dt[i] = -30.f + 60.f * static_cast<float>(i) / static_cast<float>(dt.size() - 1);  // both sides of softplus' threshold
  for (auto& a : A) a = -std::exp(2.f * a);
  std::vector<double> wantH(h.begin(), h.end()), wantY(y.size());
  for (int64_t b = 0; b < B; b++)
    for (int64_t e = 0; e < E; e++) {
      const double d = softplus(dt[static_cast<size_t>(b * E + e)]);
      double acc = 0;
      for (int64_t n = 0; n < N; n++) {
        double& v = wantH[static_cast<size_t>((b * N + n) * E + e)];
        v = std::exp(d * A[static_cast<size_t>(n * E + e)]) * v +
            d * x[static_cast<size_t>(b * E + e)] * Bm[static_cast<size_t>(b * N + n)];
        acc += Cm[static_cast<size_t>(b * N + n)] * v;
      }
      wantY[static_cast<size_t>(b * E + e)] =
          (acc + D[static_cast<size_t>(e)] * double(x[static_cast<size_t>(b * E + e)])) * silu(z[static_cast<size_t>(b * E + e)]);
    }
  me::selectiveStep(0, B, N, E, h.data(), dt.data(), x.data(), Bm.data(), Cm.data(), z.data(), A.data(), D.data(), y.data(), h.data(),
                    scratch.data());
  compare("SelectiveStep in place: state", h, wantH, 2e-6);
  compare("SelectiveStep in place: y", y, wantY, 2e-6);
}

void checkConv() {
  const int64_t B = 3, K = 4, C = 24;
  Stream s{7};
  std::vector<float> x = s.take(static_cast<size_t>(B * C), 3.f), st = s.take(static_cast<size_t>(B * (K - 1) * C), 3.f),
                     w = s.take(static_cast<size_t>(K * C)), bias = s.take(static_cast<size_t>(C)), y(static_cast<size_t>(B * C));
  std::vector<double> wantY(y.size()), wantS(st.size());
  for (int64_t b = 0; b < B; b++)
    for (int64_t c = 0; c < C; c++) {
      double acc = bias[static_cast<size_t>(c)];
      for (int64_t k = 0; k < K; k++) {
        const double v = k + 1 < K ? st[static_cast<size_t>((b * (K - 1) + k) * C + c)] : x[static_cast<size_t>(b * C + c)];
        acc += v * w[static_cast<size_t>(k * C + c)];
        if (k > 0) wantS[static_cast<size_t>((b * (K - 1) + k - 1) * C + c)] = v;
      }
      wantY[static_cast<size_t>(b * C + c)] = silu(acc);
    }
  me::convStep(0, B, K, C, x.data(), st.data(), w.data(), bias.data(), y.data(), st.data());
  compare("ConvStep in place: state", st, wantS, 0);
  compare("ConvStep in place: y", y, wantY, 2e-6);
}

}  // namespace

int main() {
  std::printf("instruction set: %s\n", me::isaName(me::isa()));
  checkQ4();
  checkSsd(8, 16, false);
  checkSsd(6, 12, false);
  checkSsd(8, 16, true);
  checkSelective();
  checkConv();
  if (failures) std::printf("%d case(s) FAILED\n", failures);
  return failures ? 1 : 0;
}
