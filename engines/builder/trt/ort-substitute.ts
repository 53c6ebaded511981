// The TensorRT graphs made runnable by onnxruntime, for checking what they compute without
// TensorRT: each mamba_edge node is replaced by the equivalent of engines/native/trt/OPS.md ("ort:"
// under each op): the fused operators of engines/ort-ops (domain ai.mamba_edge) where one exists,
// around them the transposes between the plugins' state layouts and theirs, and standard ONNX for
// the rest (the prefill conv, the norms, the rotation, the quantization). onnxruntime's prefill
// operators take one sequence, so the prefill scans run inside an ONNX Scan over the batch. Every
// standard node of the graph is kept as it is, INT4 block DequantizeLinear included (onnxruntime
// 1.30 runs it on the CPU; see the note where it is kept from being fused).
import onnxProto from "onnx-proto";
import type { ModelConfig } from "../../model/config.js";
import { depthwiseConv, gatedNorm, OPS_DOMAIN, OPS_DOMAIN_VERSION, rmsNorm, silu, split } from "../onnx/export.js";
import { DT, Graph } from "../onnx/graph.js";
import { sylvester } from "../hadamard.js";
import { mixMatrix, rotateBlocks, rotateWhole } from "../recipes/rotate.js";
import { checkModel } from "./check.js";
import { CUSTOM_OPS, TRT_DOMAIN, withDefaults } from "./ops.js";

const { onnx } = onnxProto;
const num = (v: unknown) => (typeof v === "object" && v !== null && "toNumber" in v ? (v as { toNumber(): number }).toNumber() : Number(v));

/**
 * Returns the model with every mamba_edge node substituted, its opset imports those of onnxruntime's
 * operators, and its int32 `tokens` input taken as int64 (cast to int32 first), as the C API tensors are.
 */
