// The bytes behind a package's ONNX initializers: cpu/weights.bin, referenced by both graphs as
// ONNX external data, so prefill and step share one copy. Offsets are 64-byte aligned.
import { createWriteStream } from "node:fs";
import type { ExternalRef } from "./graph.js";

type Data = Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array;

export class WeightFile {
  private readonly chunks: Buffer[] = [];
  private readonly refs = new Map<string, ExternalRef>();
  private readonly byData = new Map<Data, ExternalRef>();
  private size = 0;

  constructor(readonly location = "weights.bin") {}

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

  get bytes(): number {
    return this.size;
  }

  async write(path: string): Promise<void> {
    const out = createWriteStream(path);
    for (const c of this.chunks) if (!out.write(c)) await new Promise<void>((r) => out.once("drain", () => r()));
    await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  }
}
