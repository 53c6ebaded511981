// onnxruntime's C API, called through koffi, for the ort backend's decode step. The
// onnxruntime-node binding copies every output of a run into a fresh ArrayBuffer, even one given a
// preallocated tensor: for the states of a batch that is a copy of megabytes per step (6 MB at
// batch 8 on the Mamba-2 demo model) and garbage collections it sets off, as much time as the step's
// own work. Through the C API a run writes its outputs straight into memory we hold, which the next
// step reads as its inputs. The library is the one onnxruntime-node ships, so both agree on the
// version; where it or koffi cannot be loaded, the backend keeps to the binding.
import { createRequire } from "node:module";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";

type Koffi = typeof import("koffi");
type Ptr = unknown; // an opaque native pointer, as koffi hands it over
type Fn = (...args: unknown[]) => unknown;

/** Positions in the OrtApi function table of onnxruntime_c_api.h (append-only across releases, so fixed). */
const API = {
  GetErrorMessage: 2,
  CreateEnv: 3,
  CreateSession: 7,
  Run: 9,
  CreateSessionOptions: 10,
  SetSessionExecutionMode: 13,
  EnableProfiling: 14,
  SetSessionLogSeverityLevel: 22,
  SetSessionGraphOptimizationLevel: 23,
  SetIntraOpNumThreads: 24,
  CreateTensorWithDataAsOrtValue: 49,
  CreateCpuMemoryInfo: 69,
  ReleaseEnv: 92,
  ReleaseStatus: 93,
  ReleaseMemoryInfo: 94,
  ReleaseSession: 95,
  ReleaseValue: 96,
  ReleaseSessionOptions: 100,
  AddSessionConfigEntry: 130,
  RegisterCustomOpsLibrary_V2: 228,
} as const;
/** The API version asked for: every entry above exists since version 14; 1.30 serves up to 23. */
const API_VERSION = 16;
/** session config key: where external data lives for a graph (default: the graph file's folder) */
export const EXTERNAL_DATA_DIR = "session.model_external_initializers_file_folder_path";
const ELEMENT = { float32: 1, int64: 7 } as const;

interface Api {
  koffi: Koffi;
  fn: Record<keyof typeof API, Fn>;
  env: Ptr;
  cpu: Ptr; // OrtMemoryInfo for plain CPU memory
}

let api: Api | null | undefined;

/** The onnxruntime shared library inside the onnxruntime-node package, if there is one for this platform. */
function libraryPath(): string | null {
  if (process.platform === "win32") return null; // CreateSession takes wide-character paths there
  let pkg: string;
  try {
    pkg = dirname(dirname(createRequire(import.meta.url).resolve("onnxruntime-node")));
  } catch {
    return null;
  }
  for (const napi of ["napi-v6", "napi-v3"]) {
    const dir = join(pkg, "bin", napi, process.platform, process.arch);
    if (!existsSync(dir)) continue;
    const name = readdirSync(dir).find(
      (f) => /^(lib)?onnxruntime(\.\d+)*\.(so(\.\d+)*|dylib|dll)$/.test(f) || /^libonnxruntime\.so\.\d+$/.test(f),
    );
    if (name) return join(dir, name);
  }
  return null;
}

