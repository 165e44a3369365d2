/*
 * test_loop.c - the event loop (lib/loop.h): timers in order and cancelled,
 * fd readiness through pipes, ZeroMQ sockets that must not lose a message
 * (ZMQ_FD is edge-like), flushers (called once a turn before the wait,
 * removable from inside one, and a send from one never left unread),
 * signals through signalfd, and loop_stop().
 *
 * Every run is bounded by a watchdog timer that stops the loop and fails
 * the test, so a lost wake-up shows as a failure and not as a hang.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <zmq.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/loop.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

/* The watchdog. */

static bool watchdog_fired;

static void
on_watchdog(loop_t *loop, void *arg)
{
    (void)arg;
    watchdog_fired = true;
    loop_stop(loop);
}

/* Runs loop until something calls loop_stop(), failing the test when the
 * watchdog has to do it after ms. */
static void
run_bounded(const char *label, loop_t *loop, int64_t ms)
{
    loop_timer_t *dog;
    int rc;

    watchdog_fired = false;
    dog = loop_timer_add(loop, ms, on_watchdog, NULL);
    rc = loop_run(loop);
    ck_assert_msg(rc == 0, "%s: loop_run: got %d, want 0", label, rc);
    ck_assert_msg(!watchdog_fired, "%s: nothing stopped the loop in %lld ms",
                  label, (long long)ms);
    loop_timer_cancel(loop, &dog);
}

