// The bundled demo models through the real CLI: text in, text out, reproducible with a seed.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cli, root } from "./helpers/cli.js";

const demos = ["mamba1-brown", "mamba2-brown"].filter((d) => existsSync(join(root, "models", d)));

describe("demo models", () => {
  it("with no model given, builds the default engine once and generates with it", () => {
    // an installed package of its own (the compiled CLI, the demo model, the calibration text), so the
    // engine is built here and not found already built in this checkout
    const pkg = mkdtempSync(join(tmpdir(), "mamba-edge-pkg-"));
    try {
      cpSync(join(root, "package.json"), join(pkg, "package.json"));
      cpSync(join(root, "bin"), join(pkg, "bin"), { recursive: true });
      cpSync(join(root, "dist"), join(pkg, "dist"), { recursive: true });
      mkdirSync(join(pkg, "models"));
      symlinkSync(join(root, "models", "mamba2-brown"), join(pkg, "models", "mamba2-brown"));
      symlinkSync(join(root, "data"), join(pkg, "data"));
      symlinkSync(join(root, "node_modules"), join(pkg, "node_modules"));
      mkdirSync(join(pkg, "engines", "ort-ops"), { recursive: true });
      symlinkSync(join(root, "engines", "ort-ops", "build"), join(pkg, "engines", "ort-ops", "build"));
      const engine = join(pkg, "models", "engines", "mamba2-brown-w8a8.mamba");
      const generate = () =>
        spawnSync(
          process.execPath,
          [join(pkg, "bin", "mamba-edge.js"), "generate", "--prompt", "The jury said", "--max-tokens", "12", "--seed", "2"],
          {
            cwd: pkg,
            encoding: "utf8",
            timeout: 300_000,
          },
        );

      const r = generate();
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        /^building the default engine models\/engines\/mamba2-brown-w8a8\.mamba from models\/mamba2-brown \(once\)$/m,
      );
      expect(r.stdout.startsWith("The jury said")).toBe(true);
      const m = JSON.parse(readFileSync(join(engine, "manifest.json"), "utf8"));
      expect(m.quant.recipe).toBe("w8a8");
      const calib = readFileSync(join(root, "data", "brown", "calib.txt"));
      expect(m.calibration.textSha256).toBe(createHash("sha256").update(calib).digest("hex"));
      const built = statSync(join(engine, "manifest.json")).mtimeMs;

      const again = generate();
      expect(again.status, again.stderr).toBe(0);
      expect(again.stdout).toBe(r.stdout);
      expect(again.stderr).not.toMatch(/building the default engine/);
      expect(statSync(join(engine, "manifest.json")).mtimeMs).toBe(built);
    } finally {
      rmSync(pkg, { recursive: true, force: true });
    }
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
