/*
 * imap_server.c - the IMAP4rev1 server engine (RFC 3501): the session.
 *
 * Input is copied into a fixed buffer and read by imap_server_next(): one
 * line at a time, each command assembled whole in cmd (its lines ended by
 * CRLF, each literal's octets after the line that announced it) before it
 * is parsed, so pipelined commands run in order. Every line, literal and
 * command is checked against its limit as it arrives; one over its limit
 * is refused, and the rest of it dropped without being stored (up to a
 * flood bound, past which the session ends). A command that needs the
 * caller's decision parks the engine until imap_server_complete().
 *
 * Event data lives in the engine: the parsed command in the parser's arena
 * and APPEND's message in cmd, neither touched while a decision is
 * pending.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/imap_parse.h"
#include "lib/imap_server_int.h"
#include "lib/xalloc.h"

#define DEFAULT_HOSTNAME "localhost"
#define DEFAULT_MAX_LINE 8192 /* RFC 7162 4: clients keep to 8192 */
#define DEFAULT_MAX_LITERAL 8192
#define DEFAULT_MAX_COMMAND 65536
#define DEFAULT_MAX_APPEND 10485760
#define DEFAULT_MAX_ERRORS 20
#define MIN_LINE 1024
#define MIN_LITERAL 1024

/* A line without an end this many times its limit long, or a refused
 * LITERAL+ literal this many times its limit, is not a mistake but a
 * flood: the session is closed instead of the octets being dropped. */
#define FLOOD_FACTOR 4

/* RFC 4616 2: each of PLAIN's three fields is at most 255 octets. */
#define PLAIN_FIELD_MAX 255

static const struct imap_event no_event = {.type = IMAP_EV_NONE};

static void panic(const char *what) __attribute__((noreturn));

/* A broken invariant: the caller misused the interface. */
static void
panic(const char *what)
{
    fprintf(stderr, "imap_server: PANIC: %s\n", what);
    abort();
}

void
imap_server_news(imap_server_t *srv, enum imap_event_type type)
{
    if (srv->nnews == NEWS_MAX)
        panic("news queue full");
    srv->news[srv->nnews++] = type;
}

/* Frees a string that held credentials, cleared first so that no copy of
 * a password outlives the exchange in freed memory. */
static void
wipe(char **s_p)
{
    if (*s_p) {
        explicit_bzero(*s_p, strlen(*s_p));
        free(*s_p);
        *s_p = NULL;
    }
}

static void
clear_credentials(imap_server_t *srv)
{
    wipe(&srv->user);
    wipe(&srv->pass);
    wipe(&srv->authzid);
}

/* Forgets the command read (the parsed one too, unless IDLE keeps its
 * tag in idle_tag), ready for the next. */
static void
reset_command(imap_server_t *srv, bool secret)
{
    if (secret) {
        if (srv->cmd.data)
            explicit_bzero(srv->cmd.data, srv->cmd.len);
        /* The lines read stay in the input buffer: before what is still
         * unread, and past its end where imap_server_input() moved it. */
        explicit_bzero(srv->in, srv->in_off);
        explicit_bzero(srv->in + srv->in_len, srv->in_cap - srv->in_len);
    }
    /* A large APPEND must not keep its buffer for the whole session. */
    if (srv->cmd.cap > 2 * srv->max_command)
        buf_free(&srv->cmd);
    else
        buf_reset(&srv->cmd);
    imap_parse_clear(srv->parse, secret);
    srv->cur = NULL;
    srv->cmd_size = 0;
    srv->first_done = srv->is_append = srv->msg_taken = false;
    srv->refused = false;
    free(srv->tag);
    srv->tag = NULL;
    srv->mode = M_CMD;
}

void
imap_server_shut(imap_server_t *srv, const char *code, const char *text)
{
    if (srv->st == S_DONE)
        return;
    clear_credentials(srv);
    if (srv->in_fetch && srv->fb == &srv->out) {
        /* A FETCH response cut short goes, as far as it was not sent; the
         * caller may finish it, into a buffer that is thrown away. */
        srv->out.len =
            srv->fetch_start > srv->out_off ? srv->fetch_start : srv->out_off;
        buf_reserve(&srv->out, 0);
        srv->out.data[srv->out.len] = '\0';
        srv->fb = &srv->fetch;
        buf_reset(&srv->fetch);
    }
    buf_free(&srv->held);
    srv->held_expunge = false;
    imap_resp_status_now(srv, IMAP_BYE, code, text);
    imap_server_news(srv, IMAP_EV_CLOSE);
    srv->st = S_DONE;
    srv->pending = IMAP_EV_NONE;
    srv->dec_ready = false;
    srv->idling = false;
}

