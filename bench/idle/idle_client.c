/*
 * idle_client - holds N idle SMTP sessions open against one server and
 * measures, meanwhile, the server's memory and how fast a fresh session is
 * served.
 *
 *   idle_client [-n N] [-c CONNECTING] [-k PROBES] [-H HOLD_S] [-T LIMIT_S]
 *               [-p PID]... [-t ROOT]... HOST PORT
 *
 * Opens N connections (at most CONNECTING at a time, so that the listen
 * queue never overflows), reads each greeting, sends EHLO and reads its
 * reply, and then holds the session without a byte more. Memory is
 * sampled before the first connection, every N/10 sessions, once all are
 * held and at the end: VmRSS and Pss of each -p PID, and the sums over the
 * process tree of each -t ROOT. It times PROBES fresh sessions one after
 * the other (connect, greeting, EHLO, QUIT, 221) before opening any, and
 * again with every session held,
 * holds for HOLD_S seconds, and counts the held sessions the server has
 * closed. Everything is bounded: connects and replies time out, and the
 * whole run stops after LIMIT_S seconds.
 *
 * Output: "sample" lines (held sessions, memory), "probe" lines (ms), and
 * one "RESULT key=value ..." line. Exit status 0 when N sessions were held
 * to the end and every probe was served.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXPIDS 8
#define REPLY_MAX 4096

enum state { S_FREE, S_CONNECTING, S_GREETING, S_EHLO, S_HELD, S_FAILED };

struct conn {
    int fd;
    enum state st;
    double since; /* when the current step began */
    size_t len;
    char buf[256]; /* the tail of the reply being read */
};

static struct sockaddr_in server;
static pid_t pids[MAXPIDS], roots[MAXPIDS];
static int npids, nroots;
static double t_start, limit_s = 300;

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
    fprintf(stderr, "idle_client: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* "Key:   123 kB" from a /proc file; -1 when missing. */
static long
proc_kb(pid_t pid, const char *file, const char *key)
{
    char path[64], line[256];
    size_t klen = strlen(key);
    long v = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static pid_t
ppid_of(pid_t pid)
{
    char path[64], buf[512], *p;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((fd = open(path, O_RDONLY)) < 0)
        return -1;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    if ((p = strrchr(buf, ')')) == NULL)
        return -1;
    /* ") S PPID ..." */
    return (pid_t)strtol(p + 4, NULL, 10);
}

/* Sums VmRSS and Pss over root and all its descendants. */
static void
tree_mem(pid_t root, long *rss, long *pss, int *nprocs)
{
    pid_t *all = NULL, *par = NULL;
    bool *in = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    DIR *d = opendir("/proc");
    bool changed = true;

    *rss = *pss = 0;
    *nprocs = 0;
    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        pid_t p = (pid_t)atoi(de->d_name);

        if (p <= 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            all = realloc(all, cap * sizeof(*all));
            par = realloc(par, cap * sizeof(*par));
            if (all == NULL || par == NULL)
                die("realloc");
        }
        all[n] = p;
        par[n++] = ppid_of(p);
    }
    closedir(d);
    in = calloc(n ? n : 1, sizeof(*in));
    if (in == NULL)
        die("calloc");
    for (size_t i = 0; i < n; i++)
        in[i] = all[i] == root;
    while (changed) {
        changed = false;
        for (size_t i = 0; i < n; i++) {
            if (in[i])
                continue;
            for (size_t j = 0; j < n; j++)
                if (in[j] && all[j] == par[i]) {
                    in[i] = changed = true;
                    break;
                }
        }
    }
    for (size_t i = 0; i < n; i++) {
        long r, p;

        if (!in[i])
            continue;
        r = proc_kb(all[i], "status", "VmRSS");
        p = proc_kb(all[i], "smaps_rollup", "Pss");
        if (r > 0)
            *rss += r;
        if (p > 0)
            *pss += p;
        ++*nprocs;
    }
    free(all);
    free(par);
    free(in);
}

/* One "sample" line: memory of every -p and -t at this point. Returns the
 * VmRSS of the first -p (or the RSS sum of the first -t) in kB. */
static long
sample(const char *label, int held)
{
    long first = -1;

    printf("sample %s held=%d t=%.1f", label, held, now() - t_start);
    for (int i = 0; i < npids; i++) {
        long r = proc_kb(pids[i], "status", "VmRSS");
        long p = proc_kb(pids[i], "smaps_rollup", "Pss");

        printf(" pid%d_rss_kb=%ld pid%d_pss_kb=%ld", i, r, i, p);
        if (i == 0)
            first = r;
    }
    for (int i = 0; i < nroots; i++) {
        long r, p;
        int np;

        tree_mem(roots[i], &r, &p, &np);
        printf(" tree%d_rss_kb=%ld tree%d_pss_kb=%ld tree%d_procs=%d", i, r, i,
               p, i, np);
        if (npids == 0 && i == 0)
            first = r;
    }
    printf("\n");
    fflush(stdout);
    return first;
}

/* Whether buf (len bytes) ends with the last line of an SMTP reply; its
 * code in *code. */
static bool
reply_done(const char *buf, size_t len, int *code)
{
    const char *start;

    if (len < 2 || buf[len - 1] != '\n')
        return false;
    /* The start of the last line. */
    start = buf + len - 1;
    while (start > buf && start[-1] != '\n')
        start--;
    if (buf + len - start < 4 || start[3] == '-')
        return false;
    *code = atoi(start);
    return true;
}

static int
open_nb(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr *)&server, sizeof(server)) != 0 &&
        errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads what is there into c's tail buffer; -1 on EOF or error, 1 when a
 * whole reply is in (its code in *code), 0 otherwise. */
