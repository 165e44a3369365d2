/*
 * Views: a session's SELECTed or EXAMINEd folder, numbered as the client
 * was told (RFC 3501 2.3.1.2), and the message operations on it: sync,
 * STORE, COPY, MOVE, EXPUNGE and reading a message.
 *
 * A view has a list of messages (UID, flags, size, date), sorted by UID,
 * and the generation of the folder's index it last matched. A sync
 * compares the two lists in one pass; when the generation is the same and
 * no expunge is held, it costs only the folder's few stat calls.
 *
 * The list is the folder's shared snapshot (struct msnap) as long as the
 * view has nothing of its own: SELECT of a folder whose index did not
 * change since the last SELECT copies nothing. A view takes a copy of its
 * own when it must differ: \Recent messages it claimed, expunges held,
 * its own STORE, or a sync that finds the folder changed (the copy is
 * then made by the merge itself, which reads the snapshot and writes the
 * new list, so it costs no more than the merge did). After such a merge
 * it goes back to the folder's snapshot when that is current and the
 * view holds exactly the same. The snapshot is never written, so a
 * session's sequence numbers change only through its own merges (RFC
 * 3501 2.3.1.2).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "maildir.h"
#include "mstore_int.h"

/* A growable array of numbers the view hands out. */
struct nums {
    uint32_t *v;
    size_t n, cap;
};

struct mstore_view {
    mstore_t *ms;
    struct mfolder *f;
    bool read_only;
    /* Ascending UID; m[seq - 1]. While snap is set, m is snap->m and n
     * snap->n, never written (cap 0); else m is the view's own. */
    struct mstore_msg *m;
    size_t n, cap;
    struct msnap *snap;
    uint64_t gen;         /* of f->ix when last matched */
    uint32_t uidvalidity; /* as the client was told */
    unsigned nkeywords;   /* keywords the client was told of */
    size_t held;          /* messages with expunged set */
    uint32_t nrecent;     /* messages with recent set, not expunged */
    struct nums sel, exp, chg, src, dst;
    buf_t str;
};

/* How a merge goes. */
enum merge_mode {
    MERGE_FULL,         /* expunges, new messages and flags */
    MERGE_HOLD,         /* new messages and flags; expunges held */
    MERGE_EXPUNGE_ONLY, /* expunges alone (after EXPUNGE, MOVE) */
};

static void
nums_add(struct nums *a, uint32_t x)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 32;
        a->v = xrealloc(a->v, a->cap * sizeof(*a->v));
    }
    a->v[a->n++] = x;
}

static bool
in_sorted(const uint32_t *v, size_t n, uint32_t x)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (v[mid] < x)
            lo = mid + 1;
        else if (v[mid] > x)
            hi = mid;
        else
            return true;
    }
    return false;
}

static void
msgs_push(mstore_view_t *v, const struct mstore_msg *m)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->m = xrealloc(v->m, v->cap * sizeof(*v->m));
    }
    v->m[v->n++] = *m;
}

/* The folder's snapshot of its index as it is now, made when missing or
 * older; a reference for the caller. */
static struct msnap *
snap_get(struct mfolder *f)
{
    struct msnap *s = f->snap;

    if (s == NULL || s->gen != f->gen) {
        msnap_put(&f->snap);
        s = xmalloc(sizeof(*s) + f->ix.n * sizeof(s->m[0]));
        s->refs = 1;
        s->gen = f->gen;
        s->n = f->ix.n;
        s->first_unseen = 0;
        for (size_t i = 0; i < f->ix.n; i++) {
            const struct mentry *e = &f->ix.e[i];
            struct mstore_msg *m = &s->m[i];

            m->uid = e->uid;
            m->flags = e->flags;
            m->keywords = e->keywords;
            m->size = e->size;
            m->date = (time_t)e->date;
            m->recent = m->expunged = false;
            if (s->first_unseen == 0 && !(e->flags & MSTORE_F_SEEN))
                s->first_unseen = (uint32_t)i + 1;
        }
        f->snap = s;
    }
    s->refs++;
    return s;
}

/* Gives v the snapshot s (a reference the view takes over) instead of a
 * list of its own. */
static void
view_share(mstore_view_t *v, struct msnap *s)
{
    if (v->snap == NULL)
        free(v->m);
    else
        msnap_put(&v->snap);
    v->snap = s;
    v->m = s->m;
    v->n = s->n;
    v->cap = 0;
}

/* Makes v's list its own before it is written: a copy of the
 * snapshot. */
static void
view_own(mstore_view_t *v)
{
    struct mstore_msg *m;

    if (v->snap == NULL)
        return;
    v->cap = v->n > 0 ? v->n : 1;
    m = xmalloc(v->cap * sizeof(*m));
    memcpy(m, v->snap->m, v->n * sizeof(*m));
    msnap_put(&v->snap);
    v->m = m;
}

