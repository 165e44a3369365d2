/*
 * metrics_http.c - /metrics, /health, /ready and /live over libmicrohttpd
 * in external epoll mode (metrics_http.h).
 *
 * MHD keeps its own epoll set; that one descriptor sits in our loop. When
 * it is readable, or when the timeout MHD asks for runs out, MHD_run()
 * does the work, and MHD_get_timeout() then says when it must run again
 * (0 when it left work pending, which the edge-triggered set would not
 * signal a second time).
 */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "buf.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "metrics_http.h"
#include "xalloc.h"

/* Few scrapers and probes talk to one process; a request head and its
 * answer bookkeeping fit easily in 16 KiB (MHD answers 431 beyond). */
#define HTTP_MAX_CONNS 16
#define HTTP_MEMORY_LIMIT (16 * 1024)
#define HTTP_IDLE_S 10

struct metrics_http {
    loop_t *loop;
    struct metrics_http_opts o;
    struct MHD_Daemon *mhd;
    int listen_fd;
    int epoll_fd;
    int port;
    loop_timer_t *timer;
    metric_t *requests;
};

static void http_run(metrics_http_t *h);

/* Binds addr with port 0 allowed (config.c's C_ADDR_OPT), without
 * SO_REUSEPORT. Returns the descriptor or -1 with why. */
