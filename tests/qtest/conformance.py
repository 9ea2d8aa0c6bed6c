#!/usr/bin/python3
"""Conformance suite: a QEMU xen-block backend under xensim, driven by
xenblk-front (a user-space blkif frontend that negotiates like Linux's).

    tests/qtest/conformance.py --qemu ours|stock|ours-asan [-k SUBSTRING]

Prints TAP: "ok N conformance-<qemu>:<test>".  Each test starts its own
xensimd and QEMU, checks response statuses and data, and that QEMU is
still alive at the end.  A test of a feature the backend does not offer is
skipped with that reason; a failure caused outside our code is declared in
tests/expected-failures (the runner counts it as skipped).
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xensim  # noqa: E402

MiB = 1024 * 1024
TESTS = []


class Skip(Exception):
    pass


class Failure(Exception):
    pass


def test(name):
    def register(fn):
        TESTS.append((name, fn))
        return fn
    return register


def test_main_loop_and_iothread(name, fn):
    """Register fn(c, iothread) twice: NAME with the device in the main
    loop, NAME-iothread with it in an IOThread."""
    test(name)(lambda c: fn(c, iothread=False))
    test(name + '-iothread')(lambda c: fn(c, iothread=True))


def check(cond, what):
    if not cond:
        raise Failure(what)


def sha(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(MiB), b''):
            h.update(block)
    return h.hexdigest()


class Ctx:
    """One test's world: an image, xensimd, QEMU, and frontend helpers."""

    def __init__(self, which, tmp):
        self.which = which
        self.tmp = tmp
        self.sim = None
        self.qemu = None

    def image(self, name='disk.img', size=64 * MiB, fmt='raw'):
        path = os.path.join(self.tmp, name)
        if fmt == 'raw':
            with open(path, 'wb') as f:
                f.truncate(size)
        else:
            subprocess.run(['qemu-img', 'create', '-q', '-f', fmt, path,
                            str(size)], check=True)
        return path

    def start(self, args=(), guests=(1,), **kw):
        self.sim = xensim.XenSim(guests=guests)
        self.qemu = xensim.Qemu(self.sim, self.which, args=args, **kw)
        return self.qemu

    def front(self, *args, domid=1, timeout=120, ok=True):
        """Run the frontend as the guest; return its JSON report."""
        cmd = [xensim.FRONT, 'run', '--domid', str(domid), '--json', '-']
        cmd += [str(a) for a in args]
        r = subprocess.run(cmd, env=self.sim.env(domid), capture_output=True,
                           text=True, timeout=timeout)
        report = parse_json(r.stdout)
        if ok and r.returncode != 0:
            raise Failure('xenblk-front %s failed (%d): %s %s' % (
                ' '.join(map(str, args)), r.returncode,
                r.stderr.strip()[-800:], summary(report)))
        return report

    def tool(self, sub, *args, domid=0, ok=True, timeout=60):
        cmd = [xensim.FRONT, sub] + [str(a) for a in args]
        r = subprocess.run(cmd, env=self.sim.env(domid), capture_output=True,
                           text=True, timeout=timeout)
        if ok and r.returncode != 0:
            raise Failure('xenblk-front %s %s failed: %s %s' % (
                sub, ' '.join(map(str, args)), r.stdout[-500:],
                r.stderr[-800:]))
        return r

    def attach_xl(self, image, vdev='xvda', fmt='raw', access='rw',
                  devtype='disk'):
        self.tool('attach', '--domid', 1, '--vdev', vdev, '--target', image,
                  '--format', fmt, '--access', access, '--devtype', devtype)

    def attach_qmp(self, image, vdev='xvda', node='d0', driver='xen-disk',
                   fmt='raw', **props):
        self.qemu.qmp.cmd('blockdev-add', driver=fmt, **{'node-name': node},
                          file={'driver': 'file', 'filename': image})
        self.qemu.qmp.cmd('device_add', driver=driver, id='dev-' + vdev,
                          vdev=vdev, drive=node, **props)

    def xs_read(self, path):
        r = self.tool('xs', 'read', path, ok=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def stop(self):
        alive = self.qemu.alive() if self.qemu else True
        if self.qemu:
            self.qemu.quit()
        if self.sim:
            self.sim.stop()
        return alive


def parse_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return {}


def summary(report):
    keys = ('ok', 'error', 'status', 'verify', 'device')
    return json.dumps({k: report[k] for k in keys if k in report})[:1500]


def io_clean(report, what):
    """The report shows I/O without errors and clean verification."""
    st = report.get('status', {})
    check(report.get('ok'), '%s: not ok: %s' % (what, summary(report)))
    check(st.get('error', 0) == 0 and st.get('eopnotsupp', 0) == 0,
          '%s: error responses %s' % (what, st))
    v = report.get('verify', {})
    if v.get('enabled'):
        bad = {k: v.get(k, 0) for k in ('torn', 'misplaced', 'wrong_device',
                                        'stale', 'unexpected', 'lost',
                                        'garbage')}
        check(not any(bad.values()), '%s: verification %s' % (what, bad))
    check(report.get('ios', 1) > 0, '%s: no I/O done' % what)


def device_of(report):
    return report.get('device', {})


# ---- Attach in the three ways ----

@test('attach-xl')
def t_attach_xl(c):
    img = c.image()
    c.start()
    c.attach_xl(img)
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 8,
                     '--size', 4 * MiB), 'xl-attached disk')


@test('attach-qmp')
def t_attach_qmp(c):
    img = c.image()
    c.start()
    c.attach_qmp(img, vdev='xvdb')
    io_clean(c.front('--vdev', 'xvdb', '--rw', 'randrw', '--bs', '4k',
                     '--iodepth', 8, '--size', 4 * MiB), 'QMP-attached disk')


@test('attach-cmdline')
def t_attach_cmdline(c):
    img = c.image()
    c.start(args=['-blockdev', 'driver=file,filename=%s,node-name=f0' % img,
                  '-blockdev', 'driver=raw,file=f0,node-name=d0',
                  '-device', 'xen-disk,vdev=xvdc,drive=d0'])
    io_clean(c.front('--vdev', 'xvdc', '--rw', 'randrw', '--bs', '8k',
                     '--iodepth', 4, '--size', 4 * MiB), '-device disk')


@test('attach-drive-if-xen')
def t_attach_drive(c):
    img = c.image()
    c.start(args=['-drive', 'file=%s,if=xen,format=raw' % img])
    io_clean(c.front('--vdev', 'xvda', '--rw', 'randrw', '--bs', '4k',
                     '--size', 2 * MiB), '-drive if=xen disk')


@test('auto-vdev-skips-frontend-disks')
def t_auto_vdev_skips_frontend_disks(c):
    """Disks the domain already has (frontend directories, as another
    backend would have made them: hda, which a Linux guest sees as xvda,
    and xvdb1) keep their disks: xen-disk without a vdev takes xvdc, and
    serves it."""
    img = c.image()
    c.start()
    for number in (768, 51729):     # hda, xvdb1
        c.tool('xs', 'write', '/local/domain/1/device/vbd/%d/state' % number,
               '1')
    c.qemu.qmp.cmd('blockdev-add', driver='raw', **{'node-name': 'd0'},
                   file={'driver': 'file', 'filename': img})
    c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-auto',
                   drive='d0')
    for name, number in (('xvda', 51712), ('xvdb', 51728)):
        check(c.xs_read('/local/domain/0/backend/qdisk/1/%d/frontend' %
                        number) is None, 'took %s, a disk the domain has'
              % name)
    check(c.xs_read('/local/domain/0/backend/qdisk/1/51744/frontend'),
          'xvdc has no backend')
    io_clean(c.front('--vdev', 'xvdc', '--rw', 'randrw', '--bs', '4k',
                     '--size', MiB), 'the automatic xvdc')


# ---- Negotiation ----

