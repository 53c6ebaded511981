#!/usr/bin/env bash
# Builds every recipe for both demo models, scores each engine on the Brown held-out text and
# benchmarks it; then does the same for a random mamba-130m (build time and speed only). Every
# figure goes to bench/results/ as JSON; `node scripts/results-table.mjs` puts them in the README.
# Usage: bash scripts/bench-engines.sh [all|demo|engines|130m|speed]   (all: about 40 minutes on 2
# cores; engines: the demo models' engines without the reference's slow eval; speed: only `bench`,
# on the reference and on engines already built)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
cli() { node bin/mamba-edge.js "$@"; }
mkdir -p bench/tmp
if [ "$what" = demo ] || [ "$what" = engines ] || [ "$what" = all ]; then
  for m in mamba1-brown mamba2-brown mamba2-groups-brown; do
    [ -d "models/$m" ] || continue
    if [ "$what" != engines ]; then
      cli eval --model models/$m --text data/brown/heldout.txt --out
      cli bench --model models/$m --out
    fi
    for q in fp16 w8a8 w4a8 w4a16 w8a8-naive; do
      e=bench/tmp/$m-$q.mamba
      cli build models/$m --quant $q --calib data/brown/calib.txt --out $e --force --record
      cli eval --engine $e --text data/brown/heldout.txt --out
      cli bench --engine $e --out
    done
  done
fi
if [ "$what" = speed ]; then
  for m in mamba1-brown mamba2-brown; do
    cli bench --model models/$m --out
    for q in fp16 w8a8 w4a8 w4a16 w8a8-naive; do cli bench --engine bench/tmp/$m-$q.mamba --out; done
  done
  cli bench --random mamba-130m --gen-tokens 16 --out
  for q in fp16 w8a8 w4a16; do cli bench --engine bench/tmp/mamba-130m-$q.mamba --out; done
fi
if [ "$what" = 130m ] || [ "$what" = all ]; then
  # calibration tokens for a model without a tokenizer: a fixed pseudo-random stream
  node -e 'let x=1,s=[];for(let i=0;i<65536;i++){x=(Math.imul(x,1103515245)+12345)>>>0;s.push(x%50280)}console.log(s.join(" "))' > bench/tmp/calib-130m.txt
  cli bench --random mamba-130m --gen-tokens 16 --out
  cli bench --random mamba2-130m --gen-tokens 16 --out
  for q in fp16 w8a8 w4a16; do
    e=bench/tmp/mamba-130m-$q.mamba
    cli build --random mamba-130m --quant $q --calib-tokens bench/tmp/calib-130m.txt --out $e --force --record
    cli bench --engine $e --out
  done
fi
