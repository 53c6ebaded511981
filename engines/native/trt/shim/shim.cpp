// libmamba_edge_trt.so: the C shim of backend trt (mamba_edge_trt.h). TensorRT is reached only
// through the entry points dlsym finds in libnvinfer.so.10 / libnvonnxparser.so.10 and the
// interfaces they return, whose methods are inline calls through TensorRT's own virtual tables: the
// shim has no link-time dependency on TensorRT (it links with --no-undefined to prove it).
#include "mamba_edge_trt.h"

#include <NvInfer.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "onnx_parser.h"
#include "slots.h"

using namespace nvinfer1;

namespace {

thread_local std::string lastError;

int fail(const std::string& msg) {
  lastError = msg;
  return -1;
}

std::string oneLine(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

// ---- TensorRT's libraries, opened once ----------------------------------------------------------

using CreateFn = void* (*)(void*, int32_t);
using ParserFn = void* (*)(void*, void*, int);
using VersionFn = int32_t (*)();

struct Libs {
  std::mutex mu;
  bool tried = false, parserTried = false;
  std::string error, parserError;
  CreateFn createRuntime = nullptr, createBuilder = nullptr;
  VersionFn version = nullptr;
  ParserFn createParser = nullptr;
};
Libs libs;

// The oldest TensorRT whose interfaces match the 10.3 headers the shim is compiled against.
constexpr int kMinVersion = 100300;

bool loadNvinfer() {
  std::lock_guard<std::mutex> lock(libs.mu);
  if (!libs.tried) {
    libs.tried = true;
    void* h = dlopen("libnvinfer.so.10", RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
      const char* e = dlerror();
      libs.error = oneLine(std::string("TensorRT is not installed: cannot load libnvinfer.so.10 (") + (e ? e : "not found") + ")");
    } else {
      libs.createRuntime = reinterpret_cast<CreateFn>(dlsym(h, "createInferRuntime_INTERNAL"));
      libs.createBuilder = reinterpret_cast<CreateFn>(dlsym(h, "createInferBuilder_INTERNAL"));
      libs.version = reinterpret_cast<VersionFn>(dlsym(h, "getInferLibVersion"));
      if (!libs.createRuntime || !libs.createBuilder || !libs.version) {
        libs.error = "libnvinfer.so.10 lacks createInferRuntime_INTERNAL / createInferBuilder_INTERNAL / getInferLibVersion";
      } else if (int v = libs.version(); v < kMinVersion || v >= 110000) {
        libs.error = "TensorRT " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100) +
                     " found; this build needs TensorRT 10.3 or a later 10.x";
      }
    }
  }
  if (!libs.error.empty()) return fail(libs.error), false;
  return true;
}

bool loadParser() {
  if (!loadNvinfer()) return false;
  std::lock_guard<std::mutex> lock(libs.mu);
  if (!libs.parserTried) {
    libs.parserTried = true;
    void* h = dlopen("libnvonnxparser.so.10", RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
      const char* e = dlerror();
      libs.parserError = oneLine(std::string("TensorRT's ONNX parser is not installed: cannot load libnvonnxparser.so.10 (") +
                                 (e ? e : "not found") + ")");
    } else if (!(libs.createParser = reinterpret_cast<ParserFn>(dlsym(h, "createNvOnnxParser_INTERNAL")))) {
      libs.parserError = "libnvonnxparser.so.10 lacks createNvOnnxParser_INTERNAL";
    }
  }
  if (!libs.parserError.empty()) return fail(libs.parserError), false;
  return true;
}

// TensorRT's messages: errors are kept for the caller's one line; warnings go to stderr while
// building (the user waits on it), and everything with MAMBA_EDGE_TRT_VERBOSE=1.
class Logger : public ILogger {
 public:
  void log(Severity s, AsciiChar const* msg) noexcept override {
    std::lock_guard<std::mutex> lock(mu_);
    static const bool verbose = std::getenv("MAMBA_EDGE_TRT_VERBOSE") != nullptr;
    if (s <= Severity::kERROR) last_ = oneLine(msg);
    if (verbose || (echo_ && s <= Severity::kWARNING)) std::fprintf(stderr, "tensorrt: %s\n", msg);
  }
  std::string take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string s;
    s.swap(last_);
    return s;
  }
  void echo(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    echo_ = on;
  }

 private:
  std::mutex mu_;
  std::string last_;
  bool echo_ = false;
};
Logger logger;

std::string trtError(const std::string& what) {
  std::string e = logger.take();
  return e.empty() ? what : what + ": " + e;
}

template <typename T>
struct Deleter {
  void operator()(T* p) const { delete p; }
};
template <typename T>
using Own = std::unique_ptr<T, Deleter<T>>;

bool cudaOk(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  fail(std::string(what) + ": " + cudaGetErrorString(e));
  return false;
}

std::string versionString(int v) { return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100); }

bool readFile(const char* path, std::vector<char>& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return true;
}

bool writeFile(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return fail("cannot write " + tmp), false;
    f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!f) return fail("cannot write " + tmp), false;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return fail("cannot rename " + tmp + " to " + path), false;
  return true;
}

// The registry is one per process: a library registered twice would clash with its own creators.
bool loadPlugins(IPluginRegistry& registry, const char* plugins) {
  static std::mutex mu;
  static std::set<std::string> done;
  if (!plugins || !*plugins) return true;
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(plugins)) return true;
  if (!registry.loadLibrary(plugins)) return fail(trtError(std::string("cannot load the plugin library ") + plugins)), false;
  done.insert(plugins);
  return true;
}

