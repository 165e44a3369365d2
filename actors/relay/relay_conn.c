/*
 * relay_conn.c - connections to next hops: the socket (plain, then maybe
 * TLS), the SMTP client engine on it, its timers, and the pool they live
 * in: per next-hop address a limit, a line of jobs waiting, and the idle
 * connections kept for reuse.
 *
 * conn_pump() is the heart, as in the listener: it feeds what was read to
 * the engine, handles its events, sends what it queued, and decides
 * whether to read, write, shake hands or close. A connection is freed only
 * by conn_run() when no pump of it is on the stack (its depth is 0), so
 * whatever an event handler sets off (a job moving on to another address,
 * a waiting job taking a connection) never pulls one out from under a
 * caller.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "relay.h"

/* Server input read but not yet taken by the engine, at most. */
#define IN_MAX 16384

enum cstate {
    CN_CONNECTING, /* TCP connect in progress */
    CN_SMTP,       /* talking, in clear or under TLS */
    CN_HANDSHAKE,  /* STARTTLS answered: TLS handshake in progress */
    CN_DEAD,       /* closed; freed by conn_run() */
};

struct relay_conn {
    relay_t *r;
    struct relay_conn *prev, *next; /* r->conns */
    struct relay_conn *idle_next;   /* host->idle */
    struct relay_host *host;
    int fd;
    enum cstate st;
    int depth; /* conn_run() frames on the stack */
    int watching;
    smtp_client_t *smtp;
    tls_conn_t *tls;
    bool tls_up, verified;
    bool tls_failed; /* the handshake failed */
    bool starttls;   /* the engine asked for the handshake */
    bool closing;    /* close once the output is out */
    bool lost;       /* EOF or a socket error seen */
    bool idle;       /* in host->idle */
    bool quitting;   /* leaving the pool: QUIT sent */
    bool reused;     /* carries a job after carrying another */
    bool replied;    /* a reply came for the current transaction */
    char lost_why[600];
    struct relay_job *job;
    struct relay_tls tls_req; /* the TLS it was opened for */
    char name[256];           /* the next hop's name: SNI, verification */
    char mx[300];
    char trace[ENVELOPE_MAX_NAME + 1];
    buf_t in;
    loop_timer_t *timer;
    int timer_phase; /* what the timer runs for (see phase_of()) */
    int ntxn;
};

static void conn_pump(struct relay_conn *c);
static void conn_run(struct relay_conn *c);
static void host_kick(struct relay_host *h);
static void on_io(loop_t *loop, int fd, int events, void *arg);

/* --- hosts -------------------------------------------------------------- */

struct relay_host *
relay_host_get(relay_t *r, const struct dns_addr *a, int port)
{
    struct relay_host *h;
    char key[80];

    if (a->sa.ss_family == AF_INET6)
        snprintf(key, sizeof(key), "[%s]:%d", a->text, port);
    else
        snprintf(key, sizeof(key), "%s:%d", a->text, port);
    h = zhashx_lookup(r->hosts, key);
    if (h)
        return h;
    h = xcalloc(1, sizeof(*h));
    h->r = r;
    snprintf(h->key, sizeof(h->key), "%s", key);
    memcpy(&h->sa, &a->sa, a->len);
    h->salen = a->len;
    if (h->sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&h->sa)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)&h->sa)->sin_port = htons((uint16_t)port);
    zhashx_insert(r->hosts, key, h);
    return h;
}

static void
idle_unlink(struct relay_conn *c)
{
    struct relay_conn **pp;

    if (!c->idle)
        return;
    for (pp = &c->host->idle; *pp; pp = &(*pp)->idle_next)
        if (*pp == c) {
            *pp = c->idle_next;
            break;
        }
    c->idle_next = NULL;
    c->idle = false;
}

/* --- the socket --------------------------------------------------------- */

static void
watch(struct relay_conn *c, int events)
{
    if (c->st == CN_DEAD || events == c->watching)
        return;
    c->watching = events;
    loop_fd_mod(c->r->loop, c->fd, events);
}

static ssize_t
sock_read(struct relay_conn *c, void *buf, size_t len)
{
    ssize_t n;

    if (c->tls_up)
        return tls_read(c->tls, buf, len);
    n = read(c->fd, buf, len);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? TLS_WANT_READ : ERR_SYS;
    return n;
}

