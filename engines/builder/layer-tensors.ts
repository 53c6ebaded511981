// A block's tensors as weights.safetensors holds them (the runner reads these names): matrices in
// the recipe's precision, everything else float32. Quantized recipes add their own matrices (int8,
// or packed 4-bit with scales) as they quantize.
import type { Recipe } from "../package/manifest.js";
import type { ModelConfig } from "../model/config.js";
import type { Mamba1Layer, Mamba2Layer } from "../model/weights.js";
import { toHalf, type OutTensor } from "./safetensors-writer.js";

const isMatrix = (name: string) => /(in_proj|out_proj|x_proj)\.weight$/.test(name);

/** Adds block l's tensors `layers.<l>.*` to t: float16 matrices under fp16, none of the quantized ones otherwise. */
export function layerTensors(t: Map<string, OutTensor>, c: ModelConfig, l: number, L: Mamba1Layer | Mamba2Layer, recipe: Recipe): void {
  const matrix = (name: string, data: Float32Array, shape: number[]) => {
    if (recipe === "fp16" || !isMatrix(name)) t.set(name, { dtype: "F16", shape, data: toHalf(data) });
  };
  const vector = (name: string, data: Float32Array | null, shape: number[]) => {
    if (data) t.set(name, { dtype: "F32", shape, data });
  };
  const p = `layers.${l}.`;
  vector(`${p}norm`, L.norm, [c.dModel]);
  vector(`${p}in_proj.bias`, L.inProjBias, [L.inProjBias?.length ?? 0]);
  vector(`${p}conv.weight`, L.convW, [L.convW.length / c.dConv, c.dConv]);
  vector(`${p}conv.bias`, L.convB, [L.convB?.length ?? 0]);
  vector(`${p}A`, L.A, c.arch === "mamba1" ? [c.dInner, c.dState] : [c.nHeads]);
  vector(`${p}D`, L.D, [L.D.length]);
  vector(`${p}out_proj.bias`, L.outProjBias, [c.dModel]);
  matrix(`${p}in_proj.weight`, L.inProj, [L.inProj.length / c.dModel, c.dModel]);
  matrix(`${p}out_proj.weight`, L.outProj, [c.dModel, c.dInner]);
  if (c.arch === "mamba1") {
    const m = L as Mamba1Layer;
    matrix(`${p}x_proj.weight`, m.xProj, [c.dtRank + 2 * c.dState, c.dInner]);
    matrix(`${p}dt_proj.weight`, m.dtProj, [c.dInner, c.dtRank]);
    vector(`${p}dt_proj.bias`, m.dtProjBias, [c.dInner]);
  } else {
    const m = L as Mamba2Layer;
    vector(`${p}dt_bias`, m.dtBias, [c.nHeads]);
    vector(`${p}gated_norm`, m.gatedNorm, [c.dInner]);
  }
}
