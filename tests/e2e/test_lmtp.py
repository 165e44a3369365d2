"""LMTP (RFC 2033) into the mailbox, end to end.

Python's smtplib.LMTP and a raw socket against the mailbox's LMTP door of a
whole samotopd: LHLO, recipients checked at RCPT (an unknown one refused
there), one reply per accepted recipient after DATA and after BDAT LAST, in
RCPT order, HELO/EHLO refused, and each message byte for byte in every
Maildir under a Return-Path and a Received line. Then a real Postfix on
loopback delivers to the door (virtual_transport = lmtp:inet:...), and the
message is read back over IMAP with imaplib.

With two mailbox shards, a message that reaches either process's door
is stored for each account by the process that owns it.

Ports: our system on 20150-20169, a sharded one on 20170-20189, the
private Postfix on 20190.
"""
import glob
import imaplib
import json
import os
import re
import smtplib
import socket
import ssl
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import postfix_peer  # noqa: E402
import samotop_test as st  # noqa: E402

BASE = 20150
LMTP = ("127.0.0.1", BASE + 15)
IMAP_PORT = BASE + 13
PFX_PORT = BASE + 40
SINK_PORT = BASE + 46
SYS = None
SINK = None


def setUpModule():
    global SYS, SINK
    SINK = st.Sink(SINK_PORT)
    SYS = st.System(BASE, extra_env={
        "SAMOTOP_HOSTNAME": "mx.example.test",
        "SAMOTOP_BUS_TIMEOUT_MS": "3000",
        "SAMOTOP_LMTP_MAX_SESSIONS": "6",
        "SAMOTOP_LMTP_IDLE_TIMEOUT_MS": "3000",
    })
    try:
        SYS.start()
        populate()
    except BaseException:
        # tearDownModule does not run after a failed setUpModule.
        SYS.stop()
        SINK.stop()
        raise


def populate():
    SYS.admin("domain", "add", "example.test")
    for u in ("alice", "bob", "carol"):
        SYS.admin("user", "add", u + "@example.test", input="secret-%s\n" % u)
    SYS.admin("alias", "add", "team@example.test", "alice@example.test",
              "bob@example.test")
    SYS.admin("alias", "add", "away@example.test", "someone@remote.test")
    SYS.admin("alias", "add", "mixed@example.test", "carol@example.test",
              "other@remote.test")
    SYS.admin("route", "add", "remote.test", "127.0.0.1:%d" % SINK_PORT)


def tearDownModule():
    SYS.stop()
    SINK.stop()


def files(user):
    return sorted(glob.glob(os.path.join(SYS.data, "mail", "example.test",
                                         user, "new", "*")))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def new_files(user, before, n=1, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = [f for f in files(user) if f not in before]
        if len(got) >= n:
            return got
        time.sleep(0.05)
    return [f for f in files(user) if f not in before]


def message(subject, body="Hello over LMTP.\r\n"):
    return ("From: sender@remote.test\r\nTo: alice@example.test\r\n"
            "Subject: %s\r\nMessage-ID: <%s@remote.test>\r\n\r\n%s"
            % (subject, subject.replace(" ", "."), body)).encode()


HEAD_RE = re.compile(
    rb"^Return-Path: <([^>]*)>\r\n"
    rb"Received: from ([^ ]+) \(\[127\.0\.0\.1\]\)\r\n"
    rb"\tby mx\.example\.test \(Samotop\) with LMTP id ([0-9a-f]{16})"
    rb"(\r\n\tfor <[^>]+>)?;\r\n\t[A-Z][a-z]{2}, [^\r\n]+ \+0000\r\n")


class Raw:
    """LMTP by hand, for pipelining and BDAT, which smtplib lacks."""

    def __init__(self):
        self.s = socket.create_connection(LMTP, timeout=20)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError(self.buf)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            line = line.decode()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), lines

    def cmd(self, c):
        self.send(c + "\r\n")
        return self.reply()

    def close(self):
        self.s.close()


