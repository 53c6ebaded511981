// The Hadamard rotation of out_proj's input as graph nodes: x (rows, E) -> x · blockdiag(H), with
// H the normalized Hadamard matrix of the largest power-of-two block dividing E. H lives in the
// engine's weight file, so the package's graphs share one copy (inline, each graph held its own MB).
import { DT, type Graph } from "../onnx/graph.js";
import type { WeightFile } from "../onnx/weight-file.js";
import { hadamard, hadamardBlock } from "../quantize.js";

const constants = new WeakMap<Graph, Map<number, string>>();

export function emitRotation(g: Graph, file: WeightFile, x: string, E: number): string {
  const b = hadamardBlock(E);
  let perGraph = constants.get(g);
  if (!perGraph) constants.set(g, (perGraph = new Map()));
  const name = `hadamard_${b}`;
  if (!perGraph.has(b)) perGraph.set(b, g.external(name, file.add(name, hadamard(b)), [b, b], DT.FLOAT));
  return rotateBlocks(g, x, E, b, perGraph.get(b)!);
}

/** x (rows, E) · blockdiag(H) for the matrix H (b, b) named `H`. */
export function rotateBlocks(g: Graph, x: string, E: number, b: number, H: string): string {
  const blocks = g.o("Reshape", [x, g.ints([-1, E / b, b])]);
  return g.o("Reshape", [g.o("MatMul", [blocks, H]), g.ints([-1, E])]);
}
