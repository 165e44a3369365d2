/*
 * admin_queue.c - samotop-admin queue: the outbound queue in Redis, as
 * Postfix's mailq, postqueue -f and postsuper -d show and change it.
 *
 *   queue list
 *   queue show ID
 *   queue retry ID | --all
 *   queue delete ID
 *
 * The keys are the queue's (schemas/redis.md, "The queue"). retry makes
 * the pending recipients due now; delete removes the message without a
 * bounce, and a queue process working on it at that moment finds its
 * lease gone and writes nothing back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "admin.h"
#include "bus/store_keys.h"
#include "lib/xalloc.h"

#define QID_MAX 40

static int queue_list(struct admin_cmd *cmd);
static int queue_show(struct admin_cmd *cmd);
static int queue_retry(struct admin_cmd *cmd);
static int queue_delete(struct admin_cmd *cmd);

static const struct admin_sub queue_subs[] = {
    {"list", "", 0, 0, 0,
     "Lists the queued messages, oldest first: id, age, sender, pending\n"
     "and all recipients, the next attempt (\"active\" while a queue\n"
     "process works on it) and the last error.",
     queue_list},
    {"show", "ID", 1, 1, 0,
     "Shows message ID's envelope and each recipient's state.", queue_show},
    {"retry", "ID | --all", 0, 1, 0,
     "Makes the pending recipients of message ID (or of every message)\n"
     "due now, whatever their backoff.",
     queue_retry},
    {"delete", "ID", 1, 1, 0,
     "Removes message ID from the queue. No bounce is sent.", queue_delete},
    {NULL, NULL, 0, 0, 0, NULL, NULL}};

/* --all, taken out of argv before the sub-verb table sees it. */
static bool all_opt;

int
admin_queue(const config_t *cfg, int argc, char **argv)
{
    char **args = xcalloc((size_t)argc + 1, sizeof(*args));
    int n = 0, rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            while (i < argc)
                args[n++] = argv[i++];
            break;
        }
        if (strcmp(argv[i], "--all") == 0)
            all_opt = true;
        else
            args[n++] = argv[i];
    }
    rc = admin_sub_dispatch(cfg, "queue",
                            "The outbound queue: messages waiting for "
                            "delivery.",
                            queue_subs, n, args);
    free(args);
    return rc;
}

static long long
now_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* A queue id as samotop-queue makes them: digits, "-", 16 hex digits. */
static int
read_id(const struct admin_cmd *cmd, const char *s)
{
    size_t i = 0, n = strlen(s);

    while (s[i] >= '0' && s[i] <= '9')
        i++;
    if (i > 0 && n < QID_MAX && s[i] == '-' && n - i - 1 == 16 &&
        strspn(s + i + 1, "0123456789abcdef") == 16)
        return 0;
    return admin_fail(cmd,
                      "%s is not a queue id (like 1795957074-"
                      "5d41402abc4b2a76)",
                      s);
}

