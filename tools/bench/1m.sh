#!/usr/bin/env bash
# bench-1m: a million concurrent subscribers on this machine, then messages, then a ramp.
#
#   1. apply what tools/tune.sh can; build; start comet with one worker per core (its default;
#      each worker opens as many rings as its share of CONNECTIONS needs under RLIMIT_NOFILE,
#      see kernel-tuning.md) and --connections-max CONNECTIONS plus 20 % headroom;
#   2. memlog every MEMLOG_INTERVAL s; floodtest connects CONNECTIONS subscribers at RATE/s
#      (0 = as fast as holds up), from many source addresses and processes; hold HOLD;
#   3. msggen sends MSG_RATE msg/s to random ids for DURATION;
#   4. ramp: RAMP_RATES msg/s, RAMP_STEP each, batched; a step passes when every promised
#      delivery arrived and its p99 (highest per-second p99 in the step) stays under
#      RAMP_P99_MS; the ramp stops at the first failing step; each phase and step says where the
#      CPU went per delivery (comet user and kernel, floodtest, all else, the machine's load);
#   5. faults (FAULTS=1, as root): SILENT subscribers vanish without a FIN, STORM are cut and
#      reconnect at once, the backlog overflows (tools/bench/faults-1m.sh says how);
#   6. stop everything this script started (by pid); write results/1m/<date>-<label>/ with
#      raw logs, graphs and summary.md.
#
# Settings (environment): CONNECTIONS=1000000 RATE=0 HOLD=30s DURATION=2m MSG_RATE=1000
# MSG_SIZE=64 RAMP_RATES="5000 10000 20000 40000 60000 80000 100000" RAMP_STEP=15s
# RAMP_P99_MS=100 WORKERS=(one per core) LABEL=run MEMLOG_INTERVAL=5 RESULTS=results/1m
# HEARTBEAT_MS=15000 UNACKED_MS=30000 BACKLOG=32768 SHUTDOWN_MS=2000 (comet's --heartbeat-ms,
# --unacked-timeout-ms, --backlog: the script raises somaxconn to it if lower; a listen queue
# that holds a reconnect storm brought 100,000 back in 13 s, against 142 s at 4096 where the
# clients' kernels gave up on dropped SYNs (results/1m/2026-11-30-faults-backlog-32k);
# --shutdown-timeout-ms: streams not ended by then are cut, so a larger value measures how long
# ending every one of them takes)
# AGED_S=135 (seconds after the ramp's end to read RSS again, once the ramp's messages aged out
# of the history: comet's --history-age-ms, 2 minutes, plus its trim periods; 0 skips)
# FAULTS=1 SILENT=50000 STORM=100000 STORM_PENDING=20000 STORM_RETRY_MS=3000 STORM_PUBLISH=60s
# FAULT_DEADLINE=180
# NETNS=1 EHASH=4194304 (as root: the bench runs in a network namespace of its own whose
# established-connections hash has EHASH buckets, see bench_netns in lib.sh and
# kernel-tuning.md; NETNS=0: the host's namespace and hash)
# PERF_SHUTDOWN=0 (1: `perf record` samples comet during the graceful shutdown; its report, by
# binary and by function, goes to shutdown-perf-*.txt)
# PENDING=(WORKERS x 4096) (connects floodtest keeps in flight, all processes together: about
# what comet accepts in a fraction of a second, so the connect measures how fast comet accepts:
# 1M in 31.6-31.9 s at BACKLOG=4096; with 65,536 in flight at BACKLOG=32768, 30.5 s once and
# once 98 % by 32 s but the last at 75 s, results/1m/2026-11-30-final-2m-ramp; 0: floodtest's
# own 1,000 per process, ~53,000 for a million, which overflows the queues, and the dropped
# handshakes come back on the clients' retry timers: the reconnect storm of FAULTS=1 measures
# that case)
set -euo pipefail

