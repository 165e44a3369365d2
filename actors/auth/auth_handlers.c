/*
 * auth_handlers.c - auth.verify answered from Redis and the pool of
 * scrypt threads, without blocking the loop.
 *
 * A request that is well-formed becomes a job that owns it and moves
 * through stages:
 *
 *   LOOKUP  one pipelined round: the failure counters of the account and
 *           of the client address, the account's pw and disabled, the
 *           domain's disabled. A store failure answers 454 4.7.0; a
 *           counter at auth.fail_limit answers 454 4.7.0 without looking
 *           at the password. An enabled account in an enabled domain
 *           whose stored hash and password match an entry of the cache of
 *           verified logins (auth_cache.c) goes straight to CLEAR.
 *   VERIFY  the password is checked on a pool thread: against the stored
 *           hash, or, for an account that does not exist (or whose hash is
 *           unreadable), against a dummy hash, so the time taken does not
 *           say which accounts exist. A full pool answers 454 4.7.0. A
 *           stored hash weaker than passwd_default is hashed anew there
 *           when the password matches.
 *   CLEAR   a match on an enabled account in an enabled domain: the
 *           account's failure counter is deleted and, after a rehash, the
 *           new hash is stored if the stored one is still the one checked;
 *           then 235 2.7.0, and the login goes into the cache.
 *   COUNT   anything else: both counters go up (with their expiry), and
 *   DELAY   after auth.fail_delay_ms times the larger count (at most
 *           auth.fail_delay_max_ms, and never past the caller's deadline)
 *           535 5.7.8, the same answer for a wrong password, an unknown
 *           account and a disabled one.
 *
 * Only a match is ever cached; a password that misses the cache, right or
 * wrong, takes the whole way above, counters and delays included, and so
 * costs what it cost without a cache.
 *
 * A timer at the request's deadline answers 454 4.7.0, so the caller never
 * waits for nothing. A job answered early lives on until its last Redis or
 * pool callback has run, since each calls back exactly once. Secrets (the
 * password, the stored hash, the SASL response) are never logged and are
 * wiped when the job ends.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/passwd.h"
#include "lib/xalloc.h"
#include "store.h"
#include "store_keys.h"

/* A Redis that has not answered in this long is taken for down. */
#define AUTH_REDIS_TIMEOUT_MS 1000
/* Answers go out this long before the caller's deadline, so that they
 * arrive while the caller still listens. */
#define AUTH_DEADLINE_MARGIN_MS 100
/* The longest client address taken (an IPv6 text form is 45 octets). */
#define AUTH_IP_MAX 64

/* The rate kinds of the failure counters (schemas/redis.md). */
#define AUTH_KIND_USER "authfail_user"
#define AUTH_KIND_IP "authfail_ip"

#define TEXT_OK "authentication successful"
#define TEXT_INVALID "authentication credentials invalid"
#define TEXT_UNAVAILABLE "temporary authentication failure"
#define TEXT_LOCKED "too many failed attempts, try again later"
#define TEXT_BUSY "authentication busy, try later"

/* INCR and EXPIRE of every key as one step: a counter never lives without
 * its expiry, and each failure pushes the expiry back, so a counter goes
 * only after auth.fail_window_s without a failure. Returns the counts. */
static const char count_script[] = "local r = {} "
                                   "for i, k in ipairs(KEYS) do "
                                   "r[i] = redis.call('INCR', k) "
                                   "redis.call('EXPIRE', k, ARGV[1]) "
                                   "end "
                                   "return r";

/* KEYS[1] the account; ARGV: the hash that was checked, the new one. A
 * password changed while the old one was being checked stays changed. */
static const char rehash_script[] =
    "if redis.call('HGET', KEYS[1], 'pw') ~= ARGV[1] then return 0 end "
    "redis.call('HSET', KEYS[1], 'pw', ARGV[2]) "
    "return 1";

struct job;

