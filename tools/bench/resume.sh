#!/usr/bin/env bash
# bench-resume: messages lost across forced reconnects, on loopback.
#
#   1. build the release binaries; start `comet serve` on free loopback ports with its defaults
#      (history on: 32 messages / 120 s per id; heartbeats every 15 s);
#   2. memlog every MEMLOG_INTERVAL seconds;
#   3. resumetest: SUBSCRIBERS SSE subscribers (/events/<id>, one id each) while MSG_RATE
#      messages per second are published round-robin to their ids for DURATION; the
#      subscribers drop their own connections RECONNECTS times in all, at random moments (RST or
#      FIN), stay away up to AWAY_MAX and come back with Last-Event-ID; every message must
#      arrive exactly once, in order (goal: 0 lost inside the history window);
#   4. stop everything this script started (by pid) and write
#      results/resume/<yyyy-mm-dd>-<label>/ with raw logs, /metrics before and after, summary.md.
#
# Settings (environment or flags; flags win):
#   DURATION=60s      --duration     publishing time
#   RECONNECTS=1000   --reconnects   client-side drops, all subscribers together
#   MSG_RATE=1000     --msg-rate     messages per second, all ids together
#   SUBSCRIBERS=20    --subscribers  subscribers (ids 1..N)
#   AWAY_MAX=100ms    --away-max     longest pause between a drop and the reconnect
#   DROP=mixed        --drop         rst, fin or mixed
#   LABEL=run         --label        results folder suffix
#   WORKERS=          --workers      comet --workers (default: comet's own)
#   COMET_ARGS=                      more `comet serve` arguments (e.g. "--history-messages 8")
#   MEMLOG_INTERVAL=2                seconds between memlog lines
#   RESULTS=results/resume           where result folders go
set -euo pipefail

BENCH=resume
COMMAND_LINE="$0 $*"
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
# variable, flag (- for none), default: see bench_settings in lib.sh and the header above.
SETTINGS=(
    DURATION         --duration     60s
    RECONNECTS       --reconnects   1000
    MSG_RATE         --msg-rate     1000
    SUBSCRIBERS      --subscribers  20
    AWAY_MAX         --away-max     100ms
    DROP             --drop         mixed
    LABEL            --label        run
    WORKERS          --workers      ''
    COMET_ARGS       -              ''
    MEMLOG_INTERVAL  -              2
    RESULTS          -              results/resume
)
bench_settings "$@"
BIN=$PWD/target/release
DURATION_S=$(seconds "$DURATION")

log "build"
command -v jq >/dev/null || ./tools/setup.sh >/dev/null
cargo build --release -q -p comet -p resumetest -p memlog

bench_results_dir "$RESULTS" "$LABEL"
log "results in $DIR"

# Everything this script starts, stopped by pid on exit.
COMET_PID= MEMLOG_PID= RESUME_PID=
cleanup() { kill_quietly "$RESUME_PID" "$MEMLOG_PID" "$COMET_PID"; }
trap cleanup EXIT

log "starting comet"
# shellcheck disable=SC2086 # COMET_ARGS is a list of arguments
start_comet ${WORKERS:+--workers $WORKERS} $COMET_ARGS
log "comet pid $COMET_PID public=$PUBLIC publish=$PUBLISH"
sleep 1
RSS_BASE=$(rss_kb "$COMET_PID")
LOAD_START=$(load_avg)
save_metrics "$DIR/metrics-start.txt"

start_memlog

RESUME_CMD=("$BIN/resumetest" --target "$PUBLIC" --publish "$PUBLISH" --subscribers "$SUBSCRIBERS"
    --rate "$MSG_RATE" --duration "${DURATION_S}s" --reconnects "$RECONNECTS" --drop "$DROP"
    --away-max "$AWAY_MAX" --json "$DIR/resumetest.json")
log "resumetest: $SUBSCRIBERS subscribers, $MSG_RATE msg/s for ${DURATION_S}s, $RECONNECTS reconnects"
"${RESUME_CMD[@]}" >"$DIR/resumetest.log" 2>"$DIR/resumetest.err" &
RESUME_PID=$!
RESUME_RC=0
wait "$RESUME_PID" || RESUME_RC=$?
RESUME_PID=
((RESUME_RC == 0)) || log "WARNING: resumetest exited with $RESUME_RC"

