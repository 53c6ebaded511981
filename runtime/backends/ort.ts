// Backend "ort": an engine package's graphs run by onnxruntime on the CPU. Prefill is one session
// run over the whole prompt; a decode step is one run for the whole batch. A batch's states stay
// resident in (B, ...) tensors between steps while the batch is unchanged (each step's state
// outputs are written into the buffers the next step reads); they go back into each sequence's
// SequenceState only when something reads it or the batch changes. The step runs through
// onnxruntime's C API (ort-capi.ts), which writes outputs in place, where that can be loaded, and
// through the onnxruntime-node binding otherwise.
import { existsSync } from "node:fs";
import { cpus } from "node:os";
import { join, resolve } from "node:path";
import type { InferenceSession, Tensor } from "onnxruntime-node";
import { UserError } from "../../engines/errors.js";
import { loadManifest, type Manifest } from "../../engines/package/manifest.js";
import type { ModelConfig } from "../../engines/model/config.js";
import {
  SequenceState,
  deserializeState,
  graphSsmShape,
  serializeState,
  stateShape,
  transpose,
  type StateShape,
} from "../../engines/model/state.js";
import { packageRoot } from "../paths.js";
import { cpuDevice, type Backend, type BackendInfo } from "./backend.js";
import { CapiSession, type NativeBuffer, type NativeTensor } from "./ort-capi.js";

export type Ort = typeof import("onnxruntime-node");

/** prompt tokens per prefill run */
const PREFILL_CHUNK = 512;

/**
 * The library of fused operators (engines/ort-ops): $MAMBA_EDGE_ORT_OPS (a path, or "off"), else
 * its CMake build directory; null where it is switched off or not built.
 */
export function ortOpsLibraryPath(): string | null {
  if (opsSwitchedOff()) return null;
  const path = process.env.MAMBA_EDGE_ORT_OPS || join(packageRoot, "engines", "ort-ops", "build", "libmamba_edge_ort_ops.so");
  return existsSync(path) ? path : null;
}

const opsSwitchedOff = () => ["off", "0"].includes(process.env.MAMBA_EDGE_ORT_OPS ?? "");

const ORT_OPS_BUILD_HINT = "npm run build:cpu";

/** The step graph to run and what runs it: "C API, fused operators", "C API" or "node binding" (+ why not fused); the fused prefill, if it opened. */
interface StepChoice {
  stepper: Stepper;
  via: string;
  prefill: CapiPrefill | null;
}

export class OrtBackend implements Backend {
  readonly info: BackendInfo;
  readonly shape: StateShape;
  private readonly fingerprint: string;
  private resident: { states: OrtState[]; cur: BatchStates; next: BatchStates } | null = null;

  private constructor(
    readonly manifest: Manifest,
    private readonly ort: Ort,
    private readonly stepper: Stepper,
    /** the prefill: the fused graph through the C API, or the plain one through the binding (each session holds its own weights) */
    private readonly prefillRun: CapiPrefill | InferenceSession,
    maxBatch: number,
    threads: number,
    via: string,
  ) {
    const c = manifest.config;
    this.shape = stateShape(c);
    this.fingerprint = `${manifest.source.weightsSha256.slice(0, 16)}`;
    this.info = {
      name: "ort",
      device: `${cpuDevice(threads)}, onnxruntime ${ort.env.versions.node}, step via the ${via}`,
      maxBatch,
      vocabSize: c.vocabSize,
    };
  }