/* The first index entry whose UID is above uid. */
static size_t
entry_after(const struct mindex *ix, uint32_t uid)
{
    size_t lo = 0, hi = ix->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (ix->e[mid].uid <= uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * Matches the view with the folder's index in one pass (both sorted by
 * UID). Expunges are numbered as they are reported: each counts the ones
 * before it as gone (RFC 3501 7.4.1), which is the position the message
 * has among those kept so far, plus one. Flag changes are numbered after
 * the expunges. claimed lists (ascending) the UIDs this session took from
 * new/: \Recent for it alone.
 */
static void
merge(mstore_view_t *v, enum merge_mode mode, const uint32_t *claimed,
      size_t nclaimed, struct mstore_changes *ch)
{
    struct mfolder *f = v->f;
    size_t j = 0, kept = 0, before = v->n;
    const struct mstore_msg *src = v->m;
    struct msnap *was = v->snap;
    uint32_t last;

    if (f->ix.uidvalidity != v->uidvalidity) {
        /* The index was rebuilt: nothing here can be matched. */
        if (ch != NULL)
            ch->uidvalidity_changed = true;
        return;
    }
    /* A shared list is read as it is and the new one written apart: the
     * copy is the merge's own pass. */
    if (was != NULL) {
        v->snap = NULL;
        v->cap = v->n > 0 ? v->n : 1;
        v->m = xmalloc(v->cap * sizeof(*v->m));
    }
    v->held = 0;
    for (size_t i = 0; i < v->n; i++) {
        struct mstore_msg vm = src[i];
        const struct mentry *e;

        while (j < f->ix.n && f->ix.e[j].uid < vm.uid)
            j++;
        e = j < f->ix.n && f->ix.e[j].uid == vm.uid ? &f->ix.e[j] : NULL;
        if (e == NULL) {
            if (mode == MERGE_HOLD) {
                vm.expunged = true;
                v->held++;
                v->m[kept++] = vm;
            } else {
                nums_add(&v->exp, (uint32_t)kept + 1);
            }
            continue;
        }
        if (mode != MERGE_EXPUNGE_ONLY && !vm.expunged &&
            (vm.flags != e->flags || vm.keywords != e->keywords)) {
            vm.flags = e->flags;
            vm.keywords = e->keywords;
            nums_add(&v->chg, (uint32_t)kept + 1);
        }
        v->m[kept++] = vm;
    }
    msnap_put(&was);
    v->n = kept;
    if (mode != MERGE_EXPUNGE_ONLY) {
        last = v->n > 0 ? v->m[v->n - 1].uid : 0;
        j = entry_after(&f->ix, last);
        if (v->cap < v->n + (f->ix.n - j)) {
            v->cap = v->n + (f->ix.n - j);
            v->m = xrealloc(v->m, v->cap * sizeof(*v->m));
        }
        /* A new view of a big folder copies every entry: a plain loop,
         * \Recent looked up only when some message can be. */
        if (nclaimed == 0 && !v->read_only) {
            struct mstore_msg *m = v->m + v->n;

            for (; j < f->ix.n; j++, m++) {
                const struct mentry *e = &f->ix.e[j];

                m->uid = e->uid;
                m->flags = e->flags;
                m->keywords = e->keywords;
                m->size = e->size;
                m->date = (time_t)e->date;
                m->recent = m->expunged = false;
            }
            v->n = (size_t)(m - v->m);
        }
        for (; j < f->ix.n; j++) {
            const struct mentry *e = &f->ix.e[j];
            struct mstore_msg vm = {
                .uid = e->uid,
                .flags = e->flags,
                .keywords = e->keywords,
                .size = e->size,
                .date = (time_t)e->date,
                .recent = in_sorted(claimed, nclaimed, e->uid) ||
                          (v->read_only && e->in_new),
            };

            msgs_push(v, &vm);
        }
        v->gen = f->gen;
        if (v->nkeywords != f->ix.nkeywords) {
            v->nkeywords = f->ix.nkeywords;
            if (ch != NULL)
                ch->keywords_changed = true;
        }
    }
    v->nrecent = 0;
    for (size_t i = 0; i < v->n; i++)
        v->nrecent += v->m[i].recent && !v->m[i].expunged;
    /* The same as the folder's current snapshot (nothing held, nothing
     * recent, every entry of the index, whose flags the merge took): share
     * that again rather than keep a copy. */
    if (mode != MERGE_EXPUNGE_ONLY && v->held == 0 && v->nrecent == 0 &&
        v->n > 0 && v->n == f->ix.n && f->snap != NULL &&
        f->snap->gen == f->gen && v->gen == f->gen) {
        f->snap->refs++;
        view_share(v, f->snap);
    }
    if (ch != NULL) {
        ch->expunged = v->exp.v;
        ch->nexpunged = v->exp.n;
        ch->flags = v->chg.v;
        ch->nflags = v->chg.n;
        ch->exists = (uint32_t)v->n;
        ch->recent = mstore_view_recent(v);
        ch->exists_changed = v->n != before - v->exp.n;
    }
}

static void
results_reset(mstore_view_t *v)
{
    v->exp.n = v->chg.n = v->src.n = v->dst.n = 0;
}

mstore_view_t *
mstore_select(mstore_t *ms, const char *name, bool read_only)
{
    struct mfolder *f;
    mstore_view_t *v;
    uint32_t *claimed = NULL;
    size_t nclaimed = 0;

    mstore_ok(ms);
    if ((f = mstore_folder_get(ms, name, NULL)) == NULL)
        return NULL;
    if (mfolder_sync(ms, f, read_only ? 0 : MF_CLAIM, &claimed, &nclaimed) !=
        0) {
        mstore_folder_put(ms, &f);
        return NULL;
    }
    v = xcalloc(1, sizeof(*v));
    v->ms = ms;
    v->f = f;
    v->read_only = read_only;
    v->uidvalidity = f->ix.uidvalidity;
    v->nkeywords = f->ix.nkeywords;
    v->gen = f->gen;
    if (nclaimed == 0 && f->ix.n > 0 && !(read_only && mfolder_has_new(f))) {
        /* Nothing \Recent for this view alone: the shared snapshot, made
         * once per change of the index. */
        view_share(v, snap_get(f));
    } else {
        if (f->ix.n > 0) {
            v->cap = f->ix.n;
            v->m = xmalloc(v->cap * sizeof(*v->m));
        }
        merge(v, MERGE_FULL, claimed, nclaimed, NULL);
    }
    free(claimed);
    results_reset(v);
    log_debug(ms->trace, "mstore.select",
              "mailbox=%s folder=%s exists=%zu recent=%zu ro=%d", ms->mailbox,
              log_q(f->name), v->n, nclaimed, read_only);
    return v;
}

void
mstore_view_destroy(mstore_view_t **v_p)
{
    mstore_view_t *v = *v_p;

    if (v == NULL)
        return;
    if (v->snap != NULL)
        msnap_put(&v->snap);
    else
        free(v->m);
    mstore_folder_put(v->ms, &v->f);
    free(v->sel.v);
    free(v->exp.v);
    free(v->chg.v);
    free(v->src.v);
    free(v->dst.v);
    buf_free(&v->str);
    free(v);
    *v_p = NULL;
}

const char *
mstore_view_name(const mstore_view_t *v)
{
    return v->f->name;
}

bool
mstore_view_read_only(const mstore_view_t *v)
{
    return v->read_only;
}

uint32_t
mstore_view_exists(const mstore_view_t *v)
{
    return (uint32_t)v->n;
}

uint32_t
mstore_view_recent(const mstore_view_t *v)
{
    return v->nrecent;
}

uint32_t
mstore_view_uidvalidity(const mstore_view_t *v)
{
    return v->uidvalidity;
}

uint32_t
mstore_view_uidnext(const mstore_view_t *v)
{
    uint32_t next = v->f->ix.uidnext;

    /* Never below what the view has: the folder may have been rebuilt. */
    if (v->n > 0 && next <= v->m[v->n - 1].uid)
        next = v->m[v->n - 1].uid + 1;
    return next;
}

uint32_t
mstore_view_first_unseen(const mstore_view_t *v)
{
    if (v->snap != NULL)
        return v->snap->first_unseen;
    for (size_t i = 0; i < v->n; i++)
        if (!(v->m[i].flags & MSTORE_F_SEEN))
            return (uint32_t)i + 1;
    return 0;
}

static const char *const sys_names[] = {"\\Answered", "\\Flagged", "\\Deleted",
                                        "\\Seen", "\\Draft"};

static void
flag_list(mstore_view_t *v, bool permanent)
{
    buf_reset(&v->str);
    for (size_t i = 0; i < 5; i++)
        buf_printf(&v->str, "%s%s", i ? " " : "", sys_names[i]);
    for (unsigned i = 0; i < v->nkeywords && i < v->f->ix.nkeywords; i++)
        buf_printf(&v->str, " %s", v->f->ix.keywords[i]);
    if (permanent && v->f->ix.nkeywords < MSTORE_KEYWORDS_MAX)
        buf_adds(&v->str, " \\*");
}

const char *
mstore_view_flag_list(mstore_view_t *v)
{
    flag_list(v, false);
    return v->str.data;
}

const char *
mstore_view_permanent_flags(mstore_view_t *v)
{
    /* RFC 3501 7.1: a read-only folder keeps no flag for the session. */
    if (v->read_only)
        return "";
    flag_list(v, true);
    return v->str.data;
}

const char *
mstore_view_keyword(const mstore_view_t *v, unsigned i)
{
    return i < v->f->ix.nkeywords ? v->f->ix.keywords[i] : NULL;
}

const struct mstore_msg *
mstore_view_msg(const mstore_view_t *v, uint32_t seq)
{
    return seq >= 1 && seq <= v->n ? &v->m[seq - 1] : NULL;
}

uint32_t
mstore_view_seq(const mstore_view_t *v, uint32_t uid)
{
    size_t lo = 0, hi = v->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (v->m[mid].uid < uid)
            lo = mid + 1;
        else if (v->m[mid].uid > uid)
            hi = mid;
        else
            return (uint32_t)mid + 1;
    }
    return 0;
}

