/*
 * test_mailbox_ticket.c - mailbox.ticket and the internal IMAP door
 * (actors/mailbox/mailbox_imap_proxy.c) against the real samotop-bus and
 * samotop-mailbox processes on loopback: the mailbox owns shard 0 of 2 and
 * keeps its internal door on a port of its own. A ticket logs its account
 * in once and never again, not for another account, not after it expired;
 * the door refuses passwords and made-up tickets; a copy refuses tickets
 * for accounts it does not own, and requests without an account.
 *
 * Ports 21350-21399 belong to this suite; each test takes a block of ten:
 * broker 0-2, IMAP 3, IMAPS 4, LMTP 5, Redis (never started) 6, the
 * internal door 7, metrics 8.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <check.h>

#include "bus.h"
#include "lib/err.h"
#include "lib/shard.h"
#include "tests/testlib.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))
#define BASE 21350

struct rig {
    char base[64], data[96];
    char clients[64];
    char env[17][160];
    const char *envp[18];
    pid_t broker, mailbox;
    int door; /* the internal door's port */
    bus_client_t *c;
};

/* door_port: the internal door's, or 0 for one the kernel picks (the
 * default without mailbox.imap_internal), learnt from the tickets. */
static void
rig_start(struct rig *r, int base, int ticket_ms, int door_port)
{
    char bus_bin[4096], mb_bin[4096], why[256];
    const char *bus_argv[] = {bus_bin, "--instance", "t", NULL};
    const char *mb_argv[] = {mb_bin, "--instance", "m", NULL};
    int i = 0;

    snprintf(bus_bin, sizeof(bus_bin), "%s", test_bin("samotop-bus"));
    snprintf(mb_bin, sizeof(mb_bin), "%s", test_bin("samotop-mailbox"));
    snprintf(r->base, sizeof(r->base), "/tmp/samotop-tktest-XXXXXX");
    ck_assert_msg(mkdtemp(r->base) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(r->data, sizeof(r->data), "%s/var", r->base);
    snprintf(r->clients, sizeof(r->clients), "tcp://127.0.0.1:%d", base);
    r->door = door_port;
    snprintf(r->env[i++], 160, "SAMOTOP_BROKER_CLIENTS=%s", r->clients);
    snprintf(r->env[i++], 160, "SAMOTOP_BROKER_WORKERS=tcp://127.0.0.1:%d",
             base + 1);
    snprintf(r->env[i++], 160, "SAMOTOP_BROKER_TRACE=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(r->env[i++], 160, "SAMOTOP_BUS_CLIENTS=%s", r->clients);
    snprintf(r->env[i++], 160, "SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:%d",
             base + 1);
    snprintf(r->env[i++], 160, "SAMOTOP_BUS_TRACE=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(r->env[i++], 160, "SAMOTOP_LISTEN_IMAP=127.0.0.1:%d", base + 3);
    snprintf(r->env[i++], 160, "SAMOTOP_LISTEN_IMAPS=127.0.0.1:%d", base + 4);
    snprintf(r->env[i++], 160, "SAMOTOP_LISTEN_LMTP=127.0.0.1:%d", base + 5);
    snprintf(r->env[i++], 160, "SAMOTOP_REDIS_PORT=%d", base + 6);
    snprintf(r->env[i++], 160, "SAMOTOP_MAILBOX_SHARDS=2");
    snprintf(r->env[i++], 160, "SAMOTOP_MAILBOX_SHARD=0");
    snprintf(r->env[i++], 160, "SAMOTOP_MAILBOX_IMAP_TICKET_MS=%d", ticket_ms);
    snprintf(r->env[i++], 160, "SAMOTOP_DATA=%s", r->data);
    snprintf(r->env[i++], 160, "SAMOTOP_HOSTNAME=mx.test");
    if (door_port != 0) /* else the default, as without the key */
        snprintf(r->env[i++], 160, "SAMOTOP_MAILBOX_IMAP_INTERNAL=127.0.0.1:%d",
                 r->door);
    for (int j = 0; j < i; j++)
        r->envp[j] = r->env[j];
    r->envp[i] = NULL;
    r->broker = test_spawn(bus_argv, r->envp);
    /* The mailbox's metrics door; the broker would take it too. */
    snprintf(r->env[i], 160, "SAMOTOP_METRICS_LISTEN=127.0.0.1:%d", base + 8);
    r->envp[i] = r->env[i];
    r->envp[++i] = NULL;
    ck_assert_int_le(i, 17);
    r->mailbox = test_spawn(mb_argv, r->envp);
    r->c = bus_client_new(NULL, r->clients, 16 << 20, why, sizeof(why));
    ck_assert_msg(r->c != NULL, "bus_client_new: %s", why);
    ck_assert_msg(test_wait_ping(r->c, "mailbox.ping", "mailbox.0", 10000) >= 0,
                  "the mailbox never answered");
}

static void
rig_stop(struct rig *r)
{
    bus_client_destroy(&r->c);
    test_stop_clean(&r->mailbox, "samotop-mailbox", 5000);
    test_stop(r->broker, SIGTERM, 2000);
    test_rm_tree(r->base);
}

/* The n-th account (from 0) that shard k of 2 owns, into out. */
static const char *
account_on(char *out, size_t outlen, int k, int n)
{
    for (int i = 0;; i++) {
        snprintf(out, outlen, "user%d@example.test", i);
        if (shard_of(out, strlen(out), 2) == k && n-- == 0)
            return out;
    }
}

/* Asks for a ticket for account: the reply's code, and on 250 the ticket
 * and address into the buffers. */
static int
ask_ticket(struct rig *r, const char *account, char *ticket, size_t tlen,
           char *addr, size_t alen)
{
    envelope_t *req = envelope_new("mailbox.ticket", NULL, 5000), *reply;
    char why[256];
    int rc, code;

    value_set_str(envelope_body(req), ENV_KEY_ACCOUNT, account);
    value_set_str(envelope_body(req), ENV_KEY_CLIENT_IP, "192.0.2.7");
    rc = bus_client_call_to(r->c, "mailbox.0", &req, &reply, why, sizeof(why));
    ck_assert_msg(rc == 0, "mailbox.ticket: %s (%s)", err_name(rc), why);
    ck_assert_str_eq(envelope_type(reply), "mailbox.ticket.reply");
    code = envelope_code(reply);
    if (code == 250) {
        const char *t = envelope_get_str(reply, ENV_KEY_TICKET);
        const char *a = envelope_get_str(reply, ENV_KEY_ADDR);

        ck_assert_msg(t && strlen(t) == 48 &&
                          strspn(t, "0123456789abcdef") == 48,
                      "ticket \"%s\"", t ? t : "(none)");
        ck_assert_msg(a != NULL, "no addr");
        snprintf(ticket, tlen, "%s", t);
        snprintf(addr, alen, "%s", a);
        ck_assert_msg(strncmp(a, "127.0.0.1:", 10) == 0 && atoi(a + 10) > 0,
                      "addr \"%s\"", a);
        if (r->door == 0)
            r->door = atoi(a + 10);
    }
    envelope_destroy(&reply);
    return code;
}

/* A connection to the internal door, greeting read. */
static int tcp_open(int port);

static FILE *
door_open(struct rig *r)
{
    char line[1024];
    FILE *f = fdopen(tcp_open(r->door), "r+");

    setvbuf(f, NULL, _IONBF, 0);
    ck_assert_msg(fgets(line, sizeof(line), f) != NULL, "no greeting");
    ck_assert_msg(strncmp(line, "* OK", 4) == 0, "greeting: %s", line);
    return f;
}

/* Sends "tag rest" and returns the tagged answer's status word ("OK",
 * "NO", "BAD"), skipping untagged lines. */
static const char *
command(FILE *f, const char *tag, const char *rest)
{
    char line[1024];
    size_t tl = strlen(tag);

    fprintf(f, "%s %s\r\n", tag, rest);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, tag, tl) != 0 || line[tl] != ' ')
            continue;
        if (strncmp(line + tl + 1, "OK", 2) == 0)
            return "OK";
        if (strncmp(line + tl + 1, "NO", 2) == 0)
            return "NO";
        if (strncmp(line + tl + 1, "BAD", 3) == 0)
            return "BAD";
        return "?";
    }
    return "EOF";
}

