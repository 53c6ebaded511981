// Calibration: runs the float model over calibration text with onnxruntime and collects, for every
// linear layer's input and every SSM input, the statistics the recipes need: absolute maxima,
// |x| percentiles, per-channel maxima (for Quamba2's clustering) and XᵀX (GPTQ's Hessian).
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { InferenceSession } from "onnxruntime-node";
import { UserError } from "../errors.js";
import type { MambaModel } from "../model/model.js";
import { graphSsmShape, stateShape } from "../model/state.js";
import { buildGraph, type Emitter } from "./onnx/export.js";
import { DT, Graph } from "./onnx/graph.js";
import { WeightFile } from "./onnx/weight-file.js";
import { AbsHistogram } from "./percentile.js";
import { emitRotation } from "./recipes/rotate.js";

export interface CalibOptions {
  percentile: number;
  hessians: boolean; // collect XᵀX per linear input (GPTQ)
  rotate: boolean; // out_proj's input is Hadamard-rotated (its weight already is)
  onProgress?: (done: number, total: number) => void;
}

export interface ActStats {
  absmax: number;
  /** |x| at the calibration percentile (values kept whole only) */
  percentile?: number;
  /** per-channel absmax (values kept whole only) */
  channelAbsmax?: Float32Array;
  /** XᵀX summed over calibration tokens, (in, in) row-major (linear inputs, with hessians) */
  xtx?: Float64Array;
}

export interface Calibration {
  stats: Map<string, ActStats>;
  samples: number;
  length: number;
}

const isSsmInput = (name: string) => /\.(x|B|C)$/.test(name);
/** Values kept whole for percentiles and per-channel maxima: the SSM inputs and out_proj's input. */
const keepsValues = (name: string) => isSsmInput(name) || name.endsWith(".out_proj");

/** Float32 emitter that also exposes every observed value as a graph output. */
function observingEmitter(file: WeightFile, observed: Map<string, number>, hessians: boolean, rotate: boolean): Emitter {
  const cache = new Map<string, string>();
  const w = (g: Graph, name: string, W: Float32Array, dims: number[]) => {
    const key = `${g.name}/${name}`;
    if (!cache.has(key)) cache.set(key, g.external(name, file.add(name, W), dims, DT.FLOAT));
    return cache.get(key)!;
  };
  const observe = (g: Graph, name: string, x: string, width: number) => {
    if (observed.has(name)) return;
    observed.set(name, width);
    g.output(g.o("ReduceMax", [g.o("Abs", [x])], { keepdims: 0 }), `absmax/${name}`, DT.FLOAT, []);
    if (keepsValues(name)) g.output(x, `values/${name}`, DT.FLOAT, ["tokens", width]);
    if (hessians && !isSsmInput(name))
      g.output(g.o("MatMul", [g.o("Transpose", [x], { perm: [1, 0] }), x]), `xtx/${name}`, DT.FLOAT, [width, width]);
  };
  return {
    linear(g, xIn, name, W, bias, outDim, inDim) {
      const x = rotate && name.endsWith(".out_proj") ? emitRotation(g, file, xIn, inDim) : xIn;
      observe(g, name, x, inDim);
      const inputs = [x, w(g, `${name}.w`, W, [outDim, inDim])];
      if (bias) inputs.push(w(g, `${name}.b`, bias, [outDim]));
      return g.o("Gemm", inputs, { transB: 1 });
    },
    gather(g, ids, name, W, rows, cols) {
      return g.o("Gather", [w(g, name, W, [rows, cols]), ids], { axis: 0 });
    },
    ssmInput(g, name, value, width) {
      observe(g, name, value, width);
      return value;
    },
  };
}

/** Evenly spaced windows of `length` tokens from the token stream. */
export function calibrationWindows(ids: number[], samples: number, length: number): number[][] {
  if (ids.length < 2) throw new UserError(`calibration text: too short (${ids.length} tokens; need at least 2)`);
  const len = Math.min(length, ids.length);
  const n = Math.max(1, Math.min(samples, Math.floor(ids.length / len)));
  const stride = n > 1 ? Math.floor((ids.length - len) / (n - 1)) : 0;
  return Array.from({ length: n }, (_, i) => ids.slice(i * stride, i * stride + len));
}

