// Backend "cuda": an engine package run by the native library of engines/native (CUDA kernels, a
// CUDA graph per decode batch size), called through koffi, which is loaded only here. Sequence
// states live in device slots: a CudaState's host copy is refreshed only when something reads its
// `data` (saving, cloning, another backend), and slots are recycled least-recently-used first, so a
// state can always move between backends in the reference's SequenceState layout.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { UserError } from "../../engines/errors.js";
import { loadManifest, type Manifest } from "../../engines/package/manifest.js";
import { SequenceState, deserializeState, serializeState, stateShape, type StateShape } from "../../engines/model/state.js";
import { cudaLibraryPath } from "../../engines/paths.js";
import type { Backend, BackendInfo } from "./backend.js";

export { cudaLibraryPath } from "../../engines/paths.js";

export const BUILD_HINT = "cmake -S engines/native -B engines/native/build && cmake --build engines/native/build -j";

type Fn = (...args: unknown[]) => unknown;
export interface NativeLib {
  me_last_error: () => string;
  me_device_count: () => number;
  me_create: (dir: string, maxBatch: number, slots: number) => unknown;
  me_destroy: (h: unknown) => void;
  me_describe: (h: unknown) => string;
  me_state_floats: (h: unknown) => number | bigint;
  me_vocab: (h: unknown) => number;
  me_weight_bytes: (h: unknown) => number | bigint;
  me_state_zero: (h: unknown, slot: number) => number;
  me_state_save: (h: unknown, slot: number, out: Float32Array) => number;
  me_state_load: (h: unknown, slot: number, data: Float32Array) => number;
  me_prefill: (h: unknown, slot: number, tokens: Int32Array, n: number, all: number, logits: Float32Array | null) => number;
  me_step: (h: unknown, slots: Int32Array, tokens: Int32Array, b: number, logits: Float32Array | null) => number;
  me_bench_step: (h: unknown, b: number, iters: number, ms: Float32Array) => number;
  me_bench_prefill: (h: unknown, n: number, iters: number, ms: Float32Array) => number;
}

const loaded = new Map<string, NativeLib>();

/** Loads the native library once; a missing library or koffi is a one-line UserError. */
export async function loadNativeLibrary(path = cudaLibraryPath()): Promise<NativeLib> {
  const cached = loaded.get(path);
  if (cached) return cached;
  if (!existsSync(path))
    throw new UserError(`backend cuda: the native library is not built (${path} is missing; build it with \`${BUILD_HINT}\`)`);
  let koffi: typeof import("koffi");
  try {
    koffi = (await import("koffi")).default as unknown as typeof import("koffi");
  } catch (e) {
    throw new UserError(`backend cuda needs the koffi package (${(e as Error).message.split("\n")[0]})`);
  }
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load(path);
  } catch (e) {
    throw new UserError(`backend cuda: cannot load ${path} (${(e as Error).message.split("\n")[0]})`);
  }
  const f = (sig: string) => lib.func(sig) as Fn;
  const native: NativeLib = {
    me_last_error: f("const char* me_last_error()") as NativeLib["me_last_error"],
    me_device_count: f("int me_device_count()") as NativeLib["me_device_count"],
    me_create: f("void* me_create(const char* dir, int maxBatch, int slots)") as NativeLib["me_create"],
    me_destroy: f("void me_destroy(void* h)") as NativeLib["me_destroy"],
    me_describe: f("const char* me_describe(void* h)") as NativeLib["me_describe"],
    me_state_floats: f("int64_t me_state_floats(void* h)") as NativeLib["me_state_floats"],
    me_vocab: f("int me_vocab(void* h)") as NativeLib["me_vocab"],
    me_weight_bytes: f("int64_t me_weight_bytes(void* h)") as NativeLib["me_weight_bytes"],
    me_state_zero: f("int me_state_zero(void* h, int slot)") as NativeLib["me_state_zero"],
    me_state_save: f("int me_state_save(void* h, int slot, void* out)") as NativeLib["me_state_save"],
    me_state_load: f("int me_state_load(void* h, int slot, const void* data)") as NativeLib["me_state_load"],
    me_prefill: f("int me_prefill(void* h, int slot, const void* tokens, int n, int all, void* logits)") as NativeLib["me_prefill"],
    me_step: f("int me_step(void* h, const void* slots, const void* tokens, int b, void* logits)") as NativeLib["me_step"],
    me_bench_step: f("int me_bench_step(void* h, int b, int iters, void* ms)") as NativeLib["me_bench_step"],
    me_bench_prefill: f("int me_bench_prefill(void* h, int n, int iters, void* ms)") as NativeLib["me_bench_prefill"],
  };
  loaded.set(path, native);
  return native;
}

