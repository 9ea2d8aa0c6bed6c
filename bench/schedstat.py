#!/usr/bin/python3
"""bench/schedstat.py [--after S] [--seconds N]

Where the threads of a running bench point spend their time: for each
thread of QEMU, xensimd and xenblk-front, the seconds per second it ran on
a CPU, the seconds per second it was runnable but waited for one (the
kernel's run delay, /proc/<pid>/task/<tid>/schedstat), and how many times
a second it was put on a CPU.  Threads of one name in one process are
added up; threads that started or ended during the sample are left out.

Start it beside a bench run, e.g.

    bench/schedstat.py --after 5 & bench/run.py --workloads \\
        4k-randread-qd32-2q --backends ours --storage null --repeat 1

Waiting while the cores are not both busy means the scheduler left a
runnable thread queued behind another on one CPU (docs/bench.rst, two
queues).
"""

import argparse
import collections
import os
import re
import time

PROCESSES = re.compile(r'qemu-system|xensimd|xenblk-front')


def bench_pids():
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                argv0 = f.read().split(b'\0')[0].decode(errors='replace')
        except OSError:
            continue
        if PROCESSES.search(os.path.basename(argv0)):
            yield pid


def snapshot():
    """{(pid, tid): (name, [ns on CPU, ns runnable and waiting, runs])}"""
    threads = {}
    for pid in bench_pids():
        try:
            tids = os.listdir('/proc/%s/task' % pid)
        except OSError:
            continue
        for tid in tids:
            base = '/proc/%s/task/%s/' % (pid, tid)
            try:
                with open(base + 'comm') as f:
                    name = f.read().strip()
                with open(base + 'schedstat') as f:
                    fields = [int(x) for x in f.read().split()[:3]]
            except (OSError, ValueError):
                continue
            threads[(pid, tid)] = ('%s:%s' % (pid, name), fields)
    return threads


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[1])
    ap.add_argument('--after', type=float, default=0,
                    help='seconds to wait first (let the point start)')
    ap.add_argument('--seconds', type=float, default=2)
    args = ap.parse_args()
    time.sleep(args.after)
    before = snapshot()
    t0 = time.monotonic()
    time.sleep(args.seconds)
    after = snapshot()
    dt = time.monotonic() - t0
    # per thread alive at both ends (QEMU's pool workers come and go),
    # then added up by process and name
    sums = collections.defaultdict(lambda: [0, 0, 0])
    for key, (name, fields) in after.items():
        if key in before:
            for i in range(3):
                sums[name][i] += fields[i] - before[key][1][i]
    print('%-28s %8s %8s %10s' % ('thread', 'on-cpu', 'waiting', 'runs/s'))
    busy = 0.0
    for name in sorted(sums):
        run, wait, runs = (x / dt for x in sums[name])
        if run / 1e9 < 0.01:
            continue
        busy += run / 1e9
        print('%-28s %8.2f %8.2f %10.0f' % (name, run / 1e9, wait / 1e9,
                                            runs))
    print('%-28s %8.2f of %d cores' % ('all', busy, os.cpu_count()))


if __name__ == '__main__':
    main()
