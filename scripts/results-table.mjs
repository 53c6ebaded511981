#!/usr/bin/env node
// Regenerates the README's results tables from the records under bench/results/ (written by
// `mamba-edge eval --out` and `mamba-edge bench --out`): the newest record per model and backend.
// Usage: node scripts/results-table.mjs [--check]   (--check: exit 1 if the README is stale)
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const dir = join(root, "bench", "results");
const records = readdirSync(dir)
  .filter((f) => f.endsWith(".json"))
  .map((f) => ({ file: f, ...JSON.parse(readFileSync(join(dir, f), "utf8")) }))
  .sort((a, b) => a.date.localeCompare(b.date));

function newest(tool) {
  const byKey = new Map();
  for (const r of records.filter((r) => r.tool === tool)) byKey.set(`${r.model}|${r.backend}`, r);
  return [...byKey.values()].sort((a, b) => a.model.localeCompare(b.model));
}

const machine = (r) => `${r.machine.cpu}, ${r.machine.cores} cores`;
const lines = [];

lines.push("Perplexity of the Brown held-out split (`data/brown/heldout.txt`), the whole text through one recurrent state:", "");
lines.push("| model | backend | tokens | perplexity | bits/byte | tokens/s | machine | date | commit |", "|---|---|---:|---:|---:|---:|---|---|---|");
for (const r of newest("mamba-edge eval")) {
  lines.push(`| ${r.model} | ${r.backend} | ${r.tokens} | ${r.perplexity.toFixed(2)} | ${r.bitsPerByte.toFixed(4)} | ${r.tokensPerSecond.toFixed(0)} | ${machine(r)} | ${r.date.slice(0, 10)} | ${r.commit ?? "-"} |`);
}
lines.push("", "Speed (`mamba-edge bench`): prefill of a 512-token prompt, greedy decode at batch 1 and 8:", "");
lines.push("| model | backend | prefill tokens/s | TTFT ms | decode b=1 tokens/s | decode b=8 tokens/s | weights MB | peak RSS MB | machine | date | commit |", "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|");
for (const r of newest("mamba-edge bench")) {
  lines.push(`| ${r.model} | ${r.backend} | ${r.prefillTokensPerSecond} | ${r.ttftMs} | ${r.decode.batch1?.tokensPerSecond ?? "-"} | ${r.decode.batch8?.tokensPerSecond ?? "-"} | ${r.weightMB} | ${r.peakRssMB} | ${machine(r)} | ${r.date.slice(0, 10)} | ${r.commit ?? "-"} |`);
}

const readmePath = join(root, "README.md");
const readme = readFileSync(readmePath, "utf8");
const begin = "<!-- results:begin (scripts/results-table.mjs) -->";
const end = "<!-- results:end -->";
const i = readme.indexOf(begin);
const j = readme.indexOf(end);
if (i < 0 || j < i) throw new Error("README.md has no results markers");
const next = readme.slice(0, i + begin.length) + "\n" + lines.join("\n") + "\n" + readme.slice(j);
if (process.argv.includes("--check")) {
  if (next !== readme) {
    console.error("README.md results are stale: run node scripts/results-table.mjs");
    process.exit(1);
  }
} else {
  writeFileSync(readmePath, next);
  console.log(`README.md: ${newest("mamba-edge eval").length} eval and ${newest("mamba-edge bench").length} bench records`);
}
