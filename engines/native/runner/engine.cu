// The native runner: an engine package's weights on the GPU, prefill and batched decode with the
// kernels of kernels/, per-sequence states in device slots, and the decode step replayed from a CUDA
// graph captured once per batch-size bucket. Reads weights.safetensors in the layout `mamba-edge
// build` writes (see engines/build.ts: fp16 matrices `layers.<i>.*`, quantized ones `l<i>.*` with
// their scales) and the activation scales of manifest.json's quant.scales.
#include <cstdio>
#include <memory>
#include <mutex>
#include "mamba_edge.h"
#include "engine.h"

namespace me {

static std::mutex gErrMu;
static std::string gErr;
void setError(const std::string& s) {
  std::lock_guard<std::mutex> g(gErrMu);
  gErr = s;
}

// ---- loading -------------------------------------------------------------------------------------
// 4-bit weights `q` (N, K/group, group/2) with their scales: packed into the tensor-core tile order
// where the GEMV can use it
static void loadI4(LinearW& W, Tensors& t, Engine& e, const std::string& q, const std::string& scaleName) {
  const int N = W.N, K = W.K;
  const Json* j = t.find(q);
  const Json* shape = j->get("shape");
  if (!shape || shape->arr.size() != 3) throw Error(t.path + ": tensor " + q + ": expected shape (out, blocks, group/2)");
  W.type = W_I4;
  W.group = (int)shape->arr[2].num * 2;
  const int blocks = (int)shape->arr[1].num;
  if (W.group % 32 != 0 || (long long)blocks * W.group != K)
    throw Error(t.path + ": tensor " + q + ": 4-bit groups of " + std::to_string(W.group) + " over " + std::to_string(K) +
                " inputs are not supported");
  W.w = t.load(q, "U8", (size_t)N * K / 2);
  W.scale = t.f32(scaleName, (size_t)N * blocks);
  if (i4Packable(W)) {  // tensor-core tile order; the row-major copy is freed
    void* packed = e.alloc<char>((size_t)N * K / 2);
    CK(packI4(W, packed, 0));
    CK(cudaDeviceSynchronize());
    e.release(const_cast<void*>(W.w));
    W.w = packed, W.packed = 1;
    if (!e.gemvWs) {
      e.gemvWs = e.alloc<float>(GEMV_WS_FLOATS);
      e.gemvCount = e.alloc<unsigned>(GEMV_WS_TILES);
      CK(cudaMemset(e.gemvCount, 0, GEMV_WS_TILES * sizeof(unsigned)));
    }
    W.ws = e.gemvWs, W.wsCount = e.gemvCount;
  }
}

static LinearW loadLinear(Tensors& t, Engine& e, int l, const char* what, int N, int K) {
  LinearW W{};
  W.N = N, W.K = K;
  const std::string fp = "layers." + std::to_string(l) + "." + what + ".weight";
  const std::string q = "l" + std::to_string(l) + "." + what + ".weight";
  if (t.find(fp)) {
    W.type = W_F16;
    W.w = t.load(fp, "F16", (size_t)N * K);
  } else if (const Json* j = t.find(q)) {
    const Json* dt = j->get("dtype");
    if (dt && dt->str == "I8") {
      W.type = W_I8;
      W.w = t.load(q, "I8", (size_t)N * K);
      W.scale = t.f32(q + "_scale", N);
    } else {
      loadI4(W, t, e, q, q + "_scale");
    }
  } else {
    throw Error(t.path + ": tensor " + fp + " is missing");
  }
  W.bias = t.f32opt("layers." + std::to_string(l) + "." + what + ".bias", N);
  return W;
}

void parseConfig(Config& c, const Json& j, const std::string& where) {
  const Json* cfg = &j;
  const Json* arch = cfg->get("arch");
  c.mamba2 = arch && arch->str == "mamba2";
  c.vocab = (int)num(*cfg, "vocabSize", 0), c.D = (int)num(*cfg, "dModel", 0), c.nLayer = (int)num(*cfg, "nLayer", 0);
  c.E = (int)num(*cfg, "dInner", 0), c.N = (int)num(*cfg, "dState", 0), c.K = (int)num(*cfg, "dConv", 4), c.R = (int)num(*cfg, "dtRank", 0);
  c.H = (int)num(*cfg, "nHeads", 0), c.P = (int)num(*cfg, "headDim", 0), c.G = (int)num(*cfg, "nGroups", 0),
  c.gs = (int)num(*cfg, "gatedNormGroup", 0);
  c.eps = (float)num(*cfg, "normEps", 1e-5);
  const Json* nbg = cfg->get("normBeforeGate");
  c.normBeforeGate = nbg && nbg->b;
  const Json* tied = cfg->get("tiedEmbeddings");
  c.tied = !tied || tied->b;
  if (const Json* lim = cfg->get("dtLimit"); lim && lim->arr.size() == 2) {
    c.dtLo = lim->arr[0].isNum() ? (float)lim->arr[0].num : 0.f;
    c.dtHi = lim->arr[1].isNum() ? (float)lim->arr[1].num : INFINITY;
  }
  if (c.vocab <= 0 || c.D <= 0 || c.nLayer <= 0 || c.E <= 0 || c.N <= 0) throw Error(where + ": config lacks model dimensions");
  if (c.D % 32 || c.E % 32) throw Error("dModel and dInner must be multiples of 32 for the cuda backend");
  if (c.K < 2 || c.K > 8) throw Error("conv width " + std::to_string(c.K) + " is not supported (2..8)");
  if (c.mamba2 && (c.N % 32 || c.N > 256))
    throw Error("Mamba-2 state size " + std::to_string(c.N) + " is not supported (a multiple of 32, at most 256)");
  if (!c.mamba2 && c.N > 64) throw Error("Mamba-1 state size " + std::to_string(c.N) + " is not supported (at most 64)");
  if ((long long)c.E * 4 > 200 * 1024) throw Error("dInner too large for the row kernels");
}

void loadLayer(Engine& e, Tensors& t, int l, int fileLayer, const Json* scales) {
  const Config& c = e.c;
  auto scale = [&](const std::string& k) -> float {
    const Json* v = scales ? scales->get(k) : nullptr;
    return v && v->isNum() ? (float)v->num : 0.f;
  };
  Layer& L = e.layers[l];
  const std::string p = "layers." + std::to_string(fileLayer) + ".", q = "l" + std::to_string(fileLayer) + ".";
  const int C = c.convC();
  L.norm = t.f32(p + "norm", c.D);
  L.inProj = loadLinear(t, e, fileLayer, "in_proj", c.projN(), c.D);
  L.outProj = loadLinear(t, e, fileLayer, "out_proj", c.D, c.E);
  L.convW = t.f32(p + "conv.weight", (size_t)C * c.K);
  L.convB = t.f32opt(p + "conv.bias", C);
  L.D = t.f32(p + "D", c.mamba2 ? c.H : c.E);
  L.sIn = scale(q + "in_proj"), L.sOut = scale(q + "out_proj"), L.sXproj = scale(q + "x_proj");
  L.sB = scale(q + "B"), L.sC = scale(q + "C");
  std::vector<float> convQ(C, 0.f);
  const float sX = scale(q + "x");
  for (int i = 0; i < c.E; i++) convQ[i] = sX;
  if (!c.mamba2) {
    L.A = t.f32(p + "A", (size_t)c.E * c.N);
    L.xProj = loadLinear(t, e, fileLayer, "x_proj", c.R + 2 * c.N, c.E);
    L.dtW = (const __half*)t.load(p + "dt_proj.weight", "F16", (size_t)c.E * c.R);
    L.dtB = t.f32(p + "dt_proj.bias", c.E);
  } else {
    L.A = t.f32(p + "A", c.H);
    L.dtBias = t.f32(p + "dt_bias", c.H);
    L.gatedNorm = t.f32opt(p + "gated_norm", c.E);
    if (t.find(q + "x.scale")) {  // Quamba2 sort-and-cluster: one scale per channel
      std::vector<float> h(c.E);
      const float* d = t.f32(q + "x.scale", c.E);
      CK(cudaMemcpy(h.data(), d, c.E * 4, cudaMemcpyDeviceToHost));
      std::copy(h.begin(), h.end(), convQ.begin());
    }
    const int GN = c.G * c.N;
    for (int which = 0; which < 2; which++) {
      const Json* v = scales ? scales->get(q + (which ? "C" : "B")) : nullptr;
      for (int i = 0; i < GN; i++) {
        float s = 0.f;
        if (v && v->isNum())
          s = (float)v->num;
        else if (v && v->type == Json::Arr && (int)v->arr.size() == c.G)
          s = (float)v->arr[i / c.N].num;
        else if (v)
          throw Error("manifest.json: scales of " + q + (which ? "C" : "B") + " are not one per group");
        convQ[c.E + which * GN + i] = s;
      }
    }
  }
  if (std::any_of(convQ.begin(), convQ.end(), [](float s) { return s > 0; })) {
    L.convQ = e.alloc<float>(C);
    CK(cudaMemcpy(L.convQ, convQ.data(), C * 4, cudaMemcpyHostToDevice));
  }
  if (c.mamba2) L.sB = L.sC = 0;  // applied per conv channel above
}

static void loadEngine(Engine& e, const std::string& dir) {
  Json m;
  try {
    m = Json::parse(readFile(dir + "/manifest.json"));
  } catch (Error&) {
    throw;
  } catch (std::exception& ex) {
    throw Error(dir + "/manifest.json: not valid JSON (" + std::string(ex.what()) + ")");
  }
  const Json* cfg = m.get("config");
  const Json* quant = m.get("quant");
  if (!cfg || !quant) throw Error(dir + "/manifest.json: fields config and quant are required");
  parseConfig(e.c, *cfg, dir + "/manifest.json");
  const Config& c = e.c;
  const Json* rj = quant->get("recipe");
  e.recipe = rj ? rj->str : "";
  e.actInt8 = e.recipe == "w8a8" || e.recipe == "w8a8-naive";
  e.qdqAct = e.recipe == "w4a8";
  e.rotate = e.recipe == "w8a8" || e.recipe == "w4a8";
  if (e.recipe != "fp16" && !e.actInt8 && e.recipe != "w4a8" && e.recipe != "w4a16")
    throw Error("recipe " + e.recipe + " is not supported by the cuda backend");
  const Json* scales = quant->get("scales");
  Tensors t(dir + "/weights.safetensors", &e);
  // the embedding and lm_head: float16 or 4-bit tables (a tied lm_head reads the embedding's)
  const Json* emb = t.find("embedding");
  const bool embI4 = emb && emb->get("dtype") && emb->get("dtype")->str == "U8";
  if (embI4) {
    const Json* shape = emb->get("shape");
    if (!shape || shape->arr.size() != 3) throw Error(t.path + ": tensor embedding: expected shape (vocab, blocks, group/2)");
    e.embGroup = (int)shape->arr[2].num * 2;
    e.embQ = (const uint8_t*)t.load("embedding", "U8", (size_t)c.vocab * c.D / 2);
    e.embScale = t.f32("embedding.scale", (size_t)c.vocab * (c.D / e.embGroup));
  } else {
    e.embedding = (const __half*)t.load("embedding", "F16", (size_t)c.vocab * c.D);
  }
  const std::string head = t.find("lm_head") ? "lm_head" : "embedding";
  const Json* hj = t.find(head);
  e.lmHead.N = c.vocab, e.lmHead.K = c.D;
  if (hj->get("dtype") && hj->get("dtype")->str == "U8") {
    loadI4(e.lmHead, t, e, head, head + ".scale");  // its own copy: packing reorders the bytes
  } else {
    e.lmHead.type = W_F16;
    e.lmHead.w = head == "embedding" ? e.embedding : t.load(head, "F16", (size_t)c.vocab * c.D);
  }
  e.normF = t.f32("norm_f", c.D);
  e.layers.resize(c.nLayer);
  for (int l = 0; l < c.nLayer; l++) loadLayer(e, t, l, l, scales);
}

void allocate(Engine& e) {
  const Config& c = e.c;
  const int R = std::max(e.maxBatch, e.chunk);
  e.rows = R;
  e.hidden = e.alloc<float>((size_t)R * c.D);
  e.normed = e.alloc<float>((size_t)R * c.D);
  e.out = e.alloc<float>((size_t)R * c.D);
  e.proj = e.alloc<float>((size_t)R * c.projN());
  e.xc = e.alloc<float>((size_t)R * c.convC());
  e.dbl = e.alloc<float>((size_t)R * std::max(1, c.R + 2 * c.N));
  e.dtraw = e.alloc<float>((size_t)R * c.E);
  e.y = e.alloc<float>((size_t)R * c.E);
  e.act = e.alloc<float>((size_t)R * c.E);
  e.logits = e.alloc<float>((size_t)R * c.vocab);
  e.normedQ = e.alloc<int8_t>((size_t)R * c.D);
  e.xq = e.alloc<int8_t>((size_t)R * c.E);
  e.actQ = e.alloc<int8_t>((size_t)R * c.E);
  e.dTokens = e.alloc<int>(R);
  e.dSlots = e.alloc<int>(R);
  e.dArg = e.alloc<int>(R);
  e.argScratch = e.alloc<float>((size_t)R * 2 * 64);
  e.ssPart = e.alloc<float>(GEMV_SS_PARTS);
  e.ssPartY = e.alloc<float>(GEMV_SS_PARTS);
  e.states = e.alloc<float>((size_t)(e.nSlots + 1) * c.stateFloats());
  CK(cudaMemset(e.states, 0, (size_t)(e.nSlots + 1) * c.stateFloats() * 4));
  CK(cudaMallocHost(&e.hTokens, R * 4));
  CK(cudaMallocHost(&e.hSlots, R * 4));
}

// ---- forward -------------------------------------------------------------------------------------
// whether a batch-1 in_proj of W takes its RMSNorm from the previous out_proj's partial sums
static bool takesPartialNorm(const LinearW& W) { return W.type != W_I8 && gemvTakesPartialNorm(W); }

void layer(Engine& e, int l, int M, bool decode, int slot) {
  const Config& c = e.c;
  const Layer& L = e.layers[l];
  cudaStream_t s = e.st;
  const int NP = c.projN(), C = c.convC(), c0 = c.mamba2 ? c.E : 0;
  const long long ss = e.slotStride();
  auto lin = [&](const LinearW& W, const void* x, int lda, float xs, float* y, int ldy) {
    return decode ? gemv(W, x, lda, xs, M, y, ldy, nullptr, s) : linear(W, x, lda, xs, M, y, ldy, s);
  };
  float* convBase = e.states + l * c.convPer();
  float* ssmBase = e.states + (long long)c.nLayer * c.convPer() + l * c.ssmPer();

  // 1. residual add + RMSNorm (+ quantize): the block's input. In decode out_proj has already added
  // into hidden. Fused into in_proj at batch 1 where the previous out_proj left the row's sum of
  // squares as partial sums (every block then needs one short sum), and for fp16 weights also
  // without them (each block recomputes the row's norm: that still saves a launch there, while for
  // 4-bit weights it was slower). Not for int8 weights: there every warp would quantize the whole
  // normalized row again. Measurements: docs/cuda-performance.md.
  const bool partialNorm = decode && M == 1 && e.ssParts > 0 && takesPartialNorm(L.inProj);
  const bool fuseNorm = decode && M == 1 && (L.inProj.type == W_F16 || partialNorm);
  if (!fuseNorm)
    CK(addRmsnormQuant(e.hidden, l && !decode ? e.out : nullptr, M, c.D, L.norm, c.eps, e.normed, e.actInt8 ? e.normedQ : nullptr,
                       e.actInt8 || e.qdqAct ? L.sIn : 0.f, s));
  const void* xin = e.actInt8 ? (const void*)e.normedQ : e.normed;

  // 2. in_proj, and the causal conv over its conv channels
  int8_t* xq = e.actInt8 && !c.mamba2 ? e.xq : nullptr;
  if (decode) {
    ConvStep ep{c0, C, c.K, L.convW, L.convB, convBase, ss, e.dSlots, L.convQ, e.xc, C, xq, L.sXproj, c.E};
    NormIn nin{e.hidden, L.norm, c.eps, e.actInt8 || e.qdqAct ? L.sIn : 0.f, partialNorm ? e.ssPart : nullptr, partialNorm ? e.ssParts : 0};
    CK(gemv(L.inProj, fuseNorm ? (const void*)e.hidden : xin, c.D, L.sIn, M, e.proj, NP, &ep, s, fuseNorm ? &nin : nullptr));
  } else {
    CK(linear(L.inProj, xin, c.D, L.sIn, M, e.proj, NP, s));
    CK(conv1dPrefill(e.proj, NP, c0, M, C, c.K, L.convW, L.convB, e.convState(slot, l), L.convQ, e.xc, xq, L.sXproj, s));
  }

  int hm = 1, hb = 0;
  if (e.rotate) hadamardOf(c.E, hm, hb);
  const float outScale = e.actInt8 || e.qdqAct ? L.sOut : 0.f;
  // Mamba-2 at batch 1: the SSD step gates y and writes its partial sums of squares, from which the
  // gated RMSNorm is taken by out_proj (float activations without rotation: fp16, w4a16), where a
  // norm kernel would run between the two, or by the rotation (w8a8, w4a8), in E / hb blocks where
  // the norm kernel is one block. Only a norm over the whole row (one group) with the gate before
  // it fits: the norm is then one scale per row.
  const bool gatedNormFolds =
      c.mamba2 && decode && M == 1 && (!L.gatedNorm || (c.gs == c.E && !c.normBeforeGate && ssdStepParts(c.H, c.P) <= GEMV_SS_PARTS));
  const bool gatedNormInOutProj =
      gatedNormFolds && hb == 0 && outScale == 0.f && !e.actInt8 && (!L.gatedNorm || takesPartialNorm(L.outProj));
  const bool gatedNormInRotation = gatedNormFolds && hm == 1 && hb >= 128 && hb <= 4096 && c.E % hb == 0;
  // how many partial sums of squares of the gated y the SSD step writes (0: none)
  const int yParts = (gatedNormInOutProj || gatedNormInRotation) && L.gatedNorm ? ssdStepParts(c.H, c.P) : 0;
  if (!c.mamba2) {
    // 3. x_proj -> [dt_low | B | C]
    const int W2 = c.R + 2 * c.N;
    CK(lin(L.xProj, xq ? (const void*)xq : e.xc, c.E, L.sXproj, e.dbl, W2));
    // 4. dt_proj + selective scan + gate (+ quantize unless rotated next)
    Scan1 p{c.E, c.N, c.R, e.dbl, W2, nullptr, L.dtW, L.dtB, L.A, L.D, e.xc, e.proj + c.E, NP, L.sB, L.sC, nullptr, nullptr, 0.f};
    if (e.rotate)
      p.y = e.y;
    else if (e.actInt8)
      p.yq = e.actQ, p.outScale = outScale;
    else
      p.y = e.act, p.outScale = outScale;
    if (decode) {
      CK(scan1Step(p, M, ssmBase, ss, e.dSlots, s));
    } else {
      LinearW dtp{W_F16, c.E, c.R, L.dtW, nullptr, 0, nullptr, 0};
      CK(linear(dtp, e.dbl, W2, 0.f, M, e.dtraw, c.E, s));
      p.dtRaw = e.dtraw;
      CK(scan1Prefill(p, M, e.ssmState(slot, l), s));
    }
    if (e.rotate) {
      RowPost rp{c.E, nullptr, 0, 0, 0, 0, nullptr, c.eps, hb, outScale, nullptr, 0, hm};
      CK(rowNormRotateQuant(rp, e.y, M, e.act, e.actInt8 ? e.actQ : nullptr, s));
    }
  } else {
    // 3. SSD (gate applied with the gated norm)
    Ssd p{c.H, c.P, c.N, c.G, e.xc, C, e.proj + c.E + C, NP, L.dtBias, L.A, L.D, c.dtLo, c.dtHi, e.proj, NP, 0, e.y};
    if (gatedNormInOutProj || gatedNormInRotation) {
      p.gateHere = 1;
      if (gatedNormInOutProj) p.y = e.act;  // out_proj's input as it is
      CK(ssdStep(p, M, ssmBase, ss, e.dSlots, s, yParts ? e.ssPartY : nullptr));
      if (gatedNormInRotation) {
        RowPost rp{c.E, nullptr, 0, 0, 0, 0, L.gatedNorm, c.eps, hb, outScale, e.ssPartY, yParts, hm};
        CK(rowNormRotateQuant(rp, e.y, M, e.act, e.actInt8 ? e.actQ : nullptr, s));
      }
    } else {
      if (decode)
        CK(ssdStep(p, M, ssmBase, ss, e.dSlots, s));
      else
        CK(ssdPrefill(p, M, e.ssmState(slot, l), s));
      // 4. gate, gated RMSNorm, Hadamard rotation, quantization
      RowPost rp{c.E, e.proj, NP, 1, c.normBeforeGate, L.gatedNorm ? c.gs : 0, L.gatedNorm, c.eps, hb, outScale, nullptr, 0, hm};
      CK(rowNormRotateQuant(rp, e.y, M, e.act, e.actInt8 ? e.actQ : nullptr, s));
    }
  }
  // 5. out_proj (its output joins the residual in the next norm)
  // (at batch 1, with the partial sums of squares the next in_proj takes its norm from)
  if (decode) {
    const bool yNorm = gatedNormInOutProj && yParts > 0;
    const int parts = M == 1 && l + 1 < c.nLayer && takesPartialNorm(e.layers[l + 1].inProj) ? gemvSumSquaresParts(L.outProj, yNorm) : 0;
    NormIn ynin{e.act, L.gatedNorm, c.eps, 0.f, e.ssPartY, yParts};
    CK(gemv(L.outProj, e.actInt8 ? (const void*)e.actQ : e.act, c.E, L.sOut, M, e.hidden, c.D, nullptr, s, yNorm ? &ynin : nullptr, 1,
            parts ? e.ssPart : nullptr));
    e.ssParts = parts;
  } else {
    CK(lin(L.outProj, e.actInt8 ? (const void*)e.actQ : e.act, c.E, L.sOut, e.out, c.D));
  }
}

// final norm of rows [r0, r0+n) and lm_head into logits (n × vocab)
static void head(Engine& e, int r0, int n, bool decode) {
  const Config& c = e.c;
  // decode: out_proj already added into hidden
  CK(addRmsnormQuant(e.hidden + (size_t)r0 * c.D, decode ? nullptr : e.out + (size_t)r0 * c.D, n, c.D, e.normF, c.eps, e.normed, nullptr,
                     0.f, e.st));
  const LinearW& W = e.lmHead;
  CK(decode ? gemv(W, e.normed, c.D, 0.f, n, e.logits, c.vocab, nullptr, e.st) : linear(W, e.normed, c.D, 0.f, n, e.logits, c.vocab, e.st));
}

static cudaError_t embedRows(Engine& e, const int* tokens, int M) {
  return e.embQ ? embedI4(e.embQ, e.embScale, e.embGroup, e.c.D, tokens, M, e.hidden, e.st)
                : embed(e.embedding, e.c.D, tokens, M, e.hidden, e.st);
}

static void decodeForward(Engine& e, int B) {
  e.ssParts = 0;  // the embedding leaves no partial sums: layer 0 normalizes on its own
  CK(embedRows(e, e.dTokens, B));
  for (int l = 0; l < e.c.nLayer; l++) layer(e, l, B, true, 0);
  head(e, 0, B, true);
  CK(argmax(e.logits, B, e.c.vocab, e.dArg, e.argScratch, e.st));
}

static int bucketOf(const Engine& e, int b) {
  int k = 1;
  while (k < b) k *= 2;
  return std::min(k, e.maxBatch);
}

static cudaGraphExec_t graphFor(Engine& e, int bucket) {
  auto it = e.graphs.find(bucket);
  if (it != e.graphs.end()) return it->second;
  cudaGraph_t g = nullptr;
  CK(cudaStreamBeginCapture(e.st, cudaStreamCaptureModeThreadLocal));
  try {
    decodeForward(e, bucket);
  } catch (...) {
    cudaStreamEndCapture(e.st, &g);
    if (g) cudaGraphDestroy(g);
    throw;
  }
  CK(cudaStreamEndCapture(e.st, &g));
  cudaGraphExec_t x = nullptr;
  cudaError_t err = cudaGraphInstantiate(&x, g, 0);
  cudaGraphDestroy(g);
  CK(err);
  e.graphs[bucket] = x;
  return x;
}

// prefill: chunks of e.chunk rows, the states carried by the kernels themselves
static void prefill(Engine& e, int slot, const int32_t* tokens, int n, int allLogits, float* logits) {
  const Config& c = e.c;
  for (int t0 = 0; t0 < n; t0 += e.chunk) {
    const int T = std::min(e.chunk, n - t0);
    CK(cudaMemcpyAsync(e.dTokens, tokens + t0, T * 4, cudaMemcpyHostToDevice, e.st));
    CK(embedRows(e, e.dTokens, T));
    for (int l = 0; l < c.nLayer; l++) layer(e, l, T, false, slot);
    const bool last = t0 + T == n;
    if (allLogits) {
      head(e, 0, T, false);
      if (logits) CK(cudaMemcpyAsync(logits + (size_t)t0 * c.vocab, e.logits, (size_t)T * c.vocab * 4, cudaMemcpyDeviceToHost, e.st));
    } else if (last) {
      head(e, T - 1, 1, false);
      if (logits) CK(cudaMemcpyAsync(logits, e.logits, (size_t)c.vocab * 4, cudaMemcpyDeviceToHost, e.st));
    }
    CK(cudaStreamSynchronize(e.st));  // tokens' host buffer and dTokens are reused by the next chunk
  }
}

}  // namespace me

