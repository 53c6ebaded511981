// Recipes w8a8 / w8a8-naive (Quamba) and w4a16 / w4a8 (Quamba2) as ONNX: int8 weights through
// MatMulInteger (onnxruntime fuses it with the rescale into MatMulIntegerToFloat), 4-bit weights
// through com.microsoft MatMulNBits, static activation scales as QuantizeLinear / DequantizeLinear.
// dt_proj (the dt path) and the embedding / lm_head stay in float16.
import type { Recipe } from "../../package/manifest.js";
import type { Calibration } from "../calibrate.js";
import { type Emitter, OPS_DOMAIN } from "../onnx/export.js";
import { DT, type Graph } from "../onnx/graph.js";
import { packageNames, type WeightFile } from "../onnx/weight-file.js";
import {
  type GroupScales,
  groupFor,
  packNBits,
  quantizeInt4Gptq,
  quantizeInt4Rtn,
  quantizeInt8,
  reconstructionErrors,
  sortAndCluster,
} from "../quantize.js";
import { emitRotation } from "./rotate.js";
import type { OutTensor } from "../safetensors-writer.js";
import { fp16Emitter } from "./fp16.js";

export interface QuantOptions {
  recipe: Exclude<Recipe, "fp16">;
  calib: Calibration;
  gptq: boolean; // 4-bit weights by GPTQ (else round-to-nearest)
  actOrder?: boolean; // GPTQ's columns in order of decreasing Hessian diagonal
  group: number; // 4-bit group size
  groupScales: GroupScales; // how each 4-bit group's scale is chosen
  arch: "mamba1" | "mamba2";
  nHeads: number;
  headDim: number;
  nGroups: number;
  /**
   * Mamba-2's SSM-input scales under int8 activations (w8a8, w4a8): Quamba2's (sort-and-cluster for
   * x, one scale per state group for B and C), or one per tensor (Quamba's, an ablation)
   */
  ssmScales: "quamba2" | "per-tensor";
}

/** Whether a recipe rotates out_proj's input with a Hadamard transform. */
export const rotates = (r: Recipe) => r === "w8a8" || r === "w4a8";
const int8Weights = (r: Recipe) => r === "w8a8" || r === "w8a8-naive";
const int8Acts = (r: Recipe) => r !== "w4a16";

/** A linear layer's quantized weights, made once per layer and shared by every graph that emits it. */
export type QuantWeights =
  | { kind: "int8"; q: Int8Array; scale: Float32Array } // q (out, in), scale per output channel
  | { kind: "int4"; q: Int8Array; scale: Float32Array; group: number }; // q (out, in) in [-8, 7], scale (out, ceil(in / group))

/**
 * The recipe's decisions, independent of how a graph expresses them: which layers are quantized and
 * how (their weights quantized once), each activation's static scale, each SSM input's scale (one, or
 * one per channel). Records the package's canonical tensors and scale summary as it goes.
 */
export interface QuantPlan {
  readonly o: QuantOptions;
  /** null: the layer stays in float16 (lm_head, dt_proj) */
  weights(name: string, W: Float32Array, outDim: number, inDim: number): QuantWeights | null;
  /** whether out_proj's input of this layer is rotated (Hadamard) before quantization */
  rotated(name: string): boolean;
  /** the static per-tensor scale of the linear layer's int8 input, or null without int8 activations */
  inputScale(name: string): number | null;
  /** the scale an SSM input (`l<i>.x`, `.B`, `.C`) is quantized with, or null where it is not */
  ssmScale(name: string, width: number): number | Float32Array | null;
  /** per GPTQ'd layer: its relative output error over the calibration inputs, and round-to-nearest's */
  readonly errors: Map<string, { gptq: number; rtn: number }>;
}

