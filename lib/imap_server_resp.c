/*
 * imap_server_resp.c - the IMAP server engine's responses: tagged
 * completions, untagged responses and when they go out, the FETCH builder,
 * and the formatting of IMAP values (RFC 3501 4 and 7).
 *
 * Every response is written whole into the output (or the held queue), so
 * the output is always a run of complete responses, each one line or
 * lines joined by literals. Text from the caller is made safe here:
 * control and 8-bit octets in texts and codes become "?", strings are
 * quoted or sent as literals as they need, flags are checked.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/imap_server_int.h"

#define TEXT_MAX 4096 /* octets of a response text kept */

static void panic(const char *what) __attribute__((noreturn));

static void
panic(const char *what)
{
    fprintf(stderr, "imap_server: PANIC: %s\n", what);
    abort();
}

/* Value formatting. */

static bool
is_atom_char(int c)
{
    return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

void
imap_server_put_string(buf_t *b, const char *s, size_t len)
{
    bool q = len <= 1024;

    for (size_t i = 0; q && i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        /* A quoted string holds TEXT-CHARs only (RFC 3501 9). */
        if (c < 0x20 || c > 0x7e)
            q = false;
    }
    if (!q) {
        buf_printf(b, "{%zu}\r\n", len);
        buf_add(b, s, len);
        return;
    }
    buf_addc(b, '"');
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\')
            buf_addc(b, '\\');
        buf_addc(b, s[i]);
    }
    buf_addc(b, '"');
}

void
imap_server_put_nstring(buf_t *b, const char *s)
{
    if (s == NULL)
        buf_adds(b, "NIL");
    else
        imap_server_put_string(b, s, strlen(s));
}

void
imap_server_put_astring(buf_t *b, const char *s)
{
    size_t n = strlen(s);
    bool atom = n > 0 && strcasecmp(s, "NIL") != 0;

    for (size_t i = 0; atom && i < n; i++)
        if (!is_atom_char((unsigned char)s[i]) && s[i] != ']')
            atom = false;
    if (atom)
        buf_add(b, s, n);
    else
        imap_server_put_string(b, s, n);
}

/* Text for a response: TEXT-CHARs only, at most TEXT_MAX; a "]" too when
 * it is a code. A text ending in "{n}" would read as a literal's
 * announcement (RFC 3501 4.3): its "}" is replaced too. */
static void
put_text(buf_t *b, const char *s, bool code)
{
    size_t n = 0, start = b->len, i;

    for (; *s && n < TEXT_MAX; s++, n++) {
        unsigned char c = (unsigned char)*s;

        if (c < 0x20 || c > 0x7e || (code && c == ']'))
            c = '?';
        buf_addc(b, (char)c);
    }
    if (n < 3 || b->data[b->len - 1] != '}')
        return;
    for (i = b->len - 1;
         i > start && b->data[i - 1] >= '0' && b->data[i - 1] <= '9'; i--)
        ;
    if (i < b->len - 1 && i > start && b->data[i - 1] == '{')
        b->data[b->len - 1] = '?';
}

/* A flag list's inside: the flags of a space-separated string, those that
 * are no flag ("\" atom, "\*" or atom) left out. */
static void
put_flags(buf_t *b, const char *flags)
{
    const char *p = flags ? flags : "";
    bool first = true;

    while (*p) {
        size_t n = strcspn(p, " "), i = 0;
        bool ok = n > 0;

        if (ok && p[0] == '\\') {
            i = 1;
            ok = n > 1;
            if (n == 2 && p[1] == '*')
                i = 2;
        }
        for (; ok && i < n; i++)
            if (!is_atom_char((unsigned char)p[i]))
                ok = false;
        if (ok) {
            if (!first)
                buf_addc(b, ' ');
            buf_add(b, p, n);
            first = false;
        }
        p += n;
        while (*p == ' ')
            p++;
    }
}

static const char *
status_word(enum imap_status st)
{
    switch (st) {
    case IMAP_OK:
        return "OK";
    case IMAP_NO:
        return "NO";
    case IMAP_BAD:
        return "BAD";
    case IMAP_BYE:
        return "BYE";
    case IMAP_PREAUTH:
        return "PREAUTH";
    }
    return "BAD";
}