/** Loads the C API once; null where it is not available (the caller then uses the binding). */
async function loadApi(): Promise<Api | null> {
  if (api !== undefined) return api;
  api = null;
  const path = libraryPath();
  if (!path) return null;
  let koffi: Koffi;
  try {
    koffi = (await import("koffi")).default as unknown as Koffi;
  } catch {
    return null;
  }
  try {
    const lib = koffi.load(path);
    const base = lib.func("void* OrtGetApiBase()")() as Ptr;
    const [getApi] = koffi.decode(base, "void *", 2) as Ptr[];
    const table = (koffi.decode(getApi, koffi.proto("void* OrtGetApi(uint32_t version)")) as Fn)(API_VERSION) as Ptr;
    if (!table) return null;
    const size = Math.max(...Object.values(API)) + 1;
    const ptrs = koffi.decode(table, "void *", size) as Ptr[];
    const S = "void*"; // OrtStatus*: null on success
    const protos: Record<keyof typeof API, string> = {
      GetErrorMessage: "const char* f(void* status)",
      CreateEnv: `${S} f(int level, const char* id, _Out_ void** env)`,
      CreateSession: `${S} f(void* env, const char* path, void* options, _Out_ void** session)`,
      Run: `${S} f(void* session, void* runOptions, const char** inNames, void** inputs, size_t nIn, const char** outNames, size_t nOut, void** outputs)`,
      CreateSessionOptions: `${S} f(_Out_ void** options)`,
      SetSessionExecutionMode: `${S} f(void* options, int mode)`,
      EnableProfiling: `${S} f(void* options, const char* prefix)`,
      SetSessionLogSeverityLevel: `${S} f(void* options, int level)`,
      SetSessionGraphOptimizationLevel: `${S} f(void* options, int level)`,
      SetIntraOpNumThreads: `${S} f(void* options, int n)`,
      CreateTensorWithDataAsOrtValue: `${S} f(void* info, void* data, size_t bytes, const int64_t* shape, size_t rank, int type, _Out_ void** value)`,
      CreateCpuMemoryInfo: `${S} f(int allocator, int memType, _Out_ void** info)`,
      ReleaseEnv: "void f(void* p)",
      ReleaseStatus: "void f(void* p)",
      ReleaseMemoryInfo: "void f(void* p)",
      ReleaseSession: "void f(void* p)",
      ReleaseValue: "void f(void* p)",
      ReleaseSessionOptions: "void f(void* p)",
      RegisterCustomOpsLibrary_V2: `${S} f(void* options, const char* path)`,
      AddSessionConfigEntry: `${S} f(void* options, const char* key, const char* value)`,
    };
    const fn = Object.fromEntries(
      (Object.keys(API) as (keyof typeof API)[]).map((k) => [
        k,
        koffi.decode(ptrs[API[k]], koffi.proto(protos[k].replace(" f(", ` Ort${k}(`))) as Fn,
      ]),
    ) as Api["fn"];
    const partial = { koffi, fn, env: null, cpu: null } as Api;
    const env = out(partial, (o) => fn.CreateEnv(3 /* errors only */, "mamba-edge", o));
    const cpu = out(partial, (o) => fn.CreateCpuMemoryInfo(0 /* device allocator */, 0 /* default */, o));
    api = { koffi, fn, env, cpu };
  } catch {
    api = null;
  }
  return api;
}

/** Throws a status's message (and frees it); a null status is success. */
function check(a: Pick<Api, "koffi" | "fn">, status: unknown): void {
  if (!status) return;
  const msg = a.fn.GetErrorMessage(status) as string;
  a.fn.ReleaseStatus(status);
  throw new Error(`onnxruntime: ${msg}`);
}

/** Calls an API function whose last argument receives an object; returns the object. */
function out(a: Pick<Api, "koffi" | "fn">, call: (o: Ptr[]) => unknown): Ptr {
  const o: Ptr[] = [null];
  check(a, call(o));
  return o[0];
}

/** A tensor over native memory that does not move: an OrtValue plus a JS view of the same bytes. */
export interface NativeTensor<T extends Float32Array | BigInt64Array> {
  readonly data: T;
  readonly value: Ptr;
}

const KINDS = {
  float32: { ctype: "float", size: 4, element: ELEMENT.float32, array: Float32Array },
  int64: { ctype: "int64_t", size: 8, element: ELEMENT.int64, array: BigInt64Array },
} as const;
type Kind = keyof typeof KINDS;
type ArrayOf<K extends Kind> = K extends "float32" ? Float32Array : BigInt64Array;

/** Native memory for `length` values of one kind, zeroed; tensors are made over its first values. */
export interface NativeBuffer<K extends Kind = Kind> {
  readonly kind: K;
  readonly length: number;
}

interface Buffer_ extends NativeBuffer {
  mem: Ptr;
  tensors: Set<Ptr>; // OrtValues over it, released with it
}

/** One onnxruntime session run through the C API, on tensors that live as long as it does (or until freed). */
export class CapiSession {
  private readonly buffers = new Set<Buffer_>();
  private released = false;

  private constructor(
    private readonly a: Api,
    private readonly session: Ptr,
  ) {}

