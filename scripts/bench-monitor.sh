#!/usr/bin/env bash
# What the live endpoint costs the workers (docs/observability.md): Nexmark
# q7 with the endpoint off, against on and scraped every SCRAPE_EVERY seconds
# (a dashboard refreshes every second or two; Prometheus every 15 s),
# alternating in one sitting:
#   - throughput: as fast as the generator can feed it (EVENTS events);
#   - latency: open loop at RATE events/s for 8 s (latency_target 1 ms).
#
#   scripts/bench-monitor.sh [BINARY]     # ROUNDS=3 RATE=5000000 SCRAPE_EVERY=0.25
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/millrace}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-5000000}
EVENTS=${EVENTS:-40000000}
SCRAPE_EVERY=${SCRAPE_EVERY:-0.25}
PORT=${PORT:-19464}
Q=queries/nexmark/q7.sql
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), binary $BIN"

# variant extra-args... -> one line of the summary
run() {
    local variant=$1
    shift
    local http=(--http off) scraper=
    if [ "$variant" = on ]; then
        http=(--http "127.0.0.1:$PORT")
        : >"$WORK/scrapes"
        (
            while sleep "$SCRAPE_EVERY"; do
                if curl -sf "http://127.0.0.1:$PORT/metrics" >/dev/null; then
                    echo >>"$WORK/scrapes"
                fi
            done
        ) &
        scraper=$!
    fi
    "$BIN" run "$Q" --json "${http[@]}" "$@" 2>/dev/null >"$WORK/run.json"
    local scrapes=""
    if [ -n "$scraper" ]; then
        kill "$scraper" 2>/dev/null || true
        scrapes="  ($(wc -l <"$WORK/scrapes") scrapes)"
    fi
    python3 -c '
import json, sys
s = json.load(open(sys.argv[2]))
l = s["latency_ns"]
print("%-4s %7.2f M events/s  p50 %6.3f  p99 %6.3f  p99.9 %6.3f ms%s" % (
    sys.argv[1], s["throughput"] / 1e6, l["p50"] / 1e6, l["p99"] / 1e6, l["p999"] / 1e6,
    sys.argv[3]))
' "$variant" "$WORK/run.json" "$scrapes"
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "## closed loop, $EVENTS events"
for round in $(seq "$ROUNDS"); do
    for variant in off on; do
        run "$variant" --set "bid.events=$EVENTS"
    done
done
echo "## open loop at $RATE events/s, 8 s, latency_target 1ms"
for round in $(seq "$ROUNDS"); do
    for variant in off on; do
        run "$variant" --set "bid.events=$((RATE * 8))" --set "bid.rate=$RATE" \
            --set latency_target=1ms --set latency_warmup=500ms --max-seconds 12
    done
done
