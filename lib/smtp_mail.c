/*
 * smtp_mail.c - the mail transaction of the ESMTP engine: MAIL and RCPT with
 * their parameters (RFC 5321 4.1.1.2-3, RFC 1870, 6152, 6531, 3461, 4954
 * 5), DATA (4.1.1.4, 4.5.2) and BDAT (RFC 3030), and the message buffer.
 *
 * The message is kept only up to max_message; past that it is read to its
 * end and counted, never stored, so a client cannot make the engine
 * allocate more than the limit (RFC 1870 6.3).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/smtp_addr.h"
#include "lib/smtp_server_int.h"
#include "lib/xalloc.h"

#define ENVID_MAX 100  /* RFC 3461 4.4 */
#define ORCPT_MAX 500  /* RFC 3461 4.2 */
#define MSG_KEEP 65536 /* a message buffer larger is freed after use */

static void message_end(smtp_server_t *srv, bool bdat);

void
smtp_mail_clear(smtp_server_t *srv)
{
    srv->msg_len = 0;
    srv->msg_head = 0;
    srv->over = srv->too_long = false;
    if (srv->msg_cap > MSG_KEEP) {
        free(srv->msg);
        srv->msg = NULL;
        srv->msg_cap = 0;
    }
}

/* A size MAIL declared or the caller guessed is taken up front only up
 * to this; past it the buffer doubles as the octets come. A client that
 * declares SIZE=50000000 and sends nothing, in every session, or one big
 * message that makes the caller guess big for all sessions after it,
 * would otherwise reserve that much per session. */
#define MSG_HINT_MAX (4u << 20)

/* Makes the buffer hold at least need octets: the size MAIL declared or
 * the caller's guess (at most MSG_HINT_MAX), with a little room, else
 * doubling (never past the limit plus the head room). */
static void
msg_grow(smtp_server_t *srv, size_t need)
{
    size_t cap = srv->msg_cap ? srv->msg_cap : 4096, hint;
    size_t limit = srv->max_message + srv->msg_head;

    hint = srv->msg_hint > 0 ? srv->msg_hint : srv->guess;
    if (hint > 0) {
        hint += hint / 64 + 1024;
        if (hint > MSG_HINT_MAX)
            hint = MSG_HINT_MAX;
        if (hint > srv->max_message)
            hint = srv->max_message;
        hint += srv->msg_head;
        if (hint > cap)
            cap = hint;
    }
    while (cap < need)
        cap = cap > limit / 2 ? limit : cap * 2;
    srv->msg = xrealloc(srv->msg, cap);
    srv->msg_cap = cap;
}

/* The message starts (DATA, or the first BDAT of the transaction): the
 * head room the caller asked for is kept free in front of it. */
static void
msg_start(smtp_server_t *srv)
{
    smtp_mail_clear(srv);
    srv->msg_head = srv->head_want;
    if (srv->msg_head > 0)
        msg_grow(srv, srv->msg_head);
    srv->msg_len = srv->msg_head;
}

/* Appends to the message unless it is already over max_message: then it
 * is only marked, and read to its end without being kept (RFC 1870 6.3).
 * Growing, it goes straight to the size MAIL declared (SIZE=, bounded by
 * max_message and MSG_HINT_MAX) or else to the caller's guess
 * (msg_grow()), so a message that keeps its word is never copied to a
 * larger buffer unless it is over MSG_HINT_MAX. */
static void
msg_add(smtp_server_t *srv, const char *p, size_t n)
{
    size_t need;

    if (srv->over || n == 0)
        return;
    if (n > srv->max_message - (srv->msg_len - srv->msg_head)) {
        srv->over = true;
        return;
    }
    need = srv->msg_len + n;
    if (need > srv->msg_cap)
        msg_grow(srv, need);
    memcpy(srv->msg + srv->msg_len, p, n);
    srv->msg_len = need;
}

