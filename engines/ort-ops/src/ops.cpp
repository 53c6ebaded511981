// The onnxruntime side of the fused operators: their declarations (OrtCustomOp), shape
// checks, the split of a batch over onnxruntime's intra-op threads, and RegisterCustomOps, the entry
// point RegisterCustomOpsLibrary_V2 calls. The arithmetic is in kernels.cpp and matmul_q4.cpp.
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels.h"
#include "ort_abi.h"

namespace {

const char* const kDomain = "ai.mamba_edge";  // engines/onnx/export.ts: OPS_DOMAIN
const OrtApi* gApi = nullptr;                 // the table for kCustomOpVersion
const OrtApi* gParallelApi = nullptr;         // the table with KernelContext_ParallelFor, if the runtime has it

OrtStatus* error(const std::string& msg) {
  return ort::fn<ort::CreateStatusFn>(gApi, ort::CreateStatus)(ORT_INVALID_ARGUMENT, msg.c_str());
}

std::string shapeText(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); i++) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

struct Tensor {
  float* data = nullptr;
  std::vector<int64_t> dims;
};

struct Op;
using Compute = OrtStatusPtr (*)(const struct Kernel&, OrtKernelContext*, std::vector<Tensor>&);

// An operator: onnxruntime's struct first, so onnxruntime's pointer to it is a pointer to this.
struct Op : OrtCustomOp {
  const char* name;
  const char* const* inputs;  // names, for error messages
  size_t nIn, nOut;
  const int* inputTypes;  // ONNX element types, or null: all float
  Compute compute;
};

struct Kernel {
  explicit Kernel(const Op* o) : op(o) {}
  const Op* op;
  float dtMin = 0.f, dtMax = 3.4e38f;
  // MatMulQ4: its weights regrouped on the first run, and the tensor they were made from (the graphs
  // give the weights as constant initializers, which keep their address and contents)
  mutable std::mutex q4Lock;
  mutable std::unique_ptr<me::Q4Packed> q4;
  mutable const void* q4From = nullptr;
};

OrtStatusPtr readInput(OrtKernelContext* ctx, size_t i, Tensor& t) {
  const OrtValue* v = nullptr;
  if (OrtStatusPtr s = ort::fn<ort::KernelContextGetInputFn>(gApi, ort::KernelContext_GetInput)(ctx, i, &v)) return s;
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatusPtr s = ort::fn<ort::GetTensorTypeAndShapeFn>(gApi, ort::GetTensorTypeAndShape)(v, &info)) return s;
  size_t rank = 0;
  OrtStatusPtr s = ort::fn<ort::GetDimensionsCountFn>(gApi, ort::GetDimensionsCount)(info, &rank);
  if (!s) {
    t.dims.assign(rank, 0);
    s = ort::fn<ort::GetDimensionsFn>(gApi, ort::GetDimensions)(info, t.dims.data(), rank);
  }
  ort::fn<ort::ReleaseTensorTypeAndShapeInfoFn>(gApi, ort::ReleaseTensorTypeAndShapeInfo)(info);
  if (s) return s;
  void* p = nullptr;
  if (OrtStatusPtr s2 = ort::fn<ort::GetTensorMutableDataFn>(gApi, ort::GetTensorMutableData)(const_cast<OrtValue*>(v), &p)) return s2;
  t.data = static_cast<float*>(p);
  return nullptr;
}

OrtStatusPtr makeOutput(OrtKernelContext* ctx, size_t i, const std::vector<int64_t>& dims, float** out) {
  OrtValue* v = nullptr;
  if (OrtStatusPtr s = ort::fn<ort::KernelContextGetOutputFn>(gApi, ort::KernelContext_GetOutput)(ctx, i, dims.data(), dims.size(), &v))
    return s;
  void* p = nullptr;
  if (OrtStatusPtr s = ort::fn<ort::GetTensorMutableDataFn>(gApi, ort::GetTensorMutableData)(v, &p)) return s;
  *out = static_cast<float*>(p);
  return nullptr;
}

// nullptr if input i has exactly the dims `want`, else an error naming the operator, input and shapes.
OrtStatusPtr expect(const Kernel& k, const std::vector<Tensor>& in, size_t i, const std::vector<int64_t>& want) {
  if (in[i].dims == want) return nullptr;
  return error(std::string(kDomain) + "." + k.op->name + ": input " + std::to_string(i) + " (" + k.op->inputs[i] + ") has shape " +
               shapeText(in[i].dims) + ", expected " + shapeText(want));
}

