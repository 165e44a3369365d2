/*
 * The supervisor proper: the child table, starting, reaping, restarting
 * with backoff and the ordered stop.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/config.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "lib/shard.h"
#include "lib/xalloc.h"

#include "supervisor.h"

/* A child that ran this long before dying is taken to have been healthy:
 * its next restart starts again from the shortest backoff. */
#define BACKOFF_RESET_MS 10000
/* How long Redis has to answer PING at start-up, and how often it is
 * asked. */
#define REDIS_READY_MS 10000
#define REDIS_POLL_MS 100

/* Stop order runs from the highest group down: actors, broker, Redis. */
enum group { G_REDIS, G_BUS, G_ACTOR, G__COUNT };

static const char *const group_names[] = {"redis", "bus", "actors"};

struct actor_kind {
    const char *name; /* log name, and the supervisor.<name> key */
    const char *exe;
    enum group group;
};

/* The broker's bind keys: with several brokers, each binds one item. */
static const char *const broker_keys[] = {"broker.clients", "broker.workers",
                                          "broker.trace"};

/* Started in this order, after Redis answers. */
static const struct actor_kind actor_kinds[] = {
    {"bus", "samotop-bus", G_BUS},
    {"listener", "samotop-listener", G_ACTOR},
    {"auth", "samotop-auth", G_ACTOR},
    {"guard", "samotop-guard", G_ACTOR},
    {"mailbox", "samotop-mailbox", G_ACTOR},
    {"queue", "samotop-queue", G_ACTOR},
    {"relay", "samotop-relay", G_ACTOR},
};

#define NKINDS (sizeof(actor_kinds) / sizeof(actor_kinds[0]))

struct supervisor;

struct child {
    struct supervisor *sup;
    char name[64]; /* "auth/1" */
    enum group group;
    char *argv[4]; /* argv[0] is the executable; owned */
    char *env[4];  /* "NAME=value" for this child only; owned */
    pid_t pid;     /* 0 while not running */
    char last_status[32];
    int64_t started_ms;
    long backoff_ms;
    loop_timer_t *restart;
};

enum state { S_REDIS_WAIT, S_RUNNING, S_STOPPING };

struct supervisor {
    const config_t *cfg;
    loop_t *loop;
    enum state state;
    pid_t self;
    char *data;    /* absolute */
    char *bindir;  /* absolute */
    char *pidfile; /* absolute; NULL once removed */
    int pidfd;     /* holds the lock for the whole run */
    struct child *kids;
    int nkids;
    long backoff_min, backoff_max, stop_timeout;
    int64_t redis_deadline;
    loop_timer_t *ping_timer;
    int stop_group; /* the group being stopped; G__COUNT before any */
    loop_timer_t *stop_timer;
};

static void child_start(struct supervisor *sup, struct child *c);
static void stop_advance(struct supervisor *sup);

/* Stops every child now (SIGTERM, a grace, SIGKILL), removes the pid file
 * and exits through log_fatal(): the one way out of a start-up failure
 * once something may be running. */
