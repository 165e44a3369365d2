/*
 * The index of one folder ("samotop-uidlist") and its sync with the
 * Maildir's new/ and cur/. See mstore.h for the rules and mstore_int.h
 * for the structures.
 *
 * The file is text, so that an administrator can read it:
 *
 *     samotop-uidlist 1 UIDVALIDITY UIDNEXT NEW_MTIME_NS CUR_MTIME_NS VERIFY_NS
 *     K $Junk $NotJunk
 *     UID n|c SIZE DATE KEYWORDS_HEX FILE_NAME
 *     ...
 *
 * The two mtimes are those new/ and cur/ had when last scanned: while
 * they and the file are unchanged, the index is current and no directory
 * is read. When the store itself changed cur/ (flags, expunges, claims),
 * it stamps cur/ as it left it without reading it again, and VERIFY_NS
 * (nonzero) says when cur/ is to be read once more all the same, in case
 * another Maildir program changed it at that very moment.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "mstore_int.h"

/* A directory changed less than this long before it was stamped may
 * change again within the same timestamp tick unseen: such a stamp is not
 * kept, so that the next sync reads the directory again. Linux stamps
 * directories from a clock that moves by one tick (at most 10 ms); this
 * is ten ticks and more. */
#define RACY_NS (200LL * 1000000LL)

/* The letters of the system flags, in the order of the MSTORE_F_* bits. */
static const char flag_letters[] = "RFTSD";

/*
 * File names.
 */

size_t
mname_base_len(const char *name)
{
    const char *c = strchr(name, ':');

    return c != NULL ? (size_t)(c - name) : strlen(name);
}

unsigned
mname_flags(const char *name)
{
    const char *info = strstr(name, ":2,");
    unsigned flags = 0;

    if (info == NULL)
        return 0;
    for (info += 3; *info != '\0'; info++) {
        const char *l = strchr(flag_letters, *info);

        if (l != NULL && *info != '\0')
            flags |= 1u << (l - flag_letters);
    }
    return flags;
}

static int
cmp_char(const void *a, const void *b)
{
    return *(const unsigned char *)a - *(const unsigned char *)b;
}

char *
mname_with_flags(const char *name, unsigned flags)
{
    size_t blen = mname_base_len(name);
    const char *info = strstr(name, ":2,");
    char letters[64];
    size_t n = 0;

    /* The Maildir spec: "2," then the flags in ASCII order; letters we
     * do not know (Dovecot's keyword letters, P) are kept. */
    if (info != NULL && (size_t)(info - name) == blen) {
        for (info += 3; *info != '\0' && n < sizeof(letters) - 8; info++)
            if (strchr(flag_letters, *info) == NULL && *info != ',' &&
                memchr(letters, *info, n) == NULL)
                letters[n++] = *info;
    }
    for (unsigned i = 0; flag_letters[i] != '\0'; i++)
        if (flags & (1u << i))
            letters[n++] = flag_letters[i];
    qsort(letters, n, 1, cmp_char);
    return xasprintf("%.*s:2,%.*s", (int)blen, name, (int)n, letters);
}

int64_t
mname_size(const char *name)
{
    size_t blen = mname_base_len(name);
    const char *s = name;
    int64_t v = -1;

    /* ",S=<size>" among the base name's ","-separated fields (Maildir++,
     * as Courier and Dovecot write it). */
    while ((s = strstr(s, ",S=")) != NULL && (size_t)(s - name) < blen) {
        const char *p = s + 3;
        int64_t n = 0;

        if (*p >= '0' && *p <= '9') {
            while (*p >= '0' && *p <= '9' && n < INT64_MAX / 16)
                n = n * 10 + (*p++ - '0');
            if (*p == ',' || *p == ':' || *p == '\0')
                v = n;
        }
        s = p;
    }
    return v;
}

/*
 * The index in memory.
 */

static bool
in_arena(const struct mindex *ix, const char *name)
{
    /* Compared as integers: pointers into different blocks do not
     * compare in C. */
    uintptr_t a = (uintptr_t)ix->arena, p = (uintptr_t)name;

    return ix->arena != NULL && p >= a && p < a + ix->arena_len;
}

void
mindex_name_free(const struct mindex *ix, struct mentry *e)
{
    if (!in_arena(ix, e->name))
        free(e->name);
    e->name = NULL;
}

char *
mindex_name_take(const struct mindex *ix, struct mentry *e)
{
    char *name = in_arena(ix, e->name) ? xstrdup(e->name) : e->name;

    e->name = NULL;
    return name;
}

