// The loop of a linear layer over a range of outputs: run by the main thread and by the helper
// thread of parallel.ts alike, so a split layer computes exactly what an unsplit one does.

export interface LinearJob {
  x: Float32Array;
  rows: number;
  inDim: number;
  W: Float32Array;
  outDim: number;
  bias: Float32Array | null;
  xStride: number;
  xOffset: number;
  y: Float32Array;
}

/** The outputs [o0, o1) of a linear job, rows walked in tiles so weight rows are reused in cache. */
export function linearRange(j: LinearJob, o0: number, o1: number): void {
  const { x, rows, inDim, W, outDim, bias, xStride, xOffset, y } = j;
  const ROW_TILE = 16;
  for (let r0 = 0; r0 < rows; r0 += ROW_TILE) {
    const r1 = Math.min(rows, r0 + ROW_TILE);
    let o = o0;
    // four outputs at a time: each input element is loaded once for four weight rows
    for (; o + 3 < o1; o += 4) {
      const w0 = o * inDim,
        w1 = w0 + inDim,
        w2 = w1 + inDim,
        w3 = w2 + inDim;
      for (let r = r0; r < r1; r++) {
        const xo = r * xStride + xOffset;
        let a = 0,
          b = 0,
          c = 0,
          d = 0;
        for (let i = 0; i < inDim; i++) {
          const xi = x[xo + i];
          a += xi * W[w0 + i];
          b += xi * W[w1 + i];
          c += xi * W[w2 + i];
          d += xi * W[w3 + i];
        }
        const yo = r * outDim + o;
        y[yo] = a + (bias ? bias[o] : 0);
        y[yo + 1] = b + (bias ? bias[o + 1] : 0);
        y[yo + 2] = c + (bias ? bias[o + 2] : 0);
        y[yo + 3] = d + (bias ? bias[o + 3] : 0);
      }
    }
    for (; o < o1; o++) {
      const w = o * inDim;
      for (let r = r0; r < r1; r++) {
        const xo = r * xStride + xOffset;
        let a = 0;
        for (let i = 0; i < inDim; i++) a += x[xo + i] * W[w + i];
        y[r * outDim + o] = a + (bias ? bias[o] : 0);
      }
    }
  }
}
