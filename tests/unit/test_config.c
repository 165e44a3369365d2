/*
 * test_config.c - configuration (lib/config.h): the defaults of the local
 * profile, the file format, the environment winning over the file, and bad
 * values refused with a message naming the key (and the file line) and the
 * reason.
 *
 * Every test runs in its own process (CK_FORK) with every SAMOTOP_*
 * variable removed first, so setenv() here never leaks into another test
 * and the caller's environment never leaks in.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "lib/config.h"
#include "lib/err.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

extern char **environ;

static void
clean_env(void)
{
    for (;;) {
        char name[256] = "";

        for (char **e = environ; *e; e++)
            if (strncmp(*e, "SAMOTOP_", 8) == 0) {
                size_t n = strcspn(*e, "=");

                snprintf(name, sizeof(name), "%.*s", (int)n, *e);
                break;
            }
        if (name[0] == '\0')
            return;
        unsetenv(name);
    }
}

/* Writes text to a new temporary file; the caller frees the path (and
 * unlinks the file). */
static char *
write_file(const char *text)
{
    char *path = strdup("/tmp/samotop-config-XXXXXX");
    int fd = mkstemp(path);
    size_t n = strlen(text);

    ck_assert_msg(fd >= 0, "mkstemp failed");
    ck_assert_msg(write(fd, text, n) == (ssize_t)n, "short write");
    close(fd);
    return path;
}

static void
want_str(const char *label, const config_t *cfg, const char *key,
         const char *want)
{
    const char *got = config_str(cfg, key);

    ck_assert_msg(strcmp(got, want) == 0, "%s: %s: got \"%s\", want \"%s\"",
                  label, key, got, want);
}

static void
want_in(const char *label, const char *why, const char *part)
{
    ck_assert_msg(strstr(why, part) != NULL,
                  "%s: message \"%s\" does not say \"%s\"", label, why, part);
}

/* Defaults: the local profile of DESIGN.md. */

static const struct def_row {
    const char *key, *want;
} def_rows[] = {
    {"listen.mta", "127.0.0.1:2525"},
    {"listen.msa", "127.0.0.1:2587"},
    {"listen.smtps", "127.0.0.1:2465"},
    {"listen.imap", "127.0.0.1:2143"},
    {"listen.imaps", "127.0.0.1:2993"},
    {"listen.lmtp", "127.0.0.1:2424"},
    {"redis.host", "127.0.0.1"},
    {"redis.port", "6380"},
    {"bus.clients", "tcp://127.0.0.1:5570"},
    {"bus.workers", "tcp://127.0.0.1:5571"},
    {"bus.trace", "tcp://127.0.0.1:5572"},
    {"broker.clients", "tcp://127.0.0.1:5570"},
    {"data", "./var"},
    {"log.level", "info"},
    {"bus.timeout_ms", "5000"},
    {"supervisor.redis", "yes"},
};

START_TEST(test_defaults)
{
    const struct def_row *r = &def_rows[_i];
    config_t *cfg = config_new();
    char why[256] = "";
    int rc;

    want_str("new", cfg, r->key, r->want);
    rc = config_load(cfg, NULL, why, sizeof(why));
    ck_assert_msg(rc == 0, "load with no file: got %d (%s), want 0", rc,
                  why);
    want_str("loaded", cfg, r->key, r->want);
    config_destroy(&cfg);
    ck_assert_msg(cfg == NULL, "config_destroy left the pointer set");
}
END_TEST

START_TEST(test_typed_getters)
{
    static const struct {
        const char *v;
        bool want;
    } bools[] = {{"yes", true}, {"true", true},   {"1", true},
                 {"no", false}, {"false", false}, {"0", false}};
    config_t *cfg = config_new();
    char why[256];

    ck_assert_msg(config_int(cfg, "redis.port") == 6380,
                  "redis.port: got %ld, want 6380",
                  config_int(cfg, "redis.port"));
    ck_assert_msg(config_bool(cfg, "supervisor.redis"),
                  "supervisor.redis: got false, want true");
    for (size_t i = 0; i < NROWS(bools); i++) {
        ck_assert_int_eq(config_set(cfg, "supervisor.redis", bools[i].v, why,
                                    sizeof(why)), 0);
        ck_assert_msg(config_bool(cfg, "supervisor.redis") == bools[i].want,
                      "bool \"%s\": got %d, want %d", bools[i].v,
                      config_bool(cfg, "supervisor.redis"), bools[i].want);
    }
    config_destroy(&cfg);
}
END_TEST

