// What the scheduler and the CLI drive. Each backend (ref, later ort / cuda / trt) implements this;
// nothing above it knows which one it has.
import { cpus } from "node:os";
import type { SequenceState } from "../../engines/model/state.js";

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
  /**
   * One token for each sequence; logits (B × vocab). They may live in a buffer the backend reuses:
   * valid until its next step, so copy them (slice) to keep them. (A fresh array per step was, at
   * batch 8, 128 KB to 1.6 MB of garbage per token: the collections it set off slowed steps by up
   * to half.)
   */
  step(tokens: Int32Array, s: SequenceState[]): Promise<Float32Array>;
  saveState(s: SequenceState): Uint8Array;
  loadState(b: Uint8Array): SequenceState;
  close(): Promise<void>;
}
