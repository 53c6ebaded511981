// The ops of OPS.md: for each, its tensors, attributes, shape rules and the call of its kernel in
// engines/native/kernels. No arithmetic of the model here: shapes, pointers and strides only.
#include <algorithm>
#include <string>
#include "kernels/kernels.cuh"
#include "plugin.h"

namespace me::trt {

// ---- helpers ---------------------------------------------------------------------------------------
static bool same(int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; }  // −1: not known yet

static std::string text(const Dims& d) {
  std::string s = "(";
  for (int i = 0; i < d.nbDims; i++) s += (i ? ", " : "") + (d.d[i] < 0 ? std::string("?") : std::to_string(d.d[i]));
  return s + ")";
}

// "" if d has rank r, else the complaint about input `name`
static std::string rank(const Dims& d, int r, const char* name) {
  if (d.nbDims == r) return "";
  return std::string("input ") + name + " has shape " + text(d) + ", expected rank " + std::to_string(r);
}

static std::string mismatch(const char* name, const Dims& d, const std::string& want) {
  return std::string("input ") + name + " has shape " + text(d) + ", expected " + want;
}

#define ME_CHECK(expr)          \
  do {                          \
    std::string e_ = (expr);    \
    if (!e_.empty()) return e_; \
  } while (0)

static void copyDims(const DimsExprs& from, DimsExprs& to) {
  to.nbDims = from.nbDims;
  for (int i = 0; i < from.nbDims; i++) to.d[i] = from.d[i];
}

static bool sameAs(const DimsExprs* in, DimsExprs* out, const std::vector<std::pair<int, int>>& outFromIn) {
  for (const auto& p : outFromIn) copyDims(in[p.second], out[p.first]);
  return true;
}

// the step kernels address each row's state through a slot index: row b uses slot b here
__global__ void iotaKernel(int* p, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = i;
}
static cudaError_t identitySlots(int* p, int n, cudaStream_t s) {
  if (n > 0) iotaKernel<<<(n + 255) / 256, 256, 0, s>>>(p, n);
  return cudaGetLastError();
}

static size_t slotsBytes(const Dims& x) { return (size_t)std::max<int64_t>(x.d[0], 1) * sizeof(int); }

template <class T>
static T* P(const Tensor& t) {
  return static_cast<T*>(t.p);
}

// ---- causal conv1d ---------------------------------------------------------------------------------
// in: x, state (B, C, K-1), w (C, K), bias (C), qscale (C); out: y, state_out [, y_q]
template <bool Prefill>
struct Conv {
  static std::vector<Role> inputs(const Attrs&) { return {Role::Act, Role::F32, Role::F32, Role::F32, Role::F32}; }
  static std::vector<Out> outputs(const Attrs& a) {
    std::vector<Out> o{{Role::Act, -1}, {Role::F32, 1}};
    if (a.fl("int8_scale") > 0.f) o.push_back({Role::I8, -1});
    return o;
  }
  static bool shapes(const Attrs& a, const DimsExprs* in, DimsExprs* out, IExprBuilder&) {
    if (in[0].nbDims != (Prefill ? 3 : 2) || in[1].nbDims != 3) return false;
    sameAs(in, out, {{0, 0}, {1, 1}});
    if (a.fl("int8_scale") > 0.f) copyDims(in[0], out[2]);
    return true;
  }
  static std::string check(const Attrs&, const Dims* in) {
    const int r = Prefill ? 3 : 2;
    ME_CHECK(rank(in[0], r, "x"));
    ME_CHECK(rank(in[1], 3, "state"));
    ME_CHECK(rank(in[2], 2, "w"));
    ME_CHECK(rank(in[3], 1, "bias"));
    ME_CHECK(rank(in[4], 1, "qscale"));
    const int64_t C = in[2].d[0], K = in[2].d[1];
    if (C < 1 || K < 2 || K > 8) return mismatch("w", in[2], "(C, K) fixed at build time, K in 2..8");
    if (!same(in[0].d[r - 1], C)) return mismatch("x", in[0], "channels " + std::to_string(C));
    if (!same(in[1].d[0], in[0].d[0]) || !same(in[1].d[1], C) || !same(in[1].d[2], K - 1))
      return mismatch("state", in[1], "(B, " + std::to_string(C) + ", " + std::to_string(K - 1) + ")");
    if (!same(in[3].d[0], C)) return mismatch("bias", in[3], "(" + std::to_string(C) + ")");
    if (!same(in[4].d[0], C)) return mismatch("qscale", in[4], "(" + std::to_string(C) + ")");
    return "";
  }
  static size_t workspace(const Attrs&, const Dims* in) { return Prefill ? 0 : slotsBytes(in[0]); }
  static cudaError_t enqueue(const Run& r) {
    const Dims& x = r.in[0].d;
    const int C = (int)r.in[2].d.d[0], K = (int)r.in[2].d.d[1], B = (int)x.d[0];
    const float *w = P<float>(r.in[2]), *b = P<float>(r.in[3]), *qs = P<float>(r.in[4]);
    const float qi8 = r.a.fl("int8_scale");
    float* st = P<float>(r.out[1]);
    int8_t* yq = r.out.size() > 2 ? P<int8_t>(r.out[2]) : nullptr;
    if (B == 0) return cudaSuccess;
    if (!Prefill) {
      int* slots = static_cast<int*>(r.ws);
      if (cudaError_t e = identitySlots(slots, B, r.s)) return e;
      return conv1dStep(P<float>(r.in[0]), C, 0, B, C, K, w, b, st, (long long)C * (K - 1), slots, qs, P<float>(r.out[0]), yq, qi8, r.s);
    }
    const int T = (int)x.d[1];
    for (int s = 0; s < B && T > 0; s++) {
      const size_t o = (size_t)s * T * C;
      if (cudaError_t e = conv1dPrefill(P<float>(r.in[0]) + o, C, 0, T, C, K, w, b, st + (size_t)s * C * (K - 1), qs,
                                        P<float>(r.out[0]) + o, yq ? yq + o : nullptr, qi8, r.s))
        return e;
    }
    return cudaSuccess;
  }
};

// ---- Mamba-1 selective scan ------------------------------------------------------------------------
// in: h (B, E, N), xdbl [dt_low | B | C], x, z, dt_w (E, R) half, dt_b (E), A (E, N), D (E); out: y, h_out
template <bool Prefill>
struct Selective {
  static std::vector<Role> inputs(const Attrs&) {
    return {Role::F32, Role::Act, Role::Act, Role::Act, Role::F16, Role::F32, Role::F32, Role::F32};
  }
  static std::vector<Out> outputs(const Attrs& a) { return {{a.in("out_int8") ? Role::I8 : Role::Act, -1}, {Role::F32, 0}}; }
  static bool shapes(const Attrs&, const DimsExprs* in, DimsExprs* out, IExprBuilder&) {
    if (in[0].nbDims != 3 || in[2].nbDims != (Prefill ? 3 : 2)) return false;
    return sameAs(in, out, {{0, 2}, {1, 0}});
  }
  static std::string check(const Attrs&, const Dims* in) {
    const int r = Prefill ? 3 : 2;
    ME_CHECK(rank(in[0], 3, "state"));
    ME_CHECK(rank(in[1], r, "xdbl"));
    ME_CHECK(rank(in[2], r, "x"));
    ME_CHECK(rank(in[3], r, "z"));
    ME_CHECK(rank(in[4], 2, "dt_w"));
    ME_CHECK(rank(in[5], 1, "dt_b"));
    ME_CHECK(rank(in[6], 2, "A"));
    ME_CHECK(rank(in[7], 1, "D"));
    const int64_t E = in[6].d[0], N = in[6].d[1], R = in[4].d[1];
    if (E < 1 || N < 1 || N > 64) return mismatch("A", in[6], "(E, N) fixed at build time, N at most 64");
    if (R < 1 || !same(in[4].d[0], E)) return mismatch("dt_w", in[4], "(" + std::to_string(E) + ", R) fixed at build time");
    const std::string rows = Prefill ? "(B, T, " : "(B, ";
    for (int i : {2, 3}) {
      bool ok = same(in[i].d[r - 1], E);
      for (int k = 0; k < r - 1; k++) ok = ok && same(in[i].d[k], in[1].d[k]);
      if (!ok) return mismatch(i == 2 ? "x" : "z", in[i], rows + std::to_string(E) + ") with xdbl's rows");
    }
    if (!same(in[1].d[r - 1], R + 2 * N)) return mismatch("xdbl", in[1], rows + std::to_string(R + 2 * N) + ")");
    if (!same(in[0].d[0], in[2].d[0]) || !same(in[0].d[1], E) || !same(in[0].d[2], N))
      return mismatch("state", in[0], "(B, " + std::to_string(E) + ", " + std::to_string(N) + ")");
    if (!same(in[5].d[0], E)) return mismatch("dt_b", in[5], "(" + std::to_string(E) + ")");
    if (!same(in[7].d[0], E)) return mismatch("D", in[7], "(" + std::to_string(E) + ")");
    return "";
  }
  static size_t workspace(const Attrs&, const Dims* in) {
    if (!Prefill) return slotsBytes(in[2]);
    return (size_t)std::max<int64_t>(volume(in[2]), 1) * sizeof(float);  // dt_proj's output, (B, T, E)
  }
  static cudaError_t enqueue(const Run& r) {
    const int E = (int)r.in[6].d.d[0], N = (int)r.in[6].d.d[1], R = (int)r.in[4].d.d[1], W = R + 2 * N;
    const int B = (int)r.in[2].d.d[0];
    const bool i8 = r.a.in("out_int8") != 0;
    Scan1 p{E,
            N,
            R,
            P<float>(r.in[1]),
            W,
            nullptr,
            P<__half>(r.in[4]),
            P<float>(r.in[5]),
            P<float>(r.in[6]),
            P<float>(r.in[7]),
            P<float>(r.in[2]),
            P<float>(r.in[3]),
            E,
            r.a.fl("b_scale"),
            r.a.fl("c_scale"),
            i8 ? nullptr : P<float>(r.out[0]),
            i8 ? P<int8_t>(r.out[0]) : nullptr,
            r.a.fl("out_scale")};
    float* h = P<float>(r.out[1]);
    if (B == 0) return cudaSuccess;
    if (!Prefill) {
      int* slots = static_cast<int*>(r.ws);
      if (cudaError_t e = identitySlots(slots, B, r.s)) return e;
      return scan1Step(p, B, h, (long long)E * N, slots, r.s);
    }
    const int T = (int)r.in[2].d.d[1];
    if (T == 0) return cudaSuccess;
    // dt_proj without its bias (the scan adds it) over all B·T rows at once, as the runner does
    float* dtRaw = static_cast<float*>(r.ws);
    const LinearW dtp{W_F16, E, R, p.dtW, nullptr, 0, nullptr, 0, nullptr, nullptr};
    if (cudaError_t e = linear(dtp, p.dbl, W, 0.f, B * T, dtRaw, E, r.s)) return e;
    for (int s = 0; s < B; s++) {
      Scan1 q = p;
      const size_t o = (size_t)s * T * E;
      q.dbl = p.dbl + (size_t)s * T * W;
      q.dtRaw = dtRaw + o;
      q.x = p.x + o, q.z = p.z + o;
      if (q.y) q.y = p.y + o;
      if (q.yq) q.yq = p.yq + o;
      if (cudaError_t e = scan1Prefill(q, T, h + (size_t)s * E * N, r.s)) return e;
    }
    return cudaSuccess;
  }
};

// ---- Mamba-2 SSD -----------------------------------------------------------------------------------
// in: S (B, H, P, N), dt, xbc [x | B | C], dt_bias, A, D (H) [, z]; out: y, S_out
template <bool Prefill>
struct SsdOp {
  static std::vector<Role> inputs(const Attrs& a) {
    std::vector<Role> r{Role::F32, Role::Act, Role::Act, Role::F32, Role::F32, Role::F32};
    if (a.in("gate")) r.push_back(Role::Act);
    return r;
  }
  static std::vector<Out> outputs(const Attrs&) { return {{Role::Act, -1}, {Role::F32, 0}}; }
  static bool shapes(const Attrs&, const DimsExprs* in, DimsExprs* out, IExprBuilder& b) {
    const int r = Prefill ? 3 : 2;
    if (in[0].nbDims != 4 || in[1].nbDims != r) return false;
    out[0].nbDims = r;
    for (int k = 0; k < r - 1; k++) out[0].d[k] = in[1].d[k];
    out[0].d[r - 1] = b.operation(DimensionOperation::kPROD, *in[0].d[1], *in[0].d[2]);  // H·P
    copyDims(in[0], out[1]);
    return out[0].d[r - 1] != nullptr;
  }
  static std::string check(const Attrs& a, const Dims* in) {
    const int r = Prefill ? 3 : 2;
    ME_CHECK(rank(in[0], 4, "state"));
    ME_CHECK(rank(in[1], r, "dt"));
    ME_CHECK(rank(in[2], r, "xbc"));
    for (int i : {3, 4, 5}) ME_CHECK(rank(in[i], 1, i == 3 ? "dt_bias" : i == 4 ? "A" : "D"));
    const int64_t H = in[0].d[1], Pd = in[0].d[2], N = in[0].d[3];
    if (H < 1 || Pd < 1 || N < 32 || N % 32 || N > 256)
      return mismatch("state", in[0], "(B, H, P, N) with H, P, N fixed at build time, N a multiple of 32 up to 256");
    const int64_t W = in[2].d[r - 1], GN2 = W - H * Pd;
    if (W < 0 || GN2 <= 0 || GN2 % (2 * N) || H % (GN2 / (2 * N)))
      return mismatch("xbc", in[2], "width H·P + 2·G·N with G dividing H = " + std::to_string(H));
    for (int k = 0; k < r - 1; k++)
      if (!same(in[1].d[k], in[2].d[k])) return mismatch("xbc", in[2], "the rows of dt " + text(in[1]));
    if (!same(in[1].d[r - 1], H)) return mismatch("dt", in[1], "last dimension H = " + std::to_string(H));
    if (!same(in[0].d[0], in[1].d[0])) return mismatch("state", in[0], "batch as dt's");
    for (int i : {3, 4, 5})
      if (!same(in[i].d[0], H)) return mismatch(i == 3 ? "dt_bias" : i == 4 ? "A" : "D", in[i], "(" + std::to_string(H) + ")");
    if (a.in("gate")) {
      ME_CHECK(rank(in[6], r, "z"));
      for (int k = 0; k < r; k++)
        if (!same(in[6].d[k], k == r - 1 ? H * Pd : in[1].d[k])) return mismatch("z", in[6], "the rows of dt, H·P columns");
    }
    return "";
  }
  static size_t workspace(const Attrs&, const Dims* in) { return Prefill ? 0 : slotsBytes(in[1]); }
  static cudaError_t enqueue(const Run& r) {
    const Dims& S = r.in[0].d;
    const int H = (int)S.d[1], Pd = (int)S.d[2], N = (int)S.d[3], HP = H * Pd;
    const int rk = Prefill ? 3 : 2;
    const int W = (int)r.in[2].d.d[rk - 1], G = (W - HP) / (2 * N), B = (int)r.in[1].d.d[0];
    const int gate = r.a.in("gate") ? 1 : 0;
    Ssd p{H,
          Pd,
          N,
          G,
          P<float>(r.in[2]),
          W,
          P<float>(r.in[1]),
          H,
          P<float>(r.in[3]),
          P<float>(r.in[4]),
          P<float>(r.in[5]),
          r.a.fl("dt_min"),
          r.a.fl("dt_max"),
          gate ? P<float>(r.in[6]) : nullptr,
          HP,
          gate,
          P<float>(r.out[0])};
    float* st = P<float>(r.out[1]);
    if (B == 0) return cudaSuccess;
    if (!Prefill) {
      int* slots = static_cast<int*>(r.ws);
      if (cudaError_t e = identitySlots(slots, B, r.s)) return e;
      return ssdStep(p, B, st, (long long)HP * N, slots, r.s);
    }
    const int T = (int)r.in[1].d.d[1];
    for (int s = 0; s < B && T > 0; s++) {
      Ssd q = p;
      q.xbc = p.xbc + (size_t)s * T * W;
      q.dtRaw = p.dtRaw + (size_t)s * T * H;
      if (q.z) q.z = p.z + (size_t)s * T * HP;
      q.y = p.y + (size_t)s * T * HP;
      if (cudaError_t e = ssdPrefill(q, T, st + (size_t)s * HP * N, r.s)) return e;
    }
    return cudaSuccess;
  }
};

// ---- residual add + RMSNorm + quantization ---------------------------------------------------------
// in: x, w (D) [, residual]; out: y [, sum]
struct RmsNorm {
  static std::vector<Role> inputs(const Attrs& a) {
    std::vector<Role> r{Role::Act, Role::F32};
    if (a.in("has_residual")) r.push_back(Role::Act);
    return r;
  }
  static std::vector<Out> outputs(const Attrs& a) {
    std::vector<Out> o{{a.in("out_int8") ? Role::I8 : Role::Act, -1}};
    if (a.in("has_residual")) o.push_back({Role::Act, -1});
    return o;
  }
  static bool shapes(const Attrs& a, const DimsExprs* in, DimsExprs* out, IExprBuilder&) {
    if (in[0].nbDims < 2 || in[0].nbDims > 3) return false;
    copyDims(in[0], out[0]);
    if (a.in("has_residual")) copyDims(in[0], out[1]);
    return true;
  }
  static std::string check(const Attrs& a, const Dims* in) {
    if (in[0].nbDims < 2 || in[0].nbDims > 3) return mismatch("x", in[0], "rank 2 or 3");
    ME_CHECK(rank(in[1], 1, "w"));
    const int64_t D = in[1].d[0];
    if (D < 4 || D % 4 || D > 16384) return mismatch("w", in[1], "(D) fixed at build time, D a multiple of 4 up to 16384");
    if (!same(in[0].d[in[0].nbDims - 1], D)) return mismatch("x", in[0], "last dimension D = " + std::to_string(D));
    if (a.in("has_residual")) {
      ME_CHECK(rank(in[2], in[0].nbDims, "residual"));
      for (int k = 0; k < in[0].nbDims; k++)
        if (!same(in[2].d[k], in[0].d[k])) return mismatch("residual", in[2], "x's shape " + text(in[0]));
    }
    return "";
  }
  static size_t workspace(const Attrs&, const Dims*) { return 0; }
  static cudaError_t enqueue(const Run& r) {
    const int D = (int)r.in[1].d.d[0];
    const int64_t M = volume(r.in[0].d) / D;
    if (M == 0) return cudaSuccess;
    const bool i8 = r.a.in("out_int8") != 0, res = r.a.in("has_residual") != 0;
    float* hidden = P<float>(r.in[0]);  // read only without a residual
    if (res) {
      hidden = P<float>(r.out[1]);  // the kernel adds the residual into hidden in place
      if (cudaError_t e = cudaMemcpyAsync(hidden, r.in[0].p, (size_t)M * D * sizeof(float), cudaMemcpyDeviceToDevice, r.s)) return e;
    }
    return addRmsnormQuant(hidden, res ? P<float>(r.in[2]) : nullptr, (int)M, D, P<float>(r.in[1]), r.a.fl("eps"),
                           i8 ? nullptr : P<float>(r.out[0]), i8 ? P<int8_t>(r.out[0]) : nullptr, r.a.fl("scale"), r.s);
  }
};

// ---- gate, gated RMSNorm, block Hadamard rotation, quantization -------------------------------------
// in: y [, z] [, w]; out: out
struct Hadamard {
  static std::vector<Role> inputs(const Attrs& a) {
    std::vector<Role> r{Role::Act};
    if (a.in("gate")) r.push_back(Role::Act);
    if (a.in("group_size") > 0) r.push_back(Role::F32);
    return r;
  }
  static std::vector<Out> outputs(const Attrs& a) { return {{a.in("out_int8") ? Role::I8 : Role::Act, -1}}; }
  static bool shapes(const Attrs&, const DimsExprs* in, DimsExprs* out, IExprBuilder&) {
    if (in[0].nbDims < 2 || in[0].nbDims > 3) return false;
    copyDims(in[0], out[0]);
    return true;
  }
  static std::string check(const Attrs& a, const Dims* in) {
    const Dims& y = in[0];
    if (y.nbDims < 2 || y.nbDims > 3) return mismatch("y", y, "rank 2 or 3");
    const int64_t E = y.d[y.nbDims - 1];
    if (E < 1 || E * 4 > 200 * 1024) return mismatch("y", y, "a last dimension fixed at build time, at most 51200");
    const int hb = a.in("hadamard_block"), gs = a.in("group_size");
    if (hb > 1 && ((hb & (hb - 1)) || E % hb))
      return "attribute hadamard_block " + std::to_string(hb) + " is not a power of two dividing " + std::to_string(E);
    if (hb < 0) return "attribute hadamard_block is negative";
    const int hm = a.in("hadamard_factor");
    if (hm != 1 && ((hm != 12 && hm != 20) || (int64_t)hm * hb != E))
      return "attribute hadamard_factor " + std::to_string(hm) +
             ": expected 1, or 12 or 20 with hadamard_block · factor = " + std::to_string(E);
    if (gs < 0 || (gs > 0 && E % gs)) return "attribute group_size " + std::to_string(gs) + " does not divide " + std::to_string(E);
    int k = 1;
    if (a.in("gate")) {
      ME_CHECK(rank(in[k], y.nbDims, "z"));
      for (int j = 0; j < y.nbDims; j++)
        if (!same(in[k].d[j], y.d[j])) return mismatch("z", in[k], "y's shape " + text(y));
      k++;
    }
    if (gs > 0) {
      ME_CHECK(rank(in[k], 1, "w"));
      if (!same(in[k].d[0], E)) return mismatch("w", in[k], "(" + std::to_string(E) + ")");
    }
    return "";
  }
  static size_t workspace(const Attrs&, const Dims*) { return 0; }
  static cudaError_t enqueue(const Run& r) {
    const Dims& y = r.in[0].d;
    const int E = (int)y.d[y.nbDims - 1];
    const int64_t M = volume(y) / E;
    if (M == 0) return cudaSuccess;
    const int gate = r.a.in("gate") ? 1 : 0, gs = r.a.in("group_size"), hb = r.a.in("hadamard_block");
    const bool i8 = r.a.in("out_int8") != 0;
    RowPost p{E,
              gate ? P<float>(r.in[1]) : nullptr,
              E,
              gate,
              r.a.in("norm_before_gate") ? 1 : 0,
              gs,
              gs > 0 ? P<float>(r.in[1 + gate]) : nullptr,
              r.a.fl("eps"),
              hb > 1 ? hb : 0,
              r.a.fl("scale"),
              nullptr,
              0,
              r.a.in("hadamard_factor")};
    return rowNormRotateQuant(p, P<float>(r.in[0]), (int)M, i8 ? nullptr : P<float>(r.out[0]), i8 ? P<int8_t>(r.out[0]) : nullptr, r.s);
  }
};

// ---- the table ---------------------------------------------------------------------------------------
template <class O>
static OpDef def(const char* name, std::vector<AttrDef> attrs) {
  return OpDef{name, std::move(attrs), O::inputs, O::outputs, O::shapes, O::check, O::workspace, O::enqueue};
}

const std::vector<const OpDef*>& ops() {
  static const std::vector<AttrDef> conv{{"int8_scale", false, 0.f}};
  static const std::vector<AttrDef> sel{
      {"b_scale", false, 0.f}, {"c_scale", false, 0.f}, {"out_scale", false, 0.f}, {"out_int8", true, 0.f}};
  static const std::vector<AttrDef> ssd{{"dt_min", false, 0.f}, {"dt_max", false, 3.4e38f}, {"gate", true, 0.f}};
  static const std::vector<AttrDef> norm{
      {"eps", false, 1e-5f}, {"scale", false, 0.f}, {"out_int8", true, 0.f}, {"has_residual", true, 0.f}};
  static const std::vector<AttrDef> had{{"gate", true, 0.f},     {"norm_before_gate", true, 0.f}, {"group_size", true, 0.f},
                                        {"eps", false, 1e-5f},   {"hadamard_block", true, 0.f},   {"scale", false, 0.f},
                                        {"out_int8", true, 0.f}, {"hadamard_factor", true, 1.f}};
  static const OpDef table[] = {
      def<Conv<true>>("ConvPrefill", conv),        def<Conv<false>>("ConvStep", conv),  def<Selective<true>>("SelectiveScan", sel),
      def<Selective<false>>("SelectiveStep", sel), def<SsdOp<true>>("SsdScan", ssd),    def<SsdOp<false>>("SsdStep", ssd),
      def<RmsNorm>("RmsNormQuant", norm),          def<Hadamard>("HadamardQuant", had),
  };
  static const std::vector<const OpDef*> list = [] {
    std::vector<const OpDef*> l;
    for (const OpDef& d : table) l.push_back(&d);
    return l;
  }();
  return list;
}

}  // namespace me::trt