void
imap_server_count_error(imap_server_t *srv)
{
    if (++srv->errors >= srv->max_errors)
        imap_server_shut(srv, NULL, "Too many errors");
}

bool
imap_server_no_expunge(const struct imap_cmd *cmd)
{
    return !cmd->uid &&
           (cmd->id == IMAP_CMD_FETCH || cmd->id == IMAP_CMD_STORE ||
            cmd->id == IMAP_CMD_SEARCH);
}

/* A BAD (or other refusal) of the command just read; tag NULL: untagged. */
static void
refuse_now(imap_server_t *srv, const char *tag, enum imap_status st,
           const char *code, const char *why)
{
    imap_resp_tagged(srv, tag, st, code, why);
    if (st == IMAP_BAD)
        imap_server_count_error(srv);
}

static void
decide(imap_server_t *srv, enum imap_event_type type)
{
    srv->dec.type = type;
    srv->pending = type;
    srv->dec_ready = true;
}

/* SASL PLAIN (RFC 4616) for AUTHENTICATE; its base64 is lib/base64.h. */

/*
 * A PLAIN response (base64 of authzid NUL authcid NUL passwd): into
 * srv->user, pass and authzid and an IMAP_EV_LOGIN decision, or a BAD.
 */
static void
sasl_plain(imap_server_t *srv, const char *b64, size_t len)
{
    unsigned char *d = xmalloc(len / 4 * 3 + 2);
    long n = base64_decode(b64, len, d, len / 4 * 3 + 2, BASE64_PADDED);
    const unsigned char *nul1, *nul2;

    if (n < 0) {
        refuse_now(srv, srv->cur->tag, IMAP_BAD, NULL, "Invalid base64");
        goto out;
    }
    nul1 = memchr(d, '\0', (size_t)n);
    nul2 = nul1 ? memchr(nul1 + 1, '\0', (size_t)(d + n - nul1 - 1)) : NULL;
    if (nul2 == NULL || memchr(nul2 + 1, '\0', (size_t)(d + n - nul2 - 1)) ||
        nul1 - d > PLAIN_FIELD_MAX || nul2 - nul1 - 1 > PLAIN_FIELD_MAX ||
        d + n - nul2 - 1 > PLAIN_FIELD_MAX || nul2 == nul1 + 1 ||
        nul2 + 1 == d + n) {
        refuse_now(srv, srv->cur->tag, IMAP_BAD, NULL,
                   "Invalid PLAIN response");
        goto out;
    }
    clear_credentials(srv);
    srv->authzid = xstrndup((const char *)d, (size_t)(nul1 - d));
    srv->user = xstrndup((const char *)nul1 + 1, (size_t)(nul2 - nul1 - 1));
    srv->pass = xstrndup((const char *)nul2 + 1, (size_t)(d + n - nul2 - 1));
    memset(&srv->dec, 0, sizeof(srv->dec));
    srv->dec.cmd = srv->cur;
    srv->dec.login.mech = "PLAIN";
    srv->dec.login.authzid = srv->authzid;
    srv->dec.login.user = srv->user;
    srv->dec.login.pass = srv->pass;
    decide(srv, IMAP_EV_LOGIN);
out:
    explicit_bzero(d, len / 4 * 3 + 2);
    free(d);
    if (srv->pending == IMAP_EV_NONE)
        reset_command(srv, true);
}

/* A line of the SASL exchange (RFC 3501 6.2.2). */
static void
sasl_line(imap_server_t *srv, const char *s, size_t n, bool too_long)
{
    srv->mode = M_CMD;
    if (too_long) {
        refuse_now(srv, srv->cur->tag, IMAP_BAD, NULL, "Line too long");
        reset_command(srv, true);
    } else if (n == 1 && s[0] == '*') {
        /* The client's cancel: a tagged BAD, not counted. */
        imap_resp_tagged(srv, srv->cur->tag, IMAP_BAD, NULL,
                         "AUTHENTICATE cancelled");
        reset_command(srv, true);
    } else {
        sasl_plain(srv, s, n);
    }
}

static bool
login_disabled(const imap_server_t *srv)
{
    return srv->login_needs_tls && !srv->tls;
}

static void
cmd_authenticate(imap_server_t *srv, const struct imap_cmd *c)
{
    if (login_disabled(srv)) {
        refuse_now(srv, c->tag, IMAP_NO, "PRIVACYREQUIRED",
                   "Authentication disabled without TLS, use STARTTLS");
        imap_server_count_error(srv);
        reset_command(srv, true);
        return;
    }
    if (strcmp(c->authenticate.mech, "PLAIN") != 0) {
        refuse_now(srv, c->tag, IMAP_NO, NULL,
                   "Unsupported authentication mechanism");
        reset_command(srv, true);
        return;
    }
    srv->cur = c;
    if (c->authenticate.ir) {
        sasl_plain(srv, c->authenticate.ir, strlen(c->authenticate.ir));
        return;
    }
    /* An empty challenge: "+" SP CRLF (RFC 3501 7.5). */
    buf_adds(&srv->out, "+ \r\n");
    srv->mode = M_SASL;
}

