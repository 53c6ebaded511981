// TensorRT 10.3's calling sequence reproduced against libmamba_edge_trt_plugins.so, not TensorRT:
// no libnvinfer is involved. Plays TensorRT's part for every op of engines/native/trt/OPS.md, in
// float32 and float16: dlopen, getCreators, createPlugin from a PluginFieldCollection as the ONNX
// parser builds it from a node's attributes, the build phase (getOutputDataTypes, getOutputShapes
// through an IExprBuilder of its own with B and T left dynamic, supportsFormatCombination,
// configurePlugin, getWorkspaceSize, getAliasedInput), serialization (getFieldsToSerialize, clone)
// and re-creation in the runtime phase, attachToContext, onShapeChange and enqueue on device
// buffers at two shapes (outputs and workspace poisoned first; the second run with each state
// output aliased to its input, as TensorRT may bind them). Writes every input and output to DIR
// and DIR/cases.json, which scripts/gpu/trt_check.py compares with PyTorch float64.
//   trt_harness [--no-device] LIB DIR [SEED]   (--no-device: no runs, for a machine without a GPU)
#include <NvInferRuntime.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

// ---- expressions: TensorRT's IExprBuilder is an interface over apiv classes; this is ours --------
struct ExprImpl : apiv::VDimensionExpr {
  bool c = false;  // a build-time constant
  int64_t v = 0;   // its value, or the value of the dynamic dimension in the shape being evaluated
  bool isConstant() const override { return c; }
  int64_t getConstantValue() const override { return c ? v : std::numeric_limits<int64_t>::min(); }
  bool isSizeTensor() const override { return false; }
};

struct Expr : IDimensionExpr {
  ExprImpl impl;
  Expr(bool c, int64_t v) {
    impl.c = c, impl.v = v;
    mImpl = &impl;
  }
  ~Expr() noexcept override = default;
  static const ExprImpl& of(const IDimensionExpr& e) { return static_cast<const Expr&>(e).impl; }
};

struct BuilderImpl : apiv::VExprBuilder {
  std::deque<std::unique_ptr<Expr>> pool;
  const IDimensionExpr* make(bool c, int64_t v) {
    pool.emplace_back(new Expr(c, v));
    return pool.back().get();
  }
  const IDimensionExpr* constant(int64_t value) override { return make(true, value); }
  const IDimensionExpr* operation(DimensionOperation op, const IDimensionExpr& first, const IDimensionExpr& second) override {
    const ExprImpl &a = Expr::of(first), &b = Expr::of(second);
    int64_t v = 0;
    switch (op) {
      case DimensionOperation::kSUM:
        v = a.v + b.v;
        break;
      case DimensionOperation::kPROD:
        v = a.v * b.v;
        break;
      case DimensionOperation::kMAX:
        v = std::max(a.v, b.v);
        break;
      case DimensionOperation::kMIN:
        v = std::min(a.v, b.v);
        break;
      case DimensionOperation::kSUB:
        v = a.v - b.v;
        break;
      case DimensionOperation::kEQUAL:
        v = a.v == b.v;
        break;
      case DimensionOperation::kLESS:
        v = a.v < b.v;
        break;
      case DimensionOperation::kFLOOR_DIV:
        v = b.v ? a.v / b.v : 0;
        break;
      case DimensionOperation::kCEIL_DIV:
        v = b.v ? (a.v + b.v - 1) / b.v : 0;
        break;
    }
    return make(a.c && b.c, v);
  }
  const IDimensionExpr* declareSizeTensor(int32_t, const IDimensionExpr&, const IDimensionExpr&) override { return nullptr; }
};

struct Builder : IExprBuilder {
  BuilderImpl impl;
  Builder() { mImpl = &impl; }
  ~Builder() noexcept override = default;
};

struct ResourceContext : IPluginResourceContext {
  IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
  IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};

// ---- cases -------------------------------------------------------------------------------------------
constexpr int64_t kB = -1, kT = -2;  // dynamic dimensions in a shape spec
enum class Kind { Act, F32, F16, I8 };
const char* kindName(Kind k, bool half) {
  return k == Kind::I8 ? "i8" : k == Kind::F16 ? "f16" : k == Kind::F32 ? "f32" : half ? "f16" : "f32";
}
DataType kindType(Kind k, bool half) {
  return k == Kind::I8    ? DataType::kINT8
         : k == Kind::F16 ? DataType::kHALF
         : k == Kind::F32 ? DataType::kFLOAT
         : half           ? DataType::kHALF
                          : DataType::kFLOAT;
}
size_t kindSize(Kind k, bool half) { return k == Kind::I8 ? 1 : k == Kind::F16 ? 2 : k == Kind::F32 ? 4 : half ? 2 : 4; }

