"""IMAP end to end: Python's imaplib and a raw socket client against the
real samotopd (mailbox actor's IMAP doors, auth over the bus, the listener
delivering over SMTP), on loopback. Every command of issue 5 item 1, UIDs
across sessions and a restart, IDLE woken by a delivery, two sessions
seeing each other's changes, STARTTLS, LOGINDISABLED, bad commands.
"""
import imaplib
import os
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402

BASE = 20000       # 20000-20019: the main system
BASE_SHORT = 20050  # 20050-20069: a system with a short autologout
SYS = None

MTA = ("127.0.0.1", BASE + 10)
IMAP_PORT = BASE + 13
IMAPS_PORT = BASE + 14
PASSWORDS = {"alice": "secret-alice", "bob": "secret-bob",
             "carol": "secret-carol", "dave": "secret-dave",
             "gina": "secret-gina"}


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the self-signed certificate
    return ctx


def setUpModule():
    global SYS
    SYS = st.System(BASE, extra_env={
        "SAMOTOP_HOSTNAME": "mail.example.test",
        "SAMOTOP_BUS_TIMEOUT_MS": "5000",
        # Wrong passwords are tried on purpose here: no throttling delay.
        "SAMOTOP_AUTH_FAIL_LIMIT": "0",
        "SAMOTOP_AUTH_FAIL_DELAY_MS": "0",
    }).start()
    SYS.admin("domain", "add", "example.test")
    for u, p in PASSWORDS.items():
        SYS.admin("user", "add", u + "@example.test", input=p + "\n")


def tearDownModule():
    # Secrets never reach a log (LOGIN, AUTHENTICATE PLAIN, wrong ones).
    text = SYS.logtext()
    SYS.stop()
    for p in list(PASSWORDS.values()) + ["nope"]:
        assert p not in text, "a password is in samotopd's log"
    assert "imap_login " in text or "event=imap_login" in text


def message(subject, body="Hello.\r\n", frm="sender@remote.test",
            to="alice@example.test", extra=""):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\n"
            "Date: Tue, 01 Jul 2003 10:52:37 +0200\r\n"
            "Message-ID: <%s@remote.test>\r\n%s\r\n%s"
            % (frm, to, subject, re.sub(r"\W", ".", subject), extra,
               body)).encode()


def deliver(user, msg):
    with smtplib.SMTP(*MTA, local_hostname="client.remote.test") as c:
        c.sendmail("sender@remote.test", [user + "@example.test"], msg)


def login(user, port=IMAPS_PORT):
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=tls_ctx(),
                          timeout=60)
    m.login(user + "@example.test", PASSWORDS[user])
    return m


def ok(res):
    typ, dat = res
    assert typ == "OK", (typ, dat)
    return dat


def fetch_map(m, cmd, uid=False):
    """FETCH answers as {seq or uid: raw bytes of the response}."""
    typ, dat = (m.uid("FETCH", *cmd) if uid else m.fetch(*cmd))
    assert typ == "OK", (typ, dat)
    out = {}
    last = None
    for item in dat:
        head = item[0] if isinstance(item, tuple) else item
        if head is None:
            continue
        if re.match(rb"\d+ \(", head):
            last = int(head.split()[0])
            out[last] = out.get(last, b"")
        # The rest of a response after a literal comes as its own item.
        out[last] += head
        if isinstance(item, tuple):
            out[last] += b"\r\n" + item[1]
    return out


def literal_of(m, seq, item):
    typ, dat = m.fetch(str(seq), item)
    assert typ == "OK", (typ, dat)
    for x in dat:
        if isinstance(x, tuple):
            return x[1]
    return None


class Raw:
    """An IMAP client by hand, for what imaplib cannot do (IDLE, LITERAL+,
    bad input) and for reading unsolicited responses."""

    def __init__(self, port=IMAPS_PORT, tls=True):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s = tls_ctx().wrap_socket(s) if tls else s
        self.buf = b""
        self.n = 0
        self.greeting = self.resp()

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def resp(self):
        """One response with its literals inline."""
        out = self._line()
        while True:
            mm = re.search(rb"\{(\d+)\}$", out)
            if not mm:
                return out
            n = int(mm.group(1))
            while len(self.buf) < n:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError(self.buf)
                self.buf += chunk
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]
            out += self._line()

    def cmd(self, text):
        self.n += 1
        tag = "r%d" % self.n
        self.send("%s %s\r\n" % (tag, text))
        return self.until(tag)

    def until(self, tag):
        untagged = []
        while True:
            r = self.resp()
            if r.startswith(tag.encode() + b" "):
                return untagged, r.decode("utf-8", "replace")
            untagged.append(r)

    def login(self, user):
        _, t = self.cmd('LOGIN %s@example.test "%s"' % (user, PASSWORDS[user]))
        assert " OK " in t, t

    def wait_for(self, pattern, timeout):
        """Reads responses until one matches pattern; returns it or None."""
        deadline = time.time() + timeout
        self.s.settimeout(0.2)
        try:
            while time.time() < deadline:
                try:
                    r = self.resp()
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                if re.search(pattern, r):
                    return r
            return None
        finally:
            self.s.settimeout(10)

    def close(self):
        self.s.close()


