#!/usr/bin/env python3
"""bench/inbound/report.py RAW.tsv [REFERENCE] - the ratio table of a
matrix.sh run: every server beside the reference (default postfix).

For each concurrency and size, each server's median delivered msg/s, server
CPU ms per message, peak PSS and peak RSS of its process tree, and each of
them divided by the reference's. A ratio is taken within one repetition
(the runs of a repetition are interleaved, minutes apart at most, so the
machine's drift hits both alike) and the table gives the median over the
repetitions, with the lowest and highest in brackets. Only runs where
smtp-source succeeded and every message reached the Maildir count.
"""
import csv
import statistics
import sys


def num(v):
    try:
        return float(v)
    except ValueError:
        return None


def load(path):
    runs = []
    with open(path) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            msgs = num(r["msgs"])
            delivered = num(r["delivered"])
            ok = r["rc"] == "0" and (delivered is None or delivered >= msgs)
            cpu = num(r["server_cpu_s"])
            runs.append({
                "rep": r["rep"], "target": r["target"],
                "conc": int(r["sessions"]), "size": int(r["bytes"]),
                "ok": ok, "capped": r["capped"] == "1",
                "rate": num(r["delivered_mps"]) or num(r["accepted_mps"]),
                "cpu": cpu * 1000 / msgs if cpu is not None and msgs else None,
                "pss": (num(r["peak_pss_kb"]) or 0) / 1024,
                "rss": (num(r["peak_rss_kb"]) or 0) / 1024,
            })
    return runs


def size_label(b):
    return "%d KiB" % (b // 1024) if b % 1024 == 0 else "%d B" % b


def fmt(v, digits):
    return "-" if v is None else ("%." + str(digits) + "f") % v


def ratio_text(rs):
    if not rs:
        return "-"
    if len(rs) == 1:
        return "%.2f" % rs[0]
    return "%.2f (%.2f-%.2f)" % (statistics.median(rs), min(rs), max(rs))


def main():
    runs = load(sys.argv[1])
    ref = sys.argv[2] if len(sys.argv) > 2 else "postfix"
    targets = []
    for r in runs:
        if r["target"] not in targets:
            targets.append(r["target"])
    if ref in targets:
        targets.remove(ref)
        targets.insert(0, ref)
    cells = sorted({(r["size"], r["conc"]) for r in runs})
    print("| conc | size | server | delivered msg/s | x %s | CPU ms/msg "
          "| x %s | peak PSS MiB | x %s | peak RSS MiB | ok runs |"
          % (ref, ref, ref))
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, conc in cells:
        byrep = {}
        for r in runs:
            if r["size"] == size and r["conc"] == conc:
                byrep.setdefault(r["target"], {})[r["rep"]] = r
        for t in targets:
            reps = byrep.get(t, {})
            if not reps:
                continue
            good = [r for r in reps.values() if r["ok"]]
            med = {}
            for k in ("rate", "cpu", "pss", "rss"):
                vals = [r[k] for r in good if r[k] is not None]
                med[k] = statistics.median(vals) if vals else None
            ratios = {"rate": [], "cpu": [], "pss": []}
            for rep, r in reps.items():
                o = byrep.get(ref, {}).get(rep)
                if not r["ok"] or o is None or not o["ok"]:
                    continue
                for k in ratios:
                    if r[k] is not None and o[k]:
                        ratios[k].append(r[k] / o[k])
            capped = sum(1 for r in good if r["capped"])
            print("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d%s |"
                  % (conc, size_label(size), t, fmt(med["rate"], 0),
                     ratio_text(ratios["rate"]), fmt(med["cpu"], 2),
                     ratio_text(ratios["cpu"]), fmt(med["pss"], 0),
                     ratio_text(ratios["pss"]), fmt(med["rss"], 0),
                     len(good), len(reps),
                     " (%d capped)" % capped if capped else ""))
    print()
    print("*delivered* = messages / time from the first connection until the "
          "last file is in the Maildir; *CPU* = user+system CPU of the "
          "server's whole process tree (for samotopd: itself, redis-server, "
          "samotop-bus and every actor) per message; *PSS* = proportional "
          "set size summed over that tree (shared pages split between the "
          "processes that share them), *RSS* the same counting shared pages "
          "once per process. *x %s* = the server's figure divided by "
          "%s's in the same repetition, median over the repetitions "
          "(lowest-highest).  " % (ref, ref))


if __name__ == "__main__":
    main()
