#!/usr/bin/env bash
# bench-features: what auth, history and heartbeats cost in memory, on loopback.
#
# Two runs of comet, one after the other, each with CONNS idle SSE subscribers (/events/<id>,
# ids 1..CONNS, opened at RATE per second by floodtest):
#   off: `comet serve --heartbeat-ms 0 --history-messages 0`, no auth, subscribers without
#        tokens;
#   on:  `comet serve --auth-secret SECRET --heartbeat-ms HEARTBEAT_MS` (history on, comet's
#        defaults), each subscriber with its own HS256 token (floodtest --jwt-secret).
# For each: RSS before connecting; all connected, then held HOLD with no messages (at least one
# heartbeat period, so every stream has had its heartbeat); RSS and /metrics again -> bytes per
# idle connection (goal: under 256 B with everything on). Then one message (MSG_SIZE bytes) to
# each of ids 1..HISTORY_IDS through the batch publish API, and /metrics' comet_history_bytes
# and comet_history_ids (summed over workers) with the RSS growth -> history bytes per active
# id. The "off" run's growth is the control: delivery alone, with no history.
# Writes results/features/<yyyy-mm-dd>-<label>/ with summary.md and, per run, off/ and on/
# with raw logs and /metrics snapshots.
#
# Settings (environment or flags; flags win):
#   CONNS=10000        --conns        idle subscribers per run (e.g. CONNS=500 for a smoke run)
#   RATE=500           --rate         connections opened per second
#   HOLD=35s           --hold         idle time after all connected (> HEARTBEAT_MS)
#   HEARTBEAT_MS=15000 --heartbeat-ms the "on" run's heartbeat period
#   HISTORY_IDS=10000  --history-ids  ids that get one message each
#   MSG_SIZE=64        --msg-size     bytes per message
#   SECRET=bench-features-secret      the "on" run's --auth-secret
#   LABEL=run          --label        results folder suffix
#   WORKERS=           --workers      comet --workers (default: comet's own)
#   RESULTS=results/features          where result folders go
set -euo pipefail

BENCH=features
COMMAND_LINE="$0 $*"
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
# variable, flag (- for none), default: see bench_settings in lib.sh and the header above.
SETTINGS=(
    CONNS         --conns         10000
    RATE          --rate          500
    HOLD          --hold          35s
    HEARTBEAT_MS  --heartbeat-ms  15000
    HISTORY_IDS   --history-ids   10000
    MSG_SIZE      --msg-size      64
    SECRET        -               bench-features-secret
    LABEL         --label         run
    WORKERS       --workers       ''
    RESULTS       -               results/features
)
bench_settings "$@"
BIN=$PWD/target/release
HOLD_S=$(seconds "$HOLD")
CONNECT_S=$(((CONNS + RATE - 1) / RATE))
((HOLD_S * 1000 > HEARTBEAT_MS)) || log "WARNING: HOLD ($HOLD) is not longer than one heartbeat period (${HEARTBEAT_MS} ms)"

log "build"
command -v jq >/dev/null || ./tools/setup.sh >/dev/null
cargo build --release -q -p comet -p floodtest

bench_results_dir "$RESULTS" "$LABEL"
ROOT=$DIR
log "results in $ROOT"

# Everything this script starts, stopped by pid on exit.
COMET_PID= FLOOD_PID=
cleanup() { kill_quietly "$FLOOD_PID" "$COMET_PID"; }
trap cleanup EXIT

# Chunks floodtest received so far (sixth column of its stats TSV).
flood_chunks() { awk -F'\t' '!/^#/ {c = $6} END {print c + 0}' "$DIR/floodtest.tsv" 2>/dev/null || echo 0; }
# a / b rounded, 0 when b is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print 0; else printf "%.0f\n", a / b}'; }

# One message of MSG_SIZE bytes to each of ids 1..HISTORY_IDS: POST /send with one
# `<id> <message>` line per id, batches kept under comet's 64 KiB body limit.
publish_each_id() {
    local batch=$((60000 / (MSG_SIZE + 8))) start end msg
    ((batch > 0)) || die "MSG_SIZE $MSG_SIZE is too large for one batch"
    msg=$(head -c "$MSG_SIZE" /dev/zero | tr '\0' x)
    : >"$DIR/publish.log"
    for ((start = 1; start <= HISTORY_IDS; start += batch)); do
        end=$((start + batch - 1))
        ((end <= HISTORY_IDS)) || end=$HISTORY_IDS
        seq "$start" "$end" | sed "s/\$/ $msg/" >"$DIR/batch.txt"
        curl -sS --max-time 30 --data-binary @"$DIR/batch.txt" "http://$PUBLISH/send" >>"$DIR/publish.log" ||
            log "WARNING: a publish batch failed"
        echo >>"$DIR/publish.log"
    done
    rm -f "$DIR/batch.txt"
}

declare -A R

