/*
 * test_supervisor.c - samotopd as a real process, with the real actors.
 *
 * Each test starts the samotopd built beside the other executables
 * ($SAMOTOP_BIN) with a data folder of its own under /tmp and its own
 * ports, all in 16000-16999, so it never meets a running local profile.
 * The ports are found by remapping every port that `samotopd
 * --print-config` shows in a default, so a key added later is moved too.
 * samotopd gets PR_SET_PDEATHSIG, so a test that fails half-way still
 * stops it and everything it started. The log of samotopd and its
 * children is copied into the test's output at the end; the folder is
 * removed unless the test failed or SAMOTOP_TEST_KEEP is set.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <hiredis/hiredis.h>

#include "lib/clock.h"
#include "tests/testlib.h"

#define PORT_LOW 16000
#define PORT_HIGH 16999
#define PORT_SLOT 20 /* ports one test may use */
#define MAX_ENV 64
#define MAX_SEEN 256
#define BACKOFF_MIN_MS 300
#define STR(x) #x
#define XSTR(x) STR(x)
#define STOP_TIMEOUT_MS 8000

/* What samotopd starts, by the name the test sees in /proc. */
static const char *const expected[] = {
    "redis-server",  "samotop-bus",     "samotop-listener", "samotop-auth",
    "samotop-guard", "samotop-mailbox", "samotop-queue",    "samotop-relay",
};
#define NEXPECTED (sizeof(expected) / sizeof(expected[0]))

struct proc {
    pid_t pid;
    unsigned long long start; /* field 22 of stat: tells pid reuse apart */
    char name[64];
};

/* One samotopd under test. */
struct sd {
    char dir[128];  /* the test's temporary folder */
    char data[160]; /* $dir/data */
    char log[160];  /* samotopd's (and its children's) stderr */
    char *env[MAX_ENV];
    int nenv;
    int redis_port;
    int port_base, nports; /* the slot, and how many of it are in use */
    pid_t pid;
    struct proc seen[MAX_SEEN];
    int nseen;
};

static const char *
bin_dir(void)
{
    const char *bin = getenv("SAMOTOP_BIN");

    ck_assert_msg(bin != NULL && *bin, "SAMOTOP_BIN is not set");
    return bin;
}

static char *
bin_path(const char *exe)
{
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];

    snprintf(p, sizeof(path[0]), "%s/%s", bin_dir(), exe);
    return p;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static bool
port_free(int port)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* The first port of a slot of PORT_SLOT free ports, starting the search
 * from our pid so that tests run side by side (the sanitizer build's and
 * the plain one's) rarely probe the same slot. */
static int
pick_ports(void)
{
    int nslots = (PORT_HIGH - PORT_LOW + 1) / PORT_SLOT;

    for (int i = 0; i < nslots; i++) {
        int base = PORT_LOW + ((getpid() + i) % nslots) * PORT_SLOT;
        bool ok = true;

        for (int p = base; p < base + PORT_SLOT && ok; p++)
            ok = port_free(p);
        if (ok)
            return base;
    }
    ck_abort_msg("no free port slot in %d-%d", PORT_LOW, PORT_HIGH);
    return -1;
}

/* Sets name=value in the environment samotopd will get, replacing any
 * earlier value (getenv() would find the first). */
static void
env_add(struct sd *sd, const char *name, const char *value)
{
    size_t n = strlen(name);
    char *entry;
    int i;

    if (asprintf(&entry, "%s=%s", name, value) < 0)
        ck_abort_msg("out of memory");
    for (i = 0; i < sd->nenv; i++)
        if (strncmp(sd->env[i], name, n) == 0 && sd->env[i][n] == '=')
            break;
    if (i < sd->nenv) {
        free(sd->env[i]);
        sd->env[i] = entry;
        return;
    }
    ck_assert_int_lt(sd->nenv, MAX_ENV - 1);
    sd->env[sd->nenv++] = entry;
    sd->env[sd->nenv] = NULL;
}

static const char *
env_get(const struct sd *sd, const char *name)
{
    size_t n = strlen(name);

    for (int i = sd->nenv - 1; i >= 0; i--)
        if (strncmp(sd->env[i], name, n) == 0 && sd->env[i][n] == '=')
            return sd->env[i] + n + 1;
    return NULL;
}

/* The environment every samotopd of the tests gets: this process's, less
 * any SAMOTOP_* that could point it at a real profile. */
static void
env_base(struct sd *sd)
{
    extern char **environ;

    for (char **e = environ; *e; e++)
        if (strncmp(*e, "SAMOTOP_", 8) != 0 && sd->nenv < MAX_ENV - 24) {
            sd->env[sd->nenv++] = strdup(*e);
            sd->env[sd->nenv] = NULL;
        }
}

/* Runs argv with envp, stdout and stderr into out_path; returns the wait
 * status, or -1 when it did not end within timeout_ms (it is then
 * killed). */
static int
run(char *const argv[], char *const envp[], const char *out_path,
    long timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    int status;
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fd, 1);
        dup2(fd, 2);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (clock_mono_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        sleep_ms(20);
    }
    return status;
}

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *s = NULL;
    size_t n = 0;

    if (f == NULL)
        return strdup("");
    if (getdelim(&s, &n, '\0', f) < 0) {
        free(s);
        s = strdup("");
    }
    fclose(f);
    return s;
}

