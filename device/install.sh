#!/usr/bin/env bash
# Installs mamba-edge on a Jetson (aarch64, JetPack 6.x, Ubuntu 22.04) as a systemd service.
# Idempotent: running it again updates the package and the unit, keeps config.json, env, the broker's
# password file and the session states.
#
#   sudo device/install.sh [--broker local|lan|none] [--broker-port N] [--node NAME]
#   device/install.sh --prefix DIR ...   everything under DIR, no systemctl, no users (staging, tests)
#   device/install.sh --dry-run ...      print every action, change nothing
#   --engine DIR: the engine package to serve (default: the demo model's w8a8 engine, built when
#   missing; --build-engine rebuilds it, --no-build-engine never builds); --no-native: do not build
#   engines/native (copy a built one)
#   sudo device/install.sh --uninstall [--purge]   remove; session states stay unless --purge
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE="$SRC/device"
ROOT=""
DRY=0
UNINSTALL=0
PURGE=0
BROKER=local
BROKER_PORT=1883
BUILD_ENGINE=auto
NATIVE=1
NO_START=0
NODE_NAME=""
ENGINE=""

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() {
  echo "install.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) ROOT=${2:?--prefix needs a directory}; shift ;;
    --dry-run) DRY=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    --broker) BROKER=${2:?--broker needs local, lan or none}; shift ;;
    --broker-port) BROKER_PORT=${2:?--broker-port needs a port}; shift ;;
    --node) NODE_NAME=${2:?--node needs a name}; shift ;;
    --engine) ENGINE=${2:?--engine needs an engine package directory}; shift ;;
    --build-engine) BUILD_ENGINE=1 ;;
    --no-build-engine) BUILD_ENGINE=0 ;;
    --no-start) NO_START=1 ;;
    --no-native) NATIVE=0 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case "$BROKER" in local | lan | none) ;; *) die "--broker: expected local, lan or none, found $BROKER" ;; esac
if ! [[ "$BROKER_PORT" =~ ^[0-9]+$ ]] || [ "$BROKER_PORT" -lt 1 ] || [ "$BROKER_PORT" -gt 65535 ]; then
  die "--broker-port: expected 1-65535, found $BROKER_PORT"
fi
if [ -n "$ROOT" ]; then
  [ "$DRY" = 1 ] || mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" 2>/dev/null && pwd || echo "$ROOT")
fi

# where things go (under ROOT with --prefix)
PREFIX="$ROOT/opt/mamba-edge"
CONFDIR="$ROOT/etc/mamba-edge"
UNITDIR="$ROOT/etc/systemd/system"
STATEDIR="$ROOT/var/lib/mamba-edge"
ENGINEDIR="$PREFIX/models/engines"
MOSQ_CONFD="$ROOT/etc/mosquitto/conf.d"
MOSQ_DIR="$ROOT/etc/mosquitto/mamba-edge"
SYSTEMD=1
[ -n "$ROOT" ] && SYSTEMD=0

say() { echo "install.sh: $*"; }
# every change goes through run: printed, and skipped with --dry-run
run() {
  echo "+ $*"
  [ "$DRY" = 1 ] || "$@"
}
# writes stdin to a file (printed as one action)
write() {
  local file=$1 mode=$2
  if [ "$DRY" = 1 ]; then
    echo "+ write $file (mode $mode)"
    cat >/dev/null
  else
    cat >"$file.new"
    chmod "$mode" "$file.new"
    mv -f "$file.new" "$file"
    echo "+ wrote $file"
  fi
}
fill() {
  sed -e "s|@NODE@|$NODE_BIN|g" -e "s|@PREFIX@|$PREFIX|g" -e "s|@CONFDIR@|$CONFDIR|g" \
    -e "s|@ENGINEDIR@|$ENGINEDIR|g" -e "s|@PORT@|$BROKER_PORT|g" -e "s|@MOSQ_DIR@|$MOSQ_DIR|g" \
    -e "s|@MOSQ_CONFD@|$MOSQ_CONFD|g" -e "s|@PREFIX_T@|mamba-edge|g" -e "s|@NODE_NAME@|$NODE_NAME|g" "$1"
}

