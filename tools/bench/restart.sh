#!/usr/bin/env bash
# bench-restart: a single node's deploy under load. With `--state-dir` a graceful restart
# (SIGTERM, start again) keeps the epoch and every id's history, so the subscribers resume
# where they were: every message published 200 must arrive exactly once, in order, with no
# gap notice (issue 14: "single node: graceful restart with 10,000 subscribers resuming").
#
#   1. build the release binaries; start `comet serve --state-dir` (a folder in the results) on
#      free loopback ports;
#   2. resumetest: SUBSCRIBERS SSE subscribers (/events/<id>, one id each) while MSG_RATE
#      messages a second are published round-robin to their ids for DURATION; a subscriber
#      whose stream ends reconnects with Last-Event-ID after its stream's last `retry:`
#      (comet's jittered hint, as EventSource does; FOLLOW_RETRY=0: at once, and again 50 ms
#      after a refused connect); the publisher sends a message again after a 503 or a lost
#      connection;
#   3. at RESTARTS evenly spaced moments of the publishing window, comet gets SIGTERM, and once
#      it has exited (its state saved) it is started again on the same ports and folder;
#   4. stop everything this script started (by pid) and write
#      results/restart/<yyyy-mm-dd>-<label>/: summary.md (PASS/FAIL: 0 lost, duplicated,
#      reordered, gap notices), events.tsv, resumetest's log and JSON, comet's logs per start.
#
# Settings (environment or flags; flags win):
#   SUBSCRIBERS=10000  --subscribers  SSE subscribers (ids 1..N)
#   MSG_RATE=1000      --msg-rate     messages per second, all ids together
#   DURATION=60s       --duration     publishing time
#   RESTARTS=2         --restarts     graceful restarts during it
#   LABEL=run          --label        results folder suffix
#   WORKERS=           --workers      comet --workers (default: comet's own)
#   FOLLOW_RETRY=1     --follow-retry see 2.
#   SOURCE_ADDRS=      --source-addrs resumetest --source-addrs (default: its own, one loopback
#                                     source address per 1,000 subscribers; 0: the kernel's
#                                     choice, every connection from 127.0.0.1)
#   COMET_ARGS=                       more `comet serve` arguments
#   RESULTS=results/restart           where result folders go
set -euo pipefail

BENCH=restart
COMMAND_LINE="$0 $*"
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh
SETTINGS=(
    SUBSCRIBERS  --subscribers  10000
    MSG_RATE     --msg-rate     1000
    DURATION     --duration     60s
    RESTARTS     --restarts     2
    LABEL        --label        run
    WORKERS      --workers      ''
    FOLLOW_RETRY --follow-retry 1
    SOURCE_ADDRS --source-addrs ''
    COMET_ARGS   -              ''
    RESULTS      -              results/restart
)
bench_settings "$@"
BIN=$PWD/target/release
DURATION_S=$(seconds "$DURATION")
((RESTARTS >= 1)) || die "RESTARTS must be at least 1"
log "build"
cargo build --release -q -p comet -p resumetest
bench_results_dir "$RESULTS" "$LABEL"
log "results in $DIR"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

COMET_PID= RESUME_PID=
trap 'kill_quietly "$RESUME_PID" "$COMET_PID"' EXIT
STATE=$DIR/state
mkdir -p "$STATE"
SERVE_ARGS=(--state-dir "$STATE")
[[ -n $WORKERS ]] && SERVE_ARGS+=(--workers "$WORKERS")
# shellcheck disable=SC2206 # COMET_ARGS is a list of arguments
SERVE_ARGS+=($COMET_ARGS)
T0=
events_start

# The first start picks the ports; the restarts reuse them (the clients know only those).
start_comet "${SERVE_ARGS[@]}"
mv "$DIR/comet.out" "$DIR/comet-1.out"
mv "$DIR/comet.err" "$DIR/comet-1.err"
restart_comet() { # $1: the start's number
    "$BIN/comet" serve --listen "$PUBLIC" --publish-listen "$PUBLISH" "${SERVE_ARGS[@]}" \
        >"$DIR/comet-$1.out" 2>"$DIR/comet-$1.err" &
    COMET_PID=$!
    for _ in $(seq 300); do
        grep -q '^comet: listening' "$DIR/comet-$1.out" 2>/dev/null && return 0
        kill -0 "$COMET_PID" 2>/dev/null || break
        sleep 0.1
    done
    die "comet did not start again: $(tail -3 "$DIR/comet-$1.err")"
}

# SIGTERM, and the wait for the exit (SIGKILL after 60 s: then the state is not saved and the
# check below stops the run); appends the seconds it took to STOP_S.
stop_graceful() {
    local start=$SECONDS watchdog
    kill -TERM "$COMET_PID"
    (sleep 60 && kill -KILL "$COMET_PID" 2>/dev/null) &
    watchdog=$!
    wait "$COMET_PID" || true
    kill_quietly "$watchdog"
    COMET_PID=
    STOP_S+=($((SECONDS - start)))
}

log "resumetest: $SUBSCRIBERS subscribers, $MSG_RATE msg/s for ${DURATION_S}s, $RESTARTS restarts"
RESUME_CMD=("$BIN/resumetest" --target "$PUBLIC" --publish "$PUBLISH" --subscribers "$SUBSCRIBERS"
    --rate "$MSG_RATE" --duration "${DURATION_S}s" --reconnects 0 --attempts-max 1000
    --connect-rate 2000 --ready-timeout 120s --drain 30s --json "$DIR/resumetest.json")
