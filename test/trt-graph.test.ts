// The TensorRT graphs (`build --target trt`) without TensorRT: the graph check (engines/builder/trt/
// check.ts, standing in for onnx.checker) on every recipe and architecture, what each graph holds,
// and the graphs run by onnxruntime with each mamba_edge node replaced by its equivalent of
// engines/native/trt/OPS.md (the fused operators of engines/ort-ops), against the reference forward
// pass and against the package's own cpu graphs.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../engines/builder/build.js";
import { checkModel } from "../engines/builder/trt/check.js";
import { groupFor } from "../engines/builder/quantize.js";
import { substituteForOrt } from "../engines/builder/trt/ort-substitute.js";
import { TRT_DOMAIN } from "../engines/builder/trt/ops.js";
import { MambaModel } from "../engines/model/model.js";
import type { SequenceState } from "../engines/model/state.js";
import { loadManifest, type Recipe } from "../engines/package/manifest.js";
import { CapiSession, type NativeTensor } from "../runtime/backends/ort-capi.js";
import { OrtBackend, ortOpsLibraryPath } from "../runtime/backends/ort.js";
import { cli } from "./helpers/cli.js";
import { fixtureRoot, reference, relErr } from "./helpers/fixtures.js";

const { onnx } = onnxProto;
const lib = ortOpsLibraryPath();
if (!lib) console.log("trt-graph: the onnxruntime runs skip: engines/ort-ops is not built (npm run build:cpu)");
const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-trt-graph-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const calibTokens = join(scratch, "calib-tokens.txt");
writeFileSync(calibTokens, Array.from({ length: 4096 }, (_, i) => (i * 7919 + 11) % 97).join(" "));

const recipes = ["fp16", "w8a8", "w8a8-naive", "w4a16", "w4a8"] as const;
// the ort engine tests' tolerances against the float reference (engine.test.ts: fp16; recipes.test.ts)
const bound: Record<Recipe, number> = { fp16: 5e-3, w8a8: 0.2, "w8a8-naive": 0.2, w4a16: 0.6, w4a8: 0.7 };
const int8Acts = (r: Recipe) => r === "w8a8" || r === "w8a8-naive" || r === "w4a8";
const rotates = (r: Recipe) => r === "w8a8" || r === "w4a8";

const pkg = (name: string, recipe: Recipe) => join(scratch, `${name}-${recipe}.mamba`);

function nodes(path: string) {
  return onnx.ModelProto.decode(readFileSync(path)).graph!.node!;
}
const attr = (n: onnxProto.onnx.INodeProto, name: string) => {
  const a = n.attribute?.find((x) => x.name === name);
  return a ? (a.type === 1 ? a.f : Number(a.i)) : undefined;
};

describe("mamba-edge build --target", () => {
  it("trt alone writes the TensorRT graphs and no cpu graphs; an unknown target is refused in one line", async () => {
    const out = join(scratch, "cli-trt.mamba");
    const r = cli(["build", join(fixtureRoot, "mamba1-tied"), "--target", "trt", "--out", out]);
    expect(r.code, r.stderr).toBe(0);
    const m = loadManifest(out); // every listed file's sha256 verified
    expect(m.targets).toEqual(["trt"]);
    expect(Object.keys(m.files).sort()).toEqual(["trt/prefill.onnx", "trt/step.onnx", "trt/weights.bin", "weights.safetensors"]);
    expect((m as unknown as { trt: unknown }).trt).toEqual({ domain: "mamba_edge", opsVersion: 1, opset: 21, pluginLimits: [] });
    await expect(OrtBackend.open(out)).rejects.toThrow(/built without the cpu target \(targets: trt\)/);
    const bad = cli(["build", join(fixtureRoot, "mamba1-tied"), "--target", "cpu,gpu", "--out", join(scratch, "bad.mamba")]);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split("\n")).toEqual(['mamba-edge: --target: expected cpu, trt or both (comma-separated), found "gpu"']);
  });
});

