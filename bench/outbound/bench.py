#!/usr/bin/env python3
"""bench/outbound/bench.py - the measuring part of bench/outbound/run.

Runs client.py against each target in turn, R rounds, alternating the
order every round (A B, B A, A B ...), and measures per run:

  rate     N / (time the last of the N messages is at the sink - time of
           the client's first connect); the sink is smtp-sink -d, one file
           per message received, counted every 10 ms
  cpu      utime+stime+cutime+cstime summed over the target's process tree
           (root pid from its pid file; children reaped during the run are
           in their parent's cutime/cstime), from just before the client
           starts until SETTLE seconds after the last message reached the
           sink (work left after that, e.g. the queue's bookkeeping,
           counts); divided by N
  by_proc  the same CPU split by process name

then checks that the sink got every Message-ID exactly once and that the
server's queue is empty again. Before every run it waits (up to -Q MAXWAIT
seconds) for the machine's CPU to be below -Q PCT busy over one second,
as the shared harness does.

usage: bench.py SPEC.json   (written by bench/outbound/run)

SPEC: {"targets": [{"name", "port", "pidfile", "queued": [argv printing the
number of queued messages]}], "rounds", "messages", "sessions", "bytes",
"sink_dir", "client": [argv prefix], "settle", "quiet_pct", "quiet_wait",
"tsv", "md", "time_limit", "warmup", "sink_pidfile"}
Writes one TSV line per run to SPEC.tsv and the medians to SPEC.md (as a
markdown fragment); prints progress to stderr.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time

TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count()


def log(*a):
    print("outbound:", *a, file=sys.stderr, flush=True)


def procs():
    """{pid: (ppid, comm, ticks incl. reaped children)} of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        i, j = s.index("("), s.rindex(")")
        comm = s[i + 1:j]
        a = s[j + 2:].split()
        # a[0] = state (field 3); utime stime cutime cstime = fields 14-17
        out[int(d)] = (int(a[1]), comm, int(a[11]) + int(a[12]) + int(a[13]) + int(a[14]))
    return out


def tree(root):
    """{pid: (comm, ticks, ppid)} of root and all its descendants."""
    ps = procs()
    kids = {}
    for pid, (ppid, _, _) in ps.items():
        kids.setdefault(ppid, []).append(pid)
    res, todo = {}, [root]
    while todo:
        p = todo.pop()
        if p in ps:
            res[p] = (ps[p][1], ps[p][2], ps[p][0])
            todo.extend(kids.get(p, []))
    return res


def total(t):
    return sum(v[1] for v in t.values())


def by_name(t0, t1):
    """CPU ticks between two snapshots, by process name. A process gone by
    t1 was reaped by its parent: its whole life is in the parent's cutime
    at t1, so what it had used by t0 is taken off the parent's share (the
    totals are right either way)."""
    d = {}
    for pid, (comm, ticks, _) in t1.items():
        before = t0[pid][1] if pid in t0 else 0
        d[comm] = d.get(comm, 0) + ticks - before
    for pid, (comm, ticks, ppid) in t0.items():
        if pid not in t1 and ppid in t1:
            pc = t1[ppid][0]
            d[pc] = d.get(pc, 0) - ticks
    return d


def machine_busy():
    with open("/proc/stat") as f:
        a = f.readline().split()
    # user nice system irq softirq steal (not idle, iowait)
    return sum(int(a[i]) for i in (1, 2, 3, 6, 7, 8))


