#!/usr/bin/env bash
# Installs what the tests and the benchmarks need, idempotently (each step is skipped when its
# tool is already there). Debian packages through apt-get, with sudo when not root.
#
#   bash tools/setup.sh --test   what the tests need (tools/test.sh calls this):
#                                nats-server (crates/server/tests/cluster.rs), chromium
#                                (browser.rs), nginx, haproxy, caddy and openssl (proxies.rs),
#                                nft (dead_peers.rs)
#   bash tools/setup.sh          that, and for the benchmarks: gnuplot (Debian's gnuplot-nox)
#                                for the graphs, jq for JSON summaries, `just` (not packaged in
#                                this Debian release) for the recipes
#
# The tests run nats-server and the proxies as their own child processes: the packages'
# services are not needed. Where this installs nats-server, nginx, haproxy or caddy on a host
# run by systemd, their services (which Debian starts on install: nginx and caddy on port 80)
# are stopped and disabled again.
set -euo pipefail

tests_only=false
case "${1:-}" in
    --test) tests_only=true ;;
    "") ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac

sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

# program:package pairs; a program is looked for in /usr/sbin too (not in every user's PATH).
wanted=(nats-server:nats-server chromium:chromium nginx:nginx haproxy:haproxy caddy:caddy openssl:openssl nft:nftables)
$tests_only || wanted+=(gnuplot:gnuplot-nox jq:jq)

have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }

missing=()
for pair in "${wanted[@]}"; do
    have "${pair%%:*}" || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
    if [[ -d /run/systemd/system ]]; then
        for package in "${missing[@]}"; do
            case "$package" in
                nats-server | nginx | haproxy | caddy)
                    echo "setup: the tests start $package themselves: stopping and disabling its service"
                    "${sudo_cmd[@]}" systemctl disable --now "$package" || true
                    ;;
            esac
        done
    fi
fi

if ! $tests_only && ! command -v just >/dev/null 2>&1; then
    echo "setup: installing just (cargo install, takes a minute or two)"
    cargo install --locked just
fi

for pair in "${wanted[@]}"; do
    have "${pair%%:*}" || { echo "setup: ${pair%%:*} is still missing" >&2; exit 1; }
done
echo "setup: ${wanted[*]%%:*} present"
