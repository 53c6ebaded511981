// The embedding table and lm_head in 4 bits (Quamba2's memory saving: on the small models they are
// most of the bytes): round-to-nearest in groups of up to 128 along d_model. A gather reads rows of
// the packed table (com.microsoft GatherBlockQuantized); lm_head is a 4-bit matrix product over the
// same bytes when the two are tied.
import type { Emitter } from "../onnx/export.js";
import { DT } from "../onnx/graph.js";
import { packageNames, type WeightFile } from "../onnx/weight-file.js";
import { type GroupScales, groupFor, packNBits, quantizeInt4Gptq, quantizeInt4Rtn } from "../quantize.js";
import type { OutTensor } from "../safetensors-writer.js";
import { UserError } from "../../errors.js";
import { int4Linear } from "./quantized.js";

export const EMBEDDINGS = ["fp16", "q4"] as const;
export type EmbeddingFormat = (typeof EMBEDDINGS)[number];

export interface Q4Table {
  packed: Uint8Array; // (rows, cols / group, group / 2): MatMulNBits' layout, rows of the table contiguous
  scale: Float32Array; // (rows, cols / group)
  group: number;
}

/** The largest group of 128, 64 or 32 that divides d_model. */
export function tableGroup(cols: number): number {
  if (cols % 32 !== 0) throw new UserError(`--embedding q4: d_model ${cols} is not a multiple of 32`);
  return groupFor(cols);
}

/**
 * With `xtx` (lm_head's calibration inputs, XᵀX) by GPTQ, which weighs each column's error by how
 * lm_head's inputs use it; else round-to-nearest.
 */
export function quantizeTable(W: Float32Array, rows: number, cols: number, scales: GroupScales, xtx?: Float64Array): Q4Table {
  const group = tableGroup(cols);
  const q = xtx ? quantizeInt4Gptq(W, rows, cols, group, xtx, { scales }) : quantizeInt4Rtn(W, rows, cols, group, scales);
  return { packed: packNBits(q, rows, cols), scale: q.scale, group };
}

/** weights.safetensors' entries of a 4-bit table: `name` (U8, packed) and `name.scale`. */
export function tableTensors(name: string, t: Q4Table, rows: number, cols: number): [string, OutTensor][] {
  return [
    [name, { dtype: "U8", shape: [rows, cols / t.group, t.group / 2], data: t.packed }],
    [`${name}.scale`, { dtype: "F32", shape: [rows * (cols / t.group)], data: t.scale }],
  ];
}

/** `inner` with the embedding gathered from, and lm_head computed over, 4-bit tables. */
export function q4TableEmitter(inner: Emitter, file: WeightFile, embedding: Q4Table, lmHead: Q4Table): Emitter {
  return {
    ...inner,
    gather(g, ids, name, _W, rows, cols) {
      const t = embedding;
      const data = g.external(`${name}.q4`, file.fromPackage(`${name}.q4`, packageNames(name), t.packed), [rows, cols / 2], DT.UINT8);
      const scale = g.external(
        `${name}.s`,
        file.fromPackage(`${name}.s`, packageNames(name, ".scale"), t.scale),
        [rows, cols / t.group],
        DT.FLOAT,
      );
      return g.o(
        "GatherBlockQuantized",
        [data, ids, scale],
        { gather_axis: 0, quantize_axis: 1, block_size: t.group, bits: 4 },
        "com.microsoft",
      );
    },
    linear(g, x, name, W, bias, outDim, inDim, form) {
      if (name !== "lm_head") return inner.linear(g, x, name, W, bias, outDim, inDim, form);
      return int4Linear(g, file, x, name, lmHead.packed, lmHead.scale, outDim, inDim, lmHead.group, form?.fusedStep === true, false);
    },
  };
}
