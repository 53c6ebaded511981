// Structured JSON logs on stderr (stdout may carry the stdio protocol; journald collects stderr).
import { pino, type Logger } from "pino";

export type { Logger };

export function makeLogger(level: string): Logger {
  return pino({ level, base: { name: "mamba-edge" } }, pino.destination({ dest: 2, sync: true }));
}
