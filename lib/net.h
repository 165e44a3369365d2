/*
 * net.h - listening sockets and peer addresses, shared by every actor that
 * accepts connections (the listener's SMTP roles, the mailbox's IMAP and
 * LMTP doors).
 *
 * net_listen() returns a non-blocking, close-on-exec listening descriptor
 * the caller owns and closes. Nothing here keeps state.
 */
#ifndef SAMOTOP_NET_H
#define SAMOTOP_NET_H

#include <stddef.h>
#include <sys/socket.h>

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

#endif