  /**
   * Verifies and opens NAME.mamba; onnxruntime-node is loaded only here. `binding`: run the step
   * through the onnxruntime-node binding even where the C API loads; `fused: false`: the plain step
   * graph even where the fused operators load (both for comparisons).
   */
  static async open(
    dir: string,
    opts: { threads?: number; maxBatch?: number; binding?: boolean; fused?: boolean } = {},
  ): Promise<OrtBackend> {
    const manifest = loadManifest(dir);
    if (!manifest.targets.includes("cpu"))
      throw new UserError(`${dir}: built without the cpu target (targets: ${manifest.targets.join(", ")})`);
    if (manifest.config.dtLimit[1] === null) manifest.config.dtLimit[1] = Infinity; // JSON has no Infinity
    let ort: Ort;
    try {
      ort = (await import("onnxruntime-node")).default as unknown as Ort;
    } catch (e) {
      throw new UserError(`backend ort needs the onnxruntime-node package (${(e as Error).message.split("\n")[0]})`);
    }
    const threads = opts.threads ?? Math.max(1, cpus().length);
    const options: InferenceSession.SessionOptions = {
      graphOptimizationLevel: "all",
      intraOpNumThreads: threads,
      executionMode: "sequential",
      // the graphs name their external data from the package root (weights.safetensors, cpu/weights.bin)
      extra: { session: { model_external_initializers_file_folder_path: resolve(dir) } },
    };
    const step = await openStep(ort, dir, manifest, threads, options, opts);
    const prefill = step.prefill ?? (await ort.InferenceSession.create(join(dir, "cpu", "prefill.onnx"), options));
    return new OrtBackend(manifest, ort, step.stepper, prefill, opts.maxBatch ?? 32, threads, step.via);
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
      if (this.prefillRun instanceof CapiPrefill) parts.push(this.prefillRun.run(chunk, s, want));
      else {
        const out = await this.prefillRun.run(graphFeeds(this.ort, this.manifest.config, chunk, [s]), [want, ...this.stateOutputNames()]);
        this.readStates(out, [s]);
        parts.push(out[want].data as Float32Array);
      }
      s.tokens += chunk.length;
    }
    if (parts.length === 1 || !allLogits) return parts[parts.length - 1];
    const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
    return all;
  }

  async step(tokens: Int32Array, states: SequenceState[]): Promise<Float32Array> {
    tokens.forEach((t) => this.checkToken(t));
    if (tokens.length !== states.length) throw new Error(`step: ${tokens.length} tokens for ${states.length} states`);
    // states of another backend are gathered and scattered around this one run
    const own = states.every((s) => s instanceof OrtState && s.owner === this);
    let r = this.resident;
    if (!own || !r || r.states.length !== states.length || r.states.some((s, i) => s !== states[i])) {
      this.flush();
      const [cur, next] = this.stepper.pair(states.length);
      cur.gather(states);
      r = { states: [...states] as OrtState[], cur, next };
      if (own) this.resident = r;
    }
    const logits = await this.stepper.run(tokens, r.cur, r.next);
    [r.cur, r.next] = [r.next, r.cur];
    if (!own) r.cur.scatter(states);
    for (const s of states) s.tokens++;
    return logits;
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
    await Promise.all([this.stepper.release(), this.prefillRun.release()]);
  }

  private checkToken(t: number): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.info.vocabSize)
      throw new UserError(`token ${t} is outside the vocabulary [0, ${this.info.vocabSize})`);
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
      ssmTransposed(this.manifest.config),
      layers.map((l) => out[`conv_${l}_out`].data as Float32Array),
      layers.map((l) => out[`ssm_${l}_out`].data as Float32Array),
      states,
    );
  }
}

/**
 * The fastest step that opens: the fused graph through the C API (where the package has it and the
 * operator library loads), else the plain graph through the C API, else through the binding.
 */
async function openStep(
  ort: Ort,
  dir: string,
  m: Manifest,
  threads: number,
  options: InferenceSession.SessionOptions,
  opts: { binding?: boolean; fused?: boolean },
): Promise<StepChoice> {
  const c = m.config;
  let notFused = "";
  if (!opts.binding && opts.fused !== false) {
    const lib = ortOpsLibraryPath();
    if (opsSwitchedOff()) notFused = " (fused operators switched off by MAMBA_EDGE_ORT_OPS)";
    else if (!m.files["cpu/step-fused.onnx"]) notFused = " (no fused step graph in this engine: rebuild it for the fused operators)";
    else if (!lib) notFused = ` (fused operators not built: ${ORT_OPS_BUILD_HINT})`;
    else {
      try {
        const capi = await CapiSession.open(join(dir, "cpu", "step-fused.onnx"), threads, lib, resolve(dir));
        // the fused prefill graph came later than the fused step: an engine may have only the step
        const pre = m.files["cpu/prefill-fused.onnx"]
          ? await CapiSession.open(join(dir, "cpu", "prefill-fused.onnx"), threads, lib, resolve(dir))
          : null;
        if (capi)
          return {
            stepper: new CapiStepper(capi, c, true),
            via: `C API, fused operators${pre ? "" : " (prefill unfused: rebuild the engine)"}`,
            prefill: pre && new CapiPrefill(pre, c),
          };
      } catch (e) {
        notFused = ` (fused operators unavailable: ${(e as Error).message.split("\n")[0]})`;
      }
    }
  }
  const stepPath = join(dir, "cpu", "step.onnx");
  const capi = opts.binding ? null : await CapiSession.open(stepPath, threads, undefined, resolve(dir));
  if (capi) return { stepper: new CapiStepper(capi, c, false), via: `C API${notFused}`, prefill: null };
  return { stepper: new BindingStepper(ort, await ort.InferenceSession.create(stepPath, options), c), via: "node binding", prefill: null };
}

