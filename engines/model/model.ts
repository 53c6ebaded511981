// The reference forward pass: embedding, N × (RMSNorm → mixer → residual add), final RMSNorm,
// lm_head. Every other backend is tested against this one.
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { parseConfig, type ModelConfig } from "./config.js";
import { mamba1Mixer } from "./mamba1.js";
import { mamba2Mixer } from "./mamba2.js";
import { linear, rmsnorm } from "./ops.js";
import type { Segment } from "./segments.js";
import { SequenceState, deserializeState, serializeState, stateShape, type StateShape } from "./state.js";
import { checkpointSource, loadWeights, type Mamba1Layer, type Mamba2Layer, type ModelSource, type Weights } from "./weights.js";

export class MambaModel {
  readonly shape: StateShape;
  /** identifies the model a serialized state belongs to */
  readonly fingerprint: string;

  constructor(
    readonly config: ModelConfig,
    readonly weights: Weights<Mamba1Layer> | Weights<Mamba2Layer>,
  ) {
    this.shape = stateShape(config);
    const c = config;
    this.fingerprint = createHash("sha256")
      .update(JSON.stringify([c.arch, c.vocabSize, c.dModel, c.nLayer, c.dInner, c.dState, c.dConv, c.nHeads, c.nGroups]))
      .update(Buffer.from(weights.normF.buffer, weights.normF.byteOffset, weights.normF.byteLength))
      .digest("hex")
      .slice(0, 16);
  }

  /** Loads a checkpoint directory (Hugging Face or state-spaces layout). */
  static load(dir: string): MambaModel {
    const config = readConfig(dir);
    return new MambaModel(config, loadWeights(dir, config));
  }

  newState(): SequenceState {
    return new SequenceState(this.shape);
  }

  /**
   * Runs `tokens` through the model, continuing `state`, and returns logits (rows, vocab) for every
   * position when allLogits, else for the last one only.
   */
  prefill(tokens: ArrayLike<number>, state: SequenceState, allLogits = false): Float32Array {
    const T = tokens.length;
    if (T === 0) throw new UserError("prefill: no tokens");
    const hidden = this.forward(tokens, [{ state, start: 0, len: T }]);
    return allLogits ? this.logits(hidden, 0, T) : this.logits(hidden, T - 1, 1);
  }

  /** One decode step for a batch: token b continues states[b]; returns logits (B, vocab). */
  step(tokens: ArrayLike<number>, states: SequenceState[]): Float32Array {
    if (tokens.length !== states.length) throw new Error(`step: ${tokens.length} tokens for ${states.length} states`);
    const hidden = this.forward(
      tokens,
      states.map((state, b) => ({ state, start: b, len: 1 })),
    );
    return this.logits(hidden, 0, tokens.length);
  }

  saveState(s: SequenceState): Uint8Array {
    return serializeState(s, this.fingerprint);
  }

  loadState(bytes: Uint8Array): SequenceState {
    return deserializeState(bytes, this.shape, this.fingerprint);
  }

  /** Residual stream after the last block (rows, dModel); advances every segment's state. */
  private forward(tokens: ArrayLike<number>, segments: Segment[]): Float32Array {
    const c = this.config;
    const w = this.weights;
    const rows = tokens.length;
    const hidden = new Float32Array(rows * c.dModel);
    for (let r = 0; r < rows; r++) {
      const id = tokens[r];
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize)
        throw new UserError(`token ${id} is outside the vocabulary [0, ${c.vocabSize})`);
      hidden.set(w.embedding.subarray(id * c.dModel, (id + 1) * c.dModel), r * c.dModel);
    }
    for (let l = 0; l < c.nLayer; l++) {
      const layer = w.layers[l];
      const u = rmsnorm(hidden, rows, c.dModel, layer.norm, c.normEps);
      const out =
        c.arch === "mamba1"
          ? mamba1Mixer(c, layer as Mamba1Layer, l, u, rows, segments)
          : mamba2Mixer(c, layer as Mamba2Layer, l, u, rows, segments);
      for (let i = 0; i < hidden.length; i++) hidden[i] += out[i];
    }
    for (const s of segments) s.state.tokens += s.len;
    return hidden;
  }

  private logits(hidden: Float32Array, fromRow: number, rows: number): Float32Array {
    const c = this.config;
    const h = rmsnorm(hidden.subarray(fromRow * c.dModel, (fromRow + rows) * c.dModel), rows, c.dModel, this.weights.normF, c.normEps);
    return linear(h, rows, c.dModel, this.weights.lmHead, c.vocabSize, null);
  }
}

/** A checkpoint directory's config.json, checked. */
export function readConfig(dir: string): ModelConfig {
  const cfgPath = join(dir, "config.json");
  if (!existsSync(dir)) throw new UserError(`${dir}: no such directory`);
  if (!existsSync(cfgPath)) throw new UserError(`${cfgPath}: missing (expected a Hugging Face or state-spaces Mamba checkpoint)`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(cfgPath, "utf8"));
  } catch (e) {
    throw new UserError(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  return parseConfig(raw, cfgPath);
}

/** A checkpoint's weights, read one layer at a time. */
export function openSource(dir: string): ModelSource {
  return checkpointSource(dir, readConfig(dir));
}
