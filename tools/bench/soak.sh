#!/usr/bin/env bash
# soak: the seed's experiment as it was meant (10,000 users, 1000 msg/s, 24 hours, memory flat),
# with everything on and subscribers coming and going, on loopback.
#
#   1. build the release binaries; start `comet serve` on free loopback ports with auth
#      (--auth-secret: a JWT per subscriber), history (HISTORY_MESSAGES / HISTORY_AGE_MS per id)
#      and heartbeats (HEARTBEAT_MS) on; check a subscribe without a token is refused;
#   2. memlog every MEMLOG_INTERVAL seconds (RSS, comet_connections, process_open_fds, heap and
#      history bytes, kernel sockstat, slab, CPU);
#   3. resumetest: CONNS SSE subscribers (/events/<id>, ids 1..CONNS, opened at CONNECT_RATE a
#      second, each with its own token) while MSG_RATE messages a second are published
#      round-robin to their ids for DURATION; CHURN % of the subscribers drop a minute (RST or
#      FIN), stay away up to AWAY_MAX and resume with Last-Event-ID. Every message must arrive
#      exactly once, in order; a gap notice the history's limits do not explain is a failure;
#      a progress line every STATS_INTERVAL;
#   4. stop everything this script started (by pid), draw the graphs and check the criteria
#      on the publishing phase after WARMUP:
#        rss:         least-squares slope of comet's RSS below SLOPE_MAX_KB_H (1 MB/h);
#        slots:       comet_connections,
#        fds:         process_open_fds,
#        sockets:     the kernel's TCP sockets in use (sockstat: the run's own network
#                     namespace, see NETNS below; else machine-wide),
#                     each with no upward trend: the fitted line's rise over the measured
#                     window at most max(FLAT_MIN, FLAT_PERCENT % of its mean);
#        delivery:    0 lost, duplicated, reordered, gaps inside the history window, failed
#                     publishes, subscribers not caught up (resumetest exits 0);
#   5. write results/soak/<yyyy-mm-dd>-<label>/: raw logs, memory.png (the seed's graph),
#      soak.png, /metrics at the start, every METRICS_EVERY and at the end, summary.md with
#      PASS/FAIL per criterion. Exits 1 naming the criteria that failed.
#
# Disk: ~150 KB an hour at the defaults (memlog, resumetest progress, hourly /metrics): ~4 MB
# for 24 h. CPU: comet ~7 % of one core, resumetest (10,000 threads) ~15-20 %; resumetest's
# RSS ~250 MB.
#
# Settings (environment or flags; flags win):
#   DURATION=24h        --duration      publishing time (e.g. 10m for a smoke run, 2h, 24h)
#   CONNS=10000         --conns         subscribers (ids 1..CONNS)
#   CHURN=5             --churn         % of the subscribers that drop and resume a minute
#   MSG_RATE=1000       --msg-rate      messages per second, all ids together
#   AWAY_MAX=500ms      --away-max      longest pause between a drop and the resume
#   CONNECT_RATE=1000   --connect-rate  first connections opened per second
#   WARMUP=             --warmup        left out of the fits (default: 10% of DURATION, at
#                                       least 3 min, at most half of DURATION)
#   HEARTBEAT_MS=5000   --heartbeat-ms  comet --heartbeat-ms: shorter than comet's 15 s so that
#                                       heartbeats are sent: at 1000 msg/s over 10k ids a stream
#                                       gets a message every 10 s, and comet skips the heartbeat
#                                       of a stream that was sent something since the last round
#   HISTORY_MESSAGES=32                 comet --history-messages (and resumetest's, to explain gaps)
#   HISTORY_AGE_MS=120000               comet --history-age-ms (the same)
#   SLOPE_MAX_KB_H=1024                 the RSS criterion, KB per hour
#   FLAT_MIN=20  FLAT_PERCENT=1         the flatness criteria's tolerance
#   SECRET=soak-secret                  comet --auth-secret (HS256)
#   LABEL=run           --label         results folder suffix
#   WORKERS=            --workers       comet --workers (default: comet's own)
#   COMET_ARGS=                         more `comet serve` arguments
#   MEMLOG_INTERVAL=5                   seconds between memlog lines
#   STATS_INTERVAL=10s                  between resumetest's progress lines
#   METRICS_EVERY=1h                    between /metrics snapshots
#   RESULTS=results/soak                where result folders go
#   NETNS=1                             run in a network namespace of its own (as root)
set -euo pipefail

