#!/usr/bin/env node
// Where the time of backend ort's decode step goes, for a Mamba-1 engine: the step graph as the
// backend runs it (onnxruntime's C API, outputs written in place), beside graphs holding only its
// parts with the engine's shapes: the matrix products (float32 Gemm, as the fp16 recipe runs them),
// the selective-state update (the exporter's own nodes), and a bare run with the step's state inputs
// and outputs and one trivial node each. What the step costs beyond those is everything else (conv,
// norms, softplus, gates, quantize nodes). Prints ms per step at each batch size and writes JSON
// under bench/results/.
// Usage: node scripts/ort-step-parts.mjs --engine NAME.mamba [--batch 1,8] [--threads N] [--rounds 7]
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { selectiveStep1 } from "../dist/engines/builder/onnx/export.js";
import { DT, Graph } from "../dist/engines/builder/onnx/graph.js";
import { CapiSession } from "../dist/runtime/backends/ort-capi.js";
import { provenance, writeResult } from "../dist/runtime/bench/results.js";
import { loadManifest } from "../dist/engines/package/manifest.js";
import { graphSsmShape } from "../dist/engines/model/state.js";

const args = yargs(hideBin(process.argv))
  .option("engine", { type: "string", demandOption: true, describe: "a Mamba-1 engine package" })
  .option("batch", { type: "string", default: "1,8", describe: "batch sizes" })
  .option("threads", { type: "number", default: cpus().length, describe: "intra-op threads" })
  .option("rounds", { type: "number", default: 7, describe: "timed rounds of 100 runs (the median is reported)" })
  .option("out", { type: "boolean", default: true, describe: "write bench/results/*.json" })
  .strict()
  .parseSync();

function fail(msg) {
  console.error(`ort-step-parts: ${msg}`);
  process.exit(1);
}
let manifest;
try {
  manifest = loadManifest(args.engine);
} catch (e) {
  fail(e.message);
}
const c = manifest.config;
if (c.arch !== "mamba1") fail(`${args.engine}: architecture ${c.arch}, expected mamba1 (the state-update part is Mamba-1's)`);
const batches = args.batch.split(",").map(Number);
if (batches.some((b) => !Number.isInteger(b) || b < 1)) fail(`--batch: expected positive integers, found ${args.batch}`);
const { dModel: D, dInner: E, dState: N, dtRank: R, dConv: K, vocabSize: V, nLayer: L } = c;
const S = graphSsmShape(c); // one sequence's SSM state as the graphs hold it
const rnd = (n, s = 0.05) => Float32Array.from({ length: n }, () => (Math.random() - 0.5) * s);

// the step's matrix products in order, each layer's input taken from the previous product
function matmuls() {
  const g = new Graph("matmuls");
  const lin = (x, n, k) => g.o("Gemm", [x, g.floats(rnd(n * k), [n, k])], { transB: 1 });
  const first = (x, n) => g.o("Slice", [x, g.ints([0]), g.ints([n]), g.ints([1])]);
  let h = g.input("h", DT.FLOAT, ["B", D]);
  for (let l = 0; l < L; l++) {
    const dbl = lin(first(lin(h, 2 * E, D), E), R + 2 * N, E);
    h = g.o("Add", [h, lin(lin(first(dbl, R), E, R), D, E)]);
  }
  g.output(lin(h, V, D), "logits", DT.FLOAT, ["B", V]);
  return g;
}
// every layer's state update as the exporter writes it, on shared dt, x, B and C
function stateUpdate() {
  const g = new Graph("state");
  const dt = g.input("dt", DT.FLOAT, ["B", E]),
    x = g.input("x", DT.FLOAT, ["B", E]);
  const Bm = g.input("Bm", DT.FLOAT, ["B", N]),
    Cm = g.input("Cm", DT.FLOAT, ["B", N]);
  const ys = [];
  for (let l = 0; l < L; l++) {
    const A = g.floats(
      Float32Array.from({ length: N * E }, () => -0.5 - Math.random()),
      S,
    );
    const [y, h1] = selectiveStep1(g, g.input(`ssm_${l}`, DT.FLOAT, ["B", ...S]), dt, x, Bm, Cm, A);
    g.output(h1, `ssm_${l}_out`, DT.FLOAT, ["B", ...S]);
    ys.push(y);
  }
  g.output(g.o("Sum", ys), "y", DT.FLOAT, ["B", E]);
  return g;
}
function bare() {
  const g = new Graph("bare");
  for (let l = 0; l < L; l++) {
    g.output(g.o("Neg", [g.input(`conv_${l}`, DT.FLOAT, ["B", K - 1, E])]), `conv_${l}_out`, DT.FLOAT, ["B", K - 1, E]);
    g.output(g.o("Neg", [g.input(`ssm_${l}`, DT.FLOAT, ["B", ...S])]), `ssm_${l}_out`, DT.FLOAT, ["B", ...S]);
  }
  return g;
}
// every layer's state inputs and outputs: [name, dims, is an output]
const stateIO = (B) =>
  Array.from({ length: L }, (_, l) => [
    [`conv_${l}`, [B, K - 1, E]],
    [`ssm_${l}`, [B, ...S]],
    [`conv_${l}_out`, [B, K - 1, E], true],
    [`ssm_${l}_out`, [B, ...S], true],
  ]).flat();

