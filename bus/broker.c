#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "broker.h"
#include "envelope.h"
#include "frames.h"
#include "lib/clock.h"
#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "proto.h"

/* Requests waiting for a free worker, per service, at most. */
#define QUEUE_MAX 100000

/* A request in a worker's hand, kept inline (no allocation per request):
 * ROUTER identities are at most 255 bytes, request ids at most 128 (the
 * front refuses longer ones). */
struct inflight {
    unsigned char client[255];
    unsigned char client_len;
    unsigned char reqid_len;
    char reqid[129];
};

struct service;

struct worker {
    char key[2 * 256 + 1]; /* identity in hex, the workers table key */
    void *id;
    size_t id_len;
    struct service *svc;
    int capacity;
    struct inflight *held; /* requests in hand */
    int nheld, capheld;
    int64_t last_heard;
    struct batch out; /* requests for it from the message being handled */
    bool dirty;       /* out has records: listed in the broker's dirty */
};

/* A request waiting for a worker: its frames, moved in. */
struct waiting {
    zmq_msg_t client, env;   /* moved in */
    char *reqid, *trace;
    int64_t since;
    struct waiting *next;
};

struct service {
    char *name;
    struct worker **workers;
    int nworkers, capworkers;
    int rr;
    struct waiting *qhead, *qtail;
    int qlen;
};

/* Answers for one client from the message being handled. */
struct client_out {
    unsigned char id[255];
    size_t id_len;
    struct batch out;
};

/* How far ahead of the least loaded worker the previous request's may get
 * while a batch is handed out (front_one). */
#define STICK_AHEAD (BATCH_SEND_RECORDS / 2)

/* Clients one message's answers are gathered for, at most: a worker's
 * batch mostly answers one client, or a few. */
#define CLIENT_OUTS 8

struct broker {
    loop_t *loop;
    struct broker_opts o;
    zsock_t *front_zs, *back_zs, *trace_zs;
    void *front, *back, *trace;
    zhashx_t *services; /* name -> struct service */
    zhashx_t *workers;  /* hex identity -> struct worker */
    int subscribers;    /* topics subscribed on the trace feed */
    int trace_fd;       /* its ZMQ_FD, watched as a plain fd; or -1 */
    loop_timer_t *hb_timer;
    uint64_t routed;
    /* While a batch is handled, what it leads to is gathered here, per
     * peer, and sent when it is done (flush_outputs): a batch in, a batch
     * out to each worker and client it concerns. */
    bool batching;
    struct worker **dirty;
    int ndirty, capdirty;
    struct client_out couts[CLIENT_OUTS];
    int ncouts;
    struct worker *last; /* the batch's previous request went to it */
    metric_t *m_routed, *m_refused, *m_workers, *m_queued; /* or NULL */
};

static int broker_on_front(loop_t *loop, void *zsocket, void *arg);
static int broker_on_back(loop_t *loop, void *zsocket, void *arg);
static int broker_on_trace(loop_t *loop, void *zsocket, void *arg);
static void broker_on_trace_fd(loop_t *loop, int fd, int events, void *arg);
static void broker_on_tick(loop_t *loop, void *arg);

static void
hex_key(const void *id, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = id;

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * len] = '\0';
}

static int
bind_all(void *sock, const char *endpoints, char *why, size_t whylen)
{
    char **eps;
    int n = config_list(endpoints, &eps), rc = 0;

    for (int i = 0; i < n && rc == 0; i++)
        if (zmq_bind(sock, eps[i]) != 0) {
            snprintf(why, whylen, "cannot bind %s: %s", eps[i],
                     zmq_strerror(errno));
            rc = ERR_SYS;
        }
    config_list_free(&eps, n);
    return rc;
}

static void
service_free(void **item_p)
{
    struct service *s = *item_p;

    if (s == NULL)
        return;
    while (s->qhead) {
        struct waiting *w = s->qhead;

        s->qhead = w->next;
        zmq_msg_close(&w->client);
        zmq_msg_close(&w->env);
        free(w->reqid);
        free(w->trace);
        free(w);
    }
    free(s->workers);
    free(s->name);
    free(s);
    *item_p = NULL;
}

static void
worker_free(void **item_p)
{
    struct worker *w = *item_p;

    if (w == NULL)
        return;
    free(w->held);
    free(w->id);
    batch_free(&w->out);
    free(w);
    *item_p = NULL;
}

