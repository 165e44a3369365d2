/*
 * guard_rate.c - rate counters decided here at once and shared with the
 * other guard copies through Redis in the background.
 *
 * Each counter is one (kind, subject, minute): "conn" per client address,
 * "msg" per address, "umsg" and "urcpt" per user. A request is answered
 * from what this guard knows: the global count it learned at its last
 * flush, plus the events it counted itself since. Every flush interval
 * (guard.rate_flush_ms) the events counted since the last flush go to
 * Redis in one pipelined round, an EVALSHA per 256 counters that adds
 * them (INCRBY) and renews the expiry, and the round's replies are the new
 * global counts. The Redis runs with appendfsync always, so this is one
 * fsync per interval instead of one per connection and per message, and
 * none of them on the way to a reply.
 *
 * What that costs in precision: another guard's events reach this one at
 * its next flush, so a limit may be exceeded by at most what the other
 * guards counted during one flush interval (plus a Redis round trip). A
 * guard learns a subject's count only when it flushes events of its own
 * for that subject: one it has not counted before in the minute (or not
 * since its last flush) is decided, until that flush returns, on the count
 * it knew, which may leave out the others' events of the whole minute.
 * One guard alone is exact: everything it decides on it counted itself.
 *
 * While Redis is away, decisions go on from the local counts, and the
 * events are kept and sent once it is back (those of a minute already
 * over are dropped). Those of the last interval are lost when the guard
 * stops; losing part of a minute's counters is harmless.
 *
 * The script is loaded with SCRIPT LOAD once per connection (known by a
 * failed command, since the connection is the store's); an EVALSHA that
 * still finds no script (NOSCRIPT: Redis restarted, SCRIPT FLUSH) puts its
 * events back and makes the next flush load it again.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "store.h"
#include "store_keys.h"

/* Counters live two windows, so a late reader still finds its own. */
#define RATE_TTL "120"
/* Counters per EVALSHA; more in one flush go as several, pipelined. */
#define RATE_BATCH 256
#define RATE_BUCKETS_MIN 64

/* KEYS are the counters, ARGV[1] the expiry, ARGV[i + 1] KEYS[i]'s
 * events: adds them, renews the expiry, returns the new counts. */
static const char rate_script[] =
    "local out = {} "
    "for i, k in ipairs(KEYS) do "
    "out[i] = redis.call('INCRBY', k, ARGV[i + 1]) "
    "redis.call('EXPIRE', k, ARGV[1]) "
    "end "
    "return out";

struct counter {
    struct counter *next;       /* in its hash chain */
    struct counter *dirty_next; /* in the list of counters to flush */
    uint32_t hash;
    bool dirty;
    long long minute;
    long long learned; /* the global count the last flush returned */
    long long sent;    /* own events in the flush that is out */
    long long pending; /* own events not sent yet */
    char key[];        /* the Redis key */
};

/* One EVALSHA of a flush; its counters cannot go while it is out. */
struct batch {
    guard_rate_t *r;
    size_t n;
    struct counter *c[];
};

struct guard_rate {
    loop_t *loop;
    store_async_t *store; /* borrowed */
    int flush_ms;
    struct counter **buckets;
    size_t nbuckets, count;
    struct counter *dirty;
    loop_timer_t *flush_timer, *sweep_timer;
    int out;       /* commands of the flush under way still out */
    bool loaded;   /* sha names the script on this connection */
    bool unsynced; /* the last flush failed (logged once) */
    char sha[41];
};

static void on_flush_timer(loop_t *loop, void *arg);
static void on_sweep_timer(loop_t *loop, void *arg);

static long long
minute_now(void)
{
    return (long long)(clock_wall_us() / 60000000);
}

