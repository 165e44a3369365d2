/*
 * test_mstore.c - the IMAP folder store (actors/mailbox/mstore.h): UIDs
 * and UIDVALIDITY kept across reopening, deliveries seen by sync with
 * \Recent for one view only, two views seeing each other's flags and
 * expunges, files deleted or renamed behind the store's back, flags in
 * file names, folders (CREATE, DELETE, RENAME incl. INBOX), LIST patterns,
 * subscriptions, APPEND and COPY UIDs, name checks, two processes adding
 * to one folder at once, and an index file that is corrupt.
 *
 * Every test runs in its own process (CK_FORK) on its own temporary
 * folder; deliveries go through maildir.c as the mailbox actor does them.
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
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "lib/err.h"

#include "actors/mailbox/maildir.h"
#include "actors/mailbox/mstore.h"
#include "tests/testlib.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))
#define ACCT "alice@example.test"

/* Helpers. */

struct fx {
    char base[64], data[96], acct[160];
    maildir_t *md;
    mstore_t *ms;
};

static mstore_t *
open_store(struct fx *f)
{
    char why[256];
    mstore_t *ms = mstore_open(f->data, ACCT, NULL, why, sizeof(why));

    ck_assert_msg(ms != NULL, "mstore_open: %s", why);
    return ms;
}

