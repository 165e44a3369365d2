/*
 * testlib.h - process helpers for tests that run the real executables.
 *
 * Children are started with PR_SET_PDEATHSIG, so a test that fails half way
 * (Check forks each test) never leaves a broker or an actor behind.
 */
#ifndef SAMOTOP_TESTLIB_H
#define SAMOTOP_TESTLIB_H

#include <stdint.h>
#include <sys/types.h>

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

#endif