static ssize_t
sock_write(struct relay_conn *c, const void *buf, size_t len)
{
    ssize_t n;

    if (c->tls_up)
        return tls_write(c->tls, buf, len);
    n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? TLS_WANT_WRITE : ERR_SYS;
    return n;
}

/* The socket is closed now; the record goes in conn_run(). */
static void
conn_close(struct relay_conn *c, const char *why)
{
    relay_t *r = c->r;
    struct relay_host *h = c->host;

    if (c->st == CN_DEAD)
        return;
    if (c->tls && c->tls_up)
        tls_shutdown(c->tls);
    loop_fd_del(r->loop, c->fd);
    close(c->fd);
    loop_timer_cancel(r->loop, &c->timer);
    idle_unlink(c);
    c->st = CN_DEAD;
    if (c->prev)
        c->prev->next = c->next;
    else if (r->conns == c)
        r->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    h->nconns--;
    log_debug(c->trace, "relay_conn_closed", "mx=%s addr=%s txns=%d why=%s",
              log_q(c->mx), h->key, c->ntxn, log_q(why));
    /* A slot is free: the next job in line may have it. */
    host_kick(h);
}

static void
conn_free(struct relay_conn *c)
{
    smtp_client_destroy(&c->smtp);
    tls_conn_destroy(&c->tls);
    buf_free(&c->in);
    free(c);
}

/* Runs the pump; frees the connection once it is dead and no other
 * frame of it is running. */
static void
conn_run(struct relay_conn *c)
{
    c->depth++;
    conn_pump(c);
    if (--c->depth == 0 && c->st == CN_DEAD)
        conn_free(c);
}

/* --- jobs --------------------------------------------------------------- */

/* Hands the outcome back to the job, which leaves the connection. */
static void
give_back(struct relay_conn *c, const struct relay_outcome *o)
{
    struct relay_job *j = c->job;

    c->job = NULL;
    j->conn = NULL;
    relay_job_outcome(j, o);
}

/* The engine's transaction is over: its results go to the job. */
static void
on_done(struct relay_conn *c)
{
    struct relay_job *j = c->job;
    const struct smtp_reply **res;
    struct relay_outcome o = {0};
    bool died = smtp_client_done(c->smtp);

    c->ntxn++;
    if (j == NULL)
        return; /* the job left meanwhile */
    res = xcalloc((size_t)j->sub.nrcpts + 1, sizeof(*res));
    for (int i = 0; i < j->sub.nrcpts; i++)
        res[i] = smtp_client_result(c->smtp, i);
    o.results = res;
    o.nresults = j->sub.nrcpts;
    o.tls = c->tls_up;
    /* A reused connection that died before any reply: the other end
     * closed it while idle; a new one is worth a try. */
    o.retry_fresh = died && c->reused && !c->replied;
    o.retry_plain = died && c->tls_failed;
    give_back(c, &o);
    free(res);
}

/* Starts the job's transaction on c. */
static void
carry(struct relay_conn *c, struct relay_job *j)
{
    c->job = j;
    j->conn = c;
    c->reused = c->ntxn > 0;
    c->replied = false;
    snprintf(c->trace, sizeof(c->trace), "%s", j->trace);
    snprintf(c->mx, sizeof(c->mx), "%s", j->mx);
    if (smtp_client_begin(c->smtp, &j->sub) != 0)
        /* Cannot be: the session was idle or new. */
        smtp_client_fail(c->smtp, 451, "4.3.0", "internal error");
}

static bool
suits(const struct relay_conn *c, const struct relay_job *j)
{
    if (!smtp_client_idle(c->smtp))
        return false;
    if (j->cur_tls.policy == SMTP_CLIENT_TLS_MUST && !c->tls_up)
        return false;
    if (j->cur_tls.verify &&
        (!c->verified || strcasecmp(c->name, j->hop_name) != 0))
        return false;
    return true;
}

/* Whether an idle connection is still open at the other end: a server
 * that timed it out has closed it (or said 421 first). */
static bool
alive(const struct relay_conn *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return !(c->tls_up && tls_pending(c->tls));
    return false;
}

/* A connection that failed before it could carry the job. */
static void
fail_early(struct relay_conn *c, int code, const char *ecode, const char *text)
{
    c->lost = true;
    snprintf(c->lost_why, sizeof(c->lost_why), "%s", text);
    smtp_client_fail(c->smtp, code, ecode, text);
}

