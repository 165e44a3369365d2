"""Quotas end to end (issue 5 item 4): samotop-admin sets a quota, smtplib
delivers through the real listener, guard and mailbox until the account is
full; RCPT then gets 452 4.2.2 (RFC 3463 X.2.2), a declared SIZE= too big
for what is left gets it at RCPT (RFC 1870), the mailbox refuses a copy
that would pass the quota at delivery, and the admin shows the usage the
mailbox counted.
"""
import glob
import os
import smtplib
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402

BASE = 20200
SYS = None
MTA = ("127.0.0.1", BASE + 10)
DOMAIN = "quota.test"


def setUpModule():
    global SYS
    SYS = st.System(BASE, extra_env={
        "SAMOTOP_BUS_TIMEOUT_MS": "5000",
        "SAMOTOP_HOSTNAME": "mx.quota.test",
    }).start()
    SYS.admin("domain", "add", DOMAIN)


def tearDownModule():
    SYS.stop()


def redis(*args):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(BASE + 6)]
                       + [str(a) for a in args], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def user(local, quota=None):
    addr = "%s@%s" % (local, DOMAIN)
    SYS.admin("user", "add", addr, input="pw-%s\n" % local)
    if quota is not None:
        SYS.admin("user", "quota", addr, quota)
    return addr


def files(local):
    d = os.path.join(SYS.data, "mail", DOMAIN, local)
    return sorted(glob.glob(os.path.join(d, "new", "*")) +
                  glob.glob(os.path.join(d, "cur", "*")))


def stored_bytes(local):
    return sum(os.path.getsize(f) for f in files(local))


def used(addr):
    v = redis("HGET", "samotop:{%s}:usage" % DOMAIN, addr.split("@")[0])
    return int(v) if v else 0


def wait_used(addr, want, timeout=10.0):
    """The count moves right after the copy is stored; wait for it."""
    deadline = time.time() + timeout
    while time.time() < deadline and used(addr) != want:
        time.sleep(0.05)
    return used(addr)


