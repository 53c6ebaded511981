// Writes a safetensors file: 8-byte header length, JSON header, then each tensor's bytes.
import { writeFileSync } from "node:fs";

export interface OutTensor {
  dtype: "F32" | "F16" | "I8" | "U8" | "I32";
  shape: number[];
  data: Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array;
}

/** Writes the file; returns where each tensor's bytes start in it. */
export function writeSafetensors(
  path: string,
  tensors: Map<string, OutTensor>,
  metadata: Record<string, string> = {},
): Map<string, number> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  const names = [...tensors.keys()].sort();
  for (const name of names) {
    const t = tensors.get(name)!;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // keep tensor data 8-byte aligned
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const parts: Buffer[] = [head, Buffer.from(json)];
  for (const name of names) {
    const d = tensors.get(name)!.data;
    parts.push(Buffer.from(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)));
  }
  writeFileSync(path, Buffer.concat(parts));
  const base = 8 + Buffer.byteLength(json);
  return new Map(names.map((n) => [n, base + (header[n] as { data_offsets: number[] }).data_offsets[0]]));
}

/** float32 -> IEEE half bits, round to nearest even. */
export function toHalf(a: Float32Array): Uint16Array {
  const out = new Uint16Array(a.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < a.length; i++) {
    f[0] = a[i];
    const x = u[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00; // overflow to infinity
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000; // subnormal half
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && h & 1)) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry into the exponent: still right
    out[i] = sign | h;
  }
  return out;
}
