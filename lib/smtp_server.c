/*
 * smtp_server.c - the ESMTP server engine (RFC 5321 and its extensions).
 *
 * Input is copied into a buffer and parsed by smtp_server_next(): one
 * command line at a time (so pipelined commands run in order, RFC 2920 3.1),
 * or, in DATA and BDAT, straight into the message buffer. A command that
 * needs the caller's decision parks the engine until smtp_server_reply();
 * everything else the engine answers itself. Nothing here recurses on
 * input, and every buffer has a fixed ceiling (see smtp_server.h).
 *
 * The buffers start small, since an idle session needs a few hundred
 * bytes, and grow to their ceilings only for what needs it (an AUTH line
 * of 12 KB, a burst of pipelined input, many queued replies); once the
 * engine waits for a command again, or the output is sent, they shrink
 * back. The ceilings, not the sizes, decide what is taken and when the
 * client is held back.
 *
 * Event data lives in the engine: the command line is copied into line[]
 * and the event's strings point into it, so feeding more input while a
 * decision is pending never moves them.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/buf.h"
#include "lib/smtp_addr.h"
#include "lib/smtp_server_int.h"
#include "lib/xalloc.h"

#define DEFAULT_HOSTNAME "localhost"
#define DEFAULT_MAX_LINE 512       /* RFC 5321 4.5.3.1.4 */
#define DEFAULT_MAX_TEXT_LINE 1000 /* RFC 5321 4.5.3.1.6 */
#define DEFAULT_MAX_MESSAGE 10485760
#define DEFAULT_MAX_RCPTS 100 /* RFC 5321 4.5.3.1.8 */
#define DEFAULT_MAX_ERRORS 20
#define DEFAULT_AUTH_MECHS "PLAIN LOGIN"

/* A line without an end, this many times its limit long, is not a mistake
 * but a flood: the session is closed. */
#define FLOOD_FACTOR 4

static const struct smtp_event no_event = {.type = SMTP_EV_NONE};

static void panic(const char *what) __attribute__((noreturn));

/* A broken invariant: the caller misused the interface. */
static void
panic(const char *what)
{
    fprintf(stderr, "smtp_server: PANIC: %s\n", what);
    abort();
}

static bool
ecode_valid(const char *e, int code)
{
    /* RFC 3463 2: class "." subject "." detail; 1-3 digits each. */
    size_t n;

    if (e == NULL || e[0] != '0' + code / 100 || e[1] != '.')
        return false;
    e += 2;
    for (int part = 0; part < 2; part++) {
        n = strspn(e, "0123456789");
        if (n == 0 || n > 3)
            return false;
        e += n;
        if (part == 0 && *e++ != '.')
            return false;
    }
    return *e == '\0';
}

/*
 * Queues one reply: text split at "\n" into lines "code-text" ... "code
 * text" (RFC 5321 4.2.1), each at most 512 octets, control and non-ASCII
 * octets replaced by "?". ecode (already checked) is put before the text of
 * each line when ENHANCEDSTATUSCODES is offered (RFC 2034 3).
 */
void
smtp_server_put_reply(smtp_server_t *srv, int code, const char *ecode,
                      const char *text)
{
    const char *p = text ? text : "";
    bool enh = ecode && (srv->ext & SMTP_EXT_ENHANCEDSTATUSCODES);

    for (;;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p), room;
        bool last = nl == NULL || nl[1] == '\0';

        if (n > 0 && p[n - 1] == '\r')
            n--;
        buf_printf(&srv->out, "%03d%c", code, last ? ' ' : '-');
        room = REPLY_LINE_MAX - 4 - 2;
        if (enh) {
            buf_printf(&srv->out, "%s ", ecode);
            room -= strlen(ecode) + 1;
        }
        if (n > room)
            n = room;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)p[i];

            buf_addc(&srv->out, c < 32 || c > 126 ? '?' : (char)c);
        }
        buf_add(&srv->out, "\r\n", 2);
        if (last)
            break;
        p = nl + 1;
    }
}