class Sessions(unittest.TestCase):
    """Doors, TLS and logins."""

    def test_greeting_and_capability_before_tls(self):
        m = imaplib.IMAP4("127.0.0.1", IMAP_PORT)
        try:
            self.assertIn(b"mail.example.test", m.welcome)
            caps = m.capabilities
            for c in ("IMAP4REV1", "STARTTLS", "LOGINDISABLED", "IDLE",
                      "UIDPLUS", "MOVE", "NAMESPACE", "ID", "ENABLE",
                      "LITERAL+"):
                self.assertIn(c, caps)
            self.assertNotIn("AUTH=PLAIN", caps)
        finally:
            m.shutdown()

    def test_login_refused_before_tls(self):
        m = imaplib.IMAP4("127.0.0.1", IMAP_PORT)
        try:
            with self.assertRaises(imaplib.IMAP4.error) as cm:
                m.login("alice@example.test", PASSWORDS["alice"])
            self.assertIn("PRIVACYREQUIRED", str(cm.exception))
            # AUTHENTICATE is refused too, and the session goes on.
            r = Raw(IMAP_PORT, tls=False)
            _, t = r.cmd("AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB4")
            self.assertRegex(t, r"^r1 (NO|BAD) ")
            _, t = r.cmd("NOOP")
            self.assertIn("OK", t)
            r.close()
        finally:
            m.shutdown()

    def test_starttls_then_login(self):
        m = imaplib.IMAP4("127.0.0.1", IMAP_PORT)
        ok(m.starttls(ssl_context=tls_ctx()))
        self.assertNotIn("STARTTLS", m.capabilities)
        self.assertNotIn("LOGINDISABLED", m.capabilities)
        self.assertIn("AUTH=PLAIN", m.capabilities)
        ok(m.login("alice@example.test", PASSWORDS["alice"]))
        self.assertEqual(m.state, "AUTH")
        ok(m.select("INBOX"))
        m.logout()

    def test_imaps_login_case_insensitive_user(self):
        m = imaplib.IMAP4_SSL("127.0.0.1", IMAPS_PORT, ssl_context=tls_ctx())
        ok(m.login("Alice@Example.TEST", PASSWORDS["alice"]))
        ok(m.select("INBOX"))
        m.logout()

    def test_wrong_password(self):
        m = imaplib.IMAP4_SSL("127.0.0.1", IMAPS_PORT, ssl_context=tls_ctx())
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.login("alice@example.test", "wrong")
        self.assertIn("AUTHENTICATIONFAILED", str(cm.exception))
        # The session goes on: the right password works now.
        ok(m.login("alice@example.test", PASSWORDS["alice"]))
        m.logout()

    def test_authenticate_plain(self):
        m = imaplib.IMAP4_SSL("127.0.0.1", IMAPS_PORT, ssl_context=tls_ctx())
        cred = "\0bob@example.test\0" + PASSWORDS["bob"]
        ok(m.authenticate("PLAIN", lambda _: cred.encode()))
        ok(m.select("INBOX"))
        m.logout()
        m = imaplib.IMAP4_SSL("127.0.0.1", IMAPS_PORT, ssl_context=tls_ctx())
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.authenticate("PLAIN",
                           lambda _: b"\0bob@example.test\0nope")
        self.assertIn("AUTHENTICATIONFAILED", str(cm.exception))
        m.shutdown()

    def test_bad_commands_get_bad_and_session_goes_on(self):
        r = Raw()
        _, t = r.cmd("FROBNICATE")
        self.assertRegex(t, r"^r1 BAD \S")
        _, t = r.cmd("SELECT INBOX")
        self.assertRegex(t, r"^r2 BAD .*(?i:authenticated)")
        r.login("carol")
        _, t = r.cmd("FETCH 1 FLAGS")
        self.assertRegex(t, r"^r4 BAD ")
        _, t = r.cmd("SELECT")
        self.assertRegex(t, r"^r5 BAD ")
        r.send("* garbage\r\n")
        self.assertRegex(r.resp().decode(), r"^\* BAD|^\S+ BAD")
        _, t = r.cmd("NOOP")
        self.assertRegex(t, r"^r6 OK")
        # An over-long line is refused and the session goes on.
        r.send("x7 NOOP " + "x" * 20000 + "\r\n")
        self.assertRegex(r.until("x7")[1], r"^x7 BAD .*(?i:too long)")
        _, t = r.cmd("NOOP")
        self.assertRegex(t, r"^r7 OK")
        _, t = r.cmd("LOGOUT")
        self.assertIn("OK", t)
        r.close()

    def test_logout(self):
        r = Raw()
        u, t = r.cmd("LOGOUT")
        self.assertTrue(any(x.startswith(b"* BYE") for x in u))
        self.assertRegex(t, r"^r1 OK")
        r.s.settimeout(5)
        self.assertEqual(r.s.recv(100), b"")
        r.close()


