/*
 * testlib.h - process helpers for tests that run the real executables.
 *
 * Children are started with PR_SET_PDEATHSIG, so a test that fails half way
 * (Check forks each test) never leaves a broker or an actor behind. The
 * rig helpers (testlib_rig.c) fail the running Check test, with a
 * message, when Redis is not there or refuses a command.
 */
#ifndef SAMOTOP_TESTLIB_H
#define SAMOTOP_TESTLIB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bus/bus.h"
#include "bus/store.h"

/* Path of a built executable: $SAMOTOP_BIN/name, in a static buffer. */
const char *test_bin(const char *name);

/* Starts argv[0] with the current environment plus env ("K=V" strings,
 * NULL-terminated; may be NULL). Output goes to stderr. Returns the pid. */
pid_t test_spawn(const char *const *argv, const char *const *env);

/* Sends sig, then waits up to ms for the exit; SIGKILL after that.
 * Returns the wait status. */
int test_stop(pid_t pid, int sig, int ms);

/* Milliseconds on the monotonic clock. */
int64_t test_now_ms(void);

/* Path of name found in $PATH (then /usr/sbin, /sbin), in a static
 * buffer; fails the test when there is none. */
const char *test_in_path(const char *name);

/* Starts a private redis-server on 127.0.0.1:port (nothing saved to disk)
 * and returns its pid once it answers PING. */
pid_t test_redis_start(int port);

/* A connection to the Redis on 127.0.0.1:port, retried for up to wait_ms;
 * the caller destroys it. */
store_t *test_redis_connect(int port, int wait_ms);

/* Runs one command given as strings ending with NULL; fails the test when
 * Redis refuses it. test_redis_cmd() returns the reply (the caller frees
 * it); test_redis_int() the integer reply, or a string reply read as a
 * number, 0 for any other. */
store_reply_t *test_redis_cmd(store_t *s, ...);
store_reply_t *test_redis_cmdv(store_t *s, va_list ap);
long long test_redis_int(store_t *s, ...);

/* Sends type (a ping, e.g. "mailbox.ping") over c, to the service to or
 * to any worker of its kind when to is NULL, until one answers or ms
 * pass. Returns the milliseconds it took, or -1. */
int64_t test_wait_ping(bus_client_t *c, const char *type, const char *to,
                       int ms);

/* Removes the folder dir and all below it, without following symlinks.
 * Returns nftw()'s result (0: all of it went); "" or NULL is nothing. */
int test_rm_tree(const char *dir);

/* Stops *pid with SIGTERM (SIGKILL after ms) and sets it to 0; fails the
 * test unless it exited with status 0 (a crash, or a leak under ASan).
 * Nothing when *pid is 0. */
void test_stop_clean(pid_t *pid, const char *name, int ms);

/* Moves this process (Check forks each test) into a mount namespace of its
 * own (a user namespace too when not root), so that what it mounts is
 * never seen by the host. Call it before opening what the test reads: an
 * fd opened earlier keeps resolving names in the old namespace. False when
 * not allowed here. */
bool test_private_mounts(void);

/* Mounts a tmpfs of size ("64k") on dir, or fails the test. */
void test_mount_tmpfs(const char *dir, const char *size);

#endif
