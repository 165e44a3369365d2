/*
 * mailbox_imap_proxy.c - an IMAP login on a copy that does not own the
 * account reaches the copy that does (issue 5, Scale).
 *
 * Copies of the mailbox share listen.imap and listen.imaps (SO_REUSEPORT,
 * or one Service in front of many hosts), so a client lands on any of
 * them, while each account belongs to one shard (lib/shard.h). When auth
 * has checked a login for an account another shard owns, this copy (the
 * front) asks the owner over the bus (mailbox.ticket, to service
 * "mailbox.K") for a one-time ticket and the address of its internal door
 * (mailbox.imap_internal), connects there without blocking the loop, logs
 * in with the ticket, and only then answers the client's login; from then
 * on it copies bytes both ways. The client's TLS ends at the front; the
 * internal hop is plaintext (docs/operations.md says so). Each direction
 * holds at most PROXY_BUF bytes: a side that does not read stops the
 * other from being read. Either side closing closes the other.
 *
 * The owner keeps its tickets in memory for mailbox.imap_ticket_ms; each
 * is good once, for one account, and is compared in constant time. The
 * internal door takes nothing but tickets: no password is ever checked
 * there, so reaching it gives nothing without a ticket from the bus.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/shard.h"
#include "lib/xalloc.h"

#include "mailbox_imap_int.h"

/* What one direction of a relayed session holds at most. */
#define PROXY_BUF 65536
/* The owner's greeting and its answer to the login, at most. */
#define PROXY_LINE_MAX 8192
/* Tickets one copy holds at once; beyond, mailbox.ticket gets 451. */
#define TICKETS_MAX 4096
/* A ticket: a public handle (the table's key), then the secret. */
#define TICKET_ID_HEX 16
#define TICKET_SECRET_HEX 32
/* The tag of the front's LOGIN on the internal door. */
#define PROXY_TAG "S1"

enum pstate {
    P_TICKET,   /* mailbox.ticket sent */
    P_CONNECT,  /* connecting to the owner's internal door */
    P_GREETING, /* waiting for its "* OK" */
    P_LOGIN,    /* LOGIN with the ticket sent, waiting for its OK */
    P_SPLICE    /* logged in: bytes both ways */
};

struct iproxy {
    struct isess *s;
    enum pstate st;
    int fd;       /* to the owner, or -1 */
    int watching; /* LOOP_* watched on fd */
    int shard;
    char addr[300];
    char ticket[TICKET_ID_HEX + TICKET_SECRET_HEX + 1];
    buf_t line;     /* the owner's words during the login */
    buf_t c2o, o2c; /* client to owner, owner to client */
    bool client_eof;
    loop_timer_t *timer; /* the login's deadline, then the idle check */
    int64_t last_active;
    uint64_t up, down; /* bytes relayed */
};

struct ticket {
    char secret[TICKET_SECRET_HEX + 1];
    char account[256];
    char trace[ENVELOPE_TRACE_LEN];
    char from[64], client_ip[64];
    int64_t expires; /* loop time, ms */
};

struct itickets {
    zhashx_t *by_id; /* handle -> struct ticket (owned) */
    int64_t ttl_ms;
    uint64_t given, used, refused;
};

static void on_owner_io(loop_t *loop, int fd, int events, void *arg);
static void relay(struct iproxy *p);

/* --- the internal door and the tickets (the owner's side) ---------------- */

bool
imap_proxy_door_addr(mbimap_t *im, const config_t *cfg, char *addr,
                     size_t addrlen)
{
    const char *a = config_str(cfg, "mailbox.imap_internal");

    if (im->mb->nshards <= 1 && *a == '\0')
        return false;
    snprintf(addr, addrlen, "%s", *a ? a : "127.0.0.1:0");
    return true;
}

static void
ticket_free(void **item_p)
{
    if (*item_p) {
        OPENSSL_cleanse(*item_p, sizeof(struct ticket));
        free(*item_p);
        *item_p = NULL;
    }
}

