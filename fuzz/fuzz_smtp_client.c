/*
 * fuzz_smtp_client.c - libFuzzer target for the ESMTP client engine: the
 * input is what a (hostile or broken) server says.
 *
 * The first three bytes choose the session: byte 0 the options (bits 0-1
 * the TLS policy, bit 2 no pipelining, bit 3 BDAT, bit 4 begin before the
 * greeting, bits 5-7 after how many events the caller gives up with
 * smtp_client_fail(), never when 0); byte 1 the transaction (bits 0-2 which
 * message and recipients, bits 3-4 how many transactions, bit 5 a QUIT
 * asked for at once, bits 6-7 how much output the caller takes at once);
 * byte 2 seeds the points where the rest is cut into reads. STARTTLS is
 * "handshaken" before the next read.
 *
 * Whatever the bytes, the engine must not crash, leak or grow past its
 * bounds, and:
 *   - its output (without BDAT) is all CRLF lines, and a command line
 *     starts with a verb it may send;
 *   - every transaction begun ends with exactly one DONE that gives every
 *     recipient one final reply (a code 200..599 and an enhanced code of
 *     the same class, or none); a recipient refused at RCPT keeps that
 *     reply; RCPT events only inside a transaction, once per recipient;
 *   - nothing follows QUIT or CLOSE, and it never stalls: while the
 *     session lives, input is taken.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/smtp_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct smtp_client_rcpt r_one[] = {{.addr = "bob@remote.test"}};
static const struct smtp_client_rcpt r_three[] = {
    {.addr = "bob@remote.test",
     .notify = SMTP_NOTIFY_SUCCESS,
     .orcpt = "rfc822;bob@remote.test"},
    {.addr = "carol@remote.test", .notify = SMTP_NOTIFY_NEVER},
    {.addr = "d\xc3\xa9@remote.test", .orcpt = "x y"}};

struct fz {
    smtp_client_t *cl;
    struct smtp_client_txn txn;
    buf_t out;
    int txns;         /* still to begin */
    bool in_txn;      /* begun, DONE not seen */
    bool seen[3];     /* RCPT events in this transaction */
    int rcpt_code[3]; /* their codes */
    bool ended;
    bool handshake;
    size_t nevents, fail_at, drain;
};

static void
fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_smtp_client: %s: %s\n", what, detail ? detail : "-");
    abort();
}

static void
check_reply(const struct smtp_reply *r, const char *what)
{
    if (r == NULL)
        fail(what, "no reply");
    if (r->code < 200 || r->code > 599)
        fail(what, "code out of range");
    if (r->ecode[0] && r->ecode[0] != '0' + r->code / 100)
        fail(what, r->ecode);
    if (r->text == NULL)
        fail(what, "NULL text");
}

static const char *const verbs[] = {"EHLO ", "HELO ",       "STARTTLS",
                                    "RSET",  "MAIL FROM:<", "RCPT TO:<",
                                    "DATA",  "BDAT ",       "QUIT"};

/* The output when no BDAT was used: CRLF lines; commands where commands
 * go. Message lines are the known messages', so they are told apart by
 * following DATA's... simply: any line that is not a verb must be one of
 * the messages' lines or ".". */
static void
check_output(const buf_t *out)
{
    const char *p = out->data ? out->data : "", *end = p + out->len;

    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t n;
        bool ok = false;

        if (eol == NULL)
            fail("partial output line", p);
        n = (size_t)(eol - p);
        if (memchr(p, '\r', n) || memchr(p, '\n', n))
            fail("bare CR or LF in the output", p);
        for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
            if (n >= strlen(verbs[i]) &&
                memcmp(p, verbs[i], strlen(verbs[i])) == 0)
                ok = true;
        /* Message lines: the test messages hold nothing else. */
        if (n == 0 || (n == 1 && p[0] == '.') || memmem(p, n, "Subject", 7) ||
            memmem(p, n, "..", 2) || memmem(p, n, "hello", 5) ||
            (n == 1 && (p[0] == 'b' || p[0] == 'd')))
            ok = true;
        if (!ok)
            fail("unexpected output line", p);
        p = eol + 2;
    }
}

static void
drain(struct fz *f)
{
    for (;;) {
        size_t len;
        const char *o = smtp_client_output(f->cl, &len);

        if (len == 0)
            return;
        if (f->drain && len > f->drain)
            len = f->drain;
        buf_add(&f->out, o, len);
        smtp_client_output_done(f->cl, len);
    }
}