static void sup_fatal(struct supervisor *sup, const char *event,
                      const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

static int64_t
now_ms(void)
{
    return clock_mono_ms();
}

/* Creates path and its parents, like mkdir -p. */
static int
mkdir_p(const char *path, mode_t mode)
{
    char *p = xstrdup(path);
    int rc = 0;

    for (char *s = p + 1; rc == 0; s++) {
        char c = *s;

        if (c != '/' && c != '\0')
            continue;
        *s = '\0';
        if (mkdir(p, mode) != 0 && errno != EEXIST)
            rc = ERR_SYS;
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    return rc;
}

static char *
make_absolute(const char *path)
{
    char cwd[PATH_MAX];

    if (path[0] == '/')
        return xstrdup(path);
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        log_fatal(NULL, "startup",
                  "reason=\"cannot read the working folder: %s\"",
                  strerror(errno));
    return xasprintf("%s/%s", cwd, path);
}

/* The folder samotopd itself was started from, for finding the actors
 * beside it. */
static char *
self_dir(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *slash;

    if (n <= 0)
        log_fatal(NULL, "startup", "reason=\"cannot read /proc/self/exe: %s\"",
                  strerror(errno));
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash == exe)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    return xstrdup(exe);
}

/* Whether name can be run: a path is checked as it is, a bare name is
 * looked up in PATH the way execvp() will. */
static bool
can_exec(const char *name)
{
    const char *path = getenv("PATH");
    bool found = false;
    char **dirs, *commas;
    int n;

    if (strchr(name, '/') != NULL)
        return access(name, X_OK) == 0;
    if (path == NULL || *path == '\0')
        path = "/usr/local/bin:/usr/bin:/bin";
    /* config_list() splits on commas; PATH uses colons. */
    commas = xstrdup(path);
    for (char *p = commas; *p; p++)
        if (*p == ':')
            *p = ',';
    n = config_list(commas, &dirs);
    free(commas);
    for (int i = 0; i < n && !found; i++) {
        char *full = xasprintf("%s/%s", dirs[i], name);
        struct stat st;

        found = stat(full, &st) == 0 && S_ISREG(st.st_mode) &&
                access(full, X_OK) == 0;
        free(full);
    }
    config_list_free(&dirs, n);
    return found;
}

static void
pidfile_open(struct supervisor *sup)
{
    char line[32];
    int fd, len;

    sup->pidfile = xasprintf("%s/samotopd.pid", sup->data);
    fd = open(sup->pidfile, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        log_fatal(NULL, "startup", "pidfile=%s reason=%s", log_q(sup->pidfile),
                  log_q(strerror(errno)));
    /* The lock, not the file's existence, says a supervisor is running:
     * a pid file left behind by a crash does not block the next start. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = read(fd, line, sizeof(line) - 1);

        line[n > 0 ? n : 0] = '\0';
        line[strcspn(line, "\n")] = '\0';
        log_fatal(NULL, "startup",
                  "pidfile=%s reason=\"another samotopd "
                  "is running on this data folder\" pid=%s",
                  log_q(sup->pidfile), *line ? line : "?");
    }
    len = snprintf(line, sizeof(line), "%ld\n", (long)sup->self);
    if (ftruncate(fd, 0) != 0 || write(fd, line, (size_t)len) != len)
        log_fatal(NULL, "startup", "pidfile=%s reason=%s", log_q(sup->pidfile),
                  log_q(strerror(errno)));
    sup->pidfd = fd;
}

static void
pidfile_remove(struct supervisor *sup)
{
    if (sup->pidfile == NULL)
        return;
    /* Unlinked while still locked, so a new samotopd never sees our pid
     * in a file it could lock. */
    unlink(sup->pidfile);
    close(sup->pidfd);
    sup->pidfd = -1;
    free(sup->pidfile);
    sup->pidfile = NULL;
}

/* The children's environment is the supervisor's own: whatever was given
 * on the command line is exported so that every child loads the same
 * configuration. */
static void
export_environment(struct supervisor *sup, const struct supervisor_opts *opts)
{
    if (opts->config_path != NULL && *opts->config_path) {
        char *abs = realpath(opts->config_path, NULL);

        if (abs == NULL)
            log_fatal(NULL, "startup", "config=%s reason=%s",
                      log_q(opts->config_path), log_q(strerror(errno)));
        setenv("SAMOTOP_CONFIG", abs, 1);
        free(abs);
    }
    for (int i = 0; i < opts->nsets; i++) {
        const char *eq = strchr(opts->sets[i], '=');
        char *key;

        if (eq == NULL)
            continue; /* samotopd_main.c refuses these */
        key = xstrndup(opts->sets[i], (size_t)(eq - opts->sets[i]));
        setenv(config_env_name(key), eq + 1, 1);
        free(key);
    }
    /* Last, so that it wins over a relative --set data=. */
    setenv("SAMOTOP_DATA", sup->data, 1);
}

static struct child *
child_add(struct supervisor *sup, const char *kind, int instance,
          enum group group, const char *exe)
{
    struct child *c;

    sup->kids =
        xrealloc(sup->kids, sizeof(*sup->kids) * (size_t)(sup->nkids + 1));
    c = &sup->kids[sup->nkids++];
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s/%d", kind, instance);
    c->group = group;
    c->argv[0] = xstrdup(exe);
    return c;
}

/* Several brokers on one host cannot all bind every endpoint: copy n
 * binds the n-th item of each broker.* list (check_config() made sure
 * there are enough), while the actors' bus.* lists name them all. */
static void
broker_endpoints(struct supervisor *sup, struct child *c, int n)
{
    for (size_t k = 0; k < 3; k++) {
        const char *key = broker_keys[k];
        char **items;
        int cnt = config_list(config_str(sup->cfg, key), &items);

        c->env[k] = xasprintf("%s=%s", config_env_name(key), items[n - 1]);
        config_list_free(&items, cnt);
    }
}

/* Each copy of each actor serves its metrics on a port of its own: with
 * metrics.listen = HOST:BASE, copy n (from 1) of the kind in slot k of
 * actor_kinds (bus 0, listener 1, auth 2, guard 3, mailbox 4, queue 5,
 * relay 6) gets BASE + 10 k + n - 1. A copy past the tenth, a port past
 * 65535, or BASE 0 gets port 0: the child picks a free one and logs it. */
static void
metrics_endpoint(struct supervisor *sup, struct child *c, size_t slot, int n)
{
    const char *base = config_str(sup->cfg, "metrics.listen");
    const char *colon = strrchr(base, ':');
    long port;

    if (*base == '\0' || colon == NULL)
        return;
    port = strtol(colon + 1, NULL, 10);
    if (port > 0 && n <= 10)
        port += 10 * (long)slot + n - 1;
    if (port > 65535 || n > 10)
        port = 0;
    c->env[3] = xasprintf("%s=%.*s:%ld", config_env_name("metrics.listen"),
                          (int)(colon - base), base, port);
}

/* Mailbox copies on one host cannot share an internal IMAP door (a ticket
 * is good only at the copy that gave it): with mailbox.imap_internal =
 * HOST:PORT, copy n gets PORT + n - 1; port 0 stays 0 (the kernel picks
 * one, and the copy tells callers which with each ticket). env[0] is free:
 * only brokers use env[0..2]. */
static void
imap_internal_endpoint(struct supervisor *sup, struct child *c, int n)
{
    const char *base = config_str(sup->cfg, "mailbox.imap_internal");
    const char *colon = strrchr(base, ':');
    long port;

    if (*base == '\0' || colon == NULL)
        return;
    port = strtol(colon + 1, NULL, 10);
    if (port > 0)
        port += n - 1;
    if (port > 65535)
        port = 0;
    c->env[0] = xasprintf("%s=%.*s:%ld",
                          config_env_name("mailbox.imap_internal"),
                          (int)(colon - base), base, port);
}

/* Builds the child table and checks that every executable exists before
 * anything is started. */
static void
build_table(struct supervisor *sup)
{
    const config_t *cfg = sup->cfg;
    buf_t missing = BUF_INIT;

    if (config_bool(cfg, "supervisor.redis")) {
        const char *server = config_str(cfg, "supervisor.redis_server");
        struct child *c = child_add(sup, "redis", 1, G_REDIS, server);

        c->argv[1] = xasprintf("%s/redis/redis.conf", sup->data);
        if (!can_exec(server))
            buf_printf(&missing, "%s%s", missing.len ? "," : "", server);
    }
    for (size_t k = 0; k < NKINDS; k++) {
        char key[64];
        long copies;
        char *exe;

        snprintf(key, sizeof(key), "supervisor.%s", actor_kinds[k].name);
        copies = config_int(cfg, key);
        if (copies == 0)
            continue;
        exe = xasprintf("%s/%s", sup->bindir, actor_kinds[k].exe);
        if (!can_exec(exe))
            buf_printf(&missing, "%s%s", missing.len ? "," : "", exe);
        for (long i = 1; i <= copies; i++) {
            struct child *c = child_add(sup, actor_kinds[k].name, (int)i,
                                        actor_kinds[k].group, exe);

            c->argv[1] = xstrdup("--instance");
            c->argv[2] = xasprintf("%ld", i);
            if (actor_kinds[k].group == G_BUS && copies > 1)
                broker_endpoints(sup, c, (int)i);
            metrics_endpoint(sup, c, k, (int)i);
            if (strcmp(actor_kinds[k].name, "mailbox") == 0)
                imap_internal_endpoint(sup, c, (int)i);
        }
        free(exe);
    }
    for (int i = 0; i < sup->nkids; i++)
        sup->kids[i].sup = sup;
    /* Each shard needs a copy (copy N owns shard (N-1) mod shards), or its
     * accounts' mail waits for a worker that never comes. */
    if (config_int(cfg, "supervisor.mailbox") > 0 &&
        config_int(cfg, "mailbox.shard") < 0 &&
        config_int(cfg, "supervisor.mailbox") < shard_mailbox_count(cfg))
        sup_fatal(sup, "startup",
                  "reason=\"fewer mailbox copies than shards\" "
                  "supervisor.mailbox=%ld mailbox.shards=%d",
                  config_int(cfg, "supervisor.mailbox"),
                  shard_mailbox_count(cfg));
    if (missing.len)
        sup_fatal(sup, "startup", "reason=\"missing executable\" exe=%s",
                  log_q(missing.data));
    buf_free(&missing);
}

/* In the child, between fork() and exec(): only what the new program must
 * not inherit is undone here. */
static void __attribute__((noreturn))
child_exec(struct supervisor *sup, struct child *c)
{
    sigset_t none;

    /* If samotopd dies without stopping us, we go too; the getppid()
     * check closes the race where it died before the prctl(). */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != sup->self)
        _exit(1);
    /* The loop blocks the signals it reads through signalfd, and a blocked
     * mask survives exec(), as does an ignored disposition. */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    for (int i = 0; i < 4; i++)
        if (c->env[i])
            putenv(c->env[i]);
    if (c->group == G_REDIS)
        execvp(c->argv[0], c->argv);
    else
        execv(c->argv[0], c->argv);
    log_err(NULL, "exec", "name=%s exe=%s reason=%s", c->name,
            log_q(c->argv[0]), log_q(strerror(errno)));
    _exit(127);
}

static void
on_restart(loop_t *loop, void *arg)
{
    struct child *c = arg;

    (void)loop;
    c->restart = NULL; /* the loop frees the handle after this call */
    if (c->sup->state != S_STOPPING)
        child_start(c->sup, c);
}

static void
schedule_restart(struct supervisor *sup, struct child *c, long delay)
{
    loop_timer_cancel(sup->loop, &c->restart);
    c->restart = loop_timer_add(sup->loop, delay, on_restart, c);
}

static void
child_start(struct supervisor *sup, struct child *c)
{
    pid_t pid;

    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        long delay = supervisor_backoff_next(
            &c->backoff_ms, 0, sup->backoff_min, sup->backoff_max);

        log_err(NULL, "start", "name=%s reason=%s restart_in_ms=%ld", c->name,
                log_q(strerror(errno)), delay);
        schedule_restart(sup, c, delay);
        return;
    }
    if (pid == 0)
        child_exec(sup, c);
    c->pid = pid;
    c->started_ms = now_ms();
    log_info(NULL, "start", "name=%s pid=%ld exe=%s metrics=%s", c->name,
             (long)pid, log_q(c->argv[0]),
             c->env[3] ? strchr(c->env[3], '=') + 1 : "-");
}

