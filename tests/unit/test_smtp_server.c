/*
 * test_smtp_server.c - the ESMTP server engine (lib/smtp_server.h), driven
 * by scripted sessions: bytes fed (whole, byte by byte, or in odd slices),
 * events answered by a fixed policy, the replies and events written down
 * and compared with what the RFCs want.
 *
 * A script is a list of segments; a segment after STARTTLS is what the
 * client sends once TLS is up (the rest of the segment that held STARTTLS
 * is dropped, as the listener must). The policy accepts everything except:
 * senders and recipients starting "bad" (550 5.7.1 / 550 5.1.1), "tmp"
 * (451 4.3.0) or "close" (421 4.3.2); messages holding "REJECT" (554
 * 5.7.1); AUTH other than user/pass (535 5.7.8). A reply summary lists
 * each reply's code and enhanced code, e.g. "220,250,250 2.1.0".
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "lib/buf.h"
#include "lib/smtp_server.h"
#include "lib/smtp_server_int.h" /* buffer sizes, for test_buffers */

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

/* Option sets a script can ask for. */
enum { O_MTA, O_MSA, O_SMTPS, O_BARE, O_MTA_TLS, O_NOUTF8 };

static struct smtp_server_opts
opts_for(int kind)
{
    struct smtp_server_opts o = {
        .hostname = "mx.test",
        .max_message = 4096,
        .ext = SMTP_EXT_ALL & ~(unsigned)SMTP_EXT_STARTTLS,
        .auth_mechs = "PLAIN LOGIN X-TEST",
    };

    switch (kind) {
    case O_MSA:
        o.ext = SMTP_EXT_ALL;
        o.auth_needs_tls = o.mail_needs_auth = true;
        break;
    case O_SMTPS:
        o.ext = SMTP_EXT_ALL;
        o.tls_active = o.auth_needs_tls = o.mail_needs_auth = true;
        break;
    case O_BARE:
        o.ext = SMTP_EXT_ENHANCEDSTATUSCODES;
        break;
    case O_MTA_TLS:
        o.ext = SMTP_EXT_ALL;
        break;
    case O_NOUTF8:
        o.ext &= ~(unsigned)SMTP_EXT_SMTPUTF8;
        break;
    }
    return o;
}

struct run {
    buf_t out;     /* every byte the engine queued */
    buf_t ev;      /* event names, space-separated */
    buf_t detail;  /* one line per event with its fields */
    int nevents;
    int greeting;  /* the CONNECT answer */
    bool tls_restart; /* STARTTLS seen: drop the rest of the segment */
    smtp_server_t *srv;
};

static const char *
ev_name(enum smtp_event_type t)
{
    static const char *const names[] = {
        "NONE", "CONNECT", "MAIL", "RCPT", "MESSAGE", "AUTH",
        "HELO", "RESET", "STARTTLS", "QUIT", "CLOSE",
    };

    return names[t];
}

static bool
starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void
answer_addr(smtp_server_t *srv, const char *addr, int ok, const char *okx,
            const char *badx)
{
    if (starts(addr, "bad"))
        smtp_server_reply(srv, 550, badx, "no");
    else if (starts(addr, "tmp"))
        smtp_server_reply(srv, 451, "4.3.0", "later");
    else if (starts(addr, "close"))
        smtp_server_reply(srv, 421, "4.3.2", "going down");
    else
        smtp_server_reply(srv, ok, okx, "OK");
}

static void
answer_auth(smtp_server_t *srv, const struct smtp_event *ev)
{
    const char *m = ev->auth.mech;
    bool good = false;

    if (strcmp(m, "PLAIN") == 0) {
        good = strcmp(ev->auth.resp[0], "AHVzZXIAcGFzcw==") == 0;
    } else if (strcmp(m, "LOGIN") == 0) {
        good = strcmp(ev->auth.username, "user") == 0 &&
               strcmp(ev->auth.password, "pass") == 0;
    } else if (ev->auth.round == 0) {
        /* X-TEST: one challenge, then "ok" in base64. */
        smtp_server_reply(srv, 334, NULL, "Y2hhbGxlbmdl");
        return;
    } else {
        good = ev->auth.nresp == 1 && strcmp(ev->auth.resp[0], "b2s=") == 0;
    }
    if (good)
        smtp_server_reply(srv, 235, "2.7.0", "Authentication successful");
    else
        smtp_server_reply(srv, 535, "5.7.8", "Authentication credentials "
                                             "invalid");
}

static void
note(struct run *r, const struct smtp_event *ev)
{
    buf_printf(&r->ev, "%s%s", r->ev.len ? " " : "", ev_name(ev->type));
    r->nevents++;
    switch (ev->type) {
    case SMTP_EV_HELO:
        buf_printf(&r->detail, "HELO %s esmtp=%d\n", ev->helo.name,
                   ev->helo.esmtp);
        break;
    case SMTP_EV_MAIL:
        buf_printf(&r->detail,
                   "MAIL from=<%s> raw=<%s> size=%d:%zu body=%d utf8=%d "
                   "ret=%d envid=%s auth=%s\n",
                   ev->mail.from, ev->mail.raw, ev->mail.size_given,
                   ev->mail.size, (int)ev->mail.body, ev->mail.smtputf8,
                   (int)ev->mail.ret, ev->mail.envid ? ev->mail.envid : "-",
                   ev->mail.auth ? ev->mail.auth : "-");
        break;
    case SMTP_EV_RCPT:
        buf_printf(&r->detail, "RCPT to=<%s> raw=<%s> notify=%u orcpt=%s\n",
                   ev->rcpt.to, ev->rcpt.raw, ev->rcpt.notify,
                   ev->rcpt.orcpt ? ev->rcpt.orcpt : "-");
        break;
    case SMTP_EV_MESSAGE:
        buf_printf(&r->detail, "MESSAGE bdat=%d len=%zu [", ev->message.bdat,
                   ev->message.len);
        buf_add(&r->detail, ev->message.data, ev->message.len);
        buf_adds(&r->detail, "]\n");
        break;
    case SMTP_EV_AUTH:
        buf_printf(&r->detail, "AUTH %s n=%d round=%d", ev->auth.mech,
                   ev->auth.nresp, ev->auth.round);
        for (int i = 0; i < ev->auth.nresp; i++)
            buf_printf(&r->detail, " r%d=%s", i, ev->auth.resp[i]);
        if (ev->auth.username)
            buf_printf(&r->detail, " user=%s pass=%s", ev->auth.username,
                       ev->auth.password);
        buf_adds(&r->detail, "\n");
        break;
    default:
        buf_printf(&r->detail, "%s\n", ev_name(ev->type));
        break;
    }
}

static void
take_output(struct run *r)
{
    size_t n;
    const char *out = smtp_server_output(r->srv, &n);

    buf_add(&r->out, out, n);
    smtp_server_output_done(r->srv, n);
}

/* Runs the engine until it wants input, answering by the policy. */
static void
drain(struct run *r)
{
    const struct smtp_event *ev;

    while ((ev = smtp_server_next(r->srv))->type != SMTP_EV_NONE) {
        note(r, ev);
        switch (ev->type) {
        case SMTP_EV_CONNECT:
            smtp_server_reply(r->srv, r->greeting, NULL, "ESMTP test");
            break;
        case SMTP_EV_MAIL:
            answer_addr(r->srv, ev->mail.from, 250, "2.1.0", "5.7.1");
            break;
        case SMTP_EV_RCPT:
            answer_addr(r->srv, ev->rcpt.to, 250, "2.1.5", "5.1.1");
            break;
        case SMTP_EV_MESSAGE:
            if (memmem(ev->message.data, ev->message.len, "REJECT", 6))
                smtp_server_reply(r->srv, 554, "5.7.1", "spam");
            else
                smtp_server_reply(r->srv, 250, "2.0.0", "OK queued as T1");
            break;
        case SMTP_EV_AUTH:
            answer_auth(r->srv, ev);
            break;
        case SMTP_EV_STARTTLS:
            r->tls_restart = true;
            break;
        default:
            break;
        }
        take_output(r);
    }
    take_output(r);
}

static void
feed(struct run *r, const char *data, size_t len, size_t chunk)
{
    size_t pos = 0;
    int stuck = 0;

    while (pos < len) {
        size_t n = chunk && chunk < len - pos ? chunk : len - pos;
        size_t took = smtp_server_input(r->srv, data + pos, n);

        pos += took;
        drain(r);
        if (r->tls_restart) {
            /* The listener drops what it read but did not feed, shakes
             * hands, then says so. */
            r->tls_restart = false;
            smtp_server_tls_started(r->srv);
            return;
        }
        stuck = took == 0 ? stuck + 1 : 0;
        ck_assert_msg(stuck < 3, "engine stalls at %zu of %zu", pos, len);
    }
}

static void
run_start(struct run *r, int kind, int greeting)
{
    struct smtp_server_opts o = opts_for(kind);

    memset(r, 0, sizeof(*r));
    r->greeting = greeting ? greeting : 220;
    r->srv = smtp_server_new(&o);
    drain(r);
}

static void
run_free(struct run *r)
{
    smtp_server_destroy(&r->srv);
    ck_assert(r->srv == NULL);
    buf_free(&r->out);
    buf_free(&r->ev);
    buf_free(&r->detail);
}

/* Runs a script: segments of input, fed in slices of chunk bytes (0: each
 * segment whole). */
static void
run_script(struct run *r, int kind, const char *const *segs, size_t chunk)
{
    run_start(r, kind, 0);
    for (int i = 0; segs[i]; i++)
        feed(r, segs[i], strlen(segs[i]), chunk);
    drain(r);
}

/* "220,250,250 2.1.0": the code of each reply's last line, with its
 * enhanced code. Also checks that every line is a well-formed reply line
 * and that the lines of one reply share their code. */
static void
summary(const buf_t *out, buf_t *sum)
{
    const char *p = out->data ? out->data : "", *end = p + out->len;
    char code[4] = "";

    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t n;

        ck_assert_msg(eol != NULL, "output ends in a partial line: %s", p);
        n = (size_t)(eol - p);
        ck_assert_msg(n >= 3 && n <= 510, "bad reply line length %zu", n);
        ck_assert_msg(p[0] >= '2' && p[0] <= '5' && p[1] >= '0' &&
                          p[1] <= '5' && p[2] >= '0' && p[2] <= '9',
                      "bad code in \"%.*s\"", (int)n, p);
        ck_assert_msg(n == 3 || p[3] == ' ' || p[3] == '-',
                      "bad separator in \"%.*s\"", (int)n, p);
        ck_assert_msg(memchr(p, '\r', n) == NULL && memchr(p, '\n', n) == NULL,
                      "CR or LF inside a reply line");
        if (code[0])
            ck_assert_msg(strncmp(code, p, 3) == 0,
                          "code changes inside a reply: %s then %.3s", code, p);
        if (n > 3 && p[3] == '-') {
            memcpy(code, p, 3);
        } else {
            const char *t = p + 4;
            size_t en = 0;

            code[0] = '\0';
            if (n > 4 && t[0] == p[0] && t[1] == '.') {
                en = strspn(t, "0123456789.");
                if (t + en > eol)
                    en = (size_t)(eol - t);
            }
            buf_printf(sum, "%s%.3s", sum->len ? "," : "", p);
            if (en)
                buf_printf(sum, " %.*s", (int)en, t);
        }
        p = eol + 2;
    }
    ck_assert_msg(code[0] == '\0', "output ends inside a reply");
}

static void
want_summary(const char *label, struct run *r, const char *want)
{
    buf_t sum = BUF_INIT;

    summary(&r->out, &sum);
    ck_assert_msg(strcmp(sum.data ? sum.data : "", want) == 0,
                  "%s: replies: got \"%s\", want \"%s\"\noutput:\n%s", label,
                  sum.data ? sum.data : "", want, r->out.data);
    buf_free(&sum);
}

