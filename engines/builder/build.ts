// The offline builder: checkpoint -> engine package (NAME.mamba). Writes into a temporary directory
// next to the target and renames it into place at the end, so a failed build leaves nothing half
// written.
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { UserError } from "../errors.js";
import { FORMAT, FORMAT_VERSION, sha256File, type Manifest, type Recipe } from "../package/manifest.js";
import type { ModelConfig } from "../model/config.js";
import { openSource } from "../model/model.js";
import { randomSource, SHAPES } from "../model/random.js";
import type { Mamba1Layer, Mamba2Layer, Weights } from "../model/weights.js";
import { buildGraph, OPS_DOMAIN, OPS_DOMAIN_VERSION, type Emitter } from "./onnx/export.js";
import { Graph } from "./onnx/graph.js";
import { WeightFile } from "./onnx/weight-file.js";
import { writeTrtGraphs, type TrtManifest } from "./trt/export.js";
import { TRT_DOMAIN, TRT_DOMAIN_VERSION } from "./trt/ops.js";
import { fp16Emitter } from "./recipes/fp16.js";
import { EMBEDDINGS, q4TableEmitter, quantizeTable, tableTensors, type EmbeddingFormat } from "./recipes/embedding.js";
import { quantEmitter, quantPlan, rotates, type QuantPlan } from "./recipes/quantized.js";
import { BlockCalibration, calibrationWindows, type BlockCalibrator, type Calibration } from "./calibrate.js";
import { foldNorm, rotateInputs, type GroupScales } from "./quantize.js";
import { quantNative } from "./native.js";
import { toHalf, writeSafetensors, type OutTensor } from "./safetensors-writer.js";
import { layerTensors } from "./layer-tensors.js";
import { createHash } from "node:crypto";
import { Tokenizer } from "../model/tokenizer.js";

export const RECIPES = ["fp16", "w8a8", "w4a8", "w4a16", "w8a8-naive"] as const satisfies readonly Recipe[];
/** graphs a package can hold: cpu (onnxruntime), trt (TensorRT's ONNX parser with the mamba_edge plugins) */
export const TARGETS = ["cpu", "trt"] as const;
export type Target = (typeof TARGETS)[number];

/** `--target`: a comma-separated list of targets. */
export function parseTargets(s: string): Target[] {
  const parts = s.split(",").map((p) => p.trim());
  const bad = parts.find((p) => !(TARGETS as readonly string[]).includes(p));
  if (bad !== undefined || parts.length === 0)
    throw new UserError(`--target: expected cpu, trt or both (comma-separated), found ${JSON.stringify(bad ?? s)}`);
  return TARGETS.filter((t) => parts.includes(t));
}
export type CalibBackend = "auto" | "ort" | "cuda";

export const BUILDER_VERSION = "0.1.0";

export interface BuildOptions {
  /** checkpoint directory, or a published shape with random weights (see runtime/model/random.ts) */
  modelDir: string;
  random?: boolean;
  recipe: Recipe;
  out: string;
  force?: boolean;
  /** calibration text (needed by every recipe but fp16) ... */
  calibText?: string;
  /** ... or a file of token ids, for checkpoints without a tokenizer */
  calibTokens?: string;
  calibSamples?: number;
  calibLength?: number;
  percentile?: number;
  /** 4-bit weights by GPTQ (default) or round-to-nearest */
  gptq?: boolean;
  /** GPTQ's column order: as stored (default) or by decreasing Hessian diagonal */
  actOrder?: boolean;
  /**
   * GPTQ's Hessians from the float model's activations (default), or from each block's inputs with
   * the blocks before it already quantized (the calibration streams move on through the quantized block)
   */
  gptqInputs?: "float" | "quantized";
  /** where calibration runs: on the GPU where one is (auto, the default), onnxruntime on the CPU, or the GPU */
  calibBackend?: CalibBackend;
  /** 4-bit groups' scales: searched for the least rounding error (default), or from the largest |w| */
  groupScales?: GroupScales;
  /** Mamba-2's SSM-input scales under int8 activations: Quamba2's (w4a8's default) or one per tensor (w8a8's) */
  ssmScales?: "quamba2" | "per-tensor";
  /** the embedding and lm_head: float16 (default), or 4-bit groups */
  embedding?: EmbeddingFormat;
  /** graphs to write (default: cpu) */
  targets?: Target[];
  log?: (line: string) => void;
  progress?: (label: string, done: number, total: number) => void;
}

