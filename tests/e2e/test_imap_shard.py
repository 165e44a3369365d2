"""IMAP logins reach the mailbox shard that owns the account (issue 5 item
5): samotopd runs three mailbox copies owning shards 0, 1 and 2, which share
the IMAP and IMAPS ports (SO_REUSEPORT), so a client lands on any of them.
A login on a copy that does not own the account is relayed to the owner's
internal door with a one-time ticket (actors/mailbox/mailbox_imap_proxy.c);
the client sees its mail either way. Python's imaplib over IMAPS and
STARTTLS, mail delivered over SMTP.

Which copy a connection landed on is read from the log: the copy that
relays writes "event=imap_relay ... port=P" (P the client's port) before it
answers the login, so once imaplib's login returns the line is there or
the login was served where it landed, by the owner.
"""
import imaplib
import os
import re
import signal
import smtplib
import socket
import ssl
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402

BASE = 21300          # 21300-21319: the system
INTERNAL = 21340      # 21340-21342: the copies' internal doors
SHARDS = 3
SYS = None
MTA = ("127.0.0.1", BASE + 10)
IMAP_PORT = BASE + 13
IMAPS_PORT = BASE + 14
DOMAIN = "ishard.test"
# Enough tries that landing on a non-owner (2 in 3 each time) and on the
# owner (1 in 3) both happen but for a chance below 1e-8.
TRIES = 50


def shard_of(addr):
    return st.shard_of(addr, SHARDS)


def pick_accounts():
    """One account on each shard."""
    out = {}
    for i in range(100):
        a = "user%d@%s" % (i, DOMAIN)
        out.setdefault(shard_of(a), a)
        if len(out) == SHARDS:
            break
    return [out[k] for k in range(SHARDS)]


ACCOUNTS = pick_accounts()


def password(a):
    return "pw-" + a


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the self-signed certificate
    return ctx


def setUpModule():
    global SYS
    SYS = st.System(BASE, extra_env={
        "SAMOTOP_SUPERVISOR_MAILBOX": str(SHARDS),
        "SAMOTOP_MAILBOX_SHARDS": "0",  # one per copy
        "SAMOTOP_MAILBOX_IMAP_INTERNAL": "127.0.0.1:%d" % INTERNAL,
        "SAMOTOP_BUS_TIMEOUT_MS": "5000",
        "SAMOTOP_HOSTNAME": "mail.ishard.test",
        "SAMOTOP_AUTH_FAIL_LIMIT": "0",
        "SAMOTOP_AUTH_FAIL_DELAY_MS": "0",
    }).start()
    SYS.admin("domain", "add", DOMAIN)
    for a in ACCOUNTS:
        SYS.admin("user", "add", a, input=password(a) + "\n")
        deliver(a, "first for %s" % a)


def tearDownModule():
    SYS.stop()


def deliver(addr, subject):
    with smtplib.SMTP(*MTA, local_hostname="client.remote.test",
                      timeout=60) as c:
        c.sendmail("sender@remote.test", [addr],
                   ("From: sender@remote.test\r\nTo: %s\r\nSubject: %s\r\n"
                    "\r\nHello.\r\n" % (addr, subject)).encode())


def owners():
    """shard -> the instance number N of the mailbox/N owning it."""
    out = {}
    for m in re.finditer(r"actor=mailbox/(\d+) trace=- event=mailbox_shard "
                         r"shard=(\d+)", SYS.logtext()):
        out[int(m.group(2))] = m.group(1)
    return out


def pid_of(instance):
    pids = re.findall(r"event=start name=mailbox/%s pid=(\d+)" % instance,
                      SYS.logtext())
    return int(pids[-1])


def connect(implicit, timeout=60):
    if implicit:
        m = imaplib.IMAP4_SSL("127.0.0.1", IMAPS_PORT, ssl_context=tls_ctx(),
                              timeout=timeout)
    else:
        m = imaplib.IMAP4("127.0.0.1", IMAP_PORT, timeout=timeout)
        m.starttls(ssl_context=tls_ctx())
    m.sock.settimeout(60)
    return m


def relay_line(m, since):
    """The log line of the copy that relayed this connection, or None;
    since: the log's length before it connected (a port used again later
    must not be taken for this one)."""
    port = m.sock.getsockname()[1]
    found = re.findall(r"actor=mailbox/(\d+) trace=(\w+) event=imap_relay "
                       r"user=(\S+) door=\w+ ip=\S+ port=%d shard=(\d+)"
                       % port, SYS.logtext()[since:])
    return found[-1] if found else None


