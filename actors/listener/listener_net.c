/*
 * listener_net.c - the listening sockets: one per role, SO_REUSEPORT so that
 * several listener processes can share a port (the kernel spreads new
 * connections over them), and the session limits on what they accept (the
 * accept loop itself is lib/net.h's).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/net.h"
#include "listener.h"

/* A connection on a role's socket: a session, unless a limit is reached;
 * then it is refused before any session exists (RFC 5321 3.1 lets a
 * server answer the connection with a 421 and close). */
static void
on_accept(void *arg, int fd, const char *ip)
{
    struct role *role = arg;
    listener_t *l = role->l;
    intptr_t count = (intptr_t)zhashx_lookup(l->per_ip, ip);

    if (l->sessions >= l->max_sessions) {
        l->refused++;
        log_warn(NULL, "session_refused", "role=%s ip=%s reason=full "
                 "sessions=%d", role->name, ip, l->sessions);
        net_refuse(fd, "421 4.3.2 Too busy, try again later\r\n");
        return;
    }
    if (count >= l->max_per_ip) {
        l->refused++;
        log_warn(NULL, "session_refused", "role=%s ip=%s "
                 "reason=per_ip sessions=%ld", role->name, ip, (long)count);
        net_refuse(fd, "421 4.7.0 Too many connections from your address, "
                       "try again later\r\n");
        return;
    }
    l->accepted++;
    listener_session_start(l, role, fd, ip);
}

static int
role_kind(const char *name, enum role_kind *kind)
{
    if (strcmp(name, "mta") == 0)
        *kind = ROLE_MTA;
    else if (strcmp(name, "msa") == 0)
        *kind = ROLE_MSA;
    else if (strcmp(name, "smtps") == 0)
        *kind = ROLE_SMTPS;
    else
        return ERR_INVAL;
    return 0;
}

int
listener_net_start(listener_t *l)
{
    const config_t *cfg = actor_config(l->actor);
    char **names, key[64];
    int n = config_list(config_str(cfg, "listener.roles"), &names), rc = 0;

    /* A bounded batch per wake-up keeps one busy port from starving the
     * sessions. */
    l->acceptor = net_acceptor_new(l->loop, "role", 64, &l->sessions);

    for (int i = 0; i < n && rc == 0; i++) {
        struct role *r = &l->roles[l->nroles];
        enum role_kind kind;

        if (role_kind(names[i], &kind) != 0 || l->nroles == 3) {
            log_err(NULL, "config_error", "key=listener.roles reason=%s",
                    log_q("roles are mta, msa and smtps, each once"));
            rc = ERR_CONFIG;
            break;
        }
        r->l = l;
        r->kind = kind;
        r->name = kind == ROLE_MTA ? "mta" : kind == ROLE_MSA ? "msa"
                                                               : "smtps";
        snprintf(key, sizeof(key), "listen.%s", r->name);
        snprintf(r->addr, sizeof(r->addr), "%s", config_str(cfg, key));
        if (net_acceptor_listen(l->acceptor, r->name, r->addr, on_accept,
                                r) < 0) {
            rc = ERR_SYS;
            break;
        }
        l->nroles++;
    }
    config_list_free(&names, n);
    return rc;
}

void
listener_net_stop(listener_t *l)
{
    if (l->acceptor != NULL)
        l->starved_episodes = net_acceptor_episodes(l->acceptor);
    net_acceptor_destroy(&l->acceptor);
    l->nroles = 0;
}
