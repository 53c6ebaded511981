// Grammar rules (XGrammar's EBNF) for bounded JSON numbers and integers, written here because
// XGrammar 0.1.27's own let values past their bounds (2.9 under "maximum": 2; 189 in -180..180).
// Numbers come out as -?int(.frac)? with at most six fraction digits, integers as -?int.

const fracDigits = 6;
/** the bound used where the schema gives none: fifteen integer digits */
export const unbounded = 1e15 - 1;

const lit = (s: string) => `"${s}"`;

/** EBNF alternatives for the decimal strings of the integers in [a, b] (0 <= a <= b), no leading zeros. */
export function intRange(a: number, b: number): string[] {
  const sa = String(a);
  const sb = String(b);
  if (sa.length < sb.length) {
    const out = intRange(a, 10 ** sa.length - 1);
    for (let len = sa.length + 1; len < sb.length; len++) out.push(`[1-9] [0-9]{${len - 1}}`);
    return out.concat(intRange(10 ** (sb.length - 1), b));
  }
  return sameLength(sa, sb);
}

/** Digit strings of one length between sa and sb (numerically, sa <= sb). */
function sameLength(sa: string, sb: string): string[] {
  if (sa === sb) return [lit(sa)];
  let i = 0;
  while (sa[i] === sb[i]) i++;
  const prefix = sa.slice(0, i);
  const x = Number(sa[i]);
  const y = Number(sb[i]);
  const lo = sa.slice(i + 1);
  const hi = sb.slice(i + 1);
  const n = lo.length;
  const seq = (...parts: string[]) => parts.filter((p) => p !== "").join(" ");
  const any = n > 0 ? `[0-9]{${n}}` : "";
  const head = prefix ? lit(prefix) : "";
  if (/^0*$/.test(lo) && /^9*$/.test(hi)) return [seq(head, `[${x}-${y}]`, any)];
  const out: string[] = [];
  for (const alt of sameLength(lo, "9".repeat(n))) out.push(seq(head, lit(String(x)), alt));
  if (x + 1 <= y - 1) out.push(seq(head, `[${x + 1}-${y - 1}]`, any));
  for (const alt of sameLength("0".repeat(n), hi)) out.push(seq(head, lit(String(y)), alt));
  return out;
}

const group = (alts: string[]) => `(${alts.map((a) => `(${a})`).join(" | ")})`;
const anyFraction = `("." [0-9]{1,${fracDigits}})?`;
const zeroFraction = `("." [0]{1,${fracDigits}})?`;

/** Magnitudes m with u <= m <= w (integers u <= w): int in [u, w - 1] with any fraction, or w.000 */
function magnitude(u: number, w: number): string {
  const alts = [`${lit(String(w))} ${zeroFraction}`];
  if (u <= w - 1) alts.unshift(`${group(intRange(u, w - 1))} ${anyFraction}`);
  return group(alts);
}

/** The right-hand side of a rule for the numbers x with lo <= x <= hi (whole numbers, lo <= hi). */
export function numberRule(lo: number, hi: number): string {
  const alts: string[] = [];
  if (hi >= 0) alts.push(magnitude(Math.max(lo, 0), hi));
  if (lo < 0) alts.push(`"-" ${magnitude(Math.max(0, -hi), -lo)}`);
  return group(alts);
}

/** The right-hand side of a rule for the integers lo..hi (lo <= hi). */
export function integerRule(lo: number, hi: number): string {
  const alts: string[] = [];
  if (hi >= 0) alts.push(group(intRange(Math.max(lo, 0), hi)));
  if (lo < 0) alts.push(`"-" ${group(intRange(Math.max(1, -hi), -lo))}`);
  return group(alts);
}
