#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/xalloc.h"

#include "maildir.h"

/* One mailbox (or folder) whose tmp/ and new/ are open. It is in the
 * cache, or, once found removed (stale), off it until its last user lets
 * it go. */
struct box {
    struct box *prev, *next; /* the cache, most recently used first */
    uint64_t hash;
    char *key; /* the mailbox, a NUL, the folder ("" for INBOX) */
    size_t keylen;
    int tmp_fd, new_fd;
    int pins;   /* users now: a pinned box is never closed */
    bool stale; /* off the cache */
    /* The group commit that last linked into new/, the one that last
     * fsync'd it, and that fsync's errno (0: it went well). */
    unsigned long linked, synced;
    int sync_err;
};

struct maildir {
    int root_fd;    /* data/mail, O_DIRECTORY */
    char host[128]; /* escaped for file names */
    unsigned long counter;
    struct box *head, *tail; /* the cache of open mailboxes */
    size_t nboxes, max_boxes;
    unsigned long batch; /* the group commit under way */
};

/* The message to store: its parts and their total size. */
struct msg {
    const struct iovec *parts;
    int nparts;
    size_t size;
};

/* The longest cache key: a mailbox, a NUL and a folder name. */
#define BOX_KEY_MAX (MAILDIR_NAME_MAX + 1 + MAILDIR_FOLDER_MAX)

static int subdir(int parent, const char *name, const char **op,
                  const char *op_mkdir, const char *op_open);
static int maildir_dirs(int dir_fd, int *tmp_fd, int *new_fd, const char **op);
static int box_walk(maildir_t *md, const struct maildir_rcpt *r, int *tmp_fd,
                    int *new_fd, const char **op);
static struct box *box_get(maildir_t *md, const struct maildir_rcpt *r,
                           int *err, const char **op);
static void box_put(maildir_t *md, struct box **b_p);
static int box_renew(maildir_t *md, const struct maildir_rcpt *r,
                     struct box **b_p, const char **op);
static void cache_trim(maildir_t *md, size_t keep);
static int write_new(maildir_t *md, int dir_fd, const struct msg *m,
                     char name[MAILDIR_FILE_MAX], int *fd_out, const char **op);
static int sync_close(int dir_fd, const char *name, int fd, const char **op);
static int publish(int from_fd, int new_fd, const char *name, bool may_move,
                   const char **op);
static int store_copy(maildir_t *md, const struct box *b, const struct msg *m,
                      bool keep_tmp, char name[MAILDIR_FILE_MAX], bool *kept,
                      const char **op);
static int own_copy(maildir_t *md, struct maildir_rcpt *r, struct box **b_p,
                    const struct msg *m, const char **op);
static void set_ok(struct maildir_rcpt *r, const char *name, bool linked);
static void set_sys(struct maildir_rcpt *r, int err, const char *op);
static void set_bad_name(struct maildir_rcpt *r);

/* Escapes a host name for Maildir file names: "/" and ":" become \057 and
 * \072 as the Maildir spec and Dovecot have it; "," (which would end the
 * name before ",S=") and anything unprintable are escaped the same way. */
static void
host_escape(const char *in, char *out, size_t outlen)
{
    size_t o = 0;

    for (; *in && o + 5 < outlen; in++) {
        unsigned char c = (unsigned char)*in;

        if (c <= 0x20 || c >= 0x7f || c == '/' || c == ':' || c == ',' ||
            c == '\\')
            o += (size_t)snprintf(out + o, outlen - o, "\\%03o", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

/* Two fds a mailbox; the rest of the descriptors are left for the bus,
 * the tmp/ files of a group commit and the IMAP sessions to come. */
static size_t
default_cache_max(void)
{
    struct rlimit rl;
    size_t n = MAILDIR_CACHE_MAX;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < 2 * MAILDIR_CACHE_MAX + 512)
        n = rl.rlim_cur > 512 + 32 ? (size_t)(rl.rlim_cur - 512) / 2 : 16;
    return n;
}

maildir_t *
maildir_new(const char *data_dir, const char *host, char *why, size_t whylen)
{
    maildir_t *md;
    char sys_host[256];
    int data_fd, root_fd;
    const char *op = NULL;

    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "mkdir %s: %s", data_dir, strerror(errno));
        return NULL;
    }
    data_fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (data_fd < 0) {
        snprintf(why, whylen, "open %s: %s", data_dir, strerror(errno));
        return NULL;
    }
    root_fd = subdir(data_fd, "mail", &op, "mkdir", "open");
    close(data_fd);
    if (root_fd < 0) {
        snprintf(why, whylen, "%s %s/mail: %s", op, data_dir,
                 strerror(-root_fd));
        return NULL;
    }
    md = xcalloc(1, sizeof(*md));
    md->root_fd = root_fd;
    md->max_boxes = default_cache_max();
    if (host == NULL || *host == '\0') {
        if (gethostname(sys_host, sizeof(sys_host)) != 0)
            snprintf(sys_host, sizeof(sys_host), "localhost");
        sys_host[sizeof(sys_host) - 1] = '\0';
        host = sys_host;
    }
    host_escape(host, md->host, sizeof(md->host));
    return md;
}

