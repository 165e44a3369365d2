#!/usr/bin/env python3
"""bench/imap/bench.py - the measuring half of bench/imap/run.

usage: bench.py SPEC.json

SPEC (written by run): {"targets": [{"name", "port", "pidfile", "reset",
"procs": [names counted as "the server"]}], "user", "password", "rounds",
"big", "small" (folder names), "tsv", "md", "quiet_pct", "quiet_wait"}.

The client is the same for both servers: raw sockets (imaplib's per-line
parsing would cost more than some servers' answers), STARTTLS, LOGIN, then
one command at a time, reading the answer to its tagged line (literals are
skipped by their length, counted and summed). Each round:
  1. every target's "reset" command (stops the server, restores its Maildir
     from its pristine copy by hard links, so no index file is left, starts
     it again and writes its pid file);
  2. each case on every target in turn, the order of the targets reversed
     every round; a case times one command from its sending to its tagged
     OK, after the machine was quiet (< quiet_pct % busy for 0.5 s, waiting
     up to quiet_wait s).
Around each timed command: CPU (utime+stime+cutime+cstime, so children that
ended count in their parent) of every process in the server's tree, by name,
from /proc; peak RSS from VmHWM after resetting it (/proc/PID/clear_refs 5)
just before the command. The client's own CPU is counted too.
"""
import json
import os
import re
import resource
import socket
import ssl
import statistics
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
HDRS = "(From To Subject Date Message-ID)"

# name, connection ("big" or "small": which folder the session has selected
# before the case, None: a new session that selects nothing), command,
# messages it touches (for msgs/s; None = the folder's count)
CASES = [
    ("select_cold", "fresh", "SELECT {big}", "big"),
    # At once: within a second of the first SELECT's renames (new/ to cur/),
    # both servers read the directory again, as neither trusts a directory
    # time stamp that recent; 3 s later, an unchanged folder as a client
    # usually finds it.
    ("select_again_now", "fresh", "SELECT {big}", "big"),
    ("select_again_3s", "fresh", "SELECT {big}", "big"),
    ("fetch_flags_big", "big", "UID FETCH 1:* (UID FLAGS)", "big"),
    ("fetch_headers", "small", "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS " + HDRS + "])", "small"),
    ("fetch_headers_again", "small", "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS " + HDRS + "])", "small"),
    ("fetch_bodies", "small", "FETCH 1:* BODY.PEEK[]", "small"),
    ("fetch_bodystructure", "small", "FETCH 1:* (ENVELOPE BODYSTRUCTURE)", "small"),
    ("search_unseen", "small", "UID SEARCH UNSEEN", "small"),
    ("search_from", "small", 'UID SEARCH FROM "smith"', "small"),
    ("search_body", "small", 'UID SEARCH BODY "zebra"', "small"),
    ("store_add", "small", "STORE 1:* +FLAGS.SILENT (\\Flagged)", "small"),
    ("store_remove", "small", "STORE 1:* -FLAGS.SILENT (\\Flagged)", "small"),
]

LIT = re.compile(rb"\{(\d+)\+?\}$")
SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class Imap:
    def __init__(self, port, timeout=600):
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = self.raw
        self.buf = bytearray()
        self.pos = 0
        self.n = 0
        self.octets = 0
        greet = self.line()
        if not greet.startswith(b"* OK"):
            raise RuntimeError("greeting: %r" % greet)

    def fill(self):
        if self.pos > 1 << 20:
            del self.buf[:self.pos]
            self.pos = 0
        d = self.sock.recv(1 << 18)
        if not d:
            raise RuntimeError("connection closed")
        self.octets += len(d)
        self.buf += d

    def line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                l = bytes(self.buf[self.pos:i])
                self.pos = i + 2
                return l
            self.fill()

    def skip(self, n):
        while len(self.buf) - self.pos < n:
            n -= len(self.buf) - self.pos
            self.pos = len(self.buf)
            self.fill()
        self.pos += n

    def cmd(self, text):
        """Sends one command; returns (tagged line, stats) once it is
        answered. stats: untagged lines, FETCH responses, literal octets,
        sum of RFC822.SIZE, SEARCH hits."""
        self.n += 1
        tag = b"b%04d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        st = {"untagged": 0, "fetch": 0, "literal": 0, "size": 0, "hits": 0}
        o0 = self.octets - (len(self.buf) - self.pos)
        while True:
            l = self.line()
            if l.startswith(tag + b" "):
                st["octets"] = self.octets - (len(self.buf) - self.pos) - o0
                return l[len(tag) + 1:], st
            st["untagged"] += 1
            if b" FETCH " in l[:24]:
                st["fetch"] += 1
                m = SIZE.search(l)
                if m:
                    st["size"] += int(m.group(1))
            elif l.startswith(b"* SEARCH"):
                st["hits"] += len(l.split()) - 2
            while True:  # the line may go on after each literal
                m = LIT.search(l)
                if not m:
                    break
                k = int(m.group(1))
                st["literal"] += k
                self.skip(k)
                l = self.line()

    def ok(self, text):
        r, st = self.cmd(text)
        if not r.startswith(b"OK"):
            raise RuntimeError("%s: %r" % (text, r))
        return st

    def starttls_login(self, user, password):
        self.ok("STARTTLS")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.raw)
        self.tls = "%s %s" % (self.sock.version(), self.sock.cipher()[0])
        self.ok('LOGIN %s "%s"' % (user, password))

    def close(self):
        try:
            self.cmd("LOGOUT")
        except Exception:
            pass
        self.sock.close()


