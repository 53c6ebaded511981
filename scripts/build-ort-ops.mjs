#!/usr/bin/env node
// Builds engines/ort-ops (the fused operators of backend ort) with CMake; run by
// `npm ci` / `npm install` (the package's prepare step) and by `npm run build:ops`. Where CMake or a
// C++ compiler is missing it says so and exits 0: backend ort then runs its plain graphs.
// `--strict` (CI) fails instead.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const strict = process.argv.includes("--strict");
const src = join(root, "engines", "ort-ops");
const out = join(src, "build");

function step(args) {
  const r = spawnSync("cmake", args, { cwd: root, encoding: "utf8" });
  if (r.error) return `cmake not found (${r.error.code})`;
  if (r.status !== 0) return (r.stderr || r.stdout).trim().split("\n").filter(Boolean).slice(-1)[0] ?? `cmake exited ${r.status}`;
  return null;
}

const why = step(["-S", src, "-B", out, "-DCMAKE_BUILD_TYPE=Release"]) ?? step(["--build", out, "-j", "2"]);
if (why) {
  console.error(`mamba-edge: the fused operators (engines/ort-ops) were not built: ${why}`);
  console.error("mamba-edge: backend ort will run its plain graphs; install cmake and a C++ compiler, then `npm run build:ops`");
  process.exit(strict ? 1 : 0);
}
console.error(`mamba-edge: built the fused operators (${join("engines", "ort-ops", "build")})`);