/* Asking for a key nobody declared is a bug, and aborts. */
START_TEST(test_undeclared_key_aborts)
{
    config_t *cfg = config_new();

    config_str(cfg, "no.such.key");
}
END_TEST

static const struct env_name_row {
    const char *key, *want;
} env_name_rows[] = {
    {"bus.clients", "SAMOTOP_BUS_CLIENTS"},
    {"bus.timeout_ms", "SAMOTOP_BUS_TIMEOUT_MS"},
    {"data", "SAMOTOP_DATA"},
    {"supervisor.redis_server", "SAMOTOP_SUPERVISOR_REDIS_SERVER"},
};

START_TEST(test_env_name)
{
    const struct env_name_row *r = &env_name_rows[_i];
    const char *got = config_env_name(r->key);

    ck_assert_msg(strcmp(got, r->want) == 0, "%s: got %s, want %s", r->key,
                  got, r->want);
}
END_TEST

/* The file. */

static const struct file_row {
    const char *label, *text, *key, *want;
} file_rows[] = {
    {"top-level key", "data = /srv/samotop\n", "data", "/srv/samotop"},
    {"section", "[bus]\ntimeout_ms = 1234\n", "bus.timeout_ms", "1234"},
    {"section name trimmed", "[ listen ]\nmta=0.0.0.0:25\n", "listen.mta",
     "0.0.0.0:25"},
    {"comments", "# a\n; b\n   # indented\n[bus]\n# timeout_ms = 1\n"
                 "timeout_ms = 77\n", "bus.timeout_ms", "77"},
    {"blank lines and CRLF", "\r\n\r\n[redis]\r\nport = 7000\r\n",
     "redis.port", "7000"},
    {"indented key", "[redis]\n    port = 7003\n", "redis.port", "7003"},
    {"quoted value", "hostname = \"mx.example.org\"\n", "hostname",
     "mx.example.org"},
    {"quotes keep spaces", "hostname = \"  a b  \"\n", "hostname",
     "  a b  "},
    {"empty quotes", "hostname = \"\"\n", "hostname", ""},
    {"one quote stays", "hostname = \"\n", "hostname", "\""},
    {"unquoted value trimmed", "hostname =   mx  \n", "hostname", "mx"},
    {"= in the value", "hostname = a=b\n", "hostname", "a=b"},
    {"later line wins", "[bus]\ntimeout_ms=100\ntimeout_ms=200\n",
     "bus.timeout_ms", "200"},
    {"next section", "[bus]\ntimeout_ms=100\n[redis]\nport=7001\n",
     "redis.port", "7001"},
    {"earlier section kept", "[bus]\ntimeout_ms=100\n[redis]\nport=7001\n",
     "bus.timeout_ms", "100"},
    {"endpoint list", "[bus]\nclients = tcp://10.0.0.1:5570, "
                      "tcp://10.0.0.2:5570\n", "bus.clients",
     "tcp://10.0.0.1:5570, tcp://10.0.0.2:5570"},
    {"no final newline", "[redis]\nport = 7002", "redis.port", "7002"},
    {"untouched key keeps its default", "[bus]\ntimeout_ms = 90\n",
     "listen.mta", "127.0.0.1:2525"},
};

START_TEST(test_file)
{
    const struct file_row *r = &file_rows[_i];
    char *path = write_file(r->text), why[512] = "";
    config_t *cfg = config_new();
    int rc = config_load(cfg, path, why, sizeof(why));

    ck_assert_msg(rc == 0, "%s: got %d (%s), want 0", r->label, rc, why);
    want_str(r->label, cfg, r->key, r->want);
    unlink(path);
    free(path);
    config_destroy(&cfg);
}
END_TEST

/* SAMOTOP_CONFIG names the file when no path is given; a path given
 * beats it. */
