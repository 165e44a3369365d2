/*
 * queue_msg.c - a queued message as it sits in Redis (schemas/redis.md,
 * the queue's rows): reading it back from HGETALL and GET replies, and
 * the commands that write it.
 *
 * The commands are written as groups "N CMD ARG..." into one argument
 * list: queue.submit sends the groups one by one between MULTI and EXEC,
 * the update script runs them after checking the lease.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "lib/err.h"
#include "lib/xalloc.h"
#include "store_keys.h"

#include "queue.h"

/* Recipients per HSET, so that no command (or the script's unpack(),
 * which has a stack limit) gets too many arguments. */
#define RCPTS_PER_HSET 40

void
queue_argv_init(struct queue_argv *a)
{
    memset(a, 0, sizeof(*a));
}

void
queue_argv_free(struct queue_argv *a)
{
    for (int i = 0; i < a->n; i++)
        if (a->owned[i])
            free(a->v[i]);
    free(a->v);
    free(a->lens);
    free(a->owned);
    memset(a, 0, sizeof(*a));
}

static void
push(struct queue_argv *a, char *p, size_t n, bool owned)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 32;
        a->v = xrealloc(a->v, (size_t)a->cap * sizeof(*a->v));
        a->lens = xrealloc(a->lens, (size_t)a->cap * sizeof(*a->lens));
        a->owned = xrealloc(a->owned, (size_t)a->cap * sizeof(*a->owned));
    }
    a->v[a->n] = p;
    a->lens[a->n] = n;
    a->owned[a->n] = owned;
    a->n++;
}

void
queue_argv_add(struct queue_argv *a, const char *s)
{
    push(a, xstrdup(s), strlen(s), true);
}

void
queue_argv_addn(struct queue_argv *a, const void *p, size_t n)
{
    char *c = xmalloc(n + 1);

    memcpy(c, p, n);
    c[n] = '\0';
    push(a, c, n, true);
}

void
queue_argv_addref(struct queue_argv *a, const void *p, size_t n)
{
    push(a, (char *)p, n, false);
}

void
queue_argv_addf(struct queue_argv *a, const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    push(a, s, strlen(s), true);
}

int
queue_argv_begin(struct queue_argv *a)
{
    push(a, NULL, 0, true);
    return a->n - 1;
}

void
queue_argv_end(struct queue_argv *a, int at)
{
    a->v[at] = xasprintf("%d", a->n - at - 1);
    a->lens[at] = strlen(a->v[at]);
}

void
queue_msg_new_id(char out[QUEUE_ID_MAX])
{
    unsigned char r[8];

    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        /* XXX: getrandom() on Linux does not fail for 8 bytes once the
         * pool is ready; the clock keeps ids apart if it ever does. */
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        memcpy(r, &ts.tv_nsec, 4);
        memcpy(r + 4, &ts.tv_sec, 4);
    }
    snprintf(out, QUEUE_ID_MAX, "%lld-%02x%02x%02x%02x%02x%02x%02x%02x",
             (long long)time(NULL), r[0], r[1], r[2], r[3], r[4], r[5], r[6],
             r[7]);
}

