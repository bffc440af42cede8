#!/usr/bin/env bash
# The whole test suite, every test included: installs what the tests need when it is missing
# (tools/setup.sh --test: nats-server, chromium, nginx, haproxy, caddy, openssl; with sudo when
# not root), then runs every test of the workspace, the `#[ignore = "needs ..."]` ones too.
# Arguments go to the test harness: `bash tools/test.sh proxies` runs the tests whose names
# contain "proxies".
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup.sh --test
cargo test --workspace -- --include-ignored "$@"
