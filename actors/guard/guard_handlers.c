/*
 * guard_handlers.c - guard.connect, guard.mail and guard.rcpt answered from
 * Redis without blocking the loop.
 *
 * Rate limits are decided at once from the counters in this process
 * (guard_rate.c), which share their counts through Redis in the
 * background: guard.connect, and guard.mail without a sender to check,
 * never wait for Redis, and go on while it is down.
 *
 * Anything that needs an address resolved becomes a job that owns the
 * request. A job sends one round of Redis commands at a time (pipelined on
 * the one connection), and moves on when the last reply of the round is
 * in: the answer to the resolver's question (guard_resolve.c), after which
 * the resolver is stepped again. A question about a domain fetches the
 * facts of the local part that comes next in the same round, so a
 * recipient of ours costs one round, not two. Any store failure in a round
 * (Redis down, a command timing out, an error reply) answers 451 4.3.0, never a
 * 250; a timer at the request's deadline answers 451 as well, so the caller
 * never waits for nothing. A job answered early stays alive until its last
 * Redis callback has run, since the store calls back exactly once per command.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "guard.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "store.h"
#include "store_keys.h"

/* A Redis that has not answered in this long is taken for down. */
#define GUARD_REDIS_TIMEOUT_MS 1000
/* The deadline answer goes out this long before the caller's deadline, so
 * it arrives while the caller still listens. */
#define GUARD_DEADLINE_MARGIN_MS 100

struct guard {
    store_async_t *store;
    guard_rate_t *rate;
    long conn_per_minute, msg_per_minute;
    char *postmaster; /* guard.postmaster, "" for none */
    long user_msg_per_minute, user_rcpt_per_minute;
};

enum job_kind { JOB_MAIL, JOB_RCPT };

/* The replies one round may wait for; each has its own slot. */
enum slot_id {
    S_DOM_MEMBER,
    S_DOM_HASH,
    S_USER_EXISTS,
    S_USER_DISABLED,
    S_ALIAS,
    S__COUNT
};

struct job;

/* One reply of a quota round: mailbox i's quota, or its usage. */
struct quota_slot {
    struct job *job;
    size_t i;
    bool used;
};

struct slot {
    struct job *job;
    enum slot_id id;
};

struct job {
    actor_t *a;
    struct guard *g;
    bus_request_t *req;
    int rcpt_flags; /* GUARD_RELAY etc. for the recipient's resolution */
    enum job_kind kind;
    char trace[ENVELOPE_MAX_NAME + 1];
    guard_resolve_t *res; /* while resolving an address */
    enum guard_query_kind asked;
    bool with_local; /* a domain round that fetched the local part too */
    int holds;       /* Redis callbacks to come, +1 while sending */
    bool failed, answered;
    loop_timer_t *deadline;
    struct slot slots[S__COUNT];

    /* The quota round of a resolved recipient: per mailbox of the
     * verdict, its quota and usage (0 when unset). */
    bool quota_round;
    size_t nquota;
    uint64_t *quota_limit, *quota_used;
    struct quota_slot *quota_slots;

    /* What the round's replies said. */
    bool dom_ours, dom_disabled, user_exists, user_disabled;
    char *catchall;
    char **targets;
    size_t ntargets;
};

static void job_advance(struct job *j);

static bool
is_one(const store_reply_t *r)
{
    const char *s;

    if (store_reply_type(r) == STORE_INT)
        return store_reply_int(r) == 1;
    s = store_reply_str(r, NULL);
    return s != NULL && strcmp(s, "1") == 0;
}

static void
round_reset(struct job *j)
{
    j->dom_ours = j->dom_disabled = j->user_exists = j->user_disabled = false;
    free(j->catchall);
    j->catchall = NULL;
    for (size_t i = 0; i < j->ntargets; i++)
        free(j->targets[i]);
    free(j->targets);
    j->targets = NULL;
    j->ntargets = 0;
}

