// The daemon as a child process speaking JSON lines on stdin/stdout; its config validation; chat piped.
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bin, cli, root } from "./helpers/cli.js";
import { demoModel, serve, tempDir } from "./helpers/daemon.js";

// (the helper waits for the "ready" log line: keep the log level at info)
const base = (dir: string) => ["--stdio", "--model", demoModel, "--state-dir", dir];

describe("stdio transport", () => {
  it("answers requests, streams, reports status and errors, and exits 0 when stdin closes", async () => {
    const d = await serve(base(tempDir()));
    d.send({ id: "a", prompt: "The jury said", max_tokens: 6, temperature: 0 });
    d.send({ id: "b", prompt: "The city", max_tokens: 4, temperature: 0, stream: true });
    d.send("not json at all");
    d.send({ id: "c", prompt: "x", max_tokens: "ten" });
    d.send({ id: "e", prompt: "x", colour: "red" });
    d.send({ op: "status" });
    const a = await d.next((r) => r.id === "a" && "text" in r);
    expect(a).toMatchObject({ finish_reason: "length", usage: { prompt_tokens: 4, completion_tokens: 6 } });
    expect(Object.keys(a.timings as object).sort()).toEqual(["decode_tokens_per_s", "queue_ms", "ttft_ms"]);
    const b = await d.next((r) => r.id === "b" && r.done === true);
    const chunks = d.replies.filter((r) => r.id === "b" && "delta" in r);
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.map((c) => c.delta).join("")).toBe(b.text);
    expect(await d.next((r) => r.id === null && "error" in r)).toEqual({ id: null, error: { code: "bad_request", message: "not JSON" } });
    expect(await d.next((r) => r.id === "c")).toMatchObject({
      error: { code: "bad_request", message: expect.stringContaining("max_tokens") },
    });
    expect(await d.next((r) => r.id === "e")).toMatchObject({ error: { code: "bad_request", message: "unknown field colour" } });
    expect(await d.next((r) => r.op === "status")).toMatchObject({ state: "online", backend: "ref", queue: expect.any(Number) });
    d.proc.stdin!.end();
    expect(await d.exited).toBe(0);
  });

  it("cancels by id and resets a session", async () => {
    const dir = tempDir();
    const d = await serve(base(dir));
    d.send({ id: "long", prompt: "The", max_tokens: 1000, temperature: 0, stream: true, session: "r2" });
    await d.next((r) => r.id === "long" && "delta" in r);
    d.send({ op: "cancel", id: "long" });
    const done = await d.next((r) => r.id === "long" && r.done === true);
    expect(done.finish_reason).toBe("cancelled");
    expect(existsSync(join(dir, "r2.session"))).toBe(true);
    d.send({ op: "reset", session: "r2", id: "z" });
    expect(await d.next((r) => r.op === "reset")).toMatchObject({ session: "r2", existed: true });
    expect(existsSync(join(dir, "r2.session"))).toBe(false);
    expect(await d.stop()).toBe(0);
  });

  it("on SIGTERM lets a running request finish and exits 0", async () => {
    const d = await serve([...base(tempDir()), "--shutdown-deadline-ms", "60000"]);
    d.send({ id: "r", prompt: "The", max_tokens: 200, temperature: 0, stream: true });
    await d.next((r) => r.id === "r" && "delta" in r); // it is decoding
    expect(d.replies.some((r) => r.id === "r" && r.done === true)).toBe(false);
    d.proc.kill("SIGTERM");
    expect(await d.exited).toBe(0);
    const done = d.replies.find((r) => r.id === "r" && r.done === true);
    expect(done).toMatchObject({ finish_reason: "length", usage: { completion_tokens: 200 } });
    const deltas = d.replies.filter((r) => r.id === "r" && "delta" in r).map((r) => r.delta);
    expect(deltas.join("")).toBe(done!.text);
    // the daemon saw the request still running when the signal arrived
    expect(d.logs.find((l) => l.msg === "shutting down")).toMatchObject({ reason: "SIGTERM", active: 1 });
  });
});

describe("serve config", () => {
  it("reports every bad field on its own line and exits 1", () => {
    const dir = tempDir();
    const file = join(dir, "config.json");
    writeFileSync(file, JSON.stringify({ maxQueue: "many", node: "a/b", colour: 1 }));
    const r = cli(["serve", "--stdio", "--config", file]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toContain(`mamba-edge: ${file}: unknown setting colour`);
    expect(lines.some((l) => /config\.json: maxQueue: expected number, found "many"/.test(l))).toBe(true);
    expect(lines.some((l) => /node: expected 1-64 characters/.test(l))).toBe(true);
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
  });

  it("takes the environment over the file and flags over the environment", () => {
    const dir = tempDir();
    const file = join(dir, "config.json");
    writeFileSync(file, JSON.stringify({ maxQueue: 3, maxActive: 2 }));
    const env = { ...process.env, MAMBA_EDGE_MAX_ACTIVE: "0", MAMBA_EDGE_MAX_QUEUE: "zero" };
    const r = spawnSync(process.execPath, [bin, "serve", "--stdio", "--config", file, "--max-queue", "-1"], {
      cwd: root,
      env,
      encoding: "utf8",
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/MAMBA_EDGE_MAX_ACTIVE: Too small/);
    expect(r.stderr).toMatch(/--max-queue: Too small/);
  });

  it("--backend picks what runs the default model", async () => {
    const d = await serve(["--stdio", "--backend", "ref", "--state-dir", tempDir()]);
    d.send({ op: "status" });
    expect(await d.next((r) => r.op === "status")).toMatchObject({ backend: "ref", recipe: "fp32" });
    d.proc.stdin!.end();
    expect(await d.exited).toBe(0);
  });

  it("refuses a bad broker URL and an unreadable config file in one line", () => {
    expect(cli(["serve", "--mqtt", "http://x"]).stderr).toMatch(/^mamba-edge: --mqtt: expected embedded, off or a URL/);
    const r = cli(["serve", "--config", "/nonexistent/x.json"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe("chat", () => {
  it("works piped: one reply per line, /stats, /reset, keeps the session between lines", () => {
    const r = cli(
      ["chat", "--model", demoModel, "--max-tokens", "6", "--temperature", "0"],
      "The jury said\n/stats\n and then\n/reset\nThe jury said\n/quit\nignored\n",
    );
    expect(r.code).toBe(0);
    const replies = r.stdout.split("\n").filter(Boolean);
    expect(replies).toHaveLength(3);
    expect(replies[2]).toBe(replies[0]); // after /reset the conversation starts over
    expect(r.stderr).toMatch(/last reply: 4 prompt tokens, 6 generated/);
    expect(r.stderr).toMatch(/conversation cleared/);
  });
});