using namespace me;

struct me_engine {
  Engine e;
};

static void checkSlot(me_engine* h, int slot) {
  if (!h) throw Error("no engine");
  if (slot < 0 || slot >= h->e.nSlots)
    throw Error("state slot " + std::to_string(slot) + " out of range [0, " + std::to_string(h->e.nSlots) + ")");
}

// median of `iters` CUDA-event timings of work() on stream st, after `warmup` untimed runs; before()
// runs untimed ahead of each. The events are destroyed on every path, errors included.
template <class B, class W>
static float medianMs(cudaStream_t st, int warmup, int iters, B&& before, W&& work) {
  struct Event {
    cudaEvent_t e = nullptr;
    ~Event() {
      if (e) cudaEventDestroy(e);
    }
  } a, z;
  CK(cudaEventCreate(&a.e));
  CK(cudaEventCreate(&z.e));
  std::vector<float> t;
  for (int i = 0; i < warmup + iters; i++) {
    before();
    CK(cudaEventRecord(a.e, st));
    work();
    CK(cudaEventRecord(z.e, st));
    CK(cudaEventSynchronize(z.e));
    float x = 0;
    CK(cudaEventElapsedTime(&x, a.e, z.e));
    if (i >= warmup) t.push_back(x);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

extern "C" {

const char* me_last_error(void) {
  std::lock_guard<std::mutex> g(gErrMu);
  static thread_local std::string copy;
  copy = gErr;
  return copy.c_str();
}

int me_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

me_engine* me_create(const char* dir, int maxBatch, int slots) {
  me_engine* h = nullptr;
  int rc = guard([&] {
    if (!dir) throw Error("no package directory");
    if (maxBatch < 1 || maxBatch > 256) throw Error("max batch must be in [1, 256]");
    if (slots < maxBatch) throw Error("need at least max-batch state slots");
    requireDevice();
    std::unique_ptr<me_engine> p(new me_engine());
    Engine& e = p->e;
    e.maxBatch = maxBatch, e.nSlots = slots;
    CK(cudaStreamCreateWithFlags(&e.st, cudaStreamNonBlocking));
    loadEngine(e, dir);
    allocate(e);
    cudaDeviceProp prop{};
    int dev = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    e.desc = std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + "), " + e.recipe;
    CK(cudaDeviceSynchronize());
    h = p.release();
  });
  return rc ? nullptr : h;
}

void me_destroy(me_engine* h) { delete h; }

const char* me_describe(me_engine* h) { return h ? h->e.desc.c_str() : ""; }
int64_t me_state_floats(me_engine* h) { return h ? h->e.c.stateFloats() : 0; }
int me_vocab(me_engine* h) { return h ? h->e.c.vocab : 0; }
int64_t me_weight_bytes(me_engine* h) { return h ? h->e.weightBytes : 0; }

int me_state_zero(me_engine* h, int slot) {
  return guard([&] {
    checkSlot(h, slot);
    CK(cudaMemsetAsync(h->e.states + slot * h->e.slotStride(), 0, h->e.slotStride() * 4, h->e.st));
    CK(cudaStreamSynchronize(h->e.st));
  });
}

int me_state_save(me_engine* h, int slot, float* out) {
  return guard([&] {
    checkSlot(h, slot);
    CK(cudaMemcpyAsync(out, h->e.states + slot * h->e.slotStride(), h->e.slotStride() * 4, cudaMemcpyDeviceToHost, h->e.st));
    CK(cudaStreamSynchronize(h->e.st));
  });
}

int me_state_load(me_engine* h, int slot, const float* in) {
  return guard([&] {
    checkSlot(h, slot);
    CK(cudaMemcpyAsync(h->e.states + slot * h->e.slotStride(), in, h->e.slotStride() * 4, cudaMemcpyHostToDevice, h->e.st));
    CK(cudaStreamSynchronize(h->e.st));
  });
}

int me_prefill(me_engine* h, int slot, const int32_t* tokens, int n, int allLogits, float* logits) {
  return guard([&] {
    checkSlot(h, slot);
    if (n < 1 || !tokens) throw Error("prefill: no tokens");
    for (int i = 0; i < n; i++)
      if (tokens[i] < 0 || tokens[i] >= h->e.c.vocab) throw Error("token " + std::to_string(tokens[i]) + " is outside the vocabulary");
    prefill(h->e, slot, tokens, n, allLogits, logits);
  });
}

int me_step(me_engine* h, const int32_t* slots, const int32_t* tokens, int b, float* logits) {
  return guard([&] {
    if (!h) throw Error("no engine");
    Engine& e = h->e;
    if (b < 1 || b > e.maxBatch) throw Error("step: batch " + std::to_string(b) + " outside [1, " + std::to_string(e.maxBatch) + "]");
    std::vector<char> seen(e.nSlots, 0);
    for (int i = 0; i < b; i++) {
      checkSlot(h, slots[i]);
      if (seen[slots[i]]++) throw Error("step: slot " + std::to_string(slots[i]) + " appears twice");
      if (tokens[i] < 0 || tokens[i] >= e.c.vocab) throw Error("token " + std::to_string(tokens[i]) + " is outside the vocabulary");
    }
    const int bucket = bucketOf(e, b);
    cudaGraphExec_t g = graphFor(e, bucket);
    for (int i = 0; i < bucket; i++) {
      e.hTokens[i] = i < b ? tokens[i] : 0;
      e.hSlots[i] = i < b ? slots[i] : e.nSlots;  // padding rows update the spare slot
    }
    CK(cudaMemcpyAsync(e.dTokens, e.hTokens, bucket * 4, cudaMemcpyHostToDevice, e.st));
    CK(cudaMemcpyAsync(e.dSlots, e.hSlots, bucket * 4, cudaMemcpyHostToDevice, e.st));
    CK(cudaGraphLaunch(g, e.st));
    if (logits) CK(cudaMemcpyAsync(logits, e.logits, (size_t)b * e.c.vocab * 4, cudaMemcpyDeviceToHost, e.st));
    CK(cudaStreamSynchronize(e.st));
  });
}

int me_bench_step(me_engine* h, int b, int iters, float* ms) {
  return guard([&] {
    if (!h) throw Error("no engine");
    Engine& e = h->e;
    if (b < 1 || b > e.maxBatch || b > e.nSlots || iters < 1) throw Error("bench: bad batch or iterations");
    const int bucket = bucketOf(e, b);
    cudaGraphExec_t g = graphFor(e, bucket);
    for (int i = 0; i < bucket; i++) e.hTokens[i] = (1 + 7919 * i) % e.c.vocab, e.hSlots[i] = i < b ? i : e.nSlots;
    CK(cudaMemcpyAsync(e.dTokens, e.hTokens, bucket * 4, cudaMemcpyHostToDevice, e.st));
    CK(cudaMemcpyAsync(e.dSlots, e.hSlots, bucket * 4, cudaMemcpyHostToDevice, e.st));
    CK(cudaMemcpyAsync(e.dArg, e.hTokens, bucket * 4, cudaMemcpyHostToDevice, e.st));
    *ms = medianMs(
        e.st, 3, iters, [&] { CK(cudaMemcpyAsync(e.dTokens, e.dArg, bucket * 4, cudaMemcpyDeviceToDevice, e.st)); },  // greedy
        [&] { CK(cudaGraphLaunch(g, e.st)); });
  });
}

int me_bench_prefill(me_engine* h, int n, int iters, float* ms) {
  return guard([&] {
    if (!h) throw Error("no engine");
    Engine& e = h->e;
    if (n < 1 || iters < 1) throw Error("bench: bad length or iterations");
    std::vector<int32_t> tok(n);
    for (int i = 0; i < n; i++) tok[i] = (3 + 104729 * i) % e.c.vocab;
    *ms = medianMs(
        e.st, 1, iters, [&] { CK(cudaMemsetAsync(e.states, 0, e.slotStride() * 4, e.st)); },
        [&] { prefill(e, 0, tok.data(), n, 0, nullptr); });
  });
}

}  // extern "C"
