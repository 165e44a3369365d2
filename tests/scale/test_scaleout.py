"""Scale-out on several hosts, for real (issue 6): network namespaces stand
in for hosts, joined by veth pairs to one bridge, with addresses of their
own from 198.18.0.0/24 (RFC 2544's range for network tests). The real
executables run inside them with `ip netns exec`, configured only through
SAMOTOP_* variables; no samotopd:

    core    198.18.0.1   redis-server (AOF, appendfsync always), samotop-bus
    lis1    198.18.0.11  samotop-listener, samotop-guard
    lis2    198.18.0.12  samotop-listener, samotop-guard
    relay1  198.18.0.21  samotop-relay
    relay2  198.18.0.22  samotop-relay
    store   198.18.0.31  samotop-queue, samotop-auth, samotop-mailbox (Maildir)
    remote  198.18.0.41  Postfix's smtp-sink, one file per message received
    (this process, on the bridge: 198.18.0.254, the SMTP clients)

The clients send N messages (2,000; SAMOTOP_SCALEOUT_MESSAGES overrides),
half to each listener: inbound mail for bob@example.test on the MTA port
(into the Maildir) and, alternately, mail alice submits on the MSA port
(STARTTLS + AUTH) for friend@remote.test, which the queue hands to a relay
and the relay to the sink over `samotop-admin route add remote.test`. A
client that gets no 250 tries the other listener, as a sending MTA tries
the next MX. Mid-run one relay is SIGKILLed, then the host lis1 goes down
(every process in it SIGKILLed, its link cut). Then:

  - every message that got a 250 is in the Maildir or at the sink (by
    Message-ID; missing = 0 is asserted, duplicates are counted and
    reported: the relay's delivery is at-least-once when it dies between
    the sink's 250 and its answer to the queue);
  - the per-host counts, from each actor's Prometheus /metrics (scraped
    before each fault and at the end), show the load spread over both
    copies of each stage, and carried on by the survivors after the
    faults; the actors' log lines give the same counts exactly and are
    printed beside them.

The test needs root and iproute2, and FAILS (not skips) without them. It
sends traffic only to its namespaces' addresses and to loopback, holds a
lock so that two runs never share the addresses, removes leftovers of a
crashed earlier run (names starting with "smsc-") and, in a finally,
everything it made.
"""
import fcntl
import glob
import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
import samotop_test as st  # noqa: E402

PREFIX = "smsc-"
BRIDGE = PREFIX + "br"
NET = "198.18.0"
ROOT_ADDR = NET + ".254"
LOCK = "/run/lock/samotop-scaleout.lock"
# Ports inside the namespaces (each has its own port space; these are the
# ones tests/README.md gives this test all the same).
P_BUS, P_REDIS, P_MTA, P_MSA, P_SINK, P_METRICS = 21100, 21106, 21110, 21111, 21125, 21180

HOSTS = [  # name, last octet, processes (actor or tool name)
    ("core", 1, ["redis", "bus"]),
    ("lis1", 11, ["listener", "guard"]),
    ("lis2", 12, ["listener", "guard"]),
    ("relay1", 21, ["relay"]),
    ("relay2", 22, ["relay"]),
    ("store", 31, ["queue", "auth", "mailbox"]),
    ("remote", 41, ["sink"]),
]
ADDR = {h: "%s.%d" % (NET, o) for h, o, _ in HOSTS}
CORE = ADDR["core"]
N = int(os.environ.get("SAMOTOP_SCALEOUT_MESSAGES", "2000"))
THREADS = 8
PER_SESSION = 50          # messages per SMTP session before a new one
ATTEMPTS = 8              # tries per message, alternating the listeners
DEADLINE_S = 240          # for the whole sending loop
DELIVERY_WAIT_S = 90      # for the rest to reach the Maildir and the sink
PASSWORD = "alice-secret"
# No proxy from the environment: the scrapes go to the namespaces only.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def sh(*argv, check=True, timeout=30):
    r = subprocess.run(list(argv), capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s: rc=%d %s%s" % (" ".join(argv), r.returncode,
                                                 r.stdout, r.stderr))
    return r


