#!/usr/bin/env node
// Backend ort with the fused operators of engines/ort-ops against its plain graphs, side by side in
// one process: for each engine both are opened, and timed rounds of each alternate: a prefill of
// --prompt tokens into a fresh state, then decode steps (the same greedy tokens, the same batch).
// Prints prefill tokens/s, ms per step, the speed-ups and each one's batch-8 ÷ batch-1 throughput,
// checks that both give the same logits, and writes JSON under bench/results/.
// Usage: node scripts/ort-fused-ab.mjs ENGINE.mamba... [--batch 1,8] [--rounds 7] [--steps 100] [--prompt 512] [--label demo]
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { OrtBackend } from "../dist/runtime/backends/ort.js";
import { provenance, writeResult } from "../dist/runtime/cli/results.js";

const args = yargs(hideBin(process.argv))
  .usage("$0 ENGINE.mamba...")
  .option("batch", { type: "string", default: "1,8", describe: "batch sizes" })
  .option("rounds", { type: "number", default: 7, describe: "timed rounds per variant (the median is reported)" })
  .option("steps", { type: "number", default: 100, describe: "decode steps per round" })
  .option("prompt", { type: "number", default: 512, describe: "prompt tokens per timed prefill (0: no prefill)" })
  .option("label", { type: "string", default: "demo", describe: "the record's name: bench/results/<date>-ort-fused-ab-ort-<label>.json" })
  .option("out", { type: "boolean", default: true, describe: "write bench/results/*.json" })
  .demandCommand(1)
  .strict()
  .parseSync();
const batches = args.batch.split(",").map(Number);
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** max |a − b| over max |b|, over the first n values */
function relDiff(a, b, n = b.length) {
  let err = 0, ref = 0;
  for (let i = 0; i < n; i++) (err = Math.max(err, Math.abs(a[i] - b[i]))), (ref = Math.max(ref, Math.abs(b[i])));
  return +(err / ref).toExponential(2);
}

/** ms per step over `steps` steps of `be` on `states`, feeding back each sequence's argmax. */
async function timed(be, states, tokens, steps) {
  const V = be.info.vocabSize;
  const t0 = performance.now();
  let logits;
  for (let i = 0; i < steps; i++) {
    logits = await be.step(tokens, states);
    for (let b = 0; b < tokens.length; b++) {
      let best = 0;
      for (let v = 1; v < V; v++) if (logits[b * V + v] > logits[b * V + best]) best = v;
      tokens[b] = best;
    }
  }
  return (performance.now() - t0) / steps;
}

const rows = [];
for (const engine of args._.map(String)) {
  const fused = await OrtBackend.open(engine);
  const plain = await OrtBackend.open(engine, { fused: false });
  if (!/fused operators$/.test(fused.info.device)) throw new Error(`${engine}: the fused step did not open (${fused.info.device})`);
  const row = { engine, recipe: fused.manifest.quant.recipe, arch: fused.manifest.config.arch, device: fused.info.device, prefill: null, batch: {} };
  if (args.prompt > 0) {
    const V = fused.info.vocabSize;
    const prompt = Int32Array.from({ length: args.prompt }, (_, i) => (i * 7919 + 1) % V);
    const once = async (be) => {
      const t0 = performance.now();
      const logits = await be.prefill(prompt, be.newState());
      return { ms: performance.now() - t0, logits };
    };
    const a = await once(fused); // warm-up, and the logits compared
    const b = await once(plain);
    const f = [], p = [];
    for (let r = 0; r < args.rounds; r++) {
      if (r % 2 === 0) f.push((await once(fused)).ms), p.push((await once(plain)).ms);
      else p.push((await once(plain)).ms), f.push((await once(fused)).ms);
    }
    const tps = (ms) => +((args.prompt * 1000) / ms).toFixed(1);
    row.prefill = { tokens: args.prompt, fusedTokensPerSecond: tps(median(f)), plainTokensPerSecond: tps(median(p)), lastLogitsRelErr: relDiff(a.logits, b.logits) };
  }
  for (const B of batches) {
    // same start: the same prompt in every sequence, then the same tokens into both variants
    const start = Int32Array.from({ length: B }, (_, b) => 1 + b);
    const sf = Array.from({ length: B }, () => fused.newState());
    const sp = Array.from({ length: B }, () => plain.newState());
    const lf = await fused.step(start.slice(), sf);
    const lp = await plain.step(start.slice(), sp);
    const tf = Int32Array.from(start), tp = Int32Array.from(start);
    await timed(fused, sf, tf, 20); // warm-up
    await timed(plain, sp, tp, 20);
    const f = [], p = [];
    for (let r = 0; r < args.rounds; r++) {
      // alternate which goes first, so a drift of the machine falls on both
      if (r % 2 === 0) f.push(await timed(fused, sf, tf, args.steps)), p.push(await timed(plain, sp, tp, args.steps));
      else p.push(await timed(plain, sp, tp, args.steps)), f.push(await timed(fused, sf, tf, args.steps));
    }
    row.batch[B] = { fusedMs: +median(f).toFixed(4), plainMs: +median(p).toFixed(4), firstStepLogitsRelErr: relDiff(lf, lp) };
  }
  await fused.close();
  await plain.close();
  rows.push(row);
  const b = row.batch;
  const ratio = (k) => (batches.includes(1) && batches.includes(8) ? ((8 * b[1][k]) / b[8][k]).toFixed(2) : "–");
  const pf = row.prefill;
  console.log(
    `${engine}: ` +
      (pf ? `prefill ${pf.tokens} fused ${pf.fusedTokensPerSecond} tok/s, plain ${pf.plainTokensPerSecond} (× ${(pf.fusedTokensPerSecond / pf.plainTokensPerSecond).toFixed(2)}); ` : "") +
      batches.map((B) => `b${B} fused ${b[B].fusedMs.toFixed(3)} ms, plain ${b[B].plainMs.toFixed(3)} ms (× ${(b[B].plainMs / b[B].fusedMs).toFixed(2)})`).join("; ") +
      `; b8÷b1 tokens/s fused ${ratio("fusedMs")}, plain ${ratio("plainMs")}; logits rel. diff ${b[batches[0]].firstStepLogitsRelErr}`,
  );
}
if (args.out) {
  const record = { tool: "scripts/ort-fused-ab.mjs", kind: "ort-fused-ab", ...provenance(), rounds: args.rounds, steps: args.steps, prompt: args.prompt, engines: rows };
  console.log(`wrote ${writeResult("ort-fused-ab", "ort", args.label, record)}`);
}