/* "tag st [code] text" CRLF into b. */
static void
put_status(buf_t *b, const char *tag, enum imap_status st, const char *code,
           const char *text)
{
    buf_printf(b, "%s %s ", tag ? tag : "*", status_word(st));
    if (code && *code) {
        buf_addc(b, '[');
        put_text(b, code, true);
        buf_adds(b, "] ");
    }
    if (text == NULL || *text == '\0')
        text = "Completed";
    /* Without a code, a text opening with "[" would read as one. */
    if (*text == '[' && !(code && *code)) {
        buf_addc(b, '?');
        text++;
    }
    put_text(b, text, false);
    buf_add(b, "\r\n", 2);
}

/* When responses go out (see imap_server.h). */

static bool
in_progress(const imap_server_t *srv)
{
    return srv->pending == IMAP_EV_COMMAND || srv->pending == IMAP_EV_LOGIN;
}

void
imap_resp_flush_held(imap_server_t *srv)
{
    if (srv->held.len == 0)
        return;
    if (srv->held_expunge && !srv->idling &&
        (srv->cur == NULL || imap_server_no_expunge(srv->cur)))
        return;
    buf_add(&srv->out, srv->held.data, srv->held.len);
    buf_reset(&srv->held);
    srv->held_expunge = false;
}

static bool
goes_now(const imap_server_t *srv, bool expunge)
{
    switch (srv->st) {
    case S_DONE:
    case S_CONNECT:
    case S_TLS:
        /* Nothing before the greeting, nothing in clear text after
         * STARTTLS's OK. */
        return false;
    default:
        if (srv->idling)
            return true;
        if (in_progress(srv))
            return !(expunge && imap_server_no_expunge(srv->cur));
        /* No command in progress: RFC 3501 5.3 allows all but EXPUNGE,
         * and what follows a held one waits behind it. */
        return !expunge && srv->held.len == 0;
    }
}

bool
imap_resp_now(const imap_server_t *srv)
{
    return goes_now(srv, false);
}

void
imap_resp_emit(imap_server_t *srv, const char *data, size_t n, bool expunge)
{
    if (srv->st == S_DONE)
        return;
    if (goes_now(srv, expunge)) {
        buf_add(&srv->out, data, n);
        return;
    }
    buf_add(&srv->held, data, n);
    srv->held_expunge |= expunge;
    if (srv->held.len > IMAP_HELD_MAX)
        imap_server_shut(srv, NULL, "Too many mailbox changes held back");
}

void
imap_resp_tagged(imap_server_t *srv, const char *tag, enum imap_status st,
                 const char *code, const char *text)
{
    imap_resp_flush_held(srv);
    put_status(&srv->out, tag, st, code, text);
}

void
imap_resp_status_now(imap_server_t *srv, enum imap_status st, const char *code,
                     const char *text)
{
    put_status(&srv->out, NULL, st, code, text);
}

void
imap_resp_capabilities(const imap_server_t *srv, buf_t *b)
{
    buf_adds(b, "IMAP4rev1 LITERAL+ IDLE UIDPLUS MOVE NAMESPACE ID ENABLE "
                "UNSELECT");
    if (srv->st != S_CONNECT && srv->st != S_NOTAUTH)
        return;
    if (srv->starttls && !srv->tls)
        buf_adds(b, " STARTTLS");
    if (srv->login_needs_tls && !srv->tls)
        buf_adds(b, " LOGINDISABLED");
    else
        buf_adds(b, " AUTH=PLAIN SASL-IR");
}

/* Untagged responses. */

/* Starts "* " in a scratch buffer; the caller emits it. */
static void
check_not_fetch(const imap_server_t *srv)
{
    if (srv->in_fetch)
        panic("untagged response inside a FETCH response");
}

static void
emit_buf(imap_server_t *srv, buf_t *b, bool expunge)
{
    buf_add(b, "\r\n", 2);
    imap_resp_emit(srv, b->data, b->len, expunge);
    buf_free(b);
}

