// stdio transport: one JSON object per line on stdin, replies one per line on stdout (logs go to
// stderr), so a robot program can run the daemon as a child process.
import { createInterface, type Interface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import type { Daemon, Outgoing, Transport } from "../daemon/daemon.js";

export class StdioTransport implements Transport {
  readonly name = "stdio";
  private rl: Interface | null = null;

  constructor(
    private readonly daemon: Daemon,
    private readonly onEnd: () => void,
    private readonly input: Readable = process.stdin,
    private readonly output: Writable = process.stdout,
  ) {}

  async start(): Promise<void> {
    const send = (m: Outgoing) => {
      this.output.write(JSON.stringify(m) + "\n");
    };
    this.rl = createInterface({ input: this.input, crlfDelay: Infinity });
    this.rl.on("line", (line) => {
      if (line.trim()) this.daemon.dispatch(line, send, "stdio");
    });
    // The parent closed our stdin: finish what is running and stop.
    this.rl.on("close", () => this.onEnd());
  }

  async stopAccepting(): Promise<void> {
    // Requests that still arrive are refused by the scheduler; cancels keep working.
  }

  async close(): Promise<void> {
    this.rl?.removeAllListeners("close");
    this.rl?.close();
  }
}
