// Calibration: runs the model over calibration text with onnxruntime, one block at a time, and
// collects, for every linear layer's input and every SSM input, the statistics the recipes need:
// absolute maxima, |x| percentiles, per-channel maxima (for Quamba2's clustering) and XᵀX (GPTQ's
// Hessian). Only the residual stream of every window is kept between blocks, so the builder holds one
// block's float weights at a time, and can quantize each block before the next runs.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { InferenceSession } from "onnxruntime-node";
import { UserError } from "../errors.js";
import type { ModelConfig } from "../model/config.js";
import { graphSsmShape, stateShape } from "../model/state.js";
import type { Mamba1Layer, Mamba2Layer } from "../model/weights.js";
import { buildBlockGraph, rmsNorm, type Emitter } from "./onnx/export.js";
import { DT, Graph } from "./onnx/graph.js";
import { WeightFile } from "./onnx/weight-file.js";
import { quantNative } from "./native.js";
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

/**
 * What the graph gives out for an observed tensor besides its absolute max: its values (kept whole,
 * or for their XᵀX in native code, symmetric and half the work of the graph's product, where the
 * library is built), or XᵀX from the graph.
 */
function observation(name: string, hessians: boolean): { keeps: boolean; values: boolean; xtx: "native" | "graph" | null } {
  const xtx = hessians && !isSsmInput(name) ? (quantNative().lib ? "native" : "graph") : null;
  return { keeps: keepsValues(name), values: keepsValues(name) || xtx === "native", xtx };
}

