#!/usr/bin/env bash
# Applies the kernel settings of kernel-tuning.md that this host allows, idempotently, and says
# what it could not change. Needs root for the sysctls; changes nothing it need not.
# Usage: tools/tune.sh [--check]   (--check only reports)
set -u
check_only=0
[ "${1:-}" = "--check" ] && check_only=1

status=0
# setting, wanted value, how to compare: "min" (at least, single number), "exact"
want() {
    local key=$1 value=$2 mode=$3 now
    if ! now=$(sysctl -n "$key" 2>/dev/null); then
        printf '%-34s %-28s %s\n' "$key" "-" "absent on this kernel (skipped)"
        return
    fi
    now=$(echo "$now" | tr -s '\t ' ' ')
    local ok=0
    case $mode in
        min) [ "$now" -ge "$value" ] 2>/dev/null && ok=1 ;;
        exact) [ "$now" = "$value" ] && ok=1 ;;
        mem) # three page counts, each at least the wanted one
            read -r a b c <<<"$now"; read -r x y z <<<"$value"
            [ "$a" -ge "$x" ] && [ "$b" -ge "$y" ] && [ "$c" -ge "$z" ] && ok=1 ;;
    esac
    if [ $ok = 1 ]; then
        printf '%-34s %-28s %s\n' "$key" "$now" "ok"
    elif [ $check_only = 1 ]; then
        printf '%-34s %-28s %s\n' "$key" "$now" "want $value"
        status=1
    elif sysctl -qw "$key=$value" 2>/dev/null; then
        printf '%-34s %-28s %s\n' "$key" "$(sysctl -n "$key" | tr -s '\t ' ' ')" "set (was $now)"
    else
        printf '%-34s %-28s %s\n' "$key" "$now" "COULD NOT SET $value"
        status=1
    fi
}

echo "setting                            value                        result"
want net.core.somaxconn 4096 min
want net.ipv4.tcp_max_syn_backlog 4096 min
# Left alone: widening it towards 1024 makes servers' ports collide with clients' ephemeral
# ones (a listener cannot bind a port a connected socket uses). floodtest binds more source
# addresses instead. Reported only.
printf '%-34s %-28s %s\n' net.ipv4.ip_local_port_range \
    "$(sysctl -n net.ipv4.ip_local_port_range | tr -s '\t ' ' ')" "not changed (see kernel-tuning.md)"
# Pages: room for a million sockets each holding a page of unread data (4 GB) before pressure.
want net.ipv4.tcp_mem "786432 1048576 1572864" mem
want fs.file-max 2200000 min
want fs.nr_open 1048576 min
want kernel.io_uring_disabled 0 exact

hard=$(ulimit -Hn)
if [ "$hard" -ge 1048576 ] 2>/dev/null || [ "$hard" = unlimited ]; then
    printf '%-34s %-28s %s\n' "RLIMIT_NOFILE (hard)" "$hard" "ok: one ring per worker holds 1M"
else
    printf '%-34s %-28s %s\n' "RLIMIT_NOFILE (hard)" "$hard" \
        "cannot raise: comet opens $(( (1000000 + hard - 65) / (hard - 64) )) rings for 1M, one worker per core (kernel-tuning.md)"
fi
exit $status