# run_mode NAME FLOODTEST_ARGS -- COMET_ARGS...: one run; figures go to R[NAME,*].
run_mode() {
    local mode=$1 flood_args=$2
    shift 3
    DIR=$ROOT/$mode
    mkdir -p "$DIR"
    log "[$mode] starting comet $*"
    start_comet ${WORKERS:+--workers $WORKERS} "$@"
    log "[$mode] comet pid $COMET_PID public=$PUBLIC publish=$PUBLISH"
    R[$mode,args]="$*"
    sleep 2
    if [[ $mode == on ]]; then
        # A subscribe without a token must be refused: auth is really on.
        R[$mode,untokened]=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$PUBLIC/events/1" || true)
    fi
    save_metrics "$DIR/metrics-base.txt"
    R[$mode,rss_base]=$(rss_kb "$COMET_PID")
    R[$mode,heap_base]=$(metric_sum comet_heap_bytes "$DIR/metrics-base.txt")

    log "[$mode] floodtest: $CONNS x /events at $RATE/s (~${CONNECT_S}s)"
    # shellcheck disable=SC2086 # flood_args is a list of arguments
    "$BIN/floodtest" --target "$PUBLIC" -n "$CONNS" --rate "$RATE" --path events $flood_args \
        --duration "$((CONNECT_S * 3 + HOLD_S + 300))s" --stats-file "$DIR/floodtest.tsv" \
        --json "$DIR/floodtest.json" >"$DIR/floodtest.log" 2>"$DIR/floodtest.err" &
    FLOOD_PID=$!
    wait_connected "$CONNS" $((CONNECT_S * 3 + 60))
    R[$mode,connected]=$(flood_connected)
    save_metrics "$DIR/metrics-connected.txt"
    local chunks0
    chunks0=$(flood_chunks)
    log "[$mode] ${R[$mode,connected]} connected; holding ${HOLD_S}s with no messages"
    sleep "$HOLD_S"
    save_metrics "$DIR/metrics-idle.txt"
    R[$mode,rss_idle]=$(rss_kb "$COMET_PID")
    R[$mode,heap_idle]=$(metric_sum comet_heap_bytes "$DIR/metrics-idle.txt")
    R[$mode,hb_chunks]=$(($(flood_chunks) - chunks0))
    R[$mode,heartbeats]=$(($(metric_sum comet_heartbeats_total "$DIR/metrics-idle.txt") - $(metric_sum comet_heartbeats_total "$DIR/metrics-connected.txt")))
    local conns=$((R[$mode,connected] > 0 ? R[$mode,connected] : 1))
    R[$mode,rss_per_conn]=$(ratio $(((R[$mode,rss_idle] - R[$mode,rss_base]) * 1024)) "$conns")
    R[$mode,heap_per_conn]=$(ratio $((R[$mode,heap_idle] - R[$mode,heap_base])) "$conns")

    log "[$mode] one ${MSG_SIZE}-byte message to each of ids 1..$HISTORY_IDS"
    publish_each_id
    R[$mode,published]=$(jq -s 'map(.messages // 0) | add // 0' "$DIR/publish.log")
    R[$mode,delivered]=$(jq -s 'map(.connections // 0) | add // 0' "$DIR/publish.log")
    sleep 2
    save_metrics "$DIR/metrics-published.txt"
    local m=$DIR/metrics-published.txt
    R[$mode,rss_pub]=$(rss_kb "$COMET_PID")
    R[$mode,heap_pub]=$(metric_sum comet_heap_bytes "$m")
    R[$mode,hist_ids]=$(metric_sum comet_history_ids "$m")
    R[$mode,hist_msgs]=$(metric_sum comet_history_messages "$m")
    R[$mode,hist_bytes]=$(metric_sum comet_history_bytes "$m")
    R[$mode,hist_per_id]=$(ratio "${R[$mode,hist_bytes]}" "${R[$mode,hist_ids]}")
    R[$mode,rss_growth_per_id]=$(ratio $(((R[$mode,rss_pub] - R[$mode,rss_idle]) * 1024)) "$HISTORY_IDS")
    R[$mode,heap_growth_per_id]=$(ratio $((R[$mode,heap_pub] - R[$mode,heap_idle])) "$HISTORY_IDS")
    R[$mode,cpu]=$(cpu_s "$COMET_PID")

    # comet first: its graceful shutdown ends every stream, and floodtest exits once all ended.
    log "[$mode] stopping"
    stop_comet 10 >/dev/null
    for _ in $(seq 100); do
        kill -0 "$FLOOD_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -TERM "$FLOOD_PID" 2>/dev/null || true
    wait "$FLOOD_PID" || log "WARNING: [$mode] floodtest exited with $?"
    FLOOD_PID=
    R[$mode,flood_errors]="$(jq -r '.errors' "$DIR/floodtest.json" 2>/dev/null || echo "?") ($(jq -r '.counters.errors_status' "$DIR/floodtest.json" 2>/dev/null || echo "?"))"
    # Pairs for the summary table.
    R[$mode,rss]="${R[$mode,rss_base]} / ${R[$mode,rss_idle]}"
    R[$mode,heap]="${R[$mode,heap_base]} / ${R[$mode,heap_idle]}"
    R[$mode,published]="${R[$mode,published]} / ${R[$mode,delivered]}"
}