bool
queue_msg_id_ok(const char *s)
{
    size_t i = 0, n = strlen(s);

    if (n == 0 || n >= QUEUE_ID_MAX)
        return false;
    while (s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == 0 || s[i] != '-' || n - i - 1 != 16)
        return false;
    for (i++; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static void
rcpt_clear(struct queue_rcpt *r)
{
    free(r->to);
    free(r->rcpt);
    free(r->orcpt);
    free(r->ecode);
    free(r->text);
    free(r->mx);
}

void
queue_msg_clear(struct queue_msg *m)
{
    free(m->mail_from);
    free(m->envid);
    free(m->ret);
    free(m->user);
    free(m->client_ip);
    free(m->trace);
    free(m->dsn);
    free(m->dsn_of);
    free(m->body);
    for (size_t i = 0; i < m->nrcpts; i++)
        rcpt_clear(&m->rcpts[i]);
    free(m->rcpts);
    memset(m, 0, sizeof(*m));
}

static const struct {
    unsigned bit;
    const char *name;
} notify_names[] = {
    {QUEUE_NOTIFY_NEVER, "NEVER"},
    {QUEUE_NOTIFY_SUCCESS, "SUCCESS"},
    {QUEUE_NOTIFY_FAILURE, "FAILURE"},
    {QUEUE_NOTIFY_DELAY, "DELAY"},
};

#define NNOTIFY (sizeof(notify_names) / sizeof(notify_names[0]))

unsigned
queue_notify_parse(const char *list)
{
    unsigned bits = 0;
    const char *p = list;

    while (p && *p) {
        size_t n = strcspn(p, ",");

        for (size_t k = 0; k < NNOTIFY; k++)
            if (strlen(notify_names[k].name) == n &&
                strncasecmp(p, notify_names[k].name, n) == 0)
                bits |= notify_names[k].bit;
        p += n;
        if (*p == ',')
            p++;
    }
    /* RFC 3461 4.1: NEVER stands alone. */
    return bits & QUEUE_NOTIFY_NEVER ? QUEUE_NOTIFY_NEVER : bits;
}

void
queue_notify_format(unsigned notify, char out[64])
{
    size_t o = 0;

    out[0] = '\0';
    for (size_t k = 0; k < NNOTIFY; k++)
        if (notify & notify_names[k].bit)
            o += (size_t)snprintf(out + o, 64 - o, "%s%s", o ? "," : "",
                                  notify_names[k].name);
}

static const char *const status_names[] = {"pending", "delivered", "failed",
                                           "bounced"};

const char *
queue_status_name(enum queue_status s)
{
    return (unsigned)s < 4 ? status_names[s] : "pending";
}

static int
status_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, status_names[i]) == 0)
            return i;
    return -1;
}