/* A span of time the way mailq users read it: 45s, 3m12s, 2h05m, 4d23h. */
static void
fmt_span(long long ms, char out[32])
{
    long long s = (ms < 0 ? -ms : ms) / 1000;

    if (s < 60)
        snprintf(out, 32, "%llds", s);
    else if (s < 3600)
        snprintf(out, 32, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, 32, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(out, 32, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

static void
fmt_time(long long ms, char out[64])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 64, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* An HGETALL reply, read by field name. */
struct hash {
    store_reply_t *r;
};

static const char *
hget(const struct hash *h, const char *field)
{
    size_t n = h->r ? store_reply_count(h->r) : 0;

    for (size_t i = 0; i + 1 < n; i += 2) {
        const char *f = store_reply_str(store_reply_at(h->r, i), NULL);

        if (f && strcmp(f, field) == 0)
            return store_reply_str(store_reply_at(h->r, i + 1), NULL);
    }
    return NULL;
}

static const char *
rget(const struct hash *h, long i, const char *name)
{
    char f[64];

    snprintf(f, sizeof(f), "%ld.%s", i, name);
    return hget(h, f);
}

static long long
num(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

static const char *
or_dash(const char *s)
{
    return s && *s ? s : "-";
}

/* A message's hashes and state. */
struct qmsg {
    struct hash msg, rcpts;
    long long due, lease_ms; /* lease_ms: PTTL, < 0 when none */
    long nrcpts, pending;
};

static void
qmsg_free(struct qmsg *m)
{
    store_reply_free(&m->msg.r);
    store_reply_free(&m->rcpts.r);
}

/* Reads message id; returns 0, 1 (no such message) or -1 (printed). */
static int
qmsg_read(admin_db_t *db, const char *id, struct qmsg *m)
{
    char k[STORE_KEY_MAX];
    store_reply_t *r;
    const char *s;

    memset(m, 0, sizeof(*m));
    m->msg.r = admin_db_cmd(db, "HGETALL", store_key_queue_msg(k, id), NULL);
    if (m->msg.r == NULL)
        return -1;
    if (store_reply_count(m->msg.r) == 0) {
        qmsg_free(m);
        return 1;
    }
    m->rcpts.r =
        admin_db_cmd(db, "HGETALL", store_key_queue_rcpts(k, id), NULL);
    r = admin_db_cmd(db, "ZSCORE", store_key_queue_due(k), id, NULL);
    if (m->rcpts.r == NULL || r == NULL) {
        store_reply_free(&r);
        qmsg_free(m);
        return -1;
    }
    s = store_reply_str(r, NULL);
    m->due = s ? (long long)strtod(s, NULL) : -1;
    store_reply_free(&r);
    r = admin_db_cmd(db, "PTTL", store_key_queue_lease(k, id), NULL);
    if (r == NULL) {
        qmsg_free(m);
        return -1;
    }
    m->lease_ms = store_reply_int(r);
    store_reply_free(&r);
    m->nrcpts = (long)num(hget(&m->msg, "nrcpts"));
    for (long i = 0; i < m->nrcpts; i++) {
        const char *st = rget(&m->rcpts, i, "status");

        m->pending += st == NULL || strcmp(st, "pending") == 0;
    }
    return 0;
}

static void
fmt_next(const struct qmsg *m, long long now, char out[48])
{
    char span[32];

    if (m->lease_ms > 0)
        snprintf(out, 48, "active");
    else if (m->due < 0)
        snprintf(out, 48, "-");
    else if (m->due <= now)
        snprintf(out, 48, "now");
    else {
        fmt_span(m->due - now, span);
        snprintf(out, 48, "in %s", span);
    }
}

/* The last error of the pending recipients: the latest attempt's. */
static void
fmt_last_error(const struct qmsg *m, char *out, size_t outlen)
{
    long long best = -1;

    snprintf(out, outlen, "-");
    for (long i = 0; i < m->nrcpts; i++) {
        const char *st = rget(&m->rcpts, i, "status");
        long long last = num(rget(&m->rcpts, i, "last_ms"));
        long long code = num(rget(&m->rcpts, i, "code"));

        if ((st && strcmp(st, "pending") != 0) || code < 400 || last < best)
            continue;
        best = last;
        snprintf(out, outlen, "%lld %s %s", code,
                 or_dash(rget(&m->rcpts, i, "ecode")),
                 or_dash(rget(&m->rcpts, i, "text")));
    }
}

/* The ids in the queue, oldest first (ids begin with their time). */
static store_reply_t *
queue_ids(admin_db_t *db)
{
    char k[STORE_KEY_MAX];

    return admin_db_cmd(db, "ZRANGE", store_key_queue_due(k), "0", "-1", NULL);
}

static int
cmp_ids(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    long long tx = strtoll(x, NULL, 10), ty = strtoll(y, NULL, 10);

    return tx != ty ? (tx < ty ? -1 : 1) : strcmp(x, y);
}

static int
queue_list(struct admin_cmd *cmd)
{
    admin_db_t *db = admin_db_open(cmd);
    store_reply_t *ids;
    const char **v;
    long long now = now_ms();
    size_t n, shown = 0;
    long pending = 0;
    int rc = 0;

    if (db == NULL)
        return 1;
    if ((ids = queue_ids(db)) == NULL) {
        admin_db_close(&db);
        return 1;
    }
    n = store_reply_count(ids);
    v = xcalloc(n + 1, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = store_reply_str(store_reply_at(ids, i), NULL);
    qsort(v, n, sizeof(*v), cmp_ids);
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct qmsg m;
        char age[32], next[48], err[512], rcpts[32];
        const char *from;
        int got = qmsg_read(db, v[i], &m);

        if (got < 0) {
            rc = 1;
            break;
        }
        if (got > 0)
            continue; /* delivered and gone since ZRANGE */
        if (shown++ == 0)
            printf("%-28s %-7s %-30s %-7s %-9s %s\n", "ID", "AGE", "SENDER",
                   "RCPTS", "NEXT", "LAST ERROR");
        fmt_span(now - num(hget(&m.msg, "created_ms")), age);
        fmt_next(&m, now, next);
        fmt_last_error(&m, err, sizeof(err));
        from = hget(&m.msg, "mail_from");
        snprintf(rcpts, sizeof(rcpts), "%ld/%ld", m.pending, m.nrcpts);
        printf("%-28s %-7s %-30s %-7s %-9s %s\n", v[i], age,
               from && *from ? from : "<>", rcpts, next, err);
        pending += m.pending;
        qmsg_free(&m);
    }
    if (rc == 0 && shown == 0)
        printf("queue is empty\n");
    else if (rc == 0)
        printf("-- %zu message%s, %ld recipient%s pending\n", shown,
               shown == 1 ? "" : "s", pending, pending == 1 ? "" : "s");
    free(v);
    store_reply_free(&ids);
    admin_db_close(&db);
    return rc;
}

static int
queue_show(struct admin_cmd *cmd)
{
    const char *id = cmd->argv[0], *s;
    long long now = now_ms(), t;
    char span[32], when[64], next[48];
    admin_db_t *db;
    struct qmsg m;
    int got;

    if (read_id(cmd, id) != 0)
        return 1;
    if ((db = admin_db_open(cmd)) == NULL)
        return 1;
    got = qmsg_read(db, id, &m);
    if (got != 0) {
        admin_db_close(&db);
        return got < 0 ? 1 : admin_fail(cmd, "no message %s in the queue", id);
    }
    s = hget(&m.msg, "mail_from");
    printf("id: %s\n", id);
    printf("sender: <%s>\n", s ? s : "");
    printf("user: %s\n", or_dash(hget(&m.msg, "user")));
    printf("client_ip: %s\n", or_dash(hget(&m.msg, "client_ip")));
    printf("trace: %s\n", or_dash(hget(&m.msg, "trace")));
    t = num(hget(&m.msg, "created_ms"));
    fmt_time(t, when);
    fmt_span(now - t, span);
    printf("arrived: %s (%s ago)\n", when, span);
    t = num(hget(&m.msg, "expires_ms"));
    fmt_time(t, when);
    fmt_span(t - now, span);
    printf("expires: %s (%s %s)\n", when, t >= now ? "in" : "for",
           t >= now ? span : "now");
    printf("size: %s\n", or_dash(hget(&m.msg, "size")));
    printf("envid: %s\n", or_dash(hget(&m.msg, "envid")));
    printf("ret: %s\n", or_dash(hget(&m.msg, "ret")));
    printf("8bit: %s smtputf8: %s\n",
           num(hget(&m.msg, "eight_bit")) ? "yes" : "no",
           num(hget(&m.msg, "smtputf8")) ? "yes" : "no");
    if ((s = hget(&m.msg, "dsn")) && *s)
        printf("dsn: %s, about %s\n", s, or_dash(hget(&m.msg, "dsn_of")));
    fmt_next(&m, now, next);
    printf("next attempt: %s\n", next);
    printf("recipients: %ld pending of %ld\n", m.pending, m.nrcpts);
    for (long i = 0; i < m.nrcpts; i++) {
        const char *mb = rget(&m.rcpts, i, "mailbox");
        const char *st = or_dash(rget(&m.rcpts, i, "status"));
        long long code = num(rget(&m.rcpts, i, "code"));

        printf("  %ld %s %s %s attempts=%lld", i, mb ? "mailbox" : "relay",
               mb ? mb : or_dash(rget(&m.rcpts, i, "addr")), st,
               num(rget(&m.rcpts, i, "attempts")));
        t = num(rget(&m.rcpts, i, "next_ms"));
        if (strcmp(st, "pending") == 0) {
            fmt_span(t - now, span);
            printf(" next=%s%s", t > now ? "in " : "", t > now ? span : "now");
        }
        printf("\n");
        if (code > 0)
            printf("    last: %lld %s %s%s%s\n", code,
                   or_dash(rget(&m.rcpts, i, "ecode")),
                   or_dash(rget(&m.rcpts, i, "text")),
                   rget(&m.rcpts, i, "mx") && *rget(&m.rcpts, i, "mx")
                       ? " from "
                       : "",
                   rget(&m.rcpts, i, "mx") ? rget(&m.rcpts, i, "mx") : "");
        printf("    rcpt=%s orcpt=%s notify=%s\n",
               or_dash(rget(&m.rcpts, i, "rcpt")),
               or_dash(rget(&m.rcpts, i, "orcpt")),
               or_dash(rget(&m.rcpts, i, "notify")));
    }
    qmsg_free(&m);
    admin_db_close(&db);
    return 0;
}

/* One attempt at making id's pending recipients due now: 0 done (*n the
 * recipients made due), 1 no such message (printed when loud), -1, or
 * ADMIN_RETRY. */
static int
retry_try(const struct admin_cmd *cmd, admin_db_t *db, const char *id,
          bool loud, long *n)
{
    char kmsg[STORE_KEY_MAX], krcpts[STORE_KEY_MAX], kdue[STORE_KEY_MAX],
        now[24];
    struct hash h = {NULL};
    const char *argv[2 + 2 * 31];
    char fields[31][48];
    long nr;
    int exists, argc = 0;

    *n = 0;
    store_key_queue_msg(kmsg, id);
    store_key_queue_rcpts(krcpts, id);
    store_key_queue_due(kdue);
    if (admin_db_watch(db, kmsg, krcpts, kdue, NULL) != 0)
        return -1;
    if ((exists = admin_db_exists(db, kmsg)) <= 0) {
        admin_db_unwatch(db);
        if (exists == 0 && loud)
            return admin_fail(cmd, "no message %s in the queue", id);
        return exists == 0 ? 1 : -1;
    }
    h.r = admin_db_cmd(db, "HGETALL", krcpts, NULL);
    if (h.r == NULL)
        return -1;
    {
        char *s = admin_db_hget(db, kmsg, "nrcpts");

        nr = s ? (long)num(s) : 0;
        free(s);
    }
    snprintf(now, sizeof(now), "%lld", now_ms());
    if (admin_db_multi(db) != 0) {
        store_reply_free(&h.r);
        return -1;
    }
    /* HSET in chunks, under admin_db's limit on arguments. */
    for (long i = 0; i < nr; i++) {
        const char *st = rget(&h, i, "status");

        if (st && strcmp(st, "pending") != 0)
            continue;
        if (argc == 0) {
            argv[argc++] = "HSET";
            argv[argc++] = krcpts;
        }
        snprintf(fields[(argc - 2) / 2], sizeof(fields[0]), "%ld.next_ms", i);
        argv[argc] = fields[(argc - 2) / 2];
        argv[argc + 1] = now;
        argc += 2;
        (*n)++;
        if (argc >= 2 + 2 * 30) {
            if (admin_db_queuev(db, argc, argv) != 0) {
                store_reply_free(&h.r);
                return -1;
            }
            argc = 0;
        }
    }
    store_reply_free(&h.r);
    if ((argc > 0 && admin_db_queuev(db, argc, argv) != 0) ||
        admin_db_queue(db, "ZADD", kdue, "XX", now, id, NULL) != 0)
        return -1;
    return admin_db_exec(db, NULL);
}

static int
retry_one(const struct admin_cmd *cmd, admin_db_t *db, const char *id,
          bool loud, long *n)
{
    int rc;

    ADMIN_RETRYING(rc, cmd, retry_try(cmd, db, id, loud, n));
    return rc;
}

static int
queue_retry(struct admin_cmd *cmd)
{
    admin_db_t *db;
    long n = 0, total = 0, msgs = 0;
    int rc = 0;

    if (all_opt == (cmd->argc == 1)) {
        fprintf(stderr, "%s: give either an ID or --all\n", cmd->name);
        fprintf(stderr, "usage: samotop-admin queue retry ID | --all\n");
        return 2;
    }
    if (!all_opt && read_id(cmd, cmd->argv[0]) != 0)
        return 1;
    if ((db = admin_db_open(cmd)) == NULL)
        return 1;
    if (!all_opt) {
        rc = retry_one(cmd, db, cmd->argv[0], true, &n);
        if (rc == 0)
            printf("queue %s: %ld recipient%s due now\n", cmd->argv[0], n,
                   n == 1 ? "" : "s");
    } else {
        store_reply_t *ids = queue_ids(db);

        if (ids == NULL)
            rc = 1;
        for (size_t i = 0; ids && i < store_reply_count(ids) && rc == 0; i++) {
            const char *id = store_reply_str(store_reply_at(ids, i), NULL);
            int one = retry_one(cmd, db, id, false, &n);

            if (one == 0) {
                msgs++;
                total += n;
            } else if (one != 1) { /* 1: gone meanwhile */
                rc = one;
            }
        }
        store_reply_free(&ids);
        if (rc == 0)
            printf("%ld message%s, %ld recipient%s due now\n", msgs,
                   msgs == 1 ? "" : "s", total, total == 1 ? "" : "s");
    }
    admin_db_close(&db);
    return rc;
}

static int
queue_delete(struct admin_cmd *cmd)
{
    const char *id = cmd->argv[0];
    char kmsg[STORE_KEY_MAX], kbody[STORE_KEY_MAX], krcpts[STORE_KEY_MAX],
        klease[STORE_KEY_MAX], kdue[STORE_KEY_MAX];
    store_reply_t *res = NULL;
    admin_db_t *db;
    int rc;

    if (all_opt) {
        fprintf(stderr, "%s: --all is only for queue retry\n", cmd->name);
        return 2;
    }
    if (read_id(cmd, id) != 0)
        return 1;
    if ((db = admin_db_open(cmd)) == NULL)
        return 1;
    store_key_queue_msg(kmsg, id);
    store_key_queue_body(kbody, id);
    store_key_queue_rcpts(krcpts, id);
    store_key_queue_lease(klease, id);
    store_key_queue_due(kdue);
    /* The lease goes too: a process delivering the message right now then
     * finds it gone and writes nothing back. */
    rc = admin_db_multi(db) != 0 ||
                 admin_db_queue(db, "DEL", kmsg, kbody, krcpts, klease, NULL) !=
                     0 ||
                 admin_db_queue(db, "ZREM", kdue, id, NULL) != 0
             ? -1
             : admin_db_exec(db, &res);
    if (rc == 0) {
        long long keys = store_reply_int(store_reply_at(res, 0));
        long long due = store_reply_int(store_reply_at(res, 1));

        if (keys == 0 && due == 0)
            rc = admin_fail(cmd, "no message %s in the queue", id);
        else
            printf("deleted message %s\n", id);
    }
    store_reply_free(&res);
    admin_db_close(&db);
    return rc < 0 ? 1 : rc;
}