class Door(unittest.TestCase):
    def test_two_accounts_and_an_unknown_one(self):
        before = {u: files(u) for u in ("alice", "bob")}
        body = ("Line one.\r\n.starts with a dot\r\n..two dots\r\n"
                + "x" * 998 + "\r\n\r\n\u00e9t\u00e9 8-bit\r\n")
        msg = message("two accounts", "") + body.encode("utf-8")
        with smtplib.LMTP(*LMTP, local_hostname="relay.remote.test") as c:
            # smtplib.LMTP's ehlo() says LHLO (RFC 2033 4.1).
            code, text = c.ehlo("relay.remote.test")
            self.assertEqual(code, 250, text)
            # RFC 2033 4.1: both always offered.
            self.assertIn("pipelining", c.esmtp_features)
            self.assertIn("enhancedstatuscodes", c.esmtp_features)
            self.assertEqual(c.mail("sender@remote.test")[0], 250)
            self.assertEqual(c.rcpt("alice@example.test")[0], 250)
            code, text = c.rcpt("nobody@example.test")
            self.assertEqual(code, 550, text)
            self.assertTrue(text.startswith(b"5.1.1"), text)
            self.assertEqual(c.rcpt("Bob@Example.test")[0], 250)
            # RFC 2033 4.2: after the data, one reply per accepted RCPT,
            # in RCPT order; smtplib reads the first, we read the second.
            first = c.data(msg)
            second = c.getreply()
        self.assertEqual(first[0], 250, first)
        self.assertEqual(second[0], 250, second)
        self.assertIn(b"<alice@example.test>", first[1])
        self.assertIn(b"<bob@example.test>", second[1])
        trace = re.search(rb"stored as ([0-9a-f]{16})", first[1]).group(1)
        for user in ("alice", "bob"):
            got = new_files(user, before[user])
            self.assertEqual(len(got), 1, user)
            data = read(got[0])
            m = HEAD_RE.match(data)
            self.assertIsNotNone(m, data[:300])
            self.assertEqual(m.group(1), b"sender@remote.test")
            self.assertEqual(m.group(2), b"relay.remote.test")
            self.assertEqual(m.group(3), trace)
            self.assertIsNone(m.group(4))  # two recipients: no "for"
            self.assertEqual(data[m.end():], msg)  # byte for byte

    def test_helo_and_ehlo_refused(self):
        r = Raw()
        try:
            self.assertEqual(r.greeting[0], 220)
            self.assertIn("LMTP", r.greeting[1][0])
            for verb in ("HELO", "EHLO"):
                code, lines = r.cmd(verb + " relay.remote.test")
                self.assertEqual(code, 500, lines)
                self.assertIn("5.5.1", lines[0])
            code, lines = r.cmd("MAIL FROM:<a@remote.test>")
            self.assertEqual(code, 503, lines)
            code, lines = r.cmd("LHLO relay.remote.test")
            self.assertEqual(code, 250)
            self.assertIn("250-PIPELINING", lines)
            self.assertEqual(r.cmd("QUIT")[0], 221)
        finally:
            r.close()

    def test_no_recipient_data_503(self):
        r = Raw()
        try:
            r.cmd("LHLO relay.remote.test")
            r.cmd("MAIL FROM:<a@remote.test>")
            self.assertEqual(r.cmd("RCPT TO:<nobody@example.test>")[0], 550)
            code, lines = r.cmd("DATA")
            self.assertEqual(code, 503, lines)  # RFC 2033 4.2
        finally:
            r.close()

    def test_pipelined_bdat_alias_and_for(self):
        """Everything in one write (PIPELINING); an alias is one recipient
        with one reply, its copies in both mailboxes; a message to one
        recipient names it in Received's "for"."""
        before = {u: files(u) for u in ("alice", "bob", "carol")}
        one = message("bdat one")
        two = message("bdat two")
        r = Raw()
        try:
            r.send(b"LHLO relay.remote.test\r\n"
                   b"MAIL FROM:<>\r\nRCPT TO:<team@example.test>\r\n"
                   b"RCPT TO:<carol@example.test>\r\n"
                   + b"BDAT %d LAST\r\n" % len(one) + one +
                   b"MAIL FROM:<x@remote.test>\r\n"
                   b"RCPT TO:<carol@example.test>\r\nDATA\r\n"
                   + two + b".\r\nQUIT\r\n")
            codes = [r.reply()[0] for _ in range(11)]
        finally:
            r.close()
        # LHLO, MAIL, RCPT, RCPT, the two BDAT LAST replies, MAIL, RCPT,
        # 354, one DATA reply, QUIT.
        self.assertEqual(codes, [250, 250, 250, 250, 250, 250, 250, 250,
                                 354, 250, 221])
        a = new_files("alice", before["alice"])
        b = new_files("bob", before["bob"])
        c = new_files("carol", before["carol"], n=2)
        self.assertEqual((len(a), len(b), len(c)), (1, 1, 2))
        self.assertTrue(read(a[0]).endswith(one))
        self.assertTrue(read(a[0]).startswith(b"Return-Path: <>\r\n"))
        bodies = sorted(read(f) for f in c)
        self.assertTrue(any(x.endswith(two) for x in bodies))
        m = HEAD_RE.match([x for x in bodies if x.endswith(two)][0])
        self.assertEqual(m.group(4), b"\r\n\tfor <carol@example.test>")

    def test_forwarding_aliases_go_by_the_queue(self):
        """An alias that forwards off this host: its remote addresses go
        to the queue (and on to the next hop), its local mailboxes into
        the Maildir; one reply per recipient, after all of its copies."""
        before = files("carol")
        msg = message("forwarded")
        with smtplib.LMTP(*LMTP) as c:
            c.ehlo("relay.remote.test")
            self.assertEqual(c.mail("sender@remote.test")[0], 250)
            self.assertEqual(c.rcpt("away@example.test")[0], 250)
            self.assertEqual(c.rcpt("mixed@example.test")[0], 250)
            replies = [c.data(msg), c.getreply()]
        self.assertEqual([r[0] for r in replies], [250, 250], replies)
        self.assertIn(b"<away@example.test>", replies[0][1])
        self.assertIn(b"<mixed@example.test>", replies[1][1])
        got = new_files("carol", before)
        self.assertEqual(len(got), 1)
        self.assertTrue(read(got[0]).endswith(msg))
        sent = [m for m in SINK.wait(1, timeout=30)
                if m[2].endswith(msg.replace(b"\r\n", b"\n"))
                or m[2].endswith(msg)]
        self.assertEqual(len(sent), 1, SINK.messages)
        mail_from, rcpts, data = sent[0]
        self.assertEqual(mail_from, "sender@remote.test")
        self.assertEqual(sorted(rcpts), ["other@remote.test",
                                         "someone@remote.test"])
        self.assertIn(b"with LMTP id", data)
        self.assertNotIn(b"Return-Path:", data)

    def test_session_limit(self):
        """lmtp.max_sessions (6 here): one more is refused with 421 and
        closed; once they go, a new session is served."""
        held, refused = [], None
        try:
            for _ in range(8):
                s = socket.create_connection(LMTP, timeout=20)
                line = s.makefile("rb").readline()
                if line.startswith(b"421"):
                    refused = line
                    s.close()
                    break
                self.assertTrue(line.startswith(b"220"), line)
                held.append(s)
        finally:
            for s in held:
                s.close()
        self.assertIsNotNone(refused)
        self.assertIn(b"4.3.2", refused)
        self.assertLessEqual(len(held), 6)
        deadline = time.time() + 10
        while True:
            r = Raw()
            code = r.greeting[0]
            r.close()
            if code == 220 or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(code, 220)

    def test_idle_timeout(self):
        """lmtp.idle_timeout_ms (3 s here): 421 4.4.2, then the close."""
        r = Raw()
        try:
            r.cmd("LHLO relay.remote.test")
            t0 = time.time()
            code, lines = r.reply()
            self.assertEqual(code, 421, lines)
            self.assertIn("4.4.2", lines[0])
            self.assertGreater(time.time() - t0, 1.5)
            self.assertEqual(r.s.recv(100), b"")
        finally:
            r.close()

    def test_trace_shows_lmtp_session(self):
        tap = SYS.tap("--json", "--type", "guard.*", "--seconds", "6")
        time.sleep(1.0)  # the subscription reaches the broker
        with smtplib.LMTP(*LMTP) as c:
            c.ehlo("relay.remote.test")
            c.mail("sender@remote.test")
            c.rcpt("carol@example.test")
            code, text = c.data(message("traced"))
        self.assertEqual(code, 250, text)
        trace = re.search(rb"stored as ([0-9a-f]{16})", text).group(1).decode()
        out = tap.communicate(timeout=30)[0]
        envs = [json.loads(l) for l in out.splitlines() if l.strip()]
        mine = [e for e in envs if e.get("trace") == trace]
        self.assertIn("guard.rcpt", [e["type"] for e in mine], out)
        self.assertIn("guard.rcpt.reply", [e["type"] for e in mine])
        req = [e for e in mine if e["type"] == "guard.rcpt"][0]
        self.assertEqual(req["body"]["role"], "lmtp")
        self.assertEqual(req["body"]["rcpt"], "carol@example.test")