broker_t *
broker_new(loop_t *loop, const struct broker_opts *opts, char *why,
           size_t whylen)
{
    broker_t *b = xcalloc(1, sizeof(*b));
    int zero = 0, hwm = 200000;
    size_t len;

    b->loop = loop;
    b->o = *opts;
    b->trace_fd = -1;
    b->services = zhashx_new();
    zhashx_set_destructor(b->services, service_free);
    b->workers = zhashx_new();
    zhashx_set_destructor(b->workers, worker_free);
    b->front_zs = zsock_new(ZMQ_ROUTER);
    b->back_zs = zsock_new(ZMQ_ROUTER);
    b->trace_zs = zsock_new(ZMQ_XPUB);
    if (!b->front_zs || !b->back_zs || !b->trace_zs) {
        snprintf(why, whylen, "cannot make sockets");
        goto fail;
    }
    b->front = zsock_resolve(b->front_zs);
    b->back = zsock_resolve(b->back_zs);
    b->trace = zsock_resolve(b->trace_zs);
    for (int i = 0; i < 3; i++) {
        void *s = i == 0 ? b->front : i == 1 ? b->back : b->trace;

        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm));
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    }
    if (bind_all(b->front, opts->clients, why, whylen) ||
        bind_all(b->back, opts->workers, why, whylen) ||
        bind_all(b->trace, opts->trace, why, whylen))
        goto fail;
    /* The trace socket only brings (un)subscriptions, seldom: it is not
     * read at every pass over the ZeroMQ sockets like the other two
     * (lib/loop.h), which cost a system call or two each time, but when
     * its ZMQ_FD says it has news, and at every tick for what our own
     * publishing may have taken the signal of (a late count then only
     * delays when publishing starts or stops). */
    len = sizeof(b->trace_fd);
    if (loop_zmq_add(loop, b->front, broker_on_front, b) ||
        loop_zmq_add(loop, b->back, broker_on_back, b) ||
        zmq_getsockopt(b->trace, ZMQ_FD, &b->trace_fd, &len) != 0 ||
        loop_fd_add(loop, b->trace_fd, LOOP_READ, broker_on_trace_fd, b)) {
        b->trace_fd = -1;
        snprintf(why, whylen, "cannot watch the sockets");
        goto fail;
    }
    b->hb_timer = loop_timer_add(loop, opts->heartbeat_ms, broker_on_tick, b);
    return b;
fail:
    broker_destroy(&b);
    return NULL;
}

void
broker_destroy(broker_t **broker_p)
{
    broker_t *b = *broker_p;

    if (b == NULL)
        return;
    loop_timer_cancel(b->loop, &b->hb_timer);
    if (b->front)
        loop_zmq_del(b->loop, b->front);
    if (b->back)
        loop_zmq_del(b->loop, b->back);
    if (b->trace_fd >= 0)
        loop_fd_del(b->loop, b->trace_fd);
    zhashx_destroy(&b->workers);
    zhashx_destroy(&b->services);
    zsock_destroy(&b->front_zs);
    zsock_destroy(&b->back_zs);
    zsock_destroy(&b->trace_zs);
    for (int i = 0; i < CLIENT_OUTS; i++)
        batch_free(&b->couts[i].out);
    free(b->dirty);
    free(b);
    *broker_p = NULL;
}

/* Sending. */

static void
send_to_client_err(broker_t *b, const void *client, size_t client_len,
                   const char *reqid, int err, const char *text)
{
    const char *fields[5] = {PROTO_CLIENT, PROTO_ERR, reqid, err_name(err),
                             text};
    char hdr[HDR_MAX];
    const void *parts[2] = {client, hdr};
    size_t lens[2] = {client_len,
                      hdr_build(hdr, sizeof(hdr), 5, fields, NULL)};

    frames_send(b->front, 2, parts, lens);
}

/* A copy of env with its secrets masked, for a service whose envelopes
 * may carry them (auth.verify's password): secrets never reach the trace
 * feed. An envelope that does not decode is not published at all. */
