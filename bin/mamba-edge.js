#!/usr/bin/env node
// Entry point: runs the compiled CLI (npm ci builds it through the `prepare` script).
import { existsSync } from "node:fs";

const entry = new URL("../dist/runtime/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("mamba-edge: not built yet: run `npm ci` (or `npm run build`) in the package directory\n");
  process.exit(1);
}
// A reader that goes away (`mamba-edge ... | head`) ends the output quietly.
process.stdout.on("error", (e) => {
  if (e.code === "EPIPE") process.exit(0);
  throw e;
});
const { main } = await import(entry.href);
process.exitCode = await main();
