#!/bin/sh
# /init of the Xen lane's guest (PVH for migrations, PV for save/restore):
# starts msdirty with its output on the console (hvc0), which dom0 reads from
# xenconsoled's log. Parameters from the guest's kernel command line (xl's
# extra=): ms_hot=MiB ms_sweep=MiB ms_pps=pages/s ms_print=ms.
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev 2>/dev/null
hot=8 sweep=32 pps=2000 print=100
for a in $(cat /proc/cmdline); do
  case $a in
    ms_hot=*) hot=${a#ms_hot=} ;;
    ms_sweep=*) sweep=${a#ms_sweep=} ;;
    ms_pps=*) pps=${a#ms_pps=} ;;
    ms_print=*) print=${a#ms_print=} ;;
  esac
done
echo "MSGUEST up: $(uname -r), $(grep MemTotal /proc/meminfo)"
# pid 1 must never exit (the guest would panic): restart the workload if it dies.
while :; do
  /bin/msdirty "$hot" "$sweep" "$pps" "$print"
  echo "MSGUEST msdirty exited with $?"
  sleep 1
done
