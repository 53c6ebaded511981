import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "..");
const depcruise = join(root, "node_modules", ".bin", "depcruise");
const config = join(root, ".dependency-cruiser.cjs");

function cruise(cwd: string, dirs: string[]): { status: number | null; out: string } {
  const r = spawnSync(depcruise, [...dirs, "--config", config, "--output-type", "err"], { cwd, encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe("the layout's direction of flow", () => {
  const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-layout-"));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it("holds in the project: no cycle, engines/ never imports runtime/, only the CLI imports the builder or the CLI", () => {
    const r = cruise(root, ["runtime", "engines", "scripts", "bin"]);
    expect(r.out).not.toMatch(/error/);
    expect(r.status).toBe(0);
  });

  it("is enforced: each forbidden edge in a scratch tree is reported", () => {
    const file = (path: string, text: string) => {
      mkdirSync(join(scratch, path, ".."), { recursive: true });
      writeFileSync(join(scratch, path), text);
    };
    cpSync(join(root, "tsconfig.json"), join(scratch, "tsconfig.json"));
    file("runtime/cli/open.ts", "export const o = 1;\n");
    file("runtime/backends/b.ts", 'import { x } from "../../engines/builder/x.js";\nexport const b = x;\n');
    file("runtime/daemon/d.ts", 'import { o } from "../cli/open.js";\nexport const d = o;\n');
    file("engines/builder/x.ts", 'import { y } from "../../runtime/y.js";\nexport const x = y;\n');
    file("runtime/y.ts", 'import { z } from "./z.js";\nexport const y = z;\n');
    file("runtime/z.ts", 'import { y } from "./y.js";\nexport const z = () => y;\n');
    const r = cruise(scratch, ["runtime", "engines"]);
    expect(r.status).not.toBe(0);
    for (const rule of ["no-cycles", "engines-never-import-runtime", "runtime-never-imports-the-builder", "only-the-cli-imports-the-cli"]) {
      expect(r.out).toContain(rule);
    }
  });
});
