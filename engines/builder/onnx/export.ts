// Builds the onnxruntime graphs of an engine: `step` (a batch of B sequences, one token each) and
// `prefill` (one sequence, T tokens, an ONNX Scan carrying the SSM state over time). States are
// explicit inputs and outputs: the SSM state with the layout of the reference's SequenceState, the
// conv state time-major (B, d_conv-1, channels), the transpose of the reference's, which the ort
// backend converts when it gathers and scatters states. Linear layers are emitted by a recipe-specific `LinearEmitter`.
// Each graph comes in two forms: plain ONNX operators, and `fused`, where each layer's SSM state
// update (a step; a scan over the prompt in prefill) and the step's conv are single operators of our
// own domain (OPS_DOMAIN, engines/ort-ops), which onnxruntime runs only where that library is registered.
import type { ModelConfig } from "../../model/config.js";
import { graphSsmShape, transpose } from "../../model/state.js";
import type { Mamba1Layer, Mamba2Layer, Weights } from "../../model/weights.js";
import { DT, Graph } from "./graph.js";
import type { WeightFile } from "./weight-file.js";

/** How a recipe stores and applies its big matrices. */
export interface Emitter {
  /**
   * y = x·Wᵀ + b for x of shape (rows, in) and W (out, in); returns y's name. `form.fusedStep`: the
   * graph is the fused decode step (a few rows; the operators of OPS_DOMAIN may be used).
   */
  linear(
    g: Graph,
    x: string,
    name: string,
    W: Float32Array,
    bias: Float32Array | null,
    outDim: number,
    inDim: number,
    form?: LinearForm,
  ): string;
  /** rows of the table W (rows, cols) picked by ids, as float32 */
  gather(g: Graph, ids: string, name: string, W: Float32Array, rows: number, cols: number): string;
  /**
   * Sees an SSM input (`l<i>.x`, `l<i>.B`, `l<i>.C`, rows × width) and returns what the rest of the
   * layer uses: the value itself, or a quantized version of it.
   */
  ssmInput?(g: Graph, name: string, value: string, width: number): string;
}

export interface LinearForm {
  fusedStep: boolean;
}

interface Ctx {
  g: Graph;
  c: ModelConfig;
  file: WeightFile;
  em: Emitter;
  mode: "step" | "prefill";
  fused: boolean;
}

/** The ONNX domain of the fused operators (engines/ort-ops). */
export const OPS_DOMAIN = "ai.mamba_edge";
export const OPS_DOMAIN_VERSION = 1;

const f32 = (ctx: Ctx, name: string, a: Float32Array, dims: number[]) => ctx.g.external(name, ctx.file.add(name, a), dims, DT.FLOAT);

/** The recipe's linear layers, told which graph they go into. */
function linearOf(ctx: Ctx): Emitter["linear"] {
  const form: LinearForm = { fusedStep: ctx.fused && ctx.mode === "step" };
  return (g, x, name, W, bias, outDim, inDim) => ctx.em.linear(g, x, name, W, bias, outDim, inDim, form);
}

export function silu(g: Graph, x: string): string {
  return g.o("Mul", [x, g.o("Sigmoid", [x])]);
}

// softplus with PyTorch's threshold (x above 20 passes through) as max(log(1 + exp(min(x, 20))), x).
// Not the Softplus operator: onnxruntime fuses it into the Gemm before it (dt_proj), and that fused
// activation runs one element at a time (~17 ns each, 71 µs per layer at batch 8 on the Mamba-1 demo),
// several times slower than these five vectorized operators (Mamba-1 decode at batch 8: 2.24 ms per
// step, was 2.5).
function softplus(g: Graph, x: string): string {
  const e = g.o("Exp", [g.o("Min", [x, g.floats([20], [])])]);
  return g.o("Max", [g.o("Log", [g.o("Add", [e, g.floats([1], [])])]), x]);
}

/** x / sqrt(mean(x², last axis) + eps) * w */
export function rmsNorm(g: Graph, x: string, w: string, eps: string): string {
  const ms = g.o("ReduceMean", [g.o("Mul", [x, x]), g.ints([-1])], { keepdims: 1 });
  return g.o("Mul", [g.o("Div", [x, g.o("Sqrt", [g.o("Add", [ms, eps])])]), w]);
}