// Runs [0, n) of `work` in pieces of `piece`, one piece per task on onnxruntime's intra-op threads
// where there are several pieces and the runtime offers it, else here. work(begin, end).
template <typename Work>
OrtStatusPtr forPieces(OrtKernelContext* ctx, int64_t n, int64_t piece, Work&& work) {
  const int64_t tasks = (n + piece - 1) / piece;
  if (tasks <= 1 || !gParallelApi) {
    work(0, n);
    return nullptr;
  }
  struct Job {
    std::remove_reference_t<Work>* work;
    int64_t n, piece;
  } job{&work, n, piece};
  auto task = [](void* data, size_t i) {
    const Job& j = *static_cast<Job*>(data);
    const int64_t begin = static_cast<int64_t>(i) * j.piece;
    (*j.work)(begin, begin + j.piece < j.n ? begin + j.piece : j.n);
  };
  return ort::fn<ort::ParallelForFn>(gParallelApi, ort::KernelContext_ParallelFor)(ctx, task, static_cast<size_t>(tasks), 0, &job);
}

// A batch split by sequence.
template <typename Work>
OrtStatusPtr forRows(OrtKernelContext* ctx, int64_t B, Work&& work) {
  return forPieces(ctx, B, 1, work);
}

OrtStatusPtr rank(const Kernel& k, const std::vector<Tensor>& in, size_t i, size_t r) {
  if (in[i].dims.size() == r) return nullptr;
  return error(std::string(kDomain) + "." + k.op->name + ": input " + std::to_string(i) + " (" + k.op->inputs[i] + ") has shape " +
               shapeText(in[i].dims) + ", expected rank " + std::to_string(r));
}

#define ME_TRY(expr)                         \
  do {                                       \
    if (OrtStatusPtr s_ = (expr)) return s_; \
  } while (0)

// The selective operators' inputs for R rows (sequences or tokens) on a state of `stateRows` sequences:
// h (stateRows, N, E), dt, x and z (R, E), B and C (R, N), A (N, E), D (E).
OrtStatusPtr selectiveShapes(const Kernel& k, const std::vector<Tensor>& in, int64_t R, int64_t stateRows) {
  const int64_t N = in[0].dims[1], E = in[0].dims[2];
  ME_TRY(expect(k, in, 0, {stateRows, N, E}));
  for (size_t i : {1, 2, 5}) ME_TRY(expect(k, in, i, {R, E}));
  for (size_t i : {3, 4}) ME_TRY(expect(k, in, i, {R, N}));
  ME_TRY(expect(k, in, 6, {N, E}));
  return expect(k, in, 7, {E});
}

// The SSD operators' inputs for R rows (sequences or tokens) on a state of `stateRows` sequences:
// S (stateRows, H, P, N), dt (R, H), x (R, H·P), B and C (R, G·N), dt_bias, A, D (H). Sets the groups G.
OrtStatusPtr ssdShapes(const Kernel& k, const std::vector<Tensor>& in, int64_t R, int64_t stateRows, int64_t& G) {
  const int64_t H = in[0].dims[1], P = in[0].dims[2], N = in[0].dims[3];
  ME_TRY(rank(k, in, 3, 2));
  const int64_t GN = in[3].dims[1];
  G = GN / N;
  if (G < 1 || G * N != GN || H % G != 0)
    return error(std::string(kDomain) + "." + k.op->name + ": input 3 (B) has " + std::to_string(GN) +
                 " columns, expected a multiple of d_state " + std::to_string(N) + " by a number of groups dividing the " +
                 std::to_string(H) + " heads");
  ME_TRY(expect(k, in, 0, {stateRows, H, P, N}));
  ME_TRY(expect(k, in, 1, {R, H}));
  ME_TRY(expect(k, in, 2, {R, H * P}));
  ME_TRY(expect(k, in, 3, {R, GN}));
  ME_TRY(expect(k, in, 4, {R, GN}));
  for (size_t i : {5, 6, 7}) ME_TRY(expect(k, in, i, {H}));
  return nullptr;
}

