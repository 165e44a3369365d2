/*
 * mailbox_lmtp.c - the LMTP door (RFC 2033): the listening socket, the
 * sessions, and what their events turn into.
 *
 * session_pump() is the heart, as in the listener: it feeds what was read
 * into the engine, handles events until one waits for something (a
 * guard.rcpt call on the bus, or the group commit of a message), sends
 * what the engine queued, and decides whether to read, write or close.
 * At most one thing is awaited per session, which keeps the pipelined
 * replies in order (RFC 2920; RFC 2033 4.1 requires PIPELINING).
 *
 * A recipient the guard accepts may stand for several mailboxes and remote
 * addresses (an alias); its one LMTP reply after the data says 250 only
 * when every one of its copies is safe (RFC 2033 4.2: the reply is about
 * that recipient): on disk here through the group commit, on disk at the
 * mailbox process that owns the account (mailbox.shards > 1, over the
 * bus), or in the queue for a remote address.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/config.h"
#include "lib/conn.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/shard.h"
#include "lib/smtp_server.h"
#include "lib/xalloc.h"

#include "mailbox.h"
#include "mailbox_lmtp.h"

/* A copy another shard stored (or not): its reply's words, for r[]. */
struct copy_text {
    char ecode[12];
    char text[96];
};

/* One recipient the guard accepted: where its copies go, local
 * mailboxes and (an alias's) remote addresses, the latter by the queue. */
struct lrcpt {
    char *rcpt; /* as the guard normalised it */
    char **boxes;
    bool *remote; /* boxes[i] is a remote address */
    int nboxes;
};

struct lsess {
    struct lsess *prev, *next; /* the door's list of live sessions */
    mblmtp_t *lm;
    char ip[64];
    char trace[ENVELOPE_TRACE_LEN];
    smtp_server_t *smtp;
    conn_t *conn; /* the socket and what was read from it (lib/conn.h) */
    bool closing; /* close once the output is out */
    bool dead;    /* socket closed; freed when no call is outstanding */
    int calls;    /* bus calls outstanding: a guard.rcpt, or the stores */
    struct parked *parked; /* the message waiting for its commit */
    int64_t last_active;
    loop_timer_t *idle_timer;
    /* The transaction. */
    char *mail_from;
    bool eight_bit, smtputf8; /* MAIL's BODY=8BITMIME, SMTPUTF8 */
    struct lrcpt *rcpts;
    int nrcpts;
    /* The copies of the message being stored, recipient after recipient
     * (rcpts[i]'s nboxes copies in a row), with their outcomes; those of
     * accounts this process owns also in local[] (lmap: their index in
     * r[]), the others' outcome texts in out[] (mailbox.deliver replies). */
    struct maildir_rcpt *r, *local;
    struct copy_text *out;
    size_t nr, nlocal, *lmap;
    int waiting;     /* stores still out: the local commit, one per shard */
    bool local_done; /* the local commit answered (maybe inside park) */
    int messages;
};

struct mblmtp {
    struct mailbox *mb;
    loop_t *loop;
    net_acceptor_t *acceptor; /* the door's socket and accept loop */
    char addr[300];
    char hostname[256];
    struct smtp_server_opts opts;
    struct lsess *head;
    int sessions, max_sessions;
    int64_t idle_ms, bus_timeout_ms;
    uint64_t accepted, refused;
};

static void session_pump(struct lsess *s);
static void session_free(struct lsess *s);

/* Items of an optional array of a reply body (absent: none). */
static size_t
count(const value_t *v)
{
    return v ? value_count(v) : 0;
}

/* An optional string of a reply body, or NULL. */
static const char *
opt_str(const value_t *map, const char *key)
{
    const value_t *v = value_get(map, key);

    return v ? value_str(v, NULL) : NULL;
}