export interface StateIO {
  conv: string[]; // per layer
  ssm: string[];
}

/** Adds one graph (step or prefill) to `g`; `fused`: with the fused operators of OPS_DOMAIN. */
export function buildGraph(
  g: Graph,
  c: ModelConfig,
  w: Weights<Mamba1Layer> | Weights<Mamba2Layer>,
  file: WeightFile,
  em: Emitter,
  mode: "step" | "prefill",
  opts: { fused?: boolean } = {},
): void {
  const fused = opts.fused ?? false;
  const ctx: Ctx = { g, c, file, em, mode, fused };
  const linear = linearOf(ctx);
  const rows: number | string = mode === "step" ? "batch" : "tokens";
  const tokens = g.input("tokens", DT.INT64, [rows]);
  const eps = g.floats([c.normEps], []);
  let hidden = em.gather(g, tokens, "embedding", w.embedding, c.vocabSize, c.dModel); // (rows, dModel)

  for (let l = 0; l < c.nLayer; l++) hidden = block(ctx, l, w.layers[l], hidden, eps);

  const normF = f32(ctx, "norm_f", w.normF, [c.dModel]);
  if (mode === "step") {
    const h = rmsNorm(g, hidden, normF, eps);
    g.output(linear(g, h, "lm_head", w.lmHead, null, c.vocabSize, c.dModel), "logits", DT.FLOAT, ["batch", c.vocabSize]);
  } else {
    // Two heads over the same hidden states; onnxruntime computes only the outputs asked for.
    const h = rmsNorm(g, hidden, normF, eps);
    g.output(linear(g, h, "lm_head", w.lmHead, null, c.vocabSize, c.dModel), "logits", DT.FLOAT, ["tokens", c.vocabSize]);
    const lastRow = g.o("Slice", [hidden, g.ints([-1]), g.ints([2 ** 62]), g.ints([0])]);
    const hl = rmsNorm(g, lastRow, normF, eps);
    g.output(linear(g, hl, "lm_head", w.lmHead, null, c.vocabSize, c.dModel), "last_logits", DT.FLOAT, [1, c.vocabSize]);
  }
}

/** Block l (RMSNorm, mixer, residual add) over `hidden`, its states as the graph's inputs and outputs conv_l / ssm_l. */
function block(ctx: Ctx, l: number, L: Mamba1Layer | Mamba2Layer, hidden: string, eps: string): string {
  const { g, c, mode } = ctx;
  const B: number | string = mode === "step" ? "batch" : 1;
  const convC = c.arch === "mamba1" ? c.dInner : c.dInner + 2 * c.nGroups * c.dState;
  const ssmShape = graphSsmShape(c);
  const conv = g.input(`conv_${l}`, DT.FLOAT, [B, c.dConv - 1, convC]);
  const ssm = g.input(`ssm_${l}`, DT.FLOAT, [B, ...ssmShape]);
  const u = rmsNorm(g, hidden, f32(ctx, `l${l}.norm`, L.norm, [c.dModel]), eps);
  const [out, convOut, ssmOut] =
    c.arch === "mamba1" ? mamba1(ctx, l, L as Mamba1Layer, u, conv, ssm) : mamba2(ctx, l, L as Mamba2Layer, u, conv, ssm);
  g.output(convOut, `conv_${l}_out`, DT.FLOAT, [B, c.dConv - 1, convC]);
  g.output(ssmOut, `ssm_${l}_out`, DT.FLOAT, [B, ...ssmShape]);
  return g.o("Add", [hidden, out]);
}

/**
 * Block l alone as a prefill graph: `hidden` (tokens, dModel), the residual stream before it, to
 * `hidden_out` after it (the builder's calibration runs the model one block at a time).
 */
export function buildBlockGraph(g: Graph, c: ModelConfig, l: number, L: Mamba1Layer | Mamba2Layer, file: WeightFile, em: Emitter): void {
  const ctx: Ctx = { g, c, file, em, mode: "prefill", fused: false };
  const hidden = g.input("hidden", DT.FLOAT, ["tokens", c.dModel]);
  g.output(block(ctx, l, L, hidden, g.floats([c.normEps], [])), "hidden_out", DT.FLOAT, ["tokens", c.dModel]);
}