static int64_t
to_int(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

static char *
dup_or_null(const char *s)
{
    /* An optional field is stored as "" when absent: read it back as
     * absent, or ENVID= would go out empty (Postfix: 501 5.5.4). */
    return s && *s ? xstrdup(s) : NULL;
}

/* The value of field in an HGETALL reply, or NULL. */
static const char *
hash_get(const store_reply_t *h, const char *field)
{
    size_t n = store_reply_count(h);

    for (size_t i = 0; i + 1 < n; i += 2) {
        const char *f = store_reply_str(store_reply_at(h, i), NULL);

        if (f && strcmp(f, field) == 0)
            return store_reply_str(store_reply_at(h, i + 1), NULL);
    }
    return NULL;
}

static int
rcpt_field(struct queue_rcpt *r, const char *name, const char *v)
{
    if (strcmp(name, "mailbox") == 0 || strcmp(name, "addr") == 0) {
        free(r->to);
        r->to = xstrdup(v);
        r->local = name[0] == 'm';
    } else if (strcmp(name, "rcpt") == 0) {
        free(r->rcpt);
        r->rcpt = xstrdup(v);
    } else if (strcmp(name, "orcpt") == 0) {
        free(r->orcpt);
        r->orcpt = xstrdup(v);
    } else if (strcmp(name, "notify") == 0) {
        r->notify = queue_notify_parse(v);
        r->notify_given = true;
    } else if (strcmp(name, "status") == 0) {
        int s = status_parse(v);

        if (s < 0)
            return ERR_MALFORMED;
        r->status = (enum queue_status)s;
    } else if (strcmp(name, "attempts") == 0) {
        r->attempts = (int)to_int(v);
    } else if (strcmp(name, "next_ms") == 0) {
        r->next_ms = to_int(v);
    } else if (strcmp(name, "last_ms") == 0) {
        r->last_ms = to_int(v);
    } else if (strcmp(name, "code") == 0) {
        r->code = (int)to_int(v);
    } else if (strcmp(name, "ecode") == 0) {
        free(r->ecode);
        r->ecode = xstrdup(v);
    } else if (strcmp(name, "text") == 0) {
        free(r->text);
        r->text = xstrdup(v);
    } else if (strcmp(name, "mx") == 0) {
        free(r->mx);
        r->mx = xstrdup(v);
    } else if (strcmp(name, "warned") == 0) {
        r->warned = strcmp(v, "1") == 0;
    }
    /* Other fields are a later version's: skipped. */
    return 0;
}

int
queue_msg_parse(struct queue_msg *m, const char *id, const store_reply_t *h,
                const store_reply_t *body, const store_reply_t *rcpts,
                char *why, size_t whylen)
{
    const char *s;
    size_t len, n;
    long long nr;

    memset(m, 0, sizeof(*m));
    snprintf(m->id, sizeof(m->id), "%s", id);
    if (h == NULL || store_reply_type(h) != STORE_ARRAY ||
        store_reply_count(h) == 0)
        return ERR_NOTFOUND;
    s = hash_get(h, "nrcpts");
    nr = to_int(s);
    if (nr < 1 || nr > QUEUE_MAX_RCPTS) {
        snprintf(why, whylen, "nrcpts is %s", s ? s : "missing");
        return ERR_MALFORMED;
    }
    if (body == NULL || store_reply_type(body) != STORE_STR) {
        snprintf(why, whylen, "the body is missing");
        return ERR_MALFORMED;
    }
    if ((s = hash_get(h, "mail_from")) == NULL) {
        snprintf(why, whylen, "mail_from is missing");
        return ERR_MALFORMED;
    }
    m->mail_from = xstrdup(s);
    m->envid = dup_or_null(hash_get(h, "envid"));
    m->ret = dup_or_null(hash_get(h, "ret"));
    m->user = dup_or_null(hash_get(h, "user"));
    m->client_ip = dup_or_null(hash_get(h, "client_ip"));
    m->trace = dup_or_null(hash_get(h, "trace"));
    m->dsn = dup_or_null(hash_get(h, "dsn"));
    m->dsn_of = dup_or_null(hash_get(h, "dsn_of"));
    m->eight_bit = to_int(hash_get(h, "eight_bit")) != 0;
    m->smtputf8 = to_int(hash_get(h, "smtputf8")) != 0;
    m->created_ms = to_int(hash_get(h, "created_ms"));
    m->expires_ms = to_int(hash_get(h, "expires_ms"));
    s = store_reply_str(body, &len);
    m->body = xmemdup(s, len + 1);
    m->body_len = len;
    m->nrcpts = (size_t)nr;
    m->rcpts = xcalloc(m->nrcpts, sizeof(*m->rcpts));
    for (size_t i = 0; i < m->nrcpts; i++)
        m->rcpts[i].notify = QUEUE_NOTIFY_DEFAULT;

    n = rcpts ? store_reply_count(rcpts) : 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        const char *f = store_reply_str(store_reply_at(rcpts, i), NULL);
        const char *v = store_reply_str(store_reply_at(rcpts, i + 1), NULL);
        char *dot;
        long idx;

        if (f == NULL || v == NULL)
            continue;
        idx = strtol(f, &dot, 10);
        if (dot == f || *dot != '.' || idx < 0 || idx >= nr)
            continue;
        if (rcpt_field(&m->rcpts[idx], dot + 1, v) != 0) {
            snprintf(why, whylen, "recipient %ld: bad %s", idx, dot + 1);
            return ERR_MALFORMED;
        }
    }
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].to == NULL) {
            snprintf(why, whylen, "recipient %zu has no mailbox or addr", i);
            return ERR_MALFORMED;
        }
    return 0;
}

