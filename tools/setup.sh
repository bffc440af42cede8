#!/usr/bin/env bash
# Installs what the benchmarks and tests need, idempotently: gnuplot (Debian's gnuplot-nox) for
# the graphs, jq for reading JSON summaries, Chromium (Debian's chromium) for the browser test
# (crates/server/tests/browser.rs), and `just` (not packaged in this Debian release) for the
# recipes. Safe to run again: each step is skipped when its tool is already there.
set -euo pipefail

missing_apt=()
command -v gnuplot >/dev/null 2>&1 || missing_apt+=(gnuplot-nox)
command -v jq >/dev/null 2>&1 || missing_apt+=(jq)
command -v chromium >/dev/null 2>&1 || missing_apt+=(chromium)
if ((${#missing_apt[@]})); then
    echo "setup: installing ${missing_apt[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing_apt[@]}"
fi

if ! command -v just >/dev/null 2>&1; then
    echo "setup: installing just (cargo install, takes a minute or two)"
    cargo install --locked just
fi

echo "setup: gnuplot $(gnuplot --version | awk '{print $2}'), $(jq --version), $(just --version), $(chromium --version 2>/dev/null)"
