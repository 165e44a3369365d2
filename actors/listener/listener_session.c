/*
 * listener_session.c - one SMTP session: the socket (plain or TLS), the
 * engine, the timers, and the bus calls its events turn into.
 *
 * session_pump() is the heart: it feeds what was read into the engine,
 * handles events until one needs an answer from another actor (at most one
 * bus call is outstanding per session, which is what keeps pipelined
 * replies in order, RFC 2920), sends what the engine queued, and decides
 * whether to read, write, shake hands or close.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/conn.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/shard.h"
#include "lib/xalloc.h"
#include "listener.h"

/* Where one accepted recipient's mail goes: a local mailbox or a remote
 * address (an alias forwarding out, or any recipient of a submission). */
struct target {
    char *mailbox;     /* local account, or NULL */
    char *addr;        /* remote address, or NULL */
    char *rcpt;        /* the forward-path the client gave (for DSNs) */
    unsigned notify;   /* SMTP_NOTIFY_* (RFC 3461) */
    char *orcpt;
};

struct session {
    struct session *prev, *next; /* the listener's list of live sessions */
    listener_t *l;
    struct role *role;
    char ip[64];
    char trace[ENVELOPE_TRACE_LEN];
    smtp_server_t *smtp;
    /* The socket, its TLS and what was read from it (lib/conn.h). */
    conn_t *conn;
    bool starttls;     /* STARTTLS answered: handshake once output is out */
    bool closing;      /* close once the output is out */
    bool dead;         /* socket closed; freed when no call is outstanding */
    int calls;         /* bus calls outstanding (0 or 1) */
    int64_t last_active;
    loop_timer_t *idle_timer, *total_timer;
    char *user;        /* the authenticated account, or NULL */
    /* The transaction: the sender and where its recipients' mail goes,
     * each target once (a mailbox reached by two recipients gets one
     * copy). The RCPT being decided keeps its parameters in pending_*. */
    char *mail_from;
    int64_t size; /* SIZE= declared at MAIL (RFC 1870), or -1 */
    bool smtputf8, eight_bit;
    struct target *targets;
    int ntargets, nremote;
    int nrcpts;
    char *envid;
    enum smtp_ret ret;
    unsigned pending_notify;
    char *pending_orcpt;
    int messages;
    enum smtp_event_type asked; /* the step answer() answers, for metrics */
};

static void session_pump(struct session *s);
static void session_free(struct session *s);
static void message_room(struct session *s);

static void
txn_clear(struct session *s)
{
    for (int i = 0; i < s->ntargets; i++) {
        free(s->targets[i].mailbox);
        free(s->targets[i].addr);
        free(s->targets[i].rcpt);
        free(s->targets[i].orcpt);
    }
    free(s->targets);
    s->targets = NULL;
    s->ntargets = s->nremote = s->nrcpts = 0;
    free(s->mail_from);
    s->mail_from = NULL;
    free(s->envid);
    s->envid = NULL;
    free(s->pending_orcpt);
    s->pending_orcpt = NULL;
    s->ret = SMTP_RET_NONE;
    s->smtputf8 = s->eight_bit = false;
    s->size = -1;
}

/* Adds a target unless the same mailbox or address is there already. */
static void
txn_add(struct session *s, const char *mailbox, const char *addr,
        const char *rcpt)
{
    struct target *t;

    for (int i = 0; i < s->ntargets; i++) {
        t = &s->targets[i];
        if ((mailbox && t->mailbox && strcmp(t->mailbox, mailbox) == 0) ||
            (addr && t->addr && strcmp(t->addr, addr) == 0))
            return;
    }
    s->targets = xrealloc(s->targets,
                          sizeof(*s->targets) * (size_t)(s->ntargets + 1));
    t = &s->targets[s->ntargets++];
    t->mailbox = mailbox ? xstrdup(mailbox) : NULL;
    t->addr = addr ? xstrdup(addr) : NULL;
    t->rcpt = xstrdup(rcpt);
    t->notify = s->pending_notify;
    t->orcpt = s->pending_orcpt ? xstrdup(s->pending_orcpt) : NULL;
    if (addr)
        s->nremote++;
}

