#!/usr/bin/env python3
"""bench/scale/scale.py - the measuring part of bench/scale/run.

Each run is bench/outbound/bench.py's run_one(), reused as it is: it waits
for a quiet machine, runs client.py against one samotopd and returns the
rate (messages / (last message at the sink - first connect)), the CPU of
samotopd's process tree, of the client, of the sink, the machine's softirq
and everything else busy ("other": other users of the machine), and checks
every Message-ID at the sink once and the queue empty afterwards.

Here: a warm-up per point, then R rounds over the points (1, 2, 4 copies),
the order reversed every round, and the report: medians with min-max, the
speed-up over the first point in the same round, and where the CPU went.
CPU use is given in cores over the run's span (first connect to last
message at the sink): samotopd's tree up to the last message, the client's
whole life, and the machine's busy time (all processes, softirq included:
/proc/stat sampled every 50 ms by a thread here, interpolated at the
span's ends) over its cores.

usage: scale.py SPEC.json   (written by bench/scale/run; the keys are
bench.py's, and each target has "copies")
"""
import importlib.util
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "outbound_bench", os.path.join(HERE, "..", "outbound", "bench.py"))
ob = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ob)

# Process names as /proc has them (15 characters): samotop-listene(r).
STAGES = ["samotop-listener", "samotop-guard", "samotop-relay",
          "samotop-queue", "samotop-auth", "samotop-bus", "redis-server",
          "samotopd"]


def log(*a):
    print("scale:", *a, file=sys.stderr, flush=True)


class Busy:
    """The machine's busy CPU ticks, sampled every 50 ms."""

    def __init__(self):
        self.samples = []
        self.lock = threading.Lock()
        t = threading.Thread(target=self.loop, daemon=True)
        t.start()

    def loop(self):
        while True:
            v = (time.time(), ob.machine_busy())
            with self.lock:
                self.samples.append(v)
                if len(self.samples) > 20000:
                    del self.samples[:10000]
            time.sleep(0.05)

    def at(self, t):
        with self.lock:
            ss = list(self.samples)
        for (t0, b0), (t1, b1) in zip(ss, ss[1:]):
            if t0 <= t <= t1:
                return b0 + (b1 - b0) * (t - t0) / (t1 - t0) if t1 > t0 else b0
        return None

    def pct(self, t0, t1):
        a, b = self.at(t0), self.at(t1)
        if a is None or b is None or t1 <= t0:
            return float("nan")
        return 100.0 * (b - a) / ob.TCK / (t1 - t0) / ob.NCPU


MULTIPLIED = ["samotop-listener", "samotop-guard", "samotop-relay"]


def copy_shares(t0, t1):
    """{stage: sorted shares (%) of each copy in the stage's CPU} between
    two ob.tree() snapshots: how evenly the copies split the work."""
    out = {}
    for stage in MULTIPLIED:
        d = [t1[p][1] - t0[p][1] for p in t1
             if p in t0 and stage.startswith(t1[p][0])]
        tot = sum(d)
        if len(d) > 1 and tot > 0:
            out[stage] = sorted(round(100.0 * x / tot) for x in d)
    return out


def stage_ms(row, stage):
    return sum(v for k, v in row["by_proc"].items() if stage.startswith(k))


def cores(row):
    """(samotopd cores, client cores, machine busy %) over the run's span."""
    t = row["span_s"]
    if t <= 0:
        return 0.0, 0.0, 0.0
    return (row["cpu_ms_msg_at_last"] * row["msgs"] / 1000.0 / t,
            row["client_cpu_s"] / t, row["busy_pct"])


def mmm(xs, fmt):
    """median (min-max)"""
    if not xs:
        return "-"
    return ("%s (%s-%s)" % (fmt, fmt, fmt)) % (ob.med(xs), min(xs), max(xs))


