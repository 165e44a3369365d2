/*
 * imap_mime.c - a message's MIME tree for IMAP FETCH: ENVELOPE, BODY,
 * BODYSTRUCTURE and BODY[section] (RFC 3501 6.4.5, 7.4.2).
 *
 * The message is read once into a tree of entities, each a header and a
 * body pointing into the message: multipart bodies split at their
 * boundaries (RFC 2046 5.1.1), message/rfc822 bodies read as messages.
 * Header fields are looked up when the tree is formatted, so parsing costs
 * one pass over the boundaries and nothing per header field. Every loop
 * advances through the message; recursion is bounded by
 * IMAP_MIME_DEPTH_MAX and the tree by IMAP_MIME_PARTS_MAX.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/buf.h"
#include "lib/imap_mime.h"
#include "lib/imap_server.h"
#include "lib/xalloc.h"

/* A parameter of Content-Type or Content-Disposition. */
struct param {
    char *name, *value;
};

struct ent {
    const char *hdr; /* the header with its blank line */
    size_t hdr_len;
    const char *body;
    size_t body_len;
    char *type, *subtype; /* upper case */
    struct param *params;
    size_t nparams;
    bool multipart, message; /* message: message/rfc822 */
    bool defaulted;          /* no usable Content-Type */
    struct ent **kids;       /* multipart: its parts */
    size_t nkids;
    struct ent *sub; /* message/rfc822: the message inside */
};

struct imap_mime {
    const char *msg;
    size_t len;
    int nparts;
    struct ent *top;
};

/* A buffer's text as a C string, "" when it never held any. */
static const char *
cstr(const buf_t *b)
{
    return b->data ? b->data : "";
}

/* Header fields. */

struct field {
    const char *name;
    size_t name_len;
    const char *raw; /* the whole field with its line ends */
    size_t raw_len;
    const char *val; /* after the colon, folded as sent */
    size_t val_len;
};

/* The next field of the header at *p (before end); false at its end.
 * Lines that are no field (no colon) are skipped. */
static bool
next_field(const char **p, const char *end, struct field *f)
{
    while (*p < end) {
        const char *s = *p, *e = s, *colon;

        /* A field runs to a line end not followed by a space or tab. */
        for (;;) {
            const char *nl = memchr(e, '\n', (size_t)(end - e));

            if (nl == NULL) {
                e = end;
                break;
            }
            e = nl + 1;
            if (e >= end || (*e != ' ' && *e != '\t'))
                break;
        }
        *p = e;
        if (s[0] == '\r' || s[0] == '\n')
            return false; /* the blank line */
        colon = memchr(s, ':', (size_t)(e - s));
        if (colon == NULL || colon == s)
            continue;
        f->name = s;
        f->name_len = (size_t)(colon - s);
        while (f->name_len > 0 &&
               (s[f->name_len - 1] == ' ' || s[f->name_len - 1] == '\t'))
            f->name_len--;
        f->raw = s;
        f->raw_len = (size_t)(e - s);
        f->val = colon + 1;
        f->val_len = (size_t)(e - colon - 1);
        return true;
    }
    return false;
}

/* The first field called name, unfolded and trimmed, into out (reset
 * first); false when the header has none. */
static bool
header_get(const struct ent *e, const char *name, buf_t *out)
{
    const char *p = e->hdr, *end = e->hdr + e->hdr_len;
    size_t n = strlen(name);
    struct field f;

    buf_reset(out);
    while (next_field(&p, end, &f)) {
        if (f.name_len != n || strncasecmp(f.name, name, n) != 0)
            continue;
        for (size_t i = 0; i < f.val_len; i++)
            if (f.val[i] != '\r' && f.val[i] != '\n')
                buf_addc(out, f.val[i]);
        while (out->len > 0 && (out->data[out->len - 1] == ' ' ||
                                out->data[out->len - 1] == '\t'))
            out->len--;
        {
            size_t lead = 0;

            while (lead < out->len &&
                   (out->data[lead] == ' ' || out->data[lead] == '\t'))
                lead++;
            buf_consume(out, lead);
        }
        buf_addc(out, '\0'); /* terminated after the trim, even if empty */
        out->len--;
        return true;
    }
    return false;
}

/* RFC 2045 5.1 tokens, quoted strings and comments. */

