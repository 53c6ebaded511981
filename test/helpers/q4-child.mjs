// Runs one MatMulQ4 node (engines/ort-ops) on deterministic inputs and prints them with the result as
// JSON. A child process, so that MAMBA_EDGE_ORT_OPS_ISA can pick the instruction set the operator
// library uses (it decides once per process). Uses the compiled dist/, as the CLI does.
// Usage: node q4-child.mjs M K N BLOCK
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DT, Graph } from "../../dist/engines/builder/onnx/graph.js";
import { OPS_DOMAIN, OPS_DOMAIN_VERSION } from "../../dist/engines/builder/onnx/export.js";
import { CapiSession } from "../../dist/runtime/backends/ort-capi.js";
import { ortOpsLibraryPath } from "../../dist/runtime/backends/ort.js";

const [M, K, N, block] = process.argv.slice(2).map(Number);
const blocks = Math.ceil(K / block);
let seed = 12345;
const next = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0), seed);
const w = Uint8Array.from({ length: N * blocks * (block / 2) }, () => next() >>> 24);
const s = Float32Array.from({ length: N * blocks }, () => (next() / 2 ** 32) * 0.1 + 0.01);
const x = Float32Array.from({ length: M * K }, () => (next() / 2 ** 32) * 4 - 2);

const g = new Graph("q4");
const xin = g.input("x", DT.FLOAT, [M, K]);
const wq = g.constant("w", w, [N, blocks, block / 2], DT.UINT8);
const sc = g.constant("scales", s, [N * blocks], DT.FLOAT);
g.output(g.op("MatMulQ4", [xin, wq, sc], {}, 1, OPS_DOMAIN)[0], "y", DT.FLOAT, [M, N]);
const dir = mkdtempSync(join(tmpdir(), "mamba-edge-q4-"));
try {
  const path = join(dir, "q4.onnx");
  writeFileSync(path, g.serialize(21, false, { [OPS_DOMAIN]: OPS_DOMAIN_VERSION }));
  const session = await CapiSession.open(path, 2, ortOpsLibraryPath());
  const xt = session.float32([M, K]);
  xt.data.set(x);
  const y = session.float32([M, N]);
  session.run({ x: xt }, { y });
  session.run({ x: xt }, { y }); // a second run: the regrouped weights come from the kernel's cache
  process.stdout.write(JSON.stringify({ x: Array.from(x), w: Array.from(w), s: Array.from(s), y: Array.from(y.data) }));
  session.release();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