struct auth {
    store_async_t *store;
    auth_pool_t *pool;
    long fail_limit, fail_window_s, fail_delay_ms, fail_delay_max_ms;
    auth_cache_t *cache; /* NULL when auth.cache_ttl_s is 0 */
    struct job *jobs;    /* every live job, for fini */
    bool stopping;
};

enum stage { ST_LOOKUP, ST_VERIFY, ST_CLEAR, ST_COUNT, ST_DELAY };

/* The replies a round may wait for; each has its own slot. */
enum slot_id {
    S_FAIL_USER,
    S_FAIL_IP,
    S_ACCOUNT,
    S_DOMAIN,
    S_CLEAR,
    S_REHASH,
    S_COUNT,
    S__COUNT
};

struct slot {
    struct job *job;
    enum slot_id id;
};

struct job {
    struct job *prev, *next;
    actor_t *a;
    struct auth *au;
    bus_request_t *req;
    char trace[ENVELOPE_MAX_NAME + 1];
    char mech[16];
    char ip[AUTH_IP_MAX + 1]; /* "" when the request gave none */
    struct auth_account acct;
    struct auth_creds creds;
    enum stage stage;
    int holds; /* callbacks to come: Redis, the pool, the delay timer */
    bool failed, answered;
    loop_timer_t *deadline, *delay;
    struct slot slots[S__COUNT];
    int64_t started_ms;

    /* What Redis and the pool said. */
    long long fails_user, fails_ip;
    char *stored; /* the account's pw, wiped when freed */
    bool found, disabled, domain_disabled, bad_hash;
    int verdict;

    /* The cache: the proof of this password against stored, made when the
     * account may log in at all; whether it hit. */
    struct auth_cache_proof proof;
    bool have_proof, cache_hit;
    /* A rehash: asked of the pool (stored is then kept for the compare
     * and set), its outcome, and what the compare and set said. */
    bool want_rehash;
    char *rehashed;
    long long rehash_set;
};

static void job_advance(struct job *j);

static bool
is_one(const store_reply_t *r)
{
    const char *s;

    if (r == NULL)
        return false;
    if (store_reply_type(r) == STORE_INT)
        return store_reply_int(r) == 1;
    s = store_reply_str(r, NULL);
    return s != NULL && strcmp(s, "1") == 0;
}

/* A counter's value from GET (nil when there is none). */
static long long
counter_of(const store_reply_t *r)
{
    const char *s;

    if (r == NULL)
        return 0;
    if (store_reply_type(r) == STORE_INT)
        return store_reply_int(r);
    s = store_reply_str(r, NULL);
    return s ? strtoll(s, NULL, 10) : 0;
}

static void
wipe_str(char **s_p)
{
    if (*s_p == NULL)
        return;
    OPENSSL_cleanse(*s_p, strlen(*s_p));
    free(*s_p);
    *s_p = NULL;
}

/* Drops what was read of the account's hash and derived from the
 * password. */
static void
forget_stored(struct job *j)
{
    wipe_str(&j->stored);
    wipe_str(&j->rehashed);
    auth_cache_proof_wipe(&j->proof);
    j->have_proof = false;
}

static void
job_free(struct job *j)
{
    loop_t *loop = actor_loop(j->a);

    loop_timer_cancel(loop, &j->deadline);
    loop_timer_cancel(loop, &j->delay);
    if (j->prev)
        j->prev->next = j->next;
    else
        j->au->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    forget_stored(j);
    auth_creds_wipe(&j->creds);
    free(j);
}

static const envelope_t *
job_env(const struct job *j)
{
    return bus_request_envelope(j->req);
}

static const char *
or_dash(const char *s)
{
    return s && *s ? s : "-";
}

/* Sends the answer and logs the outcome, unless the job was answered
 * already. err, when not 0, names the failure in the reply's "error". */
