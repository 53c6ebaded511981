#!/usr/bin/env node
// Two engine packages of the same model (say, built before and after a change to the builder) side by
// side in one process with backend ort: decode steps at each batch size in alternating rounds, the
// first step's logits compared. Prints ms per step, the speed-up and each one's batch-8 ÷ batch-1
// throughput; writes JSON under bench/results/.
// Usage: node scripts/ort-engine-ab.mjs BASE.mamba NEW.mamba [BASE2.mamba NEW2.mamba ...] [--batch 1,8] [--rounds 7] [--steps 100] [--threads N] [--label name]
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { OrtBackend } from "../dist/runtime/backends/ort.js";
import { provenance, writeResult } from "../dist/runtime/bench/results.js";
import { abArgs, b8OverB1, batchesSideBySide } from "./ab-rounds.mjs";

const args = abArgs("$0 BASE.mamba NEW.mamba [BASE2.mamba NEW2.mamba ...]", "ort-engine-ab", (y) =>
  y.demandCommand(2).check((a) => (a._.length % 2 === 0 ? true : "engines come in pairs: BASE NEW")),
);
const batches = args.batch.split(",").map(Number);
const paths = args._.map(String);

/** What a package's fused step graph is made of, as far as this comparison cares. */
function describe(dir, be) {
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  let fusedOps = [];
  try {
    const graph = readFileSync(join(dir, "cpu", "step-fused.onnx"));
    fusedOps = ["ConvStep", "SelectiveStep", "SsdStep", "MatMulQ4", "MatMulNBits"].filter((op) => graph.includes(op));
  } catch {
    // no fused step graph
  }
  return { engine: dir, builder: m.builder, device: be.info.device, stepFusedOps: fusedOps };
}

const pairs = [];
for (let i = 0; i < paths.length; i += 2) {
  const base = await OrtBackend.open(paths[i], { threads: args.threads });
  const next = await OrtBackend.open(paths[i + 1], { threads: args.threads });
  if (
    base.manifest.source.weightsSha256 !== next.manifest.source.weightsSha256 ||
    base.manifest.quant.recipe !== next.manifest.quant.recipe
  )
    throw new Error(`${paths[i]} and ${paths[i + 1]}: not the same model and recipe`);
  const b = await batchesSideBySide(base, next, batches, args.rounds, args.steps, ["baseMs", "newMs"]);
  pairs.push({ base: describe(paths[i], base), new: describe(paths[i + 1], next), recipe: base.manifest.quant.recipe, batch: b });
  await base.close();
  await next.close();
  console.log(
    `${paths[i + 1]} against ${paths[i]}: ` +
      batches
        .map((B) => `b${B} ${b[B].baseMs.toFixed(3)} → ${b[B].newMs.toFixed(3)} ms (× ${(b[B].baseMs / b[B].newMs).toFixed(2)})`)
        .join("; ") +
      `; b8÷b1 tokens/s ${b8OverB1(b, "baseMs")} → ${b8OverB1(b, "newMs")}; logits rel. diff ${b[batches[0]].firstStepLogitsRelErr}`,
  );
}
if (args.out) {
  const record = {
    tool: "scripts/ort-engine-ab.mjs",
    kind: "ort-engine-ab",
    ...provenance(),
    threads: args.threads ?? null,
    rounds: args.rounds,
    steps: args.steps,
    pairs,
  };
  console.log(`wrote ${writeResult("ort-engine-ab", "ort", args.label, record)}`);
}