void
smtp_server_replyf(smtp_server_t *srv, int code, const char *ecode,
                   const char *fmt, ...)
{
    char text[REPLY_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    smtp_server_put_reply(srv, code, ecode, text);
}

void
smtp_server_data_reply(smtp_server_t *srv, int code, const char *ecode,
                       const char *fmt, ...)
{
    char text[REPLY_LINE_MAX];
    va_list ap;
    int n = srv->lmtp && srv->nrcpts > 0 ? srv->nrcpts : 1;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    for (int i = 0; i < n; i++)
        smtp_server_put_reply(srv, code, ecode, text);
}

void
smtp_server_news(smtp_server_t *srv, enum smtp_event_type type)
{
    if (srv->nnews == NEWS_MAX)
        panic("news queue full");
    srv->news[srv->nnews++] = type;
}

/* The session ends here: 421 (RFC 5321 3.8), then SMTP_EV_CLOSE. */
static void
shut(smtp_server_t *srv, const char *ecode, const char *text)
{
    smtp_server_reset_txn(srv);
    smtp_server_replyf(srv, 421, ecode, "%s %s", srv->hostname, text);
    smtp_server_news(srv, SMTP_EV_CLOSE);
    srv->st = ST_DONE;
    srv->pending = SMTP_EV_NONE;
    srv->dec_ready = false;
}

/* A refusal of a bad command (or of one the caller refused): after
 * max_errors of them the client is not worth talking to. */
void
smtp_server_count_error(smtp_server_t *srv)
{
    if (++srv->errors >= srv->max_errors && srv->st != ST_DONE)
        shut(srv, "4.7.0", "Error: too many errors");
}

void
smtp_server_refuse(smtp_server_t *srv, int code, const char *ecode,
                   const char *fmt, ...)
{
    char text[REPLY_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    smtp_server_put_reply(srv, code, ecode, text);
    smtp_server_count_error(srv);
}

/* Forgets the LMTP recipients and their answers. */
static void
lmtp_clear(smtp_server_t *srv)
{
    for (int i = 0; i < srv->nrcpts && srv->lmtp; i++) {
        free(srv->rcpt[i]);
        if (srv->ans)
            free(srv->ans[i].text);
    }
    free(srv->ans);
    srv->ans = NULL;
    srv->nanswered = 0;
}

/* Drops the transaction (RFC 5321 4.1.1.5 and the other places that reset
 * it) and tells the caller, who accepted its MAIL. */
void
smtp_server_reset_txn(smtp_server_t *srv)
{
    if (srv->trans)
        smtp_server_news(srv, SMTP_EV_RESET);
    srv->trans = srv->trans_utf8 = srv->bdat_used = false;
    lmtp_clear(srv);
    if (srv->rcpt_cap > 8) {
        free(srv->rcpt);
        srv->rcpt = NULL;
        srv->rcpt_cap = 0;
    }
    srv->nrcpts = 0;
    srv->msg_hint = 0;
    smtp_mail_clear(srv);
}

void
smtp_server_decide(smtp_server_t *srv, enum smtp_event_type type)
{
    srv->dec.type = type;
    srv->pending = type;
    srv->dec_ready = true;
}

static bool
prefix_is(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);

    return len >= n && strncasecmp(s, word, n) == 0;
}

/* The limit of the line starting at s (with CRLF): 512 for a command, 12288
 * plus CRLF for AUTH and the SASL responses (RFC 4954 4). */
static size_t
line_limit(const smtp_server_t *srv, const char *s, size_t avail)
{
    size_t auth = SMTP_AUTH_LINE_MAX + 2;

    if (srv->st == ST_AUTH || prefix_is(s, avail, "AUTH "))
        return auth > srv->max_line ? auth : srv->max_line;
    return srv->max_line;
}

void
smtp_server_consume(smtp_server_t *srv, size_t n)
{
    srv->in_off += n;
    if (srv->in_off == srv->in_len)
        srv->in_off = srv->in_len = 0;
}

bool
smtp_server_offered(const smtp_server_t *srv, unsigned ext)
{
    return srv->esmtp && (srv->ext & ext);
}

bool
smtp_server_auth_offered(const smtp_server_t *srv)
{
    return (srv->ext & SMTP_EXT_AUTH) && (srv->tls || !srv->auth_needs_tls);
}

static void
ehlo_reply(smtp_server_t *srv)
{
    buf_t b = BUF_INIT;

    buf_printf(&b, "%s", srv->hostname);
    if (srv->ext & SMTP_EXT_PIPELINING)
        buf_adds(&b, "\nPIPELINING");
    if (srv->ext & SMTP_EXT_SIZE)
        buf_printf(&b, "\nSIZE %zu", srv->max_message);
    if (srv->ext & SMTP_EXT_8BITMIME)
        buf_adds(&b, "\n8BITMIME");
    if (srv->ext & SMTP_EXT_SMTPUTF8)
        buf_adds(&b, "\nSMTPUTF8");
    if (srv->ext & SMTP_EXT_ENHANCEDSTATUSCODES)
        buf_adds(&b, "\nENHANCEDSTATUSCODES");
    if (srv->ext & SMTP_EXT_CHUNKING)
        buf_adds(&b, "\nCHUNKING");
    if (srv->ext & SMTP_EXT_DSN)
        buf_adds(&b, "\nDSN");
    /* RFC 3207 4: not offered once under TLS. */
    if ((srv->ext & SMTP_EXT_STARTTLS) && !srv->tls)
        buf_adds(&b, "\nSTARTTLS");
    /* RFC 4954 4: not before TLS when policy says so; not again. */
    if (smtp_server_auth_offered(srv) && !srv->authed)
        buf_printf(&b, "\nAUTH %s", srv->auth_mechs);
    smtp_server_put_reply(srv, 250, NULL, b.data);
    buf_free(&b);
}

/* A domain or address literal (RFC 5321 4.1.1.1); checked only for being
 * one printable token, as the RFC says the name must not be refused for
 * failing to match the client's address (4.1.4). */
static bool
helo_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > SMTP_DOMAIN_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 32 || s[i] == 127)
            return false;
    return smtp_utf8_valid(s, n);
}