static const char *
login(struct rig *r, const char *user, const char *pass)
{
    char cmd[512];
    FILE *f = door_open(r);
    const char *st;

    snprintf(cmd, sizeof(cmd), "LOGIN \"%s\" \"%s\"", user, pass);
    st = command(f, "a", cmd);
    if (strcmp(st, "OK") == 0)
        ck_assert_str_eq(command(f, "b", "SELECT INBOX"), "OK");
    fclose(f);
    return st;
}

/* The connection to port on loopback, with a 20 s read timeout. */
static int
tcp_open(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = 20};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    ck_assert_int_ge(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ck_assert_msg(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0,
                  "connect to %d: %s", port, strerror(errno));
    return fd;
}

/* Whether the mailbox's /metrics holds the line want. */
static bool
metrics_have(int port, const char *want)
{
    static char page[65536];
    size_t len = 0;
    ssize_t n;
    int fd = tcp_open(port);
    const char *get = "GET /metrics HTTP/1.0\r\n\r\n";

    ck_assert_int_eq(write(fd, get, strlen(get)), (ssize_t)strlen(get));
    while (len < sizeof(page) - 1 &&
           (n = read(fd, page + len, sizeof(page) - 1 - len)) > 0)
        len += (size_t)n;
    page[len] = '\0';
    close(fd);
    return strstr(page, want) != NULL;
}

