// The builder's calibration on the GPU: one block at a time, loaded from a safetensors file of its
// float tensors (float16 matrices, as an fp16 engine holds them), run by the runner's own prefill
// over each calibration window from a zero state, with the statistics of every quantized input
// gathered on the GPU (kernels/stats.cu): what engines/builder/calibrate.ts collects with
// onnxruntime, for the same names.
#include <memory>
#include "engine.h"
#include "mamba_edge.h"

using namespace me;

namespace {

// one observed tensor: a column range of an activation buffer, and its statistics on the GPU
struct Observed {
  std::string name;
  float* const* buf;  // the Engine's buffer (its address is set by allocate)
  int offset, ld, width;
  bool keeps, xtx;  // per-channel maxima and histogram; XᵀX
  unsigned* amax = nullptr;
  unsigned* chan = nullptr;
  unsigned long long* hist = nullptr;
  double* gram = nullptr;
};

}  // namespace

struct me_calib {
  Engine e;  // its allocations: the buffers and statistics, then the current block's weights
  std::vector<Observed> obs;
  size_t engineAllocs = 0;  // e.allocs before any block's weights
  int bins = 0, hessians = 0, loaded = 0;
};

static void observe(me_calib& k, const char* name, float* const* buf, int offset, int ld, int width, bool keeps, bool xtx) {
  Observed o{name, buf, offset, ld, width, keeps, xtx && k.hessians};
  o.amax = k.e.alloc<unsigned>(1);
  if (keeps) o.chan = k.e.alloc<unsigned>(width), o.hist = k.e.alloc<unsigned long long>(k.bins);
  if (o.xtx) o.gram = k.e.alloc<double>((size_t)width * width);
  k.obs.push_back(o);
}

static void zeroStats(me_calib& k) {
  for (Observed& o : k.obs) {
    CK(cudaMemsetAsync(o.amax, 0, 4, k.e.st));
    if (o.chan) CK(cudaMemsetAsync(o.chan, 0, (size_t)o.width * 4, k.e.st));
    if (o.hist) CK(cudaMemsetAsync(o.hist, 0, (size_t)k.bins * 8, k.e.st));
    if (o.gram) CK(cudaMemsetAsync(o.gram, 0, (size_t)o.width * o.width * 8, k.e.st));
  }
}