/* EHLO / HELO (RFC 5321 4.1.1.1), LHLO (RFC 2033 4.1, answered as EHLO):
 * resets the transaction (4.1.4). */
static void
cmd_helo(smtp_server_t *srv, char *arg, bool esmtp)
{
    if (!helo_name_ok(arg)) {
        smtp_server_refuse(srv, 501, "5.5.4", "Syntax: %s hostname",
                           srv->lmtp ? "LHLO"
                           : esmtp   ? "EHLO"
                                     : "HELO");
        return;
    }
    smtp_server_reset_txn(srv);
    free(srv->helo);
    srv->helo = xstrdup(arg);
    srv->esmtp = esmtp;
    if (esmtp)
        ehlo_reply(srv);
    else
        smtp_server_put_reply(srv, 250, NULL, srv->hostname);
    smtp_server_news(srv, SMTP_EV_HELO);
}

static void
cmd_starttls(smtp_server_t *srv, char *arg)
{
    if (!(srv->ext & SMTP_EXT_STARTTLS)) {
        smtp_server_refuse(srv, 502, "5.5.1", "Error: command not implemented");
    } else if (srv->tls) {
        /* RFC 3207 4: not offered, hence not accepted, under TLS. */
        smtp_server_refuse(srv, 503, "5.5.1", "Error: TLS already active");
    } else if (*arg) {
        /* RFC 3207 4: "501 Syntax error (no parameters allowed)". */
        smtp_server_refuse(srv, 501, "5.5.4",
                           "Syntax error (no parameters allowed)");
    } else if (srv->trans) {
        smtp_server_refuse(srv, 503, "5.5.1",
                           "Error: MAIL transaction in progress");
    } else {
        smtp_server_replyf(srv, 220, "2.0.0", "Ready to start TLS");
        /* RFC 3207 5 (CVE-2011-0411): what the client sent after
         * STARTTLS in clear must never run inside TLS. */
        srv->in_off = srv->in_len = 0;
        srv->st = ST_TLS;
        smtp_server_news(srv, SMTP_EV_STARTTLS);
    }
}

struct verb {
    const char *name;
    int id;
};

enum {
    V_HELO,
    V_EHLO,
    V_LHLO,
    V_MAIL,
    V_RCPT,
    V_DATA,
    V_BDAT,
    V_RSET,
    V_NOOP,
    V_QUIT,
    V_VRFY,
    V_EXPN,
    V_HELP,
    V_STARTTLS,
    V_AUTH,
    V_OLD,
    V_UNKNOWN
};

static const struct verb verbs[] = {
    {"HELO", V_HELO},
    {"EHLO", V_EHLO},
    {"LHLO", V_LHLO},
    {"MAIL", V_MAIL},
    {"RCPT", V_RCPT},
    {"DATA", V_DATA},
    {"BDAT", V_BDAT},
    {"RSET", V_RSET},
    {"NOOP", V_NOOP},
    {"QUIT", V_QUIT},
    {"VRFY", V_VRFY},
    {"EXPN", V_EXPN},
    {"HELP", V_HELP},
    {"STARTTLS", V_STARTTLS},
    {"AUTH", V_AUTH},
    /* Known, not implemented: RFC 821's SEND/SOML/SAML/TURN, RFC 1985
     * ETRN, RFC 2645 ATRN. */
    {"SEND", V_OLD},
    {"SOML", V_OLD},
    {"SAML", V_OLD},
    {"TURN", V_OLD},
    {"ETRN", V_OLD},
    {"ATRN", V_OLD},
};

