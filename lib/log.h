/*
 * log.h - one line per event, key=value, to stderr.
 *
 * Every line reads
 *   ts=2026-11-29T11:40:54.123456Z level=info actor=queue/3f2a trace=T event=E k=v ...
 * The actor name is set once with log_init(); the trace id is the session id
 * of the traffic the event belongs to ("-" when there is none). Values that
 * may hold spaces or quotes go through log_q(), which returns a quoted copy
 * in a rotating static buffer (valid until eight more log_q() calls).
 * Secrets and message bodies are never passed to these functions.
 */
#ifndef SAMOTOP_LOG_H
#define SAMOTOP_LOG_H

#include <stdarg.h>

enum log_level { LL_DEBUG, LL_INFO, LL_WARN, LL_ERR, LL_FATAL };

/* Names this process in every line, e.g. ("queue", "3f2a"). */
void log_init(const char *actor, const char *instance);

/* The "actor/instance" string set by log_init(); borrowed. */
const char *log_actor(void);

void log_set_level(enum log_level level);

/* Parses "debug", "info", "warn", "err" or "fatal"; -1 when it is none. */
int log_level_parse(const char *s);

void log_event(enum log_level level, const char *trace, const char *event,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void log_eventv(enum log_level level, const char *trace, const char *event,
                const char *fmt, va_list ap);

/* Logs at fatal level and exits with status 1: only for start-up and
 * environment failures in a main(), never inside a library function. */
void log_fatal(const char *trace, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

/* s quoted for a log value when it needs it (spaces, quotes, controls). */
const char *log_q(const char *s);

#define log_debug(trace, event, ...) log_event(LL_DEBUG, trace, event, __VA_ARGS__)
#define log_info(trace, event, ...) log_event(LL_INFO, trace, event, __VA_ARGS__)
#define log_warn(trace, event, ...) log_event(LL_WARN, trace, event, __VA_ARGS__)
#define log_err(trace, event, ...) log_event(LL_ERR, trace, event, __VA_ARGS__)

#endif