const char *
mstore_view_flags_str(mstore_view_t *v, uint32_t seq)
{
    const struct mstore_msg *m = mstore_view_msg(v, seq);
    bool sp = false;

    buf_reset(&v->str);
    buf_adds(&v->str, "");
    if (m == NULL)
        return v->str.data;
    for (size_t i = 0; i < 5; i++)
        if (m->flags & (1u << i)) {
            buf_printf(&v->str, "%s%s", sp ? " " : "", sys_names[i]);
            sp = true;
        }
    if (m->recent) {
        buf_printf(&v->str, "%s\\Recent", sp ? " " : "");
        sp = true;
    }
    for (unsigned i = 0; i < v->f->ix.nkeywords; i++)
        if (m->keywords & (1ULL << i)) {
            buf_printf(&v->str, "%s%s", sp ? " " : "", v->f->ix.keywords[i]);
            sp = true;
        }
    return v->str.data;
}

const char *
mstore_view_path(const mstore_view_t *v)
{
    return v->f->path;
}

int
mstore_view_sync(mstore_view_t *v, unsigned opts, struct mstore_changes *ch)
{
    uint32_t *claimed = NULL;
    size_t nclaimed = 0;
    int rc;

    mstore_ok(v->ms);
    memset(ch, 0, sizeof(*ch));
    results_reset(v);
    rc = mfolder_sync(v->ms, v->f, v->read_only ? 0 : MF_CLAIM, &claimed,
                      &nclaimed);
    if (rc == ERR_NOTFOUND) {
        /* Deleted under the session: as lost as a rebuilt index. */
        ch->uidvalidity_changed = true;
        return 0;
    }
    if (rc != 0)
        return rc;
    if (v->gen != v->f->gen || nclaimed > 0 ||
        (v->held > 0 && !(opts & MSTORE_SYNC_HOLD_EXPUNGES)))
        merge(v, (opts & MSTORE_SYNC_HOLD_EXPUNGES) ? MERGE_HOLD : MERGE_FULL,
              claimed, nclaimed, ch);
    else
        ch->exists = (uint32_t)v->n, ch->recent = mstore_view_recent(v);
    free(claimed);
    return 0;
}