static void
job_free(struct job *j)
{
    loop_timer_cancel(actor_loop(j->a), &j->deadline);
    round_reset(j);
    guard_resolve_destroy(&j->res);
    free(j->quota_limit);
    free(j->quota_used);
    free(j->quota_slots);
    free(j);
}

static void on_deadline(loop_t *loop, void *arg);

static struct job *
job_new(actor_t *a, bus_request_t **req_p, enum job_kind kind)
{
    struct job *j = xcalloc(1, sizeof(*j));
    const envelope_t *env = bus_request_envelope(*req_p);
    int64_t left_ms;

    j->a = a;
    j->g = actor_data(a);
    j->req = *req_p;
    *req_p = NULL;
    j->kind = kind;
    snprintf(j->trace, sizeof(j->trace), "%s", envelope_trace(env));
    for (int i = 0; i < S__COUNT; i++) {
        j->slots[i].job = j;
        j->slots[i].id = (enum slot_id)i;
    }
    left_ms = (envelope_deadline(env) - clock_wall_us()) / 1000 -
              GUARD_DEADLINE_MARGIN_MS;
    j->deadline = loop_timer_add(actor_loop(a), left_ms > 0 ? left_ms : 0,
                                 on_deadline, j);
    return j;
}

static const envelope_t *
job_env(const struct job *j)
{
    return bus_request_envelope(j->req);
}

/* Sends the reply (taken) unless the job was answered already. */
static void
job_reply(struct job *j, envelope_t **reply_p)
{
    loop_timer_cancel(actor_loop(j->a), &j->deadline);
    if (j->answered) {
        envelope_destroy(reply_p);
        return;
    }
    j->answered = true;
    guard_metrics_decision(job_env(j), *reply_p);
    actor_reply(j->a, &j->req, reply_p);
}

static void
job_answer(struct job *j, int code, const char *ecode, const char *text)
{
    envelope_t *reply;

    if (j->answered)
        return;
    reply = envelope_new_reply(job_env(j), code, ecode, text);
    job_reply(j, &reply);
}

/* Answers 451 4.3.0 and tells the caller which err.h failure it was. */
static void
job_answer_unavailable(struct job *j, int err, const char *text)
{
    envelope_t *reply;

    if (j->answered)
        return;
    reply = envelope_new_reply(job_env(j), 451, "4.3.0", text);
    value_set_str(envelope_body(reply), ENV_KEY_ERROR, err_name(err));
    job_reply(j, &reply);
}

/* Ends a job whose answer is out and whose callbacks have all run. */
static void
job_done(struct job *j)
{
    if (j->holds > 0)
        return;
    job_free(j);
}