/* IDLE (RFC 2177): the line that ends it. */
static void
idle_line(imap_server_t *srv, const char *s, size_t n, bool too_long)
{
    srv->idling = false;
    srv->mode = M_CMD;
    if (!too_long && n == 4 && strncasecmp(s, "DONE", 4) == 0) {
        imap_resp_tagged(srv, srv->idle_tag, IMAP_OK, NULL, "IDLE terminated");
    } else {
        imap_resp_tagged(srv, srv->idle_tag, IMAP_BAD, NULL, "Expected DONE");
        imap_server_count_error(srv);
    }
    free(srv->idle_tag);
    srv->idle_tag = NULL;
    if (srv->st != S_DONE)
        imap_server_news(srv, IMAP_EV_IDLE_DONE);
}

/* Which state each command may run in (RFC 3501 6). */
static const char *
state_refusal(const imap_server_t *srv, enum imap_cmd_id id)
{
    switch (id) {
    case IMAP_CMD_CAPABILITY:
    case IMAP_CMD_NOOP:
    case IMAP_CMD_LOGOUT:
    case IMAP_CMD_ID:
        return NULL;
    case IMAP_CMD_STARTTLS:
    case IMAP_CMD_AUTHENTICATE:
    case IMAP_CMD_LOGIN:
        return srv->st == S_NOTAUTH ? NULL : "Already authenticated";
    case IMAP_CMD_ENABLE:
        /* RFC 5161 3.1: before any mailbox is selected. */
        if (srv->st == S_SELECTED)
            return "ENABLE is not valid with a mailbox selected";
        /* fall through */
    case IMAP_CMD_SELECT:
    case IMAP_CMD_EXAMINE:
    case IMAP_CMD_CREATE:
    case IMAP_CMD_DELETE:
    case IMAP_CMD_RENAME:
    case IMAP_CMD_SUBSCRIBE:
    case IMAP_CMD_UNSUBSCRIBE:
    case IMAP_CMD_LIST:
    case IMAP_CMD_LSUB:
    case IMAP_CMD_STATUS:
    case IMAP_CMD_APPEND:
    case IMAP_CMD_IDLE:
    case IMAP_CMD_NAMESPACE:
        return srv->st == S_NOTAUTH ? "Not authenticated" : NULL;
    default:
        if (srv->st == S_NOTAUTH)
            return "Not authenticated";
        return srv->st == S_SELECTED ? NULL : "No mailbox selected";
    }
}

/* A SEARCH charset the engine knows: US-ASCII and UTF-8 (RFC 3501 6.4.4
 * wants US-ASCII). Strings are taken as UTF-8 either way. */
static bool
charset_known(const char *cs)
{
    return cs == NULL || strcasecmp(cs, "US-ASCII") == 0 ||
           strcasecmp(cs, "UTF-8") == 0;
}

