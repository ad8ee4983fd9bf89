#!/usr/bin/env bash
# Benchmark (not a test): the same Pancake pull and transform on local disk and on an
# S3-compatible server on loopback (moto, from the venv tests/run.sh installs); prints each
# wall time and the S3 ÷ local ratios. moto is a Python server on the same 2 cores: the
# ratios bound what the S3 code path costs, not what AWS would.
#   tests/bench/s3.sh                   # debug build, 10 days × 4 pages
#   PROFILE=release DAYS=30 SCALE=5 tests/bench/s3.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${PROFILE:-debug}
SCALE=${SCALE:-2}
DAYS=${DAYS:-10}
PAGES=${PAGES:-4}
VENV="${INGEST_VENV:-$HOME/.cache/ingest-venv}"
. tests/bench/lib.sh
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" fixtures serve --no-rate-limit --days "$DAYS" --scale "$SCALE" --pages "$PAGES" > "$WORK/sim.out" &
SIM=$!
"$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$PORT" > "$WORK/moto.log" 2>&1 &
MOTO=$!
trap 'kill $SIM $MOTO 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q '^$' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
curl -s -X PUT "http://127.0.0.1:$PORT/bench" -o /dev/null
eval "$(grep '^export' "$WORK/sim.out")"
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_ALLOW_HTTP=true
TO=$(date -u -d "2023-09-01 + $((DAYS - 1)) days" +%F)
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
run() {
  local lake=$1
  P=$(secs "$BIN" -q --lake "$lake" --pipelines pipelines pull pancake --from 2023-09-01 --to "$TO")
  T=$(secs "$BIN" -q --lake "$lake" --pipelines pipelines --sql sql transform)
  R=$("$BIN" -q --lake "$lake" query --format csv "SELECT count(*) FROM raw.pancake_conversations" | tail -1)
  echo "$P $T $R"
}
read -r LP LT LR < <(run "$WORK/lake")
read -r SP ST SR < <(run "s3://bench/lake")
echo "profile=$PROFILE days=$DAYS pages=$PAGES scale=$SCALE conversations=$LR (s3: $SR)"
printf "pull: local %.2f s, s3 %.2f s, s3/local %.2f\n" "$LP" "$SP" "$(echo "$SP / $LP" | bc -l)"
printf "transform: local %.2f s, s3 %.2f s, s3/local %.2f\n" "$LT" "$ST" "$(echo "$ST / $LT" | bc -l)"
