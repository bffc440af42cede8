#!/usr/bin/env bash
# Shared pieces of the bench scripts (sourced, not run): settings from the environment and
# flags, logging, durations, the results folder, starting comet on free loopback ports and
# memlog beside it, and readings of /proc and of comet's /metrics.
# The caller sets BENCH (its name, for logs) and DIR (after bench_results_dir).

# A script's settings: the script declares SETTINGS, three words per setting,
#   VARIABLE  --flag (or - for environment only)  default
# and calls `bench_settings "$@"`. Each VARIABLE keeps its value from the environment when that
# is set and not empty, else takes its default; then every `--flag VALUE` sets its VARIABLE
# (flags win). Anything else on the command line ends the script with status 2.
bench_settings() {
    local i name
    for ((i = 0; i < ${#SETTINGS[@]}; i += 3)); do
        name=${SETTINGS[i]}
        printf -v "$name" '%s' "${!name:-${SETTINGS[i + 2]}}"
    done
    while (($#)); do
        name=
        for ((i = 0; i < ${#SETTINGS[@]}; i += 3)); do
            [[ $1 != - && $1 == "${SETTINGS[i + 1]}" ]] && name=${SETTINGS[i]}
        done
        if [[ -z $name ]]; then
            echo "$BENCH: unknown argument $1 (see the header of $0)" >&2
            exit 2
        fi
        if (($# < 2)); then
            echo "$BENCH: $1 needs a value (see the header of $0)" >&2
            exit 2
        fi
        printf -v "$name" '%s' "$2"
        shift 2
    done
}

log() { printf '%s %s: %s\n' "$(date +%T)" "$BENCH" "$*"; }
die() {
    log "ERROR: $*" >&2
    exit 1
}

# "90", "90s", "10m", "24h" -> seconds.
seconds() {
    local v=$1
    case $v in
    *ms) echo $((${v%ms} / 1000)) ;;
    *s) echo "${v%s}" ;;
    *m) echo $((${v%m} * 60)) ;;
    *h) echo $((${v%h} * 3600)) ;;
    *) echo "$v" ;;
    esac
}

# results/<bench>/<date>-<label>[-N]: never overwrites an earlier run.
bench_results_dir() {
    local base=$1/$(date +%F)-$2 n=2
    DIR=$base
    while [[ -e $DIR ]]; do
        DIR=$base-$n
        n=$((n + 1))
    done
    mkdir -p "$DIR"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Sets FREE_PORT to a free loopback port not in $* (no subshell: it would repeat $RANDOM),
# below the ephemeral range when there is room there: a port a client socket took is not seen
# by the check (which only finds listeners) and makes the server's bind fail.
pick_port() {
    local low base=30000 span=20000
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    if ((low > 12000)); then
        base=10000 span=$((low - 10000))
    fi
    while :; do
        FREE_PORT=$((base + RANDOM % span))
        [[ " $* " == *" $FREE_PORT "* ]] && continue
        port_free "$FREE_PORT" && return
    done
}

# Starts `comet serve` on two free ports below the ephemeral range with any extra arguments;
# sets COMET_PID, PUBLIC and PUBLISH. comet refuses a port in use, so a race only costs a retry.
start_comet() {
    local base=$((20000 + RANDOM % 10000)) try public publish
    for try in 1 2 3 4 5; do
        public=$((base + 2 * try)) publish=$((base + 2 * try + 1))
        port_free "$public" && port_free "$publish" || continue
        "$BIN/comet" serve --listen "127.0.0.1:$public" --publish-listen "127.0.0.1:$publish" \
            "$@" >"$DIR/comet.out" 2>"$DIR/comet.err" &
        COMET_PID=$!
        for _ in $(seq 300); do
            grep -q '^comet: listening' "$DIR/comet.out" 2>/dev/null && break
            kill -0 "$COMET_PID" 2>/dev/null || break
            sleep 0.1
        done
        if grep -q '^comet: listening' "$DIR/comet.out"; then
            PUBLIC=127.0.0.1:$public PUBLISH=127.0.0.1:$publish
            return 0
        fi
        kill "$COMET_PID" 2>/dev/null || true
        wait "$COMET_PID" 2>/dev/null || true
        COMET_PID=
    done
    die "comet did not start: $(tail -3 "$DIR/comet.err")"
}

# Runs the whole bench again in a network namespace of its own, as root where unshare exists
# (NETNS=0: in the host's), and exits with its status. Its sockstat counts this bench's sockets
# only, and with EHASH set its established-connections hash has EHASH buckets: the kernel sizes
# a new namespace's hash from net.ipv4.tcp_child_ehash_entries, set here for the moment the
# namespace is made and put back when the bench ends. The host's hash is sized at boot from its
# memory (262,144 buckets here), and a lookup walks its chain for every segment: at a million
# connections on loopback (2M sockets) that walk was 30 % of comet's CPU during a shutdown
# (results/1m/2026-11-30-shutdown-perf). Call as `bench_netns tools/bench/<script> "$@"`, from
# the repository root, before anything else runs; BENCH_NETNS then says where the bench ran,
# in the summary's words.
bench_netns() {
    [[ -n ${BENCH_NETNS:-} ]] && return 0 # inside already
    BENCH_NETNS="the host's network namespace"
    if [[ ${NETNS:-1} != 1 || $(id -u) -ne 0 ]] || ! command -v unshare >/dev/null; then
        return 0
    fi
    local key=net.ipv4.tcp_child_ehash_entries old= rc=0
    BENCH_NETNS="a network namespace of its own (unshare --net, loopback only)"
    if [[ -n ${EHASH:-} ]] && old=$(sysctl -n "$key" 2>/dev/null) && sysctl -qw "$key=$EHASH"; then
        BENCH_NETNS+=" with $EHASH established-hash buckets"
    else
        old=
    fi
    export BENCH_NETNS
    unshare --net -- bash -c 'ip link set lo up && exec bash "$0" "$@"' "$@" || rc=$?
    [[ -z $old ]] || sysctl -qw "$key=$old"
    exit "$rc"
}

# Raises the kernel's caps on a listen queue (net.core.somaxconn, tcp_max_syn_backlog) to $1
# where they are lower (needs root: listen(2) keeps at most somaxconn of a --backlog); prints
# what it changed.
raise_listen_caps() {
    local key
    for key in net.core.somaxconn net.ipv4.tcp_max_syn_backlog; do
        if (($(sysctl -n "$key") < $1)); then
            echo "$(sysctl -w "$key=$1" 2>&1) (for a --backlog of $1)"
        fi
    done
}

# The netstat counter $1 (TcpExt) now, machine-wide.
netstat_field() {
    awk -v k="$1" '$1 == "TcpExt:" && !h {for (i = 2; i <= NF; i++) n[i] = $i; h = 1; next}
        $1 == "TcpExt:" {for (i = 2; i <= NF; i++) if (n[i] == k) print $i}' /proc/net/netstat
}

# Stops comet with SIGTERM (graceful), SIGKILL after $1 seconds; prints the seconds it took.
stop_comet() {
    local limit=${1:-5} start=$SECONDS
    kill -TERM "$COMET_PID" 2>/dev/null || true
    for _ in $(seq $((limit * 10))); do
        kill -0 "$COMET_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$COMET_PID" 2>/dev/null || true
    wait "$COMET_PID" 2>/dev/null || true
    COMET_PID=
    echo $((SECONDS - start))
}

# A run's events: `event TEXT` appends "seconds since T0 (0 before it is set), TEXT" to
# $DIR/events.tsv and logs it; `events_start` writes the file's header.
events_start() { printf '# t_s\tevent\n' >"$DIR/events.tsv"; }
event() {
    local t
    t=$(awk -v a="$(date +%s.%N)" -v b="${T0:-0}" 'BEGIN {printf "%.1f", a - b}')
    printf '%s\t%s\n' "$t" "$*" >>"$DIR/events.tsv"
    log "$*"
}

# Kills each pid given (empty ones and ones already gone are fine): the scripts' EXIT traps.
kill_quietly() {
    local pid
    for pid; do kill "$pid" 2>/dev/null || true; done
}

# Starts memlog on comet ($COMET_PID, $PUBLISH) every $MEMLOG_INTERVAL s into $DIR/memlog.log;
# sets MEMLOG_PID.
start_memlog() {
    "$BIN/memlog" --pid "$COMET_PID" --metrics "$PUBLISH" --interval-s "$MEMLOG_INTERVAL" \
        --out "$DIR/memlog.log" 2>"$DIR/memlog.err" &
    MEMLOG_PID=$!
}

# Saves comet's /metrics answer to $1.
save_metrics() { curl -sf --max-time 5 "http://$PUBLISH/metrics" >"$1" || log "WARNING: /metrics failed"; }
# Sum of a per-worker metric over the workers (or a single-valued one), from a saved /metrics;
# with $3 (a label pair, e.g. 'reason="timeout"'), only the samples that have it.
metric_sum() {
    awk -v m="$1" -v l="${3:-}" '($1 == m || index($1, m "{") == 1) && (l == "" || index($1, l)) {s += $NF}
        END {printf "%.0f\n", s}' "$2"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# The highest RSS seen of pid $1: its VmHWM, the readings given after it (KB) and memlog's
# samples in $DIR.
rss_peak_kb() {
    local pid=$1
    shift
    (hwm_kb "$pid"; printf '%s\n' "$@"; awk -F'\t' '!/^#/ && $3 != "NaN" {print $3}' "$DIR/memlog.log") | sort -n | tail -1
}
cpu_s() { awk '{sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / 100}' "/proc/$1/stat"; }
# User and system CPU seconds of the processes $@ together, as "user system" (gone ones count 0).
procs_cpu() {
    local pid
    for pid in "$@"; do cat "/proc/$pid/stat" 2>/dev/null; done |
        awk '{sub(/.*\) /, ""); u += $12; s += $13} END {printf "%.2f %.2f", u / 100, s / 100}'
}
# The machine's CPU time since boot in clock ticks, as "busy total" (busy: all but idle and
# iowait, every CPU).
machine_ticks() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit}' /proc/stat; }
tcp_field() { awk -v k="$1" '/^TCP:/ {for (i = 2; i < NF; i += 2) if ($i == k) print $(i + 1)}' /proc/net/sockstat; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
# RSS of a process and all its children (floodtest forks one child per ~19k connections).
tree_rss_kb() {
    local pids
    pids=$(pgrep -P "$1" | tr '\n' ' ')
    ps -o rss= -p "$1" $pids 2>/dev/null | awk '{s += $1} END {print s + 0}'
}
# Connections floodtest reports (third column of its stats TSV).
flood_connected() { awk -F'\t' '!/^#/ {c = $3} END {print c + 0}' "$DIR/floodtest.tsv" 2>/dev/null || echo 0; }
# Messages floodtest received so far (seventh column).
flood_messages() { awk -F'\t' '!/^#/ {c = $7} END {print c + 0}' "$DIR/floodtest.tsv" 2>/dev/null || echo 0; }
# Connection attempts floodtest gave up on so far (eighth column; it does not retry).
flood_errors() { awk -F'\t' '!/^#/ {c = $8} END {print c + 0}' "$DIR/floodtest.tsv" 2>/dev/null || echo 0; }
# Waits until floodtest ($FLOOD_PID) reports $1 connected, at most $2 seconds; dies if floodtest
# ends first; warns and goes on at the deadline, or once every attempt has ended (connected or
# failed: floodtest does not retry).
wait_connected() {
    local want=$1 deadline=$((SECONDS + $2)) connected errors
    while connected=$(flood_connected) && ((connected < want)); do
        errors=$(flood_errors)
        if ((connected + errors >= want)); then
            log "WARNING: $errors of $want connection attempts failed (floodtest does not retry); going on with $connected"
            return
        fi
        kill -0 "$FLOOD_PID" 2>/dev/null || die "floodtest ended early: $(tail -3 "$DIR/floodtest.log")"
        ((SECONDS < deadline)) || {
            log "WARNING: only $(flood_connected) of $want connected after $2 s; going on"
            return
        }
        sleep 1
    done
}
# The commit comet was built from, noting uncommitted changes under crates/.
# The revision is read once, when a bench script starts: a summary written at the end of a
# 2-hour run names the code that ran, not whatever was checked out meanwhile.
COMET_REV_AT_START="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- crates 2>/dev/null || echo ' (uncommitted changes in crates/)')"
comet_rev() {
    echo "$COMET_REV_AT_START"
}
machine_line() {
    echo "$(nproc) CPUs, Linux $(uname -r), $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) memory"
}