/**
 * Causal depthwise conv of `x` (rows, C) continuing `state` (B, K-1, C); returns silu(conv) as
 * (rows, C) and the new state. The state is time-major, so appending the new inputs and dropping
 * the oldest are whole-row copies (channel-major, the per-step Slice and Concat moved 3-float runs
 * and cost more than the conv itself).
 */
function causalConv(
  ctx: Ctx,
  l: number,
  x: string,
  state: string,
  C: number,
  W: Float32Array,
  bias: Float32Array | null,
): [string, string] {
  const { g, c } = ctx;
  const K = c.dConv;
  const wName = f32(ctx, `l${l}.conv_w`, W, [C, K]);
  if (ctx.fused && ctx.mode === "step") {
    const wT = g.o("Transpose", [wName], { perm: [1, 0] }); // (K, C), folded when the session loads
    const b = bias ? f32(ctx, `l${l}.conv_b`, bias, [C]) : g.floats(new Float32Array(C));
    const [y, newState] = g.op("ConvStep", [x, state, wT, b], {}, 2, OPS_DOMAIN);
    return [y, newState];
  }
  let y: string;
  let window: string;
  if (ctx.mode === "step") {
    window = g.o("Concat", [state, g.o("Unsqueeze", [x, g.ints([1])])], { axis: 1 }); // (B, K, C)
    const wT = g.o("Transpose", [wName], { perm: [1, 0] }); // (K, C), folded when the session loads
    y = g.o("ReduceSum", [g.o("Mul", [window, wT]), g.ints([1])], { keepdims: 0 }); // (B, C)
  } else {
    window = g.o("Concat", [state, g.o("Unsqueeze", [x, g.ints([0])])], { axis: 1 }); // (1, K-1+T, C)
    const conv = depthwiseConv(g, window, wName, C, K); // (1, C, T)
    y = g.o("Transpose", [g.o("Squeeze", [conv, g.ints([0])])], { perm: [1, 0] }); // (T, C)
  }
  if (bias) y = g.o("Add", [y, f32(ctx, `l${l}.conv_b`, bias, [C])]);
  const newState = g.o("Slice", [window, g.ints([-(K - 1)]), g.ints([2 ** 62]), g.ints([1])]);
  return [silu(g, y), newState];
}

/** The causal conv over a window (B, K-1+T, C) of the state's inputs and the new ones, weights w (C, K): (B, C, T). */
export function depthwiseConv(g: Graph, window: string, w: string, C: number, K: number): string {
  const w3 = g.o("Unsqueeze", [w, g.ints([1])]); // (C, 1, K)
  return g.o("Conv", [g.o("Transpose", [window], { perm: [0, 2, 1] }), w3], { group: C, kernel_shape: [K] });
}

export function split(g: Graph, x: string, sizes: number[], axis = -1): string[] {
  return g.op("Split", [x, g.ints(sizes)], { axis }, sizes.length);
}