class Mail(unittest.TestCase):
    """The commands on folders and messages, on alice's mail."""

    @classmethod
    def setUpClass(cls):
        cls.msgs = [message("first message", "One.\r\n"),
                    message("second message", "Two and a needle.\r\n",
                            frm="Zed <zed@other.test>"),
                    message("third message", "Three.\r\n", extra=
                            "X-Colour: bright green\r\n")]
        for msg in cls.msgs:
            deliver("alice", msg)
        deadline = time.time() + 10
        while time.time() < deadline:
            m = login("alice")
            n = int(ok(m.select("INBOX"))[0])
            m.logout()
            if n >= 3:
                break
            time.sleep(0.1)

    def setUp(self):
        self.m = login("alice")

    def tearDown(self):
        try:
            self.m.logout()
        except Exception:
            pass

    def test_select_examine_status(self):
        m = self.m
        n = int(ok(m.select("INBOX"))[0])
        self.assertGreaterEqual(n, 3)
        self.assertIsNotNone(m.untagged_responses.get("UIDVALIDITY"))
        self.assertIsNotNone(m.untagged_responses.get("UIDNEXT"))
        self.assertIn(b"\\Seen", m.untagged_responses["FLAGS"][0])
        self.assertIn("READ-WRITE", m.untagged_responses.get("READ-WRITE", [b""])[0].decode() + "READ-WRITE")
        dat = ok(m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)"))
        self.assertRegex(dat[0].decode(), r"MESSAGES %d " % n)
        typ, dat = m.select("INBOX", readonly=True)
        self.assertEqual(typ, "OK")
        typ, _ = m.store("1", "+FLAGS", "\\Flagged")
        self.assertEqual(typ, "NO")
        typ, _ = m.select("NoSuchFolder")
        self.assertEqual(typ, "NO")
        self.assertEqual(m.state, "AUTH")

    def test_fetch_items(self):
        m = self.m
        ok(m.select("INBOX"))
        res = fetch_map(m, ("1:3", "(UID FLAGS INTERNALDATE RFC822.SIZE "
                                   "ENVELOPE BODYSTRUCTURE BODY)"))
        self.assertEqual(sorted(res), [1, 2, 3])
        r2 = res[2].decode()
        self.assertRegex(r2, r"UID \d+")
        self.assertRegex(r2, r'INTERNALDATE "\d{2}-\w{3}-\d{4} ')
        self.assertRegex(r2, r"RFC822.SIZE \d+")
        self.assertIn('"second message"', r2)
        self.assertIn('"Zed" NIL "zed" "other.test"', r2)
        self.assertRegex(r2, r'BODYSTRUCTURE \("TEXT" "PLAIN"')
        # BODY.PEEK[] is the message as stored; it ends with what was sent.
        whole = literal_of(m, 2, "(BODY.PEEK[])")
        self.assertTrue(whole.endswith(self.msgs[1]), whole[-200:])
        size = int(re.search(r"RFC822.SIZE (\d+)", r2).group(1))
        self.assertEqual(size, len(whole))
        hdr = literal_of(m, 2, "(BODY.PEEK[HEADER])")
        self.assertTrue(whole.startswith(hdr) and hdr.endswith(b"\r\n\r\n"))
        self.assertEqual(literal_of(m, 2, "(BODY.PEEK[TEXT])"),
                         b"Two and a needle.\r\n")
        self.assertEqual(literal_of(m, 2, "(RFC822.HEADER)"), hdr)
        self.assertEqual(literal_of(m, 2, "(BODY.PEEK[]<5.10>)"),
                         whole[5:15])
        self.assertEqual(literal_of(m, 2, "(BODY.PEEK[1])"),
                         b"Two and a needle.\r\n")
        f = literal_of(m, 3, "(BODY.PEEK[HEADER.FIELDS (SUBJECT X-COLOUR)])")
        self.assertEqual(f, b"Subject: third message\r\n"
                            b"X-Colour: bright green\r\n\r\n")
        f = literal_of(m, 3, "(BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED "
                             "RETURN-PATH FROM TO DATE MESSAGE-ID)])")
        self.assertEqual(f, b"Subject: third message\r\n"
                            b"X-Colour: bright green\r\n\r\n")
        # PEEK left \Seen alone; BODY[] sets it and says so (6.4.5).
        flags = fetch_map(m, ("1", "(FLAGS)"))[1]
        self.assertNotIn(b"\\Seen", flags)
        res = fetch_map(m, ("1", "(BODY[TEXT])"))
        self.assertIn(b"\\Seen", res[1])
        self.assertIn(b"\\Seen", fetch_map(m, ("1", "(FLAGS)"))[1])
        self.assertEqual(literal_of(m, 1, "(RFC822.TEXT)"), b"One.\r\n")
        ok(m.store("1", "-FLAGS", "\\Seen"))
        # A number past EXISTS is BAD; an empty UID set is OK.
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.fetch("999", "(FLAGS)")
        self.assertIn("BAD", str(cm.exception))
        typ, dat = m.uid("FETCH", "999999", "(FLAGS)")
        self.assertEqual(typ, "OK")
        # UID FETCH answers with UIDs.
        uid2 = int(re.search(rb"UID (\d+)", res_uid(m, 2)).group(1))
        r = fetch_map(m, ("%d" % uid2, "(FLAGS)"), uid=True)
        self.assertIn(("UID %d" % uid2).encode(), r[2])

    def test_store_flags(self):
        m = self.m
        ok(m.select("INBOX"))
        dat = ok(m.store("2", "+FLAGS", "(\\Flagged $Important)"))
        self.assertIn(b"\\Flagged", dat[0])
        self.assertIn(b"$Important", dat[0])
        dat = ok(m.store("2", "-FLAGS", "(\\Flagged)"))
        self.assertNotIn(b"\\Flagged", dat[0])
        dat = ok(m.store("2", "+FLAGS.SILENT", "(\\Answered)"))
        self.assertEqual(dat, [None])
        self.assertIn(b"\\Answered", fetch_map(m, ("2", "(FLAGS)"))[2])
        uid = int(re.search(rb"UID (\d+)", res_uid(m, 2)).group(1))
        dat = ok(m.uid("STORE", str(uid), "FLAGS", "(\\Draft)"))
        self.assertIn(b"\\Draft", dat[0])
        self.assertNotIn(b"\\Answered", dat[0])
        ok(m.store("2", "FLAGS", "()"))
        self.assertNotIn(b"\\Draft", fetch_map(m, ("2", "(FLAGS)"))[2])

    def test_search(self):
        m = self.m
        ok(m.select("INBOX"))

        def search(*crit, uid=False):
            typ, dat = (m.uid("SEARCH", *crit) if uid else m.search(None, *crit))
            self.assertEqual(typ, "OK", crit)
            return [int(x) for x in dat[0].split()]

        n = len(search("ALL"))
        self.assertGreaterEqual(n, 3)
        self.assertEqual(search("SUBJECT", '"second message"'), [2])
        self.assertEqual(search("FROM", "zed@other"), [2])
        self.assertEqual(search("BODY", "needle"), [2])
        self.assertEqual(search("TEXT", "NEEDLE"), [2])
        self.assertEqual(search("HEADER", "X-Colour", "green"), [3])
        self.assertEqual(search("TO", "alice"), search("ALL"))
        self.assertEqual(search("SENTON", "1-Jul-2003")[:3], [1, 2, 3])
        self.assertEqual(search("SENTBEFORE", "1-Jul-2003"), [])
        self.assertEqual(search("SENTSINCE", "2-Jul-2003"), [])
        today = time.strftime("%d-%b-%Y", time.gmtime())
        self.assertEqual(search("ON", today), search("ALL"))
        self.assertEqual(search("SINCE", today), search("ALL"))
        self.assertEqual(search("BEFORE", "1-Jan-2000"), [])
        self.assertEqual(search("LARGER", "1"), search("ALL"))
        self.assertEqual(search("SMALLER", "10"), [])
        self.assertEqual(search("1:2"), [1, 2])
        self.assertEqual(search("NOT", "1:2")[:1], [3])
        self.assertEqual(search("OR", "1", "3"), [1, 3])
        self.assertEqual(search("OR", "SUBJECT", "first", "BODY", "needle"),
                         [1, 2])
        ok(m.store("3", "+FLAGS", "(\\Flagged $Blue)"))
        self.assertIn(3, search("FLAGGED"))
        self.assertNotIn(3, search("UNFLAGGED"))
        self.assertIn(3, search("KEYWORD", "$Blue"))
        self.assertNotIn(3, search("UNKEYWORD", "$Blue"))
        self.assertEqual(search("SEEN", "UNSEEN"), [])
        ok(m.store("3", "-FLAGS", "(\\Flagged $Blue)"))
        uids = search("ALL", uid=True)
        self.assertEqual(len(uids), n)
        self.assertEqual(search("UID", "%d" % uids[1], uid=True), [uids[1]])
        self.assertEqual(search("UID", "%d:*" % uids[1]), list(range(2, n + 1)))
        # imaplib raises on BAD.
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.search(None, "FROBNICATE")
        self.assertIn("BAD", str(cm.exception))
        typ, dat = m._simple_command("SEARCH", "CHARSET", "KOI8-R", "ALL")
        self.assertEqual(typ, "NO")
        self.assertIn(b"BADCHARSET", dat[0])

    def test_folders(self):
        m = self.m
        ok(m.create("Projects/Samotop"))
        typ, _ = m.create("Projects/Samotop")
        self.assertEqual(typ, "NO")
        names = [l.decode() for l in ok(m.list())]
        self.assertTrue(any(l.endswith('"Projects/Samotop"') or
                            l.endswith("Projects/Samotop") for l in names),
                        names)
        self.assertTrue(any("INBOX" in l for l in names))
        dat = ok(m.list('""', "Projects/%"))
        self.assertEqual(len(dat), 1)
        self.assertIn(b'"/"', dat[0])
        ok(m.subscribe("Projects/Samotop"))
        lsub = ok(m.lsub())
        self.assertTrue(any(b"Projects/Samotop" in l for l in lsub if l))
        ok(m.unsubscribe("Projects/Samotop"))
        lsub = ok(m.lsub())
        self.assertFalse(any(b"Projects/Samotop" in l for l in lsub if l))
        ok(m.rename("Projects/Samotop", "Projects/Renamed"))
        dat = ok(m.status("Projects/Renamed", "(MESSAGES)"))
        self.assertIn(b"MESSAGES 0", dat[0])
        typ, _ = m.status("Projects/Samotop", "(MESSAGES)")
        self.assertEqual(typ, "NO")
        ok(m.delete("Projects/Renamed"))
        typ, _ = m.delete("Projects/Renamed")
        self.assertEqual(typ, "NO")
        typ, dat = m.delete("INBOX")
        self.assertEqual(typ, "NO")

    def test_append_copy_move_expunge_close(self):
        m = self.m
        ok(m.create("Work"))
        msg = message("appended", "Appended body.\r\n")
        typ, dat = m.append("Work", "(\\Seen $Draft)",
                            imaplib.Time2Internaldate(1057049557), msg)
        self.assertEqual(typ, "OK")
        mm = re.search(rb"APPENDUID (\d+) (\d+)", dat[0])
        self.assertIsNotNone(mm, dat)
        typ, dat = m.append("NoSuchFolder", None, None, msg)
        self.assertEqual(typ, "NO")
        self.assertIn(b"TRYCREATE", dat[0])
        n = int(ok(m.select("Work"))[0])
        self.assertEqual(n, 1)
        r = fetch_map(m, ("1", "(FLAGS INTERNALDATE BODY.PEEK[])"))[1]
        self.assertIn(b"\\Seen", r)
        self.assertIn(b"$Draft", r)
        self.assertIn(b"01-Jul-2003", r)
        self.assertTrue(r.endswith(msg) or msg in r)
        # COPY with COPYUID (RFC 4315), into a folder that must exist.
        ok(m.select("INBOX"))
        typ, dat = m.copy("1:2", "Work")
        self.assertEqual(typ, "OK")
        # imaplib files the response code under its name.
        self.assertRegex(m.untagged_responses["COPYUID"][-1].decode(),
                         r"^\d+ \d+:\d+ \d+:\d+$")
        typ, dat = m.copy("1", "Nowhere")
        self.assertEqual(typ, "NO")
        self.assertIn(b"TRYCREATE", dat[0])
        ok(m.select("Work"))
        self.assertEqual(len(m.search(None, "ALL")[1][0].split()), 3)
        # MOVE (RFC 6851): out of Work into Archive.
        ok(m.create("Archive"))
        typ, dat = m._simple_command("MOVE", "2", "Archive")
        self.assertEqual(typ, "OK")
        self.assertEqual(m.untagged_responses.pop("EXPUNGE"), [b"2"])
        self.assertEqual(len(m.search(None, "ALL")[1][0].split()), 2)
        st_ = ok(m.status("Archive", "(MESSAGES)"))
        self.assertIn(b"MESSAGES 1", st_[0])
        # EXPUNGE of \Deleted ones.
        ok(m.store("1", "+FLAGS", "\\Deleted"))
        dat = ok(m.expunge())
        self.assertEqual(dat, [b"1"])
        self.assertEqual(len(m.search(None, "ALL")[1][0].split()), 1)
        # UID EXPUNGE removes only the UIDs named.
        uid = int(re.search(rb"UID (\d+)", res_uid(m, 1)).group(1))
        ok(m.store("1", "+FLAGS", "\\Deleted"))
        ok(m.uid("EXPUNGE", str(uid + 1000)))
        self.assertEqual(len(m.search(None, "ALL")[1][0].split()), 1)
        ok(m.uid("EXPUNGE", str(uid)))
        self.assertEqual(m.search(None, "ALL")[1][0], b"")
        # CLOSE expunges silently.
        ok(m.select("Archive"))
        ok(m.store("1", "+FLAGS", "\\Deleted"))
        ok(m.close())
        self.assertEqual(m.state, "AUTH")
        self.assertIn(b"MESSAGES 0", ok(m.status("Archive", "(MESSAGES)"))[0])
        ok(m.delete("Work"))
        ok(m.delete("Archive"))

    def test_literal_plus_append(self):
        r = Raw()
        r.login("alice")
        msg = message("literal plus")
        r.send(b"a1 APPEND INBOX (\\Flagged) {%d+}\r\n" % len(msg) + msg +
               b"\r\n")
        _, t = r.until("a1")
        self.assertRegex(t, r"^a1 OK \[APPENDUID \d+ \d+\]")
        # A synchronizing literal waits for "+".
        r.send(b"a2 APPEND INBOX {%d}\r\n" % len(msg))
        self.assertTrue(r.resp().startswith(b"+"))
        r.send(msg + b"\r\n")
        _, t = r.until("a2")
        self.assertRegex(t, r"^a2 OK")
        r.cmd("LOGOUT")
        r.close()

    def test_namespace_id_enable_check_noop(self):
        m = self.m
        typ, dat = m.namespace()
        self.assertEqual(typ, "OK")
        self.assertEqual(dat[0], b'(("" "/")) NIL NIL')
        r = Raw()
        u, t = r.cmd('ID ("name" "test_imap")')
        self.assertRegex(t, r"^r1 OK")
        self.assertIn(b'* ID ("name" "Samotop"', u[0])
        u, t = r.cmd('ID NIL')
        self.assertIn(b'* ID (', u[0])
        r.login("alice")
        u, t = r.cmd("ENABLE CONDSTORE")
        self.assertRegex(t, r"^r4 OK")
        self.assertEqual(u, [b"* ENABLED"])
        r.cmd("SELECT INBOX")
        u, t = r.cmd("ENABLE CONDSTORE")
        self.assertRegex(t, r"^r6 BAD")
        r.cmd("LOGOUT")
        r.close()
        ok(m.select("INBOX"))
        ok(m.check())
        ok(m.noop())

    def test_unselect(self):
        # RFC 3691: back to the authenticated state without the expunge
        # CLOSE does; offered in CAPABILITY.
        m = self.m
        self.assertIn("UNSELECT", m.capabilities)
        ok(m.create("Keep"))
        ok(m.append("Keep", None, None, message("kept", "Kept.\r\n")))
        ok(m.select("Keep"))
        ok(m.store("1", "+FLAGS", "\\Deleted"))
        ok(m.unselect())
        self.assertEqual(m.state, "AUTH")
        self.assertIn(b"MESSAGES 1", ok(m.status("Keep", "(MESSAGES)"))[0])
        # A read-only one too; then nothing is selected any more.
        ok(m.select("Keep", readonly=True))
        ok(m.unselect())
        r = Raw()
        r.login("alice")
        _, t = r.cmd("UNSELECT")
        self.assertRegex(t, r"^r\d+ BAD")
        r.cmd("SELECT Keep")
        _, t = r.cmd("UNSELECT")
        self.assertRegex(t, r"^r\d+ OK")
        _, t = r.cmd("FETCH 1 FLAGS")
        self.assertRegex(t, r"^r\d+ BAD")
        r.cmd("LOGOUT")
        r.close()
        ok(m.select("Keep"))
        self.assertIn(b"\\Deleted", fetch_map(m, ("1", "(FLAGS)"))[1])
        m.unselect()
        ok(m.delete("Keep"))