static void
txn_clear(struct lsess *s)
{
    for (int i = 0; i < s->nrcpts; i++) {
        free(s->rcpts[i].rcpt);
        for (int k = 0; k < s->rcpts[i].nboxes; k++)
            free(s->rcpts[i].boxes[k]);
        free(s->rcpts[i].boxes);
        free(s->rcpts[i].remote);
    }
    free(s->rcpts);
    s->rcpts = NULL;
    s->nrcpts = 0;
    free(s->r);
    free(s->local);
    free(s->out);
    free(s->lmap);
    s->r = s->local = NULL;
    s->out = NULL;
    s->lmap = NULL;
    s->nr = s->nlocal = 0;
    free(s->mail_from);
    s->mail_from = NULL;
}

/* Closes the socket now; the session itself goes when no call is out. A
 * message waiting for its commit is stored first: it borrows the engine's
 * buffer. */
static void
session_close(struct lsess *s, const char *why)
{
    mblmtp_t *lm = s->lm;

    if (s->dead)
        return;
    s->dead = true;
    if (s->prev)
        s->prev->next = s->next;
    else
        lm->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    mailbox_deliver_cancel(lm->mb, &s->parked);
    conn_close(s->conn);
    /* A descriptor is free again: accepting resumes if it had paused. */
    net_acceptor_resume(lm->acceptor);
    loop_timer_cancel(lm->loop, &s->idle_timer);
    lm->sessions--;
    log_info(s->trace, "lmtp_session_end", "ip=%s messages=%d why=%s", s->ip,
             s->messages, why);
    if (s->calls == 0)
        session_free(s);
}

static void
session_free(struct lsess *s)
{
    txn_clear(s);
    smtp_server_destroy(&s->smtp);
    conn_destroy(&s->conn);
    free(s);
}

/* Sends what the engine queued. Returns 1 when all of it went, 0 when the
 * socket is full, -1 when the connection is gone. */
static int
flush(struct lsess *s)
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

/* --- RCPT: the guard says whether the recipient is ours ----------------- */

static void
on_guard_rcpt(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct lsess *s = arg;
    const value_t *boxes, *fwd;
    const char *rcpt;
    struct lrcpt *lr;
    char msg[128];
    size_t n;

    s->calls--;
    if (s->dead) {
        if (s->calls == 0)
            session_free(s);
        return;
    }
    if (err != 0 || reply == NULL) {
        log_warn(s->trace, "bus_call_failed", "type=guard.rcpt err=%s text=%s",
                 err_name(err), log_q(text));
        snprintf(msg, sizeof(msg), "temporary failure, try again later %s",
                 s->trace);
        smtp_server_reply(s->smtp, 451, "4.3.0", msg);
        goto out;
    }
    if (!smtp_server_reply_code_ok(s->smtp, envelope_code(reply))) {
        log_warn(s->trace, "bad_reply", "type=guard.rcpt.reply code=%d",
                 envelope_code(reply));
        smtp_server_reply(s->smtp, 451, "4.3.0",
                          "temporary failure, try again later");
        goto out;
    }
    if (envelope_code(reply) >= 400) {
        /* 550 5.1.1 no such user, 451 4.3.0 store down, ...: as said. */
        smtp_server_reply(s->smtp, envelope_code(reply),
                          envelope_get_str(reply, ENV_KEY_ECODE),
                          envelope_get_str(reply, ENV_KEY_TEXT));
        goto out;
    }
    boxes = value_get(envelope_body_peek(reply), ENV_KEY_MAILBOXES);
    fwd = value_get(envelope_body_peek(reply), ENV_KEY_FORWARD);
    rcpt = envelope_get_str(reply, ENV_KEY_RCPT);
    if (count(boxes) + count(fwd) == 0) {
        smtp_server_reply(s->smtp, 451, "4.3.0",
                          "recipient resolves to nothing, try later");
        goto out;
    }
    s->rcpts = xrealloc(s->rcpts, sizeof(*s->rcpts) * (size_t)(s->nrcpts + 1));
    lr = &s->rcpts[s->nrcpts++];
    lr->rcpt = xstrdup(rcpt ? rcpt : "");
    n = count(boxes) + count(fwd);
    lr->boxes = xcalloc(n, sizeof(*lr->boxes));
    lr->remote = xcalloc(n, sizeof(*lr->remote));
    lr->nboxes = 0;
    for (size_t i = 0; i < n; i++) {
        bool remote = i >= count(boxes);
        const char *m = value_str(
            value_at(remote ? fwd : boxes, remote ? i - count(boxes) : i),
            NULL);

        if (m) {
            lr->remote[lr->nboxes] = remote;
            lr->boxes[lr->nboxes++] = xstrdup(m);
        }
    }
    if (lr->nboxes == 0) {
        /* Only items that are not strings: as good as none. */
        free(lr->rcpt);
        free(lr->boxes);
        free(lr->remote);
        s->nrcpts--;
        smtp_server_reply(s->smtp, 451, "4.3.0",
                          "recipient resolves to nothing, try later");
        goto out;
    }
    smtp_server_reply(s->smtp, envelope_code(reply),
                      envelope_get_str(reply, ENV_KEY_ECODE),
                      envelope_get_str(reply, ENV_KEY_TEXT));
out:
    session_pump(s);
}

