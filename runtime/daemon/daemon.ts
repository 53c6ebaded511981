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
  readonly scheduler: Scheduler;
  readonly sessions: SessionStore;
  private readonly transports: Transport[] = [];
  private metricsServer: Server | null = null;
  private readonly started = Date.now();
  private stopping: Promise<void> | null = null;

  private constructor(
    readonly config: DaemonConfig,
    readonly opened: Opened,
    readonly log: Logger,
  ) {
    this.sessions = new SessionStore(config.stateDir, config.sessionMemoryBytes);
    const tokenizer = openTokenizer(opened);
    this.scheduler = new Scheduler(
      opened.backend,
      tokenizer,
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
      (e) => log.error({ err: e }, "backend failure"),
    );
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
      active: this.scheduler.running,
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
    const n = this.scheduler.cancel(id);
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
      await this.scheduler.shutdown(this.config.shutdownDeadlineMs);
      for (const t of [...this.transports].reverse()) await t.close();
      await new Promise<void>((r) => (this.metricsServer ? this.metricsServer.close(() => r()) : r()));
      await this.opened.backend.close();
      this.log.info("stopped");
    })();
    return this.stopping;
  }
}