static void
want_events(const char *label, struct run *r, const char *want)
{
    ck_assert_msg(strcmp(r->ev.data ? r->ev.data : "", want) == 0,
                  "%s: events: got \"%s\", want \"%s\"", label,
                  r->ev.data ? r->ev.data : "", want);
}

static void
want_detail(const char *label, struct run *r, const char *part)
{
    ck_assert_msg(r->detail.data && strstr(r->detail.data, part),
                  "%s: event details lack \"%s\":\n%s", label, part,
                  r->detail.data ? r->detail.data : "");
}

static void
want_output(const char *label, struct run *r, const char *part)
{
    ck_assert_msg(r->out.data && strstr(r->out.data, part),
                  "%s: output lacks \"%s\":\n%s", label, part,
                  r->out.data ? r->out.data : "");
}

static void
want_no_output(const char *label, struct run *r, const char *part)
{
    ck_assert_msg(r->out.data == NULL || strstr(r->out.data, part) == NULL,
                  "%s: output has \"%s\":\n%s", label, part, r->out.data);
}

#define EHLO "EHLO client.test\r\n"
#define MAILOK "MAIL FROM:<a@b.test>\r\n"
#define RCPTOK "RCPT TO:<c@d.test>\r\n"
#define TXN EHLO MAILOK RCPTOK
#define PLAIN_OK "AHVzZXIAcGFzcw==" /* "\0user\0pass" */

/*
 * The scripted sessions: a label, the option set, the input segments, the
 * replies wanted, the events wanted (NULL: not checked) and a fragment the
 * event details must hold (NULL: none).
 */