static int
masked_copy(zmq_msg_t *out, const void *env, size_t envlen)
{
    envelope_t *e = NULL;
    char why[128], *buf;
    size_t len;

    if (envelope_decode(env, envlen, SIZE_MAX, &e, why, sizeof(why)) != 0)
        return -1;
    envelope_mask_secrets(e);
    envelope_encode(e, &buf, &len);
    envelope_destroy(&e);
    zmq_msg_init_size(out, len);
    memcpy(zmq_msg_data(out), buf, len);
    free(buf);
    return 0;
}

/* The envelope is env (envlen bytes), which is envmsg's when it came as
 * a frame of its own, or NULL when it came in a batch. */
static void
publish(broker_t *b, const char *trace, const char *service, const void *env,
        size_t envlen, zmq_msg_t *envmsg)
{
    zmq_msg_t e;

    if (b->subscribers <= 0)
        return;
    if (envelope_service_has_secrets(service)) {
        if (masked_copy(&e, env, envlen) != 0)
            return;
    } else if (envmsg != NULL) {
        zmq_msg_init(&e);
        zmq_msg_copy(&e, envmsg); /* shares the bytes: no copy of the body */
    } else {
        zmq_msg_init_size(&e, envlen);
        memcpy(zmq_msg_data(&e), env, envlen);
    }
    if (zmq_send(b->trace, trace, strlen(trace),
                 ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&e);
        return;
    }
    zmq_send(b->trace, service, strlen(service), ZMQ_SNDMORE);
    if (zmq_msg_send(&e, b->trace, 0) < 0)
        zmq_msg_close(&e);
}

/* Picks the worker with the fewest requests in hand for its capacity,
 * starting the scan after the last one chosen so that equals take turns. */
static struct worker *
pick_worker(struct service *s)
{
    struct worker *best = NULL;
    int besti = -1;

    for (int k = 0; k < s->nworkers; k++) {
        int i = (s->rr + k) % s->nworkers;
        struct worker *w = s->workers[i];

        if (w->nheld >= w->capacity)
            continue;
        if (best == NULL ||
            (int64_t)w->nheld * best->capacity <
                (int64_t)best->nheld * w->capacity) {
            best = w;
            besti = i;
        }
    }
    if (best)
        s->rr = (besti + 1) % s->nworkers;
    return best;
}

/* Sends what the message just handled gathered for each worker and
 * client. A send that fails is dropped, as a lone message's would be:
 * the callers' deadlines cover it. */
static void
flush_outputs(broker_t *b)
{
    for (int i = 0; i < b->ndirty; i++) {
        struct worker *w = b->dirty[i];

        if (batch_send(b->back, w->id, w->id_len, PROTO_WORKER, &w->out))
            batch_reset(&w->out);
        w->dirty = false;
    }
    b->ndirty = 0;
    for (int i = 0; i < b->ncouts; i++) {
        struct client_out *o = &b->couts[i];

        if (batch_send(b->front, o->id, o->id_len, PROTO_CLIENT, &o->out))
            batch_reset(&o->out);
    }
    b->ncouts = 0;
    b->last = NULL;
}

/* Adds a request for w to its batch (b->batching is set). */
static void
worker_out_add(broker_t *b, struct worker *w, const char *const *fields,
               const void *env, size_t envlen)
{
    if (!batch_add(&w->out, 5, fields, NULL, env, envlen)) {
        /* Full: this one starts the next. */
        if (batch_send(b->back, w->id, w->id_len, PROTO_WORKER, &w->out))
            batch_reset(&w->out);
        batch_add(&w->out, 5, fields, NULL, env, envlen);
    }
    if (!w->dirty) {
        if (b->ndirty == b->capdirty) {
            b->capdirty = b->capdirty ? b->capdirty * 2 : 8;
            b->dirty = xrealloc(b->dirty,
                                sizeof(*b->dirty) * (size_t)b->capdirty);
        }
        b->dirty[b->ndirty++] = w;
        w->dirty = true;
    }
}

/* Adds an answer for the client whose identity is id (b->batching is
 * set): n fields, and env unless envlen is 0. */
