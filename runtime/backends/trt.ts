// Backend "trt": an engine package's TensorRT plans (compiled on this device by `mamba-edge
// compile`) run by libmamba_edge_trt.so (engines/native/trt/shim) through koffi, which is loaded
// only here. The shim opens TensorRT itself at run time, so everything up to the plan loads without
// TensorRT and says in one line what is missing. Sequence states live in the shim's device slots in
// SequenceState's layout (the plugins' state layout, engines/native/trt/OPS.md); a TrtState's host
// copy is refreshed only when something reads its `data`, as backend cuda's.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { UserError } from "../../engines/errors.js";
import { loadManifest, type Manifest } from "../../engines/package/manifest.js";
import { matchingPlan, tensorrtVersion, type TrtPlan } from "../../engines/package/plans.js";
import { SequenceState, deserializeState, serializeState, stateShape, type StateShape } from "../../engines/model/state.js";
import type { ModelConfig } from "../../engines/model/config.js";
import { packageRoot } from "../paths.js";
import type { Backend, BackendInfo } from "./backend.js";

/** Where the shim is looked for: $MAMBA_EDGE_TRT_LIB, else the CMake build directory. */
export function trtLibraryPath(): string {
  return process.env.MAMBA_EDGE_TRT_LIB ?? join(packageRoot, "engines", "native", "build", "libmamba_edge_trt.so");
}

/** The plugin library the plans need: $MAMBA_EDGE_TRT_PLUGINS, else the CMake build directory. */
export function trtPluginsPath(): string {
  return process.env.MAMBA_EDGE_TRT_PLUGINS ?? join(packageRoot, "engines", "native", "build", "libmamba_edge_trt_plugins.so");
}

export const TRT_BUILD_HINT =
  "cmake -S engines/native -B engines/native/build -DMAMBA_EDGE_TRT=ON -DTENSORRT_INCLUDE_DIR=/usr/include/aarch64-linux-gnu && cmake --build engines/native/build -j";

type Fn = (...args: unknown[]) => unknown;
export interface TrtLib {
  me_trt_last_error: () => string;
  me_trt_version: () => number;
  me_trt_gpu: (name: Buffer, cap: number, sm: Int32Array) => number;
  me_trt_build: (
    onnx: string,
    plugins: string | null,
    planOut: string,
    timingCache: string | null,
    prefill: number,
    sizes: Int32Array,
    n: number,
    workspaceMb: number,
  ) => number;
  me_trt_open: (step: string, prefill: string | null, plugins: string | null, states: string, slots: number) => unknown;
  me_trt_close: (h: unknown) => void;
  me_trt_describe: (h: unknown) => string;
  me_trt_vocab: (h: unknown) => number;
  me_trt_max_batch: (h: unknown) => number;
  me_trt_state_floats: (h: unknown) => number | bigint;
  me_trt_state_zero: (h: unknown, slot: number) => number;
  me_trt_state_save: (h: unknown, slot: number, out: Float32Array) => number;
  me_trt_state_load: (h: unknown, slot: number, data: Float32Array) => number;
  me_trt_prefill: (h: unknown, slot: number, tokens: Int32Array, n: number, all: number, logits: Float32Array) => number;
  me_trt_step: (h: unknown, slots: Int32Array, tokens: Int32Array, b: number, logits: Float32Array) => number;
}

const loaded = new Map<string, TrtLib>();

