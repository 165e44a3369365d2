/*
 * maildir.h - the Maildir store under $SAMOTOP_DATA/mail (DESIGN.md, The
 * mailbox store).
 *
 * A mailbox "alice@example.test" lives in mail/example.test/alice/, a
 * Maildir (tmp/, new/, cur/) that mutt or Dovecot can open; a Maildir++
 * folder ".Spam" is mail/example.test/alice/.Spam/. Directories are made
 * on first delivery, mode 0700.
 *
 * A delivery writes the message once into a tmp/ file, fsync's it, then
 * hard-links it into the new/ of every mailbox and fsync's each new/
 * directory: only then is that copy durable and reported as 250. When a
 * link cannot be made (another file system, no hard links), that mailbox
 * gets its own copy, written the same way. Nothing is ever left in new/
 * that is not a whole, fsync'd message, and nothing is left in tmp/.
 *
 * Several messages can be stored as one batch (maildir_deliver_batch()):
 * every file is written, then every file fsync'd, then linked, then each
 * new/ directory fsync'd once for the whole batch, so that one journal
 * commit covers many messages. The rules above hold for each of them.
 *
 * Mailbox and folder names are checked before any path is built from
 * them, and every path is walked with openat(O_NOFOLLOW) from the mail
 * root, so no name can reach outside it. The tmp/ and new/ directories of
 * recently used mailboxes stay open (a small LRU cache), so that a
 * delivery does not walk the path again; a cached directory found removed
 * is opened afresh.
 *
 * The store is used from one thread (the mailbox actor's loop) and the
 * calls block on the disk.
 */
#ifndef SAMOTOP_MAILDIR_H
#define SAMOTOP_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

typedef struct maildir maildir_t;

/* Longest mailbox name (local@domain) and parts accepted. */
#define MAILDIR_LOCAL_MAX 64
#define MAILDIR_DOMAIN_MAX 253
#define MAILDIR_LABEL_MAX 63
#define MAILDIR_NAME_MAX (MAILDIR_LOCAL_MAX + 1 + MAILDIR_DOMAIN_MAX)
/* Longest Maildir++ folder name, leading dot included. */
#define MAILDIR_FOLDER_MAX 255
/* Room for a unique file name with its NUL. */
#define MAILDIR_FILE_MAX 192

/* One mailbox a delivery goes to, with its outcome. */
struct maildir_rcpt {
    /* In: the mailbox, with its length (a NUL inside is refused). */
    const char *mailbox;
    size_t mailbox_len;
    /* In: the Maildir++ folder (".Spam"), or NULL for INBOX. */
    const char *folder;
    size_t folder_len;
    /* In: true when the caller already refused this copy (e.g. over the
     * account's quota) and set code, ecode and text: it is not stored and
     * keeps that outcome. */
    bool refused;

    /* Out: the SMTP reply for this copy: 250 2.0.0, 452 4.2.2 (no space,
     * quota), 451 4.3.0 (other I/O errors) or 550 5.1.1 (bad name). */
    int code;
    const char *ecode; /* static */
    const char *text;  /* static */
    /* Out: the file name in new/ on success, else "". */
    char file[MAILDIR_FILE_MAX];
    /* Out, for the log: the errno and the step that failed ("link",
     * "mkdir new", ...), 0 and NULL on success or for a bad name. */
    int sys_errno;
    const char *failed_op; /* static */
    /* Out: whether this copy is a hard link of another's file. */
    bool linked;
};

/* One message of a batch, with its recipients and their outcomes. */
struct maildir_msg {
    const struct iovec *parts; /* written one after the other */
    int nparts;
    struct maildir_rcpt *rcpts;
    size_t n;
    size_t stored; /* out: recipients whose copy is stored (code 250) */
};

/* Mailboxes whose directories stay open, at most (two fds each). */
#define MAILDIR_CACHE_MAX 256

/* Opens (creating it, mode 0700, when missing) data_dir/mail as the mail
 * root. host names this machine in file names (NULL or "": the system's
 * host name). Returns NULL when the root cannot be had, with the reason
 * in why. Caller owns the store. */
maildir_t *maildir_new(const char *data_dir, const char *host, char *why,
                       size_t whylen);

/* Closes every cached directory and frees the store; NULL ok. */
void maildir_destroy(maildir_t **md_p);

/* Sets how many mailboxes' directories stay open (at least 1); the
 * default is MAILDIR_CACHE_MAX, less when RLIMIT_NOFILE is low. This is
 * also the most mailboxes one group commit holds open: a message with
 * more recipients than that is stored the slower way, one mailbox after
 * the other. */
void maildir_set_cache_max(maildir_t *md, size_t max);

/* Mailboxes whose directories are open now. */
size_t maildir_cache_size(const maildir_t *md);

/* Takes every open folder of mailbox (INBOX included) off the cache, so
 * that the next delivery opens its directories again by name: IMAP RENAME
 * and DELETE move them, and an open descriptor would follow the move (mail
 * for ".Spam" landing in the folder renamed from it). One in use by a
 * delivery under way is closed when that lets it go. */
void maildir_forget(maildir_t *md, const char *mailbox);

/* Whether name (len bytes) is a mailbox name the store accepts: lower-case
 * ASCII local@domain, one "@", a local part of dot-atom characters with no
 * leading, trailing or double dot, a domain of LDH labels, within the
 * MAILDIR_*_MAX lengths, and no "/" or NUL anywhere. */
bool maildir_name_ok(const char *name, size_t len);

/* Whether folder (len bytes) is a Maildir++ folder name the store accepts:
 * a leading ".", printable ASCII, no "/", no "\\", no empty hierarchy part
 * (".." or a trailing "."), at most MAILDIR_FOLDER_MAX bytes. */
bool maildir_folder_ok(const char *folder, size_t len);

/* Writes a new unique Maildir file name for a message of size bytes into
 * out: "<secs>.M<usecs>P<pid>Q<counter>.<host>,S=<size>". */
void maildir_unique_name(maildir_t *md, size_t size,
                         char out[MAILDIR_FILE_MAX]);

/* Stores the message made of the nparts parts (written one after the
 * other: e.g. a Return-Path line, then the message as received) in each of
 * the n mailboxes of rcpts and fills in each one's outcome (see struct
 * maildir_rcpt); one mailbox failing never stops the others. Recipients
 * naming the same mailbox and folder share its one copy. A folder that is
 * NULL, "" or "INBOX" means the mailbox itself. Returns the number of
 * recipients whose copy is stored (code 250). */
size_t maildir_deliver(maildir_t *md, const struct iovec *parts, int nparts,
                       struct maildir_rcpt *rcpts, size_t n);

/* Stores each of the nmsgs messages as maildir_deliver() would, as one
 * group commit: no copy is reported stored before its file and its new/
 * entry are fsync'd, one message or mailbox failing never fails another,
 * and nothing is left in tmp/. Fills in each message's stored count and
 * returns the sum. */
size_t maildir_deliver_batch(maildir_t *md, struct maildir_msg *msgs,
                             size_t nmsgs);

#endif
