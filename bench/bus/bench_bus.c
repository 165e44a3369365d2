/*
 * bench_bus.c - samotop-bench-bus: round trips through the broker, measured
 * beside a bare ZeroMQ DEALER/ROUTER ping-pong, which is the upper bound the
 * broker path is held to.
 *
 *   samotop-bench-bus worker --endpoints E [--service S] [--capacity C]
 *   samotop-bench-bus client --endpoints E [--requests N] [--inflight K]
 *                            [--seconds S] [--workers W] [--warmup M]
 *   samotop-bench-bus bare-server --endpoint E
 *   samotop-bench-bus bare-relay --endpoint E --to SERVER
 *   samotop-bench-bus bare-client --endpoint E [--requests N] [--inflight K]
 *                                 [--seconds S] [--warmup M]
 *
 * Both clients are closed loops: K requests in flight, each reply sending
 * the next, until N requests are done or S seconds have passed, whichever
 * comes first. M requests (not measured) go first, so that connections,
 * allocators and caches are warm. Each client prints one line
 *   RESULT mode=broker workers=W inflight=K requests=N rps=R p50_us=A
 *          p99_us=B errors=E seconds=T
 * where requests counts the measured round trips. --workers and --label
 * (in place of the mode) only label the line: the run script starts the
 * workers and the relay.
 *
 * The broker client sends real "benchsvc.echo" envelopes with a string
 * field of --body bytes through bus_client_send_take(), so it pays for the
 * codec at both ends, as every actor does. The bare pair sends the same
 * bytes, encoded once, as reqid | envelope, and the server answers with a
 * real reply envelope, also encoded once: a transport with nothing on top.
 * The bare relay moves messages between them as zmq_proxy() does: the one
 * hop a broker adds, with nothing on top either.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "bus.h"
#include "envelope.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/xalloc.h"

/* The one body field of a bench request, whose type is "<service>.echo":
 * no schema names it, so only the header is checked. */
#define BENCH_KEY_DATA "data"
#define BENCH_VERB "echo"
#define BENCH_MAX_ENVELOPE (64u << 20)
/* How long a request may take before it counts as an error. */
#define BENCH_TIMEOUT_MS 5000
/* How long a client waits for its first answer (broker and workers up). */
#define BENCH_READY_MS 10000
/* How often the bare processes look for a stop signal between messages. */
#define BENCH_STOP_POLL_MS 200

struct bench_opts {
    const char *endpoints;
    const char *to;    /* bare-relay: the bare server */
    const char *label; /* mode= in the RESULT line, when not the default */
    const char *service;
    long requests, warmup, seconds;
    int inflight, workers, capacity;
    size_t body;
};

/* Round-trip times of one phase. */
struct stats {
    int64_t *lat;
    size_t n, cap;
    long errors;
    int64_t t0, t1; /* first send, last reply, monotonic us */
};

static int bench_worker(const struct bench_opts *o);
static int bench_client(const struct bench_opts *o);
static int bare_server(const struct bench_opts *o);
static int bare_relay(const struct bench_opts *o);
static int bare_client(const struct bench_opts *o);

static volatile sig_atomic_t bench_stopping;

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: samotop-bench-bus worker --endpoints E [--service S] "
            "[--capacity C]\n"
            "       samotop-bench-bus client --endpoints E [--requests N] "
            "[--inflight K]\n"
            "                                [--seconds S] [--workers W] "
            "[--warmup M]\n"
            "       samotop-bench-bus bare-server --endpoint E\n"
            "       samotop-bench-bus bare-relay --endpoint E --to SERVER\n"
            "       samotop-bench-bus bare-client --endpoint E [--requests N] "
            "[--inflight K]\n"
            "                                     [--seconds S] "
            "[--warmup M]\n"
            "clients also take --label NAME, for mode= in the RESULT line\n");
}

