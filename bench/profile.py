#!/usr/bin/python3
"""bench/profile.py: where our backend's CPU goes for one workload.
Run through bench/profile.sh, which picks the tool:

    bench/profile.py --tool perf|callgrind WORKLOAD [--storage null]
                     [--seconds N] [--out DIR] [--backend ours|stock]
    bench/profile.py --compare DIR_A DIR_B      (two perf profiles)

perf:      our QEMU runs normally; `perf record -a -e cpu-clock -g` covers the load
           only; `perf report --pid` (QEMU's threads, self and children)
           in the report.  PERF_CALLGRAPH="--call-graph dwarf" for full stacks.
callgrind: our QEMU runs under `valgrind --tool=callgrind
           --instr-atstart=no`; instrumentation is switched on for the load
           only (callgrind_control -i on/off, then -d), so the instruction
           count divided by the requests done is instructions per request;
           callgrind_annotate (exclusive and inclusive) in the report.

With perf, QEMU's CPU time per request by function (ns, from the
cpu-clock sample periods) is also written to DIR/profile.json;
--compare prints two such profiles side by side with the difference,
largest first: what one workload or build pays that the other does not.

One point of bench/run.py is run (same attach, same frontend options), so
the profile is of exactly what the bench measures.  The text report is
written to DIR/report.txt (default bench/results/profile-<workload>-<ts>/).
"""

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.dont_write_bytecode = True      # no bench/__pycache__
import run as benchrun  # noqa: E402
xensim = benchrun.xensim


class SlowQMP(xensim.QMP):
    """QEMU under valgrind takes a while to open its QMP socket."""

    def __init__(self, path, timeout=180):
        super().__init__(path, timeout=timeout)


def wrapper(tmp, real, outpat):
    """A stand-in binary that runs @real under callgrind."""
    path = os.path.join(tmp, 'qemu-under-callgrind')
    with open(path, 'w') as f:
        f.write('#!/bin/sh\nexec valgrind --tool=callgrind '
                '--instr-atstart=no --dump-instr=no --separate-threads=no '
                '--callgrind-out-file=%s %s "$@"\n' % (outpat, real))
    os.chmod(path, 0o755)
    return path


def run_cmd(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          **kw)


def ns_per_request(data, pid, ios):
    """{function: ns of QEMU's CPU per request} from a cpu-clock
    perf.data, whose sample periods are nanoseconds."""
    r = run_cmd(['perf', 'report', '-i', data, '--stdio', '--no-children',
                 '--sort', 'symbol', '-g', 'none', '-F', 'period,sym',
                 '--pid', str(pid)])
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split(None, 1)
        if line.startswith('#') or len(parts) < 2 or not parts[0].isdigit():
            continue
        # '[.] name   -   -': the empty columns perf pads symbols with
        sym = re.sub(r'(\s+-)+\s*$', '', parts[1]).strip()
        out[sym] = out.get(sym, 0) + int(parts[0]) / ios
    return out