void
smtp_server_message_room(smtp_server_t *srv, size_t head, size_t guess)
{
    srv->head_want = head;
    srv->guess = guess;
}

char *
smtp_server_message_take(smtp_server_t *srv, size_t *len)
{
    char *m = srv->msg;

    *len = 0;
    if (srv->pending != SMTP_EV_MESSAGE || m == NULL)
        return NULL;
    *len = srv->msg_len;
    srv->msg = NULL;
    srv->msg_cap = srv->msg_len = srv->msg_head = 0;
    return m;
}

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
            if ((unsigned char)*p < 33 || (unsigned char)*p > 126 || *p == '=')
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

/* MAIL FROM:<reverse-path> [SP mail-parameters] (RFC 5321 4.1.1.2). */
void
smtp_mail_from(smtp_server_t *srv, char *arg)
{
    struct smtp_event *ev = &srv->dec;
    const char *why;
    char *p, *key, *val, *params;
    size_t used;
    bool bad = false;
    int rc;

    if (srv->helo == NULL) {
        smtp_server_refuse(srv, 503, "5.5.1", "Error: send %s first",
                           srv->lmtp ? "LHLO" : "HELO/EHLO");
        return;
    }
    if (srv->trans) {
        smtp_server_refuse(srv, 503, "5.5.1", "Error: nested MAIL command");
        return;
    }
    if (srv->mail_needs_auth && !srv->authed) {
        /* RFC 4954 6 and RFC 3207 4 for the case AUTH needs TLS first. */
        if (!smtp_server_auth_offered(srv) && (srv->ext & SMTP_EXT_STARTTLS))
            smtp_server_refuse(srv, 530, "5.7.0",
                               "Must issue a STARTTLS command first");
        else
            smtp_server_refuse(srv, 530, "5.7.0", "Authentication required");
        return;
    }
    p = after_keyword(arg, "FROM:");
    if (p == NULL || *p != '<') {
        smtp_server_refuse(srv, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
        return;
    }
    /* UTF-8 is judged after the parameters, which may say SMTPUTF8. */
    rc = smtp_path_parse(p, strlen(p), SMTP_ADDR_NULL_OK | SMTP_ADDR_UTF8,
                         &srv->path, &used, &why);
    if (rc) {
        /* RFC 5321 4.5.3.1.10: "501 Path too long". */
        smtp_server_refuse(srv, 501, "5.1.7", "Bad sender address syntax: %s",
                           why);
        return;
    }
    if (p[used] != '\0' && p[used] != ' ') {
        smtp_server_refuse(srv, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
        return;
    }
    params = p + used;
    memset(&ev->mail, 0, sizeof(ev->mail));
    p[used - 1] = '\0';
    ev->mail.raw = p + 1;
    ev->mail.path = &srv->path;
    ev->mail.from = srv->path.mailbox;

    while ((key = next_param(&params, &val, &bad)) != NULL) {
        if (bad) {
            smtp_server_refuse(srv, 501, "5.5.4", "Bad MAIL parameter syntax");
            return;
        }
        if (strcasecmp(key, "SIZE") == 0 &&
            smtp_server_offered(srv, SMTP_EXT_SIZE) && !ev->mail.size_given &&
            val) {
            /* RFC 1870 3, 6.2: size-value = 1*20DIGIT. */
            uint64_t v = 0;
            size_t nd = strspn(val, "0123456789");

            if (nd == 0 || val[nd] != '\0' || nd > 20) {
                smtp_server_refuse(srv, 501, "5.5.4", "Bad SIZE parameter");
                return;
            }
            for (size_t i = 0; i < nd && v <= srv->max_message; i++)
                v = v * 10 + (uint64_t)(val[i] - '0');
            if (v > srv->max_message) {
                smtp_server_refuse(
                    srv, 552, "5.3.4",
                    "Message size exceeds fixed maximum message size");
                return;
            }
            ev->mail.size_given = true;
            ev->mail.size = (size_t)v;
        } else if (strcasecmp(key, "BODY") == 0 && val &&
                   smtp_server_offered(srv, SMTP_EXT_8BITMIME) &&
                   ev->mail.body == SMTP_BODY_NONE) {
            /* RFC 6152 2; BINARYMIME (RFC 3030 3) is not offered. */
            if (strcasecmp(val, "7BIT") == 0) {
                ev->mail.body = SMTP_BODY_7BIT;
            } else if (strcasecmp(val, "8BITMIME") == 0) {
                ev->mail.body = SMTP_BODY_8BITMIME;
            } else {
                smtp_server_refuse(srv, 555, "5.5.4", "Unsupported BODY type");
                return;
            }
        } else if (strcasecmp(key, "SMTPUTF8") == 0 && val == NULL &&
                   smtp_server_offered(srv, SMTP_EXT_SMTPUTF8) &&
                   !ev->mail.smtputf8) {
            /* RFC 6531 3.4. */
            ev->mail.smtputf8 = true;
        } else if (strcasecmp(key, "RET") == 0 && val &&
                   smtp_server_offered(srv, SMTP_EXT_DSN) &&
                   ev->mail.ret == SMTP_RET_NONE) {
            /* RFC 3461 4.3. */
            if (strcasecmp(val, "FULL") == 0) {
                ev->mail.ret = SMTP_RET_FULL;
            } else if (strcasecmp(val, "HDRS") == 0) {
                ev->mail.ret = SMTP_RET_HDRS;
            } else {
                smtp_server_refuse(srv, 501, "5.5.4", "Bad RET parameter");
                return;
            }
        } else if (strcasecmp(key, "ENVID") == 0 && val &&
                   smtp_server_offered(srv, SMTP_EXT_DSN) &&
                   ev->mail.envid == NULL) {
            /* RFC 3461 4.4: xtext, 100 characters at most. */
            if (strlen(val) > ENVID_MAX ||
                !smtp_xtext_valid(val, strlen(val))) {
                smtp_server_refuse(srv, 501, "5.5.4", "Bad ENVID parameter");
                return;
            }
            ev->mail.envid = val;
        } else if (strcasecmp(key, "AUTH") == 0 && val && srv->esmtp &&
                   smtp_server_auth_offered(srv) && ev->mail.auth == NULL) {
            /* RFC 4954 5: AUTH=<> or an xtext mailbox. */
            if (strcmp(val, "<>") != 0 && !smtp_xtext_valid(val, strlen(val))) {
                smtp_server_refuse(srv, 501, "5.5.4", "Bad AUTH parameter");
                return;
            }
            ev->mail.auth = val;
        } else {
            /* RFC 5321 4.1.1.11: not recognised or not offered. */
            smtp_server_refuse(srv, 555, "5.5.4",
                               "Unsupported MAIL parameter %s", key);
            return;
        }
    }
    if (bad) {
        smtp_server_refuse(srv, 501, "5.5.4", "Bad MAIL parameter syntax");
        return;
    }
    if (srv->path.utf8 && !ev->mail.smtputf8) {
        /* RFC 6531 3.5. */
        smtp_server_refuse(srv, 553, "5.6.7",
                           "Non-ASCII sender address needs SMTPUTF8");
        return;
    }
    smtp_server_decide(srv, SMTP_EV_MAIL);
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
void
smtp_mail_rcpt(smtp_server_t *srv, char *arg)
{
    struct smtp_event *ev = &srv->dec;
    const char *why;
    char *p, *key, *val, *params;
    size_t used;
    bool bad = false;
    int rc;

    if (!srv->trans) {
        smtp_server_refuse(srv, 503, "5.5.1", "Error: need MAIL command");
        return;
    }
    p = after_keyword(arg, "TO:");
    if (p == NULL || *p != '<') {
        smtp_server_refuse(srv, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        return;
    }
    rc = smtp_path_parse(p, strlen(p), SMTP_ADDR_POSTMASTER | SMTP_ADDR_UTF8,
                         &srv->path, &used, &why);
    if (rc) {
        smtp_server_refuse(srv, 501, "5.1.3",
                           "Bad recipient address syntax: %s", why);
        return;
    }
    if (p[used] != '\0' && p[used] != ' ') {
        smtp_server_refuse(srv, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        return;
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
            smtp_server_offered(srv, SMTP_EXT_DSN) && ev->rcpt.notify == 0) {
            if (parse_notify(val, &ev->rcpt.notify) < 0) {
                smtp_server_refuse(srv, 501, "5.5.4", "Bad NOTIFY parameter");
                return;
            }
        } else if (strcasecmp(key, "ORCPT") == 0 && val &&
                   smtp_server_offered(srv, SMTP_EXT_DSN) &&
                   ev->rcpt.orcpt == NULL) {
            if (!orcpt_valid(val)) {
                smtp_server_refuse(srv, 501, "5.5.4", "Bad ORCPT parameter");
                return;
            }
            ev->rcpt.orcpt = val;
        } else {
            smtp_server_refuse(srv, 555, "5.5.4",
                               "Unsupported RCPT parameter %s", key);
            return;
        }
    }
    if (bad) {
        smtp_server_refuse(srv, 501, "5.5.4", "Bad RCPT parameter syntax");
        return;
    }
    if (srv->path.utf8 && !srv->trans_utf8) {
        /* RFC 6531 3.5: only in a transaction that said SMTPUTF8. */
        smtp_server_refuse(srv, 553, "5.6.7",
                           "Non-ASCII recipient address needs SMTPUTF8");
        return;
    }
    if (srv->nrcpts >= srv->max_rcpts) {
        /* RFC 5321 4.5.3.1.10; a 4xx, so the client sends the rest in
         * another transaction. Not counted as an error. */
        smtp_server_replyf(srv, 452, "4.5.3", "Error: too many recipients");
        return;
    }
    smtp_server_decide(srv, SMTP_EV_RCPT);
}

/* DATA (RFC 5321 4.1.1.4). */
void
smtp_mail_data(smtp_server_t *srv, char *arg)
{
    if (*arg) {
        smtp_server_refuse(srv, 501, "5.5.4", "Syntax: DATA");
    } else if (!srv->trans) {
        smtp_server_refuse(srv, 503, "5.5.1", "Error: need MAIL command");
    } else if (srv->bdat_used) {
        /* RFC 3030 2: never both in one transaction. */
        smtp_server_refuse(srv, 503, "5.5.1", "Error: DATA after BDAT");
    } else if (srv->nrcpts == 0) {
        /* RFC 2920 3.1: the RCPTs may all have failed in the pipeline;
         * RFC 2033 4.2: 503 in LMTP. */
        smtp_server_refuse(srv, srv->lmtp ? 503 : 554, "5.5.1",
                           "Error: no valid recipients");
    } else {
        smtp_server_replyf(srv, 354, NULL, "End data with <CR><LF>.<CR><LF>");
        srv->st = ST_DATA;
        srv->dstate = D_BOL;
        srv->text_line = 0;
        msg_start(srv);
    }
}

/* BDAT chunk-size [SP "LAST"] (RFC 3030 2). The chunk is always read, even
 * when it is refused, so the session stays in step. */
void
smtp_mail_bdat(smtp_server_t *srv, char *arg)
{
    size_t nd = strspn(arg, "0123456789");
    uint64_t size = 0;
    char *rest = arg + nd;

    if (!smtp_server_offered(srv, SMTP_EXT_CHUNKING)) {
        smtp_server_refuse(srv, 502, "5.5.1", "Error: command not implemented");
        return;
    }
    if (nd == 0 || nd > 18 || (*rest != '\0' && *rest != ' ')) {
        smtp_server_refuse(srv, 501, "5.5.4", "Syntax: BDAT size [LAST]");
        return;
    }
    while (*rest == ' ')
        rest++;
    if (*rest != '\0' && strcasecmp(rest, "LAST") != 0) {
        smtp_server_refuse(srv, 501, "5.5.4", "Syntax: BDAT size [LAST]");
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
        srv->bdat_code = srv->lmtp ? 503 : 554; /* RFC 2033 4.2 */
        srv->bdat_ecode = "5.5.1";
        srv->bdat_text = "Error: no valid recipients";
    } else {
        if (!srv->bdat_used)
            msg_start(srv);
        srv->bdat_used = true;
        if (size > srv->max_message - (srv->msg_len - srv->msg_head)) {
            /* RFC 3030 4 and RFC 1870: refused once read. */
            srv->over = true;
            srv->bdat_code = 552;
            srv->bdat_ecode = "5.3.4";
            srv->bdat_text = "Message size exceeds fixed maximum message "
                             "size";
        }
    }
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

/* The next CR and the next LF at or after the scan, or end when there is
 * none: each is found with memchr() once and kept until the scan passes
 * it, so every octet is looked at a bounded number of times, whatever the
 * mix of line ends (bare CRs or LFs cannot make the scan quadratic). */
struct eol {
    const char *end, *cr, *lf;
    bool have_cr, have_lf;
};

static const char *
next_cr(struct eol *e, const char *p)
{
    if (!e->have_cr || e->cr < p) {
        e->cr = memchr(p, '\r', (size_t)(e->end - p));
        if (e->cr == NULL)
            e->cr = e->end;
        e->have_cr = true;
    }
    return e->cr;
}

static const char *
next_lf(struct eol *e, const char *p)
{
    if (!e->have_lf || e->lf < p) {
        e->lf = memchr(p, '\n', (size_t)(e->end - p));
        if (e->lf == NULL)
            e->lf = e->end;
        e->have_lf = true;
    }
    return e->lf;
}

/* Takes the whole lines at p that need no more than copying: text ending
 * in CRLF, with no other CR in it, not starting with a dot at D_BOL. They
 * are added as one run, as they came. Returns where it stopped: at the
 * end, or where the state machine has to look at each octet. */
static const char *
data_lines(smtp_server_t *srv, struct eol *e, const char *p)
{
    const char *run = p;

    while (p < e->end && !(srv->dstate == D_BOL && *p == '.')) {
        const char *lf = next_lf(e, p), *cr = next_cr(e, p);

        /* No LF, a bare LF (no CR before it), or a bare CR before it. */
        if (lf == e->end || cr >= lf || cr + 1 != lf)
            break;
        /* RFC 5321 4.5.3.1.6: the line with its CRLF. */
        if (srv->text_line + (size_t)(cr - p) + 2 > srv->max_text_line)
            srv->too_long = true;
        srv->text_line = 0;
        srv->dstate = D_BOL;
        p = lf + 1;
    }
    msg_add(srv, run, (size_t)(p - run));
    return p;
}

/*
 * DATA text (RFC 5321 4.1.1.4, 4.5.2). The end is only CRLF "." CRLF,
 * where the first CRLF may be the DATA command's own: a bare LF or CR next
 * to a dot never ends it (SMTP smuggling), they are line ends of the text
 * and stored as CRLF. Dot-stuffing is undone at the start of a line that
 * followed a real CRLF. Returns true at the end of the data.
 *
 * Plain lines are found with memchr() and copied whole (data_lines());
 * the state machine below takes the rest: a dot at the start of a line,
 * a bare CR or LF, a line cut by the end of the input.
 */
bool
smtp_mail_data_feed(smtp_server_t *srv)
{
    const char *p = srv->in + srv->in_off, *end = srv->in + srv->in_len;
    struct eol e = {.end = end};

    while (p < end) {
        char c;

        if (srv->dstate == D_BOL || srv->dstate == D_TEXT) {
            p = data_lines(srv, &e, p);
            if (p == end)
                break;
        }
        c = *p;
        switch (srv->dstate) {
        case D_TEXT:
            if (c == '\r') {
                srv->dstate = D_CR;
                p++;
            } else if (c == '\n') {
                text_line_end(srv);
                p++;
            } else {
                const char *cr = next_cr(&e, p), *lf = next_lf(&e, p);
                const char *q = cr < lf ? cr : lf;

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
                smtp_server_consume(srv,
                                    (size_t)(p + 1 - (srv->in + srv->in_off)));
                message_end(srv, false);
                return true;
            }
            /* ".", a bare CR, more: the dot goes, the CR is a line end. */
            srv->dstate = D_CR;
            break;
        }
    }
    smtp_server_consume(srv, srv->in_len - srv->in_off);
    return false;
}

/* The data has ended: refuse it here, or hand it to the caller. */
static void
message_end(smtp_server_t *srv, bool bdat)
{
    struct smtp_event *ev = &srv->dec;

    srv->st = ST_CMD;
    if (srv->over) {
        /* RFC 1870 6.3; not a protocol error of the client. */
        srv->refused_552++;
        smtp_server_data_reply(srv, 552, "5.3.4",
                               "Message size exceeds "
                               "fixed maximum message size");
        smtp_server_reset_txn(srv);
        return;
    }
    if (srv->too_long) {
        srv->refused_554++;
        smtp_server_data_reply(srv, 554, "5.6.0",
                               "Message has a line longer than %zu octets "
                               "(RFC 5321 4.5.3.1.6)",
                               srv->max_text_line);
        smtp_server_reset_txn(srv);
        return;
    }
    memset(&ev->message, 0, sizeof(ev->message));
    ev->message.data = srv->msg ? srv->msg + srv->msg_head : "";
    ev->message.len = srv->msg_len - srv->msg_head;
    ev->message.bdat = bdat;
    if (srv->lmtp) {
        /* RFC 2033 4.2: an answer per recipient, collected here. */
        srv->ans = xcalloc((size_t)srv->nrcpts, sizeof(*srv->ans));
        srv->nanswered = 0;
        ev->message.rcpts = (const char *const *)srv->rcpt;
        ev->message.nrcpts = srv->nrcpts;
    }
    smtp_server_decide(srv, SMTP_EV_MESSAGE);
}

/* BDAT: the chunk's octets, as they are (RFC 3030 2). */
bool
smtp_mail_bdat_feed(smtp_server_t *srv)
{
    size_t n = srv->in_len - srv->in_off;

    if (n > srv->bdat_left)
        n = (size_t)srv->bdat_left;
    if (n > 0) {
        if (srv->bdat_code == 0)
            msg_add(srv, srv->in + srv->in_off, n);
        smtp_server_consume(srv, n);
        srv->bdat_left -= n;
    }
    if (srv->bdat_left > 0)
        return n > 0;
    srv->st = ST_CMD;
    if (srv->bdat_code) {
        /* RFC 3030 2: after a refused chunk the transaction is over. The
         * last chunk's refusal is the data's, once per LMTP recipient. */
        if (srv->bdat_code == 552)
            srv->refused_552++;
        if (srv->bdat_last)
            smtp_server_data_reply(srv, srv->bdat_code, srv->bdat_ecode, "%s",
                                   srv->bdat_text);
        else
            smtp_server_replyf(srv, srv->bdat_code, srv->bdat_ecode, "%s",
                               srv->bdat_text);
        smtp_server_reset_txn(srv);
        if (srv->bdat_code != 552)
            smtp_server_count_error(srv);
        return true;
    }
    if (srv->bdat_last)
        message_end(srv, true);
    else
        smtp_server_replyf(srv, 250, "2.0.0", "%llu octets received",
                           (unsigned long long)srv->bdat_size);
    return true;
}
