/*
 * queue.c - samotop-queue's state, its hooks and its Redis connection.
 *
 * The queue lives in Redis; this process holds only the messages it is
 * working on. Start-up never waits for Redis: the asynchronous connection
 * keeps trying, queue.submit answers 451 meanwhile, and the scheduler
 * looks again at its next tick.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

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

int
queue_cmd_argv(queue_t *q, queue_store_fn *fn, void *arg,
               const struct queue_argv *a)
{
    return queue_cmd(q, fn, arg, a->n, (const char *const *)a->v, a->lens);
}

void
queue_maybe_free(queue_t *q)
{
    if (!q->closing || q->in_fini || q->submits > 0 || q->inflight > 0 ||
        q->claiming)
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
    q->store = store_async_new(actor_loop(a), cfg, QUEUE_REDIS_TIMEOUT_MS);
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
