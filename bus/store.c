#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "store.h"

/* store_reply_t is hiredis's redisReply seen through accessors. */
struct store_reply {
    redisReply r;
};

#define R(x) (&(x)->r)

struct store {
    redisContext *c;
};

static int
auth(redisContext *c, const char *password, char *why, size_t whylen)
{
    redisReply *r;

    if (*password == '\0')
        return 0;
    r = redisCommand(c, "AUTH %s", password);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "redis AUTH failed: %s",
                 r ? r->str : c->errstr);
        if (r)
            freeReplyObject(r);
        return ERR_REDIS;
    }
    freeReplyObject(r);
    return 0;
}

store_t *
store_connect(const config_t *cfg, int timeout_ms, char *why, size_t whylen)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    const char *host = config_str(cfg, "redis.host");
    int port = (int)config_int(cfg, "redis.port");
    store_t *s;
    redisContext *c = redisConnectWithTimeout(host, port, tv);

    if (c == NULL || c->err) {
        snprintf(why, whylen, "cannot reach redis at %s:%d: %s", host, port,
                 c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (auth(c, config_str(cfg, "redis.password"), why, whylen) != 0) {
        redisFree(c);
        return NULL;
    }
    s = xcalloc(1, sizeof(*s));
    s->c = c;
    return s;
}

void
store_destroy(store_t **store_p)
{
    store_t *s = *store_p;

    if (s == NULL)
        return;
    redisFree(s->c);
    free(s);
    *store_p = NULL;
}

int
store_cmd(store_t *s, store_reply_t **reply_out, char *why, size_t whylen,
          int argc, const char *const *argv, const size_t *lens)
{
    size_t l[64];
    redisReply *r;

    *reply_out = NULL;
    if (argc > 64) {
        snprintf(why, whylen, "too many arguments");
        return ERR_INVAL;
    }
    for (int i = 0; i < argc; i++)
        l[i] = lens ? lens[i] : strlen(argv[i]);
    r = redisCommandArgv(s->c, argc, (const char **)argv, l);
    if (r == NULL) {
        snprintf(why, whylen, "redis: %s", s->c->errstr);
        return ERR_REDIS;
    }
    *reply_out = (store_reply_t *)r;
    return 0;
}

int
store_cmdl(store_t *s, store_reply_t **reply_out, char *why, size_t whylen,
           ...)
{
    const char *argv[64];
    int argc = 0;
    va_list ap;

    va_start(ap, whylen);
    while (argc < 64 && (argv[argc] = va_arg(ap, const char *)) != NULL)
        argc++;
    va_end(ap);
    return store_cmd(s, reply_out, why, whylen, argc, argv, NULL);
}

void
store_reply_free(store_reply_t **reply_p)
{
    if (*reply_p)
        freeReplyObject(R(*reply_p));
    *reply_p = NULL;
}

enum store_type
store_reply_type(const store_reply_t *r)
{
    switch (r->r.type) {
    case REDIS_REPLY_INTEGER:
        return STORE_INT;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        return STORE_STR;
    case REDIS_REPLY_ARRAY:
        return STORE_ARRAY;
    case REDIS_REPLY_ERROR:
        return STORE_ERROR;
    default:
        return STORE_NIL;
    }
}

long long
store_reply_int(const store_reply_t *r)
{
    return r->r.type == REDIS_REPLY_INTEGER ? r->r.integer : 0;
}

const char *
store_reply_str(const store_reply_t *r, size_t *len)
{
    if (r->r.type != REDIS_REPLY_STRING && r->r.type != REDIS_REPLY_STATUS &&
        r->r.type != REDIS_REPLY_ERROR)
        return NULL;
    if (len)
        *len = r->r.len;
    return r->r.str;
}

size_t
store_reply_count(const store_reply_t *r)
{
    return r->r.type == REDIS_REPLY_ARRAY ? r->r.elements : 0;
}

const store_reply_t *
store_reply_at(const store_reply_t *r, size_t i)
{
    if (r->r.type != REDIS_REPLY_ARRAY || i >= r->r.elements)
        return NULL;
    return (const store_reply_t *)r->r.element[i];
}

/* The asynchronous side: hiredis's event hooks mapped onto our loop. */

#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 2000

struct store_async {
    loop_t *loop;
    char *host, *password;
    int port, timeout_ms;
    redisAsyncContext *ac;
    int fd, events;   /* what the loop watches for hiredis */
    int connected;
    int closing; /* store_async_destroy() is under way */
    /* Frames of ours on the stack that touch s after a user callback may
     * have run (on_fd, on_timeout, store_async_destroy): a destroy from a
     * callback leaves the freeing to the outermost of them. */
    int depth;
    int dead; /* destroyed: free when depth is back to 0 */
    int backoff_ms;
    loop_timer_t *reconnect;
    struct pending *pending; /* commands sent, oldest first */
};

/* One command in flight. It stays on the list until hiredis calls back,
 * even after its deadline has failed it, so that hiredis's own callback
 * never finds it freed. */
struct pending {
    store_async_t *s;
    store_cb *cb;
    void *arg;
    loop_timer_t *timer;
    int answered;
    struct pending *prev, *next;
};

static void async_connect(store_async_t *s);
static void async_free(store_async_t *s);

static void
enter(store_async_t *s)
{
    s->depth++;
}

/* Leaves a frame; s may be freed by it, and must not be touched after. */
static void
leave(store_async_t *s)
{
    if (--s->depth == 0 && s->dead)
        async_free(s);
}

static void
ev_update(store_async_t *s, int events)
{
    if (s->fd < 0 || events == s->events)
        return;
    s->events = events;
    loop_fd_mod(s->loop, s->fd, events);
}

static void
ev_add_read(void *priv)
{
    store_async_t *s = priv;

    ev_update(s, s->events | LOOP_READ);
}

static void
ev_del_read(void *priv)
{
    store_async_t *s = priv;

    ev_update(s, s->events & ~LOOP_READ);
}

static void
ev_add_write(void *priv)
{
    store_async_t *s = priv;

    ev_update(s, s->events | LOOP_WRITE);
}

static void
ev_del_write(void *priv)
{
    store_async_t *s = priv;

    ev_update(s, s->events & ~LOOP_WRITE);
}

static void
ev_cleanup(void *priv)
{
    store_async_t *s = priv;

    if (s->fd >= 0)
        loop_fd_del(s->loop, s->fd);
    s->fd = -1;
    s->events = 0;
}

static void
on_fd(loop_t *loop, int fd, int events, void *arg)
{
    store_async_t *s = arg;

    (void)loop;
    (void)fd;
    /* hiredis may free the context inside either call (on an error), so
     * look at s->ac again between them; a callback may also destroy s,
     * whose context hiredis then frees before HandleRead returns. */
    enter(s);
    if ((events & LOOP_READ) && s->ac)
        redisAsyncHandleRead(s->ac);
    if ((events & LOOP_WRITE) && s->ac && !s->closing)
        redisAsyncHandleWrite(s->ac);
    leave(s);
}

static void
on_reconnect(loop_t *loop, void *arg)
{
    store_async_t *s = arg;

    (void)loop;
    s->reconnect = NULL;
    async_connect(s);
}

static void
schedule_reconnect(store_async_t *s)
{
    if (s->reconnect || s->closing)
        return;
    s->reconnect = loop_timer_add(s->loop, s->backoff_ms, on_reconnect, s);
    s->backoff_ms *= 2;
    if (s->backoff_ms > RECONNECT_MAX_MS)
        s->backoff_ms = RECONNECT_MAX_MS;
}

static void
on_connected(const redisAsyncContext *ac, int status)
{
    store_async_t *s = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        log_warn(NULL, "redis_connect_failed", "addr=%s:%d reason=%s",
                 s->host, s->port, log_q(ac->errstr));
        s->ac = NULL;
        s->connected = 0;
        schedule_reconnect(s);
        return;
    }
    s->connected = 1;
    s->backoff_ms = RECONNECT_MIN_MS;
    log_info(NULL, "redis_connected", "addr=%s:%d", s->host, s->port);
}