START_TEST(test_ticket_once)
{
    struct rig r;
    char a[64], ticket[64], addr[64], want[64];

    rig_start(&r, BASE, 10000, BASE + 7);
    account_on(a, sizeof(a), 0, 0);
    ck_assert_int_eq(
        ask_ticket(&r, a, ticket, sizeof(ticket), addr, sizeof(addr)), 250);
    snprintf(want, sizeof(want), "127.0.0.1:%d", r.door);
    ck_assert_str_eq(addr, want);
    /* The account in any case: addresses are compared without it. */
    for (char *p = a; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    ck_assert_str_eq(login(&r, a, ticket), "OK");
    ck_assert_str_eq(login(&r, a, ticket), "NO");
    ck_assert(metrics_have(BASE + 8, "\nsamotop_imap_tickets_total"
                                     "{result=\"given\"} 1\n"));
    ck_assert(metrics_have(BASE + 8, "\nsamotop_imap_tickets_total"
                                     "{result=\"used\"} 1\n"));
    ck_assert(metrics_have(BASE + 8, "\nsamotop_imap_tickets_total"
                                     "{result=\"refused\"} 1\n"));
    rig_stop(&r);
}
END_TEST

START_TEST(test_ticket_other_account_spends_it)
{
    struct rig r;
    char a[64], b[64], ticket[64], addr[64];

    /* The door on a port the kernel picks, as without the key. */
    rig_start(&r, BASE + 10, 10000, 0);
    account_on(a, sizeof(a), 0, 0);
    account_on(b, sizeof(b), 0, 1);
    ck_assert_int_eq(
        ask_ticket(&r, a, ticket, sizeof(ticket), addr, sizeof(addr)), 250);
    ck_assert_str_eq(login(&r, b, ticket), "NO");
    ck_assert_str_eq(login(&r, a, ticket), "NO");
    /* A wrong secret behind a good handle spends it too. */
    ck_assert_int_eq(
        ask_ticket(&r, a, ticket, sizeof(ticket), addr, sizeof(addr)), 250);
    {
        char bad[64];

        snprintf(bad, sizeof(bad), "%s", ticket);
        bad[47] = bad[47] == '0' ? '1' : '0';
        ck_assert_str_eq(login(&r, a, bad), "NO");
    }
    ck_assert_str_eq(login(&r, a, ticket), "NO");
    rig_stop(&r);
}
END_TEST

START_TEST(test_ticket_expires)
{
    struct rig r;
    char a[64], ticket[64], addr[64];

    /* The shortest life a ticket can be given: long gone after 1 s. */
    rig_start(&r, BASE + 20, 100, BASE + 27);
    account_on(a, sizeof(a), 0, 0);
    ck_assert_int_eq(
        ask_ticket(&r, a, ticket, sizeof(ticket), addr, sizeof(addr)), 250);
    usleep(1000 * 1000);
    ck_assert_str_eq(login(&r, a, ticket), "NO");
    rig_stop(&r);
}
END_TEST

START_TEST(test_door_refuses_passwords)
{
    struct rig r;
    char a[64], b[64], ticket[64], addr[64];
    FILE *f;

    rig_start(&r, BASE + 30, 10000, BASE + 37);
    account_on(a, sizeof(a), 0, 0);
    account_on(b, sizeof(b), 1, 0);
    ck_assert_str_eq(login(&r, a, "a-password"), "NO");
    ck_assert_str_eq(login(&r, a,
                           "000000000000000000000000000000000000000"
                           "000000000"),
                     "NO");
    /* AUTHENTICATE PLAIN (RFC 4616) is no way round it. */
    f = door_open(&r);
    ck_assert_str_eq(command(f, "p",
                             "AUTHENTICATE PLAIN "
                             "AHVzZXIwQGV4YW1wbGUudGVzdABwdw=="),
                     "NO");
    ck_assert_str_eq(command(f, "s", "SELECT INBOX"), "BAD");
    fclose(f);
    /* Only the owner gives tickets, and only for an account. */
    ck_assert_int_eq(
        ask_ticket(&r, b, ticket, sizeof(ticket), addr, sizeof(addr)), 421);
    {
        /* A request without an account is refused by the schema check. */
        envelope_t *req = envelope_new("mailbox.ticket", NULL, 5000), *reply;
        char why[256];

        ck_assert_int_eq(bus_client_call_to(r.c, "mailbox.0", &req, &reply, why,
                                            sizeof(why)),
                         ERR_PROTO);
        ck_assert_ptr_null(reply);
    }
    rig_stop(&r);
}
END_TEST

static Suite *
mailbox_ticket_suite(void)
{
    Suite *s = suite_create("mailbox_ticket");
    TCase *tc = tcase_create("ticket");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_ticket_once);
    tcase_add_test(tc, test_ticket_other_account_spends_it);
    tcase_add_test(tc, test_ticket_expires);
    tcase_add_test(tc, test_door_refuses_passwords);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(mailbox_ticket_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