function mamba1(ctx: Ctx, l: number, L: Mamba1Layer, u: string, conv: string, ssm: string): [string, string, string] {
  const { g, c } = ctx;
  const linear = linearOf(ctx);
  const E = c.dInner,
    N = c.dState,
    R = c.dtRank;
  const xz = linear(g, u, `l${l}.in_proj`, L.inProj, L.inProjBias, 2 * E, c.dModel);
  const [x, z] = split(g, xz, [E, E]);
  const [xcRaw, convOut] = causalConv(ctx, l, x, conv, E, L.convW, L.convB);
  const xc = ctx.em.ssmInput?.(g, `l${l}.x`, xcRaw, E) ?? xcRaw;
  const xdbl = linear(g, xc, `l${l}.x_proj`, L.xProj, null, R + 2 * N, E);
  const [dtLow, BmRaw, CmRaw] = split(g, xdbl, [R, N, N]);
  const Bm = ctx.em.ssmInput?.(g, `l${l}.B`, BmRaw, N) ?? BmRaw;
  const Cm = ctx.em.ssmInput?.(g, `l${l}.C`, CmRaw, N) ?? CmRaw;
  const dtRaw = linear(g, dtLow, `l${l}.dt_proj`, L.dtProj, L.dtProjBias, E, R); // (rows, E), before softplus
  const A = f32(ctx, `l${l}.A`, transpose(L.A, E, N, new Float32Array(E * N)), [N, E]); // state-major, as the state
  const D = f32(ctx, `l${l}.D`, L.D, [E]);
  if (ctx.fused) {
    // softplus, the state update, the D skip and the gate silu(z) in one operator (over all tokens in prefill)
    const [yg, hOut] = g.op(ctx.mode === "step" ? "SelectiveStep" : "SelectiveScan", [ssm, dtRaw, xc, Bm, Cm, z, A, D], {}, 2, OPS_DOMAIN);
    return [linear(g, yg, `l${l}.out_proj`, L.outProj, L.outProjBias, c.dModel, E), convOut, hOut];
  }
  const dt = softplus(g, dtRaw); // (rows, E)

  let y: string;
  let ssmOut: string;
  if (ctx.mode === "step") {
    [y, ssmOut] = selectiveStep1(g, ssm, dt, xc, Bm, Cm, A);
  } else {
    // Scan over time; the state has no batch axis inside (prefill is one sequence). Everything
    // that does not depend on the state is computed for all T rows at once outside the loop, so
    // the loop body is four nodes: ORT's per-node cost, paid T times per layer, dominates otherwise.
    const h0 = g.o("Squeeze", [ssm, g.ints([0])]);
    const ax1 = g.ints([1]);
    const dA = g.o("Exp", [g.o("Mul", [g.o("Unsqueeze", [dt, ax1]), A])]); // (T, N, E)
    const dtx = g.o("Unsqueeze", [g.o("Mul", [dt, xc]), ax1]); // (T, 1, E)
    const Bt = g.o("Unsqueeze", [Bm, g.ints([2])]); // (T, N, 1)
    const Ct = g.o("Unsqueeze", [Cm, ax1]); // (T, 1, N)
    const [hT, ys] = g.op("Scan", [h0, dA, dtx, Bt, Ct], { body: scanBody1(E, N, l), num_scan_inputs: 4 }, 2);
    ssmOut = g.o("Unsqueeze", [hT, g.ints([0])]);
    y = g.o("Squeeze", [ys, ax1]); // (T, 1, E) -> (T, E)
  }
  y = g.o("Mul", [g.o("Add", [y, g.o("Mul", [xc, D])]), silu(g, z)]);
  return [linear(g, y, `l${l}.out_proj`, L.outProj, L.outProjBias, c.dModel, E), convOut, ssmOut];
}

/** h = exp(dt*A) h + dt*x*B ; y = C·h, for (B, E) rows; h is (B, N, E), A (N, E). */
export function selectiveStep1(g: Graph, h: string, dt: string, x: string, Bm: string, Cm: string, A: string): [string, string] {
  const ax1 = g.ints([1]);
  const dA = g.o("Exp", [g.o("Mul", [g.o("Unsqueeze", [dt, ax1]), A])]); // (B, 1, E) × (N, E)
  const dBx = g.o("Mul", [g.o("Unsqueeze", [g.o("Mul", [dt, x]), ax1]), g.o("Unsqueeze", [Bm, g.ints([2])])]); // (B, 1, E) × (B, N, 1)
  const h1 = g.o("Add", [g.o("Mul", [dA, h]), dBx]);
  // y = C·h as a batched matrix product (B, 1, N) @ (B, N, E): no (B, N, E) temporary
  const y = g.o("Squeeze", [g.o("MatMul", [g.o("Unsqueeze", [Cm, ax1]), h1]), ax1]);
  return [y, h1];
}

function scanBody1(E: number, N: number, l: number) {
  // Subgraph: state h (N, E); scan inputs dA (N, E), dt*x (1, E), B (N, 1), C (1, N); outputs h, y (1, E).
  const b = new Graph(`scan1_l${l}`);
  const h = b.input("h", DT.FLOAT, [N, E]);
  const dA = b.input("dA", DT.FLOAT, [N, E]);
  const dtx = b.input("dtx", DT.FLOAT, [1, E]);
  const Bm = b.input("B", DT.FLOAT, [N, 1]);
  const Cm = b.input("C", DT.FLOAT, [1, N]);
  const h1 = b.o("Add", [b.o("Mul", [dA, h]), b.o("Mul", [Bm, dtx])]); // h = exp(dt A) h + B ⊗ dt x, (N, 1) × (1, E)
  const y = b.o("MatMul", [Cm, h1]); // y = C·h
  b.output(h1, "h_out", DT.FLOAT, [N, E]);
  b.output(y, "y_out", DT.FLOAT, [1, E]);
  return b.proto();
}

