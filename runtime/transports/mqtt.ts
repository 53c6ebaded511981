// MQTT transport (mqtt.js): requests on <prefix>/<node>/generate and the fleet topic (a shared
// subscription, so one daemon of a fleet takes each request), cancels on <prefix>/<node>/cancel, a
// retained status with a Last Will. Replies go to the MQTT v5 Response Topic with the request's
// Correlation Data, or to the request's `reply_to` for MQTT 3.1.1 clients. QoS 1 both ways, and a
// persistent session, so requests published while the daemon was away are delivered when it is back.
// Replies go only to topics that replyTopicPattern allows and never to the daemon's own topics: the
// daemon has wide rights on the broker, and a requester must not borrow them.
import { X509Certificate, createHash, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect, type IClientOptions, type IPublishPacket, type MqttClient } from "mqtt";
import { UserError } from "../../engines/errors.js";
import { replyFilters, type DaemonConfig } from "../daemon/config.js";
import type { Daemon, Outgoing, Transport } from "../daemon/daemon.js";
import { peek } from "../scheduler/protocol.js";

/** Redelivered requests are recognised for this long. */
const DEDUP_MS = 10 * 60_000;
const DEDUP_MAX = 4096;

export interface MqttOptions {
  url: string;
  /** the embedded broker: MQTT 3.1.1 and no shared subscriptions */
  embedded: boolean;
}

export function topics(prefix: string, node: string) {
  return {
    generate: `${prefix}/${node}/generate`,
    cancel: `${prefix}/${node}/cancel`,
    status: `${prefix}/${node}/status`,
    fleet: `${prefix}/fleet/generate`,
  };
}