BENCH=bench-1m
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
# variable, flag (- for none), default: see bench_settings in lib.sh and the header above.
SETTINGS=(
    CONNECTIONS      -  1000000
    RATE             -  0
    HOLD             -  30s
    DURATION         -  2m
    MSG_RATE         -  1000
    MSG_SIZE         -  64
    RAMP_RATES       -  "5000 10000 20000 40000 60000 80000 100000"
    RAMP_STEP        -  15s
    RAMP_P99_MS      -  100
    WORKERS          -  ''
    LABEL            -  run
    MEMLOG_INTERVAL  -  5
    RESULTS          -  results/1m
    HEARTBEAT_MS     -  15000
    UNACKED_MS       -  30000
    BACKLOG          -  32768
    SHUTDOWN_MS      -  2000
    AGED_S           -  135
    FAULTS           -  1
    SILENT           -  50000
    STORM            -  100000
    STORM_PENDING    -  20000
    STORM_RETRY_MS   -  3000
    STORM_PUBLISH    -  60s
    FAULT_DEADLINE   -  180
    PERF_SHUTDOWN    -  0
    PENDING          -  ''
    NETNS            -  1
    EHASH            -  4194304
)
bench_settings "$@"
bench_netns tools/bench/1m.sh "$@"
BIN=$PWD/target/release
HOLD_S=$(seconds "$HOLD")
DURATION_S=$(seconds "$DURATION")
STEP_S=$(seconds "$RAMP_STEP")

log "setup, tuning and build"
./tools/setup.sh >/dev/null
TUNE=$(bash tools/tune.sh 2>&1 || true)
# tune.sh raises the kernel's caps on a listen queue to 4,096; a deeper BACKLOG raises them to it.
TUNE+=$'\n'$(raise_listen_caps "$BACKLOG")
cargo build --release -q -p comet -p floodtest -p msggen -p memlog

# Threads = cores. Each worker admits its share of --connections-max; with SO_REUSEPORT
# spreading connections within a few percent, plan for 20 % headroom. The rings each worker
# needs are comet's to derive (one per table of RLIMIT_NOFILE slots, opened as they fill).
[[ -z $WORKERS ]] && WORKERS=$(nproc)
CONNECTIONS_MAX=$((CONNECTIONS * 12 / 10))

bench_results_dir "$RESULTS" "$LABEL"
log "results in $DIR"
echo "$TUNE" >"$DIR/tune.log"
echo "network namespace: $BENCH_NETNS; net.ipv4.tcp_ehash_entries $(sysctl -n net.ipv4.tcp_ehash_entries)" >>"$DIR/tune.log"

COMET_PID= MEMLOG_PID= FLOOD_PID= STORM_PID=
cleanup() {
    kill_quietly "$STORM_PID" "$FLOOD_PID" "$MEMLOG_PID" "$COMET_PID"
    [[ $FAULTS == 1 ]] && nft delete table inet "comet_bench_faults_$$" 2>/dev/null || true
}
trap cleanup EXIT

log "starting comet with $WORKERS workers, --connections-max $CONNECTIONS_MAX"
start_comet --workers "$WORKERS" --connections-max "$CONNECTIONS_MAX" \
    --heartbeat-ms "$HEARTBEAT_MS" --unacked-timeout-ms "$UNACKED_MS" --backlog "$BACKLOG" \
    --shutdown-timeout-ms "$SHUTDOWN_MS"
sleep 2
RSS_BASE=$(rss_kb "$COMET_PID")
SLAB_BASE=$(slab_kb)
TCP_MEM_BASE=$(tcp_field mem)
TCP_INUSE_BASE=$(tcp_field inuse)

start_memlog

# The fault phase needs heartbeats (a silent peer is found by its unacknowledged heartbeat),
# which the seed's /test/ streams get only with --test-heartbeats, as chunks floodtest would
# count as messages: with FAULTS=1 the subscribers are SSE streams (/events/<id>), whose
# heartbeats are comments.
STREAM_PATH=test
[[ $FAULTS == 1 ]] && STREAM_PATH=events
log "floodtest: $CONNECTIONS subscribers (/$STREAM_PATH/<id>) at ${RATE}/s (0 = as fast as holds up)"
# floodtest runs one process per PER_PROC connections (under the open-files limit); each keeps
# its share of PENDING in flight.
PER_PROC=19000
PROCS=$(((CONNECTIONS + PER_PROC - 1) / PER_PROC))
[[ -z $PENDING ]] && PENDING=$((WORKERS * 4096))
PENDING_ARGS=()
if ((PENDING > 0)); then
    PENDING_ARGS=(--pending-max $(((PENDING + PROCS - 1) / PROCS)))
fi
"$BIN/floodtest" --target "$PUBLIC" -n "$CONNECTIONS" --rate "$RATE" --duration 3h --path "$STREAM_PATH" \
    --per-proc "$PER_PROC" "${PENDING_ARGS[@]}" --stats-file "$DIR/floodtest.tsv" --json "$DIR/floodtest.json" \
    >"$DIR/floodtest.log" 2>"$DIR/floodtest.err" &
