import { describe, expect, it } from "vitest";
import { seededRandom } from "../engines/model/rng.js";
import { Sampler, argmax, type SamplingParams } from "../runtime/sampling.js";

const base: SamplingParams = { temperature: 1, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, seed: 7 };
const logits = Float32Array.from([0.1, 2.0, -1.0, 1.5, 0.3, 1.9, -3.0, 0.0]);
const draws = (p: SamplingParams, n = 2000) => {
  const s = new Sampler(p);
  return Array.from({ length: n }, () => s.sample(logits));
};

describe("sampling", () => {
  it("is greedy at temperature 0", () => {
    expect(new Sampler({ ...base, temperature: 0 }).sample(logits)).toBe(argmax(logits));
    expect(argmax(logits)).toBe(1);
  });

  it("gives the same tokens for the same seed, and others for another seed", () => {
    expect(draws(base, 50)).toEqual(draws(base, 50));
    expect(draws(base, 50)).not.toEqual(draws({ ...base, seed: 8 }, 50));
  });

  it("draws in proportion to softmax(logits / T)", () => {
    const counts = new Array(logits.length).fill(0);
    for (const id of draws(base, 20000)) counts[id]++;
    const z = Array.from(logits).map(Math.exp);
    const sum = z.reduce((a, b) => a + b);
    z.forEach((p, i) => expect(Math.abs(counts[i] / 20000 - p / sum)).toBeLessThan(0.015));
  });

  it("top-k keeps only the k most likely tokens", () => {
    expect(new Set(draws({ ...base, topK: 2 }))).toEqual(new Set([1, 5]));
  });

  it("top-p keeps the smallest set reaching the mass", () => {
    // probabilities ≈ .26 (id 1), .24 (id 5), .16 (id 3): 0.45 needs the first two
    expect(new Set(draws({ ...base, topP: 0.45 }))).toEqual(new Set([1, 5]));
  });

  it("min-p drops tokens far below the best", () => {
    expect(new Set(draws({ ...base, minP: 0.5 }))).toEqual(new Set([1, 5, 3]));
  });

  it("the repetition penalty steers away from seen tokens", () => {
    const s = new Sampler({ ...base, temperature: 0, repeatPenalty: 2 });
    expect(s.sample(logits, [1])).toBe(5);
  });

  it("leaves the caller's logits as they were (they may be a backend's buffer), across vocabularies of two sizes", () => {
    const before = logits.slice();
    const s = new Sampler({ ...base, temperature: 0, repeatPenalty: 2 });
    expect(s.sample(logits, [1, 5])).toBe(3);
    expect(logits).toEqual(before);
    // a larger vocabulary, then the small one again: each sample sees only its own logits
    const big = Float32Array.from({ length: 5000 }, (_, i) => (i === 4321 ? 9 : 0));
    expect(s.sample(big)).toBe(4321);
    expect(s.sample(logits)).toBe(1);
    expect(new Sampler({ ...base, topK: 3, seed: 1 }).sample(big.subarray(0, 4000))).toBeLessThan(4000);
  });

  it("the generator is uniform in [0, 1)", () => {
    const r = seededRandom(1);
    const xs = Array.from({ length: 10000 }, r);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(Math.abs(xs.reduce((a, b) => a + b) / xs.length - 0.5)).toBeLessThan(0.02);
  });
});
