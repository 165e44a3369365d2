/*
 * store_keys.h - the names of Samotop's Redis keys (schemas/redis.md).
 *
 * Each function writes one key into out (STORE_KEY_MAX bytes) and returns
 * out, or NULL when a part is too long. Domain-scoped keys carry the domain
 * as a hash tag so that a domain's keys share one Redis Cluster slot.
 * Callers pass domains and local parts already lower-cased.
 */
#ifndef SAMOTOP_STORE_KEYS_H
#define SAMOTOP_STORE_KEYS_H

#include <stdio.h>

#define STORE_KEY_MAX 600

static inline char *
store_key_fmt_ok(char *out, int n)
{
    return n > 0 && n < STORE_KEY_MAX ? out : NULL;
}

/* samotop:domains - set of our domains. */
static inline char *
store_key_domains(char out[STORE_KEY_MAX])
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:domains"));
}

/* samotop:{D}:domain - hash: created, catchall, disabled. */
static inline char *
store_key_domain(char out[STORE_KEY_MAX], const char *domain)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{%s}:domain", domain));
}

/* samotop:{D}:users - set of D's account local parts. */
static inline char *
store_key_users(char out[STORE_KEY_MAX], const char *domain)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{%s}:users", domain));
}

/* samotop:{D}:user:L - hash: pw, disabled, created, quota. */
static inline char *
store_key_user(char out[STORE_KEY_MAX], const char *domain, const char *local)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{%s}:user:%s", domain,
                                          local));
}

/* samotop:{D}:usage - hash: account local part -> bytes its mail takes
 * (the quota is the field "quota" of the account's own hash). */
static inline char *
store_key_usage(char out[STORE_KEY_MAX], const char *domain)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{%s}:usage", domain));
}

/* samotop:{D}:aliases - set of D's alias local parts. */
static inline char *
store_key_aliases(char out[STORE_KEY_MAX], const char *domain)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{%s}:aliases", domain));
}

/* samotop:{D}:alias:L - set of target addresses. */
static inline char *
store_key_alias(char out[STORE_KEY_MAX], const char *domain,
                const char *local)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{%s}:alias:%s", domain,
                                          local));
}

/* samotop:{rate}:KIND:IP:WINDOW - a counter that expires. */
static inline char *
store_key_rate(char out[STORE_KEY_MAX], const char *kind, const char *ip,
               long long window)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{rate}:%s:%s:%lld", kind,
                                          ip, window));
}

/* The queue's keys (samotop-queue, samotop-admin queue) share the hash tag
 * {q}, so that one MULTI/EXEC or script may touch several of them, also
 * under Redis Cluster. ID is a queue id ("<unix s>-<16 hex>"). */

/* samotop:{q}:due - sorted set: queue ids scored by the time (unix ms) they
 * are next due; every message in the queue is in it. */
static inline char *
store_key_queue_due(char out[STORE_KEY_MAX])
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{q}:due"));
}

/* samotop:{q}:msg:ID - hash: the envelope of message ID. */
static inline char *
store_key_queue_msg(char out[STORE_KEY_MAX], const char *id)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{q}:msg:%s", id));
}

/* samotop:{q}:body:ID - string: the message itself. */
static inline char *
store_key_queue_body(char out[STORE_KEY_MAX], const char *id)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{q}:body:%s", id));
}

/* samotop:{q}:rcpts:ID - hash: "N.field" per recipient N of message ID. */
static inline char *
store_key_queue_rcpts(char out[STORE_KEY_MAX], const char *id)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{q}:rcpts:%s", id));
}

/* samotop:{q}:lease:ID - string with a PX expiry: the queue process working
 * on message ID. With id "" it is the prefix scripts append ids to. */
static inline char *
store_key_queue_lease(char out[STORE_KEY_MAX], const char *id)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{q}:lease:%s", id));
}

/* samotop:routes - hash: destination domain (lower case, or "*" for the
 * smarthost) -> "HOST:PORT;tls=required|opportunistic". */
static inline char *
store_key_routes(char out[STORE_KEY_MAX])
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:routes"));
}

#endif
