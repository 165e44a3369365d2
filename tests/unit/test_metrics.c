/*
 * test_metrics.c - the metrics registry and its Prometheus text exposition
 * (lib/metrics.h), and its HTTP door (lib/metrics_http.h) over loopback.
 *
 * The exposition is compared line by line with what the format (0.0.4)
 * says: # HELP and # TYPE lines, escaped label values, cumulative
 * histogram buckets ending in +Inf with _sum and _count. The HTTP cases
 * run a real server on the loop and a real client in a second thread, on
 * ports 20400-20409 (tests/README.md).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>

#include "lib/buf.h"
#include "lib/loop.h"
#include "lib/metrics.h"
#include "lib/metrics_http.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))
#define HTTP_PORT 20400

/* The exposition of m, as a new string. */
static char *
render(metrics_t *m)
{
    buf_t out = BUF_INIT;

    metrics_render(m, &out);
    return buf_take(&out);
}

static void
want_line(const char *label, const char *text, const char *line)
{
    const char *p = text;
    size_t n = strlen(line);
    bool found = false;

    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);

        if (len == n && memcmp(p, line, n) == 0)
            found = true;
        p = nl ? nl + 1 : NULL;
    }
    ck_assert_msg(found, "%s: no line \"%s\" in:\n%s", label, line, text);
}

static void
want_no(const char *label, const char *text, const char *part)
{
    ck_assert_msg(strstr(text, part) == NULL,
                  "%s: \"%s\" should not be in:\n%s", label, part, text);
}

/* --- names -------------------------------------------------------------- */

static const struct {
    const char *label, *name;
    int want;
} name_rows[] = {
    {"plain", "samotop_up", 1},
    {"colon", "samotop:rule:rate", 1},
    {"leading underscore", "_x", 1},
    {"digits after", "a1_2", 1},
    {"leading digit", "1abc", 0},
    {"dash", "a-b", 0},
    {"space", "a b", 0},
    {"dot", "a.b", 0},
    {"empty", "", 0},
    {"utf-8", "caf\xc3\xa9", 0},
};

START_TEST(test_names)
{
    int got = metrics_name_valid(name_rows[_i].name);

    ck_assert_msg(got == name_rows[_i].want, "%s: got %d, want %d",
                  name_rows[_i].label, got, name_rows[_i].want);
}
END_TEST

START_TEST(test_register_refusals)
{
    metrics_t *m = metrics_new();
    metric_t *c = metrics_counter(m, "c_total", "a counter", "code");

    ck_assert_msg(c != NULL, "good counter: got NULL");
    ck_assert_msg(metrics_counter(m, "c_total", "again", "code") == c,
                  "same name, type and labels: want the same metric");
    ck_assert_msg(metrics_gauge(m, "c_total", "clash", "code") == NULL,
                  "same name, other type: want NULL");
    ck_assert_msg(metrics_counter(m, "c_total", "clash", "role") == NULL,
                  "same name, other labels: want NULL");
    ck_assert_msg(metrics_counter(m, "bad-name", "x", NULL) == NULL,
                  "bad name: want NULL");
    ck_assert_msg(metrics_counter(m, "x_total", "x", "a:b") == NULL,
                  "label with a colon: want NULL");
    ck_assert_msg(metrics_counter(m, "x_total", "x", "__x") == NULL,
                  "reserved label: want NULL");
    ck_assert_msg(metrics_histogram(m, "h", "x", "le", NULL, 0) == NULL,
                  "label le on a histogram: want NULL");
    ck_assert_msg(metrics_counter(m, "x_total", "x", "a,b,c,d,e") == NULL,
                  "five labels: want NULL");
    ck_assert_msg(metrics_counter(m, "x_total", "x", "a,a") == NULL,
                  "a label twice: want NULL");
    ck_assert_msg(
        metrics_histogram(m, "h", "x", NULL, (const double[]){2, 1}, 2) == NULL,
        "decreasing bounds: want NULL");
    /* Updates of a failed registration do nothing and never crash. */
    metrics_inc(NULL, METRICS_L("x"));
    metrics_set(NULL, NULL, 1);
    metrics_observe(NULL, NULL, 1);
    ck_assert_msg(metrics_get(NULL, NULL) == 0, "get of NULL: want 0");
    metrics_destroy(&m);
    ck_assert_msg(m == NULL, "destroy: pointer not nulled");
    metrics_destroy(&m);
}
END_TEST

/* --- counters and gauges ------------------------------------------------- */

