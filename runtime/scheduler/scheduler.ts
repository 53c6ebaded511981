// Continuous batching over any backend. Requests wait in a bounded queue; each tick admits what
// fits, runs at most one prefill chunk of a new prompt (so running streams are never stalled by a
// long prompt for more than one chunk), then one batched decode step for every active sequence.
// Cancellation takes effect at the next tick, that is, at token granularity.
import type { Backend } from "../backends/backend.js";
import type { SequenceState } from "../../engines/model/state.js";
import { Sampler, type SamplingParams, defaultSampling } from "../sampling.js";
import { TextStream, type Tokenizer } from "../../engines/model/tokenizer.js";
import {
  WireError,
  errorReply,
  outputFormat,
  renderMessages,
  type Chunk,
  type ErrorCode,
  type FinalReply,
  type ErrorReply,
  type Request,
  type RequestId,
} from "./protocol.js";
import type { Constraint, Constraints } from "../constrained/constraints.js";
import { validateSessionId, type SessionStore } from "./sessions.js";
import { StopMatcher } from "./stops.js";

export interface Limits {
  /** requests waiting for a slot; beyond this, `overloaded` at once */
  maxQueue: number;
  /** sequences decoded together (the batch) */
  maxActive: number;
  maxPromptTokens: number;
  /** the most a request may ask for with max_tokens */
  maxTokens: number;
  /** max_tokens when a request gives none */
  defaultMaxTokens: number;
  /** prompt tokens prefilled per tick */
  prefillChunk: number;
}

export const defaultLimits: Limits = {
  maxQueue: 64,
  maxActive: 16,
  maxPromptTokens: 4096,
  maxTokens: 1024,
  defaultMaxTokens: 128,
  prefillChunk: 128,
};

/** Where one request's replies go (a transport's reply address). */
export interface Sink {
  chunk(c: Chunk): void;
  final(r: FinalReply): void;
  error(e: ErrorReply): void;
}

/** What the scheduler reports as it works (metrics); every method optional. */
export interface Observer {
  admitted?(queueMs: number): void;
  firstToken?(ttftMs: number): void;
  token?(latencyMs: number): void;
  finished?(reason: FinalReply["finish_reason"], completionTokens: number): void;
  failed?(code: ErrorCode): void;
  step?(batch: number, ms: number): void;
}

type Phase = "queued" | "prefill" | "decode" | "done";

interface Job {
  id: RequestId;
  req: Request;
  sink: Sink;
  phase: Phase;
  promptIds: number[];
  maxTokens: number;
  sampler: Sampler;
  stop: StopMatcher;
  /** the grammar its output must follow (format / json_schema), else null */
  constraint: Constraint | null;
  text: TextStream;
  /** the tokens seen (prompt and completion), for the repetition penalty */
  history: Set<number>;
  state: SequenceState | null;
  /** tokens to run through the model before the first sample (pending token of the session + prompt) */
  feed: Int32Array;
  fed: number;
  /** sampled, not yet fed */
  next: number;
  completion: number;
  seq: number;
  cancelled: boolean;
  turns: number;
  t: { received: number; admitted: number; first: number; last: number };
}

export class Scheduler {
  private readonly queue: Job[] = [];
  private readonly active: Job[] = [];
  /** sessions being written after their turn; not admitted again until the write is done */
  private readonly saving = new Map<string, Promise<void>>();
  private readonly finishing = new Set<Promise<void>>();
  private wakeUp: (() => void) | null = null;
  private accepting = true;
  private stopped = false;
  private readonly loopDone: Promise<void>;
  private counter = 0;
  /** submits between their acceptance check and the queue (tokenizing) */
  private intake = 0;
  /** the grammar engine, loaded by the first constrained request */
  private constraints: Promise<Constraints> | null = null;

  constructor(
    private readonly backend: Backend,
    private readonly tokenizer: Tokenizer,
    private readonly sessions: SessionStore | null,
    readonly limits: Limits = defaultLimits,
    private readonly observer: Observer = {},
    private readonly eos: number | null = null,
    private readonly onBug: (e: unknown) => void = (e) => console.error(e),
  ) {
    this.loopDone = this.loop();
  }

  get queued(): number {
    return this.queue.length;
  }

  get running(): number {
    return this.active.length;
  }