int64_t volume(const Dims& d) {
  int64_t n = 1;
  for (int i = 0; i < d.nbDims; i++) n *= d.d[i];
  return n;
}

size_t elementSize(DataType t) {
  switch (t) {
    case DataType::kINT64:
      return 8;
    case DataType::kFLOAT:
    case DataType::kINT32:
      return 4;
    case DataType::kHALF:
    case DataType::kBF16:
      return 2;
    default:
      return 1;
  }
}

const char* typeName(DataType t) {
  switch (t) {
    case DataType::kFLOAT:
      return "float32";
    case DataType::kHALF:
      return "float16";
    case DataType::kBF16:
      return "bfloat16";
    case DataType::kINT8:
      return "int8";
    case DataType::kINT32:
      return "int32";
    case DataType::kINT64:
      return "int64";
    case DataType::kBOOL:
      return "bool";
    case DataType::kUINT8:
      return "uint8";
    default:
      return "other";
  }
}

std::string dimsString(const Dims& d) {
  std::string s = "[";
  for (int i = 0; i < d.nbDims; i++) s += (i ? "," : "") + std::to_string(d.d[i]);
  return s + "]";
}

// ---- building -------------------------------------------------------------------------------------

// Fills one profile's three shapes of input `name` (dims as parsed, -1 where dynamic).
bool profileDims(const char* name, Dims d, bool integer, bool prefill, int lo, int hi, Dims& mn, Dims& opt, Dims& mx) {
  mn = opt = mx = d;
  int last = -1;
  for (int i = 0; i < d.nbDims; i++)
    if (d.d[i] < 0) last = i;
  for (int i = 0; i < d.nbDims; i++) {
    if (d.d[i] >= 0) continue;
    if (!prefill) {
      if (i != 0)
        return fail(std::string("input ") + name + " " + dimsString(d) + ": a step graph may be dynamic only in dimension 0 (the batch)"),
               false;
      mn.d[i] = opt.d[i] = mx.d[i] = hi;
    } else if (integer && i == last) {
      mn.d[i] = lo;
      opt.d[i] = mx.d[i] = hi;
    } else {
      mn.d[i] = opt.d[i] = mx.d[i] = 1;  // the batch of a prefill
    }
  }
  return true;
}

bool isInteger(DataType t) { return t == DataType::kINT32 || t == DataType::kINT64; }

}  // namespace

extern "C" const char* me_trt_last_error(void) { return lastError.c_str(); }

extern "C" int me_trt_version(void) {
  if (!loadNvinfer()) return 0;
  return libs.version();
}