static void
ask_guard(struct lsess *s, const struct smtp_event *ev)
{
    envelope_t *env =
        envelope_new("guard.rcpt", s->trace, s->lm->bus_timeout_ms);
    value_t *body = envelope_body(env);

    /* Not a listener role: the guard treats it as inbound, so only our
     * own accounts and aliases pass (no relaying). */
    value_set_str(body, ENV_KEY_CLIENT_IP, s->ip);
    value_set_str(body, ENV_KEY_ROLE, "lmtp");
    value_set_str(body, ENV_KEY_MAIL_FROM, s->mail_from ? s->mail_from : "");
    value_set_str(body, ENV_KEY_RCPT, ev->rcpt.to);
    s->calls++;
    if (bus_client_send_take(actor_client(s->lm->mb->actor), &env,
                             on_guard_rcpt, s) != 0) {
        s->calls--;
        envelope_destroy(&env);
        smtp_server_reply(s->smtp, 451, "4.3.0",
                          "temporary failure, try again later");
    }
}

/* --- the message: stored through the mailbox's group commit ------------ */

/* RFC 5322 3.3 date-time, for the Received header. */
static void
rfc5322_date(char *out, size_t outlen)
{
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(out, outlen, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* Our Received line (RFC 5321 4.4): the LHLO name and the client's
 * address, the RFC 3848 keyword (LMTP), the trace id as the id, "for" only
 * with one recipient (Bcc stays hidden), and the date. The Return-Path
 * goes above it where the copy is stored (mailbox_on_deliver() does the
 * same for another shard's copies). */
static char *
received_line(struct lsess *s)
{
    const char *helo = smtp_server_helo(s->smtp);
    buf_t b = BUF_INIT;
    char date[64];

    rfc5322_date(date, sizeof(date));
    buf_printf(&b,
               "Received: from %s ([%s])\r\n\tby %s (Samotop) with %s "
               "id %s",
               helo ? helo : "unknown", s->ip, s->lm->hostname,
               smtp_server_with(s->smtp), s->trace);
    if (s->nrcpts == 1)
        buf_printf(&b, "\r\n\tfor <%s>", s->rcpts[0].rcpt);
    buf_printf(&b, ";\r\n\t%s\r\n", date);
    return buf_take(&b);
}

/* The worst of a recipient's copies: a 4xx (the client keeps the message
 * and tries again) before a 5xx, and 250 only when all are stored. */
static const struct maildir_rcpt *
worst(const struct maildir_rcpt *r, int n)
{
    const struct maildir_rcpt *w = &r[0];

    for (int i = 1; i < n; i++) {
        int c = r[i].code / 100, wc = w->code / 100;

        if (c == 4 ? wc != 4 : c == 5 && wc == 2)
            w = &r[i];
    }
    return w;
}

/* Every copy's outcome is in: one reply per recipient (RFC 2033 4.2).
 * pump: called from a callback, so the session runs on from here (not
 * from inside session_pump(), which would then run twice). */
static void
answer_rcpts(struct lsess *s, bool pump)
{
    size_t k = 0;
    int ok = 0;
    char text[200];

    for (int i = 0; i < s->nrcpts; i++) {
        const struct lrcpt *lr = &s->rcpts[i];
        const struct maildir_rcpt *w = worst(s->r + k, lr->nboxes);

        k += (size_t)lr->nboxes;
        if (w->code == 250) {
            ok++;
            snprintf(text, sizeof(text), "<%s> stored as %s", lr->rcpt,
                     s->trace);
            smtp_server_reply_rcpt(s->smtp, i, 250, "2.0.0", text);
        } else {
            snprintf(text, sizeof(text), "<%s> %s", lr->rcpt, w->text);
            smtp_server_reply_rcpt(s->smtp, i, w->code, w->ecode, text);
        }
    }
    s->messages++;
    log_info(s->trace, "lmtp_message",
             "rcpts=%d stored=%d copies=%zu "
             "local=%zu",
             s->nrcpts, ok, s->nr, s->nlocal);
    if (pump)
        session_pump(s);
}

static void
on_stored(struct mailbox *mb, void *arg, const struct maildir_rcpt *r, size_t n)
{
    struct lsess *s = arg;

    (void)mb;
    s->parked = NULL;
    s->local_done = true;
    for (size_t j = 0; j < n; j++) {
        struct maildir_rcpt *to = &s->r[s->lmap[j]];

        to->code = r[j].code;
        to->ecode = r[j].ecode;
        to->text = r[j].text;
    }
    /* Inside mailbox_deliver_park() (a full batch is stored at once),
     * on_message() still holds its share of the count. */
    if (--s->waiting == 0)
        answer_rcpts(s, true);
}

/* A mailbox.deliver to another shard, or the queue.submit of the remote
 * addresses: its copies' indexes in r[]. */
struct shard_call {
    struct lsess *s;
    const char *type;
    size_t *idx;
    size_t n;
};

static void
shard_outcome(struct lsess *s, size_t k, int code, const char *ecode,
              const char *text)
{
    struct copy_text *t = &s->out[k];

    if (code < 200 || code > 599 || code / 100 == 3) {
        /* Not a reply the engine may give: another actor's mistake. */
        code = 451;
        ecode = "4.3.0";
    }
    snprintf(t->ecode, sizeof(t->ecode), "%s", ecode ? ecode : "");
    snprintf(t->text, sizeof(t->text), "%s", text ? text : "not stored");
    s->r[k].code = code;
    s->r[k].ecode = t->ecode;
    s->r[k].text = t->text;
}

static void
on_shard_stored(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct shard_call *c = arg;
    struct lsess *s = c->s;
    const value_t *results = NULL;

    s->calls--;
    if (s->dead) {
        if (s->calls == 0)
            session_free(s);
        goto out;
    }
    if (reply != NULL)
        results = value_get(envelope_body_peek(reply), ENV_KEY_RESULTS);
    if (err != 0 || reply == NULL)
        log_warn(s->trace, "bus_call_failed", "type=%s err=%s text=%s", c->type,
                 err_name(err), log_q(text));
    for (size_t i = 0; i < c->n; i++) {
        const value_t *item =
            count(results) == c->n ? value_at(results, i) : NULL;

        if (item != NULL)
            shard_outcome(
                s, c->idx[i], (int)value_get_int(item, ENV_KEY_CODE, 451),
                opt_str(item, ENV_KEY_ECODE), opt_str(item, ENV_KEY_TEXT));
        else if (reply != NULL) /* the queue: one answer for all */
            shard_outcome(s, c->idx[i], envelope_code(reply),
                          envelope_get_str(reply, ENV_KEY_ECODE),
                          envelope_get_str(reply, ENV_KEY_TEXT));
        else
            shard_outcome(s, c->idx[i], 451, "4.3.0",
                          "temporary failure, try again later");
    }
    if (--s->waiting == 0)
        answer_rcpts(s, true);
out:
    free(c->idx);
    free(c);
}

static bool
has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] & 0x80)
            return true;
    return false;
}

