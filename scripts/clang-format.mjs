// clang-format over the project's C++ and CUDA sources (tracked files): rewrites them, or with
// --check lists those that differ and exits 1.
import { execFileSync, spawnSync } from "node:child_process";

const check = process.argv.includes("--check");
const files = execFileSync("git", ["ls-files", "*.cu", "*.cuh", "*.cpp", "*.h", "*.inc"], { encoding: "utf8" })
  .split("\n")
  .filter((f) => f && !f.startsWith("test/fixtures/"));
const args = check ? ["--dry-run", "-Werror", ...files] : ["-i", ...files];
const r = spawnSync("clang-format", args, { stdio: "inherit" });
if (r.error) {
  console.error(`clang-format: ${r.error.message} (Debian: apt-get install clang-format)`);
  process.exit(1);
}
process.exit(r.status ?? 1);