/* Moves every default port that `samotopd --print-config` shows to the
 * slot at base: "127.0.0.1:2525" and "tcp://127.0.0.1:5570" alike, the same
 * default to the same new port, so that bus.clients and broker.clients
 * still meet. */
static void
env_ports(struct sd *sd, int base)
{
    char out[200], *dump, *line, *save = NULL;
    char *argv[] = {bin_path("samotopd"), "--print-config", NULL};
    int from[PORT_SLOT], nports = 0, status;

    snprintf(out, sizeof(out), "%s/print-config.txt", sd->dir);
    status = run(argv, sd->env, out, 10000);
    ck_assert_msg(status == 0, "samotopd --print-config: status %d", status);
    dump = slurp(out);
    for (line = strtok_r(dump, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char key[128], value[512], env[128], *hash = strstr(line, "\t# ");
        char newval[600] = "", *item, *isave = NULL;
        bool changed = false;

        /* "key = value\t# ENV_NAME; help" */
        if (hash == NULL ||
            sscanf(line, "%127s = %511[^\t]", key, value) != 2 ||
            sscanf(hash + 3, "%127[^;]", env) != 1)
            continue;
        for (item = strtok_r(value, ",", &isave); item;
             item = strtok_r(NULL, ",", &isave)) {
            char *colon = strrchr(item, ':'), *end;
            long port;
            int idx = -1;

            if (strcmp(key, "redis.port") == 0)
                colon = item - 1;
            if (colon == NULL)
                goto keep;
            port = strtol(colon + 1, &end, 10);
            if (*end || port < 1 || port > 65535 || colon[1] == '\0')
                goto keep;
            for (int i = 0; i < nports; i++)
                if (from[i] == port)
                    idx = i;
            if (idx < 0) {
                ck_assert_int_lt(nports, PORT_SLOT);
                from[nports] = (int)port;
                idx = nports++;
            }
            snprintf(newval + strlen(newval), sizeof(newval) - strlen(newval),
                     "%s%.*s%d", *newval ? "," : "", (int)(colon + 1 - item),
                     item, base + idx);
            changed = true;
            continue;
        keep:
            snprintf(newval + strlen(newval), sizeof(newval) - strlen(newval),
                     "%s%s", *newval ? "," : "", item);
        }
        if (changed)
            env_add(sd, env, newval);
    }
    free(dump);
    /* The keys named in the brief of this test must have been moved. */
    ck_assert_ptr_nonnull(env_get(sd, "SAMOTOP_REDIS_PORT"));
    ck_assert_ptr_nonnull(env_get(sd, "SAMOTOP_BUS_CLIENTS"));
    ck_assert_ptr_nonnull(env_get(sd, "SAMOTOP_BUS_WORKERS"));
    ck_assert_ptr_nonnull(env_get(sd, "SAMOTOP_BUS_TRACE"));
    ck_assert_ptr_nonnull(env_get(sd, "SAMOTOP_BROKER_CLIENTS"));
    ck_assert_ptr_nonnull(env_get(sd, "SAMOTOP_LISTEN_MTA"));
    ck_assert_str_eq(env_get(sd, "SAMOTOP_BUS_CLIENTS"),
                     env_get(sd, "SAMOTOP_BROKER_CLIENTS"));
    sd->redis_port = atoi(env_get(sd, "SAMOTOP_REDIS_PORT"));
    sd->port_base = base;
    sd->nports = nports;
    for (int i = 0; i < sd->nenv; i++) {
        char *eq = strchr(sd->env[i], '=');

        if (strncmp(sd->env[i], "SAMOTOP_", 8) != 0)
            continue;
        /* Never the ports kept for others (DESIGN.md). */
        for (char *p = eq; (p = strchr(p, ':')) != NULL; p++) {
            int port = atoi(p + 1);

            ck_assert_msg(port < 1 || (port >= PORT_LOW && port <= PORT_HIGH),
                          "%s: port outside %d-%d", sd->env[i], PORT_LOW,
                          PORT_HIGH);
        }
    }
}

/* The one samotopd of this test process (each test runs in a fork of its
 * own), static so that the exit handler can still reach it. */
static struct sd the_sd;
static bool the_sd_passed;

/* Runs when the test process exits, passed or failed (a failed check
 * exits at once): copies the log of samotopd and its children into the
 * test's output, where ctest keeps it and tests/run looks for sanitizer
 * reports, then removes the folder unless the test failed or
 * SAMOTOP_TEST_KEEP is set. */
static void
sd_at_exit(void)
{
    struct sd *sd = &the_sd;
    char *log = slurp(sd->log);

    fprintf(stderr, "---- %s ----\n%s---- end of %s ----\n", sd->log, log,
            sd->log);
    free(log);
    if (the_sd_passed && getenv("SAMOTOP_TEST_KEEP") == NULL)
        test_rm_tree(sd->dir);
    else
        fprintf(stderr, "test_supervisor: kept %s\n", sd->dir);
    for (int i = 0; i < sd->nenv; i++)
        free(sd->env[i]);
    sd->nenv = 0;
}

static struct sd *
sd_init(void)
{
    struct sd *sd = &the_sd;
    char ms[32];

    memset(sd, 0, sizeof(*sd));
    snprintf(sd->dir, sizeof(sd->dir), "/tmp/samotop-test-sup-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(sd->dir));
    ck_assert(snprintf(sd->data, sizeof(sd->data), "%s/data", sd->dir) <
              (int)sizeof(sd->data));
    ck_assert(snprintf(sd->log, sizeof(sd->log), "%s/samotopd.log", sd->dir) <
              (int)sizeof(sd->log));
    atexit(sd_at_exit);
    env_base(sd);
    env_ports(sd, pick_ports());
    env_add(sd, "SAMOTOP_DATA", sd->data);
    snprintf(ms, sizeof(ms), "%d", STOP_TIMEOUT_MS);
    env_add(sd, "SAMOTOP_SUPERVISOR_STOP_TIMEOUT_MS", ms);
    fprintf(stderr, "test_supervisor: folder %s\n", sd->dir);
    return sd;
}

/* Ends a test that passed: no sanitizer may have spoken in any process. */
static void
sd_done(struct sd *sd)
{
    char *log = slurp(sd->log);

    ck_assert_msg(strstr(log, "ERROR: AddressSanitizer") == NULL &&
                      strstr(log, "ERROR: LeakSanitizer") == NULL &&
                      strstr(log, "runtime error:") == NULL,
                  "sanitizer report in %s", sd->log);
    free(log);
    the_sd_passed = true;
}

/* Starts samotopd with extra arguments (NULL-terminated). */
static void
sd_start(struct sd *sd, char *const extra[])
{
    char *argv[16] = {bin_path("samotopd")};
    int n = 1;
    pid_t parent = getpid();

    for (; extra && *extra && n < 15; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    sd->pid = fork();
    ck_assert_int_ge(sd->pid, 0);
    if (sd->pid == 0) {
        int fd = open(sd->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

        /* If this test dies, samotopd is told to stop and takes its
         * children with it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        dup2(fd, 1);
        dup2(fd, 2);
        execve(argv[0], argv, sd->env);
        _exit(127);
    }
}

static bool
proc_read(pid_t pid, struct proc *p, pid_t *ppid)
{
    char path[64], line[1024], *rp, exe[512];
    long pp;
    ssize_t n;
    FILE *f;
    int ok;

    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    if ((f = fopen(path, "r")) == NULL)
        return false;
    ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    if (!ok || (rp = strrchr(line, ')')) == NULL)
        return false;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime cutime cstime priority nice threads itrealvalue starttime */
    if (sscanf(rp + 2,
               "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u "
               "%*d %*d %*d %*d %*d %*d %llu",
               &pp, &p->start) != 2)
        return false;
    *ppid = (pid_t)pp;
    p->pid = pid;
    /* redis-server is a link to redis-check-rdb, so its comm names it; an
     * actor's comm is cut at 15 characters, so its exe does. */
    snprintf(path, sizeof(path), "/proc/%ld/exe", (long)pid);
    n = readlink(path, exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = '\0';
    if (strrchr(exe, '/') &&
        strncmp(strrchr(exe, '/') + 1, "samotop", 7) == 0) {
        snprintf(p->name, sizeof(p->name), "%s", strrchr(exe, '/') + 1);
    } else {
        snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
        if ((f = fopen(path, "r")) == NULL)
            return false;
        ok = fgets(p->name, sizeof(p->name), f) != NULL;
        fclose(f);
        p->name[strcspn(p->name, "\n")] = '\0';
    }
    return true;
}

/* The children of samotopd now, into kids; returns how many. Every one is
 * also remembered in sd->seen. */
static int
children(struct sd *sd, struct proc *kids, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL && n < max) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        struct proc p;
        pid_t ppid;
        bool known = false;

        if (*end || pid <= 0 || !proc_read((pid_t)pid, &p, &ppid) ||
            ppid != sd->pid)
            continue;
        kids[n++] = p;
        for (int i = 0; i < sd->nseen; i++)
            if (sd->seen[i].pid == p.pid && sd->seen[i].start == p.start)
                known = true;
        if (!known && sd->nseen < MAX_SEEN)
            sd->seen[sd->nseen++] = p;
    }
    closedir(d);
    return n;
}

static const struct proc *
find_kid(const struct proc *kids, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(kids[i].name, name) == 0)
            return &kids[i];
    return NULL;
}

static int
count_kids(const struct proc *kids, int n, const char *name)
{
    int c = 0;

    for (int i = 0; i < n; i++)
        c += strcmp(kids[i].name, name) == 0;
    return c;
}

/* Waits until exactly want[i] children called expected[i] run (NULL want:
 * one of each); returns the time it took. */
static long
wait_children(struct sd *sd, const int *want, struct proc *kids, int *nkids,
              long timeout_ms)
{
    int64_t t0 = clock_mono_ms();

    for (;;) {
        int status = 0;
        size_t ok = 0, i;

        ck_assert_msg(waitpid(sd->pid, &status, WNOHANG) == 0,
                      "samotopd ended at start-up, status %d; see %s", status,
                      sd->log);
        *nkids = children(sd, kids, MAX_SEEN);
        for (i = 0; i < NEXPECTED; i++)
            ok += count_kids(kids, *nkids, expected[i]) == (want ? want[i] : 1);
        if (ok == NEXPECTED)
            return (long)(clock_mono_ms() - t0);
        for (i = 0; i < NEXPECTED; i++)
            if (count_kids(kids, *nkids, expected[i]) != (want ? want[i] : 1))
                break;
        ck_assert_msg(clock_mono_ms() - t0 < timeout_ms,
                      "%d of %s, want %d, after %ld ms; see %s",
                      count_kids(kids, *nkids, expected[i]), expected[i],
                      want ? want[i] : 1, timeout_ms, sd->log);
        sleep_ms(50);
    }
}

/* Checks that the children in kids are all still there, same pids, after a
 * while: started is not enough, they must not crash-loop. */
static void
check_stay_up(struct sd *sd, const struct proc *kids, int nkids)
{
    struct proc again[MAX_SEEN];
    int n;

    sleep_ms(1500);
    n = children(sd, again, MAX_SEEN);
    for (int i = 0; i < nkids; i++) {
        bool still = false;

        for (int j = 0; j < n; j++)
            still |=
                again[j].pid == kids[i].pid && again[j].start == kids[i].start;
        ck_assert_msg(still, "%s pid %ld did not stay up; see %s", kids[i].name,
                      (long)kids[i].pid, sd->log);
    }
    ck_assert_int_eq(n, nkids);
}

/* Whether the environment of pid holds the NAME=value line want. */
static bool
environ_has(pid_t pid, const char *want)
{
    char path[64], *s, *p;
    size_t n = 0, len;
    FILE *f;
    bool has = false;

    snprintf(path, sizeof(path), "/proc/%ld/environ", (long)pid);
    if ((f = fopen(path, "r")) == NULL)
        return false;
    s = malloc(1 << 20);
    n = fread(s, 1, (1 << 20) - 1, f);
    fclose(f);
    s[n] = '\0';
    for (p = s; p < s + n; p += len + 1) {
        len = strlen(p);
        if (strcmp(p, want) == 0)
            has = true;
    }
    free(s);
    return has;
}

/* Kills the child called name with SIGKILL and waits for its successor;
 * returns the time until the new one ran. */
static long
kill_and_wait_back(struct sd *sd, const char *name, pid_t *old_out,
                   pid_t *new_out)
{
    struct proc kids[MAX_SEEN];
    const struct proc *k;
    int n = children(sd, kids, MAX_SEEN);
    int64_t t0;
    pid_t old;

    k = find_kid(kids, n, name);
    ck_assert_msg(k != NULL, "%s is not running", name);
    old = k->pid;
    ck_assert_int_eq(kill(old, SIGKILL), 0);
    t0 = clock_mono_ms();
    for (;;) {
        n = children(sd, kids, MAX_SEEN);
        k = find_kid(kids, n, name);
        if (k != NULL && k->pid != old) {
            *old_out = old;
            *new_out = k->pid;
            return (long)(clock_mono_ms() - t0);
        }
        ck_assert_msg(clock_mono_ms() - t0 < 10000,
                      "%s not back after 10 s; see %s", name, sd->log);
        sleep_ms(20);
    }
}

/* The byte offset of the first line holding every one of the words, or
 * -1. */
static long
log_line_at(const char *log, const char *w1, const char *w2)
{
    for (const char *line = log; *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        char *copy = strndup(line, len);
        bool hit = strstr(copy, w1) && (w2 == NULL || strstr(copy, w2));

        free(copy);
        if (hit)
            return (long)(line - log);
        if (eol == NULL)
            break;
        line = eol + 1;
    }
    return -1;
}

static void
redis_check_config(int port, const char *key, const char *want)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r;

    ck_assert_msg(c != NULL && !c->err, "redis on %d: %s", port,
                  c ? c->errstr : "no context");
    r = redisCommand(c, "CONFIG GET %s", key);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
    ck_assert_int_eq((int)r->elements, 2);
    ck_assert_msg(strcmp(r->element[1]->str, want) == 0, "%s: got %s, want %s",
                  key, r->element[1]->str, want);
    freeReplyObject(r);
    redisFree(c);
}

/* Asks the services (NULL: every actor) for their ping over the bus with
 * samotop-admin, retrying while the workers register; returns the time
 * until all answered. */
static long
admin_ping(struct sd *sd, char *const services[])
{
    char out[200], *argv[16] = {bin_path("samotop-admin"), "ping"};
    int64_t t0 = clock_mono_ms();
    int status;

    for (int i = 0; services && services[i] && i < 13; i++)
        argv[2 + i] = services[i];
    snprintf(out, sizeof(out), "%s/admin-ping.txt", sd->dir);
    for (;;) {
        status = run(argv, sd->env, out, 15000);
        if (status == 0)
            return (long)(clock_mono_ms() - t0);
        if (clock_mono_ms() - t0 > 10000) {
            char *s = slurp(out);

            ck_abort_msg("samotop-admin ping: status %d:\n%s", status, s);
        }
        sleep_ms(200);
    }
}

/* Sends SIGTERM to samotopd and checks that it exits 0 within the stop
 * timeout, leaving no process it started and no pid file; returns the
 * time it took. */
static long
sd_stop(struct sd *sd)
{
    int64_t t0 = clock_mono_ms();
    char pidfile[200];
    int status;

    ck_assert_int_eq(kill(sd->pid, SIGTERM), 0);
    while (waitpid(sd->pid, &status, WNOHANG) == 0) {
        ck_assert_msg(clock_mono_ms() - t0 < STOP_TIMEOUT_MS,
                      "samotopd still running %d ms after SIGTERM; see %s",
                      STOP_TIMEOUT_MS, sd->log);
        sleep_ms(20);
    }
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "samotopd ended with status %d; see %s", status, sd->log);
    for (int i = 0; i < sd->nseen; i++) {
        struct proc p;
        pid_t ppid;

        ck_assert_msg(!proc_read(sd->seen[i].pid, &p, &ppid) ||
                          p.start != sd->seen[i].start,
                      "%s pid %ld is still running", sd->seen[i].name,
                      (long)sd->seen[i].pid);
    }
    snprintf(pidfile, sizeof(pidfile), "%s/samotopd.pid", sd->data);
    ck_assert_int_ne(access(pidfile, F_OK), 0);
    return (long)(clock_mono_ms() - t0);
}

START_TEST(test_lifecycle)
{
    struct sd *sd;
    struct proc kids[MAX_SEEN];
    char *extra[] = {"--set", "supervisor.backoff_min_ms=" XSTR(BACKOFF_MIN_MS),
                     NULL};
    char want[256], pidfile[200], delay[64], *log;
    int nkids;
    long ms, at_stop, at_actor, at_bus, at_redis;
    pid_t old, new;

    sd = sd_init();
    sd_start(sd, extra);

    /* (a) every process runs as a child of samotopd... */
    ms = wait_children(sd, NULL, kids, &nkids, 20000);
    fprintf(stderr, "test_supervisor: all children up after %ld ms\n", ms);
    /* ...and stays up, rather than crash-looping. */
    check_stay_up(sd, kids, nkids);
    snprintf(pidfile, sizeof(pidfile), "%s/samotopd.pid", sd->data);
    {
        char *s = slurp(pidfile);

        ck_assert_int_eq(atoi(s), sd->pid);
        free(s);
    }
    /* Children see the --set and the absolute data folder. */
    {
        const struct proc *auth = find_kid(kids, nkids, "samotop-auth");

        ck_assert(environ_has(
            auth->pid,
            "SAMOTOP_SUPERVISOR_BACKOFF_MIN_MS=" XSTR(BACKOFF_MIN_MS)));
        snprintf(want, sizeof(want), "SAMOTOP_DATA=%s", sd->data);
        ck_assert(environ_has(auth->pid, want));
    }

    /* (c) Redis writes every command to disk before it answers. */
    redis_check_config(sd->redis_port, "appendfsync", "always");
    redis_check_config(sd->redis_port, "appendonly", "yes");

    /* Every actor answers its ping through the broker. */
    if (access(bin_path("samotop-admin"), X_OK) == 0) {
        ms = admin_ping(sd, NULL);
        fprintf(stderr, "test_supervisor: admin ping ok after %ld ms\n", ms);
    }

    /* (b) an actor killed is back soon, with the shortest backoff... */
    ms = kill_and_wait_back(sd, "samotop-auth", &old, &new);
    fprintf(stderr, "test_supervisor: auth back after %ld ms\n", ms);
    ck_assert_msg(ms < 5000, "auth back after %ld ms, want < 5000", ms);
    snprintf(want, sizeof(want),
             "event=exit name=auth/1 pid=%ld status=signal:9", (long)old);
    log = slurp(sd->log);
    snprintf(delay, sizeof(delay), "restart_in_ms=%d", BACKOFF_MIN_MS);
    ck_assert_msg(log_line_at(log, want, delay) >= 0,
                  "no line \"%s ... %s\" in %s", want, delay, sd->log);
    free(log);
    /* ...and one that dies again at once waits twice as long. */
    ms = kill_and_wait_back(sd, "samotop-auth", &old, &new);
    snprintf(want, sizeof(want),
             "event=exit name=auth/1 pid=%ld status=signal:9", (long)old);
    log = slurp(sd->log);
    snprintf(delay, sizeof(delay), "restart_in_ms=%d", 2 * BACKOFF_MIN_MS);
    ck_assert_msg(log_line_at(log, want, delay) >= 0,
                  "no line \"%s ... %s\" in %s", want, delay, sd->log);
    free(log);
    ck_assert_msg(ms >= 2 * BACKOFF_MIN_MS,
                  "restarted after %ld ms, want >= %d", ms, 2 * BACKOFF_MIN_MS);
    /* Redis is supervised the same way. */
    ms = kill_and_wait_back(sd, "redis-server", &old, &new);
    ck_assert_msg(ms < 5000, "redis back after %ld ms, want < 5000", ms);
    wait_children(sd, NULL, kids, &nkids, 10000);

    /* (d) SIGTERM stops everything, actors first and Redis last. */
    ms = sd_stop(sd);
    fprintf(stderr, "test_supervisor: stopped after %ld ms\n", ms);
    ck_assert_msg(sd->nseen >= (int)NEXPECTED + 3, "saw %d processes",
                  sd->nseen);
    log = slurp(sd->log);
    at_stop = log_line_at(log, "event=stopping", NULL);
    at_actor = -1;
    for (size_t i = 0; i < NEXPECTED; i++) {
        char w[64];
        long at = -1;

        if (strncmp(expected[i], "samotop-", 8) != 0 ||
            strcmp(expected[i], "samotop-bus") == 0)
            continue;
        snprintf(w, sizeof(w), "event=exit name=%s/1", expected[i] + 8);
        /* The last exit of each actor is the one of the stop. */
        for (const char *p = log; (p = strstr(p, w)) != NULL; p++)
            at = (long)(p - log);
        ck_assert_msg(at > at_stop, "%s: no exit at the stop", expected[i]);
        at_actor = at > at_actor ? at : at_actor;
    }
    at_bus = log_line_at(log + at_stop, "event=exit name=bus/1", NULL);
    at_redis = log_line_at(log + at_stop, "event=exit name=redis/1", NULL);
    ck_assert_msg(at_stop >= 0 && at_bus >= 0 && at_redis >= 0,
                  "stop not logged; see %s", sd->log);
    ck_assert_msg(at_actor < at_stop + at_bus, "bus stopped before actors");
    ck_assert_msg(at_bus < at_redis, "redis stopped before the bus");
    ck_assert(log_line_at(log, "event=stopped", NULL) > at_stop);
    free(log);
    sd_done(sd);
}
END_TEST

/* A configuration file, with copy counts other than one: two auth, no
 * relay, and two brokers, each binding its own item of the broker.*
 * lists. */
START_TEST(test_config_file)
{
    /* In the order of expected[]. */
    static const int want[NEXPECTED] = {1, 2, 1, 2, 1, 1, 1, 0};
    static const char *const lists[] = {"CLIENTS", "WORKERS", "TRACE"};
    char *extra[] = {"--config", "samotop.conf", NULL};
    char *services[] = {"listener", "auth", "guard", "mailbox", "queue", NULL};
    char conf[300], *abs, want_env[400], bus_env[200], second[3][64];
    struct proc kids[MAX_SEEN];
    int nkids, bus_first = 0, bus_second = 0;
    struct sd *sd;
    FILE *f;
    long ms;

    sd = sd_init();
    for (int k = 0; k < 3; k++) {
        char bname[64], cname[64], list[200];

        snprintf(bname, sizeof(bname), "SAMOTOP_BROKER_%s", lists[k]);
        snprintf(cname, sizeof(cname), "SAMOTOP_BUS_%s", lists[k]);
        ck_assert_int_lt(sd->nports + k, PORT_SLOT);
        snprintf(second[k], sizeof(second[k]), "tcp://127.0.0.1:%d",
                 sd->port_base + sd->nports + k);
        snprintf(list, sizeof(list), "%s,%s", env_get(sd, bname), second[k]);
        env_add(sd, bname, list);
        env_add(sd, cname, list);
    }
    snprintf(conf, sizeof(conf), "%s/samotop.conf", sd->dir);
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "# written by test_supervisor\n"
               "[supervisor]\n"
               "auth = 2\n"
               "relay = 0\n"
               "bus = 2\n");
    fclose(f);
    /* A relative --config: children must get it absolute. */
    ck_assert_int_eq(chdir(sd->dir), 0);
    sd_start(sd, extra);

    ms = wait_children(sd, want, kids, &nkids, 20000);
    fprintf(stderr, "test_supervisor: all children up after %ld ms\n", ms);
    check_stay_up(sd, kids, nkids);
    abs = realpath(conf, NULL);
    ck_assert_ptr_nonnull(abs);
    snprintf(want_env, sizeof(want_env), "SAMOTOP_CONFIG=%s", abs);
    free(abs);
    for (int i = 0; i < nkids; i++) {
        const char *clients = env_get(sd, "SAMOTOP_BROKER_CLIENTS");

        /* redis-server writes its title over its environment. */
        if (strncmp(kids[i].name, "samotop-", 8) != 0)
            continue;
        ck_assert_msg(environ_has(kids[i].pid, want_env), "%s pid %ld: no %s",
                      kids[i].name, (long)kids[i].pid, want_env);
        if (strcmp(kids[i].name, "samotop-bus") != 0)
            continue;
        snprintf(bus_env, sizeof(bus_env), "SAMOTOP_BROKER_CLIENTS=%.*s",
                 (int)strcspn(clients, ","), clients);
        bus_first += environ_has(kids[i].pid, bus_env);
        snprintf(bus_env, sizeof(bus_env), "SAMOTOP_BROKER_CLIENTS=%s",
                 second[0]);
        bus_second += environ_has(kids[i].pid, bus_env);
    }
    ck_assert_msg(bus_first == 1 && bus_second == 1,
                  "brokers on the first endpoint %d, on the second %d, "
                  "want 1 and 1",
                  bus_first, bus_second);
    if (access(bin_path("samotop-admin"), X_OK) == 0)
        admin_ping(sd, services);
    ms = sd_stop(sd);
    fprintf(stderr, "test_supervisor: stopped after %ld ms\n", ms);
    sd_done(sd);
}
END_TEST

