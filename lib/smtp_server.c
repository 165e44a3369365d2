/*
 * smtp_server.c - the ESMTP server engine (RFC 5321 and its extensions).
 *
 * Input is copied into a fixed buffer and parsed by smtp_server_next(): one
 * command line at a time (so pipelined commands run in order, RFC 2920 3.1),
 * or, in DATA and BDAT, straight into the message buffer. A command that
 * needs the caller's decision parks the engine until smtp_server_reply();
 * everything else the engine answers itself. Nothing here recurses on
 * input, and every buffer has a fixed ceiling (see smtp_server.h).
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
#include "lib/smtp_server.h"
#include "lib/xalloc.h"

#define DEFAULT_HOSTNAME "localhost"
#define DEFAULT_MAX_LINE 512       /* RFC 5321 4.5.3.1.4 */
#define DEFAULT_MAX_TEXT_LINE 1000 /* RFC 5321 4.5.3.1.6 */
#define DEFAULT_MAX_MESSAGE 10485760
#define DEFAULT_MAX_RCPTS 100      /* RFC 5321 4.5.3.1.8 */
#define DEFAULT_MAX_ERRORS 20
#define DEFAULT_AUTH_MECHS "PLAIN LOGIN"

/* A line without an end, this many times its limit long, is not a mistake
 * but a flood: the session is closed. */
#define FLOOD_FACTOR 4
#define NEWS_MAX 4
#define ENVID_MAX 100       /* RFC 3461 4.4 */
#define ORCPT_MAX 500       /* RFC 3461 4.2 */
#define MECH_MAX 20         /* RFC 4422 3.1: SASL names are 1..20 chars */
#define REPLY_LINE_MAX 512  /* RFC 5321 4.5.3.1.5, with CRLF */
#define MSG_KEEP 65536      /* a message buffer larger is freed after use */

enum state {
    ST_CONNECT, /* the greeting is still to be decided */
    ST_REFUSED, /* 554 greeting: only QUIT (RFC 5321 3.1) */
    ST_CMD,     /* reading command lines */
    ST_AUTH,    /* reading a SASL response line (RFC 4954 4) */
    ST_DATA,    /* reading DATA text */
    ST_BDAT,    /* reading a BDAT chunk's octets */
    ST_TLS,     /* after STARTTLS, until smtp_server_tls_started() */
    ST_DONE,    /* QUIT or close: nothing more */
};

/* Where DATA's scanner stands (see data_feed()). */
enum dstate {
    D_BOL,   /* at the start of a line that followed a real CRLF */
    D_TEXT,  /* inside a line, or after a bare LF or CR */
    D_CR,    /* a CR seen: a CRLF or a bare CR? */
    D_DOT,   /* "." at D_BOL */
    D_DOTCR, /* ".\r" at D_BOL: one LF more ends the data */
};

enum mech { MECH_PLAIN, MECH_LOGIN, MECH_OTHER };

struct smtp_server {
    /* Options, defaults filled in; the strings are ours. */
    char *hostname, *auth_mechs;
    size_t max_line, max_text_line, max_message;
    int max_rcpts, max_errors;
    unsigned ext;
    bool auth_needs_tls, mail_needs_auth;

    enum state st;
    enum smtp_event_type pending; /* the decision awaited, or NONE */
    bool dec_ready;               /* dec not yet handed out */
    struct smtp_event dec;        /* the decision event */
    struct smtp_event news_ev;
    enum smtp_event_type news[NEWS_MAX];
    int nnews;

    /* Input not yet parsed: in[in_off..in_len). */
    char *in;
    size_t in_off, in_len, in_cap;
    bool skipping;  /* inside a line over its limit, dropping it */
    size_t skipped; /* its length so far */

    buf_t out;

    /* Session. */
    char *helo;
    bool esmtp, tls, authed;
    int errors;

    /* Transaction: MAIL accepted (RFC 5321 4.1.4). */
    bool trans, trans_utf8, bdat_used;
    int nrcpts;

    /* The command line being handled; the decision's strings point in. */
    char *line;
    size_t line_cap;
    struct smtp_path path;

    /* The message being received. */
    char *msg;
    size_t msg_len, msg_cap;
    bool over, too_long;
    enum dstate dstate;
    size_t text_line; /* octets of the current DATA line so far */
    uint64_t bdat_left, bdat_size;
    bool bdat_last;
    int bdat_code; /* the refusal the chunk gets once read, or 0 */
    const char *bdat_ecode, *bdat_text;

    /* SASL exchange. */
    enum mech mech;
    char mech_name[MECH_MAX + 1];
    char *resp[2], *user, *pass;
    int nresp, round;
};

static const struct smtp_event no_event = {.type = SMTP_EV_NONE};

static void cmd_helo(smtp_server_t *srv, char *arg, bool esmtp);
static void reset_transaction(smtp_server_t *srv);

static void __attribute__((noreturn))
panic(const char *what)
{
    fprintf(stderr, "smtp_server: PANIC: %s\n", what);
    abort();
}

/* Output. */

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
static void
put_reply(smtp_server_t *srv, int code, const char *ecode, const char *text)
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

