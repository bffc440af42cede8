#!/usr/bin/env bash
# bench-jetstream: what the JetStream backplane costs, on loopback (issue 14's goals).
#
#   1. latency, both modes in one run: one `nats-server -js`; nodes "js" and "js-pub"
#      (`--cluster`, JetStream, the default) and "core" and "core-pub" (`--cluster
#      --cluster-core --cluster-prefix core`) side by side; "js" and "core" each hold
#      SUBSCRIBERS `/test/` streams (floodtest, one id each), and MSG_RATE msg/s (msggen, random
#      ids among them) go to the "-pub" node of the same mode for DURATION, at the same time: so
#      in both modes every message crosses the backplane (a core node delivers its own
#      publishes without NATS; the first runs published to the subscribers' node, and compared
#      JetStream with no backplane at all). Publish-to-delivery percentiles per mode from
#      floodtest's stamps, every accepted message counted. Goal: the JetStream p99 at most
#      P99_EXTRA_MS above core NATS's.
#   2. memory against the number of ids: a fresh nats-server and one JetStream node; one message
#      to each of IDS ids in steps (batches of BATCH lines to `POST /send`, each line once): per
#      step, nats-server's RSS and the stream's subjects, and the node's RSS and history bytes
#      (its memory per id is the history it keeps; the backplane itself, one consumer, keeps
#      nothing per id).
#   Writes results/jetstream/<yyyy-mm-dd>-<label>/: summary.md, latency-{js,core}.*,
#   memory.tsv, the processes' logs.
#
# Settings (environment or flags; flags win):
#   SUBSCRIBERS=1000      --subscribers  streams per node in phase 1
#   MSG_RATE=1000         --msg-rate     messages per second per node in phase 1
#   DURATION=60s          --duration     phase 1's publishing time
#   P99_EXTRA_MS=2        --p99-extra-ms phase 1's goal
#   IDS="10000 100000 1000000"  --ids    phase 2's steps (ids in all after each step; none: skip)
#   BATCH=2000            --batch        lines per publish batch in phase 2
#   LABEL=run             --label        results folder suffix
#   RESULTS=results/jetstream            where result folders go
set -euo pipefail

BENCH=jetstream
COMMAND_LINE="$0 $*"
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
SETTINGS=(
    SUBSCRIBERS   --subscribers   1000
    MSG_RATE      --msg-rate      1000
    DURATION      --duration      60s
    P99_EXTRA_MS  --p99-extra-ms  2
    IDS           --ids           "10000 100000 1000000"
    BATCH         --batch         2000
    LABEL         --label         run
    RESULTS       -               results/jetstream
)
bench_settings "$@"
BIN=$PWD/target/release
DURATION_S=$(seconds "$DURATION")
command -v nats-server >/dev/null || die "nats-server missing (bash tools/setup.sh --test, or apt-get install nats-server)"
command -v jq >/dev/null || die "jq missing"
log "build"
cargo build --release -q -p comet -p floodtest -p msggen
bench_results_dir "$RESULTS" "$LABEL"
log "results in $DIR"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

