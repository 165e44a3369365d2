/*
 * test_store.c - bus/store.h against a real redis-server that each test
 * starts for itself (on a free port in 18500-18599, no persistence, in a
 * folder of its own): every reply type through the sync store, commands on
 * a loop through the async store, and what happens when Redis goes away
 * (killed: commands fail at once, then the store reconnects when it is
 * back), stalls (SIGSTOP: a command fails with ERR_TIMEOUT, the store
 * recovers after SIGCONT), or the store is destroyed with commands in
 * flight (each callback runs once, with ERR_CLOSED).
 *
 * Every loop run is bounded by a watchdog, so a lost callback shows as a
 * failure and not as a hang.
 */
#include <errno.h>
#include <glob.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "bus/store.h"
#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "tests/testlib.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

#define PORT_FIRST 18500
#define PORT_COUNT 100

/* A redis-server of our own. */

struct redis {
    pid_t pid;
    int port;
    char dir[64];
    char password[32];
};

/* The process that runs the suite: each test's redis folder carries its
 * pid, so that main() can remove those of tests that failed half way. */
static pid_t runner_pid;

/* Whether nothing listens on port now (redis sets SO_REUSEADDR too). */
static bool
port_free(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, ok;

    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static config_t *
redis_config(const struct redis *r, const char *password)
{
    config_t *cfg = config_new();
    char why[256], port[16];

    snprintf(port, sizeof(port), "%d", r->port);
    ck_assert_msg(
        config_set(cfg, "redis.host", "127.0.0.1", why, sizeof(why)) == 0, "%s",
        why);
    ck_assert_msg(config_set(cfg, "redis.port", port, why, sizeof(why)) == 0,
                  "%s", why);
    ck_assert_msg(config_set(cfg, "redis.password", password ? password : "",
                             why, sizeof(why)) == 0,
                  "%s", why);
    return cfg;
}

/* Starts redis-server on r->port and waits until it answers PING; false
 * when it exits first (the port was taken after all) or never answers. */
static bool
redis_spawn(struct redis *r)
{
    char port[16], logfile[128];
    const char *argv[20];
    int n = 0, status;
    int64_t until = test_now_ms() + 5000;
    config_t *cfg;

    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(logfile, sizeof(logfile), "%s/redis.log", r->dir);
    argv[n++] = test_in_path("redis-server");
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--dir";
    argv[n++] = r->dir;
    argv[n++] = "--logfile";
    argv[n++] = logfile;
    if (r->password[0]) {
        argv[n++] = "--requirepass";
        argv[n++] = r->password;
    }
    argv[n] = NULL;
    r->pid = test_spawn(argv, NULL);
    cfg = redis_config(r, r->password);
    while (test_now_ms() < until) {
        char why[256];
        store_t *s;

        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            r->pid = 0;
            break;
        }
        s = store_connect(cfg, 500, why, sizeof(why));
        if (s) {
            store_reply_t *rep = NULL;
            int rc = store_cmdl(s, &rep, why, sizeof(why), "PING", NULL);
            bool up = rc == 0 && store_reply_type(rep) == STORE_STR;

            store_reply_free(&rep);
            store_destroy(&s);
            if (up) {
                config_destroy(&cfg);
                return true;
            }
        }
        usleep(20000);
    }
    config_destroy(&cfg);
    if (r->pid > 0)
        test_stop(r->pid, SIGKILL, 2000);
    r->pid = 0;
    return false;
}

/* A new redis on a free port; password may be NULL. */
static void
redis_start(struct redis *r, const char *password)
{
    int first = PORT_FIRST + (int)(getpid() % PORT_COUNT);

    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "/tmp/samotop-test-store-%d-XXXXXX",
             (int)runner_pid);
    ck_assert_msg(mkdtemp(r->dir) != NULL, "mkdtemp: %s", strerror(errno));
    if (password)
        snprintf(r->password, sizeof(r->password), "%s", password);
    for (int i = 0; i < PORT_COUNT; i++) {
        r->port = PORT_FIRST + (first - PORT_FIRST + i) % PORT_COUNT;
        if (port_free(r->port) && redis_spawn(r))
            return;
    }
    ck_abort_msg("no redis-server could start on ports %d-%d", PORT_FIRST,
                 PORT_FIRST + PORT_COUNT - 1);
}

/* Starts it again on the same port, after redis_kill(). */
static void
redis_restart(struct redis *r)
{
    for (int i = 0; i < 10; i++) {
        if (redis_spawn(r))
            return;
        usleep(100000);
    }
    ck_abort_msg("redis-server did not restart on port %d", r->port);
}

static void
redis_kill(struct redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGCONT);
        test_stop(r->pid, SIGKILL, 2000);
    }
    r->pid = 0;
}

