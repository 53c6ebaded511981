// The daemon under hostile input and faults (stdio, the session store, the state directory): it
// answers, stays bounded, cleans up after itself and refuses bad start-up settings in one line.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { MambaModel } from "../engines/model/model.js";
import { Tokenizer } from "../engines/model/tokenizer.js";
import { RefBackend } from "../runtime/backends/ref.js";
import type { ErrorReply, FinalReply } from "../runtime/scheduler/protocol.js";
import { Scheduler, defaultLimits } from "../runtime/scheduler/scheduler.js";
import { SessionStore } from "../runtime/scheduler/sessions.js";
import { bin, root } from "./helpers/cli.js";
import { demoModel, serve, tempDir } from "./helpers/daemon.js";

const base = (dir: string) => ["--stdio", "--model", demoModel, "--state-dir", dir];

describe("stdio under hostile input", () => {
  it("bounds a line without a newline at maxMessageBytes: too_large at once, the rest of the line discarded", async () => {
    const d = await serve(base(tempDir()), { MAMBA_EDGE_MAX_MESSAGE_BYTES: "4096" });
    const chunk = "x".repeat(1 << 20);
    for (let i = 0; i < 32; i++) d.proc.stdin!.write(chunk); // 32 MiB, no newline yet
    // answered before the line ends: the daemon has stopped collecting it
    expect(await d.next((r) => "error" in r, 15_000)).toMatchObject({ id: null, error: { code: "too_large" } });
    d.proc.stdin!.write(chunk + "\n");
    d.send({ id: "after", prompt: "The", max_tokens: 2 });
    expect(await d.next((r) => r.id === "after" && "text" in r)).toMatchObject({ finish_reason: "length" });
    expect(d.replies.filter((r) => "error" in r)).toHaveLength(1);
    // a line of exactly the limit is read whole; one byte more is not
    const padded = (id: string, bytes: number) => JSON.stringify({ id, prompt: "The", max_tokens: 1 }).padEnd(bytes, " ");
    d.send(padded("edge", 4096));
    expect(await d.next((r) => r.id === "edge")).toMatchObject({ finish_reason: "length" });
    d.send(padded("over", 4097));
    // an over-long line that starts with its id is answered under that id
    expect(await d.next((r) => r.id === "over")).toMatchObject({
      error: { code: "too_large", message: "message of 4097 bytes, the limit is 4096" },
    });
    expect(d.replies.filter((r) => "error" in r).map((r) => (r.error as { code: string }).code)).toEqual(["too_large", "too_large"]);
    d.proc.stdin!.end();
    expect(await d.exited).toBe(0);
  });

  it("answers JSON nested 5000 deep with bad_request naming the field, and 1e400 as what it is", async () => {
    const d = await serve(base(tempDir()));
    const deep = "[".repeat(5000) + "]".repeat(5000);
    d.send(`{"id":"deep","prompt":${deep}}`);
    d.send(`{"id":"deep2","prompt":"x","stop":${deep}}`);
    d.send(`{"id":"deep3","op":"reset","session":${deep}}`);
    d.send(`{"id":"inf","prompt":"x","max_tokens":1e400}`);
    const deepReply = await d.next((r) => r.id === "deep");
    expect(deepReply).toMatchObject({ error: { code: "bad_request", message: expect.stringMatching(/^prompt: /) } });
    expect(await d.next((r) => r.id === "deep2")).toMatchObject({
      error: { code: "bad_request", message: expect.stringMatching(/^stop/) },
    });
    expect(await d.next((r) => r.id === "deep3")).toMatchObject({
      error: { code: "bad_request", message: expect.stringMatching(/^session: /) },
    });
    const inf = await d.next((r) => r.id === "inf");
    expect(inf).toMatchObject({ error: { code: "bad_request", message: expect.stringMatching(/^max_tokens: /) } });
    expect((inf.error as { message: string }).message).not.toMatch(/found null/);
    d.send({ op: "status" });
    const status = await d.next((r) => r.op === "status");
    expect(status.errors).toEqual({ bad_request: 4 });
    d.proc.stdin!.end();
    expect(await d.exited).toBe(0);
  });
});

