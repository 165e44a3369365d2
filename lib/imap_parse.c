/*
 * imap_parse.c - the IMAP4rev1 command grammar (RFC 3501 9): one whole
 * command in, a struct imap_cmd out.
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

#include "lib/err.h"
#include "lib/imap_parse.h"
#include "lib/xalloc.h"

#define BLOCK_MIN 8192

struct block {
    struct block *next;
    size_t cap, used;
    max_align_t data[];
};

struct imap_parse {
    struct block *blocks; /* newest first; the last is the first made */
    struct imap_cmd cmd;
    /* The command being parsed. */
    const char *p, *end;
    const char *why;
    int depth;
};

/* A growing array of pointers in the arena. */
struct vec {
    const void **v;
    size_t n, cap;
};

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
    [IMAP_CMD_EXPUNGE] = "EXPUNGE",
    [IMAP_CMD_SEARCH] = "SEARCH",
    [IMAP_CMD_FETCH] = "FETCH",
    [IMAP_CMD_STORE] = "STORE",
    [IMAP_CMD_COPY] = "COPY",
    [IMAP_CMD_MOVE] = "MOVE",
};

/* The arena. */

static void *
arena_alloc(imap_parse_t *p, size_t n)
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

static char *
arena_strndup(imap_parse_t *p, const char *s, size_t n)
{
    char *d = arena_alloc(p, n + 1);

    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void
vec_push(imap_parse_t *p, struct vec *v, const void *x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 8;
        const void **nv = arena_alloc(p, cap * sizeof(*nv));

        if (v->n)
            memcpy(nv, v->v, v->n * sizeof(*nv));
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static struct imap_strs
vec_strs(const struct vec *v)
{
    return (struct imap_strs){.v = (const char *const *)v->v, .n = v->n};
}

/* Character classes (RFC 3501 9). */

static bool
is_atom_char(int c)
{
    /* ATOM-CHAR: any CHAR but atom-specials: "(" ")" "{" SP CTL "%" "*"
     * DQUOTE "\" "]". */
    return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

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
fail(imap_parse_t *p, const char *why)
{
    if (p->why == NULL)
        p->why = why;
    return false;
}

static int
peek(const imap_parse_t *p)
{
    return p->p < p->end ? (unsigned char)*p->p : -1;
}

static bool
at_eol(const imap_parse_t *p)
{
    const char *q = p->p;

    while (q < p->end && *q == ' ')
        q++;
    return p->end - q == 2 && q[0] == '\r' && q[1] == '\n';
}

static bool
expect_sp(imap_parse_t *p)
{
    if (peek(p) == ' ') {
        p->p++;
        return true;
    }
    return fail(p, at_eol(p) ? "Missing argument" : "Expected a space");
}

static bool
expect_eol(imap_parse_t *p)
{
    if (at_eol(p)) {
        p->p = p->end;
        return true;
    }
    return fail(p, "Unexpected argument");
}

static bool
expect_char(imap_parse_t *p, int c, const char *why)
{
    if (peek(p) == c) {
        p->p++;
        return true;
    }
    return fail(p, at_eol(p) ? "Missing argument" : why);
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

static bool
atom(imap_parse_t *p, const char **s, size_t *n)
{
    *n = span(p, is_atom_char, s);
    if (*n == 0)
        return fail(p, at_eol(p) ? "Missing argument" : "Expected an atom");
    return true;
}

/* Whether the atom just read is word, in any case. */
static bool
word_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* number (RFC 3501 9): 32-bit unsigned. nz: no leading zero, not 0.
 * Sets no reason: the callers know what the number was for. */
static bool
number_raw(imap_parse_t *p, bool nz, uint32_t *out)
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

static bool
number(imap_parse_t *p, bool nz, uint32_t *out)
{
    if (number_raw(p, nz, out))
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
    d = arena_alloc(p, n + 1);
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
    if (!number_raw(p, false, &n))
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
        *out = arena_strndup(p, p->p, n);
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
static bool
astring(imap_parse_t *p, const char **out)
{
    const char *s;
    size_t n;

    if (peek(p) == '"' || peek(p) == '{')
        return string(p, out, &n);
    n = span(p, is_astring_char, &s);
    if (n == 0)
        return fail(p, at_eol(p) ? "Missing argument" : "Expected a string");
    *out = arena_strndup(p, s, n);
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

static int
mb64_val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == ',')
        return 63;
    return -1;
}

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
            int v = mb64_val((unsigned char)*s);

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
    if (!astring(p, out))
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
        *out = arena_strndup(p, s, n);
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
    if (!number_raw(p, true, out))
        return fail(p, "Invalid sequence set");
    return true;
}

static bool
seqset(imap_parse_t *p, struct imap_seqset *out)
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
            nr = arena_alloc(p, cap * sizeof(*nr));
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
    *out = arena_strndup(p, s, n);
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
            vec_push(p, &v, f);
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
static bool
date(imap_parse_t *p, struct imap_date *d)
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
    return expect_sp(p) && astring(p, &c->login.user) && expect_sp(p) &&
           astring(p, &c->login.pass);
}

static bool
args_authenticate(imap_parse_t *p, struct imap_cmd *c)
{
    const char *s;
    size_t n;
    char *m;

    if (!expect_sp(p) || !atom(p, &s, &n))
        return false;
    m = arena_strndup(p, s, n);
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
            c->authenticate.ir = arena_strndup(p, s, (size_t)(p->p - s));
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

        if (!atom(p, &s, &n))
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
    return expect_sp(p) && seqset(p, &c->copy.set) && expect_sp(p) &&
           mailbox(p, &c->copy.mailbox);
}

static bool
args_store(imap_parse_t *p, struct imap_cmd *c)
{
    const char *s;
    size_t n;
    struct vec v = {0};

    if (!expect_sp(p) || !seqset(p, &c->store.set) || !expect_sp(p))
        return false;
    c->store.op = IMAP_STORE_SET;
    if (peek(p) == '+' || peek(p) == '-') {
        c->store.op = *p->p == '+' ? IMAP_STORE_ADD : IMAP_STORE_REMOVE;
        p->p++;
    }
    if (!atom(p, &s, &n))
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
        vec_push(p, &v, f);
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
        if (!atom(p, &s, &n) || !word_is(s, n, "NIL"))
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
        vec_push(p, &v, field);
        vec_push(p, &v, value);
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

        if (!expect_sp(p) || !atom(p, &s, &n))
            return false;
        vec_push(p, &v, arena_strndup(p, s, n));
    } while (peek(p) == ' ' && !at_eol(p));
    c->enable = vec_strs(&v);
    return true;
}

/* FETCH (RFC 3501 6.4.5). */

static bool
header_list(imap_parse_t *p, struct imap_strs *out)
{
    struct vec v = {0};

    if (!expect_sp(p) || !expect_char(p, '(', "Expected a header list"))
        return false;
    for (;;) {
        const char *f;
        char *u;

        if (!astring(p, &f))
            return false;
        /* A field name (RFC 5322 3.6.8): printable, no colon. */
        if (*f == '\0')
            return fail(p, "Invalid header field name");
        u = (char *)f;
        for (; *u; u++) {
            if (*u <= 32 || *u >= 127 || *u == ':')
                return fail(p, "Invalid header field name");
            *u = (char)toupper((unsigned char)*u);
        }
        vec_push(p, &v, f);
        if (peek(p) != ' ')
            break;
        p->p++;
    }
    if (!expect_char(p, ')', "Invalid header list"))
        return false;
    *out = vec_strs(&v);
    return true;
}

/* section-text or section-msgtext after the parts, if any. */
static bool
section_text(imap_parse_t *p, struct imap_section *sec)
{
    const char *s = p->p;
    size_t n;

    while (p->p < p->end && (isalpha((unsigned char)*p->p) || *p->p == '.'))
        p->p++;
    n = (size_t)(p->p - s);
    if (word_is(s, n, "HEADER")) {
        sec->spec = IMAP_SEC_HEADER;
    } else if (word_is(s, n, "TEXT")) {
        sec->spec = IMAP_SEC_TEXT;
    } else if (word_is(s, n, "MIME") && sec->nparts > 0) {
        sec->spec = IMAP_SEC_MIME;
    } else if (word_is(s, n, "HEADER.FIELDS")) {
        sec->spec = IMAP_SEC_FIELDS;
        return header_list(p, &sec->fields);
    } else if (word_is(s, n, "HEADER.FIELDS.NOT")) {
        sec->spec = IMAP_SEC_FIELDS_NOT;
        return header_list(p, &sec->fields);
    } else {
        return fail(p, "Invalid section");
    }
    return true;
}

/* "[" [section-spec] "]" (RFC 3501 9, "section"). */
static bool
section(imap_parse_t *p, struct imap_section *sec)
{
    memset(sec, 0, sizeof(*sec));
    p->p++; /* "[" */
    if (peek(p) == ']') {
        p->p++;
        return true;
    }
    if (isdigit(peek(p))) {
        for (;;) {
            uint32_t n;

            if (sec->nparts == IMAP_SECTION_MAX)
                return fail(p, "Section nested too deep");
            if (!number_raw(p, true, &n))
                return fail(p, "Invalid section");
            sec->part[sec->nparts++] = n;
            if (peek(p) != '.')
                break;
            p->p++;
            if (!isdigit(peek(p))) {
                if (!section_text(p, sec))
                    return false;
                break;
            }
        }
    } else if (!section_text(p, sec)) {
        return false;
    }
    return expect_char(p, ']', "Invalid section");
}

static void
add_att(imap_parse_t *p, struct vec *v, enum imap_fetch_item item)
{
    struct imap_fetch_att *a = arena_alloc(p, sizeof(*a));

    memset(a, 0, sizeof(*a));
    a->item = item;
    vec_push(p, v, a);
}

static bool
fetch_att(imap_parse_t *p, struct vec *v)
{
    static const struct {
        const char *name;
        enum imap_fetch_item item;
    } simple[] = {
        {"ENVELOPE", IMAP_FETCH_ENVELOPE},
        {"FLAGS", IMAP_FETCH_FLAGS},
        {"INTERNALDATE", IMAP_FETCH_INTERNALDATE},
        {"RFC822", IMAP_FETCH_RFC822},
        {"RFC822.HEADER", IMAP_FETCH_RFC822_HEADER},
        {"RFC822.SIZE", IMAP_FETCH_RFC822_SIZE},
        {"RFC822.TEXT", IMAP_FETCH_RFC822_TEXT},
        {"BODYSTRUCTURE", IMAP_FETCH_BODYSTRUCTURE},
        {"UID", IMAP_FETCH_UID},
    };
    const char *s = p->p;
    struct imap_fetch_att *a;
    size_t n;
    bool peekf;

    while (p->p < p->end && (isalnum((unsigned char)*p->p) || *p->p == '.'))
        p->p++;
    n = (size_t)(p->p - s);
    if (n == 0)
        return fail(p, at_eol(p) ? "Missing argument"
                                 : "Expected a fetch attribute");
    for (size_t i = 0; i < sizeof(simple) / sizeof(*simple); i++)
        if (word_is(s, n, simple[i].name)) {
            add_att(p, v, simple[i].item);
            return true;
        }
    peekf = word_is(s, n, "BODY.PEEK");
    if (!peekf && !word_is(s, n, "BODY"))
        return fail(p, "Unknown fetch attribute");
    if (peek(p) != '[') {
        if (peekf)
            return fail(p, "BODY.PEEK needs a section");
        add_att(p, v, IMAP_FETCH_BODY);
        return true;
    }
    add_att(p, v, IMAP_FETCH_SECTION);
    a = (struct imap_fetch_att *)v->v[v->n - 1];
    a->peek = peekf;
    if (!section(p, &a->sec))
        return false;
    if (peek(p) == '<') {
        p->p++;
        if (!number_raw(p, false, &a->offset) ||
            !expect_char(p, '.', "Invalid partial") ||
            !number_raw(p, true, &a->count) ||
            !expect_char(p, '>', "Invalid partial"))
            return fail(p, "Invalid partial");
        a->partial = true;
    }
    return true;
}

static bool
args_fetch(imap_parse_t *p, struct imap_cmd *c)
{
    static const enum imap_fetch_item all[] = {
        IMAP_FETCH_FLAGS, IMAP_FETCH_INTERNALDATE, IMAP_FETCH_RFC822_SIZE,
        IMAP_FETCH_ENVELOPE, IMAP_FETCH_BODY};
    struct imap_fetch_args *f = &c->fetch;
    struct vec v = {0};
    const char *s = NULL;
    size_t n = 0;

    if (!expect_sp(p) || !seqset(p, &f->set) || !expect_sp(p))
        return false;
    if (peek(p) == '(') {
        p->p++;
        for (;;) {
            if (!fetch_att(p, &v))
                return false;
            if (peek(p) != ' ')
                break;
            p->p++;
        }
        if (!expect_char(p, ')', "Invalid fetch attribute list"))
            return false;
    } else {
        /* A macro is only ever alone (RFC 3501 6.4.5). */
        const char *save = p->p;

        while (p->p < p->end && isalpha((unsigned char)*p->p))
            p->p++;
        s = save;
        n = (size_t)(p->p - s);
        if (word_is(s, n, "ALL") || word_is(s, n, "FAST") ||
            word_is(s, n, "FULL")) {
            size_t k = word_is(s, n, "FAST") ? 3 : word_is(s, n, "ALL") ? 4 : 5;

            if (is_atom_char(peek(p)) || peek(p) == '[')
                return fail(p, "Unknown fetch attribute");
            for (size_t i = 0; i < k; i++)
                add_att(p, &v, all[i]);
        } else {
            p->p = save;
            if (!fetch_att(p, &v))
                return false;
        }
    }
    f->items = 0;
    for (size_t i = 0; i < v.n; i++)
        f->items |= 1u << ((const struct imap_fetch_att *)v.v[i])->item;
    /* RFC 3501 6.4.8: UID FETCH answers with UIDs, asked for or not. */
    if (c->uid && !(f->items & (1u << IMAP_FETCH_UID))) {
        add_att(p, &v, IMAP_FETCH_UID);
        f->items |= 1u << IMAP_FETCH_UID;
    }
    f->sets_seen = false;
    for (size_t i = 0; i < v.n; i++) {
        const struct imap_fetch_att *a = v.v[i];

        if (a->item == IMAP_FETCH_RFC822 || a->item == IMAP_FETCH_RFC822_TEXT ||
            (a->item == IMAP_FETCH_SECTION && !a->peek))
            f->sets_seen = true;
    }
    /* The list of pointers becomes an array of attributes. */
    {
        struct imap_fetch_att *arr = arena_alloc(p, v.n * sizeof(*arr));

        for (size_t i = 0; i < v.n; i++)
            arr[i] = *(const struct imap_fetch_att *)v.v[i];
        f->att = arr;
        f->natt = v.n;
    }
    return true;
}

/* SEARCH (RFC 3501 6.4.4). */

enum sk_arg {
    A_NONE,
    A_STR,
    A_DATE,
    A_NUM,
    A_FLAG,
    A_HEADER,
    A_SET,
    A_NOT,
    A_OR
};

static const struct {
    const char *name;
    enum imap_search_type type;
    enum sk_arg arg;
} search_keys[] = {
    {"ALL", IMAP_SK_ALL, A_NONE},
    {"ANSWERED", IMAP_SK_ANSWERED, A_NONE},
    {"BCC", IMAP_SK_BCC, A_STR},
    {"BEFORE", IMAP_SK_BEFORE, A_DATE},
    {"BODY", IMAP_SK_BODY, A_STR},
    {"CC", IMAP_SK_CC, A_STR},
    {"DELETED", IMAP_SK_DELETED, A_NONE},
    {"DRAFT", IMAP_SK_DRAFT, A_NONE},
    {"FLAGGED", IMAP_SK_FLAGGED, A_NONE},
    {"FROM", IMAP_SK_FROM, A_STR},
    {"HEADER", IMAP_SK_HEADER, A_HEADER},
    {"KEYWORD", IMAP_SK_KEYWORD, A_FLAG},
    {"LARGER", IMAP_SK_LARGER, A_NUM},
    {"NEW", IMAP_SK_NEW, A_NONE},
    {"NOT", IMAP_SK_NOT, A_NOT},
    {"OLD", IMAP_SK_OLD, A_NONE},
    {"ON", IMAP_SK_ON, A_DATE},
    {"OR", IMAP_SK_OR, A_OR},
    {"RECENT", IMAP_SK_RECENT, A_NONE},
    {"SEEN", IMAP_SK_SEEN, A_NONE},
    {"SENTBEFORE", IMAP_SK_SENTBEFORE, A_DATE},
    {"SENTON", IMAP_SK_SENTON, A_DATE},
    {"SENTSINCE", IMAP_SK_SENTSINCE, A_DATE},
    {"SINCE", IMAP_SK_SINCE, A_DATE},
    {"SMALLER", IMAP_SK_SMALLER, A_NUM},
    {"SUBJECT", IMAP_SK_SUBJECT, A_STR},
    {"TEXT", IMAP_SK_TEXT, A_STR},
    {"TO", IMAP_SK_TO, A_STR},
    {"UID", IMAP_SK_UID, A_SET},
    {"UNANSWERED", IMAP_SK_UNANSWERED, A_NONE},
    {"UNDELETED", IMAP_SK_UNDELETED, A_NONE},
    {"UNDRAFT", IMAP_SK_UNDRAFT, A_NONE},
    {"UNFLAGGED", IMAP_SK_UNFLAGGED, A_NONE},
    {"UNKEYWORD", IMAP_SK_UNKEYWORD, A_FLAG},
    {"UNSEEN", IMAP_SK_UNSEEN, A_NONE},
};

static bool search_key(imap_parse_t *p, struct imap_search_key **out);

static struct imap_search_key *
new_key(imap_parse_t *p, enum imap_search_type type)
{
    struct imap_search_key *k = arena_alloc(p, sizeof(*k));

    memset(k, 0, sizeof(*k));
    k->type = type;
    return k;
}

/* Keys separated by single spaces until ")" or the end of the command;
 * linked through next under parent->sub. */
static bool
search_list(imap_parse_t *p, struct imap_search_key *parent, bool paren)
{
    struct imap_search_key **tail = (struct imap_search_key **)&parent->sub;

    for (;;) {
        struct imap_search_key *k;

        if (!search_key(p, &k))
            return false;
        *tail = k;
        tail = (struct imap_search_key **)&k->next;
        if (paren && peek(p) == ')')
            return true;
        if (!paren && at_eol(p))
            return true;
        if (!expect_sp(p))
            return false;
    }
}

static bool
search_key(imap_parse_t *p, struct imap_search_key **out)
{
    const char *s;
    size_t n, i;
    struct imap_search_key *k;
    bool ok = false;

    if (p->depth >= IMAP_DEPTH_MAX)
        return fail(p, "Search nested too deep");
    p->depth++;
    if (peek(p) == '(') {
        p->p++;
        k = new_key(p, IMAP_SK_AND);
        ok = search_list(p, k, true) && expect_char(p, ')', "Expected \")\"");
        goto out;
    }
    if (peek(p) == '*' || isdigit(peek(p))) {
        k = new_key(p, IMAP_SK_SEQSET);
        ok = seqset(p, &k->set);
        goto out;
    }
    k = NULL;
    if (!atom(p, &s, &n))
        goto out;
    for (i = 0; i < sizeof(search_keys) / sizeof(*search_keys); i++)
        if (word_is(s, n, search_keys[i].name))
            break;
    if (i == sizeof(search_keys) / sizeof(*search_keys)) {
        fail(p, "Unknown search key");
        goto out;
    }
    k = new_key(p, search_keys[i].type);
    if (search_keys[i].arg != A_NONE && !expect_sp(p))
        goto out;
    switch (search_keys[i].arg) {
    case A_NONE:
        ok = true;
        break;
    case A_STR:
        ok = astring(p, &k->str);
        break;
    case A_DATE:
        ok = date(p, &k->date);
        break;
    case A_NUM:
        ok = number(p, false, &k->num);
        break;
    case A_FLAG:
        /* flag-keyword = atom */
        ok = atom(p, &s, &n);
        if (ok)
            k->str = arena_strndup(p, s, n);
        break;
    case A_HEADER:
        ok = astring(p, &k->field) && expect_sp(p) && astring(p, &k->str);
        break;
    case A_SET:
        ok = seqset(p, &k->set);
        break;
    case A_NOT:
        ok = search_key(p, (struct imap_search_key **)&k->sub);
        break;
    case A_OR: {
        struct imap_search_key *a, *b;

        ok = search_key(p, &a) && expect_sp(p) && search_key(p, &b);
        if (ok) {
            a->next = b;
            k->sub = a;
        }
        break;
    }
    }
out:
    p->depth--;
    *out = k;
    return ok;
}

static bool
args_search(imap_parse_t *p, struct imap_cmd *c)
{
    struct imap_search_key *prog;

    if (!expect_sp(p))
        return false;
    c->search.charset = NULL;
    if (p->end - p->p > 8 && strncasecmp(p->p, "CHARSET ", 8) == 0) {
        p->p += 8;
        if (!astring(p, &c->search.charset) || !expect_sp(p))
            return false;
    }
    prog = new_key(p, IMAP_SK_AND);
    p->depth = 0;
    if (!search_list(p, prog, false))
        return false;
    c->search.prog = prog;
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
        return true;
    case IMAP_CMD_EXPUNGE:
        return !c->uid || (expect_sp(p) && seqset(p, &c->expunge.set));
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
        return args_search(p, c);
    case IMAP_CMD_FETCH:
        return args_fetch(p, c);
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
            c->tag = arena_strndup(p, buf, n);
        return ERR_INVAL;
    }
    c->tag = arena_strndup(p, buf, n);
    p->p += n + 1;
    if (!atom(p, &s, &n)) {
        *why_p = p->why;
        return ERR_INVAL;
    }
    if (word_is(s, n, "UID")) {
        c->uid = true;
        if (!expect_sp(p) || !atom(p, &s, &n)) {
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
