"""Health checks and Prometheus metrics end to end: a whole samotopd with
metrics.listen set serves /metrics and /health from every actor copy on
ports of its own (base + 10 * slot + copy - 1). Mail goes in over SMTP
(three accepted, one recipient refused 550, one message over SIZE refused
552 by the engine itself, two submissions relayed to a sink, one of them
deferred), and each actor's counters must say exactly that. The scrapes are read with python3-prometheus-client's own parser, so
the exposition format is checked by a reader that is not ours.

Ports 20405 and 20410-20499 (tests/README.md).
"""
import os
import smtplib
import socket
import ssl
import sys
import time
import unittest
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402

BASE = 20410
METRICS = 20430
SINK_PORT = 20405
MTA = ("127.0.0.1", BASE + 10)
MSA = ("127.0.0.1", BASE + 11)
# Where samotopd puts each copy: METRICS + 10 * slot + copy - 1.
PORT = {"bus": METRICS, "listener": METRICS + 10, "auth": METRICS + 20,
        "guard": METRICS + 30, "guard/2": METRICS + 31,
        "mailbox": METRICS + 40, "queue": METRICS + 50,
        "relay": METRICS + 60}
SYS = None
SINK = None


def get(port, path):
    """(status, body) of a GET on loopback."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(port):
    """Every sample of a scrape: {(name, sorted label items): value}."""
    status, text = get(port, "/metrics")
    assert status == 200, "scrape %d: status %d" % (port, status)
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels):
    """The sum of the samples of name whose labels include labels."""
    total = 0.0
    for (n, lab), v in samples.items():
        if n == name and all(dict(lab).get(k) == w for k, w in labels.items()):
            total += v
    return total


def eventually(fn, want, timeout=30):
    """fn() once it equals want (counters settle as mail moves on)."""
    deadline = time.time() + timeout
    got = fn()
    while got != want and time.time() < deadline:
        time.sleep(0.2)
        got = fn()
    return got


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def message(subject, frm, to):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nBody.\r\n"
            % (frm, to, subject)).encode()


def setUpModule():
    try:
        send_mail()
    except BaseException:
        # tearDownModule does not run after a failed setUpModule.
        sys.stderr.write(SYS.logtext() if SYS else "")
        tearDownModule()
        raise


def send_mail():
    global SYS, SINK
    SYS = st.System(BASE, extra_env={
        "SAMOTOP_METRICS_LISTEN": "127.0.0.1:%d" % METRICS,
        "SAMOTOP_METRICS_SAMPLE_MS": "200",
        "SAMOTOP_SUPERVISOR_GUARD": "2",
        "SAMOTOP_SMTP_MAX_MESSAGE": "4096",
        "SAMOTOP_HOSTNAME": "mx.example.test",
        "SAMOTOP_GUARD_USER_MSG_PER_MINUTE": "0",
        "SAMOTOP_GUARD_USER_RCPT_PER_MINUTE": "0",
    }).start()
    SYS.admin("domain", "add", "example.test")
    SYS.admin("user", "add", "alice@example.test", input="alice-pw\n")
    SYS.admin("user", "add", "bob@example.test", input="bob-pw\n")
    SYS.admin("route", "add", "remote.test", "127.0.0.1:%d" % SINK_PORT)
    SINK = st.Sink(SINK_PORT, rcpt_codes={
        "later@remote.test": "451 4.3.0 try again later"})

    # Inbound: three messages accepted, one recipient refused.
    c = smtplib.SMTP(*MTA, local_hostname="client.remote.test", timeout=30)
    for to in ("alice@example.test", "bob@example.test",
               "alice@example.test"):
        c.sendmail("someone@remote.test", [to],
                   message("in", "someone@remote.test", to))
    try:
        c.sendmail("someone@remote.test", ["nobody@example.test"],
                   message("in", "someone@remote.test", "nobody"))
        raise AssertionError("nobody@example.test was accepted")
    except smtplib.SMTPRecipientsRefused as e:
        assert e.recipients["nobody@example.test"][0] == 550, e.recipients
    # Over smtp.max_message, without SIZE= at MAIL: refused at its end.
    c.mail("someone@remote.test")
    c.rcpt("bob@example.test")
    code, text = c.data(message("big", "someone@remote.test",
                                "bob@example.test") + b"x" * 8000 + b"\r\n")
    assert code == 552, (code, text)
    c.quit()

    # Outbound: one delivered by the sink, one deferred (451 at RCPT).
    c = smtplib.SMTP(*MSA, local_hostname="laptop.example.test", timeout=30)
    c.starttls(context=ctx())
    c.ehlo()
    c.login("alice@example.test", "alice-pw")
    for to in ("friend@remote.test", "later@remote.test"):
        c.sendmail("alice@example.test", [to],
                   message("out", "alice@example.test", to))
    c.quit()
    assert len(SINK.wait(1)) == 1, "the sink got nothing"


def tearDownModule():
    if SINK:
        SINK.stop()
    if SYS:
        SYS.stop()


class Health(unittest.TestCase):
    def test_every_copy_is_healthy_on_its_own_port(self):
        for who, port in sorted(PORT.items()):
            with self.subTest(actor=who):
                status, body = get(port, "/health")
                self.assertEqual(status, 200, body)
                self.assertEqual(body, "ok\n")
                self.assertEqual(get(port, "/live")[0], 200)
                self.assertEqual(get(port, "/ready")[0], 200)

    def test_copies_say_who_they_are(self):
        for who, service, instance in (("guard", "guard", "1"),
                                       ("guard/2", "guard", "2"),
                                       ("listener", "listener", "1"),
                                       ("bus", "bus", "1")):
            with self.subTest(actor=who):
                s = scrape(PORT[who])
                self.assertEqual(value(s, "samotop_actor_info",
                                       service=service, instance=instance), 1)
                self.assertGreater(value(s, "process_start_time_seconds"),
                                   1.7e9)

    def test_malformed_request_gets_400_and_harms_nothing(self):
        port = PORT["listener"]
        before = scrape(port)
        for raw in (b"GET /metrics HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
                    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port),
                                          timeout=10) as s:
                s.sendall(raw)
                reply = s.recv(4096)
            self.assertRegex(reply, rb"^HTTP/1\.1 4(00|14) ", reply[:80])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"DELETE /metrics HTTP/1.0\r\n\r\n")
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 405 "))
        self.assertEqual(get(port, "/nothing-here")[0], 404)
        self.assertEqual(get(port, "/health")[0], 200)
        after = scrape(port)
        # The same process: it did not crash and get restarted.
        self.assertEqual(value(after, "process_start_time_seconds"),
                         value(before, "process_start_time_seconds"))
        self.assertGreaterEqual(
            value(after, "samotop_http_requests_total", path="other",
                  status="405"), 1)


class Counters(unittest.TestCase):
    def test_listener(self):
        s = scrape(PORT["listener"])
        self.assertEqual(value(s, "samotop_smtp_messages_total", role="mta",
                               code="250"), 3)
        self.assertEqual(value(s, "samotop_smtp_messages_total", role="msa",
                               code="250"), 2)
        self.assertEqual(value(s, "samotop_smtp_rejected_total", role="mta",
                               command="rcpt", code="550"), 1)
        # The engine's own refusal, counted when its session ended.
        self.assertEqual(eventually(lambda: value(
            scrape(PORT["listener"]), "samotop_smtp_messages_total",
            role="mta", code="552"), 1), 1)
        s = scrape(PORT["listener"])
        self.assertEqual(value(s, "samotop_smtp_rejected_total", role="mta",
                               command="data", code="552"), 1)
        self.assertEqual(value(s, "samotop_smtp_rejected_total"), 2)
        self.assertEqual(value(s, "samotop_smtp_sessions_total", role="mta"),
                         1)
        self.assertEqual(value(s, "samotop_smtp_sessions_total", role="msa"),
                         1)
        self.assertEqual(eventually(lambda: value(
            scrape(PORT["listener"]), "samotop_smtp_sessions_open"), 0), 0)
        self.assertGreater(value(s, "samotop_smtp_received_bytes_total",
                                 role="mta"), 300)
        # Its bus calls: guard and mailbox, all answered.
        self.assertGreaterEqual(value(s, "samotop_bus_client_requests_total",
                                      service="guard", result="ok"), 8)
        self.assertEqual(value(s, "samotop_bus_client_requests_total",
                               service="mailbox", result="ok"), 3)
        self.assertEqual(value(s, "samotop_bus_client_requests_total",
                               result="timeout"), 0)
        self.assertEqual(value(
            s, "samotop_bus_client_request_duration_seconds_count",
            service="mailbox"), 3)

    def test_guard_copies_together(self):
        both = [scrape(PORT["guard"]), scrape(PORT["guard/2"])]

        def total(**labels):
            return sum(value(s, "samotop_guard_decisions_total", **labels)
                       for s in both)
        self.assertEqual(total(check="rcpt", code="550"), 1)
        self.assertEqual(total(check="rcpt", code="250"), 6)
        self.assertEqual(total(check="mail", code="250"), 7)
        self.assertEqual(total(check="connect", code="250"), 2)
        # The skeleton counts the same answers by type.
        self.assertEqual(sum(value(s, "samotop_bus_requests_total",
                                   type="guard.rcpt", code="550")
                             for s in both), 1)

    def test_broker(self):
        s = scrape(PORT["bus"])
        self.assertEqual(value(s, "samotop_broker_workers", service="guard"),
                         2)
        self.assertEqual(value(s, "samotop_broker_workers",
                               service="listener"), 1)
        # Every request the listener's client saw answered went through.
        listener = scrape(PORT["listener"])
        self.assertGreaterEqual(
            value(s, "samotop_broker_routed_total", service="guard"),
            value(listener, "samotop_bus_client_requests_total",
                  service="guard"))
        # What the broker handed the mailbox, the mailbox answered (three
        # deliveries, and the pings of wait_ready).
        self.assertEqual(value(s, "samotop_broker_routed_total",
                               service="mailbox"),
                         value(scrape(PORT["mailbox"]),
                               "samotop_bus_requests_total"))
        # Only wait_ready's pings before every worker registered.
        self.assertEqual(value(s, "samotop_broker_refused_total",
                               reason="queue_full"), 0)

    def test_mailbox(self):
        s = scrape(PORT["mailbox"])
        self.assertEqual(value(s, "samotop_mailbox_deliveries_total",
                               result="stored", code="250"), 3)
        self.assertEqual(value(s, "samotop_mailbox_deliveries_total"), 3)
        commits = value(s, "samotop_mailbox_group_commits_total")
        self.assertGreaterEqual(commits, 1)
        self.assertLessEqual(commits, 3)
        self.assertEqual(value(s, "samotop_mailbox_group_commit_messages_sum"),
                         3)
        self.assertEqual(value(s, "samotop_bus_requests_total",
                               type="mailbox.deliver", code="250"), 3)

    def test_auth(self):
        s = scrape(PORT["auth"])
        self.assertEqual(value(s, "samotop_auth_verifications_total",
                               result="ok"), 1)
        self.assertEqual(value(s, "samotop_auth_verifications_total"), 1)

    def test_queue_and_relay(self):
        def relay():
            return scrape(PORT["relay"])
        self.assertEqual(eventually(lambda: value(
            relay(), "samotop_relay_results_total", **{"class": "2xx"}), 1), 1)
        self.assertGreaterEqual(eventually(lambda: value(
            relay(), "samotop_relay_results_total", **{"class": "4xx"}), 1), 1)
        r = relay()
        self.assertGreaterEqual(value(r, "samotop_relay_attempts_total"), 2)
        self.assertEqual(value(r, "samotop_relay_connections_total",
                               how="opened")
                         + value(r, "samotop_relay_connections_total",
                                 how="reused"),
                         value(r, "samotop_relay_attempts_total"))

        def queue():
            return scrape(PORT["queue"])
        self.assertEqual(value(queue(), "samotop_queue_submitted_total"), 2)
        self.assertEqual(eventually(lambda: value(
            queue(), "samotop_queue_delivery_results_total", kind="relay",
            result="delivered"), 1), 1)
        self.assertGreaterEqual(eventually(lambda: value(
            queue(), "samotop_queue_delivery_results_total", kind="relay",
            result="deferred"), 1), 1)
        # The deferred one waits in Redis: the sampled depth shows it.
        self.assertEqual(eventually(lambda: value(
            queue(), "samotop_queue_messages"), 1), 1)
        q = queue()
        self.assertEqual(value(q, "samotop_queue_recipients"), 1)
        self.assertGreater(value(q, "samotop_queue_oldest_age_seconds"), 0)
        self.assertLess(value(q, "samotop_queue_oldest_age_seconds"), 600)
        self.assertGreaterEqual(value(q, "samotop_queue_delivery_attempts_"
                                      "total", kind="relay"), 2)


if __name__ == "__main__":
    unittest.main()
