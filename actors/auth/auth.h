/*
 * auth.h - samotop-auth's parts: reading SASL responses, the pool of
 * threads that runs scrypt, and the handler that joins them to Redis.
 *
 * auth_sasl.c is pure: it decodes and checks what a client sent (RFC 4616
 * PLAIN, LOGIN) and turns a login name into the account it names, so a
 * test can drive it from tables. auth_pool.c runs password verifications
 * (lib/passwd.h, tens of milliseconds and 32 MiB each) on worker threads
 * and hands the results back on the loop thread. auth_cache.c remembers
 * logins that scrypt verified, so that the next one with the same
 * password against the same stored hash does not need it. auth_handlers.c
 * answers auth.verify from Redis without blocking the loop. Everything but
 * the pool's threads runs on the actor's loop thread.
 */
#ifndef SAMOTOP_AUTH_H
#define SAMOTOP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actor.h"
#include "lib/loop.h"
#include "lib/smtp_addr.h"

/* RFC 4616 2: authzid and authcid of up to 255 octets must be accepted;
 * longer ones are refused. */
#define AUTH_NAME_MAX 255
/* The longest password taken: what samotop-admin stores at most
 * (ADMIN_PASSWORD_MAX). */
#define AUTH_PASSWORD_MAX 1024
/* The longest PLAIN response, base64: the encoding of the longest message
 * (two names, two NULs, a password). */
#define AUTH_RESPONSE_MAX                                                      \
    (((AUTH_NAME_MAX * 2 + 2 + AUTH_PASSWORD_MAX) + 2) / 3 * 4)
/* Room for an account name, local@domain. */
#define AUTH_ACCOUNT_MAX (SMTP_LOCAL_MAX + 1 + SMTP_DOMAIN_MAX)

/* What a client's credentials say, decoded. The password may hold any
 * octet but NUL; wipe it with auth_creds_wipe() after use. */
struct auth_creds {
    char authzid[AUTH_NAME_MAX + 1]; /* "" when none was given */
    char authcid[AUTH_NAME_MAX + 1];
    char password[AUTH_PASSWORD_MAX + 1];
    size_t password_len;
};

/* An account as schemas/redis.md keys it: local part and domain in lower
 * case, and name = local@domain. */
struct auth_account {
    char local[SMTP_LOCAL_MAX + 1];
    char domain[SMTP_DOMAIN_MAX + 1];
    char name[AUTH_ACCOUNT_MAX + 1];
};

/* Reads a PLAIN response (RFC 4616: base64 of authzid NUL authcid NUL
 * passwd, as the client sent it; "" for an empty one) into *out. Returns
 * 0, ERR_TOO_BIG when the response or a field is over the limits above,
 * or ERR_MALFORMED (not base64, not three fields, an empty authcid). An
 * empty password is read as such (no account has one). *out is wiped on
 * failure. */
int auth_plain_parse(const char *b64, size_t len, struct auth_creds *out);

/* Takes LOGIN's user name and password, already decoded (len bytes each,
 * no NUL allowed), into *out. Returns 0, ERR_TOO_BIG or ERR_MALFORMED
 * (an empty user name, or a NUL in either); *out is wiped on failure. */
int auth_login_take(const char *user, size_t ulen, const char *pass,
                    size_t plen, struct auth_creds *out);

/* Wipes the password (and the rest) of *c. */
void auth_creds_wipe(struct auth_creds *c);

/* The account a login name names: a bare RFC 5321 mailbox with a
 * dot-atom local part and a domain name (no address literal), put in lower
 * case. Returns 0 or ERR_INVAL for anything that cannot be an account. */
int auth_account_parse(const char *name, struct auth_account *out);

typedef struct auth_pool auth_pool_t;

/* A verification's outcome, on the loop thread: 0 the password matches,
 * 1 it does not (always 1 for a dummy run), ERR_CLOSED when the pool was
 * destroyed first. bad_hash says that the stored hash could not be read
 * (a dummy verification ran in its place, and the outcome is 1). rehashed
 * is a new hash of the password with the default parameters when one was
 * asked for and the password matched, else NULL; borrowed for the call. */
