#!/usr/bin/env node
// Soak run: a real mosquitto on 127.0.0.1 and the daemon for --minutes, driven by robots (MQTT v5
// clients) with a mix of valid requests, session turns, cancels, malformed messages, status ops,
// robot reconnects and broker restarts. Reports requests sent / answered / lost / answered twice,
// error replies by code, and the daemon's memory (RSS and heap after a forced garbage collection,
// through the inspector on a loopback port) at the start, each minute, and at the end. Bounded in
// time (--minutes) and count (--max-requests); writes the record under bench/results/.
/* global fetch */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, createConnection } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { connectAsync } from "mqtt";
import WebSocket from "ws";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { provenance, writeResult } from "../dist/runtime/bench/results.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const args = yargs(hideBin(process.argv))
  .option("minutes", { type: "number", default: 10, describe: "how long robots send (then 30 s for the last replies)" })
  .option("robots", { type: "number", default: 6 })
  .option("max-requests", { type: "number", default: 100_000, describe: "stop sending after this many" })
  .option("restart-every", { type: "number", default: 90, describe: "seconds between broker restarts (0: none)" })
  .option("model", { type: "string", default: join(root, "models", "mamba2-brown") })
  .option("engine", { type: "string" })
  .option("mosquitto", { type: "string", default: "/usr/sbin/mosquitto" })
  .option("seed", { type: "number", default: 1 })
  .option("out", { type: "boolean", default: true, describe: "write bench/results/*.json" })
  .strict()
  .parseSync();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
const portOpen = (port) =>
  new Promise((r) => {
    const c = createConnection({ port, host: "127.0.0.1" }, () => (c.end(), r(true)));
    c.once("error", () => r(false));
  });

// a small seeded generator, so a run's mix can be repeated
let rs = args.seed >>> 0 || 1;
const rand = () => (rs = (rs * 1664525 + 1013904223) >>> 0) / 2 ** 32;
const pick = (xs) => xs[Math.floor(rand() * xs.length)];

async function startBroker() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "soak-broker-"));
  const conf = join(dir, "m.conf");
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      "allow_anonymous true",
      `user ${userInfo().username}`,
      "persistence true",
      `persistence_location ${dir}/`,
      "autosave_interval 1",
      "max_queued_messages 0",
      "set_tcp_nodelay true",
      "log_dest none",
      "",
    ].join("\n"),
  );
  const b = { url: `mqtt://127.0.0.1:${port}`, proc: null, restarts: 0 };
  b.start = async () => {
    b.proc = spawn(args.mosquitto, ["-c", conf], { stdio: "ignore" });
    while (!(await portOpen(port))) await sleep(50);
  };
  b.stop = () =>
    new Promise((r) => {
      if (!b.proc || b.proc.exitCode !== null) return r();
      b.proc.once("exit", () => r());
      b.proc.kill("SIGTERM");
    });
  await b.start();
  return b;
}

