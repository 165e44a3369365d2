/*
 * queue.c - samotop-queue's state, its hooks and its Redis connection.
 *
 * The queue lives in Redis; this process holds only the messages it is
 * working on. Start-up never waits for Redis: the asynchronous connection
 * keeps trying, queue.submit answers 451 meanwhile, and the scheduler
 * looks again at its next tick.
 *
 * Scripts go by their SHA1 (EVALSHA), a 40-byte argument in place of the
 * script's text, which hiredis would otherwise format into every command.
 * Before the first script on a connection, SCRIPT LOAD of every script is
 * pipelined ahead of it; Redis runs commands in order, so the EVALSHA
 * behind finds its script. Whatever makes Redis forget the scripts (a
 * restart, SCRIPT FLUSH, a new connection to a new server) turns up as a
 * NOSCRIPT error reply: the same command then goes again as EVAL, which
 * has not run, and the scripts are loaded anew before the next one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "queue.h"

int64_t
queue_now_ms(void)
{
    return clock_wall_us() / 1000;
}

int
queue_cmd(queue_t *q, queue_store_fn *fn, void *arg, int argc,
          const char *const *argv, const size_t *lens)
{
    if (q->closing || q->store == NULL)
        return ERR_CLOSED;
    return store_async_cmd(q->store, fn, arg, argc, argv, lens);
}

/* One script run: the command, in one block, kept until the reply in
 * case it must go again as EVAL. */
struct script_call {
    queue_t *q;
    const struct queue_script *script;
    queue_store_fn *fn;
    void *arg;
    int argc;
    const char **argv;
    size_t *lens;
};

static void
script_sha(struct queue_script *s)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(s->text, strlen(s->text), md, &n, EVP_sha1(), NULL) != 1 ||
        n != 20) {
        /* No SHA1 in this OpenSSL: a broken build, not an outage. */
        log_err(NULL, "queue_panic", "reason=\"no SHA1 for the scripts\"");
        abort();
    }
    for (unsigned int i = 0; i < n; i++) {
        s->sha[2 * i] = hex[md[i] >> 4];
        s->sha[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha[40] = '\0';
}

static void
on_script_loaded(void *arg, int err, const store_reply_t *r)
{
    queue_t *q = arg;
    const char *sha = r ? store_reply_str(r, NULL) : NULL;
    bool known = false;

    q->loading--;
    if (err != 0) {
        q->scripts_sent = false; /* the connection went */
    } else if (store_reply_type(r) != STORE_STR) {
        /* The EVALSHAs behind get NOSCRIPT and go again as EVAL. */
        log_warn(NULL, "queue_script_load_failed", "reply=%s", log_q(sha));
    } else {
        for (int i = 0; queue_sched_scripts[i]; i++)
            known |= strcmp(sha, queue_sched_scripts[i]->sha) == 0;
        if (!known)
            log_err(NULL, "queue_script_sha_mismatch", "sha=%s", log_q(sha));
    }
    queue_maybe_free(q);
}

/* Pipelines SCRIPT LOAD of every script, once per connection. */
static void
scripts_load(queue_t *q)
{
    if (q->scripts_sent || !store_async_ready(q->store))
        return;
    q->scripts_sent = true;
    for (int i = 0; queue_sched_scripts[i]; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", queue_sched_scripts[i]->text};

        if (store_async_cmd(q->store, on_script_loaded, q, 3, argv, NULL) !=
            0) {
            q->scripts_sent = false;
            return;
        }
        q->loading++;
    }
}

static void
on_script_reply(void *arg, int err, const store_reply_t *r)
{
    struct script_call *c = arg;
    queue_t *q = c->q;
    const char *e;
    int rc;

    if (err != 0)
        q->scripts_sent = false; /* the connection went */
    if (err == 0 && store_reply_type(r) == STORE_ERROR &&
        strcmp(c->argv[0], "EVALSHA") == 0 &&
        (e = store_reply_str(r, NULL)) != NULL &&
        strncmp(e, "NOSCRIPT", 8) == 0) {
        /* The script did not run: it can go again, whole. EVAL loads it
         * for the EVALSHAs after; the others are loaded before the next
         * script. */
        log_info(NULL, "queue_script_reload", "script=%s sha=%s",
                 c->script->name, c->script->sha);
        q->scripts_sent = false;
        c->argv[0] = "EVAL";
        c->argv[1] = c->script->text;
        c->lens[0] = 4;
        c->lens[1] = strlen(c->script->text);
        rc = queue_cmd(q, on_script_reply, c, c->argc, c->argv, c->lens);
        if (rc == 0)
            return;
        err = rc;
        r = NULL;
    }
    /* The callback may free q (queue_maybe_free()): nothing after it. */
    c->fn(c->arg, err, r);
    free(c);
}

bool
queue_store_ready(queue_t *q)
{
    if (q->store != NULL && store_async_ready(q->store))
        return true;
    /* Whatever comes back may be another server, or one restarted. */
    q->scripts_sent = false;
    return false;
}

int
queue_script_cmd(queue_t *q, const struct queue_script *script,
                 queue_store_fn *fn, void *arg, int argc,
                 const char *const *argv, const size_t *lens)
{
    struct script_call *c;
    size_t bytes = 0, n = (size_t)argc + 2;
    char *p;
    int rc;

    if (q->closing || q->store == NULL)
        return ERR_CLOSED;
    for (int i = 0; i < argc; i++)
        bytes += (lens ? lens[i] : strlen(argv[i])) + 1;
    /* One allocation: the call, the pointers, the lengths, the bytes. */
    c = xmalloc(sizeof(*c) + n * (sizeof(*c->argv) + sizeof(*c->lens)) + bytes);
    c->q = q;
    c->script = script;
    c->fn = fn;
    c->arg = arg;
    c->argc = (int)n;
    c->argv = (const char **)(c + 1);
    c->lens = (size_t *)(c->argv + n);
    p = (char *)(c->lens + n);
    c->argv[0] = "EVALSHA";
    c->lens[0] = 7;
    c->argv[1] = script->sha;
    c->lens[1] = 40;
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);

        memcpy(p, argv[i], len);
        p[len] = '\0';
        c->argv[i + 2] = p;
        c->lens[i + 2] = len;
        p += len + 1;
    }
    scripts_load(q);
    rc = store_async_cmd(q->store, on_script_reply, c, c->argc, c->argv,
                         c->lens);
    if (rc != 0) {
        q->scripts_sent = false;
        free(c);
    }
    return rc;
}

