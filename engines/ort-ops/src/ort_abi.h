// The part of onnxruntime's C API (onnxruntime_c_api.h) this library uses, declared here so it
// builds without onnxruntime's headers. The API is a table of function pointers whose order never
// changes between releases (members are only appended), so a slot number names a function for good;
// the slots below are the header's, and runtime/backends/ort-capi.ts uses the same numbering.
#pragma once
#include <cstddef>
#include <cstdint>

extern "C" {

struct OrtStatus;
struct OrtValue;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtTensorTypeAndShapeInfo;
typedef OrtStatus* OrtStatusPtr;

enum OrtErrorCode { ORT_OK = 0, ORT_FAIL = 1, ORT_INVALID_ARGUMENT = 2 };
enum { ORT_FLOAT = 1, ORT_UINT8 = 2 };  // ONNXTensorElementDataType
enum { ORT_IO_REQUIRED = 0 };           // OrtCustomOpInputOutputCharacteristic
enum { ORT_MEM_DEFAULT = 0 };           // OrtMemType

typedef void* OrtApi;  // the function table: read through the typed accessors below

struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};

// OrtCustomOp up to version 16, the first with CreateKernelV2 / KernelComputeV2 (which report errors
// as a status). onnxruntime reads no member past those for an op of this version.
struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*);
  const char* (*GetName)(const OrtCustomOp*);
  const char* (*GetExecutionProviderType)(const OrtCustomOp*);
  int (*GetInputType)(const OrtCustomOp*, size_t);
  size_t (*GetInputTypeCount)(const OrtCustomOp*);
  int (*GetOutputType)(const OrtCustomOp*, size_t);
  size_t (*GetOutputTypeCount)(const OrtCustomOp*);
  void (*KernelCompute)(void*, OrtKernelContext*);
  void (*KernelDestroy)(void*);
  int (*GetInputCharacteristic)(const OrtCustomOp*, size_t);
  int (*GetOutputCharacteristic)(const OrtCustomOp*, size_t);
  int (*GetInputMemoryType)(const OrtCustomOp*, size_t);
  int (*GetVariadicInputMinArity)(const OrtCustomOp*);
  int (*GetVariadicInputHomogeneity)(const OrtCustomOp*);
  int (*GetVariadicOutputMinArity)(const OrtCustomOp*);
  int (*GetVariadicOutputHomogeneity)(const OrtCustomOp*);
  OrtStatusPtr (*CreateKernelV2)(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*, void**);
  OrtStatusPtr (*KernelComputeV2)(void*, OrtKernelContext*);
};
constexpr uint32_t kCustomOpVersion = 16;
constexpr uint32_t kParallelForApiVersion = 17;  // KernelContext_ParallelFor appeared in 1.17

}  // extern "C"

namespace ort {

// Slots in the OrtApi table.
enum Slot : size_t {
  CreateStatus = 0,
  CreateCustomOpDomain = 26,
  CustomOpDomain_Add = 27,
  AddCustomOpDomain = 28,
  GetTensorMutableData = 51,
  GetDimensionsCount = 61,
  GetDimensions = 62,
  GetTensorTypeAndShape = 65,
  KernelInfoGetAttribute_float = 85,
  KernelContext_GetInput = 90,
  KernelContext_GetOutput = 91,
  ReleaseStatus = 93,
  ReleaseTensorTypeAndShapeInfo = 99,
  KernelContext_ParallelFor = 274,
};

// The function in slot S of `api`, as type F.
template <typename F>
inline F fn(const OrtApi* api, Slot s) {
  return reinterpret_cast<F>(api[s]);
}

using CreateStatusFn = OrtStatus* (*)(OrtErrorCode, const char*);
using CreateCustomOpDomainFn = OrtStatusPtr (*)(const char*, OrtCustomOpDomain**);
using CustomOpDomainAddFn = OrtStatusPtr (*)(OrtCustomOpDomain*, const OrtCustomOp*);
using AddCustomOpDomainFn = OrtStatusPtr (*)(OrtSessionOptions*, OrtCustomOpDomain*);
using GetTensorMutableDataFn = OrtStatusPtr (*)(OrtValue*, void**);
using GetDimensionsCountFn = OrtStatusPtr (*)(const OrtTensorTypeAndShapeInfo*, size_t*);
using GetDimensionsFn = OrtStatusPtr (*)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t);
using GetTensorTypeAndShapeFn = OrtStatusPtr (*)(const OrtValue*, OrtTensorTypeAndShapeInfo**);
using KernelInfoGetAttributeFloatFn = OrtStatusPtr (*)(const OrtKernelInfo*, const char*, float*);
using KernelContextGetInputFn = OrtStatusPtr (*)(const OrtKernelContext*, size_t, const OrtValue**);
using KernelContextGetOutputFn = OrtStatusPtr (*)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**);
using ReleaseStatusFn = void (*)(OrtStatus*);
using ReleaseTensorTypeAndShapeInfoFn = void (*)(OrtTensorTypeAndShapeInfo*);
using ParallelForFn = OrtStatusPtr (*)(const OrtKernelContext*, void (*)(void*, size_t), size_t, size_t, void*);

}  // namespace ort