int
imap_proxy_door_up(mbimap_t *im, struct imap_door *d, const config_t *cfg)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[256], ip[64];
    const char *adv = config_str(cfg, "mailbox.imap_advertise");
    int bound;

    if (getsockname(d->fd, (struct sockaddr *)&ss, &sl) != 0)
        return ERR_SYS;
    net_addr_text(&ss, ip, sizeof(ip));
    bound = ss.ss_family == AF_INET6
                ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (*adv != '\0') {
        struct addrinfo hints = {0}, *res = NULL;

        /* Callers connect without a name lookup, which would block. */
        hints.ai_flags = AI_NUMERICHOST;
        if (getaddrinfo(adv, NULL, &hints, &res) != 0) {
            log_err(NULL, "imap_internal_unreachable",
                    "advertise=%s reason=\"mailbox.imap_advertise must be a "
                    "numeric address\"",
                    log_q(adv));
            return ERR_CONFIG;
        }
        freeaddrinfo(res);
        snprintf(host, sizeof(host), "%s", adv);
    } else if (strcmp(ip, "0.0.0.0") != 0 && strcmp(ip, "::") != 0) {
        snprintf(host, sizeof(host), "%s", ip);
    } else {
        log_err(NULL, "imap_internal_unreachable",
                "addr=%s reason=\"a wildcard: set mailbox.imap_advertise to "
                "the address other copies reach this one at\"",
                d->addr);
        return ERR_CONFIG;
    }
    snprintf(im->internal_addr, sizeof(im->internal_addr),
             strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, bound);
    /* The log names the door by what it is bound to, port included. */
    snprintf(d->addr, sizeof(d->addr), strchr(ip, ':') ? "[%s]:%d" : "%s:%d",
             ip, bound);
    im->tickets = xcalloc(1, sizeof(*im->tickets));
    im->tickets->by_id = zhashx_new();
    zhashx_set_destructor(im->tickets->by_id, ticket_free);
    im->tickets->ttl_ms = config_int(cfg, "mailbox.imap_ticket_ms");
    im->m_relays = metrics_counter(
        actor_metrics(im->actor), "samotop_imap_relays_total",
        "IMAP logins for an account another shard owns, relayed to it, by "
        "result (ok, failed: the client got NO [UNAVAILABLE])",
        "result");
    im->m_tickets = metrics_counter(
        actor_metrics(im->actor), "samotop_imap_tickets_total",
        "One-time tickets for the internal IMAP door, by result (given, "
        "used, refused: a login on the door that failed)",
        "result");
    log_info(NULL, "imap_internal", "addr=%s advertised=%s ttl_ms=%lld",
             d->addr, im->internal_addr, (long long)im->tickets->ttl_ms);
    return 0;
}

void
imap_proxy_stop(mbimap_t *im)
{
    if (im->tickets == NULL)
        return;
    log_info(NULL, "imap_tickets",
             "given=%llu used=%llu refused=%llu "
             "relayed=%llu relay_failures=%llu",
             (unsigned long long)im->tickets->given,
             (unsigned long long)im->tickets->used,
             (unsigned long long)im->tickets->refused,
             (unsigned long long)im->relayed,
             (unsigned long long)im->relay_failures);
    zhashx_destroy(&im->tickets->by_id);
    free(im->tickets);
    im->tickets = NULL;
}

/* Drops the tickets that expired; they are few, as each lives seconds. */
static void
tickets_expire(struct itickets *t, int64_t now)
{
    zlistx_t *keys = zhashx_keys(t->by_id);

    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        const struct ticket *tk = zhashx_lookup(t->by_id, k);

        if (tk && tk->expires <= now)
            zhashx_delete(t->by_id, k);
    }
    zlistx_destroy(&keys);
}

