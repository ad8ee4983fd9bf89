#!/usr/bin/env bash
# Benchmark (not a test): pull simulator records with no rate limit and print records/s,
# CPU per record (user and kernel apart) and peak RSS. The simulator runs on the same machine
# and shares its cores; only the pull's own CPU is counted.
#   tests/bench/pull.sh                 # release build, Pancake, ~1.1M records
#   PROFILE=debug SCALE=10 tests/bench/pull.sh
#   SOURCE=c2s LEADS=100000 tests/bench/pull.sh   # the issue's figure: 100k C2S leads, one
#                                                 # stream of 50-record pages, served from
#                                                 # leads the simulator sorted once
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${PROFILE:-release}
SOURCE=${SOURCE:-pancake}
DAYS=${DAYS:-30}
PAGES=${PAGES:-10}
if [ "$SOURCE" = c2s ]; then
  # The simulator makes 20 x scale leads for each of DAYS + 1 days.
  LEADS=${LEADS:-100000}
  SCALE=${SCALE:-$(( (LEADS + 20 * (DAYS + 1) - 1) / (20 * (DAYS + 1)) ))}
else
  SCALE=${SCALE:-50}
fi
. tests/bench/lib.sh
WORK=$(mktemp -d)
"$BIN" fixtures serve --no-rate-limit --days "$DAYS" --scale "$SCALE" --pages "$PAGES" > "$WORK/sim.out" &
SIM=$!
trap 'kill $SIM 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q '^$' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
eval "$(grep '^export' "$WORK/sim.out")"
TO=$(date -u -d "2023-09-01 + $((DAYS - 1)) days" +%F)
# REPS pulls into fresh lakes (default 3; the kernel's share of one pull's CPU varies by 3x
# from run to run on a shared machine): the figures are the pull whose CPU is the median.
REPS=${REPS:-3}
for i in $(seq "$REPS"); do
  rm -rf "$WORK/lake"
  /usr/bin/time -v "$BIN" -q --lake "$WORK/lake" --pipelines pipelines pull "$SOURCE" --from 2023-09-01 --to "$TO" \
    > "$WORK/summary.$i.txt" 2> "$WORK/time.$i.txt" || { cat "$WORK/time.$i.txt"; exit 1; }
  u=$(grep "User time" "$WORK/time.$i.txt" | awk '{print $NF}'); k=$(grep "System time" "$WORK/time.$i.txt" | awk '{print $NF}')
  echo "$(awk -v u="$u" -v k="$k" 'BEGIN { printf "%.2f", u + k }') $i"
done | sort -g > "$WORK/cpu.txt"
echo "cpu_s of the $REPS pulls: $(cut -d' ' -f1 "$WORK/cpu.txt" | tr '\n' ' ')"
M=$(sed -n "$(( (REPS + 1) / 2 ))p" "$WORK/cpu.txt" | cut -d' ' -f2)
RECORDS=$(tail -1 "$WORK/summary.$M.txt" | awk '{print $(NF-4)}')
BYTES=$(tail -1 "$WORK/summary.$M.txt" | awk '{print $(NF-3)}')
WALL=$(grep "Elapsed (wall clock)" "$WORK/time.$M.txt" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
RSS=$(grep "Maximum resident set size" "$WORK/time.$M.txt" | awk '{print $NF}')
USER_S=$(grep "User time" "$WORK/time.$M.txt" | awk '{print $NF}')
SYS_S=$(grep "System time" "$WORK/time.$M.txt" | awk '{print $NF}')
tail -1 "$WORK/summary.$M.txt"
echo "source=$SOURCE profile=$PROFILE pages=$PAGES days=$DAYS scale=$SCALE (the median of $REPS pulls)"
echo "records=$RECORDS bytes=$BYTES wall_s=$WALL"
awk -v r="$RECORDS" -v w="$WALL" -v b="$BYTES" -v u="$USER_S" -v k="$SYS_S" 'BEGIN {
  printf "records_per_s=%.0f MiB_per_s=%.1f cpu_s=%.2f (user %.2f, kernel %.2f)\n", r/w, b/w/1048576, u+k, u, k
  printf "cpu_us_per_record=%.1f (user %.1f, kernel %.1f)\n", (u+k)*1e6/r, u*1e6/r, k*1e6/r }'
echo "peak_rss_MiB=$((RSS / 1024))"