static int
verb_id(const char *name)
{
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (strcasecmp(name, verbs[i].name) == 0)
            return verbs[i].id;
    return V_UNKNOWN;
}

/* One complete command line (CR LF removed, NUL-terminated, in line[]). */
static void
command(smtp_server_t *srv, char *line, size_t len)
{
    char *arg;
    int id;

    for (size_t i = 0; i < len; i++)
        if ((unsigned char)line[i] < 32 || line[i] == 127) {
            /* NUL, a bare CR and the like have no place in a command. */
            smtp_server_refuse(srv, 500, "5.5.2",
                               "Error: bad character in command");
            return;
        }
    arg = line + strcspn(line, " ");
    if (*arg)
        *arg++ = '\0';
    /* Trailing spaces are a common slip; RFC 5321 4.1.1 has none. */
    for (char *e = arg + strlen(arg); e > arg && e[-1] == ' ';)
        *--e = '\0';
    id = verb_id(line);

    if (srv->st == ST_REFUSED && id != V_QUIT) {
        /* RFC 5321 3.1: after a 554 greeting, only QUIT. */
        smtp_server_refuse(srv, 503, "5.5.1", "Error: no SMTP service here");
        return;
    }
    switch (id) {
    case V_HELO:
    case V_EHLO:
        if (srv->lmtp) {
            /* RFC 2033 4.1: an LMTP server must not accept them. */
            smtp_server_refuse(srv, 500, "5.5.1",
                               "Error: this is LMTP, say LHLO");
            break;
        }
        cmd_helo(srv, arg, id == V_EHLO);
        break;
    case V_LHLO:
        if (!srv->lmtp) {
            smtp_server_refuse(srv, 500, "5.5.2",
                               "Error: command not recognized");
            break;
        }
        cmd_helo(srv, arg, true);
        break;
    case V_MAIL:
        smtp_mail_from(srv, arg);
        break;
    case V_RCPT:
        smtp_mail_rcpt(srv, arg);
        break;
    case V_DATA:
        smtp_mail_data(srv, arg);
        break;
    case V_BDAT:
        smtp_mail_bdat(srv, arg);
        break;
    case V_RSET:
        /* RFC 5321 4.1.1.5: no parameters. */
        if (*arg) {
            smtp_server_refuse(srv, 501, "5.5.4", "Syntax: RSET");
            break;
        }
        smtp_server_reset_txn(srv);
        smtp_server_replyf(srv, 250, "2.0.0", "OK");
        break;
    case V_NOOP:
        /* RFC 5321 4.1.1.9: a parameter is ignored. */
        smtp_server_replyf(srv, 250, "2.0.0", "OK");
        break;
    case V_QUIT:
        if (*arg) {
            smtp_server_refuse(srv, 501, "5.5.4", "Syntax: QUIT");
            break;
        }
        smtp_server_reset_txn(srv);
        smtp_server_replyf(srv, 221, "2.0.0", "%s closing connection",
                           srv->hostname);
        smtp_server_news(srv, SMTP_EV_QUIT);
        srv->st = ST_DONE;
        break;
    case V_VRFY:
        /* RFC 5321 3.5.3 and 7.3: 252 tells nothing about accounts. */
        if (*arg == '\0')
            smtp_server_refuse(srv, 501, "5.5.4", "Syntax: VRFY address");
        else
            smtp_server_replyf(srv, 252, "2.5.0",
                               "Cannot VRFY user, but will accept "
                               "message and attempt delivery");
        break;
    case V_EXPN:
        /* RFC 5321 7.3: lists are not disclosed. */
        smtp_server_refuse(srv, 502, "5.5.1", "Error: EXPN not supported");
        break;
    case V_HELP:
        smtp_server_replyf(srv, 214, "2.0.0",
                           "Commands: %s MAIL RCPT DATA "
                           "BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
                           srv->lmtp ? "LHLO" : "EHLO HELO");
        break;
    case V_STARTTLS:
        cmd_starttls(srv, arg);
        break;
    case V_AUTH:
        smtp_auth_cmd(srv, arg);
        break;
    case V_OLD:
        smtp_server_refuse(srv, 502, "5.5.1", "Error: command not implemented");
        break;
    default:
        smtp_server_refuse(srv, 500, "5.5.2", "Error: command not recognized");
        break;
    }
    return;
}

