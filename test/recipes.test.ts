// Quantization recipes: every recipe builds, runs consistently, stays near the float model, and on
// the trained demo model keeps held-out perplexity close to fp16.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { OrtBackend } from "../runtime/backends/ort.js";
import { groupFor, quantizeInt4Gptq, quantizeInt4Rtn, reconstructionError, upperCholeskyOfInverse } from "../engines/builder/quantize.js";
import { MambaModel } from "../engines/model/model.js";
import { SafetensorsFile } from "../engines/model/safetensors.js";
import { quantNative } from "../engines/builder/native.js";
import { cudaCalibration } from "../engines/builder/calibrate-cuda.js";
import { opsRequired, skipWhen } from "./helpers/skip.js";
import { float16WeightBytes } from "../engines/package/size.js";
import { cli, root } from "./helpers/cli.js";
import { fixtureRoot, reference, relErr } from "./helpers/fixtures.js";
import { expectSameTrace, stepTrace } from "./helpers/trace.js";

const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-recipes-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

// calibration token ids for the tokenizer-less fixtures (vocabularies of 101 and 131)
const calibTokens = join(scratch, "calib-tokens.txt");
writeFileSync(calibTokens, Array.from({ length: 4096 }, (_, i) => (i * 7919 + 11) % 97).join(" "));

const recipes = ["w8a8", "w8a8-naive", "w4a16", "w4a8"] as const;
// max|logits − reference| / max|reference| on tiny random models, about a quarter above what each
// recipe gives (the same in every instruction set of the fused operators and without them): 4-bit
// on 48-to-128-wide random matrices is coarse, a wrong scale or packing gives errors ≫ 1
const bounds: Record<string, Record<(typeof recipes)[number], number>> = {
  "mamba1-untied-dtrank": { w8a8: 0.09, "w8a8-naive": 0.15, w4a16: 0.28, w4a8: 0.34 },
  "mamba2-groups": { w8a8: 0.13, "w8a8-naive": 0.07, w4a16: 0.42, w4a8: 0.48 },
};

for (const [name, bound] of Object.entries(bounds)) {
  describe(`recipes on ${name}`, () => {
    const model = MambaModel.load(join(fixtureRoot, name));
    const { ids } = reference(name);
    const want = model.prefill(ids, model.newState(), true);

    for (const recipe of recipes) {
      it(`${recipe}: builds, prefill and step agree, logits near the float model`, async () => {
        const out = join(scratch, `${name}-${recipe}.mamba`);
        const r = cli([
          "build",
          join(fixtureRoot, name),
          "--quant",
          recipe,
          "--calib-tokens",
          calibTokens,
          "--calib-samples",
          "8",
          "--calib-len",
          "64",
          "--out",
          out,
        ]);
        expect(r.code, r.stderr).toBe(0);
        const be = await OrtBackend.open(out);
        const prefill = await be.prefill(Int32Array.from(ids), be.newState(), true);
        const s = be.newState();
        const V = be.info.vocabSize;
        const steps = new Float32Array(ids.length * V);
        for (let t = 0; t < ids.length; t++) steps.set(await be.step(Int32Array.of(ids[t]), [s]), t * V);
        expect(relErr(steps, prefill)).toBeLessThanOrEqual(1e-4);
        expect(relErr(prefill, want)).toBeLessThanOrEqual(bound[recipe]);
        const m = be.manifest;
        expect(m.quant.recipe).toBe(recipe);
        expect(m.calibration).toMatchObject({ samples: 8, length: 64 });
        expect(m.calibration!.textSha256).toMatch(/^[0-9a-f]{64}$/);
        await be.close();
        if (recipe === "w4a16" && be.info.device.endsWith("fused operators")) {
          // the fused step's MatMulQ4 against onnxruntime's MatMulNBits in the plain step, batches of 3 and 1
          expectSameTrace(
            await stepTrace(await OrtBackend.open(out), 4),
            await stepTrace(await OrtBackend.open(out, { fused: false }), 4),
            1e-5,
          );
        }
      });
    }
  });
}

