// What the scheduler and the CLI drive. Each backend (ref, later ort / cuda / trt) implements this;
// nothing above it knows which one it has.
import { existsSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { SequenceState } from "../model/state.js";

/** The package's root directory (where engines/ lives), whether running compiled (dist/) or from source. */
export function packageRoot(): string {
  // compiled: dist/runtime/backends; from source (tests): runtime/backends
  const here = dirname(fileURLToPath(import.meta.url));
  const roots = [resolve(here, "..", "..", ".."), resolve(here, "..", "..")];
  return roots.find((r) => existsSync(join(r, "engines"))) ?? roots[0];
}

export interface BackendInfo {
  name: "ref" | "ort" | "cuda" | "trt";
  device: string;
  maxBatch: number;
  vocabSize: number;
}

/** The device line of a CPU backend: the processor and the thread count. */
export function cpuDevice(threads: number): string {
  return `cpu (${cpus()[0]?.model?.trim() ?? "unknown"}), ${threads} thread${threads === 1 ? "" : "s"}`;
}

export interface Backend {
  readonly info: BackendInfo;
  /** zeroed conv + SSM state of one sequence */
  newState(): SequenceState;
  /** runs the prompt through `s`; logits of the last position, or of every position when allLogits */
  prefill(tokens: Int32Array, s: SequenceState, allLogits?: boolean): Promise<Float32Array>;
  /** one token for each sequence; logits (B × vocab) */
  step(tokens: Int32Array, s: SequenceState[]): Promise<Float32Array>;
  saveState(s: SequenceState): Uint8Array;
  loadState(b: Uint8Array): SequenceState;
  close(): Promise<void>;
}
