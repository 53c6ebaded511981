// Last-word (cloze) and next-token accuracy of `eval`: the items are the sentence-final words, and
// the counts agree with the model's own logits, checked position by position.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { RefBackend } from "../runtime/backends/ref.js";
import { clozeItems, evaluate } from "../runtime/eval.js";
import { MambaModel } from "../engines/model/model.js";
import { Tokenizer } from "../engines/model/tokenizer.js";
import { cli, root } from "./helpers/cli.js";

const demo = join(root, "models", "mamba1-brown");

describe("last-word accuracy", () => {
  it("takes the sentence-final words of 3+ letters as items, with exactly their tokens", async () => {
    const tok = Tokenizer.load(demo);
    const text = 'The jury said it was a fine election.\nHe ran to the market!\nWho is it?\n"I know the answer."\nNo way 42.\n';
    const { ids, offsets } = await tok.encodeWithOffsets(text);
    const items = clozeItems(text, offsets);
    const words = await Promise.all(items.map((c) => tok.decode(ids.slice(c.start, c.end))));
    expect(words.map((w) => w.trim())).toEqual(["election", "market", "answer"]); // "it" is too short, "42" no word
    for (const w of words) expect(w.startsWith(" ")).toBe(true); // the token of " word" carries its space
  });

  it("counts a word as right only when every one of its tokens is the argmax, as the logits say", async () => {
    const text = readFileSync(join(root, "data", "brown", "heldout.txt"), "utf8").slice(0, 3500);
    const tok = Tokenizer.load(demo);
    const { ids, offsets } = await tok.encodeWithOffsets(text);
    const items = clozeItems(text, offsets);
    expect(items.length).toBeGreaterThan(10);
    const model = MambaModel.load(demo);
    const r = await evaluate(new RefBackend(model), ids, Buffer.byteLength(text), 256, () => {}, items);
    // independently: one prefill over the text, every position's argmax
    const V = model.config.vocabSize;
    const logits = model.prefill(Int32Array.from(ids.slice(0, -1)), model.newState(), true);
    const argmax = (t: number) => {
      let best = 0;
      for (let i = 1; i < V; i++) if (logits[t * V + i] > logits[t * V + best]) best = i;
      return best;
    };
    const right = Array.from({ length: ids.length - 1 }, (_, t) => argmax(t) === ids[t + 1]);
    const correct = items.filter((c) => right.slice(c.start - 1, c.end - 1).every(Boolean)).length;
    expect(r.cloze).toEqual({ items: items.length, correct, accuracy: correct / items.length });
    expect(r.nextTokenAccuracy).toBeCloseTo(right.filter(Boolean).length / right.length, 12);
    expect(r.nextTokenAccuracy).toBeGreaterThan(0.1); // chance is 1/4096
  });

  it("is reported by `eval`", () => {
    const r = cli(["eval", "--model", demo, "--text", join(root, "data", "brown", "heldout.txt"), "--max-tokens", "1500", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.cloze.items).toBeGreaterThan(15);
    expect(out.cloze.accuracy).toBeGreaterThanOrEqual(0);
    expect(out.nextTokenAccuracy).toBeGreaterThan(0.1);
  });
});