static bool
is_tspecial(int c)
{
    return c <= ' ' || c >= 127 || strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

static void
skip_cfws(const char **p, const char *end)
{
    int depth = 0;

    while (*p < end) {
        char c = **p;

        if (depth > 0) {
            if (c == '\\' && *p + 1 < end)
                (*p)++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
        } else if (c == '(') {
            depth = 1;
        } else if (c != ' ' && c != '\t') {
            return;
        }
        (*p)++;
    }
}

/* A token, or with quoted_ok a quoted string, into a new string. */
static char *
mime_word(const char **p, const char *end, bool quoted_ok)
{
    const char *s;
    buf_t b = BUF_INIT;

    skip_cfws(p, end);
    if (*p < end && **p == '"' && quoted_ok) {
        for ((*p)++; *p < end && **p != '"'; (*p)++) {
            if (**p == '\\' && *p + 1 < end)
                (*p)++;
            buf_addc(&b, **p);
        }
        if (*p < end)
            (*p)++;
        /* buf_take() of a buffer never written leaves it unterminated:
         * an empty add terminates it. */
        buf_add(&b, "", 0);
        return buf_take(&b);
    }
    s = *p;
    while (*p < end && !is_tspecial((unsigned char)**p))
        (*p)++;
    if (*p == s)
        return NULL;
    return xstrndup(s, (size_t)(*p - s));
}

static void
upcase(char *s)
{
    for (; *s; s++)
        *s = (char)toupper((unsigned char)*s);
}

/* ";" attribute "=" value, repeated, into params. Stops at anything it
 * cannot read. */
static void
parse_params(const char *p, const char *end, struct param **params, size_t *n)
{
    size_t cap = 0;

    for (;;) {
        char *name, *value;

        skip_cfws(&p, end);
        if (p >= end || *p != ';')
            return;
        p++;
        name = mime_word(&p, end, false);
        if (name == NULL)
            return;
        skip_cfws(&p, end);
        if (p >= end || *p != '=') {
            free(name);
            return;
        }
        p++;
        value = mime_word(&p, end, true);
        if (value == NULL) {
            free(name);
            return;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 4;
            *params = xrealloc(*params, cap * sizeof(**params));
        }
        (*params)[*n].name = name;
        (*params)[*n].value = value;
        (*n)++;
    }
}

static const char *
param_get(const struct ent *e, const char *name)
{
    for (size_t i = 0; i < e->nparams; i++)
        if (strcasecmp(e->params[i].name, name) == 0)
            return e->params[i].value;
    return NULL;
}

static void
set_type(struct ent *e, const char *type, const char *subtype)
{
    free(e->type);
    free(e->subtype);
    e->type = xstrdup(type);
    e->subtype = xstrdup(subtype);
}

/* Content-Type (RFC 2045 5), with the defaults of 5.2 and RFC 2046
 * 5.1.5 (message/rfc822 inside multipart/digest). */
static void
parse_content_type(struct ent *e, bool digest, buf_t *tmp)
{
    const char *p, *end;
    char *type = NULL, *subtype = NULL;

    if (header_get(e, "Content-Type", tmp)) {
        p = tmp->data;
        end = p + tmp->len;
        type = mime_word(&p, end, false);
        skip_cfws(&p, end);
        if (type && p < end && *p == '/') {
            p++;
            subtype = mime_word(&p, end, false);
        }
        if (type && subtype) {
            upcase(type);
            upcase(subtype);
            e->type = type;
            e->subtype = subtype;
            parse_params(p, end, &e->params, &e->nparams);
            e->multipart = strcmp(type, "MULTIPART") == 0;
            e->message =
                strcmp(type, "MESSAGE") == 0 && strcmp(subtype, "RFC822") == 0;
            return;
        }
        free(type);
        free(subtype);
    }
    e->defaulted = true;
    if (digest) {
        set_type(e, "MESSAGE", "RFC822");
        e->message = true;
    } else {
        set_type(e, "TEXT", "PLAIN");
    }
}

/* The tree. */

static struct ent *ent_parse(struct imap_mime *m, const char *p, size_t len,
                             int depth, bool digest);

/* Makes e an opaque leaf: past the limits, or a multipart that cannot be
 * split. */
static void
make_opaque(struct ent *e)
{
    set_type(e, "APPLICATION", "OCTET-STREAM");
    for (size_t i = 0; i < e->nparams; i++) {
        free(e->params[i].name);
        free(e->params[i].value);
    }
    free(e->params);
    e->params = NULL;
    e->nparams = 0;
    e->multipart = e->message = false;
}

static void
add_kid(struct ent *e, struct ent *kid, size_t *cap)
{
    if (e->nkids == *cap) {
        *cap = *cap ? 2 * *cap : 4;
        e->kids = xrealloc(e->kids, *cap * sizeof(*e->kids));
    }
    e->kids[e->nkids++] = kid;
}

/*
 * Whether the line at q (before end) is a delimiter "--boundary" or, with
 * *close set, a close delimiter "--boundary--", with only white space
 * after it (RFC 2046 5.1.1).
 */
static bool
delimiter(const char *q, const char *end, const char *b, size_t blen,
          bool *close)
{
    const char *r;

    if ((size_t)(end - q) < blen + 2 || q[0] != '-' || q[1] != '-' ||
        memcmp(q + 2, b, blen) != 0)
        return false;
    r = q + 2 + blen;
    *close = end - r >= 2 && r[0] == '-' && r[1] == '-';
    if (*close)
        r += 2;
    while (r < end && (*r == ' ' || *r == '\t' || *r == '\r'))
        r++;
    return r == end || *r == '\n';
}

static void
split_multipart(struct imap_mime *m, struct ent *e, int depth)
{
    const char *b = param_get(e, "boundary");
    const char *q = e->body, *end = e->body + e->body_len, *part = NULL;
    size_t blen, cap = 0;
    bool digest = strcmp(e->subtype, "DIGEST") == 0, close = false;

    if (b == NULL || (blen = strlen(b)) == 0 || blen > 200) {
        make_opaque(e);
        return;
    }
    while (q < end && !close) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        const char *next = nl ? nl + 1 : end;

        if (delimiter(q, end, b, blen, &close)) {
            if (part && m->nparts >= IMAP_MIME_PARTS_MAX) {
                /* Too many parts: the rest is one last, opaque part. */
                add_kid(
                    e,
                    ent_parse(m, part, (size_t)(end - part), depth + 1, false),
                    &cap);
                return;
            }
            if (part) {
                /* The line end before a delimiter belongs to it. */
                const char *pe = q;

                if (pe > part && pe[-1] == '\n')
                    pe--;
                if (pe > part && pe[-1] == '\r')
                    pe--;
                add_kid(
                    e,
                    ent_parse(m, part, (size_t)(pe - part), depth + 1, digest),
                    &cap);
            }
            part = next;
        }
        q = next;
    }
    if (part && !close)
        /* No close delimiter: the last part runs to the end. */
        add_kid(e, ent_parse(m, part, (size_t)(end - part), depth + 1, digest),
                &cap);
    if (e->nkids == 0)
        /* RFC 3501's grammar wants a part: an empty one stands in. */
        add_kid(e, ent_parse(m, end, 0, depth + 1, false), &cap);
}

