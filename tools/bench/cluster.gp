# bench-cluster: messages received per second and per-second p99 delivery latency on each node
# of one run, on one time axis (seconds since the first node's first row).
#
#   gnuplot -e "dir='results/cluster/<run>/steady'; out='cluster.png'; label='x'" tools/bench/cluster.gp
#
# Reads <dir>/{node1,node2,node3,solo}/floodtest.tsv (solo when present); columns as in
# tools/plot/run.gp: 2 epoch_s, 9 messages_per_s, 12 p99_us.
if (!exists("dir")) dir = '.'
if (!exists("out")) out = 'cluster.png'
if (!exists("label")) label = ''

set datafile separator "\t"
set datafile commentschars "#"
f(n) = sprintf("%s/%s/floodtest.tsv", dir, n)
stats f("node1") using 2 nooutput
t0 = STATS_min
solo = system(sprintf("test -s %s && echo 1 || echo 0", f("solo"))) + 0
ms(us) = (us > 0) ? us / 1000.0 : NaN

set terminal pngcairo size 1000,800 font "sans,10"
set output out
set multiplot layout 2,1 title sprintf("comet bench-cluster %s", label)
set grid
set key left top
set xlabel "seconds"

set title "messages received per second"
set ylabel "msg/s"
plot for [n in "node1 node2 node3"] f(n) using ($2 - t0):9 with lines title n, \
     (solo ? f("solo") : f("node1")) using ($2 - t0):(solo ? $9 : NaN) with lines title (solo ? "solo" : "")

set title "delivery latency p99 per second"
set ylabel "ms"
set logscale y
plot for [n in "node1 node2 node3"] f(n) using ($2 - t0):(ms($12)) with points pt 7 ps 0.4 title n, \
     (solo ? f("solo") : f("node1")) using ($2 - t0):(solo ? ms($12) : NaN) with points pt 7 ps 0.4 title (solo ? "solo" : "")
unset multiplot