/*
 * Takes one line from the input in command and SASL states. Returns true
 * when it made progress (a line handled, bytes skipped), false when it
 * needs more input. A decision it finds is left to smtp_server_next().
 */
static bool
line_step(smtp_server_t *srv)
{
    char *start = srv->in + srv->in_off, *lf;
    size_t avail = srv->in_len - srv->in_off, n, limit;

    if (avail == 0)
        return false;
    lf = memchr(start, '\n', avail);
    if (srv->skipping) {
        /* Inside a line over its limit: drop it to its end. */
        size_t take = lf ? (size_t)(lf - start) + 1 : avail;

        srv->skipped += take;
        smtp_server_consume(srv, take);
        limit = srv->st == ST_AUTH ? SMTP_AUTH_LINE_MAX + 2 : srv->max_line;
        if (lf == NULL && srv->skipped > FLOOD_FACTOR * limit) {
            shut(srv, "4.7.0", "Error: line too long");
            return true;
        }
        if (lf) {
            srv->skipping = false;
            if (srv->st == ST_AUTH) {
                smtp_auth_clear(srv);
                srv->st = ST_CMD;
            }
            /* RFC 5321 4.5.3.1.10: "500 Line too long". */
            smtp_server_refuse(srv, 500, "5.5.6", "Error: line too long");
        }
        return true;
    }
    limit = line_limit(srv, start, avail);
    if (lf == NULL) {
        if (avail > limit) {
            srv->skipping = true;
            srv->skipped = 0;
            return true;
        }
        return false;
    }
    n = (size_t)(lf - start);
    smtp_server_consume(srv, n + 1);
    if (n > 0 && start[n - 1] == '\r')
        n--;
    /* Lines may end in a bare LF: lenient for commands only; DATA ends
     * strictly (smtp_mail_data_feed()). */
    if (n + 2 > limit) {
        if (srv->st == ST_AUTH) {
            smtp_auth_clear(srv);
            srv->st = ST_CMD;
        }
        smtp_server_refuse(srv, 500, "5.5.6", "Error: line too long");
        return true;
    }
    if (n + 1 > srv->line_cap) {
        /* n + 2 <= limit <= line_max - 1, so this stays under line_max. */
        size_t cap = srv->line_cap;

        while (cap < n + 1)
            cap *= 2;
        if (cap > srv->line_max)
            cap = srv->line_max;
        srv->line = xrealloc(srv->line, cap);
        srv->line_cap = cap;
    }
    memcpy(srv->line, start, n);
    srv->line[n] = '\0';
    if (srv->st == ST_AUTH) {
        if (memchr(srv->line, '\0', n) != NULL) {
            smtp_auth_clear(srv);
            srv->st = ST_CMD;
            smtp_server_refuse(srv, 501, "5.5.2", "Invalid base64 data");
            return true;
        }
        smtp_auth_response(srv, srv->line);
    } else {
        command(srv, srv->line, n);
    }
    return true;
}

/* Public interface. */

smtp_server_t *
smtp_server_new(const struct smtp_server_opts *o)
{
    smtp_server_t *srv = xcalloc(1, sizeof(*srv));
    size_t longest;

    srv->hostname =
        xstrdup(o->hostname && *o->hostname ? o->hostname : DEFAULT_HOSTNAME);
    srv->auth_mechs = xstrdup(
        o->auth_mechs && *o->auth_mechs ? o->auth_mechs : DEFAULT_AUTH_MECHS);
    /* The RFC 5321 4.5.3.1 minimums are floors, not suggestions. */
    srv->max_line = o->max_line ? o->max_line : DEFAULT_MAX_LINE;
    if (srv->max_line < DEFAULT_MAX_LINE)
        srv->max_line = DEFAULT_MAX_LINE;
    srv->max_text_line =
        o->max_text_line ? o->max_text_line : DEFAULT_MAX_TEXT_LINE;
    if (srv->max_text_line < DEFAULT_MAX_TEXT_LINE)
        srv->max_text_line = DEFAULT_MAX_TEXT_LINE;
    srv->max_message = o->max_message ? o->max_message : DEFAULT_MAX_MESSAGE;
    srv->max_rcpts = o->max_rcpts > 0 ? o->max_rcpts : DEFAULT_MAX_RCPTS;
    if (srv->max_rcpts < DEFAULT_MAX_RCPTS)
        srv->max_rcpts = DEFAULT_MAX_RCPTS;
    srv->max_errors = o->max_errors > 0 ? o->max_errors : DEFAULT_MAX_ERRORS;
    srv->ext = o->ext & SMTP_EXT_ALL;
    srv->tls = o->tls_active;
    srv->auth_needs_tls = o->auth_needs_tls;
    srv->mail_needs_auth = o->mail_needs_auth;
    srv->lmtp = o->lmtp;
    if (srv->lmtp)
        /* RFC 2033 4.1: both must be offered. */
        srv->ext |= SMTP_EXT_PIPELINING | SMTP_EXT_ENHANCEDSTATUSCODES;

    longest = srv->max_line;
    if (longest < SMTP_AUTH_LINE_MAX + 2)
        longest = SMTP_AUTH_LINE_MAX + 2;
    srv->line_max = longest + 1;
    srv->line_cap = LINE_START;
    srv->line = xmalloc(srv->line_cap);
    /* Room for the longest line and some pipelined commands after it. */
    srv->in_max = longest + 4096;
    srv->in_cap = IN_START;
    srv->in = xmalloc(srv->in_cap);
    srv->st = ST_CONNECT;
    return srv;
}

