#!/usr/bin/env bash
# Kafka → Nexmark q0 / q7 → Kafka (docs/benchmarks.md, "Kafka"), against the
# broker scripts/services/kafka.sh runs on this machine:
#
#  1. the broker's own limits: its producer-perf and consumer-perf tools;
#  2. throughput: each query reads a filled 4-partition topic to its end
#     (scan_bounded = 'latest') as fast as it can, at_least_once (no
#     checkpoints) and exactly_once (checkpoints every 1 s);
#  3. end-to-end latency at 50% of that throughput: `millrace kafka produce`
#     writes open-loop at the rate, each message stamped with the time it was
#     due, which is also its event time (`date_time`), as in a live stream.
#     `millrace kafka latency` reads the output read_committed and records,
#     per message, visible − a time carried in it:
#       q0: `sent`, the input's stamp;
#       q7: `closed`, the window's end + the 4 s watermark delay: the moment
#           the first input that closes the window was due.
#     q0 is watched until every output row is seen; q7 runs Q7_SECONDS so
#     that a few windows close.
#
#   scripts/bench-kafka.sh [BINARY]
#   EVENTS=4000000 SECONDS_AT_RATE=10 SETTINGS="SET parallelism = 1;" \
#       QUERIES="q0" DELIVERIES="at_least_once" scripts/bench-kafka.sh target/perf/millrace
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/millrace}
EVENTS=${EVENTS:-4000000}
SECONDS_AT_RATE=${SECONDS_AT_RATE:-10}
Q7_SECONDS=${Q7_SECONDS:-45}
SETTINGS=${SETTINGS:-}
QUERIES=${QUERIES:-"q0 q7"}
DELIVERIES=${DELIVERIES:-"at_least_once exactly_once"}
BROKER_ALONE=${BROKER_ALONE:-yes}
K=scripts/services/kafka.sh
kafka=$("$K" start)
eval "$kafka"
B=$MILLRACE_KAFKA_BOOTSTRAP
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TAG=bench-$(date +%s)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), binary $BIN, broker $B"
echo "settings: ${SETTINGS:-none}"
"$BIN" gen nexmark --kind bid --events "$EVENTS" --out "$WORK/bids.jsonl"
lines=$(wc -l <"$WORK/bids.jsonl")
record=$(($(wc -c <"$WORK/bids.jsonl") / lines))
echo "input: $lines bids, $record bytes each on average"

if [ "$BROKER_ALONE" = yes ]; then
    echo "## the broker alone ($record-byte records, 4 partitions)"
    "$K" topic-create "$TAG-perf" 4 2>/dev/null
    "$K" run-class org.apache.kafka.tools.ProducerPerformance --bootstrap-server "$B" \
        --topic "$TAG-perf" --num-records "$lines" --record-size "$record" --throughput -1 \
        --command-property linger.ms=5 2>/dev/null | tail -1
    "$K" run-class org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$B" \
        --topic "$TAG-perf" --num-records "$lines" 2>/dev/null | tail -1
fi

echo "## millrace kafka produce, unpaced"
"$K" topic-create "$TAG-bids" 4 2>/dev/null
"$BIN" kafka produce --bootstrap "$B" --topic "$TAG-bids" --file "$WORK/bids.jsonl"

# query delivery input output bounded -> the pipeline file
pipeline() {
    local q=$1 delivery=$2 input=$3 output=$4 bounded=$5 checkpoints="" scan
    if [ "$delivery" = exactly_once ]; then
        checkpoints="SET checkpoint_interval = '1s'; SET checkpoint_dir = '$WORK/chk-$output';"
    fi
    if [ "$bounded" = yes ]; then
        scan="scan_bounded = 'latest'"
    else
        scan="scan_startup = 'latest'"
    fi
    cat <<SQL
$SETTINGS
$checkpoints
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR,
                  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
    WITH (connector = 'kafka', topic = '$input', bootstrap_servers = '$B', $scan,
          metadata = 'timestamp AS kts', max_future = 'none');
CREATE TABLE out WITH (connector = 'kafka', topic = '$output', bootstrap_servers = '$B',
                       delivery = '$delivery');
SQL
    case $q in
    q0) echo "INSERT INTO out SELECT auction, bidder, price, channel, url, date_time, extra,
              CAST(kts AS BIGINT) AS sent FROM bid;" ;;
    q7) cat <<'SQL'
