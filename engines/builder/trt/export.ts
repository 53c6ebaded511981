// The TensorRT graphs of an engine: trt/step.onnx (B sequences, one token each) and trt/prefill.onnx
// (B sequences of T tokens), batch and sequence length dynamic, the states explicit inputs and
// outputs in the plugins' layouts (engines/native/trt/OPS.md). The Mamba-specific operations are
// custom nodes of domain mamba_edge (the norms with their quantization, the causal conv, the
// selective scan / SSD, the gated norm with the Hadamard rotation); the rest is standard ONNX that
// TensorRT's parser runs natively: linear layers through the recipe's weights as explicit
// quantization (int8: DequantizeLinear of the plugins' int8 outputs and of per-channel int8
// weights; 4-bit: block-quantized INT4 weights through DequantizeLinear, opset 21's block_size),
// float16 matrices cast to float elsewhere. The graph is typed float32 between its nodes: TensorRT,
// built with float16 enabled, picks each layer's precision and the plugins' formats.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ModelConfig } from "../../model/config.js";
import type { Mamba1Layer, Mamba2Layer, Weights } from "../../model/weights.js";
import { rmsNorm, split } from "../onnx/export.js";
import { DT, Graph } from "../onnx/graph.js";
import { WeightFile } from "../onnx/weight-file.js";
import { fp16Emitter } from "../recipes/fp16.js";
import type { QuantPlan, QuantWeights } from "../recipes/quantized.js";
import { rotationOf } from "../hadamard.js";
import { toHalf } from "../safetensors-writer.js";
import { checkModel } from "./check.js";
import { TRT_DOMAIN, TRT_DOMAIN_VERSION } from "./ops.js";

/** An activation: float, or int8 with the scale it was quantized with. */
export interface Act {
  v: string;
  scale?: number;
}

export interface TrtLinear {
  /** y = x·Wᵀ + b for rows of x (int8 ones are dequantized first); returns y (rows, outDim), float */
  linear(g: Graph, x: Act, name: string, W: Float32Array, bias: Float32Array | null, outDim: number, inDim: number): string;
  gather(g: Graph, ids: string, name: string, W: Float32Array, rows: number, cols: number): string;
}

/** The recipe's linear layers for TensorRT, over the plan's quantized weights (null: fp16). */
export function trtLinear(file: WeightFile, plan: QuantPlan | null): TrtLinear {
  const half = fp16Emitter(file);
  const int4 = new Map<string, { data: Uint8Array; scale: Float32Array }>();
  const ext = (g: Graph, name: string, data: Float32Array | Int8Array | Uint8Array, dims: number[], type: number) =>
    g.external(name, file.add(name, data), dims, type as (typeof DT)[keyof typeof DT]);
  return {
    gather: half.gather,
    linear(g, a, name, W, bias, outDim, inDim) {
      const x = a.scale !== undefined ? g.o("DequantizeLinear", [a.v, g.floats([a.scale], [])]) : a.v;
      const w = plan?.weights(name, W, outDim, inDim) ?? null;
      if (!w) return half.linear(g, x, name, W, bias, outDim, inDim);
      const sx = plan!.inputScale(name);
      if ((sx ?? undefined) !== a.scale) throw new Error(`${name}: input quantized with ${a.scale}, the recipe's scale is ${sx}`);
      const b = bias ? ext(g, `${name}.b`, bias, [outDim], DT.FLOAT) : null;
      if (w.kind === "int8") {
        // per output channel (axis 0) on the (out, in) weights, which Gemm takes transposed
        const wq = ext(g, `${name}.w8`, w.q, [outDim, inDim], DT.INT8);
        const wd = g.o("DequantizeLinear", [wq, ext(g, `${name}.w8_scale`, w.scale, [outDim], DT.FLOAT)], { axis: 0 });
        return g.o("Gemm", b ? [x, wd, b] : [x, wd], { transB: 1 });
      }
      // INT4 weights (in, out) in blocks along the input axis (0), as TensorRT's weight-only path
      // takes them: MatMul(x, DequantizeLinear(W)). A block no larger than the input width.
      const block = Math.min(w.group, inDim);
      let p = int4.get(name);
      if (!p) int4.set(name, (p = int4Blocks(w, outDim, inDim)));
      const wq = ext(g, `${name}.w4`, p.data, [inDim, outDim], DT.INT4);
      const ws = ext(g, `${name}.w4_scale`, p.scale, [Math.ceil(inDim / block), outDim], DT.FLOAT);
      const y = g.o("MatMul", [x, g.o("DequantizeLinear", [wq, ws], { axis: 0, block_size: block })]);
      return b ? g.o("Add", [y, b]) : y;
    },
  };
}