/* Closes the socket now; the session itself goes when no call is out. */
static void
session_close(struct session *s, const char *why)
{
    listener_t *l = s->l;
    intptr_t count;

    if (s->dead)
        return;
    s->dead = true;
    if (s->prev)
        s->prev->next = s->next;
    else
        l->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    conn_close(s->conn);
    /* A descriptor is free again: accepting resumes if it had paused. */
    net_acceptor_resume(l->acceptor);
    loop_timer_cancel(l->loop, &s->idle_timer);
    loop_timer_cancel(l->loop, &s->total_timer);
    count = (intptr_t)zhashx_lookup(l->per_ip, s->ip);
    if (count <= 1)
        zhashx_delete(l->per_ip, s->ip);
    else
        zhashx_update(l->per_ip, s->ip, (void *)(count - 1));
    l->sessions--;
    listener_metrics_session(s->role->name, -1);
    listener_metrics_engine(s->role->name, s->smtp);
    log_info(s->trace, "session_end", "role=%s ip=%s messages=%d why=%s",
             s->role->name, s->ip, s->messages, why);
    if (s->calls == 0)
        session_free(s);
}

static void
session_free(struct session *s)
{
    txn_clear(s);
    free(s->user);
    smtp_server_destroy(&s->smtp);
    conn_destroy(&s->conn);
    free(s);
}

/* Sends what the engine queued. Returns 1 when all of it went, 0 when the
 * socket is full, -1 when the connection is gone. */
static int
flush(struct session *s)
{
    size_t len;
    const char *out = smtp_server_output(s->smtp, &len);
    ssize_t n = conn_send(s->conn, out, len);

    if (n < 0)
        return -1;
    if (n > 0)
        smtp_server_output_done(s->smtp, (size_t)n);
    return (size_t)n == len;
}

static void on_io(loop_t *loop, int fd, int events, void *arg);

/* --- bus calls ---------------------------------------------------------- */

/* The deliveries of one message split over mailbox shards: the answer
 * waits for the last, and is 250 only when each was. */
struct fanout {
    int waiting;
    bool failed;
};

struct call {
    struct session *s;
    enum smtp_event_type what;
    struct fanout *fan; /* or NULL */
};

/* auth.verify may take its time on purpose: the auth actor delays each
 * failure (up to 5 s by default) against password guessing, and scrypt
 * runs on a small thread pool. */
#define AUTH_TIMEOUT_MS 15000

static envelope_t *
request(struct session *s, const char *type)
{
    int64_t timeout = strcmp(type, "auth.verify") == 0 &&
                              s->l->bus_timeout_ms < AUTH_TIMEOUT_MS
                          ? AUTH_TIMEOUT_MS
                          : s->l->bus_timeout_ms;
    envelope_t *env = envelope_new(type, s->trace, timeout);
    value_t *body = envelope_body(env);

    value_set_str(body, ENV_KEY_CLIENT_IP, s->ip);
    value_set_str(body, ENV_KEY_ROLE, s->role->name);
    if (s->user && strncmp(type, "guard.", 6) == 0)
        value_set_str(body, ENV_KEY_USER, s->user);
    return env;
}

static void on_reply(void *arg, int err, const char *text,
                     const envelope_t *reply);
static void answer(struct session *s, int code, const char *ecode,
                   const char *text);

/* Sends env to service (NULL: its type's), as one of fan's when fan is
 * not NULL; the engine's decision waits for the reply. */
static void
call_to(struct session *s, const char *service, envelope_t **env_p,
        enum smtp_event_type what, struct fanout *fan)
{
    struct call *c = xcalloc(1, sizeof(*c));

    c->s = s;
    c->what = what;
    c->fan = fan;
    s->calls++;
    if (bus_client_send_to_take(s->l->bus, service, env_p, on_reply, c) !=
        0) {
        s->calls--;
        free(c);
        /* Cannot happen with a type we built; answer like a dead bus. */
        on_reply(NULL, ERR_INVAL, "bad request", NULL);
        /* One shard's share not sent fails the message; when it was the
         * last one waited for, nobody else will answer it. */
        if (fan != NULL) {
            fan->failed = true;
            if (--fan->waiting == 0) {
                free(fan);
                answer(s, 451, "4.3.0", "temporary failure, try again later");
            }
        }
    }
}

static void
call(struct session *s, envelope_t **env_p, enum smtp_event_type what)
{
    call_to(s, NULL, env_p, what, NULL);
}