static void
on_stop(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

/* Timers. */

#define MAX_TIMERS 128

struct fired {
    loop_t *loop;
    int64_t start;
    int want; /* stop the loop after this many */
    int n;
    int order[MAX_TIMERS];
    int64_t at[MAX_TIMERS];
    loop_timer_t *handles[MAX_TIMERS];
    int idx[MAX_TIMERS];
};

static struct fired fired;

static void
on_timer(loop_t *loop, void *arg)
{
    int i = *(int *)arg;

    fired.handles[i] = NULL; /* fired: the handle is gone */
    fired.order[fired.n] = i;
    fired.at[fired.n] = loop_now_ms(loop) - fired.start;
    if (++fired.n == fired.want)
        loop_stop(loop);
}

static void
fired_reset(loop_t *loop, int want)
{
    memset(&fired, 0, sizeof(fired));
    fired.loop = loop;
    fired.want = want;
    fired.start = clock_mono_ms();
    for (int i = 0; i < MAX_TIMERS; i++)
        fired.idx[i] = i;
}

static const struct order_row {
    const char *label;
    int n;
    int64_t delays[8];
} order_rows[] = {
    {"increasing", 3, {10, 20, 30}},
    {"decreasing", 3, {30, 20, 10}},
    {"equal delays keep insertion order", 4, {15, 15, 15, 15}},
    {"mixed with zero", 6, {25, 0, 10, 0, 25, 5}},
    {"negative means now", 3, {10, -5, 0}},
    {"eight shuffled", 8, {40, 35, 30, 5, 20, 15, 10, 25}},
};

START_TEST(test_timer_order)
{
    const struct order_row *r = &order_rows[_i];
    loop_t *loop = loop_new();
    int want[8];

    fired_reset(loop, r->n);
    for (int i = 0; i < r->n; i++)
        fired.handles[i] =
            loop_timer_add(loop, r->delays[i], on_timer, &fired.idx[i]);
    /* The expected order: by delay (negative as 0), ties by insertion. */
    for (int i = 0; i < r->n; i++)
        want[i] = i;
    for (int i = 1; i < r->n; i++)
        for (int j = i; j > 0; j--) {
            int64_t a = r->delays[want[j - 1]], b = r->delays[want[j]];
            int t = want[j];

            if ((a < 0 ? 0 : a) <= (b < 0 ? 0 : b))
                break;
            want[j] = want[j - 1];
            want[j - 1] = t;
        }
    run_bounded(r->label, loop, 5000);
    ck_assert_msg(fired.n == r->n, "%s: got %d timers, want %d", r->label,
                  fired.n, r->n);
    for (int i = 0; i < r->n; i++) {
        int64_t d = r->delays[fired.order[i]];

        ck_assert_msg(fired.order[i] == want[i],
                      "%s: timer %d fired as #%d: got %d, want %d", r->label,
                      fired.order[i], i, fired.order[i], want[i]);
        ck_assert_msg(fired.at[i] >= d, "%s: timer %d fired after %lld ms, "
                      "want at least %lld", r->label, fired.order[i],
                      (long long)fired.at[i], (long long)d);
    }
    loop_destroy(&loop);
}
END_TEST

static void
on_cancel_other(loop_t *loop, void *arg)
{
    loop_timer_t **victim = arg;

    on_timer(loop, &fired.idx[0]);
    loop_timer_cancel(loop, victim);
}

START_TEST(test_timer_cancel)
{
    loop_t *loop = loop_new();
    loop_timer_t *none = NULL;

    fired_reset(loop, 2);
    /* 0 cancels 2 when it fires; 1 is cancelled before the run; 3 ends. */
    fired.handles[0] =
        loop_timer_add(loop, 10, on_cancel_other, &fired.handles[2]);
    fired.handles[1] = loop_timer_add(loop, 20, on_timer, &fired.idx[1]);
    fired.handles[2] = loop_timer_add(loop, 30, on_timer, &fired.idx[2]);
    fired.handles[3] = loop_timer_add(loop, 40, on_timer, &fired.idx[3]);
    loop_timer_cancel(loop, &fired.handles[1]);
    ck_assert_msg(fired.handles[1] == NULL, "cancel left the handle set");
    loop_timer_cancel(loop, &none); /* a no-op */
    run_bounded("cancel", loop, 5000);
    ck_assert_msg(fired.n == 2, "cancel: got %d timers, want 2", fired.n);
    ck_assert_msg(fired.order[0] == 0 && fired.order[1] == 3,
                  "cancel: fired %d then %d, want 0 then 3", fired.order[0],
                  fired.order[1]);
    ck_assert_msg(fired.handles[2] == NULL, "cancel in a callback left the "
                  "handle set");
    /* Nothing cancelled fires later either. */
    loop_timer_add(loop, 50, on_stop, NULL);
    run_bounded("after cancel", loop, 5000);
    ck_assert_msg(fired.n == 2, "after cancel: got %d timers, want 2",
                  fired.n);
    loop_destroy(&loop);
}
END_TEST

/* The heap stays ordered when timers leave from the middle. The delays
 * are distinct and 2 ms apart, so that the order is exact even if the
 * clock ticks while the timers are being added. */
START_TEST(test_timer_cancel_many)
{
    enum { N = MAX_TIMERS };
    loop_t *loop = loop_new();
    int64_t delay[N];
    int kept = 0;

    fired_reset(loop, 0);
    for (int i = 0; i < N; i++) {
        delay[i] = 2 * ((i * 37) % N); /* 37 is prime to N: a shuffle */
        fired.handles[i] = loop_timer_add(loop, delay[i], on_timer,
                                          &fired.idx[i]);
    }
    for (int i = 0; i < N; i++)
        if (i % 3 == 1)
            loop_timer_cancel(loop, &fired.handles[i]);
        else
            kept++;
    fired.want = kept;
    run_bounded("cancel many", loop, 5000);
    ck_assert_msg(fired.n == kept, "cancel many: got %d timers, want %d",
                  fired.n, kept);
    for (int i = 0; i < fired.n; i++) {
        ck_assert_msg(fired.order[i] % 3 != 1, "cancelled timer %d fired",
                      fired.order[i]);
        if (i > 0)
            ck_assert_msg(delay[fired.order[i]] > delay[fired.order[i - 1]],
                          "timer %d (%lld ms) fired after timer %d (%lld ms)",
                          fired.order[i], (long long)delay[fired.order[i]],
                          fired.order[i - 1],
                          (long long)delay[fired.order[i - 1]]);
    }
    loop_destroy(&loop);
}
END_TEST

static int chain_left;

static void
on_chain(loop_t *loop, void *arg)
{
    (void)arg;
    if (--chain_left == 0)
        loop_stop(loop);
    else
        loop_timer_add(loop, chain_left % 2 ? 0 : 1, on_chain, NULL);
}

START_TEST(test_timer_from_callback)
{
    loop_t *loop = loop_new();

    chain_left = 50;
    loop_timer_add(loop, 0, on_chain, NULL);
    run_bounded("timer chain", loop, 5000);
    ck_assert_msg(chain_left == 0, "timer chain: %d left, want 0",
                  chain_left);
    loop_destroy(&loop);
}
END_TEST

START_TEST(test_now_advances)
{
    loop_t *loop = loop_new();
    int64_t t0 = loop_now_ms(loop);

    fired_reset(loop, 1);
    loop_timer_add(loop, 30, on_timer, &fired.idx[0]);
    run_bounded("now", loop, 5000);
    ck_assert_msg(loop_now_ms(loop) - t0 >= 30,
                  "now: advanced %lld ms, want at least 30",
                  (long long)(loop_now_ms(loop) - t0));
    loop_destroy(&loop);
    ck_assert_msg(loop == NULL, "loop_destroy left the pointer set");
    loop_destroy(&loop); /* NULL is fine */
}
END_TEST

/* Pending timers are freed with the loop (the sanitizer build checks). */
START_TEST(test_destroy_with_timers)
{
    loop_t *loop = loop_new();

    for (int i = 0; i < 100; i++)
        loop_timer_add(loop, 1000 + i, on_stop, NULL);
    loop_destroy(&loop);
    ck_assert_msg(loop == NULL, "loop_destroy left the pointer set");
}
END_TEST

/* File descriptors. */

struct fdctx {
    int calls, events, last_fd;
    char got[16];
    ssize_t nread;
    int other; /* for the test that deletes another watcher */
    bool stop;
};

static void
on_readable(loop_t *loop, int fd, int events, void *arg)
{
    struct fdctx *c = arg;

    c->calls++;
    c->events |= events;
    c->last_fd = fd;
    if (events & LOOP_READ)
        c->nread = read(fd, c->got, sizeof(c->got));
    if (c->stop)
        loop_stop(loop);
}

struct writer {
    int fd;
    const char *bytes;
};

static void
on_write_later(loop_t *loop, void *arg)
{
    struct writer *w = arg;

    (void)loop;
    if (w->bytes)
        ck_assert_int_eq(write(w->fd, w->bytes, strlen(w->bytes)),
                         (ssize_t)strlen(w->bytes));
    else
        close(w->fd);
}

START_TEST(test_fd_read)
{
    loop_t *loop = loop_new();
    struct fdctx c = {.stop = true};
    struct writer w;
    int p[2];
    int64_t t0 = clock_mono_ms();

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(loop_fd_add(loop, p[0], LOOP_READ, on_readable, &c), 0);
    w = (struct writer){p[1], "x"};
    loop_timer_add(loop, 20, on_write_later, &w);
    run_bounded("fd read", loop, 5000);
    ck_assert_msg(c.calls == 1, "fd read: got %d calls, want 1", c.calls);
    ck_assert_msg(c.events == LOOP_READ, "fd read: got events %d, want %d",
                  c.events, LOOP_READ);
    ck_assert_msg(c.last_fd == p[0], "fd read: got fd %d, want %d",
                  c.last_fd, p[0]);
    ck_assert_msg(c.nread == 1 && c.got[0] == 'x',
                  "fd read: read %zd bytes", c.nread);
    ck_assert_msg(clock_mono_ms() - t0 >= 20, "fd read: ready before the "
                  "write");
    ck_assert_msg(loop_fd_add(loop, p[0], LOOP_READ, on_readable, &c) ==
                      ERR_INVAL,
                  "adding an fd twice: want ERR_INVAL");
    loop_fd_del(loop, p[0]);
    close(p[0]);
    close(p[1]);
    loop_destroy(&loop);
}
END_TEST

/* The far end closing is readable (end of file). */
START_TEST(test_fd_hangup)
{
    loop_t *loop = loop_new();
    struct fdctx c = {.stop = true, .nread = -2};
    struct writer w;
    int p[2];

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(loop_fd_add(loop, p[0], LOOP_READ, on_readable, &c), 0);
    w = (struct writer){p[1], NULL};
    loop_timer_add(loop, 5, on_write_later, &w);
    run_bounded("hangup", loop, 5000);
    ck_assert_msg(c.calls == 1 && (c.events & LOOP_READ),
                  "hangup: got %d calls, events %d", c.calls, c.events);
    ck_assert_msg(c.nread == 0, "hangup: read gave %zd, want 0 (EOF)",
                  c.nread);
    loop_fd_del(loop, p[0]);
    close(p[0]);
    loop_destroy(&loop);
}
END_TEST

static void
on_writable_once(loop_t *loop, int fd, int events, void *arg)
{
    struct fdctx *c = arg;

    c->calls++;
    c->events |= events;
    ck_assert_int_eq(loop_fd_mod(loop, fd, 0), 0);
}

/* Write readiness is reported, and loop_fd_mod() turns it off: the watch
 * is level-triggered, so a watcher left on would be called again and
 * again. */
START_TEST(test_fd_write_and_mod)
{
    loop_t *loop = loop_new();
    struct fdctx c = {0};
    int p[2];

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(loop_fd_add(loop, p[1], LOOP_WRITE, on_writable_once,
                                 &c), 0);
    loop_timer_add(loop, 50, on_stop, NULL);
    run_bounded("write", loop, 5000);
    ck_assert_msg(c.calls == 1, "write: got %d calls, want 1", c.calls);
    ck_assert_msg(c.events == LOOP_WRITE, "write: got events %d, want %d",
                  c.events, LOOP_WRITE);
    ck_assert_msg(loop_fd_mod(loop, p[0], LOOP_READ) == ERR_INVAL,
                  "mod of an unwatched fd: want ERR_INVAL");
    loop_fd_del(loop, p[1]);
    close(p[0]);
    close(p[1]);
    loop_destroy(&loop);
}
END_TEST

START_TEST(test_fd_del)
{
    loop_t *loop = loop_new();
    struct fdctx c = {0};
    int p[2];

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(loop_fd_add(loop, p[0], LOOP_READ, on_readable, &c), 0);
    loop_fd_del(loop, p[0]);
    loop_fd_del(loop, p[0]); /* twice is fine */
    ck_assert_int_eq(write(p[1], "y", 1), 1);
    loop_timer_add(loop, 30, on_stop, NULL);
    run_bounded("deleted fd", loop, 5000);
    ck_assert_msg(c.calls == 0, "deleted fd: got %d calls, want 0", c.calls);
    /* Watched again, the byte waiting is seen. */
    c.stop = true;
    ck_assert_int_eq(loop_fd_add(loop, p[0], LOOP_READ, on_readable, &c), 0);
    run_bounded("re-added fd", loop, 5000);
    ck_assert_msg(c.calls == 1 && c.nread == 1 && c.got[0] == 'y',
                  "re-added fd: got %d calls, read %zd", c.calls, c.nread);
    loop_fd_del(loop, p[0]);
    close(p[0]);
    close(p[1]);
    loop_destroy(&loop);
}
END_TEST

static int del_calls;

static void
on_del_other(loop_t *loop, int fd, int events, void *arg)
{
    int other = *(int *)arg;
    char ch;

    (void)events;
    del_calls++;
    ck_assert_int_eq(read(fd, &ch, 1), 1);
    loop_fd_del(loop, other);
}

/* Two fds ready in the same wait: the first callback removes the other
 * watcher, whose event must then be dropped. */
START_TEST(test_fd_del_in_callback)
{
    loop_t *loop = loop_new();
    int a[2], b[2];

    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(pipe(b), 0);
    ck_assert_int_eq(write(a[1], "a", 1), 1);
    ck_assert_int_eq(write(b[1], "b", 1), 1);
    del_calls = 0;
    ck_assert_int_eq(loop_fd_add(loop, a[0], LOOP_READ, on_del_other,
                                 &b[0]), 0);
    ck_assert_int_eq(loop_fd_add(loop, b[0], LOOP_READ, on_del_other,
                                 &a[0]), 0);
    loop_timer_add(loop, 30, on_stop, NULL);
    run_bounded("delete in callback", loop, 5000);
    ck_assert_msg(del_calls == 1, "delete in callback: got %d calls, want 1",
                  del_calls);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
    }
    loop_destroy(&loop);
}
END_TEST

