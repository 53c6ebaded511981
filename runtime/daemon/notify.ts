// systemd's notify protocol (sd_notify(3)): datagrams "READY=1", "STATUS=…", "WATCHDOG=1",
// "STOPPING=1", "RELOADING=1" sent to the AF_UNIX socket named by $NOTIFY_SOCKET. Node's dgram has no
// AF_UNIX, so libc's socket/sendto are called through koffi (loaded only when the socket is set);
// nothing is spawned per message. Without NOTIFY_SOCKET every call is a no-op.

type Fn = (...args: unknown[]) => unknown;

interface Libc {
  socket: Fn;
  sendto: Fn;
  close: Fn;
}

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const SUN_PATH_MAX = 108;

/** sockaddr_un for a path, or for "@name" (the abstract namespace: a leading NUL, no terminator). */
export function sockaddr(name: string): { addr: Buffer; len: number } {
  const abstract = name.startsWith("@");
  const path = Buffer.from(abstract ? name.slice(1) : name, "utf8");
  if (path.length + 1 > SUN_PATH_MAX) throw new Error(`NOTIFY_SOCKET: path longer than ${SUN_PATH_MAX - 1} bytes`);
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0);
  if (abstract) {
    path.copy(addr, 3); // byte 2 stays NUL
    return { addr, len: 2 + 1 + path.length };
  }
  path.copy(addr, 2);
  return { addr, len: 2 + path.length + 1 };
}

export class Notifier {
  private libc: Libc | null = null;
  private fd = -1;
  private target: { addr: Buffer; len: number } | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** the last send failure, for the log (sending never throws) */
  lastError: string | null = null;

  constructor(private readonly env: NodeJS.ProcessEnv = process.env) {}

  /** True when systemd (or a test) listens. */
  get enabled(): boolean {
    const s = this.env.NOTIFY_SOCKET;
    return s !== undefined && (s.startsWith("/") || s.startsWith("@"));
  }

  private async open(): Promise<boolean> {
    if (this.fd >= 0) return true;
    if (!this.enabled) return false;
    try {
      const koffi = (await import("koffi")).default as unknown as typeof import("koffi");
      const lib = koffi.load("libc.so.6");
      this.libc = {
        socket: lib.func("int socket(int, int, int)") as Fn,
        sendto: lib.func("intptr_t sendto(int, const void *, size_t, int, const void *, uint32_t)") as Fn,
        close: lib.func("int close(int)") as Fn,
      };
      this.target = sockaddr(this.env.NOTIFY_SOCKET!);
      this.fd = this.libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
      if (this.fd < 0) throw new Error("socket(AF_UNIX, SOCK_DGRAM) failed");
      return true;
    } catch (e) {
      this.lastError = (e as Error).message.split("\n")[0]!;
      this.libc = null;
      this.fd = -1;
      return false;
    }
  }

  /** Sends one datagram of KEY=VALUE lines; resolves false when nothing listens or it failed. */
  async send(lines: string): Promise<boolean> {
    if (!(await this.open())) return false;
    return this.sendNow(lines);
  }

  private sendNow(lines: string): boolean {
    if (!this.libc || !this.target) return false;
    const buf = Buffer.from(lines, "utf8");
    const n = this.libc.sendto(this.fd, buf, buf.length, MSG_NOSIGNAL, this.target.addr, this.target.len) as number;
    if (n < 0) this.lastError = "sendto on NOTIFY_SOCKET failed";
    return n >= 0;
  }

  ready(): Promise<boolean> {
    return this.send("READY=1");
  }

  status(text: string): Promise<boolean> {
    return this.send(`STATUS=${text.replace(/\n/g, " ")}`);
  }

  stopping(): Promise<boolean> {
    return this.send("STOPPING=1");
  }

  /** systemd ≥ 253 wants MONOTONIC_USEC (CLOCK_MONOTONIC, which process.hrtime reads on Linux) with RELOADING=1. */
  reloading(): Promise<boolean> {
    return this.send(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`);
  }

  /** The ping interval: half of WATCHDOG_USEC, or null when no watchdog is asked for (or it is another PID's). */
  watchdogIntervalMs(): number | null {
    const usec = Number(this.env.WATCHDOG_USEC);
    if (!this.enabled || !Number.isFinite(usec) || usec <= 0) return null;
    const pid = this.env.WATCHDOG_PID;
    if (pid !== undefined && pid !== "" && Number(pid) !== process.pid) return null;
    return Math.max(1, Math.floor(usec / 2000));
  }

  /**
   * Pings WATCHDOG=1 from a timer on the event loop, so a loop that stalls stops the pings and
   * systemd restarts the service. The timer does not keep the process alive.
   */
  async startWatchdog(): Promise<number | null> {
    const ms = this.watchdogIntervalMs();
    if (ms === null || this.timer || !(await this.open())) return null;
    this.sendNow("WATCHDOG=1");
    this.timer = setInterval(() => this.sendNow("WATCHDOG=1"), ms);
    this.timer.unref();
    return ms;
  }

  stopWatchdog(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  close(): void {
    this.stopWatchdog();
    if (this.libc && this.fd >= 0) this.libc.close(this.fd);
    this.fd = -1;
  }
}