const tmp = mkdtempSync(join(tmpdir(), "ort-step-parts-"));
const save = (g) => {
  const p = join(tmp, `${g.name}.onnx`);
  writeFileSync(p, g.serialize());
  return p;
};
const parts = {
  step: { path: join(args.engine, "cpu", "step.onnx"), io: (B) => [["tokens", [B]], ...stateIO(B), ["logits", [B, V], true]] },
  matmuls: {
    path: save(matmuls()),
    io: (B) => [
      ["h", [B, D]],
      ["logits", [B, V], true],
    ],
  },
  stateUpdate: {
    path: save(stateUpdate()),
    io: (B) => [
      ["dt", [B, E]],
      ["x", [B, E]],
      ["Bm", [B, N]],
      ["Cm", [B, N]],
      ...stateIO(B).filter(([name]) => name.startsWith("ssm_")),
      ["y", [B, E], true],
    ],
  },
  bareRun: { path: save(bare()), io: (B) => stateIO(B) },
};

async function time(path, io, B) {
  const s = await CapiSession.open(path, args.threads, undefined, resolve(args.engine));
  if (!s) fail("onnxruntime's C API could not be loaded (koffi or the library is missing)");
  try {
    const ins = {},
      outs = {};
    for (const [name, dims, isOut] of io(B)) (isOut ? outs : ins)[name] = name === "tokens" ? s.int64(dims) : s.float32(dims);
    for (let i = 0; i < 50; i++) s.run(ins, outs);
    const ms = [];
    for (let r = 0; r < args.rounds; r++) {
      const t0 = performance.now();
      for (let i = 0; i < 100; i++) s.run(ins, outs);
      ms.push((performance.now() - t0) / 100);
    }
    ms.sort((a, b) => a - b);
    return +ms[ms.length >> 1].toFixed(4);
  } finally {
    s.release();
  }
}

const result = {};
try {
  for (const B of batches) {
    const row = {};
    for (const [name, p] of Object.entries(parts)) row[name] = await time(p.path, p.io, B);
    row.rest = +(row.step - row.matmuls - row.stateUpdate).toFixed(4);
    result[`batch${B}`] = row;
    console.log(
      `batch ${B}: step ${row.step} ms = matrix products ${row.matmuls} + state update ${row.stateUpdate} + the rest ${row.rest} (a bare run: ${row.bareRun})`,
    );
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
if (batches.length > 1) {
  const [b0, b1] = [batches[0], batches[batches.length - 1]];
  const r0 = result[`batch${b0}`],
    r1 = result[`batch${b1}`];
  console.log(`batch ${b1} ÷ batch ${b0} in tokens/s: ${(b1 / r1.step / (b0 / r0.step)).toFixed(2)}`);
}
if (args.out) {
  const record = {
    tool: "scripts/ort-step-parts.mjs",
    kind: "step-parts",
    ...provenance(),
    engine: args.engine,
    recipe: manifest.quant.recipe,
    threads: args.threads,
    rounds: args.rounds,
    msPerStep: result,
  };
  console.log(`wrote ${writeResult("step-parts", "ort", args.engine, record)}`);
}
