/*
 * mailbox.h - the mailbox actor's state and handlers (samotop-mailbox).
 *
 * mailbox_main.c lists the handlers; mailbox.c makes and frees the state
 * the skeleton keeps for the actor (actor_data()); each handler lives in
 * its own mailbox_<verb>.c. Everything runs on the actor's loop thread.
 */
#ifndef SAMOTOP_MAILBOX_H
#define SAMOTOP_MAILBOX_H

#include <stdint.h>

#include "actor.h"

#include "mailbox_imap.h"
#include "mailbox_lmtp.h"
#include "mailbox_quota.h"
#include "maildir.h"

/* Keys inside mailbox.deliver's rcpts items and its reply's results.
 * XXX: gen_env_types.py makes ENV_KEY_* only for top-level properties;
 * these belong there once it walks array items too. */
#define MAILBOX_KEY_MAILBOX "mailbox"
#define MAILBOX_KEY_FOLDER "folder"
#define MAILBOX_KEY_FILE "file"

/* Most recipients one mailbox.deliver may name; RFC 5321 asks for 100. */
#define MAILBOX_MAX_RCPTS 1000
/* Longest mail_from accepted for the Return-Path line (RFC 5321 allows a
 * 256-byte path; this leaves room for what other MTAs let through). */
#define MAILBOX_MAX_MAIL_FROM 512

/* A group commit takes at most this many requests, or messages of this
 * many bytes (the bus hands an actor bus.worker_capacity requests at a
 * time, 64 by default). */
#define MAILBOX_BATCH_MAX 64
#define MAILBOX_BATCH_BYTES (64u << 20)

struct parked; /* a mailbox.deliver waiting for its group commit */

struct mailbox {
    actor_t *actor;
    maildir_t *store;
    /* mailbox.deliver requests parked until the loop has read every
     * request waiting; the timer (0 ms) runs the group commit. */
    struct parked *parked[MAILBOX_BATCH_MAX];
    int nparked;
    size_t parked_bytes;
    loop_timer_t *commit_timer;
    /* Each account's quota and usage (mailbox_quota.h); IMAP charges and
     * credits through it too. */
    mailbox_quota_t *quota;
    /* The accounts this process owns: those lib/shard.h places on shard
     * of nshards (nshards 1: every account). */
    int shard, nshards;
    mbimap_t *imap; /* the IMAP doors and sessions (mailbox_imap.h) */
    mblmtp_t *lmtp; /* the LMTP door and sessions (mailbox_lmtp.h) */
    uint64_t delivered, deferred, refused, bad_requests;
    uint64_t commits, committed; /* group commits, requests in them */
};

/* Opens the Maildir store under the "data" folder; an error stops
 * start-up (the reason is logged). */
int mailbox_init(actor_t *a);
/* Stores and answers what is parked, then closes the store. */
void mailbox_fini(actor_t *a);

/* mailbox.deliver: stores one message for several mailboxes and answers
 * with a status per recipient; the request is parked and stored with the
 * others that arrived with it, in one group commit (mailbox_deliver.c). */
void mailbox_on_deliver(actor_t *a, bus_request_t **req_p);

/* Runs the group commit of what is parked now and answers each request;
 * nothing parked is a no-op. */
void mailbox_deliver_flush(struct mailbox *mb);

/* Told, on the loop, that a parked message's group commit is done: r[i]
 * holds each recipient's outcome (the r given to mailbox_deliver_park()). */
typedef void mailbox_stored_fn(struct mailbox *mb, void *arg,
                               const struct maildir_rcpt *r, size_t n);

/* Parks a message for the next group commit, the one path every delivery
 * takes (mailbox.deliver, LMTP): *head_p (taken) then msg go into the
 * mailboxes of r[0..n), whose outcomes are filled in; done(mb, arg, r, n)
 * is called once they are on disk or failed. msg, r, trace and id (which
 * name the message in the log) are borrowed until then. Returns a handle
 * for mailbox_deliver_cancel(), valid until done is called. */
struct parked *mailbox_deliver_park(struct mailbox *mb, const char *trace,
                                    const char *id, char **head_p,
                                    const char *msg, size_t len,
                                    struct maildir_rcpt *r, size_t n,
                                    mailbox_stored_fn *done, void *arg);

/* The owner of a parked message goes away: the message is stored now (its
 * borrowed data is still there) and done is never called; NULLs *p_p.
 * NULL is fine. */
void mailbox_deliver_cancel(struct mailbox *mb, struct parked **p_p);

#endif