static void
job_answer(struct job *j, int code, const char *ecode, const char *text,
           int err, const char *reason)
{
    envelope_t *reply;

    if (j->answered)
        return;
    j->answered = true;
    loop_timer_cancel(actor_loop(j->a), &j->deadline);
    reply = envelope_new_reply(job_env(j), code, ecode, text);
    if (code / 100 == 2)
        value_set_str(envelope_body(reply), ENV_KEY_USER, j->acct.name);
    if (err)
        value_set_str(envelope_body(reply), ENV_KEY_ERROR, err_name(err));
    log_info(j->trace, "auth_verify",
             "user=%s ip=%s mech=%s outcome=%s reason=%s code=%d "
             "fails_user=%lld fails_ip=%lld cache=%s ms=%lld",
             log_q(j->acct.name), log_q(or_dash(j->ip)), j->mech,
             code / 100 == 2   ? "ok"
             : code / 100 == 4 ? "tempfail"
                               : "fail",
             reason, code, j->fails_user, j->fails_ip,
             j->au->cache == NULL ? "off"
             : j->cache_hit       ? "hit"
                                  : "miss",
             (long long)(clock_mono_ms() - j->started_ms));
    auth_metrics_verify(code, reason,
                        j->au->cache == NULL ? "off"
                        : j->cache_hit       ? "hit"
                                             : "miss");
    actor_reply(j->a, &j->req, &reply);
    /* Nothing secret is needed any more. */
    auth_creds_wipe(&j->creds);
    forget_stored(j);
}

static void
job_unavailable(struct job *j, int err, const char *reason)
{
    job_answer(j, 454, "4.7.0", TEXT_UNAVAILABLE, err, reason);
}

/* Frees a job whose answer is out once its callbacks have all run. */
static void
job_done(struct job *j)
{
    if (j->answered && j->holds == 0)
        job_free(j);
}

static void
job_release(struct job *j)
{
    if (--j->holds > 0)
        return;
    if (j->answered) {
        job_free(j);
        return;
    }
    job_advance(j);
}

static void
on_deadline(loop_t *loop, void *arg)
{
    struct job *j = arg;

    (void)loop;
    j->deadline = NULL;
    job_unavailable(j, ERR_TIMEOUT, "deadline");
    job_done(j);
}

static struct job *
job_new(actor_t *a, bus_request_t **req_p, const char *mech, const char *ip,
        const struct auth_account *acct, struct auth_creds *creds)
{
    struct auth *au = actor_data(a);
    struct job *j = xcalloc(1, sizeof(*j));
    const envelope_t *env = bus_request_envelope(*req_p);
    int64_t left_ms;

    j->a = a;
    j->au = au;
    j->req = *req_p;
    *req_p = NULL;
    j->started_ms = clock_mono_ms();
    snprintf(j->trace, sizeof(j->trace), "%s", envelope_trace(env));
    snprintf(j->mech, sizeof(j->mech), "%s", mech);
    snprintf(j->ip, sizeof(j->ip), "%s", ip ? ip : "");
    j->acct = *acct;
    j->creds = *creds;
    auth_creds_wipe(creds);
    for (int i = 0; i < S__COUNT; i++) {
        j->slots[i].job = j;
        j->slots[i].id = (enum slot_id)i;
    }
    j->next = au->jobs;
    if (au->jobs)
        au->jobs->prev = j;
    au->jobs = j;
    left_ms = (envelope_deadline(env) - clock_wall_us()) / 1000 -
              AUTH_DEADLINE_MARGIN_MS;
    j->deadline = loop_timer_add(actor_loop(a), left_ms > 0 ? left_ms : 0,
                                 on_deadline, j);
    return j;
}

static void
take_reply(struct job *j, enum slot_id id, const store_reply_t *r)
{
    switch (id) {
    case S_FAIL_USER:
        j->fails_user = counter_of(r);
        break;
    case S_FAIL_IP:
        j->fails_ip = counter_of(r);
        break;
    case S_ACCOUNT: {
        const store_reply_t *pw = store_reply_at(r, 0);
        const char *s = pw ? store_reply_str(pw, NULL) : NULL;

        if (s != NULL && *s != '\0') {
            j->found = true;
            j->stored = xstrdup(s);
        }
        j->disabled = is_one(store_reply_at(r, 1));
        break;
    }
    case S_DOMAIN:
        j->domain_disabled = is_one(r);
        break;
    case S_CLEAR:
        break;
    case S_REHASH:
        j->rehash_set =
            store_reply_type(r) == STORE_INT ? store_reply_int(r) : -1;
        break;
    case S_COUNT:
        /* The counts come back in the order the keys went. */
        j->fails_user = counter_of(store_reply_at(r, 0));
        if (store_reply_count(r) > 1)
            j->fails_ip = counter_of(store_reply_at(r, 1));
        break;
    case S__COUNT:
        break;
    }
}

