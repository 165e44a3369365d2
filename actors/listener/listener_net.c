/*
 * listener_net.c - the listening sockets: one per role, SO_REUSEPORT so that
 * several listener processes can share a port (the kernel spreads new
 * connections over them), and the accept loop with the session limits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/net.h"
#include "listener.h"

/* How long accepting stays paused after running out of descriptors,
 * unless a session closes first. */
#define ACCEPT_RETRY_MS 100

static void
on_accept_retry(loop_t *loop, void *arg)
{
    listener_t *l = arg;

    (void)loop;
    l->accept_timer = NULL;
    listener_net_resume(l);
}

/*
 * accept() failed for want of descriptors. The connection stays in the
 * listen queue and the socket stays readable, so watching it would wake
 * the loop again at once, for ever: stop watching every listening socket
 * until a session closes (which frees a descriptor) or the timer fires
 * (another process may free one). Logged once an episode.
 */
static void
accept_pause(listener_t *l, const struct role *role, int err)
{
    if (!l->accept_paused) {
        for (int i = 0; i < l->nroles; i++)
            loop_fd_mod(l->loop, l->roles[i].fd, 0);
        l->accept_paused = true;
        l->accept_timer =
            loop_timer_add(l->loop, ACCEPT_RETRY_MS, on_accept_retry, l);
    }
    if (!l->starved) {
        l->starved = true;
        l->starved_since = loop_now_ms(l->loop);
        l->starved_episodes++;
        log_warn(NULL, "accept_paused",
                 "role=%s reason=%s sessions=%d retry_ms=%d episodes=%llu",
                 role->name, log_q(strerror(err)), l->sessions, ACCEPT_RETRY_MS,
                 (unsigned long long)l->starved_episodes);
    }
}

void
listener_net_resume(listener_t *l)
{
    if (!l->accept_paused)
        return;
    loop_timer_cancel(l->loop, &l->accept_timer);
    for (int i = 0; i < l->nroles; i++)
        loop_fd_mod(l->loop, l->roles[i].fd, LOOP_READ);
    l->accept_paused = false;
}

/* Refuses a connection before any session exists: RFC 5321 3.1 lets a
 * server answer the connection with a 421 and close. */
static void
refuse(int fd, const char *line)
{
    ssize_t n = write(fd, line, strlen(line));

    (void)n;
    close(fd);
}

static void
on_accept(loop_t *loop, int lfd, int events, void *arg)
{
    struct role *role = arg;
    listener_t *l = role->l;

    (void)loop;
    (void)events;
    /* A bounded batch per wake-up keeps one busy port from starving the
     * sessions; the socket stays readable while more are waiting. */
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char ip[INET6_ADDRSTRLEN + 1];
        intptr_t count;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                accept_pause(l, role, errno);
            else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_warn(NULL, "accept_failed", "role=%s reason=%s",
                         role->name, log_q(strerror(errno)));
            return;
        }
        if (l->starved) {
            l->starved = false;
            log_info(NULL, "accept_resumed",
                     "role=%s paused_ms=%lld sessions=%d", role->name,
                     (long long)(loop_now_ms(l->loop) - l->starved_since),
                     l->sessions);
        }
        net_addr_text(&ss, ip, sizeof(ip));
        count = (intptr_t)zhashx_lookup(l->per_ip, ip);
        if (l->sessions >= l->max_sessions) {
            l->refused++;
            log_warn(NULL, "session_refused", "role=%s ip=%s reason=full "
                     "sessions=%d", role->name, ip, l->sessions);
            refuse(fd, "421 4.3.2 Too busy, try again later\r\n");
            continue;
        }
        if (count >= l->max_per_ip) {
            l->refused++;
            log_warn(NULL, "session_refused", "role=%s ip=%s "
                     "reason=per_ip sessions=%ld", role->name, ip,
                     (long)count);
            refuse(fd, "421 4.7.0 Too many connections from your address, "
                       "try again later\r\n");
            continue;
        }
        l->accepted++;
        listener_session_start(l, role, fd, ip);
    }
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
    char **names, key[64], why[512];
    int n = config_list(config_str(cfg, "listener.roles"), &names), rc = 0;

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
        r->fd = net_listen(r->addr, why, sizeof(why));
        if (r->fd < 0) {
            log_err(NULL, "listen_failed", "role=%s addr=%s reason=%s",
                    r->name, r->addr, log_q(why));
            rc = ERR_SYS;
            break;
        }
        if (loop_fd_add(l->loop, r->fd, LOOP_READ, on_accept, r) != 0) {
            close(r->fd);
            rc = ERR_SYS;
            break;
        }
        l->nroles++;
        log_info(NULL, "listening", "role=%s addr=%s", r->name, r->addr);
    }
    config_list_free(&names, n);
    return rc;
}

void
listener_net_stop(listener_t *l)
{
    loop_timer_cancel(l->loop, &l->accept_timer);
    l->accept_paused = false;
    for (int i = 0; i < l->nroles; i++) {
        loop_fd_del(l->loop, l->roles[i].fd);
        close(l->roles[i].fd);
    }
    l->nroles = 0;
}
