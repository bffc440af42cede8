# bench-1m's fault phase (sourced by tools/bench/1m.sh once the ramp is over, every subscriber
# still connected; needs root for nft and `ss -K`). Issue 15's "faults at a million":
#
#   silent peers: SILENT subscribers (whole source addresses of floodtest, picked from the
#     client sockets `ss` lists) vanish without a FIN: an nftables rule drops every packet from
#     and to those addresses, as when phones leave the network. Their client sockets stay open
#     and say nothing. comet must notice and free each within the bound it states (README,
#     "Dead peers": 2 x --heartbeat-ms + 1.25 x --unacked-timeout-ms; past it the phase fails);
#     measured: seconds from the rule to the last one freed (comet_connections, /metrics).
#     Once the stated bound has passed (or 99 % are freed), the comet-side sockets still open
#     to those addresses are listed once with their TCP state, timers and counters
#     (faults-silent-left.txt: `ss -tnoi`), to show what holds them.
#   reconnect storm: STORM other subscribers are cut at once (`ss -K` aborts their client
#     sockets: comet sees a reset each, as after a proxy or client-fleet restart) and the same
#     count reconnect at once from the same addresses (a second floodtest, --rate 0, with up to
#     STORM_PENDING connects in flight per process, so that the listen backlog may overflow:
#     TcpExtListenOverflows/ListenDrops from /proc/net/netstat, before and after). A client
#     whose attempt fails (its kernel gave up on SYNs the full backlog dropped) tries again
#     after STORM_RETRY_MS, +-50 % (floodtest --retry-ms, as EventSource does; 0: no retry,
#     a failed attempt stays failed); measured: seconds until every one is back. While they
#     come back, msggen publishes MSG_RATE msg/s to every id: every promised delivery must
#     arrive (both floodtests counted) and the live streams' per-second p99 is reported.
#   throughout: comet's RSS (sampled every second), connections, open descriptors, accepted and
#     closed counters, before and after.
#
# Settings (environment): FAULTS=1 (0 skips the phase), SILENT=50000, STORM=100000,
# STORM_PENDING=20000, STORM_RETRY_MS=3000, STORM_PUBLISH=60s (msggen's run from the storm's start), FAULT_DEADLINE=180
# (seconds each step may take at most).
# Writes $DIR/faults.md (included in summary.md), faults-*.log and floodtest-storm.*.

FAULT_TABLE=comet_bench_faults_$$

# comet's /metrics, summed over workers: metric $1 (with label pair $2); empty when comet did
# not answer within 10 s three times (busy freeing tens of thousands of sockets, say).
live_metric() {
    local f try
    f=$(mktemp)
    for try in 1 2 3; do
        if curl -sf --max-time 10 "http://$PUBLISH/metrics" >"$f"; then
            metric_sum "$1" "$f" "${2:-}"
            break
        fi
    done
    rm -f "$f"
}

# Connections comet closed for a socket error or the peer's end of stream, so far.
peer_closes() {
    local errors eofs
    errors=$(live_metric comet_connections_closed_total 'reason="error"')
    eofs=$(live_metric comet_connections_closed_total 'reason="eof"')
    echo $((${errors:-0} + ${eofs:-0}))
}

