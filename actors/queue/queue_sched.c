/*
 * queue_sched.c - the scheduler: claim due messages, deliver them over the
 * bus, write back what happened.
 *
 * A timer (queue.scan_ms), and a kick after each submit, runs the claim
 * script: due ids whose lease this process can take, at most as many as
 * it has room for (queue.max_inflight). Each claimed message becomes a
 * job that
 *   1. loads the message (a script that first checks the lease),
 *   2. sends one mailbox.deliver for its due local recipients and one
 *      relay.send per destination domain of its due remote ones, each
 *      with a deadline; a bus error counts as a temporary failure,
 *   3. works out each recipient's new state (delivered, failed, or
 *      pending with a backoff, or failed with 4.4.7 once expired), and the
 *      DSNs the senders asked for,
 *   4. writes all of it, DSNs enqueued as new messages included, with the
 *      update script, which runs only while the lease is still ours, and
 *      deletes the message once every recipient is final.
 * The lease (and the due score, so others skip the message) is renewed
 * every third of queue.lease_ms while the job lives. A job whose lease is
 * lost writes nothing: the message is then someone else's.
 *
 * Delivery is at least once: a process that dies after a delivery and
 * before its update leaves the message to be delivered again.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/shard.h"
#include "lib/xalloc.h"
#include "store_keys.h"

#include "queue.h"

/* Retries of an update Redis did not take, a second apart, before the
 * job gives up and leaves the message to its lease's expiry. */
#define COMMIT_TRIES 8
#define COMMIT_RETRY_MS 1000
/* KEYS[1] due; ARGV: now, owner, lease_ms, limit, lease key prefix. A
 * claimed id is scored at now + lease, so that others skip it until the
 * lease could have expired. It looks at 16 ids more than it wants, to
 * step over ones an admin made due while they are leased. */
static struct queue_script claim_script = {
    .name = "claim",
    .text =
        "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], "
        "'LIMIT', 0, tonumber(ARGV[4]) + 16) "
        "local got = {} "
        "local later = tonumber(ARGV[1]) + tonumber(ARGV[3]) "
        "for _, id in ipairs(ids) do "
        "  if #got >= tonumber(ARGV[4]) then break end "
        "  if redis.call('SET', ARGV[5] .. id, ARGV[2], 'NX', 'PX', ARGV[3]) "
        "  then "
        "    redis.call('ZADD', KEYS[1], later, id) "
        "    got[#got + 1] = id "
        "  end "
        "end "
        "return got"};

/* KEYS: lease, msg, body, rcpts; ARGV: owner. */
static struct queue_script load_script = {
    .name = "load",
    .text = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end "
            "return {1, redis.call('HGETALL', KEYS[2]), "
            "redis.call('GET', KEYS[3]), redis.call('HGETALL', KEYS[4])}"};

/* KEYS: lease, due; ARGV: owner, lease_ms, until, id. */
static struct queue_script renew_script = {
    .name = "renew",
    .text = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
            "redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
            "redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[4]) "
            "return 1"};

/* KEYS: lease; ARGV: owner, then groups "N CMD ARG...". XXX: the commands
 * name keys not passed in KEYS; all of them share the {q} slot, which is
 * what Redis Cluster needs in practice. */
static struct queue_script update_script = {
    .name = "update",
    .text = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
            "local i = 2 "
            "while i <= #ARGV do "
            "  local n = tonumber(ARGV[i]) "
            "  redis.call(unpack(ARGV, i + 1, i + n)) "
            "  i = i + n + 1 "
            "end "
            "return 1"};

struct queue_script *const queue_sched_scripts[] = {
    &claim_script, &load_script, &renew_script, &update_script, NULL};

struct queue_job;

/* One bus call of a job: its recipients, in request order. */
struct call {
    struct queue_job *j;
    bool local;
    size_t *idx;
    size_t n;
};

struct queue_job {
    queue_t *q;
    struct queue_job *prev, *next;
    char id[QUEUE_ID_MAX];
    char trace[ENVELOPE_MAX_NAME + 1];
    struct queue_msg m;
    bool loaded, dropped, lost;
    int calls_out, store_out;
    loop_timer_t *renew, *retry;
    int commit_tries;
    /* The sender lookup before a DSN: SISMEMBER domains, EXISTS user. */
    bool dom_ours, user_exists, lookup_failed;
    int lookup_out;
    /* DSNs to enqueue, and the update that writes everything. */
    struct queue_msg dsns[3];
    int ndsns;
    struct queue_argv update;
    bool done; /* every recipient is final: the message goes */
    enum { PH_LOAD, PH_SEND, PH_LOOKUP, PH_COMMIT } phase;
};

static void job_plan(struct queue_job *j);
static void job_finish(struct queue_job *j);
static void job_commit(struct queue_job *j);
static void lookup_sender(struct queue_job *j);
static void step_failed(struct queue_job *j, const char *why);
static void on_scan(loop_t *loop, void *arg);

static uint32_t
rnd32(void)
{
    uint32_t r = 0;

    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint32_t)queue_now_ms();
    return r;
}

