// The bytes behind a package's ONNX initializers: cpu/weights.bin, referenced by every cpu graph as
// ONNX external data, so they share one copy. Offsets are 64-byte aligned. Tensors the package's
// weights.safetensors already holds in the layout a graph wants are referenced there instead
// (`fromPackage`), so the package stores its big matrices once.
import { createWriteStream } from "node:fs";
import type { OutTensor } from "../safetensors-writer.js";
import type { ExternalRef } from "./graph.js";

type Data = Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array;

export class WeightFile {
  private readonly chunks: Buffer[] = [];
  private readonly refs = new Map<string, ExternalRef>();
  private readonly byData = new Map<Data, ExternalRef>();
  private size = 0;

  /** refs into weights.safetensors, placed once that file is written (see `placePackage`) */
  private readonly packageRefs = new Map<string, ExternalRef>();

  /**
   * `location`: this file's path as the graphs name it; `pkg`: the package's canonical tensors
   * (weights.safetensors, at `pkgLocation`), which `fromPackage` may point into.
   */
  constructor(
    readonly location = "weights.bin",
    private readonly pkg?: Map<string, OutTensor>,
    private readonly pkgLocation = "weights.safetensors",
  ) {}

  /**
   * A ref to the package tensor `name` if it holds exactly `data`'s bytes (same dtype size and
   * length, and the same values), else to a copy in this file.
   */
  fromPackage(name: string, candidates: string[], data: Data): ExternalRef {
    const canonical = candidates.find((c) => {
      const t = this.pkg?.get(c);
      return t !== undefined && sameBytes(t.data, data);
    });
    if (canonical === undefined) return this.add(name, data);
    const t = this.pkg!.get(canonical)!;
    let ref = this.packageRefs.get(canonical);
    if (!ref) this.packageRefs.set(canonical, (ref = { location: this.pkgLocation, offset: -1, length: t.data.byteLength }));
    return ref;
  }

  /** Fills in the refs into weights.safetensors from where each tensor's bytes start in it. */
  placePackage(offsets: Map<string, number>): void {
    for (const [name, ref] of this.packageRefs) {
      const at = offsets.get(name);
      if (at === undefined) throw new Error(`weights.safetensors: tensor ${name} was not written`);
      ref.offset = at;
    }
  }

  /** Adds a tensor (once per name; the same array under two names is stored once). */
  add(name: string, data: Data): ExternalRef {
    const known = this.refs.get(name) ?? this.byData.get(data);
    if (known) {
      this.refs.set(name, known);
      return known;
    }
    const pad = (64 - (this.size % 64)) % 64;
    if (pad) this.chunks.push(Buffer.alloc(pad));
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const ref = { location: this.location, offset: this.size + pad, length: bytes.length };
    this.chunks.push(Buffer.from(bytes)); // copy: the caller may reuse its array
    this.size += pad + bytes.length;
    this.refs.set(name, ref);
    this.byData.set(data, ref);
    return ref;
  }

  /** bytes of this file (not counting what lives in weights.safetensors) */
  get bytes(): number {
    return this.size;
  }

  async write(path: string): Promise<void> {
    const out = createWriteStream(path);
    for (const c of this.chunks) if (!out.write(c)) await new Promise<void>((r) => out.once("drain", () => r()));
    await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  }
}

/**
 * The weights.safetensors names a graph's tensor for layer `name` may have (`l3.in_proj` is
 * `layers.3.in_proj.weight` in float16, `l3.in_proj.weight` quantized; a tied lm_head is the
 * embedding), with `suffix` appended to the quantized names.
 */
export function packageNames(name: string, suffix = ""): string[] {
  const m = /^l(\d+)\.(\w+)$/.exec(name);
  if (m) return suffix ? [`${name}${suffix}`] : [`layers.${m[1]}.${m[2]}.weight`, `${name}.weight`];
  if (name === "lm_head") return suffix ? [`lm_head${suffix}`, `embedding${suffix}`] : ["lm_head", "embedding"];
  return [`${name}${suffix}`];
}

function sameBytes(a: Data, b: Data): boolean {
  if (a.byteLength !== b.byteLength) return false;
  if (a === b) return true;
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return Buffer.compare(x, y) === 0;
}