static void
start_group(struct supervisor *sup, enum group g)
{
    for (int i = 0; i < sup->nkids; i++)
        if (sup->kids[i].group == g && sup->kids[i].pid == 0 &&
            sup->kids[i].restart == NULL)
            child_start(sup, &sup->kids[i]);
}

static int
group_alive(const struct supervisor *sup, int g)
{
    int n = 0;

    for (int i = 0; i < sup->nkids; i++)
        if ((g < 0 || (int)sup->kids[i].group == g) && sup->kids[i].pid > 0)
            n++;
    return n;
}

/* Sends signo to the running children of group g (all when g < 0) and
 * returns how many it was sent to. */
static int
group_signal(struct supervisor *sup, int g, int signo)
{
    int n = 0;

    for (int i = 0; i < sup->nkids; i++) {
        struct child *c = &sup->kids[i];

        if ((g >= 0 && (int)c->group != g) || c->pid <= 0)
            continue;
        if (signo == SIGKILL)
            log_warn(NULL, "kill", "name=%s pid=%ld", c->name, (long)c->pid);
        if (kill(c->pid, signo) == 0)
            n++;
    }
    return n;
}

static void
format_status(int status, char *out, size_t outlen)
{
    if (WIFEXITED(status))
        snprintf(out, outlen, "exit:%d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, outlen, "signal:%d", WTERMSIG(status));
    else
        snprintf(out, outlen, "unknown:%d", status);
}

static struct child *
child_by_pid(struct supervisor *sup, pid_t pid)
{
    for (int i = 0; i < sup->nkids; i++)
        if (sup->kids[i].pid == pid)
            return &sup->kids[i];
    return NULL;
}

/* Reaps one child: logs its exit and, unless stopping, schedules its
 * restart. */
static void
child_exited(struct supervisor *sup, struct child *c, int status)
{
    long ran = (long)(now_ms() - c->started_ms), delay;
    char st[32];
    pid_t pid = c->pid;

    c->pid = 0;
    format_status(status, st, sizeof(st));
    snprintf(c->last_status, sizeof(c->last_status), "%s", st);
    if (sup->state == S_STOPPING) {
        log_info(NULL, "exit", "name=%s pid=%ld status=%s ran_ms=%ld", c->name,
                 (long)pid, st, ran);
        return;
    }
    delay = supervisor_backoff_next(&c->backoff_ms, ran, sup->backoff_min,
                                    sup->backoff_max);
    log_event(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? LL_INFO : LL_WARN,
              NULL, "exit",
              "name=%s pid=%ld status=%s ran_ms=%ld restart_in_ms=%ld", c->name,
              (long)pid, st, ran, delay);
    schedule_restart(sup, c, delay);
}

/* Waits for every child that has ended, ours or an orphan handed to us as
 * subreaper; returns how many were reaped. */
static int
reap(struct supervisor *sup)
{
    int status, n = 0;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct child *c = child_by_pid(sup, pid);

        n++;
        if (c != NULL)
            child_exited(sup, c, status);
        else
            log_debug(NULL, "reap_orphan", "pid=%ld", (long)pid);
    }
    return n;
}