/* ------------------------------------------------------------------
 * Jobs
 */

static void
job_free(struct queue_job *j)
{
    queue_t *q = j->q;
    loop_t *loop = actor_loop(q->a);

    loop_timer_cancel(loop, &j->renew);
    loop_timer_cancel(loop, &j->retry);
    if (j->prev)
        j->prev->next = j->next;
    else
        q->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    queue_msg_clear(&j->m);
    for (int i = 0; i < j->ndsns; i++)
        queue_msg_clear(&j->dsns[i]);
    queue_argv_free(&j->update);
    free(j);
    q->inflight--;
    if (!q->closing && q->inflight + 1 == q->conf.max_inflight)
        queue_kick(q); /* room again */
    queue_maybe_free(q);
}

/* Ends a job once nothing of it is outstanding. */
static void
job_drop(struct queue_job *j)
{
    loop_t *loop = actor_loop(j->q->a);

    j->dropped = true;
    loop_timer_cancel(loop, &j->renew);
    loop_timer_cancel(loop, &j->retry);
    if (j->calls_out == 0 && j->store_out == 0)
        job_free(j);
}

static bool
job_cmd(struct queue_job *j, queue_store_fn *fn, int argc,
        const char *const *argv, const size_t *lens)
{
    if (queue_cmd(j->q, fn, j, argc, argv, lens) != 0)
        return false;
    j->store_out++;
    return true;
}

static bool
job_script(struct queue_job *j, const struct queue_script *script,
           queue_store_fn *fn, int argc, const char *const *argv)
{
    if (queue_script_cmd(j->q, script, fn, j, argc, argv, NULL) != 0)
        return false;
    j->store_out++;
    return true;
}

/* Takes a store callback back; false when the job is to go. */
static bool
job_store_back(struct queue_job *j)
{
    j->store_out--;
    if (j->dropped) {
        job_drop(j);
        return false;
    }
    return true;
}

static void
on_renewed(void *arg, int err, const store_reply_t *r)
{
    struct queue_job *j = arg;

    if (!job_store_back(j))
        return;
    if (err == 0 && store_reply_type(r) == STORE_INT &&
        store_reply_int(r) == 0 && !j->lost) {
        j->lost = true;
        log_warn(j->trace, "queue_lease_lost", "id=%s", j->id);
    }
}

static void
on_renew(loop_t *loop, void *arg)
{
    struct queue_job *j = arg;
    queue_t *q = j->q;
    char klease[STORE_KEY_MAX], kdue[STORE_KEY_MAX], ms[24], until[24];
    const char *argv[] = {"2",
                          store_key_queue_lease(klease, j->id),
                          store_key_queue_due(kdue),
                          q->owner,
                          ms,
                          until,
                          j->id};

    j->renew = loop_timer_add(loop, q->conf.lease_ms / 3, on_renew, j);
    snprintf(ms, sizeof(ms), "%ld", q->conf.lease_ms);
    snprintf(until, sizeof(until), "%lld",
             (long long)(queue_now_ms() + q->conf.lease_ms));
    job_script(j, &renew_script, on_renewed, 7, argv);
}

static void
on_loaded(void *arg, int err, const store_reply_t *r)
{
    struct queue_job *j = arg;
    char why[256];
    int rc;

    if (!job_store_back(j))
        return;
    if (err != 0 || store_reply_type(r) != STORE_ARRAY ||
        store_reply_count(r) < 1) {
        log_warn(j->trace, "queue_load_failed", "id=%s error=%s", j->id,
                 err ? err_name(err) : log_q(store_reply_str(r, NULL)));
        job_drop(j); /* the lease expires, and the message is due again */
        return;
    }
    if (store_reply_int(store_reply_at(r, 0)) != 1) {
        log_warn(j->trace, "queue_lease_lost", "id=%s at=load", j->id);
        job_drop(j);
        return;
    }
    rc = queue_msg_parse(&j->m, j->id, store_reply_at(r, 1),
                         store_reply_at(r, 2), store_reply_at(r, 3), why,
                         sizeof(why));
    if (rc == 0) {
        j->loaded = true;
        if (j->m.trace && *j->m.trace)
            snprintf(j->trace, sizeof(j->trace), "%s", j->m.trace);
        job_plan(j);
        return;
    }
    /* Gone (an admin deleted it), or broken: take it off the schedule, or
     * put it far off, where an admin can look at it. */
    {
        char key[STORE_KEY_MAX];
        struct queue_argv *a = &j->update;
        int at = queue_argv_begin(a);

        queue_argv_add(a, rc == ERR_NOTFOUND ? "ZREM" : "ZADD");
        queue_argv_add(a, store_key_queue_due(key));
        if (rc != ERR_NOTFOUND) {
            log_err(j->trace, "queue_broken_message", "id=%s reason=%s", j->id,
                    log_q(why));
            queue_argv_addf(
                a, "%lld",
                (long long)(queue_now_ms() +
                            (int64_t)j->q->conf.retry_max_s * 1000));
        }
        queue_argv_add(a, j->id);
        queue_argv_end(a, at);
        at = queue_argv_begin(a);
        queue_argv_add(a, "DEL");
        queue_argv_add(a, store_key_queue_lease(key, j->id));
        queue_argv_end(a, at);
    }
    j->phase = PH_COMMIT;
    job_commit(j);
}

