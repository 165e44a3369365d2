/*
 * mstore.h - an account's IMAP folders over its Maildir: folder names and
 * operations, the UID index of each folder, and per-session views of a
 * selected folder (RFC 3501).
 *
 * An account "alice@example.test" is the Maildir that maildir.c delivers
 * into, DATA/mail/example.test/alice/. Its IMAP folders: INBOX is that
 * Maildir itself; any other name is a Maildir++ folder whose "/"
 * (the hierarchy delimiter) becomes ".": "Archive/2024" is
 * ".Archive.2024", "Sent" is ".Sent". Names are modified UTF-7 (RFC 3501
 * 5.1.3), kept as given; "." is refused in them, since Maildir++ uses it.
 * Subscriptions are the "subscriptions" file in the Maildir, one name a
 * line, as Courier and Dovecot keep it.
 *
 * Each folder has an index, "samotop-uidlist" in its Maildir: a header
 * with the version, UIDVALIDITY and UIDNEXT, then one line per message
 * with its UID, the file's base name (before ":2,"), its size, internal
 * date and keywords. It is read and rewritten (to a temporary file, then
 * renamed) under an flock() of "samotop-uidlist.lock", so that sessions of
 * this process, other mailbox processes, deliveries and Maildir tools may
 * change the folder at once. A file found in new/ gets the next UID; the
 * first read-write view that syncs it moves it to cur/ with ":2," and has
 * it as \Recent (RFC 3501 2.3.2). A file gone is an expunge; a file
 * renamed (flags changed by mutt, mbsync, Dovecot) keeps its UID. System
 * flags live in the file name (":2," then the letters D F P R S T in
 * order, the Maildir spec); keywords ($Junk, ...) in the index. An index
 * that cannot be read is rebuilt from the files with a new UIDVALIDITY
 * (RFC 3501 2.3.1.1).
 *
 * Ownership. mstore_open() returns a store the caller destroys; a view
 * (mstore_select()) belongs to the caller too and must be destroyed before
 * its store. Strings and arrays returned are borrowed: from a view, until
 * the next call on that view; from the store (errors, list names), until
 * the next call on the store or any of its views.
 *
 * Errors. Calls return 0 or a negative ERR_* code (lib/err.h); then
 * mstore_err_code() gives the RFC 5530 response code for "NO [CODE] text"
 * (TRYCREATE, NONEXISTENT, ALREADYEXISTS, CANNOT, LIMIT, TOOBIG,
 * EXPUNGEISSUED, SERVERBUG, or NULL) and mstore_err_text() a short
 * sentence for the client. Bad input (names, sets, flags) is an error,
 * never a crash.
 *
 * All stores of a process are used from one thread (they share the open
 * folders' indexes, so that sessions on one big folder hold one copy);
 * calls block on the disk. Paths are walked with openat(O_NOFOLLOW) from
 * the mail root, as in maildir.c.
 */
#ifndef SAMOTOP_MSTORE_H
#define SAMOTOP_MSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lib/imap_parse.h"
#include "lib/imap_server.h"

typedef struct mstore mstore_t;
typedef struct mstore_view mstore_view_t;

/* Limits; zero in a field means the default in brackets. */
struct mstore_limits {
    size_t folders_max;  /* folders of an account [1000] */
    size_t name_max;     /* octets of an IMAP folder name [200]; the
                            Maildir++ name must fit MAILDIR_FOLDER_MAX too */
    size_t messages_max; /* messages in one folder's index [2000000] */
    size_t append_max;   /* octets of an APPENDed message [67108864] */
    /* Folders whose last view went, kept parsed in the process for the
     * next SELECT (checked then against the index file and new/ and cur/
     * as any sync is): how many [8] and their octets [67108864]. The
     * cache is the process's; the limits of the store that lets a folder
     * go apply. */
    size_t cache_folders;
    size_t cache_bytes;
};

/* System flags (RFC 3501 2.3.2) and their Maildir letters. */
enum {
    MSTORE_F_ANSWERED = 1 << 0, /* R */
    MSTORE_F_FLAGGED = 1 << 1,  /* F */
    MSTORE_F_DELETED = 1 << 2,  /* T */
    MSTORE_F_SEEN = 1 << 3,     /* S */
    MSTORE_F_DRAFT = 1 << 4,    /* D */
};