/* A reply text for the client: the other actor's, or ours on failure. */
static void
answer(struct session *s, int code, const char *ecode, const char *text)
{
    /* Codes come from other actors' replies: one the engine may not give
     * (none, 1xx, 3xx, out of range) is their mistake, answered as a
     * temporary failure rather than passed on (RFC 5321 4.2.1). */
    if (!smtp_server_reply_code_ok(s->smtp, code)) {
        log_warn(s->trace, "bad_reply_code", "code=%d", code);
        code = 451;
        ecode = "4.3.0";
        text = "temporary failure, try again later";
    }
    listener_metrics_answer(s->role->name, s->asked, code);
    smtp_server_reply(s->smtp, code, ecode, text);
}

static void
on_guard_rcpt(struct session *s, const envelope_t *reply)
{
    const value_t *boxes = value_get(envelope_body_peek(reply),
                                     ENV_KEY_MAILBOXES);
    const value_t *fwd = value_get(envelope_body_peek(reply), ENV_KEY_FORWARD);
    const char *rcpt = envelope_get_str(reply, ENV_KEY_RCPT);

    if (value_count(boxes) + value_count(fwd) == 0) {
        answer(s, 451, "4.3.0", "recipient resolves to nothing, try later");
        return;
    }
    if (rcpt == NULL)
        rcpt = "";
    for (size_t i = 0; i < value_count(boxes); i++) {
        const char *m = value_str(value_at(boxes, i), NULL);

        if (m)
            txn_add(s, m, NULL, rcpt);
    }
    for (size_t i = 0; i < value_count(fwd); i++) {
        const char *a = value_str(value_at(fwd, i), NULL);

        if (a)
            txn_add(s, NULL, a, rcpt);
    }
    s->nrcpts++;
    /* The header's length changes only from one recipient ("for <...>")
     * to more than one (received_header()): no need to build it again for
     * the third recipient and on. */
    if (s->nrcpts <= 2)
        message_room(s);
    answer(s, envelope_code(reply), envelope_get_str(reply, ENV_KEY_ECODE),
           envelope_get_str(reply, ENV_KEY_TEXT));
}

static void
on_delivered(struct session *s, const envelope_t *reply)
{
    char text[128];

    if (envelope_code(reply) == 250) {
        s->messages++;
        snprintf(text, sizeof(text), "Ok: queued as %s", s->trace);
        log_info(s->trace, "message_accepted", "targets=%d remote=%d "
                 "via=%s", s->ntargets, s->nremote,
                 envelope_get_str(reply, ENV_KEY_QUEUE_ID) ? "queue"
                                                            : "mailbox");
        answer(s, 250, "2.0.0", text);
        return;
    }
    /* Any copy that is not on disk makes the whole message a 4xx: the
     * client sends it again, and a mailbox may get it twice, but none
     * loses it (DESIGN.md: a 250 is a promise). */
    log_warn(s->trace, "delivery_failed", "code=%d text=%s",
             envelope_code(reply),
             log_q(envelope_get_str(reply, ENV_KEY_TEXT)
                       ? envelope_get_str(reply, ENV_KEY_TEXT)
                       : ""));
    snprintf(text, sizeof(text), "temporary failure, try again later %s",
             s->trace);
    answer(s, 451, "4.3.0", text);
}

