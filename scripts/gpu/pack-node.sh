#!/usr/bin/env bash
# Packs what the GPU check needs from this machine into .device/ (git-ignored; named in `carry`):
# this Node binary, and the compiled dist/ with a pruned node_modules (the runtime's packages and
# vitest's, for test/cuda.test.ts; Linux x64 binaries only), xz-compressed. The GPU machine has no
# Node and no network, and what is carried there must stay small. --no-vitest leaves vitest out
# (about half the packed size; gpu-check.sh then skips test/cuda.test.ts, saying so).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .device
npx tsc -p tsconfig.json
query=".prod, #vitest, #vitest *"
[ "${1:-}" = --no-vitest ] && query=".prod"
# the production dependencies (and vitest with its own), each package folder once
mapfile -t packages < <(npm query "$query" | node -e '
  const { relative, sep } = require("node:path");
  const dirs = [...new Set(JSON.parse(require("node:fs").readFileSync(0, "utf8")).map((p) => relative(process.cwd(), p.path)))].sort();
  const pkgs = dirs.filter((d) => d.startsWith("node_modules" + sep));
  for (const d of pkgs) if (!pkgs.some((o) => d.startsWith(o + sep))) console.log(d);
')
[ "${#packages[@]}" -gt 0 ] || { echo "npm query found no packages: run npm ci first" >&2; exit 1; }
# without its static symbol table (addons link against the dynamic one)
strip -s -o .device/node "$(command -v node)"
xz -T2 -9e -c .device/node > .device/node.xz
rm .device/node
# lightningcss is imported by vite only for CSS, which no test has
tar -c \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/darwin' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/win32' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/arm64' \
  --exclude='node_modules/tokenizers/tokenizers.[!l]*' \
  --exclude='node_modules/tokenizers/tokenizers.linux-arm*' \
  --exclude='node_modules/tokenizers/tokenizers.linux-x64-musl*' \
  --exclude='node_modules/koffi/vendor' --exclude='node_modules/koffi/doc' \
  --exclude='node_modules/@koromix/koffi-linux-x64/musl_x64' \
  --exclude='node_modules/lightningcss*' --exclude='node_modules/protobufjs/cli' --exclude='node_modules/bintrees/test' \
  --exclude='*.map' --exclude='*.d.ts' --exclude='*.d.cts' --exclude='*.d.mts' \
  "${packages[@]}" dist | xz -T2 -9e > .device/modules.tar.xz
ls -la .device
