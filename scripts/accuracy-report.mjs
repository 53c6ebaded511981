#!/usr/bin/env node
// Prints, for every golden fixture, max|a − b| / max|b| of: the reference against transformers'
// float64 logits (prefill and token-by-token steps), step against prefill, and the fp16 engine on
// onnxruntime against the reference. Needs a build (npm run build).
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const { MambaModel } = await import(join(root, "dist/engines/model/model.js"));
const { SafetensorsFile } = await import(join(root, "dist/engines/model/safetensors.js"));
const { build } = await import(join(root, "dist/engines/builder/build.js"));
const { OrtBackend } = await import(join(root, "dist/runtime/backends/ort.js"));

const rel = (a, b) => {
  let e = 0,
    r = 0;
  for (let i = 0; i < b.length; i++) {
    e = Math.max(e, Math.abs(a[i] - b[i]));
    r = Math.max(r, Math.abs(b[i]));
  }
  return e / r;
};
const fixtures = join(root, "test", "fixtures");
const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-accuracy-"));
console.log("fixture                  prefill/hf  step/hf     step/prefill  fp16-ort/ref");
try {
  for (const name of readdirSync(fixtures).sort()) {
    const dir = join(fixtures, name);
    const f = new SafetensorsFile(join(dir, "reference.safetensors"));
    const ids = Array.from(f.float64("input_ids"));
    const want = f.float64("logits");
    const m = MambaModel.load(dir);
    const prefill = m.prefill(ids, m.newState(), true);
    const s = m.newState();
    const V = m.config.vocabSize;
    const steps = new Float32Array(ids.length * V);
    ids.forEach((id, t) => steps.set(m.step([id], [s]), t * V));
    const engine = await build({ modelDir: dir, recipe: "fp16", out: join(scratch, `${name}.mamba`) });
    const be = await OrtBackend.open(engine.out);
    const ort = await be.prefill(Int32Array.from(ids), be.newState(), true);
    await be.close();
    const cols = [rel(prefill, want), rel(steps, want), rel(steps, prefill), rel(ort, prefill)].map((x) => x.toExponential(2).padEnd(12));
    console.log(`${name.padEnd(24)} ${cols.join(" ")}`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
