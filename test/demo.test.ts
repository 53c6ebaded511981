// The bundled demo models through the real CLI: text in, text out, reproducible with a seed.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cli, root } from "./helpers/cli.js";

const demos = ["mamba1-brown", "mamba2-brown"].filter((d) => existsSync(join(root, "models", d)));

describe("demo models", () => {
  it("with no model given, builds the default engine once and generates with it", () => {
    const r = cli(["generate", "--prompt", "The jury said", "--max-tokens", "12", "--seed", "2"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.startsWith("The jury said")).toBe(true);
    expect(existsSync(join(root, "models", "engines", "mamba2-brown-w8a8.mamba", "manifest.json"))).toBe(true);
    const again = cli(["generate", "--prompt", "The jury said", "--max-tokens", "12", "--seed", "2"]);
    expect(again.stdout).toBe(r.stdout);
    expect(again.stderr).not.toMatch(/building the default engine/);
  });

  it("ships both demo models", () => {
    expect(demos).toEqual(["mamba1-brown", "mamba2-brown"]);
  });

  for (const demo of demos) {
    const model = join(root, "models", demo);

    it(`${demo}: the same seed gives the same text, another seed other text`, () => {
      const run = (seed: number) =>
        cli(["generate", "--model", model, "--prompt", "The jury said", "--max-tokens", "24", "--seed", String(seed)]);
      const a = run(3);
      const b = run(3);
      const c = run(4);
      expect(a.code).toBe(0);
      expect(a.stdout.startsWith("The jury said")).toBe(true);
      expect(a.stdout.length).toBeGreaterThan("The jury said".length + 20);
      expect(a.stdout).toBe(b.stdout);
      expect(c.stdout).not.toBe(a.stdout);
      expect(a.stderr).toMatch(/generated at [\d.]+ tokens\/s/);
    });

    it(`${demo}: reads prompts line by line from a pipe`, () => {
      const r = cli(["generate", "--model", model, "--max-tokens", "8", "--seed", "1"], "The jury said\nIn the morning\n");
      expect(r.code).toBe(0);
      const lines = r.stdout.trim().split("\n");
      expect(lines[0].startsWith("The jury said")).toBe(true);
      expect(r.stdout).toMatch(/\nIn the morning/);
    });

    it(`${demo}: scores English far better than chance`, () => {
      const r = cli(["eval", "--model", model, "--text", join(root, "data", "brown", "heldout.txt"), "--max-tokens", "2000", "--json"]);
      expect(r.code).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.tokens).toBe(1999);
      // chance is the vocabulary size (4096); a trained model is under 300 on Brown
      expect(out.perplexity).toBeLessThan(300);
      expect(out.bitsPerByte).toBeGreaterThan(0);
    });
  }
});
