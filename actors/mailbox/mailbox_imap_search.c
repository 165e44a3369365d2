/*
 * mailbox_imap_search.c - SEARCH and UID SEARCH (RFC 3501 6.4.4): the
 * parsed program (lib/imap_parse.h) evaluated over each message of the
 * selected folder.
 *
 * Keys on flags, sizes, dates and numbers use the index alone; a message's
 * file is mapped only when a key needs its header or body, once per
 * message. Strings match as case-insensitive substrings (ASCII case, as
 * RFC 3501 allows), header values unfolded. Dates compare without time
 * and zone (RFC 3501 6.4.4): the internal date in UTC, the Date: header
 * as written.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "mailbox_imap_int.h"

/* Header values longer than this are searched as far as this goes. */
#define FIELD_MAX 65536

struct sctx {
    struct isess *s;
    uint32_t seq, exists, maxuid;
    const struct mstore_msg *m;
    struct imap_mdata map;
    bool mapped, map_failed;
    bool head_only; /* no key reads past the header */
    buf_t rbuf;
    size_t hlen;
    buf_t field;
};

static bool eval(struct sctx *x, const struct imap_search_key *k);

/* Case-insensitive substring (ASCII case), Horspool's way: the needle's
 * last octet is compared first and a mismatch skips ahead by the table,
 * so a BODY search over many messages reads most octets once. An empty
 * needle is found everywhere. */
static bool
has_ci(const char *hay, size_t hlen, const char *needle)
{
    size_t nlen = strlen(needle), skip[256];
    const unsigned char *h = (const unsigned char *)hay;
    const unsigned char *n = (const unsigned char *)needle;

    if (nlen == 0)
        return true;
    if (nlen > hlen)
        return false;
    for (size_t i = 0; i < 256; i++)
        skip[i] = nlen;
    for (size_t i = 0; i + 1 < nlen; i++) {
        skip[tolower(n[i])] = nlen - 1 - i;
        skip[toupper(n[i])] = nlen - 1 - i;
    }
    for (size_t at = 0; at + nlen <= hlen;) {
        unsigned char last = h[at + nlen - 1];

        if (tolower(last) == tolower(n[nlen - 1])) {
            size_t k = 0;

            while (k + 1 < nlen && tolower(h[at + k]) == tolower(n[k]))
                k++;
            if (k + 1 == nlen)
                return true;
        }
        at += skip[last];
    }
    return false;
}

static bool
need_data(struct sctx *x)
{
    if (x->mapped)
        return true;
    if (x->map_failed)
        return false;
    if (imap_mdata_load(x->s, &x->rbuf, x->seq, x->m->size, x->head_only,
                        &x->map) != 0) {
        x->map_failed = true;
        return false;
    }
    x->mapped = true;
    x->hlen = imap_fetch_header_len(x->map.data, x->map.len);
    return true;
}

/*
 * Finds header field name (RFC 5322 2.2) and calls back with each
 * occurrence's value unfolded into x->field; returns true as soon as match
 * says so.
 */
static bool
each_field(struct sctx *x, const char *name, const char *want)
{
    const char *p, *end;
    size_t nlen = strlen(name);

    if (!need_data(x))
        return false;
    p = x->map.data;
    end = x->map.data + x->hlen;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;

        if ((size_t)(end - p) > nlen && p[nlen] == ':' &&
            strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;

            buf_reset(&x->field);
            /* The value and its continuation lines, unfolded. */
            for (;;) {
                const char *e = eol ? eol : end;

                if (e > v && e[-1] == '\r')
                    e--;
                if (x->field.len + (size_t)(e - v) < FIELD_MAX)
                    buf_add(&x->field, v, (size_t)(e - v));
                if (next >= end || (*next != ' ' && *next != '\t'))
                    break;
                v = next;
                eol = memchr(v, '\n', (size_t)(end - v));
                next = eol ? eol + 1 : end;
            }
            if (has_ci(x->field.data ? x->field.data : "", x->field.len, want))
                return true;
        }
        p = next;
    }
    return false;
}

/* A date as y*10000 + m*100 + d, for comparing. */
static long
date_key(int y, int m, int d)
{
    return (long)y * 10000 + m * 100 + d;
}

