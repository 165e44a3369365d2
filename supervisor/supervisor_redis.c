/*
 * The redis-server that samotopd runs for the local profile: its
 * configuration file and the readiness probe.
 *
 * XXX: STYLE.md keeps hiredis in bus/store.c. The supervisor only needs a
 * one-shot PING before it starts the actors, and linking the whole store
 * for that would drag the bus into the supervisor, so it speaks to Redis
 * here directly and nowhere else.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "lib/buf.h"
#include "lib/err.h"

#include "supervisor.h"

/* Appends s as one redis.conf argument: double-quoted, so that a path or a
 * password with spaces, quotes or '#' reads back as it was. */
static void
conf_quote(buf_t *b, const char *s)
{
    buf_addc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf_addc(b, '\\');
            buf_addc(b, (char)*p);
        } else if (*p < ' ' || *p == 0x7f) {
            buf_printf(b, "\\x%02x", *p);
        } else {
            buf_addc(b, (char)*p);
        }
    }
    buf_addc(b, '"');
}

int
supervisor_redis_write_conf(const config_t *cfg, const char *redis_dir,
                            const char *path, char *why, size_t whylen)
{
    const char *password = config_str(cfg, "redis.password");
    buf_t b = BUF_INIT;
    char tmp[4096], logfile[4096];
    int fd = -1, rc = ERR_SYS;
    size_t off = 0;

    snprintf(logfile, sizeof(logfile), "%s/redis.log", redis_dir);
    buf_adds(&b, "# Written by samotopd at every start; edits are lost.\n");
    buf_adds(&b, "bind ");
    conf_quote(&b, config_str(cfg, "redis.host"));
    buf_printf(&b, "\nport %ld\n", config_int(cfg, "redis.port"));
    buf_adds(&b, "dir ");
    conf_quote(&b, redis_dir);
    /* Redis's own log format would break up the key=value lines that
     * samotopd and the actors write to the terminal. */
    buf_adds(&b, "\nlogfile ");
    conf_quote(&b, logfile);
    /* A 250 to DATA may rest on a Redis write (DESIGN.md), so every write
     * is on disk before Redis answers it. */
    buf_adds(&b, "\nappendonly yes\n"
                 "appendfsync always\n"
                 "daemonize no\n"
                 "save \"\"\n"
                 "protected-mode yes\n");
    if (*password) {
        buf_adds(&b, "requirepass ");
        conf_quote(&b, password);
        buf_addc(&b, '\n');
    }

    /* Written beside the target and renamed, so that a redis-server being
     * restarted never reads half a file. */
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, whylen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    while (off < b.len) {
        ssize_t n = write(fd, b.data + off, b.len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, whylen, "%s: %s", tmp, strerror(errno));
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        snprintf(why, whylen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(why, whylen, "%s: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        unlink(tmp);
    buf_free(&b);
    return rc;
}

/* Sends one command and checks that the reply is a status or string equal
 * to want. */
static int
ask(redisContext *c, const char *want, char *why, size_t whylen,
    const char *fmt, const char *arg)
{
    redisReply *r = arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt);
    int rc = ERR_REDIS;

    if (r == NULL) {
        snprintf(why, whylen, "%s", c->errstr);
        return ERR_REDIS;
    }
    if ((r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING) &&
        strcmp(r->str, want) == 0)
        rc = 0;
    else if (r->type == REDIS_REPLY_ERROR)
        snprintf(why, whylen, "%s", r->str);
    else
        snprintf(why, whylen, "unexpected reply type %d", r->type);
    freeReplyObject(r);
    return rc;
}

int
supervisor_redis_ping(const config_t *cfg, long timeout_ms, char *why,
                      size_t whylen)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    const char *password = config_str(cfg, "redis.password");
    redisContext *c;
    int rc;

    c = redisConnectWithTimeout(config_str(cfg, "redis.host"),
                                (int)config_int(cfg, "redis.port"), tv);
    if (c == NULL) {
        snprintf(why, whylen, "cannot allocate a redis context");
        return ERR_REDIS;
    }
    if (c->err) {
        snprintf(why, whylen, "%s", c->errstr);
        redisFree(c);
        return ERR_REDIS;
    }
    redisSetTimeout(c, tv);
    rc = 0;
    if (*password)
        rc = ask(c, "OK", why, whylen, "AUTH %s", password);
    if (rc == 0)
        rc = ask(c, "PONG", why, whylen, "PING", NULL);
    redisFree(c);
    return rc;
}
