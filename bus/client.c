/*
 * client.c - the client side of the bus (bus.h).
 *
 * Each request waits in a table keyed by its envelope id until its reply,
 * an error from the broker, or its deadline. A request that cannot be
 * handed to any broker yet (none connected: ZMQ_IMMEDIATE refuses it) is
 * kept encoded and retried every RETRY_MS until it goes or its deadline
 * passes, so a client that starts before its broker simply waits.
 *
 * Deadlines: the pending requests form a min-heap by deadline (lib/heap.h),
 * with one loop timer set for the earliest. A new request re-arms it only
 * when it is due sooner (seldom: requests mostly share a timeout), and a finished
 * one leaves it be: when it fires with nothing due, it is set again. One
 * loop timer per request cost an allocation and two heap updates each.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "bus.h"
#include "frames.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/heap.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/xalloc.h"
#include "proto.h"

#define RETRY_MS 2
/* Finished requests' records kept for the next ones, at most. */
#define PENDING_SPARE 256
/* Room for an id inside the record; a longer one is allocated apart. */
#define PENDING_ID_INLINE 48

struct pending {
    bus_client_t *client;
    char *id; /* idbuf, or allocated when longer */
    char idbuf[PENDING_ID_INLINE];
    struct pending *hnext; /* the next in its bucket of the table */
    bus_reply_fn *fn;
    void *arg;
    struct heap_node dl; /* key: its deadline, wall-clock µs */
    int64_t started_us; /* monotonic, for the latency histogram */
    char svc[PROTO_MAX_NAME];
    /* Set while the request is not yet with a broker. */
    char *service, *trace, *payload;
    size_t payload_len;
    struct pending *next_unsent;
};

struct bus_client {
    loop_t *loop;
    zsock_t *zs;
    void *sock;
    size_t max_envelope;
    /* id -> struct pending: chained buckets, a power of two of them. A
     * table of our own, not a zhashx: that one allocates an item and a
     * copy of the key for every insert. */
    struct pending **buckets;
    size_t nbuckets, npending;
    struct pending *spare; /* finished records, for reuse; by hnext */
    int nspare;
    struct pending *unsent_head, *unsent_tail;
    loop_timer_t *retry_timer;
    struct heap deadlines; /* of struct pending, by dl */
    loop_timer_t *deadline_timer;
    int64_t deadline_at_us; /* what deadline_timer is set for */
    struct batch out; /* this turn's requests, sent before the loop waits */
    bool went; /* a request went alone this turn: the next ones batch */
    metric_t *m_latency, *m_results; /* NULL until bus_client_set_metrics */
};

static int client_on_readable(loop_t *loop, void *zsocket, void *arg);
static int client_flush(loop_t *loop, void *arg);

static void on_deadline(loop_t *loop, void *arg);

/* Sets the deadline timer for the earliest deadline, unless it is set
 * for that or sooner already (re-arming too late is harmless: it fires,
 * finds nothing due, and is set again). */
static void
arm_deadline(bus_client_t *c)
{
    int64_t at, ms;

    if (c->loop == NULL || c->deadlines.n == 0)
        return;
    at = heap_top(&c->deadlines)->key;
    if (c->deadline_timer != NULL && c->deadline_at_us <= at)
        return;
    loop_timer_cancel(c->loop, &c->deadline_timer);
    ms = (at - clock_wall_us() + 999) / 1000;
    c->deadline_at_us = at;
    c->deadline_timer = loop_timer_add(c->loop, ms > 0 ? ms : 0, on_deadline,
                                       c);
}

/* FNV-1a: ids are "<random prefix>-<counter>", so any spread will do. */
static size_t
id_hash(const char *id)
{
    uint64_t h = 14695981039346656037ull;

    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h ^ h >> 32);
}

static struct pending *
ptab_find(const bus_client_t *c, const char *id)
{
    struct pending *p = c->buckets[id_hash(id) & (c->nbuckets - 1)];

    while (p && strcmp(p->id, id) != 0)
        p = p->hnext;
    return p;
}

