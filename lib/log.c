#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"

static char log_who[96] = "samotop";
static enum log_level log_min = LL_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "err",
                                          "fatal"};

void
log_init(const char *actor, const char *instance)
{
    if (instance && *instance)
        snprintf(log_who, sizeof(log_who), "%s/%s", actor, instance);
    else
        snprintf(log_who, sizeof(log_who), "%s", actor);
}

const char *
log_actor(void)
{
    return log_who;
}

void
log_set_level(enum log_level level)
{
    log_min = level;
}

int
log_level_parse(const char *s)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    return -1;
}

void
log_eventv(enum log_level level, const char *trace, const char *event,
           const char *fmt, va_list ap)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n;
    int r;

    if (level < log_min)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n,
                 ".%06ldZ level=%s actor=%s trace=%s event=%s",
                 (long)tv.tv_usec, level_names[level], log_who,
                 trace && *trace ? trace : "-", event);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
    if (fmt && *fmt && n < sizeof(line) - 2) {
        line[n++] = ' ';
        r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        if (r > 0)
            n += (size_t)r < sizeof(line) - n ? (size_t)r
                                               : sizeof(line) - n - 1;
    }
    /* One write per line so that lines of several processes sharing a
     * stderr do not interleave. */
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
    fflush(stderr);
}

void
log_event(enum log_level level, const char *trace, const char *event,
          const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_eventv(level, trace, event, fmt, ap);
    va_end(ap);
}

void
log_fatal(const char *trace, const char *event, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_eventv(LL_FATAL, trace, event, fmt, ap);
    va_end(ap);
    exit(1);
}

const char *
log_q(const char *s)
{
    static char bufs[8][512];
    static unsigned next;
    char *b = bufs[next++ % 8];
    size_t n = 0;
    int plain = *s != '\0';

    for (const char *p = s; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
            plain = 0;
    if (plain && strlen(s) < sizeof(bufs[0]))
        return s;
    b[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s;
         *p && n < sizeof(bufs[0]) - 6; p++) {
        if (*p == '"' || *p == '\\') {
            b[n++] = '\\';
            b[n++] = (char)*p;
        } else if (*p < ' ' || *p == 0x7f) {
            n += (size_t)snprintf(b + n, 5, "\\x%02x", *p);
        } else {
            b[n++] = (char)*p;
        }
    }
    b[n++] = '"';
    b[n] = '\0';
    return b;
}
