#!/usr/bin/env python3
"""bench/imap/repeat.py - one IMAP command again and again, for profiling a
server under bench/imap/run -x (which exports IB_USER, IB_PASS, IB_HERE).

usage: repeat.py PORT COMMAND N [FOLDER] [READY_FILE]
Logs in (STARTTLS), selects FOLDER (default Small), runs COMMAND once (so
index and caches are built), touches READY_FILE (default
/tmp/bench-imap-prof.ready), then runs it N times and prints the mean time.

Example (the profile in BENCHMARKS.md):
  bench/imap/run -x 'mb=$(pgrep -P $IB_SAMOTOP_PID -x samotop-mailbox);
    rm -f /tmp/bench-imap-prof.ready;
    python3 $IB_HERE/repeat.py $IB_SAMOTOP_PORT "UID SEARCH FROM \\"smith\\"" 30 &
    while [ ! -e /tmp/bench-imap-prof.ready ]; do sleep 0.1; done;
    perf record -F 999 --call-graph dwarf -o /tmp/bench-imap-perf.data -p $mb -- sleep 4; wait'
"""
import os
import sys
import time

sys.path.insert(0, os.environ.get("IB_HERE") or os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

port, cmd, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
folder = sys.argv[4] if len(sys.argv) > 4 else "Small"
ready = sys.argv[5] if len(sys.argv) > 5 else "/tmp/bench-imap-prof.ready"
c = bench.Imap(port)
c.starttls_login(os.environ.get("IB_USER", "alice@example.test"),
                 os.environ.get("IB_PASS", "bench-secret"))
c.ok("SELECT " + folder)
c.ok(cmd)
open(ready, "w").close()
t = time.perf_counter()
for i in range(n):
    c.ok(cmd)
print("%s: %.3f s per command (port %d)" % (cmd, (time.perf_counter() - t) / n, port))
c.close()
