/*
 * tls.h - TLS for Samotop's servers (OpenSSL 3), on non-blocking sockets;
 * and for its SMTP client (the relay's STARTTLS), at the end.
 *
 * A tls_ctx_t holds the certificate and settings for one listening role
 * (TLS 1.2 and later only); a tls_conn_t wraps one accepted socket. The I/O
 * functions never block: they return TLS_WANT_READ or TLS_WANT_WRITE when
 * the socket must become readable or writable first (during a handshake or
 * a renegotiation either may come from a read or a write).
 * The caller owns the fd; tls_conn_destroy() does not close it.
 */
#ifndef SAMOTOP_TLS_H
#define SAMOTOP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct tls_ctx tls_ctx_t;
typedef struct tls_conn tls_conn_t;

enum {
    TLS_WANT_READ = -1001,
    TLS_WANT_WRITE = -1002,
};

/* Makes sure dir holds cert.pem and key.pem: when either is missing, a new
 * EC P-256 key and a self-signed certificate for hostname (valid ten years,
 * hostname as subjectAltName) are written there, key mode 0600, each file
 * written under a temporary name and renamed so that no reader sees half a
 * file. Check and creation hold an flock() on dir/.lock, so that of
 * several processes starting at once only one creates the pair and the
 * others use it. Returns 0 or ERR_SYS with why. */
int tls_self_signed_ensure(const char *dir, const char *hostname, char *why,
                           size_t whylen);

/* A server context from PEM files (certificate chain, private key).
 * NULL with the reason in why. Caller owns it. */
tls_ctx_t *tls_server_new(const char *cert_file, const char *key_file,
                          char *why, size_t whylen);
void tls_ctx_destroy(tls_ctx_t **ctx_p);

/* The servers' context from config: the PEM files tls.cert and tls.key,
 * or when either is empty the self-signed pair in data/tls, made for
 * hostname on first start (DESIGN.md). NULL when neither can be had,
 * logged as tls_setup_failed (a reason to stop start-up). Caller owns it. */
struct config;
tls_ctx_t *tls_server_from_config(const struct config *cfg,
                                  const char *hostname);

/* A server-side connection on fd (non-blocking). Caller owns it. */
tls_conn_t *tls_conn_new(tls_ctx_t *ctx, int fd);
void tls_conn_destroy(tls_conn_t **conn_p);

/* Drives the handshake: 0 when done, TLS_WANT_*, or ERR_PROTO (the
 * reason from tls_conn_error()). */
int tls_handshake(tls_conn_t *conn);

/* Reads up to len bytes: the count, 0 at a clean close, TLS_WANT_*, or
 * ERR_PROTO / ERR_SYS. */
ssize_t tls_read(tls_conn_t *conn, void *buf, size_t len);

/* Writes up to len bytes: the count, TLS_WANT_*, or ERR_PROTO / ERR_SYS. */
ssize_t tls_write(tls_conn_t *conn, const void *buf, size_t len);

/* Sends close_notify, without waiting for the peer's. */
void tls_shutdown(tls_conn_t *conn);

/* Whether decrypted bytes are waiting inside OpenSSL (so epoll will not
 * say readable for them). */
int tls_pending(const tls_conn_t *conn);

/* "TLSv1.3", "TLS_AES_256_GCM_SHA384", the cipher's secret bits; for the
 * Received header (RFC 3848 and RFC 8314 A). Borrowed. */
const char *tls_conn_version(const tls_conn_t *conn);
const char *tls_conn_cipher(const tls_conn_t *conn);
int tls_conn_bits(const tls_conn_t *conn);

/* The last error's text, for logs. Borrowed. */
const char *tls_conn_error(const tls_conn_t *conn);

/*
 * The client side. A client context (TLS 1.2 and later, no certificate of
 * its own) serves every outgoing connection; ca_file is the PEM bundle
 * that verifying connections trust (NULL or "": the system's default
 * paths). NULL with the reason in why. Free it with tls_ctx_destroy().
 */
tls_ctx_t *tls_client_new(const char *ca_file, char *why, size_t whylen);

/*
 * A client-side connection on fd (non-blocking), driven by tls_handshake()
 * and the I/O functions above. servername goes out as SNI (RFC 6066) unless
 * it is NULL, empty or an IP address. Without verify nothing about the
 * peer is checked (RFC 7435: opportunistic TLS, better than clear text);
 * with it the handshake fails unless the certificate chains to a trusted
 * CA and names servername (RFC 6125). Caller owns it.
 */
tls_conn_t *tls_client_conn_new(tls_ctx_t *ctx, int fd,
                                const char *servername, bool verify);

/* Whether the peer's certificate was checked and found good. */
bool tls_conn_verified(const tls_conn_t *conn);

#endif
