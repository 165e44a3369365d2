/*
 * dns.h - where mail for a domain goes (RFC 5321 5.1): asynchronous MX and
 * address lookups with c-ares on a lib/loop.h loop.
 *
 * dns_mx() asks for the domain's MX records, sorts them by preference
 * (random among equals), and looks up every host's A and AAAA records at
 * once; a domain without MX records is its own mail host (the implicit
 * MX). The answer is a list of hosts in the order to try them, each with
 * its addresses, or a failure already put as an SMTP reply: a null MX (RFC
 * 7505) 556 5.1.10, a domain that does not exist 550 5.1.2, one with no
 * mail host address 550 5.4.4, and anything temporary (SERVFAIL, REFUSED,
 * timeout, no server) 451 4.4.3.
 *
 * The resolvers are the configured ones (relay.dns), else those of
 * /etc/resolv.conf. Queries go straight to them: no search list, no
 * /etc/hosts. Callbacks always run from the loop, never from inside the
 * call that started the query. Called only from the loop's thread.
 */
#ifndef SAMOTOP_DNS_H
#define SAMOTOP_DNS_H

#include <stdbool.h>
#include <sys/socket.h>

#include "lib/loop.h"

typedef struct dns dns_t;
typedef struct dns_query dns_query_t;

/* Hosts kept from an MX answer, and addresses kept per host. */
#define DNS_MAX_HOSTS 10
#define DNS_MAX_ADDRS 8

enum dns_status {
    DNS_OK,       /* hosts with addresses */
    DNS_NULL_MX,  /* the domain takes no mail (RFC 7505): 556 5.1.10 */
    DNS_NOTFOUND, /* NXDOMAIN: 550 5.1.2 */
    DNS_NOHOST,   /* no mail host with an address: 550 5.4.4 */
    DNS_TEMPFAIL, /* try later: 451 4.4.3 */
};

struct dns_addr {
    struct sockaddr_storage sa; /* port 0: the caller sets it */
    socklen_t len;
    char text[48]; /* "192.0.2.1", "2001:db8::1" */
};

struct dns_host {
    char name[256]; /* the MX host (or the domain, or the route's host) */
    int pref;       /* MX preference; 0 when implicit */
    int naddrs;
    struct dns_addr addrs[DNS_MAX_ADDRS]; /* IPv4 first, then IPv6 */
};

struct dns_result {
    enum dns_status status;
    int code;          /* the SMTP reply for a failure; 0 when DNS_OK */
    const char *ecode; /* static; "" when DNS_OK */
    char text[300];    /* says what failed, e.g. "domain not found" */
    bool implicit;     /* no MX records: the domain's own addresses */
    int nhosts;        /* hosts with at least one address */
    struct dns_host hosts[DNS_MAX_HOSTS];
};

/* The result is borrowed for the call. The query handle is gone by then. */
typedef void dns_cb(void *arg, const struct dns_result *res);

/*
 * A resolver on loop. servers is a comma list of "HOST:PORT" or
 * "[V6]:PORT" addresses (numeric), or NULL / "" for /etc/resolv.conf's;
 * timeout_ms is the first try's timeout (c-ares doubles it per round) and
 * tries the rounds over all servers. NULL with the reason in why when
 * c-ares cannot start or servers is malformed. Caller owns it.
 */
dns_t *dns_new(loop_t *loop, const char *servers, int timeout_ms, int tries,
               char *why, size_t whylen);

/* Drops every query without calling back, then frees; NULL is fine. */
void dns_destroy(dns_t **dns_p);

/*
 * Looks up where mail for domain goes (see above). cb is called once,
 * later, from the loop. The handle may be given to dns_cancel() until
 * then. Never fails: a bad name comes back as a failed result.
 */
dns_query_t *dns_mx(dns_t *dns, const char *domain, dns_cb *cb, void *arg);

/*
 * Looks up the addresses of one host (a route's next hop: no MX). An IP
 * address, bare or in brackets, is taken as it is. Any failure is
 * DNS_TEMPFAIL (451 4.4.3): a route that names no host is a mistake to
 * fix, not a reason to bounce mail.
 */
dns_query_t *dns_host(dns_t *dns, const char *host, dns_cb *cb, void *arg);

/* Forgets a query: its callback is never called. NULLs *q_p; NULL ok. */
void dns_cancel(dns_t *dns, dns_query_t **q_p);

/* Queries started and not yet called back or cancelled. */
int dns_pending(const dns_t *dns);

#endif
