/*
 * The account and its folders: opening the Maildir, folder names, LIST,
 * CREATE, DELETE, RENAME, subscriptions, STATUS and APPEND. The index is
 * in mstore_index.c, views in mstore_view.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "maildir.h"
#include "mstore_int.h"

/* Longest LIST reference plus pattern, and subscriptions file. */
#define PATTERN_MAX 1024
#define SUBSCRIPTIONS_MAX (1024 * 1024)
/* A Maildir++ folder a DELETE is emptying: never a valid folder name. */
#define TRASH_PREFIX "..deleted-"

static int subdir(int parent, const char *name, bool make);
static int make_maildir(int dir_fd);

/*
 * Errors.
 */

int
mstore_fail(mstore_t *ms, int err, const char *code, const char *fmt, ...)
{
    va_list ap;

    ms->err = err;
    snprintf(ms->err_code, sizeof(ms->err_code), "%s", code ? code : "");
    va_start(ap, fmt);
    vsnprintf(ms->err_text, sizeof(ms->err_text), fmt, ap);
    va_end(ap);
    return err;
}

void
mstore_ok(mstore_t *ms)
{
    ms->err_code[0] = ms->err_text[0] = '\0';
    ms->err = 0;
    ms->delta = 0;
}

const char *
mstore_err_code(const mstore_t *ms)
{
    return ms->err_code[0] ? ms->err_code : NULL;
}

const char *
mstore_err_text(const mstore_t *ms)
{
    return ms->err_text;
}

int64_t
mstore_bytes_delta(const mstore_t *ms)
{
    return ms->delta;
}

void
mstore_set_trace(mstore_t *ms, const char *trace)
{
    snprintf(ms->trace, sizeof(ms->trace), "%s", trace ? trace : "-");
}

/*
 * Opening the account.
 */

/* Opens (making it when make) the directory name under parent, never
 * through a symlink; returns the fd or -errno. */
static int
subdir(int parent, const char *name, bool make)
{
    int fd;

    fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT || !make)
        return fd >= 0 ? fd : -errno;
    if (mkdirat(parent, name, 0700) != 0 && errno != EEXIST)
        return -errno;
    fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

/* Makes tmp/, new/ and cur/ in dir_fd where missing. */
static int
make_maildir(int dir_fd)
{
    static const char *const sub[] = {"tmp", "new", "cur"};

    for (size_t i = 0; i < 3; i++) {
        if (mkdirat(dir_fd, sub[i], 0700) != 0 && errno != EEXIST)
            return -errno;
    }
    return 0;
}

