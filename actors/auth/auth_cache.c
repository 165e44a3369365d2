/*
 * auth_cache.c - logins verified lately, so that the same password checked
 * against the same stored hash does not pay for scrypt again.
 *
 * An entry is made only after scrypt said yes. It holds, for one account,
 * the SHA-256 of the stored hash string that was checked and an
 * HMAC-SHA256 of the password under a key of 32 random bytes made when the
 * cache is, which lives nowhere but in this process's memory. Neither the
 * password nor the stored hash is kept, and the MAC is worthless without
 * the key: an attacker who reads it must guess the password and still has
 * the key to find. The caller reads the stored hash from Redis on every
 * request, so a new password (a new stored string) misses at once, and
 * the account's and domain's disabled flags are the caller's to check.
 *
 * An entry lives auth.cache_ttl_s from the verification that made it; a
 * hit does not make it younger, so a password is put through scrypt at
 * least that often. At most auth.cache_size entries are kept; the least
 * recently used goes first. Every entry is wiped when it goes, and the key
 * and all entries when the cache is destroyed. Loop thread only.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "auth.h"
#include "lib/err.h"
#include "lib/xalloc.h"

/* Buckets to start with; the table doubles when it holds more entries
 * than buckets, so a large auth.cache_size costs memory only when used. */
#define CACHE_BUCKETS_MIN 64

struct entry {
    struct entry *hnext;       /* in its bucket */
    struct entry *prev, *next; /* most recently used first */
    uint32_t hash;
    int64_t expires_ms;
    struct auth_cache_proof proof;
    size_t len;
    char account[]; /* NUL-terminated */
};

struct auth_cache {
    unsigned char key[32];
    EVP_MAC_CTX *mac; /* keyed once; each MAC runs on a copy */
    struct entry **buckets;
    size_t nbuckets, count, max;
    int64_t ttl_ms;
    struct entry *head, *tail;
};

/* FNV-1a. The names are of accounts that logged in, not what a client
 * chooses to send, so no one can fill one bucket on purpose. */
static uint32_t
name_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static void
lru_unlink(auth_cache_t *c, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void
lru_push(auth_cache_t *c, struct entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    else
        c->tail = e;
    c->head = e;
}

static struct entry **
bucket_of(const auth_cache_t *c, uint32_t hash)
{
    return &c->buckets[hash & (c->nbuckets - 1)];
}

static struct entry *
find(const auth_cache_t *c, const char *account, size_t len, uint32_t hash)
{
    for (struct entry *e = *bucket_of(c, hash); e; e = e->hnext)
        if (e->hash == hash && e->len == len &&
            memcmp(e->account, account, len) == 0)
            return e;
    return NULL;
}

/* Takes e out of the table and the list, and wipes and frees it. */
static void
drop(auth_cache_t *c, struct entry *e)
{
    struct entry **pp = bucket_of(c, e->hash);

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->count--;
    OPENSSL_cleanse(e, sizeof(*e) + e->len + 1);
    free(e);
}

static void
grow(auth_cache_t *c)
{
    size_t n = c->nbuckets * 2;
    struct entry **b = xcalloc(n, sizeof(*b));

    for (size_t i = 0; i < c->nbuckets; i++) {
        struct entry *e = c->buckets[i], *next;

        for (; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

auth_cache_t *
auth_cache_new(long size, long ttl_s, char *why, size_t whylen)
{
    auth_cache_t *c = xcalloc(1, sizeof(*c));
    EVP_MAC *mac = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end()};

    c->max = size > 0 ? (size_t)size : 1;
    c->ttl_ms = (int64_t)ttl_s * 1000;
    c->nbuckets = CACHE_BUCKETS_MIN;
    c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
    if (RAND_priv_bytes(c->key, sizeof(c->key)) != 1) {
        snprintf(why, whylen, "no randomness for the cache key (OpenSSL)");
        goto fail;
    }
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    c->mac = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);
    if (c->mac == NULL ||
        EVP_MAC_init(c->mac, c->key, sizeof(c->key), params) != 1) {
        snprintf(why, whylen, "no HMAC-SHA256 (OpenSSL)");
        goto fail;
    }
    return c;
fail:
    auth_cache_destroy(&c);
    return NULL;
}

void
auth_cache_destroy(auth_cache_t **cache_p)
{
    auth_cache_t *c = *cache_p;

    if (c == NULL)
        return;
    *cache_p = NULL;
    while (c->head)
        drop(c, c->head);
    /* Frees the keyed state, which OpenSSL wipes. */
    EVP_MAC_CTX_free(c->mac);
    OPENSSL_cleanse(c->key, sizeof(c->key));
    free(c->buckets);
    free(c);
}

int
auth_cache_proof_rebind(struct auth_cache_proof *p, const char *stored)
{
    const EVP_MD *md = EVP_sha256();
    unsigned int n = 0;

    if (EVP_Digest(stored, strlen(stored), p->stored, &n, md, NULL) != 1)
        return ERR_SYS;
    return n == sizeof(p->stored) ? 0 : ERR_SYS;
}

int
auth_cache_proof_make(const auth_cache_t *c, const char *stored,
                      const char *password, size_t len,
                      struct auth_cache_proof *out)
{
    EVP_MAC_CTX *ctx;
    size_t n = 0;
    int ok;

    if (auth_cache_proof_rebind(out, stored) != 0)
        goto fail;
    ctx = EVP_MAC_CTX_dup(c->mac);
    ok = ctx != NULL &&
         EVP_MAC_update(ctx, (const unsigned char *)password, len) == 1 &&
         EVP_MAC_final(ctx, out->mac, &n, sizeof(out->mac)) == 1 &&
         n == sizeof(out->mac);
    EVP_MAC_CTX_free(ctx);
    if (ok)
        return 0;
fail:
    auth_cache_proof_wipe(out);
    return ERR_SYS;
}

void
auth_cache_proof_wipe(struct auth_cache_proof *p)
{
    OPENSSL_cleanse(p, sizeof(*p));
}

bool
auth_cache_match(auth_cache_t *c, const char *account,
                 const struct auth_cache_proof *p, int64_t now_ms)
{
    size_t len = strlen(account);
    uint32_t hash = name_hash(account, len);
    struct entry *e = find(c, account, len, hash);

    if (e == NULL)
        return false;
    if (now_ms >= e->expires_ms) {
        drop(c, e);
        return false;
    }
    /* Both compared whole, so the time taken says nothing of where they
     * differ. */
    if ((CRYPTO_memcmp(e->proof.stored, p->stored, sizeof(p->stored)) |
         CRYPTO_memcmp(e->proof.mac, p->mac, sizeof(p->mac))) != 0)
        return false;
    lru_unlink(c, e);
    lru_push(c, e);
    return true;
}

void
auth_cache_put(auth_cache_t *c, const char *account,
               const struct auth_cache_proof *p, int64_t now_ms)
{
    size_t len = strlen(account);
    uint32_t hash = name_hash(account, len);
    struct entry *e = find(c, account, len, hash);

    if (e)
        drop(c, e);
    while (c->count >= c->max)
        drop(c, c->tail);
    e = xcalloc(1, sizeof(*e) + len + 1);
    e->hash = hash;
    e->len = len;
    memcpy(e->account, account, len + 1);
    e->proof = *p;
    e->expires_ms = now_ms + c->ttl_ms;
    if (c->count >= c->nbuckets)
        grow(c);
    e->hnext = *bucket_of(c, hash);
    *bucket_of(c, hash) = e;
    lru_push(c, e);
    c->count++;
}

size_t
auth_cache_count(const auth_cache_t *c)
{
    return c->count;
}
