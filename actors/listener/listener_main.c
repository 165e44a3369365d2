/*
 * listener_main.c - samotop-listener: SMTP sessions in the MTA, MSA and
 * SMTPS roles, joined to the bus (guard for policy, mailbox for delivery).
 *
 * The skeleton (bus/actor.c) registers the "listener" service and answers
 * listener.ping; the listener takes no other envelope type.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/shard.h"
#include "lib/xalloc.h"
#include "listener.h"

static listener_t the_listener;

static const struct handler listener_handlers[] = {
    {ENV_NONE, NULL}
};

/* The engine's options for each role (DESIGN.md, the flows): the MTA
 * offers STARTTLS and no AUTH; the MSA (RFC 6409) offers AUTH only under
 * TLS and wants it before MAIL; SMTPS (RFC 8314) is under TLS from the
 * first byte. */
static void
role_opts(listener_t *l, struct role *r, const config_t *cfg)
{
    struct smtp_server_opts *o = &r->opts;

    memset(o, 0, sizeof(*o));
    o->hostname = l->hostname;
    o->max_message = (size_t)config_int(cfg, "smtp.max_message");
    o->max_rcpts = (int)config_int(cfg, "smtp.max_rcpts");
    o->max_errors = (int)config_int(cfg, "smtp.max_errors");
    o->ext = SMTP_EXT_ALL & ~SMTP_EXT_AUTH;
    if (l->tls == NULL)
        o->ext &= ~SMTP_EXT_STARTTLS;
    switch (r->kind) {
    case ROLE_MTA:
        break;
    case ROLE_MSA:
        o->ext |= SMTP_EXT_AUTH;
        o->auth_mechs = "PLAIN LOGIN";
        o->auth_needs_tls = true;
        o->mail_needs_auth = true;
        break;
    case ROLE_SMTPS:
        o->ext = (o->ext | SMTP_EXT_AUTH) & ~SMTP_EXT_STARTTLS;
        o->auth_mechs = "PLAIN LOGIN";
        o->tls_active = true;
        o->auth_needs_tls = true;
        o->mail_needs_auth = true;
        break;
    }
}

static int
listener_init(actor_t *a)
{
    listener_t *l = &the_listener;
    const config_t *cfg = actor_config(a);
    int rc;

    /* Each session holds a descriptor: listener.max_sessions, not the
     * soft limit on open files (often 1024), decides how many there are. */
    net_raise_nofile();
    listener_metrics_init(actor_metrics(a));
    l->actor = a;
    l->loop = actor_loop(a);
    l->bus = actor_client(a);
    snprintf(l->hostname, sizeof(l->hostname), "%s",
             config_str(cfg, "hostname"));
    if (l->hostname[0] == '\0' &&
        gethostname(l->hostname, sizeof(l->hostname) - 1) != 0)
        snprintf(l->hostname, sizeof(l->hostname), "localhost");
    l->max_sessions = (int)config_int(cfg, "listener.max_sessions");
    l->max_per_ip = (int)config_int(cfg, "listener.max_per_ip");
    l->idle_ms = config_int(cfg, "listener.idle_timeout_ms");
    l->session_ms = config_int(cfg, "listener.session_timeout_ms");
    l->bus_timeout_ms = config_int(cfg, "bus.timeout_ms");
    l->mailbox_shards = shard_mailbox_count(cfg);
    l->per_ip = zhashx_new();
    /* DESIGN.md: a self-signed certificate on first start when none is
     * configured. */
    if ((l->tls = tls_server_from_config(cfg, l->hostname)) == NULL)
        return ERR_SYS;
    if ((rc = listener_net_start(l)) != 0)
        return rc;
    for (int i = 0; i < l->nroles; i++)
        role_opts(l, &l->roles[i], cfg);
    actor_set_data(a, l);
    return 0;
}

static void
listener_fini(actor_t *a)
{
    listener_t *l = actor_data(a);

    if (l == NULL)
        return;
    listener_net_stop(l);
    listener_sessions_close_all(l);
    zhashx_destroy(&l->per_ip);
    tls_ctx_destroy(&l->tls);
    log_info(NULL, "listener_stopped",
             "accepted=%llu refused=%llu starved_episodes=%llu",
             (unsigned long long)l->accepted, (unsigned long long)l->refused,
             (unsigned long long)l->starved_episodes);
}

int
main(int argc, char **argv)
{
    return actor_main(argc, argv, &(struct actor_desc){
        .name = "listener", .handlers = listener_handlers,
        .init = listener_init, .fini = listener_fini});
}