/* The host part of file names, escaped as maildir.c does it. */
static void
host_name(char *out, size_t outlen)
{
    char host[256];
    size_t o = 0;

    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    for (const char *p = host; *p && o + 5 < outlen; p++) {
        unsigned char c = (unsigned char)*p;

        if (c <= 0x20 || c >= 0x7f || c == '/' || c == ':' || c == ',' ||
            c == '\\')
            o += (size_t)snprintf(out + o, outlen - o, "\\%03o", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

mstore_t *
mstore_open(const char *data_dir, const char *mailbox,
            const struct mstore_limits *lim, char *why, size_t whylen)
{
    const char *at = strchr(mailbox, '@');
    char local[MAILDIR_LOCAL_MAX + 1], domain[MAILDIR_DOMAIN_MAX + 1];
    int data_fd = -1, mail_fd = -1, dom_fd = -1, acct_fd = -1, rc;
    mstore_t *ms = NULL;

    if (!maildir_name_ok(mailbox, strlen(mailbox)) || at == NULL) {
        snprintf(why, whylen, "bad mailbox name");
        return NULL;
    }
    snprintf(local, sizeof(local), "%.*s", (int)(at - mailbox), mailbox);
    snprintf(domain, sizeof(domain), "%s", at + 1);
    data_fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (data_fd < 0) {
        snprintf(why, whylen, "open %s: %s", data_dir, strerror(errno));
        return NULL;
    }
    if ((mail_fd = subdir(data_fd, "mail", true)) < 0 ||
        (dom_fd = subdir(mail_fd, domain, true)) < 0 ||
        (acct_fd = subdir(dom_fd, local, true)) < 0 ||
        (rc = make_maildir(acct_fd)) < 0) {
        int e = mail_fd < 0   ? -mail_fd
                : dom_fd < 0  ? -dom_fd
                : acct_fd < 0 ? -acct_fd
                              : -rc;

        snprintf(why, whylen, "mailbox %s: %s", mailbox, strerror(e));
        goto out;
    }
    ms = xcalloc(1, sizeof(*ms));
    ms->mailbox = xstrdup(mailbox);
    ms->path = xasprintf("%s/mail/%s/%s", data_dir, domain, local);
    ms->acct_fd = acct_fd;
    acct_fd = -1;
    ms->lim.folders_max = MSTORE_FOLDERS_MAX;
    ms->lim.name_max = MSTORE_NAME_MAX;
    ms->lim.messages_max = MSTORE_MESSAGES_MAX;
    ms->lim.append_max = MSTORE_APPEND_MAX;
    ms->lim.cache_folders = MSTORE_CACHE_FOLDERS;
    ms->lim.cache_bytes = MSTORE_CACHE_BYTES;
    if (lim != NULL) {
        if (lim->folders_max)
            ms->lim.folders_max = lim->folders_max;
        if (lim->name_max)
            ms->lim.name_max = lim->name_max;
        if (lim->messages_max)
            ms->lim.messages_max = lim->messages_max;
        if (lim->append_max)
            ms->lim.append_max = lim->append_max;
        if (lim->cache_folders)
            ms->lim.cache_folders = lim->cache_folders;
        if (lim->cache_bytes)
            ms->lim.cache_bytes = lim->cache_bytes;
    }
    snprintf(ms->trace, sizeof(ms->trace), "-");
    host_name(ms->host, sizeof(ms->host));
out:
    if (acct_fd >= 0)
        close(acct_fd);
    if (dom_fd >= 0)
        close(dom_fd);
    if (mail_fd >= 0)
        close(mail_fd);
    close(data_fd);
    return ms;
}

void
msnap_put(struct msnap **s_p)
{
    struct msnap *s = *s_p;

    if (s == NULL)
        return;
    *s_p = NULL;
    if (--s->refs == 0)
        free(s);
}

static void
folder_free(struct mfolder *f)
{
    int *fds[] = {&f->dir_fd, &f->new_fd, &f->cur_fd, &f->lock_fd,
                  &f->index_fd};

    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (*fds[i] >= 0)
            close(*fds[i]);
    mindex_clear(&f->ix);
    msnap_put(&f->snap);
    free(f->name);
    free(f->mdname);
    free(f->path);
    free(f);
}

void
mstore_destroy(mstore_t **ms_p)
{
    mstore_t *ms = *ms_p;

    if (ms == NULL)
        return;
    close(ms->acct_fd);
    free(ms->mailbox);
    free(ms->path);
    free(ms);
    *ms_p = NULL;
}

void
mstore_unique_name(mstore_t *ms, uint64_t size, char *out, size_t outlen)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    snprintf(out, outlen, "%lld.M%ldP%ldQ%lu.%s,S=%" PRIu64,
             (long long)tv.tv_sec, (long)tv.tv_usec, (long)getpid(),
             ++ms->counter, ms->host, size);
}

/*
 * Folder names.
 */

static bool
is_inbox(const char *name)
{
    return strcasecmp(name, "INBOX") == 0;
}

/* Checks an IMAP folder name and gives its Maildir++ name ("" for INBOX)
 * in md (MAILDIR_FOLDER_MAX + 1 octets); NULL or the reason. */
static const char *
name_check(const mstore_t *ms, const char *name, char *md)
{
    size_t len = strlen(name);

    if (is_inbox(name)) {
        md[0] = '\0';
        return NULL;
    }
    if (len == 0)
        return "empty folder name";
    if (len > ms->lim.name_max || len + 1 > MAILDIR_FOLDER_MAX)
        return "folder name too long";
    if (name[0] == '/' || name[len - 1] == '/')
        return "folder name begins or ends with \"/\"";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];

        if (c < 0x20 || c >= 0x7f)
            return "control or 8-bit character in folder name (RFC 3501 "
                   "5.1.3: use modified UTF-7)";
        if (c == '.')
            return "\".\" is not allowed in folder names";
        if (c == '\\' || c == '*' || c == '%')
            return "\"\\\", \"*\" and \"%\" are not allowed in folder names";
        if (c == '/' && name[i + 1] == '/')
            return "empty hierarchy level (\"//\") in folder name";
    }
    md[0] = '.';
    for (size_t i = 0; i < len; i++)
        md[i + 1] = name[i] == '/' ? '.' : name[i];
    md[len + 1] = '\0';
    /* "INBOX/x" in any case is INBOX's child: spelt one way on disk. */
    if (len > 6 && strncasecmp(name, "INBOX/", 6) == 0)
        memcpy(md + 1, "INBOX", 5);
    if (!maildir_folder_ok(md, len + 1))
        return "bad folder name";
    return NULL;
}

bool
mstore_name_ok(const mstore_t *ms, const char *name, const char **why)
{
    char md[MAILDIR_FOLDER_MAX + 1];
    const char *w = name_check(ms, name, md);

    if (why != NULL)
        *why = w;
    return w == NULL;
}

/* The IMAP name of a Maildir++ name (".A.B" is "A/B"), or NULL when it
 * is none we would make. Caller frees. */
static char *
imap_name_of(const mstore_t *ms, const char *md)
{
    char check[MAILDIR_FOLDER_MAX + 1];
    char *name;

    if (md[0] != '.' || md[1] == '\0' || md[1] == '.')
        return NULL;
    name = xstrdup(md + 1);
    for (char *p = name; *p; p++)
        if (*p == '.')
            *p = '/';
    if (is_inbox(name) || name_check(ms, name, check) != NULL) {
        free(name);
        return NULL;
    }
    return name;
}

/* Checks name, with the error set when bad. */
static int
check_name(mstore_t *ms, const char *name, char *md)
{
    const char *why = name_check(ms, name, md);

    if (why != NULL)
        return mstore_fail(ms, ERR_INVAL, "CANNOT", "%s", why);
    return 0;
}

/*
 * Open folders.
 */

/* Makes the index's lock file, so that a folder that cannot have one
 * fails at open rather than at its first change. */
