/*
 * smtp_client.c - the ESMTP client engine (RFC 5321 and its extensions).
 *
 * Replies are parsed from a fixed input buffer one at a time, and only
 * while no event waits to be taken, so an event's reply stays put until
 * the caller asks for the next one. Every command sent pushes what it
 * expects onto a FIFO; each complete reply pops one (RFC 2920 3.2: replies
 * come in command order), so pipelined and lock-step sessions share one
 * dispatcher and differ only in how many commands go out at once.
 *
 * Message data is never copied whole: it is dot-stuffed (or, for BDAT,
 * copied raw) into the output SMTP_CLIENT_CHUNK octets at a time as the
 * caller drains it.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/smtp_addr.h"
#include "lib/smtp_client.h"
#include "lib/xalloc.h"

#define DEFAULT_HELO "localhost"
#define DEFAULT_MAX_LINE 512 /* RFC 5321 4.5.3.1.5 */
#define DEFAULT_MAX_LINES 100
#define EVENTS_MAX 8

/* What a command sent waits for. */
enum expect {
    X_GREETING,
    X_EHLO,
    X_HELO,
    X_STARTTLS,
    X_RSET,
    X_MAIL,
    X_RCPT,
    X_DATA,
    X_BDAT,
    X_DOT,
    X_DOT_IGNORE, /* "." after a 354 nobody wanted (RFC 2920 3.1) */
    X_QUIT,
};

struct expectation {
    enum expect what;
    int rcpt;
};

enum cstate {
    CS_GREETING,
    CS_EHLO,
    CS_STARTTLS,
    CS_TLS,   /* the caller's handshake */
    CS_READY, /* EHLO done: transactions */
    CS_QUIT,  /* QUIT sent, reply awaited */
    CS_DONE,
};

/* How message data is being queued. */
enum dstate { DS_NONE, DS_DATA, DS_BDAT, DS_QUEUED };

struct crcpt {
    char *addr; /* as given */
    char *path; /* normalised mailbox to send */
    unsigned notify;
    char *orcpt;
    bool utf8; /* the address holds UTF-8 */
    bool sent; /* RCPT went out */
    bool accepted;
    struct smtp_reply rcpt_reply; /* code 0 until answered */
    struct smtp_reply result;     /* code 0 until final */
};

struct smtp_client {
    /* Options, defaults filled in; the string is ours. */
    char *helo;
    size_t max_line;
    int max_lines;
    enum smtp_client_tls tls_policy;
    bool no_pipelining, chunking;

    enum cstate st;
    bool tls;
    unsigned ext;
    size_t size_max;
    bool quit_pending;

    /* Input not yet parsed: in[0..in_len). */
    char in[SMTP_CLIENT_INPUT_MAX];
    size_t in_len;

    /* The reply being parsed, then the last one parsed. */
    struct smtp_reply rep;
    buf_t rep_text;
    int rep_lines;
    bool rep_open;

    /* Output: out.data[out_off..out.len). */
    buf_t out;
    size_t out_off;

    /* Expected replies, a FIFO in exp[exp_head..exp_tail). */
    struct expectation *exp;
    int exp_head, exp_tail, exp_cap;

    /* Events not yet handed out. */
    struct smtp_client_event events[EVENTS_MAX];
    int ev_head, ev_count;
    struct smtp_client_event cur;
    struct smtp_reply why; /* for CLOSE */

    /* The transaction. */
    bool txn_pending; /* begun, waiting for the session */
    bool txn_active;  /* commands going out */
    bool txn_results; /* results readable */
    bool any_sent;    /* some transaction sent MAIL on this session */
    int ntxn;
    char *mail_from; /* normalised reverse-path */
    bool mail_utf8;
    struct crcpt *rcpts;
    int nrcpts;
    const char *data;
    size_t len;
    bool eight_bit, smtputf8;
    enum smtp_ret ret;
    char *envid;
    bool pipelining, bdat;
    bool mail_sent, mail_ok, mail_failed;
    int next_rcpt;  /* lock-step: the next RCPT to send */
    int nacc;       /* RCPTs accepted */
    bool data_sent; /* DATA or BDAT went out */
    enum dstate ds;
    size_t data_pos;
    bool data_bol;
    struct smtp_reply final; /* the reply all accepted recipients get */
};

static const struct smtp_client_event no_event = {.type = SMTP_CLIENT_EV_NONE};

static void panic(const char *what) __attribute__((noreturn));
static void session_failed(smtp_client_t *cl, const struct smtp_reply *why,
                           bool quit);
static void start_txn(smtp_client_t *cl);
static void txn_done(smtp_client_t *cl);

/* A broken invariant: the caller misused the interface. */
static void
panic(const char *what)
{
    fprintf(stderr, "smtp_client: PANIC: %s\n", what);
    abort();
}

/* --- replies kept ------------------------------------------------------- */

static void
reply_clear(struct smtp_reply *r)
{
    free((char *)r->text);
    memset(r, 0, sizeof(*r));
}

static void
reply_copy(struct smtp_reply *dst, const struct smtp_reply *src)
{
    char *t = xstrdup(src->text ? src->text : "");

    reply_clear(dst);
    *dst = *src;
    dst->text = t;
}

