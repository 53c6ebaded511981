#!/usr/bin/env bash
# The GPU check of the cuda backend, in one go on a machine with an NVIDIA GPU, nvcc, cmake and
# PyTorch (+ transformers for the comparison): builds engines/native, checks every kernel against
# PyTorch float64, checks end-to-end logits of every recipe of both demo models against the
# TypeScript reference and the ort engine, and benchmarks random engines of the mamba-130m / 1.4b /
# 2.8b and mamba2-130m / 1.3b / 2.7b shapes beside the bandwidth floor and transformers. Writes gpu-check.json (and logs) to $OUT, or to
# bench/results/gpu-check/ when OUT is unset.
#   scripts/gpu-check.sh [--no-bench] [--no-kernels] [--shapes "mamba-130m mamba2-2.7b ..."]
# Without Node on the machine, it unpacks one carried by scripts/gpu/pack-node.sh into .device/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-bench/results/gpu-check}
mkdir -p "$OUTDIR"
BENCH=1
KERNELS=1
SHAPES="mamba-130m mamba-1.4b mamba-2.8b mamba2-130m mamba2-1.3b mamba2-2.7b"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-bench) BENCH=0 ;;
    --no-kernels) KERNELS=0 ;;
    --shapes) SHAPES="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
export PYTHONUNBUFFERED=1
step() { echo; echo "== $* ($(date +%T))"; }

step "Node"
if ! command -v node >/dev/null && [ -f .device/node.xz ]; then
  mkdir -p /tmp/me-node && xz -dc .device/node.xz > /tmp/me-node/node && chmod +x /tmp/me-node/node
  export PATH=/tmp/me-node:$PATH
fi
if [ -f .device/modules.tar.xz ] && [ ! -d node_modules/koffi ]; then tar -xJf .device/modules.tar.xz; fi
node --version || { echo "no Node: run scripts/gpu/pack-node.sh where Node is, and carry .device"; exit 1; }

step "build engines/native"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nvcc --version | tail -2
cmake -S engines/native -B engines/native/build -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-87;90}" > "$OUTDIR/cmake.log" 2>&1 &&
  cmake --build engines/native/build -j 16 >> "$OUTDIR/cmake.log" 2>&1 || { tail -30 "$OUTDIR/cmake.log"; exit 1; }
LIB=$PWD/engines/native/build/libmamba_edge.so
ls -la "$LIB"

step "kernels vs PyTorch float64"
[ $KERNELS = 1 ] && python3 scripts/gpu/kernel_check.py "$LIB" "$OUTDIR/kernels.json" 2>&1 | tee "$OUTDIR/kernels.log"

step "demo engines, every recipe (built here, reduced calibration: 32 × 256 tokens)"
ENG=/tmp/me-engines
mkdir -p $ENG
pairs=()
for r in fp16 w8a8 w4a8 w4a16 w8a8-naive; do
  for m in mamba1-brown mamba2-brown; do
    e=$ENG/$m-$r.mamba
    pairs+=("models/$m=$e")
    [ -d "$e" ] || node bin/mamba-edge.js build models/$m --quant $r --calib data/brown/calib.txt --calib-samples 32 --calib-len 256 --out $e > $ENG/$m-$r.log 2>&1 &
  done
  wait
done
ls $ENG

step "end-to-end logits: cuda vs reference vs ort"
node scripts/gpu/e2e_check.mjs "$OUTDIR/e2e.json" "${pairs[@]}" 2>&1 | tee "$OUTDIR/e2e.log"

if [ $BENCH = 1 ]; then
  step "benchmark"
  python3 scripts/gpu/bench.py "$LIB" "$OUTDIR/bench.json" $SHAPES 2>&1 | tee "$OUTDIR/bench.log"
fi

step "report"
python3 scripts/gpu/report.py "$OUTDIR"