  /** Takes a validated request; every outcome, including refusal, goes to `sink`. */
  async submit(req: Request, sink: Sink): Promise<void> {
    const id: RequestId = req.id ?? `req-${Date.now().toString(36)}-${(this.counter++).toString(36)}`;
    const received = performance.now();
    const fail = (e: WireError) => {
      this.observer.failed?.(e.code);
      sink.error(errorReply(id, e));
    };
    this.intake++;
    try {
      if (!this.accepting) throw new WireError("overloaded", "the daemon is shutting down");
      if (req.session !== undefined) validateSessionId(req.session);
      const maxTokens = req.max_tokens ?? Math.min(this.limits.defaultMaxTokens, this.limits.maxTokens);
      if (maxTokens > this.limits.maxTokens)
        throw new WireError("too_large", `max_tokens: ${maxTokens} is over the limit of ${this.limits.maxTokens}`);
      const text = req.prompt ?? renderMessages(req.messages!);
      const promptIds = await this.tokenizer.encode(text);
      if (promptIds.length > this.limits.maxPromptTokens) {
        throw new WireError("too_large", `prompt: ${promptIds.length} tokens, the limit is ${this.limits.maxPromptTokens}`);
      }
      if (this.queue.length >= this.limits.maxQueue)
        throw new WireError("overloaded", `queue full (${this.limits.maxQueue} waiting, ${this.active.length} running)`);
      const sampling: SamplingParams = {
        temperature: req.temperature ?? defaultSampling.temperature,
        topK: req.top_k ?? defaultSampling.topK,
        topP: req.top_p ?? defaultSampling.topP,
        minP: req.min_p ?? defaultSampling.minP,
        repeatPenalty: req.repeat_penalty ?? defaultSampling.repeatPenalty,
        seed: req.seed ?? Math.floor(Math.random() * 2 ** 32),
      };
      const stops = req.stop === undefined ? [] : typeof req.stop === "string" ? [req.stop] : req.stop;
      const wanted = outputFormat(req);
      const constraint = wanted === null ? null : await (await this.grammar()).start(wanted.format, wanted.field);
      if (this.queue.length >= this.limits.maxQueue) {
        constraint?.dispose();
        throw new WireError("overloaded", `queue full (${this.limits.maxQueue} waiting, ${this.active.length} running)`);
      }
      this.queue.push({
        id,
        req,
        sink,
        phase: "queued",
        promptIds,
        maxTokens,
        sampler: new Sampler(sampling),
        stop: new StopMatcher(stops),
        constraint,
        text: new TextStream(this.tokenizer),
        history: new Set(promptIds),
        state: null,
        feed: new Int32Array(0),
        fed: 0,
        next: -1,
        completion: 0,
        seq: 0,
        cancelled: false,
        turns: 0,
        t: { received, admitted: 0, first: 0, last: 0 },
      });
      this.wake();
    } catch (e) {
      if (e instanceof WireError) fail(e);
      else throw e;
    } finally {
      this.intake--;
    }
  }

  private grammar(): Promise<Constraints> {
    this.constraints ??= import("../constrained/constraints.js").then(({ Constraints }) =>
      Constraints.forTokenizer(this.tokenizer.path, this.backend.info.vocabSize, this.eos),
    );
    return this.constraints;
  }

  /** Cancels every queued or running request with this id; returns how many. */
  cancel(id: RequestId): number {
    let n = 0;
    for (const j of [...this.queue, ...this.active]) {
      if (j.id === id && !j.cancelled) {
        j.cancelled = true;
        n++;
      }
    }
    if (n) this.wake();
    return n;
  }

  /** Forgets a session's state (memory and disk). */
  async reset(session: string): Promise<boolean> {
    validateSessionId(session);
    if (!this.sessions) throw new WireError("bad_request", "sessions are not enabled");
    if ([...this.queue, ...this.active].some((j) => j.req.session === session))
      throw new WireError("bad_request", `session ${session} has a request in progress`);
    await this.saving.get(session);
    return this.sessions.delete(session);
  }

  /**
   * Stops accepting, lets work finish until the deadline, then cancels what is left (running
   * sequences end with finish_reason "cancelled" and keep their session state) and stops the loop.
   */
  async shutdown(deadlineMs: number): Promise<void> {
    this.accepting = false;
    const until = Date.now() + deadlineMs;
    while ((this.intake || this.queue.length || this.active.length) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    for (const j of this.queue.splice(0)) {
      j.constraint?.dispose();
      this.observer.failed?.("cancelled");
      j.sink.error(errorReply(j.id, new WireError("cancelled", "the daemon shut down before this request started")));
    }
    for (const j of this.active) j.cancelled = true;
    this.wake();
    while (this.active.length) await new Promise((r) => setTimeout(r, 5));
    this.stopped = true;
    this.wake();
    await this.loopDone;
    await Promise.all(this.finishing);
  }

  // ---------------------------------------------------------------- the loop

  private wake(): void {
    this.wakeUp?.();
    this.wakeUp = null;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      if (!this.queue.length && !this.active.length) {
        await new Promise<void>((r) => (this.wakeUp = r));
        continue;
      }
      try {
        await this.tick();
      } catch (e) {
        // A backend failure ends the sequences it touched, not the daemon.
        this.onBug(e);
        for (const j of this.active.splice(0)) {
          j.phase = "done";
          j.constraint?.dispose();
          this.observer.failed?.("internal");
          j.sink.error(errorReply(j.id, new WireError("internal", `backend failed: ${(e as Error).message}`)));
        }
      }
      // let transports deliver messages (and cancels) between ticks
      await new Promise((r) => setImmediate(r));
    }
  }