static void reply_local(struct smtp_reply *dst, int code, const char *ecode,
                        const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A reply the engine makes up. */
static void
reply_local(struct smtp_reply *dst, int code, const char *ecode,
            const char *fmt, ...)
{
    char text[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    reply_clear(dst);
    dst->code = code;
    snprintf(dst->ecode, sizeof(dst->ecode), "%s", ecode ? ecode : "");
    dst->text = xstrdup(text);
    dst->local = true;
}

/* The reply on one line, for the text of a local reply: "554 5.7.1 no". */
static void
reply_line(const struct smtp_reply *r, char *out, size_t outlen)
{
    size_t n;

    snprintf(out, outlen, "%d%s%s %s", r->code, r->ecode[0] ? " " : "",
             r->ecode, r->text ? r->text : "");
    for (n = 0; out[n]; n++)
        if (out[n] == '\n')
            out[n] = ' ';
}

/* --- output ------------------------------------------------------------- */

static void
expect(smtp_client_t *cl, enum expect what, int rcpt)
{
    if (cl->exp_tail == cl->exp_cap) {
        /* Compact first; grow only when the FIFO is really full. */
        int n = cl->exp_tail - cl->exp_head;

        if (cl->exp_head > 0) {
            memmove(cl->exp, cl->exp + cl->exp_head,
                    sizeof(*cl->exp) * (size_t)n);
            cl->exp_head = 0;
            cl->exp_tail = n;
        }
        if (cl->exp_tail == cl->exp_cap) {
            cl->exp_cap = cl->exp_cap ? cl->exp_cap * 2 : 16;
            cl->exp = xrealloc(cl->exp, sizeof(*cl->exp) * (size_t)cl->exp_cap);
        }
    }
    cl->exp[cl->exp_tail].what = what;
    cl->exp[cl->exp_tail++].rcpt = rcpt;
}

static bool
expecting(const smtp_client_t *cl)
{
    return cl->exp_head < cl->exp_tail;
}

static size_t
out_pending(const smtp_client_t *cl)
{
    return cl->out.len - cl->out_off;
}

static void send_cmd(smtp_client_t *cl, enum expect what, int rcpt,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Queues one command line and what its reply will be. */
static void
send_cmd(smtp_client_t *cl, enum expect what, int rcpt, const char *fmt, ...)
{
    va_list ap;
    char *line;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n < 0)
        panic("out of memory");
    buf_add(&cl->out, line, (size_t)n);
    buf_add(&cl->out, "\r\n", 2);
    free(line);
    expect(cl, what, rcpt);
}

/*
 * Queues message data until SMTP_CLIENT_CHUNK octets are waiting. DATA
 * text is dot-stuffed (RFC 5321 4.5.2) and every bare CR or LF goes out as
 * CRLF (2.3.8: they must not be sent; a bare LF before a dot is what SMTP
 * smuggling feeds on); a last line without its CRLF gets one before the
 * ".". BDAT octets go as they are (RFC 3030 2).
 */
static void
fill(smtp_client_t *cl)
{
    size_t budget;

    if (cl->ds != DS_DATA && cl->ds != DS_BDAT)
        return;
    if (out_pending(cl) >= SMTP_CLIENT_CHUNK / 2)
        return;
    if (cl->out_off > 0) {
        buf_consume(&cl->out, cl->out_off);
        cl->out_off = 0;
    }
    budget = SMTP_CLIENT_CHUNK - out_pending(cl);
    if (cl->ds == DS_BDAT) {
        size_t n = cl->len - cl->data_pos;

        if (n > budget)
            n = budget;
        buf_add(&cl->out, cl->data + cl->data_pos, n);
        cl->data_pos += n;
        if (cl->data_pos == cl->len)
            cl->ds = DS_QUEUED;
        return;
    }
    buf_reserve(&cl->out, budget * 2 + 8);
    while (cl->data_pos < cl->len && budget > 0) {
        const char *p = cl->data + cl->data_pos;
        size_t left = cl->len - cl->data_pos, run = 0;

        if (p[0] == '\r' || p[0] == '\n') {
            size_t eol = p[0] == '\r' && left > 1 && p[1] == '\n' ? 2 : 1;

            buf_add(&cl->out, "\r\n", 2);
            cl->data_pos += eol;
            budget = budget > eol ? budget - eol : 0;
            cl->data_bol = true;
            continue;
        }
        if (cl->data_bol && p[0] == '.')
            buf_addc(&cl->out, '.');
        /* The rest of the line goes in one copy. */
        while (run < left && run < budget && p[run] != '\r' && p[run] != '\n')
            run++;
        buf_add(&cl->out, p, run);
        cl->data_pos += run;
        budget -= run;
        cl->data_bol = false;
    }
    if (cl->data_pos == cl->len) {
        if (!cl->data_bol)
            buf_add(&cl->out, "\r\n", 2);
        buf_add(&cl->out, ".\r\n", 3);
        cl->ds = DS_QUEUED;
    }
}

/* --- events ------------------------------------------------------------- */

static void
news(smtp_client_t *cl, enum smtp_client_event_type type,
     const struct smtp_reply *reply, int rcpt)
{
    struct smtp_client_event *ev;

    for (int i = 0; type == SMTP_CLIENT_EV_READY && i < cl->ev_count; i++)
        if (cl->events[(cl->ev_head + i) % EVENTS_MAX].type == type)
            return;
    if (cl->ev_count == EVENTS_MAX)
        panic("event queue full");
    ev = &cl->events[(cl->ev_head + cl->ev_count++) % EVENTS_MAX];
    ev->type = type;
    ev->reply = reply;
    ev->rcpt = rcpt;
}

/* --- the transaction ---------------------------------------------------- */

static void
txn_free(smtp_client_t *cl)
{
    for (int i = 0; i < cl->nrcpts; i++) {
        struct crcpt *r = &cl->rcpts[i];

        free(r->addr);
        free(r->path);
        free(r->orcpt);
        reply_clear(&r->rcpt_reply);
        reply_clear(&r->result);
    }
    free(cl->rcpts);
    cl->rcpts = NULL;
    cl->nrcpts = 0;
    free(cl->mail_from);
    cl->mail_from = NULL;
    free(cl->envid);
    cl->envid = NULL;
    reply_clear(&cl->final);
    cl->data = NULL;
    cl->len = 0;
    cl->txn_pending = cl->txn_active = cl->txn_results = false;
    cl->ds = DS_NONE;
}

/* Gives every recipient still without a final reply this one. */
static void
settle_open(smtp_client_t *cl, const struct smtp_reply *r)
{
    for (int i = 0; i < cl->nrcpts; i++)
        if (cl->rcpts[i].result.code == 0)
            reply_copy(&cl->rcpts[i].result, r);
}

/* Gives every recipient the engine refused before sending this reply. */
static void
refuse_all(smtp_client_t *cl, int code, const char *ecode, const char *text)
{
    for (int i = 0; i < cl->nrcpts; i++)
        if (cl->rcpts[i].result.code == 0)
            reply_local(&cl->rcpts[i].result, code, ecode, "%s", text);
}

static void
ready(smtp_client_t *cl)
{
    if (cl->txn_pending) {
        start_txn(cl);
    } else if (cl->quit_pending) {
        cl->st = CS_QUIT;
        send_cmd(cl, X_QUIT, -1, "QUIT");
    } else {
        news(cl, SMTP_CLIENT_EV_READY, NULL, -1);
    }
}

/* The transaction is over: every recipient has its final reply. */
static void
txn_done(smtp_client_t *cl)
{
    struct smtp_reply none = {.code = 451,
                              .ecode = "4.3.0",
                              .text = "no reply for this recipient",
                              .local = true};

    settle_open(cl, &none);
    cl->txn_active = false;
    cl->txn_results = true;
    cl->ds = DS_NONE;
    cl->ntxn++;
    news(cl, SMTP_CLIENT_EV_DONE, NULL, -1);
    if (cl->st == CS_READY)
        ready(cl);
}

/* RFC 3461 4: xtext, "+XX" for "+", "=" and what is not printable. */
static void
xtext_encode(buf_t *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 33 || *p > 126 || *p == '+' || *p == '=')
            buf_printf(b, "+%02X", *p);
        else
            buf_addc(b, (char)*p);
    }
}