/* The parent pid of pid from /proc, or -1. */
static pid_t
proc_ppid(pid_t pid)
{
    char path[64], line[512], *rp;
    long ppid = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    if ((f = fopen(path, "re")) == NULL)
        return -1;
    /* The command name may hold spaces and parentheses: the fields after
     * it start past the last ')'. */
    if (fgets(line, sizeof(line), f) != NULL &&
        (rp = strrchr(line, ')')) != NULL)
        if (sscanf(rp + 1, " %*c %ld", &ppid) != 1)
            ppid = -1;
    fclose(f);
    return (pid_t)ppid;
}

/* Kills and reaps whatever the children left behind. As subreaper we
 * inherit their orphans (a shell's last command, a helper), and "stopped"
 * must mean nothing we started is left. */
static void
kill_orphans(struct supervisor *sup)
{
    for (int round = 0; round < 100; round++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        DIR *d = opendir("/proc");
        struct dirent *e;
        int found = 0;

        if (d == NULL)
            return;
        while ((e = readdir(d)) != NULL) {
            char *end;
            long pid = strtol(e->d_name, &end, 10);

            if (*end != '\0' || pid <= 0 || proc_ppid((pid_t)pid) != sup->self)
                continue;
            log_warn(NULL, "kill_orphan", "pid=%ld", pid);
            kill((pid_t)pid, SIGKILL);
            found++;
        }
        closedir(d);
        if (found == 0)
            return;
        nanosleep(&ts, NULL);
        reap(sup);
    }
}

