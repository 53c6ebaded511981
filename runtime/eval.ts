// Perplexity and bits per byte of a text: the whole text runs through one recurrent state, in
// chunks, so no context is cut off and memory stays constant. In the same pass, last-word accuracy
// (a LAMBADA-style cloze): for every sentence-final word, whether greedy decoding would produce it
// exactly, every one of its tokens the argmax given all that came before; and next-token accuracy
// (how often the argmax is the next token), which on small models separates recipes more finely.
import type { Backend } from "./backends/backend.js";

/** Tokens [start, end) of a word to predict. */
export interface ClozeItem {
  start: number;
  end: number;
}

export interface ClozeResult {
  items: number;
  correct: number;
  accuracy: number;
}

/**
 * The sentence-final words of a text (a word of 3+ letters before ., ! or ?, ending a line), as
 * token ranges; a word whose tokens also cover other characters (merged with what follows) is left out.
 */
export function clozeItems(text: string, offsets: [number, number][]): ClozeItem[] {
  const items: ClozeItem[] = [];
  const word = /(?<=\s)[A-Za-z]{3,}(?=[.!?]["')\]]*[ \t]*$)/gm;
  let t = 0;
  for (let m = word.exec(text); m; m = word.exec(text)) {
    const ws = m.index;
    const we = ws + m[0].length;
    while (t < offsets.length && offsets[t][1] <= ws) t++;
    if (t >= offsets.length) break;
    let e = t;
    while (e < offsets.length && offsets[e][0] < we) e++;
    // the first token may carry the space before the word; the last must end with it
    if (t > 0 && offsets[t][0] >= ws - 1 && e > t && offsets[e - 1][1] === we) items.push({ start: t, end: e });
  }
  return items;
}

export interface EvalResult {
  tokens: number; // tokens scored (all but the first)
  bytes: number; // UTF-8 bytes of the text
  nll: number; // total negative log-likelihood, nats
  perplexity: number;
  bitsPerByte: number;
  seconds: number;
  /** share of scored tokens that are the argmax of the prediction before them */
  nextTokenAccuracy: number;
  cloze?: ClozeResult;
}

export async function evaluate(
  backend: Backend,
  ids: number[],
  bytes: number,
  chunk = 256,
  onProgress: (done: number) => void = () => {},
  cloze: ClozeItem[] = [],
): Promise<EvalResult> {
  const V = backend.info.vocabSize;
  const state = backend.newState();
  const t0 = performance.now();
  let nll = 0;
  let scored = 0;
  // hit[t]: the prediction after token t (of token t + 1) is its argmax
  const predicted = new Set<number>();
  for (const c of cloze) for (let t = c.start; t < c.end; t++) predicted.add(t - 1);
  const hit = new Set<number>();
  let top1 = 0;
  for (let start = 0; start < ids.length - 1; start += chunk) {
    const end = Math.min(ids.length - 1, start + chunk);
    const logits = await backend.prefill(Int32Array.from(ids.slice(start, end)), state, true);
    for (let t = start; t < end; t++) {
      const row = logits.subarray((t - start) * V, (t - start + 1) * V);
      nll += logSumExp(row) - row[ids[t + 1]];
      scored++;
      const right = argmax(row) === ids[t + 1];
      if (right) top1++;
      if (right && predicted.has(t)) hit.add(t);
    }
    onProgress(end);
  }
  const inText = cloze.filter((c) => c.start >= 1 && c.end <= ids.length);
  const correct = inText.filter((c) => Array.from({ length: c.end - c.start }, (_, k) => c.start - 1 + k).every((t) => hit.has(t))).length;
  return {
    tokens: scored,
    bytes,
    nll,
    perplexity: Math.exp(nll / scored),
    bitsPerByte: nll / Math.LN2 / bytes,
    seconds: (performance.now() - t0) / 1000,
    nextTokenAccuracy: top1 / scored,
    ...(inText.length ? { cloze: { items: inText.length, correct, accuracy: correct / inText.length } } : {}),
  };
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - max);
  return max + Math.log(s);
}
