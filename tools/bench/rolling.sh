#!/usr/bin/env bash
# bench-rolling: a rolling deploy, a crash and a NATS restart under load, on a cluster on
# JetStream; every publish answered 200 must reach its subscriber exactly once, in order.
#
#   1. build the release binaries; start `nats-server -js` (file storage in the results folder,
#      monitoring port) and three `comet serve --cluster` nodes on fixed loopback ports;
#   2. resumetest (one process per PER_PROC subscribers: a process's sockets must fit in the
#      open-files limit, 20,000 here): SUBSCRIBERS SSE subscribers (one id each), subscriber k
#      on node k mod 3; a
#      node that closes or refuses a stream sends its client to a random other node, which
#      resumes it with Last-Event-ID; MSG_RATE messages per second round-robin over the ids for
#      DURATION, to the nodes' publish APIs, each sent again on 503 or a lost connection (same
#      Idempotency-Key, Retry-After honoured; the id's next message waits for it);
#   3. meanwhile, with P = DURATION / 7 from the start of publishing:
#        P, 2P, 3P: node1, node2, node3 in turn get SIGTERM and are started again at once
#                   (same ports; their clients have gone to the other nodes);
#        4P:        node2 is SIGKILLed (a crash), started again at 5P;
#        5P:        nats-server is SIGKILLed and started again OUTAGE later (same storage);
#   4. stop everything this script started (by pid) and write
#      results/rolling/<yyyy-mm-dd>-<label>/: summary.md, rolling.png (received per second,
#      resumes and the events; RSS of each node and of nats-server), events.tsv, rss.tsv, the
#      raw logs of every process, /metrics of each node at the end, nats-server's /jsz.
#
# Settings (environment or flags; flags win):
#   SUBSCRIBERS=30000  --subscribers  SSE subscribers (ids 1..N)
#   MSG_RATE=1000      --msg-rate     messages per second, all ids together
#   DURATION=210s      --duration     publishing time (7 phases)
#   OUTAGE=2s          --outage       how long nats-server stays down
#   WORKERS=1          --workers      comet --workers per node
#   LABEL=run          --label        results folder suffix
#   PER_PROC=15000     --per-proc     subscribers per resumetest process (the rate is split)
#   FOLLOW_RETRY=1     --follow-retry 1: a subscriber whose stream a node ended, cut or refused
#                                     waits its stream's last `retry:` (comet's jittered
#                                     reconnect hint) before it reconnects, as EventSource
#                                     does; 0: at once (a client that ignores the hint)
#   RESUME_RATE=10000  --resume-rate  each node's --resume-rate (comet's default); the `retry:`
#                                     window follows it (2500 was tried: no better here,
#                                     results/rolling/2026-11-30-30k-resume-rate)
#   BACKLOG=32768      --backlog      each node's --backlog (the script raises somaxconn to
#                                     it): the clients of a stopped node all reconnect within
#                                     a second or two, and a SYN a full queue drops waits 1,
#                                     3, 7 s... for the client's kernel to send it again
#   COMET_ARGS=                       more `comet serve` arguments for every node
#   RESULTS=results/rolling           where result folders go
set -euo pipefail

BENCH=rolling
COMMAND_LINE="$0 $*"
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
# variable, flag (- for none), default: see bench_settings in lib.sh and the header above.
SETTINGS=(
    SUBSCRIBERS  --subscribers  30000
    MSG_RATE     --msg-rate     1000
    DURATION     --duration     210s
    OUTAGE       --outage       2s
    WORKERS      --workers      1
    LABEL        --label        run
    PER_PROC     --per-proc     15000
    FOLLOW_RETRY --follow-retry 1
    RESUME_RATE  --resume-rate  10000
    BACKLOG      --backlog      32768
    COMET_ARGS   -              ''
    RESULTS      -              results/rolling
)
bench_settings "$@"
BIN=$PWD/target/release
DURATION_S=$(seconds "$DURATION")
OUTAGE_S=$(seconds "$OUTAGE")
PHASE_S=$((DURATION_S / 7))
((PHASE_S >= 3)) || die "DURATION must be at least 21s (7 phases of 3 s)"

command -v nats-server >/dev/null || die "nats-server missing (bash tools/setup.sh --test, or apt-get install nats-server)"
CAPS=$(raise_listen_caps "$BACKLOG")
[[ -n $CAPS ]] && log "$CAPS"
command -v jq >/dev/null || die "jq missing"
command -v gnuplot >/dev/null || log "WARNING: gnuplot missing: no graph"
log "build"
cargo build --release -q -p comet -p resumetest
bench_results_dir "$RESULTS" "$LABEL"
log "results in $DIR"
# Each subscriber holds a socket; the client needs as many descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Everything started here, stopped by pid on exit.
declare -A PID
NATS_PID= SAMPLER_PID=
RESUME_PIDS=()
cleanup() {
    kill_quietly "${RESUME_PIDS[@]}" "$SAMPLER_PID" "${PID[@]}" "$NATS_PID"
}
trap cleanup EXIT