export function substituteForOrt(bytes: Uint8Array): Uint8Array {
  const m = onnx.ModelProto.decode(bytes);
  const src = m.graph!;
  // the sizes the expansions need, from the graph check's shape inference
  const checked = checkModel(bytes);
  if (checked.problems.length) throw new Error(`ort substitution of a graph that fails the check: ${checked.problems[0]}`);
  const size = (name: string, axis: number) => {
    const d = checked.values.get(name)?.shape?.at(axis);
    if (typeof d !== "number") throw new Error(`ort substitution: the size of ${name} along axis ${axis} is not known`);
    return d;
  };

  const g = new Graph("ort");
  let zpCount = 0;
  const zp = (n?: number) => g.constant(`ort/zp${zpCount++}`, new Int8Array(n ?? 1), n === undefined ? [] : [n], DT.INT8);
  const quant = (v: string, s: number) => g.o("QuantizeLinear", [v, g.floats([s], []), zp()]);
  const fake = (v: string, s: number) => (s > 0 ? g.o("DequantizeLinear", [quant(v, s), g.floats([s], [])]) : v);
  // an output of `ACT` or int8: the plugins' `scale` / `out_int8` attribute pair
  const finish = (v: string, s: number, int8: number) => (int8 ? quant(v, s) : fake(v, s));
  const T = (v: string, perm: number[]) => g.o("Transpose", [v], { perm });

  const own = new Set<onnxProto.onnx.INodeProto>(src.node ?? []); // nodes of the graph itself (and its own kept as they are)
  const tokensIn = src.input!.find((i) => i.name === "tokens");
  if (tokensIn?.type?.tensorType?.elemType === DT.INT32) {
    g.push({
      opType: "Cast",
      input: ["tokens_i64"],
      output: ["tokens"],
      name: "tokens_cast",
      attribute: [{ name: "to", type: 2, i: DT.INT32 }],
    });
  }

  for (const [k, node] of (src.node ?? []).entries()) {
    if ((node.domain ?? "") !== TRT_DOMAIN) {
      const x = checked.values.get(node.input?.[0] ?? "");
      if (node.opType === "DequantizeLinear" && x?.type === DT.INT4) {
        // onnxruntime's optimizer turns DequantizeLinear + MatMul into MatMulNBits, which computes
        // with activations rounded to int8 (its default accuracy level; a Mul by 1 or Add of 0 in
        // between does not stop it): max(w, -FLT_MAX), which leaves every value as it is, does,
        // so this run computes what the graph says
        const out = node.output![0];
        const copy = { ...node, output: [`${out}/dq`] };
        const keep = { opType: "Max", input: [`${out}/dq`, g.floats([-3.4e38], [])], output: [out], name: `${node.name}/keep` };
        own.add(copy).add(keep);
        g.push(copy);
        g.push(keep);
      } else g.push(node);
      continue;
    }
    const op = node.opType!;
    const spec = CUSTOM_OPS[op];
    const a = withDefaults(spec, Object.fromEntries((node.attribute ?? []).map((x) => [x.name!, x.type === 1 ? x.f : num(x.i)])));
    const ins = node.input!;
    let outs: string[];
    switch (op) {
      case "ConvStep":
      case "ConvPrefill": {
        const [x, state, w, bias, qscale] = ins;
        const C = size(w, 0),
          K = size(w, 1);
        let y: string, stateOut: string;
        if (op === "ConvStep") {
          [y, stateOut] = g.op("ConvStep", [x, T(state, [0, 2, 1]), T(w, [1, 0]), bias], {}, 2, OPS_DOMAIN);
          stateOut = T(stateOut, [0, 2, 1]);
        } else {
          const window = g.o("Concat", [T(state, [0, 2, 1]), x], { axis: 1 }); // (B, K-1+T, C)
          y = silu(g, g.o("Add", [T(depthwiseConv(g, window, w, C, K), [0, 2, 1]), bias]));
          stateOut = T(g.o("Slice", [window, g.ints([-(K - 1)]), g.ints([2 ** 62]), g.ints([1])]), [0, 2, 1]);
        }
        // per-channel fake quantization where qscale > 0
        const on = g.o("Greater", [qscale, g.floats([0], [])]);
        const qs1 = g.o("Where", [on, qscale, g.floats([1], [])]);
        const zc = zp(C);
        const fq = g.o("DequantizeLinear", [g.o("QuantizeLinear", [y, qs1, zc], { axis: -1 }), qs1, zc], { axis: -1 });
        outs = [g.o("Where", [on, fq, y]), stateOut];
        if (a.int8_scale > 0) outs.push(quant(y, a.int8_scale));
        break;
      }
      case "SelectiveStep":
      case "SelectiveScan": {
        const [state, xdbl, x, z, dtW, dtB, A, D] = ins;
        const E = size(dtW, 0),
          R = size(dtW, 1),
          N = size(A, 1);
        const [dtLow, Bq, Cq] = split(g, xdbl, [R, N, N]);
        const Bm = fake(Bq, a.b_scale);
        const Cm = fake(Cq, a.c_scale);
        const dt = g.o("Add", [g.o("MatMul", [dtLow, T(g.o("Cast", [dtW], { to: DT.FLOAT }), [1, 0])]), dtB]);
        const At = T(A, [1, 0]); // (N, E)
        let y: string, h: string;
        if (op === "SelectiveStep") {
          [y, h] = g.op("SelectiveStep", [T(state, [0, 2, 1]), dt, x, Bm, Cm, z, At, D], {}, 2, OPS_DOMAIN);
          h = T(h, [0, 2, 1]);
        } else {
          const body = new Graph(`ort_scan${k}`);
          const bi = (name: string, shape: (number | string)[]) => body.input(name, DT.FLOAT, shape);
          const [hs, ds, xs, bs, cs, zs] = [
            bi("h", [E, N]),
            bi("dt", ["seq", E]),
            bi("x", ["seq", E]),
            bi("B", ["seq", N]),
            bi("C", ["seq", N]),
            bi("z", ["seq", E]),
          ];
          const h0 = body.o("Unsqueeze", [body.o("Transpose", [hs], { perm: [1, 0] }), body.ints([0])]); // (1, N, E)
          const [yb, hb] = body.op("SelectiveScan", [h0, ds, xs, bs, cs, zs, At, D], {}, 2, OPS_DOMAIN);
          body.output(yb, "y", DT.FLOAT, ["seq", E]);
          body.output(body.o("Transpose", [body.o("Squeeze", [hb, body.ints([0])])], { perm: [1, 0] }), "h_out", DT.FLOAT, [E, N]);
          [y, h] = g.op("Scan", [state, dt, x, Bm, Cm, z], { body: body.proto(), num_scan_inputs: 6 }, 2);
        }
        outs = [finish(y, a.out_scale, a.out_int8), h];
        break;
      }
      case "SsdStep":
      case "SsdScan": {
        const [state, dt, xbc, dtBias, A, D, z] = ins;
        const H = size(state, 1),
          P = size(state, 2),
          N = size(state, 3);
        const GN = size(xbc, -1) - H * P; // B and C after x
        const attrs = { dt_min: { f: a.dt_min }, dt_max: { f: a.dt_max } };
        let y: string, s: string;
        if (op === "SsdStep") {
          const [x, Bm, Cm] = split(g, xbc, [H * P, GN / 2, GN / 2]);
          [y, s] = g.op("SsdStep", [state, dt, x, Bm, Cm, dtBias, A, D], attrs, 2, OPS_DOMAIN);
        } else {
          const body = new Graph(`ort_ssd${k}`);
          const Sb = body.input("S", DT.FLOAT, [H, P, N]);
          const db = body.input("dt", DT.FLOAT, ["seq", H]);
          const xb = body.input("xbc", DT.FLOAT, ["seq", H * P + GN]);
          const [x, Bm, Cm] = split(body, xb, [H * P, GN / 2, GN / 2]);
          const S0 = body.o("Unsqueeze", [Sb, body.ints([0])]);
          const [yb, sb] = body.op("SsdScan", [S0, db, x, Bm, Cm, dtBias, A, D], attrs, 2, OPS_DOMAIN);
          body.output(yb, "y", DT.FLOAT, ["seq", H * P]);
          body.output(body.o("Squeeze", [sb, body.ints([0])]), "S_out", DT.FLOAT, [H, P, N]);
          [y, s] = g.op("Scan", [state, dt, xbc], { body: body.proto(), num_scan_inputs: 3 }, 2);
        }
        outs = [a.gate ? g.o("Mul", [y, silu(g, z)]) : y, s];
        break;
      }
      case "RmsNormQuant": {
        const [x, w, residual] = ins;
        const h = a.has_residual ? g.o("Add", [x, residual]) : x;
        outs = [finish(rmsNorm(g, h, w, g.floats([a.eps], [])), a.scale, a.out_int8), ...(a.has_residual ? [h] : [])];
        break;
      }
      case "HadamardQuant": {
        const y = ins[0];
        const z = a.gate ? ins[1] : null;
        const w = a.group_size > 0 ? ins[ins.length - 1] : null;
        const E = size(y, -1);
        let v = y;
        if (z) {
          const c = { gatedNormGroup: a.group_size, normBeforeGate: a.norm_before_gate === 1, dInner: E, normEps: a.eps } as ModelConfig;
          v = gatedNorm(g, c, y, z, () => w!);
        }
        if (a.hadamard_block > 1) {
          const hb = a.hadamard_block;
          const Hb = g.floats(sylvester(hb), [hb, hb]);
          const m = a.hadamard_factor;
          v = m > 1 ? rotateWhole(g, v, m, hb, Hb, g.floats(mixMatrix(m), [m, m])) : rotateBlocks(g, v, E, hb, Hb);
        }
        outs = [finish(v, a.scale, a.out_int8)];
        break;
      }
      default:
        throw new Error(`ort substitution: no mapping for ${TRT_DOMAIN}.${op}`);
    }
    outs.forEach((o, i) => g.push({ opType: "Identity", input: [o], output: [node.output![i]], name: `${node.name}_out${i}` }));
  }

  const built = g.proto();
  // the expansion's node names after the graph's own, which they would repeat
  for (const n of built.node ?? []) if (!own.has(n)) n.name = `ort/${n.name}`;
  const inputs = (src.input ?? []).map((vi) =>
    vi.name === "tokens" && vi.type?.tensorType?.elemType === DT.INT32
      ? { ...vi, name: "tokens_i64", type: { tensorType: { ...vi.type.tensorType, elemType: DT.INT64 } } }
      : vi,
  );
  const model = onnx.ModelProto.create({
    irVersion: 10,
    producerName: "mamba-edge (trt graph for onnxruntime)",
    opsetImport: [
      { domain: "", version: 21 },
      { domain: OPS_DOMAIN, version: OPS_DOMAIN_VERSION },
    ],
    graph: {
      name: src.name,
      node: built.node,
      initializer: [...(src.initializer ?? []), ...(built.initializer ?? [])],
      input: inputs,
      output: src.output,
    },
  });
  return onnx.ModelProto.encode(model).finish();
}