def log(msg):
    sys.stderr.write("scaleout: %s\n" % msg)
    sys.stderr.flush()


def preflight():
    """Root and the tools, or a clear failure: CI runs this as root."""
    why = []
    if os.geteuid() != 0:
        why.append("needs root (network namespaces, veth, a bridge)")
    for tool in ("ip", "redis-server", "redis-cli", "smtp-sink"):
        if shutil.which(tool) is None:
            why.append("needs %s in PATH (deploy/deps installs it)" % tool)
    for exe in ("samotop-bus", "samotop-listener", "samotop-guard",
                "samotop-relay", "samotop-queue", "samotop-auth",
                "samotop-mailbox", "samotop-admin"):
        if not os.access(st.bin_path(exe), os.X_OK):
            why.append("no %s in %s" % (exe, st.BIN))
    if why:
        raise AssertionError("test_scaleout cannot run: " + "; ".join(why))


def clean_leftovers():
    """Whatever a crashed earlier run left, by name prefix: the processes
    still inside its namespaces (by pid), the namespaces, the links."""
    for line in sh("ip", "netns", "list").stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if not ns.startswith(PREFIX):
            continue
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", ns, check=False)
    for line in sh("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            sh("ip", "link", "del", name, check=False)


class Net:
    """The namespaces, their veth pairs and the bridge."""

    def __init__(self):
        self.made = False

    def up(self):
        # After clean_leftovers(): anything left in our range is not ours.
        taken = (sh("ip", "-o", "addr", "show", "to", NET + ".0/24").stdout +
                 sh("ip", "route", "show", "to", "match", CORE).stdout)
        if NET + "." in taken:
            raise AssertionError("%s.0/24 is already in use on this machine:\n%s"
                                 % (NET, taken))
        self.made = True
        sh("ip", "link", "add", "name", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", ROOT_ADDR + "/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for h, _, _ in HOSTS:
            ns, veth = PREFIX + h, PREFIX + h
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name",
               "eth0", "netns", ns)
            sh("ip", "link", "set", veth, "master", BRIDGE)
            sh("ip", "link", "set", veth, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add",
               ADDR[h] + "/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def host_down(self, h):
        sh("ip", "link", "set", PREFIX + h, "down")

    def down(self):
        if self.made:
            clean_leftovers()


class Proc:
    def __init__(self, host, kind, argv, env, logdir, metrics=None):
        self.host, self.kind = host, kind
        self.name = "%s/%s" % (host, kind)
        self.logpath = os.path.join(logdir, "%s-%s.log" % (host, kind))
        self.metrics = metrics  # "ADDR:PORT" of its /metrics, or None
        with open(self.logpath, "w") as f:
            self.p = subprocess.Popen(
                ["ip", "netns", "exec", PREFIX + host] + argv, env=env,
                stdin=subprocess.DEVNULL, stdout=f, stderr=f)

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def logtext(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def count(self, event, pattern=None):
        """Log lines of event (that also match pattern)."""
        n = 0
        for line in self.logtext().splitlines():
            if " event=%s " % event in line + " " and (
                    pattern is None or re.search(pattern, line)):
                n += 1
        return n


def scrape(addr, timeout=5):
    """{(name, frozenset(labels)): value} from one /metrics."""
    with HTTP.open("http://%s/metrics" % addr, timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def msum(sample, name, **want):
    return sum(v for (n, labels), v in sample.items() if n == name and all(
        (k, w) in labels for k, w in want.items()))


# What each stage counts, from /metrics and from its log lines.
COUNTS = {
    "listener": (("samotop_smtp_messages_total", {"code": "250"}),
                 ("message_accepted", None)),
    "guard": (("samotop_guard_decisions_total", {"check": "rcpt"}),
              ("guard_rcpt", None)),
    "relay": (("samotop_bus_requests_total", {"type": "relay.send"}),
              ("relay_delivery", None)),
    "queue": (("samotop_bus_requests_total", {"type": "queue.submit"}),
              ("queue_submit", None)),
    "mailbox": (("samotop_bus_requests_total", {"type": "mailbox.deliver"}),
                ("deliver", None)),
}


class System:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="samotop-scaleout-")
        os.chmod(self.dir, 0o755)  # smtp-sink writes as nobody below it
        self.procs = []
        self.net = Net()
        self.base_env = {k: v for k, v in os.environ.items()
                         if not k.startswith("SAMOTOP_")}
        self.admin_env = dict(self.base_env, **self.bus_env())

    def bus_env(self):
        return {
            "SAMOTOP_REDIS_HOST": CORE,
            "SAMOTOP_REDIS_PORT": str(P_REDIS),
            "SAMOTOP_BUS_CLIENTS": "tcp://%s:%d" % (CORE, P_BUS),
            "SAMOTOP_BUS_WORKERS": "tcp://%s:%d" % (CORE, P_BUS + 1),
            "SAMOTOP_BUS_TRACE": "tcp://%s:%d" % (CORE, P_BUS + 2),
        }

    def actor_env(self, host, slot):
        a = ADDR[host]
        data = os.path.join(self.dir, host, "data")
        os.makedirs(data, exist_ok=True)
        env = dict(self.base_env, **self.bus_env())
        env.update({
            "SAMOTOP_DATA": data,
            "SAMOTOP_HOSTNAME": "%s.scale.test" % host,
            "SAMOTOP_BROKER_CLIENTS": "tcp://%s:%d" % (a, P_BUS),
            "SAMOTOP_BROKER_WORKERS": "tcp://%s:%d" % (a, P_BUS + 1),
            "SAMOTOP_BROKER_TRACE": "tcp://%s:%d" % (a, P_BUS + 2),
            "SAMOTOP_LISTEN_MTA": "%s:%d" % (a, P_MTA),
            "SAMOTOP_LISTEN_MSA": "%s:%d" % (a, P_MSA),
            "SAMOTOP_LISTEN_SMTPS": "%s:%d" % (a, P_MSA + 1),
            "SAMOTOP_LISTEN_IMAP": "%s:%d" % (a, P_MSA + 2),
            "SAMOTOP_LISTEN_IMAPS": "%s:%d" % (a, P_MSA + 3),
            "SAMOTOP_LISTEN_LMTP": "%s:%d" % (a, P_MSA + 4),
            "SAMOTOP_LISTENER_ROLES": "mta,msa",
            "SAMOTOP_LISTENER_MAX_PER_IP": "1000",
            "SAMOTOP_METRICS_LISTEN": "%s:%d" % (a, P_METRICS + slot),
            # One client address sends thousands of messages a minute: the
            # test, not an abuser.
            "SAMOTOP_GUARD_CONN_PER_MINUTE": "100000000",
            "SAMOTOP_GUARD_MSG_PER_MINUTE": "100000000",
            "SAMOTOP_GUARD_USER_MSG_PER_MINUTE": "100000000",
            "SAMOTOP_GUARD_USER_RCPT_PER_MINUTE": "100000000",
            "SAMOTOP_QUEUE_RETRY_MIN_S": "1",
            "SAMOTOP_QUEUE_RETRY_MAX_S": "2",
            "SAMOTOP_QUEUE_LEASE_MS": "3000",
            "SAMOTOP_QUEUE_RELAY_TIMEOUT_MS": "20000",
            # A lookup the routes make needless goes nowhere but here.
            "SAMOTOP_RELAY_DNS": "%s:53" % CORE,
            "SAMOTOP_RELAY_DNS_TIMEOUT_MS": "200",
        })
        return env

    def start(self):
        self.net.up()
        logdir = os.path.join(self.dir, "logs")
        os.makedirs(logdir)
        for host, _, kinds in HOSTS:
            for slot, kind in enumerate(kinds):
                self.start_one(host, slot, kind, logdir)
                if kind == "redis":
                    self.wait_redis()
        self.wait_ready()

    def start_one(self, host, slot, kind, logdir):
        env = self.actor_env(host, slot)
        metrics = None
        if kind == "redis":
            rdir = os.path.join(self.dir, host, "redis")
            os.makedirs(rdir)
            argv = ["redis-server", "--bind", CORE, "--port", str(P_REDIS),
                    "--dir", rdir, "--appendonly", "yes",
                    "--appendfsync", "always", "--save", "",
                    "--protected-mode", "no", "--daemonize", "no"]
        elif kind == "sink":
            self.sink_dir = os.path.join(self.dir, host, "dump")
            os.makedirs(self.sink_dir)
            os.chmod(os.path.join(self.dir, host), 0o755)
            shutil.chown(self.sink_dir, "nobody")
            argv = ["smtp-sink", "-u", "nobody", "-d",
                    self.sink_dir + "/%H%M%S.", "%s:%d" % (ADDR[host], P_SINK),
                    "256"]
        else:
            argv = [st.bin_path("samotop-" + kind)]
            if kind != "bus":
                metrics = env["SAMOTOP_METRICS_LISTEN"]
        self.procs.append(Proc(host, kind, argv, env, logdir, metrics))

    def wait_redis(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = sh("redis-cli", "-h", CORE, "-p", str(P_REDIS), "ping",
                   check=False)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise AssertionError("redis-server on %s not ready:\n%s" % (
            CORE, self.proc("core", "redis").logtext()))

    def wait_ready(self, timeout=40):
        """Every actor copy answers its own /ready (a broker heard)."""
        deadline = time.time() + timeout
        todo = [p for p in self.procs if p.metrics]
        while todo and time.time() < deadline:
            for p in list(todo):
                if p.p.poll() is not None:
                    raise AssertionError("%s exited:\n%s" % (p.name, p.logtext()))
                try:
                    with HTTP.open("http://%s/ready" % p.metrics, timeout=2) as r:
                        if r.status == 200:
                            todo.remove(p)
                except OSError:
                    pass
            time.sleep(0.2)
        if todo:
            raise AssertionError("not ready: %s\n%s" % (
                [p.name for p in todo], todo[0].logtext()[-3000:]))
        self.admin("ping", "--timeout", "2000", "listener", "guard", "relay",
                   "queue", "auth", "mailbox")

    def proc(self, host, kind):
        return [p for p in self.procs if p.host == host and p.kind == kind][0]

    def admin(self, *args, input=None):
        r = subprocess.run([st.bin_path("samotop-admin")] + list(args),
                           env=self.admin_env, capture_output=True, text=True,
                           input=input, timeout=60)
        if r.returncode != 0:
            raise AssertionError("samotop-admin %s: rc=%d\n%s%s" % (
                " ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def snapshot(self):
        """{proc name: (metric count, log count)} of every actor alive."""
        out = {}
        for p in self.procs:
            if p.kind not in COUNTS or p.p.poll() is not None:
                continue
            (metric, labels), (event, pat) = COUNTS[p.kind]
            out[p.name] = (msum(scrape(p.metrics), metric, **labels),
                           p.count(event, pat))
        return out

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        self.net.down()
        bad = []
        for p in self.procs:
            text = p.logtext()
            if re.search(r"ERROR: (Address|Leak)Sanitizer|runtime error:|"
                         r"level=fatal", text):
                bad.append(p.name)
                sys.stderr.write("---- %s (%s) ----\n%s\n----\n" % (
                    p.name, p.logpath, text[-20000:]))
        if os.environ.get("SAMOTOP_SCALEOUT_KEEP"):
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return bad


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def message(i, kind):
    to = "bob@example.test" if kind == "in" else "friend@remote.test"
    frm = "sender@elsewhere.test" if kind == "in" else "alice@example.test"
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: scaleout %d\r\n"
            "Message-ID: <%s>\r\n\r\nMessage %d of the scale-out test.\r\n"
            % (frm, to, i, mid(i), i)).encode(), frm, to


def mid(i):
    return "scaleout.%d@client.test" % i


class Load:
    """THREADS threads send messages 0..N-1; message i goes first to
    listener lis1 if i % 4 < 2, else lis2, inbound (MTA) when i is even and
    submitted (MSA) when odd. Sessions are kept for PER_SESSION messages."""

    def __init__(self, n):
        self.n = n
        self.next = 0
        self.lock = threading.Lock()
        self.accepted = {}   # i -> host whose listener said 250
        self.failed = {}     # i -> last error
        self.first_tries = {"lis1": 0, "lis2": 0}
        self.retries = 0
        self.retried = set()  # messages with a failed try before their 250
        self.whys = {}        # "host error [code]" -> failed tries
        # A host that did not answer is tried last for a while, as a
        # sending MTA remembers an MX that is down.
        self.down_until = {"lis1": 0.0, "lis2": 0.0}
        self.deadline = time.time() + DEADLINE_S

    def take(self):
        with self.lock:
            if self.next >= self.n or time.time() > self.deadline:
                return None
            self.next += 1
            return self.next - 1

    def accepted_count(self):
        with self.lock:
            return len(self.accepted)

    def session(self, host, kind):
        if kind == "in":
            c = smtplib.SMTP(ADDR[host], P_MTA, local_hostname="client.test",
                             timeout=10)
            c.ehlo()
        else:
            c = smtplib.SMTP(ADDR[host], P_MSA, local_hostname="client.test",
                             timeout=10)
            c.starttls(context=ctx())
            c.ehlo()
            c.login("alice@example.test", PASSWORD)
        return c

    def worker(self):
        sessions = {}  # (host, kind) -> [smtp, messages sent]

        def drop(key):
            s = sessions.pop(key, None)
            if s:
                try:
                    s[0].close()
                except OSError:
                    pass

        while True:
            i = self.take()
            if i is None:
                break
            kind = "in" if i % 2 == 0 else "out"
            hosts = ["lis1", "lis2"] if i % 4 < 2 else ["lis2", "lis1"]
            with self.lock:
                self.first_tries[hosts[0]] += 1
                if self.down_until[hosts[0]] > time.time():
                    hosts.reverse()
            data, frm, to = message(i, kind)
            for attempt in range(ATTEMPTS):
                host = hosts[attempt % 2]
                key = (host, kind)
                try:
                    if key not in sessions:
                        sessions[key] = [self.session(host, kind), 0]
                    s = sessions[key]
                    s[0].sendmail(frm, [to], data)
                    s[1] += 1
                    with self.lock:
                        self.accepted[i] = host
                        self.failed.pop(i, None)
                    if s[1] >= PER_SESSION:
                        try:
                            s[0].quit()
                        except (OSError, smtplib.SMTPException):
                            pass
                        drop(key)
                    break
                except (OSError, smtplib.SMTPException) as e:
                    drop(key)
                    with self.lock:
                        self.failed[i] = "%s: %r" % (host, e)
                        self.retries += 1
                        self.retried.add(i)
                        why = "%s %s" % (host, type(e).__name__)
                        if isinstance(e, smtplib.SMTPResponseException):
                            why += " %d" % e.smtp_code
                        self.whys[why] = self.whys.get(why, 0) + 1
                        # (SMTPException is an OSError: an answer is not
                        # a host that is down.)
                        if not isinstance(e, (smtplib.SMTPResponseException,
                                              smtplib.SMTPRecipientsRefused)):
                            self.down_until[host] = time.time() + 60
                    if isinstance(e, smtplib.SMTPResponseException) and \
                            500 <= e.smtp_code < 600:
                        break  # refused for good: retrying would not help
                    if isinstance(e, smtplib.SMTPRecipientsRefused) and all(
                            500 <= c < 600 for c, _ in e.recipients.values()):
                        break
                    time.sleep(0.3 * (attempt + 1))
        for key in list(sessions):
            drop(key)

    def run(self, faults):
        ts = [threading.Thread(target=self.worker) for _ in range(THREADS)]
        for t in ts:
            t.start()
        faults()
        for t in ts:
            t.join()


MID = re.compile(rb"^Message-ID: <scaleout\.(\d+)@client\.test>", re.I | re.M)


def ids_in(files):
    """{message number: copies} over the files."""
    got = {}
    for f in files:
        try:
            with open(f, "rb") as fh:
                m = MID.search(fh.read(65536))
        except FileNotFoundError:
            continue
        if m:
            k = int(m.group(1))
            got[k] = got.get(k, 0) + 1
    return got


class ScaleOut(unittest.TestCase):
    def test_scaleout(self):
        preflight()
        os.makedirs(os.path.dirname(LOCK), exist_ok=True)
        lockf = open(LOCK, "w")
        deadline = time.time() + 900
        while True:
            try:
                fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                self.assertLess(time.time(), deadline,
                                "another test_scaleout held %s for 15 min" % LOCK)
                time.sleep(1)
        clean_leftovers()
        sysm = System()
        bad = []
        try:
            self.run_system(sysm)
        finally:
            bad = sysm.stop()
            lockf.close()
        self.assertEqual(bad, [], "sanitizer reports or fatal lines in the logs")

    def run_system(self, sysm):
        t0 = time.time()
        sysm.start()
        sysm.admin("domain", "add", "example.test")
        sysm.admin("user", "add", "bob@example.test", input="bob-secret\n")
        sysm.admin("user", "add", "alice@example.test", input=PASSWORD + "\n")
        sysm.admin("route", "add", "remote.test",
                   "%s:%d" % (ADDR["remote"], P_SINK))
        log("%d hosts up in %.1f s; sending %d messages" % (
            len(HOSTS), time.time() - t0, N))

        load = Load(N)
        snaps = {}

        def faults():
            # A quarter of the way a relay dies; half way, a listener's host.
            for at, what in ((N // 4, "relay1"), (N // 2, "lis1")):
                while load.accepted_count() < at and load.next < N and \
                        time.time() < load.deadline:
                    time.sleep(0.02)
                snaps[what] = sysm.snapshot()
                if what == "relay1":
                    sysm.proc("relay1", "relay").kill()
                else:
                    # A power cut: off the network first, so that no FIN or
                    # RST tells the clients or the broker.
                    sysm.net.host_down("lis1")
                    for p in sysm.procs:
                        if p.host == "lis1":
                            p.kill()
                log("%s down after %d accepted (%.1f s)" % (
                    what, load.accepted_count(), time.time() - t0))

        t_send = time.time()
        load.run(faults)
        send_s = time.time() - t_send
        accepted = dict(load.accepted)
        log("sent in %.1f s: %d accepted, %d never, %d retries; first tries "
            "lis1 %d lis2 %d" % (send_s, len(accepted), N - len(accepted),
                                 load.retries, load.first_tries["lis1"],
                                 load.first_tries["lis2"]))
        log("failed tries: %s" % ", ".join(
            "%s x%d" % kv for kv in sorted(load.whys.items())))

        want_in = {i for i in accepted if i % 2 == 0}
        want_out = {i for i in accepted if i % 2 == 1}
        maildir = os.path.join(sysm.dir, "store", "data", "mail",
                               "example.test", "bob")
        deadline = time.time() + DELIVERY_WAIT_S
        while time.time() < deadline:
            got_in = ids_in(glob.glob(maildir + "/new/*") +
                            glob.glob(maildir + "/cur/*"))
            got_out = ids_in(glob.glob(sysm.sink_dir + "/*"))
            if want_in <= set(got_in) and want_out <= set(got_out):
                break
            time.sleep(0.5)
        # Settled: what is still on its way arrives, then counted once more.
        time.sleep(1.5)
        got_in = ids_in(glob.glob(maildir + "/new/*") + glob.glob(maildir + "/cur/*"))
        got_out = ids_in(glob.glob(sysm.sink_dir + "/*"))
        snaps["end"] = sysm.snapshot()

        miss_in = sorted(want_in - set(got_in))
        miss_out = sorted(want_out - set(got_out))
        dup_in = sum(c - 1 for c in got_in.values() if c > 1)
        dup_out = sum(c - 1 for c in got_out.values() if c > 1)
        unacked = len((set(got_in) | set(got_out)) - set(accepted))
        log("inbound: %d accepted, %d in the Maildir, missing %d, duplicates %d"
            % (len(want_in), len(got_in), len(miss_in), dup_in))
        log("outbound: %d accepted, %d at the sink, missing %d, duplicates %d"
            % (len(want_out), len(got_out), len(miss_out), dup_out))
        log("delivered without a 250 seen by the client (its reply was lost "
            "with the host): %d" % unacked)
        self.report(sysm, snaps)

        self.assertEqual(miss_in, [], "accepted inbound messages missing "
                         "from the Maildir")
        self.assertEqual(miss_out, [], "accepted outbound messages missing "
                         "at the sink")
        # Every message found a listener in the end: the survivor took
        # what lis1 could not.
        self.assertEqual(len(accepted), N, "never accepted: %s" % dict(
            list(load.failed.items())[:5]))
        # The mailbox writes before its 250: a second copy comes only from
        # a client that tried again after a 250 it never saw.
        dups = sorted(i for i, c in got_in.items() if c > 1)
        self.assertEqual([i for i in dups if i not in load.retried], [],
                         "inbound duplicates of messages sent only once")
        queue = sysm.admin("queue", "list").stdout
        self.assertIn("queue is empty", queue, queue[:2000])

        # The spread, from /metrics: both copies of each stage worked before
        # the faults; after them the survivors carried the load.
        s1, s2, end = snaps["relay1"], snaps["lis1"], snaps["end"]
        for name in ("lis1/listener", "lis2/listener", "lis1/guard",
                     "lis2/guard", "relay1/relay", "relay2/relay"):
            self.assertGreater(s1[name][0], 0, "%s did nothing before the "
                               "first fault: %r" % (name, s1))
        self.assertNotIn("relay1/relay", s2)
        self.assertGreater(end["relay2/relay"][0], s1["relay2/relay"][0])
        for name in ("lis2/listener", "lis2/guard"):
            self.assertGreater(end[name][0], s2[name][0],
                               "%s carried nothing after lis1 went down" % name)
        self.assertNotIn("lis1/listener", end)
        # The metrics and the log lines agree on what the survivors did.
        for name, (m, l) in end.items():
            self.assertEqual(m, l, "%s: /metrics says %s, the log %s" % (name, m, l))
        # Each 250 a client saw was logged first by the listener that gave
        # it, even one that died afterwards.
        logged = sum(p.count("message_accepted") for p in sysm.procs
                     if p.kind == "listener")
        self.assertGreaterEqual(logged, len(accepted))
        log("done in %.1f s" % (time.time() - t0))

    def report(self, sysm, snaps):
        rows = []
        names = [p.name for p in sysm.procs if p.kind in COUNTS]
        for name in names:
            cols = []
            prev = 0
            for phase in ("relay1", "lis1", "end"):
                v = snaps.get(phase, {}).get(name)
                cols.append("%6s" % ("%d" % (v[0] - prev) if v else "dead"))
                prev = v[0] if v else prev
            p = sysm.procs[[q.name for q in sysm.procs].index(name)]
            event, pat = COUNTS[p.kind][1]
            rows.append("%-16s %s   log total %d" % (name, " ".join(cols),
                                                     p.count(event, pat)))
        log("per-host counts from /metrics (listener: 250s at end of DATA; "
            "guard: RCPT decisions; relay: relay.send answered; queue: "
            "queue.submit; mailbox: mailbox.deliver), by phase:\n"
            "                 before-relay-kill  to-lis1-down  after\n  " +
            "\n  ".join(rows))


if __name__ == "__main__":
    unittest.main(verbosity=2)
