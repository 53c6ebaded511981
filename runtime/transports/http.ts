// The OpenAI-compatible HTTP API: POST /v1/completions and /v1/chat/completions (JSON, or
// server-sent events with "stream": true), GET /v1/models, GET /health. Each request is turned into
// the daemon's own request and goes through `dispatch`, so the scheduler, its limits and its error
// codes are those of MQTT and stdio. Node's http module serves it: five routes need no framework.
import { randomUUID, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Daemon, Outgoing, Transport } from "../daemon/daemon.js";
import type { Chunk, ErrorCode, ErrorReply, FinalReply } from "../scheduler/protocol.js";

const status: Record<ErrorCode, number> = {
  bad_request: 400,
  too_large: 413,
  overloaded: 429,
  unknown_engine: 404,
  cancelled: 503,
  internal: 500,
};

type Kind = "completion" | "chat";
type Body = Record<string, unknown>;

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class HttpTransport implements Transport {
  readonly name = "http";
  private server: Server | null = null;
  private accepting = true;
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(
    private readonly daemon: Daemon,
    private readonly host: string,
    private readonly port: number,
    private readonly token: string | undefined,
  ) {}

  /** The port it listens on (the one given, or the one the system chose for 0). */
  get address(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? this.port;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once("error", (e: NodeJS.ErrnoException) =>
        reject(new Error(`http: cannot listen on ${this.host}:${this.port} (${e.code ?? e.message})`)),
      );
      server.listen(this.port, this.host, () => resolve());
    });
    this.server = server;
    this.daemon.log.info({ url: `http://${this.host}:${this.address}/v1`, auth: this.token !== undefined }, "HTTP API listening");
  }

  async stopAccepting(): Promise<void> {
    this.accepting = false;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    s.closeIdleConnections();
    await new Promise<void>((r) => s.close(() => r()));
    this.server = null;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const path = (req.url ?? "/").split("?")[0];
      if (path === "/health" && req.method === "GET") return json(res, 200, { status: this.accepting ? "ok" : "stopping" });
      this.authorize(req);
      if (path === "/v1/models") {
        if (req.method !== "GET") throw new HttpError(405, "method_not_allowed", `${req.method} ${path}: use GET`);
        return json(res, 200, { object: "list", data: [this.model()] });
      }
      const kind: Kind | null = path === "/v1/completions" ? "completion" : path === "/v1/chat/completions" ? "chat" : null;
      if (kind === null)
        throw new HttpError(
          404,
          "not_found",
          `no route ${req.method} ${path} (POST /v1/completions, POST /v1/chat/completions, GET /v1/models)`,
        );
      if (req.method !== "POST") throw new HttpError(405, "method_not_allowed", `${req.method} ${path}: use POST`);
      if (!this.accepting) throw new HttpError(503, "overloaded", "the daemon is shutting down");
      const body = await readBody(req, this.daemon.config.maxMessageBytes);
      this.generate(kind, body, req, res);
    } catch (e) {
      if (e instanceof HttpError) return json(res, e.status, { error: { message: e.message, type: e.code, code: e.code } });
      this.daemon.log.error({ err: e }, "http request failed");
      json(res, 500, { error: { message: (e as Error).message, type: "internal", code: "internal" } });
    }
  }

  private authorize(req: IncomingMessage): void {
    if (this.token === undefined) return;
    const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1] ?? "";
    const a = Buffer.from(given);
    const b = Buffer.from(this.token);
    if (a.length !== b.length || !timingSafeEqual(a, b))
      throw new HttpError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer …)");
  }

  private model() {
    return { id: this.daemon.opened.label, object: "model", created: this.created, owned_by: "mamba-edge" };
  }

  /** One generation: the OpenAI body as the daemon's request, its replies as JSON or events. */
  private generate(kind: Kind, body: Body, req: IncomingMessage, res: ServerResponse): void {
    const internalId = `http-${randomUUID()}`;
    const request = toRequest(kind, body, internalId);
    const stream = body.stream === true;
    const includeUsage = (body.stream_options as Body | undefined)?.include_usage === true;
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${internalId.slice(5)}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.daemon.opened.label;
    const object = kind === "chat" ? "chat.completion" : "text_completion";
    let finished = false;
    let started = false;
    res.on("close", () => {
      // the client went away: its generation stops at the next token
      if (!finished) this.daemon.cancel(internalId, "http");
    });
    const event = (data: unknown) => {
      if (!started) {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
        started = true;
      }
      res.write(`data: ${JSON.stringify(data)}\n\n`);
    };
    const choice = (text: string, finish: string | null, first: boolean) =>
      kind === "chat"
        ? { index: 0, delta: first ? { role: "assistant", content: text } : { content: text }, finish_reason: finish, logprobs: null }
        : { index: 0, text, finish_reason: finish, logprobs: null };
    let first = true;
    const send = (m: Outgoing) => {
      if (finished) return;
      if ("error" in m) {
        finished = true;
        const e = (m as ErrorReply).error;
        const payload = { error: { message: e.message, type: e.code, code: e.code } };
        if (started) {
          event(payload);
          res.end();
        } else json(res, status[e.code] ?? 500, payload);
        return;
      }
      if ("delta" in m) {
        event({ id, object: `${object}.chunk`, created, model, choices: [choice((m as Chunk).delta, null, first)] });
        first = false;
        return;
      }
      if (!("finish_reason" in m)) return;
      finished = true;
      const r = m as FinalReply;
      const usage = {
        prompt_tokens: r.usage.prompt_tokens,
        completion_tokens: r.usage.completion_tokens,
        total_tokens: r.usage.prompt_tokens + r.usage.completion_tokens,
      };
      const extra = {
        ...(r.valid !== undefined ? { valid: r.valid } : {}),
        ...(r.session !== undefined ? { session: r.session } : {}),
        timings: r.timings,
      };
      if (stream) {
        event({ id, object: `${object}.chunk`, created, model, choices: [choice("", r.finish_reason, first)], ...extra });
        if (includeUsage) event({ id, object: `${object}.chunk`, created, model, choices: [], usage });
        res.end("data: [DONE]\n\n");
        return;
      }
      const c =
        kind === "chat"
          ? { index: 0, message: { role: "assistant", content: r.text }, finish_reason: r.finish_reason, logprobs: null }
          : { index: 0, text: r.text, finish_reason: r.finish_reason, logprobs: null };
      json(res, 200, { id, object, created, model, choices: [c], usage, ...extra });
    };
    this.daemon.dispatch(JSON.stringify(request), send, `http ${req.socket.remoteAddress ?? "?"}`);
  }
}

