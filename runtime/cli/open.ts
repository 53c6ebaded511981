// What a CLI command runs on: the backend opener of runtime/backends, plus the default engine, which
// the CLI builds from the bundled demo model on first use (the one place the runtime calls the builder).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { FORMAT_VERSION, type Manifest } from "../../engines/package/manifest.js";
import { checkTarget, openBackend, shortPath, type Opened, type Target } from "../backends/open.js";
import { defaultEngineDir, defaultModelDir, packageRoot } from "../paths.js";
import { checkReferenceThreads, checkpointDir } from "./flags.js";

export { openTokenizer, type Opened, type Target } from "../backends/open.js";

/**
 * Opens the target; with no model named (and not the reference), the default engine, built once.
 * What --backend auto picked, and why, goes to stderr unless `announce` says otherwise.
 */
export async function openTarget(t: Target, announce: (backend: string, why: string) => void = stderrPick): Promise<Opened> {
  if (t.model !== undefined) t = { ...t, model: checkpointDir(t.model) };
  checkTarget(t); // before the default engine may be built
  checkReferenceThreads(t);
  const named = t.model !== undefined || t.engine !== undefined || t.random !== undefined;
  const o = !named && t.backend !== "ref" ? await openBackend({ ...t, engine: await ensureDefaultEngine() }) : await openBackend(t);
  if (o.why !== undefined) announce(o.backend.info.name, o.why);
  return o;
}

function stderrPick(backend: string, why: string): void {
  process.stderr.write(`backend auto: ${backend} (${why})\n`);
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

/** The --model / --engine options every command that runs a model takes. */
export const targetOptions = {
  model: { type: "string", describe: "checkpoint directory (Hugging Face or state-spaces layout), run by the TypeScript reference" },
  backend: {
    type: "string",
    choices: ["ref", "ort", "cuda", "trt", "auto"],
    describe:
      "what runs the model: ref (TypeScript, --model), ort (onnxruntime on the CPU, --engine), cuda (native kernels on an NVIDIA GPU, --engine), trt (the engine's TensorRT plan for this GPU, from `mamba-edge compile`) or auto (trt if such a plan exists, else cuda if a GPU is usable, else ort; the default of serve)",
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
