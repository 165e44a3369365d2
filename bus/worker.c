/*
 * worker.c - the worker side of the bus (bus.h).
 *
 * One DEALER link per broker. Each link sends READY with the service and
 * capacity, a heartbeat every heartbeat_ms, and takes the broker for dead
 * when it has heard nothing for liveness heartbeats: it then makes a new
 * socket and registers again, which is how a restarted broker is rejoined.
 * A broker that does not know us (it restarted between two heartbeats)
 * says BYE, and we register again at once.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "bus.h"
#include "frames.h"
#include "lib/clock.h"
#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "proto.h"

struct link {
    bus_worker_t *worker;
    char *endpoint;
    zsock_t *zs;
    void *sock;
    unsigned gen; /* bumped at every reconnect */
    int64_t last_heard;
    bool heard; /* the broker spoke since we last registered */
    struct batch out; /* this turn's replies, sent before the loop waits */
    bool went;        /* a reply went alone this turn: the next ones batch */
};

struct bus_worker {
    loop_t *loop;
    struct bus_worker_opts o;
    char *service;
    struct link *links;
    int nlinks;
    int inflight;
    loop_timer_t *hb_timer;
    bus_request_fn *fn;
    void *arg;
};

struct bus_request {
    bus_worker_t *worker;
    bool answered;
    int link;
    unsigned gen;
    char *client_id; /* the client's ROUTER identity, in hex */
    char *reqid;     /* both in the same allocation as the request */
    envelope_t *env;
    int64_t received_us;
};

static int worker_on_readable(loop_t *loop, void *zsocket, void *arg);
static int worker_flush(loop_t *loop, void *arg);
static void on_heartbeat(loop_t *loop, void *arg);

static void
link_send(struct link *l, int n, const void *const *parts, const size_t *lens)
{
    if (l->sock)
        frames_send(l->sock, n, parts, lens);
}

/* Sends one header frame of n fields. */
static void
link_hdr(struct link *l, int n, const char *const *fields)
{
    char hdr[HDR_MAX];
    size_t len = hdr_build(hdr, sizeof(hdr), n, fields, NULL);
    const void *parts[1] = {hdr};

    link_send(l, 1, parts, &len);
}

static void
link_ready(bus_worker_t *w, struct link *l)
{
    char cap[16];
    const char *fields[4] = {PROTO_WORKER, PROTO_READY, w->service, cap};

    snprintf(cap, sizeof(cap), "%d", w->o.capacity);
    link_hdr(l, 4, fields);
}

static void
link_signal(struct link *l, const char *what)
{
    const char *fields[2] = {PROTO_WORKER, what};

    link_hdr(l, 2, fields);
}

