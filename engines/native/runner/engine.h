// The runner's shared parts: the engine on the GPU (configuration, layers, buffers), the reader of
// weights.safetensors, and the pieces of loading and of the forward pass that the engine API
// (engine.cu) and the calibration API (calibrate.cu) both use.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include "json.h"
#include "kernels/kernels.cuh"

namespace me {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#define CK(call)                                                                                          \
  do {                                                                                                    \
    cudaError_t e_ = (call);                                                                              \
    if (e_ != cudaSuccess) throw Error(std::string(#call).substr(0, 40) + ": " + cudaGetErrorString(e_)); \
  } while (0)

// the message me_last_error() returns
void setError(const std::string& s);

template <class F>
int guard(F&& f) {
  try {
    f();
    return 0;
  } catch (std::exception& ex) {
    setError(ex.what());
  } catch (...) {
    setError("unknown error");
  }
  return -1;
}

struct Config {
  int mamba2 = 0, vocab = 0, D = 0, nLayer = 0, E = 0, N = 0, K = 0, R = 0, H = 0, P = 0, G = 0, gs = 0, normBeforeGate = 0, tied = 1;
  float eps = 1e-5f, dtLo = 0.f, dtHi = INFINITY;
  int convC() const { return mamba2 ? E + 2 * G * N : E; }
  int projN() const { return mamba2 ? E + convC() + H : 2 * E; }
  long long convPer() const { return (long long)convC() * (K - 1); }
  long long ssmPer() const { return (long long)E * N; }
  long long stateFloats() const { return (long long)nLayer * (convPer() + ssmPer()); }
};

struct Layer {
  const float *norm = nullptr, *convW = nullptr, *convB = nullptr, *A = nullptr, *D = nullptr, *dtB = nullptr, *dtBias = nullptr,
              *gatedNorm = nullptr;
  const __half* dtW = nullptr;
  LinearW inProj{}, xProj{}, outProj{};
  float sIn = 0, sXproj = 0, sOut = 0, sB = 0, sC = 0;
  float* convQ = nullptr;  // per conv channel fake-quantization scales, or null
};

// the rotation of a width n (as engines/builder/hadamard.ts): n = hm · hb with hm 1, 12 or 20 and hb
// a power of two, over the whole row; else blocks of the largest power of two dividing n (hm 1)
inline void hadamardOf(int n, int& hm, int& hb) {
  for (int m : {1, 12, 20}) {
    if (n % m) continue;
    const int b = n / m;
    if ((b & (b - 1)) == 0) {
      hm = m, hb = b;
      return;
    }
  }
  hm = 1, hb = 1;
  while (n % (hb * 2) == 0) hb *= 2;
}

struct Engine {
  Config c;
  std::string recipe, desc;
  int actInt8 = 0, qdqAct = 0, rotate = 0;
  int maxBatch = 1, nSlots = 1, chunk = 512;
  std::vector<void*> allocs;
  int64_t weightBytes = 0;
  const __half* embedding = nullptr;  // float16 table, or null for a 4-bit one:
  const uint8_t* embQ = nullptr;      // (vocab, D / embGroup, embGroup / 2), as I4 weights
  const float* embScale = nullptr;    // (vocab, D / embGroup)
  int embGroup = 0;
  LinearW lmHead{};
  const float* normF = nullptr;
  std::vector<Layer> layers;
  float* states = nullptr;   // (nSlots + 1) slots; the last one absorbs padded batch rows
  float* gemvWs = nullptr;   // split-K workspace of the packed 4-bit GEMVs (one stream: shared)
  float* ssPart = nullptr;   // batch 1: partial sums of squares of hidden, from the last out_proj
  float* ssPartY = nullptr;  // batch 1, Mamba-2: partial sums of squares of the gated y, from the SSD step
  int ssParts = 0;           // how many ssPart holds for the current hidden (0: none, while capturing)
  unsigned* gemvCount = nullptr;
  cudaStream_t st = nullptr;
  // activations, sized for max(maxBatch, chunk) rows
  int rows = 0;
  float *hidden, *normed, *proj, *xc, *dbl, *dtraw, *y, *act, *out, *logits, *argScratch;
  int8_t *normedQ, *xq, *actQ;
  int *dTokens, *dSlots, *dArg;
  int32_t *hTokens, *hSlots;  // pinned
  std::map<int, cudaGraphExec_t> graphs;

  ~Engine() {
    for (auto& g : graphs) cudaGraphExecDestroy(g.second);
    for (void* p : allocs) cudaFree(p);
    if (hTokens) cudaFreeHost(hTokens);
    if (hSlots) cudaFreeHost(hSlots);
    if (st) cudaStreamDestroy(st);
  }

  void release(void* p) {
    allocs.erase(std::remove(allocs.begin(), allocs.end(), p), allocs.end());
    cudaFree(p);
  }

  template <class T>
  T* alloc(size_t n) {
    void* p = nullptr;
    CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    allocs.push_back(p);
    return (T*)p;
  }

  long long slotStride() const { return c.stateFloats(); }
  float* convState(int slot, int l) { return states + slot * slotStride() + l * c.convPer(); }
  float* ssmState(int slot, int l) { return states + slot * slotStride() + c.nLayer * c.convPer() + l * c.ssmPer(); }
};

inline std::string readFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline double num(const Json& j, const char* k, double dflt) {
  const Json* v = j.get(k);
  return v && v->isNum() ? v->num : dflt;
}

struct Tensors {
  std::string path;
  std::ifstream f;
  size_t base = 0;
  Json header;
  Engine* e;
  Tensors(const std::string& p, Engine* eng) : path(p), f(p, std::ios::binary), e(eng) {
    if (!f) throw Error(path + ": cannot open");
    uint64_t n = 0;
    f.read((char*)&n, 8);
    if (!f || n > (1u << 30)) throw Error(path + ": not a safetensors file");
    std::string h(n, '\0');
    f.read(&h[0], n);
    if (!f) throw Error(path + ": truncated header");
    try {
      header = Json::parse(h);
    } catch (std::exception& ex) {
      throw Error(path + ": header is not valid JSON (" + ex.what() + ")");
    }
    base = 8 + n;
  }
  const Json* find(const std::string& name) { return header.get(name); }
  // uploads tensor `name`, checking its dtype and element count
  void* load(const std::string& name, const char* dtype, size_t count) {
    const Json* t = find(name);
    if (!t) throw Error(path + ": tensor " + name + " is missing");
    const Json* dt = t->get("dtype");
    const Json* off = t->get("data_offsets");
    if (!dt || dt->str != dtype)
      throw Error(path + ": tensor " + name + ": expected dtype " + dtype + ", found " + (dt ? dt->str : "none"));
    if (!off || off->arr.size() != 2) throw Error(path + ": tensor " + name + ": no data_offsets");
    const size_t a = (size_t)off->arr[0].num, b = (size_t)off->arr[1].num;
    const size_t esz = !strcmp(dtype, "F32") ? 4 : !strcmp(dtype, "F16") ? 2 : 1;
    if (b - a != count * esz)
      throw Error(path + ": tensor " + name + ": " + std::to_string(b - a) + " bytes, expected " + std::to_string(count * esz));
    std::vector<char> host(b - a);
    f.seekg(base + a);
    f.read(host.data(), b - a);
    if (!f) throw Error(path + ": truncated at tensor " + name);
    void* d = e->alloc<char>(b - a);
    CK(cudaMemcpy(d, host.data(), b - a, cudaMemcpyHostToDevice));
    e->weightBytes += b - a;
    return d;
  }
  const float* f32(const std::string& name, size_t count) { return (const float*)load(name, "F32", count); }
  const float* f32opt(const std::string& name, size_t count) { return find(name) ? f32(name, count) : nullptr; }
};

// throws unless a CUDA device is there
inline void requireDevice() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    cudaGetLastError();
    throw Error(std::string("no CUDA device (") + (err ? cudaGetErrorString(err) : "none found") + ")");
  }
}

// the model dimensions of a manifest's config (`where` names it in errors)
void parseConfig(Config& c, const Json& cfg, const std::string& where);
// layer l of the engine from tensors `layers.<fileLayer>.*` / `l<fileLayer>.*` of t, with the
// activation scales of `scales` (manifest quant.scales, or null for float activations)
void loadLayer(Engine& e, Tensors& t, int l, int fileLayer, const Json* scales);
// the activation buffers and state slots
void allocate(Engine& e);
// one layer over M rows: decode (row m continues slot dSlots[m]) or a prefill of one sequence in `slot`
void layer(Engine& e, int l, int M, bool decode, int slot);

}  // namespace me
