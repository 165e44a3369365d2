/*
 * relay_send.c - relay.send: one message to one domain's recipients.
 *
 * A job looks up its route in Redis (samotop:routes: the domain, else
 * "*"), then the next hops (the route's host, or the domain's MX hosts),
 * then walks their addresses in order. Each attempt carries the
 * recipients still without a definitive answer; a 2xx or 5xx is final,
 * a 4xx (or a host that cannot be reached) leaves the recipient to the
 * next address, and the last such answer to the reply when none is left.
 * The reply holds one result per recipient, in request order.
 *
 * relay_conn_attempt() may call relay_job_outcome() before it returns, and
 * the outcome may end the job: nothing here touches a job after handing
 * it to either.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bus/store_keys.h"
#include "lib/clock.h"
#include "lib/config.h"
#include "lib/err.h"
#include "lib/idna.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "relay.h"

/* The part of the request's time kept back to answer in: a twentieth,
 * between these bounds. */
#define MARGIN_MIN_MS 100
#define MARGIN_MAX_MS 5000

static void job_next(struct relay_job *j);
static void job_finish(struct relay_job *j);

/* --- results ------------------------------------------------------------ */

static void
set_result(struct relay_result *res, int code, const char *ecode,
           const char *text, const char *mx)
{
    res->code = code;
    snprintf(res->ecode, sizeof(res->ecode), "%s", ecode ? ecode : "");
    free(res->text);
    res->text = xstrdup(text ? text : "");
    snprintf(res->mx, sizeof(res->mx), "%s", mx ? mx : "");
    res->final = code < 400 || code >= 500;
}

/* Gives every recipient still undecided this answer. */
static void
settle_open(struct relay_job *j, int code, const char *ecode, const char *text,
            const char *mx)
{
    for (int i = 0; i < j->nrcpts; i++)
        if (!j->res[i].final)
            set_result(&j->res[i], code, ecode, text, mx);
}

static bool
all_final(const struct relay_job *j)
{
    for (int i = 0; i < j->nrcpts; i++)
        if (!j->res[i].final)
            return false;
    return true;
}

static void
note_failure(struct relay_job *j, int code, const char *ecode, const char *text,
             const char *mx)
{
    j->last_code = code;
    snprintf(j->last_ecode, sizeof(j->last_ecode), "%s", ecode ? ecode : "");
    snprintf(j->last_text, sizeof(j->last_text), "%s", text ? text : "");
    snprintf(j->last_mx, sizeof(j->last_mx), "%s", mx ? mx : "");
}

/* --- the job's life ----------------------------------------------------- */

static void
job_free(struct relay_job *j)
{
    relay_t *r = j->r;

    if (j->prev)
        j->prev->next = j->next;
    else if (r->jobs == j)
        r->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    loop_timer_cancel(r->loop, &j->deadline);
    for (int i = 0; i < j->nrcpts; i++)
        free(j->res[i].text);
    free(j->res);
    free(j->rcpts);
    free(j->sub_rcpts);
    free(j->sub_idx);
    free(j->hops);
    free(j);
}