static void
client_out_add(broker_t *b, const void *id, size_t id_len, int n,
               const char *const *fields, const void *env, size_t envlen)
{
    struct client_out *o = NULL;

    for (int i = 0; i < b->ncouts && o == NULL; i++)
        if (b->couts[i].id_len == id_len &&
            memcmp(b->couts[i].id, id, id_len) == 0)
            o = &b->couts[i];
    if (o == NULL) {
        if (b->ncouts == CLIENT_OUTS) /* many clients: send what is here */
            flush_outputs(b);
        o = &b->couts[b->ncouts++];
        memcpy(o->id, id, id_len);
        o->id_len = id_len;
    }
    if (!batch_add(&o->out, n, fields, NULL, env, envlen)) {
        if (batch_send(b->front, o->id, o->id_len, PROTO_CLIENT, &o->out))
            batch_reset(&o->out);
        batch_add(&o->out, n, fields, NULL, env, envlen);
    }
}

/* Hands a request to w: the client's identity (client, client_len) and
 * the envelope (env, envlen), which is envmsg's when it came as a frame of
 * its own (sent on without a copy; the caller closes it), or NULL when it
 * came in a batch. While a batch is handled, a small request joins w's
 * batch; otherwise it goes at once. */
static void
dispatch(broker_t *b, struct worker *w, const void *client, size_t client_len,
         const char *reqid, const char *trace, const void *env, size_t envlen,
         zmq_msg_t *envmsg)
{
    char hex[2 * 255 + 1], hdr[HDR_MAX];
    const char *fields[5] = {PROTO_WORKER, PROTO_REQ, hex, reqid, trace};
    struct inflight *h;
    size_t hl;

    if (w->nheld == w->capheld) {
        w->capheld = w->capheld ? w->capheld * 2 : 8;
        w->held = xrealloc(w->held, sizeof(*w->held) * (size_t)w->capheld);
    }
    h = &w->held[w->nheld++];
    h->client_len = (unsigned char)client_len;
    memcpy(h->client, client, h->client_len);
    h->reqid_len = (unsigned char)strlen(reqid);
    memcpy(h->reqid, reqid, (size_t)h->reqid_len + 1);
    publish(b, trace, w->svc->name, env, envlen, envmsg);
    b->routed++;
    metrics_inc(b->m_routed, METRICS_L(w->svc->name));
    hex_encode(client, client_len, hex);
    if (b->batching && envlen <= BATCH_ENV_MAX) {
        worker_out_add(b, w, fields, env, envlen);
        return;
    }
    hl = hdr_build(hdr, sizeof(hdr), 5, fields, NULL);
    zmq_send(b->back, w->id, w->id_len, ZMQ_SNDMORE);
    zmq_send(b->back, hdr, hl, ZMQ_SNDMORE);
    if (envmsg != NULL)
        zmq_msg_send(envmsg, b->back, 0);
    else
        zmq_send(b->back, env, envlen, 0);
}

/* Gives queued requests of s to workers with room. */
static void
drain_queue(broker_t *b, struct service *s)
{
    struct worker *w;

    while (s->qhead && (w = pick_worker(s)) != NULL) {
        struct waiting *q = s->qhead;

        s->qhead = q->next;
        if (s->qhead == NULL)
            s->qtail = NULL;
        s->qlen--;
        dispatch(b, w, zmq_msg_data(&q->client), zmq_msg_size(&q->client),
                 q->reqid, q->trace, zmq_msg_data(&q->env),
                 zmq_msg_size(&q->env), &q->env);
        zmq_msg_close(&q->client);
        zmq_msg_close(&q->env);
        free(q->reqid);
        free(q->trace);
        free(q);
    }
}

/* One request from a client: h is C2 | service | reqid | trace, and the
 * envelope env (envlen bytes) is envmsg's when it came as a frame of its
 * own (moved into the queue or sent on; the caller closes it), or NULL
 * when it came in a batch. The client's identity is idmsg's bytes. */