((FOLLOW_RETRY == 1)) && RESUME_CMD+=(--follow-retry)
[[ -n $SOURCE_ADDRS ]] && RESUME_CMD+=(--source-addrs "$SOURCE_ADDRS")
"${RESUME_CMD[@]}" >"$DIR/resumetest.log" 2>"$DIR/resumetest.err" &
RESUME_PID=$!
for _ in $(seq 1800); do
    grep -q 'subscribers streaming; publishing' "$DIR/resumetest.log" 2>/dev/null && break
    kill -0 "$RESUME_PID" 2>/dev/null || die "resumetest ended early: $(tail -3 "$DIR/resumetest.err")"
    sleep 0.1
done
T0=$(date +%s.%N)
event "publishing starts"
STOP_S=()
for ((r = 1; r <= RESTARTS; r++)); do
    at=$((DURATION_S * r / (RESTARTS + 1)))
    sleep "$(awk -v t="$at" -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN {d = t - (a - b); print (d > 0) ? d : 0}')"
    event "SIGTERM"
    stop_graceful
    [[ -s $STATE/comet.state ]] || die "no state file after the graceful stop: $(tail -3 "$DIR/comet-$r.err")"
    event "exited (state $(stat -c %s "$STATE/comet.state") bytes)"
    restart_comet $((r + 1))
    event "started again"
done
RESUME_RC=0
wait "$RESUME_PID" || RESUME_RC=$?
RESUME_PID=
event "resumetest done (exit $RESUME_RC)"
save_metrics "$DIR/metrics-end.txt"
stop_graceful

[[ -s $DIR/resumetest.json ]] || die "resumetest wrote no summary: $(tail -3 "$DIR/resumetest.err")"
J=$DIR/resumetest.json
j() { jq -r "$1" "$J"; }
LOST=$(j .lost) DUPLICATED=$(j .duplicated) REORDERED=$(j .reordered) GAPS=$(j .gaps)
if ((LOST == 0 && DUPLICATED == 0 && REORDERED == 0 && GAPS == 0 && RESUME_RC == 0)); then
    VERDICT="**PASS: every publish answered 200 arrived exactly once, in order, and no subscriber was told of a gap** across $RESTARTS graceful restarts."
else
    VERDICT="**FAIL: $LOST lost, $DUPLICATED duplicated, $REORDERED reordered, $GAPS gap notices (resumetest exit $RESUME_RC).**"
fi
cat >"$DIR/summary.md" <<EOF
# bench-restart: $LABEL ($(date -u +%FT%TZ))

Command: \`$COMMAND_LINE\` with SUBSCRIBERS=$SUBSCRIBERS MSG_RATE=$MSG_RATE DURATION=$DURATION
RESTARTS=$RESTARTS FOLLOW_RETRY=$FOLLOW_RETRY; comet \`serve ${SERVE_ARGS[*]}\` (the folder in the results, removed at the end).

resumetest: \`${RESUME_CMD[*]#"$BIN/"}\`

Machine: $(machine_line); comet $(comet_rev); client and server on loopback, same machine.

Events (seconds since publishing started): $(awk -F'\t' '!/^#/ {printf "%s%s s %s", sep, $1, $2; sep = "; "}' "$DIR/events.tsv").

$VERDICT

| | |
|---|---|
| publishes answered 200 / distinct messages sent | $(j .published) / $(j .publish_sent) (never stored: $(j .publish_failed); sent again after a 503 or a lost connection: $(j .publish_retried); publish connections lost: $(j .publish_conn_lost)) |
| received (distinct) | $(j .received) |
| lost / duplicated / reordered | $LOST / $DUPLICATED / $REORDERED |
| gap notices (all of them; unexplained by the history's limits) | $GAPS ($(j .gaps_unexplained)) |
| subscribers not caught up at the end | $(j .unfinished) |
| streams closed by the server / connect errors (refused while it was down) | $(j .server_closes) / $(j .connect_errors) |
| messages replayed on resume | $(j .replayed) |
| resume, connect to 200 head read by the client: p50 / p99 / max ($(j .resume_ms.count) resumes) | $(j .resume_ms.p50) / $(j .resume_ms.p99) / $(j .resume_ms.max) ms |
| resume, connect to the 200 head's arrival (kernel receive time): p50 / p99 / max ($(j .resumes_unstamped) without one) | $(j .resume_arrival_ms.p50) / $(j .resume_arrival_ms.p99) / $(j .resume_arrival_ms.max) ms |
| graceful stops took (SIGTERM to exit, s; the last one ends the run) | ${STOP_S[*]} |
| publisher's largest lag behind schedule | $(j .publish_lag_max_ms) ms |

Files: \`summary.md\`, \`events.tsv\`, \`resumetest.{log,err,json}\`, \`comet-<start>.{out,err}\`,
\`metrics-end.txt\`.
EOF
rm -rf "$STATE"
log "done: $DIR/summary.md"
cat "$DIR/summary.md"
exit "$((RESUME_RC > 0 || GAPS > 0))"
