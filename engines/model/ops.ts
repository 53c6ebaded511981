import { linearRange, type LinearJob } from "./linear-range.js";
import { runSplit } from "./parallel.js";

// The few numeric kernels of the reference forward pass. Storage is float32; the arithmetic is
// JavaScript's float64, rounded to float32 when stored.

/**
 * y[r, o] = sum_i x[r*xStride + xOffset + i] * W[o, i] + b[o] for r < rows: a linear layer over a
 * block of rows. W is PyTorch's (out, in) layout, so each output reads one contiguous weight row.
 * Large layers split their outputs with a helper thread (see parallel.ts); every output is computed
 * by the same code either way, so results do not depend on the split.
 */
export function linear(
  x: Float32Array,
  rows: number,
  inDim: number,
  W: Float32Array,
  outDim: number,
  bias: Float32Array | null,
  xStride = inDim,
  xOffset = 0,
): Float32Array {
  const job: LinearJob = { x, rows, inDim, W, outDim, bias, xStride, xOffset, y: new Float32Array(rows * outDim) };
  if (rows * inDim * outDim < PARALLEL_MIN_MACS || !runSplit(job)) linearRange(job, 0, outDim);
  return job.y;
}

const PARALLEL_MIN_MACS = 1 << 19;

/** RMSNorm of each row: x / sqrt(mean(x²) + eps) * weight. */
export function rmsnorm(x: Float32Array, rows: number, dim: number, weight: Float32Array, eps: number): Float32Array {
  const y = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
    const scale = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[o + i] = x[o + i] * scale * weight[i];
  }
  return y;
}

/** F.silu; silu(x) = x * sigmoid(x). */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** F.softplus with PyTorch's threshold of 20 (linear above it). */
export function softplus(x: number): number {
  return x > 20 ? x : Math.log1p(Math.exp(x));
}

/**
 * Depthwise causal convolution of one sequence's rows, continuing from `state` (the last K-1 inputs
 * of each channel, oldest first) and leaving the new last K-1 inputs in it. Input channel c of row t
 * is x[t*xStride + xOffset + c]; the output (after silu) goes to y[t*channels + c].
 */
export function causalConv(
  x: Float32Array,
  xStride: number,
  xOffset: number,
  rowStart: number,
  rows: number,
  channels: number,
  K: number,
  W: Float32Array,
  bias: Float32Array | null,
  state: Float32Array,
  y: Float32Array,
): void {
  const H = K - 1; // history length
  const window = new Float64Array(K);
  for (let c = 0; c < channels; c++) {
    const s = c * H;
    const w = c * K;
    for (let k = 0; k < H; k++) window[k] = state[s + k];
    for (let t = 0; t < rows; t++) {
      const r = rowStart + t;
      window[H] = x[r * xStride + xOffset + c];
      let acc = bias ? bias[c] : 0;
      for (let k = 0; k < K; k++) acc += W[w + k] * window[k];
      y[r * channels + c] = silu(acc);
      for (let k = 0; k < H; k++) window[k] = window[k + 1];
    }
    for (let k = 0; k < H; k++) state[s + k] = window[k];
  }
}