NATS_PID= JS_PID= CORE_PID= JS_PUB_PID= CORE_PUB_PID= FLOOD_PIDS=()
trap 'kill_quietly "${FLOOD_PIDS[@]}" "$JS_PID" "$CORE_PID" "$JS_PUB_PID" "$CORE_PUB_PID" "$NATS_PID"' EXIT
USED=()
port() {
    pick_port "${USED[@]}"
    USED+=("$FREE_PORT")
}
# start_nats STORE: on two free ports (NATS_PORT, NATS_MON); a port that a client's socket
# took meanwhile (the ephemeral range overlaps) costs a retry on others.
start_nats() {
    local try
    for try in 1 2 3 4 5; do
        port
        NATS_PORT=$FREE_PORT
        port
        NATS_MON=$FREE_PORT
        nats-server -js -sd "$1" -p "$NATS_PORT" -a 127.0.0.1 -m "$NATS_MON" >>"$DIR/nats.log" 2>&1 &
        NATS_PID=$!
        for _ in $(seq 100); do
            kill -0 "$NATS_PID" 2>/dev/null || break
            port_free "$NATS_PORT" || return 0
            sleep 0.1
        done
        kill_quietly "$NATS_PID"
        wait "$NATS_PID" 2>/dev/null || true
    done
    die "nats-server did not start: $(tail -2 "$DIR/nats.log")"
}
stop_pid() {
    [[ -n $1 ]] || return 0
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
# start_node NAME ARGS...: sets NODE_PID, NODE_PUBLIC, NODE_PUBLISH; returns once it listens
# (a port taken meanwhile costs a retry on others, as in start_nats).
start_node() {
    local name=$1 try
    shift
    for try in 1 2 3 4 5; do
        port
        NODE_PUBLIC=127.0.0.1:$FREE_PORT
        port
        NODE_PUBLISH=127.0.0.1:$FREE_PORT
        "$BIN/comet" serve --listen "$NODE_PUBLIC" --publish-listen "$NODE_PUBLISH" --workers 1 \
            --cluster "nats://127.0.0.1:$NATS_PORT" "$@" >"$DIR/$name.out" 2>"$DIR/$name.err" &
        NODE_PID=$!
        for _ in $(seq 300); do
            grep -q '^comet: listening' "$DIR/$name.out" 2>/dev/null && return 0
            kill -0 "$NODE_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill_quietly "$NODE_PID"
        wait "$NODE_PID" 2>/dev/null || true
    done
    die "$name did not start: $(tail -3 "$DIR/$name.err")"
}

# ---- 1. latency, both modes at once ----
log "latency: JetStream and core NATS side by side, $SUBSCRIBERS streams and $MSG_RATE msg/s each, ${DURATION_S}s"
start_nats "$DIR/store-latency"
start_node node-js
JS_PID=$NODE_PID JS_PUBLIC=$NODE_PUBLIC
start_node node-js-pub
JS_PUB_PID=$NODE_PID JS_PUBLISH=$NODE_PUBLISH
start_node node-core --cluster-core --cluster-prefix core
CORE_PID=$NODE_PID CORE_PUBLIC=$NODE_PUBLIC
start_node node-core-pub --cluster-core --cluster-prefix core
CORE_PUB_PID=$NODE_PID CORE_PUBLISH=$NODE_PUBLISH
for mode in js core; do
    target=$JS_PUBLIC
    [[ $mode == core ]] && target=$CORE_PUBLIC
    "$BIN/floodtest" --target "$target" -n "$SUBSCRIBERS" --rate 2000 \
        --duration "$((DURATION_S + 15))s" --json "$DIR/latency-$mode-flood.json" \
        >"$DIR/latency-$mode-flood.log" 2>&1 &
    FLOOD_PIDS+=($!)
done
sleep 5 # every stream open (2000 a second)
"$BIN/msggen" --target "$JS_PUBLISH" --rate "$MSG_RATE" --max-id "$SUBSCRIBERS" \
    --duration "${DURATION_S}s" --json "$DIR/latency-js-msggen.json" >"$DIR/latency-js-msggen.log" 2>&1 &
MSG_JS=$!
"$BIN/msggen" --target "$CORE_PUBLISH" --rate "$MSG_RATE" --max-id "$SUBSCRIBERS" \
    --duration "${DURATION_S}s" --json "$DIR/latency-core-msggen.json" >"$DIR/latency-core-msggen.log" 2>&1 || true
wait "$MSG_JS" || true
for pid in "${FLOOD_PIDS[@]}"; do wait "$pid" || true; done
FLOOD_PIDS=()
for pid in "$JS_PID" "$CORE_PID" "$JS_PUB_PID" "$CORE_PUB_PID"; do stop_pid "$pid"; done
JS_PID= CORE_PID= JS_PUB_PID= CORE_PUB_PID=
stop_pid "$NATS_PID"
NATS_PID=
rm -rf "$DIR/store-latency"
lat() { jq -r "$2" "$DIR/latency-$1-flood.json"; }
acc() { jq -r .accepted "$DIR/latency-$1-msggen.json"; }
P99_JS=$(lat js .latency_us.p99) P99_CORE=$(lat core .latency_us.p99)
EXTRA_US=$((P99_JS - P99_CORE))
if ((EXTRA_US <= P99_EXTRA_MS * 1000)); then
    LAT_VERDICT="**PASS: JetStream's p99 is $(awk -v d="$EXTRA_US" 'BEGIN {printf "%.2f", d / 1000}') ms above core NATS's** (goal: at most $P99_EXTRA_MS ms)."
else
    LAT_VERDICT="**FAIL: JetStream's p99 is $(awk -v d="$EXTRA_US" 'BEGIN {printf "%.2f", d / 1000}') ms above core NATS's** (goal: at most $P99_EXTRA_MS ms)."
fi
lat_row() {
    echo "| $2 | $(acc "$1") / $(lat "$1" .counters.messages) | $(lat "$1" .latency_us.p50) / $(lat "$1" .latency_us.p90) / $(lat "$1" .latency_us.p99) / $(lat "$1" .latency_us.p999) / $(lat "$1" .latency_us.max) µs |"
}

# ---- 2. memory against ids ----
MEM_ROWS=
if [[ $IDS != none ]]; then
    log "memory: one message to each of up to ${IDS##* } ids"
    start_nats "$DIR/store-memory"
    start_node node-memory
    JS_PID=$NODE_PID
    PUBLISH=$NODE_PUBLISH
    # The same stream consumed by a node that keeps no history: the backplane alone.
    start_node node-bare --history-messages 0
    CORE_PID=$NODE_PID
    printf '# ids\tnats_rss_kb\tstream_subjects\tstream_bytes\tnode_rss_kb\tnode_history_bytes\tbare_node_rss_kb\n' >"$DIR/memory.tsv"
    row() { # $1: ids so far
        local jsz subjects bytes
        jsz=$(curl -sf --max-time 10 "http://127.0.0.1:$NATS_MON/jsz?streams=true" || echo '{}')
        subjects=$(jq -r '[.account_details[]?.stream_detail[]? | select(.name | endswith("_USER"))][0].state.num_subjects // "?"' <<<"$jsz")
        bytes=$(jq -r '[.account_details[]?.stream_detail[]? | select(.name | endswith("_USER"))][0].state.bytes // "?"' <<<"$jsz")
        curl -sf --max-time 10 "http://$PUBLISH/metrics" >"$DIR/metrics-memory-$1.txt" || true
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$(rss_kb "$NATS_PID")" "$subjects" "$bytes" \
            "$(rss_kb "$JS_PID")" "$(metric_sum comet_history_bytes "$DIR/metrics-memory-$1.txt")" \
            "$(rss_kb "$CORE_PID")" >>"$DIR/memory.tsv"
    }
    row 0
    done_ids=0
    for step in $IDS; do
        while ((done_ids < step)); do
            n=$((step - done_ids < BATCH ? step - done_ids : BATCH))
            seq $((done_ids + 1)) $((done_ids + n)) | awk '{print $1, "m" $1}' >"$DIR/.batch"
            for try in $(seq 20); do
                code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 --data-binary "@$DIR/.batch" "http://$PUBLISH/send")
                [[ $code == 200 ]] && break
                sleep 1
            done
            [[ $code == 200 ]] || die "a batch of $n was answered $code 20 times"
            done_ids=$((done_ids + n))
        done
        sleep 2 # the node's consumer has routed them (history bytes)
        row "$done_ids"
        log "  $done_ids ids: $(tail -1 "$DIR/memory.tsv")"
    done
    rm -f "$DIR/.batch"
    stop_pid "$JS_PID"
    stop_pid "$CORE_PID"
    JS_PID= CORE_PID=
    stop_pid "$NATS_PID"
    NATS_PID=
    rm -rf "$DIR/store-memory"
    MEM_ROWS=$(awk -F'\t' '!/^#/ {
        if (NR == 2) {n0 = $2; c0 = $5; h0 = $6; b0 = $7}
        per_nats = ($1 > 0) ? sprintf("%.0f", ($2 - n0) * 1024 / $1) : "-";
        per_node = ($1 > 0) ? sprintf("%.0f", ($5 - c0) * 1024 / $1) : "-";
        per_hist = ($1 > 0) ? sprintf("%.0f", ($6 - h0) / $1) : "-";
        per_bare = ($1 > 0) ? sprintf("%.1f", ($7 - b0) * 1024 / $1) : "-";
        printf "| %s | %s (%s B/id) | %s / %s B | %s (%s B/id) | %s B (%s B/id) | %s (%s B/id) |\n", $1, $2, per_nats, $3, $4, $5, per_node, $6, per_hist, $7, per_bare}' "$DIR/memory.tsv")