export interface BuildResult {
  out: string;
  manifest: Manifest;
  seconds: number;
  bytes: number;
  /** where GPTQ ran (null: the build ran none) */
  gptq: "native" | "typescript" | null;
  /** where calibration ran (null: the recipe needs none) */
  calibration: "ort" | "cuda" | null;
  /** seconds spent reading (or making) the weights, running the calibration, quantizing, and the rest (graphs, files) */
  phases: { read: number; calibrate: number; quantize: number; write: number };
}

export async function build(opts: BuildOptions): Promise<BuildResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const out = resolve(opts.out);
  if (!out.endsWith(".mamba")) throw new UserError(`--out: an engine package is a directory named NAME.mamba, found ${basename(out)}`);
  if (existsSync(out) && !opts.force) throw new UserError(`${opts.out}: already exists (use --force to replace it)`);
  if (!(RECIPES as readonly string[]).includes(opts.recipe))
    throw new UserError(`--quant: expected one of ${RECIPES.join(", ")}, found ${opts.recipe}`);

  const quantized = opts.recipe !== "fp16";
  const embedding = opts.embedding ?? "fp16";
  const ssmScales = opts.ssmScales ?? (opts.recipe === "w4a8" ? "quamba2" : "per-tensor");
  const groupScales = opts.groupScales ?? "search";
  // the TensorRT graphs' int8 plugin chain takes one scale per SSM input
  if (opts.targets?.includes("trt") && opts.recipe === "w8a8" && ssmScales === "quamba2")
    throw new UserError(
      "--target trt: w8a8 with --ssm-scales quamba2 is not supported by the TensorRT plugins (one scale per SSM input); use --ssm-scales per-tensor",
    );
  if (!(EMBEDDINGS as readonly string[]).includes(embedding))
    throw new UserError(`--embedding: expected one of ${EMBEDDINGS.join(", ")}, found ${embedding}`);
  if (quantized && !opts.calibText && !opts.calibTokens)
    throw new UserError("--calib: quantized recipes need a calibration text file (or --calib-tokens)");
  const text = quantized ? readCalibText((opts.calibText ?? opts.calibTokens)!) : null;
  log(`loading ${opts.modelDir}`);
  const src = opts.random ? randomSource(opts.modelDir) : openSource(opts.modelDir);
  const c = src.config;
  // the calibration tokens before any weights are read: a bad file costs no wait
  let ids: number[] | null = null;
  try {
    if (quantized)
      ids = opts.calibText ? await Tokenizer.load(opts.modelDir).encode(text!) : parseTokenFile(opts.calibTokens!, text!, c.vocabSize);
  } catch (e) {
    src.close();
    throw e;
  }
  const tmp = join(dirname(out), `.${basename(out)}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  const targets = opts.targets ?? ["cpu"];
  mkdirSync(tmp, { recursive: true });
  let cal: BlockCalibrator | null = null;
  try {
    const weights = { ...src.head(), layers: [] } as Weights<Mamba1Layer | Mamba2Layer>;
    const canonical = headTensors(c, weights);
    const scales: Record<string, unknown> = {};
    const params: Record<string, unknown> = {};
    // cpu graphs name their external data from the package root (the ort backend tells onnxruntime
    // so): cpu/weights.bin, and weights.safetensors for the tensors it holds in their layout
    const file = new WeightFile("cpu/weights.bin", canonical);
    let em: Emitter = fp16Emitter(file);
    let calib: Calibration | null = null;
    let plan: QuantPlan | null = null;
    let calibBackend: BuildResult["calibration"] = null;
    let gptqIn: BuildResult["gptq"] = null;
    const gptq = opts.recipe.startsWith("w4") && (opts.gptq ?? true);
    const refit = gptq && opts.gptqInputs === "quantized";
    if (quantized) {
      const windows = calibrationWindows(ids!, opts.calibSamples ?? 128, opts.calibLength ?? 512);
      const percentile = opts.percentile ?? 0.9995;
      if (gptq) {
        const n = quantNative();
        gptqIn = n.lib ? "native" : "typescript";
        if (!n.lib) log(`warning: GPTQ runs in TypeScript, many times slower: ${n.why}`);
      }
      const calibOpts = {
        percentile,
        hessians: gptq,
        rotate: rotates(opts.recipe),
        onProgress: (d: number, t: number) => opts.progress?.("calibrating and quantizing", d, t),
      };
      const runs = c.nLayer * (refit ? 2 : 1);
      const want = opts.calibBackend ?? "auto";
      const gpu = want === "ort" ? null : await import("./calibrate-cuda.js");
      if (gpu && (want === "cuda" || gpu.cudaCalibration().lib)) {
        try {
          cal = await gpu.CudaBlockCalibration.start(c, weights.embedding, windows, tmp, calibOpts, runs);
        } catch (e) {
          // auto: a shape the cuda kernels do not take is calibrated on the CPU instead
          if (want === "cuda" || !(e instanceof UserError)) throw e;
          log(`${e.message.replace(/^build --backend cuda: /, "calibration on the GPU: ")}; on the CPU instead`);
        }
      }
      calibBackend = cal ? "cuda" : "ort";
      log(
        `calibrating and quantizing block by block on ${windows.length} × ${Math.max(...windows.map((w) => w.length))} tokens, ` +
          (cal ? "on the GPU (float16 matrices)" : "with onnxruntime on the CPU") +
          (gptq ? ` (GPTQ${refit ? ", each block's inputs from the blocks before it quantized" : ""})` : ""),
      );
      cal ??= await BlockCalibration.start(c, weights.embedding, windows, tmp, calibOpts, runs);
      calib = { stats: cal.stats, samples: cal.samples, length: cal.length };
      Object.assign(params, {
        calibrationBackend: calibBackend,
        percentile: opts.recipe === "w8a8-naive" || opts.recipe === "w4a16" ? null : percentile,
        hadamard: rotates(opts.recipe),
        foldedNorms: true,
        weightBits: opts.recipe.startsWith("w4") ? 4 : 8,
        activationBits: opts.recipe === "w4a16" ? 16 : 8,
        ...(opts.recipe.startsWith("w4")
          ? {
              groupSize: 128,
              groupScales,
              weightRounding: gptq ? "gptq" : "rtn",
              ...(gptq ? { gptqDamp: 0.01, gptqActOrder: opts.actOrder ?? false, gptqInputs: opts.gptqInputs ?? "float" } : {}),
            }
          : { weightScales: "per output channel" }),
        float16: [...(embedding === "q4" ? [] : ["embedding", "lm_head"]), "dt_proj"],
        ...(c.arch === "mamba2" && (opts.recipe === "w8a8" || opts.recipe === "w4a8") ? { ssmScales } : {}),
      });
      plan = quantPlan(
        {
          recipe: opts.recipe as Exclude<Recipe, "fp16">,
          calib,
          gptq,
          actOrder: gptq && (opts.actOrder ?? false),
          group: 128,
          groupScales,
          arch: c.arch,
          nHeads: c.nHeads,
          headDim: c.headDim,
          nGroups: c.nGroups,
          ssmScales,
        },
        canonical,
        scales,
      );
      em = quantEmitter(file, plan);
    }
    // one block at a time: read, rewrite, calibrate, quantize; only the quantized weights are kept
    const phases = { read: (performance.now() - t0) / 1000, calibrate: 0, quantize: 0, write: 0 };
    const timed = async <T>(phase: keyof typeof phases, f: () => T | Promise<T>): Promise<T> => {
      const t = performance.now();
      try {
        return await f();
      } finally {
        phases[phase] += (performance.now() - t) / 1000;
      }
    };
    for (let l = 0; l < c.nLayer; l++) {
      const L = await timed("read", () => src.layer(l));
      if (quantized) transformLayer(c, L, opts.recipe);
      layerTensors(canonical, c, l, L, opts.recipe);
      const k = cal;
      if (k && plan) {
        const outputs = await timed("calibrate", () => k.observe(l, L));
        await timed("quantize", () => quantizeBlock(plan, c, l, L));
        k.advance(refit ? await timed("calibrate", () => k.run(l, dequantizedBlock(plan, c, l, L))) : outputs);
        for (const [n, st] of k.stats) if (n.startsWith(`l${l}.`)) delete st.xtx;
        dropMatrices(L);
      }
      weights.layers.push(L);
    }
    src.close();
    const head = cal;
    if (head && embedding === "q4" && gptq) await timed("calibrate", () => head.observeHead(weights.normF));
    cal?.close();
    if (embedding === "q4") {
      // by GPTQ over lm_head's calibration inputs where there are Hessians (a tied table serves both)
      const xtx = calib?.stats.get("lm_head")?.xtx;
      log(`quantizing the embedding and lm_head to 4 bits${xtx ? " (GPTQ)" : ""}`);
      const tied = weights.lmHead === weights.embedding;
      const e = await timed("quantize", () => quantizeTable(weights.embedding, c.vocabSize, c.dModel, groupScales, tied ? xtx : undefined));
      const tables = {
        embedding: e,
        lmHead: tied ? e : await timed("quantize", () => quantizeTable(weights.lmHead, c.vocabSize, c.dModel, groupScales, xtx)),
      };
      canonical.delete("embedding");
      canonical.delete("lm_head");
      for (const [n, t] of tableTensors("embedding", tables.embedding, c.vocabSize, c.dModel)) canonical.set(n, t);
      if (tables.lmHead !== tables.embedding)
        for (const [n, t] of tableTensors("lm_head", tables.lmHead, c.vocabSize, c.dModel)) canonical.set(n, t);
      params.embedding = {
        bits: 4,
        groupSize: e.group,
        rounding: xtx ? "gptq" : "rtn",
        groupScales,
        tied: tables.lmHead === tables.embedding,
      };
      em = q4TableEmitter(em, file, tables.embedding, tables.lmHead);
    }

    // onnxruntime graphs sharing cpu/weights.bin
    // (*-fused.onnx: with the fused operators of engines/ort-ops, used where that library loads)
    const graphs = [
      ["step", "step", false],
      ["step-fused", "step", true],
      ["prefill", "prefill", false],
      ["prefill-fused", "prefill", true],
    ] as const;
    const graphFiles: string[] = [];
    const cpuGraphs: [string, Graph, boolean][] = [];
    if (targets.includes("cpu")) {
      for (const [name, mode, fused] of graphs) {
        log(`exporting cpu/${name}.onnx`);
        const g = new Graph(`mamba_edge_${name.replace("-", "_")}`);
        buildGraph(g, c, weights as Weights<Mamba1Layer>, file, em, mode, { fused });
        cpuGraphs.push([name, g, fused]);
      }
      graphFiles.push(...graphs.map(([name]) => `cpu/${name}.onnx`), "cpu/weights.bin");
    }
    // TensorRT graphs over the same quantized weights (the plan quantizes each layer once)
    let trt: TrtManifest | undefined;
    if (targets.includes("trt")) {
      const r = await writeTrtGraphs(tmp, c, weights as Weights<Mamba1Layer>, plan, log);
      graphFiles.push(...r.files);
      trt = { domain: TRT_DOMAIN, opsVersion: TRT_DOMAIN_VERSION, opset: 21, pluginLimits: r.limits };
      if (r.limits.length)
        log(`warning: trt: the plugins refuse this model's sizes (${r.limits.join("; ")}): TensorRT cannot build a plan of it`);
    }
    if (plan?.errors.size) {
      const e = [...plan.errors.values()];
      const mean = (f: (x: { gptq: number; rtn: number }) => number) => e.reduce((a, x) => a + f(x), 0) / e.length;
      params.reconstructionError = {
        gptqMean: mean((x) => x.gptq),
        rtnMean: mean((x) => x.rtn),
        layers: Object.fromEntries([...plan.errors].map(([n, x]) => [n, [x.gptq, x.rtn]])),
      };
      log(
        `GPTQ: relative output error ${mean((x) => x.gptq).toExponential(2)} on average per layer (round-to-nearest: ${mean((x) => x.rtn).toExponential(2)})`,
      );
    }
    // canonical quantized tensors (what native backends load, and the cpu graphs' big matrices)
    const offsets = writeSafetensors(join(tmp, "weights.safetensors"), canonical, { format: FORMAT, recipe: opts.recipe });
    if (cpuGraphs.length) {
      file.placePackage(offsets);
      mkdirSync(join(tmp, "cpu"));
      for (const [name, g, fused] of cpuGraphs)
        writeFileSync(join(tmp, "cpu", `${name}.onnx`), g.serialize(21, true, fused ? { [OPS_DOMAIN]: OPS_DOMAIN_VERSION } : {}));
      await file.write(join(tmp, "cpu", "weights.bin"));
    }

    const tokenizer = join(opts.modelDir, "tokenizer.json");
    const hasTokenizer = !opts.random && existsSync(tokenizer);
    if (hasTokenizer) copyFileSync(tokenizer, join(tmp, "tokenizer.json"));

    const files: Manifest["files"] = {};
    for (const name of ["weights.safetensors", ...graphFiles, ...(hasTokenizer ? ["tokenizer.json"] : [])]) {
      const p = join(tmp, name);
      files[name] = { sha256: sha256File(p), bytes: statSync(p).size };
    }
    const sourceWeights = opts.random
      ? null
      : ["model.safetensors", "model.safetensors.index.json"].find((f) => existsSync(join(opts.modelDir, f)))!;
    const manifest: Manifest & { trt?: TrtManifest } = {
      format: FORMAT,
      version: FORMAT_VERSION,
      builder: { name: "mamba-edge", version: BUILDER_VERSION },
      created: new Date().toISOString(),
      source: sourceWeights
        ? {
            name: basename(resolve(opts.modelDir)),
            configSha256: sha256File(join(opts.modelDir, "config.json")),
            weightsSha256: sha256File(join(opts.modelDir, sourceWeights)),
          }
        : {
            name: `${opts.modelDir} (random weights, seed 0)`,
            configSha256: sha256(JSON.stringify(SHAPES[opts.modelDir])),
            weightsSha256: sha256(`random:${opts.modelDir}:0`),
          },
      config: c,
      quant: { recipe: opts.recipe, params, scales },
      calibration:
        calib && text !== null
          ? {
              textSha256: sha256(text),
              samples: calib.samples,
              length: calib.length,
              percentile: (params.percentile as number | null) ?? null,
            }
          : null,
      tokenizer: hasTokenizer ? "tokenizer.json" : null,
      targets,
      files,
      ...(trt ? { trt } : {}),
    };
    // JSON has no Infinity: the dt limit's upper end is written as null when unbounded
    writeFileSync(join(tmp, "manifest.json"), JSON.stringify(manifest, (_, v) => (v === Infinity ? null : v), 2) + "\n");
    rmSync(out, { recursive: true, force: true });
    renameSync(tmp, out);
    const bytes = Object.values(files).reduce((s, f) => s + f.bytes, 0);
    phases.write = (performance.now() - t0) / 1000 - phases.read - phases.calibrate - phases.quantize;
    return { out, manifest, seconds: (performance.now() - t0) / 1000, bytes, gptq: gptqIn, calibration: calibBackend, phases };
  } catch (e) {
    src.close();
    cal?.close();
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

function parseTokenFile(path: string, text: string, vocab: number): number[] {
  const parts = text.split(/[\s,[\]]+/).filter(Boolean);
  const ids = parts.map(Number);
  const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
  if (bad >= 0) throw new UserError(`${path}: expected token ids in [0, ${vocab}), found ${JSON.stringify(parts[bad])}`);
  return ids;
}

function readCalibText(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UserError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  if (text.trim().length === 0) throw new UserError(`${path}: calibration text is empty`);
  return text;
}

/** Quantizes block l's linear layers (once: every graph then takes them from the plan). */
function quantizeBlock(plan: QuantPlan, c: ModelConfig, l: number, L: Mamba1Layer | Mamba2Layer): void {
  for (const [name, key, outDim, inDim] of blockMatrices(c, l, L)) plan.weights(name, field(L, key), outDim, inDim);
}

/** Block l with its linear layers' weights as the plan rounds them (for the next block's inputs). */
function dequantizedBlock(plan: QuantPlan, c: ModelConfig, l: number, L: Mamba1Layer | Mamba2Layer): Mamba1Layer | Mamba2Layer {
  const deq = (name: string, W: Float32Array, outDim: number, inDim: number): Float32Array => {
    const q = plan.weights(name, W, outDim, inDim);
    if (!q) return W;
    const out = new Float32Array(W.length);
    const nG = q.kind === "int4" ? Math.ceil(inDim / q.group) : 1;
    for (let o = 0; o < outDim; o++)
      for (let i = 0; i < inDim; i++)
        out[o * inDim + i] = q.q[o * inDim + i] * (q.kind === "int4" ? q.scale[o * nG + Math.floor(i / q.group)] : q.scale[o]);
    return out;
  };
  const r: Record<string, unknown> = { ...L };
  for (const [name, key, outDim, inDim] of blockMatrices(c, l, L)) r[key] = deq(name, field(L, key), outDim, inDim);
  return r as unknown as Mamba1Layer | Mamba2Layer;
}

type MatrixKey = "inProj" | "outProj" | "xProj";
const field = (L: Mamba1Layer | Mamba2Layer, key: MatrixKey) => (L as Mamba1Layer)[key];

/** Block l's quantized matrices: name, field, out, in. */
function blockMatrices(c: ModelConfig, l: number, L: Mamba1Layer | Mamba2Layer): [string, MatrixKey, number, number][] {
  const m: [string, MatrixKey, number, number][] = [[`l${l}.in_proj`, "inProj", L.inProj.length / c.dModel, c.dModel]];
  if (c.arch === "mamba1") m.push([`l${l}.x_proj`, "xProj", c.dtRank + 2 * c.dState, c.dInner]);
  m.push([`l${l}.out_proj`, "outProj", c.dModel, c.dInner]);
  return m;
}

/** Frees a quantized block's float matrices: the plan holds what the graphs use. */
function dropMatrices(L: Mamba1Layer | Mamba2Layer): void {
  L.inProj = L.outProj = new Float32Array(0);
  if ("xProj" in L) L.xProj = new Float32Array(0);
}

/**
 * Exact rewrites before quantization: the block's RMSNorm weight moves into in_proj (the norm then
 * has unit weight), and for Hadamard recipes out_proj's weight absorbs the rotation its input gets.
 */
function transformLayer(c: ModelConfig, L: Mamba1Layer | Mamba2Layer, recipe: Recipe): void {
  L.inProj = foldNorm(L.inProj, L.inProj.length / c.dModel, c.dModel, L.norm);
  L.norm = new Float32Array(c.dModel).fill(1);
  if (rotates(recipe)) L.outProj = rotateInputs(L.outProj, c.dModel, c.dInner);
}

function headTensors(c: ModelConfig, w: Omit<Weights<unknown>, "layers">): Map<string, OutTensor> {
  const t = new Map<string, OutTensor>();
  t.set("embedding", { dtype: "F16", shape: [c.vocabSize, c.dModel], data: toHalf(w.embedding) });
  if (w.lmHead !== w.embedding) t.set("lm_head", { dtype: "F16", shape: [c.vocabSize, c.dModel], data: toHalf(w.lmHead) });
  t.set("norm_f", { dtype: "F32", shape: [c.dModel], data: w.normF });
  return t;
}