export function quantPlan(o: QuantOptions, canonical: Map<string, OutTensor>, scales: Record<string, unknown>): QuantPlan {
  const stat = (name: string) => {
    const s = o.calib.stats.get(name);
    if (!s) throw new Error(`no calibration statistics for ${name}`);
    return s;
  };
  // the scale each SSM input / linear input is quantized with (set by ssmScale for x)
  const actScale = new Map<string, number>();
  const ssm = new Map<string, number | Float32Array | null>();
  const prepared = new Map<string, QuantWeights>();
  const errors = new Map<string, { gptq: number; rtn: number }>();

  const inputScale = (name: string, inDim: number) => {
    // x_proj reads the (already quantized) SSM input x, of its width: same scale, no second rounding
    const m = name.match(/^(l\d+)\.x_proj$/);
    if (m) memoSsmScale(`${m[1]}.x`, inDim);
    if (m && actScale.has(`${m[1]}.x`)) return actScale.get(`${m[1]}.x`)!;
    // out_proj's input carries Mamba's largest outliers: even after the Hadamard rotation a few
    // values set the absolute max, so its scale is a percentile too (not in the naive ablation)
    const st = stat(name);
    if (name.endsWith(".out_proj") && o.recipe !== "w8a8-naive" && st.percentile !== undefined) return Math.max(st.percentile, 1e-8) / 127;
    return Math.max(st.absmax, 1e-8) / 127;
  };

  const ssmScale = (name: string, width: number): number | Float32Array | null => {
    if (!int8Acts(o.recipe)) return null;
    const s = stat(name);
    const isX = name.endsWith(".x");
    const quamba2 = o.arch === "mamba2" && o.ssmScales === "quamba2" && (o.recipe === "w8a8" || o.recipe === "w4a8");
    if (quamba2 && isX) {
      // one scale per channel, the same within each cluster (the clusters need not be contiguous:
      // applying a scale per channel costs the kernels the same as one per contiguous range)
      const { scale } = sortAndCluster(s.channelAbsmax!, o.nHeads, o.headDim, 4, 4);
      scales[name] = { clusters: "4 head groups × 4 channel clusters", tensor: `${name}.scale` };
      canonical.set(`${name}.scale`, { dtype: "F32", shape: [width], data: scale });
      return scale;
    }
    if (quamba2 && !isX && o.nGroups > 1) {
      // one scale per state group for B and C
      const N = width / o.nGroups;
      const scale = new Float32Array(width);
      const perGroup = Array.from(
        { length: o.nGroups },
        (_, gi) => Math.max(Math.max(...s.channelAbsmax!.subarray(gi * N, (gi + 1) * N)), 1e-8) / 127,
      );
      perGroup.forEach((v, gi) => scale.fill(v, gi * N, (gi + 1) * N));
      scales[name] = perGroup;
      return scale;
    }
    const clip = isX && o.recipe !== "w8a8-naive" ? s.percentile! : s.absmax;
    const sc = Math.max(clip, 1e-8) / 127;
    actScale.set(name, sc);
    scales[name] = sc;
    return sc;
  };

  // once per input: every graph quantizes it alike
  const memoSsmScale = (name: string, width: number) => {
    if (!ssm.has(name)) ssm.set(name, ssmScale(name, width));
    return ssm.get(name)!;
  };
  const inDims = new Map<string, number>();

  return {
    o,
    errors,
    rotated: (name) => name.endsWith(".out_proj") && rotates(o.recipe),
    weights(name, W, outDim, inDim) {
      if (name === "lm_head" || name.endsWith(".dt_proj")) return null;
      let p = prepared.get(name);
      if (!p) {
        if (W.length !== outDim * inDim)
          throw new Error(`${name}: ${W.length} weights for (${outDim}, ${inDim}), or its float weights were dropped`);
        if (int8Weights(o.recipe)) {
          const q = quantizeInt8(W, outDim, inDim);
          p = { kind: "int8", q: q.q, scale: q.scale };
          canonical.set(`${name}.weight`, { dtype: "I8", shape: [outDim, inDim], data: q.q });
        } else {
          const xtx = stat(name).xtx;
          const group = groupFor(inDim, o.group);
          const rtnOf = () => quantizeInt4Rtn(W, outDim, inDim, group, o.groupScales);
          const q =
            o.gptq && xtx ? quantizeInt4Gptq(W, outDim, inDim, group, xtx, { actOrder: o.actOrder, scales: o.groupScales }) : rtnOf();
          if (o.gptq && xtx) {
            const [gptq, rtn] = reconstructionErrors(W, [q, rtnOf()], outDim, inDim, xtx);
            errors.set(name, { gptq, rtn });
          }
          p = { kind: "int4", q: q.q, scale: q.scale, group: q.group };
          canonical.set(`${name}.weight`, {
            dtype: "U8",
            shape: [outDim, Math.ceil(inDim / group), group / 2],
            data: packNBits(q, outDim, inDim),
          });
        }
        canonical.set(`${name}.weight_scale`, { dtype: "F32", shape: [p.scale.length], data: p.scale });
        if (int8Acts(o.recipe)) scales[name] = inputScale(name, inDim);
        prepared.set(name, p);
        inDims.set(name, inDim);
      }
      return p;
    },
    inputScale(name) {
      if (!int8Acts(o.recipe)) return null;
      const inDim = inDims.get(name);
      if (inDim === undefined && name.endsWith(".x_proj")) throw new Error(`${name}: input scale asked for before its weights`);
      return inputScale(name, inDim ?? 0);
    },
    ssmScale: memoSsmScale,
  };
}