/**
 * Inputs of an engine graph: the tokens, and every layer's conv and SSM states gathered into
 * (B, ...) tensors (the builder's calibration feeds the same graph inputs).
 */
export function graphFeeds(ort: Ort, c: ModelConfig, tokens: ArrayLike<number>, states: SequenceState[]): Record<string, Tensor> {
  const batch = new BatchStates(bindingTensors(ort), c, states.length);
  batch.gather(states);
  return { tokens: tokenTensor(ort, tokens), ...(batch.inputs as Record<string, Tensor>) };
}

/** Tensors of the onnxruntime-node binding over fresh Float32Arrays. */
function bindingTensors(ort: Ort): TensorMaker {
  return (dims) => {
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    return { data, tensor: new ort.Tensor("float32", data, dims) };
  };
}

function tokenTensor(ort: Ort, tokens: ArrayLike<number>): Tensor {
  return new ort.Tensor("int64", BigInt64Array.from(tokens, BigInt), [tokens.length]);
}

/** Where the graphs' SSM state is SequenceState's transposed (Mamba-1), its (rows, cols) per sequence. */
function ssmTransposed(c: ModelConfig): [number, number] | null {
  return c.arch === "mamba1" ? (graphSsmShape(c) as [number, number]) : null;
}

/** Copies (B, ...) per-layer state arrays back into each sequence's state; `ssmT`: see ssmTransposed. */
function scatterStates(
  shape: StateShape,
  ssmT: [number, number] | null,
  conv: Float32Array[],
  ssm: Float32Array[],
  states: SequenceState[],
): void {
  const { convPerLayer: nc, ssmPerLayer: ns, convWidth: K1 } = shape;
  states.forEach((s, b) => {
    for (let l = 0; l < shape.nLayer; l++) {
      transpose(conv[l].subarray(b * nc, (b + 1) * nc), K1, nc / K1, s.conv(l));
      const src = ssm[l].subarray(b * ns, (b + 1) * ns);
      if (ssmT) transpose(src, ssmT[0], ssmT[1], s.ssm(l));
      else s.ssm(l).set(src);
    }
  });
}