static void
conn_new(struct relay_job *j)
{
    relay_t *r = j->r;
    struct relay_host *h = j->host;
    struct relay_conn *c = xcalloc(1, sizeof(*c));
    struct smtp_client_opts o = {.helo = r->hostname, .tls = j->cur_tls.policy};
    int one = 1;

    c->r = r;
    c->host = h;
    c->tls_req = j->cur_tls;
    snprintf(c->name, sizeof(c->name), "%s", j->hop_name);
    c->smtp = smtp_client_new(&o);
    c->fd =
        socket(h->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->st = CN_CONNECTING;
    c->timer_phase = -1;
    h->nconns++;
    r->connects++;
    c->next = r->conns;
    if (r->conns)
        r->conns->prev = c;
    r->conns = c;
    carry(c, j);
    log_debug(c->trace, "relay_connect", "mx=%s addr=%s tls=%d", log_q(c->mx),
              h->key, (int)c->tls_req.policy);
    if (c->fd < 0 || loop_fd_add(r->loop, c->fd, LOOP_WRITE, on_io, c) != 0) {
        char text[300];

        snprintf(text, sizeof(text), "cannot make a socket: %s",
                 strerror(errno));
        if (c->fd < 0)
            c->fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        fail_early(c, 451, "4.3.0", text);
        conn_run(c);
        return;
    }
    c->watching = LOOP_WRITE;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&h->sa, h->salen) == 0) {
        c->st = CN_SMTP;
    } else if (errno != EINPROGRESS) {
        char text[400];

        snprintf(text, sizeof(text), "cannot connect to %s [%s]: %s", c->name,
                 h->key, strerror(errno));
        fail_early(c, 451, "4.4.1", text);
    }
    conn_run(c);
}

void
relay_conn_attempt(struct relay_job *j)
{
    relay_t *r = j->r;
    struct relay_host *h = j->host;
    struct relay_conn *c;

    if (!j->cur_fresh) {
        while ((c = h->idle) != NULL) {
            struct relay_conn *pick = NULL;

            for (struct relay_conn *i = h->idle; i; i = i->idle_next)
                if (suits(i, j)) {
                    pick = i;
                    break;
                }
            if (pick == NULL)
                break;
            idle_unlink(pick);
            loop_timer_cancel(r->loop, &pick->timer);
            if (!alive(pick)) {
                pick->depth++;
                conn_close(pick, "dead while idle");
                if (--pick->depth == 0)
                    conn_free(pick);
                continue;
            }
            r->reuses++;
            log_debug(j->trace, "relay_reuse", "mx=%s addr=%s txns=%d",
                      log_q(j->mx), h->key, pick->ntxn);
            carry(pick, j);
            conn_run(pick);
            return;
        }
    }
    if (h->nconns >= r->max_per_host && h->idle) {
        /* Idle ones that do not suit: one makes room for a new one. */
        c = h->idle;
        idle_unlink(c);
        c->depth++;
        conn_close(c, "room for another");
        if (--c->depth == 0)
            conn_free(c);
    }
    if (h->nconns < r->max_per_host) {
        conn_new(j);
        return;
    }
    /* Beyond the limit: in line until a connection is free. */
    j->waiting = true;
    j->wait_next = NULL;
    if (h->wait_tail)
        h->wait_tail->wait_next = j;
    else
        h->wait_head = j;
    h->wait_tail = j;
    log_debug(j->trace, "relay_wait", "addr=%s conns=%d", h->key, h->nconns);
}

void
relay_conn_detach(struct relay_job *j)
{
    struct relay_conn *c = j->conn;

    if (j->waiting) {
        struct relay_host *h = j->host;
        struct relay_job **pp;

        for (pp = &h->wait_head; *pp; pp = &(*pp)->wait_next)
            if (*pp == j) {
                *pp = j->wait_next;
                break;
            }
        h->wait_tail = NULL;
        for (struct relay_job *w = h->wait_head; w; w = w->wait_next)
            h->wait_tail = w;
        j->waiting = false;
        j->wait_next = NULL;
    }
    if (c == NULL)
        return;
    /* Its state is unknown to the job now: the connection goes. */
    c->job = NULL;
    j->conn = NULL;
    fail_early(c, 451, "4.4.2", "abandoned by its job");
    conn_run(c);
}

