#!/usr/bin/env node
// Regenerates the README's results tables from the records under bench/results/ (written by
// `mamba-edge eval --out`, `bench --out` and `build --record`): the newest record per model, backend
// and recipe. Usage: node scripts/results-table.mjs [--check]   (--check: exit 1 if stale)
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const dir = join(root, "bench", "results");
const records = readdirSync(dir)
  .filter((f) => f.endsWith(".json"))
  .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")))
  .sort((a, b) => a.date.localeCompare(b.date));
const cliRecords = records.filter((r) => typeof r.tool === "string" && r.tool.startsWith("mamba-edge "));

// "models/mamba1-brown", "bench/tmp/mamba1-brown-w8a8.mamba", "mamba-130m (random weights)" -> "mamba1-brown", "mamba-130m"
const recipeOf = (r) => r.recipe ?? (r.backend === "ref" ? "fp32" : "?");
const modelOf = (r) =>
  basename(r.model.replace(/ \(random weights.*\)$/, ""))
    .replace(/\.mamba$/, "")
    .replace(new RegExp(`-${recipeOf(r)}$`), "");
const newest = new Map();
for (const r of cliRecords) newest.set(`${r.tool}|${modelOf(r)}|${recipeOf(r)}`, r);
const get = (tool, model, recipe) => newest.get(`mamba-edge ${tool}|${model}|${recipe}`);

const RECIPES = ["fp32", "fp16", "w8a8", "w4a8", "w4a16", "w8a8-naive"];
const label = {
  fp32: "fp32 (reference)",
  fp16: "fp16",
  w8a8: "w8a8 (Quamba)",
  w4a8: "w4a8 (Quamba2)",
  w4a16: "w4a16 (Quamba2)",
  "w8a8-naive": "w8a8-naive (ablation)",
};
const num = (x, d = 1) => (x === undefined || x === null ? "–" : Number(x).toFixed(d));
const used = new Set();
const lines = [];

for (const model of ["mamba1-brown", "mamba2-brown"]) {
  const base = get("eval", model, "fp16")?.perplexity;
  lines.push(
    `**${model}** (held-out Brown: ${get("eval", model, "fp32")?.tokens ?? "–"} tokens, the whole text through one recurrent state):`,
    "",
  );
  lines.push(
    "| recipe | backend | size MB | perplexity | × fp16 | bits/byte | prefill tok/s (512) | decode tok/s b=1 | decode tok/s b=8 | build s |",
  );
  lines.push("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const recipe of RECIPES) {
    const e = get("eval", model, recipe),
      b = get("bench", model, recipe),
      k = get("build", model, recipe);
    if (!e && !b) continue;
    [e, b, k].forEach((r) => r && used.add(r));
    const size = recipe === "fp32" ? b?.weightMB : (k?.engineMB ?? b?.weightMB);
    lines.push(
      `| ${label[recipe]} | ${(e ?? b).backend} | ${num(size, 2)} | ${num(e?.perplexity, 2)} | ${base && e ? (e.perplexity / base).toFixed(3) : "–"} | ${num(e?.bitsPerByte, 4)} | ${num(b?.prefillTokensPerSecond, 0)} | ${num(b?.decode?.batch1?.tokensPerSecond, 0)} | ${num(b?.decode?.batch8?.tokensPerSecond, 0)} | ${recipe === "fp32" ? "–" : num(k?.seconds, 1)} |`,
    );
  }
  lines.push("");
}

lines.push(
  "**mamba-130m shape, random weights** (speed only; `mamba-edge bench --random mamba-130m` and engines built with `build --random mamba-130m`):",
  "",
);
lines.push("| recipe | backend | size MB | prefill tok/s (512) | TTFT ms | decode tok/s b=1 | decode tok/s b=8 | peak RSS MB | build s |");
lines.push("|---|---|---:|---:|---:|---:|---:|---:|---:|");
for (const model of ["mamba-130m", "mamba2-130m"]) {
  for (const recipe of RECIPES) {
    const b = get("bench", model, recipe),
      k = get("build", model, recipe);
    if (!b) continue;
    [b, k].forEach((r) => r && used.add(r));
    lines.push(
      `| ${model === "mamba-130m" ? "" : "mamba2-130m "}${label[recipe]} | ${b.backend} | ${num(recipe === "fp32" ? b.weightMB : (k?.engineMB ?? b.weightMB), 1)} | ${num(b.prefillTokensPerSecond, 1)} | ${num(b.ttftMs, 0)} | ${num(b.decode?.batch1?.tokensPerSecond, 1)} | ${num(b.decode?.batch8?.tokensPerSecond, 1)} | ${b.peakRssMB} | ${recipe === "fp32" ? "–" : num(k?.seconds, 0)} |`,
    );
  }
}
const machines = [...new Set([...used].map((r) => `${r.machine.cpu}, ${r.machine.cores} cores, Node ${r.machine.node}`))];
const dates = [...new Set([...used].map((r) => r.date.slice(0, 10)))];
const commits = [...new Set([...used].map((r) => r.commit).filter(Boolean))];
lines.push(
  "",
  `Measured on ${machines.join("; ")}; ${dates.join(", ")}; commit ${commits.join(", ")}. Sizes: the engine package on disk, or the reference's float32 weights in memory.`,
);

// The daemon's load benchmark (scripts/load-bench.mjs): the newest record.
const load = records.filter((r) => r.kind === "load").pop();
const loadLines = [];
if (load) {
  loadLines.push(
    `${load.engine} (backend ${load.backend}), ${load.requestsPerRobot} requests per robot one after another, ${load.maxTokens} tokens each, at most ${load.maxActive} sequences per batch:`,
    "",
  );
  loadLines.push(
    "| robots | answered | errors | tokens/s (all robots) | TTFT p50 ms | TTFT p99 ms | per token p50 ms | per token p99 ms |",
  );
  loadLines.push("|---:|---:|---|---:|---:|---:|---:|---:|");
  for (const r of load.runs) {
    const errs =
      Object.entries(r.errors)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "none";
    loadLines.push(
      `| ${r.robots} | ${r.answered}/${r.requests} | ${errs} | ${num(r.tokens_per_s, 0)} | ${num(r.ttft_ms.p50)} | ${num(r.ttft_ms.p99)} | ${num(r.token_latency_ms.p50)} | ${num(r.token_latency_ms.p99)} |`,
    );
  }
  loadLines.push(
    "",
    `Measured on ${load.machine.cpu}, ${load.machine.cores} cores, Node ${load.machine.node}; ${load.date.slice(0, 10)}; commit ${load.commit}. Times as the robots see them, through a local mosquitto.`,
  );
}

const readmePath = join(root, "README.md");
const readme = readFileSync(readmePath, "utf8");
const end = "<!-- results:end -->";
/** Replaces what lies between a begin marker and the next end marker. */
function fill(text, begin, body) {
  const i = text.indexOf(begin);
  const j = text.indexOf(end, i);
  if (i < 0 || j < i) throw new Error(`README.md has no ${begin} ... ${end} markers`);
  return text.slice(0, i + begin.length) + "\n" + body.join("\n") + "\n" + text.slice(j);
}
let next = fill(readme, "<!-- results:begin (scripts/results-table.mjs) -->", lines);
if (load) next = fill(next, "<!-- results:begin load (scripts/results-table.mjs) -->", loadLines);
if (process.argv.includes("--check")) {
  if (next !== readme) {
    console.error("README.md results are stale: run node scripts/results-table.mjs");
    process.exit(1);
  }
} else {
  writeFileSync(readmePath, next);
  console.log(`README.md: tables from ${used.size + (load ? 1 : 0)} records`);
}
