/*
 * mailbox_imap_fetch.c - FETCH and UID FETCH (RFC 3501 6.4.5, 6.4.8).
 *
 * The set is resolved once; the answer is then written a message at a
 * time while less than IMAP_PACE_BYTES is queued (imap_sess_pump() calls
 * fetch_work() again when the socket has taken it), so a FETCH 1:* of a
 * large folder never sits in memory whole. A message's file is mapped only
 * when an item needs its octets, and its MIME tree is parsed only when an
 * item needs the structure: FLAGS, UID, sizes and dates come from the
 * index, the top-level header and text from a scan for the blank line.
 * A small message is read into a buffer the FETCH reuses (mapping and
 * unmapping a file costs more than copying a few pages: about half the
 * time of a FETCH of 10,000 headers went to mmap and munmap); a large one
 * is mapped. When only the header is wanted, only its first pages are.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/imap_mime.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "mailbox_imap_int.h"

struct fetch {
    uint32_t *seqs;
    size_t n, i;
    /* Messages whose \Seen this FETCH set (ascending), for FLAGS. */
    uint32_t *seen;
    size_t nseen, iseen;
    bool expunged;  /* some message was gone: NO [EXPUNGEISSUED] at the end */
    bool head_only; /* every item that reads the message wants its header */
    buf_t scratch;
    buf_t rbuf; /* the message read, when it is small */
};

/* Messages up to this size are read, larger ones mapped. */
#define READ_MAX (256 * 1024)
/* What is read first when only the header is wanted. */
#define HEAD_READ 16384

/* Items that need the message's octets, and those that need its tree. */
#define NEEDS_DATA                                                             \
    ((1u << IMAP_FETCH_ENVELOPE) | (1u << IMAP_FETCH_RFC822) |                 \
     (1u << IMAP_FETCH_RFC822_HEADER) | (1u << IMAP_FETCH_RFC822_TEXT) |       \
     (1u << IMAP_FETCH_BODY) | (1u << IMAP_FETCH_BODYSTRUCTURE) |              \
     (1u << IMAP_FETCH_SECTION))

static void
fetch_free(void *arg)
{
    struct fetch *f = arg;

    if (f == NULL)
        return;
    free(f->seqs);
    free(f->seen);
    buf_free(&f->scratch);
    buf_free(&f->rbuf);
    free(f);
}

/* The length of the top-level header with its blank line (RFC 5322 2.1):
 * up to and with the first empty line, or the whole message when there is
 * none. */
size_t
imap_fetch_header_len(const char *d, size_t len)
{
    const char *p = d, *end = d + len;

    if (len >= 2 && d[0] == '\r' && d[1] == '\n')
        return 2;
    if (len >= 1 && d[0] == '\n')
        return 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));

        if (nl == NULL)
            break;
        p = nl + 1;
        if (p < end && *p == '\n')
            return (size_t)(p + 1 - d);
        if (p + 1 < end && p[0] == '\r' && p[1] == '\n')
            return (size_t)(p + 2 - d);
    }
    return len;
}

/* Whether att's octets can be found without the MIME tree. */
static bool
simple_section(const struct imap_fetch_att *a)
{
    if (a->item == IMAP_FETCH_RFC822 || a->item == IMAP_FETCH_RFC822_HEADER ||
        a->item == IMAP_FETCH_RFC822_TEXT)
        return true;
    return a->item == IMAP_FETCH_SECTION && a->sec.nparts == 0 &&
           (a->sec.spec == IMAP_SEC_WHOLE || a->sec.spec == IMAP_SEC_HEADER ||
            a->sec.spec == IMAP_SEC_TEXT);
}

static void
simple_data(const struct imap_fetch_att *a, const struct imap_mdata *m,
            const char **data, size_t *len)
{
    size_t h;
    enum imap_section_spec spec =
        a->item == IMAP_FETCH_RFC822_HEADER ? IMAP_SEC_HEADER
        : a->item == IMAP_FETCH_RFC822_TEXT ? IMAP_SEC_TEXT
        : a->item == IMAP_FETCH_RFC822      ? IMAP_SEC_WHOLE
                                            : a->sec.spec;

    *data = m->data;
    *len = m->len;
    if (spec == IMAP_SEC_WHOLE)
        return;
    h = imap_fetch_header_len(m->data, m->len);
    if (spec == IMAP_SEC_HEADER) {
        *len = h;
    } else {
        *data = m->data + h;
        *len = m->len - h;
    }
}

