/*
 * proto.h - the frames of the bus protocol, shared by broker, client and
 * worker (a Majordomo-style protocol, ZeroMQ guide chapter 4).
 *
 * Client (DEALER) to broker (ROUTER, bus.clients):
 *   C1 | service | reqid | trace | envelope
 * Broker to client:
 *   C1 | REP | reqid | envelope
 *   C1 | ERR | reqid | error name (lib/err.h) | text
 * Worker (DEALER) to broker (ROUTER, bus.workers):
 *   W1 | READY | service | capacity
 *   W1 | HB
 *   W1 | REP | client id | reqid | trace | envelope
 *   W1 | ERR | client id | reqid | error name | text
 *   W1 | BYE
 * Broker to worker:
 *   W1 | REQ | client id | reqid | trace | envelope
 *   W1 | HB
 *   W1 | BYE            (also: "I do not know you, register again")
 * Trace feed (XPUB, bus.trace), every envelope routed:
 *   trace | service | envelope
 * The trace id travels as its own frame so that the broker never decodes
 * an envelope and the tap can subscribe to one session by prefix.
 */
#ifndef SAMOTOP_PROTO_H
#define SAMOTOP_PROTO_H

#define PROTO_CLIENT "C1"
#define PROTO_WORKER "W1"
#define PROTO_READY "READY"
#define PROTO_HB "HB"
#define PROTO_REQ "REQ"
#define PROTO_REP "REP"
#define PROTO_ERR "ERR"
#define PROTO_BYE "BYE"

/* Longest service name and request id the broker accepts. */
#define PROTO_MAX_NAME 64

#endif