static struct queue_job *
job_new(queue_t *q, const char *id)
{
    struct queue_job *j = xcalloc(1, sizeof(*j));
    char klease[STORE_KEY_MAX], kmsg[STORE_KEY_MAX], kbody[STORE_KEY_MAX],
        krcpts[STORE_KEY_MAX];
    const char *argv[] = {"4",
                          store_key_queue_lease(klease, id),
                          store_key_queue_msg(kmsg, id),
                          store_key_queue_body(kbody, id),
                          store_key_queue_rcpts(krcpts, id),
                          q->owner};

    j->q = q;
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->trace, sizeof(j->trace), "%s", id);
    queue_argv_init(&j->update);
    j->next = q->jobs;
    if (q->jobs)
        q->jobs->prev = j;
    q->jobs = j;
    q->inflight++;
    j->renew =
        loop_timer_add(actor_loop(q->a), q->conf.lease_ms / 3, on_renew, j);
    if (!job_script(j, &load_script, on_loaded, 6, argv))
        job_drop(j);
    return j;
}

/* ------------------------------------------------------------------
 * Delivery
 */

static const char *
domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');

    return at ? at + 1 : "";
}

/* Records one recipient's outcome of this round. */
static void
rcpt_result(struct queue_job *j, struct queue_rcpt *r, int code,
            const char *ecode, const char *text, const char *mx)
{
    if (code < 200 || code > 599 || (code >= 300 && code < 400)) {
        code = 451;
        ecode = "4.3.0";
    }
    r->code = code;
    free(r->ecode);
    r->ecode = xstrdup(ecode && *ecode ? ecode
                       : code < 300    ? "2.0.0"
                       : code < 500    ? "4.0.0"
                                       : "5.0.0");
    free(r->text);
    r->text = xstrdup(text ? text : "");
    free(r->mx);
    r->mx = mx && *mx ? xstrdup(mx) : NULL;
    r->attempts++;
    r->last_ms = queue_now_ms();
    r->tried = true;
    r->dirty = true;
    log_info(j->trace, "queue_attempt",
             "id=%s to=%s code=%d ecode=%s "
             "text=%s mx=%s attempt=%d",
             j->id, log_q(r->to), code, r->ecode, log_q(r->text),
             log_q(mx ? mx : "-"), r->attempts);
}

/* Whether reply is the skeleton's refusal of a request it cannot take. */
static bool
proto_error(const envelope_t *reply)
{
    const char *e = envelope_get_str(reply, ENV_KEY_ERROR);

    return e && (strcmp(e, err_name(ERR_PROTO)) == 0 ||
                 strcmp(e, err_name(ERR_VERSION)) == 0);
}

static void
on_call(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct call *c = arg;
    struct queue_job *j = c->j;

    j->calls_out--;
    if (!j->dropped) {
        const value_t *body = reply ? envelope_body_peek(reply) : NULL;
        const value_t *results = body ? value_get(body, ENV_KEY_RESULTS) : NULL;
        const char *who = c->local ? "mailbox" : "relay";
        char why[300];
        bool per = results && value_kind(results) == VAL_ARRAY &&
                   value_count(results) == c->n;

        for (size_t i = 0; i < c->n; i++) {
            struct queue_rcpt *r = &j->m.rcpts[c->idx[i]];
            const value_t *item = per ? value_at(results, i) : NULL;
            int code = reply ? envelope_code(reply) : 0;

            if (err != 0) {
                snprintf(why, sizeof(why), "%s: %s (%s)", who, err_str(err),
                         text);
                rcpt_result(j, r, 451, "4.3.0", why, NULL);
            } else if (item && value_kind(item) == VAL_MAP) {
                rcpt_result(j, r, (int)value_get_int(item, ENV_KEY_CODE, 0),
                            value_get_str(item, ENV_KEY_ECODE),
                            value_get_str(item, ENV_KEY_TEXT),
                            value_get_str(item, ENV_KEY_MX));
            } else if (code >= 200 && code < 300) {
                /* A success must say what became of each recipient. */
                snprintf(why, sizeof(why), "%s: reply without results", who);
                rcpt_result(j, r, 451, "4.3.0", why, NULL);
            } else if (proto_error(reply)) {
                /* The worker does not speak this request (an older or
                 * newer version during an upgrade): no verdict on the
                 * recipient, so no reason to bounce. */
                snprintf(why, sizeof(why), "%s: %s", who,
                         envelope_get_str(reply, ENV_KEY_TEXT));
                rcpt_result(j, r, 451, "4.3.0", why, NULL);
            } else {
                rcpt_result(j, r, code, envelope_get_str(reply, ENV_KEY_ECODE),
                            envelope_get_str(reply, ENV_KEY_TEXT), NULL);
            }
        }
    }
    free(c->idx);
    free(c);
    if (j->dropped) {
        job_drop(j);
        return;
    }
    if (j->calls_out == 0)
        job_finish(j);
}

