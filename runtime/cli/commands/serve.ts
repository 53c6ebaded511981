import type { Argv } from "yargs";
import { loadConfig, mqttMode } from "../../daemon/config.js";
import { Daemon } from "../../daemon/daemon.js";
import { makeLogger, type Logger } from "../../daemon/log.js";
import { Notifier } from "../../daemon/notify.js";
import { startBroker, type EmbeddedBroker } from "../../transports/broker.js";
import { MqttTransport } from "../../transports/mqtt.js";
import { StdioTransport } from "../../transports/stdio.js";
import { HttpTransport } from "../../transports/http.js";
import { openTarget, targetOptions, type Opened } from "../open.js";
import type { DaemonConfig } from "../../daemon/config.js";

/** Flags that map one to one onto config fields (kebab-case here, camelCase in the file). */
const flags = {
  mqtt: {
    type: "string",
    describe:
      "embedded (a broker inside the daemon, 127.0.0.1:1883), off, or a broker URL mqtt://host:1883 / mqtts://…; default: embedded, or off with --stdio or --http",
  },
  stdio: { type: "boolean", describe: "serve JSON lines on stdin/stdout" },
  node: { type: "string", describe: "this daemon's name in topics (default: the host name)" },
  "topic-prefix": { type: "string", describe: "first level of every topic (default mamba-edge)" },
  "reply-topic-pattern": {
    type: "string",
    array: true,
    describe: "MQTT topic filters replies may go to (default robots/+/reply/# and <prefix>/chat/+/reply/#)",
  },
  "mqtt-version": { type: "number", describe: "5 or 4 (3.1.1) towards an outside broker (default 5)" },
  "client-id": { type: "string", describe: "MQTT client id (default mamba-edge-<node>)" },
  username: { type: "string", describe: "MQTT user name" },
  password: { type: "string", describe: "MQTT password (better: MAMBA_EDGE_PASSWORD in the environment)" },
  ca: { type: "string", describe: "PEM file of the CA for mqtts://" },
  cert: { type: "string", describe: "PEM client certificate for mqtts://" },
  key: { type: "string", describe: "PEM client key for mqtts://" },
  "reject-unauthorized": {
    type: "boolean",
    describe: "refuse a broker whose TLS certificate the CA does not sign (default true; --no-reject-unauthorized turns it off)",
  },
  "broker-host": { type: "string", describe: "where the embedded broker listens (default 127.0.0.1)" },
  "broker-port": { type: "number", describe: "port of the embedded broker (default 1883)" },
  "state-dir": {
    type: "string",
    describe: "where session states are kept (default $STATE_DIRECTORY/sessions or ~/.local/state/mamba-edge/sessions)",
  },
  "max-active": { type: "number", describe: "sequences decoded together (default 16)" },
  "max-queue": { type: "number", describe: "requests waiting beyond that before `overloaded` (default 64)" },
  "max-prompt-tokens": { type: "number", describe: "longest prompt accepted (default 4096)" },
  "max-tokens": { type: "number", describe: "largest max_tokens a request may ask for (default 1024)" },
  "default-max-tokens": { type: "number", describe: "max_tokens when a request gives none (default 128)" },
  "prefill-chunk": { type: "number", describe: "prompt tokens prefilled per scheduler tick, between decode steps (default 128)" },
  "session-memory-bytes": {
    type: "number",
    describe: "bytes of session states also kept in memory; all are on disk (default 67108864)",
  },
  "max-message-bytes": { type: "number", describe: "largest incoming request message in bytes (default 65536)" },
  "status-interval-ms": { type: "number", describe: "how often the retained status is refreshed (default 5000)" },
  "shutdown-deadline-ms": {
    type: "number",
    describe: "on SIGTERM, how long running requests may finish before being cancelled (default 10000)",
  },
  http: {
    type: "number",
    describe: "serve the OpenAI-compatible HTTP API on this port (/v1/completions, /v1/chat/completions, /v1/models)",
  },
  "http-host": { type: "string", describe: "address the HTTP API listens on (default 127.0.0.1)" },
  "http-token": { type: "string", describe: "require Authorization: Bearer TOKEN on HTTP (better: MAMBA_EDGE_HTTP_TOKEN)" },
  "metrics-port": { type: "number", describe: "serve Prometheus /metrics on this local port" },
  "metrics-host": { type: "string", describe: "address /metrics listens on (default 127.0.0.1)" },
  "log-level": { type: "string", describe: "fatal, error, warn, info (default), debug, trace or silent" },
} as const;

const camel = (k: string) => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

