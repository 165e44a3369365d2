/*
 * shard.h - which mailbox process owns an account (DESIGN.md, The mailbox
 * store: copies split accounts by a stable hash).
 *
 * An address is hashed with FNV-1a 64 over its bytes, ASCII letters
 * lower-cased (local parts are kept and compared in lower case, RFC 5321
 * section 2.4 as schemas/redis.md says), and the hash is mapped to one of
 * n shards by Jump Consistent Hash (Lamping and Veach, "A Fast, Minimal
 * Memory, Consistent Hash Algorithm", 2014): going from n to n + 1 shards
 * moves only about 1/(n + 1) of the accounts, all of them to the new
 * shard. Both are fixed forever: a change would move every mailbox, so
 * tests/unit/test_shard.c holds golden values.
 *
 * A sharded service registers on the bus as "NAME.K" (K from 0), e.g.
 * "mailbox.2"; with one shard it keeps its plain name. Pure functions, no
 * I/O, nothing to own.
 */
#ifndef SAMOTOP_SHARD_H
#define SAMOTOP_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Most shards a service may be split into. */
#define SHARD_MAX 1024

/* FNV-1a 64 of the len bytes of s, with A-Z taken as a-z. */
uint64_t shard_hash(const char *s, size_t len);

/* Jump Consistent Hash: the bucket of key among n (n >= 1), 0..n-1. */
int shard_jump(uint64_t key, int n);

/* The shard (0..n-1) that owns address (len bytes); 0 when n <= 1. */
int shard_of(const char *address, size_t len, int n);

/* Writes the bus service of shard k of n of service base into out:
 * "base" when n <= 1, else "base.k". Returns out, or NULL when it does not
 * fit or k is out of range. */
char *shard_service(char *out, size_t outlen, const char *base, int k, int n);

/* How many shards the mailbox has: mailbox.shards, or when that is 0 the
 * supervisor.mailbox copies samotopd starts (at least 1). Every process
 * of one system must see the same number. */
int shard_mailbox_count(const config_t *cfg);

/* The shard this mailbox process owns: mailbox.shard when set, else
 * (N - 1) mod count for an instance "N" (samotopd's copy number), so
 * that more copies than shards share them. -1 when neither says. */
int shard_mailbox_index(const config_t *cfg, const char *instance);

#endif