function mamba2(ctx: Ctx, l: number, L: Mamba2Layer, u: string, conv: string, ssm: string): [string, string, string] {
  const { g, c } = ctx;
  const linear = linearOf(ctx);
  const E = c.dInner,
    N = c.dState,
    G = c.nGroups,
    H = c.nHeads,
    P = c.headDim;
  const convC = E + 2 * G * N;
  const zxbcdt = linear(g, u, `l${l}.in_proj`, L.inProj, L.inProjBias, E + convC + H, c.dModel);
  const [z, xBC, dtRaw] = split(g, zxbcdt, [E, convC, H]);
  const [xbc, convOut] = causalConv(ctx, l, xBC, conv, convC, L.convW, L.convB);
  const [xRaw, BRaw, CRaw] = split(g, xbc, [E, G * N, G * N]);
  const x = ctx.em.ssmInput?.(g, `l${l}.x`, xRaw, E) ?? xRaw;
  const Bm = ctx.em.ssmInput?.(g, `l${l}.B`, BRaw, G * N) ?? BRaw;
  const Cm = ctx.em.ssmInput?.(g, `l${l}.C`, CRaw, G * N) ?? CRaw;
  const [lo, hi] = c.dtLimit;
  const dtBias = f32(ctx, `l${l}.dt_bias`, L.dtBias, [H]);
  const A = f32(ctx, `l${l}.A`, L.A, [H]);
  const D = f32(ctx, `l${l}.D`, L.D, [H]);
  if (ctx.fused) {
    // softplus(dt + dt_bias), its clip, the state update and the D skip in one operator; the gated norm follows
    const ins = [ssm, dtRaw, x, Bm, Cm, dtBias, A, D];
    const [ys, sOut] = g.op(
      ctx.mode === "step" ? "SsdStep" : "SsdScan",
      ins,
      { dt_min: { f: lo }, dt_max: { f: Math.min(hi, 3.4e38) } },
      2,
      OPS_DOMAIN,
    );
    const normed = gatedNorm(g, c, ys, z, () => f32(ctx, `l${l}.gated_norm`, L.gatedNorm, [c.dInner]));
    return [linear(g, normed, `l${l}.out_proj`, L.outProj, L.outProjBias, c.dModel, E), convOut, sOut];
  }
  let dt = g.o("Softplus", [g.o("Add", [dtRaw, dtBias])]); // (rows, H): no Gemm to fuse into
  if (lo > 0 || hi < Infinity) dt = g.o("Clip", [dt, g.floats([lo], []), g.floats([Math.min(hi, 3.4e38)], [])]);
  // heads view: x (rows, H, P); B, C per head (rows, H, N) by repeating each group H/G times
  const rowsHP = g.ints([-1, H, P]);
  const xh = g.o("Reshape", [x, rowsHP]);
  const perHead = (m: string) => {
    const m3 = g.o("Reshape", [m, g.ints([-1, G, 1, N])]);
    const rep = g.o("Expand", [m3, g.ints([1, 1, H / G, 1])]);
    return g.o("Reshape", [rep, g.ints([-1, H, N])]);
  };
  const Bh = perHead(Bm);
  const Ch = perHead(Cm);

  let y: string; // (rows, H, P)
  let ssmOut: string;
  if (ctx.mode === "step") {
    const ax = (_name: string, v: number[]) => g.ints(v);
    const dt3 = g.o("Unsqueeze", [dt, ax("u2", [2])]); // (B, H, 1)
    const dA = g.o("Unsqueeze", [g.o("Exp", [g.o("Mul", [dt3, g.o("Unsqueeze", [A, ax("u1", [1])])])]), ax("u3", [3])]); // (B, H, 1, 1)
    // the outer product dt x ⊗ B as a matrix product with inner dimension 1 (as in selectiveStep1)
    const dBx = g.o("MatMul", [g.o("Unsqueeze", [g.o("Mul", [dt3, xh]), ax("u3b", [3])]), g.o("Unsqueeze", [Bh, ax("u2b", [2])])]); // (B, H, P, N)
    ssmOut = g.o("Add", [g.o("Mul", [ssm, dA]), dBx]);
    const ax3 = ax("u3c", [3]);
    y = g.o("Squeeze", [g.o("MatMul", [ssmOut, g.o("Unsqueeze", [Ch, ax3])]), ax3]); // (B, H, P)
  } else {
    // as for Mamba-1: the per-row work outside the loop, four nodes inside
    const h0 = g.o("Squeeze", [ssm, g.ints([0])]);
    const dA = g.o("Reshape", [g.o("Exp", [g.o("Mul", [dt, A])]), g.ints([-1, H, 1, 1])]); // (T, H, 1, 1)
    const dtx = g.o("Unsqueeze", [g.o("Mul", [g.o("Unsqueeze", [dt, g.ints([2])]), xh]), g.ints([3])]); // (T, H, P, 1)
    const Bt = g.o("Unsqueeze", [Bh, g.ints([2])]); // (T, H, 1, N)
    const Ct = g.o("Unsqueeze", [Ch, g.ints([3])]); // (T, H, N, 1)
    const [hT, ys] = g.op("Scan", [h0, dA, dtx, Bt, Ct], { body: scanBody2(H, P, N, l), num_scan_inputs: 4 }, 2);
    ssmOut = g.o("Unsqueeze", [hT, g.ints([0])]);
    y = g.o("Squeeze", [ys, g.ints([3])]); // (T, H, P)
  }
  y = g.o("Add", [y, g.o("Mul", [xh, g.o("Unsqueeze", [D, g.ints([1])])])]);
  y = g.o("Reshape", [y, g.ints([-1, E])]);
  y = gatedNorm(g, c, y, z, () => f32(ctx, `l${l}.gated_norm`, L.gatedNorm, [c.dInner]));
  return [linear(g, y, `l${l}.out_proj`, L.outProj, L.outProjBias, c.dModel, E), convOut, ssmOut];
}