static void
ptab_insert(bus_client_t *c, struct pending *p)
{
    struct pending **b;

    if (c->npending >= c->nbuckets) { /* keep chains short: double */
        size_t nb = c->nbuckets * 2;
        struct pending **nt = xcalloc(nb, sizeof(*nt));

        for (size_t i = 0; i < c->nbuckets; i++)
            while (c->buckets[i]) {
                struct pending *q = c->buckets[i];

                c->buckets[i] = q->hnext;
                b = &nt[id_hash(q->id) & (nb - 1)];
                q->hnext = *b;
                *b = q;
            }
        free(c->buckets);
        c->buckets = nt;
        c->nbuckets = nb;
    }
    b = &c->buckets[id_hash(p->id) & (c->nbuckets - 1)];
    p->hnext = *b;
    *b = p;
    c->npending++;
}

static void
ptab_remove(bus_client_t *c, struct pending *p)
{
    struct pending **pp = &c->buckets[id_hash(p->id) & (c->nbuckets - 1)];

    while (*pp && *pp != p)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = p->hnext;
        c->npending--;
    }
}

/* Any pending request, or NULL. */
static struct pending *
ptab_any(const bus_client_t *c)
{
    for (size_t i = 0; i < c->nbuckets; i++)
        if (c->buckets[i])
            return c->buckets[i];
    return NULL;
}

int
bus_service_of(const char *type, char *out, size_t outlen)
{
    const char *dot = strchr(type, '.');
    size_t n;

    if (dot == NULL)
        return ERR_INVAL;
    n = (size_t)(dot - type);
    if (n == 0 || n >= outlen || n >= PROTO_MAX_NAME)
        return ERR_INVAL;
    memcpy(out, type, n);
    out[n] = '\0';
    return 0;
}

bus_client_t *
bus_client_new(loop_t *loop, const char *endpoints, size_t max_envelope,
               char *why, size_t whylen)
{
    bus_client_t *c = xcalloc(1, sizeof(*c));
    char *list = xstrdup(endpoints), *save = NULL, *ep;
    int one = 1, zero = 0, hb_ivl = 1000, hb_ttl = 3000;
    int hwm = 100000;

    c->loop = loop;
    c->max_envelope = max_envelope;
    c->nbuckets = 64;
    c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
    c->zs = zsock_new(ZMQ_DEALER);
    if (c->zs == NULL) {
        snprintf(why, whylen, "cannot make a DEALER socket");
        goto fail;
    }
    c->sock = zsock_resolve(c->zs);
    /* Only brokers that are connected get requests: with several brokers,
     * one that is down is skipped instead of queueing into the void. */
    zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof(one));
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(c->sock, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    /* ZMTP heartbeats find a broker that vanished without closing TCP. */
    zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof(hb_ivl));
    zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_ttl, sizeof(hb_ttl));
    for (ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (*ep == '\0')
            continue;
        if (zmq_connect(c->sock, ep) != 0) {
            snprintf(why, whylen, "cannot connect to %s: %s", ep,
                     zmq_strerror(errno));
            goto fail;
        }
    }
    free(list);
    if (loop && loop_zmq_add(loop, c->sock, client_on_readable, c) != 0) {
        snprintf(why, whylen, "cannot watch the client socket");
        list = NULL;
        goto fail;
    }
    if (loop)
        loop_flush_add(loop, client_flush, c);
    return c;
fail:
    free(list);
    zsock_destroy(&c->zs);
    free(c->buckets);
    free(c);
    return NULL;
}

/* Frees what p holds, and p itself unless it is kept for reuse. */
static void
pending_free(bus_client_t *c, struct pending *p)
{
    if (p->id != p->idbuf)
        free(p->id);
    free(p->service);
    free(p->trace);
    free(p->payload);
    if (c->nspare < PENDING_SPARE) {
        p->hnext = c->spare;
        c->spare = p;
        c->nspare++;
    } else {
        free(p);
    }
}