FLOOD_PID=$!
CONNECT_START=$SECONDS
OVERFLOWS0=$(netstat_field ListenOverflows)
wait_connected "$CONNECTIONS" 600
OVERFLOWS=$(($(netstat_field ListenOverflows) - OVERFLOWS0))
CONNECTED=$(flood_connected)
CONNECT_S=$((SECONDS - CONNECT_START))
# When the last of them was established, by floodtest's clock (its per-second rows).
LAST_CONNECT_S=$(awk -F'\t' -v n="$CONNECTED" '!/^#/ && $3 >= n {print $1; exit}' "$DIR/floodtest.tsv")
NEARLY_S=$(awk -F'\t' -v n="$((CONNECTED * 98 / 100))" '!/^#/ && $3 >= n {print $1; exit}' "$DIR/floodtest.tsv")
log "$CONNECTED connected in ~${CONNECT_S}s; holding ${HOLD_S}s"
sleep "$HOLD_S"
RSS_IDLE=$(rss_kb "$COMET_PID")
SLAB_IDLE=$(slab_kb)
TCP_MEM_IDLE=$(tcp_field mem)
TCP_INUSE_IDLE=$(tcp_field inuse)
CLIENT_RSS=$(tree_rss_kb "$FLOOD_PID")
CPU_IDLE=$(cpu_s "$COMET_PID")
save_metrics "$DIR/metrics-idle.txt"
RINGS=$(metric_sum comet_rings "$DIR/metrics-idle.txt")

# One msggen run; prints "<promised> <received> <worst_p99_us> <sent> <failed> <median_p99_us>
# <cpu>" for its window: the highest and the median of the per-second p99s floodtest saw in it,
# and where the CPU went while msggen ran (see cpu_per_delivery).
run_msggen() {
    local rate=$1 secs=$2 tag=$3 batch=$4 before t0 t1 after cpu0 cpu1
    before=$(flood_messages)
    cpu0=$(cpu_reading)
    t0=$(date +%s)
    "$BIN/msggen" --target "$PUBLISH" --rate "$rate" --max-id "$CONNECTIONS" --size "$MSG_SIZE" \
        --duration "${secs}s" --batch "$batch" --json "$DIR/msggen-$tag.json" \
        >"$DIR/msggen-$tag.log" 2>&1 || true
    cpu1=$(cpu_reading)
    t1=$(date +%s)
    local promised
    promised=$(jq -r '.connections' "$DIR/msggen-$tag.json")
    # Deliveries still in flight arrive within a few seconds, or never.
    for _ in $(seq 20); do
        sleep 1
        after=$(flood_messages)
        ((after - before >= promised)) && break
    done
    local p99 median
    p99=$(awk -F'\t' -v a="$t0" -v b="$t1" '!/^#/ && $2 > a && $2 <= b + 1 && $12 > m {m = $12} END {print m + 0}' "$DIR/floodtest.tsv")
    median=$(awk -F'\t' -v a="$t0" -v b="$t1" '!/^#/ && $2 > a && $2 <= b + 1 {print $12}' "$DIR/floodtest.tsv" |
        sort -n | awk '{v[NR] = $1} END {print (NR ? v[int((NR + 1) / 2)] : 0)}')
    echo "$promised $((after - before)) $p99 $(jq -r '.sent' "$DIR/msggen-$tag.json") $(jq -r '.failed' "$DIR/msggen-$tag.json") $median $(cpu_per_delivery "$cpu0" "$cpu1" "$promised")"
}

# comet's user and system CPU, floodtest's (all its processes), the machine's busy and total
# ticks: "cu cs fu fs busy total".
cpu_reading() {
    echo "$(procs_cpu "$COMET_PID") $(procs_cpu "$FLOOD_PID" $(pgrep -P "$FLOOD_PID")) $(machine_ticks)"
}
# Between two cpu_readings, per promised delivery ($3), in µs: comet's user and kernel CPU,
# floodtest's, and everything else the machine ran (msggen, the sandbox's own processes); then
# how busy the machine was (both cores): one word "u/k/f/o/busy%".
cpu_per_delivery() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(a, x, " "); split(b, y, " "); n = n > 0 ? n : 1
        comet = y[1] + y[2] - x[1] - x[2]; flood = y[3] + y[4] - x[3] - x[4]
        busy = (y[5] - x[5]) / hz; total = (y[6] - x[6]) / hz
        other = busy - comet - flood; other = other > 0 ? other : 0
        printf "%.1f/%.1f/%.1f/%.1f/%.0f%%", (y[1] - x[1]) * 1e6 / n, (y[2] - x[2]) * 1e6 / n,
            flood * 1e6 / n, other * 1e6 / n, (total > 0 ? busy * 100 / total : 0)
    }'
}