START_TEST(test_counter_render)
{
    metrics_t *m = metrics_new();
    metric_t *c = metrics_counter(m, "samotop_smtp_messages_total",
                                  "Messages by code", "role,code");
    metric_t *plain = metrics_counter(m, "samotop_ticks_total", "Ticks", NULL);
    char *text;

    metrics_inc(c, METRICS_L("mta", "250"));
    metrics_inc(c, METRICS_L("mta", "250"));
    metrics_inc(c, METRICS_L("mta", "250"));
    metrics_inc(c, METRICS_L("mta", "550"));
    metrics_add(c, METRICS_L("mta", "550"), -5); /* counters never go down */
    metrics_add(c, METRICS_L("msa", "250"), 0.5);
    text = render(m);
    want_line("help", text,
              "# HELP samotop_smtp_messages_total Messages by "
              "code");
    want_line("type", text, "# TYPE samotop_smtp_messages_total counter");
    want_line("250", text,
              "samotop_smtp_messages_total{role=\"mta\",code=\"250\"} 3");
    want_line("550", text,
              "samotop_smtp_messages_total{role=\"mta\",code=\"550\"} 1");
    want_line("fraction", text,
              "samotop_smtp_messages_total{role=\"msa\",code=\"250\"} 0.5");
    /* A metric without labels shows 0 before its first update. */
    want_line("plain zero", text, "samotop_ticks_total 0");
    ck_assert_msg(metrics_get(c, METRICS_L("mta", "250")) == 3,
                  "get: got %g, want 3",
                  metrics_get(c, METRICS_L("mta", "250")));
    ck_assert_msg(metrics_get(c, METRICS_L("smtps", "250")) == 0,
                  "get of an unseen series: want 0");
    free(text);
    metrics_inc(plain, NULL);
    text = render(m);
    want_line("plain one", text, "samotop_ticks_total 1");
    free(text);
    metrics_destroy(&m);
}
END_TEST

START_TEST(test_gauge)
{
    metrics_t *m = metrics_new();
    metric_t *g = metrics_gauge(m, "open", "Open now", "role");
    char *text;

    metrics_inc(g, METRICS_L("mta"));
    metrics_inc(g, METRICS_L("mta"));
    metrics_dec(g, METRICS_L("mta"));
    metrics_set(g, METRICS_L("msa"), -2.25);
    text = render(m);
    want_line("type", text, "# TYPE open gauge");
    want_line("mta", text, "open{role=\"mta\"} 1");
    want_line("msa", text, "open{role=\"msa\"} -2.25");
    free(text);
    metrics_destroy(&m);
}
END_TEST

/* Label values escape backslash, double quote and newline; HELP escapes
 * backslash and newline only. */
START_TEST(test_escaping)
{
    metrics_t *m = metrics_new();
    metric_t *c = metrics_counter(m, "esc_total", "a \\ b\nc \"q\"", "v");
    char *text;

    metrics_inc(c, METRICS_L("say \"hi\" \\ there\nnext"));
    metrics_inc(c, METRICS_L(NULL));
    text = render(m);
    want_line("help", text, "# HELP esc_total a \\\\ b\\nc \"q\"");
    want_line("value", text,
              "esc_total{v=\"say \\\"hi\\\" \\\\ there\\nnext\"} 1");
    want_line("NULL is empty", text, "esc_total{v=\"\"} 1");
    free(text);
    metrics_destroy(&m);
}
END_TEST

/* A long value is cut, and the cut value finds the same series. */
START_TEST(test_long_value)
{
    metrics_t *m = metrics_new();
    metric_t *c = metrics_counter(m, "long_total", "x", "v");
    char big[400], line[600];
    char *text;

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    metrics_inc(c, METRICS_L(big));
    metrics_inc(c, METRICS_L(big));
    big[METRICS_LABEL_MAX] = '\0';
    snprintf(line, sizeof(line), "long_total{v=\"%s\"} 2", big);
    text = render(m);
    want_line("cut", text, line);
    free(text);
    metrics_destroy(&m);
}
END_TEST

/* Past METRICS_MAX_SERIES, new combinations are dropped and counted. */
START_TEST(test_series_cap)
{
    metrics_t *m = metrics_new();
    metric_t *c = metrics_counter(m, "many_total", "x", "n");
    char v[16], *text;

    for (int i = 0; i < METRICS_MAX_SERIES + 3; i++) {
        snprintf(v, sizeof(v), "%d", i);
        metrics_inc(c, METRICS_L(v));
    }
    snprintf(v, sizeof(v), "%d", METRICS_MAX_SERIES - 1);
    ck_assert_msg(metrics_get(c, METRICS_L(v)) == 1, "last kept: want 1");
    snprintf(v, sizeof(v), "%d", METRICS_MAX_SERIES);
    ck_assert_msg(metrics_get(c, METRICS_L(v)) == 0, "first dropped: want 0");
    text = render(m);
    want_line("dropped", text,
              "samotop_metrics_series_dropped_total{metric=\"many_total\"} 3");
    want_no("no series past the cap", text, "many_total{n=\"128\"}");
    free(text);
    metrics_destroy(&m);
}
END_TEST

