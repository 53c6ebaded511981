// Calibration on the GPU (build --backend cuda): each block runs in the cuda backend's native
// library (engines/native/runner/calibrate.cu) with float16 matrices, as an fp16 engine runs it,
// and the statistics of its quantized inputs are gathered there; the residual streams and lm_head's
// statistics stay with the onnxruntime calibration, which this one wraps. koffi is loaded only here.
import { existsSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { UserError } from "../errors.js";
import type { ModelConfig } from "../model/config.js";
import type { Mamba1Layer, Mamba2Layer } from "../model/weights.js";
import { cudaLibraryPath } from "../paths.js";
import { BlockCalibration, type ActStats, type BlockCalibrator, type CalibOptions } from "./calibrate.js";
import { layerTensors } from "./layer-tensors.js";
import { AbsHistogram, HISTOGRAM_BINS } from "./percentile.js";
import { writeSafetensors, type OutTensor } from "./safetensors-writer.js";

type Fn = (...args: unknown[]) => unknown;
interface CalibLib {
  lastError: () => string;
  deviceCount: () => number;
  create: (config: string, rotate: number, hessians: number, bins: number) => unknown;
  destroy: (h: unknown) => void;
  block: (h: unknown, path: string, layer: number) => number;
  run: (h: unknown, hidden: Float32Array, rows: number, out: Float32Array, collect: number) => number;
  count: (h: unknown) => number;
  observed: (h: unknown, i: number, name: Buffer, size: number, width: Int32Array, keeps: Int32Array, xtx: Int32Array) => number;
  stats: (
    h: unknown,
    i: number,
    absmax: Float32Array,
    chan: Float32Array | null,
    hist: Float64Array | null,
    xtx: Float64Array | null,
  ) => number;
}

let cached: { lib: CalibLib | null; why: string } | undefined;

/** The native library with a GPU to run it, or null and why not (said by the caller). */
export function cudaCalibration(): { lib: CalibLib | null; why: string } {
  if (cached) return cached;
  const path = cudaLibraryPath();
  if (!existsSync(path)) return (cached = { lib: null, why: `${path} is not built` });
  try {
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    const l = koffi.load(path);
    const f = (sig: string) => l.func(sig) as Fn;
    const lib: CalibLib = {
      lastError: f("const char* me_last_error()") as CalibLib["lastError"],
      deviceCount: f("int me_device_count()") as CalibLib["deviceCount"],
      create: f("void* me_calib_create(const char* config, int rotate, int hessians, int bins)") as CalibLib["create"],
      destroy: f("void me_calib_destroy(void* h)") as CalibLib["destroy"],
      block: f("int me_calib_block(void* h, const char* path, int layer)") as CalibLib["block"],
      run: f("int me_calib_run(void* h, const float* hidden, int rows, _Out_ float* out, int collect)") as CalibLib["run"],
      count: f("int me_calib_count(void* h)") as CalibLib["count"],
      observed: f(
        "int me_calib_observed(void* h, int i, _Out_ char* name, int size, _Out_ int* width, _Out_ int* keeps, _Out_ int* xtx)",
      ) as CalibLib["observed"],
      stats: f(
        "int me_calib_stats(void* h, int i, _Out_ float* absmax, _Out_ float* chan, _Out_ double* hist, _Out_ double* xtx)",
      ) as CalibLib["stats"],
    };
    if (lib.deviceCount() < 1) return (cached = { lib: null, why: "no CUDA device" });
    return (cached = { lib, why: "" });
  } catch (e) {
    return (cached = { lib: null, why: `${path} did not load (${(e as Error).message.split("\n")[0]})` });
  }
}

/** BlockCalibration's streams and statistics, with each block run and observed on the GPU. */
export class CudaBlockCalibration implements BlockCalibrator {
  private done = 0;
  private readonly names: { name: string; width: number; keeps: boolean; xtx: boolean }[] = [];

  private constructor(
    private readonly lib: CalibLib,
    private handle: unknown,
    private readonly base: BlockCalibration,
    private readonly c: ModelConfig,
    private readonly workDir: string,
    private readonly opts: CalibOptions,
    private readonly total: number,
  ) {
    for (let i = 0; i < lib.count(handle); i++) {
      const name = Buffer.alloc(64);
      const [width, keeps, xtx] = [new Int32Array(1), new Int32Array(1), new Int32Array(1)];
      this.check(lib.observed(handle, i, name, name.length, width, keeps, xtx));
      this.names.push({ name: name.toString("utf8", 0, name.indexOf(0)), width: width[0], keeps: keeps[0] !== 0, xtx: xtx[0] !== 0 });
    }
  }

  /** As BlockCalibration.start; fails with a UserError where there is no GPU or library. */
  static async start(
    c: ModelConfig,
    embedding: Float32Array,
    windows: number[][],
    workDir: string,
    opts: CalibOptions,
    runs: number,
  ): Promise<CudaBlockCalibration> {
    const { lib, why } = cudaCalibration();
    if (!lib) throw new UserError(`build --backend cuda: ${why}`);
    const { onProgress: _, ...quiet } = opts;
    const base = await BlockCalibration.start(c, embedding, windows, workDir, quiet, runs);
    const h = lib.create(JSON.stringify(c), opts.rotate ? 1 : 0, opts.hessians ? 1 : 0, HISTOGRAM_BINS);
    if (!h) throw new UserError(`build --backend cuda: ${lib.lastError()}`);
    return new CudaBlockCalibration(lib, h, base, c, workDir, opts, runs * windows.length);
  }

  get stats(): Map<string, ActStats> {
    return this.base.stats;
  }
  get samples(): number {
    return this.base.samples;
  }
  get length(): number {
    return this.base.length;
  }
  get residuals(): readonly Float32Array[] {
    return this.base.residuals;
  }

  observe(l: number, L: Mamba1Layer | Mamba2Layer): Promise<Float32Array[]> {
    return Promise.resolve(this.runBlock(l, L, true));
  }

  run(l: number, L: Mamba1Layer | Mamba2Layer): Promise<Float32Array[]> {
    return Promise.resolve(this.runBlock(l, L, false));
  }

  advance(outputs: Float32Array[]): void {
    this.base.advance(outputs);
  }

  observeHead(normF: Float32Array): Promise<void> {
    return this.base.observeHead(normF);
  }

  close(): void {
    if (this.handle) this.lib.destroy(this.handle);
    this.handle = null;
  }

  private check(rc: number): void {
    if (rc !== 0) throw new Error(`calibration on the GPU: ${this.lib.lastError()}`);
  }

  private runBlock(l: number, L: Mamba1Layer | Mamba2Layer, collect: boolean): Float32Array[] {
    if (!this.handle) throw new Error("calibration on the GPU: closed");
    const t = new Map<string, OutTensor>();
    layerTensors(t, this.c, l, L, "fp16");
    const path = join(this.workDir, `calib-block.safetensors`);
    writeSafetensors(path, t);
    try {
      this.check(this.lib.block(this.handle, path, l));
    } finally {
      rmSync(path, { force: true });
    }
    const outputs = this.base.residuals.map((h) => {
      const out = new Float32Array(h.length);
      this.check(this.lib.run(this.handle, h, h.length / this.c.dModel, out, collect ? 1 : 0));
      this.opts.onProgress?.(++this.done, this.total);
      return out;
    });
    if (collect) this.collect(l);
    return outputs;
  }

  private collect(l: number): void {
    this.names.forEach((o, i) => {
      const absmax = new Float32Array(1);
      const chan = o.keeps ? new Float32Array(o.width) : null;
      const hist = o.keeps ? new Float64Array(HISTOGRAM_BINS) : null;
      const xtx = o.xtx ? new Float64Array(o.width * o.width) : null;
      this.check(this.lib.stats(this.handle, i, absmax, chan, hist, xtx));
      const s: ActStats = { absmax: absmax[0] };
      if (chan && hist) {
        const h = new AbsHistogram();
        h.addCounts(hist);
        s.channelAbsmax = chan;
        if (h.count > 0) s.percentile = h.quantile(this.opts.percentile);
      }
      if (xtx) s.xtx = xtx;
      this.stats.set(`l${l}.${o.name}`, s);
    });
  }
}