static void
on_sigchld(loop_t *loop, int signo, void *arg)
{
    struct supervisor *sup = arg;

    (void)loop;
    (void)signo;
    reap(sup);
    if (sup->state == S_STOPPING)
        stop_advance(sup);
}

static void
on_stop_timeout(loop_t *loop, void *arg)
{
    struct supervisor *sup = arg;

    (void)loop;
    sup->stop_timer = NULL;
    log_warn(NULL, "stop_timeout", "group=%s timeout_ms=%ld",
             group_names[sup->stop_group], sup->stop_timeout);
    group_signal(sup, sup->stop_group, SIGKILL);
}

/* Moves the stop on to the next group once the current one has gone; ends
 * the loop when Redis, the last, has. */
static void
stop_advance(struct supervisor *sup)
{
    while (group_alive(sup, sup->stop_group) == 0) {
        loop_timer_cancel(sup->loop, &sup->stop_timer);
        if (sup->stop_group == G_REDIS) {
            loop_stop(sup->loop);
            return;
        }
        sup->stop_group--;
        if (group_signal(sup, sup->stop_group, SIGTERM) > 0)
            sup->stop_timer = loop_timer_add(sup->loop, sup->stop_timeout,
                                             on_stop_timeout, sup);
    }
}

static void
on_stop_signal(loop_t *loop, int signo, void *arg)
{
    struct supervisor *sup = arg;

    (void)loop;
    if (sup->state == S_STOPPING) {
        /* Asked twice: whoever asks does not want to wait. */
        log_warn(NULL, "stop_now", "signal=%d", signo);
        group_signal(sup, -1, SIGKILL);
        return;
    }
    log_info(NULL, "stopping", "signal=%d", signo);
    sup->state = S_STOPPING;
    loop_timer_cancel(sup->loop, &sup->ping_timer);
    for (int i = 0; i < sup->nkids; i++)
        loop_timer_cancel(sup->loop, &sup->kids[i].restart);
    sup->stop_group = G__COUNT;
    stop_advance(sup);
}