LOAD_START=$(load_avg)
run_mode off "" -- --heartbeat-ms 0 --history-messages 0
run_mode on "--jwt-secret $SECRET" -- --auth-secret "$SECRET" --heartbeat-ms "$HEARTBEAT_MS"
LOAD_END=$(load_avg)
DIR=$ROOT

ON_B=${R[on,rss_per_conn]}
if ((ON_B < 256)); then
    GOAL="**Goal met**: ${ON_B} B per idle connection with auth, history and heartbeats on (under 256 B; ${R[off,rss_per_conn]} B with them off)."
else
    GOAL="**Goal NOT met**: ${ON_B} B per idle connection with auth, history and heartbeats on (goal: under 256 B; ${R[off,rss_per_conn]} B with them off)."
fi
if ((CONNS < 10000)); then
    GOAL="$GOAL (A run with $CONNS connections, not 10,000: comet's fixed costs and page granularity weigh more per connection.)"
fi
if [[ ${R[on,untokened]} != 401 ]]; then
    GOAL="$GOAL **A subscribe without a token got ${R[on,untokened]}, not 401: auth was not on.**"
fi
if ((R[on,heartbeats] == 0)); then
    GOAL="$GOAL **No heartbeat was sent during the hold (comet_heartbeats_total did not move).**"
fi
row() { printf '| %s | %s | %s |\n' "$1" "${R[off,$2]}" "${R[on,$2]}"; }

{
    cat <<EOF
# bench-features: $LABEL ($(date -u +%FT%TZ))

Command: \`$COMMAND_LINE\` with CONNS=$CONNS RATE=$RATE HOLD=$HOLD HEARTBEAT_MS=$HEARTBEAT_MS
HISTORY_IDS=$HISTORY_IDS MSG_SIZE=$MSG_SIZE WORKERS=${WORKERS:-default}

Machine: $(machine_line);
comet $(comet_rev); client and server on loopback, same machine.

$GOAL

Both runs: $CONNS \`/events/<id>\` subscribers (floodtest), all connected, then ${HOLD_S} s with no
messages; then one ${MSG_SIZE}-byte message to each of ids 1..$HISTORY_IDS (\`POST /send\` batches).
Bytes per connection = (RSS after the hold - RSS before connecting) / connections; the heap
figures are comet's own \`comet_heap_bytes\` (what the allocator holds), which moves less with
page-granular effects than RSS.

| | off | on |
|---|---|---|
| \`comet serve\` arguments (plus the listen addresses) | \`${R[off,args]}\` | \`${R[on,args]}\` (history: comet's defaults) |
| subscribers | no token | \`Authorization: Bearer <HS256 jwt>\`, \`sub\` = id |
| subscribe without a token | | HTTP ${R[on,untokened]} |
EOF
    row "connected (of $CONNS)" connected
    row "floodtest errors (of which non-200 answers)" flood_errors
    row "RSS before connecting / after the idle hold (KB)" rss
    row "**user-space bytes per idle connection (RSS)**" rss_per_conn
    row "heap before connecting / after the hold (comet_heap_bytes)" heap
    row "heap bytes per idle connection" heap_per_conn
    row "heartbeats sent during the hold (comet_heartbeats_total)" heartbeats
    row "chunks floodtest received during the hold (heartbeats)" hb_chunks
    row "messages published / deliveries (answers' connections)" published
    row "comet_history_ids after publishing" hist_ids
    row "comet_history_messages" hist_msgs
    row "comet_history_bytes" hist_bytes
    row "**history bytes per active id (comet_history_bytes / comet_history_ids)**" hist_per_id
    row "RSS after publishing (KB)" rss_pub
    row "RSS growth per published id (B)" rss_growth_per_id
    row "heap growth per published id (B)" heap_growth_per_id
    row "comet CPU (s, utime + stime)" cpu
    cat <<EOF

History per active id, as memory: the "on" run's growth per id less the "off" run's (delivery
alone): $((R[on,rss_growth_per_id] - R[off,rss_growth_per_id])) B by RSS, $((R[on,heap_growth_per_id] - R[off,heap_growth_per_id])) B by heap; comet's own account:
${R[on,hist_per_id]} B per id (${R[on,hist_msgs]} messages of ${MSG_SIZE} B in ${R[on,hist_ids]} ids).

Load average at start / end: $LOAD_START / $LOAD_END (anything else running on the machine skews
every figure).

Files, in \`off/\` and \`on/\`: \`floodtest.log\`/\`.tsv\`/\`.json\`, \`publish.log\` (the publish
answers), \`metrics-base.txt\` (before connecting), \`metrics-connected.txt\`, \`metrics-idle.txt\`
(after the hold), \`metrics-published.txt\`, \`comet.out\`/\`.err\`.
EOF
} >"$ROOT/summary.md"
log "done: $ROOT/summary.md"
cat "$ROOT/summary.md"
