#!/usr/bin/env bash
# Accounting under hostile input (issue 29): a large JSON-lines file of
# Nexmark bids with 1% of its lines damaged in every way the file source
# refuses (cut short, wrong types, bent numbers, duplicate keys, deep
# nesting, far-future and unsupported times, oversize), read with
# on_error = 'dead_letter'. Every line must end in exactly one place:
# rows out + dead letters = lines in. Prints the counts and peak RSS.
#
#   scripts/check-bad-input.sh [BINARY] [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/millrace}
EVENTS=${2:-5000000}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$BIN" gen nexmark --events "$EVENTS" >"$WORK/clean.jsonl"
python3 - "$WORK/clean.jsonl" "$WORK/in.jsonl" <<'EOF'
import random, sys
random.seed(29)
damage = [
    lambda l: l[: len(l) // 2],                                  # cut short
    lambda l: l.replace('"price":', '"price":"', 1),            # broken string
    lambda l: l.replace('"price":', '"price":1.5,"x":', 1),     # fraction for BIGINT
    lambda l: l.replace('"auction":', '"auction":"7","y":', 1), # string for BIGINT
    lambda l: l.replace('{', '{"price":1,', 1),                 # duplicate key
    lambda l: l.replace('"extra":', '"extra":' + '[' * 500 + ']' * 500 + ',"z":', 1),
    lambda l: l.replace('"date_time":"', '"date_time":"9', 1),  # year out of range
    lambda l: l.replace('"date_time":"2', '"date_time":"3', 1), # a thousand years ahead
    lambda l: l[:-1] + ',"pad":"' + 'x' * 70000 + '"}',        # oversize (64 KiB limit)
]
n = bad = 0
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as out:
    for line in src:
        line = line.rstrip("\n")
        n += 1
        if random.random() < 0.01:
            line = random.choice(damage)(line)
            bad += 1
        out.write(line + "\n")
print(f"lines {n}, damaged {bad}")
EOF
cat >"$WORK/q.sql" <<EOF
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
    date_time TIMESTAMP(3), extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
WITH (connector = 'file', path = '$WORK/in.jsonl', on_error = 'dead_letter',
      dead_letter_path = '$WORK/dead.jsonl', max_line_bytes = '65536');
CREATE TABLE out WITH (connector = 'discard');
INSERT INTO out SELECT auction, price FROM bid;
EOF
"$BIN" run "$WORK/q.sql" --json >"$WORK/summary.json"
python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
s = json.load(open(f"{work}/summary.json"))
src = next(o for o in s["operators"] if o["kind"] == "source")
lines = sum(1 for _ in open(f"{work}/in.jsonl"))
dead = sum(1 for _ in open(f"{work}/dead.jsonl"))
rows, lettered = src["rows_out"], src["dead_lettered"]
print(f"lines {lines}: rows {rows} + dead letters {lettered} (file: {dead}) = {rows + lettered}")
print(f"peak RSS {s['peak_rss_bytes'] / 1e6:.0f} MB, {s['throughput'] / 1e6:.2f} M rows/s")
sys.exit(0 if rows + lettered == lines == rows + dead else 1)
EOF
