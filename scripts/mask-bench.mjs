#!/usr/bin/env node
// The cost of constrained decoding per token: XGrammar's mask plus our UTF-8 guard and the mask's
// application to the logits, at batch 1 and 8 (masks of a batch computed together), beside the
// reference backend's decode step on the same model. Prints the figures and writes
// bench/results/<date>-mask-<host>.json. Usage: node scripts/mask-bench.mjs [MODEL_DIR] [TOKENS]
import { execSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, hostname } from "node:os";
import { join } from "node:path";
import { Constraints } from "../dist/runtime/constrained/constraints.js";
import { applyMask } from "../dist/runtime/constrained/mask.js";
import { RefBackend } from "../dist/runtime/backends/ref.js";
import { MambaModel } from "../dist/engines/model/model.js";

const dir = process.argv[2] ?? "models/mamba2-brown";
const tokens = Number(process.argv[3] ?? 400);
const model = MambaModel.load(dir);
const backend = new RefBackend(model);
const vocab = model.config.vocabSize;
const grammar = Constraints.forTokenizer(join(dir, "tokenizer.json"), vocab, model.config.eosTokenId);
const schema = {
  type: "object",
  properties: {
    action: { enum: ["move", "turn", "stop"] },
    speed: { type: "number", minimum: 0, maximum: 2 },
    note: { type: "string", maxLength: 64 },
  },
  required: ["action", "speed", "note"],
  additionalProperties: false,
};
const logits = new Float32Array(vocab);
const pick = (m) => {
  const ok = [];
  for (let t = 0; t < vocab; t++) if ((m[t >> 5] >>> (t & 31)) & 1) ok.push(t);
  return ok[Math.floor(Math.random() * ok.length)];
};
const rows = [];
for (const batch of [1, 8]) {
  let n = 0;
  let ms = 0;
  while (n < tokens) {
    const cs = await Promise.all(Array.from({ length: batch }, () => grammar.start({ kind: "schema", schema }, "json_schema")));
    while (cs.some((c) => !c.complete) && n < tokens) {
      const live = cs.filter((c) => !c.complete);
      const t0 = performance.now();
      const masks = await Promise.all(live.map((c) => c.mask()));
      for (const m of masks) applyMask(logits, m);
      ms += performance.now() - t0;
      live.forEach((c, i) => c.accept(pick(masks[i])));
      n += live.length;
    }
    cs.forEach((c) => c.dispose());
  }
  const states = Array.from({ length: batch }, () => backend.newState());
  const ids = Int32Array.from({ length: batch }, () => 1);
  await backend.step(ids, states);
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) await backend.step(ids, states);
  const stepMs = (performance.now() - t0) / 20;
  rows.push({ batch, maskMsPerToken: ms / n, maskMsPerStep: (ms / n) * batch, refStepMs: stepMs, vocab });
  console.log(
    `batch ${batch}: mask ${((ms / n) * 1000).toFixed(1)} µs/token (${((ms / n) * batch).toFixed(3)} ms per step of ${batch}); reference step ${stepMs.toFixed(2)} ms; vocabulary ${vocab}`,
  );
}
const commit = (() => {
  try {
    return execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
})();
const date = new Date().toISOString();
const out = join("bench", "results", `${date.slice(0, 10)}-mask-${hostname().replace(/[^\w.-]/g, "-")}.json`);
mkdirSync(join("bench", "results"), { recursive: true });
writeFileSync(
  out,
  JSON.stringify(
    {
      tool: "scripts/mask-bench.mjs",
      date,
      commit,
      machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version },
      model: dir,
      schema,
      rows,
      anchor: "llguidance: about 50 µs per token at a 128k vocabulary",
    },
    null,
    1,
  ) + "\n",
);
console.log(`wrote ${out}`);
