#!/usr/bin/env bash
# rings: what driving many rings from one worker thread costs, against one big ring, and
# (with THREADS) against the old way of holding more connections: a thread per ring.
#
# For each configuration of CONFIGS in turn, ROUNDS times (alternating, so that a noisy machine
# hits all alike): start comet (`big`: WORKERS workers on rings of the open-files limit;
# `small`: WORKERS workers on the test-only COMET_RING_FILES=SMALL_FILES, so CONNECTIONS spread
# over many rings; `threads`: THREADS workers on big rings, each its own thread, ring and shard;
# heartbeats off, so that idle is idle), connect
# CONNECTIONS SSE subscribers with floodtest, read RSS and CPU, stay idle IDLE s (CPU must not
# move: the thread sleeps on all its rings), then msggen RATE msg/s (batched) to random ids
# for SECS s, and read RSS and CPU again. Per run:
#   user bytes per connection = (RSS with every subscriber connected - RSS at start) / CONNECTIONS
#   CPU per delivered message = (CPU after the messages - CPU before them) / deliveries
# With perf (and its syscall tracepoints), also per run: io_uring_enter calls, read calls (the
# rings' eventfd) and context switches of comet while idle and during the messages.
# Writes RESULTS/<date>-LABEL/{runs.tsv, <config>-<round>/*, summary.md}.
#
# Settings (environment): CONNECTIONS=18000 SMALL_FILES=2000 RATE=10000 SECS=15 IDLE=10
# ROUNDS=2 WORKERS=1 CONFIGS="big small" THREADS=64 LABEL=run RESULTS=results/rings.
# results/workers (64 threads against 2 threads on as many rings, at the same load):
#   CONFIGS="big small threads" WORKERS=2 THREADS=64 SMALL_FILES=533 CONNECTIONS=30000 \
#   RATE=60000 SECS=20 ROUNDS=3 RESULTS=results/workers LABEL=rings just bench-rings
set -euo pipefail

BENCH=bench-rings
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
SETTINGS=(
    CONNECTIONS  -  18000
    SMALL_FILES  -  2000
    RATE         -  10000
    SECS         -  15
    IDLE         -  10
    ROUNDS       -  2
    WORKERS      -  1
    CONFIGS      -  "big small"
    THREADS      -  64
    LABEL        -  run
    RESULTS      -  results/rings
)
bench_settings "$@"
BIN=$PWD/target/release
cargo build --release -q -p comet -p floodtest -p msggen
bench_results_dir "$RESULTS" "$LABEL"
TOP=$DIR
log "results in $TOP"
printf '# config\tround\trings\tconnections\trss_base_kb\trss_idle_kb\trss_load_kb\tcpu_connected_s\tcpu_idle_s\tcpu_load_s\tpromised\treceived\tenters_idle\treads_idle\tswitches_idle\tenters_load\treads_load\tswitches_load\n' >"$TOP/runs.tsv"
PERF_EVENTS=syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_read,context-switches
PERF=
perf stat -e "$PERF_EVENTS" -- true >/dev/null 2>&1 && PERF=perf
# Counts comet's events for $2 seconds into $1 (zeros without perf).
count() {
    if [[ -n $PERF ]]; then
        perf stat -x, -e "$PERF_EVENTS" -p "$COMET_PID" -o "$1" -- sleep "$2" >/dev/null 2>&1
    else
        sleep "$2"
        : >"$1"
    fi
}
# enters, reads, switches from a count() file.
counted() {
    awk -F, '$3 ~ /io_uring_enter/ {e = $1} $3 ~ /sys_enter_read/ {r = $1} $3 ~ /context-switches/ {c = $1}
        END {printf "%d\t%d\t%d", e, r, c}' "$1"
}

COMET_PID= FLOOD_PID=
cleanup() { kill_quietly "$FLOOD_PID" "$COMET_PID"; }
trap cleanup EXIT

