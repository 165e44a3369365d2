#include <stdio.h>
#include <stdlib.h>

#include "shard.h"

uint64_t
shard_hash(const char *s, size_t len)
{
    /* FNV-1a, 64-bit: offset basis and prime from the FNV reference. */
    uint64_t h = 14695981039346656037ull;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

int
shard_jump(uint64_t key, int n)
{
    int64_t b = -1, j = 0;

    if (n <= 1)
        return 0;
    /* Lamping and Veach's loop, as published: each step jumps forward to
     * the next bucket that would take the key when buckets are added. */
    while (j < n) {
        b = j;
        key = key * 2862933555777941757ull + 1;
        j = (int64_t)((double)(b + 1) *
                      ((double)(1ll << 31) / (double)((key >> 33) + 1)));
    }
    return (int)b;
}

int
shard_of(const char *address, size_t len, int n)
{
    return n <= 1 ? 0 : shard_jump(shard_hash(address, len), n);
}

int
shard_mailbox_count(const config_t *cfg)
{
    long n = config_int(cfg, "mailbox.shards");

    if (n == 0)
        n = config_int(cfg, "supervisor.mailbox");
    return n < 1 ? 1 : n > SHARD_MAX ? SHARD_MAX : (int)n;
}

int
shard_mailbox_index(const config_t *cfg, const char *instance)
{
    long k = config_int(cfg, "mailbox.shard"), n = shard_mailbox_count(cfg);
    char *end;

    if (k >= 0)
        return k < n ? (int)k : -1;
    if (instance == NULL || *instance == '\0')
        return -1;
    k = strtol(instance, &end, 10);
    if (*end != '\0' || k < 1)
        return -1;
    return (int)((k - 1) % n);
}

char *
shard_service(char *out, size_t outlen, const char *base, int k, int n)
{
    int w;

    if (n <= 1)
        w = snprintf(out, outlen, "%s", base);
    else if (k < 0 || k >= n || n > SHARD_MAX)
        return NULL;
    else
        w = snprintf(out, outlen, "%s.%d", base, k);
    return w >= 0 && (size_t)w < outlen ? out : NULL;
}