/** A sequence state whose authoritative copy may sit in a device slot of its backend. */
class CudaState extends SequenceState {
  slot = -1;
  /** never run: the device slot can be zeroed instead of uploaded */
  fresh = true;
  readonly host: Float32Array;

  constructor(
    shape: StateShape,
    readonly owner: CudaBackend,
  ) {
    super(shape);
    const host = this.data;
    this.host = host;
    // reading `data` brings the state back to the host; the host copy is authoritative afterwards
    Object.defineProperty(this, "data", {
      get: () => {
        owner.pull(this);
        return host;
      },
      enumerable: true,
    });
  }

  /** A copy owned by the same backend (a plain copy would be uploaded and downloaded every step). */
  override clone(): SequenceState {
    const s = new CudaState(this.shape, this.owner);
    s.host.set(this.data);
    s.tokens = this.tokens;
    s.fresh = false;
    return s;
  }
}

export interface CudaOptions {
  maxBatch?: number;
  /** sequence states kept on the GPU (default 2 × maxBatch) */
  slots?: number;
}

export class CudaBackend implements Backend {
  readonly info: BackendInfo;
  readonly shape: StateShape;
  private readonly fingerprint: string;
  private readonly owners: (CudaState | null)[];
  /** slots by last use, oldest first */
  private readonly lru = new Set<number>();
  private closed = false;
  /** the steps' logits, reused (Backend.step: valid until the next step) */
  private logits: Float32Array | null = null;

  private constructor(
    readonly manifest: Manifest,
    private readonly lib: NativeLib,
    private readonly h: unknown,
    readonly maxBatch: number,
    readonly slots: number,
  ) {
    const c = manifest.config;
    this.shape = stateShape(c);
    this.fingerprint = `${manifest.source.weightsSha256.slice(0, 16)}`;
    this.owners = new Array(slots).fill(null);
    this.info = { name: "cuda", device: lib.me_describe(h), maxBatch, vocabSize: c.vocabSize };
    const floats = Number(lib.me_state_floats(h));
    if (floats !== this.shape.nLayer * (this.shape.convPerLayer + this.shape.ssmPerLayer)) {
      throw new Error(`native state size ${floats} does not match the model's`);
    }
  }