static void
on_reply(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct call *c = arg;
    struct session *s = c ? c->s : NULL;
    bool shard_failed = false;
    char msg[200];

    if (s == NULL)
        return;
    s->calls--;
    if (c->fan != NULL) {
        bool ok = err == 0 && reply != NULL && envelope_code(reply) == 250;

        c->fan->failed |= !ok;
        if (--c->fan->waiting > 0) {
            free(c);
            if (s->dead && s->calls == 0)
                session_free(s);
            return;
        }
        /* The last shard's answer: it stands for all, unless another
         * one failed before it. */
        shard_failed = c->fan->failed && ok;
        free(c->fan);
        c->fan = NULL;
    }
    if (s->dead) {
        if (s->calls == 0)
            session_free(s);
        free(c);
        return;
    }
    if (shard_failed) {
        log_warn(s->trace, "delivery_failed", "code=451 text=%s",
                 log_q("a mailbox shard could not store its copies"));
        snprintf(msg, sizeof(msg), "temporary failure, try again later %s",
                 s->trace);
        answer(s, 451, "4.3.0", msg);
    } else if (err != 0 || reply == NULL) {
        log_warn(s->trace, "bus_call_failed", "decision=%d err=%s text=%s",
                 (int)c->what, err_name(err), log_q(text));
        if (c->what == SMTP_EV_CONNECT) {
            answer(s, 421, "4.3.0", "service temporarily unavailable");
        } else if (c->what == SMTP_EV_AUTH) {
            /* RFC 4954 6: 454 for a temporary failure. */
            answer(s, 454, "4.7.0", "temporary authentication failure");
        } else {
            snprintf(msg, sizeof(msg),
                     "temporary failure, try again later %s", s->trace);
            answer(s, 451, "4.3.0", msg);
        }
    } else if (envelope_code(reply) >= 400) {
        answer(s, envelope_code(reply),
               envelope_get_str(reply, ENV_KEY_ECODE),
               envelope_get_str(reply, ENV_KEY_TEXT));
    } else if (c->what == SMTP_EV_RCPT) {
        on_guard_rcpt(s, reply);
    } else if (c->what == SMTP_EV_MESSAGE) {
        on_delivered(s, reply);
    } else if (c->what == SMTP_EV_CONNECT) {
        answer(s, 220, NULL, "ESMTP Samotop");
    } else if (c->what == SMTP_EV_AUTH) {
        const char *user = envelope_get_str(reply, ENV_KEY_USER);

        if (envelope_code(reply) == 235 && user) {
            free(s->user);
            s->user = xstrdup(user);
            log_info(s->trace, "authenticated", "user=%s", log_q(user));
        }
        answer(s, envelope_code(reply),
               envelope_get_str(reply, ENV_KEY_ECODE),
               envelope_get_str(reply, ENV_KEY_TEXT));
    } else {
        answer(s, envelope_code(reply),
               envelope_get_str(reply, ENV_KEY_ECODE),
               envelope_get_str(reply, ENV_KEY_TEXT));
    }
    free(c);
    session_pump(s);
}

/* --- events ------------------------------------------------------------- */

/* RFC 5322 3.3 date-time, for the Received header. */
static void
rfc5322_date(char *out, size_t outlen)
{
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(out, outlen, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* Our Received header (RFC 5321 4.4), into b: from the EHLO name and the
 * client's address, by us, with the protocol keyword of RFC 3848, the
 * session's trace id as the id, the TLS parameters as a comment, "for"
 * only with one recipient (so that Bcc recipients stay hidden), and the
 * date (of a fixed length: the room kept for the header stays right). */
static void
received_header(struct session *s, buf_t *b)
{
    char date[64];
    const char *helo = smtp_server_helo(s->smtp);
    const tls_conn_t *tls = conn_tls(s->conn);

    rfc5322_date(date, sizeof(date));
    buf_printf(b, "Received: from %s ([%s])\r\n\tby %s (Samotop) with %s "
               "id %s", helo ? helo : "unknown", s->ip, s->l->hostname,
               smtp_server_with(s->smtp), s->trace);
    if (tls != NULL)
        buf_printf(b, "\r\n\t(version=%s cipher=%s bits=%d)",
                   tls_conn_version(tls), tls_conn_cipher(tls),
                   tls_conn_bits(tls));
    if (s->nrcpts == 1 && s->ntargets >= 1)
        buf_printf(b, "\r\n\tfor <%s>", s->targets[0].rcpt);
    buf_printf(b, ";\r\n\t%s\r\n", date);
}

/* Once the recipients are known (after each RCPT): the engine keeps room
 * for our Received header in front of the message it reads, and sizes
 * its buffer for the last message this listener received when MAIL gave
 * no SIZE= (a guess: wrong, the buffer only grows as it would have). */
static void
message_room(struct session *s)
{
    buf_t b = BUF_INIT;

    received_header(s, &b);
    smtp_server_message_room(s->smtp, b.len, s->l->last_message);
    buf_free(&b);
}

/* The message with our Received header on top, as one value: the header
 * goes into the room the engine kept in front of the message, whose buffer
 * the value takes as it is, so the message is not copied. Should the
 * header have come out another length, header and message are copied into
 * a buffer of the final size. */
static value_t *
message_with_received(struct session *s, const struct smtp_event *ev)
{
    buf_t b = BUF_INIT;
    size_t len = ev->message.len, got;
    void *bytes;

    received_header(s, &b);
    s->l->last_message = len;
    bytes = smtp_server_message_take(s->smtp, &got);
    if (bytes != NULL && got == b.len + len) {
        memcpy(bytes, b.data, b.len);
    } else {
        void *taken = bytes; /* ev->message.data points in */

        bytes = xmalloc(b.len + len);
        memcpy(bytes, b.data, b.len);
        if (len > 0)
            memcpy((char *)bytes + b.len, ev->message.data, len);
        free(taken);
    }
    len += b.len;
    buf_free(&b);
    return value_new_bin_take(&bytes, len);
}

static bool
has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] & 0x80)
            return true;
    return false;
}

