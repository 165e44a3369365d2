/*
 * test_worker.c - a bus worker for the bus tests: answers every request of
 * its service after --delay-ms, with a body naming itself (and the
 * request's "echo" string, when it has one), so that tests can hold a
 * request in a worker and kill it there, and check what came back.
 *
 *   test-bus-worker --endpoints EP[,EP] --service NAME --name ID
 *                   [--delay-ms N] [--heartbeat-ms N]
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bus.h"
#include "lib/log.h"

struct held {
    bus_worker_t *worker;
    bus_request_t *req;
};

/* Requests held for --delay-ms, dropped (and the broker told) at exit. */
#define MAX_HELD 1024
static struct held *held[MAX_HELD];
static bus_worker_t *worker;
static const char *name = "w";
static long delay_ms;

static void
answer(bus_request_t **req_p)
{
    const envelope_t *req = bus_request_envelope(*req_p);
    envelope_t *reply = envelope_new_reply(req, 250, "2.0.0", "done");
    const char *echo = envelope_get_str(req, ENV_KEY_ECHO);

    if (echo != NULL)
        value_set_str(envelope_body(reply), ENV_KEY_ECHO, echo);
    value_set_str(envelope_body(reply), "worker", name);
    value_set_int(envelope_body(reply), "pid", getpid());
    bus_worker_reply_take(worker, req_p, &reply);
}

static void
on_delay(loop_t *loop, void *arg)
{
    struct held *h = arg;

    (void)loop;
    answer(&h->req);
    for (int i = 0; i < MAX_HELD; i++)
        if (held[i] == h)
            held[i] = NULL;
    free(h);
}

static void
on_request(void *arg, bus_request_t **req_p)
{
    loop_t *loop = arg;

    if (delay_ms > 0) {
        struct held *h = calloc(1, sizeof(*h));

        h->req = *req_p;
        *req_p = NULL;
        for (int i = 0; i < MAX_HELD; i++)
            if (held[i] == NULL) {
                held[i] = h;
                break;
            }
        loop_timer_add(loop, delay_ms, on_delay, h);
        return;
    }
    answer(req_p);
}

static void
on_stop(loop_t *loop, int signo, void *arg)
{
    (void)signo;
    (void)arg;
    loop_stop(loop);
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"endpoints", required_argument, NULL, 'e'},
        {"service", required_argument, NULL, 's'},
        {"name", required_argument, NULL, 'n'},
        {"delay-ms", required_argument, NULL, 'd'},
        {"heartbeat-ms", required_argument, NULL, 'b'},
        {NULL, 0, NULL, 0}};
    struct bus_worker_opts o = {.capacity = 64, .heartbeat_ms = 100,
                                .liveness = 4, .max_envelope = 1 << 20};
    char why[256];
    loop_t *loop;
    int c;

    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'e': o.endpoints = optarg; break;
        case 's': o.service = optarg; break;
        case 'n': name = optarg; break;
        case 'd': delay_ms = atol(optarg); break;
        case 'b': o.heartbeat_ms = atoi(optarg); break;
        default: return 2;
        }
    }
    if (o.endpoints == NULL || o.service == NULL)
        return 2;
    log_init("test-worker", name);
    loop = loop_new();
    loop_signal_add(loop, SIGTERM, on_stop, NULL);
    worker = bus_worker_new(loop, &o, on_request, loop, why, sizeof(why));
    if (worker == NULL) {
        fprintf(stderr, "test-bus-worker: %s\n", why);
        return 1;
    }
    loop_run(loop);
    for (int i = 0; i < MAX_HELD; i++)
        if (held[i]) {
            bus_request_destroy(&held[i]->req);
            free(held[i]);
        }
    bus_worker_destroy(&worker);
    loop_destroy(&loop);
    return 0;
}
