/*
 * test_auth.c - samotop-auth: what it reads from a client (PLAIN, LOGIN,
 * login names) driven from tables, then the real actor between a real
 * redis-server, a real broker (samotop-bus) and a bus client, over TCP on
 * loopback.
 *
 * Accounts are written to Redis exactly as schemas/redis.md lays them out,
 * with hashes made by lib/passwd.h, the way samotop-admin writes them. The
 * actor's stderr goes to a file that every world checks at its end: no
 * password, hash or SASL response may appear there. Ports 19100-19149
 * belong to this suite, one block of five per world (redis on the first
 * port, the broker on the next three): 19100 sasl, 19105 throttle, 19110
 * busy, 19115 and 19120 the outages, 19125 stop, 19130 the cache of
 * verified logins, 19135 its expiry, 19140 no cache.
 */
#include <ctype.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <openssl/evp.h>

#include "actors/auth/auth.h"
#include "bus.h"
#include "lib/config.h"
#include "lib/err.h"
#include "lib/passwd.h"
#include "store.h"
#include "store_keys.h"
#include "tests/testlib.h"

#define TEXT_INVALID "authentication credentials invalid"
#define TEXT_UNAVAILABLE "temporary authentication failure"
#define TEXT_LOCKED "too many failed attempts, try again later"
#define TEXT_BUSY "authentication busy, try later"

/* The passwords of the accounts; none may ever reach the actor's log. */
#define PW_ALICE "correct horse battery"
#define PW_CAROL "carol's Secret 1"
#define PW_DAVE "dave-in-a-disabled-domain"
#define PW_ERIN "Erin_Mixed_Case_9"
#define PW_THROTTLE "throttle-Pass-42"
#define PW_WRONG "Wr0ng-Guess!x"
#define PW_LOW "low-cost-Hash-7"
#define PW_NEW "a-New-password-8"

static const char *const secrets[] = {PW_ALICE,    PW_CAROL, PW_DAVE, PW_ERIN,
                                      PW_THROTTLE, PW_WRONG, PW_LOW,  PW_NEW};

/* Made once in main(), before any world starts. hash_low has weaker
 * parameters than the default, for the rehash on login. */
static char hash_alice[PASSWD_MAX], hash_carol[PASSWD_MAX],
    hash_dave[PASSWD_MAX], hash_erin[PASSWD_MAX], hash_throttle[PASSWD_MAX],
    hash_low[PASSWD_MAX];