void
smtp_server_destroy(smtp_server_t **srv_p)
{
    smtp_server_t *srv = *srv_p;

    if (srv == NULL)
        return;
    smtp_auth_clear(srv);
    lmtp_clear(srv);
    free(srv->rcpt);
    free(srv->hostname);
    free(srv->auth_mechs);
    free(srv->in);
    free(srv->line);
    free(srv->msg);
    free(srv->helo);
    buf_free(&srv->out);
    free(srv);
    *srv_p = NULL;
}

size_t
smtp_server_input(smtp_server_t *srv, const void *data, size_t len)
{
    size_t room;

    if (srv->st == ST_DONE || srv->st == ST_TLS)
        return len; /* discarded: see the header */
    if (srv->in_off > 0) {
        memmove(srv->in, srv->in + srv->in_off, srv->in_len - srv->in_off);
        srv->in_len -= srv->in_off;
        srv->in_off = 0;
    }
    room = srv->in_max - srv->in_len;
    if (len > room)
        len = room;
    if (srv->in_len + len > srv->in_cap) {
        size_t cap = srv->in_cap;

        while (cap < srv->in_len + len)
            cap = cap > srv->in_max / 2 ? srv->in_max : cap * 2;
        srv->in = xrealloc(srv->in, cap);
        srv->in_cap = cap;
    }
    if (len > 0)
        memcpy(srv->in + srv->in_len, data, len);
    srv->in_len += len;
    return len;
}

/* The engine waits for a command line, with no decision pending: what a
 * long line or a burst of input made the buffers grow to is given back. */
static void
trim(smtp_server_t *srv)
{
    size_t left = srv->in_len - srv->in_off;

    if (srv->in_cap > IN_START && left <= IN_START) {
        memmove(srv->in, srv->in + srv->in_off, left);
        srv->in_off = 0;
        srv->in_len = left;
        srv->in = xrealloc(srv->in, IN_START);
        srv->in_cap = IN_START;
    }
    if (srv->line_cap > LINE_START) {
        srv->line = xrealloc(srv->line, LINE_START);
        srv->line_cap = LINE_START;
    }
}

const struct smtp_event *
smtp_server_next(smtp_server_t *srv)
{
    for (;;) {
        if (srv->nnews > 0) {
            memset(&srv->news_ev, 0, sizeof(srv->news_ev));
            srv->news_ev.type = srv->news[0];
            memmove(srv->news, srv->news + 1,
                    (size_t)(--srv->nnews) * sizeof(srv->news[0]));
            if (srv->news_ev.type == SMTP_EV_HELO) {
                srv->news_ev.helo.name = srv->helo;
                srv->news_ev.helo.esmtp = srv->esmtp;
            }
            return &srv->news_ev;
        }
        if (srv->dec_ready) {
            srv->dec_ready = false;
            return &srv->dec;
        }
        if (srv->pending != SMTP_EV_NONE)
            return &no_event;
        switch (srv->st) {
        case ST_CONNECT:
            smtp_server_decide(srv, SMTP_EV_CONNECT);
            srv->dec_ready = false;
            return &srv->dec;
        case ST_TLS:
        case ST_DONE:
            return &no_event;
        case ST_DATA:
            if (!smtp_mail_data_feed(srv))
                return &no_event;
            break;
        case ST_BDAT:
            if (!smtp_mail_bdat_feed(srv))
                return &no_event;
            break;
        case ST_CMD:
        case ST_REFUSED:
        case ST_AUTH:
            /* RFC 2920 3.1: a client that does not read its replies is
             * not served further until it does. */
            if (srv->out.len >= SMTP_OUTPUT_MAX)
                return &no_event;
            if (!line_step(srv)) {
                trim(srv);
                return &no_event;
            }
            break;
        }
        /* A decision found is handed out at the top, after the news. */
    }
}

