#!/usr/bin/env node
// Load benchmark of the daemon: N simulated robots (MQTT v5 clients) each send requests one after
// another (closed loop) to one daemon behind a mosquitto started here. Prints aggregate tokens/s,
// p50/p99 time to first token and per-token latency as the robots see them, and errors by code;
// writes JSON under bench/results/.
// Usage: node scripts/load-bench.mjs [--robots 1,8,32] [--requests 4] [--max-tokens 32]
//        [--engine NAME.mamba | --model DIR] [--max-active 32] [--max-queue 64]
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { connectAsync } from "mqtt";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { provenance, writeResult } from "../dist/runtime/bench/results.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const args = yargs(hideBin(process.argv))
  .option("robots", { type: "string", default: "1,8,32", describe: "robot counts, one run each" })
  .option("requests", { type: "number", default: 4, describe: "requests per robot" })
  .option("max-tokens", { type: "number", default: 32 })
  .option("engine", { type: "string" })
  .option("model", { type: "string" })
  .option("max-active", { type: "number", default: 32 })
  .option("max-queue", { type: "number", default: 64 })
  .option("mosquitto", { type: "string", default: "/usr/sbin/mosquitto" })
  .option("out", { type: "boolean", default: true, describe: "write bench/results/*.json" })
  .strict()
  .parseSync();

const prompts = [
  "The jury said",
  "In the city of",
  "He was a member of",
  "The President said that",
  "It was the first time",
  "She looked at the",
  "The committee will",
  "After the war,",
];

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });

async function startBroker() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "load-bench-"));
  writeFileSync(
    join(dir, "m.conf"),
    `listener ${port} 127.0.0.1\nallow_anonymous true\nuser ${userInfo().username}\nmax_queued_messages 0\nset_tcp_nodelay true\nlog_dest none\n`,
  );
  const proc = spawn(args.mosquitto, ["-c", join(dir, "m.conf")], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 300));
  return { url: `mqtt://127.0.0.1:${port}`, stop: () => proc.kill() };
}

async function startDaemon(url) {
  const target = args.model ? ["--model", args.model] : args.engine ? ["--engine", args.engine] : [];
  const proc = spawn(
    process.execPath,
    [
      join(root, "bin/mamba-edge.js"),
      "serve",
      "--mqtt",
      url,
      "--node",
      "bench",
      ...target,
      "--state-dir",
      mkdtempSync(join(tmpdir(), "load-state-")),
      "--max-active",
      String(args["max-active"]),
      "--max-queue",
      String(args["max-queue"]),
      "--log-level",
      "info",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let label = "";
  let backend = "";
  await new Promise((resolve, reject) => {
    createInterface({ input: proc.stderr }).on("line", (line) => {
      try {
        const r = JSON.parse(line);
        if (r.msg === "engine loaded") ({ engine: label, backend } = r);
        if (r.msg === "ready") resolve();
      } catch {
        process.stderr.write(line + "\n");
      }
    });
    proc.once("exit", (c) => reject(new Error(`daemon exited ${c}`)));
  });
  return { proc, label, backend };
}

const pct = (xs, p) => {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function runLoad(url, robots) {
  const ttft = [];
  const serverTtft = [];
  const gaps = [];
  const errors = {};
  let tokens = 0;
  let answered = 0;
  const clients = await Promise.all(
    Array.from({ length: robots }, (_, i) => connectAsync(url, { protocolVersion: 5, clientId: `bench-robot-${i}` })),
  );
  for (const c of clients) c.stream.setNoDelay?.(true); // as a robot should: no Nagle delay on small messages
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (c, i) => {
      const reply = `robots/bench-${i}/reply`;
      await c.subscribeAsync(reply, { qos: 1 });
      let pending = null;
      c.on("message", (_t, payload) => pending?.(JSON.parse(payload.toString())));
      for (let k = 0; k < args.requests; k++) {
        const id = `${i}-${k}`;
        const sent = performance.now();
        let last = 0;
        const done = new Promise((resolve) => {
          pending = (m) => {
            if (m.id !== id) return;
            const now = performance.now();
            if ("delta" in m) {
              if (!last) ttft.push(now - sent);
              else gaps.push(now - last);
              last = now;
            } else if ("error" in m) {
              errors[m.error.code] = (errors[m.error.code] ?? 0) + 1;
              resolve();
            } else if (m.done) {
              tokens += m.usage.completion_tokens;
              serverTtft.push(m.timings.ttft_ms);
              answered++;
              resolve();
            }
          };
        });
        await c.publishAsync(
          "mamba-edge/bench/generate",
          JSON.stringify({
            id,
            prompt: prompts[(i + k) % prompts.length],
            max_tokens: args["max-tokens"],
            temperature: 0.8,
            seed: i * 100 + k,
            stream: true,
          }),
          {
            qos: 1,
            properties: { responseTopic: reply },
          },
        );
        await done;
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  await Promise.all(clients.map((c) => c.endAsync()));
  const round = (x) => Math.round(x * 10) / 10;
  return {
    robots,
    requests: robots * args.requests,
    answered,
    errors,
    tokens,
    wall_s: round(wall),
    tokens_per_s: round(tokens / wall),
    ttft_ms: { p50: round(pct(ttft, 50)), p99: round(pct(ttft, 99)) },
    daemon_ttft_ms: { p50: round(pct(serverTtft, 50)), p99: round(pct(serverTtft, 99)) },
    token_latency_ms: { p50: round(pct(gaps, 50)), p99: round(pct(gaps, 99)) },
  };
}

const broker = await startBroker();
const daemon = await startDaemon(broker.url);
const runs = [];
try {
  for (const n of args.robots.split(",").map(Number)) {
    const r = await runLoad(broker.url, n);
    runs.push(r);
    console.log(
      `${String(n).padStart(3)} robots: ${r.answered}/${r.requests} answered, errors ${JSON.stringify(r.errors)}, ${r.tokens_per_s} tokens/s in all; TTFT p50 ${r.ttft_ms.p50} ms p99 ${r.ttft_ms.p99} ms (in the daemon ${r.daemon_ttft_ms.p50} / ${r.daemon_ttft_ms.p99}); per token p50 ${r.token_latency_ms.p50} ms p99 ${r.token_latency_ms.p99} ms`,
    );
  }
} finally {
  daemon.proc.kill("SIGTERM");
  broker.stop();
}
if (args.out) {
  const record = {
    kind: "load",
    ...provenance(),
    engine: daemon.label,
    backend: daemon.backend,
    maxTokens: args["max-tokens"],
    requestsPerRobot: args.requests,
    maxActive: args["max-active"],
    runs,
  };
  console.log(`wrote ${writeResult("load", daemon.backend, daemon.label, record)}`);
}