static bool
parse_long(const char *name, const char *arg, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || *end || end == arg || v < min || v > max) {
        fprintf(stderr,
                "samotop-bench-bus: --%s wants a number from %ld "
                "to %ld, not \"%s\"\n",
                name, min, max, arg);
        return false;
    }
    *out = v;
    return true;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"endpoints", required_argument, NULL, 'e'},
        {"endpoint", required_argument, NULL, 'e'},
        {"to", required_argument, NULL, 'o'},
        {"label", required_argument, NULL, 'l'},
        {"service", required_argument, NULL, 's'},
        {"requests", required_argument, NULL, 'n'},
        {"inflight", required_argument, NULL, 'k'},
        {"seconds", required_argument, NULL, 't'},
        {"workers", required_argument, NULL, 'w'},
        {"warmup", required_argument, NULL, 'm'},
        {"capacity", required_argument, NULL, 'c'},
        {"body", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct bench_opts o = {.service = "benchsvc",
                           .requests = 100000,
                           .warmup = 2000,
                           .seconds = 10,
                           .inflight = 1,
                           .workers = 1,
                           .capacity = 64,
                           .body = 100};
    const char *mode;
    char instance[16];
    long v;
    int c;

    if (argc < 2 || argv[1][0] == '-') {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    mode = argv[1];
    optind = 2;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'e':
            o.endpoints = optarg;
            break;
        case 'o':
            o.to = optarg;
            break;
        case 'l':
            o.label = optarg;
            break;
        case 's':
            o.service = optarg;
            break;
        case 'n':
            if (!parse_long("requests", optarg, 1, 100000000, &o.requests))
                return 2;
            break;
        case 'm':
            if (!parse_long("warmup", optarg, 0, 100000000, &o.warmup))
                return 2;
            break;
        case 't':
            if (!parse_long("seconds", optarg, 1, 3600, &o.seconds))
                return 2;
            break;
        case 'k':
            if (!parse_long("inflight", optarg, 1, 100000, &v))
                return 2;
            o.inflight = (int)v;
            break;
        case 'w':
            if (!parse_long("workers", optarg, 1, 1000, &v))
                return 2;
            o.workers = (int)v;
            break;
        case 'c':
            if (!parse_long("capacity", optarg, 1, 100000, &v))
                return 2;
            o.capacity = (int)v;
            break;
        case 'b':
            if (!parse_long("body", optarg, 0, 1 << 20, &v))
                return 2;
            o.body = (size_t)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (o.endpoints == NULL) {
        fprintf(stderr, "samotop-bench-bus: %s needs --endpoints\n", mode);
        return 2;
    }
    /* Envelopes carry the sender in "from"; name each process apart. */
    snprintf(instance, sizeof(instance), "%ld", (long)getpid());
    log_init("bench", instance);
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(mode, "worker") == 0)
        return bench_worker(&o);
    if (strcmp(mode, "client") == 0)
        return bench_client(&o);
    if (strcmp(mode, "bare-server") == 0)
        return bare_server(&o);
    if (strcmp(mode, "bare-relay") == 0)
        return bare_relay(&o);
    if (strcmp(mode, "bare-client") == 0)
        return bare_client(&o);
    fprintf(stderr, "samotop-bench-bus: unknown mode \"%s\"\n", mode);
    usage(stderr);
    return 2;
}

/* Results. */

static void
stats_add(struct stats *st, int64_t us)
{
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 65536;
        st->lat = xrealloc(st->lat, sizeof(*st->lat) * st->cap);
    }
    st->lat[st->n++] = us;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* The nearest-rank percentile p (0..100) of the sorted latencies. */
static int64_t
stats_pct(const struct stats *st, int p)
{
    size_t rank;

    if (st->n == 0)
        return 0;
    rank = (st->n * (size_t)p + 99) / 100;
    return st->lat[rank ? rank - 1 : 0];
}

/* Prints the RESULT line; returns the exit status (1 when nothing was
 * measured or something failed, so that the run script notices). */
static int
stats_report(struct stats *st, const char *mode, int workers, int inflight)
{
    double secs = (double)(st->t1 - st->t0) / 1e6;

    qsort(st->lat, st->n, sizeof(*st->lat), cmp_i64);
    printf("RESULT mode=%s workers=%d inflight=%d requests=%zu rps=%.0f "
           "p50_us=%lld p99_us=%lld errors=%ld seconds=%.2f\n",
           mode, workers, inflight, st->n,
           secs > 0 ? (double)st->n / secs : 0.0, (long long)stats_pct(st, 50),
           (long long)stats_pct(st, 99), st->errors, secs);
    fflush(stdout);
    free(st->lat);
    return st->n > 0 && st->errors == 0 ? 0 : 1;
}