// inputs: x (B, C), state (B, K-1, C), wT (K, C), bias (C); outputs: y (B, C), state (B, K-1, C)
OrtStatusPtr convStep(const Kernel& k, OrtKernelContext* ctx, std::vector<Tensor>& in) {
  ME_TRY(rank(k, in, 2, 2));
  const int64_t K = in[2].dims[0], C = in[2].dims[1];
  ME_TRY(rank(k, in, 0, 2));
  const int64_t B = in[0].dims[0];
  if (K < 2) return error(std::string(kDomain) + ".ConvStep: a kernel of width " + std::to_string(K) + " has no state");
  ME_TRY(expect(k, in, 0, {B, C}));
  ME_TRY(expect(k, in, 1, {B, K - 1, C}));
  ME_TRY(expect(k, in, 3, {C}));
  float *y, *stateOut;
  ME_TRY(makeOutput(ctx, 0, {B, C}, &y));
  ME_TRY(makeOutput(ctx, 1, {B, K - 1, C}, &stateOut));
  return forRows(ctx, B,
                 [&](int64_t r0, int64_t r1) { me::convStep(r0, r1, K, C, in[0].data, in[1].data, in[2].data, in[3].data, y, stateOut); });
}

// inputs: h (B, N, E), dtRaw (B, E), x (B, E), B (B, N), C (B, N), z (B, E), A (N, E), D (E); outputs: y (B, E), h (B, N, E)
OrtStatusPtr selectiveStep(const Kernel& k, OrtKernelContext* ctx, std::vector<Tensor>& in) {
  ME_TRY(rank(k, in, 0, 3));
  const int64_t B = in[0].dims[0], N = in[0].dims[1], E = in[0].dims[2];
  ME_TRY(selectiveShapes(k, in, B, B));
  float *y, *hOut;
  ME_TRY(makeOutput(ctx, 0, {B, E}, &y));
  ME_TRY(makeOutput(ctx, 1, {B, N, E}, &hOut));
  return forRows(ctx, B, [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(2 * E));
    me::selectiveStep(r0, r1, N, E, in[0].data, in[1].data, in[2].data, in[3].data, in[4].data, in[5].data, in[6].data, in[7].data, y, hOut,
                      scratch.data());
  });
}

// inputs: S (B, H, P, N), dtRaw (B, H), x (B, H·P), B (B, G·N), C (B, G·N), dtBias (H), A (H), D (H);
// outputs: y (B, H·P), S (B, H, P, N)
OrtStatusPtr ssdStep(const Kernel& k, OrtKernelContext* ctx, std::vector<Tensor>& in) {
  ME_TRY(rank(k, in, 0, 4));
  const int64_t B = in[0].dims[0], H = in[0].dims[1], P = in[0].dims[2], N = in[0].dims[3];
  int64_t G;
  ME_TRY(ssdShapes(k, in, B, B, G));
  float *y, *sOut;
  ME_TRY(makeOutput(ctx, 0, {B, H * P}, &y));
  ME_TRY(makeOutput(ctx, 1, {B, H, P, N}, &sOut));
  return forRows(ctx, B, [&](int64_t r0, int64_t r1) {
    me::ssdStep(r0, r1, H, P, N, G, in[0].data, in[1].data, in[2].data, in[3].data, in[4].data, in[5].data, in[6].data, in[7].data, k.dtMin,
                k.dtMax, y, sOut);
  });
}

// inputs: h (1, N, E), dtRaw (T, E), x (T, E), B (T, N), C (T, N), z (T, E), A (N, E), D (E);
// outputs: y (T, E), h after the last token (1, N, E). Threads split the channels.
OrtStatusPtr selectiveScan(const Kernel& k, OrtKernelContext* ctx, std::vector<Tensor>& in) {
  ME_TRY(rank(k, in, 0, 3));
  ME_TRY(rank(k, in, 1, 2));
  const int64_t N = in[0].dims[1], E = in[0].dims[2], T = in[1].dims[0];
  ME_TRY(selectiveShapes(k, in, T, 1));
  float *y, *h;
  ME_TRY(makeOutput(ctx, 0, {T, E}, &y));
  ME_TRY(makeOutput(ctx, 1, {1, N, E}, &h));
  return forPieces(ctx, E, 64, [&](int64_t e0, int64_t e1) {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(2 * (e1 - e0)));
    me::selectiveScan(T, N, E, e0, e1, in[0].data, in[1].data, in[2].data, in[3].data, in[4].data, in[5].data, in[6].data, in[7].data, y, h,
                      scratch.data());
  });
}