def res_uid(m, seq):
    return fetch_map(m, (str(seq), "(UID)"))[seq]


class Sync(unittest.TestCase):
    """Two sessions, deliveries, IDLE, UIDs across sessions and a restart."""

    def test_idle_sees_delivery(self):
        deliver("bob", message("before idle", to="bob@example.test"))
        r = Raw()
        r.login("bob")
        u, t = r.cmd("SELECT INBOX")
        self.assertIn("OK", t)
        exists = [int(x.split()[1]) for x in u if x.endswith(b"EXISTS")][0]
        r.send("i1 IDLE\r\n")
        self.assertTrue(r.resp().startswith(b"+"))
        t0 = time.time()
        deliver("bob", message("during idle", to="bob@example.test"))
        got = r.wait_for(rb"^\* %d EXISTS" % (exists + 1), 5)
        took = time.time() - t0
        self.assertIsNotNone(got, "no EXISTS during IDLE")
        self.assertLess(took, 3.0)
        r.send("DONE\r\n")
        _, t = r.until("i1")
        self.assertRegex(t, r"^i1 OK")
        r.cmd("LOGOUT")
        r.close()

    def test_two_sessions_see_flags_and_expunges(self):
        for i in range(3):
            deliver("carol", message("shared %d" % i, to="carol@example.test"))
        time.sleep(0.3)
        a, b = Raw(), Raw()
        a.login("carol")
        b.login("carol")
        ua, _ = a.cmd("SELECT INBOX")
        ub, _ = b.cmd("SELECT INBOX")
        n = [int(x.split()[1]) for x in ua if x.endswith(b"EXISTS")][0]
        self.assertGreaterEqual(n, 3)
        _, t = a.cmd("STORE 1 +FLAGS (\\Flagged)")
        self.assertIn("OK", t)
        u, t = b.cmd("NOOP")
        self.assertTrue(any(re.match(rb"\* 1 FETCH \(.*FLAGS \([^)]*\\Flagged",
                                     x) for x in u), u)
        # b in IDLE sees a's expunge at once.
        b.send("i1 IDLE\r\n")
        self.assertTrue(b.resp().startswith(b"+"))
        a.cmd("STORE 2 +FLAGS (\\Deleted)")
        u, t = a.cmd("EXPUNGE")
        self.assertIn(b"* 2 EXPUNGE", u)
        self.assertIsNotNone(b.wait_for(rb"^\* 2 EXPUNGE", 5))
        b.send("DONE\r\n")
        b.until("i1")
        _, t = b.cmd("FETCH 1:* (UID)")
        self.assertIn("OK", t)
        for s in (a, b):
            s.cmd("LOGOUT")
            s.close()

    def test_no_expunge_during_fetch(self):
        """RFC 3501 7.4.1: another session's expunge is not told during a
        FETCH (the numbers would shift under it), but at the next NOOP."""
        for i in range(3):
            deliver("dave", message("held %d" % i, to="dave@example.test"))
        time.sleep(0.3)
        a, b = Raw(), Raw()
        a.login("dave")
        b.login("dave")
        a.cmd("SELECT INBOX")
        b.cmd("SELECT INBOX")
        _, t = a.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.assertIn("OK", t)
        u, t = a.cmd("EXPUNGE")
        self.assertIn(b"* 1 EXPUNGE", u)
        time.sleep(0.2)
        u, t = b.cmd("FETCH 1:* (UID)")
        self.assertFalse(any(b"EXPUNGE" in x for x in u), u)
        self.assertRegex(t, r"^r\d+ (OK|NO)")
        u, t = b.cmd("NOOP")
        self.assertIn(b"* 1 EXPUNGE", u)
        self.assertIn("OK", t)
        for r in (a, b):
            r.cmd("LOGOUT")
            r.close()

    def test_folder_deleted_and_made_again(self):
        """A session whose folder is deleted under it is told BYE; IDLE on
        the folder made again under the same name still wakes (its
        inotify watch is made afresh)."""
        a = Raw()
        a.login("bob")
        _, t = a.cmd("CREATE Again")
        self.assertIn("OK", t)
        _, t = a.cmd("SELECT Again")
        self.assertIn("OK", t)
        b = login("bob")
        ok(b.delete("Again"))
        ok(b.create("Again"))
        c = Raw()
        c.login("bob")
        _, t = c.cmd("SELECT Again")
        self.assertIn("OK", t)
        c.send("i1 IDLE\r\n")
        self.assertTrue(c.resp().startswith(b"+"))
        ok(b.append("Again", None, None, message("again", to="bob@example.test")))
        self.assertIsNotNone(c.wait_for(rb"^\* 1 EXISTS", 5))
        c.send("DONE\r\n")
        c.until("i1")
        a.send("a9 NOOP\r\n")
        self.assertTrue(a.resp().startswith(b"* BYE"))
        ok(b.delete("Again"))
        b.logout()
        for r in (a, c):
            r.close()

    def test_uids_stable_across_sessions_and_restart(self):
        for i in range(2):
            deliver("dave", message("stable %d" % i, to="dave@example.test"))
        time.sleep(0.3)

        def snapshot():
            m = login("dave")
            ok(m.select("INBOX"))
            validity = m.untagged_responses["UIDVALIDITY"][0]
            res = fetch_map(m, ("1:*", "(UID BODY.PEEK[HEADER.FIELDS "
                                        "(SUBJECT)])"))
            m.logout()
            return validity, {k: v for k, v in res.items()}

        first = snapshot()
        self.assertGreaterEqual(len(first[1]), 2)
        self.assertEqual(snapshot(), first)
        # samotopd stops and starts again over the same data.
        SYS.proc.terminate()
        SYS.proc.wait(timeout=30)
        SYS.start()
        self.assertEqual(snapshot(), first)
        deliver("dave", message("after restart", to="dave@example.test"))
        time.sleep(0.3)
        v, after = snapshot()
        self.assertEqual(v, first[0])
        uids = [int(re.search(rb"UID (\d+)", x).group(1))
                for x in after.values()]
        old = [int(re.search(rb"UID (\d+)", x).group(1))
               for x in first[1].values()]
        self.assertEqual(sorted(uids)[:len(old)], sorted(old))
        self.assertGreater(max(uids), max(old))


