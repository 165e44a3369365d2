/*
 * test_maildir.c - the Maildir store (actors/mailbox/maildir.h): mailbox
 * and folder names, unique file names, and deliveries: one file hard-linked
 * into several mailboxes, byte for byte, Maildir++ folders, bad names
 * refused with nothing made outside the mail root, a broken mailbox failing
 * alone, and nothing left in tmp/.
 *
 * Every test runs in its own process (CK_FORK) on its own temporary folder.
 * Errors are forced with a file where a directory should be, not with
 * permissions, because the tests may run as root. A full disk and a second
 * file system are a tmpfs mounted in a mount namespace of the test process
 * alone; where that is not allowed those two tests say so and pass.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>

#include "actors/mailbox/maildir.h"
#include "tests/testlib.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

/* Helpers. */

/* A fresh store in a temporary folder: base/data is the data folder, so
 * base/ shows anything written outside it. */
struct fx {
    char base[64], data[96], mail[112];
    maildir_t *md;
};

static void
fx_init(struct fx *f)
{
    char why[256];

    snprintf(f->base, sizeof(f->base), "/tmp/samotop-maildir-XXXXXX");
    ck_assert_msg(mkdtemp(f->base) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(f->data, sizeof(f->data), "%s/data", f->base);
    snprintf(f->mail, sizeof(f->mail), "%s/mail", f->data);
    f->md = maildir_new(f->data, "host.test", why, sizeof(why));
    ck_assert_msg(f->md != NULL, "maildir_new: %s", why);
}

static void
fx_done(struct fx *f)
{
    maildir_destroy(&f->md);
    ck_assert_msg(f->md == NULL, "maildir_destroy left the pointer set");
    test_rm_tree(f->base);
}

static struct maildir_rcpt
rcpt(const char *mailbox, const char *folder)
{
    return (struct maildir_rcpt){.mailbox = mailbox,
                                 .mailbox_len = strlen(mailbox),
                                 .folder = folder,
                                 .folder_len = folder ? strlen(folder) : 0};
}

static size_t
deliver(struct fx *f, const void *msg, size_t len, struct maildir_rcpt *r,
        size_t n)
{
    struct iovec part = {(void *)msg, len};

    return maildir_deliver(f->md, &part, 1, r, n);
}

/* fx's mail root joined with the printf-made rest, in a static buffer. */
static const char *
at(const struct fx *f, const char *fmt, ...)
{
    static char path[1024];
    int n = snprintf(path, sizeof(path), "%s/", f->mail);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(path + n, sizeof(path) - (size_t)n, fmt, ap);
    va_end(ap);
    return path;
}

/* Entries in dir besides "." and "..", or -1 when it cannot be opened;
 * the only one (when there is one) goes into only. */
static int
entries(const char *dir, char *only, size_t onlylen)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (only && n == 0)
            snprintf(only, onlylen, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static void
want_entries(const char *label, const char *dir, int want)
{
    int got = entries(dir, NULL, 0);

    ck_assert_msg(got == want, "%s: %s: got %d entries, want %d", label, dir,
                  got, want);
}

static void
want_only(const char *label, const char *dir, const char *name)
{
    char only[256] = "";
    int n = entries(dir, only, sizeof(only));

    ck_assert_msg(n == 1 && strcmp(only, name) == 0,
                  "%s: %s: got %d entries (first \"%s\"), want only \"%s\"",
                  label, dir, n, only, name);
}

/* Whether path holds exactly len bytes equal to want. */
static void
want_content(const char *label, const char *path, const void *want, size_t len)
{
    int fd = open(path, O_RDONLY);
    char *got = malloc(len + 1);
    ssize_t n;

    ck_assert_msg(fd >= 0, "%s: open %s: %s", label, path, strerror(errno));
    n = read(fd, got, len + 1);
    close(fd);
    ck_assert_msg(n == (ssize_t)len, "%s: %s: got %zd bytes, want %zu", label,
                  path, n, len);
    ck_assert_msg(memcmp(got, want, len) == 0, "%s: %s: content differs", label,
                  path);
    free(got);
}

static void
want_code(const char *label, const struct maildir_rcpt *r, int code,
          const char *ecode)
{
    ck_assert_msg(r->code == code, "%s: %.*s: got %d, want %d (%s %s)", label,
                  (int)r->mailbox_len, r->mailbox, r->code, code,
                  r->failed_op ? r->failed_op : "-",
                  r->sys_errno ? strerror(r->sys_errno) : "-");
    ck_assert_msg(strcmp(r->ecode, ecode) == 0,
                  "%s: %.*s: ecode: got %s, want %s", label,
                  (int)r->mailbox_len, r->mailbox, r->ecode, ecode);
    ck_assert_msg((code == 250) == (r->file[0] != '\0'),
                  "%s: file \"%s\" with code %d", label, r->file, code);
}

static struct stat
stat_of(const char *path)
{
    struct stat st;

    ck_assert_msg(lstat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    return st;
}

static void
want_mode(const char *label, const char *path, mode_t want)
{
    mode_t got = stat_of(path).st_mode & 07777;

    ck_assert_msg(got == want, "%s: %s: mode %o, want %o", label, path, got,
                  want);
}

/* A message with every byte value, CRLF line ends and a NUL. */
static size_t
test_message(char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap,
                                "Subject: test\r\nFrom: <b@example.org>\r\n"
                                "\r\nbody line\r\n");

    for (int i = 0; i < 256 && n < cap; i++)
        buf[n++] = (char)i;
    return n;
}

/* Names. */

static const struct name_row {
    const char *label, *name;
    size_t len; /* 0: strlen(name) */
    bool want;
} name_rows[] = {
    {"plain", "alice@example.test", 0, true},
    {"dots and digits", "a.b.c9@mx1.example.test", 0, true},
    {"atext", "a+tag_x-y=z!#$%&'*/?^`{|}~@example.test", 0, false},
    {"atext without slash", "a+tag_x-y=z!#$%&'*?^`{|}~@example.test", 0, true},
    {"single-label domain", "root@localhost", 0, true},
    {"hyphen inside a label", "a@ex-ample.test", 0, true},
    {"64-byte local part",
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.test",
     0, true},
    {"65-byte local part",
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.test",
     0, false},
    {"63-byte label",
     "a@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.test",
     0, true},
    {"64-byte label",
     "a@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.test",
     0, false},
    {"empty", "", 0, false},
    {"no at", "alice", 0, false},
    {"two ats", "a@b@example.test", 0, false},
    {"empty local part", "@example.test", 0, false},
    {"empty domain", "alice@", 0, false},
    {"upper-case local part", "Alice@example.test", 0, false},
    {"upper-case domain", "alice@Example.test", 0, false},
    {"slash in local part", "a/b@example.test", 0, false},
    {"slash in domain", "alice@example.test/x", 0, false},
    {"dot-dot climb", "../../etc@example.test", 0, false},
    {"domain dot-dot", "alice@..", 0, false},
    {"domain dot", "alice@.", 0, false},
    {"leading dot", ".alice@example.test", 0, false},
    {"dot", ".@example.test", 0, false},
    {"trailing dot", "alice.@example.test", 0, false},
    {"double dot", "a..b@example.test", 0, false},
    {"domain leading dot", "alice@.example.test", 0, false},
    {"domain trailing dot", "alice@example.test.", 0, false},
    {"domain double dot", "alice@example..test", 0, false},
    {"label starts with hyphen", "alice@-x.test", 0, false},
    {"label ends with hyphen", "alice@x-.test", 0, false},
    {"NUL inside", "alice\0x@example.test", 20, false},
    {"NUL at the end", "alice@example.test\0", 19, false},
    {"space", "al ice@example.test", 0, false},
    {"backslash", "a\\b@example.test", 0, false},
    {"quoted local part", "\"a b\"@example.test", 0, false},
    {"control", "a\tb@example.test", 0, false},
    {"newline", "alice@example.test\n", 0, false},
    {"non-ASCII", "j\xc3\xb6rg@example.test", 0, false},
    {"IP literal", "alice@[127.0.0.1]", 0, false},
    {"underscore in domain", "alice@ex_ample.test", 0, false},
};

START_TEST(test_name_ok)
{
    const struct name_row *r = &name_rows[_i];
    size_t len = r->len ? r->len : strlen(r->name);
    bool got = maildir_name_ok(r->name, len);

    ck_assert_msg(got == r->want, "%s: got %d, want %d", r->label, got,
                  r->want);
}
END_TEST

START_TEST(test_name_too_long)
{
    char name[MAILDIR_NAME_MAX + 2];
    size_t n;

    /* The longest a@<253-byte domain> is fine; one more byte is not. */
    n = (size_t)snprintf(name, sizeof(name), "a@");
    while (n + 63 <= MAILDIR_DOMAIN_MAX + 2) {
        memset(name + n, 'b', 62);
        name[n + 62] = '.';
        n += 63;
    }
    memset(name + n, 'c', MAILDIR_DOMAIN_MAX + 2 - n);
    n = MAILDIR_DOMAIN_MAX + 2;
    name[n] = '\0';
    ck_assert_msg(maildir_name_ok(name, n), "253-byte domain: refused");
    name[n] = 'c';
    name[n + 1] = '\0';
    ck_assert_msg(!maildir_name_ok(name, n + 1), "254-byte domain: taken");
}
END_TEST

static const struct folder_row {
    const char *label, *folder;
    size_t len;
    bool want;
} folder_rows[] = {
    {"plain", ".Spam", 0, true},
    {"hierarchy", ".Lists.samotop", 0, true},
    {"space and UTF-7", ".Sent &AOQ- Items", 0, true},
    {"no leading dot", "Spam", 0, false},
    {"dot", ".", 0, false},
    {"dot-dot", "..", 0, false},
    {"climb", "../../x", 0, false},
    {"empty part", ".a..b", 0, false},
    {"trailing dot", ".a.", 0, false},
    {"slash", ".a/b", 0, false},
    {"backslash", ".a\\b", 0, false},
    {"NUL", ".a\0b", 4, false},
    {"newline", ".a\nb", 0, false},
    {"non-ASCII", ".J\xc3\xa4", 0, false},
    {"empty", "", 0, false},
};

START_TEST(test_folder_ok)
{
    const struct folder_row *r = &folder_rows[_i];
    size_t len = r->len ? r->len : strlen(r->folder);
    bool got = maildir_folder_ok(r->folder, len);

    ck_assert_msg(got == r->want, "%s: got %d, want %d", r->label, got,
                  r->want);
}
END_TEST

/* Unique names. */

START_TEST(test_unique_names)
{
    struct fx f;
    static char names[1000][MAILDIR_FILE_MAX];

    fx_init(&f);
    for (int i = 0; i < 1000; i++) {
        long long secs;
        long usecs, pid;
        unsigned long q;
        int end = 0;

        maildir_unique_name(f.md, 1234, names[i]);
        ck_assert_msg(sscanf(names[i], "%lld.M%ldP%ldQ%lu.%n", &secs, &usecs,
                             &pid, &q, &end) == 4 &&
                          end > 0,
                      "name %d: \"%s\" is not secs.MusecsPpidQn.host", i,
                      names[i]);
        ck_assert_msg(usecs >= 0 && usecs < 1000000, "usecs %ld", usecs);
        ck_assert_msg(pid == getpid(), "pid: got %ld, want %d", pid,
                      (int)getpid());
        ck_assert_msg(strcmp(names[i] + end, "host.test,S=1234") == 0,
                      "name %d: got tail \"%s\", want \"host.test,S=1234\"", i,
                      names[i] + end);
        for (int j = 0; j < i; j++)
            ck_assert_msg(strcmp(names[i], names[j]) != 0,
                          "names %d and %d are both \"%s\"", j, i, names[i]);
    }
    fx_done(&f);
}
END_TEST

static const struct host_row {
    const char *label, *host, *want;
} host_rows[] = {
    {"plain", "mx.example.org", "mx.example.org"},
    {"slash", "a/b", "a\\057b"},
    {"colon", "a:b", "a\\072b"},
    {"comma", "a,b", "a\\054b"},
    {"space", "a b", "a\\040b"},
};

START_TEST(test_host_escaped)
{
    const struct host_row *r = &host_rows[_i];
    struct fx f;
    char why[256], name[MAILDIR_FILE_MAX];
    const char *dot;
    maildir_t *md;

    fx_init(&f);
    md = maildir_new(f.data, r->host, why, sizeof(why));
    ck_assert_msg(md != NULL, "%s: maildir_new: %s", r->label, why);
    maildir_unique_name(md, 7, name);
    dot = strchr(strchr(name, 'Q'), '.') + 1;
    ck_assert_msg(strncmp(dot, r->want, strlen(r->want)) == 0 &&
                      strcmp(dot + strlen(r->want), ",S=7") == 0,
                  "%s: got \"%s\", want host \"%s\"", r->label, name, r->want);
    maildir_destroy(&md);
    fx_done(&f);
}
END_TEST

/* Deliveries. */

/* One message to three mailboxes: one file, three links. */
START_TEST(test_link_shared)
{
    static const char *boxes[] = {"alice@example.test", "bob@example.test",
                                  "carol@other.test"};
    struct maildir_rcpt r[3];
    struct iovec parts[2];
    char msg[512], both[600];
    struct fx f;
    struct stat first = {0};
    size_t len = test_message(msg, sizeof(msg));

    fx_init(&f);
    for (int i = 0; i < 3; i++)
        r[i] = rcpt(boxes[i], NULL);
    /* Two parts, as the actor sends a Return-Path line and the message. */
    parts[0] = (struct iovec){"Return-Path: <b@example.org>\r\n", 30};
    parts[1] = (struct iovec){msg, len};
    memcpy(both, parts[0].iov_base, 30);
    memcpy(both + 30, msg, len);
    ck_assert_int_eq(maildir_deliver(f.md, parts, 2, r, 3), 3);
    for (int i = 0; i < 3; i++) {
        const char *dom = strchr(boxes[i], '@') + 1;
        char user[32], want_s[32];
        struct stat st;

        snprintf(user, sizeof(user), "%.*s", (int)(dom - 1 - boxes[i]),
                 boxes[i]);
        want_code("link", &r[i], 250, "2.0.0");
        ck_assert_msg(strcmp(r[i].file, r[0].file) == 0,
                      "copy %d: file \"%s\", want the shared \"%s\"", i,
                      r[i].file, r[0].file);
        ck_assert_msg(r[i].linked == (i > 0), "copy %d: linked %d", i,
                      r[i].linked);
        snprintf(want_s, sizeof(want_s), ",S=%zu", 30 + len);
        ck_assert_msg(strstr(r[i].file, want_s) != NULL,
                      "file \"%s\" lacks \"%s\"", r[i].file, want_s);
        st = stat_of(at(&f, "%s/%s/new/%s", dom, user, r[i].file));
        if (i == 0)
            first = st;
        ck_assert_msg(st.st_ino == first.st_ino && st.st_dev == first.st_dev,
                      "copy %d: another inode", i);
        ck_assert_msg(st.st_nlink == 3, "copy %d: st_nlink %lu, want 3", i,
                      (unsigned long)st.st_nlink);
        ck_assert_msg((st.st_mode & 07777) == 0600, "file mode %o",
                      st.st_mode & 07777);
        want_content("link", at(&f, "%s/%s/new/%s", dom, user, r[i].file), both,
                     30 + len);
        want_entries("link", at(&f, "%s/%s/tmp", dom, user), 0);
        want_entries("link", at(&f, "%s/%s/cur", dom, user), 0);
        want_entries("link", at(&f, "%s/%s/new", dom, user), 1);
        want_mode("link", at(&f, "%s/%s", dom, user), 0700);
        want_mode("link", at(&f, "%s/%s/tmp", dom, user), 0700);
        want_mode("link", at(&f, "%s/%s/new", dom, user), 0700);
        want_mode("link", at(&f, "%s", dom), 0700);
    }
    fx_done(&f);
}
END_TEST

/* A second delivery to the same mailboxes is a second file. */
START_TEST(test_second_delivery)
{
    struct maildir_rcpt r[2] = {rcpt("alice@example.test", NULL),
                                rcpt("bob@example.test", NULL)};
    char first[MAILDIR_FILE_MAX];
    struct fx f;

    fx_init(&f);
    ck_assert_int_eq(deliver(&f, "one\r\n", 5, r, 2), 2);
    snprintf(first, sizeof(first), "%s", r[0].file);
    ck_assert_int_eq(deliver(&f, "two\r\n", 5, r, 2), 2);
    ck_assert_msg(strcmp(first, r[0].file) != 0, "same name twice: %s", first);
    want_entries("second", at(&f, "example.test/alice/new"), 2);
    want_entries("second", at(&f, "example.test/bob/new"), 2);
    want_content("second", at(&f, "example.test/bob/new/%s", r[1].file),
                 "two\r\n", 5);
    fx_done(&f);
}
END_TEST

START_TEST(test_folder_delivery)
{
    struct maildir_rcpt r[4] = {
        rcpt("alice@example.test", NULL),
        rcpt("alice@example.test", ".Spam"),
        rcpt("bob@example.test", ".Lists.samotop"),
        rcpt("carol@example.test", "INBOX"),
    };
    struct fx f;

    fx_init(&f);
    ck_assert_int_eq(deliver(&f, "hi\r\n", 4, r, 4), 4);
    for (int i = 0; i < 4; i++)
        want_code("folder", &r[i], 250, "2.0.0");
    want_only("folder", at(&f, "example.test/alice/new"), r[0].file);
    want_only("folder", at(&f, "example.test/alice/.Spam/new"), r[1].file);
    want_entries("folder", at(&f, "example.test/alice/.Spam/tmp"), 0);
    want_entries("folder", at(&f, "example.test/alice/.Spam/cur"), 0);
    ck_assert_msg(S_ISREG(stat_of(at(&f, "example.test/alice/.Spam/"
                                         "maildirfolder"))
                              .st_mode),
                  "no maildirfolder file");
    want_only("folder", at(&f, "example.test/bob/.Lists.samotop/new"),
              r[2].file);
    /* Maildir++: the mailbox itself is a Maildir (INBOX) too. */
    want_entries("folder", at(&f, "example.test/bob/new"), 0);
    want_entries("folder", at(&f, "example.test/bob/tmp"), 0);
    want_entries("folder", at(&f, "example.test/bob/cur"), 0);
    /* "INBOX" is the mailbox itself, not a folder: tmp, new, cur only. */
    want_only("folder", at(&f, "example.test/carol/new"), r[3].file);
    want_entries("folder", at(&f, "example.test/carol"), 3);
    fx_done(&f);
}
END_TEST

/* A folder renamed (IMAP RENAME moves its directory) while its
 * directories are open: without maildir_forget() the next delivery
 * follows the open descriptors into the new name; after it, the old name
 * is made afresh and gets the mail. Only that mailbox's boxes go. */
START_TEST(test_forget_after_rename)
{
    struct maildir_rcpt r[3] = {
        rcpt("alice@example.test", ".Spam"),
        rcpt("alice@example.test", NULL),
        rcpt("bob@example.test", ".Spam"),
    };
    char from[600], to[600];
    struct fx f;

    fx_init(&f);
    ck_assert_int_eq(deliver(&f, "one\r\n", 5, r, 3), 3);
    ck_assert_int_eq((int)maildir_cache_size(f.md), 3);
    snprintf(from, sizeof(from), "%s", at(&f, "example.test/alice/.Spam"));
    snprintf(to, sizeof(to), "%s", at(&f, "example.test/alice/.Junk"));
    ck_assert_int_eq(rename(from, to), 0);
    /* Not forgotten: the open descriptors follow the move. */
    r[0] = rcpt("alice@example.test", ".Spam");
    ck_assert_int_eq(deliver(&f, "two\r\n", 5, r, 1), 1);
    want_code("followed", &r[0], 250, "2.0.0");
    want_entries("followed", at(&f, "example.test/alice/.Junk/new"), 2);
    ck_assert_int_eq(access(from, F_OK), -1);
    /* Forgotten: made again under its name. */
    maildir_forget(f.md, "alice@example.tes"); /* a prefix: no one's */
    ck_assert_int_eq((int)maildir_cache_size(f.md), 3);
    maildir_forget(f.md, "alice@example.test");
    ck_assert_int_eq((int)maildir_cache_size(f.md), 1);
    for (int i = 0; i < 3; i++)
        r[i] = rcpt(r[i].mailbox, r[i].folder);
    ck_assert_int_eq(deliver(&f, "three\r\n", 7, r, 3), 3);
    for (int i = 0; i < 3; i++)
        want_code("forgotten", &r[i], 250, "2.0.0");
    want_only("forgotten", at(&f, "example.test/alice/.Spam/new"), r[0].file);
    want_entries("forgotten", at(&f, "example.test/alice/.Junk/new"), 2);
    want_entries("forgotten", at(&f, "example.test/alice/new"), 2);
    want_entries("forgotten", at(&f, "example.test/bob/.Spam/new"), 2);
    fx_done(&f);
}
END_TEST

/* Each bad name beside a good one: refused, and nothing is made for it,
 * inside the mail root or out of it. */
static const struct bad_row {
    const char *label, *mailbox;
    size_t len;
    const char *folder;
} bad_rows[] = {
    {"climb", "../../x@example.test", 0, NULL},
    {"climb domain", "x@..", 0, NULL},
    {"slash", "x@example.test/../../../tmp", 0, NULL},
    {"absolute", "/etc/passwd", 0, NULL},
    {"upper case", "Good@example.test", 0, NULL},
    {"leading dot", ".x@example.test", 0, NULL},
    {"NUL", "good@example.test\0/../../x", 26, NULL},
    {"folder climb", "good@example.test", 0, "../../../x"},
    {"folder slash", "good@example.test", 0, "./x"},
    {"folder dot-dot", "good@example.test", 0, ".."},
    {"folder without dot", "good@example.test", 0, "Spam"},
    {"empty", "", 0, NULL},
};

START_TEST(test_bad_name_refused)
{
    const struct bad_row *b = &bad_rows[_i];
    struct maildir_rcpt r[2];
    struct fx f;

    fx_init(&f);
    r[0] = rcpt(b->mailbox, b->folder);
    if (b->len)
        r[0].mailbox_len = b->len;
    r[1] = rcpt("good@example.test", NULL);
    ck_assert_int_eq(deliver(&f, "hi\r\n", 4, r, 2), 1);
    want_code(b->label, &r[0], 550, "5.1.1");
    want_code(b->label, &r[1], 250, "2.0.0");
    want_only(b->label, f.base, "data");
    want_only(b->label, f.data, "mail");
    want_only(b->label, f.mail, "example.test");
    want_only(b->label, at(&f, "example.test"), "good");
    want_entries(b->label, at(&f, "example.test/good"), 3);
    want_only(b->label, at(&f, "example.test/good/new"), r[1].file);
    fx_done(&f);
}
END_TEST

/* A symbolic link planted in the store is not followed out of it. */
static const struct link_row {
    const char *label, *link, *mailbox;
} link_rows[] = {
    {"mailbox", "example.test/evil", "evil@example.test"},
    {"domain", "evil.test", "x@evil.test"},
    {"new", "example.test/bad/new", "bad@example.test"},
};

START_TEST(test_symlink_not_followed)
{
    const struct link_row *l = &link_rows[_i];
    struct maildir_rcpt r[2] = {rcpt(l->mailbox, NULL),
                                rcpt("good@example.test", NULL)};
    char outside[128], path[1024];
    struct fx f;

    fx_init(&f);
    snprintf(outside, sizeof(outside), "%s/outside", f.base);
    ck_assert_int_eq(mkdir(outside, 0700), 0);
    ck_assert_int_eq(mkdir(at(&f, "example.test"), 0700), 0);
    if (strcmp(l->label, "new") == 0)
        ck_assert_int_eq(mkdir(at(&f, "example.test/bad"), 0700), 0);
    snprintf(path, sizeof(path), "%s", at(&f, "%s", l->link));
    ck_assert_int_eq(symlink(outside, path), 0);
    ck_assert_int_eq(deliver(&f, "hi\r\n", 4, r, 2), 1);
    want_code(l->label, &r[0], 451, "4.3.0");
    want_code(l->label, &r[1], 250, "2.0.0");
    want_entries(l->label, outside, 0);
    want_entries(l->label, at(&f, "example.test/good/tmp"), 0);
    fx_done(&f);
}
END_TEST

/* One broken mailbox among three: it gets 451, the others 250 and still
 * share one file, and no tmp/ keeps anything. */
static const struct broken_row {
    const char *label;
    int victim;
    const char *file; /* made a file, under the victim's mailbox folder */
} broken_rows[] = {
    {"first's new/ is a file", 0, "new"},
    {"middle's new/ is a file", 1, "new"},
    {"last's new/ is a file", 2, "new"},
    {"first's tmp/ is a file", 0, "tmp"},
    {"middle's tmp/ is a file", 1, "tmp"},
    {"first's mailbox is a file", 0, ""},
    {"last's mailbox is a file", 2, ""},
};

START_TEST(test_broken_mailbox)
{
    const struct broken_row *b = &broken_rows[_i];
    static const char *users[] = {"a", "b", "c"};
    struct maildir_rcpt r[3];
    char names[3][64], msg[512];
    size_t len = test_message(msg, sizeof(msg));
    int fd, good = -1;
    struct fx f;

    fx_init(&f);
    for (int i = 0; i < 3; i++) {
        snprintf(names[i], sizeof(names[i]), "%s@example.test", users[i]);
        r[i] = rcpt(names[i], NULL);
    }
    ck_assert_int_eq(mkdir(at(&f, "example.test"), 0700), 0);
    if (*b->file)
        ck_assert_int_eq(
            mkdir(at(&f, "example.test/%s", users[b->victim]), 0700), 0);
    fd = open(at(&f, "example.test/%s%s%s", users[b->victim],
                 *b->file ? "/" : "", b->file),
              O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_msg(fd >= 0, "%s: cannot make the file: %s", b->label,
                  strerror(errno));
    close(fd);
    ck_assert_int_eq(deliver(&f, msg, len, r, 3), 2);
    for (int i = 0; i < 3; i++) {
        if (i == b->victim) {
            want_code(b->label, &r[i], 451, "4.3.0");
            ck_assert_msg(r[i].failed_op != NULL && r[i].sys_errno != 0,
                          "%s: no failed step or errno", b->label);
            continue;
        }
        want_code(b->label, &r[i], 250, "2.0.0");
        want_entries(b->label, at(&f, "example.test/%s/tmp", users[i]), 0);
        want_only(b->label, at(&f, "example.test/%s/new", users[i]), r[i].file);
        want_content(b->label,
                     at(&f, "example.test/%s/new/%s", users[i], r[i].file), msg,
                     len);
        if (good < 0) {
            good = i;
            continue;
        }
        ck_assert_msg(strcmp(r[i].file, r[good].file) == 0,
                      "%s: the good copies are not one file", b->label);
        ck_assert_msg(
            stat_of(at(&f, "example.test/%s/new/%s", users[i], r[i].file))
                    .st_nlink == 2,
            "%s: the good copies are not two links", b->label);
    }
    /* The victim's tmp/ and new/, where they are directories, hold
     * nothing. */
    if (*b->file) {
        int n = entries(at(&f, "example.test/%s/%s", users[b->victim],
                           strcmp(b->file, "new") == 0 ? "tmp" : "new"),
                        NULL, 0);

        ck_assert_msg(n <= 0, "%s: the victim's other folder holds %d",
                      b->label, n);
    }
    fx_done(&f);
}
END_TEST

/* Two recipients ending in one mailbox share its one copy. */
START_TEST(test_same_mailbox_twice)
{
    struct maildir_rcpt r[3] = {rcpt("alice@example.test", NULL),
                                rcpt("alice@example.test", "INBOX"),
                                rcpt("bob@example.test", NULL)};
    struct fx f;

    fx_init(&f);
    ck_assert_int_eq(deliver(&f, "hi\r\n", 4, r, 3), 3);
    for (int i = 0; i < 3; i++) {
        want_code("twice", &r[i], 250, "2.0.0");
        ck_assert_str_eq(r[i].file, r[0].file);
    }
    want_only("twice", at(&f, "example.test/alice/new"), r[0].file);
    ck_assert_int_eq(
        stat_of(at(&f, "example.test/alice/new/%s", r[0].file)).st_nlink, 2);
    fx_done(&f);
}
END_TEST

/* A mailbox on a full file system gets 452 4.2.2; the rest are stored. */
START_TEST(test_no_space)
{
    struct maildir_rcpt r[3] = {rcpt("a@example.test", NULL),
                                rcpt("full@example.test", NULL),
                                rcpt("c@example.test", NULL)};
    size_t len = 256 * 1024;
    char *msg = malloc(len);
    struct fx f;

    if (!test_private_mounts()) {
        fprintf(stderr, "test_no_space: skipped: cannot mount a tmpfs\n");
        free(msg);
        return;
    }
    fx_init(&f);
    memset(msg, 'x', len);
    ck_assert_int_eq(mkdir(at(&f, "example.test"), 0700), 0);
    ck_assert_int_eq(mkdir(at(&f, "example.test/full"), 0700), 0);
    test_mount_tmpfs(at(&f, "example.test/full"), "64k");
    ck_assert_int_eq(deliver(&f, msg, len, r, 3), 2);
    want_code("no space", &r[0], 250, "2.0.0");
    want_code("no space", &r[1], 452, "4.2.2");
    want_code("no space", &r[2], 250, "2.0.0");
    ck_assert_int_eq(r[1].sys_errno, ENOSPC);
    want_entries("no space", at(&f, "example.test/full/tmp"), 0);
    want_entries("no space", at(&f, "example.test/full/new"), 0);
    want_entries("no space", at(&f, "example.test/a/tmp"), 0);
    ck_assert_int_eq(
        stat_of(at(&f, "example.test/c/new/%s", r[2].file)).st_nlink, 2);
    umount2(at(&f, "example.test/full"), MNT_DETACH);
    fx_done(&f);
    free(msg);
}
END_TEST

/* A mailbox on another file system gets a copy of its own (no link). */
START_TEST(test_cross_device_copy)
{
    struct maildir_rcpt r[3] = {rcpt("a@example.test", NULL),
                                rcpt("other@example.test", NULL),
                                rcpt("c@example.test", NULL)};
    char msg[512];
    size_t len = test_message(msg, sizeof(msg));
    struct stat sa, sb, sc;
    struct fx f;

    if (!test_private_mounts()) {
        fprintf(stderr, "test_cross_device_copy: skipped: cannot mount a "
                        "tmpfs\n");
        return;
    }
    fx_init(&f);
    ck_assert_int_eq(mkdir(at(&f, "example.test"), 0700), 0);
    ck_assert_int_eq(mkdir(at(&f, "example.test/other"), 0700), 0);
    test_mount_tmpfs(at(&f, "example.test/other"), "1m");
    ck_assert_int_eq(deliver(&f, msg, len, r, 3), 3);
    for (int i = 0; i < 3; i++)
        want_code("cross", &r[i], 250, "2.0.0");
    ck_assert_msg(!r[1].linked && r[2].linked, "linked: %d %d", r[1].linked,
                  r[2].linked);
    sa = stat_of(at(&f, "example.test/a/new/%s", r[0].file));
    sb = stat_of(at(&f, "example.test/other/new/%s", r[1].file));
    sc = stat_of(at(&f, "example.test/c/new/%s", r[2].file));
    ck_assert_msg(sa.st_ino == sc.st_ino && sa.st_nlink == 2,
                  "a and c are not one file of two links");
    ck_assert_msg(sb.st_dev != sa.st_dev && sb.st_nlink == 1,
                  "the other file system's copy is not its own");
    want_content("cross", at(&f, "example.test/other/new/%s", r[1].file), msg,
                 len);
    want_entries("cross", at(&f, "example.test/other/tmp"), 0);
    want_entries("cross", at(&f, "example.test/a/tmp"), 0);
    umount2(at(&f, "example.test/other"), MNT_DETACH);
    fx_done(&f);
}
END_TEST

/* Group commits. */

/* Descriptors open in this process. */
static int
fd_count(void)
{
    return entries("/proc/self/fd", NULL, 0);
}

/* The folder's directory under its mailbox: "" for INBOX. */
static const char *
folder_dir(const char *folder)
{
    return folder == NULL || strcmp(folder, "INBOX") == 0 ? "" : folder;
}

/* A message whose copies went to the recipients of r[0..n) that were
 * stored: one file, hard-linked, byte for byte, nothing left in tmp/. */
static void
want_stored(const char *label, const struct fx *f, const struct maildir_rcpt *r,
            size_t n, const char *msg, size_t len)
{
    struct stat first = {0};
    size_t links = 0, seen = 0;

    for (size_t i = 0; i < n; i++)
        if (r[i].code == 250) {
            bool dup = false;

            for (size_t j = 0; j < i; j++)
                dup |=
                    r[j].code == 250 && r[j].mailbox_len == r[i].mailbox_len &&
                    memcmp(r[j].mailbox, r[i].mailbox, r[i].mailbox_len) == 0 &&
                    strcmp(folder_dir(r[j].folder), folder_dir(r[i].folder)) ==
                        0;
            links += !dup;
        }
    for (size_t i = 0; i < n; i++) {
        const char *at_ = memchr(r[i].mailbox, '@', r[i].mailbox_len);
        char dir[600];
        struct stat st;

        if (r[i].code != 250)
            continue;
        snprintf(dir, sizeof(dir), "%s/%.*s/%s", at_ + 1,
                 (int)(at_ - r[i].mailbox), r[i].mailbox,
                 folder_dir(r[i].folder));
        want_content(label, at(f, "%s/new/%s", dir, r[i].file), msg, len);
        want_entries(label, at(f, "%s/tmp", dir), 0);
        st = stat_of(at(f, "%s/new/%s", dir, r[i].file));
        if (seen++ == 0)
            first = st;
        ck_assert_msg(st.st_ino == first.st_ino,
                      "%s: %.*s: another inode than the first copy's", label,
                      (int)r[i].mailbox_len, r[i].mailbox);
        ck_assert_msg(st.st_nlink == links, "%s: st_nlink %lu, want %zu", label,
                      (unsigned long)st.st_nlink, links);
    }
}

/* Five messages in one group commit, to overlapping mailboxes, one with
 * a bad name and one naming a mailbox twice: each message is one file
 * linked into its own mailboxes, each mailbox holds what was sent to it,
 * and the counts add up. */
START_TEST(test_batch)
{
    static const char *bodies[] = {"one\r\n", "two\r\n", "three\r\n",
                                   "four\r\n", "five\r\n"};
    struct maildir_rcpt r0[2] = {rcpt("alice@example.test", NULL),
                                 rcpt("bob@example.test", NULL)};
    struct maildir_rcpt r1[1] = {rcpt("alice@example.test", NULL)};
    struct maildir_rcpt r2[2] = {rcpt("bob@example.test", NULL),
                                 rcpt("carol@other.test", ".Spam")};
    struct maildir_rcpt r3[3] = {rcpt("alice@example.test", NULL),
                                 rcpt("alice@example.test", "INBOX"),
                                 rcpt("dave@example.test", NULL)};
    struct maildir_rcpt r4[2] = {rcpt("../x@example.test", NULL),
                                 rcpt("dave@example.test", NULL)};
    struct maildir_rcpt *rs[] = {r0, r1, r2, r3, r4};
    static const size_t ns[] = {2, 1, 2, 3, 2},
                        want_stored_n[] = {2, 1, 2, 3, 1};
    struct iovec parts[5];
    struct maildir_msg mm[5];
    struct fx f;

    fx_init(&f);
    for (int k = 0; k < 5; k++) {
        parts[k] = (struct iovec){(void *)bodies[k], strlen(bodies[k])};
        mm[k] = (struct maildir_msg){&parts[k], 1, rs[k], ns[k], 99};
    }
    ck_assert_int_eq(maildir_deliver_batch(f.md, mm, 5), 9);
    for (int k = 0; k < 5; k++) {
        char label[32];

        snprintf(label, sizeof(label), "batch message %d", k);
        ck_assert_msg(mm[k].stored == want_stored_n[k],
                      "%s: stored %zu, want %zu", label, mm[k].stored,
                      want_stored_n[k]);
        want_stored(label, &f, rs[k], ns[k], bodies[k], strlen(bodies[k]));
        for (size_t i = 0; i < ns[k]; i++)
            if (rs[k][i].code != 250)
                want_code(label, &rs[k][i], 550, "5.1.1");
        for (int j = 0; j < k; j++)
            ck_assert_msg(strcmp(rs[k][ns[k] - 1].file, rs[j][0].file) != 0,
                          "%s: the file name of message %d", label, j);
    }
    ck_assert_str_eq(r3[0].file, r3[1].file);
    want_entries("batch", at(&f, "example.test/alice/new"), 3);
    want_entries("batch", at(&f, "example.test/bob/new"), 2);
    want_entries("batch", at(&f, "example.test/dave/new"), 2);
    want_entries("batch", at(&f, "other.test/carol/.Spam/new"), 1);
    want_entries("batch", at(&f, "other.test/carol/new"), 0);
    fx_done(&f);
}
END_TEST

/* A broken mailbox in a group commit fails its copies alone: the other
 * messages, and the other mailboxes of its messages, are stored. */
START_TEST(test_batch_broken)
{
    struct maildir_rcpt r0[1] = {rcpt("a@example.test", NULL)};
    struct maildir_rcpt r1[2] = {rcpt("broken@example.test", NULL),
                                 rcpt("b@example.test", NULL)};
    struct maildir_rcpt r2[1] = {rcpt("broken@example.test", NULL)};
    struct maildir_rcpt r3[2] = {rcpt("b@example.test", NULL),
                                 rcpt("broken@example.test", NULL)};
    struct iovec part = {"hi\r\n", 4};
    struct maildir_msg mm[4] = {{&part, 1, r0, 1, 0},
                                {&part, 1, r1, 2, 0},
                                {&part, 1, r2, 1, 0},
                                {&part, 1, r3, 2, 0}};
    struct fx f;
    int fd;

    fx_init(&f);
    ck_assert_int_eq(mkdir(at(&f, "example.test"), 0700), 0);
    ck_assert_int_eq(mkdir(at(&f, "example.test/broken"), 0700), 0);
    fd = open(at(&f, "example.test/broken/new"), O_WRONLY | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(maildir_deliver_batch(f.md, mm, 4), 3);
    want_code("broken batch", &r0[0], 250, "2.0.0");
    want_code("broken batch", &r1[0], 451, "4.3.0");
    want_code("broken batch", &r1[1], 250, "2.0.0");
    want_code("broken batch", &r2[0], 451, "4.3.0");
    want_code("broken batch", &r3[0], 250, "2.0.0");
    want_code("broken batch", &r3[1], 451, "4.3.0");
    ck_assert_msg(r1[0].failed_op != NULL && r1[0].sys_errno != 0,
                  "no failed step or errno");
    ck_assert_int_eq(mm[0].stored, 1);
    ck_assert_int_eq(mm[1].stored, 1);
    ck_assert_int_eq(mm[2].stored, 0);
    ck_assert_int_eq(mm[3].stored, 1);
    want_entries("broken batch", at(&f, "example.test/b/new"), 2);
    want_entries("broken batch", at(&f, "example.test/b/tmp"), 0);
    want_entries("broken batch", at(&f, "example.test/a/tmp"), 0);
    want_entries("broken batch", at(&f, "example.test/broken/tmp"), 0);
    fx_done(&f);
}
END_TEST

/* A group commit where one mailbox is on a full file system and one on
 * another file system (no hard links there). */
START_TEST(test_batch_no_space)
{
    struct maildir_rcpt r0[2] = {rcpt("a@example.test", NULL),
                                 rcpt("full@example.test", NULL)};
    struct maildir_rcpt r1[1] = {rcpt("full@example.test", NULL)};
    struct maildir_rcpt r2[3] = {rcpt("other@example.test", NULL),
                                 rcpt("c@example.test", NULL),
                                 rcpt("a@example.test", NULL)};
    size_t len = 256 * 1024;
    char *msg = malloc(len);
    struct iovec part = {msg, len};
    struct maildir_msg mm[3] = {
        {&part, 1, r0, 2, 0}, {&part, 1, r1, 1, 0}, {&part, 1, r2, 3, 0}};
    struct fx f;

    if (!test_private_mounts()) {
        fprintf(stderr, "test_batch_no_space: skipped: cannot mount a "
                        "tmpfs\n");
        free(msg);
        return;
    }
    fx_init(&f);
    memset(msg, 'x', len);
    ck_assert_int_eq(mkdir(at(&f, "example.test"), 0700), 0);
    ck_assert_int_eq(mkdir(at(&f, "example.test/full"), 0700), 0);
    ck_assert_int_eq(mkdir(at(&f, "example.test/other"), 0700), 0);
    test_mount_tmpfs(at(&f, "example.test/full"), "64k");
    test_mount_tmpfs(at(&f, "example.test/other"), "1m");
    ck_assert_int_eq(maildir_deliver_batch(f.md, mm, 3), 4);
    want_code("batch no space", &r0[0], 250, "2.0.0");
    want_code("batch no space", &r0[1], 452, "4.2.2");
    want_code("batch no space", &r1[0], 452, "4.2.2");
    want_code("batch no space", &r2[0], 250, "2.0.0");
    want_code("batch no space", &r2[1], 250, "2.0.0");
    want_code("batch no space", &r2[2], 250, "2.0.0");
    /* The third message was written into other's tmp/, on a file system
     * of its own: c and a could not link that file and have copies of
     * their own. */
    ck_assert_msg(!r2[0].linked && !r2[1].linked && !r2[2].linked,
                  "linked: %d %d %d", r2[0].linked, r2[1].linked, r2[2].linked);
    want_entries("batch no space", at(&f, "example.test/full/tmp"), 0);
    want_entries("batch no space", at(&f, "example.test/full/new"), 0);
    want_entries("batch no space", at(&f, "example.test/other/tmp"), 0);
    want_entries("batch no space", at(&f, "example.test/a/tmp"), 0);
    want_entries("batch no space", at(&f, "example.test/c/tmp"), 0);
    want_entries("batch no space", at(&f, "example.test/a/new"), 2);
    want_content("batch no space", at(&f, "example.test/c/new/%s", r2[1].file),
                 msg, len);
    umount2(at(&f, "example.test/full"), MNT_DETACH);
    umount2(at(&f, "example.test/other"), MNT_DETACH);
    fx_done(&f);
    free(msg);
}
END_TEST

/* A mailbox whose directories go away while they are cached (removed by
 * hand) is made again at the next delivery, which is stored there. */
static const struct removed_row {
    const char *label, *path; /* under the mail root */
} removed_rows[] = {
    {"mailbox removed", "example.test/alice"},
    {"new/ removed", "example.test/alice/new"},
    {"tmp/ removed", "example.test/alice/tmp"},
    {"domain removed", "example.test"},
};

START_TEST(test_cache_removed)
{
    const struct removed_row *w = &removed_rows[_i];
    struct maildir_rcpt r[2] = {rcpt("alice@example.test", NULL),
                                rcpt("bob@example.test", NULL)};
    char path[1024];
    struct fx f;

    fx_init(&f);
    ck_assert_int_eq(deliver(&f, "one\r\n", 5, r, 2), 2);
    ck_assert_int_eq(maildir_cache_size(f.md), 2);
    snprintf(path, sizeof(path), "%s", at(&f, "%s", w->path));
    ck_assert_int_eq(test_rm_tree(path), 0);
    ck_assert_int_eq(deliver(&f, "two\r\n", 5, r, 2), 2);
    want_code(w->label, &r[0], 250, "2.0.0");
    want_code(w->label, &r[1], 250, "2.0.0");
    want_content(w->label, at(&f, "example.test/alice/new/%s", r[0].file),
                 "two\r\n", 5);
    want_entries(w->label, at(&f, "example.test/alice/tmp"), 0);
    want_entries(w->label, at(&f, "example.test/bob/tmp"), 0);
    want_entries(w->label, at(&f, "example.test/bob/new"),
                 strcmp(w->path, "example.test") == 0 ? 1 : 2);
    /* And again, from the cache. */
    ck_assert_int_eq(deliver(&f, "three\r\n", 7, r, 2), 2);
    want_content(w->label, at(&f, "example.test/alice/new/%s", r[0].file),
                 "three\r\n", 7);
    fx_done(&f);
}
END_TEST

/* The cache holds what it is told, and never a descriptor more: a
 * message with more mailboxes than that goes alone (one file, linked),
 * a batch with more is split, and destroying the store closes them all. */
START_TEST(test_cache_bounded)
{
    char names[10][32];
    struct maildir_rcpt r[10], single[10];
    struct iovec part = {"hi\r\n", 4};
    struct maildir_msg mm[10];
    int fds0 = fd_count(), fds1;
    struct fx f;

    fx_init(&f);
    maildir_set_cache_max(f.md, 4);
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof(names[i]), "u%d@example.test", i);
        r[i] = rcpt(names[i], NULL);
        single[i] = rcpt(names[i], NULL);
        mm[i] = (struct maildir_msg){&part, 1, &single[i], 1, 0};
    }
    ck_assert_int_eq(deliver(&f, "hi\r\n", 4, r, 10), 10);
    want_stored("one message, ten mailboxes", &f, r, 10, "hi\r\n", 4);
    ck_assert_msg(maildir_cache_size(f.md) <= 4, "cache holds %zu",
                  maildir_cache_size(f.md));
    ck_assert_int_eq(maildir_deliver_batch(f.md, mm, 10), 10);
    for (int i = 0; i < 10; i++) {
        want_code("ten messages", &single[i], 250, "2.0.0");
        want_entries("ten messages", at(&f, "example.test/u%d/new", i), 2);
        want_entries("ten messages", at(&f, "example.test/u%d/tmp", i), 0);
    }
    ck_assert_msg(maildir_cache_size(f.md) <= 4, "cache holds %zu",
                  maildir_cache_size(f.md));
    /* One mailbox again and again: its two directories stay open, and
     * nothing more is opened. */
    ck_assert_int_eq(deliver(&f, "hi\r\n", 4, r, 1), 1);
    fds1 = fd_count();
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(deliver(&f, "hi\r\n", 4, r, 1), 1);
    ck_assert_int_eq(fd_count(), fds1);
    ck_assert_msg(fds1 <= fds0 + 1 + 2 * 4, "%d fds open, %d before", fds1,
                  fds0);
    fx_done(&f);
    ck_assert_msg(fd_count() == fds0, "%d fds open after destroy, %d before",
                  fd_count(), fds0);
}
END_TEST

/* The data folder is made when it is missing; a file in its place is an
 * error with a reason. */
START_TEST(test_new_store)
{
    char base[64] = "/tmp/samotop-maildir-XXXXXX", path[128], why[256];
    maildir_t *md;
    int fd;

    ck_assert_ptr_nonnull(mkdtemp(base));
    snprintf(path, sizeof(path), "%s/var", base);
    md = maildir_new(path, NULL, why, sizeof(why));
    ck_assert_msg(md != NULL, "missing data folder: %s", why);
    maildir_destroy(&md);
    ck_assert_msg(S_ISDIR(stat_of(path).st_mode), "no data folder");
    snprintf(path, sizeof(path), "%s/var/mail", base);
    ck_assert_msg(S_ISDIR(stat_of(path).st_mode), "no mail folder");
    rmdir(path);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    close(fd);
    snprintf(path, sizeof(path), "%s/var", base);
    md = maildir_new(path, NULL, why, sizeof(why));
    ck_assert_msg(md == NULL, "a file as the mail root was taken");
    ck_assert_msg(strstr(why, "mail") != NULL, "reason \"%s\"", why);
    test_rm_tree(base);
}
END_TEST

static Suite *
maildir_suite(void)
{
    Suite *s = suite_create("maildir");
    TCase *tc;

    tc = tcase_create("names");
    tcase_add_loop_test(tc, test_name_ok, 0, NROWS(name_rows));
    tcase_add_test(tc, test_name_too_long);
    tcase_add_loop_test(tc, test_folder_ok, 0, NROWS(folder_rows));
    suite_add_tcase(s, tc);

    tc = tcase_create("unique_name");
    tcase_add_test(tc, test_unique_names);
    tcase_add_loop_test(tc, test_host_escaped, 0, NROWS(host_rows));
    suite_add_tcase(s, tc);

    tc = tcase_create("deliver");
    tcase_add_test(tc, test_new_store);
    tcase_add_test(tc, test_link_shared);
    tcase_add_test(tc, test_second_delivery);
    tcase_add_test(tc, test_folder_delivery);
    tcase_add_test(tc, test_forget_after_rename);
    tcase_add_loop_test(tc, test_bad_name_refused, 0, NROWS(bad_rows));
    tcase_add_loop_test(tc, test_symlink_not_followed, 0, NROWS(link_rows));
    tcase_add_loop_test(tc, test_broken_mailbox, 0, NROWS(broken_rows));
    tcase_add_test(tc, test_same_mailbox_twice);
    tcase_add_test(tc, test_no_space);
    tcase_add_test(tc, test_cross_device_copy);
    suite_add_tcase(s, tc);

    tc = tcase_create("deliver_batch");
    tcase_add_test(tc, test_batch);
    tcase_add_test(tc, test_batch_broken);
    tcase_add_test(tc, test_batch_no_space);
    tcase_add_loop_test(tc, test_cache_removed, 0, NROWS(removed_rows));
    tcase_add_test(tc, test_cache_bounded);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(maildir_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
