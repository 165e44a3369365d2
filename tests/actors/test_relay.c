/*
 * test_relay.c - samotop-relay and its resolver, against real servers on
 * loopback: dnsmasq answers the DNS (MX, A, null MX, NXDOMAIN, REFUSED),
 * redis-server holds the routes, samotop-bus carries relay.send, and the
 * next hops are relay_sink.py, a small SMTP server that answers each
 * recipient from a table and writes down what it received (see its
 * header), and Postfix's smtp-sink for one more opinion. Sinks listen on
 * several loopback addresses (127.0.0.N) and one port, the relay's
 * relay.port, so that MX hosts differ by address.
 *
 * Ports 19300-19399 belong to this suite, ten per world: redis on the
 * first, the broker on the next three, dnsmasq on the fifth, the sinks on
 * the sixth. 19300 the main world, 19310 one connection per host, 19320
 * no DNS server, 19330 the resolver alone (a silent DNS server on 19335).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "bus.h"
#include "lib/buf.h"
#include "lib/config.h"
#include "lib/dns.h"
#include "lib/err.h"
#include "lib/loop.h"
#include "lib/tls.h"
#include "store.h"
#include "store_keys.h"
#include "tests/testlib.h"

#define MAX_SINKS 8

/* The zone every dnsmasq here serves (--local=/test/ makes it answer
 * NXDOMAIN and NODATA like an authoritative server). */
static const char *const zone[] = {
    "--mx-host=remote.test,mx1.remote.test,10",
    "--host-record=mx1.remote.test,127.0.0.1",
    /* The first MX refuses connections; the second takes the mail. */
    "--mx-host=backup.test,mx1.backup.test,10",
    "--mx-host=backup.test,mx2.backup.test,20",
    "--host-record=mx1.backup.test,127.0.0.2",
    "--host-record=mx2.backup.test,127.0.0.1",
    /* Preference, not order of listing, decides. */
    "--mx-host=pref.test,mxa.pref.test,20",
    "--mx-host=pref.test,mxb.pref.test,10",
    "--host-record=mxa.pref.test,127.0.0.3",
    "--host-record=mxb.pref.test,127.0.0.4",
    /* The first MX says 421 at once. */
    "--mx-host=busy.test,mx1.busy.test,10",
    "--mx-host=busy.test,mx2.busy.test,20",
    "--host-record=mx1.busy.test,127.0.0.6",
    "--host-record=mx2.busy.test,127.0.0.3",
    "--mx-host=plain.test,mx.plain.test,10",
    "--host-record=mx.plain.test,127.0.0.5",
    "--mx-host=slow.test,mx.slow.test,10",
    "--host-record=mx.slow.test,127.0.0.7",
    "--mx-host=reuse.test,mx.reuse.test,10",
    "--host-record=mx.reuse.test,127.0.0.8",
    "--mx-host=dead.test,mx.dead.test,10",
    "--host-record=mx.dead.test,127.0.0.2",
    "--mx-host=limit.test,mx1.remote.test,10",
    "--mx-host=equal.test,e1.equal.test,10",
    "--mx-host=equal.test,e2.equal.test,10",
    "--mx-host=equal.test,e3.equal.test,10",
    "--host-record=e1.equal.test,127.0.0.1",
    "--host-record=e2.equal.test,127.0.0.2",
    "--host-record=e3.equal.test,127.0.0.3",
    "--mx-host=nohost.test,ghost.nohost.test,10",
    "--host-record=implicit.test,127.0.0.1",
    "--host-record=dual.test,127.0.0.1,::1",
    "--dns-rr=nullmx.test,15,0000:00",
    /* Postfix's smtp-sink, an MTA we did not write. */
    "--mx-host=postfix.test,mx.postfix.test,10",
    "--host-record=mx.postfix.test,127.0.0.9",
    /* RFC 5321 5.1: MX lists that name us, by address (127.0.0.10 is our
     * MTA door in every world here) or by our hostname. */
    "--mx-host=self.test,me.self.test,10",
    "--mx-host=self.test,peer.self.test,10",
    "--mx-host=self.test,later.self.test,20",
    "--host-record=me.self.test,127.0.0.10",
    "--host-record=peer.self.test,127.0.0.1",
    "--host-record=later.self.test,127.0.0.1",
    "--mx-host=second.test,first.second.test,10",
    "--mx-host=second.test,me.second.test,20",
    "--host-record=first.second.test,127.0.0.1",
    "--host-record=me.second.test,127.0.0.10",
    "--mx-host=named.test,relay.example.test,10",
    "--host-record=relay.example.test,127.0.0.1",
};

/* One next hop. */
struct sink {
    const char *ip;
    const char *name;
    const char *ext;      /* EHLO lines, "|"-separated */
    const char *rcpt;     /* "addr=reply|addr=reply" */
    const char *greeting; /* NULL: 220 */
    int data_delay_ms;
};

struct world {
    int base;
    char dir[64];
    pid_t redis, bus, relay, dnsmasq, postfix;
    pid_t sinks[MAX_SINKS];
    char sink_dir[MAX_SINKS][128];
    const char *sink_ip[MAX_SINKS];
    int nsinks;
    char clients[64];
    char env[32][256];
    const char *envp[33];
    int nenv;
};

/* Set up once per TCase in the parent; each forked test inherits it. */
static struct world W;

/* --- processes ---------------------------------------------------------- */

/* Runs one command (strings ending with NULL) and asserts Redis took it. */
static void
rcmd(int port, ...)
{
    store_t *s = test_redis_connect(port, 2000);
    va_list ap;

    va_start(ap, port);
    store_reply_free(&(store_reply_t *){test_redis_cmdv(s, ap)});
    va_end(ap);
    store_destroy(&s);
}

static void
route_set(const char *domain, const char *value)
{
    char k[STORE_KEY_MAX];

    rcmd(W.base, "HSET", store_key_routes(k), domain, value, NULL);
}

static void
route_del(const char *domain)
{
    char k[STORE_KEY_MAX];

    rcmd(W.base, "HDEL", store_key_routes(k), domain, NULL);
}

/* Whether a DNS server answers on 127.0.0.1:port (any answer will do). */
static bool
dns_answers(int port)
{
    static const unsigned char q[] = {
        0x12, 0x34, 0x01, 0x00, 0, 1,   0,   0,   0,   0, 0, 0,  6, 'r', 'e',
        'm',  'o',  't',  'e',  4, 't', 'e', 's', 't', 0, 0, 15, 0, 1};
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port)};
    struct timeval tv = {0, 100000};
    unsigned char buf[512];
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    ssize_t n;

    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&sin, sizeof(sin));
    n = recv(fd, buf, sizeof(buf), 0);
    close(fd);
    return n > 12 && buf[0] == 0x12 && buf[1] == 0x34;
}

static pid_t
dnsmasq_start(int port)
{
    char path[4096], p[32];
    const char *argv[64];
    int n = 0;
    pid_t pid;
    int64_t until = test_now_ms() + 5000;

    snprintf(path, sizeof(path), "%s", test_in_path("dnsmasq"));
    snprintf(p, sizeof(p), "--port=%d", port);
    argv[n++] = path;
    argv[n++] = "--keep-in-foreground";
    argv[n++] = "--conf-file=/dev/null";
    argv[n++] = p;
    argv[n++] = "--listen-address=127.0.0.1";
    argv[n++] = "--bind-interfaces";
    argv[n++] = "--no-resolv";
    argv[n++] = "--no-hosts";
    argv[n++] = "--no-negcache";
    argv[n++] = "--pid-file=";
    argv[n++] = "--log-facility=-";
    argv[n++] = "--local=/test/";
    if (geteuid() == 0)
        argv[n++] = "--user=root";
    for (size_t i = 0; i < sizeof(zone) / sizeof(zone[0]); i++)
        argv[n++] = zone[i];
    argv[n] = NULL;
    pid = test_spawn(argv, NULL);
    while (!dns_answers(port)) {
        ck_assert_msg(test_now_ms() < until, "dnsmasq never answered");
        usleep(50000);
    }
    return pid;
}

/* Writes a JSON string (only what the tests put there needs escaping). */
static void
json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Writes a "|"-separated list as a JSON array, or as an object when each
 * item is "key=value". */
