// The fused operators of engines/ort-ops, run by onnxruntime through its C API: each operator
// against the same arithmetic in float64 here, then whole engines' fused graphs (prefill and step)
// against their plain graphs.
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OPS_DOMAIN, OPS_DOMAIN_VERSION } from "../engines/builder/onnx/export.js";
import { DT, Graph } from "../engines/builder/onnx/graph.js";
import { CapiSession } from "../runtime/backends/ort-capi.js";
import { OrtBackend, ortOpsLibraryPath } from "../runtime/backends/ort.js";
import { cli, root } from "./helpers/cli.js";
import { fixtureRoot, relErr } from "./helpers/fixtures.js";
import { opsRequired, skipWhen } from "./helpers/skip.js";
import { expectSameTrace, stepTrace } from "./helpers/trace.js";

const lib = ortOpsLibraryPath();
const noOps = skipWhen(!lib, "the fused operators (engines/ort-ops) are not built or are switched off (npm run build:cpu)", opsRequired);
const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-ort-ops-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A deterministic stream of values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let x = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 31 - 1;
  });
}

const softplus = (v: number) => (v > 20 ? v : Math.log1p(Math.exp(v)));
const silu = (v: number) => v / (1 + Math.exp(-v));

/** Writes a one-node graph of our domain and opens it through the C API with the operators registered. */
async function oneNode(
  name: string,
  op: string,
  inputs: [string, number[]][],
  outputs: number[][],
  attrs: Record<string, { f: number }> = {},
) {
  const g = new Graph(name);
  const ins = inputs.map(([n, dims]) => g.input(n, DT.FLOAT, dims));
  const [a, b] = g.op(op, ins, attrs, 2, OPS_DOMAIN);
  g.output(a, "y", DT.FLOAT, outputs[0]);
  g.output(b, "state_out", DT.FLOAT, outputs[1]);
  const path = join(scratch, `${name}.onnx`);
  writeFileSync(path, g.serialize(21, false, { [OPS_DOMAIN]: OPS_DOMAIN_VERSION }));
  const s = await CapiSession.open(path, 2, lib!);
  if (!s) throw new Error("onnxruntime's C API did not load");
  const feeds = Object.fromEntries(inputs.map(([n, dims]) => [n, s.float32(dims)]));
  return { s, feeds };
}