static long
internal_key(const struct mstore_msg *m)
{
    struct tm tm;
    time_t t = m->date;

    gmtime_r(&t, &tm);
    return date_key(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/* The Date: header's day (RFC 5322 3.3: [day-of-week ","] day month
 * year ...), or -1 when there is none or it cannot be read. */
static long
sent_key(struct sctx *x)
{
    static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    const char *p;
    int d, y;
    char mon[4];

    if (!each_field(x, "Date", ""))
        return -1;
    p = x->field.data;
    while (*p == ' ' || *p == '\t')
        p++;
    if (isalpha((unsigned char)*p)) {
        p = strchr(p, ',');
        if (p == NULL)
            return -1;
        p++;
    }
    if (sscanf(p, "%d %3s %d", &d, mon, &y) != 3)
        return -1;
    for (int i = 0; i < 12; i++)
        if (strncasecmp(mon, months + 3 * i, 3) == 0) {
            if (y < 100) /* RFC 5322 4.3: obsolete two-digit years */
                y += y < 50 ? 2000 : 1900;
            return date_key(y, i + 1, d);
        }
    return -1;
}

static bool
keyword(struct sctx *x, const char *kw)
{
    for (unsigned i = 0; i < MSTORE_KEYWORDS_MAX; i++) {
        const char *k = mstore_view_keyword(x->s->view, i);

        if (k && strcasecmp(k, kw) == 0)
            return (x->m->keywords >> i) & 1;
    }
    return false;
}

static bool
eval_list(struct sctx *x, const struct imap_search_key *k)
{
    for (; k; k = k->next)
        if (!eval(x, k))
            return false;
    return true;
}

static bool
eval(struct sctx *x, const struct imap_search_key *k)
{
    unsigned fl = x->m->flags;
    long key;

    switch (k->type) {
    case IMAP_SK_AND:
        return eval_list(x, k->sub);
    case IMAP_SK_NOT:
        return !eval(x, k->sub);
    case IMAP_SK_OR:
        return eval(x, k->sub) || eval(x, k->sub->next);
    case IMAP_SK_SEQSET:
        return imap_parse_seqset_contains(&k->set, x->seq, x->exists);
    case IMAP_SK_UID:
        return imap_parse_seqset_contains(&k->set, x->m->uid, x->maxuid);
    case IMAP_SK_ALL:
        return true;
    case IMAP_SK_ANSWERED:
        return fl & MSTORE_F_ANSWERED;
    case IMAP_SK_UNANSWERED:
        return !(fl & MSTORE_F_ANSWERED);
    case IMAP_SK_DELETED:
        return fl & MSTORE_F_DELETED;
    case IMAP_SK_UNDELETED:
        return !(fl & MSTORE_F_DELETED);
    case IMAP_SK_DRAFT:
        return fl & MSTORE_F_DRAFT;
    case IMAP_SK_UNDRAFT:
        return !(fl & MSTORE_F_DRAFT);
    case IMAP_SK_FLAGGED:
        return fl & MSTORE_F_FLAGGED;
    case IMAP_SK_UNFLAGGED:
        return !(fl & MSTORE_F_FLAGGED);
    case IMAP_SK_SEEN:
        return fl & MSTORE_F_SEEN;
    case IMAP_SK_UNSEEN:
        return !(fl & MSTORE_F_SEEN);
    case IMAP_SK_RECENT:
        return x->m->recent;
    case IMAP_SK_NEW:
        return x->m->recent && !(fl & MSTORE_F_SEEN);
    case IMAP_SK_OLD:
        return !x->m->recent;
    case IMAP_SK_KEYWORD:
        return keyword(x, k->str);
    case IMAP_SK_UNKEYWORD:
        return !keyword(x, k->str);
    case IMAP_SK_LARGER:
        return x->m->size > k->num;
    case IMAP_SK_SMALLER:
        return x->m->size < k->num;
    case IMAP_SK_BEFORE:
        return internal_key(x->m) <
               date_key(k->date.year, k->date.mon, k->date.day);
    case IMAP_SK_ON:
        return internal_key(x->m) ==
               date_key(k->date.year, k->date.mon, k->date.day);
    case IMAP_SK_SINCE:
        return internal_key(x->m) >=
               date_key(k->date.year, k->date.mon, k->date.day);
    case IMAP_SK_SENTBEFORE:
        key = sent_key(x);
        return key >= 0 &&
               key < date_key(k->date.year, k->date.mon, k->date.day);
    case IMAP_SK_SENTON:
        key = sent_key(x);
        return key >= 0 &&
               key == date_key(k->date.year, k->date.mon, k->date.day);
    case IMAP_SK_SENTSINCE:
        key = sent_key(x);
        return key >= 0 &&
               key >= date_key(k->date.year, k->date.mon, k->date.day);
    case IMAP_SK_FROM:
        return each_field(x, "From", k->str);
    case IMAP_SK_TO:
        return each_field(x, "To", k->str);
    case IMAP_SK_CC:
        return each_field(x, "Cc", k->str);
    case IMAP_SK_BCC:
        return each_field(x, "Bcc", k->str);
    case IMAP_SK_SUBJECT:
        return each_field(x, "Subject", k->str);
    case IMAP_SK_HEADER:
        return each_field(x, k->field, k->str);
    case IMAP_SK_BODY:
        /* XXX: the body is searched as stored; encoded parts (base64,
         * quoted-printable) are not decoded first. */
        return need_data(x) &&
               has_ci(x->map.data + x->hlen, x->map.len - x->hlen, k->str);
    case IMAP_SK_TEXT:
        return need_data(x) && has_ci(x->map.data, x->map.len, k->str);
    case IMAP_SK__COUNT:
        break;
    }
    return false;
}

/* Whether a key reads past the message's header (BODY, TEXT). */
static bool
needs_body(const struct imap_search_key *k)
{
    for (; k; k = k->next) {
        if (k->type == IMAP_SK_BODY || k->type == IMAP_SK_TEXT)
            return true;
        if (k->type == IMAP_SK_AND || k->type == IMAP_SK_NOT) {
            if (needs_body(k->sub))
                return true;
        } else if (k->type == IMAP_SK_OR) {
            /* The first key, whose next is the second. */
            if (needs_body(k->sub))
                return true;
        }
    }
    return false;
}

/* A SEARCH under way: the messages are gone through in slices, and the
 * loop serves others between them (a BODY search of a large folder takes
 * seconds, which deliveries and other sessions would otherwise wait). */
struct search {
    struct sctx x;
    uint32_t seq, exists;
    uint32_t *found;
    size_t nfound, cap;
};

/* A slice is checked against IMAP_SLICE_MS every SLICE_CHECK messages. */
#define SLICE_CHECK 64

static void
search_free(void *arg)
{
    struct search *se = arg;

    buf_free(&se->x.field);
    buf_free(&se->x.rbuf);
    free(se->found);
    free(se);
}

static void
search_work(struct isess *s)
{
    struct search *se = s->work_arg;
    const struct imap_cmd *c = s->cmd;
    int64_t t0 = clock_mono_ms();

    for (unsigned n = 1; se->seq <= se->exists; se->seq++, n++) {
        const struct mstore_msg *m = mstore_view_msg(s->view, se->seq);
        struct mstore_msg msg;
        bool hit;

        if (n % SLICE_CHECK == 0 && clock_mono_ms() - t0 >= IMAP_SLICE_MS) {
            s->work_yield = true;
            return;
        }
        /* Copied: what the view returns is borrowed until its next
         * call, and a key may read the file. */
        if (m == NULL || m->expunged)
            continue;
        msg = *m;
        se->x.seq = se->seq;
        se->x.m = &msg;
        se->x.mapped = se->x.map_failed = false;
        hit = eval(&se->x, c->search.prog);
        if (se->x.mapped)
            imap_mdata_release(&se->x.map);
        if (!hit)
            continue;
        if (se->nfound == se->cap) {
            se->cap = se->cap ? se->cap * 2 : 256;
            se->found = xrealloc(se->found, se->cap * sizeof(*se->found));
        }
        se->found[se->nfound++] = c->uid ? msg.uid : se->seq;
    }
    imap_server_search(s->srv, se->found, se->nfound);
    imap_sess_complete(s, IMAP_OK, NULL, NULL);
    search_free(se);
}

void
imap_search_run(struct isess *s, const struct imap_cmd *c)
{
    struct search *se = xcalloc(1, sizeof(*se));
    const struct mstore_msg *last;

    se->exists = mstore_view_exists(s->view);
    last = mstore_view_msg(s->view, se->exists);
    se->seq = 1;
    se->x.s = s;
    se->x.exists = se->exists;
    se->x.maxuid = last ? last->uid : 0;
    se->x.head_only = !needs_body(c->search.prog);
    s->work = search_work;
    s->work_free = search_free;
    s->work_arg = se;
    search_work(s);
}
