/*
 * testlib_rig.c - what the tests' rigs share (testlib.h): a private
 * redis-server and commands to it, a wait for an actor on the bus, a
 * clean stop, scratch folders and tmpfs mounts in a private namespace. Failures
 * end the running Check test with a message, as the tests' own asserts do.
 */
#include <errno.h>
#include <ftw.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "envelope.h"
#include "lib/config.h"
#include "testlib.h"

const char *
test_in_path(const char *name)
{
    static char path[4096];
    const char *p = getenv("PATH");
    char *copy, *save = NULL;

    /* sbin last: dnsmasq and postfix live there, and a test's PATH may
     * lack it. */
    if (asprintf(&copy, "%s:/usr/sbin:/sbin", p ? p : "/usr/bin:/bin") < 0)
        ck_abort_msg("out of memory");
    path[0] = '\0';
    for (char *d = strtok_r(copy, ":", &save); d;
         d = strtok_r(NULL, ":", &save)) {
        snprintf(path, sizeof(path), "%s/%s", d, name);
        if (access(path, X_OK) == 0)
            break;
        path[0] = '\0';
    }
    free(copy);
    ck_assert_msg(path[0] != '\0', "%s not found in PATH", name);
    return path;
}

store_t *
test_redis_connect(int port, int wait_ms)
{
    config_t *cfg = config_new();
    char why[256], p[16];
    store_t *s = NULL;
    int64_t until = test_now_ms() + wait_ms;

    snprintf(p, sizeof(p), "%d", port);
    ck_assert_int_eq(config_set(cfg, "redis.port", p, why, sizeof(why)), 0);
    while ((s = store_connect(cfg, 1000, why, sizeof(why))) == NULL &&
           test_now_ms() < until)
        usleep(20000);
    config_destroy(&cfg);
    ck_assert_msg(s != NULL, "redis on %d: %s", port, why);
    return s;
}

pid_t
test_redis_start(int port)
{
    char path[4096], p[16];
    const char *argv[] = {path,        "--port",     p,         "--bind",
                          "127.0.0.1", "--save",     "",        "--appendonly",
                          "no",        "--loglevel", "warning", NULL};
    pid_t pid;
    store_t *s;

    snprintf(path, sizeof(path), "%s", test_in_path("redis-server"));
    snprintf(p, sizeof(p), "%d", port);
    pid = test_spawn(argv, NULL);
    s = test_redis_connect(port, 5000);
    store_reply_free(&(store_reply_t *){test_redis_cmd(s, "PING", NULL)});
    store_destroy(&s);
    return pid;
}

store_reply_t *
test_redis_cmdv(store_t *s, va_list ap)
{
    const char *argv[64];
    int argc = 0;
    store_reply_t *r = NULL;
    char why[256];

    while (argc < 63 && (argv[argc] = va_arg(ap, const char *)) != NULL)
        argc++;
    ck_assert_msg(argc < 63, "redis %s: too many arguments", argv[0]);
    ck_assert_msg(store_cmd(s, &r, why, sizeof(why), argc, argv, NULL) == 0,
                  "redis %s: %s", argv[0], why);
    ck_assert_msg(store_reply_type(r) != STORE_ERROR, "redis %s: %s", argv[0],
                  store_reply_str(r, NULL));
    return r;
}

store_reply_t *
test_redis_cmd(store_t *s, ...)
{
    store_reply_t *r;
    va_list ap;

    va_start(ap, s);
    r = test_redis_cmdv(s, ap);
    va_end(ap);
    return r;
}

long long
test_redis_int(store_t *s, ...)
{
    store_reply_t *r;
    long long n = 0;
    va_list ap;

    va_start(ap, s);
    r = test_redis_cmdv(s, ap);
    va_end(ap);
    if (store_reply_type(r) == STORE_INT)
        n = store_reply_int(r);
    else if (store_reply_type(r) == STORE_STR)
        n = strtoll(store_reply_str(r, NULL), NULL, 10);
    store_reply_free(&r);
    return n;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int
test_rm_tree(const char *dir)
{
    if (dir == NULL || *dir == '\0')
        return 0;
    return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

bool
test_private_mounts(void)
{
    if (unshare(CLONE_NEWNS) != 0) {
        uid_t uid = getuid();
        gid_t gid = getgid();
        char map[64];
        FILE *m;

        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            return false;
        if ((m = fopen("/proc/self/setgroups", "w")) != NULL) {
            fputs("deny", m);
            fclose(m);
        }
        snprintf(map, sizeof(map), "0 %d 1", (int)uid);
        if ((m = fopen("/proc/self/uid_map", "w")) == NULL)
            return false;
        fputs(map, m);
        fclose(m);
        snprintf(map, sizeof(map), "0 %d 1", (int)gid);
        if ((m = fopen("/proc/self/gid_map", "w")) == NULL)
            return false;
        fputs(map, m);
        fclose(m);
    }
    /* Private first: otherwise a shared "/" would carry the mount out. */
    return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
}

void
test_mount_tmpfs(const char *dir, const char *size)
{
    char opts[64];

    snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
    ck_assert_msg(mount("tmpfs", dir, "tmpfs", 0, opts) == 0,
                  "mount tmpfs on %s: %s", dir, strerror(errno));
}

void
test_stop_clean(pid_t *pid, const char *name, int ms)
{
    int status;

    if (*pid <= 0)
        return;
    status = test_stop(*pid, SIGTERM, ms);
    *pid = 0;
    /* One that crashed, or leaked under ASan, fails the run. */
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "%s ended with status 0x%x", name, status);
}

int64_t
test_wait_ping(bus_client_t *c, const char *type, const char *to, int ms)
{
    int64_t t0 = test_now_ms();

    while (test_now_ms() - t0 < ms) {
        envelope_t *req = envelope_new(type, NULL, 200), *reply = NULL;
        char why[256];
        int rc = to ? bus_client_call_to(c, to, &req, &reply, why, sizeof(why))
                    : bus_client_call(c, &req, &reply, why, sizeof(why));

        envelope_destroy(&reply);
        if (rc == 0)
            return test_now_ms() - t0;
        usleep(20000);
    }
    return -1;
}
