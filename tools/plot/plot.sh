#!/usr/bin/env bash
# Draws a results folder's graphs from its raw logs:
#   memory.png  the seed's graph (server RSS over minutes elapsed), from memlog.log
#   run.png     memory, connections and delivery latency on one time axis (needs floodtest.tsv)
# Usage: tools/plot/plot.sh results/c10k/<date>-<label> [label]
set -euo pipefail
dir=${1:?usage: $0 RESULTS_DIR [LABEL]}
label=${2:-$(basename "$dir")}
here=$(dirname "$0")
[[ -s $dir/memlog.log ]] || { echo "plot: no $dir/memlog.log" >&2; exit 1; }
gnuplot -e "memlog='$dir/memlog.log'; out='$dir/memory.png'; label='$label'" "$here/memory.gp"
if [[ -s $dir/floodtest.tsv ]]; then
    gnuplot -e "memlog='$dir/memlog.log'; flood='$dir/floodtest.tsv'; out='$dir/run.png'; label='$label'" "$here/run.gp"
fi
echo "plot: graphs written in $dir"
