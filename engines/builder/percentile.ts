// A percentile of |x| over every value a tensor takes during calibration, in bounded memory: a
// histogram over the float32 bit pattern of |x| (which orders like the values), 2^8 bins per power
// of two, with linear interpolation inside the bin that holds the wanted rank.

const MANTISSA_BITS = 8;
const SHIFT = 23 - MANTISSA_BITS;
/** |x| below 2^-24 counts as the bottom bin: far under any int8 step a scale could come from */
const LOW_EXPONENT = 127 - 24;
const FIRST = LOW_EXPONENT << MANTISSA_BITS;
const BINS = (255 << MANTISSA_BITS) - FIRST;
/** bins of the histogram (engines/native/kernels/stats.cu counts the same ones on the GPU) */
export const HISTOGRAM_BINS = BINS;

const bitsView = (v: Float32Array) => new Uint32Array(v.buffer, v.byteOffset, v.length);

export class AbsHistogram {
  private readonly counts = new Float64Array(BINS);
  private n = 0;

  add(values: Float32Array): void {
    const bits = bitsView(values);
    const counts = this.counts;
    for (let k = 0; k < bits.length; k++) {
      const b = ((bits[k] & 0x7fffffff) >>> SHIFT) - FIRST;
      counts[b < 0 ? 0 : b >= BINS ? BINS - 1 : b]++;
    }
    this.n += values.length;
  }

  /** Adds counts per bin made elsewhere (HISTOGRAM_BINS of them, this class's bins). */
  addCounts(counts: Float64Array): void {
    if (counts.length !== BINS) throw new Error(`histogram: ${counts.length} bins, expected ${BINS}`);
    for (let b = 0; b < BINS; b++) {
      this.counts[b] += counts[b];
      this.n += counts[b];
    }
  }

  get count(): number {
    return this.n;
  }

  /** The value at rank floor(p·(n−1)) of the sorted |x|, as sorting them all would give, to within a bin. */
  quantile(p: number): number {
    if (this.n === 0) return 0;
    const rank = Math.min(this.n - 1, Math.floor(p * (this.n - 1)));
    let below = 0;
    for (let b = 0; b < BINS; b++) {
      const c = this.counts[b];
      if (below + c > rank) {
        const lo = b === 0 ? 0 : binStart(b);
        return lo + (binStart(b + 1) - lo) * ((rank - below + 0.5) / c);
      }
      below += c;
    }
    return binStart(BINS);
  }
}

function binStart(b: number): number {
  const f = new Float32Array(1);
  bitsView(f)[0] = (b + FIRST) << SHIFT;
  return f[0];
}
