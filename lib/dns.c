/*
 * dns.c - MX and address lookups with c-ares, driven by the loop.
 *
 * c-ares tells us which sockets it wants watched (the socket state
 * callback); we watch them on the loop and give it their events with
 * ares_process_fd(), and keep one loop timer at ares_timeout() so that its
 * retries and timeouts run. A dns_query is one caller's question: the MX
 * lookup, then an A and an AAAA lookup per host, all in flight at once.
 * When the last answer is in, the result is handed over from a zero-delay
 * timer, so the caller is never called back from inside c-ares or from
 * inside its own dns_mx() call.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>

#include "lib/dns.h"
#include "lib/xalloc.h"

/* How one A or AAAA lookup of a host ended. */
enum look { L_NONE, L_OK, L_EMPTY, L_TEMP };

struct dns_query {
    dns_t *dns;
    struct dns_query *prev, *next;
    dns_cb *cb;
    void *arg;
    char name[256];
    bool mx; /* dns_mx(): MX first */
    bool cancelled;
    int outstanding; /* c-ares lookups in flight */
    loop_timer_t *deliver;
    enum look look[DNS_MAX_HOSTS][2];
    struct dns_result res;
    int nhosts; /* hosts asked about (res.nhosts: kept) */
};

/* The argument of one c-ares lookup. */
struct sub {
    dns_query_t *q;
    int host;   /* index, or -1 for the MX lookup */
    int family; /* 0 A, 1 AAAA */
};

struct dns {
    loop_t *loop;
    ares_channel channel;
    loop_timer_t *timer;
    dns_query_t *head;
    int npending;
    int fds[16]; /* sockets watched for c-ares, -1 when free */
    uint64_t rng;
    bool destroying;
};

static void rearm(dns_t *dns);
static void query_start_addrs(dns_query_t *q);
static void sub_done(dns_query_t *q);

/* --- the result --------------------------------------------------------- */

static void fail_with(dns_query_t *q, enum dns_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fail_with(dns_query_t *q, enum dns_status st, const char *fmt, ...)
{
    va_list ap;

    q->res.status = st;
    switch (st) {
    case DNS_NULL_MX:
        q->res.code = 556;
        q->res.ecode = "5.1.10";
        break;
    case DNS_NOTFOUND:
        q->res.code = 550;
        q->res.ecode = "5.1.2";
        break;
    case DNS_NOHOST:
        q->res.code = 550;
        q->res.ecode = "5.4.4";
        break;
    default:
        q->res.code = 451;
        q->res.ecode = "4.4.3";
        break;
    }
    va_start(ap, fmt);
    vsnprintf(q->res.text, sizeof(q->res.text), fmt, ap);
    va_end(ap);
    q->res.nhosts = 0;
}

static void
query_unlink(dns_query_t *q)
{
    dns_t *dns = q->dns;

    if (q->prev)
        q->prev->next = q->next;
    else if (dns->head == q)
        dns->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

static void
query_free(dns_query_t *q)
{
    query_unlink(q);
    loop_timer_cancel(q->dns->loop, &q->deliver);
    free(q);
}

static void
on_deliver(loop_t *loop, void *arg)
{
    dns_query_t *q = arg;

    (void)loop;
    q->deliver = NULL;
    q->dns->npending--;
    /* Out of the list first: the callback may destroy the resolver. */
    query_unlink(q);
    q->cb(q->arg, &q->res);
    free(q);
}

static void
deliver(dns_query_t *q)
{
    q->deliver = loop_timer_add(q->dns->loop, 0, on_deliver, q);
}

/* Every address lookup is in: keep the hosts that have addresses, in
 * order, or say why none does. */
static void
finish(dns_query_t *q)
{
    int kept = 0;
    bool temp = false;

    for (int i = 0; i < q->nhosts; i++) {
        if (q->look[i][0] == L_TEMP || q->look[i][1] == L_TEMP)
            temp = true;
        if (q->res.hosts[i].naddrs == 0)
            continue;
        if (kept != i)
            q->res.hosts[kept] = q->res.hosts[i];
        kept++;
    }
    q->res.nhosts = kept;
    if (kept > 0) {
        q->res.status = DNS_OK;
        q->res.code = 0;
        q->res.ecode = "";
        q->res.text[0] = '\0';
    } else if (temp || !q->mx) {
        fail_with(q, DNS_TEMPFAIL,
                  "temporary DNS failure looking up "
                  "the address of %s%s",
                  q->mx && !q->res.implicit ? "the MX hosts of " : "", q->name);
    } else if (q->res.implicit) {
        fail_with(q, DNS_NOHOST, "no MX and no address for %s", q->name);
    } else {
        fail_with(q, DNS_NOHOST, "no address for any MX host of %s", q->name);
    }
    deliver(q);
}

/* One c-ares lookup ended; the query ends with its last. */
static void
sub_done(dns_query_t *q)
{
    if (--q->outstanding > 0)
        return;
    if (q->cancelled) {
        query_free(q);
        return;
    }
    if (q->res.status != DNS_OK)
        deliver(q);
    else
        finish(q);
}

/* --- answers ------------------------------------------------------------ */

static void
add_addr(struct dns_host *h, int family, const void *ip)
{
    struct dns_addr *a;

    if (h->naddrs == DNS_MAX_ADDRS)
        return;
    a = &h->addrs[h->naddrs++];
    memset(a, 0, sizeof(*a));
    if (family == 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a->sa;

        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, ip, sizeof(sin->sin_addr));
        a->len = sizeof(*sin);
        inet_ntop(AF_INET, ip, a->text, sizeof(a->text));
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->sa;

        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, ip, sizeof(sin6->sin6_addr));
        a->len = sizeof(*sin6);
        inet_ntop(AF_INET6, ip, a->text, sizeof(a->text));
    }
}

