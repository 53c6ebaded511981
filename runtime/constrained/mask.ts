// A grammar's token mask applied to logits (XGrammar's layout: bit t % 32 of word t / 32 allows token t).

/** Sets every logit the mask does not allow to -Infinity. */
export function applyMask(logits: Float64Array | Float32Array, mask: Int32Array): void {
  const n = logits.length;
  for (let w = 0; w < mask.length; w++) {
    const bits = mask[w];
    if (bits === -1) continue;
    const base = w << 5;
    const end = Math.min(32, n - base);
    for (let b = 0; b < end; b++) if (((bits >>> b) & 1) === 0) logits[base + b] = -Infinity;
  }
}
