# comet's recipes. `just --list` shows them.

# Run the server on its defaults (subscribers on :8000, publish API on 127.0.0.1:8001).
serve *ARGS:
    cargo run --release -p comet -- serve {{ARGS}}

# The whole test suite, every test included (installs nats-server, chromium and the proxies
# if missing); arguments go to the test harness. What CI runs, with fmt and clippy.
test *ARGS:
    bash tools/test.sh {{ARGS}}

# fmt + clippy + tests + a short fuzz pass over the committed corpora, exactly as CI.
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

# A million subscribers on this machine, 1000 msg/s, then a ramp to the highest sustained rate;
# writes results/1m/<date>-<label>/. Settings in the header of tools/bench/1m.sh.
bench-1m:
    bash tools/bench/1m.sh

# Three comet nodes joined through one nats-server vs one node alone, 10k subscribers, 1000 msg/s,
# a ramp, then a run with NATS killed and restarted; writes results/cluster/<date>-<label>/.
# Settings in the header of tools/bench/cluster.sh (e.g. `LABEL=quick DURATION=30s just bench-cluster`).
bench-cluster:
    bash tools/bench/cluster.sh

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