struct Gen {  // values: uniform in [lo, hi], negated exp-free (neg: −uniform), or zero
  float lo, hi;
  bool neg = false;
};

struct TensorSpec {
  std::string name;
  Kind kind;
  std::vector<int64_t> shape;
  Gen gen{0, 0};
  int alias = -1;  // outputs: the input it updates in place
};

struct Attr {
  std::string name;
  bool isInt;
  double v;
};

struct Case {
  std::string name, op;
  std::vector<Attr> attrs;
  std::vector<TensorSpec> in, out;
  std::vector<std::pair<int64_t, int64_t>> runs;  // (B, T)
};

std::vector<Case> cases() {
  const int64_t E = 1536, N = 16, R = 48, K = 4, D = 768;                    // mamba-130m
  const int64_t H = 24, P = 64, N2 = 128, C1 = E + 2 * N2, C2 = E + 4 * N2;  // mamba2-130m; G = 1 or 2
  const Gen x{-2, 2}, s{-1, 1}, zero{0, 0};
  std::vector<Case> v;
  auto conv = [&](bool prefill, const char* name, int64_t C, bool quant) {
    Case c{name, prefill ? "ConvPrefill" : "ConvStep", {}, {}, {}, {}};
    std::vector<int64_t> rows = prefill ? std::vector<int64_t>{kB, kT, C} : std::vector<int64_t>{kB, C};
    if (quant) c.attrs.push_back({"int8_scale", false, 0.02});
    c.in = {{"x", Kind::Act, rows, x},
            {"state", Kind::F32, {kB, C, K - 1}, s},
            {"w", Kind::F32, {C, K}, {-0.5, 0.5}},
            {"bias", Kind::F32, {C}, {-0.2, 0.2}},
            {"qscale", Kind::F32, {C}, quant ? Gen{0.01f, 0.03f} : zero}};
    c.out = {{"y", Kind::Act, rows}, {"state_out", Kind::F32, {kB, C, K - 1}, {}, 1}};
    if (quant) c.out.push_back({"y_q", Kind::I8, rows});
    c.runs = prefill ? decltype(c.runs){{1, 37}, {2, 130}} : decltype(c.runs){{1, 1}, {5, 1}};
    v.push_back(c);
  };
  conv(true, "conv_prefill", E, false);
  conv(true, "conv_prefill_q", C1, true);
  conv(false, "conv_step", E, false);
  conv(false, "conv_step_q", C1, true);

  auto sel = [&](bool prefill, const char* name, std::vector<Attr> attrs, bool i8) {
    Case c{name, prefill ? "SelectiveScan" : "SelectiveStep", attrs, {}, {}, {}};
    auto rows = [&](int64_t w) { return prefill ? std::vector<int64_t>{kB, kT, w} : std::vector<int64_t>{kB, w}; };
    c.in = {{"state", Kind::F32, {kB, E, N}, s},
            {"xdbl", Kind::Act, rows(R + 2 * N), s},
            {"x", Kind::Act, rows(E), s},
            {"z", Kind::Act, rows(E), x},
            {"dt_w", Kind::F16, {E, R}, {-0.3, 0.3}},
            {"dt_b", Kind::F32, {E}, {-4, -2}},
            {"A", Kind::F32, {E, N}, {0.5, 8, true}},
            {"D", Kind::F32, {E}, {0.5, 1.5}}};
    c.out = {{"y", i8 ? Kind::I8 : Kind::Act, rows(E)}, {"state_out", Kind::F32, {kB, E, N}, {}, 0}};
    c.runs = prefill ? decltype(c.runs){{1, 37}, {2, 130}} : decltype(c.runs){{1, 1}, {6, 1}};
    v.push_back(c);
  };
  sel(true, "selective_scan", {}, false);
  sel(true, "selective_scan_i8", {{"b_scale", false, 0.01}, {"c_scale", false, 0.01}, {"out_scale", false, 0.05}, {"out_int8", true, 1}},
      true);
  sel(false, "selective_step", {}, false);
  sel(false, "selective_step_fq", {{"b_scale", false, 0.01}, {"c_scale", false, 0.01}, {"out_scale", false, 0.05}}, false);

  auto ssd = [&](bool prefill, const char* name, int64_t W, bool gate, std::vector<Attr> attrs) {
    Case c{name, prefill ? "SsdScan" : "SsdStep", attrs, {}, {}, {}};
    auto rows = [&](int64_t w) { return prefill ? std::vector<int64_t>{kB, kT, w} : std::vector<int64_t>{kB, w}; };
    if (gate) c.attrs.push_back({"gate", true, 1});
    c.in = {{"state", Kind::F32, {kB, H, P, N2}, s}, {"dt", Kind::Act, rows(H), {-3, 1}}, {"xbc", Kind::Act, rows(W), s},
            {"dt_bias", Kind::F32, {H}, {-1, 0.5}},  {"A", Kind::F32, {H}, {1, 8, true}}, {"D", Kind::F32, {H}, {0.5, 1.5}}};
    if (gate) c.in.push_back({"z", Kind::Act, rows(H * P), x});
    c.out = {{"y", Kind::Act, rows(H * P)}, {"state_out", Kind::F32, {kB, H, P, N2}, {}, 0}};
    c.runs = prefill ? decltype(c.runs){{1, 37}, {2, 130}} : decltype(c.runs){{1, 1}, {4, 1}};
    v.push_back(c);
  };
  ssd(true, "ssd_scan", C1, false, {{"dt_min", false, 0.0}, {"dt_max", false, 0.5}});
  ssd(true, "ssd_scan_gate_g2", C2, true, {{"dt_min", false, 0.01}});
  ssd(false, "ssd_step", C1, false, {{"dt_min", false, 0.0}, {"dt_max", false, 0.5}});
  ssd(false, "ssd_step_gate_g2", C2, true, {{"dt_min", false, 0.01}});

  auto rms = [&](const char* name, bool prefill, bool res, std::vector<Attr> attrs, bool i8) {
    Case c{name, "RmsNormQuant", attrs, {}, {}, {}};
    std::vector<int64_t> rows = prefill ? std::vector<int64_t>{kB, kT, D} : std::vector<int64_t>{kB, D};
    if (res) c.attrs.push_back({"has_residual", true, 1});
    c.in = {{"x", Kind::Act, rows, x}, {"w", Kind::F32, {D}, {0.5, 1.5}}};
    if (res) c.in.push_back({"residual", Kind::Act, rows, x});
    c.out = {{"y", i8 ? Kind::I8 : Kind::Act, rows}};
    if (res) c.out.push_back({"sum", Kind::Act, rows});
    c.runs = prefill ? decltype(c.runs){{1, 5}, {2, 33}} : decltype(c.runs){{1, 1}, {7, 1}};
    v.push_back(c);
  };
  rms("rmsnorm", false, false, {{"eps", false, 1e-5}}, false);
  rms("rmsnorm_residual_i8", true, true, {{"scale", false, 0.03}, {"out_int8", true, 1}}, true);
  rms("rmsnorm_fq", false, false, {{"scale", false, 0.03}}, false);

  auto had = [&](const char* name, bool prefill, bool gate, int64_t gs, std::vector<Attr> attrs, bool i8, int64_t E) {
    Case c{name, "HadamardQuant", attrs, {}, {}, {}};
    std::vector<int64_t> rows = prefill ? std::vector<int64_t>{kB, kT, E} : std::vector<int64_t>{kB, E};
    if (gate) c.attrs.push_back({"gate", true, 1});
    if (gs) c.attrs.push_back({"group_size", true, (double)gs});
    c.in = {{"y", Kind::Act, rows, s}};
    if (gate) c.in.push_back({"z", Kind::Act, rows, x});
    if (gs) c.in.push_back({"w", Kind::F32, {E}, {0.5, 1.5}});
    c.out = {{"out", i8 ? Kind::I8 : Kind::Act, rows}};
    c.runs = prefill ? decltype(c.runs){{1, 3}, {2, 9}} : decltype(c.runs){{1, 1}, {3, 1}};
    v.push_back(c);
  };
  had("hadamard_i8", false, false, 0, {{"hadamard_block", true, 512}, {"scale", false, 0.02}, {"out_int8", true, 1}}, true, E);
  had("gated_norm_hadamard_i8", true, true, E, {{"hadamard_block", true, 512}, {"scale", false, 0.03}, {"out_int8", true, 1}}, true, E);
  had("gated_norm", false, true, D, {{"norm_before_gate", true, 1}}, false, E);
  // the rotation over the whole width: 1536 = 12 · 128 (mamba-130m's d_inner)
  had("whole_hadamard_i8", false, false, 0,
      {{"hadamard_block", true, 128}, {"hadamard_factor", true, 12}, {"scale", false, 0.02}, {"out_int8", true, 1}}, true, 1536);
  had("gated_norm_whole_hadamard", true, true, 1536, {{"hadamard_block", true, 128}, {"hadamard_factor", true, 12}}, false, 1536);
  return v;
}

