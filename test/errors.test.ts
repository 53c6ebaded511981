// Bad input to the CLI: one line naming the problem, exit code 1, no stack trace.
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cli } from "./helpers/cli.js";
import { fixtureRoot } from "./helpers/fixtures.js";

const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-errors-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A copy of a fixture, changed by `edit`. */
function broken(fixture: string, edit: (dir: string) => void): string {
  const dir = mkdtempSync(join(scratch, "m-"));
  cpSync(join(fixtureRoot, fixture), dir, { recursive: true });
  edit(dir);
  return dir;
}

function editConfig(dir: string, change: (c: Record<string, unknown>) => void) {
  const c = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  change(c);
  writeFileSync(join(dir, "config.json"), JSON.stringify(c));
}

function expectOneLineError(args: string[], pattern: RegExp) {
  const r = cli(args);
  expect(r.code).toBe(1);
  expect(r.stdout).toBe("");
  const lines = r.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^mamba-edge: /);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

const logits = (dir: string) => ["logits", "--model", dir, "--tokens", "1,2,3"];

describe("CLI errors", () => {
  it("names a missing model directory", () => {
    expectOneLineError(logits(join(scratch, "nope")), /nope: no such directory/);
  });

  it("names a missing config.json", () => {
    const dir = broken("mamba1-tied", (d) => rmSync(join(d, "config.json")));
    expectOneLineError(logits(dir), /config\.json: missing/);
  });

  it("names a config that is not JSON", () => {
    const dir = broken("mamba1-tied", (d) => writeFileSync(join(d, "config.json"), "{ not json"));
    expectOneLineError(logits(dir), /config\.json: not valid JSON/);
  });

  it("names an unknown model_type", () => {
    const dir = broken("mamba1-tied", (d) => editConfig(d, (c) => (c.model_type = "llama")));
    expectOneLineError(logits(dir), /unknown model_type "llama" \(expected "mamba" or "mamba2"\)/);
  });

  it("names a config field of the wrong type", () => {
    const dir = broken("mamba2-groups", (d) => editConfig(d, (c) => (c.hidden_size = "big")));
    expectOneLineError(logits(dir), /field hidden_size: expected an integer ≥ 1, found "big"/);
  });

  it("names missing weights", () => {
    const dir = broken("mamba1-tied", (d) => rmSync(join(d, "model.safetensors")));
    expectOneLineError(logits(dir), /no model\.safetensors or model\.safetensors\.index\.json/);
  });

  it("names a truncated safetensors file", () => {
    const dir = broken("mamba1-tied", (d) => {
      const f = join(d, "model.safetensors");
      truncateSync(f, statSync(f).size - 100);
    });
    expectOneLineError(logits(dir), /model\.safetensors: truncated: tensor .* ends at byte \d+, file has \d+/);
  });

  it("names a missing shard", () => {
    const dir = broken("mamba1-fp16-sharded", (d) => rmSync(join(d, "model-00003-of-00005.safetensors")));
    expectOneLineError(logits(dir), /model-00003-of-00005\.safetensors: cannot open \(ENOENT\)/);
  });

  it("names a missing tensor and its expected shape", () => {
    // The config claims a third layer that the weights do not have.
    const dir = broken("mamba1-tied", (d) => editConfig(d, (c) => (c.num_hidden_layers = 3)));
    expectOneLineError(logits(dir), /tensor backbone\.layers\.2\.norm\.weight is missing \(expected shape \[32\]\)/);
  });

  it("names a tensor of the wrong shape, with expected and found", () => {
    const dir = broken("mamba1-tied", (d) => editConfig(d, (c) => (c.state_size = 4)));
    expectOneLineError(logits(dir), /tensor backbone\.layers\.0\.mixer\.x_proj\.weight has shape \[18,64\], expected \[10,64\]/);
  });

  it("names a missing lm_head when the head is untied", () => {
    const dir = broken("mamba1-tied", (d) => editConfig(d, (c) => (c.tie_word_embeddings = false)));
    expectOneLineError(logits(dir), /lm_head\.weight is missing/);
  });

  it("rejects tokens outside the vocabulary", () => {
    expectOneLineError(["logits", "--model", join(fixtureRoot, "mamba1-tied"), "--tokens", "1,97"], /--tokens: .*\[0, 97\), found "97"/);
  });

  it("names a missing tokenizer when text is needed", () => {
    expectOneLineError(["generate", "--model", join(fixtureRoot, "mamba1-tied"), "--prompt", "hi"], /tokenizer\.json: missing/);
  });

  it("rejects unknown flags and out-of-range options", () => {
    expectOneLineError(["logits", "--tokens", "1", "--colour", "red"], /Unknown argument/);
    expectOneLineError(["generate", "--prompt", "x", "--top-p", "2"], /--top-p: expected a number in \[0, 1\], found 2/);
    expectOneLineError(
      ["bench", "--model", join(fixtureRoot, "mamba1-tied"), "--rounds", "0"],
      /--rounds: expected a positive integer, found 0/,
    );
  });
});

describe("bench", () => {
  it("reports the median of its timed rounds, with the fastest and slowest beside it", () => {
    const r = cli([
      "bench",
      "--model",
      join(fixtureRoot, "mamba1-tied"),
      "--prompt-len",
      "8",
      "--gen-tokens",
      "3",
      "--rounds",
      "3",
      "--batch",
      "1",
      "2",
      "--json",
    ]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.decodeRounds).toBe(3);
    for (const [k, B] of [
      ["batch1", 1],
      ["batch2", 2],
    ] as const) {
      const d = j.decode[k];
      expect(d.msPerStepMin).toBeGreaterThan(0);
      expect(d.msPerStepMin).toBeLessThanOrEqual(d.msPerStep);
      expect(d.msPerStep).toBeLessThanOrEqual(d.msPerStepMax);
      expect(Math.abs((d.tokensPerSecond * d.msPerStep) / (B * 1000) - 1)).toBeLessThan(0.01); // both rounded in the JSON (to 4 significant digits)
    }
  });
});