BENCH=soak
COMMAND_LINE="$0 $*"
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
# A network namespace of its own (as root, where unshare exists): sockstat then counts this
# run's sockets only, so the sockets criterion is not moved by whatever else runs on the
# machine for hours (builds, tests). NETNS=0 runs in the host's namespace.
bench_netns tools/bench/soak.sh "$@"
# variable, flag (- for none), default: see bench_settings in lib.sh and the header above.
SETTINGS=(
    DURATION          --duration      24h
    CONNS             --conns         10000
    CHURN             --churn         5
    MSG_RATE          --msg-rate      1000
    AWAY_MAX          --away-max      500ms
    CONNECT_RATE      --connect-rate  1000
    WARMUP            --warmup        ''
    HEARTBEAT_MS      --heartbeat-ms  5000
    HISTORY_MESSAGES  -               32
    HISTORY_AGE_MS    -               120000
    SLOPE_MAX_KB_H    -               1024
    FLAT_MIN          -               20
    FLAT_PERCENT      -               1
    SECRET            -               soak-secret
    LABEL             --label         run
    WORKERS           --workers       ''
    COMET_ARGS        -               ''
    MEMLOG_INTERVAL   -               5
    STATS_INTERVAL    -               10s
    METRICS_EVERY     -               1h
    RESULTS           -               results/soak
)
bench_settings "$@"
BIN=$PWD/target/release
CHURN=${CHURN%\%}
DURATION_S=$(seconds "$DURATION")
METRICS_EVERY_S=$(seconds "$METRICS_EVERY")
if [[ -n $WARMUP ]]; then
    WARMUP_S=$(seconds "$WARMUP")
else
    WARMUP_S=$((DURATION_S / 10))
    ((WARMUP_S >= 180)) || WARMUP_S=180
    ((WARMUP_S <= DURATION_S / 2)) || WARMUP_S=$((DURATION_S / 2))
fi
CONNECT_S=$(awk -v n="$CONNS" -v r="$CONNECT_RATE" 'BEGIN {s = 1; if (r > 0) s = int(n / r) + 1; print s}')
READY_S=$((CONNECT_S * 3 + 60))
DRAIN_S=30

log "build"
command -v jq >/dev/null && command -v gnuplot >/dev/null || ./tools/setup.sh >/dev/null
cargo build --release -q -p comet -p resumetest -p memlog

bench_results_dir "$RESULTS" "$LABEL"
log "results in $DIR"

# Everything this script starts, stopped by pid on exit.
COMET_PID= MEMLOG_PID= RESUME_PID=
cleanup() { kill_quietly "$RESUME_PID" "$MEMLOG_PID" "$COMET_PID"; }
trap cleanup EXIT

COMET_CMD=(--auth-secret "$SECRET" --heartbeat-ms "$HEARTBEAT_MS"
    --history-messages "$HISTORY_MESSAGES" --history-age-ms "$HISTORY_AGE_MS")
log "starting comet"
# shellcheck disable=SC2086 # COMET_ARGS is a list of arguments
start_comet "${COMET_CMD[@]}" ${WORKERS:+--workers $WORKERS} $COMET_ARGS
log "comet pid $COMET_PID public=$PUBLIC publish=$PUBLISH"
sleep 1
# Auth is really on: a subscribe without a token is refused.
UNTOKENED=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$PUBLIC/events/1" || true)
[[ $UNTOKENED == 401 || $UNTOKENED == 403 ]] || die "a subscribe without a token got $UNTOKENED, not 401: is auth on?"
RSS_BASE=$(rss_kb "$COMET_PID")
LOAD_START=$(load_avg)
mkdir -p "$DIR/metrics"
save_metrics "$DIR/metrics/start.txt"
start_memlog