static void
add_common(value_t *body, const struct queue_msg *m)
{
    value_t *v = value_new_bin(m->body, m->body_len);

    value_set_str(body, ENV_KEY_MAIL_FROM, m->mail_from);
    value_set_take(body, ENV_KEY_MESSAGE, &v);
    if (m->envid)
        value_set_str(body, ENV_KEY_ENVID, m->envid);
    if (m->ret)
        value_set_str(body, ENV_KEY_RET, m->ret);
}

/* Sends one call for the recipients idx[0..n) (taken), to service (NULL:
 * the type's). */
static void
send_call(struct queue_job *j, bool local, const char *domain,
          const char *service, size_t *idx, size_t n)
{
    queue_t *q = j->q;
    struct call *c = xcalloc(1, sizeof(*c));
    envelope_t *req = envelope_new(
        local ? "mailbox.deliver" : "relay.send", j->trace,
        local ? q->conf.mailbox_timeout_ms : q->conf.relay_timeout_ms);
    value_t *body = envelope_body(req), *rcpts = value_new_array();
    char notify[64];
    int rc;

    c->j = j;
    c->local = local;
    c->idx = idx;
    c->n = n;
    add_common(body, &j->m);
    if (!local) {
        value_set_str(body, ENV_KEY_DOMAIN, domain);
        value_set_bool(body, ENV_KEY_EIGHT_BIT, j->m.eight_bit);
        value_set_bool(body, ENV_KEY_SMTPUTF8, j->m.smtputf8);
        value_set_str(body, ENV_KEY_QUEUE_ID, j->id);
    }
    for (size_t i = 0; i < n; i++) {
        const struct queue_rcpt *r = &j->m.rcpts[idx[i]];
        value_t *item = value_new_map();

        if (local) {
            value_set_str(item, ENV_KEY_MAILBOX, r->to);
            if (r->rcpt)
                value_set_str(item, ENV_KEY_RCPT, r->rcpt);
        } else {
            value_set_str(item, ENV_KEY_ADDR, r->to);
            if (r->notify_given) {
                value_t *arr = value_new_array();
                char *save = NULL;

                queue_notify_format(r->notify, notify);
                for (char *w = strtok_r(notify, ",", &save); w;
                     w = strtok_r(NULL, ",", &save)) {
                    value_t *s = value_new_str(w);

                    value_push_take(arr, &s);
                }
                value_set_take(item, ENV_KEY_NOTIFY, &arr);
            }
            if (r->orcpt)
                value_set_str(item, ENV_KEY_ORCPT, r->orcpt);
        }
        value_push_take(rcpts, &item);
    }
    value_set_take(body, ENV_KEY_RCPTS, &rcpts);
    j->calls_out++;
    rc = bus_client_send_to_take(actor_client(q->a), service, &req, on_call,
                                 c);
    if (rc != 0) {
        /* Never called back: a bus failure now. job_plan() holds a count
         * of its own, so this cannot finish the job under it. */
        on_call(c, rc, "not sent", NULL);
    }
}

/* Sends the local recipients idx[0..n) (taken): one mailbox.deliver, or
 * with mailbox.shards > 1 one per shard they fall on, to the mailbox.K
 * that owns them (lib/shard.h). Each recipient's result comes back in its
 * shard's reply. */
static void
send_local(struct queue_job *j, size_t *idx, size_t n)
{
    int shards = shard_mailbox_count(actor_config(j->q->a));
    char service[64];

    if (n == 0) {
        free(idx);
        return;
    }
    if (shards <= 1) {
        send_call(j, true, NULL, NULL, idx, n);
        return;
    }
    for (int k = 0; k < shards; k++) {
        size_t *mine = xcalloc(n, sizeof(*mine)), m = 0;

        for (size_t i = 0; i < n; i++) {
            const char *to = j->m.rcpts[idx[i]].to;

            if (shard_of(to, strlen(to), shards) == k)
                mine[m++] = idx[i];
        }
        if (m == 0) {
            free(mine);
            continue;
        }
        send_call(j, true, NULL,
                  shard_service(service, sizeof(service), "mailbox", k,
                                shards),
                  mine, m);
    }
    free(idx);
}

static int
cmp_domain(const void *a, const void *b, void *arg)
{
    const struct queue_job *j = arg;

    return strcasecmp(domain_of(j->m.rcpts[*(const size_t *)a].to),
                      domain_of(j->m.rcpts[*(const size_t *)b].to));
}