static void
fx_init(struct fx *f)
{
    char why[256];

    snprintf(f->base, sizeof(f->base), "/tmp/samotop-mstore-XXXXXX");
    ck_assert_msg(mkdtemp(f->base) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(f->data, sizeof(f->data), "%s/data", f->base);
    snprintf(f->acct, sizeof(f->acct), "%s/mail/example.test/alice", f->data);
    f->md = maildir_new(f->data, "host.test", why, sizeof(why));
    ck_assert_msg(f->md != NULL, "maildir_new: %s", why);
    f->ms = open_store(f);
}

static void
fx_done(struct fx *f)
{
    mstore_cache_drop();
    mstore_destroy(&f->ms);
    ck_assert_msg(f->ms == NULL, "mstore_destroy left the pointer set");
    maildir_destroy(&f->md);
    test_rm_tree(f->base);
}

/* Delivers a small message into the folder (NULL: INBOX). */
static void
deliver(struct fx *f, const char *folder, const char *text)
{
    struct maildir_rcpt r = {.mailbox = ACCT,
                             .mailbox_len = strlen(ACCT),
                             .folder = folder,
                             .folder_len = folder ? strlen(folder) : 0};
    struct iovec part = {(void *)text, strlen(text)};

    ck_assert_msg(maildir_deliver(f->md, &part, 1, &r, 1) == 1,
                  "deliver: %d %s", r.code, r.text);
}

static mstore_view_t *
select_ok(mstore_t *ms, const char *name, bool ro)
{
    mstore_view_t *v = mstore_select(ms, name, ro);

    ck_assert_msg(v != NULL, "select %s: %s", name, mstore_err_text(ms));
    return v;
}

static void
sync_ok(mstore_view_t *v, unsigned opts, struct mstore_changes *ch)
{
    int rc = mstore_view_sync(v, opts, ch);

    ck_assert_msg(rc == 0, "sync: %d", rc);
}

/* A one-range set. */
static struct imap_seqset
range(struct imap_seq_range *r, uint32_t lo, uint32_t hi)
{
    r->lo = lo;
    r->hi = hi;
    return (struct imap_seqset){.r = r, .n = 1};
}

static void
store_ok(mstore_view_t *v, uint32_t seq, enum imap_store_op op,
         const char *flag)
{
    struct imap_seq_range r;
    struct imap_seqset set = range(&r, seq, seq);
    const char *flags[] = {flag};
    const uint32_t *seqs;
    size_t n;
    int rc = mstore_store(v, &set, false, op, flags, 1, &seqs, &n);

    ck_assert_msg(rc == 0, "store %s on %u: %d", flag, seq, rc);
    ck_assert_msg(n == 1 && seqs[0] == seq, "store on %u: got %zu seqs", seq,
                  n);
}

/* The only file in dir (a path), its name into name. */
static int
files_in(const char *dir, char *name, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (name != NULL && n == 0)
            snprintf(name, len, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static void
want_uids(const char *label, const mstore_view_t *v, const uint32_t *want,
          size_t n)
{
    ck_assert_msg(mstore_view_exists(v) == n, "%s: exists %u, want %zu", label,
                  mstore_view_exists(v), n);
    for (size_t i = 0; i < n; i++) {
        uint32_t got = mstore_view_msg(v, (uint32_t)i + 1)->uid;

        ck_assert_msg(got == want[i], "%s: seq %zu: uid %u, want %u", label,
                      i + 1, got, want[i]);
    }
}

static void
want_fail(const char *label, mstore_t *ms, int rc, const char *code)
{
    ck_assert_msg(rc < 0, "%s: succeeded", label);
    ck_assert_msg((code == NULL && mstore_err_code(ms) == NULL) ||
                      (code != NULL && mstore_err_code(ms) != NULL &&
                       strcmp(mstore_err_code(ms), code) == 0),
                  "%s: code %s, want %s (%s)", label,
                  mstore_err_code(ms) ? mstore_err_code(ms) : "NULL",
                  code ? code : "NULL", mstore_err_text(ms));
    ck_assert_msg(mstore_err_text(ms)[0] != '\0', "%s: no text", label);
}

static void
cur_file(struct fx *f, int nth, char *name, size_t len)
{
    char dir[256];
    struct dirent **list;
    int n;

    snprintf(dir, sizeof(dir), "%s/cur", f->acct);
    n = scandir(dir, &list, NULL, versionsort);
    ck_assert_msg(n > nth + 2, "cur/ has %d entries", n);
    snprintf(name, len, "%s/%s", dir, list[nth + 2]->d_name);
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

/* UIDs. */

START_TEST(test_uids_kept)
{
    struct fx f;
    mstore_view_t *v;
    uint32_t uidv;
    static const uint32_t want[] = {1, 2, 3};

    fx_init(&f);
    for (int i = 0; i < 3; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nbody\r\n");
    v = select_ok(f.ms, "INBOX", false);
    want_uids("first", v, want, 3);
    ck_assert_msg(mstore_view_recent(v) == 3, "recent %u, want 3",
                  mstore_view_recent(v));
    uidv = mstore_view_uidvalidity(v);
    ck_assert_msg(uidv != 0, "uidvalidity 0");
    ck_assert_msg(mstore_view_uidnext(v) == 4, "uidnext %u",
                  mstore_view_uidnext(v));
    ck_assert_msg(files_in(f.acct, NULL, 0) >= 0, "no account");
    mstore_view_destroy(&v);
    mstore_destroy(&f.ms);

    /* Reopened: same UIDs and UIDVALIDITY, nothing recent any more. */
    f.ms = open_store(&f);
    v = select_ok(f.ms, "inbox", false);
    want_uids("reopened", v, want, 3);
    ck_assert_msg(mstore_view_uidvalidity(v) == uidv, "uidvalidity %u, want %u",
                  mstore_view_uidvalidity(v), uidv);
    ck_assert_msg(mstore_view_recent(v) == 0, "recent %u after reopen",
                  mstore_view_recent(v));
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

START_TEST(test_recent_one_view)
{
    struct fx f;
    mstore_t *ms2;
    mstore_view_t *a, *b;
    struct mstore_changes ch;

    fx_init(&f);
    ms2 = open_store(&f);
    a = select_ok(f.ms, "INBOX", false);
    b = select_ok(ms2, "INBOX", false);
    sync_ok(a, 0, &ch);
    ck_assert_msg(!ch.exists_changed, "nothing new, yet exists changed");
    deliver(&f, NULL, "Subject: new\r\n\r\nhi\r\n");
    sync_ok(a, 0, &ch);
    ck_assert_msg(ch.exists_changed && ch.exists == 1 && ch.recent == 1,
                  "a: exists_changed %d exists %u recent %u", ch.exists_changed,
                  ch.exists, ch.recent);
    ck_assert_msg(strstr(mstore_view_flags_str(a, 1), "\\Recent") != NULL,
                  "a: flags %s", mstore_view_flags_str(a, 1));
    sync_ok(b, 0, &ch);
    ck_assert_msg(ch.exists_changed && ch.exists == 1 && ch.recent == 0,
                  "b: exists_changed %d exists %u recent %u", ch.exists_changed,
                  ch.exists, ch.recent);
    ck_assert_msg(files_in(f.acct, NULL, 0) > 0, "account gone");
    mstore_view_destroy(&a);
    mstore_view_destroy(&b);
    mstore_destroy(&ms2);
    fx_done(&f);
}
END_TEST

/* Deliveries right after a sync, within one timestamp tick of it, are
 * still seen by the next sync (a fresh directory stamp is not trusted). */
START_TEST(test_delivery_after_sync)
{
    struct fx f;
    mstore_view_t *v;
    struct mstore_changes ch;

    fx_init(&f);
    v = select_ok(f.ms, "INBOX", false);
    for (uint32_t i = 1; i <= 30; i++) {
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
        sync_ok(v, 0, &ch);
        ck_assert_msg(ch.exists_changed && ch.exists == i && ch.recent == i,
                      "after delivery %u: exists %u recent %u", i, ch.exists,
                      ch.recent);
        sync_ok(v, 0, &ch);
        ck_assert_msg(!ch.exists_changed && ch.nflags == 0 && ch.nexpunged == 0,
                      "a sync with nothing new reported something");
    }
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* The store stamps cur/ itself after its own changes, without reading it;
 * a change another program makes at that moment is still seen, at the
 * latest by a sync a second later. */
START_TEST(test_own_change_verified)
{
    struct fx f;
    mstore_view_t *v;
    struct mstore_changes ch;
    char path[600], to[600];
    bool seen = false;

    fx_init(&f);
    deliver(&f, NULL, "Subject: 1\r\n\r\n1\r\n");
    deliver(&f, NULL, "Subject: 2\r\n\r\n2\r\n");
    v = select_ok(f.ms, "INBOX", false);
    /* Old enough stamps first, so that the store trusts them. */
    sleep(1);
    sync_ok(v, 0, &ch);
    store_ok(v, 1, IMAP_STORE_ADD, "\\Seen");
    cur_file(&f, 1, path, 500);
    snprintf(to, sizeof(to), "%.500sF", path);
    ck_assert_msg(rename(path, to) == 0, "rename: %s", strerror(errno));
    /* Possibly taken for the store's own change now... */
    sync_ok(v, 0, &ch);
    seen = ch.nflags == 1;
    /* ...but not for long. */
    for (int i = 0; i < 30 && !seen; i++) {
        usleep(100 * 1000);
        sync_ok(v, 0, &ch);
        seen = ch.nflags == 1 && ch.flags[0] == 2;
    }
    ck_assert_msg(seen, "the other program's flag never seen");
    ck_assert_msg(mstore_view_msg(v, 2)->flags == MSTORE_F_FLAGGED,
                  "flags of 2: %x", mstore_view_msg(v, 2)->flags);
    ck_assert_msg(mstore_view_msg(v, 1)->flags == MSTORE_F_SEEN,
                  "flags of 1: %x", mstore_view_msg(v, 1)->flags);
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* Two views: flags and expunges. */

START_TEST(test_flags_seen_by_other)
{
    struct fx f;
    mstore_t *ms2;
    mstore_view_t *a, *b;
    struct mstore_changes ch;
    char dir[256], name[256];

    fx_init(&f);
    deliver(&f, NULL, "Subject: 1\r\n\r\n1\r\n");
    deliver(&f, NULL, "Subject: 2\r\n\r\n2\r\n");
    ms2 = open_store(&f);
    a = select_ok(f.ms, "INBOX", false);
    b = select_ok(ms2, "INBOX", false);
    store_ok(a, 2, IMAP_STORE_ADD, "\\Seen");
    ck_assert_msg(mstore_view_msg(a, 2)->flags == MSTORE_F_SEEN, "a: flags %x",
                  mstore_view_msg(a, 2)->flags);
    sync_ok(a, 0, &ch);
    ck_assert_msg(ch.nflags == 0, "a: own change reported back (%zu)",
                  ch.nflags);
    sync_ok(b, 0, &ch);
    ck_assert_msg(ch.nflags == 1 && ch.flags[0] == 2, "b: %zu flag changes",
                  ch.nflags);
    ck_assert_msg(strcmp(mstore_view_flags_str(b, 2), "\\Seen") == 0,
                  "b: flags \"%s\"", mstore_view_flags_str(b, 2));
    /* A keyword: kept in the index, listed in FLAGS. */
    store_ok(a, 1, IMAP_STORE_ADD, "$Junk");
    sync_ok(b, 0, &ch);
    ck_assert_msg(ch.nflags == 1 && ch.flags[0] == 1 && ch.keywords_changed,
                  "b: %zu flag changes, keywords_changed %d", ch.nflags,
                  ch.keywords_changed);
    ck_assert_msg(strstr(mstore_view_flag_list(b), "$Junk") != NULL,
                  "b: FLAGS %s", mstore_view_flag_list(b));
    ck_assert_msg(strstr(mstore_view_permanent_flags(b), "\\*") != NULL,
                  "b: PERMANENTFLAGS %s", mstore_view_permanent_flags(b));
    ck_assert_msg(strcmp(mstore_view_flags_str(b, 1), "$Junk") == 0,
                  "b: flags \"%s\"", mstore_view_flags_str(b, 1));
    /* \Seen is in the file name, for other Maildir readers. */
    snprintf(dir, sizeof(dir), "%s/cur", f.acct);
    ck_assert_msg(files_in(dir, NULL, 0) == 2, "cur/ holds %d",
                  files_in(dir, NULL, 0));
    {
        DIR *d = opendir(dir);
        struct dirent *e;
        int seen = 0;

        while ((e = readdir(d)) != NULL)
            seen += strstr(e->d_name, ":2,S") != NULL;
        closedir(d);
        ck_assert_msg(seen == 1, "%d files named :2,S", seen);
    }
    (void)name;
    mstore_view_destroy(&a);
    mstore_view_destroy(&b);
    mstore_destroy(&ms2);
    fx_done(&f);
}
END_TEST

START_TEST(test_expunge_seen_by_other)
{
    struct fx f;
    mstore_t *ms2;
    mstore_view_t *a, *b;
    struct mstore_changes ch;
    const uint32_t *exp;
    size_t nexp;
    static const uint32_t left[] = {1, 3, 5};

    fx_init(&f);
    for (int i = 0; i < 5; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    ms2 = open_store(&f);
    a = select_ok(f.ms, "INBOX", false);
    b = select_ok(ms2, "INBOX", false);
    store_ok(a, 2, IMAP_STORE_ADD, "\\Deleted");
    store_ok(a, 4, IMAP_STORE_ADD, "\\Deleted");
    ck_assert_int_eq(mstore_expunge(a, NULL, &exp, &nexp), 0);
    /* RFC 3501 7.4.1: 2 goes, then 4 is number 3. */
    ck_assert_msg(nexp == 2 && exp[0] == 2 && exp[1] == 3,
                  "a: %zu expunges (%u %u)", nexp, nexp ? exp[0] : 0,
                  nexp > 1 ? exp[1] : 0);
    ck_assert_msg(mstore_bytes_delta(f.ms) < 0, "no bytes removed: %lld",
                  (long long)mstore_bytes_delta(f.ms));
    want_uids("a", a, left, 3);

    /* b holds them first (no expunge may go out), then sends them. */
    sync_ok(b, MSTORE_SYNC_HOLD_EXPUNGES, &ch);
    ck_assert_msg(ch.nexpunged == 0 && mstore_view_exists(b) == 5,
                  "b held: %zu expunges, exists %u", ch.nexpunged,
                  mstore_view_exists(b));
    ck_assert_msg(mstore_view_msg(b, 2)->expunged &&
                      !mstore_view_msg(b, 3)->expunged,
                  "b held: wrong messages marked");
    sync_ok(b, 0, &ch);
    ck_assert_msg(ch.nexpunged == 2 && ch.expunged[0] == 2 &&
                      ch.expunged[1] == 3 && !ch.exists_changed,
                  "b: %zu expunges, exists_changed %d", ch.nexpunged,
                  ch.exists_changed);
    want_uids("b", b, left, 3);
    mstore_view_destroy(&a);
    mstore_view_destroy(&b);
    mstore_destroy(&ms2);
    fx_done(&f);
}
END_TEST

/* Views that SELECT a folder nobody changed since share one list of its
 * messages (the same mstore_msg for a number); a change made after they
 * selected reaches each of them through its own sync only, and a view
 * never sees its numbers or flags change before that (RFC 3501 2.3.1.2,
 * 7.4.1). */

/* Delivers n messages and lets a first session claim them, so that the
 * next SELECTs have nothing \Recent of their own. */
static void
settled(struct fx *f, int n)
{
    mstore_view_t *v;

    for (int i = 0; i < n; i++)
        deliver(f, NULL, "Subject: x\r\n\r\nx\r\n");
    v = select_ok(f->ms, "INBOX", false);
    ck_assert_msg(mstore_view_recent(v) == (uint32_t)n, "claimed %u, want %d",
                  mstore_view_recent(v), n);
    mstore_view_destroy(&v);
}

START_TEST(test_shared_view_delivery)
{
    struct fx f;
    mstore_t *ms2, *ms3, *ms4;
    mstore_view_t *a, *b, *c, *d;
    struct mstore_changes ch;
    static const uint32_t three[] = {1, 2, 3}, four[] = {1, 2, 3, 4};

    fx_init(&f);
    settled(&f, 3);
    ms2 = open_store(&f);
    ms3 = open_store(&f);
    ms4 = open_store(&f);
    a = select_ok(f.ms, "INBOX", false);
    b = select_ok(ms2, "INBOX", false);
    ck_assert_msg(mstore_view_msg(a, 1) == mstore_view_msg(b, 1),
                  "two SELECTs of an unchanged folder made two copies");
    ck_assert_msg(mstore_view_recent(b) == 0 &&
                      mstore_view_first_unseen(b) == 1,
                  "b: recent %u first unseen %u", mstore_view_recent(b),
                  mstore_view_first_unseen(b));
    deliver(&f, NULL, "Subject: new\r\n\r\nnew\r\n");
    /* a's sync claims the new one (\Recent for a alone). */
    sync_ok(a, 0, &ch);
    ck_assert_msg(ch.exists_changed && ch.exists == 4 && ch.recent == 1,
                  "a: exists_changed %d exists %u recent %u", ch.exists_changed,
                  ch.exists, ch.recent);
    want_uids("a", a, four, 4);
    /* b, not synced yet, still has its three. */
    want_uids("b before its sync", b, three, 3);
    ck_assert_msg(mstore_view_seq(b, 4) == 0, "b knows uid 4 before its sync");
    sync_ok(b, 0, &ch);
    ck_assert_msg(ch.exists_changed && ch.exists == 4 && ch.recent == 0 &&
                      ch.nexpunged == 0 && ch.nflags == 0,
                  "b: exists_changed %d exists %u recent %u exp %zu flags %zu",
                  ch.exists_changed, ch.exists, ch.recent, ch.nexpunged,
                  ch.nflags);
    want_uids("b", b, four, 4);
    /* A new session after the delivery: all four, none recent (a has
     * it). */
    c = select_ok(ms3, "INBOX", false);
    want_uids("c", c, four, 4);
    ck_assert_msg(mstore_view_recent(c) == 0 && !mstore_view_msg(c, 4)->recent,
                  "c: recent %u", mstore_view_recent(c));
    ck_assert_msg(mstore_view_msg(a, 4)->recent && mstore_view_recent(a) == 1,
                  "a lost its \\Recent");
    /* c's list is shared; a keeps its own (its \Recent). */
    ck_assert_msg(mstore_view_msg(a, 1) != mstore_view_msg(c, 1),
                  "a's list with \\Recent is shared");
    sync_ok(b, 0, &ch);
    ck_assert_msg(!ch.exists_changed && ch.nflags == 0,
                  "b: a sync with nothing new reported something");
    /* EXAMINE with a message still in new/: \Recent in that view only,
     * the others untouched until they sync. */
    deliver(&f, NULL, "Subject: newer\r\n\r\nnewer\r\n");
    d = select_ok(ms4, "INBOX", true);
    ck_assert_msg(mstore_view_exists(d) == 5 && mstore_view_recent(d) == 1 &&
                      mstore_view_msg(d, 5)->recent,
                  "d: exists %u recent %u", mstore_view_exists(d),
                  mstore_view_recent(d));
    want_uids("c before its sync", c, four, 4);
    want_uids("b before its sync", b, four, 4);
    sync_ok(c, 0, &ch);
    ck_assert_msg(ch.exists_changed && ch.exists == 5 && ch.recent == 1,
                  "c: exists_changed %d exists %u recent %u", ch.exists_changed,
                  ch.exists, ch.recent);
    sync_ok(b, 0, &ch);
    ck_assert_msg(ch.exists_changed && ch.exists == 5 && ch.recent == 0,
                  "b: exists_changed %d exists %u recent %u", ch.exists_changed,
                  ch.exists, ch.recent);
    mstore_view_destroy(&a);
    mstore_view_destroy(&b);
    mstore_view_destroy(&c);
    mstore_view_destroy(&d);
    mstore_destroy(&ms2);
    mstore_destroy(&ms3);
    mstore_destroy(&ms4);
    fx_done(&f);
}
END_TEST

/* Two sessions change different flags on a shared list: each sees its
 * own at once and the other's at its next sync; a third that changed
 * nothing sees both then, and not before. */
START_TEST(test_shared_view_flags)
{
    struct fx f;
    mstore_t *ms2, *ms3, *ms4;
    mstore_view_t *a, *b, *c, *d;
    struct mstore_changes ch;

    fx_init(&f);
    settled(&f, 3);
    ms2 = open_store(&f);
    ms3 = open_store(&f);
    ms4 = open_store(&f);
    a = select_ok(f.ms, "INBOX", false);
    b = select_ok(ms2, "INBOX", false);
    c = select_ok(ms3, "INBOX", false);
    store_ok(a, 1, IMAP_STORE_ADD, "\\Seen");
    store_ok(b, 2, IMAP_STORE_ADD, "\\Seen");
    store_ok(b, 3, IMAP_STORE_ADD, "\\Flagged");
    ck_assert_msg(mstore_view_msg(a, 1)->flags == MSTORE_F_SEEN &&
                      mstore_view_msg(a, 2)->flags == 0,
                  "a: flags %x %x", mstore_view_msg(a, 1)->flags,
                  mstore_view_msg(a, 2)->flags);
    ck_assert_msg(mstore_view_msg(b, 1)->flags == 0 &&
                      mstore_view_msg(b, 2)->flags == MSTORE_F_SEEN,
                  "b: flags %x %x", mstore_view_msg(b, 1)->flags,
                  mstore_view_msg(b, 2)->flags);
    /* c changed nothing and has not synced: the flags it was told. */
    for (uint32_t i = 1; i <= 3; i++)
        ck_assert_msg(mstore_view_msg(c, i)->flags == 0,
                      "c: message %u has flags %x before its sync", i,
                      mstore_view_msg(c, i)->flags);
    ck_assert_msg(mstore_view_first_unseen(c) == 1, "c: first unseen %u",
                  mstore_view_first_unseen(c));
    /* A new session: both changes, and the first unseen after them. */
    d = select_ok(ms4, "INBOX", false);
    ck_assert_msg(mstore_view_msg(d, 1)->flags == MSTORE_F_SEEN &&
                      mstore_view_msg(d, 2)->flags == MSTORE_F_SEEN &&
                      mstore_view_msg(d, 3)->flags == MSTORE_F_FLAGGED,
                  "d: flags %x %x %x", mstore_view_msg(d, 1)->flags,
                  mstore_view_msg(d, 2)->flags, mstore_view_msg(d, 3)->flags);
    ck_assert_msg(mstore_view_first_unseen(d) == 3, "d: first unseen %u",
                  mstore_view_first_unseen(d));
    sync_ok(a, 0, &ch);
    ck_assert_msg(ch.nflags == 2 && ch.flags[0] == 2 && ch.flags[1] == 3 &&
                      !ch.exists_changed,
                  "a: %zu flag changes", ch.nflags);
    sync_ok(b, 0, &ch);
    ck_assert_msg(ch.nflags == 1 && ch.flags[0] == 1, "b: %zu flag changes",
                  ch.nflags);
    sync_ok(c, 0, &ch);
    ck_assert_msg(ch.nflags == 3 && ch.flags[0] == 1 && ch.flags[2] == 3,
                  "c: %zu flag changes", ch.nflags);
    ck_assert_msg(mstore_view_first_unseen(c) == 3 &&
                      mstore_view_msg(c, 3)->flags == MSTORE_F_FLAGGED,
                  "c: first unseen %u", mstore_view_first_unseen(c));
    /* All four agree now, and share one list again. */
    for (uint32_t i = 1; i <= 3; i++)
        ck_assert_msg(
            mstore_view_msg(a, i)->flags == mstore_view_msg(d, i)->flags &&
                mstore_view_msg(b, i)->flags == mstore_view_msg(d, i)->flags,
            "message %u: flags differ after the syncs", i);
    ck_assert_msg(mstore_view_msg(a, 1) == mstore_view_msg(d, 1) &&
                      mstore_view_msg(c, 1) == mstore_view_msg(d, 1),
                  "views of the same index did not share their list");
    /* d's own change afterwards leaves the others' lists as they were. */
    store_ok(d, 3, IMAP_STORE_REMOVE, "\\Flagged");
    ck_assert_msg(mstore_view_msg(d, 3)->flags == 0 &&
                      mstore_view_msg(a, 3)->flags == MSTORE_F_FLAGGED,
                  "d's STORE: d %x a %x", mstore_view_msg(d, 3)->flags,
                  mstore_view_msg(a, 3)->flags);
    sync_ok(a, 0, &ch);
    ck_assert_msg(ch.nflags == 1 && ch.flags[0] == 3 &&
                      mstore_view_msg(a, 3)->flags == 0,
                  "a: %zu flag changes after d's STORE", ch.nflags);
    mstore_view_destroy(&a);
    mstore_view_destroy(&b);
    mstore_view_destroy(&c);
    mstore_view_destroy(&d);
    mstore_destroy(&ms2);
    mstore_destroy(&ms3);
    mstore_destroy(&ms4);
    fx_done(&f);
}
END_TEST

/* An expunge by one session: another on the shared list keeps every
 * number (held, then told) until its own sync. */
START_TEST(test_shared_view_expunge)
{
    struct fx f;
    mstore_t *ms2;
    mstore_view_t *a, *b;
    struct mstore_changes ch;
    const uint32_t *exp;
    size_t nexp;
    static const uint32_t all[] = {1, 2, 3, 4}, left[] = {1, 3, 4};

    fx_init(&f);
    settled(&f, 4);
    ms2 = open_store(&f);
    a = select_ok(f.ms, "INBOX", false);
    b = select_ok(ms2, "INBOX", false);
    store_ok(a, 2, IMAP_STORE_ADD, "\\Deleted");
    ck_assert_int_eq(mstore_expunge(a, NULL, &exp, &nexp), 0);
    ck_assert_msg(nexp == 1 && exp[0] == 2, "a: %zu expunges", nexp);
    want_uids("a", a, left, 3);
    want_uids("b before its sync", b, all, 4);
    ck_assert_msg(!mstore_view_msg(b, 2)->expunged, "b: marked before a sync");
    sync_ok(b, MSTORE_SYNC_HOLD_EXPUNGES, &ch);
    ck_assert_msg(ch.nexpunged == 0 && mstore_view_exists(b) == 4 &&
                      mstore_view_msg(b, 2)->expunged,
                  "b held: %zu expunges, exists %u", ch.nexpunged,
                  mstore_view_exists(b));
    sync_ok(b, 0, &ch);
    ck_assert_msg(ch.nexpunged == 1 && ch.expunged[0] == 2, "b: %zu expunges",
                  ch.nexpunged);
    want_uids("b", b, left, 3);
    mstore_view_destroy(&a);
    mstore_view_destroy(&b);
    mstore_destroy(&ms2);
    fx_done(&f);
}
END_TEST

/* STATUS counts kept per change of the index: each change shows in the
 * next STATUS (RFC 3501 6.3.10). */
START_TEST(test_status_counts_follow_changes)
{
    struct fx f;
    mstore_t *ms2;
    mstore_view_t *v;
    struct imap_status_values st;
    const uint32_t *exp;
    size_t nexp;

    fx_init(&f);
    for (int i = 0; i < 3; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    ms2 = open_store(&f);
    ck_assert_int_eq(mstore_status(ms2, "INBOX", &st), 0);
    ck_assert_msg(st.messages == 3 && st.recent == 3 && st.unseen == 3,
                  "new: messages %u recent %u unseen %u", st.messages,
                  st.recent, st.unseen);
    ck_assert_int_eq(mstore_status(ms2, "INBOX", &st), 0);
    ck_assert_msg(st.recent == 3 && st.unseen == 3,
                  "again: recent %u unseen %u", st.recent, st.unseen);
    v = select_ok(f.ms, "INBOX", false); /* claims all three */
    ck_assert_int_eq(mstore_status(ms2, "INBOX", &st), 0);
    ck_assert_msg(st.recent == 0 && st.unseen == 3,
                  "claimed: recent %u unseen %u", st.recent, st.unseen);
    store_ok(v, 1, IMAP_STORE_ADD, "\\Seen");
    ck_assert_int_eq(mstore_status(ms2, "INBOX", &st), 0);
    ck_assert_msg(st.unseen == 2, "after STORE: unseen %u", st.unseen);
    store_ok(v, 2, IMAP_STORE_ADD, "\\Deleted");
    ck_assert_int_eq(mstore_expunge(v, NULL, &exp, &nexp), 0);
    ck_assert_int_eq(mstore_status(ms2, "INBOX", &st), 0);
    ck_assert_msg(st.messages == 2 && st.unseen == 1,
                  "after EXPUNGE: messages %u unseen %u", st.messages,
                  st.unseen);
    deliver(&f, NULL, "Subject: y\r\n\r\ny\r\n");
    ck_assert_int_eq(mstore_status(ms2, "INBOX", &st), 0);
    ck_assert_msg(st.messages == 3 && st.recent == 1 && st.unseen == 2,
                  "after delivery: messages %u recent %u unseen %u",
                  st.messages, st.recent, st.unseen);
    mstore_view_destroy(&v);
    mstore_destroy(&ms2);
    fx_done(&f);
}
END_TEST

/* Behind the store's back: a Maildir tool deletes or renames files. */

START_TEST(test_deleted_behind)
{
    struct fx f;
    mstore_view_t *v;
    struct mstore_changes ch;
    char path[512];
    static const uint32_t left[] = {1, 3};

    fx_init(&f);
    for (int i = 0; i < 3; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    v = select_ok(f.ms, "INBOX", false);
    cur_file(&f, 1, path, sizeof(path));
    ck_assert_msg(unlink(path) == 0, "unlink %s: %s", path, strerror(errno));
    sync_ok(v, 0, &ch);
    ck_assert_msg(ch.nexpunged == 1 && ch.expunged[0] == 2,
                  "%zu expunges (first %u)", ch.nexpunged,
                  ch.nexpunged ? ch.expunged[0] : 0);
    want_uids("after", v, left, 2);
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

START_TEST(test_renamed_behind)
{
    struct fx f;
    mstore_view_t *v;
    struct mstore_changes ch;
    char path[600], to[600];
    struct mstore_map m;
    static const uint32_t all[] = {1, 2};

    fx_init(&f);
    deliver(&f, NULL, "Subject: one\r\n\r\n1\r\n");
    deliver(&f, NULL, "Subject: two\r\n\r\n2\r\n");
    v = select_ok(f.ms, "INBOX", false);
    cur_file(&f, 1, path, 500);
    ck_assert_msg(strstr(path, ":2,") != NULL, "no :2, in %s", path);
    /* As mutt does it: the same base name with new flags. */
    snprintf(to, sizeof(to), "%.500sFS", path);
    ck_assert_msg(rename(path, to) == 0, "rename: %s", strerror(errno));
    sync_ok(v, 0, &ch);
    ck_assert_msg(ch.nexpunged == 0 && ch.nflags == 1 && ch.flags[0] == 2,
                  "%zu expunges, %zu flag changes", ch.nexpunged, ch.nflags);
    want_uids("after", v, all, 2);
    ck_assert_msg(mstore_view_msg(v, 2)->flags ==
                      (MSTORE_F_FLAGGED | MSTORE_F_SEEN),
                  "flags %x", mstore_view_msg(v, 2)->flags);
    /* Renamed again with no sync: reading still finds it. */
    memcpy(path, to, sizeof(path));
    snprintf(to, sizeof(to), "%.*sRS", (int)(strlen(path) - 2), path);
    ck_assert_msg(rename(path, to) == 0, "rename: %s", strerror(errno));
    ck_assert_int_eq(mstore_map(v, 2, &m), 0);
    ck_assert_msg(m.len == strlen("Subject: two\r\n\r\n2\r\n") &&
                      memcmp(m.data, "Subject: two", 12) == 0,
                  "content of 2: %zu octets", m.len);
    mstore_unmap(&m);
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

START_TEST(test_flags_round_trip)
{
    struct fx f;
    mstore_view_t *v;
    struct imap_seq_range r;
    struct imap_seqset set = range(&r, 1, 1);
    const char *all[] = {"\\Draft", "\\Flagged", "\\Answered",
                         "\\Seen",  "\\Deleted", "$Label1"};
    const uint32_t *seqs;
    size_t n;
    char path[512];
    unsigned want = MSTORE_F_DRAFT | MSTORE_F_FLAGGED | MSTORE_F_ANSWERED |
                    MSTORE_F_SEEN | MSTORE_F_DELETED;

    fx_init(&f);
    deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    v = select_ok(f.ms, "INBOX", false);
    ck_assert_int_eq(
        mstore_store(v, &set, false, IMAP_STORE_SET, all, 6, &seqs, &n), 0);
    cur_file(&f, 0, path, sizeof(path));
    ck_assert_msg(strlen(path) > 8 &&
                      strcmp(path + strlen(path) - 8, ":2,DFRST") == 0,
                  "file name %s", path);
    mstore_view_destroy(&v);
    mstore_destroy(&f.ms);
    f.ms = open_store(&f);
    v = select_ok(f.ms, "INBOX", false);
    ck_assert_msg(mstore_view_msg(v, 1)->flags == want, "flags %x, want %x",
                  mstore_view_msg(v, 1)->flags, want);
    ck_assert_msg(strcmp(mstore_view_flags_str(v, 1),
                         "\\Answered \\Flagged \\Deleted \\Seen \\Draft "
                         "$Label1") == 0,
                  "flags \"%s\"", mstore_view_flags_str(v, 1));
    /* -FLAGS takes some away. */
    ck_assert_int_eq(
        mstore_store(v, &set, false, IMAP_STORE_REMOVE, all, 2, &seqs, &n), 0);
    ck_assert_msg(mstore_view_msg(v, 1)->flags ==
                      (want & ~(MSTORE_F_DRAFT | MSTORE_F_FLAGGED)),
                  "after -FLAGS: %x", mstore_view_msg(v, 1)->flags);
    cur_file(&f, 0, path, sizeof(path));
    ck_assert_msg(strcmp(path + strlen(path) - 6, ":2,RST") == 0,
                  "file name %s", path);
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* UIDs follow the order of delivery, also within one second. */
START_TEST(test_delivery_order)
{
    struct fx f;
    mstore_view_t *v;
    char text[64];
    struct mstore_map m;

    fx_init(&f);
    for (int i = 1; i <= 40; i++) {
        snprintf(text, sizeof(text), "Subject: %d\r\n\r\n%d\r\n", i, i);
        deliver(&f, NULL, text);
    }
    v = select_ok(f.ms, "INBOX", false);
    ck_assert_uint_eq(mstore_view_exists(v), 40);
    for (uint32_t s = 1; s <= 40; s++) {
        ck_assert_int_eq(mstore_map(v, s, &m), 0);
        snprintf(text, sizeof(text), "Subject: %u\r\n", s);
        ck_assert_msg(
            m.len > strlen(text) && memcmp(m.data, text, strlen(text)) == 0,
            "uid %u holds \"%.12s\"", mstore_view_msg(v, s)->uid, m.data);
        mstore_unmap(&m);
    }
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* A folder deleted under an open view ends that view's UIDs. */
START_TEST(test_deleted_under_view)
{
    struct fx f;
    mstore_t *ms2;
    mstore_view_t *v;
    struct mstore_changes ch;
    struct mstore_map m;

    fx_init(&f);
    ck_assert_int_eq(mstore_create(f.ms, "Trash"), 0);
    deliver(&f, ".Trash", "Subject: t\r\n\r\nt\r\n");
    v = select_ok(f.ms, "Trash", false);
    ck_assert_uint_eq(mstore_view_exists(v), 1);
    ms2 = open_store(&f);
    ck_assert_int_eq(mstore_delete(ms2, "Trash"), 0);
    ck_assert_msg(mstore_bytes_delta(ms2) < 0, "delete delta %lld",
                  (long long)mstore_bytes_delta(ms2));
    sync_ok(v, 0, &ch);
    ck_assert_msg(ch.uidvalidity_changed, "deletion not reported");
    ck_assert_msg(mstore_map(v, 1, &m) != 0, "read a deleted message");
    mstore_view_destroy(&v);
    mstore_destroy(&ms2);
    fx_done(&f);
}
END_TEST

/* UID EXPUNGE (RFC 4315 2.1): only the \Deleted ones of the set. */
START_TEST(test_uid_expunge)
{
    struct fx f;
    mstore_view_t *v;
    struct imap_seq_range r;
    struct imap_seqset set;
    const uint32_t *exp;
    size_t nexp;
    static const uint32_t left[] = {1, 3, 4};

    fx_init(&f);
    for (int i = 0; i < 4; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    v = select_ok(f.ms, "INBOX", false);
    store_ok(v, 2, IMAP_STORE_ADD, "\\Deleted");
    store_ok(v, 4, IMAP_STORE_ADD, "\\Deleted");
    set = range(&r, 1, 2);
    ck_assert_int_eq(mstore_expunge(v, &set, &exp, &nexp), 0);
    ck_assert_msg(nexp == 1 && exp[0] == 2, "%zu expunges", nexp);
    want_uids("after", v, left, 3);
    ck_assert_msg(mstore_view_msg(v, 3)->flags & MSTORE_F_DELETED,
                  "4 lost \\Deleted");
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* COPY into the folder itself, and the keyword table's limit. */
START_TEST(test_copy_self_and_keyword_limit)
{
    struct fx f;
    mstore_view_t *v;
    struct mstore_changes ch;
    struct mstore_copied out;
    struct imap_seq_range r;
    struct imap_seqset set;
    char kw[32];
    int rc = 0, i;

    fx_init(&f);
    deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    v = select_ok(f.ms, "INBOX", false);
    set = range(&r, 1, 1);
    ck_assert_int_eq(mstore_copy(v, &set, false, "INBOX", &out), 0);
    ck_assert_msg(out.n == 1 && out.src_uids[0] == 1 && out.dst_uids[0] == 2,
                  "self copy: n %zu", out.n);
    sync_ok(v, 0, &ch);
    ck_assert_msg(ch.exists_changed && ch.exists == 2, "exists %u", ch.exists);
    for (i = 0; i < 70 && rc == 0; i++) {
        const char *flags[1] = {kw};
        const uint32_t *seqs;
        size_t n;

        snprintf(kw, sizeof(kw), "$k%d", i);
        rc = mstore_store(v, &set, false, IMAP_STORE_ADD, flags, 1, &seqs, &n);
    }
    ck_assert_msg(i == 65, "keyword %d refused, want the 65th", i);
    want_fail("65th keyword", f.ms, rc, "LIMIT");
    ck_assert_msg(strstr(mstore_view_permanent_flags(v), "\\*") == NULL,
                  "\\* still offered: %s", mstore_view_permanent_flags(v));
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* EXAMINE: recent seen but not taken, nothing changes. */
START_TEST(test_examine)
{
    struct fx f;
    mstore_view_t *ro, *rw;
    struct imap_seq_range r;
    struct imap_seqset set = range(&r, 1, 1);
    const char *flags[] = {"\\Seen"};
    const uint32_t *seqs;
    size_t n;

    fx_init(&f);
    deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    ro = select_ok(f.ms, "INBOX", true);
    ck_assert_uint_eq(mstore_view_recent(ro), 1);
    want_fail(
        "store read-only", f.ms,
        mstore_store(ro, &set, false, IMAP_STORE_ADD, flags, 1, &seqs, &n),
        "CANNOT");
    ck_assert_str_eq(mstore_view_permanent_flags(ro), "");
    /* A delivery changes new/ alone: seen without reading cur/. */
    {
        struct mstore_changes ch;
        struct imap_status_values st;

        deliver(&f, NULL, "Subject: y\r\n\r\ny\r\n");
        sync_ok(ro, 0, &ch);
        ck_assert_msg(ch.exists_changed && ch.exists == 2 && ch.recent == 2,
                      "ro: exists %u recent %u", ch.exists, ch.recent);
        ck_assert_int_eq(mstore_status(f.ms, "INBOX", &st), 0);
        ck_assert_msg(st.messages == 2 && st.recent == 2 && st.unseen == 2 &&
                          st.uidnext == 3,
                      "status: %u %u %u %u", st.messages, st.recent, st.unseen,
                      st.uidnext);
    }
    mstore_view_destroy(&ro);
    rw = select_ok(f.ms, "INBOX", false);
    ck_assert_msg(mstore_view_recent(rw) == 2, "recent taken by EXAMINE");
    mstore_view_destroy(&rw);
    fx_done(&f);
}
END_TEST

static int
open_fds(void)
{
    return files_in("/proc/self/fd", NULL, 0);
}

/* An idle session's selected folder holds four descriptors (the folder,
 * new/, cur/ and its index); nothing leaks across operations. */
START_TEST(test_descriptors)
{
    struct fx f;
    mstore_view_t *v;
    struct mstore_changes ch;
    struct mstore_copied out;
    struct imap_status_values st;
    int before, selected;

    fx_init(&f);
    deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    ck_assert_int_eq(mstore_create(f.ms, "Other"), 0);
    before = open_fds();
    v = select_ok(f.ms, "INBOX", false);
    selected = open_fds();
    ck_assert_msg(selected - before == 4, "select took %d descriptors",
                  selected - before);
    for (int i = 0; i < 5; i++) {
        struct imap_seq_range r = {1, IMAP_SEQ_STAR};
        struct imap_seqset set = {.r = &r, .n = 1};
        struct mstore_map m;

        store_ok(v, 1, IMAP_STORE_ADD, "\\Flagged");
        ck_assert_int_eq(mstore_copy(v, &set, false, "Other", &out), 0);
        ck_assert_int_eq(
            mstore_append(f.ms, "INBOX", "x\r\n", 3, NULL, 0, 0, &out), 0);
        ck_assert_int_eq(mstore_status(f.ms, "Other", &st), 0);
        ck_assert_int_eq(mstore_map(v, 1, &m), 0);
        mstore_unmap(&m);
        sync_ok(v, 0, &ch);
    }
    /* "Other", in the cache since the first COPY, holds four too. */
    ck_assert_msg(open_fds() == selected + 4, "%d descriptors leaked",
                  open_fds() - selected - 4);
    mstore_view_destroy(&v);
    ck_assert_msg(open_fds() == before + 8, "%d left after the view went",
                  open_fds() - before);
    mstore_cache_drop();
    ck_assert_msg(open_fds() == before, "%d left after the cache went",
                  open_fds() - before);
    fx_done(&f);
}
END_TEST

/* A folder whose directory is a tmpfs of size (made, mounted, then made
 * a Maildir by CREATE, which finds it there). */
static void
tmpfs_folder(struct fx *f, const char *name, const char *size)
{
    char dir[512];

    snprintf(dir, sizeof(dir), "%s/.%s", f->acct, name);
    ck_assert_msg(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    test_mount_tmpfs(dir, size);
    want_fail("create on the mount", f->ms, mstore_create(f->ms, name),
              "ALREADYEXISTS");
}

/* COPY to another file system: no hard link, a copy written to tmp/ and
 * renamed, with the same octets, flags and date. */
START_TEST(test_copy_cross_device)
{
    struct fx f;
    mstore_view_t *v, *o;
    struct mstore_copied out;
    struct imap_seq_range r;
    struct imap_seqset set;
    struct mstore_map a, b;
    char dir[512];

    if (!test_private_mounts()) {
        fprintf(stderr, "test_copy_cross_device: skipped: cannot mount a "
                        "tmpfs\n");
        return;
    }
    fx_init(&f);
    tmpfs_folder(&f, "Other", "1m");
    deliver(&f, NULL, "Subject: one\r\n\r\n1\r\n");
    deliver(&f, NULL, "Subject: two\r\n\r\n2\r\n");
    v = select_ok(f.ms, "INBOX", false);
    store_ok(v, 2, IMAP_STORE_ADD, "\\Flagged");
    set = range(&r, 1, 2);
    ck_assert_int_eq(mstore_copy(v, &set, false, "Other", &out), 0);
    ck_assert_msg(out.n == 2 && out.dst_uids[0] == 1 && out.dst_uids[1] == 2,
                  "COPYUID n %zu", out.n);
    o = select_ok(f.ms, "Other", true);
    ck_assert_uint_eq(mstore_view_exists(o), 2);
    for (uint32_t s = 1; s <= 2; s++) {
        ck_assert_int_eq(mstore_map(v, s, &a), 0);
        ck_assert_int_eq(mstore_map(o, s, &b), 0);
        ck_assert_msg(a.len == b.len && memcmp(a.data, b.data, a.len) == 0,
                      "copy %u differs", s);
        mstore_unmap(&a);
        mstore_unmap(&b);
        ck_assert_msg(
            mstore_view_msg(o, s)->flags == mstore_view_msg(v, s)->flags &&
                mstore_view_msg(o, s)->date == mstore_view_msg(v, s)->date,
            "copy %u: flags or date differ", s);
    }
    snprintf(dir, sizeof(dir), "%s/.Other/tmp", f.acct);
    ck_assert_msg(files_in(dir, NULL, 0) == 0, "left in tmp/");
    {
        DIR *d;
        struct dirent *e;
        struct stat st;
        int copies = 0;

        snprintf(dir, sizeof(dir), "%s/.Other/cur", f.acct);
        d = opendir(dir);
        ck_assert_msg(d != NULL, "no cur/");
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.' &&
                fstatat(dirfd(d), e->d_name, &st, 0) == 0 && st.st_nlink == 1)
                copies++;
        closedir(d);
        ck_assert_msg(copies == 2, "%d copies (not links) in cur/", copies);
    }
    mstore_view_destroy(&o);
    mstore_view_destroy(&v);
    snprintf(dir, sizeof(dir), "%s/.Other", f.acct);
    umount2(dir, MNT_DETACH);
    fx_done(&f);
}
END_TEST

/* APPEND to a full file system: NO [OVERQUOTA], nothing left behind. */
START_TEST(test_append_no_space)
{
    struct fx f;
    struct mstore_copied out;
    struct imap_status_values st;
    size_t len = 256 * 1024;
    char *msg, dir[512];

    if (!test_private_mounts()) {
        fprintf(stderr, "test_append_no_space: skipped: cannot mount a "
                        "tmpfs\n");
        return;
    }
    fx_init(&f);
    tmpfs_folder(&f, "Small", "64k");
    msg = malloc(len);
    memset(msg, 'x', len);
    want_fail("append", f.ms,
              mstore_append(f.ms, "Small", msg, len, NULL, 0, 0, &out),
              "OVERQUOTA");
    free(msg);
    snprintf(dir, sizeof(dir), "%s/.Small/tmp", f.acct);
    ck_assert_msg(files_in(dir, NULL, 0) == 0, "left in tmp/");
    ck_assert_int_eq(mstore_status(f.ms, "Small", &st), 0);
    ck_assert_uint_eq(st.messages, 0);
    /* A small one still fits. */
    ck_assert_int_eq(mstore_append(f.ms, "Small", "x\r\n", 3, NULL, 0, 0, &out),
                     0);
    snprintf(dir, sizeof(dir), "%s/.Small", f.acct);
    umount2(dir, MNT_DETACH);
    fx_done(&f);
}
END_TEST

/* Folders. */

struct listed {
    char text[2048];
};

static void
collect(void *arg, const char *name, const char *attrs)
{
    struct listed *l = arg;
    size_t len = strlen(l->text);

    snprintf(l->text + len, sizeof(l->text) - len, "%s%s(%s)", len ? " " : "",
             name, attrs);
}

static const char *
list(mstore_t *ms, const char *ref, const char *pat, bool lsub)
{
    static struct listed l;

    l.text[0] = '\0';
    ck_assert_int_eq(mstore_list(ms, ref, pat, lsub, collect, &l), 0);
    return l.text;
}

static void
want_list(mstore_t *ms, const char *ref, const char *pat, bool lsub,
          const char *want)
{
    const char *got = list(ms, ref, pat, lsub);

    ck_assert_msg(strcmp(got, want) == 0,
                  "%s \"%s\" \"%s\": got\n  %s\nwant\n  %s",
                  lsub ? "LSUB" : "LIST", ref, pat, got, want);
}

static bool
is_dir(struct fx *f, const char *sub)
{
    char path[512];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", f->acct, sub);
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

START_TEST(test_folders)
{
    struct fx f;
    struct imap_status_values st;

    fx_init(&f);
    ck_assert_int_eq(mstore_create(f.ms, "Archive/2024"), 0);
    ck_assert_msg(is_dir(&f, ".Archive/cur") && is_dir(&f, ".Archive.2024/new"),
                  "Maildir++ folders not made");
    want_list(f.ms, "", "*", false,
              "INBOX(\\HasNoChildren) Archive(\\HasChildren) "
              "Archive/2024(\\HasNoChildren)");
    want_fail("create again", f.ms, mstore_create(f.ms, "Archive/2024"),
              "ALREADYEXISTS");
    want_fail("create INBOX", f.ms, mstore_create(f.ms, "inbox"),
              "ALREADYEXISTS");
    ck_assert_int_eq(mstore_create(f.ms, "Sent/"), 0);
    ck_assert_msg(is_dir(&f, ".Sent"), "Sent/ not made as .Sent");

    /* RENAME takes the children along. */
    ck_assert_int_eq(mstore_rename(f.ms, "Archive", "Old"), 0);
    ck_assert_msg(is_dir(&f, ".Old") && is_dir(&f, ".Old.2024") &&
                      !is_dir(&f, ".Archive"),
                  "rename did not move the children");
    want_fail("rename missing", f.ms, mstore_rename(f.ms, "Nope", "X"),
              "NONEXISTENT");
    want_fail("rename onto existing", f.ms, mstore_rename(f.ms, "Old", "Sent"),
              "ALREADYEXISTS");
    want_fail("rename under itself", f.ms, mstore_rename(f.ms, "Old", "Old/x"),
              "CANNOT");

    /* DELETE of a parent leaves it \Noselect; then it cannot go. */
    ck_assert_int_eq(mstore_delete(f.ms, "Old"), 0);
    want_list(f.ms, "", "*", false,
              "INBOX(\\HasNoChildren) Old(\\Noselect \\HasChildren) "
              "Old/2024(\\HasNoChildren) Sent(\\HasNoChildren)");
    want_fail("delete \\Noselect", f.ms, mstore_delete(f.ms, "Old"), "CANNOT");
    want_fail("select \\Noselect", f.ms,
              mstore_select(f.ms, "Old", false) == NULL ? -1 : 0,
              "NONEXISTENT");
    want_fail("delete INBOX", f.ms, mstore_delete(f.ms, "INBOX"), "CANNOT");
    want_fail("delete missing", f.ms, mstore_delete(f.ms, "Nope"),
              "NONEXISTENT");
    ck_assert_int_eq(mstore_delete(f.ms, "Old/2024"), 0);
    want_list(f.ms, "", "*", false,
              "INBOX(\\HasNoChildren) Sent(\\HasNoChildren)");
    want_fail("status missing", f.ms, mstore_status(f.ms, "Old", &st),
              "NONEXISTENT");

    /* A folder made again gets a new UIDVALIDITY (RFC 3501 2.3.1.1). */
    ck_assert_int_eq(mstore_status(f.ms, "Sent", &st), 0);
    {
        uint32_t was = st.uidvalidity;

        ck_assert_int_eq(mstore_delete(f.ms, "Sent"), 0);
        ck_assert_int_eq(mstore_create(f.ms, "Sent"), 0);
        ck_assert_int_eq(mstore_status(f.ms, "Sent", &st), 0);
        ck_assert_msg(st.uidvalidity > was, "uidvalidity %u, was %u",
                      st.uidvalidity, was);
    }
    fx_done(&f);
}
END_TEST

START_TEST(test_rename_inbox)
{
    struct fx f;
    mstore_view_t *v;
    struct imap_status_values st;

    fx_init(&f);
    deliver(&f, NULL, "Subject: 1\r\n\r\n1\r\n");
    deliver(&f, NULL, "Subject: 2\r\n\r\n2\r\n");
    v = select_ok(f.ms, "INBOX", false);
    store_ok(v, 1, IMAP_STORE_ADD, "$Work");
    mstore_view_destroy(&v);
    ck_assert_int_eq(mstore_rename(f.ms, "INBOX", "Saved/Old"), 0);
    ck_assert_int_eq(mstore_status(f.ms, "INBOX", &st), 0);
    ck_assert_msg(st.messages == 0 && st.uidnext == 3,
                  "INBOX: %u messages, uidnext %u", st.messages, st.uidnext);
    ck_assert_int_eq(mstore_status(f.ms, "Saved/Old", &st), 0);
    ck_assert_msg(st.messages == 2 && st.uidnext == 3,
                  "Saved/Old: %u messages, uidnext %u", st.messages,
                  st.uidnext);
    v = select_ok(f.ms, "Saved/Old", false);
    ck_assert_msg(strcmp(mstore_view_flags_str(v, 1), "$Work") == 0,
                  "keyword lost: \"%s\"", mstore_view_flags_str(v, 1));
    mstore_view_destroy(&v);
    want_list(f.ms, "", "*", false,
              "INBOX(\\HasNoChildren) Saved(\\HasChildren) "
              "Saved/Old(\\HasNoChildren)");
    /* New mail still reaches INBOX, numbered after the old. */
    deliver(&f, NULL, "Subject: 3\r\n\r\n3\r\n");
    v = select_ok(f.ms, "INBOX", false);
    ck_assert_msg(mstore_view_exists(v) == 1 && mstore_view_msg(v, 1)->uid == 3,
                  "INBOX after: exists %u", mstore_view_exists(v));
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

static const struct {
    const char *label, *ref, *pat, *want;
} list_rows[] = {
    {"star", "", "*",
     "INBOX(\\HasNoChildren) a(\\HasChildren) a/b(\\HasChildren) "
     "a/b/c(\\HasNoChildren) ab(\\HasNoChildren) x(\\Noselect \\HasChildren) "
     "x/y(\\HasNoChildren)"},
    {"percent", "", "%",
     "INBOX(\\HasNoChildren) a(\\HasChildren) ab(\\HasNoChildren) "
     "x(\\Noselect \\HasChildren)"},
    {"level two", "", "a/%", "a/b(\\HasChildren)"},
    {"ref", "a/", "%", "a/b(\\HasChildren)"},
    {"under a", "", "a/*", "a/b(\\HasChildren) a/b/c(\\HasNoChildren)"},
    {"prefix", "", "a*",
     "a(\\HasChildren) a/b(\\HasChildren) "
     "a/b/c(\\HasNoChildren) ab(\\HasNoChildren)"},
    {"prefix %", "", "a%", "a(\\HasChildren) ab(\\HasNoChildren)"},
    {"inbox any case", "", "inBox", "INBOX(\\HasNoChildren)"},
    {"exact", "", "a/b/c", "a/b/c(\\HasNoChildren)"},
    {"middle", "", "%/%", "a/b(\\HasChildren) x/y(\\HasNoChildren)"},
    {"none", "", "zz*", ""},
    {"root", "", "", "(\\Noselect)"},
    {"many stars", "", "*a*a*a*a*a*a*a*a*a*a*b", ""},
};

START_TEST(test_list_patterns)
{
    struct fx f;

    fx_init(&f);
    ck_assert_int_eq(mstore_create(f.ms, "a/b/c"), 0);
    ck_assert_int_eq(mstore_create(f.ms, "ab"), 0);
    ck_assert_int_eq(mstore_create(f.ms, "x/y"), 0);
    ck_assert_int_eq(mstore_delete(f.ms, "x"), 0);
    want_list(f.ms, list_rows[_i].ref, list_rows[_i].pat, false,
              list_rows[_i].want);
    fx_done(&f);
}
END_TEST

START_TEST(test_subscriptions)
{
    struct fx f;
    char path[512], text[256] = "";
    FILE *fp;
    size_t n;

    fx_init(&f);
    ck_assert_int_eq(mstore_subscribe(f.ms, "INBOX", true), 0);
    ck_assert_int_eq(mstore_subscribe(f.ms, "Lists/dev", true), 0);
    ck_assert_int_eq(mstore_subscribe(f.ms, "Lists/dev", true), 0);
    want_list(f.ms, "", "*", true, "INBOX() Lists/dev()");
    want_list(f.ms, "", "%", true, "INBOX() Lists(\\Noselect)");
    snprintf(path, sizeof(path), "%s/subscriptions", f.acct);
    fp = fopen(path, "r");
    ck_assert_msg(fp != NULL, "no subscriptions file");
    n = fread(text, 1, sizeof(text) - 1, fp);
    fclose(fp);
    text[n] = '\0';
    ck_assert_msg(strcmp(text, "INBOX\nLists/dev\n") == 0, "file: \"%s\"",
                  text);
    ck_assert_int_eq(mstore_subscribe(f.ms, "Lists/dev", false), 0);
    want_fail("unsubscribe again", f.ms,
              mstore_subscribe(f.ms, "Lists/dev", false), "NONEXISTENT");
    want_list(f.ms, "", "*", true, "INBOX()");
    want_fail("bad name", f.ms, mstore_subscribe(f.ms, "a//b", true), "CANNOT");
    fx_done(&f);
}
END_TEST

/* APPEND, COPY, MOVE. */

START_TEST(test_append_copy)
{
    struct fx f;
    mstore_view_t *v, *s;
    struct mstore_copied out;
    struct imap_seq_range r;
    struct imap_seqset set;
    const char *seen[] = {"\\Seen", "$Sent"};
    const char msg[] = "From: a@b\r\nSubject: app\r\n\r\nbody\r\n";
    const uint32_t *exp;
    size_t nexp;
    struct mstore_map m;
    uint32_t sent_uidv;

    fx_init(&f);
    want_fail("append to missing", f.ms,
              mstore_append(f.ms, "Sent", msg, strlen(msg), NULL, 0, 0, &out),
              "TRYCREATE");
    ck_assert_int_eq(mstore_create(f.ms, "Sent"), 0);
    ck_assert_int_eq(mstore_append(f.ms, "Sent", msg, strlen(msg), seen, 2,
                                   1700000000, &out),
                     0);
    ck_assert_msg(out.n == 1 && out.dst_uids[0] == 1 && out.uidvalidity != 0,
                  "APPENDUID %u %u", out.uidvalidity,
                  out.n ? out.dst_uids[0] : 0);
    ck_assert_msg(mstore_bytes_delta(f.ms) == (int64_t)strlen(msg),
                  "delta %lld", (long long)mstore_bytes_delta(f.ms));
    sent_uidv = out.uidvalidity;
    ck_assert_int_eq(
        mstore_append(f.ms, "Sent", msg, strlen(msg), NULL, 0, 0, &out), 0);
    ck_assert_msg(out.dst_uids[0] == 2, "second APPENDUID %u", out.dst_uids[0]);
    s = select_ok(f.ms, "Sent", true);
    ck_assert_msg(mstore_view_exists(s) == 2 &&
                      mstore_view_msg(s, 1)->date == 1700000000 &&
                      mstore_view_msg(s, 1)->size == strlen(msg),
                  "Sent: exists %u date %lld size %llu", mstore_view_exists(s),
                  (long long)mstore_view_msg(s, 1)->date,
                  (unsigned long long)mstore_view_msg(s, 1)->size);
    ck_assert_msg(strcmp(mstore_view_flags_str(s, 1), "\\Seen $Sent") == 0,
                  "flags \"%s\"", mstore_view_flags_str(s, 1));
    ck_assert_int_eq(mstore_map(s, 1, &m), 0);
    ck_assert_msg(m.len == strlen(msg) && memcmp(m.data, msg, m.len) == 0,
                  "appended content differs");
    mstore_unmap(&m);

    /* COPY from INBOX: COPYUID pairs. */
    deliver(&f, NULL, "Subject: a\r\n\r\na\r\n");
    deliver(&f, NULL, "Subject: b\r\n\r\nb\r\n");
    deliver(&f, NULL, "Subject: c\r\n\r\nc\r\n");
    v = select_ok(f.ms, "INBOX", false);
    set = range(&r, 2, IMAP_SEQ_STAR);
    want_fail("copy to missing", f.ms,
              mstore_copy(v, &set, false, "Nope", &out), "TRYCREATE");
    ck_assert_int_eq(mstore_copy(v, &set, false, "Sent", &out), 0);
    ck_assert_msg(out.n == 2 && out.uidvalidity == sent_uidv &&
                      out.src_uids[0] == 2 && out.src_uids[1] == 3 &&
                      out.dst_uids[0] == 3 && out.dst_uids[1] == 4,
                  "COPYUID: n %zu", out.n);
    ck_assert_msg(mstore_bytes_delta(f.ms) > 0, "copy delta %lld",
                  (long long)mstore_bytes_delta(f.ms));

    /* MOVE by UID: copied, then expunged here. */
    set = range(&r, 1, 1);
    ck_assert_int_eq(mstore_move(v, &set, true, "Sent", &out, &exp, &nexp), 0);
    ck_assert_msg(out.n == 1 && out.src_uids[0] == 1 && out.dst_uids[0] == 5,
                  "MOVE COPYUID n %zu", out.n);
    ck_assert_msg(nexp == 1 && exp[0] == 1, "MOVE expunges %zu", nexp);
    ck_assert_msg(mstore_view_exists(v) == 2, "INBOX exists %u",
                  mstore_view_exists(v));
    {
        struct mstore_changes ch;

        sync_ok(s, 0, &ch);
        ck_assert_msg(ch.exists_changed && ch.exists == 5,
                      "Sent view: exists %u", ch.exists);
    }
    ck_assert_int_eq(mstore_map(s, 5, &m), 0);
    ck_assert_msg(m.len > 10 && memcmp(m.data, "Subject: a", 10) == 0,
                  "moved content differs");
    mstore_unmap(&m);
    /* Too big for APPEND. */
    {
        struct mstore_limits lim = {.append_max = 8};
        char why[128];
        mstore_t *small = mstore_open(f.data, ACCT, &lim, why, sizeof(why));

        want_fail(
            "too big", small,
            mstore_append(small, "Sent", msg, strlen(msg), NULL, 0, 0, &out),
            "TOOBIG");
        mstore_destroy(&small);
    }
    mstore_view_destroy(&s);
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

START_TEST(test_sets)
{
    struct fx f;
    mstore_view_t *v;
    struct imap_seq_range r[3];
    struct imap_seqset set = {.r = r, .n = 3};
    const uint32_t *seqs;
    size_t n;
    struct imap_seq_range one;
    struct imap_seqset bad = range(&one, 7, 7);

    fx_init(&f);
    for (int i = 0; i < 6; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    v = select_ok(f.ms, "INBOX", false);
    r[0] = (struct imap_seq_range){5, IMAP_SEQ_STAR};
    r[1] = (struct imap_seq_range){2, 1};
    r[2] = (struct imap_seq_range){2, 2};
    ck_assert_int_eq(mstore_view_resolve(v, &set, false, &seqs, &n), 0);
    ck_assert_msg(n == 4 && seqs[0] == 1 && seqs[1] == 2 && seqs[2] == 5 &&
                      seqs[3] == 6,
                  "seq set: %zu", n);
    want_fail("seq 7 of 6", f.ms,
              mstore_view_resolve(v, &bad, false, &seqs, &n), NULL);
    /* RFC 3501 6.4.8: 100:* takes the last UID however high 100 is. */
    bad = range(&one, 100, IMAP_SEQ_STAR);
    ck_assert_int_eq(mstore_view_resolve(v, &bad, true, &seqs, &n), 0);
    ck_assert_msg(n == 1 && seqs[0] == 6, "100:* gave %zu", n);
    bad = range(&one, 100, 200);
    ck_assert_int_eq(mstore_view_resolve(v, &bad, true, &seqs, &n), 0);
    ck_assert_msg(n == 0, "100:200 gave %zu", n);
    ck_assert_msg(mstore_view_seq(v, 4) == 4 && mstore_view_seq(v, 9) == 0,
                  "seq of uid");
    /* UIDs with holes: 3 and 5 expunged, then 4:5,1,7:9 is 1 and 4. */
    store_ok(v, 3, IMAP_STORE_ADD, "\\Deleted");
    store_ok(v, 5, IMAP_STORE_ADD, "\\Deleted");
    {
        const uint32_t *exp;
        size_t nexp;

        ck_assert_int_eq(mstore_expunge(v, NULL, &exp, &nexp), 0);
        ck_assert_uint_eq(nexp, 2);
    }
    r[0] = (struct imap_seq_range){4, 5};
    r[1] = (struct imap_seq_range){1, 1};
    r[2] = (struct imap_seq_range){9, 7};
    ck_assert_int_eq(mstore_view_resolve(v, &set, true, &seqs, &n), 0);
    ck_assert_msg(n == 2 && seqs[0] == 1 && seqs[1] == 3,
                  "uid set: %zu (%u %u)", n, n ? seqs[0] : 0,
                  n > 1 ? seqs[1] : 0);
    bad = range(&one, 5, 5);
    ck_assert_int_eq(mstore_view_resolve(v, &bad, true, &seqs, &n), 0);
    ck_assert_msg(n == 0, "expunged uid 5 resolved to %zu", n);
    bad = range(&one, 3, 6);
    ck_assert_int_eq(mstore_view_resolve(v, &bad, true, &seqs, &n), 0);
    ck_assert_msg(n == 2 && seqs[0] == 3 && seqs[1] == 4, "3:6 gave %zu", n);
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* Names. */

static const struct {
    const char *name;
    bool ok;
} name_rows[] = {
    {"Sent", true},       {"Archive/2024", true},
    {"&AOQ-pfel", true},  {"INBOX/sub", true},
    {"../x", false},      {"a/../b", false},
    {"a//b", false},      {"/a", false},
    {"a/", false},        {"a.b", false},
    {"", false},          {"a\001b", false},
    {"tab\tname", false}, {"a\\b", false},
    {"a*", false},        {"caf\xc3\xa9", false},
};

START_TEST(test_names)
{
    struct fx f;
    const char *why = NULL;
    bool ok;

    fx_init(&f);
    ok = mstore_name_ok(f.ms, name_rows[_i].name, &why);
    ck_assert_msg(ok == name_rows[_i].ok, "\"%s\": got %d, want %d (%s)",
                  name_rows[_i].name, ok, name_rows[_i].ok, why ? why : "-");
    /* CREATE drops one trailing "/" (RFC 3501 6.3.3). */
    if (!ok && strcmp(name_rows[_i].name, "a/") != 0) {
        ck_assert_msg(why != NULL && *why, "\"%s\": no reason",
                      name_rows[_i].name);
        want_fail("create", f.ms, mstore_create(f.ms, name_rows[_i].name),
                  "CANNOT");
    }
    fx_done(&f);
}
END_TEST

START_TEST(test_name_limits)
{
    struct fx f;
    char name[400];
    struct mstore_limits lim = {.folders_max = 3};
    char why[128];
    mstore_t *small;

    fx_init(&f);
    memset(name, 'a', sizeof(name));
    name[201] = '\0';
    want_fail("201 octets", f.ms, mstore_create(f.ms, name), "CANNOT");
    name[200] = '\0';
    ck_assert_int_eq(mstore_create(f.ms, name), 0);
    small = mstore_open(f.data, ACCT, &lim, why, sizeof(why));
    ck_assert_int_eq(mstore_create(small, "b"), 0);
    ck_assert_int_eq(mstore_create(small, "c"), 0);
    want_fail("folder limit", small, mstore_create(small, "d"), "LIMIT");
    mstore_destroy(&small);
    fx_done(&f);
}
END_TEST

/* Symlinks planted in the Maildir never lead out of it. */
START_TEST(test_symlinks)
{
    struct fx f;
    char link[512], outside[256], path[512];
    mstore_view_t *v;
    struct mstore_copied out;
    int fd;

    fx_init(&f);
    snprintf(outside, sizeof(outside), "%s/outside", f.base);
    ck_assert_msg(mkdir(outside, 0700) == 0, "mkdir outside");
    /* A folder that is a symlink: not listed, not opened. */
    snprintf(link, sizeof(link), "%s/.Evil", f.acct);
    ck_assert_msg(symlink(outside, link) == 0, "symlink: %s", strerror(errno));
    want_list(f.ms, "", "*", false, "INBOX(\\HasNoChildren)");
    want_fail("select link", f.ms,
              mstore_select(f.ms, "Evil", false) == NULL ? -1 : 0,
              "NONEXISTENT");
    want_fail("append via link", f.ms,
              mstore_append(f.ms, "Evil", "x\r\n", 3, NULL, 0, 0, &out),
              "TRYCREATE");
    ck_assert_msg(files_in(outside, NULL, 0) == 0, "wrote outside");
    /* A message file that is a symlink: not a message. */
    snprintf(path, sizeof(path), "%s/secret", outside);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    ck_assert_msg(fd >= 0 && write(fd, "secret", 6) == 6, "secret");
    close(fd);
    snprintf(link, sizeof(link), "%s/new/1.M1P1Q1.evil", f.acct);
    ck_assert_msg(symlink(path, link) == 0, "symlink: %s", strerror(errno));
    deliver(&f, NULL, "Subject: real\r\n\r\nreal\r\n");
    v = select_ok(f.ms, "INBOX", false);
    ck_assert_msg(mstore_view_exists(v) == 1, "exists %u: the link counted",
                  mstore_view_exists(v));
    mstore_view_destroy(&v);
    /* Symlinks where the store keeps its own files are replaced, never
     * followed. */
    {
        static const char *const own[] = {"samotop-uidlist.lock",
                                          "samotop-uidlist.tmp",
                                          "subscriptions", "subscriptions.tmp"};
        struct stat st;

        for (size_t i = 0; i < NROWS(own); i++) {
            snprintf(link, sizeof(link), "%s/%s", f.acct, own[i]);
            unlink(link);
            ck_assert_msg(symlink(path, link) == 0, "symlink %s", own[i]);
        }
        deliver(&f, NULL, "Subject: two\r\n\r\ntwo\r\n");
        v = select_ok(f.ms, "INBOX", false);
        ck_assert_msg(mstore_view_exists(v) == 2, "exists %u",
                      mstore_view_exists(v));
        mstore_view_destroy(&v);
        ck_assert_int_eq(mstore_subscribe(f.ms, "INBOX", true), 0);
        want_list(f.ms, "", "*", true, "INBOX()");
        ck_assert_msg(lstat(path, &st) == 0 && st.st_size == 6,
                      "the link's target was written");
        for (size_t i = 0; i < NROWS(own); i++) {
            snprintf(link, sizeof(link), "%s/%s", f.acct, own[i]);
            ck_assert_msg(lstat(link, &st) != 0 || !S_ISLNK(st.st_mode),
                          "%s still a symlink", own[i]);
        }
    }
    /* An account that is a symlink is refused. */
    {
        char why[256], acct[512];
        mstore_t *ms;

        snprintf(acct, sizeof(acct), "%s/mail/example.test/bob", f.data);
        ck_assert_msg(symlink(outside, acct) == 0, "symlink bob");
        ms = mstore_open(f.data, "bob@example.test", NULL, why, sizeof(why));
        ck_assert_msg(ms == NULL, "opened an account through a symlink");
    }
    fx_done(&f);
}
END_TEST

/* Two processes at once. */

static void
append_many(struct fx *f, int n)
{
    mstore_t *ms = open_store(f);
    struct mstore_copied out;
    char msg[64];

    for (int i = 0; i < n; i++) {
        int len = snprintf(msg, sizeof(msg), "Subject: %d\r\n\r\n%d\r\n", i, i);

        if (mstore_append(ms, "INBOX", msg, (size_t)len, NULL, 0, 0, &out) != 0)
            _exit(2);
        /* Deliveries and syncs interleaved too. */
        if (i % 20 == 0) {
            struct imap_status_values st;

            deliver(f, NULL, "Subject: d\r\n\r\nd\r\n");
            if (mstore_status(ms, "INBOX", &st) != 0)
                _exit(3);
        }
    }
    mstore_destroy(&ms);
}

START_TEST(test_two_processes)
{
    struct fx f;
    mstore_view_t *v;
    pid_t pid;
    int status;
    uint32_t n;

    fx_init(&f);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        append_many(&f, 200);
        _exit(0);
    }
    append_many(&f, 200);
    ck_assert_msg(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
                      WEXITSTATUS(status) == 0,
                  "child failed: %d", status);
    v = select_ok(f.ms, "INBOX", false);
    n = mstore_view_exists(v);
    ck_assert_msg(n == 420, "exists %u, want 420", n);
    for (uint32_t s = 2; s <= n; s++)
        ck_assert_msg(mstore_view_msg(v, s)->uid >
                          mstore_view_msg(v, s - 1)->uid,
                      "uid of %u not above the one before", s);
    ck_assert_msg(mstore_view_uidnext(v) == 421, "uidnext %u",
                  mstore_view_uidnext(v));
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* One process sets flags one message at a time while another appends:
 * neither change is lost when they rewrite the index in turn. */
START_TEST(test_flags_while_appending)
{
    struct fx f;
    mstore_view_t *v;
    pid_t pid;
    int status;
    uint32_t flagged = 0;

    fx_init(&f);
    for (int i = 0; i < 50; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    v = select_ok(f.ms, "INBOX", false);
    mstore_view_destroy(&v);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        mstore_t *ms = open_store(&f);
        mstore_view_t *w = mstore_select(ms, "INBOX", false);
        const char *flags[] = {"\\Flagged", "$Done"};

        if (w == NULL)
            _exit(2);
        for (uint32_t s = 1; s <= 50; s++) {
            struct imap_seq_range r = {s, s};
            struct imap_seqset set = {.r = &r, .n = 1};
            struct mstore_changes ch;
            const uint32_t *seqs;
            size_t n;

            if (mstore_view_sync(w, MSTORE_SYNC_HOLD_EXPUNGES, &ch) != 0 ||
                mstore_store(w, &set, false, IMAP_STORE_ADD, flags, 2, &seqs,
                             &n) != 0 ||
                n != 1)
                _exit(3);
        }
        mstore_view_destroy(&w);
        mstore_destroy(&ms);
        _exit(0);
    }
    append_many(&f, 100);
    ck_assert_msg(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
                      WEXITSTATUS(status) == 0,
                  "child failed: %d", status);
    v = select_ok(f.ms, "INBOX", false);
    ck_assert_uint_eq(mstore_view_exists(v), 155);
    for (uint32_t s = 1; s <= 50; s++)
        flagged += (mstore_view_msg(v, s)->flags & MSTORE_F_FLAGGED) &&
                   strstr(mstore_view_flags_str(v, s), "$Done") != NULL;
    ck_assert_msg(flagged == 50, "%u of 50 flagged", flagged);
    for (uint32_t s = 2; s <= 155; s++)
        ck_assert_msg(mstore_view_msg(v, s)->uid >
                          mstore_view_msg(v, s - 1)->uid,
                      "uid of %u not above the one before", s);
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* Another process's flag changes and expunges reach this process's view
 * through the index file. */
START_TEST(test_other_process_changes)
{
    struct fx f;
    mstore_view_t *v;
    struct mstore_changes ch;
    pid_t pid;
    int status;
    static const uint32_t left[] = {1, 3, 5};

    fx_init(&f);
    for (int i = 0; i < 5; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    v = select_ok(f.ms, "INBOX", false);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        mstore_t *ms = open_store(&f);
        mstore_view_t *w = mstore_select(ms, "INBOX", false);
        const uint32_t *exp;
        size_t nexp;

        if (w == NULL)
            _exit(2);
        store_ok(w, 2, IMAP_STORE_ADD, "\\Deleted");
        store_ok(w, 4, IMAP_STORE_ADD, "\\Deleted");
        if (mstore_expunge(w, NULL, &exp, &nexp) != 0 || nexp != 2)
            _exit(3);
        /* Flags alone, after the last index write. */
        store_ok(w, 3, IMAP_STORE_ADD, "\\Answered");
        mstore_view_destroy(&w);
        mstore_destroy(&ms);
        _exit(0);
    }
    ck_assert_msg(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
                      WEXITSTATUS(status) == 0,
                  "child failed: %d", status);
    sync_ok(v, 0, &ch);
    ck_assert_msg(ch.nexpunged == 2 && ch.expunged[0] == 2 &&
                      ch.expunged[1] == 3,
                  "%zu expunges", ch.nexpunged);
    ck_assert_msg(ch.nflags == 1 && ch.flags[0] == 3, "%zu flag changes",
                  ch.nflags);
    ck_assert_msg(mstore_view_msg(v, 3)->flags == MSTORE_F_ANSWERED,
                  "flags of 5: %x", mstore_view_msg(v, 3)->flags);
    want_uids("after", v, left, 3);
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* A corrupt index: rebuilt from the files, with a new UIDVALIDITY. */

static const struct {
    const char *label, *text;
} bad_index_rows[] = {
    {"empty", ""},
    {"garbage", "hello world\n"},
    {"no end of line", "samotop-uidlist 1 5 3 0 0\nK\n1 c 10 0 0 x"},
    {"uid not below uidnext", "samotop-uidlist 1 5 2 0 0\nK\n2 c 1 0 0 x:2,\n"},
    {"uids not ascending",
     "samotop-uidlist 1 5 9 0 0\nK\n3 c 1 0 0 a:2,\n2 c 1 0 0 b:2,\n"},
    {"zero uidvalidity", "samotop-uidlist 1 0 3 0 0\nK\n"},
    {"bad version", "samotop-uidlist 9 5 3 0 0\nK\n"},
    {"slash in name", "samotop-uidlist 1 5 3 0 0\nK\n1 c 1 0 0 ../x\n"},
    {"unknown keyword bit", "samotop-uidlist 1 5 3 0 0\nK\n1 c 1 0 4 x:2,\n"},
    {"truncated header", "samotop-uidlist 1 5"},
    {"symlink", NULL},
};

START_TEST(test_bad_index)
{
    struct fx f;
    mstore_view_t *v;
    uint32_t was;
    char path[512];
    FILE *fp;

    fx_init(&f);
    deliver(&f, NULL, "Subject: 1\r\n\r\n1\r\n");
    deliver(&f, NULL, "Subject: 2\r\n\r\n2\r\n");
    v = select_ok(f.ms, "INBOX", false);
    was = mstore_view_uidvalidity(v);
    mstore_view_destroy(&v);
    mstore_destroy(&f.ms);
    snprintf(path, sizeof(path), "%s/samotop-uidlist", f.acct);
    if (bad_index_rows[_i].text == NULL) {
        /* A symlink to a good-looking index elsewhere: never followed. */
        char target[512];

        snprintf(target, sizeof(target), "%s/elsewhere", f.base);
        fp = fopen(target, "w");
        ck_assert_msg(fp != NULL, "open target");
        fputs("samotop-uidlist 1 7 3 0 0\nK\n", fp);
        fclose(fp);
        ck_assert_msg(unlink(path) == 0 && symlink(target, path) == 0,
                      "symlink index: %s", strerror(errno));
    } else {
        fp = fopen(path, "w");
        ck_assert_msg(fp != NULL, "open index: %s", strerror(errno));
        fputs(bad_index_rows[_i].text, fp);
        fclose(fp);
    }
    f.ms = open_store(&f);
    v = select_ok(f.ms, "INBOX", false);
    ck_assert_msg(mstore_view_exists(v) == 2, "%s: exists %u",
                  bad_index_rows[_i].label, mstore_view_exists(v));
    ck_assert_msg(mstore_view_uidvalidity(v) > was,
                  "%s: uidvalidity %u, was %u", bad_index_rows[_i].label,
                  mstore_view_uidvalidity(v), was);
    {
        struct stat st;

        ck_assert_msg(lstat(path, &st) == 0 && S_ISREG(st.st_mode),
                      "%s: the index is no regular file now",
                      bad_index_rows[_i].label);
    }
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* An index written before VERIFY_NS joined its header is still read. */
START_TEST(test_old_header)
{
    struct fx f;
    mstore_view_t *v;
    uint32_t was;
    char path[512], text[4096], *sp;
    FILE *fp;
    size_t n;

    fx_init(&f);
    deliver(&f, NULL, "Subject: 1\r\n\r\n1\r\n");
    v = select_ok(f.ms, "INBOX", false);
    was = mstore_view_uidvalidity(v);
    mstore_view_destroy(&v);
    mstore_destroy(&f.ms);
    snprintf(path, sizeof(path), "%s/samotop-uidlist", f.acct);
    fp = fopen(path, "r");
    ck_assert_msg(fp != NULL, "no index");
    n = fread(text, 1, sizeof(text) - 1, fp);
    fclose(fp);
    text[n] = '\0';
    /* Drop the header's last field. */
    sp = strchr(text, '\n');
    ck_assert_msg(sp != NULL, "no header line");
    *sp = '\0';
    sp = strrchr(text, ' ');
    ck_assert_msg(sp != NULL, "no fields");
    fp = fopen(path, "w");
    fprintf(fp, "%.*s\n%s", (int)(sp - text), text, sp + strlen(sp) + 1);
    fclose(fp);
    f.ms = open_store(&f);
    v = select_ok(f.ms, "INBOX", false);
    ck_assert_msg(mstore_view_uidvalidity(v) == was &&
                      mstore_view_exists(v) == 1 &&
                      mstore_view_msg(v, 1)->uid == 1,
                  "uidvalidity %u (was %u), exists %u",
                  mstore_view_uidvalidity(v), was, mstore_view_exists(v));
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* The index changed under an open view (another process rebuilt it). */
START_TEST(test_uidvalidity_change_seen)
{
    struct fx f;
    mstore_t *ms2;
    mstore_view_t *v, *w;
    struct mstore_changes ch;
    char path[512];

    fx_init(&f);
    deliver(&f, NULL, "Subject: 1\r\n\r\n1\r\n");
    v = select_ok(f.ms, "INBOX", false);
    snprintf(path, sizeof(path), "%s/samotop-uidlist", f.acct);
    ck_assert_msg(unlink(path) == 0, "unlink index");
    ms2 = open_store(&f);
    w = select_ok(ms2, "INBOX", false);
    ck_assert_msg(mstore_view_uidvalidity(w) != mstore_view_uidvalidity(v),
                  "same uidvalidity after the index went");
    sync_ok(v, 0, &ch);
    ck_assert_msg(ch.uidvalidity_changed, "change not reported");
    mstore_view_destroy(&w);
    mstore_view_destroy(&v);
    mstore_destroy(&ms2);
    fx_done(&f);
}
END_TEST

/* The folder cache: a folder whose last view went stays parsed in the
 * process, and the next SELECT takes it after checking its stamps. */

static mstore_t *
open_store_lim(struct fx *f, size_t folders, size_t bytes)
{
    struct mstore_limits lim = {.cache_folders = folders, .cache_bytes = bytes};
    char why[256];
    mstore_t *ms = mstore_open(f->data, ACCT, &lim, why, sizeof(why));

    ck_assert_msg(ms != NULL, "mstore_open: %s", why);
    return ms;
}

/* Reused: the second SELECT opens nothing (the cached folder's four
 * descriptors serve it) and sees the same messages and UIDs. */
START_TEST(test_cache_reused)
{
    struct fx f;
    mstore_t *ms2;
    mstore_view_t *v;
    int before;
    static const uint32_t all[] = {1, 2, 3};

    fx_init(&f);
    for (int i = 0; i < 3; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    before = open_fds();
    v = select_ok(f.ms, "INBOX", false);
    want_uids("first", v, all, 3);
    mstore_view_destroy(&v);
    ck_assert_msg(open_fds() == before + 4, "cache holds %d descriptors",
                  open_fds() - before);
    /* Another store (session) of the process takes it from the cache. */
    ms2 = open_store(&f);
    v = select_ok(ms2, "INBOX", false);
    ck_assert_msg(open_fds() == before + 4 + 1, "select from the cache took %d",
                  open_fds() - before - 4 - 1);
    want_uids("again", v, all, 3);
    ck_assert_msg(mstore_view_recent(v) == 0, "recent %u, want 0",
                  mstore_view_recent(v));
    mstore_view_destroy(&v);
    mstore_destroy(&ms2);
    mstore_cache_drop();
    ck_assert_msg(open_fds() == before, "%d left after the cache went",
                  open_fds() - before);
    fx_done(&f);
}
END_TEST

/* What another process does while the folder sits in this one's cache;
 * each is seen at the next SELECT. */
enum cache_change {
    CC_DELIVER,   /* a delivery into new/ */
    CC_RENAME,    /* a Maildir tool's flag rename in cur/ */
    CC_EXPUNGE,   /* another mailbox process's EXPUNGE */
    CC_KEYWORD,   /* an index rewrite alone (a keyword: no file renamed) */
    CC_INDEX_GONE /* the index removed: a new UIDVALIDITY */
};

static const struct {
    const char *label;
    enum cache_change what;
} cache_rows[] = {
    {"delivery into new/", CC_DELIVER},
    {"flag rename in cur/", CC_RENAME},
    {"expunge", CC_EXPUNGE},
    {"index rewritten", CC_KEYWORD},
    {"index removed", CC_INDEX_GONE},
};

static int
cache_change_child(struct fx *f, enum cache_change what)
{
    char path[600], to[700];
    mstore_t *ms;
    mstore_view_t *w;
    const uint32_t *exp;
    size_t nexp;

    switch (what) {
    case CC_DELIVER:
        deliver(f, NULL, "Subject: new\r\n\r\nnew\r\n");
        return 0;
    case CC_RENAME:
        cur_file(f, 1, path, 500);
        snprintf(to, sizeof(to), "%sF", path);
        return rename(path, to) == 0 ? 0 : 2;
    case CC_INDEX_GONE:
        snprintf(path, sizeof(path), "%s/samotop-uidlist", f->acct);
        return unlink(path) == 0 ? 0 : 2;
    case CC_EXPUNGE:
    case CC_KEYWORD:
        break;
    }
    ms = open_store(f);
    if ((w = mstore_select(ms, "INBOX", false)) == NULL)
        return 3;
    if (what == CC_EXPUNGE) {
        store_ok(w, 2, IMAP_STORE_ADD, "\\Deleted");
        if (mstore_expunge(w, NULL, &exp, &nexp) != 0 || nexp != 1)
            return 4;
    } else {
        store_ok(w, 1, IMAP_STORE_ADD, "$Junk");
    }
    mstore_view_destroy(&w);
    mstore_destroy(&ms);
    return 0;
}

START_TEST(test_cache_other_process)
{
    const char *label = cache_rows[_i].label;
    enum cache_change what = cache_rows[_i].what;
    struct fx f;
    mstore_view_t *v;
    uint32_t uidvalidity;
    pid_t pid;
    int status;
    static const uint32_t all[] = {1, 2, 3}, more[] = {1, 2, 3, 4},
                          left[] = {1, 3};

    fx_init(&f);
    for (int i = 0; i < 3; i++)
        deliver(&f, NULL, "Subject: x\r\n\r\nx\r\n");
    v = select_ok(f.ms, "INBOX", false);
    uidvalidity = mstore_view_uidvalidity(v);
    mstore_view_destroy(&v);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        _exit(cache_change_child(&f, what));
    ck_assert_msg(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
                      WEXITSTATUS(status) == 0,
                  "%s: child failed: %d", label, status);
    v = select_ok(f.ms, "INBOX", false);
    switch (what) {
    case CC_DELIVER:
        want_uids(label, v, more, 4);
        ck_assert_msg(mstore_view_recent(v) == 1, "%s: recent %u, want 1",
                      label, mstore_view_recent(v));
        break;
    case CC_RENAME:
        want_uids(label, v, all, 3);
        ck_assert_msg(mstore_view_msg(v, 2)->flags == MSTORE_F_FLAGGED,
                      "%s: flags of 2: %x, want %x", label,
                      mstore_view_msg(v, 2)->flags, MSTORE_F_FLAGGED);
        break;
    case CC_EXPUNGE:
        want_uids(label, v, left, 2);
        break;
    case CC_KEYWORD:
        want_uids(label, v, all, 3);
        ck_assert_msg(mstore_view_msg(v, 1)->keywords == 1 &&
                          mstore_view_keyword(v, 0) != NULL &&
                          strcmp(mstore_view_keyword(v, 0), "$Junk") == 0,
                      "%s: keywords of 1: %llx", label,
                      (unsigned long long)mstore_view_msg(v, 1)->keywords);
        break;
    case CC_INDEX_GONE:
        ck_assert_msg(mstore_view_uidvalidity(v) != uidvalidity,
                      "%s: uidvalidity kept", label);
        ck_assert_msg(mstore_view_exists(v) == 3, "%s: exists %u", label,
                      mstore_view_exists(v));
        break;
    }
    mstore_view_destroy(&v);
    fx_done(&f);
}
END_TEST

/* The cache keeps at most cache_folders folders and cache_bytes octets,
 * the least recently used going first. */
START_TEST(test_cache_bound)
{
    struct fx f;
    mstore_t *ms;
    mstore_view_t *v;
    static const char *const names[] = {"A", "B", "C", "D"};
    int before;

    fx_init(&f);
    for (size_t i = 0; i < NROWS(names); i++) {
        char md[8];

        ck_assert_int_eq(mstore_create(f.ms, names[i]), 0);
        snprintf(md, sizeof(md), ".%s", names[i]);
        deliver(&f, md, "Subject: x\r\n\r\nx\r\n");
    }
    ms = open_store_lim(&f, 2, 0);
    before = open_fds();
    for (size_t i = 0; i < NROWS(names); i++) {
        v = select_ok(ms, names[i], false);
        mstore_view_destroy(&v);
        ck_assert_msg(open_fds() - before == 4 * (int)(i < 2 ? i + 1 : 2),
                      "after %s: cache holds %d descriptors", names[i],
                      open_fds() - before);
    }
    /* C and D are kept: selecting D again opens nothing; A was evicted
     * and is opened again, evicting C. */
    v = select_ok(ms, "D", false);
    ck_assert_msg(open_fds() - before == 8, "D again: %d descriptors",
                  open_fds() - before);
    mstore_view_destroy(&v);
    v = select_ok(ms, "A", false);
    ck_assert_msg(open_fds() - before == 12, "A again: %d descriptors",
                  open_fds() - before);
    mstore_view_destroy(&v);
    ck_assert_msg(open_fds() - before == 8, "after A: %d descriptors",
                  open_fds() - before);
    mstore_destroy(&ms);
    mstore_cache_drop();

    /* A bound of octets too small for any folder keeps none. */
    ms = open_store_lim(&f, 0, 1);
    v = select_ok(ms, "A", false);
    mstore_view_destroy(&v);
    ck_assert_msg(open_fds() == before, "byte bound: %d kept",
                  open_fds() - before);
    mstore_destroy(&ms);
    fx_done(&f);
}
END_TEST

static Suite *
mstore_suite(void)
{
    Suite *s = suite_create("mstore");
    TCase *tc;

    tc = tcase_create("index");
    /* Hundreds of fsync'd appends on a machine others share. */
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_uids_kept);
    tcase_add_test(tc, test_recent_one_view);
    tcase_add_test(tc, test_delivery_after_sync);
    tcase_add_test(tc, test_own_change_verified);
    tcase_add_test(tc, test_two_processes);
    tcase_add_test(tc, test_flags_while_appending);
    tcase_add_test(tc, test_other_process_changes);
    tcase_add_loop_test(tc, test_bad_index, 0, NROWS(bad_index_rows));
    tcase_add_test(tc, test_uidvalidity_change_seen);
    tcase_add_test(tc, test_old_header);
    tcase_add_test(tc, test_cache_reused);
    tcase_add_loop_test(tc, test_cache_other_process, 0, NROWS(cache_rows));
    tcase_add_test(tc, test_cache_bound);
    suite_add_tcase(s, tc);

    tc = tcase_create("views");
    tcase_add_test(tc, test_flags_seen_by_other);
    tcase_add_test(tc, test_expunge_seen_by_other);
    tcase_add_test(tc, test_shared_view_delivery);
    tcase_add_test(tc, test_shared_view_flags);
    tcase_add_test(tc, test_shared_view_expunge);
    tcase_add_test(tc, test_status_counts_follow_changes);
    tcase_add_test(tc, test_deleted_behind);
    tcase_add_test(tc, test_renamed_behind);
    tcase_add_test(tc, test_flags_round_trip);
    tcase_add_test(tc, test_sets);
    tcase_add_test(tc, test_append_copy);
    tcase_add_test(tc, test_delivery_order);
    tcase_add_test(tc, test_deleted_under_view);
    tcase_add_test(tc, test_uid_expunge);
    tcase_add_test(tc, test_copy_self_and_keyword_limit);
    tcase_add_test(tc, test_examine);
    tcase_add_test(tc, test_descriptors);
    tcase_add_test(tc, test_copy_cross_device);
    tcase_add_test(tc, test_append_no_space);
    suite_add_tcase(s, tc);

    tc = tcase_create("folders");
    tcase_add_test(tc, test_folders);
    tcase_add_test(tc, test_rename_inbox);
    tcase_add_loop_test(tc, test_list_patterns, 0, NROWS(list_rows));
    tcase_add_test(tc, test_subscriptions);
    tcase_add_loop_test(tc, test_names, 0, NROWS(name_rows));
    tcase_add_test(tc, test_name_limits);
    tcase_add_test(tc, test_symlinks);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(mstore_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