static int
lock_file_ok(int dir_fd)
{
    int fd = mfolder_lock_file(dir_fd);

    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

/* The folders open in this process, shared by every store (every
 * session) of an account: one copy of a big index in memory, read once
 * after each change. Stores are used from one thread (mstore.h). Those
 * no view holds (refs 0) stay as a cache, most recently used first, so
 * that the next SELECT of a big folder costs the few stat calls of a sync
 * instead of parsing its index: mfolder_sync() checks the index file's
 * and new/ and cur/'s stamps before trusting a cached copy exactly as it
 * does for one in use, so another process's change is never missed. */
static struct mfolder *open_folders;

static void
unlink_folder(struct mfolder *f)
{
    for (struct mfolder **pp = &open_folders; *pp != NULL; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            return;
        }
}

/* Roughly what f holds in memory: its entries, the index text its names
 * came from, and for each entry a name of its own as a message's usually
 * is (about 60 octets and the allocator's 16). An estimate, not a walk
 * over 100,000 names each time a session leaves a big folder. */
static size_t
folder_bytes(const struct mfolder *f)
{
    return sizeof(*f) + f->ix.cap * sizeof(struct mentry) + f->ix.arena_len +
           f->ix.n * 80 +
           (f->snap ? f->snap->n * sizeof(struct mstore_msg) : 0) +
           (size_t)f->ix.nkeywords * 64 + strlen(f->path) + strlen(f->name) +
           strlen(f->mdname) + 256;
}

/* Frees the cached folders past the limits, least recently used first. */
static void
cache_trim(size_t max_folders, size_t max_bytes)
{
    size_t count = 0, bytes = 0;
    struct mfolder *f, *next;

    for (f = open_folders; f != NULL; f = next) {
        next = f->next;
        if (f->refs > 0)
            continue;
        if (count + 1 > max_folders || bytes + f->cache_bytes > max_bytes) {
            unlink_folder(f);
            folder_free(f);
            continue;
        }
        count++;
        bytes += f->cache_bytes;
    }
}

void
mstore_cache_drop(void)
{
    cache_trim(0, 0);
}

struct mfolder *
mstore_folder_get(mstore_t *ms, const char *name, const char *code_missing)
{
    char md[MAILDIR_FOLDER_MAX + 1];
    struct mfolder *f, *next;
    char *path;
    int dir_fd, rc;

    if (check_name(ms, name, md) != 0)
        return NULL;
    path = md[0] ? xasprintf("%s/%s", ms->path, md) : xstrdup(ms->path);
    for (f = open_folders; f != NULL; f = f->next) {
        struct stat now, was;
        int got = md[0] ? fstatat(ms->acct_fd, md, &now, AT_SYMLINK_NOFOLLOW)
                        : fstat(ms->acct_fd, &now);

        if (strcmp(f->path, path) != 0)
            continue;
        /* Still the folder of that name? (DELETE or RENAME, by this
         * process or another, make it another directory.) */
        if (got == 0 && fstat(f->dir_fd, &was) == 0 &&
            now.st_ino == was.st_ino && now.st_dev == was.st_dev) {
            free(path);
            if (f->refs++ == 0) {
                /* From the cache: to the front, as in use. */
                unlink_folder(f);
                f->next = open_folders;
                open_folders = f;
            }
            return f;
        }
    }
    /* A cached copy of a folder gone from that name is no use. */
    for (f = open_folders; f != NULL; f = next) {
        next = f->next;
        if (f->refs == 0 && strcmp(f->path, path) == 0) {
            unlink_folder(f);
            folder_free(f);
        }
    }
    dir_fd = md[0]
                 ? subdir(ms->acct_fd, md, false)
                 : openat(ms->acct_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) {
        rc = md[0] ? dir_fd : -errno;
        if (rc == -ENOENT || rc == -ENOTDIR || rc == -ELOOP)
            mstore_fail(ms, ERR_NOTFOUND,
                        code_missing ? code_missing : "NONEXISTENT",
                        "no folder %s", name);
        else
            mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot open %s: %s", name,
                        strerror(-rc));
        free(path);
        return NULL;
    }
    f = xcalloc(1, sizeof(*f));
    f->dir_fd = dir_fd;
    f->new_fd = f->cur_fd = f->lock_fd = f->index_fd = -1;
    f->name = xstrdup(md[0] ? name : "INBOX");
    f->mdname = xstrdup(md);
    f->path = path;
    if ((rc = make_maildir(dir_fd)) < 0 ||
        (f->new_fd = subdir(dir_fd, "new", false)) < 0 ||
        (f->cur_fd = subdir(dir_fd, "cur", false)) < 0 ||
        (rc = lock_file_ok(dir_fd)) < 0) {
        mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot open %s: %s", name,
                    strerror(rc < 0 ? -rc : errno));
        folder_free(f);
        return NULL;
    }
    f->refs = 1;
    f->next = open_folders;
    open_folders = f;
    return f;
}

void
mstore_folder_put(mstore_t *ms, struct mfolder **f_p)
{
    struct mfolder *f = *f_p;

    struct stat st;

    if (f == NULL)
        return;
    *f_p = NULL;
    if (--f->refs > 0)
        return;
    unlink_folder(f);
    /* A deleted folder, or one whose index was never read, is not worth
     * keeping. */
    if (!f->loaded || fstat(f->dir_fd, &st) != 0 || st.st_nlink == 0) {
        folder_free(f);
        return;
    }
    /* A snapshot of an older index is no use to the next SELECT. */
    if (f->snap != NULL && f->snap->gen != f->gen)
        msnap_put(&f->snap);
    f->cache_bytes = folder_bytes(f);
    f->next = open_folders;
    open_folders = f;
    cache_trim(ms->lim.cache_folders, ms->lim.cache_bytes);
}

/*
 * Listing.
 */

struct names {
    char **v;
    size_t n, cap;
};

static void
names_add(struct names *s, char *name)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 32;
        s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = name;
}

