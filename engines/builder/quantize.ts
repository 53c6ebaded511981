// The numeric pieces of the recipes: weight transforms (norm folding, Hadamard rotation), int8 and
// 4-bit group quantization, GPTQ, and Quamba2's clustering of SSM-input channels.
import { hadamardFactor, rotateVector, rotationOf } from "./hadamard.js";
import { quantNative } from "./native.js";

/** W (out, in) ← W · H (H the rotation of `inDim`, see hadamard.ts): so that (x·H)(W·H)ᵀ = x·Wᵀ. */
export function rotateInputs(W: Float32Array, outDim: number, inDim: number): Float32Array {
  const f = rotationOf(inDim);
  const Hm = hadamardFactor(f.m);
  const R = new Float32Array(W.length);
  const row = new Float64Array(inDim);
  for (let o = 0; o < outDim; o++) {
    for (let i = 0; i < inDim; i++) row[i] = W[o * inDim + i];
    rotateVector(row, f, Hm);
    for (let i = 0; i < inDim; i++) R[o * inDim + i] = row[i];
  }
  return R;
}

/** W (out, in) ← W · diag(norm): the RMSNorm weight moves into the next linear layer. */
export function foldNorm(W: Float32Array, outDim: number, inDim: number, norm: Float32Array): Float32Array {
  const R = new Float32Array(W.length);
  for (let o = 0; o < outDim; o++) for (let i = 0; i < inDim; i++) R[o * inDim + i] = W[o * inDim + i] * norm[i];
  return R;
}

export interface Int8Weights {
  q: Int8Array; // (out, in)
  scale: Float32Array; // (out) per output channel
}

/** Symmetric per-output-channel int8. */
export function quantizeInt8(W: Float32Array, outDim: number, inDim: number): Int8Weights {
  const q = new Int8Array(W.length);
  const scale = new Float32Array(outDim);
  for (let o = 0; o < outDim; o++) {
    let m = 0;
    for (let i = 0; i < inDim; i++) m = Math.max(m, Math.abs(W[o * inDim + i]));
    const s = m > 0 ? m / 127 : 1;
    scale[o] = s;
    for (let i = 0; i < inDim; i++) q[o * inDim + i] = Math.max(-127, Math.min(127, Math.round(W[o * inDim + i] / s)));
  }
  return { q, scale };
}

export interface Int4Weights {
  q: Int8Array; // (out, in) values in [-8, 7]
  scale: Float32Array; // (out, ceil(in / group))
  group: number;
}

/**
 * The 4-bit group size for a matrix of `inDim` inputs: the largest of `preferred`, preferred / 2, ...
 * down to 32 that divides inDim (the native kernels need whole groups), else `preferred` with a
 * shorter last group (which only backend ort reads).
 */
export function groupFor(inDim: number, preferred = 128): number {
  for (let g = preferred; g >= 32; g /= 2) if (inDim % g === 0) return g;
  return preferred;
}

const q4 = (w: number, s: number) => Math.max(-8, Math.min(7, Math.round(w / s)));

/**
 * How a 4-bit group's scale is chosen: `absmax` maps its largest |w| to 7; `search` tries 40 scales,
 * from the smallest that clips nothing (largest positive / 7, largest negative / 8: the code -8 is
 * used too) down by steps of 1 %, and keeps the one with the least squared rounding error.
 */
export type GroupScales = "search" | "absmax";

/**
 * The scale of the n values at(0..n-1) of one group, as engines/quant-native's groupScale computes
 * it: its error sums in 4 lanes, a later candidate winning only by a relative 1e-12 (so that the
 * native code's contracted multiply-adds cannot change the choice).
 */