USED=()
port() {
    pick_port "${USED[@]}"
    USED+=("$FREE_PORT")
}
port
NATS_PORT=$FREE_PORT
port
NATS_MON=$FREE_PORT
declare -A PUBLIC PUBLISH
NODES=(node1 node2 node3)
for node in "${NODES[@]}"; do
    port
    PUBLIC[$node]=127.0.0.1:$FREE_PORT
    port
    PUBLISH[$node]=127.0.0.1:$FREE_PORT
    mkdir -p "$DIR/$node"
done
T0=
events_start

start_nats() {
    setsid nats-server -js -sd "$DIR/nats-store" -p "$NATS_PORT" -a 127.0.0.1 -m "$NATS_MON" \
        >>"$DIR/nats.log" 2>&1 &
    NATS_PID=$!
    for _ in $(seq 100); do
        port_free "$NATS_PORT" || return 0
        sleep 0.1
    done
    die "nats-server did not start"
}

# How many times a node's stdout said it listens (once per start).
listening() {
    local n
    n=$(grep -c '^comet: listening' "$1" 2>/dev/null || true)
    echo "${n:-0}"
}

# start_node NAME: on its fixed ports; returns once it listens (it joins the stream first).
start_node() {
    local node=$1 out=$DIR/$1/comet.out lines now
    lines=$(listening "$out")
    # Its own session, so its own scheduling autogroup (sched_autogroup_enabled): the CPU is
    # shared between the nodes, nats-server and the clients, not between their threads. In one
    # group with 15,000 client threads a node's one worker thread went seconds without running
    # (graceful stops of 6-16 s, results/rolling/2026-11-29-30k-rerun); on a real deployment
    # the clients are other machines. (setsid does not fork here: $! is the node.)
    # shellcheck disable=SC2086 # COMET_ARGS is a list of arguments
    setsid "$BIN/comet" serve --listen "${PUBLIC[$node]}" --publish-listen "${PUBLISH[$node]}" \
        --workers "$WORKERS" --resume-rate "$RESUME_RATE" --backlog "$BACKLOG" \
        --cluster "nats://127.0.0.1:$NATS_PORT" \
        $COMET_ARGS \
        >>"$out" 2>>"$DIR/$node/comet.err" &
    PID[$node]=$!
    for _ in $(seq 300); do
        now=$(listening "$out")
        ((now > lines)) && return 0
        kill -0 "${PID[$node]}" 2>/dev/null || break
        sleep 0.1
    done
    die "$node did not start: $(tail -3 "$DIR/$node/comet.err")"
}

