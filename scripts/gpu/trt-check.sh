#!/usr/bin/env bash
# The TensorRT plugins on a GPU without TensorRT: TensorRT 10.3's calling sequence reproduced, not
# TensorRT. Builds libmamba_edge_trt_plugins.so (engines/native, -DMAMBA_EDGE_TRT=ON) and
# scripts/gpu/trt_harness against TensorRT's headers only, runs every plugin of
# engines/native/trt/OPS.md in float32 and float16 through the harness, and compares every output
# with PyTorch float64 (scripts/gpu/trt_check.py). Needs nvcc, cmake and PyTorch; no TensorRT.
# Writes trt-check.json (the record) and trt-check.log to $OUT, or to bench/results/trt-check/
# when OUT is unset. Exit status 0 only when every case passes; the last line is "N passed, M failed".
#   scripts/gpu/trt-check.sh [SEED]
# TENSORRT_INCLUDE_DIR: the headers (default: ../shared/third_party/tensorrt-10.3/include, else
# .trt-headers/include, a copy carried with the working tree to a machine without ../shared; such a
# copy is ignored by git and never committed).
# TRT_CHECK_PREBUILT=DIR: take libmamba_edge_trt_plugins.so and trt_harness from DIR instead of
# building (they were built for this GPU elsewhere). CUDA_ARCHS: default "87;90".
set -euo pipefail
cd "$(dirname "$0")/../.."
OUTDIR=${OUT:-bench/results/trt-check}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/trt-check.log
export PATH=$PATH:/usr/local/cuda/bin PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
exec > >(tee "$LOG") 2>&1
echo "TensorRT 10.3's calling sequence reproduced, not TensorRT ($(date -u +%FT%TZ))"
if [ -n "${TRT_CHECK_PREBUILT:-}" ]; then
  BUILD=$(cd "$TRT_CHECK_PREBUILT" && pwd)
  echo "prebuilt: $BUILD"
else
  INC=${TENSORRT_INCLUDE_DIR:-}
  if [ -z "$INC" ]; then
    for d in ../shared/third_party/tensorrt-10.3/include .trt-headers/include; do
      if [ -f "$d/NvInferRuntime.h" ]; then INC=$(cd "$d" && pwd) && break; fi
    done
  fi
  if [ -z "$INC" ] || [ ! -f "$INC/NvInferRuntime.h" ]; then
    echo "trt-check: no TensorRT headers (NvInferRuntime.h) in \${TENSORRT_INCLUDE_DIR}, ../shared/third_party/tensorrt-10.3/include or .trt-headers/include" >&2
    exit 2
  fi
  BUILD=${TRT_CHECK_BUILD:-$(mktemp -d)}
  echo "headers: $INC; build: $BUILD"
  cmake -S engines/native -B "$BUILD" -DMAMBA_EDGE_TRT=ON -DTENSORRT_INCLUDE_DIR="$INC" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-87;90}" >/dev/null
  cmake --build "$BUILD" --target mamba_edge_trt_plugins -j "$(nproc)"
  nvcc -std=c++17 -O2 -Xcompiler=-Wall,-Wextra -isystem "$INC" -o "$BUILD/trt_harness" scripts/gpu/trt_harness.cpp -ldl
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
"$BUILD/trt_harness" "$BUILD/libmamba_edge_trt_plugins.so" "$DATA" ${1:+"$1"}
python3 scripts/gpu/trt_check.py "$DATA" "$OUTDIR/trt-check.json"