save_metrics "$DIR/metrics-end.txt"
RSS_END=$(rss_kb "$COMET_PID")
RSS_PEAK=$(rss_peak_kb "$COMET_PID" "$RSS_END")
CPU_S=$(cpu_s "$COMET_PID")
LOAD_END=$(load_avg)
stop_comet 5 >/dev/null
wait "$MEMLOG_PID" 2>/dev/null || true
MEMLOG_PID=

[[ -s $DIR/resumetest.json ]] || die "resumetest wrote no summary: $(tail -3 "$DIR/resumetest.err")"
J=$DIR/resumetest.json
j() { jq -r "$1" "$J"; }
LOST=$(j .lost)
DUPLICATED=$(j .duplicated)
if ((LOST == 0 && DUPLICATED == 0 && $(j .reordered) == 0)); then
    VERDICT="**Goal met: 0 messages lost inside the window** (none duplicated or reordered)."
else
    VERDICT="**Goal NOT met: $LOST lost, $DUPLICATED duplicated, $(j .reordered) reordered.**"
fi
if (($(j .gaps) > 0)); then
    VERDICT="$VERDICT $(j .gaps) gap notices announced $(j .gap_skipped) messages as outside the history."
fi
if (($(j .publish_failed) > 0)); then
    VERDICT="$VERDICT **$(j .publish_failed) publishes failed.**"
fi
M1=$DIR/metrics-start.txt M2=$DIR/metrics-end.txt
# $2: a label pair to select samples by (see metric_sum).
delta() { echo $(($(metric_sum "$1" "$M2" "${2:-}") - $(metric_sum "$1" "$M1" "${2:-}"))); }

cat >"$DIR/summary.md" <<EOF
# bench-resume: $LABEL ($(date -u +%FT%TZ))

Command: \`$COMMAND_LINE\` with DURATION=$DURATION RECONNECTS=$RECONNECTS MSG_RATE=$MSG_RATE
SUBSCRIBERS=$SUBSCRIBERS AWAY_MAX=$AWAY_MAX DROP=$DROP WORKERS=${WORKERS:-default} COMET_ARGS=${COMET_ARGS:-none}

resumetest: \`${RESUME_CMD[*]#"$BIN/"}\` (exit $RESUME_RC)

Machine: $(machine_line);
comet $(comet_rev); client and server on loopback, same machine.

$VERDICT

| | |
|---|---|
| messages published (answered 200) / sent | $(j .published) / $(j .publish_sent) (failed $(j .publish_failed), unanswered $(j .publish_unanswered)) |
| received (distinct) | $(j .received) |
| lost (skipped without a gap notice) | $LOST |
| duplicated / reordered | $DUPLICATED / $(j .reordered) |
| gap notices / messages they announced lost | $(j .gaps) / $(j .gap_skipped) |
| subscribers not caught up at the end | $(j .unfinished) |
| client-side reconnects (RST / FIN) | $(j .reconnects) ($(j .drops_rst) / $(j .drops_fin)) |
| server-side closes | $(j .server_closes) |
| messages replayed from the history (received on a resumed stream before its position) | $(j .replayed) |
| deliveries promised by publish answers | $(j .publish_connections) (messages for a subscriber that was away are promised to no one and come from the history) |
| resuming connection, connect to 200 head, p50 / p99 / max | $(j .resume_ms.p50) / $(j .resume_ms.p99) / $(j .resume_ms.max) ms |
| publisher's largest lag behind schedule | $(j .publish_lag_max_ms) ms |
| connect errors / non-200 / framing errors / resumed without an id | $(j .connect_errors) / $(j .status_errors) / $(j .framing_errors) / $(j .resumed_without_id) |
| comet: resume gaps / slow-consumer disconnects / heartbeats (deltas over the run) | $(delta comet_resume_gaps_total) / $(delta comet_connections_closed_total 'reason="slow_consumer"') / $(delta comet_heartbeats_total) |
| comet: history at the end (ids / messages / bytes, all workers) | $(metric_sum comet_history_ids "$M2") / $(metric_sum comet_history_messages "$M2") / $(metric_sum comet_history_bytes "$M2") |
| comet RSS baseline / end / peak | $RSS_BASE / $RSS_END / $RSS_PEAK KB |
| comet CPU | $CPU_S s (utime + stime) |
| load average at start / end | $LOAD_START / $LOAD_END |

Files: \`resumetest.log\` (per-second progress and the summary), \`resumetest.json\`,
\`resumetest.err\`, \`metrics-start.txt\`, \`metrics-end.txt\`, \`memlog.log\`, \`comet.out\`/\`.err\`.
EOF
log "done: $DIR/summary.md"
cat "$DIR/summary.md"
exit "$RESUME_RC"