/* A whole command, parsed: answered here or made a decision. */
static void
dispatch(imap_server_t *srv, const struct imap_cmd *c)
{
    const char *why = state_refusal(srv, c->id);
    buf_t b = BUF_INIT;

    srv->cur = c;
    if (why) {
        refuse_now(srv, c->tag, IMAP_BAD, NULL, why);
        reset_command(srv, c->id == IMAP_CMD_LOGIN);
        return;
    }
    /* A command is in progress: what was held may go now, before its
     * responses, unless this is one during which an EXPUNGE may not. */
    imap_resp_flush_held(srv);
    switch (c->id) {
    case IMAP_CMD_CAPABILITY:
        imap_server_capability(srv);
        imap_resp_tagged(srv, c->tag, IMAP_OK, NULL, "CAPABILITY completed");
        break;
    case IMAP_CMD_NOOP:
        if (srv->st == S_SELECTED)
            goto decision; /* the caller's chance to poll the mailbox */
        imap_resp_tagged(srv, c->tag, IMAP_OK, NULL, "NOOP completed");
        break;
    case IMAP_CMD_LOGOUT:
        buf_printf(&b, "%s IMAP4rev1 server logging out", srv->hostname);
        imap_resp_status_now(srv, IMAP_BYE, NULL, b.data);
        buf_free(&b);
        imap_resp_tagged(srv, c->tag, IMAP_OK, NULL, "LOGOUT completed");
        clear_credentials(srv);
        buf_free(&srv->held);
        imap_server_news(srv, IMAP_EV_LOGOUT);
        srv->st = S_DONE;
        break;
    case IMAP_CMD_STARTTLS:
        if (!srv->starttls || srv->tls) {
            refuse_now(srv, c->tag, IMAP_BAD, NULL,
                       srv->tls ? "TLS already active"
                                : "STARTTLS not offered");
            break;
        }
        imap_resp_tagged(srv, c->tag, IMAP_OK, NULL,
                         "Begin TLS negotiation now");
        /* RFC 3501 6.2.1 and CVE-2011-0411: nothing read after the line
         * may be taken as sent under TLS. */
        srv->in_off = srv->in_len = 0;
        srv->st = S_TLS;
        imap_server_news(srv, IMAP_EV_STARTTLS);
        break;
    case IMAP_CMD_LOGIN:
        if (login_disabled(srv)) {
            refuse_now(srv, c->tag, IMAP_NO, "PRIVACYREQUIRED",
                       "LOGIN disabled without TLS, use STARTTLS");
            imap_server_count_error(srv);
            break;
        }
        memset(&srv->dec, 0, sizeof(srv->dec));
        srv->dec.cmd = c;
        srv->dec.login.authzid = "";
        srv->dec.login.user = c->login.user;
        srv->dec.login.pass = c->login.pass;
        decide(srv, IMAP_EV_LOGIN);
        return;
    case IMAP_CMD_AUTHENTICATE:
        cmd_authenticate(srv, c);
        return;
    case IMAP_CMD_SEARCH:
        if (!charset_known(c->search.charset)) {
            refuse_now(srv, c->tag, IMAP_NO, "BADCHARSET (US-ASCII UTF-8)",
                       "Unsupported charset");
            break;
        }
        goto decision;
    default:
    decision:
        memset(&srv->dec, 0, sizeof(srv->dec));
        srv->dec.cmd = c;
        decide(srv, IMAP_EV_COMMAND);
        return;
    }
    reset_command(srv, c->id == IMAP_CMD_LOGIN);
}

/* The command in cmd is whole: parse it. */
static void
command_read(imap_server_t *srv)
{
    const struct imap_cmd *c;
    const char *why;

    if (imap_parse_command(srv->parse, srv->cmd.data, srv->cmd.len, &c, &why) <
        0) {
        refuse_now(srv, c->tag, IMAP_BAD, NULL, why);
        reset_command(srv, c->id == IMAP_CMD_LOGIN ||
                               c->id == IMAP_CMD_AUTHENTICATE);
        return;
    }
    dispatch(srv, c);
}

/* Refuses the command being read; its rest is dropped, then the refusal
 * goes out (finish_refusal()). The first reason stands. */
static void
refuse_reading(imap_server_t *srv, enum imap_status st, const char *code,
               const char *why)
{
    if (srv->refused)
        return;
    srv->refused = true;
    srv->ref_st = st;
    srv->ref_code = code;
    srv->ref_why = why;
}

static void
finish_refusal(imap_server_t *srv)
{
    refuse_now(srv, srv->tag, srv->ref_st, srv->ref_code, srv->ref_why);
    reset_command(srv, true);
}

/* Drops a refused LITERAL+ literal of n octets, or ends a flood. */
static void
drop_literal(imap_server_t *srv, uint64_t n, size_t limit)
{
    if (n > (uint64_t)FLOOD_FACTOR * limit) {
        imap_server_shut(srv, "TOOBIG", "Literal too large");
        return;
    }
    srv->lit_left = n;
    srv->rd = n ? RD_DROP_LITERAL : RD_LINE;
}

/* Whether the first line is "tag APPEND ..." and where its arguments
 * start. */
static bool
append_line(const char *s, size_t n, size_t tag_len, size_t *args)
{
    if (tag_len == 0 || n < tag_len + 8 ||
        strncasecmp(s + tag_len, " APPEND ", 8) != 0)
        return false;
    *args = tag_len + 8;
    return true;
}

/*
 * One line of a command, without its line end (too_long: the line was
 * over max_line and dropped; s holds its last octets). Adds it to the
 * command, then reads the literal it announces, or ends the command.
 */
