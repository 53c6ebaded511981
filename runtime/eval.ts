// Perplexity and bits per byte of a text: the whole text runs through one recurrent state, in
// chunks, so no context is cut off and memory stays constant.
import type { Backend } from "./backends/backend.js";

export interface EvalResult {
  tokens: number; // tokens scored (all but the first)
  bytes: number; // UTF-8 bytes of the text
  nll: number; // total negative log-likelihood, nats
  perplexity: number;
  bitsPerByte: number;
  seconds: number;
}

export async function evaluate(
  backend: Backend,
  ids: number[],
  bytes: number,
  chunk = 256,
  onProgress: (done: number) => void = () => {},
): Promise<EvalResult> {
  const V = backend.info.vocabSize;
  const state = backend.newState();
  const t0 = performance.now();
  let nll = 0;
  let scored = 0;
  for (let start = 0; start < ids.length - 1; start += chunk) {
    const end = Math.min(ids.length - 1, start + chunk);
    const logits = await backend.prefill(Int32Array.from(ids.slice(start, end)), state, true);
    for (let t = start; t < end; t++) {
      const row = logits.subarray((t - start) * V, (t - start + 1) * V);
      nll += logSumExp(row) - row[ids[t + 1]];
      scored++;
    }
    onProgress(end);
  }
  return {
    tokens: scored,
    bytes,
    nll,
    perplexity: Math.exp(nll / scored),
    bitsPerByte: nll / Math.LN2 / bytes,
    seconds: (performance.now() - t0) / 1000,
  };
}

function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - max);
  return max + Math.log(s);
}
