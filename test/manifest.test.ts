// The engine loader against hostile or broken packages: every manifest path stays inside the
// package, the manifest is validated as a whole, and its config agrees with the weights it lists.
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bin, cli, root } from "./helpers/cli.js";
import { fixtureRoot } from "./helpers/fixtures.js";

const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-manifest-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
const base = join(scratch, "base.mamba");

type Raw = Record<string, unknown>;

/** A copy of the base engine with its manifest (or its files) changed. */
function damaged(edit: (m: Raw, dir: string) => Raw | null | void, text?: string): string {
  const dir = mkdtempSync(join(scratch, "d-")) + "/e.mamba";
  cpSync(base, dir, { recursive: true });
  const file = join(dir, "manifest.json");
  if (text !== undefined) writeFileSync(file, text);
  else {
    const m = JSON.parse(readFileSync(file, "utf8")) as Raw;
    const out = edit(m, dir);
    writeFileSync(file, JSON.stringify(out === undefined ? m : out));
  }
  return dir;
}

/** Opening the engine fails within 20 s, in one line matching `pattern`, without a stack trace. */
function expectRefused(dir: string, pattern: RegExp) {
  const r = spawnSync(process.execPath, [bin, "logits", "--engine", dir, "--tokens", "1,2"], {
    cwd: root,
    encoding: "utf8",
    timeout: 20_000,
  });
  expect(r.signal, "the loader did not finish in 20 s").toBe(null);
  expect(r.status).toBe(1);
  const lines = r.stderr.trim().split("\n");
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^mamba-edge: /);
  expect(lines[0]).toMatch(pattern);
  return lines[0];
}

const entry = { sha256: "0".repeat(64), bytes: 1 };

beforeAll(() => {
  const r = cli(["build", join(fixtureRoot, "mamba1-tied"), "--out", base]);
  expect(r.code, r.stderr).toBe(0);
});

describe("engine manifest paths", () => {
  it("refuses a file entry that climbs out of the package (../../../../dev/zero) before opening it", () => {
    const dir = damaged((m) => void ((m.files as Raw)["../../../../../../../../dev/zero"] = { ...entry, bytes: 0 }));
    expectRefused(dir, /manifest\.json: field files: "\.\.\/.*dev\/zero" is not a plain relative name inside the package/);
  });

  it("refuses ../../etc/passwd without reading it (no size of it is printed)", () => {
    const dir = damaged((m) => void ((m.files as Raw)["../../../../../../etc/passwd"] = entry));
    const line = expectRefused(dir, /not a plain relative name inside the package/);
    expect(line).not.toMatch(/bytes/);
  });

  it("refuses an absolute file name", () => {
    const dir = damaged((m) => void ((m.files as Raw)["/etc/passwd"] = entry));
    expectRefused(dir, /"\/etc\/passwd" is not a plain relative name/);
  });

  it("refuses a listed file that is a symbolic link out of the package", () => {
    const dir = damaged((m, d) => {
      symlinkSync("/etc/passwd", join(d, "cpu", "extra.bin"));
      (m.files as Raw)["cpu/extra.bin"] = entry;
    });
    expectRefused(dir, /cpu\/extra\.bin: resolves outside the package/);
  });

  it("refuses a manifest whose tokenizer is not a listed file", () => {
    const dir = damaged((m) => void (m.tokenizer = "../../tokenizer.json"));
    expectRefused(dir, /field tokenizer/);
  });
});

describe("engine manifest contents", () => {
  it("refuses a manifest that is null, in one line", () => {
    expectRefused(
      damaged(() => null),
      /manifest\.json: expected a JSON object/,
    );
  });

  it("refuses a manifest without config or targets, naming the field", () => {
    expectRefused(
      damaged((m) => void delete m.config),
      /manifest\.json: field config: /,
    );
    expectRefused(
      damaged((m) => void delete m.targets),
      /manifest\.json: field targets: /,
    );
  });

  it("refuses an empty files list", () => {
    expectRefused(
      damaged((m) => void (m.files = {})),
      /manifest\.json: field files: .*(empty|lists no)/,
    );
  });

  for (const [field, value, pattern] of [
    ["nLayer", 3, /config\.nLayer is 3 but weights\.safetensors holds 2 layers/],
    ["vocabSize", 50, /config\.vocabSize is 50 but weights\.safetensors: embedding has shape \[97,32\]/],
    ["dState", 4, /config\.dState is 4 but weights\.safetensors: layers\.0\.A has shape \[64,8\]/],
  ] as const) {
    it(`refuses a config whose ${field} disagrees with the weights`, () => {
      expectRefused(
        damaged((m) => void ((m.config as Raw)[field] = value)),
        pattern,
      );
    });
  }

  it('says "not valid JSON" in one line even when the text has newlines', () => {
    expectRefused(
      damaged(() => undefined, '{\n  "format": x\n}\n'),
      /manifest\.json: not valid JSON/,
    );
  });
});
