/*
 * test_bus.c - the bus against a real broker process (samotop-bus), real
 * actors (samotop-guard) and test workers (test-bus-worker), over TCP on
 * loopback. Each test starts its own processes on its own ports.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <czmq.h>

#include "bus.h"
#include "frames.h"
#include "proto.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "tests/testlib.h"

/* Ports 18050-18199 belong to this suite; each test takes a block of ten. */
struct ports {
    int base;
    char clients[64], workers[64], trace[64];
    char env[8][96];
    const char *envp[9];
};

static void
ports_init(struct ports *p, int base)
{
    p->base = base;
    snprintf(p->clients, sizeof(p->clients), "tcp://127.0.0.1:%d", base);
    snprintf(p->workers, sizeof(p->workers), "tcp://127.0.0.1:%d", base + 1);
    snprintf(p->trace, sizeof(p->trace), "tcp://127.0.0.1:%d", base + 2);
    snprintf(p->env[0], 96, "SAMOTOP_BROKER_CLIENTS=%s", p->clients);
    snprintf(p->env[1], 96, "SAMOTOP_BROKER_WORKERS=%s", p->workers);
    snprintf(p->env[2], 96, "SAMOTOP_BROKER_TRACE=%s", p->trace);
    snprintf(p->env[3], 96, "SAMOTOP_BUS_CLIENTS=%s", p->clients);
    snprintf(p->env[4], 96, "SAMOTOP_BUS_WORKERS=%s", p->workers);
    snprintf(p->env[5], 96, "SAMOTOP_BUS_TRACE=%s", p->trace);
    snprintf(p->env[6], 96, "SAMOTOP_BUS_HEARTBEAT_MS=100");
    snprintf(p->env[7], 96, "SAMOTOP_BUS_LIVENESS=4");
    for (int i = 0; i < 8; i++)
        p->envp[i] = p->env[i];
    p->envp[8] = NULL;
}

static pid_t
start_broker(struct ports *p)
{
    const char *argv[] = {test_bin("samotop-bus"), "--instance", "t", NULL};

    return test_spawn(argv, p->envp);
}

static pid_t
start_guard(struct ports *p)
{
    const char *argv[] = {test_bin("samotop-guard"), "--instance", "g", NULL};

    return test_spawn(argv, p->envp);
}

static pid_t
start_worker(const char *endpoints, const char *service, const char *name,
             int delay_ms)
{
    char delay[16];
    const char *argv[] = {test_bin("test-bus-worker"), "--endpoints",
                          endpoints, "--service", service, "--name", name,
                          "--delay-ms", delay, NULL};

    snprintf(delay, sizeof(delay), "%d", delay_ms);
    return test_spawn(argv, NULL);
}

static bus_client_t *
client(loop_t *loop, const char *endpoints)
{
    char why[256];
    bus_client_t *c = bus_client_new(loop, endpoints, 1 << 20, why,
                                     sizeof(why));

    ck_assert_msg(c != NULL, "bus_client_new: %s", why);
    return c;
}

/* One synchronous call of type; returns the error, the reply in *out. */
static int
call(bus_client_t *c, const char *type, int timeout_ms, envelope_t **out)
{
    envelope_t *req = envelope_new(type, NULL, timeout_ms), *reply = NULL;
    char why[256];
    int rc = bus_client_call(c, &req, &reply, why, sizeof(why));

    if (out)
        *out = reply;
    else
        envelope_destroy(&reply);
    return rc;
}

/* Calls until one succeeds or ms pass; returns the milliseconds it took,
 * or -1. */
static int64_t
wait_ok(bus_client_t *c, const char *type, int ms)
{
    int64_t t0 = test_now_ms();

    while (test_now_ms() - t0 < ms) {
        if (call(c, type, 200, NULL) == 0)
            return test_now_ms() - t0;
        usleep(20000);
    }
    return -1;
}

/* Calls type until the broker answers that no worker has its service (the
 * client is connected), for at most ms; false when it never does. */
static bool
wait_noworker(bus_client_t *c, const char *type, int ms)
{
    int64_t t0 = test_now_ms();

    while (test_now_ms() - t0 < ms) {
        if (call(c, type, 500, NULL) == ERR_NOWORKER)
            return true;
        usleep(20000);
    }
    return false;
}