static void
on_store(void *arg, int err, const store_reply_t *reply)
{
    struct slot *s = arg;
    struct job *j = s->job;

    if (err != 0) {
        j->failed = true;
    } else if (store_reply_type(reply) == STORE_ERROR) {
        log_warn(j->trace, "auth_redis_error", "reply=%s",
                 log_q(store_reply_str(reply, NULL)));
        j->failed = true;
    } else if (!j->answered && !j->failed) {
        take_reply(j, s->id, reply);
    }
    job_release(j);
}

/* Sends one command of the round; a failure marks the job. */
static void
job_cmd(struct job *j, enum slot_id id, int argc, const char *const *argv)
{
    if (j->failed)
        return;
    for (int i = 0; i < argc; i++)
        if (argv[i] == NULL) { /* a key that did not fit */
            j->failed = true;
            return;
        }
    j->holds++;
    if (j->au->store == NULL ||
        store_async_cmd(j->au->store, on_store, &j->slots[id], argc, argv,
                        NULL) != 0) {
        j->holds--;
        j->failed = true;
    }
}

/* Commands go out between round_begin() and round_end(); job_advance()
 * runs once every reply is in. */
static void
round_begin(struct job *j, enum stage stage)
{
    j->stage = stage;
    j->failed = false;
    j->holds++;
}

static void
round_end(struct job *j)
{
    job_release(j);
}

static char *
key_user(const struct job *j, char out[STORE_KEY_MAX])
{
    return store_key_rate(out, AUTH_KIND_USER, j->acct.name,
                          j->au->fail_window_s);
}

static char *
key_ip(const struct job *j, char out[STORE_KEY_MAX])
{
    return store_key_rate(out, AUTH_KIND_IP, j->ip, j->au->fail_window_s);
}

static void
send_lookup(struct job *j)
{
    char kfu[STORE_KEY_MAX], kfi[STORE_KEY_MAX], kacct[STORE_KEY_MAX],
        kdom[STORE_KEY_MAX];
    const char *fail_user[] = {"GET", key_user(j, kfu)};
    const char *fail_ip[] = {"GET", key_ip(j, kfi)};
    const char *account[] = {
        "HMGET", store_key_user(kacct, j->acct.domain, j->acct.local), "pw",
        "disabled"};
    const char *domain[] = {"HGET", store_key_domain(kdom, j->acct.domain),
                            "disabled"};

    round_begin(j, ST_LOOKUP);
    job_cmd(j, S_FAIL_USER, 2, fail_user);
    if (j->ip[0])
        job_cmd(j, S_FAIL_IP, 2, fail_ip);
    job_cmd(j, S_ACCOUNT, 4, account);
    job_cmd(j, S_DOMAIN, 3, domain);
    round_end(j);
}

static void
send_clear(struct job *j)
{
    char k[STORE_KEY_MAX], kacct[STORE_KEY_MAX];
    const char *del[] = {"DEL", key_user(j, k)};

    round_begin(j, ST_CLEAR);
    job_cmd(j, S_CLEAR, 2, del);
    if (j->rehashed && j->stored) {
        const char *cas[] = {
            "EVAL",    rehash_script,
            "1",       store_key_user(kacct, j->acct.domain, j->acct.local),
            j->stored, j->rehashed};

        j->rehash_set = -1;
        job_cmd(j, S_REHASH, 6, cas);
    }
    round_end(j);
}