typedef void auth_pool_fn(void *arg, int result, bool bad_hash,
                          const char *rehashed);

/* A pool of threads running verifications, reporting on loop; at most
 * queue_max verifications wait for a thread. Makes the hash that dummy
 * runs check against. NULL with the reason in why. Caller owns it. */
auth_pool_t *auth_pool_new(loop_t *loop, int threads, int queue_max, char *why,
                           size_t whylen);

/* Stops the threads (each ends the verification it is running), then
 * calls back every job not yet reported: finished ones with their
 * outcome, waiting ones with ERR_CLOSED. Frees and NULLs *pool_p. */
void auth_pool_destroy(auth_pool_t **pool_p);

/* Queues the check of password (len bytes, copied) against stored (a
 * lib/passwd.h hash, copied), or, when stored is NULL, a dummy check that
 * takes as long and never matches. With rehash, a match also hashes the
 * password anew (passwd_hash(), on the same thread). fn is called once,
 * later, on the loop thread. Returns 0, or ERR_TOO_BIG when queue_max
 * verifications already wait (fn is then never called). The copies are
 * wiped after use. */
int auth_pool_submit(auth_pool_t *pool, const char *password, size_t len,
                     const char *stored, bool rehash, auth_pool_fn *fn,
                     void *arg);

/* Verifications waiting for a thread now. */
int auth_pool_waiting(const auth_pool_t *pool);

typedef struct auth_cache auth_cache_t;

/* What a cache entry holds: the SHA-256 of a stored hash string and the
 * HMAC-SHA256 of a password under the cache's key. Wipe it after use. */
struct auth_cache_proof {
    unsigned char stored[32];
    unsigned char mac[32];
};

/* A cache of at most size verified logins, each good for ttl_s seconds
 * from its verification, with a new random key. NULL with the reason in
 * why when OpenSSL has no randomness or no HMAC. Caller owns it. */
auth_cache_t *auth_cache_new(long size, long ttl_s, char *why, size_t whylen);

/* Wipes and frees every entry and the key; frees and NULLs *cache_p. */
void auth_cache_destroy(auth_cache_t **cache_p);

/* Makes the proof of password (len bytes) checked against stored into
 * *out. Returns 0, or ERR_SYS when OpenSSL fails (*out is wiped). */
int auth_cache_proof_make(const auth_cache_t *c, const char *stored,
                          const char *password, size_t len,
                          struct auth_cache_proof *out);

/* Points a proof at another stored hash string of the same password (one
 * written by a rehash). Returns 0 or ERR_SYS. */
int auth_cache_proof_rebind(struct auth_cache_proof *p, const char *stored);

void auth_cache_proof_wipe(struct auth_cache_proof *p);

/* Whether account has an entry equal to *p that has not expired at now_ms
 * (monotonic). An expired entry is dropped; a mismatch leaves the entry. */
bool auth_cache_match(auth_cache_t *c, const char *account,
                      const struct auth_cache_proof *p, int64_t now_ms);

/* Remembers *p (copied) for account in place of what it had, dropping the
 * least recently used entry when the cache is full. Only for a proof that
 * scrypt verified. */
void auth_cache_put(auth_cache_t *c, const char *account,
                    const struct auth_cache_proof *p, int64_t now_ms);

/* Entries held now. */
size_t auth_cache_count(const auth_cache_t *c);

/* The handler and hooks (auth_handlers.c). */
int auth_init(actor_t *a);
void auth_fini(actor_t *a);
/* /ready (bus/actor.h): 0 while the Redis connection is up, else -1
 * with the reason in why. */
int auth_ready(actor_t *a, char *why, size_t whylen);
void auth_on_verify(actor_t *a, bus_request_t **req_p);

/* auth_metrics.c: registers auth's metrics in m (from init), and counts
 * one answer: its code, its reason and the cache's part (hit, miss, off). */
void auth_metrics_init(metrics_t *m);
void auth_metrics_verify(int code, const char *reason, const char *cache_use);

#endif