/* The copies of accounts another mailbox process owns (mailbox.shards >
 * 1, lib/shard.h) go to it as one mailbox.deliver per shard, with our
 * Received line on the message; it adds the Return-Path and answers per
 * copy. The remote addresses of aliases (shard QUEUE) go to the queue in
 * one queue.submit, which keeps them durably and relays them with retries
 * and bounces, as for mail the listener takes. Returns whether the call
 * went out. */
#define QUEUE (-1)

static bool
send_copies(struct lsess *s, int shard, const int *of, const char *recv,
            const struct smtp_event *ev)
{
    struct mailbox *mb = s->lm->mb;
    const char *type = shard == QUEUE ? "queue.submit" : "mailbox.deliver";
    envelope_t *env = envelope_new(type, s->trace, s->lm->bus_timeout_ms);
    value_t *body = envelope_body(env), *rcpts = value_new_array(), *msg;
    struct shard_call *c = xcalloc(1, sizeof(*c));
    size_t rlen = strlen(recv), k = 0;
    char service[64];
    void *bytes;
    int rc;

    c->s = s;
    c->type = type;
    c->idx = xcalloc(s->nr, sizeof(*c->idx));
    for (int i = 0; i < s->nrcpts; i++)
        for (int b = 0; b < s->rcpts[i].nboxes; b++, k++) {
            value_t *item;

            if (of[k] != shard)
                continue;
            item = value_new_map();
            value_set_str(item,
                          shard == QUEUE ? ENV_KEY_ADDR : MAILBOX_KEY_MAILBOX,
                          s->r[k].mailbox);
            if (shard == QUEUE)
                value_set_str(item, ENV_KEY_RCPT, s->rcpts[i].rcpt);
            value_push_take(rcpts, &item);
            c->idx[c->n++] = k;
        }
    value_set_take(body, ENV_KEY_RCPTS, &rcpts);
    value_set_str(body, ENV_KEY_MAIL_FROM, s->mail_from ? s->mail_from : "");
    bytes = xmalloc(rlen + ev->message.len + 1);
    memcpy(bytes, recv, rlen);
    if (ev->message.len > 0)
        memcpy((char *)bytes + rlen, ev->message.data, ev->message.len);
    msg = value_new_bin_take(&bytes, rlen + ev->message.len);
    value_set_take(body, ENV_KEY_MESSAGE, &msg);
    if (shard == QUEUE) {
        value_set_bool(body, ENV_KEY_EIGHT_BIT,
                       s->eight_bit ||
                           has_8bit(ev->message.data, ev->message.len));
        value_set_bool(body, ENV_KEY_SMTPUTF8, s->smtputf8);
        value_set_str(body, ENV_KEY_CLIENT_IP, s->ip);
    }
    s->calls++;
    if (shard == QUEUE)
        rc = bus_client_send_take(actor_client(mb->actor), &env,
                                  on_shard_stored, c);
    else if (shard_service(service, sizeof(service), "mailbox", shard,
                           mb->nshards) == NULL)
        rc = ERR_INVAL;
    else
        rc = bus_client_send_to_take(actor_client(mb->actor), service, &env,
                                     on_shard_stored, c);
    if (rc != 0) {
        s->calls--;
        envelope_destroy(&env);
        for (size_t i = 0; i < c->n; i++)
            shard_outcome(s, c->idx[i], 451, "4.3.0",
                          "temporary failure, try again later");
        free(c->idx);
        free(c);
        return false;
    }
    return true;
}

