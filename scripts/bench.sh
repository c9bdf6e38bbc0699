#!/usr/bin/env bash
# Reproduces every table in docs/benchmarks.md: builds the binary with the
# `perf` profile (release with fat LTO and one codegen unit; ~22 min from
# scratch on 2 cores, see Cargo.toml), prints the machine, measures how often the machine takes a core away from
# a spinning thread, then runs `millrace bench` (Nexmark q0, q5, q7 for
# fixed batch sizes 1, 64, 1024, 8192, adaptive sources alone and the whole
# adaptive policy, five runs of each in turn, 8 s each at every load; keyed
# window state on 100k IoT devices). About 41 minutes once built (here).
# Usage: scripts/bench.sh [extra `millrace bench` options, e.g. --latency-seconds 2]
# Writes bench.json beside the Markdown it prints (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile perf --bin millrace >/dev/null 2>&1 \
  || cargo build --profile perf --bin millrace
# cpu_gaps runs a fixed loop and reads the clock: the release profile is enough.
cargo build --release -p millrace -p millrace-runtime --example cpu_gaps >/dev/null 2>&1 \
  || cargo build --release -p millrace -p millrace-runtime --example cpu_gaps
BIN=target/perf/millrace

echo "## Machine"
echo
echo "- cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "- rustc: $(rustc --version)"
echo "- profile: perf (release: opt-level 3, line-tables debug info; fat LTO, codegen-units 1), mimalloc keeping freed memory, without transparent huge pages (crates/millrace/src/allocator.rs)"
echo
echo "What the machine takes from threads that never yield (\`cpu_gaps\`, 3 s each: gaps of over 1 ms"
echo "between two ~1.5 µs units of fixed work, and 5 ms slots that finished under half the median slot's units):"
echo
echo '```'
echo "one spinning thread:"
target/release/examples/cpu_gaps 1 3
echo "two spinning threads:"
target/release/examples/cpu_gaps 2 3
echo '```'
echo
"$BIN" bench --json bench.json "$@"