static const struct script {
    const char *label;
    int kind;
    const char *in[4];
    const char *replies, *events, *detail;
} scripts[] = {
    /* RFC 5321 commands. */
    {"quit", O_MTA, {"QUIT\r\n"}, "220,221 2.0.0", "CONNECT QUIT", NULL},
    {"ehlo", O_MTA, {EHLO "QUIT\r\n"}, "220,250,221 2.0.0",
     "CONNECT HELO QUIT", "HELO client.test esmtp=1"},
    {"helo", O_MTA, {"HELO client.test\r\n"}, "220,250", "CONNECT HELO",
     "HELO client.test esmtp=0"},
    {"ehlo without name", O_MTA, {"EHLO\r\n"}, "220,501 5.5.4", "CONNECT",
     NULL},
    {"helo with two words", O_MTA, {"HELO a b\r\n"}, "220,501 5.5.4",
     "CONNECT", NULL},
    {"ehlo address literal", O_MTA, {"EHLO [192.0.2.1]\r\n"}, "220,250",
     "CONNECT HELO", "HELO [192.0.2.1] esmtp=1"},
    {"whole transaction", O_MTA,
     {TXN "DATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n"},
     "220,250,250 2.1.0,250 2.1.5,354,250 2.0.0,221 2.0.0",
     "CONNECT HELO MAIL RCPT MESSAGE RESET QUIT",
     "MESSAGE bdat=0 len=22 [Subject: hi\r\n\r\nhello\r\n]"},
    {"commands any case", O_MTA,
     {"eHlO x.test\r\nmail from:<a@b.test>\r\nRcPt To:<c@d.test>\r\n"
      "data\r\nx\r\n.\r\nquit\r\n"},
     "220,250,250 2.1.0,250 2.1.5,354,250 2.0.0,221 2.0.0", NULL, NULL},
    {"bare LF command lines", O_MTA,
     {"EHLO x.test\nMAIL FROM:<a@b.test>\nRCPT TO:<c@d.test>\nQUIT\n"},
     "220,250,250 2.1.0,250 2.1.5,221 2.0.0", NULL, NULL},
    {"mail before ehlo", O_MTA, {MAILOK}, "220,503 5.5.1", "CONNECT", NULL},
    {"rcpt before mail", O_MTA, {EHLO RCPTOK}, "220,250,503 5.5.1", NULL,
     NULL},
    {"data before mail", O_MTA, {EHLO "DATA\r\n"}, "220,250,503 5.5.1", NULL,
     NULL},
    {"data without recipients", O_MTA,
     {EHLO MAILOK "RCPT TO:<bad@d.test>\r\nDATA\r\n"},
     "220,250,250 2.1.0,550 5.1.1,554 5.5.1", NULL, NULL},
    {"data with parameter", O_MTA, {TXN "DATA x\r\n"},
     "220,250,250 2.1.0,250 2.1.5,501 5.5.4", NULL, NULL},
    {"nested mail", O_MTA, {EHLO MAILOK MAILOK},
     "220,250,250 2.1.0,503 5.5.1", NULL, NULL},
    {"mail refused", O_MTA, {EHLO "MAIL FROM:<bad@b.test>\r\n" RCPTOK},
     "220,250,550 5.7.1,503 5.5.1", "CONNECT HELO MAIL", NULL},
    {"rset", O_MTA, {TXN "RSET\r\n" MAILOK},
     "220,250,250 2.1.0,250 2.1.5,250 2.0.0,250 2.1.0",
     "CONNECT HELO MAIL RCPT RESET MAIL", NULL},
    {"rset with parameter", O_MTA, {"RSET x\r\n"}, "220,501 5.5.4", NULL,
     NULL},
    {"rset outside a transaction", O_MTA, {"RSET\r\n"}, "220,250 2.0.0",
     "CONNECT", NULL},
    {"noop", O_MTA, {"NOOP\r\nNOOP anything\r\n"},
     "220,250 2.0.0,250 2.0.0", NULL, NULL},
    {"vrfy", O_MTA, {"VRFY root\r\nVRFY <a@b.test>\r\n"},
     "220,252 2.5.0,252 2.5.0", "CONNECT", NULL},
    {"vrfy without argument", O_MTA, {"VRFY\r\n"}, "220,501 5.5.4", NULL,
     NULL},
    {"expn", O_MTA, {"EXPN staff\r\n"}, "220,502 5.5.1", NULL, NULL},
    {"help", O_MTA, {"HELP\r\nHELP MAIL\r\n"}, "220,214 2.0.0,214 2.0.0",
     NULL, NULL},
    {"unknown command", O_MTA, {"FOO bar\r\n"}, "220,500 5.5.2", NULL, NULL},
    {"empty line", O_MTA, {"\r\n"}, "220,500 5.5.2", NULL, NULL},
    {"unimplemented command", O_MTA, {"TURN\r\nETRN x\r\n"},
     "220,502 5.5.1,502 5.5.1", NULL, NULL},
    {"quit with parameter", O_MTA, {"QUIT now\r\n"}, "220,501 5.5.4", NULL,
     NULL},
    {"quit in a transaction", O_MTA, {TXN "QUIT\r\n"},
     "220,250,250 2.1.0,250 2.1.5,221 2.0.0",
     "CONNECT HELO MAIL RCPT RESET QUIT", NULL},
    {"input after quit ignored", O_MTA, {"QUIT\r\nNOOP\r\n", "NOOP\r\n"},
     "220,221 2.0.0", "CONNECT QUIT", NULL},
    {"ehlo in a transaction resets", O_MTA, {TXN EHLO "DATA\r\n"},
     "220,250,250 2.1.0,250 2.1.5,250,503 5.5.1",
     "CONNECT HELO MAIL RCPT RESET HELO", NULL},
    {"bare CR in a command", O_MTA, {"NOOP\rQUIT\r\n"}, "220,500 5.5.2",
     "CONNECT", NULL},
    {"tab in a command", O_MTA, {"NOOP\tx\r\n"}, "220,500 5.5.2", NULL,
     NULL},

    /* MAIL and RCPT syntax. */
    {"mail without brackets", O_MTA, {EHLO "MAIL FROM:a@b.test\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"mail TO:", O_MTA, {EHLO "MAIL TO:<a@b.test>\r\n"}, "220,250,501 5.5.4",
     NULL, NULL},
    {"mail bad address", O_MTA, {EHLO "MAIL FROM:<a@@b.test>\r\n"},
     "220,250,501 5.1.7", NULL, NULL},
    {"mail junk after path", O_MTA, {EHLO "MAIL FROM:<a@b.test>x\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"mail null sender", O_MTA, {EHLO "MAIL FROM:<>\r\n"}, "220,250,250 2.1.0",
     NULL, "MAIL from=<> raw=<>"},
    {"mail space after colon", O_MTA, {EHLO "MAIL FROM: <a@b.test>\r\n"},
     "220,250,250 2.1.0", NULL, "from=<a@b.test>"},
    {"mail normalised", O_MTA, {EHLO "MAIL FROM:<@r.test:\"abc\"@B.Test>\r\n"},
     "220,250,250 2.1.0", NULL,
     "MAIL from=<abc@b.test> raw=<@r.test:\"abc\"@B.Test>"},
    {"mail trailing spaces", O_MTA, {EHLO "MAIL FROM:<a@b.test>   \r\n"},
     "220,250,250 2.1.0", NULL, NULL},
    {"rcpt bad address", O_MTA, {EHLO MAILOK "RCPT TO:<c@d..test>\r\n"},
     "220,250,250 2.1.0,501 5.1.3", NULL, NULL},
    {"rcpt null path", O_MTA, {EHLO MAILOK "RCPT TO:<>\r\n"},
     "220,250,250 2.1.0,501 5.1.3", NULL, NULL},
    {"rcpt FROM:", O_MTA, {EHLO MAILOK "RCPT FROM:<c@d.test>\r\n"},
     "220,250,250 2.1.0,501 5.5.4", NULL, NULL},
    {"rcpt postmaster", O_MTA, {EHLO MAILOK "RCPT TO:<Postmaster>\r\n"},
     "220,250,250 2.1.0,250 2.1.5", NULL,
     "RCPT to=<postmaster> raw=<Postmaster>"},
    {"rcpt source route dropped", O_MTA,
     {EHLO MAILOK "RCPT TO:<@a.test,@b.test:U@C.Test>\r\n"},
     "220,250,250 2.1.0,250 2.1.5", NULL,
     "RCPT to=<U@c.test> raw=<@a.test,@b.test:U@C.Test>"},
    {"rcpt percent hack is plain", O_MTA,
     {EHLO MAILOK "RCPT TO:<u%other.test@d.test>\r\n"},
     "220,250,250 2.1.0,250 2.1.5", NULL, "RCPT to=<u%other.test@d.test>"},
    {"rcpt refusals", O_MTA,
     {EHLO MAILOK "RCPT TO:<bad@d.test>\r\nRCPT TO:<tmp@d.test>\r\n"
                  "RCPT TO:<ok@d.test>\r\nDATA\r\n.\r\n"},
     "220,250,250 2.1.0,550 5.1.1,451 4.3.0,250 2.1.5,354,250 2.0.0",
     "CONNECT HELO MAIL RCPT RCPT RCPT MESSAGE RESET", NULL},
    {"path too long", O_MTA,
     {EHLO "MAIL FROM:<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaa@b.test>\r\n"},
     "220,250,501 5.1.7", NULL, NULL},

    /* SIZE (RFC 1870), 8BITMIME (RFC 6152). */
    {"size within", O_MTA, {EHLO "MAIL FROM:<a@b.test> SIZE=4096\r\n"},
     "220,250,250 2.1.0", NULL, "size=1:4096"},
    {"size over", O_MTA, {EHLO "MAIL FROM:<a@b.test> SIZE=4097\r\n"},
     "220,250,552 5.3.4", NULL, NULL},
    {"size huge", O_MTA,
     {EHLO "MAIL FROM:<a@b.test> SIZE=99999999999999999999\r\n"},
     "220,250,552 5.3.4", NULL, NULL},
    {"size over 20 digits", O_MTA,
     {EHLO "MAIL FROM:<a@b.test> SIZE=000000000000000000001\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"size not a number", O_MTA, {EHLO "MAIL FROM:<a@b.test> SIZE=1k\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"size keyword any case", O_MTA, {EHLO "MAIL FROM:<a@b.test> size=10\r\n"},
     "220,250,250 2.1.0", NULL, "size=1:10"},
    {"body 8bitmime", O_MTA, {EHLO "MAIL FROM:<a@b.test> BODY=8BITMIME\r\n"},
     "220,250,250 2.1.0", NULL, "body=2"},
    {"body 7bit", O_MTA, {EHLO "MAIL FROM:<a@b.test> BODY=7bit\r\n"},
     "220,250,250 2.1.0", NULL, "body=1"},
    {"body binarymime", O_MTA,
     {EHLO "MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n"}, "220,250,555 5.5.4",
     NULL, NULL},
    {"unknown mail parameter", O_MTA, {EHLO "MAIL FROM:<a@b.test> FOO=1\r\n"},
     "220,250,555 5.5.4", NULL, NULL},
    {"duplicate parameter", O_MTA,
     {EHLO "MAIL FROM:<a@b.test> SIZE=1 SIZE=2\r\n"}, "220,250,555 5.5.4",
     NULL, NULL},
    {"malformed parameter", O_MTA, {EHLO "MAIL FROM:<a@b.test> SIZE=\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"parameters after HELO", O_MTA,
     {"HELO x.test\r\nMAIL FROM:<a@b.test> SIZE=10\r\n"}, "220,250,555 5.5.4",
     NULL, NULL},
    {"parameters not offered", O_BARE,
     {EHLO "MAIL FROM:<a@b.test> BODY=8BITMIME\r\n"}, "220,250,555 5.5.4",
     NULL, NULL},

    /* SMTPUTF8 (RFC 6531). */
    {"utf8 sender with SMTPUTF8", O_MTA,
     {EHLO "MAIL FROM:<jürgen@b.test> SMTPUTF8\r\nRCPT TO:<ü@d.test>\r\n"},
     "220,250,250 2.1.0,250 2.1.5", NULL, "utf8=1"},
    {"utf8 sender without SMTPUTF8", O_MTA,
     {EHLO "MAIL FROM:<jürgen@b.test>\r\n"}, "220,250,553 5.6.7", NULL, NULL},
    {"utf8 recipient without SMTPUTF8", O_MTA,
     {EHLO MAILOK "RCPT TO:<ü@d.test>\r\n"}, "220,250,250 2.1.0,553 5.6.7",
     NULL, NULL},
    {"SMTPUTF8 not offered", O_NOUTF8,
     {EHLO "MAIL FROM:<a@b.test> SMTPUTF8\r\n"}, "220,250,555 5.5.4", NULL,
     NULL},
    {"SMTPUTF8 with a value", O_MTA,
     {EHLO "MAIL FROM:<a@b.test> SMTPUTF8=yes\r\n"}, "220,250,555 5.5.4",
     NULL, NULL},
    {"SMTPUTF8 ends with the transaction", O_MTA,
     {EHLO "MAIL FROM:<a@b.test> SMTPUTF8\r\nRSET\r\n" MAILOK
           "RCPT TO:<ü@d.test>\r\n"},
     "220,250,250 2.1.0,250 2.0.0,250 2.1.0,553 5.6.7", NULL, NULL},
    {"malformed utf8", O_MTA,
     {EHLO "MAIL FROM:<j\xfcrgen@b.test> SMTPUTF8\r\n"}, "220,250,501 5.1.7",
     NULL, NULL},

    /* DSN (RFC 3461). */
    {"dsn mail parameters", O_MTA,
     {EHLO "MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2B1\r\n"},
     "220,250,250 2.1.0", NULL, "ret=2 envid=QQ+2B1"},
    {"dsn ret full", O_MTA, {EHLO "MAIL FROM:<a@b.test> ret=full\r\n"},
     "220,250,250 2.1.0", NULL, "ret=1"},
    {"dsn bad ret", O_MTA, {EHLO "MAIL FROM:<a@b.test> RET=ALL\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"dsn bad envid", O_MTA, {EHLO "MAIL FROM:<a@b.test> ENVID=a+zz\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"dsn envid too long", O_MTA,
     {EHLO "MAIL FROM:<a@b.test> ENVID=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "x\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"dsn rcpt parameters", O_MTA,
     {EHLO MAILOK
      "RCPT TO:<c@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+40d.test\r\n"},
     "220,250,250 2.1.0,250 2.1.5", NULL,
     "notify=6 orcpt=rfc822;c+40d.test"},
    {"dsn notify never", O_MTA,
     {EHLO MAILOK "RCPT TO:<c@d.test> NOTIFY=never\r\n"},
     "220,250,250 2.1.0,250 2.1.5", NULL, "notify=1"},
    {"dsn notify never with more", O_MTA,
     {EHLO MAILOK "RCPT TO:<c@d.test> NOTIFY=NEVER,DELAY\r\n"},
     "220,250,250 2.1.0,501 5.5.4", NULL, NULL},
    {"dsn notify unknown", O_MTA,
     {EHLO MAILOK "RCPT TO:<c@d.test> NOTIFY=SOMETIMES\r\n"},
     "220,250,250 2.1.0,501 5.5.4", NULL, NULL},
    {"dsn notify twice", O_MTA,
     {EHLO MAILOK "RCPT TO:<c@d.test> NOTIFY=DELAY,DELAY\r\n"},
     "220,250,250 2.1.0,501 5.5.4", NULL, NULL},
    {"dsn bad orcpt", O_MTA,
     {EHLO MAILOK "RCPT TO:<c@d.test> ORCPT=c@d.test\r\n"},
     "220,250,250 2.1.0,501 5.5.4", NULL, NULL},
    {"unknown rcpt parameter", O_MTA,
     {EHLO MAILOK "RCPT TO:<c@d.test> FOO\r\n"},
     "220,250,250 2.1.0,555 5.5.4", NULL, NULL},
    {"dsn not offered", O_BARE, {EHLO "MAIL FROM:<a@b.test> RET=FULL\r\n"},
     "220,250,555 5.5.4", NULL, NULL},
    {"auth parameter", O_MTA, {EHLO "MAIL FROM:<a@b.test> AUTH=<>\r\n"},
     "220,250,250 2.1.0", NULL, "auth=<>"},

    /* DATA (RFC 5321 4.1.1.4, 4.5.2). */
    {"empty message", O_MTA, {TXN "DATA\r\n.\r\n"},
     "220,250,250 2.1.0,250 2.1.5,354,250 2.0.0", NULL,
     "MESSAGE bdat=0 len=0 []"},
    {"dot stuffing undone", O_MTA,
     {TXN "DATA\r\n..hello\r\n...\r\n.x\r\n.\r\n"}, NULL, NULL,
     "[.hello\r\n..\r\nx\r\n]"},
    {"bare LF and CR normalised", O_MTA,
     {TXN "DATA\r\na\nb\rc\r\r\nd\n\re\r\n.\r\n"}, NULL, NULL,
     "[a\r\nb\r\nc\r\n\r\nd\r\n\r\ne\r\n]"},
    {"message refused by the caller", O_MTA,
     {TXN "DATA\r\nREJECT me\r\n.\r\n" MAILOK},
     "220,250,250 2.1.0,250 2.1.5,354,554 5.7.1,250 2.1.0",
     "CONNECT HELO MAIL RCPT MESSAGE RESET MAIL", NULL},
    {"commands pipelined after data", O_MTA,
     {TXN "DATA\r\nx\r\n.\r\nRSET\r\nNOOP\r\n"},
     "220,250,250 2.1.0,250 2.1.5,354,250 2.0.0,250 2.0.0,250 2.0.0", NULL,
     NULL},
    {"two messages", O_MTA,
     {TXN "DATA\r\none\r\n.\r\n" MAILOK RCPTOK "DATA\r\ntwo\r\n.\r\n"},
     "220,250,250 2.1.0,250 2.1.5,354,250 2.0.0,250 2.1.0,250 2.1.5,354,"
     "250 2.0.0",
     "CONNECT HELO MAIL RCPT MESSAGE RESET MAIL RCPT MESSAGE RESET", "[two\r\n]"},
    {"data end needs CRLF before the dot", O_MTA,
     {TXN "DATA\r\nx.\r\n.\r\n"}, NULL, NULL, "[x.\r\n]"},

    /* CHUNKING (RFC 3030). */
    {"bdat chunks", O_MTA, {TXN "BDAT 5\r\nhelloBDAT 6 LAST\r\n world"},
     "220,250,250 2.1.0,250 2.1.5,250 2.0.0,250 2.0.0",
     "CONNECT HELO MAIL RCPT MESSAGE RESET",
     "MESSAGE bdat=1 len=11 [hello world]"},
    {"bdat three chunks", O_MTA,
     {TXN "BDAT 3\r\nabcBDAT 0\r\nBDAT 3 last\r\ndef" MAILOK},
     "220,250,250 2.1.0,250 2.1.5,250 2.0.0,250 2.0.0,250 2.0.0,250 2.1.0",
     NULL, "[abcdef]"},
    {"bdat zero last", O_MTA, {TXN "BDAT 0 LAST\r\n"},
     "220,250,250 2.1.0,250 2.1.5,250 2.0.0", NULL, "bdat=1 len=0 []"},
    {"bdat content untouched", O_MTA,
     {TXN "BDAT 11 LAST\r\na\n.\r\n..\rb\r\n"}, NULL, NULL,
     "[a\n.\r\n..\rb\r\n]"},
    {"bdat without mail", O_MTA, {EHLO "BDAT 4\r\nNOOPNOOP\r\n"},
     "220,250,503 5.5.1,250 2.0.0", NULL, NULL},
    {"bdat without recipients", O_MTA,
     {EHLO MAILOK "RCPT TO:<bad@x.test>\r\nBDAT 3 LAST\r\nabcNOOP\r\n"},
     "220,250,250 2.1.0,550 5.1.1,554 5.5.1,250 2.0.0",
     "CONNECT HELO MAIL RCPT RESET", NULL},
    {"data after bdat", O_MTA, {TXN "BDAT 1\r\nxDATA\r\n"},
     "220,250,250 2.1.0,250 2.1.5,250 2.0.0,503 5.5.1", NULL, NULL},
    {"bdat bad syntax", O_MTA,
     {TXN "BDAT\r\nBDAT x\r\nBDAT 1 FIRST\r\nBDAT -1\r\n"},
     "220,250,250 2.1.0,250 2.1.5,501 5.5.4,501 5.5.4,501 5.5.4,501 5.5.4",
     NULL, NULL},
    {"bdat not offered", O_BARE, {EHLO MAILOK RCPTOK "BDAT 1 LAST\r\n"},
     "220,250,250 2.1.0,250 2.1.5,502 5.5.1", NULL, NULL},

    /* STARTTLS (RFC 3207). */
    {"starttls", O_MSA,
     {EHLO "STARTTLS\r\n", EHLO "QUIT\r\n"},
     "220,250,220 2.0.0,250,221 2.0.0",
     "CONNECT HELO STARTTLS HELO QUIT", NULL},
    {"starttls injection", O_MSA,
     {EHLO "STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<e@x.test>\r\n",
      "MAIL FROM:<a@b.test>\r\n"},
     "220,250,220 2.0.0,503 5.5.1", "CONNECT HELO STARTTLS", NULL},
    {"starttls with parameter", O_MSA, {EHLO "STARTTLS now\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"starttls not offered", O_MTA, {EHLO "STARTTLS\r\n"},
     "220,250,502 5.5.1", NULL, NULL},
    {"starttls twice", O_MSA, {EHLO "STARTTLS\r\n", EHLO "STARTTLS\r\n"},
     "220,250,220 2.0.0,250,503 5.5.1", NULL, NULL},
    {"starttls under implicit TLS", O_SMTPS, {EHLO "STARTTLS\r\n"},
     "220,250,503 5.5.1", NULL, NULL},
    {"starttls in a transaction", O_MTA_TLS, {TXN "STARTTLS\r\n"},
     "220,250,250 2.1.0,250 2.1.5,503 5.5.1", NULL, NULL},
    {"starttls forgets auth", O_MTA_TLS,
     {EHLO "AUTH PLAIN " PLAIN_OK "\r\nSTARTTLS\r\n",
      EHLO "AUTH PLAIN " PLAIN_OK "\r\n"},
     "220,250,235 2.7.0,220 2.0.0,250,235 2.7.0", NULL, NULL},

    /* Submission policy (RFC 6409, RFC 4954 4 and 6). */
    {"msa mail before tls", O_MSA, {EHLO MAILOK}, "220,250,530 5.7.0", NULL,
     NULL},
    {"msa auth before tls", O_MSA, {EHLO "AUTH PLAIN " PLAIN_OK "\r\n"},
     "220,250,538 5.7.11", NULL, NULL},
    {"msa full", O_MSA,
     {EHLO "STARTTLS\r\n",
      EHLO MAILOK "AUTH PLAIN " PLAIN_OK "\r\n" MAILOK RCPTOK
           "DATA\r\nx\r\n.\r\n"},
     "220,250,220 2.0.0,250,530 5.7.0,235 2.7.0,250 2.1.0,250 2.1.5,354,"
     "250 2.0.0",
     NULL, NULL},
    {"smtps", O_SMTPS,
     {EHLO "AUTH PLAIN " PLAIN_OK "\r\n" MAILOK},
     "220,250,235 2.7.0,250 2.1.0", NULL, NULL},

    /* AUTH (RFC 4954). */
    {"auth plain initial", O_MTA, {EHLO "AUTH PLAIN " PLAIN_OK "\r\n"},
     "220,250,235 2.7.0", "CONNECT HELO AUTH",
     "AUTH PLAIN n=1 round=0 r0=" PLAIN_OK},
    {"auth plain exchange", O_MTA, {EHLO "AUTH plain\r\n" PLAIN_OK "\r\n"},
     "220,250,334,235 2.7.0", NULL, NULL},
    {"auth plain wrong", O_MTA, {EHLO "AUTH PLAIN AHVzZXIAeHh4\r\n"},
     "220,250,535 5.7.8", NULL, NULL},
    {"auth plain empty", O_MTA, {EHLO "AUTH PLAIN =\r\n"},
     "220,250,535 5.7.8", NULL, "AUTH PLAIN n=1 round=0 r0=\n"},
    {"auth login", O_MTA, {EHLO "AUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\n"},
     "220,250,334,334,235 2.7.0", NULL,
     "AUTH LOGIN n=2 round=0 r0=dXNlcg== r1=cGFzcw== user=user pass=pass"},
    {"auth login initial", O_MTA, {EHLO "AUTH LOGIN dXNlcg==\r\ncGFzcw==\r\n"},
     "220,250,334,235 2.7.0", NULL, NULL},
    {"auth login with a NUL", O_MTA,
     {EHLO "AUTH LOGIN\r\ndXMAcg==\r\ncGFzcw==\r\n"},
     "220,250,334,334,501 5.5.2", "CONNECT HELO", NULL},
    {"auth cancel", O_MTA, {EHLO "AUTH LOGIN\r\n*\r\nNOOP\r\n"},
     "220,250,334,501 5.7.0,250 2.0.0", "CONNECT HELO", NULL},
    {"auth cancel plain", O_MTA, {EHLO "AUTH PLAIN\r\n*\r\n"},
     "220,250,334,501 5.7.0", NULL, NULL},
    {"auth bad base64", O_MTA, {EHLO "AUTH PLAIN abc\r\n"},
     "220,250,501 5.5.2", NULL, NULL},
    {"auth bad base64 response", O_MTA, {EHLO "AUTH PLAIN\r\na=bc\r\n"},
     "220,250,334,501 5.5.2", NULL, NULL},
    /* RFC 4648 3.5: "QR==" has unused bits set; only "QQ==" is "A". */
    {"auth non-canonical base64", O_MTA, {EHLO "AUTH PLAIN QR==\r\n"},
     "220,250,501 5.5.2", NULL, NULL},
    {"auth unknown mechanism", O_MTA, {EHLO "AUTH CRAM-MD5\r\n"},
     "220,250,504 5.5.4", NULL, NULL},
    {"auth without mechanism", O_MTA, {EHLO "AUTH\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"auth too many words", O_MTA, {EHLO "AUTH PLAIN a b\r\n"},
     "220,250,501 5.5.4", NULL, NULL},
    {"auth twice", O_MTA,
     {EHLO "AUTH PLAIN " PLAIN_OK "\r\nAUTH PLAIN " PLAIN_OK "\r\n"},
     "220,250,235 2.7.0,503 5.5.1", NULL, NULL},
    {"auth in a transaction", O_MTA, {EHLO MAILOK "AUTH PLAIN " PLAIN_OK "\r\n"},
     "220,250,250 2.1.0,503 5.5.1", NULL, NULL},
    {"auth not offered", O_BARE, {EHLO "AUTH PLAIN " PLAIN_OK "\r\n"},
     "220,250,502 5.5.1", NULL, NULL},
    {"auth after helo", O_MTA, {"HELO x.test\r\nAUTH PLAIN " PLAIN_OK "\r\n"},
     "220,250,503 5.5.1", NULL, NULL},
    {"auth driven by the caller", O_MTA, {EHLO "AUTH X-TEST\r\nb2s=\r\n"},
     "220,250,334,235 2.7.0", "CONNECT HELO AUTH AUTH",
     "AUTH X-TEST n=1 round=1 r0=b2s="},
    {"auth driven by the caller, cancelled", O_MTA,
     {EHLO "AUTH X-TEST eA==\r\n*\r\n"}, "220,250,334,501 5.7.0",
     "CONNECT HELO AUTH", "AUTH X-TEST n=1 round=0 r0=eA=="},

    /* Greetings (RFC 5321 3.1) and the caller's 421 (3.8). */
    {"caller 421 on rcpt", O_MTA,
     {EHLO MAILOK "RCPT TO:<close@d.test>\r\nNOOP\r\n"},
     "220,250,250 2.1.0,421 4.3.2", "CONNECT HELO MAIL RCPT RESET CLOSE", NULL},
};

START_TEST(test_script)
{
    const struct script *s = &scripts[_i];
    struct run r;

    run_script(&r, s->kind, s->in, 0);
    if (s->replies) {
        want_summary(s->label, &r, s->replies);
    } else {
        buf_t sum = BUF_INIT; /* still checks the reply lines */

        summary(&r.out, &sum);
        buf_free(&sum);
    }
    if (s->events)
        want_events(s->label, &r, s->events);
    if (s->detail)
        want_detail(s->label, &r, s->detail);
    run_free(&r);
}
END_TEST

/* Every script gives the same bytes and events fed whole, byte by byte and
 * in slices of 7 (RFC 2920: where the packets split must not matter). */
START_TEST(test_script_split)
{
    const struct script *s = &scripts[_i];
    struct run whole, bytes, sevens;

    run_script(&whole, s->kind, s->in, 0);
    run_script(&bytes, s->kind, s->in, 1);
    run_script(&sevens, s->kind, s->in, 7);
    ck_assert_msg(whole.out.len == bytes.out.len &&
                      memcmp(whole.out.data, bytes.out.data, whole.out.len) ==
                          0,
                  "%s: byte by byte differs:\n%s\n---\n%s", s->label,
                  whole.out.data, bytes.out.data);
    ck_assert_msg(whole.out.len == sevens.out.len &&
                      memcmp(whole.out.data, sevens.out.data, whole.out.len) ==
                          0,
                  "%s: slices of 7 differ", s->label);
    ck_assert_msg(strcmp(whole.detail.data ? whole.detail.data : "",
                         bytes.detail.data ? bytes.detail.data : "") == 0,
                  "%s: events differ byte by byte", s->label);
    run_free(&whole);
    run_free(&bytes);
    run_free(&sevens);
}
END_TEST

/* Builds a string of n copies of c (the caller frees it). */
static char *
repeat(char c, size_t n)
{
    char *s = malloc(n + 1);

    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void
run_one(struct run *r, int kind, const char *in)
{
    const char *segs[] = {in, NULL};

    run_script(r, kind, segs, 0);
}

/*
 * SMTP smuggling: only CRLF "." CRLF ends DATA. Each of these, put between
 * the text and a smuggled transaction, must leave exactly one message that
 * holds the smuggled commands as text.
 */
static const struct smuggle_row {
    const char *label, *end, *stored;
} smuggle_rows[] = {
    {"LF.LF", "\n.\n", "\r\n.\r\n"},
    {"LF.CRLF", "\n.\r\n", "\r\n.\r\n"},
    {"CR.CRLF", "\r.\r\n", "\r\n.\r\n"},
    {"CRLF.CR", "\r\n.\r", "\r\n\r\n"},
    {"CRLF.LF", "\r\n.\n", "\r\n\r\n"},
    {"CR.CR", "\r.\r", "\r\n.\r\n"},
    {"LF.CR", "\n.\r", "\r\n.\r\n"},
    {"CRLF.NUL CRLF", "\r\n.\0\r\n", "\r\n"},
};

START_TEST(test_smuggling)
{
    const struct smuggle_row *row = &smuggle_rows[_i];
    static const char head[] = EHLO MAILOK RCPTOK "DATA\r\nhello";
    static const char tail[] = "MAIL FROM:<x@y.test>\r\nRCPT TO:<v@w.test>\r\n"
                               "DATA\r\nsmuggled\r\n.\r\n";
    size_t elen = strcmp(row->label, "CRLF.NUL CRLF") == 0 ? 5
                                                           : strlen(row->end);
    buf_t in = BUF_INIT, want = BUF_INIT;

    buf_adds(&in, head);
    buf_add(&in, row->end, elen);
    buf_adds(&in, tail);
    for (size_t chunk = 0; chunk <= 1; chunk++) {
        struct run r;

        run_start(&r, O_MTA, 0);
        feed(&r, in.data, in.len, chunk);
        drain(&r);
        want_events(row->label, &r, "CONNECT HELO MAIL RCPT MESSAGE RESET");
        want_summary(row->label, &r,
                     "220,250,250 2.1.0,250 2.1.5,354,250 2.0.0");
        buf_reset(&want);
        buf_adds(&want, "[hello");
        if (strcmp(row->label, "CRLF.NUL CRLF") == 0)
            buf_add(&want, "\r\n\0\r\n", 5);
        else
            buf_adds(&want, row->stored);
        buf_adds(&want, "MAIL FROM:<x@y.test>\r\nRCPT TO:<v@w.test>\r\n"
                        "DATA\r\nsmuggled\r\n]");
        ck_assert_msg(r.detail.len >= want.len &&
                          memmem(r.detail.data, r.detail.len, want.data,
                                 want.len) != NULL,
                      "%s: message not as wanted:\n%s", row->label,
                      r.detail.data);
        run_free(&r);
    }
    buf_free(&in);
    buf_free(&want);
}
END_TEST

/* The brief's own example: one message, holding the smuggled text. */
START_TEST(test_smuggling_example)
{
    struct run r;

    run_one(&r, O_MTA,
            "MAIL FROM:<a@b.test>\r\n" /* before EHLO: refused */
            EHLO MAILOK RCPTOK "DATA\r\nhello\n.\nMAIL FROM:<x@y>\r\n"
            "RCPT TO:<z@w.test>\r\nDATA\r\nevil\r\n.\r\n");
    want_events("example", &r, "CONNECT HELO MAIL RCPT MESSAGE RESET");
    want_detail("example", &r, "[hello\r\n.\r\nMAIL FROM:<x@y>\r\n"
                               "RCPT TO:<z@w.test>\r\nDATA\r\nevil\r\n]");
    run_free(&r);
}
END_TEST

/* The DATA rules one octet at a time, as the engine's scanner once ran
 * them (before it copied whole lines): the message the data makes, the
 * longest line with its CRLF, and the octets up to and including the end
 * (0 when it never ends). */
static size_t
ref_data(const char *in, size_t n, buf_t *out, size_t *longest)
{
    enum { R_BOL, R_TEXT, R_CR, R_DOT, R_DOTCR } st = R_BOL;
    size_t line = 0, i = 0;

    *longest = 0;
    while (i < n) {
        char c = in[i];

        switch (st) {
        case R_TEXT:
            if (c == '\r') {
                st = R_CR;
            } else if (c == '\n') {
                *longest = line + 2 > *longest ? line + 2 : *longest;
                line = 0;
                buf_add(out, "\r\n", 2);
            } else {
                buf_addc(out, c);
                line++;
            }
            i++;
            break;
        case R_BOL:
            if (c == '.') {
                st = R_DOT;
                line = 1;
                i++;
            } else {
                st = R_TEXT;
            }
            break;
        case R_CR:
            *longest = line + 2 > *longest ? line + 2 : *longest;
            line = 0;
            buf_add(out, "\r\n", 2);
            if (c == '\n') {
                st = R_BOL;
                i++;
            } else {
                st = R_TEXT;
            }
            break;
        case R_DOT:
            if (c == '\r') {
                st = R_DOTCR;
                i++;
            } else {
                st = R_TEXT;
            }
            break;
        case R_DOTCR:
            if (c == '\n')
                return i + 1;
            st = R_CR;
            break;
        }
    }
    return 0;
}

/* Random DATA text of dots, CRs, LFs, NULs and letters, fed whole and in
 * random slices: the engine stores exactly what the rules above give, and
 * reads the commands after the end as commands. */
START_TEST(test_data_model)
{
    static const char alphabet[] = "aaaab..\r\r\n\n\n";
    uint32_t seed = 12345u + (uint32_t)_i * 7919u;
    buf_t in = BUF_INIT, want = BUF_INIT, text = BUF_INIT;

    for (int round = 0; round < 200; round++) {
        size_t n, used, longest;
        struct run r;

        buf_reset(&text);
        seed = seed * 1103515245u + 12345u;
        n = (seed >> 16) % 300;
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            if ((seed >> 16) % 97 == 0)
                buf_addc(&text, '\0');
            else
                buf_addc(&text, alphabet[(seed >> 16) % (sizeof(alphabet) - 1)]);
        }
        buf_adds(&text, "\r\n.\r\n");
        buf_reset(&want);
        used = ref_data(text.data, text.len, &want, &longest);
        ck_assert_uint_gt(used, 0);
        buf_reset(&in);
        buf_adds(&in, TXN "DATA\r\n");
        buf_add(&in, text.data, used);
        buf_adds(&in, "NOOP\r\n");
        for (int mode = 0; mode < 2; mode++) {
            size_t chunk = mode == 0 ? 0 : 1 + (seed >> 20) % 17;
            buf_t detail = BUF_INIT;

            run_start(&r, O_MTA, 0);
            feed(&r, in.data, in.len, chunk);
            drain(&r);
            want_summary("model", &r,
                         "220,250,250 2.1.0,250 2.1.5,354,250 2.0.0,250 2.0.0");
            buf_printf(&detail, "MESSAGE bdat=0 len=%zu [", want.len);
            buf_add(&detail, want.data, want.len);
            buf_adds(&detail, "]\n");
            ck_assert_msg(memmem(r.detail.data, r.detail.len, detail.data,
                                 detail.len) != NULL,
                          "seed %u round %d chunk %zu: message differs", seed,
                          round, chunk);
            buf_free(&detail);
            run_free(&r);
        }
    }
    buf_free(&in);
    buf_free(&want);
    buf_free(&text);
}
END_TEST

/* SIZE= sizes the message buffer once; a message over its word still
 * fits, by growing. */
static void
size_hint_start(struct run *r)
{
    struct smtp_server_opts o = opts_for(O_MTA);

    o.max_message = 1 << 20;
    memset(r, 0, sizeof(*r));
    r->greeting = 220;
    r->srv = smtp_server_new(&o);
    drain(r);
    feed(r, EHLO, strlen(EHLO), 0);
}

START_TEST(test_data_size_hint)
{
    static const char *const mail[] = {
        "MAIL FROM:<a@b.test> SIZE=200000\r\n" RCPTOK "DATA\r\n",
        "MAIL FROM:<a@b.test> SIZE=1000\r\n" RCPTOK "DATA\r\n",
        "MAIL FROM:<a@b.test>\r\n" RCPTOK "DATA\r\n",
    };
    char *line = repeat('s', 98);
    buf_t in = BUF_INIT;
    struct run r;
    size_t cap;

    for (int i = 0; i < 2000; i++) /* 200000 octets */
        buf_printf(&in, "%s\r\n", line);
    size_hint_start(&r);
    for (int round = 0; round < 2; round++) {
        /* Declared and kept: one growth, to the size declared and a
         * little, never past it; the second time too. */
        feed(&r, mail[0], strlen(mail[0]), 0);
        feed(&r, in.data, 5000, 0);
        cap = r.srv->msg_cap;
        ck_assert_uint_ge(cap, 200000);
        ck_assert_uint_lt(cap, 210000);
        feed(&r, in.data + 5000, in.len - 5000, 0);
        ck_assert_uint_eq(r.srv->msg_cap, cap);
        feed(&r, ".\r\n", 3, 0);
        want_detail("size hint", &r, "MESSAGE bdat=0 len=200000 [");
    }
    /* Declared too small, or not at all: grows as it comes. */
    for (int k = 1; k < 3; k++) {
        buf_reset(&r.detail);
        feed(&r, mail[k], strlen(mail[k]), 0);
        feed(&r, in.data, in.len, 1000);
        ck_assert_uint_ge(r.srv->msg_cap, 200000);
        feed(&r, ".\r\n", 3, 0);
        want_detail("size hint off", &r, "MESSAGE bdat=0 len=200000 [");
    }
    want_events("size hint", &r,
                "CONNECT HELO MAIL RCPT MESSAGE RESET MAIL RCPT MESSAGE RESET "
                "MAIL RCPT MESSAGE RESET MAIL RCPT MESSAGE RESET");
    run_free(&r);
    free(line);
    buf_free(&in);
}
END_TEST

/* Feeds in to a session with head room (smtp_server_message_room()),
 * answering every decision with its 2xx; the message's buffer is taken
 * (into *taken, *len octets) and must hold the head room, then the very
 * octets message.data pointed at. */
static void
room_feed(smtp_server_t *srv, const char *in, size_t head, char **taken,
          size_t *len, buf_t *out)
{
    size_t pos = 0, n = strlen(in), olen;
    const struct smtp_event *ev;
    const char *o;

    while (pos < n) {
        size_t took = smtp_server_input(srv, in + pos, n - pos);

        pos += took;
        while ((ev = smtp_server_next(srv))->type != SMTP_EV_NONE) {
            if (ev->type == SMTP_EV_MESSAGE) {
                const char *data = ev->message.data;
                size_t dlen = ev->message.len;

                *taken = smtp_server_message_take(srv, len);
                ck_assert_ptr_nonnull(*taken);
                ck_assert_uint_eq(*len, head + dlen);
                ck_assert_ptr_eq(data, *taken + head); /* not copied */
                smtp_server_reply(srv, 250, "2.0.0", "OK");
            } else if (ev->type == SMTP_EV_CONNECT) {
                smtp_server_reply(srv, 220, NULL, "ESMTP test");
            } else if (ev->type == SMTP_EV_MAIL || ev->type == SMTP_EV_RCPT) {
                smtp_server_reply(srv, 250, NULL, NULL);
            }
        }
        o = smtp_server_output(srv, &olen);
        buf_add(out, o, olen);
        smtp_server_output_done(srv, olen);
        ck_assert_msg(took > 0 || pos == n, "engine stalls at %zu", pos);
    }
}

/* Room for the caller's header in front of the message: the body is
 * unstuffed after it, message.data and len leave it out, the buffer is
 * handed over whole, and max_message counts the message alone. */
START_TEST(test_message_room)
{
    struct smtp_server_opts o = opts_for(O_MTA); /* max_message 4096 */
    char *line = repeat('r', 98), *taken = NULL;
    buf_t in = BUF_INIT, out = BUF_INIT;
    smtp_server_t *srv = smtp_server_new(&o);
    size_t len = 0;

    smtp_server_message_room(srv, 10, 0);
    room_feed(srv, TXN "DATA\r\nhello\r\n..x\r\n.\r\n", 10, &taken, &len,
              &out);
    ck_assert_uint_eq(len, 10 + 11);
    ck_assert_int_eq(memcmp(taken + 10, "hello\r\n.x\r\n", 11), 0);
    free(taken);
    taken = NULL;

    /* 4000 octets and 100 of room: under the limit of 4096. */
    smtp_server_message_room(srv, 100, 0);
    buf_adds(&in, MAILOK RCPTOK "DATA\r\n");
    for (int i = 0; i < 40; i++)
        buf_printf(&in, "%s\r\n", line);
    buf_adds(&in, ".\r\n");
    room_feed(srv, in.data, 100, &taken, &len, &out);
    ck_assert_uint_eq(len, 4100);
    ck_assert_int_eq(memcmp(taken + 100, line, 98), 0);
    free(taken);
    taken = NULL;

    /* BDAT: the chunks after the room. */
    smtp_server_message_room(srv, 7, 0);
    room_feed(srv, MAILOK RCPTOK "BDAT 5\r\nabcdeBDAT 3 LAST\r\nfgh", 7,
              &taken, &len, &out);
    ck_assert_uint_eq(len, 15);
    ck_assert_int_eq(memcmp(taken + 7, "abcdefgh", 8), 0);
    free(taken);
    ck_assert_msg(strstr(out.data, "552") == NULL, "refused: %s", out.data);
    smtp_server_destroy(&srv);

    /* The caller's guess sizes the buffer once when MAIL has no SIZE=. */
    o.max_message = 1 << 20;
    srv = smtp_server_new(&o);
    smtp_server_message_room(srv, 0, 200000);
    buf_reset(&in);
    buf_adds(&in, TXN "DATA\r\n");
    for (int i = 0; i < 50; i++)
        buf_printf(&in, "%s\r\n", line);
    taken = NULL;
    room_feed(srv, in.data, 0, &taken, &len, &out);
    ck_assert_ptr_null(taken);
    ck_assert_uint_ge(srv->msg_cap, 200000);
    ck_assert_uint_lt(srv->msg_cap, 210000);
    smtp_server_destroy(&srv);
    buf_free(&in);
    buf_free(&out);
    free(line);
}
END_TEST

/* What EHLO offers (RFC 5321 4.1.1.1 and each extension's RFC). */
static const struct ehlo_row {
    const char *label;
    int kind;
    const char *in[3];
    const char *has, *lacks;
} ehlo_rows[] = {
    {"mta", O_MTA, {EHLO},
     "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 4096\r\n250-8BITMIME\r\n"
     "250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n"
     "250 AUTH PLAIN LOGIN X-TEST\r\n",
     "STARTTLS"},
    {"msa before tls", O_MSA, {EHLO}, "250-DSN\r\n250 STARTTLS\r\n", "AUTH"},
    {"msa after tls", O_MSA, {EHLO "STARTTLS\r\n", EHLO},
     "250-DSN\r\n250 AUTH PLAIN LOGIN X-TEST\r\n", NULL},
    {"smtps", O_SMTPS, {EHLO}, "250 AUTH PLAIN LOGIN X-TEST\r\n", "STARTTLS"},
    {"bare", O_BARE, {EHLO}, "250-mx.test\r\n250 ENHANCEDSTATUSCODES\r\n",
     "SIZE"},
    {"helo", O_MTA, {"HELO x.test\r\n"}, "250 mx.test\r\n", "PIPELINING"},
    {"no auth once authenticated", O_MTA,
     {EHLO "AUTH PLAIN " PLAIN_OK "\r\n" EHLO}, "250 DSN\r\n", NULL},
};

START_TEST(test_ehlo)
{
    const struct ehlo_row *row = &ehlo_rows[_i];
    struct run r;

    run_script(&r, row->kind, row->in, 0);
    want_output(row->label, &r, row->has);
    if (row->lacks)
        want_no_output(row->label, &r, row->lacks);
    run_free(&r);
}
END_TEST

/* Codes from other processes are checked before they reach the engine:
 * smtp_server_reply_code_ok() says which it would abort on. */
START_TEST(test_reply_code_ok)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);
    const struct smtp_event *ev;

    ck_assert(!smtp_server_reply_code_ok(srv, 250)); /* nothing pending */
    ev = smtp_server_next(srv);
    ck_assert_int_eq(ev->type, SMTP_EV_CONNECT);
    ck_assert(smtp_server_reply_code_ok(srv, 220));
    ck_assert(smtp_server_reply_code_ok(srv, 451));
    ck_assert(smtp_server_reply_code_ok(srv, 599));
    ck_assert(!smtp_server_reply_code_ok(srv, 0));
    ck_assert(!smtp_server_reply_code_ok(srv, 199));
    ck_assert(!smtp_server_reply_code_ok(srv, 354));
    ck_assert(!smtp_server_reply_code_ok(srv, 334)); /* not AUTH */
    ck_assert(!smtp_server_reply_code_ok(srv, 600));
    ck_assert(!smtp_server_reply_code_ok(srv, -250));
    smtp_server_reply(srv, 220, NULL, NULL);
    ck_assert(!smtp_server_reply_code_ok(srv, 250));
    smtp_server_destroy(&srv);
}
END_TEST

START_TEST(test_greeting)
{
    struct run r;

    run_start(&r, O_MTA, 0);
    want_output("220", &r, "220 mx.test ESMTP test\r\n");
    run_free(&r);

    /* 554: only QUIT (RFC 5321 3.1). */
    run_start(&r, O_MTA, 554);
    feed(&r, EHLO MAILOK "QUIT\r\n", strlen(EHLO MAILOK "QUIT\r\n"), 0);
    want_summary("554", &r, "554,503 5.5.1,503 5.5.1,221 2.0.0");
    want_output("554", &r, "554 mx.test ESMTP test\r\n");
    want_events("554", &r, "CONNECT QUIT");
    run_free(&r);

    /* 421: closed at once. */
    run_start(&r, O_MTA, 421);
    feed(&r, EHLO, strlen(EHLO), 0);
    want_summary("421", &r, "421");
    want_events("421", &r, "CONNECT CLOSE");
    ck_assert(smtp_server_done(r.srv));
    run_free(&r);
}
END_TEST

START_TEST(test_max_rcpts)
{
    buf_t in = BUF_INIT, want = BUF_INIT;
    struct run r;

    buf_adds(&in, EHLO MAILOK);
    buf_adds(&want, "220,250,250 2.1.0");
    for (int i = 0; i < 102; i++) {
        buf_printf(&in, "RCPT TO:<r%d@d.test>\r\n", i);
        buf_adds(&want, i < 100 ? ",250 2.1.5" : ",452 4.5.3");
    }
    buf_adds(&in, "DATA\r\nx\r\n.\r\n" MAILOK);
    buf_adds(&want, ",354,250 2.0.0,250 2.1.0");
    run_one(&r, O_MTA, in.data);
    want_summary("max_rcpts", &r, want.data);
    /* Not counted as errors: the session went on past 20 of them. */
    ck_assert(!smtp_server_done(r.srv));
    run_free(&r);
    buf_free(&in);
    buf_free(&want);
}
END_TEST

START_TEST(test_max_errors)
{
    buf_t in = BUF_INIT, want = BUF_INIT;
    struct run r;

    buf_adds(&want, "220");
    for (int i = 0; i < 25; i++)
        buf_adds(&in, "BOGUS\r\n");
    for (int i = 0; i < 20; i++)
        buf_adds(&want, ",500 5.5.2");
    buf_adds(&want, ",421 4.7.0");
    run_one(&r, O_MTA, in.data);
    want_summary("max_errors", &r, want.data);
    want_events("max_errors", &r, "CONNECT CLOSE");
    want_output("max_errors", &r, "421 4.7.0 mx.test Error: too many errors");
    ck_assert(smtp_server_done(r.srv));
    /* Input after the end is taken and dropped. */
    ck_assert_uint_eq(smtp_server_input(r.srv, "NOOP\r\n", 6), 6);
    ck_assert_int_eq(smtp_server_next(r.srv)->type, SMTP_EV_NONE);
    run_free(&r);

    /* The caller's 5xx refusals count too (a dictionary attack). */
    buf_reset(&in);
    buf_adds(&in, EHLO MAILOK);
    for (int i = 0; i < 25; i++)
        buf_adds(&in, "RCPT TO:<bad@d.test>\r\n");
    run_one(&r, O_MTA, in.data);
    want_output("rcpt errors", &r, "421 4.7.0");
    want_events("rcpt errors",
                &r, "CONNECT HELO MAIL RCPT RCPT RCPT RCPT RCPT RCPT RCPT RCPT "
                    "RCPT RCPT RCPT RCPT RCPT RCPT RCPT RCPT RCPT RCPT RCPT "
                    "RCPT RESET CLOSE");
    run_free(&r);
    buf_free(&in);
    buf_free(&want);
}
END_TEST

/* RFC 5321 4.5.3.1.4: 512 with CRLF; a longer line is refused and skipped,
 * the session goes on. */
START_TEST(test_line_limit)
{
    char *arg = repeat('x', 512 - 7);
    buf_t in = BUF_INIT;
    struct run r;

    /* "NOOP " + 505 + CRLF = 512: taken. */
    buf_printf(&in, "NOOP %s\r\n", arg);
    /* 513: refused. */
    buf_printf(&in, "NOOP x%s\r\nNOOP\r\n", arg);
    run_one(&r, O_MTA, in.data);
    want_summary("line limit", &r, "220,250 2.0.0,500 5.5.6,250 2.0.0");
    run_free(&r);

    /* Byte by byte the same. */
    run_start(&r, O_MTA, 0);
    feed(&r, in.data, in.len, 1);
    want_summary("line limit bytes", &r, "220,250 2.0.0,500 5.5.6,250 2.0.0");
    run_free(&r);
    free(arg);
    buf_free(&in);
}
END_TEST

/* A client that never ends its line is cut off. */
START_TEST(test_line_flood)
{
    char *junk = repeat('x', 100000);
    struct run r;

    run_start(&r, O_MTA, 0);
    feed(&r, junk, 100000, 1000);
    want_summary("flood", &r, "220,421 4.7.0");
    want_events("flood", &r, "CONNECT CLOSE");
    run_free(&r);
    free(junk);
}
END_TEST

/* RFC 4954 4: AUTH lines of 12288 octets are taken. */
START_TEST(test_auth_line)
{
    char *b64 = repeat('A', 12288 - 12);
    buf_t in = BUF_INIT;
    struct run r;

    /* "AUTH X-TEST " (12) + 12276 = 12288, then CRLF. */
    buf_printf(&in, EHLO "AUTH X-TEST %s\r\n*\r\n", b64);
    run_one(&r, O_MTA, in.data);
    want_summary("auth line", &r, "220,250,334,501 5.7.0");
    run_free(&r);
    /* A response line of 12288 in the exchange. */
    buf_reset(&in);
    buf_printf(&in, EHLO "AUTH PLAIN\r\n%sAAAAAAAAAAAA\r\n", b64);
    run_one(&r, O_MTA, in.data);
    want_summary("auth response", &r, "220,250,334,535 5.7.8");
    run_free(&r);
    /* Longer: refused as too long, and the exchange ends. */
    buf_reset(&in);
    buf_printf(&in, EHLO "AUTH PLAIN\r\n%sAAAAAAAAAAAAAAAA\r\nNOOP\r\n",
               b64);
    run_one(&r, O_MTA, in.data);
    want_summary("auth response too long", &r, "220,250,334,500 5.5.6,250 2.0.0");
    run_free(&r);
    /* Other commands keep their 512. */
    buf_reset(&in);
    buf_printf(&in, "NOOP %s\r\n", b64);
    run_one(&r, O_MTA, in.data);
    want_summary("noop", &r, "220,500 5.5.6");
    run_free(&r);
    free(b64);
    buf_free(&in);
}
END_TEST

/* RFC 5321 4.5.3.1.6: text lines of 1000 with CRLF; longer ones get the
 * message refused at its end, and the session goes on. */
START_TEST(test_text_line_limit)
{
    char *line = repeat('y', 998);
    buf_t in = BUF_INIT;
    struct run r;

    buf_printf(&in, TXN "DATA\r\n%s\r\n.\r\n", line);
    buf_printf(&in, MAILOK RCPTOK "DATA\r\n%sy\r\nmore\r\n.\r\n" MAILOK,
               line);
    run_one(&r, O_MTA, in.data);
    want_summary("text line", &r,
                 "220,250,250 2.1.0,250 2.1.5,354,250 2.0.0,250 2.1.0,"
                 "250 2.1.5,354,554 5.6.0,250 2.1.0");
    want_output("text line", &r, "1000 octets");
    want_events("text line", &r,
                "CONNECT HELO MAIL RCPT MESSAGE RESET MAIL RCPT RESET MAIL");
    ck_assert_msg(smtp_server_refused(r.srv, 554) == 1 &&
                      smtp_server_refused(r.srv, 552) == 0,
                  "text line: refused 554 %u, 552 %u, want 1, 0",
                  smtp_server_refused(r.srv, 554),
                  smtp_server_refused(r.srv, 552));
    run_free(&r);
    /* A stuffed dot counts: it was sent. */
    buf_reset(&in);
    buf_printf(&in, TXN "DATA\r\n..%s\r\n.\r\n", line);
    run_one(&r, O_MTA, in.data);
    want_summary("stuffed", &r,
                 "220,250,250 2.1.0,250 2.1.5,354,554 5.6.0");
    run_free(&r);
    free(line);
    buf_free(&in);
}
END_TEST

/* Over max_message: read to the end, refused with 552 5.3.4, no event. */
START_TEST(test_message_limit)
{
    char *line = repeat('z', 98);
    buf_t in = BUF_INIT;
    struct run r;

    buf_adds(&in, TXN "DATA\r\n");
    for (int i = 0; i < 41; i++) /* 41 x 100 = 4100 > 4096 */
        buf_printf(&in, "%s\r\n", line);
    buf_adds(&in, ".\r\n" MAILOK RCPTOK "DATA\r\n");
    for (int i = 0; i < 40; i++) /* 4000: fits */
        buf_printf(&in, "%s\r\n", line);
    buf_adds(&in, ".\r\n");
    run_one(&r, O_MTA, in.data);
    want_summary("size", &r,
                 "220,250,250 2.1.0,250 2.1.5,354,552 5.3.4,250 2.1.0,"
                 "250 2.1.5,354,250 2.0.0");
    want_events("size", &r,
                "CONNECT HELO MAIL RCPT RESET MAIL RCPT MESSAGE RESET");
    want_detail("size", &r, "MESSAGE bdat=0 len=4000 [");
    ck_assert_msg(smtp_server_refused(r.srv, 552) == 1 &&
                      smtp_server_refused(r.srv, 554) == 0 &&
                      smtp_server_refused(r.srv, 250) == 0,
                  "size: refused 552 %u, 554 %u, want 1, 0",
                  smtp_server_refused(r.srv, 552),
                  smtp_server_refused(r.srv, 554));
    run_free(&r);

    /* A long flood of text inside DATA is read on, not kept. */
    run_start(&r, O_MTA, 0);
    feed(&r, TXN "DATA\r\n", strlen(TXN "DATA\r\n"), 0);
    for (int i = 0; i < 2000; i++)
        feed(&r, line, 98, 0);
    feed(&r, "\r\n.\r\n", 5, 0);
    drain(&r);
    want_summary("flood in data", &r,
                 "220,250,250 2.1.0,250 2.1.5,354,552 5.3.4");
    run_free(&r);
    free(line);
    buf_free(&in);
}
END_TEST

START_TEST(test_bdat_limit)
{
    char *chunk = repeat('b', 3000);
    buf_t in = BUF_INIT;
    struct run r;

    /* 3000 + 3000 > 4096: the second chunk is refused once read. */
    buf_printf(&in, TXN "BDAT 3000\r\n%sBDAT 3000\r\n%s", chunk, chunk);
    /* Later chunks of the failed transaction: 503, their octets skipped. */
    buf_printf(&in, "BDAT 9 LAST\r\nQUIT\r\nxyzNOOP\r\n");
    run_one(&r, O_MTA, in.data);
    want_summary("bdat size", &r,
                 "220,250,250 2.1.0,250 2.1.5,250 2.0.0,552 5.3.4,503 5.5.1,"
                 "250 2.0.0");
    want_events("bdat size", &r, "CONNECT HELO MAIL RCPT RESET");
    ck_assert_msg(smtp_server_refused(r.srv, 552) == 1,
                  "bdat size: refused 552 %u, want 1",
                  smtp_server_refused(r.srv, 552));
    run_free(&r);

    /* A declared size far beyond the limit is skipped, not kept. */
    run_start(&r, O_MTA, 0);
    feed(&r, TXN "BDAT 1000000 LAST\r\n", strlen(TXN "BDAT 1000000 LAST\r\n"),
         0);
    for (int i = 0; i < 333; i++)
        feed(&r, chunk, 3000, 0);
    feed(&r, chunk, 1000, 0);
    feed(&r, "NOOP\r\n", 6, 0);
    drain(&r);
    want_summary("bdat huge", &r,
                 "220,250,250 2.1.0,250 2.1.5,552 5.3.4,250 2.0.0");
    run_free(&r);
    free(chunk);
    buf_free(&in);
}
END_TEST

/* A NUL in a command line is refused; in DATA it is text. */
START_TEST(test_nul)
{
    static const char in[] = "NOOP a\0b\r\n" TXN "DATA\r\na\0b\r\n.\r\n";
    struct run r;

    run_start(&r, O_MTA, 0);
    feed(&r, in, sizeof(in) - 1, 0);
    drain(&r);
    want_summary("nul", &r, "220,500 5.5.2,250,250 2.1.0,250 2.1.5,354,"
                            "250 2.0.0");
    ck_assert(memmem(r.detail.data, r.detail.len, "[a\0b\r\n]", 7) != NULL);
    run_free(&r);
}
END_TEST

/* While a decision is pending the engine takes input only until its
 * buffer is full, then takes the rest once answered. */
START_TEST(test_backpressure_decision)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);
    const struct smtp_event *ev;
    buf_t in = BUF_INIT;
    size_t took, total = 0, rounds = 0, n;

    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_CONNECT);
    for (int i = 0; i < 20000; i++)
        buf_adds(&in, "NOOP\r\n");
    took = smtp_server_input(srv, in.data, in.len);
    ck_assert_uint_gt(took, 0);
    ck_assert_uint_lt(took, in.len);
    ck_assert_uint_eq(smtp_server_input(srv, in.data + took, in.len - took), 0);
    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_NONE);
    smtp_server_reply(srv, 220, NULL, NULL);
    total = took;
    while (total < in.len) {
        while ((ev = smtp_server_next(srv))->type != SMTP_EV_NONE)
            ;
        smtp_server_output(srv, &n);
        smtp_server_output_done(srv, n);
        total += smtp_server_input(srv, in.data + total, in.len - total);
        ck_assert_uint_lt(++rounds, 10000);
    }
    while (smtp_server_next(srv)->type != SMTP_EV_NONE)
        ;
    smtp_server_destroy(&srv);
    buf_free(&in);
}
END_TEST

/* The input limit is the same whatever the buffer's size: the longest
 * line (an AUTH line) and 4096 more, taken while a decision waits. */
START_TEST(test_backpressure_exact)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);
    char *in = repeat('x', 40000);

    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_CONNECT);
    ck_assert_uint_eq(smtp_server_input(srv, in, 100), 100);
    ck_assert_uint_eq(smtp_server_input(srv, in, 40000),
                      SMTP_AUTH_LINE_MAX + 2 + 4096 - 100);
    ck_assert_uint_eq(smtp_server_input(srv, in, 1), 0);
    smtp_server_destroy(&srv);
    free(in);
}
END_TEST