START_TEST(test_request_reply)
{
    struct ports p;
    bus_client_t *c;
    envelope_t *req, *reply = NULL;
    char why[256], id[160], trace[64];
    pid_t broker, guard;

    ports_init(&p, 18100);
    broker = start_broker(&p);
    guard = start_guard(&p);
    c = client(NULL, p.clients);
    ck_assert_int_ge(wait_ok(c, "guard.ping", 5000), 0);

    req = envelope_new("guard.ping", NULL, 2000);
    value_set_str(envelope_body(req), ENV_KEY_ECHO, "hello bus");
    snprintf(id, sizeof(id), "%s", envelope_id(req));
    snprintf(trace, sizeof(trace), "%s", envelope_trace(req));
    ck_assert_int_eq(bus_client_call(c, &req, &reply, why, sizeof(why)), 0);
    ck_assert_ptr_null(req);
    ck_assert_ptr_nonnull(reply);
    ck_assert_str_eq(envelope_type(reply), "guard.ping.reply");
    ck_assert_str_eq(envelope_re(reply), id);
    ck_assert_str_eq(envelope_trace(reply), trace);
    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECHO), "hello bus");
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ACTOR), "guard/g");
    ck_assert_int_eq(envelope_get_int(reply, ENV_KEY_PID, 0), guard);
    envelope_destroy(&reply);

    /* A type the actor does not handle: a 502 error reply, not silence. */
    ck_assert_int_eq(call(c, "guard.nosuchthing", 2000, &reply), 0);
    ck_assert_int_eq(envelope_code(reply), 502);
    envelope_destroy(&reply);

    bus_client_destroy(&c);
    test_stop(guard, SIGTERM, 2000);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

