// Backend "ref": the TypeScript reference forward pass on the CPU, in float32.
import type { MambaModel } from "../../engines/model/model.js";
import { referenceThreads } from "../../engines/model/parallel.js";
import type { SequenceState } from "../../engines/model/state.js";
import { cpuDevice, type Backend, type BackendInfo } from "./backend.js";

export class RefBackend implements Backend {
  readonly info: BackendInfo;

  constructor(
    readonly model: MambaModel,
    maxBatch = 32,
  ) {
    this.info = { name: "ref", device: cpuDevice(referenceThreads()), maxBatch, vocabSize: model.config.vocabSize };
  }

  newState(): SequenceState {
    return this.model.newState();
  }

  async prefill(tokens: Int32Array, s: SequenceState, allLogits = false): Promise<Float32Array> {
    return this.model.prefill(tokens, s, allLogits);
  }

  async step(tokens: Int32Array, s: SequenceState[]): Promise<Float32Array> {
    return this.model.step(tokens, s);
  }

  saveState(s: SequenceState): Uint8Array {
    return this.model.saveState(s);
  }

  loadState(b: Uint8Array): SequenceState {
    return this.model.loadState(b);
  }

  async close(): Promise<void> {}
}