static void
front_one(broker_t *b, zmq_msg_t *idmsg, const struct hdr *h,
          const void *env, size_t envlen, zmq_msg_t *envmsg)
{
    const void *id = zmq_msg_data(idmsg);
    size_t id_len = zmq_msg_size(idmsg);
    struct service *s;
    struct worker *w;

    if (h->n != 4 || !hdr_is(h, 0, PROTO_CLIENT) || h->len[1] == 0 ||
        h->len[1] >= PROTO_MAX_NAME || h->len[2] == 0 || h->len[2] > 128 ||
        h->len[3] == 0 || h->len[3] > 128 || envlen == 0) {
        log_warn(NULL, "broker_bad_client_frame", "fields=%d", h->n);
        return;
    }
    s = zhashx_lookup(b->services, h->f[1]);
    if (s == NULL || s->nworkers == 0) {
        char text[128];

        snprintf(text, sizeof(text), "no worker for service %s", h->f[1]);
        /* Not by service: a client may name any. */
        metrics_inc(b->m_refused, METRICS_L("noworker"));
        send_to_client_err(b, id, id_len, h->f[2], ERR_NOWORKER, text);
        return;
    }
    /* The least loaded worker takes it; but within a batch, the previous
     * request's worker takes it while that one is at most STICK_AHEAD
     * requests ahead of the least loaded (and has room): fewer, bigger
     * batches to workers, and the spread off by no more than that. */
    w = s->qhead == NULL ? pick_worker(s) : NULL;
    if (w != NULL && b->batching && b->last != NULL && b->last != w &&
        b->last->svc == s && b->last->nheld < b->last->capacity &&
        b->last->nheld <= w->nheld + STICK_AHEAD)
        w = b->last;
    if (w != NULL) {
        b->last = w;
        dispatch(b, w, id, id_len, h->f[2], h->f[3], env, envlen, envmsg);
    } else if (s->qlen >= QUEUE_MAX) {
        metrics_inc(b->m_refused, METRICS_L("queue_full"));
        send_to_client_err(b, id, id_len, h->f[2], ERR_NOWORKER,
                           "service queue full");
    } else {
        struct waiting *q = xcalloc(1, sizeof(*q));

        zmq_msg_init(&q->client);
        zmq_msg_copy(&q->client, idmsg);
        if (envmsg != NULL) {
            zmq_msg_init(&q->env);
            zmq_msg_move(&q->env, envmsg);
        } else {
            zmq_msg_init_size(&q->env, envlen);
            memcpy(zmq_msg_data(&q->env), env, envlen);
        }
        q->reqid = xstrdup(h->f[2]);
        q->trace = xstrdup(h->f[3]);
        q->since = clock_mono_ms();
        if (s->qtail)
            s->qtail->next = q;
        else
            s->qhead = q;
        s->qtail = q;
        s->qlen++;
    }
}

/* A batch's record and where it came from: the client's identity frame,
 * or the worker (NULL: one we do not know). */
struct batch_from {
    broker_t *b;
    zmq_msg_t *client;
    struct worker *worker;
};

/* Handles each record of the batch in frame with fn, gathering what they
 * lead to per worker and client, and then sends that (flush_outputs()).
 * side names the socket for the log. */
static void
handle_batch(struct batch_from *from, zmq_msg_t *frame, batch_record_fn *fn,
             const char *side)
{
    broker_t *b = from->b;
    int count;

    b->batching = true;
    if (batch_each(frame, fn, from, &count) != 0)
        log_warn(NULL, "broker_bad_batch", "side=%s records=%d", side, count);
    b->batching = false;
    flush_outputs(b);
}

/* A client's record; front_one() logs what it refuses. */
static void
front_record(void *arg, const struct hdr *h, const void *env, size_t envlen)
{
    struct batch_from *from = arg;

    front_one(from->b, from->client, h, env, envlen, NULL);
}

/* Client side: the ROUTER's identity frame, then the header C2 | service
 * | reqid | trace and the envelope, or C2 | BATCH and a batch of such
 * records. */
static int
broker_on_front(loop_t *loop, void *zsocket, void *arg)
{
    broker_t *b = arg;
    zmq_msg_t f[FRAMES_MAX];
    struct hdr h;
    int n = frames_recv(zsocket, f, FRAMES_MAX);

    (void)loop;
    if (n <= 0)
        return 0;
    if (n != 3 || hdr_parse(&f[1], &h) < 2) {
        log_warn(NULL, "broker_bad_client_frame", "frames=%d", n);
    } else if (h.n == 2 && hdr_is(&h, 0, PROTO_CLIENT) &&
               hdr_is(&h, 1, PROTO_BATCH)) {
        struct batch_from from = {b, &f[0], NULL};

        handle_batch(&from, &f[2], front_record, "clients");
    } else {
        front_one(b, &f[0], &h, zmq_msg_data(&f[2]), zmq_msg_size(&f[2]),
                  &f[2]);
    }
    frames_close(f, n < FRAMES_MAX ? n : FRAMES_MAX);
    return 1;
}

