#!/usr/bin/env bash
# Backend ort's CPU benchmarks on the GPU machine's host CPU, limited to THREADS intra-op threads (2:
# the core count of this project's CPU figures), as a second, quieter machine for them. Unpacks Node
# and the pruned node_modules from .device/ (scripts/gpu/pack-node.sh), builds both demo models in
# every recipe, then runs `mamba-edge bench` on each engine, scripts/ort-fused-ab.mjs,
# scripts/ort-matmul-ops.mjs and scripts/ort-kernels-bench.mjs (this needs cmake and g++). Records
# go to bench/results/ (label LABEL, default host-cpu) and, as one archive, to $OUT when set.
# Needs engines/ort-ops/build from this machine (name it in `carry`, with .device).
# Usage: OUT=/tmp/x THREADS=2 COMMIT=<hash> [LABEL=host-cpu] bash scripts/gpu/ort-host-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${THREADS:-2}
label=${LABEL:-host-cpu}
export MAMBA_EDGE_COMMIT=${COMMIT:-}
if ! command -v node >/dev/null && [ -f .device/node.xz ]; then
  # a machine without Node (the GPU machine): this packed Node, and the packed node_modules and dist/
  # in place of any left by an earlier call (they would be an older build)
  mkdir -p /tmp/me-node && xz -dc .device/node.xz > /tmp/me-node/node && chmod +x /tmp/me-node/node
  export PATH=/tmp/me-node:$PATH
  rm -rf node_modules dist && tar -xJf .device/modules.tar.xz
fi
mkdir -p bench/tmp
engines=()
for m in mamba1-brown mamba2-brown; do
  for q in fp16 w8a8 w4a8 w4a16 w8a8-naive; do
    e=bench/tmp/$label-$m-$q.mamba
    engines+=("$e")
    node bin/mamba-edge.js build models/$m --quant $q --calib data/brown/calib.txt --out $e --force >/dev/null &
  done
  wait # five builds at a time
done
lscpu | grep -E 'Model name|^CPU\(s\)' || true
for e in "${engines[@]}"; do node bin/mamba-edge.js bench --engine "$e" --threads "$threads" --out; done
node scripts/ort-fused-ab.mjs "${engines[@]}" --threads "$threads" --label "$label"
node scripts/ort-matmul-ops.mjs --rows 1,8,512 --threads "$threads" --label "$label"
node scripts/ort-kernels-bench.mjs --label "$label" || echo "ort-kernels-bench did not run (it needs cmake and g++)"
# one archive: the machine hands back a few files at most
if [ -n "${OUT:-}" ]; then tar -czf "$OUT/ort-host-cpu.tgz" bench/results/*"$label"*; fi