/* IPv4 addresses go before IPv6 ones, whichever answer came first. */
static void
order_families(struct dns_host *h)
{
    struct dns_addr tmp[DNS_MAX_ADDRS];
    int n = 0;

    for (int fam = AF_INET; n < h->naddrs; fam = AF_INET6) {
        for (int i = 0; i < h->naddrs; i++)
            if (h->addrs[i].sa.ss_family == fam)
                tmp[n++] = h->addrs[i];
        if (fam == AF_INET6)
            break;
    }
    memcpy(h->addrs, tmp, sizeof(tmp[0]) * (size_t)n);
    h->naddrs = n;
}

static enum look
look_of(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return L_OK;
    case ARES_ENODATA:
    case ARES_ENOTFOUND:
        return L_EMPTY;
    default:
        return L_TEMP;
    }
}

static void
on_addr(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct sub *s = arg;
    dns_query_t *q = s->q;
    struct dns_host *h = &q->res.hosts[s->host];

    (void)timeouts;
    if (!q->cancelled && status == ARES_SUCCESS) {
        int n = DNS_MAX_ADDRS;

        if (s->family == 0) {
            struct ares_addrttl a[DNS_MAX_ADDRS];

            status = ares_parse_a_reply(abuf, alen, NULL, a, &n);
            for (int i = 0; status == ARES_SUCCESS && i < n; i++)
                add_addr(h, 0, &a[i].ipaddr);
        } else {
            struct ares_addr6ttl a[DNS_MAX_ADDRS];

            status = ares_parse_aaaa_reply(abuf, alen, NULL, a, &n);
            for (int i = 0; status == ARES_SUCCESS && i < n; i++)
                add_addr(h, 1, &a[i].ip6addr);
        }
        order_families(h);
    }
    q->look[s->host][s->family] = look_of(status);
    free(s);
    sub_done(q);
}

static void
ask(dns_query_t *q, const char *name, int type, ares_callback fn, int host,
    int family)
{
    struct sub *s = xcalloc(1, sizeof(*s));

    s->q = q;
    s->host = host;
    s->family = family;
    q->outstanding++;
    ares_query(q->dns->channel, name, ns_c_in, type, fn, s);
}