fi

cat >"$DIR/summary.md" <<EOF
# bench-jetstream: $LABEL ($(date -u +%FT%TZ))

Command: \`$COMMAND_LINE\` with SUBSCRIBERS=$SUBSCRIBERS MSG_RATE=$MSG_RATE DURATION=$DURATION
IDS="$IDS" BATCH=$BATCH.

Machine: $(machine_line); $(nats-server --version); comet $(comet_rev); everything on loopback,
on the same machine.

## Publish to delivery, JetStream against core NATS, in one run

Two pairs of nodes on one \`nats-server -js\`, one worker each, run side by side (JetStream;
core NATS): in each pair one node holds $SUBSCRIBERS \`/test/\` streams and $MSG_RATE msg/s to
random ids among them are published to the other node for $DURATION, so that every message
crosses the backplane in both modes.

$LAT_VERDICT

| mode | accepted / delivered | latency p50 / p90 / p99 / p99.9 / max |
|---|---|---|
$(lat_row js "JetStream (default): answered once stored, delivered from the stream")
$(lat_row core "core NATS (\`--cluster-core\`)")

## Memory against the number of ids

A fresh nats-server and two JetStream nodes (one worker each) consuming the same stream: one
with the default history, one with \`--history-messages 0\` (the backplane alone); one message
to each id, in batches to the first. A node keeps one ordered consumer on the stream and
nothing per id on the backplane: the first node's growth per id is its history (the last
messages of each id, \`--history-messages\`, within \`--history-bytes-max\`: its bytes shown
apart, plus the history's index), the second's is the backplane's. nats-server's per id is
the stream's per-subject state and the message itself.

| ids | nats-server RSS KB | stream subjects / bytes | node RSS KB | node history bytes | node without history, RSS KB |
|---|---|---|---|---|---|
${MEM_ROWS:-| (skipped) | | | | | |}

Files: \`summary.md\`, \`latency-{js,core}-{flood,msggen}.{json,log}\`, \`memory.tsv\`,
\`metrics-memory-<ids>.txt\`, \`node-*.{out,err}\`, \`nats.log\`.
EOF
log "done: $DIR/summary.md"
cat "$DIR/summary.md"
