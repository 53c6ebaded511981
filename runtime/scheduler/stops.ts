// Stop strings over streamed text: the stop string itself is never emitted, and text that could be
// the start of one is held back until the next tokens decide it.

export class StopMatcher {
  private text = "";
  private emitted = 0;

  constructor(private readonly stops: readonly string[]) {}

  /** Adds generated text; returns what may be shown now and whether a stop string was reached. */
  push(delta: string): { emit: string; stopped: boolean } {
    this.text += delta;
    let cut = -1;
    for (const s of this.stops) {
      const at = this.text.indexOf(s, Math.max(0, this.emitted - s.length + 1));
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.text = this.text.slice(0, cut);
      return { emit: this.take(cut), stopped: true };
    }
    return { emit: this.take(this.text.length - this.heldBack()), stopped: false };
  }

  /** The rest, once generation has ended without a stop string. */
  flush(): string {
    return this.take(this.text.length);
  }

  /** All text up to the stop string (or the end). */
  get full(): string {
    return this.text;
  }

  /** Length of the longest tail of the text that is a proper prefix of a stop string. */
  private heldBack(): number {
    let hold = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.text.length); n > hold; n--) {
        if (this.text.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }

  private take(upTo: number): string {
    const out = upTo > this.emitted ? this.text.slice(this.emitted, upTo) : "";
    this.emitted = Math.max(this.emitted, upTo);
    return out;
  }
}