/* The reply: 250 when every recipient was accepted, else the worst. */
static void
job_reply(struct relay_job *j)
{
    envelope_t *reply;
    value_t *results = value_new_array(), *body;
    int worst = -1, ok = 0;
    char text[128];

    for (int i = 0; i < j->nrcpts; i++) {
        struct relay_result *res = &j->res[i];
        value_t *item = value_new_map();

        value_set_str(item, ENV_KEY_ADDR, j->rcpts[i].addr);
        value_set_int(item, ENV_KEY_CODE, res->code);
        value_set_str(item, ENV_KEY_ECODE,
                      res->ecode[0]     ? res->ecode
                      : res->code < 300 ? "2.0.0"
                      : res->code < 500 ? "4.0.0"
                                        : "5.0.0");
        value_set_str(item, ENV_KEY_TEXT, res->text ? res->text : "");
        if (res->mx[0])
            value_set_str(item, ENV_KEY_MX, res->mx);
        value_push_take(results, &item);
        if (res->code < 300)
            ok++;
        else if (worst < 0 || res->code > j->res[worst].code)
            worst = i;
    }
    if (worst < 0) {
        snprintf(text, sizeof(text), "delivered to %d recipient%s", ok,
                 ok == 1 ? "" : "s");
        reply = envelope_new_reply(j->env, 250, "2.0.0", text);
    } else {
        const struct relay_result *w = &j->res[worst];

        reply =
            envelope_new_reply(j->env, w->code,
                               w->ecode[0]     ? w->ecode
                               : w->code < 500 ? "4.0.0"
                                               : "5.0.0",
                               w->text && *w->text ? w->text : "not delivered");
    }
    body = envelope_body(reply);
    value_set_take(body, ENV_KEY_RESULTS, &results);
    actor_reply(j->r->actor, &j->req, &reply);
}

/* One line per delivery (STYLE.md 7): where it went and how it ended. */
static void
job_log(const struct relay_job *j)
{
    char codes[512] = "";
    size_t n = 0;
    const char *mx = "-";

    for (int i = 0; i < j->nrcpts && n < sizeof(codes) - 8; i++) {
        n += (size_t)snprintf(codes + n, sizeof(codes) - n, "%s%d",
                              i ? "," : "", j->res[i].code);
        if (j->res[i].mx[0])
            mx = j->res[i].mx;
    }
    log_info(j->trace, "relay_delivery",
             "queue_id=%s domain=%s route=%s "
             "mx=%s tls=%s rcpts=%d codes=%s attempts=%d ms=%lld",
             j->queue_id[0] ? j->queue_id : "-", log_q(j->domain),
             j->routed ? log_q(j->route) : "mx", log_q(mx),
             j->used_tls ? "yes" : "no", j->nrcpts, codes, j->attempts,
             (long long)(loop_now_ms(j->r->loop) - j->started_ms));
}

static void
job_finish(struct relay_job *j)
{
    loop_timer_cancel(j->r->loop, &j->deadline);
    dns_cancel(j->r->dns, &j->dnsq);
    relay_conn_detach(j);
    if (j->last_code == 0) {
        note_failure(j, 451, "4.4.1", "no next hop could be reached", "");
    }
    settle_open(j, j->last_code, j->last_ecode, j->last_text, j->last_mx);
    job_log(j);
    relay_metrics_job(j);
    if (j->req)
        job_reply(j);
    j->r->jobs_done++;
    /* A route lookup still out calls back later: the job goes then. */
    if (!j->store_pending)
        job_free(j);
}

static void
on_deadline(loop_t *loop, void *arg)
{
    struct relay_job *j = arg;

    (void)loop;
    j->deadline = NULL;
    /* The queue stops waiting at the request's deadline: answer before it
     * with what is known. A transaction cut off may still have been
     * delivered; the queue's retry then sends it twice, never loses it. */
    relay_conn_detach(j);
    settle_open(j, 451, "4.4.2", "delivery attempt took too long", j->mx);
    job_finish(j);
}

/* --- attempts ----------------------------------------------------------- */

/* The recipients still undecided become the transaction to send. */
static void
build_sub(struct relay_job *j)
{
    int n = 0;

    for (int i = 0; i < j->nrcpts; i++)
        if (!j->res[i].final) {
            j->sub_rcpts[n] = j->rcpts[i];
            j->sub_idx[n++] = i;
        }
    j->sub = j->txn;
    j->sub.rcpts = j->sub_rcpts;
    j->sub.nrcpts = n;
}