/* Standard base64 with padding of len bytes, in a rotating static buffer. */
static const char *
b64(const void *data, size_t len)
{
    static char bufs[4][8192];
    static unsigned next;
    char *out = bufs[next++ % 4];

    /* Called from main() too, where Check cannot report: no ck_assert. */
    if (len / 3 * 4 + 5 >= sizeof(bufs[0]))
        abort();
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* The PLAIN response for authzid NUL authcid NUL password, base64. */
static const char *
plain(const char *authzid, const char *authcid, const char *password)
{
    char msg[4096];
    size_t zl = strlen(authzid), cl = strlen(authcid), pl = strlen(password);

    if (zl + cl + pl + 2 >= sizeof(msg))
        abort();
    memcpy(msg, authzid, zl);
    msg[zl] = '\0';
    memcpy(msg + zl + 1, authcid, cl);
    msg[zl + 1 + cl] = '\0';
    memcpy(msg + zl + cl + 2, password, pl);
    return b64(msg, zl + cl + pl + 2);
}

/* A string of n copies of c, in a rotating static buffer. */
static const char *
repeat(char c, size_t n)
{
    static char bufs[4][4096];
    static unsigned next;
    char *out = bufs[next++ % 4];

    if (n >= sizeof(bufs[0]))
        abort();
    memset(out, c, n);
    out[n] = '\0';
    return out;
}

/* ---------------------------------------------------------------------
 * What the client sent, decoded and checked.
 */

struct plain_row {
    const char *label;
    const char *msg; /* raw message, NULs as \0 */
    size_t len;
    const char *b64; /* when not NULL: the response as is */
    int want;
    const char *authzid, *authcid, *password;
};

#define RAW(s) s, sizeof(s) - 1

static const struct plain_row plain_rows[] = {
    {"no authzid", RAW("\0alice@example.test\0pw"), NULL, 0, "",
     "alice@example.test", "pw"},
    {"with authzid", RAW("a@b.test\0alice@example.test\0pw"), NULL, 0,
     "a@b.test", "alice@example.test", "pw"},
    {"password with spaces and UTF-8", RAW("\0u@d.test\0p w \xc3\xa9"), NULL, 0,
     "", "u@d.test", "p w \xc3\xa9"},
    {"empty password", RAW("\0u@d.test\0"), NULL, 0, "", "u@d.test", ""},
    {"empty authcid", RAW("\0\0pw"), NULL, ERR_MALFORMED, NULL, NULL, NULL},
    {"one NUL", RAW("u@d.test\0pw"), NULL, ERR_MALFORMED, NULL, NULL, NULL},
    {"no NUL", RAW("u@d.test"), NULL, ERR_MALFORMED, NULL, NULL, NULL},
    {"three NULs", RAW("\0u@d.test\0pw\0"), NULL, ERR_MALFORMED, NULL, NULL,
     NULL},
    {"empty response", NULL, 0, "", ERR_MALFORMED, NULL, NULL, NULL},
    {"not base64", NULL, 0, "AHVAZC50ZXN0AHB3!", ERR_MALFORMED, NULL, NULL,
     NULL},
    {"unpadded", NULL, 0, "AHVAZC50ZXN0AHB3eA", ERR_MALFORMED, NULL, NULL,
     NULL},
};

START_TEST(test_plain)
{
    const struct plain_row *row = &plain_rows[_i];
    const char *in = row->b64 ? row->b64 : b64(row->msg, row->len);
    struct auth_creds c;
    int rc = auth_plain_parse(in, strlen(in), &c);

    ck_assert_msg(rc == row->want, "%s: got %s, want %s", row->label,
                  err_name(rc), err_name(row->want));
    if (rc != 0) {
        ck_assert_msg(c.password_len == 0 && c.authcid[0] == '\0',
                      "%s: not wiped", row->label);
        return;
    }
    ck_assert_str_eq(c.authzid, row->authzid);
    ck_assert_str_eq(c.authcid, row->authcid);
    ck_assert_uint_eq(c.password_len, strlen(row->password));
    ck_assert(memcmp(c.password, row->password, c.password_len) == 0);
}
END_TEST

/* The limits: 255-octet names and 1024-octet passwords are taken, one more
 * is too long, and so is a response longer than the longest message. */
START_TEST(test_plain_limits)
{
    struct auth_creds c;
    const char *r;
    char name[300];

    snprintf(name, sizeof(name), "%s@d.test", repeat('a', 255 - 7));
    r = plain(name, name, repeat('p', AUTH_PASSWORD_MAX));
    ck_assert_int_eq(auth_plain_parse(r, strlen(r), &c), 0);
    ck_assert_uint_eq(strlen(c.authcid), 255);
    ck_assert_uint_eq(c.password_len, AUTH_PASSWORD_MAX);

    snprintf(name, sizeof(name), "%s@d.test", repeat('a', 256 - 7));
    r = plain("", name, "pw");
    ck_assert_int_eq(auth_plain_parse(r, strlen(r), &c), ERR_TOO_BIG);
    r = plain(name, "u@d.test", "pw");
    ck_assert_int_eq(auth_plain_parse(r, strlen(r), &c), ERR_TOO_BIG);
    r = plain("", "u@d.test", repeat('p', AUTH_PASSWORD_MAX + 1));
    ck_assert_int_eq(auth_plain_parse(r, strlen(r), &c), ERR_TOO_BIG);
    r = repeat('A', AUTH_RESPONSE_MAX + 4);
    ck_assert_int_eq(auth_plain_parse(r, strlen(r), &c), ERR_TOO_BIG);
}
END_TEST

START_TEST(test_login_take)
{
    struct auth_creds c;

    ck_assert_int_eq(auth_login_take("u@d.test", 8, "pw", 2, &c), 0);
    ck_assert_str_eq(c.authcid, "u@d.test");
    ck_assert_str_eq(c.authzid, "");
    ck_assert_uint_eq(c.password_len, 2);
    ck_assert_int_eq(auth_login_take("u@d.test", 8, "", 0, &c), 0);
    ck_assert_int_eq(auth_login_take("", 0, "pw", 2, &c), ERR_MALFORMED);
    ck_assert_int_eq(auth_login_take("u@d\0x", 5, "pw", 2, &c), ERR_MALFORMED);
    ck_assert_int_eq(auth_login_take("u@d.test", 8, "p\0w", 3, &c),
                     ERR_MALFORMED);
    ck_assert_int_eq(auth_login_take(repeat('u', 256), 256, "pw", 2, &c),
                     ERR_TOO_BIG);
    ck_assert_int_eq(auth_login_take("u@d.test", 8,
                                     repeat('p', AUTH_PASSWORD_MAX + 1),
                                     AUTH_PASSWORD_MAX + 1, &c),
                     ERR_TOO_BIG);
}
END_TEST

struct account_row {
    const char *label;
    const char *in;
    const char *want; /* NULL: refused */
};

static const struct account_row account_rows[] = {
    {"plain", "alice@example.test", "alice@example.test"},
    {"capitals", "Alice@Example.TEST", "alice@example.test"},
    {"dots and plus", "a.b+c@x.example.test", "a.b+c@x.example.test"},
    {"quoted, yet a dot-atom", "\"alice\"@example.test", "alice@example.test"},
    {"quoted with a space", "\"al ice\"@example.test", NULL},
    {"no domain", "alice", NULL},
    {"empty", "", NULL},
    {"two at signs", "a@b@example.test", NULL},
    {"address literal", "alice@[127.0.0.1]", NULL},
    {"angle brackets", "<alice@example.test>", NULL},
    {"source route", "@x.test:alice@example.test", NULL},
    {"UTF-8", "\xc3\xa9@example.test", NULL},
    {"trailing space", "alice@example.test ", NULL},
};

START_TEST(test_account)
{
    const struct account_row *row = &account_rows[_i];
    struct auth_account a;
    int rc = auth_account_parse(row->in, &a);

    if (row->want == NULL) {
        ck_assert_msg(rc == ERR_INVAL, "%s: got %s, want INVAL", row->label,
                      err_name(rc));
        return;
    }
    ck_assert_msg(rc == 0, "%s: got %s", row->label, err_name(rc));
    ck_assert_msg(strcmp(a.name, row->want) == 0, "%s: got %s, want %s",
                  row->label, a.name, row->want);
}
END_TEST

/* ---------------------------------------------------------------------
 * The real actor: a world of redis-server, samotop-bus and samotop-auth.
 */

struct world {
    int base;
    pid_t redis, bus, auth;
    char clients[64];
    char dir[64], log[128];
    char env[16][128];
    const char *envp[17];
};

/* Set up once per TCase in the parent; each forked test inherits it. */
static struct world W;

static void
add_domain(store_t *s, const char *d, const char *disabled)
{
    char k[STORE_KEY_MAX];

    test_redis_int(s, "SADD", store_key_domains(k), d, NULL);
    test_redis_int(s, "HSET", store_key_domain(k, d), "created", "1700000000",
                   "catchall", "", "disabled", disabled, NULL);
}

static void
add_user(store_t *s, const char *d, const char *l, const char *hash,
         const char *disabled)
{
    char k[STORE_KEY_MAX];

    test_redis_int(s, "SADD", store_key_users(k, d), l, NULL);
    test_redis_int(s, "HSET", store_key_user(k, d, l), "pw", hash, "disabled",
                   disabled, "created", "1700000000", NULL);
}

/* The accounts every world holds. */
static void
redis_fill(int port)
{
    store_t *s = test_redis_connect(port, 5000);
    char l[32];

    test_redis_int(s, "FLUSHALL", NULL);
    add_domain(s, "example.test", "0");
    add_domain(s, "off.test", "1");
    add_user(s, "example.test", "alice", hash_alice, "0");
    add_user(s, "example.test", "carol", hash_carol, "1");
    add_user(s, "example.test", "erin", hash_erin, "0");
    add_user(s, "example.test", "broken", "not a hash", "0");
    add_user(s, "off.test", "dave", hash_dave, "0");
    add_user(s, "example.test", "low", hash_low, "0");
    for (int i = 1; i <= 9; i++) {
        snprintf(l, sizeof(l), "t%d", i);
        add_user(s, "example.test", l, hash_throttle, "0");
    }
    store_destroy(&s);
}

/* Like test_spawn(), with stderr into the file at path. */
static pid_t
spawn_logged(const char *const *argv, const char *const *env, const char *path)
{
    pid_t parent = getpid(), pid = fork();

    if (pid == 0) {
        sigset_t none;
        int fd;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(127);
        close(fd);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* The actor's log so far, in a new string the caller frees. */
static char *
read_log(void)
{
    FILE *f = fopen(W.log, "r");
    char *buf;
    long n;

    ck_assert_msg(f != NULL, "no log at %s", W.log);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return buf;
}

/* No password, hash or SASL response may be in the actor's log. */
static void
check_log_clean(void)
{
    char *log = read_log();
    const char *bad[] = {"$scrypt$", plain("", "alice@example.test", PW_ALICE),
                         plain("", "alice@example.test", PW_WRONG),
                         b64(PW_ALICE, strlen(PW_ALICE))};

    ck_assert_msg(strstr(log, "auth_verify") != NULL,
                  "the log holds no auth_verify line: stderr not captured?");
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        ck_assert_msg(strstr(log, secrets[i]) == NULL,
                      "password \"%s\" is in the actor's log", secrets[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(strstr(log, bad[i]) == NULL, "\"%s\" is in the log",
                      bad[i]);
    free(log);
}

static void
auth_start(void)
{
    char path[4096];
    const char *argv[] = {path, "--instance", "a", NULL};

    snprintf(path, sizeof(path), "%s", test_bin("samotop-auth"));
    W.auth = spawn_logged(argv, W.envp, W.log);
}

/* Starts a world on ports base .. base+3; extra are more "K=V" for the
 * actor's environment, ending with NULL. */
static void
world_start(int base, ...)
{
    char bus_path[4096];
    const char *bus_argv[] = {bus_path, "--instance", "t", NULL};
    const char *extra;
    int n = 0;
    va_list ap;

    snprintf(bus_path, sizeof(bus_path), "%s", test_bin("samotop-bus"));
    memset(&W, 0, sizeof(W));
    W.base = base;
    snprintf(W.dir, sizeof(W.dir), "/tmp/test_auth.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(W.dir));
    snprintf(W.log, sizeof(W.log), "%s/auth.log", W.dir);
    snprintf(W.clients, sizeof(W.clients), "tcp://127.0.0.1:%d", base + 1);
    snprintf(W.env[n++], 128, "SAMOTOP_BROKER_CLIENTS=%s", W.clients);
    snprintf(W.env[n++], 128, "SAMOTOP_BROKER_WORKERS=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(W.env[n++], 128, "SAMOTOP_BROKER_TRACE=tcp://127.0.0.1:%d",
             base + 3);
    snprintf(W.env[n++], 128, "SAMOTOP_BUS_CLIENTS=%s", W.clients);
    snprintf(W.env[n++], 128, "SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:%d",
             base + 2);
    snprintf(W.env[n++], 128, "SAMOTOP_BUS_TRACE=tcp://127.0.0.1:%d", base + 3);
    snprintf(W.env[n++], 128, "SAMOTOP_BUS_HEARTBEAT_MS=100");
    /* 2 s of silence before the broker drops the actor: under ASan, with
     * both cores running scrypt and other tests, its loop can miss 400
     * ms of heartbeats, and no test here is about a lost worker. */
    snprintf(W.env[n++], 128, "SAMOTOP_BUS_LIVENESS=20");
    snprintf(W.env[n++], 128, "SAMOTOP_REDIS_PORT=%d", base);
    /* Every line, debug too, must be free of secrets. */
    snprintf(W.env[n++], 128, "SAMOTOP_LOG_LEVEL=debug");
    va_start(ap, base);
    while ((extra = va_arg(ap, const char *)) != NULL && n < 16)
        snprintf(W.env[n++], 128, "%s", extra);
    va_end(ap);
    for (int i = 0; i < n; i++)
        W.envp[i] = W.env[i];
    W.envp[n] = NULL;
    W.redis = test_redis_start(base);
    redis_fill(base);
    W.bus = test_spawn(bus_argv, W.envp);
    auth_start();
}

static void
world_stop(void)
{
    char name[256];

    snprintf(name, sizeof(name), "samotop-auth (log: %s)", W.log);
    test_stop_clean(&W.auth, name, 5000);
    if (W.bus > 0)
        test_stop(W.bus, SIGTERM, 5000);
    if (W.redis > 0)
        test_stop(W.redis, SIGTERM, 5000);
    if (W.dir[0]) {
        check_log_clean();
        /* TEST_AUTH_KEEP_LOG=1 keeps the actor's log to read. */
        if (getenv("TEST_AUTH_KEEP_LOG") == NULL) {
            unlink(W.log);
            rmdir(W.dir);
        }
    }
    memset(&W, 0, sizeof(W));
}

/* A client of this world's broker, once this world's actor answers pings.
 * Another actor answering means another run holds these ports: say so
 * rather than fail later in a puzzling way. */
static bus_client_t *
world_client(void)
{
    char why[256];
    bus_client_t *c =
        bus_client_new(NULL, W.clients, 1 << 20, why, sizeof(why));
    int64_t until = test_now_ms() + 10000, pid = 0;

    ck_assert_msg(c != NULL, "bus_client_new: %s", why);
    for (;;) {
        envelope_t *req = envelope_new("auth.ping", NULL, 500), *reply = NULL;

        if (bus_client_call(c, &req, &reply, why, sizeof(why)) == 0) {
            pid = envelope_get_int(reply, ENV_KEY_PID, 0);
            envelope_destroy(&reply);
            if (pid == W.auth)
                return c;
            snprintf(why, sizeof(why),
                     "auth pid %lld answered, ours is %d: "
                     "is another run using ports %d-%d?",
                     (long long)pid, (int)W.auth, W.base, W.base + 3);
        }
        ck_assert_msg(test_now_ms() < until, "auth never answered: %s", why);
        usleep(50000);
    }
}

struct req {
    const char *mech;
    const char *response;            /* PLAIN */
    const char *username, *password; /* LOGIN */
    const char *ip;
};

static envelope_t *
verify_new(const struct req *rq)
{
    envelope_t *req = envelope_new("auth.verify", NULL, 10000);
    value_t *body = envelope_body(req);

    value_set_str(body, ENV_KEY_MECHANISM, rq->mech);
    if (rq->response)
        value_set_str(body, ENV_KEY_RESPONSE, rq->response);
    if (rq->username)
        value_set_str(body, ENV_KEY_USERNAME, rq->username);
    if (rq->password)
        value_set_str(body, ENV_KEY_PASSWORD, rq->password);
    value_set_str(body, ENV_KEY_CLIENT_IP, rq->ip ? rq->ip : "192.0.2.1");
    return req;
}

/* Sends one auth.verify and returns its reply (caller frees); *ms gets how
 * long it took when ms is not NULL. */
static envelope_t *
auth_call(bus_client_t *c, const struct req *rq, int64_t *ms)
{
    envelope_t *req = verify_new(rq), *reply = NULL;
    char why[256];
    int64_t t0 = test_now_ms();
    int rc = bus_client_call(c, &req, &reply, why, sizeof(why));

    if (ms)
        *ms = test_now_ms() - t0;
    ck_assert_msg(rc == 0, "auth.verify: bus error %s: %s", err_name(rc), why);
    return reply;
}

static void
expect(const envelope_t *reply, const char *label, int code, const char *ecode,
       const char *text, const char *user)
{
    const char *e = envelope_get_str(reply, ENV_KEY_ECODE);
    const char *t = envelope_get_str(reply, ENV_KEY_TEXT);
    const char *u = envelope_get_str(reply, ENV_KEY_USER);

    ck_assert_msg(envelope_code(reply) == code && e && strcmp(e, ecode) == 0,
                  "%s: got %d %s (%s), want %d %s", label, envelope_code(reply),
                  e, t, code, ecode);
    if (text)
        ck_assert_msg(t && strcmp(t, text) == 0, "%s: text \"%s\", want \"%s\"",
                      label, t, text);
    if (user)
        ck_assert_msg(u && strcmp(u, user) == 0, "%s: user %s, want %s", label,
                      u, user);
    else
        ck_assert_msg(u == NULL, "%s: a failure names user %s", label, u);
}

/* Codes of the answers every mechanism can get. */
struct verify_row {
    const char *label;
    struct req rq;
    int code;
    const char *ecode;
    const char *text; /* NULL: not checked */
    const char *user;
};

#define ALICE "alice@example.test"

static const struct verify_row *verify_rows;
static size_t nverify_rows;

static void
keep_row(struct verify_row *row)
{
    if (row->rq.response)
        row->rq.response = strdup(row->rq.response);
    if (row->rq.username)
        row->rq.username = strdup(row->rq.username);
    if (row->rq.password)
        row->rq.password = strdup(row->rq.password);
}

/* The rows need plain(), which is no constant: built once in main(). */
static void
make_verify_rows(void)
{
    static struct verify_row rows[64];
    char name[300];
    size_t n = 0;

    /* plain(), b64() and repeat() answer in rotating buffers: keep
     * copies. */
#define ROW(...)                                                               \
    do {                                                                       \
        rows[n] = (struct verify_row){__VA_ARGS__};                            \
        keep_row(&rows[n++]);                                                  \
    } while (0)
    ROW("PLAIN right",
        {.mech = "PLAIN", .response = plain("", ALICE, PW_ALICE)}, 235, "2.7.0",
        "authentication successful", ALICE);
    ROW("PLAIN, mechanism in lower case",
        {.mech = "plain", .response = plain("", ALICE, PW_ALICE)}, 235, "2.7.0",
        NULL, ALICE);
    ROW("PLAIN, authzid the authcid",
        {.mech = "PLAIN", .response = plain(ALICE, ALICE, PW_ALICE)}, 235,
        "2.7.0", NULL, ALICE);
    ROW("PLAIN, authzid the same account in capitals",
        {.mech = "PLAIN",
         .response = plain("ALICE@Example.Test", ALICE, PW_ALICE)},
        235, "2.7.0", NULL, ALICE);
    ROW("PLAIN, authzid another account",
        {.mech = "PLAIN",
         .response = plain("erin@example.test", ALICE, PW_ALICE)},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("PLAIN, authzid no address",
        {.mech = "PLAIN", .response = plain("admin", ALICE, PW_ALICE)}, 535,
        "5.7.8", TEXT_INVALID, NULL);
    ROW("PLAIN wrong password",
        {.mech = "PLAIN", .response = plain("", ALICE, PW_WRONG)}, 535, "5.7.8",
        TEXT_INVALID, NULL);
    ROW("PLAIN password in other case",
        {.mech = "PLAIN",
         .response = plain("", ALICE, "CORRECT HORSE BATTERY")},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("PLAIN empty password",
        {.mech = "PLAIN", .response = plain("", ALICE, "")}, 535, "5.7.8",
        TEXT_INVALID, NULL);
    ROW("PLAIN unknown user",
        {.mech = "PLAIN", .response = plain("", "zed@example.test", PW_ALICE)},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("PLAIN unknown domain",
        {.mech = "PLAIN",
         .response = plain("", "alice@nowhere.test", PW_ALICE)},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("PLAIN disabled user, right password",
        {.mech = "PLAIN",
         .response = plain("", "carol@example.test", PW_CAROL)},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("PLAIN disabled domain, right password",
        {.mech = "PLAIN", .response = plain("", "dave@off.test", PW_DAVE)}, 535,
        "5.7.8", TEXT_INVALID, NULL);
    ROW("PLAIN unreadable stored hash",
        {.mech = "PLAIN",
         .response = plain("", "broken@example.test", "not a hash")},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("PLAIN name in capitals",
        {.mech = "PLAIN", .response = plain("", "Erin@EXAMPLE.test", PW_ERIN)},
        235, "2.7.0", NULL, "erin@example.test");
    ROW("PLAIN name no address",
        {.mech = "PLAIN", .response = plain("", "alice", PW_ALICE)}, 535,
        "5.7.8", TEXT_INVALID, NULL);
    ROW("PLAIN not base64", {.mech = "PLAIN", .response = "!!not*base64!!"},
        501, "5.5.2", "malformed response", NULL);
    ROW("PLAIN unpadded", {.mech = "PLAIN", .response = "AGFsaWNlAHB3eA"}, 501,
        "5.5.2", NULL, NULL);
    ROW("PLAIN unused bits set",
        {.mech = "PLAIN", .response = "AGFsaWNlQGV4YW1wbGUudGVzdABwdx=="}, 501,
        "5.5.2", NULL, NULL);
    ROW("PLAIN base64 with a space", {.mech = "PLAIN", .response = "AGFs aWNl"},
        501, "5.5.2", NULL, NULL);
    ROW("PLAIN empty response", {.mech = "PLAIN", .response = ""}, 501, "5.5.2",
        NULL, NULL);
    ROW("PLAIN one NUL",
        {.mech = "PLAIN", .response = b64(ALICE "\0pw", sizeof(ALICE) + 2)},
        501, "5.5.2", NULL, NULL);
    ROW("PLAIN three NULs",
        {.mech = "PLAIN",
         .response = b64("\0" ALICE "\0pw\0", sizeof(ALICE) + 4)},
        501, "5.5.2", NULL, NULL);
    ROW("PLAIN no response", {.mech = "PLAIN"}, 501, "5.5.4", NULL, NULL);
    snprintf(name, sizeof(name), "%s@example.test", repeat('a', 250));
    ROW("PLAIN authcid over 255 octets",
        {.mech = "PLAIN", .response = plain("", name, PW_ALICE)}, 500, "5.5.6",
        NULL, NULL);
    ROW("PLAIN password over 1024 octets",
        {.mech = "PLAIN", .response = plain("", ALICE, repeat('p', 1025))}, 500,
        "5.5.6", NULL, NULL);
    ROW("PLAIN password of 1024 octets",
        {.mech = "PLAIN", .response = plain("", ALICE, repeat('p', 1024))}, 535,
        "5.7.8", NULL, NULL);
    ROW("PLAIN response over the limit",
        {.mech = "PLAIN", .response = repeat('A', 2052)}, 500, "5.5.6", NULL,
        NULL);
    ROW("LOGIN right",
        {.mech = "LOGIN",
         .response = NULL,
         .username = ALICE,
         .password = PW_ALICE},
        235, "2.7.0", NULL, ALICE);
    ROW("LOGIN name in capitals",
        {.mech = "LOGIN",
         .response = NULL,
         .username = "ALICE@example.TEST",
         .password = PW_ALICE},
        235, "2.7.0", NULL, ALICE);
    ROW("LOGIN wrong password",
        {.mech = "LOGIN",
         .response = NULL,
         .username = ALICE,
         .password = PW_WRONG},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("LOGIN unknown user",
        {.mech = "LOGIN",
         .response = NULL,
         .username = "nobody@example.test",
         .password = PW_ALICE},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("LOGIN disabled user",
        {.mech = "LOGIN",
         .response = NULL,
         .username = "carol@example.test",
         .password = PW_CAROL},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("LOGIN empty password",
        {.mech = "LOGIN", .response = NULL, .username = ALICE, .password = ""},
        535, "5.7.8", TEXT_INVALID, NULL);
    ROW("LOGIN empty user name",
        {.mech = "LOGIN",
         .response = NULL,
         .username = "",
         .password = PW_ALICE},
        501, "5.5.2", NULL, NULL);
    ROW("LOGIN without a password",
        {.mech = "LOGIN",
         .response = NULL,
         .username = ALICE,
         .password = NULL},
        501, "5.5.4", NULL, NULL);
    ROW("LOGIN given base64 instead",
        {.mech = "LOGIN", .response = b64(ALICE, strlen(ALICE))}, 501, "5.5.4",
        NULL, NULL);
    ROW("unknown mechanism", {.mech = "CRAM-MD5", .response = "AAAA"}, 504,
        "5.5.4", NULL, NULL);
    ROW("SCRAM-SHA-256 (not offered)",
        {.mech = "SCRAM-SHA-256", .response = "AAAA"}, 504, "5.5.4", NULL,
        NULL);
#undef ROW
    if (n > sizeof(rows) / sizeof(rows[0]))
        abort();
    verify_rows = rows;
    nverify_rows = n;
}

START_TEST(test_verify)
{
    const struct verify_row *row = &verify_rows[_i];
    bus_client_t *c = world_client();
    envelope_t *reply = auth_call(c, &row->rq, NULL);

    expect(reply, row->label, row->code, row->ecode, row->text, row->user);
    envelope_destroy(&reply);
    bus_client_destroy(&c);
}
END_TEST

/* The fastest of n calls, in ms. */
static int64_t
fastest(bus_client_t *c, const struct req *rq, int want, int n)
{
    int64_t best = -1, ms;

    for (int i = 0; i < n; i++) {
        envelope_t *reply = auth_call(c, rq, &ms);

        ck_assert_int_eq(envelope_code(reply), want);
        envelope_destroy(&reply);
        if (best < 0 || ms < best)
            best = ms;
    }
    return best;
}

/* An unknown account costs a verification too: its refusal takes about as
 * long as a wrong password's. */
START_TEST(test_unknown_user_timing)
{
    bus_client_t *c = world_client();
    struct req wrong = {.mech = "PLAIN",
                        .response = plain("", ALICE, PW_WRONG)};
    struct req unknown = {.mech = "PLAIN",
                          .response = plain("", "zed@example.test", PW_WRONG)};
    struct req malformed = {.mech = "PLAIN", .response = "AGFs"};
    int64_t t_wrong = fastest(c, &wrong, 535, 3);
    int64_t t_unknown = fastest(c, &unknown, 535, 3);
    int64_t t_malformed = fastest(c, &malformed, 501, 3);

    /* scrypt with the default parameters takes tens of ms; a refusal with
     * no verification takes about one. */
    ck_assert_msg(t_wrong >= 10, "a wrong password took only %lld ms",
                  (long long)t_wrong);
    ck_assert_msg(t_unknown * 2 >= t_wrong,
                  "unknown user %lld ms, wrong password %lld ms",
                  (long long)t_unknown, (long long)t_wrong);
    ck_assert_msg(t_malformed * 2 < t_wrong,
                  "malformed %lld ms, wrong password %lld ms: no scrypt "
                  "needed for a malformed response",
                  (long long)t_malformed, (long long)t_wrong);
    bus_client_destroy(&c);
}
END_TEST

struct outcome {
    int done, err, code;
    int64_t at_ms;
    char ecode[16], text[128], user[64];
};

static void
on_outcome(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct outcome *o = arg;

    o->done = 1;
    o->err = err;
    o->at_ms = test_now_ms();
    o->code = reply ? envelope_code(reply) : 0;
    snprintf(o->text, sizeof(o->text), "%s",
             reply ? envelope_get_str(reply, ENV_KEY_TEXT) : text);
    if (reply) {
        const char *e = envelope_get_str(reply, ENV_KEY_ECODE);
        const char *u = envelope_get_str(reply, ENV_KEY_USER);

        snprintf(o->ecode, sizeof(o->ecode), "%s", e ? e : "");
        snprintf(o->user, sizeof(o->user), "%s", u ? u : "");
    }
}

static void
on_quit(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

static bool
all_done(const struct outcome *o, int n)
{
    for (int i = 0; i < n; i++)
        if (!o[i].done)
            return false;
    return true;
}

/* Runs the loop for ms, or until the n outcomes are all in. */
static void
run_until(loop_t *loop, const struct outcome *o, int n, int ms)
{
    int64_t until = test_now_ms() + ms;

    while (test_now_ms() < until && !(o && all_done(o, n))) {
        loop_timer_add(loop, 10, on_quit, NULL);
        loop_run(loop);
    }
}

/* Twenty verifications at once all come back right, and the loop stays
 * free meanwhile: a ping sent after them is answered before the last. */
START_TEST(test_burst)
{
    enum { N = 20 };
    loop_t *loop = loop_new();
    struct outcome o[N + 1];
    bus_client_t *sync = world_client(), *c;
    envelope_t *req;
    int64_t t0, last = 0;
    char why[256];

    memset(o, 0, sizeof(o));
    c = bus_client_new(loop, W.clients, 1 << 20, why, sizeof(why));
    ck_assert_ptr_nonnull(c);
    t0 = test_now_ms();
    for (int i = 0; i < N; i++) {
        struct req rq = {
            .mech = i % 2 ? "LOGIN" : "PLAIN",
            .response =
                i % 2 ? NULL : plain("", ALICE, i % 4 ? PW_WRONG : PW_ALICE),
            .username = i % 2 ? ALICE : NULL,
            .password = i % 2 ? (i % 4 == 1 ? PW_ALICE : PW_WRONG) : NULL,
            .ip = NULL};

        req = verify_new(&rq);
        ck_assert_int_eq(bus_client_send_take(c, &req, on_outcome, &o[i]), 0);
    }
    req = envelope_new("auth.ping", NULL, 10000);
    ck_assert_int_eq(bus_client_send_take(c, &req, on_outcome, &o[N]), 0);
    run_until(loop, o, N + 1, 30000);
    for (int i = 0; i < N; i++) {
        int want = i % 4 == 0 || i % 4 == 1 ? 235 : 535;

        ck_assert_msg(o[i].done && o[i].err == 0,
                      "request %d: done %d err %s (%s)", i, o[i].done,
                      err_name(o[i].err), o[i].text);
        ck_assert_msg(o[i].code == want, "request %d: got %d (%s), want %d", i,
                      o[i].code, o[i].text, want);
        if (want == 235)
            ck_assert_str_eq(o[i].user, ALICE);
        if (o[i].at_ms > last)
            last = o[i].at_ms;
    }
    ck_assert_msg(o[N].done && o[N].code == 250, "ping: done %d code %d",
                  o[N].done, o[N].code);
    ck_assert_msg(o[N].at_ms < last,
                  "the ping came back after every verification (%lld ms, "
                  "last at %lld ms): the loop was blocked",
                  (long long)(o[N].at_ms - t0), (long long)(last - t0));
    bus_client_destroy(&c);
    bus_client_destroy(&sync);
    loop_destroy(&loop);
}
END_TEST

/* Runs in the sasl world, last: its log so far holds every kind of
 * request, at debug level. */
START_TEST(test_log_clean)
{
    char *log;

    check_log_clean();
    log = read_log();
    ck_assert_msg(strstr(log, "user=alice@example.test") != NULL &&
                      strstr(log, "reason=wrong_password") != NULL &&
                      strstr(log, "reason=unknown_user") != NULL &&
                      strstr(log, "reason=disabled") != NULL,
                  "the log does not say who failed and why");
    free(log);
}
END_TEST

static void
world_sasl_start(void)
{
    /* No throttling here: the rows fail as often as they like. */
    world_start(19100, "SAMOTOP_AUTH_FAIL_LIMIT=0",
                "SAMOTOP_AUTH_FAIL_DELAY_MS=0", NULL);
}

/* ---------------------------------------------------------------------
 * Throttling: limit 3, delays of 150 ms per failure up to 400 ms.
 */

#define TH_DELAY 150
#define TH_MAX 400

static void
world_throttle_start(void)
{
    world_start(19105, "SAMOTOP_AUTH_FAIL_LIMIT=3",
                "SAMOTOP_AUTH_FAIL_DELAY_MS=150",
                "SAMOTOP_AUTH_FAIL_DELAY_MAX_MS=400",
                "SAMOTOP_AUTH_FAIL_WINDOW_S=60", NULL);
}

static long long
counter(const char *kind, const char *who, int want_ttl)
{
    store_t *s = test_redis_connect(W.base, 1000);
    char key[STORE_KEY_MAX];
    long long n, ttl;

    store_key_rate(key, kind, who, 60);
    n = test_redis_int(s, "GET", key, NULL);
    if (want_ttl && n > 0) {
        ttl = test_redis_int(s, "TTL", key, NULL);
        ck_assert_msg(ttl > 0 && ttl <= 60, "%s: ttl %lld", key, ttl);
    }
    store_destroy(&s);
    return n;
}

/* A 535 after at least the delay of the nth failure; returns the ms. */
static int64_t
fail_once(bus_client_t *c, const char *user, const char *ip, int nth)
{
    struct req rq = {.mech = "PLAIN",
                     .response = plain("", user, PW_WRONG),
                     .username = NULL,
                     .password = NULL,
                     .ip = ip};
    int64_t ms, want = TH_DELAY * nth > TH_MAX ? TH_MAX : TH_DELAY * nth;
    envelope_t *reply = auth_call(c, &rq, &ms);
    char label[128];

    snprintf(label, sizeof(label), "%s from %s, failure %d", user, ip, nth);
    expect(reply, label, 535, "5.7.8", TEXT_INVALID, NULL);
    envelope_destroy(&reply);
    ck_assert_msg(ms >= want, "%s: answered after %lld ms, want >= %lld", label,
                  (long long)ms, (long long)want);
    ck_assert_msg(ms < want + 2000, "%s: answered after %lld ms", label,
                  (long long)ms);
    return ms;
}

static void
expect_locked(bus_client_t *c, const char *user, const char *ip)
{
    struct req rq = {.mech = "PLAIN",
                     .response = plain("", user, PW_THROTTLE),
                     .username = NULL,
                     .password = NULL,
                     .ip = ip};
    int64_t ms;
    envelope_t *reply = auth_call(c, &rq, &ms);
    char label[128];

    snprintf(label, sizeof(label), "%s from %s, right password, locked", user,
             ip);
    expect(reply, label, 454, "4.7.0", TEXT_LOCKED, NULL);
    envelope_destroy(&reply);
    /* No verification, no delay. */
    ck_assert_msg(ms < TH_DELAY, "%s: answered after %lld ms", label,
                  (long long)ms);
}

static void
expect_ok(bus_client_t *c, const char *user, const char *ip)
{
    struct req rq = {.mech = "PLAIN",
                     .response = plain("", user, PW_THROTTLE),
                     .username = NULL,
                     .password = NULL,
                     .ip = ip};
    envelope_t *reply = auth_call(c, &rq, NULL);
    char label[128];

    snprintf(label, sizeof(label), "%s from %s, right password", user, ip);
    expect(reply, label, 235, "2.7.0", NULL, user);
    envelope_destroy(&reply);
}

/* One account failing from ever new addresses: the delay grows with its
 * count, and at the limit even the right password gets 454 at once. */
START_TEST(test_throttle_account)
{
    bus_client_t *c = world_client();
    int64_t t1, t2, t3;

    t1 = fail_once(c, "t1@example.test", "198.51.100.1", 1);
    t2 = fail_once(c, "t1@example.test", "198.51.100.2", 2);
    t3 = fail_once(c, "t1@example.test", "198.51.100.3", 3); /* capped */
    ck_assert_msg(t1 < t2 && t2 < t3, "delays %lld, %lld, %lld ms",
                  (long long)t1, (long long)t2, (long long)t3);
    ck_assert_int_eq(counter("authfail_user", "t1@example.test", 1), 3);
    expect_locked(c, "t1@example.test", "198.51.100.4");
    expect_locked(c, "T1@Example.Test", "198.51.100.5");
    /* A locked attempt is not counted: the lock ends with the window. */
    ck_assert_int_eq(counter("authfail_user", "t1@example.test", 1), 3);
    /* Other accounts are not concerned. */
    expect_ok(c, "t9@example.test", "198.51.100.6");
    bus_client_destroy(&c);
}
END_TEST

/* One address failing against ever new accounts: its count sets the
 * delay, and at the limit it is locked out of every account. */
START_TEST(test_throttle_ip)
{
    bus_client_t *c = world_client();

    fail_once(c, "t2@example.test", "203.0.113.7", 1);
    fail_once(c, "t3@example.test", "203.0.113.7", 2);
    /* t4's own count is 1, the address's is 3. */
    fail_once(c, "t4@example.test", "203.0.113.7", 3);
    ck_assert_int_eq(counter("authfail_ip", "203.0.113.7", 1), 3);
    ck_assert_int_eq(counter("authfail_user", "t4@example.test", 1), 1);
    expect_locked(c, "t5@example.test", "203.0.113.7");
    expect_ok(c, "t5@example.test", "203.0.113.8");
    /* An unknown account counts as a failure as well. */
    fail_once(c, "nobody@example.test", "203.0.113.9", 1);
    ck_assert_int_eq(counter("authfail_user", "nobody@example.test", 1), 1);
    bus_client_destroy(&c);
}
END_TEST

/* A success clears the account's count, not the address's. */
START_TEST(test_success_clears)
{
    bus_client_t *c = world_client();

    fail_once(c, "t6@example.test", "192.0.2.61", 1);
    fail_once(c, "t6@example.test", "192.0.2.62", 2);
    ck_assert_int_eq(counter("authfail_user", "t6@example.test", 1), 2);
    expect_ok(c, "t6@example.test", "192.0.2.62");
    ck_assert_int_eq(counter("authfail_user", "t6@example.test", 0), 0);
    ck_assert_int_eq(counter("authfail_ip", "192.0.2.62", 1), 1);
    /* Counting starts again from one: the first delay again. */
    fail_once(c, "t6@example.test", "192.0.2.63", 1);
    ck_assert_int_eq(counter("authfail_user", "t6@example.test", 1), 1);
    bus_client_destroy(&c);
}
END_TEST

/* ---------------------------------------------------------------------
 * A full pool: one thread, two waiting at most; the rest get 454.
 */

START_TEST(test_busy)
{
    enum { N = 12 };
    loop_t *loop = loop_new();
    struct outcome o[N];
    bus_client_t *sync, *c;
    char why[256];
    int ok = 0, busy = 0;

    world_start(19110, "SAMOTOP_AUTH_THREADS=1", "SAMOTOP_AUTH_QUEUE=2",
                "SAMOTOP_AUTH_FAIL_LIMIT=0", NULL);
    sync = world_client();
    memset(o, 0, sizeof(o));
    c = bus_client_new(loop, W.clients, 1 << 20, why, sizeof(why));
    ck_assert_ptr_nonnull(c);
    for (int i = 0; i < N; i++) {
        struct req rq = {.mech = "PLAIN",
                         .response = plain("", ALICE, PW_ALICE)};
        envelope_t *req = verify_new(&rq);

        ck_assert_int_eq(bus_client_send_take(c, &req, on_outcome, &o[i]), 0);
    }
    run_until(loop, o, N, 20000);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(o[i].done && o[i].err == 0, "request %d: done %d err %s",
                      i, o[i].done, err_name(o[i].err));
        if (o[i].code == 235) {
            ok++;
        } else {
            ck_assert_msg(o[i].code == 454 && strcmp(o[i].text, TEXT_BUSY) == 0,
                          "request %d: got %d %s", i, o[i].code, o[i].text);
            ck_assert_str_eq(o[i].ecode, "4.7.0");
            busy++;
        }
    }
    /* The queue's two places are all that is sure: the thread takes the
     * first job only once it wakes, which on a loaded machine can be
     * after the others were refused. */
    ck_assert_msg(ok >= 2 && busy >= 1, "%d verified, %d busy", ok, busy);
    bus_client_destroy(&c);
    bus_client_destroy(&sync);
    loop_destroy(&loop);
    world_stop();
}
END_TEST

/* ---------------------------------------------------------------------
 * Redis away: 454 4.7.0 at once, never a hang; back when it is.
 */

static void
expect_unavailable(bus_client_t *c, const char *when, int64_t max_ms)
{
    static const struct req rqs[] = {
        {"PLAIN", NULL, NULL, NULL, NULL},
        {"LOGIN", NULL, ALICE, PW_ALICE, NULL},
    };

    for (size_t i = 0; i < sizeof(rqs) / sizeof(rqs[0]); i++) {
        struct req rq = rqs[i];
        int64_t ms;
        envelope_t *reply;

        if (rq.response == NULL && strcmp(rq.mech, "PLAIN") == 0)
            rq.response = plain("", ALICE, PW_ALICE);
        reply = auth_call(c, &rq, &ms);
        expect(reply, when, 454, "4.7.0", TEXT_UNAVAILABLE, NULL);
        envelope_destroy(&reply);
        ck_assert_msg(ms < max_ms, "%s, %s: answered after %lld ms", when,
                      rq.mech, (long long)ms);
    }
}

/* Polls until alice logs in again; returns how long it took, or -1. */
static int64_t
wait_recovered(bus_client_t *c, int ms)
{
    struct req rq = {.mech = "LOGIN",
                     .response = NULL,
                     .username = ALICE,
                     .password = PW_ALICE};
    int64_t t0 = test_now_ms();

    while (test_now_ms() - t0 < ms) {
        envelope_t *reply = auth_call(c, &rq, NULL);
        int code = envelope_code(reply);

        envelope_destroy(&reply);
        if (code == 235)
            return test_now_ms() - t0;
        ck_assert_int_eq(code, 454);
        usleep(100000);
    }
    return -1;
}

START_TEST(test_redis_killed)
{
    bus_client_t *c;

    world_start(19115, NULL);
    c = world_client();
    ck_assert_int_ge(wait_recovered(c, 5000), 0);
    kill(W.redis, SIGKILL);
    waitpid(W.redis, NULL, 0);
    expect_unavailable(c, "redis killed", 1500);
    /* Again, once the actor has surely seen the connection go. */
    usleep(300000);
    expect_unavailable(c, "redis still down", 500);
    W.redis = test_redis_start(W.base);
    redis_fill(W.base);
    ck_assert_msg(wait_recovered(c, 8000) >= 0,
                  "auth did not recover after redis restarted");
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

START_TEST(test_redis_stalled)
{
    bus_client_t *c;

    world_start(19120, NULL);
    c = world_client();
    ck_assert_int_ge(wait_recovered(c, 5000), 0);
    /* A Redis that holds the connection and never answers. */
    kill(W.redis, SIGSTOP);
    expect_unavailable(c, "redis stopped", 2500);
    kill(W.redis, SIGCONT);
    ck_assert_msg(wait_recovered(c, 8000) >= 0,
                  "auth did not recover after redis resumed");
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

/* An actor stopped with verifications running, waiting for a thread and
 * waiting out a delay answers them (454) or drops them, and exits
 * cleanly, freeing everything (ASan checks). */
START_TEST(test_stop_while_working)
{
    enum { N = 8 };
    loop_t *loop = loop_new();
    struct outcome o[N];
    bus_client_t *c, *sync;
    char why[256];

    world_start(19125, "SAMOTOP_AUTH_THREADS=1",
                "SAMOTOP_AUTH_FAIL_DELAY_MS=3000",
                "SAMOTOP_AUTH_FAIL_DELAY_MAX_MS=3000", NULL);
    sync = world_client();
    memset(o, 0, sizeof(o));
    c = bus_client_new(loop, W.clients, 1 << 20, why, sizeof(why));
    ck_assert_ptr_nonnull(c);
    /* The first one fails and waits out its delay; the rest queue. */
    for (int i = 0; i < N; i++) {
        struct req rq = {.mech = "PLAIN",
                         .response = plain("", ALICE, i ? PW_ALICE : PW_WRONG),
                         .username = NULL,
                         .password = NULL,
                         .ip = NULL};
        envelope_t *req = verify_new(&rq);

        ck_assert_int_eq(bus_client_send_take(c, &req, on_outcome, &o[i]), 0);
        if (i == 0)
            run_until(loop, NULL, 0, 400);
    }
    run_until(loop, NULL, 0, 50);
    ck_assert_int_eq(o[0].done, 0);
    test_stop_clean(&W.auth, "samotop-auth", 5000);
    run_until(loop, o, N, 5000);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(o[i].done, "request %d never came back", i);
        ck_assert_msg(o[i].err != 0 || o[i].code == 454 || o[i].code == 235,
                      "request %d: err %s code %d", i, err_name(o[i].err),
                      o[i].code);
    }
    ck_assert_msg(o[0].err != 0 || o[0].code == 454,
                  "the delayed failure: err %s code %d", err_name(o[0].err),
                  o[0].code);
    bus_client_destroy(&c);
    bus_client_destroy(&sync);
    loop_destroy(&loop);
    world_stop();
}
END_TEST

/* ---------------------------------------------------------------------
 * The cache of verified logins: throttling as above (limit 3, window 60 s)
 * without delays, and the default cache.
 */

static void
world_cache_start(void)
{
    world_start(19130, "SAMOTOP_AUTH_FAIL_LIMIT=3",
                "SAMOTOP_AUTH_FAIL_DELAY_MS=0", "SAMOTOP_AUTH_FAIL_WINDOW_S=60",
                NULL);
}

/* One PLAIN login: asserts the answer's code and returns how long it
 * took, in ms. */
static int64_t
login(bus_client_t *c, const char *user, const char *pw, const char *ip,
      int want, const char *label)
{
    struct req rq = {.mech = "PLAIN",
                     .response = plain("", user, pw),
                     .username = NULL,
                     .password = NULL,
                     .ip = ip};
    int64_t ms;
    envelope_t *reply = auth_call(c, &rq, &ms);

    ck_assert_msg(envelope_code(reply) == want, "%s: got %d, want %d", label,
                  envelope_code(reply), want);
    envelope_destroy(&reply);
    return ms;
}

/* How many of the actor's auth_verify lines for user say cache=what. */
static int
log_count(const char *user, const char *what)
{
    char *log = read_log(), want_user[128], want_cache[32];
    int n = 0;

    snprintf(want_user, sizeof(want_user), "user=%s ", user);
    snprintf(want_cache, sizeof(want_cache), " cache=%s ", what);
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n"))
        if (strstr(line, "event=auth_verify") && strstr(line, want_user) &&
            strstr(line, want_cache))
            n++;
    free(log);
    return n;
}

/*
 * Whether a login came from the cache is read from the actor's own
 * auth_verify line (cache=hit, miss or off), written before its answer:
 * on a busy machine a cached login can take longer than scrypt, so time
 * is no evidence.
 */

/* One login of user (any spelling) from ip that must get want and log
 * cache=what. */
static void
login_cache(bus_client_t *c, const char *user, const char *pw, const char *ip,
            int want, const char *what, const char *label)
{
    char account[128];
    int before;

    snprintf(account, sizeof(account), "%s", user);
    for (char *p = account; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    before = log_count(account, what);
    login(c, user, pw, ip, want, label);
    ck_assert_msg(log_count(account, what) == before + 1,
                  "%s: the login did not log cache=%s", label, what);
}

/* n logins of user (any spelling) that must succeed from the cache. */
static void
logins_hit(bus_client_t *c, const char *user, const char *pw, int n,
           const char *label)
{
    for (int i = 0; i < n; i++)
        login_cache(c, user, pw, "192.0.2.1", 235, "hit", label);
}

static void
user_set(const char *local, const char *field, const char *value)
{
    store_t *s = test_redis_connect(W.base, 1000);
    char k[STORE_KEY_MAX];

    test_redis_int(s, "HSET", store_key_user(k, "example.test", local), field,
                   value, NULL);
    store_destroy(&s);
}

/* A new stored hash of pw for t<n>, in out. */
static void
new_password(const char *local, const char *pw, char out[PASSWD_MAX])
{
    ck_assert_int_eq(passwd_hash(pw, strlen(pw), out, PASSWD_MAX), 0);
    user_set(local, "pw", out);
}

/* The first login pays for scrypt, the next ones come from the cache. */
START_TEST(test_cache_hit)
{
    bus_client_t *c = world_client();
    struct req rq = {.mech = "LOGIN",
                     .response = NULL,
                     .username = "t1@example.test",
                     .password = PW_THROTTLE};
    envelope_t *reply;
    int64_t ms;

    login_cache(c, "t1@example.test", PW_THROTTLE, "192.0.2.1", 235, "miss",
                "t1, first login");
    logins_hit(c, "t1@example.test", PW_THROTTLE, 3, "t1, logins after");
    /* The same account however spelled, and over LOGIN too. */
    logins_hit(c, "T1@Example.TEST", PW_THROTTLE, 3, "T1 in capitals");
    expect(reply = auth_call(c, &rq, &ms), "t1 over LOGIN", 235, "2.7.0", NULL,
           "t1@example.test");
    envelope_destroy(&reply);
    ck_assert_int_eq(log_count("t1@example.test", "miss"), 1);
    ck_assert_int_eq(log_count("t1@example.test", "hit"), 7);
    bus_client_destroy(&c);
}
END_TEST

/* A new stored hash misses, even of the same password; the old password
 * fails once the password changed. */
START_TEST(test_cache_password_changed)
{
    bus_client_t *c = world_client();
    char h[PASSWD_MAX];

    login(c, "t2@example.test", PW_THROTTLE, "192.0.2.1", 235, "t2, first");
    logins_hit(c, "t2@example.test", PW_THROTTLE, 2, "t2");
    /* The same password, salted anew: another stored string. */
    new_password("t2", PW_THROTTLE, h);
    login_cache(c, "t2@example.test", PW_THROTTLE, "192.0.2.1", 235, "miss",
                "t2, hash made again");
    logins_hit(c, "t2@example.test", PW_THROTTLE, 2, "t2, after the new hash");
    /* Another password: the cached one is refused, as by scrypt. */
    new_password("t2", PW_NEW, h);
    login_cache(c, "t2@example.test", PW_THROTTLE, "198.51.100.21", 535, "miss",
                "t2, old password");
    login_cache(c, "t2@example.test", PW_NEW, "192.0.2.1", 235, "miss",
                "t2, new password");
    logins_hit(c, "t2@example.test", PW_NEW, 2, "t2, new password again");
    bus_client_destroy(&c);
}
END_TEST

/* A disabled account or domain is refused at once, cached or not, and
 * comes back when enabled again. */
START_TEST(test_cache_disabled)
{
    bus_client_t *c = world_client();
    store_t *s;
    char k[STORE_KEY_MAX];

    login(c, "t3@example.test", PW_THROTTLE, "192.0.2.1", 235, "t3, first");
    logins_hit(c, "t3@example.test", PW_THROTTLE, 2, "t3");
    user_set("t3", "disabled", "1");
    login(c, "t3@example.test", PW_THROTTLE, "198.51.100.31", 535,
          "t3 disabled");
    user_set("t3", "disabled", "0");
    login(c, "t3@example.test", PW_THROTTLE, "192.0.2.1", 235,
          "t3 enabled again");
    s = test_redis_connect(W.base, 1000);
    test_redis_int(s, "HSET", store_key_domain(k, "example.test"), "disabled",
                   "1", NULL);
    store_destroy(&s);
    login(c, "t3@example.test", PW_THROTTLE, "198.51.100.32", 535,
          "t3, domain disabled");
    s = test_redis_connect(W.base, 1000);
    test_redis_int(s, "HSET", store_key_domain(k, "example.test"), "disabled",
                   "0", NULL);
    store_destroy(&s);
    logins_hit(c, "t3@example.test", PW_THROTTLE, 2,
               "t3, domain enabled again");
    ck_assert_msg(log_count("t3@example.test", "miss") >= 3,
                  "the disabled logins did not miss the cache");
    bus_client_destroy(&c);
}
END_TEST

/* A wrong password against a cached account costs scrypt, is counted,
 * and the lockout comes before the cache. */
START_TEST(test_cache_wrong_password)
{
    bus_client_t *c = world_client();

    login(c, "t4@example.test", PW_THROTTLE, "192.0.2.1", 235, "t4, first");
    logins_hit(c, "t4@example.test", PW_THROTTLE, 2, "t4");
    login_cache(c, "t4@example.test", PW_WRONG, "198.51.100.41", 535, "miss",
                "t4, wrong password");
    ck_assert_int_eq(counter("authfail_user", "t4@example.test", 1), 1);
    ck_assert_int_eq(counter("authfail_ip", "198.51.100.41", 1), 1);
    /* The right one still comes from the cache, and clears the count. */
    logins_hit(c, "t4@example.test", PW_THROTTLE, 1, "t4, right after wrong");
    ck_assert_int_eq(counter("authfail_user", "t4@example.test", 0), 0);
    /* At the limit the account is locked, cached or not. */
    for (int i = 0; i < 3; i++) {
        char ip[32];

        snprintf(ip, sizeof(ip), "198.51.100.%d", 42 + i);
        login(c, "t4@example.test", PW_WRONG, ip, 535, "t4, wrong again");
    }
    expect_locked(c, "t4@example.test", "192.0.2.1");
    bus_client_destroy(&c);
}
END_TEST

/* A hash made with weaker parameters than the default is replaced by a
 * default one at the first good login; the next login is a cache hit on
 * the new hash. */
START_TEST(test_rehash)
{
    bus_client_t *c = world_client();
    store_t *s;
    store_reply_t *r = NULL;
    char k[STORE_KEY_MAX], why[256], now[PASSWD_MAX];
    const char *argv[] = {"HGET", store_key_user(k, "example.test", "low"),
                          "pw"};
    struct passwd_params p;
    char *log;

    ck_assert_int_eq(passwd_needs_rehash(hash_low), 1);
    login(c, "low@example.test", PW_LOW, "192.0.2.1", 235, "low, first");
    s = test_redis_connect(W.base, 1000);
    ck_assert_int_eq(store_cmd(s, &r, why, sizeof(why), 3, argv, NULL), 0);
    ck_assert_int_eq(store_reply_type(r), STORE_STR);
    snprintf(now, sizeof(now), "%s", store_reply_str(r, NULL));
    store_reply_free(&r);
    store_destroy(&s);
    ck_assert_msg(strcmp(now, hash_low) != 0, "the weak hash is still stored");
    ck_assert_int_eq(passwd_parse(now, &p, NULL, 0), 0);
    ck_assert_int_eq(p.ln, passwd_default.ln);
    ck_assert_int_eq(passwd_needs_rehash(now), 0);
    ck_assert_int_eq(passwd_verify(PW_LOW, strlen(PW_LOW), now, NULL, 0), 0);
    log = read_log();
    ck_assert_msg(strstr(log, "event=auth_rehash user=low@example.test "
                              "outcome=stored") != NULL,
                  "no auth_rehash line");
    free(log);
    logins_hit(c, "low@example.test", PW_LOW, 2, "low, after the rehash");
    bus_client_destroy(&c);
}
END_TEST

/* Entries expire auth.cache_ttl_s after the verification that made them,
 * however often they are hit. */
START_TEST(test_cache_ttl)
{
    bus_client_t *c;

    world_start(19135, "SAMOTOP_AUTH_CACHE_TTL_S=1", NULL);
    c = world_client();
    login_cache(c, "t5@example.test", PW_THROTTLE, "192.0.2.1", 235, "miss",
                "t5, first");
    logins_hit(c, "t5@example.test", PW_THROTTLE, 2, "t5");
    usleep(600000);
    login(c, "t5@example.test", PW_THROTTLE, "192.0.2.1", 235,
          "t5, hit after 0.6 s");
    usleep(600000);
    login_cache(c, "t5@example.test", PW_THROTTLE, "192.0.2.1", 235, "miss",
                "t5, 1.2 s after the first");
    logins_hit(c, "t5@example.test", PW_THROTTLE, 2, "t5, cached again");
    ck_assert_int_eq(log_count("t5@example.test", "miss"), 2);
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

/* auth.cache_ttl_s=0: no cache, every login pays for scrypt. */
START_TEST(test_cache_off)
{
    bus_client_t *c;

    world_start(19140, "SAMOTOP_AUTH_CACHE_TTL_S=0", NULL);
    c = world_client();
    login(c, "t6@example.test", PW_THROTTLE, "192.0.2.1", 235, "t6, first");
    for (int i = 0; i < 2; i++)
        login_cache(c, "t6@example.test", PW_THROTTLE, "192.0.2.1", 235, "off",
                    "t6, cache off");
    ck_assert_int_eq(log_count("t6@example.test", "off"), 3);
    bus_client_destroy(&c);
    world_stop();
}
END_TEST

static Suite *
auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc;

    tc = tcase_create("sasl");
    tcase_add_loop_test(tc, test_plain, 0,
                        sizeof(plain_rows) / sizeof(plain_rows[0]));
    tcase_add_test(tc, test_plain_limits);
    tcase_add_test(tc, test_login_take);
    tcase_add_loop_test(tc, test_account, 0,
                        sizeof(account_rows) / sizeof(account_rows[0]));
    suite_add_tcase(s, tc);

    tc = tcase_create("verify");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, world_sasl_start, world_stop);
    tcase_add_loop_test(tc, test_verify, 0, (int)nverify_rows);
    tcase_add_test(tc, test_unknown_user_timing);
    tcase_add_test(tc, test_burst);
    tcase_add_test(tc, test_log_clean);
    suite_add_tcase(s, tc);

    tc = tcase_create("throttle");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, world_throttle_start, world_stop);
    tcase_add_test(tc, test_throttle_account);
    tcase_add_test(tc, test_throttle_ip);
    tcase_add_test(tc, test_success_clears);
    suite_add_tcase(s, tc);

    tc = tcase_create("cache");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, world_cache_start, world_stop);
    tcase_add_test(tc, test_cache_hit);
    tcase_add_test(tc, test_cache_password_changed);
    tcase_add_test(tc, test_cache_disabled);
    tcase_add_test(tc, test_cache_wrong_password);
    tcase_add_test(tc, test_rehash);
    suite_add_tcase(s, tc);

    tc = tcase_create("cache_worlds");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cache_ttl);
    tcase_add_test(tc, test_cache_off);
    suite_add_tcase(s, tc);

    tc = tcase_create("outage");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_busy);
    tcase_add_test(tc, test_redis_killed);
    tcase_add_test(tc, test_redis_stalled);
    tcase_add_test(tc, test_stop_while_working);
    suite_add_tcase(s, tc);
    return s;
}

static void
make_hash(const char *pw, char *out)
{
    if (passwd_hash(pw, strlen(pw), out, PASSWD_MAX) != 0) {
        fprintf(stderr, "test_auth: passwd_hash failed\n");
        exit(EXIT_FAILURE);
    }
}

int
main(void)
{
    SRunner *sr;
    int failed;

    make_hash(PW_ALICE, hash_alice);
    make_hash(PW_CAROL, hash_carol);
    make_hash(PW_DAVE, hash_dave);
    make_hash(PW_ERIN, hash_erin);
    make_hash(PW_THROTTLE, hash_throttle);
    if (passwd_hash_params(
            PW_LOW, strlen(PW_LOW),
            &(struct passwd_params){
                .ln = 10, .r = 8, .p = 1, .saltlen = 16, .keylen = 32},
            hash_low, sizeof(hash_low)) != 0) {
        fprintf(stderr, "test_auth: passwd_hash_params failed\n");
        exit(EXIT_FAILURE);
    }
    make_verify_rows();
    sr = srunner_create(auth_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
