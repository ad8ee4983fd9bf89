#!/usr/bin/env bash
# Benchmark (not a test): does a day's work cost the same on a lake whose catalogue lists many
# files as on a small one? Pulls Pancake conversations for PAGES pages x DAYS days (one file per
# page and day: PAGES*DAYS catalogued files) and, separately, 1 page x 100 days (100 files), then
# times on each lake the next NEXT (5) days' incremental pull (one page) + transform; the medians
# give the ratio.
#   PROFILE=debug PAGES=50 DAYS=200 tests/bench/catalogue.sh      # 10,000 files
#   PAGES=250 DAYS=400 tests/bench/catalogue.sh                   # 100,000 files (slow to build)
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${PROFILE:-release}
PAGES=${PAGES:-50}
DAYS=${DAYS:-200}
. tests/bench/lib.sh
WORK=${WORK:-$(mktemp -d)}
SQL="$WORK/sql"; mkdir -p "$SQL/silver"; cp "${MODEL:-sql/silver/pancake_conversations.sql}" "$SQL/silver/pancake_conversations.sql"
trap '[ -n "$SIMPID" ] && kill $SIMPID 2>/dev/null; [ -z "${KEEP:-}" ] && rm -rf "$WORK"' EXIT
secs() { # wall seconds of a command
  local t0; t0=$(clock)
  "$@" > /dev/null 2> "$WORK/err.txt" || { cat "$WORK/err.txt"; exit 1; }
  since "$t0"
}

NEXT=${NEXT:-5}
sim $((DAYS + NEXT)) 1
echo "== building a lake of $PAGES pages x $((DAYS - 1)) days"
t=$(secs "$BIN" -q --lake "$WORK/big" --pipelines pipelines pull pancake --streams conversations --from 2023-09-01 --to "$(day $((DAYS - 2)))")
echo "pull: $t s"
t=$(secs "$BIN" -q --lake "$WORK/big" --sql "$SQL" transform)
echo "transform: $t s"
FILES=$("$BIN" -q --lake "$WORK/big" query "SELECT count(*) AS n FROM raw.pancake_conversations GROUP BY _file" --format csv | tail -n +2 | wc -l)
echo "catalogued raw files: $FILES"
PAGE=${PANCAKE_PAGE_IDS%%,*}
one_day() { # lake day → "pull transform" seconds for that day's pull (one page) + transform
  local a b
  a=$(secs "$BIN" -q --lake "$1" --pipelines pipelines pull pancake --streams conversations --partitions "$PAGE" --to "$2")
  b=$(secs "$BIN" -q --lake "$1" --sql "$SQL" transform)
  echo "$a $b"
}
"$BIN" -q --lake "$WORK/small" --pipelines pipelines pull pancake --streams conversations --partitions "$PAGE" --from "$(day $((DAYS - 101)))" --to "$(day $((DAYS - 2)))" > /dev/null
"$BIN" -q --lake "$WORK/small" --sql "$SQL" transform > /dev/null
# NEXT days on each lake (the median counts: one run is noisy at these durations; with three
# days, five runs of nearly the same code gave ratios from 1.35 to 1.67).
echo "== next days, one page: pull + transform (seconds)"
# The lakes take turns, day by day, so a drift in the machine's speed falls on both.
: > "$WORK/big.times"; : > "$WORK/small.times"
for i in $(seq "$NEXT"); do
  for lake in big small; do
    read -r a b < <(one_day "$WORK/$lake" "$(day $((DAYS - 2 + i)))")
    printf '  %-6s %s  pull %s  transform %s\n' "$lake" "$(day $((DAYS - 2 + i)))" "$a" "$b"
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f\n", a + b }' >> "$WORK/$lake.times"
  done
done
BIG=$(median < "$WORK/big.times")
SMALL=$(median < "$WORK/small.times")
printf '%-58s %s s\n' "median day on the lake with $FILES catalogued files" "$BIG"
printf '%-58s %s s\n' "median day on a lake with 100 catalogued files (one page)" "$SMALL"
printf '%-58s %s  (goal <= 1.5 at 100k vs 100)\n' "ratio" "$(awk -v a="$BIG" -v b="$SMALL" 'BEGIN { printf "%.2f", a / b }')"
