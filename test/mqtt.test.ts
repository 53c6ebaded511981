// The MQTT transport against a real mosquitto (started here on a free port) and the embedded broker,
// with the daemon as a child process and mosquitto's own clients as outside robots.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { connectAsync, type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bin, cliAsync, root } from "./helpers/cli.js";
import { Mosquitto, demoModel, freePort, mosquittoBinary, serve, tempDir, type Served } from "./helpers/daemon.js";

const run = promisify(execFile);
type Msg = Record<string, unknown>;

if (!mosquittoBinary()) throw new Error("these tests need mosquitto and mosquitto-clients (apt-get install mosquitto mosquitto-clients)");

/** A robot: an MQTT client that collects everything published to its reply topic. */
async function robot(url: string, version: 4 | 5 = 5, clientId = `robot-${randomBytes(4).toString("hex")}`, clean = true) {
  const client: MqttClient = await connectAsync(url, {
    protocolVersion: version,
    clientId,
    clean,
    reconnectPeriod: 200,
    ...(version === 5 && !clean ? { properties: { sessionExpiryInterval: 600 } } : {}),
  });
  const replyTopic = `robots/${clientId}/reply`;
  const got: Msg[] = [];
  const waiters: { pred: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];
  client.on("message", (topic, payload, packet) => {
    const m = JSON.parse(payload.toString()) as Msg;
    m._topic = topic;
    if (packet.properties?.correlationData) m._corr = packet.properties.correlationData.toString();
    got.push(m);
    for (const w of [...waiters]) {
      if (!w.pred(m)) continue;
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(m);
    }
  });
  await client.subscribeAsync(replyTopic, { qos: 1 });
  const next = (pred: (m: Msg) => boolean, ms = 60_000) =>
    got.find(pred)
      ? Promise.resolve(got.find(pred)!)
      : new Promise<Msg>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`no matching message in ${ms} ms; got ${JSON.stringify(got).slice(0, 300)}`)), ms);
          waiters.push({ pred, resolve: (m) => (clearTimeout(t), resolve(m)) });
        });
  /** publishes a request: v5 with Response Topic + Correlation Data, v3.1.1 with reply_to */
  const ask = (topic: string, req: Msg, corr = String(req.id)) =>
    version === 5
      ? client.publishAsync(topic, JSON.stringify(req), {
          qos: 1,
          properties: { responseTopic: replyTopic, correlationData: Buffer.from(corr) },
        })
      : client.publishAsync(topic, JSON.stringify({ ...req, reply_to: replyTopic }), { qos: 1 });
  const final = (id: unknown) => next((m) => m.id === id && ("error" in m || ("text" in m && (m.done === true || !("seq" in m)))));
  return { client, got, next, ask, final, replyTopic };
}

const daemonArgs = (url: string, node: string, dir = tempDir()) => [
  "--mqtt",
  url,
  "--node",
  node,
  "--model",
  demoModel,
  "--state-dir",
  dir,
  "--status-interval-ms",
  "500",
];