static void
redis_stop(struct redis *r)
{
    char path[128];

    redis_kill(r);
    snprintf(path, sizeof(path), "%s/redis.log", r->dir);
    unlink(path);
    rmdir(r->dir);
}

/* A failed assertion ends the test's process (CK_FORK) at once: its redis
 * dies with it (PR_SET_PDEATHSIG), and this removes its folder. */
static void
remove_leftovers(void)
{
    char pattern[128], path[256];
    glob_t g;

    snprintf(pattern, sizeof(pattern), "/tmp/samotop-test-store-%d-*",
             (int)runner_pid);
    if (glob(pattern, 0, NULL, &g) != 0)
        return;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        snprintf(path, sizeof(path), "%s/redis.log", g.gl_pathv[i]);
        unlink(path);
        rmdir(g.gl_pathv[i]);
    }
    globfree(&g);
}

static void
setup(void)
{
    /* A write to a Redis that died must come back as an error. */
    signal(SIGPIPE, SIG_IGN);
    log_init("test-store", "0");
    log_set_level(LL_ERR);
}

/* The sync store. */

static store_t *
sync_connect(const struct redis *r, int timeout_ms)
{
    config_t *cfg = redis_config(r, r->password);
    char why[256] = "";
    store_t *s = store_connect(cfg, timeout_ms, why, sizeof(why));

    ck_assert_msg(s != NULL, "store_connect: %s", why);
    config_destroy(&cfg);
    return s;
}

/* Runs argv (a NULL-terminated list) and returns the reply. */
static store_reply_t *
run(store_t *s, const char *const *argv)
{
    store_reply_t *rep = NULL;
    char why[256] = "";
    int argc = 0, rc;

    while (argv[argc])
        argc++;
    rc = store_cmd(s, &rep, why, sizeof(why), argc, argv, NULL);
    ck_assert_msg(rc == 0, "%s: got %d (%s), want 0", argv[0], rc, why);
    ck_assert(rep != NULL);
    return rep;
}

static const struct reply_row {
    const char *label;
    const char *argv[8];
    enum store_type type;
    const char *str;   /* a prefix, for STR and ERROR */
    long long integer; /* for INT; element count for ARRAY */
} reply_rows[] = {
    {"status", {"PING", NULL}, STORE_STR, "PONG", 0},
    {"set", {"SET", "k", "v1", NULL}, STORE_STR, "OK", 0},
    {"bulk", {"GET", "k", NULL}, STORE_STR, "v1", 0},
    {"nil", {"GET", "missing", NULL}, STORE_NIL, NULL, 0},
    {"integer", {"INCRBY", "n", "42", NULL}, STORE_INT, NULL, 42},
    {"negative integer", {"DECRBY", "m", "7", NULL}, STORE_INT, NULL, -7},
    {"zero", {"EXISTS", "missing", NULL}, STORE_INT, NULL, 0},
    {"empty string", {"ECHO", "", NULL}, STORE_STR, "", 0},
    {"empty array", {"SMEMBERS", "missing", NULL}, STORE_ARRAY, NULL, 0},
    {"array", {"HGETALL", "h", NULL}, STORE_ARRAY, NULL, 4},
    {"wrong type", {"INCR", "k", NULL}, STORE_ERROR, "ERR value is not", 0},
    {"unknown command", {"NOSUCHCOMMAND", NULL}, STORE_ERROR, "ERR unknown", 0},
    {"wrong arity", {"GET", NULL}, STORE_ERROR, "ERR wrong number", 0},
};