static void
query_start_addrs(dns_query_t *q)
{
    /* A lookup may end inside ares_query(): holding one more keeps the
     * query from ending before every lookup is out. */
    q->outstanding++;
    /* All hosts at once: the answers for the first MX are wanted first,
     * but the rest cost nothing more to have ready. */
    for (int i = 0; i < q->nhosts; i++) {
        ask(q, q->res.hosts[i].name, ns_t_a, on_addr, i, 0);
        ask(q, q->res.hosts[i].name, ns_t_aaaa, on_addr, i, 1);
    }
    sub_done(q);
}

static uint64_t
rng_next(dns_t *dns)
{
    /* xorshift64*: only for shuffling MX hosts of equal preference. */
    dns->rng ^= dns->rng >> 12;
    dns->rng ^= dns->rng << 25;
    dns->rng ^= dns->rng >> 27;
    return dns->rng * 2685821657736338717ULL;
}

static int
by_pref(const void *a, const void *b)
{
    const struct dns_host *x = a, *y = b;

    return x->pref - y->pref;
}

/* RFC 5321 5.1: by preference, and in random order within one. */
static void
sort_hosts(dns_t *dns, struct dns_host *h, int n)
{
    qsort(h, (size_t)n, sizeof(*h), by_pref);
    for (int lo = 0; lo < n;) {
        int hi = lo + 1;

        while (hi < n && h[hi].pref == h[lo].pref)
            hi++;
        for (int i = hi - 1; i > lo; i--) {
            int j = lo + (int)(rng_next(dns) % (uint64_t)(i - lo + 1));
            struct dns_host t = h[i];

            h[i] = h[j];
            h[j] = t;
        }
        lo = hi;
    }
}

static bool
is_root(const char *host)
{
    return host[0] == '\0' || strcmp(host, ".") == 0;
}

static void
on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct sub *s = arg;
    dns_query_t *q = s->q;
    struct ares_mx_reply *mx = NULL;

    (void)timeouts;
    free(s);
    if (q->cancelled) {
        sub_done(q);
        return;
    }
    if (status == ARES_SUCCESS)
        status = ares_parse_mx_reply(abuf, alen, &mx);
    if (status == ARES_SUCCESS) {
        /* The whole set, for the null MX test (RFC 7505 3: a null MX is
         * alone; in a set with others it is only ignored). */
        struct dns_host all[64];
        int n = 0, nulls = 0, total = 0;

        for (struct ares_mx_reply *m = mx; m; m = m->next) {
            total++;
            if (is_root(m->host)) {
                nulls++;
                continue;
            }
            if (n == 64)
                continue;
            memset(&all[n], 0, sizeof(all[n]));
            snprintf(all[n].name, sizeof(all[n].name), "%s", m->host);
            all[n].pref = m->priority;
            n++;
        }
        ares_free_data(mx);
        if (nulls > 0 && total == 1) {
            fail_with(q, DNS_NULL_MX, "%s accepts no mail (null MX)", q->name);
        } else if (n == 0) {
            status = ARES_ENODATA;
        } else {
            sort_hosts(q->dns, all, n);
            if (n > DNS_MAX_HOSTS)
                n = DNS_MAX_HOSTS;
            memcpy(q->res.hosts, all, sizeof(all[0]) * (size_t)n);
            q->nhosts = n;
            query_start_addrs(q);
        }
    }
    if (status == ARES_ENODATA) {
        /* RFC 5321 5.1: no MX, so the domain is its own mail host. */
        q->res.implicit = true;
        memset(&q->res.hosts[0], 0, sizeof(q->res.hosts[0]));
        snprintf(q->res.hosts[0].name, sizeof(q->res.hosts[0].name), "%s",
                 q->name);
        q->nhosts = 1;
        query_start_addrs(q);
    } else if (status == ARES_ENOTFOUND) {
        fail_with(q, DNS_NOTFOUND, "domain %s not found", q->name);
    } else if (status != ARES_SUCCESS) {
        fail_with(q, DNS_TEMPFAIL,
                  "temporary DNS failure looking up the "
                  "MX of %s: %s",
                  q->name, ares_strerror(status));
    }
    sub_done(q);
}

