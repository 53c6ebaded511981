// Resolves what the CLI runs on: an engine package (--engine, backend ort), a checkpoint directory
// (--model, the TypeScript reference), the bundled demo model by default, or a random model of a
// published shape (--random, for benchmarks).
import { existsSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import type { Backend } from "../backends/backend.js";
import { RefBackend } from "../backends/ref.js";
import { UserError } from "../../engines/errors.js";
import { FORMAT_VERSION, type Manifest } from "../../engines/package/manifest.js";
import type { ModelConfig } from "../../engines/model/config.js";
import { MambaModel } from "../../engines/model/model.js";
import { setReferenceThreads } from "../../engines/model/parallel.js";
import { randomModel } from "../../engines/model/random.js";
import { Tokenizer } from "../../engines/model/tokenizer.js";
import { packageRoot } from "../paths.js";

/** The bundled demo model. */
export const defaultModelDir = join(packageRoot, "models", "mamba2-brown");
/** The engine the CLI runs when given no model: built from the demo model on first use. */
export const defaultEngineDir = join(packageRoot, "models", "engines", "mamba2-brown-w8a8.mamba");

export interface Opened {
  backend: Backend;
  config: ModelConfig;
  /** what was opened, as the user would type it from here */
  label: string;
  /** directory holding tokenizer.json, if any */
  tokenizerDir: string | null;
  /** bytes of weights the backend holds (reference: float32 in memory; engine: package on disk) */
  weightBytes: number;
  /** the engine's quantization recipe, or "fp32" for the reference */
  recipe: string;
}

export type BackendName = "ref" | "ort" | "cuda";

export interface Target {
  model?: string;
  engine?: string;
  random?: string;
  /** which backend runs an engine: ort (default, CPU) or cuda */
  backend?: BackendName;
  /** CPU threads: backend ort's intra-op threads (default: one per core); the reference: 1 or 2 */
  threads?: number;
}

function shortPath(dir: string): string {
  const rel = relative(process.cwd(), resolve(dir));
  return rel && !rel.startsWith("..") ? rel : dir;
}

export async function openTarget(t: Target): Promise<Opened> {
  const given = [t.model, t.engine, t.random].filter((x) => x !== undefined).length;
  if (given > 1) throw new UserError("give one of --model, --engine, --random");
  // (before the default engine may be built: a bad count is refused at once)
  const threads = t.threads;
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1))
    throw new UserError(`--threads: expected a positive integer, found ${threads}`);
  // the CPU backends' thread count; backend cuda would silently ignore it
  if (threads !== undefined && t.backend === "cuda")
    throw new UserError("--threads applies to the CPU backends (ort and the reference), not to backend cuda");
  // with nothing named: the demo model for the reference, else the default engine
  if (given === 0) t = t.backend === "ref" ? { ...t, model: defaultModelDir } : { ...t, engine: await ensureDefaultEngine() };
  if (t.backend === "cuda") return openCuda(t);
  if (t.backend === "ort" && t.engine === undefined) throw new UserError("--backend ort runs an engine package: give --engine NAME.mamba");
  if (t.engine !== undefined) {
    if (t.backend === "ref") throw new UserError("--backend ref runs a checkpoint: give --model DIR instead of --engine");
    const { OrtBackend } = await import("../backends/ort.js"); // loads onnxruntime-node only here
    return engineOpened(t.engine, await OrtBackend.open(t.engine, { threads }));
  }
  if (threads !== undefined) setReferenceThreads(threads);
  const model = t.random ? randomModel(t.random) : loadModel(t.model ?? defaultModelDir);
  const w = model.weights;
  const tensors = [w.embedding, w.normF, ...(w.lmHead === w.embedding ? [] : [w.lmHead]), ...w.layers.flatMap((l) => Object.values(l))];
  return {
    backend: new RefBackend(model),
    config: model.config,
    label: t.random ? `${t.random} (random weights)` : shortPath(t.model ?? defaultModelDir),
    tokenizerDir: t.random ? null : (t.model ?? defaultModelDir),
    weightBytes: tensors.filter((x): x is Float32Array => x instanceof Float32Array).reduce((s, x) => s + x.byteLength, 0),
    recipe: "fp32",
  };
}