static int
link_open(bus_worker_t *w, struct link *l)
{
    int zero = 0, hwm = 100000;

    l->zs = zsock_new(ZMQ_DEALER);
    if (l->zs == NULL)
        return ERR_SYS;
    l->sock = zsock_resolve(l->zs);
    zmq_setsockopt(l->sock, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(l->sock, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(l->sock, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    if (zmq_connect(l->sock, l->endpoint) != 0 ||
        loop_zmq_add(w->loop, l->sock, worker_on_readable, l) != 0) {
        zsock_destroy(&l->zs);
        l->sock = NULL;
        return ERR_SYS;
    }
    l->gen++;
    l->last_heard = clock_mono_ms();
    l->heard = false;
    link_ready(w, l);
    return 0;
}

static void
link_close(bus_worker_t *w, struct link *l)
{
    if (l->zs == NULL)
        return;
    batch_reset(&l->out); /* replies for a broker that is gone */
    loop_zmq_del(w->loop, l->sock);
    zsock_destroy(&l->zs);
    l->sock = NULL;
}

bus_worker_t *
bus_worker_new(loop_t *loop, const struct bus_worker_opts *opts,
               bus_request_fn *fn, void *arg, char *why, size_t whylen)
{
    bus_worker_t *w = xcalloc(1, sizeof(*w));
    char **eps;
    int n = config_list(opts->endpoints, &eps);

    w->loop = loop;
    w->o = *opts;
    w->service = xstrdup(opts->service);
    w->o.service = w->service;
    w->o.endpoints = NULL;
    w->fn = fn;
    w->arg = arg;
    w->links = xcalloc((size_t)(n ? n : 1), sizeof(*w->links));
    if (n == 0 || strlen(opts->service) >= PROTO_MAX_NAME) {
        snprintf(why, whylen, n ? "service name too long" : "no endpoint");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        struct link *l = &w->links[w->nlinks++];

        l->worker = w;
        l->endpoint = xstrdup(eps[i]);
        if (link_open(w, l) != 0) {
            snprintf(why, whylen, "cannot connect to %s: %s", eps[i],
                     zmq_strerror(errno));
            goto fail;
        }
    }
    config_list_free(&eps, n);
    loop_flush_add(loop, worker_flush, w);
    w->hb_timer = loop_timer_add(loop, w->o.heartbeat_ms, on_heartbeat, w);
    return w;
fail:
    config_list_free(&eps, n);
    bus_worker_destroy(&w);
    return NULL;
}

void
bus_worker_destroy(bus_worker_t **worker_p)
{
    bus_worker_t *w = *worker_p;

    if (w == NULL)
        return;
    worker_flush(w->loop, w); /* answers given: they still go */
    loop_flush_del(w->loop, worker_flush, w);
    for (int i = 0; i < w->nlinks; i++) {
        link_signal(&w->links[i], PROTO_BYE);
        link_close(w, &w->links[i]);
        batch_free(&w->links[i].out);
        free(w->links[i].endpoint);
    }
    loop_timer_cancel(w->loop, &w->hb_timer);
    free(w->links);
    free(w->service);
    free(w);
    *worker_p = NULL;
}

static void
on_heartbeat(loop_t *loop, void *arg)
{
    bus_worker_t *w = arg;
    int64_t now = clock_mono_ms();

    for (int i = 0; i < w->nlinks; i++) {
        struct link *l = &w->links[i];

        if (now - l->last_heard > (int64_t)w->o.heartbeat_ms * w->o.liveness) {
            /* A new socket rather than the old one: its queue may hold
             * requests for a broker that is gone. */
            log_warn(NULL, "bus_broker_lost", "endpoint=%s silent_ms=%lld",
                     l->endpoint, (long long)(now - l->last_heard));
            link_close(w, l);
            if (link_open(w, l) != 0)
                log_err(NULL, "bus_reconnect_failed", "endpoint=%s",
                        l->endpoint);
        } else {
            link_signal(l, PROTO_HB);
        }
    }
    w->hb_timer = loop_timer_add(loop, w->o.heartbeat_ms, on_heartbeat, w);
}

/* client is the client's id in hex, as the request brought it. */
static void
send_err(struct link *l, const char *client, const char *reqid, int err,
         const char *text)
{
    const char *fields[6] = {PROTO_WORKER, PROTO_ERR, client, reqid,
                             err_name(err), text};

    link_hdr(l, 6, fields);
}

/* Sends each link's replies of this turn: one batch, or a message of
 * its own when there is one (frames.h). */
static int
worker_flush(loop_t *loop, void *arg)
{
    bus_worker_t *w = arg;
    int sent = 0;

    (void)loop;
    for (int i = 0; i < w->nlinks; i++) {
        struct link *l = &w->links[i];

        l->went = false; /* the turn ends */
        if (l->out.n == 0)
            continue;
        if (l->sock == NULL ||
            batch_send(l->sock, NULL, 0, PROTO_WORKER, &l->out) != 0)
            batch_reset(&l->out); /* as a lone reply would be: lost */
        sent = 1;
    }
    return sent;
}

/* W2 | REQ | client | reqid | trace  + the envelope (data, len). */
static void
take_request(bus_worker_t *w, struct link *l, const struct hdr *h,
             const void *data, size_t len)
{
    char why[256];
    envelope_t *env = NULL;
    bus_request_t *req;
    int rc;

    rc = envelope_decode(data, len, w->o.max_envelope, &env, why,
                         sizeof(why));
    if (rc != 0) {
        log_warn(NULL, "bus_bad_request", "service=%s err=%s why=%s",
                 w->service, err_name(rc), log_q(why));
        send_err(l, h->f[2], h->f[3], ERR_PROTO, why);
        return;
    }
    /* One allocation for the request and its two strings. */
    req = xmalloc(sizeof(*req) + h->len[2] + h->len[3] + 2);
    memset(req, 0, sizeof(*req));
    req->worker = w;
    req->link = (int)(l - w->links);
    req->gen = l->gen;
    req->client_id = (char *)(req + 1);
    memcpy(req->client_id, h->f[2], h->len[2] + 1);
    req->reqid = req->client_id + h->len[2] + 1;
    memcpy(req->reqid, h->f[3], h->len[3] + 1);
    req->env = env;
    req->received_us = clock_mono_us();
    w->inflight++;
    /* A request whose caller has given up is never acted on: the caller
     * already told its client to retry, and acting now would do the work
     * twice. */
    if (envelope_deadline(env) < clock_wall_us()) {
        log_warn(envelope_trace(env), "bus_request_expired", "type=%s",
                 envelope_type(env));
        bus_worker_fail_take(w, &req, 451, "4.4.7", "deadline passed",
                             ERR_TIMEOUT);
        return;
    }
    w->fn(w->arg, &req);
}

/* A batch's record, from the broker of link arg: W2 | REQ | ... */
static void
worker_record(void *arg, const struct hdr *h, const void *env, size_t envlen)
{
    struct link *l = arg;

    if (hdr_is(h, 0, PROTO_WORKER) && hdr_is(h, 1, PROTO_REQ) && h->n == 5 &&
        envlen > 0)
        take_request(l->worker, l, h, env, envlen);
    else
        log_warn(NULL, "bus_bad_frame", "endpoint=%s fields=%d", l->endpoint,
                 h->n);
}

static int
worker_on_readable(loop_t *loop, void *zsocket, void *arg)
{
    struct link *l = arg;
    bus_worker_t *w = l->worker;
    zmq_msg_t f[FRAMES_MAX];
    struct hdr h;
    int n = frames_recv(zsocket, f, FRAMES_MAX);

    if (n <= 0)
        return 0;
    l->last_heard = loop_now_ms(loop); /* this iteration's: no clock read */
    l->heard = true;
    if (n > 2 || hdr_parse(&f[0], &h) < 2 || !hdr_is(&h, 0, PROTO_WORKER)) {
        log_warn(NULL, "bus_bad_frame", "endpoint=%s frames=%d", l->endpoint,
                 n);
    } else if (hdr_is(&h, 1, PROTO_REQ) && h.n == 5 && n == 2) {
        take_request(w, l, &h, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]));
    } else if (hdr_is(&h, 1, PROTO_BATCH) && h.n == 2 && n == 2) {
        int count;

        if (batch_each(&f[1], worker_record, l, &count) != 0)
            log_warn(NULL, "bus_bad_batch", "endpoint=%s records=%d",
                     l->endpoint, count);
    } else if (hdr_is(&h, 1, PROTO_BYE)) {
        /* The broker does not know us: it restarted. */
        log_info(NULL, "bus_register_again", "endpoint=%s", l->endpoint);
        link_ready(w, l);
    } else if (!hdr_is(&h, 1, PROTO_HB)) {
        log_warn(NULL, "bus_bad_frame", "endpoint=%s frames=%d", l->endpoint,
                 n);
    }
    frames_close(f, n < FRAMES_MAX ? n : FRAMES_MAX);
    return 1;
}

const envelope_t *
bus_request_envelope(const bus_request_t *req)
{
    return req->env;
}

static struct link *req_link(bus_worker_t *w, const bus_request_t *req);

void
bus_request_destroy(bus_request_t **req_p)
{
    bus_request_t *req = *req_p;
    struct link *l;

    if (req == NULL)
        return;
    if (!req->answered) {
        /* Tell the broker, so that it frees the worker's slot and the
         * caller hears now instead of at its deadline. */
        if ((l = req_link(req->worker, req)) != NULL)
            send_err(l, req->client_id, req->reqid, ERR_WORKER_LOST,
                     "request dropped by the worker");
    }
    req->worker->inflight--;
    envelope_destroy(&req->env);
    free(req);
    *req_p = NULL;
}

/* The link a request came by, or NULL when it has been reconnected since
 * (the broker that sent it is gone, and so is the way back). */
static struct link *
req_link(bus_worker_t *w, const bus_request_t *req)
{
    struct link *l = &w->links[req->link];

    return l->gen == req->gen && l->sock ? l : NULL;
}

int
bus_worker_reply_take(bus_worker_t *w, bus_request_t **req_p,
                      envelope_t **reply_p)
{
    bus_request_t *req = *req_p;
    struct link *l = req_link(w, req);
    const char *trace = envelope_trace(req->env);
    const char *payload;
    size_t len;
    int rc = ERR_CLOSED;

    if (l) {
        const char *fields[5] = {PROTO_WORKER, PROTO_REP, req->client_id,
                                 req->reqid, trace};
        char hdr[HDR_MAX];
        const void *parts[2];
        size_t lens[2];

        envelope_encode_scratch(*reply_p, &payload, &len);
        /* As the client does: a turn's first reply goes at once, the
         * turn's next small ones as one batch at its end (worker_flush),
         * and a big one goes now. */
        bool batched = false;

        if (!l->went && l->out.n == 0)
            l->went = true;
        else
            batched = len <= BATCH_ENV_MAX &&
                      batch_add(&l->out, 5, fields, NULL, payload, len);

        if (!batched && len <= BATCH_ENV_MAX) { /* full: send, start again */
            worker_flush(w->loop, w);
            batched = batch_add(&l->out, 5, fields, NULL, payload, len);
        }
        rc = 0;
        if (!batched) {
            parts[0] = hdr;
            lens[0] = hdr_build(hdr, sizeof(hdr), 5, fields, NULL);
            parts[1] = payload;
            lens[1] = len;
            rc = frames_send(l->sock, 2, parts, lens);
        }
    }
    req->answered = true;
    envelope_destroy(reply_p);
    bus_request_destroy(req_p);
    return rc;
}

int
bus_worker_fail_take(bus_worker_t *w, bus_request_t **req_p, int code,
                     const char *ecode, const char *text, int err)
{
    envelope_t *reply = envelope_new_reply((*req_p)->env, code, ecode, text);

    if (err)
        value_set_str(envelope_body(reply), ENV_KEY_ERROR, err_name(err));
    return bus_worker_reply_take(w, req_p, &reply);
}

int
bus_worker_inflight(const bus_worker_t *w)
{
    return w->inflight;
}

int
bus_worker_brokers(const bus_worker_t *w)
{
    int64_t now = clock_mono_ms();
    int n = 0;

    for (int i = 0; i < w->nlinks; i++)
        if (w->links[i].heard && now - w->links[i].last_heard <=
                                     (int64_t)w->o.heartbeat_ms * w->o.liveness)
            n++;
    return n;
}

int64_t
bus_request_received_us(const bus_request_t *req)
{
    return req->received_us;
}