/* ZeroMQ. */

#define NMSG 1000

struct zpair {
    void *ctx, *tx, *rx;
};

struct zctx {
    loop_t *loop;
    void *tx;      /* where to send */
    int sent;      /* messages sent */
    int got;       /* messages received in order */
    int echoed;    /* echoes received by the sender side */
    int empty;     /* calls that found nothing: one per pass is expected */
    int bad;       /* messages out of order */
    int want;      /* stop when got (or echoed) reaches it */
    bool echo;     /* receiver sends each message back */
    int burst;     /* messages per timer tick */
    int *done;     /* shared count of finished sockets */
    int ndone;     /* stop when *done reaches it */
};

static void
zpair_open(struct zpair *z, const char *name)
{
    int zero = 0;

    z->ctx = zmq_ctx_new();
    z->tx = zmq_socket(z->ctx, ZMQ_PAIR);
    z->rx = zmq_socket(z->ctx, ZMQ_PAIR);
    ck_assert_msg(z->ctx && z->tx && z->rx, "zmq: %s", zmq_strerror(errno));
    /* No high-water mark: the test sends everything before reading. */
    zmq_setsockopt(z->tx, ZMQ_SNDHWM, &zero, sizeof(zero));
    zmq_setsockopt(z->tx, ZMQ_RCVHWM, &zero, sizeof(zero));
    zmq_setsockopt(z->rx, ZMQ_SNDHWM, &zero, sizeof(zero));
    zmq_setsockopt(z->rx, ZMQ_RCVHWM, &zero, sizeof(zero));
    ck_assert_msg(zmq_bind(z->rx, name) == 0, "bind %s: %s", name,
                  zmq_strerror(errno));
    ck_assert_msg(zmq_connect(z->tx, name) == 0, "connect %s: %s", name,
                  zmq_strerror(errno));
}

