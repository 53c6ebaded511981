// Mamba-2 mixer (Dao & Gu 2024): scalar A per head, B and C shared by groups of heads, and the SSD
// chunked algorithm for prefill (quadratic inside a chunk, recurrent across chunks). A one-token
// segment takes the plain recurrence, which is what a decode step is.
import type { ModelConfig } from "./config.js";
import { causalConv, linear, silu, softplus } from "./ops.js";
import type { Segment } from "./segments.js";
import type { Mamba2Layer } from "./weights.js";

interface Views {
  x: Float32Array; // (rows, convDim) after conv + silu: [x (dInner) | B (G*N) | C (G*N)]
  convDim: number;
  dt: Float32Array; // (rows, nHeads) after softplus and clamp
}

/** u: (rows, dModel) normalized input; returns the mixer output (rows, dModel). */
export function mamba2Mixer(
  c: ModelConfig,
  L: Mamba2Layer,
  layer: number,
  u: Float32Array,
  rows: number,
  segments: Segment[],
): Float32Array {
  const { dModel, dInner, dState: N, nGroups: G, nHeads: H, dConv: K } = c;
  const convDim = dInner + 2 * G * N;
  const projDim = dInner + convDim + H;

  // 1. in_proj: (rows, projDim) = [z | xBC | dt]
  const zxbcdt = linear(u, rows, dModel, L.inProj, projDim, L.inProjBias);

  // 2. causal conv over xBC, then silu
  const x = new Float32Array(rows * convDim);
  for (const s of segments) causalConv(zxbcdt, projDim, dInner, s.start, s.len, convDim, K, L.convW, L.convB, s.state.conv(layer), x);

  // 3. dt = clamp(softplus(dt + dt_bias), limit)
  const dt = new Float32Array(rows * H);
  const [lo, hi] = c.dtLimit;
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < H; h++)
      dt[t * H + h] = Math.min(hi, Math.max(lo, softplus(zxbcdt[t * projDim + dInner + convDim + h] + L.dtBias[h])));
  }

  // 4. SSM, per sequence
  const y = new Float32Array(rows * dInner);
  const v: Views = { x, convDim, dt };
  for (const s of segments) {
    if (s.len === 1) recurrentStep(c, L, v, s.start, s.state.ssm(layer), y);
    else chunkedScan(c, L, v, s.start, s.len, s.state.ssm(layer), y);
  }

  // 5. gated RMSNorm: norm(y * silu(z)) (or norm(y) * silu(z)), then out_proj
  gatedNorm(c, L, y, zxbcdt, projDim, rows);
  return linear(y, rows, dInner, L.outProj, dModel, L.outProjBias);
}

/** One token: S = exp(dt*A) S + dt * x ⊗ B ; y = S·C + D*x, per head (S is (headDim, N)). */
function recurrentStep(c: ModelConfig, L: Mamba2Layer, v: Views, t: number, S: Float32Array, y: Float32Array): void {
  const { dInner, dState: N, nGroups: G, nHeads: H, headDim: P } = c;
  const row = t * v.convDim;
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / (H / G));
    const B = row + dInner + g * N;
    const C = row + dInner + G * N + g * N;
    const dt = v.dt[t * H + h];
    const dA = Math.exp(dt * L.A[h]);
    for (let p = 0; p < P; p++) {
      const xv = v.x[row + h * P + p];
      const so = (h * P + p) * N;
      let acc = 0;
      for (let n = 0; n < N; n++) {
        const sn = S[so + n] * dA + dt * xv * v.x[B + n];
        S[so + n] = sn;
        acc += sn * v.x[C + n];
      }
      y[t * dInner + h * P + p] = acc + L.D[h] * xv;
    }
  }
}

/**
 * SSD over rows [start, start+len) in chunks of chunkSize. Within a chunk, with a_s = dt_s*A and
 * cum_i = a_1 + ... + a_i:
 *   y_i = exp(cum_i) C_i·S_prev                                   (state from earlier chunks)
 *       + sum_{j≤i} exp(cum_i - cum_j) dt_j (C_i·B_j) x_j           (quadratic, attention-like)
 *       + D x_i
 *   S_next = exp(cum_last) S_prev + sum_j exp(cum_last - cum_j) dt_j x_j ⊗ B_j
 */