static void
command_line(imap_server_t *srv, const char *s, size_t n, bool too_long)
{
    uint64_t lit = 0;
    bool nonsync = false, announced, is_msg, mailbox_lit = false;
    size_t args = 0;

    announced = imap_parse_literal_end(s, n, &lit, &nonsync);
    if (!srv->first_done) {
        size_t tl = too_long ? 0 : imap_parse_tag(s, n);

        srv->first_done = true;
        if (tl && srv->tag == NULL)
            srv->tag = xstrndup(s, tl);
        srv->is_append = !too_long && append_line(s, n, tl, &args);
        /* The mailbox name may be a literal too: the message is the
         * literal after it (RFC 3501 6.3.11). */
        mailbox_lit = srv->is_append && announced && s[args] == '{';
    }
    if (too_long)
        refuse_reading(srv, IMAP_BAD, NULL, "Line too long");
    else if (memchr(s, '\0', n) != NULL)
        refuse_reading(srv, IMAP_BAD, NULL, "NUL in command");
    else if (srv->cmd_size + n + 2 > srv->max_command)
        refuse_reading(srv, IMAP_BAD, "TOOBIG", "Command too long");
    if (!srv->refused) {
        buf_add(&srv->cmd, s, n);
        buf_add(&srv->cmd, "\r\n", 2);
        srv->cmd_size += n + 2;
    }
    if (!announced) {
        if (srv->refused)
            finish_refusal(srv);
        else
            command_read(srv);
        return;
    }
    is_msg = srv->is_append && !srv->msg_taken && !mailbox_lit;
    if (!srv->refused) {
        if (is_msg && lit > srv->max_append)
            refuse_reading(srv, IMAP_NO, "TOOBIG", "Message too large");
        else if (!is_msg && (lit > srv->max_literal ||
                             srv->cmd_size + lit > srv->max_command))
            refuse_reading(srv, IMAP_BAD, "TOOBIG", "Literal too large");
    }
    if (srv->refused) {
        /* A synchronizing literal is not sent until "+" (RFC 3501 7.5):
         * the command ends here. A LITERAL+ one comes anyway. */
        if (nonsync)
            drop_literal(srv, lit, is_msg ? srv->max_append : srv->max_command);
        else
            finish_refusal(srv);
        return;
    }
    if (!nonsync)
        buf_adds(&srv->out, "+ Ready for literal data\r\n");
    if (is_msg)
        srv->msg_taken = true;
    else
        srv->cmd_size += (size_t)lit;
    buf_reserve(&srv->cmd, (size_t)lit);
    srv->lit_left = lit;
    srv->rd = lit ? RD_LITERAL : RD_LINE;
}

/* A whole line, without its line end, in the current mode. */
static void
line(imap_server_t *srv, const char *s, size_t n, bool too_long)
{
    switch (srv->mode) {
    case M_SASL:
        sasl_line(srv, s, n, too_long);
        break;
    case M_IDLE:
        idle_line(srv, s, n, too_long);
        break;
    case M_CMD:
        command_line(srv, s, n, too_long);
        break;
    }
}

static void
consume(imap_server_t *srv, size_t n)
{
    srv->in_off += n;
    if (srv->in_off == srv->in_len)
        srv->in_off = srv->in_len = 0;
}

/* Keeps the last octets of a line being dropped (its CR LF left out). */
static void
keep_tail(imap_server_t *srv, const char *s, size_t n)
{
    size_t room = sizeof(srv->tail);

    if (n >= room) {
        memcpy(srv->tail, s + n - room, room);
        srv->tail_len = room;
        return;
    }
    if (srv->tail_len + n > room) {
        size_t drop = srv->tail_len + n - room;

        memmove(srv->tail, srv->tail + drop, srv->tail_len - drop);
        srv->tail_len -= drop;
    }
    memcpy(srv->tail + srv->tail_len, s, n);
    srv->tail_len += n;
}

/*
 * Reads from the input once. Returns true when it made progress (a line
 * handled, octets taken or dropped), false when it needs more input. A
 * decision it finds is left to imap_server_next().
 */