@test('negotiation')
def t_negotiation(c):
    img = c.image(size=48 * MiB)
    c.start()
    c.attach_xl(img)
    dev = device_of(c.front('--op', 'info', '--ring-pages', 16))
    be = '/local/domain/0/backend/qdisk/1/51712'
    check(dev.get('sectors') == 48 * MiB // 512,
          'sectors %s, want %d' % (dev.get('sectors'), 48 * MiB // 512))
    check(dev.get('sector_size') == 512, 'sector-size %s' %
          dev.get('sector_size'))
    check(dev.get('feature_flush') == 1, 'no feature-flush-cache')
    check(dev.get('feature_discard') == 1,
          'no feature-discard with discard-enable=1')
    order = c.xs_read(be + '/max-ring-page-order')
    want_pages = min(16, 1 << int(order)) if order else 1
    check(dev.get('ring_pages') == want_pages,
          'ring pages %s, backend offers order %s' % (dev.get('ring_pages'),
                                                     order))
    check(c.xs_read(be + '/mode') == 'w', 'mode %s' % c.xs_read(be + '/mode'))
    check(c.xs_read(be + '/info') == '0', 'info %s' % c.xs_read(be + '/info'))


# ---- Verified I/O ----

@test('io-sizes')
def t_io_sizes(c):
    img = c.image()
    c.start()
    c.attach_xl(img)
    # 512 B up to 11 segments (44 KiB); odd offsets make requests start
    # inside a page and run across pages
    for bs in (512, 1024, 2048, 3584, 4096, 8192, 16384, 36864, 45056):
        for offset in (0, 512, 3584, 4096 * 3 + 1024):
            io_clean(c.front('--rw', 'write', '--bs', bs, '--offset', offset,
                             '--size', bs * 8, '--iodepth', 4),
                     'write bs=%d offset=%d' % (bs, offset))
            io_clean(c.front('--rw', 'read', '--bs', bs, '--offset', offset,
                             '--size', bs * 8, '--iodepth', 4),
                     'read bs=%d offset=%d' % (bs, offset))


@test('io-large-requests')
def t_io_large(c):
    img = c.image()
    c.start()
    c.attach_xl(img)
    # larger than one request: the frontend splits it like Linux
    io_clean(c.front('--rw', 'randrw', '--bs', '1M', '--iodepth', 4,
                     '--size', 16 * MiB), '1 MiB requests')


@test('flush')
def t_flush(c):
    img = c.image()
    c.start()
    c.attach_xl(img)
    c.front('--op', 'flush', '--expect', 'okay')
    io_clean(c.front('--rw', 'write', '--bs', '64k', '--size', 2 * MiB),
             'write before flush')
    c.front('--op', 'flush', '--expect', 'okay')


@test('discard')
def t_discard(c):
    img = c.image()
    c.start()
    c.attach_xl(img)
    mapf = os.path.join(c.tmp, 'map')
    c.front('--op', 'write-pattern', '--offset', 0, '--length', 8 * MiB,
            '--map', mapf, '--expect', 'okay')
    c.front('--op', 'discard', '--offset', 2 * MiB, '--length', 2 * MiB,
            '--expect', 'okay')
    # the data around the discarded range is intact
    c.front('--op', 'verify-region', '--offset', 0, '--length', 2 * MiB,
            '--map', mapf, '--expect', 'okay')
    c.front('--op', 'verify-region', '--offset', 4 * MiB, '--length',
            4 * MiB, '--map', mapf, '--expect', 'okay')


@test('discard-past-end')
def t_discard_past_end(c):
    img = c.image(size=8 * MiB)
    c.start()
    c.attach_xl(img)
    c.front('--op', 'discard', '--offset', 7 * MiB, '--length', 2 * MiB,
            '--expect', 'error')


@test('io-past-end')
def t_io_past_end(c):
    img = c.image(size=8 * MiB)
    c.start()
    c.attach_xl(img)
    c.front('--op', 'read', '--offset', 8 * MiB - 4096, '--length', 8192,
            '--expect', 'error')
    c.front('--op', 'write', '--offset', 8 * MiB, '--length', 4096,
            '--expect', 'error')


@test('read-only')
def t_read_only(c):
    img = c.image()
    with open(img, 'r+b') as f:
        f.write(os.urandom(MiB))
    before = sha(img)
    c.start()
    c.attach_xl(img, access='ro')
    dev = device_of(c.front('--op', 'info'))
    check(dev.get('readonly'), 'frontend does not see a read-only disk')
    c.front('--op', 'write', '--offset', 0, '--length', 4096, '--expect',
            'error')
    c.front('--op', 'read', '--offset', 2 * MiB, '--length', 64 * 1024,
            '--expect', 'okay')
    check(sha(img) == before, 'read-only image changed')


@test('cdrom')
def t_cdrom(c):
    img = c.image(size=16 * MiB)
    c.start()
    c.attach_xl(img, devtype='cdrom', access='ro')
    dev = device_of(c.front('--op', 'info'))
    check(dev.get('info', 0) & 1, 'info %s lacks VDISK_CDROM' %
          dev.get('info'))
    c.front('--op', 'read', '--offset', 0, '--length', 64 * 1024,
            '--expect', 'okay')
    c.front('--op', 'write', '--offset', 0, '--length', 4096, '--expect',
            'error')


@test('cdrom-empty')
def t_cdrom_empty(c):
    c.start()
    c.qemu.qmp.cmd('device_add', driver='xen-cdrom', id='cd0', vdev='hdc')
    dev = device_of(c.front('--vdev', 'hdc', '--op', 'info'))
    check(dev.get('sectors') == 0, 'empty CD-ROM has %s sectors' %
          dev.get('sectors'))


def resize_online(c, iothread):
    """block_resize while the frontend is connected: it sees the new size
    and can use it.  (With an IOThread the truncate runs there; the device
    model takes it up in the main loop.)"""
    img = c.image(size=16 * MiB)
    c.start(args=['-object', 'iothread,id=io0'] if iothread else [])
    c.attach_qmp(img, vdev='xvda', node='d0',
                 **({'iothread': 'io0'} if iothread else {}))
    proc = background_front(c, '--wait-resize', 30)
    # the frontend is connected once the backend says Connected
    be = '/local/domain/0/backend/qdisk/1/51712/state'
    xensim.wait_for(lambda: c.xs_read(be) == '4', 20, 'backend Connected')
    c.qemu.qmp.cmd('block_resize', **{'node-name': 'd0', 'size': 32 * MiB})
    out, err = proc.communicate(timeout=60)
    dev = device_of(parse_json(out))
    check(proc.returncode == 0, 'frontend: %s' % err[-500:])
    check(dev.get('sectors') == 32 * MiB // 512,
          'frontend sees %s sectors after the resize' % dev.get('sectors'))
    c.front('--op', 'write', '--offset', 32 * MiB - 8192, '--length', 8192,
            '--expect', 'okay')


test_main_loop_and_iothread('resize', resize_online)


@test('reconnect')
def t_reconnect(c):
    img = c.image()
    c.start()
    c.attach_xl(img)
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 16,
                     '--size', 2 * MiB, '--reconnect', 10), 'reconnects')


@test('data-survives-reconnect')
def t_data_survives(c):
    img = c.image()
    c.start()
    c.attach_xl(img)
    mapf = os.path.join(c.tmp, 'map')
    c.front('--op', 'write-pattern', '--offset', MiB, '--length', 4 * MiB,
            '--map', mapf, '--expect', 'okay')
    c.front('--op', 'verify-region', '--offset', MiB, '--length', 4 * MiB,
            '--map', mapf, '--expect', 'okay')


def slow_disk(c, iothread, vdev='xvda', latency_ms=20, size=64 * MiB,
              **props):
    """A disk whose every request takes @latency_ms: I/O stays in
    flight."""
    c.start(args=['-object', 'iothread,id=io0'] if iothread else [])
    c.qemu.qmp.cmd('blockdev-add', driver='null-co', size=size,
                   **{'node-name': 'slow',
                      'latency-ns': latency_ms * 1000 * 1000,
                      'read-zeroes': True})
    if iothread:
        props['iothread'] = 'io0'
    c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-' + vdev,
                   vdev=vdev, drive='slow', **props)


def background_front(c, *args):
    """The frontend as the guest, left running."""
    return subprocess.Popen(
        [xensim.FRONT, 'run', '--domid', '1', '--json', '-'] +
        [str(a) for a in args], env=c.sim.env(1), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def wait_or_kill(proc, predicate, timeout, what):
    """wait_for(), killing the background frontend if it times out."""
    try:
        xensim.wait_for(predicate, timeout, what)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def wait_connected(c, proc):
    """Until xvda's backend, which the background frontend @proc drives,
    is Connected."""
    be = '/local/domain/0/backend/qdisk/1/51712/state'
    wait_or_kill(proc, lambda: c.xs_read(be) == '4', 20, 'backend Connected')


def start_load(c, iodepth=32):
    # a 4-page ring (128 slots) holds the 64 requests the close tests keep
    # in flight
    proc = background_front(c, '--rw', 'randread', '--bs', '4k',
                            '--iodepth', iodepth, '--ring-pages', 4,
                            '--runtime', 60, '--verify', 'off')
    wait_connected(c, proc)
    # wait until a few rounds of requests have gone through the disk
    wait_or_kill(proc, lambda: reads_done(c) >= 2 * iodepth, 20,
                 'requests in flight')
    return proc


def reads_done(c):
    # accounting is per device (BlockBackend), not per node
    return sum(dev['stats']['rd_operations']
               for dev in c.qemu.qmp.cmd('query-blockstats'))


def detach_with_io(c, iothread):
    slow_disk(c, iothread)
    proc = start_load(c)
    # the device goes away with requests in flight: the backend must
    # quiesce before it unmaps anything
    c.qemu.qmp.cmd('device_del', id='dev-xvda')
    proc.kill()
    proc.wait()
    check(c.qemu.alive(), 'QEMU died when the device went away with I/O '
          'in flight: %s' % c.qemu.log_text()[-1500:])
    c.qemu.qmp.cmd('query-status')


def close_frozen_frontend(c, proc, what):
    """Freeze the frontend (so that it cannot answer the backend's Closed
    with a Closing of its own), close its device for it, and check that
    QEMU survived and the device can connect again."""
    fe = '/local/domain/1/device/vbd/51712/state'
    be = '/local/domain/0/backend/qdisk/1/51712/state'
    proc.send_signal(signal.SIGSTOP)
    c.tool('xs', 'write', fe, '6')
    try:
        xensim.wait_for(lambda: c.xs_read(be) == '6' or not c.qemu.alive(),
                        20, 'backend Closed')
    finally:
        proc.kill()
        proc.wait()
    check(c.qemu.alive(), 'QEMU died when the frontend closed %s: %s' %
          (what, c.qemu.log_text()[-1500:]))
    c.qemu.qmp.cmd('query-status', timeout=10)
    c.tool('xs', 'write', fe, '1')
    xensim.wait_for(lambda: c.xs_read(be) == '2', 20, 'InitWait')
    c.front('--op', 'info')


def close_with_io(c, iothread):
    """The guest closes its ring abruptly with 64 requests in flight."""
    slow_disk(c, iothread)
    for i in range(3):
        close_frozen_frontend(c, start_load(c, iodepth=64),
                              'with I/O in flight (round %d)' % i)


test_main_loop_and_iothread('detach-inflight', detach_with_io)
test_main_loop_and_iothread('close-inflight-abrupt', close_with_io)


def stat_total(c, key):
    return sum(q[key] for q in stats_of(c))


@test('close-waiting-for-buffers')
def t_close_waiting_for_buffers(c):
    """The frontend closes while requests wait for buffers, with the
    persistent-grant table full: the waiting requests are dropped, not
    started on a queue that is being torn down."""
    try:
        slow_disk(c, iothread=True, latency_ms=50, size=1024 * MiB,
                  **{'max-persistent-grants': 256})
    except xensim.QMPError as e:
        raise Skip('no max-persistent-grants: %s' % e)
    # 32 requests of 1 MiB on fresh grants each: 8192 pages, twice the
    # pool of a queue, and every one a miss in the full table
    proc = background_front(c, '--persistent', '--regrant', '--indirect',
                            256, '--ring-pages', 1, '--rw', 'randread',
                            '--bs', '1M', '--iodepth', 32, '--runtime', 60,
                            '--verify', 'off')
    wait_or_kill(proc, lambda: stat_total(c, 'waits-for-buffers') >= 32 and
                 stat_total(c, 'grant-maps') >= 256, 30,
                 'requests waiting for buffers, grant table full')
    close_frozen_frontend(c, proc, 'with requests waiting for buffers')


def close_during_barriers(c, iothread):
    """The frontend closes while write barriers are in flight: a barrier
    completing during the teardown must not look at the ring again."""
    try:
        slow_disk(c, iothread=iothread, **{'feature-barrier': True})
    except xensim.QMPError as e:
        raise Skip('no feature-barrier: %s' % e)
    proc = background_front(c, '--deadline', 100, '--hostile', 'req',
                            '--count', 100000, '--req',
                            'op=2,nr_segments=1,sector=0,seg0=buf:0:0:7,'
                            'expect=okay')
    wait_or_kill(proc, lambda: stat_total(c, 'requests') >= 8, 30,
                 'barriers going through')
    close_frozen_frontend(c, proc, 'with barriers in flight')


test_main_loop_and_iothread('close-during-barriers', close_during_barriers)


def waiting_mixed_sizes(c, iothread):
    """Requests of 4 KiB to 1 MiB wait for buffers (no persistent grants,
    64 in flight: about twice a queue's pool of 4096 pages) on storage
    whose every request yields (a file, aio=threads).  A large request's
    completion lets several smaller ones start at once, and the first of
    them yields before the others have started: every one must still be
    served, the last ones too, with no new request to look at the ring
    for."""
    img = c.image(size=128 * MiB)
    c.start(args=['-object', 'iothread,id=io0'] if iothread else [])
    c.qemu.qmp.cmd('blockdev-add', driver='raw', **{'node-name': 'd0'},
                   file={'driver': 'file', 'filename': img})
    c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                   vdev='xvda', drive='d0',
                   **({'iothread': 'io0'} if iothread else {}))
    rep = c.front('--indirect', 256, '--ring-pages', 2, '--rw', 'randrw',
                  '--bs', '1M', '--bs-min', '4k', '--iodepth', 64,
                  '--runtime', 2)
    io_clean(rep, 'mixed sizes waiting for buffers')
    try:
        waits = stat_total(c, 'waits-for-buffers')
    except xensim.QMPError:
        return      # no per-queue statistics (stock): the data is the test
    check(waits > 0, 'no request waited for buffers: the case was not '
          'reached')