/*
 * Sequence sets.
 */

/* The index of the view's first message with a UID of at least uid. */
static size_t
first_uid_at_least(const mstore_view_t *v, uint32_t uid)
{
    size_t lo = 0, hi = v->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (v->m[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Resolves into v->sel (ascending, distinct). */
static int
resolve(mstore_view_t *v, const struct imap_seqset *set, bool uid)
{
    unsigned char *mark = NULL;
    uint32_t max = uid ? (v->n ? v->m[v->n - 1].uid : 0) : (uint32_t)v->n;

    v->sel.n = 0;
    for (size_t k = 0; k < set->n; k++) {
        uint32_t lo = set->r[k].lo == IMAP_SEQ_STAR ? max : set->r[k].lo;
        uint32_t hi = set->r[k].hi == IMAP_SEQ_STAR ? max : set->r[k].hi;

        if (lo > hi) {
            uint32_t t = lo;

            lo = hi, hi = t;
        }
        if (!uid && (lo == 0 || hi > v->n)) {
            free(mark);
            return mstore_fail(v->ms, ERR_INVAL, NULL,
                               "no message %" PRIu32 " (there are %zu)",
                               lo == 0 ? 0 : hi, v->n);
        }
        if (uid && (v->n == 0 || hi == 0))
            continue;
        if (set->n == 1) {
            /* One range: in order already, no marks needed. */
            if (!uid) {
                for (uint32_t s = lo; s <= hi && s != 0; s++)
                    nums_add(&v->sel, s);
            } else {
                for (size_t i = first_uid_at_least(v, lo);
                     i < v->n && v->m[i].uid <= hi; i++)
                    nums_add(&v->sel, (uint32_t)i + 1);
            }
            return 0;
        }
        if (mark == NULL)
            mark = xcalloc(v->n + 1, 1);
        if (!uid) {
            for (uint32_t s = lo; s <= hi && s != 0; s++)
                mark[s] = 1;
        } else {
            for (size_t i = first_uid_at_least(v, lo);
                 i < v->n && v->m[i].uid <= hi; i++)
                mark[i + 1] = 1;
        }
    }
    if (mark != NULL) {
        for (size_t s = 1; s <= v->n; s++)
            if (mark[s])
                nums_add(&v->sel, (uint32_t)s);
        free(mark);
    }
    return 0;
}

int
mstore_view_resolve(mstore_view_t *v, const struct imap_seqset *set, bool uid,
                    const uint32_t **seqs, size_t *n)
{
    int rc;

    mstore_ok(v->ms);
    rc = resolve(v, set, uid);
    *seqs = rc == 0 ? v->sel.v : NULL;
    *n = rc == 0 ? v->sel.n : 0;
    return rc;
}

/*
 * Flags.
 */

static int
read_only_fail(mstore_view_t *v)
{
    return mstore_fail(v->ms, ERR_INVAL, "CANNOT",
                       "the folder is open read-only (EXAMINE)");
}

/* Sets the flags of the messages seqs (n of them) in the folder and the
 * view; the numbers of those still there (or, with only_changed, those
 * whose flags changed) go to v->chg. The lock is taken here. */
static int
set_flags(mstore_view_t *v, const uint32_t *seqs, size_t n,
          enum imap_store_op op, const char *const *flags, size_t nflags,
          unsigned sys_in, bool only_changed)
{
    mstore_t *ms = v->ms;
    struct mfolder *f = v->f;
    bool changed = false, keywords = false, known;
    unsigned sys, nkw;
    uint64_t kw;
    int rc;

    if ((rc = mfolder_lock(ms, f)) != 0)
        return rc;
    if ((rc = mfolder_sync(ms, f, MF_LOCKED, NULL, NULL)) != 0)
        goto out;
    if (f->ix.uidvalidity != v->uidvalidity)
        goto out; /* the next sync says so */
    nkw = f->ix.nkeywords;
    rc = mstore_parse_flags(ms, &f->ix, flags, nflags, op != IMAP_STORE_REMOVE,
                            &sys, &kw);
    if (rc != 0)
        goto out;
    known = mfolder_cur_known(f);
    sys |= sys_in;
    if (n > 0)
        view_own(v); /* its flags are written below */
    for (size_t i = 0; i < n; i++) {
        struct mstore_msg *vm = &v->m[seqs[i] - 1];
        struct mentry *e;
        unsigned nf;
        uint64_t nk;

        if (vm->expunged || (e = mindex_find(&f->ix, vm->uid)) == NULL)
            continue;
        nf = op == IMAP_STORE_SET   ? sys
             : op == IMAP_STORE_ADD ? e->flags | sys
                                    : e->flags & ~sys;
        nk = op == IMAP_STORE_SET   ? kw
             : op == IMAP_STORE_ADD ? e->keywords | kw
                                    : e->keywords & ~kw;
        if (nf != e->flags || e->in_new) {
            char *to = mname_with_flags(e->name, nf);

            /* The flags live in the name (the Maildir spec), so that
             * other Maildir readers see them. */
            if (renameat(e->in_new ? f->new_fd : f->cur_fd, e->name, f->cur_fd,
                         to) != 0) {
                free(to);
                if (errno == ENOENT)
                    continue; /* gone: the next sync says so */
                rc = mstore_fail(ms, ERR_SYS, "SERVERBUG",
                                 "cannot set flags: %s", strerror(errno));
                break;
            }
            mindex_name_free(&f->ix, e);
            e->name = to;
            e->in_new = false;
            e->flags = nf;
            changed = true;
        }
        if (nk != e->keywords) {
            e->keywords = nk;
            changed = keywords = true;
        }
        if (!only_changed || vm->flags != e->flags ||
            vm->keywords != e->keywords)
            nums_add(&v->chg, seqs[i]);
        vm->flags = e->flags;
        vm->keywords = e->keywords;
    }
    if (changed) {
        mfolder_cur_own(f, known && rc == 0);
        mfolder_changed(f);
    }
    /* System flags are in the file names: other processes see a new
     * cur/ mtime and read the names again, so the index (whose names and
     * cur/ stamp are then old) is rewritten only for keywords, which it
     * alone holds. That keeps a STORE or a FETCH that sets \Seen from
     * writing the whole index of a big folder. */
    if (keywords || f->ix.nkeywords != nkw) {
        int wrc = mfolder_write(ms, f);

        if (rc == 0)
            rc = wrc;
    }
out:
    mfolder_unlock(f);
    return rc;
}

int
mstore_store(mstore_view_t *v, const struct imap_seqset *set, bool uid,
             enum imap_store_op op, const char *const *flags, size_t nflags,
             const uint32_t **seqs, size_t *n)
{
    uint32_t *sel;
    size_t nsel;
    int rc;

    mstore_ok(v->ms);
    results_reset(v);
    *seqs = NULL;
    *n = 0;
    if (v->read_only)
        return read_only_fail(v);
    if ((rc = resolve(v, set, uid)) != 0)
        return rc;
    nsel = v->sel.n;
    sel = v->sel.v;
    rc = set_flags(v, sel, nsel, op, flags, nflags, 0, false);
    *seqs = v->chg.v;
    *n = v->chg.n;
    return rc;
}

int
mstore_view_set_seen(mstore_view_t *v, const uint32_t *seqs, size_t n,
                     const uint32_t **changed, size_t *nchanged)
{
    uint32_t *copy;
    size_t k = 0;
    int rc = 0;

    mstore_ok(v->ms);
    *changed = NULL;
    *nchanged = 0;
    if (v->read_only)
        return 0;
    /* seqs may be v->sel's: keep a copy, and only those not seen yet. */
    copy = xmalloc((n ? n : 1) * sizeof(*copy));
    for (size_t i = 0; i < n; i++)
        if (seqs[i] >= 1 && seqs[i] <= v->n &&
            !(v->m[seqs[i] - 1].flags & MSTORE_F_SEEN))
            copy[k++] = seqs[i];
    results_reset(v);
    if (k > 0)
        rc =
            set_flags(v, copy, k, IMAP_STORE_ADD, NULL, 0, MSTORE_F_SEEN, true);
    free(copy);
    *changed = v->chg.v;
    *nchanged = v->chg.n;
    return rc;
}

/*
 * EXPUNGE, COPY, MOVE.
 */

/* Removes from the folder the messages of the view that pass: with uids
 * (ascending) only those, else those with \Deleted. Returns the octets
 * removed. The lock is taken here. */
static int
remove_msgs(mstore_view_t *v, const uint32_t *uids, size_t nuids,
            bool need_deleted, uint64_t *bytes)
{
    mstore_t *ms = v->ms;
    struct mfolder *f = v->f;
    size_t kept = 0;
    bool known;
    int rc;

    *bytes = 0;
    if ((rc = mfolder_lock(ms, f)) != 0)
        return rc;
    if ((rc = mfolder_sync(ms, f, MF_LOCKED, NULL, NULL)) != 0)
        goto out;
    known = mfolder_cur_known(f);
    for (size_t i = 0; i < f->ix.n; i++) {
        struct mentry *e = &f->ix.e[i];
        bool drop = (uids == NULL || in_sorted(uids, nuids, e->uid)) &&
                    (!need_deleted || (e->flags & MSTORE_F_DELETED)) &&
                    mstore_view_seq(v, e->uid) != 0;

        if (drop &&
            unlinkat(e->in_new ? f->new_fd : f->cur_fd, e->name, 0) != 0 &&
            errno != ENOENT) {
            rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot expunge: %s",
                             strerror(errno));
            drop = false;
        }
        if (drop) {
            *bytes += e->size;
            mindex_name_free(&f->ix, e);
        } else {
            f->ix.e[kept++] = *e;
        }
    }
    if (kept != f->ix.n) {
        f->ix.n = kept;
        mfolder_cur_own(f, known && rc == 0);
        mfolder_changed(f);
        int wrc = mfolder_write(ms, f);

        if (rc == 0)
            rc = wrc;
    }
out:
    mfolder_unlock(f);
    return rc;
}

int
mstore_expunge(mstore_view_t *v, const struct imap_seqset *uids,
               const uint32_t **expunged, size_t *nexpunged)
{
    uint32_t *list = NULL;
    size_t nlist = 0;
    uint64_t bytes = 0;
    int rc;

    mstore_ok(v->ms);
    results_reset(v);
    *expunged = NULL;
    *nexpunged = 0;
    if (v->read_only)
        return read_only_fail(v);
    if (uids != NULL) {
        if ((rc = resolve(v, uids, true)) != 0)
            return rc;
        nlist = v->sel.n;
        list = xmalloc((nlist ? nlist : 1) * sizeof(*list));
        for (size_t i = 0; i < nlist; i++)
            list[i] = v->m[v->sel.v[i] - 1].uid;
    }
    rc = remove_msgs(v, list, uids != NULL ? nlist : 0, true, &bytes);
    free(list);
    /* On failure the caller reports no expunge, so the view keeps its
     * numbers: what did go is reported by the next sync. */
    if (rc == 0)
        merge(v, MERGE_EXPUNGE_ONLY, NULL, 0, NULL);
    v->ms->delta = -(int64_t)bytes;
    *expunged = v->exp.v;
    *nexpunged = v->exp.n;
    if (bytes > 0)
        log_debug(v->ms->trace, "mstore.expunge",
                  "mailbox=%s folder=%s n=%zu bytes=%" PRIu64, v->ms->mailbox,
                  log_q(v->f->name), v->exp.n, bytes);
    return rc;
}

/* Copies file name from dir from_fd into dest's cur/ as to: a hard link,
 * else a copy written to tmp/ and fsync'd. */
static int
copy_file(mstore_t *ms, int from_fd, const char *name, struct mfolder *d,
          const char *to, const char *base)
{
    char buf[65536];
    int in, out, tmp_fd, rc = 0;
    struct stat st;
    ssize_t n;

    if (linkat(from_fd, name, d->cur_fd, to, 0) == 0)
        return 0;
    if (errno == ENOENT)
        return ERR_NOTFOUND;
    in = openat(from_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return errno == ENOENT
                   ? ERR_NOTFOUND
                   : mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot copy: %s",
                                 strerror(errno));
    tmp_fd = mfolder_tmp(d);
    out = tmp_fd < 0
              ? -1
              : openat(tmp_fd, base,
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0600);
    if (out < 0) {
        rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot copy: %s",
                         strerror(tmp_fd < 0 ? -tmp_fd : errno));
        if (tmp_fd >= 0)
            close(tmp_fd);
        close(in);
        return rc;
    }
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    if (n == 0 && fstat(in, &st) == 0) {
        struct timespec ts[2] = {st.st_mtim, st.st_mtim};

        futimens(out, ts);
    }
    if (n == 0 && fsync(out) != 0)
        n = -1;
    if (close(out) != 0)
        n = -1;
    if (n < 0 || renameat(tmp_fd, base, d->cur_fd, to) != 0) {
        rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot copy: %s",
                         strerror(errno));
        unlinkat(tmp_fd, base, 0);
    }
    close(tmp_fd);
    close(in);
    return rc;
}