/* ORCPT as sent: "addr-type;xtext" when given so, else rfc822 and the
 * address encoded (RFC 3461 4.2). */
static void
orcpt_param(buf_t *b, const char *orcpt)
{
    const char *semi = strchr(orcpt, ';');
    bool atom = semi != NULL && semi > orcpt;

    for (const char *p = orcpt; atom && p < semi; p++)
        if (!isalnum((unsigned char)*p) && *p != '-')
            atom = false;
    buf_adds(b, " ORCPT=");
    if (atom && smtp_xtext_valid(semi + 1, strlen(semi + 1))) {
        buf_adds(b, orcpt);
        return;
    }
    buf_adds(b, "rfc822;");
    xtext_encode(b, orcpt);
}

static void
send_mail(smtp_client_t *cl)
{
    buf_t b = BUF_INIT;

    buf_printf(&b, "MAIL FROM:<%s>", cl->mail_from);
    if (cl->ext & SMTP_EXT_SIZE)
        buf_printf(&b, " SIZE=%zu", cl->len);
    if (cl->eight_bit && (cl->ext & SMTP_EXT_8BITMIME))
        buf_adds(&b, " BODY=8BITMIME");
    if ((cl->smtputf8 || cl->mail_utf8) && (cl->ext & SMTP_EXT_SMTPUTF8))
        buf_adds(&b, " SMTPUTF8");
    if (cl->ext & SMTP_EXT_DSN) {
        if (cl->ret != SMTP_RET_NONE)
            buf_adds(&b, cl->ret == SMTP_RET_FULL ? " RET=FULL" : " RET=HDRS");
        if (cl->envid && *cl->envid) { /* RFC 3461 4.4: 1*100 xtext */
            buf_adds(&b, " ENVID=");
            if (smtp_xtext_valid(cl->envid, strlen(cl->envid)))
                buf_adds(&b, cl->envid);
            else
                xtext_encode(&b, cl->envid);
        }
    }
    send_cmd(cl, X_MAIL, -1, "%s", b.data);
    buf_free(&b);
    cl->mail_sent = cl->any_sent = true;
}

static void
send_rcpt(smtp_client_t *cl, int i)
{
    struct crcpt *r = &cl->rcpts[i];
    buf_t b = BUF_INIT;

    buf_printf(&b, "RCPT TO:<%s>", r->path);
    if (cl->ext & SMTP_EXT_DSN) {
        if (r->notify & SMTP_NOTIFY_NEVER) {
            buf_adds(&b, " NOTIFY=NEVER");
        } else if (r->notify) {
            const char *sep = " NOTIFY=";

            if (r->notify & SMTP_NOTIFY_SUCCESS) {
                buf_printf(&b, "%sSUCCESS", sep);
                sep = ",";
            }
            if (r->notify & SMTP_NOTIFY_FAILURE) {
                buf_printf(&b, "%sFAILURE", sep);
                sep = ",";
            }
            if (r->notify & SMTP_NOTIFY_DELAY)
                buf_printf(&b, "%sDELAY", sep);
        }
        if (r->orcpt)
            orcpt_param(&b, r->orcpt);
    }
    send_cmd(cl, X_RCPT, i, "%s", b.data);
    buf_free(&b);
    r->sent = true;
}

/* DATA, or BDAT with the whole message as its one LAST chunk. */
static void
send_data(smtp_client_t *cl)
{
    cl->data_sent = true;
    if (cl->bdat) {
        send_cmd(cl, X_BDAT, -1, "BDAT %zu LAST", cl->len);
        cl->ds = DS_BDAT;
        cl->data_pos = 0;
        fill(cl);
    } else {
        send_cmd(cl, X_DATA, -1, "DATA");
    }
}

/* The next RCPT not refused already, from i; nrcpts when none. */
static int
next_sendable(const smtp_client_t *cl, int i)
{
    while (i < cl->nrcpts && cl->rcpts[i].result.code != 0)
        i++;
    return i;
}

/* Lock-step: sends the command that follows the reply just handled. */
static void
advance(smtp_client_t *cl)
{
    if (cl->pipelining || !cl->txn_active || expecting(cl))
        return;
    if (!cl->mail_sent) {
        send_mail(cl);
        return;
    }
    if (cl->mail_failed)
        return;
    cl->next_rcpt = next_sendable(cl, cl->next_rcpt);
    if (cl->next_rcpt < cl->nrcpts) {
        send_rcpt(cl, cl->next_rcpt++);
        return;
    }
    if (!cl->data_sent && cl->nacc > 0) {
        send_data(cl);
        return;
    }
    txn_done(cl);
}