for (const name of ["mamba1-untied-dtrank", "mamba2-groups"]) {
  describe(`trt graphs of ${name}`, () => {
    const model = MambaModel.load(join(fixtureRoot, name));
    const c = model.config;
    const mamba1 = c.arch === "mamba1";
    beforeAll(async () => {
      for (const recipe of recipes)
        await build({
          modelDir: join(fixtureRoot, name),
          recipe,
          out: pkg(name, recipe),
          calibTokens: recipe === "fp16" ? undefined : calibTokens,
          calibSamples: 8,
          calibLength: 64,
          targets: ["cpu", "trt"],
        });
    });

    for (const recipe of recipes) {
      it(`${recipe}: passes the graph check; custom nodes, explicit quantization and dynamic I/O as the recipe has them`, () => {
        const m = loadManifest(pkg(name, recipe));
        expect(m.targets).toEqual(["cpu", "trt"]);
        for (const f of ["trt/step.onnx", "trt/prefill.onnx", "trt/weights.bin", "cpu/step.onnx"]) expect(m.files[f]).toBeDefined();
        const L = c.nLayer;
        const linears = mamba1 ? 3 : 2; // quantized per layer: in_proj, x_proj (Mamba-1), out_proj
        const convC = mamba1 ? c.dInner : c.dInner + 2 * c.nGroups * c.dState;
        const ssm = mamba1 ? [c.dInner, c.dState] : [c.nHeads, c.headDim, c.dState];
        for (const mode of ["step", "prefill"] as const) {
          const path = join(pkg(name, recipe), "trt", `${mode}.onnx`);
          const r = checkModel(readFileSync(path), join(pkg(name, recipe), "trt"));
          expect(r.problems).toEqual([]);
          const x = (op: string) => r.ops[`${TRT_DOMAIN}.${op}`] ?? 0;
          expect(x("RmsNormQuant")).toBe(L);
          expect(x(mode === "step" ? "ConvStep" : "ConvPrefill")).toBe(L);
          expect(x(mamba1 ? (mode === "step" ? "SelectiveStep" : "SelectiveScan") : mode === "step" ? "SsdStep" : "SsdScan")).toBe(L);
          expect(x("HadamardQuant")).toBe(mamba1 && !rotates(recipe) ? 0 : L);
          for (const absent of ["Scan", "Loop", "MatMulInteger", "QuantizeLinear", "Conv"]) expect(r.ops[absent]).toBeUndefined();
          // the graph check propagated the symbolic dims through every node to these declarations
          const B = "batch";
          expect(r.inputs.tokens).toEqual({ type: 6, shape: mode === "step" ? [B] : [B, "seq"] });
          for (let l = 0; l < L; l++) {
            expect(r.inputs[`conv_${l}`].shape).toEqual([B, convC, c.dConv - 1]);
            expect(r.outputs[`ssm_${l}_out`].shape).toEqual([B, ...ssm]);
          }
          expect(r.outputs[mode === "step" ? "logits" : "last_logits"].shape).toEqual([B, c.vocabSize]);
          const all = nodes(path);
          const dq = all.filter((n) => n.opType === "DequantizeLinear");
          const init = new Map(onnx.ModelProto.decode(readFileSync(path)).graph!.initializer!.map((t) => [t.name!, t]));
          const weightDq = dq.filter((n) => init.has(n.input![0]));
          const types = weightDq.map((n) => init.get(n.input![0])!.dataType);
          if (recipe === "fp16") expect(dq).toEqual([]);
          else if (recipe.startsWith("w8")) {
            expect(types).toEqual(Array(L * linears).fill(8 - 5)); // INT8, per output channel (axis 0)
            for (const n of weightDq) expect(attr(n, "axis")).toBe(0);
          } else {
            expect(types).toEqual(Array(L * linears).fill(22)); // INT4, blocked along the input axis
            // the builder's group for the width, cut to the width where it does not divide it
            const width = (n: (typeof weightDq)[number]) => init.get(n.input![0])!.dims![0] as number;
            for (const n of weightDq) expect(attr(n, "block_size")).toBe(Math.min(groupFor(width(n)), width(n)));
          }
          // int8 activations: each quantized linear reads a plugin's int8 output through a per-tensor DequantizeLinear
          expect(dq.length - weightDq.length).toBe(int8Acts(recipe) ? L * linears : 0);
          const norm = all.filter((n) => n.opType === "RmsNormQuant");
          for (const n of norm) expect(attr(n, "out_int8") ?? 0).toBe(int8Acts(recipe) ? 1 : 0);
          expect(norm.map((n) => attr(n, "has_residual"))).toEqual(Array.from({ length: L }, (_, l) => (l ? 1 : 0)));
        }
      });

      it.skipIf(!lib)(
        `${recipe}: run by onnxruntime with the plugins substituted, batch 2: step and prefill logits and states against the reference and the cpu graphs`,
        async () => {
          const dir = pkg(name, recipe);
          const { ids } = reference(name);
          const seqs = [ids, [...ids].reverse()];
          const V = c.vocabSize;
          const tol = bound[recipe];
          const step = await TrtRun.open(dir, "step", c, lib!);
          const prefill = await TrtRun.open(dir, "prefill", c, lib!);

          // step: both sequences token by token
          const ref = seqs.map(() => model.newState());
          const got: number[] = [];
          const want: number[] = [];
          for (let t = 0; t < ids.length; t++) {
            const tok = seqs.map((s) => s[t]);
            got.push(...step.run(tok, "logits"));
            want.push(...model.step(Int32Array.from(tok), ref));
          }
          const stepErr = relErr(got, want);
          expect(stepErr).toBeLessThanOrEqual(tol);
          expect(relErr(step.states(), states(ref))).toBeLessThanOrEqual(tol);
          // the package's cpu step (the ort backend, fused operators): the same quantized weights and scales
          const cpu = await OrtBackend.open(dir);
          const cs = seqs.map(() => cpu.newState());
          const cpuLogits: number[] = [];
          for (let t = 0; t < ids.length; t++) cpuLogits.push(...(await cpu.step(Int32Array.from(seqs.map((s) => s[t])), cs)));
          const cpuErr = relErr(got, cpuLogits);
          await cpu.close();

          // prefill in two chunks, the states carried from the first into the second
          const half = Math.floor(ids.length / 2);
          const pref = seqs.map(() => model.newState());
          const last: number[] = [];
          const wantLast: number[] = [];
          for (const [a, b] of [
            [0, half],
            [half, ids.length],
          ]) {
            last.push(
              ...prefill.run(
                seqs.flatMap((s) => s.slice(a, b)),
                "last_logits",
                b - a,
              ),
            );
            for (const [k, s] of seqs.entries()) wantLast.push(...model.prefill(s.slice(a, b), pref[k]));
          }
          const prefillErr = relErr(last, wantLast);
          expect(prefillErr).toBeLessThanOrEqual(tol);
          expect(relErr(prefill.states(), states(pref))).toBeLessThanOrEqual(tol);
          // the same graph's own step agrees with its prefill at the last position
          expect(relErr(last.slice(-2 * V), got.slice(-2 * V))).toBeLessThanOrEqual(1e-4);
          console.log(
            `trt-graph ${name} ${recipe}: max rel err vs reference step ${stepErr.toExponential(2)}, prefill ${prefillErr.toExponential(2)}; vs cpu graphs ${cpuErr.toExponential(2)}`,
          );
          // the same arithmetic up to float32 rounding, but for w4a8: the cpu graph's MatMulNBits
          // (accuracy level 4) rounds its int8 activations again, per block, inside the product
          expect(cpuErr).toBeLessThanOrEqual(recipe === "w4a8" ? 0.1 : 1e-5);
          step.release();
          prefill.release();
        },
      );
    }
  });
}

