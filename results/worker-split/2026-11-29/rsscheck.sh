#!/usr/bin/env bash
# Idle /test/ subscribers: anonymous RSS, file-backed RSS and heap (comet_heap_bytes) per
# connection, for one comet binary ($1); floodtest from /work/wt-new (any build of it).
BIN=$1; FT=/work/wt-new/target/release/floodtest
out=$(mktemp -d)
$BIN serve --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0 >$out/out 2>$out/err & pid=$!
for i in $(seq 50); do grep -q listening $out/out && break; sleep 0.1; done
pub=$(sed -n 's/.*public=\([^ ]*\).*/\1/p' $out/out); pu=$(sed -n 's/.*publish=\([^ ]*\).*/\1/p' $out/out)
rss0=$(awk "/RssAnon/{print \$2}" /proc/$pid/status); f0=$(awk "/RssFile/{print \$2}" /proc/$pid/status)
h0=$(curl -s http://$pu/metrics | awk '$1=="comet_heap_bytes"{print $2}')
$FT --target $pub -n 10000 --rate 2000 --path test --duration 12s >/dev/null 2>&1 & fp=$!
sleep 9
rss1=$(awk "/RssAnon/{print \$2}" /proc/$pid/status); f1=$(awk "/RssFile/{print \$2}" /proc/$pid/status); echo "file $f0->$f1"
h1=$(curl -s http://$pu/metrics | awk '$1=="comet_heap_bytes"{print $2}')
echo "$BIN rss/conn=$(( (rss1-rss0)*1024/10000 )) heap/conn=$(( (h1-h0)/10000 )) (rss $rss0->$rss1 KB, heap $h0->$h1)"
wait $fp; kill $pid; wait $pid 2>/dev/null; rm -rf $out