/** A sequence state of this backend: reading its `data` first brings it home from a resident batch. */
class OrtState extends SequenceState {
  constructor(
    shape: StateShape,
    readonly owner: OrtBackend,
    data?: Float32Array,
  ) {
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

/** A float32 tensor over `data`, in whatever form the session running it takes. */
type TensorMaker = (dims: number[]) => { data: Float32Array; tensor: unknown };

/** One batch's states as the step graph's (B, ...) input tensors and output buffers. */
class BatchStates {
  readonly inputs: Record<string, unknown> = {};
  readonly outputs: Record<string, unknown> = {};
  private readonly conv: Float32Array[] = [];
  private readonly ssm: Float32Array[] = [];
  private readonly shape: StateShape;
  private readonly ssmT: [number, number] | null;

  constructor(
    make: TensorMaker,
    c: ModelConfig,
    readonly b: number,
  ) {
    const shape = (this.shape = stateShape(c));
    const convC = shape.convPerLayer / shape.convWidth;
    const ssmDims = graphSsmShape(c);
    this.ssmT = ssmTransposed(c);
    for (let l = 0; l < shape.nLayer; l++) {
      const conv = make([b, shape.convWidth, convC]);
      const ssm = make([b, ...ssmDims]);
      this.conv.push(conv.data);
      this.ssm.push(ssm.data);
      // the same memory serves as this step's output and the next step's input
      this.inputs[`conv_${l}`] = this.outputs[`conv_${l}_out`] = conv.tensor;
      this.inputs[`ssm_${l}`] = this.outputs[`ssm_${l}_out`] = ssm.tensor;
    }
  }

  gather(states: SequenceState[]): void {
    const { convPerLayer: nc, ssmPerLayer: ns, convWidth: K1 } = this.shape;
    states.forEach((s, b) => {
      for (let l = 0; l < this.shape.nLayer; l++) {
        transpose(s.conv(l), nc / K1, K1, this.conv[l].subarray(b * nc, (b + 1) * nc));
        const dst = this.ssm[l].subarray(b * ns, (b + 1) * ns);
        if (this.ssmT) transpose(s.ssm(l), this.ssmT[1], this.ssmT[0], dst);
        else dst.set(s.ssm(l));
      }
    });
  }

  scatter(states: SequenceState[]): void {
    scatterStates(this.shape, this.ssmT, this.conv, this.ssm, states);
  }
}

/** Runs the step graph on a batch: reads `cur`'s states, writes `next`'s, returns the logits (valid until the next run, as Backend.step's). */
interface Stepper {
  /**
   * The state buffers of this step's inputs and of its outputs for a batch of b, reused from step to
   * step (the same set twice where the step updates its states in place).
   */
  pair(b: number): [BatchStates, BatchStates];
  run(tokens: Int32Array, cur: BatchStates, next: BatchStates): Promise<Float32Array>;
  release(): Promise<void>;
}

/** The step through the onnxruntime-node binding (which copies every output once more). */
class BindingStepper implements Stepper {
  /** the buffers of the last few batch sizes, most recent last (a daemon sees every size up to its maximum) */
  private readonly pairs = new Map<number, [BatchStates, BatchStates]>();

  constructor(
    private readonly ort: Ort,
    private readonly session: InferenceSession,
    private readonly c: ModelConfig,
  ) {}

  pair(b: number): [BatchStates, BatchStates] {
    const p = this.pairs.get(b) ?? [
      new BatchStates(bindingTensors(this.ort), this.c, b),
      new BatchStates(bindingTensors(this.ort), this.c, b),
    ];
    this.pairs.delete(b);
    this.pairs.set(b, p);
    if (this.pairs.size > 4) this.pairs.delete(this.pairs.keys().next().value!);
    return p;
  }

  async run(tokens: Int32Array, cur: BatchStates, next: BatchStates): Promise<Float32Array> {
    const feeds = { tokens: tokenTensor(this.ort, tokens), ...(cur.inputs as Record<string, Tensor>) };
    const out = await this.session.run(feeds, { logits: null, ...(next.outputs as Record<string, Tensor>) });
    return out.logits.data as Float32Array;
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

/**
 * The step through onnxruntime's C API: states, tokens and logits in native memory, written in place.
 * Buffers hold up to `capacity` sequences; a batch of b runs on tensors over their first b rows, so
 * every batch size shares them. (Buffers of their own per batch size took a 130m engine from 0.6 to
 * 3.7 GB once a daemon had run every size up to 32.) The plain graph needs two sets, a step's inputs
 * and its outputs, swapped after each step. The fused graph (`inPlace`) has one: each state is read
 * and written only by its own fused operator, which reads every value before writing it, so a state
 * tensor is given as both the input and the output of a run.
 */
class CapiStepper implements Stepper {
  private capacity = 0;
  private sets: { states: NativeBuffer<"float32">[]; tokens: NativeBuffer<"int64">; logits: NativeBuffer<"float32"> }[] = [];
  private readonly pairs = new Map<number, [BatchStates, BatchStates]>();
  private readonly io = new Map<BatchStates, { tokens: NativeTensor<BigInt64Array>; logits: NativeTensor<Float32Array> }>();

  constructor(
    private readonly session: CapiSession,
    private readonly c: ModelConfig,
    private readonly inPlace: boolean,
  ) {}

  pair(b: number): [BatchStates, BatchStates] {
    let p = this.pairs.get(b);
    if (!p) {
      if (b > this.capacity) this.grow(b);
      const cur = this.view(0, b);
      p = [cur, this.inPlace ? cur : this.view(1, b)];
      this.pairs.set(b, p);
    }
    return p;
  }

  /** New buffers for at least b sequences (a power of two). Called between batches: no state lives in the old ones. */
  private grow(b: number): void {
    // (the old logits stay allocated until release: a caller that kept a step's logits past the
    // next step, against Backend.step's contract, reads stale numbers rather than freed memory)
    for (const set of this.sets) for (const buf of [...set.states, set.tokens]) this.session.free(buf);
    this.pairs.clear();
    this.io.clear();
    this.capacity = 2 ** Math.ceil(Math.log2(b));
    this.sets = (this.inPlace ? [0] : [0, 1]).map(() => ({
      states: [], // made as the first view asks for them
      tokens: this.session.buffer("int64", this.capacity),
      logits: this.session.buffer("float32", this.capacity * this.c.vocabSize),
    }));
  }

  /** Batch-of-b tensors over the buffers of set `k`. */
  private view(k: number, b: number): BatchStates {
    const set = this.sets[k];
    let i = 0;
    const states = new BatchStates(
      (dims) => {
        if (i === set.states.length)
          set.states.push(this.session.buffer("float32", this.capacity * dims.slice(1).reduce((x, y) => x * y, 1)));
        const t = this.session.tensor(set.states[i++], dims);
        return { data: t.data, tensor: t };
      },
      this.c,
      b,
    );
    this.io.set(states, { tokens: this.session.tensor(set.tokens, [b]), logits: this.session.tensor(set.logits, [b, this.c.vocabSize]) });
    return states;
  }

  async run(tokens: Int32Array, cur: BatchStates, next: BatchStates): Promise<Float32Array> {
    const io = this.io.get(cur)!;
    tokens.forEach((t, i) => (io.tokens.data[i] = BigInt(t)));
    this.session.run(
      { tokens: io.tokens, ...(cur.inputs as Record<string, { value: unknown }>) },
      { logits: io.logits, ...(next.outputs as Record<string, { value: unknown }>) },
    );
    return io.logits.data; // the native buffer itself, valid until the next step (Backend.step)
  }

  async release(): Promise<void> {
    this.io.clear();
    this.session.release();
  }
}

/**
 * The fused prefill graph, run through the C API (the binding cannot register custom operators):
 * one chunk of one sequence's prompt per run, its state gathered into and scattered out of native
 * buffers of its own (the step's may hold a resident batch).
 */
class CapiPrefill {
  private readonly tokens: NativeBuffer<"int64">;
  private logits: NativeBuffer<"float32"> | null = null;
  private readonly cur: BatchStates;
  private readonly next: BatchStates;

  constructor(
    private readonly session: CapiSession,
    private readonly c: ModelConfig,
  ) {
    this.tokens = session.buffer("int64", PREFILL_CHUNK);
    const make: TensorMaker = (dims) => {
      const t = session.float32(dims);
      return { data: t.data, tensor: t };
    };
    this.cur = new BatchStates(make, c, 1);
    this.next = new BatchStates(make, c, 1);
  }

  /** Runs up to PREFILL_CHUNK tokens through `s`; returns a copy of the logits asked for. */
  run(tokens: Int32Array, s: SequenceState, want: "logits" | "last_logits"): Float32Array {
    const V = this.c.vocabSize;
    const rows = want === "logits" ? tokens.length : 1;
    if (!this.logits || this.logits.length < rows * V) {
      if (this.logits) this.session.free(this.logits);
      this.logits = this.session.buffer("float32", (want === "logits" ? PREFILL_CHUNK : 1) * V);
    }
    const tok = this.session.tensor(this.tokens, [tokens.length]);
    const out = this.session.tensor(this.logits, [rows, V]);
    try {
      tokens.forEach((t, i) => (tok.data[i] = BigInt(t)));
      this.cur.gather([s]);
      this.session.run(
        { tokens: tok, ...(this.cur.inputs as Record<string, { value: unknown }>) },
        { [want]: out, ...(this.next.outputs as Record<string, { value: unknown }>) },
      );
      this.next.scatter([s]);
      return out.data.slice();
    } finally {
      this.session.dispose(tok);
      this.session.dispose(out);
    }
  }

  async release(): Promise<void> {
    this.session.release();
  }
}
