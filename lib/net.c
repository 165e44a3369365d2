/*
 * net.c - listening sockets and peer addresses (net.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/xalloc.h"

/* Listening sockets one acceptor holds, at most. */
#define ACCEPTOR_MAX 8

struct lsock {
    net_acceptor_t *a;
    const char *name; /* borrowed */
    int fd;
    net_accept_fn *fn;
    void *arg;
};

struct net_acceptor {
    loop_t *loop;
    const char *key;
    int batch;
    const int *sessions;
    struct lsock socks[ACCEPTOR_MAX];
    int nsocks;
    /* Out of descriptors (EMFILE, ENFILE): the listening sockets are not
     * watched until a session closes or the timer fires. An episode lasts
     * until an accept succeeds again, and is logged once. */
    bool paused, starved;
    loop_timer_t *timer;
    int64_t starved_since;
    uint64_t episodes;
};

int
net_listen(const char *addr, char *why, size_t whylen)
{
    char host[256], service[16];
    struct addrinfo hints = {0}, *res = NULL, *ai;
    int port, fd = -1, one = 1, rc;

    char tmp[300];
    size_t len = strlen(addr);
    bool any_port = len >= 2 && len < sizeof(tmp) &&
                    strcmp(addr + len - 2, ":0") == 0;

    /* Port 0 (the kernel picks one) is checked as port 1. */
    snprintf(tmp, sizeof(tmp), "%s", addr);
    if (any_port)
        tmp[len - 1] = '1';
    if (len >= sizeof(tmp) ||
        config_split_addr(tmp, host, sizeof(host), &port) != 0) {
        snprintf(why, whylen, "%s is not HOST:PORT", addr);
        return -1;
    }
    snprintf(service, sizeof(service), "%d", any_port ? 0 : port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, service, &hints, &res)) != 0) {
        snprintf(why, whylen, "%s: %s", addr, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
                                       SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, NET_BACKLOG) == 0)
            break;
        snprintf(why, whylen, "cannot listen on %s: %s", addr,
                 strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

void
net_addr_text(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out,
                  (socklen_t)outlen);
    } else if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;

        /* An IPv4 client on a dual-stack socket is counted as IPv4. */
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)outlen);
        else
            inet_ntop(AF_INET6, a, out, (socklen_t)outlen);
    } else {
        snprintf(out, outlen, "unknown");
    }
}

void
net_refuse(int fd, const char *line)
{
    ssize_t n = write(fd, line, strlen(line));

    (void)n;
    close(fd);
}

net_acceptor_t *
net_acceptor_new(loop_t *loop, const char *key, int batch, const int *sessions)
{
    net_acceptor_t *a = xcalloc(1, sizeof(*a));

    a->loop = loop;
    a->key = key;
    a->batch = batch;
    a->sessions = sessions;
    return a;
}

static void
on_retry(loop_t *loop, void *arg)
{
    net_acceptor_t *a = arg;

    (void)loop;
    a->timer = NULL;
    net_acceptor_resume(a);
}

/*
 * accept() failed for want of descriptors. The connection stays in the
 * listen queue and the socket stays readable, so watching it would wake
 * the loop again at once, for ever: stop watching every listening socket
 * until a session closes (which frees a descriptor) or the timer fires
 * (another process may free one). Logged once an episode.
 */
static void
pause_accepting(net_acceptor_t *a, const struct lsock *ls, int err)
{
    if (!a->paused) {
        for (int i = 0; i < a->nsocks; i++)
            loop_fd_mod(a->loop, a->socks[i].fd, 0);
        a->paused = true;
        a->timer = loop_timer_add(a->loop, NET_ACCEPT_RETRY_MS, on_retry, a);
    }
    if (!a->starved) {
        a->starved = true;
        a->starved_since = loop_now_ms(a->loop);
        a->episodes++;
        log_warn(NULL, "accept_paused",
                 "%s=%s reason=%s sessions=%d retry_ms=%d episodes=%llu",
                 a->key, ls->name, log_q(strerror(err)), *a->sessions,
                 NET_ACCEPT_RETRY_MS, (unsigned long long)a->episodes);
    }
}

void
net_acceptor_resume(net_acceptor_t *a)
{
    if (!a->paused)
        return;
    loop_timer_cancel(a->loop, &a->timer);
    for (int i = 0; i < a->nsocks; i++)
        loop_fd_mod(a->loop, a->socks[i].fd, LOOP_READ);
    a->paused = false;
}

static void
on_accept(loop_t *loop, int lfd, int events, void *arg)
{
    struct lsock *ls = arg;
    net_acceptor_t *a = ls->a;

    (void)loop;
    (void)events;
    /* A bounded batch per wake-up keeps one busy port from starving the
     * sessions; the socket stays readable while more are waiting. */
    for (int i = 0; i < a->batch; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char ip[64];
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                pause_accepting(a, ls, errno);
            else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_warn(NULL, "accept_failed", "%s=%s reason=%s", a->key,
                         ls->name, log_q(strerror(errno)));
            return;
        }
        if (a->starved) {
            a->starved = false;
            log_info(NULL, "accept_resumed", "%s=%s paused_ms=%lld sessions=%d",
                     a->key, ls->name,
                     (long long)(loop_now_ms(a->loop) - a->starved_since),
                     *a->sessions);
        }
        net_addr_text(&ss, ip, sizeof(ip));
        ls->fn(ls->arg, fd, ip);
    }
}

int
net_acceptor_listen(net_acceptor_t *a, const char *name, const char *addr,
                    net_accept_fn *fn, void *arg)
{
    struct lsock *ls;
    char why[512];
    int fd;

    if (a->nsocks == ACCEPTOR_MAX) {
        log_err(NULL, "listen_failed", "%s=%s addr=%s reason=%s", a->key, name,
                addr, log_q("too many listening sockets"));
        return ERR_SYS;
    }
    fd = net_listen(addr, why, sizeof(why));
    if (fd < 0) {
        log_err(NULL, "listen_failed", "%s=%s addr=%s reason=%s", a->key, name,
                addr, log_q(why));
        return ERR_SYS;
    }
    ls = &a->socks[a->nsocks];
    *ls = (struct lsock){.a = a, .name = name, .fd = fd, .fn = fn, .arg = arg};
    if (loop_fd_add(a->loop, fd, a->paused ? 0 : LOOP_READ, on_accept, ls) !=
        0) {
        close(fd);
        return ERR_SYS;
    }
    a->nsocks++;
    log_info(NULL, "listening", "%s=%s addr=%s", a->key, name, addr);
    return fd;
}

uint64_t
net_acceptor_episodes(const net_acceptor_t *a)
{
    return a->episodes;
}

void
net_acceptor_destroy(net_acceptor_t **a_p)
{
    net_acceptor_t *a = *a_p;

    if (a == NULL)
        return;
    loop_timer_cancel(a->loop, &a->timer);
    for (int i = 0; i < a->nsocks; i++) {
        loop_fd_del(a->loop, a->socks[i].fd);
        close(a->socks[i].fd);
    }
    free(a);
    *a_p = NULL;
}

void
net_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    log_info(NULL, "nofile", "limit=%llu", (unsigned long long)rl.rlim_cur);
}
