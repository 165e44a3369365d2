/*
 * fuzz_smtp_server.c - libFuzzer target for the ESMTP server engine.
 *
 * The first three bytes choose the session: byte 0 the option set,
 * whether decisions are answered at once or only after more input, and
 * after how many events the caller closes the session itself (never when
 * 0); byte 1 which decisions are refused; byte 2 seeds the points where
 * the rest is cut into reads, and its top bit runs the engine in LMTP mode
 * (RFC 2033). The rest is what the client sends. Events are answered by a
 * fixed policy (in LMTP mode each recipient of a message on its own, in
 * either order, or all at once), STARTTLS is "handshaken" at once (the
 * rest of that read dropped, as the listener does).
 *
 * Whatever the bytes, the engine must not crash, leak or grow past its
 * bounds, and:
 *   - its output is whole CRLF-terminated reply lines, each a 2xx-5xx code
 *     then " " or "-", at most 512 octets, one code per multi-line reply;
 *   - it gives at most a few events per input byte and never stalls (with
 *     nothing pending and the output sent, it takes input);
 *   - every MAIL the policy accepted is followed by exactly one RESET
 *     before the next MAIL or the end; RCPT and MESSAGE come only inside
 *     such a transaction, MESSAGE only after an accepted RCPT;
 *   - a DATA message is all CRLF lines, never over max_message;
 *   - in LMTP mode a message lists exactly the recipients accepted, in
 *     SMTP mode none;
 *   - nothing comes after QUIT or CLOSE.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/smtp_server.h"

#define MAX_MESSAGE 2048

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    smtp_server_t *srv;
    buf_t out;
    uint8_t reject;  /* bit i: refuse decision number i mod 8 */
    bool delay;      /* answer after the next read instead of at once */
    size_t close_at; /* smtp_server_close() after this many events, or 0 */
    unsigned ndec;   /* decisions seen */
    size_t nevents, fed;
    bool open;  /* a transaction the policy accepted */
    int rcpts;  /* recipients accepted in it */
    bool ended; /* QUIT or CLOSE seen */
    bool tls;   /* STARTTLS seen: drop the rest of the read */
    bool lmtp;  /* the engine speaks LMTP */
    const struct smtp_event *pending;
};

static void
fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_smtp_server: %s: %s\n", what, detail ? detail : "-");
    abort();
}

static void
check_output(const buf_t *out)
{
    const char *p = out->data ? out->data : "", *end = p + out->len;
    char code[4] = "";

    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t n;

        if (eol == NULL)
            fail("partial reply line", p);
        n = (size_t)(eol - p);
        if (n < 3 || n + 2 > 512)
            fail("reply line length", p);
        if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' ||
            p[2] < '0' || p[2] > '9')
            fail("reply code", p);
        if (n > 3 && p[3] != ' ' && p[3] != '-')
            fail("reply separator", p);
        if (memchr(p, '\r', n) || memchr(p, '\n', n) || memchr(p, '\0', n))
            fail("control inside a reply line", p);
        if (code[0] && memcmp(code, p, 3) != 0)
            fail("code changes inside a reply", p);
        if (n > 3 && p[3] == '-')
            memcpy(code, p, 3);
        else
            code[0] = '\0';
        p = eol + 2;
    }
    if (code[0])
        fail("output ends inside a reply", NULL);
}

static void
take_output(struct fz *f)
{
    size_t n;
    const char *o = smtp_server_output(f->srv, &n);

    buf_add(&f->out, o, n);
    smtp_server_output_done(f->srv, n);
}

