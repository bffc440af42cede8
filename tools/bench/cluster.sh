#!/usr/bin/env bash
# bench-cluster: three comet nodes joined through one nats-server on loopback, against one node
# alone, in the same run; then the same cluster with NATS killed and restarted mid-load.
#
# Run "steady" (then a ramp):
#   1. nats-server (with its monitoring port) and three `comet serve --cluster --cluster-core`
#      nodes (core NATS: the backplane's own cost; JetStream is bench-rolling's), plus a
#      fourth node without --cluster ("solo");
#   2. SUBSCRIBERS ids split over the three nodes (floodtest per node, disjoint id ranges), and
#      the solo node gets as many subscribers as node1 (ids 1..SUBSCRIBERS/3): node1 and solo
#      hold the same count, so their RSS difference is the backplane's own cost;
#   3. one msggen per clustered node at MSG_RATE/3 to random ids 1..SUBSCRIBERS (two thirds of
#      the messages cross NATS to another node), and one at MSG_RATE/3 to the solo node;
#   4. then a ramp: RAMP total rates, STEP each, on the cluster only.
# Run "fault": the same cluster (no solo), MSG_RATE for DURATION; at half time NATS is killed
#   (SIGKILL) and restarted OUTAGE later on the same port.
# Writes results/cluster/<yyyy-mm-dd>-<label>/{steady,fault}/ (per node: comet.out/.err,
# floodtest.*, msggen.*, metrics.txt; nats.log, nats.tsv) with graphs and summary.md.
#
# Settings (environment):
#   SUBSCRIBERS=10000  DURATION=60s  MSG_RATE=1000  RATE=600 (connects/s, all nodes)
#   RAMP="2000 4000 8000" (RAMP=none: no ramp)  STEP=15s  OUTAGE=2s  HOLD=5s  WORKERS=1 (per node)  LABEL=run
#   RESULTS=results/cluster
set -euo pipefail

BENCH=cluster
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
# variable, flag (- for none), default: see bench_settings in lib.sh and the header above.
SETTINGS=(
    SUBSCRIBERS  -  10000
    DURATION     -  60s
    MSG_RATE     -  1000
    RATE         -  600
    RAMP         -  "2000 4000 8000"
    STEP         -  15s
    OUTAGE       -  2s
    HOLD         -  5s
    WORKERS      -  1
    LABEL        -  run
    RESULTS      -  results/cluster
)
bench_settings "$@"
[[ $RAMP == none ]] && RAMP=
MSG_SIZE=64
BIN=$PWD/target/release
DURATION_S=$(seconds "$DURATION")
STEP_S=$(seconds "$STEP")
OUTAGE_S=$(seconds "$OUTAGE")
HOLD_S=$(seconds "$HOLD")
PER=$((SUBSCRIBERS / 3))

command -v nats-server >/dev/null || die "nats-server missing (apt-get install nats-server)"
command -v jq >/dev/null || die "jq missing"
log "setup and build"
./tools/setup.sh >/dev/null
cargo build --release -q -p comet -p floodtest -p msggen -p memlog
bench_results_dir "$RESULTS" "$LABEL"
ROOT=$DIR
log "results in $ROOT"

# Everything started here, stopped by pid on exit.
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

now() { date +%s.%N | cut -c1-14; }
metric() { curl -s --max-time 2 "http://$1/metrics" | awk -v k="$2" '$1 == k {print $2}'; }

start_nats() {
    nats-server -p "$NATS_PORT" -a 127.0.0.1 -m "$NATS_MON" >>"$RUN/nats.log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    for _ in $(seq 100); do
        port_free "$NATS_PORT" || return 0
        sleep 0.1
    done
    die "nats-server did not start"
}

# NATS RSS (KB) and CPU seconds every second until the run ends.
sample_nats() {
    echo -e "# epoch_s\trss_kb\tcpu_s" >"$RUN/nats.tsv"
    while [[ -e $RUN/.sampling ]]; do
        if kill -0 "$NATS_PID" 2>/dev/null; then
            echo -e "$(date +%s)\t$(rss_kb "$NATS_PID")\t$(cpu_s "$NATS_PID")" >>"$RUN/nats.tsv"
        fi
        sleep 1
    done
}