/* An idle session keeps small buffers: they grow for a long AUTH line or
 * a burst of pipelined commands, and shrink back once it is handled. */
START_TEST(test_buffers)
{
    char *b64 = repeat('A', 12288 - 12);
    buf_t in = BUF_INIT;
    struct run r;
    size_t n;
    int noops;

    run_start(&r, O_MTA, 0);
    ck_assert_uint_eq(r.srv->in_cap, IN_START);
    ck_assert_uint_eq(r.srv->line_cap, LINE_START);
    feed(&r, EHLO, strlen(EHLO), 0);
    ck_assert_uint_eq(r.srv->in_cap, IN_START);
    ck_assert_uint_eq(r.srv->line_cap, LINE_START);
    ck_assert_uint_le(r.srv->out.cap, OUT_KEEP);

    /* A 12288-octet AUTH line needs both at their largest, then not. */
    buf_printf(&in, "AUTH X-TEST %s\r\n", b64);
    feed(&r, in.data, in.len - 2, 1000);
    ck_assert_uint_gt(r.srv->in_cap, in.len - 2);
    feed(&r, "\r\n", 2, 0);
    ck_assert_uint_eq(r.srv->in_cap, IN_START);
    ck_assert_uint_eq(r.srv->line_cap, LINE_START);
    feed(&r, "*\r\nNOOP\r\n", 9, 0);
    want_summary("auth", &r, "220,250,334,501 5.7.0,250 2.0.0");

    /* 5000 pipelined NOOPs, their replies read only at the end. */
    buf_reset(&in);
    for (int i = 0; i < 5000; i++)
        buf_adds(&in, "NOOP\r\n");
    for (size_t pos = 0, rounds = 0; pos < in.len; rounds++) {
        pos += smtp_server_input(r.srv, in.data + pos, in.len - pos);
        while (smtp_server_next(r.srv)->type != SMTP_EV_NONE)
            ;
        if (rounds == 0) {
            ck_assert_uint_gt(r.srv->in_cap, IN_START);
            smtp_server_output(r.srv, &n);
            ck_assert_uint_ge(n, SMTP_OUTPUT_MAX);
        }
        take_output(&r);
        ck_assert_uint_lt(rounds, 10000);
    }
    /* The last of the input, then nothing more to answer. */
    for (size_t before = 0; before != r.out.len;) {
        before = r.out.len;
        drain(&r);
    }
    noops = 0;
    for (const char *p = r.out.data; (p = strstr(p, "250 2.0.0 OK\r\n"));
         p++)
        noops++;
    ck_assert_int_eq(noops, 5000 + 1);
    ck_assert_uint_eq(r.srv->in_cap, IN_START);
    ck_assert_uint_eq(r.srv->line_cap, LINE_START);
    ck_assert_uint_le(r.srv->out.cap, OUT_KEEP);
    run_free(&r);
    free(b64);
    buf_free(&in);
}
END_TEST