export function groupScale(n: number, mode: GroupScales, at: (c: number) => number): number {
  const v = new Float64Array(n);
  let pos = 0;
  let neg = 0;
  for (let c = 0; c < n; c++) {
    v[c] = at(c);
    pos = Math.max(pos, v[c]);
    neg = Math.max(neg, -v[c]);
  }
  if (pos === 0 && neg === 0) return 1;
  if (mode === "absmax") return Math.fround(Math.max(pos, neg) / 7);
  const s0 = Math.max(pos / 7, neg / 8);
  let best = s0;
  let bestErr = Infinity;
  const acc = new Float64Array(4);
  for (let i = 0; i < 40; i++) {
    const s = s0 * (1 - i * 0.01);
    const inv = 1 / s;
    acc.fill(0);
    for (let c = 0; c < n; c++) {
      const d = v[c] - Math.min(7, Math.max(-8, Math.floor(v[c] * inv + 0.5))) * s;
      acc[c & 3] += d * d;
    }
    const err = acc[0] + acc[1] + (acc[2] + acc[3]);
    if (err < bestErr * (1 - 1e-12)) {
      bestErr = err;
      best = s;
    }
  }
  return Math.fround(best);
}

/** Round-to-nearest symmetric 4-bit, one scale per group of `group` inputs. */
export function quantizeInt4Rtn(
  W: Float32Array,
  outDim: number,
  inDim: number,
  group: number,
  scales: GroupScales = "search",
  impl: "native" | "typescript" = "native",
): Int4Weights {
  const nG = Math.ceil(inDim / group);
  const q = new Int8Array(W.length);
  const scale = new Float32Array(outDim * nG);
  const native = impl === "native" ? quantNative().lib : null;
  if (native) {
    native.rtnInt4(W, outDim, inDim, group, scales === "search", q, scale);
    return { q, scale, group };
  }
  for (let o = 0; o < outDim; o++) {
    for (let g = 0; g < nG; g++) {
      const g0 = g * group;
      const g1 = Math.min(inDim, g0 + group);
      const s = groupScale(g1 - g0, scales, (c) => W[o * inDim + g0 + c]);
      scale[o * nG + g] = s;
      for (let i = g0; i < g1; i++) q[o * inDim + i] = q4(W[o * inDim + i], s);
    }
  }
  return { q, scale, group };
}

export interface GptqOptions {
  damp?: number; // added to H's diagonal, times its mean (default 0.01)
  actOrder?: boolean;
  scales?: GroupScales; // default "search"
  impl?: "native" | "typescript";
}

/**
 * GPTQ (Frantar et al. 2022): quantizes the inputs' columns one at a time and spreads each column's
 * rounding error over the columns not yet quantized, weighted by the inverse Hessian of the layer's
 * calibration inputs (H = XᵀX). Group scales are set when a group is reached, from the weights as
 * updated so far. `actOrder`: columns in order of decreasing H diagonal (the inputs that matter most
 * first, while the most columns are left to absorb their error), with each group's scale fixed
 * beforehand from the original weights, so groups stay contiguous in the packed layout.
 */
export function quantizeInt4Gptq(
  W0: Float32Array,
  outDim: number,
  inDim: number,
  group: number,
  xtx: Float64Array,
  opts: GptqOptions = {},
): Int4Weights {
  const { damp = 0.01, actOrder = false, scales: mode = "search", impl = "native" } = opts;
  const native = impl === "native" ? quantNative().lib : null;
  if (native) {
    const q = new Int8Array(W0.length);
    const scale = new Float32Array(outDim * Math.ceil(inDim / group));
    native.gptqInt4(W0, outDim, inDim, group, xtx, damp, actOrder, mode === "search", q, scale);
    return { q, scale, group };
  }
  const W = Float64Array.from(W0);
  const H = Float64Array.from(xtx);
  let meanDiag = 0;
  for (let i = 0; i < inDim; i++) meanDiag += H[i * inDim + i];
  meanDiag /= inDim;
  for (let i = 0; i < inDim; i++) {
    if (H[i * inDim + i] === 0) {
      H[i * inDim + i] = 1; // an input that never fired: its weights do not matter
      for (let o = 0; o < outDim; o++) W[o * inDim + i] = 0;
    }
    H[i * inDim + i] += damp * meanDiag;
  }
  const nG = Math.ceil(inDim / group);
  const q = new Int8Array(W.length);
  const scale = new Float32Array(outDim * nG);
  const setScales = (g: number) => {
    const g0 = g * group;
    for (let o = 0; o < outDim; o++) scale[o * nG + g] = groupScale(Math.min(inDim, g0 + group) - g0, mode, (c) => W[o * inDim + g0 + c]);
  };
  // order[k]: the column quantized k-th; U is the factor of H with rows and columns in that order
  const order = Array.from({ length: inDim }, (_, i) => i);
  if (actOrder) {
    order.sort((a, b) => H[b * inDim + b] - H[a * inDim + a] || a - b);
    for (let g = 0; g < nG; g++) setScales(g);
  }
  const Hp = actOrder ? new Float64Array(inDim * inDim) : H;
  if (actOrder) for (let i = 0; i < inDim; i++) for (let j = 0; j < inDim; j++) Hp[i * inDim + j] = H[order[i] * inDim + order[j]];
  const U = upperCholeskyOfInverse(Hp, inDim);
  for (let k = 0; k < inDim; k++) {
    const i = order[k];
    if (!actOrder && i % group === 0) setScales(i / group);
    const d = U[k * inDim + k];
    const g = Math.floor(i / group);
    for (let o = 0; o < outDim; o++) {
      const w = W[o * inDim + i];
      const s = scale[o * nG + g];
      const qv = q4(w, s);
      q[o * inDim + i] = qv;
      const err = (w - qv * s) / d;
      for (let k2 = k + 1; k2 < inDim; k2++) W[o * inDim + order[k2]] -= err * U[k * inDim + k2];
    }
  }
  return { q, scale, group };
}

