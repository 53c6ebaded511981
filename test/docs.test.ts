// The documentation: README.md stays short, every table that cites a record is the one
// scripts/docs-tables.mjs writes from it, every relative link leads somewhere, and the README's
// daemon examples work as written against the broker they name.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { root } from "./helpers/cli.js";
import { freePort, mosquittoBinary, serve, tempDir, type Served } from "./helpers/daemon.js";
import { skipWhen } from "./helpers/skip.js";

const readme = readFileSync(join(root, "README.md"), "utf8");
const docs = readdirSync(join(root, "docs"))
  .filter((f) => f.endsWith(".md"))
  .map((f) => join("docs", f));
const tablesScript = join(root, "scripts", "docs-tables.mjs");

describe("README and docs", () => {
  it("README.md has at most 400 lines", () => {
    expect(readme.replace(/\n$/, "").split("\n").length).toBeLessThanOrEqual(400); // as wc -l counts
  });

  it("every table is the one scripts/docs-tables.mjs writes from bench/results", () => {
    const r = spawnSync(process.execPath, [tablesScript, "--check"], { cwd: root, encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("--check fails on a stale table and the generator repairs it", () => {
    // a copy of what the script reads, with one figure of a generated table changed
    const dir = tempDir("docs-tables-");
    mkdirSync(join(dir, "scripts"));
    cpSync(tablesScript, join(dir, "scripts", "docs-tables.mjs"));
    cpSync(join(root, "bench", "results"), join(dir, "bench", "results"), { recursive: true });
    cpSync(join(root, "docs"), join(dir, "docs"), { recursive: true });
    const region = readme.indexOf("<!-- table:demo-results -->");
    expect(region).toBeGreaterThan(0);
    const row = readme.indexOf("| mamba1-brown | fp16 |", region);
    expect(row).toBeGreaterThan(region);
    const stale = readme.slice(0, row) + readme.slice(row).replace(/\| (\d+\.\d+) \|/, "| 999.99 |");
    expect(stale).not.toBe(readme);
    writeFileSync(join(dir, "README.md"), stale);
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [join(dir, "scripts", "docs-tables.mjs"), ...args], { encoding: "utf8" });
    const check = run("--check");
    expect(check.status).toBe(1);
    expect(check.stderr).toContain("README.md: tables are stale");
    expect(run().status).toBe(0);
    expect(readFileSync(join(dir, "README.md"), "utf8")).toBe(readme);
    expect(run("--check").status).toBe(0);
  });

  it("every relative link in README.md and docs/*.md leads to a file that exists, and its anchor to a heading", () => {
    const broken: string[] = [];
    let checked = 0;
    for (const file of ["README.md", ...docs]) {
      const text = readFileSync(join(root, file), "utf8").replace(/```[\s\S]*?```/g, "");
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const link = m[1];
        if (/^[a-z]+:/i.test(link)) continue; // http(s), mailto
        checked++;
        const [path, anchor] = link.split("#");
        const target = path ? resolve(dirname(join(root, file)), path) : join(root, file);
        if (!existsSync(target)) {
          broken.push(`${file}: ${link} (no such file)`);
          continue;
        }
        if (anchor && target.endsWith(".md") && !anchors(readFileSync(target, "utf8")).has(anchor))
          broken.push(`${file}: ${link} (no such heading)`);
      }
    }
    expect(broken).toEqual([]);
    expect(checked).toBeGreaterThan(10);
  });

  it("every repository file named in backticks exists (the text follows the layout)", () => {
    const missing: string[] = [];
    for (const file of ["README.md", ...docs]) {
      const text = readFileSync(join(root, file), "utf8");
      for (const m of text.matchAll(/`((?:engines|runtime|scripts|test|bench|docs|data|bin)\/[^`\s*]+\.[a-z]+)(?::\d+)?`/g))
        if (!existsSync(join(root, m[1]))) missing.push(`${file}: ${m[1]}`);
    }
    expect(missing).toEqual([]);
  });
});

/** GitHub's anchors of a Markdown file's headings. */
function anchors(md: string): Set<string> {
  const out = new Set<string>();
  for (const m of md.replace(/```[\s\S]*?```/g, "").matchAll(/^#{1,6} (.+)$/gm))
    out.add(
      m[1]
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N} _-]/gu, "")
        .replace(/ /g, "-"),
    );
  return out;
}

/** The shell lines of the README's code block marked `<!-- example:NAME -->`, continuations joined. */
function example(name: string): string[] {
  const m = readme.match(new RegExp(`<!-- example:${name} -->\\n\`\`\`sh\\n([\\s\\S]*?)\`\`\``));
  if (!m) throw new Error(`README.md has no example:${name} block`);
  return m[1]
    .replace(/\\\n\s*/g, " ")
    .split("\n")
    .filter((l) => l.trim() !== "");
}

const hasMosquitto = mosquittoBinary() !== null && spawnSync("sh", ["-c", "command -v mosquitto_rr"]).status === 0;

describe.skipIf(skipWhen(!hasMosquitto, "mosquitto or mosquitto_rr (Debian: mosquitto, mosquitto-clients) is not installed"))(
  "the README's daemon examples, as written",
  () => {
    const daemons: Served[] = [];
    const children: ChildProcess[] = [];
    afterEach(async () => {
      for (const d of daemons.splice(0)) await d.stop();
      for (const c of children.splice(0)) if (c.exitCode === null) c.kill("SIGTERM");
    });

    /** Runs an example's lines: `... &` lines in the background (a daemon until it is ready, a
     *  broker until it listens), the others in bash; 1883 becomes a free port. Returns the last
     *  line's stdout. */
    async function runExample(name: string): Promise<string> {
      const port = await freePort();
      const env = { MAMBA_EDGE_STATE_DIR: tempDir("docs-sessions-"), MAMBA_EDGE_BROKER_PORT: String(port) };
      let out = "";
      for (const raw of example(name)) {
        const line = raw.replaceAll("1883", String(port)).replaceAll("npx mamba-edge", `${process.execPath} bin/mamba-edge.js`);
        if (line.endsWith("&")) {
          const words = line.slice(0, -1).trim().split(/\s+/);
          if (words[1] === "bin/mamba-edge.js" && words[2] === "serve") daemons.push(await serve(words.slice(3), env));
          else {
            const c = spawn("bash", ["-c", `exec ${line.slice(0, -1)}`], { cwd: root, stdio: "ignore" });
            children.push(c);
            await listening(port);
          }
          continue;
        }
        const r = spawnSync("bash", ["-c", line], { cwd: root, encoding: "utf8", env: { ...process.env, ...env }, timeout: 120_000 });
        expect(r.status, `${raw}\n${r.stderr}`).toBe(0);
        out = r.stdout;
      }
      return out;
    }

    it("mosquitto_rr -V 311 with reply_to against the embedded broker of plain `serve`", async () => {
      const reply = JSON.parse(await runExample("embedded-broker"));
      expect(reply.finish_reason).toBe("length");
      expect(reply.usage.completion_tokens).toBe(16);
      expect(reply.text.length).toBeGreaterThan(0);
      expect(daemons[0].logs.some((l) => l.msg === "embedded broker (MQTT 3.1.1) listening")).toBe(true);
    });

    it("mosquitto_rr -V 5 against a mosquitto that `serve --mqtt` joined", async () => {
      const reply = JSON.parse(await runExample("mosquitto"));
      expect(reply.finish_reason).toBe("length");
      expect(reply.usage.completion_tokens).toBe(16);
      expect(daemons[0].logs.some((l) => l.msg === "mqtt connected" && l.version === 5)).toBe(true);
    });

    it("the stdio example answers the request and the status op", async () => {
      const lines = (await runExample("stdio"))
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.find((l) => l.id === 1)).toMatchObject({ finish_reason: "length", usage: { completion_tokens: 8 } });
      expect(lines.find((l) => l.op === "status")).toMatchObject({ state: "online" });
    });
  },
);

async function listening(port: number): Promise<void> {
  const { createConnection } = await import("node:net");
  const until = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const c = createConnection({ port, host: "127.0.0.1" }, () => (c.end(), r(true)));
      c.once("error", () => r(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on port ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