/* The checks made before a word goes out (see smtp_client.h). */
static void
precheck(smtp_client_t *cl)
{
    bool all_utf8 = cl->smtputf8 || cl->mail_utf8;
    char text[200];

    if ((cl->ext & SMTP_EXT_SIZE) && cl->size_max > 0 &&
        cl->len > cl->size_max) {
        /* RFC 1870 6.1: the client should not send what the server said
         * it cannot take. */
        snprintf(text, sizeof(text),
                 "message size %zu exceeds the next "
                 "hop's limit of %zu",
                 cl->len, cl->size_max);
        refuse_all(cl, 552, "5.3.4", text);
    }
    /* XXX: converting to 7 bit (quoted-printable, RFC 6152 3) instead
     * would deliver more; refusing is what the RFC allows. */
    if (cl->eight_bit && !(cl->ext & SMTP_EXT_8BITMIME))
        refuse_all(cl, 554, "5.6.3",
                   "8-bit content not accepted by next "
                   "hop");
    if (all_utf8 && !(cl->ext & SMTP_EXT_SMTPUTF8))
        refuse_all(cl, 553, "5.6.7", "SMTPUTF8 not supported by next hop");
    for (int i = 0; i < cl->nrcpts; i++) {
        struct crcpt *r = &cl->rcpts[i];

        if (r->result.code == 0 && r->utf8 && !(cl->ext & SMTP_EXT_SMTPUTF8))
            reply_local(&r->result, 553, "5.6.7",
                        "SMTPUTF8 not supported "
                        "by next hop for this address");
    }
}

static void
start_txn(smtp_client_t *cl)
{
    cl->txn_pending = false;
    cl->txn_active = true;
    cl->mail_sent = cl->mail_ok = cl->mail_failed = cl->data_sent = false;
    cl->next_rcpt = cl->nacc = 0;
    cl->ds = DS_NONE;
    cl->data_pos = 0;
    cl->data_bol = true;
    cl->pipelining = (cl->ext & SMTP_EXT_PIPELINING) && !cl->no_pipelining;
    cl->bdat = (cl->ext & SMTP_EXT_CHUNKING) && cl->chunking;
    precheck(cl);
    if (next_sendable(cl, 0) == cl->nrcpts) {
        txn_done(cl);
        return;
    }
    /* RSET first on a session that carried a transaction: whatever state
     * the last one left, and whether the server is still there (a cached
     * connection may have been closed by the other end). */
    if (cl->any_sent)
        send_cmd(cl, X_RSET, -1, "RSET");
    if (!cl->pipelining) {
        advance(cl);
        return;
    }
    /* RFC 2920 3.1: MAIL and RCPT may be anywhere in a group, DATA and
     * BDAT LAST end it. */
    send_mail(cl);
    for (int i = 0; i < cl->nrcpts; i++)
        if (cl->rcpts[i].result.code == 0)
            send_rcpt(cl, i);
    send_data(cl);
}

/* --- session ------------------------------------------------------------ */

/* A reply of the server's as a 4xx for the recipients (a local one, the
 * engine's or the caller's, stays as it is): a failure of the
 * session is never final for them (RFC 5321 4.2.5 leaves the next MX or a
 * later try; Postfix's smtp_skip_5xx_greeting does the same). */
static void
as_temporary(const struct smtp_reply *why, struct smtp_reply *out)
{
    char line[700];

    if ((why->code >= 400 && why->code < 500) || why->local) {
        reply_copy(out, why);
        return;
    }
    reply_line(why, line, sizeof(line));
    reply_local(out, 451, "4.4.0", "session failed: %s", line);
    if (why->ecode[0] && why->ecode[0] != '4') {
        snprintf(out->ecode, sizeof(out->ecode), "4%s", why->ecode + 1);
    }
}

/* The session ends: recipients in hand get why (as a 4xx), DONE if there
 * was a transaction, then CLOSE. A QUIT goes out first when asked. */
static void
session_failed(smtp_client_t *cl, const struct smtp_reply *why, bool quit)
{
    struct smtp_reply tmp = {0};

    reply_copy(&cl->why, why);
    /* Half a message on the wire: a QUIT would be taken as data. */
    if (cl->ds != DS_NONE)
        quit = false;
    if (cl->txn_pending || cl->txn_active) {
        as_temporary(why, &tmp);
        settle_open(cl, &tmp);
        reply_clear(&tmp);
        cl->st = CS_DONE; /* no READY after this DONE */
        txn_done(cl);
    }
    cl->st = CS_DONE;
    cl->exp_head = cl->exp_tail = 0;
    cl->ds = DS_NONE;
    cl->in_len = 0;
    if (quit)
        buf_adds(&cl->out, "QUIT\r\n");
    news(cl, SMTP_CLIENT_EV_CLOSE, &cl->why, -1);
}

/* A failure of the engine's own making. */
static void
session_failed_local(smtp_client_t *cl, bool quit, int code, const char *ecode,
                     const char *text)
{
    struct smtp_reply r = {0};

    reply_local(&r, code, ecode, "%s", text);
    session_failed(cl, &r, quit);
    reply_clear(&r);
}

/* An error reply to a session command: 421 means the server is gone
 * (RFC 5321 3.8), anything else gets a QUIT. */
static void
session_refused(smtp_client_t *cl, const struct smtp_reply *r)
{
    session_failed(cl, r, r->code != 421);
}