// ---- the sequence ----------------------------------------------------------------------------------
#define CUDA(call)                                                                               \
  do {                                                                                           \
    cudaError_t e_ = (call);                                                                     \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(2);                                                                              \
    }                                                                                            \
  } while (0)

std::string jsonStr(const std::string& s) {
  std::string o = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\')
      o += '\\', o += ch;
    else if ((unsigned char)ch < 0x20)
      o += ' ';
    else
      o += ch;
  }
  return o + "\"";
}

std::vector<int64_t> concrete(const std::vector<int64_t>& spec, int64_t B, int64_t T) {
  std::vector<int64_t> d;
  for (int64_t s : spec) d.push_back(s == kB ? B : s == kT ? T : s);
  return d;
}
Dims dimsOf(const std::vector<int64_t>& d) {
  Dims r{};
  r.nbDims = (int32_t)d.size();
  for (size_t i = 0; i < d.size(); i++) r.d[i] = d[i];
  return r;
}
int64_t count(const std::vector<int64_t>& d) {
  int64_t n = 1;
  for (int64_t x : d) n *= x;
  return n;
}
std::string shapeText(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); i++) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

struct Harness {
  std::vector<IPluginCreatorInterface*> creators;
  std::string dir;
  std::mt19937_64 rng;
  std::string json;       // the cases, for cases.json
  int withErrors = 0;     // cases whose calling sequence failed somewhere
  bool noDevice = false;  // --no-device: the sequence up to attachToContext only (a machine without a GPU)

