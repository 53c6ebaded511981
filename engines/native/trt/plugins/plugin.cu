// The generic plugin over an OpDef: formats, output types and shapes, attributes (parsed from the
// ONNX node's fields, written back by getFieldsToSerialize), the workspace, the float16 <-> float32
// conversion of Act tensors, the in-place state outputs, and the library's entry points.
#include <cuda_fp16.h>
#include <cstdio>
#include <cstring>
#include "plugin.h"

namespace me::trt {

static ILoggerFinder* gLoggerFinder = nullptr;

void logError(const std::string& msg) {
  const std::string line = std::string(kNamespace) + ": " + msg;
  ILogger* log = gLoggerFinder ? gLoggerFinder->findLogger() : nullptr;
  if (log)
    log->log(ILogger::Severity::kERROR, line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
}

int64_t volume(const Dims& d) {
  int64_t v = 1;
  for (int i = 0; i < d.nbDims; i++) v *= d.d[i];
  return v;
}

float Attrs::fl(const char* name) const {
  for (size_t k = 0; k < defs->size(); k++)
    if (!std::strcmp((*defs)[k].name, name)) return f[k];
  return 0.f;
}

int Attrs::in(const char* name) const {
  for (size_t k = 0; k < defs->size(); k++)
    if (!std::strcmp((*defs)[k].name, name)) return i[k];
  return 0;
}

// ---- conversions of Act tensors (float16 nodes) ---------------------------------------------------
__global__ void halfToFloat(const __half* a, float* b, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) b[i] = __half2float(a[i]);
}
__global__ void floatToHalf(const float* a, __half* b, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    b[i] = __float2half_rn(a[i]);
}
static int gridFor(int64_t n) { return (int)std::min<int64_t>((n + 255) / 256, 4096); }

// ---- Plugin ----------------------------------------------------------------------------------------
Plugin::Plugin(const OpDef& def, Attrs a) : def_(def), a_(std::move(a)) {
  a_.defs = &def_.attrs;
  ins_ = def_.inputs(a_);
  outs_ = def_.outputs(a_);
}

Plugin::Plugin(const Plugin& o) : Plugin(o.def_, o.a_) {}

IPluginCapability* Plugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
  switch (type) {
    case PluginCapabilityType::kCORE:
      return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD:
      return static_cast<IPluginV3OneBuild*>(static_cast<IPluginV3OneBuildV2*>(this));
    case PluginCapabilityType::kRUNTIME:
      return static_cast<IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

IPluginV3* Plugin::clone() noexcept {
  try {
    return new Plugin(*this);
  } catch (...) {
    return nullptr;
  }
}

bool Plugin::checkShapes(const Dims* in, int32_t nbInputs, const char* when) const {
  if (nbInputs != (int32_t)ins_.size()) {
    logError(std::string(def_.name) + ": " + std::to_string(nbInputs) + " inputs, expected " + std::to_string(ins_.size()));
    return false;
  }
  const std::string err = def_.check(a_, in);
  if (!err.empty()) logError(std::string(def_.name) + " (" + when + "): " + err);
  return err.empty();
}

int32_t Plugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
                                int32_t nbOutputs) noexcept {
  if (nbOutputs != (int32_t)outs_.size() || nbInputs != (int32_t)ins_.size()) return -1;
  std::vector<Dims> d(nbInputs);
  for (int i = 0; i < nbInputs; i++) d[i] = in[i].desc.dims;
  return checkShapes(d.data(), nbInputs, "configurePlugin") ? 0 : -1;
}

int32_t Plugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept {
  if (nbOutputs != (int32_t)outs_.size() || nbInputs != (int32_t)ins_.size()) return -1;
  DataType act = DataType::kFLOAT;
  for (int i = 0; i < nbInputs; i++)
    if (ins_[i] == Role::Act) {
      act = inputTypes[i];
      break;
    }
  if (act != DataType::kFLOAT && act != DataType::kHALF) {
    logError(std::string(def_.name) + ": activations must be float32 or float16");
    return -1;
  }
  for (int o = 0; o < nbOutputs; o++) {
    const Role r = outs_[o].role;
    outputTypes[o] = r == Role::Act ? act : r == Role::I8 ? DataType::kINT8 : r == Role::F16 ? DataType::kHALF : DataType::kFLOAT;
  }
  return 0;
}

int32_t Plugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* outputs, int32_t nbOutputs,
                                IExprBuilder& exprBuilder) noexcept {
  if (nbOutputs != (int32_t)outs_.size() || nbInputs != (int32_t)ins_.size()) return -1;
  try {
    if (!def_.shapes(a_, inputs, outputs, exprBuilder)) {
      logError(std::string(def_.name) + ": inputs of the wrong rank");
      return -1;
    }
  } catch (...) {
    return -1;
  }
  return 0;
}

