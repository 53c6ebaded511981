#!/usr/bin/env node
// The fused operators' kernels alone (engines/ort-ops/check/kernels_bench.cpp: no onnxruntime, one
// thread), once per instruction set this CPU has, so their versions are compared side by side in
// one run. Builds the CMake target ort_ops_bench in a temporary directory, prints µs per call and
// each version's speed-up over the AVX2 one (x86-64), and writes JSON under bench/results/.
// Usage: node scripts/ort-kernels-bench.mjs [--label L] [--no-out]
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { packageRoot } from "../dist/runtime/paths.js";
import { provenance, writeResult } from "../dist/runtime/bench/results.js";

const args = yargs(hideBin(process.argv))
  .option("label", {
    type: "string",
    default: "kernels",
    describe: "the record's name: bench/results/<date>-ort-kernels-bench-ort-<label>.json",
  })
  .option("out", { type: "boolean", default: true, describe: "write bench/results/*.json" })
  .strict()
  .parseSync();

// a build directory of its own: the library's may have been configured on another machine
const build = mkdtempSync(join(tmpdir(), "mamba-edge-kernels-bench-"));
process.on("exit", () => rmSync(build, { recursive: true, force: true }));
execFileSync("cmake", ["-S", join(packageRoot, "engines", "ort-ops"), "-B", build], { stdio: ["ignore", "ignore", "inherit"] });
execFileSync("cmake", ["--build", build, "--target", "ort_ops_bench", "-j", "2"], { stdio: ["ignore", "ignore", "inherit"] });

// every version once: the best first, then each lesser one it can be asked for (duplicates dropped)
const runs = [];
for (const want of ["best", "avx2", "portable"]) {
  const r = JSON.parse(execFileSync(join(build, "ort_ops_bench"), { env: { ...process.env, MAMBA_EDGE_ORT_OPS_ISA: want } }).toString());
  if (!runs.some((x) => x.isa === r.isa)) runs.push(r);
}
const base = runs.find((r) => r.isa === "avx2");
const key = (x) => `${x.kernel}|${x.shape}|${x.rows}`;
const baseUs = new Map(base ? base.results.map((x) => [key(x), x.us]) : []);
console.log(
  [
    "kernel".padEnd(14),
    "shape".padEnd(32),
    "rows".padStart(4),
    ...runs.map((r) => `${r.isa} µs`.padStart(13)),
    ...(base ? runs.filter((r) => r !== base).map((r) => `${r.isa} speed-up`.padStart(17)) : []),
  ].join("  "),
);
for (const [i, x] of runs[0].results.entries()) {
  const us = runs.map((r) => r.results[i].us);
  const ratios = base ? runs.filter((r) => r !== base).map((r) => (baseUs.get(key(x)) / r.results[i].us).toFixed(2)) : [];
  console.log(
    [
      x.kernel.padEnd(14),
      x.shape.padEnd(32),
      String(x.rows).padStart(4),
      ...us.map((u) => u.toFixed(2).padStart(13)),
      ...ratios.map((q) => q.padStart(17)),
    ].join("  "),
  );
}
if (args.out) {
  const record = { tool: "scripts/ort-kernels-bench.mjs", kind: "ort-kernels-bench", ...provenance(), threads: 1, versions: runs };
  console.log(`wrote ${writeResult("ort-kernels-bench", "ort", args.label, record)}`);
}
