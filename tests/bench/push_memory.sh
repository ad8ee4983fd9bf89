#!/usr/bin/env bash
# Benchmark (not a test): peak RSS of `ingest push` on a sink table of ROWS rows (default
# 1,000,000), the goal issue 25 sets (< 500 MiB). The table is a generated model (no pull: the
# simulator makes every product of every page it serves), pushed to the simulated portal with
# no rate limit and instant jobs (polls every 5 ms), then dry-run again with the whole ledger.
#   tests/bench/push_memory.sh                # debug build
#   ROWS=200000 PROFILE=release tests/bench/push_memory.sh
#   BIN=/tmp/ingest-old DRY_ONLY=1 tests/bench/push_memory.sh   # a saved binary, dry run only
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${PROFILE:-debug}
ROWS=${ROWS:-1000000}
. tests/bench/lib.sh
WORK=$(mktemp -d)
mkdir -p "$WORK/sql/push" "$WORK/pipes"
cat > "$WORK/sql/push/retail_products.sql" <<EOF
-- target: push.retail_products
-- unique_key: erpId
-- mode: replace
SELECT value AS "erpId", concat('SKU-', CAST(value AS VARCHAR)) AS sku, concat('Produto ', CAST(value AS VARCHAR)) AS name,
  CAST(value % 1000 AS DOUBLE) + 0.5 AS price, value % 500 AS stock, '2023-09-01T00:00:00Z' AS "updatedAt"
FROM (SELECT unnest(range(100000, $((100000 + ROWS)))) AS value) t
EOF
sed -e 's/poll_ms = [0-9]*, max_poll_ms = [0-9]*/poll_ms = 5, max_poll_ms = 50/' pipelines/retail_portal.toml > "$WORK/pipes/retail_portal.toml"
"$BIN" fixtures serve --no-rate-limit --products 0 --job-items-per-sec 1000000000 > "$WORK/sim.out" &
SIM=$!
trap 'kill $SIM 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q '^$' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
eval "$(grep '^export' "$WORK/sim.out")"
export RETAIL_PORTAL_RATE_SECONDS=0.001
"$BIN" -q --lake "$WORK/lake" --sql "$WORK/sql" transform > /dev/null
# rss LABEL ARGS...: run ingest, print wall seconds and peak RSS (MiB).
rss() {
  local label=$1; shift
  local t0; t0=$(clock)
  /usr/bin/time -f '%M' -o "$WORK/rss" "$BIN" -q --lake "$WORK/lake" --pipelines "$WORK/pipes" "$@" > "$WORK/out" 2> "$WORK/err" || true
  printf '%-28s rows=%s wall_s=%s peak_rss_mib=%s\n' "$label" "$ROWS" "$(since "$t0")" "$(( $(tail -1 "$WORK/rss") / 1024 ))"
}
rss "push --dry-run (no ledger)" push retail_portal --dry-run
[ -n "${DRY_ONLY:-}" ] && exit 0
rss "push (every row sent)" push retail_portal
grep -E '^products' "$WORK/out" || cat "$WORK/err" | tail -3
rss "push --dry-run (full ledger)" push retail_portal --dry-run
