/*
 * proto.h - the frames of the bus protocol, shared by broker, client and
 * worker (a Majordomo-style protocol, ZeroMQ guide chapter 4).
 *
 * Every message is a routing header, one frame of NUL-separated text
 * fields (frames.h: struct hdr), then the envelope's frame when there is
 * one. Written here as fields | ... [+ envelope]:
 *
 * Client (DEALER) to broker (ROUTER, bus.clients):
 *   C2 | service | reqid | trace  + envelope
 * Broker to client:
 *   C2 | REP | reqid  + envelope
 *   C2 | ERR | reqid | error name (lib/err.h) | text
 * Worker (DEALER) to broker (ROUTER, bus.workers):
 *   W2 | READY | service | capacity
 *   W2 | HB
 *   W2 | REP | client id (hex) | reqid | trace  + envelope
 *   W2 | ERR | client id (hex) | reqid | error name | text
 *   W2 | BYE
 * Broker to worker:
 *   W2 | REQ | client id (hex) | reqid | trace  + envelope
 *   W2 | HB
 *   W2 | BYE            (also: "I do not know you, register again")
 * Trace feed (XPUB, bus.trace), every envelope routed, three frames:
 *   trace | service | envelope
 * The trace id travels as its own frame so that the broker never decodes
 * an envelope and the tap can subscribe to one session by prefix.
 */
#ifndef SAMOTOP_PROTO_H
#define SAMOTOP_PROTO_H

#define PROTO_CLIENT "C2"
#define PROTO_WORKER "W2"
#define PROTO_READY "READY"
#define PROTO_HB "HB"
#define PROTO_REQ "REQ"
#define PROTO_REP "REP"
#define PROTO_ERR "ERR"
#define PROTO_BYE "BYE"

/* Longest service name and request id the broker accepts. */
#define PROTO_MAX_NAME 64

#endif
