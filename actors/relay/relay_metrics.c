/*
 * relay_metrics.c - what samotop-relay counts for /metrics
 * (lib/metrics.h): jobs (one relay.send each) with their attempts and
 * time, each recipient's result by reply class (2xx delivered, 4xx
 * deferred, 5xx bounced), and connections opened and reused, which
 * relay_conn.c already counts in struct relay and are copied at each
 * scrape.
 */
#include <stdio.h>

#include "lib/metrics.h"
#include "relay.h"

static struct {
    relay_t *r;
    metric_t *jobs, *attempts, *results, *duration, *conns, *conns_open;
} rm;

/* Copies what relay_conn.c counts by itself. */
static void
on_collect(metrics_t *m, void *arg)
{
    int open = 0;

    (void)m;
    (void)arg;
    if (rm.r->hosts)
        for (struct relay_host *h = zhashx_first(rm.r->hosts); h;
             h = zhashx_next(rm.r->hosts))
            open += h->nconns;
    metrics_set(rm.conns, METRICS_L("opened"), (double)rm.r->connects);
    metrics_set(rm.conns, METRICS_L("reused"), (double)rm.r->reuses);
    metrics_set(rm.conns_open, NULL, open);
}

void
relay_metrics_init(relay_t *r, metrics_t *m)
{
    rm.r = r;
    rm.jobs = metrics_counter(m, "samotop_relay_jobs_total",
                              "relay.send requests finished", NULL);
    rm.attempts = metrics_counter(
        m, "samotop_relay_attempts_total",
        "Transactions tried with a next hop (one per address tried)", NULL);
    rm.results = metrics_counter(
        m, "samotop_relay_results_total",
        "Recipients' outcomes by reply class (2xx delivered, 4xx deferred, "
        "5xx bounced)",
        "class");
    rm.duration = metrics_histogram(
        m, "samotop_relay_job_duration_seconds",
        "Time from taking a relay.send to answering it", NULL, NULL, 0);
    rm.conns = metrics_counter(
        m, "samotop_relay_connections_total",
        "Connections to next hops, opened new or reused idle", "how");
    rm.conns_open = metrics_gauge(m, "samotop_relay_connections_open",
                                  "Connections to next hops open now", NULL);
    metrics_on_collect(m, on_collect, NULL);
}

int
relay_ready(actor_t *a, char *why, size_t whylen)
{
    (void)a;
    if (rm.r && rm.r->store && store_async_ready(rm.r->store))
        return 0;
    snprintf(why, whylen, "no connection to redis (routes)");
    return -1;
}

void
relay_metrics_job(const struct relay_job *j)
{
    metrics_inc(rm.jobs, NULL);
    metrics_add(rm.attempts, NULL, j->attempts);
    for (int i = 0; i < j->nrcpts; i++) {
        char cls[8];

        snprintf(cls, sizeof(cls), "%dxx", j->res[i].code / 100 % 10);
        metrics_inc(rm.results, METRICS_L(cls));
    }
    metrics_observe(rm.duration, NULL,
                    (double)(loop_now_ms(j->r->loop) - j->started_ms) / 1e3);
}