static bool
read_step(imap_server_t *srv)
{
    char *start = srv->in + srv->in_off, *lf;
    size_t avail = srv->in_len - srv->in_off, n;

    if (avail == 0)
        return false;
    switch (srv->rd) {
    case RD_LITERAL:
    case RD_DROP_LITERAL:
        n = avail < srv->lit_left ? avail : (size_t)srv->lit_left;
        if (srv->rd == RD_LITERAL)
            buf_add(&srv->cmd, start, n);
        consume(srv, n);
        srv->lit_left -= n;
        if (srv->lit_left == 0)
            srv->rd = RD_LINE;
        return true;
    case RD_DROP_LINE:
        lf = memchr(start, '\n', avail);
        n = lf ? (size_t)(lf - start) : avail;
        keep_tail(srv, start, n);
        srv->dropped += n;
        consume(srv, lf ? n + 1 : n);
        if (lf == NULL) {
            if (srv->dropped > FLOOD_FACTOR * srv->max_line)
                imap_server_shut(srv, NULL, "Line too long");
            return true;
        }
        srv->rd = RD_LINE;
        if (srv->tail_len && srv->tail[srv->tail_len - 1] == '\r')
            srv->tail_len--;
        line(srv, srv->tail, srv->tail_len, true);
        return true;
    case RD_LINE:
        break;
    }
    lf = memchr(start, '\n', avail);
    if (lf == NULL) {
        if (avail < srv->max_line)
            return false;
        /* Over the limit with no end in sight: drop it, but keep the tag
         * of a command's first line for the refusal. */
        if (srv->mode == M_CMD && !srv->first_done) {
            size_t tl = imap_parse_tag(start, avail);

            free(srv->tag);
            srv->tag = tl ? xstrndup(start, tl) : NULL;
        }
        srv->rd = RD_DROP_LINE;
        srv->dropped = 0;
        srv->tail_len = 0;
        return true;
    }
    n = (size_t)(lf - start);
    consume(srv, n + 1);
    /* Lines may end in a bare LF: lenient, as literals are counted. */
    if (n > 0 && start[n - 1] == '\r')
        n--;
    if (n + 2 > srv->max_line) {
        if (srv->mode == M_CMD && !srv->first_done) {
            size_t tl = imap_parse_tag(start, n);

            free(srv->tag);
            srv->tag = tl ? xstrndup(start, tl) : NULL;
        }
        srv->tail_len = 0;
        keep_tail(srv, start, n);
        line(srv, srv->tail, srv->tail_len, true);
        return true;
    }
    line(srv, start, n, false);
    return true;
}

/* Public interface. */

imap_server_t *
imap_server_new(const struct imap_server_opts *o)
{
    imap_server_t *srv = xcalloc(1, sizeof(*srv));

    srv->hostname =
        xstrdup(o->hostname && *o->hostname ? o->hostname : DEFAULT_HOSTNAME);
    srv->max_line = o->max_line ? o->max_line : DEFAULT_MAX_LINE;
    if (srv->max_line < MIN_LINE)
        srv->max_line = MIN_LINE;
    srv->max_literal = o->max_literal ? o->max_literal : DEFAULT_MAX_LITERAL;
    if (srv->max_literal < MIN_LITERAL)
        srv->max_literal = MIN_LITERAL;
    srv->max_command = o->max_command ? o->max_command : DEFAULT_MAX_COMMAND;
    if (srv->max_command < srv->max_line)
        srv->max_command = srv->max_line;
    if (srv->max_command < srv->max_literal + MIN_LINE)
        srv->max_command = srv->max_literal + MIN_LINE;
    srv->max_append = o->max_append ? o->max_append : DEFAULT_MAX_APPEND;
    srv->max_errors = o->max_errors > 0 ? o->max_errors : DEFAULT_MAX_ERRORS;
    srv->starttls = o->starttls;
    srv->tls = o->tls_active;
    srv->login_needs_tls = o->login_needs_tls;

    /* Room for the longest line and some pipelined commands after it. */
    srv->in_cap = srv->max_line + 4096;
    srv->in = xmalloc(srv->in_cap);
    srv->parse = imap_parse_new();
    srv->st = S_CONNECT;
    return srv;
}

void
imap_server_destroy(imap_server_t **srv_p)
{
    imap_server_t *srv = *srv_p;

    if (srv == NULL)
        return;
    clear_credentials(srv);
    if (srv->cmd.data)
        explicit_bzero(srv->cmd.data, srv->cmd.len);
    imap_parse_clear(srv->parse, true);
    imap_parse_destroy(&srv->parse);
    free(srv->hostname);
    free(srv->in);
    free(srv->tag);
    free(srv->idle_tag);
    buf_free(&srv->cmd);
    buf_free(&srv->out);
    buf_free(&srv->held);
    buf_free(&srv->fetch);
    free(srv);
    *srv_p = NULL;
}

