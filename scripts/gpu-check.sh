#!/usr/bin/env bash
# The GPU check of the cuda backend, in one go on a machine with an NVIDIA GPU, nvcc, cmake and
# PyTorch (+ transformers for the comparison): builds engines/native, checks every kernel against
# PyTorch float64, the builder's calibration on the GPU against onnxruntime's, end-to-end logits of every recipe of both demo models against the
# TypeScript reference and the ort engine, runs test/cuda.test.ts with vitest (a GPU required: its
# tests may not skip), the TensorRT plugins through scripts/gpu/trt-check.sh (TensorRT's headers in
# ../shared/third_party or a carried .trt-headers/include), and benchmarks random engines of the mamba-130m / 1.4b / 2.8b and
# mamba2-130m / 1.3b / 2.7b shapes beside the bandwidth floor and transformers. Writes
# gpu-check.json, gpu-check.log and each step's results to $OUT, or to bench/results/gpu-check/
# when OUT is unset.
#   scripts/gpu-check.sh [--no-bench] [--no-kernels] [--shapes "mamba-130m mamba2-2.7b ..."]
# Without Node on the machine, it unpacks the one carried by scripts/gpu/pack-node.sh in .device/.
#
# Exit status 0 only when every step exits 0 and report.py counts no failed check. Each step runs
# under set -euo pipefail of its own; one that fails does not stop those after it (unless they
# need it), so the report shows everything, and its last line is "N passed, M failed".
# GPU_CHECK_STEP_RUNNER=PROGRAM (the test of this script on a machine without a GPU): each step
# runs `PROGRAM STEP COMMAND...` in place of COMMAND...; the control flow and report.py are real.
# shellcheck disable=SC2317 # the steps' functions are called through `step`
set -euo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-bench/results/gpu-check}
BENCH=1
KERNELS=1
SHAPES="mamba-130m mamba-1.4b mamba-2.8b mamba2-130m mamba2-1.3b mamba2-2.7b"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-bench) BENCH=0 ;;
    --no-kernels) KERNELS=0 ;;
    --shapes)
      [ $# -ge 2 ] || { echo "--shapes needs a list of shapes" >&2; exit 2; }
      SHAPES="$2"
      shift
      ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
read -ra shapes <<< "$SHAPES"
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
export OUT=$OUTDIR PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUNNER=${GPU_CHECK_STEP_RUNNER:-}
LOG=$OUTDIR/gpu-check.log
LIB=$PWD/engines/native/build/libmamba_edge.so
ENG=/tmp/me-engines
# an earlier run's results in the same folder must not count for this one
rm -f "$OUTDIR"/{steps.tsv,kernels.json,e2e.json,bench.json,vitest.json,gpu-check.json,cmake.log,trt-check.json,trt-check.log}
: > "$OUTDIR/steps.tsv"
: > "$LOG"
declare -A status=()

# step NAME "NEEDS" COMMAND...: runs COMMAND (output on screen and in the log) unless a step it
# needs failed, and records its exit status in steps.tsv
step() {
  local name=$1 needs=$2 rc n
  shift 2
  echo -e "\n== $name ($(date +%T))" | tee -a "$LOG"
  for n in $needs; do
    if [ "${status[$n]:-1}" != 0 ]; then
      echo "not run: step $n failed" | tee -a "$LOG"
      status[$name]=1
      printf '%s\t1\tnot run: %s failed\n' "$name" "$n" >> "$OUTDIR/steps.tsv"
      return 0
    fi
  done
  [ -z "$RUNNER" ] || set -- "$RUNNER" "$name" "$@"
  set +e
  (set -e; "$@") 2>&1 | tee -a "$LOG"
  rc=$?
  set -e
  status[$name]=$rc
  printf '%s\t%s\t\n' "$name" "$rc" >> "$OUTDIR/steps.tsv"
  if [ "$rc" != 0 ]; then echo "step $name failed: exit status $rc" | tee -a "$LOG"; fi
}

own_node=$(command -v node || true)
[ -n "$own_node" ] || export PATH=/tmp/me-node:$PATH
unpack_node() {
  if [ -z "$own_node" ] && [ -f .device/node.xz ]; then
    mkdir -p /tmp/me-node
    xz -dc .device/node.xz > /tmp/me-node/node
    chmod +x /tmp/me-node/node
    # the packed node_modules and dist/ in place of any an earlier call left here (an older build)
    rm -rf node_modules dist
    tar -xJf .device/modules.tar.xz
  fi
  command -v node > /dev/null || { echo "no Node: run scripts/gpu/pack-node.sh where Node is, and carry .device"; return 1; }
  node --version
}

build_native() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -2
  local rc=0
  cmake -S engines/native -B engines/native/build -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-87;90}" > "$OUTDIR/cmake.log" 2>&1 &&
    cmake --build engines/native/build -j 16 >> "$OUTDIR/cmake.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    tail -30 "$OUTDIR/cmake.log"
    return "$rc"
  fi
  ls -la "$LIB"
}

