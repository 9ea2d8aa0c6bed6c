#!/bin/sh
# bench/setup.sh: install the Debian packages the bench needs
#   python3-matplotlib  the PNG charts (bench/run.py draws none without it)
#   valgrind            bench/profile.sh when perf has no hardware counters
#   linux-perf          bench/profile.sh with perf record -g when it has
# Run once as root; safe to re-run.
set -e
need=""
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need="$need python3-matplotlib"
command -v valgrind >/dev/null 2>&1 || need="$need valgrind"
command -v callgrind_annotate >/dev/null 2>&1 || need="$need valgrind"
command -v perf >/dev/null 2>&1 || need="$need linux-perf"
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "bench/setup.sh: need root to install:$need" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi
echo "bench/setup.sh: ok"
