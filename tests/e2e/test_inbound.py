"""Inbound mail end to end: real clients (smtplib, raw sockets, swaks,
Postfix's smtp-source) against the real samotopd, listener, guard and
mailbox on loopback; mail must land byte for byte in the right Maildirs.
"""
import glob
import os
import re
import signal
import socket
import ssl
import smtplib
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402

BASE = 18800
SYS = None


def setUpModule():
    global SYS
    SYS = st.System(BASE, extra_env={
        "SAMOTOP_SMTP_MAX_MESSAGE": "200000",
        "SAMOTOP_SMTP_MAX_RCPTS": "100",
        "SAMOTOP_LISTENER_MAX_PER_IP": "8",
        "SAMOTOP_BUS_TIMEOUT_MS": "3000",
        "SAMOTOP_HOSTNAME": "mx.example.test",
        "SAMOTOP_GUARD_POSTMASTER": "carol@example.test",
    }).start()
    SYS.admin("domain", "add", "example.test")
    for u in ("alice", "bob", "carol"):
        SYS.admin("user", "add", u + "@example.test", input="secret-%s\n" % u)
    SYS.admin("alias", "add", "team@example.test", "alice@example.test",
              "bob@example.test")
    SYS.admin("alias", "add", "chain@example.test", "team@example.test")
    SYS.admin("alias", "add", "away@example.test", "someone@remote.test")


def tearDownModule():
    SYS.stop()


MTA = ("127.0.0.1", BASE + 10)


def maildir(user, domain="example.test"):
    return os.path.join(SYS.data, "mail", domain, user)