/* Locks a and b (once when the same) in the order of their names, so
 * that two processes copying both ways never wait on each other. */
static int
lock_two(mstore_t *ms, struct mfolder *a, struct mfolder *b)
{
    struct mfolder *first = a, *second = b;
    int rc;

    if (a == b)
        return mfolder_lock(ms, a);
    if (strcmp(a->mdname, b->mdname) > 0)
        first = b, second = a;
    if ((rc = mfolder_lock(ms, first)) != 0)
        return rc;
    if ((rc = mfolder_lock(ms, second)) != 0)
        mfolder_unlock(first);
    return rc;
}

static void
unlock_two(struct mfolder *a, struct mfolder *b)
{
    mfolder_unlock(a);
    if (b != a)
        mfolder_unlock(b);
}

/* COPY's work: fills v->src and v->dst, and the octets copied. */
static int
copy_msgs(mstore_view_t *v, const struct imap_seqset *set, bool uid,
          const char *dest, struct mstore_copied *out, uint64_t *bytes)
{
    mstore_t *ms = v->ms;
    struct mfolder *f = v->f, *d;
    char base[MAILDIR_FILE_MAX];
    bool known;
    int rc;

    *bytes = 0;
    memset(out, 0, sizeof(*out));
    if ((rc = resolve(v, set, uid)) != 0)
        return rc;
    if ((d = mstore_folder_get(ms, dest, "TRYCREATE")) == NULL)
        return ms->err;
    if ((rc = lock_two(ms, f, d)) != 0)
        goto out;
    if ((rc = mfolder_sync(ms, f, MF_LOCKED, NULL, NULL)) != 0 ||
        (d != f && (rc = mfolder_sync(ms, d, MF_LOCKED, NULL, NULL)) != 0))
        goto unlock;
    known = mfolder_cur_known(d);
    for (size_t i = 0; i < v->sel.n; i++) {
        const struct mstore_msg *vm = &v->m[v->sel.v[i] - 1];
        const struct mentry *e;
        struct mentry ne;
        char *to;
        int crc;

        if (vm->expunged || (e = mindex_find(&f->ix, vm->uid)) == NULL)
            continue;
        if (d->ix.n >= ms->lim.messages_max || d->ix.uidnext == UINT32_MAX) {
            rc = mstore_fail(ms, ERR_TOO_BIG, "LIMIT", "folder %s is full",
                             dest);
            break;
        }
        mstore_unique_name(ms, e->size, base, sizeof(base));
        to = mname_with_flags(base, e->flags);
        crc = copy_file(ms, e->in_new ? f->new_fd : f->cur_fd, e->name, d, to,
                        base);
        if (crc == ERR_NOTFOUND) {
            free(to);
            continue; /* expunged meanwhile */
        }
        if (crc != 0) {
            free(to);
            rc = crc;
            break;
        }
        memset(&ne, 0, sizeof(ne));
        ne.uid = d->ix.uidnext++;
        ne.flags = e->flags;
        ne.size = e->size;
        ne.date = e->date;
        ne.name = to;
        /* Keywords by name: each folder numbers its own. */
        for (unsigned k = 0; k < f->ix.nkeywords; k++) {
            int j;

            if ((e->keywords & (1ULL << k)) &&
                (j = mindex_keyword(&d->ix, f->ix.keywords[k], true)) >= 0)
                ne.keywords |= 1ULL << j;
        }
        if (d->ix.n == d->ix.cap) {
            d->ix.cap = d->ix.cap ? d->ix.cap * 2 : 64;
            d->ix.e = xrealloc(d->ix.e, d->ix.cap * sizeof(*d->ix.e));
        }
        /* e may have moved with the realloc when d is f. */
        nums_add(&v->src, vm->uid);
        d->ix.e[d->ix.n++] = ne;
        nums_add(&v->dst, ne.uid);
        *bytes += ne.size;
    }
    if (v->dst.n > 0) {
        int wrc;

        if (fsync(d->cur_fd) != 0 && rc == 0)
            rc = mstore_fail(ms, ERR_SYS, "SERVERBUG", "cannot copy: %s",
                             strerror(errno));
        mfolder_cur_own(d, known && rc == 0);
        mfolder_changed(d);
        wrc = mfolder_write(ms, d);
        if (rc == 0)
            rc = wrc;
    }
    out->uidvalidity = d->ix.uidvalidity;
    out->src_uids = v->src.v;
    out->dst_uids = v->dst.v;
    out->n = v->dst.n;
unlock:
    unlock_two(f, d);
out:
    mstore_folder_put(ms, &d);
    return rc;
}

