# Bar charts of an evaluation (docs/results.md): median total migration time
# and downtime per workload and policy, on loopback and on the 1 Gbit/s tbf
# veth. Data: python3 bench/eval_summary.py OUT --dat=docs/img/eval-bars.dat
#   gnuplot -e "dat='docs/img/eval-bars.dat'; out='docs/img/eval-bars'" scripts/eval-bars.gp
if (!exists("dat")) dat = 'docs/img/eval-bars.dat'
if (!exists("out")) out = 'docs/img/eval-bars'

set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left noenhanced
set logscale y
set xtics noenhanced

do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1200,800 font 'sans,10' } else { set terminal svg size 1200,800 dynamic font 'sans,11' }
    set output out.'.'.fmt
    set multiplot layout 2,2 title "precopy (Xen 4.17) vs fragmented vs downtime (QEMU-like), median of runs"
    do for [blk=0:1] {
        lname = (blk == 0) ? 'loopback' : '1 Gbit/s tbf veth'
        set title 'total migration time, '.lname
        set ylabel 's'
        plot dat index blk using 2:xtic(1) title 'precopy', '' index blk using 3 title 'fragmented', '' index blk using 4 title 'downtime'
        set title 'downtime, '.lname
        set ylabel 'ms'
        plot dat index blk using 5:xtic(1) title 'precopy', '' index blk using 6 title 'fragmented', '' index blk using 7 title 'downtime'
    }
    unset multiplot
    unset output
}