export async function calibrate(model: MambaModel, windows: number[][], workDir: string, opts: CalibOptions): Promise<Calibration> {
  const ort = (await import("onnxruntime-node")).default;
  const c = model.config;
  mkdirSync(workDir, { recursive: true });
  const file = new WeightFile("calib.bin");
  const observed = new Map<string, number>();
  const g = new Graph("calibration");
  buildGraph(g, c, model.weights, file, observingEmitter(file, observed, opts.hessians, opts.rotate), "prefill");
  writeFileSync(join(workDir, "calib.onnx"), g.serialize());
  await file.write(join(workDir, "calib.bin"));
  let session: InferenceSession | null = null;
  try {
    session = await ort.InferenceSession.create(join(workDir, "calib.onnx"), { graphOptimizationLevel: "all" });
    const zeroStates = zeroStateFeeds(ort, c);
    const fetch = [...observed.keys()].flatMap((n) =>
      [`absmax/${n}`, keepsValues(n) ? `values/${n}` : null, opts.hessians && !isSsmInput(n) ? `xtx/${n}` : null].filter(
        (x): x is string => !!x,
      ),
    );

    const stats = new Map<string, ActStats>();
    const histograms = new Map<string, AbsHistogram>(); // every |x| of the tensor, for its percentile
    for (const [name, width] of observed) {
      stats.set(name, {
        absmax: 0,
        ...(keepsValues(name) ? { channelAbsmax: new Float32Array(width) } : {}),
        ...(opts.hessians && !isSsmInput(name) ? { xtx: new Float64Array(width * width) } : {}),
      });
      if (keepsValues(name)) histograms.set(name, new AbsHistogram());
    }
    for (let i = 0; i < windows.length; i++) {
      const out = await session.run(
        { tokens: new ort.Tensor("int64", BigInt64Array.from(windows[i], BigInt), [windows[i].length]), ...zeroStates },
        fetch,
      ); // each window from a zero state
      for (const [name, width] of observed) {
        const s = stats.get(name)!;
        s.absmax = Math.max(s.absmax, (out[`absmax/${name}`].data as Float32Array)[0]);
        if (s.channelAbsmax) {
          const v = out[`values/${name}`].data as Float32Array;
          histograms.get(name)!.add(v);
          for (let k = 0; k < v.length; k++) {
            const a = Math.abs(v[k]);
            const ch = k % width;
            if (a > s.channelAbsmax[ch]) s.channelAbsmax[ch] = a;
          }
        }
        if (s.xtx) {
          const h = out[`xtx/${name}`].data as Float32Array;
          for (let k = 0; k < h.length; k++) s.xtx[k] += h[k];
        }
      }
      opts.onProgress?.(i + 1, windows.length);
    }
    for (const [name, h] of histograms) if (h.count > 0) stats.get(name)!.percentile = h.quantile(opts.percentile);
    return { stats, samples: windows.length, length: Math.max(...windows.map((w) => w.length)) };
  } finally {
    await session?.release();
    rmSync(join(workDir, "calib.onnx"), { force: true });
    rmSync(join(workDir, "calib.bin"), { force: true });
  }
}

/** Zero conv and SSM states of one sequence, as the graphs take them (conv_l, ssm_l). */
function zeroStateFeeds(ort: typeof import("onnxruntime-node"), c: MambaModel["config"]): Record<string, InstanceType<typeof ort.Tensor>> {
  const shape = stateShape(c);
  const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
  const convDims = [1, shape.convWidth, shape.convPerLayer / shape.convWidth];
  const ssmDims = [1, ...graphSsmShape(c)];
  const size = (d: number[]) => d.reduce((a, b) => a * b, 1);
  for (let l = 0; l < shape.nLayer; l++) {
    feeds[`conv_${l}`] = new ort.Tensor("float32", new Float32Array(size(convDims)), convDims);
    feeds[`ssm_${l}`] = new ort.Tensor("float32", new Float32Array(size(ssmDims)), ssmDims);
  }
  return feeds;
}
