#!/usr/bin/env bash
# Publish->delivery latency through one node, JetStream vs core NATS: floodtest (200 /test/
# subscribers) + msggen (500 msg/s to ids 1..200, 20 s). Informal: the machine is shared.
set -u
B=/work/wt-js/target/release
D=/tmp/js-probe/lat; rm -rf $D; mkdir -p $D
for mode in jetstream core; do
  nats-server -js -sd $D/store-$mode -p 14333 -a 127.0.0.1 > $D/nats-$mode.log 2>&1 & NP=$!
  sleep 0.5
  extra=; [[ $mode == core ]] && extra=--cluster-core
  $B/comet serve --listen 127.0.0.1:18100 --publish-listen 127.0.0.1:18101 --workers 1 --cluster nats://127.0.0.1:14333 $extra > $D/comet-$mode.out 2> $D/comet-$mode.err & CP=$!
  for _ in $(seq 100); do grep -q listening $D/comet-$mode.out && break; sleep 0.1; done
  $B/floodtest --target 127.0.0.1:18100 -n 200 --rate 1000 --duration 26s --json $D/flood-$mode.json > $D/flood-$mode.log 2>&1 & FP=$!
  sleep 3
  $B/msggen --target 127.0.0.1:18101 --rate 500 --max-id 200 --duration 20s --json $D/msggen-$mode.json > $D/msggen-$mode.log 2>&1
  wait $FP
  kill $CP; wait $CP 2>/dev/null; kill $NP; wait $NP 2>/dev/null
  echo "$mode: $(tail -1 $D/flood-$mode.log | cut -c1-400)"
done