function scanBody2(H: number, P: number, N: number, l: number) {
  // Subgraph: state S (H, P, N); scan inputs dA (H, 1, 1), dt*x (H, P, 1), B (H, 1, N), C (H, N, 1); outputs S, y (H, P, 1).
  const b = new Graph(`scan2_l${l}`);
  const S = b.input("S", DT.FLOAT, [H, P, N]);
  const dA = b.input("dA", DT.FLOAT, [H, 1, 1]);
  const dtx = b.input("dtx", DT.FLOAT, [H, P, 1]);
  const Bm = b.input("B", DT.FLOAT, [H, 1, N]);
  const Cm = b.input("C", DT.FLOAT, [H, N, 1]);
  const S1 = b.o("Add", [b.o("Mul", [S, dA]), b.o("MatMul", [dtx, Bm])]); // S = exp(dt A) S + dt x B (outer product as a matrix product)
  const y = b.o("MatMul", [S1, Cm]); // y = S·C
  b.output(S1, "S_out", DT.FLOAT, [H, P, N]);
  b.output(y, "y_out", DT.FLOAT, [H, P, 1]);
  return b.proto();
}

/** RMSNorm over groups of gatedNormGroup channels, gated by silu(z) before (or after) it; `weight` makes the norm's weight (dInner). */
export function gatedNorm(g: Graph, c: ModelConfig, y: string, z: string, weight: () => string): string {
  const gs = c.gatedNormGroup;
  if (!c.normBeforeGate) y = g.o("Mul", [y, silu(g, z)]);
  if (gs > 0) {
    const grouped = g.o("Reshape", [y, g.ints([-1, c.dInner / gs, gs])]);
    const eps = g.floats([c.normEps], []);
    const ms = g.o("ReduceMean", [g.o("Mul", [grouped, grouped]), g.ints([-1])], { keepdims: 1 });
    const normed = g.o("Reshape", [g.o("Div", [grouped, g.o("Sqrt", [g.o("Add", [ms, eps])])]), g.ints([-1, c.dInner])]);
    y = g.o("Mul", [normed, weight()]);
  }
  if (c.normBeforeGate) y = g.o("Mul", [y, silu(g, z)]);
  return y;
}