/* Keywords one folder can have (the index keeps a bit per message). */
#define MSTORE_KEYWORDS_MAX 64

/* One message of a view. */
struct mstore_msg {
    uint32_t uid;
    unsigned flags;    /* MSTORE_F_* */
    uint64_t keywords; /* bit i: mstore_view_keyword(v, i) */
    uint64_t size;     /* octets (RFC822.SIZE) */
    time_t date;       /* internal date */
    bool recent;       /* \Recent in this session */
    bool expunged;     /* gone from the folder, expunge held (see
                          MSTORE_SYNC_HOLD_EXPUNGES): not yet reported */
};

/* What mstore_view_sync() found, in the order to send it (RFC 3501 7.4.1,
 * 5.2): first "* n EXPUNGE" for each of expunged[] in turn (each number
 * counts the ones before it as gone, as the client will), then "* n
 * EXISTS" and "* n RECENT" if exists_changed, then "* n FETCH (FLAGS
 * ...)" for each of flags[] (numbers after the expunges). Arrays are
 * borrowed from the view until its next call. */
struct mstore_changes {
    const uint32_t *expunged;
    size_t nexpunged;
    bool exists_changed;
    uint32_t exists, recent;
    const uint32_t *flags; /* sequence numbers whose flags changed */
    size_t nflags;
    bool keywords_changed;    /* new keywords in the folder: send FLAGS and
                                 OK [PERMANENTFLAGS] again */
    bool uidvalidity_changed; /* the index was rebuilt, or the folder
                                 deleted: UIDs in this view mean nothing
                                 now; end the session (BYE) */
};

/* mstore_view_sync() options. */
enum {
    /* Keep expunges found in the view (their mstore_msg has expunged
     * set, numbers stay) and report only new messages and flags; a later
     * sync without it reports them. For when imap_server_expunge_ok() is
     * false. */
    MSTORE_SYNC_HOLD_EXPUNGES = 1 << 0,
};

/* COPY, MOVE and APPEND results for COPYUID / APPENDUID (RFC 4315). */
struct mstore_copied {
    uint32_t uidvalidity;                /* of the destination */
    const uint32_t *src_uids, *dst_uids; /* pairs, ascending source UID */
    size_t n;
};

/*
 * The store.
 */

/* Opens the account mailbox ("local@domain", maildir_name_ok()) under
 * data_dir/mail, making its Maildir when missing. lim may be NULL for the
 * defaults. Returns NULL with the reason in why for a bad name or an I/O
 * failure. Caller owns the store. */
mstore_t *mstore_open(const char *data_dir, const char *mailbox,
                      const struct mstore_limits *lim, char *why,
                      size_t whylen);

/* Frees the store; every view must be gone. NULL ok. */
void mstore_destroy(mstore_t **ms_p);

/* Frees the folders kept after their last view (see struct
 * mstore_limits): for tests and at exit; folders in use stay. */
void mstore_cache_drop(void);

/* Names the session in log lines (copied); NULL for "-". */
void mstore_set_trace(mstore_t *ms, const char *trace);

/* The RFC 5530 code of the last failure ("TRYCREATE", ...) or NULL. */
const char *mstore_err_code(const mstore_t *ms);

/* The last failure's text for the client; "" after success. */
const char *mstore_err_text(const mstore_t *ms);

/* Octets the last mutating call added to the account (positive: APPEND,
 * COPY) or removed (negative: EXPUNGE, MOVE out of it is 0, DELETE of a
 * folder), for quotas; 0 after any other call. */
int64_t mstore_bytes_delta(const mstore_t *ms);

/* Whether name is an IMAP folder name the store accepts; if not, why
 * (when not NULL) points at a static reason. */
bool mstore_name_ok(const mstore_t *ms, const char *name, const char **why);

/*
 * Folders (RFC 3501 6.3). "INBOX" is matched case-insensitively.
 */

/* Called for each LIST or LSUB answer: the name and its attributes
 * ("\HasNoChildren", "\Noselect \HasChildren", ...), both borrowed. */
typedef void mstore_list_fn(void *arg, const char *name, const char *attrs);

/* LIST (6.3.8) or, with lsub, LSUB (6.3.9): calls fn for each folder
 * matching ref and pattern ("*" anything, "%" anything but "/"), INBOX
 * first then in name order. Parents that are no folder are given with
 * \Noselect; LSUB gives subscribed names, and with "%" the unsubscribed
 * parents of subscribed names, as \Noselect. An empty pattern gives the
 * root "" with \Noselect. Fails only for an over-long ref or pattern. */