static void
answer(struct fz *f, const struct smtp_event *ev)
{
    bool no = (f->reject >> (f->ndec++ % 8)) & 1;
    int code;

    switch (ev->type) {
    case SMTP_EV_CONNECT:
        code = f->reject == 0xff ? 421 : f->reject == 0xfe ? 450 : 220;
        smtp_server_reply(f->srv, no && code == 220 ? 554 : code, NULL, "fuzz");
        break;
    case SMTP_EV_MAIL:
        code = no ? (f->ndec % 3 == 0 ? 451 : 550) : 250;
        if (code == 250) {
            if (f->open)
                fail("MAIL inside a transaction", NULL);
            f->open = true;
            f->rcpts = 0;
        }
        smtp_server_reply(f->srv, code, NULL, "sender\nmulti-line");
        break;
    case SMTP_EV_RCPT:
        /* Now and then a 421: the session must end cleanly. */
        code = no ? (f->ndec % 17 == 0 ? 421 : 550) : 250;
        if (code == 250)
            f->rcpts++;
        smtp_server_reply(f->srv, code, "2.1.5", NULL);
        break;
    case SMTP_EV_MESSAGE:
        if (!f->lmtp || (no && f->ndec % 5 == 0)) {
            smtp_server_reply(f->srv, no ? 554 : 250, NULL, "queued as FUZZ");
            break;
        }
        /* RFC 2033 4.2: each recipient answered on its own, forwards or
         * backwards; now and then a 421 among them. */
        for (int k = 0; k < ev->message.nrcpts; k++) {
            int i = f->ndec & 1 ? ev->message.nrcpts - 1 - k : k;
            unsigned pick = (f->ndec + (unsigned)i) % 23;

            code = pick == 0 && no ? 421 : pick % 3 == 0 ? 452 : 250;
            smtp_server_reply_rcpt(f->srv, i, code, "4.2.2", "per rcpt");
        }
        break;
    case SMTP_EV_AUTH:
        if (ev->auth.round < 2 && (f->ndec & 1) &&
            strcmp(ev->auth.mech, "PLAIN") != 0)
            smtp_server_reply(f->srv, 334, NULL, "Y2hhbGxlbmdl");
        else
            smtp_server_reply(f->srv, no ? 535 : 235, "5.7.8", NULL);
        break;
    default:
        fail("answering a news event", NULL);
    }
}

static void
check_event(struct fz *f, const struct smtp_event *ev)
{
    const char *with = smtp_server_with(f->srv);
    const char *helo = smtp_server_helo(f->srv);

    if (f->ended)
        fail("event after QUIT or CLOSE", NULL);
    if (strstr(with, f->lmtp ? "LMTP" : "SMTP") == NULL ||
        (smtp_server_authenticated(f->srv) != (with[strlen(with) - 1] == 'A')))
        fail("with keyword", with);
    if (helo && strlen(helo) > 255)
        fail("HELO name too long", helo);
    switch (ev->type) {
    case SMTP_EV_CONNECT:
        if (f->nevents != 1)
            fail("CONNECT not first", NULL);
        break;
    case SMTP_EV_HELO:
        if (ev->helo.name == NULL || strlen(ev->helo.name) == 0)
            fail("HELO without a name", NULL);
        break;
    case SMTP_EV_MAIL:
        if (ev->mail.from == NULL || ev->mail.raw == NULL ||
            ev->mail.path == NULL)
            fail("MAIL without a path", NULL);
        if (ev->mail.size_given && ev->mail.size > MAX_MESSAGE)
            fail("MAIL SIZE over the limit let through", NULL);
        if (f->open)
            fail("MAIL while a transaction is open", NULL);
        break;
    case SMTP_EV_RCPT:
        if (!f->open)
            fail("RCPT outside a transaction", NULL);
        if (ev->rcpt.to == NULL || ev->rcpt.to[0] == '\0')
            fail("RCPT without a path", NULL);
        break;
    case SMTP_EV_MESSAGE:
        if (!f->open || f->rcpts == 0)
            fail("MESSAGE without a transaction and a recipient", NULL);
        if (ev->message.len > MAX_MESSAGE)
            fail("MESSAGE over max_message", NULL);
        if (f->lmtp
                ? ev->message.nrcpts != f->rcpts || ev->message.rcpts == NULL
                : ev->message.nrcpts != 0 || ev->message.rcpts != NULL)
            fail("MESSAGE recipients", NULL);
        for (int i = 0; i < ev->message.nrcpts; i++)
            if (ev->message.rcpts[i] == NULL || ev->message.rcpts[i][0] == 0)
                fail("MESSAGE recipient empty", NULL);
        if (!ev->message.bdat) {
            const char *d = ev->message.data;
            size_t n = ev->message.len;

            if (n > 0 && (n < 2 || memcmp(d + n - 2, "\r\n", 2) != 0))
                fail("DATA message does not end in CRLF", NULL);
            for (size_t i = 0; i < n; i++) {
                if (d[i] == '\r' && (i + 1 >= n || d[i + 1] != '\n'))
                    fail("bare CR in a DATA message", NULL);
                if (d[i] == '\n' && (i == 0 || d[i - 1] != '\r'))
                    fail("bare LF in a DATA message", NULL);
            }
        }
        break;
    case SMTP_EV_AUTH:
        if (ev->auth.mech == NULL || ev->auth.nresp < 0 || ev->auth.nresp > 2)
            fail("AUTH event malformed", NULL);
        for (int i = 0; i < ev->auth.nresp; i++)
            if (ev->auth.resp[i] == NULL)
                fail("AUTH response missing", NULL);
        break;
    case SMTP_EV_RESET:
        if (!f->open)
            fail("RESET without an open transaction", NULL);
        f->open = false;
        break;
    case SMTP_EV_STARTTLS:
        if (f->open)
            fail("STARTTLS inside a transaction", NULL);
        f->tls = true;
        break;
    case SMTP_EV_QUIT:
    case SMTP_EV_CLOSE:
        if (f->open)
            fail("session ends with a transaction open", NULL);
        f->ended = true;
        if (!smtp_server_done(f->srv))
            fail("QUIT/CLOSE but not done", NULL);
        break;
    case SMTP_EV_NONE:
        break;
    }
}