static void
emit_num(imap_server_t *srv, uint32_t n, const char *what)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    buf_printf(&b, "* %" PRIu32 " %s", n, what);
    emit_buf(srv, &b, strcmp(what, "EXPUNGE") == 0);
}

void
imap_server_exists(imap_server_t *srv, uint32_t n)
{
    emit_num(srv, n, "EXISTS");
}

void
imap_server_recent(imap_server_t *srv, uint32_t n)
{
    emit_num(srv, n, "RECENT");
}

void
imap_server_expunge(imap_server_t *srv, uint32_t seq)
{
    emit_num(srv, seq, "EXPUNGE");
}

void
imap_server_flags(imap_server_t *srv, const char *flags)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    buf_adds(&b, "* FLAGS (");
    put_flags(&b, flags);
    buf_addc(&b, ')');
    emit_buf(srv, &b, false);
}

void
imap_server_untagged_status(imap_server_t *srv, enum imap_status st,
                            const char *code, const char *text)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    if (st == IMAP_PREAUTH)
        panic("untagged PREAUTH");
    put_status(&b, NULL, st, code, text);
    imap_resp_emit(srv, b.data, b.len, false);
    buf_free(&b);
}

void
imap_server_list(imap_server_t *srv, bool lsub, const char *attrs, char delim,
                 const char *name)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    buf_printf(&b, "* %s (", lsub ? "LSUB" : "LIST");
    put_flags(&b, attrs);
    buf_adds(&b, ") ");
    if (delim == '\0')
        buf_adds(&b, "NIL");
    else
        imap_server_put_string(&b, &delim, 1);
    buf_addc(&b, ' ');
    imap_server_put_astring(&b, name ? name : "");
    emit_buf(srv, &b, false);
}

void
imap_server_status(imap_server_t *srv, const char *mailbox, unsigned items,
                   const struct imap_status_values *v)
{
    const struct {
        unsigned bit;
        const char *name;
        uint32_t val;
    } all[] = {
        {IMAP_STATUS_MESSAGES, "MESSAGES", v->messages},
        {IMAP_STATUS_RECENT, "RECENT", v->recent},
        {IMAP_STATUS_UIDNEXT, "UIDNEXT", v->uidnext},
        {IMAP_STATUS_UIDVALIDITY, "UIDVALIDITY", v->uidvalidity},
        {IMAP_STATUS_UNSEEN, "UNSEEN", v->unseen},
    };
    buf_t b = BUF_INIT;
    bool first = true;

    check_not_fetch(srv);
    buf_adds(&b, "* STATUS ");
    imap_server_put_astring(&b, mailbox ? mailbox : "");
    buf_adds(&b, " (");
    for (size_t i = 0; i < sizeof(all) / sizeof(*all); i++)
        if (items & all[i].bit) {
            buf_printf(&b, "%s%s %" PRIu32, first ? "" : " ", all[i].name,
                       all[i].val);
            first = false;
        }
    buf_addc(&b, ')');
    emit_buf(srv, &b, false);
}

void
imap_server_search(imap_server_t *srv, const uint32_t *nums, size_t n)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    buf_adds(&b, "* SEARCH");
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, " %" PRIu32, nums[i]);
    emit_buf(srv, &b, false);
}

void
imap_server_capability(imap_server_t *srv)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    buf_adds(&b, "* CAPABILITY ");
    imap_resp_capabilities(srv, &b);
    emit_buf(srv, &b, false);
}

void
imap_server_namespace(imap_server_t *srv, const char *prefix, char delim)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    buf_adds(&b, "* NAMESPACE ((");
    imap_server_put_string(&b, prefix ? prefix : "",
                           prefix ? strlen(prefix) : 0);
    buf_addc(&b, ' ');
    if (delim == '\0')
        buf_adds(&b, "NIL");
    else
        imap_server_put_string(&b, &delim, 1);
    buf_adds(&b, ")) NIL NIL");
    emit_buf(srv, &b, false);
}