  IPluginCreatorV3One* find(const std::string& op, std::vector<std::string>& err) {
    for (IPluginCreatorInterface* c : creators) {
      const InterfaceInfo info = c->getInterfaceInfo();
      if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") || info.major != 1) continue;
      auto* v3 = static_cast<IPluginCreatorV3One*>(c);
      if (op == v3->getPluginName() && !std::strcmp(v3->getPluginVersion(), "1") && !std::strcmp(v3->getPluginNamespace(), "mamba_edge"))
        return v3;
    }
    err.push_back("no creator " + op + " version 1 in namespace mamba_edge");
    return nullptr;
  }

  void runCase(const Case& c, bool half) {
    std::vector<std::string> err;
    const std::string name = c.name + (half ? "_f16" : "_f32");
    std::printf("-- %s (%s)\n", name.c_str(), c.op.c_str());
    std::string runsJson;
    auto finish = [&]() {
      withErrors += !err.empty();
      std::string e;
      for (size_t i = 0; i < err.size(); i++) e += (i ? ", " : "") + jsonStr(err[i]), std::printf("   sequence: %s\n", err[i].c_str());
      std::string attrs;
      for (size_t i = 0; i < c.attrs.size(); i++) attrs += (i ? ", " : "") + jsonStr(c.attrs[i].name) + ": " + std::to_string(c.attrs[i].v);
      if (!json.empty()) json += ",\n";
      json += "{\"name\": " + jsonStr(name) + ", \"op\": " + jsonStr(c.op) + ", \"act\": " + jsonStr(half ? "f16" : "f32") +
              ", \"attrs\": {" + attrs + "}, \"sequence_errors\": [" + e + "], \"runs\": [" + runsJson + "]}";
    };
    IPluginCreatorV3One* creator = find(c.op, err);
    if (!creator) return finish();
    // the creator lists the attributes it takes
    const PluginFieldCollection* names = creator->getFieldNames();
    for (const Attr& a : c.attrs) {
      bool listed = false;
      for (int i = 0; names && i < names->nbFields; i++) listed |= names->fields[i].name && a.name == names->fields[i].name;
      if (!listed) err.push_back("getFieldNames does not list " + a.name);
    }
    // fields as the ONNX parser makes them from the node's attributes: FLOAT -> kFLOAT32, INT -> kINT32
    std::deque<float> fv;
    std::deque<int32_t> iv;
    std::vector<PluginField> fields;
    for (const Attr& a : c.attrs) {
      if (a.isInt) {
        iv.push_back((int32_t)a.v);
        fields.emplace_back(a.name.c_str(), &iv.back(), PluginFieldType::kINT32, 1);
      } else {
        fv.push_back((float)a.v);
        fields.emplace_back(a.name.c_str(), &fv.back(), PluginFieldType::kFLOAT32, 1);
      }
    }
    PluginFieldCollection fc{(int32_t)fields.size(), fields.data()};
    std::unique_ptr<IPluginV3> bp(creator->createPlugin(c.name.c_str(), &fc, TensorRTPhase::kBUILD));
    if (!bp) return err.push_back("createPlugin (build phase) returned null"), finish();
    auto* core = static_cast<IPluginV3OneCore*>(bp->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* bcap = bp->getCapabilityInterface(PluginCapabilityType::kBUILD);
    if (!core || !bcap) return err.push_back("no core or build capability"), finish();
    if (c.op != core->getPluginName() || std::strcmp(core->getPluginVersion(), "1") ||
        std::strcmp(core->getPluginNamespace(), "mamba_edge"))
      err.push_back("core capability names another plugin");
    const InterfaceInfo bi = bcap->getInterfaceInfo();
    if (std::strcmp(bi.kind, "PLUGIN_V3ONE_BUILD") || bi.major != 2) err.push_back("build capability is not PLUGIN_V3ONE_BUILD version 2");
    auto* build = static_cast<IPluginV3OneBuildV2*>(static_cast<IPluginV3OneBuild*>(bcap));
    const int nIn = (int)c.in.size(), nOut = (int)c.out.size();
    if (build->getNbOutputs() != nOut) return err.push_back("getNbOutputs " + std::to_string(build->getNbOutputs())), finish();

    // output types from the input types
    std::vector<DataType> inT(nIn), outT(nOut), wantT(nOut);
    for (int i = 0; i < nIn; i++) inT[i] = kindType(c.in[i].kind, half);
    for (int o = 0; o < nOut; o++) wantT[o] = kindType(c.out[o].kind, half);
    if (build->getOutputDataTypes(outT.data(), nOut, inT.data(), nIn)) err.push_back("getOutputDataTypes failed");
    for (int o = 0; o < nOut; o++)
      if (outT[o] != wantT[o]) err.push_back("getOutputDataTypes: output " + c.out[o].name + " has the wrong type");

    // output shapes: B and T are dynamic (not build-time constants); checked at every run's shape
    auto shapesAt = [&](int64_t B, int64_t T) {
      Builder b;
      std::vector<DimsExprs> ie(nIn), oe(nOut);
      for (int i = 0; i < nIn; i++) {
        ie[i].nbDims = (int32_t)c.in[i].shape.size();
        for (int k = 0; k < ie[i].nbDims; k++) {
          const int64_t s = c.in[i].shape[k];
          ie[i].d[k] = s < 0 ? b.impl.make(false, s == kB ? B : T) : b.constant(s);
        }
      }
      for (DimsExprs& o : oe) o.nbDims = -1;
      if (build->getOutputShapes(ie.data(), nIn, nullptr, 0, oe.data(), nOut, b)) return err.push_back("getOutputShapes failed");
      for (int o = 0; o < nOut; o++) {
        const std::vector<int64_t>& spec = c.out[o].shape;
        bool ok = oe[o].nbDims == (int32_t)spec.size();
        for (int k = 0; ok && k < oe[o].nbDims; k++) {
          const ExprImpl& e = Expr::of(*oe[o].d[k]);
          ok = e.v == (spec[k] == kB ? B : spec[k] == kT ? T : spec[k]) && e.c == (spec[k] >= 0);
        }
        if (!ok) err.push_back("getOutputShapes: output " + c.out[o].name + " is not " + shapeText(spec) + " (-1: B, -2: T, dynamic)");
      }
    };
    int64_t Bmin = 1 << 30, Bmax = 0, Tmin = 1 << 30, Tmax = 0;
    for (auto& r : c.runs)
      Bmin = std::min(Bmin, r.first), Bmax = std::max(Bmax, r.first), Tmin = std::min(Tmin, r.second), Tmax = std::max(Tmax, r.second);
    for (auto& r : c.runs) shapesAt(r.first, r.second);

    // formats: the intended combination is accepted position by position; other types and formats are not
    std::vector<DynamicPluginTensorDesc> io(nIn + nOut);
    auto descOf = [&](const TensorSpec& t, DataType ty) {
      DynamicPluginTensorDesc d{};
      d.desc.type = ty;
      d.desc.format = TensorFormat::kLINEAR;
      d.desc.scale = -1.f;
      std::vector<int64_t> dyn;
      for (int64_t s : t.shape) dyn.push_back(s < 0 ? -1 : s);
      d.desc.dims = dimsOf(dyn);
      d.min = dimsOf(concrete(t.shape, Bmin, Tmin));
      d.max = dimsOf(concrete(t.shape, Bmax, Tmax));
      d.opt = d.max;
      return d;
    };
    for (int p = 0; p < nIn + nOut; p++) {
      const TensorSpec& t = p < nIn ? c.in[p] : c.out[p - nIn];
      const DataType want = p < nIn ? inT[p] : wantT[p - nIn];
      for (DataType ty : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT32}) {
        io[p] = descOf(t, ty);
        const bool ok = build->supportsFormatCombination(p, io.data(), nIn, nOut);
        bool firstAct = t.kind == Kind::Act && (ty == DataType::kFLOAT || ty == DataType::kHALF);
        for (int q = 0; q < p && firstAct; q++) firstAct = (q < nIn ? c.in[q].kind : c.out[q - nIn].kind) != Kind::Act;
        if (ok != (ty == want || firstAct))
          err.push_back("supportsFormatCombination(" + t.name + ", type " + std::to_string((int)ty) + ") = " + (ok ? "true" : "false"));
      }
      io[p] = descOf(t, want);
      io[p].desc.format = TensorFormat::kCHW32;
      if (build->supportsFormatCombination(p, io.data(), nIn, nOut))
        err.push_back("supportsFormatCombination accepts kCHW32 for " + t.name);
      io[p] = descOf(t, want);
    }
    if (build->configurePlugin(io.data(), nIn, io.data() + nIn, nOut)) err.push_back("configurePlugin failed");
    const size_t wsBytes = build->getWorkspaceSize(io.data(), nIn, io.data() + nIn, nOut);
    for (int o = 0; o < nOut; o++)
      if (build->getAliasedInput(o) != c.out[o].alias)
        err.push_back("getAliasedInput(" + c.out[o].name + ") = " + std::to_string(build->getAliasedInput(o)));

    // serialization: the fields of the build plugin and of its clone, copied as a plan would hold them
    auto* brt = static_cast<IPluginV3OneRuntime*>(bp->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    std::unique_ptr<IPluginV3> cl(bp->clone());
    auto* crt = cl ? static_cast<IPluginV3OneRuntime*>(cl->getCapabilityInterface(PluginCapabilityType::kRUNTIME)) : nullptr;
    if (!brt || !crt) return err.push_back("no runtime capability, or clone failed"), finish();
    struct Saved {
      std::string name;
      PluginFieldType type;
      std::vector<char> data;
      int32_t length;
    };
    auto save = [](const PluginFieldCollection* f) {
      std::vector<Saved> s;
      for (int i = 0; f && i < f->nbFields; i++) {
        const PluginField& x = f->fields[i];
        const size_t es = x.type == PluginFieldType::kFLOAT32 || x.type == PluginFieldType::kINT32   ? 4
                          : x.type == PluginFieldType::kFLOAT64 || x.type == PluginFieldType::kINT64 ? 8
                                                                                                     : 1;
        const char* p = static_cast<const char*>(x.data);
        s.push_back({x.name ? x.name : "", x.type, std::vector<char>(p, p + es * x.length), x.length});
      }
      return s;
    };
    auto same = [](const std::vector<Saved>& a, const std::vector<Saved>& b) {
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); i++)
        if (a[i].name != b[i].name || a[i].type != b[i].type || a[i].data != b[i].data) return false;
      return true;
    };
    const std::vector<Saved> plan = save(brt->getFieldsToSerialize());
    if (!same(plan, save(crt->getFieldsToSerialize()))) err.push_back("the clone serializes other fields");
    for (const Attr& a : c.attrs) {  // every attribute given is serialized with its value
      bool found = false;
      for (const Saved& s : plan)
        if (s.name == a.name) {
          found = true;
          double v = s.type == PluginFieldType::kINT32 ? *(const int32_t*)s.data.data() : *(const float*)s.data.data();
          if (std::fabs(v - a.v) > 1e-6 * std::fabs(a.v)) err.push_back("serialized " + a.name + " = " + std::to_string(v));
        }
      if (!found) err.push_back("attribute " + a.name + " is not serialized");
    }
    cl.reset();
    bp.reset();  // the builder is done with it
    std::vector<PluginField> pf;
    for (const Saved& s : plan) pf.emplace_back(s.name.c_str(), s.data.data(), s.type, s.length);
    PluginFieldCollection pfc{(int32_t)pf.size(), pf.data()};
    std::unique_ptr<IPluginV3> rp(creator->createPlugin(c.name.c_str(), &pfc, TensorRTPhase::kRUNTIME));
    if (!rp) return err.push_back("createPlugin (runtime phase) from the serialized fields returned null"), finish();
    auto* rrt = static_cast<IPluginV3OneRuntime*>(rp->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    if (!same(plan, save(rrt->getFieldsToSerialize()))) err.push_back("the re-created plugin serializes other fields");
    ResourceContext rc;
    std::unique_ptr<IPluginV3> xp(rrt->attachToContext(&rc));
    if (!xp) return err.push_back("attachToContext returned null"), finish();
    auto* rt = static_cast<IPluginV3OneRuntime*>(xp->getCapabilityInterface(PluginCapabilityType::kRUNTIME));

    if (noDevice) return finish();
    // runs
    cudaStream_t st;
    CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    for (size_t ri = 0; ri < c.runs.size(); ri++) {
      const int64_t B = c.runs[ri].first, T = c.runs[ri].second;
      const bool alias = ri == 1;
      std::vector<PluginTensorDesc> id(nIn), od(nOut);
      std::vector<std::vector<int64_t>> ishape(nIn), oshape(nOut);
      for (int i = 0; i < nIn; i++)
        ishape[i] = concrete(c.in[i].shape, B, T), id[i] = {dimsOf(ishape[i]), inT[i], TensorFormat::kLINEAR, -1.f};
      for (int o = 0; o < nOut; o++)
        oshape[o] = concrete(c.out[o].shape, B, T), od[o] = {dimsOf(oshape[o]), wantT[o], TensorFormat::kLINEAR, -1.f};
      if (rt->onShapeChange(id.data(), nIn, od.data(), nOut))
        err.push_back("onShapeChange failed at B=" + std::to_string(B) + " T=" + std::to_string(T));
      const std::string file = name + "_run" + std::to_string(ri) + ".bin";
      std::ofstream bin(dir + "/" + file, std::ios::binary);
      std::string tj;
      size_t off = 0;
      auto record = [&](const std::string& io, const TensorSpec& t, const std::vector<int64_t>& shape, const std::vector<char>& bytes) {
        bin.write(bytes.data(), (std::streamsize)bytes.size());
        if (!tj.empty()) tj += ", ";
        tj += "{\"io\": \"" + io + "\", \"name\": " + jsonStr(t.name) + ", \"dtype\": \"" + kindName(t.kind, half) +
              "\", \"shape\": " + shapeText(shape) + ", \"offset\": " + std::to_string(off) + "}";
        off += bytes.size();
      };
      std::vector<void*> dIn(nIn), dOut(nOut);
      for (int i = 0; i < nIn; i++) {
        const TensorSpec& t = c.in[i];
        const int64_t n = count(ishape[i]);
        const size_t es = kindSize(t.kind, half);
        std::vector<char> host(n * es);
        std::uniform_real_distribution<float> u(t.gen.lo, t.gen.hi);
        for (int64_t k = 0; k < n; k++) {
          float v = t.gen.lo == t.gen.hi ? t.gen.lo : u(rng);
          if (t.gen.neg) v = -v;
          if (es == 2) {
            const __half h = __float2half_rn(v);
            std::memcpy(host.data() + 2 * k, &h, 2);
          } else {
            std::memcpy(host.data() + 4 * k, &v, 4);
          }
        }
        CUDA(cudaMalloc(&dIn[i], std::max<size_t>(host.size(), 1)));
        CUDA(cudaMemcpy(dIn[i], host.data(), host.size(), cudaMemcpyHostToDevice));
        record("in", t, ishape[i], host);
      }
      for (int o = 0; o < nOut; o++) {
        const size_t bytes = count(oshape[o]) * kindSize(c.out[o].kind, half);
        if (alias && c.out[o].alias >= 0) {
          dOut[o] = dIn[c.out[o].alias];
        } else {
          CUDA(cudaMalloc(&dOut[o], std::max<size_t>(bytes, 1)));
          CUDA(cudaMemset(dOut[o], 0xff, bytes));  // NaN in float32 and float16
        }
      }
      void* ws = nullptr;
      if (wsBytes) {
        CUDA(cudaMalloc(&ws, wsBytes));
        CUDA(cudaMemset(ws, 0xff, wsBytes));
      }
      CUDA(cudaDeviceSynchronize());
      const int rcq = rt->enqueue(id.data(), od.data(), dIn.data(), dOut.data(), ws, st);
      if (rcq) err.push_back("enqueue returned " + std::to_string(rcq) + " at B=" + std::to_string(B) + " T=" + std::to_string(T));
      CUDA(cudaStreamSynchronize(st));
      CUDA(cudaGetLastError());
      for (int o = 0; o < nOut; o++) {
        std::vector<char> host(count(oshape[o]) * kindSize(c.out[o].kind, half));
        CUDA(cudaMemcpy(host.data(), dOut[o], host.size(), cudaMemcpyDeviceToHost));
        record("out", c.out[o], oshape[o], host);
      }
      for (int i = 0; i < nIn; i++) CUDA(cudaFree(dIn[i]));
      for (int o = 0; o < nOut; o++)
        if (!(alias && c.out[o].alias >= 0)) CUDA(cudaFree(dOut[o]));
      if (ws) CUDA(cudaFree(ws));
      if (!runsJson.empty()) runsJson += ", ";
      runsJson += "{\"B\": " + std::to_string(B) + ", \"T\": " + std::to_string(T) + ", \"aliased_states\": " + (alias ? "true" : "false") +
                  ", \"workspace_bytes\": " + std::to_string(wsBytes) + ", \"file\": " + jsonStr(file) + ", \"tensors\": [" + tj + "]}";
    }
    CUDA(cudaStreamDestroy(st));
    finish();
  }
};

}  // namespace

