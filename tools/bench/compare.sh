#!/usr/bin/env bash
# One comparison point (results/alloc, results/workers): start COMET_BIN with WORKERS
# workers, connect CONNECTIONS idle subscribers, read RSS; then RATE msg/s (batched) for SECS seconds; read RSS, CPU and the
# worst per-second p99. Prints one TSV line:
# label workers connections rss_base_kb rss_idle_kb rss_load_kb cpu_s promised received worst_p99_ms
# usage: tools/bench/compare.sh OUTDIR LABEL COMET_BIN WORKERS CONNECTIONS RATE SECS
set -euo pipefail
OUT=$1 LABEL=$2 COMET=$3 WORKERS=$4 CONNECTIONS=$5 RATE=$6 SECS=$7
BENCH=compare
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tools/bench/lib.sh
source "$ROOT/tools/bench/lib.sh"
BIN=$ROOT/target/release
DIR=$OUT/$LABEL
mkdir -p "$DIR"
COMET_PID= FLOOD_PID=
trap 'kill $FLOOD_PID $COMET_PID 2>/dev/null || true' EXIT
BIN_SAVED=$BIN; BIN=$(dirname "$COMET"); start_comet --workers "$WORKERS"; BIN=$BIN_SAVED
sleep 2
BASE=$(rss_kb $COMET_PID)
"$BIN/floodtest" --target "$PUBLIC" -n "$CONNECTIONS" --rate 0 --duration 1h \
    --stats-file "$DIR/floodtest.tsv" --json "$DIR/floodtest.json" > "$DIR/floodtest.log" 2>&1 &
FLOOD_PID=$!
until (( $(flood_connected) >= CONNECTIONS )); do sleep 1; done
sleep 10
IDLE=$(rss_kb $COMET_PID)
BEFORE=$(flood_messages); T0=$(date +%s)
"$BIN/msggen" --target "$PUBLISH" --rate "$RATE" --batch $(( RATE / 500 > 0 ? RATE / 500 : 1 )) --max-id "$CONNECTIONS" \
    --duration "${SECS}s" --json "$DIR/msggen.json" > "$DIR/msggen.log" 2>&1 || true
T1=$(date +%s)
PROMISED=$(jq -r .connections "$DIR/msggen.json")
for _ in $(seq 20); do sleep 1; (( $(flood_messages) - BEFORE >= PROMISED )) && break; done
RECEIVED=$(( $(flood_messages) - BEFORE ))
LOAD=$(rss_kb $COMET_PID); CPU=$(cpu_s $COMET_PID)
P99=$(awk -F'\t' -v a="$T0" -v b="$T1" '!/^#/ && $2 > a + 1 && $2 <= b && $12 > m {m = $12} END {printf "%.2f", m / 1000}' "$DIR/floodtest.tsv")
kill -TERM $FLOOD_PID; wait $FLOOD_PID || true; FLOOD_PID=
stop_comet 60 >/dev/null
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$LABEL" "$WORKERS" "$CONNECTIONS" "$BASE" "$IDLE" "$LOAD" "$CPU" "$PROMISED" "$RECEIVED" "$P99"