# ------------------------------------------------------------------ uninstall
if [ "$UNINSTALL" = 1 ]; then
  if [ "$SYSTEMD" = 1 ] && command -v systemctl >/dev/null; then
    run systemctl disable --now mamba-edge.service || true
  fi
  run rm -f "$UNITDIR/mamba-edge.service"
  [ "$SYSTEMD" = 1 ] && command -v systemctl >/dev/null && run systemctl daemon-reload
  run rm -rf "$PREFIX"
  run rm -f "$MOSQ_CONFD/mamba-edge.conf"
  run rm -rf "$MOSQ_DIR"
  if [ "$PURGE" = 1 ]; then
    run rm -rf "$CONFDIR" "$STATEDIR"
  else
    say "kept $CONFDIR and the session states in $STATEDIR (--purge removes them)"
  fi
  exit 0
fi

# ------------------------------------------------------------------ checks
missing=0
need() {
  echo "install.sh: missing: $1" >&2
  echo "  fix: $2" >&2
  missing=1
}
NODE_BIN=$(command -v node || true)
if [ -z "$NODE_BIN" ]; then
  need "Node.js 20 or newer" "curl -fsSL https://deb.nodesource.com/setup_20.x | sudo -E bash - && sudo apt-get install -y nodejs"
else
  NODE_MAJOR=$("$NODE_BIN" -p 'process.versions.node.split(".")[0]')
  [ "$NODE_MAJOR" -ge 20 ] || need "Node.js 20 or newer (found $("$NODE_BIN" --version))" \
    "install Node 20 from https://deb.nodesource.com (JetPack's Ubuntu ships Node 12)"
fi
ARCH=$(uname -m)
if [ -r /etc/nv_tegra_release ]; then
  L4T=$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p' /etc/nv_tegra_release)
  say "L4T ${L4T:-unknown} on $ARCH"
  case "$L4T" in 36.*) ;; *) echo "install.sh: warning: L4T ${L4T:-?} is not JetPack 6 (L4T 36.x); backend cuda/trt may not load" >&2 ;; esac
else
  say "not a Jetson (no /etc/nv_tegra_release; $ARCH): backend ort (CPU) unless a CUDA GPU is found"
fi
NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
if [ -n "$NVCC" ]; then
  say "CUDA $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
elif [ -r /etc/nv_tegra_release ]; then
  echo "install.sh: warning: no nvcc: the native library is not built (fix: sudo apt-get install nvidia-jetpack)" >&2
fi
TRT=$(ldconfig -p 2>/dev/null | sed -n 's/.*libnvinfer\.so\.\([0-9]*\) .*/\1/p' | head -n1)
if [ -n "$TRT" ]; then
  say "TensorRT libnvinfer.so.$TRT"
elif [ -r /etc/nv_tegra_release ]; then
  echo "install.sh: warning: TensorRT not found (no libnvinfer.so.10): backend trt unavailable (fix: sudo apt-get install tensorrt)" >&2
fi
if [ "$BROKER" != none ] && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  need "mosquitto (for --broker $BROKER)" "sudo apt-get install -y mosquitto mosquitto-clients, or --broker none"
fi
if [ "$BROKER" = lan ] && ! command -v mosquitto_passwd >/dev/null; then
  need "mosquitto_passwd (for --broker lan)" "sudo apt-get install -y mosquitto"
fi
[ -f "$SRC/dist/runtime/cli/main.js" ] || need "the compiled package ($SRC/dist)" "run npm ci (or npm run build) in $SRC first"
if [ "$SYSTEMD" = 1 ] && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
  need "root" "run with sudo, or use --prefix DIR to stage into a directory"
fi
[ "$missing" = 0 ] || exit 1
[ -n "$NODE_NAME" ] || NODE_NAME=$(hostname | tr '/+# ' '----')