static void
attempt(struct relay_job *j)
{
    const struct dns_host *h = &j->hops->hosts[j->hop];
    int port = j->routed ? j->route_port : j->r->port;

    j->host = relay_host_get(j->r, &h->addrs[j->addr], port);
    snprintf(j->hop_name, sizeof(j->hop_name), "%s", h->name);
    if (strchr(h->name, ':'))
        snprintf(j->mx, sizeof(j->mx), "[%s]:%d", h->name, port);
    else
        snprintf(j->mx, sizeof(j->mx), "%s:%d", h->name, port);
    j->cur_tls = j->tls;
    if (j->again_plain && j->tls.policy == SMTP_CLIENT_TLS_MAY)
        j->cur_tls.policy = SMTP_CLIENT_TLS_NONE;
    j->cur_fresh = j->again_fresh || j->again_plain;
    j->again_plain = j->again_fresh = false;
    build_sub(j);
    j->attempts++;
    log_debug(j->trace, "relay_attempt",
              "domain=%s mx=%s addr=%s rcpts=%d "
              "tls=%d",
              log_q(j->domain), log_q(j->mx), j->host->key, j->sub.nrcpts,
              (int)j->cur_tls.policy);
    relay_conn_attempt(j);
}

/* The next address to try (the same one when asked), or the end. */
static void
job_next(struct relay_job *j)
{
    if (all_final(j)) {
        job_finish(j);
        return;
    }
    if (!j->again_fresh && !j->again_plain) {
        if (!j->begun) {
            j->begun = true;
            j->hop = j->addr = 0;
        } else {
            j->addr++;
        }
        while (j->hop < j->hops->nhosts &&
               j->addr >= j->hops->hosts[j->hop].naddrs) {
            j->hop++;
            j->addr = 0;
        }
        if (j->hop >= j->hops->nhosts) {
            job_finish(j);
            return;
        }
    }
    attempt(j);
}

void
relay_job_outcome(struct relay_job *j, const struct relay_outcome *o)
{
    bool fresh_ok = !j->again_fresh, plain_ok = !j->again_plain;

    j->host = NULL;
    if (o->tls)
        j->used_tls = true;
    if (o->results) {
        for (int i = 0; i < o->nresults && i < j->sub.nrcpts; i++) {
            const struct smtp_reply *rep = o->results[i];
            struct relay_result *res = &j->res[j->sub_idx[i]];

            set_result(res, rep->code, rep->ecode, rep->text, j->mx);
            if (!res->final)
                note_failure(j, rep->code, rep->ecode, rep->text, j->mx);
        }
    } else {
        note_failure(j, o->code, o->ecode, o->text, j->mx);
        settle_open(j, o->code, o->ecode, o->text, j->mx);
    }
    /* XXX: a 452 4.5.3 (too many recipients) after some were accepted
     * should send the rest in another transaction on the same connection;
     * here they go on to the next address or back to the queue. */
    /* The same address once more: on a new connection when a reused one
     * was found dead, in clear when opportunistic TLS failed (Postfix
     * does the same; RFC 7435 prefers clear text to no delivery). */
    if (o->retry_fresh && fresh_ok)
        j->again_fresh = true;
    else if (o->retry_plain && plain_ok && j->tls.policy == SMTP_CLIENT_TLS_MAY)
        j->again_plain = true;
    job_next(j);
}

/* --- the way there ------------------------------------------------------ */

static void
on_hops(void *arg, const struct dns_result *res)
{
    struct relay_job *j = arg;

    j->dnsq = NULL;
    if (res->status != DNS_OK) {
        /* Final when the DNS says so (null MX, no such domain, no mail
         * host); else the queue tries again later. */
        log_info(j->trace, "relay_dns_failed", "domain=%s code=%d text=%s",
                 log_q(j->domain), res->code, log_q(res->text));
        if (res->code >= 500)
            settle_open(j, res->code, res->ecode, res->text, "");
        else
            note_failure(j, res->code, res->ecode, res->text, "");
        job_finish(j);
        return;
    }
    j->hops = xmemdup(res, sizeof(*res));
    if (!j->routed && j->domain[0] != '[' && relay_self_trim(j->r, j->hops)) {
        log_info(j->trace, "relay_mx_self", "domain=%s left=%d",
                 log_q(j->domain), j->hops->nhosts);
        if (j->hops->nhosts == 0) {
            /* We are the best MX there is: sending would loop back (RFC
             * 5321 5.1), and no retry changes that. */
            settle_open(j, 554, "5.4.6",
                        "mail for this domain loops back "
                        "to myself (we are its best MX)",
                        "");
            job_finish(j);
            return;
        }
    }
    job_next(j);
}