/* A zeroed record, reused when one is spare. */
static struct pending *
pending_alloc(bus_client_t *c)
{
    struct pending *p = c->spare;

    if (p == NULL)
        return xcalloc(1, sizeof(*p));
    c->spare = p->hnext;
    c->nspare--;
    memset(p, 0, sizeof(*p));
    return p;
}

static void
unsent_remove(bus_client_t *c, struct pending *p)
{
    struct pending **pp = &c->unsent_head, *prev = NULL;

    while (*pp && *pp != p) {
        prev = *pp;
        pp = &(*pp)->next_unsent;
    }
    if (*pp == NULL)
        return;
    *pp = p->next_unsent;
    if (c->unsent_tail == p)
        c->unsent_tail = prev;
    p->next_unsent = NULL;
}

void
bus_client_set_metrics(bus_client_t *c, metrics_t *m)
{
    c->m_latency = metrics_histogram(
        m, "samotop_bus_client_request_duration_seconds",
        "Time from sending a bus request to its outcome, by service",
        "service", NULL, 0);
    c->m_results = metrics_counter(
        m, "samotop_bus_client_requests_total",
        "Bus requests sent, by service and outcome (ok, or the error: "
        "timeout, noworker, worker_lost, proto, closed)",
        "service,result");
}

/* Counts the outcome of p: "ok" or the error's name in lower case. */
static void
count_outcome(bus_client_t *c, const struct pending *p, int err)
{
    char result[32];
    size_t i;

    if (c->m_results == NULL)
        return;
    snprintf(result, sizeof(result), "%s", err ? err_name(err) : "ok");
    for (i = 0; result[i]; i++)
        if (result[i] >= 'A' && result[i] <= 'Z')
            result[i] = (char)(result[i] - 'A' + 'a');
    metrics_inc(c->m_results, METRICS_L(p->svc, result));
    if (p->started_us) /* not when it started before the metrics */
        metrics_observe(c->m_latency, METRICS_L(p->svc),
                        (double)(clock_mono_us() - p->started_us) / 1e6);
}

/* Ends a request: takes it out of the tables, then calls back. */
static void
finish(bus_client_t *c, struct pending *p, int err, const char *text,
       const envelope_t *reply)
{
    count_outcome(c, p, err);
    ptab_remove(c, p);
    heap_remove(&c->deadlines, &p->dl);
    if (p->payload)
        unsent_remove(c, p);
    p->fn(p->arg, err, text ? text : err_str(err), reply);
    pending_free(c, p);
}

void
bus_client_destroy(bus_client_t **client_p)
{
    bus_client_t *c = *client_p;
    struct pending *p;

    if (c == NULL)
        return;
    while ((p = ptab_any(c)) != NULL)
        finish(c, p, ERR_CLOSED, "client closed", NULL);
    if (c->loop) {
        loop_flush_del(c->loop, client_flush, c);
        loop_zmq_del(c->loop, c->sock);
        loop_timer_cancel(c->loop, &c->retry_timer);
        loop_timer_cancel(c->loop, &c->deadline_timer);
    }
    heap_free(&c->deadlines);
    batch_free(&c->out);
    zsock_destroy(&c->zs);
    while ((p = c->spare) != NULL) {
        c->spare = p->hnext;
        free(p);
    }
    free(c->buckets);
    free(c);
    *client_p = NULL;
}

size_t
bus_client_pending(const bus_client_t *c)
{
    return c->npending;
}

static int
send_request(bus_client_t *c, const char *service, const char *reqid,
             const char *trace, const char *payload, size_t len)
{
    const char *fields[] = {PROTO_CLIENT, service, reqid, trace};
    char hdr[HDR_MAX];
    size_t hl = hdr_build(hdr, sizeof(hdr), 4, fields, NULL);
    const void *parts[] = {hdr, payload};
    size_t lens[] = {hl, len};

    return frames_send(c->sock, 2, parts, lens);
}

static void flush_unsent(bus_client_t *c);

