"""Helpers for end-to-end tests: run the real Samotop processes on loopback.

System(base_port) starts samotopd with its own data folder and its own
ports (base_port .. base_port+19), so tests never touch a running local
profile or each other. Everything it starts is stopped by stop(), and
samotopd's children die with it (PR_SET_PDEATHSIG) if the test is killed.
"""
import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("SAMOTOP_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "release", "bin")
SRC = os.environ.get("SAMOTOP_SRC") or os.path.join(
    os.path.dirname(__file__), "..", "..")

ACTORS = ["listener", "auth", "guard", "mailbox", "queue", "relay"]


def _die_with_parent():
    """In the child before exec: SIGTERM when the test process dies, even
    by SIGKILL (a ctest timeout), so samotopd stops its children and frees
    the ports; atexit covers only a test that ends by itself."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(
        PR_SET_PDEATHSIG, signal.SIGTERM)


def fnv1a64(s):
    h = 14695981039346656037
    for c in s.lower().encode():
        h = ((h ^ c) * 1099511628211) & (2**64 - 1)
    return h


def jump(key, n):
    """Lamping and Veach's Jump Consistent Hash, as lib/shard.c has it."""
    b, j = -1, 0
    while j < n:
        b = j
        key = (key * 2862933555777941757 + 1) & (2**64 - 1)
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(addr, n):
    """The mailbox shard (of n) that owns addr, as lib/shard.c picks it."""
    return jump(fnv1a64(addr), n)


def bin_path(name):
    return os.path.join(BIN, name)


class System:
    def __init__(self, base_port, extra_env=None):
        assert 16000 <= base_port < 30000 and not (
            base_port <= 2024 < base_port + 20)
        self.base = base_port
        self.data = tempfile.mkdtemp(prefix="samotop-e2e-")
        p = base_port
        self.env = dict(os.environ)
        self.env.update({
            "SAMOTOP_DATA": self.data,
            "SAMOTOP_REDIS_PORT": str(p + 6),
            "SAMOTOP_BUS_CLIENTS": "tcp://127.0.0.1:%d" % p,
            "SAMOTOP_BUS_WORKERS": "tcp://127.0.0.1:%d" % (p + 1),
            "SAMOTOP_BUS_TRACE": "tcp://127.0.0.1:%d" % (p + 2),
            "SAMOTOP_BROKER_CLIENTS": "tcp://127.0.0.1:%d" % p,
            "SAMOTOP_BROKER_WORKERS": "tcp://127.0.0.1:%d" % (p + 1),
            "SAMOTOP_BROKER_TRACE": "tcp://127.0.0.1:%d" % (p + 2),
            "SAMOTOP_LISTEN_MTA": "127.0.0.1:%d" % (p + 10),
            "SAMOTOP_LISTEN_MSA": "127.0.0.1:%d" % (p + 11),
            "SAMOTOP_LISTEN_SMTPS": "127.0.0.1:%d" % (p + 12),
            "SAMOTOP_LISTEN_IMAP": "127.0.0.1:%d" % (p + 13),
            "SAMOTOP_LISTEN_IMAPS": "127.0.0.1:%d" % (p + 14),
            "SAMOTOP_LISTEN_LMTP": "127.0.0.1:%d" % (p + 15),
        })
        self.env.pop("SAMOTOP_CONFIG", None)
        if extra_env:
            self.env.update(extra_env)
        self.proc = None
        self.log = open(os.path.join(self.data, "samotopd.log"), "w+")

    def ports_free(self, timeout=30):
        """Waits until nothing listens on this system's ports (a test that
        ran before may still be stopping), then returns; fails naming the
        port when one stays taken. Two runs on the same ports would share
        one Redis and fail in ways that name neither."""
        deadline = time.time() + timeout
        for port in range(self.base, self.base + 20):
            while True:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                # As our servers bind: a port in TIME_WAIT is free.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                    break
                except OSError:
                    if time.time() > deadline:
                        raise AssertionError(
                            "port %d is taken by another process: is another "
                            "test or samotopd using ports %d-%d?" % (
                                port, self.base, self.base + 19))
                    time.sleep(0.5)
                finally:
                    s.close()

    def start(self, wait=True):
        self.ports_free()
        if not getattr(self, "_atexit", False):
            # A setUpModule that fails after start() never reaches its
            # tearDownModule: samotopd must not outlive the test anyway.
            atexit.register(self.stop)
            self._atexit = True
        self.proc = subprocess.Popen([bin_path("samotopd")], env=self.env,
                                     stdout=self.log, stderr=self.log,
                                     preexec_fn=_die_with_parent)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, services=ACTORS, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.admin("ping", "--timeout", "500", *services, check=False)
            if r.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise AssertionError("samotopd exited: %s" % self.logtext())
            time.sleep(0.2)
        raise AssertionError("actors not ready: %s\n%s" % (r.stdout, self.logtext()))

    def admin(self, *args, check=True, input=None):
        r = subprocess.run([bin_path("samotop-admin")] + list(args),
                           env=self.env, capture_output=True, text=True,
                           input=input, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError("samotop-admin %s: rc=%d\n%s%s" % (
                " ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def tap(self, *args):
        return subprocess.Popen([bin_path("samotop-tap")] + list(args),
                                env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.log.closed:
            return  # stopped already
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Sanitizer reports and crashes of the processes land in this log,
        # not in the test's output: copy them there, where tests/run looks.
        text = self.logtext()
        if re.search(r"ERROR: (Address|Leak)Sanitizer|runtime error:|"
                     r"level=fatal|status=signal:(?!15\b|9\b)", text):
            sys.stderr.write("---- samotopd log (%s) ----\n%s\n----\n"
                             % (self.data, text))
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Sink:
    """A small SMTP server on loopback that records what it receives: the
    next hop for the relay in tests. rcpt_codes maps an address to the
    reply its RCPT gets (e.g. {"bad@remote.test": "550 5.1.1 no such user"});
    data_code is the reply to the end of data. Real sockets, real SMTP;
    for the tests that need a peer we can stop and start at will."""

    def __init__(self, port, rcpt_codes=None, data_code="250 2.0.0 Ok",
                 ehlo=("PIPELINING", "8BITMIME", "SIZE 104857600")):
        import socketserver
        import threading
        self.port = port
        self.rcpt_codes = dict(rcpt_codes or {})
        self.data_code = data_code
        self.ehlo = list(ehlo)
        self.messages = []   # (mail_from, [rcpts], data bytes)
        self.connections = 0
        self.open = set()    # sockets of the sessions in progress
        self.lock = threading.Lock()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                with sink.lock:
                    sink.connections += 1
                    sink.open.add(self.connection)
                try:
                    self.session()
                except OSError:
                    pass  # cut by stop(), or the client went away
                finally:
                    with sink.lock:
                        sink.open.discard(self.connection)

            def session(self):
                w = self.wfile
                w.write(b"220 sink.remote.test ESMTP\r\n")
                mail, rcpts = None, []
                while True:
                    line = self.rfile.readline(4096)
                    if not line:
                        return
                    cmd = line.decode("utf-8", "replace").strip()
                    up = cmd.upper()
                    if up.startswith("EHLO"):
                        lines = ["sink.remote.test"] + sink.ehlo
                        out = "".join("250%s%s\r\n" % ("-" if i < len(lines) - 1 else " ", l)
                                      for i, l in enumerate(lines))
                        w.write(out.encode())
                    elif up.startswith("HELO"):
                        w.write(b"250 sink.remote.test\r\n")
                    elif up.startswith("MAIL FROM:"):
                        mail = cmd[10:].split(" ")[0].strip("<>")
                        rcpts = []
                        w.write(b"250 2.1.0 Ok\r\n")
                    elif up.startswith("RCPT TO:"):
                        addr = cmd[8:].split(" ")[0].strip("<>")
                        code = sink.rcpt_codes.get(addr, "250 2.1.5 Ok")
                        if code.startswith("2"):
                            rcpts.append(addr)
                        w.write((code + "\r\n").encode())
                    elif up == "DATA":
                        if not rcpts:
                            w.write(b"554 5.5.1 no valid recipients\r\n")
                            continue
                        w.write(b"354 go ahead\r\n")
                        data = b""
                        while True:
                            l = self.rfile.readline(1 << 20)
                            if not l or l == b".\r\n":
                                break
                            if l.startswith(b".."):
                                l = l[1:]
                            data += l
                        if sink.data_code.startswith("2"):
                            with sink.lock:
                                sink.messages.append((mail, list(rcpts), data))
                        w.write((sink.data_code + "\r\n").encode())
                    elif up == "RSET":
                        mail, rcpts = None, []
                        w.write(b"250 2.0.0 Ok\r\n")
                    elif up == "NOOP":
                        w.write(b"250 2.0.0 Ok\r\n")
                    elif up == "QUIT":
                        w.write(b"221 2.0.0 Bye\r\n")
                        return
                    else:
                        w.write(b"502 5.5.1 not here\r\n")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self):
        """Down for real: no new connections, and the open ones (a relay
        keeps one for reuse) are cut."""
        import socket as _socket
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for s in list(self.open):
                try:
                    s.shutdown(_socket.SHUT_RDWR)
                except OSError:
                    pass

    def wait(self, n, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.05)
        with self.lock:
            return list(self.messages)
