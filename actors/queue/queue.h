/*
 * queue.h - samotop-queue's parts: the queue kept in Redis (keys in
 * schemas/redis.md, built by bus/store_keys.h), queue.submit, the
 * scheduler that claims due messages under a lease and delivers them over
 * the bus (mailbox.deliver for local mailboxes, relay.send per remote
 * domain), the retry schedule and the DSNs it sends back to senders.
 *
 * queue.c holds the actor's state, its Redis plumbing and its hooks;
 * queue_submit.c the queue.submit handler; queue_sched.c the claim, load,
 * delivery and update of messages; queue_msg.c the message record as it
 * sits in Redis; queue_retry.c the backoff; queue_dsn.c (queue_dsn.h) the
 * RFC 3464 reports. Everything runs on the actor's loop thread.
 */
#ifndef SAMOTOP_QUEUE_H
#define SAMOTOP_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actor.h"
#include "lib/buf.h"
#include "store.h"

#include "queue_dsn.h"

/* A queue id: "<unix seconds>-<16 hex digits>", with room to spare. */
#define QUEUE_ID_MAX 40
/* Recipients one message may have: an alias may expand one RCPT into
 * many, so this is above smtp.max_rcpts. */
#define QUEUE_MAX_RCPTS 10000
/* Longest reverse-path or recipient address kept. */
#define QUEUE_MAX_ADDR 600
/* A Redis that has not answered in this long is taken for down. */
#define QUEUE_REDIS_TIMEOUT_MS 5000

/* RFC 3461 NOTIFY as bits; a recipient without NOTIFY has the default. */
enum {
    QUEUE_NOTIFY_NEVER = 1,
    QUEUE_NOTIFY_SUCCESS = 2,
    QUEUE_NOTIFY_FAILURE = 4,
    QUEUE_NOTIFY_DELAY = 8,
    QUEUE_NOTIFY_DEFAULT = QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY,
};

enum queue_status {
    QUEUE_PENDING,   /* to be tried (again) */
    QUEUE_DELIVERED, /* taken by the mailbox or the next hop (2xx) */
    QUEUE_FAILED,    /* failed for good; no DSN was due */
    QUEUE_BOUNCED,   /* failed for good; a DSN went to the sender */
};

/* One recipient of a message, as kept in samotop:{q}:rcpts:ID. */
struct queue_rcpt {
    bool local;      /* a mailbox of ours (mailbox.deliver), else relay.send */
    char *to;        /* the mailbox or the remote address */
    char *rcpt;      /* the forward-path the client gave, or NULL */
    char *orcpt;     /* RFC 3461 ORCPT (addr-type;xtext), or NULL */
    unsigned notify; /* QUEUE_NOTIFY_* */
    bool notify_given;
    enum queue_status status;
    int attempts;
    int64_t next_ms, last_ms;
    int code; /* the last attempt's outcome; 0 before any */
    char *ecode, *text, *mx;
    bool warned; /* a delayed DSN went for it */

    /* The round in hand (not stored). */
    bool tried, dirty;
    enum queue_action act; /* what a DSN of this round says of it */
    const char *dsn_ecode; /* Status for the DSN when not ecode (4.4.7) */
};

/* A message: its envelope (samotop:{q}:msg:ID), body and recipients. */
struct queue_msg {
    char id[QUEUE_ID_MAX];
    char *mail_from, *envid, *ret, *user, *client_ip, *trace, *dsn, *dsn_of;
    bool eight_bit, smtputf8;
    int64_t created_ms, expires_ms;
    char *body;
    size_t body_len;
    struct queue_rcpt *rcpts;
    size_t nrcpts;
};

/* The argument list of one Redis command or script, each item owned or
 * borrowed. */
struct queue_argv {
    char **v;
    size_t *lens;
    bool *owned;
    int n, cap;
};

/* queue_msg.c */

/* Writes a new queue id into out. */
void queue_msg_new_id(char out[QUEUE_ID_MAX]);

/* Whether s is a queue id of the form queue_msg_new_id() writes. */
bool queue_msg_id_ok(const char *s);

/* Frees what msg holds (not msg itself) and zeroes it. */
void queue_msg_clear(struct queue_msg *msg);

/* Reads a message from the replies of HGETALL msg, GET body and HGETALL
 * rcpts. Returns 0, ERR_NOTFOUND when the message is gone, or
 * ERR_MALFORMED (the reason in why) when the record is broken. */
int queue_msg_parse(struct queue_msg *msg, const char *id,
                    const store_reply_t *hash, const store_reply_t *body,
                    const store_reply_t *rcpts, char *why, size_t whylen);

/* Parses a NOTIFY list ("SUCCESS,DELAY"); 0 when it has no valid word. */
unsigned queue_notify_parse(const char *list);
/* Writes the NOTIFY bits as a comma list into out (64 bytes). */
void queue_notify_format(unsigned notify, char out[64]);

const char *queue_status_name(enum queue_status s);

/* Appends to a, as "N CMD ARG..." groups, the commands that write msg
 * whole: its hash, its body (borrowed: msg must outlive a), its
 * recipients, and its due entry at due_ms. */
void queue_msg_write(struct queue_argv *a, const struct queue_msg *msg,
                     int64_t due_ms);

