/*
 * conn.c - a session's socket, TLS state, watch and input (conn.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/conn.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"

struct conn {
    loop_t *loop;
    int fd;
    const char *trace, *ip; /* borrowed */
    tls_conn_t *tls;
    enum conn_tls tls_state;
    int watching; /* LOOP_* events the loop watches for */
    bool closed;
    bool eof;
    /* Read, not yet taken: in.data[in_off .. in.len). The socket is read
     * straight into the end of it and the engine takes from in_off, so no
     * byte is copied on the way or moved down. */
    buf_t in;
    size_t in_off, in_read;
    bool in_drained; /* the last read took all the socket had */
};

conn_t *
conn_new(loop_t *loop, int fd, const char *trace, const char *ip,
         loop_fd_fn *fn, void *arg)
{
    conn_t *c;

    if (loop_fd_add(loop, fd, LOOP_READ, fn, arg) != 0) {
        close(fd);
        return NULL;
    }
    c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->fd = fd;
    c->trace = trace;
    c->ip = ip;
    c->watching = LOOP_READ;
    c->in_read = CONN_IN_READ_MIN;
    return c;
}

void
conn_close(conn_t *c)
{
    if (c->closed)
        return;
    c->closed = true;
    if (c->tls && c->tls_state == CONN_TLS)
        tls_shutdown(c->tls);
    loop_fd_del(c->loop, c->fd);
    close(c->fd);
    c->fd = -1;
}

void
conn_destroy(conn_t **c_p)
{
    conn_t *c = *c_p;

    if (c == NULL)
        return;
    conn_close(c);
    tls_conn_destroy(&c->tls);
    buf_free(&c->in);
    free(c);
    *c_p = NULL;
}

int
conn_fd(const conn_t *c)
{
    return c->fd;
}

ssize_t
conn_read(conn_t *c, void *buf, size_t len)
{
    ssize_t n;

    if (c->tls_state == CONN_TLS)
        return tls_read(c->tls, buf, len);
    n = read(c->fd, buf, len);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? TLS_WANT_READ : ERR_SYS;
    return n;
}

ssize_t
conn_write(conn_t *c, const void *buf, size_t len)
{
    ssize_t n;

    if (c->tls_state == CONN_TLS)
        return tls_write(c->tls, buf, len);
    n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? TLS_WANT_WRITE : ERR_SYS;
    return n;
}

ssize_t
conn_send(conn_t *c, const void *data, size_t len)
{
    size_t sent = 0;

    while (sent < len) {
        ssize_t n = conn_write(c, (const char *)data + sent, len - sent);

        if (n == TLS_WANT_WRITE || n == TLS_WANT_READ)
            break;
        if (n <= 0)
            return n < 0 ? n : ERR_SYS;
        sent += (size_t)n;
    }
    return (ssize_t)sent;
}

int
conn_start_tls(conn_t *c, tls_ctx_t *ctx)
{
    c->tls = tls_conn_new(ctx, c->fd);
    if (c->tls == NULL)
        return ERR_SYS;
    c->tls_state = CONN_HANDSHAKE;
    return 0;
}

int
conn_handshake(conn_t *c)
{
    int rc = tls_handshake(c->tls);

    if (rc == TLS_WANT_READ) {
        conn_watch(c, LOOP_READ);
        return rc;
    }
    if (rc == TLS_WANT_WRITE) {
        conn_watch(c, LOOP_WRITE);
        return rc;
    }
    if (rc != 0) {
        log_info(c->trace, "tls_failed", "ip=%s reason=%s", c->ip,
                 log_q(tls_conn_error(c->tls)));
        return ERR_PROTO;
    }
    c->tls_state = CONN_TLS;
    log_info(c->trace, "tls_up", "version=%s cipher=%s",
             tls_conn_version(c->tls), tls_conn_cipher(c->tls));
    return 0;
}

enum conn_tls
conn_tls_state(const conn_t *c)
{
    return c->tls_state;
}

const tls_conn_t *
conn_tls(const conn_t *c)
{
    return c->tls_state == CONN_TLS ? c->tls : NULL;
}

bool
conn_tls_pending(const conn_t *c)
{
    return c->tls_state == CONN_TLS && tls_pending(c->tls);
}

void
conn_watch(conn_t *c, int events)
{
    if (c->closed || events == c->watching)
        return;
    c->watching = events;
    loop_fd_mod(c->loop, c->fd, events);
}

int
conn_watching(const conn_t *c)
{
    return c->watching;
}

/* --- input ---------------------------------------------------------------- */

size_t
conn_in_pending(const conn_t *c)
{
    return c->in.len - c->in_off;
}

bool
conn_in_full(const conn_t *c)
{
    return conn_in_pending(c) >= CONN_IN_MAX;
}

/* Makes room at the end of the input for the next read and returns how
 * many bytes to read there: what CONN_IN_MAX leaves, at most in_read.
 * What the engine has not taken moves to the front only when the room is
 * short. */
static size_t
in_space(conn_t *c)
{
    size_t pending = conn_in_pending(c), want = CONN_IN_MAX - pending;

    if (want > c->in_read)
        want = c->in_read;
    if (c->in_off > 0 && c->in.cap - c->in.len - 1 < want) {
        memmove(c->in.data, c->in.data + c->in_off, pending);
        c->in.len = pending;
        c->in_off = 0;
    }
    buf_reserve(&c->in, want);
    return want;
}

ssize_t
conn_fill(conn_t *c, bool discard)
{
    ssize_t kept = 0;

    while (!conn_in_full(c)) {
        size_t want = in_space(c);
        ssize_t n = conn_read(c, c->in.data + c->in.len, want);

        if (n == TLS_WANT_READ || n == TLS_WANT_WRITE)
            break;
        if (n == 0) {
            c->eof = true;
            break;
        }
        if (n < 0)
            return n;
        if (discard)
            continue;
        c->in.len += (size_t)n;
        c->in.data[c->in.len] = '\0';
        kept += n;
        c->in_drained = (size_t)n < want;
        if (c->in_drained)
            break;
        if (c->in_read < CONN_IN_MAX)
            c->in_read *= 2;
    }
    return kept;
}

bool
conn_eof(const conn_t *c)
{
    return c->eof;
}

const char *
conn_in(const conn_t *c, size_t *len)
{
    *len = conn_in_pending(c);
    return *len > 0 ? c->in.data + c->in_off : "";
}

void
conn_in_took(conn_t *c, size_t n)
{
    c->in_off += n;
    if (c->in_off == c->in.len)
        c->in_off = c->in.len = 0;
}

void
conn_in_drop(conn_t *c)
{
    buf_reset(&c->in);
    c->in_off = 0;
}

void
conn_in_trim(conn_t *c)
{
    if (c->in_drained && conn_in_pending(c) == 0 && c->in.cap > 0) {
        buf_free(&c->in);
        c->in_off = 0;
    }
}