static void
parse_ehlo(smtp_client_t *cl, const char *text)
{
    const char *line = strchr(text, '\n');

    cl->ext = 0;
    cl->size_max = 0;
    /* The first line is the server's name and greeting; each other line
     * is one keyword and its parameters (RFC 5321 4.1.1.1). */
    while (line != NULL) {
        char kw[32];
        size_t n;
        const char *arg;

        line++;
        n = strcspn(line, " =\n");
        arg = line + n;
        if (n > 0 && n < sizeof(kw)) {
            memcpy(kw, line, n);
            kw[n] = '\0';
            if (strcasecmp(kw, "SIZE") == 0) {
                cl->ext |= SMTP_EXT_SIZE;
                if (*arg == ' ') {
                    char *end;
                    unsigned long long v = strtoull(arg + 1, &end, 10);

                    if (end > arg + 1 &&
                        (*end == '\n' || *end == '\0' || *end == ' '))
                        cl->size_max = v > SIZE_MAX ? SIZE_MAX : (size_t)v;
                }
            } else if (strcasecmp(kw, "PIPELINING") == 0) {
                cl->ext |= SMTP_EXT_PIPELINING;
            } else if (strcasecmp(kw, "8BITMIME") == 0) {
                cl->ext |= SMTP_EXT_8BITMIME;
            } else if (strcasecmp(kw, "SMTPUTF8") == 0) {
                cl->ext |= SMTP_EXT_SMTPUTF8;
            } else if (strcasecmp(kw, "STARTTLS") == 0) {
                cl->ext |= SMTP_EXT_STARTTLS;
            } else if (strcasecmp(kw, "DSN") == 0) {
                cl->ext |= SMTP_EXT_DSN;
            } else if (strcasecmp(kw, "CHUNKING") == 0) {
                cl->ext |= SMTP_EXT_CHUNKING;
            } else if (strcasecmp(kw, "ENHANCEDSTATUSCODES") == 0) {
                cl->ext |= SMTP_EXT_ENHANCEDSTATUSCODES;
            } else if (strcasecmp(kw, "AUTH") == 0) {
                cl->ext |= SMTP_EXT_AUTH;
            }
        }
        line = strchr(line, '\n');
    }
    /* RFC 3207 4.2: STARTTLS is not offered (nor taken) under TLS. */
    if (cl->tls)
        cl->ext &= ~(unsigned)SMTP_EXT_STARTTLS;
}

static void
send_ehlo(smtp_client_t *cl)
{
    cl->st = CS_EHLO;
    send_cmd(cl, X_EHLO, -1, "EHLO %s", cl->helo);
}

/* EHLO or HELO answered: STARTTLS by policy, else ready. */
static void
after_ehlo(smtp_client_t *cl)
{
    if (!cl->tls && cl->tls_policy != SMTP_CLIENT_TLS_NONE &&
        (cl->ext & SMTP_EXT_STARTTLS)) {
        cl->st = CS_STARTTLS;
        send_cmd(cl, X_STARTTLS, -1, "STARTTLS");
        return;
    }
    if (!cl->tls && cl->tls_policy == SMTP_CLIENT_TLS_MUST) {
        session_failed_local(cl, true, 451, "4.7.4",
                             "TLS is required, "
                             "but was not offered by the server");
        return;
    }
    cl->st = CS_READY;
    ready(cl);
}

static bool
is2xx(const struct smtp_reply *r)
{
    return r->code >= 200 && r->code < 300;
}

/* The reply to a session command (greeting, EHLO, HELO, STARTTLS, QUIT). */
static void
on_session_reply(smtp_client_t *cl, enum expect what)
{
    struct smtp_reply *r = &cl->rep;
    char line[700];

    switch (what) {
    case X_GREETING:
        if (r->code != 220) {
            session_refused(cl, r);
            return;
        }
        news(cl, SMTP_CLIENT_EV_GREETING, r, -1);
        send_ehlo(cl);
        return;
    case X_EHLO:
        if (is2xx(r)) {
            parse_ehlo(cl, r->text);
            news(cl, SMTP_CLIENT_EV_EHLO, r, -1);
            after_ehlo(cl);
            return;
        }
        if (r->code == 421) {
            session_refused(cl, r);
            return;
        }
        if (cl->tls_policy == SMTP_CLIENT_TLS_MUST && !cl->tls) {
            reply_line(r, line, sizeof(line));
            session_failed_local(cl, true, 451, "4.7.4", line);
            return;
        }
        /* RFC 5321 3.2: a server that does not know EHLO gets HELO. */
        send_cmd(cl, X_HELO, -1, "HELO %s", cl->helo);
        return;
    case X_HELO:
        if (!is2xx(r)) {
            session_refused(cl, r);
            return;
        }
        cl->ext = 0;
        cl->size_max = 0;
        news(cl, SMTP_CLIENT_EV_EHLO, r, -1);
        after_ehlo(cl);
        return;
    case X_STARTTLS:
        if (r->code == 220) {
            /* RFC 3207 5 (CVE-2011-0411): what came after the 220 in clear
             * must not be taken as said under TLS. */
            cl->in_len = 0;
            cl->st = CS_TLS;
            news(cl, SMTP_CLIENT_EV_STARTTLS, r, -1);
            return;
        }
        if (r->code == 421) {
            session_refused(cl, r);
            return;
        }
        if (cl->tls_policy == SMTP_CLIENT_TLS_MUST) {
            char text[800];

            reply_line(r, line, sizeof(line));
            snprintf(text, sizeof(text), "STARTTLS refused: %s", line);
            session_failed_local(cl, true, 451, "4.7.4", text);
            return;
        }
        /* RFC 7435: opportunistic, so on in clear. */
        cl->st = CS_READY;
        ready(cl);
        return;
    case X_QUIT:
        cl->st = CS_DONE;
        news(cl, SMTP_CLIENT_EV_QUIT, r, -1);
        return;
    default:
        panic("not a session reply");
    }
}

/* Gives every accepted recipient the reply to the data (or to DATA). */
static void
settle_accepted(smtp_client_t *cl, const struct smtp_reply *r)
{
    for (int i = 0; i < cl->nrcpts; i++)
        if (cl->rcpts[i].accepted && cl->rcpts[i].result.code == 0)
            reply_copy(&cl->rcpts[i].result, r);
}