static struct ent *
ent_parse(struct imap_mime *m, const char *p, size_t len, int depth,
          bool digest)
{
    struct ent *e = xcalloc(1, sizeof(*e));
    const char *end = p + len, *q;
    buf_t tmp = BUF_INIT;

    m->nparts++;
    /* The header ends at the first empty line. */
    e->hdr = p;
    if (len > 0 && (p[0] == '\n' || (len > 1 && p[0] == '\r' && p[1] == '\n')))
        e->hdr_len = p[0] == '\n' ? 1 : 2;
    else
        for (q = p; q < end;) {
            const char *nl = memchr(q, '\n', (size_t)(end - q));

            if (nl == NULL) {
                e->hdr_len = len;
                break;
            }
            q = nl + 1;
            if (q < end && *q == '\n') {
                e->hdr_len = (size_t)(q + 1 - p);
                break;
            }
            if (end - q >= 2 && q[0] == '\r' && q[1] == '\n') {
                e->hdr_len = (size_t)(q + 2 - p);
                break;
            }
            if (q == end)
                e->hdr_len = len;
        }
    e->body = p + e->hdr_len;
    e->body_len = len - e->hdr_len;
    parse_content_type(e, digest, &tmp);
    buf_free(&tmp);
    if ((e->multipart || e->message) &&
        (depth >= IMAP_MIME_DEPTH_MAX || m->nparts >= IMAP_MIME_PARTS_MAX)) {
        make_opaque(e);
        return e;
    }
    if (e->multipart)
        split_multipart(m, e, depth);
    else if (e->message)
        e->sub = ent_parse(m, e->body, e->body_len, depth + 1, false);
    return e;
}