/** The recipe's onnxruntime emitter over the shared plan. */
export function quantEmitter(file: WeightFile, plan: QuantPlan): Emitter {
  const half = fp16Emitter(file);
  // the layouts onnxruntime's operators take, made once per layer
  const laid = new Map<string, { data: Uint8Array | Int8Array; scale: Float32Array }>();

  const qdq = (g: Graph, x: string, scale: number | Float32Array) => {
    if (typeof scale !== "number") {
      // per channel: round(x / s) clipped to int8, times s, as plain operators: onnxruntime's
      // per-axis QuantizeLinear runs one element at a time, several times slower than these four
      // vectorized operators (docs/cpu-performance.md)
      const s = g.floats(scale, [scale.length]);
      const q = g.o("Clip", [g.o("Round", [g.o("Div", [x, s])]), g.floats([-128], []), g.floats([127], [])]);
      return g.o("Mul", [q, s]);
    }
    // uint8 with zero point 128: symmetric int8 in onnxruntime's preferred (u8 × s8) form
    const s = g.floats([scale], []);
    const zp = g.uint8([128], []);
    return g.o("DequantizeLinear", [g.o("QuantizeLinear", [x, s, zp]), s, zp]);
  };

  return {
    gather: half.gather,
    linear(g, xIn, name, W, bias, outDim, inDim, form) {
      const w = plan.weights(name, W, outDim, inDim);
      if (!w) return half.linear(g, xIn, name, W, bias, outDim, inDim);
      const x = plan.rotated(name) ? emitRotation(g, file, xIn, inDim) : xIn;
      let p = laid.get(name);
      if (!p) {
        // int8: weights.safetensors' (out, in), transposed to MatMulInteger's (in, out) when the
        // session loads (constant folding); 4-bit: the package's packing is MatMulNBits' own
        p = { data: w.kind === "int8" ? w.q : packNBits(w, outDim, inDim), scale: w.scale };
        laid.set(name, p);
      }
      const b = bias ? g.external(`${name}.b`, file.add(`${name}.b`, bias), [outDim], DT.FLOAT) : null;
      const sx = plan.inputScale(name);
      let y: string;
      if (w.kind === "int8") {
        const zp = g.uint8([128], []);
        const xq = g.o("QuantizeLinear", [x, g.floats([sx!], []), zp]);
        const wOI = g.external(
          `${name}.wq`,
          file.fromPackage(`${name}.wq`, packageNames(name, ".weight"), p.data),
          [outDim, inDim],
          DT.INT8,
        );
        const wq = g.o("Transpose", [wOI], { perm: [1, 0] });
        const acc = g.o("Cast", [g.o("MatMulInteger", [xq, wq, zp])], { to: DT.FLOAT });
        y = g.o("Mul", [
          acc,
          g.floats(
            p.scale.map((s) => s * sx!),
            [outDim],
          ),
        ]);
      } else {
        const xa = sx !== null ? qdq(g, x, sx) : x;
        y = int4Linear(
          g,
          file,
          xa,
          name,
          p.data as Uint8Array,
          p.scale,
          outDim,
          inDim,
          w.group,
          form?.fusedStep === true && sx === null,
          sx !== null,
        );
      }
      return b ? g.o("Add", [y, b]) : y;
    },
    ssmInput(g, name, value, width) {
      const s = plan.ssmScale(name, width);
      return s === null ? value : qdq(g, value, s);
    },
  };
}

/**
 * x·Wᵀ for 4-bit W (packed as MatMulNBits takes it, in weights.safetensors under `name`.weight /
 * .weight_scale, or the embedding's names for lm_head). `fewRows`: the fused step's few rows, where
 * our MatMulQ4 (same weights and arithmetic as MatMulNBits in float) costs far less as rows grow
 * (engines/ort-ops); `int8Compute`: MatMulNBits' accuracy_level 4 (int8 activations, w4a8).
 */
export function int4Linear(
  g: Graph,
  file: WeightFile,
  x: string,
  name: string,
  packed: Uint8Array,
  scale: Float32Array,
  outDim: number,
  inDim: number,
  group: number,
  fewRows: boolean,
  int8Compute: boolean,
): string {
  const blocks = Math.ceil(inDim / group);
  const dataNames = name === "lm_head" ? packageNames(name) : packageNames(name, ".weight");
  const scaleNames = name === "lm_head" ? packageNames(name, ".scale") : packageNames(name, ".weight_scale");
  const wq = g.external(`${name}.wq4`, file.fromPackage(`${name}.wq4`, dataNames, packed), [outDim, blocks, group / 2], DT.UINT8);
  const sc = g.external(`${name}.ws`, file.fromPackage(`${name}.ws`, scaleNames, scale), [outDim * blocks], DT.FLOAT);
  if (fewRows) return g.op("MatMulQ4", [x, wq, sc], {}, 1, OPS_DOMAIN)[0];
  return g.o(
    "MatMulNBits",
    [x, wq, sc],
    { K: inDim, N: outDim, bits: 4, block_size: group, accuracy_level: int8Compute ? 4 : 0 },
    "com.microsoft",
  );
}