static void
zpair_close(struct zpair *z)
{
    int zero = 0;

    zmq_setsockopt(z->tx, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(z->rx, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_close(z->tx);
    zmq_close(z->rx);
    zmq_ctx_term(z->ctx);
}

static void
zsend(void *sock, int seq)
{
    ck_assert_msg(zmq_send(sock, &seq, sizeof(seq), ZMQ_DONTWAIT) ==
                      (int)sizeof(seq),
                  "send %d: %s", seq, zmq_strerror(errno));
}

static void
finish(struct zctx *c)
{
    if (c->done == NULL) {
        loop_stop(c->loop);
    } else if (++*c->done == c->ndone) {
        loop_stop(c->loop);
    }
}

static int
on_zmq_rx(loop_t *loop, void *sock, void *arg)
{
    struct zctx *c = arg;
    int seq;

    (void)loop;
    if (zmq_recv(sock, &seq, sizeof(seq), ZMQ_DONTWAIT) != sizeof(seq)) {
        c->empty++;
        return 0;
    }
    if (seq != c->got)
        c->bad++;
    c->got++;
    if (c->echo)
        zsend(sock, seq);
    else if (c->got == c->want)
        finish(c);
    return 1;
}

static int
on_zmq_echo(loop_t *loop, void *sock, void *arg)
{
    struct zctx *c = arg;
    int seq;

    (void)loop;
    if (zmq_recv(sock, &seq, sizeof(seq), ZMQ_DONTWAIT) != sizeof(seq)) {
        c->empty++;
        return 0;
    }
    if (++c->echoed == c->want)
        finish(c);
    return 1;
}

static void
on_burst(loop_t *loop, void *arg)
{
    struct zctx *c = arg;

    for (int i = 0; i < c->burst && c->sent < c->want; i++)
        zsend(c->tx, c->sent++);
    if (c->sent < c->want)
        loop_timer_add(loop, 1, on_burst, c);
}

enum zmode { Z_BEFORE, Z_BURSTS, Z_ECHO, Z_TWO_PAIRS, Z_ONE_BY_ONE };

static const struct zmq_row {
    const char *label;
    enum zmode mode;
    int burst;
} zmq_rows[] = {
    {"all sent before the run", Z_BEFORE, 0},
    {"sent in bursts of 7 from a timer", Z_BURSTS, 7},
    {"sent in bursts of 200 from a timer", Z_BURSTS, 200},
    {"sent one per tick", Z_ONE_BY_ONE, 1},
    {"echoed back by the receiver", Z_ECHO, 0},
    {"two socket pairs at once", Z_TWO_PAIRS, 0},
};

START_TEST(test_zmq_no_loss)
{
    const struct zmq_row *r = &zmq_rows[_i];
    loop_t *loop = loop_new();
    struct zpair z, z2;
    struct zctx c = {.loop = loop, .want = NMSG}, c2 = c;
    char name[64];
    int done = 0, n = r->mode == Z_ONE_BY_ONE ? 100 : NMSG;

    snprintf(name, sizeof(name), "inproc://loop-test-%d", _i);
    zpair_open(&z, name);
    c.tx = z.tx;
    c.want = n;
    ck_assert_int_eq(loop_zmq_add(loop, z.rx, on_zmq_rx, &c), 0);
    switch (r->mode) {
    case Z_BEFORE:
        for (int i = 0; i < n; i++)
            zsend(z.tx, c.sent++);
        break;
    case Z_BURSTS:
    case Z_ONE_BY_ONE:
        c.burst = r->burst;
        loop_timer_add(loop, 0, on_burst, &c);
        break;
    case Z_ECHO:
        c.echo = true;
        ck_assert_int_eq(loop_zmq_add(loop, z.tx, on_zmq_echo, &c), 0);
        for (int i = 0; i < n; i++)
            zsend(z.tx, c.sent++);
        break;
    case Z_TWO_PAIRS:
        snprintf(name, sizeof(name), "inproc://loop-test-%d-b", _i);
        zpair_open(&z2, name);
        c2.tx = z2.tx;
        c.done = c2.done = &done;
        c.ndone = c2.ndone = 2;
        ck_assert_int_eq(loop_zmq_add(loop, z2.rx, on_zmq_rx, &c2), 0);
        for (int i = 0; i < n; i++) {
            zsend(z.tx, c.sent++);
            zsend(z2.tx, c2.sent++);
        }
        break;
    }
    run_bounded(r->label, loop, 10000);
    ck_assert_msg(c.got == n, "%s: got %d messages, want %d", r->label,
                  c.got, n);
    ck_assert_msg(c.bad == 0, "%s: %d messages out of order", r->label,
                  c.bad);
    /* The loop reads until empty, so each wake-up ends with one empty
     * call per socket and pass; far more would mean a busy loop. */
    ck_assert_msg(c.empty <= 8 * (c.want + 100), "%s: %d empty calls",
                  r->label, c.empty);
    if (r->mode == Z_ECHO)
        ck_assert_msg(c.echoed == n, "%s: got %d echoes, want %d", r->label,
                      c.echoed, n);
    if (r->mode == Z_TWO_PAIRS) {
        ck_assert_msg(c2.got == n && c2.bad == 0,
                      "%s: second pair got %d messages (%d out of order), "
                      "want %d", r->label, c2.got, c2.bad, n);
        loop_zmq_del(loop, z2.rx);
        zpair_close(&z2);
    }
    loop_zmq_del(loop, z.rx);
    loop_zmq_del(loop, z.tx);
    zpair_close(&z);
    loop_destroy(&loop);
}
END_TEST

START_TEST(test_zmq_del)
{
    loop_t *loop = loop_new();
    struct zctx c = {.loop = loop, .want = 5};
    struct zpair z;

    zpair_open(&z, "inproc://loop-test-del");
    ck_assert_int_eq(loop_zmq_add(loop, z.rx, on_zmq_rx, &c), 0);
    loop_zmq_del(loop, z.rx);
    for (int i = 0; i < 5; i++)
        zsend(z.tx, i);
    loop_timer_add(loop, 30, on_stop, NULL);
    run_bounded("zmq deleted", loop, 5000);
    ck_assert_msg(c.got == 0, "zmq deleted: got %d messages, want 0", c.got);
    /* Watched again, the five waiting are read. */
    ck_assert_int_eq(loop_zmq_add(loop, z.rx, on_zmq_rx, &c), 0);
    run_bounded("zmq re-added", loop, 5000);
    ck_assert_msg(c.got == 5, "zmq re-added: got %d messages, want 5",
                  c.got);
    loop_zmq_del(loop, z.rx);
    zpair_close(&z);
    loop_destroy(&loop);
}
END_TEST

/* Signals. */

static int sig_calls[NSIG];
static int sig_want;

static void
on_signal(loop_t *loop, int signo, void *arg)
{
    int *total = arg;

    if (signo > 0 && signo < NSIG)
        sig_calls[signo]++;
    if (++*total == sig_want)
        loop_stop(loop);
}

static void
on_raise(loop_t *loop, void *arg)
{
    (void)loop;
    raise(*(int *)arg);
}

START_TEST(test_signal)
{
    loop_t *loop = loop_new();
    int usr1 = SIGUSR1, total = 0;

    memset(sig_calls, 0, sizeof(sig_calls));
    sig_want = 1;
    ck_assert_int_eq(loop_signal_add(loop, SIGUSR1, on_signal, &total), 0);
    loop_timer_add(loop, 10, on_raise, &usr1);
    run_bounded("SIGUSR1", loop, 5000);
    ck_assert_msg(sig_calls[SIGUSR1] == 1, "SIGUSR1: got %d calls, want 1",
                  sig_calls[SIGUSR1]);
    loop_destroy(&loop);
}
END_TEST

START_TEST(test_two_signals)
{
    loop_t *loop = loop_new();
    int usr1 = SIGUSR1, usr2 = SIGUSR2, total = 0;

    memset(sig_calls, 0, sizeof(sig_calls));
    sig_want = 3;
    ck_assert_int_eq(loop_signal_add(loop, SIGUSR1, on_signal, &total), 0);
    ck_assert_int_eq(loop_signal_add(loop, SIGUSR2, on_signal, &total), 0);
    raise(SIGUSR2); /* blocked now, so pending until the loop reads it */
    loop_timer_add(loop, 10, on_raise, &usr1);
    loop_timer_add(loop, 20, on_raise, &usr2);
    run_bounded("two signals", loop, 5000);
    ck_assert_msg(sig_calls[SIGUSR1] == 1, "SIGUSR1: got %d calls, want 1",
                  sig_calls[SIGUSR1]);
    ck_assert_msg(sig_calls[SIGUSR2] == 2, "SIGUSR2: got %d calls, want 2",
                  sig_calls[SIGUSR2]);
    loop_destroy(&loop);
}
END_TEST

/* loop_stop(). */

static int stop_order[4], stop_n;

static void
on_record_stop(loop_t *loop, void *arg)
{
    stop_order[stop_n++] = *(int *)arg;
    loop_stop(loop);
}

/* A callback that stops the loop is the last one of the run: the next
 * timer due waits for the next loop_run(). */
START_TEST(test_stop)
{
    loop_t *loop = loop_new();
    int one = 1, two = 2;

    stop_n = 0;
    loop_timer_add(loop, 10, on_record_stop, &one);
    loop_timer_add(loop, 10, on_record_stop, &two);
    run_bounded("first run", loop, 5000);
    ck_assert_msg(stop_n == 1 && stop_order[0] == 1,
                  "first run: %d callbacks, first %d; want 1, 1", stop_n,
                  stop_order[0]);
    run_bounded("second run", loop, 5000);
    ck_assert_msg(stop_n == 2 && stop_order[1] == 2,
                  "second run: %d callbacks, second %d; want 2, 2", stop_n,
                  stop_order[1]);
    loop_destroy(&loop);
}
END_TEST

START_TEST(test_stop_from_fd)
{
    loop_t *loop = loop_new();
    struct fdctx c = {.stop = true};
    int p[2];

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "z", 1), 1);
    ck_assert_int_eq(loop_fd_add(loop, p[0], LOOP_READ, on_readable, &c), 0);
    run_bounded("stop from fd", loop, 5000);
    ck_assert_msg(c.calls == 1, "stop from fd: got %d calls, want 1",
                  c.calls);
    loop_fd_del(loop, p[0]);
    close(p[0]);
    close(p[1]);
    loop_destroy(&loop);
}
END_TEST

