// The engine package (a directory NAME.mamba): manifest.json describes it and lists every file
// with its sha256; loading verifies the format, the version and every file before use.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { UserError, describe } from "../errors.js";
import type { ModelConfig } from "../model/config.js";

export const FORMAT = "mamba-edge-engine";
export const FORMAT_VERSION = 3;

export type Recipe = "fp16" | "w8a8" | "w4a8" | "w4a16" | "w8a8-naive";

export interface Manifest {
  format: typeof FORMAT;
  version: number;
  builder: { name: string; version: string };
  created: string;
  source: { name: string; configSha256: string; weightsSha256: string };
  config: ModelConfig;
  quant: { recipe: Recipe; params: Record<string, unknown>; scales: Record<string, unknown> };
  calibration: { textSha256: string; samples: number; length: number; percentile: number | null } | null;
  tokenizer: string | null;
  targets: string[];
  files: Record<string, { sha256: string; bytes: number }>;
}

export function sha256File(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Reads and verifies NAME.mamba/manifest.json and every file it lists. */
export function loadManifest(dir: string): Manifest {
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new UserError(`${dir}: no such engine package (expected a NAME.mamba directory)`);
  const path = join(dir, "manifest.json");
  if (!existsSync(path)) throw new UserError(`${path}: missing (not an engine package)`);
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (m.format !== FORMAT) throw new UserError(`${path}: field format: expected "${FORMAT}", found ${describe(m.format)}`);
  if (m.version !== FORMAT_VERSION) {
    throw new UserError(
      `${path}: field version: this build reads engine format version ${FORMAT_VERSION}, found ${describe(m.version)} (rebuild the engine)`,
    );
  }
  if (!m.files || typeof m.files !== "object") throw new UserError(`${path}: field files is missing`);
  for (const [name, want] of Object.entries(m.files)) {
    const f = join(dir, name);
    if (!existsSync(f)) throw new UserError(`${f}: missing (listed in manifest.json)`);
    const bytes = statSync(f).size;
    if (bytes !== want.bytes) throw new UserError(`${f}: ${bytes} bytes, manifest.json says ${want.bytes} (truncated or replaced)`);
    const got = sha256File(f);
    if (got !== want.sha256)
      throw new UserError(
        `${f}: sha256 ${got.slice(0, 12)}… does not match manifest.json (${want.sha256.slice(0, 12)}…): corrupted or replaced`,
      );
  }
  return m;
}