/** Loads the shim once; a missing shim or koffi is a one-line UserError. */
export async function loadTrtShim(path = trtLibraryPath()): Promise<TrtLib> {
  const cached = loaded.get(path);
  if (cached) return cached;
  if (!existsSync(path))
    throw new UserError(`backend trt: the TensorRT shim is not built (${path} is missing; build it with \`${TRT_BUILD_HINT}\`)`);
  let koffi: typeof import("koffi");
  try {
    koffi = (await import("koffi")).default as unknown as typeof import("koffi");
  } catch (e) {
    throw new UserError(`backend trt needs the koffi package (${(e as Error).message.split("\n")[0]})`);
  }
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load(path);
  } catch (e) {
    throw new UserError(`backend trt: cannot load ${path} (${(e as Error).message.split("\n")[0]})`);
  }
  const f = (sig: string) => lib.func(sig) as Fn;
  const shim = {
    me_trt_last_error: f("const char* me_trt_last_error()"),
    me_trt_version: f("int me_trt_version()"),
    me_trt_gpu: f("int me_trt_gpu(void* name, int cap, void* sm)"),
    me_trt_build: f(
      "int me_trt_build(const char* onnx, const char* plugins, const char* plan, const char* cache, int prefill, const void* sizes, int n, int workspaceMb)",
    ),
    me_trt_open: f("void* me_trt_open(const char* step, const char* prefill, const char* plugins, const char* states, int slots)"),
    me_trt_close: f("void me_trt_close(void* h)"),
    me_trt_describe: f("const char* me_trt_describe(void* h)"),
    me_trt_vocab: f("int me_trt_vocab(void* h)"),
    me_trt_max_batch: f("int me_trt_max_batch(void* h)"),
    me_trt_state_floats: f("int64_t me_trt_state_floats(void* h)"),
    me_trt_state_zero: f("int me_trt_state_zero(void* h, int slot)"),
    me_trt_state_save: f("int me_trt_state_save(void* h, int slot, void* out)"),
    me_trt_state_load: f("int me_trt_state_load(void* h, int slot, const void* data)"),
    me_trt_prefill: f("int me_trt_prefill(void* h, int slot, const void* tokens, int n, int all, void* logits)"),
    me_trt_step: f("int me_trt_step(void* h, const void* slots, const void* tokens, int b, void* logits)"),
  } as unknown as TrtLib;
  loaded.set(path, shim);
  return shim;
}

export interface TrtMachine {
  /** TensorRT's version, "10.3.0" */
  tensorrt: string;
  gpu: string;
  sm: number;
}

/** TensorRT and the GPU of this machine, through the shim; what is missing is a one-line UserError. */
export function probeMachine(lib: TrtLib, what = "backend trt"): TrtMachine {
  const v = lib.me_trt_version();
  if (v === 0) throw new UserError(`${what}: ${lib.me_trt_last_error()}`);
  const name = Buffer.alloc(256);
  const sm = new Int32Array(1);
  if (lib.me_trt_gpu(name, name.length, sm) !== 0) throw new UserError(`${what}: ${lib.me_trt_last_error()}`);
  return { tensorrt: tensorrtVersion(v), gpu: name.toString("utf8", 0, name.indexOf(0)), sm: sm[0] };
}

/**
 * The state tensors of the trt graphs, "input output" a line, in SequenceState's order: every
 * layer's conv state, then every layer's SSM state (a slot of the shim is laid out in this order).
 */
export function stateTensors(c: ModelConfig): string {
  const lines: string[] = [];
  for (const kind of ["conv", "ssm"]) for (let l = 0; l < c.nLayer; l++) lines.push(`${kind}_${l} ${kind}_${l}_out`);
  return lines.join("\n");
}

/** A sequence state whose authoritative copy may sit in a device slot of its backend. */
class TrtState extends SequenceState {
  slot = -1;
  /** never run: the slot can be zeroed instead of uploaded */
  fresh = true;
  readonly host: Float32Array;

  constructor(
    shape: StateShape,
    readonly owner: TrtBackend,
  ) {
    super(shape);
    const host = this.data;
    this.host = host;
    Object.defineProperty(this, "data", {
      get: () => {
        owner.pull(this);
        return host;
      },
      enumerable: true,
    });
  }

  override clone(): SequenceState {
    const s = new TrtState(this.shape, this.owner);
    s.host.set(this.data);
    s.tokens = this.tokens;
    s.fresh = false;
    return s;
  }
}

export interface TrtOptions {
  /** sequence states kept on the GPU (default 2 × the plan's largest batch) */
  slots?: number;
}