# both demo models in every recipe, two builds at a time, a reduced calibration (32 × 256 tokens);
# w4a16-q4: w4a16 with the embedding and lm_head in 4 bits (--embedding q4)
recipes=(fp16 w8a8 w4a8 w4a16 w8a8-naive w4a16-q4)
models=(mamba1-brown mamba2-brown mamba2-groups-brown)
pairs=()
for r in "${recipes[@]}"; do for m in "${models[@]}"; do pairs+=("models/$m=$ENG/$m-$r.mamba"); done; done
build_engines() {
  mkdir -p "$ENG"
  local r m bad=0 i
  for r in "${recipes[@]}"; do
    local pids=() names=()
    local quant=${r%-q4} extra=()
    [ "$quant" = "$r" ] || extra=(--embedding q4)
    for m in "${models[@]}"; do
      node bin/mamba-edge.js build "models/$m" --quant "$quant" "${extra[@]}" --calib data/brown/calib.txt --calib-samples 32 --calib-len 256 \
        --out "$ENG/$m-$r.mamba" --force > "$ENG/$m-$r.log" 2>&1 &
      pids+=($!)
      names+=("$m-$r")
    done
    for i in "${!pids[@]}"; do
      if ! wait "${pids[$i]}"; then
        echo "build of ${names[$i]} failed:"
        tail -5 "$ENG/${names[$i]}.log"
        bad=1
      fi
    done
  done
  ls "$ENG"
  return "$bad"
}

# the GPU tests of the suite; MAMBA_EDGE_REQUIRE_GPU=1 turns their skips into failures
cuda_tests() {
  if [ ! -d node_modules/vitest ]; then
    why="vitest was not packed (scripts/gpu/pack-node.sh --no-vitest)"
    echo "skipped: $why"
    printf '{"skipped": "%s"}\n' "$why" > "$OUTDIR/vitest.json"
    return 0
  fi
  MAMBA_EDGE_REQUIRE_GPU=1 node node_modules/vitest/vitest.mjs run test/cuda.test.ts \
    --reporter=default --reporter=json --outputFile.json="$OUTDIR/vitest.json"
}

step node "" unpack_node
step build "" build_native
[ "$KERNELS" = 0 ] || step kernels "build" python3 scripts/gpu/kernel_check.py "$LIB" "$OUTDIR/kernels.json"
step calibration "node build" node scripts/gpu/calib-check.mjs models/mamba1-brown models/mamba2-brown models/mamba2-groups-brown
step engines "node" build_engines
step e2e "node build" node scripts/gpu/e2e_check.mjs "$OUTDIR/e2e.json" "${pairs[@]}"
step vitest "node build" cuda_tests
step trt-check "" bash scripts/gpu/trt-check.sh
[ "$BENCH" = 0 ] || step bench "build" python3 scripts/gpu/bench.py "$LIB" "$OUTDIR/bench.json" "${shapes[@]}"

echo -e "\n== report ($(date +%T))" | tee -a "$LOG"
set +e
python3 scripts/gpu/report.py "$OUTDIR" 2>&1 | tee -a "$LOG"
rc=$?
set -e
for n in "${!status[@]}"; do [ "${status[$n]}" = 0 ] || rc=1; done
exit "$rc"