extern "C" {

me_calib* me_calib_create(const char* configJson, int rotate, int hessians, int bins) {
  me_calib* h = nullptr;
  int rc = guard([&] {
    if (!configJson) throw Error("calibration: no config");
    if (bins < kStatSharedBins)
      throw Error("calibration: histogram of " + std::to_string(bins) + " bins, expected at least " + std::to_string(kStatSharedBins));
    requireDevice();
    std::unique_ptr<me_calib> p(new me_calib());
    Engine& e = p->e;
    Json cfg;
    try {
      cfg = Json::parse(configJson);
    } catch (std::exception& ex) {
      throw Error(std::string("calibration config: not valid JSON (") + ex.what() + ")");
    }
    parseConfig(e.c, cfg, "calibration config");
    Config& c = e.c;
    c.nLayer = 1, c.vocab = 1;  // one block's states and no head
    e.recipe = "fp16", e.rotate = rotate != 0;
    e.maxBatch = 1, e.nSlots = 1;
    p->bins = bins, p->hessians = hessians != 0;
    CK(cudaStreamCreateWithFlags(&e.st, cudaStreamNonBlocking));
    allocate(e);
    e.layers.resize(1);
    // what calibrate.ts observes, by the names of the block graph (without the block's prefix)
    me_calib& k = *p;
    observe(k, "in_proj", &e.normed, 0, c.D, c.D, false, true);
    if (!c.mamba2) {
      observe(k, "x", &e.xc, 0, c.E, c.E, true, false);
      observe(k, "x_proj", &e.xc, 0, c.E, c.E, false, true);
      observe(k, "B", &e.dbl, c.R, c.R + 2 * c.N, c.N, true, false);
      observe(k, "C", &e.dbl, c.R + c.N, c.R + 2 * c.N, c.N, true, false);
    } else {
      const int GN = c.G * c.N;
      observe(k, "x", &e.xc, 0, c.convC(), c.E, true, false);
      observe(k, "B", &e.xc, c.E, c.convC(), GN, true, false);
      observe(k, "C", &e.xc, c.E + GN, c.convC(), GN, true, false);
    }
    observe(k, "out_proj", &e.act, 0, c.E, c.E, true, true);
    p->engineAllocs = e.allocs.size();
    CK(cudaDeviceSynchronize());
    h = p.release();
  });
  return rc ? nullptr : h;
}

void me_calib_destroy(me_calib* h) { delete h; }

int me_calib_block(me_calib* h, const char* path, int layer) {
  return guard([&] {
    if (!h || !path) throw Error("calibration: no block");
    Engine& e = h->e;
    h->loaded = 0;  // until this block is whole
    CK(cudaStreamSynchronize(e.st));
    // the previous block's weights go
    while (e.allocs.size() > h->engineAllocs) e.release(e.allocs.back());
    e.weightBytes = 0;
    e.layers.assign(1, Layer{});
    Tensors t(path, &e);
    loadLayer(e, t, 0, layer, nullptr);
    zeroStats(*h);
    h->loaded = 1;
  });
}

int me_calib_run(me_calib* h, const float* hidden, int rows, float* out, int collect) {
  return guard([&] {
    if (!h || !h->loaded) throw Error("calibration: no block loaded");
    if (!hidden || !out || rows < 1) throw Error("calibration: no rows");
    Engine& e = h->e;
    const Config& c = e.c;
    CK(cudaMemsetAsync(e.convState(0, 0), 0, c.convPer() * 4, e.st));
    CK(cudaMemsetAsync(e.ssmState(0, 0), 0, c.ssmPer() * 4, e.st));
    for (int r0 = 0; r0 < rows; r0 += e.chunk) {
      const int T = std::min(e.chunk, rows - r0);
      CK(cudaMemcpyAsync(e.hidden, hidden + (size_t)r0 * c.D, (size_t)T * c.D * 4, cudaMemcpyHostToDevice, e.st));
      layer(e, 0, T, false, 0);
      if (collect)
        for (const Observed& o : h->obs) {
          const float* x = *o.buf + o.offset;
          CK(activationStats(x, o.ld, T, o.width, o.amax, o.chan, o.hist, h->bins, e.st));
          if (o.gram) CK(gramAdd(x, o.ld, T, o.width, o.gram, e.st));
        }
      // the residual: hidden += out (the norm's output is not needed)
      CK(addRmsnormQuant(e.hidden, e.out, T, c.D, e.layers[0].norm, c.eps, e.normed, nullptr, 0.f, e.st));
      CK(cudaMemcpyAsync(out + (size_t)r0 * c.D, e.hidden, (size_t)T * c.D * 4, cudaMemcpyDeviceToHost, e.st));
      CK(cudaStreamSynchronize(e.st));
    }
  });
}

int me_calib_observed(me_calib* h, int i, char* name, int nameSize, int* width, int* keeps, int* xtx) {
  return guard([&] {
    if (!h || i < 0 || i >= (int)h->obs.size()) throw Error("calibration: no observed tensor " + std::to_string(i));
    const Observed& o = h->obs[i];
    if (!name || nameSize <= (int)o.name.size()) throw Error("calibration: name buffer too small");
    std::memcpy(name, o.name.c_str(), o.name.size() + 1);
    *width = o.width, *keeps = o.keeps, *xtx = o.xtx;
  });
}

int me_calib_count(me_calib* h) { return h ? (int)h->obs.size() : 0; }

int me_calib_stats(me_calib* h, int i, float* absmax, float* channelAbsmax, double* hist, double* xtx) {
  return guard([&] {
    if (!h || i < 0 || i >= (int)h->obs.size()) throw Error("calibration: no observed tensor " + std::to_string(i));
    const Observed& o = h->obs[i];
    CK(cudaStreamSynchronize(h->e.st));
    CK(cudaMemcpy(absmax, o.amax, 4, cudaMemcpyDeviceToHost));  // the bits of a non-negative float
    if (channelAbsmax && o.chan) CK(cudaMemcpy(channelAbsmax, o.chan, (size_t)o.width * 4, cudaMemcpyDeviceToHost));
    if (hist && o.hist) {
      std::vector<unsigned long long> n(h->bins);
      CK(cudaMemcpy(n.data(), o.hist, (size_t)h->bins * 8, cudaMemcpyDeviceToHost));
      for (int b = 0; b < h->bins; b++) hist[b] = (double)n[b];
    }
    if (xtx && o.gram) {
      const int n = o.width;
      CK(cudaMemcpy(xtx, o.gram, (size_t)n * n * 8, cudaMemcpyDeviceToHost));
      for (int r = 0; r < n; r++)
        for (int col = r + 1; col < n; col++) xtx[(size_t)r * n + col] = xtx[(size_t)col * n + r];
    }
  });
}

}  // extern "C"