  /** Verifies NAME.mamba (manifest, sha256 of every file) and loads its weights to the GPU. */
  static async open(dir: string, opts: CudaOptions = {}): Promise<CudaBackend> {
    const maxBatch = opts.maxBatch ?? 32;
    const slots = opts.slots ?? 2 * maxBatch;
    if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 256)
      throw new UserError(`backend cuda: max batch must be an integer in [1, 256], found ${maxBatch}`);
    if (!Number.isInteger(slots) || slots < maxBatch)
      throw new UserError(`backend cuda: state slots must be an integer ≥ max batch (${maxBatch}), found ${slots}`);
    const manifest = loadManifest(dir);
    if (manifest.config.dtLimit[1] === null) manifest.config.dtLimit[1] = Infinity;
    const lib = await loadNativeLibrary();
    if (lib.me_device_count() === 0) throw new UserError("backend cuda: no CUDA GPU is visible on this machine (use --backend ort)");
    const h = lib.me_create(resolve(dir), maxBatch, slots);
    if (!h) throw new UserError(`backend cuda: ${dir}: ${lib.me_last_error()}`);
    return new CudaBackend(manifest, lib, h, maxBatch, slots);
  }

  newState(): SequenceState {
    return new CudaState(this.shape, this);
  }

  async prefill(tokens: Int32Array, s: SequenceState, allLogits = false): Promise<Float32Array> {
    this.live();
    if (tokens.length === 0) throw new UserError("prefill: no tokens");
    tokens.forEach((t) => this.checkToken(t));
    const slot = this.bind(s, new Set());
    const out = new Float32Array((allLogits ? tokens.length : 1) * this.info.vocabSize);
    this.ok(this.lib.me_prefill(this.h, slot, tokens, tokens.length, allLogits ? 1 : 0, out));
    this.unbindForeign(s, slot);
    s.tokens += tokens.length;
    return out;
  }

  async step(tokens: Int32Array, states: SequenceState[]): Promise<Float32Array> {
    this.live();
    if (tokens.length !== states.length) throw new Error(`step: ${tokens.length} tokens for ${states.length} states`);
    if (states.length === 0) return new Float32Array(0);
    if (states.length > this.maxBatch)
      throw new UserError(`step: batch of ${states.length} exceeds the cuda backend's max batch ${this.maxBatch}`);
    if (new Set(states).size !== states.length) throw new Error("step: a state appears twice in one batch");
    tokens.forEach((t) => this.checkToken(t));
    const batch = new Set<number>();
    const slots = new Int32Array(states.length);
    states.forEach((s, i) => batch.add((slots[i] = this.bind(s, batch))));
    const V = this.info.vocabSize;
    // grown to the next power of two of the batch when a larger batch comes
    if (!this.logits || this.logits.length < states.length * V)
      this.logits = new Float32Array(2 ** Math.ceil(Math.log2(states.length)) * V);
    const out = this.logits.subarray(0, states.length * V);
    this.ok(this.lib.me_step(this.h, slots, Int32Array.from(tokens), states.length, this.logits));
    states.forEach((s, i) => {
      this.unbindForeign(s, slots[i]);
      s.tokens++;
    });
    return out;
  }

  saveState(s: SequenceState): Uint8Array {
    return serializeState(s, this.fingerprint);
  }

  loadState(b: Uint8Array): SequenceState {
    const plain = deserializeState(b, this.shape, this.fingerprint);
    const s = new CudaState(this.shape, this);
    s.host.set(plain.data);
    s.tokens = plain.tokens;
    s.fresh = false;
    return s;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // states still on the GPU come home first, so they outlive the backend
    for (const owner of this.owners) if (owner) this.pull(owner);
    this.closed = true;
    this.lib.me_destroy(this.h);
  }

  /** Copies a state's device slot back to its host array and frees the slot. */
  pull(s: CudaState): void {
    if (s.slot < 0 || this.closed) return;
    const slot = s.slot;
    this.ok(this.lib.me_state_save(this.h, slot, s.host));
    this.owners[slot] = null;
    this.lru.delete(slot);
    s.slot = -1;
    s.fresh = false;
  }

  /** A device slot holding `s`, uploading it if needed; never evicts a slot of the current batch. */
  private bind(s: SequenceState, batch: Set<number>): number {
    if (s instanceof CudaState && s.owner === this && s.slot >= 0) {
      this.lru.delete(s.slot);
      this.lru.add(s.slot);
      return s.slot;
    }
    let slot = this.owners.findIndex((o, i) => o === null && !batch.has(i) && !this.lru.has(i));
    if (slot < 0) {
      for (const i of this.lru) {
        if (!batch.has(i)) {
          slot = i;
          break;
        }
      }
      if (slot < 0) throw new Error("no free state slot");
      const victim = this.owners[slot];
      if (victim) this.pull(victim);
    }
    if (s instanceof CudaState && s.owner === this) {
      if (s.fresh) this.ok(this.lib.me_state_zero(this.h, slot));
      else this.ok(this.lib.me_state_load(this.h, slot, s.host));
      s.slot = slot;
      s.fresh = false;
      this.owners[slot] = s;
    } else {
      // a state of another backend (or a plain copy): lent a slot for this call only
      this.ok(this.lib.me_state_load(this.h, slot, s.data));
      this.owners[slot] = null;
    }
    this.lru.add(slot);
    return slot;
  }

  private unbindForeign(s: SequenceState, slot: number): void {
    if (s instanceof CudaState && s.owner === this) return;
    this.ok(this.lib.me_state_save(this.h, slot, s.data));
    this.lru.delete(slot);
  }

  private ok(rc: number): void {
    if (rc !== 0) throw new Error(`backend cuda: ${this.lib.me_last_error()}`);
  }

  private live(): void {
    if (this.closed) throw new Error("backend cuda: used after close()");
  }

  private checkToken(t: number): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.info.vocabSize)
      throw new UserError(`token ${t} is outside the vocabulary [0, ${this.info.vocabSize})`);
    return t;
  }
}