static void
on_disconnected(const redisAsyncContext *ac, int status)
{
    store_async_t *s = ac->data;

    (void)status;
    if (s->connected)
        log_warn(NULL, "redis_disconnected", "addr=%s:%d reason=%s", s->host,
                 s->port, log_q(ac->errstr ? ac->errstr : "closed"));
    s->ac = NULL;
    s->connected = 0;
    if (!s->closing)
        schedule_reconnect(s);
}

/* The answer to AUTH: a wrong password would otherwise show only as
 * NOAUTH errors on every later command. */
static void
on_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    store_async_t *s = privdata;
    redisReply *r = reply;

    (void)ac;
    if (r && r->type == REDIS_REPLY_ERROR)
        log_err(NULL, "redis_auth_failed", "addr=%s:%d reason=%s", s->host,
                s->port, log_q(r->str));
}

static void
async_connect(store_async_t *s)
{
    redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);

    if (ac == NULL || ac->err) {
        log_warn(NULL, "redis_connect_failed", "addr=%s:%d reason=%s",
                 s->host, s->port, log_q(ac ? ac->errstr : "no memory"));
        if (ac)
            redisAsyncFree(ac);
        schedule_reconnect(s);
        return;
    }
    s->ac = ac;
    ac->data = s;
    s->fd = ac->c.fd;
    s->events = 0;
    if (loop_fd_add(s->loop, s->fd, 0, on_fd, s) != 0) {
        redisAsyncFree(ac);
        s->ac = NULL;
        s->fd = -1;
        schedule_reconnect(s);
        return;
    }
    ac->ev.data = s;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connected);
    redisAsyncSetDisconnectCallback(ac, on_disconnected);
    /* The connect completes when the socket becomes writable. */
    ev_add_write(s);
    if (*s->password) {
        const char *argv[2] = {"AUTH", s->password};

        redisAsyncCommandArgv(ac, on_auth, s, 2, argv, NULL);
    }
}

