// Backend "ort": an engine package's graphs run by onnxruntime-node on the CPU. Prefill is one
// session run over the whole prompt; a decode step is one run for the whole batch. A batch's states
// stay resident in (B, ...) tensors between steps while the batch is unchanged (each step's state
// outputs are written into the buffers the next step reads); they go back into each sequence's
// SequenceState only when something reads it or the batch changes.
import { cpus } from "node:os";
import { join } from "node:path";
import type { InferenceSession, Tensor } from "onnxruntime-node";
import { UserError } from "../errors.js";
import { loadManifest, type Manifest } from "../engine/manifest.js";
import type { ModelConfig } from "../model/config.js";
import { SequenceState, deserializeState, serializeState, stateShape, type StateShape } from "../model/state.js";
import type { Backend, BackendInfo } from "./backend.js";

export type Ort = typeof import("onnxruntime-node");

/** prompt tokens per prefill run */
const PREFILL_CHUNK = 512;

export class OrtBackend implements Backend {
  readonly info: BackendInfo;
  readonly shape: StateShape;
  private readonly fingerprint: string;
  private resident: { states: OrtState[]; cur: BatchStates; next: BatchStates } | null = null;
  private readonly pools = new Map<number, [BatchStates, BatchStates]>();

  private constructor(
    readonly manifest: Manifest,
    private readonly ort: Ort,
    private readonly stepSession: InferenceSession,
    private readonly prefillSession: InferenceSession,
    maxBatch: number,
  ) {
    const c = manifest.config;
    this.shape = stateShape(c);
    this.fingerprint = `${manifest.source.weightsSha256.slice(0, 16)}`;
    this.info = { name: "ort", device: `cpu (${cpus()[0]?.model?.trim() ?? "unknown"}), onnxruntime ${ort.env.versions.node}`, maxBatch, vocabSize: c.vocabSize };
  }

  /** Verifies and opens NAME.mamba; onnxruntime-node is loaded only here. */
  static async open(dir: string, opts: { threads?: number; maxBatch?: number } = {}): Promise<OrtBackend> {
    const manifest = loadManifest(dir);
    if (!manifest.targets.includes("cpu")) throw new UserError(`${dir}: built without the cpu target (targets: ${manifest.targets.join(", ")})`);
    if (manifest.config.dtLimit[1] === null) manifest.config.dtLimit[1] = Infinity; // JSON has no Infinity
    let ort: Ort;
    try {
      ort = (await import("onnxruntime-node")).default as unknown as Ort;
    } catch (e) {
      throw new UserError(`backend ort needs the onnxruntime-node package (${(e as Error).message.split("\n")[0]})`);
    }
    const options: InferenceSession.SessionOptions = {
      graphOptimizationLevel: "all",
      intraOpNumThreads: opts.threads ?? Math.max(1, cpus().length),
      executionMode: "sequential",
    };
    const [step, prefill] = await Promise.all(
      ["step", "prefill"].map((m) => ort.InferenceSession.create(join(dir, "cpu", `${m}.onnx`), options)),
    );
    return new OrtBackend(manifest, ort, step, prefill, opts.maxBatch ?? 32);
  }

  newState(): SequenceState {
    return new OrtState(this.shape, this);
  }

  async prefill(tokens: Int32Array, s: SequenceState, allLogits = false): Promise<Float32Array> {
    if (tokens.length === 0) throw new UserError("prefill: no tokens");
    tokens.forEach((t) => this.checkToken(t));
    // Long prompts go through in chunks: the graph holds a few (T, d_inner, d_state) tensors.
    const want = allLogits ? "logits" : "last_logits";
    const parts: Float32Array[] = [];
    for (let at = 0; at < tokens.length; at += PREFILL_CHUNK) {
      const chunk = tokens.subarray(at, at + PREFILL_CHUNK);
      const out = await this.prefillSession.run(graphFeeds(this.ort, this.manifest.config, chunk, [s]), [want, ...this.stateOutputNames()]);
      this.readStates(out, [s]);
      s.tokens += chunk.length;
      parts.push(out[want].data as Float32Array);
    }
    if (parts.length === 1 || !allLogits) return parts[parts.length - 1];
    const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
    return all;
  }

  async step(tokens: Int32Array, states: SequenceState[]): Promise<Float32Array> {
    tokens.forEach((t) => this.checkToken(t));
    if (!states.every((s) => s instanceof OrtState && s.owner === this)) {
      // states of another backend: gather and scatter around this one run
      this.flush();
      const feeds = graphFeeds(this.ort, this.manifest.config, tokens, states);
      const out = await this.stepSession.run(feeds);
      this.readStates(out, states);
      for (const s of states) s.tokens++;
      return out.logits.data as Float32Array;
    }
    let r = this.resident;
    if (!r || r.states.length !== states.length || r.states.some((s, i) => s !== states[i])) {
      this.flush();
      const [cur, next] = this.pool(states.length);
      cur.gather(states as OrtState[]);
      r = this.resident = { states: [...states] as OrtState[], cur, next };
    }
    const feeds: Record<string, Tensor> = { tokens: tokenTensor(this.ort, tokens), ...r.cur.inputs };
    const out = await this.stepSession.run(feeds, { logits: null, ...r.next.outputs });
    [r.cur, r.next] = [r.next, r.cur];
    for (const s of states) s.tokens++;
    return out.logits.data as Float32Array;
  }

  /** Writes the resident batch's states back into their sequences (before anything reads them). */
  flush(): void {
    const r = this.resident;
    if (!r) return;
    this.resident = null;
    r.cur.scatter(r.states);
  }

  /** `s` is about to be read or run alone: bring it (and its batch) home. */
  touch(s: OrtState): void {
    if (this.resident?.states.includes(s)) this.flush();
  }

