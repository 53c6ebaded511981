// A progress bar on stderr for long work, shown only when stderr is a terminal (logs and pipes
// stay clean).
import cliProgress from "cli-progress";

export interface Progress {
  update(done: number, extra?: string): void;
  stop(): void;
}

export function progress(label: string, total: number): Progress {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% {value}/{total} {extra}`, stream: process.stderr, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { extra: "" });
  return { update: (done, extra = "") => bar.update(done, { extra }), stop: () => bar.stop() };
}
