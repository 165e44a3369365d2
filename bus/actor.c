#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "actor.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/metrics_http.h"
#include "lib/xalloc.h"

struct actor {
    const struct actor_desc *desc;
    struct actor_args args;
    char name[96];
    char service[64]; /* set by init (a shard), or "" for desc->name */
    loop_t *loop;
    bus_worker_t *worker;
    bus_client_t *client;
    loop_timer_t *tick_timer;
    void *data;
    int64_t started_ms;
    uint64_t handled, unknown;
    metrics_t *metrics;
    metrics_http_t *http;
    metric_t *m_requests, *m_latency, *m_brokers, *m_inflight, *m_pending;
};

static void
usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--config FILE] [--set KEY=VALUE]... [--instance ID]\n"
            "          [--print-config] [--help]\n"
            "The configuration is FILE (or $SAMOTOP_CONFIG) with SAMOTOP_* "
            "environment\noverrides; --print-config lists every key.\n",
            prog);
}

static int args_parse(int argc, char **argv, const char *name,
                      struct actor_args *out, int *first_arg,
                      const struct option *extra,
                      int (*on_extra)(int, const char *, void *), void *ctx);

int
actor_args_parse(int argc, char **argv, const char *name,
                 struct actor_args *out)
{
    return args_parse(argc, argv, name, out, NULL, NULL, NULL, NULL);
}

int
actor_args_parse_verbs(int argc, char **argv, const char *name,
                       struct actor_args *out, int *first_arg)
{
    return args_parse(argc, argv, name, out, first_arg, NULL, NULL, NULL);
}

int
actor_args_parse_opts(int argc, char **argv, const char *name,
                      struct actor_args *out, const struct option *extra,
                      int (*on_extra)(int, const char *, void *), void *ctx)
{
    return args_parse(argc, argv, name, out, NULL, extra, on_extra, ctx);
}

static const struct option common_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"set", required_argument, NULL, 's'},
    {"instance", required_argument, NULL, 'i'},
    {"print-config", no_argument, NULL, 'p'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

static int
args_parse(int argc, char **argv, const char *name, struct actor_args *out,
           int *first_arg, const struct option *extra,
           int (*on_extra)(int, const char *, void *), void *ctx)
{
    struct option longopts[64];
    int nlong = 0;
    const char *config_path = NULL, *inst = getenv("SAMOTOP_INSTANCE");
    char why[600], **sets = xcalloc((size_t)argc + 1, sizeof(char *));
    int nsets = 0, print = 0, c, rc = 0;

    memset(out, 0, sizeof(*out));
    for (const struct option *o = common_opts; o->name; o++)
        longopts[nlong++] = *o;
    for (const struct option *o = extra; o && o->name && nlong < 63; o++)
        longopts[nlong++] = *o;
    memset(&longopts[nlong], 0, sizeof(longopts[nlong]));
    optind = 1;
    /* "+": stop at the first non-option, where a tool's verb begins. */
    while ((c = getopt_long(argc, argv, first_arg ? "+c:s:i:ph" : "c:s:i:ph",
                            longopts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 's': sets[nsets++] = optarg; break;
        case 'i': inst = optarg; break;
        case 'p': print = 1; break;
        case 'h':
            usage(stdout, argv[0]);
            out->help_shown = true;
            free(sets);
            return 1;
        case '?':
            usage(stderr, argv[0]);
            free(sets);
            return -1;
        default:
            /* Tools' own options use codes above 255: only long forms. */
            if (c > 255 && on_extra && on_extra(c, optarg, ctx) == 0)
                break;
            if (c > 255 && on_extra) {
                free(sets);
                return -1;
            }
            usage(stderr, argv[0]);
            free(sets);
            return -1;
        }
    }
    if (first_arg)
        *first_arg = optind;
    else if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument \"%s\"\n", argv[0],
                argv[optind]);
        free(sets);
        return -1;
    }
    if (inst && *inst) {
        snprintf(out->instance, sizeof(out->instance), "%s", inst);
    } else {
        unsigned char r[2];

        if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
            r[0] = r[1] = 0;
        snprintf(out->instance, sizeof(out->instance), "%02x%02x", r[0],
                 r[1]);
    }
    log_init(name, out->instance);
    out->cfg = config_new();
    if (config_load(out->cfg, config_path, why, sizeof(why)) != 0)
        rc = -1;
    for (int i = 0; rc == 0 && i < nsets; i++) {
        char *eq = strchr(sets[i], '='), key[256];

        if (eq == NULL || eq == sets[i] || eq - sets[i] >= (long)sizeof(key)) {
            snprintf(why, sizeof(why), "--set %s: expected KEY=VALUE",
                     sets[i]);
            rc = -1;
            break;
        }
        memcpy(key, sets[i], (size_t)(eq - sets[i]));
        key[eq - sets[i]] = '\0';
        if (config_set(out->cfg, key, eq + 1, why, sizeof(why)) != 0)
            rc = -1;
    }
    free(sets);
    if (rc != 0) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], why);
        log_event(LL_FATAL, NULL, "config_error", "reason=%s", log_q(why));
        config_destroy(&out->cfg);
        return -1;
    }
    log_set_level(
        (enum log_level)log_level_parse(config_str(out->cfg, "log.level")));
    config_warn_env_unknown();
    if (print) {
        config_dump(out->cfg, stdout);
        config_destroy(&out->cfg);
        return 1;
    }
    return 0;
}

