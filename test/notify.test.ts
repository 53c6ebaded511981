// systemd's notify protocol, against a real AF_UNIX datagram socket this test binds: READY=1 only once
// the engine is loaded and the transports are up, WATCHDOG=1 at half of WATCHDOG_USEC, STATUS= lines,
// STOPPING=1 on SIGTERM, and a stalled event loop stops the pings.
import { spawn, type ChildProcess } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { bin, root } from "./helpers/cli.js";
import { demoModel, Mosquitto, mosquittoBinary, tempDir } from "./helpers/daemon.js";
import { NotifySocket, python3 } from "./helpers/notify-socket.js";
import { skipWhen } from "./helpers/skip.js";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function daemon(args: string[], env: NodeJS.ProcessEnv): { proc: ChildProcess; logs: string[]; exited: Promise<number | null> } {
  const proc = spawn(process.execPath, [bin, "serve", "--model", demoModel, "--state-dir", tempDir(), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const logs: string[] = [];
  proc.stderr!.on("data", (d: Buffer) => logs.push(d.toString()));
  proc.stdout!.resume();
  const exited = new Promise<number | null>((r) => proc.once("exit", (c) => r(c)));
  cleanups.push(() => proc.exitCode === null && proc.kill("SIGKILL"));
  return { proc, logs, exited };
}

const gaps = (ts: number[]) => ts.slice(1).map((t, i) => t - ts[i]!);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe("systemd notify", () => {
  const why = python3() ? (mosquittoBinary() ? null : "mosquitto is not installed") : "python3 (to bind the socket) is not installed";

  it.skipIf(skipWhen(why !== null, why ?? ""))(
    "READY=1 only after the broker connection is up; watchdog, status and stopping",
    async () => {
      const sock = await NotifySocket.bind();
      cleanups.push(() => sock.close());
      const m = await Mosquitto.start();
      await m.stop(); // the daemon starts while nothing listens on the broker's port
      cleanups.push(() => void m.stop());
      const d = daemon(["--mqtt", m.url, "--node", "n1", "--status-interval-ms", "300"], {
        NOTIFY_SOCKET: sock.path,
        WATCHDOG_USEC: "400000",
      });
      await sock.next((x) => x.m === "STATUS=loading engine");
      // the engine loads, the transport waits for the broker: pings flow, READY does not
      await new Promise((r) => setTimeout(r, 2500));
      expect(d.logs.join("")).toContain("engine loaded");
      expect(sock.messages.some((x) => x.m === "READY=1")).toBe(false);
      expect(sock.messages.filter((x) => x.m === "WATCHDOG=1").length).toBeGreaterThanOrEqual(5);
      const brokerUp = NotifySocket.now();
      await m.restart();
      const ready = await sock.next((x) => x.m === "READY=1");
      expect(ready.t).toBeGreaterThan(brokerUp);
      const serving = sock.messages.find((x) => x.m.startsWith("STATUS=serving"));
      expect(serving?.m).toMatch(/^STATUS=serving \S*mamba2-brown \(0 running, 0 queued\)$/);
      expect(serving!.t).toBeLessThanOrEqual(ready.t);
      // half of WATCHDOG_USEC: every 200 ms
      await new Promise((r) => setTimeout(r, 1500));
      const pings = gaps(sock.messages.filter((x) => x.m === "WATCHDOG=1").map((x) => x.t));
      expect(median(pings)).toBeGreaterThan(170);
      expect(median(pings)).toBeLessThan(260);
      // periodic STATUS= refreshes at statusIntervalMs
      expect(sock.messages.filter((x) => x.m.startsWith("STATUS=serving")).length).toBeGreaterThanOrEqual(3);
      d.proc.kill("SIGTERM");
      expect(await d.exited).toBe(0);
      const stopping = await sock.next((x) => x.m === "STOPPING=1", 5000);
      expect(stopping.t).toBeGreaterThan(ready.t);
      expect(sock.messages.some((x) => x.m === "STATUS=draining")).toBe(true);
    },
    60_000,
  );

  it.skipIf(skipWhen(python3() === null, "python3 (to bind the socket) is not installed"))(
    "a stalled event loop stops the pings (abstract-namespace socket)",
    async () => {
      const sock = await NotifySocket.bind(true);
      cleanups.push(() => sock.close());
      const d = daemon(["--stdio"], { NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: "400000", MAMBA_EDGE_TEST_STALL_MS: "1500" });
      await sock.next((x) => x.m === "READY=1");
      await new Promise((r) => setTimeout(r, 600));
      const before = sock.messages.length;
      const stalledAt = NotifySocket.now();
      d.proc.kill("SIGUSR2");
      await new Promise((r) => setTimeout(r, 2500));
      const after = sock.messages.slice(before).filter((x) => x.m === "WATCHDOG=1");
      // no ping for the stall's length (systemd, with WatchdogSec=0.4s, would have restarted it) ...
      const silent = gaps([stalledAt, ...after.map((x) => x.t)]);
      expect(Math.max(...silent)).toBeGreaterThan(1300);
      // ... and they resume once the loop turns again
      expect(after.length).toBeGreaterThanOrEqual(2);
      d.proc.stdin!.end();
      expect(await d.exited).toBe(0);
    },
    60_000,
  );

  it("sends nothing and starts normally without NOTIFY_SOCKET", async () => {
    const d = daemon(["--stdio"], { NOTIFY_SOCKET: "", WATCHDOG_USEC: "400000" });
    d.proc.stdin!.write(JSON.stringify({ id: "a", prompt: "The", max_tokens: 2, temperature: 0 }) + "\n");
    d.proc.stdin!.end();
    expect(await d.exited).toBe(0);
    expect(d.logs.join("")).not.toContain("watchdog");
  }, 60_000);
});
