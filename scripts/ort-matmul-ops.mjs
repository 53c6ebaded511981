#!/usr/bin/env node
// One linear layer as each operator backend ort could run it, timed through onnxruntime's C API at
// several row counts: float32 `MatMul`, com.microsoft `MatMulNBits` (4-bit, float and int8
// arithmetic), `QuantizeLinear` → `MatMulInteger` (int8), and our `MatMulQ4` (engines/ort-ops).
// Random weights; one-node graphs written to a temporary directory. Prints µs per run and writes
// JSON under bench/results/.
// Usage: node scripts/ort-matmul-ops.mjs [--shapes 256x1024,512x256,768x3072] [--rows 1,8,512] [--threads 2] [--label L]
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { OPS_DOMAIN, OPS_DOMAIN_VERSION } from "../dist/engines/builder/onnx/export.js";
import { DT, Graph } from "../dist/engines/builder/onnx/graph.js";
import { CapiSession } from "../dist/runtime/backends/ort-capi.js";
import { ortOpsLibraryPath } from "../dist/runtime/backends/ort.js";
import { provenance, writeResult } from "../dist/runtime/bench/results.js";
import { median } from "./ab-rounds.mjs";

const args = yargs(hideBin(process.argv))
  .option("shapes", { type: "string", default: "256x1024,512x256,768x3072", describe: "K×N of each layer (inputs × outputs)" })
  .option("rows", { type: "string", default: "1,8", describe: "rows of x (the batch; a prompt's tokens)" })
  .option("threads", { type: "number", default: cpus().length, describe: "onnxruntime intra-op threads" })
  .option("label", { type: "string", default: "demo", describe: "the record's name: bench/results/<date>-ort-matmul-ops-ort-<label>.json" })
  .option("out", { type: "boolean", default: true, describe: "write bench/results/*.json" })
  .strict()
  .parseSync();
const lib = ortOpsLibraryPath();
if (!lib) throw new Error("engines/ort-ops is not built (npm run build:cpu)");
const shapes = args.shapes.split(",").map((s) => s.split("x").map(Number));
const rowCounts = args.rows.split(",").map(Number);
const kinds = ["MatMul fp32", "MatMulNBits float", "MatMulNBits int8", "MatMulInteger", "MatMulQ4"];
const rnd = (n, f = 1) => Float32Array.from({ length: n }, () => (Math.random() * 2 - 1) * f);
const dir = mkdtempSync(join(tmpdir(), "mamba-edge-matmul-"));

/** A one-node graph y = x·W for `kind`, with random weights; its path. */
function graph(kind, K, N) {
  const g = new Graph(kind);
  const x = g.input("x", DT.FLOAT, ["M", K]);
  const blocks = Math.ceil(K / 128);
  const q4 = () => [
    g.constant(
      "wq",
      Uint8Array.from({ length: N * blocks * 64 }, () => (Math.random() * 256) | 0),
      [N, blocks, 64],
      DT.UINT8,
    ),
    g.constant("sc", rnd(N * blocks, 0.01), [N * blocks], DT.FLOAT),
  ];
  let y;
  if (kind === "MatMul fp32") y = g.o("MatMul", [x, g.constant("w", rnd(K * N), [K, N], DT.FLOAT)]);
  else if (kind.startsWith("MatMulNBits"))
    y = g.o(
      "MatMulNBits",
      [x, ...q4()],
      { K, N, bits: 4, block_size: 128, accuracy_level: kind.endsWith("int8") ? 4 : 0 },
      "com.microsoft",
    );
  else if (kind === "MatMulQ4") y = g.op("MatMulQ4", [x, ...q4()], {}, 1, OPS_DOMAIN)[0];
  else {
    const zp = g.uint8([128], []);
    const xq = g.o("QuantizeLinear", [x, g.floats([0.01], []), zp]);
    const w = g.constant(
      "wq",
      Int8Array.from({ length: K * N }, () => ((Math.random() * 256) | 0) - 128),
      [K, N],
      DT.INT8,
    );
    y = g.o("Mul", [g.o("Cast", [g.o("MatMulInteger", [xq, w, zp])], { to: DT.FLOAT }), g.floats(rnd(N, 0.01), [N])]);
  }
  g.output(y, "y", DT.FLOAT, ["M", N]);
  const path = join(dir, `${kind.replace(/\W+/g, "-")}-${K}x${N}.onnx`);
  writeFileSync(path, g.serialize(21, true, { [OPS_DOMAIN]: OPS_DOMAIN_VERSION }));
  return path;
}

const rows = [];
try {
  for (const [K, N] of shapes)
    for (const kind of kinds) {
      const s = await CapiSession.open(graph(kind, K, N), args.threads, kind === "MatMulQ4" ? lib : undefined);
      const row = { kind, K, N, usPerRun: {} };
      for (const M of rowCounts) {
        const x = s.float32([M, K]);
        x.data.set(rnd(M * K));
        const y = s.float32([M, N]);
        const runs = Math.max(3, Math.round((2e6 / (M * K * N)) * 50)); // ~0.1 G multiply-adds a round
        for (let i = 0; i < runs; i++) s.run({ x }, { y });
        const t = [];
        for (let r = 0; r < 7; r++) {
          const t0 = performance.now();
          for (let i = 0; i < runs; i++) s.run({ x }, { y });
          t.push(((performance.now() - t0) / runs) * 1000);
        }
        row.usPerRun[M] = +median(t).toFixed(1);
      }
      s.release();
      rows.push(row);
      console.log(`${K}×${N} ${kind.padEnd(18)} ` + rowCounts.map((M) => `${M} rows ${row.usPerRun[M]} µs`).join(", "));
    }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
if (args.out) {
  const record = { tool: "scripts/ort-matmul-ops.mjs", kind: "ort-matmul-ops", ...provenance(), threads: args.threads, layers: rows };
  console.log(`wrote ${writeResult("ort-matmul-ops", "ort", args.label, record)}`);
}
