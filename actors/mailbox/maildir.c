#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/xalloc.h"

#include "maildir.h"

struct maildir {
    int root_fd;    /* data/mail, O_DIRECTORY */
    char host[128]; /* escaped for file names */
    unsigned long counter;
};

/* One mailbox's directories, open while its copy is stored. */
struct box {
    int dir_fd, tmp_fd, new_fd;
};

/* The message to store: its parts and their total size. */
struct msg {
    const struct iovec *parts;
    int nparts;
    size_t size;
};

static int subdir(int parent, const char *name, const char **op,
                  const char *op_mkdir, const char *op_open);
static int maildir_dirs(int dir_fd, int *tmp_fd, int *new_fd, const char **op);
static int box_open(maildir_t *md, const struct maildir_rcpt *r, struct box *b,
                    const char **op);
static void box_close(struct box *b);
static int write_file(int dir_fd, const char *name, const struct msg *m,
                      const char **op);
static int publish(int from_fd, int new_fd, const char *name, bool may_move,
                   const char **op);
static int store_copy(maildir_t *md, const struct box *b, const struct msg *m,
                      bool keep_tmp, char name[MAILDIR_FILE_MAX], bool *kept,
                      const char **op);
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
    close(md->root_fd);
    free(md);
    *md_p = NULL;
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

/* Makes (when missing) and opens the directory name under parent. A new
 * entry is made durable by fsync'ing parent, so the chain from the root
 * down to new/ survives a crash along with the message in it. Returns the
 * fd, or a negative errno with the failed step in *op. O_NOFOLLOW: a
 * symbolic link planted in the store is never followed out of it. */
static int
subdir(int parent, const char *name, const char **op, const char *op_mkdir,
       const char *op_open)
{
    int fd;

    if (mkdirat(parent, name, 0700) == 0) {
        if (fsync(parent) != 0) {
            *op = op_mkdir;
            return -errno;
        }
    } else if (errno != EEXIST) {
        *op = op_mkdir;
        return -errno;
    }
    fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
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

/* Opens mail/<domain>/<local>[/<folder>] and its tmp/ and new/, making
 * what is missing (and cur/). The names were checked by the caller. */
static int
box_open(maildir_t *md, const struct maildir_rcpt *r, struct box *b,
         const char **op)
{
    char local[MAILDIR_LOCAL_MAX + 1], domain[MAILDIR_DOMAIN_MAX + 1];
    char folder[MAILDIR_FOLDER_MAX + 1];
    const char *at = memchr(r->mailbox, '@', r->mailbox_len);
    int domain_fd = -1, user_fd = -1, rc = 0;

    b->dir_fd = b->tmp_fd = b->new_fd = -1;
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
        b->dir_fd = user_fd;
        user_fd = -1;
    } else {
        int fd;

        /* In Maildir++ the mailbox itself is INBOX, a Maildir that readers
         * expect to find beside its folders. */
        if ((rc = maildir_dirs(user_fd, NULL, NULL, op)) < 0)
            goto out;
        snprintf(folder, sizeof(folder), "%.*s", (int)r->folder_len, r->folder);
        if ((rc = b->dir_fd = subdir(user_fd, folder, op, "mkdir folder",
                                     "open folder")) < 0)
            goto out;
        /* Maildir++ marks a folder with an empty "maildirfolder" file,
         * which Courier and Dovecot look for. */
        fd = openat(b->dir_fd, "maildirfolder",
                    O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            *op = "create maildirfolder";
            rc = -errno;
            goto out;
        }
        close(fd);
    }
    rc = maildir_dirs(b->dir_fd, &b->tmp_fd, &b->new_fd, op);
out:
    if (domain_fd >= 0)
        close(domain_fd);
    if (user_fd >= 0)
        close(user_fd);
    if (rc < 0)
        box_close(b);
    return rc < 0 ? rc : 0;
}

static void
box_close(struct box *b)
{
    if (b->dir_fd >= 0)
        close(b->dir_fd);
    if (b->tmp_fd >= 0)
        close(b->tmp_fd);
    if (b->new_fd >= 0)
        close(b->new_fd);
    b->dir_fd = b->tmp_fd = b->new_fd = -1;
}

/* Writes m into a new file name under dir_fd and fsync's it. On error
 * the file is removed; returns 0 or a negative errno. */
