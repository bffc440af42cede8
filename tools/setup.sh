#!/usr/bin/env bash
# Installs what the benchmarks need, idempotently: gnuplot (Debian's gnuplot-nox) for the
# graphs, jq for reading JSON summaries, and `just` (not packaged in this Debian release) for
# the recipes. Safe to run again: each step is skipped when its tool is already there.
set -euo pipefail

missing_apt=()
command -v gnuplot >/dev/null 2>&1 || missing_apt+=(gnuplot-nox)
command -v jq >/dev/null 2>&1 || missing_apt+=(jq)
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

echo "setup: gnuplot $(gnuplot --version | awk '{print $2}'), $(jq --version), $(just --version)"