static struct service *
service_get(broker_t *b, const char *name)
{
    struct service *s = zhashx_lookup(b->services, name);

    if (s == NULL) {
        s = xcalloc(1, sizeof(*s));
        s->name = xstrdup(name);
        zhashx_insert(b->services, name, s);
    }
    return s;
}

static void
service_remove_worker(struct service *s, struct worker *w)
{
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i] == w) {
            s->workers[i] = s->workers[--s->nworkers];
            break;
        }
    if (s->rr >= s->nworkers)
        s->rr = 0;
}

/* Forgets a worker; the callers of what it held hear at once. */
static void
worker_drop(broker_t *b, struct worker *w, const char *why)
{
    log_warn(NULL, "broker_worker_lost", "service=%s worker=%s held=%d "
             "why=%s", w->svc->name, w->key, w->nheld, log_q(why));
    for (int i = 0; i < w->nheld; i++)
        send_to_client_err(b, w->held[i].client, w->held[i].client_len,
                           w->held[i].reqid, ERR_WORKER_LOST,
                           "worker died with the request");
    for (int i = 0; i < b->ndirty; i++) /* not while a batch is handled */
        if (b->dirty[i] == w)
            b->dirty[i] = b->dirty[--b->ndirty];
    if (b->last == w)
        b->last = NULL;
    service_remove_worker(w->svc, w);
    zhashx_delete(b->workers, w->key);
}

static void
send_to_worker(broker_t *b, const void *id, size_t id_len, const char *what)
{
    const char *fields[2] = {PROTO_WORKER, what};
    char hdr[64];
    const void *parts[2] = {id, hdr};
    size_t lens[2] = {id_len, hdr_build(hdr, sizeof(hdr), 2, fields, NULL)};

    frames_send(b->back, 2, parts, lens);
}

/* W2 | READY | service | capacity, from the worker whose identity is id. */
static void
worker_ready(broker_t *b, zmq_msg_t *id, const struct hdr *h,
             const char *key)
{
    const char *name = h->f[2];
    struct worker *w = zhashx_lookup(b->workers, key);
    struct service *s;
    long capacity;
    char *end;

    if (h->len[2] == 0 || h->len[2] >= PROTO_MAX_NAME) {
        log_warn(NULL, "broker_bad_ready", "worker=%s", key);
        return;
    }
    capacity = strtol(h->f[3], &end, 10);
    if (*end || capacity < 1 || capacity > 1000000)
        capacity = 1;
    if (w) /* registering again: start afresh */
        worker_drop(b, w, "registered again");
    s = service_get(b, name);
    w = xcalloc(1, sizeof(*w));
    snprintf(w->key, sizeof(w->key), "%s", key);
    w->id = xmemdup(zmq_msg_data(id), zmq_msg_size(id));
    w->id_len = zmq_msg_size(id);
    w->svc = s;
    w->capacity = (int)capacity;
    w->last_heard = clock_mono_ms();
    zhashx_insert(b->workers, key, w);
    if (s->nworkers == s->capworkers) {
        s->capworkers = s->capworkers ? s->capworkers * 2 : 4;
        s->workers = xrealloc(s->workers,
                              sizeof(*s->workers) * (size_t)s->capworkers);
    }
    s->workers[s->nworkers++] = w;
    log_info(NULL, "broker_worker_ready", "service=%s worker=%s capacity=%d "
             "workers=%d", name, key, w->capacity, s->nworkers);
    drain_queue(b, s);
}

/* Takes reqid out of w's hand; false when it was not there. */
static bool
worker_release(struct worker *w, const char *reqid, size_t len)
{
    for (int i = 0; i < w->nheld; i++) {
        struct inflight *h = &w->held[i];

        if (h->reqid_len == len && memcmp(h->reqid, reqid, len) == 0) {
            w->held[i] = w->held[--w->nheld];
            return true;
        }
    }
    return false;
}

/* One answer from worker w (NULL: one we do not know): h is W2 | REP |
 * client | reqid | trace with the envelope env (envlen bytes, envmsg's
 * when it came as a frame of its own, else NULL), or W2 | ERR | client |
 * reqid | error name | text with none. Returns false when h is neither. */