static value_t *
notify_list(unsigned notify)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{SMTP_NOTIFY_NEVER, "NEVER"},
                 {SMTP_NOTIFY_SUCCESS, "SUCCESS"},
                 {SMTP_NOTIFY_FAILURE, "FAILURE"},
                 {SMTP_NOTIFY_DELAY, "DELAY"}};
    value_t *list = value_new_array();

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (notify & names[i].bit) {
            value_t *v = value_new_str(names[i].name);

            value_push_take(list, &v);
        }
    return list;
}

/* With mailbox.shards > 1 each mailbox.K owns the accounts lib/shard.h
 * places on it: one mailbox.deliver (*env_p, taken) per shard the
 * recipients fall on, and the 250 waits for all of them. A failure in any
 * is a 451 for the whole message, as a failed copy is: the client sends
 * it again, and a shard that stored it may get it twice, none loses it. */
static void
deliver_sharded(struct session *s, envelope_t **env_p)
{
    static const char *const keep[] = {ENV_KEY_MAIL_FROM, ENV_KEY_MESSAGE,
                                       ENV_KEY_ENVID, ENV_KEY_RET, NULL};
    const value_t *body = envelope_body_peek(*env_p);
    const value_t *rcpts = value_get(body, ENV_KEY_RCPTS);
    size_t nr = value_count(rcpts);
    int n = s->l->mailbox_shards, nused = 0, only = 0;
    int *of = xcalloc(nr ? nr : 1, sizeof(*of));
    bool *used = xcalloc((size_t)n, sizeof(*used));
    char service[64];
    struct fanout *f;

    for (size_t i = 0; i < nr; i++) {
        size_t len;
        const char *box = value_str(
            value_get(value_at(rcpts, i), ENV_KEY_MAILBOX), &len);

        of[i] = shard_of(box ? box : "", box ? len : 0, n);
        if (!used[of[i]]) {
            used[of[i]] = true;
            nused++;
            only = of[i];
        }
    }
    if (nused <= 1) {
        call_to(s, shard_service(service, sizeof(service), "mailbox", only, n),
                env_p, SMTP_EV_MESSAGE, NULL);
        goto out;
    }
    f = xcalloc(1, sizeof(*f));
    f->waiting = nused;
    for (int k = 0; k < n; k++) {
        envelope_t *e;
        value_t *sub;

        if (!used[k])
            continue;
        e = request(s, "mailbox.deliver");
        for (int i = 0; keep[i]; i++) {
            const value_t *v = value_get(body, keep[i]);
            value_t *d;

            if (v != NULL) {
                d = value_dup(v);
                value_set_take(envelope_body(e), keep[i], &d);
            }
        }
        sub = value_new_array();
        for (size_t i = 0; i < nr; i++) {
            value_t *d;

            if (of[i] != k)
                continue;
            d = value_dup(value_at(rcpts, i));
            value_push_take(sub, &d);
        }
        value_set_take(envelope_body(e), ENV_KEY_RCPTS, &sub);
        call_to(s, shard_service(service, sizeof(service), "mailbox", k, n),
                &e, SMTP_EV_MESSAGE, f);
    }
    envelope_destroy(env_p);
out:
    free(of);
    free(used);
}

/* The message goes to the mailbox at once when every target is a local
 * mailbox of an inbound (MTA) session; otherwise to the queue, which
 * stores it durably and delivers each target, local or remote, with
 * retries and bounces. Either way our 250 waits for that stage's. */
