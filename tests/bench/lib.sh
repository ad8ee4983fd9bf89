# Sourced by the bench scripts (after they set PROFILE): the binary they run, as BIN.
# BIN=path runs a saved binary (e.g. a copy of the previous build, to compare two builds on
# one machine); otherwise PROFILE (release or debug) is built first.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ingest-target}"
if [ -n "${BIN:-}" ]; then :
elif [ "$PROFILE" = release ]; then cargo build --release --locked -q; BIN="$CARGO_TARGET_DIR/release/ingest"
else cargo build --locked -q; BIN="$CARGO_TARGET_DIR/debug/ingest"; fi

# For scripts keeping a WORK folder and a simulator they restart (SIMPID):
# sim DAYS SCALE: (re)start the simulator without a rate limit for PAGES pages, with its
# variables exported; day N: the date N days after 2023-09-01.
SIMPID=""
sim() {
  [ -n "$SIMPID" ] && kill $SIMPID 2>/dev/null && sleep 0.2
  "$BIN" fixtures serve --no-rate-limit --days "$1" --scale "$2" --pages "$PAGES" > "$WORK/sim.out" &
  SIMPID=$!
  for _ in $(seq 100); do grep -q '^$' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
  eval "$(grep '^export' "$WORK/sim.out")"
}
day() { date -u -d "2023-09-01 + $1 days" +%F; }

# Timing shared by the scripts (wall times to the millisecond: /usr/bin/time's are to 10 ms,
# a fifth of a 50 ms run). t0=$(clock); ...; secs=$(since "$t0") prints seconds.
clock() { date +%s%N; }
since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
# median: the middle of the numbers on stdin (the lower one of an even count).
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
