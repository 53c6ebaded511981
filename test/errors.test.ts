// Bad input to the CLI: one line naming the problem, exit code 1, no stack trace.
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { configSchema } from "../runtime/daemon/config.js";
import { cli } from "./helpers/cli.js";
import { demoModel, serve, tempDir } from "./helpers/daemon.js";
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

function expectOneLineError(args: string[], pattern: RegExp, input?: string) {
  const r = cli(args, input);
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

describe("CLI papercuts", () => {
  it("echoes a number flag's text when it is not a number", () => {
    expectOneLineError(
      ["generate", "--prompt", "x", "--temperature", "abc"],
      /^mamba-edge: --temperature: expected a number, found "abc"$/,
    );
    expectOneLineError(["generate", "--prompt", "x", "--top-k=many"], /^mamba-edge: --top-k: expected a number, found "many"$/);
    expectOneLineError(["serve", "--stdio", "--max-queue", "lots"], /^mamba-edge: --max-queue: expected a number, found "lots"$/);
  });

  it("puts a refused choice on one line with the choices", () => {
    expectOneLineError(
      ["generate", "--prompt", "x", "--backend", "gpu"],
      /^mamba-edge: --backend: expected one of ref, ort, cuda\b.*, found "gpu"/,
    );
  });

  it("refuses a chat session id that could name a path before the first turn", () => {
    expectOneLineError(
      ["chat", "--model", demoModel, "--session", "../x"],
      /^mamba-edge: --session: expected .*, found "\.\.\/x"$/,
      "The jury said\n",
    );
  });

  it("piped chat exits 1 after a failed turn or an unknown command, and answers the other lines", () => {
    const args = ["chat", "--model", demoModel, "--max-tokens", "3", "--temperature", "0"];
    const tooLong = "word ".repeat(5000); // over the 4096-token prompt limit
    const r = cli(args, `The jury said\n${tooLong}\n/colour\nThe city\n`);
    expect(r.code).toBe(1);
    expect(r.stdout.split("\n").filter(Boolean)).toHaveLength(2);
    expect(r.stderr).toMatch(/^error \(too_large\): /m);
    expect(r.stderr).toMatch(/^unknown command \/colour: try \/help$/m);
    expect(r.stderr.trim().split("\n").at(-1)).toBe("mamba-edge: chat: 2 lines of the input failed (see above)");
    expect(cli(args, "The jury said\n/stats\n").code).toBe(0);
  });

  it("takes --model DIR/config.json as DIR, and names any other file", () => {
    const dir = join(fixtureRoot, "mamba1-tied");
    const byDir = cli(logits(dir));
    expect(byDir.code, byDir.stderr).toBe(0);
    expect(cli(logits(join(dir, "config.json"))).stdout).toBe(byDir.stdout);
    expectOneLineError(
      logits(join(dir, "model.safetensors")),
      /--model: expected a checkpoint directory \(holding config\.json\), found the file .*model\.safetensors$/,
    );
  });

  it("lists chat's slash commands in chat --help, as /help does", () => {
    const help = cli(["chat", "--help"]);
    expect(help.code).toBe(0);
    const listed = (text: string) => [...text.matchAll(/^ {2}(\/[a-z]+) /gm)].map((m) => m[1]);
    expect(listed(help.stdout)).toEqual(["/reset", "/stats", "/help", "/quit"]);
    const piped = cli(["chat", "--model", demoModel], "/help\n");
    expect(piped.code).toBe(0);
    expect(listed(piped.stderr)).toEqual(listed(help.stdout));
    expect(help.stdout).toMatch(/\/exit/);
  });

  it("gives every daemon setting a serve flag", () => {
    const help = cli(["serve", "--help"]).stdout;
    const kebab = (f: string) => f.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
    const missing = Object.keys(configSchema.shape).filter((f) => !new RegExp(`--${kebab(f)}\\b`).test(help));
    expect(missing).toEqual([]);
  });

  it("serve takes the settings that had no flag from its flags", async () => {
    expectOneLineError(["serve", "--stdio", "--prefill-chunk", "0"], /^mamba-edge: --prefill-chunk: Too small/);
    expectOneLineError(["serve", "--stdio", "--session-memory-bytes", "-1"], /^mamba-edge: --session-memory-bytes: Too small/);
    const d = await serve([
      "--stdio",
      "--model",
      demoModel,
      "--state-dir",
      tempDir(),
      "--max-message-bytes",
      "200",
      "--prefill-chunk",
      "2",
      "--session-memory-bytes",
      "0",
      "--metrics-host",
      "127.0.0.1",
      "--no-reject-unauthorized",
    ]);
    d.send({ id: "big", prompt: "x".repeat(300) });
    expect(await d.next((r) => r.id === "big")).toMatchObject({
      error: { code: "too_large", message: expect.stringContaining("the limit is 200") },
    });
    d.send({ id: "ok", prompt: "The jury said", max_tokens: 2, temperature: 0 });
    expect(await d.next((r) => r.id === "ok")).toMatchObject({ finish_reason: "length" });
    d.proc.stdin!.end();
    expect(await d.exited).toBe(0);
  });

  it("refuses more than two threads for the reference, which runs on one or two", () => {
    expectOneLineError(
      ["generate", "--model", demoModel, "--prompt", "x", "--threads", "3"],
      /^mamba-edge: --threads: the reference \(--model, --random\) runs on 1 or 2 threads, found 3$/,
    );
    expect(cli(["generate", "--model", demoModel, "--prompt", "x", "--max-tokens", "2", "--threads", "2"]).code).toBe(0);
  });
});