export function serveCommand(y: Argv) {
  return y.command(
    "serve",
    "serve generation requests over MQTT, stdio (JSON lines) and/or HTTP until SIGTERM / SIGINT",
    (a) =>
      a
        .options(targetOptions)
        .options(flags)
        .option("config", { type: "string", describe: "JSON file of settings (see README); env MAMBA_EDGE_* and flags override it" }),
    async (args) => {
      const given: Record<string, unknown> = {};
      for (const k of [...Object.keys(flags), ...Object.keys(targetOptions)]) if (args[k] !== undefined) given[camel(k)] = args[k];
      const config = loadConfig({ file: args.config, flags: given });
      const log = makeLogger(config.logLevel);
      const notify = new Notifier();
      // pings start now: loading an engine keeps the event loop turning (TimeoutStartSec bounds it)
      const watchdogMs = await notify.startWatchdog();
      if (watchdogMs !== null) log.info({ intervalMs: watchdogMs }, "systemd watchdog pings");
      await notify.status("loading engine");
      const open = (c: DaemonConfig): Promise<Opened> =>
        // the daemon's default backend is auto; its pick and the reason go to the log
        openTarget({ engine: c.engine, model: c.model, backend: c.backend ?? "auto", threads: c.threads }, (backend, why) =>
          log.info({ backend, why }, `backend auto picked ${backend}`),
        );
      const opened = await open(config);
      const daemon = await Daemon.open(config, log, opened).catch(async (e) => {
        await opened.backend.close();
        throw e;
      });
      stallForTests(log);

      let broker: EmbeddedBroker | null = null;
      const stopped = new Promise<string>((resolve) => {
        process.once("SIGTERM", () => resolve("SIGTERM"));
        process.once("SIGINT", () => resolve("SIGINT"));
        if (config.stdio) void daemon.add(new StdioTransport(daemon, () => resolve("stdin closed")));
      });
      try {
        const mode = mqttMode(config);
        if (mode === "embedded") {
          broker = await startBroker(config.brokerHost, config.brokerPort);
          log.info({ url: broker.url }, "embedded broker (MQTT 3.1.1) listening");
        }
        if (mode !== "off") await daemon.add(new MqttTransport(daemon, config, { url: broker?.url ?? mode, embedded: broker !== null }));
        if (config.http !== undefined) await daemon.add(new HttpTransport(daemon, config.httpHost, config.http, config.httpToken));
      } catch (e) {
        notify.close();
        await daemon.stop("start failed");
        await broker?.close();
        throw e;
      }
      log.info({ node: config.node, prefix: config.topicPrefix }, "ready");
      const serving = () => {
        const st = daemon.status();
        return `serving ${st.engine} (${st.active} running, ${st.queue} queued)`;
      };
      await notify.status(serving());
      await notify.ready();
      const statusTimer = setInterval(() => void notify.status(serving()), config.statusIntervalMs);
      statusTimer.unref();

      // SIGHUP (systemctl reload): re-read the config file and swap the engine between requests
      let reloads = Promise.resolve();
      const onHup = () => {
        reloads = reloads.then(() => reload(daemon, config, { file: args.config, flags: given }, open, log, notify, serving));
      };
      process.on("SIGHUP", onHup);

      const reason = await stopped;
      process.off("SIGHUP", onHup);
      clearInterval(statusTimer);
      await notify.stopping();
      await notify.status("draining");
      await reloads;
      await daemon.stop(reason);
      await broker?.close();
      notify.close();
    },
  );
}

/** Settings a reload applies; the rest are read at start only. */
const reloadable = new Set(["engine", "model", "backend", "threads"]);

async function reload(
  daemon: Daemon,
  started: DaemonConfig,
  source: { file?: string; flags: Record<string, unknown> },
  open: (c: DaemonConfig) => Promise<Opened>,
  log: Logger,
  notify: Notifier,
  serving: () => string,
): Promise<void> {
  await notify.reloading();
  await notify.status("reloading");
  log.info({ config: source.file ?? null }, "reload");
  try {
    const next = loadConfig(source);
    const ignored = Object.keys(next).filter(
      (k) => !reloadable.has(k) && JSON.stringify(next[k as keyof DaemonConfig]) !== JSON.stringify(started[k as keyof DaemonConfig]),
    );
    if (ignored.length) log.warn({ settings: ignored }, "reload: these settings take effect at the next restart");
    const opened = await open(next);
    void daemon.swap(opened).catch((e: Error) => log.error({ err: e }, "closing the previous engine failed"));
  } catch (e) {
    // one line; the engine that was serving keeps serving
    log.error(`reload failed, still serving ${daemon.opened.label}: ${(e as Error).message.split("\n")[0]}`);
  }
  await notify.status(serving());
  await notify.ready();
}

/**
 * Test-only: with MAMBA_EDGE_TEST_STALL_MS set, SIGUSR2 blocks the event loop that long, as a hung
 * native call would, so a test can see the watchdog pings stop. Off (no handler) without the variable.
 */
function stallForTests(log: Logger): void {
  const ms = Number(process.env.MAMBA_EDGE_TEST_STALL_MS);
  if (!(ms > 0)) return;
  log.warn({ ms }, "MAMBA_EDGE_TEST_STALL_MS: SIGUSR2 stalls the event loop (for tests)");
  process.on("SIGUSR2", () => {
    log.warn({ ms }, "stalling the event loop");
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  });
}
