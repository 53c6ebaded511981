// Block-by-block calibration: the builder runs the model one block at a time, keeping only each
// calibration window's residual stream, and random weights are made one layer at a time.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BlockCalibration } from "../engines/builder/calibrate.js";
import { quantNative } from "../engines/builder/native.js";
import { MambaModel } from "../engines/model/model.js";
import { linear, rmsnorm } from "../engines/model/ops.js";
import { randomSource } from "../engines/model/random.js";
import { seededRandom } from "../engines/model/rng.js";
import { materialize } from "../engines/model/weights.js";
import { fixtureRoot, relErr } from "./helpers/fixtures.js";
import { opsRequired, skipWhen } from "./helpers/skip.js";

const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-calibrate-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe.each(["mamba1-untied-dtrank", "mamba2-groups"])("block calibration on %s", (name) => {
  const model = MambaModel.load(join(fixtureRoot, name));
  const c = model.config;
  const windows = [
    Array.from({ length: 37 }, (_, i) => (i * 13 + 5) % c.vocabSize),
    Array.from({ length: 20 }, (_, i) => (i * 29 + 1) % c.vocabSize),
  ];
  const start = (runs: number) =>
    BlockCalibration.start(c, model.weights.embedding, windows, scratch, { percentile: 0.999, hessians: true, rotate: false }, runs);

  it("carries each window's residual stream through every block as the reference does", async () => {
    const cal = await start(c.nLayer);
    for (let l = 0; l < c.nLayer; l++) cal.advance(await cal.observe(l, model.weights.layers[l]));
    // the stream after the last block, through the head, gives the reference's logits
    windows.forEach((w, i) => {
      const h = rmsnorm(cal.residuals[i], w.length, c.dModel, model.weights.normF, c.normEps);
      const logits = linear(h, w.length, c.dModel, model.weights.lmHead, c.vocabSize, null);
      expect(relErr(logits, model.prefill(w, model.newState(), true))).toBeLessThan(1e-4);
    });
    expect(cal.samples).toBe(2);
    expect(cal.length).toBe(37);
  });

  it("collects block 0's input statistics: absmax and XᵀX of the normed embedding", async () => {
    const cal = await start(1);
    const L = model.weights.layers[0];
    await cal.observe(0, L);
    const st = cal.stats.get("l0.in_proj")!;
    let absmax = 0;
    const xtx = new Float64Array(c.dModel * c.dModel);
    for (const w of windows) {
      const x = new Float32Array(w.length * c.dModel);
      w.forEach((id, r) => x.set(model.weights.embedding.subarray(id * c.dModel, (id + 1) * c.dModel), r * c.dModel));
      const u = rmsnorm(x, w.length, c.dModel, L.norm, c.normEps);
      for (const v of u) absmax = Math.max(absmax, Math.abs(v));
      for (let r = 0; r < w.length; r++)
        for (let i = 0; i < c.dModel; i++)
          for (let j = 0; j < c.dModel; j++) xtx[i * c.dModel + j] += u[r * c.dModel + i] * u[r * c.dModel + j];
    }
    expect(Math.abs(st.absmax - absmax) / absmax).toBeLessThan(1e-5);
    expect(relErr(Float32Array.from(st.xtx!), Float32Array.from(xtx))).toBeLessThan(1e-4);
    // SSM inputs keep values (percentile, per-channel maxima) but no Hessian
    const x = cal.stats.get("l0.x")!;
    expect(x.xtx).toBeUndefined();
    expect(x.percentile!).toBeGreaterThan(0);
    expect(x.percentile!).toBeLessThanOrEqual(x.absmax);
    expect(Math.max(...x.channelAbsmax!)).toBeCloseTo(x.absmax, 5);
  });
});

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe("random weights one layer at a time", () => {
  it("the generator can start anywhere in its stream", () => {
    const a = seededRandom(7);
    const drawn = Array.from({ length: 1000 }, () => a());
    const b = seededRandom(7, 600);
    expect(Array.from({ length: 400 }, () => b())).toEqual(drawn.slice(600));
    // beyond 2^32 draws too (the state wraps)
    const far = 2 ** 32 + 5;
    const x = seededRandom(3, far);
    const y = seededRandom(3, 5);
    expect(x()).toBe(y());
  });

  it("each layer is the same whichever order the layers are made in", () => {
    const src = randomSource("mamba2-130m");
    const third = src.layer(3);
    const first = src.layer(1);
    const all = materialize(randomSource("mamba2-130m"));
    const same = (a: Float32Array, b: Float32Array) => Buffer.compare(bytes(a), bytes(b)) === 0;
    expect(same(third.inProj, all.layers[3].inProj)).toBe(true);
    expect(same(third.outProj, all.layers[3].outProj)).toBe(true);
    expect(same(first.convW, all.layers[1].convW)).toBe(true);
    expect(same(third.inProj, first.inProj)).toBe(false);
    expect(same(src.head().embedding, all.embedding)).toBe(true);
  });
});

describe("XᵀX in native code", () => {
  it.skipIf(skipWhen(!quantNative().lib, `native XᵀX: ${quantNative().why}`, opsRequired))(
    "adds each window's XᵀX to the sum, both triangles, at widths that are not whole tiles",
    () => {
      const n = 150; // two whole 64-wide tiles and a part
      let seed = 3;
      const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5;
      const windows = [70, 5].map((rows) => Float32Array.from({ length: rows * n }, rand));
      const acc = new Float64Array(n * n);
      const want = new Float64Array(n * n);
      for (const X of windows) {
        quantNative().lib!.gramAdd(X, X.length / n, n, acc);
        for (let r = 0; r < X.length / n; r++)
          for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) want[i * n + j] += X[r * n + i] * X[r * n + j];
      }
      let worst = 0;
      for (let k = 0; k < acc.length; k++) worst = Math.max(worst, Math.abs(acc[k] - want[k]));
      expect(worst).toBeLessThan(1e-5);
      expect(acc[3 * n + 140]).toBe(acc[140 * n + 3]);
      expect(acc[149 * n + 149]).toBeGreaterThan(0);
    },
  );
});
