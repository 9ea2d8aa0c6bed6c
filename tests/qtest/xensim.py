"""Integration-test harness: xensimd, QEMU under xensim, QMP, xenblk-front.

QEMU's own libqtest starts QEMU with the qtest accelerator, which has no
Xen; these tests need QEMU's Xen accelerator running against xensim, so
they bring their own small launcher and QMP client.

Every wait has a deadline; nothing sleeps to synchronise.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get('XBLK_BUILD', os.path.join(TOP, 'build'))
XENSIM_BUILD = os.path.join(BUILD, 'xensim')
LIBXENSIM = os.path.join(XENSIM_BUILD, 'libxensim.so')
XENSIMD = os.path.join(XENSIM_BUILD, 'xensimd')
XENSIMCTL = os.path.join(XENSIM_BUILD, 'xensimctl')
FRONT = os.path.join(XENSIM_BUILD, 'xenblk-front')

QEMUS = {
    'ours': os.path.join(BUILD, 'qemu-release', 'qemu-system-i386'),
    'ours-asan': os.path.join(BUILD, 'qemu-asan', 'qemu-system-i386'),
    'stock': '/usr/libexec/xen-qemu-system-i386',
}


class Timeout(Exception):
    pass


def wait_for(predicate, timeout, what):
    """Poll @predicate until it is true; raise Timeout after @timeout s."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout('timed out after %gs waiting for %s' % (timeout, what))
        time.sleep(delay)       # a poll interval, not a synchronisation
        delay = min(delay * 2, 0.05)


class XenSim:
    """xensimd in a private folder, with dom0 and the guests asked for."""

    def __init__(self, guests=(1,), mem_mb=256, verbose=False):
        self.dir = tempfile.mkdtemp(prefix='xensim-')
        self.guests = list(guests)
        args = [XENSIMD, '--dir', self.dir]
        for g in self.guests:
            args += ['--domain', '%d:%d' % (g, mem_mb)]
        if verbose:
            args.append('--verbose')
        rfd, wfd = os.pipe()
        args += ['--ready-fd', str(wfd)]
        self.log = open(os.path.join(self.dir, 'xensimd.log'), 'w')
        self.proc = subprocess.Popen(args, pass_fds=(wfd,), stdout=self.log,
                                     stderr=subprocess.STDOUT)
        os.close(wfd)
        # xensimd writes "ready" once every socket exists (or exits)
        with os.fdopen(rfd) as r:
            line = r.readline()
        if line.strip() != 'ready':
            self.stop()
            raise RuntimeError('xensimd did not start: %s' % self.log_text())

    def env(self, domid=0):
        env = dict(os.environ)
        env['XENSIM_DIR'] = self.dir
        env['XENSIM_DOMID'] = str(domid)
        env['XENSTORED_PATH'] = os.path.join(
            self.dir, 'xenstored.sock' if domid == 0
            else 'xenstored-%d.sock' % domid)
        env['LD_PRELOAD'] = LIBXENSIM
        return env

    def stats(self, domid):
        """What others did with @domid's grants and ports (counters)."""
        env = dict(os.environ, XENSIM_DIR=self.dir)
        out = subprocess.run([XENSIMCTL, 'stats', str(domid)], env=env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def log_text(self):
        try:
            with open(os.path.join(self.dir, 'xensimd.log')) as f:
                return f.read()[-4000:]
        except OSError:
            return ''

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class QMP:
    """A minimal QMP client: commands, replies and events, with deadlines."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        wait_for(lambda: self._try_connect(path), timeout, 'QMP socket')
        self.buf = b''
        self.events = []
        self.greeting = self._read_msg(timeout)
        self.cmd('qmp_capabilities')

    def _try_connect(self, path):
        try:
            self.sock.connect(path)
            return True
        except (FileNotFoundError, ConnectionRefusedError):
            return False

    def _read_msg(self, timeout):
        deadline = time.monotonic() + timeout
        while b'\n' not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout('no QMP message within %gs' % timeout)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise EOFError('QMP connection closed')
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def cmd(self, name, timeout=30, **args):
        """Run a command; return its 'return' or raise on 'error'."""
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self.sock.sendall(json.dumps(msg).encode() + b'\n')
        # one deadline for the answer: a flood of events must not extend it
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout('no answer to %s within %gs' % (name, timeout))
            reply = self._read_msg(left)
            if 'event' in reply:
                self.events.append(reply)
                continue
            if 'error' in reply:
                raise QMPError(name, reply['error'])
            return reply.get('return')

    def wait_event(self, name, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev['event'] == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout('no %s event within %gs' % (name, timeout))
            msg = self._read_msg(left)
            if 'event' in msg:
                self.events.append(msg)

    def close(self):
        self.sock.close()


class QMPError(Exception):
    def __init__(self, cmd, error):
        super().__init__('%s: %s' % (cmd, error.get('desc', error)))
        self.error = error


class Qemu:
    """A QEMU acting as dom0's block backend for guest @domid."""

    def __init__(self, sim, which='ours', domid=1, args=(), trace=None,
                 guest_errors=True):
        self.sim = sim
        self.which = which
        self.binary = QEMUS[which]
        self.qmp_path = os.path.join(sim.dir, 'qmp-%s-%d.sock' % (which, domid))
        self.logfile = os.path.join(sim.dir, 'qemu-%s-%d.log' % (which, domid))
        cmd = [self.binary, '-xen-domid', str(domid), '-xen-attach',
               '-M', 'xenpv', '-nodefaults', '-display', 'none',
               '-chardev', 'socket,id=qmp,path=%s,server=on,wait=off'
               % self.qmp_path, '-mon', 'chardev=qmp,mode=control']
        if guest_errors:
            cmd += ['-d', 'guest_errors']
        if trace:
            cmd += ['-trace', trace]
        cmd += list(args)
        self.log = open(self.logfile, 'w')
        env = sim.env(0)
        if which == 'ours-asan':
            # libxensim is preloaded: ASan need not come first in line
            env['ASAN_OPTIONS'] = ('detect_leaks=0:abort_on_error=1:'
                                   'verify_asan_link_order=0')
            env['UBSAN_OPTIONS'] = 'halt_on_error=1:print_stacktrace=1'
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            self.qmp = QMP(self.qmp_path)
        except Exception:
            self.kill()
            raise RuntimeError('QEMU did not start: %s' % self.log_text())

    def log_text(self):
        try:
            with open(self.logfile) as f:
                return f.read()[-4000:]
        except OSError:
            return ''

    def alive(self):
        return self.proc.poll() is None

    def quit(self):
        if self.alive():
            try:
                self.qmp.cmd('quit', timeout=10)
            except Exception:
                pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