static void
ent_free(struct ent *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->nkids; i++)
        ent_free(e->kids[i]);
    ent_free(e->sub);
    for (size_t i = 0; i < e->nparams; i++) {
        free(e->params[i].name);
        free(e->params[i].value);
    }
    free(e->params);
    free(e->kids);
    free(e->type);
    free(e->subtype);
    free(e);
}

imap_mime_t *
imap_mime_parse(const char *msg, size_t len)
{
    imap_mime_t *m = xcalloc(1, sizeof(*m));

    m->msg = msg;
    m->len = len;
    m->top = ent_parse(m, msg, len, 0, false);
    return m;
}

void
imap_mime_destroy(imap_mime_t **m_p)
{
    imap_mime_t *m = *m_p;

    if (m == NULL)
        return;
    ent_free(m->top);
    free(m);
    *m_p = NULL;
}

size_t
imap_mime_size(const imap_mime_t *m)
{
    return m->len;
}

size_t
imap_mime_header_size(const imap_mime_t *m)
{
    return m->top->hdr_len;
}

/* ENVELOPE (RFC 3501 7.4.2). */

/* A field's value as an nstring: NIL when absent. */
static void
put_field(const struct ent *e, const char *name, buf_t *b, buf_t *tmp)
{
    if (header_get(e, name, tmp))
        imap_server_put_string(b, tmp->data, tmp->len);
    else
        buf_adds(b, "NIL");
}

/* An address list's tokens (RFC 5322 3.4): words (atoms, with dots, and
 * quoted strings, domain literals) and specials. */
enum tok { T_END, T_WORD, T_SPECIAL };

struct lexer {
    const char *p, *end;
    buf_t word;
    char special;
};

static enum tok
lex(struct lexer *l)
{
    skip_cfws(&l->p, l->end);
    buf_reset(&l->word);
    if (l->p >= l->end)
        return T_END;
    if (*l->p == '"') {
        for (l->p++; l->p < l->end && *l->p != '"'; l->p++) {
            if (*l->p == '\\' && l->p + 1 < l->end)
                l->p++;
            buf_addc(&l->word, *l->p);
        }
        if (l->p < l->end)
            l->p++;
        return T_WORD;
    }
    if (*l->p == '[') {
        const char *s = l->p;

        while (l->p < l->end && *l->p != ']')
            l->p++;
        if (l->p < l->end)
            l->p++;
        buf_add(&l->word, s, (size_t)(l->p - s));
        return T_WORD;
    }
    if (strchr("()<>:;@,\\", *l->p)) {
        l->special = *l->p++;
        return T_SPECIAL;
    }
    {
        const char *s = l->p;

        while (l->p < l->end && !strchr("()<>:;@,\\\"[ \t", *l->p))
            l->p++;
        buf_add(&l->word, s, (size_t)(l->p - s));
    }
    return T_WORD;
}

static void
put_addr(buf_t *b, const char *name, const char *adl, const char *mailbox,
         const char *host)
{
    buf_addc(b, '(');
    imap_server_put_nstring(b, name && *name ? name : NULL);
    buf_addc(b, ' ');
    imap_server_put_nstring(b, adl && *adl ? adl : NULL);
    buf_addc(b, ' ');
    imap_server_put_nstring(b, mailbox);
    buf_addc(b, ' ');
    imap_server_put_nstring(b, host);
    buf_addc(b, ')');
}

/*
 * Writes the addresses of s as "((name adl mailbox host) ...)" into b, or
 * NIL when there are none; groups as RFC 3501 7.4.2 marks them. Lenient:
 * what is not an address is skipped, a mailbox without a domain gets an
 * empty host (NIL would read as a group).
 */