static void
hex(char *out, const unsigned char *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void
mailbox_on_ticket(actor_t *a, bus_request_t **req_p)
{
    struct mailbox *mb = actor_data(a);
    mbimap_t *im = mb->imap;
    const envelope_t *req = bus_request_envelope(*req_p);
    const char *account = envelope_get_str(req, ENV_KEY_ACCOUNT);
    const char *ip = envelope_get_str(req, ENV_KEY_CLIENT_IP);
    unsigned char raw[(TICKET_ID_HEX + TICKET_SECRET_HEX) / 2];
    char ticket[TICKET_ID_HEX + TICKET_SECRET_HEX + 1], id[TICKET_ID_HEX + 1];
    struct ticket *tk;
    envelope_t *reply;
    value_t *body;

    if (account == NULL || *account == '\0' || strlen(account) > 255) {
        actor_fail(a, req_p, 501, "5.5.4", "account missing or too long");
        return;
    }
    if (im == NULL || im->tickets == NULL) {
        actor_fail(a, req_p, 451, "4.3.0", "no internal IMAP door here");
        return;
    }
    if (shard_of(account, strlen(account), mb->nshards) != mb->shard) {
        log_warn(envelope_trace(req), "ticket_not_owner",
                 "user=%s shard=%d from=%s", log_q(account), mb->shard,
                 log_q(envelope_from(req)));
        actor_fail(a, req_p, 421, "4.3.0", "not the owner of this account");
        return;
    }
    tickets_expire(im->tickets, loop_now_ms(im->loop));
    if (zhashx_size(im->tickets->by_id) >= TICKETS_MAX ||
        RAND_bytes(raw, sizeof(raw)) != 1) {
        actor_fail(a, req_p, 451, "4.3.0", "too many tickets out, try later");
        return;
    }
    hex(ticket, raw, sizeof(raw));
    OPENSSL_cleanse(raw, sizeof(raw));
    memcpy(id, ticket, TICKET_ID_HEX);
    id[TICKET_ID_HEX] = '\0';
    tk = xcalloc(1, sizeof(*tk));
    memcpy(tk->secret, ticket + TICKET_ID_HEX, TICKET_SECRET_HEX);
    snprintf(tk->account, sizeof(tk->account), "%s", account);
    for (char *c = tk->account; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    snprintf(tk->trace, sizeof(tk->trace), "%s", envelope_trace(req));
    snprintf(tk->from, sizeof(tk->from), "%s", envelope_from(req));
    snprintf(tk->client_ip, sizeof(tk->client_ip), "%s", ip ? ip : "-");
    tk->expires = loop_now_ms(im->loop) + im->tickets->ttl_ms;
    zhashx_update(im->tickets->by_id, id, tk);
    im->tickets->given++;
    metrics_inc(im->m_tickets, METRICS_L("given"));
    log_info(tk->trace, "imap_ticket",
             "user=%s from=%s client_ip=%s ttl_ms=%lld", log_q(tk->account),
             log_q(tk->from), log_q(tk->client_ip),
             (long long)im->tickets->ttl_ms);
    reply = envelope_new_reply(req, 250, "2.0.0", "ticket");
    body = envelope_body(reply);
    value_set_str(body, ENV_KEY_TICKET, ticket);
    value_set_str(body, ENV_KEY_ADDR, im->internal_addr);
    value_set_int(body, ENV_KEY_TTL_MS, im->tickets->ttl_ms);
    OPENSSL_cleanse(ticket, sizeof(ticket));
    actor_reply(a, req_p, &reply);
}

void
imap_proxy_ticket_login(struct isess *s, const struct imap_event *ev)
{
    mbimap_t *im = s->im;
    const char *pass = ev->login.pass, *why = NULL;
    char id[TICKET_ID_HEX + 1];
    struct ticket copy, *tk = NULL;

    if (im->tickets == NULL)
        why = "no_tickets";
    else if (strlen(pass) != TICKET_ID_HEX + TICKET_SECRET_HEX)
        why = "not_a_ticket";
    if (why == NULL) {
        memcpy(id, pass, TICKET_ID_HEX);
        id[TICKET_ID_HEX] = '\0';
        /* Single use: whatever the outcome, the handle is spent, so that
         * nobody gets a second guess at its secret. */
        if ((tk = zhashx_lookup(im->tickets->by_id, id)) != NULL) {
            copy = *tk;
            zhashx_delete(im->tickets->by_id, id);
            tk = &copy;
        }
        if (tk == NULL)
            why = "unknown_ticket";
        else if (CRYPTO_memcmp(tk->secret, pass + TICKET_ID_HEX,
                               TICKET_SECRET_HEX) != 0)
            why = "bad_ticket";
        else if (tk->expires <= loop_now_ms(im->loop))
            why = "expired";
        else if (strcasecmp(tk->account, ev->login.user) != 0)
            why = "other_account";
    }
    if (why != NULL) {
        if (im->tickets) {
            im->tickets->refused++;
            metrics_inc(im->m_tickets, METRICS_L("refused"));
        }
        im->login_failures++;
        log_warn(s->trace, "imap_ticket_refused", "ip=%s user=%s reason=%s",
                 s->ip, log_q(ev->login.user), why);
        imap_sess_complete(s, IMAP_NO, "AUTHENTICATIONFAILED",
                           "Authentication failed");
        if (tk)
            OPENSSL_cleanse(tk, sizeof(*tk));
        return;
    }
    /* The relayed session is one session: the owner logs under the
     * front's trace. */
    _Static_assert(sizeof(s->trace) == sizeof(tk->trace), "trace sizes");
    memcpy(s->trace, tk->trace, sizeof(s->trace));
    im->tickets->used++;
    metrics_inc(im->m_tickets, METRICS_L("used"));
    free(s->user);
    s->user = xstrdup(tk->account);
    log_info(s->trace, "imap_ticket_login", "user=%s from=%s client_ip=%s",
             log_q(s->user), log_q(tk->from), log_q(tk->client_ip));
    OPENSSL_cleanse(tk, sizeof(*tk));
    imap_sess_login_ok(s);
}

/* --- the front's side: the login --------------------------------------- */

bool
imap_proxy_wanted(const struct isess *s)
{
    const struct mailbox *mb = s->im->mb;

    return mb->nshards > 1 &&
           shard_of(s->user, strlen(s->user), mb->nshards) != mb->shard;
}

static void
proxy_free(struct iproxy *p)
{
    mbimap_t *im = p->s->im;

    loop_timer_cancel(im->loop, &p->timer);
    if (p->fd >= 0) {
        loop_fd_del(im->loop, p->fd);
        close(p->fd);
    }
    OPENSSL_cleanse(p->ticket, sizeof(p->ticket));
    if (p->st != P_SPLICE && p->c2o.data)
        OPENSSL_cleanse(p->c2o.data, p->c2o.cap);
    buf_free(&p->line);
    buf_free(&p->c2o);
    buf_free(&p->o2c);
    p->s->proxy = NULL;
    free(p);
}

/* The relay could not be set up: the client may try again (RFC 5530 3:
 * UNAVAILABLE, a temporary failure); its session stays unauthenticated. */
static void
login_failed(struct iproxy *p, const char *why)
{
    struct isess *s = p->s;
    bool counted = p->st != P_TICKET;

    s->im->relay_failures++;
    if (s->im->m_relays)
        metrics_inc(s->im->m_relays, METRICS_L("failed"));
    log_warn(s->trace, "imap_relay_failed",
             "user=%s shard=%d owner=%s reason=%s", log_q(s->user), p->shard,
             p->addr[0] ? p->addr : "-", log_q(why));
    proxy_free(p);
    free(s->user);
    s->user = NULL;
    imap_sess_complete(s, IMAP_NO, "UNAVAILABLE",
                       "Mailbox temporarily unavailable, try again later");
    /* The call that stood for the connection and login is over. */
    if (counted && !imap_sess_call_end(s))
        return;
    imap_sess_pump(s);
}

static void
on_login_timeout(loop_t *loop, void *arg)
{
    struct iproxy *p = arg;

    (void)loop;
    p->timer = NULL;
    login_failed(p, "timeout");
}

static void
owner_watch(struct iproxy *p, int events)
{
    if (events == p->watching)
        return;
    p->watching = events;
    loop_fd_mod(p->s->im->loop, p->fd, events);
}

/* Starts a non-blocking connection to p->addr; 0 or an error. */
static int
owner_connect(struct iproxy *p, char *why, size_t whylen)
{
    struct addrinfo hints = {0}, *res = NULL;
    char host[256], service[16];
    int port, rc, fd;

    if (config_split_addr(p->addr, host, sizeof(host), &port) != 0) {
        snprintf(why, whylen, "bad address");
        return ERR_INVAL;
    }
    snprintf(service, sizeof(service), "%d", port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* Numeric only: a name lookup would block the loop. */
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, service, &hints, &res)) != 0) {
        snprintf(why, whylen, "%s", gai_strerror(rc));
        return ERR_INVAL;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || (connect(fd, res->ai_addr, res->ai_addrlen) != 0 &&
                   errno != EINPROGRESS)) {
        snprintf(why, whylen, "%s", strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return ERR_SYS;
    }
    freeaddrinfo(res);
    if (loop_fd_add(p->s->im->loop, fd, LOOP_WRITE, on_owner_io, p) != 0) {
        close(fd);
        snprintf(why, whylen, "loop");
        return ERR_SYS;
    }
    p->fd = fd;
    p->watching = LOOP_WRITE;
    return 0;
}

static void
on_ticket_reply(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct isess *s = arg;
    struct iproxy *p;
    const char *ticket, *addr;
    char why[256];

    if (!imap_sess_call_end(s))
        return; /* the session ended meanwhile; its proxy went with it */
    if ((p = s->proxy) == NULL)
        return; /* cannot be: only the session's end frees it */
    if (err != 0 || reply == NULL) {
        snprintf(why, sizeof(why), "%s: %s", err_name(err), text);
        login_failed(p, why);
        return;
    }
    ticket = envelope_get_str(reply, ENV_KEY_TICKET);
    addr = envelope_get_str(reply, ENV_KEY_ADDR);
    if (envelope_code(reply) != 250 || ticket == NULL || addr == NULL ||
        strlen(ticket) != TICKET_ID_HEX + TICKET_SECRET_HEX) {
        const char *t = envelope_get_str(reply, ENV_KEY_TEXT);

        snprintf(why, sizeof(why), "ticket refused: %d %s",
                 envelope_code(reply), t ? t : "");
        login_failed(p, why);
        return;
    }
    snprintf(p->ticket, sizeof(p->ticket), "%s", ticket);
    snprintf(p->addr, sizeof(p->addr), "%s", addr);
    /* From here until the login is answered, the connection counts as a
     * call: the session reads no command meanwhile. */
    imap_sess_call_begin(s);
    p->st = P_CONNECT;
    /* Connection and login have the bus deadline. */
    p->timer =
        loop_timer_add(s->im->loop, s->im->bus_timeout_ms, on_login_timeout, p);
    if (owner_connect(p, why, sizeof(why)) != 0) {
        login_failed(p, why);
        return;
    }
}

void
imap_proxy_begin(struct isess *s)
{
    mbimap_t *im = s->im;
    struct iproxy *p = xcalloc(1, sizeof(*p));
    envelope_t *env;
    char service[64];

    p->s = s;
    p->fd = -1;
    p->st = P_TICKET;
    p->shard = shard_of(s->user, strlen(s->user), im->mb->nshards);
    s->proxy = p;
    shard_service(service, sizeof(service), "mailbox", p->shard,
                  im->mb->nshards);
    env = envelope_new("mailbox.ticket", s->trace, im->bus_timeout_ms);
    value_set_str(envelope_body(env), ENV_KEY_ACCOUNT, s->user);
    value_set_str(envelope_body(env), ENV_KEY_CLIENT_IP, s->ip);
    imap_sess_call_begin(s);
    if (bus_client_send_to_take(im->bus, service, &env, on_ticket_reply, s) !=
        0) {
        envelope_destroy(&env);
        s->calls--;
        /* login_failed() pumps; the caller pumps too, harmlessly. */
        login_failed(p, "bus send failed");
    }
}

/* The owner's line in p->line up to its CRLF (len bytes with it). */
static const char *
owner_line(struct iproxy *p, size_t *len)
{
    char *nl = memchr(p->line.data, '\n', p->line.len);

    if (nl == NULL)
        return NULL;
    *len = (size_t)(nl - p->line.data) + 1;
    return p->line.data;
}

/* Sends the login: the account as a LITERAL+ (RFC 7888), which carries
 * any octets, and the ticket as an atom (hex digits). */
static void
send_login(struct iproxy *p)
{
    buf_printf(&p->c2o, PROXY_TAG " LOGIN {%zu+}\r\n%s %s\r\n",
               strlen(p->s->user), p->s->user, p->ticket);
    OPENSSL_cleanse(p->ticket, sizeof(p->ticket));
    p->st = P_LOGIN;
}

/* The client's port, which tells its sessions apart in the log. */
static int
peer_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    return ss.ss_family == AF_INET6
               ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
               : ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* The owner said OK: the client's login is answered, and what it sent
 * after it (pipelined) goes to the owner first. */
static void
login_done(struct iproxy *p)
{
    struct isess *s = p->s;
    mbimap_t *im = s->im;
    const char *out, *in;
    size_t n;

    /* The login's OK line may have brought more: owner to client. */
    buf_add(&p->o2c, p->line.data, p->line.len);
    buf_free(&p->line);
    /* The login line with the ticket went out through c2o. */
    if (p->c2o.data)
        OPENSSL_cleanse(p->c2o.data, p->c2o.cap);
    buf_reset(&p->c2o);
    imap_server_take_input(s->srv, &p->c2o);
    in = conn_in(s->conn, &n);
    buf_add(&p->c2o, in, n);
    conn_in_drop(s->conn);
    p->client_eof = conn_eof(s->conn);
    imap_sess_complete(s, IMAP_OK, NULL, "Logged in");
    /* The tagged OK goes before anything of the owner's. */
    out = imap_server_output(s->srv, &n);
    if (n > 0) {
        buf_t first = BUF_INIT;

        buf_add(&first, out, n);
        buf_add(&first, p->o2c.data, p->o2c.len);
        buf_free(&p->o2c);
        p->o2c = first;
        imap_server_output_done(s->srv, n);
    }
    p->st = P_SPLICE;
    loop_timer_cancel(im->loop, &p->timer);
    /* The owner's session runs the autologout (RFC 3501 5.4); the front
     * only makes sure that a silent owner does not hold the client. */
    loop_timer_cancel(im->loop, &s->idle_timer);
    im->relayed++;
    im->logins++;
    if (im->m_relays)
        metrics_inc(im->m_relays, METRICS_L("ok"));
    log_info(s->trace, "imap_relay",
             "user=%s door=%s ip=%s port=%d shard=%d owner=%s", log_q(s->user),
             s->door->name, s->ip, peer_port(conn_fd(s->conn)), p->shard,
             p->addr);
}

static void on_relay_idle(loop_t *loop, void *arg);

/* The owner's greeting and its answer to the login. */
static void
login_read(struct iproxy *p)
{
    struct isess *s = p->s;
    char tmp[4096];

    for (;;) {
        const char *l;
        size_t len;
        ssize_t n = read(p->fd, tmp, sizeof(tmp));

        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            login_failed(p, n == 0 ? "owner closed" : strerror(errno));
            return;
        }
        if (n < 0)
            break;
        buf_add(&p->line, tmp, (size_t)n);
        while ((l = owner_line(p, &len)) != NULL) {
            if (p->st == P_GREETING) {
                if (len < 4 || strncmp(l, "* OK", 4) != 0) {
                    login_failed(p, "owner refused the connection");
                    return;
                }
                buf_consume(&p->line, len);
                send_login(p);
                continue;
            }
            if (strncmp(l, PROXY_TAG " ", sizeof(PROXY_TAG)) == 0) {
                bool ok = strncmp(l + sizeof(PROXY_TAG), "OK", 2) == 0;

                buf_consume(&p->line, len);
                if (!ok) {
                    login_failed(p, "owner refused the ticket");
                    return;
                }
                login_done(p);
                if (!imap_sess_call_end(s))
                    return; /* cannot be: the session was live */
                p->last_active = loop_now_ms(s->im->loop);
                p->timer = loop_timer_add(s->im->loop, s->im->idle_ms,
                                          on_relay_idle, p);
                relay(p);
                return;
            }
            buf_consume(&p->line, len); /* untagged: not for the client */
        }
        if (p->line.len > PROXY_LINE_MAX) {
            login_failed(p, "owner's line too long");
            return;
        }
    }
    if (p->c2o.len > 0) {
        ssize_t n = send(p->fd, p->c2o.data, p->c2o.len, MSG_NOSIGNAL);

        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            login_failed(p, strerror(errno));
            return;
        }
        if (n > 0)
            buf_consume(&p->c2o, (size_t)n);
    }
    owner_watch(p, LOOP_READ | (p->c2o.len > 0 ? LOOP_WRITE : 0));
}