void
mindex_clear(struct mindex *ix)
{
    for (size_t i = 0; i < ix->n; i++)
        mindex_name_free(ix, &ix->e[i]);
    for (unsigned i = 0; i < ix->nkeywords; i++)
        free(ix->keywords[i]);
    free(ix->e);
    free(ix->arena);
    memset(ix, 0, sizeof(*ix));
}

struct mentry *
mindex_find(const struct mindex *ix, uint32_t uid)
{
    size_t lo = 0, hi = ix->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (ix->e[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n && ix->e[lo].uid == uid ? &ix->e[lo] : NULL;
}

int
mindex_keyword(struct mindex *ix, const char *kw, bool add)
{
    for (unsigned i = 0; i < ix->nkeywords; i++)
        if (strcasecmp(ix->keywords[i], kw) == 0)
            return (int)i;
    if (!add || ix->nkeywords >= MSTORE_KEYWORDS_MAX)
        return -1;
    ix->keywords[ix->nkeywords] = xstrdup(kw);
    return (int)ix->nkeywords++;
}

static struct mentry *
mindex_push(struct mindex *ix)
{
    if (ix->n == ix->cap) {
        ix->cap = ix->cap ? ix->cap * 2 : 64;
        ix->e = xrealloc(ix->e, ix->cap * sizeof(*ix->e));
    }
    memset(&ix->e[ix->n], 0, sizeof(ix->e[0]));
    return &ix->e[ix->n++];
}

/*
 * The index file.
 */

/* A keyword in the file: an IMAP atom (RFC 3501 9, "flag-keyword"). */
static bool
keyword_ok(const char *s, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
            return false;
    }
    return true;
}

/* A file name in the file: what a Maildir holds, nothing that walks. */
static bool
file_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > 255 || s[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f || c == '/')
            return false;
    }
    return true;
}

/* The next space-separated token of line [*p, end): its start and length;
 * false when there is none. */
static bool
token(const char **p, const char *end, const char **tok, size_t *len)
{
    const char *s = *p, *e;

    if (s >= end || *s == ' ')
        return false;
    e = memchr(s, ' ', (size_t)(end - s));
    if (e == NULL)
        e = end;
    *tok = s;
    *len = (size_t)(e - s);
    *p = e < end ? e + 1 : end;
    return true;
}

/* The next space-separated number of line [*p, end) in base 10 or 16,
 * at most max; SELECT of a big folder parses a few per message, so the
 * digits are read in place. */
static bool
next_u64(const char **p, const char *end, int base, uint64_t max, uint64_t *out)
{
    const char *s = *p, *start = s;
    uint64_t v = 0;

    for (; s < end && *s != ' '; s++) {
        unsigned d;
        char c = *s;

        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return false;
        /* 19 decimal or 16 hex digits cannot overflow; past that, check. */
        if (s - start >= (base == 10 ? 19 : 16) &&
            (s - start >= 20 || v > (UINT64_MAX - d) / (uint64_t)base))
            return false;
        v = v * (uint64_t)base + d;
    }
    if (s == start || v > max)
        return false;
    *out = v;
    *p = s < end ? s + 1 : end;
    return true;
}

int
mindex_parse(struct mindex *ix, const char *data, size_t len,
             size_t messages_max, char *why, size_t whylen)
{
    char *copy = xmalloc(len + 1);

    memcpy(copy, data, len);
    copy[len] = '\0';
    return mindex_parse_take(ix, &copy, len, messages_max, why, whylen);
}

