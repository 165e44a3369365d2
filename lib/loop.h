/*
 * loop.h - the event loop every Samotop process runs: epoll, timers,
 * signals and ZeroMQ sockets in one thread.
 *
 * A process holds thousands of client sockets, a few ZeroMQ sockets and some
 * timers; all of them are watched here so that nothing blocks. ZeroMQ
 * sockets are watched through ZMQ_FD, which is edge-like: before every wait
 * the loop reads each socket until it is empty, so a message is never left
 * unread.
 * The loop owns its watcher records; callers own their fds and sockets and
 * must remove a watcher before closing what it watches.
 */
#ifndef SAMOTOP_LOOP_H
#define SAMOTOP_LOOP_H

#include <stdint.h>

typedef struct loop loop_t;
typedef struct loop_timer loop_timer_t;

enum { LOOP_READ = 1, LOOP_WRITE = 2, LOOP_ERROR = 4 };

/* Called with the LOOP_* events that are ready on fd. */
typedef void loop_fd_fn(loop_t *loop, int fd, int events, void *arg);
/* Called when a ZeroMQ socket may have input: reads at most one message
 * (without blocking) and returns 1, or 0 when none was waiting. The loop
 * calls it again until it returns 0 (a batch at most), and reads a socket
 * again, until empty, whenever another socket's callback handled a message
 * since: a callback that sends on one socket can swallow the input signal
 * of another, so only reading until empty is safe before the loop sleeps. */
typedef int loop_zmq_fn(loop_t *loop, void *zsocket, void *arg);
typedef void loop_timer_fn(loop_t *loop, void *arg);
typedef void loop_signal_fn(loop_t *loop, int signo, void *arg);

/* A new loop, or NULL when epoll cannot be had. */
loop_t *loop_new(void);
void loop_destroy(loop_t **loop_p);

/* Watches fd for LOOP_READ and/or LOOP_WRITE. Returns 0 or ERR_SYS. */
int loop_fd_add(loop_t *loop, int fd, int events, loop_fd_fn *fn, void *arg);
int loop_fd_mod(loop_t *loop, int fd, int events);
void loop_fd_del(loop_t *loop, int fd);

/* Watches a libzmq socket (a raw void *, e.g. zsock_resolve()'s) for
 * incoming messages. Returns 0 or ERR_SYS. */
int loop_zmq_add(loop_t *loop, void *zsocket, loop_zmq_fn *fn, void *arg);
void loop_zmq_del(loop_t *loop, void *zsocket);

/* A one-shot timer after ms milliseconds. The handle is valid until the
 * timer fires or is cancelled; cancelling NULL is a no-op. */
loop_timer_t *loop_timer_add(loop_t *loop, int64_t ms, loop_timer_fn *fn,
                             void *arg);
void loop_timer_cancel(loop_t *loop, loop_timer_t **timer_p);

/* Handles signo through a signalfd; the signal is blocked for the process.
 * Returns 0 or ERR_SYS. */
int loop_signal_add(loop_t *loop, int signo, loop_signal_fn *fn, void *arg);

/* Called when the loop is about to wait, after every ZeroMQ socket has
 * been read until empty: a caller sends here what it gathered during the
 * turn (the bus sends a turn's requests, or replies, as one batch).
 * Returns 1 when it sent on a ZeroMQ socket, else 0; the loop then reads
 * the sockets again before it waits, since a send can take a socket's
 * input signal (see loop_zmq_fn). */
typedef int loop_flush_fn(loop_t *loop, void *arg);

/* Adds fn(arg) to the calls made before each wait; removes it again. Safe
 * from inside a callback, a flush one included. Returns 0. */
int loop_flush_add(loop_t *loop, loop_flush_fn *fn, void *arg);
void loop_flush_del(loop_t *loop, loop_flush_fn *fn, void *arg);

/* Runs until loop_stop(). Returns 0, or ERR_SYS when epoll fails. */
int loop_run(loop_t *loop);

/* Makes loop_run() return after the current callback. */
void loop_stop(loop_t *loop);

/* The monotonic time of this iteration, in milliseconds. */
int64_t loop_now_ms(const loop_t *loop);

#endif