# stop_node NAME SIGNAL: waits for the exit (SIGKILL after 30 s). Its /metrics first, so that
# every process's counters are kept (node*/metrics-<epoch>.txt).
stop_node() {
    local node=$1 pid=${PID[$1]}
    curl -sf --max-time 5 "http://${PUBLISH[$node]}/metrics" >"$DIR/$node/metrics-$(date +%s).txt" || true
    kill "-$2" "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# RSS of each node and of nats-server every second: rss.tsv.
sample() {
    printf '# epoch_s\tnode1_kb\tnode2_kb\tnode3_kb\tnats_kb\n' >"$DIR/rss.tsv"
    while :; do
        local row
        row=$(date +%s)
        for pid in "${PID[node1]}" "${PID[node2]}" "${PID[node3]}" "$NATS_PID"; do
            row+=$'\t'$( (rss_kb "$pid" 2>/dev/null) || echo NaN)
        done
        echo "$row" >>"$DIR/rss.tsv"
        sleep 1
        # The pids change at restarts: read them again from the files the loop below writes.
        # shellcheck disable=SC1091
        [[ -s $DIR/.pids ]] && source "$DIR/.pids"
    done
}
save_pids() {
    local node
    {
        for node in "${NODES[@]}"; do echo "PID[$node]=${PID[$node]}"; done
        echo "NATS_PID=$NATS_PID"
    } >"$DIR/.pids"
}

log "starting nats-server -js and three nodes"
start_nats
for node in "${NODES[@]}"; do start_node "$node"; done
save_pids
sample &
SAMPLER_PID=$!
MEM_START=()
for node in "${NODES[@]}"; do MEM_START+=("$(rss_kb "${PID[$node]}")"); done

TARGETS=$(IFS=,; echo "${PUBLIC[node1]},${PUBLIC[node2]},${PUBLIC[node3]}")
PUBLISHERS=$(IFS=,; echo "${PUBLISH[node1]},${PUBLISH[node2]},${PUBLISH[node3]}")
PROCS=$(((SUBSCRIBERS + PER_PROC - 1) / PER_PROC))
RATE_PER_PROC=$(awk -v r="$MSG_RATE" -v p="$PROCS" 'BEGIN {print r / p}')
log "resumetest: $SUBSCRIBERS subscribers over 3 nodes in $PROCS process(es), $MSG_RATE msg/s for ${DURATION_S}s"
RESUME_CMDS=()
for ((p = 0; p < PROCS; p++)); do
    first=$((1 + p * PER_PROC))
    count=$((p == PROCS - 1 ? SUBSCRIBERS - p * PER_PROC : PER_PROC))
    cmd=("$BIN/resumetest" --target "$TARGETS" --publish "$PUBLISHERS" --first-id "$first"
        --subscribers "$count" --rate "$RATE_PER_PROC" --duration "${DURATION_S}s" --reconnects 0
        --attempts-max 1000 --connect-rate 2000 --ready-timeout 120s --drain 30s
        --json "$DIR/resumetest-$p.json")
    ((FOLLOW_RETRY == 1)) && cmd+=(--follow-retry)
    RESUME_CMDS+=("${cmd[*]#"$BIN/"}")
    "${cmd[@]}" >"$DIR/resumetest-$p.log" 2>"$DIR/resumetest-$p.err" &
    RESUME_PIDS+=($!)
done
# Publishing starts in each process once its subscribers stream; the events count from the
# last one's start.
for ((p = 0; p < PROCS; p++)); do
    for _ in $(seq 1800); do
        grep -q 'subscribers streaming; publishing' "$DIR/resumetest-$p.log" 2>/dev/null && break
        kill -0 "${RESUME_PIDS[p]}" 2>/dev/null ||
            die "resumetest $p ended early: $(tail -3 "$DIR/resumetest-$p.err")"
        sleep 0.1
    done
done
T0=$(date +%s.%N)
event "publishing starts"
at() { # waits until $1 seconds after T0
    local left
    left=$(awk -v t="$1" -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN {d = t - (a - b); print (d > 0) ? d : 0}')
    sleep "$left"
}
for i in 1 2 3; do
    node=node$i
    at $((i * PHASE_S))
    event "$node SIGTERM"
    stop_node "$node" TERM
    start_node "$node"
    save_pids
    event "$node restarted"
done
at $((4 * PHASE_S))
event "node2 SIGKILL"
stop_node node2 KILL
at $((5 * PHASE_S))
start_node node2
save_pids
event "node2 restarted"
event "nats-server SIGKILL"
kill -KILL "$NATS_PID"
wait "$NATS_PID" 2>/dev/null || true
sleep "$OUTAGE_S"
start_nats
save_pids
event "nats-server restarted"

RESUME_RC=0
for pid in "${RESUME_PIDS[@]}"; do
    rc=0
    wait "$pid" || rc=$?
    ((rc > RESUME_RC)) && RESUME_RC=$rc
done
RESUME_PIDS=()
event "resumetest done (exit $RESUME_RC)"
for node in "${NODES[@]}"; do
    curl -sf --max-time 5 "http://${PUBLISH[$node]}/metrics" >"$DIR/$node/metrics.txt" || true
done
curl -sf --max-time 5 "http://127.0.0.1:$NATS_MON/jsz?streams=true" >"$DIR/jsz.json" || true
MEM_END=()
for node in "${NODES[@]}"; do MEM_END+=("$(rss_kb "${PID[$node]}")"); done
NATS_RSS_END=$(rss_kb "$NATS_PID")
kill_quietly "$SAMPLER_PID"
SAMPLER_PID=
for node in "${NODES[@]}"; do stop_node "$node" TERM; done
kill -TERM "$NATS_PID" 2>/dev/null || true
wait "$NATS_PID" 2>/dev/null || true
NATS_PID=
rm -f "$DIR/.pids"
rm -rf "$DIR/nats-store"

for ((p = 0; p < PROCS; p++)); do
    [[ -s $DIR/resumetest-$p.json ]] ||
        die "resumetest $p wrote no summary: $(tail -3 "$DIR/resumetest-$p.err")"
done
# The processes' summaries together: counts summed; resume percentiles, the largest of the
# processes' (an upper bound: percentiles do not add up).
jq -s 'def sum(f): map(f) | add; def top(f): map(f) | max;
    {published: sum(.published), publish_sent: sum(.publish_sent), received: sum(.received),
     lost: sum(.lost), duplicated: sum(.duplicated), reordered: sum(.reordered),
     gaps: sum(.gaps), gaps_unexplained: sum(.gaps_unexplained), gap_skipped: sum(.gap_skipped),
     unfinished: sum(.unfinished), server_closes: sum(.server_closes),
     connect_errors: sum(.connect_errors), replayed: sum(.replayed),
     publish_failed: sum(.publish_failed), publish_retried: sum(.publish_retried),
     publish_conn_lost: sum(.publish_conn_lost), publish_lag_max_ms: top(.publish_lag_max_ms),
     resume_ms: {count: sum(.resume_ms.count), p50: top(.resume_ms.p50),
                 p99: top(.resume_ms.p99), max: top(.resume_ms.max)},
     resume_arrival_ms: {count: sum(.resume_arrival_ms.count), p50: top(.resume_arrival_ms.p50),
                 p99: top(.resume_arrival_ms.p99), max: top(.resume_arrival_ms.max)},
     resumes_unstamped: sum(.resumes_unstamped),
     processes: length}' "$DIR"/resumetest-*.json >"$DIR/resumetest.json"
J=$DIR/resumetest.json
j() { jq -r "$1" "$J"; }
LOST=$(j .lost) DUPLICATED=$(j .duplicated) REORDERED=$(j .reordered)
UNEXPLAINED=$(j .gaps_unexplained)
if ((LOST == 0 && DUPLICATED == 0 && REORDERED == 0 && UNEXPLAINED == 0)); then
    VERDICT="**Every publish answered 200 arrived exactly once, in order** (0 lost, 0 duplicated, 0 reordered, no gap inside the history window)."
else
    VERDICT="**FAIL: $LOST lost, $DUPLICATED duplicated, $REORDERED reordered, $UNEXPLAINED gaps inside the history window.**"
fi
if (($(j .publish_failed) > 0)); then
    VERDICT="$VERDICT $(j .publish_failed) publishes were never stored (given up after every try)."
fi
metric() { awk -v m="$1" '$1 == m {print $2}' "$DIR/$2/metrics.txt" 2>/dev/null || echo -; }
# A counter summed over every process of every node: stop_node keeps each one's last /metrics
# (metrics.txt repeats the last process's, so it is left out).
every_process() { cat "$DIR"/node*/metrics-*.txt 2>/dev/null | awk -v m="$1" '$1 ~ "^" m "({|$)" {n += $2} END {print n + 0}'; }
node_rows() {
    local i=0 node
    for node in "${NODES[@]}"; do
        echo "| $node | ${MEM_START[i]} / ${MEM_END[i]} KB | $(metric comet_cluster_fetches_total "$node") / $(metric comet_cluster_fetch_failed_total "$node") | $(metric comet_cluster_stored_total "$node") / $(metric comet_cluster_duplicates_total "$node") / $(metric comet_cluster_publish_failed_total "$node") | $(metric comet_cluster_reconnects_total "$node") |"
        i=$((i + 1))
    done
}
RSS_PEAK=$(awk -F'\t' '!/^#/ {for (i = 2; i <= 4; i++) if ($i != "NaN" && $i > m) m = $i} END {print m + 0}' "$DIR/rss.tsv")
NATS_PEAK=$(awk -F'\t' '!/^#/ && $5 != "NaN" && $5 > m {m = $5} END {print m + 0}' "$DIR/rss.tsv")
STREAM=$(jq -r '[.account_details[]?.stream_detail[]? | select(.name | endswith("_USER"))][0] // empty
    | "\(.state.messages) messages, \(.state.bytes) bytes, \(.state.num_subjects // "?") subjects, seq \(.state.first_seq)..\(.state.last_seq)"' \
    "$DIR/jsz.json" 2>/dev/null || true)

if command -v gnuplot >/dev/null; then
    # Every process's per-second progress, summed by second.
    awk '/^t=/ {t = $1; sub(/^t=/, "", t); sub(/s$/, "", t); for (i = 2; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
         r[t] += v["received"]; c[t] += v["server_closes"]; l[t] += v["lost_so_far"]}
         END {for (t in r) printf "%s\t%s\t%s\t%s\n", t, r[t], c[t], l[t]}' \
        "$DIR"/resumetest-*.log | sort -n >"$DIR/progress.tsv"
    awk -F'\t' '!/^#/ {printf "set arrow from %s, graph 0 to %s, graph 1 nohead dt 2 lc rgb \"gray\"\n", $1, $1;
        printf "set label \"%s\" at %s, graph 0.98 rotate by 90 right font \",7\" tc rgb \"gray40\"\n", $2, $1}' \
        "$DIR/events.tsv" >"$DIR/events.gp"
    gnuplot -e "dir='$DIR'; label='$LABEL'; t0=$(printf '%.0f' "$T0")" tools/bench/rolling.gp \
        2>"$DIR/gnuplot.err" || log "WARNING: gnuplot failed: $(tail -2 "$DIR/gnuplot.err")"
fi

cat >"$DIR/summary.md" <<EOF
# bench-rolling: $LABEL ($(date -u +%FT%TZ))

Command: \`$COMMAND_LINE\` with SUBSCRIBERS=$SUBSCRIBERS MSG_RATE=$MSG_RATE DURATION=$DURATION
(phase $PHASE_S s) OUTAGE=$OUTAGE WORKERS=$WORKERS FOLLOW_RETRY=$FOLLOW_RETRY RESUME_RATE=$RESUME_RATE BACKLOG=$BACKLOG COMET_ARGS=${COMET_ARGS:-none}

resumetest, $PROCS process(es) (exit $RESUME_RC, the worst): $(printf '`%s` ' "${RESUME_CMDS[@]}")

Machine: $(machine_line); nats-server $(nats-server --version | awk '{print $2}');
comet $(comet_rev); everything on loopback, on the same machine.

Events (seconds since publishing started): $(awk -F'\t' '!/^#/ {printf "%s%s s %s", sep, $1, $2; sep = "; "}' "$DIR/events.tsv").

$VERDICT

| | |
|---|---|
| publishes answered 200 / distinct messages sent | $(j .published) / $(j .publish_sent) (never stored: $(j .publish_failed); tries again after a 503 or a lost connection: $(j .publish_retried); publish connections lost: $(j .publish_conn_lost)) |
| received (distinct) | $(j .received) |
| lost / duplicated / reordered | $LOST / $DUPLICATED / $REORDERED |
| gap notices (unexplained by the history's limits) / messages they announced lost | $(j .gaps) ($UNEXPLAINED) / $(j .gap_skipped) |
| subscribers not caught up at the end | $(j .unfinished) |
| streams closed by a node (deploys, crash) / connect errors | $(j .server_closes) / $(j .connect_errors) |
| messages replayed on resume (from a node's memory or fetched from JetStream) | $(j .replayed) |
| gaps the nodes sent, every process: all / node behind the client's position for 2 s / stream not reachable for 10 s | $(every_process comet_resume_gaps_total) / $(every_process comet_resume_catch_up_gaps_total) / $(every_process comet_resume_stream_gaps_total) |
| resume, connect to 200 head read by the client: p50 / p99 / max ($(j .resume_ms.count) resumes; with several processes, the largest of theirs) | $(j .resume_ms.p50) / $(j .resume_ms.p99) / $(j .resume_ms.max) ms |
| resume, connect to the 200 head's arrival in the client's socket (kernel receive time: without the client's own delays in reading it): p50 / p99 / max ($(j .resume_arrival_ms.count) resumes, $(j .resumes_unstamped) without a receive time) | $(j .resume_arrival_ms.p50) / $(j .resume_arrival_ms.p99) / $(j .resume_arrival_ms.max) ms |
| publisher's largest lag behind schedule | $(j .publish_lag_max_ms) ms |
| RSS peak: nodes / nats-server | $RSS_PEAK / $NATS_PEAK KB (nats-server at the end: $NATS_RSS_END KB) |
| the stream at the end | ${STREAM:-(no /jsz)} |

Per node (metrics at the end are the last process's, since its last restart):

| node | RSS start / end | resumes fetched from JetStream / fetch failed | publishes stored / duplicates / refused (503) | NATS reconnects |
|---|---|---|---|---|
$(node_rows)

Backplane memory per node: a node holds one ordered consumer and no state per id on the
backplane; its RSS above is everything (connections, history, the bridge). JetStream's own
memory is nats-server's (RSS above; the stream on disk in \`jsz.json\`).

Files: \`summary.md\`, \`rolling.png\`, \`events.tsv\`, \`rss.tsv\`, \`progress.tsv\`,
\`resumetest-*.{log,err,json}\` (one per process; \`resumetest.json\` sums them), \`node*/comet.{out,err}\`, \`node*/metrics.txt\`, \`nats.log\`,
\`jsz.json\`.
EOF
log "done: $DIR/summary.md"
cat "$DIR/summary.md"
exit "$RESUME_RC"
