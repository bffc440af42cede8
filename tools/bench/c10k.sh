#!/usr/bin/env bash
# bench-c10k: the seed's experiment end to end, on loopback.
#
#   1. build the release binaries; start `comet serve` on free loopback ports;
#   2. memlog every MEMLOG_INTERVAL seconds (RSS, connections, kernel TCP memory, slab, CPU);
#   3. floodtest connects CONNECTIONS subscribers at RATE per second, then they are held idle
#      for HOLD;
#   4. msggen sends MSG_RATE messages per second to random ids for DURATION;
#   5. stop everything this script started (by pid) and write
#      results/c10k/<yyyy-mm-dd>-<label>/ with raw logs, PNG graphs and summary.md.
#
# Settings (environment or flags; flags win):
#   DURATION=10m      --duration    message phase (e.g. 60s, 10m, 24h)
#   CONNECTIONS=10000 --connections subscribers
#   RATE=100          --rate        connections opened per second
#   MSG_RATE=1000     --msg-rate    messages per second (the seed: 100 generators x 100 ms)
#   MSG_SIZE=64       --msg-size    message bytes (starts with the ts= stamp)
#   HOLD=30s          --hold        idle hold between connecting and the message phase
#   LABEL=run         --label       results folder suffix
#   WORKERS=          --workers     comet --workers (default: comet's own)
#   PATH_KIND=test    --path        test (chunked HTML) or events (SSE)
#   MEMLOG_INTERVAL=2               seconds between memlog lines
#   RESULTS=results/c10k            where result folders go
set -euo pipefail

BENCH=c10k
COMMAND_LINE="$0 $*"
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
# variable, flag (- for none), default: see bench_settings in lib.sh and the header above.
SETTINGS=(
    DURATION         --duration     10m
    CONNECTIONS      --connections  10000
    RATE             --rate         100
    MSG_RATE         --msg-rate     1000
    MSG_SIZE         --msg-size     64
    HOLD             --hold         30s
    LABEL            --label        run
    WORKERS          --workers      ''
    PATH_KIND        --path         test
    MEMLOG_INTERVAL  -              2
    RESULTS          -              results/c10k
)
bench_settings "$@"
BIN=$PWD/target/release
DURATION_S=$(seconds "$DURATION")
HOLD_S=$(seconds "$HOLD")
CONNECT_S=$(((CONNECTIONS + RATE - 1) / RATE))

log "setup and build"
./tools/setup.sh >/dev/null
cargo build --release -q -p comet -p floodtest -p msggen -p memlog

bench_results_dir "$RESULTS" "$LABEL"
log "results in $DIR"

# Everything this script starts, stopped by pid on exit.
COMET_PID= MEMLOG_PID= FLOOD_PID=
cleanup() { kill_quietly "$FLOOD_PID" "$MEMLOG_PID" "$COMET_PID"; }
trap cleanup EXIT

# Connections the server reports (sum of comet_connections), from memlog's latest line.
metric_connections() { awk -F'\t' '!/^#/ {c = $4} END {print c}' "$DIR/memlog.log"; }

log "starting comet"
start_comet ${WORKERS:+--workers $WORKERS}
log "comet pid $COMET_PID public=$PUBLIC publish=$PUBLISH"
sleep 2
RSS_BASE=$(rss_kb "$COMET_PID")
LOAD_START=$(load_avg)
TCP_INUSE_BASE=$(tcp_field inuse)
TCP_MEM_BASE=$(tcp_field mem)
SLAB_BASE=$(slab_kb)

start_memlog

# floodtest outlives the message phase by a margin; it is stopped explicitly below.
FLOOD_S=$((CONNECT_S * 3 + HOLD_S + DURATION_S + 120))
log "floodtest: $CONNECTIONS x /$PATH_KIND at $RATE/s (~${CONNECT_S}s)"
"$BIN/floodtest" --target "$PUBLIC" -n "$CONNECTIONS" --rate "$RATE" --path "$PATH_KIND" \
    --duration "${FLOOD_S}s" --stats-file "$DIR/floodtest.tsv" --json "$DIR/floodtest.json" \
    >"$DIR/floodtest.log" 2>"$DIR/floodtest.err" &
FLOOD_PID=$!

wait_connected "$CONNECTIONS" $((CONNECT_S * 3 + 60))
CONNECTED=$(flood_connected)
log "$CONNECTED connected; holding ${HOLD_S}s"
sleep "$HOLD_S"
RSS_IDLE=$(rss_kb "$COMET_PID")
TCP_INUSE_IDLE=$(tcp_field inuse)
TCP_MEM_IDLE=$(tcp_field mem)
SLAB_IDLE=$(slab_kb)
CONNS_IDLE=$(metric_connections)

log "msggen: $MSG_RATE msg/s to ids 1..$CONNECTIONS for ${DURATION_S}s"
MSGGEN_CMD=("$BIN/msggen" --target "$PUBLISH" --rate "$MSG_RATE" --max-id "$CONNECTIONS"
    --size "$MSG_SIZE" --duration "${DURATION_S}s" --json "$DIR/msggen.json"
    --stats-file "$DIR/msggen.tsv")
"${MSGGEN_CMD[@]}" >"$DIR/msggen.log" 2>"$DIR/msggen.err" || log "WARNING: msggen reported failures"
TCP_MEM_LOAD=$(tcp_field mem)