function json(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage, max: number): Promise<Body> {
  const declared = Number(req.headers["content-length"] ?? NaN);
  if (declared > max) throw new HttpError(413, "too_large", `body of ${declared} bytes, the limit is ${max}`);
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of req) {
    n += (chunk as Buffer).length;
    if (n > max) throw new HttpError(413, "too_large", `body of more than ${max} bytes, the limit is ${max}`);
    parts.push(chunk as Buffer);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(parts).toString("utf8"));
  } catch {
    throw new HttpError(400, "bad_request", "body: not JSON");
  }
  if (body === null || typeof body !== "object" || Array.isArray(body))
    throw new HttpError(400, "bad_request", "body: expected a JSON object");
  return body as Body;
}

/** OpenAI's fields as the daemon's request; the daemon validates the result, naming its fields. */
function toRequest(kind: Kind, b: Body, id: string): Body {
  if (b.n !== undefined && b.n !== 1) throw new HttpError(400, "bad_request", `n: only 1 is supported, found ${JSON.stringify(b.n)}`);
  const r: Body = { id };
  if (kind === "completion") {
    const p = b.prompt;
    r.prompt = Array.isArray(p) && p.length === 1 ? p[0] : p;
    if (typeof r.prompt !== "string") throw new HttpError(400, "bad_request", "prompt: expected a string");
  } else {
    if (!Array.isArray(b.messages)) throw new HttpError(400, "bad_request", "messages: expected an array of {role, content}");
    r.messages = b.messages.map((m: unknown, i) => {
      const msg = m as Body | null;
      const content = msg?.content;
      // content as a string, or as parts [{type: "text", text}]
      const text = Array.isArray(content)
        ? content
            .map((c: Body) =>
              c?.type === "text" && typeof c.text === "string" ? c.text : fail(`messages[${i}].content: only text parts are supported`),
            )
            .join("")
        : content;
      return { role: msg?.role === "developer" ? "system" : msg?.role, content: text };
    });
  }
  const copy = (from: string, to = from) => {
    if (b[from] !== undefined && b[from] !== null) r[to] = b[from];
  };
  copy("max_tokens");
  copy("max_completion_tokens", "max_tokens");
  for (const f of ["temperature", "top_p", "seed", "stop", "session", "top_k", "min_p", "repeat_penalty", "format", "json_schema"]) copy(f);
  if (b.stream === true) r.stream = true;
  const rf = b.response_format as Body | undefined;
  if (rf !== undefined && rf !== null) {
    if (rf.type === "json_object") r.format = "json";
    else if (rf.type === "json_schema") {
      const schema = (rf.json_schema as Body | undefined)?.schema;
      if (schema === null || typeof schema !== "object" || Array.isArray(schema))
        throw new HttpError(400, "bad_request", "response_format.json_schema.schema: expected a JSON schema (an object)");
      r.json_schema = schema;
    } else if (rf.type !== "text")
      throw new HttpError(
        400,
        "bad_request",
        `response_format.type: expected text, json_object or json_schema, found ${JSON.stringify(rf.type)}`,
      );
  }
  return r;
}

function fail(message: string): never {
  throw new HttpError(400, "bad_request", message);
}