# Source addresses of the subscribers' client sockets with their counts, in order:
# "addr count" lines. Client sockets are the ones whose peer is comet's public port.
client_sources() {
    local port=${PUBLIC##*:}
    ss -Htn state established "( dport = :$port )" |
        awk '{a = $3; sub(/:[0-9]+$/, "", a); n[a]++} END {for (k in n) print k, n[k]}' | sort -V
}

# Picks whole addresses from $1 (client_sources output), skipping the first $2 lines, until
# their count reaches $3: prints "lines_used count addr,addr,...".
pick_sources() {
    awk -v skip="$2" -v want="$3" 'NR > skip && c < want {c += $2; a = a (a ? "," : "") $1; used++}
        END {print used + 0, c + 0, a}' "$1"
}

# Samples comet's RSS every second into $DIR/faults-rss.log until killed.
sample_rss() {
    while kill -0 "$COMET_PID" 2>/dev/null; do
        echo "$(date +%s) $(rss_kb "$COMET_PID")"
        sleep 1
    done >>"$DIR/faults-rss.log"
}

fault_phase() {
    local sources=$DIR/faults-sources.txt
    log "fault phase: listing the subscribers' source addresses"
    client_sources >"$sources"
    local used silent_n silent_addrs storm_used storm_n storm_addrs
    read -r used silent_n silent_addrs < <(pick_sources "$sources" 0 "$SILENT")
    read -r storm_used storm_n storm_addrs < <(pick_sources "$sources" "$used" "$STORM")
    ((silent_n > 0 && storm_n > 0)) || die "fault phase: not enough subscribers ($(wc -l <"$sources") addresses)"

    sample_rss &
    local rss_pid=$!
    local rss_before conns_before fds_before accepted_before closed_before
    rss_before=$(rss_kb "$COMET_PID")
    conns_before=$(live_metric comet_connections)
    fds_before=$(live_metric process_open_fds)
    accepted_before=$(live_metric comet_connections_accepted_total)
    closed_before=$(live_metric comet_connections_closed_total)

    # ---- silent peers ----
    log "silent peers: $silent_n subscribers from $silent_addrs vanish (nftables drops their packets)"
    local set="{ ${silent_addrs//,/, } }"
    nft -f - <<EOF || die "nft refused the rule (the fault phase needs root and nftables)"
table inet $FAULT_TABLE {
  chain out {
    type filter hook output priority 0;
    ip saddr $set drop
    ip daddr $set drop
  }
}
EOF
    local t0=$SECONDS want=$((conns_before - silent_n)) now silent_s=never listed=
    # README, Dead peers: two heartbeat periods, then the retransmission timeout (capped at a
    # quarter of the unacked timeout, 1 to 120 s) before the unacked timeout starts counting.
    local rto_cap=$((UNACKED_MS / 4 < 1000 ? 1000 : UNACKED_MS / 4 > 120000 ? 120000 : UNACKED_MS / 4))
    local bound_s=$(((2 * HEARTBEAT_MS + rto_cap + UNACKED_MS) / 1000))
    local port=${PUBLIC##*:} dsts=() a
    for a in ${silent_addrs//,/ }; do
        ((${#dsts[@]})) && dsts+=(or)
        dsts+=(dst "$a")
    done
    local errors0 errors
    errors0=$(live_metric comet_connections_closed_total 'reason="error"')
    echo "# seconds since the rule, comet_connections, connections closed for a socket error since the rule" >"$DIR/faults-silent.log"
    while ((SECONDS - t0 <= FAULT_DEADLINE)); do
        now=$(live_metric comet_connections)
        errors=$(live_metric comet_connections_closed_total 'reason="error"')
        echo "$((SECONDS - t0)) ${now:-no-answer} $((${errors:-0} - errors0))" >>"$DIR/faults-silent.log"
        if [[ -n $now ]] && ((now <= want)); then
            silent_s=$((SECONDS - t0))
            break
        fi
        if [[ -z $listed && -n $now ]] && ((SECONDS - t0 >= bound_s + 5 || now - want <= silent_n / 100)); then
            listed=$((SECONDS - t0))
            {
                echo "# $listed s after the rule: comet $now connections, $((now - want)) silent peers left"
                ss -tnoi state all "( sport = :$port )" and "(" "${dsts[@]}" ")"
            } >"$DIR/faults-silent-left.txt" 2>&1
        fi
        sleep 1
    done
    local silent_left error_closes
    now=$(live_metric comet_connections)
    silent_left=$((${now:-0} - want))
    ((silent_left < 0)) && silent_left=0
    error_closes=$(live_metric comet_connections_closed_total 'reason="error"')
    nft delete table inet "$FAULT_TABLE" || true
    local rss_silent conns_silent
    rss_silent=$(rss_kb "$COMET_PID")
    conns_silent=$(live_metric comet_connections)
    log "silent peers: freed in ${silent_s}s ($silent_left left)"

    # ---- reconnect storm ----
    local over0 drops0
    over0=$(netstat_field ListenOverflows)
    drops0=$(netstat_field ListenDrops)
    log "storm: cutting $storm_n subscribers from $storm_addrs (ss -K)"
    local filter=()
    for a in ${storm_addrs//,/ }; do
        ((${#filter[@]})) && filter+=(or)
        filter+=(src "$a")
    done
    local closes_storm
    closes_storm=$(peer_closes)
    ss -K -Htn state established "( dport = :${PUBLIC##*:} )" and "(" "${filter[@]}" ")" >/dev/null
    t0=$SECONDS
    # Counted by comet's closes for a reset or an end of stream, not by comet_connections,
    # which the script's own /metrics connections can hold one above its target.
    while ((SECONDS - t0 <= FAULT_DEADLINE)); do
        (($(peer_closes) - closes_storm >= storm_n)) && break
        sleep 1
    done
    local cut_s=$((SECONDS - t0))
    log "storm: comet closed them in ${cut_s}s; $storm_n reconnect at once"
    local before_main before_storm=0 t_pub0 t_pub1
    before_main=$(flood_messages)
    t_pub0=$(date +%s)
    "$BIN/msggen" --target "$PUBLISH" --rate "$MSG_RATE" --max-id "$CONNECTIONS" --size "$MSG_SIZE" \
        --duration "$STORM_PUBLISH" --json "$DIR/msggen-storm.json" >"$DIR/msggen-storm.log" 2>&1 &
    local msggen_pid=$!
    "$BIN/floodtest" --target "$PUBLIC" -n "$storm_n" --rate 0 --duration 3h --path events \
        --source-addrs "$storm_addrs" --pending-max "$STORM_PENDING" --retry-ms "$STORM_RETRY_MS" \
        --stats-file "$DIR/floodtest-storm.tsv" --json "$DIR/floodtest-storm.json" \
        >"$DIR/floodtest-storm.log" 2>"$DIR/floodtest-storm.err" &
    STORM_PID=$!
    t0=$SECONDS
    # Done when every one is back or (without retries) has failed.
    local storm_s=never storm_connected=0 storm_failed=0 storm_retries=0 given_up
    while ((SECONDS - t0 <= FAULT_DEADLINE)); do
        read -r storm_connected storm_failed storm_retries < <(awk -F'\t' '!/^#/ {c = $3; e = $8; r = $15} END {print c + 0, e + 0, r + 0}' "$DIR/floodtest-storm.tsv" 2>/dev/null || echo 0 0 0)
        given_up=$storm_failed
        ((STORM_RETRY_MS > 0)) && given_up=0
        if ((storm_connected + given_up >= storm_n)); then
            storm_s=$((SECONDS - t0))
            break
        fi
        kill -0 "$STORM_PID" 2>/dev/null || break
        sleep 1
    done
    wait "$msggen_pid" || true
    t_pub1=$(date +%s)
    local promised received after
    promised=$(jq -r '.connections' "$DIR/msggen-storm.json")
    for _ in $(seq 20); do
        sleep 1
        after=$(($(flood_messages) - before_main + $(awk -F'\t' '!/^#/ {c = $7} END {print c + 0}' "$DIR/floodtest-storm.tsv")))
        ((after >= promised)) && break
    done
    received=$after
    local p99
    p99=$(awk -F'\t' -v a="$t_pub0" -v b="$t_pub1" '!/^#/ && $2 > a && $2 <= b + 1 && $12 > m {m = $12} END {printf "%.2f", m / 1000}' "$DIR/floodtest.tsv")
    local over1 drops1
    over1=$(netstat_field ListenOverflows)
    drops1=$(netstat_field ListenDrops)
    kill "$rss_pid" 2>/dev/null || true
    wait "$rss_pid" 2>/dev/null || true
    local rss_after conns_after fds_after accepted_after closed_after rss_peak
    rss_after=$(rss_kb "$COMET_PID")
    conns_after=$(live_metric comet_connections)
    fds_after=$(live_metric process_open_fds)
    accepted_after=$(live_metric comet_connections_accepted_total)
    closed_after=$(live_metric comet_connections_closed_total)
    rss_peak=$(awk '$2 > m {m = $2} END {print m + 0}' "$DIR/faults-rss.log")
    log "storm: $storm_connected of $storm_n back in ${storm_s}s; deliveries $received of $promised"

    cat >"$DIR/faults.md" <<EOF
## Faults at $CONNECTED connections (tools/bench/faults-1m.sh)

| | |
|---|---|
| silent peers | $silent_n subscribers (source addresses $silent_addrs) cut off by an nftables rule (no FIN, no RST reaches comet); comet \`--heartbeat-ms\` $HEARTBEAT_MS, \`--unacked-timeout-ms\` $UNACKED_MS: stated bound ${bound_s} s (README, Dead peers: 2 x heartbeat + the retransmission timeout's cap, ${rto_cap} ms + the unacked timeout) |
| silent peers freed in | **${silent_s} s** ($silent_left not freed by the deadline of ${FAULT_DEADLINE} s); connections closed for a socket error so far: $error_closes |
| reconnect storm | $storm_n subscribers (source addresses $storm_addrs) aborted at once with \`ss -K\` (comet got a reset each and closed them in ${cut_s} s), then $storm_n reconnected at once (floodtest --rate 0, $STORM_PENDING connects in flight per process) |
| reconnected | **$storm_connected of $storm_n in ${storm_s} s** ($storm_failed attempts failed$( ((STORM_RETRY_MS > 0)) && echo ", $storm_retries made again after ${STORM_RETRY_MS} ms +-50 %" || echo "; floodtest does not retry them")) |
| listen backlog during the storm | TcpExtListenOverflows +$((over1 - over0)), ListenDrops +$((drops1 - drops0)) (machine-wide; a dropped SYN is retried by the client's kernel) |
| live delivery during the storm | msggen $MSG_RATE msg/s for $STORM_PUBLISH: $promised deliveries promised, $received received ($((promised - received)) lost); worst per-second p99 of the streams that stayed: $p99 ms |
| comet RSS before / after the silent peers / after the storm / peak during the phase | $rss_before / $rss_silent / $rss_after / $rss_peak KB |
| comet connections before / after the silent peers / after the storm | $conns_before / $conns_silent / $conns_after |
| comet open descriptors before / after | $fds_before / $fds_after |
| accepted - closed before / after (= connections open) | $((accepted_before - closed_before)) / $((accepted_after - closed_after)) |

Files: faults-sources.txt (subscribers per source address), faults-silent.log (seconds, connections, error closes),
faults-silent-left.txt (comet's sockets to the silent peers still open past the bound or at 99 %),
faults-rss.log, msggen-storm.{log,json}, floodtest-storm.{log,tsv,json,err}.
EOF
    FAULTS_FAILED=
    [[ $silent_s == never ]] || ((silent_s > bound_s)) && FAULTS_FAILED+=" silent-peers"
    [[ $storm_s == never ]] && FAULTS_FAILED+=" storm"
    ((STORM_RETRY_MS == 0 && storm_failed > storm_n / 1000)) && FAULTS_FAILED+=" storm-connects"
    ((received < promised)) && FAULTS_FAILED+=" storm-delivery"
    true
}