int main(int argc, char** argv) {
  Harness h;
  if (argc > 1 && !std::strcmp(argv[1], "--no-device")) h.noDevice = true, argv++, argc--;
  if (argc < 3) {
    std::fprintf(stderr, "usage: trt_harness [--no-device] LIB DIR [SEED]\n");
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::fprintf(stderr, "%s\n", dlerror());
    return 2;
  }
  using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
  auto get = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
  if (!get) {
    std::fprintf(stderr, "%s: no getCreators\n", argv[1]);
    return 2;
  }
  h.dir = argv[2];
  const uint64_t seed = argc > 3 ? std::stoull(argv[3]) : std::random_device{}();
  h.rng.seed(seed);
  int32_t n = 0;
  IPluginCreatorInterface* const* list = get(n);
  h.creators.assign(list, list + n);
  std::printf("TensorRT 10.3's calling sequence reproduced, not TensorRT: %d creators in %s, seed %llu\n", n, argv[1],
              (unsigned long long)seed);
  int dev = 0;
  cudaDeviceProp prop{};
  if (!h.noDevice) {
    CUDA(cudaGetDevice(&dev));
    CUDA(cudaGetDeviceProperties(&prop, dev));
  }
  for (const Case& c : cases())
    for (bool half : {false, true}) h.runCase(c, half);
  std::ofstream out(h.dir + "/cases.json");
  out << "{\"label\": \"TensorRT 10.3's calling sequence reproduced, not TensorRT\", \"gpu\": " << jsonStr(prop.name) << ", \"sm\": \""
      << prop.major << prop.minor << "\", \"seed\": " << seed << ", \"creators\": " << n << ",\n\"cases\": [\n"
      << h.json << "\n]}\n";
  std::printf("%d cases, %d with errors in the calling sequence%s\n", 2 * (int)cases().size(), h.withErrors,
              h.noDevice ? " (--no-device: no runs)" : "");
  return h.noDevice && h.withErrors ? 1 : 0;
}