extern "C" int me_trt_gpu(char* name, int cap, int* sm) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    return fail("no CUDA GPU is visible on this machine");
  }
  cudaDeviceProp p;
  if (!cudaOk(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties")) return -1;
  if (name && cap > 0) std::snprintf(name, static_cast<size_t>(cap), "%s", p.name);
  if (sm) *sm = p.major * 10 + p.minor;
  return 0;
}

static int buildImpl(const char* onnx, const char* plugins, const char* plan_out, const char* timing_cache, int prefill, const int* sizes,
                     int n_sizes, int workspace_mb) {
  if (!onnx || !plan_out || !sizes || n_sizes < 1) return fail("me_trt_build: missing argument");
  for (int i = 0; i < n_sizes; i++)
    if (sizes[i] < 1 || (i && sizes[i] <= sizes[i - 1])) return fail("me_trt_build: sizes must be positive and increasing");
  if (!loadParser()) return -1;
  logger.take();
  struct Echo {
    Echo() { logger.echo(true); }
    ~Echo() { logger.echo(false); }
  } echo;

  Own<IBuilder> builder(static_cast<IBuilder*>(libs.createBuilder(&logger, NV_TENSORRT_VERSION)));
  if (!builder) return fail(trtError("cannot create TensorRT's builder"));
  if (!loadPlugins(builder->getPluginRegistry(), plugins)) return -1;
  // strongly typed: the graph's own types (fp16, Q/DQ int8, block-quantized int4) are the precision
  const auto flags = 1U << static_cast<uint32_t>(NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
  Own<INetworkDefinition> network(builder->createNetworkV2(flags));
  if (!network) return fail(trtError("cannot create a network"));
  Own<me_onnx::Parser> parser(static_cast<me_onnx::Parser*>(libs.createParser(network.get(), &logger, me_onnx::kParserVersion)));
  if (!parser) return fail(trtError("cannot create the ONNX parser"));
  if (!parser->parseFromFile(onnx, static_cast<int>(ILogger::Severity::kWARNING))) {
    std::string msg = std::string(onnx) + ": TensorRT's ONNX parser failed";
    if (parser->getNbErrors() > 0) {
      const me_onnx::ParserError* e = parser->getError(0);
      msg += std::string(" at node ") + std::to_string(e->node()) + ": " + oneLine(e->desc());
      if (parser->getNbErrors() > 1) msg += " (+" + std::to_string(parser->getNbErrors() - 1) + " more)";
    } else {
      msg = trtError(msg);
    }
    return fail(msg);
  }

  Own<IBuilderConfig> config(builder->createBuilderConfig());
  if (!config) return fail(trtError("cannot create a builder config"));
  if (workspace_mb > 0) config->setMemoryPoolLimit(MemoryPoolType::kWORKSPACE, static_cast<size_t>(workspace_mb) << 20);
  for (int p = 0; p < n_sizes; p++) {
    IOptimizationProfile* profile = builder->createOptimizationProfile();
    const int lo = p == 0 ? 1 : sizes[p - 1] + 1;
    for (int i = 0; i < network->getNbInputs(); i++) {
      ITensor* t = network->getInput(i);
      Dims mn, opt, mx;
      if (!profileDims(t->getName(), t->getDimensions(), isInteger(t->getType()), prefill != 0, lo, sizes[p], mn, opt, mx)) return -1;
      if (!profile->setDimensions(t->getName(), OptProfileSelector::kMIN, mn) ||
          !profile->setDimensions(t->getName(), OptProfileSelector::kOPT, opt) ||
          !profile->setDimensions(t->getName(), OptProfileSelector::kMAX, mx))
        return fail(trtError(std::string("profile ") + std::to_string(p) + " of input " + t->getName()));
    }
    if (config->addOptimizationProfile(profile) < 0) return fail(trtError("optimization profile " + std::to_string(p) + " is invalid"));
  }

  std::vector<char> cacheBlob;
  const bool haveCache = timing_cache && *timing_cache && readFile(timing_cache, cacheBlob);
  Own<ITimingCache> cache(config->createTimingCache(haveCache ? cacheBlob.data() : nullptr, haveCache ? cacheBlob.size() : 0));
  if (!cache || !config->setTimingCache(*cache, false)) return fail(trtError("cannot use the timing cache"));

  Own<IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
  if (!plan || plan->size() == 0) return fail(trtError(std::string(onnx) + ": TensorRT could not build a plan"));
  if (!writeFile(plan_out, plan->data(), plan->size())) return -1;
  if (timing_cache && *timing_cache) {
    Own<IHostMemory> blob(config->getTimingCache()->serialize());
    if (blob && !writeFile(timing_cache, blob->data(), blob->size())) return -1;
  }
  return 0;
}

// ---- running --------------------------------------------------------------------------------------

namespace {

struct Tensor {
  std::string name;
  bool input;
  DataType type;
  Dims dims;  // as built, -1 where dynamic
};

struct StatePair {
  std::string in, out;
  int64_t floats;  // per sequence
  int64_t offset;  // in a slot
};

// One plan and the buffers of its I/O at one shape: a bucket of the step plan, or the prefill plan.
struct Bucket {
  IExecutionContext* ctx = nullptr;
  int profile = 0;
  int batch = 0;                     // step: rows; prefill: 1
  int minTokens = 1, maxTokens = 1;  // prefill: the profile's range of chunk lengths
  int rows = 0;                      // rows of the current run: batch, or fewer for a ranged bucket
  int minBatch = 0;                  // a ranged bucket (a profile over a range of batches, as trtexec builds) runs
  bool ranged = false;               // any batch in [minBatch, batch] at its exact shape, uncaptured
  std::map<std::string, void*> device;
  std::map<std::string, size_t> bytes;
  MeTrtRows* inRows = nullptr;  // device tables of the gather / scatter
  MeTrtRows* outRows = nullptr;
  void* hostTokens = nullptr;   // pinned
  int32_t* hostIds = nullptr;   // pinned
  float* hostLogits = nullptr;  // pinned
  int32_t* deviceIds = nullptr;
  cudaGraphExec_t graph = nullptr;
  bool warmed = false;
};

struct Plan {
  Own<ICudaEngine> engine;
  std::vector<Tensor> io;
  std::string tokens, logits, lastLogits;  // non-state I/O names
  bool allLogits = false;                  // `logits` has every position (else only the last_logits of each sequence)
  DataType tokenType = DataType::kINT32;
  std::vector<Own<IExecutionContext>> contexts;
};

struct Handle {
  Own<IRuntime> runtime;
  Plan step, prefill;
  bool hasPrefill = false;
  std::vector<StatePair> states;
  int64_t slotFloats = 0, maxRowFloats = 0;
  int slots = 0;
  float* slotMem = nullptr;  // (slots + 1) × slotFloats: the last slot takes padding rows
  void* scratch = nullptr;
  int vocab = 0;
  std::vector<Bucket> buckets;         // step, by batch
  std::vector<Bucket> prefillBuckets;  // by profile, sharing the buffers of the largest
  cudaStream_t stream = nullptr;
  bool useGraphs = true;
  std::string describe;
  std::vector<void*> deviceAllocs, hostAllocs;
};

const Tensor* findTensor(const Plan& p, const std::string& name) {
  for (const Tensor& t : p.io)
    if (t.name == name) return &t;
  return nullptr;
}

bool deviceAlloc(Handle& h, void** p, size_t bytes) {
  if (!cudaOk(cudaMalloc(p, std::max<size_t>(bytes, 16)), "cudaMalloc")) return false;
  h.deviceAllocs.push_back(*p);
  return true;
}

bool hostAlloc(Handle& h, void** p, size_t bytes) {
  if (!cudaOk(cudaMallocHost(p, std::max<size_t>(bytes, 16)), "cudaMallocHost")) return false;
  h.hostAllocs.push_back(*p);
  return true;
}

bool openPlan(Handle& h, Plan& p, const char* path) {
  std::vector<char> blob;
  if (!readFile(path, blob)) return fail(std::string(path) + ": cannot read the plan"), false;
  p.engine.reset(h.runtime->deserializeCudaEngine(blob.data(), blob.size()));
  if (!p.engine) return fail(trtError(std::string(path) + ": TensorRT cannot deserialize this plan")), false;
  for (int i = 0; i < p.engine->getNbIOTensors(); i++) {
    const char* n = p.engine->getIOTensorName(i);
    p.io.push_back({n, p.engine->getTensorIOMode(n) == TensorIOMode::kINPUT, p.engine->getTensorDataType(n), p.engine->getTensorShape(n)});
  }
  return true;
}

// The plan's non-state tensors: one integer input (the tokens) and the logits output(s).
bool classify(Handle& h, Plan& p, const char* path, bool prefill) {
  std::vector<std::string> others;
  for (const Tensor& t : p.io) {
    bool state = false;
    for (const StatePair& s : h.states) state = state || t.name == s.in || t.name == s.out;
    if (state) {
      if (t.type != DataType::kFLOAT)
        return fail(std::string(path) + ": state tensor " + t.name + " is " + typeName(t.type) + ", expected float32"), false;
      continue;
    }
    if (t.input) {
      if (!p.tokens.empty() || !isInteger(t.type))
        return fail(std::string(path) + ": input " + t.name + " (" + typeName(t.type) +
                    ") is neither a listed state nor the one integer token input"),
               false;
      p.tokens = t.name;
      p.tokenType = t.type;
    } else if (t.name == "last_logits") {
      if (t.type != DataType::kFLOAT)
        return fail(std::string(path) + ": output " + t.name + " is " + typeName(t.type) + ", expected float32"), false;
      p.lastLogits = t.name;
    } else if (t.name == "logits" || p.logits.empty()) {
      if (t.type != DataType::kFLOAT)
        return fail(std::string(path) + ": output " + t.name + " is " + typeName(t.type) + ", expected float32"), false;
      p.logits = t.name;
    }
  }
  if (p.tokens.empty()) return fail(std::string(path) + ": no integer token input"), false;
  p.allLogits = !p.logits.empty();
  if (p.logits.empty()) p.logits = p.lastLogits;
  if (p.logits.empty()) return fail(std::string(path) + ": no logits or last_logits output"), false;
  const Tensor* lg = findTensor(p, p.logits);
  const int v = static_cast<int>(lg->dims.d[lg->dims.nbDims - 1]);
  if (v <= 0) return fail(std::string(path) + ": logits " + dimsString(lg->dims) + " has no static vocabulary"), false;
  if (h.vocab && v != h.vocab)
    return fail(std::string(path) + ": vocabulary " + std::to_string(v) + ", the step plan's is " + std::to_string(h.vocab)), false;
  h.vocab = v;
  for (StatePair& s : h.states) {
    const Tensor* in = findTensor(p, s.in);
    const Tensor* out = findTensor(p, s.out);
    if (!in || !in->input || !out || out->input)
      return fail(std::string(path) + ": state pair " + s.in + " → " + s.out + " is not an input and an output of the plan"), false;
    Dims row = in->dims;
    int64_t floats = 1;
    for (int i = 1; i < row.nbDims; i++) floats *= row.d[i];
    if (floats <= 0 || row.nbDims < 2)
      return fail(std::string(path) + ": state " + s.in + " " + dimsString(row) + " must be (batch, static dims…)"), false;
    if (s.floats && s.floats != floats)
      return fail(std::string(path) + ": state " + s.in + " holds " + std::to_string(floats) + " floats per sequence, the step plan's " +
                  std::to_string(s.floats)),
             false;
    s.floats = floats;
  }
  (void)prefill;
  return true;
}

// Concrete shape of an input for `rows` sequences and `tokens` tokens each (prefill: batch 1).
Dims inputShape(const Tensor& t, bool isTokens, bool prefill, int rows, int tokens) {
  Dims d = t.dims;
  int last = -1;
  for (int i = 0; i < d.nbDims; i++)
    if (d.d[i] < 0) last = i;
  for (int i = 0; i < d.nbDims; i++) {
    if (d.d[i] >= 0) continue;
    if (prefill)
      d.d[i] = isTokens && i == last ? tokens : 1;
    else
      d.d[i] = i == 0 ? rows : 1;
  }
  return d;
}

bool setShapes(Plan& p, Bucket& b, bool prefill, int tokens) {
  for (const Tensor& t : p.io) {
    if (!t.input) continue;
    if (!b.ctx->setInputShape(t.name.c_str(), inputShape(t, t.name == p.tokens, prefill, b.rows, tokens)))
      return fail(trtError("cannot set the shape of " + t.name)), false;
  }
  return true;
}

// Buffers for every I/O tensor of bucket b at its largest shape, and the gather / scatter tables.
bool makeBucket(Handle& h, Plan& p, Bucket& b, bool prefill) {
  b.rows = b.batch;
  b.ctx->setDeviceMemoryV2(h.scratch, p.engine->getDeviceMemorySizeV2());
  if (!b.ctx->setOptimizationProfileAsync(b.profile, h.stream))
    return fail(trtError("cannot select optimization profile " + std::to_string(b.profile))), false;
  if (!setShapes(p, b, prefill, b.maxTokens)) return false;
  for (const Tensor& t : p.io) {
    const Dims d = b.ctx->getTensorShape(t.name.c_str());
    const int64_t n = volume(d);
    if (n < 0) return fail("tensor " + t.name + " has no shape at batch " + std::to_string(b.batch)), false;
    const size_t bytes = static_cast<size_t>(n) * elementSize(t.type);
    void* ptr = nullptr;
    if (!deviceAlloc(h, &ptr, bytes)) return false;
    if (!cudaOk(cudaMemset(ptr, 0, bytes), "cudaMemset")) return false;
    b.device[t.name] = ptr;
    b.bytes[t.name] = bytes;
    if (!b.ctx->setTensorAddress(t.name.c_str(), ptr)) return fail(trtError("cannot bind " + t.name)), false;
  }
  std::vector<MeTrtRows> in, out;
  for (const StatePair& s : h.states) {
    in.push_back({static_cast<float*>(b.device[s.in]), s.floats, s.offset});
    out.push_back({static_cast<float*>(b.device[s.out]), s.floats, s.offset});
  }
  const size_t table = sizeof(MeTrtRows) * in.size();
  void* ptr = nullptr;
  if (!deviceAlloc(h, &ptr, table)) return false;
  b.inRows = static_cast<MeTrtRows*>(ptr);
  if (!deviceAlloc(h, &ptr, table)) return false;
  b.outRows = static_cast<MeTrtRows*>(ptr);
  if (table && (!cudaOk(cudaMemcpy(b.inRows, in.data(), table, cudaMemcpyHostToDevice), "cudaMemcpy") ||
                !cudaOk(cudaMemcpy(b.outRows, out.data(), table, cudaMemcpyHostToDevice), "cudaMemcpy")))
    return false;
  if (!deviceAlloc(h, &ptr, sizeof(int32_t) * static_cast<size_t>(b.batch))) return false;
  b.deviceIds = static_cast<int32_t*>(ptr);
  if (!hostAlloc(h, &ptr, b.bytes[p.tokens])) return false;
  b.hostTokens = ptr;
  if (!hostAlloc(h, &ptr, sizeof(int32_t) * static_cast<size_t>(b.batch))) return false;
  b.hostIds = static_cast<int32_t*>(ptr);
  const std::string& lg = prefill && !p.lastLogits.empty() ? p.lastLogits : p.logits;
  if (!hostAlloc(h, &ptr, std::max(b.bytes[p.logits], b.bytes[lg]))) return false;
  b.hostLogits = static_cast<float*>(ptr);
  return true;
}

// Tokens into the bucket's pinned buffer, in the plan's integer type.
void putTokens(const Plan& p, Bucket& b, const int32_t* tokens, int n, int padTo) {
  for (int i = 0; i < padTo; i++) {
    const int32_t t = i < n ? tokens[i] : 0;
    if (p.tokenType == DataType::kINT64)
      static_cast<int64_t*>(b.hostTokens)[i] = t;
    else
      static_cast<int32_t*>(b.hostTokens)[i] = t;
  }
}

// The work of one run on h.stream: tokens and slot ids in, gather, the plan, scatter, logits out.
bool record(Handle& h, Plan& p, Bucket& b, int tokens, const std::string& logits, size_t logitBytes) {
  const size_t tokenBytes = static_cast<size_t>(b.rows) * static_cast<size_t>(tokens) * elementSize(p.tokenType);
  if (!cudaOk(cudaMemcpyAsync(b.device[p.tokens], b.hostTokens, tokenBytes, cudaMemcpyHostToDevice, h.stream), "tokens") ||
      !cudaOk(cudaMemcpyAsync(b.deviceIds, b.hostIds, sizeof(int32_t) * static_cast<size_t>(b.rows), cudaMemcpyHostToDevice, h.stream),
              "slot ids") ||
      !cudaOk(meTrtMoveRows(b.inRows, static_cast<int>(h.states.size()), h.slotMem, h.slotFloats, b.deviceIds, b.rows, 1, h.maxRowFloats,
                            h.stream),
              "state gather"))
    return false;
  if (!b.ctx->enqueueV3(h.stream)) return fail(trtError("enqueueV3 failed")), false;
  return cudaOk(meTrtMoveRows(b.outRows, static_cast<int>(h.states.size()), h.slotMem, h.slotFloats, b.deviceIds, b.rows, 0, h.maxRowFloats,
                              h.stream),
                "state scatter") &&
         cudaOk(cudaMemcpyAsync(b.hostLogits, b.device[logits], logitBytes, cudaMemcpyDeviceToHost, h.stream), "logits");
}

// A step of bucket b: eager the first time (TensorRT sets itself up on the first enqueue of a
// shape), captured into a CUDA graph the second time, the graph replayed afterwards.
bool runStep(Handle& h, Bucket& b) {
  const size_t logitBytes = b.bytes[h.step.logits] / static_cast<size_t>(b.batch) * static_cast<size_t>(b.rows);
  if (!b.warmed || !h.useGraphs || b.ranged) {
    if (b.ranged && !setShapes(h.step, b, false, 1)) return false;
    if (!record(h, h.step, b, 1, h.step.logits, logitBytes)) return false;
    b.warmed = true;
  } else if (!b.graph) {
    cudaGraph_t g = nullptr;
    if (!cudaOk(cudaStreamBeginCapture(h.stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture")) return false;
    const bool ok = record(h, h.step, b, 1, h.step.logits, logitBytes);
    const cudaError_t end = cudaStreamEndCapture(h.stream, &g);
    if (!ok || end != cudaSuccess || cudaGraphInstantiate(&b.graph, g, 0) != cudaSuccess) {
      // not capturable (a plugin or TensorRT refused): this bucket stays eager
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      b.graph = nullptr;
      h.useGraphs = false;
      lastError.clear();
      if (!record(h, h.step, b, 1, h.step.logits, logitBytes)) return false;
    } else {
      cudaGraphDestroy(g);
      if (!cudaOk(cudaGraphLaunch(b.graph, h.stream), "cudaGraphLaunch")) return false;
    }
  } else if (!cudaOk(cudaGraphLaunch(b.graph, h.stream), "cudaGraphLaunch")) {
    return false;
  }
  return cudaOk(cudaStreamSynchronize(h.stream), "step");
}

std::string tensorsJson(const Plan& p) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < p.io.size(); i++) {
    const Tensor& t = p.io[i];
    o << (i ? "," : "") << "{\"name\":\"" << t.name << "\",\"input\":" << (t.input ? "true" : "false") << ",\"type\":\"" << typeName(t.type)
      << "\",\"dims\":" << dimsString(t.dims) << "}";
  }
  return o.str() + "]";
}

void destroy(Handle* h) {
  for (Bucket& b : h->buckets)
    if (b.graph) cudaGraphExecDestroy(b.graph);
  h->step.contexts.clear();
  h->prefill.contexts.clear();
  h->step.engine.reset();
  h->prefill.engine.reset();
  h->runtime.reset();
  for (void* p : h->deviceAllocs) cudaFree(p);
  for (void* p : h->hostAllocs) cudaFreeHost(p);
  if (h->slotMem) cudaFree(h->slotMem);
  if (h->scratch) cudaFree(h->scratch);
  if (h->stream) cudaStreamDestroy(h->stream);
  delete h;
}

bool openHandle(Handle& h, const char* stepPlan, const char* prefillPlan, const char* plugins, const char* states, int slots) {
  std::istringstream lines(states ? states : "");
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    StatePair s{};
    if (!(words >> s.in)) continue;
    if (!(words >> s.out)) return fail("state list: line \"" + line + "\" needs an input and an output name"), false;
    h.states.push_back(s);
  }
  if (slots < 1) return fail("slots must be at least 1"), false;
  h.slots = slots;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    return fail("no CUDA GPU is visible on this machine"), false;
  }
  if (!cudaOk(cudaStreamCreateWithFlags(&h.stream, cudaStreamNonBlocking), "cudaStreamCreate")) return false;
  h.runtime.reset(static_cast<IRuntime*>(libs.createRuntime(&logger, NV_TENSORRT_VERSION)));
  if (!h.runtime) return fail(trtError("cannot create TensorRT's runtime")), false;
  if (!loadPlugins(h.runtime->getPluginRegistry(), plugins)) return false;
  if (!openPlan(h, h.step, stepPlan) || !classify(h, h.step, stepPlan, false)) return false;
  h.hasPrefill = prefillPlan && *prefillPlan;
  if (h.hasPrefill && (!openPlan(h, h.prefill, prefillPlan) || !classify(h, h.prefill, prefillPlan, true))) return false;
  for (StatePair& s : h.states) {
    s.offset = h.slotFloats;
    h.slotFloats += s.floats;
    h.maxRowFloats = std::max(h.maxRowFloats, s.floats);
  }
  const size_t slotBytes = sizeof(float) * static_cast<size_t>(h.slotFloats) * static_cast<size_t>(slots + 1);
  if (!cudaOk(cudaMalloc(reinterpret_cast<void**>(&h.slotMem), std::max<size_t>(slotBytes, 16)), "cudaMalloc (state slots)") ||
      !cudaOk(cudaMemset(h.slotMem, 0, slotBytes), "cudaMemset"))
    return false;
  // one scratch for every context: they all run in turn on the one stream
  int64_t scratch = h.step.engine->getDeviceMemorySizeV2();
  if (h.hasPrefill) scratch = std::max(scratch, h.prefill.engine->getDeviceMemorySizeV2());
  if (!cudaOk(cudaMalloc(&h.scratch, static_cast<size_t>(std::max<int64_t>(scratch, 16))), "cudaMalloc (scratch)")) return false;

  // step buckets: the largest batch of each profile (a shared profile gives a context per bucket
  // too, but its shapes are set before every run and it is never captured)
  ICudaEngine& e = *h.step.engine;
  const char* tok = h.step.tokens.c_str();
  // a bucket per profile; compile builds each at one batch (min = max), so its shapes never change
  // and it is captured once; a profile over a range of batches runs each batch at its own shape
  for (int p = 0; p < e.getNbOptimizationProfiles(); p++) {
    Own<IExecutionContext> ctx(e.createExecutionContext(ExecutionContextAllocationStrategy::kUSER_MANAGED));
    if (!ctx) return fail(trtError("cannot create an execution context")), false;
    Bucket b;
    b.ctx = ctx.get();
    b.profile = p;
    b.minBatch = std::max(1, static_cast<int>(e.getProfileShape(tok, p, OptProfileSelector::kMIN).d[0]));
    b.batch = std::max(1, static_cast<int>(e.getProfileShape(tok, p, OptProfileSelector::kMAX).d[0]));
    b.ranged = b.minBatch != b.batch;
    h.step.contexts.push_back(std::move(ctx));
    h.buckets.push_back(b);
    if (!makeBucket(h, h.step, h.buckets.back(), false)) return false;
  }
  std::sort(h.buckets.begin(), h.buckets.end(), [](const Bucket& x, const Bucket& y) { return x.batch < y.batch; });
  if (h.buckets.empty()) return fail(std::string(stepPlan) + ": no optimization profile"), false;

  if (h.hasPrefill) {
    // prefill: a context per profile; all share the buffers made for the longest chunk
    ICudaEngine& pe = *h.prefill.engine;
    const char* ptok = h.prefill.tokens.c_str();
    size_t longest = 0;
    for (int p = 0; p < pe.getNbOptimizationProfiles(); p++) {
      const Dims mn = pe.getProfileShape(ptok, p, OptProfileSelector::kMIN);
      const Dims mx = pe.getProfileShape(ptok, p, OptProfileSelector::kMAX);
      Own<IExecutionContext> ctx(pe.createExecutionContext(ExecutionContextAllocationStrategy::kUSER_MANAGED));
      if (!ctx) return fail(trtError("cannot create an execution context")), false;
      Bucket b;
      b.ctx = ctx.get();
      b.batch = 1;
      b.profile = p;
      b.minTokens = std::max(1, static_cast<int>(mn.d[mn.nbDims - 1]));
      b.maxTokens = std::max(1, static_cast<int>(mx.d[mx.nbDims - 1]));
      h.prefill.contexts.push_back(std::move(ctx));
      h.prefillBuckets.push_back(b);
      if (b.maxTokens > h.prefillBuckets[longest].maxTokens) longest = h.prefillBuckets.size() - 1;
    }
    if (h.prefillBuckets.empty()) return fail(std::string(prefillPlan) + ": no optimization profile"), false;
    Bucket& big = h.prefillBuckets[longest];
    if (!makeBucket(h, h.prefill, big, true)) return false;
    for (Bucket& b : h.prefillBuckets) {
      if (&b == &big) continue;
      const int lo = b.minTokens, hi = b.maxTokens;
      const int profile = b.profile;
      IExecutionContext* ctx = b.ctx;
      b = big;
      b.ctx = ctx;
      b.profile = profile;
      b.minTokens = lo;
      b.maxTokens = hi;
      b.ctx->setDeviceMemoryV2(h.scratch, pe.getDeviceMemorySizeV2());
      if (!b.ctx->setOptimizationProfileAsync(b.profile, h.stream))
        return fail(trtError("cannot select optimization profile " + std::to_string(b.profile))), false;
      for (const auto& [name, ptr] : b.device)
        if (!b.ctx->setTensorAddress(name.c_str(), ptr)) return fail(trtError("cannot bind " + name)), false;
    }
    std::sort(h.prefillBuckets.begin(), h.prefillBuckets.end(), [](const Bucket& x, const Bucket& y) { return x.maxTokens < y.maxTokens; });
  }
  h.useGraphs = std::getenv("MAMBA_EDGE_TRT_NO_GRAPHS") == nullptr;

  char gpu[256] = "";
  int sm = 0;
  me_trt_gpu(gpu, sizeof gpu, &sm);
  std::ostringstream o;
  o << "{\"tensorrt\":\"" << versionString(libs.version()) << "\",\"device\":\"" << gpu << " (sm_" << sm << ")\",\"buckets\":[";
  for (size_t i = 0; i < h.buckets.size(); i++) o << (i ? "," : "") << h.buckets[i].batch;
  o << "],\"prefillChunks\":[";
  for (size_t i = 0; i < h.prefillBuckets.size(); i++) o << (i ? "," : "") << h.prefillBuckets[i].maxTokens;
  o << "]"
    << ",\"step\":" << tensorsJson(h.step) << ",\"prefill\":" << (h.hasPrefill ? tensorsJson(h.prefill) : "[]") << "}";
  h.describe = o.str();
  return true;
}

Handle* handleOf(void* p) { return static_cast<Handle*>(p); }

bool slotOk(Handle& h, int slot) {
  if (slot >= 0 && slot < h.slots) return true;
  fail("slot " + std::to_string(slot) + " is outside [0, " + std::to_string(h.slots) + ")");
  return false;
}

}  // namespace

static void* openImpl(const char* step_plan, const char* prefill_plan, const char* plugins, const char* states, int slots) {
  if (!step_plan) return fail("me_trt_open: no step plan"), nullptr;
  if (!loadNvinfer()) return nullptr;
  logger.take();
  auto* h = new Handle();
  bool ok = false;
  try {
    ok = openHandle(*h, step_plan, prefill_plan, plugins, states, slots);
  } catch (const std::exception& e) {
    fail(std::string("internal error: ") + e.what());
  }
  if (!ok) {
    const std::string e = lastError;
    destroy(h);
    lastError = e;
    return nullptr;
  }
  return h;
}

extern "C" void me_trt_close(void* h) {
  if (h) destroy(handleOf(h));
}

extern "C" const char* me_trt_describe(void* h) { return handleOf(h)->describe.c_str(); }
extern "C" int me_trt_vocab(void* h) { return handleOf(h)->vocab; }
extern "C" int me_trt_max_batch(void* h) { return handleOf(h)->buckets.back().batch; }
extern "C" int64_t me_trt_state_floats(void* h) { return handleOf(h)->slotFloats; }

extern "C" int me_trt_state_zero(void* p, int slot) {
  Handle& h = *handleOf(p);
  if (!slotOk(h, slot)) return -1;
  const size_t bytes = sizeof(float) * static_cast<size_t>(h.slotFloats);
  return cudaOk(cudaMemset(h.slotMem + slot * h.slotFloats, 0, bytes), "cudaMemset") ? 0 : -1;
}

extern "C" int me_trt_state_save(void* p, int slot, float* out) {
  Handle& h = *handleOf(p);
  if (!slotOk(h, slot)) return -1;
  const size_t bytes = sizeof(float) * static_cast<size_t>(h.slotFloats);
  return cudaOk(cudaMemcpy(out, h.slotMem + slot * h.slotFloats, bytes, cudaMemcpyDeviceToHost), "state save") ? 0 : -1;
}

extern "C" int me_trt_state_load(void* p, int slot, const float* data) {
  Handle& h = *handleOf(p);
  if (!slotOk(h, slot)) return -1;
  const size_t bytes = sizeof(float) * static_cast<size_t>(h.slotFloats);
  return cudaOk(cudaMemcpy(h.slotMem + slot * h.slotFloats, data, bytes, cudaMemcpyHostToDevice), "state load") ? 0 : -1;
}

static int stepImpl(void* p, const int32_t* slots, const int32_t* tokens, int n, float* logits) {
  Handle& h = *handleOf(p);
  if (n < 1) return 0;
  // the smallest bucket that takes n rows: padded up to a fixed batch, or a range that holds n
  auto it =
      std::find_if(h.buckets.begin(), h.buckets.end(), [n](const Bucket& b) { return b.batch >= n && (!b.ranged || b.minBatch <= n); });
  if (it == h.buckets.end())
    return fail("batch " + std::to_string(n) + ": no optimization profile of the step plan takes it (largest " +
                std::to_string(h.buckets.back().batch) + ")");
  Bucket& b = *it;
  for (int i = 0; i < n; i++)
    if (!slotOk(h, slots[i])) return -1;
  b.rows = b.ranged ? n : b.batch;
  for (int i = 0; i < b.rows; i++) b.hostIds[i] = i < n ? slots[i] : h.slots;  // padding rows: the spare slot
  putTokens(h.step, b, tokens, n, b.rows);
  if (!runStep(h, b)) return -1;
  std::memcpy(logits, b.hostLogits, sizeof(float) * static_cast<size_t>(n) * static_cast<size_t>(h.vocab));
  return 0;
}

static int prefillImpl(void* p, int slot, const int32_t* tokens, int n, int all, float* logits) {
  Handle& h = *handleOf(p);
  if (!slotOk(h, slot)) return -1;
  if (n < 1) return fail("prefill: no tokens");
  const size_t V = static_cast<size_t>(h.vocab);
  // every position's logits from a plan that only has the last ones: token by token
  if (!h.hasPrefill || (all && !h.prefill.allLogits)) {
    // token by token through the step plan's batch-1 bucket
    for (int i = 0; i < n; i++) {
      if (stepImpl(p, &slot, tokens + i, 1, logits + (all ? i * V : 0)) != 0) return -1;
    }
    return 0;
  }
  Plan& pl = h.prefill;
  const std::string& lastName = !all && !pl.lastLogits.empty() ? pl.lastLogits : pl.logits;
  const int chunk = h.prefillBuckets.back().maxTokens;
  for (int done = 0; done < n;) {
    const int t = std::min(n - done, chunk);
    // the profile of the shortest chunks that takes t tokens
    auto it = std::find_if(h.prefillBuckets.begin(), h.prefillBuckets.end(),
                           [t](const Bucket& x) { return x.minTokens <= t && t <= x.maxTokens; });
    if (it == h.prefillBuckets.end()) return fail("prefill: no optimization profile of the plan takes " + std::to_string(t) + " tokens");
    Bucket& b = *it;
    b.hostIds[0] = slot;
    if (!setShapes(pl, b, true, t)) return -1;
    putTokens(pl, b, tokens + done, t, t);
    const int64_t rows = volume(b.ctx->getTensorShape(lastName.c_str())) / static_cast<int64_t>(V);
    if (!record(h, pl, b, t, lastName, static_cast<size_t>(rows) * V * sizeof(float)) ||
        !cudaOk(cudaStreamSynchronize(h.stream), "prefill"))
      return -1;
    if (all) {
      if (rows != t)
        return fail("prefill: the plan's " + pl.logits + " has " + std::to_string(rows) + " rows for " + std::to_string(t) + " tokens");
      std::memcpy(logits + static_cast<size_t>(done) * V, b.hostLogits, sizeof(float) * V * static_cast<size_t>(t));
    } else if (done + t == n) {
      std::memcpy(logits, b.hostLogits + static_cast<size_t>(rows - 1) * V, sizeof(float) * V);
    }
    done += t;
  }
  return 0;
}

// ---- the exported calls: nothing escapes as an exception --------------------------------------------

namespace {
template <typename R, typename F>
R guarded(R onError, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    lastError = std::string("internal error: ") + e.what();
  } catch (...) {
    lastError = "internal error";
  }
  return onError;
}
}  // namespace

extern "C" int me_trt_build(const char* onnx, const char* plugins, const char* plan_out, const char* timing_cache, int prefill,
                            const int* sizes, int n_sizes, int workspace_mb) {
  return guarded(-1, [&] { return buildImpl(onnx, plugins, plan_out, timing_cache, prefill, sizes, n_sizes, workspace_mb); });
}

extern "C" void* me_trt_open(const char* step_plan, const char* prefill_plan, const char* plugins, const char* states, int slots) {
  return guarded<void*>(nullptr, [&] { return openImpl(step_plan, prefill_plan, plugins, states, slots); });
}

extern "C" int me_trt_step(void* p, const int32_t* slots, const int32_t* tokens, int n, float* logits) {
  return guarded(-1, [&] { return stepImpl(p, slots, tokens, n, logits); });
}

extern "C" int me_trt_prefill(void* p, int slot, const int32_t* tokens, int n, int all, float* logits) {
  return guarded(-1, [&] { return prefillImpl(p, slot, tokens, n, all, logits); });
}