# ------------------------------------------------------------------ the package
run mkdir -p "$PREFIX" "$CONFDIR" "$UNITDIR" "$STATEDIR/sessions"
for d in bin dist data; do
  [ -e "$SRC/$d" ] || continue
  run rm -rf "${PREFIX:?}/$d"
  run cp -a "$SRC/$d" "$PREFIX/$d"
done
# the models, but not models/engines: engines are built here and kept across reinstalls
run mkdir -p "$ENGINEDIR"
for m in "$SRC"/models/*/; do
  m=$(basename "$m")
  [ "$m" != engines ] || continue
  run rm -rf "${PREFIX:?}/models/$m"
  run cp -a "$SRC/models/$m" "$PREFIX/models/$m"
done
for f in package.json package-lock.json README.md; do
  [ -e "$SRC/$f" ] && run cp -a "$SRC/$f" "$PREFIX/$f"
done
run mkdir -p "$PREFIX/engines/native" "$PREFIX/node_modules"
for d in kernels runner include trt CMakeLists.txt; do
  [ -e "$SRC/engines/native/$d" ] && run cp -a "$SRC/engines/native/$d" "$PREFIX/engines/native/"
done
if [ -d "$SRC/node_modules" ] && command -v npm >/dev/null; then
  # the production dependencies only
  mapfile -t deps < <(cd "$SRC" && { npm ls --omit=dev --all --parseable 2>/dev/null || true; } | tail -n +2 | sed "s|^$SRC/||" | grep -v '/node_modules/.*/node_modules/')
  for dep in "${deps[@]}"; do
    run mkdir -p "$PREFIX/$(dirname "$dep")"
    run rm -rf "${PREFIX:?}/$dep"
    run cp -a "$SRC/$dep" "$PREFIX/$dep"
  done
else
  run sh -c "cd '$PREFIX' && npm ci --omit=dev --ignore-scripts"
fi

# native library for the Orin's GPU (sm_87), when CUDA is here
if [ "$NATIVE" = 1 ] && [ -n "$NVCC" ] && command -v cmake >/dev/null; then
  ARCHS=87
  [ -r /etc/nv_tegra_release ] || ARCHS=native
  run cmake -S "$PREFIX/engines/native" -B "$PREFIX/engines/native/build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCHS"
  run cmake --build "$PREFIX/engines/native/build" -j "$(nproc)"
elif [ -f "$SRC/engines/native/build/libmamba_edge.so" ]; then
  run mkdir -p "$PREFIX/engines/native/build"
  for lib in "$SRC"/engines/native/build/libmamba_edge*.so; do run cp -a "$lib" "$PREFIX/engines/native/build/"; done
fi

# the default engine (w8a8 of the bundled demo model): built now, since the service's package
# directory is read-only to it
DEFAULT_ENGINE="$ENGINEDIR/mamba2-brown-w8a8.mamba"
# auto: built unless it is there and `inspect` passes it (this version's format, every file intact)
if [ -z "$ENGINE" ] && { [ "$BUILD_ENGINE" = 1 ] || { [ "$BUILD_ENGINE" = auto ] &&
  ! "$NODE_BIN" "$PREFIX/bin/mamba-edge.js" inspect "$DEFAULT_ENGINE" >/dev/null 2>&1; }; }; then
  say "building the default engine $DEFAULT_ENGINE (w8a8 of the demo model)"
  run "$NODE_BIN" "$PREFIX/bin/mamba-edge.js" build "$PREFIX/models/mamba2-brown" --quant w8a8 \
    --calib "$PREFIX/data/brown/calib.txt" --out "$DEFAULT_ENGINE" --force
fi
[ -n "$ENGINE" ] || ENGINE=$DEFAULT_ENGINE
[ -e "$ENGINE" ] || [ "$DRY" = 1 ] || echo "install.sh: warning: $ENGINE does not exist (leave out --no-build-engine to build the default one)" >&2

