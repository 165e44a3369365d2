"""samotop-admin's route and queue verbs against a running samotopd.

route: add (host names, IPv4, bracketed IPv6, the "*" smarthost, --tls),
replace, list (sorted, smarthost last), del, and every refusal with its
exit status; the hash samotop:routes exactly as schemas/redis.md has it.

queue: messages are put into the queue's keys the way samotop-queue keeps
them (schemas/redis.md, "The queue"), due an hour from now so that the
running queue leaves them alone; then list and show read them, retry
makes them due and the real queue delivers them into the real mailbox,
and delete removes them (a held lease included) without a bounce.

Exit statuses: 0 done, 1 refused, 2 usage.
"""
import os
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402

BASE = 19250
MSG = ("From: alice@example.test\r\nTo: bob@example.test\r\n"
       "Subject: queued\r\n\r\nhello\r\n")


class Redis:
    """Just enough RESP to read and write the queue's keys."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.buf += data
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

    def __call__(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()

    def hgetall(self, key):
        flat = self("HGETALL", key)
        return dict(zip(flat[0::2], flat[1::2]))


SYSTEM = None
REDIS = None


def setUpModule():
    global SYSTEM, REDIS
    SYSTEM = st.System(BASE).start()
    REDIS = Redis(BASE + 6)


def tearDownModule():
    REDIS.close()
    SYSTEM.stop()


def now_ms():
    return int(time.time() * 1000)


class AdminTest(unittest.TestCase):
    @property
    def redis(self):
        return REDIS

    def admin(self, *args):
        return subprocess.run([st.bin_path("samotop-admin")] + list(args),
                              env=SYSTEM.env, capture_output=True, text=True,
                              timeout=60)

    def ok(self, *args):
        r = self.admin(*args)
        self.assertEqual(r.returncode, 0, "%s: %s%s" % (args, r.stdout,
                                                        r.stderr))
        return r

    def refused(self, status, message, *args):
        r = self.admin(*args)
        self.assertEqual(r.returncode, status, "%s: rc=%d\n%s%s" % (
            args, r.returncode, r.stdout, r.stderr))
        self.assertIn(message, r.stderr, args)
        self.assertEqual(r.stdout, "", args)
        return r


class Routes(AdminTest):
    def tearDown(self):
        self.redis("DEL", "samotop:routes")

    def test_add_list_del(self):
        r = self.ok("route", "add", "Remote.TEST", "MX.Remote.Test:2525")
        self.assertEqual(r.stdout,
                         "route remote.test: mx.remote.test:2525 "
                         "tls=opportunistic\n")
        self.ok("route", "add", "v4.test", "192.0.2.7:25", "--tls",
                "required")
        self.ok("route", "add", "v6.test", "[2001:db8::1]:587",
                "--tls=opportunistic")
        self.ok("route", "add", "*", "smarthost.test:587", "--tls",
                "required")
        self.assertEqual(self.redis.hgetall("samotop:routes"), {
            "remote.test": "mx.remote.test:2525;tls=opportunistic",
            "v4.test": "192.0.2.7:25;tls=required",
            "v6.test": "[2001:db8::1]:587;tls=opportunistic",
            "*": "smarthost.test:587;tls=required"})
        self.assertEqual(self.ok("route", "list").stdout.splitlines(), [
            "remote.test mx.remote.test:2525 tls=opportunistic",
            "v4.test 192.0.2.7:25 tls=required",
            "v6.test [2001:db8::1]:587 tls=opportunistic",
            "* smarthost.test:587 tls=required"])
        r = self.ok("route", "add", "remote.test", "other.test:25")
        self.assertEqual(r.stdout,
                         "route remote.test: other.test:25 tls=opportunistic"
                         " (was mx.remote.test:2525;tls=opportunistic)\n")
        self.assertEqual(self.ok("route", "del", "REMOTE.test").stdout,
                         "deleted route remote.test\n")
        self.assertEqual(self.ok("route", "del", "*").stdout,
                         "deleted route *\n")
        self.assertEqual(self.redis.hgetall("samotop:routes"), {
            "v4.test": "192.0.2.7:25;tls=required",
            "v6.test": "[2001:db8::1]:587;tls=opportunistic"})
        self.refused(1, "no route for remote.test",
                     "route", "del", "remote.test")

    def test_empty_list(self):
        self.assertEqual(self.ok("route", "list").stdout, "")

    def test_refusals(self):
        self.refused(1, "is not a domain", "route", "add", "bad domain",
                     "mx.test:25")
        self.refused(1, "is not HOST:PORT", "route", "add", "a.test",
                     "mx.test")
        self.refused(1, "is not HOST:PORT", "route", "add", "a.test",
                     "mx.test:0")
        self.refused(1, "is not HOST:PORT", "route", "add", "a.test",
                     "mx.test:70000")
        self.refused(1, "is not an IPv6 address", "route", "add", "a.test",
                     "[nonsense]:25")
        self.refused(1, "put an IPv6 address in brackets", "route", "add",
                     "a.test", "2001:db8::1:25")
        self.refused(1, "is not a domain", "route", "add", "a.test",
                     "bad_host!:25")
        self.refused(2, "--tls takes required or opportunistic", "route",
                     "add", "a.test", "mx.test:25", "--tls", "sometimes")
        self.refused(2, "--tls takes required or opportunistic", "route",
                     "add", "a.test", "mx.test:25", "--tls")
        self.refused(2, "--tls is only for route add", "route", "list",
                     "--tls", "required")
        self.refused(2, "too few arguments", "route", "add", "a.test")
        self.refused(2, "too many arguments", "route", "del", "a", "b")
        self.refused(2, "unknown subverb", "route", "show")
        self.assertEqual(self.redis("EXISTS", "samotop:routes"), 0)

    def test_help(self):
        r = self.ok("help", "route")
        self.assertIn("route add DOMAIN HOST:PORT", r.stdout)
        r = self.ok("route", "add", "--help")
        self.assertIn("--tls required", r.stdout)


class Queue(AdminTest):
    @classmethod
    def setUpClass(cls):
        r = subprocess.run([st.bin_path("samotop-admin"), "domain", "add",
                            "example.test"], env=SYSTEM.env,
                           capture_output=True, text=True)
        assert r.returncode in (0, 1), r.stderr
        for user in ("alice", "bob", "carol"):
            subprocess.run([st.bin_path("samotop-admin"), "user", "add",
                            "%s@example.test" % user], env=SYSTEM.env,
                           capture_output=True, text=True, input="pw\n")

    def put(self, qid, rcpts, sender="alice@example.test", due_in_ms=3600000,
            created_ago_ms=125000, last=None):
        """Queues a message as samotop-queue would have left it after a
        failed attempt: rcpts are ("mailbox"|"addr", address) pairs."""
        now = now_ms()
        due = now + due_in_ms
        self.redis("HSET", "samotop:{q}:msg:" + qid,
                   "mail_from", sender, "envid", "", "ret", "",
                   "eight_bit", "0", "smtputf8", "0", "user", "",
                   "client_ip", "127.0.0.1", "trace", "t" + qid[-8:],
                   "dsn", "", "dsn_of", "",
                   "created_ms", now - created_ago_ms,
                   "expires_ms", now + 432000000, "size", len(MSG),
                   "nrcpts", len(rcpts))
        self.redis("SET", "samotop:{q}:body:" + qid, MSG)
        fields = []
        for i, (kind, addr) in enumerate(rcpts):
            fields += ["%d.%s" % (i, kind), addr, "%d.rcpt" % i, addr,
                       "%d.status" % i, "pending", "%d.attempts" % i, 1,
                       "%d.next_ms" % i, due, "%d.last_ms" % i, now - 5000]
            if last:
                fields += ["%d.code" % i, last[0], "%d.ecode" % i, last[1],
                           "%d.text" % i, last[2], "%d.mx" % i, last[3]]
        self.redis("HSET", "samotop:{q}:rcpts:" + qid, *fields)
        self.redis("ZADD", "samotop:{q}:due", due, qid)
        self.addCleanup(self.drop, qid)

    def drop(self, qid):
        for k in ("msg", "body", "rcpts", "lease"):
            self.redis("DEL", "samotop:{q}:%s:%s" % (k, qid))
        self.redis("ZREM", "samotop:{q}:due", qid)

    def gone(self, qid, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if (self.redis("EXISTS", "samotop:{q}:msg:" + qid) == 0 and
                    self.redis("ZSCORE", "samotop:{q}:due", qid) is None):
                return True
            time.sleep(0.1)
        return False

    def inbox(self, user):
        d = os.path.join(SYSTEM.data, "mail", "example.test", user, "new")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def test_list_show_retry_delete(self):
        a = "1795957000-00000000000000a1"
        b = "1795957001-00000000000000b2"
        self.put(a, [("mailbox", "bob@example.test"),
                     ("addr", "far@remote.test")],
                 last=(451, "4.3.0", "Temporary failure, try again later",
                       "mx.remote.test:25"))
        self.put(b, [("addr", "x@remote.test")], sender="",
                 created_ago_ms=7200000)
        lines = self.ok("queue", "list").stdout.splitlines()
        self.assertTrue(lines[0].startswith("ID "), lines)
        row_a = [l for l in lines if l.startswith(a)]
        row_b = [l for l in lines if l.startswith(b)]
        self.assertEqual(len(row_a), 1, lines)
        self.assertEqual(row_a[0].split()[1:5],
                         ["2m05s", "alice@example.test", "2/2", "in"])
        self.assertTrue(row_a[0].endswith(
            "451 4.3.0 Temporary failure, try again later"), row_a)
        self.assertEqual(row_b[0].split()[1:4], ["2h00m", "<>", "1/1"])
        self.assertTrue(row_b[0].endswith(" -"), row_b)
        self.assertIn("-- 2 messages, 3 recipients pending", lines[-1])

        out = self.ok("queue", "show", a).stdout
        for want in ("id: %s\n" % a, "sender: <alice@example.test>\n",
                     "recipients: 2 pending of 2\n",
                     "  0 mailbox bob@example.test pending attempts=1",
                     "  1 relay far@remote.test pending attempts=1",
                     "    last: 451 4.3.0 Temporary failure, try again later"
                     " from mx.remote.test:25\n",
                     "size: %d\n" % len(MSG), "next attempt: in 59m"):
            self.assertIn(want, out)

        # retry: due now, and the real queue takes it; the mailbox gets
        # it, and (no relay route to anywhere here) the remote recipient
        # stays pending or fails; either way, bob has his copy.
        before = self.inbox("bob")
        r = self.ok("queue", "retry", a)
        self.assertEqual(r.stdout, "queue %s: 2 recipients due now\n" % a)
        deadline = time.time() + 10
        while time.time() < deadline and len(self.inbox("bob")) == len(before):
            time.sleep(0.1)
        self.assertEqual(len(self.inbox("bob")), len(before) + 1)

        # delete: gone, no bounce to anyone, and a second time refused.
        self.redis("SET", "samotop:{q}:lease:" + b, "queue/x/1/00", "PX",
                   60000)
        self.assertIn("active", [l for l in
                                 self.ok("queue", "list").stdout.splitlines()
                                 if l.startswith(b)][0])
        self.assertEqual(self.ok("queue", "delete", b).stdout,
                         "deleted message %s\n" % b)
        self.assertTrue(self.gone(b, timeout=0.5))
        self.assertEqual(self.redis("EXISTS", "samotop:{q}:lease:" + b), 0)
        self.refused(1, "no message %s in the queue" % b,
                     "queue", "delete", b)

    def test_retry_all(self):
        ids = ["1795957100-00000000000000c%d" % i for i in range(3)]
        before, alice = self.inbox("carol"), self.inbox("alice")
        for qid in ids:
            self.put(qid, [("mailbox", "carol@example.test")])
        r = self.ok("queue", "retry", "--all")
        self.assertRegex(r.stdout, r"^\d+ messages?, \d+ recipients? due now\n$")
        for qid in ids:
            self.assertTrue(self.gone(qid), qid)
        self.assertEqual(len(self.inbox("carol")), len(before) + 3)
        # Delivered to a mailbox: no DSN went to alice.
        time.sleep(0.3)
        self.assertEqual(self.inbox("alice"), alice)

    def test_empty(self):
        for qid in self.redis("ZRANGE", "samotop:{q}:due", 0, -1):
            self.drop(qid)
        self.assertEqual(self.ok("queue", "list").stdout, "queue is empty\n")

    def test_refusals(self):
        qid = "1795957200-00000000000000d1"
        self.refused(1, "no message %s in the queue" % qid,
                     "queue", "show", qid)
        self.refused(1, "no message %s in the queue" % qid,
                     "queue", "retry", qid)
        self.refused(1, "no message %s in the queue" % qid,
                     "queue", "delete", qid)
        self.refused(1, "not-an-id is not a queue id", "queue", "show",
                     "not-an-id")
        self.refused(1, "is not a queue id", "queue", "delete",
                     "1795957200-XYZ")
        self.refused(2, "give either an ID or --all", "queue", "retry")
        self.refused(2, "give either an ID or --all", "queue", "retry",
                     qid, "--all")
        self.refused(2, "--all is only for queue retry", "queue", "delete",
                     "--all", qid)
        self.refused(2, "too few arguments", "queue", "show")
        self.refused(2, "unknown subverb", "queue", "flush")

    def test_redis_unreachable(self):
        env = dict(SYSTEM.env, SAMOTOP_REDIS_PORT=str(BASE + 19))
        r = subprocess.run([st.bin_path("samotop-admin"), "queue", "list"],
                           env=env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach redis", r.stderr)


if __name__ == "__main__":
    unittest.main()
