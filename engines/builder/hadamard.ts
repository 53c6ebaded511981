// Hadamard rotations over a whole width n = m · 2^k, m ∈ {1, 12, 20}: H_n = H_m ⊗ H_{2^k}, with H_m
// by Paley's first construction (q = 11, 19) and H_{2^k} by Sylvester's, both normalized. This
// covers every published Mamba width (1536 = 12·128, 3072 = 12·256, 5120 = 20·256 and the powers of
// two); x · H_n is a fast Walsh–Hadamard transform within each block of 2^k values followed by an
// m-point mix across the blocks.

export interface HadamardFactors {
  /** the non-power-of-two factor (1: none) */
  m: number;
  /** the power-of-two block */
  b: number;
}

const PALEY = [12, 20];

/** How a width factors into m · 2^k; null when no m of 1, 12 or 20 works (the caller falls back to blocks). */
export function hadamardFactors(n: number): HadamardFactors | null {
  for (const m of [1, ...PALEY]) {
    if (n % m) continue;
    const b = n / m;
    if ((b & (b - 1)) === 0) return { m, b };
  }
  return null;
}

/** Largest power of two dividing n: the block of the block-diagonal rotation (widths of no other kind). */
export function powerOfTwoBlock(n: number): number {
  let b = 1;
  while (n % (b * 2) === 0) b *= 2;
  return b;
}

/** The rotation a width gets: whole-width where it factors, else block-diagonal over powers of two. */
export function rotationOf(n: number): HadamardFactors {
  return hadamardFactors(n) ?? { m: 1, b: powerOfTwoBlock(n) };
}

/** Unnormalized Paley-I Hadamard matrix of order q + 1 (q prime, q ≡ 3 mod 4), entries ±1, row-major. */
export function paley(order: number): Int8Array {
  const q = order - 1;
  const residue = new Set<number>();
  for (let x = 1; x < q; x++) residue.add((x * x) % q);
  const chi = (x: number) => (x === 0 ? 0 : residue.has(x) ? 1 : -1);
  const H = new Int8Array(order * order);
  for (let i = 0; i < order; i++) {
    for (let j = 0; j < order; j++) {
      // S = [[0, 1ᵀ], [−1, Q]] with Q[i][j] = χ(j − i), skew for q ≡ 3 (mod 4); H = I + S
      const s = i === 0 ? (j === 0 ? 0 : 1) : j === 0 ? -1 : chi((((j - i) % q) + q) % q);
      H[i * order + j] = (i === j ? 1 : 0) + s;
    }
  }
  return H;
}

/** Normalized H_m (m = 1, 12 or 20) as float32, row-major. */
export function hadamardFactor(m: number): Float32Array {
  if (m === 1) return Float32Array.of(1);
  const s = 1 / Math.sqrt(m);
  return Float32Array.from(paley(m), (v) => v * s);
}

/** Normalized Sylvester Hadamard matrix of size b (a power of two): orthogonal and symmetric. */
export function sylvester(b: number): Float32Array {
  const H = new Float32Array(b * b);
  const s = 1 / Math.sqrt(b);
  for (let i = 0; i < b; i++) for (let j = 0; j < b; j++) H[i * b + j] = popcount(i & j) % 2 ? -s : s;
  return H;
}

function popcount(x: number): number {
  let c = 0;
  for (; x; x &= x - 1) c++;
  return c;
}

/** v ← v · H_n in place (v of length n, in blocks of f.b; blocks beyond m · b rotate alone). */
export function rotateVector(v: Float64Array, f: HadamardFactors, Hm: Float32Array): void {
  const { m, b } = f;
  const n = v.length;
  for (let k0 = 0; k0 < n; k0 += b) {
    for (let len = 1; len < b; len <<= 1) {
      for (let i = k0; i < k0 + b; i += 2 * len) {
        for (let j = i; j < i + len; j++) {
          const x = v[j];
          const y = v[j + len];
          v[j] = x + y;
          v[j + len] = x - y;
        }
      }
    }
  }
  const post = 1 / Math.sqrt(b);
  if (m === 1) {
    for (let i = 0; i < n; i++) v[i] *= post;
    return;
  }
  const col = new Float64Array(m);
  for (let c = 0; c < b; c++) {
    for (let a = 0; a < m; a++) col[a] = v[a * b + c];
    for (let a2 = 0; a2 < m; a2++) {
      let acc = 0;
      for (let a = 0; a < m; a++) acc += col[a] * Hm[a * m + a2];
      v[a2 * b + c] = acc * post;
    }
  }
}