test_main_loop_and_iothread('waiting-mixed-sizes', waiting_mixed_sizes)


@test('queue-start-fails-iothread')
def t_queue_start_fails(c):
    """Two queues, the second with a ring reference that is no grant, the
    first ring full of requests published before the connection: the
    backend refuses the connection without serving the first ring from
    the main loop (its handler belongs to the IOThread; meanwhile the
    IOThread tears the queue down), then serves a proper frontend."""
    img = c.image()
    c.start(args=['-object', 'iothread,id=io0'])
    c.attach_qmp(img, vdev='xvda', iothread='io0')
    c.front('--op', 'info')
    if offered(c, 'multi-queue-max-queues') < 2:
        raise Skip('the backend offers one queue')
    before = stats_of(c)[0]['requests']
    for i in range(3):
        rep = c.front('--queues', 2, '--ring-pages', 1, '--prefill', 32,
                      '--xs-set', 'queue-1/ring-ref=77777', '--expect',
                      'refused', '--deadline', 2, ok=False)
        check(c.qemu.alive(), 'QEMU died on refused connection %d: %s' %
              (i, c.qemu.log_text()[-1500:]))
        check(rep.get('ok') and rep.get('refused'), 'connection %d with a '
              'bad ring-ref on queue 1 not refused: %s' % (i, summary(rep)))
    c.qemu.qmp.cmd('query-status', timeout=10)
    taken = stats_of(c)[0]['requests'] - before
    check(taken == 0, 'queue 0 took %d requests of connections that were '
          'refused' % taken)
    io_clean(c.front('--queues', 2, '--rw', 'randrw', '--bs', '4k',
                     '--iodepth', 8, '--size', 4 * MiB),
             'two queues after the refused connections')


@test('disconnect-export-pinned')
def t_disconnect_export_pinned(c):
    """The guest disconnects while an NBD export holds the disk's node in
    the IOThread (fixed-iothread): the disk cannot go back to the main
    loop, and that must not abort QEMU."""
    img = c.image()
    c.start(args=['-object', 'iothread,id=io0'])
    c.attach_qmp(img, vdev='xvda', iothread='io0')
    be = '/local/domain/0/backend/qdisk/1/51712/state'
    proc = background_front(c, '--rw', 'randrw', '--bs', '4k', '--iodepth',
                            8, '--size', 4 * MiB, '--runtime', 2)
    wait_connected(c, proc)
    c.qemu.qmp.cmd('nbd-server-start', addr={
        'type': 'unix', 'data': {'path': os.path.join(c.tmp, 'nbd.sock')}})
    c.qemu.qmp.cmd('block-export-add', type='nbd', id='e0',
                   **{'node-name': 'd0', 'iothread': 'io0',
                      'fixed-iothread': True})
    out, _ = proc.communicate(timeout=60)
    io_clean(parse_json(out), 'I/O while the export was added')
    xensim.wait_for(lambda: c.xs_read(be) != '4' or not c.qemu.alive(), 20,
                    'backend out of Connected')
    check(c.qemu.alive(), 'QEMU died when the guest disconnected with the '
          'node pinned to the IOThread: %s' % c.qemu.log_text()[-1500:])
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 8,
                     '--size', 4 * MiB), 'I/O on a reconnection')


@test('connect-host-failure-logged')
def t_connect_host_failure_logged(c):
    """A connection the host cannot make (QEMU out of file descriptors:
    no event channel) is refused and said in QEMU's log without -d
    guest_errors; a guest's bad value is not (its mistake is for -d
    guest_errors); once the host recovers, the disk connects."""
    img = c.image()
    c.start(guest_errors=False)
    c.attach_qmp(img, vdev='xvda')
    pid = str(c.qemu.proc.pid)
    # below the lowest free descriptor: QEMU cannot open any more
    used = {int(fd) for fd in os.listdir('/proc/%s/fd' % pid)}
    lowest_free = min(set(range(len(used) + 1)) - used)
    subprocess.run(['prlimit', '--pid', pid,
                    '--nofile=%d:4096' % lowest_free], check=True)
    try:
        rep = c.front('--op', 'info', '--deadline', 5, ok=False)
        check(not rep.get('ok'), 'connected with no file descriptor left')
        # ours: "xen-block 51712: cannot connect: ...", upstream's:
        # "frontend change error: ..."
        xensim.wait_for(lambda: re.search(
            r'cannot connect|frontend change error', c.qemu.log_text()), 10,
            'the failure in the log')
    finally:
        subprocess.run(['prlimit', '--pid', pid, '--nofile=4096:4096'],
                       check=True)
    c.front('--op', 'info', '--xs-set', 'protocol=bogus', '--deadline', 5,
            ok=False)
    check('bogus' not in c.qemu.log_text(), 'a guest mistake logged '
          'without -d guest_errors')
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--size', MiB),
             'once descriptors are back')


def prod_backwards(c, iothread):
    """Valid reads in flight for 2 s each, then req_prod moved back: the
    backend must go Closing rather than take unpublished slots and spin,
    QEMU must keep answering, and other disks keep serving."""
    slow_disk(c, iothread=iothread, latency_ms=2000)
    img = c.image('other.img')
    c.attach_qmp(img, vdev='xvdb', node='other')
    rep = c.front('--hostile', 'prod-backwards', '--deadline', 10, ok=False,
                  timeout=60)
    h = rep.get('hostile', {})
    c.qemu.qmp.cmd('query-status', timeout=10)
    check(h.get('taken_before'), 'the backend did not take the first '
          'requests: %s' % json.dumps(h)[:800])
    check(h.get('backend_closing'), 'backend not Closing after req_prod '
          'moved back: %s' % json.dumps(h)[:800])
    io_clean(c.front('--vdev', 'xvdb', '--rw', 'randrw', '--bs', '4k',
                     '--iodepth', 8, '--size', 4 * MiB),
             'the other disk, after the attack')
    rep = c.front('--op', 'info')
    check(rep.get('ok'), 'no reconnect after the attack: %s' % summary(rep))


test_main_loop_and_iothread('ring-prod-backwards', prod_backwards)


@test('close-inflight')
def t_close_inflight(c):
    img = c.image()
    c.start()
    c.attach_xl(img)
    # the frontend closes its ring with 32 requests in flight, 20 times
    for i in range(20):
        c.front('--rw', 'randwrite', '--bs', '32k', '--iodepth', 32,
                '--size', 4 * MiB, '--verify', 'off', ok=False,
                timeout=60)
        check(c.qemu.alive(), 'QEMU died on close %d' % i)
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--size', MiB),
             'I/O after the closes')


def abi_test(abi):
    def run(c):
        img = c.image()
        c.start()
        c.attach_xl(img)
        io_clean(c.front('--abi', abi, '--rw', 'randrw', '--bs', '16k',
                         '--iodepth', 8, '--size', 4 * MiB), abi)
    return run


for _abi in ('native', 'x86_32', 'x86_64'):
    test('abi-' + _abi)(abi_test(_abi))


def ring_test(pages):
    def run(c):
        img = c.image()
        c.start()
        c.attach_xl(img)
        rep = c.front('--ring-pages', pages, '--rw', 'randrw', '--bs', '4k',
                      '--iodepth', 64, '--size', 4 * MiB)
        io_clean(rep, '%d-page ring' % pages)
        got = device_of(rep).get('ring_pages')
        check(got == pages, 'asked for %d ring pages, got %s' % (pages, got))
    return run


for _pages in (1, 2, 4, 8, 16):
    test('ring-pages-%d' % _pages)(ring_test(_pages))


@test('logical-block-4k')
def t_lbs_4k(c):
    img = c.image()
    c.start(args=['-blockdev', 'driver=file,filename=%s,node-name=f0' % img,
                  '-blockdev', 'driver=raw,file=f0,node-name=d0',
                  '-device', 'xen-disk,vdev=xvda,drive=d0,'
                  'logical_block_size=4096,physical_block_size=4096'])
    dev = device_of(c.front('--op', 'info'))
    check(dev.get('sector_size') == 4096, 'sector-size %s' %
          dev.get('sector_size'))
    # reconciled blkif: "sectors" counts 512-byte units whatever the size
    check(dev.get('sectors') == 64 * MiB // 512,
          'sectors %s, want %d (512-byte units)' % (dev.get('sectors'),
                                                     64 * MiB // 512))
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 8,
                     '--size', 4 * MiB), '4 KiB-sector disk')


