/*
 * test_smtp_client.c - the ESMTP client engine (lib/smtp_client.h),
 * driven by scripted servers: a script alternates what the server says
 * ("S...") with what the client must have sent by then ("C..."), so a
 * pipelined group shows up as one C line sent before the next S. The
 * driver begins the script's transactions on READY, starts TLS when asked
 * and writes the events down ("greeting ehlo ready rcpt0=250
 * done[250/2.0.0,550/5.1.1] quit"). Every script also runs with the
 * server's bytes fed one at a time.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/smtp_client.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))
#define HELLO "Subject: hi\r\n\r\nhello\r\n"
#define HELLO_DATA HELLO ".\r\n"
#define GREET "S220 mx.test ESMTP\r\n"
#define EHLO "CEHLO client.test\r\n"
#define M "MAIL FROM:<alice@example.test>\r\n"
#define R "RCPT TO:<bob@remote.test>\r\n"
#define RC "RCPT TO:<carol@remote.test>\r\n"
#define MAIL_BOB "C" M
#define RCPT_BOB "C" R
#define QUIT "CQUIT\r\n", "S221 2.0.0 bye\r\n"

/* Option sets a script can ask for. */
enum { O_PLAIN, O_MAY, O_MUST, O_CHUNKING, O_NOPIPE };

/* Transactions a script can run. */
enum {
    T_ONE,      /* alice -> bob, HELLO */
    T_TWO,      /* alice -> bob, carol */
    T_8BIT,     /* 8-bit message */
    T_UTF8,     /* needs SMTPUTF8 */
    T_UTF8RCPT, /* one UTF-8 recipient among ASCII ones */
    T_DSN,      /* RET, ENVID, NOTIFY, ORCPT */
    T_DOTS,     /* dots, bare CR and LF, no final CRLF */
    T_BADRCPT,  /* one good, one bad address */
    T_BADFROM,  /* bad sender */
    T_NULLFROM, /* <> */
};

static const struct smtp_client_rcpt r_bob[] = {{.addr = "bob@remote.test"}};
static const struct smtp_client_rcpt r_two[] = {{.addr = "bob@remote.test"},
                                                {.addr = "carol@remote.test"}};
static const struct smtp_client_rcpt r_utf8[] = {
    {.addr = "bob@remote.test"}, {.addr = "j\xc3\xb6rg@remote.test"}};
static const struct smtp_client_rcpt r_dsn[] = {
    {.addr = "bob@remote.test",
     .notify = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE,
     .orcpt = "rfc822;bob@remote.test"},
    {.addr = "carol@remote.test",
     .notify = SMTP_NOTIFY_NEVER,
     .orcpt = "Carol <c=c@remote.test>"}};
static const struct smtp_client_rcpt r_bad[] = {{.addr = "bob@remote.test"},
                                                {.addr = "not an address"}};

static struct smtp_client_txn
txn_for(int kind)
{
    struct smtp_client_txn t = {.mail_from = "alice@example.test",
                                .rcpts = r_bob,
                                .nrcpts = 1,
                                .data = HELLO,
                                .len = strlen(HELLO)};

    switch (kind) {
    case T_TWO:
        t.rcpts = r_two;
        t.nrcpts = 2;
        break;
    case T_8BIT:
        t.data = "Subject: caf\xc3\xa9\r\n\r\nx\r\n";
        t.len = strlen(t.data);
        t.eight_bit = true;
        break;
    case T_UTF8:
        t.smtputf8 = true;
        t.eight_bit = true;
        break;
    case T_UTF8RCPT:
        t.rcpts = r_utf8;
        t.nrcpts = 2;
        break;
    case T_DSN:
        t.rcpts = r_dsn;
        t.nrcpts = 2;
        t.ret = SMTP_RET_HDRS;
        t.envid = "q1+x";
        break;
    case T_DOTS:
        t.data = ".a\r\nb\n..c\rd";
        t.len = strlen(t.data);
        break;
    case T_BADRCPT:
        t.rcpts = r_bad;
        t.nrcpts = 2;
        break;
    case T_BADFROM:
        t.mail_from = "alice@@example";
        break;
    case T_NULLFROM:
        t.mail_from = "";
        break;
    }
    return t;
}

static struct smtp_client_opts
opts_for(int kind)
{
    struct smtp_client_opts o = {.helo = "client.test"};

    switch (kind) {
    case O_MAY:
        o.tls = SMTP_CLIENT_TLS_MAY;
        break;
    case O_MUST:
        o.tls = SMTP_CLIENT_TLS_MUST;
        break;
    case O_CHUNKING:
        o.chunking = true;
        break;
    case O_NOPIPE:
        o.no_pipelining = true;
        break;
    }
    return o;
}

/* --- the driver --------------------------------------------------------- */

struct drive {
    smtp_client_t *cl;
    buf_t got; /* every byte the client queued */
    buf_t ev;  /* the events */
    struct smtp_client_txn txn;
    int txns;         /* transactions still to begin */
    bool stay;        /* no QUIT when the transactions are done */
    bool handshake;   /* STARTTLS given: TLS is "up" before the next line */
    size_t drain_max; /* output taken at most at once; 0: all */
};

static void
log_reply(buf_t *b, const struct smtp_reply *r)
{
    buf_printf(b, "%d%s%s", r->code, r->ecode[0] ? "/" : "", r->ecode);
}

static void
drain(struct drive *d)
{
    for (;;) {
        size_t len, n;
        const char *out = smtp_client_output(d->cl, &len);

        if (len == 0)
            return;
        n = d->drain_max && len > d->drain_max ? d->drain_max : len;
        buf_add(&d->got, out, n);
        smtp_client_output_done(d->cl, n);
    }
}

