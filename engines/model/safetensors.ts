// Reader for the safetensors format: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}}, then the raw little-endian tensor bytes.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { UserError } from "../errors.js";
import { shared } from "./parallel.js";

export type DType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";
const BYTES: Record<DType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** byte range inside the file (absolute, header included) */
  begin: number;
  end: number;
}

export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};
  private readonly fd: number;

  constructor(readonly path: string) {
    try {
      this.fd = openSync(path, "r");
    } catch (e) {
      throw new UserError(`${path}: cannot open (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
    const size = fstatSync(this.fd).size;
    if (size < 8) throw new UserError(`${path}: truncated safetensors file (${size} bytes, expected at least 8)`);
    const lenBuf = Buffer.alloc(8);
    readSync(this.fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > 100_000_000 || 8 + headerLen > size) {
      throw new UserError(`${path}: not a safetensors file or truncated (header of ${headerLen} bytes, file of ${size})`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    readSync(this.fd, headerBuf, 0, headerLen, 8);
    let header: Record<string, { dtype?: string; shape?: number[]; data_offsets?: [number, number] }>;
    try {
      header = JSON.parse(headerBuf.toString("utf8"));
    } catch {
      throw new UserError(`${path}: safetensors header is not valid JSON`);
    }
    const dataStart = 8 + headerLen;
    for (const [name, info] of Object.entries(header)) {
      if (name === "__metadata__") {
        Object.assign(this.metadata, info);
        continue;
      }
      const dtype = info?.dtype as DType;
      if (!Array.isArray(info?.shape) || !Array.isArray(info?.data_offsets))
        throw new UserError(`${path}: tensor ${name} lacks shape or data_offsets`);
      if (!(dtype in BYTES)) throw new UserError(`${path}: tensor ${name} has unsupported dtype ${info?.dtype}`);
      const [b, e] = info.data_offsets;
      const count = info.shape.reduce((a, d) => a * d, 1);
      if (e - b !== count * BYTES[dtype]) {
        throw new UserError(`${path}: tensor ${name} holds ${e - b} bytes, expected ${count * BYTES[dtype]} for ${dtype}[${info.shape}]`);
      }
      if (dataStart + e > size) {
        throw new UserError(`${path}: truncated: tensor ${name} ends at byte ${dataStart + e}, file has ${size}`);
      }
      this.tensors.set(name, { dtype, shape: info.shape, begin: dataStart + b, end: dataStart + e });
    }
  }

  private bytes(info: TensorInfo): Buffer {
    const buf = Buffer.alloc(info.end - info.begin);
    let done = 0;
    while (done < buf.length) done += readSync(this.fd, buf, done, buf.length - done, info.begin + done);
    return buf;
  }

  /** Reads a tensor as float32 (F64/F32/F16/BF16 and integer types are converted). */
  float32(name: string): Float32Array {
    const info = this.tensors.get(name);
    if (!info) throw new UserError(`${this.path}: tensor ${name} is missing`);
    return toFloat32(this.bytes(info), info.dtype);
  }

  /** Reads a tensor as float64 (used for reference logits). */
  float64(name: string): Float64Array {
    const info = this.tensors.get(name);
    if (!info) throw new UserError(`${this.path}: tensor ${name} is missing`);
    const buf = this.bytes(info);
    if (info.dtype === "F64") return new Float64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
    return Float64Array.from(toFloat32(buf, info.dtype));
  }

  close(): void {
    closeSync(this.fd);
  }
}

const f16Table = (() => {
  // All 65536 half-precision values, so conversion is one lookup per element.
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

function halves(buf: Buffer): Uint16Array {
  if (buf.byteOffset % 2 === 0) return new Uint16Array(buf.buffer, buf.byteOffset, buf.length / 2);
  return new Uint16Array(Uint8Array.from(buf).buffer);
}

export function toFloat32(buf: Buffer, dtype: DType): Float32Array {
  const n = buf.length / BYTES[dtype];
  const out = shared(n); // shared memory: the helper thread of parallel.ts reads weights in place
  switch (dtype) {
    case "F32":
      // Fast path: the host is little-endian (x86-64 and aarch64 both are).
      if (buf.byteOffset % 4 === 0) out.set(new Float32Array(buf.buffer, buf.byteOffset, n));
      else for (let i = 0; i < n; i++) out[i] = buf.readFloatLE(i * 4);
      break;
    case "F64":
      for (let i = 0; i < n; i++) out[i] = buf.readDoubleLE(i * 8);
      break;
    case "F16": {
      const h = halves(buf);
      for (let i = 0; i < n; i++) out[i] = f16Table[h[i]];
      break;
    }
    case "BF16": {
      // bf16 is the top half of an fp32.
      const h = halves(buf);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = h[i] << 16;
      break;
    }
    case "I64":
      for (let i = 0; i < n; i++) out[i] = Number(buf.readBigInt64LE(i * 8));
      break;
    case "I32":
      for (let i = 0; i < n; i++) out[i] = buf.readInt32LE(i * 4);
      break;
    case "I16":
      for (let i = 0; i < n; i++) out[i] = buf.readInt16LE(i * 2);
      break;
    case "I8":
      for (let i = 0; i < n; i++) out[i] = buf.readInt8(i);
      break;
    case "U8":
    case "BOOL":
      for (let i = 0; i < n; i++) out[i] = buf[i];
      break;
  }
  return out;
}
