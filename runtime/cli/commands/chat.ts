// `mamba-edge chat`: a conversation on the device, either in-process on an engine (the same
// scheduler the daemon uses) or against a running daemon over MQTT. Streams tokens as they come,
// keeps a session, and works piped (one line in, one reply out) as well as in a terminal.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Argv } from "yargs";
import { outputFormatFrom, outputFormatOptions } from "../flags.js";
import { connect, type MqttClient } from "mqtt";
import { UserError } from "../../../engines/errors.js";
import { configSchema } from "../../daemon/config.js";
import { describeIssue, requestSchema, type ErrorReply, type FinalReply, type Request } from "../../scheduler/protocol.js";
import { Scheduler, defaultLimits } from "../../scheduler/scheduler.js";
import { SessionStore, validateSessionId } from "../../scheduler/sessions.js";
import { defaultSampling } from "../../sampling.js";
import { topics } from "../../transports/mqtt.js";
import { openTarget, openTokenizer, targetOptions } from "../open.js";

type Outcome = FinalReply | ErrorReply;

interface ChatClient {
  readonly label: string;
  send(req: Request, onDelta: (d: string) => void): Promise<Outcome>;
  cancel(id: string): void;
  reset(session: string): Promise<void>;
  close(): Promise<void>;
}

/** In-process: the daemon's scheduler on an engine opened here. */
async function localClient(
  args: { engine?: string; model?: string; backend?: "ref" | "ort" | "cuda" },
  session: string | undefined,
): Promise<ChatClient> {
  const o = await openTarget(args);
  // A named session is kept where the daemon keeps them; an unnamed one lives for this chat only.
  const scratch = session === undefined ? mkdtempSync(join(tmpdir(), "mamba-edge-chat-")) : null;
  const store = new SessionStore(scratch ?? configSchema.shape.stateDir.parse(undefined), 64 << 20);
  const scheduler = new Scheduler(o.backend, openTokenizer(o), store, defaultLimits, {}, o.config.eosTokenId);
  return {
    label: o.label,
    send: (req, onDelta) =>
      new Promise<Outcome>((resolve) => {
        void scheduler.submit(req, { chunk: (c) => onDelta(c.delta), final: resolve, error: resolve });
      }),
    cancel: (id) => void scheduler.cancel(id),
    reset: async (s) => void (await scheduler.reset(s)),
    close: async () => {
      await scheduler.shutdown(0);
      await o.backend.close();
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    },
  };
}

/** Against a daemon: requests to <prefix>/<node>/generate, replies to a topic of our own (reply_to, MQTT 3.1.1, so any broker works). */
async function mqttClient(url: string, node: string, prefix: string): Promise<ChatClient> {
  const t = topics(prefix, node);
  const me = `mamba-edge-chat-${randomBytes(4).toString("hex")}`;
  const replyTopic = `${prefix}/chat/${me}/reply`;
  const client: MqttClient = connect(url, { protocolVersion: 4, clientId: me, clean: true, reconnectPeriod: 1000, connectTimeout: 5000 });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.end(true);
      reject(new UserError(`mqtt ${url}: no broker answered within 5 s`));
    }, 5000);
    client.once("connect", () => {
      clearTimeout(timer);
      (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      resolve();
    });
    client.once("error", (e) => {
      clearTimeout(timer);
      client.end(true);
      reject(new UserError(`mqtt ${url}: ${e.message}`));
    });
  });
  const handlers = new Map<string, (m: Record<string, unknown>) => void>();
  client.on("message", (topic, payload) => {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(payload.toString("utf8"));
    } catch {
      return;
    }
    if (topic === t.status) handlers.get("status")?.(m);
    else handlers.get(String(m.id))?.(m);
  });
  await client.subscribeAsync([replyTopic, t.status], { qos: 1 });
  // The daemon's retained status says whether anyone serves this node.
  const status = await new Promise<Record<string, unknown> | null>((resolve) => {
    const timer = setTimeout(() => resolve(null), 3000);
    handlers.set("status", (m) => {
      clearTimeout(timer);
      resolve(m);
    });
  });
  handlers.delete("status");
  if (!status || status.state !== "online") {
    await client.endAsync();
    throw new UserError(
      `no daemon online at ${t.generate} on ${url} (status: ${status ? String(status.state) : "none"}); is --node right?`,
    );
  }
  const publish = (topic: string, m: object) => client.publishAsync(topic, JSON.stringify(m), { qos: 1 });
  return {
    label: `${String(status.engine)} on ${node} via ${url}`,
    send: (req, onDelta) =>
      new Promise<Outcome>((resolve) => {
        const id = String(req.id);
        handlers.set(id, (m) => {
          if ("error" in m || "done" in m) {
            handlers.delete(id);
            resolve(m as unknown as Outcome);
          } else if (typeof m.delta === "string") onDelta(m.delta);
        });
        void publish(t.generate, { ...req, reply_to: replyTopic });
      }),
    cancel: (id) => void publish(t.cancel, { id }),
    reset: (session) =>
      new Promise<void>((resolve, reject) => {
        const id = `reset-${randomBytes(4).toString("hex")}`;
        handlers.set(id, (m) => {
          handlers.delete(id);
          if ("error" in m) reject(new UserError(`reset: ${(m as unknown as ErrorReply).error.message}`));
          else resolve();
        });
        void publish(t.generate, { op: "reset", session, id, reply_to: replyTopic });
      }),
    close: () => client.endAsync(),
  };
}

