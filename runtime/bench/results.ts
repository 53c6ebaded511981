// Benchmark and evaluation records: what was measured, on which machine, when, at which commit.
// `--out` writes them under bench/results/, where scripts/results-table.mjs turns them into the
// README's tables.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, hostname, platform, release, totalmem } from "node:os";
import { join } from "node:path";
import { packageRoot } from "../paths.js";

export function provenance() {
  return {
    machine: {
      host: hostname(),
      cpu: cpus()[0]?.model?.trim() ?? "unknown",
      // the cores this process may run on (fewer than the machine's under taskset or a cgroup)
      cores: availableParallelism(),
      memoryGB: +(totalmem() / 2 ** 30).toFixed(1),
      os: `${platform()} ${release()}`,
      node: process.version,
      // how the run was set up where the figures alone would mislead (e.g. pinned to fewer cores)
      ...(process.env.MAMBA_EDGE_RECORD_NOTE ? { note: process.env.MAMBA_EDGE_RECORD_NOTE } : {}),
    },
    date: new Date().toISOString(),
    commit: gitCommit(),
  };
}

/** Writes bench/results/<date>-<kind>-<backend>-<label>.json and returns its relative path. */
export function writeResult(kind: string, backend: string, label: string, record: object & { date: string }): string {
  const dir = join(packageRoot, "bench", "results");
  mkdirSync(dir, { recursive: true });
  const short = label
    .split(/[\\/]/)
    .filter(Boolean)
    .pop()!
    .replace(/[^\w.-]+/g, "_");
  const name = `${record.date.slice(0, 10)}-${kind}-${backend}-${short}.json`;
  writeFileSync(join(dir, name), JSON.stringify(record, null, 2) + "\n");
  return join("bench", "results", name);
}

/**
 * The checkout's commit, with "-dirty" when tracked files differ from it (the figures are then not
 * that commit's). MAMBA_EDGE_COMMIT names it instead in a copy of the tree whose git metadata is
 * absent or not its own (as on the GPU machine).
 */
function gitCommit(): string | null {
  if (process.env.MAMBA_EDGE_COMMIT) return process.env.MAMBA_EDGE_COMMIT;
  const git = (...args: string[]) =>
    execFileSync("git", args, { cwd: packageRoot, stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
  try {
    const commit = git("rev-parse", "--short", "HEAD");
    // (records being rewritten under bench/results do not count)
    return git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results") ? `${commit}-dirty` : commit;
  } catch {
    return null;
  }
}
