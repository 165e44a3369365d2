/*
 * mailbox_quota.h - each account's quota and the bytes it stores, in Redis.
 *
 * An account "local@domain" may have a quota: the field "quota" (bytes; 0
 * or absent: none) of samotop:{D}:user:L, set by `samotop-admin user
 * quota`. What it stores is the field L of the hash samotop:{D}:usage
 * (schemas/redis.md), a counter the mailbox moves with HINCRBY: up by each
 * copy a delivery, an IMAP APPEND or COPY stores, down by each message an
 * IMAP EXPUNGE or MOVE takes away. The counter is kept in its own hash, not
 * in the account's, so that bumping it can never make an account appear.
 *
 * Everything runs on the mailbox actor's loop and never blocks it: the
 * Redis calls are asynchronous (bus/store.h). charge and credit are fire
 * and forget (a failure is logged and the count drifts until `samotop-admin
 * user quota-recount`); a check answers through a callback. Account names
 * are borrowed for the call only, lower-case "local@domain" as the Maildir
 * store names mailboxes.
 *
 * Quota checks fail open: when Redis cannot be asked, mail is stored (the
 * caller is told, and may choose otherwise); a quota is a limit on users,
 * not a reason to lose mail.
 */
#ifndef SAMOTOP_MAILBOX_QUOTA_H
#define SAMOTOP_MAILBOX_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/config.h"
#include "lib/loop.h"

typedef struct mailbox_quota mailbox_quota_t;

/* The answer of a check. limit is 0 when the account has no quota. */
struct mailbox_quota_state {
    uint64_t used;  /* bytes stored now (0 when never counted) */
    uint64_t limit; /* the quota, 0 for none */
    bool fits;      /* whether the bytes asked about fit under the limit */
};

/* Called once per mailbox_quota_check() that returned 0: err is 0 with st
 * filled in, or ERR_REDIS / ERR_TIMEOUT / ERR_CLOSED (st then says fits,
 * used 0, limit 0). st is borrowed for the call. */
typedef void mailbox_quota_cb(void *arg, int err,
                              const struct mailbox_quota_state *st);

/* Connects to the Redis the configuration names, on loop, in the
 * background (redis.host, redis.port). Caller owns the result. */
mailbox_quota_t *mailbox_quota_new(loop_t *loop, const config_t *cfg);

/* Fails the checks still waiting (their callbacks get ERR_CLOSED), then
 * frees; NULL ok. */
void mailbox_quota_destroy(mailbox_quota_t **q_p);

/* Adds bytes to account's usage after the copies are stored (IMAP APPEND,
 * COPY; the mailbox's deliveries do it themselves). trace is for the log. */
void mailbox_quota_charge(mailbox_quota_t *q, const char *trace,
                          const char *account, uint64_t bytes);

/* Takes bytes off account's usage after messages are gone for good (IMAP
 * EXPUNGE, MOVE out of the account). A count never goes below 0. */
void mailbox_quota_credit(mailbox_quota_t *q, const char *trace,
                          const char *account, uint64_t bytes);

/* Asks whether bytes more fit into account's quota (bytes 0: just read
 * usage and limit, e.g. for GETQUOTAROOT). Returns 0 and calls cb once,
 * later; or ERR_REDIS when Redis is not connected, ERR_INVAL for a bad
 * account name, and cb is then never called. An IMAP APPEND that does not
 * fit is answered NO [OVERQUOTA] (RFC 9208 section 4.3). */
int mailbox_quota_check(mailbox_quota_t *q, const char *account, uint64_t bytes,
                        mailbox_quota_cb *cb, void *arg);

/* Called once per mailbox_quota_lookup() that returned 0, with the n
 * accounts' states in the order asked (fits is true in each: the caller
 * weighs its own sizes). err as for mailbox_quota_cb. */
typedef void mailbox_quota_lookup_cb(void *arg, int err,
                                     const struct mailbox_quota_state *st,
                                     size_t n);

/* Reads usage and limit of n accounts (at most 4096) in one pipelined
 * round, for a group commit of deliveries. Returns and calls back as
 * mailbox_quota_check() does. */
int mailbox_quota_lookup(mailbox_quota_t *q, const char *const *accounts,
                         size_t n, mailbox_quota_lookup_cb *cb, void *arg);

/* Holds bytes for account in this process: copies let in by a lookup and
 * not counted in Redis yet, so that a lookup answered meanwhile weighs
 * them too (mailbox_quota_held()). A hold ends with
 * mailbox_quota_charge_held() once the copy is stored, or with
 * mailbox_quota_release() when it is not. Lookups and charges go over one
 * connection, in order: a lookup answered after a charge's reply sees
 * the charge, so the hold lasts until that reply. */
void mailbox_quota_hold(mailbox_quota_t *q, const char *account,
                        uint64_t bytes);
void mailbox_quota_release(mailbox_quota_t *q, const char *account,
                           uint64_t bytes);
void mailbox_quota_charge_held(mailbox_quota_t *q, const char *trace,
                               const char *account, uint64_t bytes);

/* The bytes held for account now (0 when none). */
uint64_t mailbox_quota_held(const mailbox_quota_t *q, const char *account);

/* Forgets the checks waiting with this arg: their callbacks are never
 * called. For a session that goes away while it waits. */
void mailbox_quota_cancel(mailbox_quota_t *q, void *arg);

/* Whether used + bytes fits under limit (limit 0: no quota, always). */
static inline bool
mailbox_quota_fits(uint64_t used, uint64_t bytes, uint64_t limit)
{
    return limit == 0 || (used <= limit && bytes <= limit - used);
}

#endif
