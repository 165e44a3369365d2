/*
 * test_conn.c - a session's socket (lib/conn.h) over real socketpairs: the
 * input read in, taken, dropped and trimmed, the end of the peer's data,
 * writes, the watch, and a real TLS handshake and exchange against
 * OpenSSL's client side; the accept loop (lib/net.h) on loopback; the TLS
 * context from config (lib/tls.h).
 *
 * Every test runs in its own process (CK_FORK).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>

#include "lib/config.h"
#include "lib/conn.h"
#include "lib/err.h"
#include "lib/loop.h"
#include "lib/net.h"
#include "lib/tls.h"
#include "tests/testlib.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

static void
on_io(loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    (void)arg;
}

/* A connected pair: sv[0] for the conn, sv[1] the peer (blocking). */
static conn_t *
pair_conn(loop_t *loop, int sv[2])
{
    conn_t *c;

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    c = conn_new(loop, sv[0], "trace1", "192.0.2.1", on_io, NULL);
    ck_assert_ptr_nonnull(c);
    return c;
}

static void
send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        ck_assert_int_gt(w, 0);
        p += w;
        n -= (size_t)w;
    }
}

/* --- plain input --------------------------------------------------------- */

static const struct fill_row {
    const char *label;
    size_t sent; /* bytes the peer sent */
    size_t take; /* bytes the engine takes after the first fill */
    bool close;  /* the peer closes after sending */
    size_t want; /* bytes the first fill keeps */
    bool full;   /* the input is full after it */
} fill_rows[] = {
    {"short line", 6, 6, false, 6, false},
    {"short line then end", 6, 0, true, 6, false},
    {"nothing then end", 0, 0, true, 0, false},
    {"one read size", CONN_IN_READ_MIN, 100, false, CONN_IN_READ_MIN, false},
    {"more than fits", 3 * CONN_IN_MAX, 0, false, CONN_IN_MAX, true},
};

START_TEST(test_fill)
{
    const struct fill_row *r = &fill_rows[_i];
    loop_t *loop = loop_new();
    int sv[2];
    conn_t *c = pair_conn(loop, sv);
    char *data = malloc(r->sent + 1);
    size_t len, got = 0;
    ssize_t n;
    const char *in;

    for (size_t i = 0; i < r->sent; i++)
        data[i] = (char)('a' + i % 26);
    /* The peer's writes must not block on a full socket: a child sends. */
    if (fork() == 0) {
        send_all(sv[1], data, r->sent);
        if (r->close)
            shutdown(sv[1], SHUT_WR);
        _exit(0);
    }
    if (r->close)
        close(sv[1]);
    /* Reads may come short while the child writes: fill until it has all
     * that fits (or the end). */
    while (got < r->want || (r->close && !conn_eof(c))) {
        n = conn_fill(c, false);
        ck_assert_msg(n >= 0, "%s: fill: %zd", r->label, n);
        got += (size_t)n;
        if (n == 0 && !conn_eof(c))
            usleep(1000);
        if (conn_in_full(c))
            break;
    }
    ck_assert_msg(got == r->want, "%s: got %zu, want %zu", r->label, got,
                  r->want);
    ck_assert_msg(conn_in_full(c) == r->full, "%s: full %d, want %d", r->label,
                  conn_in_full(c), r->full);
    ck_assert_msg(conn_eof(c) == r->close, "%s: eof %d", r->label, conn_eof(c));
    in = conn_in(c, &len);
    ck_assert_uint_eq(len, r->want);
    ck_assert_msg(memcmp(in, data, len) == 0, "%s: bytes differ", r->label);
    ck_assert_int_eq(in[len], '\0');
    conn_in_took(c, r->take);
    ck_assert_uint_eq(conn_in_pending(c), r->want - r->take);
    in = conn_in(c, &len);
    ck_assert_msg(memcmp(in, data + r->take, len) == 0, "%s: rest differs",
                  r->label);
    conn_in_drop(c);
    ck_assert_uint_eq(conn_in_pending(c), 0);
    free(data);
    conn_destroy(&c);
    ck_assert_ptr_null(c);
    loop_destroy(&loop);
}
END_TEST

