// stdio transport: one JSON object per line on stdin, replies one per line on stdout (logs go to
// stderr), so a robot program can run the daemon as a child process.
import type { Readable, Writable } from "node:stream";
import type { Daemon, Outgoing, Transport } from "../daemon/daemon.js";
import { WireError, errorReply, type RequestId } from "../scheduler/protocol.js";

export class StdioTransport implements Transport {
  readonly name = "stdio";
  private readonly parts: Buffer[] = [];
  private held = 0;
  /** inside a line already refused as too long: its bytes are dropped up to the newline */
  private discarding = false;
  private readonly onData = (chunk: Buffer | string) => this.take(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  private readonly onClose = () => {
    // The parent closed our stdin: the last line, if unterminated, then finish what is running and stop.
    if (!this.discarding && this.held > 0) this.line(Buffer.concat(this.parts.splice(0)));
    this.held = 0;
    this.onEnd();
  };

  constructor(
    private readonly daemon: Daemon,
    private readonly onEnd: () => void,
    private readonly input: Readable = process.stdin,
    private readonly output: Writable = process.stdout,
  ) {}

  private send = (m: Outgoing) => {
    this.output.write(JSON.stringify(m) + "\n");
  };

  async start(): Promise<void> {
    this.input.on("data", this.onData);
    this.input.once("end", this.onClose);
  }

  /** Splits input at newlines, holding at most maxMessageBytes (+1 for a CR) of an unfinished line. */
  private take(chunk: Buffer): void {
    const max = this.daemon.config.maxMessageBytes;
    let at = 0;
    while (at < chunk.length) {
      const nl = chunk.indexOf(0x0a, at);
      const end = nl < 0 ? chunk.length : nl;
      if (!this.discarding) {
        this.parts.push(chunk.subarray(at, end));
        this.held += end - at;
        if (this.held > max + 1) {
          const head = Buffer.concat(this.parts.splice(0));
          this.held = 0;
          this.discarding = true;
          this.refuse(head, `message of more than ${max} bytes, the limit is ${max}; the rest of the line is discarded`);
        }
      }
      if (nl < 0) return;
      if (this.discarding) this.discarding = false;
      else {
        const line = Buffer.concat(this.parts.splice(0));
        this.held = 0;
        this.line(line);
      }
      at = nl + 1;
    }
  }

  /** too_large, naming the id when the line starts with one (`{"id": ...`), as most requests do */
  private refuse(head: Buffer, message: string): void {
    const err = new WireError("too_large", message);
    const m = /^\s*\{\s*"id"\s*:\s*("(?:[^"\\]|\\.){1,256}"|-?\d{1,16})\s*[,}]/.exec(head.subarray(0, 600).toString("utf8"));
    const id = m ? parseId(m[1]) : null;
    this.daemon.metrics.failed(err.code);
    this.daemon.log.warn({ from: "stdio", id, code: err.code }, err.message);
    this.send(errorReply(id, err));
  }

  private line(raw: Buffer): void {
    const line = raw.length > 0 && raw[raw.length - 1] === 0x0d ? raw.subarray(0, raw.length - 1) : raw;
    const max = this.daemon.config.maxMessageBytes;
    if (line.length > max) return this.refuse(line, `message of ${line.length} bytes, the limit is ${max}`);
    const text = line.toString("utf8");
    if (text.trim()) this.daemon.dispatch(text, this.send, "stdio");
  }

  async stopAccepting(): Promise<void> {
    // Requests that still arrive are refused by the scheduler; cancels keep working.
  }

  async close(): Promise<void> {
    this.input.off("data", this.onData);
    this.input.off("end", this.onClose);
    this.input.pause();
  }
}

function parseId(text: string): RequestId | null {
  try {
    return JSON.parse(text) as RequestId;
  } catch {
    return null;
  }
}