static void
on_retry(loop_t *loop, void *arg)
{
    bus_client_t *c = arg;

    (void)loop;
    c->retry_timer = NULL;
    flush_unsent(c);
}

/* Hands waiting requests to a broker, oldest first; stops at the first
 * that cannot go (none can then). */
static void
flush_unsent(bus_client_t *c)
{
    struct pending *p;

    while ((p = c->unsent_head) != NULL) {
        if (send_request(c, p->service, p->id, p->trace, p->payload,
                         p->payload_len) != 0)
            break;
        c->unsent_head = p->next_unsent;
        if (c->unsent_head == NULL)
            c->unsent_tail = NULL;
        p->next_unsent = NULL;
        free(p->payload);
        p->payload = NULL;
    }
    if (c->unsent_head && c->loop && c->retry_timer == NULL)
        c->retry_timer = loop_timer_add(c->loop, RETRY_MS, on_retry, c);
}

/* Keeps p, which could not go to a broker yet, for flush_unsent(). */
static void
queue_unsent(bus_client_t *c, struct pending *p, const char *service,
             const char *trace, const void *payload, size_t len)
{
    p->service = xstrdup(service);
    p->trace = xstrdup(trace);
    p->payload = xmemdup(payload, len);
    p->payload_len = len;
    if (c->unsent_tail)
        c->unsent_tail->next_unsent = p;
    else
        c->unsent_head = p;
    c->unsent_tail = p;
    if (c->loop && c->retry_timer == NULL)
        c->retry_timer = loop_timer_add(c->loop, RETRY_MS, on_retry, c);
}

/* Sends the requests gathered in this turn: as one batch (frames.h), or
 * as a message of its own when there is one. When no broker takes it,
 * each request waits as unsent, in order. */
static int
client_flush(loop_t *loop, void *arg)
{
    bus_client_t *c = arg;
    struct hdr h;
    const void *env;
    size_t pos = 0, envlen;
    int count = 0;

    (void)loop;
    c->went = false; /* the turn ends */
    if (c->out.n == 0)
        return 0;
    if (batch_send(c->sock, NULL, 0, PROTO_CLIENT, &c->out) == 0)
        return 1;
    while (batch_next(c->out.buf, c->out.len, &pos, &count, &h, &env,
                      &envlen) > 0) {
        struct pending *p = ptab_find(c, h.f[2]); /* ours: well formed */

        if (p != NULL && p->payload == NULL)
            queue_unsent(c, p, h.f[1], h.f[3], env, envlen);
    }
    batch_reset(&c->out);
    return 1;
}

/* Times out every request whose deadline has passed, earliest first. */
static void
on_deadline(loop_t *loop, void *arg)
{
    bus_client_t *c = arg;
    int64_t now = clock_wall_us();
    struct heap_node *top;

    (void)loop;
    c->deadline_timer = NULL; /* it is firing */

    while ((top = heap_top(&c->deadlines)) != NULL && top->key <= now) {
        struct pending *p = heap_entry(top, struct pending, dl);

        finish(c, p, ERR_TIMEOUT,
               p->payload ? "no broker reachable before the deadline"
                          : "no reply before the deadline",
               NULL);
    }
    arm_deadline(c);
}