class ShardedDoor(unittest.TestCase):
    """Two mailbox processes share the door's port (SO_REUSEPORT) and
    split the accounts (mailbox.shards): the door that takes a message
    stores its own accounts' copies and sends the others' to their owner
    as mailbox.deliver; each recipient still gets its own reply."""

    BASE = BASE + 20

    @classmethod
    def setUpClass(cls):
        cls.sys = st.System(cls.BASE, extra_env={
            "SAMOTOP_SUPERVISOR_MAILBOX": "2",
            "SAMOTOP_MAILBOX_SHARDS": "0",  # one per copy
            "SAMOTOP_HOSTNAME": "mx.example.test",
            "SAMOTOP_BUS_TIMEOUT_MS": "10000",
        })
        cls.users = ["s%d@example.test" % i for i in range(8)]
        try:
            cls.sys.start()
            cls.sys.admin("domain", "add", "example.test")
            for u in cls.users:
                cls.sys.admin("user", "add", u, input="pw\n")
        except BaseException:
            cls.sys.stop()  # tearDownClass does not run after a failure
            raise

    @classmethod
    def tearDownClass(cls):
        cls.sys.stop()

    def box(self, user):
        return sorted(glob.glob(os.path.join(
            self.sys.data, "mail", "example.test", user.split("@")[0],
            "new", "*")))

    def test_copies_go_to_their_shard(self):
        shards = {st.shard_of(u, 2) for u in self.users}
        self.assertEqual(shards, {0, 1})  # the test means something
        for n in range(4):  # new connections: either process may take one
            msg = message("sharded %d" % n)
            with smtplib.LMTP("127.0.0.1", self.BASE + 15) as c:
                c.ehlo("relay.remote.test")
                self.assertEqual(c.mail("sender@remote.test")[0], 250)
                for u in self.users:
                    self.assertEqual(c.rcpt(u)[0], 250)
                replies = [c.data(msg)]
                replies += [c.getreply() for _ in self.users[1:]]
            for u, (code, text) in zip(self.users, replies):
                self.assertEqual(code, 250, (u, text))
                self.assertIn(("<%s>" % u).encode(), text)
        for u in self.users:
            got = [read(f) for f in self.box(u)]
            self.assertEqual(len(got), 4, u)
            for data in got:
                m = HEAD_RE.match(data)
                self.assertIsNotNone(m, data[:300])
                self.assertEqual(m.group(1), b"sender@remote.test")
                self.assertTrue(data[m.end():].startswith(b"From: "))
        # Each message was taken by one door, which stored its own
        # accounts' copies and not the others'.
        lines = re.findall(r"event=lmtp_message rcpts=8 stored=8 "
                           r"copies=8 local=(\d+)", self.sys.logtext())
        self.assertEqual(len(lines), 4, self.sys.logtext()[-3000:])
        for local in lines:
            self.assertTrue(0 < int(local) < 8, lines)