/* Flushers. */

struct flush_count {
    int calls;
    int ret;          /* what the flusher returns */
    bool seen[16];    /* ticks the flusher was called at */
    int *tick;        /* the timer's tick count, when one drives the turns */
    struct zctx *z;   /* a receiver whose count the first call records */
    int got_at_first; /* its count at the first call, or -1 */
};

static int
on_flush_count(loop_t *loop, void *arg)
{
    struct flush_count *f = arg;

    (void)loop;
    if (f->calls++ == 0 && f->z != NULL)
        f->got_at_first = f->z->got;
    if (f->tick != NULL && *f->tick >= 0 && *f->tick < (int)NROWS(f->seen))
        f->seen[*f->tick] = true;
    return f->ret;
}

struct ticker {
    int tick;
    int stop_at; /* loop_stop() at this tick */
    int64_t ms;
};

static void
on_tick(loop_t *loop, void *arg)
{
    struct ticker *t = arg;

    if (++t->tick == t->stop_at)
        loop_stop(loop);
    else
        loop_timer_add(loop, t->ms, on_tick, t);
}

/* A flusher runs once in every turn, after the turn's timers and after the
 * ZeroMQ sockets were read until empty, before the loop waits. */
START_TEST(test_flush_each_turn)
{
    loop_t *loop = loop_new();
    struct zpair z;
    struct zctx c = {.loop = loop, .want = -1};
    struct ticker t = {.stop_at = 7, .ms = 5};
    struct flush_count f = {.tick = &t.tick, .z = &c, .got_at_first = -1};

    zpair_open(&z, "inproc://loop-test-flush-turn");
    ck_assert_int_eq(loop_zmq_add(loop, z.rx, on_zmq_rx, &c), 0);
    for (int i = 0; i < 50; i++)
        zsend(z.tx, c.sent++);
    ck_assert_int_eq(loop_flush_add(loop, on_flush_count, &f), 0);
    loop_timer_add(loop, t.ms, on_tick, &t);
    run_bounded("flush each turn", loop, 5000);
    ck_assert_msg(f.got_at_first == 50, "flush each turn: the first flush "
                  "saw %d of the 50 waiting messages read", f.got_at_first);
    for (int i = 0; i < t.stop_at; i++)
        ck_assert_msg(f.seen[i], "flush each turn: no flush after tick %d",
                      i);
    /* One per turn: seven turns and a few spurious wake-ups, not a spin. */
    ck_assert_msg(f.calls >= t.stop_at && f.calls <= 4 * t.stop_at,
                  "flush each turn: %d calls for %d ticks", f.calls,
                  t.stop_at);
    /* Removed, it is not called again. */
    loop_flush_del(loop, on_flush_count, &f);
    f.calls = 0;
    t.tick = 0;
    t.stop_at = 3;
    loop_timer_add(loop, t.ms, on_tick, &t);
    run_bounded("flush removed", loop, 5000);
    ck_assert_msg(f.calls == 0, "flush removed: called %d times", f.calls);
    loop_zmq_del(loop, z.rx);
    zpair_close(&z);
    loop_destroy(&loop);
}
END_TEST