/* Appends the group that writes every field of recipient i. */
void queue_msg_write_rcpt(struct queue_argv *a, const struct queue_msg *msg,
                          size_t i);

/* Argument lists. */
void queue_argv_init(struct queue_argv *a);
void queue_argv_free(struct queue_argv *a);
void queue_argv_add(struct queue_argv *a, const char *s);
/* Copies n bytes. */
void queue_argv_addn(struct queue_argv *a, const void *p, size_t n);
/* Borrows p, which must outlive the argument list. */
void queue_argv_addref(struct queue_argv *a, const void *p, size_t n);
void queue_argv_addf(struct queue_argv *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Starts a group for the update script: a count, filled in by
 * queue_argv_end(); returns the count's index. */
int queue_argv_begin(struct queue_argv *a);
void queue_argv_end(struct queue_argv *a, int at);

/* queue_retry.c */

/* The delay before attempt attempts + 1, after attempts (>= 1) failed:
 * min_s doubled for each failure after the first, within +-10% jitter
 * drawn from rnd, and never over max_s. */
int64_t queue_retry_delay_ms(int attempts, long min_s, long max_s,
                             uint32_t rnd);

/* The actor (queue.c). */

typedef struct queue queue_t;

/* A Lua script of the queue's. It goes to Redis by its SHA1 (EVALSHA),
 * loaded once per connection with SCRIPT LOAD, and as its text (EVAL)
 * only when Redis does not know it (NOSCRIPT: a restarted or flushed
 * Redis). */
struct queue_script {
    const char *name; /* for the log */
    const char *text;
    char sha[41]; /* lower-case hex, made by queue_init() */
};

/* Every script queue_sched.c runs, NULL-terminated. */
extern struct queue_script *const queue_sched_scripts[];

struct queue_conf {
    long scan_ms, lease_ms, max_inflight;
    long retry_min_s, retry_max_s, lifetime_s, delay_warn_s;
    long mailbox_timeout_ms, relay_timeout_ms, dsn_full_max;
    char hostname[256];
};

struct queue {
    actor_t *a;
    struct queue_conf conf;
    store_async_t *store;
    char owner[160]; /* this process's name in leases */
    bool closing, in_fini;
    /* Work still referring to the queue: submits waiting on Redis,
     * messages in hand. The queue outlives fini() until both are 0, since
     * bus replies may arrive while the bus client is destroyed. */
    int submits, inflight;
    loop_timer_t *scan;
    bool claiming, kick_again;
    /* Whether this connection was sent SCRIPT LOAD for every script;
     * cleared by anything that says the connection or the scripts went.
     * loading counts the SCRIPT LOADs that are out. */
    bool scripts_sent;
    int loading;
    struct queue_job *jobs;
    uint64_t submitted, delivered, bounced, deferred;
};

/* A callback for one Redis command: reply is borrowed, NULL with err. */
typedef void queue_store_fn(void *arg, int err, const store_reply_t *reply);

/* Sends one command; fn is called exactly once, later, unless an error is
 * returned (ERR_REDIS when Redis is away, ERR_CLOSED when stopping). */
int queue_cmd(queue_t *q, queue_store_fn *fn, void *arg, int argc,
              const char *const *argv, const size_t *lens);

/* Whether the connection to Redis is up now. When it is not, the scripts
 * are loaded again once it is. */
bool queue_store_ready(queue_t *q);

/* Runs script with argv (argc items: the key count, the keys, then the
 * arguments; lens may be NULL for C strings), copied: EVALSHA, and EVAL
 * again if Redis answers NOSCRIPT. fn gets the script's reply, called
 * exactly once, later, unless an error is returned (as queue_cmd()). */
int queue_script_cmd(queue_t *q, const struct queue_script *script,
                     queue_store_fn *fn, void *arg, int argc,
                     const char *const *argv, const size_t *lens);

/* Frees the queue once it is closing and nothing refers to it. */
void queue_maybe_free(queue_t *q);

int64_t queue_now_ms(void);

int queue_init(actor_t *a);
void queue_fini(actor_t *a);

/* queue_submit.c */
void queue_on_submit(actor_t *a, bus_request_t **req_p);

/* queue_sched.c */

/* Looks for due messages now (soon, when a look is under way). */
void queue_kick(queue_t *q);
/* Starts the periodic look. */
void queue_sched_start(queue_t *q);
/* Stops the scheduler: timers go, and messages in hand are dropped as
 * their outstanding calls come back. */
void queue_sched_stop(queue_t *q);

/* queue_metrics.c */

/* Registers the queue's metrics in m and samples the queue's depth from
 * Redis every sample_ms on loop; q is borrowed until queue_metrics_stop(),
 * which fini calls before the store goes. */
void queue_metrics_start(queue_t *q, metrics_t *m, loop_t *loop,
                         long sample_ms);
void queue_metrics_stop(void);
/* Counts a pending recipient's round as settle() decided it. */
void queue_metrics_rcpt(const struct queue_rcpt *r);
/* /ready (bus/actor.h): 0 while the Redis connection is up, else -1
 * with the reason in why. */
int queue_ready(actor_t *a, char *why, size_t whylen);

#endif