@test('qcow2')
def t_qcow2(c):
    img = c.image(name='disk.qcow2', fmt='qcow2')
    c.start()
    c.attach_xl(img, fmt='qcow2')
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 8,
                     '--size', 4 * MiB), 'qcow2 disk')


@test('nbd-export')
def t_nbd(c):
    """A disk served over NBD: storage beyond one machine's file."""
    sock = os.path.join(c.tmp, 'nbd.sock')
    nbd = subprocess.Popen(['nbdkit', '--foreground', '--unix', sock,
                            '--exit-with-parent', 'memory', '64M'],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        xensim.wait_for(lambda: os.path.exists(sock), 20, 'nbdkit socket')
        c.start()
        c.qemu.qmp.cmd('blockdev-add', driver='nbd', **{'node-name': 'n0'},
                       server={'type': 'unix', 'path': sock})
        c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                       vdev='xvda', drive='n0')
        io_clean(c.front('--rw', 'randrw', '--bs', '16k', '--iodepth', 8,
                         '--size', 8 * MiB), 'NBD-backed disk')
        mapf = os.path.join(c.tmp, 'map')
        c.front('--op', 'write-pattern', '--offset', 0, '--length', 4 * MiB,
                '--map', mapf, '--expect', 'okay')
        c.front('--op', 'verify-region', '--offset', 0, '--length', 4 * MiB,
                '--map', mapf, '--expect', 'okay')
    finally:
        nbd.kill()
        nbd.wait()


@test('two-disks')
def t_two_disks(c):
    a, b = c.image('a.img'), c.image('b.img')
    c.start()
    c.attach_xl(a, vdev='xvda')
    c.attach_xl(b, vdev='xvdb')
    io_clean(c.front('--vdev', 'xvda', '--rw', 'randwrite', '--bs', '4k',
                     '--size', 2 * MiB), 'first disk')
    io_clean(c.front('--vdev', 'xvdb', '--rw', 'randwrite', '--bs', '4k',
                     '--size', 2 * MiB), 'second disk')


@test('xl-detach')
def t_xl_detach(c):
    img = c.image()
    c.start()
    c.attach_xl(img)
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--size', MiB), 'io')
    xl_detach_survived(c)


QDISK_NODE = 'xen-qdisk-51712'


def xl_disk_under_load(c):
    """An xl disk (xvda) with a 2 s load running: the load's process, once
    the backend is Connected.  Skip if the qdisk backend names its block
    node otherwise (upstream's)."""
    img = c.image()
    c.start()
    c.attach_xl(img)
    proc = background_front(c, '--rw', 'randrw', '--bs', '4k', '--iodepth',
                            8, '--size', 4 * MiB, '--runtime', 2)
    wait_connected(c, proc)
    names = [n.get('node-name') for n in
             c.qemu.qmp.cmd('query-named-block-nodes')]
    if QDISK_NODE not in names:
        proc.kill()
        proc.wait()
        raise Skip('the qdisk backend names its nodes otherwise: %s' % names)
    return proc


def iothread_exists(c, name):
    return any(o['name'] == name for o in
               c.qemu.qmp.cmd('qom-list', path='/objects'))


def xl_detach_survived(c):
    """xl detaches xvda: the device goes, and QEMU lives."""
    c.tool('detach', '--domid', 1, '--vdev', 'xvda')
    xensim.wait_for(lambda: not c.qemu.alive() or
                    all('xen-qdisk' not in (b.get('qdev') or '') for b in
                        c.qemu.qmp.cmd('query-block')), 20,
                    'device removed')
    check(c.qemu.alive(), 'QEMU died: %s' % c.qemu.log_text()[-1500:])


@test('xl-detach-export-pinned')
def t_xl_detach_export_pinned(c):
    """xl detaches a disk whose node an NBD export holds in the disk's
    IOThread: the node cannot be deleted, so its IOThread stays (its
    AioContext is the node's); QEMU and the export go on, and both can
    be removed afterwards."""
    proc = xl_disk_under_load(c)
    c.qemu.qmp.cmd('nbd-server-start', addr={
        'type': 'unix', 'data': {'path': os.path.join(c.tmp, 'nbd.sock')}})
    c.qemu.qmp.cmd('block-export-add', type='nbd', id='e0',
                   **{'node-name': QDISK_NODE,
                      'iothread': 'xen-qdisk-iothread-51712',
                      'fixed-iothread': True})
    out, _ = proc.communicate(timeout=60)
    io_clean(parse_json(out), 'I/O while the export was added')
    xl_detach_survived(c)
    check(iothread_exists(c, 'xen-qdisk-iothread-51712'), 'the IOThread '
          'went, while the export holds the node in its AioContext')
    # the export still works in its IOThread, and goes away cleanly
    c.qemu.qmp.cmd('query-block-exports')
    c.qemu.qmp.cmd('block-export-del', id='e0')
    xensim.wait_for(lambda: not c.qemu.qmp.cmd('query-block-exports'), 20,
                    'export removed')
    c.qemu.qmp.cmd('blockdev-del', **{'node-name': QDISK_NODE})
    c.qemu.qmp.cmd('object-del', id='xen-qdisk-iothread-51712')
    c.qemu.qmp.cmd('query-status')
    check(c.qemu.alive(), 'QEMU died: %s' % c.qemu.log_text()[-1500:])


@test('xl-detach-job-running')
def t_xl_detach_job_running(c):
    """xl detaches a disk while a block job (a slow backup) runs on its
    node in the disk's IOThread: the node cannot be deleted, so its
    IOThread stays; QEMU goes on, and the job can still be cancelled."""
    proc = xl_disk_under_load(c)
    c.qemu.qmp.cmd('blockdev-add', driver='null-co', size=64 * MiB,
                   **{'node-name': 'target'})
    c.qemu.qmp.cmd('blockdev-backup', device=QDISK_NODE, target='target',
                   sync='full', speed=65536, **{'job-id': 'j0'})
    out, _ = proc.communicate(timeout=60)
    io_clean(parse_json(out), 'I/O while the backup ran')
    xl_detach_survived(c)
    check(iothread_exists(c, 'xen-qdisk-iothread-51712'), 'the IOThread '
          'went, while the job holds the node in its AioContext')
    c.qemu.qmp.cmd('block-job-cancel', device='j0', force=True)
    xensim.wait_for(lambda: not c.qemu.alive() or
                    not c.qemu.qmp.cmd('query-block-jobs'), 20,
                    'job cancelled')
    check(c.qemu.alive(), 'QEMU died: %s' % c.qemu.log_text()[-1500:])
    c.qemu.qmp.cmd('blockdev-del', **{'node-name': QDISK_NODE})
    c.qemu.qmp.cmd('query-status')
    check(c.qemu.alive(), 'QEMU died: %s' % c.qemu.log_text()[-1500:])


# ---- Beyond upstream: indirect, multi-queue, persistent grants ----

BE = '/local/domain/0/backend/qdisk/1/51712'


def offered(c, node):
    """A backend feature node as an int (0 when absent)."""
    value = c.xs_read(BE + '/' + node)
    return int(value) if value and value.isdigit() else 0


def stats_of(c, dev_id='dev-xvda'):
    return c.qemu.qmp.cmd('qom-get', path='/machine/peripheral/' + dev_id,
                          property='statistics')


def matrix_test(abi):
    """Every combination a frontend may choose, with verified I/O."""
    def run(c):
        img = c.image()
        c.start()
        c.attach_xl(img)
        c.front('--op', 'info')     # let the backend publish its features
        max_q = offered(c, 'multi-queue-max-queues') or 1
        max_ind = offered(c, 'feature-max-indirect-segments')
        pers = offered(c, 'feature-persistent')
        for queues in (1, 2, 4):
            for indirect in (0, 256):
                for persistent in (False, True):
                    what = 'queues=%d indirect=%d persistent=%s' % (
                        queues, indirect, persistent)
                    args = ['--abi', abi, '--ring-pages', 4, '--queues',
                            queues, '--indirect', indirect, '--rw', 'randrw',
                            '--bs', '64k', '--iodepth', 8, '--size',
                            4 * MiB]
                    if persistent:
                        args.append('--persistent')
                    rep = c.front(*args)
                    io_clean(rep, what)
                    d = device_of(rep)
                    check(d.get('queues') == min(queues, max_q),
                          '%s: %s queues' % (what, d.get('queues')))
                    check(bool(d.get('indirect')) == bool(indirect and
                                                          max_ind),
                          '%s: indirect %s' % (what, d.get('indirect')))
                    check(bool(d.get('persistent')) == (persistent and
                                                        bool(pers)),
                          '%s: persistent %s' % (what, d.get('persistent')))
    return run


for _abi in ('native', 'x86_32', 'x86_64'):
    test('matrix-' + _abi)(matrix_test(_abi))


@test('ring-more-than-offered')
def t_ring_more_than_offered(c):
    img = c.image()
    c.start()
    c.attach_qmp(img, vdev='xvda', **{'max-ring-page-order': 1})
    rep = c.front('--ring-pages', 16, '--rw', 'randrw', '--bs', '4k',
                  '--iodepth', 8, '--size', 2 * MiB)
    io_clean(rep, 'asking for 16 ring pages where 2 are offered')
    check(device_of(rep).get('ring_pages') == 2, 'got %s ring pages' %
          device_of(rep).get('ring_pages'))
    rep = c.front('--op', 'info', '--xs-set', 'ring-page-order=2', ok=False)
    check(not rep.get('ok'), 'connected with 4 ring pages where 2 were '
          'offered')


@test('bad-protocol-log-escaped')
def t_bad_protocol_log_escaped(c):
    """A protocol name is the guest's text: the log line that refuses it
    must not let the guest forge lines or send terminal escapes."""
    img = c.image()
    c.start()
    c.attach_qmp(img, vdev='xvda')
    forged = 'x\nFORGED: host disk failing\n\x1b[2J' + 'y' * 500
    c.front('--op', 'info', '--xs-set', 'protocol=' + forged, ok=False)
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--size', MiB),
             'a good connection after the bad protocol')
    log = c.qemu.log_text()
    check("unknown protocol 'x\\nFORGED" in log, 'the refusal is not in '
          'the log, escaped')
    check('\x1b' not in log, 'an escape character reached the log')
    check(not any(line.startswith('FORGED') for line in log.splitlines()),
          'the guest forged a log line')
    check('y' * 100 not in log, 'the whole name reached the log')


