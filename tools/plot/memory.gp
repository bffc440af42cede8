# The seed's graph: server memory (RSS, KB) over minutes elapsed, from a memlog file.
#
#   gnuplot -e "memlog='mem.log'; out='memory.png'; label='c10k'" tools/plot/memory.gp
#
# memlog columns: 1 date, 2 epoch, 3 rss_kb, 4 connections, 5 tcp_inuse, 6 tcp_alloc,
# 7 tcp_mem_pages, 8 slab_kb, 9 cpu_s, 10 open_fds, 11 heap_kb,
# 12 history_kb. Lines starting with '#' are ignored.
if (!exists("memlog")) memlog = 'mem.log'
if (!exists("out")) out = 'memory.png'
if (!exists("label")) label = ''

set datafile separator "\t"
set datafile commentschars "#"
stats memlog using 2 nooutput
t0 = STATS_min

set terminal pngcairo size 1000,600 font "sans,10"
set output out
set title sprintf("comet server memory %s", label)
set xlabel "minutes elapsed"
set ylabel "RSS (KB)"
set y2label "connections"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set grid
set key left top
plot memlog using (($2 - t0) / 60.0):3 with lines lw 2 title "server RSS (KB)", \
     memlog using (($2 - t0) / 60.0):4 axes x1y2 with lines dt 2 title "connections (/metrics)"
