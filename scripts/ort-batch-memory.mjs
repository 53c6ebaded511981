#!/usr/bin/env node
// Backend ort's resident memory as a daemon's batches come and go: opens an engine, runs one decode
// step at every batch size from 1 to --max-batch (as continuous batching does over time) and prints
// the process's resident set after each --every sizes. Writes JSON under bench/results/.
// Usage: node scripts/ort-batch-memory.mjs ENGINE.mamba... [--max-batch 32] [--every 8] [--label L]
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { OrtBackend } from "../dist/runtime/backends/ort.js";
import { provenance, writeResult } from "../dist/runtime/bench/results.js";

const args = yargs(hideBin(process.argv))
  .usage("$0 ENGINE.mamba...")
  .option("max-batch", { type: "number", default: 32, describe: "largest batch size" })
  .option("every", { type: "number", default: 8, describe: "report after every this many batch sizes" })
  .option("label", {
    type: "string",
    default: "demo",
    describe: "the record's name: bench/results/<date>-ort-batch-memory-ort-<label>.json",
  })
  .option("out", { type: "boolean", default: true, describe: "write bench/results/*.json" })
  .demandCommand(1)
  .strict()
  .parseSync();

const rssMB = () => Math.round(process.memoryUsage().rss / 2 ** 20);
const rows = [];
for (const engine of args._.map(String)) {
  const before = rssMB();
  const be = await OrtBackend.open(engine);
  const row = { engine, device: be.info.device, rssBeforeOpenMB: before, rssOpenMB: rssMB(), afterBatchSizes: [] };
  const states = Array.from({ length: args.maxBatch }, () => be.newState());
  for (let b = 1; b <= args.maxBatch; b++) {
    await be.step(new Int32Array(b).fill(3), states.slice(0, b));
    if (b % args.every === 0 || b === args.maxBatch) row.afterBatchSizes.push({ upTo: b, rssMB: rssMB() });
  }
  await be.close();
  rows.push(row);
  console.log(
    `${engine}: open ${row.rssOpenMB} MB; ` + row.afterBatchSizes.map((r) => `after sizes 1..${r.upTo} ${r.rssMB} MB`).join(", "),
  );
}
if (args.out) {
  const record = {
    tool: "scripts/ort-batch-memory.mjs",
    kind: "ort-batch-memory",
    ...provenance(),
    maxBatch: args.maxBatch,
    engines: rows,
  };
  console.log(`wrote ${writeResult("ort-batch-memory", "ort", args.label, record)}`);
}
