#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "envelope.h"
#include "store.h"
#include "store_keys.h"

#include "maildir.h"
#include "mailbox_quota.h"

/* A Redis that has not answered in this long is taken for down; the
 * delivery waiting on it then goes on without the quota. */
#define QUOTA_REDIS_TIMEOUT_MS 1000
/* Most accounts one lookup may ask about. */
#define QUOTA_LOOKUP_MAX 4096

/* Takes bytes off a usage counter without going below 0, in one step. */
static const char credit_lua[] =
    "local v = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))\n"
    "if v < 0 then redis.call('HSET', KEYS[1], ARGV[1], 0); v = 0 end\n"
    "return v\n";

struct qreq;

/* One reply a lookup waits for: account i's quota, or its usage. */
struct qslot {
    struct qreq *r;
    size_t i;
    bool usage;
};

/* A lookup in flight. */
struct qreq {
    struct qreq *next, **pprev;
    void *arg;
    mailbox_quota_cb *cb1;        /* a check of one account, or */
    mailbox_quota_lookup_cb *cbn; /* a lookup of several */
    uint64_t bytes;               /* for cb1 */
    size_t n;
    struct mailbox_quota_state *st;
    struct qslot *slots;
    int waiting; /* replies still to come */
    int err;
    bool cancelled;
};

struct mailbox_quota {
    store_async_t *store;
    struct qreq *reqs; /* in flight */
    /* account -> bytes held (as a pointer-sized integer; absent is 0) */
    zhashx_t *held;
};

/* The trace and account of a charge or credit, for the log. */
struct qmove {
    char trace[ENVELOPE_MAX_NAME + 1];
    char account[MAILDIR_NAME_MAX + 1];
    long long delta;
    mailbox_quota_t *q; /* set when the reply ends a hold of delta */
};

mailbox_quota_t *
mailbox_quota_new(loop_t *loop, const config_t *cfg)
{
    mailbox_quota_t *q = xcalloc(1, sizeof(*q));

    /* Connects in the background and keeps trying; meanwhile checks fail
     * (open) and charges are lost to the log. */
    q->store = store_async_new(loop, cfg, QUOTA_REDIS_TIMEOUT_MS);
    q->held = zhashx_new();
    return q;
}

void
mailbox_quota_destroy(mailbox_quota_t **q_p)
{
    mailbox_quota_t *q = *q_p;

    if (q == NULL)
        return;
    /* Fails every command out: the lookups answer ERR_CLOSED and go. */
    store_async_destroy(&q->store);
    if (q->reqs != NULL)
        abort();              /* a lookup outlived the store that answers it */
    zhashx_destroy(&q->held); /* after the store: charges release holds */
    free(q);
    *q_p = NULL;
}

/* Splits "local@domain" into out's keys; false when it is no name the
 * store would take (so it cannot reach outside its hash tag either). */
static bool
account_keys(const char *account, char user_key[STORE_KEY_MAX],
             char usage_key[STORE_KEY_MAX], char local[MAILDIR_LOCAL_MAX + 1])
{
    size_t len = strlen(account);
    const char *at = strrchr(account, '@');

    if (!maildir_name_ok(account, len) || at == NULL ||
        (size_t)(at - account) > MAILDIR_LOCAL_MAX)
        return false;
    memcpy(local, account, (size_t)(at - account));
    local[at - account] = '\0';
    return store_key_user(user_key, at + 1, local) != NULL &&
           store_key_usage(usage_key, at + 1) != NULL;
}

static uint64_t
reply_u64(const store_reply_t *reply)
{
    const char *s;
    long long v;

    switch (store_reply_type(reply)) {
    case STORE_INT:
        v = store_reply_int(reply);
        return v > 0 ? (uint64_t)v : 0;
    case STORE_STR:
        s = store_reply_str(reply, NULL);
        v = strtoll(s, NULL, 10);
        return v > 0 ? (uint64_t)v : 0;
    default:
        return 0;
    }
}

