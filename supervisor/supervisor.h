/*
 * supervisor.h - samotopd: starts, watches and restarts the processes of
 * one host.
 *
 * The supervisor owns a table of children: redis-server (when
 * supervisor.redis is yes), the broker and the copies of each actor. It
 * starts them in that order, waiting for Redis to answer PING before
 * anything that needs it runs, restarts any that dies after a backoff that
 * doubles from supervisor.backoff_min_ms up to supervisor.backoff_max_ms
 * (reset once a child has run 10 s), and stops them in the reverse order
 * on SIGTERM or SIGINT: actors, then the broker, then redis-server, each
 * group given supervisor.stop_timeout_ms before SIGKILL (a second signal
 * kills at once). Everything runs on one loop_t in the calling thread.
 *
 * $DATA/samotopd.pid is held under flock() for the whole run, so two
 * supervisors never share a data folder. samotopd is a child subreaper:
 * orphans its children leave are killed at the stop, so no process it
 * started outlives it. With supervisor.bus above 1, broker copy n binds
 * the n-th item of each broker.* list. With metrics.listen = HOST:BASE,
 * each child serves its metrics on a port of its own, BASE + 10 * slot +
 * copy - 1 (slots: bus 0, listener 1, auth 2, guard 3, mailbox 4, queue 5,
 * relay 6; see metrics_endpoint() in supervisor.c).
 */
#ifndef SAMOTOP_SUPERVISOR_H
#define SAMOTOP_SUPERVISOR_H

#include "lib/config.h"

/* How samotopd was started, beyond the configuration itself. */
struct supervisor_opts {
    const char *config_path; /* --config or $SAMOTOP_CONFIG; NULL: none */
    char *const *sets;       /* the --set "key=value" arguments, as given */
    int nsets;
};

/* Runs the supervisor for cfg until it is told to stop, and returns the
 * process exit status: 0 after a clean stop. Start-up failures (data
 * folder, pid file, a missing executable, Redis not answering) are logged
 * with log_fatal() and do not return. cfg is borrowed for the whole run. */
int supervisor_main(const config_t *cfg, const struct supervisor_opts *opts);

/* The delay before the next start of a child that ran ran_ms and whose
 * current backoff is *backoff_ms (0 before the first restart); updates
 * *backoff_ms for the restart after that. */
long supervisor_backoff_next(long *backoff_ms, long ran_ms, long min_ms,
                             long max_ms);

/*
 * supervisor_redis.c: the supervisor's own redis-server.
 */

/* Writes the redis.conf of the local profile for cfg into path (mode 0600,
 * since it may hold the password). Returns 0, or ERR_SYS with the reason
 * in why. */
int supervisor_redis_write_conf(const config_t *cfg, const char *redis_dir,
                                const char *path, char *why, size_t whylen);

/* Asks the Redis of cfg for PING, waiting at most timeout_ms for the
 * connection and the answer. Returns 0 on PONG, ERR_REDIS otherwise, with
 * the reason in why. */
int supervisor_redis_ping(const config_t *cfg, long timeout_ms, char *why,
                          size_t whylen);

#endif