int
mstore_copy(mstore_view_t *v, const struct imap_seqset *set, bool uid,
            const char *dest, struct mstore_copied *out)
{
    uint64_t bytes;
    int rc;

    mstore_ok(v->ms);
    results_reset(v);
    rc = copy_msgs(v, set, uid, dest, out, &bytes);
    v->ms->delta = (int64_t)bytes;
    return rc;
}

int
mstore_move(mstore_view_t *v, const struct imap_seqset *set, bool uid,
            const char *dest, struct mstore_copied *out,
            const uint32_t **expunged, size_t *nexpunged)
{
    uint64_t added = 0, removed = 0;
    int rc;

    mstore_ok(v->ms);
    results_reset(v);
    *expunged = NULL;
    *nexpunged = 0;
    if (v->read_only)
        return read_only_fail(v);
    rc = copy_msgs(v, set, uid, dest, out, &added);
    /* When the copy failed, nothing leaves this folder, so nothing is
     * lost (the copies already made stay in dest). v->src is ascending,
     * as the set was. */
    if (rc == 0 && v->src.n > 0) {
        rc = remove_msgs(v, v->src.v, v->src.n, false, &removed);
        if (rc == 0)
            merge(v, MERGE_EXPUNGE_ONLY, NULL, 0, NULL);
    }
    v->ms->delta = (int64_t)added - (int64_t)removed;
    *expunged = v->exp.v;
    *nexpunged = v->exp.n;
    return rc;
}