/** 4-bit weights q (out, in) as an ONNX INT4 tensor (in, out), two per byte, the first in the low nibble; scales (blocks, out). */
export function int4Blocks(w: Extract<QuantWeights, { kind: "int4" }>, outDim: number, inDim: number) {
  const data = new Uint8Array(Math.ceil((inDim * outDim) / 2));
  for (let i = 0; i < inDim; i++)
    for (let o = 0; o < outDim; o++) {
      const k = i * outDim + o;
      data[k >> 1] |= (w.q[o * inDim + i] & 0xf) << ((k & 1) * 4);
    }
  const nG = Math.ceil(inDim / w.group);
  const scale = new Float32Array(nG * outDim);
  for (let o = 0; o < outDim; o++) for (let b = 0; b < nG; b++) scale[b * outDim + o] = w.scale[o * nG + b];
  return { data, scale };
}

interface Ctx {
  g: Graph;
  c: ModelConfig;
  file: WeightFile;
  lin: TrtLinear;
  plan: QuantPlan | null;
  mode: "step" | "prefill";
  /** (rows, width) -> the plugins' (B, T, width) in prefill; as it is in the step */
  to3(v: string, width: number): string;
  /** back to rows */
  to2(v: string, width: number): string;
}

const f32 = (ctx: Ctx, name: string, a: Float32Array, dims: number[]) => ctx.g.external(name, ctx.file.add(name, a), dims, DT.FLOAT);
const zeros = (ctx: Ctx, name: string, n: number) => f32(ctx, name, new Float32Array(n), [n]);
const custom = (ctx: Ctx, op: string, ins: string[], attrs: Record<string, number | { f: number }>, nOut: number) =>
  ctx.g.op(op, ins, attrs, nOut, TRT_DOMAIN);

