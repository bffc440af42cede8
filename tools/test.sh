#!/usr/bin/env bash
# The whole test suite, every test included: installs what the tests need when it is missing
# (tools/setup.sh --test: nats-server, chromium, nginx, haproxy, caddy, openssl; with sudo when
# not root), then runs every test of the workspace, the `#[ignore = "needs ..."]` ones too.
# Arguments go to the test harness: `bash tools/test.sh proxies` runs the tests whose names
# contain "proxies".
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup.sh --test
# Known flaky, left out until fixed (README, Tests): after one of three JetStream servers dies,
# nats-server 2.9 sometimes never places a node's replacement consumer, and the test's
# subscriber waits in vain (about 1 run in 11 under load, and once on a quiet machine). Run it
# alone: `cargo test -p comet --test jetstream -- --ignored a_stream_with_three_replicas`.
known_flaky=(--skip a_stream_with_three_replicas_survives_a_server)
cargo test --workspace -- --include-ignored "${known_flaky[@]}" "$@"
