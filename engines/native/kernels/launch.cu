// Whether launch() asks for programmatic dependent launch: only on sm_90 and later (the attribute
// has no meaning below), and not when MAMBA_EDGE_PDL=0 (to measure what it brings).
#include <cstdlib>
#include <cstring>
#include "common.cuh"

namespace me {

bool pdlEnabled() {
  static const bool on = [] {
    const char* env = std::getenv("MAMBA_EDGE_PDL");
    if (env && !std::strcmp(env, "0")) return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return on;
}

}  // namespace me