START_TEST(test_config_env_file)
{
    char *a = write_file("[bus]\ntimeout_ms = 111\n");
    char *b = write_file("[bus]\ntimeout_ms = 222\n"), why[512] = "";
    config_t *cfg = config_new();

    setenv("SAMOTOP_CONFIG", a, 1);
    ck_assert_int_eq(config_load(cfg, NULL, why, sizeof(why)), 0);
    want_str("SAMOTOP_CONFIG", cfg, "bus.timeout_ms", "111");
    ck_assert_int_eq(config_load(cfg, b, why, sizeof(why)), 0);
    want_str("path over SAMOTOP_CONFIG", cfg, "bus.timeout_ms", "222");
    ck_assert_int_eq(config_load(cfg, "", why, sizeof(why)), 0);
    want_str("empty path", cfg, "bus.timeout_ms", "111");
    unlink(a);
    unlink(b);
    free(a);
    free(b);
    config_destroy(&cfg);
}
END_TEST

/* The environment beats the file, and config_set() beats both. */
START_TEST(test_env_override)
{
    char *path = write_file("[bus]\ntimeout_ms = 1234\nheartbeat_ms = 500\n");
    config_t *cfg = config_new();
    char why[512] = "";
    int rc;

    setenv("SAMOTOP_BUS_TIMEOUT_MS", "777", 1);
    setenv("SAMOTOP_LISTEN_MTA", "0.0.0.0:25", 1);
    rc = config_load(cfg, path, why, sizeof(why));
    ck_assert_msg(rc == 0, "load: got %d (%s), want 0", rc, why);
    want_str("env over file", cfg, "bus.timeout_ms", "777");
    ck_assert_msg(config_int(cfg, "bus.timeout_ms") == 777,
                  "bus.timeout_ms: got %ld, want 777",
                  config_int(cfg, "bus.timeout_ms"));
    want_str("file without env", cfg, "bus.heartbeat_ms", "500");
    want_str("env over default", cfg, "listen.mta", "0.0.0.0:25");
    ck_assert_int_eq(config_set(cfg, "bus.timeout_ms", "888", why,
                                sizeof(why)), 0);
    want_str("set over env", cfg, "bus.timeout_ms", "888");
    unlink(path);
    free(path);
    config_destroy(&cfg);
}
END_TEST

/* Bad values: the message names the key and the reason, and the value
 * in force stays. */

static const struct bad_row {
    const char *label, *key, *value, *reason;
} bad_rows[] = {
    {"unknown key", "bus.nope", "1", "unknown key"},
    {"unknown section", "nope", "1", "unknown key"},
    {"letters for an integer", "redis.port", "abc", "not an integer"},
    {"integer with a tail", "redis.port", "12x", "not an integer"},
    {"empty integer", "redis.port", "", "not an integer"},
    {"hex integer", "redis.port", "0x10", "not an integer"},
    {"integer overflow", "redis.port", "99999999999999999999",
     "not an integer"},
    {"port 0", "redis.port", "0", "outside 1..65535"},
    {"port 65536", "redis.port", "65536", "outside 1..65535"},
    {"negative port", "redis.port", "-1", "outside 1..65535"},
    {"timeout under the minimum", "bus.timeout_ms", "9", "outside"},
    {"timeout over the maximum", "bus.timeout_ms", "600001", "outside"},
    {"address without port", "listen.mta", "localhost", "HOST:PORT"},
    {"address without host", "listen.mta", ":25", "HOST:PORT"},
    {"address with empty port", "listen.mta", "localhost:", "HOST:PORT"},
    {"address with port 0", "listen.mta", "localhost:0", "HOST:PORT"},
    {"address with port 70000", "listen.mta", "localhost:70000",
     "HOST:PORT"},
    {"address with a word for port", "listen.mta", "localhost:smtp",
     "HOST:PORT"},
    {"IPv6 address without port", "listen.imap", "[::1]", "HOST:PORT"},
    {"IPv6 address missing the colon", "listen.imap", "[::1]143",
     "HOST:PORT"},
    {"empty IPv6 host", "listen.imap", "[]:143", "HOST:PORT"},
    {"http endpoint", "bus.clients", "http://127.0.0.1:5570", "not tcp://"},
    {"bare address endpoint", "bus.clients", "127.0.0.1:5570", "not tcp://"},
    {"tcp endpoint without port", "bus.clients", "tcp://127.0.0.1",
     "tcp://HOST:PORT"},
    {"ipc endpoint without path", "bus.workers", "ipc://", "no address"},
    {"inproc endpoint without name", "bus.trace", "inproc://",
     "no address"},
    {"empty endpoint list", "bus.clients", "", "no endpoint"},
    {"only commas", "bus.clients", " , ,", "no endpoint"},
    {"second endpoint bad", "bus.clients", "tcp://a:1, udp://b:2",
     "udp://b:2"},
    {"bad bool", "supervisor.redis", "maybe", "yes/no"},
    {"bool in capitals", "supervisor.redis", "Yes", "yes/no"},
    {"bad log level", "log.level", "verbose", "debug|info|warn|err|fatal"},
    {"control character", "hostname", "mx\texample", "control character"},
    {"newline in a path", "data", "/var\n/x", "control character"},
    {"metrics without port", "metrics.listen", "127.0.0.1", "HOST:PORT"},
    {"metrics port too big", "metrics.listen", "127.0.0.1:65536",
     "0..65535"},
    {"metrics without host", "metrics.listen", ":0", "HOST:PORT"},
};