static void
send_count(struct job *j)
{
    char kfu[STORE_KEY_MAX], kfi[STORE_KEY_MAX], ttl[32];
    const char *argv[] = {"EVAL",
                          count_script,
                          j->ip[0] ? "2" : "1",
                          key_user(j, kfu),
                          j->ip[0] ? key_ip(j, kfi) : ttl,
                          ttl};

    snprintf(ttl, sizeof(ttl), "%ld", j->au->fail_window_s);
    round_begin(j, ST_COUNT);
    job_cmd(j, S_COUNT, j->ip[0] ? 6 : 5, argv);
    round_end(j);
}

static void
on_verified(void *arg, int result, bool bad_hash, const char *rehashed)
{
    struct job *j = arg;

    j->verdict = result;
    j->bad_hash = bad_hash;
    if (rehashed && !j->answered)
        j->rehashed = xstrdup(rehashed);
    job_release(j);
}

static void
send_verify(struct job *j)
{
    int rc;

    j->stage = ST_VERIFY;
    j->holds++;
    /* Only a login that can succeed is worth upgrading. */
    j->want_rehash = j->found && !j->disabled && !j->domain_disabled &&
                     passwd_needs_rehash(j->stored) == 1;
    rc = auth_pool_submit(j->au->pool, j->creds.password, j->creds.password_len,
                          j->found ? j->stored : NULL, j->want_rehash,
                          on_verified, j);
    /* The pool has its own copies now; the stored hash stays only for the
     * compare and set of a rehash. */
    auth_creds_wipe(&j->creds);
    if (!j->want_rehash)
        wipe_str(&j->stored);
    if (rc != 0) {
        j->holds--;
        log_warn(j->trace, "auth_busy", "waiting=%d",
                 auth_pool_waiting(j->au->pool));
        job_answer(j, 454, "4.7.0", TEXT_BUSY, 0, "busy");
        job_done(j);
    }
}

static void
on_delay(loop_t *loop, void *arg)
{
    struct job *j = arg;

    (void)loop;
    j->delay = NULL;
    job_release(j);
}

/* The failure counters are up: wait, then 535. */
static void
start_delay(struct job *j)
{
    struct auth *au = j->au;
    long long n = j->fails_user > j->fails_ip ? j->fails_user : j->fails_ip;
    int64_t ms, left_ms;

    if (n < 1)
        n = 1; /* the counters could not be counted: one failure */
    ms = au->fail_delay_ms * n;
    if (ms > au->fail_delay_max_ms)
        ms = au->fail_delay_max_ms;
    /* A 535 that arrived after the deadline would be a 454 to the
     * client: send it in time. */
    left_ms = (envelope_deadline(job_env(j)) - clock_wall_us()) / 1000 -
              AUTH_DEADLINE_MARGIN_MS * 2;
    if (ms > left_ms)
        ms = left_ms > 0 ? left_ms : 0;
    j->stage = ST_DELAY;
    j->holds++;
    j->delay = loop_timer_add(actor_loop(j->a), ms, on_delay, j);
}

static const char *
failure_reason(const struct job *j)
{
    if (j->bad_hash)
        return "bad_hash";
    if (!j->found)
        return "unknown_user";
    if (j->verdict != 0)
        return "wrong_password";
    if (j->disabled)
        return "disabled";
    return "domain_disabled";
}

/* After the lookup: whether the password is one the cache saw verified
 * against the stored hash just read, for an account that may log in. A
 * miss leaves the proof for cache_remember(). */
static bool
cache_lookup(struct job *j)
{
    struct auth *au = j->au;

    if (au->cache == NULL || !j->found || j->disabled || j->domain_disabled)
        return false;
    if (auth_cache_proof_make(au->cache, j->stored, j->creds.password,
                              j->creds.password_len, &j->proof) != 0) {
        log_warn(j->trace, "auth_cache_failed", "reason=openssl");
        return false;
    }
    j->have_proof = true;
    if (!auth_cache_match(au->cache, j->acct.name, &j->proof, clock_mono_ms()))
        return false;
    j->cache_hit = true;
    auth_creds_wipe(&j->creds);
    forget_stored(j);
    return true;
}