@test('queues-more-than-offered')
def t_queues_more_than_offered(c):
    img = c.image()
    c.start()
    try:
        c.attach_qmp(img, vdev='xvda', **{'multi-queue-max-queues': 2})
    except xensim.QMPError as e:
        raise Skip('no multi-queue: %s' % e)
    rep = c.front('--queues', 8, '--rw', 'randrw', '--bs', '4k',
                  '--iodepth', 8, '--size', 2 * MiB)
    io_clean(rep, 'asking for 8 queues where 2 are offered')
    check(device_of(rep).get('queues') == 2, 'got %s queues' %
          device_of(rep).get('queues'))
    # a frontend that takes more queues than offered is refused
    rep = c.front('--op', 'info', '--xs-set', 'multi-queue-num-queues=3',
                  ok=False)
    check(not rep.get('ok'), 'connected with 3 queues where 2 were offered')
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--size', MiB),
             'a good connection after the refused one')


@test('write-barrier')
def t_write_barrier(c):
    img = c.image()
    c.start()
    try:
        c.attach_qmp(img, vdev='xvda', **{'feature-barrier': True})
    except xensim.QMPError as e:
        raise Skip('no feature-barrier: %s' % e)
    c.front('--op', 'info')
    check(offered(c, 'feature-barrier') == 1, 'feature-barrier not offered')
    # an empty barrier, and one with data, amid ordinary writes
    rep = c.front('--hostile', 'req',
                  '--req', 'op=1,nr_segments=1,sector=64,seg0=buf:1:0:7,'
                  'expect=okay',
                  '--req', 'op=2,nr_segments=0,expect=okay',
                  '--req', 'op=2,nr_segments=1,sector=0,seg0=buf:0:0:7,'
                  'expect=okay',
                  '--req', 'op=1,nr_segments=1,sector=8,seg0=buf:2:0:7,'
                  'expect=okay')
    check(rep.get('ok'), 'barrier requests: %s' % summary(rep))
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 16,
                     '--size', 2 * MiB), 'I/O after barriers')


def blockstats(c):
    """query-blockstats' counters, summed over the (one) disk."""
    total = {}
    for d in c.qemu.qmp.cmd('query-blockstats'):
        for k, v in d['stats'].items():
            if isinstance(v, int):
                total[k] = total.get(k, 0) + v
    return total


@test('blockstats-accounting')
def t_blockstats_accounting(c):
    """query-blockstats counts each stage as what it is: a flush with data
    is a flush and a write of its data, a barrier two flushes and a write,
    a discard its bytes, a write from a revoked grant an invalid write, an
    unknown operation nothing."""
    img = c.image()
    c.start()
    c.qemu.qmp.cmd('blockdev-add', driver='raw', discard='unmap',
                   **{'node-name': 'd0'},
                   file={'driver': 'file', 'filename': img,
                         'discard': 'unmap'})
    try:
        c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                       vdev='xvda', drive='d0', **{'feature-barrier': True})
    except xensim.QMPError as e:
        raise Skip('no feature-barrier: %s' % e)
    c.front('--op', 'info')

    def step(spec, want):
        before = blockstats(c)
        rep = c.front('--hostile', 'req', '--req', spec)
        check(rep.get('ok'), '%s: %s' % (spec, summary(rep)))
        after = blockstats(c)
        got = {k: after.get(k, 0) - before.get(k, 0) for k in want}
        check(got == want, '%s: counted %s, expected %s' % (spec, got, want))

    step('op=3,nr_segments=1,sector=0,seg0=buf:0:0:7,expect=okay',
         {'flush_operations': 1, 'wr_operations': 1, 'wr_bytes': 4096,
          'invalid_wr_operations': 0})
    step('op=2,nr_segments=1,sector=8,seg0=buf:1:0:7,expect=okay',
         {'flush_operations': 2, 'wr_operations': 1, 'wr_bytes': 4096})
    step('op=5,sector=0,nr_sectors=2048,expect=okay',
         {'unmap_operations': 1, 'unmap_bytes': MiB})
    step('op=1,nr_segments=1,sector=0,seg0=revoked:0:7,expect=error',
         {'wr_operations': 0, 'wr_bytes': 0, 'invalid_wr_operations': 1})
    # an operation the protocol does not have is no kind of I/O
    step('op=33,nr_segments=0,expect=eopnotsupp',
         {'invalid_rd_operations': 0, 'invalid_wr_operations': 0,
          'invalid_flush_operations': 0, 'invalid_unmap_operations': 0})


@test('invalid-request-flood')
def t_invalid_flood(c):
    """A million invalid requests: each answered, the log stays quiet."""
    img = c.image()
    c.start()
    c.attach_xl(img)
    past_end = 64 * MiB // 512 + 1000
    count = 1000000
    start = time.monotonic()
    rep = c.front('--hostile', 'req', '--count', count, '--req',
                  'op=0,nr_segments=1,sector=%d,seg0=buf:0:0:7,'
                  'expect=error' % past_end, timeout=600)
    elapsed = time.monotonic() - start
    h = rep.get('hostile', {})
    check(h.get('answered') == count and h.get('mismatches') == 0,
          'answered %s of %d, %s wrong' % (h.get('answered'), count,
                                            h.get('mismatches')))
    with open(c.qemu.logfile, errors='replace') as f:
        lines = [l for l in f
                 if 'access' in l or 'beyond' in l or 'xen-block' in l]
    # the first is logged, then at most about one line a second
    check(1 <= len(lines) <= int(elapsed) + 2,
          '%d log lines for %d requests in %.1f s' % (len(lines), count,
                                                      elapsed))


@test('persistent-steady-state')
def t_persistent(c):
    img = c.image()
    c.start()
    c.attach_qmp(img, vdev='xvda')
    c.front('--op', 'info')
    if not offered(c, 'feature-persistent'):
        raise Skip('the backend does not offer feature-persistent')
    before = c.sim.stats(1)
    rep = c.front('--persistent', '--rw', 'randread', '--bs', '4k',
                  '--iodepth', 16, '--size', 16 * MiB, '--verify', 'off')
    after = c.sim.stats(1)
    ios = rep.get('ios', 0)
    copies = after['copy_segments'] - before['copy_segments']
    maps = after['maps'] - before['maps']
    check(device_of(rep).get('persistent'), 'persistent grants not used')
    # after warm-up: no grant copy and no map per request
    check(copies == 0, '%d grant-copy segments for %d reads' % (copies, ios))
    check(maps < ios / 8, '%d grants mapped for %d reads' % (maps, ios))
    st = stats_of(c)[0]
    check(st['persistent-hits'] >= ios - maps,
          'persistent hits %d for %d reads' % (st['persistent-hits'], ios))
    # and without persistent grants every read is a grant copy
    before = after
    rep = c.front('--rw', 'randread', '--bs', '4k', '--iodepth', 16,
                  '--size', 4 * MiB, '--verify', 'off')
    copies = c.sim.stats(1)['copy_segments'] - before['copy_segments']
    check(copies >= rep.get('ios', 1),
          '%d grant copies for %d reads without persistent grants' %
          (copies, rep.get('ios', 0)))


@test('persistent-over-cap')
def t_persistent_over_cap(c):
    """A working set larger than max-persistent-grants: no map churn."""
    cap = 64
    img = c.image()
    c.start()
    try:
        c.attach_qmp(img, vdev='xvda', **{'max-persistent-grants': cap})
    except xensim.QMPError as e:
        raise Skip('no max-persistent-grants: %s' % e)
    # 8 requests of 16 pages in flight: about 136 pages in use, twice the cap
    rep = c.front('--persistent', '--rw', 'randread', '--bs', '64k',
                  '--iodepth', 8, '--size', 32 * MiB, '--verify', 'off')
    io_clean(rep, 'reads over the cap')
    check(device_of(rep).get('persistent'), 'persistent grants not used')
    st = stats_of(c)[0]
    # the cap's worth stays mapped, the rest is copied; unmapping and
    # mapping again on every miss would map thousands
    check(st['grant-maps'] <= 2 * cap,
          '%d grants mapped (%d unmapped) for %d reads with a cap of %d' %
          (st['grant-maps'], st['grant-unmaps'], rep.get('ios', 0), cap))


