// Recipe fp16: the baseline. Matrices are stored in float16; onnxruntime casts them to float32 once
// when the session loads (constant folding), and computes in float32.
import type { Emitter } from "../onnx/export.js";
import { DT, type Graph } from "../onnx/graph.js";
import { packageNames, type WeightFile } from "../onnx/weight-file.js";
import { toHalf } from "../safetensors-writer.js";

export function fp16Emitter(file: WeightFile): Emitter {
  const halves = new Map<Float32Array, Uint16Array>();
  const half = (W: Float32Array) => halves.get(W) ?? halves.set(W, toHalf(W)).get(W)!;
  // one float32 view per graph and matrix (lm_head appears twice in prefill)
  const cast = new Map<string, string>();
  const weight = (g: Graph, name: string, W: Float32Array, dims: number[]) => {
    const key = `${g.name}/${name}`;
    if (!cast.has(key))
      cast.set(
        key,
        g.o("Cast", [g.external(`${name}.w16`, file.fromPackage(`${name}.w16`, packageNames(name), half(W)), dims, DT.FLOAT16)], {
          to: DT.FLOAT,
        }),
      );
    return cast.get(key)!;
  };
  return {
    linear(g, x, name, W, bias, outDim, inDim) {
      const inputs = [x, weight(g, name, W, [outDim, inDim])];
      if (bias) inputs.push(g.external(`${name}.b`, file.add(`${name}.b`, bias), [outDim], DT.FLOAT));
      return g.o("Gemm", inputs, { transB: 1 });
    },
    gather(g, ids, name, W, rows, cols) {
      const table = g.external(`${name}.w16`, file.fromPackage(`${name}.w16`, packageNames(name), half(W)), [rows, cols], DT.FLOAT16);
      return g.o("Cast", [g.o("Gather", [table, ids], { axis: 0 })], { to: DT.FLOAT });
    },
  };
}