static char *
make_body(size_t n)
{
    char *s = xmalloc(n + 1);

    for (size_t i = 0; i < n; i++)
        s[i] = (char)('a' + i % 26);
    s[n] = '\0';
    return s;
}

/* A request as the broker client sends it, with a fixed trace: a trace is
 * a session's, shared by its requests, not drawn for each one. */
static envelope_t *
make_request(const char *type, const char *trace, const char *body)
{
    envelope_t *req = envelope_new(type, trace, BENCH_TIMEOUT_MS);

    value_set_str(envelope_body(req), BENCH_KEY_DATA, body);
    return req;
}

static void
on_stop_signal(loop_t *loop, int signo, void *arg)
{
    (void)signo;
    (void)arg;
    loop_stop(loop);
}

/* The broker path: a worker. */

static void
worker_on_request(void *arg, bus_request_t **req_p)
{
    bus_worker_t **w = arg;
    envelope_t *reply =
        envelope_new_reply(bus_request_envelope(*req_p), 250, "2.0.0", "ok");

    bus_worker_reply_take(*w, req_p, &reply);
}

static int
bench_worker(const struct bench_opts *o)
{
    struct bus_worker_opts wo = {.endpoints = o->endpoints,
                                 .service = o->service,
                                 .capacity = o->capacity,
                                 .heartbeat_ms = 250,
                                 .liveness = 4,
                                 .max_envelope = BENCH_MAX_ENVELOPE};
    bus_worker_t *w = NULL;
    loop_t *loop = loop_new();
    char why[256];

    if (loop == NULL)
        log_fatal(NULL, "start_failed", "reason=\"no epoll\"");
    loop_signal_add(loop, SIGTERM, on_stop_signal, NULL);
    loop_signal_add(loop, SIGINT, on_stop_signal, NULL);
    /* The handler finds the worker through &w, set once it exists; no
     * request can arrive before loop_run(). */
    w = bus_worker_new(loop, &wo, worker_on_request, &w, why, sizeof(why));
    if (w == NULL)
        log_fatal(NULL, "start_failed", "reason=%s", log_q(why));
    loop_run(loop);
    bus_worker_destroy(&w);
    loop_destroy(&loop);
    return 0;
}

/* The broker path: a client. */

enum phase { PHASE_WARMUP, PHASE_MEASURE };

struct bslot;

struct bclient {
    const struct bench_opts *o;
    loop_t *loop;
    bus_client_t *bus;
    struct bslot *slots; /* o->inflight of them */
    char trace[ENVELOPE_TRACE_LEN];
    char *type, *body;
    enum phase phase;
    long limit, sent; /* requests this phase may send, and has sent */
    int outstanding;
    int64_t stop_us; /* no request is sent after this */
    struct stats st;
    bool failed;
};

/* One of the K requests in flight, reused for the next one. */
struct bslot {
    struct bclient *c;
    int64_t t0;
};

static void bclient_on_reply(void *arg, int err, const char *text,
                             const envelope_t *reply);

static void
bclient_send(struct bslot *s)
{
    struct bclient *c = s->c;
    envelope_t *req = make_request(c->type, c->trace, c->body);
    int rc;

    c->sent++;
    c->outstanding++;
    s->t0 = clock_mono_us();
    rc = bus_client_send_take(c->bus, &req, bclient_on_reply, s);
    if (rc != 0) {
        /* No callback will come: a bug in the bench, not a measurement. */
        log_err(NULL, "bench_send_failed", "err=%s", err_name(rc));
        c->outstanding--;
        c->failed = true;
        loop_stop(c->loop);
    }
}

/* Fills the window for a phase of limit requests. */
static void
bclient_start(struct bclient *c, enum phase phase, long limit)
{
    c->phase = phase;
    c->limit = limit;
    c->sent = 0;
    c->st.t0 = clock_mono_us();
    c->st.t1 = c->st.t0;
    c->stop_us = c->st.t0 + (int64_t)c->o->seconds * 1000000;
    for (int i = 0; i < c->o->inflight && c->sent < c->limit; i++)
        bclient_send(&c->slots[i]);
}

