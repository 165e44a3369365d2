/*
 * broker_main.c - samotop-bus: the broker process.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actor.h"
#include "broker.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics_http.h"

static void
on_stop(loop_t *loop, int signo, void *arg)
{
    (void)arg;
    log_info(NULL, "stopping", "signal=%d", signo);
    loop_stop(loop);
}

int
main(int argc, char **argv)
{
    struct actor_args args;
    struct broker_opts o;
    broker_t *b;
    loop_t *loop;
    metrics_t *m;
    metrics_http_t *http = NULL;
    char why[512];
    int rc;

    rc = actor_args_parse(argc, argv, "bus", &args);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    o.clients = config_str(args.cfg, "broker.clients");
    o.workers = config_str(args.cfg, "broker.workers");
    o.trace = config_str(args.cfg, "broker.trace");
    o.heartbeat_ms = (int)config_int(args.cfg, "bus.heartbeat_ms");
    o.liveness = (int)config_int(args.cfg, "bus.liveness");
    o.queue_ms = (int)config_int(args.cfg, "bus.timeout_ms");
    loop = loop_new();
    if (loop == NULL)
        log_fatal(NULL, "start_failed", "reason=\"no epoll\"");
    loop_signal_add(loop, SIGTERM, on_stop, NULL);
    loop_signal_add(loop, SIGINT, on_stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    b = broker_new(loop, &o, why, sizeof(why));
    if (b == NULL)
        log_fatal(NULL, "start_failed", "reason=%s", log_q(why));
    m = metrics_new();
    metrics_add_process(m, "bus", args.instance);
    broker_set_metrics(b, m);
    if (*config_str(args.cfg, "metrics.listen")) {
        /* Bound and routing: the broker is healthy while it answers. */
        struct metrics_http_opts ho = {
            .listen = config_str(args.cfg, "metrics.listen"), .metrics = m};

        http = metrics_http_new(loop, &ho, why, sizeof(why));
        if (http == NULL)
            log_fatal(NULL, "start_failed", "reason=%s", log_q(why));
    }
    log_info(NULL, "ready", "clients=%s workers=%s trace=%s", o.clients,
             o.workers, o.trace);
    loop_run(loop);
    metrics_http_destroy(&http);
    broker_destroy(&b);
    metrics_destroy(&m);
    loop_destroy(&loop);
    actor_args_free(&args);
    log_info(NULL, "stopped", "");
    return 0;
}