void
actor_args_free(struct actor_args *args)
{
    config_destroy(&args->cfg);
}

loop_t *
actor_loop(actor_t *a)
{
    return a->loop;
}

const config_t *
actor_config(const actor_t *a)
{
    return a->args.cfg;
}

bus_client_t *
actor_client(actor_t *a)
{
    return a->client;
}

const char *
actor_name(const actor_t *a)
{
    return a->name;
}

metrics_t *
actor_metrics(actor_t *a)
{
    return a->metrics;
}

/* Counts an answer to req: by its type and the reply's code, with the
 * time since the worker took it. */
static void
count_answer(actor_t *a, const bus_request_t *req, int code)
{
    const char *type = envelope_type(bus_request_envelope(req));
    char c[16];

    snprintf(c, sizeof(c), "%d", code);
    metrics_inc(a->m_requests, METRICS_L(type, c));
    metrics_observe(a->m_latency, METRICS_L(type),
                    (double)(clock_mono_us() - bus_request_received_us(req)) /
                        1e6);
}

void
actor_set_data(actor_t *a, void *data)
{
    a->data = data;
}

int
actor_set_service(actor_t *a, const char *service)
{
    if (*service == '\0' || strlen(service) >= sizeof(a->service))
        return ERR_INVAL;
    snprintf(a->service, sizeof(a->service), "%s", service);
    return 0;
}

void *
actor_data(actor_t *a)
{
    return a->data;
}

int
actor_reply(actor_t *a, bus_request_t **req_p, envelope_t **reply_p)
{
    if (*req_p && *reply_p)
        count_answer(a, *req_p, envelope_code(*reply_p));
    return bus_worker_reply_take(a->worker, req_p, reply_p);
}

int
actor_fail(actor_t *a, bus_request_t **req_p, int code, const char *ecode,
           const char *text)
{
    if (*req_p)
        count_answer(a, *req_p, code);
    return bus_worker_fail_take(a->worker, req_p, code, ecode, text, 0);
}

