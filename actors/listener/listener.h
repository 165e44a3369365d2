/*
 * listener.h - samotop-listener's shared state: the roles it serves, its
 * listening sockets and its SMTP sessions.
 *
 * One process holds thousands of sessions on one loop. A session joins the
 * SMTP engine (lib/smtp_server.h) to a socket (plain or TLS) and to the
 * bus: guard for policy, mailbox for delivery. The listener owns every
 * session; a session with a bus call outstanding is freed only when the
 * call's callback has run.
 */
#ifndef SAMOTOP_LISTENER_H
#define SAMOTOP_LISTENER_H

#include <stdbool.h>
#include <stdint.h>

#include <czmq.h>

#include "actor.h"
#include "lib/buf.h"
#include "lib/net.h"
#include "lib/smtp_server.h"
#include "lib/tls.h"

enum role_kind { ROLE_MTA, ROLE_MSA, ROLE_SMTPS };

typedef struct listener listener_t;
struct session;

struct role {
    listener_t *l;
    enum role_kind kind;
    const char *name;     /* "mta", "msa", "smtps": the envelopes' role */
    char addr[300];
    struct smtp_server_opts opts;
};

struct listener {
    actor_t *actor;
    loop_t *loop;
    bus_client_t *bus;
    char hostname[256];
    tls_ctx_t *tls;
    struct role roles[3];
    int nroles;
    struct session *head; /* live sessions */
    zhashx_t *per_ip;     /* client address -> sessions open (as a pointer) */
    int sessions, max_sessions, max_per_ip;
    int64_t idle_ms, session_ms, bus_timeout_ms;
    int mailbox_shards; /* lib/shard.h: 1, or deliveries go to mailbox.K */
    uint64_t accepted, refused;
    size_t last_message; /* octets of the last message, the engine's guess */
    /* The listening sockets and their accept loop, which pauses while the
     * process is out of descriptors (lib/net.h). */
    net_acceptor_t *acceptor;
    uint64_t starved_episodes; /* the acceptor's, kept when it goes */
};

/* Binds the roles named by listener.roles; 0 or an error, logged. */
int listener_net_start(listener_t *l);
void listener_net_stop(listener_t *l);

/* A new session on an accepted socket (listener_net.c calls it). */
void listener_session_start(listener_t *l, struct role *role, int fd,
                            const char *ip);

/* Closes every session (at shutdown). */
void listener_sessions_close_all(listener_t *l);

/* listener_metrics.c: registers the listener's metrics in m (called once
 * from init), then counts a session opening (+1) or closing (-1), bytes
 * read, and the code answered to the step what. */
void listener_metrics_init(metrics_t *m);
void listener_metrics_session(const char *role, int delta);
void listener_metrics_bytes(const char *role, size_t n);
/* At a session's end: the messages its engine refused by itself (552 over
 * SIZE, 554 a line too long), counted as messages and refusals. */
void listener_metrics_engine(const char *role, const smtp_server_t *smtp);
void listener_metrics_answer(const char *role, enum smtp_event_type what,
                             int code);

#endif