/**
 * The output error a quantization leaves, relative: tr(ΔHΔᵀ) / tr(WHWᵀ) with Δ = W − Ŵ and
 * H = XᵀX, i.e. ‖XΔᵀ‖² / ‖XWᵀ‖² over the calibration inputs; estimated on up to `rows` evenly
 * spaced output rows.
 */
export function reconstructionError(
  W: Float32Array,
  w: Int4Weights,
  outDim: number,
  inDim: number,
  xtx: Float64Array,
  rows = 64,
  impl: "native" | "typescript" = "native",
): number {
  return reconstructionErrors(W, [w], outDim, inDim, xtx, rows, impl)[0];
}

/** reconstructionError of several roundings of the same W, in one pass over H (the reference ‖XWᵀ‖² computed once). */
export function reconstructionErrors(
  W: Float32Array,
  ws: Int4Weights[],
  outDim: number,
  inDim: number,
  xtx: Float64Array,
  rows = 64,
  impl: "native" | "typescript" = "native",
): number[] {
  const k = ws.length + 1; // vectors per sampled row: each rounding's error, then W itself
  const step = Math.max(1, Math.floor(outDim / rows));
  const picked = Math.ceil(outDim / step);
  const V = new Float64Array(k * picked * inDim);
  for (let r = 0, o = 0; o < outDim; o += step, r++)
    for (let i = 0; i < inDim; i++) {
      const x = W[o * inDim + i];
      ws.forEach((w, v) => {
        V[(k * r + v) * inDim + i] = x - w.q[o * inDim + i] * w.scale[o * Math.ceil(inDim / w.group) + Math.floor(i / w.group)];
      });
      V[(k * r + k - 1) * inDim + i] = x;
    }
  const native = impl === "native" ? quantNative().lib : null;
  // each vector's quadratic form vᵀHv, natively in one pass over H
  const f = native ? native.quadraticForms(xtx, inDim, V, k * picked) : quadraticForms(xtx, inDim, V, k * picked);
  const sums = new Float64Array(k);
  for (let r = 0; r < picked; r++) for (let v = 0; v < k; v++) sums[v] += f[k * r + v];
  const ref = sums[k - 1];
  return ws.map((_, v) => (ref > 0 ? sums[v] / ref : 0));
}

function quadraticForms(H: Float64Array, n: number, V: Float64Array, m: number): Float64Array {
  const out = new Float64Array(m);
  for (let r = 0; r < m; r++) {
    const v = V.subarray(r * n, (r + 1) * n);
    let s = 0;
    for (let i = 0; i < n; i++) {
      let h = 0;
      for (let j = 0; j < n; j++) h += H[i * n + j] * v[j];
      s += v[i] * h;
    }
    out[r] = s;
  }
  return out;
}

