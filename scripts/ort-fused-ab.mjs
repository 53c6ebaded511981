#!/usr/bin/env node
// Backend ort's decode step with the fused operators of engines/ort-ops against the plain step graph,
// side by side in one process: for each engine both are opened, and timed rounds of each alternate
// (the same greedy tokens, the same batch). Prints ms per step, the speed-up and each one's batch-8 ÷
// batch-1 throughput, checks that both give the same logits, and writes JSON under bench/results/.
// Usage: node scripts/ort-fused-ab.mjs ENGINE.mamba... [--batch 1,8] [--rounds 7] [--steps 100]
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { OrtBackend } from "../dist/runtime/backends/ort.js";
import { provenance, writeResult } from "../dist/runtime/cli/results.js";

const args = yargs(hideBin(process.argv))
  .usage("$0 ENGINE.mamba...")
  .option("batch", { type: "string", default: "1,8", describe: "batch sizes" })
  .option("rounds", { type: "number", default: 7, describe: "timed rounds per variant (the median is reported)" })
  .option("steps", { type: "number", default: 100, describe: "decode steps per round" })
  .option("out", { type: "boolean", default: true, describe: "write bench/results/*.json" })
  .demandCommand(1)
  .strict()
  .parseSync();
const batches = args.batch.split(",").map(Number);
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

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
  const row = { engine, recipe: fused.manifest.quant.recipe, arch: fused.manifest.config.arch, device: fused.info.device, batch: {} };
  for (const B of batches) {
    // same start: the same prompt in every sequence, then the same tokens into both variants
    const start = Int32Array.from({ length: B }, (_, b) => 1 + b);
    const sf = Array.from({ length: B }, () => fused.newState());
    const sp = Array.from({ length: B }, () => plain.newState());
    const lf = await fused.step(start.slice(), sf);
    const lp = await plain.step(start.slice(), sp);
    let err = 0, ref = 0;
    for (let i = 0; i < lp.length; i++) (err = Math.max(err, Math.abs(lf[i] - lp[i]))), (ref = Math.max(ref, Math.abs(lp[i])));
    const tf = Int32Array.from(start), tp = Int32Array.from(start);
    await timed(fused, sf, tf, 20); // warm-up
    await timed(plain, sp, tp, 20);
    const f = [], p = [];
    for (let r = 0; r < args.rounds; r++) {
      // alternate which goes first, so a drift of the machine falls on both
      if (r % 2 === 0) f.push(await timed(fused, sf, tf, args.steps)), p.push(await timed(plain, sp, tp, args.steps));
      else p.push(await timed(plain, sp, tp, args.steps)), f.push(await timed(fused, sf, tf, args.steps));
    }
    row.batch[B] = { fusedMs: +median(f).toFixed(4), plainMs: +median(p).toFixed(4), firstStepLogitsRelErr: +(err / ref).toExponential(2) };
  }
  await fused.close();
  await plain.close();
  rows.push(row);
  const b = row.batch;
  const ratio = (k) => (batches.includes(1) && batches.includes(8) ? ((8 * b[1][k]) / b[8][k]).toFixed(2) : "–");
  console.log(
    `${engine}: ` +
      batches.map((B) => `b${B} fused ${b[B].fusedMs.toFixed(3)} ms, plain ${b[B].plainMs.toFixed(3)} ms (× ${(b[B].plainMs / b[B].fusedMs).toFixed(2)})`).join("; ") +
      `; b8÷b1 tokens/s fused ${ratio("fusedMs")}, plain ${ratio("plainMs")}; logits rel. diff ${b[batches[0]].firstStepLogitsRelErr}`,
  );
}
if (args.out) {
  const record = { tool: "scripts/ort-fused-ab.mjs", kind: "ort-fused-ab", ...provenance(), rounds: args.rounds, steps: args.steps, engines: rows };
  console.log(`wrote ${writeResult("ort-fused-ab", "ort", "demo", record)}`);
}
