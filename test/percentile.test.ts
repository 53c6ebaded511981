import { describe, expect, it } from "vitest";
import { AbsHistogram, HISTOGRAM_BINS } from "../engines/builder/percentile.js";
import { seededRandom } from "../engines/model/rng.js";

/** The percentile as calibration defines it: sorted |x| at rank floor(p·(n−1)). */
function exact(values: Float32Array, p: number): number {
  const sorted = Float32Array.from(values, Math.abs).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1)))];
}

function gaussian(n: number, seed: number): Float32Array {
  const r = seededRandom(seed);
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
}

describe("calibration percentile (AbsHistogram)", () => {
  it("matches the exact percentile of every value within one bin (2^-8 relative)", () => {
    const values = gaussian(400_000, 1);
    for (let i = 0; i < values.length; i += 997) values[i] *= 40; // sparse outliers
    const h = new AbsHistogram();
    for (let i = 0; i < values.length; i += 65_536) h.add(values.subarray(i, i + 65_536)); // in windows, as calibration adds them
    for (const p of [0.5, 0.99, 0.9995, 0.99999]) {
      const want = exact(values, p);
      expect(Math.abs(h.quantile(p) - want) / want).toBeLessThan(2 ** -8);
    }
  });

  it("sees every channel: outliers in one channel of 512 set the tail", () => {
    const width = 512;
    const tokens = 2048;
    const values = gaussian(width * tokens, 2);
    for (let t = 0; t < tokens; t++) values[t * width + 3] *= 100; // channel 3 only
    const h = new AbsHistogram();
    h.add(values);
    const want = exact(values, 0.9995);
    expect(want).toBeGreaterThan(50); // the tail is channel 3's
    expect(Math.abs(h.quantile(0.9995) - want) / want).toBeLessThan(2 ** -8);
  });

  it("takes counts made elsewhere by the documented bins (as the GPU calibration counts them)", () => {
    const values = gaussian(100_000, 3);
    for (let i = 0; i < values.length; i += 101) values[i] *= 1e4;
    values[7] = 0;
    values[8] = 1e-30;
    // the bin of |x|: its float32 bits shifted right by 15, counted from exponent 103 (2^-24), clamped
    const counts = new Float64Array(HISTOGRAM_BINS);
    const bits = new Uint32Array(values.buffer);
    for (const b of bits) counts[Math.min(HISTOGRAM_BINS - 1, Math.max(0, ((b & 0x7fffffff) >>> 15) - ((127 - 24) << 8)))]++;
    const direct = new AbsHistogram();
    direct.add(values);
    const fromCounts = new AbsHistogram();
    fromCounts.addCounts(counts);
    expect(fromCounts.count).toBe(values.length);
    for (const p of [0, 0.5, 0.9995, 1]) expect(fromCounts.quantile(p)).toBe(direct.quantile(p));
    expect(() => fromCounts.addCounts(new Float64Array(10))).toThrow(/10 bins, expected/);
  });

  it("handles zeros, tiny values and an empty histogram", () => {
    const h = new AbsHistogram();
    expect(h.quantile(0.9995)).toBe(0);
    h.add(new Float32Array([0, 0, 0, 1e-30, -2, 4]));
    expect(h.quantile(0)).toBeLessThan(1e-7);
    expect(Math.abs(h.quantile(1) - 4) / 4).toBeLessThan(2 ** -8);
  });
});