/* A client that pipelines without reading replies stalls the engine once
 * SMTP_OUTPUT_MAX is queued (RFC 2920 3.1). */
START_TEST(test_backpressure_output)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);
    buf_t in = BUF_INIT;
    size_t n, pos = 0, sent = 0;
    int rounds = 0;

    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_CONNECT);
    smtp_server_reply(srv, 220, NULL, NULL);
    for (int i = 0; i < 5000; i++)
        buf_adds(&in, "NOOP\r\n");
    while (pos < in.len && rounds++ < 1000) {
        pos += smtp_server_input(srv, in.data + pos, in.len - pos);
        while (smtp_server_next(srv)->type != SMTP_EV_NONE)
            ;
    }
    ck_assert_uint_lt(pos, in.len);
    smtp_server_output(srv, &n);
    ck_assert_uint_ge(n, SMTP_OUTPUT_MAX);
    ck_assert_uint_lt(n, SMTP_OUTPUT_MAX + 512);
    /* Sending the output lets it go on. */
    rounds = 0;
    do {
        smtp_server_output(srv, &n);
        sent += n;
        smtp_server_output_done(srv, n);
        pos += smtp_server_input(srv, in.data + pos, in.len - pos);
        while (smtp_server_next(srv)->type != SMTP_EV_NONE)
            ;
        smtp_server_output(srv, &n);
    } while (n > 0 && rounds++ < 1000);
    /* Every NOOP answered, with the greeting first. */
    ck_assert_uint_eq(sent, strlen("220 mx.test OK\r\n") +
                                5000 * strlen("250 2.0.0 OK\r\n"));
    smtp_server_destroy(&srv);
    buf_free(&in);
}
END_TEST