RESUME_CMD=("$BIN/resumetest" --target "$PUBLIC" --publish "$PUBLISH" --subscribers "$CONNS"
    --rate "$MSG_RATE" --duration "${DURATION_S}s" --churn "$CHURN" --drop mixed
    --away-max "$AWAY_MAX" --jwt-secret "$SECRET" --history-messages "$HISTORY_MESSAGES"
    --history-age "${HISTORY_AGE_MS}ms" --connect-rate "$CONNECT_RATE"
    --ready-timeout "${READY_S}s" --drain "${DRAIN_S}s" --stats-interval "$STATS_INTERVAL"
    --json "$DIR/resumetest.json")
log "resumetest: $CONNS subscribers at $CONNECT_RATE/s, $MSG_RATE msg/s for ${DURATION_S}s, churn $CHURN % a minute"
"${RESUME_CMD[@]}" >"$DIR/resumetest.log" 2>"$DIR/resumetest.err" &
RESUME_PID=$!

# Publishing starts once every subscriber streams.
deadline=$((SECONDS + READY_S + 10))
until grep -q '^all .* subscribers streaming' "$DIR/resumetest.log" 2>/dev/null; do
    kill -0 "$RESUME_PID" 2>/dev/null || break
    ((SECONDS < deadline)) || die "resumetest did not start publishing in ${READY_S}s"
    sleep 1
done
PUBLISH_START=$(date +%s)
RSS_START=$(rss_kb "$COMET_PID")
CPU_START=$(cpu_s "$COMET_PID")
save_metrics "$DIR/metrics/publishing.txt"
log "publishing from $(date -d "@$PUBLISH_START" +%T); warm-up ${WARMUP_S}s; ends about $(date -d "@$((PUBLISH_START + DURATION_S))" +%T)"

# Wait for resumetest, saving /metrics every METRICS_EVERY; past its time it is stopped.
limit=$((SECONDS + DURATION_S + DRAIN_S + 120))
next_metrics=$((SECONDS + METRICS_EVERY_S))
while kill -0 "$RESUME_PID" 2>/dev/null; do
    if ((SECONDS >= limit)); then
        log "WARNING: resumetest ran past its time; stopping it"
        kill "$RESUME_PID" 2>/dev/null || true
        break
    fi
    if ((SECONDS >= next_metrics)); then
        save_metrics "$DIR/metrics/t$(($(date +%s) - PUBLISH_START))s.txt"
        next_metrics=$((next_metrics + METRICS_EVERY_S))
    fi
    sleep 2
done
RESUME_RC=0
wait "$RESUME_PID" || RESUME_RC=$?
RESUME_PID=
# Publishing ends DURATION after it started (resumetest then drains and closes): the fits stop
# there, before the subscribers leave.
PUBLISH_END=$(date +%s)
((PUBLISH_END <= PUBLISH_START + DURATION_S)) || PUBLISH_END=$((PUBLISH_START + DURATION_S))

save_metrics "$DIR/metrics/end.txt"
RSS_END=$(rss_kb "$COMET_PID")
RSS_PEAK=$(rss_peak_kb "$COMET_PID" "$RSS_END")
CPU_END=$(cpu_s "$COMET_PID")
LOAD_END=$(load_avg)
stop_comet 10 >/dev/null
wait "$MEMLOG_PID" 2>/dev/null || true
MEMLOG_PID=

[[ -s $DIR/resumetest.json ]] || die "resumetest wrote no summary (exit $RESUME_RC): $(tail -3 "$DIR/resumetest.err")"