void
queue_maybe_free(queue_t *q)
{
    if (!q->closing || q->in_fini || q->submits > 0 || q->inflight > 0 ||
        q->claiming || q->loading > 0)
        return;
    log_info(NULL, "queue_stopped",
             "submitted=%llu delivered=%llu deferred=%llu bounced=%llu",
             (unsigned long long)q->submitted, (unsigned long long)q->delivered,
             (unsigned long long)q->deferred, (unsigned long long)q->bounced);
    free(q);
}

int
queue_init(actor_t *a)
{
    const config_t *cfg = actor_config(a);
    queue_t *q = xcalloc(1, sizeof(*q));
    struct queue_conf *c = &q->conf;
    const char *host = config_str(cfg, "hostname");
    unsigned char r[4] = {0};

    q->a = a;
    c->scan_ms = config_int(cfg, "queue.scan_ms");
    c->lease_ms = config_int(cfg, "queue.lease_ms");
    c->max_inflight = config_int(cfg, "queue.max_inflight");
    c->retry_min_s = config_int(cfg, "queue.retry_min_s");
    c->retry_max_s = config_int(cfg, "queue.retry_max_s");
    c->lifetime_s = config_int(cfg, "queue.lifetime_s");
    c->delay_warn_s = config_int(cfg, "queue.delay_warn_s");
    c->mailbox_timeout_ms = config_int(cfg, "queue.mailbox_timeout_ms");
    c->relay_timeout_ms = config_int(cfg, "queue.relay_timeout_ms");
    c->dsn_full_max = config_int(cfg, "queue.dsn_full_max");
    if (c->retry_max_s < c->retry_min_s)
        c->retry_max_s = c->retry_min_s;
    if (*host)
        snprintf(c->hostname, sizeof(c->hostname), "%s", host);
    else if (gethostname(c->hostname, sizeof(c->hostname) - 1) != 0 ||
             c->hostname[0] == '\0')
        snprintf(c->hostname, sizeof(c->hostname), "localhost");
    /* The nonce tells a restarted process with a reused pid from the one
     * that held a lease before it. */
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r[0] = (unsigned char)clock_mono_us();
    snprintf(q->owner, sizeof(q->owner), "%s/%d/%02x%02x%02x%02x",
             actor_name(a), (int)getpid(), r[0], r[1], r[2], r[3]);
    for (int i = 0; queue_sched_scripts[i]; i++)
        script_sha(queue_sched_scripts[i]);
    q->store = store_async_new(actor_loop(a), cfg, QUEUE_REDIS_TIMEOUT_MS);
    queue_metrics_start(q, actor_metrics(a), actor_loop(a),
                        config_int(cfg, "metrics.sample_ms"));
    actor_set_data(a, q);
    log_info(NULL, "queue_config",
             "owner=%s scan_ms=%ld lease_ms=%ld max_inflight=%ld "
             "retry_min_s=%ld retry_max_s=%ld lifetime_s=%ld "
             "delay_warn_s=%ld hostname=%s",
             q->owner, c->scan_ms, c->lease_ms, c->max_inflight, c->retry_min_s,
             c->retry_max_s, c->lifetime_s, c->delay_warn_s, c->hostname);
    queue_sched_start(q);
    return 0;
}

void
queue_fini(actor_t *a)
{
    queue_t *q = actor_data(a);

    if (q == NULL)
        return;
    q->closing = true;
    q->in_fini = true;
    queue_metrics_stop();
    queue_sched_stop(q);
    /* Fails every command still out: submits answer 451, messages in hand
     * are dropped (their leases expire and another process takes them). */
    store_async_destroy(&q->store);
    actor_set_data(a, NULL);
    q->in_fini = false;
    /* Messages whose bus calls are out stay until the bus client, which
     * is destroyed after this, fails those calls; the last frees q. */
    queue_maybe_free(q);
}