START_TEST(test_sync_reply_types)
{
    const struct reply_row *row = &reply_rows[_i];
    struct redis r;
    store_t *s;
    store_reply_t *rep;
    enum store_type type;

    redis_start(&r, NULL);
    s = sync_connect(&r, 2000);
    rep = run(s, (const char *const[]){"SET", "k", "v1", NULL});
    store_reply_free(&rep);
    rep = run(s, (const char *const[]){"HSET", "h", "a", "1", "b", "2", NULL});
    store_reply_free(&rep);
    rep = run(s, row->argv);
    type = store_reply_type(rep);
    ck_assert_msg(type == row->type, "%s: type: got %d, want %d", row->label,
                  type, row->type);
    switch (row->type) {
    case STORE_STR:
    case STORE_ERROR: {
        size_t len = 99;
        const char *str = store_reply_str(rep, &len);

        ck_assert_msg(str != NULL, "%s: no string", row->label);
        ck_assert_msg(strncmp(str, row->str, strlen(row->str)) == 0,
                      "%s: got \"%s\", want \"%s...\"", row->label, str,
                      row->str);
        ck_assert_msg(len == strlen(str), "%s: length %zu for \"%s\"",
                      row->label, len, str);
        ck_assert_msg(store_reply_int(rep) == 0 &&
                          store_reply_count(rep) == 0 &&
                          store_reply_at(rep, 0) == NULL,
                      "%s: a string reads as a number or an array", row->label);
        break;
    }
    case STORE_INT:
        ck_assert_msg(store_reply_int(rep) == row->integer,
                      "%s: got %lld, want %lld", row->label,
                      store_reply_int(rep), row->integer);
        ck_assert_msg(store_reply_str(rep, NULL) == NULL,
                      "%s: an integer reads as a string", row->label);
        break;
    case STORE_ARRAY:
        ck_assert_msg(store_reply_count(rep) == (size_t)row->integer,
                      "%s: got %zu elements, want %lld", row->label,
                      store_reply_count(rep), row->integer);
        for (size_t i = 0; i < store_reply_count(rep); i++)
            ck_assert_msg(store_reply_type(store_reply_at(rep, i)) == STORE_STR,
                          "%s: element %zu is not a string", row->label, i);
        ck_assert_msg(store_reply_at(rep, store_reply_count(rep)) == NULL,
                      "%s: an element past the end", row->label);
        ck_assert_msg(store_reply_str(rep, NULL) == NULL,
                      "%s: an array reads as a string", row->label);
        break;
    case STORE_NIL:
        ck_assert_msg(store_reply_str(rep, NULL) == NULL &&
                          store_reply_int(rep) == 0 &&
                          store_reply_count(rep) == 0,
                      "%s: nil reads as something", row->label);
        break;
    }
    store_reply_free(&rep);
    ck_assert(rep == NULL);
    store_reply_free(&rep); /* NULL is fine */
    store_destroy(&s);
    ck_assert(s == NULL);
    store_destroy(&s);
    redis_stop(&r);
}
END_TEST

/* Binary values with explicit lengths, nested arrays, and MULTI/EXEC, which
 * samotop-admin uses for every change. */
START_TEST(test_sync_binary_nested_multi)
{
    static const char bin[] = "a\0b\r\nc";
    const char *argv[3] = {"SET", "bin", bin};
    size_t lens[3] = {3, 3, sizeof(bin) - 1}, len = 0;
    struct redis r;
    store_t *s;
    store_reply_t *rep = NULL;
    const store_reply_t *e;
    char why[256];

    redis_start(&r, NULL);
    s = sync_connect(&r, 2000);
    ck_assert_int_eq(store_cmd(s, &rep, why, sizeof(why), 3, argv, lens), 0);
    store_reply_free(&rep);
    rep = run(s, (const char *const[]){"GET", "bin", NULL});
    ck_assert(store_reply_str(rep, &len) != NULL);
    ck_assert_uint_eq(len, sizeof(bin) - 1);
    ck_assert(memcmp(store_reply_str(rep, NULL), bin, len) == 0);
    store_reply_free(&rep);

    /* EVAL returns a nested array with every element type. */
    rep =
        run(s, (const char *const[]){
                   "EVAL", "return {1, 'two', {3, 'four'}, false}", "0", NULL});
    ck_assert_int_eq(store_reply_type(rep), STORE_ARRAY);
    ck_assert_uint_eq(store_reply_count(rep), 4);
    ck_assert_int_eq(store_reply_int(store_reply_at(rep, 0)), 1);
    ck_assert_str_eq(store_reply_str(store_reply_at(rep, 1), NULL), "two");
    e = store_reply_at(rep, 2);
    ck_assert_int_eq(store_reply_type(e), STORE_ARRAY);
    ck_assert_uint_eq(store_reply_count(e), 2);
    ck_assert_str_eq(store_reply_str(store_reply_at(e, 1), NULL), "four");
    ck_assert_int_eq(store_reply_type(store_reply_at(rep, 3)), STORE_NIL);
    store_reply_free(&rep);

    /* store_cmdl, and a transaction. */
    ck_assert_int_eq(store_cmdl(s, &rep, why, sizeof(why), "MULTI", NULL), 0);
    store_reply_free(&rep);
    ck_assert_int_eq(
        store_cmdl(s, &rep, why, sizeof(why), "SADD", "set", "x", NULL), 0);
    ck_assert_str_eq(store_reply_str(rep, NULL), "QUEUED");
    store_reply_free(&rep);
    ck_assert_int_eq(store_cmdl(s, &rep, why, sizeof(why), "INCR", "bin", NULL),
                     0);
    store_reply_free(&rep);
    ck_assert_int_eq(store_cmdl(s, &rep, why, sizeof(why), "EXEC", NULL), 0);
    ck_assert_int_eq(store_reply_type(rep), STORE_ARRAY);
    ck_assert_uint_eq(store_reply_count(rep), 2);
    ck_assert_int_eq(store_reply_int(store_reply_at(rep, 0)), 1);
    ck_assert_int_eq(store_reply_type(store_reply_at(rep, 1)), STORE_ERROR);
    store_reply_free(&rep);
    store_destroy(&s);
    redis_stop(&r);
}
END_TEST

