# One run on one time axis (minutes elapsed): memory, connections, delivery latency.
#
#   gnuplot -e "memlog='mem.log'; flood='flood.tsv'; out='run.png'; label='c10k'" tools/plot/run.gp
#
# memlog columns: 1 date, 2 epoch, 3 rss_kb, 4 connections, 5 tcp_inuse, 6 tcp_alloc,
#   7 tcp_mem_pages, 8 slab_kb, 9 cpu_s.
# floodtest --stats-file columns: 1 elapsed_s, 2 epoch_s, 3 connected, 4 closed, 5 open,
#   6 chunks, 7 messages, 8 errors, 9 messages_per_s, 10 p50_us, 11 p90_us, 12 p99_us,
#   13 p999_us, 14 max_us (latency of the messages received in that second; 0 = none).
if (!exists("memlog")) memlog = 'mem.log'
if (!exists("flood")) flood = 'flood.tsv'
if (!exists("out")) out = 'run.png'
if (!exists("label")) label = ''

set datafile separator "\t"
set datafile commentschars "#"
stats memlog using 2 nooutput
t0 = STATS_min
m(e) = (e - t0) / 60.0
# A second without messages has no latency: skip its points.
ms(us) = (us > 0) ? us / 1000.0 : NaN

set terminal pngcairo size 1000,1100 font "sans,10"
set output out
set multiplot layout 3,1 title sprintf("comet run %s", label)
set grid
set key left top
set xlabel "minutes elapsed"

set title "memory"
set ylabel "server RSS (KB)"
set yrange [0:*]
set y2label "kernel slab growth (MB)"
set y2tics
set ytics nomirror
# Slab is machine-wide: its growth since the first sample is what the sockets cost the kernel
# (both ends of every loopback connection), plus whatever else runs on the machine.
stats memlog using 8 nooutput
slab0 = STATS_min
plot memlog using (m($2)):3 with lines lw 2 title "server RSS", \
     memlog using (m($2)):(($8 - slab0) / 1024.0) axes x1y2 with lines title "kernel slab growth (MB, machine-wide)"
unset y2tics
unset y2label
set ytics mirror

set title "connections"
set ylabel "connections"
plot memlog using (m($2)):4 with lines lw 2 title "server (/metrics)", \
     flood using (m($2)):5 with lines dt 2 title "floodtest open", \
     flood using (m($2)):8 with lines title "floodtest errors"

set title "delivery latency (per second) and message rate"
set ylabel "ms"
set logscale y
set yrange [*:*]
set y2label "messages/s received"
set y2tics
set y2range [0:*]
set ytics nomirror
plot flood using (m($2)):(ms($10)) with lines title "p50", \
     flood using (m($2)):(ms($12)) with lines lw 2 title "p99", \
     flood using (m($2)):(ms($13)) with lines title "p99.9", \
     flood using (m($2)):(ms($14)) with points pt 7 ps 0.4 title "max", \
     flood using (m($2)):9 axes x1y2 with lines dt 3 lc rgb "gray40" title "messages/s"
unset multiplot