async function startDaemon(url) {
  const inspect = await freePort();
  const target = args.engine ? ["--engine", args.engine] : ["--model", args.model];
  const proc = spawn(
    process.execPath,
    [
      `--inspect=127.0.0.1:${inspect}`,
      join(root, "bin/mamba-edge.js"),
      "serve",
      "--mqtt",
      url,
      "--node",
      "soak",
      ...target,
      "--state-dir",
      mkdtempSync(join(tmpdir(), "soak-state-")),
      "--log-level",
      "info", // (the "ready" line is info)
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let label = "";
  let backend = "";
  const logs = { warn: 0, error: 0, fatal: 0 };
  await new Promise((resolve, reject) => {
    createInterface({ input: proc.stderr }).on("line", (line) => {
      let r;
      try {
        r = JSON.parse(line);
      } catch {
        return; // the inspector's banner
      }
      if (r.msg === "engine loaded") ({ engine: label, backend } = r);
      if (r.msg === "ready") resolve();
      if (r.level >= 60) logs.fatal++;
      else if (r.level >= 50) logs.error++;
      else if (r.level >= 40) logs.warn++;
    });
    proc.once("exit", (c) => reject(new Error(`daemon exited ${c}`)));
  });
  return { proc, label, backend, logs, inspect };
}

/** The daemon's memory after a forced full garbage collection (inspector: HeapProfiler.collectGarbage). */
async function memory(d) {
  const [{ webSocketDebuggerUrl }] = await (await fetch(`http://127.0.0.1:${d.inspect}/json/list`)).json();
  const ws = new WebSocket(webSocketDebuggerUrl);
  await new Promise((r, j) => (ws.once("open", r), ws.once("error", j)));
  let n = 0;
  const call = (method, params = {}) =>
    new Promise((resolve) => {
      const id = ++n;
      const on = (data) => {
        const m = JSON.parse(data);
        if (m.id !== id) return;
        ws.off("message", on);
        resolve(m.result);
      };
      ws.on("message", on);
      ws.send(JSON.stringify({ id, method, params }));
    });
  const rssBefore = rssOf(d.proc.pid);
  await call("HeapProfiler.collectGarbage");
  const r = await call("Runtime.evaluate", { expression: "JSON.stringify(process.memoryUsage())", returnByValue: true });
  ws.close();
  const u = JSON.parse(r.result.value);
  const mb = (x) => +(x / 2 ** 20).toFixed(1);
  return { rssMB: mb(rssBefore), rssAfterGcMB: mb(u.rss), heapUsedAfterGcMB: mb(u.heapUsed), externalMB: mb(u.external) };
}

function rssOf(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

const prompts = ["The jury said", "In the city of", "He was a member of", "The President said that", "After the war,"];
const malformed = [
  "not json",
  "[1,2,3]",
  "null",
  '{"prompt": 5}',
  '{"prompt":"x","max_tokens":-3}',
  '{"prompt":"x","unknown_field":true}',
  '{"messages":[{"role":"robot","content":"hi"}]}',
  '{"op":"explode"}',
  '{"prompt":"x","session":"../../etc"}',
  `{"prompt":${"[".repeat(3000)}${"]".repeat(3000)}}`,
  JSON.stringify({ prompt: "x".repeat(70_000) }),
];

const stats = {
  sent: { request: 0, session: 0, cancel: 0, malformed: 0, status: 0 },
  answered: 0,
  lost: 0,
  duplicateFinals: 0,
  unexpected: [],
  errorsByCode: {},
  reconnects: 0,
  brokerRestarts: 0,
};
/** corr → { kind, finals, expect } for every message that must get one final reply */
const pending = new Map();
let total = 0;
let corrSeq = 0;

async function robot(i, url, deadline) {
  const clientId = `soak-robot-${i}`;
  const reply = `robots/soak-${i}/reply`;
  const opts = { protocolVersion: 5, clientId, clean: false, reconnectPeriod: 500, properties: { sessionExpiryInterval: 3600 } };
  let client = await connectAsync(url, opts);
  const waiters = new Map();
  const onMessage = (_topic, payload, packet) => {
    const corr = packet.properties?.correlationData?.toString();
    const p = corr && pending.get(corr);
    if (!p) return;
    let m;
    try {
      m = JSON.parse(payload.toString());
    } catch {
      return;
    }
    if ("delta" in m) return void waiters.get(corr + ":delta")?.();
    const isFinal = "error" in m || "text" in m || "op" in m;
    if (!isFinal) return;
    p.finals++;
    if (p.finals === 1) stats.answered++;
    else stats.duplicateFinals++;
    if ("error" in m) {
      stats.errorsByCode[m.error.code] = (stats.errorsByCode[m.error.code] ?? 0) + 1;
      if (p.kind !== "malformed" && m.error.code !== "overloaded") stats.unexpected.push({ kind: p.kind, error: m.error });
    } else if (p.kind === "malformed") stats.unexpected.push({ kind: p.kind, reply: m });
    waiters.get(corr)?.();
  };
  client.on("message", onMessage);
  await client.subscribeAsync(reply, { qos: 1 });
  const wait = (key, ms) =>
    new Promise((resolve) => {
      const t = setTimeout(() => (waiters.delete(key), resolve(false)), ms);
      waiters.set(key, () => (clearTimeout(t), waiters.delete(key), resolve(true)));
    });
  const send = (kind, payload, corr = `c${++corrSeq}`) => {
    pending.set(corr, { kind, finals: 0 });
    stats.sent[kind]++;
    total++;
    const done = wait(corr, 120_000);
    client
      .publishAsync("mamba-edge/soak/generate", typeof payload === "string" ? payload : JSON.stringify(payload), {
        qos: 1,
        properties: { responseTopic: reply, correlationData: Buffer.from(corr) },
      })
      .catch(() => {}); // kept by the client and sent again after a reconnect
    return { corr, done };
  };
  let turn = 0;
  while (Date.now() < deadline && total < args["max-requests"]) {
    const r = rand();
    const id = `r${i}-${turn++}`;
    if (r < 0.45) {
      await send("request", { id, prompt: pick(prompts), max_tokens: 4 + Math.floor(rand() * 12), seed: turn, stream: rand() < 0.5 }).done;
    } else if (r < 0.6) {
      await send("session", { id, session: `soak-${i}-${turn % 3}`, prompt: pick(prompts), max_tokens: 6, temperature: 0 }).done;
    } else if (r < 0.7) {
      const { corr, done } = send("cancel", { id, prompt: "The", max_tokens: 400, stream: true });
      if (await wait(corr + ":delta", 60_000))
        await client.publishAsync("mamba-edge/soak/cancel", JSON.stringify({ id }), { qos: 1 }).catch(() => {});
      await done;
    } else if (r < 0.85) {
      await send("malformed", pick(malformed)).done;
    } else if (r < 0.93) {
      await send("status", { op: "status", id }).done;
    } else {
      // the robot goes away and comes back with its persistent session
      client.off("message", onMessage);
      await client.endAsync();
      client = await connectAsync(url, opts);
      client.on("message", onMessage);
      stats.reconnects++;
    }
  }
  await client.endAsync(false).catch(() => {});
}

const broker = await startBroker();
const d = await startDaemon(broker.url);
const t0 = Date.now();
const deadline = t0 + args.minutes * 60_000;
const samples = [{ s: 0, ...(await memory(d)) }];
process.stderr.write(`soak: ${args.robots} robots for ${args.minutes} min against ${d.label} (${d.backend})\n`);
const restarts = (async () => {
  if (!args["restart-every"]) return;
  for (;;) {
    await sleep(args["restart-every"] * 1000);
    if (Date.now() > deadline - 20_000) return;
    await broker.stop();
    await sleep(2000);
    await broker.start();
    stats.brokerRestarts++;
  }
})();
const sampler = setInterval(async () => {
  const m = await memory(d).catch(() => null);
  if (m) samples.push({ s: Math.round((Date.now() - t0) / 1000), ...m });
  process.stderr.write(`soak: ${Math.round((Date.now() - t0) / 1000)} s, ${total} sent, ${stats.answered} answered\n`);
}, 60_000);
await Promise.all(Array.from({ length: args.robots }, (_, i) => robot(i, broker.url, deadline)));
await restarts;
clearInterval(sampler);
await sleep(5000); // late duplicates would show here
for (const p of pending.values()) if (p.finals === 0) stats.lost++;
const end = await memory(d);
samples.push({ s: Math.round((Date.now() - t0) / 1000), ...end });
d.proc.kill("SIGTERM");
const exit = await new Promise((r) => d.proc.once("exit", (c) => r(c)));
await broker.stop();

const record = {
  kind: "soak",
  ...provenance(),
  engine: d.label,
  backend: d.backend,
  minutes: args.minutes,
  robots: args.robots,
  seed: args.seed,
  sent: Object.values(stats.sent).reduce((a, b) => a + b, 0),
  sentByKind: stats.sent,
  answered: stats.answered,
  lost: stats.lost,
  duplicateFinals: stats.duplicateFinals,
  unexpected: stats.unexpected.slice(0, 20),
  unexpectedCount: stats.unexpected.length,
  errorsByCode: stats.errorsByCode,
  reconnects: stats.reconnects,
  brokerRestarts: stats.brokerRestarts,
  daemonLogs: d.logs,
  daemonExit: exit,
  memory: samples,
};
const mem = (m) => `${m.rssMB} MB RSS, ${m.rssAfterGcMB} MB after GC, heap ${m.heapUsedAfterGcMB} MB`;
console.log(
  [
    `| sent | answered | lost | answered twice | unexpected | broker restarts | robot reconnects |`,
    `|---|---|---|---|---|---|---|`,
    `| ${record.sent} | ${record.answered} | ${record.lost} | ${record.duplicateFinals} | ${record.unexpectedCount} | ${record.brokerRestarts} | ${record.reconnects} |`,
    "",
    `errors by code: ${JSON.stringify(record.errorsByCode)}`,
    `memory at start: ${mem(samples[0])}; at end: ${mem(end)}`,
  ].join("\n"),
);
if (args.out) console.log(`record: ${writeResult("soak", d.backend, d.label, record)}`);
process.exit(record.lost === 0 && record.duplicateFinals === 0 && record.unexpectedCount === 0 && exit === 0 ? 0 : 1);