static int
bind_addr(const char *addr, char *why, size_t whylen)
{
    char host[256], service[16], tmp[300];
    struct addrinfo hints = {0}, *res = NULL, *ai;
    size_t len = strlen(addr);
    int port, fd = -1, one = 1, rc, any = 0;

    snprintf(tmp, sizeof(tmp), "%s", addr);
    if (len >= 2 && len < sizeof(tmp) && strcmp(addr + len - 2, ":0") == 0) {
        tmp[len - 1] = '1';
        any = 1;
    }
    if (len >= sizeof(tmp) ||
        config_split_addr(tmp, host, sizeof(host), &port) != 0) {
        snprintf(why, whylen, "metrics.listen \"%s\" is not HOST:PORT", addr);
        return -1;
    }
    snprintf(service, sizeof(service), "%d", any ? 0 : port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, service, &hints, &res)) != 0) {
        snprintf(why, whylen, "metrics.listen %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
            break;
        snprintf(why, whylen, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int
bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* MHD's own complaints (a malformed request, a full table) as one log
 * line each. */
static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_warn(NULL, "http_error", "reason=%s", log_q(msg));
}

static enum MHD_Result
respond(metrics_http_t *h, struct MHD_Connection *conn, const char *path,
        unsigned status, char *body, const char *ctype)
{
    struct MHD_Response *r;
    enum MHD_Result rc;
    char code[8];

    r = MHD_create_response_from_buffer(strlen(body), body,
                                        MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    snprintf(code, sizeof(code), "%u", status);
    metrics_inc(h->requests, METRICS_L(path, code));
    return rc;
}

static char *
check_body(metrics_http_check_fn *fn, void *arg, unsigned *status)
{
    char why[200] = "";

    if (fn == NULL || fn(arg, why, sizeof(why)) == 0) {
        *status = MHD_HTTP_OK;
        return xstrdup("ok\n");
    }
    *status = MHD_HTTP_SERVICE_UNAVAILABLE;
    return xasprintf("unavailable: %s\n", why);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
           const char *method, const char *version, const char *upload_data,
           size_t *upload_data_size, void **con_cls)
{
    metrics_http_t *h = cls;
    const char *text = "text/plain; charset=utf-8";
    unsigned status;
    char *body;

    (void)version;
    (void)upload_data;
    (void)con_cls;
    /* Only reads are served; a body is never read (RFC 9110 15.5.6). */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        *upload_data_size = 0;
        return respond(h, conn, "other", MHD_HTTP_METHOD_NOT_ALLOWED,
                       xstrdup("method not allowed\n"), text);
    }
    if (strcmp(url, "/metrics") == 0) {
        buf_t out = BUF_INIT;

        metrics_render(h->o.metrics, &out);
        body = buf_take(&out);
        return respond(h, conn, "/metrics", MHD_HTTP_OK, body,
                       "text/plain; version=0.0.4; charset=utf-8");
    }
    if (strcmp(url, "/health") == 0) {
        body = check_body(h->o.health, h->o.arg, &status);
        return respond(h, conn, "/health", status, body, text);
    }
    if (strcmp(url, "/ready") == 0) {
        body = check_body(h->o.ready ? h->o.ready : h->o.health, h->o.arg,
                          &status);
        return respond(h, conn, "/ready", status, body, text);
    }
    if (strcmp(url, "/live") == 0)
        return respond(h, conn, "/live", MHD_HTTP_OK, xstrdup("ok\n"), text);
    return respond(h, conn, "other", MHD_HTTP_NOT_FOUND,
                   xstrdup("not found: try /metrics, /health, /ready, "
                           "/live\n"),
                   text);
}

static void
on_timer(loop_t *loop, void *arg)
{
    metrics_http_t *h = arg;

    (void)loop;
    h->timer = NULL; /* the loop frees the handle after this call */
    http_run(h);
}

static void
on_readable(loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    http_run(arg);
}

/* Lets MHD work, then arms the timer for when it must work again. */
static void
http_run(metrics_http_t *h)
{
    MHD_UNSIGNED_LONG_LONG ms;

    MHD_run(h->mhd);
    loop_timer_cancel(h->loop, &h->timer);
    if (MHD_get_timeout(h->mhd, &ms) == MHD_YES)
        h->timer = loop_timer_add(h->loop, ms > 60000 ? 60000 : (int64_t)ms,
                                  on_timer, h);
}

metrics_http_t *
metrics_http_new(loop_t *loop, const struct metrics_http_opts *opts, char *why,
                 size_t whylen)
{
    metrics_http_t *h = xcalloc(1, sizeof(*h));
    const union MHD_DaemonInfo *info;

    h->loop = loop;
    h->o = *opts;
    h->epoll_fd = -1;
    h->listen_fd = bind_addr(opts->listen, why, whylen);
    if (h->listen_fd < 0)
        goto fail;
    h->port = bound_port(h->listen_fd);
    h->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, h,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, (void *)NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->listen_fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MEMORY_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_S, MHD_OPTION_END);
    if (h->mhd == NULL) {
        snprintf(why, whylen, "cannot start HTTP on %s", opts->listen);
        goto fail;
    }
    h->listen_fd = -1; /* MHD_stop_daemon() closes it from now on */
    info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL || info->epoll_fd < 0) {
        snprintf(why, whylen, "HTTP on %s: no epoll descriptor", opts->listen);
        goto fail;
    }
    h->epoll_fd = info->epoll_fd;
    if (loop_fd_add(loop, h->epoll_fd, LOOP_READ, on_readable, h) != 0) {
        snprintf(why, whylen, "HTTP on %s: cannot watch: %s", opts->listen,
                 strerror(errno));
        h->epoll_fd = -1;
        goto fail;
    }
    h->requests = metrics_counter(opts->metrics, "samotop_http_requests_total",
                                  "Requests to this metrics and health "
                                  "door, by path and status",
                                  "path,status");
    log_info(NULL, "metrics_listen", "addr=%s port=%d", log_q(opts->listen),
             h->port);
    http_run(h);
    return h;
fail:
    metrics_http_destroy(&h);
    return NULL;
}

void
metrics_http_destroy(metrics_http_t **http_p)
{
    metrics_http_t *h = *http_p;

    if (h == NULL)
        return;
    loop_timer_cancel(h->loop, &h->timer);
    if (h->epoll_fd >= 0)
        loop_fd_del(h->loop, h->epoll_fd);
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    free(h);
    *http_p = NULL;
}

int
metrics_http_port(const metrics_http_t *h)
{
    return h->port;
}