/* A login scrypt verified goes into the cache, bound to the hash Redis
 * now holds: the new one after a rehash that took, none after one whose
 * outcome is unknown (the next login then verifies again). */
static void
cache_remember(struct job *j)
{
    struct auth *au = j->au;

    if (j->rehashed) {
        const char *how = j->failed            ? "unknown"
                          : j->rehash_set == 1 ? "stored"
                                               : "changed";

        log_info(j->trace, "auth_rehash", "user=%s outcome=%s",
                 log_q(j->acct.name), how);
        if (j->rehash_set != 1 || j->failed ||
            (j->have_proof &&
             auth_cache_proof_rebind(&j->proof, j->rehashed) != 0))
            return;
    }
    if (au->cache && j->have_proof && !j->cache_hit)
        auth_cache_put(au->cache, j->acct.name, &j->proof, clock_mono_ms());
}

/* Every callback of the stage is in, and the job has not been answered. */
static void
job_advance(struct job *j)
{
    struct auth *au = j->au;

    switch (j->stage) {
    case ST_LOOKUP:
        if (j->failed) {
            log_warn(j->trace, "auth_store_unavailable", "stage=lookup");
            job_unavailable(j, ERR_REDIS, "store_unavailable");
            job_done(j);
            return;
        }
        if (au->fail_limit > 0 && (j->fails_user >= au->fail_limit ||
                                   j->fails_ip >= au->fail_limit)) {
            forget_stored(j);
            job_answer(j, 454, "4.7.0", TEXT_LOCKED, 0,
                       j->fails_user >= au->fail_limit ? "locked_user"
                                                       : "locked_ip");
            job_done(j);
            return;
        }
        if (cache_lookup(j)) {
            send_clear(j);
            return;
        }
        send_verify(j);
        return;
    case ST_VERIFY:
        if (au->stopping || j->verdict < 0) {
            job_unavailable(j, ERR_CLOSED, "stopping");
            job_done(j);
            return;
        }
        if (j->bad_hash)
            log_warn(j->trace, "auth_bad_hash", "user=%s", log_q(j->acct.name));
        if (j->verdict == 0 && j->found && !j->disabled &&
            !j->domain_disabled) {
            send_clear(j);
            return;
        }
        send_count(j);
        return;
    case ST_CLEAR:
        if (j->failed)
            /* The password is right; a counter left behind only expires
             * later. */
            log_warn(j->trace, "auth_store_unavailable", "stage=clear");
        cache_remember(j);
        job_answer(j, 235, "2.7.0", TEXT_OK, 0, "ok");
        job_done(j);
        return;
    case ST_COUNT:
        if (j->failed)
            log_warn(j->trace, "auth_store_unavailable", "stage=count");
        if (au->stopping) {
            job_unavailable(j, ERR_CLOSED, "stopping");
            job_done(j);
            return;
        }
        start_delay(j);
        return;
    case ST_DELAY:
        job_answer(j, 535, "5.7.8", TEXT_INVALID, 0, failure_reason(j));
        job_done(j);
        return;
    }
}

/* Answers a request refused before any lookup, and logs why; user is the
 * account when one was read (never a name that failed to parse, which may
 * be a password typed in the wrong field). */
static void
refuse(actor_t *a, bus_request_t **req_p, const char *mech, const char *user,
       const char *ip, int code, const char *ecode, const char *text,
       const char *reason)
{
    const envelope_t *env = bus_request_envelope(*req_p);

    log_info(envelope_trace(env), "auth_verify",
             "user=%s ip=%s mech=%s outcome=%s reason=%s code=%d",
             log_q(or_dash(user)), log_q(or_dash(ip)), log_q(or_dash(mech)),
             code / 100 == 4 ? "tempfail" : "fail", reason, code);
    actor_fail(a, req_p, code, ecode, text);
}

/* Reads the credentials of the request's mechanism into *creds: 0, or a
 * refusal already sent. */
