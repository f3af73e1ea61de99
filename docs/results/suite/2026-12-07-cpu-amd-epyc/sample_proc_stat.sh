#!/bin/bash
# samples /proc/stat cpu line every 5 s until killed
while true; do echo "$(date +%s) $(head -1 /proc/stat)"; sleep 5; done
