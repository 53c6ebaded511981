// Randomly initialised models of published shapes, for benchmarks that compare with other runtimes
// on the same shape (no weights can be downloaded here). Deterministic for a given seed.
import { UserError } from "../errors.js";
import { parseConfig } from "./config.js";
import { shared } from "./parallel.js";
import { MambaModel } from "./model.js";
import { seededRandom } from "./rng.js";
import { materialize, type Mamba1Layer, type Mamba2Layer, type ModelSource } from "./weights.js";

/** Hugging Face configs of the public checkpoints (state-spaces/mamba-*-hf, mamba2-*). */
export const SHAPES: Record<string, Record<string, unknown>> = {
  "mamba-130m": { model_type: "mamba", hidden_size: 768, num_hidden_layers: 24, vocab_size: 50280, state_size: 16 },
  "mamba-370m": { model_type: "mamba", hidden_size: 1024, num_hidden_layers: 48, vocab_size: 50280, state_size: 16 },
  "mamba-1.4b": { model_type: "mamba", hidden_size: 2048, num_hidden_layers: 48, vocab_size: 50280, state_size: 16 },
  "mamba-2.8b": { model_type: "mamba", hidden_size: 2560, num_hidden_layers: 64, vocab_size: 50280, state_size: 16 },
  "mamba2-130m": {
    model_type: "mamba2",
    hidden_size: 768,
    num_hidden_layers: 24,
    vocab_size: 50288,
    state_size: 128,
    num_heads: 24,
    head_dim: 64,
    n_groups: 1,
    tie_word_embeddings: true,
  },
  "mamba2-370m": {
    model_type: "mamba2",
    hidden_size: 1024,
    num_hidden_layers: 48,
    vocab_size: 50288,
    state_size: 128,
    num_heads: 32,
    head_dim: 64,
    n_groups: 1,
    tie_word_embeddings: true,
  },
};

export function randomModel(name: string, seed = 0): MambaModel {
  const src = randomSource(name, seed, shared);
  return new MambaModel(src.config, materialize(src));
}

/**
 * Random weights of a published shape, made one tensor at a time: each tensor draws from its own
 * place in one seeded stream (layers in order, then the embedding), so a layer can be made alone and
 * is the same whichever order they are asked for. `alloc`: where the arrays live.
 */
export function randomSource(name: string, seed = 0, alloc: (n: number) => Float32Array = (n) => new Float32Array(n)): ModelSource {
  const raw = SHAPES[name];
  if (!raw) throw new UserError(`unknown shape ${name} (expected one of ${Object.keys(SHAPES).join(", ")})`);
  const c = parseConfig(raw, name);
  // three draws per value, the tensors of a layer in this order
  const convDim = c.arch === "mamba1" ? c.dInner : c.dInner + 2 * c.nGroups * c.dState;
  const sizes =
    c.arch === "mamba1"
      ? [2 * c.dInner * c.dModel, c.dInner * c.dConv, (c.dtRank + 2 * c.dState) * c.dInner, c.dInner * c.dtRank, c.dModel * c.dInner]
      : [(c.dInner + convDim + c.nHeads) * c.dModel, convDim * c.dConv, c.dModel * c.dInner];
  const perLayer = sizes.reduce((a, b) => a + b, 0);
  const normal = (n: number, std: number, at: number) => {
    const rand = seededRandom(seed, 3 * at);
    const a = alloc(n);
    for (let i = 0; i < n; i++) a[i] = (rand() + rand() + rand() - 1.5) * 2 * std; // ~N(0, std²)
    return a;
  };
  const fill = (n: number, v: number) => new Float32Array(n).fill(v);
  const A = (n: number, per: number) => Float32Array.from({ length: n }, (_, i) => -((i % per) + 1)); // S4D-real
  return {
    config: c,
    close() {},
    head() {
      const embedding = normal(c.vocabSize * c.dModel, 0.02, c.nLayer * perLayer);
      return { embedding, normF: fill(c.dModel, 1), lmHead: embedding };
    },
    layer(l) {
      let at = l * perLayer;
      const next = (n: number, std: number) => {
        const a = normal(n, std, at);
        at += n;
        return a;
      };
      if (c.arch === "mamba1") {
        return {
          norm: fill(c.dModel, 1),
          inProj: next(sizes[0], 0.02),
          inProjBias: null,
          convW: next(sizes[1], 0.2),
          convB: fill(c.dInner, 0),
          xProj: next(sizes[2], 0.02),
          dtProj: next(sizes[3], 0.1),
          dtProjBias: fill(c.dInner, -4),
          A: A(c.dInner * c.dState, c.dState),
          D: fill(c.dInner, 1),
          outProj: next(sizes[4], 0.02),
          outProjBias: null,
        } satisfies Mamba1Layer;
      }
      return {
        norm: fill(c.dModel, 1),
        inProj: next(sizes[0], 0.02),
        inProjBias: null,
        convW: next(sizes[1], 0.2),
        convB: fill(convDim, 0),
        dtBias: fill(c.nHeads, -4),
        A: A(c.nHeads, c.nHeads),
        D: fill(c.nHeads, 1),
        gatedNorm: fill(c.dInner, 1),
        outProj: next(sizes[2], 0.02),
        outProjBias: null,
      } satisfies Mamba2Layer;
    },
  };
}
