// The scheduler on the real reference backend and the demo model: batching, sampling, limits,
// cancellation, sessions.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RefBackend } from "../runtime/backends/ref.js";
import { MambaModel } from "../engines/model/model.js";
import type { ErrorReply, FinalReply, Request } from "../runtime/scheduler/protocol.js";
import { Scheduler, defaultLimits, type Limits } from "../runtime/scheduler/scheduler.js";
import { SessionStore, validateSessionId } from "../runtime/scheduler/sessions.js";
import { StopMatcher } from "../runtime/scheduler/stops.js";
import { Tokenizer } from "../engines/model/tokenizer.js";
import { demoModel, tempDir } from "./helpers/daemon.js";

type Outcome = (FinalReply | ErrorReply) & { deltas: string[] };

let backend: RefBackend;
let tokenizer: Tokenizer;
const eos = () => backend.model.config.eosTokenId;

beforeAll(() => {
  backend = new RefBackend(MambaModel.load(demoModel));
  tokenizer = Tokenizer.load(demoModel);
});

function scheduler(limits: Partial<Limits> = {}, sessions: SessionStore | null = null): Scheduler {
  return new Scheduler(backend, tokenizer, sessions, { ...defaultLimits, ...limits }, {}, eos());
}

function run(s: Scheduler, req: Request, seqs: number[] = []): Promise<Outcome> {
  const deltas: string[] = [];
  return new Promise((resolve) => {
    void s.submit(req, {
      chunk: (c) => (deltas.push(c.delta), seqs.push(c.seq)),
      final: (r) => resolve({ ...r, deltas }),
      error: (r) => resolve({ ...r, deltas }),
    });
  });
}

const final = (o: Outcome) => {
  if ("error" in o) throw new Error(`error reply: ${JSON.stringify(o.error)}`);
  return o;
};

describe("stop strings", () => {
  it("never emits the stop string, even split across tokens", () => {
    const m = new StopMatcher(["\n\n", "END"]);
    const out: string[] = [];
    for (const d of ["Hello", " E", "N", "o", " wor", "ld", "\n", "\n", "more"]) {
      const r = m.push(d);
      out.push(r.emit);
      if (r.stopped) break;
    }
    expect(out.join("")).toBe("Hello ENo world");
    expect(m.full).toBe("Hello ENo world");
  });

  it("releases held-back text when generation ends without a stop", () => {
    const m = new StopMatcher(["STOP"]);
    expect(m.push("go ST").emit).toBe("go ");
    expect(m.flush()).toBe("ST");
  });
});

describe("scheduler", () => {
  let s: Scheduler;
  beforeAll(() => {
    s = scheduler({ maxActive: 8 });
  });
  afterAll(() => s.shutdown(0));

  it("gives the same text for the same seed and request", async () => {
    const req = { prompt: "The jury said", max_tokens: 12, temperature: 0.9, seed: 7 };
    const [a, b] = await Promise.all([run(s, { ...req, id: 1 }), run(s, { ...req, id: 2 })]);
    expect(final(a).text).toBe(final(b).text);
    const c = final(await run(s, { ...req, seed: 8 }));
    expect(c.usage.completion_tokens).toBe(12);
    expect(c.text).not.toBe(final(a).text);
  });

  it("decodes a batch to the same greedy text as one request alone", async () => {
    const prompts = ["The jury said", "In the city of", "He was", "The President"];
    const alone: string[] = [];
    for (const p of prompts) alone.push(final(await run(s, { prompt: p, max_tokens: 10, temperature: 0 })).text);
    const together = await Promise.all(prompts.map((p) => run(s, { prompt: p, max_tokens: 10, temperature: 0 })));
    expect(together.map((o) => final(o).text)).toEqual(alone);
  });

  it("streams chunks that add up to the final text, with seq in order", async () => {
    const seqs: number[] = [];
    const o = final(await run(s, { prompt: "It was", max_tokens: 10, temperature: 0, stream: true }, seqs));
    expect(o.deltas.join("")).toBe(o.text);
    expect(o.deltas.length).toBeGreaterThan(1);
    expect(seqs).toEqual(o.deltas.map((_, i) => i));
    expect(o.done).toBe(true);
  });

  it("stops at a stop string and does not include it", async () => {
    const free = final(await run(s, { prompt: "The jury said", max_tokens: 20, temperature: 0 }));
    const stop = free.text.slice(6, 9);
    const o = final(await run(s, { prompt: "The jury said", max_tokens: 20, temperature: 0, stop: [stop], stream: true }));
    expect(o.finish_reason).toBe("stop");
    expect(o.text).toBe(free.text.slice(0, free.text.indexOf(stop)));
    expect(o.deltas.join("")).toBe(o.text);
  });

  it("refuses too long prompts and max_tokens over the limit", async () => {
    const t = scheduler({ maxPromptTokens: 4, maxTokens: 8 });
    const long = await run(t, { id: "x", prompt: "one two three four five six seven" });
    expect("error" in long && long.error.code).toBe("too_large");
    const many = await run(t, { id: "y", prompt: "one", max_tokens: 9 });
    expect("error" in many && many.error.code).toBe("too_large");
    await t.shutdown(0);
  });

  it("replies overloaded at once when the queue is full", async () => {
    const t = scheduler({ maxActive: 1, maxQueue: 1 });
    const first = run(t, { id: 1, prompt: "The", max_tokens: 400, temperature: 0 });
    while (t.running === 0) await new Promise((r) => setTimeout(r, 5)); // admitted: the queue is empty
    const second = run(t, { id: 2, prompt: "The", max_tokens: 2, temperature: 0 });
    while (t.queued === 0) await new Promise((r) => setTimeout(r, 5));
    const third = await run(t, { id: 3, prompt: "The", max_tokens: 2 });
    expect("error" in third && third.error.code).toBe("overloaded");
    t.cancel(1);
    expect(final(await first).finish_reason).toBe("cancelled");
    expect(final(await second).finish_reason).toBe("length");
    await t.shutdown(0);
  });

  it("cancels a running request at the next token", async () => {
    const p = run(s, { id: "long", prompt: "The", max_tokens: 500, temperature: 0, stream: true });
    await new Promise((r) => setTimeout(r, 100));
    expect(s.cancel("long")).toBe(1);
    const o = final(await p);
    expect(o.finish_reason).toBe("cancelled");
    expect(o.usage.completion_tokens).toBeLessThan(500);
  });
});