bool Plugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != (int32_t)ins_.size() || nbOutputs != (int32_t)outs_.size() || pos < 0 || pos >= nbInputs + nbOutputs) return false;
  const PluginTensorDesc& d = inOut[pos].desc;
  if (d.format != TensorFormat::kLINEAR) return false;
  auto role = [&](int p) { return p < nbInputs ? ins_[p] : outs_[p - nbInputs].role; };
  switch (role(pos)) {
    case Role::F32:
      return d.type == DataType::kFLOAT;
    case Role::F16:
      return d.type == DataType::kHALF;
    case Role::I8:
      return d.type == DataType::kINT8;
    case Role::Act:
      if (d.type != DataType::kFLOAT && d.type != DataType::kHALF) return false;
      for (int p = 0; p < pos; p++)  // every Act tensor of the node in the type of the first
        if (role(p) == Role::Act) return inOut[p].desc.type == d.type;
      return true;
  }
  return false;
}

static size_t align256(size_t n) { return (n + 255) / 256 * 256; }

size_t Plugin::layout(const Dims* in, const DataType* inT, const Dims* out, const DataType* outT, std::vector<size_t>* inOff,
                      std::vector<size_t>* outOff, size_t* opOff) const {
  size_t off = 0;
  for (size_t i = 0; i < ins_.size(); i++) {
    const bool conv = ins_[i] == Role::Act && inT[i] == DataType::kHALF;
    if (inOff) inOff->push_back(conv ? off : SIZE_MAX);
    if (conv) off += align256((size_t)volume(in[i]) * sizeof(float));
  }
  for (size_t o = 0; o < outs_.size(); o++) {
    const bool conv = outs_[o].role == Role::Act && outT[o] == DataType::kHALF;
    if (outOff) outOff->push_back(conv ? off : SIZE_MAX);
    if (conv) off += align256((size_t)volume(out[o]) * sizeof(float));
  }
  if (opOff) *opOff = off;
  return off + align256(def_.workspace(a_, in));
}

size_t Plugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const* outputs,
                                int32_t nbOutputs) const noexcept {
  if (nbInputs != (int32_t)ins_.size() || nbOutputs != (int32_t)outs_.size()) return 0;
  std::vector<Dims> in(nbInputs), out(nbOutputs);
  std::vector<DataType> inT(nbInputs), outT(nbOutputs);
  for (int i = 0; i < nbInputs; i++) in[i] = inputs[i].max, inT[i] = inputs[i].desc.type;
  for (int o = 0; o < nbOutputs; o++) out[o] = outputs[o].max, outT[o] = outputs[o].desc.type;
  return layout(in.data(), inT.data(), out.data(), outT.data(), nullptr, nullptr, nullptr);
}

int32_t Plugin::getAliasedInput(int32_t outputIndex) noexcept {
  return outputIndex >= 0 && outputIndex < (int32_t)outs_.size() ? outs_[outputIndex].alias : -1;
}

int32_t Plugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*, int32_t nbOutputs) noexcept {
  if (nbOutputs != (int32_t)outs_.size() || nbInputs != (int32_t)ins_.size()) return -1;
  std::vector<Dims> d(nbInputs);
  for (int i = 0; i < nbInputs; i++) d[i] = in[i].dims;
  return checkShapes(d.data(), nbInputs, "onShapeChange") ? 0 : -1;
}

int32_t Plugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
                        void* const* outputs, void* workspace, cudaStream_t stream) noexcept {
  try {
    const int nIn = (int)ins_.size(), nOut = (int)outs_.size();
    std::vector<Dims> inD(nIn), outD(nOut);
    std::vector<DataType> inT(nIn), outT(nOut);
    for (int i = 0; i < nIn; i++) inD[i] = inputDesc[i].dims, inT[i] = inputDesc[i].type;
    for (int o = 0; o < nOut; o++) outD[o] = outputDesc[o].dims, outT[o] = outputDesc[o].type;
    if (!checkShapes(inD.data(), nIn, "enqueue")) return -1;
    std::vector<size_t> inOff, outOff;
    size_t opOff = 0;
    layout(inD.data(), inT.data(), outD.data(), outT.data(), &inOff, &outOff, &opOff);
    char* ws = static_cast<char*>(workspace);
    Run r{a_, {}, {}, ws + opOff, stream};
    for (int i = 0; i < nIn; i++) {
      void* p = const_cast<void*>(inputs[i]);
      if (inOff[i] != SIZE_MAX) {
        const int64_t n = volume(inD[i]);
        float* f = reinterpret_cast<float*>(ws + inOff[i]);
        if (n > 0) halfToFloat<<<gridFor(n), 256, 0, stream>>>(static_cast<const __half*>(p), f, n);
        p = f;
      }
      r.in.push_back({p, inD[i]});
    }
    for (int o = 0; o < nOut; o++) {
      void* p = outputs[o];
      if (outOff[o] != SIZE_MAX) p = ws + outOff[o];
      const int a = outs_[o].alias;
      if (a >= 0 && outputs[o] != inputs[a]) {  // not updated in place: start from the input state
        if (cudaError_t e = cudaMemcpyAsync(p, inputs[a], (size_t)volume(inD[a]) * sizeof(float), cudaMemcpyDeviceToDevice, stream)) {
          logError(std::string(def_.name) + ": state copy: " + cudaGetErrorString(e));
          return -1;
        }
      }
      r.out.push_back({p, outD[o]});
    }
    cudaError_t e = def_.enqueue(r);
    for (int o = 0; o < nOut && e == cudaSuccess; o++) {
      if (outOff[o] == SIZE_MAX) continue;
      const int64_t n = volume(outD[o]);
      if (n > 0) floatToHalf<<<gridFor(n), 256, 0, stream>>>(static_cast<const float*>(r.out[o].p), static_cast<__half*>(outputs[o]), n);
      e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
      logError(std::string(def_.name) + ": " + cudaGetErrorString(e));
      return -1;
    }
    return 0;
  } catch (...) {
    return -1;
  }
}

