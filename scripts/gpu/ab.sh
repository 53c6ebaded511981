#!/usr/bin/env bash
# A/B of builds of engines/native on the GPU machine, side by side in one run: each build benchmarks
# the same engines (scripts/gpu/bench.py with ME_KEEP_ENGINES, no transformers) in turn, ROUNDS
# times, and one JSON file holds every run. Where git is (here), put the other sources beside the tree
# first; the GPU machine gets them as a carried folder:
#   scripts/gpu/ab.sh --prepare REV            # writes bench/tmp/ab-REV/engines/native (git-ignored)
#   scripts/gpu/ab.sh [--rounds 2] [--profile] OUT.json NAME=SRC_DIR ... [-- shape ...]
# SRC_DIR is a folder holding engines/native (. for this tree; give its commit as COMMIT=…, the
# prepared folders name theirs). --profile adds each build's kernel
# times per decode step (PyTorch profiler, MAMBA_EDGE_PDL=0 so kernels run one at a time) as a
# separate run. ME_RECIPES picks recipes as for bench.py.
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = --prepare ]; then
  rev=${2:?--prepare needs a git revision}
  dir=bench/tmp/ab-$(git rev-parse --short "$rev") || exit 1
  rm -rf "$dir" && mkdir -p "$dir" && git archive "$rev" engines/native | tar -x -C "$dir" || exit 1
  git rev-parse --short "$rev" > "$dir/COMMIT"  # named in the A/B record
  echo "$dir (carry it to the GPU machine)"
  exit 0
fi
ROUNDS=2
PROFILE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --profile) PROFILE=1; shift ;;
    *) break ;;
  esac
done
OUTFILE=${1:?usage: ab.sh [--rounds N] [--profile] OUT.json NAME=SRC_DIR ... [-- shape ...]}
shift
builds=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do builds+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(mamba-130m mamba-1.4b mamba-2.8b)
[ ${#builds[@]} -ge 2 ] || { echo "ab.sh: expected at least two NAME=SRC_DIR builds" >&2; exit 2; }
export PYTHONUNBUFFERED=1 ME_KEEP_ENGINES=1 ME_NO_TRANSFORMERS=1
tmp=$(mktemp -d)
for b in "${builds[@]}"; do
  src=${b#*=}
  [ -f "$src/engines/native/CMakeLists.txt" ] || { echo "ab.sh: $src has no engines/native/CMakeLists.txt" >&2; exit 2; }
done
for b in "${builds[@]}"; do
  name=${b%%=*} src=${b#*=}
  echo "== build $name ($src)"
  cmake -S "$src/engines/native" -B "$tmp/build-$name" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" > "$tmp/$name.log" 2>&1 &&
    cmake --build "$tmp/build-$name" -j 16 >> "$tmp/$name.log" 2>&1 || { tail -20 "$tmp/$name.log"; exit 1; }
done
run() {  # name round [env...]
  local name=$1 round=$2
  shift 2
  echo "== $name, round $round $*"
  env "$@" python3 scripts/gpu/bench.py "$tmp/build-$name/libmamba_edge.so" "$tmp/run-$name-$round.json" "${shapes[@]}" 2>&1 | grep -v -i warn
}
for r in $(seq 1 "$ROUNDS"); do
  for b in "${builds[@]}"; do run "${b%%=*}" "$r"; done
done
if [ $PROFILE = 1 ]; then
  for b in "${builds[@]}"; do run "${b%%=*}" profile MAMBA_EDGE_PDL=0 ME_PROFILE=1; done
fi
python3 - "$OUTFILE" "$tmp" "$ROUNDS" "${builds[@]}" <<'EOF'
import json, os, sys, datetime
out, tmp, rounds, builds = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
runs = []
for r in [str(i) for i in range(1, rounds + 1)] + ["profile"]:
    for b in builds:
        name = b.split("=", 1)[0]
        p = os.path.join(tmp, f"run-{name}-{r}.json")
        if os.path.exists(p):
            src = b.split("=", 1)[1]
            cf = os.path.join(src, "COMMIT")  # written by --prepare; the tree itself: COMMIT from the environment
            commit = open(cf).read().strip() if os.path.exists(cf) else (os.environ.get("COMMIT") if src == "." else None)
            runs.append({"build": name, "source": src, "commit": commit, "round": r, **json.load(open(p))})
json.dump({"tool": "scripts/gpu/ab.sh", "date": datetime.date.today().isoformat(), "runs": runs}, open(out, "w"), indent=1)
print(f"wrote {out}: {len(runs)} runs")
EOF