static void
on_message(struct session *s, const struct smtp_event *ev)
{
    bool queue = s->role->kind != ROLE_MTA || s->nremote > 0, eight_bit;
    envelope_t *env;
    value_t *body, *rcpts, *msg;

    if (s->ntargets == 0) {
        answer(s, 554, "5.5.1", "no valid recipients");
        return;
    }
    env = request(s, queue ? "queue.submit" : "mailbox.deliver");
    body = envelope_body(env);
    value_set_str(body, ENV_KEY_MAIL_FROM, s->mail_from ? s->mail_from : "");
    /* Before the engine's buffer is taken (message.data points in). */
    eight_bit = queue && (s->eight_bit ||
                          has_8bit(ev->message.data, ev->message.len));
    msg = message_with_received(s, ev);
    value_set_take(body, ENV_KEY_MESSAGE, &msg);
    rcpts = value_new_array();
    for (int i = 0; i < s->ntargets; i++) {
        const struct target *t = &s->targets[i];
        value_t *r = value_new_map();

        if (t->mailbox)
            value_set_str(r, ENV_KEY_MAILBOX, t->mailbox);
        else
            value_set_str(r, ENV_KEY_ADDR, t->addr);
        value_set_str(r, ENV_KEY_RCPT, t->rcpt);
        if (queue && t->notify) {
            value_t *n = notify_list(t->notify);

            value_set_take(r, ENV_KEY_NOTIFY, &n);
        }
        if (queue && t->orcpt)
            value_set_str(r, ENV_KEY_ORCPT, t->orcpt);
        value_push_take(rcpts, &r);
    }
    value_set_take(body, ENV_KEY_RCPTS, &rcpts);
    if (s->envid)
        value_set_str(body, ENV_KEY_ENVID, s->envid);
    if (s->ret != SMTP_RET_NONE)
        value_set_str(body, ENV_KEY_RET,
                      s->ret == SMTP_RET_FULL ? "FULL" : "HDRS");
    if (queue) {
        value_set_bool(body, ENV_KEY_EIGHT_BIT, eight_bit);
        value_set_bool(body, ENV_KEY_SMTPUTF8, s->smtputf8);
        value_set_str(body, ENV_KEY_CLIENT_IP, s->ip);
        if (s->user)
            value_set_str(body, ENV_KEY_USER, s->user);
    }
    if (queue || s->l->mailbox_shards <= 1)
        call(s, &env, SMTP_EV_MESSAGE);
    else
        deliver_sharded(s, &env);
}

/* Handles one event; returns false when the session must stop for now
 * (a bus call went out, or the session is over). */
static bool
on_event(struct session *s, const struct smtp_event *ev)
{
    envelope_t *env;
    value_t *body;

    s->asked = ev->type;
    switch (ev->type) {
    case SMTP_EV_CONNECT:
        env = request(s, "guard.connect");
        call(s, &env, SMTP_EV_CONNECT);
        return false;
    case SMTP_EV_HELO:
        return true;
    case SMTP_EV_MAIL:
        txn_clear(s);
        s->mail_from = xstrdup(ev->mail.from);
        s->envid = ev->mail.envid ? xstrdup(ev->mail.envid) : NULL;
        s->ret = ev->mail.ret;
        s->smtputf8 = ev->mail.smtputf8;
        s->eight_bit = ev->mail.body == SMTP_BODY_8BITMIME;
        env = request(s, "guard.mail");
        value_set_str(envelope_body(env), ENV_KEY_MAIL_FROM, ev->mail.from);
        if (smtp_server_helo(s->smtp))
            value_set_str(envelope_body(env), ENV_KEY_HELO,
                          smtp_server_helo(s->smtp));
        if (ev->mail.size_given) {
            s->size = (int64_t)ev->mail.size;
            value_set_int(envelope_body(env), ENV_KEY_SIZE, s->size);
        }
        call(s, &env, SMTP_EV_MAIL);
        return false;
    case SMTP_EV_RCPT:
        s->pending_notify = ev->rcpt.notify;
        free(s->pending_orcpt);
        s->pending_orcpt = ev->rcpt.orcpt ? xstrdup(ev->rcpt.orcpt) : NULL;
        env = request(s, "guard.rcpt");
        value_set_str(envelope_body(env), ENV_KEY_MAIL_FROM,
                      s->mail_from ? s->mail_from : "");
        value_set_str(envelope_body(env), ENV_KEY_RCPT, ev->rcpt.to);
        /* The guard weighs a declared size against the quota. */
        if (s->size >= 0)
            value_set_int(envelope_body(env), ENV_KEY_SIZE, s->size);
        call(s, &env, SMTP_EV_RCPT);
        return false;
    case SMTP_EV_MESSAGE:
        on_message(s, ev);
        return s->calls == 0;
    case SMTP_EV_AUTH:
        /* RFC 4954: the credentials go to the auth actor, never to a log
         * (the schema marks response and password secret, so the tap
         * masks them too). */
        env = request(s, "auth.verify");
        body = envelope_body(env);
        value_set_str(body, ENV_KEY_MECHANISM, ev->auth.mech);
        if (ev->auth.username) {
            value_set_str(body, ENV_KEY_USERNAME, ev->auth.username);
            value_set_str(body, ENV_KEY_PASSWORD,
                          ev->auth.password ? ev->auth.password : "");
        } else if (ev->auth.nresp > 0) {
            value_set_str(body, ENV_KEY_RESPONSE, ev->auth.resp[0]);
        }
        call(s, &env, SMTP_EV_AUTH);
        return false;
    case SMTP_EV_RESET:
        txn_clear(s);
        return true;
    case SMTP_EV_STARTTLS:
        s->starttls = true;
        free(s->user); /* RFC 3207 4.2: the session starts over */
        s->user = NULL;
        return false;
    case SMTP_EV_QUIT:
    case SMTP_EV_CLOSE:
        s->closing = true;
        return false;
    case SMTP_EV_NONE:
        break;
    }
    return false;
}