static void
json_list(FILE *f, const char *list, bool object)
{
    char *copy = strdup(list ? list : ""), *save = NULL;
    bool first = true;

    fputc(object ? '{' : '[', f);
    for (char *t = strtok_r(copy, "|", &save); t;
         t = strtok_r(NULL, "|", &save)) {
        if (!first)
            fputc(',', f);
        first = false;
        if (object) {
            char *eq = strchr(t, '=');

            *eq = '\0';
            json_str(f, t);
            fputc(':', f);
            json_str(f, eq + 1);
        } else {
            json_str(f, t);
        }
    }
    fputc(object ? '}' : ']', f);
    free(copy);
}

static void
sink_start(const struct sink *s, int port)
{
    int i = W.nsinks++;
    char cfg[256], ready[256], script[4096];
    const char *src = getenv("SAMOTOP_SRC");
    const char *argv[] = {"/usr/bin/python3", script, cfg, NULL};
    int64_t until = test_now_ms() + 10000;
    FILE *f;

    ck_assert_int_lt(i, MAX_SINKS);
    snprintf(script, sizeof(script), "%s/tests/actors/relay_sink.py",
             src ? src : ".");
    snprintf(W.sink_dir[i], sizeof(W.sink_dir[i]), "%s/sink-%s", W.dir, s->ip);
    mkdir(W.sink_dir[i], 0700);
    W.sink_ip[i] = s->ip;
    snprintf(cfg, sizeof(cfg), "%s/sink-%s.json", W.dir, s->ip);
    f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "{\"listen\": \"%s\", \"port\": %d, \"name\": \"%s\", "
            "\"cert\": \"%s/tls/cert.pem\", \"key\": \"%s/tls/key.pem\", "
            "\"data_delay_ms\": %d, \"record\": \"%s\", \"ext\": ",
            s->ip, port, s->name, W.dir, W.dir, s->data_delay_ms,
            W.sink_dir[i]);
    json_list(f, s->ext, false);
    fprintf(f, ", \"rcpt\": ");
    json_list(f, s->rcpt, true);
    if (s->greeting) {
        fprintf(f, ", \"greeting\": ");
        json_str(f, s->greeting);
    }
    fprintf(f, "}\n");
    fclose(f);
    W.sinks[i] = test_spawn(argv, NULL);
    snprintf(ready, sizeof(ready), "%s/ready", W.sink_dir[i]);
    while (access(ready, F_OK) != 0) {
        ck_assert_msg(test_now_ms() < until, "sink %s never started", s->ip);
        usleep(20000);
    }
}

/* Postfix's smtp-sink on 127.0.0.9, dumping each message into
 * W.dir/postfix/. */
static void
postfix_start(int port)
{
    char path[4096], dump[160], addr[64];
    const char *argv[] = {path, "-u", "nobody", "-d", dump, addr, "10", NULL};
    int64_t until = test_now_ms() + 5000;

    snprintf(path, sizeof(path), "%s", test_in_path("smtp-sink"));
    snprintf(dump, sizeof(dump), "%s/postfix", W.dir);
    mkdir(dump, 0777);
    chmod(dump, 0777); /* smtp-sink writes as nobody */
    snprintf(dump, sizeof(dump), "%s/postfix/%%M.", W.dir);
    snprintf(addr, sizeof(addr), "127.0.0.9:%d", port);
    if (geteuid() != 0)
        argv[1] = argv[2] = "-v"; /* -u is for root only; -v is harmless */
    chmod(W.dir, 0755);
    W.postfix = test_spawn(argv, NULL);
    for (;;) {
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port)};
        int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

        inet_pton(AF_INET, "127.0.0.9", &sin.sin_addr);
        ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
        close(fd);
        if (ok)
            break;
        ck_assert_msg(test_now_ms() < until, "smtp-sink never started");
        usleep(50000);
    }
}

static void
env_add(const char *fmt, ...)
{
    va_list ap;

    ck_assert_int_lt(W.nenv, 32);
    va_start(ap, fmt);
    vsnprintf(W.env[W.nenv], sizeof(W.env[0]), fmt, ap);
    va_end(ap);
    W.envp[W.nenv] = W.env[W.nenv];
    W.nenv++;
    W.envp[W.nenv] = NULL;
}

/* A world on ports base..base+9: the sinks given, dnsmasq unless dns is
 * false (the relay is then pointed at a port where none answers),
 * smtp-sink when asked, and extra "K=V" settings for the relay
 * (NULL-terminated). */