# Least-squares fit of memlog column $1 over the publishing phase after the warm-up:
# "slope_per_hour mean first_fitted last_fitted samples hours" (x in hours since FIT_FROM).
FIT_FROM=$((PUBLISH_START + WARMUP_S))
fit() {
    awk -F'\t' -v c="$1" -v t0="$FIT_FROM" -v t1="$PUBLISH_END" '
        !/^#/ && $2 >= t0 && $2 <= t1 && $c != "NaN" {
            x = ($2 - t0) / 3600; y = $c
            n++; sx += x; sy += y; sxx += x * x; sxy += x * y
            if (n == 1) x0 = x; x1 = x
        }
        END {
            if (n < 3 || n * sxx == sx * sx) { print "NaN NaN NaN NaN " n + 0 " 0"; exit }
            b = (n * sxy - sx * sy) / (n * sxx - sx * sx); a = (sy - b * sx) / n
            printf "%.1f %.1f %.1f %.1f %d %.3f\n", b, sy / n, a + b * x0, a + b * x1, n, x1 - x0
        }' "$DIR/memlog.log"
}
read -r RSS_SLOPE RSS_MEAN RSS_FIT0 RSS_FIT1 RSS_N FIT_H < <(fit 3)
read -r CONN_SLOPE CONN_MEAN CONN_FIT0 CONN_FIT1 _ _ < <(fit 4)
read -r SOCK_SLOPE SOCK_MEAN SOCK_FIT0 SOCK_FIT1 _ _ < <(fit 5)
read -r FDS_SLOPE FDS_MEAN FDS_FIT0 FDS_FIT1 _ _ < <(fit 10)
# Not criteria: where RSS growth comes from (the heap comet's allocator holds; its history).
read -r HEAP_SLOPE _ HEAP_FIT0 HEAP_FIT1 _ _ < <(fit 11)
read -r HIST_SLOPE _ HIST_FIT0 HIST_FIT1 _ _ < <(fit 12)
# min and max of column $1 over the same window.
range() {
    awk -F'\t' -v c="$1" -v t0="$FIT_FROM" -v t1="$PUBLISH_END" '
        !/^#/ && $2 >= t0 && $2 <= t1 && $c != "NaN" {if (n++ == 0 || $c < lo) lo = $c; if ($c > hi) hi = $c}
        END {if (n) print lo " - " hi; else print "none"}' "$DIR/memlog.log"
}
# The value of memlog column $1 on the first line at or after epoch $2.
at() { awk -F'\t' -v c="$1" -v t="$2" '!/^#/ && $2 >= t && $c != "NaN" {print $c; exit}' "$DIR/memlog.log"; }
RSS_WARM=$(at 3 "$FIT_FROM")

FAILED=()
declare -A V
# verdict NAME OK(1/0): records PASS/FAIL.
verdict() {
    if (($2)); then V[$1]=PASS; else V[$1]=FAIL; FAILED+=("$1"); fi
}
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a != "NaN" && a + 0 < b + 0)}'; }
# flat NAME FIT0 FIT1 MEAN: the fitted rise at most max(FLAT_MIN, FLAT_PERCENT % of the mean).
flat() {
    local tol
    tol=$(awk -v m="$4" -v p="$FLAT_PERCENT" -v f="$FLAT_MIN" 'BEGIN {t = m * p / 100; if (t < f) t = f; printf "%.1f", t}')
    V[$1,tol]=$tol
    V[$1,rise]=$(awk -v a="$2" -v b="$3" 'BEGIN {if (a == "NaN") print "NaN"; else printf "%+.1f", b - a}')
    lt "${V[$1,rise]}" "$(awk -v t="$tol" 'BEGIN {print t + 0.0001}')" && verdict "$1" 1 || verdict "$1" 0
}
lt "$RSS_SLOPE" "$SLOPE_MAX_KB_H" && verdict rss 1 || verdict rss 0
flat slots "$CONN_FIT0" "$CONN_FIT1" "$CONN_MEAN"
flat fds "$FDS_FIT0" "$FDS_FIT1" "$FDS_MEAN"
flat sockets "$SOCK_FIT0" "$SOCK_FIT1" "$SOCK_MEAN"

J=$DIR/resumetest.json
j() { jq -r "$1" "$J"; }
BAD_DELIVERY=$(j '.lost + .duplicated + .reordered + .gaps_unexplained + .publish_failed + .unfinished')
((RESUME_RC == 0 && BAD_DELIVERY == 0)) && verdict delivery 1 || verdict delivery 0

