/*
 * queue_submit.c - queue.submit: a message made durable in Redis, then 250.
 *
 * The envelope, the body, the recipients and the due entry go in one
 * MULTI/EXEC, pipelined on the one connection. Only EXEC's reply says the
 * message is there (with appendfsync always, on disk), so only it can
 * earn the 250; anything else (Redis away, an error reply, a timeout, the
 * request's deadline coming first) is 451 4.3.0 and the client retries.
 * A job answered at its deadline stays until its last Redis callback.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "queue.h"

/* The answer at the deadline goes out this long before it, so that it
 * arrives while the caller still listens. */
#define SUBMIT_DEADLINE_MARGIN_MS 100
/* RFC 3461 4.4: an ENVID is at most 100 characters. */
#define ENVID_MAX 100

struct submit {
    queue_t *q;
    bus_request_t *req;
    char id[QUEUE_ID_MAX];
    char trace[ENVELOPE_MAX_NAME + 1];
    size_t size, nrcpts;
    int holds;
    bool failed, exec_ok, answered;
    loop_timer_t *deadline;
};

/* Whether s (len bytes) is free of control characters and not too long:
 * it ends up in DSN header fields and in other servers' commands. */
static bool
clean(const char *s, size_t len, size_t max)
{
    if (len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static bool
str_ok(const value_t *v, size_t max, bool need, bool nonempty)
{
    const char *s;
    size_t len;

    if (v == NULL)
        return !need;
    if (value_kind(v) != VAL_STR)
        return false;
    s = value_str(v, &len);
    return clean(s, len, max) && (!nonempty || len > 0);
}

/* NOTIFY: known words, NEVER alone. */
static bool
notify_ok(const value_t *v)
{
    bool never = false;
    size_t n;

    if (v == NULL)
        return true;
    if (value_kind(v) != VAL_ARRAY || (n = value_count(v)) == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        const value_t *w = value_at(v, i);
        const char *s = value_kind(w) == VAL_STR ? value_str(w, NULL) : "";
        unsigned bit = queue_notify_parse(s);

        if (bit == 0 || strchr(s, ',') != NULL)
            return false;
        never |= bit == QUEUE_NOTIFY_NEVER;
    }
    return !never || n == 1;
}

/* What the decoder cannot check: the rcpts items and the strings that go
 * into DSNs and into other servers' commands. NULL when the request is
 * good, else the reason. */
static const char *
request_check(const value_t *body)
{
    const value_t *rcpts = value_get(body, ENV_KEY_RCPTS), *ret;
    size_t n = value_count(rcpts);

    if (!str_ok(value_get(body, ENV_KEY_MAIL_FROM), QUEUE_MAX_ADDR, true,
                false))
        return "mail_from is too long or holds control characters";
    if (!str_ok(value_get(body, ENV_KEY_ENVID), ENVID_MAX, false, false))
        return "envid is too long or holds control characters";
    ret = value_get(body, ENV_KEY_RET);
    if (ret && (value_kind(ret) != VAL_STR ||
                (strcmp(value_str(ret, NULL), "FULL") != 0 &&
                 strcmp(value_str(ret, NULL), "HDRS") != 0)))
        return "ret is neither FULL nor HDRS";
    if (!str_ok(value_get(body, ENV_KEY_USER), QUEUE_MAX_ADDR, false, false) ||
        !str_ok(value_get(body, ENV_KEY_CLIENT_IP), 64, false, false))
        return "user or client_ip is not a clean string";
    if (n == 0)
        return "rcpts is empty";
    if (n > QUEUE_MAX_RCPTS)
        return "too many recipients";
    for (size_t i = 0; i < n; i++) {
        const value_t *item = value_at(rcpts, i);
        const value_t *mb, *addr;

        if (value_kind(item) != VAL_MAP)
            return "rcpts item is not a map";
        mb = value_get(item, ENV_KEY_MAILBOX);
        addr = value_get(item, ENV_KEY_ADDR);
        if ((mb == NULL) == (addr == NULL))
            return "rcpts item needs one of mailbox and addr";
        if (!str_ok(mb ? mb : addr, QUEUE_MAX_ADDR, true, true))
            return "rcpts item's address is not a clean string";
        if (strchr(value_str(mb ? mb : addr, NULL), '@') == NULL)
            return "rcpts item's address has no domain";
        if (!str_ok(value_get(item, ENV_KEY_RCPT), QUEUE_MAX_ADDR, false,
                    false) ||
            !str_ok(value_get(item, ENV_KEY_ORCPT), QUEUE_MAX_ADDR, false,
                    false))
            return "rcpts item's rcpt or orcpt is not a clean string";
        if (!notify_ok(value_get(item, ENV_KEY_NOTIFY)))
            return "rcpts item's notify is not a valid NOTIFY list";
    }
    return NULL;
}

static char *
get_dup(const value_t *map, const char *key)
{
    const char *s = value_get_str(map, key);

    return s && *s ? xstrdup(s) : NULL;
}

/* The message of the request, its body borrowed from the request. */
static void
msg_from_request(const queue_t *q, const envelope_t *env, struct queue_msg *m,
                 int64_t now)
{
    const value_t *body = envelope_body_peek(env);
    const value_t *rcpts = value_get(body, ENV_KEY_RCPTS);

    memset(m, 0, sizeof(*m));
    queue_msg_new_id(m->id);
    m->mail_from = xstrdup(value_get_str(body, ENV_KEY_MAIL_FROM));
    m->envid = get_dup(body, ENV_KEY_ENVID);
    m->ret = get_dup(body, ENV_KEY_RET);
    m->user = get_dup(body, ENV_KEY_USER);
    m->client_ip = get_dup(body, ENV_KEY_CLIENT_IP);
    m->trace = xstrdup(envelope_trace(env));
    m->eight_bit = value_get_bool(body, ENV_KEY_EIGHT_BIT, false);
    m->smtputf8 = value_get_bool(body, ENV_KEY_SMTPUTF8, false);
    m->created_ms = now;
    m->expires_ms = now + (int64_t)q->conf.lifetime_s * 1000;
    m->body = (char *)value_str(value_get(body, ENV_KEY_MESSAGE), &m->body_len);
    m->nrcpts = value_count(rcpts);
    m->rcpts = xcalloc(m->nrcpts, sizeof(*m->rcpts));
    for (size_t i = 0; i < m->nrcpts; i++) {
        const value_t *item = value_at(rcpts, i);
        const value_t *notify = value_get(item, ENV_KEY_NOTIFY);
        struct queue_rcpt *r = &m->rcpts[i];
        const char *mb = value_get_str(item, ENV_KEY_MAILBOX);

        r->local = mb != NULL;
        r->to = xstrdup(mb ? mb : value_get_str(item, ENV_KEY_ADDR));
        r->rcpt = get_dup(item, ENV_KEY_RCPT);
        r->orcpt = get_dup(item, ENV_KEY_ORCPT);
        r->notify = QUEUE_NOTIFY_DEFAULT;
        if (notify) {
            r->notify = 0;
            for (size_t k = 0; k < value_count(notify); k++)
                r->notify |=
                    queue_notify_parse(value_str(value_at(notify, k), NULL));
            r->notify_given = true;
        }
        r->status = QUEUE_PENDING;
        r->next_ms = now;
    }
}

static void
submit_free(struct submit *s)
{
    queue_t *q = s->q;

    loop_timer_cancel(actor_loop(q->a), &s->deadline);
    if (s->req)
        bus_request_destroy(&s->req);
    free(s);
    q->submits--;
    queue_maybe_free(q);
}

static void
answer(struct submit *s, int code, const char *ecode, const char *text, int err)
{
    envelope_t *reply;

    if (s->answered)
        return;
    s->answered = true;
    loop_timer_cancel(actor_loop(s->q->a), &s->deadline);
    reply = envelope_new_reply(bus_request_envelope(s->req), code, ecode, text);
    if (code < 400)
        value_set_str(envelope_body(reply), ENV_KEY_QUEUE_ID, s->id);
    else
        value_set_str(envelope_body(reply), ENV_KEY_ERROR, err_name(err));
    actor_reply(s->q->a, &s->req, &reply);
}

static void
on_deadline(loop_t *loop, void *arg)
{
    struct submit *s = arg;

    (void)loop;
    s->deadline = NULL;
    log_warn(s->trace, "queue_submit_deadline", "id=%s waiting=%d", s->id,
             s->holds);
    /* XXX: EXEC may still succeed after this 451, and the client's retry
     * then queues the message twice: a duplicate rather than a loss. */
    answer(s, 451, "4.3.0", "queue store unavailable, try again later",
           ERR_TIMEOUT);
}

static void
release(struct submit *s)
{
    char text[96];

    if (--s->holds > 0)
        return;
    if (!s->answered) {
        if (s->exec_ok && !s->failed) {
            s->q->submitted++;
            log_info(s->trace, "queue_submit", "id=%s rcpts=%zu size=%zu",
                     s->id, s->nrcpts, s->size);
            snprintf(text, sizeof(text), "queued as %s", s->id);
            answer(s, 250, "2.0.0", text, 0);
            queue_kick(s->q);
        } else {
            log_warn(s->trace, "queue_submit_failed", "id=%s", s->id);
            answer(s, 451, "4.3.0", "queue store unavailable, try again later",
                   ERR_REDIS);
        }
    } else if (s->exec_ok && !s->failed) {
        log_warn(s->trace, "queue_submit_late",
                 "id=%s reason=\"stored after the 451 at the deadline\"",
                 s->id);
        queue_kick(s->q);
    }
    submit_free(s);
}

static void
on_reply(void *arg, int err, const store_reply_t *r)
{
    struct submit *s = arg;

    if (err != 0) {
        s->failed = true;
    } else if (store_reply_type(r) == STORE_ERROR) {
        log_warn(s->trace, "queue_redis_error", "id=%s reply=%s", s->id,
                 log_q(store_reply_str(r, NULL)));
        s->failed = true;
    } else if (store_reply_type(r) == STORE_ARRAY) {
        /* EXEC's: one reply per queued command, none an error. */
        s->exec_ok = true;
        for (size_t i = 0; i < store_reply_count(r); i++)
            if (store_reply_type(store_reply_at(r, i)) == STORE_ERROR)
                s->exec_ok = false;
    }
    release(s);
}

static bool
send1(struct submit *s, int argc, const char *const *argv, const size_t *lens)
{
    if (s->failed)
        return false;
    s->holds++;
    if (queue_cmd(s->q, on_reply, s, argc, argv, lens) != 0) {
        s->holds--;
        s->failed = true;
        return false;
    }
    return true;
}

void
queue_on_submit(actor_t *a, bus_request_t **req_p)
{
    queue_t *q = actor_data(a);
    const envelope_t *env = bus_request_envelope(*req_p);
    const char *why = request_check(envelope_body_peek(env));
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"},
               *discard[] = {"DISCARD"};
    struct queue_argv args;
    struct queue_msg m;
    struct submit *s;
    int64_t now = queue_now_ms(), left_ms;

    if (why != NULL) {
        log_warn(envelope_trace(env), "queue_bad_request", "from=%s reason=%s",
                 log_q(envelope_from(env)), log_q(why));
        actor_fail(a, req_p, 501, "5.5.4", why);
        return;
    }
    s = xcalloc(1, sizeof(*s));
    s->q = q;
    s->req = *req_p;
    *req_p = NULL;
    q->submits++;
    snprintf(s->trace, sizeof(s->trace), "%s", envelope_trace(env));
    msg_from_request(q, env, &m, now);
    snprintf(s->id, sizeof(s->id), "%s", m.id);
    s->size = m.body_len;
    s->nrcpts = m.nrcpts;
    left_ms = (envelope_deadline(env) - clock_wall_us()) / 1000 -
              SUBMIT_DEADLINE_MARGIN_MS;
    s->deadline = loop_timer_add(actor_loop(a), left_ms > 0 ? left_ms : 0,
                                 on_deadline, s);

    queue_argv_init(&args);
    queue_msg_write(&args, &m, now);
    /* hiredis copies each command as it is sent, so the request (and the
     * body borrowed from it) need not outlive this call. */
    s->holds++;
    if (send1(s, 1, multi, NULL)) {
        for (int i = 0; i < args.n && !s->failed;) {
            int n = atoi(args.v[i]);

            send1(s, n, (const char *const *)args.v + i + 1, args.lens + i + 1);
            i += n + 1;
        }
        /* A MULTI left open would swallow other jobs' commands. */
        if (!s->failed)
            send1(s, 1, exec, NULL);
        else if (queue_cmd(q, on_reply, s, 1, discard, NULL) == 0)
            s->holds++;
    }
    queue_argv_free(&args);
    m.body = NULL; /* the request's */
    queue_msg_clear(&m);
    release(s);
}
