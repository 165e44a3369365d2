/*
 * mailbox_imap_int.h - the inside of the mailbox's IMAP doors, shared by
 * the mailbox_imap*.c files and nothing else.
 *
 * mailbox_imap.c owns the doors and the sessions: sockets, TLS, timers,
 * the engine loop and the logins over the bus. mailbox_imap_cmd.c answers
 * the commands on folders, mailbox_imap_fetch.c FETCH, mailbox_imap_search.c
 * SEARCH, and mailbox_imap_notify.c watches the selected folders with
 * inotify and tells their sessions. mailbox_imap_proxy.c relays a session
 * whose account another shard owns to that copy's internal door, and
 * keeps the tickets that door takes. The mbimap_t owns every session; a
 * session with a bus call or a quota check outstanding is freed only when
 * its callback has run.
 */
#ifndef SAMOTOP_MAILBOX_IMAP_INT_H
#define SAMOTOP_MAILBOX_IMAP_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <czmq.h>

#include "actor.h"
#include "lib/buf.h"
#include "lib/conn.h"
#include "lib/imap_server.h"
#include "lib/net.h"
#include "lib/tls.h"

#include "mailbox.h"
#include "mailbox_imap.h"
#include "mailbox_quota.h"
#include "mstore.h"

/* A long answer (FETCH of many messages, SEARCH results) is written while
 * less than this is queued for the client, and goes on when the socket has
 * taken it: memory stays bounded whatever the client asks for. */
#define IMAP_PACE_BYTES (256 * 1024)
/* A long answer takes the loop for about this long at a time; then other
 * sessions and deliveries are served before it goes on. */
#define IMAP_SLICE_MS 10

struct isess;
struct inote;
struct iproxy;   /* mailbox_imap_proxy.c: a session relayed to the owner */
struct itickets; /* mailbox_imap_proxy.c: tickets given out */

/* One listening socket: listen.imap or listen.imaps. */
struct imap_door {
    mbimap_t *im;
    const char *name; /* "imap", "imaps": the key and the logs */
    bool implicit_tls;
    bool internal; /* mailbox.imap_internal: tickets only, no TLS */
    char addr[300];
    int fd; /* the acceptor's (borrowed) */
    struct imap_server_opts opts;
};

struct mbimap {
    struct mailbox *mb;
    actor_t *actor;
    loop_t *loop;
    bus_client_t *bus;
    char hostname[256];
    tls_ctx_t *tls;
    struct imap_door doors[3];
    int ndoors;
    struct isess *head; /* live sessions */
    zhashx_t *per_ip;   /* client address -> sessions open (as a pointer) */
    int sessions, max_sessions, max_per_ip;
    int64_t idle_ms, bus_timeout_ms;
    /* The doors' sockets and their accept loop, which pauses while the
     * process is out of descriptors (lib/net.h). */
    net_acceptor_t *acceptor;
    uint64_t accepted, refused, logins, login_failures;
    /* mailbox_imap_notify.c: one inotify descriptor for the process. */
    int ino_fd;
    struct inote *notes; /* folders watched, each once */
    loop_timer_t *note_timer;
    struct mstore_limits limits;
    struct hcache *hcache; /* messages' headers (mailbox_imap_fetch.c) */
    /* The mailbox's (borrowed): APPEND, COPY and EXPUNGE move the usage. */
    mailbox_quota_t *quota;
    /* mailbox_imap_proxy.c: tickets for the internal door, and the
     * address other copies reach it at ("" without one). */
    struct itickets *tickets;
    char internal_addr[300];
    uint64_t relayed, relay_failures;
    metric_t *m_relays, *m_tickets; /* NULL with one shard */
};

/* A long command under way: called while the output is short, it writes
 * the next piece and returns; it completes the decision (and clears
 * s->work) when done. */
typedef void isess_work_fn(struct isess *s);
/* Frees the work's state when the session ends before the work does. */
typedef void isess_work_free_fn(void *arg);

struct isess {
    struct isess *prev, *next;
    mbimap_t *im;
    struct imap_door *door;
    char ip[64];
    char trace[ENVELOPE_TRACE_LEN];
    imap_server_t *srv;
    /* The client's socket, its TLS and what was read from it: the
     * relay (mailbox_imap_proxy.c) reads and writes it too. */
    conn_t *conn;
    bool starttls;   /* STARTTLS answered: handshake once output is out */
    bool closing;    /* close once the output is out */
    bool dead;       /* socket closed; freed when nothing is outstanding */
    int calls;       /* bus calls and quota checks outstanding */
    bool quota_wait; /* one of them is a quota check */
    int64_t last_active;
    loop_timer_t *idle_timer;
    char *user; /* the account logged in (lower case), or NULL */
    /* The decision being answered (borrowed from the engine until it is
     * completed), and the work that goes on answering it. */
    const struct imap_cmd *cmd;
    isess_work_fn *work;
    isess_work_free_fn *work_free;
    void *work_arg;
    bool work_yield;     /* the work wants the loop to serve others first */
    mstore_t *ms;        /* the account's folders, from the login on */
    mstore_view_t *view; /* the selected folder, or NULL */
    struct inote *note;  /* its inotify watch, or NULL */
    uint64_t commands;
    /* Relayed to the copy that owns the account, or NULL. */
    struct iproxy *proxy;
};

/* mailbox_imap.c */