export class TrtBackend implements Backend {
  readonly info: BackendInfo;
  readonly shape: StateShape;
  readonly maxBatch: number;
  private readonly fingerprint: string;
  private readonly owners: (TrtState | null)[];
  /** slots by last use, oldest first */
  private readonly lru = new Set<number>();
  private closed = false;
  private logits: Float32Array | null = null;

  private constructor(
    readonly manifest: Manifest,
    readonly plan: TrtPlan,
    private readonly lib: TrtLib,
    private readonly h: unknown,
    readonly slots: number,
    machine: TrtMachine,
  ) {
    const c = manifest.config;
    this.shape = stateShape(c);
    this.fingerprint = manifest.source.weightsSha256.slice(0, 16);
    this.owners = new Array(slots).fill(null);
    this.maxBatch = lib.me_trt_max_batch(h);
    this.info = {
      name: "trt",
      device: `${machine.gpu} (sm_${machine.sm}), TensorRT ${machine.tensorrt}`,
      maxBatch: this.maxBatch,
      vocabSize: c.vocabSize,
    };
    const floats = Number(lib.me_trt_state_floats(h));
    if (floats !== this.shape.nLayer * (this.shape.convPerLayer + this.shape.ssmPerLayer))
      throw new UserError(`backend trt: ${plan.step} holds ${floats} state floats per sequence, the model ${this.shapeFloats()}`);
    if (lib.me_trt_vocab(h) !== c.vocabSize)
      throw new UserError(`backend trt: ${plan.step} has a vocabulary of ${lib.me_trt_vocab(h)}, the model ${c.vocabSize}`);
  }

  /** Verifies NAME.mamba, finds its plan for this GPU and TensorRT version, and opens it. */
  static async open(dir: string, opts: TrtOptions = {}): Promise<TrtBackend> {
    const manifest = loadManifest(dir);
    const lib = await loadTrtShim();
    const machine = probeMachine(lib);
    const plan = matchingPlan(manifest, dir, machine.gpu, machine.tensorrt);
    if (!plan) throw new UserError(`${dir}: no TensorRT plan (compile one on this device: \`mamba-edge compile ${dir}\`)`);
    const largest = Math.max(...plan.batches);
    const slots = opts.slots ?? 2 * largest;
    if (!Number.isInteger(slots) || slots < largest)
      throw new UserError(`backend trt: state slots must be an integer ≥ the plan's largest batch (${largest}), found ${slots}`);
    const plugins = trtPluginsPath();
    if (!existsSync(plugins))
      throw new UserError(`backend trt: the plugin library is not built (${plugins} is missing; build it with \`${TRT_BUILD_HINT}\`)`);
    const abs = (f: string | null) => (f === null ? null : resolve(dir, f));
    const h = lib.me_trt_open(abs(plan.step)!, abs(plan.prefill), plugins, stateTensors(manifest.config), slots);
    if (!h) throw new UserError(`backend trt: ${dir}: ${lib.me_trt_last_error()}`);
    try {
      return new TrtBackend(manifest, plan, lib, h, slots, machine);
    } catch (e) {
      lib.me_trt_close(h);
      throw e;
    }
  }

  /** What the shim opened: TensorRT, the device, the buckets and every plan tensor (JSON). */
  describe(): string {
    return this.lib.me_trt_describe(this.h);
  }

  newState(): SequenceState {
    return new TrtState(this.shape, this);
  }

  async prefill(tokens: Int32Array, s: SequenceState, allLogits = false): Promise<Float32Array> {
    this.live();
    if (tokens.length === 0) throw new UserError("prefill: no tokens");
    tokens.forEach((t) => this.checkToken(t));
    const slot = this.bind(s, new Set());
    const out = new Float32Array((allLogits ? tokens.length : 1) * this.info.vocabSize);
    this.ok(this.lib.me_trt_prefill(this.h, slot, Int32Array.from(tokens), tokens.length, allLogits ? 1 : 0, out));
    this.unbindForeign(s, slot);
    s.tokens += tokens.length;
    return out;
  }