static void
on_ping(actor_t *a, bus_request_t **req_p)
{
    const envelope_t *req = bus_request_envelope(*req_p);
    envelope_t *reply = envelope_new_reply(req, 250, "2.0.0", "pong");
    value_t *body = envelope_body(reply);
    const char *echo = envelope_get_str(req, ENV_KEY_ECHO);

    value_set_str(body, ENV_KEY_ACTOR, a->name);
    value_set_int(body, ENV_KEY_PID, getpid());
    value_set_int(body, ENV_KEY_UPTIME_MS, clock_mono_ms() - a->started_ms);
    if (echo)
        value_set_str(body, ENV_KEY_ECHO, echo);
    actor_reply(a, req_p, &reply);
}

static void
on_request(void *arg, bus_request_t **req_p)
{
    actor_t *a = arg;
    const envelope_t *env = bus_request_envelope(*req_p);
    enum env_type t = envelope_type_id(env);
    const struct handler *h;
    char text[256];

    for (h = a->desc->handlers; h && h->fn; h++)
        if (h->type == t && t != ENV_NONE) {
            a->handled++;
            h->fn(a, req_p);
            return;
        }
    if (t == ENV_PING) {
        a->handled++;
        on_ping(a, req_p);
        return;
    }
    a->unknown++;
    log_warn(envelope_trace(env), "unknown_type", "type=%s from=%s count=%llu",
             log_q(envelope_type(env)), log_q(envelope_from(env)),
             (unsigned long long)a->unknown);
    snprintf(text, sizeof(text), "%s does not handle %s", a->desc->name,
             envelope_type(env));
    /* Not by its type: a peer could make up any number of them. */
    metrics_inc(a->m_requests, METRICS_L("other", "502"));
    bus_worker_fail_take(a->worker, req_p, 502, "5.5.1", text, ERR_PROTO);
}

/* Gauges read at each scrape rather than counted. */
static void
on_collect(metrics_t *m, void *arg)
{
    actor_t *a = arg;

    (void)m;
    metrics_set(a->m_brokers, NULL,
                a->worker ? bus_worker_brokers(a->worker) : 0);
    metrics_set(a->m_inflight, NULL,
                a->worker ? bus_worker_inflight(a->worker) : 0);
    metrics_set(a->m_pending, NULL, (double)bus_client_pending(a->client));
}

/* /health and /ready: the process answers and a broker can reach its
 * worker. */
static int
on_health(void *arg, char *why, size_t whylen)
{
    actor_t *a = arg;

    if (a->worker && bus_worker_brokers(a->worker) > 0)
        return 0;
    snprintf(why, whylen, "no broker heard from at %s",
             config_str(a->args.cfg, "bus.workers"));
    return -1;
}

/* /ready: healthy, and the actor's own needs met (desc->ready). */
static int
on_ready(void *arg, char *why, size_t whylen)
{
    actor_t *a = arg;

    if (on_health(arg, why, whylen) != 0)
        return -1;
    return a->desc->ready ? a->desc->ready(a, why, whylen) : 0;
}

/* The metrics every actor has; the actor adds its own in init. */
static void
metrics_start(actor_t *a)
{
    metrics_t *m = a->metrics = metrics_new();

    metrics_add_process(m, a->desc->name, a->args.instance);
    a->m_requests = metrics_counter(
        m, "samotop_bus_requests_total",
        "Bus requests this actor answered, by type and reply code",
        "type,code");
    a->m_latency = metrics_histogram(
        m, "samotop_bus_request_duration_seconds",
        "Time from taking a bus request to answering it, by type", "type",
        NULL, 0);
    a->m_brokers = metrics_gauge(m, "samotop_bus_brokers",
                                 "Brokers the worker hears from", NULL);
    a->m_inflight = metrics_gauge(m, "samotop_bus_worker_inflight",
                                  "Requests taken and not yet answered",
                                  NULL);
    a->m_pending = metrics_gauge(m, "samotop_bus_client_pending",
                                 "Requests sent and waiting for an outcome",
                                 NULL);
    metrics_on_collect(m, on_collect, a);
}

static void
on_stop(loop_t *loop, int signo, void *arg)
{
    (void)arg;
    log_info(NULL, "stopping", "signal=%d", signo);
    loop_stop(loop);
}