/* The reply to a transaction command. */
static void
on_txn_reply(smtp_client_t *cl, const struct expectation *x)
{
    struct smtp_reply *r = &cl->rep;

    switch (x->what) {
    case X_RSET:
        if (!is2xx(r)) {
            char line[700], text[800];

            if (r->code == 421) {
                session_refused(cl, r);
                return;
            }
            reply_line(r, line, sizeof(line));
            snprintf(text, sizeof(text), "RSET refused: %s", line);
            session_failed_local(cl, true, 451, "4.3.0", text);
            return;
        }
        break;
    case X_MAIL:
        if (is2xx(r)) {
            cl->mail_ok = true;
            break;
        }
        cl->mail_failed = true;
        settle_open(cl, r);
        if (r->code == 421) {
            session_refused(cl, r);
            return;
        }
        if (!cl->pipelining) {
            txn_done(cl);
            return;
        }
        break; /* the RCPT and DATA replies of the group follow */
    case X_RCPT: {
        struct crcpt *rc = &cl->rcpts[x->rcpt];

        if (cl->mail_failed)
            break;
        reply_copy(&rc->rcpt_reply, r);
        if (is2xx(r)) {
            rc->accepted = true;
            cl->nacc++;
        } else {
            reply_copy(&rc->result, r);
        }
        news(cl, SMTP_CLIENT_EV_RCPT, &rc->rcpt_reply, x->rcpt);
        if (r->code == 421) {
            session_refused(cl, r);
            return;
        }
        break;
    }
    case X_DATA:
        if (r->code == 354) {
            if (cl->mail_ok && cl->nacc > 0) {
                cl->ds = DS_DATA;
                expect(cl, X_DOT, -1);
                fill(cl);
            } else {
                /* RFC 2920 3.1: the server took DATA although nobody is
                 * to get the message: an empty one ends it. */
                buf_add(&cl->out, ".\r\n", 3);
                expect(cl, X_DOT_IGNORE, -1);
            }
            return;
        }
        if (!cl->mail_failed)
            settle_accepted(cl, r);
        if (r->code == 421) {
            session_refused(cl, r);
            return;
        }
        txn_done(cl);
        return;
    case X_BDAT:
    case X_DOT:
        if (!cl->mail_failed)
            settle_accepted(cl, r);
        if (r->code == 421) {
            session_refused(cl, r);
            return;
        }
        if (cl->ds != DS_QUEUED && cl->ds != DS_NONE) {
            /* An answer before the end of the data: the stream cannot go
             * on; the recipients have it, the session is over. */
            session_failed_local(cl, false, 451, "4.5.0",
                                 "reply before the end of the data");
            return;
        }
        txn_done(cl);
        return;
    case X_DOT_IGNORE:
        txn_done(cl);
        return;
    default:
        panic("not a transaction reply");
    }
    advance(cl);
}

/* One complete reply is in cl->rep: the command it answers decides. */
static void
dispatch(smtp_client_t *cl)
{
    struct expectation x;

    if (!expecting(cl)) {
        /* A reply nobody asked for: a server closing an idle session
         * (421, RFC 5321 3.8), or one out of step. */
        if (cl->rep.code == 421)
            session_refused(cl, &cl->rep);
        else
            session_failed_local(cl, true, 451, "4.5.0",
                                 "reply out of sequence from the server");
        return;
    }
    x = cl->exp[cl->exp_head++];
    if (cl->exp_head == cl->exp_tail)
        cl->exp_head = cl->exp_tail = 0;
    switch (x.what) {
    case X_GREETING:
    case X_EHLO:
    case X_HELO:
    case X_STARTTLS:
    case X_QUIT:
        on_session_reply(cl, x.what);
        break;
    default:
        on_txn_reply(cl, &x);
        break;
    }
}

/* --- reply parser ------------------------------------------------------- */

/* An RFC 3463 code at the start of s (len bytes) of class cls: its length
 * with the space after it, else 0. */
static size_t
ecode_at(const char *s, size_t len, int cls)
{
    size_t i = 2, n;

    if (len < 5 || s[0] != '0' + cls || s[1] != '.')
        return 0;
    for (int part = 0; part < 2; part++) {
        for (n = 0; i + n < len && isdigit((unsigned char)s[i + n]); n++)
            ;
        if (n == 0 || n > 3)
            return 0;
        i += n;
        if (part == 0) {
            if (i >= len || s[i] != '.')
                return 0;
            i++;
        }
    }
    if (i < len && s[i] != ' ')
        return 0;
    return i < len ? i + 1 : i;
}

/* One reply line (without its line end). Returns 1 when it was the last
 * of a reply, 0 when more follow, -1 after a failure (session over). */
static int
reply_line_take(smtp_client_t *cl, const char *s, size_t n)
{
    int code;
    bool last;
    size_t e;

    if (n < 3 || !isdigit((unsigned char)s[0]) || s[0] < '2' || s[0] > '5' ||
        !isdigit((unsigned char)s[1]) || !isdigit((unsigned char)s[2]) ||
        (n > 3 && s[3] != ' ' && s[3] != '-')) {
        session_failed_local(cl, true, 451, "4.5.0",
                             "malformed reply from the server");
        return -1;
    }
    code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    last = n == 3 || s[3] == ' ';
    if (cl->rep_open && code != cl->rep.code) {
        /* RFC 5321 4.2.1: every line of a reply has the same code. */
        session_failed_local(cl, true, 451, "4.5.0",
                             "malformed multi-line reply from the server");
        return -1;
    }
    if (++cl->rep_lines > cl->max_lines) {
        session_failed_local(cl, true, 451, "4.5.0",
                             "reply with too many lines from the server");
        return -1;
    }
    s += n > 3 ? 4 : 3;
    n -= n > 3 ? 4 : 3;
    if (!cl->rep_open) {
        cl->rep_open = true;
        cl->rep.code = code;
        cl->rep.ecode[0] = '\0';
        buf_reset(&cl->rep_text);
        if ((e = ecode_at(s, n, code / 100)) > 0) {
            size_t el = s[e - 1] == ' ' ? e - 1 : e;

            memcpy(cl->rep.ecode, s, el);
            cl->rep.ecode[el] = '\0';
        }
    } else {
        buf_addc(&cl->rep_text, '\n');
    }
    /* RFC 2034 2: each line may repeat the enhanced code. */
    if (cl->rep.ecode[0] && (e = ecode_at(s, n, code / 100)) > 0) {
        s += e;
        n -= e;
    }
    {
        bool utf8 = smtp_utf8_valid(s, n);

        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];

            buf_addc(&cl->rep_text,
                     c < 32 || c == 127 || (c > 127 && !utf8) ? '?' : (char)c);
        }
    }
    return last ? 1 : 0;
}

