#!/usr/bin/env node
// Calibration on the GPU (build --backend cuda) against onnxruntime's on the CPU: for each model,
// every block is run by both over the same windows, from the same residual streams, and every
// statistic the recipes use is compared (absolute maxima, |x| percentiles, per-channel maxima,
// XᵀX) with the blocks' outputs; with and without out_proj's Hadamard rotation. The GPU runs the
// matrices in float16, so the two agree to float16's rounding, not exactly. Exits 1 when any
// difference passes its bound; writes bench/results/…-calib-check-….json (and a copy under $OUT).
// Usage: node scripts/gpu/calib-check.mjs MODEL_DIR ... [--windows N] [--len T]
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { BlockCalibration } from "../../dist/engines/builder/calibrate.js";
import { CudaBlockCalibration, cudaCalibration } from "../../dist/engines/builder/calibrate-cuda.js";
import { MambaModel } from "../../dist/engines/model/model.js";
import { provenance, writeResult } from "../../dist/runtime/bench/results.js";

const argv = process.argv.slice(2);
const opt = (k, d) => (argv.includes(k) ? Number(argv[argv.indexOf(k) + 1]) : d);
const models = argv.filter((a, i) => !a.startsWith("--") && !argv[i - 1]?.startsWith("--"));
const nWindows = opt("--windows", 8);
const len = opt("--len", 256);
if (!models.length) throw new Error("usage: calib-check.mjs MODEL_DIR ... [--windows N] [--len T]");
const gpu = cudaCalibration();
if (!gpu.lib) {
  console.error(`calib-check: no GPU calibration (${gpu.why})`);
  process.exit(1);
}
// bounds: float16 matrices against float32 ones
const BOUND = { absmax: 2e-2, percentile: 3e-2, channelAbsmax: 3e-2, xtx: 1e-2, outputs: 1e-2 };
const rel = (a, b) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
const relNorm = (a, b) => {
  let d = 0;
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / Math.max(n, 1e-300));
};
const maxRel = (a, b) => {
  let m = 0;
  let top = 0;
  for (const v of b) top = Math.max(top, Math.abs(v));
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), 1e-2 * top));
  return m;
};

const scratch = mkdtempSync(join(tmpdir(), "calib-check-"));
const cases = [];
let failed = 0;
for (const dir of models) {
  const model = MambaModel.load(dir);
  const c = model.config;
  let x = 7;
  const windows = Array.from({ length: nWindows }, () =>
    Array.from({ length: len }, () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) % c.vocabSize),
  );
  for (const rotate of [false, true]) {
    const opts = { percentile: 0.9995, hessians: true, rotate };
    const ort = await BlockCalibration.start(c, model.weights.embedding, windows, scratch, opts, c.nLayer);
    let cuda;
    try {
      cuda = await CudaBlockCalibration.start(c, model.weights.embedding, windows, scratch, opts, c.nLayer);
    } catch (e) {
      // a shape the cuda kernels do not take
      console.log(`${basename(dir)}: skipped (${e.message})`);
      cases.push({ model: basename(dir), rotate, skipped: e.message });
      break;
    }
    const worst = { absmax: 0, percentile: 0, channelAbsmax: 0, xtx: 0, outputs: 0 };
    const t = { ort: 0, cuda: 0 };
    for (let l = 0; l < c.nLayer; l++) {
      const L = model.weights.layers[l];
      let t0 = performance.now();
      const a = await ort.observe(l, L);
      t.ort += performance.now() - t0;
      t0 = performance.now();
      const b = await cuda.observe(l, L);
      t.cuda += performance.now() - t0;
      a.forEach((o, i) => (worst.outputs = Math.max(worst.outputs, relNorm(b[i], o))));
      for (const [name, s] of ort.stats) {
        if (!name.startsWith(`l${l}.`) || name.endsWith(".dt_proj")) continue;
        const g = cuda.stats.get(name);
        if (!g) throw new Error(`${dir}: ${name} not observed on the GPU`);
        worst.absmax = Math.max(worst.absmax, rel(g.absmax, s.absmax));
        if (s.percentile !== undefined) worst.percentile = Math.max(worst.percentile, rel(g.percentile, s.percentile));
        if (s.channelAbsmax) worst.channelAbsmax = Math.max(worst.channelAbsmax, maxRel(g.channelAbsmax, s.channelAbsmax));
        if (s.xtx) worst.xtx = Math.max(worst.xtx, relNorm(g.xtx, s.xtx));
      }
      // both go on from the same stream: the reference's
      ort.advance(a);
      cuda.advance(a);
    }
    cuda.close();
    const bad = Object.entries(worst).filter(([k, v]) => !(v <= BOUND[k]));
    failed += bad.length;
    const row = {
      model: basename(dir),
      rotate,
      windows: nWindows,
      len,
      worst,
      ortSeconds: t.ort / 1000,
      cudaSeconds: t.cuda / 1000,
      within: !bad.length,
    };
    cases.push(row);
    console.log(
      `${basename(dir)} rotate=${rotate}: ` +
        Object.entries(worst)
          .map(([k, v]) => `${k} ${v.toExponential(1)}`)
          .join(", ") +
        ` (ort ${row.ortSeconds.toFixed(1)} s, cuda ${row.cudaSeconds.toFixed(1)} s)${bad.length ? `  FAILED: ${bad.map(([k]) => k).join(", ")}` : ""}`,
    );
  }
}
rmSync(scratch, { recursive: true, force: true });
const path = writeResult("calib-check", "gpu", "ort", { tool: "scripts/gpu/calib-check.mjs", bounds: BOUND, cases, ...provenance() });
console.log(`wrote ${path}`);
if (process.env.OUT) copyFileSync(path, join(process.env.OUT, basename(path)));
process.exit(failed ? 1 : 0);