/* A flusher sends to a socket the same loop watches, then takes that
 * socket's input signal the way a send or a ZMQ_EVENTS on it does: ZMQ_FD
 * goes quiet with a message waiting. Only the read the loop makes after a
 * flusher returned 1 finds it; returning 0 (the control) leaves it unread
 * until something else wakes the loop. */
struct swallow {
    void *tx, *rx;
    int calls;
    int ret;
};

static int
on_flush_swallow(loop_t *loop, void *arg)
{
    struct swallow *s = arg;
    int events = 0;
    size_t elen = sizeof(events);

    (void)loop;
    if (s->calls++ > 0)
        return 0;
    zsend(s->tx, 0);
    ck_assert_int_eq(zmq_getsockopt(s->rx, ZMQ_EVENTS, &events, &elen), 0);
    ck_assert_msg(events & ZMQ_POLLIN, "swallow: the message is not there");
    return s->ret;
}

static const struct swallow_row {
    const char *label;
    int ret;
} swallow_rows[] = {
    {"flusher says it sent", 1},
    {"flusher says it did not (control)", 0},
};

START_TEST(test_flush_swallowed_signal)
{
    const struct swallow_row *r = &swallow_rows[_i];
    loop_t *loop = loop_new();
    struct zpair z;
    struct zctx c = {.loop = loop, .want = 1};
    struct swallow s = {.ret = r->ret};
    char name[64];

    snprintf(name, sizeof(name), "inproc://loop-test-swallow-%d", _i);
    zpair_open(&z, name);
    s.tx = z.tx;
    s.rx = z.rx;
    ck_assert_int_eq(loop_zmq_add(loop, z.rx, on_zmq_rx, &c), 0);
    ck_assert_int_eq(loop_flush_add(loop, on_flush_swallow, &s), 0);
    if (r->ret == 1) {
        run_bounded(r->label, loop, 3000); /* under Check's 4 s default */
        ck_assert_msg(c.got == 1, "%s: got %d messages, want 1", r->label,
                      c.got);
    } else {
        /* The loop sleeps with the message unread until this timer. */
        loop_timer_add(loop, 200, on_stop, NULL);
        run_bounded(r->label, loop, 3000);
        ck_assert_msg(c.got == 0, "%s: the message was read (%d): the "
                      "swallowed signal this test relies on did not "
                      "happen", r->label, c.got);
    }
    loop_flush_del(loop, on_flush_swallow, &s);
    loop_zmq_del(loop, z.rx);
    zpair_close(&z);
    loop_destroy(&loop);
}
END_TEST

