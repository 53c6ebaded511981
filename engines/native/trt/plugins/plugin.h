// The TensorRT side of the plugins: one generic IPluginV3 that takes its inputs, outputs, shape
// rules and kernel call from an OpDef (ops.cu), so each op is only its shapes and its call of a
// kernel of engines/native/kernels. Only interfaces defined in TensorRT's headers are used: the
// library needs nothing of libnvinfer to link or load.
#pragma once
#include <NvInferRuntime.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <string>
#include <vector>

namespace me::trt {

using namespace nvinfer1;

constexpr const char* kNamespace = "mamba_edge";
constexpr const char* kVersion = "1";

// what a tensor of an op is: Act is float32 or float16 (one type for all of a node's Act tensors,
// computed in float32), the others have one type each; I8 only for outputs
enum class Role { Act, F32, F16, I8 };

struct Out {
  Role role;
  int alias;  // the input this output updates in place (a state), or -1
};

struct AttrDef {
  const char* name;
  bool isInt;  // int32, else float32
  float dflt;
};

// An op's attribute values, in the order of its AttrDefs.
struct Attrs {
  const std::vector<AttrDef>* defs = nullptr;
  std::vector<float> f;    // float attributes (and the value of int ones, as float, unused)
  std::vector<int32_t> i;  // int attributes
  float fl(const char* name) const;
  int in(const char* name) const;
};

// A tensor as the op's kernel call sees it: Act tensors always as float32 (converted in the
// workspace where the node's type is float16).
struct Tensor {
  void* p;
  Dims d;
};

struct Run {
  const Attrs& a;
  std::vector<Tensor> in, out;
  void* ws;  // the op's own scratch (OpDef::workspace bytes)
  cudaStream_t s;
};

struct OpDef {
  const char* name;
  std::vector<AttrDef> attrs;
  std::vector<Role> (*inputs)(const Attrs&);
  std::vector<Out> (*outputs)(const Attrs&);
  // output shapes from input shapes; false if the inputs' ranks are wrong
  bool (*shapes)(const Attrs&, const DimsExprs* in, DimsExprs* out, IExprBuilder& b);
  // "" if the input shapes (−1: not known yet) fit the op, else what is wrong
  std::string (*check)(const Attrs&, const Dims* in);
  size_t (*workspace)(const Attrs&, const Dims* in);  // for these (largest) input shapes
  cudaError_t (*enqueue)(const Run& r);
};

const std::vector<const OpDef*>& ops();  // ops.cu

void logError(const std::string& msg);
int64_t volume(const Dims& d);

class Plugin : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuildV2, public IPluginV3OneRuntime {
 public:
  Plugin(const OpDef& def, Attrs a);
  Plugin(const Plugin& o);

  // IPluginV3
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override;
  IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  AsciiChar const* getPluginName() const noexcept override { return def_.name; }
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

  // IPluginV3OneBuild(V2)
  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs, int32_t nbShapeInputs,
                          DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override;
  int32_t getNbOutputs() const noexcept override { return (int32_t)outs_.size(); }
  size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const* outputs,
                          int32_t nbOutputs) const noexcept override;
  int32_t getAliasedInput(int32_t outputIndex) noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs,
                  void* workspace, cudaStream_t stream) noexcept override;
  IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override;
  PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 private:
  bool checkShapes(const Dims* in, int32_t nbInputs, const char* when) const;
  // workspace offsets: float32 copies of the float16 Act tensors, then the op's scratch
  size_t layout(const Dims* in, const DataType* inT, const Dims* out, const DataType* outT, std::vector<size_t>* inOff,
                std::vector<size_t>* outOff, size_t* opOff) const;

  const OpDef& def_;
  Attrs a_;
  std::vector<Role> ins_;
  std::vector<Out> outs_;
  std::vector<PluginField> fields_;
  PluginFieldCollection fc_{};
};

class Creator : public IPluginCreatorV3One {
 public:
  explicit Creator(const OpDef& def);
  IPluginV3* createPlugin(AsciiChar const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept override;
  PluginFieldCollection const* getFieldNames() noexcept override { return &fc_; }
  AsciiChar const* getPluginName() const noexcept override { return def_.name; }
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

 private:
  const OpDef& def_;
  std::vector<PluginField> fields_;
  PluginFieldCollection fc_{};
};

}  // namespace me::trt
