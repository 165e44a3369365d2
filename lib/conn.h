/*
 * conn.h - one accepted client socket of an event-driven session: the
 * descriptor, its TLS state, its watch on the loop and what was read from
 * it but not yet taken by the session's protocol engine.
 *
 * The model the listener's SMTP sessions, the mailbox's IMAP sessions and
 * its LMTP sessions share: the loop says the socket is ready; the session
 * reads what the socket (or the TLS connection on it) has into its input,
 * at most CONN_IN_MAX bytes waiting, which is the back-pressure that stops
 * reading; its engine takes what it can from the input, and queues
 * output that is written until the socket is full. A read or a write that
 * would block says TLS_WANT_READ or TLS_WANT_WRITE (lib/tls.h), in clear
 * text as under TLS. STARTTLS and implicit TLS start the handshake on the
 * same descriptor; until it is done the session only drives it. The
 * session decides what to watch for (conn_watch()), and epoll is told only
 * when that changes. What a session does with its bytes (engines, bus
 * calls, timers, limits) stays in its actor.
 *
 * A conn_t owns the descriptor (from conn_new() on, even when that fails),
 * the TLS connection and the input buffer; the trace id and the address
 * given to conn_new() are borrowed and must outlive it. conn_close() ends
 * the socket early (the session may live on until its calls come back);
 * conn_destroy() frees the rest. Loop thread only.
 */
#ifndef SAMOTOP_CONN_H
#define SAMOTOP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "lib/loop.h"
#include "lib/tls.h"

typedef struct conn conn_t;

/* What a session keeps read but not yet taken by its engine, at most. */
#define CONN_IN_MAX 16384
/* The first reads of a session ask for this much, and each read that
 * fills what it asked for doubles it (up to CONN_IN_MAX): a session of
 * short commands keeps a small buffer, a message streams in 16 KiB reads. */
#define CONN_IN_READ_MIN 4096

enum conn_tls { CONN_PLAIN, CONN_HANDSHAKE, CONN_TLS };

/* Watches fd (non-blocking) on loop for LOOP_READ, calling fn with arg.
 * trace and ip name the session in the TLS logs. NULL when the loop
 * cannot watch it; fd is closed then. Caller owns the result. */
conn_t *conn_new(loop_t *loop, int fd, const char *trace, const char *ip,
                 loop_fd_fn *fn, void *arg);

/* Ends the socket: close_notify when TLS is up, the watch, the
 * descriptor. Later calls (and conn_watch()) do nothing. */
void conn_close(conn_t *c);

/* Closes (when not yet) and frees; NULL is fine, *c_p is nulled. */
void conn_destroy(conn_t **c_p);

/* The descriptor (-1 once closed). */
int conn_fd(const conn_t *c);

/* Reads up to len bytes, through TLS once it is up: the count, 0 at the
 * end, TLS_WANT_READ or TLS_WANT_WRITE when it would block, or another
 * negative error. */
ssize_t conn_read(conn_t *c, void *buf, size_t len);

/* Writes up to len bytes, likewise (never SIGPIPE). */
ssize_t conn_write(conn_t *c, const void *buf, size_t len);

/* Writes data[0..len) (an engine's queued output) as far as the socket
 * takes it: the bytes written, len or fewer when the socket is full, or a
 * negative error when the connection is gone. */
ssize_t conn_send(conn_t *c, const void *data, size_t len);

/* The TLS handshake starts (STARTTLS answered, or implicit TLS): 0, or
 * ERR_SYS when no TLS connection can be had. Drive it with
 * conn_handshake(). */
int conn_start_tls(conn_t *c, tls_ctx_t *ctx);

/* Drives the handshake: 0 when it is done (logged tls_up), TLS_WANT_READ
 * or TLS_WANT_WRITE (watching for that now), or ERR_PROTO (logged
 * tls_failed with the reason). */
int conn_handshake(conn_t *c);

enum conn_tls conn_tls_state(const conn_t *c);

/* The TLS connection once it is up, else NULL. Borrowed. */
const tls_conn_t *conn_tls(const conn_t *c);

/* Whether decrypted bytes wait inside OpenSSL, which epoll cannot see. */
bool conn_tls_pending(const conn_t *c);

/* Watches for events (LOOP_READ, LOOP_WRITE, both or none); epoll_ctl is
 * called only when they change. */
void conn_watch(conn_t *c, int events);
int conn_watching(const conn_t *c);

/* Reads what the socket has into the input while it has room (see
 * CONN_IN_READ_MIN), until a read would block, comes back short or finds
 * the end (conn_eof() then). With discard, what is read is dropped (sent
 * after STARTTLS, before the handshake). Returns the bytes kept, or a
 * negative error when the connection failed. */
ssize_t conn_fill(conn_t *c, bool discard);

/* Whether the peer sent all it will (it may still read). */
bool conn_eof(const conn_t *c);

/* The input not yet taken (NUL-terminated past *len). Borrowed until the
 * next conn_* call on c. */
const char *conn_in(const conn_t *c, size_t *len);
size_t conn_in_pending(const conn_t *c);
bool conn_in_full(const conn_t *c);

/* The engine took n bytes (n <= conn_in_pending()). */
void conn_in_took(conn_t *c, size_t n);

/* Forgets all input (what came before STARTTLS must never run under it). */
void conn_in_drop(conn_t *c);

/* A peer that stopped sending needs no buffer: when the last read took
 * all the socket had and nothing waits, the buffer is freed, so that
 * thousands of idle sessions hold none. */
void conn_in_trim(conn_t *c);

#endif
