// Recipes w8a8 / w8a8-naive (Quamba) and w4a16 / w4a8 (Quamba2) as ONNX: int8 weights through
// MatMulInteger (onnxruntime fuses it with the rescale into MatMulIntegerToFloat), 4-bit weights
// through com.microsoft MatMulNBits, static activation scales as QuantizeLinear / DequantizeLinear.
// dt_proj (the dt path) and the embedding / lm_head stay in float16.
import type { Recipe } from "../../package/manifest.js";
import type { Calibration } from "../calibrate.js";
import { type Emitter, OPS_DOMAIN } from "../onnx/export.js";
import { DT, type Graph } from "../onnx/graph.js";
import type { WeightFile } from "../onnx/weight-file.js";
import { packNBits, quantizeInt4Gptq, quantizeInt4Rtn, quantizeInt8, sortAndCluster } from "../quantize.js";
import { emitRotation } from "./rotate.js";
import type { OutTensor } from "../safetensors-writer.js";
import { fp16Emitter } from "./fp16.js";

export interface QuantOptions {
  recipe: Exclude<Recipe, "fp16">;
  calib: Calibration;
  gptq: boolean; // 4-bit weights by GPTQ (else round-to-nearest)
  group: number; // 4-bit group size
  arch: "mamba1" | "mamba2";
  nHeads: number;
  headDim: number;
  nGroups: number;
}

/** Whether a recipe rotates out_proj's input with a Hadamard transform. */
export const rotates = (r: Recipe) => r === "w8a8" || r === "w4a8";
const int8Weights = (r: Recipe) => r === "w8a8" || r === "w8a8-naive";
const int8Acts = (r: Recipe) => r !== "w4a16";

