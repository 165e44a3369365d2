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
 * Batches (frames.h: one frame of records, each a header and an envelope):
 *   client to broker:  C2 | BATCH  + records  C2 | service | reqid | trace
 *   broker to worker:  W2 | BATCH  + records  W2 | REQ | ...
 *   worker to broker:  W2 | BATCH  + records  W2 | REP | ... or W2 | ERR | ...
 *   broker to client:  C2 | BATCH  + records  C2 | REP | ... or C2 | ERR | ...
 * A record is exactly the message it stands for; control messages (READY,
 * HB, BYE) always go alone. Every side takes both forms, so a peer that
 * never batches is understood.
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
#define PROTO_BATCH "BATCH"

/* Longest service name and request id the broker accepts. */
#define PROTO_MAX_NAME 64

#endif