static int
write_file(int dir_fd, const char *name, const struct msg *m, const char **op)
{
    int fd, rc = 0;

    fd = openat(dir_fd, name,
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        *op = "create tmp";
        return -errno;
    }
    for (int i = 0; i < m->nparts && rc == 0; i++) {
        const char *p = m->parts[i].iov_base;
        size_t left = m->parts[i].iov_len;

        while (left > 0) {
            ssize_t w = write(fd, p, left);

            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                *op = "write tmp";
                rc = -errno;
                break;
            }
            p += w;
            left -= (size_t)w;
        }
    }
    if (rc == 0 && fsync(fd) != 0) {
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

/* Stores one copy in box b: a new unique name (into name), the file written
 * to tmp/ and published into new/. With keep_tmp the tmp/ file is left for
 * more links and *kept says whether it is still there. Returns 0 or a
 * negative errno. */
static int
store_copy(maildir_t *md, const struct box *b, const struct msg *m,
           bool keep_tmp, char name[MAILDIR_FILE_MAX], bool *kept,
           const char **op)
{
    int rc = -EEXIST;

    *kept = false;
    /* A name taken already (another host with our name, a clock step)
     * shows as EEXIST: a fresh name fixes it. */
    for (int tries = 0; tries < 3 && rc == -EEXIST; tries++) {
        maildir_unique_name(md, m->size, name);
        if ((rc = write_file(b->tmp_fd, name, m, op)) != 0)
            continue;
        rc = publish(b->tmp_fd, b->new_fd, name, true, op);
        if (rc == 0 && keep_tmp) {
            *kept = true;
            return 0;
        }
        if (rc != 1)
            unlinkat(b->tmp_fd, name, 0);
        if (rc == 1)
            rc = 0;
    }
    return rc;
}

static void
set_ok(struct maildir_rcpt *r, const char *name, bool linked)
{
    r->code = 250;
    r->ecode = "2.0.0";
    r->text = "delivered";
    if (name != r->file)
        snprintf(r->file, sizeof(r->file), "%s", name);
    r->linked = linked;
}

static void
set_sys(struct maildir_rcpt *r, int err, const char *op)
{
    r->sys_errno = err;
    r->failed_op = op;
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

size_t
maildir_deliver(maildir_t *md, const struct iovec *parts, int nparts,
                struct maildir_rcpt *rcpts, size_t n)
{
    struct msg m = {parts, nparts, 0};
    /* The first copy written stays in its tmp/ under shared_name until
     * every mailbox has had its chance to link it. */
    char shared_name[MAILDIR_FILE_MAX] = "";
    int shared_fd = -1;
    size_t stored = 0;

    for (int i = 0; i < nparts; i++)
        m.size += parts[i].iov_len;
    for (size_t i = 0; i < n; i++) {
        struct maildir_rcpt *r = &rcpts[i];
        const char *op = NULL;
        struct box b;
        bool kept, seen = false;
        int rc;

        r->file[0] = '\0';
        r->sys_errno = 0;
        r->failed_op = NULL;
        r->linked = false;
        if (!maildir_name_ok(r->mailbox, r->mailbox_len) ||
            (!is_inbox(r->folder, r->folder_len) &&
             !maildir_folder_ok(r->folder, r->folder_len))) {
            set_bad_name(r);
            continue;
        }
        /* Two recipients that end in one mailbox (an alias and its target)
         * share its one copy, as Postfix's local(8) does. */
        for (size_t j = 0; j < i && !seen; j++)
            if (same_box(&rcpts[j], r)) {
                r->code = rcpts[j].code;
                r->ecode = rcpts[j].ecode;
                r->text = rcpts[j].text;
                r->sys_errno = rcpts[j].sys_errno;
                r->failed_op = rcpts[j].failed_op;
                r->linked = rcpts[j].linked;
                memcpy(r->file, rcpts[j].file, sizeof(r->file));
                stored += r->code == 250;
                seen = true;
            }
        if (seen)
            continue;
        if ((rc = box_open(md, r, &b, &op)) != 0) {
            set_sys(r, -rc, op);
            continue;
        }
        if (shared_fd >= 0) {
            rc = publish(shared_fd, b.new_fd, shared_name, false, &op);
            if (rc == 0) {
                set_ok(r, shared_name, true);
                stored++;
                box_close(&b);
                continue;
            }
            /* No link here (another file system, a name taken, a full
             * directory, ...): this mailbox gets a copy of its own, and
             * that copy's error, if any, is the one reported. */
            rc = store_copy(md, &b, &m, false, r->file, &kept, &op);
        } else {
            rc = store_copy(md, &b, &m, true, shared_name, &kept, &op);
            if (rc == 0)
                snprintf(r->file, sizeof(r->file), "%s", shared_name);
            /* Without a second fd the tmp/ file cannot wait for the
             * others, who then get copies of their own. */
            if (kept && (shared_fd = dup(b.tmp_fd)) < 0)
                unlinkat(b.tmp_fd, shared_name, 0);
        }
        if (rc == 0) {
            set_ok(r, r->file, false);
            stored++;
        } else {
            r->file[0] = '\0';
            set_sys(r, -rc, op);
        }
        box_close(&b);
    }
    if (shared_fd >= 0) {
        unlinkat(shared_fd, shared_name, 0);
        close(shared_fd);
    }
    return stored;
}
