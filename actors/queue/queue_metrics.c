/*
 * queue_metrics.c - what samotop-queue counts for /metrics
 * (lib/metrics.h): messages submitted; per recipient, attempts and results
 * by kind (mailbox for local mailboxes, relay for remote addresses) and
 * result (delivered, deferred, bounced, failed); and the depth of the
 * queue (messages, recipients still pending) with the age of its oldest
 * message, read from Redis every metrics.sample_ms.
 *
 * The sample is one read-only Lua script over the due set, sent through
 * the queue's own asynchronous connection (queue_cmd), so the loop never
 * waits for it; at most one is out at a time. It looks at the
 * SAMPLE_MAX_MSGS messages due first. XXX: past that many the depth in
 * messages stays exact (ZCARD) but recipients and the oldest age count
 * only those looked at; samotop_queue_sampled_messages says how many.
 * Every queue copy shares the same Redis, so every copy reports the same
 * depth: aggregate it with max(), not sum().
 */
#include <stdio.h>
#include <stdlib.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "queue.h"
#include "store_keys.h"

#define SAMPLE_MAX_MSGS 5000

/* KEYS[1] the due set; ARGV: the most messages to look at, the msg: and
 * rcpts: key prefixes. Returns {messages, pending recipients, the oldest
 * created_ms (0: none), messages looked at}. HMGET goes in chunks, since
 * unpack() has a limit of its own. */
static const char sample_lua[] =
    "local n = redis.call('ZCARD', KEYS[1])\n"
    "local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)\n"
    "local pending, oldest = 0, 0\n"
    "for _, id in ipairs(ids) do\n"
    "  local f = redis.call('HMGET', ARGV[2] .. id, 'created_ms', 'nrcpts')\n"
    "  local c = tonumber(f[1])\n"
    "  if c and (oldest == 0 or c < oldest) then oldest = c end\n"
    "  local nr = tonumber(f[2]) or 0\n"
    "  local i = 0\n"
    "  while i < nr do\n"
    "    local fields = {}\n"
    "    for k = i, math.min(nr, i + 500) - 1 do\n"
    "      fields[#fields + 1] = k .. '.status'\n"
    "    end\n"
    "    i = i + 500\n"
    "    for _, st in ipairs(redis.call('HMGET', ARGV[3] .. id,\n"
    "                                   unpack(fields))) do\n"
    "      if st == 'pending' then pending = pending + 1 end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {n, pending, oldest, #ids}\n";

static struct {
    queue_t *q;
    loop_t *loop;
    long sample_ms;
    loop_timer_t *timer;
    bool out; /* a sample is with Redis */
    metric_t *submitted, *attempts, *results, *messages, *rcpts, *age, *sampled,
        *sample_errors;
} qm;

static void on_timer(loop_t *loop, void *arg);

static void
on_sample(void *arg, int err, const store_reply_t *r)
{
    long long created;

    (void)arg;
    qm.out = false;
    if (err != 0 || store_reply_type(r) != STORE_ARRAY ||
        store_reply_count(r) != 4) {
        metrics_inc(qm.sample_errors, NULL);
        log_debug(NULL, "queue_sample_failed", "err=%s",
                  err ? err_name(err) : "reply");
        return;
    }
    metrics_set(qm.messages, NULL,
                (double)store_reply_int(store_reply_at(r, 0)));
    metrics_set(qm.rcpts, NULL, (double)store_reply_int(store_reply_at(r, 1)));
    created = store_reply_int(store_reply_at(r, 2));
    metrics_set(qm.age, NULL,
                created > 0 ? (double)(clock_wall_us() / 1000 - created) / 1e3
                            : 0);
    metrics_set(qm.sampled, NULL,
                (double)store_reply_int(store_reply_at(r, 3)));
}

static void
on_timer(loop_t *loop, void *arg)
{
    char due[STORE_KEY_MAX], msg[STORE_KEY_MAX], rcpts[STORE_KEY_MAX];
    char cap[16];

    (void)arg;
    qm.timer = loop_timer_add(loop, qm.sample_ms, on_timer, NULL);
    if (qm.out || !queue_store_ready(qm.q))
        return;
    snprintf(cap, sizeof(cap), "%d", SAMPLE_MAX_MSGS);
    {
        const char *argv[] = {"EVAL",
                              sample_lua,
                              "1",
                              store_key_queue_due(due),
                              cap,
                              store_key_queue_msg(msg, ""),
                              store_key_queue_rcpts(rcpts, "")};

        if (queue_cmd(qm.q, on_sample, NULL, 7, argv, NULL) == 0)
            qm.out = true;
    }
}

static void
on_collect(metrics_t *m, void *arg)
{
    (void)m;
    (void)arg;
    if (qm.q)
        metrics_set(qm.submitted, NULL, (double)qm.q->submitted);
}

void
queue_metrics_start(queue_t *q, metrics_t *m, loop_t *loop, long sample_ms)
{
    qm.q = q;
    qm.loop = loop;
    qm.sample_ms = sample_ms;
    qm.submitted = metrics_counter(m, "samotop_queue_submitted_total",
                                   "Messages taken into the queue", NULL);
    qm.attempts = metrics_counter(
        m, "samotop_queue_delivery_attempts_total",
        "Delivery attempts per recipient, by kind (mailbox, relay)", "kind");
    qm.results = metrics_counter(
        m, "samotop_queue_delivery_results_total",
        "Recipients' outcomes by kind and result (delivered, deferred, "
        "bounced, failed: for good without a DSN)",
        "kind,result");
    qm.messages =
        metrics_gauge(m, "samotop_queue_messages",
                      "Messages in the queue (sampled from Redis)", NULL);
    qm.rcpts = metrics_gauge(
        m, "samotop_queue_recipients",
        "Recipients still pending in the queue (sampled from Redis)", NULL);
    qm.age = metrics_gauge(m, "samotop_queue_oldest_age_seconds",
                           "Age of the oldest message in the queue "
                           "(sampled from Redis)",
                           NULL);
    qm.sampled = metrics_gauge(
        m, "samotop_queue_sampled_messages",
        "Messages the last sample looked at (at most 5000)", NULL);
    qm.sample_errors = metrics_counter(m, "samotop_queue_sample_errors_total",
                                       "Samples Redis did not answer", NULL);
    metrics_on_collect(m, on_collect, NULL);
    qm.timer = loop_timer_add(loop, 0, on_timer, NULL);
}

void
queue_metrics_stop(void)
{
    if (qm.loop)
        loop_timer_cancel(qm.loop, &qm.timer);
    qm.q = NULL;
}

int
queue_ready(actor_t *a, char *why, size_t whylen)
{
    queue_t *q = actor_data(a);

    if (q && queue_store_ready(q))
        return 0;
    snprintf(why, whylen, "no connection to redis");
    return -1;
}

void
queue_metrics_rcpt(const struct queue_rcpt *r)
{
    const char *kind = r->local ? "mailbox" : "relay", *result;

    if (r->tried)
        metrics_inc(qm.attempts, METRICS_L(kind));
    switch (r->status) {
    case QUEUE_DELIVERED:
        result = "delivered";
        break;
    case QUEUE_BOUNCED:
        result = "bounced";
        break;
    case QUEUE_FAILED:
        result = "failed";
        break;
    default:
        if (!r->tried)
            return;
        result = "deferred";
    }
    metrics_inc(qm.results, METRICS_L(kind, result));
}
