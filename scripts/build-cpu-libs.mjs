#!/usr/bin/env node
// Builds the package's CPU libraries with CMake: engines/ort-ops (the fused operators of backend
// ort) and engines/quant-native (the builder's GPTQ). Run by `npm ci` / `npm install` (the
// package's prepare step) and by `npm run build:cpu`. Where CMake or a C++ compiler is missing it
// says so and exits 0: backend ort then runs its plain graphs, and the builder its TypeScript GPTQ.
// `--strict` (CI) fails instead.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const strict = process.argv.includes("--strict");
const libs = [
  { dir: "ort-ops", what: "the fused operators", without: "backend ort will run its plain graphs" },
  { dir: "quant-native", what: "the builder's native GPTQ", without: "builds will run GPTQ in TypeScript (many times slower)" },
];

function step(args) {
  const r = spawnSync("cmake", args, { cwd: root, encoding: "utf8" });
  if (r.error) return `cmake not found (${r.error.code})`;
  if (r.status !== 0) return (r.stderr || r.stdout).trim().split("\n").filter(Boolean).slice(-1)[0] ?? `cmake exited ${r.status}`;
  return null;
}

let failed = false;
for (const { dir, what, without } of libs) {
  const src = join(root, "engines", dir);
  const out = join(src, "build");
  const why = step(["-S", src, "-B", out, "-DCMAKE_BUILD_TYPE=Release"]) ?? step(["--build", out, "-j", "2"]);
  if (why) {
    failed = true;
    console.error(`mamba-edge: ${what} (engines/${dir}) were not built: ${why}`);
    console.error(`mamba-edge: ${without}; install cmake and a C++ compiler, then \`npm run build:cpu\``);
  } else console.error(`mamba-edge: built ${what} (${join("engines", dir, "build")})`);
}
process.exit(strict && failed ? 1 : 0);
