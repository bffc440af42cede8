# comet's recipes. `just --list` shows them.

# Run the server on its defaults (subscribers on :8000, publish API on 127.0.0.1:8001).
serve *ARGS:
    cargo run --release -p comet -- serve {{ARGS}}

# The whole test suite, every test included (installs nats-server, chromium and the proxies
# if missing); arguments go to the test harness. What CI runs, with fmt and clippy.
test *ARGS:
    bash tools/test.sh {{ARGS}}

# Fault injection: SEEDS seeded runs of the real server built with the `faults` feature (its ring
# fails completions from the seed's schedule, crates/ring/src/faults.rs), invariants checked after
# each (crates/server/tests/faults.rs). SEEDS (1000), FIRST (the first seed, 1), RATE (a fault's
# chance per decision; by default 0.02, 0.05 or 0.1 by seed), THREADS (servers at once, the
# cores). E.g. `just faults SEEDS=10000 RATE=0.3`; a failing seed is rerun with FIRST=<seed> SEEDS=1.
faults *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    SEEDS=1000 FIRST=1 RATE= THREADS=
    for arg in {{ARGS}}; do
        case "$arg" in
            SEEDS=*|FIRST=*|RATE=*|THREADS=*) declare "$arg" ;;
            *) echo "just faults: unknown argument $arg (SEEDS=, FIRST=, RATE=, THREADS=)" >&2; exit 2 ;;
        esac
    done
    export COMET_FAULT_SEEDS="$SEEDS" COMET_FAULT_SEED="$FIRST"
    if [ -n "$RATE" ]; then export COMET_FAULT_RATE="$RATE"; fi
    if [ -n "$THREADS" ]; then export COMET_FAULT_THREADS="$THREADS"; fi
    cargo test -p comet --features faults --test faults -- --nocapture

# fmt + clippy + tests + fault-injection seeds + a short fuzz pass over the committed corpora, exactly as CI.
ci:
    bash .ci/run

# New inputs go into crates/http/fuzz/corpus/; `FUZZ_RUNS=10000000 bash tools/fuzz.sh --record`
# writes results/fuzz/<date>-<target>/. Installs cargo-fuzz if missing (tools/fuzz.sh).
# Every fuzz target (or those named) for FUZZ_SECONDS each (default 60).
fuzz *TARGETS:
    bash tools/fuzz.sh {{TARGETS}}

# The seed's experiment on loopback: 10k subscribers at 100/s, hold, 1000 msg/s for DURATION;
# writes results/c10k/<date>-<label>/. E.g. `DURATION=60s LABEL=quick just bench-c10k`.
bench-c10k *ARGS:
    bash tools/bench/c10k.sh {{ARGS}}

# A million subscribers on this machine, 1000 msg/s, then a ramp to the highest sustained rate,
# then faults (50k peers vanish without a FIN, 100k reconnect at once; as root, FAULTS=0 skips);
# writes results/1m/<date>-<label>/. Settings in the header of tools/bench/1m.sh.
bench-1m:
    bash tools/bench/1m.sh

# SSE subscribers on one big ring per worker vs many small rings (the test-only
# COMET_RING_FILES), and with THREADS vs a thread per ring (results/workers): user bytes per
# connection, CPU while idle, CPU per delivered message; writes results/rings/<date>-<label>/.
# Settings in the header of tools/bench/rings.sh.
bench-rings *ARGS:
    bash tools/bench/rings.sh {{ARGS}}

# Three comet nodes joined through one nats-server vs one node alone, 10k subscribers, 1000 msg/s,
# a ramp, then a run with NATS killed and restarted; writes results/cluster/<date>-<label>/.
# Settings in the header of tools/bench/cluster.sh (e.g. `LABEL=quick DURATION=30s just bench-cluster`).
bench-cluster:
    bash tools/bench/cluster.sh

# A rolling deploy, a crash and a NATS restart under load on three nodes on JetStream: 30,000
# SSE subscribers, 1000 msg/s (retried on 503); every publish answered 200 must arrive once, in
# order; writes results/rolling/<date>-<label>/. Settings in the header of tools/bench/rolling.sh
# (e.g. `just bench-rolling --subscribers 1000 --duration 60s --label small`).
bench-rolling *ARGS:
    bash tools/bench/rolling.sh {{ARGS}}

# What the JetStream backplane costs: publish-to-delivery latency against core NATS (two nodes
# side by side, in one run), then nats-server's and a node's memory against the number of ids.
# Writes results/jetstream/<date>-<label>/; settings in the header of tools/bench/jetstream.sh.
bench-jetstream *ARGS:
    bash tools/bench/jetstream.sh {{ARGS}}

# A single node's deploy under load: 10,000 SSE subscribers at 1000 msg/s for 60 s while comet
# (`--state-dir`) gets SIGTERM and starts again twice; every message once, in order, no gap
# notice. Writes results/restart/<date>-<label>/; settings in the header of tools/bench/restart.sh.
bench-restart *ARGS:
    bash tools/bench/restart.sh {{ARGS}}

# Messages lost across forced reconnects: 20 SSE subscribers drop and resume (Last-Event-ID)
# 1000 times while 1000 msg/s are published for 60 s; writes results/resume/<date>-<label>/.
# Settings in the header of tools/bench/resume.sh (e.g. `DURATION=10s RECONNECTS=100 just bench-resume`).
bench-resume *ARGS:
    bash tools/bench/resume.sh {{ARGS}}

# Idle memory per connection at 10k with auth, history and heartbeats on vs off, and history
# bytes per active id; writes results/features/<date>-<label>/. Settings in the header of
# tools/bench/features.sh (a smoke run: `CONNS=500 HISTORY_IDS=1000 HOLD=17s just bench-features`).
bench-features *ARGS:
    bash tools/bench/features.sh {{ARGS}}

# The seed's 24-hour experiment with everything on: 10k SSE subscribers with auth, history and
# heartbeats, 5 % of them dropping and resuming a minute, 1000 msg/s for DURATION (default 24h);
# checks RSS slope, flat connections/descriptors/sockets and 0 lost; writes
# results/soak/<date>-<label>/. Settings in the header of tools/bench/soak.sh
# (a smoke run: `DURATION=10m LABEL=smoke-10m just soak`).
soak *ARGS:
    bash tools/bench/soak.sh {{ARGS}}

# Redraw a results folder's graphs: `just plot results/c10k/<date>-<label>`.
plot DIR:
    bash tools/plot/plot.sh {{DIR}}

# Install what the tests and benchmarks need (nats-server, chromium, nginx, haproxy, caddy,
# openssl, gnuplot-nox, jq, just) if missing.
setup:
    bash tools/setup.sh

# Apply the kernel settings of kernel-tuning.md that this host allows (root); `just tune --check` only reports.
tune *ARGS:
    bash tools/tune.sh {{ARGS}}

# Where a delivered message's CPU goes: perf + flamegraphs of comet at 10k subscribers for a few
# message rates; writes results/profile/<date>-<label>/ (needs perf; flamegraphs need
# `cargo install inferno`). Settings in the header of tools/bench/profile.sh.
profile *ARGS:
    bash tools/bench/profile.sh {{ARGS}}
