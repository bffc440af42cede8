# The soak's graph: comet's RSS with the least-squares line fitted after the warm-up, and the
# counts that must stay flat (comet_connections, process_open_fds, kernel TCP sockets in use),
# over minutes since publishing started. Drawn by tools/bench/soak.sh:
#
#   gnuplot -e "memlog='memlog.log'; out='soak.png'; label='run'; t0=EPOCH; fit_from=EPOCH; a=KB; b=KB_PER_H" tools/plot/soak.gp
#
# memlog columns: 1 date, 2 epoch, 3 rss_kb, 4 connections, 5 tcp_inuse, 6 tcp_alloc,
# 7 tcp_mem_pages, 8 slab_kb, 9 cpu_s, 10 open_fds, 11 heap_kb, 12 history_kb.
if (!exists("label")) label = ''
set datafile separator "\t"
set datafile commentschars "#"
set terminal pngcairo size 1000,900 font "sans,10" noenhanced
set output out
set multiplot layout 3,1 title sprintf("comet soak %s", label)
set grid
set key left bottom
set xlabel "minutes since publishing started"
warm = (fit_from - t0) / 60.0
set arrow 1 from warm, graph 0 to warm, graph 1 nohead dt 3
set ylabel "KB"
set yrange [0:*]
plot memlog using (($2 - t0) / 60.0):3 with lines lw 2 title "comet RSS", \
     memlog using (($2 - t0) / 60.0):(($2 >= fit_from) ? a + b * ($2 - fit_from) / 3600.0 : NaN) \
         with lines dt 2 lw 2 title sprintf("RSS fit after warm-up: %+.0f KB/h", b), \
     memlog using (($2 - t0) / 60.0):11 with lines title "comet_heap_bytes", \
     memlog using (($2 - t0) / 60.0):12 with lines title "comet_history_bytes"
set autoscale y
set ylabel "count"
plot memlog using (($2 - t0) / 60.0):4 with lines title "comet_connections", \
     memlog using (($2 - t0) / 60.0):5 with lines title "kernel TCP sockets in use (sockstat)"
set ylabel "descriptors"
plot memlog using (($2 - t0) / 60.0):10 with lines title "process_open_fds"
unset multiplot
