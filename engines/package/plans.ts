// TensorRT plans in an engine package: `mamba-edge compile` builds them on the device from
// trt/step.onnx and trt/prefill.onnx and records them in manifest.json (field trtPlans, beside
// files, which lists each plan with its sha256 like any other file). A plan runs only on the GPU and
// TensorRT version it was compiled with, so each entry names both.
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";
import type { Manifest } from "./manifest.js";

/** One compilation of trt/*.onnx on one device. */
export interface TrtPlan {
  /** the GPU's name as CUDA reports it ("Orin") and its compute capability (87) */
  gpu: string;
  sm: number;
  /** TensorRT's library version, "10.3.0" */
  tensorrt: string;
  /** the step plan and the prefill plan (or null), package-relative, each also under `files` */
  step: string;
  prefill: string | null;
  sha256: { step: string; prefill: string | null };
  /** the step plan's batch buckets (an optimization profile each) and the prefill's chunk sizes */
  batches: number[];
  chunks: number[];
  created: string;
}

export type PlannedManifest = Manifest & { trtPlans?: TrtPlan[] };

/** TensorRT's version number (10.3.0 is 100300) as text. */
export function tensorrtVersion(v: number): string {
  return `${Math.floor(v / 10000)}.${Math.floor(v / 100) % 100}.${v % 100}`;
}

/** A plan's path without extension: trt/<gpu>-trt<version>, the GPU's name in lower case with dashes. */
export function planStem(gpu: string, tensorrt: string): string {
  const slug =
    gpu
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-|-$/g, "") || "gpu";
  return `trt/${slug}-trt${tensorrt}`;
}

/** The plans recorded in a manifest, each checked to be listed under files. */
export function trtPlans(m: Manifest, dir: string): TrtPlan[] {
  const plans = (m as PlannedManifest).trtPlans ?? [];
  if (!Array.isArray(plans)) throw new UserError(`${join(dir, "manifest.json")}: field trtPlans: expected an array`);
  plans.forEach((p, i) => {
    for (const f of [p?.step, p?.prefill])
      if (f !== null && (typeof f !== "string" || !(f in m.files)))
        throw new UserError(`${join(dir, "manifest.json")}: field trtPlans[${i}]: plan ${String(f)} is not listed in files`);
  });
  return plans;
}

/**
 * The package's plan for this GPU and TensorRT version, or null when it has none at all. A package
 * whose plans are all for other machines is refused in one line: a plan never runs elsewhere.
 */
export function matchingPlan(m: Manifest, dir: string, gpu: string, tensorrt: string): TrtPlan | null {
  const plans = trtPlans(m, dir);
  const hit = plans.find((p) => p.gpu === gpu && p.tensorrt === tensorrt);
  if (hit || plans.length === 0) return hit ?? null;
  const had = plans.map((p) => `${p.gpu} with TensorRT ${p.tensorrt}`).join(", ");
  throw new UserError(
    `${dir}: its TensorRT plans were compiled for ${had}, this machine has ${gpu} with TensorRT ${tensorrt} (run \`mamba-edge compile ${dir}\` here)`,
  );
}

/** Records a plan (replacing one for the same GPU and TensorRT version) and its files; atomic write. */
export function recordPlan(
  dir: string,
  m: Manifest,
  plan: TrtPlan,
  files: Record<string, { sha256: string; bytes: number }>,
): PlannedManifest {
  const old = trtPlans(m, dir);
  const kept = old.filter((p) => !(p.gpu === plan.gpu && p.tensorrt === plan.tensorrt));
  const next: PlannedManifest = { ...m, files: { ...m.files, ...files }, trtPlans: [...kept, plan] };
  const path = join(dir, "manifest.json");
  writeFileSync(`${path}.tmp`, JSON.stringify(next, null, 2) + "\n");
  renameSync(`${path}.tmp`, path);
  return next;
}