def tree(root):
    """pid -> name of root and all its descendants."""
    kids, names = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        names[int(d)] = name
        kids.setdefault(ppid, []).append(int(d))
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        if p in names:
            out[p] = names[p]
            todo += kids.get(p, [])
    return out


def cpu_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    v = s[s.rindex(")") + 2:].split()
    return (int(v[11]) + int(v[12]) + int(v[13]) + int(v[14])) / HZ


def hwm_of(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for l in f:
                if l.startswith("VmHWM:"):
                    return int(l.split()[1])
    except OSError:
        pass
    return 0


def clear_hwm(pid):
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
    except OSError:
        pass


def busy_pct(span):
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = read()
    time.sleep(span)
    t1, i1 = read()
    return 100.0 * (1 - (i1 - i0) / max(t1 - t0, 1))


def quiet(pct, wait):
    t = time.time()
    while True:
        b = busy_pct(0.5)
        if b < pct or time.time() - t > wait:
            return b


def pid_of(pidfile):
    with open(pidfile) as f:
        return int(f.read().split()[0])


def run_case(spec, tgt, conn, case, rnd):
    name, _, cmdtext, folder = case
    cmdtext = cmdtext.format(big=spec["big"], small=spec["small"])
    root = pid_of(tgt["pidfile"])
    bg = quiet(spec["quiet_pct"], spec["quiet_wait"])
    procs = tree(root)
    before = {p: cpu_of(p) for p in procs}
    for p in procs:
        clear_hwm(p)
    cl0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    r, st = conn.cmd(cmdtext)
    wall = time.perf_counter() - t0
    cl1 = resource.getrusage(resource.RUSAGE_SELF)
    after_procs = tree(root)
    cpu_by = {}
    tree_cpu = 0.0
    for p, n in after_procs.items():
        c = cpu_of(p)
        if c is None:
            continue
        d = c - (before.get(p) or 0.0)
        tree_cpu += d
        cpu_by[n] = cpu_by.get(n, 0.0) + d
    server = set(tgt["procs"])
    srv_cpu = sum(v for n, v in cpu_by.items() if n in server)
    rss = sum(hwm_of(p) for p, n in after_procs.items() if n in server)
    if not r.startswith(b"OK"):
        raise RuntimeError("%s on %s: %r" % (cmdtext, tgt["name"], r))
    msgs = spec["count"][folder]
    return {
        "round": rnd, "case": name, "server": tgt["name"], "wall_s": wall,
        "msgs": msgs, "msgs_per_s": msgs / wall, "server_cpu_s": srv_cpu,
        "tree_cpu_s": tree_cpu, "peak_rss_kib": rss,
        "client_cpu_s": (cl1.ru_utime + cl1.ru_stime) - (cl0.ru_utime + cl0.ru_stime),
        "bg_pct": bg, "fetched": st["fetch"], "literal_bytes": st["literal"],
        "size_sum": st["size"], "hits": st["hits"], "untagged": st["untagged"],
        "octets": st["octets"],
        "cpu_by": ";".join("%s=%.3f" % kv for kv in sorted(cpu_by.items()) if kv[1] > 0),
        "reply": r.decode(errors="replace")[:80],
    }


COLS = ["round", "case", "server", "wall_s", "msgs", "msgs_per_s",
        "server_cpu_s", "tree_cpu_s", "peak_rss_kib", "client_cpu_s",
        "bg_pct", "fetched", "literal_bytes", "size_sum", "hits",
        "untagged", "octets", "tls", "cpu_by", "reply"]


def one_round(spec, rnd):
    """Runs every case once on every target (the servers were just reset)
    and appends the rows to spec["tsv"]."""
    targets = spec["targets"]
    new = not os.path.exists(spec["tsv"])
    tsv = open(spec["tsv"], "a")
    if new:
        tsv.write("\t".join(COLS) + "\n")
    only = set(spec["cases"].split(",")) if spec.get("cases") else None
    order = targets if rnd % 2 else targets[::-1]
    sess = {t["name"]: {} for t in targets}

    def conn(t, kind):
        cur = sess[t["name"]].get("conn")
        if kind != "fresh" and cur is not None and sess[t["name"]]["kind"] == kind:
            return cur
        if cur is not None:
            cur.close()
        c = Imap(t["port"])
        c.starttls_login(spec["user"], spec["password"])
        if kind != "fresh":
            c.ok("SELECT " + spec[kind])
        sess[t["name"]] = {"conn": c, "kind": kind}
        return c

    for case in CASES:
        if only and case[0] not in only:
            continue
        if case[0].endswith("_3s"):
            time.sleep(3)
        for t in order:
            c = conn(t, case[1])
            row = run_case(spec, t, c, case, rnd)
            row["tls"] = c.tls
            tsv.write("\t".join(("%.4f" % row[k]) if isinstance(row[k], float) else str(row[k]) for k in COLS) + "\n")
            tsv.flush()
            print("bench: round %d %-20s %-8s %7.3f s %8.0f msg/s cpu %6.3f s rss %7d KiB  fetched %d lit %d hits %d (%s)" % (
                rnd, row["case"], row["server"], row["wall_s"], row["msgs_per_s"],
                row["server_cpu_s"], row["peak_rss_kib"], row["fetched"],
                row["literal_bytes"], row["hits"], row["cpu_by"]), file=sys.stderr, flush=True)
            if case[1] == "fresh":
                c.close()
                sess[t["name"]] = {}
    for t in targets:
        if sess[t["name"]].get("conn"):
            sess[t["name"]]["conn"].close()


def read_tsv(path):
    rows = []
    with open(path) as f:
        head = f.readline().rstrip("\n").split("\t")
        for l in f:
            v = dict(zip(head, l.rstrip("\n").split("\t")))
            for k in v:
                if k in ("round", "msgs", "peak_rss_kib", "fetched", "literal_bytes",
                         "size_sum", "hits", "untagged", "octets"):
                    v[k] = int(v[k])
                elif k.endswith("_s") or k in ("msgs_per_s", "bg_pct"):
                    v[k] = float(v[k])
            rows.append(v)
    return rows


def main():
    spec = json.load(open(sys.argv[1]))
    if sys.argv[2] == "round":
        one_round(spec, int(sys.argv[3]))
    else:
        rows = read_tsv(spec["tsv"])
        tls = {r["server"]: r["tls"] for r in rows}
        report(spec, rows, tls)


def med(v):
    return statistics.median(v)


def report(spec, rows, tls):
    names = [t["name"] for t in spec["targets"]]
    ref = names[-1]
    out = []
    out.append("TLS negotiated: " + "; ".join("%s %s" % (n, tls.get(n, "?")) for n in names) + ".")
    out.append("")
    out.append("wall s and msgs/s: median (min-max) of the rounds; ratios taken within a round, median (min-max); "
               "server CPU: %s; peak RSS: the sum of their VmHWM during the command. "
               "goal met: yes = median wall ratio <= 1, even = <= 1.10." % "; ".join(
                   "%s %s" % (t["name"], "+".join(t["procs"])) for t in spec["targets"]))
    out.append("")
    out.append("| case | server | wall s | msgs/s | server CPU s | peak RSS MiB | wall ÷ %s (range) | CPU ÷ %s (range) | goal met |" % (ref, ref))
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
    seen = []
    for r in rows:
        if r["case"] not in seen:
            seen.append(r["case"])
    for case in seen:
        for n in names:
            rs = [r for r in rows if r["case"] == case and r["server"] == n]
            w = [r["wall_s"] for r in rs]
            ratios, cratios = [], []
            for r in rs:
                o = [x for x in rows if x["case"] == case and x["server"] == ref and x["round"] == r["round"]]
                if o:
                    ratios.append(r["wall_s"] / o[0]["wall_s"])
                    if o[0]["server_cpu_s"] > 0:
                        cratios.append(r["server_cpu_s"] / o[0]["server_cpu_s"])
            rng = lambda v: "%.2f (%.2f-%.2f)" % (med(v), min(v), max(v)) if v else "-"
            # At least as fast: the median ratio at most 1; up to 1.10 is
            # called even (within what the rounds spread by here).
            goal = "" if n == ref else (
                "yes" if ratios and med(ratios) <= 1.0 else
                "even" if ratios and med(ratios) <= 1.1 else "no")
            out.append("| %s | %s | %.3f (%.3f-%.3f) | %.0f | %.3f | %.1f | %s | %s | %s |" % (
                case, n, med(w), min(w), max(w), med([r["msgs_per_s"] for r in rs]),
                med([r["server_cpu_s"] for r in rs]),
                med([r["peak_rss_kib"] for r in rs]) / 1024,
                "1.00" if n == ref else rng(ratios), "1.00" if n == ref else rng(cratios), goal))
    out.append("")
    out.append("Answers checked per case (median over rounds; the same on both servers means the same work): ")
    out.append("")
    out.append("| case | server | FETCH responses | literal octets | sum of RFC822.SIZE | SEARCH hits | answer octets |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for case in seen:
        for n in names:
            rs = [r for r in rows if r["case"] == case and r["server"] == n]
            out.append("| %s | %s | %d | %d | %d | %d | %d |" % (case, n, med([r["fetched"] for r in rs]),
                       med([r["literal_bytes"] for r in rs]), med([r["size_sum"] for r in rs]),
                       med([r["hits"] for r in rs]), med([r["octets"] for r in rs])))
    with open(spec["md"], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