/* Runs the session: input into the engine, events, output. May close the
 * session, and free it when nothing is outstanding: the caller must not
 * touch s afterwards. */
void imap_sess_pump(struct isess *s);

/* Bytes queued for the client. */
size_t imap_sess_out_len(const struct isess *s);

/* Closes the session (freed at once when nothing is outstanding): the
 * caller must not touch s afterwards. */
void imap_sess_close(struct isess *s, const char *why);

/* s->user (lower case) logged in: opens its folders and completes the
 * login decision with OK, or NO [UNAVAILABLE] when the store cannot be
 * had (s->user is then freed). The caller pumps. */
void imap_sess_login_ok(struct isess *s);

/* Answers the pending decision and clears the work (see struct isess). */
void imap_sess_complete(struct isess *s, enum imap_status st, const char *code,
                        const char *text);

/* A bus call or quota check goes out (calls + 1) or came back (- 1): when
 * it returns false the session was dead and is now freed. */
void imap_sess_call_begin(struct isess *s);
bool imap_sess_call_end(struct isess *s);

/* mailbox_imap_cmd.c */

/* Answers a command decision: at once, or by setting s->work, or later
 * from a callback (s->calls > 0 meanwhile). */
void imap_cmd_run(struct isess *s, const struct imap_cmd *c);

/* Brings the selected folder up to date and writes what changed (EXISTS,
 * EXPUNGE when the engine lets it go out now, FETCH FLAGS). Outside a
 * command it is called only while IDLE runs. */
void imap_cmd_sync(struct isess *s);

/* The session ends: the selected folder is let go. */
void imap_cmd_unselect(struct isess *s);

/* mailbox_imap_fetch.c: FETCH (RFC 3501 6.4.5), paced by the output. */
void imap_fetch_start(struct isess *s, const struct imap_cmd *c);

/* The length of a message's top-level header with its blank line (RFC
 * 5322 2.1), or len when it has no blank line. */
size_t imap_fetch_header_len(const char *d, size_t len);

/* A message's octets: read into the caller's buffer, or mapped. */
struct imap_mdata {
    const char *data;
    size_t len;
    bool mapped;
    struct mstore_map map;
};

/* Loads message seq of the selected folder (size: the index's): all of
 * it, or with head_only at least its whole header. A small message is
 * read into rbuf (reused from one message to the next), a large one
 * mapped. Returns 0, or an error when it is gone. Release with
 * imap_mdata_release() before the next load into the same rbuf. */
int imap_mdata_load(struct isess *s, buf_t *rbuf, uint32_t seq, uint64_t size,
                    bool head_only, struct imap_mdata *md);
void imap_mdata_release(struct imap_mdata *md);

/* The process's cache of messages' top-level headers, which a header
 * FETCH or a SEARCH on header fields answers from without opening the
 * files (a message's octets never change under its UID); at most
 * IMAP_HCACHE_BYTES, oldest out first. */
#define IMAP_HCACHE_BYTES (64u << 20)
struct hcache *imap_hcache_new(void);
void imap_hcache_destroy(struct hcache **hc_p);

/* mailbox_imap_search.c: SEARCH (RFC 3501 6.4.4). */
void imap_search_run(struct isess *s, const struct imap_cmd *c);

/* mailbox_imap_notify.c */

/* The inotify descriptor on the loop; 0 or an error (logged). */
int imap_notify_start(mbimap_t *im);
void imap_notify_stop(mbimap_t *im);

/* Watches dir's new/ and cur/ for the session (one watch per folder for
 * all its sessions), replacing what it watched before; dir NULL only
 * stops. A folder that cannot be watched is logged, and its session
 * learns of changes at its next command only. */
void imap_notify_follow(struct isess *s, const char *dir);

/* mailbox_imap_proxy.c */

/* Whether mailbox.shards is over 1 and the internal door goes on addr
 * (mailbox.imap_internal, or 127.0.0.1:0). */
bool imap_proxy_door_addr(mbimap_t *im, const config_t *cfg, char *addr,
                          size_t addrlen);
/* The internal door d listens: what other copies are told to connect to
 * is worked out (mailbox.imap_advertise) and the tickets kept. An error
 * (logged) stops start-up. */
int imap_proxy_door_up(mbimap_t *im, struct imap_door *d, const config_t *cfg);
/* Forgets every ticket. */
void imap_proxy_stop(mbimap_t *im);

/* Whether s->user, just checked by auth, is owned by another shard. */
bool imap_proxy_wanted(const struct isess *s);
/* Relays the session to the owner of s->user: asks it for a ticket, logs
 * in on its internal door, then completes the login decision (OK, or NO
 * [UNAVAILABLE] with s->user freed) and from then on copies bytes both
 * ways. s->calls stays over 0 until the decision is completed. */
void imap_proxy_begin(struct isess *s);
/* A LOGIN (or AUTHENTICATE PLAIN) on the internal door: the password must
 * be a ticket this copy gave for that account; completes the decision. */
void imap_proxy_ticket_login(struct isess *s, const struct imap_event *ev);
/* The loop's events on a relayed session's client socket: false when the
 * session is not relaying yet (the usual path goes on). */
bool imap_proxy_on_io(struct isess *s, int events);
/* Whether the session is relayed (logged in at the owner): its bytes are
 * the proxy's. */
bool imap_proxy_relaying(const struct isess *s);
/* The session closes: the link to the owner goes. NULL proxy is fine. */
void imap_proxy_close(struct isess *s);

#endif
