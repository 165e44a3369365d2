/*
 * relay.h - samotop-relay's shared state: the outbound ESMTP client.
 *
 * A job is one relay.send request: one message to the recipients of one
 * domain. It finds the next hops (a static route from samotop:routes,
 * else the domain's MX hosts, RFC 5321 5.1), then tries their addresses in
 * order, each over a connection of the pool, until every recipient has a
 * definitive answer (2xx or 5xx) or no address is left; the last temporary
 * answer then stands for the rest. relay_send.c holds jobs, relay_conn.c
 * connections.
 *
 * Connections belong to a next-hop address ("IP:PORT"): at most
 * max_per_host at once (more jobs wait in line), and one that finished a
 * job stays open idle_ms for the next job to the same address (connection
 * reuse; the engine sends RSET first). Everything runs on the actor's
 * loop; nothing blocks. A job and a connection point at each other only
 * while the connection carries the job.
 */
#ifndef SAMOTOP_RELAY_H
#define SAMOTOP_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <czmq.h>

#include "actor.h"
#include "lib/dns.h"
#include "lib/smtp_client.h"
#include "lib/tls.h"
#include "store.h"

typedef struct relay relay_t;
struct relay_conn;

/* What a job asks of TLS at its next hop. */
struct relay_tls {
    enum smtp_client_tls policy; /* MAY unless a route says MUST */
    bool verify;                 /* route tls=verify: check the peer */
};

/* One next-hop address and its connections. */
struct relay_host {
    relay_t *r;
    char key[80]; /* "127.0.0.1:25", "[2001:db8::1]:25" */
    struct sockaddr_storage sa;
    socklen_t salen;
    int nconns;              /* open: connecting, busy and idle */
    struct relay_conn *idle; /* idle connections, newest first */
    struct relay_job *wait_head, *wait_tail; /* jobs waiting for a slot */
};

/* One recipient's outcome. */
struct relay_result {
    int code; /* 0 while undecided */
    char ecode[16];
    char *text;
    char mx[300]; /* "host:port" that answered; "" for our own */
    bool final;   /* 2xx or 5xx: no other host is asked */
};

struct relay_job {
    relay_t *r;
    struct relay_job *prev, *next; /* r->jobs */
    bus_request_t *req;
    const envelope_t *env; /* req's, borrowed */
    char trace[ENVELOPE_MAX_NAME + 1];
    char domain[256];
    char queue_id[ENVELOPE_MAX_NAME + 1];
    struct smtp_client_txn txn; /* the whole message */
    struct smtp_client_rcpt *rcpts;
    int nrcpts;
    struct relay_result *res;
    int64_t started_ms;
    loop_timer_t *deadline;
    bool store_pending; /* the route lookup is out */

    /* Where to. */
    bool routed;
    char route[300]; /* the route's value, for logs */
    char route_host[256];
    int route_port;
    struct relay_tls tls;
    dns_query_t *dnsq;
    struct dns_result *hops;
    int hop, addr;    /* the address in hand */
    bool begun;       /* hop/addr point at an address */
    bool again_fresh; /* this address again, new connection */
    bool again_plain; /* this address again, without TLS */

    /* The attempt in hand (relay_conn.c reads these). */
    struct relay_host *host;
    char hop_name[256]; /* SNI and logs */
    char mx[300];       /* "hop_name:port" */
    struct relay_tls cur_tls;
    bool cur_fresh;             /* no idle connection: a new one */
    struct smtp_client_txn sub; /* the recipients still undecided */
    struct smtp_client_rcpt *sub_rcpts;
    int *sub_idx;            /* sub's i-th is the job's sub_idx[i] */
    struct relay_conn *conn; /* carrying the job, or NULL */
    bool waiting;            /* in host's line */
    struct relay_job *wait_next;

    /* The last temporary failure, for whoever is left at the end. */
    int last_code;
    char last_ecode[16];
    char last_text[400];
    char last_mx[300];
    bool used_tls;
    int attempts;
};

struct relay {
    actor_t *actor;
    loop_t *loop;
    store_async_t *store;
    dns_t *dns;
    tls_ctx_t *tls;
    char hostname[256];
    int port;
    int64_t idle_ms, connect_ms;
    int max_per_host;
    int64_t t_greeting, t_cmd, t_data_init, t_data_block, t_data_end;
    zhashx_t *hosts;          /* key -> struct relay_host */
    struct relay_job *jobs;   /* every job in hand */
    struct relay_conn *conns; /* every open connection */
    uint64_t jobs_done, connects, reuses;
    bool stopping; /* shutting down: no job takes a slot */
    /* Our own MTA's addresses (relay_self.c); self_any: all of this host's. */
    char (*self_addrs)[48];
    int nself;
    bool self_any;
};

/* --- relay_self.c ------------------------------------------------------- */

/* Learns which hosts are us: r->hostname (set first), and listen.mta's
 * address when that door is on relay.port (r->port, set first). */
void relay_self_init(relay_t *r, const config_t *cfg);
void relay_self_fini(relay_t *r);

/* RFC 5321 5.1: when res (an MX answer) names us, drops our record and
 * every one not more preferred than ours. Returns whether it named us;
 * res->nhosts may then be 0 (the mail would loop). */
bool relay_self_trim(const relay_t *r, struct dns_result *res);

/* --- relay_send.c ------------------------------------------------------- */

/* The relay.send handler. */
void relay_on_send(actor_t *a, bus_request_t **req_p);

/* Answers every job with 451 4.3.2 (shutting down). */
void relay_jobs_abort(relay_t *r);

/*
 * The connection that carried j is done with it (j->conn and j->waiting
 * are already cleared). With results (nresults == j->sub.nrcpts, in sub
 * order) the transaction ran; without, the connection failed before one
 * (code, ecode and text say how). retry_fresh asks for the same address
 * again on a new connection (a reused one was found dead), retry_plain
 * for the same address without TLS (opportunistic TLS failed).
 */
struct relay_outcome {
    const struct smtp_reply *const *results;
    int nresults;
    int code;
    const char *ecode;
    const char *text;
    bool retry_fresh;
    bool retry_plain;
    bool tls; /* the session ran under TLS */
};

void relay_job_outcome(struct relay_job *j, const struct relay_outcome *o);

/* --- relay_conn.c ------------------------------------------------------- */

/* The host record of an address (port set), made when missing. */
struct relay_host *relay_host_get(relay_t *r, const struct dns_addr *a,
                                  int port);

/*
 * Gives j (j->host, hop_name, cur_tls and sub set) a connection to its
 * address: an idle one that suits it, a new one, or a place in the host's
 * line until one is free. relay_job_outcome() follows, later or at once.
 */
void relay_conn_attempt(struct relay_job *j);

/* j gives up its connection (closed: its state is unknown) or its place
 * in line; relay_job_outcome() is not called for it. */
void relay_conn_detach(struct relay_job *j);

/* Closes every connection and forgets every host (at shutdown). */
void relay_conns_close_all(relay_t *r);

/* Forgets hosts with no connection and no job in line (from the tick). */
void relay_hosts_sweep(relay_t *r);

/* --- relay_metrics.c ---------------------------------------------------- */

/* Registers the relay's metrics in m (from init; r is borrowed for the
 * process's life), and counts a finished job's attempts and results. */
void relay_metrics_init(relay_t *r, metrics_t *m);
void relay_metrics_job(const struct relay_job *j);
/* /ready (bus/actor.h): 0 while the Redis connection (routes) is up. */
int relay_ready(actor_t *a, char *why, size_t whylen);

#endif