START_TEST(test_two_workers_share_load)
{
    struct ports p;
    bus_client_t *c;
    pid_t broker, a, b;
    int na = 0, nb = 0;

    ports_init(&p, 18110);
    broker = start_broker(&p);
    a = start_worker(p.workers, "work", "A", 0);
    b = start_worker(p.workers, "work", "B", 0);
    c = client(NULL, p.clients);
    ck_assert_int_ge(wait_ok(c, "work.x", 5000), 0);
    /* Both must be registered before counting. */
    usleep(300000);
    for (int i = 0; i < 200; i++) {
        envelope_t *reply = NULL;

        ck_assert_int_eq(call(c, "work.x", 2000, &reply), 0);
        const char *w = envelope_get_str(reply, "worker");
        ck_assert_ptr_nonnull(w);
        na += strcmp(w, "A") == 0;
        nb += strcmp(w, "B") == 0;
        envelope_destroy(&reply);
    }
    ck_assert_int_eq(na + nb, 200);
    ck_assert_msg(na >= 60 && nb >= 60, "uneven share: A=%d B=%d", na, nb);
    bus_client_destroy(&c);
    test_stop(a, SIGTERM, 2000);
    test_stop(b, SIGTERM, 2000);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

struct outcome {
    int done, err;
    int64_t at_ms;
    char worker[16];
};

static void
on_outcome(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct outcome *o = arg;

    (void)text;
    o->done = 1;
    o->err = err;
    o->at_ms = test_now_ms();
    if (reply && envelope_get_str(reply, "worker"))
        snprintf(o->worker, sizeof(o->worker), "%s",
                 envelope_get_str(reply, "worker"));
}

static void
on_quit(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

/* Runs the loop until every outcome is in or ms pass. */
static void
run_until(loop_t *loop, struct outcome *o, int n, int ms)
{
    int64_t until = test_now_ms() + ms;

    while (test_now_ms() < until) {
        int all = 1;

        for (int i = 0; i < n; i++)
            all &= o[i].done;
        if (all)
            return;
        loop_timer_add(loop, 10, on_quit, NULL);
        loop_run(loop);
    }
}

START_TEST(test_worker_killed_mid_request)
{
    struct ports p;
    loop_t *loop = loop_new();
    bus_client_t *c, *sync;
    struct outcome o[2] = {{0}};
    pid_t broker, a, b, victim;
    int64_t killed_at;
    int lost = -1, kept;

    ports_init(&p, 18120);
    broker = start_broker(&p);
    a = start_worker(p.workers, "slow", "A", 1500);
    b = start_worker(p.workers, "slow", "B", 1500);
    sync = client(NULL, p.clients);
    usleep(300000); /* both workers register */
    ck_assert_int_eq(call(sync, "slow.x", 5000, NULL), 0);
    c = client(loop, p.clients);
    /* Two requests, one in each worker's hand (round-robin). */
    for (int i = 0; i < 2; i++) {
        envelope_t *req = envelope_new("slow.x", NULL, 10000);

        ck_assert_int_eq(bus_client_send_take(c, &req, on_outcome, &o[i]), 0);
    }
    run_until(loop, o, 2, 300); /* let both reach their workers */
    victim = a;
    killed_at = test_now_ms();
    kill(victim, SIGKILL);
    run_until(loop, o, 2, 5000);
    ck_assert(o[0].done && o[1].done);
    for (int i = 0; i < 2; i++)
        if (o[i].err == ERR_WORKER_LOST)
            lost = i;
    ck_assert_msg(lost >= 0, "no request failed with WORKER_LOST: %s / %s",
                  err_name(o[0].err), err_name(o[1].err));
    kept = 1 - lost;
    /* The caller hears long before its 10 s deadline: within the
     * heartbeat liveness (4 x 100 ms) and some slack. */
    ck_assert_msg(o[lost].at_ms - killed_at < 1500, "error after %lld ms",
                  (long long)(o[lost].at_ms - killed_at));
    ck_assert_int_eq(o[kept].err, 0);
    ck_assert_str_eq(o[kept].worker, "B");
    /* Later requests go to the survivor. */
    for (int i = 0; i < 5; i++) {
        envelope_t *reply = NULL;

        ck_assert_int_eq(call(sync, "slow.x", 5000, &reply), 0);
        ck_assert_str_eq(envelope_get_str(reply, "worker"), "B");
        envelope_destroy(&reply);
    }
    waitpid(victim, NULL, 0);
    bus_client_destroy(&c);
    bus_client_destroy(&sync);
    loop_destroy(&loop);
    test_stop(b, SIGTERM, 2000);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

START_TEST(test_broker_restart_rejoined)
{
    struct ports p;
    bus_client_t *c;
    pid_t broker, guard;
    int64_t took;

    ports_init(&p, 18130);
    broker = start_broker(&p);
    guard = start_guard(&p);
    c = client(NULL, p.clients);
    ck_assert_int_ge(wait_ok(c, "guard.ping", 5000), 0);
    test_stop(broker, SIGKILL, 1000);
    ck_assert_int_ne(call(c, "guard.ping", 300, NULL), 0);
    broker = start_broker(&p);
    took = wait_ok(c, "guard.ping", 5000);
    ck_assert_msg(took >= 0, "the guard never rejoined the new broker");
    ck_assert_msg(took < 3000, "rejoin took %lld ms", (long long)took);
    /* The same guard process, not a new one. */
    ck_assert_int_eq(kill(guard, 0), 0);
    bus_client_destroy(&c);
    test_stop(guard, SIGTERM, 2000);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

START_TEST(test_trace_sees_every_envelope)
{
    struct ports p;
    bus_client_t *c;
    zsock_t *sub;
    pid_t broker, guard;
    char ids[50][160];
    int seen_req[50] = {0}, seen_rep[50] = {0}, got = 0;
    int64_t until;

    ports_init(&p, 18140);
    broker = start_broker(&p);
    guard = start_guard(&p);
    c = client(NULL, p.clients);
    ck_assert_int_ge(wait_ok(c, "guard.ping", 5000), 0);
    sub = zsock_new_sub(p.trace, "");
    ck_assert_ptr_nonnull(sub);
    /* The subscription takes a moment to reach the broker: ping until the
     * feed shows something, then drain it. */
    until = test_now_ms() + 5000;
    while (test_now_ms() < until) {
        call(c, "guard.ping", 1000, NULL);
        zmq_pollitem_t item = {zsock_resolve(sub), 0, ZMQ_POLLIN, 0};

        if (zmq_poll(&item, 1, 50) == 1)
            break;
    }
    for (;;) {
        zmsg_t *m;

        zsock_set_rcvtimeo(sub, 200);
        m = zmsg_recv(sub);
        if (m == NULL)
            break;
        zmsg_destroy(&m);
    }
    for (int i = 0; i < 50; i++) {
        envelope_t *req = envelope_new("guard.ping", NULL, 2000), *reply;
        char why[256];

        snprintf(ids[i], sizeof(ids[i]), "%s", envelope_id(req));
        ck_assert_int_eq(bus_client_call(c, &req, &reply, why, sizeof(why)),
                         0);
        envelope_destroy(&reply);
    }
    zsock_set_rcvtimeo(sub, 2000);
    while (got < 100) {
        zmsg_t *m = zmsg_recv(sub);
        zframe_t *trace, *service, *body;
        envelope_t *env = NULL;
        char why[256];

        ck_assert_msg(m != NULL, "trace feed stopped after %d of 100", got);
        ck_assert_int_eq(zmsg_size(m), 3);
        trace = zmsg_first(m);
        service = zmsg_next(m);
        body = zmsg_next(m);
        ck_assert(zframe_streq(service, "guard"));
        ck_assert_int_eq(envelope_decode(zframe_data(body),
                                         zframe_size(body), 1 << 20, &env,
                                         why, sizeof(why)),
                         0);
        ck_assert(zframe_streq(trace, envelope_trace(env)));
        for (int i = 0; i < 50; i++) {
            if (strcmp(envelope_id(env), ids[i]) == 0)
                seen_req[i]++;
            if (envelope_re(env) && strcmp(envelope_re(env), ids[i]) == 0)
                seen_rep[i]++;
        }
        envelope_destroy(&env);
        zmsg_destroy(&m);
        got++;
    }
    for (int i = 0; i < 50; i++) {
        ck_assert_msg(seen_req[i] == 1, "request %d seen %d times", i,
                      seen_req[i]);
        ck_assert_msg(seen_rep[i] == 1, "reply %d seen %d times", i,
                      seen_rep[i]);
    }
    zsock_destroy(&sub);
    bus_client_destroy(&c);
    test_stop(guard, SIGTERM, 2000);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

/* Secrets never reach the trace feed: the broker masks the envelopes of a
 * service whose schemas have secret fields (auth.verify's password) before
 * it publishes them. */
START_TEST(test_trace_masks_secrets)
{
    struct ports p;
    bus_client_t *c;
    zsock_t *sub;
    pid_t broker, w;
    int64_t until;
    int seen = 0;

    ports_init(&p, 18190);
    broker = start_broker(&p);
    w = start_worker(p.workers, "auth", "A", 0);
    c = client(NULL, p.clients);
    sub = zsock_new_sub(p.trace, "");
    until = test_now_ms() + 8000;
    while (seen == 0 && test_now_ms() < until) {
        envelope_t *req = envelope_new("auth.verify", NULL, 1000), *reply;
        char why[256];

        value_set_str(envelope_body(req), ENV_KEY_MECHANISM, "LOGIN");
        value_set_str(envelope_body(req), ENV_KEY_USERNAME, "alice@x.test");
        value_set_str(envelope_body(req), ENV_KEY_PASSWORD, "hunter2-secret");
        bus_client_call(c, &req, &reply, why, sizeof(why));
        envelope_destroy(&reply);
        zsock_set_rcvtimeo(sub, 100);
        for (zmsg_t *m; (m = zmsg_recv(sub)) != NULL; zmsg_destroy(&m)) {
            zframe_t *body;
            envelope_t *env = NULL;

            ck_assert_int_eq(zmsg_size(m), 3);
            body = zmsg_last(m);
            ck_assert_msg(memmem(zframe_data(body), zframe_size(body),
                                 "hunter2-secret", 14) == NULL,
                          "a password reached the trace feed");
            ck_assert_int_eq(envelope_decode(zframe_data(body),
                                             zframe_size(body), 1 << 20,
                                             &env, why, sizeof(why)),
                             0);
            if (strcmp(envelope_type(env), "auth.verify") == 0) {
                ck_assert_str_eq(envelope_get_str(env, ENV_KEY_PASSWORD),
                                 "***");
                ck_assert_str_eq(envelope_get_str(env, ENV_KEY_USERNAME),
                                 "alice@x.test");
                seen++;
            }
            envelope_destroy(&env);
        }
    }
    ck_assert_msg(seen > 0, "no auth.verify seen on the trace feed");
    zsock_destroy(&sub);
    bus_client_destroy(&c);
    test_stop(w, SIGTERM, 2000);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

START_TEST(test_no_worker_is_an_error)
{
    struct ports p;
    bus_client_t *c;
    pid_t broker;
    int64_t t0;
    int rc;

    ports_init(&p, 18150);
    broker = start_broker(&p);
    c = client(NULL, p.clients);
    usleep(200000);
    t0 = test_now_ms();
    rc = call(c, "nobody.ping", 5000, NULL);
    ck_assert_msg(rc == ERR_NOWORKER, "got %s", err_name(rc));
    ck_assert_int_lt(test_now_ms() - t0, 1000);
    bus_client_destroy(&c);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

START_TEST(test_deadline_is_an_error)
{
    struct ports p;
    bus_client_t *c;
    pid_t broker, w;
    int64_t t0, took;
    int rc;

    ports_init(&p, 18160);
    broker = start_broker(&p);
    w = start_worker(p.workers, "slow", "S", 3000);
    c = client(NULL, p.clients);
    usleep(300000);
    t0 = test_now_ms();
    rc = call(c, "slow.x", 300, NULL);
    took = test_now_ms() - t0;
    ck_assert_msg(rc == ERR_TIMEOUT, "got %s", err_name(rc));
    ck_assert_msg(took >= 250 && took < 1000, "took %lld ms", (long long)took);
    /* And no broker at all: still the deadline, never a hang. */
    test_stop(broker, SIGKILL, 1000);
    t0 = test_now_ms();
    rc = call(c, "slow.x", 300, NULL);
    ck_assert_msg(rc == ERR_TIMEOUT, "got %s", err_name(rc));
    ck_assert_int_lt(test_now_ms() - t0, 1000);
    bus_client_destroy(&c);
    test_stop(w, SIGTERM, 2000);
}
END_TEST

/* Requests sent on the loop with no broker to take them time out each at
 * its own deadline, whatever order they were sent in: the client keeps one
 * timer for the earliest and must set it sooner for a sooner request. */
START_TEST(test_deadlines_on_the_loop)
{
    static const int timeout_ms[3] = {600, 200, 400};
    struct ports p;
    loop_t *loop = loop_new();
    bus_client_t *c;
    struct outcome o[3];
    int64_t t0;

    memset(o, 0, sizeof(o));
    ports_init(&p, 18210); /* nothing listens there */
    c = client(loop, p.clients);
    t0 = test_now_ms();
    for (int i = 0; i < 3; i++) {
        envelope_t *req = envelope_new("slow.x", NULL, timeout_ms[i]);

        ck_assert_int_eq(bus_client_send_take(c, &req, on_outcome, &o[i]), 0);
    }
    run_until(loop, o, 3, 3000);
    for (int i = 0; i < 3; i++) {
        int64_t took = o[i].at_ms - t0;

        ck_assert_msg(o[i].done && o[i].err == ERR_TIMEOUT,
                      "request %d: done %d err %s", i, o[i].done,
                      err_name(o[i].err));
        ck_assert_msg(took >= timeout_ms[i] - 20 && took < timeout_ms[i] + 400,
                      "request %d (%d ms): timed out after %lld ms", i,
                      timeout_ms[i], (long long)took);
    }
    ck_assert_msg(o[1].at_ms <= o[2].at_ms && o[2].at_ms <= o[0].at_ms,
                  "deadlines out of order: %lld %lld %lld",
                  (long long)(o[0].at_ms - t0), (long long)(o[1].at_ms - t0),
                  (long long)(o[2].at_ms - t0));
    ck_assert_int_eq((int)bus_client_pending(c), 0);
    bus_client_destroy(&c);
    loop_destroy(&loop);
}
END_TEST

START_TEST(test_failover_between_brokers)
{
    struct ports p1, p2;
    char clients[160], workers[160];
    bus_client_t *c;
    pid_t b1, b2, w;
    int ok = 0;

    ports_init(&p1, 18170);
    ports_init(&p2, 18175);
    snprintf(clients, sizeof(clients), "%s,%s", p1.clients, p2.clients);
    snprintf(workers, sizeof(workers), "%s,%s", p1.workers, p2.workers);
    b1 = start_broker(&p1);
    b2 = start_broker(&p2);
    w = start_worker(workers, "work", "W", 0);
    c = client(NULL, clients);
    ck_assert_int_ge(wait_ok(c, "work.x", 5000), 0);
    usleep(300000);
    test_stop(b1, SIGKILL, 1000);
    usleep(200000);
    for (int i = 0; i < 20; i++)
        ok += call(c, "work.x", 1000, NULL) == 0;
    ck_assert_msg(ok == 20, "%d of 20 calls succeeded after fail-over", ok);
    bus_client_destroy(&c);
    test_stop(w, SIGTERM, 2000);
    test_stop(b2, SIGTERM, 2000);
}
END_TEST

START_TEST(test_bad_envelope_gets_error)
{
    struct ports p;
    bus_client_t *c;
    zsock_t *raw;
    zmsg_t *m;
    pid_t broker, guard;

    ports_init(&p, 18180);
    broker = start_broker(&p);
    guard = start_guard(&p);
    c = client(NULL, p.clients);
    ck_assert_int_ge(wait_ok(c, "guard.ping", 5000), 0);
    raw = zsock_new_dealer(p.clients);
    zsock_set_rcvtimeo(raw, 3000);
    /* The protocol by hand (bus/proto.h): a header of NUL-separated
     * fields, then an envelope that is not msgpack. */
    m = zmsg_new();
    zmsg_addmem(m, PROTO_CLIENT "\0guard\0r1\0t1",
                sizeof(PROTO_CLIENT "\0guard\0r1\0t1") - 1);
    zmsg_addstr(m, "\xc1garbage");
    ck_assert_int_eq(zmsg_send(&m, raw), 0);
    m = zmsg_recv(raw);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(zmsg_size(m), 1);
    {
        zframe_t *fr = zmsg_first(m);
        const char *d = (const char *)zframe_data(fr);
        size_t len = zframe_size(fr);
        const char *want = PROTO_CLIENT "\0" PROTO_ERR "\0r1\0PROTO\0";
        size_t wl = sizeof(PROTO_CLIENT "\0" PROTO_ERR "\0r1\0PROTO\0") - 1;

        ck_assert_msg(len > wl && memcmp(d, want, wl) == 0,
                      "reply header is not C2 ERR r1 PROTO <why>");
    }
    zmsg_destroy(&m);
    /* The guard lived through it. */
    ck_assert_int_eq(call(c, "guard.ping", 2000, NULL), 0);
    zsock_destroy(&raw);
    bus_client_destroy(&c);
    test_stop(guard, SIGTERM, 2000);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

/* Batches (bus/frames.h). */

#define TURN_REQS 300
#define BIG_EVERY 37 /* every 37th request is too big to be batched */

struct echo_outcome {
    struct outcome o;
    char id[160];
    char *echo; /* what was sent */
    char *got;  /* what came back */
};

static void
on_echo(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct echo_outcome *e = arg;

    on_outcome(&e->o, err, text, reply);
    if (reply && envelope_get_str(reply, ENV_KEY_ECHO))
        e->got = strdup(envelope_get_str(reply, ENV_KEY_ECHO));
}

/* A turn's requests go as batches and their replies come back as batches:
 * 300 requests sent before the loop runs, to two workers, each gets its
 * own reply with its own echo, small and big (over BATCH_ENV_MAX, which go
 * alone) alike, and both workers take a share. */
START_TEST(test_batched_turn)
{
    struct ports p;
    loop_t *loop = loop_new();
    bus_client_t *c, *sync;
    struct echo_outcome *e = calloc(TURN_REQS, sizeof(*e));
    pid_t broker, a, b;
    int na = 0, nb = 0, big = 0;

    ports_init(&p, 18050);
    broker = start_broker(&p);
    a = start_worker(p.workers, "work", "A", 0);
    b = start_worker(p.workers, "work", "B", 0);
    sync = client(NULL, p.clients);
    ck_assert_int_ge(wait_ok(sync, "work.x", 5000), 0);
    usleep(300000); /* both registered */
    c = client(loop, p.clients);
    ck_assert_int_ge(wait_ok(c, "work.x", 5000), 0); /* connected */
    for (int i = 0; i < TURN_REQS; i++) {
        envelope_t *req = envelope_new("work.x", NULL, 5000);
        size_t n = i % BIG_EVERY == 0 ? BATCH_ENV_MAX + 4096 : 8 + i % 50;

        e[i].echo = malloc(n + 1);
        for (size_t k = 0; k < n; k++)
            e[i].echo[k] = (char)('a' + (i + k) % 26);
        e[i].echo[n] = '\0';
        big += n > BATCH_ENV_MAX;
        value_set_str(envelope_body(req), ENV_KEY_ECHO, e[i].echo);
        snprintf(e[i].id, sizeof(e[i].id), "%s", envelope_id(req));
        ck_assert_int_eq(bus_client_send_take(c, &req, on_echo, &e[i]), 0);
    }
    ck_assert_int_eq((int)bus_client_pending(c), TURN_REQS);
    {
        int64_t until = test_now_ms() + 10000;
        int done = 0;

        while (done < TURN_REQS && test_now_ms() < until) {
            loop_timer_add(loop, 10, on_quit, NULL);
            loop_run(loop);
            done = 0;
            for (int i = 0; i < TURN_REQS; i++)
                done += e[i].o.done;
        }
        ck_assert_msg(done == TURN_REQS, "%d of %d requests answered", done,
                      TURN_REQS);
    }
    for (int i = 0; i < TURN_REQS; i++) {
        ck_assert_msg(e[i].o.err == 0, "request %d: %s", i,
                      err_name(e[i].o.err));
        ck_assert_msg(e[i].got != NULL && strcmp(e[i].got, e[i].echo) == 0,
                      "request %d (%zu bytes): its echo did not come back",
                      i, strlen(e[i].echo));
        na += strcmp(e[i].o.worker, "A") == 0;
        nb += strcmp(e[i].o.worker, "B") == 0;
        free(e[i].echo);
        free(e[i].got);
    }
    ck_assert_int_gt(big, 5);
    ck_assert_int_eq(na + nb, TURN_REQS);
    ck_assert_msg(na >= TURN_REQS / 5 && nb >= TURN_REQS / 5,
                  "uneven share: A=%d B=%d", na, nb);
    ck_assert_int_eq((int)bus_client_pending(c), 0);
    free(e);
    bus_client_destroy(&c);
    bus_client_destroy(&sync);
    loop_destroy(&loop);
    test_stop(a, SIGTERM, 2000);
    test_stop(b, SIGTERM, 2000);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

/* Receives one message on raw within ms; its frames in f (at most 4), the
 * count returned (0 on timeout). */
static int
raw_recv(void *raw, zmq_msg_t *f, int ms)
{
    zmq_pollitem_t item = {raw, 0, ZMQ_POLLIN, 0};

    if (zmq_poll(&item, 1, ms) != 1)
        return 0;
    return frames_recv(raw, f, 4);
}

/* Adds a reply to the request record h + env to the raw worker's batch
 * rep, sending the batch when it is full. */
static void
raw_answer(void *raw, struct batch *rep, const struct hdr *h, const void *env,
           size_t envlen)
{
    const char *fields[5] = {PROTO_WORKER, PROTO_REP, h->f[2], h->f[3],
                             h->f[4]};
    envelope_t *req = NULL, *reply;
    char why[128];
    const char *payload;
    size_t len;

    ck_assert(hdr_is(h, 1, PROTO_REQ) && h->n == 5);
    ck_assert_int_eq(envelope_decode(env, envlen, 1 << 20, &req, why,
                                     sizeof(why)),
                     0);
    reply = envelope_new_reply(req, 250, "2.0.0", "raw");
    value_set_str(envelope_body(reply), "worker", "raw");
    envelope_encode_scratch(reply, &payload, &len);
    if (!batch_add(rep, 5, fields, NULL, payload, len)) {
        ck_assert_int_eq(batch_send(raw, NULL, 0, PROTO_WORKER, rep), 0);
        ck_assert(batch_add(rep, 5, fields, NULL, payload, len));
    }
    envelope_destroy(&req);
    envelope_destroy(&reply);
}

/* The protocol as a worker sees it: a hand-made worker (a raw DEALER)
 * gets a turn's 20 requests as the turn's first alone and the rest in
 * batches of at most BATCH_SEND_RECORDS records, answers them with
 * batches of its own, and the client gets every reply. A malformed batch
 * from it is logged and dropped, and the broker carries on. */
START_TEST(test_batches_on_the_wire)
{
    enum { N = 20 };
    struct ports p;
    loop_t *loop = loop_new();
    bus_client_t *c;
    struct outcome o[N];
    void *raw;
    zsock_t *rawz;
    struct batch rep = {0};
    pid_t broker;
    int records = 0, messages = 0, batches = 0;
    int64_t until;

    memset(o, 0, sizeof(o));
    ports_init(&p, 18060);
    broker = start_broker(&p);
    c = client(loop, p.clients);
    /* Connected first: with no broker yet, requests wait as unsent and go
     * one by one (ZMQ_IMMEDIATE). The broker's "no worker" proves it. */
    ck_assert_msg(wait_noworker(c, "raw.x", 10000),
                  "the broker never said it has no raw worker");
    rawz = zsock_new_dealer(p.workers);
    ck_assert_ptr_nonnull(rawz);
    raw = zsock_resolve(rawz);
    {
        static const char ready[] = PROTO_WORKER "\0" PROTO_READY
                                    "\0raw\0" "100"; /* not \0100 */
        static const char bh[] = PROTO_WORKER "\0" PROTO_BATCH;
        static const unsigned char junk[] = {0, 0, 0, 200, 'W', '2'};

        ck_assert_int_eq(zmq_send(raw, ready, sizeof(ready) - 1, 0),
                         (int)sizeof(ready) - 1);
        /* A batch that is not one (a length past its end): dropped with a
         * log line. */
        zmq_send(raw, bh, sizeof(bh) - 1, ZMQ_SNDMORE);
        zmq_send(raw, junk, sizeof(junk), 0);
    }
    /* Registered once the broker's heartbeats come (every 100 ms; it
     * drops a worker silent for 400 ms, so this one answers each). */
    {
        zmq_msg_t f[4];
        struct hdr h;
        int n = raw_recv(raw, f, 5000);
        static const char hb[] = PROTO_WORKER "\0" PROTO_HB;

        ck_assert_msg(n == 1 && hdr_parse(&f[0], &h) == 2 &&
                          hdr_is(&h, 1, PROTO_HB),
                      "no heartbeat for the raw worker (%d frames)", n);
        frames_close(f, n);
        zmq_send(raw, hb, sizeof(hb) - 1, 0);
    }
    for (int i = 0; i < N; i++) {
        envelope_t *req = envelope_new("raw.x", NULL, 5000);

        ck_assert_int_eq(bus_client_send_take(c, &req, on_outcome, &o[i]), 0);
    }
    /* One turn: the requests go, and the loop waits (for nothing). */
    loop_timer_add(loop, 50, on_quit, NULL);
    loop_run(loop);
    until = test_now_ms() + 5000;
    while (records < N && test_now_ms() < until) {
        zmq_msg_t f[4];
        struct hdr h;
        int n = raw_recv(raw, f, 3000);

        ck_assert_msg(n > 0, "message %d: none (%d records so far)",
                      messages, records);
        ck_assert_int_ge(hdr_parse(&f[0], &h), 2);
        ck_assert(hdr_is(&h, 0, PROTO_WORKER));
        if (hdr_is(&h, 1, PROTO_HB) && n == 1) { /* answered, to stay */
            static const char hb[] = PROTO_WORKER "\0" PROTO_HB;

            zmq_send(raw, hb, sizeof(hb) - 1, 0);
            frames_close(f, n);
            continue;
        }
        ck_assert_msg(n == 2, "message %d: %d frames, %s", messages, n,
                      h.f[1]);
        if (hdr_is(&h, 1, PROTO_BATCH)) {
            size_t pos = 0, envlen;
            int count = 0, rc;
            const void *env;
            struct hdr r;

            while ((rc = batch_next(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]),
                                    &pos, &count, &r, &env, &envlen)) > 0)
                raw_answer(raw, &rep, &r, env, envlen);
            ck_assert_int_eq(rc, 0);
            ck_assert_int_ge(count, 2);
            ck_assert_int_le(count, BATCH_SEND_RECORDS);
            records += count;
            batches++;
        } else {
            ck_assert_msg(messages == 0, "a lone request after the first");
            raw_answer(raw, &rep, &h, zmq_msg_data(&f[1]),
                       zmq_msg_size(&f[1]));
            records++;
        }
        messages++;
        frames_close(f, n);
    }
    ck_assert_int_eq(records, N);
    ck_assert_int_ge(batches, 2); /* 19 records: at least two batches */
    ck_assert_int_eq(batch_send(raw, NULL, 0, PROTO_WORKER, &rep), 0);
    run_until(loop, o, N, 5000);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(o[i].done && o[i].err == 0, "request %d: done %d err %s",
                      i, o[i].done, err_name(o[i].err));
        ck_assert_str_eq(o[i].worker, "raw");
    }
    batch_free(&rep);
    bus_client_destroy(&c);
    loop_destroy(&loop);
    zsock_destroy(&rawz);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

/* Counts one answer of test_bad_batch_from_client. */
static void
count_answer(const struct hdr *h, int *rep, int *err, int *cut, int *other)
{
    if (hdr_is(h, 1, PROTO_REP) && hdr_is(h, 2, "good1"))
        (*rep)++;
    else if (hdr_is(h, 1, PROTO_ERR) && hdr_is(h, 2, "bad1") &&
             hdr_is(h, 3, "PROTO"))
        (*err)++;
    else if (hdr_is(h, 1, PROTO_REP) && hdr_is(h, 2, "cut1"))
        (*cut)++;
    else
        (*other)++;
}

/* A client's batch by hand: a good guard.ping, a record whose envelope is
 * not msgpack, and one that names no service. The good one is answered,
 * the bad envelope gets ERR PROTO from the guard (the broker never decodes
 * envelopes), the one without service is dropped. A batch cut short in
 * its second record: its first is handled, the rest dropped. The broker
 * and the guard carry on. */
START_TEST(test_bad_batch_from_client)
{
    struct ports p;
    bus_client_t *c;
    zsock_t *rawz;
    void *raw;
    struct batch b = {0};
    envelope_t *ping = envelope_new("guard.ping", NULL, 3000);
    const char *payload;
    size_t len;
    pid_t broker, guard;
    int got_rep = 0, got_err = 0, got_cut = 0, got_other = 0;
    int64_t until;

    ports_init(&p, 18070);
    broker = start_broker(&p);
    guard = start_guard(&p);
    c = client(NULL, p.clients);
    ck_assert_int_ge(wait_ok(c, "guard.ping", 5000), 0);
    rawz = zsock_new_dealer(p.clients);
    raw = zsock_resolve(rawz);
    {
        const char *good[4] = {PROTO_CLIENT, "guard", "good1", "t1"};
        const char *bad[4] = {PROTO_CLIENT, "guard", "bad1", "t1"};
        const char *nosvc[4] = {PROTO_CLIENT, "", "nosvc1", "t1"};

        envelope_encode_scratch(ping, &payload, &len);
        ck_assert(batch_add(&b, 4, good, NULL, payload, len));
        ck_assert(batch_add(&b, 4, bad, NULL, "\xc1garbage", 8));
        ck_assert(batch_add(&b, 4, nosvc, NULL, payload, len));
    }
    ck_assert_int_eq(batch_send(raw, NULL, 0, PROTO_CLIENT, &b), 0);
    /* A batch cut short: its second record's envelope length runs past
     * the end. */
    {
        static const char bh[] = PROTO_CLIENT "\0" PROTO_BATCH;
        const char *cut[4] = {PROTO_CLIENT, "guard", "cut1", "t2"};
        const char *lost[4] = {PROTO_CLIENT, "guard", "lost1", "t2"};

        ck_assert(batch_add(&b, 4, cut, NULL, payload, len));
        ck_assert(batch_add(&b, 4, lost, NULL, payload, len));
        zmq_send(raw, bh, sizeof(bh) - 1, ZMQ_SNDMORE);
        zmq_send(raw, b.buf, b.len - 3, 0);
    }
    /* Until all three answers are in, and a moment more for any other. */
    until = test_now_ms() + 3000;
    while (test_now_ms() < until) {
        zmq_msg_t f[4];
        int n = raw_recv(raw, f, 500);
        struct hdr h;

        if (n == 0)
            continue;
        ck_assert_int_ge(hdr_parse(&f[0], &h), 2);
        if (hdr_is(&h, 1, PROTO_BATCH)) {
            size_t pos = 0, envlen;
            int count = 0;
            const void *env;
            struct hdr r;

            while (batch_next(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &pos,
                              &count, &r, &env, &envlen) > 0)
                count_answer(&r, &got_rep, &got_err, &got_cut, &got_other);
        } else {
            count_answer(&h, &got_rep, &got_err, &got_cut, &got_other);
        }
        frames_close(f, n);
        if (got_rep + got_err + got_cut == 3 && until > test_now_ms() + 300)
            until = test_now_ms() + 300;
    }
    ck_assert_int_eq(got_rep, 1);
    ck_assert_int_eq(got_err, 1);
    ck_assert_int_eq(got_cut, 1);
    ck_assert_int_eq(got_other, 0);
    ck_assert_int_eq(call(c, "guard.ping", 2000, NULL), 0);
    batch_free(&b);
    envelope_destroy(&ping);
    zsock_destroy(&rawz);
    bus_client_destroy(&c);
    test_stop(guard, SIGTERM, 2000);
    test_stop(broker, SIGTERM, 2000);
}
END_TEST

static Suite *
bus_suite(void)
{
    Suite *s = suite_create("bus");
    TCase *tc = tcase_create("broker");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_request_reply);
    tcase_add_test(tc, test_two_workers_share_load);
    tcase_add_test(tc, test_worker_killed_mid_request);
    tcase_add_test(tc, test_broker_restart_rejoined);
    tcase_add_test(tc, test_trace_sees_every_envelope);
    tcase_add_test(tc, test_trace_masks_secrets);
    tcase_add_test(tc, test_no_worker_is_an_error);
    tcase_add_test(tc, test_deadline_is_an_error);
    tcase_add_test(tc, test_deadlines_on_the_loop);
    tcase_add_test(tc, test_failover_between_brokers);
    tcase_add_test(tc, test_bad_envelope_gets_error);
    tcase_add_test(tc, test_batched_turn);
    tcase_add_test(tc, test_batches_on_the_wire);
    tcase_add_test(tc, test_bad_batch_from_client);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(bus_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
