/*
 * mailbox_imap.c - the IMAP doors and sessions: listening sockets, the
 * socket of each session (plain, STARTTLS or implicit TLS), the engine
 * loop, the autologout timer and the logins checked by the auth actor.
 *
 * imap_sess_pump() is the heart, as in the listener's SMTP sessions: it
 * feeds what was read into the engine, handles its events until one waits
 * for another actor (LOGIN) or a long answer fills the output (FETCH), sends
 * what the engine queued, and decides whether to read, write, shake hands
 * or close.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "lib/clock.h"
#include "lib/config.h"
#include "lib/conn.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/xalloc.h"

#include "mailbox_imap_int.h"

/* auth.verify may take its time on purpose: the auth actor delays each
 * failure (schemas/auth.verify.json asks for 10 s or more). */
#define AUTH_TIMEOUT_MS 15000

static void sess_free(struct isess *s);
static void on_io(loop_t *loop, int fd, int events, void *arg);

/* --- input and output ---------------------------------------------------- */

size_t
imap_sess_out_len(const struct isess *s)
{
    size_t len;

    imap_server_output(s->srv, &len);
    return len;
}

/* Sends what the engine queued: 1 when all of it went, 0 when the socket
 * is full, -1 when the connection is gone. */
static int
flush(struct isess *s)
{
    size_t len;
    const char *out = imap_server_output(s->srv, &len);
    ssize_t n = conn_send(s->conn, out, len);

    if (n < 0)
        return -1;
    if (n > 0) {
        imap_server_output_done(s->srv, (size_t)n);
        /* A client taking a long answer is not idle (RFC 3501 5.4). */
        s->last_active = loop_now_ms(s->im->loop);
    }
    return (size_t)n == len;
}

/* --- life and death ------------------------------------------------------ */

void
imap_sess_close(struct isess *s, const char *why)
{
    mbimap_t *im = s->im;
    intptr_t count;

    if (s->dead)
        return;
    s->dead = true;
    if (s->prev)
        s->prev->next = s->next;
    else
        im->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    conn_close(s->conn);
    /* A descriptor is free again: accepting resumes if it had paused. */
    net_acceptor_resume(im->acceptor);
    loop_timer_cancel(im->loop, &s->idle_timer);
    if (s->quota_wait) {
        /* Its callback will never come: the call is over now. */
        mailbox_quota_cancel(im->quota, s);
        s->quota_wait = false;
        s->calls--;
    }
    /* A relayed session's link to the owner goes (and the call its login
     * counted, when it was under way). */
    imap_proxy_close(s);
    imap_cmd_unselect(s);
    mstore_destroy(&s->ms);
    count = (intptr_t)zhashx_lookup(im->per_ip, s->ip);
    if (count <= 1)
        zhashx_delete(im->per_ip, s->ip);
    else
        zhashx_update(im->per_ip, s->ip, (void *)(count - 1));
    im->sessions--;
    log_info(s->trace, "imap_session_end",
             "door=%s ip=%s user=%s commands=%llu why=%s", s->door->name, s->ip,
             s->user ? log_q(s->user) : "-", (unsigned long long)s->commands,
             why);
    if (s->calls == 0)
        sess_free(s);
}

/* Forgets the work under way (the session ends before it does). */
static void
drop_work(struct isess *s)
{
    if (s->work_free && s->work_arg)
        s->work_free(s->work_arg);
    s->work = NULL;
    s->work_free = NULL;
    s->work_arg = NULL;
}

static void
sess_free(struct isess *s)
{
    drop_work(s);
    imap_server_destroy(&s->srv);
    conn_destroy(&s->conn);
    free(s->user);
    free(s);
}

void
imap_sess_call_begin(struct isess *s)
{
    s->calls++;
}

bool
imap_sess_call_end(struct isess *s)
{
    s->calls--;
    if (s->dead) {
        if (s->calls == 0)
            sess_free(s);
        return false;
    }
    return true;
}

