# bench-rolling: messages received per second and streams closed by nodes (resumes), with the
# events (deploys, crash, NATS restart) marked; RSS of each node and of nats-server.
#
#   gnuplot -e "dir='results/rolling/<run>'; label='x'; t0=<epoch s of publishing start>" tools/bench/rolling.gp
#
# Reads <dir>/progress.tsv (t_s, received, server_closes, lost_so_far: cumulative),
# <dir>/events.gp (the events as arrows and labels) and <dir>/rss.tsv (epoch_s, node1..3 and nats RSS in KB).
if (!exists("dir")) dir = '.'
if (!exists("label")) label = ''
if (!exists("t0")) t0 = 0

set datafile separator "\t"
set datafile commentschars "#"
set terminal pngcairo size 1000,900 font "sans,10"
set output dir.'/rolling.png'
set multiplot layout 3,1 title sprintf("comet bench-rolling %s", label)
set grid
set key left top
set xlabel "seconds since publishing started"

# The events as vertical lines with their names, in every panel (written by rolling.sh).
load dir.'/events.gp'

set title "messages received per second (all subscribers)"
set ylabel "msg/s"
prev_t = 0; prev_r = 0
rate(t, r) = (dt = t - prev_t, dr = r - prev_r, prev_t = t, prev_r = r, dt > 0 ? dr / dt : NaN)
plot dir.'/progress.tsv' using 1:(rate($1, $2)) with lines lw 1.5 title "received/s"

set title "streams closed by a node (cumulative: each one resumed on another node), and lost so far"
set ylabel "count"
plot dir.'/progress.tsv' using 1:3 with lines lw 1.5 title "closed by a node", \
     dir.'/progress.tsv' using 1:4 with lines lw 1.5 title "lost so far"

set title "RSS"
set ylabel "MB"
plot for [i = 2:4] dir.'/rss.tsv' using ($1 - t0):(column(i) / 1024.0) with lines title sprintf("node%d", i - 1), \
     dir.'/rss.tsv' using ($1 - t0):($5 / 1024.0) with lines title "nats-server"
unset multiplot
