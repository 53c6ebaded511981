// Opens what runs a model: an engine package (backend ort, cuda or trt), a checkpoint directory (the
// TypeScript reference), or a random model of a published shape (for benchmarks). Building an
// engine is not done here: the CLI resolves a default engine before it calls openBackend.
import { existsSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import type { Backend } from "./backend.js";
import { RefBackend } from "./ref.js";
import { UserError } from "../../engines/errors.js";
import type { Manifest } from "../../engines/package/manifest.js";
import { isWeightFile } from "../../engines/package/size.js";
import { matchingPlan, type PlannedManifest } from "../../engines/package/plans.js";
import type { ModelConfig } from "../../engines/model/config.js";
import { MambaModel } from "../../engines/model/model.js";
import { setReferenceThreads } from "../../engines/model/parallel.js";
import { randomModel } from "../../engines/model/random.js";
import { Tokenizer } from "../../engines/model/tokenizer.js";
import { defaultModelDir } from "../paths.js";

export interface Opened {
  backend: Backend;
  config: ModelConfig;
  /** what was opened, as the user would type it from here */
  label: string;
  /** directory holding tokenizer.json, if any */
  tokenizerDir: string | null;
  /** bytes of weights the backend holds (reference: float32 in memory; engine: its weight files on disk) */
  weightBytes: number;
  /** the engine's quantization recipe, or "fp32" for the reference */
  recipe: string;
  /** with --backend auto: why this backend was picked */
  why?: string;
}

export type BackendName = "ref" | "ort" | "cuda" | "trt" | "auto";

export interface Target {
  model?: string;
  engine?: string;
  random?: string;
  /** which backend runs an engine: ort (default, CPU), cuda, trt, or auto (trt, else cuda, else ort) */
  backend?: BackendName;
  /** CPU threads: backend ort's intra-op threads (default: one per core); the reference: 1 or 2 */
  threads?: number;
}

export function shortPath(dir: string): string {
  const rel = relative(process.cwd(), resolve(dir));
  return rel && !rel.startsWith("..") ? rel : dir;
}

/** What is to run, the CLI's --model / --engine / --random / --backend / --threads. */
/** Refuses a target that names two things or a bad thread count, before anything is opened or built. */
export function checkTarget(t: Target): void {
  const given = [t.model, t.engine, t.random].filter((x) => x !== undefined).length;
  if (given > 1) throw new UserError("give one of --model, --engine, --random");
  const threads = t.threads;
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1))
    throw new UserError(`--threads: expected a positive integer, found ${threads}`);
  // the CPU backends' thread count; backend cuda would silently ignore it
  if (threads !== undefined && (t.backend === "cuda" || t.backend === "trt"))
    throw new UserError(`--threads applies to the CPU backends (ort and the reference), not to backend ${t.backend}`);
}

