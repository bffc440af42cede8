#!/usr/bin/env bash
# profile: where a delivered message's CPU goes, on loopback (issue 13's "where the time goes").
#
#   1. build comet, floodtest and msggen in release with frame pointers, in their own target
#      dir (target/profile-fp), so that perf's call graphs are whole and the usual builds stay;
#   2. start `comet serve` on free loopback ports; floodtest connects CONNECTIONS `/test/`
#      subscribers;
#   3. for each rate in RATES: msggen sends that many messages per second for DURATION while
#      `perf record -g` samples comet at 999 Hz (from 5 s in to 5 s before the end), and
#      comet's user and system CPU (/proc/<pid>/stat) are read before and after;
#   4. write results/profile/<yyyy-mm-dd>-<label>/: per rate `perf report` (self time) and a
#      flamegraph SVG (inferno, if installed: `cargo install inferno`), and summary.md with
#      user and kernel CPU per delivered message.
#
# Settings (environment or flags; flags win):
#   CONNECTIONS=10000 --connections subscribers
#   RATES=1000,10000  --rates       message rates to profile, comma-separated
#   DURATION=30s      --duration    per rate (at least 15s)
#   LABEL=c10k        --label       results folder suffix
#   WORKERS=          --workers     comet --workers (default: comet's own)
#   RESULTS=results/profile         where result folders go
set -euo pipefail

BENCH=profile
COMMAND_LINE="$0 $*"
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
SETTINGS=(
    CONNECTIONS --connections 10000
    RATES       --rates       1000,10000
    DURATION    --duration    30s
    LABEL       --label       c10k
    WORKERS     --workers     ''
    RESULTS     -             results/profile
)
bench_settings "$@"
DURATION_S=$(seconds "$DURATION")
((DURATION_S >= 15)) || die "--duration must be at least 15s"
command -v perf >/dev/null || die "perf is not installed (apt-get install linux-perf)"

log "build (release, frame pointers, target/profile-fp)"
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/profile-fp \
    cargo build --release -q -p comet -p floodtest -p msggen
BIN=$PWD/target/profile-fp/release
bench_results_dir "$RESULTS" "$LABEL"
log "results in $DIR"

COMET_PID= FLOOD_PID= MSG_PID=
cleanup() { kill_quietly "$MSG_PID" "$FLOOD_PID" "$COMET_PID"; }
trap cleanup EXIT

start_comet ${WORKERS:+--workers $WORKERS}
log "comet pid $COMET_PID public=$PUBLIC publish=$PUBLISH"
log "floodtest: $CONNECTIONS x /test at 2000/s"
"$BIN/floodtest" --target "$PUBLIC" -n "$CONNECTIONS" --rate 2000 --path test \
    --duration "$((CONNECTIONS / 2000 + 120 + DURATION_S * 4))s" --stats-file "$DIR/floodtest.tsv" \
    >"$DIR/floodtest.log" 2>"$DIR/floodtest.err" &
FLOOD_PID=$!
wait_connected "$CONNECTIONS" $((CONNECTIONS / 2000 * 3 + 60))
log "$(flood_connected) connected"

# utime and stime of comet, in clock ticks.
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12, $13}' "/proc/$COMET_PID/stat"; }
delivered() {
    save_metrics "$DIR/metrics.txt"
    metric_sum comet_messages_delivered_total "$DIR/metrics.txt"
}
TICKS=$(getconf CLK_TCK)
{
    echo "# profile: $(basename "$DIR") ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    echo "Command: \`$COMMAND_LINE\` with CONNECTIONS=$CONNECTIONS RATES=$RATES DURATION=$DURATION"
    echo "WORKERS=${WORKERS:-default}"
    echo
    echo "Machine: $(machine_line); comet $(comet_rev), release build with frame pointers;"
    echo "client and server on loopback, same machine."
    echo
    echo "| rate (msg/s) | delivered | comet user CPU | comet kernel CPU | user µs / message | kernel µs / message | load average |"
    echo "|---|---|---|---|---|---|---|"
} >"$DIR/summary.md"
IFS=, read -ra RATE_LIST <<<"$RATES"
for rate in "${RATE_LIST[@]}"; do
    log "rate $rate msg/s for ${DURATION_S}s; perf from 5 s in"
    d0=$(delivered)
    read -r u0 s0 < <(cpu_ticks)
    "$BIN/msggen" --target "$PUBLISH" --rate "$rate" --max-id "$CONNECTIONS" \
        --duration "${DURATION_S}s" >"$DIR/msggen-$rate.log" 2>"$DIR/msggen-$rate.err" &
    MSG_PID=$!
    sleep 5
    perf record -F 999 -g -o "$DIR/perf-$rate.data" -p "$COMET_PID" -- sleep "$((DURATION_S - 10))" \
        >"$DIR/perf-$rate.log" 2>&1
    wait "$MSG_PID" || log "WARNING: msggen reported failures"
    MSG_PID=
    read -r u1 s1 < <(cpu_ticks)
    d1=$(delivered)
    perf report -i "$DIR/perf-$rate.data" --stdio --no-children --percent-limit 0.5 \
        >"$DIR/report-$rate.txt" 2>/dev/null || log "WARNING: perf report failed"
    if command -v inferno-collapse-perf >/dev/null; then
        perf script -i "$DIR/perf-$rate.data" 2>/dev/null | inferno-collapse-perf \
            | inferno-flamegraph --title "comet: $CONNECTIONS subscribers, $rate msg/s" \
                >"$DIR/flamegraph-$rate.svg" || log "WARNING: flamegraph failed"
    fi
    rm -f "$DIR/perf-$rate.data"
    awk -v r="$rate" -v d=$((d1 - d0)) -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t="$TICKS" \
        -v l="$(load_avg)" 'BEGIN {
        printf "| %d | %d | %.2f s | %.2f s | %.2f | %.2f | %s |\n", r, d, u / t, s / t,
            (d ? u / t * 1e6 / d : 0), (d ? s / t * 1e6 / d : 0), l }' >>"$DIR/summary.md"
done
{
    echo
    echo "CPU is comet's whole process (/proc/<pid>/stat utime and stime) over each rate's message"
    echo "phase; \"delivered\" is the growth of comet_messages_delivered_total (one per message per"
    echo "subscriber; ids are drawn from 1..CONNECTIONS, one subscriber each). Kernel time includes"
    echo "TCP work for both ends done in comet's context (on loopback the receiving socket's"
    echo "softirq often runs on the sender's CPU). Files: report-<rate>.txt (perf report, self"
    echo "time, call graphs), flamegraph-<rate>.svg, msggen-<rate>.log, comet.err."
} >>"$DIR/summary.md"
log "done: $DIR/summary.md"
cat "$DIR/summary.md"