@test('persistent-map-budget')
def t_persistent_map_budget(c):
    """However many queues and disks a guest uses, QEMU keeps at most half
    of vm.max_map_count persistent mappings (each is a memory area of its
    own; past the kernel's cap every mmap fails and QEMU aborts)."""
    with open('/proc/sys/vm/max_map_count') as f:
        budget = int(f.read()) // 2
    disks, queues, cap = 3, 16, 1056
    if disks * queues * cap <= budget:
        raise Skip('vm.max_map_count is too large to reach from here')
    c.start()
    try:
        for d in range(disks):
            c.qemu.qmp.cmd('blockdev-add', driver='null-co',
                           size=256 * MiB, **{'node-name': 'n%d' % d,
                                              'read-zeroes': True})
            c.qemu.qmp.cmd('device_add', driver='xen-disk',
                           id='dev-xvd' + 'abc'[d], vdev='xvd' + 'abc'[d],
                           drive='n%d' % d,
                           **{'multi-queue-max-queues': queues,
                              'max-persistent-grants': cap})
    except xensim.QMPError as e:
        raise Skip('no multi-queue or max-persistent-grants: %s' % e)
    # 1280 pages per guest disk, spread over 16 queues that each map up to
    # the cap: 3 x 16 x 1056 mappings wanted, above the budget
    procs = [background_front(c, '--vdev', 'xvd' + 'abc'[d], '--persistent',
                              '--queues', queues, '--indirect', 256, '--rw',
                              'randread', '--bs', '1M', '--iodepth', 5,
                              '--runtime', 8, '--verify', 'off')
             for d in range(disks)]
    most = [0]

    def maps_now():
        # one read of the process's own count: the per-queue counters,
        # read one disk after another while the queues map and unmap,
        # add up to more than was ever alive at once
        return c.qemu.qmp.cmd('qom-get', path='/machine/peripheral/dev-xvda',
                              property='persistent-maps')

    def mapped_now():
        most[0] = max(most[0], maps_now()['mapped'])
        return all(p.poll() is not None for p in procs)
    try:
        told = maps_now()['budget']
        check(told == budget, 'the budget is %d, not half of '
              'vm.max_map_count (%d)' % (told, budget))
        xensim.wait_for(mapped_now, 120, 'the frontends to finish')
    finally:
        for p in procs:
            p.kill()
            p.wait()
    check(c.qemu.alive(), 'QEMU died: %s' % c.qemu.log_text()[-1500:])
    check(most[0] <= budget, '%d persistent mappings alive at once, over '
          'the budget of %d' % (most[0], budget))
    check(most[0] >= budget // 2, 'only %d mappings at most: the load did '
          'not reach the budget (%d)' % (most[0], budget))
    # the frontends are gone: every mapping is undone, and the process's
    # count agrees with what the queues say they mapped and unmapped
    left = {}

    def all_unmapped():
        left['queues'] = sum(q['grant-maps'] - q['grant-unmaps']
                             for d in range(disks)
                             for q in stats_of(c, 'dev-xvd' + 'abc'[d]))
        left['process'] = maps_now()['mapped']
        return left['queues'] == 0 and left['process'] == 0
    try:
        xensim.wait_for(all_unmapped, 20, 'the mappings undone')
    except xensim.Timeout:
        raise Failure('after the frontends left, %(queues)d mappings by the '
                      'queues\' counters, %(process)d by the process\'s'
                      % left)


@test('properties-out-of-range')
def t_properties_out_of_range(c):
    """Limits an administrator can get wrong are refused at device_add,
    not wrapped around or clamped in silence."""
    img = c.image()
    c.start()
    c.qemu.qmp.cmd('blockdev-add', driver='raw', **{'node-name': 'd0'},
                   file={'driver': 'file', 'filename': img})
    # (the first one is what the rest need: the stock QEMU skips here)
    bad = {'max-persistent-grants': 0x80000000, 'max-ring-page-order': 5,
           'multi-queue-max-queues': 0, 'max-indirect-segments': 100000}
    for prop, value in bad.items():
        try:
            c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                           vdev='xvda', drive='d0', **{prop: value})
        except xensim.QMPError as e:
            if 'not found' in str(e):
                raise Skip('no %s: %s' % (prop, e))
            continue
        raise Failure('device_add with %s=%s accepted' % (prop, value))
    c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                   vdev='xvda', drive='d0')
    c.front('--op', 'info')


@test('indirect-1m-single-request')
def t_indirect_1m(c):
    img = c.image()
    c.start()
    c.attach_qmp(img, vdev='xvda')
    c.front('--op', 'info')
    if offered(c, 'feature-max-indirect-segments') < 256:
        raise Skip('the backend does not offer 256 indirect segments')
    mapf = os.path.join(c.tmp, 'map')
    c.front('--indirect', 256, '--op', 'write-pattern', '--offset', MiB,
            '--length', MiB, '--map', mapf, '--expect', 'okay')
    before = stats_of(c)[0]
    io_clean(c.front('--indirect', 256, '--rw', 'read', '--bs', '1M',
                     '--offset', MiB, '--size', MiB, '--map', mapf),
             '1 MiB read')
    after = stats_of(c)[0]
    check(after['requests'] - before['requests'] == 1,
          'a 1 MiB read took %d ring requests' %
          (after['requests'] - before['requests']))
    check(after['segments'] - before['segments'] == 256,
          'a 1 MiB read had %d segments' %
          (after['segments'] - before['segments']))


@test('queues-4-iothreads')
def t_queues_iothreads(c):
    img = c.image()
    args = []
    for i in range(4):
        args += ['-object', 'iothread,id=io%d' % i]
    c.start(args=args)
    c.qemu.qmp.cmd('blockdev-add', driver='raw', **{'node-name': 'd0'},
                   file={'driver': 'file', 'filename': img})
    try:
        c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                       vdev='xvda', drive='d0',
                       **{'iothread-vq-mapping': [{'iothread': 'io%d' % i}
                                                  for i in range(4)]})
    except xensim.QMPError as e:
        raise Skip('no iothread-vq-mapping: %s' % e)
    rep = c.front('--queues', 4, '--rw', 'randrw', '--bs', '4k',
                  '--iodepth', 32, '--size', 8 * MiB)
    io_clean(rep, '4 queues')
    check(device_of(rep).get('queues') == 4, 'negotiated %s queues' %
          device_of(rep).get('queues'))
    st = stats_of(c)
    check(len(st) == 4, 'statistics for %d queues' % len(st))
    for q in st:
        check(q['requests'] > 0, 'queue %d served nothing' % q['queue'])
    check(sorted(q['iothread'] for q in st) == ['io0', 'io1', 'io2', 'io3'],
          'queues ran in %s' % [q['iothread'] for q in st])

@test('queues-16-indirect-4096')
def t_queues_16_indirect_4096(c):
    """The most a guest may ask for at once: 16 rings of 4 pages each,
    4096-segment indirect requests (16 MiB in one ring request) and
    persistent grants, with verified data: large requests, then small
    ones spread over every ring."""
    img = c.image()
    c.start()
    try:
        c.attach_qmp(img, **{'multi-queue-max-queues': 16,
                             'max-ring-page-order': 2,
                             'max-indirect-segments': 4096})
    except xensim.QMPError as e:
        raise Skip('no multi-queue or 4096 indirect segments: %s' % e)
    ring = ('--queues', 16, '--ring-pages', 4, '--indirect', 4096,
            '--persistent')
    rep = c.front(*ring, '--rw', 'randrw', '--bs', '16M', '--iodepth', 2,
                  '--size', 64 * MiB)
    io_clean(rep, '16 MiB requests on 16 queues')
    dev = device_of(rep)
    check(dev.get('queues') == 16 and dev.get('max_segs') == 4096,
          'negotiated %s queues of %s segments' % (dev.get('queues'),
                                                  dev.get('max_segs')))
    io_clean(c.front(*ring, '--rw', 'randrw', '--bs', '4k', '--iodepth', 64,
                     '--size', 8 * MiB), '4 KiB requests on 16 queues')
    st = stats_of(c)
    check(len(st) == 16 and all(q['requests'] > 0 for q in st),
          'requests per queue: %s' % [q['requests'] for q in st])


def polled_scans(c, what, path='/machine/peripheral/dev-xvda'):
    """Passes over the ring that IOThread polling started, over all queues
    (a backend without counters cannot show polling: skip)."""
    try:
        st = c.qemu.qmp.cmd('qom-get', path=path, property='statistics')
    except xensim.QMPError as e:
        raise Skip('no statistics to tell polling apart: %s' % e)
    check(st and 'polled-scans' in st[0], '%s: no polled-scans counter in '
          '%s' % (what, st))
    return sum(q['polled-scans'] for q in st)


@test('iothread-polling')
def t_iothread_polling(c):
    """An IOThread's poll-max-ns is honoured: with it, some passes over the
    ring start from polling, not from a notification; with 0, none do.
    (A handler that cannot be polled turns polling off for its whole
    IOThread: upstream's xen-bus registers one.)"""
    img = c.image()
    c.start(args=['-object', 'iothread,id=io0,poll-max-ns=10000000'])
    c.attach_qmp(img, iothread='io0')
    load = ('--rw', 'randrw', '--bs', '4k', '--iodepth', 1, '--size',
            2 * MiB)
    io_clean(c.front(*load), 'polling on')
    polled = polled_scans(c, 'polling on')
    check(polled > 0, 'no pass over the ring started from polling '
          '(poll-max-ns=10 ms, 512 I/Os at iodepth 1)')
    c.qemu.qmp.cmd('qom-set', path='/objects/io0', property='poll-max-ns',
                   value=0)
    io_clean(c.front(*load), 'polling off')
    check(polled_scans(c, 'polling off') == polled,
          'passes started from polling with poll-max-ns=0')


def repeat_during_load(c, proc, most, seconds, action):
    """Once the background frontend @proc is connected, action(i) again
    and again: at most @most times, for at most @seconds (less than the
    frontend's runtime, so that none lands in its disconnection), and not
    after it ends.  Returns how many times and the frontend's report."""
    wait_connected(c, proc)
    done = 0
    until = time.monotonic() + seconds
    try:
        while (proc.poll() is None and done < most and
               time.monotonic() < until):
            action(done)
            done += 1
        out, err = proc.communicate(timeout=60)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return done, parse_json(out)


@test('iothread-polling-drains')
def t_iothread_polling_drains(c):
    """Drains while a polling IOThread serves the disk: the handler is
    taken off and put back, maybe in the middle of polling, when the
    passes do not ask for notifications.  Every request is answered: the
    handler put back is not polled until its event fires once, so the
    first pass after a drain must ask for events again, or the load
    stalls.  A new connection afterwards is served too."""
    size = 64 * MiB
    img = c.image(size=size)
    c.start(args=['-object', 'iothread,id=io0,poll-max-ns=10000000'])
    c.attach_qmp(img, iothread='io0')
    proc = background_front(c, '--rw', 'randrw', '--bs', '4k',
                            '--iodepth', 2, '--runtime', 4,
                            '--deadline', 5)
    # A resize drains the disk, the same size too.  (Not throttling on and
    # off: turning throttling on for a disk in an IOThread races with its
    # requests in QEMU 10.0's block layer, and crashes stock and ours
    # alike: see docs/deploying.rst.)
    drains, rep = repeat_during_load(
        c, proc, 200, 3, lambda i: c.qemu.qmp.cmd(
            'block_resize', **{'node-name': 'd0'}, size=size))
    io_clean(rep, 'I/O across %d drains' % drains)
    check(drains > 0, 'no drain happened during the load')
    # The disk still serves a new connection after the drains.
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 1,
                     '--size', 64 * 1024, '--deadline', 5),
             'after the drains')
    check(c.qemu.alive(), 'QEMU died: %s' % c.qemu.log_text()[-1500:])


