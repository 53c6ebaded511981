// A real AF_UNIX datagram socket standing in for systemd's notify socket: python3 binds it and prints
// each datagram with its arrival time (CLOCK_MONOTONIC, ms) as one JSON line.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { tempDir } from "./daemon.js";

const receiver = `
import json, os, socket, sys, time
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + name[1:] if name.startswith("@") else name)
print(json.dumps({"bound": True}), flush=True)
while True:
    data = s.recv(4096)
    print(json.dumps({"t": time.monotonic() * 1000, "m": data.decode()}), flush=True)
`;

export function python3(): string | null {
  const r = spawnSync("python3", ["-c", "import socket; socket.AF_UNIX"], { encoding: "utf8" });
  return r.status === 0 ? "python3" : null;
}

export interface NotifyMessage {
  t: number;
  m: string;
}

export class NotifySocket {
  readonly messages: NotifyMessage[] = [];
  private waiters: { pred: (m: NotifyMessage) => boolean; resolve: (m: NotifyMessage) => void }[] = [];

  private constructor(
    readonly path: string,
    private readonly proc: ChildProcess,
  ) {}

  /** `abstract`: an abstract-namespace name ("@…") instead of a path. */
  static async bind(abstract = false): Promise<NotifySocket> {
    const path = abstract ? `@mamba-edge-test-${process.pid}-${Date.now()}` : join(tempDir("notify-"), "notify.sock");
    const proc = spawn("python3", ["-c", receiver, path], { stdio: ["ignore", "pipe", "inherit"] });
    const s = new NotifySocket(path, proc);
    await new Promise<void>((resolve, reject) => {
      proc.once("exit", (c) => reject(new Error(`notify receiver exited (${c})`)));
      createInterface({ input: proc.stdout! }).on("line", (line) => {
        const r = JSON.parse(line) as NotifyMessage & { bound?: boolean };
        if (r.bound) return resolve();
        s.messages.push(r);
        for (const w of [...s.waiters])
          if (w.pred(r)) {
            s.waiters.splice(s.waiters.indexOf(w), 1);
            w.resolve(r);
          }
      });
    });
    return s;
  }

  next(pred: (m: NotifyMessage) => boolean, ms = 30_000, after = 0): Promise<NotifyMessage> {
    const hit = this.messages.slice(after).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no such notify message in ${ms} ms; got ${JSON.stringify(this.messages.map((m) => m.m))}`)),
        ms,
      );
      this.waiters.push({ pred, resolve: (m) => (clearTimeout(timer), resolve(m)) });
    });
  }

  /** CLOCK_MONOTONIC in ms, the receiver's clock (for comparing with arrival times). */
  static now(): number {
    return Number(process.hrtime.bigint()) / 1e6;
  }

  close(): void {
    this.proc.kill();
  }
}