/** Adds the TensorRT step or prefill graph to `g`. */
export function buildTrtGraph(
  g: Graph,
  c: ModelConfig,
  w: Weights<Mamba1Layer> | Weights<Mamba2Layer>,
  file: WeightFile,
  lin: TrtLinear,
  plan: QuantPlan | null,
  mode: "step" | "prefill",
): void {
  const step = mode === "step";
  const tokens = g.input("tokens", DT.INT32, step ? ["batch"] : ["batch", "seq"]);
  const ids = step ? tokens : g.o("Reshape", [tokens, g.ints([-1])]); // rows: batch·seq
  const bt = step ? "" : g.o("Shape", [tokens]); // [batch, seq]
  const shapes = new Map<number, string>();
  const ctx: Ctx = {
    g,
    c,
    file,
    lin,
    plan,
    mode,
    to3: (v, width) => {
      if (step) return v;
      if (!shapes.has(width)) shapes.set(width, g.o("Concat", [bt, g.ints([width])], { axis: 0 }));
      return g.o("Reshape", [v, shapes.get(width)!]);
    },
    to2: (v, width) => (step ? v : g.o("Reshape", [v, g.ints([-1, width])])),
  };
  const convC = c.arch === "mamba1" ? c.dInner : c.dInner + 2 * c.nGroups * c.dState;
  const ssmShape = c.arch === "mamba1" ? [c.dInner, c.dState] : [c.nHeads, c.headDim, c.dState];

  let hidden = lin.gather(g, ids, "embedding", w.embedding, c.vocabSize, c.dModel); // (rows, dModel)
  let pending: string | null = null; // the previous layer's output, added to hidden inside the next norm
  for (let l = 0; l < c.nLayer; l++) {
    const conv = g.input(`conv_${l}`, DT.FLOAT, ["batch", convC, c.dConv - 1]);
    const ssm = g.input(`ssm_${l}`, DT.FLOAT, ["batch", ...ssmShape]);
    const L = w.layers[l];
    // residual add + RMSNorm, quantized for in_proj where the recipe has int8 activations
    const s = plan?.inputScale(`l${l}.in_proj`) ?? null;
    const norm = f32(ctx, `l${l}.norm`, L.norm, [c.dModel]);
    const outs = custom(
      ctx,
      "RmsNormQuant",
      pending ? [pending, norm, hidden] : [hidden, norm],
      { eps: { f: c.normEps }, scale: { f: s ?? 0 }, out_int8: s === null ? 0 : 1, has_residual: pending ? 1 : 0 },
      pending ? 2 : 1,
    );
    if (pending) hidden = outs[1];
    const u: Act = s === null ? { v: outs[0] } : { v: outs[0], scale: s };
    const [out, convOut, ssmOut] =
      c.arch === "mamba1" ? mamba1(ctx, l, L as Mamba1Layer, u, conv, ssm) : mamba2(ctx, l, L as Mamba2Layer, u, conv, ssm);
    pending = out;
    g.output(convOut, `conv_${l}_out`, DT.FLOAT, ["batch", convC, c.dConv - 1]);
    g.output(ssmOut, `ssm_${l}_out`, DT.FLOAT, ["batch", ...ssmShape]);
  }
  hidden = pending ? g.o("Add", [hidden, pending]) : hidden;

  const eps = g.floats([c.normEps], []);
  const normF = f32(ctx, "norm_f", w.normF, [c.dModel]);
  if (step) {
    const h = rmsNorm(g, hidden, normF, eps);
    g.output(lin.linear(g, { v: h }, "lm_head", w.lmHead, null, c.vocabSize, c.dModel), "logits", DT.FLOAT, ["batch", c.vocabSize]);
  } else {
    // the last position of each sequence only: TensorRT computes every output it has
    const last = g.o("Slice", [ctx.to3(hidden, c.dModel), g.ints([-1]), g.ints([2 ** 62]), g.ints([1])]); // (B, 1, dModel)
    const h = rmsNorm(g, g.o("Reshape", [last, g.ints([-1, c.dModel])]), normF, eps);
    g.output(lin.linear(g, { v: h }, "lm_head", w.lmHead, null, c.vocabSize, c.dModel), "last_logits", DT.FLOAT, ["batch", c.vocabSize]);
  }
}

/** The conv plugin: silu(conv) (fake-quantized per channel by qscale), the new state, and int8 output 2 where int8Scale is given. */
function causalConv(
  ctx: Ctx,
  l: number,
  x: string,
  state: string,
  C: number,
  L: Mamba1Layer | Mamba2Layer,
  qscale: Float32Array | null,
  int8Scale: number | null,
) {
  const ins = [
    ctx.to3(x, C),
    state,
    f32(ctx, `l${l}.conv_w`, L.convW, [C, ctx.c.dConv]),
    L.convB ? f32(ctx, `l${l}.conv_b`, L.convB, [C]) : zeros(ctx, `l${l}.conv_b0`, C),
    qscale ? f32(ctx, `l${l}.conv_qscale`, qscale, [C]) : zeros(ctx, `l${l}.conv_qscale0`, C),
  ];
  const op = ctx.mode === "step" ? "ConvStep" : "ConvPrefill";
  return custom(ctx, op, ins, { int8_scale: { f: int8Scale ?? 0 } }, int8Scale === null ? 2 : 3); // [y, state, y_q]
}