static int
read_creds(actor_t *a, bus_request_t **req_p, const char *mech, const char *ip,
           struct auth_creds *creds)
{
    const value_t *body = envelope_body_peek(bus_request_envelope(*req_p));
    int rc;

    if (strcmp(mech, "PLAIN") == 0) {
        const value_t *resp = value_get(body, ENV_KEY_RESPONSE);
        const char *s;
        size_t len;

        if (resp == NULL || value_kind(resp) != VAL_STR) {
            refuse(a, req_p, mech, NULL, ip, 501, "5.5.4",
                   "malformed auth request", "no_response");
            return -1;
        }
        s = value_str(resp, &len);
        rc = auth_plain_parse(s, len, creds);
    } else if (strcmp(mech, "LOGIN") == 0) {
        const value_t *u = value_get(body, ENV_KEY_USERNAME);
        const value_t *p = value_get(body, ENV_KEY_PASSWORD);
        const char *us, *ps;
        size_t ulen, plen;

        if (u == NULL || value_kind(u) != VAL_STR || p == NULL ||
            value_kind(p) != VAL_STR) {
            refuse(a, req_p, mech, NULL, ip, 501, "5.5.4",
                   "malformed auth request", "no_username_password");
            return -1;
        }
        us = value_str(u, &ulen);
        ps = value_str(p, &plen);
        rc = auth_login_take(us, ulen, ps, plen, creds);
    } else {
        refuse(a, req_p, mech, NULL, ip, 504, "5.5.4",
               "unrecognized authentication type", "mechanism");
        return -1;
    }
    if (rc == ERR_TOO_BIG) {
        /* RFC 4954 6: longer than the mechanism's buffer. */
        refuse(a, req_p, mech, NULL, ip, 500, "5.5.6",
               "authentication exchange line is too long", "too_long");
        return -1;
    }
    if (rc != 0) {
        refuse(a, req_p, mech, NULL, ip, 501, "5.5.2", "malformed response",
               "malformed");
        return -1;
    }
    return 0;
}

void
auth_on_verify(actor_t *a, bus_request_t **req_p)
{
    const envelope_t *env = bus_request_envelope(*req_p);
    const char *mech_in = envelope_get_str(env, ENV_KEY_MECHANISM);
    const char *ip = envelope_get_str(env, ENV_KEY_CLIENT_IP);
    struct auth_account acct, zacct;
    struct auth_creds creds;
    char mech[16];
    struct job *j;

    if (mech_in == NULL || strlen(mech_in) >= sizeof(mech)) {
        refuse(a, req_p, NULL, NULL, ip, 504, "5.5.4",
               "unrecognized authentication type", "mechanism");
        return;
    }
    for (size_t i = 0; i <= strlen(mech_in); i++)
        mech[i] = (char)(mech_in[i] >= 'a' && mech_in[i] <= 'z'
                             ? mech_in[i] - 'a' + 'A'
                             : mech_in[i]);
    if (ip != NULL && strlen(ip) > AUTH_IP_MAX) {
        refuse(a, req_p, mech, NULL, NULL, 501, "5.5.4",
               "malformed auth request", "bad_client_ip");
        return;
    }
    if (read_creds(a, req_p, mech, ip, &creds) != 0)
        return;
    /* samotop-admin refuses empty passwords: none can match, and saying
     * so tells nothing about any account. */
    if (creds.password_len == 0) {
        auth_creds_wipe(&creds);
        refuse(a, req_p, mech, NULL, ip, 535, "5.7.8", TEXT_INVALID,
               "empty_password");
        return;
    }
    /* A name that is no address cannot be an account. Its syntax is no
     * secret, so it is refused at once, with no lookup. */
    if (auth_account_parse(creds.authcid, &acct) != 0) {
        auth_creds_wipe(&creds);
        refuse(a, req_p, mech, NULL, ip, 535, "5.7.8", TEXT_INVALID,
               "bad_username");
        return;
    }
    /* RFC 4616 2: acting as another identity is not allowed here; the
     * same account, however spelled, is. */
    if (creds.authzid[0] != '\0' &&
        (auth_account_parse(creds.authzid, &zacct) != 0 ||
         strcmp(zacct.name, acct.name) != 0)) {
        auth_creds_wipe(&creds);
        refuse(a, req_p, mech, acct.name, ip, 535, "5.7.8", TEXT_INVALID,
               "authzid");
        return;
    }
    j = job_new(a, req_p, mech, ip, &acct, &creds);
    send_lookup(j);
}