async function openCuda(t: Target): Promise<Opened> {
  if (t.engine === undefined) throw new UserError("--backend cuda runs an engine package: give --engine NAME.mamba");
  const { CudaBackend } = await import("../backends/cuda.js"); // loads koffi and the native library only here
  return engineOpened(t.engine, await CudaBackend.open(t.engine));
}

function engineOpened(dir: string, backend: Backend & { manifest: Manifest }): Opened {
  const m = backend.manifest;
  return {
    backend,
    config: m.config,
    label: shortPath(dir),
    tokenizerDir: m.tokenizer ? dir : null,
    weightBytes: Object.values(m.files).reduce((s, f) => s + f.bytes, 0),
    recipe: m.quant.recipe,
  };
}

/** Builds the default engine (w8a8 of the Mamba-2 demo model) once, with progress on stderr. */
async function ensureDefaultEngine(): Promise<string> {
  const found = builtVersion(defaultEngineDir);
  if (isCurrent(defaultEngineDir)) return defaultEngineDir;
  const { build } = await import("../../engines/builder/build.js");
  const { progress } = await import("./progress.js");
  process.stderr.write(
    found === null
      ? `building the default engine ${shortPath(defaultEngineDir)} from ${shortPath(defaultModelDir)} (once)\n`
      : found !== FORMAT_VERSION
        ? `rebuilding the default engine ${shortPath(defaultEngineDir)}: it has engine format version ${found}, this build reads ${FORMAT_VERSION}\n`
        : `rebuilding the default engine ${shortPath(defaultEngineDir)}: it predates the fused graphs (cpu/*-fused.onnx)\n`,
  );
  let bar: ReturnType<typeof progress> | null = null;
  try {
    await build({
      modelDir: defaultModelDir,
      recipe: "w8a8",
      out: defaultEngineDir,
      force: found !== null,
      calibText: join(packageRoot, "data", "brown", "calib.txt"),
      progress: (label, done, total) => {
        bar ??= progress(label, total);
        bar.update(done);
        if (done === total) bar.stop();
      },
    });
  } catch (e) {
    // another process may have built it meanwhile
    if (!isCurrent(defaultEngineDir)) throw e;
  }
  return defaultEngineDir;
}

/** The format version of the engine in `dir`; null when there is none (or no readable manifest). */
function builtVersion(dir: string): number | null {
  const v = readManifest(dir)?.version;
  return typeof v === "number" ? v : null;
}

/** The engine in `dir` is of this format version and has every graph this build writes. */
function isCurrent(dir: string): boolean {
  const m = readManifest(dir);
  return m?.version === FORMAT_VERSION && ["cpu/step-fused.onnx", "cpu/prefill-fused.onnx"].every((f) => f in (m.files ?? {}));
}

function readManifest(dir: string): Partial<Manifest> | null {
  try {
    return JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  } catch {
    return null;
  }
}

function loadModel(dir: string): MambaModel {
  if (!existsSync(dir)) throw new UserError(`${dir}: no such directory`);
  return MambaModel.load(dir);
}

export function openTokenizer(o: Opened): Tokenizer {
  if (!o.tokenizerDir) throw new UserError(`${o.label} has no tokenizer: give a --model or --engine with a tokenizer.json`);
  return Tokenizer.load(o.tokenizerDir);
}

/** The --model / --engine options every command that runs a model takes. */
export const targetOptions = {
  model: { type: "string", describe: "checkpoint directory (Hugging Face or state-spaces layout), run by the TypeScript reference" },
  backend: {
    type: "string",
    choices: ["ref", "ort", "cuda"],
    describe:
      "what runs the model: ref (TypeScript, --model), ort (onnxruntime on the CPU, --engine) or cuda (native kernels on an NVIDIA GPU, --engine)",
  },
  engine: {
    type: "string",
    describe:
      "engine package NAME.mamba (from `mamba-edge build`), run by onnxruntime on the CPU, or by the GPU with --backend cuda; default: the demo engine, built on first use",
  },
  threads: {
    type: "number",
    describe: "CPU threads of backend ort (default: one per core; the reference: 1 or 2); fewer leave cores to the robot's other programs",
  },
} as const;