static int
read_reply(struct conn *c, int *code)
{
    char tmp[REPLY_MAX];

    for (;;) {
        ssize_t n = read(c->fd, tmp, sizeof(tmp));

        if (n == 0)
            return -1;
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        /* Only the tail matters: keep the last bytes. */
        if ((size_t)n >= sizeof(c->buf) - 1) {
            memcpy(c->buf, tmp + n - (sizeof(c->buf) - 1),
                   sizeof(c->buf) - 1);
            c->len = sizeof(c->buf) - 1;
        } else {
            if (c->len + (size_t)n > sizeof(c->buf) - 1) {
                size_t drop = c->len + (size_t)n - (sizeof(c->buf) - 1);

                memmove(c->buf, c->buf + drop, c->len - drop);
                c->len -= drop;
            }
            memcpy(c->buf + c->len, tmp, (size_t)n);
            c->len += (size_t)n;
        }
        if (reply_done(c->buf, c->len, code))
            return 1;
    }
}

static int
send_all(int fd, const char *s)
{
    size_t len = strlen(s);

    /* A command line is far below a socket buffer: one send does it. */
    return send(fd, s, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* One fresh session, blocking with a deadline: connect, greeting, EHLO,
 * QUIT. Returns its time in ms, or -1 (why in *why). */
static double
probe(double timeout_s, const char **why)
{
    struct conn c = {.fd = -1};
    double t0 = now(), deadline = t0 + timeout_s;
    const char *cmds[] = {NULL, "EHLO probe.example.test\r\n", "QUIT\r\n"};
    const int want[] = {220, 250, 221};
    struct pollfd pfd;
    int code;

    c.fd = open_nb();
    if (c.fd < 0) {
        *why = "connect";
        return -1;
    }
    pfd.fd = c.fd;
    for (int step = 0; step < 3; step++) {
        int r = 0;

        if (cmds[step] && send_all(c.fd, cmds[step]) != 0) {
            *why = "send";
            goto fail;
        }
        c.len = 0;
        while (r == 0) {
            int left = (int)((deadline - now()) * 1000);

            pfd.events = POLLIN;
            if (left <= 0 || poll(&pfd, 1, left) <= 0) {
                *why = step == 0 ? "no greeting" : "no reply";
                goto fail;
            }
            r = read_reply(&c, &code);
        }
        if (r < 0 || code != want[step]) {
            *why = r < 0 ? "closed" : "unexpected reply";
            goto fail;
        }
    }
    close(c.fd);
    return (now() - t0) * 1000;
fail:
    close(c.fd);
    return -1;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* The q-quantile of the n sorted values in v (linear between the two
 * nearest ranks); -1 when there are none. */
static double
quantile(const double *v, int n, double q)
{
    double pos = q * (n - 1);
    int lo = (int)pos;

    if (n == 0)
        return -1;
    if (lo >= n - 1)
        return v[n - 1];
    return v[lo] + (v[lo + 1] - v[lo]) * (pos - lo);
}

/* PROBES fresh sessions one after another; their sorted times go to lat,
 * the number served is returned. */
static int
probes(const char *label, int nprobes, double *lat)
{
    int ok = 0;

    for (int i = 0; i < nprobes; i++) {
        const char *why = "";
        double ms = probe(10, &why);

        if (ms >= 0) {
            lat[ok++] = ms;
            printf("probe %s %d ms=%.3f\n", label, i + 1, ms);
        } else {
            printf("probe %s %d failed=\"%s\"\n", label, i + 1, why);
        }
        fflush(stdout);
        usleep(50000);
    }
    qsort(lat, (size_t)ok, sizeof(*lat), cmp_double);
    return ok;
}

static void
usage(void)
{
    fprintf(stderr, "usage: idle_client [-n N] [-c CONNECTING] [-k PROBES] "
                    "[-H HOLD_S] [-T LIMIT_S] [-p PID]... [-t ROOT]... "
                    "HOST PORT\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    int n = 10000, connecting_max = 100, nprobes = 20, hold_s = 5, opt;
    double step_timeout = 30;
    struct conn *conns;
    struct epoll_event *evs;
    struct rlimit rl;
    int ep, held = 0, failed = 0, inflight = 0, next = 0, closed = 0;
    int next_sample, probes_ok = 0, refused421 = 0;
    long rss0, rss_held, rss_end;
    double t_held, *lat, *base;
    int base_ok;

    while ((opt = getopt(argc, argv, "n:c:k:H:T:p:t:")) != -1) {
        switch (opt) {
        case 'n': n = atoi(optarg); break;
        case 'c': connecting_max = atoi(optarg); break;
        case 'k': nprobes = atoi(optarg); break;
        case 'H': hold_s = atoi(optarg); break;
        case 'T': limit_s = atof(optarg); break;
        case 'p':
            if (npids == MAXPIDS)
                usage();
            pids[npids++] = (pid_t)atoi(optarg);
            break;
        case 't':
            if (nroots == MAXPIDS)
                usage();
            roots[nroots++] = (pid_t)atoi(optarg);
            break;
        default: usage();
        }
    }
    if (argc - optind != 2 || n < 1 || connecting_max < 1 || nprobes < 0)
        usage();
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[optind + 1]));
    if (inet_pton(AF_INET, argv[optind], &server.sin_addr) != 1)
        usage();
    /* Loopback only. */
    if ((ntohl(server.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "idle_client: %s is not a loopback address\n",
                argv[optind]);
        return 2;
    }
    rl.rlim_cur = rl.rlim_max = (rlim_t)n + (rlim_t)nprobes + 64;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("setrlimit(RLIMIT_NOFILE) (raise ulimit -n)");

    conns = calloc((size_t)n, sizeof(*conns));
    evs = calloc(1024, sizeof(*evs));
    lat = calloc((size_t)nprobes + 1, sizeof(*lat));
    base = calloc((size_t)nprobes + 1, sizeof(*base));
    if (conns == NULL || evs == NULL || lat == NULL || base == NULL)
        die("calloc");
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");

    t_start = now();
    rss0 = sample("before", 0);
    /* The same fresh sessions with nothing held, for comparison. */
    base_ok = probes("alone", nprobes, base);
    next_sample = n / 10 > 0 ? n / 10 : 1;

    /* Open, greet and EHLO every session, CONNECTING at a time. */
    while (held + failed < n) {
        double t = now();
        int k;

        if (t - t_start > limit_s) {
            fprintf(stderr, "idle_client: %d of %d held after %.0f s, "
                            "giving up\n", held, n, limit_s);
            break;
        }
        while (inflight < connecting_max && next < n) {
            struct conn *c = &conns[next];
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
                                     .data.u32 = (uint32_t)next};

            next++;
            c->fd = open_nb();
            c->since = t;
            if (c->fd < 0) {
                c->st = S_FAILED;
                failed++;
                continue;
            }
            c->st = S_CONNECTING;
            if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
                die("epoll_ctl");
            inflight++;
        }
        k = epoll_wait(ep, evs, 1024, 100);
        for (int i = 0; i < k; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            int code, r, err = 0;
            socklen_t el = sizeof(err);

            if (c->st == S_CONNECTING) {
                struct epoll_event ev = {.events = EPOLLIN,
                                         .data.u32 = evs[i].data.u32};

                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err != 0)
                    goto fail;
                c->st = S_GREETING;
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            r = read_reply(c, &code);
            if (r == 0)
                continue;
            if (r < 0)
                goto fail;
            if (c->st == S_GREETING) {
                if (code != 220) {
                    refused421 += code == 421;
                    goto fail;
                }
                c->len = 0;
                if (send_all(c->fd, "EHLO idle.example.test\r\n") != 0)
                    goto fail;
                c->st = S_EHLO;
                c->since = now();
                continue;
            }
            if (c->st == S_EHLO) {
                if (code != 250)
                    goto fail;
                c->st = S_HELD;
                c->len = 0;
                inflight--;
                held++;
                if (held % next_sample == 0 && held < n)
                    sample("opening", held);
                continue;
            }
            continue;
        fail:
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
            c->st = S_FAILED;
            inflight--;
            failed++;
        }
        /* Steps that take too long fail (bounded). */
        t = now();
        for (int i = 0; i < next; i++) {
            struct conn *c = &conns[i];

            if ((c->st == S_CONNECTING || c->st == S_GREETING ||
                 c->st == S_EHLO) && t - c->since > step_timeout) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                c->st = S_FAILED;
                inflight--;
                failed++;
            }
        }
    }
    t_held = now() - t_start;
    printf("opened held=%d failed=%d refused_421=%d seconds=%.1f\n", held,
           failed, refused421, t_held);
    fflush(stdout);
    sleep(2); /* let the server settle (timers, buffers) */
    rss_held = sample("held", held);

    /* Fresh sessions while the others are held. */
    probes_ok = probes("held", nprobes, lat);

    /* Hold, then count the held sessions the server closed meanwhile. */
    sleep((unsigned)hold_s);
    for (int i = 0; i < n; i++) {
        struct pollfd p = {.fd = conns[i].fd, .events = POLLIN};

        if (conns[i].st != S_HELD)
            continue;
        if (poll(&p, 1, 0) == 1)
            closed++; /* EOF or a 421: the server gave up the session */
    }
    rss_end = sample("end", held - closed);
    for (int i = 0; i < n; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);

    printf("RESULT sessions=%d held=%d failed=%d refused_421=%d "
           "closed_by_server=%d open_s=%.1f rss0_kb=%ld rss_held_kb=%ld "
           "rss_end_kb=%ld rss_per_session_b=%.0f probes=%d probes_ok=%d "
           "probe_p50_ms=%.3f probe_p90_ms=%.3f probe_max_ms=%.3f "
           "alone_ok=%d alone_p50_ms=%.3f alone_p90_ms=%.3f\n",
           n, held, failed, refused421, closed, t_held, rss0, rss_held,
           rss_end,
           held > 0 && rss0 >= 0 ? (double)(rss_held - rss0) * 1024 / held
                                 : -1.0,
           nprobes, probes_ok, quantile(lat, probes_ok, 0.5),
           quantile(lat, probes_ok, 0.9), quantile(lat, probes_ok, 1.0),
           base_ok, quantile(base, base_ok, 0.5), quantile(base, base_ok, 0.9));
    return held == n && closed == 0 && probes_ok == nprobes ? 0 : 1;
}