describe("recipes on the demo model", () => {
  const heldout = join(root, "data", "brown", "heldout.txt");
  const ppl = (engine: string) => {
    const r = cli(["eval", "--engine", engine, "--text", heldout, "--max-tokens", "3000", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout).perplexity as number;
  };
  const build = (recipe: string) => {
    const out = join(scratch, `demo-${recipe}.mamba`);
    const args = ["build", join(root, "models", "mamba2-brown"), "--quant", recipe, "--out", out];
    if (recipe !== "fp16") args.push("--calib", join(root, "data", "brown", "calib.txt"), "--calib-samples", "16", "--calib-len", "256");
    const r = cli(args);
    expect(r.code, r.stderr).toBe(0);
    return out;
  };

  it("w8a8 and w4a16 keep held-out perplexity within 1% and 3.5% of fp16", () => {
    const fp16 = ppl(build("fp16"));
    expect(fp16).toBeLessThan(140);
    expect(ppl(build("w8a8"))).toBeLessThanOrEqual(fp16 * 1.01);
    expect(ppl(build("w4a16"))).toBeLessThanOrEqual(fp16 * 1.035);
  });

  it("--embedding q4: 4-bit embedding and lm_head, a smaller engine at a measured cost", async () => {
    // built after the test above: its fp16 engine is the baseline
    const fp16 = join(scratch, "demo-fp16.mamba");
    const out = join(scratch, "demo-w4a16-q4.mamba");
    const r = cli([
      ...["build", join(root, "models", "mamba2-brown"), "--quant", "w4a16", "--embedding", "q4", "--out", out],
      ...["--calib", join(root, "data", "brown", "calib.txt"), "--calib-samples", "16", "--calib-len", "256"],
    ]);
    expect(r.code, r.stderr).toBe(0);
    const st = new SafetensorsFile(join(out, "weights.safetensors"));
    expect(st.tensors.get("embedding")).toMatchObject({ dtype: "U8", shape: [4096, 2, 64] });
    expect(st.tensors.has("lm_head")).toBe(false); // tied: lm_head reads the embedding's table
    st.close();
    // +5.7 % on this model, where 4-bit groups of a 256-wide table are coarse
    expect(ppl(out)).toBeLessThanOrEqual(ppl(fp16) * 1.07);
    const be = await OrtBackend.open(out);
    const ids = Int32Array.from([5, 17, 300, 4000, 9, 9, 1234]);
    const prefill = await be.prefill(ids, be.newState(), true);
    const s = be.newState();
    const steps = new Float32Array(prefill.length);
    for (let t = 0; t < ids.length; t++) steps.set(await be.step(ids.subarray(t, t + 1), [s]), t * be.info.vocabSize);
    expect(relErr(steps, prefill)).toBeLessThanOrEqual(1e-4);
    await be.close();
    const ratio = (engine: string) => {
      const hit = /, ([\d.]+)× this\)/.exec(cli(["inspect", engine]).stdout);
      expect(hit, engine).not.toBeNull();
      return Number(hit![1]);
    };
    expect(ratio(fp16)).toBeLessThan(1.05);
    expect(ratio(out)).toBeGreaterThan(2.5);
  });

  it("stores each matrix once: the cpu graphs read weights.safetensors", () => {
    for (const recipe of ["fp16", "w8a8", "w4a16"]) {
      const dir = join(scratch, `demo-${recipe}.mamba`);
      const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
      // what is left in cpu/weights.bin: vectors in the graphs' forms, and w8a8's Hadamard matrix
      expect(m.files["cpu/weights.bin"].bytes, recipe).toBeLessThan(0.25 * m.files["weights.safetensors"].bytes);
    }
  });

  it("records the calibration text's sha256 and the recipe's parameters", () => {
    const m = JSON.parse(readFileSync(join(scratch, "demo-w8a8.mamba", "manifest.json"), "utf8"));
    expect(m.quant.params).toMatchObject({ percentile: 0.9995, hadamard: true, weightBits: 8, activationBits: 8 });
    expect(m.calibration.samples).toBe(16);
  });

  it("refuses an empty calibration text and a missing one", () => {
    const empty = join(scratch, "empty.txt");
    writeFileSync(empty, "  \n");
    const r = cli(["build", join(root, "models", "mamba2-brown"), "--quant", "w8a8", "--calib", empty, "--out", join(scratch, "x.mamba")]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^mamba-edge: .*empty\.txt: calibration text is empty$/);
    const r2 = cli(["build", join(root, "models", "mamba2-brown"), "--quant", "w4a16", "--out", join(scratch, "y.mamba")]);
    expect(r2.code).toBe(1);
    expect(r2.stderr.trim()).toMatch(/--calib: quantized recipes need a calibration text file/);
  });
});