/* Ping-pong between the two ends of one PAIR, both watched by one loop,
 * every message sent from a flusher: what the handlers receive is answered
 * at the next flush, from both sockets in one call. A lost wake-up stalls
 * the exchange and the watchdog fails the test. */
#define PP_TOKENS 4
#define PP_WANT 4000

struct pingpong {
    loop_t *loop;
    void *sock[2];
    int pending[2]; /* replies to send from each end */
    int got;
    int flushes_sent; /* flush calls that sent */
};

struct pp_end {
    struct pingpong *pp;
    int i;
};

static int
on_pp_recv(loop_t *loop, void *sock, void *arg)
{
    struct pp_end *e = arg;
    int seq;

    if (zmq_recv(sock, &seq, sizeof(seq), ZMQ_DONTWAIT) != sizeof(seq))
        return 0;
    e->pp->pending[e->i]++;
    if (++e->pp->got == PP_WANT)
        loop_stop(loop);
    return 1;
}

static int
on_pp_flush(loop_t *loop, void *arg)
{
    struct pingpong *pp = arg;
    bool sent = false;

    (void)loop;
    for (int i = 1; i >= 0; i--)
        for (; pp->pending[i] > 0; pp->pending[i]--) {
            zsend(pp->sock[i], pp->got);
            sent = true;
        }
    pp->flushes_sent += sent;
    return sent;
}

START_TEST(test_flush_pingpong)
{
    loop_t *loop = loop_new();
    struct zpair z;
    struct pingpong pp = {.loop = loop};
    struct pp_end ends[2] = {{&pp, 0}, {&pp, 1}};

    zpair_open(&z, "inproc://loop-test-flush-pingpong");
    pp.sock[0] = z.tx;
    pp.sock[1] = z.rx;
    ck_assert_int_eq(loop_zmq_add(loop, z.tx, on_pp_recv, &ends[0]), 0);
    ck_assert_int_eq(loop_zmq_add(loop, z.rx, on_pp_recv, &ends[1]), 0);
    ck_assert_int_eq(loop_flush_add(loop, on_pp_flush, &pp), 0);
    pp.pending[0] = PP_TOKENS / 2; /* tokens start from both ends */
    pp.pending[1] = PP_TOKENS - PP_TOKENS / 2;
    run_bounded("flush ping-pong", loop, 20000);
    ck_assert_msg(pp.got == PP_WANT, "flush ping-pong: %d messages, want %d",
                  pp.got, PP_WANT);
    ck_assert_msg(pp.flushes_sent > 0 && pp.flushes_sent <= PP_WANT,
                  "flush ping-pong: %d flushes sent", pp.flushes_sent);
    loop_zmq_del(loop, z.tx);
    loop_zmq_del(loop, z.rx);
    zpair_close(&z);
    loop_destroy(&loop);
}
END_TEST

/* Flushers removing themselves and others, and adding new ones (which
 * grows the list while it is walked), from inside a flush. The ASan build
 * checks the memory; the counts check who is called. */
struct flush_del {
    loop_t *loop;
    struct flush_count *a, *c, *d, *e;
    int calls;
};

static int on_flush_b(loop_t *loop, void *arg);

static int
on_flush_d(loop_t *loop, void *arg)
{
    struct flush_del *x = arg;

    /* On its second call, D removes A, which was already called in this
     * pass. */
    if (++x->d->calls == 2) {
        loop_flush_del(loop, on_flush_count, x->a);
        x->a->ret = x->a->calls; /* A's count when removed */
    }
    return 0;
}

static int
on_flush_b(loop_t *loop, void *arg)
{
    struct flush_del *x = arg;

    x->calls++;
    loop_flush_del(loop, on_flush_b, x);        /* itself */
    loop_flush_del(loop, on_flush_count, x->c); /* C, after it in the list */
    loop_flush_del(loop, on_flush_b, x);        /* again: no-op */
    loop_flush_del(loop, on_flush_count, NULL); /* never added: no-op */
    ck_assert_int_eq(loop_flush_add(loop, on_flush_d, x), 0);
    ck_assert_int_eq(loop_flush_add(loop, on_flush_count, x->e), 0);
    return 0;
}