  /**
   * Opens `modelPath` like the binding would (all graph optimizations, sequential, `threads` intra-op),
   * with the custom operators of the library `opsLibrary` registered if given; null where the C API is unavailable.
   */
  /** `dataDir`: the folder the graph's external data locations are relative to (default: the graph's). */
  static async open(modelPath: string, threads: number, opsLibrary?: string, dataDir?: string): Promise<CapiSession | null> {
    const a = await loadApi();
    if (!a) return null;
    const options = out(a, (o) => a.fn.CreateSessionOptions(o));
    try {
      if (dataDir) check(a, a.fn.AddSessionConfigEntry(options, EXTERNAL_DATA_DIR, dataDir));
      if (opsLibrary) check(a, a.fn.RegisterCustomOpsLibrary_V2(options, opsLibrary));
      check(a, a.fn.SetIntraOpNumThreads(options, threads));
      check(a, a.fn.SetSessionGraphOptimizationLevel(options, 99 /* all */));
      check(a, a.fn.SetSessionExecutionMode(options, 0 /* sequential */));
      check(a, a.fn.SetSessionLogSeverityLevel(options, 3 /* errors only */));
      // onnxruntime's per-node profile (a JSON file written when the session is released), for
      // finding where a step's time goes; a developer's switch, off unless set.
      const profile = process.env.MAMBA_EDGE_ORT_PROFILE;
      if (profile) check(a, a.fn.EnableProfiling(options, profile));
      return new CapiSession(
        a,
        out(a, (o) => a.fn.CreateSession(a.env, modelPath, options, o)),
      );
    } finally {
      a.fn.ReleaseSessionOptions(options);
    }
  }

  /** Zeroed native memory for `length` values of `kind`. */
  buffer<K extends Kind>(kind: K, length: number): NativeBuffer<K> {
    const k = KINDS[kind];
    const mem = this.a.koffi.alloc(k.ctype, Math.max(1, length)) as Ptr;
    new Uint8Array(this.a.koffi.view(mem, k.size * Math.max(1, length))).fill(0);
    const b: Buffer_ = { kind, length, mem, tensors: new Set() };
    this.buffers.add(b);
    return b as unknown as NativeBuffer<K>;
  }

  /** A tensor of shape `dims` over the first values of `buf` (no copy; valid until `buf` is freed). */
  tensor<K extends Kind>(buf: NativeBuffer<K>, dims: number[]): NativeTensor<ArrayOf<K>> {
    const b = buf as unknown as Buffer_;
    if (!this.buffers.has(b)) throw new Error("onnxruntime: tensor over a freed buffer");
    const k = KINDS[b.kind];
    const n = dims.reduce((x, y) => x * y, 1);
    if (n > b.length) throw new Error(`onnxruntime: a tensor of ${n} values over a buffer of ${b.length}`);
    const value = out(this.a, (o) =>
      this.a.fn.CreateTensorWithDataAsOrtValue(this.a.cpu, b.mem, k.size * n, BigInt64Array.from(dims, BigInt), dims.length, k.element, o),
    );
    b.tensors.add(value);
    return { data: new k.array(this.a.koffi.view(b.mem, k.size * Math.max(1, n))).subarray(0, n) as ArrayOf<K>, value };
  }

  /** A zeroed float32 tensor of its own. */
  float32(dims: number[]): NativeTensor<Float32Array> {
    return this.tensor(
      this.buffer(
        "float32",
        dims.reduce((x, y) => x * y, 1),
      ),
      dims,
    );
  }

  /** A zeroed int64 tensor of its own. */
  int64(dims: number[]): NativeTensor<BigInt64Array> {
    return this.tensor(
      this.buffer(
        "int64",
        dims.reduce((x, y) => x * y, 1),
      ),
      dims,
    );
  }

  /** Releases one tensor made by tensor() (its buffer stays). */
  dispose(t: NativeTensor<Float32Array | BigInt64Array>): void {
    for (const b of this.buffers) if (b.tensors.delete(t.value)) return void this.a.fn.ReleaseValue(t.value);
  }

  /** Frees `buf` and every tensor over it. */
  free(buf: NativeBuffer): void {
    const b = buf as unknown as Buffer_;
    if (!this.buffers.delete(b)) return;
    for (const v of b.tensors) this.a.fn.ReleaseValue(v);
    this.a.koffi.free(b.mem);
  }

  /** Runs the graph; every output is written into the tensor given for it. */
  run(inputs: Record<string, { value: Ptr }>, outputs: Record<string, { value: Ptr }>): void {
    if (this.released) throw new Error("onnxruntime: session used after release()");
    const inNames = Object.keys(inputs);
    const outNames = Object.keys(outputs);
    check(
      this.a,
      this.a.fn.Run(
        this.session,
        null,
        inNames,
        inNames.map((k) => inputs[k].value),
        inNames.length,
        outNames,
        outNames.length,
        outNames.map((k) => outputs[k].value),
      ),
    );
  }

  /** Frees the session and every buffer and tensor made by it. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.a.fn.ReleaseSession(this.session);
    for (const b of [...this.buffers]) this.free(b);
  }
}
