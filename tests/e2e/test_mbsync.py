"""A second real IMAP client: mbsync (Debian's isync) syncs an account of
the real samotopd to a local Maildir over IMAPS and back: messages come
down, a flag set locally reaches the server, one set on the server comes
down, a message written locally goes up, and a local deletion expunges it
on the server.
"""
import glob
import imaplib
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402

BASE = 20500
SYS = None
USER, PASS = "erin@example.test", "secret-erin"


def setUpModule():
    global SYS
    assert shutil.which("mbsync"), "mbsync missing: deploy/deps --test installs isync"
    SYS = st.System(BASE, extra_env={
        "SAMOTOP_HOSTNAME": "mail.example.test"}).start()
    SYS.admin("domain", "add", "example.test")
    SYS.admin("user", "add", USER, input=PASS + "\n")


def tearDownModule():
    SYS.stop()


def message(subject):
    return ("From: sender@remote.test\r\nTo: %s\r\nSubject: %s\r\n"
            "Message-ID: <%s@remote.test>\r\n\r\nBody of %s.\r\n"
            % (USER, subject, subject.replace(" ", "."), subject)).encode()


def deliver(msg):
    with smtplib.SMTP("127.0.0.1", BASE + 10) as c:
        c.sendmail("sender@remote.test", [USER], msg)


def imap():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    m = imaplib.IMAP4_SSL("127.0.0.1", BASE + 14, ssl_context=ctx)
    m.login(USER, PASS)
    return m


def server_flags():
    """{subject: flags bytes} of the server's INBOX."""
    m = imap()
    m.select("INBOX")
    typ, dat = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    m.logout()
    out = {}
    if typ != "OK":
        return out
    for x in dat:
        if isinstance(x, tuple):
            subj = x[1].decode().strip().split(": ", 1)[-1]
            out[subj] = x[0]
    return out


class Mbsync(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="samotop-mbsync-")
        self.local = os.path.join(self.dir, "mail")
        os.makedirs(self.local)
        self.conf = os.path.join(self.dir, "mbsyncrc")
        with open(self.conf, "w") as f:
            f.write("""IMAPAccount samotop
Host 127.0.0.1
Port %d
User %s
Pass %s
SSLType IMAPS
CertificateFile %s
AuthMechs LOGIN PLAIN

IMAPStore remote
Account samotop

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX
Create Both
Expunge Both
SyncState *
""" % (BASE + 14, USER, PASS, os.path.join(SYS.data, "tls", "cert.pem"),
                self.local, self.local))

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def sync(self):
        r = subprocess.run(["mbsync", "-c", self.conf, "-a"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r

    def local_files(self):
        inbox = os.path.join(self.local, "INBOX")
        return sorted(glob.glob(os.path.join(inbox, "cur", "*")) +
                      glob.glob(os.path.join(inbox, "new", "*")))

    def local_by_subject(self):
        out = {}
        for p in self.local_files():
            with open(p, "rb") as f:
                for line in f.read().split(b"\n"):
                    if line.startswith(b"Subject: "):
                        out[line[9:].strip().decode()] = p
                        break
        return out

    def test_sync_both_ways(self):
        deliver(message("mbsync one"))
        deliver(message("mbsync two"))
        deadline = time.time() + 10
        while len(server_flags()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        self.sync()
        local = self.local_by_subject()
        self.assertIn("mbsync one", local)
        self.assertIn("mbsync two", local)
        with open(local["mbsync one"], "rb") as f:
            self.assertIn(b"Body of mbsync one.", f.read())

        # A flag set locally (Maildir file name: ":2,FS") reaches the server.
        p = local["mbsync one"]
        base = os.path.basename(p).split(":2,")[0]
        cur = os.path.join(self.local, "INBOX", "cur")
        os.rename(p, os.path.join(cur, base + ":2,FS"))
        self.sync()
        flags = server_flags()
        self.assertIn(b"\\Flagged", flags["mbsync one"])
        self.assertIn(b"\\Seen", flags["mbsync one"])
        self.assertNotIn(b"\\Flagged", flags["mbsync two"])

        # A flag set on the server comes down.
        m = imap()
        m.select("INBOX")
        typ, dat = m.search(None, "SUBJECT", '"mbsync two"')
        m.store(dat[0].split()[0].decode(), "+FLAGS", "\\Answered")
        m.logout()
        self.sync()
        p2 = self.local_by_subject()["mbsync two"]
        self.assertIn("R", os.path.basename(p2).split(":2,")[1])

        # A message written locally goes up.
        new = os.path.join(self.local, "INBOX", "new",
                           "%d.local.test" % int(time.time()))
        with open(new, "wb") as f:
            f.write(message("mbsync local").replace(b"\r\n", b"\n"))
        self.sync()
        self.assertIn("mbsync local", server_flags())

        # Deleted locally (T) and expunged: gone from the server too.
        p = self.local_by_subject()["mbsync two"]
        base, fl = os.path.basename(p).split(":2,")
        os.rename(p, os.path.join(cur, base + ":2," +
                                  "".join(sorted(fl + "T"))))
        self.sync()
        self.assertNotIn("mbsync two", server_flags())
        self.assertIn("mbsync one", server_flags())


if __name__ == "__main__":
    unittest.main(verbosity=2)