static void
on_deadline(loop_t *loop, void *arg)
{
    struct job *j = arg;

    (void)loop;
    j->deadline = NULL;
    log_warn(j->trace, "guard_deadline", "type=%s waiting=%d",
             envelope_type(job_env(j)), j->holds);
    job_answer_unavailable(j, ERR_TIMEOUT, "policy store unavailable");
    job_done(j);
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
take_reply(struct job *j, enum slot_id id, const store_reply_t *r)
{
    switch (id) {
    case S_DOM_MEMBER:
        j->dom_ours = is_one(r);
        break;
    case S_DOM_HASH: {
        const store_reply_t *c = store_reply_at(r, 0);
        const store_reply_t *d = store_reply_at(r, 1);
        const char *s = c ? store_reply_str(c, NULL) : NULL;

        if (s != NULL && *s != '\0')
            j->catchall = xstrdup(s);
        j->dom_disabled = d != NULL && is_one(d);
        break;
    }
    case S_USER_EXISTS:
        j->user_exists = is_one(r);
        break;
    case S_USER_DISABLED:
        j->user_disabled = is_one(r);
        break;
    case S_ALIAS: {
        size_t n = store_reply_count(r);

        j->targets = xcalloc(n ? n : 1, sizeof(*j->targets));
        for (size_t i = 0; i < n; i++) {
            const char *s = store_reply_str(store_reply_at(r, i), NULL);

            if (s != NULL)
                j->targets[j->ntargets++] = xstrdup(s);
        }
        break;
    }
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
        log_warn(j->trace, "guard_redis_error", "reply=%s",
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
    int i;

    if (j->failed)
        return;
    for (i = 0; i < argc; i++)
        if (argv[i] == NULL) { /* a key that did not fit */
            j->failed = true;
            return;
        }
    j->holds++;
    if (store_async_cmd(j->g->store, on_store, &j->slots[id], argc, argv,
                        NULL) != 0) {
        j->holds--;
        j->failed = true;
    }
}

/* Starts a round: commands go out between round_begin() and round_end(),
 * and job_advance() runs once every reply is in. */
static void
round_begin(struct job *j)
{
    round_reset(j);
    j->holds++;
}

static void
round_end(struct job *j)
{
    job_release(j);
}

/* Sends the round for the resolver's question: a domain's facts, a local
 * part's, or both (the local part's keys are known from the address; when
 * the domain is not ours, their answers are dropped). */
static void
send_query(struct job *j, const struct guard_query *q)
{
    char k1[STORE_KEY_MAX], k2[STORE_KEY_MAX];

    j->asked = q->kind;
    j->with_local = q->kind == GUARD_Q_DOMAIN && q->local != NULL;
    round_begin(j);
    if (q->kind == GUARD_Q_DOMAIN) {
        const char *member[] = {"SISMEMBER", store_key_domains(k1), q->domain};
        const char *hash[] = {"HMGET", store_key_domain(k2, q->domain),
                              "catchall", "disabled"};

        job_cmd(j, S_DOM_MEMBER, 3, member);
        job_cmd(j, S_DOM_HASH, 4, hash);
    }
    if (q->kind == GUARD_Q_LOCAL || j->with_local) {
        const char *user = store_key_user(k1, q->domain, q->local);
        const char *exists[] = {"EXISTS", user};
        const char *disabled[] = {"HGET", user, "disabled"};
        const char *alias[] = {"SMEMBERS",
                               store_key_alias(k2, q->domain, q->local)};

        job_cmd(j, S_USER_EXISTS, 2, exists);
        job_cmd(j, S_USER_DISABLED, 3, disabled);
        job_cmd(j, S_ALIAS, 2, alias);
    }
    round_end(j);
}

static void
add_array(value_t *body, const char *key, const char *const *v, size_t n)
{
    value_t *arr = value_new_array();

    for (size_t i = 0; i < n; i++) {
        value_t *s = value_new_str(v[i]);

        value_push_take(arr, &s);
    }
    value_set_take(body, key, &arr);
}

/* The normalised "user" of an authenticated session, or false when the
 * request has none. */
static bool
session_user(const envelope_t *env, char *out, size_t outlen)
{
    const char *user = envelope_get_str(env, ENV_KEY_USER);

    if (user == NULL || *user == '\0')
        return false;
    snprintf(out, outlen, "%s", user);
    guard_lower(out);
    return true;
}

static void
rcpt_verdict(struct job *j)
{
    const struct guard_verdict *v = guard_resolve_verdict(j->res);
    const envelope_t *env = job_env(j);
    envelope_t *reply = envelope_new_reply(env, v->code, v->ecode, v->text);
    value_t *body = envelope_body(reply);

    if (v->rcpt)
        value_set_str(body, ENV_KEY_RCPT, v->rcpt);
    if (v->code < 400) {
        add_array(body, ENV_KEY_MAILBOXES, v->mailboxes, v->nmailboxes);
        add_array(body, ENV_KEY_FORWARD, v->forward, v->nforward);
    }
    log_info(j->trace, "guard_rcpt",
             "rcpt=%s role=%s code=%d mailboxes=%zu forward=%zu queries=%d",
             log_q(envelope_get_str(env, ENV_KEY_RCPT)),
             log_q(envelope_get_str(env, ENV_KEY_ROLE)), v->code, v->nmailboxes,
             v->nforward, guard_resolve_queries(j->res));
    job_reply(j, &reply);
}

/* Sender ownership: the sender resolves (without catch-all) to the
 * session's own account. */
static void
mail_verdict(struct job *j)
{
    const struct guard_verdict *v = guard_resolve_verdict(j->res);
    const envelope_t *env = job_env(j);
    char user[GUARD_ADDR_MAX + 1];
    bool owned = false;

    session_user(env, user, sizeof(user));
    for (size_t i = 0; v->code == 250 && i < v->nmailboxes; i++)
        owned |= strcmp(v->mailboxes[i], user) == 0;
    log_info(j->trace, "guard_mail", "mail_from=%s user=%s owned=%d",
             log_q(envelope_get_str(env, ENV_KEY_MAIL_FROM)), log_q(user),
             (int)owned);
    if (owned)
        job_answer(j, 250, "2.1.0", "sender ok");
    else
        job_answer(j, 553, "5.7.1", "sender address not owned by user");
}

static uint64_t
reply_u64(const store_reply_t *r)
{
    const char *s;
    long long v = 0;

    if (store_reply_type(r) == STORE_INT)
        v = store_reply_int(r);
    else if ((s = store_reply_str(r, NULL)) != NULL)
        v = strtoll(s, NULL, 10);
    return v > 0 ? (uint64_t)v : 0;
}

static void
on_quota_reply(void *arg, int err, const store_reply_t *reply)
{
    struct quota_slot *s = arg;
    struct job *j = s->job;

    if (err != 0 || store_reply_type(reply) == STORE_ERROR)
        j->failed = true;
    else if (s->used)
        j->quota_used[s->i] = reply_u64(reply);
    else
        j->quota_limit[s->i] = reply_u64(reply);
    job_release(j);
}

/* Asks for the quota and usage of each mailbox the recipient reaches
 * (an alias's targets too); job_advance() weighs them. */
static void
send_quota(struct job *j)
{
    const struct guard_verdict *v = guard_resolve_verdict(j->res);
    char k1[STORE_KEY_MAX], k2[STORE_KEY_MAX];
    char local[SMTP_LOCAL_MAX + 1];

    j->quota_round = true;
    j->nquota = v->nmailboxes;
    j->quota_limit = xcalloc(j->nquota, sizeof(*j->quota_limit));
    j->quota_used = xcalloc(j->nquota, sizeof(*j->quota_used));
    j->quota_slots = xcalloc(2 * j->nquota, sizeof(*j->quota_slots));
    j->holds++;
    for (size_t i = 0; i < j->nquota && !j->failed; i++) {
        const char *at = strrchr(v->mailboxes[i], '@');
        size_t llen = at ? (size_t)(at - v->mailboxes[i]) : 0;

        if (at == NULL || llen > SMTP_LOCAL_MAX) {
            j->failed = true;
            break;
        }
        memcpy(local, v->mailboxes[i], llen);
        local[llen] = '\0';
        {
            const char *limit[] = {"HGET", store_key_user(k1, at + 1, local),
                                   "quota"};
            const char *used[] = {"HGET", store_key_usage(k2, at + 1), local};

            if (limit[1] == NULL || used[1] == NULL) {
                j->failed = true;
                break;
            }
            j->quota_slots[2 * i] = (struct quota_slot){j, i, false};
            j->quota_slots[2 * i + 1] = (struct quota_slot){j, i, true};
            j->holds += 2;
            if (store_async_cmd(j->g->store, on_quota_reply,
                                &j->quota_slots[2 * i], 3, limit, NULL) != 0) {
                j->holds -= 2;
                j->failed = true;
                break;
            }
            if (store_async_cmd(j->g->store, on_quota_reply,
                                &j->quota_slots[2 * i + 1], 3, used,
                                NULL) != 0) {
                j->holds--;
                j->failed = true;
                break;
            }
        }
    }
    job_release(j);
}

/* The quota round is in. RFC 1870 section 6.1 lets a server refuse at RCPT
 * a message whose declared SIZE it cannot take now, with 452; without a
 * declared size, only an account already at its quota is refused. The
 * status is RFC 3463's X.2.2, mailbox full. Any account over quota refuses
 * the recipient: the listener answers DATA for a recipient as a whole, so
 * taking one whose copy must fail would defer (and on retry duplicate)
 * the others' copies. */
static void
quota_verdict(struct job *j)
{
    const struct guard_verdict *v = guard_resolve_verdict(j->res);
    int64_t size = envelope_get_int(job_env(j), ENV_KEY_SIZE, -1);

    for (size_t i = 0; i < j->nquota; i++) {
        uint64_t limit = j->quota_limit[i], used = j->quota_used[i];
        bool full = limit > 0 &&
                    (size > 0 ? used > limit || (uint64_t)size > limit - used
                              : used >= limit);

        if (!full)
            continue;
        log_info(j->trace, "guard_rcpt_over_quota",
                 "rcpt=%s mailbox=%s used=%llu quota=%llu size=%lld",
                 log_q(envelope_get_str(job_env(j), ENV_KEY_RCPT)),
                 log_q(v->mailboxes[i]), (unsigned long long)used,
                 (unsigned long long)limit, (long long)size);
        job_answer(j, 452, "4.2.2", "Mailbox full");
        job_done(j);
        return;
    }
    rcpt_verdict(j);
    job_done(j);
}

/* Steps the resolver until it asks (a round goes out) or decides. */
static void
resolve(struct job *j)
{
    struct guard_query q;

    if (guard_resolve_step(j->res, &q) != GUARD_Q_DONE) {
        send_query(j, &q);
        return;
    }
    if (j->kind == JOB_RCPT && guard_resolve_verdict(j->res)->code == 250 &&
        guard_resolve_verdict(j->res)->nmailboxes > 0) {
        send_quota(j);
        return;
    }
    if (j->kind == JOB_RCPT)
        rcpt_verdict(j);
    else
        mail_verdict(j);
    job_done(j);
}

/* The part of guard.mail after the rate limit. */
static void
mail_check_sender(struct job *j)
{
    const envelope_t *env = job_env(j);
    const char *from = envelope_get_str(env, ENV_KEY_MAIL_FROM);
    char user[GUARD_ADDR_MAX + 1];
    struct guard_addr fa, ua;

    if (!session_user(env, user, sizeof(user)) || from == NULL ||
        *from == '\0') {
        /* Unauthenticated, or the null sender <>, which owns nothing. */
        job_answer(j, 250, "2.1.0", "sender ok");
        job_done(j);
        return;
    }
    if (guard_addr_parse(from, &fa) == 0 && guard_addr_parse(user, &ua) == 0) {
        guard_lower(fa.local);
        guard_lower(fa.domain);
        if (strcmp(fa.local, ua.local) == 0 &&
            strcmp(fa.domain, ua.domain) == 0) {
            job_answer(j, 250, "2.1.0", "sender ok");
            job_done(j);
            return;
        }
    }
    j->res = guard_resolve_new(from, GUARD_RELAY | GUARD_NO_CATCHALL, NULL,
                               j->trace);
    resolve(j);
}

/* Counts one event of kind for subject (a client address or a user) in
 * this minute. Returns NULL while the count is within limit, else the 451
 * reply to send (caller owns it). */
static envelope_t *
rate_check(struct guard *g, const envelope_t *env, const char *kind,
           const char *subject, const char *what, long limit)
{
    long long n = guard_rate_hit(g->rate, kind, subject);
    const char *ip = envelope_get_str(env, ENV_KEY_CLIENT_IP);
    char text[GUARD_ADDR_MAX + 64], user[GUARD_ADDR_MAX + 1];
    const char *who;

    if (n <= limit)
        return NULL;
    who = session_user(env, user, sizeof(user)) ? user : ip;
    snprintf(text, sizeof(text), "too many %s from %s, try later", what, who);
    log_warn(envelope_trace(env), "guard_rate_limited",
             "kind=%s ip=%s count=%lld limit=%ld", what, log_q(ip), n, limit);
    return envelope_new_reply(env, 451, "4.7.1", text);
}

/* Answers a job with the reply of rate_check(), taken. */
static void
job_rate_refused(struct job *j, envelope_t **reply_p)
{
    job_reply(j, reply_p);
    job_done(j);
}

/* Every reply of the round is in, and the job has not been answered. */
static void
job_advance(struct job *j)
{
    if (j->failed) {
        log_warn(j->trace, "guard_store_unavailable", "type=%s",
                 envelope_type(job_env(j)));
        job_answer_unavailable(j, ERR_REDIS, "policy store unavailable");
        job_done(j);
        return;
    }
    if (j->quota_round) {
        quota_verdict(j);
        return;
    }
    /* Every round asks the resolver's question. */
    if (j->asked == GUARD_Q_DOMAIN) {
        struct guard_domain_info d = {j->dom_ours, j->dom_disabled,
                                      j->catchall};

        guard_resolve_domain_answer(j->res, &d);
    }
    if (j->asked == GUARD_Q_LOCAL || j->with_local) {
        struct guard_local_info l = {j->user_exists, j->user_disabled,
                                     (const char *const *)j->targets,
                                     j->ntargets};

        guard_resolve_local_answer(j->res, &l);
    }
    j->asked = GUARD_Q_DONE;
    j->with_local = false;
    resolve(j);
}

int
guard_init(actor_t *a)
{
    const config_t *cfg = actor_config(a);
    struct guard *g = xcalloc(1, sizeof(*g));
    struct guard_addr pa;
    char why[600];
    int flush_ms;

    g->conn_per_minute = config_int(cfg, "guard.conn_per_minute");
    g->msg_per_minute = config_int(cfg, "guard.msg_per_minute");
    g->user_msg_per_minute = config_int(cfg, "guard.user_msg_per_minute");
    g->user_rcpt_per_minute = config_int(cfg, "guard.user_rcpt_per_minute");
    g->postmaster = xstrdup(config_str(cfg, "guard.postmaster"));
    if (*g->postmaster && guard_addr_parse(g->postmaster, &pa) != 0) {
        snprintf(why, sizeof(why),
                 "guard.postmaster: \"%s\" is not an "
                 "address (local@domain)",
                 g->postmaster);
        free(g->postmaster);
        free(g);
        log_err(NULL, "guard_config", "reason=%s", log_q(why));
        return ERR_CONFIG;
    }
    if (*g->postmaster == '\0')
        log_info(NULL, "guard_config",
                 "reason=\"guard.postmaster is not set: mail to "
                 "<Postmaster> and to postmaster@ a domain without that "
                 "name is refused (RFC 5321 4.5.1 wants it taken)\"");
    guard_metrics_init(actor_metrics(a));
    /* Connects in the background and keeps trying: while Redis is away,
     * lookups get 451 and the actor stays on the bus. */
    g->store = store_async_new(actor_loop(a), cfg, GUARD_REDIS_TIMEOUT_MS);
    flush_ms = (int)config_int(cfg, "guard.rate_flush_ms");
    g->rate = guard_rate_new(actor_loop(a), g->store, flush_ms);
    actor_set_data(a, g);
    log_info(NULL, "guard_config",
             "conn_per_minute=%ld msg_per_minute=%ld rate_flush_ms=%d",
             g->conn_per_minute, g->msg_per_minute, flush_ms);
    return 0;
}

int
guard_ready(actor_t *a, char *why, size_t whylen)
{
    struct guard *g = actor_data(a);

    if (g && g->store && store_async_ready(g->store))
        return 0;
    snprintf(why, whylen, "no connection to redis");
    return -1;
}

void
guard_fini(actor_t *a)
{
    struct guard *g = actor_data(a);

    if (g == NULL)
        return;
    /* Fails every command still out: their jobs answer 451 and go, the
     * rate flush out puts its events back. */
    store_async_destroy(&g->store);
    guard_rate_destroy(&g->rate);
    free(g->postmaster);
    free(g);
    actor_set_data(a, NULL);
}

/* Refuses a request that lacks a field every guard request needs. */
static bool
has_fields(actor_t *a, bus_request_t **req_p, const char *const *keys)
{
    const envelope_t *env = bus_request_envelope(*req_p);

    for (; *keys; keys++)
        if (envelope_get_str(env, *keys) == NULL) {
            log_warn(envelope_trace(env), "guard_bad_request",
                     "type=%s missing=%s", envelope_type(env), *keys);
            actor_fail(a, req_p, 501, "5.5.4", "malformed guard request");
            return false;
        }
    return true;
}

void
guard_on_connect(actor_t *a, bus_request_t **req_p)
{
    static const char *const need[] = {ENV_KEY_CLIENT_IP, ENV_KEY_ROLE, NULL};
    struct guard *g = actor_data(a);
    const envelope_t *env;
    envelope_t *reply = NULL;

    if (!has_fields(a, req_p, need))
        return;
    env = bus_request_envelope(*req_p);
    if (g->conn_per_minute > 0)
        reply =
            rate_check(g, env, "conn", envelope_get_str(env, ENV_KEY_CLIENT_IP),
                       "connections", g->conn_per_minute);
    if (reply == NULL)
        reply = envelope_new_reply(env, 250, "2.0.0", "ok");
    guard_metrics_decision(env, reply);
    actor_reply(a, req_p, &reply);
}

void
guard_on_mail(actor_t *a, bus_request_t **req_p)
{
    static const char *const need[] = {ENV_KEY_CLIENT_IP, ENV_KEY_ROLE,
                                       ENV_KEY_MAIL_FROM, NULL};
    struct guard *g = actor_data(a);
    char user[GUARD_ADDR_MAX + 1];
    envelope_t *reply = NULL;
    struct job *j;

    if (!has_fields(a, req_p, need))
        return;
    j = job_new(a, req_p, JOB_MAIL);
    /* An authenticated session is limited per user (it may come from any
     * address), any other per client address. */
    if (session_user(job_env(j), user, sizeof(user))) {
        if (g->user_msg_per_minute > 0)
            reply = rate_check(g, job_env(j), "umsg", user, "messages",
                               g->user_msg_per_minute);
    } else if (g->msg_per_minute > 0) {
        reply = rate_check(g, job_env(j), "msg",
                           envelope_get_str(job_env(j), ENV_KEY_CLIENT_IP),
                           "messages", g->msg_per_minute);
    }
    if (reply != NULL)
        job_rate_refused(j, &reply);
    else
        mail_check_sender(j);
}

/* Resolves the recipient. */
static void
rcpt_start(struct job *j)
{
    j->res = guard_resolve_new(envelope_get_str(job_env(j), ENV_KEY_RCPT),
                               j->rcpt_flags, j->g->postmaster, j->trace);
    resolve(j);
}

void
guard_on_rcpt(actor_t *a, bus_request_t **req_p)
{
    static const char *const need[] = {ENV_KEY_CLIENT_IP, ENV_KEY_ROLE,
                                       ENV_KEY_MAIL_FROM, ENV_KEY_RCPT, NULL};
    struct guard *g = actor_data(a);
    const envelope_t *env;
    const char *role;
    char user[GUARD_ADDR_MAX + 1];
    struct job *j;
    int flags = 0;

    if (!has_fields(a, req_p, need))
        return;
    env = bus_request_envelope(*req_p);
    role = envelope_get_str(env, ENV_KEY_ROLE);
    /* Only an authenticated submission session may relay; any other role,
     * known or not, is treated as inbound. */
    if ((strcmp(role, "msa") == 0 || strcmp(role, "smtps") == 0) &&
        session_user(env, user, sizeof(user)))
        flags |= GUARD_RELAY;
    j = job_new(a, req_p, JOB_RCPT);
    j->rcpt_flags = flags;
    if ((flags & GUARD_RELAY) && g->user_rcpt_per_minute > 0) {
        envelope_t *reply = rate_check(g, job_env(j), "urcpt", user,
                                       "recipients", g->user_rcpt_per_minute);

        if (reply != NULL) {
            job_rate_refused(j, &reply);
            return;
        }
    }
    rcpt_start(j);
}
