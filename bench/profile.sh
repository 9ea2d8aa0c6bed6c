#!/bin/sh
# bench/profile.sh WORKLOAD [--storage null|tmpfs|disk] [--seconds N]
#                  [--backend ours|stock] [--qemu-binary PATH]
#                  [--iothread-opts OPTS] [--out DIR]
# bench/profile.sh --compare DIR_A DIR_B
#
# Where our backend's CPU goes for one bench workload (bench/run.py --list).
# With hardware counters (`perf stat -e instructions true` counts them):
# perf record -g on the QEMU process during the load.  Without (as in most
# VMs): QEMU under valgrind --tool=callgrind, instructions counted for the
# load only, per request, then callgrind_annotate.  A short text report is
# written to bench/results/profile-<backend>-<workload>-<time>/report.txt.
# PROFILE_TOOL=perf|callgrind forces the choice.  --compare prints two perf
# profiles' QEMU CPU per request by function side by side, with the change.
set -e
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
if [ "$1" = "--compare" ]; then
    exec /usr/bin/python3 "$here/profile.py" "$@"
fi
"$here/setup.sh" >/dev/null
tool=${PROFILE_TOOL:-}
if [ -z "$tool" ]; then
    if perf stat -x, -e instructions true 2>&1 >/dev/null |
            grep -q '^[0-9][0-9]*,.*instructions'; then
        tool=perf
    else
        tool=callgrind
        echo "profile: perf has no instruction counter here" \
             "(perf stat -e instructions: not supported): using callgrind" >&2
    fi
fi
exec /usr/bin/python3 "$here/profile.py" --tool "$tool" "$@"