static void
bclient_on_reply(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct bslot *s = arg;
    struct bclient *c = s->c;
    int64_t now = clock_mono_us();

    c->outstanding--;
    if (err == 0 && envelope_code(reply) == 250) {
        if (c->phase == PHASE_MEASURE) {
            stats_add(&c->st, now - s->t0);
            c->st.t1 = now;
        }
    } else if (err != ERR_CLOSED) {
        if (c->phase == PHASE_MEASURE)
            c->st.errors++;
        log_warn(NULL, "bench_request_failed", "err=%s text=%s", err_name(err),
                 log_q(text));
    }
    if (err == ERR_CLOSED || c->failed)
        return; /* the client is going away */
    if (c->sent < c->limit && now < c->stop_us) {
        bclient_send(s);
        return;
    }
    if (c->outstanding > 0)
        return;
    /* The window has drained: the phase is over. */
    if (c->phase == PHASE_WARMUP)
        bclient_start(c, PHASE_MEASURE, c->o->requests);
    else
        loop_stop(c->loop);
}

/* Waits until the service answers (the broker is up and a worker has
 * registered), so that start-up is not measured. */
static int
bclient_wait_ready(struct bclient *c)
{
    int64_t give_up = clock_mono_ms() + BENCH_READY_MS;
    char why[256];
    int rc;

    for (;;) {
        envelope_t *req = make_request(c->type, c->trace, c->body);
        envelope_t *reply = NULL;

        rc = bus_client_call(c->bus, &req, &reply, why, sizeof(why));
        envelope_destroy(&reply);
        if (rc == 0 || clock_mono_ms() > give_up)
            break;
        usleep(20000);
    }
    if (rc != 0)
        log_err(NULL, "bench_not_ready", "err=%s why=%s", err_name(rc),
                log_q(why));
    return rc;
}

static int
bench_client(const struct bench_opts *o)
{
    struct bclient c = {.o = o};
    char why[256];
    int status = 1;

    c.loop = loop_new();
    if (c.loop == NULL)
        log_fatal(NULL, "start_failed", "reason=\"no epoll\"");
    loop_signal_add(c.loop, SIGTERM, on_stop_signal, NULL);
    loop_signal_add(c.loop, SIGINT, on_stop_signal, NULL);
    c.bus = bus_client_new(c.loop, o->endpoints, BENCH_MAX_ENVELOPE, why,
                           sizeof(why));
    if (c.bus == NULL)
        log_fatal(NULL, "start_failed", "reason=%s", log_q(why));
    c.slots = xcalloc((size_t)o->inflight, sizeof(*c.slots));
    for (int i = 0; i < o->inflight; i++)
        c.slots[i].c = &c;
    c.type = xasprintf("%s.%s", o->service, BENCH_VERB);
    c.body = make_body(o->body);
    envelope_new_trace(c.trace);
    if (bclient_wait_ready(&c) != 0)
        goto out;
    if (o->warmup > 0)
        bclient_start(&c, PHASE_WARMUP, o->warmup);
    else
        bclient_start(&c, PHASE_MEASURE, o->requests);
    loop_run(c.loop);
    if (!c.failed)
        status = stats_report(&c.st, o->label ? o->label : "broker", o->workers,
                              o->inflight);
out:
    bus_client_destroy(&c.bus);
    free(c.slots);
    free(c.type);
    free(c.body);
    loop_destroy(&c.loop);
    return status;
}

/* The bare path: a ROUTER that echoes a fixed reply envelope. */

static void
on_bare_signal(int signo)
{
    (void)signo;
    bench_stopping = 1;
}

/* Catches SIGTERM and SIGINT without SA_RESTART, so that a blocking ZeroMQ
 * call returns EINTR and the process closes its sockets. */
static void
bare_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_bare_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static void *
bare_socket(void *ctx, int type)
{
    void *sock = zmq_socket(ctx, type);
    int zero = 0, hwm = 100000;

    if (sock == NULL)
        log_fatal(NULL, "start_failed", "reason=%s",
                  log_q(zmq_strerror(errno)));
    /* The same options as the bus sockets, so that only the path differs. */
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    return sock;
}