static void
qreq_finish(struct qreq *r)
{
    *r->pprev = r->next;
    if (r->next != NULL)
        r->next->pprev = r->pprev;
    if (!r->cancelled) {
        if (r->err != 0)
            for (size_t i = 0; i < r->n; i++)
                r->st[i] = (struct mailbox_quota_state){0, 0, true};
        if (r->cb1 != NULL) {
            r->st[0].fits =
                r->err != 0 ||
                mailbox_quota_fits(r->st[0].used, r->bytes, r->st[0].limit);
            r->cb1(r->arg, r->err, &r->st[0]);
        } else {
            r->cbn(r->arg, r->err, r->st, r->n);
        }
    }
    free(r->st);
    free(r->slots);
    free(r);
}

static void
on_lookup(void *arg, int err, const store_reply_t *reply)
{
    struct qslot *s = arg;
    struct qreq *r = s->r;

    if (err != 0 && r->err == 0)
        r->err = err;
    else if (err == 0 && store_reply_type(reply) == STORE_ERROR && r->err == 0)
        r->err = ERR_REDIS;
    else if (err == 0 && s->usage)
        r->st[s->i].used = reply_u64(reply);
    else if (err == 0)
        r->st[s->i].limit = reply_u64(reply);
    if (--r->waiting == 0)
        qreq_finish(r);
}

/* Sends the 2n HGETs of a lookup, pipelined on the one connection. Takes
 * r: on failure it is freed, or left to the replies already asked for. */
static int
qreq_start(mailbox_quota_t *q, struct qreq *r, const char *const *accounts)
{
    char user_key[STORE_KEY_MAX], usage_key[STORE_KEY_MAX];
    char local[MAILDIR_LOCAL_MAX + 1];
    size_t sent = 0;

    if (r->n == 0 || r->n > QUOTA_LOOKUP_MAX) {
        free(r);
        return ERR_INVAL;
    }
    for (size_t i = 0; i < r->n; i++)
        if (!account_keys(accounts[i], user_key, usage_key, local)) {
            free(r);
            return ERR_INVAL;
        }
    if (!store_async_ready(q->store)) {
        free(r);
        return ERR_REDIS;
    }
    r->st = xcalloc(r->n, sizeof(*r->st));
    r->slots = xcalloc(2 * r->n, sizeof(*r->slots));
    r->next = q->reqs;
    if (r->next != NULL)
        r->next->pprev = &r->next;
    r->pprev = &q->reqs;
    q->reqs = r;
    r->waiting = 1; /* held while sending */
    for (size_t i = 0; i < r->n; i++) {
        const char *get_limit[] = {"HGET", user_key, "quota"};
        const char *get_used[] = {"HGET", usage_key, local};

        account_keys(accounts[i], user_key, usage_key, local);
        r->slots[2 * i] = (struct qslot){r, i, false};
        r->slots[2 * i + 1] = (struct qslot){r, i, true};
        r->waiting += 2;
        if (store_async_cmd(q->store, on_lookup, &r->slots[2 * i], 3, get_limit,
                            NULL) != 0) {
            r->waiting -= 2;
            break;
        }
        if (store_async_cmd(q->store, on_lookup, &r->slots[2 * i + 1], 3,
                            get_used, NULL) != 0) {
            r->waiting -= 1;
            break;
        }
        sent++;
    }
    if (sent < r->n) {
        /* The connection went while sending: what went out still answers,
         * but the caller is told now and never called back. */
        r->cancelled = true;
        if (--r->waiting == 0)
            qreq_finish(r);
        return ERR_REDIS;
    }
    if (--r->waiting == 0)
        qreq_finish(r);
    return 0;
}

int
mailbox_quota_check(mailbox_quota_t *q, const char *account, uint64_t bytes,
                    mailbox_quota_cb *cb, void *arg)
{
    struct qreq *r = xcalloc(1, sizeof(*r));

    r->arg = arg;
    r->cb1 = cb;
    r->bytes = bytes;
    r->n = 1;
    return qreq_start(q, r, &account);
}

int
mailbox_quota_lookup(mailbox_quota_t *q, const char *const *accounts, size_t n,
                     mailbox_quota_lookup_cb *cb, void *arg)
{
    struct qreq *r = xcalloc(1, sizeof(*r));

    r->arg = arg;
    r->cbn = cb;
    r->n = n;
    return qreq_start(q, r, accounts);
}

