// Prints the README's tables for backend cuda from a committed GPU check record
// (bench/results/*-gpu-check-*.json, written by scripts/gpu-check.sh).
// Usage: node scripts/cuda-table.mjs bench/results/FILE.json
import { readFileSync } from "node:fs";

const r = JSON.parse(readFileSync(process.argv[2], "utf8"));
const e = (x) => x.toExponential(1);
const f = (x, d = 2) => x.toFixed(d);
console.log(
  `Measured on ${r.device} (driver ${r.driver}, PyTorch ${r.torch}, transformers ${r.transformers}), ${r.date.slice(0, 10)}, commit ${r.commit}.\n`,
);
const worst = new Map();
for (const k of r.kernels) {
  const w = worst.get(k.kernel);
  worst.set(k.kernel, { err: Math.max(w?.err ?? 0, k.relError), tol: k.tolerance, n: (w?.n ?? 0) + 1, ok: (w?.ok ?? true) && k.ok });
}
console.log("| kernel | cases | worst ‖out − ref‖ / ‖ref‖ | tolerance |\n|---|---|---|---|");
for (const [k, w] of worst) console.log(`| ${k} | ${w.n} | ${e(w.err)} | ${e(w.tol)}${w.ok ? "" : " **missed**"} |`);
console.log(
  "\n| model | recipe | cuda vs reference | ort vs reference | cuda vs ort | tolerance | state save/load | within |\n|---|---|---|---|---|---|---|---|",
);
for (const x of r.endToEnd)
  console.log(
    `| ${x.model} | ${x.recipe} | ${e(x.cudaVsRef)} | ${e(x.ortVsRef)} | ${e(x.cudaVsOrt)} | ${e(x.tolerance)} | ${x.stateRoundTrip === 0 ? "exact" : e(x.stateRoundTrip)} | ${x.ok ? "yes" : "**no**"} |`,
  );
const b = r.bench;
const tr = new Map(b.transformers.filter((t) => !t.error).map((t) => [t.shape, t]));
console.log(`\nDevice-to-device copy: ${f(b.copyBandwidthTBs)} TB/s (bytes read + written); floor = weight bytes ÷ that.\n`);
console.log(
  "| shape | recipe | weights MB | decode ms/token, batch 1 | floor ms | × floor | tokens/s b1 | b8 | b32 | prefill 512 ms | transformers ms/token | × faster |\n|---|---|---|---|---|---|---|---|---|---|---|---|",
);
for (const x of b.engines) {
  if (x.error) {
    console.log(`| ${x.shape} | ${x.recipe} | failed: ${x.error} |||||||||`);
    continue;
  }
  const t = tr.get(x.shape);
  console.log(
    `| ${x.shape} | ${x.recipe} | ${f(x.weightBytes / 1e6, 0)} | ${f(x.decodeMsB1, 3)} | ${f(x.floorMs, 3)} | ${f(x.ratioToFloor)} | ${f(x.tokensPerSecondB1, 0)} | ${f(x.tokensPerSecondB8, 0)} | ${f(x.tokensPerSecondB32, 0)} | ${f(x.prefill512Ms, 1)} | ${t ? f(t.decodeMsB1, 1) : "–"} | ${t ? f(t.decodeMsB1 / x.decodeMsB1, 0) : "–"} |`,
  );
}
console.log(
  "\ntransformers prefill of 512 tokens (fp16, reference PyTorch path): " +
    [...tr.values()].map((t) => `${t.shape} ${f(t.prefill512Ms, 0)} ms`).join(", ") +
    ".",
);
