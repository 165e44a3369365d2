"""Terminal IMAP clients against the real samotopd: curl (libcurl's IMAP)
fetches, searches and appends; mutt opens the INBOX over STARTTLS, pipes a
message out and flags one, and the flag is seen by another session.

mutt is interactive: it runs under script(1) for a terminal, with keys
pushed by -e, a muttrc of its own and HOME in a temporary folder, so it
asks nothing (no folder to create, the server's self-signed certificate
trusted through certificate_file).
"""
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

BASE = 21400
SYS = None
USER, PASS = "kim@example.test", "secret-kim"


def setUpModule():
    global SYS
    for tool in ("curl", "mutt", "script"):
        assert shutil.which(tool), \
            "%s missing: deploy/deps --test installs it" % tool
    SYS = st.System(BASE, extra_env={
        "SAMOTOP_HOSTNAME": "mail.example.test"}).start()
    SYS.admin("domain", "add", "example.test")
    SYS.admin("user", "add", USER, input=PASS + "\n")
    for i in (1, 2):
        with smtplib.SMTP("127.0.0.1", BASE + 10, timeout=30) as s:
            s.sendmail("friend@remote.test", [USER],
                       ("From: friend@remote.test\r\nTo: %s\r\n"
                        "Subject: note %d\r\nMessage-ID: <note%d@remote.test>"
                        "\r\n\r\nbody of note %d\r\n" % (USER, i, i, i))
                       .encode())


def tearDownModule():
    SYS.stop()


def imap():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    m = imaplib.IMAP4("127.0.0.1", BASE + 13, timeout=30)
    m.starttls(ssl_context=ctx)
    m.login(USER, PASS)
    return m


def curl(*args, data=None):
    r = subprocess.run(["curl", "-s", "-S", "--ssl-reqd", "-k",
                        "--max-time", "30", "-u", "%s:%s" % (USER, PASS)]
                       + list(args), capture_output=True, input=data,
                       timeout=60)
    if r.returncode != 0:
        raise AssertionError("curl %s: rc=%d %s" % (
            " ".join(args), r.returncode, r.stderr.decode(errors="replace")))
    return r.stdout


URL = "imap://127.0.0.1:%d/INBOX" % (BASE + 13)


class Curl(unittest.TestCase):
    def test_fetch_search_append(self):
        body = curl(URL + ";UID=1")
        self.assertIn(b"Subject: note 1\r\n", body)
        self.assertIn(b"Return-Path: <friend@remote.test>", body)
        self.assertTrue(body.endswith(b"body of note 1\r\n"))
        found = curl(URL, "-X", "SEARCH SUBJECT \"note 2\"")
        self.assertIn(b"* SEARCH 2", found)
        # curl -T appends the file (APPEND with a literal).
        msg = (b"From: %s\r\nTo: %s\r\nSubject: from curl\r\n\r\n"
               b"appended\r\n" % (USER.encode(), USER.encode()))
        with tempfile.NamedTemporaryFile() as f:
            f.write(msg)
            f.flush()
            curl("-T", f.name, URL)
        m = imap()
        try:
            m.select("INBOX")
            typ, nums = m.search(None, "SUBJECT", '"from curl"')
            self.assertEqual(typ, "OK")
            self.assertEqual(len(nums[0].split()), 1)
            typ, data = m.fetch(nums[0].split()[0], "(BODY.PEEK[])")
            self.assertEqual(data[0][1], msg)
        finally:
            m.logout()


class Mutt(unittest.TestCase):
    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="samotop-mutt-")
        os.mkdir(os.path.join(self.home, "Mail"))
        cert = os.path.join(SYS.data, "tls", "cert.pem")
        self.assertTrue(os.path.exists(cert), "no certificate at " + cert)
        self.rc = os.path.join(self.home, "muttrc")
        with open(self.rc, "w") as f:
            f.write('set folder="%s/Mail"\n' % self.home)
            f.write('set spoolfile="+inbox"\n')
            f.write('set imap_user="%s"\n' % USER)
            f.write('set imap_pass="%s"\n' % PASS)
            f.write("set ssl_starttls=yes\nset ssl_force_tls=yes\n")
            f.write('set certificate_file="%s"\n' % cert)
            f.write("set ssl_verify_host=no\n")
            f.write('set header_cache=""\nset message_cachedir=""\n')
            f.write("set wait_key=no\nset sort=mailbox-order\n")
            f.write("set mark_old=no\nset move=no\n")

    def tearDown(self):
        shutil.rmtree(self.home, ignore_errors=True)

    def mutt(self, keys):
        cmd = "mutt -n -F %s -f imap://127.0.0.1:%d/INBOX -e 'push \"%s\"'" % (
            self.rc, BASE + 13, keys)
        env = dict(os.environ, HOME=self.home, TERM="xterm")
        r = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=env,
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:])

    def test_read_and_flag(self):
        out = os.path.join(self.home, "piped.txt")
        # The index opens on the first message (in mailbox order, by UID);
        # pipe it out whole, then quit.
        self.mutt("<first-entry><pipe-message>cat > %s<enter><quit>" % out)
        with open(out, "rb") as f:
            piped = f.read()
        self.assertIn(b"Subject: note 1", piped)
        self.assertIn(b"body of note 1", piped)
        # Flag the second message and save the change on the server.
        self.mutt("<first-entry><next-entry><flag-message><sync-mailbox>"
                  "<quit>")
        m = imap()
        try:
            m.select("INBOX", readonly=True)
            typ, nums = m.search(None, "FLAGGED")
            self.assertEqual(typ, "OK")
            typ, data = m.fetch(nums[0], "(BODY.PEEK[HEADER.FIELDS "
                                         "(SUBJECT)])")
            self.assertEqual(len(nums[0].split()), 1)
            self.assertIn(b"note 2", data[0][1])
        finally:
            m.logout()


if __name__ == "__main__":
    unittest.main(verbosity=2)