function chunkedScan(c: ModelConfig, L: Mamba2Layer, v: Views, start: number, len: number, S: Float32Array, y: Float32Array): void {
  const { dInner, dState: N, nGroups: G, nHeads: H, headDim: P, chunkSize } = c;
  const Q = Math.min(chunkSize, len);
  const CB = new Float64Array(Q * Q);
  const cum = new Float64Array(Q);
  const SC = new Float64Array(P); // S_prev · C_i for one head
  for (let c0 = start; c0 < start + len; c0 += chunkSize) {
    const q = Math.min(chunkSize, start + len - c0);
    for (let g = 0; g < G; g++) {
      // C_i · B_j for this group (shared by its heads), lower triangle only
      const Boff = dInner + g * N;
      const Coff = dInner + G * N + g * N;
      for (let i = 0; i < q; i++) {
        const ci = (c0 + i) * v.convDim + Coff;
        for (let j = 0; j <= i; j++) {
          const bj = (c0 + j) * v.convDim + Boff;
          let d = 0;
          for (let n = 0; n < N; n++) d += v.x[ci + n] * v.x[bj + n];
          CB[i * Q + j] = d;
        }
      }
      for (let h = g * (H / G); h < (g + 1) * (H / G); h++) {
        let acc = 0;
        for (let i = 0; i < q; i++) {
          acc += v.dt[(c0 + i) * H + h] * L.A[h];
          cum[i] = acc;
        }
        for (let i = 0; i < q; i++) {
          const ti = c0 + i;
          const ci = ti * v.convDim + Coff;
          // state from earlier chunks
          const decayIn = Math.exp(cum[i]);
          for (let p = 0; p < P; p++) {
            const so = (h * P + p) * N;
            let d = 0;
            for (let n = 0; n < N; n++) d += S[so + n] * v.x[ci + n];
            SC[p] = d * decayIn;
          }
          // within the chunk
          for (let j = 0; j <= i; j++) {
            const w = Math.exp(cum[i] - cum[j]) * v.dt[(c0 + j) * H + h] * CB[i * Q + j];
            const xj = (c0 + j) * v.convDim + h * P;
            for (let p = 0; p < P; p++) SC[p] += w * v.x[xj + p];
          }
          const xi = ti * v.convDim + h * P;
          for (let p = 0; p < P; p++) y[ti * dInner + h * P + p] = SC[p] + L.D[h] * v.x[xi + p];
        }
        // carry the state to the end of the chunk
        const last = cum[q - 1];
        const decayAll = Math.exp(last);
        for (let p = 0; p < P; p++) {
          const so = (h * P + p) * N;
          for (let n = 0; n < N; n++) S[so + n] *= decayAll;
        }
        for (let j = 0; j < q; j++) {
          const w = Math.exp(last - cum[j]) * v.dt[(c0 + j) * H + h];
          const xj = (c0 + j) * v.convDim + h * P;
          const bj = (c0 + j) * v.convDim + Boff;
          for (let p = 0; p < P; p++) {
            const wx = w * v.x[xj + p];
            const so = (h * P + p) * N;
            for (let n = 0; n < N; n++) S[so + n] += wx * v.x[bj + n];
          }
        }
      }
    }
  }
}

/** In place on y (rows, dInner): RMSNorm over groups of gatedNormGroup channels, gated by silu(z). */
function gatedNorm(c: ModelConfig, L: Mamba2Layer, y: Float32Array, zxbcdt: Float32Array, projDim: number, rows: number): void {
  const { dInner, gatedNormGroup: gs, normEps } = c;
  for (let t = 0; t < rows; t++) {
    const yo = t * dInner;
    const zo = t * projDim;
    if (!c.normBeforeGate) for (let i = 0; i < dInner; i++) y[yo + i] *= silu(zxbcdt[zo + i]);
    if (gs > 0) {
      for (let g0 = 0; g0 < dInner; g0 += gs) {
        let ss = 0;
        for (let i = g0; i < g0 + gs; i++) ss += y[yo + i] * y[yo + i];
        const scale = 1 / Math.sqrt(ss / gs + normEps);
        for (let i = g0; i < g0 + gs; i++) y[yo + i] = y[yo + i] * scale * L.gatedNorm[i];
      }
    }
    if (c.normBeforeGate) for (let i = 0; i < dInner; i++) y[yo + i] *= silu(zxbcdt[zo + i]);
  }
}
