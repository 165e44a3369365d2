/*
 * imap_parse.c - the IMAP4rev1 command grammar (RFC 3501 9): one whole
 * command in, a struct imap_cmd out. FETCH's attributes and SEARCH's keys
 * are in imap_parse_fetch.c and imap_parse_search.c.
 *
 * A recursive-descent parser over a cursor that never passes the end of
 * the command; the only recursion is SEARCH's, bounded by IMAP_DEPTH_MAX.
 * Everything it hands out lives in its arena: blocks freed together when
 * the next command is parsed, the first kept for reuse. The grammar is
 * followed strictly where clients agree (single spaces, nz-numbers, flag
 * and atom characters) and leniently where they do not: trailing spaces
 * before CRLF, UTF-8 in quoted strings, "ID ()".
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/base64.h"
#include "lib/err.h"
#include "lib/imap_parse.h"
#include "lib/imap_parse_int.h"
#include "lib/xalloc.h"

#define BLOCK_MIN 8192

static const char *const cmd_names[IMAP_CMD__COUNT] = {
    [IMAP_CMD_NONE] = "",
    [IMAP_CMD_CAPABILITY] = "CAPABILITY",
    [IMAP_CMD_NOOP] = "NOOP",
    [IMAP_CMD_LOGOUT] = "LOGOUT",
    [IMAP_CMD_ID] = "ID",
    [IMAP_CMD_STARTTLS] = "STARTTLS",
    [IMAP_CMD_AUTHENTICATE] = "AUTHENTICATE",
    [IMAP_CMD_LOGIN] = "LOGIN",
    [IMAP_CMD_SELECT] = "SELECT",
    [IMAP_CMD_EXAMINE] = "EXAMINE",
    [IMAP_CMD_CREATE] = "CREATE",
    [IMAP_CMD_DELETE] = "DELETE",
    [IMAP_CMD_RENAME] = "RENAME",
    [IMAP_CMD_SUBSCRIBE] = "SUBSCRIBE",
    [IMAP_CMD_UNSUBSCRIBE] = "UNSUBSCRIBE",
    [IMAP_CMD_LIST] = "LIST",
    [IMAP_CMD_LSUB] = "LSUB",
    [IMAP_CMD_STATUS] = "STATUS",
    [IMAP_CMD_APPEND] = "APPEND",
    [IMAP_CMD_IDLE] = "IDLE",
    [IMAP_CMD_NAMESPACE] = "NAMESPACE",
    [IMAP_CMD_ENABLE] = "ENABLE",
    [IMAP_CMD_CHECK] = "CHECK",
    [IMAP_CMD_CLOSE] = "CLOSE",
    [IMAP_CMD_UNSELECT] = "UNSELECT",
    [IMAP_CMD_EXPUNGE] = "EXPUNGE",
    [IMAP_CMD_SEARCH] = "SEARCH",
    [IMAP_CMD_FETCH] = "FETCH",
    [IMAP_CMD_STORE] = "STORE",
    [IMAP_CMD_COPY] = "COPY",
    [IMAP_CMD_MOVE] = "MOVE",
};

/* The arena. */

void *
imap_parse_alloc(imap_parse_t *p, size_t n)
{
    struct block *b = p->blocks;
    size_t align = sizeof(max_align_t);
    void *r;

    n = (n + align - 1) / align * align;
    if (n == 0)
        n = align;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > BLOCK_MIN ? n : BLOCK_MIN;

        /* Each new block at least doubles what came before, so a big
         * command costs a few allocations, not one per string. */
        if (b && cap < 2 * b->cap)
            cap = 2 * b->cap;
        b = xmalloc(sizeof(*b) + cap);
        b->cap = cap;
        b->used = 0;
        b->next = p->blocks;
        p->blocks = b;
    }
    r = (char *)b->data + b->used;
    b->used += n;
    return r;
}