# Let the last deliveries arrive, then stop floodtest (SIGTERM: it prints its summary).
sleep 2
kill -TERM "$FLOOD_PID" 2>/dev/null || true
wait "$FLOOD_PID" || log "WARNING: floodtest exited with $?"
FLOOD_PID=
RSS_END=$(rss_kb "$COMET_PID")
LOAD_END=$(load_avg)
# VmHWM can lag VmRSS (the kernel folds per-thread RSS counters in lazily): take the largest
# of it and every RSS figure seen.
RSS_PEAK=$(rss_peak_kb "$COMET_PID" "$RSS_IDLE" "$RSS_END")
CPU_S=$(cpu_s "$COMET_PID")

stop_comet 5 >/dev/null
wait "$MEMLOG_PID" 2>/dev/null || true
MEMLOG_PID=

log "plotting"
tools/plot/plot.sh "$DIR" "$LABEL" >/dev/null

# Figures.
F=$DIR/floodtest.json M=$DIR/msggen.json
jqf() { jq -r "$1" "$2"; }
RECEIVED=$(jqf .counters.messages "$F")
PROMISED=$(jqf .connections "$M")
SENT=$(jqf .sent "$M")
ACCEPTED=$(jqf .accepted "$M")
FAILED=$(jqf .failed "$M")
LOST=$((PROMISED - RECEIVED))
UNREACHED=$((ACCEPTED - PROMISED))
conns_for_ratio=$((CONNECTED > 0 ? CONNECTED : 1))
USER_B=$(((RSS_IDLE - RSS_BASE) * 1024 / conns_for_ratio))
# Both ends of every connection are on this machine: 2 x CONNECTED sockets. sockstat and Slab
# are machine-wide, so anything else running moves them too (LOAD_* and TCP_INUSE_* say so).
SOCKETS=$((2 * CONNECTED))
sockets_for_ratio=$((SOCKETS > 0 ? SOCKETS : 1))
SLAB_B=$(((SLAB_IDLE - SLAB_BASE) * 1024 / sockets_for_ratio))
lat() { jqf ".latency_us.$1" "$F" | awk '{printf "%.3f", $1 / 1000}'; }
if ((LOST != 0)); then
    LOSS_LINE="**LOSS: $LOST messages promised by the server (sum of \`connections\` in its answers) were not received. This is a bug.**"
else
    LOSS_LINE="No loss: every delivery the server promised was received."
fi
if ((FAILED != 0)); then
    LOSS_LINE="$LOSS_LINE **$FAILED publish requests failed.**"
fi

cat >"$DIR/summary.md" <<EOF
# bench-c10k: $LABEL ($(date -u +%FT%TZ))

Command: \`$COMMAND_LINE\` with DURATION=$DURATION CONNECTIONS=$CONNECTIONS RATE=$RATE
MSG_RATE=$MSG_RATE MSG_SIZE=$MSG_SIZE HOLD=$HOLD PATH_KIND=$PATH_KIND WORKERS=${WORKERS:-default}

Machine: $(machine_line);
comet $(comet_rev); client and server on loopback, same machine.

| | |
|---|---|
| connections reached | $CONNECTED of $CONNECTIONS (floodtest), $CONNS_IDLE by the server's /metrics (includes publish and metrics connections) |
| time to connect | $(jqf '.all_connected_s // "never"' "$F") s at $RATE/s |
| server RSS baseline | $RSS_BASE KB |
| server RSS at $CONNECTED idle | $RSS_IDLE KB |
| server RSS peak | $RSS_PEAK KB (VmHWM and memlog) |
| server RSS at end | $RSS_END KB |
| user-space bytes per connection | $USER_B B ((idle - baseline) / connections) |
| kernel bytes per socket, idle | $SLAB_B B (/proc/meminfo Slab delta / $SOCKETS sockets, both ends: $((2 * SLAB_B)) B per connection) |
| kernel TCP buffer pages (sockstat mem) baseline / idle / end of load | $TCP_MEM_BASE / $TCP_MEM_IDLE / $TCP_MEM_LOAD pages of 4 KB (queued data only; an idle socket holds none) |
| machine-wide TCP sockets baseline / idle | $TCP_INUSE_BASE / $TCP_INUSE_IDLE (sockstat inuse; the delta should be about $SOCKETS) |
| load average at start / end | $LOAD_START / $LOAD_END (anything else running on the machine skews every figure) |
| messages sent / accepted / failed | $SENT / $ACCEPTED / $FAILED |
| deliveries promised / received | $PROMISED / $RECEIVED (accepted for ids with no subscriber: $UNREACHED) |
| latency p50 / p90 / p99 / p99.9 / max | $(lat p50) / $(lat p90) / $(lat p99) / $(lat p999) / $(lat max) ms |
| server CPU | $CPU_S s (utime + stime) |
| floodtest errors | $(jqf .errors "$F") |

$LOSS_LINE

Seed (2008, Erlang/mochiweb, 10k connections): 78 MB, ~8 KB per user.

Files: \`memlog.log\` (memlog), \`floodtest.log\`/\`.tsv\`/\`.json\`, \`msggen.log\`/\`.tsv\`/\`.json\`,
\`comet.out\`/\`.err\`; graphs \`memory.png\` (the seed's graph) and \`run.png\`.

![memory](memory.png)
![run](run.png)
EOF
log "done: $DIR/summary.md"
cat "$DIR/summary.md"
