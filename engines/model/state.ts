// The recurrent state of one sequence: per layer, the conv history (the last dConv-1 inputs of each
// conv channel) and the SSM state. Its size is fixed by the model, whatever the sequence length.
import { UserError } from "../errors.js";
import type { ModelConfig } from "./config.js";

export interface StateShape {
  nLayer: number;
  convPerLayer: number; // convChannels * (dConv - 1), laid out (channel, time)
  convWidth: number; // dConv - 1
  ssmPerLayer: number; // Mamba-1: (dInner, dState); Mamba-2: (nHeads, headDim, dState)
}

export function stateShape(c: ModelConfig): StateShape {
  const convChannels = c.arch === "mamba1" ? c.dInner : c.dInner + 2 * c.nGroups * c.dState;
  return { nLayer: c.nLayer, convPerLayer: convChannels * (c.dConv - 1), convWidth: c.dConv - 1, ssmPerLayer: c.dInner * c.dState };
}

/**
 * A layer's SSM state in the engine graphs, per sequence. Mamba-1's is state-major
 * (d_state, d_inner), the transpose of SequenceState's (d_inner, d_state): every broadcast of the
 * graphs' state update then runs over d_inner contiguous values instead of d_state (16).
 */
export function graphSsmShape(c: ModelConfig): number[] {
  return c.arch === "mamba1" ? [c.dState, c.dInner] : [c.nHeads, c.headDim, c.dState];
}

/** dst (cols, rows) = src (rows, cols)ᵀ: between the graphs' state layouts and SequenceState's, and Mamba-1's A for the graphs. */
export function transpose(src: Float32Array, rows: number, cols: number, dst: Float32Array): Float32Array {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
  return dst;
}

export class SequenceState {
  /** all layers' conv states, then all layers' SSM states */
  readonly data: Float32Array;
  /** tokens consumed so far */
  tokens = 0;

  constructor(
    readonly shape: StateShape,
    data?: Float32Array,
  ) {
    const size = shape.nLayer * (shape.convPerLayer + shape.ssmPerLayer);
    this.data = data ?? new Float32Array(size);
  }

  conv(layer: number): Float32Array {
    const n = this.shape.convPerLayer;
    return this.data.subarray(layer * n, (layer + 1) * n);
  }

  ssm(layer: number): Float32Array {
    const base = this.shape.nLayer * this.shape.convPerLayer;
    const n = this.shape.ssmPerLayer;
    return this.data.subarray(base + layer * n, base + (layer + 1) * n);
  }

  clone(): SequenceState {
    const s = new SequenceState(this.shape, this.data.slice());
    s.tokens = this.tokens;
    return s;
  }
}

// Serialized form (little-endian): magic, u32 header length, JSON header {fingerprint, floats},
// f64 token count, float32 payload. Its size depends only on the model.
const MAGIC = Buffer.from("MESTATE1");

export function serializeState(s: SequenceState, fingerprint: string): Uint8Array {
  const header = Buffer.from(JSON.stringify({ fingerprint, floats: s.data.length }));
  const out = Buffer.alloc(MAGIC.length + 4 + header.length + 8 + s.data.byteLength);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(header.length, MAGIC.length);
  header.copy(out, MAGIC.length + 4);
  out.writeDoubleLE(s.tokens, MAGIC.length + 4 + header.length);
  Buffer.from(s.data.buffer, s.data.byteOffset, s.data.byteLength).copy(out, MAGIC.length + 4 + header.length + 8);
  return out;
}

export function deserializeState(bytes: Uint8Array, shape: StateShape, fingerprint: string): SequenceState {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < MAGIC.length + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new UserError("state: not a mamba-edge state (bad magic)");
  }
  const hlen = buf.readUInt32LE(MAGIC.length);
  let header: { fingerprint: string; floats: number };
  try {
    header = JSON.parse(buf.subarray(MAGIC.length + 4, MAGIC.length + 4 + hlen).toString("utf8"));
  } catch {
    throw new UserError("state: header is not valid JSON");
  }
  if (header.fingerprint !== fingerprint) {
    throw new UserError(`state: made by model ${header.fingerprint}, this model is ${fingerprint}`);
  }
  const s = new SequenceState(shape);
  if (header.floats !== s.data.length) throw new UserError(`state: holds ${header.floats} values, expected ${s.data.length}`);
  const start = MAGIC.length + 4 + hlen + 8;
  if (buf.length !== start + s.data.byteLength) throw new UserError(`state: ${buf.length} bytes, expected ${start + s.data.byteLength}`);
  new Uint8Array(s.data.buffer).set(buf.subarray(start));
  s.tokens = buf.readDoubleLE(start - 8);
  return s;
}
