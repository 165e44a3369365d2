#!/usr/bin/env python3
"""relay_sink.py CONFIG.json - the next hop in tests/actors/test_relay.c.

A small SMTP server, written for the test and nothing else, so that the
relay meets a server it did not come from: it offers the extensions the
configuration lists (STARTTLS with the given certificate, PIPELINING,
8BITMIME, SIZE, CHUNKING, DSN, SMTPUTF8, ENHANCEDSTATUSCODES), answers each
recipient from a table, and writes down what it received, one line per
event, in RECORD/log:

    conn N IP            a connection (N counts from 1)
    tls N                STARTTLS done on it
    helo N NAME          EHLO or HELO
    mail N <PATH> PARAMS
    rcpt N <PATH> PARAMS -> CODE
    data N FILE          the message as received (dot-stuffing undone)
    pipelined N VERB     VERB came with more commands behind it
    violation N WHAT     the client broke a rule (pipelining without
                         PIPELINING, 8-bit body without BODY=8BITMIME, ...)
    close N

Configuration keys: listen (IP), port, name, ext (list of EHLO lines),
cert and key (PEM, for STARTTLS), rcpt (address -> reply line), greeting,
data_reply, data_delay_ms, record (a folder).
"""
import json
import os
import socket
import socketserver
import ssl
import sys
import threading
import time

cfg = json.load(open(sys.argv[1]))
lock = threading.Lock()
counter = [0]    # connections
messages = [0]   # messages, for the file names
record = cfg["record"]
ext = cfg.get("ext", [])
ext_names = {e.split()[0].upper() for e in ext}
size_max = 0
for e in ext:
    if e.upper().startswith("SIZE "):
        size_max = int(e.split()[1])


def log(line):
    with lock:
        with open(os.path.join(record, "log"), "a") as f:
            f.write(line + "\n")
            f.flush()


class Conn:
    def __init__(self, sock, n):
        self.sock = sock
        self.n = n
        self.buf = b""
        self.tls = False

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError()
        self.buf += data

    def line(self):
        while b"\n" not in self.buf:
            if len(self.buf) > 100000:
                raise EOFError()
            self.fill()
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        with lock:
            counter[0] += 1
            n = counter[0]
        log("conn %d %s" % (n, self.client_address[0]))
        c = Conn(self.request, n)
        try:
            self.session(c)
        except (EOFError, ConnectionError, ssl.SSLError, OSError):
            pass
        log("close %d" % n)

    def session(self, c):
        n = c.n
        c.send(cfg.get("greeting", "220 %s ESMTP relay_sink" % cfg["name"]))
        if not cfg.get("greeting", "220").startswith("220"):
            c.line()
            c.send("221 2.0.0 bye")
            return
        esmtp = False
        mail = None
        rcpts = []
        msgs = 0
        while True:
            raw = c.line()
            behind = len(c.buf) > 0
            cmd = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = cmd.split(" ")[0].upper()
            if behind:
                log("pipelined %d %s" % (n, verb))
                if "PIPELINING" not in ext_names or not esmtp:
                    log("violation %d pipelining %s" % (n, verb))
            if not raw.endswith(b"\r\n"):
                log("violation %d bare-lf" % n)
            if verb == "EHLO":
                esmtp = True
                mail = None
                log("helo %d %s" % (n, cmd[5:]))
                lines = [cfg["name"]] + [e for e in ext
                                         if not (c.tls and e == "STARTTLS")]
                for i, l in enumerate(lines):
                    sep = " " if i == len(lines) - 1 else "-"
                    c.send("250" + sep + l)
            elif verb == "HELO":
                log("helo %d %s" % (n, cmd[5:]))
                c.send("250 " + cfg["name"])
            elif verb == "STARTTLS" and "STARTTLS" in ext_names and not c.tls:
                if behind:
                    log("violation %d data-after-starttls" % n)
                c.send("220 2.0.0 Ready to start TLS")
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(cfg["cert"], cfg["key"])
                c.sock = ctx.wrap_socket(c.sock, server_side=True)
                c.buf = b""
                c.tls = True
                esmtp = False
                log("tls %d %s" % (n, c.sock.version()))
            elif verb == "MAIL":
                params = cmd[cmd.index(">") + 1:].strip() if ">" in cmd else ""
                path = cmd[10:cmd.index(">") + 1] if ">" in cmd else cmd[10:]
                log("mail %d %s %s" % (n, path, params))
                up = params.upper()
                if "BODY=8BITMIME" in up and "8BITMIME" not in ext_names:
                    log("violation %d body-8bitmime-not-offered" % n)
                if "SMTPUTF8" in up.split() and "SMTPUTF8" not in ext_names:
                    log("violation %d smtputf8-not-offered" % n)
                size = [p for p in up.split() if p.startswith("SIZE=")]
                if size and size_max and int(size[0][5:]) > size_max:
                    c.send("552 5.3.4 message too big")
                    continue
                mail = (path, up)
                rcpts = []
                c.send("250 2.1.0 Ok")
            elif verb == "RCPT":
                if mail is None:
                    c.send("503 5.5.1 need MAIL")
                    continue
                end = cmd.index(">") + 1 if ">" in cmd else len(cmd)
                path = cmd[8:end]
                params = cmd[end:].strip()
                reply = cfg.get("rcpt", {}).get(path.strip("<>").lower(),
                                                "250 2.1.5 Ok")
                log("rcpt %d %s %s -> %s" % (n, path, params, reply[:3]))
                if reply.startswith("2"):
                    rcpts.append(path)
                c.send(reply)
            elif verb == "DATA":
                if mail is None or not rcpts:
                    c.send("554 5.5.1 no valid recipients")
                    continue
                c.send("354 go ahead")
                body = b""
                while True:
                    line = c.line()
                    if line == b".\r\n":
                        break
                    if line.startswith(b"."):
                        line = line[1:]
                    body += line
                self.message(c, mail, body)
                msgs += 1
                mail = None
            elif verb == "BDAT" and "CHUNKING" in ext_names:
                parts = cmd.split()
                body = c.exactly(int(parts[1]))
                if mail is None or not rcpts:
                    c.send("554 5.5.1 no valid recipients")
                    continue
                self.message(c, mail, body)
                mail = None
            elif verb == "RSET":
                mail = None
                c.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                c.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                c.send("221 2.0.0 Bye")
                return
            else:
                c.send("502 5.5.1 not implemented")

    def message(self, c, mail, body):
        n = c.n
        if any(b > 127 for b in body) and "BODY=8BITMIME" not in mail[1]:
            log("violation %d 8bit-without-body-8bitmime" % n)
        with lock:
            messages[0] += 1
            k = messages[0]
        path = os.path.join(record, "msg-%d-%d" % (n, k))
        with open(path, "wb") as f:
            f.write(body)
        delay = cfg.get("data_delay_ms", 0)
        if delay:
            time.sleep(delay / 1000.0)
        log("data %d %s" % (n, path))
        c.send(cfg.get("data_reply", "250 2.0.0 Ok: queued"))


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


srv = Server((cfg.get("listen", "127.0.0.1"), cfg["port"]), Handler)
open(os.path.join(record, "ready"), "w").close()
srv.serve_forever()