static void
on_message(struct lsess *s, const struct smtp_event *ev)
{
    struct mailbox *mb = s->lm->mb;
    struct parked *p;
    char *recv, *head;
    int *of;
    size_t k = 0;

    if (ev->message.nrcpts != s->nrcpts) {
        /* The engine and we count the accepted recipients alike; if not,
         * nothing is stored and the client tries again. */
        log_err(s->trace, "lmtp_rcpts_mismatch", "engine=%d session=%d",
                ev->message.nrcpts, s->nrcpts);
        smtp_server_reply(s->smtp, 451, "4.3.0", "internal error");
        return;
    }
    s->nr = 0;
    for (int i = 0; i < s->nrcpts; i++)
        s->nr += (size_t)s->rcpts[i].nboxes;
    s->r = xcalloc(s->nr, sizeof(*s->r));
    s->local = xcalloc(s->nr, sizeof(*s->local));
    s->lmap = xcalloc(s->nr, sizeof(*s->lmap));
    s->out = xcalloc(s->nr, sizeof(*s->out));
    of = xcalloc(s->nr, sizeof(*of));
    s->nlocal = 0;
    for (int i = 0; i < s->nrcpts; i++)
        for (int b = 0; b < s->rcpts[i].nboxes; b++, k++) {
            s->r[k].mailbox = s->rcpts[i].boxes[b];
            s->r[k].mailbox_len = strlen(s->rcpts[i].boxes[b]);
            of[k] = s->rcpts[i].remote[b]
                        ? QUEUE
                        : shard_of(s->r[k].mailbox, s->r[k].mailbox_len,
                                   mb->nshards);
            if (of[k] == mb->shard) {
                s->lmap[s->nlocal] = k;
                s->local[s->nlocal++] = s->r[k];
            }
        }
    recv = received_line(s);
    /* One count for the local commit and each shard's call, so that the
     * replies wait for the last of them, whatever order they come in. */
    s->waiting = 1;
    for (int shard = QUEUE; shard < mb->nshards; shard++) {
        bool used = false;

        for (size_t j = 0; j < s->nr && !used; j++)
            used = of[j] == shard;
        if (used && shard != mb->shard && send_copies(s, shard, of, recv, ev))
            s->waiting++;
    }
    if (s->nlocal > 0) {
        /* RFC 5321 4.4: the final delivery adds the Return-Path. The data
         * stays in the engine until every recipient is answered. */
        head = xasprintf("Return-Path: <%s>\r\n%s",
                         s->mail_from ? s->mail_from : "", recv);
        s->waiting++;
        s->local_done = false;
        p = mailbox_deliver_park(mb, s->trace, s->trace, &head,
                                 ev->message.data, ev->message.len, s->local,
                                 s->nlocal, on_stored, s);
        if (!s->local_done)
            s->parked = p; /* else p is gone already */
    }
    free(recv);
    free(of);
    /* The count's own share: if everything is done already, answer; the
     * pump that called us goes on. */
    if (--s->waiting == 0)
        answer_rcpts(s, false);
}