IPluginV3* Plugin::attachToContext(IPluginResourceContext*) noexcept { return clone(); }

PluginFieldCollection const* Plugin::getFieldsToSerialize() noexcept {
  fields_.clear();
  for (size_t k = 0; k < def_.attrs.size(); k++) {
    const AttrDef& d = def_.attrs[k];
    if (d.isInt)
      fields_.emplace_back(d.name, &a_.i[k], PluginFieldType::kINT32, 1);
    else
      fields_.emplace_back(d.name, &a_.f[k], PluginFieldType::kFLOAT32, 1);
  }
  fc_.nbFields = (int32_t)fields_.size();
  fc_.fields = fields_.data();
  return &fc_;
}

// ---- Creator ---------------------------------------------------------------------------------------
Creator::Creator(const OpDef& def) : def_(def) {
  for (const AttrDef& d : def_.attrs)
    fields_.emplace_back(d.name, nullptr, d.isInt ? PluginFieldType::kINT32 : PluginFieldType::kFLOAT32, 1);
  fc_.nbFields = (int32_t)fields_.size();
  fc_.fields = fields_.data();
}

// one attribute value as a double, from the field types the ONNX parser and serialization produce
static bool fieldValue(const PluginField& f, double* v) {
  if (!f.data || f.length != 1) return false;
  switch (f.type) {
    case PluginFieldType::kFLOAT32:
      *v = *static_cast<const float*>(f.data);
      return true;
    case PluginFieldType::kFLOAT64:
      *v = *static_cast<const double*>(f.data);
      return true;
    case PluginFieldType::kINT8:
      *v = *static_cast<const int8_t*>(f.data);
      return true;
    case PluginFieldType::kINT16:
      *v = *static_cast<const int16_t*>(f.data);
      return true;
    case PluginFieldType::kINT32:
      *v = *static_cast<const int32_t*>(f.data);
      return true;
    case PluginFieldType::kINT64:
      *v = (double)*static_cast<const int64_t*>(f.data);
      return true;
    default:
      return false;
  }
}

IPluginV3* Creator::createPlugin(AsciiChar const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept {
  try {
    Attrs a;
    a.defs = &def_.attrs;
    for (const AttrDef& d : def_.attrs) a.f.push_back(d.dflt), a.i.push_back((int32_t)d.dflt);
    for (int32_t k = 0; fc && k < fc->nbFields; k++) {
      const PluginField& f = fc->fields[k];
      if (!f.name) continue;
      if (!std::strcmp(f.name, "plugin_version") || !std::strcmp(f.name, "plugin_namespace")) continue;
      size_t j = 0;
      while (j < def_.attrs.size() && std::strcmp(def_.attrs[j].name, f.name)) j++;
      if (j == def_.attrs.size()) {
        logError(std::string(def_.name) + ": unknown attribute " + f.name);
        return nullptr;
      }
      double v = 0;
      if (!fieldValue(f, &v)) {
        logError(std::string(def_.name) + ": attribute " + f.name + ": expected one number");
        return nullptr;
      }
      if (def_.attrs[j].isInt)
        a.i[j] = (int32_t)v, a.f[j] = (float)(int32_t)v;
      else
        a.f[j] = (float)v;
    }
    return new Plugin(def_, std::move(a));
  } catch (...) {
    return nullptr;
  }
}

}  // namespace me::trt

// ---- library entry points (trtexec --dynamicPlugins, IPluginRegistry::loadLibrary, the shim) -------
extern "C" {

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  // built once (thread-safe static initialization); the creators live as long as the library
  static const std::vector<nvinfer1::IPluginCreatorInterface*> list = [] {
    std::vector<nvinfer1::IPluginCreatorInterface*> l;
    for (const me::trt::OpDef* d : me::trt::ops()) l.push_back(new me::trt::Creator(*d));
    return l;
  }();
  nbCreators = (int32_t)list.size();
  return list.data();
}

__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) { me::trt::gLoggerFinder = finder; }

}  // extern "C"
