#!/usr/bin/env bash
# Builds engines of published shapes (random weights) with `mamba-edge build --record`, which writes
# each build's time, phases and peak memory to bench/results/. Usage:
#   scripts/build-sizes.sh [SHAPE:RECIPE ...] [-- more build options]
# (default mamba-1.4b:w8a8 mamba-2.8b:w4a16). CORES=N pins the builds to N cores (taskset), as a
# stand-in for a smaller machine; NOTE=... is written into the records' machine.note.
set -euo pipefail
cd "$(dirname "$0")/.."
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#builds[@]} -gt 0 ] || builds=(mamba-1.4b:w8a8 mamba-2.8b:w4a16)
mkdir -p bench/tmp
# calibration tokens for models without a tokenizer: a fixed pseudo-random stream
tokens=bench/tmp/calib-random.txt
node -e 'let x=1,s=[];for(let i=0;i<65536;i++){x=(Math.imul(x,1103515245)+12345)>>>0;s.push(x%50280)}console.log(s.join(" "))' > "$tokens"
pin=()
if [ -n "${CORES:-}" ]; then pin=(taskset -c "0-$((CORES - 1))"); fi
for b in "${builds[@]}"; do
  shape=${b%%:*} recipe=${b##*:}
  echo "== build --random $shape --quant $recipe $*" >&2
  MAMBA_EDGE_RECORD_NOTE="${NOTE:-}" "${pin[@]}" node bin/mamba-edge.js build --random "$shape" --quant "$recipe" \
    --calib-tokens "$tokens" --out "bench/tmp/$shape-$recipe.mamba" --force --record "$@"
done