describe("sessions", () => {
  it("continues a conversation from its saved state, also in a new scheduler", async () => {
    const dir = tempDir();
    const a = scheduler({}, new SessionStore(dir, 1 << 30));
    const turn1 = final(await run(a, { prompt: "The jury said", session: "robot-1", max_tokens: 8, temperature: 0 }));
    expect(turn1.session).toBe("robot-1");
    expect(existsSync(join(dir, "robot-1.session"))).toBe(true);
    const turn2 = final(await run(a, { prompt: " Then", session: "robot-1", max_tokens: 8, temperature: 0 }));
    await a.shutdown(0);

    // A second daemon that only has the file after turn 1 says the same in turn 2.
    const dir2 = tempDir();
    const b = scheduler({}, new SessionStore(dir2, 0));
    await run(b, { prompt: "The jury said", session: "robot-1", max_tokens: 8, temperature: 0 });
    const again = final(
      await run(scheduler({}, new SessionStore(dir2, 0)), { prompt: " Then", session: "robot-1", max_tokens: 8, temperature: 0 }),
    );
    expect(again.text).toBe(turn2.text);

    // without the session, the same text continues differently (the state carries the history)
    const cold = final(await run(b, { prompt: " Then", max_tokens: 8, temperature: 0 }));
    expect(cold.text).not.toBe(turn2.text);
    await b.shutdown(0);
  });

  it("runs the turns of one session in order", async () => {
    const turn = (prompt: string) => ({ prompt, session: "s", max_tokens: 4, temperature: 0 });
    // the two turns one after the other, in each order: what the second says depends on the first
    const inTurn = async (first: string, second: string) => {
      const t = scheduler({}, new SessionStore(tempDir(), 1 << 30));
      const a = final(await run(t, turn(first)));
      const b = final(await run(t, turn(second)));
      await t.shutdown(0);
      return [a.text, b.text];
    };
    const xy = await inTurn("One", " two");
    const yx = await inTurn(" two", "One");
    expect(yx[1]).not.toBe(xy[1]);

    const store = new SessionStore(tempDir(), 1 << 30);
    const t = scheduler({ maxActive: 4 }, store);
    const finished: string[] = [];
    const [x, y] = await Promise.all([
      run(t, { id: "x", ...turn("One") }).then((o) => (finished.push("x"), o)),
      run(t, { id: "y", ...turn(" two") }).then((o) => (finished.push("y"), o)),
    ]);
    expect(finished).toEqual(["x", "y"]);
    expect([final(x).text, final(y).text]).toEqual(xy);
    expect((await store.get("s"))!.turns).toBe(2);
    await t.shutdown(0);
  });

  it("refuses session ids that could name a path", async () => {
    for (const bad of ["../etc/passwd", "a/b", ".hidden", "", "x".repeat(129), "a b"]) {
      expect(() => validateSessionId(bad)).toThrow(/session/);
    }
    const t = scheduler({}, new SessionStore(tempDir(), 1 << 20));
    const o = await run(t, { id: 1, prompt: "x", session: "../../x" });
    expect("error" in o && o.error.code).toBe("bad_request");
    await t.shutdown(0);
  });

  it("keeps the in-memory cache under its byte bound and resets a session", async () => {
    const dir = tempDir();
    const one = backend.saveState(backend.newState()).byteLength;
    const store = new SessionStore(dir, one * 2);
    const t = scheduler({ maxActive: 4 }, store);
    await Promise.all(["a", "b", "c", "d"].map((id) => run(t, { prompt: "Hi", session: id, max_tokens: 1 })));
    expect(store.memoryBytes).toBeLessThanOrEqual(one * 2);
    expect(readdirSync(dir).sort()).toEqual(["a.session", "b.session", "c.session", "d.session"]);
    expect(await t.reset("a")).toBe(true);
    expect(existsSync(join(dir, "a.session"))).toBe(false);
    expect(await t.reset("a")).toBe(false);
    await t.shutdown(0);
  });
});
