#!/usr/bin/env python3
"""bench/imap/mkmail.py - writes N realistic messages straight into a Maildir
folder (no SMTP: 100,000 deliveries would take too long), deterministically
(seeded), as files named the way samotop-mailbox names its deliveries
("TIME.MusecPpidQn.HOST,S=SIZE", with ":2,FLAGS" in cur/).

usage: mkmail.py DIR COUNT SEED [NEW]
  DIR    the folder (holds tmp/ new/ cur/, made when missing)
  COUNT  messages; the last NEW of them (default 1% ) go to new/ (just
         delivered, unseen), the rest to cur/ with flags: 85% \\Seen, a few
         \\Answered, \\Flagged
Shapes (CRLF line ends, as a delivery over SMTP stores them): 2-6 Received
lines, often DKIM-Signature and Authentication-Results, sometimes List-*,
Cc, In-Reply-To/References, RFC 2047 subjects; bodies text/plain (60%),
multipart/alternative text+html (30%), multipart/mixed with a base64
attachment of 2-24 KiB (10%).
Dates ascend over five years. Prints count and total bytes.
"""
import base64
import os
import random
import sys

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no will more out up into do time can only new about other some could these may two first any like then now my such make over our even most me state after also made many did must before back see through way where get much go well your know should down work year because come people just say those too take while here long both between life being under never day same another know while last might us great old year off come since against go came right used take three".split())
FIRST = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil Trent Victor Walter Zoé Jürgen Åsa".split()
LAST = "Smith Jones Müller García Novák Kowalski Rossi Dubois Svensson Tanaka Lee Brown Wilson Moore Taylor Anderson".split()
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com",
           "lists.example.org", "corp.example", "news.example.net",
           "shop.example.com"]
LISTS = ["dev", "announce", "users", "security", "offtopic"]
MAILERS = ["Mozilla Thunderbird 115.5.0", "Apple Mail (2.3731.700.6)",
           "Microsoft Outlook 16.0", "Roundcube Webmail/1.6.5", "mutt 2.2.9",
           "Evolution 3.46.4"]


def words(r, n):
    return " ".join(r.choice(WORDS) for _ in range(n))


def para(r, nlines):
    out, line = [], []
    for _ in range(nlines * 11):
        line.append(r.choice(WORDS))
        if sum(len(w) + 1 for w in line) > 68:
            out.append(" ".join(line))
            line = []
    if line:
        out.append(" ".join(line))
    out[0] = out[0].capitalize()
    return out


def text_body(r, kib):
    lines = []
    while sum(len(l) + 2 for l in lines) < kib * 1024:
        lines += para(r, r.randint(2, 8)) + [""]
    if r.random() < 0.3:  # a quoted reply
        lines += ["On Mon, 3 Jun 2024, someone wrote:"] + [
            "> " + l for l in para(r, r.randint(2, 10))]
    lines += ["", "-- ", "%s %s" % (r.choice(FIRST), r.choice(LAST))]
    return lines


def fold_b64(data):
    s = base64.b64encode(data).decode()
    return [s[i:i + 76] for i in range(0, len(s), 76)]


def person(r):
    f, l = r.choice(FIRST), r.choice(LAST)
    addr = "%s.%s@%s" % (f.lower(), l.lower(), r.choice(DOMAINS))
    addr = addr.encode("ascii", "ignore").decode()
    name = "%s %s" % (f, l)
    if any(ord(c) > 127 for c in name):
        name = "=?UTF-8?B?%s?=" % base64.b64encode(name.encode()).decode()
    else:
        name = '"%s"' % name
    return "%s <%s>" % (name, addr), addr