describe("MQTT transport on mosquitto", () => {
  let broker: Mosquitto;
  let d: Served;
  const node = "jetson-a";
  const t = (x: string) => `mamba-edge/${node}/${x}`;

  beforeAll(async () => {
    broker = await Mosquitto.start();
    d = await serve(daemonArgs(broker.url, node));
  });
  afterAll(async () => {
    await d?.stop();
    await broker?.stop();
  });

  it("answers mosquitto_rr (MQTT v5, Response Topic) with one JSON reply", async () => {
    const { stdout } = await run("mosquitto_rr", [
      "-V",
      "5",
      "-p",
      String(broker.port),
      "-h",
      "127.0.0.1",
      "-t",
      t("generate"),
      "-e",
      "robots/rr/reply",
      "-W",
      "60",
      "-m",
      '{"prompt":"The jury said","max_tokens":16}',
    ]);
    const lines = stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    const r = JSON.parse(lines[0]);
    expect(r).toMatchObject({ text: expect.any(String), finish_reason: "length", usage: { prompt_tokens: 4, completion_tokens: 16 } });
    expect(r.timings.ttft_ms).toBeGreaterThan(0);
  });

  it("echoes Correlation Data and streams chunks before the final reply", async () => {
    const r = await robot(broker.url, 5);
    await r.ask(t("generate"), { id: "s1", prompt: "The city", max_tokens: 8, temperature: 0, stream: true }, "corr-42");
    const fin = await r.final("s1");
    const chunks = r.got.filter((m) => m.id === "s1" && "delta" in m);
    expect(chunks.length).toBeGreaterThan(0);
    expect(chunks.map((c) => c.delta).join("")).toBe(fin.text);
    expect(r.got.filter((m) => m.id === "s1").every((m) => m._corr === "corr-42")).toBe(true);
    expect(fin.done).toBe(true);
    await r.client.endAsync();
  });

  it("serves MQTT 3.1.1 clients through reply_to", async () => {
    const r = await robot(broker.url, 4);
    await r.ask(t("generate"), { id: 7, prompt: "He was", max_tokens: 5, temperature: 0 });
    expect(await r.final(7)).toMatchObject({ finish_reason: "length", usage: { completion_tokens: 5 } });
    await r.client.endAsync();
  });

  it("publishes a retained online status with queue and activity", async () => {
    const { stdout } = await run("mosquitto_sub", ["-p", String(broker.port), "-h", "127.0.0.1", "-t", t("status"), "-C", "1", "-W", "10"]);
    expect(JSON.parse(stdout)).toMatchObject({
      state: "online",
      node,
      backend: "ref",
      queue: expect.any(Number),
      active: expect.any(Number),
    });
  });

  it("cancels through the cancel topic", async () => {
    const r = await robot(broker.url, 5);
    await r.ask(t("generate"), { id: "c1", prompt: "The", max_tokens: 1000, temperature: 0, stream: true });
    await r.next((m) => m.id === "c1" && "delta" in m);
    await r.client.publishAsync(t("cancel"), JSON.stringify({ id: "c1" }), { qos: 1 });
    const fin = await r.final("c1");
    expect(fin.finish_reason).toBe("cancelled");
    await r.client.endAsync();
  });

  it("runs a redelivered request (same reply address and id) once", async () => {
    const r = await robot(broker.url, 5);
    const req = { id: "dup-1", prompt: "The", max_tokens: 4, temperature: 0 };
    await r.ask(t("generate"), req, "same");
    await r.ask(t("generate"), req, "same"); // while the first runs: dropped, its reply is coming
    await r.final("dup-1");
    await r.ask(t("generate"), req, "same"); // after it finished: answered with the same reply
    await r.next(() => r.got.filter((x) => x.id === "dup-1").length >= 2);
    await new Promise((res) => setTimeout(res, 300));
    const replies = r.got.filter((m) => m.id === "dup-1");
    expect(replies.length).toBeGreaterThanOrEqual(2);
    for (const x of replies) expect(x).toEqual(replies[0]);
    expect(d.logs.filter((l) => l.msg === "done" && l.id === "dup-1")).toHaveLength(1);
    await r.client.endAsync();
  });

  it("answers a request resent corrected under the same id and reply address", async () => {
    const r = await robot(broker.url, 5);
    await r.ask(t("generate"), { id: "fix-1", prompt: "The", max_tokens: -3 }, "same");
    expect(await r.final("fix-1")).toMatchObject({ error: { code: "bad_request" } });
    await r.ask(t("generate"), { id: "fix-1", prompt: "The", max_tokens: 3 }, "same");
    expect(await r.next((m) => m.id === "fix-1" && "text" in m, 20_000)).toMatchObject({ finish_reason: "length" });
    await r.client.endAsync();
  });

  it("answers the same op every time it is sent", async () => {
    const r = await robot(broker.url, 5);
    await r.ask(t("generate"), { op: "status", id: "S" }, "st");
    await r.next((m) => m.op === "status");
    await r.ask(t("generate"), { op: "status", id: "S" }, "st");
    await r.next(() => r.got.filter((m) => m.op === "status" && m.id === "S").length === 2, 20_000);
    await r.client.endAsync();
  });

  it("takes an MQTT 3.1.1 robot's cancel op on the generate topic for a request of the same id", async () => {
    const r = await robot(broker.url, 4);
    await r.ask(t("generate"), { id: "D", prompt: "The", max_tokens: 1000, temperature: 0, stream: true });
    await r.next((m) => m.id === "D" && "delta" in m);
    await r.ask(t("generate"), { op: "cancel", id: "D" });
    expect(await r.final("D")).toMatchObject({ finish_reason: "cancelled" });
    expect(await r.next((m) => m.op === "cancel" && m.id === "D", 20_000)).toMatchObject({ cancelled: 1 });
    await r.client.endAsync();
  });

  it("publishes replies only where replyTopicPattern allows, never to its own topics", async () => {
    const watcher = await connectAsync(broker.url, { protocolVersion: 5, clientId: "watcher" });
    const seen: string[] = [];
    watcher.on("message", (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
    await watcher.subscribeAsync(["mamba-edge/#", "victims/#", "robots/#"], { qos: 1 });
    const evil = await connectAsync(broker.url, { protocolVersion: 5, clientId: "evil" });
    const v5 = (id: string, responseTopic: string, req: Msg = { prompt: "The", max_tokens: 2 }) =>
      evil.publishAsync(t("generate"), JSON.stringify({ id, ...req }), { qos: 1, properties: { responseTopic } });
    await v5("evil-status", t("status"), { prompt: "x", max_tokens: -1 }); // an error reply
    await v5("evil-other", "victims/robot2/reply");
    await v5("evil-node", "mamba-edge/jetson-b/generate");
    await v5("evil-share", "robots/+/reply");
    // MQTT 3.1.1: reply_to
    await evil.publishAsync(t("generate"), JSON.stringify({ id: "evil-cancel", prompt: "x", reply_to: t("cancel") }), { qos: 1 });
    await evil.publishAsync(t("generate"), JSON.stringify({ op: "status", id: "evil-op", reply_to: "victims/x" }), { qos: 1 });
    // a robot within the pattern is still answered, after all of those
    const r = await robot(broker.url, 5);
    await r.ask(t("generate"), { id: "good", prompt: "The", max_tokens: 2 });
    await r.final("good");
    await new Promise((res) => setTimeout(res, 500));
    // (the requests themselves show on the generate topic: only replies count)
    expect(seen.filter((x) => x.includes("evil-") && !x.startsWith(`${t("generate")} `))).toEqual([]);
    const refused = d.logs.filter((l) => /reply address not allowed/.test(String(l.msg))).map((l) => l.id);
    expect(refused).toEqual(expect.arrayContaining(["evil-status", "evil-other", "evil-node", "evil-cancel", "evil-op"]));
    await Promise.all([watcher.endAsync(), evil.endAsync(), r.client.endAsync()]);
  });

  it("chat --mqtt talks to the daemon, keeps a session and resets it", async () => {
    const piped = await cliAsync(
      ["chat", "--mqtt", broker.url, "--node", node, "--max-tokens", "5", "--temperature", "0"],
      "The jury said\n/reset\nThe jury said\n/stats\n",
    );
    expect(piped.code).toBe(0);
    const lines = piped.stdout.split("\n").filter(Boolean);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toBe(lines[0]);
    expect(piped.stderr).toMatch(/last reply: 4 prompt tokens, 5 generated/);
    const wrong = await cliAsync(["chat", "--mqtt", broker.url, "--node", "nobody"]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^mamba-edge: no daemon online at mamba-edge\/nobody\/generate/);
  });

  it("keeps serving after 10,000 malformed messages, answering each one that has a reply address", async () => {
    const r = await robot(broker.url, 5);
    const bad = [
      "not json",
      "[1,2,3]",
      "null",
      '{"prompt": 5}',
      '{"prompt":"x","max_tokens":-3}',
      '{"prompt":"x","unknown_field":true}',
      '{"messages":[{"role":"robot","content":"hi"}]}',
      '{"prompt":"x","messages":[]}',
      '{"op":"explode"}',
      '{"prompt":"x","session":"../../etc"}',
      '{"prompt":"x","stop":[1]}',
      JSON.stringify({ prompt: "x".repeat(70_000) }),
      "\u0000\u0001\u0002",
    ];
    const N = 10_000;
    const withReply = N / 2;
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) {
      const payload = bad[i % bad.length];
      // half carry a Response Topic; half have no reply address (logged and dropped)
      sends.push(
        i < withReply
          ? r.client.publishAsync(t("generate"), payload, {
              qos: 1,
              properties: { responseTopic: r.replyTopic, correlationData: Buffer.from(`f${i}`) },
            })
          : r.client.publishAsync(t("generate"), payload, { qos: 1 }),
      );
      if (sends.length >= 500) await Promise.all(sends.splice(0));
    }
    await Promise.all(sends);
    await r.next(() => r.got.filter((m) => "error" in m).length >= withReply, 120_000);
    expect(r.got.filter((m) => "error" in m)).toHaveLength(withReply);
    expect(new Set(r.got.map((m) => (m.error as { code: string }).code))).toEqual(new Set(["bad_request", "too_large"]));
    await r.ask(t("generate"), { id: "after-fuzz", prompt: "The", max_tokens: 3 });
    expect(await r.final("after-fuzz")).toMatchObject({ finish_reason: "length" });
    expect(d.proc.exitCode).toBe(null);
    await r.client.endAsync();
  });
});

describe("MQTT faults", () => {
  it("a fleet request goes to exactly one daemon of two (shared subscription)", async () => {
    const broker = await Mosquitto.start();
    const [a, b] = await Promise.all([serve(daemonArgs(broker.url, "fleet-a")), serve(daemonArgs(broker.url, "fleet-b"))]);
    try {
      const r = await robot(broker.url, 5);
      const ids = Array.from({ length: 6 }, (_, i) => `fleet-${i}`);
      for (const id of ids) await r.ask("mamba-edge/fleet/generate", { id, prompt: "The", max_tokens: 2 });
      for (const id of ids) await r.final(id);
      await new Promise((res) => setTimeout(res, 300));
      for (const id of ids) expect(r.got.filter((m) => m.id === id)).toHaveLength(1);
      const servedBy = (x: Served) => x.logs.filter((l) => l.msg === "done" && String(l.id).startsWith("fleet-")).length;
      expect(servedBy(a) + servedBy(b)).toBe(ids.length);
      await r.client.endAsync();
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      await broker.stop();
    }
  });

  it("kill -9: the Last Will says offline, and after a restart every answered session continues with the same state", async () => {
    const broker = await Mosquitto.start();
    const dir = tempDir();
    const node = "crashy";
    const turn1 = { prompt: "The jury said", max_tokens: 6, temperature: 0 };
    const turn2 = { prompt: " and the", max_tokens: 6, temperature: 0 };
    let d = await serve(daemonArgs(broker.url, node, dir));
    try {
      const r = await robot(broker.url, 5);
      const gen = `mamba-edge/${node}/generate`;
      // Reference: the same two turns without a crash.
      await r.ask(gen, { ...turn1, id: "ref-1", session: "ref" });
      await r.final("ref-1");
      await r.ask(gen, { ...turn2, id: "ref-2", session: "ref" });
      const expected = await r.final("ref-2");
      // Turn 1 of the crash session is answered; then the daemon dies in the middle of other work.
      await r.ask(gen, { ...turn1, id: "k-1", session: "k" });
      await r.final("k-1");
      await r.ask(gen, { id: "busy", prompt: "The", max_tokens: 1000, temperature: 0, stream: true, session: "busy" });
      await r.next((m) => m.id === "busy" && "delta" in m);
      d.proc.kill("SIGKILL");
      await d.exited;
      const { stdout } = await run("mosquitto_sub", [
        "-p",
        String(broker.port),
        "-h",
        "127.0.0.1",
        "-t",
        `mamba-edge/${node}/status`,
        "-C",
        "1",
        "-W",
        "10",
      ]);
      expect(JSON.parse(stdout).state).toBe("offline");

      d = await serve(daemonArgs(broker.url, node, dir));
      await r.ask(gen, { ...turn2, id: "k-2", session: "k" });
      const resumed = await r.final("k-2");
      expect(resumed.text).toBe(expected.text);
      await r.client.endAsync();
    } finally {
      await d.stop();
      await broker.stop();
    }
  });

  it("a broker restart in the middle of a request loses nothing that was accepted", async () => {
    const broker = await Mosquitto.start();
    const node = "steady";
    const d = await serve(daemonArgs(broker.url, node));
    try {
      const r = await robot(broker.url, 5, "robot-steady", false);
      const gen = `mamba-edge/${node}/generate`;
      await r.ask(gen, { id: "during", prompt: "The", max_tokens: 150, temperature: 0, stream: true });
      await r.next((m) => m.id === "during" && "delta" in m);
      await broker.stop();
      await new Promise((res) => setTimeout(res, 500));
      // published by the robot while the broker is down: kept by its client, sent after reconnecting
      void r.ask(gen, { id: "while-down", prompt: "He was", max_tokens: 4 });
      await broker.restart();
      expect(await r.final("during")).toMatchObject({ finish_reason: "length", usage: { completion_tokens: 150 } });
      expect(await r.final("while-down")).toMatchObject({ finish_reason: "length" });
      expect(d.proc.exitCode).toBe(null);
      await r.client.endAsync();
    } finally {
      await d.stop();
      await broker.stop();
    }
  });
});

describe("MQTT over TLS with a password", () => {
  it("joins an mqtts:// broker with a CA and a login, refuses a wrong password in one line, and says offline on SIGTERM", async () => {
    const dir = tempDir("tls-");
    const sh = (cmd: string) => run("sh", ["-c", cmd], { cwd: dir });
    await sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca 2>/dev/null");
    await sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null");
    await sh(
      "printf 'subjectAltName=IP:127.0.0.1' > san.ext && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext 2>/dev/null",
    );
    await sh("mosquitto_passwd -b -c passwd robot s3cret && chmod 0700 passwd");
    const broker = await Mosquitto.start([
      `cafile ${dir}/ca.pem`,
      `certfile ${dir}/server.pem`,
      `keyfile ${dir}/server.key`,
      "allow_anonymous false",
      `password_file ${dir}/passwd`,
    ]);
    const url = `mqtts://127.0.0.1:${broker.port}`;
    const login = ["--ca", `${dir}/ca.pem`, "--username", "robot"];
    try {
      const refused = await cliAsync([
        "serve",
        "--mqtt",
        url,
        ...login,
        "--password",
        "wrong",
        "--node",
        "tls",
        "--model",
        demoModel,
        "--state-dir",
        tempDir(),
      ]);
      expect(refused.code).toBe(1);
      expect(
        refused.stderr
          .trim()
          .split("\n")
          .filter((l) => l.startsWith("mamba-edge:")),
      ).toEqual([expect.stringMatching(/^mamba-edge: mqtt mqtts:\/\/127\.0\.0\.1:\d+: broker refused the connection/)]);

      const d = await serve(["--mqtt", url, ...login, "--node", "tls", "--model", demoModel, "--state-dir", tempDir()], {
        MAMBA_EDGE_PASSWORD: "s3cret",
      });
      const rr = ["-p", String(broker.port), "-h", "127.0.0.1", "--cafile", `${dir}/ca.pem`, "-u", "robot", "-P", "s3cret"];
      const { stdout } = await run("mosquitto_rr", [
        "-V",
        "5",
        ...rr,
        "-t",
        "mamba-edge/tls/generate",
        "-e",
        "robots/tls/reply",
        "-W",
        "60",
        "-m",
        '{"prompt":"The jury said","max_tokens":4}',
      ]);
      expect(JSON.parse(stdout)).toMatchObject({ finish_reason: "length", usage: { completion_tokens: 4 } });
      expect(await d.stop("SIGTERM")).toBe(0);
      const status = await run("mosquitto_sub", [...rr, "-t", "mamba-edge/tls/status", "-C", "1", "-W", "10"]);
      expect(JSON.parse(status.stdout)).toMatchObject({ state: "offline", node: "tls" });
    } finally {
      await broker.stop();
    }
  });
});

describe("MQTT over TLS, misconfigured", () => {
  let dir: string;
  let broker: Mosquitto;
  let url: string;
  const sh = (cmd: string) => run("sh", ["-c", cmd], { cwd: dir });
  beforeAll(async () => {
    dir = tempDir("tls-bad-");
    const ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    await sh(`openssl req -x509 ${ec} -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca 2>/dev/null`);
    await sh(`openssl req -x509 ${ec} -keyout other.key -out other-ca.pem -days 1 -subj /CN=other-ca 2>/dev/null`);
    await sh(`openssl req ${ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null`);
    await sh(
      "printf 'subjectAltName=IP:127.0.0.1' > san.ext && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext 2>/dev/null",
    );
    await sh(`openssl req ${ec} -keyout client.key -out client.csr -subj /CN=daemon 2>/dev/null`);
    await sh("openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 1 2>/dev/null");
    await sh("printf 'not a certificate\n' > junk.pem");
    broker = await Mosquitto.start([
      `cafile ${dir}/ca.pem`,
      `certfile ${dir}/server.pem`,
      `keyfile ${dir}/server.key`,
      "require_certificate true",
    ]);
    url = `mqtts://127.0.0.1:${broker.port}`;
  });
  afterAll(async () => {
    await broker?.stop();
  });

  /** serve with these TLS flags: it must exit 1 within 20 s with one line matching `pattern`. */
  const refused = async (flags: string[], pattern: RegExp) => {
    const args = ["serve", "--mqtt", url, ...flags, "--node", "tls-bad", "--model", demoModel, "--state-dir", tempDir()];
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [bin, ...args], { cwd: root, timeout: 20_000 }, (err, _stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr }),
      );
    });
    expect(r.code, r.stderr.slice(-600)).toBe(1);
    const lines = r.stderr
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("{"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^mamba-edge: /);
    expect(lines[0]).toMatch(pattern);
    expect(r.stderr).not.toMatch(/"msg":"ready"/);
  };

  it("serves with the right CA and client certificate", async () => {
    const d = await serve([
      "--mqtt",
      url,
      "--ca",
      `${dir}/ca.pem`,
      "--cert",
      `${dir}/client.pem`,
      "--key",
      `${dir}/client.key`,
      "--node",
      "tls-ok",
      "--model",
      demoModel,
      "--state-dir",
      tempDir(),
    ]);
    try {
      const { stdout } = await run("mosquitto_rr", [
        "-V",
        "5",
        "-p",
        String(broker.port),
        "-h",
        "127.0.0.1",
        "--cafile",
        `${dir}/ca.pem`,
        "--cert",
        `${dir}/client.pem`,
        "--key",
        `${dir}/client.key`,
        "-t",
        "mamba-edge/tls-ok/generate",
        "-e",
        "robots/tls/reply",
        "-W",
        "30",
        "-m",
        '{"prompt":"The","max_tokens":2}',
      ]);
      expect(JSON.parse(stdout)).toMatchObject({ finish_reason: "length" });
    } finally {
      expect(await d.stop()).toBe(0);
    }
  });

  it("exits 1 in one line when the broker's certificate is not signed by the CA given", async () => {
    await refused(["--ca", `${dir}/other-ca.pem`, "--cert", `${dir}/client.pem`, "--key", `${dir}/client.key`], /TLS handshake failed/);
  });

  it("exits 1 in one line when the broker wants a client certificate and none is given", async () => {
    await refused(["--ca", `${dir}/ca.pem`], /TLS handshake failed|broker refused/);
  });

  it("refuses --cert without --key (with --ca too), a file that is not PEM, and a key of another certificate", async () => {
    await refused(["--ca", `${dir}/ca.pem`, "--cert", `${dir}/client.pem`], /a client certificate needs both cert and key/);
    await refused(["--ca", `${dir}/junk.pem`], /ca: .*junk\.pem: not a PEM certificate/);
    await refused(
      ["--ca", `${dir}/ca.pem`, "--cert", `${dir}/client.pem`, "--key", `${dir}/server.key`],
      /key: .*server\.key: does not belong to the certificate/,
    );
  });
});

describe("embedded broker", () => {
  it("serves robots on the box without any other broker, and /metrics in Prometheus text", async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    const d = await serve([
      "--broker-port",
      String(port),
      "--node",
      "solo",
      "--model",
      demoModel,
      "--state-dir",
      tempDir(),
      "--metrics-port",
      String(metricsPort),
    ]);
    try {
      const r = await robot(`mqtt://127.0.0.1:${port}`, 4);
      await r.ask("mamba-edge/solo/generate", { id: "e1", prompt: "The jury said", max_tokens: 5 });
      expect(await r.final("e1")).toMatchObject({ finish_reason: "length" });
      await r.ask("mamba-edge/fleet/generate", { id: "e2", prompt: "The", max_tokens: 2 });
      expect(await r.final("e2")).toMatchObject({ finish_reason: "length" });
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(text).toMatch(/^mamba_edge_generated_tokens_total 7$/m);
      expect(text).toMatch(/mamba_edge_ttft_seconds_count 2/);
      expect(text).toMatch(/mamba_edge_queue_depth 0/);
      await r.client.endAsync();
    } finally {
      expect(await d.stop("SIGINT")).toBe(0);
    }
  });
});