/* --- events and the pump ------------------------------------------------ */

/* Whether the session waits for a reply from elsewhere. */
static bool
busy(const struct lsess *s)
{
    return s->calls > 0 || s->parked != NULL || s->waiting > 0;
}

/* Handles one event; false when the session must stop for now. */
static bool
on_event(struct lsess *s, const struct smtp_event *ev)
{
    switch (ev->type) {
    case SMTP_EV_CONNECT:
        smtp_server_reply(s->smtp, 220, NULL, "LMTP Samotop");
        return true;
    case SMTP_EV_HELO:
        return true;
    case SMTP_EV_MAIL:
        /* Policy on senders is the sending MTA's; the path is checked. */
        txn_clear(s);
        s->mail_from = xstrdup(ev->mail.from);
        s->eight_bit = ev->mail.body == SMTP_BODY_8BITMIME;
        s->smtputf8 = ev->mail.smtputf8;
        smtp_server_reply(s->smtp, 250, "2.1.0", "sender ok");
        return true;
    case SMTP_EV_RCPT:
        ask_guard(s, ev);
        return !busy(s);
    case SMTP_EV_MESSAGE:
        on_message(s, ev);
        return !busy(s);
    case SMTP_EV_RESET:
        txn_clear(s);
        return true;
    case SMTP_EV_AUTH:
        /* Not offered, so never given; refuse to be safe. */
        smtp_server_reply(s->smtp, 502, "5.5.1", "not here");
        return true;
    case SMTP_EV_STARTTLS:
    case SMTP_EV_QUIT:
    case SMTP_EV_CLOSE:
        s->closing = true;
        return false;
    case SMTP_EV_NONE:
        break;
    }
    return false;
}

