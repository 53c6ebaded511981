// Keeps constrained text valid UTF-8. A byte-level vocabulary has tokens that are single bytes,
// and XGrammar's matcher lets a string take a byte that breaks a multi-byte character (the decoded
// text then shows U+FFFD or a control character, and no longer parses); so a token is allowed only
// where its bytes continue the text as UTF-8. The decoder state is one of eight: no character open,
// or how many continuation bytes a character still needs and the range its next one must be in.

/** GPT-2's byte-level alphabet: the character each byte is written as in a vocabulary. */
function byteLevelDecoder(): Map<string, number> {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) map.set(String.fromCodePoint(printable(b) ? b : 256 + extra++), b);
  return map;
}

/** A vocabulary entry's bytes; null when it is not byte-level text. */
export function tokenBytes(text: string, alphabet = byteLevelDecoder()): Uint8Array | null {
  const out: number[] = [];
  for (const ch of text) {
    const b = alphabet.get(ch);
    if (b === undefined) return null;
    out.push(b);
  }
  return Uint8Array.from(out);
}

const START = 0;
const INVALID = 255;
// states: [needed continuation bytes, lowest and highest next byte]
const states: [number, number, number][] = [
  [0, 0, 0],
  [1, 0x80, 0xbf],
  [2, 0x80, 0xbf],
  [2, 0xa0, 0xbf], // after E0 (no overlong forms)
  [2, 0x80, 0x9f], // after ED (no surrogates)
  [3, 0x80, 0xbf],
  [3, 0x90, 0xbf], // after F0
  [3, 0x80, 0x8f], // after F4 (up to U+10FFFF)
];

function state(need: number, lo = 0x80, hi = 0xbf): number {
  if (need === 0) return START;
  return states.findIndex(([n, a, b]) => n === need && a === lo && b === hi);
}

/** The decoder's state after byte `b` in state `s`. */
function step(s: number, b: number): number {
  const [need, lo, hi] = states[s];
  if (need > 0) return b >= lo && b <= hi ? state(need - 1) : INVALID;
  if (b < 0x80) return START;
  if (b >= 0xc2 && b <= 0xdf) return state(1);
  if (b === 0xe0) return state(2, 0xa0, 0xbf);
  if (b === 0xed) return state(2, 0x80, 0x9f);
  if (b >= 0xe1 && b <= 0xef) return state(2);
  if (b === 0xf0) return state(3, 0x90, 0xbf);
  if (b === 0xf4) return state(3, 0x80, 0x8f);
  if (b >= 0xf1 && b <= 0xf3) return state(3);
  return INVALID;
}

export class Utf8Guard {
  /** per state: the tokens allowed (one bit each, XGrammar's layout) */
  readonly masks: Int32Array[];
  /** per state: the state after each token */
  private readonly next: Uint8Array[];

  constructor(vocab: readonly string[]) {
    const alphabet = byteLevelDecoder();
    const bytes = vocab.map((t) => tokenBytes(t, alphabet));
    const words = Math.ceil(vocab.length / 32);
    this.masks = states.map(() => new Int32Array(words));
    this.next = states.map(() => new Uint8Array(vocab.length).fill(INVALID));
    for (let s = 0; s < states.length; s++) {
      for (let t = 0; t < vocab.length; t++) {
        const b = bytes[t];
        if (b === null) continue;
        let at = s;
        for (let i = 0; i < b.length && at !== INVALID; i++) at = step(at, b[i]);
        if (at === INVALID) continue;
        this.next[s][t] = at;
        this.masks[s][t >> 5] |= 1 << (t & 31);
      }
    }
  }

  get start(): number {
    return START;
  }

  /** The state after `token`; throws on a token that breaks the text (the mask excludes those). */
  after(s: number, token: number): number {
    const n = this.next[s][token];
    if (n === INVALID) throw new Error(`token ${token} would break UTF-8 here`);
    return n;
  }
}