size_t
imap_server_input(imap_server_t *srv, const void *data, size_t len)
{
    size_t room;

    if (srv->st == S_DONE || srv->st == S_TLS)
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

void
imap_server_take_input(imap_server_t *srv, buf_t *out)
{
    buf_add(out, srv->in + srv->in_off, srv->in_len - srv->in_off);
    srv->in_off = srv->in_len = 0;
}

const struct imap_event *
imap_server_next(imap_server_t *srv)
{
    /* A FETCH response being built in the output must not have another
     * written into its middle. */
    if (srv->in_fetch)
        return &no_event;
    for (;;) {
        if (srv->nnews > 0) {
            memset(&srv->news_ev, 0, sizeof(srv->news_ev));
            srv->news_ev.type = srv->news[0];
            memmove(srv->news, srv->news + 1,
                    (size_t)(--srv->nnews) * sizeof(srv->news[0]));
            return &srv->news_ev;
        }
        if (srv->dec_ready) {
            srv->dec_ready = false;
            return &srv->dec;
        }
        if (srv->pending != IMAP_EV_NONE)
            return &no_event;
        switch (srv->st) {
        case S_CONNECT:
            memset(&srv->dec, 0, sizeof(srv->dec));
            decide(srv, IMAP_EV_CONNECT);
            srv->dec_ready = false;
            return &srv->dec;
        case S_TLS:
        case S_DONE:
            return &no_event;
        default:
            break;
        }
        /* A client that does not read its responses is not served
         * further until it does; a command already begun goes on. */
        if (srv->rd == RD_LINE && srv->mode == M_CMD && !srv->first_done &&
            srv->out.len - srv->out_off >= IMAP_OUTPUT_MAX)
            return &no_event;
        if (!read_step(srv))
            return &no_event;
    }
}

static const char *
default_text(const imap_server_t *srv, enum imap_status st, char *buf,
             size_t size)
{
    const struct imap_cmd *c = srv->cur;

    if (c == NULL)
        return NULL;
    snprintf(buf, size, "%s%s %s", c->uid ? "UID " : "",
             imap_parse_cmd_name(c->id),
             st == IMAP_OK   ? "completed"
             : st == IMAP_NO ? "failed"
                             : "refused");
    return buf;
}

static void
complete_connect(imap_server_t *srv, enum imap_status st, const char *code,
                 const char *text)
{
    buf_t caps = BUF_INIT, t = BUF_INIT;

    if (st != IMAP_OK && st != IMAP_PREAUTH && st != IMAP_BYE)
        panic("imap_server_complete() on CONNECT with NO or BAD");
    srv->st = st == IMAP_PREAUTH ? S_AUTH : S_NOTAUTH;
    if (st == IMAP_BYE) {
        imap_server_shut(srv, NULL,
                         text && *text ? text : "Service unavailable");
        return;
    }
    if (code == NULL) {
        buf_adds(&caps, "CAPABILITY ");
        imap_resp_capabilities(srv, &caps);
        code = caps.data;
    }
    buf_printf(&t, "%s %s", srv->hostname,
               text && *text ? text : "IMAP4rev1 ready");
    imap_resp_status_now(srv, st, code, t.data);
    buf_free(&caps);
    buf_free(&t);
    /* What the caller wrote before the greeting goes after it. */
    if (!srv->held_expunge && srv->held.len) {
        buf_add(&srv->out, srv->held.data, srv->held.len);
        buf_reset(&srv->held);
    }
}

static void
complete_login(imap_server_t *srv, enum imap_status st, const char *code,
               const char *text)
{
    const char *tag = srv->cur->tag;
    buf_t caps = BUF_INIT;

    switch (st) {
    case IMAP_OK:
        srv->st = S_AUTH;
        if (code == NULL) {
            buf_adds(&caps, "CAPABILITY ");
            imap_resp_capabilities(srv, &caps);
            code = caps.data;
        }
        imap_resp_tagged(srv, tag, IMAP_OK, code,
                         text && *text ? text : "Logged in");
        break;
    case IMAP_NO:
    case IMAP_BAD:
        imap_resp_tagged(srv, tag, st, code ? code : "AUTHENTICATIONFAILED",
                         text && *text ? text : "Authentication failed");
        imap_server_count_error(srv);
        break;
    default:
        panic("imap_server_complete() on LOGIN with PREAUTH");
    }
    buf_free(&caps);
}

void
imap_server_complete(imap_server_t *srv, enum imap_status st, const char *code,
                     const char *text)
{
    enum imap_event_type what = srv->pending;
    const struct imap_cmd *c = srv->cur;
    char def[64];

    if (what == IMAP_EV_NONE)
        panic("imap_server_complete() with no decision pending");
    if (srv->in_fetch)
        panic("imap_server_complete() inside a FETCH response");
    if ((unsigned)st > IMAP_PREAUTH ||
        (st == IMAP_PREAUTH && what != IMAP_EV_CONNECT))
        panic("imap_server_complete() with a bad status");
    srv->pending = IMAP_EV_NONE;
    srv->dec_ready = false;
    if (what == IMAP_EV_CONNECT) {
        complete_connect(srv, st, code, text);
        return;
    }
    if (st == IMAP_BYE) {
        reset_command(srv, true);
        imap_server_shut(srv, NULL,
                         text && *text ? text : "Server shutting down");
        return;
    }
    if (what == IMAP_EV_LOGIN) {
        complete_login(srv, st, code, text);
        clear_credentials(srv);
        reset_command(srv, true);
        return;
    }
    if (text == NULL || *text == '\0')
        text = default_text(srv, st, def, sizeof(def));
    if (c->id == IMAP_CMD_IDLE && st == IMAP_OK) {
        /* RFC 2177 3: "+" and IDLE runs; what was held goes now. */
        buf_adds(&srv->out, "+ idling\r\n");
        srv->idling = true;
        imap_resp_flush_held(srv);
        srv->idle_tag = xstrdup(c->tag);
        reset_command(srv, false);
        srv->mode = M_IDLE;
        return;
    }
    switch (c->id) {
    case IMAP_CMD_SELECT:
    case IMAP_CMD_EXAMINE:
        /* RFC 3501 6.3.1: a failed SELECT leaves none selected. */
        srv->st = st == IMAP_OK ? S_SELECTED : S_AUTH;
        srv->read_only = c->id == IMAP_CMD_EXAMINE ||
                         (code && strncasecmp(code, "READ-ONLY", 9) == 0);
        if (st == IMAP_OK && code == NULL)
            code = c->id == IMAP_CMD_EXAMINE ? "READ-ONLY" : "READ-WRITE";
        break;
    case IMAP_CMD_CLOSE:
    case IMAP_CMD_UNSELECT: /* RFC 3691 2: CLOSE without the expunge */
        if (st == IMAP_OK)
            srv->st = S_AUTH;
        break;
    default:
        break;
    }
    imap_resp_tagged(srv, c->tag, st, code, text);
    if (st == IMAP_BAD)
        imap_server_count_error(srv);
    reset_command(srv, false);
}

const char *
imap_server_output(const imap_server_t *srv, size_t *len)
{
    *len = srv->out.len - srv->out_off;
    return *len ? srv->out.data + srv->out_off : "";
}

void
imap_server_output_done(imap_server_t *srv, size_t n)
{
    if (n > srv->out.len - srv->out_off)
        n = srv->out.len - srv->out_off;
    srv->out_off += n;
    if (srv->out_off == srv->out.len) {
        if (srv->in_fetch && srv->fb == &srv->out)
            srv->fetch_start = 0;
        srv->out_off = 0;
        /* After a large answer, give its memory back. */
        if (srv->out.cap > 4 * IMAP_OUTPUT_MAX)
            buf_free(&srv->out);
        else
            buf_reset(&srv->out);
    } else if (srv->out_off > srv->out.len / 2 &&
               srv->out_off > IMAP_OUTPUT_MAX) {
        /* Moved once it is mostly sent: linear over the whole answer. */
        buf_consume(&srv->out, srv->out_off);
        if (srv->in_fetch && srv->fb == &srv->out)
            srv->fetch_start = srv->fetch_start > srv->out_off
                                   ? srv->fetch_start - srv->out_off
                                   : 0;
        srv->out_off = 0;
    }
}

void
imap_server_tls_started(imap_server_t *srv)
{
    /* A session closed during the handshake stays closed. */
    if (srv->st == S_DONE)
        return;
    if (srv->st != S_TLS)
        panic("imap_server_tls_started() without STARTTLS");
    srv->tls = true;
    srv->in_off = srv->in_len = 0;
    srv->rd = RD_LINE;
    srv->st = S_NOTAUTH;
}

void
imap_server_close(imap_server_t *srv, const char *text)
{
    if (srv->st == S_DONE)
        return;
    reset_command(srv, true);
    imap_server_shut(srv, NULL, text && *text ? text : "Server shutting down");
}

enum imap_state
imap_server_state(const imap_server_t *srv)
{
    switch (srv->st) {
    case S_AUTH:
        return IMAP_STATE_AUTH;
    case S_SELECTED:
        return IMAP_STATE_SELECTED;
    case S_DONE:
        return IMAP_STATE_LOGOUT;
    default:
        return IMAP_STATE_NOT_AUTH;
    }
}

bool
imap_server_read_only(const imap_server_t *srv)
{
    return srv->st == S_SELECTED && srv->read_only;
}

bool
imap_server_tls(const imap_server_t *srv)
{
    return srv->tls;
}

bool
imap_server_idling(const imap_server_t *srv)
{
    return srv->idling;
}

bool
imap_server_expunge_ok(const imap_server_t *srv)
{
    if (srv->st == S_DONE || srv->st == S_TLS || srv->st == S_CONNECT)
        return false;
    if (srv->idling)
        return true;
    return srv->pending == IMAP_EV_COMMAND && srv->held.len == 0 &&
           !imap_server_no_expunge(srv->cur);
}

bool
imap_server_done(const imap_server_t *srv)
{
    return srv->st == S_DONE;
}
