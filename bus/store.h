/*
 * store.h - Redis for every Samotop program; the only place hiredis is used.
 *
 * Two ways in. store_t is synchronous, for tools (samotop-admin) and
 * start-up checks: each command waits for its reply, bounded by a timeout.
 * store_async_t runs on a lib/loop.h loop, for actors: a command's callback
 * gets the reply or an error; it never blocks the loop, reconnects after a
 * lost connection with backoff, and gives every command a deadline (a
 * command that times out fails, and the connection is dropped and made
 * again, since a Redis that stalls is not to be trusted with the next one).
 *
 * Replies are opaque and read through store_reply_*(). A reply passed to a
 * callback is borrowed for the call (hiredis frees it afterwards); one from
 * store_cmd() belongs to the caller until store_reply_free().
 * Key names are built by store_keys.h, never spelled elsewhere.
 */
#ifndef SAMOTOP_STORE_H
#define SAMOTOP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/config.h"
#include "lib/loop.h"

typedef struct store store_t;
typedef struct store_async store_async_t;
typedef struct store_reply store_reply_t;

enum store_type {
    STORE_NIL,
    STORE_INT,
    STORE_STR,    /* bulk and status strings */
    STORE_ARRAY,
    STORE_ERROR,  /* an error reply from Redis (store_reply_str has it) */
};

/* Connects to the Redis the configuration names (redis.host, redis.port,
 * redis.password). NULL with the reason in why. Caller owns it. */
store_t *store_connect(const config_t *cfg, int timeout_ms, char *why,
                       size_t whylen);
void store_destroy(store_t **store_p);

/* Runs one command given as argc strings (lens may be NULL for C strings).
 * Returns 0 with *reply_out set (caller frees), or ERR_REDIS with the
 * reason in why (connection lost, timeout). A Redis error reply is not a
 * failure here: it comes back as a STORE_ERROR reply. */
int store_cmd(store_t *store, store_reply_t **reply_out, char *why,
              size_t whylen, int argc, const char *const *argv,
              const size_t *lens);

/* The same with the arguments listed, ending with NULL. */
int store_cmdl(store_t *store, store_reply_t **reply_out, char *why,
               size_t whylen, ...) __attribute__((sentinel));

void store_reply_free(store_reply_t **reply_p);

enum store_type store_reply_type(const store_reply_t *r);
long long store_reply_int(const store_reply_t *r);
/* Bytes of a string or error reply (NUL-terminated too); NULL otherwise. */
const char *store_reply_str(const store_reply_t *r, size_t *len);
size_t store_reply_count(const store_reply_t *r);
const store_reply_t *store_reply_at(const store_reply_t *r, size_t i);

/* err is 0 with a reply, or ERR_REDIS / ERR_TIMEOUT / ERR_CLOSED with
 * reply NULL. */
typedef void store_cb(void *arg, int err, const store_reply_t *reply);

/* An asynchronous connection on loop; it connects in the background and
 * keeps reconnecting. Caller owns it. */
store_async_t *store_async_new(loop_t *loop, const config_t *cfg,
                               int timeout_ms);

/* Fails outstanding commands with ERR_CLOSED, then frees. Safe from inside
 * a command's callback: the store is then freed once hiredis is done. */
void store_async_destroy(store_async_t **store_p);

/* Whether the connection is up now. */
int store_async_ready(const store_async_t *store);

/* Sends one command; cb is called exactly once, later. Returns 0, or
 * ERR_REDIS when not connected (cb is then never called). */
int store_async_cmd(store_async_t *store, store_cb *cb, void *arg, int argc,
                    const char *const *argv, const size_t *lens);

#endif
