// The one seeded generator: random demo weights and the sampler draw from the same stream for a seed.
/**
 * splitmix32: a tiny seeded generator with good statistical quality; uniform in [0, 1). `skip`: start
 * as if that many numbers had been drawn already (the state advances by a constant per draw, so any
 * point of the stream is reached at once: random weights are made one tensor at a time).
 */
export function seededRandom(seed: number, skip = 0): () => number {
  let s = (seed + Math.imul((skip % 4294967296) >>> 0, 0x9e3779b9)) >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}