/** A topic name a reply could be published to at all: no wildcards, not empty, not too long. */
function validReplyTopic(t: unknown): t is string {
  return typeof t === "string" && t.length > 0 && t.length <= 1024 && !/[+#]/.test(t) && !t.includes("\0");
}

/** TLS failures that the next attempt would meet again: an untrusted or broken certificate, an alert. */
const TLS_FATAL =
  /^(ERR_SSL_|ERR_TLS_CERT_|UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_|INVALID_CA|INVALID_PURPOSE|HOSTNAME_MISMATCH)/;

/** The PEM files are what they claim to be, and the key belongs to the certificate. */
function checkTls(files: { ca?: Buffer; cert?: Buffer; key?: Buffer }, names: { ca?: string; cert?: string; key?: string }): void {
  const cert = (what: "ca" | "cert", buf: Buffer) => {
    try {
      return new X509Certificate(buf);
    } catch (e) {
      throw new UserError(`${what}: ${names[what]}: not a PEM certificate (${(e as Error).message})`);
    }
  };
  const now = Date.now();
  for (const what of ["ca", "cert"] as const) {
    const buf = files[what];
    if (!buf) continue;
    const x = cert(what, buf);
    if (Date.parse(x.validTo) < now) throw new UserError(`${what}: ${names[what]}: certificate expired on ${x.validTo}`);
    if (Date.parse(x.validFrom) > now) throw new UserError(`${what}: ${names[what]}: certificate not valid before ${x.validFrom}`);
  }
  if (files.key) {
    let key;
    try {
      key = createPrivateKey(files.key);
    } catch (e) {
      throw new UserError(`key: ${names.key}: not a PEM private key (${(e as Error).message})`);
    }
    if (files.cert && !cert("cert", files.cert).checkPrivateKey(key))
      throw new UserError(`key: ${names.key}: does not belong to the certificate ${names.cert}`);
  }
}

/** MQTT topic matching: `+` one level, `#` the rest (and the parent); `$` topics only by name. */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith("$") && /^[+#]/.test(filter)) return false;
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length || (f[i] !== "+" && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}

export class MqttTransport implements Transport {
  readonly name = "mqtt";
  private client: MqttClient | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly t: ReturnType<typeof topics>;
  private readonly fleetSub: string;
  private readonly seen = new Map<string, { at: number; final: Outgoing | null }>();
  private readonly allowed: string[];
  /** the daemon's own topics (of every node under the prefix): never a reply's */
  private readonly own: string[];

  constructor(
    private readonly daemon: Daemon,
    private readonly cfg: DaemonConfig,
    private readonly opts: MqttOptions,
  ) {
    this.t = topics(cfg.topicPrefix, cfg.node);
    this.fleetSub = opts.embedded ? this.t.fleet : `$share/${cfg.topicPrefix}/${this.t.fleet}`;
    this.allowed = replyFilters(cfg);
    this.own = ["generate", "cancel", "status"].map((x) => `${cfg.topicPrefix}/+/${x}`);
  }

  /** Where a reply may go: a topic name the settings allow, none of the daemon's own, no `$` topic. */
  private replyAllowed(topic: string): boolean {
    return !topic.startsWith("$") && this.allowed.some((f) => topicMatches(f, topic)) && !this.own.some((f) => topicMatches(f, topic));
  }

  private get version(): 4 | 5 {
    return this.opts.embedded ? 4 : this.cfg.mqttVersion;
  }

  async start(): Promise<void> {
    const c = this.cfg;
    const log = this.daemon.log;
    const read = (what: string, f: string | undefined) => {
      if (f === undefined) return undefined;
      try {
        return readFileSync(f);
      } catch (e) {
        throw new UserError(`${what}: cannot read ${f} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
    };
    const tls = { ca: read("ca", c.ca), cert: read("cert", c.cert), key: read("key", c.key) };
    checkTls(tls, c);
    const options: IClientOptions = {
      protocolVersion: this.version,
      clientId: c.clientId ?? `mamba-edge-${c.node}`,
      clean: false, // a persistent session: the broker keeps our subscriptions and queued requests
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      username: c.username,
      password: c.password,
      ...tls,
      rejectUnauthorized: c.rejectUnauthorized,
      will: { topic: this.t.status, payload: Buffer.from(JSON.stringify({ state: "offline", node: c.node })), qos: 1, retain: true },
      ...(this.version === 5 ? { properties: { sessionExpiryInterval: 7 * 24 * 3600 } } : {}),
    };
    const client = connect(this.opts.url, options);
    this.client = client;
    client.on("message", (topic, payload, packet) => this.onMessage(topic, payload, packet));
    client.on("connect", (ack) => {
      // small messages (one token each) must not wait for Nagle's algorithm
      (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      log.info({ url: this.opts.url, version: this.version, sessionPresent: ack.sessionPresent }, "mqtt connected");
      if (!ack.sessionPresent) {
        client.subscribe([this.t.generate, this.fleetSub, this.t.cancel], { qos: 1 }, (err) => {
          if (err) log.error({ err }, "mqtt subscribe failed");
        });
      }
      this.publishStatus();
    });
    client.on("reconnect", () => log.debug("mqtt reconnecting"));
    client.on("offline", () => log.warn({ url: this.opts.url }, "mqtt offline; will reconnect"));
    client.on("error", (err) => log.error({ code: (err as { code?: unknown }).code }, `mqtt: ${err.message}`));

    // Wait for the first connection so that a wrong URL or refused credentials fail at start.
    await new Promise<void>((resolve, reject) => {
      const onConnect = () => {
        cleanup();
        resolve();
      };
      const onError = (err: Error & { code?: unknown }) => {
        // connack refusals (bad credentials, not authorized, bad protocol) will not cure themselves
        if (typeof err.code === "number" && err.code !== 0) {
          cleanup();
          client.end(true);
          reject(new UserError(`mqtt ${this.opts.url}: broker refused the connection (${err.message})`));
        }
        // neither will a TLS handshake that failed on a certificate
        if (typeof err.code === "string" && TLS_FATAL.test(err.code)) {
          cleanup();
          client.end(true);
          reject(new UserError(`mqtt ${this.opts.url}: TLS handshake failed (${err.code}: ${err.message.replace(/\s+/g, " ")})`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        log.warn({ url: this.opts.url }, "mqtt broker not reachable yet; serving when it is");
        resolve();
      }, 10_000);
      const cleanup = () => {
        clearTimeout(timer);
        client.off("connect", onConnect);
        client.off("error", onError);
      };
      client.on("connect", onConnect);
      client.on("error", onError);
    });
    this.timer = setInterval(() => this.publishStatus(), c.statusIntervalMs);
    this.timer.unref();
  }

  private publishStatus(state: "online" | "offline" = "online"): Promise<void> {
    const client = this.client;
    if (!client) return Promise.resolve();
    return new Promise((resolve) => {
      client.publish(this.t.status, JSON.stringify(this.daemon.status(state)), { qos: 1, retain: true }, () => resolve());
    });
  }

  private onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void {
    const log = this.daemon.log;
    const { id, replyTo } = peek(payload);
    if (topic === this.t.cancel) {
      if (id !== null && id !== "") this.daemon.cancel(id, "mqtt");
      else log.warn({ topic }, 'cancel: expected {"id": ...}');
      return;
    }
    const props = packet.properties;
    const asked = [props?.responseTopic, replyTo].filter((x) => x !== undefined);
    const responseTopic = asked.find((x): x is string => validReplyTopic(x) && this.replyAllowed(x));
    if (responseTopic === undefined && asked.length > 0)
      log.warn(
        { topic, id, replyTo: asked.map((x) => String(x).slice(0, 200)), allowed: this.allowed },
        "reply address not allowed (replyTopicPattern; never the daemon's own topics): not answered",
      );
    const correlationData = props?.correlationData;
    const client = this.client!;
    const send = responseTopic
      ? (m: Outgoing) => {
          client.publish(
            responseTopic,
            JSON.stringify(m),
            { qos: 1, ...(this.version === 5 && correlationData ? { properties: { correlationData } } : {}) },
            (err) => {
              if (err) log.warn({ topic: responseTopic, err: err.message }, "reply not published");
            },
          );
        }
      : null;

    // A QoS 1 request can arrive twice (redelivery after a lost acknowledgement): run it once. Only
    // the same packet again counts (topic, reply address, Correlation Data and payload, byte for
    // byte), only a request the scheduler took, and only while it runs or after it succeeded: an op,
    // a refused message or one answered with an error is handled again when it comes again.
    let key: string | null = null;
    if (send && packet.qos > 0) {
      const h = createHash("sha256");
      for (const part of [topic, responseTopic!, correlationData ?? Buffer.alloc(0), payload]) {
        h.update(String(Buffer.byteLength(part as string | Buffer)) + ":");
        h.update(part);
      }
      key = h.digest("hex");
      const prior = this.seen.get(key);
      if (prior && Date.now() - prior.at < DEDUP_MS) {
        log.info({ id, dup: packet.dup, answered: prior.final !== null }, "redelivered request: not run again");
        if (prior.final) send(prior.final);
        return;
      }
    }
    let entry: { at: number; final: Outgoing | null } | null = null;
    this.daemon.dispatch(payload, send, `mqtt:${topic === this.t.fleet ? "fleet" : "node"}`, {
      onAccepted: () => {
        if (key !== null) entry = this.remember(key);
      },
      onFinal: (r) => {
        if (entry === null || key === null) return;
        if ("error" in r) this.seen.delete(key);
        else entry.final = r;
      },
    });
  }

  private remember(key: string): { at: number; final: Outgoing | null } {
    const now = Date.now();
    const entry = { at: now, final: null };
    this.seen.set(key, entry);
    if (this.seen.size > DEDUP_MAX) {
      for (const [k, v] of this.seen) {
        if (this.seen.size <= DEDUP_MAX && now - v.at < DEDUP_MS) break;
        this.seen.delete(k);
      }
    }
    return entry;
  }

  async stopAccepting(): Promise<void> {
    // Stay subscribed: the persistent session keeps requests that arrive while the daemon is down
    // for its next start; the few that arrive while draining get an error reply (overloaded).
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    const client = this.client;
    if (!client) return;
    if (client.connected) await Promise.race([this.publishStatus("offline"), new Promise((r) => setTimeout(r, 2000))]);
    await new Promise<void>((r) => client.end(false, {}, () => r()));
  }
}