/* The caller ends the session (idle timeout, shutdown). */
START_TEST(test_close)
{
    struct run r;
    const struct smtp_event *ev;

    run_start(&r, O_MTA, 0);
    feed(&r, TXN, strlen(TXN), 0);
    smtp_server_close(r.srv, "4.4.2", "Error: timeout exceeded");
    drain(&r);
    want_output("close", &r, "421 4.4.2 mx.test Error: timeout exceeded\r\n");
    want_events("close", &r, "CONNECT HELO MAIL RCPT RESET CLOSE");
    ck_assert(smtp_server_done(r.srv));
    smtp_server_close(r.srv, NULL, NULL); /* a second time: nothing */
    ck_assert_int_eq(smtp_server_next(r.srv)->type, SMTP_EV_NONE);
    run_free(&r);

    /* With a decision pending: it is dropped. */
    run_start(&r, O_MTA, 0);
    smtp_server_input(r.srv, EHLO MAILOK, strlen(EHLO MAILOK));
    while ((ev = smtp_server_next(r.srv))->type != SMTP_EV_MAIL)
        ck_assert_int_ne(ev->type, SMTP_EV_NONE);
    smtp_server_close(r.srv, NULL, NULL);
    ck_assert_int_eq(smtp_server_next(r.srv)->type, SMTP_EV_CLOSE);
    ck_assert_int_eq(smtp_server_next(r.srv)->type, SMTP_EV_NONE);
    take_output(&r);
    want_output("close pending", &r, "421 4.0.0 mx.test ");
    run_free(&r);
}
END_TEST

