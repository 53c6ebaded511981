// Mamba-1 mixer (Gu & Dao 2023, Algorithm 2): selective SSM with input-dependent dt, B, C and a
// diagonal A per (channel, state) pair.
import type { ModelConfig } from "./config.js";
import { causalConv, linear, silu, softplus } from "./ops.js";
import type { Segment } from "./segments.js";
import type { Mamba1Layer } from "./weights.js";

/** u: (rows, dModel) normalized input; returns the mixer output (rows, dModel). */
export function mamba1Mixer(
  c: ModelConfig,
  L: Mamba1Layer,
  layer: number,
  u: Float32Array,
  rows: number,
  segments: Segment[],
): Float32Array {
  const { dModel, dInner, dState: N, dtRank: R, dConv: K } = c;

  // 1. in_proj: (rows, 2*dInner) = [x | z]
  const xz = linear(u, rows, dModel, L.inProj, 2 * dInner, L.inProjBias);

  // 2. causal depthwise conv over time, then silu, continuing each sequence's conv history
  const x = new Float32Array(rows * dInner);
  for (const s of segments) causalConv(xz, 2 * dInner, 0, s.start, s.len, dInner, K, L.convW, L.convB, s.state.conv(layer), x);

  // 3. input-dependent parameters: x_proj -> [dt_low | B | C]; dt = softplus(dt_proj(dt_low) + bias)
  const xdbl = linear(x, rows, dInner, L.xProj, R + 2 * N, null);
  const dtRaw = linear(xdbl, rows, R, L.dtProj, dInner, L.dtProjBias, R + 2 * N, 0);

  // 4. selective scan, per sequence: h = exp(dt*A) h + dt*B*x ; y = C·h + D*x ; y *= silu(z)
  const y = new Float32Array(rows * dInner);
  for (const s of segments) {
    const h = s.state.ssm(layer); // (dInner, N)
    for (let t = s.start; t < s.start + s.len; t++) {
      const bc = t * (R + 2 * N) + R; // B at bc, C at bc + N
      for (let ch = 0; ch < dInner; ch++) {
        const dt = softplus(dtRaw[t * dInner + ch]);
        const xv = x[t * dInner + ch];
        const hs = ch * N;
        let acc = 0;
        for (let n = 0; n < N; n++) {
          const hn = Math.exp(dt * L.A[hs + n]) * h[hs + n] + dt * xdbl[bc + n] * xv;
          h[hs + n] = hn;
          acc += hn * xdbl[bc + N + n];
        }
        y[t * dInner + ch] = (acc + L.D[ch] * xv) * silu(xz[t * 2 * dInner + dInner + ch]);
      }
    }
  }

  // 5. out_proj
  return linear(y, rows, dInner, L.outProj, dModel, L.outProjBias);
}