log "plotting"
tools/plot/plot.sh "$DIR" "$LABEL" >/dev/null
gnuplot -e "memlog='$DIR/memlog.log'; out='$DIR/soak.png'; label='$LABEL'; t0=$PUBLISH_START; fit_from=$FIT_FROM; a=$RSS_FIT0; b=$RSS_SLOPE" tools/plot/soak.gp ||
    log "WARNING: soak.png failed"

M1=$DIR/metrics/publishing.txt M2=$DIR/metrics/end.txt
delta() { echo $(($(metric_sum "$1" "$M2" "${2:-}") - $(metric_sum "$1" "$M1" "${2:-}"))); }
# comet's CPU seconds over the publishing phase, from memlog (CPU_START/END when it has none).
CPU_PUB0=$(at 9 "$PUBLISH_START") CPU_PUB1=$(at 9 "$PUBLISH_END")
CPU_RUN=$(awk -v a="${CPU_PUB0:-$CPU_START}" -v b="${CPU_PUB1:-$CPU_END}" -v t=$((PUBLISH_END - PUBLISH_START)) 'BEGIN {p = 0; if (t > 0) p = 100 * (b - a) / t; printf "%.1f s (%.1f %% of one core)", b - a, p}')
if ((${#FAILED[@]} == 0)); then
    RESULT="**PASS**: every criterion met."
else
    RESULT="**FAIL**: ${FAILED[*]}."
fi
SHORT=
((DURATION_S >= 7200)) || SHORT="
**A smoke run ($DURATION), not the 2-hour run issue 15 asks for.** The RSS slope is fitted over
$(awk -v h="$FIT_H" 'BEGIN {printf "%.0f", h * 60}') minutes: it says little about hours (the seed's claim was 24)."

cat >"$DIR/summary.md" <<EOF
# soak: $LABEL ($(date -u +%FT%TZ))

Command: \`$COMMAND_LINE\` with DURATION=$DURATION CONNS=$CONNS CHURN=$CHURN MSG_RATE=$MSG_RATE
AWAY_MAX=$AWAY_MAX CONNECT_RATE=$CONNECT_RATE WARMUP=${WARMUP_S}s HEARTBEAT_MS=$HEARTBEAT_MS
HISTORY_MESSAGES=$HISTORY_MESSAGES HISTORY_AGE_MS=$HISTORY_AGE_MS WORKERS=${WORKERS:-default} COMET_ARGS=${COMET_ARGS:-none}

comet: \`comet serve ${COMET_CMD[*]} ${WORKERS:+--workers $WORKERS} $COMET_ARGS\` (a subscribe without a token: $UNTOKENED)

resumetest: \`${RESUME_CMD[*]#"$BIN/"}\` (exit $RESUME_RC)

Machine: $(machine_line); comet $(comet_rev); client and server on loopback, same machine
(resumetest: \`--threads\` epoll threads, one per CPU). Load average at start / end: $LOAD_START / $LOAD_END.

Publishing from $(date -u -d "@$PUBLISH_START" +%T) to $(date -u -d "@$PUBLISH_END" +%T) UTC ($((PUBLISH_END - PUBLISH_START)) s); fits over
the $RSS_N memlog samples from the end of the warm-up (${WARMUP_S} s) to the end ($FIT_H h).
$SHORT
$RESULT

| criterion | figure | limit | |
|---|---|---|---|
| RSS slope after warm-up | $RSS_SLOPE KB/h | < $SLOPE_MAX_KB_H KB/h | ${V[rss]} |
| comet_connections (slots), fitted rise | ${V[slots,rise]} (mean $CONN_MEAN, range $(range 4)) | <= ${V[slots,tol]} | ${V[slots]} |
| process_open_fds, fitted rise | ${V[fds,rise]} (mean $FDS_MEAN, range $(range 10)) | <= ${V[fds,tol]} | ${V[fds]} |
| kernel TCP sockets in use (sockstat, $BENCH_NETNS), fitted rise | ${V[sockets,rise]} (mean $SOCK_MEAN, range $(range 5)) | <= ${V[sockets,tol]} | ${V[sockets]} |
| lost + duplicated + reordered + unexplained gaps + failed publishes + not caught up | $BAD_DELIVERY (resumetest exit $RESUME_RC) | 0 | ${V[delivery]} |

| | |
|---|---|
| comet RSS: baseline / publishing start / end of warm-up / end / peak | $RSS_BASE / $RSS_START / $RSS_WARM / $RSS_END / $RSS_PEAK KB |
| RSS fitted line, end of warm-up to end | $RSS_FIT0 -> $RSS_FIT1 KB |
| comet_heap_bytes after warm-up: fitted slope, line from -> to | $HEAP_SLOPE KB/h, $HEAP_FIT0 -> $HEAP_FIT1 KB |
| comet_history_bytes after warm-up: fitted slope, line from -> to | $HIST_SLOPE KB/h, $HIST_FIT0 -> $HIST_FIT1 KB |
| messages published (answered 200) / sent | $(j .published) / $(j .publish_sent) (failed $(j .publish_failed), unanswered $(j .publish_unanswered)) |
| received (distinct) | $(j .received) |
| lost (skipped without a gap notice) / duplicated / reordered | $(j .lost) / $(j .duplicated) / $(j .reordered) |
| gap notices / unexplained by the history's limits / messages they announced lost | $(j .gaps) / $(j .gaps_unexplained) / $(j .gap_skipped) |
| subscribers not caught up at the end | $(j .unfinished) |
| client-side reconnects (RST / FIN) | $(j .reconnects) ($(j .drops_rst) / $(j .drops_fin)) |
| server-side closes seen by the subscribers | $(j .server_closes) |
| messages replayed from the history on resume | $(j .replayed) |
| resume, connect to 200 head: p50 / p99 / max (count) | $(j .resume_ms.p50) / $(j .resume_ms.p99) / $(j .resume_ms.max) ms ($(j .resume_ms.count)) |
| publisher's largest lag behind schedule | $(j .publish_lag_max_ms) ms |
| connect errors / non-200 / framing errors / resumed without an id | $(j .connect_errors) / $(j .status_errors) / $(j .framing_errors) / $(j .resumed_without_id) |
| heartbeats received by the subscribers | $(j .heartbeats) |
| comet: connections closed, by reason (publishing phase) | eof $(delta comet_connections_closed_total 'reason="eof"'), error $(delta comet_connections_closed_total 'reason="error"'), slow consumer $(delta comet_connections_closed_total 'reason="slow_consumer"'), token expired $(delta comet_connections_closed_total 'reason="expired"'), timeout $(delta comet_connections_closed_total 'reason="timeout"') |
| comet: resume gaps / heartbeats (publishing phase) | $(delta comet_resume_gaps_total) / $(delta comet_heartbeats_total) |
| comet: history at the end (ids / messages / bytes) | $(metric_sum comet_history_ids "$M2") / $(metric_sum comet_history_messages "$M2") / $(metric_sum comet_history_bytes "$M2") |
| comet CPU, publishing phase | $CPU_RUN; $CPU_END s in all |

Seed (2008, Erlang/mochiweb, 10k users, 1000 msg/s): 78 MB.

Files: \`memlog.log\` (memlog: RSS, connections, sockstat, slab, CPU, open fds, heap, history), \`resumetest.log\`
(a progress line every $STATS_INTERVAL, then the summary), \`resumetest.json\`, \`resumetest.err\`,
\`metrics/\` (/metrics at start, publishing start, every $METRICS_EVERY, end), \`comet.out\`/\`.err\`;
graphs \`memory.png\` (the seed's graph) and \`soak.png\` (RSS with the fitted line, heap and history; slots,
descriptors, sockets).

![memory](memory.png)
![soak](soak.png)
EOF
log "done: $DIR/summary.md"
cat "$DIR/summary.md"
if ((${#FAILED[@]})); then
    log "FAILED: ${FAILED[*]}"
    exit 1
fi
