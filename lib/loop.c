#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <zmq.h>

#include "clock.h"
#include "err.h"
#include "heap.h"
#include "loop.h"
#include "xalloc.h"

/* How many messages one ZeroMQ socket may deliver before the loop looks at
 * its other sources again: keeps one busy socket from starving the rest. */
#define ZMQ_BATCH 64
#define MAX_EVENTS 256

enum slot_kind { SLOT_FREE, SLOT_FD, SLOT_ZMQ, SLOT_SIGNAL };

struct slot {
    enum slot_kind kind;
    uint32_t gen;
    int events;
    loop_fd_fn *fn;
    loop_zmq_fn *zfn;
    void *zsock;
    void *arg;
    bool dirty; /* ZeroMQ: may have input run_zmq() has not read yet */
};

struct loop_timer {
    struct heap_node node; /* key: when it is due, monotonic ms */
    loop_timer_fn *fn;
    void *arg;
};

struct sigh {
    int signo;
    loop_signal_fn *fn;
    void *arg;
};

struct flusher {
    loop_flush_fn *fn; /* NULL once removed, until the list is compacted */
    void *arg;
};

struct loop {
    int ep;
    bool stop;
    int64_t now;
    struct slot *slots;
    int nslots;
    int *zfds; /* fds of the ZeroMQ watchers, for the pre-wait check */
    int nzfds;
    struct heap timers; /* of loop_timer_t, by (due, order added) */
    uint64_t seq;
    int sigfd;
    sigset_t sigmask;
    struct sigh sigs[16];
    int nsigs;
    struct flusher *flushers;
    int nflushers, capflushers;
    bool flushing; /* inside run_flush(): removal only marks */
};

loop_t *
loop_new(void)
{
    loop_t *loop = xcalloc(1, sizeof(*loop));

    loop->ep = epoll_create1(EPOLL_CLOEXEC);
    if (loop->ep < 0) {
        free(loop);
        return NULL;
    }
    loop->sigfd = -1;
    sigemptyset(&loop->sigmask);
    loop->now = clock_mono_ms();
    return loop;
}

void
loop_destroy(loop_t **loop_p)
{
    loop_t *loop = *loop_p;

    if (loop == NULL)
        return;
    close(loop->ep);
    if (loop->sigfd >= 0)
        close(loop->sigfd);
    for (size_t i = 0; i < loop->timers.n; i++)
        free(heap_entry(loop->timers.v[i], loop_timer_t, node));
    heap_free(&loop->timers);
    free(loop->slots);
    free(loop->zfds);
    free(loop->flushers);
    free(loop);
    *loop_p = NULL;
}

int64_t
loop_now_ms(const loop_t *loop)
{
    return loop->now;
}

static struct slot *
slot_get(loop_t *loop, int fd)
{
    if (fd >= loop->nslots) {
        int n = loop->nslots ? loop->nslots : 64;

        while (n <= fd)
            n *= 2;
        loop->slots = xrealloc(loop->slots, sizeof(struct slot) * (size_t)n);
        memset(loop->slots + loop->nslots, 0,
               sizeof(struct slot) * (size_t)(n - loop->nslots));
        loop->nslots = n;
    }
    return &loop->slots[fd];
}

static uint32_t
to_epoll(int events)
{
    return (events & LOOP_READ ? EPOLLIN : 0) |
           (events & LOOP_WRITE ? EPOLLOUT : 0);
}

static int
slot_add(loop_t *loop, int fd, enum slot_kind kind, int events)
{
    struct slot *s = slot_get(loop, fd);
    struct epoll_event ev = {0};

    if (s->kind != SLOT_FREE)
        return ERR_INVAL;
    s->gen++;
    ev.events = to_epoll(events);
    ev.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)s->gen << 32;
    if (epoll_ctl(loop->ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        return ERR_SYS;
    s->kind = kind;
    s->events = events;
    return 0;
}

int
loop_fd_add(loop_t *loop, int fd, int events, loop_fd_fn *fn, void *arg)
{
    int rc = slot_add(loop, fd, SLOT_FD, events);

    if (rc == 0) {
        loop->slots[fd].fn = fn;
        loop->slots[fd].arg = arg;
    }
    return rc;
}

int
loop_fd_mod(loop_t *loop, int fd, int events)
{
    struct slot *s;
    struct epoll_event ev = {0};

    if (fd < 0 || fd >= loop->nslots || loop->slots[fd].kind != SLOT_FD)
        return ERR_INVAL;
    s = &loop->slots[fd];
    if (s->events == events)
        return 0;
    ev.events = to_epoll(events);
    ev.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)s->gen << 32;
    if (epoll_ctl(loop->ep, EPOLL_CTL_MOD, fd, &ev) != 0)
        return ERR_SYS;
    s->events = events;
    return 0;
}