/* Reads "HOST:PORT", "[V6]:PORT" or "HOST", then ";tls=required",
 * ";tls=opportunistic" or ";tls=verify" (schemas/redis.md). */
static int
parse_route(struct relay_job *j, const char *v)
{
    char hostport[256];
    const char *semi = strchr(v, ';');
    size_t n = semi ? (size_t)(semi - v) : strlen(v);

    if (n == 0 || n >= sizeof(hostport))
        return ERR_INVAL;
    memcpy(hostport, v, n);
    hostport[n] = '\0';
    j->tls.policy = SMTP_CLIENT_TLS_MAY;
    j->tls.verify = false;
    if (semi) {
        const char *p = semi + 1;

        if (strcasecmp(p, "tls=required") == 0) {
            j->tls.policy = SMTP_CLIENT_TLS_MUST;
        } else if (strcasecmp(p, "tls=verify") == 0) {
            j->tls.policy = SMTP_CLIENT_TLS_MUST;
            j->tls.verify = true;
        } else if (strcasecmp(p, "tls=opportunistic") != 0 &&
                   strcasecmp(p, "tls=may") != 0) {
            return ERR_INVAL;
        }
    }
    if (config_split_addr(hostport, j->route_host, sizeof(j->route_host),
                          &j->route_port) != 0) {
        /* No port: the host alone takes relay.port. */
        if (strchr(hostport, ':') || hostport[0] == '[')
            return ERR_INVAL;
        snprintf(j->route_host, sizeof(j->route_host), "%s", hostport);
        j->route_port = j->r->port;
    }
    return 0;
}

/*
 * An MX answer is trimmed of us and those after us (RFC 5321 5.1,
 * relay_self.c) in on_hops(). A route is the administrator's choice and
 * is taken as it is: one pointing back at our own listener loops until
 * the queue's lifetime ends (or the hop count, RFC 5321 6.3, stops it).
 */
static void
find_hops(struct relay_job *j)
{
    if (j->routed)
        j->dnsq = dns_host(j->r->dns, j->route_host, on_hops, j);
    else if (j->domain[0] == '[')
        /* An address literal (RFC 5321 4.1.3): no DNS at all. */
        j->dnsq = dns_host(j->r->dns, j->domain, on_hops, j);
    else
        j->dnsq = dns_mx(j->r->dns, j->domain, on_hops, j);
}

static void
on_route(void *arg, int err, const store_reply_t *reply)
{
    struct relay_job *j = arg;
    const char *v = NULL;

    j->store_pending = false;
    if (j->req == NULL) {
        /* Answered meanwhile (the deadline, or shutting down). */
        job_free(j);
        return;
    }
    if (err == 0 && store_reply_type(reply) == STORE_ARRAY &&
        store_reply_count(reply) == 2) {
        for (size_t i = 0; i < 2 && v == NULL; i++) {
            const store_reply_t *f = store_reply_at(reply, i);

            if (store_reply_type(f) == STORE_STR)
                v = store_reply_str(f, NULL);
        }
    } else {
        log_warn(j->trace, "relay_route_failed", "domain=%s err=%s",
                 log_q(j->domain), err_name(err ? err : ERR_REDIS));
        note_failure(j, 451, "4.3.0", "route lookup failed, try later", "");
        job_finish(j);
        return;
    }
    if (v) {
        snprintf(j->route, sizeof(j->route), "%s", v);
        if (parse_route(j, v) != 0) {
            log_warn(j->trace, "relay_route_bad", "domain=%s route=%s",
                     log_q(j->domain), log_q(v));
            note_failure(j, 451, "4.3.5", "bad route for the domain", "");
            job_finish(j);
            return;
        }
        j->routed = true;
    }
    find_hops(j);
}

