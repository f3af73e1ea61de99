#!/bin/bash
# CPU of everything a command runs (process accounting), by command name, and the total
rm -f /var/log/account/pa; touch /var/log/account/pa; accton /var/log/account/pa >/dev/null
b0=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat); t0=$(date +%s.%N)
"$@" > /tmp/acct_run.out 2>&1; rc=$?
b1=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat); t1=$(date +%s.%N)
sleep 1; accton off >/dev/null
echo "rc $rc wall $(python3 -c "print(round($t1-$t0,1))") machine-cpu $(python3 -c "print(($b1-$b0)/100)")"
dump-acct /var/log/account/pa | awk -F'|' '{gsub(/ /,"",$3);gsub(/ /,"",$4); c[$1]+=($3+$4)/100; n[$1]++; t+=($3+$4)/100} END {printf "acct total %.1f\n", t; for (k in c) if (c[k] > 0.5) printf "%7.1f %3d %s\n", c[k], n[k], k}' | sort -rn | head -${TOP:-15}