/*
 * Reading a message.
 */

int
mstore_open_msg(mstore_view_t *v, uint32_t seq, int *fd)
{
    mstore_t *ms = v->ms;
    struct mfolder *f = v->f;
    const struct mstore_msg *vm = mstore_view_msg(v, seq);

    mstore_ok(ms);
    *fd = -1;
    if (vm == NULL)
        return mstore_fail(ms, ERR_INVAL, NULL, "no message %" PRIu32, seq);
    for (int attempt = 0; !vm->expunged && attempt < 2; attempt++) {
        const struct mentry *e = mindex_find(&f->ix, vm->uid);

        if (e != NULL) {
            *fd = openat(e->in_new ? f->new_fd : f->cur_fd, e->name,
                         O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (*fd >= 0)
                return 0;
            if (errno != ENOENT)
                return mstore_fail(ms, ERR_SYS, "SERVERBUG",
                                   "cannot read message: %s", strerror(errno));
        }
        /* Renamed (flags changed by another program) or gone: read the
         * directories again and look once more. */
        f->ix.new_mtime_ns = f->ix.cur_mtime_ns = 0;
        if (mfolder_sync(ms, f, 0, NULL, NULL) != 0)
            return ms->err;
    }
    return mstore_fail(ms, ERR_NOTFOUND, "EXPUNGEISSUED",
                       "message %" PRIu32 " was expunged", seq);
}

int
mstore_map(mstore_view_t *v, uint32_t seq, struct mstore_map *m)
{
    struct stat st;
    void *p;
    int fd, rc;

    memset(m, 0, sizeof(*m));
    m->data = "";
    if ((rc = mstore_open_msg(v, seq, &fd)) != 0)
        return rc;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return mstore_fail(v->ms, ERR_SYS, "SERVERBUG",
                           "cannot read message: %s", strerror(errno));
    }
    if (st.st_size == 0) {
        close(fd);
        return 0;
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return mstore_fail(v->ms, ERR_SYS, "SERVERBUG",
                           "cannot read message: %s", strerror(errno));
    m->data = p;
    m->len = (size_t)st.st_size;
    m->priv_ = p;
    return 0;
}

void
mstore_unmap(struct mstore_map *m)
{
    if (m->priv_ != NULL)
        munmap(m->priv_, m->len);
    memset(m, 0, sizeof(*m));
    m->data = "";
}