log "message phase: $MSG_RATE msg/s for ${DURATION_S}s"
read -r M_PROMISED M_RECEIVED M_P99 M_SENT M_FAILED M_P99_MEDIAN M_CPU < <(run_msggen "$MSG_RATE" "$DURATION_S" load 0)
log "sent $M_SENT, promised $M_PROMISED, received $M_RECEIVED, p99 ${M_P99}us"
RSS_LOAD=$(rss_kb "$COMET_PID")

RAMP_TABLE="| offered msg/s | sent | deliveries promised / received | worst per-second p99 | CPU per delivery, µs: comet user / comet kernel / floodtest / all else; machine busy | result |
|---|---|---|---|---|---|"
BEST=0
for rate in $RAMP_RATES; do
    log "ramp: $rate msg/s for ${STEP_S}s"
    batch=$((rate / 500))
    ((batch < 1)) && batch=1
    read -r promised received p99 sent failed _ cpu < <(run_msggen "$rate" "$STEP_S" "ramp-$rate" "$batch")
    p99_ms=$(awk -v v="$p99" 'BEGIN {printf "%.2f", v / 1000}')
    verdict=pass
    if ((received < promised || failed > 0)); then
        verdict="FAIL: $((promised - received)) lost, $failed failed"
    elif awk -v v="$p99_ms" -v lim="$RAMP_P99_MS" 'BEGIN {exit !(v > lim)}'; then
        verdict="stop: p99 over ${RAMP_P99_MS} ms"
    elif ((sent < rate * STEP_S * 95 / 100)); then
        verdict="stop: the publisher could not offer the rate"
    fi
    RAMP_TABLE+="
