#!/usr/bin/env node
// Backend ort with the fused operators of engines/ort-ops against its plain graphs, side by side in
// one process: for each engine both are opened, and timed rounds of each alternate: a prefill of
// --prompt tokens into a fresh state, then decode steps (the same greedy tokens, the same batch).
// Prints prefill tokens/s, ms per step, the speed-ups and each one's batch-8 ÷ batch-1 throughput,
// checks that both give the same logits, and writes JSON under bench/results/.
// Usage: node scripts/ort-fused-ab.mjs ENGINE.mamba... [--batch 1,8] [--rounds 7] [--steps 100] [--prompt 512] [--threads N] [--label demo]
import { OrtBackend } from "../dist/runtime/backends/ort.js";
import { provenance, writeResult } from "../dist/runtime/bench/results.js";
import { abArgs, alternate, b8OverB1, batchesSideBySide, relDiff } from "./ab-rounds.mjs";

const args = abArgs("$0 ENGINE.mamba...", "ort-fused-ab", (y) =>
  y.option("prompt", { type: "number", default: 512, describe: "prompt tokens per timed prefill (0: no prefill)" }).demandCommand(1),
);
const batches = args.batch.split(",").map(Number);
const rows = [];
for (const engine of args._.map(String)) {
  const fused = await OrtBackend.open(engine, { threads: args.threads });
  const plain = await OrtBackend.open(engine, { fused: false, threads: args.threads });
  if (!/fused operators$/.test(fused.info.device)) throw new Error(`${engine}: the fused step did not open (${fused.info.device})`);
  const row = {
    engine,
    recipe: fused.manifest.quant.recipe,
    arch: fused.manifest.config.arch,
    device: fused.info.device,
    prefill: null,
    batch: {},
  };
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
    const [f, p] = await alternate(
      async () => (await once(fused)).ms,
      async () => (await once(plain)).ms,
      args.rounds,
    );
    const tps = (ms) => +((args.prompt * 1000) / ms).toFixed(1);
    row.prefill = {
      tokens: args.prompt,
      fusedTokensPerSecond: tps(f),
      plainTokensPerSecond: tps(p),
      lastLogitsRelErr: relDiff(a.logits, b.logits),
    };
  }
  const b = (row.batch = await batchesSideBySide(fused, plain, batches, args.rounds, args.steps, ["fusedMs", "plainMs"]));
  await fused.close();
  await plain.close();
  rows.push(row);
  const pf = row.prefill;
  console.log(
    `${engine}: ` +
      (pf
        ? `prefill ${pf.tokens} fused ${pf.fusedTokensPerSecond} tok/s, plain ${pf.plainTokensPerSecond} (× ${(pf.fusedTokensPerSecond / pf.plainTokensPerSecond).toFixed(2)}); `
        : "") +
      batches
        .map(
          (B) =>
            `b${B} fused ${b[B].fusedMs.toFixed(3)} ms, plain ${b[B].plainMs.toFixed(3)} ms (× ${(b[B].plainMs / b[B].fusedMs).toFixed(2)})`,
        )
        .join("; ") +
      `; b8÷b1 tokens/s fused ${b8OverB1(b, "fusedMs")}, plain ${b8OverB1(b, "plainMs")}; logits rel. diff ${b[batches[0]].firstStepLogitsRelErr}`,
  );
}
if (args.out) {
  const record = {
    tool: "scripts/ort-fused-ab.mjs",
    kind: "ort-fused-ab",
    ...provenance(),
    threads: args.threads ?? null,
    rounds: args.rounds,
    steps: args.steps,
    prompt: args.prompt,
    engines: rows,
  };
  console.log(`wrote ${writeResult("ort-fused-ab", "ort", args.label, record)}`);
}