static void __attribute__((format(printf, 4, 5)))
reply(smtp_server_t *srv, int code, const char *ecode, const char *fmt, ...)
{
    char text[REPLY_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    put_reply(srv, code, ecode, text);
}

static void
news(smtp_server_t *srv, enum smtp_event_type type)
{
    if (srv->nnews == NEWS_MAX)
        panic("news queue full");
    srv->news[srv->nnews++] = type;
}

/* The session ends here: 421 (RFC 5321 3.8), then SMTP_EV_CLOSE. */
static void
shut(smtp_server_t *srv, const char *ecode, const char *text)
{
    reset_transaction(srv);
    reply(srv, 421, ecode, "%s %s", srv->hostname, text);
    news(srv, SMTP_EV_CLOSE);
    srv->st = ST_DONE;
    srv->pending = SMTP_EV_NONE;
    srv->dec_ready = false;
}

/* A refusal of a bad command (or of one the caller refused): after
 * max_errors of them the client is not worth talking to. */
static void
count_error(smtp_server_t *srv)
{
    if (++srv->errors >= srv->max_errors && srv->st != ST_DONE)
        shut(srv, "4.7.0", "Error: too many errors");
}

static void __attribute__((format(printf, 4, 5)))
refuse(smtp_server_t *srv, int code, const char *ecode, const char *fmt, ...)
{
    char text[REPLY_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    put_reply(srv, code, ecode, text);
    count_error(srv);
}

/* Transaction and message state. */

static void
msg_clear(smtp_server_t *srv)
{
    srv->msg_len = 0;
    srv->over = srv->too_long = false;
    if (srv->msg_cap > MSG_KEEP) {
        free(srv->msg);
        srv->msg = NULL;
        srv->msg_cap = 0;
    }
}

/* Drops the transaction (RFC 5321 4.1.1.5 and the other places that reset
 * it) and tells the caller, who accepted its MAIL. */
static void
reset_transaction(smtp_server_t *srv)
{
    if (srv->trans)
        news(srv, SMTP_EV_RESET);
    srv->trans = srv->trans_utf8 = srv->bdat_used = false;
    srv->nrcpts = 0;
    msg_clear(srv);
}

/* Appends to the message unless it is already over max_message: then it
 * is only marked, and read to its end without being kept (RFC 1870 6.3). */
static void
msg_add(smtp_server_t *srv, const char *p, size_t n)
{
    size_t need, cap;

    if (srv->over || n == 0)
        return;
    if (n > srv->max_message - srv->msg_len) {
        srv->over = true;
        return;
    }
    need = srv->msg_len + n;
    if (need > srv->msg_cap) {
        cap = srv->msg_cap ? srv->msg_cap : 4096;
        while (cap < need)
            cap = cap > srv->max_message / 2 ? srv->max_message : cap * 2;
        srv->msg = xrealloc(srv->msg, cap);
        srv->msg_cap = cap;
    }
    memcpy(srv->msg + srv->msg_len, p, n);
    srv->msg_len = need;
}

/* Events. */

static const struct smtp_event *
decide(smtp_server_t *srv, enum smtp_event_type type)
{
    srv->dec.type = type;
    srv->pending = type;
    srv->dec_ready = true;
    return &srv->dec;
}

/* Input. */

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

static void
consume(smtp_server_t *srv, size_t n)
{
    srv->in_off += n;
    if (srv->in_off == srv->in_len)
        srv->in_off = srv->in_len = 0;
}

/* Base64 (RFC 4648 4), as RFC 4954 4 wants the SASL responses. */

static int
b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static bool
b64_valid(const char *s)
{
    size_t n = strlen(s), pad = 0;

    if (n % 4 != 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') {
            if (i < n - 2)
                return false;
            pad++;
        } else if (pad > 0 || b64val((unsigned char)s[i]) < 0) {
            return false;
        }
    }
    return true;
}

/* Decodes valid base64 into a new string; NULL when it holds a NUL. */
static char *
b64_decode(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *d = xmalloc(n / 4 * 3 + 1);
    uint32_t acc = 0;
    int bits = 0;

    for (size_t i = 0; i < n && s[i] != '='; i++) {
        acc = acc << 6 | (uint32_t)b64val((unsigned char)s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[o++] = (char)(acc >> bits & 0xff);
        }
    }
    d[o] = '\0';
    if (strlen(d) != o) {
        free(d);
        return NULL;
    }
    return d;
}

/* Commands. */

/* Splits "KEY=value" parameters of MAIL and RCPT (RFC 5321 4.1.2):
 * esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"), esmtp-value =
 * 1*(%d33-60 / %d62-126). Returns the next parameter, or NULL at the end;
 * *bad is set when one is malformed. */
static char *
next_param(char **cur, char **value, bool *bad)
{
    char *p = *cur, *k;

    *value = NULL;
    while (*p == ' ')
        p++;
    if (*p == '\0')
        return NULL;
    k = p;
    while (*p && *p != ' ' && *p != '=')
        p++;
    if (p == k || !(isalnum((unsigned char)*k)))
        *bad = true;
    for (char *q = k; q < p; q++)
        if (!isalnum((unsigned char)*q) && *q != '-')
            *bad = true;
    if (*p == '=') {
        *p++ = '\0';
        *value = p;
        while (*p && *p != ' ') {
            if ((unsigned char)*p < 33 || (unsigned char)*p > 126 ||
                *p == '=')
                *bad = true;
            p++;
        }
        if (p == *value)
            *bad = true;
    }
    if (*p)
        *p++ = '\0';
    *cur = p;
    return k;
}

/* "FROM:" or "TO:" then a path: spaces are allowed after the colon, as
 * most servers do for old clients though RFC 5321 4.1.1.2 has none. */
static char *
after_keyword(char *arg, const char *kw)
{
    size_t n = strlen(kw);

    if (strncasecmp(arg, kw, n) != 0)
        return NULL;
    arg += n;
    while (*arg == ' ')
        arg++;
    return arg;
}

static bool
offered(const smtp_server_t *srv, unsigned ext)
{
    return srv->esmtp && (srv->ext & ext);
}

static bool
auth_offered(const smtp_server_t *srv)
{
    return (srv->ext & SMTP_EXT_AUTH) && (srv->tls || !srv->auth_needs_tls);
}

/* MAIL FROM:<reverse-path> [SP mail-parameters] (RFC 5321 4.1.1.2). */
static const struct smtp_event *
cmd_mail(smtp_server_t *srv, char *arg)
{
    struct smtp_event *ev = &srv->dec;
    const char *why;
    char *p, *key, *val, *params;
    size_t used;
    bool bad = false;
    int rc;

    if (srv->helo == NULL) {
        refuse(srv, 503, "5.5.1", "Error: send HELO/EHLO first");
        return NULL;
    }
    if (srv->trans) {
        refuse(srv, 503, "5.5.1", "Error: nested MAIL command");
        return NULL;
    }
    if (srv->mail_needs_auth && !srv->authed) {
        /* RFC 4954 6 and RFC 3207 4 for the case AUTH needs TLS first. */
        if (!auth_offered(srv) && (srv->ext & SMTP_EXT_STARTTLS))
            refuse(srv, 530, "5.7.0", "Must issue a STARTTLS command first");
        else
            refuse(srv, 530, "5.7.0", "Authentication required");
        return NULL;
    }
    p = after_keyword(arg, "FROM:");
    if (p == NULL || *p != '<') {
        refuse(srv, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
        return NULL;
    }
    /* UTF-8 is judged after the parameters, which may say SMTPUTF8. */
    rc = smtp_path_parse(p, strlen(p), SMTP_ADDR_NULL_OK | SMTP_ADDR_UTF8,
                         &srv->path, &used, &why);
    if (rc) {
        /* RFC 5321 4.5.3.1.10: "501 Path too long". */
        refuse(srv, 501, "5.1.7", "Bad sender address syntax: %s", why);
        return NULL;
    }
    if (p[used] != '\0' && p[used] != ' ') {
        refuse(srv, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
        return NULL;
    }
    params = p + used;
    memset(&ev->mail, 0, sizeof(ev->mail));
    p[used - 1] = '\0';
    ev->mail.raw = p + 1;
    ev->mail.path = &srv->path;
    ev->mail.from = srv->path.mailbox;

    while ((key = next_param(&params, &val, &bad)) != NULL) {
        if (bad) {
            refuse(srv, 501, "5.5.4", "Bad MAIL parameter syntax");
            return NULL;
        }
        if (strcasecmp(key, "SIZE") == 0 && offered(srv, SMTP_EXT_SIZE) &&
            !ev->mail.size_given && val) {
            /* RFC 1870 3, 6.2: size-value = 1*20DIGIT. */
            uint64_t v = 0;
            size_t nd = strspn(val, "0123456789");

            if (nd == 0 || val[nd] != '\0' || nd > 20) {
                refuse(srv, 501, "5.5.4", "Bad SIZE parameter");
                return NULL;
            }
            for (size_t i = 0; i < nd && v <= srv->max_message; i++)
                v = v * 10 + (uint64_t)(val[i] - '0');
            if (v > srv->max_message) {
                refuse(srv, 552, "5.3.4",
                      "Message size exceeds fixed maximum message size");
                return NULL;
            }
            ev->mail.size_given = true;
            ev->mail.size = (size_t)v;
        } else if (strcasecmp(key, "BODY") == 0 && val &&
                   offered(srv, SMTP_EXT_8BITMIME) &&
                   ev->mail.body == SMTP_BODY_NONE) {
            /* RFC 6152 2; BINARYMIME (RFC 3030 3) is not offered. */
            if (strcasecmp(val, "7BIT") == 0) {
                ev->mail.body = SMTP_BODY_7BIT;
            } else if (strcasecmp(val, "8BITMIME") == 0) {
                ev->mail.body = SMTP_BODY_8BITMIME;
            } else {
                refuse(srv, 555, "5.5.4", "Unsupported BODY type");
                return NULL;
            }
        } else if (strcasecmp(key, "SMTPUTF8") == 0 && val == NULL &&
                   offered(srv, SMTP_EXT_SMTPUTF8) && !ev->mail.smtputf8) {
            /* RFC 6531 3.4. */
            ev->mail.smtputf8 = true;
        } else if (strcasecmp(key, "RET") == 0 && val &&
                   offered(srv, SMTP_EXT_DSN) &&
                   ev->mail.ret == SMTP_RET_NONE) {
            /* RFC 3461 4.3. */
            if (strcasecmp(val, "FULL") == 0) {
                ev->mail.ret = SMTP_RET_FULL;
            } else if (strcasecmp(val, "HDRS") == 0) {
                ev->mail.ret = SMTP_RET_HDRS;
            } else {
                refuse(srv, 501, "5.5.4", "Bad RET parameter");
                return NULL;
            }
        } else if (strcasecmp(key, "ENVID") == 0 && val &&
                   offered(srv, SMTP_EXT_DSN) && ev->mail.envid == NULL) {
            /* RFC 3461 4.4: xtext, 100 characters at most. */
            if (strlen(val) > ENVID_MAX ||
                !smtp_xtext_valid(val, strlen(val))) {
                refuse(srv, 501, "5.5.4", "Bad ENVID parameter");
                return NULL;
            }
            ev->mail.envid = val;
        } else if (strcasecmp(key, "AUTH") == 0 && val &&
                   offered(srv, SMTP_EXT_AUTH) && ev->mail.auth == NULL) {
            /* RFC 4954 5: AUTH=<> or an xtext mailbox. */
            if (strcmp(val, "<>") != 0 &&
                !smtp_xtext_valid(val, strlen(val))) {
                refuse(srv, 501, "5.5.4", "Bad AUTH parameter");
                return NULL;
            }
            ev->mail.auth = val;
        } else {
            /* RFC 5321 4.1.1.11: not recognised or not offered. */
            refuse(srv, 555, "5.5.4", "Unsupported MAIL parameter %s", key);
            return NULL;
        }
    }
    if (bad) {
        refuse(srv, 501, "5.5.4", "Bad MAIL parameter syntax");
        return NULL;
    }
    if (srv->path.utf8 && !ev->mail.smtputf8) {
        /* RFC 6531 3.5. */
        refuse(srv, 553, "5.6.7",
              "Non-ASCII sender address needs SMTPUTF8");
        return NULL;
    }
    return decide(srv, SMTP_EV_MAIL);
}

/* NOTIFY="NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY") (RFC 3461 4.1). */
static int
parse_notify(char *val, unsigned *out)
{
    unsigned bits = 0;

    for (char *tok = strtok(val, ","); tok; tok = strtok(NULL, ",")) {
        unsigned b;

        if (strcasecmp(tok, "NEVER") == 0)
            b = SMTP_NOTIFY_NEVER;
        else if (strcasecmp(tok, "SUCCESS") == 0)
            b = SMTP_NOTIFY_SUCCESS;
        else if (strcasecmp(tok, "FAILURE") == 0)
            b = SMTP_NOTIFY_FAILURE;
        else if (strcasecmp(tok, "DELAY") == 0)
            b = SMTP_NOTIFY_DELAY;
        else
            return -1;
        if (bits & b)
            return -1;
        bits |= b;
    }
    if (bits == 0 || ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER))
        return -1;
    *out = bits;
    return 0;
}

/* ORCPT=addr-type ";" xtext (RFC 3461 4.2), addr-type an atom, 500
 * characters at most. */
static bool
orcpt_valid(const char *v)
{
    const char *semi = strchr(v, ';');

    if (semi == NULL || semi == v || strlen(v) > ORCPT_MAX || semi[1] == '\0')
        return false;
    for (const char *p = v; p < semi; p++)
        if (!isalnum((unsigned char)*p) && *p != '-')
            return false;
    return smtp_xtext_valid(semi + 1, strlen(semi + 1));
}

/* RCPT TO:<forward-path> [SP rcpt-parameters] (RFC 5321 4.1.1.3). */
static const struct smtp_event *
cmd_rcpt(smtp_server_t *srv, char *arg)
{
    struct smtp_event *ev = &srv->dec;
    const char *why;
    char *p, *key, *val, *params;
    size_t used;
    bool bad = false;
    int rc;

    if (!srv->trans) {
        refuse(srv, 503, "5.5.1", "Error: need MAIL command");
        return NULL;
    }
    p = after_keyword(arg, "TO:");
    if (p == NULL || *p != '<') {
        refuse(srv, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        return NULL;
    }
    rc = smtp_path_parse(p, strlen(p), SMTP_ADDR_POSTMASTER | SMTP_ADDR_UTF8,
                         &srv->path, &used, &why);
    if (rc) {
        refuse(srv, 501, "5.1.3", "Bad recipient address syntax: %s", why);
        return NULL;
    }
    if (p[used] != '\0' && p[used] != ' ') {
        refuse(srv, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        return NULL;
    }
    params = p + used;
    memset(&ev->rcpt, 0, sizeof(ev->rcpt));
    p[used - 1] = '\0';
    ev->rcpt.raw = p + 1;
    ev->rcpt.path = &srv->path;
    ev->rcpt.to = srv->path.mailbox;

    while ((key = next_param(&params, &val, &bad)) != NULL) {
        if (bad)
            break;
        if (strcasecmp(key, "NOTIFY") == 0 && val &&
            offered(srv, SMTP_EXT_DSN) && ev->rcpt.notify == 0) {
            if (parse_notify(val, &ev->rcpt.notify) < 0) {
                refuse(srv, 501, "5.5.4", "Bad NOTIFY parameter");
                return NULL;
            }
        } else if (strcasecmp(key, "ORCPT") == 0 && val &&
                   offered(srv, SMTP_EXT_DSN) && ev->rcpt.orcpt == NULL) {
            if (!orcpt_valid(val)) {
                refuse(srv, 501, "5.5.4", "Bad ORCPT parameter");
                return NULL;
            }
            ev->rcpt.orcpt = val;
        } else {
            refuse(srv, 555, "5.5.4", "Unsupported RCPT parameter %s", key);
            return NULL;
        }
    }
    if (bad) {
        refuse(srv, 501, "5.5.4", "Bad RCPT parameter syntax");
        return NULL;
    }
    if (srv->path.utf8 && !srv->trans_utf8) {
        /* RFC 6531 3.5: only in a transaction that said SMTPUTF8. */
        refuse(srv, 553, "5.6.7",
              "Non-ASCII recipient address needs SMTPUTF8");
        return NULL;
    }
    if (srv->nrcpts >= srv->max_rcpts) {
        /* RFC 5321 4.5.3.1.10; a 4xx, so the client sends the rest in
         * another transaction. Not counted as an error. */
        reply(srv, 452, "4.5.3", "Error: too many recipients");
        return NULL;
    }
    return decide(srv, SMTP_EV_RCPT);
}

/* DATA (RFC 5321 4.1.1.4). */
static void
cmd_data(smtp_server_t *srv, char *arg)
{
    if (*arg) {
        refuse(srv, 501, "5.5.4", "Syntax: DATA");
    } else if (!srv->trans) {
        refuse(srv, 503, "5.5.1", "Error: need MAIL command");
    } else if (srv->bdat_used) {
        /* RFC 3030 2: never both in one transaction. */
        refuse(srv, 503, "5.5.1", "Error: DATA after BDAT");
    } else if (srv->nrcpts == 0) {
        /* RFC 2920 3.1: the RCPTs may all have failed in the pipeline. */
        refuse(srv, 554, "5.5.1", "Error: no valid recipients");
    } else {
        reply(srv, 354, NULL, "End data with <CR><LF>.<CR><LF>");
        srv->st = ST_DATA;
        srv->dstate = D_BOL;
        srv->text_line = 0;
        msg_clear(srv);
    }
}

/* BDAT chunk-size [SP "LAST"] (RFC 3030 2). The chunk is always read, even
 * when it is refused, so the session stays in step. */
static void
cmd_bdat(smtp_server_t *srv, char *arg)
{
    size_t nd = strspn(arg, "0123456789");
    uint64_t size = 0;
    char *rest = arg + nd;

    if (!offered(srv, SMTP_EXT_CHUNKING)) {
        refuse(srv, 502, "5.5.1", "Error: command not implemented");
        return;
    }
    if (nd == 0 || nd > 18 || (*rest != '\0' && *rest != ' ')) {
        refuse(srv, 501, "5.5.4", "Syntax: BDAT size [LAST]");
        return;
    }
    while (*rest == ' ')
        rest++;
    if (*rest != '\0' && strcasecmp(rest, "LAST") != 0) {
        refuse(srv, 501, "5.5.4", "Syntax: BDAT size [LAST]");
        return;
    }
    for (size_t i = 0; i < nd; i++)
        size = size * 10 + (uint64_t)(arg[i] - '0');
    srv->bdat_left = srv->bdat_size = size;
    srv->bdat_last = *rest != '\0';
    srv->bdat_code = 0;
    srv->st = ST_BDAT;
    if (!srv->trans) {
        srv->bdat_code = 503;
        srv->bdat_ecode = "5.5.1";
        srv->bdat_text = "Error: need MAIL command";
    } else if (srv->nrcpts == 0) {
        srv->bdat_code = 554;
        srv->bdat_ecode = "5.5.1";
        srv->bdat_text = "Error: no valid recipients";
    } else {
        if (!srv->bdat_used)
            msg_clear(srv);
        srv->bdat_used = true;
        if (size > srv->max_message - srv->msg_len) {
            /* RFC 3030 4 and RFC 1870: refused once read. */
            srv->over = true;
            srv->bdat_code = 552;
            srv->bdat_ecode = "5.3.4";
            srv->bdat_text = "Message size exceeds fixed maximum message "
                             "size";
        }
    }
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
    if (auth_offered(srv) && !srv->authed)
        buf_printf(&b, "\nAUTH %s", srv->auth_mechs);
    put_reply(srv, 250, NULL, b.data);
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

/* EHLO / HELO (RFC 5321 4.1.1.1): resets the transaction (4.1.4). */
static void
cmd_helo(smtp_server_t *srv, char *arg, bool esmtp)
{
    if (!helo_name_ok(arg)) {
        refuse(srv, 501, "5.5.4", "Syntax: %s hostname",
              esmtp ? "EHLO" : "HELO");
        return;
    }
    reset_transaction(srv);
    free(srv->helo);
    srv->helo = xstrdup(arg);
    srv->esmtp = esmtp;
    if (esmtp)
        ehlo_reply(srv);
    else
        put_reply(srv, 250, NULL, srv->hostname);
    news(srv, SMTP_EV_HELO);
}

static void
cmd_starttls(smtp_server_t *srv, char *arg)
{
    if (!(srv->ext & SMTP_EXT_STARTTLS)) {
        refuse(srv, 502, "5.5.1", "Error: command not implemented");
    } else if (srv->tls) {
        /* RFC 3207 4: not offered, hence not accepted, under TLS. */
        refuse(srv, 503, "5.5.1", "Error: TLS already active");
    } else if (*arg) {
        /* RFC 3207 4: "501 Syntax error (no parameters allowed)". */
        refuse(srv, 501, "5.5.4", "Syntax error (no parameters allowed)");
    } else if (srv->trans) {
        refuse(srv, 503, "5.5.1", "Error: MAIL transaction in progress");
    } else {
        reply(srv, 220, "2.0.0", "Ready to start TLS");
        /* RFC 3207 5 (CVE-2011-0411): what the client sent after
         * STARTTLS in clear must never run inside TLS. */
        srv->in_off = srv->in_len = 0;
        srv->st = ST_TLS;
        news(srv, SMTP_EV_STARTTLS);
    }
}

static bool
mech_listed(const char *list, const char *mech)
{
    size_t n = strlen(mech);

    for (const char *p = list; *p;) {
        size_t k;

        while (*p == ' ')
            p++;
        k = strcspn(p, " ");
        if (k == n && strncasecmp(p, mech, n) == 0)
            return true;
        p += k;
    }
    return false;
}

static void
auth_clear(smtp_server_t *srv)
{
    for (int i = 0; i < 2; i++) {
        free(srv->resp[i]);
        srv->resp[i] = NULL;
    }
    free(srv->user);
    free(srv->pass);
    srv->user = srv->pass = NULL;
    srv->nresp = srv->round = 0;
}

/* Asks for the next SASL response (RFC 4954 4: "334" SP base64). */
static void
auth_challenge(smtp_server_t *srv, const char *b64)
{
    put_reply(srv, 334, NULL, b64);
    srv->st = ST_AUTH;
}

/* The responses are all in: hand them to the caller. */
static const struct smtp_event *
auth_event(smtp_server_t *srv)
{
    struct smtp_event *ev = &srv->dec;

    memset(&ev->auth, 0, sizeof(ev->auth));
    ev->auth.mech = srv->mech_name;
    ev->auth.nresp = srv->nresp;
    for (int i = 0; i < srv->nresp; i++)
        ev->auth.resp[i] = srv->resp[i];
    if (srv->mech == MECH_LOGIN) {
        srv->user = b64_decode(srv->resp[0]);
        srv->pass = b64_decode(srv->resp[1]);
        if (srv->user == NULL || srv->pass == NULL) {
            auth_clear(srv);
            srv->st = ST_CMD;
            refuse(srv, 501, "5.5.2", "Invalid authentication response");
            return NULL;
        }
        ev->auth.username = srv->user;
        ev->auth.password = srv->pass;
    }
    ev->auth.round = srv->round;
    srv->st = ST_CMD;
    return decide(srv, SMTP_EV_AUTH);
}

/* Takes one SASL response: the AUTH command's initial one, or a line. */
static const struct smtp_event *
auth_response(smtp_server_t *srv, const char *resp)
{
    if (strcmp(resp, "*") == 0) {
        /* RFC 4954 4: the client cancels. */
        auth_clear(srv);
        srv->st = ST_CMD;
        refuse(srv, 501, "5.7.0", "Authentication cancelled");
        return NULL;
    }
    if (!b64_valid(resp)) {
        auth_clear(srv);
        srv->st = ST_CMD;
        refuse(srv, 501, "5.5.2", "Invalid base64 data");
        return NULL;
    }
    if (srv->mech == MECH_OTHER) {
        free(srv->resp[0]);
        srv->resp[0] = xstrdup(resp);
        srv->nresp = 1;
        return auth_event(srv);
    }
    srv->resp[srv->nresp++] = xstrdup(resp);
    if (srv->mech == MECH_LOGIN && srv->nresp == 1) {
        auth_challenge(srv, "UGFzc3dvcmQ6"); /* "Password:" */
        return NULL;
    }
    return auth_event(srv);
}

/* AUTH mechanism [SP initial-response] (RFC 4954 4). */
static const struct smtp_event *
cmd_auth(smtp_server_t *srv, char *arg)
{
    char *mech = arg, *init;

    if (!(srv->ext & SMTP_EXT_AUTH)) {
        refuse(srv, 502, "5.5.1", "Error: command not implemented");
        return NULL;
    }
    if (!srv->esmtp) {
        refuse(srv, 503, "5.5.1", "Error: send EHLO first");
        return NULL;
    }
    if (!auth_offered(srv)) {
        /* RFC 4954 6. */
        refuse(srv, 538, "5.7.11", "Encryption required for requested "
                                  "authentication mechanism");
        return NULL;
    }
    if (srv->authed) {
        refuse(srv, 503, "5.5.1", "Error: already authenticated");
        return NULL;
    }
    if (srv->trans) {
        refuse(srv, 503, "5.5.1", "Error: MAIL transaction in progress");
        return NULL;
    }
    init = strchr(arg, ' ');
    if (init) {
        *init++ = '\0';
        while (*init == ' ')
            init++;
        if (*init == '\0')
            init = NULL;
    }
    if (*mech == '\0' || (init && strchr(init, ' '))) {
        refuse(srv, 501, "5.5.4", "Syntax: AUTH mechanism [response]");
        return NULL;
    }
    if (strlen(mech) > MECH_MAX || !mech_listed(srv->auth_mechs, mech)) {
        refuse(srv, 504, "5.5.4", "Unrecognized authentication type");
        return NULL;
    }
    auth_clear(srv);
    for (size_t i = 0; i <= strlen(mech); i++)
        srv->mech_name[i] = (char)toupper((unsigned char)mech[i]);
    if (strcmp(srv->mech_name, "PLAIN") == 0)
        srv->mech = MECH_PLAIN;
    else if (strcmp(srv->mech_name, "LOGIN") == 0)
        srv->mech = MECH_LOGIN;
    else
        srv->mech = MECH_OTHER;

    if (init)
        /* RFC 4954 4: "=" is an empty initial response. */
        return auth_response(srv, strcmp(init, "=") == 0 ? "" : init);
    if (srv->mech == MECH_LOGIN)
        auth_challenge(srv, "VXNlcm5hbWU6"); /* "Username:" */
    else if (srv->mech == MECH_PLAIN)
        auth_challenge(srv, "");
    else
        return auth_event(srv); /* the caller's first challenge */
    return NULL;
}

struct verb {
    const char *name;
    int id;
};

enum {
    V_HELO, V_EHLO, V_MAIL, V_RCPT, V_DATA, V_BDAT, V_RSET, V_NOOP,
    V_QUIT, V_VRFY, V_EXPN, V_HELP, V_STARTTLS, V_AUTH, V_OLD, V_UNKNOWN
};

static const struct verb verbs[] = {
    {"HELO", V_HELO}, {"EHLO", V_EHLO}, {"MAIL", V_MAIL},
    {"RCPT", V_RCPT}, {"DATA", V_DATA}, {"BDAT", V_BDAT},
    {"RSET", V_RSET}, {"NOOP", V_NOOP}, {"QUIT", V_QUIT},
    {"VRFY", V_VRFY}, {"EXPN", V_EXPN}, {"HELP", V_HELP},
    {"STARTTLS", V_STARTTLS}, {"AUTH", V_AUTH},
    /* Known, not implemented: RFC 821's SEND/SOML/SAML/TURN, RFC 1985
     * ETRN, RFC 2645 ATRN. */
    {"SEND", V_OLD}, {"SOML", V_OLD}, {"SAML", V_OLD}, {"TURN", V_OLD},
    {"ETRN", V_OLD}, {"ATRN", V_OLD},
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
static const struct smtp_event *
command(smtp_server_t *srv, char *line, size_t len)
{
    char *arg;
    int id;

    for (size_t i = 0; i < len; i++)
        if ((unsigned char)line[i] < 32 || line[i] == 127) {
            /* NUL, a bare CR and the like have no place in a command. */
            refuse(srv, 500, "5.5.2", "Error: bad character in command");
            return NULL;
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
        refuse(srv, 503, "5.5.1", "Error: no SMTP service here");
        return NULL;
    }
    switch (id) {
    case V_HELO:
    case V_EHLO:
        cmd_helo(srv, arg, id == V_EHLO);
        break;
    case V_MAIL:
        return cmd_mail(srv, arg);
    case V_RCPT:
        return cmd_rcpt(srv, arg);
    case V_DATA:
        cmd_data(srv, arg);
        break;
    case V_BDAT:
        cmd_bdat(srv, arg);
        break;
    case V_RSET:
        /* RFC 5321 4.1.1.5: no parameters. */
        if (*arg) {
            refuse(srv, 501, "5.5.4", "Syntax: RSET");
            break;
        }
        reset_transaction(srv);
        reply(srv, 250, "2.0.0", "OK");
        break;
    case V_NOOP:
        /* RFC 5321 4.1.1.9: a parameter is ignored. */
        reply(srv, 250, "2.0.0", "OK");
        break;
    case V_QUIT:
        if (*arg) {
            refuse(srv, 501, "5.5.4", "Syntax: QUIT");
            break;
        }
        reset_transaction(srv);
        reply(srv, 221, "2.0.0", "%s closing connection", srv->hostname);
        news(srv, SMTP_EV_QUIT);
        srv->st = ST_DONE;
        break;
    case V_VRFY:
        /* RFC 5321 3.5.3 and 7.3: 252 tells nothing about accounts. */
        if (*arg == '\0')
            refuse(srv, 501, "5.5.4", "Syntax: VRFY address");
        else
            reply(srv, 252, "2.5.0", "Cannot VRFY user, but will accept "
                                     "message and attempt delivery");
        break;
    case V_EXPN:
        /* RFC 5321 7.3: lists are not disclosed. */
        refuse(srv, 502, "5.5.1", "Error: EXPN not supported");
        break;
    case V_HELP:
        reply(srv, 214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT "
                                 "RSET NOOP QUIT VRFY HELP STARTTLS AUTH");
        break;
    case V_STARTTLS:
        cmd_starttls(srv, arg);
        break;
    case V_AUTH:
        return cmd_auth(srv, arg);
    case V_OLD:
        refuse(srv, 502, "5.5.1", "Error: command not implemented");
        break;
    default:
        refuse(srv, 500, "5.5.2", "Error: command not recognized");
        break;
    }
    return NULL;
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
        consume(srv, take);
        limit = srv->st == ST_AUTH ? SMTP_AUTH_LINE_MAX + 2 : srv->max_line;
        if (lf == NULL && srv->skipped > FLOOD_FACTOR * limit) {
            shut(srv, "4.7.0", "Error: line too long");
            return true;
        }
        if (lf) {
            srv->skipping = false;
            if (srv->st == ST_AUTH) {
                auth_clear(srv);
                srv->st = ST_CMD;
            }
            /* RFC 5321 4.5.3.1.10: "500 Line too long". */
            refuse(srv, 500, "5.5.6", "Error: line too long");
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
    consume(srv, n + 1);
    if (n > 0 && start[n - 1] == '\r')
        n--;
    /* Lines may end in a bare LF: lenient for commands only; DATA ends
     * strictly (data_feed()). */
    if (n + 2 > limit) {
        if (srv->st == ST_AUTH) {
            auth_clear(srv);
            srv->st = ST_CMD;
        }
        refuse(srv, 500, "5.5.6", "Error: line too long");
        return true;
    }
    memcpy(srv->line, start, n);
    srv->line[n] = '\0';
    if (srv->st == ST_AUTH) {
        if (memchr(srv->line, '\0', n) != NULL) {
            auth_clear(srv);
            srv->st = ST_CMD;
            refuse(srv, 501, "5.5.2", "Invalid base64 data");
            return true;
        }
        auth_response(srv, srv->line);
    } else {
        command(srv, srv->line, n);
    }
    return true;
}

/* DATA: a line of text ends (CRLF, or a bare LF or CR taken as one). */
static void
text_line_end(smtp_server_t *srv)
{
    /* RFC 5321 4.5.3.1.6: the line with its CRLF. */
    if (srv->text_line + 2 > srv->max_text_line)
        srv->too_long = true;
    srv->text_line = 0;
    msg_add(srv, "\r\n", 2);
}

/*
 * DATA text (RFC 5321 4.1.1.4, 4.5.2). The end is only CRLF "." CRLF,
 * where the first CRLF may be the DATA command's own: a bare LF or CR next
 * to a dot never ends it (SMTP smuggling), they are line ends of the text
 * and stored as CRLF. Dot-stuffing is undone at the start of a line that
 * followed a real CRLF. Returns true at the end of the data.
 */
static bool
data_feed(smtp_server_t *srv)
{
    const char *p = srv->in + srv->in_off, *end = srv->in + srv->in_len;

    while (p < end) {
        char c = *p;

        switch (srv->dstate) {
        case D_TEXT:
            if (c == '\r') {
                srv->dstate = D_CR;
                p++;
            } else if (c == '\n') {
                text_line_end(srv);
                p++;
            } else {
                const char *q = p;

                while (q < end && *q != '\r' && *q != '\n')
                    q++;
                srv->text_line += (size_t)(q - p);
                msg_add(srv, p, (size_t)(q - p));
                p = q;
            }
            break;
        case D_BOL:
            if (c == '.') {
                srv->dstate = D_DOT;
                srv->text_line = 1;
                p++;
            } else {
                srv->dstate = D_TEXT;
            }
            break;
        case D_CR:
            text_line_end(srv);
            if (c == '\n') {
                srv->dstate = D_BOL;
                p++;
            } else {
                srv->dstate = D_TEXT; /* a bare CR; c is seen again */
            }
            break;
        case D_DOT:
            if (c == '\r') {
                srv->dstate = D_DOTCR;
                p++;
            } else {
                /* 4.5.2: the first of a line's dots is deleted. */
                srv->dstate = D_TEXT;
            }
            break;
        case D_DOTCR:
            if (c == '\n') {
                consume(srv, (size_t)(p + 1 - (srv->in + srv->in_off)));
                return true;
            }
            /* ".", a bare CR, more: the dot goes, the CR is a line end. */
            srv->dstate = D_CR;
            break;
        }
    }
    consume(srv, srv->in_len - srv->in_off);
    return false;
}

/* The data has ended: refuse it here, or hand it to the caller. */
static const struct smtp_event *
message_end(smtp_server_t *srv, bool bdat)
{
    struct smtp_event *ev = &srv->dec;

    srv->st = ST_CMD;
    if (srv->over) {
        /* RFC 1870 6.3; not a protocol error of the client. */
        reply(srv, 552, "5.3.4",
              "Message size exceeds fixed maximum message size");
        reset_transaction(srv);
        return NULL;
    }
    if (srv->too_long) {
        reply(srv, 554, "5.6.0", "Message has a line longer than %zu octets "
                                 "(RFC 5321 4.5.3.1.6)",
              srv->max_text_line);
        reset_transaction(srv);
        return NULL;
    }
    memset(&ev->message, 0, sizeof(ev->message));
    ev->message.data = srv->msg ? srv->msg : "";
    ev->message.len = srv->msg_len;
    ev->message.bdat = bdat;
    return decide(srv, SMTP_EV_MESSAGE);
}

/* BDAT: the chunk's octets, as they are (RFC 3030 2). */
static const struct smtp_event *
bdat_step(smtp_server_t *srv, bool *progress)
{
    size_t avail = srv->in_len - srv->in_off, n = avail;

    *progress = false;
    if (n > srv->bdat_left)
        n = (size_t)srv->bdat_left;
    if (n > 0) {
        if (srv->bdat_code == 0)
            msg_add(srv, srv->in + srv->in_off, n);
        consume(srv, n);
        srv->bdat_left -= n;
        *progress = true;
    }
    if (srv->bdat_left > 0)
        return NULL;
    *progress = true;
    srv->st = ST_CMD;
    if (srv->bdat_code) {
        /* RFC 3030 2: after a refused chunk the transaction is over. */
        reply(srv, srv->bdat_code, srv->bdat_ecode, "%s", srv->bdat_text);
        reset_transaction(srv);
        if (srv->bdat_code != 552)
            count_error(srv);
        return NULL;
    }
    if (srv->bdat_last)
        return message_end(srv, true);
    reply(srv, 250, "2.0.0", "%llu octets received",
          (unsigned long long)srv->bdat_size);
    return NULL;
}

/* Public interface. */

smtp_server_t *
smtp_server_new(const struct smtp_server_opts *o)
{
    smtp_server_t *srv = xcalloc(1, sizeof(*srv));
    size_t longest;

    srv->hostname = xstrdup(o->hostname && *o->hostname ? o->hostname
                                                        : DEFAULT_HOSTNAME);
    srv->auth_mechs = xstrdup(o->auth_mechs && *o->auth_mechs
                                  ? o->auth_mechs
                                  : DEFAULT_AUTH_MECHS);
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

    longest = srv->max_line;
    if (longest < SMTP_AUTH_LINE_MAX + 2)
        longest = SMTP_AUTH_LINE_MAX + 2;
    srv->line_cap = longest + 1;
    srv->line = xmalloc(srv->line_cap);
    /* Room for the longest line and some pipelined commands after it. */
    srv->in_cap = longest + 4096;
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
    auth_clear(srv);
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
    room = srv->in_cap - srv->in_len;
    if (len > room)
        len = room;
    if (len > 0)
        memcpy(srv->in + srv->in_len, data, len);
    srv->in_len += len;
    return len;
}

const struct smtp_event *
smtp_server_next(smtp_server_t *srv)
{
    bool progress;

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
            decide(srv, SMTP_EV_CONNECT);
            srv->dec_ready = false;
            return &srv->dec;
        case ST_TLS:
        case ST_DONE:
            return &no_event;
        case ST_DATA:
            if (!data_feed(srv))
                return &no_event;
            message_end(srv, false);
            break;
        case ST_BDAT:
            bdat_step(srv, &progress);
            if (!progress)
                return &no_event;
            break;
        case ST_CMD:
        case ST_REFUSED:
        case ST_AUTH:
            /* RFC 2920 3.1: a client that does not read its replies is
             * not served further until it does. */
            if (srv->out.len >= SMTP_OUTPUT_MAX)
                return &no_event;
            if (!line_step(srv))
                return &no_event;
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

void
smtp_server_reply(smtp_server_t *srv, int code, const char *ecode,
                  const char *text)
{
    enum smtp_event_type what = srv->pending;
    char def[8];

    if (what == SMTP_EV_NONE)
        panic("smtp_server_reply() with no decision pending");
    if (code < 200 || code > 599 ||
        (code / 100 == 3 && !(code == 334 && what == SMTP_EV_AUTH)))
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
        reply(srv, code, NULL, "%s %s", srv->hostname, text);
        if (code == 421) {
            news(srv, SMTP_EV_CLOSE);
            srv->st = ST_DONE;
        } else {
            srv->st = code / 100 == 2 ? ST_CMD : ST_REFUSED;
        }
        return;
    case SMTP_EV_AUTH:
        if (code == 334) {
            /* Another round, of a mechanism the caller runs from now on. */
            for (int i = 0; i < 2; i++) {
                free(srv->resp[i]);
                srv->resp[i] = NULL;
            }
            srv->nresp = 0;
            srv->mech = MECH_OTHER;
            srv->round++;
            auth_challenge(srv, text);
            return;
        }
        if (code / 100 == 2)
            srv->authed = true;
        auth_clear(srv);
        break;
    case SMTP_EV_MAIL:
        if (code / 100 == 2) {
            srv->trans = true;
            srv->trans_utf8 = srv->dec.mail.smtputf8;
            srv->nrcpts = 0;
            srv->bdat_used = false;
        }
        break;
    case SMTP_EV_RCPT:
        if (code / 100 == 2)
            srv->nrcpts++;
        break;
    case SMTP_EV_MESSAGE:
        break;
    default:
        panic("pending event is not a decision");
    }
    put_reply(srv, code, ecode, text);
    if (what == SMTP_EV_MESSAGE)
        /* RFC 5321 4.1.1.4: the buffers are cleared, whatever the answer. */
        reset_transaction(srv);
    if (code == 421) {
        /* RFC 5321 3.8: the server closes after 421. */
        reset_transaction(srv);
        news(srv, SMTP_EV_CLOSE);
        srv->st = ST_DONE;
    } else if (code / 100 == 5 && what != SMTP_EV_MESSAGE) {
        count_error(srv);
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
}

void
smtp_server_tls_started(smtp_server_t *srv)
{
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
    auth_clear(srv);
    shut(srv, ecode_valid(ecode, 421) ? ecode : "4.0.0",
         text && *text ? text : "Service closing transmission channel");
}

const char *
smtp_server_helo(const smtp_server_t *srv)
{
    return srv->helo;
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

    if (!srv->esmtp)
        return "SMTP";
    return with[srv->trans_utf8][(srv->tls ? 2 : 0) + (srv->authed ? 1 : 0)];
}