static void
start_after_redis(struct supervisor *sup)
{
    sup->state = S_RUNNING;
    start_group(sup, G_BUS);
    start_group(sup, G_ACTOR);
    log_info(NULL, "started", "children=%d", sup->nkids);
}

static void
on_ping(loop_t *loop, void *arg)
{
    struct supervisor *sup = arg;
    char why[256] = "";

    sup->ping_timer = NULL;
    if (group_alive(sup, G_REDIS) > 0 &&
        supervisor_redis_ping(sup->cfg, REDIS_POLL_MS, why, sizeof(why)) == 0) {
        log_info(NULL, "redis_ready", "port=%ld",
                 config_int(sup->cfg, "redis.port"));
        start_after_redis(sup);
        return;
    }
    if (group_alive(sup, G_REDIS) == 0 && sup->kids[0].last_status[0])
        snprintf(why, sizeof(why), "redis-server not running, last status %s",
                 sup->kids[0].last_status);
    if (now_ms() >= sup->redis_deadline) {
        char *rlog = xasprintf("%s/redis/redis.log", sup->data);

        sup_fatal(sup, "redis",
                  "reason=\"redis-server did not answer PING within %d ms\" "
                  "last_error=%s redis_log=%s",
                  REDIS_READY_MS, log_q(*why ? why : "not running"),
                  log_q(rlog));
    }
    sup->ping_timer = loop_timer_add(loop, REDIS_POLL_MS, on_ping, sup);
}

static void
start_redis(struct supervisor *sup)
{
    char *dir = xasprintf("%s/redis", sup->data);
    char why[512];

    if (mkdir_p(dir, 0700) != 0)
        sup_fatal(sup, "startup", "dir=%s reason=%s", log_q(dir),
                  log_q(strerror(errno)));
    if (supervisor_redis_write_conf(sup->cfg, dir, sup->kids[0].argv[1], why,
                                    sizeof(why)) != 0)
        sup_fatal(sup, "startup",
                  "reason=\"cannot write redis.conf\" detail=%s", log_q(why));
    free(dir);
    sup->state = S_REDIS_WAIT;
    sup->redis_deadline = now_ms() + REDIS_READY_MS;
    start_group(sup, G_REDIS);
    sup->ping_timer = loop_timer_add(sup->loop, REDIS_POLL_MS, on_ping, sup);
}

static void
kill_all_now(struct supervisor *sup)
{
    int64_t deadline = now_ms() + sup->stop_timeout;

    sup->state = S_STOPPING;
    group_signal(sup, -1, SIGTERM);
    while (group_alive(sup, -1) > 0 && now_ms() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};

        if (reap(sup) == 0)
            nanosleep(&ts, NULL);
    }
    group_signal(sup, -1, SIGKILL);
    while (group_alive(sup, -1) > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        struct child *c;

        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0)
            break;
        if ((c = child_by_pid(sup, pid)) != NULL)
            child_exited(sup, c, status);
    }
    kill_orphans(sup);
}

static void
sup_fatal(struct supervisor *sup, const char *event, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kill_all_now(sup);
    pidfile_remove(sup);
    log_fatal(NULL, event, "%s", msg);
}

long
supervisor_backoff_next(long *backoff_ms, long ran_ms, long min_ms, long max_ms)
{
    long delay = *backoff_ms;

    if (max_ms < min_ms)
        max_ms = min_ms;
    if (delay < min_ms || ran_ms >= BACKOFF_RESET_MS)
        delay = min_ms;
    if (delay > max_ms)
        delay = max_ms;
    *backoff_ms = delay > max_ms / 2 ? max_ms : delay * 2;
    return delay;
}