static void
pump(struct drive *d)
{
    const struct smtp_client_event *ev;

    while ((ev = smtp_client_next(d->cl))->type != SMTP_CLIENT_EV_NONE) {
        if (d->ev.len)
            buf_addc(&d->ev, ' ');
        switch (ev->type) {
        case SMTP_CLIENT_EV_GREETING:
            buf_adds(&d->ev, "greeting");
            break;
        case SMTP_CLIENT_EV_EHLO:
            buf_adds(&d->ev, "ehlo");
            break;
        case SMTP_CLIENT_EV_STARTTLS:
            buf_adds(&d->ev, "starttls");
            d->handshake = true;
            break;
        case SMTP_CLIENT_EV_READY:
            buf_adds(&d->ev, "ready");
            if (d->txns > 0) {
                d->txns--;
                ck_assert_int_eq(smtp_client_begin(d->cl, &d->txn), 0);
            } else if (!d->stay) {
                smtp_client_quit(d->cl);
            }
            break;
        case SMTP_CLIENT_EV_RCPT:
            buf_printf(&d->ev, "rcpt%d=", ev->rcpt);
            log_reply(&d->ev, ev->reply);
            break;
        case SMTP_CLIENT_EV_DONE:
            buf_adds(&d->ev, "done[");
            for (int i = 0; i < d->txn.nrcpts; i++) {
                if (i)
                    buf_addc(&d->ev, ',');
                log_reply(&d->ev, smtp_client_result(d->cl, i));
            }
            buf_addc(&d->ev, ']');
            break;
        case SMTP_CLIENT_EV_QUIT:
            buf_adds(&d->ev, "quit");
            break;
        case SMTP_CLIENT_EV_CLOSE:
            buf_adds(&d->ev, "close=");
            log_reply(&d->ev, ev->reply);
            break;
        case SMTP_CLIENT_EV_NONE:
            break;
        }
    }
    drain(d);
}

static void
feed(struct drive *d, const char *s, size_t n)
{
    while (n > 0) {
        size_t took = smtp_client_input(d->cl, s, n);

        s += took;
        n -= took;
        pump(d);
    }
}

struct script {
    const char *label;
    int opts, txn, ntxn;
    bool early; /* begin before the greeting */
    bool stay;
    const char *lines[24];
    const char *events;
};

