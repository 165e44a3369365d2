#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "mailbox.h"
#include "mailbox_metrics.h"

static const char *request_check(const value_t *body, int *code,
                                 const char **ecode);
static void sum_up(const struct maildir_rcpt *r, size_t n, int *code,
                   const char **ecode, const char **text);
static value_t *results_new(const struct maildir_rcpt *r, size_t n);
static void log_outcomes(const char *trace, const struct maildir_rcpt *r,
                         size_t n);

/* A reverse-path goes into the Return-Path line as it is, so it must not be
 * able to end that line or start another one: no CR, LF, NUL or other
 * controls. UTF-8 (SMTPUTF8) passes. */
static bool
mail_from_ok(const char *s, size_t len)
{
    if (len > MAILBOX_MAX_MAIL_FROM)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* What the decoder cannot check (it sees only the top-level fields of the
 * schema): the rcpts items and the sender. Returns NULL when the request
 * is good, else the reason, with the reply code and ecode to use. */
static const char *
request_check(const value_t *body, int *code, const char **ecode)
{
    const value_t *rcpts = value_get(body, ENV_KEY_RCPTS);
    const char *from;
    size_t n = value_count(rcpts), from_len;

    *code = 501;
    *ecode = "5.5.4";
    if (n == 0)
        return "rcpts is empty";
    if (n > MAILBOX_MAX_RCPTS) {
        *code = 554;
        *ecode = "5.5.3";
        return "too many recipients in one request";
    }
    for (size_t i = 0; i < n; i++) {
        const value_t *item = value_at(rcpts, i), *v;

        if (value_kind(item) != VAL_MAP)
            return "rcpts item is not a map";
        v = value_get(item, MAILBOX_KEY_MAILBOX);
        if (v == NULL || value_kind(v) != VAL_STR)
            return "rcpts item has no mailbox string";
        v = value_get(item, MAILBOX_KEY_FOLDER);
        if (v != NULL && value_kind(v) != VAL_STR)
            return "rcpts item's folder is not a string";
        v = value_get(item, ENV_KEY_RCPT);
        if (v != NULL && value_kind(v) != VAL_STR)
            return "rcpts item's rcpt is not a string";
    }
    from = value_str(value_get(body, ENV_KEY_MAIL_FROM), &from_len);
    if (!mail_from_ok(from, from_len)) {
        *ecode = "5.1.7";
        return "mail_from is too long or holds control characters";
    }
    return NULL;
}

/*
 * The top-level status sums the recipients' up for a caller that reads only
 * it (an SMTP listener answering DATA for one recipient, a log):
 *   - 250 2.0.0 when every copy is on disk;
 *   - else 451 4.3.0 when any copy failed for a reason that may pass (any
 *     4xx: a full disk, an I/O error), since the sender must then keep the
 *     message and try those recipients again, which outweighs a refusal;
 *   - else (only 250s and 5xx) 550 with the first refusal's ecode.
 * Callers that can answer per recipient (LMTP, the queue) read results.
 */
static void
sum_up(const struct maildir_rcpt *r, size_t n, int *code, const char **ecode,
       const char **text)
{
    const struct maildir_rcpt *first_5xx = NULL;
    bool any_4xx = false, all_full = true;

    for (size_t i = 0; i < n; i++) {
        if (r[i].code >= 400 && r[i].code < 500)
            any_4xx = true;
        else if (r[i].code >= 500 && first_5xx == NULL)
            first_5xx = &r[i];
        if (r[i].code != 250 &&
            (r[i].code != 452 || strcmp(r[i].ecode, "4.2.2") != 0))
            all_full = false;
    }
    if (any_4xx && all_full) {
        /* Only full mailboxes (a quota, or the disk): RFC 3463 X.2.2 says
         * so better than 4.3.0, and the sender still tries again. */
        *code = 452;
        *ecode = "4.2.2";
        *text = "mailbox full, try again later";
    } else if (any_4xx) {
        *code = 451;
        *ecode = "4.3.0";
        *text = "not every copy could be stored, try again later";
    } else if (first_5xx != NULL) {
        *code = 550;
        *ecode = first_5xx->ecode;
        *text = "some recipients were refused";
    } else {
        *code = 250;
        *ecode = "2.0.0";
        *text = "delivered";
    }
}

static value_t *
results_new(const struct maildir_rcpt *r, size_t n)
{
    value_t *results = value_new_array();

    for (size_t i = 0; i < n; i++) {
        value_t *item = value_new_map(), *name;

        name = value_new_strn(r[i].mailbox, r[i].mailbox_len);
        value_set_take(item, MAILBOX_KEY_MAILBOX, &name);
        value_set_int(item, ENV_KEY_CODE, r[i].code);
        value_set_str(item, ENV_KEY_ECODE, r[i].ecode);
        value_set_str(item, ENV_KEY_TEXT, r[i].text);
        if (r[i].code == 250)
            value_set_str(item, MAILBOX_KEY_FILE, r[i].file);
        value_push_take(results, &item);
    }
    return results;
}

/* Failures are logged here, where they are handled; the mailbox id is all
 * that is said of a recipient. */
static void
log_outcomes(const char *trace, const struct maildir_rcpt *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i].refused) /* over quota: on_quota() said so */
            continue;
        if (r[i].code == 550)
            log_info(trace, "mailbox_refused", "mailbox=%s code=550",
                     log_q(r[i].mailbox));
        else if (r[i].code != 250)
            log_warn(trace, "store_failed",
                     "mailbox=%s folder=%s op=%s error=%s code=%d",
                     log_q(r[i].mailbox),
                     log_q(r[i].folder ? r[i].folder : "INBOX"),
                     log_q(r[i].failed_op ? r[i].failed_op : "-"),
                     log_q(strerror(r[i].sys_errno)), r[i].code);
    }
}