static void
put_addresses(buf_t *b, const char *s, size_t n)
{
    struct lexer l = {.p = s, .end = s + n};
    buf_t phrase = BUF_INIT, local = BUF_INIT, adl = BUF_INIT;
    size_t start = b->len;
    bool any = false, in_group = false;
    enum tok t;

    buf_addc(b, '(');
    for (;;) {
        t = lex(&l);
        if (t == T_WORD) {
            if (phrase.len)
                buf_addc(&phrase, ' ');
            buf_add(&phrase, l.word.data, l.word.len);
            buf_add(&local, l.word.data, l.word.len);
            continue;
        }
        if (t == T_SPECIAL && l.special == ':' && !in_group) {
            put_addr(b, NULL, NULL, cstr(&phrase), NULL);
            any = in_group = true;
            buf_reset(&phrase);
            buf_reset(&local);
            continue;
        } else if (t == T_SPECIAL && l.special == '<') {
            /* angle-addr: ["@" domain *("," "@" domain) ":"] local "@"
             * domain ">" */
            buf_t host = BUF_INIT;
            bool at = false;
            const char *gt, *colon;

            buf_reset(&local);
            buf_reset(&adl);
            skip_cfws(&l.p, l.end);
            gt = memchr(l.p, '>', (size_t)(l.end - l.p));
            if (l.p < l.end && *l.p == '@' &&
                (colon = memchr(l.p, ':', (size_t)((gt ? gt : l.end) - l.p))) !=
                    NULL) {
                for (const char *c = l.p; c < colon; c++)
                    if (*c != ' ' && *c != '\t' && *c != '\r' && *c != '\n')
                        buf_addc(&adl, *c);
                l.p = colon + 1;
            }
            while ((t = lex(&l)) != T_END &&
                   !(t == T_SPECIAL && l.special == '>')) {
                if (t == T_SPECIAL && l.special == '@')
                    at = true;
                else if (t == T_WORD)
                    buf_add(at ? &host : &local, l.word.data, l.word.len);
            }
            if (local.len || host.len) {
                put_addr(b, phrase.len ? phrase.data : NULL, cstr(&adl),
                         cstr(&local), cstr(&host));
                any = true;
            }
            buf_free(&host);
            buf_reset(&phrase);
            buf_reset(&local);
            if (t == T_END)
                break;
            continue;
        } else if (t == T_SPECIAL && l.special == '@') {
            /* addr-spec: what came before is the local part. */
            t = lex(&l);
            put_addr(b, NULL, NULL, cstr(&local),
                     t == T_WORD ? cstr(&l.word) : "");
            any = true;
            buf_reset(&phrase);
            buf_reset(&local);
            if (t == T_END)
                break;
            if (t == T_WORD)
                continue;
        }
        /* "," ";" the end, or a stray special: what is pending ends. */
        if (local.len) {
            put_addr(b, NULL, NULL, cstr(&local), "");
            any = true;
        }
        buf_reset(&phrase);
        buf_reset(&local);
        if (t == T_SPECIAL && l.special == ';' && in_group) {
            put_addr(b, NULL, NULL, NULL, NULL);
            in_group = false;
        }
        if (t == T_END)
            break;
    }
    if (in_group)
        put_addr(b, NULL, NULL, NULL, NULL);
    buf_addc(b, ')');
    if (!any) {
        b->len = start;
        buf_adds(b, "NIL");
    }
    buf_free(&phrase);
    buf_free(&local);
    buf_free(&adl);
    buf_free(&l.word);
}

static void
put_address_field(const struct ent *e, const char *name, const char *fallback,
                  buf_t *b, buf_t *tmp)
{
    if ((!header_get(e, name, tmp) || tmp->len == 0) &&
        (fallback == NULL || !header_get(e, fallback, tmp)))
        buf_adds(b, "NIL");
    else
        put_addresses(b, tmp->data, tmp->len);
}