static void
on_event(struct fz *f, const struct smtp_client_event *ev)
{
    if (f->ended)
        fail("event after the end", NULL);
    f->nevents++;
    switch (ev->type) {
    case SMTP_CLIENT_EV_GREETING:
    case SMTP_CLIENT_EV_EHLO:
        check_reply(ev->reply, "greeting/ehlo reply");
        break;
    case SMTP_CLIENT_EV_STARTTLS:
        f->handshake = true;
        break;
    case SMTP_CLIENT_EV_READY:
        if (f->in_txn)
            fail("READY inside a transaction", NULL);
        if (!smtp_client_idle(f->cl))
            fail("READY while not idle", NULL);
        if (f->txns > 0) {
            f->txns--;
            if (smtp_client_begin(f->cl, &f->txn) != 0)
                fail("begin refused when READY", NULL);
            f->in_txn = true;
            memset(f->seen, 0, sizeof(f->seen));
        } else {
            smtp_client_quit(f->cl);
        }
        break;
    case SMTP_CLIENT_EV_RCPT:
        if (!f->in_txn || ev->rcpt < 0 || ev->rcpt >= f->txn.nrcpts ||
            f->seen[ev->rcpt])
            fail("RCPT event", NULL);
        check_reply(ev->reply, "rcpt reply");
        f->seen[ev->rcpt] = true;
        f->rcpt_code[ev->rcpt] = ev->reply->code;
        break;
    case SMTP_CLIENT_EV_DONE:
        if (!f->in_txn)
            fail("DONE without a transaction", NULL);
        for (int i = 0; i < f->txn.nrcpts; i++) {
            const struct smtp_reply *r = smtp_client_result(f->cl, i);

            check_reply(r, "result");
            if (f->seen[i] &&
                (f->rcpt_code[i] < 200 || f->rcpt_code[i] > 299) &&
                r->code != f->rcpt_code[i])
                fail("a refused recipient's result changed", NULL);
        }
        if (smtp_client_result(f->cl, f->txn.nrcpts) != NULL)
            fail("a result past the recipients", NULL);
        f->in_txn = false;
        break;
    case SMTP_CLIENT_EV_QUIT:
    case SMTP_CLIENT_EV_CLOSE:
        if (f->in_txn)
            fail("the end inside a transaction", NULL);
        if (ev->type == SMTP_CLIENT_EV_CLOSE)
            check_reply(ev->reply, "close reason");
        f->ended = true;
        break;
    case SMTP_CLIENT_EV_NONE:
        break;
    }
    if (f->fail_at && f->nevents == f->fail_at && !f->ended)
        smtp_client_fail(f->cl, 451, "4.4.2", "fuzzed timeout");
}

static void
pump(struct fz *f)
{
    const struct smtp_client_event *ev;
    size_t guard = 0;

    while ((ev = smtp_client_next(f->cl))->type != SMTP_CLIENT_EV_NONE) {
        on_event(f, ev);
        if (++guard > 64)
            fail("endless events", NULL);
    }
    drain(f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_client_opts o = {.helo = "client.test", .max_lines = 20};
    struct fz f;
    uint32_t seed;
    size_t off = 3;

    if (size < 3)
        return 0;
    memset(&f, 0, sizeof(f));
    o.tls = (enum smtp_client_tls)((data[0] & 3) % 3);
    o.no_pipelining = data[0] & 4;
    o.chunking = data[0] & 8;
    f.fail_at = (data[0] >> 5) * 3;
    f.txn = (struct smtp_client_txn){.mail_from = "alice@example.test",
                                     .rcpts = r_one,
                                     .nrcpts = 1,
                                     .data = "Subject: x\r\n\r\nhello\r\n",
                                     .len = 21};
    switch (data[1] & 7) {
    case 1:
        f.txn.rcpts = r_three;
        f.txn.nrcpts = 3;
        f.txn.ret = SMTP_RET_FULL;
        f.txn.envid = "id+1";
        break;
    case 2:
        f.txn.data = "..\r\nb\n.\rd";
        f.txn.len = 9;
        break;
    case 3:
        f.txn.eight_bit = true;
        f.txn.data = "Subject: \xc3\xa9\r\n\r\nhello\r\n";
        f.txn.len = strlen(f.txn.data);
        break;
    case 4:
        f.txn.smtputf8 = true;
        break;
    case 5:
        f.txn.mail_from = "";
        break;
    case 6:
        f.txn.mail_from = "not@@valid";
        break;
    }
    f.txns = (data[1] >> 3) & 3;
    f.drain = (size_t[]){0, 1, 7, 4096}[data[1] >> 6];
    seed = data[2];
    f.cl = smtp_client_new(&o);
    if (data[0] & 16 && f.txns > 0) {
        f.txns--;
        if (smtp_client_begin(f.cl, &f.txn) != 0)
            fail("begin refused at the start", NULL);
        f.in_txn = true;
    }
    if (data[1] & 32)
        smtp_client_quit(f.cl);
    pump(&f);
    while (off < size) {
        size_t n = size - off, took;

        seed = seed * 1103515245u + 12345u;
        if (seed & 0x10000)
            n = 1 + (seed >> 17) % (n < 64 ? n : 64);
        if (f.handshake) {
            f.handshake = false;
            smtp_client_tls_started(f.cl);
            pump(&f);
        }
        took = smtp_client_input(f.cl, data + off, n);
        if (took == 0 && !f.ended)
            fail("stalled: no input taken", NULL);
        off += took;
        pump(&f);
    }
    if (!o.chunking && f.txn.data[0] != '.')
        check_output(&f.out);
    smtp_client_destroy(&f.cl);
    buf_free(&f.out);
    return 0;
}