static void
world_start(int base, const struct sink *sinks, int nsinks, bool dns,
            bool postfix, const char *const *extra)
{
    char bus_path[4096], relay_path[4096], why[256], tlsdir[128];
    const char *bus_argv[] = {bus_path, "--instance", "t", NULL};
    const char *relay_argv[] = {relay_path, "--instance", "r", NULL};

    memset(&W, 0, sizeof(W));
    W.base = base;
    snprintf(W.dir, sizeof(W.dir), "/tmp/samotop-relaytest-XXXXXX");
    ck_assert_msg(mkdtemp(W.dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(tlsdir, sizeof(tlsdir), "%s/tls", W.dir);
    /* The sinks' certificate names mx1.remote.test (tls=verify). */
    ck_assert_msg(tls_self_signed_ensure(tlsdir, "mx1.remote.test", why,
                                         sizeof(why)) == 0,
                  "%s", why);
    snprintf(bus_path, sizeof(bus_path), "%s", test_bin("samotop-bus"));
    snprintf(relay_path, sizeof(relay_path), "%s", test_bin("samotop-relay"));
    snprintf(W.clients, sizeof(W.clients), "tcp://127.0.0.1:%d", base + 1);
    env_add("SAMOTOP_BROKER_CLIENTS=%s", W.clients);
    env_add("SAMOTOP_BROKER_WORKERS=tcp://127.0.0.1:%d", base + 2);
    env_add("SAMOTOP_BROKER_TRACE=tcp://127.0.0.1:%d", base + 3);
    env_add("SAMOTOP_BUS_CLIENTS=%s", W.clients);
    env_add("SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:%d", base + 2);
    env_add("SAMOTOP_BUS_TRACE=tcp://127.0.0.1:%d", base + 3);
    env_add("SAMOTOP_BUS_HEARTBEAT_MS=100");
    env_add("SAMOTOP_REDIS_PORT=%d", base);
    env_add("SAMOTOP_DATA=%s/var", W.dir);
    env_add("SAMOTOP_HOSTNAME=relay.example.test");
    /* Our own MTA door, on the port we deliver to: an MX there is us. */
    env_add("SAMOTOP_LISTEN_MTA=127.0.0.10:%d", base + 5);
    env_add("SAMOTOP_LOG_LEVEL=%s",
            getenv("SAMOTOP_TEST_DEBUG") ? "debug" : "info");
    /* Never the machine's resolver: ours, or a port with nobody. */
    env_add("SAMOTOP_RELAY_DNS=127.0.0.1:%d", base + 4);
    env_add("SAMOTOP_RELAY_DNS_TIMEOUT_MS=300");
    env_add("SAMOTOP_RELAY_DNS_TRIES=2");
    env_add("SAMOTOP_RELAY_PORT=%d", base + 5);
    env_add("SAMOTOP_RELAY_TLS_CA=%s/cert.pem", tlsdir);
    env_add("SAMOTOP_RELAY_CONNECT_TIMEOUT_MS=2000");
    env_add("SAMOTOP_RELAY_TIMEOUT_GREETING_MS=3000");
    env_add("SAMOTOP_RELAY_TIMEOUT_CMD_MS=3000");
    env_add("SAMOTOP_RELAY_TIMEOUT_DATA_INIT_MS=3000");
    env_add("SAMOTOP_RELAY_TIMEOUT_DATA_BLOCK_MS=3000");
    env_add("SAMOTOP_RELAY_TIMEOUT_DATA_END_MS=3000");
    for (int i = 0; extra && extra[i]; i++)
        env_add("%s", extra[i]);
    W.redis = test_redis_start(base);
    if (dns)
        W.dnsmasq = dnsmasq_start(base + 4);
    for (int i = 0; i < nsinks; i++)
        sink_start(&sinks[i], base + 5);
    if (postfix)
        postfix_start(base + 5);
    W.bus = test_spawn(bus_argv, W.envp);
    W.relay = test_spawn(relay_argv, W.envp);
}

static void
world_stop(void)
{
    test_stop_clean(&W.relay, "samotop-relay", 5000);
    for (int i = 0; i < W.nsinks; i++)
        test_stop(W.sinks[i], SIGTERM, 2000);
    if (W.postfix > 0)
        test_stop(W.postfix, SIGTERM, 2000);
    if (W.bus > 0)
        test_stop(W.bus, SIGTERM, 5000);
    if (W.dnsmasq > 0)
        test_stop(W.dnsmasq, SIGTERM, 2000);
    if (W.redis > 0)
        test_stop(W.redis, SIGTERM, 5000);
    if (W.dir[0])
        test_rm_tree(W.dir);
    memset(&W, 0, sizeof(W));
}

/* --- the sinks' records ------------------------------------------------- */

static int
sink_index(const char *ip)
{
    for (int i = 0; i < W.nsinks; i++)
        if (strcmp(W.sink_ip[i], ip) == 0)
            return i;
    ck_abort_msg("no sink on %s", ip);
    return -1;
}

/* The sink's whole log, in a new string. */
static char *
sink_log(const char *ip)
{
    char path[256];
    buf_t b = BUF_INIT;
    char chunk[4096];
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/log", W.sink_dir[sink_index(ip)]);
    f = fopen(path, "r");
    if (f) {
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
            buf_add(&b, chunk, n);
        fclose(f);
    }
    buf_addc(&b, '\0');
    return buf_take(&b);
}

static size_t
sink_mark(const char *ip)
{
    char *log = sink_log(ip);
    size_t n = strlen(log);

    free(log);
    return n;
}

/* What the sink logged since mark. */
static char *
sink_since(const char *ip, size_t mark)
{
    char *log = sink_log(ip), *out;

    out = strdup(strlen(log) >= mark ? log + mark : "");
    free(log);
    return out;
}

/* Lines of log starting with prefix, counted. */
static int
count_lines(const char *log, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);

    for (const char *p = log; p && *p;) {
        if (strncmp(p, prefix, pl) == 0)
            n++;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return n;
}

/* The first line starting with prefix, copied into out ("" if none). */
static void
find_line(const char *log, const char *prefix, char *out, size_t outlen)
{
    size_t pl = strlen(prefix);

    out[0] = '\0';
    for (const char *p = log; p && *p;) {
        if (strncmp(p, prefix, pl) == 0) {
            size_t n = strcspn(p, "\n");

            snprintf(out, outlen, "%.*s", (int)n, p);
            return;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
}

/* The message file named by the first "data" line, compared with want. */
static void
assert_body(const char *log, const char *want, size_t wantlen)
{
    char line[512], *file;
    FILE *f;
    buf_t b = BUF_INIT;
    char chunk[4096];
    size_t n;

    find_line(log, "data ", line, sizeof(line));
    ck_assert_msg(line[0], "no message reached the sink:\n%s", log);
    file = strchr(line + 5, ' ') + 1;
    f = fopen(file, "rb");
    ck_assert_ptr_nonnull(f);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_add(&b, chunk, n);
    fclose(f);
    ck_assert_msg(b.len == wantlen && memcmp(b.data, want, wantlen) == 0,
                  "body differs: %zu octets received, %zu sent", b.len,
                  wantlen);
    buf_free(&b);
}

/* --- relay.send --------------------------------------------------------- */

static const char MSG[] = "From: alice@example.test\r\n"
                          "To: bob@remote.test\r\n"
                          "Subject: relay test\r\n"
                          "\r\n"
                          ".a line with a leading dot\r\n"
                          "..and one with two\r\n"
                          ".\r\n"
                          "the end\r\n";

static const char MSG8[] = "From: alice@example.test\r\n"
                           "Subject: caf\xc3\xa9\r\n"
                           "Content-Transfer-Encoding: 8bit\r\n"
                           "\r\n"
                           "na\xc3\xafve\r\n";

struct send {
    const char *domain;
    const char *from;
    const char *rcpts[4];
    const char *msg;
    size_t len;
    bool eight_bit;
    bool dsn;
};

static envelope_t *
send_new(const struct send *s)
{
    envelope_t *req = envelope_new("relay.send", NULL, 20000);
    value_t *body = envelope_body(req), *arr = value_new_array(), *v;
    const char *msg = s->msg ? s->msg : MSG;

    value_set_str(body, ENV_KEY_DOMAIN, s->domain);
    value_set_str(body, ENV_KEY_MAIL_FROM,
                  s->from ? s->from : "alice@example.test");
    v = value_new_bin(msg, s->msg ? s->len : strlen(MSG));
    value_set_take(body, ENV_KEY_MESSAGE, &v);
    for (int i = 0; i < 4 && s->rcpts[i]; i++) {
        value_t *item = value_new_map();

        value_set_str(item, ENV_KEY_ADDR, s->rcpts[i]);
        if (s->dsn) {
            value_t *n = value_new_array(), *w = value_new_str("SUCCESS");

            value_push_take(n, &w);
            w = value_new_str("FAILURE");
            value_push_take(n, &w);
            value_set_take(item, ENV_KEY_NOTIFY, &n);
            value_set_str(item, ENV_KEY_ORCPT, "rfc822;bob@remote.test");
        }
        value_push_take(arr, &item);
    }
    value_set_take(body, ENV_KEY_RCPTS, &arr);
    if (s->eight_bit)
        value_set_bool(body, ENV_KEY_EIGHT_BIT, true);
    if (s->dsn) {
        value_set_str(body, ENV_KEY_RET, "HDRS");
        value_set_str(body, ENV_KEY_ENVID, "Q123");
    }
    value_set_str(body, ENV_KEY_QUEUE_ID, "q-test");
    return req;
}

/* The reply against schemas/relay.send.reply.json: code, ecode, text, and
 * one result per recipient with addr, code, ecode and text. */
static void
check_reply(const envelope_t *reply, const struct send *s)
{
    const value_t *body = envelope_body_peek(reply);
    const value_t *res = value_get(body, ENV_KEY_RESULTS);
    const char *ecode = envelope_get_str(reply, ENV_KEY_ECODE);
    int n = 0;

    while (n < 4 && s->rcpts[n])
        n++;
    ck_assert_int_ge(envelope_code(reply), 200);
    ck_assert_int_le(envelope_code(reply), 599);
    ck_assert_ptr_nonnull(ecode);
    ck_assert_int_eq(ecode[0], '0' + envelope_code(reply) / 100);
    ck_assert_ptr_nonnull(envelope_get_str(reply, ENV_KEY_TEXT));
    ck_assert_msg(res && value_kind(res) == VAL_ARRAY &&
                      value_count(res) == (size_t)n,
                  "results: want %d", n);
    for (int i = 0; i < n; i++) {
        const value_t *item = value_at(res, (size_t)i);
        int code = (int)value_get_int(item, ENV_KEY_CODE, 0);
        const char *e = value_get_str(item, ENV_KEY_ECODE);

        ck_assert_str_eq(value_get_str(item, ENV_KEY_ADDR), s->rcpts[i]);
        ck_assert_int_ge(code, 200);
        ck_assert_int_le(code, 599);
        ck_assert_msg(e && e[0] == '0' + code / 100, "ecode %s for %d",
                      e ? e : "(none)", code);
        ck_assert_ptr_nonnull(value_get_str(item, ENV_KEY_TEXT));
    }
}

/* Sends s and returns the reply (caller frees), checked against the
 * schema. */
static envelope_t *
send_call(const struct send *s)
{
    char why[256];
    envelope_t *req = send_new(s), *reply = NULL;
    bus_client_t *c =
        bus_client_new(NULL, W.clients, 64 << 20, why, sizeof(why));
    int64_t until = test_now_ms() + 10000;
    int rc;

    ck_assert_ptr_nonnull(c);
    /* The relay registers a moment after it starts. */
    while ((rc = bus_client_call(c, &req, &reply, why, sizeof(why))) ==
               ERR_NOWORKER &&
           test_now_ms() < until) {
        usleep(50000);
        req = send_new(s);
    }
    ck_assert_msg(rc == 0, "relay.send: %s (%s)", err_name(rc), why);
    bus_client_destroy(&c);
    check_reply(reply, s);
    return reply;
}

/* Result i of a reply: its code, ecode, text and mx. */
static const value_t *
result(const envelope_t *reply, int i)
{
    return value_at(value_get(envelope_body_peek(reply), ENV_KEY_RESULTS),
                    (size_t)i);
}

#define ASSERT_RESULT(reply, i, want_code, want_ecode)                         \
    do {                                                                       \
        const value_t *r_ = result(reply, i);                                  \
        ck_assert_msg(                                                         \
            value_get_int(r_, ENV_KEY_CODE, 0) == (want_code) &&               \
                strcmp(value_get_str(r_, ENV_KEY_ECODE), want_ecode) == 0,     \
            "result %d: got %d %s (%s), want %d %s", i,                        \
            (int)value_get_int(r_, ENV_KEY_CODE, 0),                           \
            value_get_str(r_, ENV_KEY_ECODE), value_get_str(r_, ENV_KEY_TEXT), \
            want_code, want_ecode);                                            \
    } while (0)

static const char *
result_mx(const envelope_t *reply, int i)
{
    const char *mx = value_get_str(result(reply, i), ENV_KEY_MX);

    return mx ? mx : "";
}

/* ---------------------------------------------------------------------
 * The main world.
 */

#define MAIN 19300
#define SINK_FULL                                                              \
    "PIPELINING|8BITMIME|SIZE 10000000|ENHANCEDSTATUSCODES|DSN|STARTTLS"

static const struct sink main_sinks[] = {
    {"127.0.0.1", "mx1.remote.test", SINK_FULL,
     "later@remote.test=450 4.2.1 mailbox busy, try later|"
     "bad@remote.test=550 5.1.1 no such user",
     NULL, 0},
    {"127.0.0.3", "mxa.pref.test", "PIPELINING|8BITMIME", NULL, NULL, 0},
    {"127.0.0.4", "mxb.pref.test", "PIPELINING|8BITMIME", NULL, NULL, 0},
    {"127.0.0.5", "mx.plain.test", "SIZE 100000", NULL, NULL, 0},
    {"127.0.0.6", "mx1.busy.test", "PIPELINING", NULL,
     "421 4.3.2 mx1.busy.test too busy", 0},
    {"127.0.0.7", "mx.slow.test", "PIPELINING|8BITMIME", NULL, NULL, 5000},
    {"127.0.0.8", "mx.reuse.test", "PIPELINING|8BITMIME|STARTTLS", NULL, NULL,
     0},
};

static void
main_start(void)
{
    static const char *const extra[] = {"SAMOTOP_RELAY_IDLE_MS=1500", NULL};

    world_start(MAIN, main_sinks, sizeof(main_sinks) / sizeof(main_sinks[0]),
                true, true, extra);
}

/* Delivered by MX, under STARTTLS, pipelined, with the right envelope and
 * the body byte for byte (dot-stuffing done and undone on the way). */
START_TEST(test_deliver)
{
    struct send s = {.domain = "remote.test",
                     .rcpts = {"bob@remote.test", "Carol@remote.test"}};
    size_t mark = sink_mark("127.0.0.1");
    envelope_t *reply = send_call(&s);
    char *log = sink_since("127.0.0.1", mark), line[512];

    ck_assert_int_eq(envelope_code(reply), 250);
    ASSERT_RESULT(reply, 0, 250, "2.0.0");
    ASSERT_RESULT(reply, 1, 250, "2.0.0");
    ck_assert_str_eq(result_mx(reply, 0), "mx1.remote.test:19305");
    find_line(log, "helo ", line, sizeof(line));
    ck_assert_msg(strstr(line, "relay.example.test"), "%s", line);
    ck_assert_msg(count_lines(log, "tls ") == 1, "no STARTTLS:\n%s", log);
    find_line(log, "mail ", line, sizeof(line));
    ck_assert_msg(strstr(line, "<alice@example.test> SIZE=") != NULL, "%s",
                  line);
    ck_assert_int_eq(count_lines(log, "rcpt "), 2);
    ck_assert_msg(strstr(log, "<Carol@remote.test>"), "%s", log);
    ck_assert_msg(count_lines(log, "pipelined ") > 0, "not pipelined:\n%s",
                  log);
    ck_assert_msg(count_lines(log, "violation ") == 0, "%s", log);
    assert_body(log, MSG, strlen(MSG));
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* A big message, with long runs and many dot lines, arrives whole. */
START_TEST(test_deliver_big)
{
    buf_t msg = BUF_INIT;
    struct send s = {.domain = "remote.test", .rcpts = {"big@remote.test"}};
    size_t mark = sink_mark("127.0.0.1");
    envelope_t *reply;
    char *log;

    buf_adds(&msg, "Subject: big\r\n\r\n");
    for (int i = 0; i < 30000; i++)
        buf_printf(&msg, "%sline %d of the big one\r\n", i % 5 == 0 ? "." : "",
                   i);
    s.msg = msg.data;
    s.len = msg.len;
    reply = send_call(&s);
    ck_assert_int_eq(envelope_code(reply), 250);
    log = sink_since("127.0.0.1", mark);
    assert_body(log, msg.data, msg.len);
    free(log);
    buf_free(&msg);
    envelope_destroy(&reply);
}
END_TEST

/* One status per recipient, in request order, from the remote's replies:
 * only the accepted one gets the message. */
START_TEST(test_rcpt_codes)
{
    struct send s = {
        .domain = "remote.test",
        .rcpts = {"later@remote.test", "ok@remote.test", "bad@remote.test"}};
    size_t mark = sink_mark("127.0.0.1");
    envelope_t *reply = send_call(&s);
    char *log = sink_since("127.0.0.1", mark);

    ASSERT_RESULT(reply, 0, 450, "4.2.1");
    ASSERT_RESULT(reply, 1, 250, "2.0.0");
    ASSERT_RESULT(reply, 2, 550, "5.1.1");
    ck_assert_str_eq(value_get_str(result(reply, 2), ENV_KEY_TEXT),
                     "no such user");
    ck_assert_int_eq(envelope_code(reply), 550);
    ck_assert_int_eq(count_lines(log, "data "), 1);
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* RET, ENVID, NOTIFY and ORCPT go on to a next hop that offers DSN. */
START_TEST(test_dsn)
{
    struct send s = {
        .domain = "remote.test", .rcpts = {"bob@remote.test"}, .dsn = true};
    size_t mark = sink_mark("127.0.0.1");
    envelope_t *reply = send_call(&s);
    char *log = sink_since("127.0.0.1", mark), line[512];

    ck_assert_int_eq(envelope_code(reply), 250);
    find_line(log, "mail ", line, sizeof(line));
    ck_assert_msg(strstr(line, "RET=HDRS") && strstr(line, "ENVID=Q123"), "%s",
                  line);
    find_line(log, "rcpt ", line, sizeof(line));
    ck_assert_msg(strstr(line, "NOTIFY=SUCCESS,FAILURE") &&
                      strstr(line, "ORCPT=rfc822;bob@remote.test"),
                  "%s", line);
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* 8-bit content goes as BODY=8BITMIME where that is offered, intact. */
START_TEST(test_8bit_ok)
{
    struct send s = {.domain = "remote.test",
                     .rcpts = {"bob@remote.test"},
                     .msg = MSG8,
                     .len = sizeof(MSG8) - 1,
                     .eight_bit = true};
    size_t mark = sink_mark("127.0.0.1");
    envelope_t *reply = send_call(&s);
    char *log = sink_since("127.0.0.1", mark), line[512];

    ck_assert_int_eq(envelope_code(reply), 250);
    find_line(log, "mail ", line, sizeof(line));
    ck_assert_msg(strstr(line, "BODY=8BITMIME"), "%s", line);
    assert_body(log, MSG8, sizeof(MSG8) - 1);
    ck_assert_int_eq(count_lines(log, "violation "), 0);
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* ... and is refused per recipient (5.6.3) where it is not: nothing is
 * sent, not even MAIL. */
START_TEST(test_8bit_refused)
{
    struct send s = {.domain = "plain.test",
                     .rcpts = {"a@plain.test", "b@plain.test"},
                     .msg = MSG8,
                     .len = sizeof(MSG8) - 1,
                     .eight_bit = true};
    size_t mark = sink_mark("127.0.0.5");
    envelope_t *reply = send_call(&s);
    char *log = sink_since("127.0.0.5", mark);

    ASSERT_RESULT(reply, 0, 554, "5.6.3");
    ASSERT_RESULT(reply, 1, 554, "5.6.3");
    ck_assert_str_eq(value_get_str(result(reply, 0), ENV_KEY_TEXT),
                     "8-bit content not accepted by next hop");
    ck_assert_int_eq(count_lines(log, "mail "), 0);
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* Without PIPELINING one command at a time; without STARTTLS in clear
 * (opportunistic TLS). */
START_TEST(test_lockstep_plain)
{
    struct send s = {.domain = "plain.test",
                     .rcpts = {"a@plain.test", "b@plain.test"}};
    size_t mark = sink_mark("127.0.0.5");
    envelope_t *reply = send_call(&s);
    char *log = sink_since("127.0.0.5", mark);

    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_int_eq(count_lines(log, "pipelined "), 0);
    ck_assert_int_eq(count_lines(log, "violation "), 0);
    ck_assert_int_eq(count_lines(log, "tls "), 0);
    assert_body(log, MSG, strlen(MSG));
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* A message over the next hop's SIZE is refused without sending it. */
START_TEST(test_size)
{
    buf_t msg = BUF_INIT;
    struct send s = {.domain = "plain.test", .rcpts = {"a@plain.test"}};
    size_t mark = sink_mark("127.0.0.5");
    envelope_t *reply;
    char *log;

    buf_adds(&msg, "Subject: too big\r\n\r\n");
    while (msg.len < 150000)
        buf_adds(&msg, "0123456789012345678901234567890123456789\r\n");
    s.msg = msg.data;
    s.len = msg.len;
    reply = send_call(&s);
    ASSERT_RESULT(reply, 0, 552, "5.3.4");
    log = sink_since("127.0.0.5", mark);
    ck_assert_int_eq(count_lines(log, "mail "), 0);
    free(log);
    buf_free(&msg);
    envelope_destroy(&reply);
}
END_TEST

/* A route that requires TLS to a hop without STARTTLS: refused (4.7.4),
 * nothing sent in clear. */
START_TEST(test_tls_required_missing)
{
    struct send s = {.domain = "plainreq.test", .rcpts = {"a@plainreq.test"}};
    size_t mark = sink_mark("127.0.0.5");
    envelope_t *reply;
    char *log;

    route_set("plainreq.test", "127.0.0.5:19305;tls=required");
    reply = send_call(&s);
    log = sink_since("127.0.0.5", mark);
    ASSERT_RESULT(reply, 0, 451, "4.7.4");
    ck_assert_int_eq(count_lines(log, "mail "), 0);
    ck_assert_int_eq(count_lines(log, "conn "), 1);
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* A route that requires TLS to a hop with it: delivered under TLS. */
START_TEST(test_tls_required_ok)
{
    struct send s = {.domain = "tlsreq.test", .rcpts = {"a@tlsreq.test"}};
    size_t mark = sink_mark("127.0.0.1");
    envelope_t *reply;
    char *log;

    route_set("tlsreq.test", "127.0.0.1:19305;tls=required");
    reply = send_call(&s);
    log = sink_since("127.0.0.1", mark);
    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(result_mx(reply, 0), "127.0.0.1:19305");
    /* A connection kept from an earlier test may carry it: under TLS. */
    ck_assert_msg(
        count_lines(log, "tls ") == 1 ||
            (count_lines(log, "conn ") == 0 && count_lines(log, "data ") == 1),
        "%s", log);
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* A domain in U-labels (an SMTPUTF8 recipient's, RFC 6531 3.2) is routed
 * by its A-labels, the form routes are kept in (the guard hands over the
 * addresses with A-labels already); a name that is no valid IDNA name
 * can never be reached: 550 5.1.2, not a retry. */
START_TEST(test_idna_domain)
{
    struct send s = {.domain = "M\xc3\xbcnchen.test",
                     .rcpts = {"a@xn--mnchen-3ya.test"}};
    struct send bad = {.domain = "a\xe2\x98\x83\xef\xbf\xbf.test",
                       .rcpts = {"a@example.test"}};
    envelope_t *reply, *req;
    bus_client_t *c;
    char why[256];

    route_set("xn--mnchen-3ya.test", "127.0.0.1:19305");
    reply = send_call(&s);
    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(result_mx(reply, 0), "127.0.0.1:19305");
    envelope_destroy(&reply);
    route_del("xn--mnchen-3ya.test");
    /* Refused whole, before any recipient is tried: no results. */
    req = send_new(&bad);
    c = bus_client_new(NULL, W.clients, 1 << 20, why, sizeof(why));
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(bus_client_call(c, &req, &reply, why, sizeof(why)), 0);
    bus_client_destroy(&c);
    ck_assert_int_eq(envelope_code(reply), 550);
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "5.1.2");
    envelope_destroy(&reply);
}
END_TEST

/* tls=verify: the certificate must chain to relay.tls_ca and name the
 * route's host. */
START_TEST(test_tls_verify)
{
    struct send s = {.domain = "verify.test", .rcpts = {"a@verify.test"}};
    struct send bad = {.domain = "verifybad.test",
                       .rcpts = {"a@verifybad.test"}};
    envelope_t *reply;

    route_set("verify.test", "mx1.remote.test:19305;tls=verify");
    reply = send_call(&s);
    ck_assert_int_eq(envelope_code(reply), 250);
    envelope_destroy(&reply);
    /* By address, the name the certificate holds does not match. */
    route_set("verifybad.test", "127.0.0.1:19305;tls=verify");
    reply = send_call(&bad);
    ASSERT_RESULT(reply, 0, 451, "4.7.5");
    envelope_destroy(&reply);
}
END_TEST

/* RFC 5321 5.1: the lowest preference first, whatever the listing. */
START_TEST(test_mx_order)
{
    struct send s = {.domain = "pref.test", .rcpts = {"a@pref.test"}};
    size_t ma = sink_mark("127.0.0.3"), mb = sink_mark("127.0.0.4");
    envelope_t *reply = send_call(&s);
    char *la = sink_since("127.0.0.3", ma), *lb = sink_since("127.0.0.4", mb);

    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(result_mx(reply, 0), "mxb.pref.test:19305");
    ck_assert_int_eq(count_lines(lb, "data "), 1);
    ck_assert_int_eq(count_lines(la, "conn "), 0);
    free(la);
    free(lb);
    envelope_destroy(&reply);
}
END_TEST

/* RFC 5321 5.1: an MX list that names us (by an address of our MTA door,
 * or by our hostname) loses our record and every one not more preferred;
 * with none left the mail would loop back, which is final (554 5.4.6),
 * though a host that would take it (127.0.0.1) is listed after us. */
START_TEST(test_mx_self)
{
    struct send self = {.domain = "self.test", .rcpts = {"a@self.test"}};
    struct send named = {.domain = "named.test", .rcpts = {"a@named.test"}};
    struct send second = {.domain = "second.test", .rcpts = {"a@second.test"}};
    size_t mark = sink_mark("127.0.0.1");
    envelope_t *reply;
    char *log;

    reply = send_call(&self);
    ASSERT_RESULT(reply, 0, 554, "5.4.6");
    envelope_destroy(&reply);
    reply = send_call(&named);
    ASSERT_RESULT(reply, 0, 554, "5.4.6");
    envelope_destroy(&reply);
    log = sink_since("127.0.0.1", mark);
    ck_assert_msg(count_lines(log, "data ") == 0, "%s", log);
    free(log);
    /* We are the backup: the better MX takes it. */
    reply = send_call(&second);
    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(result_mx(reply, 0), "first.second.test:19305");
    envelope_destroy(&reply);
}
END_TEST

/* The first MX refuses connections: the second takes the mail. */
START_TEST(test_mx_fallback)
{
    struct send s = {.domain = "backup.test", .rcpts = {"a@backup.test"}};
    size_t mark = sink_mark("127.0.0.1");
    envelope_t *reply = send_call(&s);
    char *log = sink_since("127.0.0.1", mark);

    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(result_mx(reply, 0), "mx2.backup.test:19305");
    ck_assert_int_eq(count_lines(log, "data "), 1);
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* The first MX answers 421: the second takes the mail. */
START_TEST(test_mx_busy)
{
    struct send s = {.domain = "busy.test", .rcpts = {"a@busy.test"}};
    size_t m6 = sink_mark("127.0.0.6"), m3 = sink_mark("127.0.0.3");
    envelope_t *reply = send_call(&s);
    char *l6 = sink_since("127.0.0.6", m6), *l3 = sink_since("127.0.0.3", m3);

    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(result_mx(reply, 0), "mx2.busy.test:19305");
    ck_assert_int_eq(count_lines(l6, "conn "), 1);
    ck_assert_int_eq(count_lines(l3, "data "), 1);
    free(l6);
    free(l3);
    envelope_destroy(&reply);
}
END_TEST

/* No MX host can be reached: a temporary failure for every recipient. */
START_TEST(test_unreachable)
{
    struct send s = {.domain = "dead.test",
                     .rcpts = {"a@dead.test", "b@dead.test"}};
    envelope_t *reply = send_call(&s);

    ASSERT_RESULT(reply, 0, 451, "4.4.1");
    ASSERT_RESULT(reply, 1, 451, "4.4.1");
    ck_assert_int_eq(envelope_code(reply), 451);
    envelope_destroy(&reply);
}
END_TEST

struct dns_row {
    const char *domain;
    int code;
    const char *ecode;
};

/* What the DNS says decides alone: RFC 7505 null MX, NXDOMAIN, no mail
 * host address, and a server that refuses to answer. */
static const struct dns_row dns_rows[] = {
    {"nullmx.test", 556, "5.1.10"},
    {"nothing.test", 550, "5.1.2"},
    {"nohost.test", 550, "5.4.4"},
    {"remote.example", 451, "4.4.3"},
};

START_TEST(test_dns_failures)
{
    const struct dns_row *row = &dns_rows[_i];
    char rcpt[128];
    struct send s = {.domain = row->domain, .rcpts = {rcpt}};
    envelope_t *reply;

    snprintf(rcpt, sizeof(rcpt), "a@%s", row->domain);
    reply = send_call(&s);
    ASSERT_RESULT(reply, 0, row->code, row->ecode);
    ck_assert_int_eq(envelope_code(reply), row->code);
    envelope_destroy(&reply);
}
END_TEST

/* No MX: the domain's own address (RFC 5321 5.1, the implicit MX). */
START_TEST(test_implicit_mx)
{
    struct send s = {.domain = "implicit.test", .rcpts = {"a@implicit.test"}};
    size_t mark = sink_mark("127.0.0.1");
    envelope_t *reply = send_call(&s);
    char *log = sink_since("127.0.0.1", mark);

    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(result_mx(reply, 0), "implicit.test:19305");
    ck_assert_int_eq(count_lines(log, "data "), 1);
    free(log);
    envelope_destroy(&reply);
}
END_TEST

/* Two messages to one host: one TCP connection (RSET between), which the
 * relay closes with QUIT once it has been idle relay.idle_ms. */
START_TEST(test_reuse)
{
    struct send s = {.domain = "reuse.test", .rcpts = {"a@reuse.test"}};
    size_t mark = sink_mark("127.0.0.8");
    envelope_t *r1 = send_call(&s), *r2;
    char *log, first[256], *second;
    int64_t until;

    s.rcpts[0] = "b@reuse.test";
    r2 = send_call(&s);
    ck_assert_int_eq(envelope_code(r1), 250);
    ck_assert_int_eq(envelope_code(r2), 250);
    log = sink_since("127.0.0.8", mark);
    ck_assert_msg(count_lines(log, "conn ") == 1, "%s", log);
    ck_assert_int_eq(count_lines(log, "data "), 2);
    find_line(log, "data ", first, sizeof(first));
    second = strstr(strstr(log, first) + 1, "\ndata ");
    ck_assert_ptr_nonnull(second);
    /* "data N": the same connection number. */
    ck_assert_int_eq(atoi(first + 5), atoi(second + 6));
    ck_assert_msg(count_lines(log, "tls ") == 1, "%s", log);
    free(log);
    /* Idle past relay.idle_ms (1500): QUIT, and the sink sees it go. */
    until = test_now_ms() + 5000;
    do {
        usleep(100000);
        log = sink_since("127.0.0.8", mark);
        if (count_lines(log, "close ") == 1)
            break;
        free(log);
        log = NULL;
    } while (test_now_ms() < until);
    ck_assert_msg(log != NULL, "the idle connection was never closed");
    free(log);
    envelope_destroy(&r1);
    envelope_destroy(&r2);
}
END_TEST

/* Postfix's smtp-sink takes it too: its dump holds our envelope and the
 * message (with LF line ends, after the sink's own headers). */
START_TEST(test_postfix_sink)
{
    struct send s = {.domain = "postfix.test",
                     .rcpts = {"bob@postfix.test", "carol@postfix.test"}};
    envelope_t *reply = send_call(&s);
    char dir[160], path[512], *lf, *p;
    buf_t dump = BUF_INIT;
    struct dirent *de;
    DIR *d;
    FILE *f;
    char chunk[4096];
    size_t n, i = 0;

    ck_assert_int_eq(envelope_code(reply), 250);
    ASSERT_RESULT(reply, 1, 250, "2.0.0");
    snprintf(dir, sizeof(dir), "%s/postfix", W.dir);
    d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name), i++;
    closedir(d);
    ck_assert_uint_eq(i, 1);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_add(&dump, chunk, n);
    fclose(f);
    buf_addc(&dump, '\0');
    /* smtp-sink offers no SIZE: MAIL carries no parameter. */
    ck_assert_msg(strstr(dump.data, "X-Mail-Args: <alice@example.test>\n"),
                  "%s", dump.data);
    ck_assert_msg(strstr(dump.data, "X-Rcpt-Args: <bob@postfix.test>") &&
                      strstr(dump.data, "X-Rcpt-Args: <carol@postfix.test>"),
                  "%s", dump.data);
    ck_assert_msg(strstr(dump.data, "X-Helo-Args: relay.example.test"), "%s",
                  dump.data);
    /* The message with LF for CRLF follows the sink's Received header. */
    lf = strdup(MSG);
    for (p = lf, i = 0; MSG[i]; i++)
        if (!(MSG[i] == '\r' && MSG[i + 1] == '\n'))
            *p++ = MSG[i];
    *p = '\0';
    p = strstr(dump.data, "\nFrom: alice@example.test\n");
    ck_assert_msg(p != NULL, "%s", dump.data);
    ck_assert_msg(strncmp(p + 1, lf, strlen(lf)) == 0, "%s", dump.data);
    free(lf);
    buf_free(&dump);
    envelope_destroy(&reply);
}
END_TEST

/* A next hop that never answers the end of data: the relay's timeout
 * (relay.timeout_data_end_ms) ends it with a 4xx. */
START_TEST(test_timeout)
{
    struct send s = {.domain = "slow.test", .rcpts = {"a@slow.test"}};
    envelope_t *reply;
    int64_t t0 = test_now_ms();

    reply = send_call(&s);
    ASSERT_RESULT(reply, 0, 451, "4.4.2");
    ck_assert_msg(
        strstr(value_get_str(result(reply, 0), ENV_KEY_TEXT), "data_end"), "%s",
        value_get_str(result(reply, 0), ENV_KEY_TEXT));
    ck_assert_int_lt(test_now_ms() - t0, 4900);
    envelope_destroy(&reply);
}
END_TEST

/* A request the queue should never send is answered with a 4xx, and the
 * relay goes on. */
START_TEST(test_bad_request)
{
    envelope_t *req = envelope_new("relay.send", NULL, 5000), *reply = NULL;
    value_t *body = envelope_body(req), *arr = value_new_array(), *v;
    char why[256];
    bus_client_t *c =
        bus_client_new(NULL, W.clients, 1 << 20, why, sizeof(why));
    int rc;

    value_set_str(body, ENV_KEY_DOMAIN, "remote.test");
    value_set_str(body, ENV_KEY_MAIL_FROM, "");
    v = value_new_bin("x\r\n", 3);
    value_set_take(body, ENV_KEY_MESSAGE, &v);
    v = value_new_str("not a map");
    value_push_take(arr, &v);
    value_set_take(body, ENV_KEY_RCPTS, &arr);
    rc = bus_client_call(c, &req, &reply, why, sizeof(why));
    ck_assert_msg(rc == 0, "%s", why);
    ck_assert_int_eq(envelope_code(reply), 451);
    envelope_destroy(&reply);
    bus_client_destroy(&c);
}
END_TEST

/* ---------------------------------------------------------------------
 * One connection per host: more messages wait in line, and each takes
 * the connection the one before left.
 */

#define LIMIT 19310

static const struct sink limit_sinks[] = {
    {"127.0.0.1", "mx1.remote.test", "PIPELINING|8BITMIME", NULL, NULL, 300},
};

static void
limit_start(void)
{
    static const char *const extra[] = {"SAMOTOP_RELAY_MAX_PER_HOST=1", NULL};

    world_start(LIMIT, limit_sinks, 1, true, false, extra);
}

struct pending {
    int left;
    int codes[3];
    int n;
    loop_t *loop;
};

static void
on_limit_reply(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct pending *p = arg;

    (void)text;
    p->codes[p->n++] = err == 0 ? envelope_code(reply) : -err;
    if (--p->left == 0)
        loop_stop(p->loop);
}

static void
on_limit_timeout(loop_t *loop, void *arg)
{
    *(loop_timer_t **)arg = NULL; /* the handle is gone once it fires */
    loop_stop(loop);
}

START_TEST(test_limit_per_host)
{
    struct send s = {.domain = "limit.test", .rcpts = {"a@limit.test"}};
    struct pending p = {.left = 3};
    char why[256];
    loop_t *loop = loop_new();
    bus_client_t *c =
        bus_client_new(loop, W.clients, 1 << 20, why, sizeof(why));
    envelope_t *warm = send_call(&s); /* the relay is up */
    loop_timer_t *t;
    char *log;
    int64_t t0;

    envelope_destroy(&warm);
    p.loop = loop;
    t0 = test_now_ms();
    for (int i = 0; i < 3; i++) {
        envelope_t *req = send_new(&s);

        ck_assert_int_eq(bus_client_send_take(c, &req, on_limit_reply, &p), 0);
    }
    t = loop_timer_add(loop, 15000, on_limit_timeout, &t);
    loop_run(loop);
    loop_timer_cancel(loop, &t);
    ck_assert_int_eq(p.left, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(p.codes[i], 250);
    /* One at a time, each 300 ms at the sink. */
    ck_assert_int_ge(test_now_ms() - t0, 850);
    log = sink_log("127.0.0.1");
    ck_assert_msg(count_lines(log, "conn ") == 1, "%s", log);
    ck_assert_int_eq(count_lines(log, "data "), 4);
    free(log);
    bus_client_destroy(&c);
    loop_destroy(&loop);
}
END_TEST

static void
on_stop_relay(loop_t *loop, void *arg)
{
    (void)loop;
    *(loop_timer_t **)arg = NULL; /* the handle is gone once it fires */
    kill(W.relay, SIGTERM);
}

/* Stopped with one message at the sink and two in line: every request is
 * answered (451 4.3.2), and the relay exits cleanly (world_stop() checks
 * its status, which ASan makes non-zero on a leak). Last in its world. */
START_TEST(test_shutdown_busy)
{
    struct send s = {.domain = "limit.test", .rcpts = {"a@limit.test"}};
    struct pending p = {.left = 3};
    char why[256];
    loop_t *loop = loop_new();
    bus_client_t *c =
        bus_client_new(loop, W.clients, 1 << 20, why, sizeof(why));
    envelope_t *warm = send_call(&s);
    loop_timer_t *t, *stop;

    envelope_destroy(&warm);
    p.loop = loop;
    for (int i = 0; i < 3; i++) {
        envelope_t *req = send_new(&s);

        ck_assert_int_eq(bus_client_send_take(c, &req, on_limit_reply, &p), 0);
    }
    stop = loop_timer_add(loop, 100, on_stop_relay, &stop);
    t = loop_timer_add(loop, 15000, on_limit_timeout, &t);
    loop_run(loop);
    loop_timer_cancel(loop, &t);
    loop_timer_cancel(loop, &stop);
    ck_assert_int_eq(p.left, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(p.codes[i] == 451 || p.codes[i] == 250, "reply %d: %d", i,
                      p.codes[i]);
    ck_assert_int_eq(p.codes[2], 451);
    bus_client_destroy(&c);
    loop_destroy(&loop);
}
END_TEST

/* ---------------------------------------------------------------------
 * No DNS server at all: routes still work (the smarthost "*" and a
 * domain's own), MX lookups fail with a 4xx.
 */

#define NODNS 19320

static const struct sink nodns_sinks[] = {
    {"127.0.0.1", "smart.test", "PIPELINING|8BITMIME", NULL, NULL, 0},
    {"127.0.0.2", "own.test", "PIPELINING|8BITMIME", NULL, NULL, 0},
};

static void
nodns_start(void)
{
    world_start(NODNS, nodns_sinks, 2, false, false, NULL);
}

START_TEST(test_no_dns)
{
    struct send s = {.domain = "remote.test", .rcpts = {"a@remote.test"}};
    envelope_t *reply = send_call(&s);

    ASSERT_RESULT(reply, 0, 451, "4.4.3");
    envelope_destroy(&reply);
}
END_TEST

START_TEST(test_smarthost)
{
    struct send s = {.domain = "anywhere.test", .rcpts = {"a@anywhere.test"}};
    struct send own = {.domain = "own.test", .rcpts = {"a@own.test"}};
    envelope_t *reply;
    char *log;

    route_set("*", "127.0.0.1:19325;tls=opportunistic");
    route_set("own.test", "[127.0.0.2]:19325");
    reply = send_call(&s);
    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(result_mx(reply, 0), "127.0.0.1:19325");
    envelope_destroy(&reply);
    /* A domain's own route beats the smarthost. */
    reply = send_call(&own);
    ck_assert_int_eq(envelope_code(reply), 250);
    log = sink_log("127.0.0.2");
    ck_assert_int_eq(count_lines(log, "data "), 1);
    free(log);
    envelope_destroy(&reply);
    /* A route by name needs the DNS, which is down. */
    route_set("*", "smart.test:19325");
    reply = send_call(&s);
    ASSERT_RESULT(reply, 0, 451, "4.4.3");
    envelope_destroy(&reply);
    route_set("*", "not a route;tls=sometimes");
    reply = send_call(&s);
    ASSERT_RESULT(reply, 0, 451, "4.3.5");
    envelope_destroy(&reply);
    route_del("*");
}
END_TEST

/* ---------------------------------------------------------------------
 * lib/dns alone, against dnsmasq and against a server that never
 * answers.
 */

#define DNSW 19330

struct lookup {
    loop_t *loop;
    struct dns_result res;
    int calls;
};

static void
on_lookup(void *arg, const struct dns_result *res)
{
    struct lookup *l = arg;

    l->res = *res;
    l->calls++;
    loop_stop(l->loop);
}

static void
on_guard(loop_t *loop, void *arg)
{
    *(loop_timer_t **)arg = NULL; /* the handle is gone once it fires */
    loop_stop(loop);
}

/* Runs one lookup to its end (mx: dns_mx, else dns_host). */
static void
lookup(const char *servers, const char *name, bool mx, struct lookup *l)
{
    char why[256];
    loop_t *loop = loop_new();
    dns_t *dns = dns_new(loop, servers, 200, 2, why, sizeof(why));
    loop_timer_t *guard;

    ck_assert_msg(dns != NULL, "%s", why);
    memset(l, 0, sizeof(*l));
    l->loop = loop;
    if (mx)
        dns_mx(dns, name, on_lookup, l);
    else
        dns_host(dns, name, on_lookup, l);
    ck_assert_int_eq(l->calls, 0); /* never from inside the call */
    guard = loop_timer_add(loop, 10000, on_guard, &guard);
    loop_run(loop);
    loop_timer_cancel(loop, &guard);
    ck_assert_int_eq(l->calls, 1);
    ck_assert_int_eq(dns_pending(dns), 0);
    dns_destroy(&dns);
    loop_destroy(&loop);
}

static void
dnsw_start(void)
{
    memset(&W, 0, sizeof(W));
    W.base = DNSW;
    W.dnsmasq = dnsmasq_start(DNSW + 4);
}

static void
dnsw_stop(void)
{
    if (W.dnsmasq > 0)
        test_stop(W.dnsmasq, SIGTERM, 2000);
    memset(&W, 0, sizeof(W));
}

#define DNS_SERVER "127.0.0.1:19334"

START_TEST(test_dns_mx)
{
    struct lookup l;

    lookup(DNS_SERVER, "remote.test", true, &l);
    ck_assert_int_eq(l.res.status, DNS_OK);
    ck_assert(!l.res.implicit);
    ck_assert_int_eq(l.res.nhosts, 1);
    ck_assert_str_eq(l.res.hosts[0].name, "mx1.remote.test");
    ck_assert_int_eq(l.res.hosts[0].pref, 10);
    ck_assert_int_eq(l.res.hosts[0].naddrs, 1);
    ck_assert_str_eq(l.res.hosts[0].addrs[0].text, "127.0.0.1");
    /* A trailing dot is the same name. */
    lookup(DNS_SERVER, "pref.test.", true, &l);
    ck_assert_int_eq(l.res.nhosts, 2);
    ck_assert_str_eq(l.res.hosts[0].name, "mxb.pref.test");
    ck_assert_str_eq(l.res.hosts[1].name, "mxa.pref.test");
    /* IPv4 before IPv6. */
    lookup(DNS_SERVER, "dual.test", true, &l);
    ck_assert(l.res.implicit);
    ck_assert_int_eq(l.res.hosts[0].naddrs, 2);
    ck_assert_str_eq(l.res.hosts[0].addrs[0].text, "127.0.0.1");
    ck_assert_str_eq(l.res.hosts[0].addrs[1].text, "::1");
    ck_assert_int_eq(l.res.hosts[0].addrs[1].sa.ss_family, AF_INET6);
}
END_TEST

/* Equal preferences come in random order, all of them. */
START_TEST(test_dns_mx_shuffle)
{
    struct lookup l;
    int first[3] = {0, 0, 0};

    for (int i = 0; i < 30; i++) {
        lookup(DNS_SERVER, "equal.test", true, &l);
        ck_assert_int_eq(l.res.nhosts, 3);
        first[l.res.hosts[0].name[1] - '1']++;
    }
    ck_assert_msg((first[0] > 0) + (first[1] > 0) + (first[2] > 0) >= 2,
                  "always the same first: %d %d %d", first[0], first[1],
                  first[2]);
}
END_TEST

static const struct dns_row dns_alone_rows[] = {
    {"nullmx.test", 556, "5.1.10"},
    {"nothing.test", 550, "5.1.2"},
    {"nohost.test", 550, "5.4.4"},
    {"remote.example", 451, "4.4.3"}, /* REFUSED */
    {"bad name.test", 550, "5.1.2"},
};

START_TEST(test_dns_failure_codes)
{
    const struct dns_row *row = &dns_alone_rows[_i];
    struct lookup l;

    lookup(DNS_SERVER, row->domain, true, &l);
    ck_assert_int_ne(l.res.status, DNS_OK);
    ck_assert_int_eq(l.res.nhosts, 0);
    ck_assert_msg(l.res.code == row->code &&
                      strcmp(l.res.ecode, row->ecode) == 0,
                  "%s: got %d %s (%s), want %d %s", row->domain, l.res.code,
                  l.res.ecode, l.res.text, row->code, row->ecode);
}
END_TEST

/* A server that takes queries and never answers: a 4xx after the
 * timeouts, not a hang. */
START_TEST(test_dns_silent)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons(DNSW + 5)};
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct lookup l;
    int64_t t0 = test_now_ms();

    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    lookup("127.0.0.1:19335", "remote.test", true, &l);
    ck_assert_int_eq(l.res.status, DNS_TEMPFAIL);
    ck_assert_int_eq(l.res.code, 451);
    ck_assert_str_eq(l.res.ecode, "4.4.3");
    ck_assert_int_lt(test_now_ms() - t0, 5000);
    close(fd);
    /* A port with nobody: refused at once, the same answer. */
    lookup("127.0.0.1:19336", "remote.test", true, &l);
    ck_assert_int_eq(l.res.code, 451);
}
END_TEST

START_TEST(test_dns_host)
{
    struct lookup l;

    lookup(DNS_SERVER, "mx1.remote.test", false, &l);
    ck_assert_int_eq(l.res.status, DNS_OK);
    ck_assert_str_eq(l.res.hosts[0].addrs[0].text, "127.0.0.1");
    /* Addresses need no DNS at all. */
    lookup("127.0.0.1:19336", "192.0.2.7", false, &l);
    ck_assert_str_eq(l.res.hosts[0].addrs[0].text, "192.0.2.7");
    lookup("127.0.0.1:19336", "[IPv6:2001:db8::1]", false, &l);
    ck_assert_str_eq(l.res.hosts[0].addrs[0].text, "2001:db8::1");
    /* A route's host that does not exist is a 4xx, not a bounce. */
    lookup(DNS_SERVER, "ghost.remote.test", false, &l);
    ck_assert_int_eq(l.res.code, 451);
}
END_TEST

/* Cancelled and destroyed queries never call back. */
START_TEST(test_dns_cancel)
{
    char why[256];
    loop_t *loop = loop_new();
    dns_t *dns = dns_new(loop, DNS_SERVER, 200, 2, why, sizeof(why));
    struct lookup a = {.loop = loop}, b = {.loop = loop}, c = {.loop = loop};
    dns_query_t *qa, *qb;
    loop_timer_t *guard;

    qa = dns_mx(dns, "remote.test", on_lookup, &a);
    qb = dns_mx(dns, "bad name", on_lookup, &b); /* answered at once */
    dns_mx(dns, "pref.test", on_lookup, &c);
    dns_cancel(dns, &qa);
    dns_cancel(dns, &qb);
    ck_assert_ptr_null(qa);
    ck_assert_int_eq(dns_pending(dns), 1);
    guard = loop_timer_add(loop, 10000, on_guard, &guard);
    loop_run(loop);
    loop_timer_cancel(loop, &guard);
    ck_assert_int_eq(a.calls + b.calls, 0);
    ck_assert_int_eq(c.calls, 1);
    /* Out at destruction: dropped without a call, and without a leak. */
    dns_mx(dns, "remote.test", on_lookup, &a);
    dns_host(dns, "192.0.2.1", on_lookup, &a);
    dns_destroy(&dns);
    ck_assert_int_eq(a.calls, 0);
    loop_destroy(&loop);
}
END_TEST

START_TEST(test_dns_bad_servers)
{
    char why[256];
    loop_t *loop = loop_new();

    ck_assert_ptr_null(
        dns_new(loop, "not an address", 100, 1, why, sizeof(why)));
    ck_assert_msg(strstr(why, "not an address"), "%s", why);
    loop_destroy(&loop);
}
END_TEST

static Suite *
relay_suite(void)
{
    Suite *s = suite_create("relay");
    TCase *tc;

    tc = tcase_create("dns");
    tcase_add_unchecked_fixture(tc, dnsw_start, dnsw_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_dns_mx);
    tcase_add_test(tc, test_dns_mx_shuffle);
    tcase_add_loop_test(tc, test_dns_failure_codes, 0,
                        sizeof(dns_alone_rows) / sizeof(dns_alone_rows[0]));
    tcase_add_test(tc, test_dns_silent);
    tcase_add_test(tc, test_dns_host);
    tcase_add_test(tc, test_dns_cancel);
    tcase_add_test(tc, test_dns_bad_servers);
    suite_add_tcase(s, tc);

    tc = tcase_create("deliver");
    tcase_add_unchecked_fixture(tc, main_start, world_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_deliver);
    tcase_add_test(tc, test_deliver_big);
    tcase_add_test(tc, test_rcpt_codes);
    tcase_add_test(tc, test_dsn);
    tcase_add_test(tc, test_8bit_ok);
    tcase_add_test(tc, test_8bit_refused);
    tcase_add_test(tc, test_lockstep_plain);
    tcase_add_test(tc, test_size);
    tcase_add_test(tc, test_tls_required_missing);
    tcase_add_test(tc, test_tls_required_ok);
    tcase_add_test(tc, test_idna_domain);
    tcase_add_test(tc, test_mx_self);
    tcase_add_test(tc, test_tls_verify);
    tcase_add_test(tc, test_mx_order);
    tcase_add_test(tc, test_mx_fallback);
    tcase_add_test(tc, test_mx_busy);
    tcase_add_test(tc, test_unreachable);
    tcase_add_loop_test(tc, test_dns_failures, 0,
                        sizeof(dns_rows) / sizeof(dns_rows[0]));
    tcase_add_test(tc, test_implicit_mx);
    tcase_add_test(tc, test_reuse);
    tcase_add_test(tc, test_postfix_sink);
    tcase_add_test(tc, test_timeout);
    tcase_add_test(tc, test_bad_request);
    suite_add_tcase(s, tc);

    tc = tcase_create("limit");
    tcase_add_unchecked_fixture(tc, limit_start, world_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_limit_per_host);
    tcase_add_test(tc, test_shutdown_busy);
    suite_add_tcase(s, tc);

    tc = tcase_create("nodns");
    tcase_add_unchecked_fixture(tc, nodns_start, world_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_no_dns);
    tcase_add_test(tc, test_smarthost);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(relay_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