/* to names the service, or NULL for the one of the request's type. */
static struct pending *
pending_start(bus_client_t *c, const char *to, envelope_t **req_p,
              bus_reply_fn *fn, void *arg, int *err)
{
    envelope_t *req = *req_p;
    char service[PROTO_MAX_NAME];
    const char *fields[4] = {PROTO_CLIENT};
    struct pending *p;
    const char *payload;
    size_t len, idlen;
    bool batched;
    int bad;

    *req_p = NULL;
    if (to != NULL)
        bad = *to == '\0' ||
              snprintf(service, sizeof(service), "%s", to) >=
                  (int)sizeof(service);
    else
        bad = bus_service_of(envelope_type(req), service, sizeof(service)) !=
              0;
    if (bad || ptab_find(c, envelope_id(req)) != NULL) {
        envelope_destroy(&req);
        *err = ERR_INVAL;
        return NULL;
    }
    envelope_encode_scratch(req, &payload, &len);
    p = pending_alloc(c);
    p->client = c;
    idlen = strlen(envelope_id(req));
    p->id = idlen < sizeof(p->idbuf) ? p->idbuf : xmalloc(idlen + 1);
    memcpy(p->id, envelope_id(req), idlen + 1);
    p->fn = fn;
    p->arg = arg;
    p->dl.key = envelope_deadline(req);
    memcpy(p->svc, service, strlen(service) + 1); /* bounded above */
    if (c->m_results) /* the latency histogram's start; a clock read */
        p->started_us = clock_mono_us();
    ptab_insert(c, p);
    fields[1] = service;
    fields[2] = p->id;
    fields[3] = envelope_trace(req);
    /* A turn's first request goes at once: alone in its turn, it would
     * only wait, and the loop would read its socket again after sending.
     * The turn's next small ones wait for its end, to go as one batch
     * (client_flush). A big one goes now, alone, not copied into a batch. */
    batched = false;
    if (!c->went && c->out.n == 0 && c->unsent_head == NULL) {
        c->went = true;
    } else if (c->unsent_head == NULL && c->loop != NULL &&
               len <= BATCH_ENV_MAX) {
        batched = batch_add(&c->out, 4, fields, NULL, payload, len);
        if (!batched) { /* full: send it, and start another */
            client_flush(c->loop, c);
            batched = c->unsent_head == NULL &&
                      batch_add(&c->out, 4, fields, NULL, payload, len);
        }
    }
    /* The scratch is borrowed: queue_unsent() copies it. */
    if (!batched && (c->unsent_head != NULL ||
                     send_request(c, service, p->id, fields[3], payload,
                                  len) != 0))
        queue_unsent(c, p, service, fields[3], payload, len);
    heap_push(&c->deadlines, &p->dl);
    arm_deadline(c);
    envelope_destroy(&req);
    *err = 0;
    return p;
}

int
bus_client_send_take(bus_client_t *c, envelope_t **req_p, bus_reply_fn *fn,
                     void *arg)
{
    return bus_client_send_to_take(c, NULL, req_p, fn, arg);
}

int
bus_client_send_to_take(bus_client_t *c, const char *service,
                        envelope_t **req_p, bus_reply_fn *fn, void *arg)
{
    int err;

    if (c->loop == NULL) {
        envelope_destroy(req_p);
        return ERR_INVAL;
    }
    pending_start(c, service, req_p, fn, arg, &err);
    return err;
}

/* One answer from the broker: C2 | REP | reqid + env (envlen > 0), or
 * C2 | ERR | reqid | error name | text; alone or as a batch's record. */
static void
client_take(bus_client_t *c, const struct hdr *h, const void *env,
            size_t envlen)
{
    char why[256];
    struct pending *p;
    envelope_t *reply = NULL;
    int rc;

    if (h->n < 3 || !hdr_is(h, 0, PROTO_CLIENT)) {
        log_warn(NULL, "bus_client_bad_frame", "fields=%d", h->n);
        return;
    }
    p = ptab_find(c, h->f[2]);
    if (p == NULL)
        return; /* late reply to a request that already timed out */
    if (hdr_is(h, 1, PROTO_REP) && h->n == 3 && envlen > 0) {
        rc = envelope_decode(env, envlen, c->max_envelope, &reply, why,
                             sizeof(why));
        if (rc != 0) {
            log_warn(NULL, "bus_client_bad_reply", "req=%s err=%s why=%s",
                     h->f[2], err_name(rc), log_q(why));
            finish(c, p, ERR_PROTO, why, NULL);
        } else {
            finish(c, p, 0, "ok", reply);
        }
    } else if (hdr_is(h, 1, PROTO_ERR) && h->n == 5 && envlen == 0) {
        finish(c, p, err_from_name(h->f[3]), h->f[4], NULL);
    } else {
        log_warn(NULL, "bus_client_bad_frame", "req=%s", h->f[2]);
    }
    envelope_destroy(&reply);
}