int
auth_init(actor_t *a)
{
    const config_t *cfg = actor_config(a);
    struct auth *au = xcalloc(1, sizeof(*au));
    char why[256];
    int threads = (int)config_int(cfg, "auth.threads");
    int queue = (int)config_int(cfg, "auth.queue");
    long cache_ttl_s, cache_size;

    auth_metrics_init(actor_metrics(a));

    au->fail_limit = config_int(cfg, "auth.fail_limit");
    au->fail_window_s = config_int(cfg, "auth.fail_window_s");
    au->fail_delay_ms = config_int(cfg, "auth.fail_delay_ms");
    au->fail_delay_max_ms = config_int(cfg, "auth.fail_delay_max_ms");
    cache_ttl_s = config_int(cfg, "auth.cache_ttl_s");
    cache_size = config_int(cfg, "auth.cache_size");
    if (cache_ttl_s > 0 &&
        (au->cache = auth_cache_new(cache_size, cache_ttl_s, why,
                                    sizeof(why))) == NULL) {
        log_err(NULL, "auth_cache_failed", "reason=%s", log_q(why));
        free(au);
        return ERR_SYS;
    }
    au->pool = auth_pool_new(actor_loop(a), threads, queue, why, sizeof(why));
    if (au->pool == NULL) {
        log_err(NULL, "auth_pool_failed", "reason=%s", log_q(why));
        auth_cache_destroy(&au->cache);
        free(au);
        return ERR_SYS;
    }
    /* Connects in the background and keeps trying: while Redis is away,
     * requests get 454 and the actor stays on the bus. */
    au->store = store_async_new(actor_loop(a), cfg, AUTH_REDIS_TIMEOUT_MS);
    actor_set_data(a, au);
    log_info(NULL, "auth_config",
             "threads=%d queue=%d fail_limit=%ld fail_window_s=%ld "
             "fail_delay_ms=%ld fail_delay_max_ms=%ld cache_ttl_s=%ld "
             "cache_size=%ld",
             threads, queue, au->fail_limit, au->fail_window_s,
             au->fail_delay_ms, au->fail_delay_max_ms, cache_ttl_s, cache_size);
    return 0;
}

int
auth_ready(actor_t *a, char *why, size_t whylen)
{
    struct auth *au = actor_data(a);

    if (au && au->store && store_async_ready(au->store))
        return 0;
    snprintf(why, whylen, "no connection to redis");
    return -1;
}

void
auth_fini(actor_t *a)
{
    struct auth *au = actor_data(a);

    if (au == NULL)
        return;
    au->stopping = true;
    /* Verifications not reported come back with ERR_CLOSED (or their
     * outcome): their jobs answer 454 and go, or wait on Redis below. */
    auth_pool_destroy(&au->pool);
    /* Fails every command still out: their jobs answer and go. */
    store_async_destroy(&au->store);
    /* What is left waits on a delay timer. */
    while (au->jobs) {
        struct job *j = au->jobs;

        if (j->delay) {
            loop_timer_cancel(actor_loop(a), &j->delay);
            j->holds--;
        }
        job_unavailable(j, ERR_CLOSED, "stopping");
        if (j->holds != 0) {
            /* A broken invariant: a callback would run on freed memory. */
            log_err(j->trace, "auth_job_leak", "holds=%d stage=%d", j->holds,
                    (int)j->stage);
            abort();
        }
        job_free(j);
    }
    /* Wipes every entry and the key. */
    auth_cache_destroy(&au->cache);
    free(au);
    actor_set_data(a, NULL);
}
