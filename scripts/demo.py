#!/usr/bin/python3
"""The demo: a simulated Xen guest does verified I/O against our backend,
then a short benchmark compares ours with the stock Debian QEMU.

    scripts/demo.py [--image PATH] [--seconds N]

Xen is stood in for by xensim (tests/xensim): xensimd plays the hypervisor
and xenstored, our QEMU runs as dom0's block backend exactly as xl starts
it, and xenblk-front plays the guest's blkfront.
"""

import argparse
import os
import subprocess
import sys
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, 'tests', 'qtest'))
import xensim  # noqa: E402

MiB = 1024 * 1024


def say(msg):
    print(msg, flush=True)


def front(sim, *args, timeout=300):
    cmd = [xensim.FRONT, 'run', '--domid', '1', '--json', '-']
    cmd += [str(a) for a in args]
    r = subprocess.run(cmd, env=sim.env(1), capture_output=True, text=True,
                       timeout=timeout)
    for line in reversed(r.stdout.splitlines()):
        if line.startswith('{'):
            import json
            return r.returncode, json.loads(line), r.stderr.strip()
    return r.returncode, {}, r.stderr.strip()


def progress(label, seconds, done):
    """A progress line while a timed run goes on."""
    start = time.monotonic()
    while not done.wait(0.5):
        left = max(0, seconds - (time.monotonic() - start))
        sys.stdout.write('\r  %-28s %4.1f s left ' % (label, left))
        sys.stdout.flush()
    sys.stdout.write('\r' + ' ' * 60 + '\r')


def bench(which, seconds):
    """4 KiB random reads, iodepth 32, on a null-co disk: IOPS."""
    sim = xensim.XenSim(guests=[1])
    q = None
    try:
        q = xensim.Qemu(sim, which, args=['-object', 'iothread,id=io0'])
        q.qmp.cmd('blockdev-add', driver='null-co', size=1024 * MiB,
                  **{'node-name': 'null', 'read-zeroes': True})
        q.qmp.cmd('device_add', driver='xen-disk', id='d', vdev='xvda',
                  drive='null', iothread='io0')
        done = threading.Event()
        t = threading.Thread(target=progress,
                             args=('%s: 4k randread qd32' % which, seconds,
                                   done))
        t.start()
        try:
            rc, rep, err = front(sim, '--rw', 'randread', '--bs', '4k',
                                 '--iodepth', 32, '--runtime', seconds,
                                 '--verify', 'off', '--persistent',
                                 '--indirect', 256)
        finally:
            done.set()
            t.join()
        return rep if rc == 0 else None
    finally:
        if q:
            q.quit()
        sim.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--image', default=os.path.join(
        os.environ.get('XBLK_BUILD', os.path.join(TOP, 'build')),
        'demo-disk.img'))
    ap.add_argument('--seconds', type=float, default=5)
    args = ap.parse_args()

    if not os.path.exists(args.image):
        with open(args.image, 'wb') as f:
            f.truncate(256 * MiB)
        say('created %s (256 MiB, raw)' % args.image)

    say('== a simulated guest on our xen-block (xensim)')
    sim = xensim.XenSim(guests=[1])
    q = None
    try:
        q = xensim.Qemu(sim, 'ours')
        r = subprocess.run([xensim.FRONT, 'attach', '--domid', '1',
                            '--vdev', 'xvda', '--target', args.image],
                           env=sim.env(0), capture_output=True, text=True)
        if r.returncode:
            say('attach failed: %s %s' % (r.stdout, r.stderr))
            return 1
        say('  attached %s as xvda, the way xl does (qdisk backend)' %
            args.image)
        rc, rep, err = front(sim, '--queues', 2, '--indirect', 256,
                             '--persistent', '--ring-pages', 4, '--rw',
                             'randrw', '--bs', '64k', '--iodepth', 16,
                             '--size', 64 * MiB)
        d = rep.get('device', {})
        say('  negotiated: %s, %s ring pages, %s queues, indirect %s, '
            'persistent grants %s' % (d.get('abi'), d.get('ring_pages'),
                                      d.get('queues'), d.get('indirect'),
                                      d.get('persistent')))
        v = rep.get('verify', {})
        say('  verified I/O: %s requests, %s sectors checked, %s' %
            (rep.get('ios'), v.get('sectors'),
             'all correct' if rc == 0 else 'FAILED: ' + err))
        if rc:
            return 1
    finally:
        if q:
            q.quit()
        sim.stop()

    say('== a short benchmark: 4 KiB random reads, iodepth 32, null-co '
        '(%g s each)' % args.seconds)
    results = {}
    for which in ('ours', 'stock'):
        if not os.path.exists(xensim.QEMUS[which]):
            say('  %s: not installed' % which)
            continue
        rep = bench(which, args.seconds)
        if rep:
            results[which] = rep
            say('  %-6s %9.0f IOPS  p50 %6.0f us  p99 %6.0f us' %
                (which, rep['iops'], rep['lat_us']['p50'],
                 rep['lat_us']['p99']))
        else:
            say('  %s: the run failed' % which)
    if 'ours' in results and 'stock' in results:
        say('  ours / stock: %.2fx the IOPS' %
            (results['ours']['iops'] / max(results['stock']['iops'], 1)))
    say('(a shared 2-core machine: figures are noisy; bench/ measures '
        'properly)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
