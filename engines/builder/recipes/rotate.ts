// The Hadamard rotation of out_proj's input as graph nodes: x (rows, E) -> x · H_E over the whole
// width (engines/builder/hadamard.ts): a matrix product with H_b inside each block of b, then, for
// widths like 1536 = 12 · 128, a product with H_m across the m blocks. The matrices live in the
// engine's weight file, so the package's graphs share one copy.
import { DT, type Graph } from "../onnx/graph.js";
import type { WeightFile } from "../onnx/weight-file.js";
import { hadamardFactor, rotationOf, sylvester } from "../hadamard.js";

const constants = new WeakMap<Graph, Map<string, string>>();

export function emitRotation(g: Graph, file: WeightFile, x: string, E: number): string {
  const { m, b } = rotationOf(E);
  let perGraph = constants.get(g);
  if (!perGraph) constants.set(g, (perGraph = new Map()));
  const matrix = (name: string, make: () => Float32Array, n: number) => {
    if (!perGraph.has(name)) perGraph.set(name, g.external(name, file.add(name, make()), [n, n], DT.FLOAT));
    return perGraph.get(name)!;
  };
  const Hb = matrix(`hadamard_${b}`, () => sylvester(b), b);
  if (m === 1) return rotateBlocks(g, x, E, b, Hb);
  return rotateWhole(
    g,
    x,
    m,
    b,
    Hb,
    matrix(`hadamard_${m}_t`, () => mixMatrix(m), m),
  );
}

/** H_mᵀ, normalized: the matrix rotateWhole mixes blocks with. */
export function mixMatrix(m: number): Float32Array {
  return transpose(hadamardFactor(m), m);
}

/** x (rows, m · b) · (H_m ⊗ H_b): (rows, m, b) · H_b, then H_mᵀ · that (out[r, a', c] = Σ_a H_m[a, a'] z[r, a, c]). */
export function rotateWhole(g: Graph, x: string, m: number, b: number, Hb: string, HmT: string): string {
  const z = g.o("MatMul", [g.o("Reshape", [x, g.ints([-1, m, b])]), Hb]);
  return g.o("Reshape", [g.o("MatMul", [HmT, z]), g.ints([-1, m * b])]);
}

/** x (rows, E) · blockdiag(H) for the matrix H (b, b) named `H`. */
export function rotateBlocks(g: Graph, x: string, E: number, b: number, H: string): string {
  const blocks = g.o("Reshape", [x, g.ints([-1, E / b, b])]);
  return g.o("Reshape", [g.o("MatMul", [blocks, H]), g.ints([-1, E])]);
}

function transpose(A: Float32Array, n: number): Float32Array {
  const T = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) T[j * n + i] = A[i * n + j];
  return T;
}
