// The engine package (a directory NAME.mamba): manifest.json describes it and lists every file
// with its sha256; loading verifies the format, the version and every file before use. The
// manifest is untrusted input: every name it lists must stay inside the package, and its config
// must agree with the weights it lists, before anything is opened on its word.
import { createHash } from "node:crypto";
import { lstatSync, readFileSync, realpathSync, statSync } from "node:fs";
import { join, sep } from "node:path";
import { z } from "zod";
import { UserError, describe } from "../errors.js";
import type { ModelConfig } from "../model/config.js";
import { SafetensorsFile } from "../model/safetensors.js";

export const FORMAT = "mamba-edge-engine";
export const FORMAT_VERSION = 4;

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

/** Largest manifest.json read (real ones are a few kB, most of it quantization scales). */
const MAX_MANIFEST_BYTES = 64 << 20;

const count = z.int().min(0);
const configSchema = z.looseObject({
  arch: z.enum(["mamba1", "mamba2"]),
  layout: z.enum(["hf", "state-spaces"]),
  vocabSize: z.int().min(1),
  dModel: z.int().min(1),
  nLayer: z.int().min(1),
  dInner: z.int().min(1),
  dState: z.int().min(1),
  dConv: z.int().min(1),
  convBias: z.boolean(),
  projBias: z.boolean(),
  normEps: z.number().gt(0),
  tiedEmbeddings: z.boolean(),
  eosTokenId: count.nullable(),
  dtRank: count,
  nHeads: count,
  headDim: count,
  nGroups: count,
  chunkSize: count,
  dtLimit: z.tuple([z.number(), z.number().nullable()]),
  gatedNormGroup: count,
  normBeforeGate: z.boolean(),
});

/** A plain relative name: segments of letters, digits, `.`, `_`, `-`, never `.` or `..`. */
const plainName = (name: string) => name.split("/").every((s) => /^[A-Za-z0-9._-]{1,255}$/.test(s) && s !== "." && s !== "..");

const manifestSchema = z.looseObject({
  format: z.literal(FORMAT),
  version: z.literal(FORMAT_VERSION),
  builder: z.looseObject({ name: z.string(), version: z.string() }),
  created: z.string(),
  source: z.looseObject({ name: z.string(), configSha256: z.string(), weightsSha256: z.string() }),
  config: configSchema,
  quant: z.looseObject({
    recipe: z.enum(["fp16", "w8a8", "w4a8", "w4a16", "w8a8-naive"]),
    params: z.record(z.string(), z.unknown()),
    scales: z.record(z.string(), z.unknown()),
  }),
  calibration: z.looseObject({ textSha256: z.string(), samples: count, length: count, percentile: z.number().nullable() }).nullable(),
  tokenizer: z.literal("tokenizer.json").nullable(),
  targets: z.array(z.string().min(1)).min(1),
  files: z.record(z.string(), z.strictObject({ sha256: z.string().regex(/^[0-9a-f]{64}$/), bytes: count })),
});

/** What every package holds, and what each target adds (the loaders open these by name). */
const REQUIRED: Record<string, string[]> = {
  "": ["weights.safetensors"],
  cpu: ["cpu/step.onnx", "cpu/prefill.onnx", "cpu/weights.bin"],
};

/** Reads and verifies NAME.mamba/manifest.json and every file it lists. */
export function loadManifest(dir: string): Manifest {
  if (!isDir(dir)) throw new UserError(`${dir}: no such engine package (expected a NAME.mamba directory)`);
  const path = join(dir, "manifest.json");
  const m = validate(path, readManifestText(path));
  const root = realpathSync(dir);
  const fail = (msg: string) => new UserError(`${path}: ${msg}`);
  // Every name is checked before any file is opened on the manifest's word.
  const names = Object.keys(m.files);
  if (names.length === 0) throw fail("field files: lists no files (expected every file of the package)");
  for (const name of names)
    if (!plainName(name)) throw fail(`field files: ${describe(name)} is not a plain relative name inside the package`);
  for (const need of [...REQUIRED[""], ...m.targets.flatMap((t) => REQUIRED[t] ?? [])])
    if (!(need in m.files)) throw fail(`field files: ${need} is not listed (every package of targets ${m.targets.join(", ")} has it)`);
  if (m.tokenizer !== null && !(m.tokenizer in m.files)) throw fail(`field tokenizer: ${m.tokenizer} is not listed in files`);
  for (const name of names) {
    const f = join(dir, name);
    let real: string;
    try {
      real = realpathSync(f);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw new UserError(`${f}: missing (listed in manifest.json)`);
      throw new UserError(`${f}: cannot read (${code ?? (e as Error).message})`);
    }
    if (!real.startsWith(root + sep)) throw new UserError(`${f}: resolves outside the package (to ${real}); refused`);
    if (!statSync(real).isFile()) throw new UserError(`${f}: not a regular file`);
  }
  for (const [name, want] of Object.entries(m.files)) {
    const f = join(dir, name);
    const bytes = statSync(f).size;
    if (bytes !== want.bytes) throw new UserError(`${f}: ${bytes} bytes, manifest.json says ${want.bytes} (truncated or replaced)`);
    const got = sha256File(f);
    if (got !== want.sha256)
      throw new UserError(
        `${f}: sha256 ${got.slice(0, 12)}… does not match manifest.json (${want.sha256.slice(0, 12)}…): corrupted or replaced`,
      );
  }
  checkConfig(path, m.config, join(dir, "weights.safetensors"));
  return m;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function readManifestText(path: string): string {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new UserError(`${path}: missing (not an engine package)`);
    throw new UserError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!st.isFile()) throw new UserError(`${path}: not a regular file`);
  if (st.size > MAX_MANIFEST_BYTES) throw new UserError(`${path}: ${st.size} bytes, more than any manifest (${MAX_MANIFEST_BYTES})`);
  return readFileSync(path, "utf8");
}