static void
names_free(struct names *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* INBOX first, then the rest in octet order. */
static int
cmp_name(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    bool xi = strcmp(x, "INBOX") == 0, yi = strcmp(y, "INBOX") == 0;

    if (xi || yi)
        return yi - xi;
    return strcmp(x, y);
}

static bool
names_has(const struct names *s, const char *name)
{
    return s->n > 0 &&
           bsearch(&name, s->v, s->n, sizeof(*s->v), cmp_name) != NULL;
}

static void
names_sort_uniq(struct names *s)
{
    size_t k = 0;

    if (s->n > 1)
        qsort(s->v, s->n, sizeof(*s->v), cmp_name);
    for (size_t i = 0; i < s->n; i++) {
        if (k > 0 && strcmp(s->v[k - 1], s->v[i]) == 0)
            free(s->v[i]);
        else
            s->v[k++] = s->v[i];
    }
    s->n = k;
}

/* The account's folders (IMAP names, INBOX included), sorted. */
static int
folders_read(mstore_t *ms, struct names *out)
{
    int fd = dup(ms->acct_fd);
    struct dirent *d;
    DIR *dir;

    if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
        if (fd >= 0)
            close(fd);
        return mstore_fail(ms, ERR_SYS, "SERVERBUG",
                           "cannot read the folders: %s", strerror(errno));
    }
    rewinddir(dir);
    names_add(out, xstrdup("INBOX"));
    while ((d = readdir(dir)) != NULL) {
        char *name;

        if (d->d_name[0] != '.' ||
            (d->d_type != DT_DIR && d->d_type != DT_UNKNOWN))
            continue;
        if (d->d_type == DT_UNKNOWN) {
            struct stat st;

            if (fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                !S_ISDIR(st.st_mode))
                continue;
        }
        if ((name = imap_name_of(ms, d->d_name)) != NULL)
            names_add(out, name);
    }
    closedir(dir);
    names_sort_uniq(out);
    return 0;
}

/* Whether s matches the LIST pattern p: "*" matches anything, "%"
 * anything but the delimiter (RFC 3501 6.3.8). A set of positions in p,
 * so that no pattern takes more than |p| x |s| steps. */
static bool
pattern_match(const char *p, const char *s)
{
    size_t plen = strlen(p);
    bool *cur = xcalloc(plen + 1, 2), *next = cur + plen + 1, *t;
    bool ok;

    cur[0] = true;
    for (;;) {
        /* Wildcards match the empty string too. */
        for (size_t i = 0; i < plen; i++)
            if (cur[i] && (p[i] == '*' || p[i] == '%'))
                cur[i + 1] = true;
        if (*s == '\0')
            break;
        memset(next, 0, plen + 1);
        for (size_t i = 0; i < plen; i++) {
            if (!cur[i])
                continue;
            if (p[i] == '*' || (p[i] == '%' && *s != '/'))
                next[i] = true;
            else if (p[i] == *s)
                next[i + 1] = true;
        }
        t = cur, cur = next, next = t;
        s++;
    }
    ok = cur[plen];
    free(cur < next ? cur : next);
    return ok;
}

/* Whether a name under the one at i exists in the sorted set. */
static bool
has_children(const struct names *s, const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < s->n; i++)
        if (strncmp(s->v[i], name, len) == 0 && s->v[i][len] == '/')
            return true;
    return false;
}

/* Every name of in, and each one's parents, into out. */
static void
with_parents(const struct names *in, struct names *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *name = in->v[i];

        for (const char *p = strchr(name, '/'); p; p = strchr(p + 1, '/'))
            names_add(out, xstrndup(name, (size_t)(p - name)));
        names_add(out, xstrdup(name));
    }
    names_sort_uniq(out);
}

static int subscriptions_read(mstore_t *ms, struct names *out);

int
mstore_list(mstore_t *ms, const char *ref, const char *pattern, bool lsub,
            mstore_list_fn *fn, void *arg)
{
    struct names have = {0}, all = {0};
    char pat[PATTERN_MAX + 1];
    int rc;

    mstore_ok(ms);
    if (strlen(ref) + strlen(pattern) > PATTERN_MAX)
        return mstore_fail(ms, ERR_TOO_BIG, "LIMIT", "pattern too long");
    /* RFC 3501 6.3.8: an empty pattern asks for the delimiter and the
     * root of the reference. */
    if (pattern[0] == '\0') {
        if (!lsub)
            fn(arg, "", "\\Noselect");
        return 0;
    }
    /* Checked above; the test keeps gcc -O2 from calling it truncation. */
    if (snprintf(pat, sizeof(pat), "%s%s", ref, pattern) >= (int)sizeof(pat))
        return mstore_fail(ms, ERR_TOO_BIG, "LIMIT", "pattern too long");
    /* INBOX is the one name matched in any case (5.1). */
    if (strncasecmp(pat, "INBOX", 5) == 0 && (pat[5] == '\0' || pat[5] == '/'))
        memcpy(pat, "INBOX", 5);
    rc = lsub ? subscriptions_read(ms, &have) : folders_read(ms, &have);
    if (rc != 0)
        goto out;
    with_parents(&have, &all);
    for (size_t i = 0; i < all.n; i++) {
        const char *name = all.v[i];
        bool exists = names_has(&have, name), kids;

        if (!pattern_match(pat, name))
            continue;
        if (lsub) {
            /* 6.3.9: with "%", a parent of a subscribed name is given
             * with \Noselect when it is not subscribed itself. */
            if (exists)
                fn(arg, name, "");
            else if (strchr(pat, '%') != NULL)
                fn(arg, name, "\\Noselect");
            continue;
        }
        kids = has_children(&all, name);
        if (exists)
            fn(arg, name, kids ? "\\HasChildren" : "\\HasNoChildren");
        else
            fn(arg, name, "\\Noselect \\HasChildren");
    }
out:
    names_free(&have);
    names_free(&all);
    return rc;
}

/*
 * CREATE, DELETE, RENAME.
 */

/* Makes the Maildir++ folder md (a Maildir with "maildirfolder"). */
static int
make_folder(mstore_t *ms, const char *md, const char *name, bool *made)
{
    int fd, rc;

    *made = false;
    if (mkdirat(ms->acct_fd, md, 0700) == 0)
        *made = true;
    else if (errno != EEXIST)
        return mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot create %s: %s",
                           name, strerror(errno));
    fd = subdir(ms->acct_fd, md, false);
    if (fd < 0)
        return mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot create %s: %s",
                           name, strerror(-fd));
    rc = make_maildir(fd);
    if (rc == 0) {
        int m = openat(fd, "maildirfolder",
                       O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);

        if (m >= 0)
            close(m);
    }
    close(fd);
    if (rc < 0)
        return mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot create %s: %s",
                           name, strerror(-rc));
    return 0;
}

