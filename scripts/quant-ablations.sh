#!/usr/bin/env bash
# The quantizer's options side by side on the demo models: each variant built with the default
# calibration (128 × 512 tokens of data/brown/calib.txt) and scored on the held-out text with
# `mamba-edge eval --out` (perplexity, next-token and last-word accuracy, weight bytes), one record
# per engine under bench/results/. Engines are named MODEL-RECIPE-VARIANT.mamba in bench/tmp/; the
# tables of docs/quantization.md are written from the records by scripts/docs-tables.mjs.
# Usage: scripts/quant-ablations.sh [MODEL ...]   (default: every demo model in models/)
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
[ ${#models[@]} -gt 0 ] || mapfile -t models < <(ls models | grep -- '-brown$')
cli() { node bin/mamba-edge.js "$@"; }
mkdir -p bench/tmp
variants=(
  "w4a16-rtn:w4a16:--rtn"
  "w4a16-absmax:w4a16:--group-scales absmax"
  "w4a16-actorder:w4a16:--act-order"
  "w4a16-qinputs:w4a16:--gptq-inputs quantized"
  "w4a16-q4emb:w4a16:--embedding q4"
  "w4a8-q4emb:w4a8:--embedding q4"
)
for m in "${models[@]}"; do
  [ -f "models/$m/config.json" ] || { echo "models/$m: no such demo model" >&2; exit 2; }
  extra=("${variants[@]}")
  # Mamba-2: Quamba2's SSM-input scales against one per tensor, under both int8-activation recipes
  if grep -q "\"mamba2\"" "models/$m/config.json"; then
    extra+=("w8a8-quamba2:w8a8:--ssm-scales quamba2" "w4a8-pertensor:w4a8:--ssm-scales per-tensor")
  fi
  for v in "${extra[@]}"; do
    IFS=: read -r name recipe flags <<< "$v"
    e=bench/tmp/$m-$name.mamba
    # shellcheck disable=SC2086
    cli build "models/$m" --quant "$recipe" $flags --calib data/brown/calib.txt --out "$e" --force
    cli eval --engine "$e" --text data/brown/heldout.txt --out
  done
done
