// Text <-> tokens through Hugging Face's own tokenizers library (Rust, via its Node binding), so
// encoding is byte-for-byte what transformers does with the same tokenizer.json.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "tokenizers";
import { UserError } from "./errors.js";

export class Tokenizer {
  private constructor(private readonly tok: HfTokenizer, readonly path: string) {}

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
 * Turns a growing list of token ids into text deltas. A token can end in the middle of a UTF-8
 * character; such a tail decodes to U+FFFD and is held back until the next token completes it.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private emitted = "";

  constructor(private readonly tokenizer: Tokenizer) {}

  async push(id: number): Promise<string> {
    this.ids.push(id);
    const text = await this.tokenizer.decode(this.ids);
    if (text.endsWith("\uFFFD")) return "";
    const delta = text.startsWith(this.emitted) ? text.slice(this.emitted.length) : "";
    this.emitted = text;
    return delta;
  }

  get text(): string {
    return this.emitted;
  }
}
