// The daemon: one backend, one scheduler, the session store, and the transports that feed them.
// Transports hand every incoming payload to `dispatch` with a function that sends a reply back the
// way the request came; they know nothing of models.
import type { Server } from "node:http";
import { UserError } from "../../engines/errors.js";
import { openTokenizer, type Opened } from "../backends/open.js";
import { WireError, errorReply, parseMessage, peek, type Op, type Reply, type RequestId } from "../scheduler/protocol.js";
import { Scheduler, type Sink } from "../scheduler/scheduler.js";
import { SessionStore } from "../scheduler/sessions.js";
import { mqttMode, type DaemonConfig } from "./config.js";
import type { Logger } from "./log.js";
import { Metrics } from "./metrics.js";

/** Anything a transport sends back: a reply of the protocol, or an op's answer. */
export type Outgoing = Reply | Record<string, unknown>;
export type Send = (msg: Outgoing) => void;

export interface Transport {
  readonly name: string;
  start(): Promise<void>;
  /** stop taking new requests (replies and cancels still flow) */
  stopAccepting(): Promise<void>;
  close(): Promise<void>;
}

export interface Status {
  state: "online" | "offline";
  node: string;
  engine: string;
  backend: string;
  recipe: string;
  queue: number;
  active: number;
  max_active: number;
  tokens_per_s: number;
  ttft_ms_avg: number;
  completed: number;
  errors: Record<string, number>;
  uptime_s: number;
}

export class Daemon {
  readonly metrics = new Metrics();
  readonly sessions: SessionStore;
  /** the engine new requests go to; swapped by `swap` (SIGHUP reload) */
  private current: { opened: Opened; scheduler: Scheduler };
  /** engines replaced by a reload, finishing the requests they took */
  private readonly draining = new Set<{ opened: Opened; scheduler: Scheduler; done: Promise<void> }>();
  private readonly transports: Transport[] = [];
  private metricsServer: Server | null = null;
  private readonly started = Date.now();
  private stopping: Promise<void> | null = null;

  private constructor(
    readonly config: DaemonConfig,
    opened: Opened,
    readonly log: Logger,
  ) {
    this.sessions = new SessionStore(config.stateDir, config.sessionMemoryBytes);
    this.current = { opened, scheduler: this.schedulerFor(opened) };
  }

  get opened(): Opened {
    return this.current.opened;
  }

  get scheduler(): Scheduler {
    return this.current.scheduler;
  }

  /** Engines still finishing requests after a reload replaced them. */
  get drainingEngines(): number {
    return this.draining.size;
  }

  private schedulerFor(opened: Opened): Scheduler {
    const config = this.config;
    return new Scheduler(
      opened.backend,
      openTokenizer(opened),
      this.sessions,
      {
        maxQueue: config.maxQueue,
        maxActive: Math.min(config.maxActive, 1024),
        maxPromptTokens: config.maxPromptTokens,
        maxTokens: config.maxTokens,
        defaultMaxTokens: config.defaultMaxTokens,
        prefillChunk: config.prefillChunk,
      },
      this.metrics,
      opened.config.eosTokenId,
      (e) => this.log.error({ err: e }, "backend failure"),
    );
  }

  /**
   * Reload: requests from now on go to `next`; those the old engine took (queued or running)
   * finish on it, then it is closed. Resolves once the old engine is closed.
   */
  swap(next: Opened): Promise<void> {
    if (this.stopping) throw new Error("the daemon is stopping");
    const old = this.current;
    this.current = { opened: next, scheduler: this.schedulerFor(next) };
    this.log.info({ engine: next.label, backend: next.backend.info.name, previous: old.opened.label }, "engine swapped");
    const entry = {
      ...old,
      // no deadline: a reload never cuts a running request short (stop() still does)
      done: (async () => {
        await old.scheduler.shutdown(2 ** 31 - 1);
        await old.opened.backend.close();
        this.log.info({ engine: old.opened.label }, "previous engine closed");
      })(),
    };
    this.draining.add(entry);
    return entry.done.finally(() => this.draining.delete(entry));
  }

