#!/usr/bin/python3
"""bench/run.py: our xen-disk backend beside the stock QEMU and the ideal
responder, on xensim (DESIGN.md section 8).  See bench/README.md.

    bench/run.py [--quick] [--workloads NAMES] [--backends ours,stock,ideal]
                 [--storage null,tmpfs,disk] [--repeat N] [--runtime SECS]
    bench/run.py --selftest        one 1 s point per backend, JSON checked
    bench/run.py --list            the named workloads

One run is interleaved: for each repetition, for each workload, for each
storage, every backend in turn (the starting backend rotates from one
repetition to the next), each point on a fresh xensimd and a fresh backend
process.  Medians over the repetitions are reported.  Results go to
bench/results/<timestamp>/: results.json (every repetition), report.md
(ratio tables, targets, ceiling), *.png (charts).

This is a benchmark, run on demand: it asserts no timing anywhere.
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(TOP, 'tests', 'qtest'))
import xensim  # noqa: E402  (the shared harness: XenSim, Qemu, QMP)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CLK_TCK = os.sysconf('SC_CLK_TCK')
PAGE = os.sysconf('SC_PAGE_SIZE')

BACKENDS = ('ours', 'stock', 'ideal')
STORAGES = ('null', 'tmpfs', 'disk')
LIMIT = 'ideal'
BUSY_CORES = 0.25       # other load above this makes a point "busy"
# What our qdisk backend gives an xl disk's IOThread: no polling (a backend
# domain's CPUs serve every guest).  Stock QEMU's xen-bus cannot poll.
QDISK_IOTHREAD_OPTS = 'poll-max-ns=0'


# ---- The curated workloads (not a cross-product) ----

class Workload:
    def __init__(self, name, rw, bs, iodepth, queues=1, disks=1, mix=None,
                 group='', note=''):
        self.name = name
        self.rw = rw
        self.bs = bs                # bytes
        self.iodepth = iodepth      # per queue, per disk
        self.queues = queues
        self.disks = disks
        self.mix = mix              # --rwmixread for randrw
        self.group = group
        self.note = note

    def front_args(self):
        a = ['--rw', self.rw, '--bs', str(self.bs),
             '--iodepth', str(self.iodepth * self.queues),
             '--queues', str(self.queues)]
        if self.mix is not None:
            a += ['--rwmixread', str(self.mix)]
        return a

    def describe(self):
        s = '%s bs=%s iodepth=%d' % (self.rw, human(self.bs), self.iodepth)
        if self.queues > 1:
            s += ' per queue, %d queues' % self.queues
        if self.disks > 1:
            s += ' per disk, %d disks' % self.disks
        if self.mix is not None:
            s += ', %d%% reads' % self.mix
        return s


HEADLINE = '4k-randread-qd32'
WORKLOADS = [
    Workload('4k-randread-qd1', 'randread', 4 * KiB, 1, group='iodepth'),
    Workload(HEADLINE, 'randread', 4 * KiB, 32, group='iodepth',
             note='also the 1-queue and 1-disk point'),
    Workload('4k-randread-qd128', 'randread', 4 * KiB, 128, group='iodepth'),
    Workload('4k-randwrite-qd1', 'randwrite', 4 * KiB, 1, group='iodepth'),
    Workload('4k-randwrite-qd32', 'randwrite', 4 * KiB, 32, group='iodepth'),
    Workload('4k-randwrite-qd128', 'randwrite', 4 * KiB, 128,
             group='iodepth'),
    Workload('64k-read', 'read', 64 * KiB, 8, group='bs'),
    Workload('64k-write', 'write', 64 * KiB, 8, group='bs'),
    Workload('1m-read', 'read', MiB, 8, group='bs'),
    Workload('1m-write', 'write', MiB, 8, group='bs'),
    Workload('4k-randrw70-qd32', 'randrw', 4 * KiB, 32, mix=70,
             group='mixed'),
    Workload('4k-randread-qd32-2q', 'randread', 4 * KiB, 32, queues=2,
             group='queues'),
    Workload('4k-randread-qd32-4q', 'randread', 4 * KiB, 32, queues=4,
             group='queues'),
    Workload('4k-randread-qd32-8disks', 'randread', 4 * KiB, 32, disks=8,
             group='disks'),
]
BY_NAME = {w.name: w for w in WORKLOADS}


def human(n):
    for unit, size in (('M', MiB), ('k', KiB)):
        if n >= size and n % size == 0:
            return '%d%s' % (n // size, unit)
    return str(n)


def parse_size(s):
    s = s.strip().lower()
    mult = 1
    for suf, m in (('g', GiB), ('m', MiB), ('k', KiB)):
        if s.endswith(suf) or s.endswith(suf + 'ib'):
            mult = m
            s = s[:-len(suf)] if s.endswith(suf) else s[:-len(suf) - 2]
            break
    return int(float(s) * mult)


# ---- /proc readings ----

def proc_ticks(pid):
    """(utime, stime) of a whole process (every thread, live or exited)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return None
    return int(fields[11]), int(fields[12])    # fields 14 and 15 of stat(5)


def machine_ticks():
    """(busy, total) ticks of all CPUs, from /proc/stat."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)      # idle + iowait
    total = sum(v[:8])                              # guest is in user
    return total - idle, total


def thread_ticks(pid):
    """{thread name: ticks} summed over the live threads of @pid."""
    out = {}
    try:
        tids = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index('(') + 1:text.rindex(')')]
        fields = text.rsplit(')', 1)[1].split()
        out[comm] = out.get(comm, 0) + int(fields[11]) + int(fields[12])
    return out


def proc_status_kb(pid, key):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_idle(limit_s, max_busy=0.3, window=1.0):
    """Wait (up to @limit_s) until the machine has been nearly idle
    (< @max_busy cores busy) for @window s; returns (waited s, busy cores
    in the last window)."""
    t0 = time.monotonic()
    while True:
        b0, _ = machine_ticks()
        time.sleep(window)          # a measurement window, not a sync
        b1, _ = machine_ticks()
        busy = (b1 - b0) / CLK_TCK / window
        waited = time.monotonic() - t0
        if busy < max_busy or waited >= limit_s:
            return round(waited, 1), round(busy, 2)


class Heartbeat(threading.Thread):
    """Notices when this whole process was stopped (SIGSTOP by something
    outside, a frozen machine): a 0.2 s sleep that took over 2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.frozen_s = 0.0

    def run(self):
        last = time.monotonic()
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            if now - last > 2.0:
                self.frozen_s += now - last - 0.2
            last = now


HEARTBEAT = Heartbeat()


class RssSampler(threading.Thread):
    """Peak VmRSS of @pid, sampled while a load runs, and peak RssAnon:
    the process's own memory, without the file and shared pages it maps
    (for a backend, the guest pages of its persistent grants)."""

    def __init__(self, pid, interval=0.2):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.anon_peak = 0
        self.stop_ev = threading.Event()

    def sample(self):
        v = proc_status_kb(self.pid, 'VmRSS')
        a = proc_status_kb(self.pid, 'RssAnon')
        if v:
            self.peak = max(self.peak, v)
        if a:
            self.anon_peak = max(self.anon_peak, a)

    def run(self):
        while not self.stop_ev.is_set():
            self.sample()
            self.stop_ev.wait(self.interval)

    def finish(self):
        self.stop_ev.set()
        self.join()
        self.sample()
        return self.peak


# ---- Storage ----

class Images:
    """Raw images, fully written (so reads reach real blocks), made once."""

    def __init__(self, size, tmpfs_dir, disk_dir):
        self.size = size
        self.dirs = {'tmpfs': tmpfs_dir, 'disk': disk_dir}
        self.made = {}
        self.created_dirs = []

    def path(self, storage, i):
        key = (storage, i)
        if key not in self.made:
            d = self.dirs[storage]
            if not os.path.isdir(d):
                os.makedirs(d)
                self.created_dirs.append(d)
            p = os.path.join(d, 'bench-disk%d.img' % i)
            log('making %s image %s (%s)' % (storage, p, human(self.size)))
            block = b'\x5a' * MiB
            with open(p, 'wb') as f:
                left = self.size
                while left > 0:
                    n = min(left, MiB)
                    f.write(block[:n])
                    left -= n
                f.flush()
                os.fsync(f.fileno())
            self.made[key] = p
        return self.made[key]

    def remove(self):
        for p in self.made.values():
            try:
                os.unlink(p)
            except OSError:
                pass
        for d in self.created_dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass


# ---- What each QEMU binary accepts ----

def device_props(binary):
    try:
        r = subprocess.run([binary, '-device', 'xen-disk,help'],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split('=')[0].strip() for line in r.stdout.splitlines()
            if '=' in line]


def vq_mapping_prop(props):
    for p in props:
        if 'iothread' in p and ('vq' in p or 'queue' in p or 'mapping' in p):
            return p
    return None


# ---- One point ----

class PointError(Exception):
    def __init__(self, msg, frozen=0.0):
        super().__init__(msg)
        self.frozen = frozen