function mamba1(ctx: Ctx, l: number, L: Mamba1Layer, u: Act, conv: string, ssm: string): [string, string, string] {
  const { g, c, plan, lin } = ctx;
  const E = c.dInner,
    N = c.dState,
    R = c.dtRank;
  const xz = lin.linear(g, u, `l${l}.in_proj`, L.inProj, L.inProjBias, 2 * E, c.dModel);
  const [x, z] = split(g, xz, [E, E]);
  const sx = plan?.ssmScale(`l${l}.x`, E) ?? null;
  if (sx !== null && typeof sx !== "number") throw new Error(`l${l}.x: Mamba-1's SSM input has one scale`);
  const [xc, convOut, xq] = causalConv(ctx, l, x, conv, E, L, sx === null ? null : new Float32Array(E).fill(sx), sx);
  // x_proj reads the conv's int8 output (the same scale as its fake quantization for the scan)
  const xIn: Act = sx === null ? { v: ctx.to2(xc, E) } : { v: ctx.to2(xq, E), scale: sx };
  const xdbl = lin.linear(g, xIn, `l${l}.x_proj`, L.xProj, null, R + 2 * N, E);
  const scalar = (name: string, width: number) => {
    const s = plan?.ssmScale(name, width) ?? null;
    if (s !== null && typeof s !== "number") throw new Error(`${name}: Mamba-1's SSM inputs have one scale each`);
    return s ?? 0;
  };
  const bScale = scalar(`l${l}.B`, N);
  const cScale = scalar(`l${l}.C`, N);
  const so = plan?.inputScale(`l${l}.out_proj`) ?? null;
  const rotated = plan?.rotated(`l${l}.out_proj`) ?? false;
  const int8Out = so !== null && !rotated; // quantized by the scan itself; else by HadamardQuant after it
  const [y3, hOut] = custom(
    ctx,
    ctx.mode === "step" ? "SelectiveStep" : "SelectiveScan",
    [
      ssm,
      ctx.to3(xdbl, R + 2 * N),
      xc,
      ctx.to3(z, E),
      g.external(`l${l}.dt_w16`, ctx.file.add(`l${l}.dt_w16`, toHalf(L.dtProj)), [E, R], DT.FLOAT16),
      f32(ctx, `l${l}.dt_b`, L.dtProjBias, [E]),
      f32(ctx, `l${l}.A_en`, L.A, [E, N]),
      f32(ctx, `l${l}.D`, L.D, [E]),
    ],
    { b_scale: { f: bScale }, c_scale: { f: cScale }, out_scale: { f: int8Out ? so : 0 }, out_int8: int8Out ? 1 : 0 },
    2,
  );
  let y: Act = so === null ? { v: ctx.to2(y3, E) } : { v: ctx.to2(y3, E), scale: so };
  if (rotated) {
    const f = rotationOf(E);
    const attrs = { hadamard_block: f.b, hadamard_factor: f.m, scale: { f: so! }, out_int8: 1 };
    y = { v: custom(ctx, "HadamardQuant", [y.v], attrs, 1)[0], scale: so! };
  }
  return [lin.linear(g, y, `l${l}.out_proj`, L.outProj, L.outProjBias, c.dModel, E), convOut, hOut];
}

