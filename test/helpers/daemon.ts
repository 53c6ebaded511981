// Real parts for the daemon tests: a mosquitto broker started on a free loopback port, and the
// `mamba-edge serve` daemon as a child process.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { bin, root } from "./cli.js";

export const demoModel = join(root, "models", "mamba2-brown");

export function tempDir(prefix = "mamba-edge-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const c = createConnection({ port, host: "127.0.0.1" }, () => {
        c.end();
        r(true);
      });
      c.once("error", () => r(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on port ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** mosquitto's binary (Debian puts it in /usr/sbin), or null when not installed. */
export function mosquittoBinary(): string | null {
  for (const p of ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]) if (existsSync(p)) return p;
  const r = spawnSync("sh", ["-c", "command -v mosquitto"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : null;
}

export class Mosquitto {
  proc: ChildProcess | null = null;
  readonly dir = tempDir("mosquitto-");

  private constructor(readonly port: number) {}

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** `lines`: more settings for the listener (TLS, passwords), after the defaults so they win. */
  static async start(lines: string[] = []): Promise<Mosquitto> {
    const m = new Mosquitto(await freePort());
    writeFileSync(
      join(m.dir, "mosquitto.conf"),
      [
        `listener ${m.port} 127.0.0.1`,
        "allow_anonymous true",
        // keep running as this user (as root, mosquitto would switch to one that cannot write here)
        `user ${userInfo().username}`,
        "persistence true",
        `persistence_location ${m.dir}/`,
        "autosave_interval 1",
        // the fuzz test floods one client: queue everything rather than drop
        "max_queued_messages 0",
        "log_dest none",
        ...lines,
        "",
      ].join("\n"),
    );
    await m.restart();
    return m;
  }

  /** (Re)starts the broker on the same port with the same persistence. */
  async restart(): Promise<void> {
    const bin = mosquittoBinary();
    if (!bin) throw new Error("mosquitto is not installed");
    this.proc = spawn(bin, ["-c", join(this.dir, "mosquitto.conf")], { stdio: "ignore" });
    await waitForPort(this.port);
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((r) => {
      p.once("exit", () => r());
      p.kill(signal);
    });
    this.proc = null;
  }
}

export interface Served {
  proc: ChildProcess;
  /** stdout lines parsed as JSON (the stdio protocol) */
  replies: Record<string, unknown>[];
  /** stderr log records */
  logs: Record<string, unknown>[];
  /** resolves with the first stdout reply that matches */
  next(pred: (r: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>;
  send(obj: unknown): void;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `mamba-edge serve ARGS` and waits for its "ready" log line. */
export async function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Served> {
  const proc = spawn(process.execPath, [bin, "serve", ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const replies: Record<string, unknown>[] = [];
  const logs: Record<string, unknown>[] = [];
  const waiters: { pred: (r: Record<string, unknown>) => boolean; resolve: (r: Record<string, unknown>) => void }[] = [];
  let stderrText = "";
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    const r = JSON.parse(line) as Record<string, unknown>;
    replies.push(r);
    for (const w of [...waiters]) {
      if (!w.pred(r)) continue;
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(r);
    }
  });
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stderr! }).on("line", (line) => {
      stderrText += line + "\n";
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        logs.push(rec);
        if (rec.msg === "ready") resolve();
      } catch {
        /* not a log record: kept in stderrText */
      }
    });
    proc.once("exit", (code) => reject(new Error(`daemon exited (${code}) before ready:\n${stderrText}`)));
  });
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  await ready;
  return {
    proc,
    replies,
    logs,
    next: (pred, ms = 60_000) => {
      const hit = replies.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no matching reply within ${ms} ms; got ${JSON.stringify(replies).slice(0, 400)}`)),
          ms,
        );
        waiters.push({ pred, resolve: (r) => (clearTimeout(timer), resolve(r)) });
      });
    },
    send: (obj) => proc.stdin!.write((typeof obj === "string" ? obj : JSON.stringify(obj)) + "\n"),
    exited,
    stop: async (signal = "SIGTERM") => {
      if (proc.exitCode === null) proc.kill(signal);
      return exited;
    },
  };
}
