// Whole-width Hadamard rotations (engines/builder/hadamard.ts): the constructions are orthogonal,
// the fast transform equals the dense Kronecker product, the graph nodes compute the same, and the
// rotation spreads an outlier channel over the whole width instead of one power-of-two block.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import ort from "onnxruntime-node";
import { hadamardFactor, hadamardFactors, paley, rotateVector, rotationOf, sylvester } from "../engines/builder/hadamard.js";
import { DT, Graph } from "../engines/builder/onnx/graph.js";
import { WeightFile } from "../engines/builder/onnx/weight-file.js";
import { rotateInputs } from "../engines/builder/quantize.js";
import { emitRotation } from "../engines/builder/recipes/rotate.js";
import { seededRandom } from "../engines/model/rng.js";

/** The dense (H_m ⊗ H_b), normalized, as float64 (n × n). */
function dense(m: number, b: number): Float64Array {
  const Hm = hadamardFactor(m);
  const Hb = sylvester(b);
  const n = m * b;
  const H = new Float64Array(n * n);
  for (let a = 0; a < m; a++)
    for (let c = 0; c < b; c++)
      for (let a2 = 0; a2 < m; a2++) for (let c2 = 0; c2 < b; c2++) H[(a * b + c) * n + a2 * b + c2] = Hm[a * m + a2] * Hb[c * b + c2];
  return H;
}

const random = (n: number, seed: number) => {
  const r = seededRandom(seed);
  return Float64Array.from({ length: n }, () => r() - 0.5);
};

describe("Hadamard matrices", () => {
  it("Paley's orders 12 and 20 are Hadamard: H Hᵀ = m I, entries ±1", () => {
    for (const m of [12, 20]) {
      const H = paley(m);
      expect([...H].every((v) => v === 1 || v === -1)).toBe(true);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < m; j++) {
          let d = 0;
          for (let k = 0; k < m; k++) d += H[i * m + k] * H[j * m + k];
          expect(d, `${m}: rows ${i}, ${j}`).toBe(i === j ? m : 0);
        }
    }
  });

  it("factors every published width into the whole-width form", () => {
    for (const [n, m, b] of [
      [1536, 12, 128],
      [2048, 1, 2048],
      [3072, 12, 256],
      [4096, 1, 4096],
      [5120, 20, 256],
    ])
      expect(hadamardFactors(n)).toEqual({ m, b });
    expect(hadamardFactors(56)).toBeNull(); // 7 · 8: blocks of 8
    expect(rotationOf(56)).toEqual({ m: 1, b: 8 });
  });

  it("the fast transform is x · (H_m ⊗ H_b), and orthogonal", () => {
    for (const [m, b] of [
      [12, 8],
      [20, 4],
      [1, 16],
    ]) {
      const n = m * b;
      const x = random(n, m + b);
      const H = dense(m, b);
      const want = new Float64Array(n);
      for (let j = 0; j < n; j++) for (let i = 0; i < n; i++) want[j] += x[i] * H[i * n + j];
      const got = Float64Array.from(x);
      rotateVector(got, { m, b }, hadamardFactor(m));
      for (let j = 0; j < n; j++) expect(got[j]).toBeCloseTo(want[j], 6); // H_m is held in float32
      const norm = (v: Float64Array) => Math.hypot(...v);
      expect(norm(got)).toBeCloseTo(norm(x), 6);
    }
  });

  it("rotated weights keep the product: (x·H)(W·H)ᵀ = x·Wᵀ", () => {
    const inDim = 96; // 12 · 8
    const outDim = 5;
    const W = Float32Array.from(random(outDim * inDim, 3));
    const x = random(inDim, 4);
    const R = rotateInputs(W, outDim, inDim);
    const xr = Float64Array.from(x);
    rotateVector(xr, rotationOf(inDim), hadamardFactor(12));
    for (let o = 0; o < outDim; o++) {
      let a = 0;
      let b = 0;
      for (let i = 0; i < inDim; i++) {
        a += x[i] * W[o * inDim + i];
        b += xr[i] * R[o * inDim + i];
      }
      expect(b).toBeCloseTo(a, 5);
    }
  });

  it("the graph's rotation (onnxruntime) equals the builder's", async () => {
    for (const E of [96, 160, 56]) {
      const g = new Graph("rot");
      const file = new WeightFile("w.bin");
      const x = g.input("x", DT.FLOAT, [2, E]);
      g.output(emitRotation(g, file, x, E), "y", DT.FLOAT, [2, E]);
      const dir = mkdtempSync(join(tmpdir(), "mamba-edge-rot-"));
      await file.write(join(dir, "w.bin"));
      writeFileSync(join(dir, "rot.onnx"), g.serialize());
      const s = await ort.InferenceSession.create(join(dir, "rot.onnx"));
      const xs = Float32Array.from(random(2 * E, E));
      const y = (await s.run({ x: new ort.Tensor("float32", xs, [2, E]) })).y.data as Float32Array;
      await s.release();
      rmSync(dir, { recursive: true, force: true });
      const f = rotationOf(E);
      for (let r = 0; r < 2; r++) {
        const want = Float64Array.from(xs.subarray(r * E, (r + 1) * E));
        rotateVector(want, f, hadamardFactor(f.m));
        for (let j = 0; j < E; j++) expect(y[r * E + j]).toBeCloseTo(want[j], 5);
      }
    }
  });

  it("spreads one outlier channel over the whole width (1536), not one block of 512", () => {
    const E = 1536;
    const x = random(E, 9).map((v) => v * 0.1);
    x[700] = 50;
    const whole = Float64Array.from(x);
    rotateVector(whole, rotationOf(E), hadamardFactor(12));
    const blocks = Float64Array.from(x);
    rotateVector(blocks, { m: 1, b: 512 }, hadamardFactor(1));
    const peak = (v: Float64Array) => Math.max(...v.map(Math.abs));
    // the outlier's share of each output falls with the width it is spread over: 50/√1536 vs 50/√512
    expect(peak(whole)).toBeLessThan(0.65 * peak(blocks));
  });
});
