/*
 * mstore_int.h - what the parts of the IMAP folder store share (mstore.c:
 * the account and its folders; mstore_index.c: a folder's index file and
 * its sync with the Maildir; mstore_view.c: sessions' views). Not for
 * other modules: they use mstore.h.
 *
 * A struct mfolder is the process's copy of one folder's index: every
 * message's UID, file name, size, date and keywords, sorted by UID. It is
 * shared by every store and view of this process on that folder; when its
 * last user lets it go it stays, unreferenced, in a small cache of recently
 * used folders (mstore.c), and is freed when that evicts it. Its strings
 * belong to it.
 */
#ifndef SAMOTOP_MSTORE_INT_H
#define SAMOTOP_MSTORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "mstore.h"

/* The index file, its lock and its temporary name, in a folder's Maildir;
 * the account's last UIDVALIDITY, in the account's Maildir. */
#define MSTORE_INDEX "samotop-uidlist"
#define MSTORE_INDEX_TMP "samotop-uidlist.tmp"
#define MSTORE_INDEX_LOCK "samotop-uidlist.lock"
#define MSTORE_UIDVALIDITY "samotop-uidvalidity"
#define MSTORE_SUBSCRIPTIONS "subscriptions"
#define MSTORE_INDEX_VERSION 1
/* One line of the index, at most (a file name is at most NAME_MAX). */
#define MSTORE_LINE_MAX 4096

/* Defaults of struct mstore_limits. */
#define MSTORE_FOLDERS_MAX 1000
#define MSTORE_NAME_MAX 200
#define MSTORE_MESSAGES_MAX 2000000
#define MSTORE_APPEND_MAX (64 * 1024 * 1024)
#define MSTORE_CACHE_FOLDERS 8
#define MSTORE_CACHE_BYTES (64 * 1024 * 1024)

/* One message in a folder's index. */
struct mentry {
    uint32_t uid;
    unsigned flags;    /* MSTORE_F_*, from the file name */
    bool in_new;       /* the file is in new/ (nobody claimed it yet) */
    bool seen_;        /* scratch, for a scan */
    uint64_t keywords; /* bit i: the folder's keyword i */
    uint64_t size;
    int64_t date;
    char *name; /* the file's name in new/ or cur/ */
};

/* A stamp that says whether a file or directory changed. */
struct mstamp {
    uint64_t ino, size;
    int64_t mtime_ns, ctime_ns;
};

/* The index as a file holds it. */
struct mindex {
    uint32_t uidvalidity, uidnext;
    int64_t new_mtime_ns, cur_mtime_ns; /* the dirs when last scanned; 0:
                                           scan again */
    int64_t cur_verify_ns; /* read cur/ once more from then on; 0: no */
    char *keywords[MSTORE_KEYWORDS_MAX];
    unsigned nkeywords;
    struct mentry *e; /* ascending UID */
    size_t n, cap;
    /* The index file's text as mindex_parse() read it: the names of the
     * entries it gave point into it (one block instead of one each). */
    char *arena;
    size_t arena_len;
};

struct mfolder {
    struct mfolder *next; /* the process's open folders (mstore.c) */
    int refs;             /* 0: kept in the cache only */
    size_t cache_bytes;   /* its memory, taken when it went into the cache */
    char *name;           /* IMAP name ("INBOX", "Archive/2024") */
    char *mdname;         /* Maildir++ name ("" for INBOX, ".Archive.2024") */
    char *path;           /* the folder's Maildir, for inotify */
    int dir_fd, new_fd, cur_fd;
    int index_fd; /* the index file the stamp is of, held open */
    /* The lock file while locked (-1 else), and how deep: opened for each
     * lock, so that an idle session holds three descriptors a folder. */
    int lock_fd, lock_depth;
    struct mindex ix;
    bool loaded;         /* ix holds what the file held at stamp */
    struct mstamp stamp; /* of the index file as last read or written */
    uint64_t gen;        /* bumped whenever ix changes */
    uint64_t new_gen;    /* gen + 1 when has_new was found */
    bool has_new;        /* some entry is in_new */
    /* STATUS's counts of ix, valid while counts_gen is gen + 1. */
    uint64_t counts_gen;
    uint32_t n_unseen, n_in_new;
    /* The messages as a view numbers them at gen, shared by the views
     * that have nothing of their own (mstore_view.c); NULL or stale (its
     * gen older) until a SELECT needs it. */
    struct msnap *snap;
};

/* A folder's messages at one generation of its index, as views number
 * them (no \Recent, nothing expunged): made by a SELECT, then shared
 * read-only by every view that has no change of its own to keep, so that
 * a SELECT of a settled folder copies nothing. Never written once made; a
 * view that must change its list copies it first. Freed with its last
 * reference (the folder's and its views'). */
struct msnap {
    int refs;
    uint64_t gen;          /* of the folder's index it was made from */
    uint32_t first_unseen; /* sequence number, 0: none */
    size_t n;
    struct mstore_msg m[];
};

/* Drops a reference to *s_p (NULL ok) and NULLs it (mstore.c). */
void msnap_put(struct msnap **s_p);

