// The wire protocol shared by every transport (MQTT, stdio, in-process chat): the request and reply
// objects of DESIGN.md, validated at the edge so everything behind it works on typed values.
import { z } from "zod";

export type ErrorCode = "bad_request" | "too_large" | "overloaded" | "unknown_engine" | "cancelled" | "internal";

/** An error that becomes a wire reply `{"id", "error": {"code", "message"}}`. */
export class WireError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "WireError";
  }
}

const id = z.union([z.string().min(1).max(256), z.int()]);

const replyTo = z.string().min(1).max(1024).optional();

const message = z.strictObject({
  role: z.enum(["system", "user", "assistant"]),
  content: z.string(),
});

export const requestSchema = z.strictObject({
  id: id.optional(),
  prompt: z.string().optional(),
  messages: z.array(message).min(1).max(256).optional(),
  session: z.string().optional(),
  max_tokens: z.int().min(1).optional(),
  temperature: z.number().min(0).max(100).optional(),
  top_k: z.int().min(0).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  min_p: z.number().min(0).max(1).optional(),
  repeat_penalty: z.number().min(0.01).max(100).optional(),
  seed: z
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .optional(),
  stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(16)]).optional(),
  stream: z.boolean().optional(),
  // constrained output: "json" (an object), or a JSON schema (Ollama's format, llama-server's json_schema)
  format: z.union([z.literal("json"), z.record(z.string(), z.unknown())]).optional(),
  json_schema: z.record(z.string(), z.unknown()).optional(),
  reply_to: replyTo,
});

export type Request = z.infer<typeof requestSchema>;
export type RequestId = string | number;

export const opSchema = z.discriminatedUnion("op", [
  z.strictObject({ op: z.literal("cancel"), id, reply_to: replyTo }),
  z.strictObject({ op: z.literal("status"), id: id.optional(), reply_to: replyTo }),
  z.strictObject({ op: z.literal("reset"), session: z.string(), id: id.optional(), reply_to: replyTo }),
]);
export type Op = z.infer<typeof opSchema>;

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

export interface FinalReply {
  id: RequestId;
  text: string;
  finish_reason: "stop" | "length" | "cancelled";
  usage: Usage;
  timings: { queue_ms: number; ttft_ms: number; decode_tokens_per_s: number };
  session?: string;
  /** constrained requests only: the text is a whole value of its format and validates (false: cut by max_tokens or a stop string) */
  valid?: boolean;
  done?: true;
}

export interface Chunk {
  id: RequestId;
  seq: number;
  delta: string;
}

export interface ErrorReply {
  id: RequestId | null;
  error: { code: ErrorCode; message: string };
}

export type Reply = FinalReply | Chunk | ErrorReply;

/** One line naming the first problem zod found: `max_tokens: expected int, found "ten"`. */
export function describeIssue(err: z.ZodError, input: unknown): string {
  const issue = err.issues[0];
  const path = issue.path.join(".");
  if (issue.code === "unrecognized_keys") return `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`;
  let found: unknown = input;
  for (const k of issue.path)
    found = found !== null && typeof found === "object" ? (found as Record<PropertyKey, unknown>)[k as PropertyKey] : undefined;
  const shown = found === undefined ? "nothing" : shortValue(found);
  return `${path || "message"}: ${issue.message.replace(/^Invalid input: /, "").replace(/, received \w+$/, "")}${issue.code === "invalid_type" || issue.code === "too_big" || issue.code === "too_small" || issue.code === "invalid_value" ? `, found ${shown}` : ""}`;
}

/**
 * A found value for an error message. Never walks into arrays or objects: input may nest deeper
 * than the stack (JSON.stringify of 5000 nested arrays throws). JSON reads 1e400 as Infinity.
 */
function shortValue(v: unknown): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (v !== null && typeof v === "object") return "an object";
  if (typeof v === "number" && !Number.isFinite(v)) return "a number beyond float64 range";
  const s = JSON.stringify(v);
  return s.length > 40 ? s.slice(0, 40) + "…" : s;
}

/** Parses one incoming payload; a request or an op, or a WireError with whatever id could be read. */
export function parseMessage(payload: string | Uint8Array, maxBytes: number): { kind: "request"; req: Request } | { kind: "op"; op: Op } {
  const bytes = typeof payload === "string" ? Buffer.byteLength(payload) : payload.byteLength;
  if (bytes > maxBytes) throw new WireError("too_large", `message of ${bytes} bytes, the limit is ${maxBytes}`);
  const text = typeof payload === "string" ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString("utf8");
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    throw new WireError("bad_request", "not JSON");
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) throw new WireError("bad_request", "expected a JSON object");
  if ("op" in obj) {
    const r = opSchema.safeParse(obj);
    if (!r.success) throw new WireError("bad_request", describeIssue(r.error, obj));
    return { kind: "op", op: r.data };
  }
  const r = requestSchema.safeParse(obj);
  if (!r.success) throw new WireError("bad_request", describeIssue(r.error, obj));
  const req = r.data;
  if ((req.prompt === undefined) === (req.messages === undefined))
    throw new WireError("bad_request", "give exactly one of prompt and messages");
  if (req.format !== undefined && req.json_schema !== undefined)
    throw new WireError("bad_request", "give at most one of format and json_schema");
  return { kind: "request", req };
}

/**
 * What a payload says about where its answer goes, read before (and whatever) validation says: its
 * id, so an error reply can name it, and its `reply_to`, so an MQTT 3.1.1 client can get one.
 */
export function peek(payload: string | Uint8Array): { id: RequestId | null; replyTo: unknown } {
  try {
    const obj = JSON.parse(typeof payload === "string" ? payload : Buffer.from(payload).toString("utf8"));
    const v = obj?.id;
    return { id: (typeof v === "string" && v.length <= 256) || Number.isInteger(v) ? v : null, replyTo: obj?.reply_to };
  } catch {
    return { id: null, replyTo: undefined };
  }
}

/** What a request's output must be, and the field that said so; null when unconstrained. */
export function outputFormat(
  req: Request,
): { format: { kind: "json" } | { kind: "schema"; schema: Record<string, unknown> }; field: string } | null {
  if (req.json_schema !== undefined) return { format: { kind: "schema", schema: req.json_schema }, field: "json_schema" };
  if (req.format === "json") return { format: { kind: "json" }, field: "format" };
  if (req.format !== undefined) return { format: { kind: "schema", schema: req.format }, field: "format" };
  return null;
}

/** `messages` as text for a plain language model: one "role: content" line per message, then the
 *  assistant's cue, so the model continues as the assistant. */
export function renderMessages(messages: NonNullable<Request["messages"]>): string {
  return messages.map((m) => `${m.role}: ${m.content}\n`).join("") + "assistant:";
}

export function errorReply(id: RequestId | null, e: WireError): ErrorReply {
  return { id, error: { code: e.code, message: e.message } };
}