/* --- the front's side: relaying ----------------------------------------- */

static void
relay_close(struct iproxy *p, const char *why)
{
    struct isess *s = p->s;

    log_info(s->trace, "imap_relay_end", "user=%s up=%llu down=%llu why=%s",
             log_q(s->user), (unsigned long long)p->up,
             (unsigned long long)p->down, why);
    imap_sess_close(s, why);
}

/* No byte either way for the autologout time and more: the owner would
 * have ended the session, so it is gone or hung. */
static void
on_relay_idle(loop_t *loop, void *arg)
{
    struct iproxy *p = arg;
    int64_t left =
        p->last_active + p->s->im->idle_ms + 60000 - loop_now_ms(loop);

    p->timer = NULL;
    if (left > 0) {
        p->timer = loop_timer_add(loop, left, on_relay_idle, p);
        return;
    }
    relay_close(p, "relay_idle");
}

/* Moves what it can both ways until nothing moves, then says which
 * events each side waits for. */
static void
relay(struct iproxy *p)
{
    struct isess *s = p->s;
    loop_t *loop = s->im->loop;
    bool moved = true, owner_eof = false;
    char tmp[16384];
    int cw;

    while (moved) {
        ssize_t n;

        moved = false;
        /* Client to owner. */
        while (!p->client_eof && p->c2o.len < PROXY_BUF) {
            size_t want = PROXY_BUF - p->c2o.len;

            n = conn_read(s->conn, tmp,
                          want < sizeof(tmp) ? want : sizeof(tmp));
            if (n == TLS_WANT_READ || n == TLS_WANT_WRITE)
                break;
            if (n == 0) {
                p->client_eof = true;
                break;
            }
            if (n < 0) {
                relay_close(p, "read_failed");
                return;
            }
            buf_add(&p->c2o, tmp, (size_t)n);
            p->up += (size_t)n;
            moved = true;
        }
        if (p->c2o.len > 0) {
            n = send(p->fd, p->c2o.data, p->c2o.len, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                relay_close(p, "owner_write_failed");
                return;
            }
            if (n > 0) {
                buf_consume(&p->c2o, (size_t)n);
                moved = true;
            }
        }
        /* Owner to client. */
        while (!owner_eof && p->o2c.len < PROXY_BUF) {
            size_t want = PROXY_BUF - p->o2c.len;

            n = read(p->fd, tmp, want < sizeof(tmp) ? want : sizeof(tmp));
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            if (n <= 0) {
                owner_eof = true;
                break;
            }
            buf_add(&p->o2c, tmp, (size_t)n);
            p->down += (size_t)n;
            moved = true;
        }
        if (p->o2c.len > 0) {
            n = conn_write(s->conn, p->o2c.data, p->o2c.len);
            if (n == 0 ||
                (n < 0 && n != TLS_WANT_WRITE && n != TLS_WANT_READ)) {
                relay_close(p, "write_failed");
                return;
            }
            if (n > 0) {
                buf_consume(&p->o2c, (size_t)n);
                moved = true;
            }
        }
        if (moved)
            p->last_active = loop_now_ms(loop);
    }
    /* The owner ended the session (LOGOUT, autologout, or it died): the
     * client gets what it said, then the close. */
    if (owner_eof && p->o2c.len == 0) {
        relay_close(p, "owner_closed");
        return;
    }
    /* The client is gone: the owner's session ends with the link. */
    if (p->client_eof && p->c2o.len == 0) {
        relay_close(p, "client_closed");
        return;
    }
    owner_watch(p, (!owner_eof && p->o2c.len < PROXY_BUF ? LOOP_READ : 0) |
                       (p->c2o.len > 0 ? LOOP_WRITE : 0));
    cw = (!p->client_eof && p->c2o.len < PROXY_BUF ? LOOP_READ : 0) |
         (p->o2c.len > 0 ? LOOP_WRITE : 0);
    conn_watch(s->conn, cw);
}

