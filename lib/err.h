/*
 * err.h - the project's error codes.
 *
 * Functions return 0 on success or a negative ERR_* code. The codes form one
 * X-macro list so that err_str() and err_name() can never drift from the enum.
 * The strings returned are static and never freed.
 */
#ifndef SAMOTOP_ERR_H
#define SAMOTOP_ERR_H

#define ERR_LIST(X)                                                          \
    X(OK, "no error")                                                        \
    X(NOMEM, "out of memory")                                                \
    X(INVAL, "invalid argument")                                             \
    X(SYS, "system call failed")                                             \
    X(CONFIG, "bad configuration")                                           \
    X(TOO_BIG, "input over the size limit")                                  \
    X(TRUNCATED, "input truncated")                                          \
    X(MALFORMED, "input is not valid msgpack")                               \
    X(TRAILING, "trailing bytes after the envelope")                         \
    X(NOT_MAP, "envelope is not a map")                                      \
    X(VERSION, "unsupported envelope version")                               \
    X(MISSING, "required field missing")                                     \
    X(TYPE, "field has the wrong type")                                      \
    X(DEPTH, "value nested too deep")                                        \
    X(KEY, "map key is not a string")                                        \
    X(UNSUPPORTED, "unsupported msgpack type")                               \
    X(PROTO, "bus protocol error")                                           \
    X(TIMEOUT, "deadline passed")                                            \
    X(NOWORKER, "no worker for the service")                                 \
    X(WORKER_LOST, "worker died with the request")                           \
    X(CLOSED, "closed")                                                      \
    X(NOTFOUND, "not found")                                                 \
    X(EXISTS, "already exists")                                              \
    X(REDIS, "redis error")

enum err_code {
#define X(name, text) ERR_##name##_POS,
    ERR_LIST(X)
#undef X
    ERR__COUNT
};

/* The negative constants that functions return: ERR_OK is 0. */
enum {
#define X(name, text) ERR_##name = -ERR_##name##_POS,
    ERR_LIST(X)
#undef X
};

/* A sentence describing err (0 or a negative ERR_* code); never NULL. */
const char *err_str(int err);

/* The short upper-case name of err, e.g. "TIMEOUT"; never NULL. */
const char *err_name(int err);

/* The code whose name is name, or ERR_INVAL when there is none. */
int err_from_name(const char *name);

#endif