/**
 * U with Uᵀ U = H⁻¹ and U upper triangular (H symmetric positive definite, n × n), from one
 * Cholesky factorization and one triangular inverse: with P the order-reversing permutation and
 * P H P = R Rᵀ, U = P R⁻¹ P (check: Uᵀ U = P R⁻ᵀ R⁻¹ P = P (P H P)⁻¹ P = H⁻¹; R⁻¹ is lower
 * triangular, so reversing its rows and columns makes it upper). Every inner loop runs along rows.
 */
export function upperCholeskyOfInverse(H: Float64Array, n: number): Float64Array {
  const rev = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) rev[i * n + j] = H[(n - 1 - i) * n + (n - 1 - j)];
  const R = cholesky(rev, n);
  // R⁻¹ one column at a time by forward substitution (R x = e_j), each step a dot product along a row of R
  const U = new Float64Array(n * n);
  const x = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    x[j] = 1 / R[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      const row = i * n;
      for (let k = j; k < i; k++) s += R[row + k] * x[k];
      x[i] = -s / R[row + i];
    }
    // (R⁻¹)[i][j] = x[i]  ->  U[n-1-i][n-1-j]
    for (let i = j; i < n; i++) U[(n - 1 - i) * n + (n - 1 - j)] = x[i];
  }
  return U;
}

function cholesky(A: Float64Array, n: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * n + j];
      for (let k = 0; k < j; k++) s -= L[i * n + k] * L[j * n + k];
      if (i === j) L[i * n + i] = Math.sqrt(Math.max(s, 1e-12));
      else L[i * n + j] = s / L[j * n + j];
    }
  }
  return L;
}

/** Packs 4-bit values for onnxruntime's MatMulNBits: (out, blocks, block/2) bytes, low nibble first, zero point 8. */
export function packNBits(w: Int4Weights, outDim: number, inDim: number): Uint8Array {
  const blocks = Math.ceil(inDim / w.group);
  const blob = w.group / 2;
  const out = new Uint8Array(outDim * blocks * blob).fill(0x88);
  for (let o = 0; o < outDim; o++) {
    for (let i = 0; i < inDim; i++) {
      const byte = o * blocks * blob + Math.floor(i / w.group) * blob + Math.floor((i % w.group) / 2);
      const nib = (w.q[o * inDim + i] + 8) & 0xf;
      out[byte] = i % 2 === 0 ? (out[byte] & 0xf0) | nib : (out[byte] & 0x0f) | (nib << 4);
    }
  }
  return out;
}

/**
 * Quamba2's sort-and-cluster scales for a Mamba-2 SSM input x (nHeads × headDim channels): heads are
 * sorted by their calibrated range and cut into `headGroups` groups; within a group, channel
 * positions are sorted by range and cut into `channelGroups` clusters; each cluster gets one scale.
 * Returns a per-channel scale vector and the channel order that would make clusters contiguous.
 */
export function sortAndCluster(channelAbsmax: Float32Array, nHeads: number, headDim: number, headGroups: number, channelGroups: number) {
  const headMax = Array.from({ length: nHeads }, (_, h) => Math.max(...channelAbsmax.subarray(h * headDim, (h + 1) * headDim)));
  const heads = Array.from(headMax.keys()).sort((a, b) => headMax[a] - headMax[b]);
  const hg = Math.min(headGroups, nHeads);
  const cg = Math.min(channelGroups, headDim);
  const scale = new Float32Array(nHeads * headDim);
  const perm: number[] = [];
  for (let gi = 0; gi < hg; gi++) {
    const group = heads.slice(Math.floor((gi * nHeads) / hg), Math.floor(((gi + 1) * nHeads) / hg));
    // a channel position's range within the group: its max over the group's heads
    const posMax = Array.from({ length: headDim }, (_, p) => Math.max(...group.map((h) => channelAbsmax[h * headDim + p])));
    const positions = Array.from(posMax.keys()).sort((a, b) => posMax[a] - posMax[b]);
    for (let ci = 0; ci < cg; ci++) {
      const cluster = positions.slice(Math.floor((ci * headDim) / cg), Math.floor(((ci + 1) * headDim) / cg));
      const s = Math.max(...cluster.map((p) => posMax[p])) / 127 || 1;
      for (const h of group) for (const p of cluster) scale[h * headDim + p] = s;
    }
    for (const h of group) for (const p of positions) perm.push(h * headDim + p);
  }
  return { scale, perm };
}
