#!/usr/bin/env bash
# Reproduces every table in docs/benchmarks.md: builds the release binary,
# prints the machine, then runs each benchmark pipeline and prints its summary.
# Usage: scripts/bench.sh [events]   (default 20,000,000 Nexmark events)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-20000000}
cargo build --release -p millrace >/dev/null
BIN=target/release/millrace

echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "rustc: $(rustc --version)"
echo "profile: release (opt-level 3, codegen-units 4, line-tables debug info)"
echo

run() {
  echo "### $*"
  echo '```'
  echo "\$ millrace demo $*"
  "$BIN" demo "$@" | sed -n '/── run summary/,$p'
  echo '```'
  echo
}

echo "## throughput (as fast as possible, discard sink)"
for p in 1 2; do
  run --query passthrough --sink discard --events "$EVENTS" --parallelism "$p" --workers "$p"
done
for p in 1 2; do
  run --query tumble --sink discard --events "$EVENTS" --event-rate 100000 --parallelism "$p" --workers "$p"
done

echo "## latency (open loop: each event due at start + i/rate; latency from its due time)"
for rate in 200000 1000000; do
  for p in 1 2; do
    run --query passthrough --sink discard --events $((rate * 10)) --rate "$rate" --parallelism "$p" --workers "$p"
    run --query tumble --sink discard --events $((rate * 10)) --event-rate 100000 --rate "$rate" --parallelism "$p" --workers "$p"
  done
done