/* --- histograms ---------------------------------------------------------- */

START_TEST(test_histogram)
{
    metrics_t *m = metrics_new();
    metric_t *h = metrics_histogram(m, "lat_seconds", "Latency", "type",
                                    (const double[]){1, 2, 5}, 3);
    static const double obs[] = {0.5, 1, 1.5, 3, 10};
    char *text;

    for (size_t i = 0; i < NROWS(obs); i++)
        metrics_observe(h, METRICS_L("guard.rcpt"), obs[i]);
    text = render(m);
    want_line("type", text, "# TYPE lat_seconds histogram");
    /* Bounds are inclusive (le), buckets cumulative. */
    want_line("le 1", text,
              "lat_seconds_bucket{type=\"guard.rcpt\",le=\"1\"} 2");
    want_line("le 2", text,
              "lat_seconds_bucket{type=\"guard.rcpt\",le=\"2\"} 3");
    want_line("le 5", text,
              "lat_seconds_bucket{type=\"guard.rcpt\",le=\"5\"} 4");
    want_line("le +Inf", text,
              "lat_seconds_bucket{type=\"guard.rcpt\",le=\"+Inf\"} 5");
    want_line("sum", text, "lat_seconds_sum{type=\"guard.rcpt\"} 16");
    want_line("count", text, "lat_seconds_count{type=\"guard.rcpt\"} 5");
    ck_assert_msg(metrics_get(h, METRICS_L("guard.rcpt")) == 5,
                  "get of a histogram: want its count, 5");
    free(text);
    metrics_destroy(&m);
}
END_TEST

/* Without labels, the default latency buckets, zero before any update. */
START_TEST(test_histogram_default)
{
    metrics_t *m = metrics_new();
    metric_t *h = metrics_histogram(m, "d_seconds", "x", NULL, NULL, 0);
    char *text;

    text = render(m);
    want_line("zero +Inf", text, "d_seconds_bucket{le=\"+Inf\"} 0");
    want_line("zero count", text, "d_seconds_count 0");
    free(text);
    metrics_observe(h, NULL, 0.003);
    text = render(m);
    want_line("0.0025 below", text, "d_seconds_bucket{le=\"0.0025\"} 0");
    want_line("0.005 above", text, "d_seconds_bucket{le=\"0.005\"} 1");
    want_line("sum", text, "d_seconds_sum 0.003");
    free(text);
    metrics_destroy(&m);
}
END_TEST

/* --- collectors ----------------------------------------------------------- */

static void
on_collect(metrics_t *m, void *arg)
{
    int *calls = arg;

    (void)m;
    (*calls)++;
}

START_TEST(test_collect)
{
    metrics_t *m = metrics_new();
    int calls = 0;
    char *text;

    ck_assert_msg(metrics_on_collect(m, on_collect, &calls) == 0,
                  "on_collect: want 0");
    text = render(m);
    free(text);
    text = render(m);
    free(text);
    ck_assert_msg(calls == 2, "collector: got %d calls, want 2", calls);
    metrics_destroy(&m);
}
END_TEST

/* --- HTTP ------------------------------------------------------------------
 */

struct client {
    const char *request;
    size_t len;
    char reply[65536];
    atomic_int done;
};

static void *
client_run(void *arg)
{
    struct client *c = arg;
    struct sockaddr_in sa = {0};
    struct timeval tv = {5, 0};
    size_t got = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_family = AF_INET;
    sa.sin_port = htons(HTTP_PORT);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        write(fd, c->request, c->len) == (ssize_t)c->len) {
        ssize_t n;

        while (got < sizeof(c->reply) - 1 &&
               (n = read(fd, c->reply + got, sizeof(c->reply) - 1 - got)) > 0)
            got += (size_t)n;
    }
    c->reply[got] = '\0';
    close(fd);
    atomic_store(&c->done, 1);
    return NULL;
}

static void
on_poll(loop_t *loop, void *arg)
{
    struct client *c = arg;

    if (atomic_load(&c->done))
        loop_stop(loop);
    else
        loop_timer_add(loop, 5, on_poll, c);
}

static bool healthy;

static int
check(void *arg, char *why, size_t whylen)
{
    (void)arg;
    if (healthy)
        return 0;
    snprintf(why, whylen, "no broker");
    return -1;
}

/* Sends request from a thread while the loop serves it; the reply. */
static void
exchange(loop_t *loop, struct client *c, const char *request)
{
    pthread_t t;

    c->request = request;
    c->len = strlen(request);
    atomic_store(&c->done, 0);
    pthread_create(&t, NULL, client_run, c);
    loop_timer_add(loop, 5, on_poll, c);
    loop_run(loop);
    pthread_join(t, NULL);
}