/* --- the pump ----------------------------------------------------------- */

/* Returns false when the session was closed (and may be freed). */
static bool
start_tls(struct session *s)
{
    if (conn_start_tls(s->conn, s->l->tls) != 0) {
        session_close(s, "tls_setup_failed");
        return false;
    }
    return true;
}

/* Runs the handshake; returns true once it is done. */
static bool
handshake(struct session *s)
{
    int rc = conn_handshake(s->conn);

    if (rc == TLS_WANT_READ || rc == TLS_WANT_WRITE)
        return false;
    if (rc != 0) {
        session_close(s, "tls_failed");
        return false;
    }
    if (s->starttls) {
        s->starttls = false;
        smtp_server_tls_started(s->smtp);
    }
    return true;
}

static void
session_pump(struct session *s)
{
    bool idle = false; /* nothing more to do until input or a reply */

    for (int rounds = 0; rounds < 64 && !s->dead; rounds++) {
        const struct smtp_event *ev;
        bool progress = false;
        int fl;

        if (conn_tls_state(s->conn) == CONN_HANDSHAKE && !handshake(s))
            return;
        if (conn_in_pending(s->conn) > 0 && !s->starttls) {
            size_t len;
            const char *in = conn_in(s->conn, &len);
            size_t took = smtp_server_input(s->smtp, in, len);

            conn_in_took(s->conn, took);
            progress = took > 0;
        }
        while (s->calls == 0 && !s->dead) {
            ev = smtp_server_next(s->smtp);
            if (ev->type == SMTP_EV_NONE)
                break;
            progress = true;
            if (!on_event(s, ev))
                break;
        }
        fl = flush(s);
        if (fl < 0) {
            session_close(s, "write_failed");
            return;
        }
        if (fl == 0) {
            conn_watch(s->conn, LOOP_WRITE);
            return;
        }
        if (s->closing) {
            session_close(s, "done");
            return;
        }
        if (s->starttls && conn_tls_state(s->conn) == CONN_PLAIN) {
            /* Everything read after the STARTTLS line is dropped: it was
             * sent in the clear and must never be executed (RFC 3207 5). */
            conn_in_drop(s->conn);
            if (!start_tls(s))
                return;
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
        /* What the client sent before it stopped is all answered: done. */
        if (s->calls == 0 && idle) {
            session_close(s, "client_closed");
            return;
        }
        /* A reply is awaited, or the rounds ran out: no more reading;
         * back when the reply comes, or when the socket takes output (at
         * once) to go on. */
        conn_watch(s->conn, s->calls == 0 ? LOOP_WRITE : 0);
        return;
    }
    /* A client that stopped sending (it waits for replies, or idles) needs
     * no buffer: thousands of idle sessions then hold none. */
    conn_in_trim(s->conn);
    /* Read while the session's input has room, bus call or not: the
     * engine keeps what comes meanwhile (pipelining) and takes less when
     * its buffer is full, which is the back-pressure that stops reading.
     * So the watch stays as it is through the message, and epoll_ctl()
     * is called only when back-pressure starts or ends. A TLS connection
     * may hold decrypted bytes that epoll cannot see. */
    conn_watch(s->conn, conn_in_full(s->conn) ? 0 : LOOP_READ);
    if (conn_tls_pending(s->conn) && s->calls == 0 &&
        !conn_in_full(s->conn))
        on_io(s->l->loop, conn_fd(s->conn), LOOP_READ, s);
}

static void
on_io(loop_t *loop, int fd, int events, void *arg)
{
    struct session *s = arg;

    (void)loop;
    (void)fd;
    if (conn_tls_state(s->conn) == CONN_HANDSHAKE) {
        session_pump(s);
        return;
    }
    if ((events & LOOP_READ) && !conn_eof(s->conn)) {
        /* After STARTTLS and before the handshake, what comes is dropped.
         * At the end the client is done sending, maybe only half-closed
         * and waiting for replies: what it sent is answered first, then
         * the session closes (session_pump). */
        ssize_t n = conn_fill(s->conn, s->starttls);

        if (n < 0) {
            session_close(s, "read_failed");
            return;
        }
        if (n > 0) {
            listener_metrics_bytes(s->role->name, (size_t)n);
            s->last_active = loop_now_ms(s->l->loop);
        }
    }
    session_pump(s);
}

/* --- timers ------------------------------------------------------------- */

static void
on_idle(loop_t *loop, void *arg)
{
    struct session *s = arg;
    int64_t left = s->last_active + s->l->idle_ms - loop_now_ms(loop);

    s->idle_timer = NULL;
    if (left > 0) {
        s->idle_timer = loop_timer_add(loop, left, on_idle, s);
        return;
    }
    log_info(s->trace, "idle_timeout", "ip=%s", s->ip);
    /* RFC 5321 4.5.3.2.7: the server may close an idle session; it says
     * 421 first (3.8). */
    /* A bus call still out is dropped by the engine; its reply finds the
     * session dead, since this function ends with it closed. */
    smtp_server_close(s->smtp, "4.4.2", "idle timeout, closing");
    /* Not session_pump(): it may close and free the session itself. The
     * 421 goes out if the socket takes it at once; the close follows. */
    flush(s);
    session_close(s, "idle_timeout");
}

static void
on_total(loop_t *loop, void *arg)
{
    struct session *s = arg;

    (void)loop;
    s->total_timer = NULL;
    log_info(s->trace, "session_timeout", "ip=%s", s->ip);
    smtp_server_close(s->smtp, "4.4.2", "session too long, closing");
    flush(s);
    session_close(s, "session_timeout");
}

void
listener_session_start(listener_t *l, struct role *role, int fd,
                       const char *ip)
{
    struct session *s = xcalloc(1, sizeof(*s));
    intptr_t count = (intptr_t)zhashx_lookup(l->per_ip, ip);

    s->l = l;
    s->role = role;
    s->size = -1;
    snprintf(s->ip, sizeof(s->ip), "%s", ip);
    envelope_new_trace(s->trace);
    s->smtp = smtp_server_new(&role->opts);
    s->last_active = loop_now_ms(l->loop);
    s->conn = conn_new(l->loop, fd, s->trace, s->ip, on_io, s);
    if (s->conn == NULL) {
        smtp_server_destroy(&s->smtp);
        free(s);
        return;
    }
    s->next = l->head;
    if (l->head)
        l->head->prev = s;
    l->head = s;
    zhashx_update(l->per_ip, ip, (void *)(count + 1));
    l->sessions++;
    listener_metrics_session(role->name, 1);
    s->idle_timer = loop_timer_add(l->loop, l->idle_ms, on_idle, s);
    s->total_timer = loop_timer_add(l->loop, l->session_ms, on_total, s);
    log_info(s->trace, "session_start", "role=%s ip=%s sessions=%d",
             role->name, ip, l->sessions);
    /* Implicit TLS (RFC 8314): the handshake first, then the greeting. */
    if (role->kind == ROLE_SMTPS && !start_tls(s))
        return;
    session_pump(s);
}

void
listener_sessions_close_all(listener_t *l)
{
    while (l->head) {
        struct session *s = l->head;

        smtp_server_close(s->smtp, "4.3.2", "shutting down");
        flush(s);
        session_close(s, "shutdown");
    }
}
