#!/usr/bin/env bash
# Fuzzing: the cargo-fuzz targets of crates/http/fuzz (every parser that reads bytes from the
# network; each asserts properties, see the header of each fuzz_targets/*.rs), one after the
# other, one process each (libFuzzer on one core, AddressSanitizer).
#
#   bash tools/fuzz.sh [TARGET...]           every target (or those named) for FUZZ_SECONDS each
#                                            (default 60), or FUZZ_RUNS executions each; new
#                                            inputs go into crates/http/fuzz/corpus/<target>
#   bash tools/fuzz.sh --ci [TARGET...]      CI: the committed corpus, then FUZZ_CI_RUNS (default
#                                            50000) new executions per target; the corpus in the
#                                            tree is left as it is
#   bash tools/fuzz.sh --record [TARGET...]  as the first form, then minimize the corpus
#                                            (cargo fuzz cmin) and write
#                                            results/fuzz/<date>-<target>/summary.md and the table
#                                            results/fuzz/<date>/summary.md
#
# cargo-fuzz is installed if missing. It needs nightly flags: on stable, RUSTC_BOOTSTRAP=1
# (set here). A failing target stops the script; libFuzzer's report names the input it wrote
# under crates/http/fuzz/artifacts/<target>/ (`cargo fuzz run <target> <that file>` replays it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=explore
case "${1:-}" in
--ci) mode=ci; shift ;;
--record) mode=record; shift ;;
esac

export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
cd crates/http/fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
# Every target at once (`cargo fuzz build` takes one target or all), so that the runs below
# only run.
cargo fuzz build

date=$(date -u +%Y-%m-%d)
for target in "${targets[@]}"; do
    dict=()
    [ "$target" = parse_request ] && dict=(-dict=dict/http.dict)
    [ "$target" = jwt ] && dict=(-dict=dict/jwt.dict)
    corpus=corpus/$target
    mkdir -p "$corpus"
    if [ "$mode" = ci ]; then
        # New inputs go to a scratch folder; the committed corpus is read only.
        scratch=$(mktemp -d)
        inputs=$(find "$corpus" -type f | wc -l)
        limit=(-runs=$((inputs + ${FUZZ_CI_RUNS:-50000})))
        dirs=("$scratch" "$corpus")
    else
        scratch=
        if [ -n "${FUZZ_RUNS:-}" ]; then
            limit=(-runs="$FUZZ_RUNS")
        else
            limit=(-max_total_time="${FUZZ_SECONDS:-60}")
        fi
        dirs=("$corpus")
    fi
    log=$(mktemp)
    command=(cargo fuzz run "$target" "${dirs[@]}" -- "${limit[@]}" "${dict[@]}" -print_final_stats=1)
    echo "== $target: ${command[*]}"
    start=$(date +%s)
    status=0
    "${command[@]}" >"$log" 2>&1 || status=$?
    seconds=$(($(date +%s) - start))
    [ -n "$scratch" ] && rm -rf "$scratch"
    # libFuzzer's last status line: "#N DONE cov: C ft: F corp: ... exec/s: E rss: R".
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    echo "   ${runs:-?} executions, ${speed:-?}/s, ${seconds} s: $last"
    if [ "$status" -ne 0 ]; then
        grep -E 'panicked|left:|right:|SUMMARY|Test unit written' "$log" | head -n 20 || true
        echo "fuzz: $target failed (full log: $log)" >&2
        exit "$status"
    fi
    if [ "$mode" = record ]; then
        before=$(find "$corpus" -type f | wc -l)
        cargo fuzz cmin "$target" "$corpus" -- "${dict[@]}" >/dev/null 2>&1
        after=$(find "$corpus" -type f | wc -l)
        size=$(($(cat "$corpus"/* | wc -c) / 1024))
        out=$root/results/fuzz/$date-$target
        mkdir -p "$out"
        {
            echo "# Fuzz run: $target"
            echo
            echo "- Target: \`crates/http/fuzz/fuzz_targets/$target.rs\` (its header states the properties)"
            echo "- Command (in crates/http/fuzz): \`RUSTC_BOOTSTRAP=1 ${command[*]}\`"
            echo "- Executions: $runs"
            echo "- Speed: $speed exec/s (libFuzzer's average)"
            echo "- Duration: $seconds s"
            echo "- Machine: $(nproc) vCPU, $(uname -sr), one libFuzzer process; $(rustc --version)"
            echo "- Corpus: $before inputs after the run, $after after \`cargo fuzz cmin\` ($size KB, committed in \`crates/http/fuzz/corpus/$target\`)"
            echo "- Findings (crashes, property failures): none in this run"
            echo
            echo "libFuzzer's last lines:"
            echo
            echo '```'
            grep -E '^#[0-9]+' "$log" | tail -n 3
            grep -E '^(stat::|Done)' "$log"
            echo '```'
        } >"$out/summary.md"
    fi
    rm -f "$log"
done

if [ "$mode" = record ]; then
    # The table covers every target recorded that day (runs of single targets included).
    out=$root/results/fuzz/$date
    mkdir -p "$out"
    field() { sed -n "s/^- $1: //p" "$2" | head -n 1; }
    {
        echo "# Fuzz runs of $date"
        echo
        echo "One libFuzzer process per target, one after the other ($(nproc) vCPU, $(uname -sr)),"
        echo "with \`bash tools/fuzz.sh --record\` (FUZZ_RUNS or FUZZ_SECONDS per target). Each row links"
        echo "the target's summary (command, libFuzzer's last lines, corpus)."
        echo
        echo "| target | executions | exec/s | duration | cov / features | findings |"
        echo "|---|---|---|---|---|---|"
        for summary in "$root"/results/fuzz/"$date"-*/summary.md; do
            name=$(basename "$(dirname "$summary")")
            name=${name#"$date"-}
            cov=$(grep -E '^#[0-9]+.*DONE' "$summary" | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \/ \2/p')
            echo "| [$name](../$date-$name/summary.md) | $(field Executions "$summary") | $(field Speed "$summary" | cut -d' ' -f1) | $(field Duration "$summary") | $cov | $(field "Findings (crashes, property failures)" "$summary") |"
        done
    } >"$out/summary.md"
    echo "wrote $out/summary.md"
fi