/* Gives free slots of h to the jobs in its line. */
static void
host_kick(struct relay_host *h)
{
    relay_t *r = h->r;

    if (r->stopping)
        return;
    while (h->wait_head && (h->idle || h->nconns < r->max_per_host)) {
        struct relay_job *j = h->wait_head;

        h->wait_head = j->wait_next;
        if (h->wait_head == NULL)
            h->wait_tail = NULL;
        j->waiting = false;
        j->wait_next = NULL;
        relay_conn_attempt(j);
    }
}

/* --- idle connections --------------------------------------------------- */

static void
on_timer(loop_t *loop, void *arg)
{
    struct relay_conn *c = arg;
    char text[600];

    (void)loop;
    c->timer = NULL;
    if (c->idle) {
        /* Nobody came for it: leave politely (RFC 5321 4.1.1.10). */
        idle_unlink(c);
        c->quitting = true;
        smtp_client_quit(c->smtp);
    } else if (c->st == CN_CONNECTING) {
        snprintf(text, sizeof(text), "timeout connecting to %s [%s]", c->name,
                 c->host->key);
        fail_early(c, 451, "4.4.1", text);
    } else if (c->st == CN_HANDSHAKE) {
        snprintf(text, sizeof(text), "timeout in the TLS handshake with %s",
                 c->name);
        c->tls_failed = true;
        fail_early(c, 451, "4.7.5", text);
    } else {
        snprintf(text, sizeof(text), "timeout waiting for %s from %s [%s]",
                 smtp_client_phase_name(smtp_client_phase(c->smtp)), c->name,
                 c->host->key);
        fail_early(c, 451, "4.4.2", text);
    }
    conn_run(c);
}

/* Back in the pool after a job, or out when reuse is off. */
static void
go_idle(struct relay_conn *c)
{
    relay_t *r = c->r;

    snprintf(c->trace, sizeof(c->trace), "-");
    if (r->idle_ms == 0 || c->quitting) {
        c->quitting = true;
        smtp_client_quit(c->smtp);
        return;
    }
    c->idle = true;
    c->idle_next = c->host->idle;
    c->host->idle = c;
    /* Only reading: a server that closes it or says 421 is seen. */
    watch(c, LOOP_READ);
    loop_timer_cancel(r->loop, &c->timer);
    c->timer = loop_timer_add(r->loop, r->idle_ms, on_timer, c);
    c->timer_phase = SMTP_PHASE_IDLE;
}

/* --- the pump ----------------------------------------------------------- */

/* Returns false when the connection must stop for now. */
static bool
on_event(struct relay_conn *c, const struct smtp_client_event *ev, bool *ready)
{
    switch (ev->type) {
    case SMTP_CLIENT_EV_GREETING:
        c->replied = true;
        break;
    case SMTP_CLIENT_EV_EHLO:
        log_debug(c->trace, "relay_ehlo", "mx=%s ext=0x%x size=%zu tls=%s",
                  log_q(c->mx), smtp_client_ext(c->smtp),
                  smtp_client_size_max(c->smtp), c->tls_up ? "yes" : "no");
        break;
    case SMTP_CLIENT_EV_STARTTLS:
        c->starttls = true;
        return false;
    case SMTP_CLIENT_EV_READY:
        *ready = true;
        break;
    case SMTP_CLIENT_EV_RCPT:
        c->replied = true;
        break;
    case SMTP_CLIENT_EV_DONE:
        on_done(c);
        break;
    case SMTP_CLIENT_EV_QUIT:
        c->closing = true;
        return false;
    case SMTP_CLIENT_EV_CLOSE:
        c->closing = true;
        if (!c->lost)
            log_info(c->trace, "relay_session_failed",
                     "mx=%s addr=%s "
                     "code=%d text=%s",
                     log_q(c->mx), c->host->key, ev->reply->code,
                     log_q(ev->reply->text));
        return false;
    case SMTP_CLIENT_EV_NONE:
        break;
    }
    return true;
}

/* Sends what the engine queued: 1 all sent, 0 the socket is full, -1 the
 * connection is gone. */
static int
flush(struct relay_conn *c, bool *progress)
{
    for (;;) {
        size_t len;
        const char *out = smtp_client_output(c->smtp, &len);
        ssize_t n;

        if (len == 0)
            return 1;
        n = sock_write(c, out, len);
        if (n == TLS_WANT_WRITE || n == TLS_WANT_READ)
            return 0;
        if (n <= 0)
            return -1;
        smtp_client_output_done(c->smtp, (size_t)n);
        *progress = true;
    }
}