/* Descriptors open in this process. */
static int
open_fds(void)
{
    int n = 0;

    for (int fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) != -1;
    return n;
}

static const struct {
    const char *label, *request, *status, *body;
} http_rows[] = {
    {"metrics", "GET /metrics HTTP/1.0\r\n\r\n", "HTTP/1.1 200",
     "requests_total{code=\"250\"} 7"},
    {"content type",
     "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: "
     "close\r\n\r\n",
     "HTTP/1.1 200", "text/plain; version=0.0.4"},
    {"health down", "GET /health HTTP/1.0\r\n\r\n", "HTTP/1.1 503",
     "unavailable: no broker"},
    {"ready down", "GET /ready HTTP/1.0\r\n\r\n", "HTTP/1.1 503", "no broker"},
    {"live", "GET /live HTTP/1.0\r\n\r\n", "HTTP/1.1 200", "ok"},
    {"unknown path", "GET /nope HTTP/1.0\r\n\r\n", "HTTP/1.1 404", "not found"},
    {"post", "POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
     "HTTP/1.1 405", "GET, HEAD"},
    {"header without colon",
     "GET /metrics HTTP/1.1\r\nHost: x\r\nbad "
     "header line\r\n\r\n",
     "HTTP/1.1 400", ""},
    {"head", "HEAD /metrics HTTP/1.0\r\n\r\n", "HTTP/1.1 200", ""},
};

START_TEST(test_http)
{
    loop_t *loop = loop_new();
    metrics_t *m = metrics_new();
    metric_t *c = metrics_counter(m, "requests_total", "x", "code");
    struct metrics_http_opts o = {
        .listen = "127.0.0.1:20400", .metrics = m, .health = check};
    struct client *cl = calloc(1, sizeof(*cl));
    metrics_http_t *h, *twice;
    char why[256] = "";
    int fds;

    metrics_add(c, METRICS_L("250"), 7);
    healthy = false;
    fds = open_fds();
    h = metrics_http_new(loop, &o, why, sizeof(why));
    ck_assert_msg(h != NULL, "metrics_http_new: %s", why);
    ck_assert_msg(metrics_http_port(h) == HTTP_PORT, "port: got %d, want %d",
                  metrics_http_port(h), HTTP_PORT);
    /* The port is ours alone: no SO_REUSEPORT sharing. */
    twice = metrics_http_new(loop, &o, why, sizeof(why));
    ck_assert_msg(twice == NULL, "second server on the same port: want NULL");
    exchange(loop, cl, http_rows[_i].request);
    ck_assert_msg(strncmp(cl->reply, http_rows[_i].status,
                          strlen(http_rows[_i].status)) == 0,
                  "%s: got \"%.40s\", want \"%s\"", http_rows[_i].label,
                  cl->reply, http_rows[_i].status);
    ck_assert_msg(strstr(cl->reply, http_rows[_i].body) != NULL,
                  "%s: no \"%s\" in:\n%s", http_rows[_i].label,
                  http_rows[_i].body, cl->reply);
    /* The server still answers after whatever came before. */
    healthy = true;
    exchange(loop, cl, "GET /health HTTP/1.0\r\n\r\n");
    ck_assert_msg(strncmp(cl->reply, "HTTP/1.1 200", 12) == 0,
                  "%s: health after: got \"%.40s\"", http_rows[_i].label,
                  cl->reply);
    metrics_http_destroy(&h);
    ck_assert_msg(h == NULL, "destroy: pointer not nulled");
    /* The listening socket went with it: the port can be bound again. */
    h = metrics_http_new(loop, &o, why, sizeof(why));
    ck_assert_msg(h != NULL, "%s: bind after destroy: %s", http_rows[_i].label,
                  why);
    metrics_http_destroy(&h);
    ck_assert_msg(open_fds() == fds, "%s: %d descriptors open, %d before",
                  http_rows[_i].label, open_fds(), fds);
    metrics_destroy(&m);
    loop_destroy(&loop);
    free(cl);
}
END_TEST

static Suite *
metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc;

    tc = tcase_create("names");
    tcase_add_loop_test(tc, test_names, 0, NROWS(name_rows));
    tcase_add_test(tc, test_register_refusals);
    suite_add_tcase(s, tc);

    tc = tcase_create("counters");
    tcase_add_test(tc, test_counter_render);
    tcase_add_test(tc, test_gauge);
    tcase_add_test(tc, test_escaping);
    tcase_add_test(tc, test_long_value);
    tcase_add_test(tc, test_series_cap);
    tcase_add_test(tc, test_collect);
    suite_add_tcase(s, tc);

    tc = tcase_create("histograms");
    tcase_add_test(tc, test_histogram);
    tcase_add_test(tc, test_histogram_default);
    suite_add_tcase(s, tc);

    tc = tcase_create("http");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_http, 0, NROWS(http_rows));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