/* Expires the message or sends its due recipients on their way. */
static void
job_plan(struct queue_job *j)
{
    queue_t *q = j->q;
    struct queue_msg *m = &j->m;
    int64_t now = queue_now_ms();
    size_t *local = xcalloc(m->nrcpts, sizeof(size_t));
    size_t *remote = xcalloc(m->nrcpts, sizeof(size_t));
    size_t nl = 0, nr = 0;

    if (now >= m->expires_ms) {
        /* Expired: the pending recipients fail now, with the last error
         * they had (job_finish() makes it 4.4.7). */
        free(local);
        free(remote);
        job_finish(j);
        return;
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct queue_rcpt *r = &m->rcpts[i];

        if (r->status != QUEUE_PENDING || r->next_ms > now + q->conf.scan_ms)
            continue;
        if (r->local)
            local[nl++] = i;
        else
            remote[nr++] = i;
    }
    /* Calls out first, then sent: a reply cannot come back while we send
     * (replies arrive on the loop), but a failed send calls back at
     * once, and job_finish() must wait for the last call. */
    j->phase = PH_SEND;
    j->calls_out++;
    send_local(j, local, nl);
    qsort_r(remote, nr, sizeof(size_t), cmp_domain, j);
    for (size_t i = 0; i < nr;) {
        const char *dom = domain_of(m->rcpts[remote[i]].to);
        size_t k = i, *idx;
        char lower[256];

        while (k < nr &&
               strcasecmp(domain_of(m->rcpts[remote[k]].to), dom) == 0)
            k++;
        idx = xmemdup(remote + i, (k - i) * sizeof(size_t));
        snprintf(lower, sizeof(lower), "%s", dom);
        for (char *p = lower; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        send_call(j, false, lower, NULL, idx, k - i);
        i = k;
    }
    free(remote);
    if (--j->calls_out > 0)
        return;
    if (j->dropped)
        job_drop(j);
    else
        job_finish(j);
}

/* ------------------------------------------------------------------
 * Outcome: recipient states, DSNs, the update
 */

static bool
notifies(const struct queue_rcpt *r, unsigned bit)
{
    return (r->notify & bit) != 0;
}

/* Works out the recipients' new states; returns whether a DSN is due. */
static bool
settle(struct queue_job *j, int64_t now)
{
    queue_t *q = j->q;
    struct queue_msg *m = &j->m;
    /* The null sender gets no DSN, and a DSN never gets one. */
    bool may_dsn = m->mail_from[0] != '\0' && (m->dsn == NULL || !*m->dsn);
    bool expired = now >= m->expires_ms, any = false;

    for (size_t i = 0; i < m->nrcpts; i++) {
        struct queue_rcpt *r = &m->rcpts[i];

        r->act = QUEUE_ACT_NONE;
        r->dsn_ecode = NULL;
        if (r->status != QUEUE_PENDING)
            continue;
        if (r->tried && r->code < 300) {
            r->status = QUEUE_DELIVERED;
            q->delivered++;
            if (notifies(r, QUEUE_NOTIFY_SUCCESS))
                r->act = r->local ? QUEUE_ACT_DELIVERED : QUEUE_ACT_RELAYED;
        } else if ((r->tried && r->code >= 500) || expired) {
            r->status = QUEUE_FAILED;
            r->dirty = true;
            if (!(r->tried && r->code >= 500))
                r->dsn_ecode = "4.4.7";
            if (notifies(r, QUEUE_NOTIFY_FAILURE))
                r->act = QUEUE_ACT_FAILED;
            log_info(j->trace, "queue_failed", "id=%s to=%s ecode=%s%s", j->id,
                     log_q(r->to), r->dsn_ecode ? r->dsn_ecode : r->ecode,
                     r->dsn_ecode ? " reason=expired" : "");
        } else if (r->tried) {
            int64_t d = queue_retry_delay_ms(r->attempts, q->conf.retry_min_s,
                                             q->conf.retry_max_s, rnd32());

            r->next_ms = now + d;
            q->deferred++;
            if (q->conf.delay_warn_s > 0 && !r->warned &&
                notifies(r, QUEUE_NOTIFY_DELAY) &&
                now - m->created_ms >= (int64_t)q->conf.delay_warn_s * 1000) {
                r->act = QUEUE_ACT_DELAYED;
                r->warned = true;
            }
            log_info(j->trace, "queue_deferred",
                     "id=%s to=%s attempt=%d "
                     "retry_in_ms=%lld",
                     j->id, log_q(r->to), r->attempts, (long long)d);
        }
        if (!may_dsn)
            r->act = QUEUE_ACT_NONE;
        if (r->status == QUEUE_FAILED && r->act == QUEUE_ACT_FAILED) {
            r->status = QUEUE_BOUNCED;
            q->bounced++;
        }
        queue_metrics_rcpt(r);
        any |= r->act != QUEUE_ACT_NONE;
    }
    return any;
}

static const char *
act_name(enum queue_action a)
{
    switch (a) {
    case QUEUE_ACT_FAILED:
        return "failed";
    case QUEUE_ACT_DELAYED:
        return "delayed";
    case QUEUE_ACT_RELAYED: /* shares the delivered report */
    case QUEUE_ACT_DELIVERED:
        return "delivered";
    case QUEUE_ACT_NONE:
        break;
    }
    return "";
}

/* Where a DSN to the sender goes: a mailbox of ours, or out by relay. */
static void
dsn_target(const struct queue_job *j, struct queue_rcpt *to)
{
    const struct queue_msg *m = &j->m;
    const char *at = strrchr(m->mail_from, '@');

    to->local = false;
    to->to = xstrdup(m->mail_from);
    if (at == NULL || !j->dom_ours)
        return;
    if (m->user && *m->user && strchr(m->user, '@')) {
        /* The submitter, whom the guard let use this sender. */
        free(to->to);
        to->to = xstrdup(m->user);
    } else if (j->user_exists) {
        /* The account itself, without the sender's +tag. */
        char *plus = strchr(to->to, '+'), *a2 = strrchr(to->to, '@');

        if (plus && plus < a2)
            memmove(plus, a2, strlen(a2) + 1);
    } else {
        return; /* an alias or nobody: out by relay, as any sender */
    }
    for (char *p = to->to; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    to->local = true;
}

/* Builds the DSN for the recipients of one action class into d. */
static void
dsn_make(struct queue_job *j, enum queue_action cls, struct queue_msg *d,
         int64_t now)
{
    queue_t *q = j->q;
    const struct queue_msg *m = &j->m;
    struct queue_dsn_rcpt *dr = xcalloc(m->nrcpts, sizeof(*dr));
    struct queue_dsn dsn = {0};
    buf_t out = BUF_INIT;
    char boundary[QUEUE_ID_MAX + 32];
    size_t n = 0;

    memset(d, 0, sizeof(*d));
    queue_msg_new_id(d->id);
    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct queue_rcpt *r = &m->rcpts[i];
        enum queue_action a =
            r->act == QUEUE_ACT_RELAYED ? QUEUE_ACT_DELIVERED : r->act;

        if (a != cls || r->act == QUEUE_ACT_NONE)
            continue;
        dr[n].final_rcpt = r->to;
        dr[n].orcpt = r->orcpt;
        dr[n].rcpt = r->rcpt;
        dr[n].action = r->act;
        dr[n].status = r->dsn_ecode ? r->dsn_ecode : r->ecode;
        dr[n].code = r->tried || r->attempts > 0 ? r->code : 0;
        dr[n].ecode = r->ecode;
        dr[n].text = r->text;
        dr[n].mx = r->mx;
        dr[n].last_attempt_ms = r->last_ms;
        dr[n].will_retry_until_ms = m->expires_ms;
        n++;
    }
    snprintf(boundary, sizeof(boundary), "%s/dsn", d->id);
    dsn.hostname = q->conf.hostname;
    dsn.queue_id = m->id;
    dsn.envid = m->envid;
    dsn.sender = m->mail_from;
    dsn.ret = m->ret;
    dsn.full_max = (size_t)q->conf.dsn_full_max;
    dsn.arrival_ms = m->created_ms;
    dsn.now_ms = now;
    dsn.message = m->body;
    dsn.message_len = m->body_len;
    dsn.rcpts = dr;
    dsn.nrcpts = n;
    dsn.boundary = boundary;
    if (queue_dsn_build(&dsn, &out) != 0) {
        log_err(j->trace, "queue_panic", "id=%s reason=\"DSN refused\"", j->id);
        abort();
    }
    d->mail_from = xstrdup("");
    d->trace = xstrdup(j->trace);
    d->dsn = xstrdup(act_name(cls));
    d->dsn_of = xstrdup(m->id);
    d->smtputf8 = m->smtputf8;
    d->created_ms = now;
    d->expires_ms = now + (int64_t)q->conf.lifetime_s * 1000;
    d->body_len = out.len;
    d->body = buf_take(&out);
    d->eight_bit = queue_dsn_8bit(d->body, d->body_len);
    d->nrcpts = 1;
    d->rcpts = xcalloc(1, sizeof(*d->rcpts));
    dsn_target(j, &d->rcpts[0]);
    d->rcpts[0].rcpt = xstrdup(m->mail_from);
    d->rcpts[0].notify = QUEUE_NOTIFY_NEVER;
    d->rcpts[0].notify_given = true;
    d->rcpts[0].status = QUEUE_PENDING;
    d->rcpts[0].next_ms = now;
    log_info(j->trace, "queue_dsn",
             "id=%s dsn_id=%s action=%s to=%s via=%s rcpts=%zu size=%zu", j->id,
             d->id, act_name(cls), log_q(d->rcpts[0].to),
             d->rcpts[0].local ? "mailbox" : "relay", n, d->body_len);
    free(dr);
}

/* Builds the update: recipients, DSNs, the new score or the deletion. */
static void
build_update(struct queue_job *j, int64_t now)
{
    struct queue_msg *m = &j->m;
    struct queue_argv *a = &j->update;
    char key[STORE_KEY_MAX];
    int64_t due = m->expires_ms;
    int at;

    queue_argv_free(a);
    queue_argv_init(a);
    j->done = true;
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].status == QUEUE_PENDING) {
            j->done = false;
            if (m->rcpts[i].next_ms < due)
                due = m->rcpts[i].next_ms;
        }
    for (int i = 0; i < j->ndsns; i++)
        queue_msg_write(a, &j->dsns[i], now);
    if (j->done) {
        char k2[STORE_KEY_MAX], k3[STORE_KEY_MAX];

        at = queue_argv_begin(a);
        queue_argv_add(a, "DEL");
        queue_argv_add(a, store_key_queue_msg(key, m->id));
        queue_argv_add(a, store_key_queue_body(k2, m->id));
        queue_argv_add(a, store_key_queue_rcpts(k3, m->id));
        queue_argv_end(a, at);
        at = queue_argv_begin(a);
        queue_argv_add(a, "ZREM");
        queue_argv_add(a, store_key_queue_due(key));
        queue_argv_add(a, m->id);
        queue_argv_end(a, at);
    } else {
        for (size_t i = 0; i < m->nrcpts; i++)
            if (m->rcpts[i].dirty)
                queue_msg_write_rcpt(a, m, i);
        at = queue_argv_begin(a);
        queue_argv_add(a, "ZADD");
        queue_argv_add(a, store_key_queue_due(key));
        queue_argv_addf(a, "%lld", (long long)due);
        queue_argv_add(a, m->id);
        queue_argv_end(a, at);
    }
    at = queue_argv_begin(a);
    queue_argv_add(a, "DEL");
    queue_argv_add(a, store_key_queue_lease(key, m->id));
    queue_argv_end(a, at);
}

