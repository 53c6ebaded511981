// Helpers of the side-by-side scripts (ort-fused-ab.mjs, ort-engine-ab.mjs): two variants timed in
// alternating rounds in one process, so that a drift of the machine falls on both.
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { argmax } from "../dist/runtime/sampling.js";

/** The options both scripts take; `record` names the JSON file, `more` adds a script's own. */
export function abArgs(usage, record, more = (y) => y) {
  const y = yargs(hideBin(process.argv))
    .usage(usage)
    .option("batch", { type: "string", default: "1,8", describe: "batch sizes" })
    .option("rounds", { type: "number", default: 7, describe: "timed rounds per variant (the median is reported)" })
    .option("steps", { type: "number", default: 100, describe: "decode steps per round" })
    .option("threads", { type: "number", describe: "onnxruntime intra-op threads (default: one per core)" })
    .option("label", { type: "string", default: "demo", describe: `the record's name: bench/results/<date>-${record}-ort-<label>.json` })
    .option("out", { type: "boolean", default: true, describe: "write bench/results/*.json" });
  return more(y).strict().parseSync();
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** max |a − b| over max |b|, over the first n values */
export function relDiff(a, b, n = b.length) {
  let err = 0,
    ref = 0;
  for (let i = 0; i < n; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    ref = Math.max(ref, Math.abs(b[i]));
  }
  return +(err / ref).toExponential(2);
}

/** ms per step over `steps` steps of `be` on `states`, feeding back each sequence's argmax. */
export async function timedSteps(be, states, tokens, steps) {
  const V = be.info.vocabSize;
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    const logits = await be.step(tokens, states);
    for (let b = 0; b < tokens.length; b++) tokens[b] = argmax(logits.subarray(b * V, (b + 1) * V));
  }
  return (performance.now() - t0) / steps;
}

/** `rounds` timings of each of two async measurements, alternating which goes first; their medians. */
export async function alternate(a, b, rounds) {
  const ta = [],
    tb = [];
  for (let r = 0; r < rounds; r++) {
    // alternate which runs first, so neither always runs warm
    if (r % 2 === 0) {
      ta.push(await a());
      tb.push(await b());
    } else {
      tb.push(await b());
      ta.push(await a());
    }
  }
  return [median(ta), median(tb)];
}

/**
 * Decode steps of two backends on the same model side by side, at batch B: the same start tokens
 * into fresh states, 20 warm-up steps each, then alternating timed rounds. Returns both medians (ms
 * per step) and how far the first step's logits differ.
 */
export async function stepsSideBySide(a, b, B, rounds, steps) {
  const start = Int32Array.from({ length: B }, (_, i) => 1 + i);
  const sa = Array.from({ length: B }, () => a.newState());
  const sb = Array.from({ length: B }, () => b.newState());
  const la = (await a.step(start.slice(), sa)).slice(); // (kept past later steps)
  const lb = (await b.step(start.slice(), sb)).slice();
  const ta = Int32Array.from(start),
    tb = Int32Array.from(start);
  await timedSteps(a, sa, ta, 20);
  await timedSteps(b, sb, tb, 20);
  const [ma, mb] = await alternate(
    () => timedSteps(a, sa, ta, steps),
    () => timedSteps(b, sb, tb, steps),
    rounds,
  );
  return { aMs: +ma.toFixed(4), bMs: +mb.toFixed(4), firstStepLogitsRelErr: relDiff(la, lb) };
}

/** stepsSideBySide at every batch size: { [B]: { [ka]: ms, [kb]: ms, firstStepLogitsRelErr } }. */
export async function batchesSideBySide(a, b, batches, rounds, steps, [ka, kb]) {
  const out = {};
  for (const B of batches) {
    const r = await stepsSideBySide(a, b, B, rounds, steps);
    out[B] = { [ka]: r.aMs, [kb]: r.bMs, firstStepLogitsRelErr: r.firstStepLogitsRelErr };
  }
  return out;
}

/** Batch 8's tokens/s over batch 1's, from the ms per step under `key`; "–" unless both were run. */
export function b8OverB1(batch, key) {
  return batch[1] && batch[8] ? ((8 * batch[1][key]) / batch[8][key]).toFixed(2) : "–";
}
