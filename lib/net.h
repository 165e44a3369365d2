/*
 * net.h - listening sockets and peer addresses, shared by every actor that
 * accepts connections (the listener's SMTP roles, the mailbox's IMAP and
 * LMTP doors).
 *
 * net_listen() returns a non-blocking, close-on-exec listening descriptor
 * the caller owns and closes. A net_acceptor_t holds an actor's listening
 * sockets on its loop (it owns them) and runs their accept loop: a bounded
 * batch per wake-up, and a pause while the process is out of descriptors
 * (each accepted socket goes to the caller, who owns it from then on).
 */
#ifndef SAMOTOP_NET_H
#define SAMOTOP_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "lib/loop.h"

/* Listen backlog used by net_listen(). */
#define NET_BACKLOG 4096

/* Binds and listens on addr ("HOST:PORT", "[V6]:PORT"; port 0 lets the
 * kernel pick one) with SO_REUSEADDR and SO_REUSEPORT, so several
 * processes can share a port and the kernel spreads new connections over
 * them. Returns the descriptor, or -1 with the reason (naming addr) in
 * why. */
int net_listen(const char *addr, char *why, size_t whylen);

/* Writes the numeric address of ss into out; an IPv4 client on a
 * dual-stack socket is written as IPv4, an unknown family as "unknown". */
void net_addr_text(const struct sockaddr_storage *ss, char *out,
                   size_t outlen);

/* Writes line to a just-accepted fd and closes it: a refusal before any
 * session exists (an SMTP 421 greeting, an IMAP BYE). */
void net_refuse(int fd, const char *line);

typedef struct net_acceptor net_acceptor_t;

/* A connection accepted on a socket: fd (non-blocking, close-on-exec; the
 * callee owns it) from the numeric address ip. */
typedef void net_accept_fn(void *arg, int fd, const char *ip);

/* How long accepting stays paused after running out of descriptors,
 * unless net_acceptor_resume() comes first. */
#define NET_ACCEPT_RETRY_MS 100

/* An accept loop on loop. key ("role", "door") and each socket's name say
 * which socket in the logs; batch is how many connections one wake-up
 * accepts at most; *sessions (borrowed) is the count of open sessions the
 * logs give. Caller owns the result. */
net_acceptor_t *net_acceptor_new(loop_t *loop, const char *key, int batch,
                                 const int *sessions);

/* Listens on addr (net_listen()) and accepts there, calling fn with arg
 * for each connection; name (borrowed) is the socket's in the logs.
 * Returns the descriptor (the acceptor's, borrowed) or ERR_SYS, logged as
 * listen_failed. */
int net_acceptor_listen(net_acceptor_t *a, const char *name, const char *addr,
                        net_accept_fn *fn, void *arg);

/* Watches the sockets again if accepting paused for want of descriptors
 * (a session that closes frees one, so it calls this); else nothing. */
void net_acceptor_resume(net_acceptor_t *a);

/* How many times the process ran out of descriptors (an episode lasts
 * until an accept works again, and is logged once). */
uint64_t net_acceptor_episodes(const net_acceptor_t *a);

/* Stops watching and closes every socket, then frees; NULL is fine and
 * *a_p is nulled. */
void net_acceptor_destroy(net_acceptor_t **a_p);

/* Raises this process's soft limit on open files to its hard limit (each
 * session holds a descriptor; the soft limit is often 1024) and logs the
 * limit it has then ("nofile limit=N"). */
void net_raise_nofile(void);

#endif
