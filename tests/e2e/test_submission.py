"""Outbound mail end to end: users submit on the MSA (STARTTLS + AUTH) and
SMTPS ports with smtplib and swaks; the queue stores each message in Redis
and the relay hands remote ones to a real SMTP server on loopback (a sink
the test controls); failures come back as bounces.
"""
import base64
import glob
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402

BASE = 19400
SINK_PORT = BASE + 60
SYS = None
SINK = None
MSA = ("127.0.0.1", BASE + 11)
SMTPS = ("127.0.0.1", BASE + 12)


def setUpModule():
    global SYS, SINK
    SYS = st.System(BASE, extra_env={
        "SAMOTOP_HOSTNAME": "mx.example.test",
        "SAMOTOP_QUEUE_RETRY_MIN_S": "1",
        "SAMOTOP_QUEUE_RETRY_MAX_S": "2",
        "SAMOTOP_QUEUE_LEASE_MS": "3000",
        "SAMOTOP_GUARD_USER_MSG_PER_MINUTE": "0",
        "SAMOTOP_GUARD_USER_RCPT_PER_MINUTE": "0",
        "SAMOTOP_LISTENER_MAX_PER_IP": "200",
    }).start()
    SYS.admin("domain", "add", "example.test")
    SYS.admin("user", "add", "alice@example.test", input="alice-pw\n")
    SYS.admin("user", "add", "bob@example.test", input="bob-pw\n")
    SYS.admin("alias", "add", "sales@example.test", "alice@example.test")
    SYS.admin("route", "add", "remote.test", "127.0.0.1:%d" % SINK_PORT)
    SINK = st.Sink(SINK_PORT, rcpt_codes={
        "refused@remote.test": "550 5.1.1 no such user here"})


def tearDownModule():
    SINK.stop()
    SYS.stop()


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def files(user):
    return sorted(glob.glob(os.path.join(SYS.data, "mail", "example.test",
                                         user, "new", "*")))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def wait_files(user, n, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(files(user)) >= n:
            break
        time.sleep(0.1)
    return files(user)


def msa(user="alice@example.test", pw="alice-pw"):
    c = smtplib.SMTP(*MSA, local_hostname="laptop.example.test", timeout=30)
    c.starttls(context=ctx())
    c.ehlo()
    if user:
        c.login(user, pw)
    return c


def message(subject, frm="alice@example.test", to="friend@remote.test"):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.test>"
            "\r\n\r\nBody of %s.\r\n.dot line\r\n" % (frm, to, subject,
                                                       subject.replace(" ", "."),
                                                       subject)).encode()