static void
session_pump(struct lsess *s)
{
    bool idle = false;

    for (int rounds = 0; rounds < 64 && !s->dead; rounds++) {
        const struct smtp_event *ev;
        bool progress = false;
        int fl;

        if (conn_in_pending(s->conn) > 0) {
            size_t len;
            const char *in = conn_in(s->conn, &len);
            size_t took = smtp_server_input(s->smtp, in, len);

            conn_in_took(s->conn, took);
            progress = took > 0;
        }
        while (!busy(s) && !s->dead) {
            ev = smtp_server_next(s->smtp);
            if (ev->type == SMTP_EV_NONE)
                break;
            progress = true;
            if (!on_event(s, ev))
                break;
        }
        if (s->dead)
            return;
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
        if (!progress || busy(s)) {
            idle = true;
            break;
        }
    }
    if (s->dead)
        return;
    if (conn_eof(s->conn)) {
        /* All the client sent is answered: done. */
        if (!busy(s) && idle) {
            session_close(s, "client_closed");
            return;
        }
        conn_watch(s->conn, busy(s) ? 0 : LOOP_WRITE);
        return;
    }
    conn_in_trim(s->conn);
    conn_watch(s->conn, conn_in_full(s->conn) ? 0 : LOOP_READ);
}

static void
on_io(loop_t *loop, int fd, int events, void *arg)
{
    struct lsess *s = arg;

    (void)loop;
    (void)fd;
    if ((events & (LOOP_READ | LOOP_ERROR)) && !conn_eof(s->conn)) {
        ssize_t n = conn_fill(s->conn, false);

        if (n < 0) {
            session_close(s, "read_failed");
            return;
        }
        if (n > 0)
            s->last_active = loop_now_ms(s->lm->loop);
    }
    session_pump(s);
}

static void
on_idle(loop_t *loop, void *arg)
{
    struct lsess *s = arg;
    int64_t left = s->last_active + s->lm->idle_ms - loop_now_ms(loop);

    s->idle_timer = NULL;
    if (left > 0 || busy(s)) {
        /* Waiting for the guard or the disk is not the client's idleness. */
        s->idle_timer =
            loop_timer_add(loop, left > 0 ? left : 1000, on_idle, s);
        return;
    }
    log_info(s->trace, "idle_timeout", "ip=%s", s->ip);
    /* RFC 5321 4.5.3.2.7 and 3.8: 421, then close. */
    smtp_server_close(s->smtp, "4.4.2", "idle timeout, closing");
    flush(s);
    session_close(s, "idle_timeout");
}

/* --- the door ----------------------------------------------------------- */

static void
session_start(mblmtp_t *lm, int fd, const char *ip)
{
    struct lsess *s = xcalloc(1, sizeof(*s));

    s->lm = lm;
    snprintf(s->ip, sizeof(s->ip), "%s", ip);
    envelope_new_trace(s->trace);
    s->smtp = smtp_server_new(&lm->opts);
    s->last_active = loop_now_ms(lm->loop);
    s->conn = conn_new(lm->loop, fd, s->trace, s->ip, on_io, s);
    if (s->conn == NULL) {
        smtp_server_destroy(&s->smtp);
        free(s);
        return;
    }
    s->next = lm->head;
    if (lm->head)
        lm->head->prev = s;
    lm->head = s;
    lm->sessions++;
    s->idle_timer = loop_timer_add(lm->loop, lm->idle_ms, on_idle, s);
    log_info(s->trace, "lmtp_session_start", "ip=%s sessions=%d", ip,
             lm->sessions);
    session_pump(s);
}

/* A connection on the door: a session, unless the door is full; then
 * RFC 5321 3.1's 421 greeting, and the close. */