export function quantEmitter(
  file: WeightFile,
  o: QuantOptions,
  canonical: Map<string, OutTensor>,
  scales: Record<string, unknown>,
): Emitter {
  const half = fp16Emitter(file);
  const stat = (name: string) => {
    const s = o.calib.stats.get(name);
    if (!s) throw new Error(`no calibration statistics for ${name}`);
    return s;
  };
  // the scale each SSM input / linear input is quantized with (set by ssmInput for x)
  const actScale = new Map<string, number>();
  const prepared = new Map<string, { kind: "int8" | "int4"; data: Uint8Array | Int8Array; scale: Float32Array }>();

  const qdq = (g: Graph, x: string, scale: number | Float32Array) => {
    if (typeof scale !== "number") {
      // per channel: round(x / s) clipped to int8, times s, as plain operators. onnxruntime's
      // per-axis QuantizeLinear ran one element at a time (~120 µs per layer at batch 8 on the
      // Mamba-2 demo's w4a8 x, several times these four vectorized operators)
      const s = g.floats(scale, [scale.length]);
      const q = g.o("Clip", [g.o("Round", [g.o("Div", [x, s])]), g.floats([-128], []), g.floats([127], [])]);
      return g.o("Mul", [q, s]);
    }
    // uint8 with zero point 128: symmetric int8 in onnxruntime's preferred (u8 × s8) form
    const s = g.floats([scale], []);
    const zp = g.uint8([128], []);
    return g.o("DequantizeLinear", [g.o("QuantizeLinear", [x, s, zp]), s, zp]);
  };

  const inputScale = (name: string) => {
    // x_proj reads the (already quantized) SSM input x: same scale, no second rounding
    const m = name.match(/^(l\d+)\.x_proj$/);
    if (m && actScale.has(`${m[1]}.x`)) return actScale.get(`${m[1]}.x`)!;
    // out_proj's input carries Mamba's largest outliers: even after the Hadamard rotation a few
    // values set the absolute max, so its scale is a percentile too (not in the naive ablation)
    const st = stat(name);
    if (name.endsWith(".out_proj") && o.recipe !== "w8a8-naive" && st.percentile !== undefined) return Math.max(st.percentile, 1e-8) / 127;
    return Math.max(st.absmax, 1e-8) / 127;
  };

  return {
    gather: half.gather,
    linear(g, xIn, name, W, bias, outDim, inDim, form) {
      if (name === "lm_head" || name.endsWith(".dt_proj")) return half.linear(g, xIn, name, W, bias, outDim, inDim);
      const x = name.endsWith(".out_proj") && rotates(o.recipe) ? emitRotation(g, file, xIn, inDim) : xIn;
      let p = prepared.get(name);
      if (!p) {
        if (int8Weights(o.recipe)) {
          const q = quantizeInt8(W, outDim, inDim);
          // MatMulInteger wants (in, out)
          const t = new Int8Array(inDim * outDim);
          for (let r = 0; r < outDim; r++) for (let i = 0; i < inDim; i++) t[i * outDim + r] = q.q[r * inDim + i];
          p = { kind: "int8", data: t, scale: q.scale };
          canonical.set(`${name}.weight`, { dtype: "I8", shape: [outDim, inDim], data: q.q });
        } else {
          const xtx = stat(name).xtx;
          const q = o.gptq && xtx ? quantizeInt4Gptq(W, outDim, inDim, o.group, xtx) : quantizeInt4Rtn(W, outDim, inDim, o.group);
          const packed = packNBits(q, outDim, inDim);
          p = { kind: "int4", data: packed, scale: q.scale };
          canonical.set(`${name}.weight`, { dtype: "U8", shape: [outDim, Math.ceil(inDim / o.group), o.group / 2], data: packed });
        }
        canonical.set(`${name}.weight_scale`, { dtype: "F32", shape: [p.scale.length], data: p.scale });
        if (int8Acts(o.recipe)) scales[name] = inputScale(name);
        prepared.set(name, p);
      }
      const b = bias ? g.external(`${name}.b`, file.add(`${name}.b`, bias), [outDim], DT.FLOAT) : null;
      let y: string;
      if (p.kind === "int8") {
        const sx = inputScale(name);
        const zp = g.uint8([128], []);
        const xq = g.o("QuantizeLinear", [x, g.floats([sx], []), zp]);
        const wq = g.external(`${name}.wq`, file.add(`${name}.wq`, p.data), [inDim, outDim], DT.INT8);
        const acc = g.o("Cast", [g.o("MatMulInteger", [xq, wq, zp])], { to: DT.FLOAT });
        y = g.o("Mul", [
          acc,
          g.floats(
            p.scale.map((s) => s * sx),
            [outDim],
          ),
        ]);
      } else {
        const xa = int8Acts(o.recipe) ? qdq(g, x, inputScale(name)) : x;
        const blocks = Math.ceil(inDim / o.group);
        const wq = g.external(`${name}.wq4`, file.add(`${name}.wq4`, p.data), [outDim, blocks, o.group / 2], DT.UINT8);
        const sc = g.external(`${name}.ws`, file.add(`${name}.ws`, p.scale), [outDim * blocks], DT.FLOAT);
        if (form?.fusedStep && !int8Acts(o.recipe)) {
          // the fused step's few rows: our MatMulQ4 (same weights and arithmetic as MatMulNBits in
          // float), whose cost grows with the rows far less than MatMulNBits' (engines/ort-ops)
          y = g.op("MatMulQ4", [xa, wq, sc], {}, 1, OPS_DOMAIN)[0];
        } else {
          // accuracy_level 4: int8 compute for w4a8; float for w4a16
          y = g.o(
            "MatMulNBits",
            [xa, wq, sc],
            { K: inDim, N: outDim, bits: 4, block_size: o.group, accuracy_level: int8Acts(o.recipe) ? 4 : 0 },
            "com.microsoft",
          );
        }
      }
      return b ? g.o("Add", [y, b]) : y;
    },
    ssmInput(g, name, value, width) {
      if (!int8Acts(o.recipe)) return value;
      const s = stat(name);
      const isX = name.endsWith(".x");
      if (o.recipe === "w4a8" && o.arch === "mamba2" && isX) {
        const { scale, perm } = sortAndCluster(s.channelAbsmax!, o.nHeads, o.headDim, 4, 4);
        scales[name] = { clusters: "4 head groups × 4 channel clusters", permutation: perm };
        canonical.set(`${name}.scale`, { dtype: "F32", shape: [width], data: scale });
        return qdq(g, value, scale);
      }
      if (o.recipe === "w4a8" && o.arch === "mamba2" && !isX && o.nGroups > 1) {
        // per-state-group scales for B and C
        const N = width / o.nGroups;
        const scale = new Float32Array(width);
        for (let gi = 0; gi < o.nGroups; gi++) {
          const m = Math.max(...s.channelAbsmax!.subarray(gi * N, (gi + 1) * N));
          scale.fill(Math.max(m, 1e-8) / 127, gi * N, (gi + 1) * N);
        }
        scales[name] = Array.from(new Set(scale));
        return qdq(g, value, scale);
      }
      const clip = isX && o.recipe !== "w8a8-naive" ? s.percentile! : s.absmax;
      const sc = Math.max(clip, 1e-8) / 127;
      actScale.set(name, sc);
      scales[name] = sc;
      return qdq(g, value, sc);
    },
  };
}