/* A start-up that must fail: how, and what it must say. */
struct bad_start {
    const char *label;
    const char *env;     /* NAME=value added to the environment, or NULL */
    const char *args[3]; /* extra arguments */
    int want_status;
    const char *want_text; /* in stderr */
};

static const struct bad_start bad_starts[] = {
    {"redis port out of range",
     "SAMOTOP_REDIS_PORT=99999",
     {NULL},
     2,
     "redis.port"},
    {"bad endpoint in the environment",
     "SAMOTOP_BUS_CLIENTS=udp://x:1",
     {NULL},
     2,
     "bus.clients"},
    {"--set not an integer",
     NULL,
     {"--set", "supervisor.auth=many", NULL},
     2,
     "supervisor.auth"},
    {"--set unknown key",
     NULL,
     {"--set", "no.such.key=1", NULL},
     2,
     "no.such.key"},
    {"--set without =", NULL, {"--set", "redis.port", NULL}, 2, "key=value"},
    {"config file missing",
     NULL,
     {"--config", "/nonexistent/samotop.conf", NULL},
     2,
     "/nonexistent/samotop.conf"},
    {"unknown option", NULL, {"--frobnicate", NULL}, 2, "usage"},
    {"two brokers, one endpoint each",
     NULL,
     {"--set", "supervisor.bus=2", NULL},
     2,
     "broker.clients"},
    {"missing executable",
     NULL,
     {"--set", "supervisor.bin=@EMPTY@", NULL},
     1,
     "samotop-bus"},
};