/* Input read with discard (after STARTTLS, before the handshake) is not
 * kept; the buffer of a session that stopped sending goes. */
START_TEST(test_discard_and_trim)
{
    loop_t *loop = loop_new();
    int sv[2];
    conn_t *c = pair_conn(loop, sv);
    size_t len;

    send_all(sv[1], "in clear\r\n", 10);
    ck_assert_int_eq(conn_fill(c, true), 0);
    ck_assert_uint_eq(conn_in_pending(c), 0);
    send_all(sv[1], "A1 NOOP\r\n", 9);
    ck_assert_int_eq(conn_fill(c, false), 9);
    ck_assert_str_eq(conn_in(c, &len), "A1 NOOP\r\n");
    conn_in_took(c, 9);
    conn_in_trim(c);
    ck_assert_str_eq(conn_in(c, &len), "");
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(conn_fill(c, false), 0); /* nothing there: would block */
    ck_assert(!conn_eof(c));
    close(sv[1]);
    conn_destroy(&c);
    loop_destroy(&loop);
}
END_TEST

/* Writes, the watch, and the socket gone. */
START_TEST(test_write_watch_close)
{
    loop_t *loop = loop_new();
    int sv[2];
    conn_t *c = pair_conn(loop, sv);
    char big[65536], tmp[16];
    ssize_t n, total = 0;

    ck_assert_int_eq(conn_watching(c), LOOP_READ);
    conn_watch(c, LOOP_READ | LOOP_WRITE);
    ck_assert_int_eq(conn_watching(c), LOOP_READ | LOOP_WRITE);
    conn_watch(c, 0);
    ck_assert_int_eq(conn_watching(c), 0);
    ck_assert_int_eq(conn_write(c, "* OK\r\n", 6), 6);
    ck_assert_int_eq(read(sv[1], tmp, sizeof(tmp)), 6);
    ck_assert_int_eq(conn_send(c, "* BYE\r\n", 7), 7);
    ck_assert_int_eq(read(sv[1], tmp, sizeof(tmp)), 7);
    ck_assert_int_eq(conn_tls_state(c), CONN_PLAIN);
    ck_assert_ptr_null(conn_tls(c));
    ck_assert(!conn_tls_pending(c));
    /* A full socket says TLS_WANT_WRITE, as TLS would. */
    memset(big, 'x', sizeof(big));
    while ((n = conn_write(c, big, sizeof(big))) > 0)
        total += n;
    ck_assert_int_eq(n, TLS_WANT_WRITE);
    ck_assert_int_gt(total, 0);
    ck_assert_int_eq(conn_read(c, tmp, sizeof(tmp)), TLS_WANT_READ);
    /* conn_send() says how much of an engine's output went: none now. */
    ck_assert_int_eq(conn_send(c, big, sizeof(big)), 0);
    ck_assert_int_eq(conn_send(c, big, 0), 0);
    /* The peer gone: a write fails (no SIGPIPE), a read sees the end. */
    close(sv[1]);
    ck_assert_int_lt(conn_write(c, "x", 1), 0);
    ck_assert_int_lt(conn_send(c, "x", 1), 0);
    conn_close(c);
    ck_assert_int_eq(conn_fd(c), -1);
    conn_watch(c, LOOP_READ); /* closed: nothing */
    ck_assert_int_eq(conn_watching(c), 0);
    conn_close(c);
    conn_destroy(&c);
    loop_destroy(&loop);
}
END_TEST

/* --- TLS ------------------------------------------------------------------ */

struct tfx {
    char base[64], dir[96], cert[128], key[128];
    tls_ctx_t *server, *client;
};