void
mailbox_quota_cancel(mailbox_quota_t *q, void *arg)
{
    for (struct qreq *r = q->reqs; r != NULL; r = r->next)
        if (r->arg == arg)
            r->cancelled = true;
}

uint64_t
mailbox_quota_held(const mailbox_quota_t *q, const char *account)
{
    return (uint64_t)(uintptr_t)zhashx_lookup(q->held, account);
}

void
mailbox_quota_hold(mailbox_quota_t *q, const char *account, uint64_t bytes)
{
    uint64_t v = mailbox_quota_held(q, account) + bytes;

    if (bytes > 0)
        zhashx_update(q->held, account, (void *)(uintptr_t)v);
}

void
mailbox_quota_release(mailbox_quota_t *q, const char *account, uint64_t bytes)
{
    uint64_t v = mailbox_quota_held(q, account);

    if (v <= bytes)
        zhashx_delete(q->held, account);
    else
        zhashx_update(q->held, account, (void *)(uintptr_t)(v - bytes));
}

static void
on_moved(void *arg, int err, const store_reply_t *reply)
{
    struct qmove *m = arg;

    if (m->q != NULL)
        mailbox_quota_release(m->q, m->account, (uint64_t)m->delta);

    if (err != 0 || store_reply_type(reply) == STORE_ERROR)
        log_warn(m->trace, "quota_count_failed",
                 "mailbox=%s delta=%lld error=%s", log_q(m->account), m->delta,
                 log_q(err != 0 ? err_str(err) : store_reply_str(reply, NULL)));
    free(m);
}

/* Moves account's usage by delta bytes; fire and forget. With held, the
 * reply ends a hold of delta bytes (which a failure to send ends now). */
static void
quota_move(mailbox_quota_t *q, const char *trace, const char *account,
           long long delta, bool held)
{
    char user_key[STORE_KEY_MAX], usage_key[STORE_KEY_MAX];
    char local[MAILDIR_LOCAL_MAX + 1], num[32];
    struct qmove *m;
    int rc;

    if (delta == 0)
        return;
    if (!account_keys(account, user_key, usage_key, local)) {
        log_warn(trace, "quota_bad_account", "mailbox=%s", log_q(account));
        if (held)
            mailbox_quota_release(q, account, (uint64_t)delta);
        return;
    }
    m = xcalloc(1, sizeof(*m));
    snprintf(m->trace, sizeof(m->trace), "%s", trace ? trace : "");
    snprintf(m->account, sizeof(m->account), "%s", account);
    m->delta = delta;
    m->q = held ? q : NULL;
    if (delta > 0) {
        const char *argv[] = {"HINCRBY", usage_key, local, num};

        snprintf(num, sizeof(num), "%lld", delta);
        rc = store_async_cmd(q->store, on_moved, m, 4, argv, NULL);
    } else {
        const char *argv[] = {"EVAL", credit_lua, "1", usage_key, local, num};

        snprintf(num, sizeof(num), "%lld", -delta);
        rc = store_async_cmd(q->store, on_moved, m, 6, argv, NULL);
    }
    if (rc != 0) {
        log_warn(m->trace, "quota_count_failed",
                 "mailbox=%s delta=%lld error=%s", log_q(m->account), delta,
                 log_q(err_str(rc)));
        if (held)
            mailbox_quota_release(q, account, (uint64_t)delta);
        free(m);
    }
}

void
mailbox_quota_charge(mailbox_quota_t *q, const char *trace, const char *account,
                     uint64_t bytes)
{
    quota_move(q, trace, account,
               bytes > (uint64_t)INT64_MAX ? INT64_MAX : (long long)bytes,
               false);
}

void
mailbox_quota_charge_held(mailbox_quota_t *q, const char *trace,
                          const char *account, uint64_t bytes)
{
    /* Holds come from sizes of messages, far below INT64_MAX. */
    quota_move(q, trace, account, (long long)bytes, true);
}

void
mailbox_quota_credit(mailbox_quota_t *q, const char *trace, const char *account,
                     uint64_t bytes)
{
    quota_move(q, trace, account,
               bytes > (uint64_t)INT64_MAX ? -INT64_MAX : -(long long)bytes,
               false);
}
