/*
 * broker.h - samotop-bus, the broker: routes requests to workers by
 * service name and replies back, and publishes every envelope it routes on
 * its trace feed (protocol in proto.h).
 *
 * A request goes to the worker of its service with the fewest requests in
 * hand for its capacity, round-robin among equals, so that every ready
 * worker shares the load. When all are full it waits in the service's
 * queue; when the service has no worker at all the caller is told at once
 * (ERR_NOWORKER). A worker silent for liveness heartbeats is dropped, and
 * the callers of the requests it held get ERR_WORKER_LOST at once.
 * The broker never decodes an envelope: it moves frames.
 */
#ifndef SAMOTOP_BROKER_H
#define SAMOTOP_BROKER_H

#include <stddef.h>

#include "lib/loop.h"
#include "lib/metrics.h"

typedef struct broker broker_t;

struct broker_opts {
    const char *clients; /* comma lists of endpoints to bind */
    const char *workers;
    const char *trace;
    int heartbeat_ms;
    int liveness;
    int queue_ms; /* longest a request waits for a free worker */
};

/* Binds every endpoint; NULL with the reason in why on failure. */
broker_t *broker_new(loop_t *loop, const struct broker_opts *opts, char *why,
                     size_t whylen);
void broker_destroy(broker_t **broker_p);

/* Counts requests routed and refused, and shows workers and waiting
 * requests per service, in m (borrowed; it must outlive the broker). */
void broker_set_metrics(broker_t *b, metrics_t *m);

#endif
