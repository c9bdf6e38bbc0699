#!/usr/bin/env bash
# The cost of checkpoints (docs/benchmarks.md, "Checkpoints"): for each query,
# throughput as fast as possible and, at a fixed open-loop rate, end-to-end
# p99, latency to committed output, checkpoint duration and size, with
# checkpoint_interval off, 100ms, 1s and 10s, taken in turn in each round.
# Output goes to an exactly-once JSON-lines file sink in every variant.
#
#   scripts/bench-checkpoints.sh [BINARY] [ROUNDS]
#   QUERIES="q5:4000000 q7:8000000" SECONDS_AT_RATE=20 scripts/bench-checkpoints.sh
#
# QUERIES: query name and the open-loop rate (events/s) of its latency runs
# (about half its sustained rate). Restore time is the "read in" of the
# line a restored run prints.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/millrace}
ROUNDS=${2:-3}
QUERIES=${QUERIES:-"q5:4000000 q7:8000000"}
SECONDS_AT_RATE=${SECONDS_AT_RATE:-20}
MAX_EVENTS=${MAX_EVENTS:-40000000}
INTERVALS=${INTERVALS:-"off 100ms 1s 10s"}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

run() { # query interval extra-settings... -> one JSON summary line on stdout
    local q=$1 interval=$2
    shift 2
    local dir="$WORK/$q-$interval"
    rm -rf "$dir"
    mkdir -p "$dir"
    local settings=(--set out.connector=file --set "out.path=$dir/out.jsonl")
    if [ "$interval" != off ]; then
        settings+=(--set "checkpoint_interval=$interval" --set "checkpoint_dir=$dir/chk" --fresh)
    fi
    "$BIN" run "queries/nexmark/$q.sql" --set latency_target=1ms "${settings[@]}" "$@" --json 2>"$dir/stderr"
}

summarize() { # label < json
    python3 -c '
import json, sys
s = json.load(sys.stdin)
c = s.get("checkpoints") or {}
d = c.get("duration_us", {})
k = c.get("committed_latency_ns", {})
ms = lambda ns: "%.2f" % (ns / 1e6) if ns else "-"
print("%-22s %8.2f M/s  p99 %8s ms  committed p50 %8s p99 %8s ms  chk %4s done %3s aborted  dur p50 %6s p99 %6s us  %8s bytes" % (
    sys.argv[1], s["throughput"] / 1e6, ms(s["latency_ns"]["p99"]), ms(k.get("p50")), ms(k.get("p99")),
    c.get("completed", "-"), c.get("aborted", "-"), d.get("p50", "-"), d.get("p99", "-"), c.get("latest_bytes", "-")))
' "$1"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), binary $BIN"
for round in $(seq "$ROUNDS"); do
    for entry in $QUERIES; do
        q=${entry%%:*}
        rate=${entry##*:}
        for interval in $INTERVALS; do
            run "$q" "$interval" --set "bid.events=$MAX_EVENTS" |
                summarize "r$round $q max $interval"
            run "$q" "$interval" --set "bid.rate=$rate" \
                --set "bid.events=$((rate * SECONDS_AT_RATE))" --set latency_warmup=1s |
                summarize "r$round $q @$rate $interval"
        done
    done
done
# Restore time: stop a run at 10 s and restore it.
for entry in $QUERIES; do
    q=${entry%%:*}
    rate=${entry##*:}
    dir="$WORK/$q-restore"
    mkdir -p "$dir"
    settings=(--set out.connector=file --set "out.path=$dir/out.jsonl"
        --set checkpoint_interval=1s --set "checkpoint_dir=$dir/chk"
        --set "bid.rate=$rate" --set "bid.events=$((rate * 20))")
    "$BIN" run "queries/nexmark/$q.sql" "${settings[@]}" --fresh --max-seconds 10 --json >/dev/null 2>&1
    "$BIN" run "queries/nexmark/$q.sql" "${settings[@]}" --max-seconds 1 --json 2>&1 >/dev/null |
        grep -m1 "restored checkpoint" | sed "s/^/$q: /"
done