/* The fields of recipient i as "i.name value" pairs. */
static void
add_rcpt_fields(struct queue_argv *a, const struct queue_rcpt *r, size_t i)
{
    char notify[64];

    queue_argv_addf(a, "%zu.%s", i, r->local ? "mailbox" : "addr");
    queue_argv_add(a, r->to);
    if (r->rcpt) {
        queue_argv_addf(a, "%zu.rcpt", i);
        queue_argv_add(a, r->rcpt);
    }
    if (r->orcpt) {
        queue_argv_addf(a, "%zu.orcpt", i);
        queue_argv_add(a, r->orcpt);
    }
    if (r->notify_given) {
        queue_notify_format(r->notify, notify);
        queue_argv_addf(a, "%zu.notify", i);
        queue_argv_add(a, notify);
    }
    queue_argv_addf(a, "%zu.status", i);
    queue_argv_add(a, queue_status_name(r->status));
    queue_argv_addf(a, "%zu.attempts", i);
    queue_argv_addf(a, "%d", r->attempts);
    queue_argv_addf(a, "%zu.next_ms", i);
    queue_argv_addf(a, "%lld", (long long)r->next_ms);
    if (r->last_ms) {
        queue_argv_addf(a, "%zu.last_ms", i);
        queue_argv_addf(a, "%lld", (long long)r->last_ms);
    }
    if (r->code) {
        queue_argv_addf(a, "%zu.code", i);
        queue_argv_addf(a, "%d", r->code);
        queue_argv_addf(a, "%zu.ecode", i);
        queue_argv_add(a, r->ecode ? r->ecode : "");
        queue_argv_addf(a, "%zu.text", i);
        queue_argv_add(a, r->text ? r->text : "");
        queue_argv_addf(a, "%zu.mx", i);
        queue_argv_add(a, r->mx ? r->mx : "");
    }
    if (r->warned) {
        queue_argv_addf(a, "%zu.warned", i);
        queue_argv_add(a, "1");
    }
}

void
queue_msg_write_rcpt(struct queue_argv *a, const struct queue_msg *m, size_t i)
{
    char key[STORE_KEY_MAX];
    int at = queue_argv_begin(a);

    queue_argv_add(a, "HSET");
    queue_argv_add(a, store_key_queue_rcpts(key, m->id));
    add_rcpt_fields(a, &m->rcpts[i], i);
    queue_argv_end(a, at);
}

static void
add_pair(struct queue_argv *a, const char *f, const char *v)
{
    queue_argv_add(a, f);
    queue_argv_add(a, v ? v : "");
}

void
queue_msg_write(struct queue_argv *a, const struct queue_msg *m, int64_t due_ms)
{
    char key[STORE_KEY_MAX];
    int at;

    at = queue_argv_begin(a);
    queue_argv_add(a, "HSET");
    queue_argv_add(a, store_key_queue_msg(key, m->id));
    add_pair(a, "mail_from", m->mail_from);
    add_pair(a, "envid", m->envid);
    add_pair(a, "ret", m->ret);
    add_pair(a, "eight_bit", m->eight_bit ? "1" : "0");
    add_pair(a, "smtputf8", m->smtputf8 ? "1" : "0");
    add_pair(a, "user", m->user);
    add_pair(a, "client_ip", m->client_ip);
    add_pair(a, "trace", m->trace);
    add_pair(a, "dsn", m->dsn);
    add_pair(a, "dsn_of", m->dsn_of);
    queue_argv_add(a, "created_ms");
    queue_argv_addf(a, "%lld", (long long)m->created_ms);
    queue_argv_add(a, "expires_ms");
    queue_argv_addf(a, "%lld", (long long)m->expires_ms);
    queue_argv_add(a, "size");
    queue_argv_addf(a, "%zu", m->body_len);
    queue_argv_add(a, "nrcpts");
    queue_argv_addf(a, "%zu", m->nrcpts);
    queue_argv_end(a, at);

    at = queue_argv_begin(a);
    queue_argv_add(a, "SET");
    queue_argv_add(a, store_key_queue_body(key, m->id));
    queue_argv_addref(a, m->body, m->body_len);
    queue_argv_end(a, at);

    for (size_t i = 0; i < m->nrcpts; i += RCPTS_PER_HSET) {
        at = queue_argv_begin(a);
        queue_argv_add(a, "HSET");
        queue_argv_add(a, store_key_queue_rcpts(key, m->id));
        for (size_t k = i; k < m->nrcpts && k < i + RCPTS_PER_HSET; k++)
            add_rcpt_fields(a, &m->rcpts[k], k);
        queue_argv_end(a, at);
    }

    at = queue_argv_begin(a);
    queue_argv_add(a, "ZADD");
    queue_argv_add(a, store_key_queue_due(key));
    queue_argv_addf(a, "%lld", (long long)due_ms);
    queue_argv_add(a, m->id);
    queue_argv_end(a, at);
}