START_TEST(test_sync_too_many_args)
{
    const char *argv[65];
    struct redis r;
    store_t *s;
    store_reply_t *rep = (store_reply_t *)&r; /* must be reset */
    char why[256] = "";

    for (int i = 0; i < 65; i++)
        argv[i] = "x";
    redis_start(&r, NULL);
    s = sync_connect(&r, 2000);
    ck_assert_int_eq(store_cmd(s, &rep, why, sizeof(why), 65, argv, NULL),
                     ERR_INVAL);
    ck_assert(rep == NULL);
    ck_assert(why[0] != '\0');
    /* The connection is still good. */
    rep = run(s, (const char *const[]){"PING", NULL});
    store_reply_free(&rep);
    store_destroy(&s);
    redis_stop(&r);
}
END_TEST

START_TEST(test_sync_auth)
{
    struct redis r;
    config_t *cfg;
    store_t *s;
    store_reply_t *rep;
    char why[256] = "";

    redis_start(&r, "s3cret");
    s = sync_connect(&r, 2000);
    rep = run(s, (const char *const[]){"SET", "a", "b", NULL});
    ck_assert_str_eq(store_reply_str(rep, NULL), "OK");
    store_reply_free(&rep);
    store_destroy(&s);

    cfg = redis_config(&r, "wrong");
    s = store_connect(cfg, 2000, why, sizeof(why));
    ck_assert_msg(s == NULL, "a wrong password was taken");
    ck_assert_msg(strstr(why, "AUTH") != NULL, "why: %s", why);
    ck_assert_msg(strstr(why, "wrong") == NULL, "the password shows: %s", why);
    config_destroy(&cfg);
    redis_stop(&r);
}
END_TEST

START_TEST(test_sync_unreachable)
{
    struct redis r;
    config_t *cfg;
    char why[256] = "", want[64];
    store_t *s;
    int64_t t0;

    /* A port that was just in use and is free now. */
    redis_start(&r, NULL);
    redis_kill(&r);
    cfg = redis_config(&r, NULL);
    t0 = test_now_ms();
    s = store_connect(cfg, 2000, why, sizeof(why));
    ck_assert_msg(s == NULL, "connected to nothing");
    ck_assert_msg(test_now_ms() - t0 < 2000, "refusal took %lld ms",
                  (long long)(test_now_ms() - t0));
    snprintf(want, sizeof(want), "127.0.0.1:%d", r.port);
    ck_assert_msg(strstr(why, want) != NULL, "why does not name %s: %s", want,
                  why);
    config_destroy(&cfg);
    redis_stop(&r);
}
END_TEST

START_TEST(test_sync_killed)
{
    struct redis r;
    store_t *s;
    store_reply_t *rep = NULL;
    char why[256] = "";
    int64_t t0;
    int rc;

    redis_start(&r, NULL);
    s = sync_connect(&r, 2000);
    redis_kill(&r);
    t0 = test_now_ms();
    rc = store_cmdl(s, &rep, why, sizeof(why), "PING", NULL);
    ck_assert_msg(rc == ERR_REDIS, "after kill: got %d, want ERR_REDIS", rc);
    ck_assert(rep == NULL);
    ck_assert_msg(why[0] != '\0', "no reason");
    ck_assert_msg(test_now_ms() - t0 < 1000, "failing took %lld ms",
                  (long long)(test_now_ms() - t0));
    store_destroy(&s);
    redis_stop(&r);
}
END_TEST

START_TEST(test_sync_stopped)
{
    struct redis r;
    store_t *s;
    store_reply_t *rep = NULL;
    char why[256] = "";
    int64_t t0, took;
    int rc;

    redis_start(&r, NULL);
    s = sync_connect(&r, 300);
    kill(r.pid, SIGSTOP);
    t0 = test_now_ms();
    rc = store_cmdl(s, &rep, why, sizeof(why), "PING", NULL);
    took = test_now_ms() - t0;
    kill(r.pid, SIGCONT);
    ck_assert_msg(rc == ERR_REDIS, "stalled: got %d, want ERR_REDIS", rc);
    ck_assert_msg(took >= 250 && took < 1500,
                  "stalled: failed after %lld ms, want about 300",
                  (long long)took);
    store_destroy(&s);
    /* A new connection works once Redis runs again. */
    s = sync_connect(&r, 2000);
    rep = run(s, (const char *const[]){"PING", NULL});
    store_reply_free(&rep);
    store_destroy(&s);
    redis_stop(&r);
}
END_TEST

/* The async store on a loop. */

#define MAX_CALLS 64