  async step(tokens: Int32Array, states: SequenceState[]): Promise<Float32Array> {
    this.live();
    if (tokens.length !== states.length) throw new Error(`step: ${tokens.length} tokens for ${states.length} states`);
    if (states.length === 0) return new Float32Array(0);
    if (states.length > this.maxBatch)
      throw new UserError(`step: batch of ${states.length} exceeds the trt plan's largest batch ${this.maxBatch}`);
    if (new Set(states).size !== states.length) throw new Error("step: a state appears twice in one batch");
    tokens.forEach((t) => this.checkToken(t));
    const batch = new Set<number>();
    const slots = new Int32Array(states.length);
    states.forEach((s, i) => batch.add((slots[i] = this.bind(s, batch))));
    const V = this.info.vocabSize;
    if (!this.logits || this.logits.length < states.length * V)
      this.logits = new Float32Array(2 ** Math.ceil(Math.log2(states.length)) * V);
    this.ok(this.lib.me_trt_step(this.h, slots, Int32Array.from(tokens), states.length, this.logits));
    states.forEach((s, i) => {
      this.unbindForeign(s, slots[i]);
      s.tokens++;
    });
    return this.logits.subarray(0, states.length * V);
  }

  saveState(s: SequenceState): Uint8Array {
    return serializeState(s, this.fingerprint);
  }

  loadState(b: Uint8Array): SequenceState {
    const plain = deserializeState(b, this.shape, this.fingerprint);
    const s = new TrtState(this.shape, this);
    s.host.set(plain.data);
    s.tokens = plain.tokens;
    s.fresh = false;
    return s;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const owner of this.owners) if (owner) this.pull(owner);
    this.closed = true;
    this.lib.me_trt_close(this.h);
  }

  /** Copies a state's slot back to its host array and frees the slot. */
  pull(s: TrtState): void {
    if (s.slot < 0 || this.closed) return;
    const slot = s.slot;
    this.ok(this.lib.me_trt_state_save(this.h, slot, s.host));
    this.owners[slot] = null;
    this.lru.delete(slot);
    s.slot = -1;
    s.fresh = false;
  }

  /** A slot holding `s`, uploading it if needed; never evicts a slot of the current batch. */
  private bind(s: SequenceState, batch: Set<number>): number {
    if (s instanceof TrtState && s.owner === this && s.slot >= 0) {
      this.lru.delete(s.slot);
      this.lru.add(s.slot);
      return s.slot;
    }
    let slot = this.owners.findIndex((o, i) => o === null && !batch.has(i) && !this.lru.has(i));
    if (slot < 0) {
      for (const i of this.lru)
        if (!batch.has(i)) {
          slot = i;
          break;
        }
      if (slot < 0) throw new Error("no free state slot");
      const victim = this.owners[slot];
      if (victim) this.pull(victim);
    }
    if (s instanceof TrtState && s.owner === this) {
      this.ok(s.fresh ? this.lib.me_trt_state_zero(this.h, slot) : this.lib.me_trt_state_load(this.h, slot, s.host));
      s.slot = slot;
      s.fresh = false;
      this.owners[slot] = s;
    } else {
      // a state of another backend (or a plain copy): lent a slot for this call only
      this.ok(this.lib.me_trt_state_load(this.h, slot, s.data));
      this.owners[slot] = null;
    }
    this.lru.add(slot);
    return slot;
  }

  private unbindForeign(s: SequenceState, slot: number): void {
    if (s instanceof TrtState && s.owner === this) return;
    this.ok(this.lib.me_trt_state_save(this.h, slot, s.data));
    this.lru.delete(slot);
  }

  private shapeFloats(): number {
    return this.shape.nLayer * (this.shape.convPerLayer + this.shape.ssmPerLayer);
  }

  private ok(rc: number): void {
    if (rc !== 0) throw new Error(`backend trt: ${this.lib.me_trt_last_error()}`);
  }

  private live(): void {
    if (this.closed) throw new Error("backend trt: used after close()");
  }

  private checkToken(t: number): void {
    if (!Number.isInteger(t) || t < 0 || t >= this.info.vocabSize)
      throw new UserError(`token ${t} is outside the vocabulary [0, ${this.info.vocabSize})`);
  }
}