@test('throttle-filter-iothread')
def t_throttle_filter_iothread(c):
    """I/O limits on a disk in an IOThread the way deploying.rst gives
    them, a throttle filter node: served with verified data while the
    limits change under load.  The limits are far below what the load
    asks for, so requests wait in the filter and its timers, in the
    IOThread, release them."""
    img = c.image()
    c.start(args=['-object', 'iothread,id=io0', '-object',
                  'throttle-group,id=tg0,x-iops-total=500'])
    c.qemu.qmp.cmd('blockdev-add', driver='raw', **{'node-name': 'd0'},
                   file={'driver': 'file', 'filename': img})
    c.qemu.qmp.cmd('blockdev-add', driver='throttle', file='d0',
                   **{'node-name': 't0', 'throttle-group': 'tg0'})
    c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                   vdev='xvda', drive='t0', iothread='io0')
    root = [b['inserted']['node-name'] for b in
            c.qemu.qmp.cmd('query-block') if b.get('qdev') and
            'dev-xvda' in b['qdev']]
    check(root == ['t0'], 'the disk is served from %s, not the throttle '
          'node' % root)
    proc = background_front(c, '--rw', 'randrw', '--bs', '4k',
                            '--iodepth', 4, '--runtime', 3)
    changes, rep = repeat_during_load(
        c, proc, 100, 2, lambda i: c.qemu.qmp.cmd(
            'qom-set', path='/objects/tg0', property='limits',
            value={'iops-total': 500 + 1000 * (i % 2)}))
    io_clean(rep, 'I/O across %d limit changes' % changes)
    check(changes > 0, 'no limit changed during the load')
    check(c.qemu.alive(), 'QEMU died: %s' % c.qemu.log_text()[-1500:])


@test('qdisk-iothread-no-polling')
def t_qdisk_iothread_no_polling(c):
    """The IOThread the qdisk backend makes for an xl disk does not spin:
    a backend domain's CPUs serve every guest."""
    img = c.image()
    c.start()
    c.attach_xl(img)
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 1,
                     '--size', 2 * MiB), 'xl disk')
    qdev = [b['qdev'] for b in c.qemu.qmp.cmd('query-block')
            if b.get('qdev')]
    check(len(qdev) == 1, 'the xl disk is not one device: %s' % qdev)
    check(polled_scans(c, 'xl disk', path=qdev[0]) == 0,
          'the qdisk IOThread polled')


# ---- Nothing lost: SIGKILL on qcow2, reconnect and replug soaks ----

def soak_count(name, ci_default):
    """Cycles of a soak: small in CI, XBLK_SOAK_<NAME>=N on demand."""
    return int(os.environ.get('XBLK_SOAK_' + name, ci_default))


@test('sigkill-qcow2-flushed-writes')
def t_sigkill_qcow2(c):
    """Writes acknowledged before an acknowledged flush survive SIGKILL."""
    img = c.image(name='disk.qcow2', fmt='qcow2')
    mapf = os.path.join(c.tmp, 'map')
    c.start()
    c.attach_qmp(img, fmt='qcow2')
    # qcow2 keeps its L2 tables in QEMU's memory until a flush: new
    # clusters written and not flushed are lost with the process
    c.front('--op', 'write-pattern', '--offset', 0, '--length', 8 * MiB,
            '--bs', '64k', '--map', mapf, '--expect', 'okay')
    c.front('--op', 'flush', '--expect', 'okay')
    c.front('--op', 'write-pattern', '--offset', 32 * MiB, '--length',
            8 * MiB, '--bs', '64k', '--expect', 'okay')
    c.qemu.kill()
    c.sim.stop()
    r = subprocess.run(['qemu-img', 'check', '-f', 'qcow2', img],
                       capture_output=True, text=True)
    # leaked clusters are allowed after a crash; corruption is not
    check(r.returncode in (0, 3), 'qemu-img check: %s' % r.stdout[-500:])
    c.start()
    c.attach_qmp(img, fmt='qcow2')
    c.front('--op', 'verify-region', '--offset', 0, '--length', 8 * MiB,
            '--bs', '64k', '--map', mapf, '--expect', 'okay')


@test('soak-reconnect')
def t_soak_reconnect(c):
    """Close and reconnect under verified I/O, many times."""
    n = soak_count('RECONNECTS', 100)
    img = c.image()
    c.start(args=['-object', 'iothread,id=io0'])
    c.attach_qmp(img, iothread='io0')
    rep = c.front('--reconnect', n, '--rw', 'randrw', '--bs', '16k',
                  '--iodepth', 8, '--size', 256 * 1024, '--offset', 0,
                  '--queues', 2, '--persistent', '--indirect', 32,
                  '--map', os.path.join(c.tmp, 'map'), timeout=60 + n)
    io_clean(rep, '%d reconnects' % n)
    check(rep.get('cycles') == n, 'cycles %s of %d' % (rep.get('cycles'), n))


@test('soak-unplug-replug')
def t_soak_replug(c):
    """device_del and device_add between verified workloads."""
    n = soak_count('REPLUGS', 20)
    img = c.image()
    mapf = os.path.join(c.tmp, 'map')
    c.start()
    c.qemu.qmp.cmd('blockdev-add', driver='raw', **{'node-name': 'd0'},
                   file={'driver': 'file', 'filename': img})
    for i in range(n):
        c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                       vdev='xvda', drive='d0')
        # what earlier cycles wrote is read back as the map says
        io_clean(c.front('--rw', 'randrw', '--bs', '8k', '--iodepth', 8,
                         '--size', 512 * 1024, '--offset', 0, '--map', mapf,
                         '--seed', i + 1), 'cycle %d' % i)
        c.qemu.qmp.cmd('device_del', id='dev-xvda')
        c.qemu.qmp.wait_event('DEVICE_DELETED', timeout=20)
    c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                   vdev='xvda', drive='d0')
    c.front('--op', 'verify-region', '--offset', 0, '--length', 4 * MiB,
            '--bs', '64k', '--map', mapf, '--expect', 'okay')


# ---- I/O faults: blkdebug errors, the rerror/werror policies ----

BAD = 8 * MiB                   # where blkdebug's errors are aimed


def faulty_disk(c, rules, img=None, args=(), **props):
    """xvda on a raw image under blkdebug with these inject-error rules."""
    img = img or c.image()
    c.start(args=args)
    c.qemu.qmp.cmd('blockdev-add', driver='raw', discard='unmap',
                   **{'node-name': 'd0'},
                   file={'driver': 'blkdebug', 'inject-error': rules,
                         'image': {'driver': 'file', 'filename': img}})
    try:
        c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                       vdev='xvda', drive='d0', **props)
    except xensim.QMPError as e:
        if props:
            raise Skip('no %s: %s' % ('/'.join(props), e))
        raise
    return img


def rule(event, iotype, errno=5, **more):
    return dict(event=event, iotype=iotype, errno=errno, **more)


def still_serves(c, mapf):
    """After the errors: verified I/O away from BAD, QEMU running."""
    io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 8,
                     '--size', 2 * MiB, '--offset', 16 * MiB, '--map', mapf),
             'I/O after the injected errors')
    check(c.qemu.qmp.cmd('query-status')['status'] == 'running',
          'the VM is not running after reported errors')