struct call {
    int n;   /* times the callback ran */
    int err; /* its err */
    enum store_type type;
    long long integer;
    char str[64];
    int64_t at; /* when, on the monotonic clock */
    int order;  /* the how-many-th answer it was */
};

struct harness {
    loop_t *loop;
    store_async_t *store;
    struct call calls[MAX_CALLS];
    int answered; /* callbacks so far */
    int want;     /* stop the loop when answered reaches it */
    bool dog;     /* the watchdog stopped the loop */
    /* chained: the callback of call 0 sends call 1 from inside */
    bool chain;
    /* the callback of call 0 destroys the store */
    bool destroy_in_cb;
};

static struct harness h;

static void
on_cmd(void *arg, int err, const store_reply_t *reply)
{
    struct call *c = arg;

    c->n++;
    c->err = err;
    c->at = test_now_ms();
    c->order = h.answered++;
    if (reply) {
        const char *s = store_reply_str(reply, NULL);

        c->type = store_reply_type(reply);
        c->integer = store_reply_int(reply);
        snprintf(c->str, sizeof(c->str), "%s", s ? s : "");
    } else {
        c->type = (enum store_type) - 1;
    }
    if (h.chain && c == &h.calls[0]) {
        const char *argv[] = {"INCR", "chained"};
        int rc = store_async_cmd(h.store, on_cmd, &h.calls[1], 2, argv, NULL);

        ck_assert_msg(rc == 0, "a command from a callback: got %d", rc);
    }
    if (h.destroy_in_cb && c == &h.calls[0]) {
        store_async_destroy(&h.store);
        loop_stop(h.loop);
    }
    if (h.want && h.answered >= h.want)
        loop_stop(h.loop);
}

static void
on_dog(loop_t *loop, void *arg)
{
    (void)arg;
    h.dog = true;
    loop_stop(loop);
}

/* Runs the loop until want callbacks have run; fails after ms. */
static void
run_until_answered(const char *label, int want, int64_t ms)
{
    loop_timer_t *dog;

    if (h.answered >= want)
        return;
    h.want = want;
    h.dog = false;
    dog = loop_timer_add(h.loop, ms, on_dog, NULL);
    ck_assert_int_eq(loop_run(h.loop), 0);
    ck_assert_msg(!h.dog, "%s: %d of %d callbacks after %lld ms", label,
                  h.answered, want, (long long)ms);
    loop_timer_cancel(h.loop, &dog);
    h.want = 0;
}

/* Runs the loop for ms, whatever happens. */
static void
run_for(int64_t ms)
{
    loop_timer_t *t = loop_timer_add(h.loop, ms, on_dog, NULL);

    (void)t;
    h.want = 0;
    ck_assert_int_eq(loop_run(h.loop), 0);
}

static void
on_poll_ready(loop_t *loop, void *arg)
{
    loop_timer_t **self = arg;

    *self = NULL;
    if (store_async_ready(h.store)) {
        loop_stop(loop);
        return;
    }
    *self = loop_timer_add(loop, 10, on_poll_ready, self);
}

/* Runs the loop until the store is connected; fails after ms. */
static void
wait_ready(const char *label, int64_t ms)
{
    loop_timer_t *dog, *poll = NULL;

    h.dog = false;
    h.want = 0;
    dog = loop_timer_add(h.loop, ms, on_dog, NULL);
    poll = loop_timer_add(h.loop, 0, on_poll_ready, &poll);
    ck_assert_int_eq(loop_run(h.loop), 0);
    ck_assert_msg(!h.dog && store_async_ready(h.store),
                  "%s: not connected after %lld ms", label, (long long)ms);
    loop_timer_cancel(h.loop, &dog);
    loop_timer_cancel(h.loop, &poll);
}

static void
harness_start(const struct redis *r, int timeout_ms)
{
    config_t *cfg = redis_config(r, r->password);

    memset(&h, 0, sizeof(h));
    h.loop = loop_new();
    ck_assert(h.loop != NULL);
    h.store = store_async_new(h.loop, cfg, timeout_ms);
    ck_assert(h.store != NULL);
    config_destroy(&cfg);
}

static void
harness_stop(void)
{
    store_async_destroy(&h.store);
    loop_destroy(&h.loop);
}

static void
harness_reset_calls(void)
{
    memset(h.calls, 0, sizeof(h.calls));
    h.answered = 0;
}

/* Sends argv (NULL-terminated) as call i; asserts it was taken. */
static void
send_cmd(int i, const char *const *argv)
{
    int argc = 0, rc;

    while (argv[argc])
        argc++;
    rc = store_async_cmd(h.store, on_cmd, &h.calls[i], argc, argv, NULL);
    ck_assert_msg(rc == 0, "%s: store_async_cmd: got %d", argv[0], rc);
}