class Auth(unittest.TestCase):
    def test_no_auth_before_starttls(self):
        c = smtplib.SMTP(*MSA, local_hostname="laptop.example.test")
        c.ehlo()
        self.assertFalse(c.has_extn("auth"))
        self.assertTrue(c.has_extn("starttls"))
        code, text = c.docmd("AUTH PLAIN " + base64.b64encode(
            b"\0alice@example.test\0alice-pw").decode())
        self.assertIn(code, (503, 530, 538), text)
        code, text = c.docmd("MAIL FROM:<alice@example.test>")
        self.assertEqual(code, 530, text)
        self.assertIn(b"5.7.0", text)
        c.quit()

    def test_plain_and_login_right_and_wrong(self):
        for mech in ("PLAIN", "LOGIN"):
            for pw, want in (("wrong", 535), ("alice-pw", 235)):
                with self.subTest(mech=mech, pw=pw):
                    c = smtplib.SMTP(*MSA, local_hostname="laptop.example.test")
                    c.starttls(context=ctx())
                    c.ehlo()
                    self.assertIn(mech, c.esmtp_features["auth"].upper())
                    c.user, c.password = "alice@example.test", pw
                    if want == 235:
                        code, text = c.auth(mech, getattr(c, "auth_" + mech.lower()))
                        self.assertEqual(code, 235, text)
                    else:
                        with self.assertRaises(smtplib.SMTPAuthenticationError) as e:
                            c.auth(mech, getattr(c, "auth_" + mech.lower()))
                        self.assertEqual(e.exception.smtp_code, 535)
                    c.quit()

    def test_mail_before_auth_is_refused(self):
        c = msa(user=None)
        code, text = c.docmd("MAIL FROM:<alice@example.test>")
        self.assertEqual(code, 530, text)
        c.quit()

    def test_swaks_auth_plain_and_login(self):
        for mech in ("PLAIN", "LOGIN"):
            with self.subTest(mech=mech):
                a0 = len(files("bob"))
                r = subprocess.run(["swaks", "--server", "%s:%d" % MSA, "--tls",
                                    "--auth", mech, "--auth-user", "alice@example.test",
                                    "--auth-password", "alice-pw",
                                    "--from", "alice@example.test",
                                    "--to", "bob@example.test",
                                    "--header", "Subject: swaks " + mech],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertNotIn("alice-pw", SYS.logtext())
                self.assertEqual(len(wait_files("bob", a0 + 1)), a0 + 1)

    def test_smtps_implicit_tls(self):
        a0 = len(files("bob"))
        with smtplib.SMTP_SSL(*SMTPS, context=ctx(),
                              local_hostname="laptop.example.test") as c:
            c.login("alice@example.test", "alice-pw")
            c.sendmail("alice@example.test", ["bob@example.test"],
                       message("over smtps", to="bob@example.test"))
        f = wait_files("bob", a0 + 1)
        self.assertEqual(len(f), a0 + 1)
        newest = max(f, key=os.path.getmtime)
        self.assertIn(b"with ESMTPSA", read(newest))


class Sending(unittest.TestCase):
    def test_sender_spoofing_refused(self):
        with msa() as c:
            code, text = c.docmd("MAIL FROM:<bob@example.test>")
            self.assertEqual(code, 553, text)
            self.assertIn(b"5.7.1", text)
            code, text = c.docmd("RSET")
            code, text = c.docmd("MAIL FROM:<sales@example.test>")
            self.assertEqual(code, 250, text)  # an alias that is alice's

    def test_local_recipient_lands_in_maildir(self):
        b0 = len(files("bob"))
        msg = message("to a local user", to="bob@example.test")
        with msa() as c:
            c.sendmail("alice@example.test", ["bob@example.test"], msg)
        f = wait_files("bob", b0 + 1)
        self.assertEqual(len(f), b0 + 1)
        self.assertTrue(read(max(f, key=os.path.getmtime)).endswith(msg))

    def test_remote_recipient_arrives_at_sink_intact(self):
        n0 = len(SINK.messages)
        msg = message("to the sink")
        with msa() as c:
            c.sendmail("alice@example.test", ["friend@remote.test"], msg)
        got = SINK.wait(n0 + 1)
        self.assertEqual(len(got), n0 + 1)
        frm, rcpts, data = got[-1]
        self.assertEqual(frm, "alice@example.test")
        self.assertEqual(rcpts, ["friend@remote.test"])
        self.assertTrue(data.endswith(msg), data[-300:])
        self.assertIn(b"Received: from laptop.example.test", data)

    def test_sink_down_then_back(self):
        global SINK
        SINK.stop()
        msg = message("while down", frm="sales@example.test")
        with msa() as c:
            # From alice's alias, so that queue list shows this one apart.
            c.sendmail("sales@example.test", ["later@remote.test"], msg)
        time.sleep(1.5)
        r = SYS.admin("queue", "list")
        line = [l for l in r.stdout.splitlines() if "sales@example.test" in l]
        self.assertEqual(len(line), 1, r.stdout)
        self.assertIn("4.4.1", line[0])
        SINK = st.Sink(SINK_PORT, rcpt_codes=SINK.rcpt_codes)
        got = SINK.wait(1, timeout=30)
        self.assertTrue(any(d.endswith(msg) for _, _, d in got))
        deadline = time.time() + 10
        while time.time() < deadline:
            if "sales@example.test" not in SYS.admin("queue", "list").stdout:
                break
            time.sleep(0.2)
        self.assertNotIn("sales@example.test", SYS.admin("queue", "list").stdout)

    def test_remote_550_bounces_to_sender(self):
        a0 = len(files("alice"))
        with msa() as c:
            c.sendmail("alice@example.test", ["refused@remote.test"],
                       message("will bounce", to="refused@remote.test"))
        f = wait_files("alice", a0 + 1, timeout=30)
        self.assertEqual(len(f), a0 + 1)
        bounce = read(max(f, key=os.path.getmtime))
        self.assertIn(b"multipart/report", bounce)
        self.assertIn(b"report-type=delivery-status", bounce)
        self.assertIn(b"Final-Recipient: rfc822; refused@remote.test", bounce)
        self.assertIn(b"Action: failed", bounce)
        self.assertIn(b"Status: 5.1.1", bounce)
        self.assertIn(b"Return-Path: <>", bounce)


class Limits(unittest.TestCase):
    def test_per_user_message_rate(self):
        s = st.System(BASE + 70, extra_env={
            "SAMOTOP_GUARD_USER_MSG_PER_MINUTE": "2"}).start()
        try:
            s.admin("domain", "add", "example.test")
            s.admin("user", "add", "carol@example.test", input="carol-pw\n")
            codes = []
            c = smtplib.SMTP("127.0.0.1", BASE + 70 + 11,
                             local_hostname="laptop.example.test")
            c.starttls(context=ctx())
            c.login("carol@example.test", "carol-pw")
            for _ in range(3):
                code, text = c.docmd("MAIL FROM:<carol@example.test>")
                codes.append(code)
                c.docmd("RSET")
            c.quit()
            self.assertEqual(codes[:2], [250, 250])
            self.assertEqual(codes[2], 451)
        finally:
            s.stop()


def children(name):
    out = subprocess.run(["pgrep", "-P", str(SYS.proc.pid), "-x", name],
                         capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


class KillDuringLoad(unittest.TestCase):
    """1,000 messages; the queue and the relay SIGKILLed during the run.
    None may be lost; duplicates are counted and reported."""

    def test_sigkill_queue_and_relay_during_1000(self):
        n0 = len(SINK.messages)
        total = 1000
        sent = []
        errors = []

        retries = []

        def worker(k):
            # A real client: a 4xx (the queue died with the message in
            # hand) means "send it again later", on a new session.
            c = None
            for i in range(k, total, 10):
                for attempt in range(20):
                    try:
                        if c is None:
                            c = msa()
                        c.sendmail("alice@example.test", ["load@remote.test"],
                                   message("load %d" % i))
                        sent.append(i)
                        break
                    except smtplib.SMTPResponseException as e:
                        if not 400 <= e.smtp_code < 500:
                            errors.append(repr(e))
                            break
                        retries.append(i)
                    except smtplib.SMTPRecipientsRefused as e:
                        codes = [v[0] for v in e.recipients.values()]
                        if not all(400 <= c < 500 for c in codes):
                            errors.append(repr(e))
                            break
                        retries.append(i)
                    except (smtplib.SMTPServerDisconnected, OSError):
                        retries.append(i)
                    try:
                        c.close()
                    except Exception:  # noqa
                        pass
                    c = None
                    time.sleep(0.3)
            if c is not None:
                c.quit()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(10)]
        for t in threads:
            t.start()
        time.sleep(2)
        for name in ("samotop-queue", "samotop-relay"):
            for pid in children(name):
                os.kill(pid, signal.SIGKILL)
            time.sleep(1.5)
        for t in threads:
            t.join(300)
        self.assertEqual(errors, [])
        self.assertEqual(len(sent), total)
        got = SINK.wait(n0 + total, timeout=180)
        # Messages whose queue process died with them leased go out once
        # the lease runs out: wait for the queue to drain before counting.
        deadline = time.time() + 60
        while time.time() < deadline:
            if "queue is empty" in SYS.admin("queue", "list").stdout:
                break
            time.sleep(0.5)
        self.assertIn("queue is empty", SYS.admin("queue", "list").stdout)
        time.sleep(1)
        got = SINK.wait(n0 + total, timeout=1)
        subjects = {}
        for _, _, data in got[n0:]:
            for line in data.split(b"\r\n"):
                if line.startswith(b"Subject: load "):
                    subjects[line] = subjects.get(line, 0) + 1
        missing = total - len(subjects)
        dups = sum(c - 1 for c in subjects.values())
        sys.stderr.write("kill-during-load: delivered=%d unique=%d missing=%d "
                         "duplicates=%d client_retries=%d\n"
                         % (len(got) - n0, len(subjects), missing, dups,
                            len(retries)))
        self.assertEqual(missing, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