# ------------------------------------------------------------------ config
case "$BROKER" in
  local | lan) MQTT="mqtt://127.0.0.1:$BROKER_PORT" ;;
  none) MQTT=embedded ;;
esac
if [ -f "$CONFDIR/config.json" ]; then
  say "kept $CONFDIR/config.json"
else
  {
    sed -e "s|@ENGINE@|$ENGINE|" -e "s|@MQTT@|$MQTT|" "$DEVICE/config.json" |
      if [ "$BROKER" = lan ]; then sed -e "s|^  \"mqtt\": \(.*\)$|  \"mqtt\": \1\n  \"username\": \"mamba-edge\",|"; else cat; fi |
      if [ "$BROKER" = none ]; then sed -e "s|^  \"mqtt\": \(.*\)$|  \"mqtt\": \1\n  \"brokerPort\": $BROKER_PORT,|"; else cat; fi |
      sed -e "s|^  \"topicPrefix\"|  \"node\": \"$NODE_NAME\",\n  \"topicPrefix\"|"
  } | write "$CONFDIR/config.json" 644
fi
if [ ! -f "$CONFDIR/env" ]; then
  printf '# MAMBA_EDGE_<SETTING>=value overrides config.json, e.g. MAMBA_EDGE_LOG_LEVEL=debug\n' | write "$CONFDIR/env" 640
fi

# ------------------------------------------------------------------ broker
if [ "$BROKER" != none ]; then
  run mkdir -p "$MOSQ_CONFD" "$MOSQ_DIR"
  fill "$DEVICE/mosquitto/$BROKER.conf" | write "$MOSQ_CONFD/mamba-edge.conf" 644
  if [ "$BROKER" = lan ]; then
    fill "$DEVICE/mosquitto/acl" | write "$MOSQ_DIR/acl" 644
    if [ ! -f "$MOSQ_DIR/passwd" ]; then
      PASS=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
      run touch "$MOSQ_DIR/passwd"
      run chmod 600 "$MOSQ_DIR/passwd"
      run mosquitto_passwd -b "$MOSQ_DIR/passwd" mamba-edge "$PASS"
      if [ "$DRY" = 1 ]; then echo "+ append MAMBA_EDGE_PASSWORD to $CONFDIR/env"; else echo "MAMBA_EDGE_PASSWORD=$PASS" >>"$CONFDIR/env"; fi
      say "broker user mamba-edge created; add robots with: mosquitto_passwd $MOSQ_DIR/passwd ROBOT_ID"
    fi
  fi
fi

# ------------------------------------------------------------------ the unit
fill "$DEVICE/mamba-edge.service" | write "$UNITDIR/mamba-edge.service" 644

if [ "$SYSTEMD" = 0 ]; then
  say "staged under $ROOT (no systemctl); run it with: $NODE_BIN $PREFIX/bin/mamba-edge.js serve --config $CONFDIR/config.json --state-dir $STATEDIR/sessions"
  exit 0
fi
if ! id mamba-edge >/dev/null 2>&1; then
  run useradd --system --home-dir /var/lib/mamba-edge --no-create-home --shell /usr/sbin/nologin mamba-edge
fi
for g in video render; do
  getent group "$g" >/dev/null && run usermod -aG "$g" mamba-edge
done
run chown -R mamba-edge:mamba-edge "$STATEDIR"
run chgrp mamba-edge "$CONFDIR/env"
[ "$BROKER" = lan ] && run chown mosquitto "$MOSQ_DIR/passwd"
run systemctl daemon-reload
if [ "$BROKER" != none ]; then run systemctl enable mosquitto.service && run systemctl restart mosquitto.service; fi
if [ "$NO_START" = 1 ]; then
  run systemctl enable mamba-edge.service
else
  run systemctl enable mamba-edge.service
  run systemctl restart mamba-edge.service
fi
say "done: systemctl status mamba-edge; journalctl -u mamba-edge -f; mamba-edge doctor: $NODE_BIN $PREFIX/bin/mamba-edge.js doctor"