START_TEST(test_async_commands)
{
    struct redis r;

    redis_start(&r, NULL);
    harness_start(&r, 2000);
    ck_assert_msg(!store_async_ready(h.store), "ready before the loop ran");
    wait_ready("start", 3000);

    /* Forty commands in flight at once come back in order. */
    for (int i = 0; i < 40; i++)
        send_cmd(i, (const char *const[]){"INCR", "counter", NULL});
    run_until_answered("incr", 40, 3000);
    for (int i = 0; i < 40; i++) {
        ck_assert_msg(h.calls[i].n == 1 && h.calls[i].err == 0,
                      "incr %d: ran %d times, err %d", i, h.calls[i].n,
                      h.calls[i].err);
        ck_assert_msg(h.calls[i].type == STORE_INT &&
                          h.calls[i].integer == i + 1 && h.calls[i].order == i,
                      "incr %d: got %lld as answer #%d", i, h.calls[i].integer,
                      h.calls[i].order);
    }

    /* Each reply type; a Redis error is a reply, not a failure. */
    harness_reset_calls();
    send_cmd(0, (const char *const[]){"SET", "s", "hello", NULL});
    send_cmd(1, (const char *const[]){"GET", "s", NULL});
    send_cmd(2, (const char *const[]){"GET", "nothing", NULL});
    send_cmd(3, (const char *const[]){"SADD", "set", "a", "b", NULL});
    send_cmd(4, (const char *const[]){"SMEMBERS", "set", NULL});
    send_cmd(5, (const char *const[]){"INCR", "s", NULL});
    run_until_answered("types", 6, 3000);
    ck_assert_str_eq(h.calls[0].str, "OK");
    ck_assert_int_eq(h.calls[1].type, STORE_STR);
    ck_assert_str_eq(h.calls[1].str, "hello");
    ck_assert_int_eq(h.calls[2].type, STORE_NIL);
    ck_assert_int_eq(h.calls[3].integer, 2);
    ck_assert_int_eq(h.calls[4].type, STORE_ARRAY);
    ck_assert_int_eq(h.calls[5].type, STORE_ERROR);
    ck_assert_int_eq(h.calls[5].err, 0);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(h.calls[i].n, 1);

    /* Explicit lengths, and a command sent from inside a callback. */
    harness_reset_calls();
    h.chain = true;
    {
        const char *argv[] = {"SET", "bin", "x\0y"};
        size_t lens[] = {3, 3, 3};

        ck_assert_int_eq(
            store_async_cmd(h.store, on_cmd, &h.calls[0], 3, argv, lens), 0);
    }
    run_until_answered("chain", 2, 3000);
    ck_assert_int_eq(h.calls[1].n, 1);
    ck_assert_int_eq(h.calls[1].integer, 1);
    h.chain = false;
    harness_reset_calls();
    send_cmd(0, (const char *const[]){"STRLEN", "bin", NULL});
    run_until_answered("strlen", 1, 3000);
    ck_assert_int_eq(h.calls[0].integer, 3);

    harness_stop();
    redis_stop(&r);
}
END_TEST

/* Before it is connected, a command is refused at once and its callback
 * never runs; the store connects once Redis is there. */
START_TEST(test_async_redis_comes_later)
{
    struct redis r;
    int rc;

    redis_start(&r, NULL);
    redis_kill(&r);
    harness_start(&r, 2000);
    rc = store_async_cmd(h.store, on_cmd, &h.calls[0], 1,
                         (const char *const[]){"PING"}, NULL);
    ck_assert_msg(rc == ERR_REDIS, "not connected: got %d, want ERR_REDIS", rc);
    run_for(300);
    ck_assert(!store_async_ready(h.store));
    ck_assert_int_eq(h.calls[0].n, 0);
    redis_restart(&r);
    wait_ready("redis started late", 5000);
    send_cmd(1, (const char *const[]){"PING", NULL});
    run_until_answered("ping", 1, 3000);
    ck_assert_str_eq(h.calls[1].str, "PONG");
    ck_assert_int_eq(h.calls[0].n, 0);
    harness_stop();
    redis_stop(&r);
}
END_TEST