  private async tick(): Promise<void> {
    for (const j of this.queue.filter((j) => j.cancelled)) {
      this.queue.splice(this.queue.indexOf(j), 1);
      this.finish(j, "cancelled");
    }
    for (const j of this.active.filter((j) => j.cancelled)) this.finish(j, "cancelled");
    await this.admit();
    // prompts are prefilled up to a budget of prefillChunk tokens per tick: many short ones, or
    // one chunk of a long one, between two decode steps
    let budget = this.limits.prefillChunk;
    let pre = false;
    for (const j of this.active.filter((j) => j.phase === "prefill")) {
      if (budget <= 0 || j.cancelled) break;
      budget -= await this.prefillChunk(j, budget);
      pre = true;
    }
    const dec = this.active.filter((j) => j.phase === "decode");
    if (dec.length) await this.decodeStep(dec);
    if (!pre && !dec.length && this.queue.length && this.active.length === 0 && this.saving.size) {
      // everything queued waits on a session still being written
      await Promise.race(this.saving.values());
    }
  }

  /** Moves queued requests into free slots, oldest first; one session runs one turn at a time. */
  private async admit(): Promise<void> {
    const busy = new Set(this.active.map((j) => j.req.session));
    for (let i = 0; i < this.queue.length && this.active.length < this.limits.maxActive;) {
      const j = this.queue[i];
      const s = j.req.session;
      if (s !== undefined && (busy.has(s) || this.saving.has(s))) {
        busy.add(s); // later turns of this session wait behind this one
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      if (s !== undefined) busy.add(s);
      try {
        await this.start(j);
      } catch (e) {
        const err =
          e instanceof WireError
            ? e
            : new WireError("internal", s === undefined ? (e as Error).message : `session ${s}: ${(e as Error).message}`);
        this.observer.failed?.(err.code);
        j.sink.error(errorReply(j.id, err));
      }
    }
  }

  private async start(j: Job): Promise<void> {
    let pending: number | null = null;
    j.state = this.backend.newState();
    if (j.req.session !== undefined && this.sessions) {
      const rec = await this.sessions.get(j.req.session);
      if (rec) {
        try {
          j.state = this.backend.loadState(rec.state);
        } catch (e) {
          throw new WireError(
            "bad_request",
            `session ${j.req.session} cannot be continued on this engine (${(e as Error).message}); reset it`,
          );
        }
        pending = rec.pending;
        j.turns = rec.turns;
      }
    }
    const feed = pending === null ? j.promptIds : [pending, ...j.promptIds];
    // An empty prompt on a fresh state starts from the end-of-text token, as a document boundary.
    j.feed = Int32Array.from(feed.length ? feed : [this.eos ?? 0]);
    j.phase = "prefill";
    j.t.admitted = performance.now();
    this.observer.admitted?.(j.t.admitted - j.t.received);
    this.active.push(j);
  }

  /** Prefills up to `budget` tokens of one prompt; returns how many it ran. */
  private async prefillChunk(j: Job, budget: number): Promise<number> {
    const start = j.fed;
    const end = Math.min(j.feed.length, j.fed + budget);
    const logits = await this.backend.prefill(j.feed.subarray(j.fed, end), j.state!);
    j.fed = end;
    if (end === j.feed.length) {
      j.phase = "decode";
      const [mask] = await this.masks([j]);
      if (mask !== undefined) await this.accept(j, j.sampler.sample(logits, j.history, mask));
    }
    return end - start;
  }

  private async decodeStep(jobs: Job[]): Promise<void> {
    const vocab = this.backend.info.vocabSize;
    for (let at = 0; at < jobs.length; at += this.backend.info.maxBatch) {
      const batch = jobs.slice(at, at + this.backend.info.maxBatch);
      const t0 = performance.now();
      const logits = await this.backend.step(
        Int32Array.from(batch, (j) => j.next),
        batch.map((j) => j.state!),
      );
      this.observer.step?.(batch.length, performance.now() - t0);
      const masks = await this.masks(batch);
      const tokens = batch.map((j, i) =>
        masks[i] === undefined ? -1 : j.sampler.sample(logits.subarray(i * vocab, (i + 1) * vocab), j.history, masks[i]),
      );
      // detokenizing is asynchronous (the tokenizer library): all sequences of the batch at once
      await Promise.all(batch.map((j, i) => (tokens[i] < 0 ? undefined : this.accept(j, tokens[i]))));
    }
  }

  /**
   * Each job's token mask (null: unconstrained), computed together; a job whose grammar fails ends
   * with an internal error (undefined in its place) and the others go on.
   */
  private async masks(jobs: Job[]): Promise<(Int32Array | null | undefined)[]> {
    const out = await Promise.all(jobs.map((j) => (j.constraint === null ? null : j.constraint.mask().catch((e: Error) => e))));
    return out.map((m, i) => {
      if (!(m instanceof Error)) return m;
      this.fail(jobs[i], new WireError("internal", `constrained output: ${m.message}`));
      return undefined;
    });
  }

  /** Ends a running sequence with an error reply (its session state is not saved). */
  private fail(j: Job, e: WireError): void {
    const idx = this.active.indexOf(j);
    if (idx >= 0) this.active.splice(idx, 1);
    j.phase = "done";
    j.constraint?.dispose();
    this.observer.failed?.(e.code);
    j.sink.error(errorReply(j.id, e));
  }

  /** A freshly sampled token: stream its text, or end the sequence. */
  private async accept(j: Job, token: number): Promise<void> {
    const now = performance.now();
    if (j.completion === 0) {
      j.t.first = now;
      this.observer.firstToken?.(now - j.t.received);
    } else this.observer.token?.(now - j.t.last);
    j.t.last = now;
    j.next = token;
    if (token === this.eos) return this.finish(j, "stop", true);
    j.completion++;
    j.history.add(token);
    try {
      j.constraint?.accept(token);
    } catch (e) {
      return this.fail(j, new WireError("internal", `constrained output: ${(e as Error).message}`));
    }
    const { emit, stopped } = j.stop.push(await j.text.push(token));
    if (emit && j.req.stream) j.sink.chunk({ id: j.id, seq: j.seq++, delta: emit });
    if (stopped) return this.finish(j, "stop");
    // a whole value of the grammar: nothing may follow it
    if (j.constraint?.complete) return this.finish(j, "stop", true);
    if (j.completion >= j.maxTokens) this.finish(j, "length");
  }

  /**
   * Ends a sequence: saves its session (before the reply goes out), then sends the final reply.
   * `ended`: it ended of itself (end of text, its grammar complete), so text held back as the
   * possible start of a stop string is sent; a stop string reached sends none.
   */
  private finish(j: Job, reason: FinalReply["finish_reason"], ended = false): void {
    const idx = this.active.indexOf(j);
    if (idx >= 0) this.active.splice(idx, 1);
    const prefilled = j.phase === "decode";
    j.phase = "done";
    const rest = reason === "stop" && !ended ? "" : j.stop.flush();
    if (rest && j.req.stream) j.sink.chunk({ id: j.id, seq: j.seq++, delta: rest });
    const decodeS = (j.t.last - j.t.first) / 1000;
    const reply: FinalReply = {
      id: j.id,
      text: j.stop.full,
      finish_reason: reason,
      usage: { prompt_tokens: j.promptIds.length, completion_tokens: j.completion },
      timings: {
        queue_ms: round((j.t.admitted || performance.now()) - j.t.received),
        ttft_ms: j.t.first ? round(j.t.first - j.t.received) : 0,
        decode_tokens_per_s: j.completion > 1 && decodeS > 0 ? round((j.completion - 1) / decodeS) : 0,
      },
    };
    if (j.req.session !== undefined) reply.session = j.req.session;
    if (j.constraint !== null) {
      reply.valid = j.constraint.valid(reply.text);
      j.constraint.dispose();
    }
    if (j.req.stream) reply.done = true;
    this.observer.finished?.(reason, j.completion);
    const session = j.req.session;
    if (session === undefined || !this.sessions || !prefilled) {
      j.sink.final(reply);
      return;
    }
    const rec = { state: this.backend.saveState(j.state!), pending: j.next, turns: j.turns + 1 };
    const saved = this.sessions.put(session, rec).then(
      () => j.sink.final(reply),
      (e) => {
        this.observer.failed?.("internal");
        j.sink.error(errorReply(j.id, new WireError("internal", `session ${session} could not be saved: ${(e as Error).message}`)));
      },
    );
    const done = saved.finally(() => {
      this.saving.delete(session);
      this.finishing.delete(done);
      this.wake();
    });
    this.saving.set(session, done);
    this.finishing.add(done);
  }
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