def log(msg):
    sys.stderr.write('[%s] %s\n' % (time.strftime('%H:%M:%S'), msg))
    sys.stderr.flush()


def vdev_name(i):
    return 'xvd' + chr(ord('a') + i)


class Bench:
    def __init__(self, args):
        self.a = args
        self.images = Images(args.image_size, args.tmpfs_dir, args.disk_dir)
        self.props = {}
        self.aio_choice = {}        # backend -> aio engine used for 'disk'
        self.ours_props = parse_props(getattr(args, 'ours_props', ''))
        self.notes = []
        # bench/profile.py: called with the backend's pid around the load
        self.on_load_start = None
        self.on_load_end = None
        self.front_extra = []       # e.g. a longer --deadline
        self.idle = None

    # -- backends --

    def start_qemu(self, sim, which, wl):
        binary = xensim.QEMUS[which]
        if which not in self.props:
            self.props[which] = device_props(binary)
        args = []
        iothreads = []
        mapping = None
        if not self.a.no_iothread:
            vqmap = vq_mapping_prop(self.props[which])
            for d in range(wl.disks):
                per = wl.queues if (vqmap and wl.queues > 1) else 1
                ids = ['io%d_%d' % (d, q) for q in range(per)]
                for i in ids:
                    args += ['-object', 'iothread,id=%s%s' % (
                        i, ',' + self.a.iothread_opts
                        if getattr(self.a, 'iothread_opts', '') else '')]
                iothreads.append(ids)
            mapping = vqmap
        # thread names (IO <id>, worker, ...) for the per-thread CPU split
        args += ['-name', 'bench,debug-threads=on']
        q = xensim.Qemu(sim, which, args=args)
        return q, iothreads, mapping

    def attach_qmp(self, q, which, storage, wl, iothreads, mapping):
        info = {}
        for d in range(wl.disks):
            node = 'd%d' % d
            if storage == 'null':
                q.qmp.cmd('blockdev-add', driver='null-co',
                          **{'node-name': node, 'read-zeroes': True,
                             'size': self.a.image_size})
            elif storage == 'tmpfs':
                q.qmp.cmd('blockdev-add', driver='raw',
                          **{'node-name': node},
                          file={'driver': 'file',
                                'filename': self.images.path('tmpfs', d)})
            elif storage == 'disk':
                self.add_direct(q, which, node, self.images.path('disk', d))
                info['aio'] = self.aio_choice[which]
            props = {}
            if iothreads:
                ids = iothreads[d]
                if mapping and len(ids) > 1:
                    props[mapping] = [{'iothread': i} for i in ids]
                else:
                    props['iothread'] = ids[0]
            if which == 'ours':
                props.update(self.ours_props)
            q.qmp.cmd('device_add', driver='xen-disk', id='dev%d' % d,
                      vdev=vdev_name(d), drive=node, **props)
        info['iothreads'] = sum(len(x) for x in iothreads)
        info['iothread_mapping'] = mapping if (
            mapping and wl.queues > 1 and iothreads) else None
        return info

    @staticmethod
    def device_stats(qemu, wl):
        """Our device's per-queue counters (notifications, ring scans, ...)
        after the load: the why behind a figure.  None for the stock QEMU,
        which has no such property."""
        try:
            return [qemu.qmp.cmd('qom-get', path='/machine/peripheral/dev%d'
                                 % d, property='statistics')
                    for d in range(wl.disks)]
        except xensim.QMPError:
            return None

    def add_direct(self, q, which, node, path):
        """raw on file, cache.direct=on, aio=io_uring (or what the binary
        offers: the first of --disk-aio's list it accepts)."""
        engines = [self.aio_choice[which]] if which in self.aio_choice \
            else self.a.disk_aio.split(',')
        last = None
        for eng in engines:
            try:
                q.qmp.cmd('blockdev-add', driver='raw',
                          **{'node-name': node, 'cache': {'direct': True}},
                          file={'driver': 'file', 'filename': path,
                                'aio': eng, 'cache': {'direct': True}})
            except xensim.QMPError as e:
                last = e
                if which not in self.aio_choice:
                    self.note('%s: disk storage: aio=%s refused (%s)'
                              % (which, eng, e))
                continue
            if which not in self.aio_choice:
                self.aio_choice[which] = eng
                if eng != engines[0]:
                    self.note('%s: disk storage uses aio=%s '
                              '(cache.direct=on)' % (which, eng))
            return
        raise PointError('no aio engine accepted for %s: %s' % (which, last))

    def note(self, text):
        if text not in self.notes:
            self.notes.append(text)
            log('NOTE ' + text)

    def start_ideal(self, sim, wl):
        rfd, wfd = os.pipe()
        logf = open(os.path.join(sim.dir, 'ideal.log'), 'w')
        p = subprocess.Popen([xensim.FRONT, 'ideal', '--domid', '1',
                              '--size', str(self.a.image_size),
                              '--ready-fd', str(wfd)] +
                             (['--store'] if self.a.ideal_store else []),
                             env=sim.env(0), pass_fds=(wfd,), stdout=logf,
                             stderr=subprocess.STDOUT)
        os.close(wfd)
        with os.fdopen(rfd) as r:
            line = r.readline()
        logf.close()
        if line.strip() != 'ready':
            p.kill()
            p.wait()
            raise PointError('ideal responder did not start')
        for d in range(wl.disks):
            r = subprocess.run([xensim.FRONT, 'attach', '--domid', '1',
                                '--vdev', vdev_name(d), '--target',
                                '/dev/null', '--deadline', '10'],
                               env=sim.env(0), capture_output=True,
                               text=True, timeout=30)
            if r.returncode != 0:
                p.kill()
                p.wait()
                raise PointError('attach to ideal failed: %s %s'
                                 % (r.stdout, r.stderr))
        return p

    # -- the point --

    def run_point(self, backend, storage, wl, rep, runtime):
        idle = wait_idle(self.a.idle_wait) if self.a.idle_wait > 0 else None
        t_start = time.time()
        frozen0 = HEARTBEAT.frozen_s
        try:
            p = self._run_point(backend, storage, wl, rep, runtime, idle,
                                t_start)
        except PointError as e:
            frozen = HEARTBEAT.frozen_s - frozen0
            if frozen > 0:
                raise PointError('the bench was stopped for %.0f s during '
                                 'the point (SIGSTOP from outside?): %s'
                                 % (frozen, e), frozen=frozen)
            raise
        frozen = HEARTBEAT.frozen_s - frozen0
        if frozen > 0:
            p['frozen_s'] = round(frozen, 1)
            p['busy'] = True
        return p

    def _run_point(self, backend, storage, wl, rep, runtime, idle, t_start):
        sim = xensim.XenSim(guests=(1,), mem_mb=self.a.guest_mem)
        qemu = ideal = None
        proc = None
        info = {}
        try:
            if backend == 'ideal':
                ideal = self.start_ideal(sim, wl)
                proc = ideal
                rss0 = proc_status_kb(proc.pid, 'VmRSS')
                anon0 = proc_status_kb(proc.pid, 'RssAnon')
            else:
                qemu, iothreads, mapping = self.start_qemu(sim, backend, wl)
                proc = qemu.proc
                rss0 = proc_status_kb(proc.pid, 'VmRSS')
                anon0 = proc_status_kb(proc.pid, 'RssAnon')
                info = self.attach_qmp(qemu, backend, storage, wl, iothreads,
                                       mapping)
            simpid = sim.proc.pid
            sampler = RssSampler(proc.pid)
            fronts = []
            front_base = ['--domid', '1', '--json', '-', '--quiet',
                          '--runtime', '%g' % runtime, '--verify', 'off',
                          '--ring-pages', str(self.a.ring_pages),
                          '--indirect', str(self.a.indirect)]
            if not self.a.no_persistent:
                front_base.append('--persistent')
            if self.a.front_poll_us:
                front_base += ['--poll-us', str(self.a.front_poll_us)]
            front_base += self.front_extra
            c0 = (proc_ticks(proc.pid), proc_ticks(simpid),
                  thread_ticks(proc.pid), machine_ticks())
            if self.on_load_start:
                self.on_load_start(backend, proc.pid)
            t0 = time.monotonic()
            sampler.start()
            for d in range(wl.disks):
                cmd = [xensim.FRONT, 'run', '--vdev', vdev_name(d),
                       '--seed', str(1000 * rep + d + 1)] + front_base + \
                    wl.front_args()
                fronts.append(subprocess.Popen(
                    cmd, env=sim.env(1), stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True))
            outs = []
            deadline = time.monotonic() + runtime + 60
            for f in fronts:
                try:
                    out, err = f.communicate(
                        timeout=max(1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    for g in fronts:
                        g.kill()
                    raise PointError('frontend did not finish within %gs '
                                     '(backend stalled?)' % (runtime + 60))
                outs.append((f.returncode, out, err))
            t1 = time.monotonic()
            c1 = (proc_ticks(proc.pid), proc_ticks(simpid),
                  thread_ticks(proc.pid), machine_ticks())
            if self.on_load_end:
                self.on_load_end(backend, proc.pid)
            if qemu:
                info['device_stats'] = self.device_stats(qemu, wl)
            rss_peak = sampler.finish()
            anon = (anon0, sampler.anon_peak)
            hwm = proc_status_kb(proc.pid, 'VmHWM')
            if not (proc.poll() is None and sim.alive()):
                raise PointError('%s or xensimd died during the load'
                                 % backend)
        except (xensim.Timeout, xensim.QMPError, RuntimeError, EOFError,
                OSError, subprocess.TimeoutExpired) as e:
            raise PointError('%s: %s' % (type(e).__name__, e))
        finally:
            logs = ''
            if qemu:
                logs = qemu.log_text()
                qemu.quit()
            if ideal:
                ideal.send_signal(signal.SIGTERM)
                try:
                    ideal.wait(10)
                except subprocess.TimeoutExpired:
                    ideal.kill()
                    ideal.wait()
            sim.stop()

        reports = []
        for rc, out, err in outs:
            j = parse_json(out)
            if rc != 0 or not j.get('ok'):
                raise PointError('frontend failed (rc %d): %s %s | backend '
                                 'log: %s' % (rc, err.strip()[-600:],
                                              json.dumps(j.get('error')),
                                              logs[-600:]))
            reports.append(j)
        self.idle = {'waited_s': idle[0], 'busy_cores_before': idle[1]} \
            if idle else None
        return self.summarise(backend, storage, wl, rep, runtime, reports,
                              c0, c1, t1 - t0, rss0, rss_peak, hwm, anon,
                              info, time.time() - t_start)

    def summarise(self, backend, storage, wl, rep, runtime, reports, c0, c1,
                  wall, rss0, rss_peak, hwm, anon, info, point_s):
        ios = sum(r['ios'] for r in reports)
        nbytes = sum(r['bytes'] for r in reports)
        be_user = (c1[0][0] - c0[0][0]) / CLK_TCK
        be_sys = (c1[0][1] - c0[0][1]) / CLK_TCK
        be_cpu = be_user + be_sys
        sim_cpu = (sum(c1[1]) - sum(c0[1])) / CLK_TCK
        cpu = be_cpu + sim_cpu
        fe_cpu = sum(r['cpu_s']['user'] + r['cpu_s']['sys'] for r in reports)
        threads = {}
        for name, t in c1[2].items():
            d = (t - c0[2].get(name, 0)) / CLK_TCK
            if d > 0:
                threads[name] = round(d, 3)
        lat = lambda k: statistics.mean(r['lat_us'][k] for r in reports)
        load_s = max(r.get('runtime_s') or 0 for r in reports) or wall
        m_busy = (c1[3][0] - c0[3][0]) / CLK_TCK
        # everything else on the machine: not the backend, xensimd or the
        # frontend (builds, the nested emulator, ...)
        others = max(0.0, m_busy - cpu - fe_cpu)
        notifies = sum(x.get('notifies', 0) for r in reports
                       for x in r.get('rings', []))
        dev = reports[0].get('device', {})
        return {
            'backend': backend, 'storage': storage, 'workload': wl.name,
            'rep': rep, 'runtime_s': runtime,
            'iops': sum(r['iops'] for r in reports),
            'mbps': sum(r['mbps'] for r in reports),
            'ios': ios, 'bytes': nbytes,
            'lat_us': {k: lat(k) for k in ('p50', 'p90', 'p99', 'p99.9')},
            'lat_us_max_p99': max(r['lat_us']['p99'] for r in reports),
            'cpu_s': {'backend': round(be_cpu, 3),
                      'backend_user': round(be_user, 3),
                      'backend_sys': round(be_sys, 3),
                      'xensimd': round(sim_cpu, 3),
                      'total': round(cpu, 3), 'frontend': round(fe_cpu, 4),
                      'wall': round(wall, 3), 'load': round(load_s, 3),
                      'machine_busy': round(m_busy, 3),
                      'others': round(others, 3)},
            'fe_notifies_per_io': notifies / ios if ios else None,
            'cpu_us_per_io': 1e6 * cpu / ios if ios else None,
            'cpu_s_per_gib': cpu / (nbytes / GiB) if nbytes else None,
            'fe_cpu_us_per_io': 1e6 * fe_cpu / ios if ios else None,
            'fe_cpu_s_per_gib': fe_cpu / (nbytes / GiB) if nbytes else None,
            'backend_threads_cpu_s': threads,
            'rss_kb': {'before_disks': rss0, 'peak_during_load': rss_peak,
                       'hwm': hwm, 'anon_before_disks': anon[0],
                       'anon_peak_during_load': anon[1]},
            'rss_kb_per_disk': ((rss_peak - rss0) / wl.disks
                                if rss_peak and rss0 else None),
            # Without the guest pages mapped for persistent grants.
            'anon_kb_per_disk': ((anon[1] - anon[0]) / wl.disks
                                 if anon[0] and anon[1] else None),
            'negotiated': {k: dev.get(k) for k in
                           ('queues', 'ring_pages', 'max_segs', 'indirect',
                            'persistent', 'max_queues', 'max_indirect',
                            'feature_persistent')},
            'status': {k: sum(r.get('status', {}).get(k, 0) for r in reports)
                       for k in ('okay', 'error', 'eopnotsupp', 'other')},
            'per_disk': [{'iops': r['iops'], 'p50': r['lat_us']['p50'],
                          'p99': r['lat_us']['p99'],
                          'runtime_s': r.get('runtime_s')}
                         for r in reports] if len(reports) > 1 else None,
            'setup': info, 'point_s': round(point_s, 2),
            'idle_wait': self.idle,
            # other load on the machine above a quarter of a core
            'busy': others / wall > BUSY_CORES if wall else False,
        }


def file_ceiling(path, threads=8, seconds=2.0):
    """MB/s of 1 MiB preads and pwrites straight on @path from @threads
    threads (the 1 MiB workloads' iodepth): what the storage gives with no
    backend at all.  On tmpfs, writes to one file take the inode's lock in
    turn, so more threads do not write faster.  The file keeps its content
    (every block is written back as the image was made: 0x5a)."""
    block = b'\x5a' * MiB
    size = os.path.getsize(path) // MiB * MiB
    fd = os.open(path, os.O_RDWR)
    out = {'threads': threads}
    try:
        for what in ('read', 'write'):
            done = [0] * threads
            end = time.monotonic() + seconds

            def worker(i):
                off = i * MiB
                while time.monotonic() < end:
                    if what == 'read':
                        os.pread(fd, MiB, off % size)
                    else:
                        os.pwrite(fd, block, off % size)
                    off += threads * MiB
                    done[i] += 1
            t0 = time.monotonic()
            ts = [threading.Thread(target=worker, args=(i,))
                  for i in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            out[what + '_mbps'] = round(sum(done) * MiB / 1e6 /
                                        (time.monotonic() - t0), 1)
    finally:
        os.close(fd)
    return out


def parse_props(text):
    """'a=1,b=on' -> {'a': 1, 'b': True}: QMP wants typed values."""
    props = {}
    for item in filter(None, text.split(',')):
        key, _, val = item.partition('=')
        if val.isdigit():
            props[key] = int(val)
        elif val in ('on', 'off', 'true', 'false'):
            props[key] = val in ('on', 'true')
        else:
            props[key] = val
    return props


def parse_json(text):
    for line in reversed((text or '').strip().splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return {}


# ---- Medians, ratios, targets ----

METRICS = ('iops', 'mbps', 'p50', 'p99', 'cpu_us_per_io', 'cpu_s_per_gib',
           'fe_cpu_us_per_io', 'fe_cpu_s_per_gib', 'rss_kb_per_disk',
           'anon_kb_per_disk',
           'be_cores', 'fe_cores', 'sim_cores', 'other_cores',
           'fe_notifies_per_io')


def metric(p, m):
    if m in ('p50', 'p99'):
        return p['lat_us'][m]
    if m in ('be_cores', 'fe_cores', 'sim_cores', 'other_cores'):
        c = p['cpu_s']
        t = (c.get('wall') if m == 'other_cores' else c.get('load')) or \
            c['wall']
        return c.get({'be_cores': 'backend', 'fe_cores': 'frontend',
                      'sim_cores': 'xensimd', 'other_cores': 'others'}[m],
                     0) / t
    return p.get(m)


def is_busy(p):
    if 'busy' in p:
        return p['busy']
    c = p.get('cpu_s', {})
    return bool(c.get('wall')) and c.get('others', 0) / c['wall'] > BUSY_CORES


def medians(points):
    """{(workload, storage, backend): {metric: median, 'n':, 'cv_iops':}}"""
    groups = {}
    for p in points:
        if p.get('error'):
            continue
        key = (p['workload'], p['storage'], p['backend'])
        groups.setdefault(key, []).append(p)
    # Points measured while other load took the machine are left out when
    # every backend of the same workload and storage has a quiet point, so
    # that a ratio compares like with like; otherwise the row keeps them all
    # and is marked all_busy.
    rows = {}
    for key, ps in groups.items():
        rows.setdefault(key[:2], []).append(
            any(not is_busy(p) for p in ps))
    out = {}
    for key, ps in groups.items():
        quiet_row = all(rows[key[:2]])
        clean = [p for p in ps if not is_busy(p)] if quiet_row else []
        s = {'n': len(clean or ps), 'n_busy_left_out':
             len(ps) - len(clean) if clean else 0,
             'all_busy': not clean and any(is_busy(p) for p in ps)}
        ps = clean or ps
        for m in METRICS:
            vals = [metric(p, m) for p in ps if metric(p, m) is not None]
            s[m] = statistics.median(vals) if vals else None
            if m in ('iops', 'mbps') and vals:
                s['min_' + m], s['max_' + m] = min(vals), max(vals)
                if len(vals) > 1 and statistics.mean(vals):
                    s['cv_' + m] = (statistics.pstdev(vals) /
                                    statistics.mean(vals))
        s['negotiated'] = ps[0]['negotiated']
        s['setup'] = ps[0].get('setup', {})
        out[key] = s
    return out


def lookup(med, wl, storage, backend):
    if backend == LIMIT:
        storage = 'none'
    return med.get((wl, storage, backend))


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def fmt(v, digits=3):
    if v is None:
        return 'n/a'
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return 'n/a'
    if abs(v) >= 1000:
        return '%.0f' % v
    if abs(v) >= 100:
        return '%.1f' % v
    return ('%.' + str(digits) + 'g') % v


def fmt_r(v):
    return 'n/a' if v is None else '%.2f' % v


class TargetResult:
    def __init__(self, name, measured, op, goal, detail):
        self.name = name
        self.measured = measured    # a ratio (or None)
        self.op = op                # '>=' or '<='
        self.goal = goal
        self.detail = detail

    @property
    def status(self):
        if self.measured is None:
            return 'not measured'
        ok = (self.measured >= self.goal if self.op == '>='
              else self.measured <= self.goal)
        return 'PASS' if ok else 'MISS'

    def by_how_much(self):
        if self.status != 'MISS':
            return ''
        if self.op == '>=':
            return 'short by %.0f%% (needs %.2fx more)' % (
                100 * (1 - self.measured / self.goal),
                self.goal / self.measured if self.measured else float('inf'))
        return 'over by %.0f%% (needs %.2fx less)' % (
            100 * (self.measured / self.goal - 1), self.measured / self.goal)

    def as_dict(self):
        return {'target': self.name, 'measured': self.measured, 'op': self.op,
                'goal': self.goal, 'status': self.status,
                'miss': self.by_how_much(), 'detail': self.detail}


def targets(med, meta=None):
    """The speed issue's targets, computed from the medians."""
    T = []
    used = []

    def g(wl, st, be, m):
        s = lookup(med, wl, st, be)
        used.append(s)
        return s.get(m) if s else None

    def Target(name, measured, op, goal, detail):
        busy = any(s and s.get('all_busy') for s in used)
        used.clear()
        return TargetResult(name, measured, op, goal, detail + (
            ' [measured on a busy machine: see below]'
            if busy else ''))

    # 1. 4k randread qd32, one queue, null-co: >= 2x stock IOPS, <= half
    #    its CPU per I/O.
    o, s = g(HEADLINE, 'null', 'ours', 'iops'), g(HEADLINE, 'null', 'stock',
                                                   'iops')
    T.append(Target('4k randread qd32 null-co: IOPS ours/stock >= 2',
                    ratio(o, s), '>=', 2.0,
                    'ours %s, stock %s IOPS' % (fmt(o), fmt(s))))
    o, s = (g(HEADLINE, 'null', 'ours', 'cpu_us_per_io'),
            g(HEADLINE, 'null', 'stock', 'cpu_us_per_io'))
    T.append(Target('4k randread qd32 null-co: CPU/IO ours/stock <= 0.5',
                    ratio(o, s), '<=', 0.5,
                    'ours %s, stock %s us of CPU per I/O' % (fmt(o), fmt(s))))
    # 2. 1 MiB sequential read and write, null-co and tmpfs: >= 2x MB/s.
    ceiling = ((meta or {}).get('storage_ceiling') or {}).get('tmpfs') or {}
    for wl in ('1m-read', '1m-write'):
        for st in ('null', 'tmpfs'):
            o, s = g(wl, st, 'ours', 'mbps'), g(wl, st, 'stock', 'mbps')
            detail = 'ours %s, stock %s MB/s' % (fmt(o), fmt(s))
            top = ceiling.get(wl.split('-')[1] + '_mbps')
            if st == 'tmpfs' and top:
                detail += ('; the image file itself takes %s MB/s (%s from '
                           '%d threads, no QEMU): ours is %s of that, 2x '
                           'stock would be %s' % (
                               fmt(top), wl.split('-')[1] + 's of 1 MiB',
                               ceiling.get('threads', 0),
                               '%.0f%%' % (100 * o / top) if o else 'n/a',
                               '%.0f%%' % (200 * s / top) if s else 'n/a'))
            T.append(Target('%s %s: MB/s ours/stock >= 2' % (wl, st),
                            ratio(o, s), '>=', 2.0, detail))
    # 3. CPU per I/O within 1.5x of the ideal responder's (4k randread qd32).
    o, i = (g(HEADLINE, 'null', 'ours', 'cpu_us_per_io'),
            g(HEADLINE, 'none', LIMIT, 'cpu_us_per_io'))
    T.append(Target('4k randread qd32 null-co: CPU/IO ours/ideal <= 1.5',
                    ratio(o, i), '<=', 1.5,
                    'ours %s, ideal %s us of CPU per I/O (backend + '
                    'xensimd)' % (fmt(o), fmt(i))))
    # 4. 4k randread qd1: p50 and p99 no worse than stock (within 5%).
    for pct in ('p50', 'p99'):
        o, s = g('4k-randread-qd1', 'null', 'ours', pct), \
            g('4k-randread-qd1', 'null', 'stock', pct)
        T.append(Target('4k randread qd1 null-co: %s latency ours/stock '
                        '<= 1.05' % pct, ratio(o, s), '<=', 1.05,
                        'ours %s, stock %s us' % (fmt(o), fmt(s))))
    # 5. Two queues: total IOPS >= one queue's; CPU/IO no worse.
    q2 = '4k-randread-qd32-2q'
    o2, o1 = g(q2, 'null', 'ours', 'iops'), g(HEADLINE, 'null', 'ours',
                                               'iops')
    s2 = lookup(med, q2, 'null', 'ours')   # not in used: info only
    neg = s2['negotiated'] if s2 else {}
    mapping = s2['setup'].get('iothread_mapping') if s2 else None
    how = ('%s queue(s) negotiated, %s' % (
        neg.get('queues'), 'one IOThread per queue (%s)' % mapping
        if mapping else 'one IOThread for the device (no per-queue '
        'IOThread property)')) if s2 else 'not run'
    T.append(Target('2 queues null-co: IOPS (2q)/(1q) >= 1', ratio(o2, o1),
                    '>=', 1.0, 'ours 2q %s, 1q %s IOPS; %s'
                    % (fmt(o2), fmt(o1), how)))
    c2, c1 = g(q2, 'null', 'ours', 'cpu_us_per_io'), \
        g(HEADLINE, 'null', 'ours', 'cpu_us_per_io')
    T.append(Target('2 queues null-co: CPU/IO (2q)/(1q) <= 1.05',
                    ratio(c2, c1), '<=', 1.05,
                    'ours 2q %s, 1q %s us per I/O' % (fmt(c2), fmt(c1))))
    # 6. 8 disks on one QEMU: total IOPS >= 0.9x a single disk's; memory.
    d8 = '4k-randread-qd32-8disks'
    o8 = g(d8, 'null', 'ours', 'iops')
    rss = g(d8, 'null', 'ours', 'rss_kb_per_disk')
    rss_s = g(d8, 'null', 'stock', 'rss_kb_per_disk')
    anon = g(d8, 'null', 'ours', 'anon_kb_per_disk')
    anon_s = g(d8, 'null', 'stock', 'anon_kb_per_disk')
    T.append(Target('8 disks null-co: IOPS (8 disks)/(1 disk) >= 0.9',
                    ratio(o8, o1), '>=', 0.9,
                    'ours 8 disks %s, 1 disk %s IOPS; QEMU RSS per disk: '
                    'ours %s KiB, stock %s KiB; without mapped guest pages: '
                    'ours %s KiB, stock %s KiB'
                    % (fmt(o8), fmt(o1), fmt(rss), fmt(rss_s), fmt(anon),
                       fmt(anon_s))))
    return T


# ---- Report ----

def order_keys(med, workloads, storages):
    for w in workloads:
        for st in storages:
            if any(lookup(med, w.name, st, b) for b in ('ours', 'stock')):
                yield w, st


def bound_by(s, w):
    """What holds the ideal responder back, from its CPU use."""
    fe, be = s.get('fe_cores') or 0, s.get('be_cores') or 0
    other = s.get('other_cores') or 0
    per_fe = fe / w.disks        # one frontend process per disk
    per_be = be / max(1, w.queues * w.disks)  # one responder thread per ring
    cpus = os.cpu_count() or 1
    if fe + be >= 0.9 * cpus:
        return 'the machine (%d CPUs busy)' % cpus
    if fe + be + other >= 0.9 * cpus:
        return 'the machine (%d CPUs busy, %.1f of them by other load)' % (
            cpus, other)
    if per_fe >= 0.9:
        return 'frontend CPU (a core)'
    if per_be >= 0.9:
        return 'responder CPU (a core per ring)'
    return 'wake-up round trips (no core saturated)'


def report(meta, points, med, workloads, storages, backends, tlist):
    L = []
    add = L.append
    add('# qemu-xen-block bench: %s' % meta['started'])
    add('')
    add('Command: `%s`  ' % meta['command'])
    add('Commit: %s; host: %s, %d CPUs, kernel %s  ' % (
        meta['git'], meta['host'], meta['cpus'], meta['kernel']))
    add('Points: %d measured, %d failed; %d repetition(s) of %g s each; '
        'median reported (iops also min-max when repeated).  ' % (
            len([p for p in points if not p.get('error')]),
            len([p for p in points if p.get('error')]), meta['repeat'],
            meta['runtime']))
    add('Backends: ours = `%s`, stock = `%s`, limit = xenblk-front ideal '
        '(every feature; the grant copies only; no storage).  ' % (
            meta['binaries']['ours'], meta['binaries']['stock']))
    add('Builds: %s.  ' % '; '.join(
        '%s sha256 %s.. mtime %s' % (b, v['sha256'], v['mtime'])
        for b, v in meta.get('binary_ids', {}).items() if v))
    if meta.get('iothread_opts'):
        add('IOThread options: `%s`.  ' % meta['iothread_opts'])
    if meta.get('ours_props'):
        add('Our device had extra properties (not the defaults): `%s`.  '
            % meta['ours_props'])
    add('Frontend asks for: %s.  ' % meta['frontend_asks'])
    add('IOThreads: %s.  ' % meta['iothreads'])
    add('CPU = utime+stime of the backend process (all threads) + xensimd, '
        'from /proc/<pid>/stat around the load (includes connect and '
        'disconnect, a few ms); the frontend\'s own CPU is apart.  ')
    if meta.get('idle_wait'):
        add('Before each point the bench waited up to %g s for other load '
            'on the machine to drop below 0.3 cores.  ' % meta['idle_wait'])
    add('Ratios: above 1 is better for IOPS and MB/s, below 1 is better for '
        'latency and CPU.  "limit" is the ideal responder (storage-free), '
        'used for every storage row.')
    add('')
    for n in meta['notes']:
        add('- note: ' + n)
    if meta['notes']:
        add('')

    add('## Targets')
    add('')
    add('| target | measured | goal | result | detail |')
    add('|---|---|---|---|---|')
    for t in tlist:
        add('| %s | %s | %s %s | %s %s | %s |' % (
            t.name, fmt_r(t.measured), t.op, t.goal, t.status,
            t.by_how_much(), t.detail))
    add('')
    if any(t.status == 'MISS' for t in tlist):
        add('Why a target is missed, from the profiles (bench/profile.sh): '
            'docs/bench.rst, "Where the time goes"; the device counters '
            'behind each point are in results.json (setup.device_stats).')
        add('')

    add('## Throughput and latency (medians)')
    add('')
    add('| workload | storage | IOPS ours | IOPS stock | IOPS limit | '
        'ours/stock | ours/limit | MB/s ours | MB/s stock | p50 us ours | '
        'p50 stock | p99 us ours | p99 stock | p50 o/s | p99 o/s |')
    add('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for w, st in order_keys(med, workloads, storages):
        o = lookup(med, w.name, st, 'ours') or {}
        s = lookup(med, w.name, st, 'stock') or {}
        i = lookup(med, w.name, st, LIMIT) or {}
        add('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | '
            '%s | %s | %s |' % (
                w.name, st, fmt(o.get('iops')), fmt(s.get('iops')),
                fmt(i.get('iops')), fmt_r(ratio(o.get('iops'), s.get('iops'))),
                fmt_r(ratio(o.get('iops'), i.get('iops'))),
                fmt(o.get('mbps')), fmt(s.get('mbps')),
                fmt(o.get('p50')), fmt(s.get('p50')), fmt(o.get('p99')),
                fmt(s.get('p99')), fmt_r(ratio(o.get('p50'), s.get('p50'))),
                fmt_r(ratio(o.get('p99'), s.get('p99')))))
    add('')

    add('## CPU (medians; backend + xensimd; frontend apart)')
    add('')
    add('| workload | storage | us/IO ours | us/IO stock | us/IO limit | '
        'ours/stock | ours/limit | s/GiB ours | s/GiB stock | s/GiB limit | '
        'frontend us/IO ours / stock / limit |')
    add('|---|---|---|---|---|---|---|---|---|---|---|')
    for w, st in order_keys(med, workloads, storages):
        o = lookup(med, w.name, st, 'ours') or {}
        s = lookup(med, w.name, st, 'stock') or {}
        i = lookup(med, w.name, st, LIMIT) or {}
        add('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / '
            '%s |' % (
                w.name, st, fmt(o.get('cpu_us_per_io')),
                fmt(s.get('cpu_us_per_io')), fmt(i.get('cpu_us_per_io')),
                fmt_r(ratio(o.get('cpu_us_per_io'), s.get('cpu_us_per_io'))),
                fmt_r(ratio(o.get('cpu_us_per_io'), i.get('cpu_us_per_io'))),
                fmt(o.get('cpu_s_per_gib')), fmt(s.get('cpu_s_per_gib')),
                fmt(i.get('cpu_s_per_gib')), fmt(o.get('fe_cpu_us_per_io')),
                fmt(s.get('fe_cpu_us_per_io')),
                fmt(i.get('fe_cpu_us_per_io'))))
    add('')

    mem_rows = [(w, st) for w, st in order_keys(med, workloads, storages)
                if w.name in (HEADLINE, '4k-randread-qd32-8disks')]
    if mem_rows:
        add('## QEMU memory (RSS growth from before the first disk to the '
            'peak during the load, per disk)')
        add('')
        add('RSS counts the guest pages a backend maps for persistent '
            'grants (memory of the guest, not of QEMU); anon is QEMU\'s '
            'own memory (RssAnon): heap, stacks, buffers.')
        add('')
        add('| workload | storage | ours KiB/disk | stock KiB/disk | '
            'ours anon KiB/disk | stock anon KiB/disk |')
        add('|---|---|---|---|---|---|')
        for w, st in mem_rows:
            o = lookup(med, w.name, st, 'ours') or {}
            s = lookup(med, w.name, st, 'stock') or {}
            add('| %s | %s | %s | %s | %s | %s |' % (
                w.name, st, fmt(o.get('rss_kb_per_disk')),
                fmt(s.get('rss_kb_per_disk')),
                fmt(o.get('anon_kb_per_disk')),
                fmt(s.get('anon_kb_per_disk'))))
        add('')

    thr = [p for p in points if not p.get('error') and p['rep'] == 0 and
           p['storage'] == 'null' and p['backend'] in ('ours', 'stock') and
           p['workload'] in (HEADLINE, '4k-randread-qd32-2q', '1m-read')]
    if thr:
        add('## Where the backend\'s CPU goes (threads, null-co, first '
            'repetition; us of CPU per I/O; threads that exited during the '
            'load are only in the total)')
        add('')
        add('| workload | backend | total | by thread |')
        add('|---|---|---|---|')
        for p in thr:
            split = ', '.join('%s %s' % (n, fmt(1e6 * v / p['ios']))
                              for n, v in sorted(
                                  p['backend_threads_cpu_s'].items(),
                                  key=lambda kv: -kv[1]))
            add('| %s | %s | %s (user %s, sys %s) | %s; xensimd %s |' % (
                p['workload'], p['backend'],
                fmt(1e6 * p['cpu_s']['backend'] / p['ios']),
                fmt(1e6 * p['cpu_s'].get('backend_user', 0) / p['ios']),
                fmt(1e6 * p['cpu_s'].get('backend_sys', 0) / p['ios']),
                split, fmt(1e6 * p['cpu_s']['xensimd'] / p['ios'])))
        add('')

    add('## Ceiling: are the frontend and xensim the bottleneck?')
    add('')
    add('The ideal responder does only the grant copies, so its figures are '
        'the most this frontend + xensim + machine can carry. headroom = '
        'limit IOPS / best QEMU IOPS for the workload (over all storages); '
        'cores = CPU seconds per wall second of the load.')
    add('')
    add('| workload | limit IOPS | best QEMU IOPS | headroom | limit: '
        'responder cores | limit: frontend cores | limit: xensimd cores | '
        'limit bound by | ours: frontend cores (null) |')
    add('|---|---|---|---|---|---|---|---|---|')
    tight = []
    for w in workloads:
        i = lookup(med, w.name, 'none', LIMIT)
        best = max([lookup(med, w.name, st, b)['iops'] for st in storages
                    for b in ('ours', 'stock')
                    if lookup(med, w.name, st, b)] or [0])
        if not i:
            continue
        o = lookup(med, w.name, 'null', 'ours') or {}
        head = ratio(i['iops'], best)
        if head is not None and head < 1.5:
            tight.append(w.name)
        add('| %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            w.name, fmt(i['iops']), fmt(best or None), fmt_r(head),
            fmt_r(i.get('be_cores')), fmt_r(i.get('fe_cores')),
            fmt_r(i.get('sim_cores')), bound_by(i, w),
            fmt_r(o.get('fe_cores'))))
    add('')
    if tight:
        add('Near the ceiling (headroom < 1.5): %s: there the frontend/'
            'xensim/machine limit the QEMU figures too; compare CPU per '
            'I/O rather than IOPS.' % ', '.join(tight))
    else:
        add('Every QEMU point is below 1/1.5 of the limit: the frontend '
            'and xensim are not what bounds the QEMU figures.')
    add('')

    busy = [p for p in points if not p.get('error') and is_busy(p)]
    if busy:
        allbusy = sorted('/'.join(k) for k, s in med.items()
                         if s.get('all_busy'))
        add('Other load on the machine (builds, emulators; not the backend, '
            'xensimd or the frontend) took more than %g of a core during %d '
            'of %d points (worst: %s at %.2f cores). Medians leave those '
            'points out when every backend of the same workload and storage '
            'has a quiet one%s' % (
                BUSY_CORES, len(busy), len(points),
                '/'.join(max(busy, key=lambda p: metric(p, 'other_cores'))
                         [k] for k in ('workload', 'storage', 'backend')),
                max(metric(p, 'other_cores') for p in busy),
                '; these rows keep their busy points (figures from a busy '
                'machine, pessimistic, more so for the backend that needs '
                'more CPU): %s.' % ', '.join(allbusy) if allbusy else '.'))
        add('')

    noisy = []
    for (wn, st, be), s in sorted(med.items()):
        if (s.get('cv_iops') or 0) > 0.10:
            noisy.append('%s/%s/%s: IOPS cv %.0f%% (min %s, max %s)' % (
                wn, st, be, 100 * s['cv_iops'], fmt(s['min_iops']),
                fmt(s['max_iops'])))
    failed = [p for p in points if p.get('error')]
    if noisy or failed:
        add('## Variance and failures')
        add('')
        for n in noisy:
            add('- noisy: ' + n)
        for p in failed:
            add('- FAILED %s/%s/%s rep %d: %s' % (
                p['workload'], p['storage'], p['backend'], p['rep'],
                p['error'][:400]))
        add('')

    add('## Negotiated (first repetition)')
    add('')
    add('| workload | backend | queues | ring pages | max segs | indirect | '
        'persistent |')
    add('|---|---|---|---|---|---|---|')
    seen = set()
    for (wn, st, be), s in sorted(med.items()):
        if (wn, be) in seen:
            continue
        seen.add((wn, be))
        n = s['negotiated']
        add('| %s | %s | %s | %s | %s | %s | %s |' % (
            wn, be, n.get('queues'), n.get('ring_pages'), n.get('max_segs'),
            n.get('indirect'), n.get('persistent')))
    add('')
    return '\n'.join(L)


# ---- Charts ----

def charts(outdir, med, storages):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        log('no matplotlib (run bench/setup.sh): no charts')
        return []
    style = {'ours': ('tab:blue', '-', 'o'), 'stock': ('tab:orange', '--',
                                                        's'),
             LIMIT: ('tab:gray', ':', '^')}
    made = []
    sts = [s for s in storages if any(k[1] == s for k in med)]
    if not sts:
        return made

    def series(wnames, st, be, m):
        """x, median, and the distance to min and max (error bars)."""
        xs, ys, lo, hi = [], [], [], []
        for x, wn in wnames:
            s = lookup(med, wn, st, be)
            if s and s.get(m):
                xs.append(x)
                ys.append(s[m])
                lo.append(s[m] - s.get('min_' + m, s[m]))
                hi.append(s.get('max_' + m, s[m]) - s[m])
        return xs, ys, [lo, hi]

    def finish(fig, axes, name):
        handles, labels = [], []
        for ax in axes:
            for h, l in zip(*ax.get_legend_handles_labels()):
                if l not in labels:
                    handles.append(h)
                    labels.append(l)
        if handles:
            fig.legend(handles, labels, loc='lower center',
                       ncol=min(6, len(labels)), fontsize=8)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        p = os.path.join(outdir, name)
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    # IOPS against iodepth
    fig, axes = plt.subplots(1, len(sts), figsize=(5.2 * len(sts), 4.8),
                             squeeze=False)
    for ax, st in zip(axes[0], sts):
        for rw, marker_fill in (('randread', 'full'), ('randwrite', 'none')):
            wn = [(qd, '4k-%s-qd%d' % (rw, qd)) for qd in (1, 32, 128)]
            for be in ('ours', 'stock', LIMIT):
                xs, ys, err = series(wn, st, be, 'iops')
                if xs:
                    c, ls, mk = style[be]
                    ax.errorbar(xs, ys, yerr=err, color=c, linestyle=ls,
                                marker=mk, fillstyle=marker_fill, capsize=3,
                                label='%s %s' % ('limit (ideal)' if be == LIMIT
                                                 else be, rw))
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xticks([1, 32, 128])
        ax.set_xticklabels(['1', '32', '128'])
        ax.set_xlabel('iodepth (4 KiB random)')
        ax.set_ylabel('IOPS')
        ax.set_title('storage: %s' % st)
        ax.grid(True, which='both', alpha=0.3)
    finish(fig, axes[0], 'iops-vs-iodepth.png')

    # MB/s against block size
    fig, axes = plt.subplots(1, len(sts), figsize=(5.2 * len(sts), 4.8),
                             squeeze=False)
    for ax, st in zip(axes[0], sts):
        for rw, fill in (('read', 'full'), ('write', 'none')):
            wn = [(64, '64k-%s' % rw), (1024, '1m-%s' % rw)]
            for be in ('ours', 'stock', LIMIT):
                xs, ys, err = series(wn, st, be, 'mbps')
                if xs:
                    c, ls, mk = style[be]
                    ax.errorbar(xs, ys, yerr=err, color=c, linestyle=ls,
                                marker=mk, fillstyle=fill, capsize=3,
                                label='%s seq %s' % ('limit (ideal)'
                                                     if be == LIMIT
                                                     else be, rw))
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xticks([64, 1024])
        ax.set_xticklabels(['64 KiB', '1 MiB'])
        ax.set_xlabel('block size (sequential, iodepth 8)')
        ax.set_ylabel('MB/s')
        ax.set_title('storage: %s' % st)
        ax.grid(True, which='both', alpha=0.3)
    finish(fig, axes[0], 'mbps-vs-blocksize.png')

    # CPU per I/O, null-co, every workload
    names = [w.name for w in WORKLOADS
             if lookup(med, w.name, 'null', 'ours') or
             lookup(med, w.name, 'null', 'stock')]
    if names:
        fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 2), 4.5))
        width = 0.27
        for k, be in enumerate(('ours', 'stock', LIMIT)):
            ys = [(lookup(med, n, 'null', be) or {}).get('cpu_us_per_io') or 0
                  for n in names]
            ax.bar([x + (k - 1) * width for x in range(len(names))], ys,
                   width, color=style[be][0],
                   label='limit' if be == LIMIT else be)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha='right', fontsize=7)
        ax.set_ylabel('CPU us per I/O (backend + xensimd)')
        ax.set_yscale('log')
        ax.set_title('CPU per I/O, null-co (lower is better)')
        ax.grid(True, axis='y', which='both', alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = os.path.join(outdir, 'cpu-per-io-null.png')
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    return made


# ---- Driver ----

def git_rev():
    try:
        r = subprocess.run(['git', '-C', TOP, 'rev-parse', '--short', 'HEAD'],
                           capture_output=True, text=True, timeout=10)
        d = subprocess.run(['git', '-C', TOP, 'status', '--porcelain',
                            '--untracked-files=no'],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() + (' (dirty)' if d.stdout.strip() else '')
    except OSError:
        return 'unknown'


def check_binaries(backends):
    missing = []
    for f, what in ((xensim.XENSIMD, 'make xensim'),
                    (xensim.LIBXENSIM, 'make xensim'),
                    (xensim.FRONT, 'make xensim')):
        if not os.access(f, os.X_OK if not f.endswith('.so') else os.R_OK):
            missing.append('%s (%s)' % (f, what))
    for b in backends:
        if b in xensim.QEMUS and not os.access(xensim.QEMUS[b], os.X_OK):
            missing.append('%s (%s)' % (
                xensim.QEMUS[b], 'make qemu' if b == 'ours'
                else 'make deps: qemu-system-xen'))
    return missing


def schedule(workloads, storages, backends, repeat):
    """(rep, workload, storage, backend) in run order: interleaved, the
    limit once per workload and repetition (storage 'none'), the first
    backend rotating from one repetition to the next."""
    out = []
    for rep in range(repeat):
        k = rep % len(backends)
        rot = list(backends[k:]) + list(backends[:k])
        for w in workloads:
            for si, st in enumerate(storages):
                for b in rot:
                    if b == LIMIT:
                        if si == 0:
                            out.append((rep, w, 'none', b))
                    else:
                        out.append((rep, w, st, b))
    return out


def ensure_chart_tools():
    """The charts need matplotlib: on a fresh machine, bench/setup.sh
    installs it (and the profilers) before the run, not after it."""
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    log('no matplotlib: running bench/setup.sh')
    if subprocess.run([os.path.join(BENCH, 'setup.sh')]).returncode:
        log('bench/setup.sh failed: this run draws no charts')


def make_parser():
    """The bench's options; bench/profile.py takes its defaults from here."""
    ap = argparse.ArgumentParser(
        description='Bench our xen-disk against the stock QEMU and the ideal '
        'responder on xensim (see bench/README.md).')
    ap.add_argument('--quick', action='store_true',
                    help='smoke test: 2 s points, 1 repetition')
    ap.add_argument('--selftest', action='store_true',
                    help='one 1 s point per backend; check the JSON')
    ap.add_argument('--list', action='store_true', help='list workloads')
    ap.add_argument('--report', metavar='DIR',
                    help='only redo report.md and the charts from '
                    'DIR/results.json')
    ap.add_argument('--workloads', default='all',
                    help='comma-separated names (see --list), or all')
    ap.add_argument('--backends', default=','.join(BACKENDS))
    ap.add_argument('--storage', default=','.join(STORAGES))
    ap.add_argument('--repeat', type=int, default=None,
                    help='repetitions (3; --quick: 1)')
    ap.add_argument('--runtime', type=float, default=None,
                    help='seconds per point (10; --quick: 2)')
    ap.add_argument('--out', default=None,
                    help='results folder (bench/results/<timestamp>)')
    ap.add_argument('--image-size', type=parse_size, default=parse_size('512M'),
                    help='size of every disk (512M)')
    ap.add_argument('--tmpfs-dir', default='/dev/shm/qxb-bench')
    ap.add_argument('--disk-dir', default='/var/tmp/qxb-bench',
                    help='folder on a real disk for the O_DIRECT images')
    ap.add_argument('--disk-aio', default='io_uring,native,threads',
                    help='aio engines to try, in order, for disk storage')
    ap.add_argument('--no-iothread', action='store_true',
                    help='QEMU disks in the main loop (default: one '
                    'IOThread per disk, as xl/libxl qdisk disks get)')
    ap.add_argument('--ring-pages', type=int, default=16)
    ap.add_argument('--indirect', type=int, default=256)
    ap.add_argument('--no-persistent', action='store_true')
    ap.add_argument('--front-poll-us', type=int, default=0,
                    help='the frontend looks for responses this long '
                    'before it sleeps (xenblk-front --poll-us; 0: never)')
    ap.add_argument('--ours-binary', default='',
                    help='our QEMU from elsewhere (default: the release '
                         'build), e.g. an older build kept aside for an A/B '
                         'comparison')
    ap.add_argument('--stock-binary', default='',
                    help='another QEMU in the stock column: with '
                         '--ours-binary, an A/B of two of our builds in one '
                         'interleaved run (the ratios are then new/old)')
    ap.add_argument('--iothread-opts', default=QDISK_IOTHREAD_OPTS,
                    help='IOThread options for both QEMUs (default: %s, as '
                         'the qdisk backend makes an xl disk\'s IOThread; '
                         '"" for QEMU\'s own defaults, which poll up to '
                         '32 us before sleeping)' % QDISK_IOTHREAD_OPTS)
    ap.add_argument('--ours-props', default='',
                    help='extra xen-disk properties for our QEMU only, '
                         'e.g. max-persistent-grants=4096 (tuning studies; '
                         'the report names them)')
    ap.add_argument('--guest-mem', type=int, default=512,
                    help='guest memory in MiB (512)')
    ap.add_argument('--keep-images', action='store_true')
    ap.add_argument('--busy-retries', type=int, default=1,
                    help='measure a point again when other load took more '
                    'than %g of a core during it (1); every attempt is kept '
                    'in the JSON' % BUSY_CORES)
    ap.add_argument('--idle-wait', type=float, default=None,
                    help='before each point, wait up to this many seconds '
                    'for the machine to be idle (other load < 0.3 cores '
                    'over 1 s): 60, --quick: 5, --selftest: 0')
    ap.add_argument('--ideal-store', action='store_true',
                    help='the ideal responder keeps data in RAM (its copies '
                    'then touch real memory; by default it copies from one '
                    'zero page and into one scratch page, cache-hot)')
    ap.add_argument('--no-snapshot', action='store_true',
                    help='run our QEMU from the build folder (default: from '
                    'a private copy made at the start, so that a rebuild '
                    'during the run does not mix builds)')
    return ap


def main(argv=None):
    a = make_parser().parse_args(argv)

    if a.list:
        for w in WORKLOADS:
            print('%-26s %s%s' % (w.name, w.describe(),
                                  ' (%s)' % w.note if w.note else ''))
        return 0
    if a.selftest:
        return selftest(a)
    ensure_chart_tools()
    if a.report:
        return rereport(a.report)

    if a.idle_wait is None:
        a.idle_wait = 5.0 if a.quick else 60.0
    repeat = a.repeat or (1 if a.quick else 3)
    runtime = a.runtime or (2.0 if a.quick else 10.0)
    if a.workloads == 'all':
        wls = list(WORKLOADS)
    else:
        wls = []
        for n in a.workloads.split(','):
            if n.strip() not in BY_NAME:
                ap.error('unknown workload %r (see --list)' % n)
            wls.append(BY_NAME[n.strip()])
    backends = [b.strip() for b in a.backends.split(',') if b.strip()]
    storages = [s.strip() for s in a.storage.split(',') if s.strip()]
    for b in backends:
        if b not in BACKENDS:
            ap.error('unknown backend %r' % b)
    for s in storages:
        if s not in STORAGES:
            ap.error('unknown storage %r' % s)
    missing = check_binaries(backends)
    if missing:
        sys.stderr.write('bench: missing: %s\n' % ', '.join(missing))
        return 2
    return run(a, wls, backends, storages, repeat, runtime)


def _term(signum, frame):
    raise KeyboardInterrupt('SIGTERM')


def file_id(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(MiB), b''):
            h.update(block)
    return {'path': path, 'sha256': h.hexdigest()[:16],
            'mtime': datetime.datetime.fromtimestamp(st.st_mtime)
            .isoformat(timespec='seconds')}


def snapshot_ours():
    """Copy our QEMU so that a rebuild during the run changes nothing."""
    src = xensim.QEMUS['ours']
    d = tempfile.mkdtemp(prefix='qxb-bench-qemu-')
    dst = os.path.join(d, os.path.basename(src))
    shutil.copy2(src, dst)
    xensim.QEMUS['ours'] = dst
    return src, d


def run(a, wls, backends, storages, repeat, runtime, quiet=False):
    started = datetime.datetime.now()
    outdir = a.out or os.path.join(BENCH, 'results',
                                   started.strftime('%Y%m%d-%H%M%S'))
    os.makedirs(outdir, exist_ok=True)
    bench = Bench(a)
    if not HEARTBEAT.is_alive():
        HEARTBEAT.start()
    # A run started in the background (cmd &) has SIGINT ignored; take it
    # back, and make SIGTERM stop the run the same way: the point under way
    # stops its processes, images are removed, the report covers what was
    # measured.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _term)
    if a.ours_binary:
        xensim.QEMUS['ours'] = os.path.abspath(a.ours_binary)
    if a.stock_binary:
        xensim.QEMUS['stock'] = os.path.abspath(a.stock_binary)
    ids = {b: file_id(xensim.QEMUS[b]) for b in ('ours', 'stock')}
    snap = None
    if 'ours' in backends and not a.no_snapshot:
        src, snapdir = snapshot_ours()
        snap = (src, snapdir)
    plan = schedule(wls, storages, backends, repeat)
    est = len(plan) * (runtime + 1.0 + (1.0 if a.idle_wait else 0))
    log('%d points, about %.0f min; results in %s' % (len(plan), est / 60,
                                                      outdir))
    vqmaps = {b: vq_mapping_prop(device_props(xensim.QEMUS[b]))
              for b in backends if b in xensim.QEMUS}
    meta = {
        'started': started.isoformat(timespec='seconds'),
        'command': ' '.join([os.path.relpath(sys.argv[0], TOP)
                             if sys.argv[0].endswith('run.py') else
                             'bench/run.py'] + sys.argv[1:]),
        'git': git_rev(), 'host': platform.node(), 'cpus': os.cpu_count(),
        'kernel': platform.release(),
        'binaries': {b: (snap[0] if snap and b == 'ours' else
                         xensim.QEMUS[b]) for b in ('ours', 'stock')},
        'binary_ids': ids,
        'snapshot': 'our QEMU ran from a copy made at the start' if snap
                    else 'our QEMU ran from the build folder',
        'frontend': xensim.FRONT,
        'ours_props': a.ours_props or None,
        'iothread_opts': a.iothread_opts or None,
        'repeat': repeat, 'runtime': runtime, 'image_size': a.image_size,
        'workloads': {w.name: w.describe() for w in wls},
        'backends': backends, 'storages': storages,
        'frontend_asks': 'ring-pages %d, indirect %d, %s, the workload\'s '
                         'queues; verify off%s' % (
                             a.ring_pages, a.indirect,
                             'no persistent grants' if a.no_persistent
                             else 'persistent grants',
                             '; it polls for responses for up to %d us '
                             'before sleeping (not the default)'
                             % a.front_poll_us if a.front_poll_us else ''),
        'iothreads': 'none (main loop)' if a.no_iothread else
                     'one per disk (as xl qdisk disks get); per queue where '
                     'the device has a per-queue IOThread property (%s)' %
                     (', '.join('%s: %s' % (b, v or 'none')
                                for b, v in vqmaps.items())),
        'notes': bench.notes,
        'idle_wait': a.idle_wait,
    }
    if 'tmpfs' in storages and any(w.name in ('1m-read', '1m-write')
                                   for w in wls):
        meta['storage_ceiling'] = {
            'tmpfs': file_ceiling(bench.images.path('tmpfs', 0))}
        log('tmpfs ceiling (1 MiB, 8 threads, no QEMU): read %s MB/s, '
            'write %s MB/s' % (meta['storage_ceiling']['tmpfs']['read_mbps'],
                               meta['storage_ceiling']['tmpfs']['write_mbps']))
    points = []
    results_json = os.path.join(outdir, 'results.json')

    def save(final=False):
        med = medians(points)
        doc = {'meta': meta, 'points': points,
               'medians': [dict(workload=k[0], storage=k[1], backend=k[2],
                                **v) for k, v in sorted(med.items())]}
        if final:
            doc['targets'] = [t.as_dict() for t in targets(med, meta)]
        tmp = results_json + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, results_json)
        return med

    try:
        for n, (rep, w, st, b) in enumerate(plan, 1):
            try:
                p = bench.run_point(b, st, w, rep, runtime)
                for _ in range(a.busy_retries):
                    if not p.get('busy'):
                        break
                    log('%3d/%d other load %.2f cores during the point: '
                        'measuring it again' % (n, len(plan),
                                                metric(p, 'other_cores')))
                    points.append(p)
                    p = bench.run_point(b, st, w, rep, runtime)
                log('%3d/%d rep %d %-24s %-5s %-5s %9.0f IOPS %8.1f MB/s '
                    'p50 %7.1f p99 %7.1f us  cpu %6.2f us/IO  fe %5.2f '
                    'us/IO' % (n, len(plan), rep, w.name, st, b, p['iops'],
                               p['mbps'], p['lat_us']['p50'],
                               p['lat_us']['p99'], p['cpu_us_per_io'] or 0,
                               p['fe_cpu_us_per_io'] or 0))
            except PointError as e:
                p = {'backend': b, 'storage': st, 'workload': w.name,
                     'rep': rep, 'runtime_s': runtime, 'error': str(e)}
                if e.frozen and a.busy_retries:
                    log('%3d/%d %s: measuring it again' % (n, len(plan), e))
                    points.append(p)
                    try:
                        p = bench.run_point(b, st, w, rep, runtime)
                    except PointError as e2:
                        p = {'backend': b, 'storage': st, 'workload': w.name,
                             'rep': rep, 'runtime_s': runtime,
                             'error': str(e2)}
                log('%3d/%d rep %d %-24s %-5s %-5s FAILED: %s' % (
                    n, len(plan), rep, w.name, st, b, str(e)[:300]))
            points.append(p)
            save()
    except KeyboardInterrupt:
        log('interrupted: reporting what was measured')
    finally:
        if not a.keep_images:
            bench.images.remove()
        if snap:
            shutil.rmtree(snap[1], ignore_errors=True)
            xensim.QEMUS['ours'] = snap[0]
            if file_id(snap[0]) != ids['ours']:
                bench.note('our QEMU was rebuilt during the run; every point '
                           'used the build as it was at the start (sha256 '
                           '%s.., built %s)' % (ids['ours']['sha256'],
                                                ids['ours']['mtime']))

    med = save(final=True)
    tlist = targets(med, meta)
    md = report(meta, points, med, wls, storages, backends, tlist)
    with open(os.path.join(outdir, 'report.md'), 'w') as f:
        f.write(md + '\n')
    made = charts(outdir, med, storages)
    latest = os.path.join(BENCH, 'results', 'latest')
    if os.path.dirname(os.path.abspath(outdir)) == os.path.join(BENCH,
                                                                 'results'):
        try:
            if os.path.islink(latest):
                os.unlink(latest)
            os.symlink(os.path.basename(outdir), latest)
        except OSError:
            pass
    if not quiet:
        print(md)
        print('\nresults: %s' % outdir)
        for p in made:
            print('chart: %s' % p)
    return 0 if points and not all(p.get('error') for p in points) else 1


def rereport(outdir):
    with open(os.path.join(outdir, 'results.json')) as f:
        doc = json.load(f)
    meta, points = doc['meta'], doc['points']
    wls = [BY_NAME[n] for n in BY_NAME if n in meta['workloads']]
    med = medians(points)
    tlist = targets(med, meta)
    md = report(meta, points, med, wls, meta['storages'], meta['backends'],
                tlist)
    with open(os.path.join(outdir, 'report.md'), 'w') as f:
        f.write(md + '\n')
    made = charts(outdir, med, meta['storages'])
    print(md)
    for p in made:
        print('chart: %s' % p)
    return 0


# ---- --selftest: cheap, for CI; no timing asserted ----

def selftest(a):
    backends = [b for b in BACKENDS]
    missing = check_binaries(backends)
    if missing:
        print('selftest: missing: %s' % ', '.join(missing))
        print('0 passed, 1 failed')
        return 1
    a.idle_wait = a.idle_wait or 0
    a.busy_retries = 0
    own = not a.out
    out = a.out or tempfile.mkdtemp(prefix='qxb-bench-selftest-')
    a.out = out
    rc = run(a, [BY_NAME[HEADLINE]], backends, ['null'], 1, 1.0, quiet=True)
    passed = failed = 0

    def check(cond, what):
        nonlocal passed, failed
        if cond:
            passed += 1
            print('ok %d - %s' % (passed + failed, what))
        else:
            failed += 1
            print('not ok %d - %s' % (passed + failed, what))

    check(rc == 0, 'run.py exited 0')
    try:
        with open(os.path.join(out, 'results.json')) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        doc = None
        check(False, 'results.json is JSON: %s' % e)
    if doc is not None:
        check(isinstance(doc.get('meta'), dict) and
              isinstance(doc.get('points'), list) and
              isinstance(doc.get('medians'), list) and
              isinstance(doc.get('targets'), list),
              'results.json has meta, points, medians, targets')
        for b in backends:
            ps = [p for p in doc['points'] if p.get('backend') == b]
            check(len(ps) == 1, '%s: one point' % b)
            if len(ps) != 1:
                continue
            p = ps[0]
            check(not p.get('error'), '%s: no error %s' % (
                b, p.get('error', '')[:300]))
            if p.get('error'):
                continue
            nums = [p['iops'], p['mbps'], p['lat_us']['p50'],
                    p['lat_us']['p99'], p['cpu_us_per_io'],
                    p['cpu_s_per_gib'], p['fe_cpu_us_per_io'],
                    p['cpu_s']['total'], p['cpu_s']['frontend']]
            check(all(isinstance(v, (int, float)) and math.isfinite(v) and
                      v >= 0 for v in nums),
                  '%s: figures are finite numbers >= 0' % b)
            check(p['ios'] > 0 and p['bytes'] == p['ios'] * 4096,
                  '%s: I/O done, 4 KiB each' % b)
            check(p['status']['error'] == 0, '%s: no error responses' % b)
            check(p['rss_kb']['before_disks'] and
                  p['rss_kb']['peak_during_load'],
                  '%s: RSS read' % b)
        for t in doc.get('targets', []):
            if not ({'target', 'status', 'goal', 'op'} <= set(t)):
                check(False, 'target entry well-formed: %r' % t)
                break
        else:
            check(True, 'target entries well-formed')
    check(os.path.exists(os.path.join(out, 'report.md')), 'report.md written')
    if own and failed == 0:
        shutil.rmtree(out, ignore_errors=True)
    elif failed:
        print('# results kept in %s' % out)
    print('%d passed, %d failed' % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