START_TEST(test_bad_value)
{
    const struct bad_row *r = &bad_rows[_i];
    config_t *cfg = config_new();
    char why[512] = "", *before = NULL;
    int rc;

    if (strcmp(r->reason, "unknown key") != 0)
        before = strdup(config_str(cfg, r->key));
    rc = config_set(cfg, r->key, r->value, why, sizeof(why));
    ck_assert_msg(rc == ERR_CONFIG, "%s: got %d, want %d", r->label, rc,
                  ERR_CONFIG);
    want_in(r->label, why, r->key);
    want_in(r->label, why, r->reason);
    if (before) {
        want_str(r->label, cfg, r->key, before);
        free(before);
    }
    config_destroy(&cfg);
}
END_TEST

static const struct good_row {
    const char *key, *value;
} good_rows[] = {
    {"listen.mta", "[::1]:25"},
    {"listen.mta", "0.0.0.0:65535"},
    {"listen.mta", "mx.example.org:1"},
    {"bus.clients", "ipc:///tmp/samotop.sock"},
    {"bus.clients", "inproc://bus"},
    {"broker.clients", "tcp://*:5570"},
    {"bus.clients", "tcp://[::1]:5570"},
    {"bus.clients", "tcp://a:1,tcp://b:2"},
    {"log.level", "debug"},
    {"log.level", "fatal"},
    {"supervisor.redis", "false"},
    {"supervisor.bus", "0"},
    {"redis.port", "1"},
    {"redis.port", "65535"},
    {"bus.timeout_ms", "10"},
    {"bus.timeout_ms", "600000"},
    {"hostname", ""},
    {"redis.password", "p@ss word \"quoted\""},
    {"metrics.listen", ""},
    {"metrics.listen", "127.0.0.1:0"},
    {"metrics.listen", "[::]:9400"},
};

START_TEST(test_good_value)
{
    const struct good_row *r = &good_rows[_i];
    config_t *cfg = config_new();
    char why[512] = "";
    int rc = config_set(cfg, r->key, r->value, why, sizeof(why));

    ck_assert_msg(rc == 0, "%s = %s: got %d (%s), want 0", r->key, r->value,
                  rc, why);
    want_str(r->key, cfg, r->key, r->value);
    config_destroy(&cfg);
}
END_TEST

/* Errors in the file name the file and the line. */