static void
slot_del(loop_t *loop, int fd)
{
    if (fd < 0 || fd >= loop->nslots || loop->slots[fd].kind == SLOT_FREE)
        return;
    epoll_ctl(loop->ep, EPOLL_CTL_DEL, fd, NULL);
    loop->slots[fd].kind = SLOT_FREE;
    loop->slots[fd].gen++;
}

void
loop_fd_del(loop_t *loop, int fd)
{
    slot_del(loop, fd);
}

int
loop_zmq_add(loop_t *loop, void *zsocket, loop_zmq_fn *fn, void *arg)
{
    int fd, rc;
    size_t len = sizeof(fd);

    if (zmq_getsockopt(zsocket, ZMQ_FD, &fd, &len) != 0)
        return ERR_SYS;
    rc = slot_add(loop, fd, SLOT_ZMQ, LOOP_READ);
    if (rc != 0)
        return rc;
    loop->slots[fd].zfn = fn;
    loop->slots[fd].zsock = zsocket;
    loop->slots[fd].arg = arg;
    loop->slots[fd].dirty = true;
    loop->zfds = xrealloc(loop->zfds, sizeof(int) * (size_t)(loop->nzfds + 1));
    loop->zfds[loop->nzfds++] = fd;
    return 0;
}

void
loop_zmq_del(loop_t *loop, void *zsocket)
{
    for (int i = 0; i < loop->nzfds; i++) {
        int fd = loop->zfds[i];

        if (loop->slots[fd].kind == SLOT_ZMQ &&
            loop->slots[fd].zsock == zsocket) {
            slot_del(loop, fd);
            loop->zfds[i] = loop->zfds[--loop->nzfds];
            return;
        }
    }
}

loop_timer_t *
loop_timer_add(loop_t *loop, int64_t ms, loop_timer_fn *fn, void *arg)
{
    loop_timer_t *t = xcalloc(1, sizeof(*t));

    /* Equal times fire in the order they were set. */
    t->node.key = clock_mono_ms() + (ms > 0 ? ms : 0);
    t->node.seq = loop->seq++;
    t->fn = fn;
    t->arg = arg;
    heap_push(&loop->timers, &t->node);
    return t;
}

void
loop_timer_cancel(loop_t *loop, loop_timer_t **timer_p)
{
    loop_timer_t *t = *timer_p;

    if (t == NULL)
        return;
    heap_remove(&loop->timers, &t->node);
    free(t);
    *timer_p = NULL;
}

static void
run_timers(loop_t *loop)
{
    struct heap_node *top;

    while ((top = heap_top(&loop->timers)) != NULL && !loop->stop) {
        loop_timer_t *t = heap_entry(top, loop_timer_t, node);

        if (top->key > loop->now)
            break;
        heap_remove(&loop->timers, top);
        t->fn(loop, t->arg);
        free(t);
    }
}