static bool
back_answer(broker_t *b, struct worker *w, const struct hdr *h,
            const void *env, size_t envlen, zmq_msg_t *envmsg)
{
    unsigned char client[255];
    int clen = -1;

    if ((hdr_is(h, 1, PROTO_REP) && h->n == 5 && envlen > 0) ||
        (hdr_is(h, 1, PROTO_ERR) && h->n == 6 && envlen == 0))
        clen = hex_decode(h->f[2], h->len[2], client, sizeof(client));
    if (clen <= 0)
        return false;
    if (w)
        worker_release(w, h->f[3], h->len[3]);
    if (hdr_is(h, 1, PROTO_REP)) {
        /* W2 REP client reqid trace + env -> C2 REP reqid + env */
        const char *fields[3] = {PROTO_CLIENT, PROTO_REP, h->f[3]};
        char hdr[HDR_MAX];
        size_t hl;

        publish(b, h->f[4], w ? w->svc->name : "-", env, envlen, envmsg);
        if (b->batching && envlen <= BATCH_ENV_MAX) {
            client_out_add(b, client, (size_t)clen, 3, fields, env, envlen);
        } else {
            hl = hdr_build(hdr, sizeof(hdr), 3, fields, NULL);
            zmq_send(b->front, client, (size_t)clen, ZMQ_SNDMORE);
            zmq_send(b->front, hdr, hl, ZMQ_SNDMORE);
            if (envmsg != NULL)
                zmq_msg_send(envmsg, b->front, 0);
            else
                zmq_send(b->front, env, envlen, 0);
        }
    } else if (b->batching) {
        /* W2 ERR client reqid name text -> C2 ERR reqid name text */
        const char *fields[5] = {PROTO_CLIENT, PROTO_ERR, h->f[3], h->f[4],
                                 h->f[5]};

        client_out_add(b, client, (size_t)clen, 5, fields, NULL, 0);
    } else {
        send_to_client_err(b, client, (size_t)clen, h->f[3],
                           err_from_name(h->f[4]), h->f[5]);
    }
    if (w)
        drain_queue(b, w->svc);
    return true;
}

/* A worker's record: W2 | REP or W2 | ERR. */
static void
back_record(void *arg, const struct hdr *h, const void *env, size_t envlen)
{
    struct batch_from *from = arg;

    if (!hdr_is(h, 0, PROTO_WORKER) ||
        !back_answer(from->b, from->worker, h, env, envlen, NULL))
        log_warn(NULL, "broker_bad_record", "side=workers fields=%d", h->n);
}

/* Worker side: the ROUTER identity, the header W2 | command | ..., and
 * for REP the envelope; or W2 | BATCH and a batch of REP and ERR records. */
static int
broker_on_back(loop_t *loop, void *zsocket, void *arg)
{
    broker_t *b = arg;
    zmq_msg_t f[FRAMES_MAX];
    char key[2 * 256 + 1];
    struct hdr h;
    struct worker *w;
    int n = frames_recv(zsocket, f, FRAMES_MAX);

    if (n <= 0)
        return 0;
    if (n < 2 || n > 3 || hdr_parse(&f[1], &h) < 2 ||
        !hdr_is(&h, 0, PROTO_WORKER)) {
        log_warn(NULL, "broker_bad_worker_frame", "frames=%d", n);
        goto out;
    }
    hex_key(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), key);
    w = zhashx_lookup(b->workers, key);
    if (hdr_is(&h, 1, PROTO_READY) && h.n == 4) {
        worker_ready(b, &f[0], &h, key);
        goto out;
    }
    if (w == NULL) {
        /* A worker of a broker that is no more: have it register here.
         * An answer it sends is still passed on. */
        if (!hdr_is(&h, 1, PROTO_BYE))
            send_to_worker(b, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]),
                           PROTO_BYE);
    } else {
        w->last_heard = loop_now_ms(loop); /* this iteration's time */
    }
    if (hdr_is(&h, 1, PROTO_BATCH) && h.n == 2 && n == 3) {
        struct batch_from from = {b, NULL, w};

        handle_batch(&from, &f[2], back_record, "workers");
    } else if (back_answer(b, w, &h, n == 3 ? zmq_msg_data(&f[2]) : NULL,
                           n == 3 ? zmq_msg_size(&f[2]) : 0,
                           n == 3 ? &f[2] : NULL)) {
        ; /* passed on */
    } else if (hdr_is(&h, 1, PROTO_BYE) && w) {
        worker_drop(b, w, "said goodbye");
    } else if (!hdr_is(&h, 1, PROTO_HB) && !hdr_is(&h, 1, PROTO_BYE)) {
        log_warn(NULL, "broker_bad_worker_frame", "frames=%d", n);
    }