static const struct file_err_row {
    const char *label, *text;
    int line;
    const char *reason;
} file_err_rows[] = {
    {"unknown key", "# ok\n[bus]\nnope = 1\n", 3, "bus.nope: unknown key"},
    {"bad integer", "[bus]\ntimeout_ms = soon\n", 2,
     "bus.timeout_ms: \"soon\" is not an integer"},
    {"out of range", "\n\n\n[redis]\nport = 0\n", 5, "redis.port"},
    {"bad address", "[listen]\nmta = 2525\n", 2, "listen.mta"},
    {"bad endpoint", "[bus]\nclients = 127.0.0.1\n", 2, "bus.clients"},
    {"bad bool", "[supervisor]\nredis = sometimes\n", 2,
     "supervisor.redis"},
    {"bad log level", "[log]\nlevel = loud\n", 2, "log.level"},
    {"unclosed section", "[bus\n", 1, "bad section header"},
    {"text after a section", "[bus] x\n", 1, "bad section header"},
    {"no =", "[bus]\ntimeout_ms 5\n", 2, "expected key = value"},
    {"inline comment is part of the value", "[redis]\nport = 6380 # x\n", 2,
     "not an integer"},
};

START_TEST(test_file_error)
{
    const struct file_err_row *r = &file_err_rows[_i];
    char *path = write_file(r->text), why[512] = "", where[300];
    config_t *cfg = config_new();
    int rc = config_load(cfg, path, why, sizeof(why));

    ck_assert_msg(rc == ERR_CONFIG, "%s: got %d, want %d", r->label, rc,
                  ERR_CONFIG);
    snprintf(where, sizeof(where), "%s:%d:", path, r->line);
    want_in(r->label, why, where);
    want_in(r->label, why, r->reason);
    unlink(path);
    free(path);
    config_destroy(&cfg);
}
END_TEST

START_TEST(test_file_long_line)
{
    size_t n = 5000, head;
    char *text = malloc(n + 32), *path, why[512] = "", where[300];
    config_t *cfg = config_new();

    strcpy(text, "[bus]\nclients = ");
    head = strlen(text);
    memset(text + head, 'a', n);
    strcpy(text + head + n, "\n");
    path = write_file(text);
    ck_assert_int_eq(config_load(cfg, path, why, sizeof(why)), ERR_CONFIG);
    snprintf(where, sizeof(where), "%s:2:", path);
    want_in("long line", why, where);
    want_in("long line", why, "too long");
    unlink(path);
    free(path);
    free(text);
    config_destroy(&cfg);
}
END_TEST

START_TEST(test_file_missing)
{
    config_t *cfg = config_new();
    char why[512] = "";
    int rc = config_load(cfg, "/nonexistent/samotop.conf", why, sizeof(why));

    ck_assert_msg(rc == ERR_CONFIG, "missing file: got %d, want %d", rc,
                  ERR_CONFIG);
    want_in("missing file", why, "/nonexistent/samotop.conf");
    want_in("missing file", why, "cannot open");
    setenv("SAMOTOP_CONFIG", "/nonexistent/other.conf", 1);
    rc = config_load(cfg, NULL, why, sizeof(why));
    ck_assert_msg(rc == ERR_CONFIG, "missing SAMOTOP_CONFIG: got %d, want %d",
                  rc, ERR_CONFIG);
    want_in("missing SAMOTOP_CONFIG", why, "/nonexistent/other.conf");
    config_destroy(&cfg);
}
END_TEST

/* Errors from the environment name the variable. */

static const struct env_err_row {
    const char *var, *value, *key, *reason;
} env_err_rows[] = {
    {"SAMOTOP_REDIS_PORT", "abc", "redis.port", "not an integer"},
    {"SAMOTOP_BUS_TIMEOUT_MS", "5", "bus.timeout_ms", "outside"},
    {"SAMOTOP_LOG_LEVEL", "loud", "log.level", "debug|info"},
    {"SAMOTOP_BUS_CLIENTS", "http://x:1", "bus.clients", "not tcp://"},
    {"SAMOTOP_LISTEN_MTA", "nowhere", "listen.mta", "HOST:PORT"},
};

START_TEST(test_env_error)
{
    const struct env_err_row *r = &env_err_rows[_i];
    char *path = write_file("[bus]\ntimeout_ms = 1234\n"), why[512] = "";
    config_t *cfg = config_new();
    int rc;

    setenv(r->var, r->value, 1);
    rc = config_load(cfg, path, why, sizeof(why));
    ck_assert_msg(rc == ERR_CONFIG, "%s: got %d, want %d", r->var, rc,
                  ERR_CONFIG);
    want_in(r->var, why, r->key);
    want_in(r->var, why, r->reason);
    want_in(r->var, why, r->var);
    unlink(path);
    free(path);
    config_destroy(&cfg);
}
END_TEST

