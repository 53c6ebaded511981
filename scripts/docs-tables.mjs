#!/usr/bin/env node
// Writes every table of README.md and docs/*.md that cites a measurement, from the records under
// bench/results/. A table lives between `<!-- table:NAME [record.json ...] -->` and `<!-- /table -->`;
// NAME picks the renderer below, the record names (relative to bench/results/) its source.
// Usage: node scripts/docs-tables.mjs [--check]   (--check: change nothing, exit 1 if a table is stale)
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { basename, join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const resultsDir = join(root, "bench", "results");
const records = readdirSync(resultsDir)
  .filter((f) => f.endsWith(".json"))
  .map((f) => ({ file: f, ...JSON.parse(readFileSync(join(resultsDir, f), "utf8")) }))
  .sort((a, b) => String(a.date).localeCompare(String(b.date)));
const byFile = new Map(records.map((r) => [r.file, r]));

function record(name, file) {
  const r = file && byFile.get(file);
  if (!r) throw new Error(`table:${name}: no record bench/results/${file ?? "(none named)"}`);
  return r;
}

const num = (x, d = 1) => (x === undefined || x === null ? "–" : Number(x).toFixed(d));
const e1 = (x) => x.toExponential(1);
const day = (r) => String(r.date).slice(0, 10);
const machineOf = (r) => `${r.machine.cpu}, ${r.machine.cores} cores, Node ${r.machine.node}`;

// --- records of the CLI (eval --out, bench --out, build --record): the newest per model and recipe
const cliRecords = records.filter((r) => typeof r.tool === "string" && r.tool.startsWith("mamba-edge "));
const recipeOf = (r) => r.recipe ?? (r.backend === "ref" ? "fp32" : "?");
// "models/mamba1-brown", "bench/tmp/mamba1-brown-w8a8.mamba", "mamba-130m (random weights)" -> "mamba1-brown", "mamba-130m"
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

function provenance(used, extra = "") {
  const machines = [...new Set(used.map(machineOf))];
  const dates = [...new Set(used.map(day))];
  const commits = [...new Set(used.map((r) => r.commit).filter(Boolean))];
  return `Measured on ${machines.join("; ")}; ${dates.join(", ")}; commit ${commits.join(", ")}.${extra}`;
}

/** The demo models on the CPU: quality (eval), speed (bench) and build time, every recipe. */
function demoResults() {
  const used = [];
  const out = [
    "| model | recipe | backend | size MB | perplexity | × fp16 | bits/byte | prefill tok/s (512) | decode tok/s b=1 | b=8 | build s |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  const tokens = new Set();
  for (const model of ["mamba1-brown", "mamba2-brown"]) {
    const base = get("eval", model, "fp16")?.perplexity;
    for (const recipe of RECIPES) {
      const e = get("eval", model, recipe),
        b = get("bench", model, recipe),
        k = get("build", model, recipe);
      if (!e && !b) continue;
      for (const r of [e, b, k]) if (r) used.push(r);
      if (e) tokens.add(e.tokens);
      const size = recipe === "fp32" ? b?.weightMB : (k?.engineMB ?? b?.weightMB);
      out.push(
        `| ${model} | ${label[recipe]} | ${(e ?? b).backend} | ${num(size, 2)} | ${num(e?.perplexity, 2)} | ${base && e ? (e.perplexity / base).toFixed(3) : "–"} | ${num(e?.bitsPerByte, 4)} | ${num(b?.prefillTokensPerSecond, 0)} | ${num(b?.decode?.batch1?.tokensPerSecond, 0)} | ${num(b?.decode?.batch8?.tokensPerSecond, 0)} | ${recipe === "fp32" ? "–" : num(k?.seconds, 1)} |`,
      );
    }
  }
  out.push(
    "",
    provenance(
      used,
      ` Perplexity over the held-out Brown text (${[...tokens].join(", ")} tokens) through one recurrent state. Sizes: the engine package on disk, or the reference's float32 weights in memory.`,
    ),
  );
  return out;
}

/** mamba-130m's shape with random weights: speed and memory only. */
function random130m() {
  const used = [];
  const out = [
    "| model, recipe | backend | size MB | prefill tok/s (512) | TTFT ms | decode tok/s b=1 | decode tok/s b=8 | peak RSS MB | build s |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const model of ["mamba-130m", "mamba2-130m"]) {
    for (const recipe of RECIPES) {
      const b = get("bench", model, recipe),
        k = get("build", model, recipe);
      if (!b) continue;
      for (const r of [b, k]) if (r) used.push(r);
      out.push(
        `| ${model} ${label[recipe]} | ${b.backend} | ${num(recipe === "fp32" ? b.weightMB : (k?.engineMB ?? b.weightMB), 1)} | ${num(b.prefillTokensPerSecond, 1)} | ${num(b.ttftMs, 0)} | ${num(b.decode?.batch1?.tokensPerSecond, 1)} | ${num(b.decode?.batch8?.tokensPerSecond, 1)} | ${b.peakRssMB} | ${recipe === "fp32" ? "–" : num(k?.seconds, 0)} |`,
      );
    }
  }
  out.push("", provenance(used, " Sizes: the engine package on disk, or the reference's float32 weights in memory."));
  return out;
}

/** Perplexity of every recipe against fp16, both demo models side by side. */
function quantAccuracy() {
  const used = [];
  const out = [
    "| recipe | mamba1-brown perplexity | × fp16 | mamba2-brown perplexity | × fp16 | engine MB (Mamba-1 / Mamba-2) |",
    "|---|---:|---:|---:|---:|---|",
  ];
  for (const recipe of RECIPES) {
    const cells = [];
    const sizes = [];
    for (const model of ["mamba1-brown", "mamba2-brown"]) {
      const e = get("eval", model, recipe),
        k = get("build", model, recipe);
      const base = get("eval", model, "fp16")?.perplexity;
      for (const r of [e, k]) if (r) used.push(r);
      cells.push(num(e?.perplexity, 2), base && e ? (e.perplexity / base).toFixed(3) : "–");
      sizes.push(num(k?.engineMB, 2));
    }
    out.push(`| ${label[recipe]} | ${cells.join(" | ")} | ${recipe === "fp32" ? "–" : sizes.join(" / ")} |`);
  }
  out.push("", provenance(used));
  return out;
}

/**
 * Every recipe and quantizer option on each demo model (scripts/bench-engines.sh and
 * scripts/quant-ablations.sh): perplexity, next-token and last-word accuracy, and the weights
 * against the model in float16.
 */
function quantVariants() {
  const used = [];
  const out = [
    "| model | engine | perplexity | × fp16 | next-token acc. % | last-word acc. % | weights MB | float16 ÷ weights |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ];
  const evals = cliRecords.filter((r) => r.tool === "mamba-edge eval");
  const variantsOf = (model) =>
    [...new Set(evals.map(modelOf).filter((m) => m.startsWith(`${model}-`)))]
      .map((m) => m.slice(model.length + 1))
      .filter((v) => VARIANTS[v])
      .sort((a, b) => Object.keys(VARIANTS).indexOf(a) - Object.keys(VARIANTS).indexOf(b));
  for (const model of ["mamba1-brown", "mamba2-brown", "mamba2-groups-brown"]) {
    const base = get("eval", model, "fp16");
    if (!base) continue;
    const rows = [
      ...RECIPES.filter((r) => r !== "fp32").map((r) => [label[r], get("eval", model, r)]),
      ...variantsOf(model).map((v) => [VARIANTS[v], newest.get(`mamba-edge eval|${model}-${v}|${v.split("-")[0]}`)]),
    ];
    for (const [name, e] of rows) {
      if (!e) continue;
      used.push(e);
      const pct = (x) => (x === undefined ? "–" : (100 * x).toFixed(2));
      out.push(
        `| ${model} | ${name} | ${num(e.perplexity, 2)} | ${(e.perplexity / base.perplexity).toFixed(3)} | ${pct(e.nextTokenAccuracy)} | ${pct(e.cloze?.accuracy)} | ${num(e.weightsMB, 2)} | ${e.weightsMB ? (e.float16MB / e.weightsMB).toFixed(2) : "–"} |`,
      );
    }
  }
  out.push("", provenance(used));
  return out;
}

const VARIANTS = {
  "w4a16-rtn": "w4a16, round-to-nearest (`--rtn`)",
  "w4a16-absmax": "w4a16, group scales from the largest weight (`--group-scales absmax`)",
  "w4a16-actorder": "w4a16, GPTQ `--act-order`",
  "w4a16-qinputs": "w4a16, GPTQ `--gptq-inputs quantized`",
  "w4a16-q4emb": "w4a16 `--embedding q4`",
  "w4a8-q4emb": "w4a8 `--embedding q4`",
  "w8a8-quamba2": "w8a8 `--ssm-scales quamba2` (Quamba2's W8A8)",
  "w4a8-pertensor": "w4a8 `--ssm-scales per-tensor`",
};

/** The daemon's load benchmark (scripts/load-bench.mjs): the named record, or the newest. */
function load(file) {
  const r = file ? record("load", file) : records.filter((x) => x.kind === "load").pop();
  const out = [
    `${r.engine} (backend ${r.backend}), ${r.requestsPerRobot} requests per robot one after another, ${r.maxTokens} tokens each, at most ${r.maxActive} sequences per batch:`,
    "",
    "| robots | answered | errors | tokens/s (all robots) | TTFT p50 ms | TTFT p99 ms | per token p50 ms | per token p99 ms |",
    "|---:|---:|---|---:|---:|---:|---:|---:|",
  ];
  for (const x of r.runs) {
    const errs =
      Object.entries(x.errors)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "none";
    out.push(
      `| ${x.robots} | ${x.answered}/${x.requests} | ${errs} | ${num(x.tokens_per_s, 0)} | ${num(x.ttft_ms.p50)} | ${num(x.ttft_ms.p99)} | ${num(x.token_latency_ms.p50)} | ${num(x.token_latency_ms.p99)} |`,
    );
  }
  out.push(
    "",
    `Measured on ${machineOf(r)}; ${day(r)}; commit ${r.commit}; record \`${r.file}\`. Times as the robots see them, through a local mosquitto.`,
  );
  return out;
}

// --- GPU check records (scripts/gpu-check.sh)
const gpuLine = (r) =>
  `${r.device} (driver ${r.driver}, PyTorch ${r.torch}, transformers ${r.transformers}), ${day(r)}, commit ${r.commit}`;

function cudaKernels(file) {
  const r = record("cuda-kernels", file);
  const worst = new Map();
  for (const k of r.kernels) {
    const w = worst.get(k.kernel);
    worst.set(k.kernel, { err: Math.max(w?.err ?? 0, k.relError), tol: k.tolerance, n: (w?.n ?? 0) + 1, ok: (w?.ok ?? true) && k.ok });
  }
  const out = ["| kernel | cases | worst ‖out − ref‖ / ‖ref‖ | tolerance |", "|---|---:|---:|---:|"];
  for (const [k, w] of worst) out.push(`| ${k} | ${w.n} | ${e1(w.err)} | ${e1(w.tol)}${w.ok ? "" : " **missed**"} |`);
  out.push("", `${gpuLine(r)}; record \`${r.file}\`.`);
  return out;
}

function cudaEndToEnd(file) {
  const r = record("cuda-e2e", file);
  const out = [
    "| model | recipe | cuda vs reference | ort vs reference | cuda vs ort | tolerance | state save/load | within |",
    "|---|---|---:|---:|---:|---:|---|---|",
  ];
  for (const x of r.endToEnd)
    out.push(
      `| ${x.model} | ${x.recipe} | ${e1(x.cudaVsRef)} | ${e1(x.ortVsRef)} | ${e1(x.cudaVsOrt)} | ${e1(x.tolerance)} | ${x.stateRoundTrip === 0 ? "exact" : e1(x.stateRoundTrip)} | ${x.ok ? "yes" : "**no**"} |`,
    );
  out.push("", `${gpuLine(r)}; record \`${r.file}\`.`);
  return out;
}

function cudaBench(file) {
  const r = record("cuda-bench", file);
  const b = r.bench;
  const tr = new Map(b.transformers.filter((t) => !t.error).map((t) => [t.shape, t]));
  const out = [
    `${gpuLine(r)}; record \`${r.file}\`. Device-to-device copy ${num(b.copyBandwidthTBs, 2)} TB/s (bytes read + written); floor = weight bytes ÷ that.`,
    "",
    "| shape | recipe | weights MB | decode ms/token b1 | floor ms | × floor | tokens/s b1 | b8 | b32 | prefill 512 ms | transformers ms/token | × faster |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const x of b.engines) {
    if (x.error) {
      out.push(`| ${x.shape} | ${x.recipe} | failed: ${x.error} |||||||||`);
      continue;
    }
    const t = tr.get(x.shape);
    out.push(
      `| ${x.shape} | ${x.recipe} | ${num(x.weightBytes / 1e6, 0)} | ${num(x.decodeMsB1, 3)} | ${num(x.floorMs, 3)} | ${num(x.ratioToFloor, 2)} | ${num(x.tokensPerSecondB1, 0)} | ${num(x.tokensPerSecondB8, 0)} | ${num(x.tokensPerSecondB32, 0)} | ${num(x.prefill512Ms, 1)} | ${t ? num(t.decodeMsB1, 1) : "–"} | ${t ? num(t.decodeMsB1 / x.decodeMsB1, 0) : "–"} |`,
    );
  }
  out.push(
    "",
    "transformers prefill of 512 tokens (fp16, its reference PyTorch path): " +
      [...tr.values()].map((t) => `${t.shape} ${num(t.prefill512Ms, 0)} ms`).join(", ") +
      ".",
  );
  return out;
}

/** A GPU check record's decode speeds, one row per shape: batch-1 time per recipe, and batch 32. */
function cudaSummary(file) {
  const r = record("cuda-summary", file);
  const engines = r.bench.engines.filter((x) => !x.error);
  const recipes = [...new Set(engines.map((x) => x.recipe))];
  const shapes = [...new Set(engines.map((x) => x.shape))];
  const out = [
    `| shape | ${recipes.map((q) => `${q} ms/token b1 (× floor)`).join(" | ")} | ${recipes.map((q) => `${q} tok/s b32`).join(" | ")} |`,
    `|---|${recipes.map(() => "---:|").join("")}${recipes.map(() => "---:|").join("")}`,
  ];
  for (const shape of shapes) {
    const at = (q) => engines.find((x) => x.shape === shape && x.recipe === q);
    out.push(
      `| ${shape} | ${recipes.map((q) => (at(q) ? `${num(at(q).decodeMsB1, 3)} (${num(at(q).ratioToFloor, 2)})` : "–")).join(" | ")} | ${recipes.map((q) => num(at(q)?.tokensPerSecondB32, 0)).join(" | ")} |`,
    );
  }
  out.push(
    "",
    `${gpuLine(r)}; record \`${r.file}\`; floor = weight bytes ÷ the measured copy bandwidth (${num(r.bench.copyBandwidthTBs, 2)} TB/s).`,
  );
  return out;
}

/** scripts/gpu/chain_floor.cu: steps of simple streaming kernels, one shape's recipes side by side. */
function chainFloor(file, shape = "mamba-2.8b") {
  const r = record("chain-floor", file);
  const runs = r.runs.filter((x) => x.shape === shape);
  const recipes = ["fp16", "w8a8", "w4a16"].filter((q) => runs.some((x) => x.recipe === q));
  const out = [
    `| kernels in the chain (${shape}) | ${recipes.map((q) => `${q} ms (× floor)`).join(" | ")} |`,
    `|---|${recipes.map(() => "---:|").join("")}`,
  ];
  for (const c of runs[0].configs) {
    const cells = recipes.map((q) => {
      const x = runs.find((y) => y.recipe === q).configs.find((y) => y.config === c.config);
      return `${num(x.msPerStep, 3)} (${num(x.ratioToFloor, 2)})`;
    });
    out.push(`| ${c.config} | ${cells.join(" | ")} |`);
  }
  out.push("", `${r.device}, ${day(r)}; record \`${r.file}\`.`);
  return out;
}

const engineName = (e) => basename(e).replace(/\.mamba$/, "");

/** scripts/ort-fused-ab.mjs: plain and fused graphs of each engine, side by side in one process. */
function ortFusedAb(file) {
  const r = record("ort-fused-ab", file);
  const out = [
    "| engine | prefill tok/s plain | fused | × | b1 ms plain | fused | × | b8 ms plain | fused | × | b8 ÷ b1 tokens/s plain | fused |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const x of r.engines) {
    const p = x.prefill,
      b1 = x.batch["1"],
      b8 = x.batch["8"];
    out.push(
      `| ${engineName(x.engine)} | ${num(p.plainTokensPerSecond, 0)} | ${num(p.fusedTokensPerSecond, 0)} | ${num(p.fusedTokensPerSecond / p.plainTokensPerSecond, 2)} | ${num(b1.plainMs, 3)} | ${num(b1.fusedMs, 3)} | ${num(b1.plainMs / b1.fusedMs, 2)} | ${num(b8.plainMs, 3)} | ${num(b8.fusedMs, 3)} | ${num(b8.plainMs / b8.fusedMs, 2)} | ${num((8 * b1.plainMs) / b8.plainMs, 2)} | ${num((8 * b1.fusedMs) / b8.fusedMs, 2)} |`,
    );
  }
  out.push(
    "",
    `${machineOf(r)}, ${r.threads ?? r.machine.cores} threads; ${day(r)}; commit ${r.commit}; ${r.rounds} alternating rounds of a ${r.prompt}-token prefill and ${r.steps} greedy steps, medians; record \`${r.file}\`.`,
  );
  return out;
}

/** `mamba-edge bench` on each engine of an ort-fused-ab record, beside that record's fused steps. */
function benchBesideAb(file) {
  const r = record("bench-beside-ab", file);
  const used = [];
  const out = [
    "| engine | `bench` b1 ms | b8 ms | b8 ÷ b1 tokens/s | side by side: fused b1 ms | b8 ms | b8 ÷ b1 |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ];
  for (const x of r.engines) {
    const b = cliRecords.filter((y) => y.tool === "mamba-edge bench" && y.model === x.engine).pop();
    if (b) used.push(b);
    const d1 = b?.decode?.batch1,
      d8 = b?.decode?.batch8;
    const f1 = x.batch["1"].fusedMs,
      f8 = x.batch["8"].fusedMs;
    out.push(
      `| ${engineName(x.engine)} | ${num(d1?.msPerStep, 3)} | ${num(d8?.msPerStep, 3)} | ${d1 && d8 ? num(d8.tokensPerSecond / d1.tokensPerSecond, 2) : "–"} | ${num(f1, 3)} | ${num(f8, 3)} | ${num((8 * f1) / f8, 2)} |`,
    );
  }
  out.push(
    "",
    `${machineOf(r)}, 2 intra-op threads; ${day(r)}; commit ${r.commit}; records \`${r.file}\` and the \`mamba-edge bench\` records of the same engines.`,
  );
  return out;
}

const renderers = {
  "demo-results": demoResults,
  "random-130m": random130m,
  "quant-accuracy": quantAccuracy,
  "quant-variants": quantVariants,
  load,
  "cuda-kernels": cudaKernels,
  "cuda-e2e": cudaEndToEnd,
  "cuda-bench": cudaBench,
  "cuda-summary": cudaSummary,
  "chain-floor": chainFloor,
  "ort-fused-ab": ortFusedAb,
  "bench-beside-ab": benchBesideAb,
};

const OPEN = /<!-- table:([\w-]+)((?: [^ >]+)*) -->\n/g;
const CLOSE = "<!-- /table -->";

/** The text with every table region rewritten; throws on an unknown table or a region left open. */
function render(text, where) {
  let out = "";
  let at = 0;
  for (const m of text.matchAll(OPEN)) {
    if (m.index < at) continue;
    const start = m.index + m[0].length;
    const end = text.indexOf(CLOSE, start);
    if (end < 0) throw new Error(`${where}: table:${m[1]} has no ${CLOSE}`);
    const fn = renderers[m[1]];
    if (!fn) throw new Error(`${where}: unknown table:${m[1]} (known: ${Object.keys(renderers).join(", ")})`);
    out += text.slice(at, start) + fn(...m[2].trim().split(" ").filter(Boolean)).join("\n") + "\n";
    at = end;
  }
  return out + text.slice(at);
}

const docsDir = join(root, "docs");
const files = [
  join(root, "README.md"),
  ...readdirSync(docsDir)
    .filter((f) => f.endsWith(".md"))
    .map((f) => join(docsDir, f)),
];
const check = process.argv.includes("--check");
let stale = 0;
let regions = 0;
for (const f of files) {
  const rel = relative(root, f);
  const text = readFileSync(f, "utf8");
  let next;
  try {
    next = render(text, rel);
  } catch (e) {
    console.error(`docs-tables: ${e.message}`);
    process.exit(1);
  }
  regions += [...text.matchAll(OPEN)].length;
  if (next === text) continue;
  stale++;
  if (check) console.error(`${rel}: tables are stale; run node scripts/docs-tables.mjs`);
  else writeFileSync(f, next);
}
if (check) {
  if (stale) process.exit(1);
  console.log(`docs-tables: ${regions} tables in ${files.length} files are current`);
} else console.log(`docs-tables: ${regions} tables in ${files.length} files; ${stale} file(s) rewritten`);