/* Parses what input there is: 1 with a whole reply in cl->rep, 0 when
 * more is needed, -1 when the session failed. */
static int
parse_reply(smtp_client_t *cl)
{
    size_t off = 0;
    int rc = 0;

    while (rc == 0) {
        const char *s = cl->in + off, *nl;
        size_t avail = cl->in_len - off, n;

        nl = memchr(s, '\n', avail);
        if (nl == NULL) {
            if (avail >= cl->max_line) {
                session_failed_local(cl, true, 451, "4.5.0",
                                     "reply line too long from the server");
                return -1;
            }
            break;
        }
        n = (size_t)(nl - s) + 1;
        if (n > cl->max_line) {
            session_failed_local(cl, true, 451, "4.5.0",
                                 "reply line too long from the server");
            return -1;
        }
        off += n;
        n--; /* LF */
        if (n > 0 && s[n - 1] == '\r')
            n--;
        rc = reply_line_take(cl, s, n);
        if (rc < 0)
            return -1;
    }
    if (off > 0) {
        memmove(cl->in, cl->in + off, cl->in_len - off);
        cl->in_len -= off;
    }
    if (rc == 1) {
        cl->rep_open = false;
        cl->rep_lines = 0;
        cl->rep.text = cl->rep_text.data ? cl->rep_text.data : "";
        cl->rep.local = false;
    }
    return rc;
}

/* --- interface ---------------------------------------------------------- */

smtp_client_t *
smtp_client_new(const struct smtp_client_opts *o)
{
    smtp_client_t *cl = xcalloc(1, sizeof(*cl));

    cl->helo = xstrdup(o->helo && *o->helo ? o->helo : DEFAULT_HELO);
    for (char *p = cl->helo; *p; p++)
        if ((unsigned char)*p <= 32 || *p == 127)
            *p = '-'; /* a misconfigured name must not split the line */
    cl->max_line = o->max_line ? o->max_line : DEFAULT_MAX_LINE;
    if (cl->max_line < DEFAULT_MAX_LINE)
        cl->max_line = DEFAULT_MAX_LINE;
    if (cl->max_line > SMTP_CLIENT_INPUT_MAX)
        cl->max_line = SMTP_CLIENT_INPUT_MAX;
    cl->max_lines = o->max_lines > 0 ? o->max_lines : DEFAULT_MAX_LINES;
    cl->tls_policy = o->tls;
    cl->tls = o->tls_active;
    cl->no_pipelining = o->no_pipelining;
    cl->chunking = o->chunking;
    cl->st = CS_GREETING;
    expect(cl, X_GREETING, -1);
    return cl;
}

void
smtp_client_destroy(smtp_client_t **cl_p)
{
    smtp_client_t *cl = *cl_p;

    if (cl == NULL)
        return;
    txn_free(cl);
    reply_clear(&cl->why);
    buf_free(&cl->rep_text);
    buf_free(&cl->out);
    free(cl->exp);
    free(cl->helo);
    free(cl);
    *cl_p = NULL;
}

size_t
smtp_client_input(smtp_client_t *cl, const void *data, size_t len)
{
    size_t room;

    if (cl->st == CS_DONE || cl->st == CS_TLS)
        return len;
    room = sizeof(cl->in) - cl->in_len;
    if (len > room)
        len = room;
    memcpy(cl->in + cl->in_len, data, len);
    cl->in_len += len;
    return len;
}

const struct smtp_client_event *
smtp_client_next(smtp_client_t *cl)
{
    while (cl->ev_count == 0 && cl->st != CS_DONE && cl->st != CS_TLS &&
           cl->in_len > 0) {
        if (parse_reply(cl) != 1)
            break;
        dispatch(cl);
    }
    while (cl->ev_count > 0) {
        cl->cur = cl->events[cl->ev_head];
        cl->ev_head = (cl->ev_head + 1) % EVENTS_MAX;
        cl->ev_count--;
        /* A READY queued before the caller began a transaction is stale. */
        if (cl->cur.type != SMTP_CLIENT_EV_READY || smtp_client_idle(cl))
            return &cl->cur;
    }
    return &no_event;
}

const char *
smtp_client_output(const smtp_client_t *cl, size_t *len)
{
    *len = out_pending(cl);
    return *len ? cl->out.data + cl->out_off : "";
}

void
smtp_client_output_done(smtp_client_t *cl, size_t n)
{
    if (n > out_pending(cl))
        panic("output_done past the output");
    cl->out_off += n;
    if (cl->out_off == cl->out.len) {
        buf_reset(&cl->out);
        cl->out_off = 0;
    }
    fill(cl);
}