static void
start_tls(struct relay_conn *c)
{
    c->starttls = false;
    buf_reset(&c->in);
    c->tls = tls_client_conn_new(c->r->tls, c->fd, c->name, c->tls_req.verify);
    if (c->tls == NULL) {
        c->tls_failed = true;
        fail_early(c, 451, "4.7.5", "cannot set up TLS");
        return;
    }
    c->st = CN_HANDSHAKE;
}

/* Drives the handshake; true once it is done. */
static bool
handshake(struct relay_conn *c)
{
    int rc = tls_handshake(c->tls);
    char text[400];

    if (rc == TLS_WANT_READ || rc == TLS_WANT_WRITE) {
        watch(c, rc == TLS_WANT_READ ? LOOP_READ : LOOP_WRITE);
        return false;
    }
    c->st = CN_SMTP;
    if (rc != 0) {
        snprintf(text, sizeof(text), "TLS handshake with %s failed: %s",
                 c->name, tls_conn_error(c->tls));
        log_info(c->trace, "relay_tls_failed", "mx=%s addr=%s reason=%s",
                 log_q(c->mx), c->host->key, log_q(tls_conn_error(c->tls)));
        c->tls_failed = true;
        fail_early(c, 451, "4.7.5", text);
        return true;
    }
    c->tls_up = true;
    c->verified = tls_conn_verified(c->tls);
    log_debug(c->trace, "relay_tls_up",
              "mx=%s version=%s cipher=%s "
              "verified=%s",
              log_q(c->mx), tls_conn_version(c->tls), tls_conn_cipher(c->tls),
              c->verified ? "yes" : "no");
    smtp_client_tls_started(c->smtp);
    return true;
}

static int64_t
phase_ms(const struct relay_conn *c, int phase)
{
    const relay_t *r = c->r;

    switch (phase) {
    case SMTP_PHASE_GREETING:
        return r->t_greeting;
    case SMTP_PHASE_DATA_INIT:
        return r->t_data_init;
    case SMTP_PHASE_DATA_BLOCK:
        return r->t_data_block;
    case SMTP_PHASE_DATA_END:
        return r->t_data_end;
    case SMTP_PHASE_TLS:
        return r->connect_ms;
    default:
        return r->t_cmd;
    }
}

/* Keeps the timer on what the connection waits for: restarted when that
 * changes or when bytes moved (a data block's 3 minutes are per block). */
static void
rearm(struct relay_conn *c, bool progress)
{
    int phase;

    if (c->st == CN_DEAD || c->idle)
        return;
    if (c->st == CN_CONNECTING || c->st == CN_HANDSHAKE)
        phase = SMTP_PHASE_TLS; /* connect_ms */
    else
        phase = (int)smtp_client_phase(c->smtp);
    if (phase == SMTP_PHASE_IDLE || phase == SMTP_PHASE_DONE) {
        if (c->timer_phase != phase)
            loop_timer_cancel(c->r->loop, &c->timer);
        c->timer_phase = phase;
        return;
    }
    if (c->timer && phase == c->timer_phase && !progress)
        return;
    loop_timer_cancel(c->r->loop, &c->timer);
    c->timer = loop_timer_add(c->r->loop, phase_ms(c, phase), on_timer, c);
    c->timer_phase = phase;
}