static void
on_tick(loop_t *loop, void *arg)
{
    actor_t *a = arg;

    a->desc->tick(a);
    a->tick_timer = loop_timer_add(loop, a->desc->tick_ms, on_tick, a);
}

int
actor_main(int argc, char **argv, const struct actor_desc *desc)
{
    actor_t *a = xcalloc(1, sizeof(*a));
    struct bus_worker_opts wo;
    const config_t *cfg;
    char why[512];
    int rc;

    a->desc = desc;
    a->started_ms = clock_mono_ms();
    rc = actor_args_parse(argc, argv, desc->name, &a->args);
    if (rc != 0) {
        free(a);
        return rc > 0 ? 0 : 2;
    }
    cfg = a->args.cfg;
    snprintf(a->name, sizeof(a->name), "%s", log_actor());
    signal(SIGPIPE, SIG_IGN);
    a->loop = loop_new();
    if (a->loop == NULL)
        log_fatal(NULL, "start_failed", "reason=\"no epoll\"");
    loop_signal_add(a->loop, SIGTERM, on_stop, a);
    loop_signal_add(a->loop, SIGINT, on_stop, a);
    a->client = bus_client_new(a->loop, config_str(cfg, "bus.clients"),
                               (size_t)config_int(cfg, "bus.max_envelope"),
                               why, sizeof(why));
    if (a->client == NULL)
        log_fatal(NULL, "start_failed", "reason=%s", log_q(why));
    metrics_start(a);
    bus_client_set_metrics(a->client, a->metrics);
    wo.endpoints = config_str(cfg, "bus.workers");
    wo.service = desc->name;
    wo.capacity = (int)config_int(cfg, "bus.worker_capacity");
    wo.heartbeat_ms = (int)config_int(cfg, "bus.heartbeat_ms");
    wo.liveness = (int)config_int(cfg, "bus.liveness");
    wo.max_envelope = (size_t)config_int(cfg, "bus.max_envelope");
    if (desc->init && (rc = desc->init(a)) != 0)
        log_fatal(NULL, "start_failed", "reason=%s", log_q(err_str(rc)));
    if (a->service[0] != '\0')
        wo.service = a->service;
    /* Register only once init is done: no request arrives half-ready. */
    a->worker = bus_worker_new(a->loop, &wo, on_request, a, why, sizeof(why));
    if (a->worker == NULL)
        log_fatal(NULL, "start_failed", "reason=%s", log_q(why));
    if (desc->tick && desc->tick_ms > 0)
        a->tick_timer = loop_timer_add(a->loop, desc->tick_ms, on_tick, a);
    if (*config_str(cfg, "metrics.listen")) {
        struct metrics_http_opts ho = {
            .listen = config_str(cfg, "metrics.listen"),
            .metrics = a->metrics,
            .health = on_health,
            .ready = on_ready,
            .arg = a,
        };

        a->http = metrics_http_new(a->loop, &ho, why, sizeof(why));
        if (a->http == NULL)
            log_fatal(NULL, "start_failed", "reason=%s", log_q(why));
    }
    log_info(NULL, "ready", "service=%s bus=%s pid=%d metrics_port=%d",
             wo.service, wo.endpoints, (int)getpid(),
             a->http ? metrics_http_port(a->http) : 0);
    rc = loop_run(a->loop);
    metrics_http_destroy(&a->http);
    if (desc->fini)
        desc->fini(a);
    loop_timer_cancel(a->loop, &a->tick_timer);
    bus_worker_destroy(&a->worker);
    bus_client_destroy(&a->client);
    metrics_destroy(&a->metrics);
    loop_destroy(&a->loop);
    log_info(NULL, "stopped", "handled=%llu unknown=%llu",
             (unsigned long long)a->handled, (unsigned long long)a->unknown);
    actor_args_free(&a->args);
    free(a);
    return rc == 0 ? 0 : 1;
}