/* The request and reply bytes: real envelopes, encoded once. */
static void
bare_payloads(const struct bench_opts *o, char **req_out, size_t *req_len,
              char **rep_out, size_t *rep_len)
{
    char trace[ENVELOPE_TRACE_LEN], *body = make_body(o->body);
    char *type = xasprintf("%s.%s", o->service, BENCH_VERB);
    envelope_t *req, *rep;

    envelope_new_trace(trace);
    req = make_request(type, trace, body);
    rep = envelope_new_reply(req, 250, "2.0.0", "ok");
    envelope_encode(req, req_out, req_len);
    envelope_encode(rep, rep_out, rep_len);
    envelope_destroy(&rep);
    envelope_destroy(&req);
    free(type);
    free(body);
}

static int
bare_server(const struct bench_opts *o)
{
    void *ctx = zmq_ctx_new(), *sock = bare_socket(ctx, ZMQ_ROUTER);
    char *reqbuf, *rep;
    size_t reqlen, replen;
    zmq_msg_t f[8];
    int stop_ms = BENCH_STOP_POLL_MS;

    bare_payloads(o, &reqbuf, &reqlen, &rep, &replen);
    free(reqbuf);
    if (zmq_bind(sock, o->endpoints) != 0)
        log_fatal(NULL, "start_failed", "reason=\"cannot bind %s: %s\"",
                  o->endpoints, zmq_strerror(errno));
    /* A signal that lands between two receives is seen this late. */
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &stop_ms, sizeof(stop_ms));
    bare_signals();
    /* The route (one identity, two through a relay) and reqid come back
     * as they came; the envelope is answered with the reply. */
    while (!bench_stopping) {
        int n = 0, more = 1;

        while (more && n < 8) {
            zmq_msg_init(&f[n]);
            if (zmq_msg_recv(&f[n], sock, 0) < 0) {
                zmq_msg_close(&f[n]);
                break;
            }
            more = zmq_msg_more(&f[n]);
            n++;
        }
        if (more || n < 3) {
            /* Interrupted, or not ours: drop what was read. */
            for (int i = 0; i < n; i++)
                zmq_msg_close(&f[i]);
            continue;
        }
        for (int i = 0; i < n - 1; i++)
            zmq_msg_send(&f[i], sock, ZMQ_SNDMORE);
        zmq_send(sock, rep, replen, 0);
        zmq_msg_close(&f[n - 1]);
    }
    free(rep);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}

/* Moves whole messages from one socket to the other, as many as are
 * waiting up to a batch, as zmq_proxy() does. */
static void
relay_some(void *from, void *to)
{
    zmq_msg_t m;

    zmq_msg_init(&m);
    for (int i = 0; i < 1000; i++) {
        int more = 1, flags = ZMQ_DONTWAIT;

        while (more) {
            if (zmq_msg_recv(&m, from, flags) < 0) {
                zmq_msg_close(&m);
                return; /* nothing waiting (only the first part can fail) */
            }
            more = zmq_msg_more(&m);
            zmq_msg_send(&m, to, more ? ZMQ_SNDMORE : 0);
            flags = 0;
        }
    }
    zmq_msg_close(&m);
}

/* The bare relay: a ROUTER for clients and a DEALER to the bare server,
 * with messages moved between them. One hop more than bare and no code of
 * ours on it: about the most any broker can reach on this machine. Not
 * zmq_proxy() itself, which cannot be stopped reliably by a signal. */
static int
bare_relay(const struct bench_opts *o)
{
    void *ctx = zmq_ctx_new();
    void *front = bare_socket(ctx, ZMQ_ROUTER);
    void *back = bare_socket(ctx, ZMQ_DEALER);

    if (o->to == NULL)
        log_fatal(NULL, "start_failed", "reason=\"bare-relay needs --to\"");
    if (zmq_bind(front, o->endpoints) != 0)
        log_fatal(NULL, "start_failed", "reason=\"cannot bind %s: %s\"",
                  o->endpoints, zmq_strerror(errno));
    if (zmq_connect(back, o->to) != 0)
        log_fatal(NULL, "start_failed", "reason=\"cannot connect %s: %s\"",
                  o->to, zmq_strerror(errno));
    bare_signals();
    while (!bench_stopping) {
        zmq_pollitem_t items[] = {{front, 0, ZMQ_POLLIN, 0},
                                  {back, 0, ZMQ_POLLIN, 0}};

        /* The timeout bounds how late a signal that lands outside the
         * poll is seen. */
        if (zmq_poll(items, 2, BENCH_STOP_POLL_MS) <= 0)
            continue;
        if (items[0].revents & ZMQ_POLLIN)
            relay_some(front, back);
        if (items[1].revents & ZMQ_POLLIN)
            relay_some(back, front);
    }
    zmq_close(front);
    zmq_close(back);
    zmq_ctx_term(ctx);
    return 0;
}