/* A message waiting for its group commit (mailbox_deliver_park()). */
struct parked {
    int64_t t0;        /* arrival, for the log */
    const char *trace; /* borrowed from the owner */
    const char *id;
    char *head; /* the lines written before the message */
    struct iovec parts[2];
    struct maildir_rcpt *r; /* borrowed from the owner */
    size_t n;
    mailbox_stored_fn *done; /* NULL once the owner went away */
    void *arg;
    bool quota_wait;    /* its quota lookup is out (mailbox_quota.h) */
    bool quota_held;    /* its copies let in are held until counted */
    struct mailbox *mb; /* while it is out */
};

/* A mailbox.deliver request waiting for its message's commit. The strings
 * in r borrow from the request's body, which lives as long as req. */
struct bus_delivery {
    bus_request_t *req;
    struct maildir_rcpt *r;
};

static void
on_commit_timer(loop_t *loop, void *arg)
{
    struct mailbox *mb = arg;

    (void)loop;
    mb->commit_timer = NULL;
    mailbox_deliver_flush(mb);
}

/* Puts p in the next group commit. */
static void
park_now(struct mailbox *mb, struct parked *p)
{
    mb->parked[mb->nparked++] = p;
    mb->parked_bytes += p->parts[0].iov_len + p->parts[1].iov_len;
    /* The loop runs a 0 ms timer only once it has read every request
     * waiting on the bus, so the commit takes all that came together. */
    if (mb->nparked == MAILBOX_BATCH_MAX ||
        mb->parked_bytes >= MAILBOX_BATCH_BYTES) {
        loop_timer_cancel(actor_loop(mb->actor), &mb->commit_timer);
        mailbox_deliver_flush(mb);
    } else if (mb->commit_timer == NULL) {
        mb->commit_timer =
            loop_timer_add(actor_loop(mb->actor), 0, on_commit_timer, mb);
    }
}

/* Whether r[i] is the first of p's recipients with its mailbox and folder
 * (later ones share its copy, and are charged nothing more). */
static bool
first_copy(const struct parked *p, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (p->r[j].mailbox_len == p->r[i].mailbox_len &&
            memcmp(p->r[j].mailbox, p->r[i].mailbox, p->r[i].mailbox_len) ==
                0 &&
            p->r[j].folder_len == p->r[i].folder_len &&
            (p->r[i].folder_len == 0 ||
             memcmp(p->r[j].folder, p->r[i].folder, p->r[i].folder_len) == 0))
            return false;
    return true;
}

/* r's mailbox as a C string into name; false when it is too long. */
static bool
rcpt_name(const struct maildir_rcpt *r, char name[MAILDIR_NAME_MAX + 1])
{
    if (r->mailbox_len > MAILDIR_NAME_MAX)
        return false;
    memcpy(name, r->mailbox, r->mailbox_len);
    name[r->mailbox_len] = '\0';
    return true;
}

/* The quota lookup of p's recipients (in order, those with a good name)
 * is in: a copy that would take its account over quota is refused with
 * 452 4.2.2 (RFC 3463 X.2.2, mailbox full), the others go to the commit,
 * their bytes held (mailbox_quota_hold()) so that the lookups of messages
 * right behind weigh them before they are counted in Redis. Copies of one
 * account from other processes are not held here: with mailbox.shards
 * one process owns each account. */
