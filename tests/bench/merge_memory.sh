#!/usr/bin/env bash
# Benchmark (not a test): peak RSS of a MERGE whose new rows exceed a quarter of
# --memory-limit (issue 26, item 13): a backlog of DAYS days of Pancake conversations merged
# into a table built from day 1, whole (INGEST_MERGE_SLICE_BYTES past the backlog: the rows held
# in memory, as before slicing) and sliced (the default: spilled, merged in key-hash slices of
# at most a quarter of the limit). Prints rows, slices, wall seconds and peak RSS of each.
#   tests/bench/merge_memory.sh                           # debug build, 60 days, scale 20
#   PROFILE=release DAYS=120 SCALE=40 LIMIT=512MiB tests/bench/merge_memory.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${PROFILE:-debug}
DAYS=${DAYS:-60}
SCALE=${SCALE:-20}
PAGES=${PAGES:-2}
LIMIT=${LIMIT:-256MiB}
. tests/bench/lib.sh
WORK=$(mktemp -d)
trap '[ -n "$SIMPID" ] && kill $SIMPID 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/sql/silver"
cp sql/silver/pancake_conversations.sql "$WORK/sql/silver/"
sim "$DAYS" "$SCALE"
"$BIN" -q --lake "$WORK/lake" pull pancake --streams conversations --from 2023-09-01 --to 2023-09-01 > /dev/null
"$BIN" -q --lake "$WORK/lake" --sql "$WORK/sql" transform > /dev/null
"$BIN" -q --lake "$WORK/lake" pull pancake --streams conversations --from 2023-09-02 --to "$(day $((DAYS - 1)))" > /dev/null
RAW=$(du -cb "$WORK"/lake/pancake/*/conversations/*.json | tail -1 | cut -f1)
echo "backlog: $((DAYS - 1)) days of conversations, $((RAW / 1048576)) MiB of NDJSON in all; --memory-limit $LIMIT"
cp -r "$WORK/lake" "$WORK/base"
run() { # label, env...
  local label=$1 t0; shift
  rm -rf "$WORK/lake"; cp -r "$WORK/base" "$WORK/lake"
  t0=$(clock)
  env "$@" INGEST_LOG=ingest=info /usr/bin/time -f '%M' -o "$WORK/rss" "$BIN" --lake "$WORK/lake" --sql "$WORK/sql" transform --memory-limit "$LIMIT" > "$WORK/out" 2> "$WORK/err"
  local secs; secs=$(since "$t0")
  local rows; rows=$(awk '/silver.pancake_conversations/ {print $3}' "$WORK/out" | head -1)
  local slices; slices=$(grep -c "slice merged" "$WORK/err" || true)
  printf '%-8s rows=%s slices=%s wall_s=%s peak_rss_mib=%s\n' "$label" "$rows" "$slices" "$secs" "$(( $(tail -1 "$WORK/rss") / 1024 ))"
}
run whole INGEST_MERGE_SLICE_BYTES=1000000000000
run sliced