/* Takes events until the engine wants input; answers decisions at once,
 * or leaves the first one pending when f->delay says so. */
static void
drain(struct fz *f)
{
    const struct smtp_event *ev;

    if (f->pending) {
        answer(f, f->pending);
        f->pending = NULL;
    }
    while ((ev = smtp_server_next(f->srv))->type != SMTP_EV_NONE) {
        f->nevents++;
        if (f->nevents > 8 * f->fed + 16)
            fail("too many events for the input", NULL);
        check_event(f, ev);
        if (f->close_at && f->nevents == f->close_at && !f->ended &&
            ev->type >= SMTP_EV_HELO) {
            /* An idle timeout, say; only after a news event, whose data
             * the caller has done with. */
            smtp_server_close(f->srv, "4.4.2", "timeout");
            take_output(f);
            continue;
        }
        if (ev->type >= SMTP_EV_CONNECT && ev->type <= SMTP_EV_AUTH) {
            if (f->delay && ev->type != SMTP_EV_CONNECT) {
                f->pending = ev;
                take_output(f);
                return;
            }
            answer(f, ev);
        }
        take_output(f);
    }
    take_output(f);
}

static uint32_t
next_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_server_opts o = {
        .hostname = "fuzz.test",
        .max_message = MAX_MESSAGE,
        .max_errors = 50,
        .auth_mechs = "PLAIN LOGIN X-FUZZ",
    };
    struct fz f;
    uint32_t seed;
    size_t pos = 3;
    int stuck = 0;

    if (size < 3)
        return 0;
    memset(&f, 0, sizeof(f));
    switch (data[0] & 3) {
    case 0: /* MTA */
        o.ext = SMTP_EXT_ALL & ~(unsigned)SMTP_EXT_AUTH;
        break;
    case 1: /* MSA */
        o.ext = SMTP_EXT_ALL;
        o.auth_needs_tls = o.mail_needs_auth = true;
        break;
    case 2: /* SMTPS */
        o.ext = SMTP_EXT_ALL;
        o.tls_active = o.mail_needs_auth = true;
        break;
    default: /* whatever the byte says */
        o.ext = (unsigned)data[0] << 1 | (data[1] & 1);
        break;
    }
    f.delay = data[0] & 4;
    f.close_at = data[0] >> 3;
    f.reject = data[1];
    f.lmtp = o.lmtp = data[2] & 0x80;
    seed = (uint32_t)data[2] * 2654435761u | 1;
    f.srv = smtp_server_new(&o);
    drain(&f);

    while (pos < size) {
        size_t want = 1 + next_rand(&seed) % 64, took;

        if (want > size - pos)
            want = size - pos;
        if (next_rand(&seed) % 8 == 0)
            want = size - pos; /* now and then all the rest at once */
        took = smtp_server_input(f.srv, data + pos, want);
        f.fed += took;
        pos += took;
        drain(&f);
        if (f.tls) {
            /* The listener drops the rest of its read, then shakes hands. */
            f.tls = false;
            pos += next_rand(&seed) % 4 == 0 ? 0 : want - took;
            if (pos > size)
                pos = size;
            smtp_server_tls_started(f.srv);
            drain(&f);
            continue;
        }
        /* Each round answers what is pending and sends the output, so
         * the engine must take input again within a round or two. */
        stuck = took == 0 ? stuck + 1 : 0;
        if (stuck > 3)
            fail("stalled: answered and drained, yet no input taken", NULL);
    }
    drain(&f);
    if (f.pending) {
        answer(&f, f.pending);
        f.pending = NULL;
        drain(&f);
    }
    check_output(&f.out);
    smtp_server_destroy(&f.srv);
    buf_free(&f.out);
    return 0;
}
