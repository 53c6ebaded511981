#!/usr/bin/env node
// Times 4-bit GPTQ of one matrix of a published shape in native code (engines/quant-native) and,
// with --typescript, in TypeScript, side by side on this machine (and always with group scales from
// the largest |w| beside the searched ones, the default); writes bench/results/…-gptq-….json.
// Usage: node scripts/gptq-bench.mjs [OUT_DIM IN_DIM] [--typescript]   (default 2560 5120: mamba-2.8b's out_proj)
import { quantizeInt4Gptq, reconstructionError } from "../dist/engines/builder/quantize.js";
import { quantNative } from "../dist/engines/builder/native.js";
import { provenance, writeResult } from "../dist/runtime/bench/results.js";

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const [outDim, inDim] = args.length ? args.map(Number) : [2560, 5120];
if (!(outDim > 0 && inDim > 0)) throw new Error("usage: gptq-bench.mjs [OUT_DIM IN_DIM] [--typescript]");
const n = quantNative();
if (!n.lib) throw new Error(`native GPTQ: ${n.why}`);
let seed = 1;
const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5;
// XᵀX of correlated inputs: a diagonal of varied sizes plus 16 shared directions
const H = new Float64Array(inDim * inDim);
for (let i = 0; i < inDim; i++) H[i * inDim + i] = 0.1 + (i % 11);
for (let r = 0; r < 16; r++) {
  const v = Float64Array.from({ length: inDim }, rand);
  for (let i = 0; i < inDim; i++) for (let j = 0; j < inDim; j++) H[i * inDim + j] += 30 * v[i] * v[j];
}
const W = Float32Array.from({ length: outDim * inDim }, rand);
const time = (f) => {
  const t0 = performance.now();
  const r = f();
  return [r, (performance.now() - t0) / 1000];
};
const [qn, native] = time(() => quantizeInt4Gptq(W, outDim, inDim, 128, H, { impl: "native" }));
const [, errS] = time(() => reconstructionError(W, qn, outDim, inDim, H, 64, "native"));
const [, absmaxS] = time(() => quantizeInt4Gptq(W, outDim, inDim, 128, H, { impl: "native", scales: "absmax" }));
const rec = {
  tool: "scripts/gptq-bench.mjs",
  outDim,
  inDim,
  group: 128,
  nativeSeconds: +native.toFixed(3),
  absmaxScalesSeconds: +absmaxS.toFixed(3),
  errorSeconds: +errS.toFixed(3),
};
console.log(
  `GPTQ ${outDim} × ${inDim}: native ${native.toFixed(2)} s (largest-|w| group scales: ${absmaxS.toFixed(2)} s); error measure ${errS.toFixed(2)} s`,
);
if (process.argv.includes("--typescript")) {
  const [qt, ts] = time(() => quantizeInt4Gptq(W, outDim, inDim, 128, H, { impl: "typescript" }));
  let same = 0;
  for (let i = 0; i < qt.q.length; i++) same += qt.q[i] === qn.q[i] ? 1 : 0;
  Object.assign(rec, { typescriptSeconds: +ts.toFixed(3), speedup: +(ts / native).toFixed(1), sameWeights: same / qt.q.length });
  console.log(
    `TypeScript ${ts.toFixed(2)} s: native ${(ts / native).toFixed(1)}× faster; ${((100 * same) / qt.q.length).toFixed(3)} % of weights equal`,
  );
}
console.log(`wrote ${writeResult("gptq", `${outDim}x${inDim}`, "native", { ...rec, ...provenance() })}`);