static void
job_start(struct relay_job *j)
{
    char key[STORE_KEY_MAX];
    const char *argv[] = {"HMGET", store_key_routes(key), j->domain, "*"};

    j->store_pending = true;
    if (store_async_cmd(j->r->store, on_route, j, 4, argv, NULL) != 0) {
        j->store_pending = false;
        log_warn(j->trace, "relay_route_failed", "domain=%s err=%s",
                 log_q(j->domain), "redis not connected");
        note_failure(j, 451, "4.3.0", "route lookup failed, try later", "");
        job_finish(j);
    }
}

/* --- the request -------------------------------------------------------- */

static unsigned
notify_of(const value_t *arr)
{
    unsigned n = 0;

    for (size_t i = 0;
         arr && value_kind(arr) == VAL_ARRAY && i < value_count(arr); i++) {
        const char *w = value_str(value_at(arr, i), NULL);

        if (w == NULL)
            continue;
        if (strcasecmp(w, "NEVER") == 0)
            n |= SMTP_NOTIFY_NEVER;
        else if (strcasecmp(w, "SUCCESS") == 0)
            n |= SMTP_NOTIFY_SUCCESS;
        else if (strcasecmp(w, "FAILURE") == 0)
            n |= SMTP_NOTIFY_FAILURE;
        else if (strcasecmp(w, "DELAY") == 0)
            n |= SMTP_NOTIFY_DELAY;
    }
    /* RFC 3461 4.1: NEVER stands alone. */
    if (n & SMTP_NOTIFY_NEVER)
        n = SMTP_NOTIFY_NEVER;
    return n;
}

/* Fills j from the request's body; the reason in why on failure. */
static int
job_parse(struct relay_job *j, char *why, size_t whylen)
{
    const value_t *body = envelope_body_peek(j->env);
    const value_t *rcpts = value_get(body, ENV_KEY_RCPTS);
    const value_t *msg = value_get(body, ENV_KEY_MESSAGE);
    const char *domain = value_get_str(body, ENV_KEY_DOMAIN);
    const char *from = value_get_str(body, ENV_KEY_MAIL_FROM);
    const char *ret = value_get_str(body, ENV_KEY_RET);
    const char *qid = value_get_str(body, ENV_KEY_QUEUE_ID);
    size_t len = 0;

    if (domain == NULL || *domain == '\0' || strlen(domain) > 255) {
        snprintf(why, whylen, "no domain");
        return ERR_INVAL;
    }
    /* Routes are stored under, and the DNS knows, only the A-label form
     * of a domain an SMTPUTF8 sender wrote in U-labels (RFC 6531 3.2). */
    if (idna_to_ascii(domain, j->domain, sizeof(j->domain)) != 0) {
        snprintf(why, whylen, "domain %s is not a valid IDNA name", domain);
        return ERR_MALFORMED;
    }
    if (from == NULL || msg == NULL ||
        (value_kind(msg) != VAL_BIN && value_kind(msg) != VAL_STR)) {
        snprintf(why, whylen, "no mail_from or message");
        return ERR_INVAL;
    }
    if (rcpts == NULL || value_kind(rcpts) != VAL_ARRAY ||
        value_count(rcpts) == 0 || value_count(rcpts) > 100000) {
        snprintf(why, whylen, "no rcpts");
        return ERR_INVAL;
    }
    j->nrcpts = (int)value_count(rcpts);
    j->rcpts = xcalloc((size_t)j->nrcpts, sizeof(*j->rcpts));
    j->res = xcalloc((size_t)j->nrcpts, sizeof(*j->res));
    j->sub_rcpts = xcalloc((size_t)j->nrcpts, sizeof(*j->sub_rcpts));
    j->sub_idx = xcalloc((size_t)j->nrcpts, sizeof(*j->sub_idx));
    for (int i = 0; i < j->nrcpts; i++) {
        const value_t *item = value_at(rcpts, (size_t)i);
        const char *addr = value_kind(item) == VAL_MAP
                               ? value_get_str(item, ENV_KEY_ADDR)
                               : NULL;

        if (addr == NULL) {
            snprintf(why, whylen, "rcpts[%d] has no addr", i);
            return ERR_INVAL;
        }
        j->rcpts[i].addr = addr;
        j->rcpts[i].notify = notify_of(value_get(item, ENV_KEY_NOTIFY));
        j->rcpts[i].orcpt = value_get_str(item, ENV_KEY_ORCPT);
    }
    j->txn.mail_from = from;
    j->txn.data = value_str(msg, &len);
    j->txn.len = len;
    j->txn.eight_bit = value_get_bool(body, ENV_KEY_EIGHT_BIT, false);
    j->txn.smtputf8 = value_get_bool(body, ENV_KEY_SMTPUTF8, false);
    j->txn.envid = value_get_str(body, ENV_KEY_ENVID);
    j->txn.ret = ret == NULL                    ? SMTP_RET_NONE
                 : strcasecmp(ret, "FULL") == 0 ? SMTP_RET_FULL
                 : strcasecmp(ret, "HDRS") == 0 ? SMTP_RET_HDRS
                                                : SMTP_RET_NONE;
    j->txn.rcpts = j->rcpts;
    j->txn.nrcpts = j->nrcpts;
    snprintf(j->queue_id, sizeof(j->queue_id), "%s", qid ? qid : "");
    return 0;
}