START_TEST(test_async_killed_and_back)
{
    struct redis r;
    int64_t t0;
    int rc;

    redis_start(&r, NULL);
    harness_start(&r, 5000);
    wait_ready("start", 3000);

    /* A command waiting on the server (BLPOP blocks) when Redis dies fails
     * at once, not after the timeout. */
    send_cmd(0, (const char *const[]){"BLPOP", "nothing", "0", NULL});
    send_cmd(1, (const char *const[]){"PING", NULL});
    run_for(100);
    ck_assert_int_eq(h.answered, 0);
    t0 = test_now_ms();
    redis_kill(&r);
    run_until_answered("killed", 2, 3000);
    ck_assert_msg(test_now_ms() - t0 < 2000, "failing took %lld ms",
                  (long long)(test_now_ms() - t0));
    for (int i = 0; i < 2; i++)
        ck_assert_msg(h.calls[i].n == 1 && h.calls[i].err == ERR_REDIS,
                      "call %d: ran %d times with %d, want once ERR_REDIS", i,
                      h.calls[i].n, h.calls[i].err);
    ck_assert(!store_async_ready(h.store));

    /* While it is down, commands are refused at once. */
    harness_reset_calls();
    run_for(200);
    rc = store_async_cmd(h.store, on_cmd, &h.calls[0], 1,
                         (const char *const[]){"PING"}, NULL);
    ck_assert_msg(rc == ERR_REDIS, "while down: got %d, want ERR_REDIS", rc);

    /* Back again: the store reconnects by itself (backoff at most 2 s). */
    redis_restart(&r);
    wait_ready("restarted", 5000);
    send_cmd(1, (const char *const[]){"SET", "after", "restart", NULL});
    send_cmd(2, (const char *const[]){"GET", "after", NULL});
    run_until_answered("after restart", 2, 3000);
    ck_assert_str_eq(h.calls[2].str, "restart");
    ck_assert_int_eq(h.calls[0].n, 0);

    /* And a second time, so the backoff was reset. */
    harness_reset_calls();
    redis_kill(&r);
    run_for(300);
    ck_assert(!store_async_ready(h.store));
    redis_restart(&r);
    wait_ready("restarted again", 5000);
    harness_stop();
    redis_stop(&r);
}
END_TEST

START_TEST(test_async_stalled)
{
    struct redis r;
    int64_t t0;
    bool ok = false;

    redis_start(&r, NULL);
    harness_start(&r, 400);
    wait_ready("start", 3000);

    kill(r.pid, SIGSTOP);
    t0 = test_now_ms();
    send_cmd(0, (const char *const[]){"PING", NULL});
    send_cmd(1, (const char *const[]){"PING", NULL});
    send_cmd(2, (const char *const[]){"PING", NULL});
    run_until_answered("stalled", 3, 3000);
    ck_assert_msg(h.calls[0].err == ERR_TIMEOUT,
                  "first: got %d, want ERR_TIMEOUT", h.calls[0].err);
    ck_assert_msg(h.calls[0].at - t0 >= 350 && h.calls[0].at - t0 < 1400,
                  "timed out after %lld ms, want about 400",
                  (long long)(h.calls[0].at - t0));
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(h.calls[i].n == 1 && h.calls[i].err != 0,
                      "call %d: ran %d times with %d", i, h.calls[i].n,
                      h.calls[i].err);
        ck_assert_msg(h.calls[i].at - t0 < 1400, "call %d: after %lld ms", i,
                      (long long)(h.calls[i].at - t0));
    }
    /* Nothing runs twice later, even when the stalled Redis answers. */
    kill(r.pid, SIGCONT);
    run_for(300);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(h.calls[i].n == 1, "call %d ran %d times", i,
                      h.calls[i].n);

    /* The store recovers: within a few seconds a command succeeds. */
    t0 = test_now_ms();
    for (int i = 3; i < MAX_CALLS && test_now_ms() - t0 < 5000; i++) {
        if (!store_async_ready(h.store)) {
            run_for(50);
            continue;
        }
        send_cmd(i, (const char *const[]){"PING", NULL});
        run_until_answered("recover", h.answered + 1, 3000);
        if (h.calls[i].err == 0 && strcmp(h.calls[i].str, "PONG") == 0) {
            ok = true;
            break;
        }
    }
    ck_assert_msg(ok, "no PONG within 5 s of SIGCONT");
    harness_stop();
    redis_stop(&r);
}
END_TEST

static const struct destroy_row {
    const char *label;
    int ncmds;
    int run_ms; /* loop run after sending, before destroy */
    bool stall; /* SIGSTOP redis first, so no reply arrives */
} destroy_rows[] = {
    {"unsent", 10, 0, false},
    {"sent to a stalled redis", 10, 100, true},
    {"one", 1, 0, false},
};

START_TEST(test_async_destroy_in_flight)
{
    const struct destroy_row *row = &destroy_rows[_i];
    struct redis r;

    redis_start(&r, NULL);
    harness_start(&r, 5000);
    wait_ready(row->label, 3000);
    if (row->stall)
        kill(r.pid, SIGSTOP);
    for (int i = 0; i < row->ncmds; i++)
        send_cmd(i, (const char *const[]){"PING", NULL});
    if (row->run_ms)
        run_for(row->run_ms);
    ck_assert_int_eq(h.answered, 0);
    store_async_destroy(&h.store);
    ck_assert(h.store == NULL);
    for (int i = 0; i < row->ncmds; i++)
        ck_assert_msg(h.calls[i].n == 1 && h.calls[i].err == ERR_CLOSED,
                      "%s: call %d: ran %d times with %d, want once "
                      "ERR_CLOSED",
                      row->label, i, h.calls[i].n, h.calls[i].err);
    /* No timer or watcher of the store is left to fire. */
    run_for(200);
    ck_assert_int_eq(h.answered, row->ncmds);
    store_async_destroy(&h.store); /* NULL is fine */
    loop_destroy(&h.loop);
    redis_stop(&r);
}
END_TEST