char *
imap_parse_strndup(imap_parse_t *p, const char *s, size_t n)
{
    char *d = imap_parse_alloc(p, n + 1);

    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void
imap_parse_vec_push(imap_parse_t *p, struct vec *v, const void *x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 8;
        const void **nv = imap_parse_alloc(p, cap * sizeof(*nv));

        if (v->n)
            memcpy(nv, v->v, v->n * sizeof(*nv));
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

/* Character classes (RFC 3501 9). */

static bool
is_astring_char(int c)
{
    return is_atom_char(c) || c == ']';
}

static bool
is_list_char(int c)
{
    return is_atom_char(c) || c == '%' || c == '*' || c == ']';
}

static bool
is_tag_char(int c)
{
    return is_astring_char(c) && c != '+';
}

/* The cursor. */

static bool
expect_eol(imap_parse_t *p)
{
    if (at_eol(p)) {
        p->p = p->end;
        return true;
    }
    return fail(p, "Unexpected argument");
}

/* A run of characters of a class; may be empty. */
static size_t
span(imap_parse_t *p, bool (*cls)(int), const char **start)
{
    *start = p->p;
    while (p->p < p->end && cls((unsigned char)*p->p))
        p->p++;
    return (size_t)(p->p - *start);
}

bool
imap_parse_atom(imap_parse_t *p, const char **s, size_t *n)
{
    *n = span(p, is_atom_char, s);
    if (*n == 0)
        return fail(p, at_eol(p) ? "Missing argument" : "Expected an atom");
    return true;
}

/* number (RFC 3501 9): 32-bit unsigned. nz: no leading zero, not 0.
 * Sets no reason: the callers know what the number was for. */
bool
imap_parse_number_raw(imap_parse_t *p, bool nz, uint32_t *out)
{
    uint64_t v = 0;
    const char *s = p->p;

    while (p->p < p->end && isdigit((unsigned char)*p->p)) {
        v = v * 10 + (uint64_t)(*p->p - '0');
        if (v > UINT32_MAX)
            return false;
        p->p++;
    }
    if (p->p == s || (nz && *s == '0'))
        return false;
    *out = (uint32_t)v;
    return true;
}

bool
imap_parse_number(imap_parse_t *p, bool nz, uint32_t *out)
{
    if (imap_parse_number_raw(p, nz, out))
        return true;
    if (at_eol(p))
        return fail(p, "Missing argument");
    return fail(p, isdigit(peek(p)) ? "Invalid number" : "Expected a number");
}

/*
 * A quoted string (RFC 3501 9): only "\" DQUOTE and "\\" escapes. 8-bit
 * octets are taken (clients send UTF-8 this way, e.g. in SEARCH), CR, LF
 * and NUL are not.
 */
static bool
quoted(imap_parse_t *p, char **out, size_t *len)
{
    const char *q;
    char *d;
    size_t n = 0;

    p->p++; /* DQUOTE */
    for (q = p->p; q < p->end && *q != '"'; q++) {
        if (*q == '\\') {
            if (q + 1 >= p->end || (q[1] != '"' && q[1] != '\\'))
                return fail(p, "Invalid escape in a quoted string");
            q++;
        } else if (*q == '\r' || *q == '\n' || *q == '\0') {
            return fail(p, "Unterminated quoted string");
        }
        n++;
    }
    if (q >= p->end)
        return fail(p, "Unterminated quoted string");
    d = imap_parse_alloc(p, n + 1);
    n = 0;
    for (q = p->p; *q != '"'; q++) {
        if (*q == '\\')
            q++;
        d[n++] = *q;
    }
    d[n] = '\0';
    p->p = q + 1;
    *out = d;
    *len = n;
    return true;
}

/*
 * A literal: "{" number ["+"] "}" CRLF and the octets. With raw, the
 * octets are pointed at in place (APPEND's message, which may hold NUL);
 * otherwise copied, and a NUL refused.
 */
static bool
literal(imap_parse_t *p, bool raw, const char **out, size_t *len)
{
    uint32_t n;

    p->p++; /* "{" */
    if (!imap_parse_number_raw(p, false, &n))
        return fail(p, "Invalid literal");
    if (peek(p) == '+')
        p->p++;
    if (p->end - p->p < 3 || memcmp(p->p, "}\r\n", 3) != 0)
        return fail(p, "Invalid literal");
    p->p += 3;
    if ((size_t)(p->end - p->p) < (size_t)n + 2)
        return fail(p, "Literal shorter than announced");
    if (raw) {
        *out = p->p;
    } else {
        if (memchr(p->p, '\0', n) != NULL)
            return fail(p, "NUL in a literal");
        *out = imap_parse_strndup(p, p->p, n);
    }
    *len = n;
    p->p += n;
    return true;
}

/* string = quoted / literal. */
static bool
string(imap_parse_t *p, const char **out, size_t *len)
{
    char *s;

    switch (peek(p)) {
    case '"':
        if (!quoted(p, &s, len))
            return false;
        *out = s;
        return true;
    case '{':
        return literal(p, false, out, len);
    default:
        return fail(p, at_eol(p) ? "Missing argument" : "Expected a string");
    }
}

/* astring = 1*ASTRING-CHAR / string. */
bool
imap_parse_astring(imap_parse_t *p, const char **out)
{
    const char *s;
    size_t n;

    if (peek(p) == '"' || peek(p) == '{')
        return string(p, out, &n);
    n = span(p, is_astring_char, &s);
    if (n == 0)
        return fail(p, at_eol(p) ? "Missing argument" : "Expected a string");
    *out = imap_parse_strndup(p, s, n);
    return true;
}

/* nstring = string / "NIL"; NULL for NIL. */
static bool
nstring(imap_parse_t *p, const char **out)
{
    size_t n;

    if (peek(p) == '"' || peek(p) == '{')
        return string(p, out, &n);
    if (p->end - p->p >= 3 && strncasecmp(p->p, "NIL", 3) == 0 &&
        !is_atom_char(p->end - p->p > 3 ? (unsigned char)p->p[3] : ' ')) {
        p->p += 3;
        *out = NULL;
        return true;
    }
    return fail(p, at_eol(p) ? "Missing argument" : "Expected a string");
}

/* Modified UTF-7 (RFC 3501 5.1.3). */

bool
imap_parse_mutf7_valid(const char *s, bool wildcards)
{
    while (*s) {
        unsigned char c = (unsigned char)*s++;
        uint32_t acc = 0, hi = 0;
        int bits = 0, units = 0;

        if (c < 0x20 || c > 0x7e)
            return false;
        if ((c == '%' || c == '*') && !wildcards)
            return false;
        if (c != '&')
            continue;
        if (*s == '-') {
            s++; /* "&-" is "&" */
            continue;
        }
        /* A shift: modified base64 of UTF-16BE, ended by "-". */
        for (; *s && *s != '-'; s++) {
            int v = base64_digit((unsigned char)*s, ',');

            if (v < 0)
                return false;
            acc = (acc << 6 | (uint32_t)v) & 0xffffff;
            bits += 6;
            if (bits >= 16) {
                uint32_t u;

                bits -= 16;
                u = acc >> bits & 0xffff;
                units++;
                if (hi) {
                    if (u < 0xdc00 || u > 0xdfff)
                        return false;
                    hi = 0;
                } else if (u >= 0xd800 && u <= 0xdbff) {
                    hi = u;
                } else if (u >= 0xdc00 && u <= 0xdfff) {
                    return false;
                } else if (u >= 0x20 && u <= 0x7e) {
                    /* Printable US-ASCII must stand for itself. */
                    return false;
                }
            }
        }
        if (*s != '-' || units == 0 || hi || bits >= 6 ||
            (acc & ((1u << bits) - 1)) != 0)
            return false;
        s++;
        /* Two shifts in a row must be one (RFC 3501 5.1.3). */
        if (*s == '&' && s[1] != '-')
            return false;
    }
    return true;
}

/* mailbox = "INBOX" / astring, INBOX in any case given as "INBOX". */
static bool
mailbox(imap_parse_t *p, const char **out)
{
    if (!imap_parse_astring(p, out))
        return false;
    if (strcasecmp(*out, "INBOX") == 0)
        *out = "INBOX";
    else if (!imap_parse_mutf7_valid(*out, false))
        return fail(p, "Invalid mailbox name");
    return true;
}

/* list-mailbox = 1*list-char / string (RFC 3501 9). */
static bool
list_mailbox(imap_parse_t *p, const char **out)
{
    const char *s;
    size_t n;

    if (peek(p) == '"' || peek(p) == '{') {
        if (!string(p, out, &n))
            return false;
    } else {
        n = span(p, is_list_char, &s);
        if (n == 0)
            return fail(p, at_eol(p) ? "Missing argument"
                                     : "Expected a mailbox pattern");
        *out = imap_parse_strndup(p, s, n);
    }
    if (!imap_parse_mutf7_valid(*out, true))
        return fail(p, "Invalid mailbox name");
    return true;
}

/* Sequence sets (RFC 3501 9, "sequence-set"). */

static bool
seq_number(imap_parse_t *p, uint32_t *out)
{
    if (peek(p) == '*') {
        p->p++;
        *out = IMAP_SEQ_STAR;
        return true;
    }
    if (!isdigit(peek(p)))
        return fail(p, at_eol(p) ? "Missing argument" : "Invalid sequence set");
    if (!imap_parse_number_raw(p, true, out))
        return fail(p, "Invalid sequence set");
    return true;
}

bool
imap_parse_seqset(imap_parse_t *p, struct imap_seqset *out)
{
    struct imap_seq_range *r = NULL;
    size_t n = 0, cap = 0;

    for (;;) {
        struct imap_seq_range one;

        if (!seq_number(p, &one.lo))
            return false;
        one.hi = one.lo;
        if (peek(p) == ':') {
            p->p++;
            if (!seq_number(p, &one.hi))
                return false;
        }
        if (n == cap) {
            struct imap_seq_range *nr;

            cap = cap ? 2 * cap : 4;
            nr = imap_parse_alloc(p, cap * sizeof(*nr));
            if (n)
                memcpy(nr, r, n * sizeof(*r));
            r = nr;
        }
        r[n++] = one;
        if (peek(p) != ',')
            break;
        p->p++;
    }
    if (is_atom_char(peek(p)))
        return fail(p, "Invalid sequence set");
    out->r = r;
    out->n = n;
    return true;
}

bool
imap_parse_seqset_contains(const struct imap_seqset *set, uint32_t n,
                           uint32_t star)
{
    for (size_t i = 0; i < set->n; i++) {
        uint32_t lo = set->r[i].lo == IMAP_SEQ_STAR ? star : set->r[i].lo;
        uint32_t hi = set->r[i].hi == IMAP_SEQ_STAR ? star : set->r[i].hi;

        if (lo > hi) {
            uint32_t t = lo;

            lo = hi;
            hi = t;
        }
        if (n >= lo && n <= hi && n != 0)
            return true;
    }
    return false;
}

/* Flags (RFC 3501 9, "flag"): system flags spelt as the RFC does. */

static const char *const system_flags[] = {
    "\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft",
};

static bool
flag(imap_parse_t *p, const char **out)
{
    const char *s;
    size_t n;
    bool sys = peek(p) == '\\';

    if (sys)
        p->p++;
    n = span(p, is_atom_char, &s);
    if (n == 0)
        return fail(p, at_eol(p) ? "Missing argument" : "Invalid flag");
    if (sys) {
        if (word_is(s, n, "Recent"))
            return fail(p, "\\Recent cannot be set");
        for (size_t i = 0; i < sizeof(system_flags) / sizeof(*system_flags);
             i++)
            if (word_is(s, n, system_flags[i] + 1)) {
                *out = system_flags[i];
                return true;
            }
        /* flag-extension: "\" atom, kept as sent. */
        s--;
        n++;
    }
    *out = imap_parse_strndup(p, s, n);
    return true;
}

/* flag-list = "(" [flag *(SP flag)] ")". */
static bool
flag_list(imap_parse_t *p, struct imap_strs *out)
{
    struct vec v = {0};

    if (!expect_char(p, '(', "Expected a flag list"))
        return false;
    if (peek(p) != ')') {
        for (;;) {
            const char *f;

            if (!flag(p, &f))
                return false;
            imap_parse_vec_push(p, &v, f);
            if (peek(p) != ' ')
                break;
            p->p++;
        }
    }
    if (!expect_char(p, ')', "Invalid flag list"))
        return false;
    *out = vec_strs(&v);
    return true;
}

/* Dates. */

static const char *const months[12] = {"Jan", "Feb", "Mar", "Apr",
                                       "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"};

static bool
month(imap_parse_t *p, int *mon)
{
    if (p->end - p->p < 3)
        return fail(p, "Invalid date");
    for (int i = 0; i < 12; i++)
        if (strncasecmp(p->p, months[i], 3) == 0) {
            *mon = i + 1;
            p->p += 3;
            return true;
        }
    return fail(p, "Invalid date");
}

static bool
digits(imap_parse_t *p, int min, int max, int *out)
{
    int n = 0, v = 0;

    while (n < max && isdigit(peek(p))) {
        v = v * 10 + (*p->p++ - '0');
        n++;
    }
    if (n < min)
        return fail(p, "Invalid date");
    *out = v;
    return true;
}

static int
days_in(int year, int mon)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30,
                                 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    return mon == 2 && leap ? 29 : days[mon - 1];
}

/* date = date-text / DQUOTE date-text DQUOTE; date-text = date-day "-"
 * date-month "-" date-year. */
bool
imap_parse_date(imap_parse_t *p, struct imap_date *d)
{
    bool q = peek(p) == '"';

    if (q)
        p->p++;
    if (!digits(p, 1, 2, &d->day) || !expect_char(p, '-', "Invalid date") ||
        !month(p, &d->mon) || !expect_char(p, '-', "Invalid date") ||
        !digits(p, 4, 4, &d->year))
        return fail(p, "Invalid date");
    if (d->day < 1 || d->day > days_in(d->year, d->mon))
        return fail(p, "Invalid date");
    if (q && !expect_char(p, '"', "Invalid date"))
        return false;
    if (is_atom_char(peek(p)))
        return fail(p, "Invalid date");
    return true;
}

/* date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time
 * SP zone DQUOTE (RFC 3501 9). */
static bool
date_time(imap_parse_t *p, time_t *t, int *zone)
{
    struct imap_date d;
    struct tm tm;
    int hh, mm, ss, zh, zm, sign;

    p->p++; /* DQUOTE */
    if (peek(p) == ' ') {
        p->p++;
        if (!digits(p, 1, 1, &d.day))
            return false;
    } else if (!digits(p, 2, 2, &d.day)) {
        return false;
    }
    if (!expect_char(p, '-', "Invalid date") || !month(p, &d.mon) ||
        !expect_char(p, '-', "Invalid date") || !digits(p, 4, 4, &d.year) ||
        !expect_char(p, ' ', "Invalid date") || !digits(p, 2, 2, &hh) ||
        !expect_char(p, ':', "Invalid date") || !digits(p, 2, 2, &mm) ||
        !expect_char(p, ':', "Invalid date") || !digits(p, 2, 2, &ss) ||
        !expect_char(p, ' ', "Invalid date"))
        return fail(p, "Invalid date");
    if (peek(p) != '+' && peek(p) != '-')
        return fail(p, "Invalid date");
    sign = *p->p++ == '-' ? -1 : 1;
    if (!digits(p, 2, 2, &zh) || !digits(p, 2, 2, &zm) ||
        !expect_char(p, '"', "Invalid date"))
        return fail(p, "Invalid date");
    if (d.day < 1 || d.day > days_in(d.year, d.mon) || hh > 23 || mm > 59 ||
        ss > 60 || zm > 59)
        return fail(p, "Invalid date");
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = d.year - 1900;
    tm.tm_mon = d.mon - 1;
    tm.tm_mday = d.day;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    *zone = sign * (zh * 60 + zm);
    *t = timegm(&tm) - (time_t)*zone * 60;
    return true;
}

/* The commands' arguments. */

static bool
args_login(imap_parse_t *p, struct imap_cmd *c)
{
    return expect_sp(p) && imap_parse_astring(p, &c->login.user) &&
           expect_sp(p) && imap_parse_astring(p, &c->login.pass);
}

static bool
args_authenticate(imap_parse_t *p, struct imap_cmd *c)
{
    const char *s;
    size_t n;
    char *m;

    if (!expect_sp(p) || !imap_parse_atom(p, &s, &n))
        return false;
    m = imap_parse_strndup(p, s, n);
    for (char *q = m; *q; q++)
        *q = (char)toupper((unsigned char)*q);
    c->authenticate.mech = m;
    c->authenticate.ir = NULL;
    if (peek(p) == ' ' && !at_eol(p)) {
        p->p++;
        if (peek(p) == '=') {
            p->p++;
            c->authenticate.ir = "";
        } else {
            /* base64 (RFC 3501 9): checked fully once decoded. */
            s = p->p;
            while (p->p < p->end &&
                   (isalnum((unsigned char)*p->p) || *p->p == '+' ||
                    *p->p == '/' || *p->p == '='))
                p->p++;
            if (p->p == s)
                return fail(p, "Invalid base64");
            c->authenticate.ir = imap_parse_strndup(p, s, (size_t)(p->p - s));
        }
    }
    return true;
}

static bool
args_status(imap_parse_t *p, struct imap_cmd *c)
{
    static const struct {
        const char *name;
        unsigned bit;
    } items[] = {
        {"MESSAGES", IMAP_STATUS_MESSAGES},
        {"RECENT", IMAP_STATUS_RECENT},
        {"UIDNEXT", IMAP_STATUS_UIDNEXT},
        {"UIDVALIDITY", IMAP_STATUS_UIDVALIDITY},
        {"UNSEEN", IMAP_STATUS_UNSEEN},
    };

    if (!expect_sp(p) || !mailbox(p, &c->status.mailbox) || !expect_sp(p) ||
        !expect_char(p, '(', "Expected a list of status items"))
        return false;
    c->status.items = 0;
    for (;;) {
        const char *s;
        size_t n, i;

        if (!imap_parse_atom(p, &s, &n))
            return false;
        for (i = 0; i < sizeof(items) / sizeof(*items); i++)
            if (word_is(s, n, items[i].name))
                break;
        if (i == sizeof(items) / sizeof(*items))
            return fail(p, "Unknown status item");
        c->status.items |= items[i].bit;
        if (peek(p) != ' ')
            break;
        p->p++;
    }
    return expect_char(p, ')', "Invalid list of status items");
}

static bool
args_append(imap_parse_t *p, struct imap_cmd *c)
{
    const char *msg;
    size_t len;

    if (!expect_sp(p) || !mailbox(p, &c->append.mailbox) || !expect_sp(p))
        return false;
    c->append.flags = (struct imap_strs){0};
    c->append.has_date = false;
    if (peek(p) == '(') {
        if (!flag_list(p, &c->append.flags) || !expect_sp(p))
            return false;
    }
    if (peek(p) == '"') {
        if (!date_time(p, &c->append.date, &c->append.zone) || !expect_sp(p))
            return false;
        c->append.has_date = true;
    }
    if (peek(p) != '{')
        return fail(p, at_eol(p) ? "Missing message" : "Expected a literal");
    if (!literal(p, true, &msg, &len))
        return false;
    c->append.msg = msg;
    c->append.len = len;
    return true;
}

static bool
args_copy(imap_parse_t *p, struct imap_cmd *c)
{
    return expect_sp(p) && imap_parse_seqset(p, &c->copy.set) && expect_sp(p) &&
           mailbox(p, &c->copy.mailbox);
}

static bool
args_store(imap_parse_t *p, struct imap_cmd *c)
{
    const char *s;
    size_t n;
    struct vec v = {0};

    if (!expect_sp(p) || !imap_parse_seqset(p, &c->store.set) || !expect_sp(p))
        return false;
    c->store.op = IMAP_STORE_SET;
    if (peek(p) == '+' || peek(p) == '-') {
        c->store.op = *p->p == '+' ? IMAP_STORE_ADD : IMAP_STORE_REMOVE;
        p->p++;
    }
    if (!imap_parse_atom(p, &s, &n))
        return false;
    if (word_is(s, n, "FLAGS"))
        c->store.silent = false;
    else if (word_is(s, n, "FLAGS.SILENT"))
        c->store.silent = true;
    else
        return fail(p, "Expected FLAGS, +FLAGS or -FLAGS");
    if (!expect_sp(p))
        return false;
    if (peek(p) == '(')
        return flag_list(p, &c->store.flags);
    /* flag *(SP flag), without parentheses. */
    for (;;) {
        const char *f;

        if (!flag(p, &f))
            return false;
        imap_parse_vec_push(p, &v, f);
        if (peek(p) != ' ' || at_eol(p))
            break;
        p->p++;
    }
    c->store.flags = vec_strs(&v);
    return true;
}

static bool
args_id(imap_parse_t *p, struct imap_cmd *c)
{
    struct vec v = {0};
    const char *s;
    size_t n;

    if (!expect_sp(p))
        return false;
    if (peek(p) != '(') {
        if (!imap_parse_atom(p, &s, &n) || !word_is(s, n, "NIL"))
            return fail(p, "Expected a list or NIL");
        c->idparams = (struct imap_strs){0};
        return true;
    }
    p->p++;
    while (peek(p) != ')') {
        const char *field, *value;

        if (v.n > 0 && !expect_sp(p))
            return false;
        if (v.n / 2 == IMAP_ID_PAIRS_MAX)
            return fail(p, "Too many ID parameters");
        if (!string(p, &field, &n))
            return false;
        if (n > IMAP_ID_FIELD_MAX)
            return fail(p, "ID field name too long");
        if (!expect_sp(p) || !nstring(p, &value))
            return false;
        if (value && strlen(value) > IMAP_ID_VALUE_MAX)
            return fail(p, "ID value too long");
        imap_parse_vec_push(p, &v, field);
        imap_parse_vec_push(p, &v, value);
    }
    p->p++;
    c->idparams = vec_strs(&v);
    return true;
}

static bool
args_enable(imap_parse_t *p, struct imap_cmd *c)
{
    struct vec v = {0};

    do {
        const char *s;
        size_t n;

        if (!expect_sp(p) || !imap_parse_atom(p, &s, &n))
            return false;
        imap_parse_vec_push(p, &v, imap_parse_strndup(p, s, n));
    } while (peek(p) == ' ' && !at_eol(p));
    c->enable = vec_strs(&v);
    return true;
}

/* Commands. */

static enum imap_cmd_id
cmd_lookup(const char *s, size_t n)
{
    for (int i = 1; i < IMAP_CMD__COUNT; i++)
        if (word_is(s, n, cmd_names[i]))
            return (enum imap_cmd_id)i;
    return IMAP_CMD_NONE;
}

static bool
args(imap_parse_t *p, struct imap_cmd *c)
{
    switch (c->id) {
    case IMAP_CMD_CAPABILITY:
    case IMAP_CMD_NOOP:
    case IMAP_CMD_LOGOUT:
    case IMAP_CMD_STARTTLS:
    case IMAP_CMD_IDLE:
    case IMAP_CMD_NAMESPACE:
    case IMAP_CMD_CHECK:
    case IMAP_CMD_CLOSE:
    case IMAP_CMD_UNSELECT:
        return true;
    case IMAP_CMD_EXPUNGE:
        return !c->uid ||
               (expect_sp(p) && imap_parse_seqset(p, &c->expunge.set));
    case IMAP_CMD_ID:
        return args_id(p, c);
    case IMAP_CMD_AUTHENTICATE:
        return args_authenticate(p, c);
    case IMAP_CMD_LOGIN:
        return args_login(p, c);
    case IMAP_CMD_SELECT:
    case IMAP_CMD_EXAMINE:
    case IMAP_CMD_CREATE:
    case IMAP_CMD_DELETE:
    case IMAP_CMD_SUBSCRIBE:
    case IMAP_CMD_UNSUBSCRIBE:
        return expect_sp(p) && mailbox(p, &c->mailbox);
    case IMAP_CMD_RENAME:
        return expect_sp(p) && mailbox(p, &c->rename.from) && expect_sp(p) &&
               mailbox(p, &c->rename.to);
    case IMAP_CMD_LIST:
    case IMAP_CMD_LSUB:
        return expect_sp(p) && list_mailbox(p, &c->list.ref) && expect_sp(p) &&
               list_mailbox(p, &c->list.pattern);
    case IMAP_CMD_STATUS:
        return args_status(p, c);
    case IMAP_CMD_APPEND:
        return args_append(p, c);
    case IMAP_CMD_ENABLE:
        return args_enable(p, c);
    case IMAP_CMD_SEARCH:
        return imap_parse_search_args(p, c);
    case IMAP_CMD_FETCH:
        return imap_parse_fetch_args(p, c);
    case IMAP_CMD_STORE:
        return args_store(p, c);
    case IMAP_CMD_COPY:
    case IMAP_CMD_MOVE:
        return args_copy(p, c);
    default:
        return fail(p, "Unknown command");
    }
}

static bool
uid_allowed(enum imap_cmd_id id)
{
    return id == IMAP_CMD_COPY || id == IMAP_CMD_MOVE || id == IMAP_CMD_FETCH ||
           id == IMAP_CMD_SEARCH || id == IMAP_CMD_STORE ||
           id == IMAP_CMD_EXPUNGE;
}

int
imap_parse_command(imap_parse_t *p, const char *buf, size_t len,
                   const struct imap_cmd **cmd_p, const char **why_p)
{
    struct imap_cmd *c = &p->cmd;
    const char *s;
    size_t n;

    imap_parse_clear(p, false);
    memset(c, 0, sizeof(*c));
    p->p = buf;
    p->end = buf + len;
    p->why = NULL;
    p->depth = 0;
    *cmd_p = c;
    if (len < 2 || buf[len - 2] != '\r' || buf[len - 1] != '\n') {
        *why_p = "Command not ended by CRLF";
        return ERR_INVAL;
    }
    n = imap_parse_tag(buf, len - 2);
    if (n == 0 || n == len - 2) {
        *why_p = n == 0 && (len == 2 || buf[0] == ' ') ? "Empty command line"
                 : n == 0                              ? "Invalid tag"
                                                       : "Missing command";
        if (n > 0)
            c->tag = imap_parse_strndup(p, buf, n);
        return ERR_INVAL;
    }
    c->tag = imap_parse_strndup(p, buf, n);
    p->p += n + 1;
    if (!imap_parse_atom(p, &s, &n)) {
        *why_p = p->why;
        return ERR_INVAL;
    }
    if (word_is(s, n, "UID")) {
        c->uid = true;
        if (!expect_sp(p) || !imap_parse_atom(p, &s, &n)) {
            *why_p = p->why;
            return ERR_INVAL;
        }
        c->id = cmd_lookup(s, n);
        if (!uid_allowed(c->id)) {
            c->id = IMAP_CMD_NONE;
            *why_p = "Unknown UID command";
            return ERR_INVAL;
        }
    } else {
        c->id = cmd_lookup(s, n);
        if (c->id == IMAP_CMD_NONE) {
            *why_p = "Unknown command";
            return ERR_INVAL;
        }
    }
    if (!args(p, c) || !expect_eol(p)) {
        *why_p = p->why ? p->why : "Syntax error";
        return ERR_INVAL;
    }
    *why_p = NULL;
    return 0;
}

size_t
imap_parse_tag(const char *s, size_t len)
{
    size_t n = 0;

    while (n < len && is_tag_char((unsigned char)s[n]))
        n++;
    if (n == 0 || (n < len && s[n] != ' '))
        return 0;
    return n;
}

bool
imap_parse_literal_end(const char *s, size_t len, uint64_t *n, bool *nonsync)
{
    size_t i, digits_end;
    uint64_t v = 0;

    if (len < 3 || s[len - 1] != '}')
        return false;
    i = len - 1;
    *nonsync = s[i - 1] == '+';
    if (*nonsync)
        i--;
    digits_end = i;
    while (i > 0 && isdigit((unsigned char)s[i - 1]))
        i--;
    if (i == digits_end || i == 0 || s[i - 1] != '{')
        return false;
    for (size_t k = i; k < digits_end; k++) {
        v = v * 10 + (uint64_t)(s[k] - '0');
        if (v > UINT32_MAX) {
            v = UINT64_MAX;
            break;
        }
    }
    *n = v;
    return true;
}

const char *
imap_parse_cmd_name(enum imap_cmd_id id)
{
    return id > IMAP_CMD_NONE && id < IMAP_CMD__COUNT ? cmd_names[id] : "";
}

imap_parse_t *
imap_parse_new(void)
{
    return xcalloc(1, sizeof(imap_parse_t));
}

void
imap_parse_clear(imap_parse_t *p, bool wipe)
{
    struct block *b = p->blocks;

    if (b == NULL)
        return;
    /* Keep the oldest (first) block, the one most commands fit in. */
    while (b->next) {
        struct block *next = b->next;

        if (wipe)
            explicit_bzero(b->data, b->used);
        free(b);
        b = next;
    }
    if (wipe)
        explicit_bzero(b->data, b->used);
    b->used = 0;
    p->blocks = b;
}

void
imap_parse_destroy(imap_parse_t **p_p)
{
    imap_parse_t *p = *p_p;

    if (p == NULL)
        return;
    imap_parse_clear(p, false);
    free(p->blocks);
    free(p);
    *p_p = NULL;
}