/* The bare path: a DEALER keeping K requests in flight. The request id is
 * the slot number, so that a reply finds its send time. */

struct bare {
    const struct bench_opts *o;
    void *sock;
    char *req;
    size_t reqlen;
    int64_t *t0; /* per slot */
};

static void
bare_send(struct bare *b, int slot)
{
    char id[16];
    int n = snprintf(id, sizeof(id), "%d", slot);

    b->t0[slot] = clock_mono_us();
    zmq_send(b->sock, id, (size_t)n, ZMQ_SNDMORE);
    zmq_send(b->sock, b->req, b->reqlen, 0);
}

/* Reads one reply; returns its slot, or -1 after a timeout or signal. */
static int
bare_recv(struct bare *b)
{
    char id[16];
    zmq_msg_t m;
    int n, slot = -1, more;

    n = zmq_recv(b->sock, id, sizeof(id) - 1, 0);
    if (n < 0)
        return -1;
    id[n < (int)sizeof(id) - 1 ? n : (int)sizeof(id) - 1] = '\0';
    slot = atoi(id);
    zmq_msg_init(&m);
    more = 1;
    while (more && zmq_msg_recv(&m, b->sock, 0) >= 0)
        more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    return slot >= 0 && slot < b->o->inflight ? slot : -1;
}

/* One closed-loop phase of limit requests; latencies go to st when given.
 * Returns 0, or ERR_TIMEOUT when the server stopped answering. */
static int
bare_phase(struct bare *b, long limit, struct stats *st)
{
    int64_t start = clock_mono_us(), now;
    int64_t stop = start + (int64_t)b->o->seconds * 1000000;
    long sent = 0;
    int outstanding = 0, slot;

    if (st)
        st->t0 = st->t1 = start;
    for (int i = 0; i < b->o->inflight && sent < limit; i++, sent++) {
        bare_send(b, i);
        outstanding++;
    }
    while (outstanding > 0) {
        if ((slot = bare_recv(b)) < 0) {
            if (st)
                st->errors += outstanding;
            return ERR_TIMEOUT;
        }
        now = clock_mono_us();
        outstanding--;
        if (st) {
            stats_add(st, now - b->t0[slot]);
            st->t1 = now;
        }
        if (sent < limit && now < stop) {
            bare_send(b, slot);
            sent++;
            outstanding++;
        }
    }
    return 0;
}

static int
bare_client(const struct bench_opts *o)
{
    struct bare b = {.o = o};
    void *ctx = zmq_ctx_new();
    char *rep;
    size_t replen;
    struct stats st = {0};
    int timeout = BENCH_TIMEOUT_MS, status = 1;

    b.sock = bare_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(b.sock, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    bare_payloads(o, &b.req, &b.reqlen, &rep, &replen);
    free(rep);
    b.t0 = xcalloc((size_t)o->inflight, sizeof(*b.t0));
    if (zmq_connect(b.sock, o->endpoints) != 0)
        log_fatal(NULL, "start_failed", "reason=\"cannot connect %s: %s\"",
                  o->endpoints, zmq_strerror(errno));
    bare_signals();
    /* A DEALER queues until it connects, so one round trip is the wait for
     * the server. */
    if (bare_phase(&b, 1, NULL) != 0 ||
        (o->warmup > 0 && bare_phase(&b, o->warmup, NULL) != 0)) {
        log_err(NULL, "bench_not_ready", "endpoint=%s", o->endpoints);
        goto out;
    }
    if (bare_phase(&b, o->requests, &st) != 0)
        log_err(NULL, "bench_server_silent", "endpoint=%s", o->endpoints);
    status = stats_report(&st, o->label ? o->label : "bare", 0, o->inflight);
out:
    free(b.t0);
    free(b.req);
    zmq_close(b.sock);
    zmq_ctx_term(ctx);
    return status;
}
