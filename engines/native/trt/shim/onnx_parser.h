// The part of TensorRT's ONNX parser interface the shim calls. NvOnnxParser.h is not among the
// TensorRT 10.3 headers the project builds against, so when the include directory lacks it the
// shim declares the leading virtual methods of nvonnxparser::IParser and IParserError here, in the
// order of TensorRT 10's ABI (unchanged since TensorRT 8); only those methods are called.
#pragma once
#include <NvInfer.h>
#include <cstddef>

#if __has_include(<NvOnnxParser.h>)
#include <NvOnnxParser.h>
namespace me_onnx {
using Parser = nvonnxparser::IParser;
using ParserError = nvonnxparser::IParserError;
constexpr int kParserVersion = NV_ONNX_PARSER_VERSION;
}  // namespace me_onnx
#else
namespace me_onnx {
class ParserError {
 public:
  virtual int code() const = 0;
  virtual char const* desc() const = 0;
  virtual char const* file() const = 0;
  virtual int line() const = 0;
  virtual char const* func() const = 0;
  virtual int node() const = 0;

 protected:
  virtual ~ParserError() = default;
};

class Parser {
 public:
  virtual bool parse(void const* model, size_t size, char const* path) noexcept = 0;
  virtual bool parseFromFile(char const* path, int verbosity) noexcept = 0;
  virtual bool supportsModel(void const*, size_t, void*, char const*) noexcept = 0;  // not called
  virtual bool parseWithWeightDescriptors(void const* model, size_t size) noexcept = 0;
  virtual bool supportsOperator(char const* op) const noexcept = 0;
  virtual int getNbErrors() const noexcept = 0;
  virtual ParserError const* getError(int index) const noexcept = 0;
  virtual void clearErrors() noexcept = 0;
  virtual ~Parser() noexcept = default;
};
// the parser library ignores the version argument; 0.1.0 is TensorRT 10's parser API
constexpr int kParserVersion = 100;
}  // namespace me_onnx
#endif