function mamba2(ctx: Ctx, l: number, L: Mamba2Layer, u: Act, conv: string, ssm: string): [string, string, string] {
  const { g, c, plan, lin } = ctx;
  const E = c.dInner,
    GN = c.nGroups * c.dState,
    H = c.nHeads;
  const convC = E + 2 * GN;
  const zxbcdt = lin.linear(g, u, `l${l}.in_proj`, L.inProj, L.inProjBias, E + convC + H, c.dModel);
  const [z, xBC, dtRaw] = split(g, zxbcdt, [E, convC, H]);
  // x, B and C quantized by the conv's per-channel fake quantization (one scale or one per channel each)
  const parts = [
    [`l${l}.x`, E],
    [`l${l}.B`, GN],
    [`l${l}.C`, GN],
  ] as const;
  const scales = parts.map(([name, width]) => plan?.ssmScale(name, width) ?? null);
  let qscale: Float32Array | null = null;
  if (scales.some((s) => s !== null)) {
    qscale = new Float32Array(convC);
    let at = 0;
    parts.forEach(([, width], i) => {
      const s = scales[i];
      if (typeof s === "number") qscale!.fill(s, at, at + width);
      else if (s) qscale!.set(s, at);
      at += width;
    });
  }
  const [xbc, convOut] = causalConv(ctx, l, xBC, conv, convC, L, qscale, null);
  const [lo, hi] = c.dtLimit;
  const [y3, sOut] = custom(
    ctx,
    ctx.mode === "step" ? "SsdStep" : "SsdScan",
    [ssm, ctx.to3(dtRaw, H), xbc, f32(ctx, `l${l}.dt_bias`, L.dtBias, [H]), f32(ctx, `l${l}.A`, L.A, [H]), f32(ctx, `l${l}.D`, L.D, [H])],
    { dt_min: { f: lo }, dt_max: { f: Math.min(hi, 3.4e38) }, gate: 0 },
    2,
  );
  // the gate, the gated RMSNorm, the rotation and the quantization of out_proj's input in one node
  const so = plan?.inputScale(`l${l}.out_proj`) ?? null;
  const rotated = plan?.rotated(`l${l}.out_proj`) ?? false;
  const gs = c.gatedNormGroup;
  const ins = [ctx.to2(y3, E), z, ...(gs > 0 ? [f32(ctx, `l${l}.gated_norm`, L.gatedNorm, [E])] : [])];
  const attrs = {
    gate: 1,
    norm_before_gate: c.normBeforeGate ? 1 : 0,
    group_size: gs,
    eps: { f: c.normEps },
    hadamard_block: rotated ? rotationOf(E).b : 0,
    hadamard_factor: rotated ? rotationOf(E).m : 1,
    scale: { f: so ?? 0 },
    out_int8: so === null ? 0 : 1,
  };
  const v = custom(ctx, "HadamardQuant", ins, attrs, 1)[0];
  const y: Act = so === null ? { v } : { v, scale: so };
  return [lin.linear(g, y, `l${l}.out_proj`, L.outProj, L.outProjBias, c.dModel, E), convOut, sOut];
}

export const TRT_GRAPHS = ["trt/step.onnx", "trt/prefill.onnx"] as const;

/** manifest.json's field trt: the custom operators' domain and contract version (OPS.md), and what the plugins refuse for this model's sizes */
export interface TrtManifest {
  domain: string;
  opsVersion: number;
  opset: number;
  pluginLimits: string[];
}
export const TRT_WEIGHTS = "trt/weights.bin";

/**
 * Writes trt/step.onnx, trt/prefill.onnx and the bytes of their initializers (trt/weights.bin) under
 * `dir`, and checks both graphs (check.ts): a problem is a builder bug. Returns what the plugins
 * refuse for this model's sizes, if anything.
 */
export async function writeTrtGraphs(
  dir: string,
  c: ModelConfig,
  w: Weights<Mamba1Layer> | Weights<Mamba2Layer>,
  plan: QuantPlan | null,
  log: (line: string) => void,
): Promise<{ files: string[]; limits: string[] }> {
  mkdirSync(join(dir, "trt"), { recursive: true });
  const file = new WeightFile("weights.bin");
  const lin = trtLinear(file, plan);
  const graphs: [string, Uint8Array][] = [];
  for (const mode of ["step", "prefill"] as const) {
    log(`exporting trt/${mode}.onnx`);
    const g = new Graph(`mamba_edge_trt_${mode}`);
    buildTrtGraph(g, c, w, file, lin, plan, mode);
    const bytes = g.serialize(21, false, { [TRT_DOMAIN]: TRT_DOMAIN_VERSION });
    writeFileSync(join(dir, "trt", `${mode}.onnx`), bytes);
    graphs.push([`trt/${mode}.onnx`, bytes]);
  }
  await file.write(join(dir, TRT_WEIGHTS));
  const limits = new Set<string>();
  for (const [name, bytes] of graphs) {
    const r = checkModel(bytes, join(dir, "trt"));
    if (r.problems.length) throw new Error(`${name} fails the graph check: ${r.problems.join("; ")}`);
    r.limits.forEach((x) => limits.add(x));
  }
  return { files: [...TRT_GRAPHS, TRT_WEIGHTS], limits: [...limits] };
}