/* client_take() for a batch's record. */
static void
client_record(void *c, const struct hdr *h, const void *env, size_t envlen)
{
    client_take(c, h, env, envlen);
}

/* Reads and dispatches one message from the broker. Returns 1 when a
 * message was handled, 0 when none was waiting, or an error. */
static int
client_read_one(bus_client_t *c)
{
    zmq_msg_t f[FRAMES_MAX];
    struct hdr h;
    int n = frames_recv(c->sock, f, FRAMES_MAX);

    if (n <= 0)
        return n;
    if (n > 2 || hdr_parse(&f[0], &h) < 2) {
        log_warn(NULL, "bus_client_bad_frame", "frames=%d", n);
    } else if (hdr_is(&h, 0, PROTO_CLIENT) && hdr_is(&h, 1, PROTO_BATCH) &&
               h.n == 2 && n == 2) {
        int count;

        if (batch_each(&f[1], client_record, c, &count) != 0)
            log_warn(NULL, "bus_client_bad_batch", "records=%d", count);
    } else {
        client_take(c, &h, n == 2 ? zmq_msg_data(&f[1]) : NULL,
                    n == 2 ? zmq_msg_size(&f[1]) : 0);
    }
    frames_close(f, n < FRAMES_MAX ? n : FRAMES_MAX);
    return 1;
}

static int
client_on_readable(loop_t *loop, void *zsocket, void *arg)
{
    (void)loop;
    (void)zsocket;
    return client_read_one(arg) > 0;
}

struct call_result {
    int done, err;
    envelope_t *reply;
    char text[256];
};

static void
call_done(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct call_result *r = arg;

    r->done = 1;
    r->err = err;
    snprintf(r->text, sizeof(r->text), "%s", text);
    if (reply)
        r->reply = envelope_dup(reply);
}

int
bus_client_call(bus_client_t *c, envelope_t **req_p, envelope_t **reply_out,
                char *why, size_t whylen)
{
    return bus_client_call_to(c, NULL, req_p, reply_out, why, whylen);
}

int
bus_client_call_to(bus_client_t *c, const char *service, envelope_t **req_p,
                   envelope_t **reply_out, char *why, size_t whylen)
{
    struct call_result r = {0};
    struct pending *p;
    char id[ENVELOPE_MAX_NAME + 1];
    int err;

    *reply_out = NULL;
    p = pending_start(c, service, req_p, call_done, &r, &err);
    if (p == NULL) {
        snprintf(why, whylen, "%s", err_str(err));
        return err;
    }
    snprintf(id, sizeof(id), "%s", p->id);
    client_flush(c->loop, c); /* not waiting for the loop's turn to end */
    while (!r.done) {
        int64_t left = (p->dl.key - clock_wall_us()) / 1000;
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};

        if (left <= 0) {
            finish(c, p, ERR_TIMEOUT,
                   p->payload ? "no broker reachable before the deadline"
                              : "no reply before the deadline",
                   NULL);
            break;
        }
        if (c->unsent_head) {
            flush_unsent(c);
            if (left > RETRY_MS)
                left = RETRY_MS;
        }
        if (zmq_poll(&item, 1, (long)left) < 0 && errno != EINTR) {
            finish(c, p, ERR_SYS, "poll failed", NULL);
            break;
        }
        while (!r.done && client_read_one(c) > 0)
            ;
        client_flush(c->loop, c); /* what the replies' callbacks asked */
        /* Replies to other requests may have finished p's neighbours; p
         * itself is alive until r.done. */
        p = r.done ? NULL : ptab_find(c, id);
        if (p == NULL && !r.done)
            break;
    }
    snprintf(why, whylen, "%s", r.text);
    *reply_out = r.reply;
    return r.done ? r.err : ERR_SYS;
}