  /** A daemon over an opened engine (or model) and the state directory; transports are added by the caller. */
  static async open(config: DaemonConfig, log: Logger, opened: Opened): Promise<Daemon> {
    const d = new Daemon(config, opened, log);
    const sessions = await d.sessions.list().catch((e: Error) => {
      throw new UserError(`${config.stateDir}: cannot use as the state directory (${e.message})`);
    });
    log.info(
      {
        engine: opened.label,
        backend: opened.backend.info.name,
        device: opened.backend.info.device,
        recipe: opened.recipe,
        sessions: sessions.length,
        stateDir: config.stateDir,
        mqtt: mqttMode(config),
        stdio: config.stdio,
      },
      "engine loaded",
    );
    if (config.metricsPort !== undefined) {
      try {
        d.metricsServer = await d.metrics.serve(config.metricsHost, config.metricsPort);
      } catch (e) {
        throw new UserError(
          `metricsPort: cannot listen on ${config.metricsHost}:${config.metricsPort} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        );
      }
      log.info({ url: `http://${config.metricsHost}:${config.metricsPort}/metrics` }, "metrics");
    }
    return d;
  }

  async add(t: Transport): Promise<void> {
    await t.start();
    this.transports.push(t);
  }

  status(state: Status["state"] = "online"): Status {
    this.metrics.setLoad(this.scheduler.queued, this.scheduler.running);
    return {
      state,
      node: this.config.node,
      engine: this.opened.label,
      backend: this.opened.backend.info.name,
      recipe: this.opened.recipe,
      queue: this.scheduler.queued,
      // requests still running on an engine a reload replaced count too
      active: this.scheduler.running + [...this.draining].reduce((n, d) => n + d.scheduler.running + d.scheduler.queued, 0),
      max_active: this.scheduler.limits.maxActive,
      ...this.metrics.summary(),
      uptime_s: Math.round((Date.now() - this.started) / 1000),
    };
  }

  /**
   * One incoming message from any transport. Never throws: a malformed message gets an error reply
   * (when there is somewhere to send it) and a log line.
   */
  dispatch(
    payload: string | Uint8Array,
    send: Send | null,
    from: string,
    hooks: { onAccepted?: () => void; onFinal?: (r: Outgoing) => void } = {},
  ): void {
    let parsed: ReturnType<typeof parseMessage>;
    try {
      parsed = parseMessage(payload, this.config.maxMessageBytes);
    } catch (e) {
      const err = e instanceof WireError ? e : new WireError("internal", String(e));
      const id = peek(payload).id;
      this.metrics.failed(err.code);
      this.log.warn({ from, id, code: err.code }, err.message);
      send?.(errorReply(id, err));
      return;
    }
    if (parsed.kind === "op") {
      void this.op(parsed.op, send, from);
      return;
    }
    const req = parsed.req;
    if (!send) {
      this.log.warn({ from, id: req.id }, "request without a reply address (MQTT v5 Response Topic or reply_to): dropped");
      this.metrics.failed("bad_request");
      return;
    }
    hooks.onAccepted?.(); // a valid request that goes to the scheduler (not an op, not refused)
    const final = (r: Outgoing) => {
      hooks.onFinal?.(r);
      send(r);
    };
    const sink: Sink = {
      chunk: (c) => send(c),
      final: (r) => {
        this.log.info(
          {
            from,
            id: r.id,
            finish: r.finish_reason,
            prompt: r.usage.prompt_tokens,
            completion: r.usage.completion_tokens,
            ttft_ms: r.timings.ttft_ms,
            tps: r.timings.decode_tokens_per_s,
          },
          "done",
        );
        final(r);
      },
      error: (r) => {
        this.log.warn({ from, id: r.id, code: r.error.code }, r.error.message);
        final(r);
      },
    };
    this.log.debug({ from, id: req.id, session: req.session }, "request");
    this.scheduler.submit(req, sink).catch((e) => {
      this.log.error({ err: e, id: req.id }, "request failed");
      sink.error(errorReply(req.id ?? null, new WireError("internal", (e as Error).message)));
    });
  }

  /** The control messages: cancel, status, reset. */
  private async op(op: Op, send: Send | null, from: string): Promise<void> {
    const reply = (m: Outgoing) => send?.(m);
    try {
      switch (op.op) {
        case "cancel":
          reply({ op: "cancel", id: op.id, cancelled: this.cancel(op.id, from) });
          break;
        case "status":
          reply({ op: "status", ...(op.id !== undefined ? { id: op.id } : {}), ...this.status() });
          break;
        case "reset": {
          const existed = await this.scheduler.reset(op.session);
          this.log.info({ from, session: op.session, existed }, "session reset");
          reply({ op: "reset", ...(op.id !== undefined ? { id: op.id } : {}), session: op.session, existed });
          break;
        }
      }
    } catch (e) {
      const err = e instanceof WireError ? e : new WireError("internal", (e as Error).message);
      this.metrics.failed(err.code);
      reply(errorReply(op.id ?? null, err));
    }
  }

  /** Cancels the requests with this id (the cancel op, the MQTT cancel topic); returns how many. */
  cancel(id: RequestId, from: string): number {
    let n = this.scheduler.cancel(id);
    for (const d of this.draining) n += d.scheduler.cancel(id);
    this.log.info({ from, id, cancelled: n }, "cancel");
    return n;
  }

  /**
   * Graceful stop: transports stop taking requests, running work finishes (or is cancelled at the
   * deadline), session states are on disk, status goes offline, transports close.
   */
  stop(reason: string): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info({ reason, queue: this.scheduler.queued, active: this.scheduler.running }, "shutting down");
      await Promise.all(this.transports.map((t) => t.stopAccepting()));
      await Promise.all(
        [this.scheduler, ...[...this.draining].map((d) => d.scheduler)].map((s) => s.shutdown(this.config.shutdownDeadlineMs)),
      );
      await Promise.all([...this.draining].map((d) => d.done));
      for (const t of [...this.transports].reverse()) await t.close();
      await new Promise<void>((r) => (this.metricsServer ? this.metricsServer.close(() => r()) : r()));
      await this.opened.backend.close();
      this.log.info("stopped");
    })();
    return this.stopping;
  }
}