static void
on_owner_io(loop_t *loop, int fd, int events, void *arg)
{
    struct iproxy *p = arg;
    int err = 0;
    socklen_t el = sizeof(err);

    (void)loop;
    (void)events;
    switch (p->st) {
    case P_TICKET:
        break;
    case P_CONNECT:
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
            err = errno;
        if (err != 0) {
            login_failed(p, strerror(err));
            return;
        }
        p->st = P_GREETING;
        owner_watch(p, LOOP_READ);
        break;
    case P_GREETING:
    case P_LOGIN:
        login_read(p);
        break;
    case P_SPLICE:
        relay(p);
        break;
    }
}

bool
imap_proxy_relaying(const struct isess *s)
{
    return s->proxy != NULL && s->proxy->st == P_SPLICE;
}

bool
imap_proxy_on_io(struct isess *s, int events)
{
    (void)events;
    if (s->proxy->st != P_SPLICE)
        return false;
    relay(s->proxy);
    return true;
}

void
imap_proxy_close(struct isess *s)
{
    struct iproxy *p = s->proxy;

    if (p == NULL)
        return;
    /* A connection or login under way counted as a call whose end will
     * never come now; the ticket call's callback still comes, and finds
     * the session dead. */
    if (p->st == P_CONNECT || p->st == P_GREETING || p->st == P_LOGIN)
        s->calls--;
    proxy_free(p);
}