  /** Two sets of batch buffers per batch size, reused from step to step. */
  private pool(b: number): [BatchStates, BatchStates] {
    let p = this.pools.get(b);
    if (!p) {
      p = [new BatchStates(this.ort, this.manifest.config, b), new BatchStates(this.ort, this.manifest.config, b)];
      this.pools.set(b, p);
    }
    return p;
  }

  saveState(s: SequenceState): Uint8Array {
    return serializeState(s, this.fingerprint);
  }

  loadState(b: Uint8Array): SequenceState {
    const plain = deserializeState(b, this.shape, this.fingerprint);
    const s = new OrtState(this.shape, this, plain.data);
    s.tokens = plain.tokens;
    return s;
  }

  async close(): Promise<void> {
    this.flush();
    await Promise.all([this.stepSession.release(), this.prefillSession.release()]);
  }

  private checkToken(t: number): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.info.vocabSize) throw new UserError(`token ${t} is outside the vocabulary [0, ${this.info.vocabSize})`);
    return t;
  }

  private stateOutputNames(): string[] {
    const names: string[] = [];
    for (let l = 0; l < this.shape.nLayer; l++) names.push(`conv_${l}_out`, `ssm_${l}_out`);
    return names;
  }

  private readStates(out: InferenceSession.ReturnType, states: SequenceState[]): void {
    const layers = Array.from({ length: this.shape.nLayer }, (_, l) => l);
    scatterStates(
      this.shape,
      layers.map((l) => out[`conv_${l}_out`].data as Float32Array),
      layers.map((l) => out[`ssm_${l}_out`].data as Float32Array),
      states,
    );
  }
}

/**
 * Inputs of an engine graph: the tokens, and every layer's conv and SSM states gathered into
 * (B, ...) tensors (the builder's calibration feeds the same graph inputs).
 */
export function graphFeeds(ort: Ort, c: ModelConfig, tokens: ArrayLike<number>, states: SequenceState[]): Record<string, Tensor> {
  const batch = new BatchStates(ort, c, states.length);
  batch.gather(states);
  return { tokens: tokenTensor(ort, tokens), ...batch.inputs };
}

function tokenTensor(ort: Ort, tokens: ArrayLike<number>): Tensor {
  return new ort.Tensor("int64", BigInt64Array.from(tokens, BigInt), [tokens.length]);
}

/** Copies (B, ...) per-layer state arrays back into each sequence's state. */
function scatterStates(shape: StateShape, conv: Float32Array[], ssm: Float32Array[], states: SequenceState[]): void {
  const { convPerLayer: nc, ssmPerLayer: ns, convWidth: K1 } = shape;
  states.forEach((s, b) => {
    for (let l = 0; l < shape.nLayer; l++) {
      transpose(conv[l].subarray(b * nc, (b + 1) * nc), K1, nc / K1, s.conv(l));
      s.ssm(l).set(ssm[l].subarray(b * ns, (b + 1) * ns));
    }
  });
}

/** dst (cols, rows) = src (rows, cols)ᵀ: the graphs' conv states are time-major, SequenceState's channel-major. */
function transpose(src: Float32Array, rows: number, cols: number, dst: Float32Array): void {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}

/** A sequence state of this backend: reading its `data` first brings it home from a resident batch. */
class OrtState extends SequenceState {
  constructor(shape: StateShape, readonly owner: OrtBackend, data?: Float32Array) {
    super(shape, data);
    const host = this.data;
    Object.defineProperty(this, "data", {
      get: () => {
        owner.touch(this);
        return host;
      },
      enumerable: true,
    });
  }

  /** A copy owned by the same backend, so it too can stay resident in a batch. */
  override clone(): SequenceState {
    const s = new OrtState(this.shape, this.owner, this.data.slice());
    s.tokens = this.tokens;
    return s;
  }
}

/** One batch's states as the step graph's (B, ...) input tensors and output buffers. */
class BatchStates {
  readonly inputs: Record<string, Tensor> = {};
  readonly outputs: Record<string, Tensor> = {};
  private readonly conv: Float32Array[] = [];
  private readonly ssm: Float32Array[] = [];
  private readonly shape: StateShape;

  constructor(ort: Ort, c: ModelConfig, b: number) {
    const shape = (this.shape = stateShape(c));
    const convC = shape.convPerLayer / (c.dConv - 1);
    const ssmDims = c.arch === "mamba1" ? [c.dInner, c.dState] : [c.nHeads, c.headDim, c.dState];
    for (let l = 0; l < shape.nLayer; l++) {
      const conv = new Float32Array(b * shape.convPerLayer);
      const ssm = new Float32Array(b * shape.ssmPerLayer);
      this.conv.push(conv);
      this.ssm.push(ssm);
      // the same memory serves as this step's output and the next step's input
      this.inputs[`conv_${l}`] = this.outputs[`conv_${l}_out`] = new ort.Tensor("float32", conv, [b, c.dConv - 1, convC]);
      this.inputs[`ssm_${l}`] = this.outputs[`ssm_${l}_out`] = new ort.Tensor("float32", ssm, [b, ...ssmDims]);
    }
  }

  gather(states: SequenceState[]): void {
    const { convPerLayer: nc, ssmPerLayer: ns, convWidth: K1 } = this.shape;
    states.forEach((s, b) => {
      for (let l = 0; l < this.shape.nLayer; l++) {
        transpose(s.conv(l), nc / K1, K1, this.conv[l].subarray(b * nc, (b + 1) * nc));
        this.ssm[l].set(s.ssm(l), b * ns);
      }
    });
  }

  scatter(states: SequenceState[]): void {
    scatterStates(this.shape, this.conv, this.ssm, states);
  }
}