struct mstore {
    char *mailbox;
    char *path;  /* the account's Maildir */
    int acct_fd; /* the account's Maildir */
    struct mstore_limits lim;
    char trace[64];
    char err_code[32];
    char err_text[256];
    int err; /* the last failure's ERR_* code */
    int64_t delta;
    uint32_t append_uid; /* APPENDUID's, for struct mstore_copied */
    char host[64];       /* for file names */
    unsigned long counter;
};

/* mstore.c */
int mstore_fail(mstore_t *ms, int err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void mstore_ok(mstore_t *ms);
/* The folder named (IMAP name), opened and referenced, or NULL with the
 * error set (NONEXISTENT, or code_missing when given, e.g. TRYCREATE). */
struct mfolder *mstore_folder_get(mstore_t *ms, const char *name,
                                  const char *code_missing);
void mstore_folder_put(mstore_t *ms, struct mfolder **f_p);
/* Flags as the parser gives them into system flags and keyword bits of
 * ix, adding keywords when add (LIMIT when the table is full). */
int mstore_parse_flags(mstore_t *ms, struct mindex *ix,
                       const char *const *flags, size_t nflags, bool add,
                       unsigned *sys, uint64_t *kw);
/* A new unique base name for a message of size octets. */
void mstore_unique_name(mstore_t *ms, uint64_t size, char *out, size_t outlen);

/* mstore_index.c */

/* Parses an index file's len octets into ix (emptied first); ERR_MALFORMED
 * with the reason in why for anything amiss, limits included. */
int mindex_parse(struct mindex *ix, const char *data, size_t len,
                 size_t messages_max, char *why, size_t whylen);
/* The same, taking *data_p (len + 1 octets, xmalloc'd): the names are
 * parsed in place and it becomes ix's arena; *data_p is NULLed, success
 * or not. */
int mindex_parse_take(struct mindex *ix, char **data_p, size_t len,
                      size_t messages_max, char *why, size_t whylen);
/* Frees e's name (one in ix's arena stays there) and NULLs it. */
void mindex_name_free(const struct mindex *ix, struct mentry *e);
/* e's name for another index to own: a copy when it is in ix's arena,
 * else the name itself (e->name is NULLed). */
char *mindex_name_take(const struct mindex *ix, struct mentry *e);
/* Appends ix as an index file's text to *out (a buf_t). */
struct buf;
void mindex_format(const struct mindex *ix, struct buf *out);
void mindex_clear(struct mindex *ix);
/* Entry of uid, or NULL (binary search). */
struct mentry *mindex_find(const struct mindex *ix, uint32_t uid);
/* Index of the keyword (case-insensitive, RFC 3501 2.3.2), adding it when
 * add and there is room; -1 if absent or full. */
int mindex_keyword(struct mindex *ix, const char *kw, bool add);

/* System flags of a file name (":2," and letters), and the name with new
 * flags (other letters kept, all in ASCII order). */
unsigned mname_flags(const char *name);
char *mname_with_flags(const char *name, unsigned flags);
/* Length of the base name (before ':'). */
size_t mname_base_len(const char *name);
/* The size in ",S=" of the name, or -1. */
int64_t mname_size(const char *name);

/* How mfolder_sync() goes. */
enum {
    MF_CLAIM = 1 << 0, /* move new/ files to cur/; their UIDs go to claimed */
    MF_LOCKED = 1 << 1 /* the caller holds the lock */
};

/* How long the store trusts its own stamp of cur/ after changing it
 * before it reads cur/ once more (see mstore_index.c). */
#define MSTORE_VERIFY_NS (1000LL * 1000000LL)

/* Whether cur/ is as the index last saw it, taken before the caller
 * changes cur/ itself under the lock; then mfolder_cur_own(f, known)
 * after the change stamps cur/ without reading it again. */
bool mfolder_cur_known(struct mfolder *f);
void mfolder_cur_own(struct mfolder *f, bool known);

/* Brings f->ix up to date with the index file and the Maildir: cheap (a
 * few stat calls) when nothing changed, else under the lock: re-reads the
 * index, scans new/ and cur/, numbers new files, drops vanished ones, and
 * writes the index back. With MF_CLAIM, files in new/ move to cur/ and
 * their UIDs are appended to *claimed (caller frees). */
int mfolder_sync(mstore_t *ms, struct mfolder *f, unsigned how,
                 uint32_t **claimed, size_t *nclaimed);
/* Whether some message of f->ix is still in new/ (computed once per
 * change of the index). */
bool mfolder_has_new(struct mfolder *f);
/* Bumps f->gen after a change that put no message into new/ (a STORE,
 * an expunge, a COPY or APPEND into cur/): what mfolder_has_new() knew of
 * none there stays known, so the next sync need not look through every
 * entry again. */
void mfolder_changed(struct mfolder *f);
int mfolder_lock(mstore_t *ms, struct mfolder *f);
/* The index's lock file in dir_fd, opened (made when missing) for the
 * caller to close, or -errno. */
int mfolder_lock_file(int dir_fd);
/* The folder's tmp/, opened for the caller to close, or -errno. */
int mfolder_tmp(struct mfolder *f);
void mfolder_unlock(struct mfolder *f);
/* Writes f->ix to the index file (locked). */
int mfolder_write(mstore_t *ms, struct mfolder *f);
/* A fresh UIDVALIDITY for the account: above any it gave before. */
uint32_t mstore_next_uidvalidity(mstore_t *ms);

#endif