/* Helpers. */

static const struct list_row {
    const char *value;
    int n;
    const char *items[3];
} list_rows[] = {
    {"a, b,,c ", 3, {"a", "b", "c"}},
    {"one", 1, {"one"}},
    {"  spaced  ", 1, {"spaced"}},
    {"", 0, {NULL}},
    {" , ,", 0, {NULL}},
};

START_TEST(test_list)
{
    const struct list_row *r = &list_rows[_i];
    char **items = NULL;
    int n = config_list(r->value, &items);

    ck_assert_msg(n == r->n, "\"%s\": got %d items, want %d", r->value, n,
                  r->n);
    for (int i = 0; i < n; i++)
        ck_assert_msg(strcmp(items[i], r->items[i]) == 0,
                      "\"%s\" item %d: got \"%s\", want \"%s\"", r->value, i,
                      items[i], r->items[i]);
    config_list_free(&items, n);
    ck_assert_msg(items == NULL, "config_list_free left the pointer set");
}
END_TEST

static const struct addr_row {
    const char *addr;
    int rc;
    const char *host;
    int port;
} addr_rows[] = {
    {"127.0.0.1:25", 0, "127.0.0.1", 25},
    {"mx.example.org:587", 0, "mx.example.org", 587},
    {"[::1]:993", 0, "::1", 993},
    {"[fe80::1%eth0]:1", 0, "fe80::1%eth0", 1},
    {"host:65535", 0, "host", 65535},
    {"host", ERR_INVAL, NULL, 0},
    {"host:", ERR_INVAL, NULL, 0},
    {":25", ERR_INVAL, NULL, 0},
    {"host:0", ERR_INVAL, NULL, 0},
    {"host:65536", ERR_INVAL, NULL, 0},
    {"host:25x", ERR_INVAL, NULL, 0},
    {"[::1]", ERR_INVAL, NULL, 0},
    {"[::1:25", ERR_INVAL, NULL, 0},
    {"[]:25", ERR_INVAL, NULL, 0},
};

START_TEST(test_split_addr)
{
    const struct addr_row *r = &addr_rows[_i];
    char host[64] = "untouched";
    int port = -1, rc = config_split_addr(r->addr, host, sizeof(host), &port);

    ck_assert_msg(rc == r->rc, "%s: got %d, want %d", r->addr, rc, r->rc);
    if (rc == 0) {
        ck_assert_msg(strcmp(host, r->host) == 0,
                      "%s: host: got \"%s\", want \"%s\"", r->addr, host,
                      r->host);
        ck_assert_msg(port == r->port, "%s: port: got %d, want %d", r->addr,
                      port, r->port);
    }
}
END_TEST

START_TEST(test_split_addr_small_buffer)
{
    char host[4];
    int port = 0;

    ck_assert_int_eq(config_split_addr("abcd:25", host, sizeof(host), &port),
                     ERR_INVAL);
    ck_assert_int_eq(config_split_addr("abc:25", host, sizeof(host), &port),
                     0);
    ck_assert_str_eq(host, "abc");
}
END_TEST

/* --print-config never shows a secret. */
START_TEST(test_dump_masks_secrets)
{
    config_t *cfg = config_new();
    char why[256], *out = NULL;
    size_t len = 0;
    FILE *f;

    f = open_memstream(&out, &len);
    config_dump(cfg, f);
    fclose(f);
    ck_assert_msg(strstr(out, "redis.password = \t") != NULL,
                  "an empty password is shown as masked: %s", out);
    free(out);
    ck_assert_int_eq(config_set(cfg, "redis.password", "s3cret", why,
                                sizeof(why)), 0);
    ck_assert_int_eq(config_set(cfg, "hostname", "mx.example.org", why,
                                sizeof(why)), 0);
    f = open_memstream(&out, &len);
    config_dump(cfg, f);
    fclose(f);
    ck_assert_msg(strstr(out, "s3cret") == NULL, "the password leaked: %s",
                  out);
    ck_assert_msg(strstr(out, "redis.password = ***") != NULL,
                  "no mask for the password: %s", out);
    ck_assert_msg(strstr(out, "hostname = mx.example.org") != NULL,
                  "hostname not shown: %s", out);
    ck_assert_msg(strstr(out, "SAMOTOP_REDIS_PORT") != NULL,
                  "environment names not shown: %s", out);
    free(out);
    config_destroy(&cfg);
}
END_TEST

