/*
 * net.c - listening sockets and peer addresses (net.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/net.h"

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
