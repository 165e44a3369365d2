"""Interop: the relay delivers to a real Postfix on loopback.

A private Postfix instance (its own config, queue and port; no system
service) accepts mail for remote.test into Maildirs by virtual(8); Samotop
routes remote.test to it. A message submitted on our MSA must arrive in
Postfix's Maildir with its body intact, and Postfix's 550 for an unknown
user must come back to the sender as our bounce.
"""
import glob
import os
import smtplib
import ssl
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import postfix_peer  # noqa: E402
import samotop_test as st  # noqa: E402

BASE = 19600
PFX_PORT = BASE + 40

# What this test's Postfix adds to postfix_peer's main.cf: mail for
# remote.test goes into Maildirs by virtual(8).
MAIN_CF = """myhostname = mx.remote.test
mydomain = remote.test
mydestination =
virtual_mailbox_domains = remote.test
virtual_mailbox_base = {base}/mail
virtual_mailbox_maps = texthash:{base}/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
"""


def Postfix(port):
    return postfix_peer.Postfix(port, MAIN_CF, {
        "vmailbox": "bob@remote.test remote.test/bob/\n"})


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


class RelayToPostfix(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pfx = Postfix(PFX_PORT)
        cls.sys = st.System(BASE, extra_env={
            "SAMOTOP_HOSTNAME": "mx.example.test",
            "SAMOTOP_QUEUE_RETRY_MIN_S": "1",
            "SAMOTOP_QUEUE_RETRY_MAX_S": "2",
        }).start()
        cls.sys.admin("domain", "add", "example.test")
        cls.sys.admin("user", "add", "alice@example.test", input="alice-pw\n")
        cls.sys.admin("route", "add", "remote.test", "127.0.0.1:%d" % PFX_PORT)

    @classmethod
    def tearDownClass(cls):
        cls.sys.stop()
        cls.pfx.stop()

    def submit(self, rcpt, msg):
        with smtplib.SMTP("127.0.0.1", BASE + 11,
                          local_hostname="laptop.example.test") as c:
            c.starttls(context=ctx())
            c.ehlo()
            c.login("alice@example.test", "alice-pw")
            c.sendmail("alice@example.test", [rcpt], msg)

    def test_delivered_into_postfix_maildir(self):
        body = ("From: alice@example.test\r\nTo: bob@remote.test\r\n"
                "Subject: interop\r\n\r\nHello Postfix.\r\n.leading dot\r\n"
                + "\u00e9t\u00e9\r\n").encode("utf-8")
        self.submit("bob@remote.test", body)
        deadline = time.time() + 30
        while time.time() < deadline and not self.pfx.maildir("bob"):
            time.sleep(0.2)
        files = self.pfx.maildir("bob")
        self.assertEqual(len(files), 1, self.pfx.log()[-2000:])
        with open(files[0], "rb") as f:
            stored = f.read().replace(b"\n", b"\r\n")
        # Postfix stores LF line ends; the body we sent follows its headers.
        self.assertIn(b"Received: from laptop.example.test", stored)
        self.assertTrue(stored.endswith(body.split(b"\r\n\r\n", 1)[1]),
                        stored[-200:])
        self.assertIn(b"Subject: interop", stored)

    def test_postfix_refusal_bounces_to_sender(self):
        inbox = os.path.join(self.sys.data, "mail", "example.test", "alice",
                             "new")
        before = set(glob.glob(os.path.join(inbox, "*")))
        self.submit("nobody@remote.test",
                    b"Subject: to nobody\r\n\r\nwill bounce\r\n")
        deadline = time.time() + 30
        new = set()
        while time.time() < deadline and not new:
            new = set(glob.glob(os.path.join(inbox, "*"))) - before
            time.sleep(0.2)
        self.assertEqual(len(new), 1)
        with open(new.pop(), "rb") as f:
            bounce = f.read()
        self.assertIn(b"report-type=delivery-status", bounce)
        self.assertIn(b"Final-Recipient: rfc822; nobody@remote.test", bounce)
        self.assertIn(b"Status: 5.1.1", bounce)
        self.assertIn(b"Remote-MTA: dns; 127.0.0.1", bounce)


if __name__ == "__main__":
    unittest.main(verbosity=2)
