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

/* samotop:{D}:user:L - hash: pw, disabled, created. */
static inline char *
store_key_user(char out[STORE_KEY_MAX], const char *domain, const char *local)
{
    return store_key_fmt_ok(out, snprintf(out, STORE_KEY_MAX,
                                          "samotop:{%s}:user:%s", domain,
                                          local));
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

#endif