/* The "with" keyword of RFC 3848 and RFC 6531 3.7.3. */
START_TEST(test_with)
{
    struct run r;

    run_start(&r, O_MTA_TLS, 0);
    feed(&r, "HELO x.test\r\n", 13, 0);
    ck_assert_str_eq(smtp_server_with(r.srv), "SMTP");
    ck_assert_str_eq(smtp_server_helo(r.srv), "x.test");
    feed(&r, EHLO, strlen(EHLO), 0);
    ck_assert_str_eq(smtp_server_with(r.srv), "ESMTP");
    feed(&r, "MAIL FROM:<a@b.test> SMTPUTF8\r\n", 31, 0);
    ck_assert_str_eq(smtp_server_with(r.srv), "UTF8SMTP");
    feed(&r, "RSET\r\nAUTH PLAIN " PLAIN_OK "\r\n",
         strlen("RSET\r\nAUTH PLAIN " PLAIN_OK "\r\n"), 0);
    ck_assert(smtp_server_authenticated(r.srv));
    ck_assert_str_eq(smtp_server_with(r.srv), "ESMTPA");
    ck_assert(!smtp_server_tls(r.srv));
    feed(&r, "STARTTLS\r\n", 10, 0);
    ck_assert(smtp_server_tls(r.srv));
    ck_assert(!smtp_server_authenticated(r.srv));
    ck_assert_ptr_null(smtp_server_helo(r.srv));
    feed(&r, EHLO, strlen(EHLO), 0);
    ck_assert_str_eq(smtp_server_with(r.srv), "ESMTPS");
    feed(&r, "AUTH PLAIN " PLAIN_OK "\r\n", strlen("AUTH PLAIN " PLAIN_OK "\r\n"),
         0);
    ck_assert_str_eq(smtp_server_with(r.srv), "ESMTPSA");
    feed(&r, "MAIL FROM:<a@b.test> SMTPUTF8\r\n", 31, 0);
    ck_assert_str_eq(smtp_server_with(r.srv), "UTF8SMTPSA");
    /* HELO after AUTH: still authenticated, still ESMTP's keyword. Found
     * by fuzz_smtp_server. */
    feed(&r, "HELO x.test\r\n", 13, 0);
    ck_assert(smtp_server_authenticated(r.srv));
    ck_assert_str_eq(smtp_server_with(r.srv), "ESMTPSA");
    run_free(&r);
}
END_TEST