/* Typos of keys are named; keys, other sections' words and the scripts'
 * own SAMOTOP_* variables are not; a small buffer truncates the names but
 * still counts them all. */
START_TEST(test_env_unknown)
{
    char *envp[] = {
        "SAMOTOP_REDIS_PROT=6380",       /* typo of redis.port */
        "SAMOTOP_REDIS_PORT=6380",       /* a key */
        "SAMOTOP_MAILBOX_SHARSD=2",      /* typo of mailbox.shards */
        "SAMOTOP_LISTEN_MSA=127.0.0.1:1587", /* a key */
        "SAMOTOP_CONFIG=/etc/samotop.conf",
        "SAMOTOP_INSTANCE=a1",
        "SAMOTOP_BIN=/x/bin",
        "SAMOTOP_TEST_KEEP=1",
        "SAMOTOP_FUZZ_SECONDS=15",
        "PATH=/usr/bin",
        "SAMOTOP_REDIS",                 /* no '=' */
        NULL,
    };
    char out[64], tiny[12];

    ck_assert_uint_eq(config_env_unknown(envp, out, sizeof(out)), 2);
    ck_assert_str_eq(out, "SAMOTOP_REDIS_PROT SAMOTOP_MAILBOX_SHARSD");
    ck_assert_uint_eq(config_env_unknown(envp, tiny, sizeof(tiny)), 2);
    ck_assert_uint_lt(strlen(tiny), sizeof(tiny));
    ck_assert_uint_eq(config_env_unknown(envp + 1, out, sizeof(out)), 1);
    ck_assert_str_eq(out, "SAMOTOP_MAILBOX_SHARSD");
    ck_assert_uint_eq(config_env_unknown(envp + 3, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "");
}
END_TEST

static Suite *
config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("defaults");
    tcase_add_checked_fixture(tc, clean_env, NULL);
    tcase_add_loop_test(tc, test_defaults, 0, NROWS(def_rows));
    tcase_add_test(tc, test_typed_getters);
    tcase_add_test_raise_signal(tc, test_undeclared_key_aborts, SIGABRT);
    tcase_add_loop_test(tc, test_env_name, 0, NROWS(env_name_rows));
    suite_add_tcase(s, tc);

    tc = tcase_create("load");
    tcase_add_checked_fixture(tc, clean_env, NULL);
    tcase_add_loop_test(tc, test_file, 0, NROWS(file_rows));
    tcase_add_test(tc, test_config_env_file);
    tcase_add_test(tc, test_env_override);
    suite_add_tcase(s, tc);

    tc = tcase_create("refuse");
    tcase_add_checked_fixture(tc, clean_env, NULL);
    tcase_add_loop_test(tc, test_bad_value, 0, NROWS(bad_rows));
    tcase_add_loop_test(tc, test_good_value, 0, NROWS(good_rows));
    tcase_add_loop_test(tc, test_file_error, 0, NROWS(file_err_rows));
    tcase_add_test(tc, test_file_long_line);
    tcase_add_test(tc, test_file_missing);
    tcase_add_loop_test(tc, test_env_error, 0, NROWS(env_err_rows));
    suite_add_tcase(s, tc);

    tc = tcase_create("helpers");
    tcase_add_checked_fixture(tc, clean_env, NULL);
    tcase_add_loop_test(tc, test_list, 0, NROWS(list_rows));
    tcase_add_loop_test(tc, test_split_addr, 0, NROWS(addr_rows));
    tcase_add_test(tc, test_split_addr_small_buffer);
    tcase_add_test(tc, test_dump_masks_secrets);
    tcase_add_test(tc, test_env_unknown);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(config_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