// inputs: S (1, H, P, N), dtRaw (T, H), x (T, H·P), B (T, G·N), C (T, G·N), dtBias (H), A (H), D (H);
// outputs: y (T, H·P), S after the last token (1, H, P, N). Threads split the heads.
OrtStatusPtr ssdScan(const Kernel& k, OrtKernelContext* ctx, std::vector<Tensor>& in) {
  ME_TRY(rank(k, in, 0, 4));
  ME_TRY(rank(k, in, 1, 2));
  const int64_t H = in[0].dims[1], P = in[0].dims[2], N = in[0].dims[3], T = in[1].dims[0];
  int64_t G;
  ME_TRY(ssdShapes(k, in, T, 1, G));
  float *y, *S;
  ME_TRY(makeOutput(ctx, 0, {T, H * P}, &y));
  ME_TRY(makeOutput(ctx, 1, {1, H, P, N}, &S));
  return forPieces(ctx, H, 1, [&](int64_t h0, int64_t h1) {
    me::ssdScan(T, H, h0, h1, P, N, G, in[0].data, in[1].data, in[2].data, in[3].data, in[4].data, in[5].data, in[6].data, in[7].data,
                k.dtMin, k.dtMax, y, S);
  });
}

// inputs: x (M, K), w (N, blocks, half) bytes and scales (N·blocks) as MatMulNBits takes them (constant
// initializers); output y (M, N) = x·Wᵀ. W is regrouped once, on the first run (me::Q4Packed).
OrtStatusPtr matMulQ4(const Kernel& k, OrtKernelContext* ctx, std::vector<Tensor>& in) {
  ME_TRY(rank(k, in, 0, 2));
  ME_TRY(rank(k, in, 1, 3));
  const int64_t M = in[0].dims[0], K = in[0].dims[1], N = in[1].dims[0], blocks = in[1].dims[1], half = in[1].dims[2];
  if (half < 1 || blocks * 2 * half < K || (blocks - 1) * 2 * half >= K)
    return error(std::string(kDomain) + "." + k.op->name + ": input 1 (w) has shape " + shapeText(in[1].dims) + ", which does not hold " +
                 std::to_string(K) + " inputs (the width of x) in blocks");
  ME_TRY(expect(k, in, 2, {N * blocks}));
  const me::Q4Packed* p;
  {
    std::lock_guard<std::mutex> lock(k.q4Lock);
    if (!k.q4 || k.q4From != in[1].data || k.q4->n != N || k.q4->blocks != blocks || k.q4->half != half) {
      auto fresh = std::make_unique<me::Q4Packed>();
      me::q4Pack(N, blocks, half, reinterpret_cast<const uint8_t*>(in[1].data), in[2].data, *fresh);
      k.q4 = std::move(fresh);
      k.q4From = in[1].data;
    }
    p = k.q4.get();
  }
  float* y;
  ME_TRY(makeOutput(ctx, 0, {M, N}, &y));
  const float* x = in[0].data;
  const int64_t kp = blocks * 2 * half;
  thread_local std::vector<float> padded;  // x with zeros past K, where the last block is not full
  if (kp != K) {
    padded.assign(static_cast<size_t>(M * kp), 0.f);
    for (int64_t m = 0; m < M; m++) std::memcpy(padded.data() + m * kp, x + m * K, sizeof(float) * static_cast<size_t>(K));
    x = padded.data();  // (inside the lambda below `padded` would be the running thread's own)
  }
  return forPieces(ctx, p->groups, 8, [&](int64_t g0, int64_t g1) { me::q4MatMul(*p, M, g0, g1, x, y); });
}

const char* const kConvInputs[] = {"x", "state", "wT", "bias"};
const char* const kSelectiveInputs[] = {"h", "dt", "x", "B", "C", "z", "A", "D"};
const char* const kSsdInputs[] = {"S", "dt", "x", "B", "C", "dt_bias", "A", "D"};
const char* const kMatMulQ4Inputs[] = {"x", "w", "scales"};
const int kMatMulQ4Types[] = {ORT_FLOAT, ORT_UINT8, ORT_FLOAT};

const Op& self(const OrtCustomOp* op) { return *static_cast<const Op*>(op); }