/* --- the loop ----------------------------------------------------------- */

static void
on_timer(loop_t *loop, void *arg)
{
    dns_t *dns = arg;

    (void)loop;
    dns->timer = NULL;
    ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm(dns);
}

/* Keeps the timer at c-ares's next timeout, when it has queries out. */
static void
rearm(dns_t *dns)
{
    struct timeval tv, *t;
    int64_t ms;

    if (dns->destroying)
        return;
    loop_timer_cancel(dns->loop, &dns->timer);
    t = ares_timeout(dns->channel, NULL, &tv);
    if (t == NULL)
        return;
    ms = (int64_t)t->tv_sec * 1000 + (t->tv_usec + 999) / 1000;
    dns->timer = loop_timer_add(dns->loop, ms, on_timer, dns);
}

static void
on_fd(loop_t *loop, int fd, int events, void *arg)
{
    dns_t *dns = arg;

    (void)loop;
    ares_process_fd(dns->channel, events & LOOP_READ ? fd : ARES_SOCKET_BAD,
                    events & LOOP_WRITE ? fd : ARES_SOCKET_BAD);
    rearm(dns);
}

static void
on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    dns_t *dns = data;
    int events = (readable ? LOOP_READ : 0) | (writable ? LOOP_WRITE : 0);
    int slot = -1;

    for (int i = 0; i < (int)(sizeof(dns->fds) / sizeof(dns->fds[0])); i++)
        if (dns->fds[i] == fd)
            slot = i;
    if (events == 0) {
        if (slot >= 0) {
            loop_fd_del(dns->loop, fd);
            dns->fds[slot] = -1;
        }
        return;
    }
    if (slot >= 0) {
        loop_fd_mod(dns->loop, fd, events);
        return;
    }
    for (int i = 0; i < (int)(sizeof(dns->fds) / sizeof(dns->fds[0])); i++)
        if (dns->fds[i] < 0) {
            if (loop_fd_add(dns->loop, fd, events, on_fd, dns) == 0)
                dns->fds[i] = fd;
            return;
        }
    /* XXX: more sockets than slots cannot happen with a handful of
     * servers; such a socket is left to c-ares's timeouts. */
}

/* --- interface ---------------------------------------------------------- */

dns_t *
dns_new(loop_t *loop, const char *servers, int timeout_ms, int tries, char *why,
        size_t whylen)
{
    static bool lib_ready;
    struct ares_options o;
    dns_t *dns;
    int rc;

    if (!lib_ready) {
        if ((rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
            snprintf(why, whylen, "c-ares: %s", ares_strerror(rc));
            return NULL;
        }
        lib_ready = true;
    }
    dns = xcalloc(1, sizeof(*dns));
    dns->loop = loop;
    for (size_t i = 0; i < sizeof(dns->fds) / sizeof(dns->fds[0]); i++)
        dns->fds[i] = -1;
    dns->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^
               (uint64_t)getpid() << 17 ^ (uint64_t)(uintptr_t)dns;
    if (dns->rng == 0)
        dns->rng = 1;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = dns;
    o.timeout = timeout_ms > 0 ? timeout_ms : 5000;
    o.tries = tries > 0 ? tries : 2;
    /* No search list, no aliases: a mail domain is always absolute. */
    o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    rc = ares_init_options(&dns->channel, &o,
                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
                               ARES_OPT_TRIES | ARES_OPT_FLAGS);
    if (rc != ARES_SUCCESS) {
        snprintf(why, whylen, "c-ares: %s", ares_strerror(rc));
        free(dns);
        return NULL;
    }
    if (servers && *servers &&
        (rc = ares_set_servers_ports_csv(dns->channel, servers)) !=
            ARES_SUCCESS) {
        snprintf(why, whylen, "DNS servers \"%s\": %s", servers,
                 ares_strerror(rc));
        ares_destroy(dns->channel);
        free(dns);
        return NULL;
    }
    return dns;
}

void
dns_destroy(dns_t **dns_p)
{
    dns_t *dns = *dns_p;

    if (dns == NULL)
        return;
    for (dns_query_t *q = dns->head; q; q = q->next) {
        q->cancelled = true;
        loop_timer_cancel(dns->loop, &q->deliver);
    }
    /* c-ares calls every callback (ARES_EDESTRUCTION): each lookup's
     * record goes, and with the last one its query. */
    dns->destroying = true;
    ares_destroy(dns->channel);
    while (dns->head)
        query_free(dns->head);
    loop_timer_cancel(dns->loop, &dns->timer);
    for (size_t i = 0; i < sizeof(dns->fds) / sizeof(dns->fds[0]); i++)
        if (dns->fds[i] >= 0)
            loop_fd_del(dns->loop, dns->fds[i]);
    free(dns);
    *dns_p = NULL;
}

static dns_query_t *
query_new(dns_t *dns, const char *name, bool mx, dns_cb *cb, void *arg)
{
    dns_query_t *q = xcalloc(1, sizeof(*q));
    size_t n;

    q->dns = dns;
    q->cb = cb;
    q->arg = arg;
    q->mx = mx;
    snprintf(q->name, sizeof(q->name), "%s", name);
    /* "example.org." and "example.org" are one name. */
    n = strlen(q->name);
    if (n > 1 && q->name[n - 1] == '.')
        q->name[n - 1] = '\0';
    q->next = dns->head;
    if (dns->head)
        dns->head->prev = q;
    dns->head = q;
    dns->npending++;
    return q;
}

/* A name c-ares should not be asked about: empty, too long, or with
 * characters no DNS name has. */
static bool
name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 127 || s[i] == '[' ||
            s[i] == ']')
            return false;
    return true;
}