describe("Mamba-2's SSM-input scales under int8 activations", () => {
  const build = (recipe: string, extra: string[]) => {
    const out = join(scratch, `groups-${recipe}${extra.join("")}.mamba`);
    const r = cli([
      ...["build", join(fixtureRoot, "mamba2-groups"), "--quant", recipe, "--calib-tokens", calibTokens],
      ...["--calib-samples", "8", "--calib-len", "64", "--out", out, ...extra],
    ]);
    expect(r.code, r.stderr).toBe(0);
    return { ...JSON.parse(readFileSync(join(out, "manifest.json"), "utf8")), dir: out };
  };

  it("w4a8 (and w8a8 with --ssm-scales quamba2) take Quamba2's: x clustered per channel, B and C one scale per state group", () => {
    for (const [recipe, extra] of [
      ["w4a8", []],
      ["w8a8", ["--ssm-scales", "quamba2"]],
    ] as const) {
      const m = build(recipe, [...extra]);
      expect(m.quant.params.ssmScales).toBe("quamba2");
      const G = m.config.nGroups;
      expect(G).toBeGreaterThan(1);
      expect(m.quant.scales["l0.B"]).toHaveLength(G);
      expect(m.quant.scales["l0.C"]).toHaveLength(G);
      expect(m.quant.scales["l0.x"]).toMatchObject({ tensor: "l0.x.scale" });
    }
  });

  it("4-bit groups are whole: 64 over in_proj's 64 inputs, 128 over out_proj's 128 (the native kernels take no partial group)", () => {
    expect([192, 384, 96, 256, 100].map((w) => groupFor(w))).toEqual([64, 128, 32, 128, 128]);
    const m = build("w4a8", ["--force"]);
    const t = new SafetensorsFile(join(m.dir, "weights.safetensors")).tensors;
    expect(m.config.dModel).toBe(64);
    expect(t.get("l0.in_proj.weight")?.shape.slice(1)).toEqual([1, 32]);
    expect(t.get("l0.out_proj.weight")?.shape.slice(1)).toEqual([1, 64]);
  });

  it("w8a8 (and w4a8 with --ssm-scales per-tensor) keep one scale per tensor", () => {
    for (const [recipe, extra] of [
      ["w8a8", []],
      ["w4a8", ["--ssm-scales", "per-tensor"]],
    ] as const) {
      const m = build(recipe, [...extra]);
      expect(m.quant.params.ssmScales).toBe("per-tensor");
      for (const k of ["l0.x", "l0.B", "l0.C"]) expect(typeof m.quant.scales[k]).toBe("number");
    }
  });

  it("refuses w8a8 with Quamba2's scales for the TensorRT target in one line", () => {
    const r = cli([
      ...["build", join(fixtureRoot, "mamba2-groups"), "--quant", "w8a8", "--ssm-scales", "quamba2", "--target", "cpu,trt"],
      ...["--calib-tokens", calibTokens, "--out", join(scratch, "no.mamba")],
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^mamba-edge: --target trt: w8a8 with --ssm-scales quamba2 is not supported/);
  });
});

describe("GPTQ variants", () => {
  // correlated inputs (8 directions and a little noise) of very different sizes per column, as
  // Mamba's are: 256 samples of 64
  const inDim = 64;
  const outDim = 32;
  let seed = 3;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5;
  const colScale = Float64Array.from({ length: inDim }, (_, i) => (i % 7 === 0 ? 8 : 1) * (0.5 + rand()));
  const A = Float64Array.from({ length: 8 * inDim }, rand);
  const X = new Float64Array(256 * inDim);
  for (let t = 0; t < 256; t++) {
    const z = Array.from({ length: 8 }, rand);
    for (let i = 0; i < inDim; i++) {
      let v = 0.05 * rand();
      for (let k = 0; k < 8; k++) v += z[k] * A[k * inDim + i];
      X[t * inDim + i] = v * colScale[i];
    }
  }
  const xtx = new Float64Array(inDim * inDim);
  for (let t = 0; t < 256; t++)
    for (let i = 0; i < inDim; i++) for (let j = 0; j < inDim; j++) xtx[i * inDim + j] += X[t * inDim + i] * X[t * inDim + j];
  const W = Float32Array.from({ length: outDim * inDim }, rand);

  it("GPTQ leaves less output error than round-to-nearest, with and without act-order", () => {
    const rtn = reconstructionError(W, quantizeInt4Rtn(W, outDim, inDim, 32), outDim, inDim, xtx, outDim);
    const gptq = reconstructionError(W, quantizeInt4Gptq(W, outDim, inDim, 32, xtx), outDim, inDim, xtx, outDim);
    const act = quantizeInt4Gptq(W, outDim, inDim, 32, xtx, { actOrder: true });
    const actErr = reconstructionError(W, act, outDim, inDim, xtx, outDim);
    expect(gptq).toBeLessThan(0.8 * rtn);
    expect(actErr).toBeLessThan(0.8 * rtn);
    // act-order's groups keep their place: every value within its group's scale's range
    for (let o = 0; o < outDim; o++) for (let i = 0; i < inDim; i++) expect(Math.abs(act.q[o * inDim + i])).toBeLessThanOrEqual(8);
  });

  it.skipIf(skipWhen(!quantNative().lib, `native GPTQ: ${quantNative().why}`, opsRequired))(
    "native GPTQ (engines/quant-native) gives the TypeScript version's weights, scales and error measure",
    () => {
      // wider than one 64-wide block of the native factorizations and one block of the recurrence, a
      // short last group, a dead input
      const n = 200;
      const out = 24;
      const H = new Float64Array(n * n);
      for (let t = 0; t < 400; t++) {
        const base = rand();
        const x = Float64Array.from({ length: n }, (_, i) => (i === 5 ? 0 : (rand() + base) * (1 + (i % 9))));
        for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) H[i * n + j] += x[i] * x[j];
      }
      const Wn = Float32Array.from({ length: out * n }, rand);
      // groups of 64 and 48: the native recurrence's column blocks (whole groups) of 128 and 96
      for (const [actOrder, group, scales] of [
        [false, 64, "search"],
        [true, 64, "search"],
        [false, 48, "search"],
        [false, 64, "absmax"],
        [true, 48, "absmax"],
      ] as const) {
        const ts = quantizeInt4Gptq(Wn, out, n, group, H, { actOrder, scales, impl: "typescript" });
        const nat = quantizeInt4Gptq(Wn, out, n, group, H, { actOrder, scales, impl: "native" });
        expect(nat.q).toEqual(ts.q);
        expect(nat.scale).toEqual(ts.scale);
        const rtnTs = quantizeInt4Rtn(Wn, out, n, group, scales, "typescript");
        const rtnNat = quantizeInt4Rtn(Wn, out, n, group, scales, "native");
        expect(rtnNat.q).toEqual(rtnTs.q);
        expect(rtnNat.scale).toEqual(rtnTs.scale);
        const e = reconstructionError(Wn, nat, out, n, H, 64, "typescript");
        expect(reconstructionError(Wn, nat, out, n, H, 64, "native")).toBeCloseTo(e, 12);
        expect(e).toBeGreaterThan(0);
      }
    },
  );

  it("searched group scales: each the least squared rounding error of its candidates, less error than absmax's", () => {
    const search = quantizeInt4Rtn(W, outDim, inDim, 32, "search", "typescript");
    const absmax = quantizeInt4Rtn(W, outDim, inDim, 32, "absmax", "typescript");
    const sq = (q: { q: Int8Array; scale: Float32Array }, o: number, g: number, s = q.scale[o * 2 + g]) => {
      let e = 0;
      for (let i = g * 32; i < (g + 1) * 32; i++)
        e += (W[o * inDim + i] - Math.max(-8, Math.min(7, Math.round(W[o * inDim + i] / s))) * s) ** 2;
      return e;
    };
    let [eS, eA] = [0, 0];
    for (let o = 0; o < outDim; o++)
      for (let g = 0; g < 2; g++) {
        const vals = Array.from(W.subarray(o * inDim + g * 32, o * inDim + (g + 1) * 32));
        const s0 = Math.max(Math.max(...vals) / 7, -Math.min(...vals) / 8);
        // absmax: the largest |w| maps to 7; search: no candidate from s0 down by 1 % steps does better
        expect(absmax.scale[o * 2 + g]).toBe(Math.fround(Math.max(...vals.map(Math.abs)) / 7));
        const chosen = sq(search, o, g);
        for (let i = 0; i < 40; i++) expect(chosen).toBeLessThanOrEqual(sq(search, o, g, s0 * (1 - i * 0.01)) * (1 + 1e-6));
        // the codes are the rounding at the scale
        for (let i = g * 32; i < (g + 1) * 32; i++)
          expect(search.q[o * inDim + i]).toBe(Math.max(-8, Math.min(7, Math.round(W[o * inDim + i] / search.scale[o * 2 + g]))) | 0);
        eS += chosen;
        eA += sq(absmax, o, g);
      }
    expect(eS).toBeLessThan(0.9 * eA);
    // and the layer's output error over the inputs
    expect(reconstructionError(W, search, outDim, inDim, xtx, outDim)).toBeLessThan(
      reconstructionError(W, absmax, outDim, inDim, xtx, outDim),
    );
  });

  it("the error measure is ‖XΔᵀ‖² / ‖XWᵀ‖² over the inputs", () => {
    const q = quantizeInt4Rtn(W, outDim, inDim, 32);
    let err = 0;
    let ref = 0;
    for (let t = 0; t < 256; t++)
      for (let o = 0; o < outDim; o++) {
        let y = 0;
        let yq = 0;
        for (let i = 0; i < inDim; i++) {
          y += X[t * inDim + i] * W[o * inDim + i];
          yq += X[t * inDim + i] * q.q[o * inDim + i] * q.scale[o * 2 + Math.floor(i / 32)];
        }
        err += (y - yq) ** 2;
        ref += y * y;
      }
    expect(reconstructionError(W, q, outDim, inDim, xtx, outDim)).toBeCloseTo(err / ref, 10);
  });

  it("builds with --act-order and --gptq-inputs quantized, and records the per-layer errors", () => {
    const out = join(scratch, "gptq-variants.mamba");
    const r = cli([
      ...["build", join(fixtureRoot, "mamba2-groups"), "--quant", "w4a16", "--calib-tokens", calibTokens, "--calib-samples", "8"],
      ...["--calib-len", "64", "--act-order", "--gptq-inputs", "quantized", "--embedding", "fp16", "--out", out],
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/each block's inputs from the blocks before it quantized/);
    const p = JSON.parse(readFileSync(join(out, "manifest.json"), "utf8")).quant.params;
    expect(p).toMatchObject({ gptqActOrder: true, gptqInputs: "quantized" });
    expect(p.reconstructionError.gptqMean).toBeLessThan(p.reconstructionError.rtnMean);
    expect(Object.keys(p.reconstructionError.layers)).toContain("l0.in_proj");
    // against the float model's inputs: block 0 sees the same embedding, block 1 the quantized block 0's outputs
    const floatOut = join(scratch, "gptq-variants-float.mamba");
    const f = cli([
      ...["build", join(fixtureRoot, "mamba2-groups"), "--quant", "w4a16", "--calib-tokens", calibTokens, "--calib-samples", "8"],
      ...["--calib-len", "64", "--act-order", "--embedding", "fp16", "--out", floatOut],
    ]);
    expect(f.code, f.stderr).toBe(0);
    const fl = JSON.parse(readFileSync(join(floatOut, "manifest.json"), "utf8")).quant.params.reconstructionError.layers;
    const ql = p.reconstructionError.layers;
    expect(ql["l0.in_proj"]).toEqual(fl["l0.in_proj"]);
    expect(ql["l1.in_proj"][0]).not.toBe(fl["l1.in_proj"][0]);
    // where it ran: onnxruntime, on a machine without a GPU (or with --backend ort)
    expect(p.calibrationBackend).toBe(cudaCalibration().lib ? "cuda" : "ort");
  });

  it.skipIf(
    skipWhen(cudaCalibration().lib !== null, "a GPU is present: build --backend cuda runs (scripts/gpu/calib-check.mjs checks it)"),
  )("build --backend cuda without a GPU: a one-line error, and no package left behind", () => {
    const out = join(scratch, "cuda-calibration.mamba");
    const r = cli([
      ...["build", join(fixtureRoot, "mamba2-groups"), "--quant", "w8a8", "--calib-tokens", calibTokens, "--calib-samples", "2"],
      ...["--calib-len", "16", "--backend", "cuda", "--out", out],
    ]);
    expect(r.code).toBe(1);
    const last = r.stderr.trim().split("\n").pop()!;
    expect(last).toMatch(/^mamba-edge: build --backend cuda: (no CUDA device|.*libmamba_edge\.so is not built)/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(scratch).filter((f) => f.includes("cuda-calibration"))).toEqual([]);
  });
});

describe("the float16 size an engine is compared with", () => {
  for (const name of ["mamba1-untied-dtrank", "mamba2-groups", "mamba1-tied"]) {
    it(`${name}: is what an fp16 build writes`, () => {
      const out = join(scratch, `${name}-fp16.mamba`);
      const r = cli(["build", join(fixtureRoot, name), "--out", out]);
      expect(r.code, r.stderr).toBe(0);
      const m = JSON.parse(readFileSync(join(out, "manifest.json"), "utf8"));
      const st = new SafetensorsFile(join(out, "weights.safetensors"));
      const data = [...st.tensors.values()].reduce((a, t) => a + t.end - t.begin, 0);
      st.close();
      expect(float16WeightBytes(m.config)).toBe(data);
    });
  }
});

describe("GPTQ's inverse-Hessian factor", () => {
  it("is upper triangular with Uᵀ U H = I", () => {
    const n = 96;
    let seed = 7;
    const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5;
    const A = Float64Array.from({ length: n * 40 }, rand); // rank 40 < n: the damping makes it definite
    const H = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = i === j ? 0.05 : 0;
        for (let k = 0; k < 40; k++) s += A[i * 40 + k] * A[j * 40 + k];
        H[i * n + j] = s;
      }
    const U = upperCholeskyOfInverse(H, n);
    let below = 0;
    let err = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) below = Math.max(below, Math.abs(U[i * n + j]));
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0; // (Uᵀ U H)[i][j]
        for (let k = 0; k < n; k++) {
          let utu = 0;
          for (let m = 0; m <= Math.min(i, k); m++) utu += U[m * n + i] * U[m * n + k];
          s += utu * H[k * n + j];
        }
        err = Math.max(err, Math.abs(s - (i === j ? 1 : 0)));
      }
    }
    expect(below).toBe(0);
    expect(err).toBeLessThan(1e-8);
  });
});
