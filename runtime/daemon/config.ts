// The daemon's settings: one JSON file, then environment variables (MAMBA_EDGE_<FIELD>, e.g.
// MAMBA_EDGE_MAX_QUEUE=32), then command-line flags, each overriding the one before. Validated once
// at start; every bad field is reported on its own line.
import { readFileSync } from "node:fs";
import { homedir, hostname } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { UserError } from "../../engines/errors.js";
import { defaultLimits } from "../scheduler/scheduler.js";

const positive = z.int().min(1);

/** An MQTT topic filter: `+` only as a whole level, `#` only as the whole last level, no `$` topics. */
export function validFilter(f: string): boolean {
  if (f.length === 0 || f.length > 1024 || f.startsWith("$") || f.includes("\0")) return false;
  const levels = f.split("/");
  return levels.every((l, i) => (l.includes("+") ? l === "+" : true) && (l.includes("#") ? l === "#" && i === levels.length - 1 : true));
}

export const configSchema = z.strictObject({
  /** engine package to serve (backend ort or cuda) */
  engine: z.string().min(1).optional(),
  /** checkpoint directory to serve with the TypeScript reference */
  model: z.string().min(1).optional(),
  /** default: auto (trt with a plan for this GPU, else cuda with a GPU, else ort) */
  backend: z.enum(["ref", "ort", "cuda", "trt", "auto"]).optional(),
  /** CPU threads: backend ort's (default: one per core), the reference's (1 or 2); not for cuda */
  threads: positive.optional(),
  /** "embedded" (a broker inside the daemon), "off", or a broker URL: mqtt://host:1883, mqtts://… */
  mqtt: z
    .string()
    .refine(
      (s) => s === "embedded" || s === "off" || /^(mqtts?|wss?):\/\/[^\s]+$/.test(s),
      "expected embedded, off or a URL mqtt://host:port (mqtts://, ws://, wss://)",
    )
    .optional(),
  /** serve JSON lines on stdin/stdout */
  stdio: z.boolean().default(false),
  /** this daemon's name in topics; default: the host name */
  node: z
    .string()
    .regex(/^[^/+#\s]{1,64}$/, "expected 1-64 characters without / + # or spaces")
    .default(() => hostname().replace(/[/+#\s]/g, "-") || "mamba-edge"),
  topicPrefix: z
    .string()
    .regex(/^[^+#\s]{1,64}$/, "expected 1-64 characters without + # or spaces")
    .default("mamba-edge"),
  /**
   * MQTT topic filters (+ and # allowed) a reply may be published to; a request whose Response
   * Topic / reply_to matches none is not answered. Default: robots/+/reply/# and <prefix>/chat/+/reply/#.
   * The daemon's own topics are refused whatever this allows.
   */
  replyTopicPattern: z
    .union([z.string(), z.array(z.string()).min(1).max(64)])
    .transform((v) => (typeof v === "string" ? [v] : v))
    .refine((v) => v.every(validFilter), "expected MQTT topic filters (+ a whole level, # the last level; not starting with $)")
    .optional(),
  /** MQTT protocol version towards an outside broker (the embedded one speaks 4, that is 3.1.1) */
  mqttVersion: z.union([z.literal(5), z.literal(4)]).default(5),
  clientId: z.string().min(1).max(128).optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  /** PEM files for mqtts:// */
  ca: z.string().optional(),
  cert: z.string().optional(),
  key: z.string().optional(),
  rejectUnauthorized: z.boolean().default(true),
  /** where the embedded broker listens */
  brokerHost: z.string().default("127.0.0.1"),
  brokerPort: z.int().min(0).max(65535).default(1883),
  /** session states on disk; default $STATE_DIRECTORY/sessions (systemd) or ~/.local/state/mamba-edge/sessions */
  stateDir: z
    .string()
    .min(1)
    .default(() => join(process.env.STATE_DIRECTORY ?? join(homedir(), ".local", "state", "mamba-edge"), "sessions")),
  /** bytes of session states kept in memory (all are on disk as well) */
  sessionMemoryBytes: z
    .int()
    .min(0)
    .default(64 << 20),
  maxQueue: z.int().min(0).default(defaultLimits.maxQueue),
  maxActive: positive.default(defaultLimits.maxActive),
  maxPromptTokens: positive.default(defaultLimits.maxPromptTokens),
  maxTokens: positive.default(defaultLimits.maxTokens),
  defaultMaxTokens: positive.default(defaultLimits.defaultMaxTokens),
  prefillChunk: positive.default(defaultLimits.prefillChunk),
  /** largest incoming message in bytes */
  maxMessageBytes: positive.default(64 << 10),
  /** the OpenAI-compatible HTTP API on this port (off when absent) */
  http: z.int().min(0).max(65535).optional(),
  /** where the HTTP API listens (loopback unless a LAN address is given) */
  httpHost: z.string().default("127.0.0.1"),
  /** when set, every HTTP request must carry `Authorization: Bearer <token>` (better: MAMBA_EDGE_HTTP_TOKEN) */
  httpToken: z.string().min(1).optional(),
  /** Prometheus /metrics on this local port (off when absent) */
  metricsPort: z.int().min(0).max(65535).optional(),
  metricsHost: z.string().default("127.0.0.1"),
  /** how long a shutdown lets running requests finish before cancelling them */
  shutdownDeadlineMs: z.int().min(0).default(10_000),
  statusIntervalMs: positive.default(5_000),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

export type DaemonConfig = z.infer<typeof configSchema>;
type Raw = Record<string, unknown>;

const envName = (field: string) => "MAMBA_EDGE_" + field.replace(/[A-Z]/g, (c) => "_" + c).toUpperCase();

/** Reads MAMBA_EDGE_* variables: the text where the field takes text, else its JSON value (numbers, true/false). */
function fromEnv(env: NodeJS.ProcessEnv): Raw {
  const out: Raw = {};
  for (const [field, type] of Object.entries(configSchema.shape)) {
    const v = env[envName(field)];
    if (v === undefined) continue;
    let parsed: unknown = v;
    try {
      parsed = JSON.parse(v);
    } catch {
      /* plain text */
    }
    out[field] = (type as z.ZodType).safeParse(v).success ? v : parsed;
  }
  return out;
}

function fromFile(file: string): Raw {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new UserError(`${file}: cannot read config (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    // V8 quotes the text it failed on, newlines and all: keep the refusal on one line
    throw new UserError(`${file}: not valid JSON (${(e as Error).message.replace(/\s+/g, " ").slice(0, 200)})`);
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) throw new UserError(`${file}: expected a JSON object of settings`);
  return obj as Raw;
}

/** file < env < flags; `flags` holds only what was given on the command line. */
export function loadConfig(opts: { file?: string; env?: NodeJS.ProcessEnv; flags?: Raw }): DaemonConfig {
  const sources: [string, Raw][] = [];
  if (opts.file) sources.push([opts.file, fromFile(opts.file)]);
  sources.push(["environment", fromEnv(opts.env ?? process.env)]);
  sources.push(["flags", Object.fromEntries(Object.entries(opts.flags ?? {}).filter(([, v]) => v !== undefined))]);
  const merged: Raw = {};
  const origin: Record<string, string> = {};
  for (const [name, raw] of sources) {
    for (const [k, v] of Object.entries(raw)) {
      merged[k] = v;
      origin[k] =
        name === "environment" ? envName(k) : name === "flags" ? `--${k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())}` : `${name}: ${k}`;
    }
  }
  const r = configSchema.safeParse(merged);
  if (!r.success) {
    const lines = r.error.issues.map((i) => {
      if (i.code === "unrecognized_keys")
        return `${opts.file ?? "config"}: unknown setting${i.keys.length > 1 ? "s" : ""} ${i.keys.join(", ")}`;
      const k = String(i.path[0]);
      return `${origin[k] ?? k}: ${i.message.replace(/^Invalid input: /, "").replace(/, received \w+$/, "")}, found ${JSON.stringify(merged[k])}`;
    });
    throw new UserError(lines.join("\nmamba-edge: "));
  }
  const c = r.data;
  const targets = [c.engine, c.model].filter((x) => x !== undefined).length;
  if (targets > 1) throw new UserError("config: give one of engine and model");
  if (c.defaultMaxTokens > c.maxTokens)
    throw new UserError(`config: defaultMaxTokens (${c.defaultMaxTokens}) is over maxTokens (${c.maxTokens})`);
  if ((c.cert === undefined) !== (c.key === undefined))
    throw new UserError(`config: a client certificate needs both cert and key (found only ${c.cert === undefined ? "key" : "cert"})`);
  return c;
}

/** The filters replies may go to: the setting, or robots/+/reply/# and <prefix>/chat/+/reply/# (mamba-edge chat's). */
export function replyFilters(c: DaemonConfig): string[] {
  return c.replyTopicPattern ?? ["robots/+/reply/#", `${c.topicPrefix}/chat/+/reply/#`];
}

/** Where requests come from: MQTT unless only stdio or HTTP was asked for. */
export function mqttMode(c: DaemonConfig): string {
  return c.mqtt ?? (c.stdio || c.http !== undefined ? "off" : "embedded");
}
