// The builder's native linear algebra (engines/quant-native: GPTQ, 4-bit round-to-nearest, the
// quadratic forms of GPTQ's error measure, the calibration inputs' XᵀX), called through koffi, which
// is loaded only here and only when a build needs it.
// Where the library is not built (or MAMBA_EDGE_QUANT_NATIVE=off), quantize.ts runs its TypeScript
// versions, which give the same results, many times slower.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { packageRoot } from "../paths.js";

export const QUANT_LIBRARY = join(packageRoot, "engines", "quant-native", "build", "libmamba_edge_quant.so");

export interface QuantNative {
  gptqInt4(
    W: Float32Array,
    outDim: number,
    inDim: number,
    group: number,
    xtx: Float64Array,
    damp: number,
    actOrder: boolean,
    search: boolean,
    q: Int8Array,
    scale: Float32Array,
  ): void;
  rtnInt4(W: Float32Array, outDim: number, inDim: number, group: number, search: boolean, q: Int8Array, scale: Float32Array): void;
  quadraticForms(H: Float64Array, n: number, V: Float64Array, m: number): Float64Array;
  /** acc (n, n) += XᵀX for X (rows, n) */
  gramAdd(X: Float32Array, rows: number, n: number, acc: Float64Array): void;
}

let cached: { lib: QuantNative | null; why: string } | undefined;

/** The native library, or null with the reason it is not used (said once per process by the caller). */
export function quantNative(): { lib: QuantNative | null; why: string } {
  if (cached) return cached;
  const setting = process.env.MAMBA_EDGE_QUANT_NATIVE;
  const path = setting && setting !== "off" ? setting : QUANT_LIBRARY;
  if (setting === "off") return (cached = { lib: null, why: "MAMBA_EDGE_QUANT_NATIVE=off" });
  if (!existsSync(path)) return (cached = { lib: null, why: `${path} is not built (npm run build:cpu)` });
  try {
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    const l = koffi.load(path);
    const gptq = l.func(
      "int meq_gptq_int4(const float* W, int outDim, int inDim, int group, const double* xtx, double damp, int actOrder, int scaleSearch, int threads, _Out_ int8_t* q, _Out_ float* scale)",
    );
    const rtn = l.func(
      "int meq_rtn_int4(const float* W, int outDim, int inDim, int group, int scaleSearch, int threads, _Out_ int8_t* q, _Out_ float* scale)",
    );
    const forms = l.func("int meq_quadratic_forms(const double* H, int n, const double* V, int m, int threads, _Out_ double* out)");
    const gram = l.func("int meq_gram_add(const float* X, int rows, int n, int threads, double* acc)");
    const threads = availableParallelism();
    const check = (rc: number, what: string) => {
      if (rc !== 0) throw new Error(`${what}: ${rc === -2 ? "out of memory" : `native call failed (${rc})`}`);
    };
    const lib: QuantNative = {
      gptqInt4(W, outDim, inDim, group, xtx, damp, actOrder, search, q, scale) {
        check(gptq(W, outDim, inDim, group, xtx, damp, actOrder ? 1 : 0, search ? 1 : 0, threads, q, scale) as number, "GPTQ");
      },
      rtnInt4(W, outDim, inDim, group, search, q, scale) {
        check(rtn(W, outDim, inDim, group, search ? 1 : 0, threads, q, scale) as number, "round-to-nearest");
      },
      quadraticForms(H, n, V, m) {
        const out = new Float64Array(m);
        check(forms(H, n, V, m, threads, out) as number, "quadratic forms");
        return out;
      },
      gramAdd(X, rows, n, acc) {
        check(gram(X, rows, n, threads, acc) as number, "XᵀX");
      },
    };
    return (cached = { lib, why: "" });
  } catch (e) {
    return (cached = { lib: null, why: `${path} did not load (${(e as Error).message.split("\n")[0]})` });
  }
}
