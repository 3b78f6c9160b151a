set terminal pngcairo size 900,400 font 'sans,10'
set output 'docs/img/dirtyrate-stressng.png'
set title "pid 21377 (stress-ng): 1 process, 15 ranges, 11 MiB, preload; 575 MiB tracked at the end" noenhanced
set xlabel 'seconds'
set ylabel 'pages written per 50 ms'
set grid
set key off
set yrange [0:*]
plot 'docs/img/dirtyrate-stressng.dat' using 1:2 with steps lw 2
unset output
set terminal svg size 900,400 dynamic font 'sans,11'
set output 'docs/img/dirtyrate-stressng.svg'
set title "pid 21377 (stress-ng): 1 process, 15 ranges, 11 MiB, preload; 575 MiB tracked at the end" noenhanced
set xlabel 'seconds'
set ylabel 'pages written per 50 ms'
set grid
set key off
set yrange [0:*]
plot 'docs/img/dirtyrate-stressng.dat' using 1:2 with steps lw 2
unset output