describe.skipIf(noOps)("fused operators against float64 arithmetic", () => {
  // The step ops update R sequences one token each; the scan ops one sequence over R tokens (one state).
  // A step in place (the state tensor given as both input and output) is how backend ort runs the fused step.
  for (const [op, inPlace] of [
    ["SelectiveStep", false],
    ["SelectiveStep", true],
    ["SelectiveScan", false],
  ] as const)
    it(`${op}${inPlace ? " in place" : ""}: softplus over its whole range (both sides of the threshold 20), the state update, the D skip and the gate`, async () => {
      const scan = op === "SelectiveScan";
      const [R, N, E] = scan ? [6, 3, 70] : [3, 4, 40]; // 70 channels: threads take 64, then 6
      const hDims = [scan ? 1 : R, N, E];
      const { s, feeds } = await oneNode(
        op,
        op,
        [
          ["h", hDims],
          ["dt", [R, E]],
          ["x", [R, E]],
          ["B", [R, N]],
          ["C", [R, N]],
          ["z", [R, E]],
          ["A", [N, E]],
          ["D", [E]],
        ],
        [[R, E], hDims],
      );
      const v = (n: number, seed: number, scale = 1) => values(n, seed).map((x) => x * scale);
      feeds.h.data.set(v(feeds.h.data.length, 1, 3));
      feeds.dt.data.set(Float32Array.from({ length: R * E }, (_, i) => -30 + (60 * i) / (R * E - 1))); // -30 … 30
      feeds.x.data.set(v(R * E, 3, 2));
      feeds.B.data.set(v(R * N, 4));
      feeds.C.data.set(v(R * N, 5));
      feeds.z.data.set(v(R * E, 6, 6));
      feeds.A.data.set(v(N * E, 7).map((a) => -Math.exp(2 * a)));
      feeds.D.data.set(v(E, 8));
      const f = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.data.slice()]));
      const y = s.float32([R, E]);
      const hOut = inPlace ? feeds.h : s.float32(hDims);
      s.run(feeds, { y, state_out: hOut });
      const wantY = new Float64Array(R * E);
      const wantH = Float64Array.from(f.h);
      for (let r = 0; r < R; r++) {
        const h = scan ? wantH : wantH.subarray(r * N * E, (r + 1) * N * E); // updated in place, token by token
        for (let e = 0; e < E; e++) {
          const dt = softplus(f.dt[r * E + e]);
          let acc = 0;
          for (let n = 0; n < N; n++) {
            h[n * E + e] = Math.exp(dt * f.A[n * E + e]) * h[n * E + e] + dt * f.x[r * E + e] * f.B[r * N + n];
            acc += f.C[r * N + n] * h[n * E + e];
          }
          wantY[r * E + e] = (acc + f.D[e] * f.x[r * E + e]) * silu(f.z[r * E + e]);
        }
      }
      expect(relErr(hOut.data, wantH)).toBeLessThanOrEqual(2e-6);
      expect(relErr(y.data, wantY)).toBeLessThanOrEqual(2e-6);
      s.release();
    });

  // P 8, N 16: rows four at a time in vectors of eight; P 6, N 12: two rows left over, and the scalar path.
  const ssdCases = [
    ["SsdStep", 8, 16, false],
    ["SsdStep", 6, 12, false],
    ["SsdStep", 8, 16, true],
    ["SsdScan", 8, 16, false],
    ["SsdScan", 6, 12, false],
  ] as const;
  for (const [op, P, N, inPlace] of ssdCases)
    it(`${op}${inPlace ? " in place" : ""} (head dim ${P}, state ${N}): heads sharing B and C in groups, dt + dt_bias through softplus and the dt clip`, async () => {
      const scan = op === "SsdScan";
      const [R, H, G] = [2, 4, 2];
      const sDims = [scan ? 1 : R, H, P, N];
      const [dtMin, dtMax] = [0.01, 0.4];
      const { s, feeds } = await oneNode(
        op,
        op,
        [
          ["S", sDims],
          ["dt", [R, H]],
          ["x", [R, H * P]],
          ["B", [R, G * N]],
          ["C", [R, G * N]],
          ["dt_bias", [H]],
          ["A", [H]],
          ["D", [H]],
        ],
        [[R, H * P], sDims],
        { dt_min: { f: dtMin }, dt_max: { f: dtMax } },
      );
      feeds.S.data.set(values(feeds.S.data.length, 11).map((x) => 2 * x));
      feeds.dt.data.set(Float32Array.of(-8, -1, 0.5, 3, 25, -3, -0.2, 1)); // below, inside and above the clip
      feeds.x.data.set(values(R * H * P, 13));
      feeds.B.data.set(values(R * G * N, 14));
      feeds.C.data.set(values(R * G * N, 15));
      feeds.dt_bias.data.set(Float32Array.of(0.1, -0.5, 0, -2.5));
      feeds.A.data.set(Float32Array.of(-1, -4, -0.5, -8));
      feeds.D.data.set(Float32Array.of(1, 0.5, -0.25, 2));
      const f = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.data.slice()]));
      const y = s.float32([R, H * P]);
      const sOut = inPlace ? feeds.S : s.float32(sDims);
      s.run(feeds, { y, state_out: sOut });
      const wantY = new Float64Array(R * H * P);
      const wantS = Float64Array.from(f.S);
      for (let r = 0; r < R; r++) {
        const S = scan ? wantS : wantS.subarray(r * H * P * N, (r + 1) * H * P * N);
        for (let h = 0; h < H; h++) {
          const dt = Math.min(Math.max(softplus(f.dt[r * H + h] + f.dt_bias[h]), dtMin), dtMax);
          const g = Math.floor(h / (H / G));
          for (let p = 0; p < P; p++) {
            const xv = f.x[r * H * P + h * P + p];
            let acc = 0;
            for (let n = 0; n < N; n++) {
              const i = (h * P + p) * N + n;
              S[i] = Math.exp(dt * f.A[h]) * S[i] + dt * xv * f.B[(r * G + g) * N + n];
              acc += S[i] * f.C[(r * G + g) * N + n];
            }
            wantY[r * H * P + h * P + p] = acc + f.D[h] * xv;
          }
        }
      }
      expect(relErr(sOut.data, wantS)).toBeLessThanOrEqual(2e-6);
      expect(relErr(y.data, wantY)).toBeLessThanOrEqual(2e-6);
      s.release();
    });

  for (const inPlace of [false, true])
    it(`ConvStep${inPlace ? " in place" : ""}: the window's dot product with bias and silu, and the window moved on by one row`, async () => {
      const [B, K, C] = [3, 4, 24];
      const { s, feeds } = await oneNode(
        "conv",
        "ConvStep",
        [
          ["x", [B, C]],
          ["state", [B, K - 1, C]],
          ["wT", [K, C]],
          ["bias", [C]],
        ],
        [
          [B, C],
          [B, K - 1, C],
        ],
      );
      for (const [i, t] of Object.values(feeds).entries()) t.data.set(values(t.data.length, 20 + i).map((x) => 3 * x));
      const { x, state, wT, bias } = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.data.slice()]));
      const y = s.float32([B, C]);
      const st = inPlace ? feeds.state : s.float32([B, K - 1, C]);
      s.run(feeds, { y, state_out: st });
      const wantY = new Float64Array(B * C);
      const wantS = new Float64Array(B * (K - 1) * C);
      for (let b = 0; b < B; b++)
        for (let c = 0; c < C; c++) {
          const window = [...Array.from({ length: K - 1 }, (_, k) => state[(b * (K - 1) + k) * C + c]), x[b * C + c]];
          wantY[b * C + c] = silu(window.reduce((acc, w, k) => acc + w * wT[k * C + c], bias[c]));
          for (let k = 0; k < K - 1; k++) wantS[(b * (K - 1) + k) * C + c] = window[k + 1];
        }
      expect(relErr(y.data, wantY)).toBeLessThanOrEqual(2e-6);
      expect(Array.from(st.data)).toEqual(Array.from(wantS, Math.fround));
      s.release();
    });

  // MatMulQ4 in each instruction set the library has (MAMBA_EDGE_ORT_OPS_ISA asks for less than the
  // best); shapes with a short last group of outputs (N % 16), a padded last block (K % block) and
  // every tile of rows (8, 2, 1 at a time)
  const q4Shapes = [
    [11, 200, 40, 128],
    [3, 96, 16, 32],
    [8, 256, 64, 128],
    [1, 130, 21, 64],
  ] as const;
  for (const isa of ["best", "avx2", "portable"])
    it(`MatMulQ4 (${isa}): 4-bit weights in MatMulNBits' layout against float64, ${q4Shapes.length} shapes`, () => {
      for (const [M, K, N, block] of q4Shapes) {
        const env = { ...process.env, MAMBA_EDGE_ORT_OPS_ISA: isa };
        const r = spawnSync(process.execPath, [join(root, "test", "helpers", "q4-child.mjs"), ...[M, K, N, block].map(String)], {
          env,
          encoding: "utf8",
        });
        expect(r.status, r.stderr).toBe(0);
        const { x, w, s, y } = JSON.parse(r.stdout) as Record<string, number[]>;
        const blocks = Math.ceil(K / block);
        const want = new Float64Array(M * N);
        for (let m = 0; m < M; m++)
          for (let n = 0; n < N; n++) {
            let acc = 0;
            for (let k = 0; k < K; k++) {
              const byte = w[(n * blocks + Math.floor(k / block)) * (block / 2) + Math.floor((k % block) / 2)];
              acc += ((k % 2 ? byte >> 4 : byte & 15) - 8) * s[n * blocks + Math.floor(k / block)] * x[m * K + k];
            }
            want[m * N + n] = acc;
          }
        expect(relErr(y, want), `M ${M} K ${K} N ${N} block ${block}`).toBeLessThanOrEqual(2e-6);
      }
    });

  it("a shape that does not fit is a one-line error naming the operator, the input and both shapes", async () => {
    const { s, feeds } = await oneNode(
      "bad",
      "ConvStep",
      [
        ["x", [2, 4]],
        ["state", [2, 2, 5]],
        ["wT", [3, 4]],
        ["bias", [4]],
      ],
      [
        [2, 4],
        [2, 2, 4],
      ],
    );
    const run = () => s.run(feeds, { y: s.float32([2, 4]), state_out: s.float32([2, 2, 4]) });
    expect(run).toThrow(/ai\.mamba_edge\.ConvStep: input 1 \(state\) has shape \[2, 2, 5\], expected \[2, 2, 4\]/);
    expect(() => run()).toThrow(/^[^\n]*$/);
    s.release();
  });
});