/* Whether att needs no more of the message than its top-level header. */
static bool
head_att(const struct imap_fetch_att *a)
{
    switch (a->item) {
    case IMAP_FETCH_ENVELOPE:
    case IMAP_FETCH_RFC822_HEADER:
        return true;
    case IMAP_FETCH_SECTION:
        return a->sec.nparts == 0 && (a->sec.spec == IMAP_SEC_HEADER ||
                                      a->sec.spec == IMAP_SEC_FIELDS ||
                                      a->sec.spec == IMAP_SEC_FIELDS_NOT);
    default:
        return !((1u << a->item) & NEEDS_DATA);
    }
}

void
imap_mdata_release(struct imap_mdata *md)
{
    if (md->mapped)
        mstore_unmap(&md->map);
    md->mapped = false;
}

/* Reads up to want octets of fd into rbuf; the count or -1. */
static ssize_t
read_at_most(buf_t *rbuf, int fd, size_t want)
{
    size_t got = 0;

    buf_reset(rbuf);
    buf_reserve(rbuf, want);
    while (got < want) {
        ssize_t n = pread(fd, rbuf->data + got, want - got, (off_t)got);

        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* --- the header cache ------------------------------------------------- */

/* Headers longer than this are not kept. */
#define HCACHE_ENTRY_MAX 16384

struct hentry {
    struct hentry *older, *newer;
    char *key;
    size_t len;
    char data[];
};

struct hcache {
    zhashx_t *map; /* key -> struct hentry */
    struct hentry *oldest, *newest;
    size_t bytes;
    uint64_t hits, misses;
};

struct hcache *
imap_hcache_new(void)
{
    struct hcache *hc = xcalloc(1, sizeof(*hc));

    hc->map = zhashx_new();
    return hc;
}

void
imap_hcache_destroy(struct hcache **hc_p)
{
    struct hcache *hc = *hc_p;

    if (hc == NULL)
        return;
    while (hc->oldest) {
        struct hentry *e = hc->oldest;

        hc->oldest = e->newer;
        free(e->key);
        free(e);
    }
    log_info(NULL, "imap_hcache", "hits=%llu misses=%llu",
             (unsigned long long)hc->hits, (unsigned long long)hc->misses);
    zhashx_destroy(&hc->map);
    free(hc);
    *hc_p = NULL;
}

/* A message is named by its folder, UIDVALIDITY and UID, and its size and
 * date as well, so that a folder made again under the same name (and,
 * within a second, maybe the same UIDVALIDITY) never meets another's. */
static void
hcache_key(struct isess *s, uint32_t seq, char *key, size_t keylen)
{
    const struct mstore_msg *m = mstore_view_msg(s->view, seq);

    snprintf(key, keylen, "%u/%u/%llu/%lld/%s",
             mstore_view_uidvalidity(s->view), m ? m->uid : 0,
             m ? (unsigned long long)m->size : 0ULL,
             m ? (long long)m->date : 0LL, mstore_view_path(s->view));
}

static void
hcache_put(struct hcache *hc, const char *key, const char *data, size_t len)
{
    struct hentry *e;

    if (len > HCACHE_ENTRY_MAX || zhashx_lookup(hc->map, key))
        return;
    while (hc->oldest && hc->bytes + len > IMAP_HCACHE_BYTES) {
        struct hentry *old = hc->oldest;

        hc->oldest = old->newer;
        if (hc->oldest)
            hc->oldest->older = NULL;
        else
            hc->newest = NULL;
        hc->bytes -= old->len;
        zhashx_delete(hc->map, old->key);
        free(old->key);
        free(old);
    }
    e = xmalloc(sizeof(*e) + len);
    memcpy(e->data, data, len);
    e->len = len;
    e->older = hc->newest;
    e->newer = NULL;
    if (hc->newest)
        hc->newest->newer = e;
    else
        hc->oldest = e;
    hc->newest = e;
    hc->bytes += len;
    e->key = xstrdup(key);
    zhashx_insert(hc->map, key, e);
}

int
imap_mdata_load(struct isess *s, buf_t *rbuf, uint32_t seq, uint64_t size,
                bool head_only, struct imap_mdata *md)
{
    struct hcache *hc = s->im->hcache;
    char key[PATH_MAX + 128];
    struct hentry *e;
    size_t h;
    int fd;
    ssize_t n;

    memset(md, 0, sizeof(*md));
    key[0] = '\0';
    if (head_only && hc) {
        hcache_key(s, seq, key, sizeof(key));
        if ((e = zhashx_lookup(hc->map, key)) != NULL) {
            hc->hits++;
            md->data = e->data;
            md->len = e->len;
            return 0;
        }
        hc->misses++;
    }
    if (size > READ_MAX && !head_only)
        goto map;
    if (mstore_open_msg(s->view, seq, &fd) != 0)
        return ERR_NOTFOUND;
    if (head_only && size > HEAD_READ) {
        /* The first pages; the header ends there, or all is read. */
        n = read_at_most(rbuf, fd, HEAD_READ);
        if (n > 0 &&
            (h = imap_fetch_header_len(rbuf->data, (size_t)n)) < (size_t)n) {
            close(fd);
            md->data = rbuf->data;
            md->len = (size_t)n;
            if (hc)
                hcache_put(hc, key, rbuf->data, h);
            return 0;
        }
        if (size > READ_MAX) {
            close(fd);
            goto map;
        }
    }
    /* One octet more than the index says: a file that is longer than
     * that (the index is wrong) is mapped whole instead. */
    n = read_at_most(rbuf, fd, (size_t)size + 1);
    close(fd);
    if (n < 0)
        return ERR_NOTFOUND;
    if ((uint64_t)n <= size) {
        md->data = rbuf->data;
        md->len = (size_t)n;
        if (head_only && hc)
            hcache_put(hc, key, rbuf->data,
                       imap_fetch_header_len(rbuf->data, (size_t)n));
        return 0;
    }
map:
    if (mstore_map(s->view, seq, &md->map) != 0)
        return ERR_NOTFOUND;
    md->mapped = true;
    md->data = md->map.data;
    md->len = md->map.len;
    return 0;
}

/* Writes one message's FETCH response; false when it was gone. */
static bool
fetch_one(struct isess *s, struct fetch *f, uint32_t seq)
{
    const struct imap_fetch_args *fa = &s->cmd->fetch;
    const struct mstore_msg *m = mstore_view_msg(s->view, seq);
    struct mstore_msg msgc, *msg = &msgc;
    struct imap_mdata map;
    imap_mime_t *mime = NULL;
    bool mapped = false, flags_done = false, seen_now = false;
    buf_t b = BUF_INIT;

    if (m == NULL || m->expunged)
        return false;
    msgc = *m; /* borrowed until the view's next call */
    while (f->iseen < f->nseen && f->seen[f->iseen] < seq)
        f->iseen++;
    seen_now = f->iseen < f->nseen && f->seen[f->iseen] == seq;
    if (fa->items & NEEDS_DATA) {
        if (imap_mdata_load(s, &f->rbuf, seq, msg->size, f->head_only, &map) !=
            0)
            return false;
        mapped = true;
    }
    imap_server_fetch_begin(s->srv, seq);
    for (size_t k = 0; k < fa->natt; k++) {
        const struct imap_fetch_att *a = &fa->att[k];
        const char *data;
        size_t len;

        switch (a->item) {
        case IMAP_FETCH_UID:
            imap_server_fetch_uid(s->srv, msg->uid);
            break;
        case IMAP_FETCH_FLAGS:
            imap_server_fetch_flags(s->srv,
                                    mstore_view_flags_str(s->view, seq));
            flags_done = true;
            break;
        case IMAP_FETCH_INTERNALDATE:
            imap_server_fetch_internaldate(s->srv, msg->date, 0);
            break;
        case IMAP_FETCH_RFC822_SIZE:
            imap_server_fetch_size(s->srv, msg->size);
            break;
        case IMAP_FETCH_ENVELOPE:
        case IMAP_FETCH_BODY:
        case IMAP_FETCH_BODYSTRUCTURE:
            if (mime == NULL)
                mime = imap_mime_parse(map.data, map.len);
            buf_reset(&b);
            if (a->item == IMAP_FETCH_ENVELOPE)
                imap_mime_envelope(mime, &b);
            else
                imap_mime_bodystructure(
                    mime, a->item == IMAP_FETCH_BODYSTRUCTURE, &b);
            imap_server_fetch_item(s->srv,
                                   a->item == IMAP_FETCH_ENVELOPE ? "ENVELOPE"
                                   : a->item == IMAP_FETCH_BODY
                                       ? "BODY"
                                       : "BODYSTRUCTURE",
                                   b.data ? b.data : "", b.len);
            break;
        case IMAP_FETCH_RFC822:
        case IMAP_FETCH_RFC822_HEADER:
        case IMAP_FETCH_RFC822_TEXT:
        case IMAP_FETCH_SECTION:
            if (simple_section(a)) {
                simple_data(a, &map, &data, &len);
            } else {
                if (mime == NULL)
                    mime = imap_mime_parse(map.data, map.len);
                buf_reset(&f->scratch);
                if (!imap_mime_section(mime, &a->sec, &f->scratch, &data, &len))
                    data = NULL, len = 0;
            }
            imap_server_fetch_section(s->srv, a, data, len);
            break;
        }
    }
    /* RFC 3501 6.4.5: a fetch that sets \Seen reports the flags. */
    if (seen_now && !flags_done)
        imap_server_fetch_flags(s->srv, mstore_view_flags_str(s->view, seq));
    imap_server_fetch_end(s->srv);
    buf_free(&b);
    imap_mime_destroy(&mime);
    if (mapped)
        imap_mdata_release(&map);
    return true;
}

static void
fetch_work(struct isess *s)
{
    struct fetch *f = s->work_arg;

    while (f->i < f->n && imap_sess_out_len(s) < IMAP_PACE_BYTES) {
        if (!fetch_one(s, f, f->seqs[f->i]))
            f->expunged = true;
        f->i++;
    }
    if (f->i < f->n)
        return;
    if (f->expunged)
        /* RFC 5530 3: some of the messages were expunged meanwhile. */
        imap_sess_complete(s, IMAP_NO, "EXPUNGEISSUED",
                           "Some of the requested messages no longer exist");
    else
        imap_sess_complete(s, IMAP_OK, NULL, NULL);
    fetch_free(f);
}

void
imap_fetch_start(struct isess *s, const struct imap_cmd *c)
{
    struct fetch *f;
    const uint32_t *seqs;
    size_t n;
    int rc = mstore_view_resolve(s->view, &c->fetch.set, c->uid, &seqs, &n);

    if (rc == ERR_INVAL) {
        /* RFC 3501 9: a number past EXISTS is a syntax error. */
        imap_sess_complete(s, IMAP_BAD, NULL, "Invalid message sequence");
        return;
    }
    if (rc != 0) {
        imap_sess_complete(s, IMAP_NO, "SERVERBUG", "Cannot read the folder");
        return;
    }
    f = xcalloc(1, sizeof(*f));
    if (n > 0) {
        f->seqs = xmalloc(n * sizeof(*f->seqs));
        memcpy(f->seqs, seqs, n * sizeof(*f->seqs));
    }
    f->n = n;
    f->head_only = true;
    for (size_t k = 0; k < c->fetch.natt; k++)
        if (!head_att(&c->fetch.att[k]))
            f->head_only = false;
    if (c->fetch.sets_seen && n > 0 && !mstore_view_read_only(s->view)) {
        const uint32_t *ch;
        size_t nch;

        if (mstore_view_set_seen(s->view, f->seqs, n, &ch, &nch) == 0 &&
            nch > 0) {
            f->seen = xmalloc(nch * sizeof(*f->seen));
            memcpy(f->seen, ch, nch * sizeof(*f->seen));
            f->nseen = nch;
        }
    }
    s->work = fetch_work;
    s->work_free = fetch_free;
    s->work_arg = f;
    fetch_work(s);
}