export async function openBackend(t: Target): Promise<Opened> {
  checkTarget(t);
  const threads = t.threads;
  const given = [t.model, t.engine, t.random].filter((x) => x !== undefined).length;
  // with nothing named: the demo model for the reference (an engine is the caller's to resolve)
  if (given === 0) {
    if (t.backend !== "ref") throw new UserError("no model to run: give --engine NAME.mamba or --model DIR");
    t = { ...t, model: defaultModelDir };
  }
  if (t.backend === "auto") {
    // auto chooses among the engine backends; a checkpoint or random model runs on the reference
    if (t.engine === undefined) return openBackend({ ...t, backend: undefined });
    const pick = await pickBackend(t.engine);
    if (pick.name === "ort") return { ...(await openBackend({ ...t, backend: "ort" })), why: pick.why };
    // usable here, yet the engine may not open on it (a shape the kernels lack, a bad plan): the next one
    const notes: string[] = [];
    for (const name of pick.name === "trt" ? (["trt", "cuda"] as const) : (["cuda"] as const)) {
      if (name !== pick.name) {
        const no = await cudaUnusable();
        if (no !== null) {
          notes.push(`not cuda (${no})`);
          continue;
        }
      }
      try {
        const o = await openBackend({ ...t, backend: name, threads: undefined });
        return { ...o, why: notes.length ? `${notes.join("; ")}; the cuda library loads and sees a GPU` : pick.why };
      } catch (e) {
        if (!(e instanceof UserError)) throw e;
        notes.push(`${name} is usable but did not open the engine: ${e.message}`);
      }
    }
    return { ...(await openBackend({ ...t, backend: "ort" })), why: notes.join("; ") };
  }
  if (t.backend === "cuda") return openCuda(t);
  if (t.backend === "trt") {
    if (t.engine === undefined) throw new UserError("--backend trt runs an engine package: give --engine NAME.mamba");
    const { TrtBackend } = await import("./trt.js"); // loads koffi and the shim only here
    return engineOpened(t.engine, await TrtBackend.open(t.engine));
  }
  if (t.backend === "ort" && t.engine === undefined) throw new UserError("--backend ort runs an engine package: give --engine NAME.mamba");
  if (t.engine !== undefined) {
    if (t.backend === "ref") throw new UserError("--backend ref runs a checkpoint: give --model DIR instead of --engine");
    const { OrtBackend } = await import("./ort.js"); // loads onnxruntime-node only here
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
  const { CudaBackend } = await import("./cuda.js"); // loads koffi and the native library only here
  return engineOpened(t.engine, await CudaBackend.open(t.engine));
}

/**
 * --backend auto: trt when the package has a plan for this GPU and TensorRT version and both are
 * here, else cuda when its native library loads and sees a GPU, else ort; with the reason.
 */
export async function pickBackend(engine: string): Promise<{ name: "trt" | "cuda" | "ort"; why: string }> {
  const noTrt = await trtUnusable(engine);
  if (noTrt === null) return { name: "trt", why: "the engine has a TensorRT plan for this GPU and TensorRT version" };
  const noCuda = await cudaUnusable();
  if (noCuda === null) return { name: "cuda", why: `not trt (${noTrt}); the cuda library loads and sees a GPU` };
  return { name: "ort", why: `not trt (${noTrt}); not cuda (${noCuda})` };
}

/** Why backend trt cannot run this engine here, or null when it can. */
async function trtUnusable(engine: string): Promise<string | null> {
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(join(engine, "manifest.json"), "utf8")) as Manifest;
  } catch {
    return "no readable manifest.json"; // the backend that opens it says what is wrong
  }
  if (trtPlansOf(m).length === 0) return "the engine has no TensorRT plan: `mamba-edge compile` makes one on the device";
  const { loadTrtShim, probeMachine } = await import("./trt.js");
  try {
    const machine = probeMachine(await loadTrtShim());
    return matchingPlan(m, engine, machine.gpu, machine.tensorrt) ? null : "no plan for this machine";
  } catch (e) {
    if (e instanceof UserError) return e.message.replace(/^backend trt: /, "");
    throw e;
  }
}

/** Why backend cuda cannot run here, or null when its library loads and sees a GPU. */
async function cudaUnusable(): Promise<string | null> {
  const { loadNativeLibrary } = await import("./cuda.js");
  try {
    return (await loadNativeLibrary()).me_device_count() > 0 ? null : "no CUDA GPU is visible";
  } catch (e) {
    if (e instanceof UserError) return e.message.replace(/^backend cuda: /, "");
    throw e;
  }
}

function trtPlansOf(m: Manifest): unknown[] {
  const p = (m as PlannedManifest).trtPlans;
  return Array.isArray(p) ? p : [];
}

function engineOpened(dir: string, backend: Backend & { manifest: Manifest }): Opened {
  const m = backend.manifest;
  return {
    backend,
    config: m.config,
    label: shortPath(dir),
    tokenizerDir: m.tokenizer ? dir : null,
    weightBytes: Object.entries(m.files)
      .filter(([name]) => isWeightFile(name))
      .reduce((s, [, f]) => s + f.bytes, 0),
    recipe: m.quant.recipe,
  };
}

function loadModel(dir: string): MambaModel {
  if (!existsSync(dir)) throw new UserError(`${dir}: no such directory`);
  return MambaModel.load(dir);
}

export function openTokenizer(o: Opened): Tokenizer {
  if (!o.tokenizerDir) throw new UserError(`${o.label} has no tokenizer: give a --model or --engine with a tokenizer.json`);
  return Tokenizer.load(o.tokenizerDir);
}
