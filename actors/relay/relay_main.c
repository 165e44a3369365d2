/*
 * relay_main.c - samotop-relay: the outbound ESMTP client: routes, MX
 * lookup, delivery to other servers (relay.h has the picture).
 *
 * The skeleton (bus/actor.c) registers the "relay" service on the bus and
 * answers relay.ping; relay.send is the one other type it takes.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/log.h"
#include "relay.h"

/* Redis commands (the route lookup) give up after this long. */
#define RELAY_REDIS_TIMEOUT_MS 2000

static relay_t the_relay;

static const struct handler relay_handlers[] = {
    {ENV_RELAY_SEND, relay_on_send}, /* from queue */
    {ENV_NONE, NULL},
};

static int
relay_init(actor_t *a)
{
    relay_t *r = &the_relay;
    const config_t *cfg = actor_config(a);
    char why[512];

    r->actor = a;
    r->loop = actor_loop(a);
    relay_metrics_init(r, actor_metrics(a));
    snprintf(r->hostname, sizeof(r->hostname), "%s",
             config_str(cfg, "hostname"));
    if (r->hostname[0] == '\0' &&
        gethostname(r->hostname, sizeof(r->hostname) - 1) != 0)
        snprintf(r->hostname, sizeof(r->hostname), "localhost");
    r->port = (int)config_int(cfg, "relay.port");
    r->idle_ms = config_int(cfg, "relay.idle_ms");
    r->max_per_host = (int)config_int(cfg, "relay.max_per_host");
    r->connect_ms = config_int(cfg, "relay.connect_timeout_ms");
    r->t_greeting = config_int(cfg, "relay.timeout_greeting_ms");
    r->t_cmd = config_int(cfg, "relay.timeout_cmd_ms");
    r->t_data_init = config_int(cfg, "relay.timeout_data_init_ms");
    r->t_data_block = config_int(cfg, "relay.timeout_data_block_ms");
    r->t_data_end = config_int(cfg, "relay.timeout_data_end_ms");
    r->dns = dns_new(r->loop, config_str(cfg, "relay.dns"),
                     (int)config_int(cfg, "relay.dns_timeout_ms"),
                     (int)config_int(cfg, "relay.dns_tries"), why, sizeof(why));
    if (r->dns == NULL) {
        log_err(NULL, "config_error", "key=relay.dns reason=%s", log_q(why));
        return ERR_CONFIG;
    }
    r->tls = tls_client_new(config_str(cfg, "relay.tls_ca"), why, sizeof(why));
    if (r->tls == NULL) {
        log_err(NULL, "tls_setup_failed", "reason=%s", log_q(why));
        dns_destroy(&r->dns);
        return ERR_SYS;
    }
    relay_self_init(r, cfg);
    r->store = store_async_new(r->loop, cfg, RELAY_REDIS_TIMEOUT_MS);
    r->hosts = zhashx_new();
    actor_set_data(a, r);
    log_info(NULL, "relay_started",
             "hostname=%s dns=%s port=%d idle_ms=%lld "
             "max_per_host=%d self_addrs=%d%s",
             log_q(r->hostname),
             log_q(*config_str(cfg, "relay.dns") ? config_str(cfg, "relay.dns")
                                                 : "resolv.conf"),
             r->port, (long long)r->idle_ms, r->max_per_host, r->nself,
             r->self_any ? "+loopback" : "");
    return 0;
}

static void
relay_tick(actor_t *a)
{
    relay_t *r = actor_data(a);

    if (r)
        relay_hosts_sweep(r);
}

static void
relay_fini(actor_t *a)
{
    relay_t *r = actor_data(a);

    if (r == NULL)
        return;
    relay_jobs_abort(r);
    relay_conns_close_all(r);
    /* Route lookups still out call back now and free their jobs. */
    store_async_destroy(&r->store);
    dns_destroy(&r->dns);
    relay_self_fini(r);
    tls_ctx_destroy(&r->tls);
    zhashx_destroy(&r->hosts);
    log_info(NULL, "relay_stopped", "jobs=%llu connects=%llu reuses=%llu",
             (unsigned long long)r->jobs_done, (unsigned long long)r->connects,
             (unsigned long long)r->reuses);
}

int
main(int argc, char **argv)
{
    return actor_main(argc, argv,
                      &(struct actor_desc){.name = "relay",
                                           .handlers = relay_handlers,
                                           .init = relay_init,
                                           .fini = relay_fini,
                                           .ready = relay_ready,
                                           .tick = relay_tick,
                                           .tick_ms = 60000});
}