static void
envelope(const struct ent *e, buf_t *b)
{
    buf_t tmp = BUF_INIT;

    buf_addc(b, '(');
    put_field(e, "Date", b, &tmp);
    buf_addc(b, ' ');
    put_field(e, "Subject", b, &tmp);
    buf_addc(b, ' ');
    put_address_field(e, "From", NULL, b, &tmp);
    buf_addc(b, ' ');
    /* RFC 3501 7.4.2: an absent or empty Sender or Reply-To is From. */
    put_address_field(e, "Sender", "From", b, &tmp);
    buf_addc(b, ' ');
    put_address_field(e, "Reply-To", "From", b, &tmp);
    buf_addc(b, ' ');
    put_address_field(e, "To", NULL, b, &tmp);
    buf_addc(b, ' ');
    put_address_field(e, "Cc", NULL, b, &tmp);
    buf_addc(b, ' ');
    put_address_field(e, "Bcc", NULL, b, &tmp);
    buf_addc(b, ' ');
    put_field(e, "In-Reply-To", b, &tmp);
    buf_addc(b, ' ');
    put_field(e, "Message-ID", b, &tmp);
    buf_addc(b, ')');
    buf_free(&tmp);
}

void
imap_mime_envelope(const imap_mime_t *m, buf_t *b)
{
    envelope(m->top, b);
}

/* BODYSTRUCTURE (RFC 3501 7.4.2). */

static void
put_params(buf_t *b, const struct param *p, size_t n)
{
    if (n == 0) {
        buf_adds(b, "NIL");
        return;
    }
    buf_addc(b, '(');
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_addc(b, ' ');
        imap_server_put_string(b, p[i].name, strlen(p[i].name));
        buf_addc(b, ' ');
        imap_server_put_string(b, p[i].value, strlen(p[i].value));
    }
    buf_addc(b, ')');
}

static size_t
count_lines(const char *s, size_t n)
{
    size_t lines = 0;
    const char *end = s + n, *nl;

    while (s < end && (nl = memchr(s, '\n', (size_t)(end - s))) != NULL) {
        lines++;
        s = nl + 1;
    }
    return lines + (s < end ? 1 : 0);
}

/* body-fld-dsp, body-fld-lang and body-fld-loc. */
static void
put_ext_common(const struct ent *e, buf_t *b, buf_t *tmp)
{
    buf_addc(b, ' ');
    if (header_get(e, "Content-Disposition", tmp)) {
        const char *p = tmp->data, *end = p + tmp->len;
        char *d = mime_word(&p, end, false);
        struct param *params = NULL;
        size_t n = 0;

        if (d) {
            buf_addc(b, '(');
            imap_server_put_string(b, d, strlen(d));
            buf_addc(b, ' ');
            parse_params(p, end, &params, &n);
            put_params(b, params, n);
            buf_addc(b, ')');
            for (size_t i = 0; i < n; i++) {
                free(params[i].name);
                free(params[i].value);
            }
            free(params);
            free(d);
        } else {
            buf_adds(b, "NIL");
        }
    } else {
        buf_adds(b, "NIL");
    }
    buf_addc(b, ' ');
    if (header_get(e, "Content-Language", tmp)) {
        const char *p = tmp->data, *end = p + tmp->len;
        size_t start = b->len, k = 0;
        char *w;

        buf_addc(b, '(');
        while ((w = mime_word(&p, end, false)) != NULL) {
            if (k++)
                buf_addc(b, ' ');
            imap_server_put_string(b, w, strlen(w));
            free(w);
            skip_cfws(&p, end);
            if (p < end && *p == ',')
                p++;
        }
        buf_addc(b, ')');
        if (k == 0) {
            b->len = start;
            buf_adds(b, "NIL");
        }
    } else {
        buf_adds(b, "NIL");
    }
    buf_addc(b, ' ');
    put_field(e, "Content-Location", b, tmp);
}