static void
conn_pump(struct relay_conn *c)
{
    bool moved = false;

    for (int rounds = 0; rounds < 64 && c->st != CN_DEAD; rounds++) {
        const struct smtp_client_event *ev;
        bool progress = false, ready = false;
        int fl;

        if (c->st == CN_CONNECTING && !c->lost)
            break;
        if (c->st == CN_HANDSHAKE) {
            if (!handshake(c)) {
                rearm(c, false);
                return;
            }
            progress = true;
        }
        if (c->in.len > 0) {
            size_t took = smtp_client_input(c->smtp, c->in.data, c->in.len);

            buf_consume(&c->in, took);
            progress = progress || took > 0;
        }
        while (c->st != CN_DEAD) {
            ev = smtp_client_next(c->smtp);
            if (ev->type == SMTP_CLIENT_EV_NONE)
                break;
            progress = true;
            if (!on_event(c, ev, &ready))
                break;
        }
        if (c->st == CN_DEAD)
            return;
        if (c->lost) {
            /* Nothing goes out on a lost connection; the engine is told
             * once and its events (DONE, CLOSE) come next round. */
            if (!smtp_client_done(c->smtp)) {
                smtp_client_fail(c->smtp, 451, "4.4.2", c->lost_why);
                continue;
            }
            conn_close(c, c->lost_why);
            return;
        }
        if (c->st == CN_CONNECTING)
            break;
        fl = flush(c, &progress);
        moved = moved || progress;
        if (fl < 0) {
            c->lost = true;
            snprintf(c->lost_why, sizeof(c->lost_why),
                     "connection to %s [%s] lost while sending", c->name,
                     c->host->key);
            continue;
        }
        if (fl == 0) {
            watch(c, LOOP_WRITE | LOOP_READ);
            rearm(c, true);
            return;
        }
        if (c->closing) {
            conn_close(c, c->quitting ? "quit" : "session over");
            return;
        }
        if (c->starttls) {
            start_tls(c);
            continue;
        }
        if (ready && c->job == NULL) {
            go_idle(c);
            /* A job in line may take it now (a tail call: nothing of c
             * is touched after it here). */
            if (c->idle && c->host->wait_head) {
                host_kick(c->host);
                return;
            }
            continue;
        }
        if (!progress)
            break;
    }
    if (c->st == CN_DEAD)
        return;
    if (c->st == CN_CONNECTING) {
        watch(c, LOOP_WRITE);
        rearm(c, false);
        return;
    }
    {
        size_t pending;

        smtp_client_output(c->smtp, &pending);
        watch(c, (c->in.len < IN_MAX ? LOOP_READ : 0) |
                     (pending > 0 ? LOOP_WRITE : 0));
    }
    rearm(c, moved);
    if (c->tls_up && tls_pending(c->tls) && c->in.len < IN_MAX)
        on_io(c->r->loop, c->fd, LOOP_READ, c);
}

static void
on_io(loop_t *loop, int fd, int events, void *arg)
{
    struct relay_conn *c = arg;

    (void)loop;
    (void)fd;
    c->depth++;
    if (c->st == CN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);

        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            char text[400];

            snprintf(text, sizeof(text), "cannot connect to %s [%s]: %s",
                     c->name, c->host->key, strerror(err));
            fail_early(c, 451, "4.4.1", text);
        } else {
            c->st = CN_SMTP;
            log_debug(c->trace, "relay_connected", "mx=%s addr=%s",
                      log_q(c->mx), c->host->key);
        }
    } else if (c->st == CN_SMTP && (events & LOOP_READ)) {
        char buf[16384];

        while (c->in.len < IN_MAX && !c->lost) {
            ssize_t n = sock_read(c, buf, sizeof(buf));

            if (n == TLS_WANT_READ || n == TLS_WANT_WRITE)
                break;
            if (n <= 0) {
                c->lost = true;
                snprintf(c->lost_why, sizeof(c->lost_why),
                         "connection to %s [%s] %s", c->name, c->host->key,
                         n == 0 ? "closed by the server" : "lost");
                break;
            }
            buf_add(&c->in, buf, (size_t)n);
            if ((size_t)n < sizeof(buf))
                break;
        }
        if (c->idle && (c->lost || c->in.len > 0)) {
            /* A server that drops an idle session (421, or just EOF). */
            idle_unlink(c);
            loop_timer_cancel(c->r->loop, &c->timer);
            c->lost = true;
            snprintf(c->lost_why, sizeof(c->lost_why), "closed while idle");
        }
    }
    conn_pump(c);
    if (--c->depth == 0 && c->st == CN_DEAD)
        conn_free(c);
}

void
relay_conns_close_all(relay_t *r)
{
    struct relay_host *h;

    while (r->conns) {
        struct relay_conn *c = r->conns;

        if (c->job) {
            c->job->conn = NULL;
            c->job = NULL;
        }
        c->depth++;
        conn_close(c, "shutdown");
        if (--c->depth == 0)
            conn_free(c);
    }
    for (h = zhashx_first(r->hosts); h; h = zhashx_next(r->hosts))
        free(h);
    zhashx_purge(r->hosts);
}

void
relay_hosts_sweep(relay_t *r)
{
    zlistx_t *keys = zhashx_keys(r->hosts);

    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        struct relay_host *h = zhashx_lookup(r->hosts, k);

        if (h && h->nconns == 0 && h->idle == NULL && h->wait_head == NULL) {
            zhashx_delete(r->hosts, k);
            free(h);
        }
    }
    zlistx_destroy(&keys);
}