run() {
    local config=$1 round=$2
    DIR=$TOP/$config-$round
    mkdir -p "$DIR"
    # No heartbeats: idle means idle (the 250 ms tick on the first ring is all that runs).
    case $config in
    big) start_comet --workers "$WORKERS" --heartbeat-ms 0 ;;
    small) COMET_RING_FILES=$SMALL_FILES start_comet --workers "$WORKERS" --heartbeat-ms 0 ;;
    threads) start_comet --workers "$THREADS" --heartbeat-ms 0 ;;
    *) die "unknown config $config (big, small, threads)" ;;
    esac
    sleep 2
    local base idle load cpu0 cpu1 cpu2 before promised received rings
    base=$(rss_kb "$COMET_PID")
    "$BIN/floodtest" --target "$PUBLIC" -n "$CONNECTIONS" --rate 0 --path events --duration 1h \
        --stats-file "$DIR/floodtest.tsv" --json "$DIR/floodtest.json" >"$DIR/floodtest.log" 2>&1 &
    FLOOD_PID=$!
    wait_connected "$CONNECTIONS" 300
    sleep 3
    idle=$(rss_kb "$COMET_PID")
    cpu0=$(cpu_s "$COMET_PID")
    count "$DIR/perf-idle.csv" "$IDLE"
    cpu1=$(cpu_s "$COMET_PID")
    save_metrics "$DIR/metrics-idle.txt"
    rings=$(metric_sum comet_rings "$DIR/metrics-idle.txt")
    before=$(flood_messages)
    count "$DIR/perf-load.csv" "$SECS" &
    local counter=$!
    "$BIN/msggen" --target "$PUBLISH" --rate "$RATE" --batch $((RATE / 500 > 0 ? RATE / 500 : 1)) \
        --max-id "$CONNECTIONS" --duration "${SECS}s" --json "$DIR/msggen.json" >"$DIR/msggen.log" 2>&1 || true
    promised=$(jq -r .connections "$DIR/msggen.json")
    for _ in $(seq 20); do
        (($(flood_messages) - before >= promised)) && break
        sleep 1
    done
    received=$(($(flood_messages) - before))
    wait "$counter" || true
    cpu2=$(cpu_s "$COMET_PID")
    load=$(rss_kb "$COMET_PID")
    kill -TERM "$FLOOD_PID" 2>/dev/null || true
    wait "$FLOOD_PID" 2>/dev/null || true
    FLOOD_PID=
    stop_comet 60 >/dev/null
    COMET_PID=
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$config" "$round" "$rings" \
        "$CONNECTIONS" "$base" "$idle" "$load" "$cpu0" "$cpu1" "$cpu2" "$promised" "$received" \
        "$(counted "$DIR/perf-idle.csv")" "$(counted "$DIR/perf-load.csv")" | tee -a "$TOP/runs.tsv"
}

for round in $(seq "$ROUNDS"); do
    for config in $CONFIGS; do
        log "round $round: $config"
        run "$config" "$round"
    done
done

# One row per run, then the medians per configuration.
TABLE=$(awk -F'\t' '!/^#/ {
    user = ($6 - $5) * 1024 / $4; idle = $9 - $8; n = ($12 > 0 ? $12 : 1); per = ($10 - $9) * 1e6 / n
    printf "| %s | %s | %s | %s / %s / %s | %.0f B | %.2f s; %d / %d / %d | %s of %s | %.2f us | %.3f / %.3f / %.3f |\n",
        $1, $2, $3, $5, $6, $7, user, idle, $13, $14, $15, $12, $11, per, $16 / n, $17 / n, $18 / n
}' "$TOP/runs.tsv")
cat >"$TOP/summary.md" <<EOF
# bench-rings: $LABEL ($(date -u +%FT%TZ))

Command: \`bash tools/bench/rings.sh\` with CONNECTIONS=$CONNECTIONS SMALL_FILES=$SMALL_FILES RATE=$RATE
SECS=$SECS IDLE=$IDLE ROUNDS=$ROUNDS CONFIGS="$CONFIGS": comet \`--heartbeat-ms 0\`; \`big\`: \`--workers $WORKERS\`, rings of
the open-files limit ($(ulimit -Hn)); \`small\`: \`--workers $WORKERS\` with COMET_RING_FILES=$SMALL_FILES (test-only), so
each ring admits $((SMALL_FILES - 64)) connections (64 slots of slack); \`threads\`: \`--workers $THREADS\`, a thread,
ring and shard each. SSE subscribers from floodtest (\`--path events\`), messages
from msggen to random ids (batched), each delivered to one subscriber.

Machine: $(machine_line); comet $(git rev-parse --short HEAD); server and clients on loopback.

| config | round | rings | RSS start / connected / after messages (KB) | user bytes per connection | while idle ${IDLE} s: CPU; io_uring_enter / read / context switches | delivered | CPU per delivered message | per delivered message: io_uring_enter / read / context switches |
|---|---|---|---|---|---|---|---|---|
$TABLE

Raw: runs.tsv; per run: floodtest.{log,tsv,json}, msggen.{log,json}, metrics-idle.txt,
perf-{idle,load}.csv (perf stat over the idle and the message phases; $([[ -n $PERF ]] && echo "taken" || echo "perf was not available: zeros")), comet.{out,err}.
EOF
log "done: $TOP/summary.md"
cat "$TOP/summary.md"