/* FNV-1a. */
static uint32_t
hash_key(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void
grow(guard_rate_t *r)
{
    size_t n = r->nbuckets * 2;
    struct counter **b = xcalloc(n, sizeof(*b));

    for (size_t i = 0; i < r->nbuckets; i++)
        for (struct counter *c = r->buckets[i], *next; c; c = next) {
            next = c->next;
            c->next = b[c->hash & (n - 1)];
            b[c->hash & (n - 1)] = c;
        }
    free(r->buckets);
    r->buckets = b;
    r->nbuckets = n;
}

static struct counter *
counter_get(guard_rate_t *r, const char *key, long long minute)
{
    uint32_t h = hash_key(key);
    struct counter *c;
    size_t len;

    for (c = r->buckets[h & (r->nbuckets - 1)]; c; c = c->next)
        if (c->hash == h && strcmp(c->key, key) == 0)
            return c;
    if (r->count >= r->nbuckets)
        grow(r);
    len = strlen(key);
    c = xcalloc(1, sizeof(*c) + len + 1);
    memcpy(c->key, key, len + 1);
    c->hash = h;
    c->minute = minute;
    c->next = r->buckets[h & (r->nbuckets - 1)];
    r->buckets[h & (r->nbuckets - 1)] = c;
    r->count++;
    if (r->sweep_timer == NULL) {
        int64_t ms = 60000 - (clock_wall_us() / 1000) % 60000 + 1000;

        r->sweep_timer = loop_timer_add(r->loop, ms, on_sweep_timer, r);
    }
    return c;
}

static void
mark_dirty(guard_rate_t *r, struct counter *c)
{
    if (c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = r->dirty;
    r->dirty = c;
}

static void
schedule(guard_rate_t *r)
{
    if (r->flush_timer == NULL && r->dirty != NULL)
        r->flush_timer =
            loop_timer_add(r->loop, r->flush_ms, on_flush_timer, r);
}

/* The flush failed: its events wait for the next. */
static void
unsynced(guard_rate_t *r, int err, const char *why)
{
    if (err == ERR_CLOSED)
        return; /* stopping */
    if (!r->unsynced)
        log_warn(NULL, "guard_rate_unsynced", "reason=%s counters=%zu",
                 log_q(why), r->count);
    r->unsynced = true;
}

/* The events of a flush that failed wait for the next one. */
static void
put_back(guard_rate_t *r, struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        b->c[i]->pending += b->c[i]->sent;
        b->c[i]->sent = 0;
        mark_dirty(r, b->c[i]);
    }
}

static void
on_batch(void *arg, int err, const store_reply_t *reply)
{
    struct batch *b = arg;
    guard_rate_t *r = b->r;
    bool ok = err == 0 && store_reply_type(reply) == STORE_ARRAY &&
              store_reply_count(reply) == b->n;

    if (ok) {
        for (size_t i = 0; i < b->n; i++) {
            b->c[i]->learned = store_reply_int(store_reply_at(reply, i));
            b->c[i]->sent = 0;
        }
        if (r->unsynced)
            log_info(NULL, "guard_rate_synced", "counters=%zu", r->count);
        r->unsynced = false;
    } else {
        const char *s = err == 0 ? store_reply_str(reply, NULL) : NULL;

        /* A lost connection (err) or a Redis without the script. */
        if (err != 0 || (s != NULL && strncmp(s, "NOSCRIPT", 8) == 0))
            r->loaded = false;
        unsynced(r, err, err ? err_name(err) : s ? s : "unexpected reply");
        put_back(r, b);
    }
    free(b);
    /* Not flush(): the store may be going away under this callback. */
    if (--r->out == 0)
        schedule(r);
}

/* Sends the counters of b (taken); on failure their events wait for the
 * next flush and false is returned. */
static bool
send_batch(guard_rate_t *r, struct batch *b)
{
    int argc = 3 + 2 * (int)b->n + 1, i = 0;
    const char **argv = xcalloc((size_t)argc, sizeof(*argv));
    char(*num)[24] = xcalloc(b->n + 1, sizeof(*num));
    bool sent;

    snprintf(num[b->n], sizeof(num[b->n]), "%zu", b->n);
    argv[i++] = "EVALSHA";
    argv[i++] = r->sha;
    argv[i++] = num[b->n];
    for (size_t k = 0; k < b->n; k++)
        argv[i++] = b->c[k]->key;
    argv[i++] = RATE_TTL;
    for (size_t k = 0; k < b->n; k++) {
        snprintf(num[k], sizeof(num[k]), "%lld", b->c[k]->sent);
        argv[i++] = num[k];
    }
    /* hiredis formats the command at once: argv may go afterwards. */
    r->out++;
    sent = store_async_cmd(r->store, on_batch, b, argc, argv, NULL) == 0;
    if (!sent) {
        r->out--;
        r->loaded = false;
        unsynced(r, ERR_REDIS, "not connected");
        put_back(r, b);
        free(b);
    }
    free(num);
    free(argv);
    return sent;
}

/* Sends every dirty counter's events, RATE_BATCH to a command. */
static void
send_all(guard_rate_t *r)
{
    while (r->dirty != NULL) {
        struct batch *b =
            xmalloc(sizeof(*b) + RATE_BATCH * sizeof(struct counter *));

        b->r = r;
        b->n = 0;
        while (r->dirty != NULL && b->n < RATE_BATCH) {
            struct counter *c = r->dirty;

            r->dirty = c->dirty_next;
            c->dirty = false;
            c->sent = c->pending;
            c->pending = 0;
            b->c[b->n++] = c;
        }
        if (!send_batch(r, b))
            return; /* the events are back in the list */
    }
}

static void
on_loaded(void *arg, int err, const store_reply_t *reply)
{
    guard_rate_t *r = arg;
    const char *s = err == 0 ? store_reply_str(reply, NULL) : NULL;

    r->out--;
    if (err == 0 && store_reply_type(reply) == STORE_STR && s != NULL &&
        strlen(s) == 40) {
        memcpy(r->sha, s, 41);
        r->loaded = true;
        send_all(r);
    } else {
        unsynced(r, err, err ? err_name(err) : s ? s : "unexpected reply");
    }
    if (r->out == 0)
        schedule(r);
}

static void
flush(guard_rate_t *r)
{
    const char *load[] = {"SCRIPT", "LOAD", rate_script};

    /* One flush at a time: a slow Redis gets bigger batches, not more. */
    if (r->out > 0 || r->dirty == NULL)
        return;
    if (!store_async_ready(r->store)) {
        r->loaded = false;
        unsynced(r, ERR_REDIS, "not connected");
        return;
    }
    if (r->loaded) {
        send_all(r);
        return;
    }
    r->out++;
    if (store_async_cmd(r->store, on_loaded, r, 3, load, NULL) != 0) {
        r->out--;
        unsynced(r, ERR_REDIS, "not connected");
    }
}

static void
on_flush_timer(loop_t *loop, void *arg)
{
    guard_rate_t *r = arg;

    (void)loop;
    r->flush_timer = NULL;
    flush(r);
    if (r->out == 0)
        schedule(r); /* not sent: try again next interval */
}

/* Drops the counters of minutes that are over: at once when nothing of
 * theirs waits, after one more minute when Redis would not take it. */
static void
on_sweep_timer(loop_t *loop, void *arg)
{
    guard_rate_t *r = arg;
    long long now = minute_now();
    struct counter **dp = &r->dirty;

    (void)loop;
    r->sweep_timer = NULL;
    /* Forget the events of counters too old to matter to anyone. */
    while (*dp != NULL) {
        struct counter *c = *dp;

        if (c->minute < now - 1) {
            *dp = c->dirty_next;
            c->dirty = false;
            c->pending = 0;
        } else {
            dp = &c->dirty_next;
        }
    }
    for (size_t i = 0; i < r->nbuckets; i++) {
        struct counter **cp = &r->buckets[i];

        while (*cp != NULL) {
            struct counter *c = *cp;

            if (c->minute < now && !c->dirty && c->sent == 0) {
                *cp = c->next;
                free(c);
                r->count--;
            } else {
                cp = &c->next;
            }
        }
    }
    if (r->count > 0) {
        int64_t ms = 60000 - (clock_wall_us() / 1000) % 60000 + 1000;

        r->sweep_timer = loop_timer_add(r->loop, ms, on_sweep_timer, r);
    }
}

guard_rate_t *
guard_rate_new(loop_t *loop, store_async_t *store, int flush_ms)
{
    guard_rate_t *r = xcalloc(1, sizeof(*r));

    r->loop = loop;
    r->store = store;
    r->flush_ms = flush_ms > 0 ? flush_ms : 1;
    r->nbuckets = RATE_BUCKETS_MIN;
    r->buckets = xcalloc(r->nbuckets, sizeof(*r->buckets));
    return r;
}

void
guard_rate_destroy(guard_rate_t **r_p)
{
    guard_rate_t *r = *r_p;

    if (r == NULL)
        return;
    if (r->out > 0) {
        /* A caller bug: the store must go first (see guard.h). */
        log_err(NULL, "guard_rate_misuse", "reason=%s",
                log_q("destroyed with a flush out"));
        abort();
    }
    loop_timer_cancel(r->loop, &r->flush_timer);
    loop_timer_cancel(r->loop, &r->sweep_timer);
    for (size_t i = 0; i < r->nbuckets; i++)
        for (struct counter *c = r->buckets[i], *next; c; c = next) {
            next = c->next;
            free(c);
        }
    free(r->buckets);
    free(r);
    *r_p = NULL;
}

long long
guard_rate_hit(guard_rate_t *r, const char *kind, const char *subject)
{
    char key[STORE_KEY_MAX];
    long long minute = minute_now();
    struct counter *c;

    /* A subject too long for a key cannot come from the listener; it is
     * counted under its first bytes rather than not at all. */
    if (store_key_rate(key, kind, subject, minute) == NULL) {
        char cut[256];

        snprintf(cut, sizeof(cut), "%s", subject);
        store_key_rate(key, kind, cut, minute);
    }
    c = counter_get(r, key, minute);
    c->pending++;
    mark_dirty(r, c);
    schedule(r);
    return c->learned + c->sent + c->pending;
}