static const char *
default_text(int code)
{
    switch (code / 100) {
    case 2:
        return "OK";
    case 4:
        return "Temporary failure, try again later";
    default:
        return "Rejected";
    }
}

bool
smtp_server_reply_code_ok(const smtp_server_t *srv, int code)
{
    if (srv->pending == SMTP_EV_NONE || code < 200 || code > 599)
        return false;
    /* RFC 5321 4.2.1: 3yz is an intermediate reply; here only AUTH's
     * 334 challenge (RFC 4954 4) is one. */
    return code / 100 != 3 || (code == 334 && srv->pending == SMTP_EV_AUTH);
}

void
smtp_server_reply(smtp_server_t *srv, int code, const char *ecode,
                  const char *text)
{
    enum smtp_event_type what = srv->pending;
    char def[16];

    if (what == SMTP_EV_NONE)
        panic("smtp_server_reply() with no decision pending");
    if (!smtp_server_reply_code_ok(srv, code))
        panic("smtp_server_reply() with a bad code");
    srv->pending = SMTP_EV_NONE;
    srv->dec_ready = false;
    if (!ecode_valid(ecode, code)) {
        snprintf(def, sizeof(def), "%d.0.0", code / 100);
        ecode = def;
    }
    if (text == NULL || *text == '\0')
        text = code == 334 ? "" : default_text(code);

    switch (what) {
    case SMTP_EV_CONNECT:
        /* RFC 5321 4.2 greeting: the domain first; RFC 2034 3: no
         * enhanced code. */
        smtp_server_replyf(srv, code, NULL, "%s %s", srv->hostname, text);
        if (code == 421) {
            smtp_server_news(srv, SMTP_EV_CLOSE);
            srv->st = ST_DONE;
        } else {
            srv->st = code / 100 == 2 ? ST_CMD : ST_REFUSED;
        }
        return;
    case SMTP_EV_AUTH:
        if (smtp_auth_answer(srv, code, text))
            return;
        break;
    case SMTP_EV_MAIL:
        if (code / 100 == 2) {
            srv->trans = true;
            srv->trans_utf8 = srv->dec.mail.smtputf8;
            srv->msg_hint = srv->dec.mail.size_given ? srv->dec.mail.size : 0;
            srv->nrcpts = 0;
            srv->bdat_used = false;
        }
        break;
    case SMTP_EV_RCPT:
        if (code / 100 == 2) {
            if (srv->lmtp) {
                if (srv->nrcpts == srv->rcpt_cap) {
                    srv->rcpt_cap = srv->rcpt_cap ? srv->rcpt_cap * 2 : 8;
                    srv->rcpt = xrealloc(srv->rcpt, (size_t)srv->rcpt_cap *
                                                        sizeof(*srv->rcpt));
                }
                srv->rcpt[srv->nrcpts] = xstrdup(srv->dec.rcpt.to);
            }
            srv->nrcpts++;
        }
        break;
    case SMTP_EV_MESSAGE:
        if (srv->lmtp) {
            /* Every recipient not answered yet gets this answer. */
            srv->pending = SMTP_EV_MESSAGE;
            for (int i = 0; i < srv->nrcpts; i++)
                if (srv->ans[i].code == 0)
                    smtp_server_reply_rcpt(srv, i, code, ecode, text);
            return;
        }
        break;
    default:
        panic("pending event is not a decision");
    }
    smtp_server_put_reply(srv, code, ecode, text);
    if (what == SMTP_EV_MESSAGE)
        /* RFC 5321 4.1.1.4: the buffers are cleared, whatever the answer. */
        smtp_server_reset_txn(srv);
    if (code == 421) {
        /* RFC 5321 3.8: the server closes after 421. */
        smtp_server_reset_txn(srv);
        smtp_server_news(srv, SMTP_EV_CLOSE);
        srv->st = ST_DONE;
    } else if (code / 100 == 5 && what != SMTP_EV_MESSAGE) {
        smtp_server_count_error(srv);
    }
}