int
loop_signal_add(loop_t *loop, int signo, loop_signal_fn *fn, void *arg)
{
    int fd;

    if (loop->nsigs == (int)(sizeof(loop->sigs) / sizeof(loop->sigs[0])))
        return ERR_INVAL;
    sigaddset(&loop->sigmask, signo);
    if (sigprocmask(SIG_BLOCK, &loop->sigmask, NULL) != 0)
        return ERR_SYS;
    fd = signalfd(loop->sigfd, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return ERR_SYS;
    if (loop->sigfd < 0) {
        loop->sigfd = fd;
        if (slot_add(loop, fd, SLOT_SIGNAL, LOOP_READ) != 0)
            return ERR_SYS;
    }
    loop->sigs[loop->nsigs++] = (struct sigh){signo, fn, arg};
    return 0;
}

static void
run_signals(loop_t *loop)
{
    struct signalfd_siginfo si;

    while (read(loop->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        for (int i = 0; i < loop->nsigs; i++)
            if (loop->sigs[i].signo == (int)si.ssi_signo)
                loop->sigs[i].fn(loop, (int)si.ssi_signo, loop->sigs[i].arg);
}

/* Reads every ZeroMQ socket until empty, ZMQ_BATCH messages at a time per
 * socket, and returns true when input may be left after ZMQ_PASSES passes
 * (the wait then does not block).
 *
 * Why not just wait on ZMQ_FD after one read each: a callback that sends on
 * socket A makes libzmq process A's pending commands, which consumes A's
 * ZMQ_FD signal (edge) even while A has input, so epoll would not wake for
 * it. A socket is therefore read again until empty whenever some callback
 * may have sent on it since it last returned empty: it is "dirty". Every
 * socket starts each call dirty (timers and fd handlers, run outside this
 * function, may have sent on any); reading one until empty cleans it, and
 * each callback that handled a message dirties every other socket. A
 * socket's own sends need no re-read: the batch reads it again after each
 * callback, so its last, empty read came after them. One socket alone (a
 * client, a worker) thus costs one empty read per wake-up, not two. */
#define ZMQ_PASSES 8

static bool
run_zmq(loop_t *loop)
{
    bool left = true;

    for (int i = 0; i < loop->nzfds; i++)
        loop->slots[loop->zfds[i]].dirty = true;
    for (int pass = 0; pass < ZMQ_PASSES && left && !loop->stop; pass++) {
        for (int i = 0; i < loop->nzfds && !loop->stop; i++) {
            int fd = loop->zfds[i];
            uint32_t gen = loop->slots[fd].gen;
            int n = 0;

            if (!loop->slots[fd].dirty)
                continue;
            loop->slots[fd].dirty = false;
            for (; n < ZMQ_BATCH; n++) {
                /* Looked up again: a callback may grow the slot table. */
                struct slot *s = &loop->slots[fd];

                if (s->kind != SLOT_ZMQ || s->gen != gen || loop->stop)
                    break;
                if (s->zfn(loop, s->zsock, s->arg) <= 0)
                    break;
            }
            if (n == 0)
                continue;
            for (int j = 0; j < loop->nzfds; j++)
                if (loop->zfds[j] != fd)
                    loop->slots[loop->zfds[j]].dirty = true;
            if (n == ZMQ_BATCH)
                loop->slots[fd].dirty = true; /* not read until empty */
        }
        left = false;
        for (int i = 0; i < loop->nzfds; i++)
            left = left || loop->slots[loop->zfds[i]].dirty;
    }
    return left && !loop->stop;
}

int
loop_flush_add(loop_t *loop, loop_flush_fn *fn, void *arg)
{
    if (loop->nflushers == loop->capflushers) {
        loop->capflushers = loop->capflushers ? loop->capflushers * 2 : 4;
        loop->flushers = xrealloc(loop->flushers, sizeof(*loop->flushers) *
                                                      (size_t)loop->capflushers);
    }
    loop->flushers[loop->nflushers++] = (struct flusher){fn, arg};
    return 0;
}

/* Drops the removed entries; never while run_flush() walks the list. */
static void
flushers_compact(loop_t *loop)
{
    int k = 0;

    for (int i = 0; i < loop->nflushers; i++)
        if (loop->flushers[i].fn != NULL)
            loop->flushers[k++] = loop->flushers[i];
    loop->nflushers = k;
}

void
loop_flush_del(loop_t *loop, loop_flush_fn *fn, void *arg)
{
    for (int i = 0; i < loop->nflushers; i++)
        if (loop->flushers[i].fn == fn && loop->flushers[i].arg == arg) {
            loop->flushers[i].fn = NULL;
            break;
        }
    if (!loop->flushing)
        flushers_compact(loop);
}

/* Calls every flusher once; true when one of them sent something. */
static bool
run_flush(loop_t *loop)
{
    bool sent = false;

    loop->flushing = true;
    for (int i = 0; i < loop->nflushers && !loop->stop; i++) {
        struct flusher *f = &loop->flushers[i];

        if (f->fn != NULL && f->fn(loop, f->arg) > 0)
            sent = true;
    }
    loop->flushing = false;
    flushers_compact(loop);
    return sent;
}

/* Flushes sent, then the sockets read again brought more to send: how many
 * times over before the loop waits (without blocking) anyway. */
#define FLUSH_PASSES 4

int
loop_run(loop_t *loop)
{
    struct epoll_event evs[MAX_EVENTS];

    loop->stop = false;
    while (!loop->stop) {
        int timeout = -1, n;

        loop->now = clock_mono_ms();
        run_timers(loop);
        if (loop->stop)
            break;
        if (run_zmq(loop))
            timeout = 0;
        for (int k = 0; !loop->stop && run_flush(loop); k++) {
            if (k == FLUSH_PASSES) {
                timeout = 0; /* not read since that flush: come back */
                break;
            }
            if (run_zmq(loop))
                timeout = 0;
        }
        if (loop->stop)
            break;
        if (timeout != 0 && loop->timers.n > 0) {
            int64_t d = heap_top(&loop->timers)->key - clock_mono_ms();

            timeout = d <= 0 ? 0 : d > 60000 ? 60000 : (int)d;
        }
        n = epoll_wait(loop->ep, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return ERR_SYS;
        }
        loop->now = clock_mono_ms();
        for (int i = 0; i < n && !loop->stop; i++) {
            int fd = (int)(uint32_t)evs[i].data.u64;
            uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
            struct slot *s = &loop->slots[fd];
            int events = 0;

            if (s->gen != gen)
                continue; /* removed by an earlier callback */
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
                events |= LOOP_READ;
            if (evs[i].events & EPOLLOUT)
                events |= LOOP_WRITE;
            if (evs[i].events & EPOLLERR)
                events |= LOOP_ERROR | LOOP_READ;
            switch (s->kind) {
            case SLOT_FD:
                s->fn(loop, fd, events, s->arg);
                break;
            case SLOT_SIGNAL:
                run_signals(loop);
                break;
            case SLOT_ZMQ:
            case SLOT_FREE:
                break; /* ZeroMQ input is read in run_zmq() */
            }
        }
    }
    return 0;
}

void
loop_stop(loop_t *loop)
{
    loop->stop = true;
}