/** What a line that starts with / does; shown by /help and in `chat --help`. */
const slashCommands = [
  ["/reset", "clear the conversation (the session starts over)"],
  ["/stats", "the last reply's token counts, time to first token and speed"],
  ["/help", "list these commands"],
  ["/quit", "leave (also /exit, Ctrl-D; Ctrl-C stops a reply being written, at the prompt it leaves)"],
] as const;
const slashHelp = slashCommands.map(([c, what]) => `  ${c.padEnd(8)}${what}`).join("\n");

export function chatCommand(y: Argv) {
  return y.command(
    "chat",
    "talk to a model: in-process on an engine, or to a running daemon with --mqtt",
    (a) =>
      a
        .options(targetOptions)
        .option("mqtt", {
          type: "string",
          describe: "talk to the daemon behind this broker (mqtt://host:1883) instead of loading a model here",
        })
        .option("node", { type: "string", describe: "the daemon's node id (default: this host name)" })
        .option("topic-prefix", { type: "string", default: "mamba-edge", describe: "the daemon's topic prefix" })
        .option("session", {
          type: "string",
          describe: "session id: continue (and keep) a named conversation; default: a new one for this chat",
        })
        .option("max-tokens", { type: "number", default: 128, describe: "tokens per reply at most" })
        .option("temperature", { type: "number", default: defaultSampling.temperature, describe: "0 = greedy" })
        .option("seed", { type: "number", describe: "random seed of the first reply (then +1 per turn)" })
        .option("stop", { type: "string", array: true, describe: "stop a reply at this text (repeatable)" })
        .options(outputFormatOptions)
        .epilogue(
          `Each line typed (or piped) is one turn. Lines that start with / are commands:\n${slashHelp}\n` +
            "Piped, chat exits 1 when a turn failed or a command was unknown.",
        ),
    async (args) => {
      if (args.mqtt !== undefined && (args.engine !== undefined || args.model !== undefined))
        throw new UserError("give --mqtt (a running daemon) or --engine/--model (in-process), not both");
      const named = args.session;
      // refused here rather than by every turn's request
      if (named !== undefined)
        try {
          validateSessionId(named);
        } catch (e) {
          throw new UserError(`--${(e as Error).message}`);
        }
      const base = {
        max_tokens: args["max-tokens"],
        temperature: args.temperature,
        seed: args.seed,
        session: named,
        ...(args.stop ? { stop: args.stop } : {}),
        ...outputFormatFrom(args),
      };
      const check = requestSchema.safeParse(base);
      if (!check.success) throw new UserError(`--${describeIssue(check.error, base).replace(/_/g, "-")}`);
      const client =
        args.mqtt !== undefined
          ? await mqttClient(args.mqtt, args.node ?? hostname(), args["topic-prefix"])
          : await localClient(
              { engine: args.engine, model: args.model, backend: args.backend as "ref" | "ort" | "cuda" | undefined },
              named,
            );
      const session = named ?? `chat-${randomBytes(6).toString("hex")}`;
      const tty = process.stdin.isTTY === true;
      let seed = args.seed ?? Math.floor(Math.random() * 2 ** 31);
      let last: FinalReply | null = null;
      let current: string | null = null;
      let turn = 0;
      let fresh = true; // no text in the conversation yet
      let failed = 0; // turns that got an error reply, and unknown commands

      const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty, historySize: 200 });
      rl.on("SIGINT", () => {
        // Ctrl-C stops the reply being written; at the prompt it ends the chat.
        if (current) client.cancel(current);
        else rl.close();
      });
      if (tty) process.stderr.write(`${client.label}; session ${session}. /reset, /stats, /help, /quit; Ctrl-D or Ctrl-C to leave\n`);
      rl.setPrompt("> ");
      if (tty) rl.prompt();
      try {
        for await (const raw of rl) {
          const line = raw.trim();
          if (line === "/quit" || line === "/exit") break;
          if (line === "/reset") {
            await client.reset(session);
            fresh = true;
            process.stderr.write("(conversation cleared)\n");
          } else if (line === "/stats") {
            process.stderr.write(
              last
                ? `last reply: ${last.usage.prompt_tokens} prompt tokens, ${last.usage.completion_tokens} generated; time to first token ${last.timings.ttft_ms} ms; ${last.timings.decode_tokens_per_s} tokens/s; finish ${last.finish_reason}\n`
                : "no reply yet\n",
            );
          } else if (line === "/help") {
            process.stderr.write(slashHelp + "\n");
          } else if (line.startsWith("/")) {
            failed++;
            process.stderr.write(`unknown command ${line.split(/\s/)[0]}: try /help\n`);
          } else if (line) {
            current = `${session}-${turn++}`;
            const r = await client.send({ ...base, id: current, prompt: (fresh ? "" : "\n") + line, session, stream: true, seed }, (d) =>
              process.stdout.write(d),
            );
            current = null;
            fresh = false;
            seed = (seed + 1) >>> 0;
            if ("error" in r) {
              failed++;
              process.stderr.write(`error (${r.error.code}): ${r.error.message}\n`);
            } else {
              last = r;
              process.stdout.write(r.finish_reason === "cancelled" ? " [stopped]\n" : "\n");
            }
          }
          if (tty) rl.prompt();
        }
      } finally {
        rl.close();
        await client.close();
      }
      // a script that pipes into chat learns that something went wrong (on a terminal it was seen)
      if (failed > 0 && !tty) throw new UserError(`chat: ${failed} ${failed === 1 ? "line" : "lines"} of the input failed (see above)`);
    },
  );
}
