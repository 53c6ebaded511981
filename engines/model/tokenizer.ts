// Text <-> tokens through Hugging Face's own tokenizers library (Rust, via its Node binding), so
// encoding is byte-for-byte what transformers does with the same tokenizer.json.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "tokenizers";
import { UserError } from "../errors.js";

export class Tokenizer {
  private constructor(
    private readonly tok: HfTokenizer,
    readonly path: string,
  ) {}

  static load(dir: string): Tokenizer {
    const path = join(dir, "tokenizer.json");
    if (!existsSync(path)) throw new UserError(`${path}: missing (needed to turn text into tokens)`);
    try {
      return new Tokenizer(HfTokenizer.fromFile(path), path);
    } catch (e) {
      throw new UserError(`${path}: not a valid tokenizer (${String((e as Error).message ?? e).split("\n")[0]})`);
    }
  }

  async encode(text: string): Promise<number[]> {
    const enc = await this.tok.encode(text, null, { addSpecialTokens: false });
    return enc.getIds();
  }

  /** ids and, for each, the [start, end) range of the text (in UTF-16 units) it came from */
  async encodeWithOffsets(text: string): Promise<{ ids: number[]; offsets: [number, number][] }> {
    const enc = await this.tok.encode(text, null, { addSpecialTokens: false });
    return { ids: enc.getIds(), offsets: enc.getOffsets() as [number, number][] };
  }

  async decode(ids: number[]): Promise<string> {
    return this.tok.decode(ids, true);
  }

  tokenId(token: string): number | null {
    return this.tok.tokenToId(token);
  }

  get vocabSize(): number {
    return this.tok.getVocabSize(true);
  }
}

/**
 * Turns a growing list of token ids into text deltas. Each step decodes only a short window (the
 * tokens since the last emitted text plus a few before them, which settle word boundaries), so the
 * cost per token does not grow with the length of the text. A token can end in the middle of a
 * UTF-8 character; such a tail decodes to U+FFFD and is held back until the next token completes it.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private prefixOffset = 0; // window start
  private readOffset = 0; // tokens before this are emitted
  private emitted = "";

  constructor(private readonly tokenizer: Tokenizer) {}

  async push(id: number): Promise<string> {
    this.ids.push(id);
    const [before, now] = await Promise.all([
      this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset)),
      this.tokenizer.decode(this.ids.slice(this.prefixOffset)),
    ]);
    if (now.length <= before.length || now.endsWith("\uFFFD") || !now.startsWith(before)) return "";
    const delta = now.slice(before.length);
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.emitted += delta;
    return delta;
  }

  get text(): string {
    return this.emitted;
  }
}