int mstore_list(mstore_t *ms, const char *ref, const char *pattern, bool lsub,
                mstore_list_fn *fn, void *arg);

/* CREATE (6.3.3): makes the folder and any missing parents; a trailing
 * "/" is dropped. Fails with ALREADYEXISTS, LIMIT or a bad name. */
int mstore_create(mstore_t *ms, const char *name);

/* DELETE (6.3.4): removes the folder and its messages. A folder with
 * children loses only its messages and directory, and lists as
 * \Noselect; a \Noselect name with children is refused, as is INBOX.
 * Fails with NONEXISTENT. */
int mstore_delete(mstore_t *ms, const char *name);

/* RENAME (6.3.5): renames the folder and its children; from INBOX, moves
 * INBOX's messages into a new folder and leaves INBOX empty. Fails with
 * NONEXISTENT, ALREADYEXISTS, or a bad name. */
int mstore_rename(mstore_t *ms, const char *from, const char *to);

/* SUBSCRIBE / UNSUBSCRIBE (6.3.6, 6.3.7). Subscribing to a name that is
 * no folder is allowed (RFC 3501 says a server may); unsubscribing from a
 * name not subscribed fails with NONEXISTENT. */
int mstore_subscribe(mstore_t *ms, const char *name, bool on);

/* STATUS (6.3.10): fills every field of v for the folder; cheap when the
 * index is current (no file is opened but the index). Messages not yet
 * seen by any session count as recent. Fails with NONEXISTENT. */
int mstore_status(mstore_t *ms, const char *name, struct imap_status_values *v);

/* APPEND (6.3.11): stores len octets (limit: append_max, TOOBIG) as a
 * message in folder with the flags (flag atoms as the parser gives them,
 * "\Seen", "$Junk"; \Recent is ignored) and the internal date (0: now).
 * The file is written to tmp/, fsync'd, renamed into cur/ and indexed.
 * Fills out's uidvalidity and one pair (src_uids is NULL) for APPENDUID.
 * Fails with TRYCREATE when the folder does not exist. */
int mstore_append(mstore_t *ms, const char *folder, const void *data,
                  size_t len, const char *const *flags, size_t nflags,
                  time_t date, struct mstore_copied *out);

/*
 * Views: a session's SELECT or EXAMINE.
 */

/* SELECT (read_only false) or EXAMINE (6.3.1, 6.3.2): syncs the folder
 * and returns a view of it. A read-write view claims the messages new
 * since the last session (\Recent for it alone); a read-only one sees
 * them as recent but leaves them to the next. Returns NULL with the
 * store's error set (NONEXISTENT, also for a \Noselect name). */
mstore_view_t *mstore_select(mstore_t *ms, const char *name, bool read_only);

/* Frees the view (CLOSE expunges first with mstore_expunge()). NULL ok. */
void mstore_view_destroy(mstore_view_t **v_p);

/* The folder's IMAP name, borrowed. */
const char *mstore_view_name(const mstore_view_t *v);
bool mstore_view_read_only(const mstore_view_t *v);

/* SELECT's numbers (RFC 3501 6.3.1): EXISTS, RECENT, UIDVALIDITY,
 * UIDNEXT, and the first unseen message's number (0: none). */
uint32_t mstore_view_exists(const mstore_view_t *v);
uint32_t mstore_view_recent(const mstore_view_t *v);
uint32_t mstore_view_uidvalidity(const mstore_view_t *v);
uint32_t mstore_view_uidnext(const mstore_view_t *v);
uint32_t mstore_view_first_unseen(const mstore_view_t *v);

/* "* FLAGS" and "OK [PERMANENTFLAGS]" lists: the system flags and the
 * folder's keywords, and for the latter "\*" while keywords can be added
 * (none for a read-only view). Borrowed. */
const char *mstore_view_flag_list(mstore_view_t *v);
const char *mstore_view_permanent_flags(mstore_view_t *v);

/* Keyword i of the folder (bit i of mstore_msg.keywords), or NULL. */
const char *mstore_view_keyword(const mstore_view_t *v, unsigned i);