/* Makes each missing parent of name as a folder (RFC 3501 6.3.3). */
static int
make_parents(mstore_t *ms, const char *name)
{
    char md[MAILDIR_FOLDER_MAX + 1];
    bool made;
    int rc;

    for (const char *p = strchr(name, '/'); p; p = strchr(p + 1, '/')) {
        char *parent = xstrndup(name, (size_t)(p - name));

        rc = is_inbox(parent) ? 0 : check_name(ms, parent, md);
        if (rc == 0 && !is_inbox(parent))
            rc = make_folder(ms, md, parent, &made);
        free(parent);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int
folder_count_ok(mstore_t *ms)
{
    struct names have = {0};
    int rc = folders_read(ms, &have);

    if (rc == 0 && have.n > ms->lim.folders_max)
        rc = mstore_fail(ms, ERR_TOO_BIG, "LIMIT",
                         "too many folders (at most %zu)", ms->lim.folders_max);
    names_free(&have);
    return rc;
}

int
mstore_create(mstore_t *ms, const char *name)
{
    char md[MAILDIR_FOLDER_MAX + 1];
    char *n = xstrdup(name);
    size_t len = strlen(n);
    bool made;
    int rc;

    mstore_ok(ms);
    /* 6.3.3: a trailing delimiter only says children are to come. */
    if (len > 1 && n[len - 1] == '/')
        n[len - 1] = '\0';
    if (is_inbox(n)) {
        rc =
            mstore_fail(ms, ERR_EXISTS, "ALREADYEXISTS", "INBOX always exists");
        goto out;
    }
    if ((rc = check_name(ms, n, md)) != 0 || (rc = folder_count_ok(ms)) != 0)
        goto out;
    if ((rc = make_parents(ms, n)) != 0 ||
        (rc = make_folder(ms, md, n, &made)) != 0)
        goto out;
    if (!made)
        rc = mstore_fail(ms, ERR_EXISTS, "ALREADYEXISTS",
                         "folder %s already exists", n);
    else
        log_info(ms->trace, "mstore.create", "mailbox=%s folder=%s",
                 ms->mailbox, log_q(n));
out:
    free(n);
    return rc;
}

/* The size of the regular files in dir_fd/sub (new/, cur/). */
static uint64_t
dir_bytes(int dir_fd, const char *sub)
{
    int fd =
        openat(dir_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    uint64_t total = 0;
    struct dirent *d;
    DIR *dir;

    if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    while ((d = readdir(dir)) != NULL) {
        struct stat st;

        if (d->d_name[0] != '.' &&
            fstatat(fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
    }
    closedir(dir);
    return total;
}

/* Removes everything in dir_fd, one level of directories deep (a
 * Maildir's tmp/ new/ cur/); the directory itself stays. */
static void
empty_dir(int dir_fd, int depth)
{
    int fd = dup(dir_fd);
    struct dirent *d;
    DIR *dir;

    if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
        if (fd >= 0)
            close(fd);
        return;
    }
    rewinddir(dir);
    while ((d = readdir(dir)) != NULL) {
        if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
            continue;
        if (unlinkat(dir_fd, d->d_name, 0) == 0 || errno != EISDIR)
            continue;
        if (depth > 0) {
            int sub = subdir(dir_fd, d->d_name, false);

            if (sub >= 0) {
                empty_dir(sub, depth - 1);
                close(sub);
            }
        }
        unlinkat(dir_fd, d->d_name, AT_REMOVEDIR);
    }
    closedir(dir);
}

int
mstore_delete(mstore_t *ms, const char *name)
{
    char md[MAILDIR_FOLDER_MAX + 1], trash[64];
    struct names have = {0};
    struct stat st;
    uint64_t bytes;
    int rc, fd;

    mstore_ok(ms);
    if (is_inbox(name))
        return mstore_fail(ms, ERR_INVAL, "CANNOT",
                           "INBOX cannot be deleted (RFC 3501 6.3.4)");
    if ((rc = check_name(ms, name, md)) != 0)
        return rc;
    if (fstatat(ms->acct_fd, md, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISDIR(st.st_mode)) {
        /* 6.3.4: a \Noselect name with children cannot be deleted. */
        if ((rc = folders_read(ms, &have)) == 0) {
            rc = has_children(&have, name)
                     ? mstore_fail(ms, ERR_INVAL, "CANNOT",
                                   "%s is \\Noselect and has children", name)
                     : mstore_fail(ms, ERR_NOTFOUND, "NONEXISTENT",
                                   "no folder %s", name);
        }
        names_free(&have);
        return rc;
    }
    /* Out of sight first, in one step, so that no session or process
     * sees a folder half gone; then emptied. */
    snprintf(trash, sizeof(trash), TRASH_PREFIX "%ld-%lu", (long)getpid(),
             ++ms->counter);
    if (renameat(ms->acct_fd, md, ms->acct_fd, trash) != 0)
        return mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot delete %s: %s",
                           name, strerror(errno));
    fd = subdir(ms->acct_fd, trash, false);
    bytes = 0;
    if (fd >= 0) {
        bytes = dir_bytes(fd, "cur") + dir_bytes(fd, "new");
        empty_dir(fd, 1);
        close(fd);
    }
    unlinkat(ms->acct_fd, trash, AT_REMOVEDIR);
    ms->delta = -(int64_t)bytes;
    log_info(ms->trace, "mstore.delete", "mailbox=%s folder=%s bytes=%" PRIu64,
             ms->mailbox, log_q(name), bytes);
    return 0;
}

/* Moves INBOX's messages into the new folder to, numbered afresh there
 * (6.3.5: INBOX stays, empty). */
static int
rename_inbox(mstore_t *ms, const char *to, const char *to_md)
{
    struct mfolder *in = NULL, *out = NULL;
    bool made;
    size_t kept = 0;
    int rc;

    if ((rc = make_parents(ms, to)) != 0 ||
        (rc = make_folder(ms, to_md, to, &made)) != 0)
        return rc;
    if (!made)
        return mstore_fail(ms, ERR_EXISTS, "ALREADYEXISTS",
                           "folder %s already exists", to);
    if ((in = mstore_folder_get(ms, "INBOX", NULL)) == NULL ||
        (out = mstore_folder_get(ms, to, NULL)) == NULL) {
        rc = ERR_SYS;
        goto out;
    }
    if ((rc = mfolder_lock(ms, in)) != 0)
        goto out;
    if ((rc = mfolder_lock(ms, out)) != 0) {
        mfolder_unlock(in);
        goto out;
    }
    if ((rc = mfolder_sync(ms, in, MF_LOCKED, NULL, NULL)) == 0 &&
        (rc = mfolder_sync(ms, out, MF_LOCKED, NULL, NULL)) == 0) {
        for (size_t i = 0; i < in->ix.n; i++) {
            struct mentry *e = &in->ix.e[i];
            int from = e->in_new ? in->new_fd : in->cur_fd;
            int dest = e->in_new ? out->new_fd : out->cur_fd;

            if (renameat(from, e->name, dest, e->name) != 0) {
                in->ix.e[kept++] = *e; /* stays in INBOX */
                continue;
            }
            if (out->ix.n == out->ix.cap) {
                out->ix.cap = out->ix.cap ? out->ix.cap * 2 : 64;
                out->ix.e =
                    xrealloc(out->ix.e, out->ix.cap * sizeof(*out->ix.e));
            }
            out->ix.e[out->ix.n] = *e;
            out->ix.e[out->ix.n].name = mindex_name_take(&in->ix, e);
            out->ix.e[out->ix.n].uid = out->ix.uidnext++;
            /* Keywords by name: the new folder's table is its own. */
            out->ix.e[out->ix.n].keywords = 0;
            for (unsigned k = 0; k < in->ix.nkeywords; k++) {
                int j;

                if ((e->keywords & (1ULL << k)) &&
                    (j = mindex_keyword(&out->ix, in->ix.keywords[k], true)) >=
                        0)
                    out->ix.e[out->ix.n].keywords |= 1ULL << j;
            }
            out->ix.n++;
        }
        in->ix.n = kept;
        in->ix.new_mtime_ns = in->ix.cur_mtime_ns = 0;
        out->ix.new_mtime_ns = out->ix.cur_mtime_ns = 0;
        in->gen++;
        out->gen++;
        rc = mfolder_write(ms, out);
        if (rc == 0)
            rc = mfolder_write(ms, in);
    }
    mfolder_unlock(out);
    mfolder_unlock(in);
out:
    mstore_folder_put(ms, &in);
    mstore_folder_put(ms, &out);
    return rc;
}

int
mstore_rename(mstore_t *ms, const char *from, const char *to)
{
    char fmd[MAILDIR_FOLDER_MAX + 1], tmd[MAILDIR_FOLDER_MAX + 1];
    struct names have = {0};
    size_t flen = strlen(from), moved = 0;
    int rc;

    mstore_ok(ms);
    if ((rc = check_name(ms, from, fmd)) != 0 ||
        (rc = check_name(ms, to, tmd)) != 0)
        return rc;
    if (is_inbox(to))
        return mstore_fail(ms, ERR_EXISTS, "ALREADYEXISTS",
                           "INBOX always exists");
    if (!is_inbox(from) && strncmp(to, from, flen) == 0 && to[flen] == '/')
        return mstore_fail(ms, ERR_INVAL, "CANNOT",
                           "cannot move a folder under itself");
    if ((rc = folders_read(ms, &have)) != 0)
        goto out;
    if (names_has(&have, to) || has_children(&have, to)) {
        rc = mstore_fail(ms, ERR_EXISTS, "ALREADYEXISTS",
                         "folder %s already exists", to);
        goto out;
    }
    if (is_inbox(from)) {
        rc = rename_inbox(ms, to, tmd);
        goto out;
    }
    if (!names_has(&have, from) && !has_children(&have, from)) {
        rc = mstore_fail(ms, ERR_NOTFOUND, "NONEXISTENT", "no folder %s", from);
        goto out;
    }
    /* New parents count towards the limit as CREATE's do. */
    if (strchr(to, '/') != NULL && (rc = folder_count_ok(ms)) != 0)
        goto out;
    if ((rc = make_parents(ms, to)) != 0)
        goto out;
    /* The folder and its children (6.3.5), each a sibling directory in
     * Maildir++: ".A" and ".A.x" become ".C" and ".C.x". */
    for (size_t i = 0; i < have.n; i++) {
        const char *name = have.v[i];
        char omd[MAILDIR_FOLDER_MAX + 1], nmd[MAILDIR_FOLDER_MAX + 1];
        char *nname;

        if (strcmp(name, from) != 0 &&
            !(strncmp(name, from, flen) == 0 && name[flen] == '/'))
            continue;
        nname = xasprintf("%s%s", to, name + flen);
        rc = check_name(ms, name, omd);
        if (rc == 0)
            rc = check_name(ms, nname, nmd);
        if (rc == 0 && renameat(ms->acct_fd, omd, ms->acct_fd, nmd) != 0)
            rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot rename %s: %s",
                             name, strerror(errno));
        free(nname);
        if (rc != 0)
            goto out;
        moved++;
    }
    log_info(ms->trace, "mstore.rename", "mailbox=%s from=%s to=%s folders=%zu",
             ms->mailbox, log_q(from), log_q(to), moved);
out:
    names_free(&have);
    return rc;
}

/*
 * Subscriptions: "subscriptions" in the account's Maildir, one name a
 * line (as Courier and Dovecot keep it).
 */

static int
subscriptions_read(mstore_t *ms, struct names *out)
{
    int fd = openat(ms->acct_fd, MSTORE_SUBSCRIPTIONS,
                    O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    char *data;
    struct stat st;
    ssize_t n;

    /* None yet, or a symlink (never followed; the next write replaces
     * it). */
    if (fd < 0)
        return errno == ENOENT || errno == ELOOP
                   ? 0
                   : mstore_fail(ms, ERR_SYS, "SERVERBUG",
                                 "cannot read subscriptions: %s",
                                 strerror(errno));
    if (fstat(fd, &st) != 0 || st.st_size > SUBSCRIPTIONS_MAX) {
        close(fd);
        return mstore_fail(ms, ERR_TOO_BIG, "LIMIT",
                           "subscriptions file too big");
    }
    data = xmalloc((size_t)st.st_size + 1);
    n = read(fd, data, (size_t)st.st_size);
    close(fd);
    if (n < 0)
        n = 0;
    data[n] = '\0';
    for (char *line = data, *nl; *line; line = nl) {
        char md[MAILDIR_FOLDER_MAX + 1];

        nl = strchr(line, '\n');
        if (nl != NULL)
            *nl++ = '\0';
        else
            nl = line + strlen(line);
        /* Dovecot's version line and anything we would not accept. */
        if (name_check(ms, line, md) == NULL)
            names_add(out, xstrdup(is_inbox(line) ? "INBOX" : line));
    }
    free(data);
    names_sort_uniq(out);
    return 0;
}

static int
subscriptions_write(mstore_t *ms, const struct names *s)
{
    static const char tmp[] = MSTORE_SUBSCRIPTIONS ".tmp";
    buf_t b = BUF_INIT;
    int fd, rc = 0;

    for (size_t i = 0; i < s->n; i++)
        buf_printf(&b, "%s\n", s->v[i]);
    fd = openat(ms->acct_fd, tmp,
                O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ELOOP && unlinkat(ms->acct_fd, tmp, 0) == 0)
        fd =
            openat(ms->acct_fd, tmp,
                   O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, b.data ? b.data : "", b.len) != (ssize_t)b.len ||
        fsync(fd) != 0 || close(fd) != 0 ||
        renameat(ms->acct_fd, tmp, ms->acct_fd, MSTORE_SUBSCRIPTIONS) != 0)
        rc = mstore_fail(ms, ERR_SYS, "SERVERBUG",
                         "cannot write subscriptions: %s", strerror(errno));
    buf_free(&b);
    return rc;
}

int
mstore_subscribe(mstore_t *ms, const char *name, bool on)
{
    char md[MAILDIR_FOLDER_MAX + 1];
    struct names s = {0};
    const char *canon = is_inbox(name) ? "INBOX" : name;
    struct mfolder *in;
    int rc;

    mstore_ok(ms);
    if ((rc = check_name(ms, name, md)) != 0)
        return rc;
    /* Read, change and write under the INBOX index's lock, so that two
     * sessions subscribing at once both count. */
    if ((in = mstore_folder_get(ms, "INBOX", NULL)) == NULL)
        return ms->err;
    if ((rc = mfolder_lock(ms, in)) != 0)
        goto out;
    if ((rc = subscriptions_read(ms, &s)) != 0)
        goto unlock;
    if (on) {
        if (!names_has(&s, canon)) {
            if (s.n >= ms->lim.folders_max * 2) {
                rc = mstore_fail(ms, ERR_TOO_BIG, "LIMIT",
                                 "too many subscriptions");
                goto unlock;
            }
            names_add(&s, xstrdup(canon));
            names_sort_uniq(&s);
            rc = subscriptions_write(ms, &s);
        }
    } else {
        size_t k = 0;

        for (size_t i = 0; i < s.n; i++) {
            if (strcmp(s.v[i], canon) == 0)
                free(s.v[i]);
            else
                s.v[k++] = s.v[i];
        }
        if (k == s.n)
            rc = mstore_fail(ms, ERR_NOTFOUND, "NONEXISTENT",
                             "not subscribed to %s", name);
        else {
            s.n = k;
            rc = subscriptions_write(ms, &s);
        }
    }
unlock:
    mfolder_unlock(in);
out:
    names_free(&s);
    mstore_folder_put(ms, &in);
    return rc;
}

/*
 * STATUS and APPEND.
 */

int
mstore_status(mstore_t *ms, const char *name, struct imap_status_values *v)
{
    struct mfolder *f;
    int rc;

    mstore_ok(ms);
    memset(v, 0, sizeof(*v));
    if ((f = mstore_folder_get(ms, name, NULL)) == NULL)
        return ms->err;
    rc = mfolder_sync(ms, f, 0, NULL, NULL);
    if (rc == 0) {
        v->messages = (uint32_t)f->ix.n;
        v->uidnext = f->ix.uidnext;
        v->uidvalidity = f->ix.uidvalidity;
        /* Counted once per change of the index: a client polling STATUS
         * of a big folder that did not change costs a few stat calls. */
        if (f->counts_gen != f->gen + 1) {
            f->n_unseen = f->n_in_new = 0;
            for (size_t i = 0; i < f->ix.n; i++) {
                f->n_in_new += f->ix.e[i].in_new;
                f->n_unseen += !(f->ix.e[i].flags & MSTORE_F_SEEN);
            }
            f->counts_gen = f->gen + 1;
        }
        v->recent = f->n_in_new;
        v->unseen = f->n_unseen;
    }
    mstore_folder_put(ms, &f);
    return rc;
}

int
mstore_parse_flags(mstore_t *ms, struct mindex *ix, const char *const *flags,
                   size_t nflags, bool add, unsigned *sys, uint64_t *kw)
{
    static const char *const names[] = {"\\Answered", "\\Flagged", "\\Deleted",
                                        "\\Seen", "\\Draft"};

    *sys = 0;
    *kw = 0;
    for (size_t i = 0; i < nflags; i++) {
        const char *fl = flags[i];
        size_t j;
        int k;

        if (fl[0] == '\\') {
            for (j = 0; j < 5; j++)
                if (strcasecmp(fl, names[j]) == 0)
                    *sys |= 1u << j;
            /* \Recent and unknown flag extensions cannot be set. */
            continue;
        }
        k = mindex_keyword(ix, fl, false);
        if (k < 0 && add) {
            size_t len = strlen(fl);

            if (len == 0 || len > 255)
                return mstore_fail(ms, ERR_INVAL, "CANNOT", "bad keyword");
            for (j = 0; j < len; j++) {
                unsigned char c = (unsigned char)fl[j];

                if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c))
                    return mstore_fail(ms, ERR_INVAL, "CANNOT", "bad keyword");
            }
            k = mindex_keyword(ix, fl, true);
            if (k < 0)
                return mstore_fail(ms, ERR_TOO_BIG, "LIMIT",
                                   "too many keywords in this folder "
                                   "(at most %d)",
                                   MSTORE_KEYWORDS_MAX);
        }
        if (k >= 0)
            *kw |= 1ULL << k;
    }
    return 0;
}

int
mstore_append(mstore_t *ms, const char *folder, const void *data, size_t len,
              const char *const *flags, size_t nflags, time_t date,
              struct mstore_copied *out)
{
    char base[MAILDIR_FILE_MAX];
    struct mfolder *f;
    struct timespec ts[2];
    unsigned sys;
    uint64_t kw;
    char *name = NULL;
    int fd = -1, tmp_fd = -1, rc;
    size_t off = 0;
    bool known;

    mstore_ok(ms);
    memset(out, 0, sizeof(*out));
    if (len > ms->lim.append_max)
        return mstore_fail(ms, ERR_TOO_BIG, "TOOBIG", "message over %zu octets",
                           ms->lim.append_max);
    if ((f = mstore_folder_get(ms, folder, "TRYCREATE")) == NULL)
        return ms->err;
    mstore_unique_name(ms, len, base, sizeof(base));
    if ((tmp_fd = mfolder_tmp(f)) < 0) {
        rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot store: %s",
                         strerror(-tmp_fd));
        goto out;
    }
    fd = openat(tmp_fd, base,
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot store: %s",
                         strerror(errno));
        goto out;
    }
    while (off < len) {
        ssize_t n = write(fd, (const char *)data + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = mstore_fail(ms, ERR_SYS,
                             errno == ENOSPC || errno == EDQUOT ? "OVERQUOTA"
                                                                : "SERVERBUG",
                             "cannot store: %s", strerror(errno));
            goto out;
        }
        off += (size_t)n;
    }
    ts[0].tv_sec = ts[1].tv_sec = date ? date : time(NULL);
    ts[0].tv_nsec = ts[1].tv_nsec = 0;
    if (futimens(fd, ts) != 0 || fsync(fd) != 0) {
        rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot store: %s",
                         strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if ((rc = mfolder_lock(ms, f)) != 0)
        goto out;
    rc = mfolder_sync(ms, f, MF_LOCKED, NULL, NULL);
    if (rc == 0)
        rc = mstore_parse_flags(ms, &f->ix, flags, nflags, true, &sys, &kw);
    if (rc == 0 &&
        (f->ix.n >= ms->lim.messages_max || f->ix.uidnext == UINT32_MAX))
        rc = mstore_fail(ms, ERR_TOO_BIG, "LIMIT", "folder full");
    known = rc == 0 && mfolder_cur_known(f);
    if (rc == 0) {
        name = mname_with_flags(base, sys);
        if (renameat(tmp_fd, base, f->cur_fd, name) != 0 ||
            fsync(f->cur_fd) != 0)
            rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot store: %s",
                             strerror(errno));
    }
    if (rc == 0) {
        struct mentry *e;

        if (f->ix.n == f->ix.cap) {
            f->ix.cap = f->ix.cap ? f->ix.cap * 2 : 64;
            f->ix.e = xrealloc(f->ix.e, f->ix.cap * sizeof(*f->ix.e));
        }
        e = &f->ix.e[f->ix.n++];
        memset(e, 0, sizeof(*e));
        e->uid = f->ix.uidnext++;
        e->flags = sys;
        e->keywords = kw;
        e->size = len;
        e->date = (int64_t)ts[0].tv_sec;
        e->name = name;
        name = NULL;
        mfolder_cur_own(f, known);
        mfolder_changed(f);
        ms->append_uid = e->uid;
        out->uidvalidity = f->ix.uidvalidity;
        out->dst_uids = &ms->append_uid;
        out->n = 1;
        rc = mfolder_write(ms, f);
        ms->delta = (int64_t)len;
    }
    mfolder_unlock(f);
out:
    if (fd >= 0)
        close(fd);
    if (tmp_fd >= 0) {
        if (rc != 0 || name != NULL)
            unlinkat(tmp_fd, base, 0);
        close(tmp_fd);
    }
    free(name);
    mstore_folder_put(ms, &f);
    return rc;
}