def files(user):
    return sorted(glob.glob(os.path.join(maildir(user), "new", "*")))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def wait_files(user, n, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        f = files(user)
        if len(f) >= n:
            return f
        time.sleep(0.05)
    return files(user)


class Raw:
    """A plain socket that speaks SMTP by hand, for the edge cases."""

    def __init__(self, addr=MTA, greet=True):
        self.s = socket.create_connection(addr, timeout=10)
        self.buf = b""
        if greet:
            self.greeting = self.reply()

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """One whole (possibly multi-line) reply: (code, [lines])."""
        lines = []
        while True:
            l = self.line()
            lines.append(l)
            if len(l) < 4 or l[3] != "-":
                return int(l[:3]), lines

    def cmd(self, c):
        self.send(c + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def message(subject, body="Hello.\r\n"):
    return ("From: sender@remote.test\r\nTo: alice@example.test\r\n"
            "Subject: %s\r\nMessage-ID: <%s@remote.test>\r\n\r\n%s"
            % (subject, subject.replace(" ", "."), body)).encode()


def send(rcpts, msg, sender="sender@remote.test"):
    """Sends msg; returns (rcpt replies, data reply)."""
    with smtplib.SMTP(*MTA, local_hostname="client.remote.test") as c:
        c.ehlo()
        code, _ = c.mail(sender)
        assert code == 250, code
        results = [c.rcpt(r) for r in rcpts]
        if not any(code == 250 for code, _ in results):
            return results, None
        return results, c.data(msg)


class Delivery(unittest.TestCase):
    def test_byte_for_byte_with_received_and_trace(self):
        before = len(files("alice"))
        body = ("Line one.\r\n.starts with a dot\r\n..two dots\r\n"
                + "x" * 998 + "\r\n\r\n\u00e9t\u00e9 8-bit\r\n").encode("utf-8")
        msg = message("byte for byte", "") + body
        (rc,), (code, text) = send(["alice@example.test"], msg)
        self.assertEqual(rc[0], 250)
        self.assertEqual(code, 250, text)
        text = text.decode()
        trace = text.split()[-1]
        self.assertRegex(trace, r"^[0-9a-f]{16}$")
        f = wait_files("alice", before + 1)
        self.assertEqual(len(f), before + 1)
        newest = max(f, key=os.path.getmtime)
        with open(newest, "rb") as fh:
            stored = fh.read()
        # RFC 5321 4.4: final delivery adds Return-Path, then our Received.
        self.assertTrue(stored.startswith(
            b"Return-Path: <sender@remote.test>\r\n"
            b"Received: from client.remote.test ([127.0.0.1])"), stored[:200])
        head, _, rest = stored.partition(b";\r\n\t")
        self.assertIn(("id " + trace).encode(), head)
        self.assertIn(b"for <alice@example.test>", head)
        self.assertIn(b"with ESMTP", head)
        # After the date line the message follows exactly as sent.
        self.assertEqual(rest.split(b"\r\n", 1)[1], msg)

    def test_several_recipients_one_copy_each_hard_linked(self):
        a0, b0 = len(files("alice")), len(files("bob"))
        msg = message("two recipients")
        results, (code, _) = send(["alice@example.test", "bob@example.test"], msg)
        self.assertEqual([r[0] for r in results], [250, 250])
        self.assertEqual(code, 250)
        fa, fb = wait_files("alice", a0 + 1), wait_files("bob", b0 + 1)
        new_a = [p for p in fa if read(p).endswith(msg)]
        new_b = [p for p in fb if read(p).endswith(msg)]
        self.assertEqual(len(new_a), 1)
        self.assertEqual(len(new_b), 1)
        self.assertEqual(os.stat(new_a[0]).st_ino, os.stat(new_b[0]).st_ino)
        # Two recipients: no "for" clause that would show one to the other.
        self.assertNotIn(b"for <", read(new_a[0]).split(b"\r\n\r\n")[0])

    def test_alias_chain_reaches_each_member_once(self):
        a0, b0 = len(files("alice")), len(files("bob"))
        msg = message("alias chain")
        results, (code, _) = send(["chain@example.test", "team@example.test",
                                   "alice@example.test"], msg)
        self.assertEqual([r[0] for r in results], [250, 250, 250])
        self.assertEqual(code, 250)
        time.sleep(0.3)
        self.assertEqual(len(files("alice")), a0 + 1)
        self.assertEqual(len(files("bob")), b0 + 1)

    def test_mixed_valid_and_invalid_recipients(self):
        a0, c0 = len(files("alice")), len(files("carol"))
        msg = message("mixed")
        results, (code, _) = send(["alice@example.test", "nobody@example.test",
                                   "someone@elsewhere.test", "carol@example.test"], msg)
        self.assertEqual(results[0][0], 250)
        self.assertEqual(results[1][0], 550)
        self.assertIn(b"5.1.1", results[1][1])
        self.assertEqual(results[2][0], 554)
        self.assertIn(b"5.7.1", results[2][1])
        self.assertEqual(results[3][0], 250)
        self.assertEqual(code, 250)
        self.assertEqual(len(wait_files("alice", a0 + 1)), a0 + 1)
        self.assertEqual(len(wait_files("carol", c0 + 1)), c0 + 1)

    def test_postmaster_with_and_without_domain(self):
        """RFC 5321 4.5.1: mail for postmaster MUST be taken, at every
        domain served and as <Postmaster> with no domain (4.1.1.3); with
        no such account or alias it goes to guard.postmaster (carol)."""
        c0 = len(files("carol"))
        with smtplib.SMTP(*MTA, local_hostname="client.remote.test") as c:
            c.ehlo()
            self.assertEqual(c.mail("sender@remote.test")[0], 250)
            code, text = c.docmd("RCPT TO:<Postmaster>")
            self.assertEqual(code, 250, text)
            code, text = c.docmd("RCPT TO:<POSTMASTER@Example.Test>")
            self.assertEqual(code, 250, text)
            self.assertEqual(c.data(message("to the postmaster"))[0], 250)
        # One copy for the one mailbox both recipients stand for.
        got = wait_files("carol", c0 + 1)
        self.assertEqual(len(got), c0 + 1)
        self.assertIn(b"Subject: to the postmaster", read(got[-1]))
        time.sleep(0.3)
        self.assertEqual(len(files("carol")), c0 + 1)

    def test_smtputf8_domain_in_u_labels(self):
        """RFC 6531 3.2: an SMTPUTF8 client may write our domain in
        U-labels; it is the domain its A-labels name, and the copy lands
        in that Maildir."""
        SYS.admin("domain", "add", "b\u00fccher.test")
        SYS.admin("user", "add", "anna@xn--bcher-kva.test", input="pw-anna\n")
        box = os.path.join(SYS.data, "mail", "xn--bcher-kva.test", "anna",
                           "new")
        r = Raw()
        self.assertEqual(r.cmd("EHLO client.remote.test")[0], 250)
        self.assertEqual(r.cmd("MAIL FROM:<s@remote.test> SMTPUTF8")[0], 250)
        code, lines = r.cmd("RCPT TO:<anna@B\u00dcCHER.test>")
        self.assertEqual(code, 250, lines)
        self.assertEqual(r.cmd("DATA")[0], 354)
        code, lines = r.cmd("Subject: umlaut\r\n\r\nHallo.\r\n.")
        self.assertEqual(code, 250, lines)
        r.cmd("QUIT")
        r.close()
        deadline = time.time() + 5
        while time.time() < deadline and not glob.glob(box + "/*"):
            time.sleep(0.05)
        got = glob.glob(box + "/*")
        self.assertEqual(len(got), 1)
        self.assertIn(b"Subject: umlaut", read(got[0]))

    def test_plus_addressing(self):
        a0 = len(files("alice"))
        results, (code, _) = send(["alice+lists@example.test"], message("plus"))
        self.assertEqual(results[0][0], 250)
        self.assertEqual(code, 250)
        self.assertEqual(len(wait_files("alice", a0 + 1)), a0 + 1)

    def test_bdat_chunks(self):
        a0 = len(files("alice"))
        msg = message("bdat")
        r = Raw()
        self.assertEqual(r.cmd("EHLO client.remote.test")[0], 250)
        self.assertEqual(r.cmd("MAIL FROM:<x@remote.test>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 250)
        half = len(msg) // 2
        r.send(b"BDAT %d\r\n" % half + msg[:half])
        self.assertEqual(r.reply()[0], 250)
        r.send(b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:])
        code, lines = r.reply()
        self.assertEqual(code, 250, lines)
        r.cmd("QUIT")
        f = wait_files("alice", a0 + 1)
        self.assertTrue(any(read(p).endswith(msg) for p in f))


SMUGGLES = ["\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r\n.\n"]


class HalfClose(unittest.TestCase):
    """A client that sends its last lines and shuts down its sending side
    at once still gets every reply: the listener reads on while a bus
    call is out, so it sees the end of input before the mailbox answers,
    and must answer what came before it."""

    def half_closed_session(self, tail):
        a0 = len(files("carol"))
        r = Raw()
        self.assertEqual(r.cmd("EHLO client.remote.test")[0], 250)
        r.send("MAIL FROM:<hc@remote.test>\r\nRCPT TO:<carol@example.test>\r\n"
               "DATA\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(r.reply()[0], 354)
        r.send(message("half close") + b".\r\n" + tail)
        r.s.shutdown(socket.SHUT_WR)
        code, lines = r.reply()
        self.assertEqual(code, 250, lines)
        self.assertIn("2.0.0", lines[0])
        return r, a0

    def test_quit_then_shutdown(self):
        r, a0 = self.half_closed_session(b"QUIT\r\n")
        self.assertEqual(r.reply()[0], 221)
        self.assertTrue(r.closed())
        r.close()
        self.assertEqual(len(wait_files("carol", a0 + 1)), a0 + 1)

    def test_shutdown_without_quit(self):
        r, a0 = self.half_closed_session(b"")
        self.assertTrue(r.closed())
        self.assertEqual(r.buf, b"")
        r.close()
        self.assertEqual(len(wait_files("carol", a0 + 1)), a0 + 1)

    def test_shutdown_mid_command(self):
        """A line cut short by the end of input is never executed, and the
        session closes."""
        r = Raw()
        r.send("NOOP\r\nRSET")
        r.s.shutdown(socket.SHUT_WR)
        self.assertEqual(r.reply()[0], 250)
        self.assertTrue(r.closed())
        self.assertEqual(r.buf, b"", "the cut RSET was answered")
        r.close()


class Smuggling(unittest.TestCase):
    def test_bare_lf_cr_never_end_data(self):
        for v in SMUGGLES:
            with self.subTest(variant=repr(v)):
                a0, b0 = len(files("alice")), len(files("bob"))
                r = Raw()
                r.cmd("EHLO client.remote.test")
                self.assertEqual(r.cmd("MAIL FROM:<x@remote.test>")[0], 250)
                self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 250)
                self.assertEqual(r.cmd("DATA")[0], 354)
                r.send("Subject: smuggle\r\n\r\nfirst" + v +
                       "MAIL FROM:<evil@remote.test>\r\n"
                       "RCPT TO:<bob@example.test>\r\nDATA\r\n"
                       "Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
                code, lines = r.reply()
                self.assertEqual(code, 250, lines)
                self.assertEqual(r.cmd("QUIT")[0], 221)
                r.close()
                time.sleep(0.2)
                self.assertEqual(len(files("alice")), a0 + 1)
                self.assertEqual(len(files("bob")), b0, "a second message was delivered")
                newest = max(files("alice"), key=os.path.getmtime)
                self.assertIn(b"RCPT TO:<bob@example.test>", read(newest))


class StartTLS(unittest.TestCase):
    def test_injected_plaintext_after_starttls_is_discarded(self):
        r = Raw()
        code, lines = r.cmd("EHLO client.remote.test")
        self.assertIn("STARTTLS", [l[4:] for l in lines])
        # The classic injection: a command in the same packet as STARTTLS.
        r.send("STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\n")
        code, lines = r.reply()
        self.assertEqual(code, 220, lines)
        self.assertEqual(r.buf, b"", "the server answered the injected command in clear")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        r.s = ctx.wrap_socket(r.s, server_hostname="mx.example.test")
        self.assertIn(r.s.version(), ("TLSv1.2", "TLSv1.3"))
        code, lines = r.cmd("EHLO client.remote.test")
        self.assertEqual(code, 250)
        self.assertNotIn("STARTTLS", [l[4:] for l in lines])
        # Had MAIL been executed, RCPT would be accepted; it must be 503.
        code, lines = r.cmd("RCPT TO:<alice@example.test>")
        self.assertEqual(code, 503, lines)
        self.assertEqual(r.cmd("QUIT")[0], 221)
        r.close()

    def test_starttls_with_smtplib_and_received_says_esmtps(self):
        a0 = len(files("alice"))
        msg = message("over tls")
        with smtplib.SMTP(*MTA, local_hostname="client.remote.test") as c:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c.starttls(context=ctx)
            c.sendmail("x@remote.test", ["alice@example.test"], msg)
        f = wait_files("alice", a0 + 1)
        stored = [read(p) for p in f if read(p).endswith(msg)]
        self.assertEqual(len(stored), 1)
        self.assertIn(b"with ESMTPS", stored[0])
        self.assertRegex(stored[0], rb"\(version=TLSv1\.[23] cipher=")


class OpenRelay(unittest.TestCase):
    TRICKS = [
        ("user%evil.test@example.test", 550),
        ("evil.test!user@example.test", 550),
        ("@example.test:user@evil.test", 554),
        ("@example.test,@mx.example.test:user@evil.test", 554),
        ('"user@evil.test"@example.test', 550),
        ("user@[127.0.0.1]", 554),
        ("user@evil.test", 554),
        ("user@example.test.evil.test", 554),
        ("postmaster@evil.test", 554),
    ]

    def test_no_relaying_whatever_the_address(self):
        r = Raw()
        r.cmd("EHLO client.remote.test")
        self.assertEqual(r.cmd("MAIL FROM:<x@remote.test>")[0], 250)
        for addr, want in self.TRICKS:
            with self.subTest(addr=addr):
                code, lines = r.cmd("RCPT TO:<%s>" % addr)
                self.assertEqual(code, want, lines)
                if want == 554:
                    self.assertIn("5.7.1", lines[0])
        # Our domain in capitals is still ours.
        self.assertEqual(r.cmd("RCPT TO:<alice@EXAMPLE.TEST>")[0], 250)
        r.cmd("QUIT")

    def test_vrfy_does_not_leak(self):
        r = Raw()
        r.cmd("EHLO client.remote.test")
        c1, l1 = r.cmd("VRFY alice@example.test")
        c2, l2 = r.cmd("VRFY nobody@example.test")
        self.assertEqual((c1, c2), (252, 252))
        self.assertEqual(l1[0][:9], l2[0][:9])
        r.cmd("QUIT")


class Limits(unittest.TestCase):
    def test_command_line_over_512(self):
        r = Raw()
        r.cmd("EHLO client.remote.test")
        code, lines = r.cmd("NOOP " + "x" * 600)
        self.assertEqual(code, 500, lines)
        self.assertIn("5.5.6", lines[0])
        self.assertEqual(r.cmd("NOOP")[0], 250)
        r.cmd("QUIT")

    def test_text_line_over_1000(self):
        a0 = len(files("alice"))
        r = Raw()
        r.cmd("EHLO client.remote.test")
        r.cmd("MAIL FROM:<x@remote.test>")
        r.cmd("RCPT TO:<alice@example.test>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: long\r\n\r\n" + "y" * 1200 + "\r\n.\r\n")
        code, lines = r.reply()
        self.assertEqual(code, 554, lines)
        self.assertIn("5.6.0", lines[0])
        r.cmd("QUIT")
        time.sleep(0.2)
        self.assertEqual(len(files("alice")), a0)

    def test_declared_size_over_limit(self):
        r = Raw()
        code, lines = r.cmd("EHLO client.remote.test")
        self.assertIn("250-SIZE 200000", lines)
        code, lines = r.cmd("MAIL FROM:<x@remote.test> SIZE=300000")
        self.assertEqual(code, 552, lines)
        self.assertIn("5.3.4", lines[0])
        r.cmd("QUIT")

    def test_message_over_limit(self):
        a0 = len(files("alice"))
        r = Raw()
        r.cmd("EHLO client.remote.test")
        r.cmd("MAIL FROM:<x@remote.test>")
        r.cmd("RCPT TO:<alice@example.test>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: big\r\n\r\n" + ("z" * 998 + "\r\n") * 300 + ".\r\n")
        code, lines = r.reply()
        self.assertEqual(code, 552, lines)
        self.assertIn("5.3.4", lines[0])
        self.assertEqual(r.cmd("NOOP")[0], 250)
        r.cmd("QUIT")
        self.assertEqual(len(files("alice")), a0)

    def test_too_many_recipients(self):
        r = Raw()
        r.cmd("EHLO client.remote.test")
        r.cmd("MAIL FROM:<x@remote.test>")
        for i in range(100):
            self.assertEqual(r.cmd("RCPT TO:<alice+%d@example.test>" % i)[0], 250)
        code, lines = r.cmd("RCPT TO:<bob@example.test>")
        self.assertEqual(code, 452, lines)
        self.assertIn("4.5.3", lines[0])
        r.cmd("QUIT")

    def test_sessions_per_client_address(self):
        held = [Raw() for _ in range(8)]
        try:
            extra = Raw(greet=False)
            code, lines = extra.reply()
            self.assertEqual(code, 421, lines)
            self.assertTrue(extra.closed())
        finally:
            for h in held:
                h.close()
        time.sleep(0.3)
        r = Raw()
        self.assertEqual(r.greeting[0], 220)
        r.cmd("QUIT")

    def test_flood_without_crlf_is_cut_off(self):
        r = Raw()
        r.cmd("EHLO client.remote.test")
        try:
            for _ in range(64):
                r.send(b"A" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertTrue(r.closed(), "the server kept an endless line open")
        self.assertIn(b"421", r.buf)

    def test_unknown_and_bad_sequence_commands(self):
        r = Raw()
        code, lines = r.cmd("FROBNICATE")
        self.assertEqual(code, 500)
        self.assertIn("5.5.2", lines[0])
        code, lines = r.cmd("MAIL FROM:<x@remote.test>")
        self.assertEqual(code, 503)
        r.cmd("EHLO client.remote.test")
        code, lines = r.cmd("DATA")
        self.assertIn(code, (503, 554))
        code, lines = r.cmd("MAIL FROM:x@remote.test")
        self.assertEqual(code, 501)
        r.cmd("QUIT")


class Timeouts(unittest.TestCase):
    """Its own system: the timeouts are short here."""

    @classmethod
    def setUpClass(cls):
        cls.sys = st.System(BASE + 40, extra_env={
            "SAMOTOP_LISTENER_IDLE_TIMEOUT_MS": "1500",
            "SAMOTOP_LISTENER_SESSION_TIMEOUT_MS": "4000",
        }).start(wait=False)
        cls.sys.wait_ready()
        cls.addr = ("127.0.0.1", BASE + 40 + 10)

    @classmethod
    def tearDownClass(cls):
        cls.sys.stop()

    def test_idle_timeout(self):
        r = Raw(self.addr)
        t0 = time.time()
        code, lines = r.reply()
        self.assertEqual(code, 421, lines)
        self.assertIn("4.4.2", lines[0])
        self.assertTrue(r.closed())
        self.assertLess(time.time() - t0, 4)

    def test_total_session_timeout(self):
        r = Raw(self.addr)
        t0 = time.time()
        code = None
        while time.time() - t0 < 10:
            try:
                code, lines = r.cmd("NOOP")  # never idle
            except (EOFError, ConnectionResetError, BrokenPipeError):
                break
            if code == 421:
                self.assertIn("4.4.2", lines[0])
                break
            time.sleep(0.5)
        self.assertEqual(code, 421)
        self.assertTrue(r.closed())
        self.assertGreater(time.time() - t0, 3.5)
        self.assertLess(time.time() - t0, 7)


def children(name, system=None):
    out = subprocess.run(["pgrep", "-P", str((system or SYS).proc.pid), "-x",
                          name], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def cpu_seconds(pid):
    """User + system CPU time of pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SeveralListeners(unittest.TestCase):
    """Listener copies started together on a fresh data folder share one
    self-signed certificate; none fails on another's key (they used to
    race to write the pair: "key values mismatch")."""

    def test_fresh_data_folder(self):
        for attempt in range(3):
            sys_ = st.System(BASE + 80, extra_env={
                "SAMOTOP_SUPERVISOR_LISTENER": "4",
                "SAMOTOP_HOSTNAME": "mx.example.test",
            })
            try:
                sys_.start()
                text = sys_.logtext()
                self.assertNotIn("tls_setup_failed", text)
                self.assertEqual(len(children("samotop-listene", sys_)), 4)
                self.assertEqual(text.count("event=ready service=listener "),
                                 4, "attempt %d" % attempt)
                with smtplib.SMTP("127.0.0.1", BASE + 80 + 10) as c:
                    c.starttls(context=ssl._create_unverified_context())
                    self.assertEqual(c.ehlo()[0], 250)
            finally:
                sys_.stop()


class OutOfDescriptors(unittest.TestCase):
    """Its own system, started with a small limit on open files: the
    listener raises its soft limit to the hard one and logs it; once it
    runs out, accept() fails with EMFILE, and it must neither spin on the
    listening socket nor stop for good."""

    SOFT, HARD = 64, 160

    @classmethod
    def setUpClass(cls):
        import resource

        cls.sys = st.System(BASE + 60, extra_env={
            "SAMOTOP_LISTENER_MAX_PER_IP": "1000",
            "SAMOTOP_LISTENER_MAX_SESSIONS": "1000",
            "SAMOTOP_GUARD_CONN_PER_MINUTE": "100000",
        })
        cls.sys.proc = subprocess.Popen(
            [st.bin_path("samotopd")], env=cls.sys.env, stdout=cls.sys.log,
            stderr=cls.sys.log, preexec_fn=lambda: resource.setrlimit(
                resource.RLIMIT_NOFILE, (cls.SOFT, cls.HARD)))
        cls.sys.wait_ready()
        cls.addr = ("127.0.0.1", BASE + 60 + 10)

    @classmethod
    def tearDownClass(cls):
        cls.sys.stop()

    def listener_lines(self, event):
        return [l for l in self.sys.logtext().splitlines()
                if "actor=listener/" in l and "event=%s " % event in l]

    def test_emfile_pauses_accept_without_spinning(self):
        lines = self.listener_lines("nofile")
        self.assertTrue(lines and "limit=%d" % self.HARD in lines[0], lines)
        # comm is cut to 15 characters
        pid = children("samotop-listene", self.sys)[0]
        held = []
        try:
            # More connections than descriptors: the kernel queues what
            # the listener cannot accept.
            for _ in range(self.HARD + 20):
                held.append(socket.create_connection(self.addr, timeout=10))
            deadline = time.time() + 10
            while time.time() < deadline and not self.listener_lines(
                    "accept_paused"):
                time.sleep(0.1)
            self.assertTrue(self.listener_lines("accept_paused"),
                            self.sys.logtext()[-3000:])
            time.sleep(0.5)
            c0, t0 = cpu_seconds(pid), time.time()
            time.sleep(2)
            used = (cpu_seconds(pid) - c0) / (time.time() - t0)
            self.assertLess(used, 0.2, "the listener spins: %.0f%% CPU while "
                            "out of descriptors" % (100 * used))
            self.assertEqual(len(self.listener_lines("accept_paused")), 1,
                             "logged more than once in one episode")
        finally:
            for c in held:
                c.close()
        # Descriptors come back as the sessions close: new sessions are
        # served again, and the episode's end is logged.
        deadline = time.time() + 20
        code = None
        while time.time() < deadline and code != 220:
            try:
                r = Raw(self.addr)
                code = r.greeting[0]
                r.cmd("QUIT")
                r.close()
            except (OSError, EOFError):
                time.sleep(0.2)
        self.assertEqual(code, 220)
        self.assertTrue(self.listener_lines("accept_resumed"))
        with smtplib.SMTP(*self.addr) as c:
            self.assertEqual(c.ehlo()[0], 250)


class MailboxKilled(unittest.TestCase):
    def test_sigkill_during_delivery_gives_451_then_recovers(self):
        pids = children("samotop-mailbox")
        self.assertEqual(len(pids), 1)
        pid = pids[0]
        a0 = len(files("alice"))
        os.kill(pid, signal.SIGSTOP)
        result = {}

        def deliver():
            try:
                result["r"] = send(["alice@example.test"], message("killed"))
            except Exception as e:  # noqa
                result["e"] = e

        t = threading.Thread(target=deliver)
        t.start()
        time.sleep(0.5)  # the request is in the stopped mailbox's hands
        os.kill(pid, signal.SIGKILL)
        t.join(15)
        self.assertFalse(t.is_alive())
        self.assertNotIn("e", result, result.get("e"))
        rcpts, (code, text) = result["r"]
        self.assertEqual(code, 451, text)
        self.assertEqual(len(files("alice")), a0, "a message was stored after a 451")
        # The supervisor brings the mailbox back; delivery resumes.
        deadline = time.time() + 15
        while time.time() < deadline:
            new = children("samotop-mailbox")
            if new and new[0] != pid:
                break
            time.sleep(0.1)
        self.assertTrue(new and new[0] != pid, "mailbox not restarted")
        SYS.wait_ready(["mailbox"])
        _, (code, text) = send(["alice@example.test"], message("after restart"))
        self.assertEqual(code, 250, text)
        self.assertEqual(len(wait_files("alice", a0 + 1)), a0 + 1)


class RealClients(unittest.TestCase):
    def test_swaks_plain_and_starttls(self):
        for extra in ([], ["--tls"]):
            with self.subTest(tls=bool(extra)):
                a0 = len(files("alice"))
                r = subprocess.run(["swaks", "--server", "%s:%d" % MTA,
                                    "--from", "swaks@remote.test",
                                    "--to", "alice@example.test",
                                    "--helo", "swaks.remote.test",
                                    "--header", "Subject: swaks test",
                                    "--body", "from swaks"] + extra,
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertRegex(r.stdout, r"<[-~]\s+250 2\.0\.0 Ok: queued as [0-9a-f]{16}")
                self.assertEqual(len(wait_files("alice", a0 + 1)), a0 + 1)

    def test_smtp_source_many_sessions(self):
        b0 = len(files("bob"))
        r = subprocess.run(["smtp-source", "-s", "5", "-m", "100", "-l", "4096",
                            "-f", "load@remote.test", "-t", "bob@example.test",
                            "-M", "remote.test", "%s:%d" % MTA],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(wait_files("bob", b0 + 100, timeout=20)), b0 + 100)


if __name__ == "__main__":
    unittest.main(verbosity=2)