def compare(dir_a, dir_b, top):
    """Print two perf profiles' ns per request, largest difference first."""
    prof = []
    for d in (dir_a, dir_b):
        try:
            with open(os.path.join(d, 'profile.json')) as f:
                prof.append(json.load(f))
        except OSError as e:
            print('profile: %s: %s (a perf profile made by this version '
                  'of profile.py?)' % (d, e), file=sys.stderr)
            return 1
    a, b = (p['ns_per_request'] for p in prof)
    print('A: %s (%s, %s IOPS)' % (dir_a, prof[0]['workload'],
                                   benchrun.fmt(prof[0]['iops'])))
    print('B: %s (%s, %s IOPS)' % (dir_b, prof[1]['workload'],
                                   benchrun.fmt(prof[1]['iops'])))
    print('QEMU CPU per request, ns: A %.0f, B %.0f, B-A %+.0f' % (
        sum(a.values()), sum(b.values()),
        sum(b.values()) - sum(a.values())))
    print('%9s %9s %9s  function' % ('A ns', 'B ns', 'B-A'))
    keys = sorted(set(a) | set(b),
                  key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))
    for k in keys[:top]:
        print('%9.1f %9.1f %+9.1f  %s' % (a.get(k, 0), b.get(k, 0),
                                          b.get(k, 0) - a.get(k, 0), k))
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('workload', nargs='?')
    ap.add_argument('--tool', choices=('perf', 'callgrind'))
    ap.add_argument('--compare', nargs=2, metavar='DIR',
                    help='print two perf profiles side by side')
    ap.add_argument('--storage', default='null',
                    choices=benchrun.STORAGES)
    ap.add_argument('--backend', default='ours', choices=('ours', 'stock'))
    ap.add_argument('--seconds', type=float, default=None,
                    help='load time (perf: 10, callgrind: 5)')
    ap.add_argument('--out', default=None)
    ap.add_argument('--top', type=int, default=25)
    ap.add_argument('--qemu-binary', default=None,
                    help='the QEMU to profile (default: the backend\'s own, '
                         'as bench/run.py\'s --ours-binary)')
    ap.add_argument('--iothread-opts', default=benchrun.QDISK_IOTHREAD_OPTS,
                    help='IOThread options, as bench/run.py (default: %s)'
                         % benchrun.QDISK_IOTHREAD_OPTS)
    ap.add_argument('--front-poll-us', type=int, default=0,
                    help='the frontend polls for responses this long '
                    'before sleeping, as bench/run.py --front-poll-us')
    a = ap.parse_args()
    if a.compare:
        return compare(a.compare[0], a.compare[1], a.top)
    if not a.tool:
        ap.error('--tool is required')
    if a.workload not in benchrun.BY_NAME:
        ap.error('unknown workload %r; one of: %s' % (
            a.workload, ', '.join(benchrun.BY_NAME)))
    wl = benchrun.BY_NAME[a.workload]
    seconds = a.seconds or (10.0 if a.tool == 'perf' else 5.0)
    ts = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    out = a.out or os.path.join(BENCH, 'results', 'profile-%s-%s-%s' % (
        a.backend, a.workload, ts))
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='qxb-profile-')

    # bench/run.py's own defaults, one point, no waiting for an idle machine
    opts = benchrun.make_parser().parse_args([])
    opts.idle_wait = 0
    opts.iothread_opts = a.iothread_opts
    opts.front_poll_us = a.front_poll_us
    bench = benchrun.Bench(opts)
    if a.qemu_binary:
        xensim.QEMUS[a.backend] = os.path.abspath(a.qemu_binary)
    real = xensim.QEMUS[a.backend]
    bench.props[a.backend] = benchrun.device_props(real)
    state = {}

    if a.tool == 'callgrind':
        outpat = os.path.join(out, 'callgrind.out.%p')
        xensim.QEMUS[a.backend] = wrapper(tmp, real, outpat)
        xensim.QMP = SlowQMP
        bench.front_extra = ['--deadline', '120']

        def start(backend, pid):
            state['pid'] = pid
            r = run_cmd(['callgrind_control', '-i', 'on', str(pid)])
            state['on'] = r.stdout + r.stderr

        def end(backend, pid):
            r1 = run_cmd(['callgrind_control', '-d', 'load', str(pid)])
            r2 = run_cmd(['callgrind_control', '-i', 'off', str(pid)])
            state['off'] = r1.stdout + r1.stderr + r2.stdout + r2.stderr
    else:
        def start(backend, pid):
            state['pid'] = pid
            state['perf'] = subprocess.Popen(
                # the whole machine, kept to QEMU's threads at report time:
                # with -p, threads QEMU starts during the load (the thread
                # pool's workers) would be missed.  cpu-clock: VMs rarely
                # have hardware counters.
                ['perf', 'record', '-a', '-e', 'cpu-clock'] +
                os.environ.get('PERF_CALLGRAPH', '-g').split() +
                ['-o', os.path.join(out, 'perf.data')],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def end(backend, pid):
            p = state['perf']
            p.send_signal(signal.SIGINT)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    bench.on_load_start = start
    bench.on_load_end = end

    benchrun.log('profiling %s %s on %s with %s for %g s' % (
        a.backend, a.workload, a.storage, a.tool, seconds))
    try:
        point = bench.run_point(a.backend, a.storage, wl, 0, seconds)
    except benchrun.PointError as e:
        print('profile: the point failed: %s' % e, file=sys.stderr)
        return 1
    finally:
        xensim.QEMUS[a.backend] = real
        bench.images.remove()
        shutil.rmtree(tmp, ignore_errors=True)

    L = []
    L.append('profile of %s QEMU (%s), workload %s (%s), storage %s, '
             'tool %s, %g s load' % (a.backend, real, wl.name, wl.describe(),
                                     a.storage, a.tool, seconds))
    L.append('requests done: %d; %s IOPS%s' % (
        point['ios'], benchrun.fmt(point['iops']),
        ' (under valgrind: IOPS and CPU time are meaningless, instruction '
        'counts are not)' if a.tool == 'callgrind' else ''))
    L.append('backend CPU %s s (user %s, sys %s; threads: %s); frontend '
             'CPU %s s' % (point['cpu_s']['backend'],
                           point['cpu_s']['backend_user'],
                           point['cpu_s']['backend_sys'],
                           point['backend_threads_cpu_s'],
                           point['cpu_s']['frontend']))
    L.append('negotiated: %s' % point['negotiated'])
    L.append('')
    if a.tool == 'callgrind':
        files = sorted(glob.glob(os.path.join(out, 'callgrind.out.*')))
        # the dump made at the end of the load (-d load); the file written
        # at exit holds only what came after collection was switched off
        load = [f for f in files if not f.endswith(str(state.get('pid')))] \
            or files
        if not load:
            L.append('no callgrind output: %s' % state)
        else:
            f = load[0]
            ann = run_cmd(['callgrind_annotate', '--inclusive=no',
                           '--threshold=100', f])
            ir = None
            for line in ann.stdout.splitlines():
                if 'PROGRAM TOTALS' in line:
                    try:
                        ir = int(line.split()[0].replace(',', ''))
                    except ValueError:
                        pass
                    break
            L.append('(user-space instructions only: the kernel side of '
                     'system calls -- the grant copies, which libxensim does '
                     'with process_vm_readv/writev, eventfd notifies, '
                     'io_uring -- is not counted; valgrind counts every '
                     'iteration of a rep-prefixed string instruction, so a '
                     'memset/memcpy done with rep stosb/movsb shows about '
                     'one Ir per byte)')
            if ir is None:
                L.append('no instruction count in %s: %s' % (f, state))
            if ir:
                L.append('instructions (Ir) during the load: %d = %.0f per '
                         'request (all QEMU threads, collection on only '
                         'for the load)' % (ir, ir / point['ios']))
            L.append('callgrind file: %s' % f)
            L.append('')
            L.append('== exclusive (self) instructions, top %d ==' % a.top)
            L += top_lines(ann.stdout, a.top, point['ios'])
            inc = run_cmd(['callgrind_annotate', '--inclusive=yes',
                           '--threshold=100', f])
            L.append('')
            L.append('== inclusive instructions (with callees), top %d =='
                     % a.top)
            L += top_lines(inc.stdout, a.top, point['ios'])
    else:
        data = os.path.join(out, 'perf.data')
        pid = ['--pid', str(state['pid'])]
        self_ = run_cmd(['perf', 'report', '-i', data, '--stdio',
                         '--no-children', '--percent-limit', '0.5',
                         '--sort', 'comm,symbol', '-g', 'none'] + pid)
        child = run_cmd(['perf', 'report', '-i', data, '--stdio',
                         '--children', '--percent-limit', '2',
                         '--sort', 'symbol', '-g', 'none'] + pid)
        L.append('perf data: %s' % data)
        L.append('')
        L.append('== self ==')
        L += [x for x in self_.stdout.splitlines()
              if x.strip() and not x.startswith('#')][:a.top]
        L.append('')
        L.append('== with children ==')
        L += [x for x in child.stdout.splitlines()
              if x.strip() and not x.startswith('#')][:a.top]
        per_req = ns_per_request(data, state['pid'], point['ios'])
        with open(os.path.join(out, 'profile.json'), 'w') as f:
            json.dump({'workload': wl.name, 'storage': a.storage,
                       'backend': a.backend, 'iops': point['iops'],
                       'ios': point['ios'], 'ns_per_request': per_req},
                      f, indent=1, sort_keys=True)
        L.append('')
        L.append('== QEMU CPU per request: %.0f ns; top functions, ns '
                 '(bench/profile.sh --compare DIR_A DIR_B diffs two) =='
                 % sum(per_req.values()))
        L += ['%9.1f  %s' % (v, k) for k, v in
              sorted(per_req.items(), key=lambda kv: -kv[1])[:a.top]]
    text = '\n'.join(L) + '\n'
    with open(os.path.join(out, 'report.txt'), 'w') as f:
        f.write(text)
    print(text)
    print('report: %s' % os.path.join(out, 'report.txt'))
    return 0


def top_lines(text, n, ios):
    """The first @n function lines of callgrind_annotate, with Ir/request."""
    out = []
    started = False
    for line in text.splitlines():
        if 'file:function' in line:
            started = True
            continue
        if not started or not line.strip() or line.startswith('-'):
            continue
        parts = line.split(None, 1)
        try:
            ir = int(parts[0].replace(',', ''))
        except (ValueError, IndexError):
            continue
        rest = parts[1] if len(parts) > 1 else ''
        out.append('%10.0f Ir/req  %s' % (ir / ios, rest[:150]))
        if len(out) >= n:
            break
    return out


if __name__ == '__main__':
    sys.exit(main())