| $rate | $sent | $promised / $received | $p99_ms ms | ${cpu//\// / } | $verdict |"
    [[ $verdict == pass ]] || break
    BEST=$rate
done
log "highest sustained: $BEST msg/s"
RSS_RAMP_END=$(rss_kb "$COMET_PID")
# What a burst held is given back (write buffers trimmed every 5 s, malloc_trim every 10 s):
# the goal is RSS within 10 % of idle 30 s after the load stops.
sleep 30
RSS_AFTER=$(rss_kb "$COMET_PID")
# The history keeps the last messages of each id for 2 minutes (--history-age-ms): held on
# purpose, shown apart.
save_metrics "$DIR/metrics-after-load.txt"
HISTORY_AFTER_KB=$(($(metric_sum comet_history_bytes "$DIR/metrics-after-load.txt") / 1024))
log "RSS at the ramp's end ${RSS_RAMP_END} KB, 30 s later ${RSS_AFTER} KB (idle ${RSS_IDLE} KB)"
# The history forgets messages older than --history-age-ms: once the ramp's have aged out, what
# the load took should be back (the goal: RSS within 10 % of idle).
AGED_LINE=
if ((AGED_S > 30)); then
    sleep $((AGED_S - 30))
    RSS_AGED=$(rss_kb "$COMET_PID")
    save_metrics "$DIR/metrics-aged.txt"
    HISTORY_AGED_KB=$(($(metric_sum comet_history_bytes "$DIR/metrics-aged.txt") / 1024))
    log "RSS ${AGED_S} s after the ramp: ${RSS_AGED} KB (history ${HISTORY_AGED_KB} KB)"
    AGED_LINE="
| server RSS ${AGED_S} s after the ramp's end, its messages aged out of the history | $RSS_AGED KB, $(awk -v a="$RSS_AGED" -v b="$RSS_IDLE" 'BEGIN {printf "%.2f", a / b}')x idle (the history then held $HISTORY_AGED_KB KB; metrics-aged.txt) |"
fi

FAULTS_FAILED=
if [[ $FAULTS == 1 ]]; then
    # shellcheck source=tools/bench/faults-1m.sh
    source tools/bench/faults-1m.sh
    fault_phase
fi

RSS_PEAK=$(hwm_kb "$COMET_PID")
CPU_END=$(cpu_s "$COMET_PID")
# Graceful shutdown while every stream is open: each gets its last chunk, then the close.
save_metrics "$DIR/metrics-before-stop.txt"
OPEN_AT_STOP=$(metric_sum comet_connections "$DIR/metrics-before-stop.txt")
log "stopping comet (SIGTERM) with every stream open ($OPEN_AT_STOP), then floodtest"
PERF_PID=
if [[ $PERF_SHUTDOWN == 1 ]]; then
    command -v perf >/dev/null || die "PERF_SHUTDOWN=1 needs perf (apt-get install linux-perf)"
    # It ends by itself when comet exits.
    perf record -F 999 -p "$COMET_PID" -o "$DIR/shutdown.perf.data" 2>"$DIR/shutdown-perf.err" &
    PERF_PID=$!
    sleep 1
fi
SHUTDOWN_S=$(stop_comet 180)
COMET_PID=
PERF_LINE=
if [[ -n $PERF_PID ]]; then
    wait "$PERF_PID" 2>/dev/null || true
    perf report -i "$DIR/shutdown.perf.data" --sort dso --stdio 2>/dev/null | grep -v '^$' >"$DIR/shutdown-perf-dso.txt" || true
    perf report -i "$DIR/shutdown.perf.data" --sort sym --stdio 2>/dev/null | grep -v '^$' | head -120 >"$DIR/shutdown-perf-sym.txt" || true
    rm -f "$DIR/shutdown.perf.data"
    KERNEL_PCT=$(awk '/\[kernel.kallsyms\]/ {print $1; exit}' "$DIR/shutdown-perf-dso.txt")
    EHASH_PCT=$(awk '/__inet_lookup_established/ {print $1; exit}' "$DIR/shutdown-perf-sym.txt")
    PERF_LINE="
| where the server's CPU went during the shutdown (perf, shutdown-perf-*.txt) | the kernel ${KERNEL_PCT:-?} of samples (the TCP work of both ends, on loopback; the established-connections hash lookup \`__inet_lookup_established\` alone ${EHASH_PCT:-?}), user space the rest |"
fi
sleep 2
kill -TERM "$FLOOD_PID" $STORM_PID 2>/dev/null || true
wait "$FLOOD_PID" $STORM_PID 2>/dev/null || true
FLOOD_PID= STORM_PID=
wait "$MEMLOG_PID" 2>/dev/null || true
MEMLOG_PID=
tools/plot/plot.sh "$DIR" "$LABEL" >/dev/null || log "WARNING: plotting failed"

F=$DIR/floodtest.json
lat() { jq -r ".latency_us.$1" "$F" | awk '{printf "%.3f", $1 / 1000}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%d", (b > 0 ? a / b : 0)}'; }
SOCKETS=$((2 * CONNECTED))
USER_B=$(div $(((RSS_IDLE - RSS_BASE) * 1024)) "$CONNECTED")
SLAB_B=$(div $(((SLAB_IDLE - SLAB_BASE) * 1024)) "$SOCKETS")
TCP_MEM_B=$(div $(((TCP_MEM_IDLE - TCP_MEM_BASE) * 4096)) "$SOCKETS")
CLIENT_B=$(div $((CLIENT_RSS * 1024)) "$CONNECTED")
LOST=$((M_PROMISED - M_RECEIVED))
GRACEFUL=$(jq -r '.counters.closed_graceful' "$F")
# comet's own account: when its last stream ended, and what the timeout cut (if it did).
ENDED_MS=$(grep -o 'every stream ended ms=[0-9]*' "$DIR/comet.err" | tail -1 | cut -d= -f2)
CUT=$(grep -c 'shutdown timeout: closing what is still open' "$DIR/comet.err" || true)
if [[ -f $DIR/floodtest-storm.json ]]; then
    GRACEFUL=$((GRACEFUL + $(jq -r '.counters.closed_graceful' "$DIR/floodtest-storm.json")))
fi

cat >"$DIR/summary.md" <<EOF
# bench-1m: $LABEL ($(date -u +%FT%TZ))

Command: \`just bench-1m\` (tools/bench/1m.sh) with CONNECTIONS=$CONNECTIONS RATE=$RATE HOLD=$HOLD
DURATION=$DURATION MSG_RATE=$MSG_RATE MSG_SIZE=$MSG_SIZE RAMP_RATES="$RAMP_RATES" RAMP_STEP=$RAMP_STEP
RAMP_P99_MS=$RAMP_P99_MS FAULTS=$FAULTS PENDING=$PENDING NETNS=$NETNS EHASH=$EHASH AGED_S=$AGED_S; comet \`--workers $WORKERS --connections-max $CONNECTIONS_MAX
--heartbeat-ms $HEARTBEAT_MS --unacked-timeout-ms $UNACKED_MS --backlog $BACKLOG --shutdown-timeout-ms $SHUTDOWN_MS\` (open-files hard limit $(ulimit -Hn)):
$RINGS rings in all once connected (comet_rings, metrics-idle.txt); subscribers \`/$STREAM_PATH/<id>\`.

Machine: $(machine_line); comet $(comet_rev); server and clients on loopback,
same machine (so every figure includes both ends' kernel work), in $BENCH_NETNS. Tuning applied: see tune.log.

| | |
|---|---|
| connections reached | $CONNECTED of $CONNECTIONS |
| time to connect | $(jq -r '.all_connected_s // "never"' "$F") s for all (floodtest); the ${CONNECTED} reached by ${LAST_CONNECT_S:-?} s (floodtest's rows), ~$CONNECT_S s by this script's clock; 98 % of them by ${NEARLY_S:-?} s. The listen queues overflowed $OVERFLOWS times meanwhile (TcpExtListenOverflows, machine-wide): each overflow drops a handshake, which the client's kernel retries about 1, 3, 7, 15 and 31 s later: the tail |
| server RSS baseline / at $CONNECTED idle / after the message phase / at the ramp's end / 30 s later / peak | $RSS_BASE / $RSS_IDLE / $RSS_LOAD / $RSS_RAMP_END / $RSS_AFTER / $RSS_PEAK KB (30 s later the history held $HISTORY_AFTER_KB KB of messages, kept on purpose: 32 per id, 2 minutes) |$AGED_LINE
| user-space bytes per connection | $USER_B B ((idle - baseline) RSS / connections) |
| kernel slab per socket | $SLAB_B B (Slab delta / $SOCKETS sockets, both ends, machine-wide) |
| kernel TCP buffer memory per socket, idle | $TCP_MEM_B B (sockstat mem pages delta x 4096 / sockets) |
| machine TCP sockets baseline / idle | $TCP_INUSE_BASE / $TCP_INUSE_IDLE |
| client (floodtest, all processes) RSS | $CLIENT_RSS KB = $CLIENT_B B per connection |
| message phase | $M_SENT sent at $MSG_RATE msg/s for ${DURATION_S}s; $M_PROMISED deliveries promised, $M_RECEIVED received ($LOST lost); p99 of each second: median $(awk -v v="$M_P99_MEDIAN" 'BEGIN {printf "%.3f", v / 1000}') ms, worst $(awk -v v="$M_P99" 'BEGIN {printf "%.3f", v / 1000}') ms; CPU per delivery (µs: comet user / comet kernel / floodtest / all else; machine busy) ${M_CPU//\// / } |
| latency over the whole run p50 / p90 / p99 / p99.9 / max | $(lat p50) / $(lat p90) / $(lat p99) / $(lat p999) / $(lat max) ms |
| highest sustained delivery rate | **$BEST msg/s** (ramp below; the loopback ceiling measured with a bare io_uring sender and epoll reader is ~170k/s at 10k sockets) |
| server CPU | $CPU_IDLE s to connect and hold, $CPU_END s at the end (utime + stime) |
| graceful shutdown (SIGTERM) with $OPEN_AT_STOP connections open | $SHUTDOWN_S s until the process exited (its streams all ended after ${ENDED_MS:-?} ms; $CUT workers cut what was still open at --shutdown-timeout-ms, see comet.err); $GRACEFUL streams ended with their last chunk (floodtest) |$PERF_LINE
| floodtest errors | $(jq -r .errors "$F") |

## Ramp

$RAMP_TABLE

$(if [[ $FAULTS == 1 ]]; then cat "$DIR/faults.md"; echo; echo "Fault phase: ${FAULTS_FAILED:-every step completed}."; else echo "Fault phase: skipped (FAULTS=0)."; fi)

Files: memlog.log, floodtest.{log,tsv,json}, msggen-*.{log,json}, comet.{out,err}, tune.log, metrics-idle.txt;
graphs memory.png (the seed's graph) and run.png.

![memory](memory.png)
![run](run.png)
EOF
log "done: $DIR/summary.md"
cat "$DIR/summary.md"
