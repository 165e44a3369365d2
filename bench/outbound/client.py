#!/usr/bin/env python3
"""bench/outbound/client.py - the submission client of bench/outbound/run.

S sessions at once (threads), each: connect, EHLO, STARTTLS, EHLO, AUTH
PLAIN once, then its share of the N messages (MAIL, RCPT, DATA, one after
the other: smtplib has no PIPELINING), then QUIT. Every message has a
unique Message-ID <RUN.SESSION.SEQ@bench.example.test>, so that what
arrives at the sink can be checked against what was sent.

usage: client.py HOST:PORT --user U --password P --from A --to B
                 [-s SESSIONS] [-m MESSAGES] [-l BYTES] [--run ID] [-T SECS]

Prints one JSON line: t_first_connect (time.time() just before the first
connect), t_auth_first and t_auth_last (the first and the last 235 to
AUTH), t_done (after the last QUIT), sent, failed, errors (first few),
cpu_s (this process's user+system CPU), tls (version and cipher of one
session). Exit status 0 only if every message got a 250.
"""
import argparse
import json
import resource
import smtplib
import ssl
import sys
import threading
import time


def body_lines(nbytes):
    # Printable text lines like smtp-source -l: 78 characters + CRLF.
    line = ("abcdefghijklmnopqrstuvwxyz0123456789" * 3)[:78]
    n = max(1, nbytes // 80)
    return "\r\n".join([line] * n) + "\r\n"


def message(frm, to, run, sess, seq, body):
    mid = "%s.%d.%d@bench.example.test" % (run, sess, seq)
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: bench %s %d %d\r\n"
            "Message-ID: <%s>\r\nDate: %s\r\n\r\n%s" % (
                frm, to, run, sess, seq, mid,
                time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                body)).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--from", dest="frm", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("-s", type=int, default=20, help="sessions")
    ap.add_argument("-m", type=int, default=1000, help="messages in all")
    ap.add_argument("-l", type=int, default=4096, help="body bytes")
    ap.add_argument("--run", default="r")
    ap.add_argument("-T", type=float, default=120.0,
                    help="give up sending after this many seconds")
    a = ap.parse_args()
    host, port = a.server.rsplit(":", 1)
    port = int(port)

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    body = body_lines(a.l)
    share = [a.m // a.s + (1 if i < a.m % a.s else 0) for i in range(a.s)]
    lock = threading.Lock()
    res = {"sent": 0, "failed": 0, "errors": [], "tls": None}
    deadline = [0.0]
    auth_done = []
    start = threading.Barrier(a.s + 1)

    def err(text):
        with lock:
            if len(res["errors"]) < 10:
                res["errors"].append(text)

    def session(i):
        start.wait()
        sent = 0
        try:
            c = smtplib.SMTP(host, port, local_hostname="client.example.test",
                             timeout=60)
            c.ehlo()
            c.starttls(context=ctx)
            c.ehlo()
            c.user, c.password = a.user, a.password
            code, text = c.auth("PLAIN", c.auth_plain, initial_response_ok=True)
            if code != 235:
                raise smtplib.SMTPException("AUTH: %d %r" % (code, text))
            with lock:
                auth_done.append(time.time())
                if res["tls"] is None:
                    res["tls"] = "%s %s" % (c.sock.version(), c.sock.cipher()[0])
            for seq in range(share[i]):
                if time.time() > deadline[0]:
                    err("session %d: out of time after %d" % (i, sent))
                    break
                refused = c.sendmail(a.frm, [a.to],
                                     message(a.frm, a.to, a.run, i, seq, body))
                if refused:
                    err("session %d: refused %r" % (i, refused))
                    break
                sent += 1
            c.quit()
        except (smtplib.SMTPException, OSError) as e:
            err("session %d after %d: %r" % (i, sent, e))
        with lock:
            res["sent"] += sent
            res["failed"] += share[i] - sent

    threads = [threading.Thread(target=session, args=(i,)) for i in range(a.s)]
    for t in threads:
        t.start()
    t0 = time.time()
    deadline[0] = t0 + a.T
    start.wait()
    for t in threads:
        t.join()
    t1 = time.time()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res.update(t_first_connect=t0, t_done=t1,
               t_auth_first=min(auth_done, default=t1),
               t_auth_last=max(auth_done, default=t1),
               cpu_s=round(ru.ru_utime + ru.ru_stime, 3))
    print(json.dumps(res))
    sys.exit(0 if res["sent"] == a.m else 1)


if __name__ == "__main__":
    main()