# Per-second floodtest rows of one node within (T0, T1]: average msg/s, median p50 and p99,
# max p99 (ms). An approximation of the window's percentiles, the same for every node.
window() {
    awk -F'\t' -v t0="$2" -v t1="$3" '
        !/^#/ && $2 > t0 && $2 <= t1 && $9 > 0 { n++; rate += $9; p50[n] = $10; p99[n] = $12; if ($12 > m) m = $12 }
        function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j > 0 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } return a[int((n + 1) / 2)] }
        END { if (n == 0) { print "- | - | - | -"; exit } printf "%.0f | %.2f | %.2f | %.2f\n", rate / n, med(p50, n) / 1000, med(p99, n) / 1000, m / 1000 }' "$1"
}

# run NAME SOLO(0/1) FAULT(0/1)
run() {
    local name=$1 solo=$2 fault=$3 i first n
    RUN=$ROOT/$name
    mkdir -p "$RUN"
    pick_port
    NATS_PORT=$FREE_PORT
    pick_port "$NATS_PORT"
    NATS_MON=$FREE_PORT
    start_nats
    touch "$RUN/.sampling"
    sample_nats &
    PIDS+=($!)
    local nodes=(node1 node2 node3)
    ((solo)) && nodes+=(solo)
    declare -gA PID PUB PUBL
    for node in "${nodes[@]}"; do
        mkdir -p "$RUN/$node"
        if [[ $node == solo ]]; then
            DIR=$RUN/$node start_comet --workers "$WORKERS"
        else
            DIR=$RUN/$node start_comet --workers "$WORKERS" --cluster "nats://127.0.0.1:$NATS_PORT" --cluster-core
        fi
        PIDS+=("$COMET_PID")
        PID[$node]=$COMET_PID PUB[$node]=$PUBLIC PUBL[$node]=$PUBLISH
    done
    for node in node1 node2 node3; do
        for _ in $(seq 100); do
            [[ $(metric "${PUBL[$node]}" comet_cluster_connected) == 1 ]] && break
            sleep 0.1
        done
    done
    sleep 2
    for node in "${nodes[@]}"; do RSS_BASE[$name.$node]=$(rss_kb "${PID[$node]}"); done
    "$BIN/memlog" --pid "${PID[node1]}" --metrics "${PUBL[node1]}" --interval-s 1 \
        --out "$RUN/node1/memlog.log" 2>"$RUN/node1/memlog.err" &
    PIDS+=($!)

    log "$name: $SUBSCRIBERS subscribers over three nodes$( ((solo)) && echo " + $PER on solo")"
    local flood=()
    for node in "${nodes[@]}"; do
        case $node in
        node1) first=1 n=$PER ;;
        node2) first=$((PER + 1)) n=$PER ;;
        node3) first=$((2 * PER + 1)) n=$((SUBSCRIBERS - 2 * PER)) ;;
        solo) first=1 n=$PER ;;
        esac
        "$BIN/floodtest" --target "${PUB[$node]}" --first-id "$first" -n "$n" \
            --rate $((RATE / ${#nodes[@]})) --duration 3600s \
            --stats-file "$RUN/$node/floodtest.tsv" --json "$RUN/$node/floodtest.json" \
            >"$RUN/$node/floodtest.log" 2>"$RUN/$node/floodtest.err" &
        FLOOD[$node]=$!
        PIDS+=($!)
        flood+=($!)
    done
    local want deadline=$((SECONDS + SUBSCRIBERS / (RATE / 4 + 1) * 3 + 60))
    for node in "${nodes[@]}"; do
        want=$( [[ $node == node3 ]] && echo $((SUBSCRIBERS - 2 * PER)) || echo $PER)
        while (($(DIR=$RUN/$node flood_connected) < want)); do
            ((SECONDS < deadline)) || { log "WARNING: $node has $(DIR=$RUN/$node flood_connected) of $want"; break; }
            sleep 1
        done
    done
    sleep "$HOLD_S"
    for node in "${nodes[@]}"; do RSS_IDLE[$name.$node]=$(rss_kb "${PID[$node]}"); done
    NATS_RSS_IDLE[$name]=$(rss_kb "$NATS_PID")

    # Message phase: one msggen per node (random ids over all subscribers; solo: its own).
    local per_rate=$((MSG_RATE / 3)) gens=()
    T0[$name]=$(date +%s)
    for node in "${nodes[@]}"; do
        local max=$SUBSCRIBERS
        [[ $node == solo ]] && max=$PER
        "$BIN/msggen" --target "${PUBL[$node]}" --rate "$per_rate" --max-id "$max" \
            --size "$MSG_SIZE" --duration "${DURATION_S}s" --json "$RUN/$node/msggen.json" \
            --stats-file "$RUN/$node/msggen.tsv" >"$RUN/$node/msggen.log" 2>"$RUN/$node/msggen.err" &
        gens+=($!)
    done
    if ((fault)); then
        sleep $((DURATION_S / 2))
        T_KILL=$(now)
        kill -KILL "$NATS_PID"
        wait "$NATS_PID" 2>/dev/null || true
        log "$name: NATS killed; restarting in ${OUTAGE_S}s"
        sleep "$OUTAGE_S"
        T_RESTART=$(now)
        start_nats
        T_BACK=
        for _ in $(seq 600); do
            local up=0
            for node in node1 node2 node3; do
                [[ $(metric "${PUBL[$node]}" comet_cluster_connected) == 1 ]] && up=$((up + 1))
            done
            ((up == 3)) && { T_BACK=$(now); break; }
            sleep 0.05
        done
        log "$name: all nodes linked again $(awk -v a="$T_BACK" -v b="$T_RESTART" 'BEGIN {printf "%.2f", a - b}') s after the restart"
    fi
    for g in "${gens[@]}"; do wait "$g" || log "WARNING: a msggen reported failures"; done
    T1[$name]=$(date +%s)

    if ((!fault)) && [[ -n $RAMP ]]; then
        for r in $RAMP; do
            log "$name: ramp step $r msg/s for ${STEP_S}s"
            local s0
            s0=$(date +%s)
            gens=()
            for node in node1 node2 node3; do
                "$BIN/msggen" --target "${PUBL[$node]}" --rate $((r / 3)) --max-id "$SUBSCRIBERS" \
                    --size "$MSG_SIZE" --duration "${STEP_S}s" --json "$RUN/$node/ramp-$r.json" \
                    >"$RUN/$node/ramp-$r.log" 2>&1 &
                gens+=($!)
            done
            for g in "${gens[@]}"; do wait "$g" || true; done
            RAMP_T[$r]="$s0 $(date +%s)"
        done
    fi

    sleep 3
    for node in "${nodes[@]}"; do
        curl -s --max-time 2 "http://${PUBL[$node]}/metrics" >"$RUN/$node/metrics.txt" || true
        RSS_END[$name.$node]=$(rss_kb "${PID[$node]}")
        CPU[$name.$node]=$(cpu_s "${PID[$node]}")
    done
    NATS_RSS_END[$name]=$(rss_kb "$NATS_PID")
    NATS_CPU[$name]=$(cpu_s "$NATS_PID")
    NATS_VARZ[$name]=$(curl -s --max-time 2 "http://127.0.0.1:$NATS_MON/varz" | jq -c '{mem, cpu, in_msgs, out_msgs, slow_consumers}' || echo '{}')
    for f in "${flood[@]}"; do kill -TERM "$f" 2>/dev/null || true; done
    for f in "${flood[@]}"; do wait "$f" 2>/dev/null || true; done
    rm -f "$RUN/.sampling"
    for node in "${nodes[@]}"; do
        kill -TERM "${PID[$node]}" 2>/dev/null || true
        wait "${PID[$node]}" 2>/dev/null || true
    done
    kill -TERM "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    tools/plot/plot.sh "$RUN/node1" "$LABEL $name node1" >/dev/null || log "WARNING: plot failed"
    gnuplot -e "dir='$RUN'; out='$RUN/cluster.png'; label='$LABEL $name'" tools/bench/cluster.gp \
        2>/dev/null || log "WARNING: cluster plot failed"
}

declare -A RSS_BASE RSS_IDLE RSS_END CPU NATS_RSS_IDLE NATS_RSS_END NATS_CPU NATS_VARZ T0 T1 FLOOD RAMP_T
run steady 1 0
# The steady run's client sockets linger in TIME_WAIT on ports start_comet may pick (60 s).
for _ in $(seq 90); do
    (($(ss -tan state time-wait | wc -l) < 1000)) && break
    sleep 1
done
run fault 0 1

# ---- figures ----------------------------------------------------------------------------
j() { jq -r "$1" "$2"; }
sum_json() { # sum_json RUN FIELD FILE-NAME NODES...
    local run=$1 field=$2 file=$3 s=0 node
    shift 3
    for node in "$@"; do s=$((s + $(j "$field" "$ROOT/$run/$node/$file"))); done
    echo "$s"
}
ramp_accepted() {
    local s=0 node r
    for r in $RAMP; do for node in node1 node2 node3; do s=$((s + $(j .accepted "$ROOT/steady/$node/ramp-$r.json"))); done; done
    echo "$s"
}
lat() { j ".latency_us.$2" "$1" | awk '{printf "%.2f", $1 / 1000}'; }
cm() { awk -v k="$3" '$1 == k {print $2}' "$ROOT/$1/$2/metrics.txt"; }

S_ACC=$(($(sum_json steady .accepted msggen.json node1 node2 node3) + $(ramp_accepted)))
S_RCV=$(sum_json steady .counters.messages floodtest.json node1 node2 node3)
SOLO_ACC=$(j .accepted "$ROOT/steady/solo/msggen.json")
SOLO_PROM=$(j .connections "$ROOT/steady/solo/msggen.json")
SOLO_RCV=$(j .counters.messages "$ROOT/steady/solo/floodtest.json")
F_ACC=$(sum_json fault .accepted msggen.json node1 node2 node3)
F_RCV=$(sum_json fault .counters.messages floodtest.json node1 node2 node3)
F_FAILED=$(($(cm fault node1 comet_cluster_publish_failed_total) + $(cm fault node2 comet_cluster_publish_failed_total) + $(cm fault node3 comet_cluster_publish_failed_total)))
OUT_DOWN=$(awk -v a="$T_BACK" -v b="$T_KILL" 'BEGIN {printf "%.2f", a - b}')
OUT_BACK=$(awk -v a="$T_BACK" -v b="$T_RESTART" 'BEGIN {printf "%.2f", a - b}')

{
    echo "# bench-cluster: $LABEL ($(date -u +%FT%TZ))"
    echo
    echo "Command: \`tools/bench/cluster.sh\` with SUBSCRIBERS=$SUBSCRIBERS DURATION=$DURATION MSG_RATE=$MSG_RATE"
    echo "RATE=$RATE RAMP=\"$RAMP\" STEP=$STEP OUTAGE=$OUTAGE WORKERS=$WORKERS (per node)."
    echo
    echo "Machine: $(machine_line); $(nats-server --version); comet $(comet_rev)."
    echo "Everything on loopback on this one machine: three clustered nodes, one solo node, NATS, four"
    echo "floodtests and msggens share its CPUs, so latencies include that contention."
    echo
    echo "## Steady run: $MSG_RATE msg/s for $DURATION (one msggen per node at $((MSG_RATE / 3))/s, ids random over all $SUBSCRIBERS: 2/3 cross NATS), solo at $((MSG_RATE / 3))/s"
    echo
    echo "Latency from the per-second floodtest rows of the message phase: median of the per-second p50"
    echo "and p99, and the worst second's p99 (ms). Whole-run figures (floodtest's own histogram,"
    echo "including the ramp for the clustered nodes) after."
    echo
    echo "| node | msg/s received | p50 | p99 | worst p99 | whole run p50 / p99 / p99.9 / max |"
    echo "|---|---|---|---|---|---|"
    for node in solo node1 node2 node3; do
        F=$ROOT/steady/$node/floodtest.json
        echo "| $node | $(window "$ROOT/steady/$node/floodtest.tsv" "${T0[steady]}" "${T1[steady]}") | $(lat "$F" p50) / $(lat "$F" p99) / $(lat "$F" p999) / $(lat "$F" max) |"
    done
    echo
    echo "| messages | |"
    echo "|---|---|"
    echo "| cluster: accepted (incl. ramp) / received | $S_ACC / $S_RCV (each id has exactly one subscriber: lost $((S_ACC - S_RCV))) |"
    echo "| solo: accepted / promised / received | $SOLO_ACC / $SOLO_PROM / $SOLO_RCV |"
    for node in node1 node2 node3; do
        echo "| $node cluster in / out / failed / slow consumer | $(cm steady $node comet_cluster_messages_in_total) / $(cm steady $node comet_cluster_messages_out_total) / $(cm steady $node comet_cluster_publish_failed_total) / $(cm steady $node comet_cluster_slow_consumer_total) |"
    done
    echo
    echo "## Memory: the backplane's own cost"
    echo
    echo "node1 and solo hold the same number of subscribers ($PER); the difference is the NATS bridge"
    echo "(thread, tokio runtime, async-nats client and buffers)."
    echo
    echo "| node | RSS before subscribers | RSS with $PER (node3: $((SUBSCRIBERS - 2 * PER))) idle | RSS at end | CPU s |"
    echo "|---|---|---|---|---|"
    for node in solo node1 node2 node3; do
        echo "| $node | ${RSS_BASE[steady.$node]} KB | ${RSS_IDLE[steady.$node]} KB | ${RSS_END[steady.$node]} KB | ${CPU[steady.$node]} |"
    done
    echo
    echo "Backplane cost (node1 - solo): $((RSS_BASE[steady.node1] - RSS_BASE[steady.solo])) KB before subscribers, $((RSS_IDLE[steady.node1] - RSS_IDLE[steady.solo])) KB idle with $PER each, $((RSS_END[steady.node1] - RSS_END[steady.solo])) KB at the end."
    echo
    echo "NATS server: RSS ${NATS_RSS_IDLE[steady]} KB idle, ${NATS_RSS_END[steady]} KB at end, CPU ${NATS_CPU[steady]} s; varz \`${NATS_VARZ[steady]}\` (peak RSS in \`steady/nats.tsv\`: $(awk '!/^#/ && $2 > m {m = $2} END {print m + 0}' "$ROOT/steady/nats.tsv") KB)."
    echo
    if [[ -n $RAMP ]]; then
        echo "## Ramp (cluster only, per-second rows of each node summed / worst)"
        echo
        echo "| target msg/s | accepted | received/s (3 nodes) | worst node median p99 ms | worst second p99 ms |"
        echo "|---|---|---|---|---|"
        for r in $RAMP; do
            read -r a b <<<"${RAMP_T[$r]}"
            acc=0 rate=0 p99=0 worst=0
            for node in node1 node2 node3; do
                acc=$((acc + $(j .accepted "$ROOT/steady/$node/ramp-$r.json")))
                IFS='|' read -r nr _ np99 nw <<<"$(window "$ROOT/steady/$node/floodtest.tsv" "$a" "$b")"
                rate=$(awk -v x="$rate" -v y="$nr" 'BEGIN {print x + y}')
                p99=$(awk -v x="$p99" -v y="$np99" 'BEGIN {print (y > x) ? y + 0 : x}')
                worst=$(awk -v x="$worst" -v y="$nw" 'BEGIN {print (y > x) ? y + 0 : x}')
            done
            echo "| $r | $acc | $rate | $p99 | $worst |"
        done
        echo
    fi
    echo "## Fault run: $MSG_RATE msg/s for $DURATION, NATS killed at half time and restarted ${OUTAGE_S} s later"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| routing down (kill to every node linked again) | $OUT_DOWN s |"
    echo "| routing back after the restart | $OUT_BACK s (polled every 50 ms on /metrics) |"
    echo "| accepted / received | $F_ACC / $F_RCV: lost $((F_ACC - F_RCV)) |"
    echo "| cluster copies dropped by the nodes (link down) | $F_FAILED (comet_cluster_publish_failed_total) |"
    echo "| reconnects (node1 / node2 / node3) | $(cm fault node1 comet_cluster_reconnects_total) / $(cm fault node2 comet_cluster_reconnects_total) / $(cm fault node3 comet_cluster_reconnects_total) |"
    echo "| NATS CPU / RSS at end (restarted process) | ${NATS_CPU[fault]} s / ${NATS_RSS_END[fault]} KB |"
    echo
    echo "Expected loss: the messages whose cluster copy was dropped while a link was down, for ids held"
    echo "by another node (about 2/3 of the dropped copies: $((F_FAILED * 2 / 3))), plus what NATS itself lost in"
    echo "flight when it was killed; at most once, as documented."
    echo
    echo "| node | fault-run latency p50 / p99 / max (whole run) |"
    echo "|---|---|"
    for node in node1 node2 node3; do
        F=$ROOT/fault/$node/floodtest.json
        echo "| $node | $(lat "$F" p50) / $(lat "$F" p99) / $(lat "$F" max) |"
    done
    echo
    echo "Files: per run and node \`comet.out/.err\`, \`floodtest.*\`, \`msggen.*\`, \`metrics.txt\`;"
    echo "\`nats.log\`, \`nats.tsv\`; node1's \`memlog.log\`. Graphs: messages received per second on each"
    echo "node and its p99 (\`cluster.png\`), node1's memory and run graphs."
    echo
    echo "![steady](steady/cluster.png)"
    echo "![fault](fault/cluster.png)"
    echo "![node1](steady/node1/run.png)"
} >"$ROOT/summary.md"
log "done: $ROOT/summary.md"
cat "$ROOT/summary.md"