int
smtp_client_begin(smtp_client_t *cl, const struct smtp_client_txn *t)
{
    struct smtp_path p;
    const char *why;

    if (cl->st == CS_DONE || cl->st == CS_QUIT || cl->quit_pending)
        return ERR_CLOSED;
    /* A transaction refused whole at once queues DONE and READY: the
     * caller must take events between such calls. */
    if (cl->txn_pending || cl->txn_active || t->nrcpts < 1 ||
        cl->ev_count > EVENTS_MAX - 4 || t->mail_from == NULL ||
        (t->data == NULL && t->len > 0))
        return ERR_INVAL;
    txn_free(cl);
    cl->rcpts = xcalloc((size_t)t->nrcpts, sizeof(*cl->rcpts));
    cl->nrcpts = t->nrcpts;
    cl->data = t->data ? t->data : "";
    cl->len = t->len;
    cl->eight_bit = t->eight_bit;
    cl->smtputf8 = t->smtputf8;
    cl->ret = t->ret;
    cl->envid = t->envid ? xstrdup(t->envid) : NULL;
    if (smtp_mailbox_parse(t->mail_from, strlen(t->mail_from),
                           SMTP_ADDR_NULL_OK | SMTP_ADDR_UTF8, &p, &why) == 0) {
        cl->mail_from = xstrdup(p.mailbox);
        cl->mail_utf8 = p.utf8;
    } else {
        cl->mail_from = xstrdup("");
    }
    for (int i = 0; i < t->nrcpts; i++) {
        const struct smtp_client_rcpt *src = &t->rcpts[i];
        struct crcpt *r = &cl->rcpts[i];

        r->addr = xstrdup(src->addr ? src->addr : "");
        r->notify = src->notify;
        r->orcpt = src->orcpt ? xstrdup(src->orcpt) : NULL;
        if (smtp_mailbox_parse(r->addr, strlen(r->addr),
                               SMTP_ADDR_UTF8 | SMTP_ADDR_POSTMASTER, &p,
                               &why) == 0) {
            r->path = xstrdup(p.mailbox);
            r->utf8 = p.utf8;
        } else {
            reply_local(&r->result, 553, "5.1.3",
                        "bad recipient address "
                        "syntax: %s",
                        why);
        }
    }
    if (cl->mail_from[0] == '\0' && t->mail_from[0] != '\0')
        refuse_all(cl, 553, "5.1.7", "bad sender address syntax");
    cl->txn_pending = true;
    if (cl->st == CS_READY && !expecting(cl))
        start_txn(cl);
    return 0;
}

const struct smtp_reply *
smtp_client_result(const smtp_client_t *cl, int i)
{
    if (!cl->txn_results || i < 0 || i >= cl->nrcpts)
        return NULL;
    return &cl->rcpts[i].result;
}

void
smtp_client_quit(smtp_client_t *cl)
{
    if (cl->st == CS_DONE || cl->st == CS_QUIT || cl->quit_pending)
        return;
    cl->quit_pending = true;
    if (cl->st == CS_READY && !cl->txn_active && !cl->txn_pending &&
        !expecting(cl)) {
        cl->st = CS_QUIT;
        send_cmd(cl, X_QUIT, -1, "QUIT");
    }
}

void
smtp_client_tls_started(smtp_client_t *cl)
{
    if (cl->st != CS_TLS)
        return;
    cl->tls = true;
    cl->ext = 0;
    cl->size_max = 0;
    cl->in_len = 0;
    send_ehlo(cl);
}

void
smtp_client_fail(smtp_client_t *cl, int code, const char *ecode,
                 const char *text)
{
    if (cl->st == CS_DONE)
        return;
    buf_reset(&cl->out);
    cl->out_off = 0;
    session_failed_local(cl, false, code, ecode, text ? text : "");
}

enum smtp_client_phase
smtp_client_phase(const smtp_client_t *cl)
{
    switch (cl->st) {
    case CS_GREETING:
        return SMTP_PHASE_GREETING;
    case CS_EHLO:
        return SMTP_PHASE_EHLO;
    case CS_STARTTLS:
        return SMTP_PHASE_STARTTLS;
    case CS_TLS:
        return SMTP_PHASE_TLS;
    case CS_QUIT:
        return SMTP_PHASE_QUIT;
    case CS_DONE:
        return SMTP_PHASE_DONE;
    case CS_READY:
        break;
    }
    if (cl->ds == DS_DATA || cl->ds == DS_BDAT ||
        (cl->ds == DS_QUEUED && out_pending(cl) > 0))
        return SMTP_PHASE_DATA_BLOCK;
    if (!expecting(cl))
        return SMTP_PHASE_IDLE;
    switch (cl->exp[cl->exp_head].what) {
    case X_RSET:
        return SMTP_PHASE_RSET;
    case X_MAIL:
        return SMTP_PHASE_MAIL;
    case X_RCPT:
        return SMTP_PHASE_RCPT;
    case X_DATA:
        return SMTP_PHASE_DATA_INIT;
    default:
        return SMTP_PHASE_DATA_END;
    }
}

const char *
smtp_client_phase_name(enum smtp_client_phase p)
{
    static const char *const names[] = {
        "greeting", "ehlo", "starttls", "tls",       "idle",
        "rset",     "mail", "rcpt",     "data_init", "data_block",
        "data_end", "quit", "done"};

    if ((unsigned)p < sizeof(names) / sizeof(names[0]))
        return names[p];
    return "unknown";
}

long
smtp_client_phase_timeout_ms(enum smtp_client_phase p)
{
    const long min = 60 * 1000;

    switch (p) {
    case SMTP_PHASE_IDLE:
    case SMTP_PHASE_DONE:
        return 0;
    case SMTP_PHASE_DATA_INIT:
        return 2 * min; /* 4.5.3.2.4 */
    case SMTP_PHASE_DATA_BLOCK:
        return 3 * min; /* 4.5.3.2.5 */
    case SMTP_PHASE_DATA_END:
        return 10 * min; /* 4.5.3.2.6 */
    default:
        return 5 * min; /* 4.5.3.2.1-3 */
    }
}

unsigned
smtp_client_ext(const smtp_client_t *cl)
{
    return cl->ext;
}

size_t
smtp_client_size_max(const smtp_client_t *cl)
{
    return cl->size_max;
}

bool
smtp_client_tls(const smtp_client_t *cl)
{
    return cl->tls;
}

bool
smtp_client_idle(const smtp_client_t *cl)
{
    return cl->st == CS_READY && !cl->txn_active && !cl->txn_pending &&
           !expecting(cl) && !cl->quit_pending;
}

bool
smtp_client_done(const smtp_client_t *cl)
{
    return cl->st == CS_DONE;
}

int
smtp_client_transactions(const smtp_client_t *cl)
{
    return cl->ntxn;
}