static void
make_dsns_and_commit(struct queue_job *j)
{
    static const enum queue_action classes[] = {
        QUEUE_ACT_FAILED, QUEUE_ACT_DELAYED, QUEUE_ACT_DELIVERED};
    int64_t now = queue_now_ms();

    for (size_t c = 0; c < 3; c++) {
        bool any = false;

        for (size_t i = 0; i < j->m.nrcpts; i++) {
            enum queue_action a = j->m.rcpts[i].act;

            any |= (a == QUEUE_ACT_RELAYED ? QUEUE_ACT_DELIVERED : a) ==
                       classes[c] &&
                   a != QUEUE_ACT_NONE;
        }
        if (any)
            dsn_make(j, classes[c], &j->dsns[j->ndsns++], now);
    }
    build_update(j, now);
    job_commit(j);
}

static void
lookup_back(struct queue_job *j, int err, const store_reply_t *r, bool *out)
{
    j->lookup_out--;
    if (!job_store_back(j))
        return;
    if (err != 0 || store_reply_type(r) != STORE_INT)
        j->lookup_failed = true;
    else
        *out = store_reply_int(r) == 1;
    if (j->lookup_out > 0)
        return;
    if (j->lookup_failed) {
        step_failed(j, "sender lookup failed");
        return;
    }
    make_dsns_and_commit(j);
}