out:
    frames_close(f, n < FRAMES_MAX ? n : FRAMES_MAX);
    return 1;
}

/* XPUB hands us subscriptions: count them, to publish only when someone
 * listens. Without XPUB_VERBOSE, a topic's first subscribe and last
 * unsubscribe are all that arrive. */
static int
broker_on_trace(loop_t *loop, void *zsocket, void *arg)
{
    broker_t *b = arg;
    zmq_msg_t m;
    int got;

    (void)loop;
    zmq_msg_init(&m);
    got = zmq_msg_recv(&m, zsocket, ZMQ_DONTWAIT) >= 0;
    if (got && zmq_msg_size(&m) > 0) {
        const unsigned char *p = zmq_msg_data(&m);

        b->subscribers += p[0] == 1 ? 1 : p[0] == 0 ? -1 : 0;
        log_info(NULL, "broker_trace_subscribers", "topics=%d",
                 b->subscribers);
    }
    zmq_msg_close(&m);
    return got;
}

/* Reads every waiting (un)subscription. */
static void
drain_trace(broker_t *b)
{
    while (broker_on_trace(b->loop, b->trace, b) > 0)
        ;
}

static void
broker_on_trace_fd(loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    drain_trace(arg);
}

static void
broker_on_tick(loop_t *loop, void *arg)
{
    broker_t *b = arg;
    int64_t now = clock_mono_ms();
    int64_t dead = (int64_t)b->o.heartbeat_ms * b->o.liveness;
    struct worker *w;
    struct service *s;
    zlistx_t *lost = zlistx_new();

    drain_trace(b);
    for (w = zhashx_first(b->workers); w; w = zhashx_next(b->workers)) {
        if (now - w->last_heard > dead)
            zlistx_add_end(lost, w);
        else
            send_to_worker(b, w->id, w->id_len, PROTO_HB);
    }
    for (w = zlistx_first(lost); w; w = zlistx_next(lost))
        worker_drop(b, w, "heartbeats stopped");
    zlistx_destroy(&lost);
    for (s = zhashx_first(b->services); s; s = zhashx_next(b->services)) {
        while (s->qhead && now - s->qhead->since > b->o.queue_ms) {
            struct waiting *q = s->qhead;

            s->qhead = q->next;
            if (s->qhead == NULL)
                s->qtail = NULL;
            s->qlen--;
            send_to_client_err(b, zmq_msg_data(&q->client),
                               zmq_msg_size(&q->client), q->reqid,
                               ERR_TIMEOUT,
                               "no worker free before the deadline");
            zmq_msg_close(&q->client);
            zmq_msg_close(&q->env);
            free(q->reqid);
            free(q->trace);
            free(q);
        }
    }
    b->hb_timer = loop_timer_add(loop, b->o.heartbeat_ms, broker_on_tick, b);
}

/* Workers and waiting requests per service, read at each scrape. */
static void
broker_collect(metrics_t *m, void *arg)
{
    broker_t *b = arg;

    (void)m;
    for (struct service *s = zhashx_first(b->services); s;
         s = zhashx_next(b->services)) {
        metrics_set(b->m_workers, METRICS_L(s->name), s->nworkers);
        metrics_set(b->m_queued, METRICS_L(s->name), s->qlen);
    }
}

void
broker_set_metrics(broker_t *b, metrics_t *m)
{
    b->m_routed = metrics_counter(m, "samotop_broker_routed_total",
                                  "Requests handed to a worker, by service",
                                  "service");
    b->m_refused = metrics_counter(
        m, "samotop_broker_refused_total",
        "Requests refused at once, by reason (noworker, queue_full)",
        "reason");
    b->m_workers = metrics_gauge(m, "samotop_broker_workers",
                                 "Workers registered, by service", "service");
    b->m_queued = metrics_gauge(m, "samotop_broker_queued",
                                "Requests waiting for a free worker, by "
                                "service",
                                "service");
    metrics_on_collect(m, broker_collect, b);
}