/* Message seq (1..exists), or NULL when out of range. Borrowed. */
const struct mstore_msg *mstore_view_msg(const mstore_view_t *v, uint32_t seq);

/* The sequence number of uid, or 0; a binary search. */
uint32_t mstore_view_seq(const mstore_view_t *v, uint32_t uid);

/* A message's flags as FETCH FLAGS gives them ("\Seen \Recent $Junk"),
 * borrowed until the next call on the view. */
const char *mstore_view_flags_str(mstore_view_t *v, uint32_t seq);

/* The folder's Maildir directory, for inotify (watch its new/ and cur/
 * and the index); borrowed. */
const char *mstore_view_path(const mstore_view_t *v);

/* Brings the view up to date with the folder and says what changed (see
 * struct mstore_changes). Cheap when nothing changed: a stat of the
 * index and of new/ and cur/. Call it on NOOP, CHECK, IDLE wake-ups, and
 * before commands. Fails only on I/O errors. */
int mstore_view_sync(mstore_view_t *v, unsigned opts,
                     struct mstore_changes *ch);

/* Resolves a sequence set (uid false) or UID set (uid true) against the
 * view: ascending distinct sequence numbers, borrowed until the next
 * call. "*" is the last message (its UID). A sequence number beyond
 * EXISTS fails (ERR_INVAL: the caller answers BAD, RFC 3501 9); UIDs not
 * in the view are skipped. An empty view resolves any UID set to none. */
int mstore_view_resolve(mstore_view_t *v, const struct imap_seqset *set,
                        bool uid, const uint32_t **seqs, size_t *n);

/* STORE (6.4.6) of flags (as for APPEND) on the set: changes the file
 * names and the index, and returns in seqs the messages of the set still
 * in the folder, whose new flags mstore_view_msg() gives (answer each
 * with FETCH FLAGS unless .SILENT). Keywords past MSTORE_KEYWORDS_MAX
 * fail with LIMIT. Read-only views fail. */
int mstore_store(mstore_view_t *v, const struct imap_seqset *set, bool uid,
                 enum imap_store_op op, const char *const *flags, size_t nflags,
                 const uint32_t **seqs, size_t *n);

/* Marks \Seen on the messages (sequence numbers), as a FETCH of a body
 * does (6.4.5); a no-op on a read-only view. Returns the numbers whose
 * flags changed in seqs (send FETCH FLAGS for them). */
int mstore_view_set_seen(mstore_view_t *v, const uint32_t *seqs, size_t n,
                         const uint32_t **changed, size_t *nchanged);

/* COPY (6.4.7) of the set to folder dest (hard links, else copies),
 * keeping flags and internal dates; fills out for COPYUID. Fails with
 * TRYCREATE when dest does not exist. */
int mstore_copy(mstore_view_t *v, const struct imap_seqset *set, bool uid,
                const char *dest, struct mstore_copied *out);

/* MOVE (RFC 6851): COPY, then expunge the copied messages from this
 * folder; fills out and the expunged sequence numbers to send after "*
 * OK [COPYUID ...]", in order, as struct mstore_changes counts them. */
int mstore_move(mstore_view_t *v, const struct imap_seqset *set, bool uid,
                const char *dest, struct mstore_copied *out,
                const uint32_t **expunged, size_t *nexpunged);

/* EXPUNGE (6.4.3), or UID EXPUNGE (RFC 4315 2.1) when uids is not NULL
 * (only those of the set): removes the \Deleted messages, and any
 * expunges held in the view, and returns the numbers to send, in order,
 * as struct mstore_changes counts them. Read-only views fail. */
int mstore_expunge(mstore_view_t *v, const struct imap_seqset *uids,
                   const uint32_t **expunged, size_t *nexpunged);

/* A message's octets for FETCH: a read-only mapping of the file (len 0
 * and data "" for an empty one). Fails with NOTFOUND (EXPUNGEISSUED)
 * when the message was expunged. Release with mstore_unmap(). */
struct mstore_map {
    const char *data;
    size_t len;
    void *priv_; /* for mstore_unmap() */
};
int mstore_map(mstore_view_t *v, uint32_t seq, struct mstore_map *m);
void mstore_unmap(struct mstore_map *m);

/* The message's file opened read-only (caller closes), for callers that
 * would rather read than map. Fails as mstore_map(). */
int mstore_open_msg(mstore_view_t *v, uint32_t seq, int *fd);

#endif