function validate(path: string, text: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    // V8 quotes the text it failed on, newlines and all: keep the refusal on one line
    throw new UserError(`${path}: not valid JSON (${(e as Error).message.replace(/\s+/g, " ").slice(0, 200)})`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw))
    throw new UserError(`${path}: expected a JSON object, found ${describe(raw)}`);
  const obj = raw as Record<string, unknown>;
  if (obj.format !== FORMAT) throw new UserError(`${path}: field format: expected "${FORMAT}", found ${describe(obj.format)}`);
  if (obj.version !== FORMAT_VERSION) {
    throw new UserError(
      `${path}: field version: this build reads engine format version ${FORMAT_VERSION}, found ${describe(obj.version)} (rebuild the engine)`,
    );
  }
  const r = manifestSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    let found: unknown = raw;
    for (const k of issue.path)
      found = found !== null && typeof found === "object" ? (found as Record<PropertyKey, unknown>)[k as PropertyKey] : undefined;
    const msg = issue.message.replace(/^Invalid input: /, "").replace(/, received \w+$/, "");
    throw new UserError(`${path}: field ${issue.path.join(".")}: ${msg}, found ${found === undefined ? "nothing" : shortKind(found)}`);
  }
  return r.data as unknown as Manifest;
}

/** A value for a message, without walking into it (input may nest deeper than the stack). */
function shortKind(v: unknown): string {
  if (Array.isArray(v)) return "an array";
  if (v !== null && typeof v === "object") return "an object";
  return describe(v);
}

/** The config must describe the weights the package holds: otherwise every request would fail later. */
function checkConfig(path: string, c: Manifest["config"], weights: string): void {
  const st = new SafetensorsFile(weights);
  try {
    const shape = (name: string): number[] => {
      const t = st.tensors.get(name);
      if (!t) throw new UserError(`${path}: config does not match ${weights}: tensor ${name} is missing`);
      return t.shape;
    };
    const dim = (name: string, i: number, field: string, value: number) => {
      const s = shape(name);
      if (s.length <= i || s[i] !== value)
        throw new UserError(`${path}: config.${field} is ${value} but weights.safetensors: ${name} has shape [${s.join(",")}]`);
    };
    let layers = 0;
    for (const name of st.tensors.keys()) {
      const hit = /^layers\.(\d+)\./.exec(name);
      if (hit) layers = Math.max(layers, Number(hit[1]) + 1);
    }
    if (layers !== c.nLayer) throw new UserError(`${path}: config.nLayer is ${c.nLayer} but weights.safetensors holds ${layers} layers`);
    dim("embedding", 0, "vocabSize", c.vocabSize);
    const emb = shape("embedding");
    // float16 (vocab, d_model), or 4-bit groups packed two to a byte (vocab, d_model / group, group / 2)
    const cols = emb.length === 3 ? emb[1] * emb[2] * 2 : emb[1];
    if (cols !== c.dModel)
      throw new UserError(`${path}: config.dModel is ${c.dModel} but weights.safetensors: embedding has shape [${emb.join(",")}]`);
    const convDim = c.arch === "mamba1" ? c.dInner : c.dInner + 2 * c.nGroups * c.dState;
    for (let l = 0; l < c.nLayer; l++) {
      const p = `layers.${l}.`;
      dim(`${p}norm`, 0, "dModel", c.dModel);
      if (c.arch === "mamba1") {
        dim(`${p}A`, 0, "dInner", c.dInner);
        dim(`${p}A`, 1, "dState", c.dState);
      } else dim(`${p}A`, 0, "nHeads", c.nHeads);
      dim(`${p}conv.weight`, 1, "dConv", c.dConv);
      const conv = shape(`${p}conv.weight`);
      if (conv[0] !== convDim)
        throw new UserError(
          `${path}: config (${c.arch === "mamba1" ? "dInner" : "dInner, nGroups, dState"}) gives ${convDim} conv channels but weights.safetensors: ${p}conv.weight has shape [${conv.join(",")}]`,
        );
    }
  } finally {
    st.close();
  }
}