START_TEST(test_bad_start)
{
    const struct bad_start *row = &bad_starts[_i];
    char *argv[8] = {bin_path("samotopd")}, empty[200], *text;
    char setbin[260];
    struct sd *sd;
    int n = 1, status;

    sd = sd_init();
    snprintf(empty, sizeof(empty), "%s/empty", sd->dir);
    ck_assert_int_eq(mkdir(empty, 0755), 0);
    snprintf(setbin, sizeof(setbin), "supervisor.bin=%s", empty);
    for (int i = 0; row->args[i]; i++)
        argv[n++] = strcmp(row->args[i], "supervisor.bin=@EMPTY@") == 0
                        ? setbin
                        : (char *)row->args[i];
    argv[n] = NULL;
    if (row->env) {
        char *name = strndup(row->env, strcspn(row->env, "="));

        env_add(sd, name, strchr(row->env, '=') + 1);
        free(name);
    }
    status = run(argv, sd->env, sd->log, 15000);
    text = slurp(sd->log);
    ck_assert_msg(status != -1, "%s: did not end", row->label);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == row->want_status,
                  "%s: got status %d, want exit %d", row->label, status,
                  row->want_status);
    ck_assert_msg(strstr(text, row->want_text) != NULL,
                  "%s: stderr does not name \"%s\": %s", row->label,
                  row->want_text, text);
    /* Nothing was started, so nothing can be left over. */
    ck_assert_msg(strstr(text, "event=start ") == NULL,
                  "%s: something was started", row->label);
    free(text);
    sd_done(sd);
}
END_TEST

static Suite *
supervisor_suite(void)
{
    Suite *s = suite_create("supervisor");
    TCase *tc;

    tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_lifecycle);
    suite_add_tcase(s, tc);

    tc = tcase_create("config_file");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_config_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_start");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_bad_start, 0,
                        (int)(sizeof(bad_starts) / sizeof(bad_starts[0])));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(supervisor_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
