// Times the fused kernels alone (no onnxruntime), one thread, in the instruction set isa() picks
// (MAMBA_EDGE_ORT_OPS_ISA asks for less): the decode-step kernels at batch 1 and 8 and the prefill
// scans over 512 tokens, at the demo models' and mamba-130m's shapes. Prints one JSON object;
// scripts/ort-kernels-bench.mjs runs it in every instruction set and writes the record.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "../src/kernels.h"

namespace {

std::vector<float> values(size_t n, float lo, float hi, uint32_t seed) {
  std::vector<float> v(n);
  for (auto& e : v) e = lo + (hi - lo) * ((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.f;
  return v;
}

// µs per call: the best of 7 rounds, each long enough (≥ 2 ms) to average out the clock
template <typename F>
double time(F&& f) {
  using clock = std::chrono::steady_clock;
  int n = 1;
  for (;;) {
    const auto t0 = clock::now();
    for (int i = 0; i < n; i++) f();
    if (std::chrono::duration<double>(clock::now() - t0).count() > 2e-3) break;
    n *= 2;
  }
  double best = 1e30;
  for (int r = 0; r < 7; r++) {
    const auto t0 = clock::now();
    for (int i = 0; i < n; i++) f();
    best = std::min(best, std::chrono::duration<double, std::micro>(clock::now() - t0).count() / n);
  }
  return best;
}

std::string out;
void row(const char* kernel, const char* shape, int64_t rows, double us) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s\n    {\"kernel\": \"%s\", \"shape\": \"%s\", \"rows\": %lld, \"us\": %.3f}", out.empty() ? "" : ",",
                kernel, shape, static_cast<long long>(rows), us);
  out += buf;
}

// Mamba-1: SelectiveStep at batch B and SelectiveScan over T tokens, state (N, E); ConvStep over E channels
void mamba1(const char* shape, int64_t N, int64_t E, int64_t K) {
  const auto A = values(N * E, -8.f, -0.5f, 1), D = values(E, -1.f, 1.f, 2);
  for (int64_t B : {1, 8}) {
    auto h = values(B * N * E, -1.f, 1.f, 3);
    const auto dt = values(B * E, -4.f, 1.f, 4), x = values(B * E, -1.f, 1.f, 5), z = values(B * E, -2.f, 2.f, 6);
    const auto Bm = values(B * N, -1.f, 1.f, 7), Cm = values(B * N, -1.f, 1.f, 8);
    std::vector<float> y(B * E), scratch(2 * E);
    row("SelectiveStep", shape, B, time([&] {
          me::selectiveStep(0, B, N, E, h.data(), dt.data(), x.data(), Bm.data(), Cm.data(), z.data(), A.data(), D.data(), y.data(),
                            h.data(), scratch.data());
        }));
    auto state = values(B * (K - 1) * E, -1.f, 1.f, 9);
    const auto wT = values(K * E, -0.5f, 0.5f, 10), bias = values(E, -0.1f, 0.1f, 11);
    row("ConvStep", shape, B,
        time([&] { me::convStep(0, B, K, E, x.data(), state.data(), wT.data(), bias.data(), y.data(), state.data()); }));
  }
  const int64_t T = 512;
  const auto h0 = values(N * E, -1.f, 1.f, 12), dt = values(T * E, -4.f, 1.f, 13), x = values(T * E, -1.f, 1.f, 14),
             z = values(T * E, -2.f, 2.f, 15);
  const auto Bm = values(T * N, -1.f, 1.f, 16), Cm = values(T * N, -1.f, 1.f, 17);
  std::vector<float> y(T * E), h(N * E), scratch(2 * E);
  row("SelectiveScan", shape, T, time([&] {
        me::selectiveScan(T, N, E, 0, E, h0.data(), dt.data(), x.data(), Bm.data(), Cm.data(), z.data(), A.data(), D.data(), y.data(),
                          h.data(), scratch.data());
      }));
}

// Mamba-2: SsdStep at batch B and SsdScan over T tokens, state (H, P, N), one group
void mamba2(const char* shape, int64_t H, int64_t P, int64_t N) {
  const auto dtBias = values(H, -2.f, 0.f, 1), A = values(H, -4.f, -0.5f, 2), D = values(H, -1.f, 1.f, 3);
  for (int64_t B : {1, 8}) {
    auto S = values(B * H * P * N, -1.f, 1.f, 4);
    const auto dt = values(B * H, -2.f, 1.f, 5), x = values(B * H * P, -1.f, 1.f, 6), Bm = values(B * N, -1.f, 1.f, 7),
               Cm = values(B * N, -1.f, 1.f, 8);
    std::vector<float> y(B * H * P);
    row("SsdStep", shape, B, time([&] {
          me::ssdStep(0, B, H, P, N, 1, S.data(), dt.data(), x.data(), Bm.data(), Cm.data(), dtBias.data(), A.data(), D.data(), 0.f,
                      3.4e38f, y.data(), S.data());
        }));
  }
  const int64_t T = 512;
  const auto S0 = values(H * P * N, -1.f, 1.f, 9), dt = values(T * H, -2.f, 1.f, 10), x = values(T * H * P, -1.f, 1.f, 11);
  const auto Bm = values(T * N, -1.f, 1.f, 12), Cm = values(T * N, -1.f, 1.f, 13);
  std::vector<float> y(T * H * P), S(H * P * N);
  row("SsdScan", shape, T, time([&] {
        me::ssdScan(T, H, 0, H, P, N, 1, S0.data(), dt.data(), x.data(), Bm.data(), Cm.data(), dtBias.data(), A.data(), D.data(), 0.f,
                    3.4e38f, y.data(), S.data());
      }));
}

}  // namespace

int main() {
  mamba1("mamba1 demo (N 16, E 512)", 16, 512, 4);
  mamba1("mamba-130m (N 16, E 1536)", 16, 1536, 4);
  mamba2("mamba2 demo (H 8, P 64, N 64)", 8, 64, 64);
  mamba2("mamba2-130m (H 24, P 64, N 128)", 24, 64, 128);
  std::printf("{\"isa\": \"%s\", \"threads\": 1, \"results\": [%s\n]}\n", me::isaName(me::isa()), out.c_str());
}
