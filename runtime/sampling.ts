// Picks the next token from logits: a chain of small steps (repetition penalty, temperature, top-k,
// top-p, min-p), then a draw from a seeded generator, so the same seed and request give the same
// text. Temperature 0 is greedy.
import { seededRandom } from "../engines/model/rng.js";
import { applyMask } from "./constrained/mask.js";

export interface SamplingParams {
  temperature: number; // 0 = greedy
  topK: number; // 0 = off
  topP: number; // 1 = off
  minP: number; // 0 = off
  repeatPenalty: number; // 1 = off; divides positive logits (multiplies negative) of seen tokens
  seed: number;
}

/** The sampling a request gets for what it does not say: the CLI and every transport use these. */
export const defaultSampling: Readonly<Omit<SamplingParams, "seed">> = {
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0,
  repeatPenalty: 1.1,
};

export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** Token ids sorted by logit, best first; only the best k when k > 0 (one pass, no full sort). */
function topIds(logits: Float64Array, k: number): number[] {
  if (k <= 0 || k >= logits.length) return Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  const ids: number[] = [];
  let floor = 0; // the k-th best so far, once there are k
  for (let id = 0; id < logits.length; id++) {
    const v = logits[id];
    if (ids.length === k && v <= floor) continue;
    let i = ids.length === k ? k - 1 : ids.length;
    while (i > 0 && logits[ids[i - 1]] < v) {
      ids[i] = ids[i - 1];
      i--;
    }
    ids[i] = id;
    if (ids.length === k) floor = logits[ids[k - 1]];
  }
  return ids;
}

// The logits a sample works on, reused from token to token: a fresh copy per token was 0.4 MB of
// garbage per sequence at a 50k vocabulary (sample() runs to completion, so one buffer serves all).
let work = new Float64Array(0);

export class Sampler {
  private readonly random: () => number;

  constructor(readonly params: SamplingParams) {
    this.random = seededRandom(params.seed);
  }

  /**
   * Chooses a token; `history` holds the tokens seen so far (for the repetition penalty; a Set is
   * used as it is); `mask`, one bit per token id, the only tokens that may be chosen.
   */
  sample(logitsIn: Float32Array, history: Iterable<number> = [], mask: Int32Array | null = null): number {
    const p = this.params;
    if (work.length < logitsIn.length) work = new Float64Array(logitsIn.length);
    const logits = work.length === logitsIn.length ? work : work.subarray(0, logitsIn.length);
    logits.set(logitsIn);
    if (mask !== null) applyMask(logits, mask);
    if (p.repeatPenalty !== 1) {
      for (const id of history instanceof Set ? history : new Set(history)) {
        if (id >= 0 && id < logits.length) logits[id] = logits[id] > 0 ? logits[id] / p.repeatPenalty : logits[id] * p.repeatPenalty;
      }
    }
    // (topIds for greedy too: one function over one array type keeps its loop fast)
    if (p.temperature <= 0) return topIds(logits, 1)[0];

    const ids = topIds(logits, p.topK);

    // softmax at temperature over the candidates
    const max = logits[ids[0]];
    let probs = ids.map((id) => Math.exp((logits[id] - max) / p.temperature));
    let sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((x) => x / sum);

    // top-p: the smallest prefix whose mass reaches topP; min-p: drop tokens below minP * best
    let keep = ids.length;
    if (p.topP < 1) {
      let mass = 0;
      for (let i = 0; i < probs.length; i++) {
        mass += probs[i];
        if (mass >= p.topP) {
          keep = i + 1;
          break;
        }
      }
    }
    if (p.minP > 0) {
      const floor = p.minP * probs[0];
      while (keep > 1 && probs[keep - 1] < floor) keep--;
    }
    while (keep > 1 && probs[keep - 1] === 0) keep--; // masked out (or beyond float range)
    sum = 0;
    for (let i = 0; i < keep; i++) sum += probs[i];
    let r = this.random() * sum;
    for (let i = 0; i < keep; i++) {
      r -= probs[i];
      if (r < 0) return ids[i];
    }
    return ids[keep - 1];
  }
}