static void
supervisor_free(struct supervisor *sup)
{
    for (int i = 0; i < sup->nkids; i++)
        for (int a = 0; a < 4; a++) {
            free(sup->kids[i].argv[a]);
            free(sup->kids[i].env[a]);
        }
    free(sup->kids);
    free(sup->data);
    free(sup->bindir);
    loop_destroy(&sup->loop);
}

/* Checks what config_load() cannot, since it needs two keys at once;
 * stops start-up as a bad value does, with status 2. */
static void
check_config(const config_t *cfg)
{
    long copies = config_int(cfg, "supervisor.bus");

    if (copies <= 1)
        return;
    for (size_t k = 0; k < 3; k++) {
        char **items, why[256];
        int cnt = config_list(config_str(cfg, broker_keys[k]), &items);

        config_list_free(&items, cnt);
        if (cnt >= copies)
            continue;
        snprintf(why, sizeof(why),
                 "%s: %d endpoint(s) for supervisor.bus=%ld brokers; each "
                 "broker binds its own, so give one per broker",
                 broker_keys[k], cnt, copies);
        log_event(LL_FATAL, NULL, "config", "reason=%s", log_q(why));
        exit(2);
    }
}

int
supervisor_main(const config_t *cfg, const struct supervisor_opts *opts)
{
    struct supervisor sup = {0};
    const char *bin = config_str(cfg, "supervisor.bin");
    char *data;

    sup.cfg = cfg;
    sup.self = getpid();
    sup.pidfd = -1;
    sup.backoff_min = config_int(cfg, "supervisor.backoff_min_ms");
    sup.backoff_max = config_int(cfg, "supervisor.backoff_max_ms");
    sup.stop_timeout = config_int(cfg, "supervisor.stop_timeout_ms");
    check_config(cfg);

    data = make_absolute(config_str(cfg, "data"));
    if (mkdir_p(data, 0755) != 0 || (sup.data = realpath(data, NULL)) == NULL)
        log_fatal(NULL, "startup", "data=%s reason=%s", log_q(data),
                  log_q(strerror(errno)));
    free(data);
    if (*bin) {
        if ((sup.bindir = realpath(bin, NULL)) == NULL)
            log_fatal(NULL, "startup", "key=supervisor.bin bin=%s reason=%s",
                      log_q(bin), log_q(strerror(errno)));
    } else {
        sup.bindir = self_dir();
    }
    export_environment(&sup, opts);
    /* A redis-server gone between PING and our write must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    /* Orphans of our children become ours, so that a stop can leave
     * nothing behind (see kill_orphans()). */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        log_warn(NULL, "subreaper", "reason=%s", log_q(strerror(errno)));

    if ((sup.loop = loop_new()) == NULL)
        log_fatal(NULL, "startup", "reason=\"no epoll: %s\"", strerror(errno));
    /* The signals are blocked before the first fork, so no child's exit
     * can go unnoticed. */
    if (loop_signal_add(sup.loop, SIGCHLD, on_sigchld, &sup) != 0 ||
        loop_signal_add(sup.loop, SIGTERM, on_stop_signal, &sup) != 0 ||
        loop_signal_add(sup.loop, SIGINT, on_stop_signal, &sup) != 0)
        log_fatal(NULL, "startup", "reason=\"no signalfd: %s\"",
                  strerror(errno));

    pidfile_open(&sup);
    build_table(&sup);
    log_info(NULL, "starting", "pid=%ld data=%s bin=%s children=%d",
             (long)sup.self, log_q(sup.data), log_q(sup.bindir), sup.nkids);

    if (sup.nkids > 0 && sup.kids[0].group == G_REDIS)
        start_redis(&sup);
    else
        start_after_redis(&sup);

    if (loop_run(sup.loop) != 0)
        sup_fatal(&sup, "loop", "reason=%s", log_q(strerror(errno)));
    if (group_alive(&sup, -1) != 0)
        sup_fatal(&sup, "bug", "reason=\"loop ended with children alive\"");
    kill_orphans(&sup);
    pidfile_remove(&sup);
    supervisor_free(&sup);
    log_info(NULL, "stopped", "status=0");
    return 0;
}