/* With redis.password set, the async store authenticates first. */
START_TEST(test_async_auth)
{
    struct redis r;

    redis_start(&r, "s3cret");
    harness_start(&r, 2000);
    wait_ready("auth", 3000);
    send_cmd(0, (const char *const[]){"SET", "a", "b", NULL});
    run_until_answered("auth", 1, 3000);
    ck_assert_msg(h.calls[0].err == 0 && strcmp(h.calls[0].str, "OK") == 0,
                  "after AUTH: got %d \"%s\"", h.calls[0].err, h.calls[0].str);
    harness_stop();
    redis_stop(&r);
}
END_TEST

static const struct cb_destroy_row {
    const char *label;
    bool stall; /* call 0 fails by timeout, not with a reply */
    bool kill;  /* call 0 fails because Redis died */
} cb_destroy_rows[] = {
    {"from a reply", false, false},
    {"from a timeout", true, false},
    {"from a lost connection", false, true},
};

/* A callback may destroy the store: the commands still in flight are
 * failed once with ERR_CLOSED and nothing runs after. */
START_TEST(test_async_destroy_in_callback)
{
    const struct cb_destroy_row *row = &cb_destroy_rows[_i];
    struct redis r;

    redis_start(&r, NULL);
    harness_start(&r, 300);
    wait_ready(row->label, 3000);
    h.destroy_in_cb = true;
    if (row->stall)
        kill(r.pid, SIGSTOP);
    send_cmd(0, (const char *const[]){"PING", NULL});
    send_cmd(1, (const char *const[]){"PING", NULL});
    send_cmd(2, (const char *const[]){"PING", NULL});
    if (row->kill)
        redis_kill(&r);
    run_until_answered(row->label, 3, 3000);
    ck_assert(h.store == NULL);
    ck_assert_msg(h.calls[0].n == 1, "%s: call 0 ran %d times", row->label,
                  h.calls[0].n);
    for (int i = 1; i < 3; i++)
        ck_assert_msg(h.calls[i].n == 1 && (h.calls[i].err == ERR_CLOSED ||
                                            h.calls[i].err == ERR_REDIS),
                      "%s: call %d: ran %d times with %d", row->label, i,
                      h.calls[i].n, h.calls[i].err);
    run_for(400);
    ck_assert_int_eq(h.answered, 3);
    loop_destroy(&h.loop);
    redis_stop(&r);
}
END_TEST

/* Destroyed before it ever connected. */
START_TEST(test_async_destroy_unconnected)
{
    struct redis r;

    redis_start(&r, NULL);
    redis_kill(&r);
    harness_start(&r, 1000);
    run_for(250); /* a failed connect and a pending reconnect timer */
    store_async_destroy(&h.store);
    run_for(300);
    ck_assert_int_eq(h.answered, 0);
    loop_destroy(&h.loop);

    /* And while the connect is still under way. */
    redis_restart(&r);
    harness_start(&r, 1000);
    store_async_destroy(&h.store);
    run_for(100);
    loop_destroy(&h.loop);
    redis_stop(&r);
}
END_TEST

static Suite *
store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc;

    tc = tcase_create("sync");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_loop_test(tc, test_sync_reply_types, 0, NROWS(reply_rows));
    tcase_add_test(tc, test_sync_binary_nested_multi);
    tcase_add_test(tc, test_sync_too_many_args);
    tcase_add_test(tc, test_sync_auth);
    tcase_add_test(tc, test_sync_unreachable);
    tcase_add_test(tc, test_sync_killed);
    tcase_add_test(tc, test_sync_stopped);
    suite_add_tcase(s, tc);

    tc = tcase_create("async");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_async_commands);
    tcase_add_test(tc, test_async_redis_comes_later);
    tcase_add_test(tc, test_async_killed_and_back);
    tcase_add_test(tc, test_async_stalled);
    tcase_add_test(tc, test_async_auth);
    tcase_add_loop_test(tc, test_async_destroy_in_flight, 0,
                        NROWS(destroy_rows));
    tcase_add_test(tc, test_async_destroy_unconnected);
    tcase_add_loop_test(tc, test_async_destroy_in_callback, 0,
                        NROWS(cb_destroy_rows));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(store_suite());
    int failed;

    runner_pid = getpid();
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_leftovers();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
