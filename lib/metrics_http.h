/*
 * metrics_http.h - the HTTP door of a process's metrics and health:
 * GET /metrics (metrics.h's exposition), /health, /ready and /live.
 *
 * HTTP is spoken by GNU libmicrohttpd (Debian's libmicrohttpd12), in its
 * external epoll mode: MHD's epoll descriptor is watched by the process's
 * own loop (lib/loop.h) and MHD_run() is called from it, so requests are
 * answered on the loop thread, the registry needs no lock, and the
 * process gains no thread. A well-kept parser was preferred over one of
 * our own for a door that operators expose to their monitoring network;
 * it is held to small limits (a few connections, 16 KiB of memory each,
 * a 10 s idle timeout) and answers only GET and HEAD.
 *
 *   /metrics  200, text/plain; version=0.0.4
 *   /health   200 "ok" when the health check passes, else 503 with why
 *   /ready    200 "ok" when the ready check passes, else 503 with why
 *   /live     200 "ok" whenever the loop answers (Kubernetes liveness)
 *
 * The listening socket is bound without SO_REUSEPORT, so two processes
 * given the same port fail loudly instead of sharing it. The server
 * borrows the registry and the loop; the caller owns the server.
 */
#ifndef SAMOTOP_METRICS_HTTP_H
#define SAMOTOP_METRICS_HTTP_H

#include <stddef.h>

#include "loop.h"
#include "metrics.h"

typedef struct metrics_http metrics_http_t;

/* Returns 0 when the check passes, or -1 with a short reason in why. */
typedef int metrics_http_check_fn(void *arg, char *why, size_t whylen);

struct metrics_http_opts {
    const char *listen;            /* "HOST:PORT"; port 0: the kernel picks */
    metrics_t *metrics;            /* borrowed */
    metrics_http_check_fn *health; /* NULL: always ok */
    metrics_http_check_fn *ready;  /* NULL: same as health */
    void *arg;                     /* for the checks */
};

/* Binds, listens and starts serving on loop. Returns NULL with the
 * reason (naming the address) in why when the address is bad or cannot be
 * bound. */
metrics_http_t *metrics_http_new(loop_t *loop,
                                 const struct metrics_http_opts *opts,
                                 char *why, size_t whylen);

/* Closes every connection and the listening socket; NULL ok. */
void metrics_http_destroy(metrics_http_t **http_p);

/* The port actually bound (the one picked when 0 was asked). */
int metrics_http_port(const metrics_http_t *http);

#endif
