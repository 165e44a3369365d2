/*
 * bus.h - talking over the bus: the client side (send a request to a
 * service, get its reply or an error by the deadline) and the worker side
 * (register a service, take requests, reply).
 *
 * Both run on a lib/loop.h loop. The client connects one DEALER socket to
 * every broker in its list (ZMQ_IMMEDIATE, so requests go only to brokers
 * that are up: fail-over). The worker registers with every broker in its
 * list, heartbeats each, and registers again when a broker restarts.
 *
 * Batches (frames.h): the first request of a loop turn goes at once;
 * the turn's next small ones (envelopes up to 16 KiB) wait for the end of
 * the turn (a loop flusher) and go as batches of up to 16, which the
 * broker hands on as batches too. A worker sends its replies the same way.
 * Nothing waits beyond the turn in which it was sent, and a big envelope
 * always goes at once, alone.
 *
 * A request is sent to the service named by its type up to the first dot
 * ("guard.rcpt" goes to "guard"). Each request sent gets exactly one
 * callback: with the reply, or with an error (ERR_TIMEOUT at the deadline,
 * ERR_NOWORKER, ERR_WORKER_LOST, ERR_PROTO, ERR_CLOSED when the client is
 * destroyed first). A send that fails returns the error and never calls
 * back.
 */
#ifndef SAMOTOP_BUS_H
#define SAMOTOP_BUS_H

#include <stddef.h>

#include "envelope.h"
#include "lib/loop.h"
#include "lib/metrics.h"

typedef struct bus_client bus_client_t;
typedef struct bus_worker bus_worker_t;
typedef struct bus_request bus_request_t;

/* reply is borrowed for the call; err is 0 when there is a reply. text
 * says more about an error (borrowed, never NULL). The function may send
 * new requests, but not destroy the client it was called from. */
typedef void bus_reply_fn(void *arg, int err, const char *text,
                          const envelope_t *reply);

/* A client of the brokers in endpoints (comma list). loop may be NULL for
 * a client used only through bus_client_call(). Returns NULL when no
 * socket can be made (the reason in why). Caller owns it. */
bus_client_t *bus_client_new(loop_t *loop, const char *endpoints,
                             size_t max_envelope, char *why, size_t whylen);

/* Fails every outstanding request with ERR_CLOSED, then frees. */
void bus_client_destroy(bus_client_t **client_p);

/* Sends *req_p (taken, nulled) and calls fn once with the outcome. The
 * deadline is the envelope's. Returns 0 or ERR_INVAL (bad type). */
int bus_client_send_take(bus_client_t *client, envelope_t **req_p,
                         bus_reply_fn *fn, void *arg);

/* Sends *req_p (taken) and waits for its outcome; *reply_out is a new
 * envelope the caller owns, or NULL with an error returned. Other
 * requests' replies that arrive meanwhile reach their callbacks. */
int bus_client_call(bus_client_t *client, envelope_t **req_p,
                    envelope_t **reply_out, char *why, size_t whylen);

/* The same two, to the service named instead of the type's: a request
 * for one shard of a service ("mailbox.2", lib/shard.h) keeps its type
 * ("mailbox.deliver"). service NULL is the type's. ERR_INVAL for an empty
 * or too long name. */
int bus_client_send_to_take(bus_client_t *client, const char *service,
                            envelope_t **req_p, bus_reply_fn *fn, void *arg);
int bus_client_call_to(bus_client_t *client, const char *service,
                       envelope_t **req_p, envelope_t **reply_out, char *why,
                       size_t whylen);

/* Requests waiting for an outcome. */
size_t bus_client_pending(const bus_client_t *client);

/* Counts every request's outcome and latency by service in m (borrowed;
 * it must outlive the client). */
void bus_client_set_metrics(bus_client_t *client, metrics_t *m);

/* Called with each request; the handler owns *req_p (it is nulled) and
 * must answer it with bus_worker_reply_take() or bus_worker_fail_take(),
 * now or later. */
typedef void bus_request_fn(void *arg, bus_request_t **req_p);

struct bus_worker_opts {
    const char *endpoints; /* comma list of broker worker endpoints */
    const char *service;
    int capacity;      /* requests in hand at once */
    int heartbeat_ms;
    int liveness;      /* missed heartbeats before a broker is dead */
    size_t max_envelope;
};

/* Registers with every broker in opts->endpoints. NULL on failure (the
 * reason in why). Caller owns it. */
bus_worker_t *bus_worker_new(loop_t *loop, const struct bus_worker_opts *opts,
                             bus_request_fn *fn, void *arg, char *why,
                             size_t whylen);

/* Tells the brokers goodbye and frees. Requests still in hand must have
 * been answered or dropped first. */
void bus_worker_destroy(bus_worker_t **worker_p);

/* The request's envelope, borrowed. */
const envelope_t *bus_request_envelope(const bus_request_t *req);

/* Sends *reply_p as the answer to *req_p; takes and frees both, whatever
 * the outcome. Returns 0, or ERR_CLOSED when the broker link that brought
 * the request is gone (the reply is dropped). A small reply may wait for
 * the end of the loop's turn, to go in a batch. */
int bus_worker_reply_take(bus_worker_t *worker, bus_request_t **req_p,
                          envelope_t **reply_p);

/* Answers *req_p with an error reply built from code, ecode and text (and
 * the err.h name err); takes *req_p. */
int bus_worker_fail_take(bus_worker_t *worker, bus_request_t **req_p,
                         int code, const char *ecode, const char *text,
                         int err);

/* Drops a request without answering: the broker is told, and the caller
 * gets ERR_WORKER_LOST at once. */
void bus_request_destroy(bus_request_t **req_p);

/* Requests handed out and not yet answered. */
int bus_worker_inflight(const bus_worker_t *worker);

/* Brokers this worker has heard from within its liveness window (a
 * heartbeat or a request since it last registered): 0 means no request
 * can reach it. */
int bus_worker_brokers(const bus_worker_t *worker);

/* When the worker took the request, on the monotonic clock (clock.h), for
 * the handler's latency. */
int64_t bus_request_received_us(const bus_request_t *req);

/* The service part of a type ("guard" for "guard.rcpt") into out; returns
 * 0 or ERR_INVAL when there is no dot or it is too long. */
int bus_service_of(const char *type, char *out, size_t outlen);

#endif