static void
on_accept(void *arg, int fd, const char *ip)
{
    mblmtp_t *lm = arg;

    if (lm->sessions >= lm->max_sessions) {
        net_refuse(fd, "421 4.3.2 Too busy, try again later\r\n");
        lm->refused++;
        log_warn(NULL, "session_refused",
                 "door=lmtp ip=%s reason=full "
                 "sessions=%d",
                 ip, lm->sessions);
        return;
    }
    lm->accepted++;
    session_start(lm, fd, ip);
}

/* Whether addr ("HOST:PORT") is on loopback, where this door belongs. */
static bool
addr_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strncmp(addr, "[::1]:", 6) == 0 ||
           strncmp(addr, "localhost:", 10) == 0;
}

mblmtp_t *
mailbox_lmtp_start(struct mailbox *mb)
{
    const config_t *cfg = actor_config(mb->actor);
    mblmtp_t *lm = xcalloc(1, sizeof(*lm));

    lm->mb = mb;
    lm->loop = actor_loop(mb->actor);
    lm->acceptor = net_acceptor_new(lm->loop, "door", 16, &lm->sessions);
    snprintf(lm->addr, sizeof(lm->addr), "%s", config_str(cfg, "listen.lmtp"));
    snprintf(lm->hostname, sizeof(lm->hostname), "%s",
             config_str(cfg, "hostname"));
    if (lm->hostname[0] == '\0' &&
        gethostname(lm->hostname, sizeof(lm->hostname) - 1) != 0)
        snprintf(lm->hostname, sizeof(lm->hostname), "localhost");
    lm->max_sessions = (int)config_int(cfg, "lmtp.max_sessions");
    lm->idle_ms = config_int(cfg, "lmtp.idle_timeout_ms");
    lm->bus_timeout_ms = config_int(cfg, "bus.timeout_ms");
    lm->opts = (struct smtp_server_opts){
        .hostname = lm->hostname,
        .max_message = (size_t)config_int(cfg, "smtp.max_message"),
        .max_rcpts = (int)config_int(cfg, "smtp.max_rcpts"),
        .max_errors = (int)config_int(cfg, "smtp.max_errors"),
        /* RFC 2033 4.1 adds PIPELINING and ENHANCEDSTATUSCODES itself;
         * no STARTTLS or AUTH on an internal door. */
        .ext = SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8 |
               SMTP_EXT_CHUNKING,
        .lmtp = true,
    };
    if (lm->addr[0] == '\0') {
        /* Empty: no LMTP door on this copy; deliveries still come over
         * the bus. */
        log_info(NULL, "door_off", "door=lmtp");
        return lm;
    }
    if (net_acceptor_listen(lm->acceptor, "lmtp", lm->addr, on_accept, lm) <
        0) {
        net_acceptor_destroy(&lm->acceptor);
        free(lm);
        return NULL;
    }
    if (!addr_loopback(lm->addr))
        log_warn(NULL, "lmtp_not_loopback", "addr=%s reason=%s", lm->addr,
                 log_q("LMTP has no TLS or AUTH: keep it on internal "
                       "networks"));
    return lm;
}

void
mailbox_lmtp_stop(mblmtp_t **lm_p)
{
    mblmtp_t *lm = *lm_p;

    if (lm == NULL)
        return;
    net_acceptor_destroy(&lm->acceptor);
    /* Messages parked now are stored and answered before the 421s. */
    mailbox_deliver_flush(lm->mb);
    while (lm->head) {
        struct lsess *s = lm->head;

        /* Before the engine forgets the message the delivery borrows. */
        mailbox_deliver_cancel(lm->mb, &s->parked);
        smtp_server_close(s->smtp, "4.3.2", "shutting down");
        flush(s);
        session_close(s, "shutdown");
    }
    log_info(NULL, "lmtp_stopped", "accepted=%llu refused=%llu",
             (unsigned long long)lm->accepted, (unsigned long long)lm->refused);
    free(lm);
    *lm_p = NULL;
}