static void
on_lookup_domain(void *arg, int err, const store_reply_t *r)
{
    struct queue_job *j = arg;

    lookup_back(j, err, r, &j->dom_ours);
}

static void
on_lookup_user(void *arg, int err, const store_reply_t *r)
{
    struct queue_job *j = arg;

    lookup_back(j, err, r, &j->user_exists);
}

/* Looks up whether the sender is one of our accounts, then builds the
 * DSNs and the update. */
static void
lookup_sender(struct queue_job *j)
{
    const char *from = j->m.mail_from, *at = strrchr(from, '@');
    char dom[256], local[256], kdoms[STORE_KEY_MAX], kuser[STORE_KEY_MAX];
    size_t ll;

    if (at == NULL || strlen(at + 1) >= sizeof(dom) ||
        (ll = (size_t)(at - from)) >= sizeof(local)) {
        make_dsns_and_commit(j);
        return;
    }
    snprintf(dom, sizeof(dom), "%s", at + 1);
    memcpy(local, from, ll);
    local[ll] = '\0';
    local[strcspn(local, "+")] = '\0';
    for (char *p = dom; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    for (char *p = local; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    {
        const char *a1[] = {"SISMEMBER", store_key_domains(kdoms), dom};
        const char *a2[] = {"EXISTS", store_key_user(kuser, dom, local)};

        j->phase = PH_LOOKUP;
        j->lookup_failed = false;
        if (a2[1] == NULL) {
            make_dsns_and_commit(j); /* no account has such a name */
            return;
        }
        if (!job_cmd(j, on_lookup_domain, 3, a1, NULL)) {
            step_failed(j, "redis unavailable");
            return;
        }
        j->lookup_out++;
        if (job_cmd(j, on_lookup_user, 2, a2, NULL))
            j->lookup_out++;
        else
            j->lookup_failed = true; /* the first reply ends the round */
    }
}

/* Every call of the round is back (or nothing was due). */
static void
job_finish(struct queue_job *j)
{
    int64_t now = queue_now_ms();

    if (settle(j, now)) {
        lookup_sender(j);
        return;
    }
    build_update(j, now);
    job_commit(j);
}

static void
on_retry(loop_t *loop, void *arg)
{
    struct queue_job *j = arg;

    (void)loop;
    j->retry = NULL;
    if (j->phase == PH_LOOKUP)
        lookup_sender(j);
    else
        job_commit(j);
}

/* A step Redis did not take: again in a second, while the lease (renewed
 * meanwhile) lasts. */
static void
step_failed(struct queue_job *j, const char *why)
{
    if (++j->commit_tries >= COMMIT_TRIES) {
        log_err(j->trace, "queue_update_failed",
                "id=%s reason=%s tries=%d "
                "outcome=\"dropped; the message is retried after its lease\"",
                j->id, log_q(why), j->commit_tries);
        job_drop(j);
        return;
    }
    log_warn(j->trace, "queue_update_retry", "id=%s reason=%s try=%d", j->id,
             log_q(why), j->commit_tries);
    j->retry =
        loop_timer_add(actor_loop(j->q->a), COMMIT_RETRY_MS, on_retry, j);
}

static void
on_committed(void *arg, int err, const store_reply_t *r)
{
    struct queue_job *j = arg;

    if (!job_store_back(j))
        return;
    if (err != 0) {
        step_failed(j, err_name(err));
        return;
    }
    if (store_reply_type(r) == STORE_ERROR) {
        /* A script error is a bug, not an outage: retrying will not
         * help, but the lease's expiry brings the message back. */
        log_err(j->trace, "queue_update_error", "id=%s reply=%s", j->id,
                log_q(store_reply_str(r, NULL)));
        job_drop(j);
        return;
    }
    if (store_reply_int(r) != 1) {
        log_warn(j->trace, "queue_lease_lost",
                 "id=%s at=update outcome=\"not written\"", j->id);
        job_drop(j);
        return;
    }
    if (j->done && j->loaded)
        log_info(j->trace, "queue_done", "id=%s", j->id);
    if (j->ndsns > 0)
        queue_kick(j->q);
    job_drop(j);
}

static void
job_commit(struct queue_job *j)
{
    queue_t *q = j->q;
    struct queue_argv a;
    char klease[STORE_KEY_MAX];

    j->phase = PH_COMMIT;
    queue_argv_init(&a);
    queue_argv_add(&a, "1");
    queue_argv_add(&a, store_key_queue_lease(klease, j->id));
    queue_argv_add(&a, q->owner);
    for (int i = 0; i < j->update.n; i++)
        queue_argv_addref(&a, j->update.v[i], j->update.lens[i]);
    if (queue_script_cmd(q, &update_script, on_committed, j, a.n,
                         (const char *const *)a.v, a.lens) == 0)
        j->store_out++;
    else
        step_failed(j, "redis unavailable");
    queue_argv_free(&a);
}

/* ------------------------------------------------------------------
 * Claiming
 */

static void
on_claimed(void *arg, int err, const store_reply_t *r)
{
    queue_t *q = arg;
    size_t n = 0;

    q->claiming = false;
    if (q->closing) {
        queue_maybe_free(q);
        return;
    }
    if (err == 0 && store_reply_type(r) == STORE_ARRAY) {
        n = store_reply_count(r);
        for (size_t i = 0; i < n; i++) {
            const char *id = store_reply_str(store_reply_at(r, i), NULL);

            if (id && queue_msg_id_ok(id))
                job_new(q, id);
            else
                log_warn(NULL, "queue_bad_id", "id=%s", log_q(id));
        }
    } else if (err == 0 && store_reply_type(r) == STORE_ERROR) {
        log_err(NULL, "queue_claim_error", "reply=%s",
                log_q(store_reply_str(r, NULL)));
    }
    if (q->kick_again || (n > 0 && q->inflight < q->conf.max_inflight)) {
        q->kick_again = false;
        queue_kick(q);
    }
}

static void
claim(queue_t *q)
{
    char kdue[STORE_KEY_MAX], kprefix[STORE_KEY_MAX], now[24], lease[24],
        limit[24];
    const char *argv[] = {
        "1",   store_key_queue_due(kdue),         now, q->owner, lease,
        limit, store_key_queue_lease(kprefix, "")};
    long room = q->conf.max_inflight - q->inflight;

    if (q->closing || q->claiming || room <= 0 || !queue_store_ready(q))
        return;
    snprintf(now, sizeof(now), "%lld", (long long)queue_now_ms());
    snprintf(lease, sizeof(lease), "%ld", q->conf.lease_ms);
    snprintf(limit, sizeof(limit), "%ld", room);
    if (queue_script_cmd(q, &claim_script, on_claimed, q, 7, argv, NULL) == 0)
        q->claiming = true;
}

static void
on_scan(loop_t *loop, void *arg)
{
    queue_t *q = arg;

    q->scan = loop_timer_add(loop, q->conf.scan_ms, on_scan, q);
    claim(q);
}

void
queue_kick(queue_t *q)
{
    loop_t *loop = actor_loop(q->a);

    if (q->closing)
        return;
    if (q->claiming) {
        q->kick_again = true;
        return;
    }
    loop_timer_cancel(loop, &q->scan);
    q->scan = loop_timer_add(loop, 0, on_scan, q);
}

void
queue_sched_start(queue_t *q)
{
    q->scan = loop_timer_add(actor_loop(q->a), q->conf.scan_ms, on_scan, q);
}

void
queue_sched_stop(queue_t *q)
{
    struct queue_job *j = q->jobs, *next;

    loop_timer_cancel(actor_loop(q->a), &q->scan);
    for (; j; j = next) {
        next = j->next;
        job_drop(j);
    }
}
