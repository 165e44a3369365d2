/*
 * relay_self.c - which mail hosts are this mail system itself, so that
 * mail for a domain whose MX list names us is not sent back to us (RFC
 * 5321 5.1).
 *
 * "Us" is an MX host named like our hostname, or one with an address our
 * MTA door (listen.mta) takes connections on, when that door is on the
 * port we deliver to (relay.port): the door's own address, or, for a
 * wildcard door, any address of this host's interfaces or loopback. A
 * door on another host behind a load balancer cannot be seen from here;
 * its name is the hostname, which is why the name counts too.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "relay.h"

static void
add_addr(relay_t *r, const struct sockaddr *sa)
{
    char text[INET6_ADDRSTRLEN];
    const void *a;

    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET)
        a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6)
        a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    else
        return;
    if (inet_ntop(sa->sa_family, a, text, sizeof(text)) == NULL)
        return;
    r->self_addrs = xrealloc(r->self_addrs,
                             (size_t)(r->nself + 1) * sizeof(*r->self_addrs));
    snprintf(r->self_addrs[r->nself++], sizeof(r->self_addrs[0]), "%s", text);
}

void
relay_self_init(relay_t *r, const config_t *cfg)
{
    char host[256];
    int port = 0;

    r->nself = 0;
    r->self_any = false;
    if (config_split_addr(config_str(cfg, "listen.mta"), host, sizeof(host),
                          &port) != 0 ||
        port != r->port)
        return; /* our MTA is not on the port we deliver to */
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ||
        host[0] == '\0') {
        struct ifaddrs *ifs = NULL;

        r->self_any = true;
        if (getifaddrs(&ifs) == 0) {
            for (struct ifaddrs *i = ifs; i; i = i->ifa_next)
                add_addr(r, i->ifa_addr);
            freeifaddrs(ifs);
        }
    } else if (strlen(host) < sizeof(r->self_addrs[0])) {
        /* An address (a name here matches no MX address, only the
         * hostname rule is left then). */
        r->self_addrs = xcalloc(1, sizeof(*r->self_addrs));
        memcpy(r->self_addrs[0], host, strlen(host) + 1);
        r->nself = 1;
    }
}

void
relay_self_fini(relay_t *r)
{
    free(r->self_addrs);
    r->self_addrs = NULL;
    r->nself = 0;
}

static bool
is_loopback(const char *ip)
{
    return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0;
}

static bool
host_is_self(const relay_t *r, const struct dns_host *h)
{
    size_t n = strlen(h->name);

    /* A name compares without its root dot. */
    if (n > 0 && h->name[n - 1] == '.')
        n--;
    if (strlen(r->hostname) == n && strncasecmp(h->name, r->hostname, n) == 0)
        return true;
    for (int i = 0; i < h->naddrs; i++) {
        if (r->self_any && is_loopback(h->addrs[i].text))
            return true;
        for (int k = 0; k < r->nself; k++)
            if (strcmp(h->addrs[i].text, r->self_addrs[k]) == 0)
                return true;
    }
    return false;
}

bool
relay_self_trim(const relay_t *r, struct dns_result *res)
{
    int self_pref = -1, kept = 0;

    for (int i = 0; i < res->nhosts; i++)
        if (host_is_self(r, &res->hosts[i]) &&
            (self_pref < 0 || res->hosts[i].pref < self_pref))
            self_pref = res->hosts[i].pref;
    if (self_pref < 0)
        return false;
    /* RFC 5321 5.1: "it MUST discard that MX record and all those of
     * equal or higher preference value" (not more preferred than us). */
    for (int i = 0; i < res->nhosts; i++)
        if (res->hosts[i].pref < self_pref)
            res->hosts[kept++] = res->hosts[i];
    res->nhosts = kept;
    return true;
}