/* The caller's reply text, formatted by the engine. */
static const struct fmt_row {
    const char *label;
    int code;
    const char *ecode, *text, *want;
} fmt_rows[] = {
    {"plain", 250, "2.1.0", "Sender OK", "250 2.1.0 Sender OK\r\n"},
    {"multi-line", 550, "5.7.1", "one\ntwo\r\nthree",
     "550-5.7.1 one\r\n550-5.7.1 two\r\n550 5.7.1 three\r\n"},
    {"trailing newline", 250, "2.1.0", "ok\n", "250 2.1.0 ok\r\n"},
    {"controls replaced", 451, "4.3.0", "a\tb\x01" "c\x80", "451 4.3.0 a?b?c?\r\n"},
    {"default ecode", 250, NULL, "x", "250 2.0.0 x\r\n"},
    {"wrong-class ecode", 550, "2.1.0", "x", "550 5.0.0 x\r\n"},
    {"malformed ecode", 451, "4.1", "x", "451 4.0.0 x\r\n"},
    {"default text", 550, "5.7.1", NULL, "550 5.7.1 Rejected\r\n"},
    {"empty text", 250, "2.1.0", "", "250 2.1.0 OK\r\n"},
};

START_TEST(test_reply_format)
{
    const struct fmt_row *row = &fmt_rows[_i];
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);
    const char *out;
    size_t n;

    smtp_server_next(srv);
    smtp_server_reply(srv, 220, NULL, NULL);
    smtp_server_input(srv, TXN, strlen(TXN) - strlen(RCPTOK));
    while (smtp_server_next(srv)->type != SMTP_EV_MAIL)
        ;
    out = smtp_server_output(srv, &n);
    smtp_server_output_done(srv, n);
    smtp_server_reply(srv, row->code, row->ecode, row->text);
    out = smtp_server_output(srv, &n);
    ck_assert_msg(n == strlen(row->want) && memcmp(out, row->want, n) == 0,
                  "%s: got \"%.*s\", want \"%s\"", row->label, (int)n, out,
                  row->want);
    smtp_server_destroy(&srv);
}
END_TEST

/* A reply line is never longer than 512 with CRLF (RFC 5321 4.5.3.1.5). */
START_TEST(test_reply_long)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);
    char *text = repeat('t', 2000);
    const char *out;
    size_t n;

    smtp_server_next(srv);
    smtp_server_reply(srv, 220, NULL, text);
    out = smtp_server_output(srv, &n);
    ck_assert_uint_eq(n, 512);
    ck_assert(memcmp(out + 510, "\r\n", 2) == 0);
    smtp_server_destroy(&srv);
    free(text);
}
END_TEST

/* Without ENHANCEDSTATUSCODES offered, no enhanced codes. */
START_TEST(test_no_enhanced)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    struct run r;

    memset(&r, 0, sizeof(r));
    o.ext = 0;
    r.greeting = 220;
    r.srv = smtp_server_new(&o);
    drain(&r);
    feed(&r, EHLO "NOOP\r\nFOO\r\n", strlen(EHLO "NOOP\r\nFOO\r\n"), 0);
    want_output("plain codes", &r, "250 mx.test\r\n250 OK\r\n500 Error");
    run_free(&r);
}
END_TEST

/* Defaults for zero options, and floors under the RFC minimums. */
START_TEST(test_defaults)
{
    struct smtp_server_opts o = {.ext = SMTP_EXT_SIZE, .max_line = 10,
                                 .max_rcpts = 3};
    struct run r;
    char *arg = repeat('x', 505);
    buf_t in = BUF_INIT;

    memset(&r, 0, sizeof(r));
    r.greeting = 220;
    r.srv = smtp_server_new(&o);
    drain(&r);
    buf_printf(&in, EHLO "NOOP %s\r\n", arg);
    feed(&r, in.data, in.len, 0);
    want_output("defaults", &r, "220 localhost ESMTP test\r\n");
    want_output("defaults", &r, "250 SIZE 10485760\r\n250 OK\r\n");
    run_free(&r);
    free(arg);
    buf_free(&in);
}
END_TEST

/* Caller bugs abort. */
START_TEST(test_reply_nothing_pending)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);

    smtp_server_reply(srv, 250, NULL, NULL);
}
END_TEST

START_TEST(test_reply_bad_code)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);

    smtp_server_next(srv);
    smtp_server_reply(srv, 354, NULL, NULL);
}
END_TEST

START_TEST(test_tls_started_unasked)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);

    smtp_server_tls_started(srv);
}
END_TEST

/* Closed during the handshake (a timeout), then the handshake finishes:
 * the session stays closed. Found by fuzz_smtp_server. */
START_TEST(test_close_during_handshake)
{
    struct run r;

    run_start(&r, O_MSA, 0);
    smtp_server_input(r.srv, EHLO "STARTTLS\r\n", strlen(EHLO "STARTTLS\r\n"));
    drain(&r);
    ck_assert(r.tls_restart);
    smtp_server_close(r.srv, "4.4.2", "timeout");
    smtp_server_tls_started(r.srv);
    drain(&r);
    ck_assert(smtp_server_done(r.srv));
    ck_assert(!smtp_server_tls(r.srv));
    want_events("handshake", &r, "CONNECT HELO STARTTLS CLOSE");
    want_summary("handshake", &r, "220,250,220 2.0.0,421 4.4.2");
    run_free(&r);
}
END_TEST

/* A decision's strings stay put while more input is fed. */
START_TEST(test_event_lifetime)
{
    struct smtp_server_opts o = opts_for(O_MTA);
    smtp_server_t *srv = smtp_server_new(&o);
    const struct smtp_event *ev;
    char more[4096];

    smtp_server_next(srv);
    smtp_server_reply(srv, 220, NULL, NULL);
    smtp_server_input(srv, EHLO "MAIL FROM:<a@b.test> ENVID=e1\r\n",
                      strlen(EHLO "MAIL FROM:<a@b.test> ENVID=e1\r\n"));
    while ((ev = smtp_server_next(srv))->type != SMTP_EV_MAIL)
        ;
    memset(more, 'q', sizeof(more));
    smtp_server_input(srv, more, sizeof(more));
    ck_assert_int_eq(smtp_server_next(srv)->type, SMTP_EV_NONE);
    ck_assert_str_eq(ev->mail.from, "a@b.test");
    ck_assert_str_eq(ev->mail.raw, "a@b.test");
    ck_assert_str_eq(ev->mail.envid, "e1");
    ck_assert_ptr_eq(ev->mail.path, ev->mail.path);
    ck_assert_str_eq(ev->mail.path->domain, "b.test");
    smtp_server_reply(srv, 250, NULL, NULL);
    smtp_server_destroy(&srv);
}
END_TEST

/* After STARTTLS, bytes fed before smtp_server_tls_started() are dropped
 * (the listener should not feed them, but if it does they never run). */
START_TEST(test_starttls_late_bytes)
{
    struct run r;
    const char *late = "MAIL FROM:<evil@x.test>\r\n";

    run_start(&r, O_MSA, 0);
    smtp_server_input(r.srv, EHLO "STARTTLS\r\n", strlen(EHLO "STARTTLS\r\n"));
    drain(&r);
    ck_assert(r.tls_restart);
    ck_assert_uint_eq(smtp_server_input(r.srv, late, strlen(late)),
                      strlen(late));
    ck_assert_int_eq(smtp_server_next(r.srv)->type, SMTP_EV_NONE);
    smtp_server_tls_started(r.srv);
    r.tls_restart = false;
    drain(&r);
    feed(&r, EHLO, strlen(EHLO), 0);
    want_events("late", &r, "CONNECT HELO STARTTLS HELO");
    want_summary("late", &r, "220,250,220 2.0.0,250");
    run_free(&r);
}
END_TEST

static Suite *
smtp_server_suite(void)
{
    Suite *s = suite_create("smtp_server");
    TCase *tc;

    tc = tcase_create("scripts");
    tcase_add_loop_test(tc, test_script, 0, NROWS(scripts));
    tcase_add_loop_test(tc, test_script_split, 0, NROWS(scripts));
    tcase_add_loop_test(tc, test_ehlo, 0, NROWS(ehlo_rows));
    tcase_add_test(tc, test_greeting);
    tcase_add_test(tc, test_reply_code_ok);
    suite_add_tcase(s, tc);

    tc = tcase_create("data");
    tcase_add_loop_test(tc, test_smuggling, 0, NROWS(smuggle_rows));
    tcase_add_test(tc, test_smuggling_example);
    tcase_add_test(tc, test_nul);
    tcase_add_test(tc, test_starttls_late_bytes);
    tcase_add_loop_test(tc, test_data_model, 0, 10);
    tcase_add_test(tc, test_data_size_hint);
    tcase_add_test(tc, test_message_room);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_test(tc, test_max_rcpts);
    tcase_add_test(tc, test_max_errors);
    tcase_add_test(tc, test_line_limit);
    tcase_add_test(tc, test_line_flood);
    tcase_add_test(tc, test_auth_line);
    tcase_add_test(tc, test_text_line_limit);
    tcase_add_test(tc, test_message_limit);
    tcase_add_test(tc, test_bdat_limit);
    tcase_add_test(tc, test_backpressure_decision);
    tcase_add_test(tc, test_backpressure_output);
    tcase_add_test(tc, test_backpressure_exact);
    tcase_add_test(tc, test_buffers);
    suite_add_tcase(s, tc);

    tc = tcase_create("api");
    tcase_add_test(tc, test_close);
    tcase_add_test(tc, test_close_during_handshake);
    tcase_add_test(tc, test_with);
    tcase_add_loop_test(tc, test_reply_format, 0, NROWS(fmt_rows));
    tcase_add_test(tc, test_reply_long);
    tcase_add_test(tc, test_no_enhanced);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_event_lifetime);
    tcase_add_test_raise_signal(tc, test_reply_nothing_pending, SIGABRT);
    tcase_add_test_raise_signal(tc, test_reply_bad_code, SIGABRT);
    tcase_add_test_raise_signal(tc, test_tls_started_unasked, SIGABRT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(smtp_server_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