static void
body(const struct ent *e, bool ext, buf_t *b)
{
    buf_t tmp = BUF_INIT;

    buf_addc(b, '(');
    if (e->multipart) {
        for (size_t i = 0; i < e->nkids; i++)
            body(e->kids[i], ext, b);
        buf_addc(b, ' ');
        imap_server_put_string(b, e->subtype, strlen(e->subtype));
        if (ext) {
            buf_addc(b, ' ');
            put_params(b, e->params, e->nparams);
            put_ext_common(e, b, &tmp);
        }
        buf_addc(b, ')');
        buf_free(&tmp);
        return;
    }
    imap_server_put_string(b, e->type, strlen(e->type));
    buf_addc(b, ' ');
    imap_server_put_string(b, e->subtype, strlen(e->subtype));
    buf_addc(b, ' ');
    if (e->defaulted && strcmp(e->type, "TEXT") == 0) {
        /* RFC 2045 5.2. */
        static const struct param dflt = {"CHARSET", "US-ASCII"};

        put_params(b, &dflt, 1);
    } else {
        put_params(b, e->params, e->nparams);
    }
    buf_addc(b, ' ');
    put_field(e, "Content-ID", b, &tmp);
    buf_addc(b, ' ');
    put_field(e, "Content-Description", b, &tmp);
    buf_addc(b, ' ');
    if (header_get(e, "Content-Transfer-Encoding", &tmp) && tmp.len > 0) {
        upcase(tmp.data);
        imap_server_put_string(b, tmp.data, tmp.len);
    } else {
        buf_adds(b, "\"7BIT\"");
    }
    buf_printf(b, " %zu", e->body_len);
    if (e->message && e->sub) {
        buf_addc(b, ' ');
        envelope(e->sub, b);
        buf_addc(b, ' ');
        body(e->sub, ext, b);
        buf_printf(b, " %zu", count_lines(e->body, e->body_len));
    } else if (strcmp(e->type, "TEXT") == 0) {
        buf_printf(b, " %zu", count_lines(e->body, e->body_len));
    }
    if (ext) {
        buf_addc(b, ' ');
        put_field(e, "Content-MD5", b, &tmp);
        put_ext_common(e, b, &tmp);
    }
    buf_addc(b, ')');
    buf_free(&tmp);
}

void
imap_mime_bodystructure(const imap_mime_t *m, bool ext, buf_t *b)
{
    body(m->top, ext, b);
}

/* BODY[section] (RFC 3501 6.4.5). */

static bool
field_listed(const struct field *f, const struct imap_strs *list)
{
    for (size_t i = 0; i < list->n; i++)
        if (strlen(list->v[i]) == f->name_len &&
            strncasecmp(list->v[i], f->name, f->name_len) == 0)
            return true;
    return false;
}

static void
header_fields(const struct ent *e, const struct imap_section *sec, buf_t *out)
{
    const char *p = e->hdr, *end = e->hdr + e->hdr_len;
    bool not = sec->spec == IMAP_SEC_FIELDS_NOT;
    struct field f;

    buf_reset(out);
    while (next_field(&p, end, &f))
        if (field_listed(&f, &sec->fields) != not ) {
            buf_add(out, f.raw, f.raw_len);
            if (f.raw[f.raw_len - 1] != '\n')
                buf_add(out, "\r\n", 2);
        }
    buf_add(out, "\r\n", 2);
}

bool
imap_mime_section(const imap_mime_t *m, const struct imap_section *sec,
                  buf_t *scratch, const char **data, size_t *len)
{
    const struct ent *e = m->top;

    for (int i = 0; i < sec->nparts; i++) {
        uint32_t k = sec->part[i];

        /* Numbers after a message/rfc822 part go into its message. */
        if (i > 0 && e->message && e->sub)
            e = e->sub;
        if (e->multipart) {
            if (k == 0 || k > e->nkids)
                return false;
            e = e->kids[k - 1];
        } else if (k != 1) {
            /* A part that is no multipart has only a part 1: itself. */
            return false;
        }
    }
    if (sec->nparts == 0 && sec->spec == IMAP_SEC_WHOLE) {
        *data = m->msg;
        *len = m->len;
        return true;
    }
    switch (sec->spec) {
    case IMAP_SEC_WHOLE:
        *data = e->body;
        *len = e->body_len;
        return true;
    case IMAP_SEC_MIME:
        *data = e->hdr;
        *len = e->hdr_len;
        return true;
    default:
        break;
    }
    /* HEADER, TEXT and the fields of a message: the top one, or the one a
     * message/rfc822 part holds. */
    if (sec->nparts > 0) {
        if (!e->message || e->sub == NULL)
            return false;
        e = e->sub;
    }
    switch (sec->spec) {
    case IMAP_SEC_HEADER:
        *data = e->hdr;
        *len = e->hdr_len;
        return true;
    case IMAP_SEC_TEXT:
        *data = e->body;
        *len = e->body_len;
        return true;
    default:
        header_fields(e, sec, scratch);
        *data = scratch->data;
        *len = scratch->len;
        return true;
    }
}