class Large(unittest.TestCase):
    def test_fetch_many_paced(self):
        """FETCH 1:* of far more than the pacing window (256 KiB) and the
        pump's rounds (64) hold: every message comes back whole and in
        order, and the session goes on (a pump that stopped watching the
        socket with work left once hung here)."""
        m = login("alice")
        ok(m.create("Bulk"))
        line = "y" * 76 + "\r\n"
        for i in range(24):
            ok(m.append("Bulk", None, None,
                        message("bulk %d" % i, line * (13000 + i))))
        ok(m.select("Bulk"))
        typ, dat = m.fetch("1:*", "(UID BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        lits = [x[1] for x in dat if isinstance(x, tuple)]
        self.assertEqual(len(lits), 24)
        for i, lit in enumerate(lits):
            self.assertIn(b"Subject: bulk %d\r\n" % i, lit)
            self.assertTrue(lit.endswith((line * (13000 + i)).encode()))
        ok(m.noop())
        ok(m.close())
        ok(m.delete("Bulk"))
        m.logout()


def usage(local):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(BASE + 6),
                        "HGET", "samotop:{example.test}:usage", local],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip() or 0)


def wait_usage(local, want, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline and usage(local) != want:
        time.sleep(0.05)
    return usage(local)


class Quota(unittest.TestCase):
    def test_append_copy_expunge_move_the_usage(self):
        SYS.admin("user", "quota", "gina@example.test", "30000")
        m = login("gina")
        small = message("small", "s" * 5000)
        ok(m.append("INBOX", None, None, small))
        self.assertEqual(wait_usage("gina", len(small)), len(small))
        # RFC 9208 4.3: an APPEND past the quota is refused.
        typ, dat = m.append("INBOX", None, None, message("big", "b" * 40000))
        self.assertEqual(typ, "NO")
        self.assertIn(b"OVERQUOTA", dat[0])
        ok(m.create("Copies"))
        ok(m.select("INBOX"))
        ok(m.copy("1", "Copies"))
        self.assertEqual(wait_usage("gina", 2 * len(small)), 2 * len(small))
        ok(m.store("1", "+FLAGS", "\\Deleted"))
        ok(m.expunge())
        self.assertEqual(wait_usage("gina", len(small)), len(small))
        m.logout()


class Autologout(unittest.TestCase):
    def test_idle_session_is_logged_out(self):
        short = st.System(BASE_SHORT, extra_env={
            "SAMOTOP_IMAP_IDLE_TIMEOUT_MS": "1500"}).start()
        try:
            r = Raw(BASE_SHORT + 14)
            got = r.wait_for(rb"^\* BYE", 10)
            self.assertIsNotNone(got)
            r.s.settimeout(5)
            try:
                self.assertEqual(r.s.recv(100), b"")
            except (ConnectionResetError, ssl.SSLError):
                pass
            r.close()
        finally:
            short.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