/** Float32 emitter that also exposes every observed value as a graph output. */
function observingEmitter(
  file: WeightFile,
  observed: Map<string, number>,
  hessians: boolean,
  rotate: boolean,
): Emitter & { observe(g: Graph, name: string, x: string, width: number): void } {
  const cache = new Map<string, string>();
  const w = (g: Graph, name: string, W: Float32Array, dims: number[]) => {
    const key = `${g.name}/${name}`;
    if (!cache.has(key)) cache.set(key, g.external(name, file.add(name, W), dims, DT.FLOAT));
    return cache.get(key)!;
  };
  const observe = (g: Graph, name: string, x: string, width: number) => {
    if (observed.has(name)) return;
    observed.set(name, width);
    const o = observation(name, hessians);
    g.output(g.o("ReduceMax", [g.o("Abs", [x])], { keepdims: 0 }), `absmax/${name}`, DT.FLOAT, []);
    if (o.values) g.output(x, `values/${name}`, DT.FLOAT, ["tokens", width]);
    if (o.xtx === "graph") g.output(g.o("MatMul", [g.o("Transpose", [x], { perm: [1, 0] }), x]), `xtx/${name}`, DT.FLOAT, [width, width]);
  };
  return {
    observe,
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

type Ort = typeof import("onnxruntime-node");
type Tensor = InstanceType<Ort["Tensor"]>;

/**
 * The residual stream of every calibration window (each from a zero state), advanced one block at a
 * time: `observe` runs a block and adds its statistics, `advance` takes a block's outputs as the
 * stream the next block sees (the float block's, or the block's once quantized).
 */
export interface BlockCalibrator {
  readonly stats: Map<string, ActStats>;
  readonly samples: number;
  readonly length: number;
  readonly residuals: readonly Float32Array[];
  /** Runs block l (weights L, in float32) over every window, adding the statistics of its inputs; returns its outputs. */
  observe(l: number, L: Mamba1Layer | Mamba2Layer): Promise<Float32Array[]>;
  /** Block l's outputs over every window, collecting nothing. */
  run(l: number, L: Mamba1Layer | Mamba2Layer): Promise<Float32Array[]>;
  advance(outputs: Float32Array[]): void;
  /** The statistics of lm_head's input: the final norm of the stream. */
  observeHead(normF: Float32Array): Promise<void>;
  /** Frees what the calibration holds outside JavaScript's heap. */
  close(): void;
}

/** The calibration with onnxruntime (on the CPU): each block as its own graph. */
export class BlockCalibration implements BlockCalibrator {
  readonly stats = new Map<string, ActStats>();
  private done = 0;

  private constructor(
    private readonly ort: Ort,
    private readonly c: ModelConfig,
    private stream: Float32Array[],
    private readonly workDir: string,
    private readonly opts: CalibOptions,
    private readonly total: number,
  ) {}

  /**
   * The stream at the embedding. `runs`: how many block runs the caller will make (progress
   * counts windows through blocks).
   */
  static async start(
    c: ModelConfig,
    embedding: Float32Array,
    windows: number[][],
    workDir: string,
    opts: CalibOptions,
    runs: number,
  ): Promise<BlockCalibration> {
    const ort = (await import("onnxruntime-node")).default;
    mkdirSync(workDir, { recursive: true });
    const stream = windows.map((w) => {
      const h = new Float32Array(w.length * c.dModel);
      w.forEach((id, r) => h.set(embedding.subarray(id * c.dModel, (id + 1) * c.dModel), r * c.dModel));
      return h;
    });
    return new BlockCalibration(ort, c, stream, workDir, opts, runs * windows.length);
  }

  get samples(): number {
    return this.stream.length;
  }

  get length(): number {
    return Math.max(...this.stream.map((h) => h.length / this.c.dModel));
  }

  /** Runs block l (weights L, in float32) over every window, adding the statistics of its inputs; returns its outputs. */
  observe(l: number, L: Mamba1Layer | Mamba2Layer): Promise<Float32Array[]> {
    return this.runBlock(l, L, true);
  }

  /** Block l's outputs over every window, collecting nothing. */
  run(l: number, L: Mamba1Layer | Mamba2Layer): Promise<Float32Array[]> {
    return this.runBlock(l, L, false);
  }

  /** each window's residual stream where it stands (before the next block) */
  get residuals(): readonly Float32Array[] {
    return this.stream;
  }

  advance(outputs: Float32Array[]): void {
    this.stream = outputs;
  }

  close(): void {}

  /** The statistics of lm_head's input: the final norm of the stream. */
  async observeHead(normF: Float32Array): Promise<void> {
    const c = this.c;
    const file = new WeightFile("calib.bin");
    const observed = new Map<string, number>();
    const g = new Graph("calibration_head");
    const h = rmsNorm(g, g.input("hidden", DT.FLOAT, ["tokens", c.dModel]), g.floats(normF, [c.dModel]), g.floats([c.normEps], []));
    observingEmitter(file, observed, this.opts.hessians, false).observe(g, "lm_head", h, c.dModel);
    await this.runGraph(g, file, observed, {}, false);
  }

  private async runBlock(l: number, L: Mamba1Layer | Mamba2Layer, collect: boolean): Promise<Float32Array[]> {
    const file = new WeightFile("calib.bin");
    const observed = new Map<string, number>();
    const g = new Graph(`calibration_l${l}`);
    buildBlockGraph(g, this.c, l, L, file, observingEmitter(file, observed, collect && this.opts.hessians, this.opts.rotate));
    return this.runGraph(g, file, collect ? observed : new Map(), zeroStateFeeds(this.ort, this.c, l), true);
  }

  /** Runs `g` over every window, adding the statistics of `observed`; returns hidden_out per window where `outputs`. */
  private async runGraph(
    g: Graph,
    file: WeightFile,
    observed: Map<string, number>,
    states: Record<string, Tensor>,
    outputs: boolean,
  ): Promise<Float32Array[]> {
    const { ort, opts, workDir } = this;
    const graph = join(workDir, "calib.onnx");
    writeFileSync(graph, g.serialize());
    await file.write(join(workDir, "calib.bin"));
    let session: InferenceSession | null = null;
    try {
      session = await ort.InferenceSession.create(graph, { graphOptimizationLevel: "all" });
      const kinds = new Map([...observed.keys()].map((n) => [n, observation(n, opts.hessians)]));
      const fetch = [
        ...(outputs ? ["hidden_out"] : []),
        ...[...kinds].flatMap(([n, o]) => [
          `absmax/${n}`,
          ...(o.values ? [`values/${n}`] : []),
          ...(o.xtx === "graph" ? [`xtx/${n}`] : []),
        ]),
      ];
      const histograms = new Map<string, AbsHistogram>(); // every |x| of the tensor, for its percentile
      for (const [name, width] of observed) {
        const o = kinds.get(name)!;
        this.stats.set(name, {
          absmax: 0,
          ...(o.keeps ? { channelAbsmax: new Float32Array(width) } : {}),
          ...(o.xtx ? { xtx: new Float64Array(width * width) } : {}),
        });
        if (o.keeps) histograms.set(name, new AbsHistogram());
      }
      const result: Float32Array[] = [];
      for (const h of this.stream) {
        const rows = h.length / this.c.dModel;
        const out = await session.run({ hidden: new ort.Tensor("float32", h, [rows, this.c.dModel]), ...states }, fetch);
        if (outputs) result.push(out.hidden_out.data as Float32Array);
        for (const [name, width] of observed) accumulate(this.stats.get(name)!, out, name, width, histograms.get(name));
        if (outputs) opts.onProgress?.(++this.done, this.total);
      }
      for (const [name, h] of histograms) if (h.count > 0) this.stats.get(name)!.percentile = h.quantile(opts.percentile);
      return result;
    } finally {
      await session?.release();
      rmSync(graph, { force: true });
      rmSync(join(workDir, "calib.bin"), { force: true });
    }
  }
}

/** Adds one window's outputs for tensor `name` to its statistics. */
function accumulate(s: ActStats, out: Record<string, Tensor>, name: string, width: number, histogram?: AbsHistogram): void {
  s.absmax = Math.max(s.absmax, (out[`absmax/${name}`].data as Float32Array)[0]);
  if (s.channelAbsmax) {
    const v = out[`values/${name}`].data as Float32Array;
    histogram?.add(v);
    for (let k = 0; k < v.length; k++) {
      const a = Math.abs(v[k]);
      const ch = k % width;
      if (a > s.channelAbsmax[ch]) s.channelAbsmax[ch] = a;
    }
  }
  if (s.xtx && out[`xtx/${name}`]) {
    const h = out[`xtx/${name}`].data as Float32Array;
    for (let k = 0; k < h.length; k++) s.xtx[k] += h[k];
  } else if (s.xtx) {
    const v = out[`values/${name}`].data as Float32Array;
    quantNative().lib!.gramAdd(v, v.length / width, width, s.xtx);
  }
}

/** Zero conv and SSM states of one sequence for block l, as the graphs take them (conv_l, ssm_l). */
function zeroStateFeeds(ort: Ort, c: ModelConfig, l: number): Record<string, Tensor> {
  const shape = stateShape(c);
  const convDims = [1, shape.convWidth, shape.convPerLayer / shape.convWidth];
  const ssmDims = [1, ...graphSsmShape(c)];
  const size = (d: number[]) => d.reduce((a, b) => a * b, 1);
  return {
    [`conv_${l}`]: new ort.Tensor("float32", new Float32Array(size(convDims)), convDims),
    [`ssm_${l}`]: new ort.Tensor("float32", new Float32Array(size(ssmDims)), ssmDims),
  };
}