int
mindex_parse_take(struct mindex *ix, char **data_p, size_t len,
                  size_t messages_max, char *why, size_t whylen)
{
    char *data = *data_p;
    const char *p = data, *end = data + len;
    size_t lineno = 0;
    uint64_t v[6] = {0};
    const char *t;
    size_t tlen;

    *data_p = NULL;
    mindex_clear(ix);
    /* Set now, so that names in it are known as its own to mindex_clear()
     * should the parse fail half-way. */
    ix->arena = data;
    ix->arena_len = len + 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *q = p, *le;

        lineno++;
        if (nl == NULL) {
            snprintf(why, whylen, "line %zu: no end of line", lineno);
            goto bad;
        }
        le = nl;
        if ((size_t)(le - p) > MSTORE_LINE_MAX) {
            snprintf(why, whylen, "line %zu: too long", lineno);
            goto bad;
        }
        if (lineno == 1) {
            if (!token(&q, le, &t, &tlen) || tlen != sizeof(MSTORE_INDEX) - 1 ||
                memcmp(t, MSTORE_INDEX, tlen) != 0 ||
                !next_u64(&q, le, 10, UINT32_MAX, &v[0]) ||
                v[0] != MSTORE_INDEX_VERSION ||
                !next_u64(&q, le, 10, UINT32_MAX, &v[1]) || v[1] == 0 ||
                !next_u64(&q, le, 10, UINT32_MAX, &v[2]) || v[2] == 0 ||
                !next_u64(&q, le, 10, INT64_MAX, &v[3]) ||
                !next_u64(&q, le, 10, INT64_MAX, &v[4]) ||
                /* VERIFY_NS came later: an index without it has 0. */
                (q != le && !next_u64(&q, le, 10, INT64_MAX, &v[5])) ||
                q != le) {
                snprintf(why, whylen, "line 1: bad header");
                goto bad;
            }
            ix->uidvalidity = (uint32_t)v[1];
            ix->uidnext = (uint32_t)v[2];
            ix->new_mtime_ns = (int64_t)v[3];
            ix->cur_mtime_ns = (int64_t)v[4];
            ix->cur_verify_ns = (int64_t)v[5];
        } else if (lineno == 2) {
            if (!token(&q, le, &t, &tlen) || tlen != 1 || *t != 'K') {
                snprintf(why, whylen, "line 2: no keyword list");
                goto bad;
            }
            while (q < le) {
                if (!token(&q, le, &t, &tlen) || !keyword_ok(t, tlen) ||
                    ix->nkeywords >= MSTORE_KEYWORDS_MAX) {
                    snprintf(why, whylen, "line 2: bad keyword");
                    goto bad;
                }
                ix->keywords[ix->nkeywords++] = xstrndup(t, tlen);
            }
        } else {
            struct mentry *e;

            if (ix->n >= messages_max) {
                snprintf(why, whylen, "over %zu messages", messages_max);
                goto bad;
            }
            if (!next_u64(&q, le, 10, UINT32_MAX, &v[0]) || v[0] == 0 ||
                v[0] >= ix->uidnext ||
                (ix->n > 0 && v[0] <= ix->e[ix->n - 1].uid) ||
                !token(&q, le, &t, &tlen) || tlen != 1 ||
                (*t != 'n' && *t != 'c') ||
                !next_u64(&q, le, 10, INT64_MAX, &v[1]) ||
                !next_u64(&q, le, 10, INT64_MAX, &v[2]) ||
                !next_u64(&q, le, 16, UINT64_MAX, &v[3]) ||
                !file_name_ok(q, (size_t)(le - q))) {
                snprintf(why, whylen, "line %zu: bad message", lineno);
                goto bad;
            }
            if (ix->nkeywords < 64 && (v[3] >> ix->nkeywords) != 0) {
                snprintf(why, whylen, "line %zu: unknown keyword", lineno);
                goto bad;
            }
            e = mindex_push(ix);
            e->uid = (uint32_t)v[0];
            e->in_new = *t == 'n';
            e->size = v[1];
            e->date = (int64_t)v[2];
            e->keywords = v[3];
            /* In place: the line's end becomes the name's. */
            e->name = data + (q - data);
            e->name[le - q] = '\0';
            e->flags = e->in_new ? 0 : mname_flags(e->name);
        }
        p = nl + 1;
    }
    if (lineno < 2) {
        snprintf(why, whylen, "no header");
        goto bad;
    }
    return 0;
bad:
    mindex_clear(ix);
    return ERR_MALFORMED;
}

