/*
 * tap_main.c - samotop-tap: shows the envelopes routed by the brokers.
 *
 *   samotop-tap [--json] [--trace ID] [--type GLOB] [--from ACTOR]
 *               [--count N] [--seconds S]
 *
 * Subscribes to every trace feed in bus.trace. One readable line per
 * envelope by default, one JSON object per line with --json. --trace
 * filters at the broker (the trace id is the feed's topic), the others
 * here. Secrets (schemas' x-samotop-secret fields, e.g. AUTH data) are
 * always masked, and long bodies shortened unless --full is given.
 */
#include <fnmatch.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <czmq.h>

#include "actor.h"
#include "envelope.h"
#include "frames.h"
#include "lib/err.h"
#include "lib/log.h"

struct tap {
    int json, full;
    const char *trace, *type_glob, *from;
    long count, seen;
    size_t max_envelope;
};

/* "guard" matches "guard/1"; "guard/1" matches only itself. */
static int
from_matches(const char *want, const char *from)
{
    size_t n = strlen(want);

    return strncmp(want, from, n) == 0 && (from[n] == '\0' || from[n] == '/');
}

static void
print_readable(const envelope_t *env, int flags)
{
    char when[32];
    const value_t *body = envelope_body_peek(env);
    int64_t ts = envelope_ts(env);
    time_t secs = (time_t)(ts / 1000000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    strftime(when, sizeof(when), "%H:%M:%S", &tm);
    printf("%s.%06lld %s %-22s %-14s", when, (long long)(ts % 1000000),
           envelope_trace(env), envelope_type(env), envelope_from(env));
    if (envelope_re(env))
        printf(" re=%s", envelope_re(env));
    else
        printf(" id=%s", envelope_id(env));
    /* The body's top-level fields as key=value, values in JSON. */
    for (size_t i = 0; i < value_count(body); i++) {
        const char *k = value_key_at(body, i);
        char *v;

        if ((flags & ENVELOPE_JSON_MASK) && envelope_key_is_secret(k)) {
            printf(" %s=***", k);
            continue;
        }
        v = envelope_value_to_json(value_at(body, i), flags);
        printf(" %s=%s", k, v);
        free(v);
    }
    printf("\n");
}

static int
on_message(loop_t *loop, void *zsocket, void *arg)
{
    struct tap *t = arg;
    zmq_msg_t f[FRAMES_MAX];
    envelope_t *env = NULL;
    char why[256];
    int n = frames_recv(zsocket, f, FRAMES_MAX), rc;
    int flags = ENVELOPE_JSON_MASK | (t->full ? 0 : ENVELOPE_JSON_ABBREV);

    if (n <= 0)
        return 0;
    if (n != 3) {
        fprintf(stderr, "samotop-tap: message of %d frames skipped\n", n);
        goto out;
    }
    rc = envelope_decode(zmq_msg_data(&f[2]), zmq_msg_size(&f[2]),
                         t->max_envelope, &env, why, sizeof(why));
    if (rc != 0) {
        fprintf(stderr, "samotop-tap: undecodable envelope: %s: %s\n",
                err_name(rc), why);
        goto out;
    }
    if (t->trace && strcmp(t->trace, envelope_trace(env)) != 0)
        goto out; /* the topic is a prefix: keep exact matches only */
    if (t->type_glob && fnmatch(t->type_glob, envelope_type(env), 0) != 0)
        goto out;
    if (t->from && !from_matches(t->from, envelope_from(env)))
        goto out;
    if (t->json) {
        char *j = envelope_to_json(env, flags);

        printf("%s\n", j);
        free(j);
    } else {
        print_readable(env, flags);
    }
    fflush(stdout);
    if (t->count > 0 && ++t->seen >= t->count)
        loop_stop(loop);
out:
    envelope_destroy(&env);
    frames_close(f, n < FRAMES_MAX ? n : FRAMES_MAX);
    return 1;
}

static void
on_stop(loop_t *loop, int signo, void *arg)
{
    (void)signo;
    (void)arg;
    loop_stop(loop);
}

static void
on_time_up(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

enum {
    OPT_JSON = 256,
    OPT_FULL,
    OPT_TRACE,
    OPT_TYPE,
    OPT_FROM,
    OPT_COUNT,
    OPT_SECONDS
};

static long tap_seconds;

static int
on_option(int opt, const char *arg, void *ctx)
{
    struct tap *t = ctx;
    char *end = NULL;

    switch (opt) {
    case OPT_JSON: t->json = 1; return 0;
    case OPT_FULL: t->full = 1; return 0;
    case OPT_TRACE: t->trace = arg; return 0;
    case OPT_TYPE: t->type_glob = arg; return 0;
    case OPT_FROM: t->from = arg; return 0;
    case OPT_COUNT:
        t->count = strtol(arg, &end, 10);
        if (*end || t->count < 1) {
            fprintf(stderr, "samotop-tap: --count wants a number > 0\n");
            return -1;
        }
        return 0;
    case OPT_SECONDS:
        tap_seconds = strtol(arg, &end, 10);
        if (*end || tap_seconds < 1) {
            fprintf(stderr, "samotop-tap: --seconds wants a number > 0\n");
            return -1;
        }
        return 0;
    }
    return -1;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"full", no_argument, NULL, OPT_FULL},
        {"trace", required_argument, NULL, OPT_TRACE},
        {"type", required_argument, NULL, OPT_TYPE},
        {"from", required_argument, NULL, OPT_FROM},
        {"count", required_argument, NULL, OPT_COUNT},
        {"seconds", required_argument, NULL, OPT_SECONDS},
        {NULL, 0, NULL, 0}};
    struct tap t = {0};
    struct actor_args args;
    char **eps;
    int rc, neps;
    zsock_t *zs;
    loop_t *loop;

    rc = actor_args_parse_opts(argc, argv, "tap", &args, opts, on_option, &t);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    t.max_envelope = (size_t)config_int(args.cfg, "bus.max_envelope");
    zs = zsock_new(ZMQ_SUB);
    neps = config_list(config_str(args.cfg, "bus.trace"), &eps);
    for (int i = 0; i < neps; i++)
        if (zmq_connect(zsock_resolve(zs), eps[i]) != 0) {
            fprintf(stderr, "samotop-tap: cannot connect to %s\n", eps[i]);
            return 1;
        }
    config_list_free(&eps, neps);
    zmq_setsockopt(zsock_resolve(zs), ZMQ_SUBSCRIBE, t.trace ? t.trace : "",
                   t.trace ? strlen(t.trace) : 0);
    loop = loop_new();
    loop_signal_add(loop, SIGINT, on_stop, NULL);
    loop_signal_add(loop, SIGTERM, on_stop, NULL);
    loop_zmq_add(loop, zsock_resolve(zs), on_message, &t);
    if (tap_seconds > 0)
        loop_timer_add(loop, tap_seconds * 1000, on_time_up, NULL);
    loop_run(loop);
    loop_zmq_del(loop, zsock_resolve(zs));
    loop_destroy(&loop);
    zsock_destroy(&zs);
    actor_args_free(&args);
    return 0;
}