Op makeOp(const char* name, const char* const* inputs, size_t nIn, size_t nOut, Compute compute, const int* inputTypes = nullptr) {
  Op op{};
  op.inputTypes = inputTypes;
  op.version = kCustomOpVersion;
  op.name = name;
  op.inputs = inputs;
  op.nIn = nIn;
  op.nOut = nOut;
  op.compute = compute;
  op.CreateKernel = nullptr;  // CreateKernelV2 is used
  op.GetName = [](const OrtCustomOp* o) { return self(o).name; };
  op.GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return nullptr; };  // the CPU
  op.GetInputType = [](const OrtCustomOp* o, size_t i) { return self(o).inputTypes ? self(o).inputTypes[i] : static_cast<int>(ORT_FLOAT); };
  op.GetInputTypeCount = [](const OrtCustomOp* o) { return self(o).nIn; };
  op.GetOutputType = [](const OrtCustomOp*, size_t) { return static_cast<int>(ORT_FLOAT); };
  op.GetOutputTypeCount = [](const OrtCustomOp* o) { return self(o).nOut; };
  op.KernelCompute = nullptr;  // KernelComputeV2 is used
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return static_cast<int>(ORT_IO_REQUIRED); };
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return static_cast<int>(ORT_IO_REQUIRED); };
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return static_cast<int>(ORT_MEM_DEFAULT); };
  op.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.CreateKernelV2 = [](const OrtCustomOp* o, const OrtApi*, const OrtKernelInfo* info, void** out) -> OrtStatusPtr {
    auto* k = new (std::nothrow) Kernel(&self(o));
    if (!k) return error(std::string(kDomain) + "." + self(o).name + ": out of memory");
    if (self(o).compute == ssdStep || self(o).compute == ssdScan) {
      // the dt clip; absent attributes keep the defaults (no clip)
      auto get = ort::fn<ort::KernelInfoGetAttributeFloatFn>(gApi, ort::KernelInfoGetAttribute_float);
      auto release = ort::fn<ort::ReleaseStatusFn>(gApi, ort::ReleaseStatus);
      float v;
      if (OrtStatusPtr s = get(info, "dt_min", &v))
        release(s);
      else
        k->dtMin = v;
      if (OrtStatusPtr s = get(info, "dt_max", &v))
        release(s);
      else
        k->dtMax = v;
    }
    *out = k;
    return nullptr;
  };
  op.KernelComputeV2 = [](void* kernel, OrtKernelContext* ctx) -> OrtStatusPtr {
    const Kernel& k = *static_cast<Kernel*>(kernel);
    try {  // nothing may unwind into onnxruntime
      std::vector<Tensor> in(k.op->nIn);
      for (size_t i = 0; i < in.size(); i++) ME_TRY(readInput(ctx, i, in[i]));
      return k.op->compute(k, ctx, in);
    } catch (const std::exception& e) {
      return error(std::string(kDomain) + "." + k.op->name + ": " + e.what());
    }
  };
  return op;
}

}  // namespace

// Called by onnxruntime's RegisterCustomOpsLibrary_V2 with the session options to extend.
extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
  static std::once_flag once;
  static OrtCustomOpDomain* domain = nullptr;  // shared by every session; lives as long as the process
  static OrtStatus* failed = nullptr;
  static Op ops[6];
  gApi = base->GetApi(kCustomOpVersion);
  if (!gApi) {  // onnxruntime older than 1.16: report through the oldest table
    const OrtApi* v1 = base->GetApi(1);
    return ort::fn<ort::CreateStatusFn>(v1, ort::CreateStatus)(ORT_FAIL, "ai.mamba_edge operators need onnxruntime 1.16 or later");
  }
  std::call_once(once, [&] {
    gParallelApi = base->GetApi(kParallelForApiVersion);
    ops[0] = makeOp("ConvStep", kConvInputs, 4, 2, convStep);
    ops[1] = makeOp("SelectiveStep", kSelectiveInputs, 8, 2, selectiveStep);
    ops[2] = makeOp("SsdStep", kSsdInputs, 8, 2, ssdStep);
    ops[3] = makeOp("SelectiveScan", kSelectiveInputs, 8, 2, selectiveScan);
    ops[4] = makeOp("SsdScan", kSsdInputs, 8, 2, ssdScan);
    ops[5] = makeOp("MatMulQ4", kMatMulQ4Inputs, 3, 1, matMulQ4, kMatMulQ4Types);
    if ((failed = ort::fn<ort::CreateCustomOpDomainFn>(gApi, ort::CreateCustomOpDomain)(kDomain, &domain))) return;
    for (const Op& op : ops)
      if ((failed = ort::fn<ort::CustomOpDomainAddFn>(gApi, ort::CustomOpDomain_Add)(domain, &op))) return;
  });
  if (failed) return error("ai.mamba_edge operators could not be registered");
  return ort::fn<ort::AddCustomOpDomainFn>(gApi, ort::AddCustomOpDomain)(options, domain);
}