def machine_softirq():
    """softirq ticks of the machine: loopback TCP's receive path runs
    there, for client and server alike, and is in no process's time."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[7])


def self_ticks():
    t = os.times()
    return (t.user + t.system) * TCK


def wait_quiet(pct, maxwait):
    """Waits until the machine was less than pct % busy over one second;
    returns (that busy %, seconds waited)."""
    t0 = time.time()
    while True:
        b0 = machine_busy()
        time.sleep(1)
        busy = 100.0 * (machine_busy() - b0) / TCK / NCPU
        if busy < pct or time.time() - t0 >= maxwait:
            return busy, time.time() - t0 - 1


def sink_files(d):
    try:
        return os.listdir(d)
    except FileNotFoundError:
        return []


def clear_sink(d):
    for f in sink_files(d):
        try:
            os.unlink(os.path.join(d, f))
        except FileNotFoundError:
            pass


MID = re.compile(rb"^Message-ID: <([^>]*)>", re.I | re.M)


def check_sink(d, run, n, sessions):
    """(received, missing, duplicates, foreign) by Message-ID."""
    want = {}
    share = [n // sessions + (1 if i < n % sessions else 0) for i in range(sessions)]
    for s in range(sessions):
        for q in range(share[s]):
            want["%s.%d.%d@bench.example.test" % (run, s, q)] = 0
    foreign = 0
    files = sink_files(d)
    for f in files:
        with open(os.path.join(d, f), "rb") as fh:
            m = MID.search(fh.read())
        k = m.group(1).decode() if m else None
        if k in want:
            want[k] += 1
        else:
            foreign += 1
    missing = sum(1 for v in want.values() if v == 0)
    dups = sum(v - 1 for v in want.values() if v > 1)
    return len(files), missing, dups, foreign


def queued(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return int(r.stdout.strip() or "-1")
    except (subprocess.SubprocessError, ValueError, OSError):
        return -1


def pid_of(pidfile):
    with open(pidfile) as f:
        return int(f.read().strip())


def run_one(spec, tgt, run_id):
    n, sink = spec["messages"], spec["sink_dir"]
    clear_sink(sink)
    bg, waited = wait_quiet(spec["quiet_pct"], spec["quiet_wait"])
    root = pid_of(tgt["pidfile"])
    # Idle cost of the server: one second, untouched.
    i0 = total(tree(root))
    time.sleep(1)
    idle_ms_s = (total(tree(root)) - i0) * 1000.0 / TCK
    argv = spec["client"] + [
        "127.0.0.1:%d" % tgt["port"], "-s", str(spec["sessions"]),
        "-m", str(n), "-l", str(spec["bytes"]), "--run", run_id,
        "-T", str(spec["time_limit"])]
    sink_pid = pid_of(spec["sink_pidfile"])
    t0 = tree(root)
    b0, q0, s0, k0 = machine_busy(), machine_softirq(), self_ticks(), total(tree(sink_pid))
    cl = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    start = time.time()
    t_last = None
    client_end = None
    while True:
        c = len(sink_files(sink))
        now = time.time()
        if c >= n:
            t_last = now
            break
        if cl.poll() is not None:
            if client_end is None:
                client_end = now
            # the client is done: the rest must arrive within 60 s
            if now - client_end > 60:
                break
        if now - start > spec["time_limit"] + 90:
            break
        time.sleep(0.01)
    t_at_last = tree(root)
    time.sleep(spec["settle"])
    t1 = tree(root)
    b1, q1, s1, k1 = machine_busy(), machine_softirq(), self_ticks(), total(tree(sink_pid))
    try:
        out, err = cl.communicate(timeout=spec["time_limit"] + 60)
    except subprocess.TimeoutExpired:
        cl.kill()
        out, err = cl.communicate()
    try:
        cr = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        cr = {"sent": 0, "failed": n, "errors": [err.strip()[-300:]],
              "t_first_connect": start, "t_done": time.time(), "cpu_s": 0,
              "tls": None}
    got, missing, dups, foreign = check_sink(sink, run_id, n, spec["sessions"])
    q = queued(tgt["queued"])
    server_s = (total(t1) - total(t0)) / TCK
    server_at_last_s = (total(t_at_last) - total(t0)) / TCK
    busy_s = (b1 - b0) / TCK
    softirq_s = (q1 - q0) / TCK
    sink_s = (k1 - k0) / TCK
    self_s = (s1 - s0) / TCK
    span = (t_last - cr["t_first_connect"]) if t_last else None
    row = {
        "target": tgt["name"], "run": run_id,
        # Not in the TSV: for callers that relate the run to other samples.
        "t_first_connect": cr["t_first_connect"], "t_last": t_last,
        "ok": int(t_last is not None and cr["sent"] == n and missing == 0
                  and dups == 0),
        "msgs": n, "sent": cr["sent"],
        "rate": round(n / span, 1) if span else 0,
        "span_s": round(span, 3) if span else -1,
        "submit_s": round(cr["t_done"] - cr["t_first_connect"], 3),
        "auth_last_s": round(cr.get("t_auth_last", 0) - cr["t_first_connect"], 3),
        "cpu_ms_msg": round(1000 * server_s / n, 3),
        "cpu_ms_msg_at_last": round(1000 * server_at_last_s / n, 3),
        "server_cpu_s": round(server_s, 2),
        "client_cpu_s": cr["cpu_s"],
        "sink_cpu_s": round(sink_s, 2),
        "softirq_s": round(softirq_s, 2),
        "other_cpu_s": round(busy_s - server_s - cr["cpu_s"] - sink_s - self_s - softirq_s, 2),
        "idle_ms_s": round(idle_ms_s, 1),
        "bg_pct": round(bg, 1), "waited_s": round(waited, 1),
        "sink_files": got, "missing": missing, "dups": dups,
        "foreign": foreign, "queued_after": q,
        "tls": cr.get("tls"), "errors": "; ".join(cr.get("errors") or [])[:300],
        "by_proc": {k: round(v * 1000.0 / TCK / n, 3)
                    for k, v in sorted(by_name(t0, t1).items()) if v},
    }
    log("%s %s: %s msg/s, %s ms CPU/msg (at last msg %s), client %ss, sink %ss, "
        "softirq %ss, other %ss, bg %s%%, sink %d (missing %d, dups %d), queued after %d%s" % (
            tgt["name"], run_id, row["rate"], row["cpu_ms_msg"],
            row["cpu_ms_msg_at_last"], row["client_cpu_s"], row["sink_cpu_s"],
            row["softirq_s"], row["other_cpu_s"],
            row["bg_pct"], got, missing, dups, q,
            ("; errors: " + row["errors"]) if row["errors"] else ""))
    return row


COLS = ["target", "run", "ok", "msgs", "sent", "rate", "span_s", "submit_s",
        "auth_last_s", "cpu_ms_msg", "cpu_ms_msg_at_last", "server_cpu_s", "client_cpu_s",
        "sink_cpu_s", "softirq_s", "other_cpu_s", "idle_ms_s", "bg_pct", "waited_s", "sink_files",
        "missing", "dups", "foreign", "queued_after", "tls", "errors",
        "by_proc"]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def report(spec, rows):
    names = [t["name"] for t in spec["targets"]]
    ref = names[-1]  # the reference (Postfix) is the last target
    rounds = sorted({r["round"] for r in rows})
    by = {(r["target"], r["round"]): r for r in rows}
    out = []
    out.append("| server | msgs/s | CPU ms/msg | msgs/s ÷ %s (range) | CPU/msg ÷ %s (range) | all %d msgs at the sink, once |"
               % (ref, ref, spec["messages"]))
    out.append("|---|---:|---:|---:|---:|---|")
    for nm in names:
        rs = [by[(nm, k)] for k in rounds if (nm, k) in by]
        rate = med([r["rate"] for r in rs])
        cpu = med([r["cpu_ms_msg"] for r in rs])
        rr = [by[(nm, k)]["rate"] / by[(ref, k)]["rate"] for k in rounds
              if (nm, k) in by and (ref, k) in by and by[(ref, k)]["rate"]]
        cr = [by[(nm, k)]["cpu_ms_msg"] / by[(ref, k)]["cpu_ms_msg"] for k in rounds
              if (nm, k) in by and (ref, k) in by and by[(ref, k)]["cpu_ms_msg"]]
        ok = "%d of %d runs" % (sum(r["ok"] for r in rs), len(rs))
        out.append("| %s | %.0f | %.2f | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) | %s |" % (
            nm, rate, cpu, med(rr), min(rr), max(rr), med(cr), min(cr), max(cr), ok))
    for nm in names:
        rs = [by[(nm, k)] for k in rounds if (nm, k) in by]
        if not any("samotop-auth" in r["by_proc"] for r in rs):
            continue
        ex = {r["round"]: r["cpu_ms_msg"] - r["by_proc"].get("samotop-auth", 0) for r in rs}
        cr = [ex[k] / by[(ref, k)]["cpu_ms_msg"] for k in rounds
              if k in ex and (ref, k) in by and by[(ref, k)]["cpu_ms_msg"]]
        au = [r["by_proc"].get("samotop-auth", 0) * spec["messages"] / spec["sessions"] for r in rs]
        out.append("")
        out.append("%s without samotop-auth (its scrypt password checks: %.0f ms of CPU "
                   "per login, one login per %d messages): %.2f CPU ms/msg, %.2f (%.2f-%.2f) of %s's."
                   % (nm, med(au), spec["messages"] // spec["sessions"],
                      med(list(ex.values())), med(cr), min(cr), max(cr), ref))
    out.append("")
    out.append("Every run (in the order run):")
    out.append("")
    out.append("| round | server | msgs/s | CPU ms/msg | last AUTH done s | submit s | last at sink s | client CPU s | sink CPU s | softirq s | other CPU s | bg CPU % before | idle server ms/s |")
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        out.append("| %d | %s | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %.1f |" % (
            r["round"], r["target"], r["rate"], r["cpu_ms_msg"], r["auth_last_s"], r["submit_s"],
            r["span_s"], r["client_cpu_s"], r["sink_cpu_s"], r["softirq_s"],
            r["other_cpu_s"], r["bg_pct"], r["idle_ms_s"]))
    out.append("")
    out.append("CPU ms per message by process name (median over the rounds; "
               "what a process that exited during a run used in it is counted "
               "in its parent, e.g. Postfix's master):")
    out.append("")
    for nm in names:
        rs = [r for r in rows if r["target"] == nm]
        keys = sorted({k for r in rs for k in r["by_proc"]},
                      key=lambda k: -med([r["by_proc"].get(k, 0) for r in rs]))
        parts = ["%s %.2f" % (k, med([r["by_proc"].get(k, 0) for r in rs]))
                 for k in keys]
        out.append("- %s: %s" % (nm, ", ".join(p for p in parts if not p.endswith(" 0.00"))))
    tls = sorted({r["tls"] for r in rows if r["tls"]})
    out.append("")
    out.append("TLS negotiated: %s." % ", ".join(tls))
    return "\n".join(out) + "\n"


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    tsv = spec["tsv"]
    rows = []
    stamp = time.strftime("%H%M%S")
    with open(tsv, "w") as f:
        f.write("round\t" + "\t".join(COLS) + "\n")
    # Warm-up, not recorded: every server has run the whole path (processes
    # forked, TLS and Redis connections up, caches filled) before the first
    # measured run; a server that cannot take the warm-up stops the bench.
    for tgt in spec["targets"]:
        if not spec.get("warmup"):
            break
        w = dict(spec, messages=spec["warmup"])
        row = run_one(w, tgt, "%s-%s-warmup" % (tgt["name"], stamp))
        if not row["ok"]:
            log("%s: the warm-up failed; stopping" % tgt["name"])
            sys.exit(2)
    for k in range(spec["rounds"]):
        order = spec["targets"] if k % 2 == 0 else list(reversed(spec["targets"]))
        for tgt in order:
            row = run_one(spec, tgt, "%s-%s-%d" % (tgt["name"], stamp, k + 1))
            row["round"] = k + 1
            rows.append(row)
            with open(tsv, "a") as f:
                f.write("%d\t" % row["round"] + "\t".join(
                    json.dumps(row[c]) if c == "by_proc" else str(row[c])
                    for c in COLS) + "\n")
    with open(spec["md"], "w") as f:
        f.write(report(spec, rows))
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