def login(account, want_relayed, tries=TRIES):
    """A logged-in session that landed on a non-owner (relayed) or on the
    owner, as asked; the others are logged out."""
    for i in range(tries):
        since = len(SYS.logtext())
        m = connect(implicit=i % 2 == 0)
        m.login(account, password(account))
        if (relay_line(m, since) is not None) == want_relayed:
            return m
        m.logout()
    raise AssertionError("no %s login in %d tries" % (
        "relayed" if want_relayed else "local", tries))


def subjects(m):
    typ, dat = m.select("INBOX")
    assert typ == "OK", dat
    n = int(dat[0])
    if n == 0:
        return []
    typ, dat = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", dat
    return [d[1].decode().strip() for d in dat if isinstance(d, tuple)]


def flags_of(m, seq):
    typ, dat = m.fetch(str(seq), "(FLAGS)")
    assert typ == "OK", dat
    return dat[0].decode()


class ImapShards(unittest.TestCase):
    def test_a_every_login_sees_its_mail(self):
        """Over IMAPS and STARTTLS, each login sees the account's mail
        wherever it landed; some land on the owner, some are relayed by
        another copy, and the owner logs the relayed login under the same
        trace."""
        own = owners()
        self.assertEqual(sorted(own), [0, 1, 2])
        for a in ACCOUNTS:
            relayed = local = 0
            for i in range(TRIES):
                since = len(SYS.logtext())
                m = connect(implicit=i % 2 == 0)
                m.login(a, password(a))
                self.assertIn("Subject: first for %s" % a, subjects(m))
                line = relay_line(m, since)
                m.logout()
                if line is None:
                    local += 1
                    continue
                relayed += 1
                front, trace, user, shard = line
                self.assertEqual(user, a)
                self.assertEqual(int(shard), shard_of(a))
                self.assertNotEqual(front, own[shard_of(a)])
                self.assertRegex(SYS.logtext(),
                                 r"actor=mailbox/%s trace=%s "
                                 r"event=imap_ticket_login user=%s from="
                                 r"mailbox/%s" % (own[shard_of(a)], trace,
                                                  re.escape(a), front))
                if relayed >= 2 and local >= 1:
                    break
            self.assertGreaterEqual(relayed, 2, a)
            self.assertGreaterEqual(local, 1, a)

    def test_b_flags_and_idle_through_the_relay(self):
        """A flag set through the relay is seen by a session on the owner
        and the other way round; IDLE through the relay wakes on a
        delivery."""
        a = ACCOUNTS[1]
        r = login(a, want_relayed=True)
        o = login(a, want_relayed=False)
        try:
            subjects(r)
            subjects(o)
            typ, _ = r.store("1", "+FLAGS", "(\\Flagged)")
            self.assertEqual(typ, "OK")
            self.assertIn("\\Flagged", flags_of(o, 1))
            typ, _ = o.store("1", "+FLAGS", "($Shard)")
            self.assertEqual(typ, "OK")
            self.assertIn("$Shard", flags_of(r, 1))
            typ, dat = r.uid("SEARCH", None, "FLAGGED")
            self.assertEqual(typ, "OK")
            self.assertTrue(dat[0].split(), dat)
            n = int(r.select("INBOX")[1][0])
            # RFC 2177 IDLE, by hand: imaplib has no IDLE before 3.14.
            r.send(b"i1 IDLE\r\n")
            self.assertTrue(r.readline().startswith(b"+"))
            deliver(a, "while idling")
            line = r.readline()
            self.assertRegex(line, rb"^\* %d EXISTS" % (n + 1))
            r.send(b"DONE\r\n")
            while True:
                line = r.readline()
                if line.startswith(b"i1 "):
                    break
            self.assertTrue(line.startswith(b"i1 OK"), line)
            self.assertIn("Subject: while idling", subjects(o))
        finally:
            r.logout()
            o.logout()

    def test_c_internal_door_takes_no_password(self):
        """Each copy's internal door: no STARTTLS, no password (even the
        right one), no made-up ticket."""
        a = ACCOUNTS[0]
        for port in range(INTERNAL, INTERNAL + SHARDS):
            with socket.create_connection(("127.0.0.1", port),
                                          timeout=60) as s:
                f = s.makefile("rb")
                self.assertTrue(f.readline().startswith(b"* OK"))
                s.sendall(b"c CAPABILITY\r\n")
                caps = f.readline()
                self.assertNotIn(b"STARTTLS", caps)
                self.assertNotIn(b"LOGINDISABLED", caps)
                self.assertTrue(f.readline().startswith(b"c OK"))
                for pw in (password(a), "0" * 48, "x"):
                    s.sendall(b'l LOGIN "%s" "%s"\r\n' % (a.encode(),
                                                          pw.encode()))
                    line = f.readline()
                    self.assertTrue(line.startswith(b"l NO"), line)
                s.sendall(b"s SELECT INBOX\r\n")
                self.assertTrue(f.readline().startswith(b"s BAD"))
        self.assertRegex(SYS.logtext(), r"event=imap_ticket_refused .*"
                         r"reason=not_a_ticket")
        self.assertRegex(SYS.logtext(), r"event=imap_ticket_refused .*"
                         r"reason=unknown_ticket")

    def test_d_owner_killed_closes_relayed_session(self):
        """The owner dies mid-session: the relayed client's session ends
        (no hang); once samotopd has restarted the owner, logins work
        again."""
        a = ACCOUNTS[2]
        owner = owners()[shard_of(a)]
        r = login(a, want_relayed=True)
        subjects(r)
        before = len(re.findall(r"event=start name=mailbox/%s " % owner,
                                SYS.logtext()))
        os.kill(pid_of(owner), signal.SIGKILL)
        t0 = time.time()
        with self.assertRaises((imaplib.IMAP4.abort, OSError, EOFError)):
            # The relay closes; each read gets EOF, well before the
            # socket's own 60 s timeout.
            r.noop()
            r.noop()
        self.assertLess(time.time() - t0, 55)
        r.shutdown()
        deadline = time.time() + 60
        while time.time() < deadline and len(re.findall(
                r"event=start name=mailbox/%s " % owner,
                SYS.logtext())) == before:
            time.sleep(0.2)
        SYS.wait_ready(services=["mailbox.%d" % shard_of(a)], timeout=60)
        m = login(a, want_relayed=True)
        self.assertIn("Subject: first for %s" % a, subjects(m))
        m.logout()

    def test_e_owner_down_unavailable_then_back(self):
        """The owner stopped (SIGSTOP): a login landing elsewhere gets NO
        [UNAVAILABLE] (RFC 5530), and the same login succeeds once the
        owner runs again."""
        a = ACCOUNTS[0]
        owner = owners()[shard_of(a)]
        pid = pid_of(owner)
        os.kill(pid, signal.SIGSTOP)
        try:
            refused = None
            for i in range(TRIES):
                try:
                    # One landing on the stopped owner never greets.
                    m = connect(implicit=i % 2 == 0, timeout=5)
                except (socket.timeout, TimeoutError, ssl.SSLError,
                        imaplib.IMAP4.abort):
                    continue
                try:
                    m.login(a, password(a))
                    self.fail("login with the owner stopped succeeded")
                except imaplib.IMAP4.error as e:
                    refused = str(e)
                try:
                    m.logout()
                except (imaplib.IMAP4.error, OSError):
                    pass
                break
            self.assertIsNotNone(refused)
            self.assertIn("UNAVAILABLE", refused)
        finally:
            os.kill(pid, signal.SIGCONT)
        # The owner takes requests again once the broker hears from it.
        deadline = time.time() + 60
        while True:
            try:
                m = login(a, want_relayed=True)
                break
            except imaplib.IMAP4.error as e:
                self.assertIn("UNAVAILABLE", str(e))
                self.assertLess(time.time(), deadline)
                time.sleep(0.5)
        self.assertIn("Subject: first for %s" % a, subjects(m))
        m.logout()

    def test_f_large_message_both_ways(self):
        """A message of some megabytes goes up through the relay (APPEND)
        and comes back down through it (FETCH) octet for octet: each way
        holds at most 64 KiB at the relay, so both ways wait for the
        other side to take what it has."""
        a = ACCOUNTS[1]
        body = b"".join(b"line %07d of a large message through the relay"
                        b"\r\n" % i for i in range(80000))
        msg = (b"From: sender@remote.test\r\nTo: %s\r\nSubject: large\r\n"
               b"\r\n" % a.encode()) + body
        r = login(a, want_relayed=True)
        o = login(a, want_relayed=False)
        try:
            typ, dat = r.append("INBOX", None, None, msg)
            self.assertEqual(typ, "OK", dat)
            uid = re.search(rb"APPENDUID \d+ (\d+)", dat[0]).group(1)
            for m in (o, r):
                m.select("INBOX")
                typ, dat = m.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
                self.assertEqual(typ, "OK")
                self.assertEqual(dat[0][1], msg)
        finally:
            r.logout()
            o.logout()

    def test_g_ticket_masked_on_the_tap(self):
        """mailbox.ticket and its reply validate against schemas/, and the
        bus tap shows the ticket as *** (the owner answers as service
        mailbox.K, whose secrets the broker masks too)."""
        import json
        import select
        import jsonschema
        a = ACCOUNTS[0]
        tap = SYS.tap("--json", "--type", "mailbox.ticket*")
        got, buf, fd = {}, b"", tap.stdout.fileno()
        try:
            deadline = time.time() + 60
            while "mailbox.ticket.reply" not in got:
                self.assertLess(time.time(), deadline, got)
                # The tap may not be subscribed yet: log in until it has
                # seen one exchange.
                m = login(a, want_relayed=True)
                m.logout()
                while select.select([fd], [], [], 2.0)[0]:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        e = json.loads(line)
                        got[e["type"]] = e
        finally:
            tap.terminate()
            tap.communicate(timeout=30)
        for t in ("mailbox.ticket", "mailbox.ticket.reply"):
            with open(os.path.join(st.SRC, "schemas", t + ".json")) as f:
                jsonschema.validate(got[t]["body"], json.load(f))
        reply = got["mailbox.ticket.reply"]["body"]
        self.assertEqual(reply["code"], 250)
        self.assertEqual(reply["ticket"], "***")
        self.assertRegex(reply["addr"], r"^127\.0\.0\.1:213(40|41|42)$")
        self.assertEqual(got["mailbox.ticket"]["body"]["account"], a)

    def test_h_commands_pipelined_after_login(self):
        """A client that sends commands right behind its LOGIN, in the same
        packet (RFC 3501 5.5 lets it): the relay hands them to the owner
        after the login, and they are answered there."""
        a = ACCOUNTS[2]
        for _ in range(TRIES):
            since = len(SYS.logtext())
            raw = socket.create_connection(("127.0.0.1", IMAPS_PORT),
                                           timeout=60)
            s = tls_ctx().wrap_socket(raw)
            port = s.getsockname()[1]
            f = s.makefile("rb")
            self.assertTrue(f.readline().startswith(b"* OK"))
            s.sendall(b'a LOGIN "%s" "%s"\r\nb SELECT INBOX\r\n'
                      b"c FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
                      b"d LOGOUT\r\n" % (a.encode(), password(a).encode()))
            got = b""
            while True:
                line = f.readline()
                if not line:
                    break
                got += line
            f.close()
            s.close()
            self.assertIn(b"\r\na OK", b"\r\n" + got)
            self.assertIn(b"\r\nb OK", got)
            self.assertIn(b"Subject: first for %s" % a.encode(), got)
            self.assertIn(b"\r\nd OK", got)
            if re.search(r"event=imap_relay user=%s door=imaps ip=\S+ "
                         r"port=%d " % (re.escape(a), port),
                         SYS.logtext()[since:]):
                return
        self.fail("no relayed session in %d tries" % TRIES)

    def test_i_many_at_once_and_clients_that_vanish(self):
        """Eight clients at once, each logging in over and over to all
        three accounts, while others send LOGIN and reset the connection
        at once (the relay may be asking for its ticket, connecting or
        logging in then): every login that stays sees its mail, and the
        copies serve on afterwards."""
        import struct
        import threading
        errors = []

        def vanish():
            for _ in range(10):
                raw = socket.create_connection(("127.0.0.1", IMAPS_PORT),
                                               timeout=60)
                s = tls_ctx().wrap_socket(raw)
                f = s.makefile("rb")
                f.readline()
                a = ACCOUNTS[_ % SHARDS]
                s.sendall(b'v LOGIN "%s" "%s"\r\nw SELECT INBOX\r\n' %
                          (a.encode(), password(a).encode()))
                # SO_LINGER 0: close sends a reset, not a FIN.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
                f.close()
                s.close()

        def worker(w):
            try:
                for i in range(6):
                    a = ACCOUNTS[(w + i) % SHARDS]
                    m = connect(implicit=(w + i) % 2 == 0)
                    m.login(a, password(a))
                    if "Subject: first for %s" % a not in subjects(m):
                        errors.append((a, "mail not seen"))
                    m.logout()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(w,))
                   for w in range(8)]
        threads += [threading.Thread(target=vanish) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertEqual(errors, [])
        for a in ACCOUNTS:
            m = login(a, want_relayed=True)
            self.assertIn("Subject: first for %s" % a, subjects(m))
            m.logout()

    def test_j_authenticate_plain_relayed(self):
        """AUTHENTICATE PLAIN (RFC 4616) is relayed as LOGIN is."""
        a = ACCOUNTS[0]
        for i in range(TRIES):
            since = len(SYS.logtext())
            m = connect(implicit=i % 2 == 1)
            typ, _ = m.authenticate(
                "PLAIN", lambda _: b"\0%s\0%s" % (a.encode(),
                                                  password(a).encode()))
            self.assertEqual(typ, "OK")
            relayed = relay_line(m, since) is not None
            self.assertIn("Subject: first for %s" % a, subjects(m))
            m.logout()
            if relayed:
                return
        self.fail("no relayed session in %d tries" % TRIES)


if __name__ == "__main__":
    unittest.main()