void
imap_sess_complete(struct isess *s, enum imap_status st, const char *code,
                   const char *text)
{
    s->work = NULL;
    s->work_free = NULL;
    s->work_arg = NULL;
    s->cmd = NULL;
    imap_server_complete(s->srv, st, code, text);
}

/* --- logins -------------------------------------------------------------- */

static void
on_auth_reply(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct isess *s = arg;
    const char *user;

    if (!imap_sess_call_end(s))
        return;
    if (err != 0 || reply == NULL) {
        log_warn(s->trace, "bus_call_failed", "type=auth.verify err=%s text=%s",
                 err_name(err), log_q(text));
        /* RFC 5530 3: UNAVAILABLE, a temporary failure. */
        imap_sess_complete(s, IMAP_NO, "UNAVAILABLE",
                           "Authentication temporarily unavailable");
    } else if (envelope_code(reply) == 235 &&
               (user = envelope_get_str(reply, ENV_KEY_USER)) != NULL) {
        free(s->user);
        s->user = xstrdup(user);
        for (char *p = s->user; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        /* Another copy owns the account (lib/shard.h): the session is
         * relayed to it, which completes the login later. */
        if (imap_proxy_wanted(s))
            imap_proxy_begin(s);
        else
            imap_sess_login_ok(s);
    } else {
        int code = envelope_code(reply);

        s->im->login_failures++;
        log_info(s->trace, "imap_login_failed", "ip=%s code=%d", s->ip, code);
        if (code / 100 == 4)
            imap_sess_complete(
                s, IMAP_NO, "UNAVAILABLE",
                "Authentication temporarily unavailable, try again later");
        else
            imap_sess_complete(s, IMAP_NO, "AUTHENTICATIONFAILED",
                               "Authentication failed");
    }
    imap_sess_pump(s);
}

void
imap_sess_login_ok(struct isess *s)
{
    char why[256];

    s->ms = mstore_open(config_str(actor_config(s->im->actor), "data"), s->user,
                        &s->im->limits, why, sizeof(why));
    if (s->ms == NULL) {
        log_err(s->trace, "imap_store_unusable", "user=%s reason=%s",
                log_q(s->user), log_q(why));
        free(s->user);
        s->user = NULL;
        imap_sess_complete(s, IMAP_NO, "UNAVAILABLE",
                           "Mailbox temporarily unavailable");
        return;
    }
    mstore_set_trace(s->ms, s->trace);
    s->im->logins++;
    log_info(s->trace, "imap_login", "user=%s door=%s ip=%s tls=%s",
             log_q(s->user), s->door->name, s->ip,
             imap_server_tls(s->srv) ? "yes" : "no");
    imap_sess_complete(s, IMAP_OK, NULL, "Logged in");
}

/* AUTHENTICATE PLAIN goes to the auth actor as the client's response,
 * encoded again (RFC 4616 2: authzid NUL authcid NUL passwd), so that the
 * auth actor alone decides about an authzid. The buffers held a password:
 * they are wiped. */
static char *
plain_response(const struct imap_event *ev)
{
    size_t za = strlen(ev->login.authzid), zu = strlen(ev->login.user),
           zp = strlen(ev->login.pass), n = za + zu + zp + 2;
    unsigned char *raw = xmalloc(n + 1);
    char *b64 = xmalloc(4 * ((n + 2) / 3) + 1);

    memcpy(raw, ev->login.authzid, za);
    raw[za] = '\0';
    memcpy(raw + za + 1, ev->login.user, zu);
    raw[za + 1 + zu] = '\0';
    memcpy(raw + za + zu + 2, ev->login.pass, zp);
    EVP_EncodeBlock((unsigned char *)b64, raw, (int)n);
    OPENSSL_cleanse(raw, n + 1);
    free(raw);
    return b64;
}

static void
on_login(struct isess *s, const struct imap_event *ev)
{
    int64_t timeout = s->im->bus_timeout_ms < AUTH_TIMEOUT_MS
                          ? AUTH_TIMEOUT_MS
                          : s->im->bus_timeout_ms;
    envelope_t *env;
    value_t *body;

    /* The internal door takes tickets, never passwords. */
    if (s->door->internal) {
        imap_proxy_ticket_login(s, ev);
        return;
    }
    env = envelope_new("auth.verify", s->trace, timeout);
    body = envelope_body(env);

    /* The credentials go to the auth actor, never to a log (the schema
     * marks them secret, so the tap masks them too). */
    value_set_str(body, ENV_KEY_CLIENT_IP, s->ip);
    if (ev->login.mech == NULL) {
        value_set_str(body, ENV_KEY_MECHANISM, "LOGIN");
        value_set_str(body, ENV_KEY_USERNAME, ev->login.user);
        value_set_str(body, ENV_KEY_PASSWORD, ev->login.pass);
    } else {
        char *resp = plain_response(ev);

        value_set_str(body, ENV_KEY_MECHANISM, "PLAIN");
        value_set_str(body, ENV_KEY_RESPONSE, resp);
        OPENSSL_cleanse(resp, strlen(resp));
        free(resp);
    }
    imap_sess_call_begin(s);
    if (bus_client_send_take(s->im->bus, &env, on_auth_reply, s) != 0) {
        envelope_destroy(&env);
        s->calls--;
        imap_sess_complete(s, IMAP_NO, "UNAVAILABLE",
                           "Authentication temporarily unavailable");
    }
}

/* --- events -------------------------------------------------------------- */

/* Handles one event; false when the session must stop for now (a call is
 * out, or it is over). */
static bool
on_event(struct isess *s, const struct imap_event *ev)
{
    switch (ev->type) {
    case IMAP_EV_CONNECT:
        imap_server_complete(s->srv, IMAP_OK, NULL, NULL);
        return true;
    case IMAP_EV_LOGIN:
        s->cmd = ev->cmd;
        on_login(s, ev);
        return s->calls == 0;
    case IMAP_EV_COMMAND:
        s->commands++;
        s->cmd = ev->cmd;
        imap_cmd_run(s, ev->cmd);
        return s->calls == 0 && !s->dead;
    case IMAP_EV_IDLE_DONE:
        return true;
    case IMAP_EV_STARTTLS:
        s->starttls = true;
        return false;
    case IMAP_EV_LOGOUT:
    case IMAP_EV_CLOSE:
        s->closing = true;
        return false;
    case IMAP_EV_NONE:
        break;
    }
    return false;
}

/* --- the pump ------------------------------------------------------------ */

static bool
start_tls(struct isess *s)
{
    if (conn_start_tls(s->conn, s->im->tls) != 0) {
        imap_sess_close(s, "tls_setup_failed");
        return false;
    }
    return true;
}

static bool
handshake(struct isess *s)
{
    int rc = conn_handshake(s->conn);

    if (rc == TLS_WANT_READ || rc == TLS_WANT_WRITE)
        return false;
    if (rc != 0) {
        imap_sess_close(s, "tls_failed");
        return false;
    }
    if (s->starttls) {
        s->starttls = false;
        imap_server_tls_started(s->srv);
    }
    return true;
}

void
imap_sess_pump(struct isess *s)
{
    bool idle = false;
    int64_t t0 = clock_mono_ms();

    s->work_yield = false;
    /* A relayed session's bytes are the proxy's (mailbox_imap_proxy.c). */
    if (s->proxy && imap_proxy_on_io(s, 0))
        return;
    for (int rounds = 0; rounds < 64 && !s->dead; rounds++) {
        const struct imap_event *ev;
        bool progress = false;
        int fl;

        if (conn_tls_state(s->conn) == CONN_HANDSHAKE && !handshake(s))
            return;
        if (conn_in_pending(s->conn) > 0 && !s->starttls) {
            size_t len;
            const char *in = conn_in(s->conn, &len);
            size_t took = imap_server_input(s->srv, in, len);

            conn_in_took(s->conn, took);
            progress = took > 0;
        }
        while (s->calls == 0 && !s->dead) {
            if (s->work) {
                /* A long answer goes on while little is queued; the rest
                 * when the socket has taken it. */
                if (imap_sess_out_len(s) >= IMAP_PACE_BYTES || s->work_yield)
                    break;
                s->work(s);
                progress = true;
                continue;
            }
            ev = imap_server_next(s->srv);
            if (ev->type == IMAP_EV_NONE)
                break;
            progress = true;
            if (!on_event(s, ev))
                break;
        }
        if (s->dead)
            return;
        fl = flush(s);
        if (fl < 0) {
            imap_sess_close(s, "write_failed");
            return;
        }
        if (fl == 0) {
            conn_watch(s->conn, LOOP_WRITE);
            return;
        }
        if (s->closing) {
            imap_sess_close(s, "done");
            return;
        }
        if (s->starttls && conn_tls_state(s->conn) == CONN_PLAIN) {
            /* Nothing read after the STARTTLS line may be taken as sent
             * under TLS (RFC 3501 6.2.1). */
            conn_in_drop(s->conn);
            if (!start_tls(s))
                return;
            continue;
        }
        /* All the output went: a long answer goes on (progress or not:
         * this round may have found the output full and only sent it). */
        if (s->work && s->calls == 0) {
            /* Unless it asked to let the loop serve others first: the
             * socket's being writable brings it back (below). */
            if (s->work_yield || clock_mono_ms() - t0 >= IMAP_SLICE_MS)
                break;
            continue;
        }
        if (!progress || s->calls > 0) {
            idle = true;
            break;
        }
    }
    if (s->dead)
        return;
    if (conn_eof(s->conn)) {
        if (s->calls == 0 && s->work == NULL && idle) {
            imap_sess_close(s, "client_closed");
            return;
        }
        conn_watch(s->conn, s->calls == 0 ? LOOP_WRITE : 0);
        return;
    }
    conn_in_trim(s->conn);
    /* The rounds ran out with work left (a long FETCH whose output all
     * went): the socket being writable brings the pump back at once, as
     * no input may ever come while the client waits for the answer. */
    conn_watch(s->conn, (conn_in_full(s->conn) ? 0 : LOOP_READ) |
                            (!idle && s->calls == 0 ? LOOP_WRITE : 0));
    if (conn_tls_pending(s->conn) && s->calls == 0 && !conn_in_full(s->conn))
        on_io(s->im->loop, conn_fd(s->conn), LOOP_READ, s);
}

static void
on_io(loop_t *loop, int fd, int events, void *arg)
{
    struct isess *s = arg;

    (void)loop;
    (void)fd;
    if (s->proxy && imap_proxy_on_io(s, events))
        return;
    if (conn_tls_state(s->conn) == CONN_HANDSHAKE) {
        imap_sess_pump(s);
        return;
    }
    if ((events & LOOP_READ) && !conn_eof(s->conn)) {
        /* After STARTTLS, before the handshake, what comes is dropped. */
        ssize_t n = conn_fill(s->conn, s->starttls);

        if (n < 0) {
            imap_sess_close(s, "read_failed");
            return;
        }
        if (n > 0)
            s->last_active = loop_now_ms(s->im->loop);
    }
    imap_sess_pump(s);
}

/* RFC 3501 5.4: the autologout timer, at least 30 minutes by default
 * (imap.idle_timeout_ms); a client in IDLE is inactive too (RFC 2177 3),
 * and is expected to renew its IDLE before then. */
static void
on_idle_timer(loop_t *loop, void *arg)
{
    struct isess *s = arg;
    int64_t left = s->last_active + s->im->idle_ms - loop_now_ms(loop);

    s->idle_timer = NULL;
    if (left > 0) {
        s->idle_timer = loop_timer_add(loop, left, on_idle_timer, s);
        return;
    }
    log_info(s->trace, "idle_timeout", "ip=%s", s->ip);
    imap_server_close(s->srv, "Autologout; idle for too long");
    drop_work(s);
    flush(s);
    imap_sess_close(s, "idle_timeout");
}

static void
sess_start(struct imap_door *d, int fd, const char *ip)
{
    mbimap_t *im = d->im;
    struct isess *s = xcalloc(1, sizeof(*s));
    intptr_t count = (intptr_t)zhashx_lookup(im->per_ip, ip);

    s->im = im;
    s->door = d;
    snprintf(s->ip, sizeof(s->ip), "%s", ip);
    envelope_new_trace(s->trace);
    s->srv = imap_server_new(&d->opts);
    s->last_active = loop_now_ms(im->loop);
    s->conn = conn_new(im->loop, fd, s->trace, s->ip, on_io, s);
    if (s->conn == NULL) {
        imap_server_destroy(&s->srv);
        free(s);
        return;
    }
    s->next = im->head;
    if (im->head)
        im->head->prev = s;
    im->head = s;
    zhashx_update(im->per_ip, ip, (void *)(count + 1));
    im->sessions++;
    s->idle_timer = loop_timer_add(im->loop, im->idle_ms, on_idle_timer, s);
    log_info(s->trace, "imap_session_start", "door=%s ip=%s sessions=%d",
             d->name, ip, im->sessions);
    /* Implicit TLS (RFC 8314 3.3): the handshake first, then the
     * greeting. */
    if (d->implicit_tls && !start_tls(s))
        return;
    imap_sess_pump(s);
}

/* --- the doors ----------------------------------------------------------- */

/* A connection on a door: a session, unless a limit is reached; then it
 * is refused before any session exists (RFC 3501 7.1.5 lets a server
 * greet with BYE and close; before TLS on IMAPS nothing can be said in
 * clear text, so the connection is just closed). */
static void
on_accept(void *arg, int fd, const char *ip)
{
    struct imap_door *d = arg;
    mbimap_t *im = d->im;

    if (im->sessions >= im->max_sessions) {
        im->refused++;
        log_warn(NULL, "session_refused",
                 "door=%s ip=%s reason=full sessions=%d", d->name, ip,
                 im->sessions);
        if (d->implicit_tls)
            close(fd);
        else
            net_refuse(fd, "* BYE Too busy, try again later\r\n");
        return;
    }
    /* The internal door's sessions all come from other copies. */
    if (!d->internal &&
        (intptr_t)zhashx_lookup(im->per_ip, ip) >= im->max_per_ip) {
        im->refused++;
        log_warn(NULL, "session_refused", "door=%s ip=%s reason=per_ip",
                 d->name, ip);
        if (d->implicit_tls)
            close(fd);
        else
            net_refuse(fd, "* BYE Too many connections from your address\r\n");
        return;
    }
    im->accepted++;
    sess_start(d, fd, ip);
}

/* The engine's options for each door: IMAP offers STARTTLS and refuses
 * LOGIN before it (RFC 3501 6.2.3, LOGINDISABLED); IMAPS is under TLS
 * from the first byte (RFC 8314). */
static void
door_opts(mbimap_t *im, struct imap_door *d, const config_t *cfg)
{
    struct imap_server_opts *o = &d->opts;

    memset(o, 0, sizeof(*o));
    o->hostname = im->hostname;
    o->max_append = (size_t)config_int(cfg, "imap.max_append");
    o->starttls = !d->implicit_tls && !d->internal;
    o->tls_active = d->implicit_tls;
    /* The internal door is plaintext and takes only tickets. */
    o->login_needs_tls = !d->internal;
}

static int
doors_start(mbimap_t *im, const config_t *cfg)
{
    static const char *const names[3] = {"imap", "imaps", "imap_internal"};
    char key[64];

    for (int i = 0; i < 3; i++) {
        struct imap_door *d = &im->doors[im->ndoors];

        d->im = im;
        d->name = names[i];
        d->implicit_tls = i == 1;
        d->internal = i == 2;
        if (d->internal) {
            /* Only when shards are on (mailbox_imap_proxy.c). */
            if (!imap_proxy_door_addr(im, cfg, d->addr, sizeof(d->addr)))
                break;
        } else {
            snprintf(key, sizeof(key), "listen.%s", d->name);
            snprintf(d->addr, sizeof(d->addr), "%s", config_str(cfg, key));
            if (d->addr[0] == '\0') {
                /* Empty: this door is off (a copy that only delivers,
                 * or a deployment with IMAPS alone). */
                log_info(NULL, "door_off", "door=%s", d->name);
                continue;
            }
        }
        door_opts(im, d, cfg);
        d->fd =
            net_acceptor_listen(im->acceptor, d->name, d->addr, on_accept, d);
        if (d->fd < 0)
            return ERR_SYS;
        im->ndoors++;
        if (d->internal && imap_proxy_door_up(im, d, cfg) != 0)
            return ERR_CONFIG;
    }
    return 0;
}

mbimap_t *
mailbox_imap_start(struct mailbox *mb)
{
    mbimap_t *im = xcalloc(1, sizeof(*im));
    const config_t *cfg = actor_config(mb->actor);

    im->mb = mb;
    im->actor = mb->actor;
    im->loop = actor_loop(mb->actor);
    im->bus = actor_client(mb->actor);
    im->ino_fd = -1;
    snprintf(im->hostname, sizeof(im->hostname), "%s",
             config_str(cfg, "hostname"));
    if (im->hostname[0] == '\0' &&
        gethostname(im->hostname, sizeof(im->hostname) - 1) != 0)
        snprintf(im->hostname, sizeof(im->hostname), "localhost");
    im->max_sessions = (int)config_int(cfg, "imap.max_sessions");
    im->max_per_ip = (int)config_int(cfg, "imap.max_per_ip");
    im->idle_ms = config_int(cfg, "imap.idle_timeout_ms");
    im->bus_timeout_ms = config_int(cfg, "bus.timeout_ms");
    im->limits.append_max = (size_t)config_int(cfg, "imap.max_append");
    im->per_ip = zhashx_new();
    im->hcache = imap_hcache_new();
    im->quota = mb->quota; /* borrowed */
    im->acceptor = net_acceptor_new(im->loop, "door", 64, &im->sessions);
    /* The certificate the listener uses too. */
    if ((im->tls = tls_server_from_config(cfg, im->hostname)) == NULL ||
        imap_notify_start(im) != 0 || doors_start(im, cfg) != 0) {
        mailbox_imap_stop(&im);
        return NULL;
    }
    return im;
}

void
mailbox_imap_stop(mbimap_t **im_p)
{
    mbimap_t *im = *im_p;

    if (im == NULL)
        return;
    net_acceptor_destroy(&im->acceptor);
    im->ndoors = 0;
    while (im->head) {
        struct isess *s = im->head;

        /* A relayed session's stream is the owner's: a BYE of ours could
         * fall inside one of its responses. */
        if (!imap_proxy_relaying(s)) {
            imap_server_close(s->srv, "Server shutting down");
            drop_work(s);
            flush(s);
        }
        imap_sess_close(s, "shutdown");
    }
    imap_notify_stop(im);
    imap_proxy_stop(im);
    log_info(NULL, "imap_stopped",
             "accepted=%llu refused=%llu logins=%llu login_failures=%llu",
             (unsigned long long)im->accepted, (unsigned long long)im->refused,
             (unsigned long long)im->logins,
             (unsigned long long)im->login_failures);
    zhashx_destroy(&im->per_ip);
    imap_hcache_destroy(&im->hcache);
    tls_ctx_destroy(&im->tls);
    free(im);
    *im_p = NULL;
}