def tls_ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


# What our Postfix adds to postfix_peer's main.cf: mail for example.test
# (with the users its table names) goes over LMTP to the mailbox's door.
PFX_MAIN = """myhostname = relay.remote.test
mydomain = remote.test
mydestination =
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:{base}/etc/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:%d
lmtp_destination_recipient_limit = 50
""" % LMTP[1]


class PostfixOverLmtp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # ghost is a user Postfix knows and we do not: our 550 at RCPT
        # must become Postfix's bounce, not a lost message.
        cls.pfx = postfix_peer.Postfix(PFX_PORT, PFX_MAIN, {
            "vmailbox": "alice@example.test x\nbob@example.test x\n"
                        "ghost@example.test x\n"})

    @classmethod
    def tearDownClass(cls):
        cls.pfx.stop()

    def test_postfix_delivers_and_imap_reads(self):
        before = {u: files(u) for u in ("alice", "bob")}
        body = ("From: sender@remote.test\r\nTo: alice@example.test\r\n"
                "Subject: via postfix lmtp\r\n\r\nHello through Postfix.\r\n"
                ".leading dot\r\n").encode()
        with smtplib.SMTP("127.0.0.1", PFX_PORT,
                          local_hostname="client.remote.test") as c:
            refused = c.sendmail("sender@remote.test",
                                 ["alice@example.test", "bob@example.test",
                                  "ghost@example.test"], body)
        self.assertEqual(refused, {})  # Postfix took all three
        got = {u: new_files(u, before[u], timeout=60) for u in before}
        for u in before:
            self.assertEqual(len(got[u]), 1, "%s\n%s" % (u, self.pfx.log()))
            data = read(got[u][0])
            m = HEAD_RE.match(data)
            self.assertIsNotNone(m, data[:400])
            self.assertEqual(m.group(1), b"sender@remote.test")
            self.assertEqual(m.group(2), b"relay.remote.test")
            # Postfix's own Received, then the body as sent.
            self.assertIn(b"by relay.remote.test (Postfix)", data)
            self.assertTrue(data.endswith(body.split(b"\r\n\r\n", 1)[1]),
                            data[-200:])
        line = self.pfx.wait_log("to=<ghost@example.test>")
        self.assertIn("status=bounced", line)
        self.assertIn("550 5.1.1", line)
        line = self.pfx.wait_log("to=<alice@example.test>")
        self.assertIn("status=sent", line)
        self.assertIn("250 2.0.0", line)

        # The message is read back over IMAP (STARTTLS, then LOGIN).
        m = imaplib.IMAP4("127.0.0.1", IMAP_PORT)
        try:
            self.assertEqual(m.starttls(ssl_context=tls_ctx())[0], "OK")
            self.assertEqual(m.login("alice@example.test",
                                     "secret-alice")[0], "OK")
            typ, _ = m.select("INBOX", readonly=True)
            self.assertEqual(typ, "OK")
            typ, nums = m.search(None, "SUBJECT", '"via postfix lmtp"')
            self.assertEqual(typ, "OK")
            self.assertEqual(len(nums[0].split()), 1, nums)
            typ, parts = m.fetch(nums[0].split()[0], "(BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            self.assertEqual(parts[0][1], read(got["alice"][0]))
            m.logout()
        finally:
            try:
                m.shutdown()
            except OSError:
                pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