START_TEST(test_flush_del_in_callback)
{
    loop_t *loop = loop_new();
    struct flush_count a = {0}, c = {0}, d = {0}, e = {0};
    struct flush_del x = {.loop = loop, .a = &a, .c = &c, .d = &d, .e = &e};
    struct ticker t = {.stop_at = 6, .ms = 3};

    ck_assert_int_eq(loop_flush_add(loop, on_flush_count, &a), 0);
    ck_assert_int_eq(loop_flush_add(loop, on_flush_b, &x), 0);
    ck_assert_int_eq(loop_flush_add(loop, on_flush_count, &c), 0);
    loop_timer_add(loop, t.ms, on_tick, &t);
    run_bounded("flush del", loop, 5000);
    ck_assert_msg(x.calls == 1, "flush del: B called %d times, want 1",
                  x.calls);
    ck_assert_msg(c.calls == 0, "flush del: C, removed before its turn, "
                  "called %d times", c.calls);
    ck_assert_msg(a.calls >= 2 && a.calls == a.ret,
                  "flush del: A called %d times, %d when removed", a.calls,
                  a.ret);
    ck_assert_msg(d.calls >= t.stop_at - 1 && e.calls >= t.stop_at - 1,
                  "flush del: added ones called %d and %d times", d.calls,
                  e.calls);
    /* Removed outside a flush, D stops; E goes on. */
    loop_flush_del(loop, on_flush_d, &x);
    d.calls = 0;
    e.calls = 0;
    t.tick = 0;
    t.stop_at = 3;
    loop_timer_add(loop, t.ms, on_tick, &t);
    run_bounded("flush del, again", loop, 5000);
    ck_assert_msg(d.calls == 0 && e.calls >= 2 && x.calls == 1 &&
                      c.calls == 0,
                  "flush del, again: D %d, E %d, B %d, C %d calls", d.calls,
                  e.calls, x.calls, c.calls);
    loop_destroy(&loop); /* with E still added: freed with the loop */
}
END_TEST

/* A flusher that always says it sent keeps the loop from sleeping, but
 * neither timers nor ZeroMQ input wait on it. */
static void
on_send_one(loop_t *loop, void *arg)
{
    (void)loop;
    zsend(arg, 0);
}

START_TEST(test_flush_busy_no_starve)
{
    loop_t *loop = loop_new();
    struct zpair z;
    struct zctx c = {.loop = loop, .want = 1};
    struct flush_count f = {.ret = 1};
    int64_t start = clock_mono_ms(), took;

    zpair_open(&z, "inproc://loop-test-flush-busy");
    ck_assert_int_eq(loop_zmq_add(loop, z.rx, on_zmq_rx, &c), 0);
    ck_assert_int_eq(loop_flush_add(loop, on_flush_count, &f), 0);
    loop_timer_add(loop, 30, on_send_one, z.tx);
    run_bounded("busy flusher", loop, 5000);
    took = clock_mono_ms() - start;
    ck_assert_msg(c.got == 1, "busy flusher: got %d messages", c.got);
    ck_assert_msg(took >= 25 && took < 2000, "busy flusher: the timer of "
                  "30 ms fired after %lld ms", (long long)took);
    /* It spun, calling the flusher many times over, several per turn. */
    ck_assert_msg(f.calls > 10, "busy flusher: %d calls", f.calls);
    loop_flush_del(loop, on_flush_count, &f);
    loop_zmq_del(loop, z.rx);
    zpair_close(&z);
    loop_destroy(&loop);
}
END_TEST

static Suite *
loop_suite(void)
{
    Suite *s = suite_create("loop");
    TCase *tc;

    tc = tcase_create("timers");
    tcase_add_loop_test(tc, test_timer_order, 0, NROWS(order_rows));
    tcase_add_test(tc, test_timer_cancel);
    tcase_add_test(tc, test_timer_cancel_many);
    tcase_add_test(tc, test_timer_from_callback);
    tcase_add_test(tc, test_now_advances);
    tcase_add_test(tc, test_destroy_with_timers);
    suite_add_tcase(s, tc);

    tc = tcase_create("fds");
    tcase_add_test(tc, test_fd_read);
    tcase_add_test(tc, test_fd_hangup);
    tcase_add_test(tc, test_fd_write_and_mod);
    tcase_add_test(tc, test_fd_del);
    tcase_add_test(tc, test_fd_del_in_callback);
    suite_add_tcase(s, tc);

    tc = tcase_create("zmq");
    tcase_add_loop_test(tc, test_zmq_no_loss, 0, NROWS(zmq_rows));
    tcase_add_test(tc, test_zmq_del);
    suite_add_tcase(s, tc);

    tc = tcase_create("flush");
    tcase_add_test(tc, test_flush_each_turn);
    tcase_add_loop_test(tc, test_flush_swallowed_signal, 0,
                        NROWS(swallow_rows));
    tcase_add_test(tc, test_flush_pingpong);
    tcase_add_test(tc, test_flush_del_in_callback);
    tcase_add_test(tc, test_flush_busy_no_starve);
    suite_add_tcase(s, tc);

    tc = tcase_create("signals");
    tcase_add_test(tc, test_signal);
    tcase_add_test(tc, test_two_signals);
    suite_add_tcase(s, tc);

    tc = tcase_create("stop");
    tcase_add_test(tc, test_stop);
    tcase_add_test(tc, test_stop_from_fd);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(loop_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