void
maildir_destroy(maildir_t **md_p)
{
    maildir_t *md = *md_p;

    if (md == NULL)
        return;
    cache_trim(md, 0);
    close(md->root_fd);
    free(md);
    *md_p = NULL;
}

void
maildir_set_cache_max(maildir_t *md, size_t max)
{
    md->max_boxes = max > 0 ? max : 1;
    cache_trim(md, md->max_boxes);
}

size_t
maildir_cache_size(const maildir_t *md)
{
    return md->nboxes;
}

/* RFC 5322 atext, lower case only: what a dot-atom local part may hold
 * besides dots. None of it means anything in a path. */
static bool
local_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-=?^_`{|}~", c) != NULL);
}

static bool
local_ok(const char *s, size_t len)
{
    if (len == 0 || len > MAILDIR_LOCAL_MAX)
        return false;
    /* No leading dot keeps ".", ".." and Maildir++ folder names out; no
     * trailing or double dot is RFC 5321's dot-atom. */
    if (s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (!local_char_ok(c)) {
            return false;
        }
    }
    return true;
}

static bool
domain_ok(const char *s, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > MAILDIR_DOMAIN_MAX)
        return false;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = i < len ? (unsigned char)s[i] : '.';

        if (c == '.') {
            /* An empty label is a leading, trailing or double dot. */
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-') {
            if (c == '-' && label == 0)
                return false;
            if (++label > MAILDIR_LABEL_MAX)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

bool
maildir_name_ok(const char *name, size_t len)
{
    const char *at;

    if (name == NULL || len == 0 || len > MAILDIR_NAME_MAX ||
        memchr(name, '\0', len) != NULL)
        return false;
    at = memchr(name, '@', len);
    if (at == NULL)
        return false;
    /* XXX: SMTPUTF8 (non-ASCII) local parts are refused until accounts
     * can hold them; lower-casing UTF-8 needs more than this file. */
    return local_ok(name, (size_t)(at - name)) &&
           domain_ok(at + 1, len - (size_t)(at - name) - 1);
}

bool
maildir_folder_ok(const char *folder, size_t len)
{
    if (folder == NULL || len < 2 || len > MAILDIR_FOLDER_MAX ||
        folder[0] != '.' || folder[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)folder[i];

        /* Maildir++ names are modified UTF-7, so printable ASCII. */
        if (c < 0x20 || c >= 0x7f || c == '/' || c == '\\')
            return false;
        if (c == '.' && i + 1 < len && folder[i + 1] == '.')
            return false;
    }
    return true;
}

/* Absent, empty or "INBOX" (any case): the mailbox itself. */
static bool
is_inbox(const char *folder, size_t len)
{
    return folder == NULL || len == 0 ||
           (len == 5 && strncasecmp(folder, "INBOX", 5) == 0);
}

void
maildir_unique_name(maildir_t *md, size_t size, char out[MAILDIR_FILE_MAX])
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    /* The Maildir spec's "secs.M<usecs>P<pid>Q<deliveries>.host", plus
     * Dovecot's ",S=<size>" so readers need no stat(). */
    snprintf(out, MAILDIR_FILE_MAX, "%lld.M%ldP%ldQ%lu.%s,S=%zu",
             (long long)ts.tv_sec, ts.tv_nsec / 1000, (long)getpid(),
             ++md->counter, md->host, size);
}

/* Opens the directory name under parent, making it first when it is
 * missing. A new entry is made durable by fsync'ing parent, so the chain
 * from the root down to new/ survives a crash along with the message in
 * it. Returns the fd, or a negative errno with the failed step in *op.
 * O_NOFOLLOW: a symbolic link planted in the store is never followed out
 * of it. */
static int
subdir(int parent, const char *name, const char **op, const char *op_mkdir,
       const char *op_open)
{
    const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(parent, name, flags);

    if (fd >= 0)
        return fd;
    if (errno != ENOENT) {
        *op = op_open;
        return -errno;
    }
    if (mkdirat(parent, name, 0700) == 0) {
        if (fsync(parent) != 0) {
            *op = op_mkdir;
            return -errno;
        }
    } else if (errno != EEXIST) { /* EEXIST: another process made it */
        *op = op_mkdir;
        return -errno;
    }
    fd = openat(parent, name, flags);
    if (fd < 0) {
        *op = op_open;
        return -errno;
    }
    return fd;
}

/* Makes what is missing of tmp/, new/ and cur/ under dir_fd, and opens
 * tmp/ and new/ into *tmp_fd and *new_fd when these are not NULL. Returns 0
 * or a negative errno; nothing is left open on error. */
static int
maildir_dirs(int dir_fd, int *tmp_fd, int *new_fd, const char **op)
{
    int t = -1, n = -1, rc = 0;

    if ((rc = t = subdir(dir_fd, "tmp", op, "mkdir tmp", "open tmp")) < 0)
        goto out;
    if ((rc = n = subdir(dir_fd, "new", op, "mkdir new", "open new")) < 0)
        goto out;
    /* cur/ is only made here, for readers; nothing is written to it. */
    if (mkdirat(dir_fd, "cur", 0700) == 0) {
        if (fsync(dir_fd) != 0) {
            *op = "mkdir cur";
            rc = -errno;
        }
    } else if (errno != EEXIST) {
        *op = "mkdir cur";
        rc = -errno;
    }
out:
    if (rc < 0 || tmp_fd == NULL) {
        if (t >= 0)
            close(t);
        t = -1;
    }
    if (rc < 0 || new_fd == NULL) {
        if (n >= 0)
            close(n);
        n = -1;
    }
    if (tmp_fd)
        *tmp_fd = t;
    if (new_fd)
        *new_fd = n;
    return rc < 0 ? rc : 0;
}

/* Opens mail/<domain>/<local>[/<folder>]'s tmp/ and new/, making what is
 * missing (and cur/). The names were checked by the caller. Returns 0 or
 * a negative errno; nothing is left open on error. */
static int
box_walk(maildir_t *md, const struct maildir_rcpt *r, int *tmp_fd, int *new_fd,
         const char **op)
{
    char local[MAILDIR_LOCAL_MAX + 1], domain[MAILDIR_DOMAIN_MAX + 1];
    char folder[MAILDIR_FOLDER_MAX + 1];
    const char *at = memchr(r->mailbox, '@', r->mailbox_len);
    int domain_fd = -1, user_fd = -1, dir_fd = -1, rc = 0;

    *tmp_fd = *new_fd = -1;
    snprintf(local, sizeof(local), "%.*s", (int)(at - r->mailbox), r->mailbox);
    snprintf(domain, sizeof(domain), "%.*s",
             (int)(r->mailbox_len - (size_t)(at - r->mailbox) - 1), at + 1);
    if ((rc = domain_fd = subdir(md->root_fd, domain, op, "mkdir domain",
                                 "open domain")) < 0)
        goto out;
    if ((rc = user_fd =
             subdir(domain_fd, local, op, "mkdir mailbox", "open mailbox")) < 0)
        goto out;
    if (is_inbox(r->folder, r->folder_len)) {
        dir_fd = user_fd;
        user_fd = -1;
    } else {
        int fd;

        /* In Maildir++ the mailbox itself is INBOX, a Maildir that readers
         * expect to find beside its folders. */
        if ((rc = maildir_dirs(user_fd, NULL, NULL, op)) < 0)
            goto out;
        snprintf(folder, sizeof(folder), "%.*s", (int)r->folder_len, r->folder);
        if ((rc = dir_fd = subdir(user_fd, folder, op, "mkdir folder",
                                  "open folder")) < 0)
            goto out;
        /* Maildir++ marks a folder with an empty "maildirfolder" file,
         * which Courier and Dovecot look for. */
        fd = openat(dir_fd, "maildirfolder",
                    O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            *op = "create maildirfolder";
            rc = -errno;
            goto out;
        }
        close(fd);
    }
    rc = maildir_dirs(dir_fd, tmp_fd, new_fd, op);
out:
    if (domain_fd >= 0)
        close(domain_fd);
    if (user_fd >= 0)
        close(user_fd);
    if (dir_fd >= 0)
        close(dir_fd);
    return rc < 0 ? rc : 0;
}

/* The cache. A lookup scans at most max_boxes entries, which costs far
 * less than the path walk (four openat()) it saves. */

/* Whether rcpts a and b name the same folder of the same mailbox. */
static bool
same_box(const struct maildir_rcpt *a, const struct maildir_rcpt *b)
{
    bool ia = is_inbox(a->folder, a->folder_len);

    if (a->mailbox_len != b->mailbox_len ||
        memcmp(a->mailbox, b->mailbox, a->mailbox_len) != 0 ||
        ia != is_inbox(b->folder, b->folder_len))
        return false;
    return ia || (a->folder_len == b->folder_len &&
                  memcmp(a->folder, b->folder, a->folder_len) == 0);
}

/* r's cache key into key (the names were checked, so it fits); returns
 * its length. */
static size_t
box_key(const struct maildir_rcpt *r, char key[BOX_KEY_MAX + 1])
{
    size_t n = r->mailbox_len;

    memcpy(key, r->mailbox, n);
    key[n++] = '\0';
    if (!is_inbox(r->folder, r->folder_len)) {
        memcpy(key + n, r->folder, r->folder_len);
        n += r->folder_len;
    }
    return n;
}

/* FNV-1a, 64 bits. */
static uint64_t
key_hash(const char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void
lru_unlink(maildir_t *md, struct box *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        md->head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        md->tail = b->prev;
    b->prev = b->next = NULL;
}

static void
lru_push(maildir_t *md, struct box *b)
{
    b->prev = NULL;
    b->next = md->head;
    if (md->head)
        md->head->prev = b;
    else
        md->tail = b;
    md->head = b;
}

static void
box_free(struct box *b)
{
    close(b->tmp_fd);
    close(b->new_fd);
    free(b->key);
    free(b);
}

/* Closes the least recently used boxes nobody holds until at most keep
 * are open (pinned ones may leave more). */
static void
cache_trim(maildir_t *md, size_t keep)
{
    struct box *b = md->tail;

    while (md->nboxes > keep && b != NULL) {
        struct box *prev = b->prev;

        if (b->pins == 0) {
            lru_unlink(md, b);
            md->nboxes--;
            box_free(b);
        }
        b = prev;
    }
}

void
maildir_forget(maildir_t *md, const char *mailbox)
{
    size_t n = strlen(mailbox) + 1; /* the key's NUL included */
    struct box *b = md->head;

    while (b != NULL) {
        struct box *next = b->next;

        if (b->keylen >= n && memcmp(b->key, mailbox, n) == 0) {
            lru_unlink(md, b);
            md->nboxes--;
            b->stale = true;
            if (b->pins == 0)
                box_free(b);
        }
        b = next;
    }
}

/* r's box, pinned, from the cache or opened (and made) now. Returns NULL
 * with a positive errno in *err and the failed step in *op. */
static struct box *
box_get(maildir_t *md, const struct maildir_rcpt *r, int *err, const char **op)
{
    char key[BOX_KEY_MAX + 1];
    size_t len = box_key(r, key);
    uint64_t h = key_hash(key, len);
    struct box *b;
    int t, n, rc;

    for (b = md->head; b != NULL; b = b->next)
        if (b->hash == h && b->keylen == len && memcmp(b->key, key, len) == 0) {
            if (b != md->head) {
                lru_unlink(md, b);
                lru_push(md, b);
            }
            b->pins++;
            return b;
        }
    rc = box_walk(md, r, &t, &n, op);
    if (rc == -EMFILE || rc == -ENFILE) {
        /* Out of descriptors: what the cache holds idle goes first. */
        cache_trim(md, 0);
        rc = box_walk(md, r, &t, &n, op);
    }
    if (rc < 0) {
        *err = -rc;
        return NULL;
    }
    b = xcalloc(1, sizeof(*b));
    b->hash = h;
    b->key = xmalloc(len);
    memcpy(b->key, key, len);
    b->keylen = len;
    b->tmp_fd = t;
    b->new_fd = n;
    b->pins = 1;
    lru_push(md, b);
    md->nboxes++;
    cache_trim(md, md->max_boxes);
    return b;
}

/* Lets go of *b_p (NULL ok) and nulls it. */
static void
box_put(maildir_t *md, struct box **b_p)
{
    struct box *b = *b_p;

    if (b == NULL)
        return;
    *b_p = NULL;
    if (--b->pins == 0 && b->stale)
        box_free(b);
    else if (md->nboxes > md->max_boxes)
        cache_trim(md, md->max_boxes);
}

/*
 * A cached box whose directories were removed (a mailbox deleted by hand)
 * answers ENOENT to every create and link. Takes *b_p off the cache, lets
 * go of it and opens r's box afresh (made again) into *b_p. Returns 0, or
 * a negative errno with *b_p NULL.
 *
 * A folder renamed or deleted over IMAP is taken off the cache then
 * (maildir_forget()). A mailbox directory renamed by hand while cached
 * goes on receiving its mail under the new name until it falls out of the
 * cache: an admin tool that does that must stop the mailbox actors first.
 */
static int
box_renew(maildir_t *md, const struct maildir_rcpt *r, struct box **b_p,
          const char **op)
{
    struct box *b = *b_p;
    int err = 0;

    if (b != NULL && !b->stale) {
        lru_unlink(md, b);
        md->nboxes--;
        b->stale = true;
    }
    box_put(md, b_p);
    *b_p = box_get(md, r, &err, op);
    return *b_p ? 0 : -err;
}

/* Files. */

/* Writes the parts of m to fd, in one writev() when the file takes them
 * whole (the head lines and the message: one call, not one a part); 0 or
 * a negative errno. */
static int
write_parts(int fd, const struct msg *m, const char **op)
{
    struct iovec iov[8];
    int i = 0;

    while (i < m->nparts) {
        int n = 0;
        ssize_t w;

        while (n < (int)(sizeof(iov) / sizeof(iov[0])) && i + n < m->nparts) {
            iov[n] = m->parts[i + n];
            n++;
        }
        for (int k = 0; n > 0;) {
            w = writev(fd, iov + k, n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                *op = "write tmp";
                return -errno;
            }
            /* A short write: on from where it stopped. */
            while (n > 0 && (size_t)w >= iov[k].iov_len) {
                w -= (ssize_t)iov[k].iov_len;
                k++;
                n--;
            }
            if (n > 0) {
                iov[k].iov_base = (char *)iov[k].iov_base + w;
                iov[k].iov_len -= (size_t)w;
            }
        }
        i += (int)(sizeof(iov) / sizeof(iov[0]));
    }
    return 0;
}

/* Writes m into a new file under dir_fd, named afresh into name (a name
 * taken already, by another host with our name or after a clock step,
 * shows as EEXIST, and a fresh name fixes it). The file is not fsync'd:
 * it stays open in *fd_out. On error nothing is left. Returns 0 or a
 * negative errno. */
static int
write_new(maildir_t *md, int dir_fd, const struct msg *m,
          char name[MAILDIR_FILE_MAX], int *fd_out, const char **op)
{
    int fd = -1, rc;

    *fd_out = -1;
    for (int tries = 0; tries < 3 && fd < 0; tries++) {
        maildir_unique_name(md, m->size, name);
        fd = openat(dir_fd, name,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        *op = "create tmp";
        return -errno;
    }
    if ((rc = write_parts(fd, m, op)) != 0) {
        close(fd);
        unlinkat(dir_fd, name, 0);
        return rc;
    }
    /* Starts the write-back now; see group_commit() for why. A hint: its
     * errors come back from fsync(). */
    sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    *fd_out = fd;
    return 0;
}

/* fsync's and closes fd, the file name under dir_fd, which is removed on
 * error. Returns 0 or a negative errno. */
static int
sync_close(int dir_fd, const char *name, int fd, const char **op)
{
    int rc = 0;

    if (fsync(fd) != 0) {
        *op = "fsync tmp";
        rc = -errno;
    }
    /* NFS reports some write errors only at close. */
    if (close(fd) != 0 && rc == 0) {
        *op = "close tmp";
        rc = -errno;
    }
    if (rc != 0)
        unlinkat(dir_fd, name, 0);
    return rc;
}

/* Whether a link() error means "this file system or file takes no (more)
 * hard links", as opposed to a failing disk. */
static bool
no_link_here(int err)
{
    return err == EXDEV || err == EMLINK || err == EPERM || err == EOPNOTSUPP ||
           err == ENOSYS;
}

/* Puts from_fd/name into new_fd/name and fsync's new/: from then on the
 * copy is durable. The file stays in from_fd (a hard link), unless may_move
 * and the file system has no hard links, when it is renamed instead. An
 * entry whose directory cannot be fsync'd is taken out again, so that a
 * copy reported as failed does not turn up later. Returns 0, 1 (moved) or
 * a negative errno. */
static int
publish(int from_fd, int new_fd, const char *name, bool may_move,
        const char **op)
{
    int moved = 0;

    if (linkat(from_fd, name, new_fd, name, 0) != 0) {
        int e = errno;

        if (!may_move || !no_link_here(e)) {
            *op = "link new";
            return -e;
        }
        /* The name is unique, so the rename cannot replace a message. */
        if (renameat(from_fd, name, new_fd, name) != 0) {
            *op = "rename new";
            return -errno;
        }
        moved = 1;
    }
    if (fsync(new_fd) != 0) {
        int e = errno;

        *op = "fsync new";
        unlinkat(new_fd, name, 0);
        return -e;
    }
    return moved;
}

/* Stores one copy in box b, the slow way (its own fsync of the file and
 * of new/): a new unique name (into name), the file written to tmp/ and
 * published into new/. With keep_tmp the tmp/ file is left for more links
 * and *kept says whether it is still there. Returns 0 or a negative
 * errno. */
static int
store_copy(maildir_t *md, const struct box *b, const struct msg *m,
           bool keep_tmp, char name[MAILDIR_FILE_MAX], bool *kept,
           const char **op)
{
    int fd, rc;

    *kept = false;
    if ((rc = write_new(md, b->tmp_fd, m, name, &fd, op)) != 0 ||
        (rc = sync_close(b->tmp_fd, name, fd, op)) != 0)
        return rc;
    rc = publish(b->tmp_fd, b->new_fd, name, true, op);
    if (rc == 0 && keep_tmp) {
        *kept = true;
        return 0;
    }
    if (rc != 1)
        unlinkat(b->tmp_fd, name, 0);
    return rc == 1 ? 0 : rc;
}

/* A copy of its own for r in *b_p (into r->file), the slow way; a box
 * found removed since it was cached is opened afresh, once. Returns 0 or
 * a negative errno. */
static int
own_copy(maildir_t *md, struct maildir_rcpt *r, struct box **b_p,
         const struct msg *m, const char **op)
{
    bool kept;
    int rc = store_copy(md, *b_p, m, false, r->file, &kept, op);

    if (rc == -ENOENT && (rc = box_renew(md, r, b_p, op)) == 0)
        rc = store_copy(md, *b_p, m, false, r->file, &kept, op);
    return rc;
}

/* Outcomes. */

static void
set_ok(struct maildir_rcpt *r, const char *name, bool linked)
{
    r->code = 250;
    r->ecode = "2.0.0";
    r->text = "delivered";
    r->sys_errno = 0;
    r->failed_op = NULL;
    if (name != r->file)
        snprintf(r->file, sizeof(r->file), "%s", name);
    r->linked = linked;
}

static void
set_sys(struct maildir_rcpt *r, int err, const char *op)
{
    r->sys_errno = err;
    r->failed_op = op;
    r->file[0] = '\0';
    r->linked = false;
    if (err == ENOSPC || err == EDQUOT) {
        r->code = 452;
        r->ecode = "4.2.2";
        r->text = "mailbox full or out of disk space, try again later";
    } else {
        r->code = 451;
        r->ecode = "4.3.0";
        r->text = "local error in storing the message, try again later";
    }
}

static void
set_bad_name(struct maildir_rcpt *r)
{
    r->code = 550;
    r->ecode = "5.1.1";
    r->text = "no such mailbox: invalid mailbox or folder name";
}

/* Clears r's outcome, and refuses it (true) when a name is bad; one the
 * caller refused keeps its outcome. */
static bool
rcpt_refused(struct maildir_rcpt *r)
{
    if (r->refused)
        return true;
    r->code = 0;
    r->file[0] = '\0';
    r->sys_errno = 0;
    r->failed_op = NULL;
    r->linked = false;
    if (maildir_name_ok(r->mailbox, r->mailbox_len) &&
        (is_inbox(r->folder, r->folder_len) ||
         maildir_folder_ok(r->folder, r->folder_len)))
        return false;
    set_bad_name(r);
    return true;
}

/* The first recipient before rcpts[i] that names the same mailbox and
 * folder, or SIZE_MAX. Two recipients that end in one mailbox (an alias
 * and its target) share its one copy, as Postfix's local(8) does. */
static size_t
first_same(const struct maildir_rcpt *rcpts, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (same_box(&rcpts[j], &rcpts[i]))
            return j;
    return SIZE_MAX;
}

static void
copy_outcome(struct maildir_rcpt *to, const struct maildir_rcpt *from)
{
    to->code = from->code;
    to->ecode = from->ecode;
    to->text = from->text;
    to->sys_errno = from->sys_errno;
    to->failed_op = from->failed_op;
    to->linked = from->linked;
    memcpy(to->file, from->file, sizeof(to->file));
}

static struct msg
msg_of(const struct maildir_msg *mm)
{
    struct msg m = {mm->parts, mm->nparts, 0};

    for (int i = 0; i < mm->nparts; i++)
        m.size += mm->parts[i].iov_len;
    return m;
}

static size_t
count_stored(struct maildir_msg *mm)
{
    mm->stored = 0;
    for (size_t i = 0; i < mm->n; i++)
        mm->stored += mm->rcpts[i].code == 250;
    return mm->stored;
}

/* One message, one mailbox after the other, each link fsync'd on its own:
 * for a message with more mailboxes than a group commit holds open. */
static void
deliver_alone(maildir_t *md, struct maildir_msg *mm)
{
    struct msg m = msg_of(mm);
    /* The first copy written stays in its tmp/ under shared_name until
     * every mailbox has had its chance to link it. */
    char shared_name[MAILDIR_FILE_MAX] = "";
    int shared_fd = -1;

    for (size_t i = 0; i < mm->n; i++) {
        struct maildir_rcpt *r = &mm->rcpts[i];
        const char *op = NULL;
        struct box *b;
        size_t same;
        bool kept;
        int rc, err = 0;

        if (rcpt_refused(r))
            continue;
        if ((same = first_same(mm->rcpts, i)) != SIZE_MAX) {
            copy_outcome(r, &mm->rcpts[same]);
            continue;
        }
        if ((b = box_get(md, r, &err, &op)) == NULL) {
            set_sys(r, err, op);
            continue;
        }
        if (shared_fd >= 0) {
            rc = publish(shared_fd, b->new_fd, shared_name, false, &op);
            if (rc == 0) {
                set_ok(r, shared_name, true);
                box_put(md, &b);
                continue;
            }
            /* No link here (another file system, a name taken, a full
             * directory, ...): this mailbox gets a copy of its own, and
             * that copy's error, if any, is the one reported. */
            rc = own_copy(md, r, &b, &m, &op);
        } else {
            rc = store_copy(md, b, &m, true, shared_name, &kept, &op);
            if (rc == -ENOENT && (rc = box_renew(md, r, &b, &op)) == 0)
                rc = store_copy(md, b, &m, true, shared_name, &kept, &op);
            if (rc == 0)
                snprintf(r->file, sizeof(r->file), "%s", shared_name);
            /* Without a second fd the tmp/ file cannot wait for the
             * others, who then get copies of their own. */
            if (kept && (shared_fd = dup(b->tmp_fd)) < 0)
                unlinkat(b->tmp_fd, shared_name, 0);
        }
        if (rc == 0)
            set_ok(r, r->file, false);
        else
            set_sys(r, -rc, op);
        box_put(md, &b);
    }
    if (shared_fd >= 0) {
        unlinkat(shared_fd, shared_name, 0);
        close(shared_fd);
    }
    count_stored(mm);
}

/* Group commit. */

/* Where one recipient of a message in a group commit stands. */
enum item_state {
    IT_DONE,   /* its outcome is set */
    IT_SAME,   /* shares the copy of an earlier recipient of its message */
    IT_LINK,   /* its box is open; to be linked */
    IT_LINKED, /* linked into its new/; stored once new/ is fsync'd */
    IT_COPY,   /* no link could be made: gets a copy of its own */
};

struct item {
    enum item_state state;
    struct box *b; /* pinned, or NULL */
    size_t same;   /* IT_SAME: that earlier recipient */
};

/* One message in a group commit. */
struct job {
    struct maildir_msg *mm;
    struct msg m;
    struct item *it;             /* one per recipient */
    size_t home;                 /* the item whose tmp/ holds the file */
    int fd;                      /* the file, open until fsync'd */
    bool in_tmp;                 /* the file is in home's tmp/ */
    bool moved;                  /* renamed into home's new/ instead */
    char name[MAILDIR_FILE_MAX]; /* the file's name, in tmp/ and new/ */
};

/* Checks the names, finds the shared boxes and opens the others. */
static void
job_open(maildir_t *md, struct job *j, struct maildir_msg *mm)
{
    j->mm = mm;
    j->m = msg_of(mm);
    j->it = xcalloc(mm->n ? mm->n : 1, sizeof(*j->it));
    j->home = SIZE_MAX;
    j->fd = -1;
    for (size_t i = 0; i < mm->n; i++) {
        struct maildir_rcpt *r = &mm->rcpts[i];
        struct item *it = &j->it[i];
        const char *op = NULL;
        int err = 0;

        it->state = IT_DONE;
        if (rcpt_refused(r))
            continue;
        if ((it->same = first_same(mm->rcpts, i)) != SIZE_MAX) {
            it->state = IT_SAME;
            continue;
        }
        if ((it->b = box_get(md, r, &err, &op)) == NULL) {
            set_sys(r, err, op);
            continue;
        }
        it->state = IT_LINK;
    }
}

/* Writes the file into the tmp/ of the first box that takes it. */
static void
job_write(maildir_t *md, struct job *j)
{
    for (size_t i = 0; i < j->mm->n; i++) {
        struct maildir_rcpt *r = &j->mm->rcpts[i];
        struct item *it = &j->it[i];
        const char *op = NULL;
        int rc;

        if (it->state != IT_LINK)
            continue;
        rc = write_new(md, it->b->tmp_fd, &j->m, j->name, &j->fd, &op);
        if (rc == -ENOENT && (rc = box_renew(md, r, &it->b, &op)) == 0)
            rc = write_new(md, it->b->tmp_fd, &j->m, j->name, &j->fd, &op);
        if (rc == 0) {
            j->home = i;
            return;
        }
        /* As if the copy of its own had failed: the next one tries. */
        set_sys(r, -rc, op);
        it->state = IT_DONE;
    }
}

static void
job_sync(struct job *j)
{
    struct item *h;
    const char *op = NULL;
    int rc;

    if (j->fd < 0)
        return;
    h = &j->it[j->home];
    rc = sync_close(h->b->tmp_fd, j->name, j->fd, &op);
    j->fd = -1;
    if (rc == 0) {
        j->in_tmp = true;
        return;
    }
    set_sys(&j->mm->rcpts[j->home], -rc, op);
    h->state = IT_DONE;
    /* The others try copies of their own, as they would have if this had
     * been the first copy of a delivery of one. */
    for (size_t i = 0; i < j->mm->n; i++)
        if (j->it[i].state == IT_LINK)
            j->it[i].state = IT_COPY;
}

static void
mark_linked(maildir_t *md, struct item *it)
{
    it->state = IT_LINKED;
    it->b->linked = md->batch;
}

/* Links the file into the new/ of every box. */
static void
job_link(maildir_t *md, struct job *j)
{
    struct item *h;
    struct box *hb;

    if (!j->in_tmp)
        return;
    h = &j->it[j->home];
    hb = h->b;
    if (linkat(hb->tmp_fd, j->name, hb->new_fd, j->name, 0) == 0) {
        mark_linked(md, h);
    } else if (errno == ENOENT) {
        /* Its new/ was removed since it was cached: own_copy() opens it
         * afresh. The others still link the file in tmp/. */
        h->state = IT_COPY;
    } else if (!no_link_here(errno)) {
        set_sys(&j->mm->rcpts[j->home], errno, "link new");
        h->state = IT_DONE;
    } else if (renameat(hb->tmp_fd, j->name, hb->new_fd, j->name) == 0) {
        /* No hard links here: the file moves, and the others get copies
         * of their own. The name is unique, so nothing is replaced. */
        mark_linked(md, h);
        j->in_tmp = false;
        j->moved = true;
    } else {
        set_sys(&j->mm->rcpts[j->home], errno, "rename new");
        h->state = IT_DONE;
    }
    for (size_t i = 0; i < j->mm->n; i++) {
        struct item *it = &j->it[i];

        if (it->state != IT_LINK)
            continue;
        /* No link (another file system, a full directory, a removed
         * mailbox, ...): a copy of its own, whose error, if any, is the
         * one reported. */
        if (j->moved ||
            linkat(hb->tmp_fd, j->name, it->b->new_fd, j->name, 0) != 0)
            it->state = IT_COPY;
        else
            mark_linked(md, it);
    }
}

/* fsync's the new/ of each box linked into in this group commit, once. */
static void
job_sync_new(maildir_t *md, struct job *j)
{
    for (size_t i = 0; i < j->mm->n; i++) {
        struct box *b = j->it[i].b;

        if (j->it[i].state != IT_LINKED || b->synced == md->batch)
            continue;
        b->synced = md->batch;
        b->sync_err = fsync(b->new_fd) == 0 ? 0 : errno;
    }
}

/* Sets the outcomes, takes the file out of tmp/, makes the copies of
 * their own, and lets the boxes go. */
static void
job_finish(maildir_t *md, struct job *j)
{
    struct maildir_msg *mm = j->mm;

    for (size_t i = 0; i < mm->n; i++) {
        struct item *it = &j->it[i];

        if (it->state != IT_LINKED)
            continue;
        if (it->b->sync_err != 0) {
            /* Taken out again, so that a copy reported as failed does not
             * turn up later. */
            unlinkat(it->b->new_fd, j->name, 0);
            set_sys(&mm->rcpts[i], it->b->sync_err, "fsync new");
        } else {
            set_ok(&mm->rcpts[i], j->name, i != j->home);
        }
    }
    if (j->in_tmp)
        unlinkat(j->it[j->home].b->tmp_fd, j->name, 0);
    for (size_t i = 0; i < mm->n; i++) {
        struct maildir_rcpt *r = &mm->rcpts[i];
        struct item *it = &j->it[i];
        const char *op = NULL;
        int rc;

        if (it->state != IT_COPY)
            continue;
        if ((rc = own_copy(md, r, &it->b, &j->m, &op)) == 0)
            set_ok(r, r->file, false);
        else
            set_sys(r, -rc, op);
    }
    for (size_t i = 0; i < mm->n; i++) {
        if (j->it[i].state == IT_SAME)
            copy_outcome(&mm->rcpts[i], &mm->rcpts[j->it[i].same]);
        box_put(md, &j->it[i].b);
    }
    free(j->it);
    count_stored(mm);
}

/*
 * Stores nmsgs messages, whose recipients together fit in the cache, each
 * step for all of them before the next step: write every file, fsync
 * every file, link every file into its new/ directories, fsync each new/
 * once, and only then set the outcomes. A message costs its writes and
 * links; the waits for the disk are shared.
 *
 * Why fsync'ing many files costs about one: on ext4 (ordered data,
 * delayed allocation) fsync writes the file's dirty pages, then commits
 * the running journal transaction, which holds every metadata change made
 * since the last commit, and waits for it. write_new() started each
 * file's write-back at once (sync_file_range), and on ext4 that allocates
 * the file's blocks then, so by the first fsync the creation, size and
 * blocks of every file of the batch are in one transaction, which that
 * fsync commits. Each later fsync finds its pages written and the
 * transaction that last changed its inode committed, and returns after at
 * most a disk cache flush. The links go into the next transaction, which
 * the first fsync of a new/ commits for all of them. Other file systems
 * batch differently (XFS forces its log up to the inode's change, which
 * covers the earlier files too); every file and every new/ is still
 * fsync'd, so the durability of a copy never rests on any of this.
 */
static void
group_commit(maildir_t *md, struct maildir_msg *msgs, size_t nmsgs)
{
    struct job *jobs;

    if (nmsgs == 0)
        return;
    jobs = xcalloc(nmsgs, sizeof(*jobs));
    md->batch++;
    for (size_t k = 0; k < nmsgs; k++)
        job_open(md, &jobs[k], &msgs[k]);
    for (size_t k = 0; k < nmsgs; k++)
        job_write(md, &jobs[k]);
    for (size_t k = 0; k < nmsgs; k++)
        job_sync(&jobs[k]);
    for (size_t k = 0; k < nmsgs; k++)
        job_link(md, &jobs[k]);
    for (size_t k = 0; k < nmsgs; k++)
        job_sync_new(md, &jobs[k]);
    for (size_t k = 0; k < nmsgs; k++)
        job_finish(md, &jobs[k]);
    free(jobs);
}

size_t
maildir_deliver_batch(maildir_t *md, struct maildir_msg *msgs, size_t nmsgs)
{
    size_t first = 0, boxes = 0, stored = 0;

    /* A group commit holds every box of its messages open, so they must
     * fit in the cache: a message with more goes alone, the slow way. */
    for (size_t i = 0; i < nmsgs; i++) {
        if (msgs[i].n > md->max_boxes) {
            group_commit(md, msgs + first, i - first);
            deliver_alone(md, &msgs[i]);
            first = i + 1;
            boxes = 0;
            continue;
        }
        if (boxes + msgs[i].n > md->max_boxes) {
            group_commit(md, msgs + first, i - first);
            first = i;
            boxes = 0;
        }
        boxes += msgs[i].n;
    }
    group_commit(md, msgs + first, nmsgs - first);
    for (size_t i = 0; i < nmsgs; i++)
        stored += msgs[i].stored;
    return stored;
}

size_t
maildir_deliver(maildir_t *md, const struct iovec *parts, int nparts,
                struct maildir_rcpt *rcpts, size_t n)
{
    struct maildir_msg mm = {parts, nparts, rcpts, n, 0};

    return maildir_deliver_batch(md, &mm, 1);
}
