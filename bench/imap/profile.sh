#!/usr/bin/env bash
# bench/imap/profile.sh - run under bench/imap/run -x: perf record -g of
# samotop-mailbox while repeat.py sends the two commands where samotop is
# slower than Dovecot, then the same command timed on Dovecot and on samotop
# without perf. Profiles in /tmp/bench-imap-perf1.data, /tmp/bench-imap-perf2.data.
#   bench/imap/run -x "bash bench/imap/profile.sh"
set -e
mb=$(pgrep -P $IB_SAMOTOP_PID -x samotop-mailbox)
i=0
for c in "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])" 'UID SEARCH FROM "smith"'; do
  i=$((i+1))
  rm -f /tmp/bench-imap-prof.ready
  python3 $IB_HERE/repeat.py $IB_SAMOTOP_PORT "$c" 30 &
  cp=$!
  while [ ! -e /tmp/bench-imap-prof.ready ]; do sleep 0.1; done
  perf record -F 999 --call-graph dwarf -o /tmp/bench-imap-perf$i.data -p $mb -- sleep 4 >/dev/null 2>&1
  wait $cp
  python3 $IB_HERE/repeat.py $IB_DOVECOT_PORT "$c" 30
  # the same without perf attached
  python3 $IB_HERE/repeat.py $IB_SAMOTOP_PORT "$c" 30
done
# A SELECT of the 100,000-message INBOX, settled (its directories unchanged
# for seconds): the session alternates SELECT INBOX and SELECT Small.
rm -f /tmp/bench-imap-prof.ready
python3 - <<'PY' &
import os, sys, time
sys.path.insert(0, os.environ["IB_HERE"]); import bench
c = bench.Imap(int(os.environ["IB_SAMOTOP_PORT"])); c.starttls_login(os.environ["IB_USER"], os.environ["IB_PASS"])
c.ok("SELECT INBOX"); c.ok("SELECT Small"); time.sleep(3)
open("/tmp/bench-imap-prof.ready", "w").close()
t, n, ti = time.time(), 0, 0.0
while time.time() - t < 6:
    t0 = time.perf_counter(); c.ok("SELECT INBOX"); ti += time.perf_counter() - t0
    c.ok("SELECT Small"); n += 1
print("SELECT INBOX (settled, after SELECT Small): %.4f s per command" % (ti / n))
c.close()
PY
cp=$!
while [ ! -e /tmp/bench-imap-prof.ready ]; do sleep 0.1; done
perf record -F 999 --call-graph dwarf -o /tmp/bench-imap-perf3.data -p $mb -- sleep 4 >/dev/null 2>&1
wait $cp