@test('fault-read-eio')
def t_fault_read(c):
    faulty_disk(c, [rule('read_aio', 'read', sector=BAD // 512)])
    mapf = os.path.join(c.tmp, 'map')
    c.front('--op', 'write-pattern', '--offset', BAD - MiB, '--length',
            2 * MiB, '--bs', '64k', '--map', mapf)
    for _ in range(2):          # every time, not once
        c.front('--op', 'read', '--offset', BAD, '--length', 4096,
                '--expect', 'error', '--verify', 'off')
    c.front('--op', 'verify-region', '--offset', BAD - MiB, '--length', MiB,
            '--bs', '64k', '--map', mapf)
    still_serves(c, mapf)


@test('fault-write-eio')
def t_fault_write(c):
    img = faulty_disk(c, [rule('write_aio', 'write', sector=BAD // 512)])
    mapf = os.path.join(c.tmp, 'map')
    c.front('--op', 'write', '--offset', BAD, '--length', 4096,
            '--expect', 'error')
    c.front('--op', 'write-pattern', '--offset', BAD - MiB, '--length', MiB,
            '--bs', '64k', '--map', mapf)
    c.front('--op', 'verify-region', '--offset', BAD - MiB, '--length', MiB,
            '--bs', '64k', '--map', mapf)
    with open(img, 'rb') as f:
        f.seek(BAD)
        check(f.read(4096) == bytes(4096), 'the failed write reached the '
              'image')
    still_serves(c, mapf)


@test('fault-flush-eio')
def t_fault_flush(c):
    faulty_disk(c, [rule('flush_to_disk', 'flush')])
    mapf = os.path.join(c.tmp, 'map')
    # a write first: a flush with nothing written may not reach the disk
    c.front('--op', 'write-pattern', '--offset', 0, '--length', 64 * 1024,
            '--map', mapf)
    c.front('--op', 'flush', '--expect', 'error')
    c.front('--op', 'verify-region', '--offset', 0, '--length', 64 * 1024,
            '--map', mapf)
    still_serves(c, mapf)


@test('fault-discard-eio')
def t_fault_discard(c):
    # blkdebug arms its rules on an event: a write's arms this one
    faulty_disk(c, [rule('write_aio', 'discard')])
    mapf = os.path.join(c.tmp, 'map')
    rep = c.front('--op', 'write-pattern', '--offset', BAD, '--length',
                  MiB, '--bs', '64k', '--map', mapf)
    if not device_of(rep).get('feature_discard'):
        raise Skip('the backend offers no discard on this node')
    c.front('--op', 'discard', '--offset', BAD, '--length', 64 * 1024,
            '--expect', 'error', '--map', mapf)
    c.front('--op', 'verify-region', '--offset', BAD, '--length', MiB,
            '--bs', '64k', '--map', mapf)
    still_serves(c, mapf)


@test('fault-ignore')
def t_fault_ignore(c):
    """rerror=ignore, werror=ignore: errors answered OKAY, as asked."""
    faulty_disk(c, [rule('read_aio', 'read', sector=BAD // 512),
                    rule('write_aio', 'write', sector=BAD // 512)],
                rerror='ignore', werror='ignore')
    c.front('--op', 'write', '--offset', BAD, '--length', 4096,
            '--expect', 'okay', '--verify', 'off')
    c.front('--op', 'read', '--offset', BAD, '--length', 4096,
            '--expect', 'okay', '--verify', 'off')
    still_serves(c, os.path.join(c.tmp, 'map'))


@test('fault-ignore-flush-with-data')
def t_fault_ignore_flush_data(c):
    """werror=ignore on a flush that carries data: the flush's error is
    ignored, not the write that follows it."""
    img = c.image()
    with open(img, 'r+b') as f:
        f.seek(BAD)
        f.write(b'\xaa' * 4096)
    faulty_disk(c, [rule('flush_to_disk', 'flush')], img=img,
                werror='ignore')
    # a write first: a flush with nothing written may not reach the disk
    c.front('--op', 'write', '--offset', 0, '--length', 4096,
            '--verify', 'off')
    # our buffer page is zeros: written, it replaces the 0xaa
    rep = c.front('--hostile', 'req', '--req',
                  'op=3,nr_segments=1,sector=%d,seg0=buf:0:0:7,expect=okay'
                  % (BAD // 512))
    check(rep.get('ok'), 'flush with data: %s' % summary(rep))
    with open(img, 'rb') as f:
        f.seek(BAD)
        check(f.read(4096) == bytes(4096), 'the data of a flush whose '
              'error was ignored did not reach the image')
    still_serves(c, os.path.join(c.tmp, 'map'))


def wait_io_error_stop(c):
    xensim.wait_for(
        lambda: c.qemu.qmp.cmd('query-status')['status'] == 'io-error', 30,
        'the VM stopped on the I/O error')


def finish_after_cont(c, proc, what):
    """QMP cont; the parked requests complete; the frontend's report."""
    c.qemu.qmp.cmd('cont')
    out, err = proc.communicate(timeout=120)
    rep = parse_json(out)
    check(proc.returncode == 0, '%s: the frontend failed after cont: %s %s'
          % (what, err[-800:], summary(rep)))
    # each request answered once: no response for an id not in flight
    bogus = sum(r.get('bogus', 0) for r in rep.get('rings', []))
    check(bogus == 0, '%s: %d responses for requests not in flight (answered '
          'twice?)' % (what, bogus))
    return rep


def background_writes(c, offset, size, mapf, iodepth=16, bs='64k'):
    return background_front(c, '--rw', 'write', '--bs', bs, '--iodepth',
                            iodepth, '--offset', offset, '--size', size,
                            '--map', mapf, '--deadline', 90)


@test('fault-werror-stop-retry')
def t_fault_stop_retry(c):
    """werror=stop: the failed write is parked, unanswered, until cont."""
    faulty_disk(c, [rule('write_aio', 'write', sector=BAD // 512,
                         once=True)], werror='stop')
    mapf = os.path.join(c.tmp, 'map')
    proc = background_writes(c, BAD - MiB, 2 * MiB, mapf)
    wait_io_error_stop(c)
    check(proc.poll() is None, 'the frontend finished while a write was '
          'parked (it was answered)')
    rep = finish_after_cont(c, proc, 'werror=stop')
    io_clean(rep, 'writes across the failed sector after cont')
    check(rep.get('ios') == 2 * MiB // (64 * 1024),
          'expected %d writes, %s' % (2 * MiB // (64 * 1024), rep.get('ios')))
    c.front('--op', 'verify-region', '--offset', BAD - MiB, '--length',
            2 * MiB, '--bs', '64k', '--map', mapf)
    still_serves(c, mapf)


@test('fault-stop-retry-fails-again')
def t_fault_stop_retry_fails_again(c):
    """werror=stop, and the retry after cont fails again at once (an error
    the storage gives before any wait, as for writes past the end of a
    shrunk disk): the requests are parked again, once each; cont answers
    and the VM stops again, rather than the retry going round the list of
    parked requests for ever."""
    faulty_disk(c, [rule('write_aio', 'write', immediately=True)],
                werror='stop')
    proc = background_writes(c, 0, 2 * MiB, os.path.join(c.tmp, 'map'),
                             iodepth=8)
    try:
        wait_io_error_stop(c)
        wait_or_kill(proc, lambda: stat_total(c, 'requests') >= 8 or
                     proc.poll() is not None, 30, 'writes parked')
        for i in range(3):
            c.qemu.qmp.cmd('cont', timeout=10)
            wait_io_error_stop(c)
        errors = [e for e in c.qemu.qmp.events
                  if e.get('event') == 'BLOCK_IO_ERROR']
        check(len(errors) < 1000, '%d BLOCK_IO_ERROR events for 3 cont' %
              len(errors))
    finally:
        proc.kill()
        proc.wait()
    check(c.qemu.alive(), 'QEMU died: %s' % c.qemu.log_text()[-1500:])


@contextlib.contextmanager
def full_disk_image(c):
    """A 64 MiB sparse image on a 4 MiB tmpfs (writes beyond that get
    ENOSPC): yields the image and a function that makes room (128 MiB).
    Unmounted lazily at the end: QEMU, stopped later, may hold it open."""
    small = os.path.join(c.tmp, 'small')
    os.mkdir(small)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', small],
                   check=True)
    try:
        img = os.path.join(small, 'disk.img')
        with open(img, 'wb') as f:
            f.truncate(64 * MiB)
        yield img, lambda: subprocess.run(
            ['mount', '-o', 'remount,size=128m', small], check=True)
    finally:
        subprocess.run(['umount', '-l', small])


@test('fault-enospc-stop-cont')
def t_fault_enospc(c):
    """A full disk with werror=stop: parked, then space, cont, all there."""
    with full_disk_image(c) as (img, make_room):
        c.start()
        c.qemu.qmp.cmd('blockdev-add', driver='raw', **{'node-name': 'd0'},
                       file={'driver': 'file', 'filename': img})
        try:
            c.qemu.qmp.cmd('device_add', driver='xen-disk', id='dev-xvda',
                           vdev='xvda', drive='d0', werror='stop')
        except xensim.QMPError as e:
            raise Skip('no werror: %s' % e)
        mapf = os.path.join(c.tmp, 'map')
        size = 12 * MiB         # three times what the file system holds
        proc = background_writes(c, 0, size, mapf)
        wait_io_error_stop(c)
        failed = sum(d['stats']['failed_wr_operations']
                     for d in c.qemu.qmp.cmd('query-blockstats'))
        check(failed > 0, 'stopped, but no failed write counted')
        make_room()
        # it may stop again on writes that were in flight: cont each time
        rep = None
        c.qemu.qmp.cmd('cont')
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if c.qemu.qmp.cmd('query-status')['status'] == 'io-error':
                c.qemu.qmp.cmd('cont')
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        rep = finish_after_cont(c, proc, 'ENOSPC')
        io_clean(rep, 'writes after space was made')
        check(rep.get('ios') == size // (64 * 1024),
              'expected %d writes, %s' % (size // (64 * 1024),
                                          rep.get('ios')))
        c.front('--op', 'verify-region', '--offset', 0, '--length', size,
                '--bs', '64k', '--map', mapf)
        still_serves(c, mapf)


@test('qdisk-enospc-reports')
def t_qdisk_enospc_reports(c):
    """An xl disk on a full file system: the writes that do not fit get
    BLKIF_RSP_ERROR, as from blkback; the VM must not stop on ENOSPC (the
    block layer's default), since no toolstack would resume it."""
    with full_disk_image(c) as (img, make_room):
        c.start()
        c.attach_xl(img)
        # three times what the file system holds
        rep = c.front('--rw', 'write', '--bs', '64k', '--iodepth', 16,
                      '--size', 12 * MiB, '--deadline', 60, ok=False)
        status = c.qemu.qmp.cmd('query-status')['status']
        check(status == 'running', 'the VM is %s after ENOSPC' % status)
        st = rep.get('status', {})
        check(rep.get('ios') == 12 * MiB // (64 * 1024),
              'not every write was answered: %s' % summary(rep))
        check(st.get('error', 0) > 0 and st.get('okay', 0) > 0,
              'expected OKAY for what fits and ERROR for the rest: %s' % st)
        make_room()
        io_clean(c.front('--rw', 'randrw', '--bs', '4k', '--iodepth', 8,
                         '--size', 4 * MiB), 'after space was made')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--qemu', default='ours', choices=sorted(xensim.QEMUS))
    ap.add_argument('-k', dest='filter', default='')
    ap.add_argument('--list', action='store_true')
    args = ap.parse_args()
    tests = [(n, f) for n, f in TESTS if args.filter in n]
    if args.list:
        print('\n'.join(n for n, _ in tests))
        return 0
    print('1..%d' % len(tests))
    failed = 0
    for i, (name, fn) in enumerate(tests, 1):
        tid = 'conformance-%s:%s' % (args.qemu, name)
        with tempfile.TemporaryDirectory(prefix='xbtest-') as tmp:
            c = Ctx(args.qemu, tmp)
            try:
                fn(c)
                alive = c.stop()
                if not alive:
                    raise Failure('QEMU is not alive at the end')
                print('ok %d %s' % (i, tid))
            except Skip as e:
                c.stop()
                print('ok %d %s # SKIP %s' % (i, tid, e))
            except Exception as e:
                log, status = '', ''
                if c.qemu:
                    # a QEMU that died may still be writing why: read its
                    # log once it has stopped
                    died = not c.qemu.alive()
                    try:
                        rc = c.qemu.quit()
                    except Exception:
                        rc = c.qemu.proc.returncode
                    log = c.qemu.log_text()
                    if died:
                        status = ' (QEMU had died: exit status %s)' % rc
                    elif rc:
                        status = ' (QEMU exit status at quit: %s)' % rc
                try:
                    c.stop()
                except Exception:
                    pass
                failed += 1
                print('not ok %d %s' % (i, tid))
                msg = '%s: %s%s' % (type(e).__name__, e, status)
                if not isinstance(e, (Failure, xensim.Timeout)):
                    msg += '\n' + traceback.format_exc()
                for line in (msg + '\n--- QEMU log tail ---\n' +
                             log[-1500:]).splitlines():
                    print('#   ' + line)
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