def report(spec, rows):
    names = [t["name"] for t in spec["targets"]]
    copies = {t["name"]: t["copies"] for t in spec["targets"]}
    first = names[0]
    by = {(r["target"], r["round"]): r for r in rows}
    rounds = sorted({r["round"] for r in rows})
    out = []
    out.append("| copies of listener, guard, relay | msgs/s | ÷ %s copy (same round) | "
               "samotopd cores | client cores | machine busy %% | CPU ms/msg | "
               "all %d msgs at the sink, once |" % (copies[first], spec["messages"]))
    out.append("|---:|---:|---:|---:|---:|---:|---:|---|")
    for nm in names:
        rs = [r for r in rows if r["target"] == nm]
        c = [cores(r) for r in rs]
        up = [by[(nm, k)]["rate"] / by[(first, k)]["rate"] for k in rounds
              if (nm, k) in by and (first, k) in by and by[(first, k)]["rate"]]
        out.append("| %d | %s | %s | %s | %s | %s | %s | %d of %d runs |" % (
            copies[nm], mmm([r["rate"] for r in rs], "%.0f"), mmm(up, "%.2f"),
            mmm([x[0] for x in c], "%.2f"), mmm([x[1] for x in c], "%.2f"),
            mmm([x[2] for x in c], "%.0f"),
            mmm([r["cpu_ms_msg"] for r in rs], "%.2f"),
            sum(r["ok"] for r in rs), len(rs)))
    out.append("")
    out.append("CPU ms per message by process name, median over the rounds "
               "(all copies of a stage together):")
    out.append("")
    out.append("| copies | " + " | ".join(s.replace("samotop-", "") for s in STAGES) +
               " | client | sink | softirq | other |")
    out.append("|---:|" + "---:|" * (len(STAGES) + 4))
    for nm in names:
        rs = [r for r in rows if r["target"] == nm]
        n = spec["messages"]
        cells = ["%.2f" % ob.med([stage_ms(r, s) for r in rs]) for s in STAGES]
        cells += ["%.2f" % ob.med([1000.0 * r[k] / n for r in rs])
                  for k in ("client_cpu_s", "sink_cpu_s", "softirq_s", "other_cpu_s")]
        out.append("| %d | %s |" % (copies[nm], " | ".join(cells)))
    out.append("")
    out.append("How the copies split each multiplied stage's CPU: each copy's "
               "share in %, lowest to highest, per run (ticks of 10 ms, so "
               "a few points of noise):")
    out.append("")
    for nm in names[1:] if len(names) > 1 else []:
        rs = [r for r in rows if r["target"] == nm]
        for stage in MULTIPLIED:
            runs = ["/".join(str(x) for x in r["shares"].get(stage, []))
                    for r in rs]
            out.append("- %d copies, %s: %s" % (copies[nm], stage.replace(
                "samotop-", ""), ", ".join(x for x in runs if x) or "-"))
    out.append("")
    out.append("Every run (in the order run):")
    out.append("")
    out.append("| round | copies | msgs/s | samotopd cores | client cores | machine busy % "
               "| CPU ms/msg | last at sink s | other CPU s | bg CPU % before | dups | ok |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        c = cores(r)
        out.append("| %d | %d | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.2f | %.0f | %d | %s |" % (
            r["round"], copies[r["target"]], r["rate"], c[0], c[1], c[2],
            r["cpu_ms_msg"], r["span_s"], r["other_cpu_s"], r["bg_pct"],
            r["dups"], "yes" if r["ok"] else "NO: " + (r["errors"] or "see tsv")[:80]))
    return "\n".join(out) + "\n"


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    tsv = spec["tsv"]
    rows = []
    stamp = time.strftime("%H%M%S")
    with open(tsv, "w") as f:
        f.write("round\t" + "\t".join(ob.COLS) + "\tbusy_pct\tshares\n")
    busy = Busy()
    for tgt in spec["targets"]:
        if not spec.get("warmup"):
            break
        w = dict(spec, messages=spec["warmup"])
        row = ob.run_one(w, tgt, "%s-%s-warmup" % (tgt["name"], stamp))
        if not row["ok"]:
            log("%s: the warm-up failed; stopping" % tgt["name"])
            sys.exit(2)
    for k in range(spec["rounds"]):
        order = spec["targets"] if k % 2 == 0 else list(reversed(spec["targets"]))
        for tgt in order:
            root = ob.pid_of(tgt["pidfile"])
            t0 = ob.tree(root)
            row = ob.run_one(spec, tgt, "%s-%s-%d" % (tgt["name"], stamp, k + 1))
            row["shares"] = copy_shares(t0, ob.tree(root))
            row["round"] = k + 1
            row["busy_pct"] = busy.pct(row["t_first_connect"], row["t_last"]) \
                if row["t_last"] else float("nan")
            rows.append(row)
            c = cores(row)
            log("round %d %s: %.0f msg/s, samotopd %.2f cores, client %.2f, machine %.0f%% busy"
                % (k + 1, tgt["name"], row["rate"], c[0], c[1], c[2]))
            with open(tsv, "a") as f:
                f.write("%d\t" % row["round"] + "\t".join(
                    json.dumps(row[c]) if c == "by_proc" else str(row[c])
                    for c in ob.COLS) + "\t%.1f\t%s\n" % (
                        row["busy_pct"], json.dumps(row["shares"])))
    with open(spec["md"], "w") as f:
        f.write(report(spec, rows))
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