/* Writes v in base 10 or 16 (lower case) at p; returns the end. */
static char *
put_u64(char *p, uint64_t v, unsigned base)
{
    char tmp[24];
    size_t n = 0;

    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

void
mindex_format(const struct mindex *ix, struct buf *out)
{
    buf_reserve(out, 64 + ix->n * 80);
    buf_printf(out,
               "%s %d %" PRIu32 " %" PRIu32 " %" PRId64 " %" PRId64 " %" PRId64
               "\nK",
               MSTORE_INDEX, MSTORE_INDEX_VERSION, ix->uidvalidity, ix->uidnext,
               ix->new_mtime_ns, ix->cur_mtime_ns, ix->cur_verify_ns);
    for (unsigned i = 0; i < ix->nkeywords; i++)
        buf_printf(out, " %s", ix->keywords[i]);
    buf_addc(out, '\n');
    for (size_t i = 0; i < ix->n; i++) {
        const struct mentry *e = &ix->e[i];
        size_t nlen = strlen(e->name);
        char *p;

        /* By hand, not printf: every change writes every line, and a big
         * folder has 100,000 of them. */
        buf_reserve(out, 4 * 21 + 4 + nlen + 2);
        p = out->data + out->len;
        p = put_u64(p, e->uid, 10);
        *p++ = ' ';
        *p++ = e->in_new ? 'n' : 'c';
        *p++ = ' ';
        p = put_u64(p, e->size, 10);
        *p++ = ' ';
        p = put_u64(p, e->date > 0 ? (uint64_t)e->date : 0, 10);
        *p++ = ' ';
        p = put_u64(p, e->keywords, 16);
        *p++ = ' ';
        memcpy(p, e->name, nlen);
        p += nlen;
        *p++ = '\n';
        out->len = (size_t)(p - out->data);
        out->data[out->len] = '\0';
    }
}

/*
 * Stamps and the lock.
 */

static int64_t
ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

static void
stamp_of(const struct stat *st, struct mstamp *s)
{
    s->ino = (uint64_t)st->st_ino;
    s->size = (uint64_t)st->st_size;
    s->mtime_ns = ts_ns(&st->st_mtim);
    s->ctime_ns = ts_ns(&st->st_ctim);
}

static bool
stamp_eq(const struct mstamp *a, const struct mstamp *b)
{
    return a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

/* A directory's mtime to keep in the index, or 0 while it is too fresh
 * to trust (see RACY_NS). */
static int64_t
dir_stamp(const struct stat *st)
{
    struct timespec now;
    int64_t m = ts_ns(&st->st_mtim);

    clock_gettime(CLOCK_REALTIME, &now);
    return ts_ns(&now) - m < RACY_NS ? 0 : m;
}

int
mfolder_lock_file(int dir_fd)
{
    int fd = openat(dir_fd, MSTORE_INDEX_LOCK,
                    O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);

    /* Ours by name: a symlink planted there goes (never followed). */
    if (fd < 0 && errno == ELOOP && unlinkat(dir_fd, MSTORE_INDEX_LOCK, 0) == 0)
        fd = openat(dir_fd, MSTORE_INDEX_LOCK,
                    O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    return fd >= 0 ? fd : -errno;
}

int
mfolder_lock(mstore_t *ms, struct mfolder *f)
{
    if (f->lock_depth++ > 0)
        return 0;
    f->lock_fd = mfolder_lock_file(f->dir_fd);
    if (f->lock_fd < 0) {
        errno = -f->lock_fd;
        f->lock_fd = -1;
        f->lock_depth = 0;
        return mstore_fail(ms, ERR_SYS, "SERVERBUG",
                           "cannot lock the folder index: %s", strerror(errno));
    }
    while (flock(f->lock_fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            int e = errno;

            close(f->lock_fd);
            f->lock_fd = -1;
            f->lock_depth = 0;
            return mstore_fail(ms, ERR_SYS, "SERVERBUG",
                               "cannot lock the folder index: %s", strerror(e));
        }
    }
    return 0;
}

void
mfolder_unlock(struct mfolder *f)
{
    if (f->lock_depth == 0 || --f->lock_depth > 0)
        return;
    close(f->lock_fd); /* drops the lock */
    f->lock_fd = -1;
}

int
mfolder_tmp(struct mfolder *f)
{
    int fd = openat(f->dir_fd, "tmp",
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    return fd >= 0 ? fd : -errno;
}

uint32_t
mstore_next_uidvalidity(mstore_t *ms)
{
    char text[32];
    uint64_t last = 0, now = (uint64_t)time(NULL), v;
    ssize_t n;
    int fd;

    /* RFC 3501 2.3.1.1: a name's UIDVALIDITY must change when its UIDs
     * do. The account keeps the last one given, so a folder deleted and
     * made again in the same second still gets a new one. */
    fd = openat(ms->acct_fd, MSTORE_UIDVALIDITY,
                O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return (uint32_t)(now ? now : 1);
    while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
        ;
    n = pread(fd, text, sizeof(text) - 1, 0);
    if (n > 0) {
        text[n] = '\0';
        last = strtoull(text, NULL, 10);
    }
    v = now > last ? now : last + 1;
    if (v > UINT32_MAX || v == 0)
        v = 1; /* after 2106, or a bad file: start again low */
    n = snprintf(text, sizeof(text), "%" PRIu64 "\n", v);
    if (pwrite(fd, text, (size_t)n, 0) != n || ftruncate(fd, n) != 0)
        log_warn(ms->trace, "mstore.uidvalidity_write", "mailbox=%s errno=%d",
                 ms->mailbox, errno);
    close(fd); /* drops the lock */
    return (uint32_t)v;
}

/*
 * Reading and writing the file.
 */

/* Keeps the index file last read or written open, so that its inode
 * cannot be given to a later index while the stamp names it: two writes
 * by others within one timestamp tick, of the same size, would otherwise
 * look like no change at all. */
static void
hold_index(struct mfolder *f, int fd)
{
    if (f->index_fd >= 0)
        close(f->index_fd);
    f->index_fd = fd;
}

/* Reads the index file into f->ix: 0, ERR_NOTFOUND when there is none,
 * ERR_MALFORMED when it cannot be used (the reason in why), ERR_SYS. */
static int
index_read(mstore_t *ms, struct mfolder *f, char *why, size_t whylen)
{
    struct stat st;
    size_t max = 4096 + ms->lim.messages_max * (MSTORE_LINE_MAX / 8);
    char *data;
    size_t got = 0;
    int fd, rc;

    fd = openat(f->dir_fd, MSTORE_INDEX, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ELOOP) {
        snprintf(why, whylen, "a symlink");
        return ERR_MALFORMED; /* replaced by the next write */
    }
    if (fd < 0)
        return errno == ENOENT ? ERR_NOTFOUND : ERR_SYS;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(why, whylen, "not a file");
        return ERR_MALFORMED;
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        snprintf(why, whylen, "too big (%jd octets)", (intmax_t)st.st_size);
        return ERR_MALFORMED;
    }
    data = xmalloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, data + got, (size_t)st.st_size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;

            free(data);
            close(fd);
            errno = e;
            return ERR_SYS;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    data[got] = '\0';
    rc = mindex_parse_take(&f->ix, &data, got, ms->lim.messages_max, why,
                           whylen);
    if (rc != 0) {
        close(fd);
        return ERR_MALFORMED;
    }
    stamp_of(&st, &f->stamp);
    hold_index(f, fd);
    return 0;
}

int
mfolder_write(mstore_t *ms, struct mfolder *f)
{
    buf_t b = BUF_INIT;
    struct stat st;
    size_t off = 0;
    int fd, rc = 0;

    mindex_format(&f->ix, &b);
    fd = openat(f->dir_fd, MSTORE_INDEX_TMP,
                O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    /* Ours by name: a symlink planted there goes (never followed). */
    if (fd < 0 && errno == ELOOP &&
        unlinkat(f->dir_fd, MSTORE_INDEX_TMP, 0) == 0)
        fd =
            openat(f->dir_fd, MSTORE_INDEX_TMP,
                   O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = mstore_fail(ms, ERR_SYS, "SERVERBUG",
                         "cannot write the folder index: %s", strerror(errno));
        goto out;
    }
    while (off < b.len) {
        ssize_t n = write(fd, b.data + off, b.len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = mstore_fail(ms, ERR_SYS, "SERVERBUG",
                             "cannot write the folder index: %s",
                             strerror(errno));
            close(fd);
            goto out;
        }
        off += (size_t)n;
    }
    if (renameat(f->dir_fd, MSTORE_INDEX_TMP, f->dir_fd, MSTORE_INDEX) != 0) {
        rc = mstore_fail(ms, ERR_SYS, "SERVERBUG",
                         "cannot write the folder index: %s", strerror(errno));
        close(fd);
        goto out;
    }
    /* A rename changes the file's ctime: stamp it as it now stands. */
    if (fstat(fd, &st) == 0)
        stamp_of(&st, &f->stamp);
    hold_index(f, fd);
    f->loaded = true;
out:
    buf_free(&b);
    return rc;
}

/*
 * Scanning new/ and cur/.
 */

struct found {
    char *name;
    bool in_new;
};

static uint64_t
hash_base(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

struct htab {
    uint32_t *slot; /* entry index + 1; 0 empty */
    size_t mask;
};

static void
htab_build(struct htab *h, const struct mindex *ix)
{
    size_t size = 64;

    while (size < ix->n * 2 + 2)
        size *= 2;
    h->slot = xcalloc(size, sizeof(*h->slot));
    h->mask = size - 1;
    for (size_t i = 0; i < ix->n; i++) {
        const char *name = ix->e[i].name;
        size_t blen = mname_base_len(name);
        size_t s = (size_t)hash_base(name, blen) & h->mask;

        while (h->slot[s] != 0)
            s = (s + 1) & h->mask;
        h->slot[s] = (uint32_t)(i + 1);
    }
}

static struct mentry *
htab_find(const struct htab *h, struct mindex *ix, const char *name,
          size_t blen)
{
    size_t s = (size_t)hash_base(name, blen) & h->mask;

    for (; h->slot[s] != 0; s = (s + 1) & h->mask) {
        struct mentry *e = &ix->e[h->slot[s] - 1];

        if (mname_base_len(e->name) == blen && memcmp(e->name, name, blen) == 0)
            return e;
    }
    return NULL;
}

static int
cmp_found(const void *a, const void *b)
{
    /* Numbers compared as numbers: "1.M5P1" before "1.M123P1", so that
     * UIDs follow the order of delivery within a second too. */
    return strverscmp(((const struct found *)a)->name,
                      ((const struct found *)b)->name);
}

/* Reads one of new/ and cur/, matching its files with f->ix by base name:
 * known ones are marked seen (and renamed in the index when their name
 * changed), others go to *found. */
static int
scan_dir(mstore_t *ms, struct mfolder *f, const struct htab *h, bool is_new,
         struct found **found, size_t *nfound, size_t *capfound, bool *changed)
{
    int fd = dup(is_new ? f->new_fd : f->cur_fd);
    struct dirent *d;
    DIR *dir;

    if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
        if (fd >= 0)
            close(fd);
        return mstore_fail(ms, ERR_SYS, "SERVERBUG",
                           "cannot read the folder: %s", strerror(errno));
    }
    rewinddir(dir);
    while ((d = readdir(dir)) != NULL) {
        const char *name = d->d_name;
        size_t blen = mname_base_len(name);
        struct mentry *e;

        if (name[0] == '.' || blen == 0 || !file_name_ok(name, strlen(name)))
            continue;
        if (d->d_type != DT_REG) {
            struct stat st;

            if (d->d_type != DT_UNKNOWN ||
                fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                !S_ISREG(st.st_mode))
                continue;
        }
        e = htab_find(h, &f->ix, name, blen);
        if (e != NULL) {
            if (e->seen_)
                continue; /* the same message in new/ and cur/ */
            e->seen_ = true;
            if (e->in_new != is_new || strcmp(e->name, name) != 0) {
                mindex_name_free(&f->ix, e);
                e->name = xstrdup(name);
                e->in_new = is_new;
                e->flags = is_new ? 0 : mname_flags(name);
                *changed = true;
            }
            continue;
        }
        if (*nfound == *capfound) {
            *capfound = *capfound ? *capfound * 2 : 64;
            *found = xrealloc(*found, *capfound * sizeof(**found));
        }
        (*found)[*nfound].name = xstrdup(name);
        (*found)[(*nfound)++].in_new = is_new;
    }
    closedir(dir);
    return 0;
}

/* Matches the directories against f->ix: vanished files leave it (an
 * expunge), renamed ones keep their UID, new ones get the next UIDs in
 * the order of their names (a delivery's names sort by time). A directory
 * not read (its mtime unchanged) keeps its entries as they are: a file
 * moved between new/ and cur/ changes both. */
static int
scan(mstore_t *ms, struct mfolder *f, bool read_new, bool read_cur,
     bool *changed)
{
    struct found *found = NULL;
    size_t nfound = 0, capfound = 0, kept = 0;
    struct htab h;
    int rc = 0;
    bool warned = false;

    htab_build(&h, &f->ix);
    for (size_t i = 0; i < f->ix.n; i++)
        f->ix.e[i].seen_ = f->ix.e[i].in_new ? !read_new : !read_cur;
    if (read_new)
        rc = scan_dir(ms, f, &h, true, &found, &nfound, &capfound, changed);
    if (rc == 0 && read_cur)
        rc = scan_dir(ms, f, &h, false, &found, &nfound, &capfound, changed);
    free(h.slot);
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < f->ix.n; i++) {
        if (f->ix.e[i].seen_)
            f->ix.e[kept++] = f->ix.e[i];
        else
            mindex_name_free(&f->ix, &f->ix.e[i]);
    }
    if (kept != f->ix.n)
        *changed = true;
    f->ix.n = kept;
    if (nfound > 1)
        qsort(found, nfound, sizeof(*found), cmp_found);
    for (size_t i = 0; i < nfound; i++) {
        struct found *fo = &found[i];
        struct mentry *e;
        struct stat st;
        int64_t size;

        if (f->ix.n >= ms->lim.messages_max || f->ix.uidnext == UINT32_MAX) {
            if (!warned)
                log_warn(ms->trace, "mstore.folder_full",
                         "mailbox=%s folder=%s messages=%zu", ms->mailbox,
                         log_q(f->name), f->ix.n);
            warned = true;
            continue;
        }
        if (fstatat(fo->in_new ? f->new_fd : f->cur_fd, fo->name, &st,
                    AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode))
            continue; /* gone meanwhile */
        size = mname_size(fo->name);
        e = mindex_push(&f->ix);
        e->uid = f->ix.uidnext++;
        e->in_new = fo->in_new;
        e->name = fo->name;
        fo->name = NULL;
        e->flags = e->in_new ? 0 : mname_flags(e->name);
        e->size = size >= 0 ? (uint64_t)size : (uint64_t)st.st_size;
        e->date = (int64_t)st.st_mtim.tv_sec;
        *changed = true;
    }
out:
    for (size_t i = 0; i < nfound; i++)
        free(found[i].name);
    free(found);
    return rc;
}

static int64_t
now_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return ts_ns(&now);
}

/* Whether cur/, stamped by the store after its own change, is to be read
 * once more now. */
static bool
verify_due(const struct mfolder *f)
{
    return f->ix.cur_verify_ns != 0 && now_ns() >= f->ix.cur_verify_ns;
}

bool
mfolder_cur_known(struct mfolder *f)
{
    struct stat st;

    return f->ix.cur_mtime_ns != 0 && fstat(f->cur_fd, &st) == 0 &&
           f->ix.cur_mtime_ns == ts_ns(&st.st_mtim);
}

void
mfolder_cur_own(struct mfolder *f, bool known)
{
    struct stat st;

    if (!known || fstat(f->cur_fd, &st) != 0)
        return;
    /* XXX: a change by another program between mfolder_cur_known() and
     * here is taken for ours until the check below; reading a 100,000
     * message cur/ after every STORE is what this saves. */
    f->ix.cur_mtime_ns = ts_ns(&st.st_mtim);
    if (f->ix.cur_verify_ns == 0)
        f->ix.cur_verify_ns = now_ns() + MSTORE_VERIFY_NS;
}

/* Moves the messages in new/ to cur/ (":2," added): this sync's caller
 * is the session that has them as \Recent (RFC 3501 2.3.2). */
static void
claim(struct mfolder *f, uint32_t **claimed, size_t *nclaimed, bool *changed)
{
    size_t cap = *nclaimed;

    for (size_t i = 0; i < f->ix.n; i++) {
        struct mentry *e = &f->ix.e[i];
        char *to;

        if (!e->in_new)
            continue;
        to = mname_with_flags(e->name, 0);
        if (renameat(f->new_fd, e->name, f->cur_fd, to) != 0) {
            /* Gone, or moved by another tool: the next scan says. */
            free(to);
            f->ix.new_mtime_ns = f->ix.cur_mtime_ns = 0;
            *changed = true;
            continue;
        }
        mindex_name_free(&f->ix, e);
        e->name = to;
        e->in_new = false;
        e->flags = mname_flags(to);
        *changed = true;
        if (*nclaimed == cap) {
            cap = cap ? cap * 2 : 16;
            *claimed = xrealloc(*claimed, cap * sizeof(**claimed));
        }
        (*claimed)[(*nclaimed)++] = e->uid;
    }
}

/* Whether a file waits in new/; looked for once per change of the
 * index, since sessions ask on every command. */
static bool
any_new(struct mfolder *f)
{
    if (f->new_gen != f->gen + 1) {
        f->has_new = false;
        for (size_t i = 0; i < f->ix.n && !f->has_new; i++)
            f->has_new = f->ix.e[i].in_new;
        f->new_gen = f->gen + 1;
    }
    return f->has_new;
}

bool
mfolder_has_new(struct mfolder *f)
{
    return any_new(f);
}

void
mfolder_changed(struct mfolder *f)
{
    bool none_new = f->new_gen == f->gen + 1 && !f->has_new;

    f->gen++;
    if (none_new)
        f->new_gen = f->gen + 1;
}

/* Starts f->ix afresh with a new UIDVALIDITY: every file will be numbered
 * again by the scan. */
static void
index_fresh(mstore_t *ms, struct mfolder *f)
{
    mindex_clear(&f->ix);
    f->ix.uidvalidity = mstore_next_uidvalidity(ms);
    f->ix.uidnext = 1;
}

int
mfolder_sync(mstore_t *ms, struct mfolder *f, unsigned how, uint32_t **claimed,
             size_t *nclaimed)
{
    struct stat ist, nst, cst;
    struct mstamp stamp = {0}; /* read only when have_index */
    bool changed = false, have_index, read_new, read_cur;
    char why[128] = "";
    int rc = 0;

    if (claimed != NULL)
        *claimed = NULL;
    if (nclaimed != NULL)
        *nclaimed = 0;
    /* DELETE (here or in another process) unlinked the directory. */
    if (fstat(f->dir_fd, &ist) == 0 && ist.st_nlink == 0)
        return mstore_fail(ms, ERR_NOTFOUND, "NONEXISTENT",
                           "folder %s was deleted", f->name);
    have_index =
        fstatat(f->dir_fd, MSTORE_INDEX, &ist, AT_SYMLINK_NOFOLLOW) == 0;
    if (have_index)
        stamp_of(&ist, &stamp);
    if (fstat(f->new_fd, &nst) != 0 || fstat(f->cur_fd, &cst) != 0)
        return mstore_fail(ms, ERR_SYS, "SERVERBUG",
                           "cannot read the folder: %s", strerror(errno));
    /* The cheap way: nothing moved since the index was written. */
    if (!(how & MF_LOCKED) && f->loaded && have_index &&
        stamp_eq(&stamp, &f->stamp) && f->ix.new_mtime_ns != 0 &&
        f->ix.cur_mtime_ns != 0 && f->ix.new_mtime_ns == ts_ns(&nst.st_mtim) &&
        f->ix.cur_mtime_ns == ts_ns(&cst.st_mtim) && !verify_due(f) &&
        !((how & MF_CLAIM) && any_new(f)))
        return 0;

    if (!(how & MF_LOCKED) && (rc = mfolder_lock(ms, f)) != 0)
        return rc;
    have_index =
        fstatat(f->dir_fd, MSTORE_INDEX, &ist, AT_SYMLINK_NOFOLLOW) == 0;
    if (have_index)
        stamp_of(&ist, &stamp);
    if (!have_index) {
        /* None yet (a new folder), or removed by hand: number the files
         * afresh under a new UIDVALIDITY. */
        if (!f->loaded || f->ix.uidvalidity == 0 || f->ix.n > 0 ||
            f->stamp.ino != 0)
            index_fresh(ms, f);
        changed = true;
    } else if (!f->loaded || !stamp_eq(&stamp, &f->stamp)) {
        rc = index_read(ms, f, why, sizeof(why));
        if (rc == ERR_SYS) {
            /* Out of descriptors, or the like: try again later rather
             * than throw the UIDs away. */
            rc = mstore_fail(ms, ERR_SYS, "SERVERBUG",
                             "cannot read the folder index: %s",
                             strerror(errno));
            goto out;
        } else if (rc == ERR_NOTFOUND) {
            index_fresh(ms, f);
            changed = true;
        } else if (rc != 0) {
            /* RFC 3501 2.3.1.1: when the UIDs cannot be kept, the
             * UIDVALIDITY changes. */
            log_warn(ms->trace, "mstore.index_rebuilt",
                     "mailbox=%s folder=%s why=%s", ms->mailbox, log_q(f->name),
                     log_q(why[0] ? why : strerror(errno)));
            index_fresh(ms, f);
            changed = true;
        }
        rc = 0;
        f->loaded = true;
        f->gen++;
    }
    f->loaded = true;
    if (fstat(f->new_fd, &nst) != 0 || fstat(f->cur_fd, &cst) != 0) {
        rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot read the folder: %s",
                         strerror(errno));
        goto out;
    }
    read_new = changed || f->ix.new_mtime_ns == 0 ||
               f->ix.new_mtime_ns != ts_ns(&nst.st_mtim);
    read_cur = changed || f->ix.cur_mtime_ns == 0 ||
               f->ix.cur_mtime_ns != ts_ns(&cst.st_mtim) || verify_due(f);
    if (read_new || read_cur) {
        int64_t n_ns = dir_stamp(&nst), c_ns = dir_stamp(&cst);

        /* Stamped before reading: a change during the read shows as a
         * newer mtime next time. A delivery changes new/ alone, so the
         * big cur/ is read only when it changed too. */
        if ((rc = scan(ms, f, read_new, read_cur, &changed)) != 0)
            goto out;
        if (n_ns != f->ix.new_mtime_ns || c_ns != f->ix.cur_mtime_ns ||
            (read_cur && f->ix.cur_verify_ns != 0))
            changed = true;
        f->ix.new_mtime_ns = n_ns;
        f->ix.cur_mtime_ns = c_ns;
        if (read_cur)
            f->ix.cur_verify_ns = 0;
    }
    if (changed)
        f->gen++; /* any_new() looks again */
    if ((how & MF_CLAIM) && claimed != NULL && any_new(f)) {
        bool known = mfolder_cur_known(f);

        claim(f, claimed, nclaimed, &changed);
        /* Not when a move failed: then both directories are read. */
        mfolder_cur_own(f, known && *nclaimed > 0 && f->ix.cur_mtime_ns != 0);
    }
    if (changed) {
        f->gen++;
        rc = mfolder_write(ms, f);
    }
    /* Whether a file waits in new/, for the index as it is now: here,
     * while the entries are in the CPU's cache, rather than in the next
     * sync that finds nothing changed (a SELECT's). */
    (void)any_new(f);
out:
    if (!(how & MF_LOCKED))
        mfolder_unlock(f);
    return rc;
}