def message(r, i, t):
    frm, faddr = person(r)
    to = "Alice Liddell <alice@example.test>"
    subj = words(r, r.randint(2, 9)).capitalize()
    if r.random() < 0.1:
        subj = "=?UTF-8?Q?%s_=C3=A9t=C3=A9?=" % subj.replace(" ", "_")
    if r.random() < 0.25:
        subj = "Re: " + subj
    date = __import__("email.utils").utils.formatdate(t)
    mid = "<%d.%d.%x@%s>" % (t, i, r.getrandbits(48), faddr.split("@")[1])
    h = ["Return-Path: <%s>" % faddr]
    hops = r.randint(2, 6)
    for k in range(hops):
        h += ["Received: from mx%d.%s (mx%d.%s [192.0.2.%d])" % (
                  k, r.choice(DOMAINS), k, r.choice(DOMAINS), r.randint(1, 254)),
              "\tby mx.example.test with ESMTPS id %X" % r.getrandbits(40),
              "\tfor <alice@example.test>; %s" % date]
    if r.random() < 0.6:
        h += ["Authentication-Results: mx.example.test; dkim=pass header.d=%s;"
              % faddr.split("@")[1], "\tspf=pass smtp.mailfrom=%s; dmarc=pass" % faddr]
        h += ["DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s;"
              % faddr.split("@")[1],
              "\ts=sel1; t=%d; h=from:to:subject:date:message-id;" % t,
              "\tbh=%s;" % base64.b64encode(r.getrandbits(256).to_bytes(32, "big")).decode(),
              "\tb=" + fold_b64(r.getrandbits(2048).to_bytes(256, "big"))[0]] + [
              "\t " + l for l in fold_b64(r.getrandbits(2048).to_bytes(256, "big"))[1:]]
    h += ["From: " + frm, "To: " + to]
    if r.random() < 0.3:
        h.append("Cc: " + ", ".join(person(r)[0] for _ in range(r.randint(1, 4))))
    h += ["Subject: " + subj, "Date: " + date, "Message-ID: " + mid]
    if subj.startswith("Re:"):
        refs = ["<%x@%s>" % (r.getrandbits(40), r.choice(DOMAINS)) for _ in range(r.randint(1, 5))]
        h += ["In-Reply-To: " + refs[-1], "References: " + "\r\n\t".join(refs)]
    if r.random() < 0.25:
        lst = r.choice(LISTS)
        h += ["List-Id: %s <%s.lists.example.org>" % (lst.capitalize(), lst),
              "List-Unsubscribe: <mailto:%s-leave@lists.example.org>" % lst,
              "Precedence: list"]
    if r.random() < 0.5:
        h.append("X-Mailer: " + r.choice(MAILERS))
    h.append("MIME-Version: 1.0")
    kind = r.random()
    kib = r.choice([1, 1, 1, 1, 2, 2, 2, 3, 4, 6])
    if kind < 0.6:
        h += ["Content-Type: text/plain; charset=utf-8; format=flowed",
              "Content-Transfer-Encoding: 8bit"]
        body = text_body(r, kib)
    else:
        bnd = "----=_Part_%d_%x" % (i, r.getrandbits(32))
        txt = text_body(r, kib)
        alt = ["--" + bnd + "-alt" if kind >= 0.9 else "--" + bnd,
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit", ""] + txt
        close_alt = "--%s--" % (bnd + "-alt" if kind >= 0.9 else bnd)
        alt += ["--" + (bnd + "-alt" if kind >= 0.9 else bnd),
                "Content-Type: text/html; charset=utf-8",
                "Content-Transfer-Encoding: quoted-printable", "",
                "<html><body>"] + ["<p>%s</p>" % l for l in txt if l] + [
                "</body></html>", close_alt]
        if kind < 0.9:
            h.append('Content-Type: multipart/alternative; boundary="%s"' % bnd)
            body = ["This is a multi-part message in MIME format.", ""] + alt
        else:
            h.append('Content-Type: multipart/mixed; boundary="%s"' % bnd)
            n = 1024 * r.randint(2, 24)
            att = r.getrandbits(8 * n).to_bytes(n, "big")
            name = r.choice(["report.pdf", "photo.jpg", "invoice.pdf", "notes.odt", "data.xlsx"])
            body = ["This is a multi-part message in MIME format.", "",
                    "--" + bnd,
                    'Content-Type: multipart/alternative; boundary="%s-alt"' % bnd,
                    ""] + alt + ["", "--" + bnd,
                    'Content-Type: application/octet-stream; name="%s"' % name,
                    "Content-Transfer-Encoding: base64",
                    'Content-Disposition: attachment; filename="%s"' % name,
                    ""] + fold_b64(att) + ["--%s--" % bnd]
    return ("\r\n".join(h + [""] + body) + "\r\n").encode()


def main():
    d, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    nnew = int(sys.argv[4]) if len(sys.argv) > 4 else count // 100
    r = random.Random(seed)
    for s in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(d, s), exist_ok=True)
    t0 = 1609459200  # 2021-01-01
    step = (5 * 365 * 86400) // max(count, 1)
    total = 0
    for i in range(count):
        t = t0 + i * step + r.randint(0, step)
        data = message(r, i, t)
        name = "%d.M%dP%dQ%d.bench.example.test,S=%d" % (
            t, r.randint(0, 999999), 4000 + i % 30000, i + 1, len(data))
        if i >= count - nnew:
            path = os.path.join(d, "new", name)
        else:
            x = r.random()
            flags = "S" if x < 0.85 else ""
            if x < 0.1:
                flags = "RS"
            if r.random() < 0.03:
                flags = "F" + flags
            path = os.path.join(d, "cur", name + ":2," + flags)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (t, t))
        total += len(data)
    print(count, total)


if __name__ == "__main__":
    main()