describe("session store", () => {
  it("keeps a legal session id containing .tmp- across a restart", async () => {
    const dir = tempDir();
    const rec = { state: new Uint8Array([1, 2, 3]), pending: 5, turns: 1 };
    await new SessionStore(dir, 1 << 20).put("robot.tmp-1", rec);
    const again = new SessionStore(dir, 1 << 20);
    expect(await again.list()).toEqual(["robot.tmp-1"]);
    expect(await again.get("robot.tmp-1")).toMatchObject({ pending: 5, turns: 1 });
  });

  it("removes the temp file of a failed save at once", async () => {
    const dir = tempDir();
    const store = new SessionStore(dir, 1 << 20);
    // the rename cannot replace a non-empty directory: the save fails after its temp file was written
    mkdirSync(join(dir, "blocked.session", "inside"), { recursive: true });
    await expect(store.put("blocked", { state: new Uint8Array(65536), pending: null, turns: 1 })).rejects.toThrow();
    expect(readdirSync(dir)).toEqual(["blocked.session"]);
  });

  it("removes leftover temp files of an interrupted save at start, and nothing else", async () => {
    const dir = tempDir();
    const store = new SessionStore(dir, 1 << 20);
    await store.put("a", { state: new Uint8Array(8), pending: null, turns: 1 });
    // what a save killed between writing and renaming leaves behind
    writeFileSync(join(dir, tempName("a")), "partial");
    expect(await new SessionStore(dir, 1 << 20).list()).toEqual(["a"]);
    expect(readdirSync(dir)).toEqual(["a.session"]);
  });
});

/** The temp name a save of session `id` uses (what a kill -9 mid-save leaves). */
function tempName(id: string): string {
  return `.${id}.session.tmp-0123456789ab`;
}

describe("start-up errors", () => {
  const serveOnce = (args: string[]) => {
    const r = spawnSync(process.execPath, [bin, "serve", ...args], { cwd: root, encoding: "utf8", timeout: 30_000, input: "" });
    return { code: r.status, lines: r.stderr.trim().split("\n"), stderr: r.stderr };
  };

  for (const [what, make] of [
    ["is a file", (f: string) => f],
    ["is under a file", (f: string) => join(f, "sessions")],
  ] as const) {
    it(`a state directory that ${what} is refused in one line naming it`, () => {
      const file = join(tempDir(), "plain-file");
      writeFileSync(file, "x");
      const stateDir = make(file);
      const r = serveOnce(base(stateDir));
      expect(r.code).toBe(1);
      expect(r.lines, r.stderr).toHaveLength(1);
      expect(r.lines[0]).toContain(`mamba-edge: ${stateDir}: cannot use as the state directory`);
      expect(existsSync(file)).toBe(true);
    });
  }
});

describe("scheduler failures", () => {
  let backend: RefBackend;
  let tokenizer: Tokenizer;
  beforeAll(() => {
    backend = new RefBackend(MambaModel.load(demoModel));
    tokenizer = Tokenizer.load(demoModel);
  });

  it("a failure of a request without a session says so without naming an undefined session", async () => {
    // a backend that cannot hand out a state (as one whose state slots are all taken)
    const broken = Object.create(backend) as RefBackend;
    broken.newState = () => {
      throw new Error("no free state slot");
    };
    const s = new Scheduler(broken, tokenizer, null, defaultLimits, {}, backend.model.config.eosTokenId);
    const r = await new Promise<FinalReply | ErrorReply>((resolve) => {
      void s.submit({ id: "x", prompt: "The", max_tokens: 2 }, { chunk: () => {}, final: resolve, error: resolve });
    });
    expect(r).toEqual({ id: "x", error: { code: "internal", message: "no free state slot" } });
  });
});