def message(n):
    """A message of about n bytes."""
    head = "From: a@remote.test\r\nSubject: quota\r\n\r\n"
    line = "x" * 76 + "\r\n"
    return head + line * max(1, (n - len(head)) // len(line))


def deliver(addr, n):
    """One message of about n bytes to addr, which must be taken."""
    with client() as c:
        c.mail("a@remote.test")
        code, text = c.rcpt(addr)
        assert code == 250, (code, text)
        code, text = c.data(message(n))
        assert code == 250, (code, text)


def client():
    c = smtplib.SMTP(MTA[0], MTA[1], timeout=30)
    c.ehlo("client.remote.test")
    return c


class Quota(unittest.TestCase):
    def test_fill_until_full_then_452(self):
        addr = user("fill")
        deliver(addr, 1000)
        size = wait_used(addr, stored_bytes("fill"))
        self.assertGreater(size, 1000)
        # Room for exactly three such messages.
        SYS.admin("user", "quota", addr, str(3 * size))
        for i in range(2):
            deliver(addr, 1000)
            self.assertEqual(wait_used(addr, (i + 2) * size), (i + 2) * size)
        with client() as c:
            c.mail("a@remote.test")
            code, text = c.rcpt(addr)
            self.assertEqual(code, 452, text)
            self.assertIn(b"4.2.2", text)
            self.assertIn(b"Mailbox full", text)
        self.assertEqual(len(files("fill")), 3)
        self.assertEqual(used(addr), stored_bytes("fill"))
        self.assertIn("guard_rcpt_over_quota", SYS.logtext())

    def test_declared_size_over_quota_refused_at_rcpt(self):
        addr = user("sized", "10K")
        with client() as c:
            self.assertIn("size", c.esmtp_features)
            c.mail("a@remote.test", ["SIZE=20000"])
            code, text = c.rcpt(addr)
            self.assertEqual(code, 452, text)
            self.assertIn(b"4.2.2", text)
            c.rset()
            c.mail("a@remote.test", ["SIZE=5000"])
            code, text = c.rcpt(addr)
            self.assertEqual(code, 250, text)
            code, text = c.data(message(4000))
            self.assertEqual(code, 250, text)
        self.assertEqual(wait_used(addr, stored_bytes("sized")),
                         stored_bytes("sized"))
        with client() as c:
            # 10K less about 4K left: 7000 no longer fits.
            c.mail("a@remote.test", ["SIZE=7000"])
            code, text = c.rcpt(addr)
            self.assertEqual(code, 452, text)
        self.assertEqual(len(files("sized")), 1)

    def test_one_full_recipient_of_several(self):
        full = user("full1")
        ok1 = user("ok1", "1M")
        ok2 = user("ok2")
        deliver(full, 2000)
        wait_used(full, stored_bytes("full1"))
        SYS.admin("user", "quota", full, "1K")
        with client() as c:
            c.mail("a@remote.test")
            code, text = c.rcpt(ok1)
            self.assertEqual(code, 250, text)
            code, text = c.rcpt(full)
            self.assertEqual(code, 452, text)
            self.assertIn(b"4.2.2", text)
            code, text = c.rcpt(ok2)
            self.assertEqual(code, 250, text)
            code, text = c.data(message(500))
            self.assertEqual(code, 250, text)
        self.assertEqual(len(files("ok1")), 1)
        self.assertEqual(len(files("ok2")), 1)
        self.assertEqual(len(files("full1")), 1)  # the first one only
        self.assertEqual(wait_used(ok1, stored_bytes("ok1")),
                         stored_bytes("ok1"))
        self.assertEqual(wait_used(ok2, stored_bytes("ok2")),
                         stored_bytes("ok2"))

    def test_alias_with_a_full_target(self):
        a = user("al1")
        b = user("al2")
        SYS.admin("alias", "add", "list@" + DOMAIN, a, b)
        deliver("list@" + DOMAIN, 1500)
        self.assertEqual(len(files("al1")), 1)
        self.assertEqual(len(files("al2")), 1)
        wait_used(b, stored_bytes("al2"))
        SYS.admin("user", "quota", b, "1K")
        with client() as c:
            c.mail("a@remote.test")
            code, text = c.rcpt("list@" + DOMAIN)
            self.assertEqual(code, 452, text)
            self.assertIn(b"4.2.2", text)
            # The target itself is as full.
            self.assertEqual(c.rcpt(b)[0], 452)
            self.assertEqual(c.rcpt(a)[0], 250)

    def test_delivery_refuses_copy_over_quota(self):
        """Two transactions pass RCPT while the account is empty; the
        mailbox stores the first and refuses the second at delivery."""
        addr = user("race", "1500")
        c1, c2 = client(), client()
        try:
            for c in (c1, c2):
                c.mail("a@remote.test")
                code, text = c.rcpt(addr)
                self.assertEqual(code, 250, text)
            self.assertEqual(c1.data(message(1000))[0], 250)
            wait_used(addr, stored_bytes("race"))
            code, text = c2.data(message(1000))
            self.assertEqual(code, 452, text)
            self.assertIn(b"4.2.2", text)
        finally:
            c1.close()
            c2.close()
        self.assertEqual(len(files("race")), 1)
        self.assertEqual(used(addr), stored_bytes("race"))
        self.assertIn("over_quota", SYS.logtext())

    def test_burst_of_deliveries_stops_at_the_quota(self):
        """Twelve transactions pass RCPT while the account has room for
        five more, then send DATA at once: the mailbox lets exactly five
        in, though their lookups overlap (copies let in are held until
        counted), and the others get 452 4.2.2."""
        addr = user("burst")
        deliver(addr, 1200)
        size = wait_used(addr, stored_bytes("burst"))
        SYS.admin("user", "quota", addr, str(6 * size))
        clients = [client() for _ in range(12)]
        codes = []
        lock = threading.Lock()

        def data(c):
            code, _ = c.data(message(1200))
            with lock:
                codes.append(code)

        try:
            for c in clients:
                c.mail("a@remote.test")
                self.assertEqual(c.rcpt(addr)[0], 250)
            threads = [threading.Thread(target=data, args=(c,))
                       for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        finally:
            for c in clients:
                c.close()
        self.assertEqual(sorted(codes), [250] * 5 + [452] * 7)
        self.assertEqual(len(files("burst")), 6)
        self.assertEqual(wait_used(addr, 6 * size), 6 * size)
        self.assertEqual(stored_bytes("burst"), 6 * size)

    def test_admin_shows_usage_and_removal_lets_mail_in(self):
        addr = user("shown")
        deliver(addr, 2500)
        n = wait_used(addr, stored_bytes("shown"))
        SYS.admin("user", "quota", addr, "2K")
        self.assertEqual(n, stored_bytes("shown"))
        show = SYS.admin("user", "show", addr).stdout
        self.assertIn("address: %s\n" % addr, show)
        self.assertIn("quota: 2048 (2.0K)\n", show)
        self.assertIn("used: %d (" % n, show)
        listed = SYS.admin("user", "list", DOMAIN).stdout.splitlines()
        self.assertIn("%s quota=2048 used=%d" % (addr, n), listed)
        with client() as c:
            c.mail("a@remote.test")
            self.assertEqual(c.rcpt(addr)[0], 452)
        r = SYS.admin("user", "quota", addr, "none")
        self.assertEqual(r.stdout, "no quota for user %s\n" % addr)
        self.assertIn("quota: none\n", SYS.admin("user", "show", addr).stdout)
        self.assertEqual(redis("HEXISTS", "samotop:{%s}:user:shown" % DOMAIN,
                               "quota"), "0")
        with client() as c:
            c.mail("a@remote.test")
            self.assertEqual(c.rcpt(addr)[0], 250)
            self.assertEqual(c.data(message(2500))[0], 250)
        self.assertEqual(len(files("shown")), 2)
        listed = SYS.admin("user", "list", DOMAIN).stdout.splitlines()
        self.assertIn("%s used=%d" % (addr, wait_used(
            addr, stored_bytes("shown"))), listed)

    def test_recount_after_drift(self):
        addr = user("drift")
        with client() as c:
            c.mail("a@remote.test")
            self.assertEqual(c.rcpt(addr)[0], 250)
            self.assertEqual(c.data(message(3000))[0], 250)
            c.mail("a@remote.test")
            self.assertEqual(c.rcpt(addr)[0], 250)
            self.assertEqual(c.data(message(1000))[0], 250)
        wait_used(addr, stored_bytes("drift"))
        os.unlink(files("drift")[0])  # mail removed behind our back
        self.assertNotEqual(used(addr), stored_bytes("drift"))
        r = SYS.admin("user", "quota-recount", addr)
        self.assertEqual(used(addr), stored_bytes("drift"))
        self.assertIn("in 1 messages", r.stdout)

    def test_bad_sizes_and_unknown_users(self):
        addr = user("badsize")
        for bad in ("lots", "1-", "5X", "1.5G", "", "9" * 40):
            r = SYS.admin("user", "quota", addr, bad, check=False)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("is not a size", r.stderr)
        r = SYS.admin("user", "quota", "nobody@" + DOMAIN, "1M", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such user", r.stderr)
        r = SYS.admin("user", "quota", addr, "1G")
        self.assertEqual(r.stdout, "quota of user %s: 1073741824 (1.0G)\n"
                         % addr)
        self.assertEqual(redis("HGET", "samotop:{%s}:user:badsize" % DOMAIN,
                               "quota"), "1073741824")


if __name__ == "__main__":
    unittest.main()
