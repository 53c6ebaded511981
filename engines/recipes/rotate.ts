// The Hadamard rotation of out_proj's input as graph nodes: x (rows, E) -> x · blockdiag(H), with
// H the normalized Hadamard matrix of the largest power-of-two block dividing E.
import type { Graph } from "../onnx/graph.js";
import { hadamard, hadamardBlock } from "../quantize.js";

const constants = new WeakMap<Graph, Map<number, string>>();

export function emitRotation(g: Graph, x: string, E: number): string {
  const b = hadamardBlock(E);
  let perGraph = constants.get(g);
  if (!perGraph) constants.set(g, (perGraph = new Map()));
  if (!perGraph.has(b)) perGraph.set(b, g.floats(hadamard(b), [b, b]));
  const blocks = g.o("Reshape", [x, g.ints([-1, E / b, b])]);
  return g.o("Reshape", [g.o("MatMul", [blocks, perGraph.get(b)!]), g.ints([-1, E])]);
}