void
smtp_server_reply_rcpt(smtp_server_t *srv, int i, int code, const char *ecode,
                       const char *text)
{
    struct lmtp_answer *a;
    bool close = false;

    if (srv->pending != SMTP_EV_MESSAGE || !srv->lmtp || srv->ans == NULL)
        panic("smtp_server_reply_rcpt() with no LMTP message pending");
    if (i < 0 || i >= srv->nrcpts || srv->ans[i].code != 0)
        panic("smtp_server_reply_rcpt() for a bad recipient");
    if (code < 200 || code > 599 || code / 100 == 3)
        panic("smtp_server_reply_rcpt() with a bad code");
    a = &srv->ans[i];
    a->code = code;
    if (ecode_valid(ecode, code))
        snprintf(a->ecode, sizeof(a->ecode), "%s", ecode);
    else
        snprintf(a->ecode, sizeof(a->ecode), "%d.0.0", code / 100);
    a->text = xstrdup(text && *text ? text : default_text(code));
    if (++srv->nanswered < srv->nrcpts)
        return;
    /* RFC 2033 4.2: one reply per recipient, in the order of the RCPTs. */
    srv->pending = SMTP_EV_NONE;
    srv->dec_ready = false;
    for (int k = 0; k < srv->nrcpts; k++) {
        smtp_server_put_reply(srv, srv->ans[k].code, srv->ans[k].ecode,
                              srv->ans[k].text);
        close |= srv->ans[k].code == 421;
    }
    /* RFC 5321 4.1.1.4: the buffers are cleared, whatever the answers. */
    smtp_server_reset_txn(srv);
    if (close) {
        smtp_server_news(srv, SMTP_EV_CLOSE);
        srv->st = ST_DONE;
    }
}

const char *
smtp_server_output(const smtp_server_t *srv, size_t *len)
{
    *len = srv->out.len;
    return srv->out.len ? srv->out.data : "";
}

void
smtp_server_output_done(smtp_server_t *srv, size_t n)
{
    buf_consume(&srv->out, n);
    /* After a burst of replies (a client pipelining a lot). */
    if (srv->out.len == 0 && srv->out.cap > OUT_KEEP)
        buf_free(&srv->out);
}

void
smtp_server_tls_started(smtp_server_t *srv)
{
    /* A session closed during the handshake (smtp_server_close() on a
     * timeout, say) stays closed: the handshake may still finish. */
    if (srv->st == ST_DONE)
        return;
    if (srv->st != ST_TLS)
        panic("smtp_server_tls_started() without STARTTLS");
    /* RFC 3207 4.2: forget all that was learnt before. */
    free(srv->helo);
    srv->helo = NULL;
    srv->esmtp = srv->authed = false;
    srv->tls = true;
    srv->in_off = srv->in_len = 0;
    srv->skipping = false;
    srv->st = ST_CMD;
}

void
smtp_server_close(smtp_server_t *srv, const char *ecode, const char *text)
{
    if (srv->st == ST_DONE)
        return;
    smtp_auth_clear(srv);
    shut(srv, ecode_valid(ecode, 421) ? ecode : "4.0.0",
         text && *text ? text : "Service closing transmission channel");
}

const char *
smtp_server_helo(const smtp_server_t *srv)
{
    return srv->helo;
}

unsigned
smtp_server_refused(const smtp_server_t *srv, int code)
{
    return code == 552 ? srv->refused_552 : code == 554 ? srv->refused_554 : 0;
}

bool
smtp_server_tls(const smtp_server_t *srv)
{
    return srv->tls;
}

bool
smtp_server_authenticated(const smtp_server_t *srv)
{
    return srv->authed;
}

bool
smtp_server_done(const smtp_server_t *srv)
{
    return srv->st == ST_DONE;
}

const char *
smtp_server_with(const smtp_server_t *srv)
{
    static const char *const with[2][4] = {
        {"ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA"},
        {"UTF8SMTP", "UTF8SMTPA", "UTF8SMTPS", "UTF8SMTPSA"},
    };
    static const char *const lmtp[2][4] = {
        {"LMTP", "LMTPA", "LMTPS", "LMTPSA"},
        {"UTF8LMTP", "UTF8LMTPA", "UTF8LMTPS", "UTF8LMTPSA"},
    };

    if (srv->lmtp)
        return lmtp[srv->trans_utf8]
                   [(srv->tls ? 2 : 0) + (srv->authed ? 1 : 0)];

    /* AUTH needs EHLO (RFC 4954 3), so a session that authenticated is
     * ESMTPA even when the client said HELO afterwards. */
    if (!srv->esmtp && !srv->authed)
        return "SMTP";
    return with[srv->trans_utf8][(srv->tls ? 2 : 0) + (srv->authed ? 1 : 0)];
}