static void
on_quota(void *arg, int err, const struct mailbox_quota_state *st, size_t n)
{
    struct parked *p = arg;
    mailbox_quota_t *q = p->mb->quota;
    size_t size = p->parts[0].iov_len + p->parts[1].iov_len, k = 0;
    char name[MAILDIR_NAME_MAX + 1];

    p->quota_wait = false;
    p->quota_held = err == 0;
    for (size_t i = 0; i < p->n && err == 0 && k < n; i++) {
        struct maildir_rcpt *r = &p->r[i];

        if (!maildir_name_ok(r->mailbox, r->mailbox_len))
            continue;
        if (first_copy(p, i) && rcpt_name(r, name)) {
            if (mailbox_quota_fits(st[k].used + mailbox_quota_held(q, name),
                                   size, st[k].limit))
                mailbox_quota_hold(q, name, size);
            else {
                r->refused = true;
                r->code = 452;
                r->ecode = "4.2.2";
                r->text = "mailbox full";
                log_info(p->trace, "over_quota",
                         "id=%s mailbox=%.*s used=%llu quota=%llu size=%zu",
                         log_q(p->id), (int)r->mailbox_len, r->mailbox,
                         (unsigned long long)st[k].used,
                         (unsigned long long)st[k].limit, size);
            }
        }
        k++;
    }
    park_now(p->mb, p);
}

/* Asks for the quotas of p's accounts before it is parked; false when it
 * cannot (Redis away: the message goes on unchecked). */
static bool
quota_ask(struct mailbox *mb, struct parked *p)
{
    const char **names = xcalloc(p->n ? p->n : 1, sizeof(*names));
    size_t k = 0;
    bool asked;

    for (size_t i = 0; i < p->n; i++)
        if (maildir_name_ok(p->r[i].mailbox, p->r[i].mailbox_len))
            names[k++] = xstrndup(p->r[i].mailbox, p->r[i].mailbox_len);
    p->mb = mb;
    p->quota_wait =
        k > 0 && mailbox_quota_lookup(mb->quota, names, k, on_quota, p) == 0;
    asked = p->quota_wait;
    for (size_t i = 0; i < k; i++)
        free((char *)names[i]);
    free(names);
    return asked;
}

struct parked *
mailbox_deliver_park(struct mailbox *mb, const char *trace, const char *id,
                     char **head_p, const char *msg, size_t len,
                     struct maildir_rcpt *r, size_t n, mailbox_stored_fn *done,
                     void *arg)
{
    struct parked *p = xcalloc(1, sizeof(*p));

    p->t0 = clock_mono_us();
    p->trace = trace;
    p->id = id;
    p->head = *head_p;
    *head_p = NULL;
    p->parts[0] = (struct iovec){p->head, strlen(p->head)};
    p->parts[1] = (struct iovec){(void *)msg, len};
    p->r = r;
    p->n = n;
    p->done = done;
    p->arg = arg;
    if (mb->quota == NULL || !quota_ask(mb, p))
        park_now(mb, p);
    return p;
}

void
mailbox_deliver_cancel(struct mailbox *mb, struct parked **p_p)
{
    struct parked *p = *p_p;
    bool waiting = false;

    if (p == NULL)
        return;
    *p_p = NULL;
    p->done = NULL;
    if (p->quota_wait) { /* parked unchecked, to be stored now */
        mailbox_quota_cancel(mb->quota, p);
        p->quota_wait = false;
        park_now(mb, p);
    }
    for (int i = 0; i < mb->nparked; i++)
        waiting |= mb->parked[i] == p;
    /* What the message borrows goes with its owner: store it now. When it
     * is not waiting, its commit is running and p is answered next. */
    if (waiting) {
        loop_timer_cancel(actor_loop(mb->actor), &mb->commit_timer);
        mailbox_deliver_flush(mb);
    }
}

static void
bus_stored(struct mailbox *mb, void *arg, const struct maildir_rcpt *r,
           size_t n)
{
    struct bus_delivery *d = arg;
    const envelope_t *req = bus_request_envelope(d->req);
    const char *ecode, *text;
    envelope_t *reply;
    value_t *results;
    int code;

    sum_up(r, n, &code, &ecode, &text);
    reply = envelope_new_reply(req, code, ecode, text);
    results = results_new(r, n);
    value_set_take(envelope_body(reply), ENV_KEY_RESULTS, &results);
    actor_reply(mb->actor, &d->req, &reply);
    free(d->r);
    free(d);
}