void
relay_on_send(actor_t *a, bus_request_t **req_p)
{
    relay_t *r = actor_data(a);
    struct relay_job *j = xcalloc(1, sizeof(*j));
    char why[200];
    int64_t left_ms, margin;
    int rc;

    j->r = r;
    j->req = *req_p;
    *req_p = NULL;
    j->env = bus_request_envelope(j->req);
    snprintf(j->trace, sizeof(j->trace), "%s", envelope_trace(j->env));
    j->started_ms = loop_now_ms(r->loop);
    j->tls.policy = SMTP_CLIENT_TLS_MAY;
    j->next = r->jobs;
    if (r->jobs)
        r->jobs->prev = j;
    r->jobs = j;
    if ((rc = job_parse(j, why, sizeof(why))) != 0) {
        log_warn(j->trace, "relay_bad_request", "reason=%s", log_q(why));
        if (rc == ERR_MALFORMED)
            /* The domain can never be reached (RFC 3463 5.1.2). */
            actor_fail(a, &j->req, 550, "5.1.2", why);
        else
            /* A queue bug, not the message's fault: a 4xx keeps it. */
            actor_fail(a, &j->req, 451, "4.3.5", why);
        job_free(j);
        return;
    }
    left_ms = (envelope_deadline(j->env) - clock_wall_us()) / 1000;
    margin = left_ms / 20;
    margin = margin < MARGIN_MIN_MS   ? MARGIN_MIN_MS
             : margin > MARGIN_MAX_MS ? MARGIN_MAX_MS
                                      : margin;
    j->deadline = loop_timer_add(
        r->loop, left_ms - margin > 10 ? left_ms - margin : 10, on_deadline, j);
    job_start(j);
}

void
relay_jobs_abort(relay_t *r)
{
    struct relay_job *j = r->jobs, *next;

    /* A connection closed below must not start a job in line: that job
     * could end, and be freed, as next. */
    r->stopping = true;
    while (j) {
        next = j->next;
        if (j->req) {
            relay_conn_detach(j);
            settle_open(j, 451, "4.3.2", "relay shutting down", "");
            job_finish(j);
        }
        j = next;
    }
}
