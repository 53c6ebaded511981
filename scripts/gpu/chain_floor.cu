// The structural floor of a batch-1 decode step built as a chain of dependent kernels, measured on
// the GPU at hand: what a step would cost if every kernel were ideal. Each "phase" kernel streams
// its share of a layer's weight bytes into registers (before the dependent-launch wait, as the
// runner's GEMVs do), waits for the previous kernel, reads the previous phase's output row (every
// block all of it), reduces it and writes its own output row; nothing else. A step is the layers'
// phases, then one read of the lm_head bytes, replayed as a CUDA graph. Comparing chains of 1, 3, 4
// and 5 phases per layer, with and without programmatic dependent launch, gives the cost of one
// more dependent kernel per layer, and how far the runner's real kernels are from this floor.
// Developer tooling, not part of the library. Build and run on the GPU machine:
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/chain_floor scripts/gpu/chain_floor.cu
//   /tmp/chain_floor [mamba-130m|mamba-1.4b|mamba-2.8b] [fp16|w8a8|w4a16] > chain-floor.json
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      fprintf(stderr, "chain_floor: %s: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); \
      exit(1);                                                                                  \
    }                                                                                           \
  } while (0)

// programmatic dependent launch exists from sm_90 (the Orin's sm_87 runs the configs without it)
__device__ __forceinline__ void pdlWait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdlRelease() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// R: 16-byte loads per thread issued before the wait (the rest follow it)
template <int R>
__global__ void __launch_bounds__(256)
    phaseKernel(const uint4* __restrict__ w, size_t n16, const float* in, int nin, float* out, int nout, int pdl) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  uint4 r[R];
#pragma unroll
  for (int i = 0; i < R; i++) {
    const size_t k = t + (size_t)i * stride;
    r[i] = k < n16 ? __ldg(w + k) : make_uint4(0, 0, 0, 0);
  }
  if (pdl) {
    pdlWait();
    pdlRelease();
  }
  unsigned acc = 0;
  for (size_t k = t + (size_t)R * stride; k < n16; k += stride) {
    const uint4 v = __ldg(w + k);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
#pragma unroll
  for (int i = 0; i < R; i++) acc ^= r[i].x ^ r[i].y ^ r[i].z ^ r[i].w;
  float s = (float)(acc & 1u) * 1e-30f;                            // keeps the loads; the sum below stays the input's
  for (int i = threadIdx.x; i < nin; i += blockDim.x) s += in[i];  // written by the previous kernel: no __ldg
  __shared__ float red[8];
  for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = s;
  __syncthreads();
  s = 0.f;
  for (int i = 0; i < (int)(blockDim.x >> 5); i++) s += red[i];
  for (size_t i = t; i < (size_t)nout; i += stride) out[i] = s * 1e-6f + (float)(i & 7);
}

struct Phase {
  const char* name;
  double bytes;  // weight (and state) bytes it reads
  int in, out;   // input and output row lengths
};

struct Shape {
  const char* name;
  int D, L, V;
};

static int smCount() {
  int dev = 0, n = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

typedef void (*KernelFn)(const uint4*, size_t, const float*, int, float*, int, int);
static KernelFn kernelFor(int R) {
  switch (R) {
    case 1:
      return phaseKernel<1>;
    case 2:
      return phaseKernel<2>;
    case 4:
      return phaseKernel<4>;
    case 8:
      return phaseKernel<8>;
    default:
      return phaseKernel<16>;
  }
}

static void launchPhase(const Phase& p, const uint4* w, const float* in, float* out, bool pdl, unsigned blocks, cudaStream_t s) {
  const size_t n16 = (size_t)(p.bytes / 16);
  const double perThread = (double)n16 / ((double)blocks * 256);
  int R = 1;
  while (R < 16 && R < perThread) R *= 2;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(256);
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  CK(cudaLaunchKernelEx(&cfg, kernelFor(R), w, n16, in, p.in, out, p.out, pdl ? 1 : 0));
}

int main(int argc, char** argv) {
  const std::string shapeName = argc > 1 ? argv[1] : "mamba-2.8b", recipe = argc > 2 ? argv[2] : "w4a16";
  const Shape shapes[] = {{"mamba-130m", 768, 24, 50280}, {"mamba-1.4b", 2048, 48, 50280}, {"mamba-2.8b", 2560, 64, 50280}};
  const Shape* sh = nullptr;
  for (const Shape& x : shapes)
    if (shapeName == x.name) sh = &x;
  const double wb = recipe == "fp16" ? 2.0 : recipe == "w8a8" ? 1.0 : recipe == "w4a16" ? 0.5 : 0.0;
  if (!sh || wb == 0.0) {
    fprintf(stderr, "chain_floor: expected a shape (mamba-130m, mamba-1.4b, mamba-2.8b) and a recipe (fp16, w8a8, w4a16), found %s %s\n",
            shapeName.c_str(), recipe.c_str());
    return 1;
  }
  const int D = sh->D, E = 2 * D, N = 16, R = (D + 15) / 16, L = sh->L;
  // bytes as the runner reads them at batch 1: weights (+ per-channel or per-group scales), the
  // conv and SSM states read and written, dt_proj in fp16
  auto mat = [&](double n, double k) { return n * k * wb + (recipe == "w4a16" ? n * (k / 128) * 4 : recipe == "w8a8" ? n * 4 : 0); };
  const Phase norm{"norm", D * 4.0, D, D};
  const Phase inProj{"in_proj+conv", mat(2 * E, D) + E * 4.0 * 2 * 4, D, 2 * E};
  const Phase xProj{"x_proj", mat(R + 2 * N, E), E, R + 2 * N};
  const Phase scan{"scan", E * (double)R * 2 + E * N * 4.0 * 3, R + 2 * N, E};
  const Phase outProj{"out_proj", mat(D, E), E, D};
  const Phase head{"lm_head", (double)sh->V * D * 2, D, 64};
  const Phase merged{"layer", norm.bytes + inProj.bytes + xProj.bytes + scan.bytes + outProj.bytes, D, D};
  const Phase xScan{"x_proj+scan", xProj.bytes + scan.bytes, E, E};

  struct Config {
    const char* name;
    std::vector<Phase> phases;
    bool pdl;
  };
  const std::vector<Config> configs = {
      {"1 kernel per layer (the bytes alone)", {merged}, true},
      {"3 per layer: in_proj, x_proj+scan, out_proj", {inProj, xScan, outProj}, true},
      {"4 per layer: in_proj, x_proj, scan, out_proj (the runner at batch 1, fp16 and w4a16)", {inProj, xProj, scan, outProj}, true},
      {"5 per layer: norm, in_proj, x_proj, scan, out_proj", {norm, inProj, xProj, scan, outProj}, true},
      {"4 per layer, no dependent launch (as on sm_87)", {inProj, xProj, scan, outProj}, false},
      {"5 per layer, no dependent launch", {norm, inProj, xProj, scan, outProj}, false},
  };

  const int sms = smCount();
  const unsigned blocks = 4u * sms;  // the whole grid resident, as the runner sizes its GEMVs
  // every layer's phases read their own bytes, as a model's do (a reuse would be served by the L2)
  auto align = [](double b) { return ((size_t)b + 255) / 256 * 256; };
  size_t total = 0;
  for (const Config& c : configs) {
    size_t t = align(head.bytes);
    for (const Phase& p : c.phases) t += align(p.bytes) * L;
    total = std::max(total, t);
  }
  char* wbuf = nullptr;
  CK(cudaMalloc(&wbuf, total));
  CK(cudaMemset(wbuf, 1, total));
  float* rows = nullptr;
  const int rowMax = 4 * E + 64;
  CK(cudaMalloc(&rows, 2 * rowMax * sizeof(float)));
  CK(cudaMemset(rows, 0, 2 * rowMax * sizeof(float)));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

  // device-to-device copy bandwidth (bytes read + written), as the runner's benchmark measures it
  double bw = 0;
  {
    const size_t n = (size_t)1 << 30;
    char *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ts;
    for (int i = 0; i < 13; i++) {
      CK(cudaEventRecord(e0, s));
      CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (i >= 3) ts.push_back(ms);
    }
    std::sort(ts.begin(), ts.end());
    bw = 2.0 * n / (ts[ts.size() / 2] / 1e3);
    CK(cudaFree(a));
    CK(cudaFree(b));
  }

  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf(
      "{\n \"tool\": \"scripts/gpu/chain_floor.cu\",\n \"device\": \"%s\",\n \"multiprocessors\": %d,\n \"shape\": \"%s\",\n \"recipe\": "
      "\"%s\",\n",
      prop.name, sms, sh->name, recipe.c_str());
  printf(" \"copyBandwidthTBs\": %.3f,\n \"blocksPerKernel\": %u,\n \"configs\": [\n", bw / 1e12, blocks);
  bool first = true;
  for (size_t ci = 0; ci < configs.size(); ci++) {
    const Config& c = configs[ci];
    if (c.pdl && prop.major < 9) continue;
    double bytes = head.bytes;
    for (const Phase& p : c.phases) bytes += p.bytes * L;
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    int k = 0;
    size_t off = 0;
    for (int l = 0; l < L; l++)
      for (size_t pi = 0; pi < c.phases.size(); pi++, k++) {
        launchPhase(c.phases[pi], (const uint4*)(wbuf + off), rows + (k & 1) * rowMax, rows + ((k + 1) & 1) * rowMax, c.pdl, blocks, s);
        off += align(c.phases[pi].bytes);
      }
    launchPhase(head, (const uint4*)(wbuf + off), rows + (k & 1) * rowMax, rows + ((k + 1) & 1) * rowMax, c.pdl, blocks, s);
    CK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t ge;
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 5; i++) CK(cudaGraphLaunch(ge, s));
    std::vector<float> ts;
    for (int round = 0; round < 7; round++) {
      const int iters = 30;
      CK(cudaEventRecord(e0, s));
      for (int i = 0; i < iters; i++) CK(cudaGraphLaunch(ge, s));
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      ts.push_back(ms / iters);
    }
    std::sort(ts.begin(), ts.end());
    const double ms = ts[ts.size() / 2], floorMs = bytes / bw * 1e3;
    const double kernels = (double)c.phases.size() * L + 1;
    printf(
        "%s  {\"config\": \"%s\", \"dependentLaunch\": %s, \"kernelsPerStep\": %.0f, \"bytes\": %.0f, \"msPerStep\": %.4f, \"floorMs\": "
        "%.4f, "
        "\"ratioToFloor\": %.3f, \"usPerLayer\": %.2f}",
        first ? "" : ",\n", c.name, c.pdl ? "true" : "false", kernels, bytes, ms, floorMs, ms / floorMs,
        (ms - head.bytes / bw * 1e3) * 1e3 / L);
    first = false;
    fprintf(stderr, "%-80s %7.3f ms (floor %.3f, x%.2f), %.2f us per layer\n", c.name, ms, floorMs, ms / floorMs,
            (ms - head.bytes / bw * 1e3) * 1e3 / L);
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
  }
  printf("\n ]\n}\n");
  return 0;
}
