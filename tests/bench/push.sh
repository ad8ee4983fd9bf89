#!/usr/bin/env bash
# Benchmark (not a test): push N retail products to the simulated portal and print items/s
# against the simulator's processing ceiling and requests/min against the 100/min budget.
#   tests/bench/push.sh                      # debug build, 5000 products, 4 items/s a job (the seed's)
#   PRODUCTS=20000 RATE=200 tests/bench/push.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${PROFILE:-debug}
PRODUCTS=${PRODUCTS:-5000}
RATE=${RATE:-400}          # items a job processes per second (the simulator's ceiling per job)
WINDOW=${WINDOW:-60}        # seconds of the rate window (60 = the real 100 requests/minute)
. tests/bench/lib.sh
WORK=$(mktemp -d)
"$BIN" fixtures serve --rate-window "$WINDOW" --products "$PRODUCTS" --job-items-per-sec "$RATE" > "$WORK/sim.out" &
SIM=$!
trap 'kill $SIM 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q '^$' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
eval "$(grep '^export' "$WORK/sim.out")"
BASE=$(head -1 "$WORK/sim.out")
"$BIN" -q --lake "$WORK/lake" --pipelines pipelines pull retail_portal > /dev/null
"$BIN" -q --lake "$WORK/lake" --sql sql transform push.retail_products > /dev/null
START=$(date +%s.%N)
"$BIN" -q --lake "$WORK/lake" --pipelines pipelines push retail_portal > "$WORK/push.txt" || true
END=$(date +%s.%N)
cat "$WORK/push.txt"
STATS=$(curl -s "$BASE/_sim/stats")
python3 - "$STATS" "$START" "$END" "$PRODUCTS" "$RATE" "$WINDOW" <<'PY'
import json, sys
stats, start, end, n, rate, window = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
wall = end - start
r = stats["by_route"]
push_requests = sum(r.get(k, {}).get("requests", 0) for k in ("retail/batch", "retail/job"))
items_per_s = n / wall
ceiling = rate * 3   # three jobs in flight, each processed at RATE items/s
print(f"items={n} wall_s={wall:.2f} items_per_s={items_per_s:.0f} ceiling_items_per_s={ceiling:.0f} ratio={items_per_s / ceiling:.2f}")
per_window = push_requests / wall * window
print(f"push_requests={push_requests} requests_per_{window:g}s_window={per_window:.1f} budget=100 ratio={per_window / 100:.2f} 429s={stats['throttled']}")
PY