describe.skipIf(noOps)("engines' fused graphs against their plain graphs", () => {
  const engines = ["mamba1-untied-dtrank", "mamba2-groups", "state-spaces-mamba2"];
  beforeAll(() => {
    for (const name of engines) {
      const r = cli(["build", join(fixtureRoot, name), "--quant", "fp16", "--out", join(scratch, `${name}.mamba`)]);
      expect(r.code, r.stderr).toBe(0);
    }
  });

  for (const name of engines) {
    it(`${name}: the same logits and states through prefill and a changing batch`, async () => {
      const dir = join(scratch, `${name}.mamba`);
      const fused = await OrtBackend.open(dir);
      const plain = await OrtBackend.open(dir, { fused: false });
      expect(fused.info.device).toMatch(/step via the C API, fused operators$/);
      expect(plain.info.device).toMatch(/step via the C API$/);
      // float32 throughout; the fused exp, log and sums round differently from onnxruntime's
      expectSameTrace(await stepTrace(fused, 4), await stepTrace(plain, 4), 1e-5);
    });
  }

  it("falls back to the plain step graph, saying why: switched off, or an engine without the fused graph", async () => {
    const dir = join(scratch, "mamba2-groups.mamba");
    const before = process.env.MAMBA_EDGE_ORT_OPS;
    process.env.MAMBA_EDGE_ORT_OPS = "off";
    try {
      const off = await OrtBackend.open(dir);
      expect(off.info.device).toMatch(/step via the C API \(fused operators switched off by MAMBA_EDGE_ORT_OPS\)$/);
      await off.close();
    } finally {
      if (before === undefined) delete process.env.MAMBA_EDGE_ORT_OPS;
      else process.env.MAMBA_EDGE_ORT_OPS = before;
    }
    // engines built before the fused graphs existed: the files and their manifest entries absent
    const without = async (name: string, files: string[]) => {
      const old = join(scratch, name);
      cpSync(dir, old, { recursive: true });
      const m = JSON.parse(readFileSync(join(old, "manifest.json"), "utf8"));
      for (const f of files) {
        rmSync(join(old, f));
        delete m.files[f];
      }
      writeFileSync(join(old, "manifest.json"), JSON.stringify(m));
      const be = await OrtBackend.open(old);
      const s = be.newState();
      await be.prefill(Int32Array.of(1, 2), s);
      expect((await be.step(Int32Array.of(3), [s])).length).toBe(be.info.vocabSize);
      await be.close();
      return be.info.device;
    };
    expect(await without("old.mamba", ["cpu/step-fused.onnx", "cpu/prefill-fused.onnx"])).toMatch(
      /step via the C API \(no fused step graph in this engine: rebuild it for the fused operators\)$/,
    );
    expect(await without("older-prefill.mamba", ["cpu/prefill-fused.onnx"])).toMatch(
      /step via the C API, fused operators \(prefill unfused: rebuild the engine\)$/,
    );
  });
});
