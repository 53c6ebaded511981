// What a model's weights take in float16, the baseline an engine's size is compared with: the
// weights.safetensors an fp16 build writes (matrices in float16, vectors in float32).
import type { ModelConfig } from "../model/config.js";

export function float16WeightBytes(c: ModelConfig): number {
  const D = c.dModel;
  const E = c.dInner;
  const half = (n: number) => 2 * n;
  const single = (n: number) => 4 * n;
  const table = half(c.vocabSize * D) * (c.tiedEmbeddings ? 1 : 2);
  let layer: number;
  if (c.arch === "mamba1") {
    const N = c.dState;
    const R = c.dtRank;
    layer =
      half(2 * E * D + (R + 2 * N) * E + E * R + D * E) + // in_proj, x_proj, dt_proj, out_proj
      single(D + E * c.dConv + (c.convBias ? E : 0) + E * N + E + E); // norm, conv, A, D, dt_proj bias
  } else {
    const GN = c.nGroups * c.dState;
    const conv = E + 2 * GN;
    layer =
      half((2 * E + 2 * GN + c.nHeads) * D + D * E) + // in_proj, out_proj
      single(D + conv * c.dConv + (c.convBias ? conv : 0) + 3 * c.nHeads + E); // norm, conv, A, D, dt_bias, gated norm
  }
  const bias = c.projBias
    ? single(c.nLayer * (c.arch === "mamba1" ? 2 * E : 2 * E + 2 * c.nGroups * c.dState + c.nHeads) + c.nLayer * D)
    : 0;
  return table + single(D) + c.nLayer * layer + bias;
}

/** The package's weight files: what it stores of the model, whichever backend reads it. */
export const isWeightFile = (name: string) => /(^|\/)weights\.(safetensors|bin)$/.test(name);