/** All sequences' states, layer by layer: conv then SSM, in the TensorRT graphs' layout (SequenceState's). */
function states(ss: SequenceState[]): Float32Array {
  const parts: Float32Array[] = [];
  const L = ss[0].shape.nLayer;
  for (let l = 0; l < L; l++) for (const get of ["conv", "ssm"] as const) for (const s of ss) parts.push(s[get](l));
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

/** A trt graph with its plugins substituted, run through onnxruntime's C API; carries its states between runs. */
class TrtRun {
  private conv: NativeTensor<Float32Array>[] = [];
  private ssm: NativeTensor<Float32Array>[] = [];
  private readonly convDims: number[];
  private readonly ssmDims: number[];
  private constructor(
    private readonly s: CapiSession,
    private readonly c: MambaModel["config"],
    private readonly batch: number,
  ) {
    const convC = c.arch === "mamba1" ? c.dInner : c.dInner + 2 * c.nGroups * c.dState;
    const ssm = c.arch === "mamba1" ? [c.dInner, c.dState] : [c.nHeads, c.headDim, c.dState];
    this.convDims = [batch, convC, c.dConv - 1];
    this.ssmDims = [batch, ...ssm];
    for (let l = 0; l < c.nLayer; l++) {
      this.conv.push(s.float32(this.convDims));
      this.ssm.push(s.float32(this.ssmDims));
    }
  }

  static async open(dir: string, mode: "step" | "prefill", c: MambaModel["config"], lib: string, batch = 2): Promise<TrtRun> {
    const path = join(dir, "trt", `${mode}.ort.onnx`); // beside trt/weights.bin, which it reads
    writeFileSync(path, substituteForOrt(readFileSync(join(dir, "trt", `${mode}.onnx`))));
    const s = await CapiSession.open(path, 2, lib);
    if (!s) throw new Error("onnxruntime's C API did not load");
    return new TrtRun(s, c, batch);
  }

  /** tokens: batch × seq (seq = 1 for the step); returns the logits output */
  run(tokens: number[], output: string, seq = 1): Float32Array {
    const s = this.s;
    const tok = s.int64(output === "logits" ? [this.batch] : [this.batch, seq]);
    tok.data.set(tokens.map(BigInt));
    const logits = s.float32([this.batch, this.c.vocabSize]);
    const ins: Record<string, { value: unknown }> = { tokens_i64: tok };
    const outs: Record<string, { value: unknown }> = { [output]: logits };
    const next = this.conv.map(() => [s.float32(this.convDims), s.float32(this.ssmDims)]);
    for (let l = 0; l < this.c.nLayer; l++) {
      ins[`conv_${l}`] = this.conv[l];
      ins[`ssm_${l}`] = this.ssm[l];
      outs[`conv_${l}_out`] = next[l][0];
      outs[`ssm_${l}_out`] = next[l][1];
    }
    s.run(ins as never, outs as never);
    for (let l = 0; l < this.c.nLayer; l++) {
      this.conv[l].data.set(next[l][0].data);
      this.ssm[l].data.set(next[l][1].data);
    }
    return logits.data.slice();
  }

  states(): Float32Array {
    const parts: Float32Array[] = [];
    for (let l = 0; l < this.c.nLayer; l++)
      for (const t of [this.conv[l], this.ssm[l]]) {
        const per = t.data.length / this.batch;
        for (let b = 0; b < this.batch; b++) parts.push(t.data.subarray(b * per, (b + 1) * per));
      }
    const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
    return out;
  }

  release(): void {
    this.s.release();
  }
}

describe("the graph check", () => {
  const name = "mamba2-groups";
  const path = () => join(pkg(name, "w8a8"), "trt", "step.onnx");
  /** problems of the exported step graph after `edit` */
  const broken = (edit: (g: onnxProto.onnx.IGraphProto, m: onnxProto.onnx.IModelProto) => void) => {
    const m = onnx.ModelProto.decode(readFileSync(path()));
    edit(m.graph!, m);
    return checkModel(onnx.ModelProto.encode(m).finish()).problems.join("\n");
  };
  const find = (g: onnxProto.onnx.IGraphProto, f: (n: onnxProto.onnx.INodeProto) => boolean) => g.node!.find(f)!;
  beforeAll(async () => {
    if (!loadManifestSafe(pkg(name, "w8a8")))
      await build({
        modelDir: join(fixtureRoot, name),
        recipe: "w8a8",
        out: pkg(name, "w8a8"),
        calibTokens,
        calibSamples: 8,
        calibLength: 64,
        targets: ["cpu", "trt"],
      });
  });

  it("finds each kind of fault in an otherwise valid graph", () => {
    expect(broken(() => {})).toBe("");
    expect(broken((g) => (find(g, (n) => n.opType === "SsdStep").opType = "SsdStep2"))).toMatch(
      /no operator SsdStep2 in the mamba_edge contract/,
    );
    expect(broken((g) => find(g, (n) => n.opType === "ConvStep").input!.pop())).toMatch(/4 inputs, the contract has 5/);
    expect(broken((g) => (find(g, (n) => n.opType === "Split").opType = "MatMulInteger"))).toMatch(
      /operator MatMulInteger is not one these graphs may use/,
    );
    expect(broken((g) => g.node!.push(g.node!.shift()!))).toMatch(/is not defined before it \(nodes must be in topological order\)/);
    expect(broken((g) => (g.output!.find((o) => o.name === "logits")!.type!.tensorType!.shape!.dim![1] = { dimValue: 7 }))).toMatch(
      /graph output logits: computed as FLOAT\[batch, 101\], declared FLOAT\[batch, 7\]/,
    );
    expect(broken((g) => (g.node![1].name = g.node![0].name))).toMatch(/the node name .* is used twice/);
    expect(broken((_, m) => m.opsetImport!.push({ domain: "com.microsoft", version: 1 }))).toMatch(/domain "com.microsoft" is imported/);
    // TensorRT's quantization rules: int8 weights' per-channel scale, an attribute of the wrong type
    expect(
      broken((g) => {
        const dq = find(g, (n) => n.opType === "DequantizeLinear" && /\.w8$/.test(n.input![0]));
        dq.attribute = [{ name: "axis", type: 2, i: 1 }];
      }),
    ).toMatch(/per-axis scale FLOAT\[\d+\] for axis 1/);
    expect(broken((g) => (find(g, (n) => n.opType === "Gemm").attribute = [{ name: "transB", type: 1, f: 1 }]))).toMatch(
      /attribute transB of type 1, expected 2/,
    );
  });

  it("refuses the cpu graphs, which TensorRT's parser cannot take, saying why", () => {
    const problems = checkModel(readFileSync(join(pkg(name, "w8a8"), "cpu", "step-fused.onnx"))).problems.join("\n");
    expect(problems).toMatch(/domain "com.microsoft" is imported/);
    expect(problems).toMatch(/operator MatMulInteger is not one these graphs may use/);
    expect(problems).toMatch(/domain "ai.mamba_edge" is imported/);
  });
});

function loadManifestSafe(dir: string): boolean {
  try {
    loadManifest(dir);
    return true;
  } catch {
    return false;
  }
}