CREATE VIEW max_price AS
SELECT tumble(date_time, INTERVAL '10' SECOND) AS window, max(price) AS price
FROM bid GROUP BY tumble(date_time, INTERVAL '10' SECOND);
INSERT INTO out
SELECT b.auction, b.price, b.bidder, b.date_time, b.extra, CAST(b.kts AS BIGINT) AS sent,
       CAST(m.window['end'] AS BIGINT) + 4000 AS closed
FROM bid b JOIN max_price m
  ON tumble(b.date_time, INTERVAL '10' SECOND) = m.window AND b.price = m.price;
SQL
    ;;
    esac
}

summary() { # label < json summary -> one line; prints the throughput to fd 3
    python3 -c '
import json, sys
s = json.load(sys.stdin)
c = s.get("checkpoints") or {}
k = c.get("committed_latency_ns", {})
ms = lambda ns: "%.1f" % (ns / 1e6) if ns else "-"
print("%-24s %9d events %8.0f K/s (%7.0f K/s per core)  committed p50 %s p99 %s ms" % (
    sys.argv[1], s["events"], s["throughput"] / 1e3, s["throughput_per_core"] / 1e3,
    ms(k.get("p50")), ms(k.get("p99"))))
print(int(s["throughput"]), file=sys.stderr)
' "$1" 2>"$WORK/rate"
}

for q in $QUERIES; do
    for delivery in $DELIVERIES; do
        out="$TAG-$q-$delivery-max"
        "$K" topic-create "$out" 4 2>/dev/null
        pipeline "$q" "$delivery" "$TAG-bids" "$out" yes >"$WORK/max.sql"
        "$BIN" run "$WORK/max.sql" --json 2>/dev/null | summary "$q $delivery max"
        rate=$(($(cat "$WORK/rate") / 2))
        if [ "$q" = q7 ]; then
            field=closed seconds=$Q7_SECONDS
        else
            field=sent seconds=$SECONDS_AT_RATE
        fi
        n=$((rate * seconds))
        # The input repeats as needed: its event times are rewritten anyway.
        while [ "$(wc -l <"$WORK/bids.jsonl")" -lt "$n" ]; do
            cat "$WORK/bids.jsonl" "$WORK/bids.jsonl" >"$WORK/twice.jsonl"
            mv "$WORK/twice.jsonl" "$WORK/bids.jsonl"
        done
        head -n "$n" "$WORK/bids.jsonl" >"$WORK/paced.jsonl"
        input="$TAG-$q-$delivery-in"
        out="$TAG-$q-$delivery-out"
        "$K" topic-create "$input" 4 2>/dev/null
        "$K" topic-create "$out" 4 2>/dev/null
        pipeline "$q" "$delivery" "$input" "$out" no >"$WORK/rate.sql"
        # q0's watcher stops once it has every row (the pipeline's output is
        # its input); q7's when the input has ended and the last window that
        # input closes has had 10 s to appear.
        expect=()
        [ "$q" = q0 ] && expect=(--expect "$n")
        "$BIN" run "$WORK/rate.sql" --json --max-seconds "$((seconds + 60))" >"$WORK/rate.json" 2>/dev/null &
        run=$!
        "$BIN" kafka latency --bootstrap "$B" --topic "$out" --field "$field" \
            --seconds "$((seconds + 15))" "${expect[@]}" >"$WORK/latency.txt" &
        watch=$!
        sleep 3 # both have assigned their partitions (at the end) before the first message
        "$BIN" kafka produce --bootstrap "$B" --topic "$input" --file "$WORK/paced.jsonl" \
            --rate "$rate" --event-time date_time
        wait "$watch"
        kill -INT "$run"
        wait "$run"
        summary "$q $delivery @$rate/s" <"$WORK/rate.json"
        sed "s/^/    /" "$WORK/latency.txt"
    done
done