dns_query_t *
dns_mx(dns_t *dns, const char *domain, dns_cb *cb, void *arg)
{
    dns_query_t *q = query_new(dns, domain, true, cb, arg);

    if (!name_ok(q->name)) {
        fail_with(q, DNS_NOTFOUND, "bad domain name %s", q->name);
        deliver(q);
        return q;
    }
    q->outstanding++; /* see query_start_addrs() */
    ask(q, q->name, ns_t_mx, on_mx, -1, 0);
    sub_done(q);
    rearm(dns);
    return q;
}

dns_query_t *
dns_host(dns_t *dns, const char *host, dns_cb *cb, void *arg)
{
    dns_query_t *q = query_new(dns, host, false, cb, arg);
    struct dns_host *h = &q->res.hosts[0];
    char lit[256];
    unsigned char ip[16];
    size_t n = strlen(host);

    snprintf(h->name, sizeof(h->name), "%s", q->name);
    q->nhosts = 1;
    /* An address: "192.0.2.1", "2001:db8::1", or either in brackets. */
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
        snprintf(lit, sizeof(lit), "%.*s", (int)(n - 2), host + 1);
    else
        snprintf(lit, sizeof(lit), "%s", host);
    if (strncasecmp(lit, "IPv6:", 5) == 0)
        memmove(lit, lit + 5, strlen(lit + 5) + 1);
    if (inet_pton(AF_INET, lit, ip) == 1 || inet_pton(AF_INET6, lit, ip) == 1) {
        add_addr(h, strchr(lit, ':') ? 1 : 0, ip);
        finish(q);
        return q;
    }
    if (!name_ok(q->name)) {
        fail_with(q, DNS_TEMPFAIL, "bad host name %s", q->name);
        deliver(q);
        return q;
    }
    query_start_addrs(q);
    rearm(dns);
    return q;
}

void
dns_cancel(dns_t *dns, dns_query_t **q_p)
{
    dns_query_t *q = *q_p;

    if (q == NULL)
        return;
    *q_p = NULL;
    if (q->cancelled)
        return;
    q->cancelled = true;
    dns->npending--;
    loop_timer_cancel(dns->loop, &q->deliver);
    if (q->outstanding == 0)
        query_free(q);
}

int
dns_pending(const dns_t *dns)
{
    return dns->npending;
}
