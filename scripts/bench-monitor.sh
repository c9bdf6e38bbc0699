#!/usr/bin/env bash
# What the live endpoint costs the workers (docs/observability.md): Nexmark
# q7 with the endpoint off, on but never fetched (`idle`: its sampler runs),
# and on with both /metrics and the dashboard's /api/state fetched every
# SCRAPE_EVERY seconds (the dashboard fetches /api/state once a second,
# Prometheus scrapes every 15 s), alternating in one sitting:
#   - throughput: as fast as the generator can feed it (EVENTS events);
#   - latency: open loop at RATE events/s for 8 s (latency_target 1 ms).
#
# CLIENT=python (default) fetches over one kept-alive connection from one
# process, as a browser does; CLIENT=curl starts a curl process per fetch.
#
# What the latency breakdown costs (docs/observability.md), endpoint off:
# `untraced` (latency_breakdown off), `off` (the default sampling), `every`
# (every batch traced: the cost of one trace, multiplied), and `base`
# (BASE=an older binary, to compare the plumbing itself).
#
#   scripts/bench-monitor.sh [BINARY]
#   ROUNDS=5 RATE=5000000 SCRAPE_EVERY=1 CLOSED=no CLIENT=curl VARIANTS="off idle on" scripts/bench-monitor.sh
#   VARIANTS="untraced off every" scripts/bench-monitor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/millrace}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-5000000}
EVENTS=${EVENTS:-40000000}
SCRAPE_EVERY=${SCRAPE_EVERY:-1}
CLIENT=${CLIENT:-python}
PORT=${PORT:-19464}
VARIANTS=${VARIANTS:-"off idle on"}
Q=queries/nexmark/q7.sql
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), binary $BIN"

# variant extra-args... -> one line of the summary
run() {
    local variant=$1
    shift
    local http=(--http off) scraper= bin=$BIN
    case "$variant" in
    untraced) http+=(--set latency_breakdown=off) ;;
    every) http+=(--set latency_breakdown=0.001us) ;;
    base) bin=${BASE:?set BASE to the binary to compare with} ;;
    esac
    if [ "$variant" = idle ]; then
        http=(--http "127.0.0.1:$PORT")
    fi
    if [ "$variant" = on ]; then
        http=(--http "127.0.0.1:$PORT")
        : >"$WORK/scrapes"
        if [ "$CLIENT" = curl ]; then
            (
                while sleep "$SCRAPE_EVERY"; do
                    if curl -sf "http://127.0.0.1:$PORT/metrics" >/dev/null &&
                        curl -sf "http://127.0.0.1:$PORT/api/state" >/dev/null; then
                        echo >>"$WORK/scrapes"
                    fi
                done
            ) &
        else
            python3 - "$PORT" "$SCRAPE_EVERY" "$WORK/scrapes" <<'PY' &
import http.client, sys, time
port, every, log = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
conn = None
while True:
    time.sleep(every)
    try:
        conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for path in ("/metrics", "/api/state"):
            conn.request("GET", path)
            conn.getresponse().read()
        with open(log, "a") as f:
            f.write("\n")
    except FileNotFoundError:
        break
    except OSError:
        conn = None
PY
        fi
        scraper=$!
    fi
    "$bin" run "$Q" --json "${http[@]}" "$@" 2>/dev/null >"$WORK/run.json" || true
    local scrapes=""
    if [ -n "$scraper" ]; then
        kill "$scraper" 2>/dev/null || true
        scrapes="  ($(wc -l <"$WORK/scrapes") scrapes)"
    fi
    python3 -c '
import json, sys
s = json.load(open(sys.argv[2]))
l = s["latency_ns"]
print("%-8s %7.2f M events/s  p50 %6.3f  p99 %6.3f  p99.9 %6.3f ms%s" % (
    sys.argv[1], s["throughput"] / 1e6, l["p50"] / 1e6, l["p99"] / 1e6, l["p999"] / 1e6,
    sys.argv[3]))
' "$variant" "$WORK/run.json" "$scrapes"
}

WORK=$(mktemp -d)
trap 'jobs -p | xargs -r kill 2>/dev/null; rm -rf "$WORK"' EXIT
if [ "${CLOSED:-yes}" = yes ]; then
    echo "## closed loop, $EVENTS events"
    for round in $(seq "$ROUNDS"); do
        for variant in $VARIANTS; do
            run "$variant" --set "bid.events=$EVENTS"
        done
    done
fi
echo "## open loop at $RATE events/s, 8 s, latency_target 1ms"
for round in $(seq "$ROUNDS"); do
    for variant in $VARIANTS; do
        run "$variant" --set "bid.events=$((RATE * 8))" --set "bid.rate=$RATE" \
            --set latency_target=1ms --set latency_warmup=500ms --max-seconds 12
    done
done