static void
tfx_init(struct tfx *f)
{
    char why[512];

    snprintf(f->base, sizeof(f->base), "/tmp/samotop-conn-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->base));
    snprintf(f->dir, sizeof(f->dir), "%s/tls", f->base);
    snprintf(f->cert, sizeof(f->cert), "%s/cert.pem", f->dir);
    snprintf(f->key, sizeof(f->key), "%s/key.pem", f->dir);
    ck_assert_msg(tls_self_signed_ensure(f->dir, "mx.example.test", why,
                                         sizeof(why)) == 0,
                  "ensure: %s", why);
    f->server = tls_server_new(f->cert, f->key, why, sizeof(why));
    ck_assert_msg(f->server != NULL, "server: %s", why);
    f->client = tls_client_new(NULL, why, sizeof(why));
    ck_assert_msg(f->client != NULL, "client: %s", why);
}

static void
tfx_done(struct tfx *f)
{
    tls_ctx_destroy(&f->server);
    tls_ctx_destroy(&f->client);
    test_rm_tree(f->base);
}

/* Drives both sides of the handshake until each is done. */
static void
shake(conn_t *c, tls_conn_t *cl)
{
    int sr = 1, cr = 1;

    for (int i = 0; i < 1000 && (sr != 0 || cr != 0); i++) {
        if (sr != 0) {
            sr = conn_handshake(c);
            ck_assert_msg(sr == 0 || sr == TLS_WANT_READ ||
                              sr == TLS_WANT_WRITE,
                          "server handshake: %d", sr);
            if (sr == TLS_WANT_READ)
                ck_assert_int_eq(conn_watching(c), LOOP_READ);
        }
        if (cr != 0) {
            cr = tls_handshake(cl);
            ck_assert_msg(cr == 0 || cr == TLS_WANT_READ ||
                              cr == TLS_WANT_WRITE,
                          "client handshake: %d (%s)", cr, tls_conn_error(cl));
        }
    }
    ck_assert_int_eq(sr, 0);
    ck_assert_int_eq(cr, 0);
}

START_TEST(test_tls_exchange)
{
    struct tfx f;
    loop_t *loop = loop_new();
    int sv[2];
    conn_t *c;
    tls_conn_t *cl;
    size_t len;
    ssize_t n;
    char tmp[64];

    tfx_init(&f);
    c = pair_conn(loop, sv);
    ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    /* What came in clear before STARTTLS is dropped by the session. */
    send_all(sv[1], "pipelined\r\n", 11);
    ck_assert_int_eq(conn_fill(c, true), 0);
    ck_assert_int_eq(conn_start_tls(c, f.server), 0);
    ck_assert_int_eq(conn_tls_state(c), CONN_HANDSHAKE);
    ck_assert_ptr_null(conn_tls(c));
    cl = tls_client_conn_new(f.client, sv[1], "mx.example.test", false);
    ck_assert_ptr_nonnull(cl);
    shake(c, cl);
    ck_assert_int_eq(conn_tls_state(c), CONN_TLS);
    ck_assert_ptr_nonnull(conn_tls(c));
    ck_assert_str_eq(tls_conn_version(conn_tls(c)), "TLSv1.3");
    /* Client to server, through conn_fill(). */
    ck_assert_int_eq(tls_write(cl, "A1 CAPABILITY\r\n", 15), 15);
    for (int i = 0; i < 100 && conn_in_pending(c) < 15; i++)
        ck_assert_int_ge(conn_fill(c, false), 0);
    ck_assert_str_eq(conn_in(c, &len), "A1 CAPABILITY\r\n");
    ck_assert(!conn_tls_pending(c));
    /* Server to client, through conn_write(). */
    ck_assert_int_eq(conn_write(c, "* OK\r\n", 6), 6);
    n = TLS_WANT_READ;
    for (int i = 0; i < 100 && n == TLS_WANT_READ; i++)
        n = tls_read(cl, tmp, sizeof(tmp));
    ck_assert_int_eq(n, 6);
    ck_assert(memcmp(tmp, "* OK\r\n", 6) == 0);
    /* Bytes decrypted and not read yet are pending, unseen by epoll. */
    ck_assert_int_eq(tls_write(cl, "0123456789", 10), 10);
    n = TLS_WANT_READ;
    for (int i = 0; i < 100 && n == TLS_WANT_READ; i++)
        n = conn_read(c, tmp, 4);
    ck_assert_int_eq(n, 4);
    ck_assert(conn_tls_pending(c));
    /* close_notify at the close: the client sees a clean end. */
    conn_close(c);
    n = TLS_WANT_READ;
    for (int i = 0; i < 100 && n == TLS_WANT_READ; i++)
        n = tls_read(cl, tmp, sizeof(tmp));
    ck_assert_int_eq(n, 0);
    tls_conn_destroy(&cl);
    close(sv[1]);
    conn_destroy(&c);
    loop_destroy(&loop);
    tfx_done(&f);
}
END_TEST

/* A client that is not speaking TLS fails the handshake. */
START_TEST(test_tls_failed)
{
    struct tfx f;
    loop_t *loop = loop_new();
    int sv[2], rc = TLS_WANT_READ;
    conn_t *c;

    tfx_init(&f);
    c = pair_conn(loop, sv);
    ck_assert_int_eq(conn_start_tls(c, f.server), 0);
    send_all(sv[1], "EHLO not tls at all\r\n", 21);
    for (int i = 0; i < 100 && (rc == TLS_WANT_READ || rc == TLS_WANT_WRITE);
         i++)
        rc = conn_handshake(c);
    ck_assert_int_eq(rc, ERR_PROTO);
    ck_assert_int_eq(conn_tls_state(c), CONN_HANDSHAKE);
    close(sv[1]);
    conn_destroy(&c);
    loop_destroy(&loop);
    tfx_done(&f);
}
END_TEST

/* tls.cert and tls.key, or the self-signed pair in data/tls. */
START_TEST(test_tls_from_config)
{
    struct tfx f;
    config_t *cfg = config_new();
    tls_ctx_t *ctx;
    char why[512], data[128];
    struct stat st;

    tfx_init(&f);
    snprintf(data, sizeof(data), "%s/data", f.base);
    ck_assert_int_eq(mkdir(data, 0700), 0);
    ck_assert_int_eq(config_set(cfg, "data", data, why, sizeof(why)), 0);
    ctx = tls_server_from_config(cfg, "mx.example.test");
    ck_assert_ptr_nonnull(ctx);
    tls_ctx_destroy(&ctx);
    snprintf(why, sizeof(why), "%s/tls/key.pem", data);
    ck_assert_msg(stat(why, &st) == 0, "no self-signed pair made");
    ck_assert_int_eq(config_set(cfg, "tls.cert", f.cert, why, sizeof(why)), 0);
    ck_assert_int_eq(config_set(cfg, "tls.key", f.key, why, sizeof(why)), 0);
    ctx = tls_server_from_config(cfg, "mx.example.test");
    ck_assert_ptr_nonnull(ctx);
    tls_ctx_destroy(&ctx);
    /* A certificate that is not there: NULL (logged). */
    ck_assert_int_eq(
        config_set(cfg, "tls.cert", "/nonexistent/cert.pem", why, sizeof(why)),
        0);
    ck_assert_ptr_null(tls_server_from_config(cfg, "mx.example.test"));
    config_destroy(&cfg);
    tfx_done(&f);
}
END_TEST

/* --- the accept loop --------------------------------------------------------
 */

struct accepted {
    loop_t *loop;
    int n, want;
    char ip[64];
};

static void
on_accepted(void *arg, int fd, const char *ip)
{
    struct accepted *a = arg;

    snprintf(a->ip, sizeof(a->ip), "%s", ip);
    net_refuse(fd, "421 busy\r\n");
    if (++a->n == a->want)
        loop_stop(a->loop);
}

static void
on_give_up(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

START_TEST(test_acceptor)
{
    loop_t *loop = loop_new();
    int sessions = 0, lfd, cfd[3];
    net_acceptor_t *a = net_acceptor_new(loop, "door", 2, &sessions);
    struct accepted acc = {.loop = loop, .want = 3};
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    char line[32];

    ck_assert_int_lt(
        net_acceptor_listen(a, "bad", "no-port", on_accepted, &acc), 0);
    lfd = net_acceptor_listen(a, "test", "127.0.0.1:0", on_accepted, &acc);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
    for (int i = 0; i < 3; i++) {
        cfd[i] = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_eq(connect(cfd[i], (struct sockaddr *)&sin, sizeof(sin)),
                         0);
    }
    /* A batch of two, then the third on the next wake-up. */
    loop_timer_add(loop, 5000, on_give_up, NULL);
    net_acceptor_resume(a); /* not paused: nothing */
    ck_assert_int_eq(loop_run(loop), 0);
    ck_assert_int_eq(acc.n, 3);
    ck_assert_str_eq(acc.ip, "127.0.0.1");
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(read(cfd[i], line, sizeof(line)), 10);
        close(cfd[i]);
    }
    ck_assert_uint_eq(net_acceptor_episodes(a), 0);
    net_acceptor_destroy(&a);
    ck_assert_ptr_null(a);
    net_acceptor_destroy(&a);
    loop_destroy(&loop);
}
END_TEST

/* Out of descriptors: accepting pauses (one episode however long it
 * lasts), and a descriptor freed lets the waiting connection in. */
struct starve {
    loop_t *loop;
    net_acceptor_t *a;
    int spare; /* a descriptor held to be freed */
    int ticks;
    struct accepted *acc;
};

static void
on_starve_tick(loop_t *loop, void *arg)
{
    struct starve *st = arg;

    /* Several retries fail while no descriptor is free; then one is. */
    if (++st->ticks == 4) {
        ck_assert_uint_eq(net_acceptor_episodes(st->a), 1);
        ck_assert_int_eq(st->acc->n, 0);
        close(st->spare);
        net_acceptor_resume(st->a);
        return;
    }
    loop_timer_add(loop, 2 * NET_ACCEPT_RETRY_MS, on_starve_tick, st);
}

START_TEST(test_acceptor_starved)
{
    loop_t *loop = loop_new();
    int sessions = 0, lfd, cfd, last = -1;
    net_acceptor_t *a = net_acceptor_new(loop, "role", 64, &sessions);
    struct accepted acc = {.loop = loop, .want = 1};
    struct starve st = {.loop = loop, .a = a, .acc = &acc};
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    struct rlimit rl;

    lfd = net_acceptor_listen(a, "mta", "127.0.0.1:0", on_accepted, &acc);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
    cfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    /* Every descriptor taken: a few over what is open now. */
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = (rlim_t)cfd + 8;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    for (int fd; (fd = dup(0)) >= 0;)
        last = fd;
    ck_assert_int_eq(errno, EMFILE);
    ck_assert_int_ge(last, 0);
    st.spare = last;
    loop_timer_add(loop, NET_ACCEPT_RETRY_MS, on_starve_tick, &st);
    loop_timer_add(loop, 5000, on_give_up, NULL);
    ck_assert_int_eq(loop_run(loop), 0);
    ck_assert_int_eq(acc.n, 1);
    ck_assert_uint_eq(net_acceptor_episodes(a), 1);
    close(cfd);
    net_acceptor_destroy(&a);
    loop_destroy(&loop);
}
END_TEST

static Suite *
conn_suite(void)
{
    Suite *s = suite_create("conn");
    TCase *io = tcase_create("io");
    TCase *tls = tcase_create("tls");
    TCase *acc = tcase_create("accept");

    tcase_add_loop_test(io, test_fill, 0, NROWS(fill_rows));
    tcase_add_test(io, test_discard_and_trim);
    tcase_add_test(io, test_write_watch_close);
    suite_add_tcase(s, io);
    tcase_set_timeout(tls, 30);
    tcase_add_test(tls, test_tls_exchange);
    tcase_add_test(tls, test_tls_failed);
    tcase_add_test(tls, test_tls_from_config);
    suite_add_tcase(s, tls);
    tcase_add_test(acc, test_acceptor);
    tcase_add_test(acc, test_acceptor_starved);
    suite_add_tcase(s, acc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(conn_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
