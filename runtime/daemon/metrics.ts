// Prometheus metrics (prom-client) and the same figures in compact form for the status topic.
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ErrorCode } from "../scheduler/protocol.js";
import type { Observer } from "../scheduler/scheduler.js";

const WINDOW_MS = 10_000;

export class Metrics implements Observer {
  readonly registry = new Registry();
  private readonly queueDepth = new Gauge({
    name: "mamba_edge_queue_depth",
    help: "requests waiting for a slot",
    registers: [this.registry],
  });
  private readonly activeSeqs = new Gauge({
    name: "mamba_edge_active_sequences",
    help: "sequences being prefilled or decoded",
    registers: [this.registry],
  });
  private readonly tokens = new Counter({
    name: "mamba_edge_generated_tokens_total",
    help: "tokens generated",
    registers: [this.registry],
  });
  private readonly requests = new Counter({
    name: "mamba_edge_requests_total",
    help: "requests finished, by finish reason",
    labelNames: ["finish_reason"],
    registers: [this.registry],
  });
  private readonly errors = new Counter({
    name: "mamba_edge_errors_total",
    help: "error replies, by code",
    labelNames: ["code"],
    registers: [this.registry],
  });
  private readonly ttft = new Histogram({
    name: "mamba_edge_ttft_seconds",
    help: "time from receiving a request to its first token",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly tokenLatency = new Histogram({
    name: "mamba_edge_token_latency_seconds",
    help: "time between two tokens of one sequence",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  private readonly queueTime = new Histogram({
    name: "mamba_edge_queue_seconds",
    help: "time a request waited for a slot",
    buckets: [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30],
    registers: [this.registry],
  });
  private readonly batch = new Histogram({
    name: "mamba_edge_decode_batch",
    help: "sequences per decode step",
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  });
  private readonly recent: number[] = []; // times of recent tokens, for tokens/s
  private readonly errorCounts: Partial<Record<ErrorCode, number>> = {};
  private ttftSum = 0;
  private ttftCount = 0;
  private finishedCount = 0;

  admitted(ms: number): void {
    this.queueTime.observe(ms / 1000);
  }
  firstToken(ms: number): void {
    this.ttft.observe(ms / 1000);
    this.ttftSum += ms;
    this.ttftCount++;
    this.countToken();
  }
  token(ms: number): void {
    this.tokenLatency.observe(ms / 1000);
    this.countToken();
  }
  finished(reason: string): void {
    this.requests.inc({ finish_reason: reason });
    this.finishedCount++;
  }
  failed(code: ErrorCode): void {
    this.errors.inc({ code });
    this.errorCounts[code] = (this.errorCounts[code] ?? 0) + 1;
  }
  step(batch: number): void {
    this.batch.observe(batch);
  }

  /** Called before reading: the gauges follow the scheduler. */
  setLoad(queue: number, active: number): void {
    this.queueDepth.set(queue);
    this.activeSeqs.set(active);
  }

  /** Compact figures for the status topic and the stdio status op. */
  summary(): { tokens_per_s: number; ttft_ms_avg: number; completed: number; errors: Partial<Record<ErrorCode, number>> } {
    this.trim(performance.now());
    return {
      tokens_per_s: Math.round((this.recent.length / WINDOW_MS) * 1000 * 10) / 10,
      ttft_ms_avg: this.ttftCount ? Math.round((this.ttftSum / this.ttftCount) * 10) / 10 : 0,
      completed: this.finishedCount,
      errors: { ...this.errorCounts },
    };
  }

  /** Serves GET /metrics (Prometheus text format) on a local port. */
  async serve(host: string, port: number): Promise<Server> {
    const server = createServer((req, res) => {
      if (req.method !== "GET" || req.url !== "/metrics") {
        res.writeHead(404).end("not found: try GET /metrics\n");
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": this.registry.contentType }).end(text),
        (e) => res.writeHead(500).end(String(e)),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    return server;
  }

  private countToken(): void {
    const now = performance.now();
    this.tokens.inc();
    this.recent.push(now);
    if (this.recent.length > 4096) this.trim(now);
  }

  private trim(now: number): void {
    let drop = 0;
    while (drop < this.recent.length && now - this.recent[drop] > WINDOW_MS) drop++;
    this.recent.splice(0, drop);
  }
}