/* clang-format off */
/* One script per block reads better than one field per line. */
static const struct script scripts[] = {
    {"lockstep", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 8BITMIME\r\n", MAIL_BOB,
      "S250 2.1.0 ok\r\n", RCPT_BOB, "S250 2.1.5 ok\r\n", "CDATA\r\n",
      "S354 go ahead\r\n", "C" HELLO_DATA, "S250 2.0.0 queued\r\n", QUIT},
     "greeting ehlo ready rcpt0=250/2.1.5 done[250/2.0.0] ready quit"},
    {"pipelined", O_PLAIN, T_TWO, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R RC "DATA\r\n",
      "S250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n"
      "354 go\r\n",
      "C" HELLO_DATA, "S250 2.0.0 queued\r\n", QUIT},
     "greeting ehlo ready rcpt0=250/2.1.5 rcpt1=550/5.1.1 "
     "done[250/2.0.0,550/5.1.1] ready quit"},
    {"pipelining off by option", O_NOPIPE, T_TWO, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n", MAIL_BOB,
      "S250 ok\r\n", RCPT_BOB, "S250 ok\r\n",
      "CRCPT TO:<carol@remote.test>\r\n", "S450 4.2.1 later\r\n",
      "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA, "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 rcpt1=450/4.2.1 done[250,450/4.2.1] "
     "ready quit"},
    {"multi-line replies", O_PLAIN, T_ONE, 1, false, false,
     {"S220-mx.test ESMTP\r\n220-more\r\n220 end\r\n", EHLO,
      "S250-mx.test hello\r\n250-SIZE 1000000\r\n250-ENHANCEDSTATUSCODES"
      "\r\n250 8BITMIME\r\n",
      "CMAIL FROM:<alice@example.test> SIZE=22\r\n",
      "S250-2.1.0 one\r\n250 2.1.0 two\r\n", RCPT_BOB,
      "S550-5.1.1 no\r\n550-5.1.1 such\r\n550 5.1.1 user\r\n", QUIT},
     "greeting ehlo ready rcpt0=550/5.1.1 done[550/5.1.1] ready quit"},
    {"bare LF line ends", O_PLAIN, T_ONE, 1, false, false,
     {"S220 mx.test\n", EHLO, "S250 mx.test\n", MAIL_BOB, "S250 ok\n",
      RCPT_BOB, "S250 ok\n", "CDATA\r\n", "S354 go\n", "C" HELLO_DATA,
      "S250 ok\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"EHLO refused: HELO", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S502 5.5.1 what\r\n", "CHELO client.test\r\n",
      "S250 mx.test\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB, "S250 ok\r\n",
      "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA, "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"EHLO and HELO refused", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S502 5.5.1 what\r\n", "CHELO client.test\r\n",
      "S501 5.5.4 no\r\n", "CQUIT\r\n"},
     "greeting close=501/5.5.4"},
    {"greeting 554", O_PLAIN, T_ONE, 1, false, false,
     {"S554 5.7.1 no SMTP service here\r\n", "CQUIT\r\n"},
     "close=554/5.7.1"},
    {"greeting 554 with a transaction in hand", O_PLAIN, T_TWO, 1, true,
     false,
     {"S554 5.7.1 no SMTP service here\r\n", "CQUIT\r\n"},
     "done[451/4.7.1,451/4.7.1] close=554/5.7.1"},
    {"greeting 421", O_PLAIN, T_ONE, 1, false, false,
     {"S421 4.3.2 busy\r\n"}, "close=421/4.3.2"},
    {"begun before the greeting", O_PLAIN, T_ONE, 1, true, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R "DATA\r\n", "S250 ok\r\n250 ok\r\n354 go\r\n",
      "C" HELLO_DATA, "S250 ok\r\n", QUIT},
     "greeting ehlo rcpt0=250 done[250] ready quit"},
    {"MAIL refused, lock-step, then reuse", O_PLAIN, T_ONE, 2, false, false,
     {GREET, EHLO, "S250 mx.test\r\n", MAIL_BOB, "S451 4.3.0 later\r\n",
      "CRSET\r\n", "S250 ok\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB,
      "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA,
      "S250 2.0.0 ok\r\n", QUIT},
     "greeting ehlo ready done[451/4.3.0] ready rcpt0=250 done[250/2.0.0] "
     "ready quit"},
    {"MAIL refused, pipelined", O_PLAIN, T_TWO, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R RC "DATA\r\n",
      "S550 5.7.1 not you\r\n503 5.5.1 MAIL first\r\n503 5.5.1 MAIL first"
      "\r\n503 5.5.1 no\r\n",
      QUIT},
     "greeting ehlo ready done[550/5.7.1,550/5.7.1] ready quit"},
    {"every RCPT refused, DATA refused", O_PLAIN, T_TWO, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R RC "DATA\r\n",
      "S250 ok\r\n550 5.1.1 no\r\n450 4.2.0 full\r\n554 5.5.1 no valid "
      "recipients\r\n",
      QUIT},
     "greeting ehlo ready rcpt0=550/5.1.1 rcpt1=450/4.2.0 "
     "done[550/5.1.1,450/4.2.0] ready quit"},
    {"every RCPT refused, DATA taken (RFC 2920 3.1)", O_PLAIN, T_ONE, 1,
     false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R "DATA\r\n", "S250 ok\r\n550 5.1.1 no\r\n354 go\r\n",
      "C.\r\n", "S554 5.5.1 empty\r\n", QUIT},
     "greeting ehlo ready rcpt0=550/5.1.1 done[550/5.1.1] ready quit"},
    {"every RCPT refused, lock-step: no DATA", O_PLAIN, T_ONE, 2, false,
     false,
     {GREET, EHLO, "S250 mx.test\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB,
      "S550 5.1.1 no\r\n", "CRSET\r\n", "S250 ok\r\n", MAIL_BOB,
      "S250 ok\r\n", RCPT_BOB, "S550 5.1.1 no\r\n", QUIT},
     "greeting ehlo ready rcpt0=550/5.1.1 done[550/5.1.1] ready "
     "rcpt0=550/5.1.1 done[550/5.1.1] ready quit"},
    {"DATA refused", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S250 mx.test\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB,
      "S250 ok\r\n", "CDATA\r\n", "S451 4.3.0 not now\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[451/4.3.0] ready quit"},
    {"end of data refused", O_PLAIN, T_TWO, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R RC "DATA\r\n",
      "S250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", "C" HELLO_DATA,
      "S554 5.7.1 spam\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 rcpt1=250 done[554/5.7.1,554/5.7.1] "
     "ready quit"},
    {"421 to RCPT", O_PLAIN, T_TWO, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R RC "DATA\r\n",
      "S250 ok\r\n421 4.4.2 bye\r\n"},
     "greeting ehlo ready rcpt0=421/4.4.2 done[421/4.4.2,421/4.4.2] "
     "close=421/4.4.2"},
    {"421 to the end of data", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S250 mx.test\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB,
      "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA,
      "S421 4.3.0 crash\r\n"},
     "greeting ehlo ready rcpt0=250 done[421/4.3.0] close=421/4.3.0"},
    {"over SIZE: nothing sent", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 SIZE 10\r\n", QUIT},
     "greeting ehlo ready done[552/5.3.4] ready quit"},
    {"SIZE without a number", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 SIZE\r\n",
      "CMAIL FROM:<alice@example.test> SIZE=22\r\n", "S452 4.3.4 full\r\n",
      QUIT},
     "greeting ehlo ready done[452/4.3.4] ready quit"},
    {"8-bit without 8BITMIME", O_PLAIN, T_8BIT, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n", QUIT},
     "greeting ehlo ready done[554/5.6.3] ready quit"},
    {"8-bit with 8BITMIME", O_PLAIN, T_8BIT, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 8BITMIME\r\n",
      "CMAIL FROM:<alice@example.test> BODY=8BITMIME\r\n", "S250 ok\r\n",
      RCPT_BOB, "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n",
      "CSubject: caf\xc3\xa9\r\n\r\nx\r\n.\r\n", "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"SMTPUTF8 not offered", O_PLAIN, T_UTF8, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 8BITMIME\r\n", QUIT},
     "greeting ehlo ready done[553/5.6.7] ready quit"},
    {"SMTPUTF8 offered", O_PLAIN, T_UTF8, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
      "CMAIL FROM:<alice@example.test> BODY=8BITMIME SMTPUTF8\r\n",
      "S250 ok\r\n", RCPT_BOB, "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n",
      "C" HELLO_DATA, "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"a UTF-8 recipient without SMTPUTF8", O_PLAIN, T_UTF8RCPT, 1, false,
     false,
     {GREET, EHLO, "S250 mx.test\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB,
      "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA,
      "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250,553/5.6.7] ready quit"},
    {"DSN offered", O_PLAIN, T_DSN, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 DSN\r\n",
      "CMAIL FROM:<alice@example.test> RET=HDRS ENVID=q1+2Bx\r\n",
      "S250 ok\r\n",
      "CRCPT TO:<bob@remote.test> NOTIFY=SUCCESS,FAILURE "
      "ORCPT=rfc822;bob@remote.test\r\n",
      "S250 ok\r\n",
      "CRCPT TO:<carol@remote.test> NOTIFY=NEVER "
      "ORCPT=rfc822;Carol+20<c+3Dc@remote.test>\r\n",
      "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA,
      "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 rcpt1=250 done[250,250] ready quit"},
    {"DSN not offered", O_PLAIN, T_DSN, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R RC "DATA\r\n",
      "S250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", "C" HELLO_DATA,
      "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 rcpt1=250 done[250,250] ready quit"},
    {"STARTTLS when offered", O_MAY, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 STARTTLS\r\n", "CSTARTTLS\r\n",
      /* What follows the 220 in clear must be dropped (RFC 3207 5). */
      "S220 2.0.0 go ahead\r\n250 injected\r\n", EHLO,
      "S250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
      "C" M R "DATA\r\n", "S250 ok\r\n250 ok\r\n354 go\r\n",
      "C" HELLO_DATA, "S250 ok\r\n", QUIT},
     "greeting ehlo starttls ehlo ready rcpt0=250 done[250] ready quit"},
    {"STARTTLS not offered, policy may", O_MAY, T_ONE, 1, false, false,
     {GREET, EHLO, "S250 mx.test\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB,
      "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA,
      "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"STARTTLS refused, policy may", O_MAY, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 STARTTLS\r\n", "CSTARTTLS\r\n",
      "S454 4.7.0 TLS not available\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB,
      "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA,
      "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"STARTTLS not offered, policy must", O_MUST, T_TWO, 1, true, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n", "CQUIT\r\n"},
     "greeting ehlo done[451/4.7.4,451/4.7.4] close=451/4.7.4"},
    {"STARTTLS refused, policy must", O_MUST, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 STARTTLS\r\n", "CSTARTTLS\r\n",
      "S454 4.7.0 TLS not available\r\n", "CQUIT\r\n"},
     "greeting ehlo close=451/4.7.4"},
    {"EHLO refused, policy must", O_MUST, T_ONE, 1, false, false,
     {GREET, EHLO, "S500 5.5.1 what\r\n", "CQUIT\r\n"},
     "greeting close=451/4.7.4"},
    {"STARTTLS not used when policy none", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 STARTTLS\r\n", MAIL_BOB,
      "S250 ok\r\n", RCPT_BOB, "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n",
      "C" HELLO_DATA, "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"dot-stuffing and line ends", O_PLAIN, T_DOTS, 1, false, false,
     {GREET, EHLO, "S250 mx.test\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB,
      "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n",
      "C..a\r\nb\r\n...c\r\nd\r\n.\r\n", "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"reuse, pipelined: RSET in the group", O_PLAIN, T_ONE, 2, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R "DATA\r\n", "S250 ok\r\n250 ok\r\n354 go\r\n",
      "C" HELLO_DATA, "S250 2.0.0 one\r\n",
      "CRSET\r\n" M R "DATA\r\n", /* RSET heads the group */
      "S250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", "C" HELLO_DATA,
      "S250 2.0.0 two\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250/2.0.0] ready rcpt0=250 "
     "done[250/2.0.0] ready quit"},
    {"reuse: dead at RSET", O_PLAIN, T_ONE, 2, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 PIPELINING\r\n",
      "C" M R "DATA\r\n", "S250 ok\r\n250 ok\r\n354 go\r\n",
      "C" HELLO_DATA, "S250 2.0.0 one\r\n",
      "CRSET\r\n" M R "DATA\r\n",
      "S421 4.4.2 timeout\r\n"},
     "greeting ehlo ready rcpt0=250 done[250/2.0.0] ready "
     "done[421/4.4.2] close=421/4.4.2"},
    {"BDAT, pipelined", O_CHUNKING, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n",
      "C" M R "BDAT 22 LAST\r\n" HELLO,
      "S250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250/2.0.0] ready quit"},
    {"BDAT, lock-step", O_CHUNKING, T_DOTS, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 CHUNKING\r\n", MAIL_BOB,
      "S250 ok\r\n", RCPT_BOB, "S250 ok\r\n",
      "CBDAT 11 LAST\r\n.a\r\nb\n..c\rd", "S250 2.0.0 queued\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250/2.0.0] ready quit"},
    {"CHUNKING offered, not asked for", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n250 CHUNKING\r\n", MAIL_BOB,
      "S250 ok\r\n", RCPT_BOB, "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n",
      "C" HELLO_DATA, "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"a bad recipient is not sent", O_PLAIN, T_BADRCPT, 1, false, false,
     {GREET, EHLO, "S250 mx.test\r\n", MAIL_BOB, "S250 ok\r\n", RCPT_BOB,
      "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA,
      "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250,553/5.1.3] ready quit"},
    {"a bad sender: nothing sent", O_PLAIN, T_BADFROM, 1, false, false,
     {GREET, EHLO, "S250 mx.test\r\n", QUIT},
     "greeting ehlo ready done[553/5.1.7] ready quit"},
    {"null reverse-path", O_PLAIN, T_NULLFROM, 1, false, false,
     {GREET, EHLO, "S250 mx.test\r\n", "CMAIL FROM:<>\r\n", "S250 ok\r\n",
      RCPT_BOB, "S250 ok\r\n", "CDATA\r\n", "S354 go\r\n", "C" HELLO_DATA,
      "S250 ok\r\n", QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"421 while idle", O_PLAIN, T_ONE, 0, false, true,
     {GREET, EHLO, "S250 mx.test\r\n", "S421 4.4.2 idle too long\r\n"},
     "greeting ehlo ready close=421/4.4.2"},
    {"reply out of sequence", O_PLAIN, T_ONE, 0, false, true,
     {GREET, EHLO, "S250 mx.test\r\n", "S250 what\r\n", "CQUIT\r\n"},
     "greeting ehlo ready close=451/4.5.0"},
    {"malformed reply", O_PLAIN, T_ONE, 1, false, false,
     {"S22O mx.test\r\n", "CQUIT\r\n"}, "close=451/4.5.0"},
    {"a reply code of 1xx", O_PLAIN, T_ONE, 1, false, false,
     {"S120 wait\r\n", "CQUIT\r\n"}, "close=451/4.5.0"},
    {"multi-line reply with two codes", O_PLAIN, T_ONE, 1, false, false,
     {GREET, EHLO, "S250-mx.test\r\n251 PIPELINING\r\n", "CQUIT\r\n"},
     "greeting close=451/4.5.0"},
    {"a reply of three digits only", O_PLAIN, T_ONE, 1, false, false,
     {"S220\r\n", EHLO, "S250\r\n", MAIL_BOB, "S250\r\n", RCPT_BOB,
      "S250\r\n", "CDATA\r\n", "S354\r\n", "C" HELLO_DATA, "S250\r\n",
      QUIT},
     "greeting ehlo ready rcpt0=250 done[250] ready quit"},
    {"QUIT answered with an error", O_PLAIN, T_ONE, 0, false, false,
     {GREET, EHLO, "S250 mx.test\r\n", "CQUIT\r\n", "S500 what\r\n"},
     "greeting ehlo ready quit"},
};
/* clang-format on */

static void
drive_init(struct drive *d, const struct script *sc)
{
    struct smtp_client_opts o = opts_for(sc->opts);

    memset(d, 0, sizeof(*d));
    d->cl = smtp_client_new(&o);
    d->txn = txn_for(sc->txn);
    d->txns = sc->ntxn;
    d->stay = sc->stay;
    if (sc->early) {
        d->txns--;
        ck_assert_int_eq(smtp_client_begin(d->cl, &d->txn), 0);
    }
}

static void
drive_free(struct drive *d)
{
    smtp_client_destroy(&d->cl);
    buf_free(&d->got);
    buf_free(&d->ev);
}

/* Whether two buffers hold the same bytes (either may be empty, with no
 * data at all). */
static bool
same(const buf_t *a, const buf_t *b)
{
    return a->len == b->len &&
           (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void
run_script(const struct script *sc, bool bytewise)
{
    struct drive d;
    buf_t want = BUF_INIT;

    drive_init(&d, sc);
    pump(&d);
    for (int i = 0; i < 24 && sc->lines[i]; i++) {
        const char *l = sc->lines[i];

        if (l[0] == 'C') {
            buf_adds(&want, l + 1);
            continue;
        }
        if (d.handshake) {
            /* The rest of the line that held the 220 was dropped; the
             * handshake happens between the server's lines. */
            d.handshake = false;
            smtp_client_tls_started(d.cl);
            pump(&d);
        }
        ck_assert_msg(same(&d.got, &want),
                      "%s: before line %d: sent\n%s\nwant\n%s", sc->label, i,
                      d.got.data ? d.got.data : "", want.data ? want.data : "");
        if (bytewise) {
            for (size_t j = 0; l[1 + j]; j++)
                feed(&d, l + 1 + j, 1);
        } else {
            feed(&d, l + 1, strlen(l + 1));
        }
    }
    ck_assert_msg(same(&d.got, &want), "%s: at the end: sent\n%s\nwant\n%s",
                  sc->label, d.got.data ? d.got.data : "",
                  want.data ? want.data : "");
    ck_assert_msg(strcmp(d.ev.data ? d.ev.data : "", sc->events) == 0,
                  "%s: got events\n%s\nwant\n%s", sc->label,
                  d.ev.data ? d.ev.data : "", sc->events);
    buf_free(&want);
    drive_free(&d);
}

START_TEST(test_script)
{
    run_script(&scripts[_i], false);
}
END_TEST

START_TEST(test_script_bytewise)
{
    run_script(&scripts[_i], true);
}
END_TEST

/* --- details ------------------------------------------------------------ */

/* A session up to READY with the given EHLO reply lines. */
static void
session_ready(struct drive *d, int opts, const char *ehlo)
{
    struct script sc = {.label = "setup", .opts = opts, .txn = T_ONE};

    drive_init(d, &sc);
    d->stay = true;
    feed(d, "220 mx.test\r\n", 13);
    feed(d, ehlo, strlen(ehlo));
    ck_assert(smtp_client_idle(d->cl));
    buf_reset(&d->got);
    buf_reset(&d->ev);
}

START_TEST(test_reply_text)
{
    struct drive d;
    const struct smtp_reply *r;
    const char *rs = "550-5.1.1 no such\r\n550-5.1.1  user\x01here\r\n"
                     "550 5.1.1\r\n";

    session_ready(&d, O_PLAIN, "250-mx.test\r\n250 PIPELINING\r\n");
    ck_assert_int_eq(smtp_client_begin(d.cl, &d.txn), 0);
    pump(&d);
    feed(&d, "250 2.1.0 sender ok\r\n", 21);
    feed(&d, rs, strlen(rs));
    feed(&d, "554 5.5.1 no valid recipients\r\n", 31);
    r = smtp_client_result(d.cl, 0);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->code, 550);
    ck_assert_str_eq(r->ecode, "5.1.1");
    ck_assert_str_eq(r->text, "no such\n user?here\n");
    ck_assert(!r->local);
    drive_free(&d);
}
END_TEST

/* The enhanced code is taken only when its class is the reply's. */
START_TEST(test_reply_ecode_class)
{
    struct drive d;
    const struct smtp_reply *r;

    session_ready(&d, O_PLAIN, "250 mx.test\r\n");
    ck_assert_int_eq(smtp_client_begin(d.cl, &d.txn), 0);
    pump(&d);
    feed(&d, "550 2.1.0 odd\r\n", 15);
    r = smtp_client_result(d.cl, 0);
    ck_assert_int_eq(r->code, 550);
    ck_assert_str_eq(r->ecode, "");
    ck_assert_str_eq(r->text, "2.1.0 odd");
    drive_free(&d);
}
END_TEST

START_TEST(test_ehlo_caps)
{
    struct drive d;

    session_ready(&d, O_PLAIN,
                  "250-mx.test greets you\r\n250-size 35882577\r\n"
                  "250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                  "250-STARTTLS\r\n250-DSN\r\n250-CHUNKING\r\n"
                  "250-AUTH PLAIN LOGIN\r\n250-X-UNKNOWN 1\r\n"
                  "250 ENHANCEDSTATUSCODES\r\n");
    ck_assert_uint_eq(smtp_client_ext(d.cl),
                      SMTP_EXT_SIZE | SMTP_EXT_PIPELINING | SMTP_EXT_8BITMIME |
                          SMTP_EXT_SMTPUTF8 | SMTP_EXT_STARTTLS | SMTP_EXT_DSN |
                          SMTP_EXT_CHUNKING | SMTP_EXT_AUTH |
                          SMTP_EXT_ENHANCEDSTATUSCODES);
    ck_assert_uint_eq(smtp_client_size_max(d.cl), 35882577);
    ck_assert(!smtp_client_tls(d.cl));
    drive_free(&d);
}
END_TEST

/* A line of exactly 512 octets is fine, one more is not. */
START_TEST(test_line_limit)
{
    struct drive d;
    char line[600];

    session_ready(&d, O_PLAIN, "250 mx.test\r\n");
    ck_assert_int_eq(smtp_client_begin(d.cl, &d.txn), 0);
    pump(&d);
    memset(line, 'x', sizeof(line));
    memcpy(line, "250 ", 4);
    memcpy(line + 510, "\r\n", 2);
    feed(&d, line, 512);
    ck_assert_int_eq(smtp_client_phase(d.cl), SMTP_PHASE_RCPT);
    memcpy(line, "250 ", 4);
    memcpy(line + 511, "\r\n", 2);
    feed(&d, line, 513);
    ck_assert_str_eq(d.ev.data, "done[451/4.5.0] close=451/4.5.0");
    ck_assert(smtp_client_done(d.cl));
    drive_free(&d);
}
END_TEST

/* A line that never ends is cut off at the limit, whatever comes. */
START_TEST(test_line_flood)
{
    struct drive d;
    char junk[4096];
    size_t fed = 0;

    session_ready(&d, O_PLAIN, "250 mx.test\r\n");
    memset(junk, 'x', sizeof(junk));
    memcpy(junk, "250-", 4);
    for (int i = 0; i < 1000 && !smtp_client_done(d.cl); i++) {
        fed += smtp_client_input(d.cl, junk, sizeof(junk));
        pump(&d);
    }
    ck_assert(smtp_client_done(d.cl));
    ck_assert_uint_le(fed, 2 * sizeof(junk));
    ck_assert_str_eq(d.ev.data, "close=451/4.5.0");
    /* Input after the end is taken and dropped. */
    ck_assert_uint_eq(smtp_client_input(d.cl, junk, sizeof(junk)),
                      sizeof(junk));
    drive_free(&d);
}
END_TEST

START_TEST(test_too_many_lines)
{
    struct drive d;
    struct smtp_client_opts o = {.max_lines = 5};

    memset(&d, 0, sizeof(d));
    d.cl = smtp_client_new(&o);
    for (int i = 0; i < 6; i++)
        feed(&d, "220-hello\r\n", 11);
    ck_assert(smtp_client_done(d.cl));
    ck_assert_str_eq(d.ev.data, "close=451/4.5.0");
    drive_free(&d);

    memset(&d, 0, sizeof(d));
    d.cl = smtp_client_new(&o);
    for (int i = 0; i < 4; i++)
        feed(&d, "220-hello\r\n", 11);
    feed(&d, "220 hello\r\n", 11);
    ck_assert(!smtp_client_done(d.cl));
    ck_assert_str_eq(d.ev.data, "greeting");
    drive_free(&d);
}
END_TEST

/* The input buffer takes what fits; the rest waits for the events. */
START_TEST(test_input_backpressure)
{
    struct drive d;
    buf_t many = BUF_INIT;
    size_t off = 0;
    int rounds = 0;

    session_ready(&d, O_PLAIN, "250 mx.test\r\n");
    for (int i = 0; i < 2000; i++)
        buf_adds(&many, "250-a line of an endless EHLO answer\r\n");
    /* 2000 lines is over max_lines: the engine stops at 100. */
    while (off < many.len && !smtp_client_done(d.cl)) {
        size_t took = smtp_client_input(d.cl, many.data + off, many.len - off);

        ck_assert_uint_le(took, SMTP_CLIENT_INPUT_MAX);
        off += took;
        pump(&d);
        rounds++;
    }
    ck_assert(smtp_client_done(d.cl));
    buf_free(&many);
    drive_free(&d);
}
END_TEST

/* Un-does dot-stuffing: the lines of DATA as the server would see them. */
static void
unstuff(const char *s, size_t n, buf_t *out)
{
    bool bol = true;

    for (size_t i = 0; i < n; i++) {
        if (bol && s[i] == '.') {
            if (i + 1 < n && s[i + 1] == '\r')
                return; /* the end */
            i++;
        }
        buf_addc(out, s[i]);
        bol = s[i] == '\n';
    }
}

/* A big message goes out in bounded pieces, whole, and the phases follow
 * it: DATA_BLOCK while data is left, DATA_END after. */
START_TEST(test_big_message)
{
    struct drive d;
    buf_t msg = BUF_INIT, back = BUF_INIT;
    struct smtp_client_txn t;
    size_t start, peak = 0;

    for (int i = 0; i < 20000; i++)
        buf_printf(&msg, "%sline %d of a long message\r\n",
                   i % 7 == 0 ? "." : "", i);
    session_ready(&d, O_PLAIN, "250-mx.test\r\n250 PIPELINING\r\n");
    t = d.txn;
    t.data = msg.data;
    t.len = msg.len;
    d.txn = t;
    ck_assert_int_eq(smtp_client_begin(d.cl, &t), 0);
    pump(&d);
    ck_assert_int_eq(smtp_client_phase(d.cl), SMTP_PHASE_MAIL);
    feed(&d, "250 ok\r\n250 ok\r\n", 16);
    ck_assert_int_eq(smtp_client_phase(d.cl), SMTP_PHASE_DATA_INIT);
    start = d.got.len;
    /* Take the output 1000 octets at a time. */
    ck_assert_uint_eq(smtp_client_input(d.cl, "354 go\r\n", 8), 8);
    while (smtp_client_next(d.cl)->type != SMTP_CLIENT_EV_NONE)
        ;
    for (;;) {
        size_t len;
        const char *out = smtp_client_output(d.cl, &len);

        if (len == 0)
            break;
        if (len > peak)
            peak = len;
        ck_assert_int_eq(smtp_client_phase(d.cl), SMTP_PHASE_DATA_BLOCK);
        if (len > 1000)
            len = 1000;
        buf_add(&d.got, out, len);
        smtp_client_output_done(d.cl, len);
    }
    ck_assert_int_eq(smtp_client_phase(d.cl), SMTP_PHASE_DATA_END);
    ck_assert_uint_le(peak, 2 * SMTP_CLIENT_CHUNK + 8);
    unstuff(d.got.data + start, d.got.len - start, &back);
    ck_assert_uint_eq(back.len, msg.len);
    ck_assert(memcmp(back.data, msg.data, msg.len) == 0);
    ck_assert(memcmp(d.got.data + d.got.len - 5, "\r\n.\r\n", 5) == 0);
    feed(&d, "250 2.0.0 ok\r\n", 14);
    ck_assert_int_eq(smtp_client_result(d.cl, 0)->code, 250);
    ck_assert_int_eq(smtp_client_phase(d.cl), SMTP_PHASE_IDLE);
    buf_free(&msg);
    buf_free(&back);
    drive_free(&d);
}
END_TEST

struct phase_row {
    const char *server; /* fed, then the phase is read */
    enum smtp_client_phase want;
};

START_TEST(test_phases)
{
    static const struct phase_row rows[] = {
        {"", SMTP_PHASE_GREETING},
        {"220 mx\r\n", SMTP_PHASE_EHLO},
        {"250-mx\r\n250 STARTTLS\r\n", SMTP_PHASE_STARTTLS},
        {"220 go\r\n", SMTP_PHASE_TLS},
        {NULL, SMTP_PHASE_EHLO}, /* tls_started() */
        {"250 mx\r\n", SMTP_PHASE_IDLE},
        {NULL, SMTP_PHASE_MAIL}, /* begin() */
        {"250 ok\r\n", SMTP_PHASE_RCPT},
        {"250 ok\r\n", SMTP_PHASE_DATA_INIT},
        {"354 go\r\n", SMTP_PHASE_DATA_BLOCK},
        {NULL, SMTP_PHASE_DATA_END}, /* output taken */
        {"250 ok\r\n", SMTP_PHASE_IDLE},
        {NULL, SMTP_PHASE_RSET}, /* begin() again */
        {"250 ok\r\n", SMTP_PHASE_MAIL},
        {"421 4.3.2 bye\r\n", SMTP_PHASE_DONE},
    };
    struct smtp_client_opts o = {.tls = SMTP_CLIENT_TLS_MAY};
    smtp_client_t *cl = smtp_client_new(&o);
    struct smtp_client_txn t = txn_for(T_ONE);
    int nulls = 0;

    for (size_t i = 0; i < NROWS(rows); i++) {
        size_t len;

        if (rows[i].server) {
            smtp_client_input(cl, rows[i].server, strlen(rows[i].server));
        } else if (nulls == 0) {
            smtp_client_tls_started(cl);
            nulls++;
        } else if (nulls == 2) {
            smtp_client_output(cl, &len);
            smtp_client_output_done(cl, len);
            nulls++;
        } else {
            ck_assert_int_eq(smtp_client_begin(cl, &t), 0);
            nulls++;
        }
        while (smtp_client_next(cl)->type != SMTP_CLIENT_EV_NONE)
            ;
        if (rows[i].want != SMTP_PHASE_DATA_BLOCK) {
            smtp_client_output(cl, &len);
            if (rows[i].want != SMTP_PHASE_DATA_END || rows[i].server)
                smtp_client_output_done(cl, len);
        }
        ck_assert_msg(smtp_client_phase(cl) == rows[i].want,
                      "row %zu: got %s, want %s", i,
                      smtp_client_phase_name(smtp_client_phase(cl)),
                      smtp_client_phase_name(rows[i].want));
    }
    ck_assert(smtp_client_tls(cl));
    smtp_client_destroy(&cl);
}
END_TEST

START_TEST(test_phase_timeouts)
{
    ck_assert_int_eq(smtp_client_phase_timeout_ms(SMTP_PHASE_GREETING), 300000);
    ck_assert_int_eq(smtp_client_phase_timeout_ms(SMTP_PHASE_MAIL), 300000);
    ck_assert_int_eq(smtp_client_phase_timeout_ms(SMTP_PHASE_RCPT), 300000);
    ck_assert_int_eq(smtp_client_phase_timeout_ms(SMTP_PHASE_DATA_INIT),
                     120000);
    ck_assert_int_eq(smtp_client_phase_timeout_ms(SMTP_PHASE_DATA_BLOCK),
                     180000);
    ck_assert_int_eq(smtp_client_phase_timeout_ms(SMTP_PHASE_DATA_END), 600000);
    ck_assert_int_eq(smtp_client_phase_timeout_ms(SMTP_PHASE_IDLE), 0);
    ck_assert_str_eq(smtp_client_phase_name(SMTP_PHASE_DATA_END), "data_end");
}
END_TEST

/* The caller gives up half way through the data. */
START_TEST(test_fail)
{
    struct drive d;
    size_t len;

    session_ready(&d, O_PLAIN, "250-mx.test\r\n250 PIPELINING\r\n");
    d.txn = txn_for(T_TWO);
    ck_assert_int_eq(smtp_client_begin(d.cl, &d.txn), 0);
    pump(&d);
    feed(&d, "250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n", 38);
    buf_reset(&d.ev);
    smtp_client_fail(d.cl, 451, "4.4.2", "timeout in data_block");
    pump(&d);
    ck_assert_str_eq(d.ev.data, "done[451/4.4.2,550/5.1.1] close=451/4.4.2");
    ck_assert(smtp_client_result(d.cl, 0)->local);
    ck_assert_str_eq(smtp_client_result(d.cl, 0)->text,
                     "timeout in data_block");
    smtp_client_output(d.cl, &len);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(smtp_client_begin(d.cl, &d.txn), ERR_CLOSED);
    /* Again: nothing. */
    smtp_client_fail(d.cl, 451, "4.4.2", "again");
    ck_assert_int_eq(smtp_client_next(d.cl)->type, SMTP_CLIENT_EV_NONE);
    drive_free(&d);
}
END_TEST

/* A 5xx the caller gives stays a 5xx. */
START_TEST(test_fail_permanent)
{
    struct drive d;

    session_ready(&d, O_PLAIN, "250 mx.test\r\n");
    ck_assert_int_eq(smtp_client_begin(d.cl, &d.txn), 0);
    pump(&d);
    smtp_client_fail(d.cl, 554, "5.4.6", "routing loop");
    pump(&d);
    ck_assert_str_eq(d.ev.data, "done[554/5.4.6] close=554/5.4.6");
    drive_free(&d);
}
END_TEST

START_TEST(test_begin_errors)
{
    struct drive d;
    struct smtp_client_txn none = {.mail_from = "a@b.test"};

    session_ready(&d, O_PLAIN, "250 mx.test\r\n");
    ck_assert_int_eq(smtp_client_begin(d.cl, &none), ERR_INVAL);
    ck_assert_int_eq(smtp_client_begin(d.cl, &d.txn), 0);
    ck_assert_int_eq(smtp_client_begin(d.cl, &d.txn), ERR_INVAL);
    ck_assert_ptr_null(smtp_client_result(d.cl, 0));
    smtp_client_quit(d.cl);
    ck_assert_int_eq(smtp_client_begin(d.cl, &d.txn), ERR_CLOSED);
    pump(&d);
    /* The QUIT waits for the transaction. */
    ck_assert_str_eq(d.got.data, "MAIL FROM:<alice@example.test>\r\n");
    feed(&d, "250 ok\r\n550 5.1.1 no\r\n", 22);
    ck_assert_str_eq(d.got.data, "MAIL FROM:<alice@example.test>\r\n"
                                 "RCPT TO:<bob@remote.test>\r\nQUIT\r\n");
    ck_assert_ptr_null(smtp_client_result(d.cl, 1));
    ck_assert_int_eq(smtp_client_result(d.cl, 0)->code, 550);
    feed(&d, "221 bye\r\n", 9);
    ck_assert(smtp_client_done(d.cl));
    ck_assert_int_eq(smtp_client_transactions(d.cl), 1);
    drive_free(&d);
}
END_TEST

/* Transactions refused whole, one after another, without taking events
 * in between: the engine says no before its event queue overflows. */
START_TEST(test_begin_flood)
{
    struct drive d;
    struct smtp_client_txn t = txn_for(T_BADFROM);
    int ok = 0;

    session_ready(&d, O_PLAIN, "250 mx.test\r\n");
    for (int i = 0; i < 20; i++)
        if (smtp_client_begin(d.cl, &t) == 0)
            ok++;
    ck_assert_int_gt(ok, 0);
    ck_assert_int_lt(ok, 20);
    drive_free(&d);
}
END_TEST

START_TEST(test_defaults)
{
    struct smtp_client_opts o = {.helo = "bad name\r\nRSET"};
    smtp_client_t *cl = smtp_client_new(&o);
    size_t len;
    const char *out;

    smtp_client_input(cl, "220 hi\r\n", 8);
    ck_assert_int_eq(smtp_client_next(cl)->type, SMTP_CLIENT_EV_GREETING);
    out = smtp_client_output(cl, &len);
    ck_assert_uint_eq(len, strlen("EHLO bad-name--RSET\r\n"));
    ck_assert(memcmp(out, "EHLO bad-name--RSET\r\n", len) == 0);
    smtp_client_destroy(&cl);
    ck_assert_ptr_null(cl);
    smtp_client_destroy(&cl);
}
END_TEST

START_TEST(test_output_done_past)
{
    struct smtp_client_opts o = {0};
    smtp_client_t *cl = smtp_client_new(&o);

    smtp_client_output_done(cl, 1);
}
END_TEST

static Suite *
smtp_client_suite(void)
{
    Suite *s = suite_create("smtp_client");
    TCase *tc = tcase_create("sessions");

    tcase_add_loop_test(tc, test_script, 0, NROWS(scripts));
    tcase_add_loop_test(tc, test_script_bytewise, 0, NROWS(scripts));
    suite_add_tcase(s, tc);

    tc = tcase_create("replies");
    tcase_add_test(tc, test_reply_text);
    tcase_add_test(tc, test_reply_ecode_class);
    tcase_add_test(tc, test_ehlo_caps);
    tcase_add_test(tc, test_line_limit);
    tcase_add_test(tc, test_line_flood);
    tcase_add_test(tc, test_too_many_lines);
    tcase_add_test(tc, test_input_backpressure);
    suite_add_tcase(s, tc);

    tc = tcase_create("transactions");
    tcase_add_test(tc, test_big_message);
    tcase_add_test(tc, test_phases);
    tcase_add_test(tc, test_phase_timeouts);
    tcase_add_test(tc, test_fail);
    tcase_add_test(tc, test_fail_permanent);
    tcase_add_test(tc, test_begin_errors);
    tcase_add_test(tc, test_begin_flood);
    tcase_add_test(tc, test_defaults);
    tcase_add_test_raise_signal(tc, test_output_done_past, SIGABRT);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(smtp_client_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