store_async_t *
store_async_new(loop_t *loop, const config_t *cfg, int timeout_ms)
{
    store_async_t *s = xcalloc(1, sizeof(*s));

    s->loop = loop;
    s->host = xstrdup(config_str(cfg, "redis.host"));
    s->port = (int)config_int(cfg, "redis.port");
    s->password = xstrdup(config_str(cfg, "redis.password"));
    s->timeout_ms = timeout_ms;
    s->fd = -1;
    s->backoff_ms = RECONNECT_MIN_MS;
    async_connect(s);
    return s;
}

static void
pending_unlink(store_async_t *s, struct pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        s->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
}

static void
on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct pending *p = privdata;
    store_async_t *s = p->s;

    (void)ac;
    pending_unlink(s, p);
    if (!p->answered) {
        loop_timer_cancel(s->loop, &p->timer);
        if (reply)
            p->cb(p->arg, 0, reply);
        else
            p->cb(p->arg, s->closing ? ERR_CLOSED : ERR_REDIS, NULL);
    }
    free(p);
}

static void
on_timeout(loop_t *loop, void *arg)
{
    struct pending *p = arg;
    store_async_t *s = p->s;

    (void)loop;
    p->timer = NULL;
    p->answered = 1;
    enter(s);
    p->cb(p->arg, ERR_TIMEOUT, NULL);
    if (s->closing) {
        /* The callback destroyed the store, which failed the rest. */
        leave(s);
        return;
    }
    log_warn(NULL, "redis_timeout", "addr=%s:%d timeout_ms=%d", s->host,
             s->port, s->timeout_ms);
    /* Drop the connection now (not redisAsyncDisconnect(), which would
     * wait for the replies of a Redis that has stalled): every pending
     * callback runs with no reply, then on_disconnected() reconnects. */
    if (s->ac) {
        redisAsyncFree(s->ac);
        s->ac = NULL;
        s->connected = 0;
        schedule_reconnect(s);
    }
    leave(s);
}

int
store_async_cmd(store_async_t *s, store_cb *cb, void *arg, int argc,
                const char *const *argv, const size_t *lens)
{
    struct pending *p;

    if (!s->connected || s->ac == NULL || s->closing)
        return ERR_REDIS;
    p = xcalloc(1, sizeof(*p));
    p->s = s;
    p->cb = cb;
    p->arg = arg;
    if (redisAsyncCommandArgv(s->ac, on_reply, p, argc, (const char **)argv,
                              lens) != REDIS_OK) {
        free(p);
        return ERR_REDIS;
    }
    p->next = s->pending;
    if (p->next)
        p->next->prev = p;
    s->pending = p;
    p->timer = loop_timer_add(s->loop, s->timeout_ms, on_timeout, p);
    return 0;
}

int
store_async_ready(const store_async_t *s)
{
    return s->connected;
}

static void
async_free(store_async_t *s)
{
    free(s->host);
    free(s->password);
    free(s);
}

void
store_async_destroy(store_async_t **store_p)
{
    store_async_t *s = *store_p;

    if (s == NULL)
        return;
    *store_p = NULL;
    if (s->closing)
        return; /* from a callback of the destroy further up the stack */
    loop_timer_cancel(s->loop, &s->reconnect);
    for (struct pending *p = s->pending; p; p = p->next)
        loop_timer_cancel(s->loop, &p->timer);
    /* From here callbacks get ERR_CLOSED, and no reconnect is scheduled. */
    s->closing = 1;
    s->dead = 1;
    enter(s);
    /* Calls every pending callback now or, when we are inside one of
     * hiredis's callbacks, as soon as it returns (on_fd is then on the
     * stack and frees s after that). */
    if (s->ac)
        redisAsyncFree(s->ac);
    leave(s);
}