void
imap_server_id(imap_server_t *srv, const char *const *params, size_t n)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    buf_adds(&b, "* ID ");
    if (n < 2) {
        buf_adds(&b, "NIL");
    } else {
        buf_addc(&b, '(');
        for (size_t i = 0; i + 1 < n; i += 2) {
            if (i)
                buf_addc(&b, ' ');
            imap_server_put_string(&b, params[i] ? params[i] : "",
                                   params[i] ? strlen(params[i]) : 0);
            buf_addc(&b, ' ');
            imap_server_put_nstring(&b, params[i + 1]);
        }
        buf_addc(&b, ')');
    }
    emit_buf(srv, &b, false);
}

void
imap_server_enabled(imap_server_t *srv, const char *const *caps, size_t n)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    buf_adds(&b, "* ENABLED");
    for (size_t i = 0; i < n; i++) {
        bool ok = caps[i] && *caps[i];

        for (const char *c = caps[i]; ok && *c; c++)
            ok = is_atom_char((unsigned char)*c);
        if (ok)
            buf_printf(&b, " %s", caps[i]);
    }
    emit_buf(srv, &b, false);
}

void
imap_server_untagged(imap_server_t *srv, const char *text)
{
    buf_t b = BUF_INIT;

    check_not_fetch(srv);
    buf_adds(&b, "* ");
    put_text(&b, text && *text ? text : "OK", false);
    emit_buf(srv, &b, false);
}

/* FETCH responses (RFC 3501 7.4.2). */

static void
fetch_item_start(imap_server_t *srv, const char *name)
{
    if (!srv->in_fetch)
        panic("FETCH item outside imap_server_fetch_begin()");
    if (!srv->fetch_first)
        buf_addc(srv->fb, ' ');
    srv->fetch_first = false;
    buf_adds(srv->fb, name);
}

void
imap_server_fetch_begin(imap_server_t *srv, uint32_t seq)
{
    check_not_fetch(srv);
    /* A response that goes out at once is built in place: a large body
     * is copied once. */
    srv->fb = imap_resp_now(srv) ? &srv->out : &srv->fetch;
    if (srv->fb == &srv->fetch)
        buf_reset(&srv->fetch);
    srv->fetch_start = srv->fb->len;
    buf_printf(srv->fb, "* %" PRIu32 " FETCH (", seq);
    srv->in_fetch = true;
    srv->fetch_first = true;
}

void
imap_server_fetch_uid(imap_server_t *srv, uint32_t uid)
{
    fetch_item_start(srv, "UID");
    buf_printf(srv->fb, " %" PRIu32, uid);
}

void
imap_server_fetch_flags(imap_server_t *srv, const char *flags)
{
    fetch_item_start(srv, "FLAGS (");
    put_flags(srv->fb, flags);
    buf_addc(srv->fb, ')');
}