void
mailbox_on_deliver(actor_t *a, bus_request_t **req_p)
{
    struct mailbox *mb = actor_data(a);
    const envelope_t *req = bus_request_envelope(*req_p);
    const value_t *body = envelope_body_peek(req);
    const value_t *rcpts = value_get(body, ENV_KEY_RCPTS);
    const char *trace = envelope_trace(req), *why, *ecode;
    const char *msg, *from;
    size_t msg_len, from_len, n;
    struct bus_delivery *d;
    char *head;
    int code;

    if ((why = request_check(body, &code, &ecode)) != NULL) {
        mb->bad_requests++;
        log_warn(trace, "bad_request", "id=%s from=%s reason=%s count=%llu",
                 log_q(envelope_id(req)), log_q(envelope_from(req)), log_q(why),
                 (unsigned long long)mb->bad_requests);
        actor_fail(a, req_p, code, ecode, why);
        return;
    }
    msg = value_str(value_get(body, ENV_KEY_MESSAGE), &msg_len);
    from = value_str(value_get(body, ENV_KEY_MAIL_FROM), &from_len);
    n = value_count(rcpts);
    d = xcalloc(1, sizeof(*d));
    d->r = xcalloc(n, sizeof(*d->r));
    for (size_t i = 0; i < n; i++) {
        const value_t *item = value_at(rcpts, i);
        const value_t *folder = value_get(item, MAILBOX_KEY_FOLDER);

        d->r[i].mailbox = value_str(value_get(item, MAILBOX_KEY_MAILBOX),
                                    &d->r[i].mailbox_len);
        if (folder != NULL)
            d->r[i].folder = value_str(folder, &d->r[i].folder_len);
    }
    /* RFC 5321 section 4.4: the final delivery adds the Return-Path. It is
     * the same for every recipient, so the copies can still share a file. */
    head = xasprintf("Return-Path: <%.*s>\r\n", (int)from_len, from);
    d->req = *req_p;
    *req_p = NULL;
    mailbox_deliver_park(mb, trace, envelope_id(req), &head, msg, msg_len, d->r,
                         n, bus_stored, d);
}

/* Logs and counts p's outcomes, tells its owner (if still there) and
 * frees it. */
static void
answer(struct mailbox *mb, struct parked *p, const struct maildir_msg *mm,
       int batch)
{
    const char *ecode, *text;
    int code;

    sum_up(p->r, p->n, &code, &ecode, &text);
    log_outcomes(p->trace, p->r, p->n);
    mailbox_metrics_rcpts(p->r, p->n);
    mb->delivered += mm->stored;
    for (size_t i = 0; i < p->n; i++) {
        mb->deferred += p->r[i].code >= 400 && p->r[i].code < 500;
        mb->refused += p->r[i].code >= 500;
    }
    log_info(p->trace, "deliver",
             "id=%s mailboxes=%zu stored=%zu size=%zu ms=%.1f batch=%d "
             "code=%d",
             log_q(p->id), p->n, mm->stored,
             p->parts[0].iov_len + p->parts[1].iov_len,
             (double)(clock_mono_us() - p->t0) / 1000.0, batch, code);
    /* Each copy stored counts against its account's quota; the hold of
     * one that was not stored ends. */
    for (size_t i = 0; i < p->n && mb->quota != NULL; i++) {
        size_t size = p->parts[0].iov_len + p->parts[1].iov_len;
        char name[MAILDIR_NAME_MAX + 1];
        bool held = p->quota_held && !p->r[i].refused &&
                    maildir_name_ok(p->r[i].mailbox, p->r[i].mailbox_len);

        if (!first_copy(p, i) || !rcpt_name(&p->r[i], name))
            continue;
        if (p->r[i].code == 250 && held)
            mailbox_quota_charge_held(mb->quota, p->trace, name, size);
        else if (p->r[i].code == 250)
            mailbox_quota_charge(mb->quota, p->trace, name, size);
        else if (held)
            mailbox_quota_release(mb->quota, name, size);
    }
    if (p->done)
        p->done(mb, p->arg, p->r, p->n);
    free(p->head);
    free(p);
}

void
mailbox_deliver_flush(struct mailbox *mb)
{
    struct parked *batch[MAILBOX_BATCH_MAX];
    struct maildir_msg mm[MAILBOX_BATCH_MAX];
    int n = mb->nparked;
    int64_t t0 = clock_mono_us();

    if (n == 0)
        return;
    memcpy(batch, mb->parked, sizeof(batch[0]) * (size_t)n);
    mb->nparked = 0;
    mb->parked_bytes = 0;
    for (int i = 0; i < n; i++)
        mm[i] = (struct maildir_msg){batch[i]->parts, 2, batch[i]->r,
                                     batch[i]->n, 0};
    /* XXX: the writes and fsyncs block the loop (a few ms per commit on a
     * local disk, far more on a busy or network one), holding up every
     * other request of this actor meanwhile, and the IMAP sessions once
     * they share the loop. They belong on a thread pool that answers
     * through the loop; other copies of the actor take the load until
     * then. */
    maildir_deliver_batch(mb->store, mm, (size_t)n);
    mb->commits++;
    mb->committed += (uint64_t)n;
    mailbox_metrics_commit(n, clock_mono_us() - t0);
    for (int i = 0; i < n; i++)
        answer(mb, batch[i], &mm[i], n);
}