void
imap_server_fetch_internaldate(imap_server_t *srv, time_t t, int zone)
{
    static const char *const mon[12] = {"Jan", "Feb", "Mar", "Apr",
                                        "May", "Jun", "Jul", "Aug",
                                        "Sep", "Oct", "Nov", "Dec"};
    time_t local;
    struct tm tm;
    int z;

    if (zone < -1439 || zone > 1439)
        zone = 0;
    local = t + (time_t)zone * 60;
    if (gmtime_r(&local, &tm) == NULL || tm.tm_year + 1900 > 9999 ||
        tm.tm_year + 1900 < 0) {
        local = 0;
        zone = 0;
        gmtime_r(&local, &tm);
    }
    z = zone < 0 ? -zone : zone;
    fetch_item_start(srv, "INTERNALDATE");
    buf_printf(srv->fb, " \"%02d-%s-%04d %02d:%02d:%02d %c%02d%02d\"",
               tm.tm_mday, mon[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
               tm.tm_min, tm.tm_sec, zone < 0 ? '-' : '+', z / 60, z % 60);
}

void
imap_server_fetch_size(imap_server_t *srv, uint64_t size)
{
    fetch_item_start(srv, "RFC822.SIZE");
    buf_printf(srv->fb, " %" PRIu64, size);
}

void
imap_server_fetch_item(imap_server_t *srv, const char *name, const char *value,
                       size_t len)
{
    buf_t n = BUF_INIT;

    /* The name is an atom, possibly with a section: keep it one. */
    for (const char *c = name ? name : ""; *c; c++)
        buf_addc(&n, *c > 0x20 && *c < 0x7f ? *c : '?');
    fetch_item_start(srv, n.len ? n.data : "X");
    buf_free(&n);
    buf_addc(srv->fb, ' ');
    if (len == 0)
        buf_adds(srv->fb, "NIL");
    else
        buf_add(srv->fb, value, len);
}

static void
section_name(buf_t *b, const struct imap_fetch_att *att)
{
    static const char *const spec[] = {
        [IMAP_SEC_WHOLE] = "",
        [IMAP_SEC_HEADER] = "HEADER",
        [IMAP_SEC_FIELDS] = "HEADER.FIELDS",
        [IMAP_SEC_FIELDS_NOT] = "HEADER.FIELDS.NOT",
        [IMAP_SEC_TEXT] = "TEXT",
        [IMAP_SEC_MIME] = "MIME",
    };
    const struct imap_section *s = &att->sec;

    switch (att->item) {
    case IMAP_FETCH_RFC822:
        buf_adds(b, "RFC822");
        return;
    case IMAP_FETCH_RFC822_HEADER:
        buf_adds(b, "RFC822.HEADER");
        return;
    case IMAP_FETCH_RFC822_TEXT:
        buf_adds(b, "RFC822.TEXT");
        return;
    case IMAP_FETCH_SECTION:
        break;
    default:
        panic("imap_server_fetch_section() for an item with no data");
    }
    buf_adds(b, "BODY[");
    for (int i = 0; i < s->nparts && i < IMAP_SECTION_MAX; i++)
        buf_printf(b, "%s%" PRIu32, i ? "." : "", s->part[i]);
    if (s->spec != IMAP_SEC_WHOLE && s->spec <= IMAP_SEC_MIME) {
        if (s->nparts > 0)
            buf_addc(b, '.');
        buf_adds(b, spec[s->spec]);
    }
    if (s->spec == IMAP_SEC_FIELDS || s->spec == IMAP_SEC_FIELDS_NOT) {
        buf_adds(b, " (");
        for (size_t i = 0; i < s->fields.n; i++) {
            if (i)
                buf_addc(b, ' ');
            imap_server_put_astring(b, s->fields.v[i]);
        }
        buf_addc(b, ')');
    }
    buf_addc(b, ']');
    /* RFC 3501 7.4.2: only the origin octet is given back. */
    if (att->partial)
        buf_printf(b, "<%" PRIu32 ">", att->offset);
}

void
imap_server_fetch_section(imap_server_t *srv, const struct imap_fetch_att *att,
                          const void *data, size_t len)
{
    buf_t name = BUF_INIT;
    const char *d = data;

    section_name(&name, att);
    fetch_item_start(srv, name.data);
    buf_free(&name);
    buf_addc(srv->fb, ' ');
    if (d == NULL) {
        buf_adds(srv->fb, "NIL");
        return;
    }
    if (att->partial) {
        /* RFC 3501 6.4.5: past the end, an empty string. */
        if (att->offset >= len) {
            len = 0;
        } else {
            d += att->offset;
            len -= att->offset;
            if (len > att->count)
                len = att->count;
        }
    }
    if (len == 0) {
        buf_adds(srv->fb, "\"\"");
        return;
    }
    buf_printf(srv->fb, "{%zu}\r\n", len);
    buf_add(srv->fb, d, len);
}

void
imap_server_fetch_end(imap_server_t *srv)
{
    if (!srv->in_fetch)
        panic("imap_server_fetch_end() without _begin()");
    srv->in_fetch = false;
    buf_add(srv->fb, ")\r\n", 3);
    if (srv->fb == &srv->out)
        return;
    imap_resp_emit(srv, srv->fetch.data, srv->fetch.len, false);
    /* A large body must not keep its buffer for the whole session. */
    if (srv->fetch.cap > 65536)
        buf_free(&srv->fetch);
    else
        buf_reset(&srv->fetch);
}
