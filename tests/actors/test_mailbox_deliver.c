/*
 * test_mailbox_deliver.c - mailbox.deliver against the real samotop-bus and
 * samotop-mailbox processes over TCP on loopback, with SAMOTOP_DATA in a
 * temporary folder: the message reaches every mailbox byte for byte (one
 * file, hard-linked), the results come back in request order, a bad
 * mailbox is refused while the others are stored, a broken one defers
 * alone, and bad requests get an error reply. Every reply is checked
 * field by field against schemas/mailbox.deliver.reply.json.
 *
 * Ports 18400-18499 belong to this suite; each test takes a block of ten
 * (five for each row of test_bad_request) and uses the first three.
 * A burst of requests sent at once is stored in group commits, each
 * request answered as if it had come alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>

#include "bus.h"
#include "lib/err.h"
#include "tests/testlib.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))
#define FROM "bob@example.org"
#define RETURN_PATH "Return-Path: <" FROM ">\r\n"

/* One broker and one mailbox actor on their own ports and data folder. */
struct rig {
    char base[64], data[96], log[96];
    char clients[64];
    char env[16][160];
    const char *envp[17];
    pid_t broker, mailbox;
    bus_client_t *c;
};

/* Set by a test that reads the mailbox's log: rig_start() sends it to
 * rig.log, and rig_stop() leaves the folder for the test to remove. */
static const char *mailbox_log;

static void
rig_start(struct rig *r, int base)
{
    /* test_bin() answers in one static buffer: each path is copied. */
    char bus_bin[4096], mb_bin[4096], why[256];
    const char *bus_argv[] = {bus_bin, "--instance", "t", NULL};
    const char *mb_argv[] = {mb_bin, "--instance", "m", NULL};
    int i = 0;

    snprintf(bus_bin, sizeof(bus_bin), "%s", test_bin("samotop-bus"));
    snprintf(mb_bin, sizeof(mb_bin), "%s", test_bin("samotop-mailbox"));
    snprintf(r->base, sizeof(r->base), "/tmp/samotop-mbtest-XXXXXX");
    ck_assert_msg(mkdtemp(r->base) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(r->data, sizeof(r->data), "%s/var", r->base);
    snprintf(r->clients, sizeof(r->clients), "tcp://127.0.0.1:%d", base);
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
    snprintf(r->env[i++], 160, "SAMOTOP_BUS_HEARTBEAT_MS=100");
    snprintf(r->env[i++], 160, "SAMOTOP_BUS_LIVENESS=4");
    snprintf(r->env[i++], 160, "SAMOTOP_DATA=%s", r->data);
    snprintf(r->env[i++], 160, "SAMOTOP_HOSTNAME=mx.test");
    snprintf(r->env[i++], 160, "SAMOTOP_LOG_LEVEL=info");
    /* No IMAP or LMTP door, and no Redis but a port nothing listens on
     * (quota lookups fail and let mail in): never the local profile's
     * 2143, 2993, 2424 or 6380. */
    snprintf(r->env[i++], 160, "SAMOTOP_LISTEN_IMAP=");
    snprintf(r->env[i++], 160, "SAMOTOP_LISTEN_IMAPS=");
    snprintf(r->env[i++], 160, "SAMOTOP_LISTEN_LMTP=");
    snprintf(r->env[i++], 160, "SAMOTOP_REDIS_PORT=%d", base + 3);
    for (int j = 0; j < i; j++)
        r->envp[j] = r->env[j];
    r->envp[i] = NULL;
    r->broker = test_spawn(bus_argv, r->envp);
    if (mailbox_log != NULL) {
        /* The mailbox's log (its stderr) into a file the test reads. */
        int saved = dup(2), fd;

        snprintf(r->log, sizeof(r->log), "%s/mailbox.log", r->base);
        fd = open(r->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ck_assert_int_ge(fd, 0);
        dup2(fd, 2);
        r->mailbox = test_spawn(mb_argv, r->envp);
        dup2(saved, 2);
        close(saved);
        close(fd);
    } else {
        r->mailbox = test_spawn(mb_argv, r->envp);
    }
    r->c = bus_client_new(NULL, r->clients, 16 << 20, why, sizeof(why));
    ck_assert_msg(r->c != NULL, "bus_client_new: %s", why);
    ck_assert_msg(test_wait_ping(r->c, "mailbox.ping", NULL, 10000) >= 0,
                  "the mailbox never answered");
}

static void
rig_stop(struct rig *r)
{
    bus_client_destroy(&r->c);
    test_stop_clean(&r->mailbox, "samotop-mailbox", 5000);
    test_stop(r->broker, SIGTERM, 2000);
    if (mailbox_log == NULL)
        test_rm_tree(r->base);
}

/* A recipient of a request: the mailbox, and a folder or NULL. */
struct to {
    const char *mailbox, *folder;
};

static envelope_t *
deliver_new(const char *from, const void *msg, size_t len, const struct to *to,
            size_t n)
{
    envelope_t *req = envelope_new("mailbox.deliver", NULL, 10000);
    value_t *body = envelope_body(req), *rcpts = value_new_array(), *v;

    value_set_str(body, ENV_KEY_MAIL_FROM, from);
    v = value_new_bin(msg, len);
    value_set_take(body, ENV_KEY_MESSAGE, &v);
    for (size_t i = 0; i < n; i++) {
        value_t *item = value_new_map();

        value_set_str(item, "mailbox", to[i].mailbox);
        value_set_str(item, ENV_KEY_RCPT, to[i].mailbox);
        if (to[i].folder)
            value_set_str(item, "folder", to[i].folder);
        value_push_take(rcpts, &item);
    }
    value_set_take(body, ENV_KEY_RCPTS, &rcpts);
    return req;
}

/* Sends *req_p (taken); returns the reply, asserting that one came. */
static envelope_t *
call(struct rig *r, envelope_t **req_p)
{
    envelope_t *reply = NULL;
    char why[256], id[160];
    int rc;

    snprintf(id, sizeof(id), "%s", envelope_id(*req_p));
    rc = bus_client_call(r->c, req_p, &reply, why, sizeof(why));
    ck_assert_msg(rc == 0, "mailbox.deliver: %s (%s)", err_name(rc), why);
    ck_assert_str_eq(envelope_type(reply), "mailbox.deliver.reply");
    ck_assert_str_eq(envelope_re(reply), id);
    return reply;
}

static bool
ecode_ok(const char *e)
{
    int a, b, c, n = 0;

    return e && sscanf(e, "%1d.%3d.%3d%n", &a, &b, &c, &n) == 3 &&
           e[n] == '\0' && (a == 2 || a == 4 || a == 5) && e[0] == '0' + a;
}

/* The reply against schemas/mailbox.deliver.reply.json: code, ecode and
 * text always; results (one per rcpt) when code < 400, each with mailbox,
 * code, ecode, text, and file on success. Returns the results. */
static const value_t *
check_reply(const envelope_t *reply, size_t nrcpts)
{
    const value_t *body = envelope_body_peek(reply), *v, *results;

    v = value_get(body, ENV_KEY_CODE);
    ck_assert_msg(v && value_kind(v) == VAL_INT && value_int(v) >= 200 &&
                      value_int(v) <= 599,
                  "reply code missing or out of range");
    ck_assert_msg(ecode_ok(value_get_str(body, ENV_KEY_ECODE)),
                  "reply ecode \"%s\"", value_get_str(body, ENV_KEY_ECODE));
    ck_assert_msg(value_get_str(body, ENV_KEY_TEXT) != NULL, "no text");
    results = value_get(body, ENV_KEY_RESULTS);
    if (value_int(v) >= 400 && results == NULL)
        return NULL;
    ck_assert_msg(results && value_kind(results) == VAL_ARRAY,
                  "results missing");
    ck_assert_msg(value_count(results) == nrcpts, "results: got %zu, want %zu",
                  value_count(results), nrcpts);
    for (size_t i = 0; i < nrcpts; i++) {
        const value_t *item = value_at(results, i), *code;
        const char *file;

        ck_assert_msg(value_kind(item) == VAL_MAP, "result %zu: not a map", i);
        ck_assert_msg(value_get_str(item, "mailbox") != NULL,
                      "result %zu: no mailbox", i);
        code = value_get(item, ENV_KEY_CODE);
        ck_assert_msg(code && value_kind(code) == VAL_INT,
                      "result %zu: no code", i);
        ck_assert_msg(ecode_ok(value_get_str(item, ENV_KEY_ECODE)),
                      "result %zu: ecode", i);
        ck_assert_msg(value_get_str(item, ENV_KEY_ECODE)[0] ==
                          '0' + value_int(code) / 100,
                      "result %zu: ecode class differs from code", i);
        ck_assert_msg(value_get_str(item, ENV_KEY_TEXT) != NULL,
                      "result %zu: no text", i);
        file = value_get_str(item, "file");
        ck_assert_msg((value_int(code) == 250) == (file != NULL),
                      "result %zu: file with code %lld", i,
                      (long long)value_int(code));
        ck_assert_msg(file == NULL || (strchr(file, '/') == NULL &&
                                       strstr(file, ".mx.test,S=") != NULL),
                      "result %zu: file \"%s\"", i, file);
    }
    return results;
}

static void
want_result(const value_t *results, size_t i, const char *mailbox, int code,
            const char *ecode)
{
    const value_t *item = value_at(results, i);

    ck_assert_msg(strcmp(value_get_str(item, "mailbox"), mailbox) == 0,
                  "result %zu: mailbox %s, want %s", i,
                  value_get_str(item, "mailbox"), mailbox);
    ck_assert_msg(value_get_int(item, ENV_KEY_CODE, 0) == code,
                  "result %zu (%s): got %lld, want %d", i, mailbox,
                  (long long)value_get_int(item, ENV_KEY_CODE, 0), code);
    ck_assert_msg(strcmp(value_get_str(item, ENV_KEY_ECODE), ecode) == 0,
                  "result %zu (%s): ecode %s, want %s", i, mailbox,
                  value_get_str(item, ENV_KEY_ECODE), ecode);
}

/* The path of mailbox's copy named file, in a static buffer. */
static const char *
copy_path(const struct rig *r, const char *mailbox, const char *folder,
          const char *file)
{
    static char path[1024];
    const char *at = strchr(mailbox, '@');

    snprintf(path, sizeof(path), "%s/mail/%s/%.*s/%s%snew/%s", r->data, at + 1,
             (int)(at - mailbox), mailbox, folder ? folder : "",
             folder ? "/" : "", file);
    return path;
}

/* Asserts that path holds RETURN_PATH then msg, and returns its stat. */
static struct stat
want_copy(const char *path, const void *msg, size_t len)
{
    size_t hlen = strlen(RETURN_PATH), want = hlen + len;
    char *got = malloc(want + 1);
    struct stat st;
    ssize_t n = 0, k;
    int fd = open(path, O_RDONLY);

    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    while ((k = read(fd, got + n, want + 1 - (size_t)n)) > 0)
        n += k;
    fstat(fd, &st);
    close(fd);
    ck_assert_msg(n == (ssize_t)want, "%s: got %zd bytes, want %zu", path, n,
                  want);
    ck_assert_msg(memcmp(got, RETURN_PATH, hlen) == 0,
                  "%s: no Return-Path line first", path);
    ck_assert_msg(memcmp(got + hlen, msg, len) == 0, "%s: the message differs",
                  path);
    free(got);
    return st;
}

static const char *
file_of(const value_t *results, size_t i)
{
    return value_get_str(value_at(results, i), "file");
}

/* Tests. */

START_TEST(test_three_mailboxes)
{
    static const struct to to[] = {{"alice@example.test", NULL},
                                   {"bob@example.test", NULL},
                                   {"carol@other.test", NULL}};
    static const char msg[] = "Received: from x\r\nSubject: hi\r\n\r\nhi\r\n";
    struct rig r;
    envelope_t *req, *reply;
    const value_t *results;
    struct stat first;

    rig_start(&r, 18400);
    req = deliver_new(FROM, msg, sizeof(msg) - 1, to, 3);
    reply = call(&r, &req);
    results = check_reply(reply, 3);
    ck_assert_int_eq(envelope_code(reply), 250);
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "2.0.0");
    for (size_t i = 0; i < 3; i++) {
        struct stat st;

        want_result(results, i, to[i].mailbox, 250, "2.0.0");
        ck_assert_str_eq(file_of(results, i), file_of(results, 0));
        st = want_copy(copy_path(&r, to[i].mailbox, NULL, file_of(results, i)),
                       msg, sizeof(msg) - 1);
        if (i == 0)
            first = st;
        ck_assert_msg(st.st_ino == first.st_ino, "copy %zu: another inode", i);
        ck_assert_msg(st.st_nlink == 3, "copy %zu: st_nlink %lu, want 3", i,
                      (unsigned long)st.st_nlink);
    }
    envelope_destroy(&reply);
    rig_stop(&r);
}
END_TEST

/* Results come back in request order, whatever the order and outcome. */
START_TEST(test_results_in_order)
{
    static const struct to to[] = {
        {"zed@example.test", NULL},    {"Bad@example.test", NULL},
        {"amy@example.test", ".Spam"}, {"mid@b.test", NULL},
        {"amy@example.test", NULL},    {"x@..", NULL},
        {"bob@a.test", NULL},
    };
    static const int want[] = {250, 550, 250, 250, 250, 550, 250};
    struct rig r;
    envelope_t *req, *reply;
    const value_t *results;

    rig_start(&r, 18410);
    req = deliver_new("", "hi\r\n", 4, to, NROWS(to));
    reply = call(&r, &req);
    results = check_reply(reply, NROWS(to));
    for (size_t i = 0; i < NROWS(to); i++)
        want_result(results, i, to[i].mailbox, want[i],
                    want[i] == 250 ? "2.0.0" : "5.1.1");
    ck_assert_int_eq(envelope_code(reply), 550);
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "5.1.1");
    /* The folder copy is in the folder; "<>" is the null sender. */
    ck_assert_msg(
        access(copy_path(&r, "amy@example.test", ".Spam", file_of(results, 2)),
               F_OK) == 0,
        "no copy in .Spam");
    envelope_destroy(&reply);
    rig_stop(&r);
}
END_TEST

START_TEST(test_large_message)
{
    static const struct to to[] = {{"alice@example.test", NULL},
                                   {"bob@example.test", NULL}};
    size_t len = 1 << 20;
    unsigned char *msg = malloc(len);
    unsigned int x = 12345;
    struct rig r;
    envelope_t *req, *reply;
    const value_t *results;

    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        msg[i] = (unsigned char)(x >> 16);
    }
    rig_start(&r, 18420);
    req = deliver_new(FROM, msg, len, to, 2);
    reply = call(&r, &req);
    results = check_reply(reply, 2);
    ck_assert_int_eq(envelope_code(reply), 250);
    for (size_t i = 0; i < 2; i++) {
        char want_s[32];

        want_result(results, i, to[i].mailbox, 250, "2.0.0");
        snprintf(want_s, sizeof(want_s), ",S=%zu", strlen(RETURN_PATH) + len);
        ck_assert_msg(strstr(file_of(results, i), want_s) != NULL,
                      "file %s lacks %s", file_of(results, i), want_s);
        want_copy(copy_path(&r, to[i].mailbox, NULL, file_of(results, i)), msg,
                  len);
    }
    envelope_destroy(&reply);
    rig_stop(&r);
    free(msg);
}
END_TEST

START_TEST(test_invalid_mailbox)
{
    static const struct to to[] = {{"alice@example.test", NULL},
                                   {"../../etc@example.test", NULL},
                                   {"bob@example.test", NULL}};
    struct rig r;
    envelope_t *req, *reply;
    const value_t *results;
    char outside[128];

    rig_start(&r, 18430);
    req = deliver_new(FROM, "hi\r\n", 4, to, 3);
    reply = call(&r, &req);
    results = check_reply(reply, 3);
    want_result(results, 0, to[0].mailbox, 250, "2.0.0");
    want_result(results, 1, to[1].mailbox, 550, "5.1.1");
    want_result(results, 2, to[2].mailbox, 250, "2.0.0");
    ck_assert_int_eq(envelope_code(reply), 550);
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "5.1.1");
    want_copy(copy_path(&r, to[2].mailbox, NULL, file_of(results, 2)), "hi\r\n",
              4);
    snprintf(outside, sizeof(outside), "%s/etc", r.base);
    ck_assert_msg(access(outside, F_OK) != 0, "%s was made", outside);
    envelope_destroy(&reply);
    rig_stop(&r);
}
END_TEST

/* A mailbox whose new/ is a file: 451 for it, 250 for the rest, and the
 * top-level code says "try again". */
START_TEST(test_broken_mailbox_defers)
{
    static const struct to to[] = {{"alice@example.test", NULL},
                                   {"broken@example.test", NULL},
                                   {"bob@example.test", NULL}};
    struct rig r;
    envelope_t *req, *reply;
    const value_t *results;
    char path[256];
    int fd;

    rig_start(&r, 18440);
    snprintf(path, sizeof(path), "%s/mail/example.test", r.data);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/mail/example.test/broken", r.data);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/mail/example.test/broken/new", r.data);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    req = deliver_new(FROM, "hi\r\n", 4, to, 3);
    reply = call(&r, &req);
    results = check_reply(reply, 3);
    want_result(results, 0, to[0].mailbox, 250, "2.0.0");
    want_result(results, 1, to[1].mailbox, 451, "4.3.0");
    want_result(results, 2, to[2].mailbox, 250, "2.0.0");
    ck_assert_int_eq(envelope_code(reply), 451);
    ck_assert_str_eq(envelope_get_str(reply, ENV_KEY_ECODE), "4.3.0");
    envelope_destroy(&reply);
    rig_stop(&r);
}
END_TEST

/* Requests the decoder lets through but the handler must refuse: an error
 * reply (no results), nothing stored. */
enum bad_kind {
    BAD_NO_RCPTS,
    BAD_ITEM_NOT_MAP,
    BAD_NO_MAILBOX,
    BAD_FOLDER_INT,
    BAD_FROM_CRLF
};

static const struct bad_row {
    const char *label;
    enum bad_kind kind;
    int code;
    const char *ecode;
} bad_rows[] = {
    {"empty rcpts", BAD_NO_RCPTS, 501, "5.5.4"},
    {"rcpt not a map", BAD_ITEM_NOT_MAP, 501, "5.5.4"},
    {"rcpt without mailbox", BAD_NO_MAILBOX, 501, "5.5.4"},
    {"folder not a string", BAD_FOLDER_INT, 501, "5.5.4"},
    {"CRLF in mail_from", BAD_FROM_CRLF, 501, "5.1.7"},
};

START_TEST(test_bad_request)
{
    const struct bad_row *b = &bad_rows[_i];
    static const struct to good = {"alice@example.test", NULL};
    struct rig r;
    envelope_t *req, *reply;
    value_t *rcpts, *item;
    char path[256];

    rig_start(&r, 18470 + 5 * _i);
    req = deliver_new(b->kind == BAD_FROM_CRLF ? "a@b\r\nX-Evil: 1" : FROM,
                      "hi\r\n", 4, &good, b->kind == BAD_NO_RCPTS ? 0 : 1);
    rcpts = (value_t *)value_get(envelope_body(req), ENV_KEY_RCPTS);
    item = (value_t *)value_at(rcpts, 0);
    switch (b->kind) {
    case BAD_ITEM_NOT_MAP: {
        value_t *s = value_new_str("alice@example.test");

        value_push_take(rcpts, &s);
        break;
    }
    case BAD_NO_MAILBOX:
        value_del(item, "mailbox");
        break;
    case BAD_FOLDER_INT:
        value_set_int(item, "folder", 7);
        break;
    default:
        break;
    }
    reply = call(&r, &req);
    check_reply(reply, 1);
    ck_assert_msg(envelope_code(reply) == b->code, "%s: got %d, want %d",
                  b->label, envelope_code(reply), b->code);
    ck_assert_msg(strcmp(envelope_get_str(reply, ENV_KEY_ECODE), b->ecode) == 0,
                  "%s: ecode %s, want %s", b->label,
                  envelope_get_str(reply, ENV_KEY_ECODE), b->ecode);
    snprintf(path, sizeof(path), "%s/mail/example.test", r.data);
    ck_assert_msg(access(path, F_OK) != 0, "%s: something was stored",
                  b->label);
    envelope_destroy(&reply);
    /* The actor lived through it. */
    ck_assert_int_ge(test_wait_ping(r.c, "mailbox.ping", NULL, 2000), 0);
    rig_stop(&r);
}
END_TEST

/* A body the schema refuses never reaches the handler: the caller gets a
 * protocol error, and the actor goes on. */
START_TEST(test_schema_refused)
{
    struct rig r;
    envelope_t *req, *reply = NULL;
    char why[256];
    value_t *rcpts = value_new_array();
    int rc;

    rig_start(&r, 18460);
    req = envelope_new("mailbox.deliver", NULL, 5000);
    value_set_str(envelope_body(req), ENV_KEY_MAIL_FROM, FROM);
    /* A string where the schema wants bin. */
    value_set_str(envelope_body(req), ENV_KEY_MESSAGE, "hi\r\n");
    value_set_take(envelope_body(req), ENV_KEY_RCPTS, &rcpts);
    rc = bus_client_call(r.c, &req, &reply, why, sizeof(why));
    ck_assert_msg(rc == ERR_PROTO, "got %s (%s)", err_name(rc), why);
    ck_assert_ptr_null(reply);
    ck_assert_int_ge(test_wait_ping(r.c, "mailbox.ping", NULL, 2000), 0);
    rig_stop(&r);
}
END_TEST

/* A burst of requests sent at once: they are stored in group commits
 * (the log shows fewer commits than requests), and each is answered as
 * if it had come alone: its own file, linked into its own mailboxes, and
 * the broken mailbox failing only its own copies. */
struct outcome {
    bool done;
    int err, code, rcode[2];
    char file[2][256];
};

static void
on_outcome(void *arg, int err, const char *text, const envelope_t *reply)
{
    struct outcome *o = arg;
    const value_t *results;

    (void)text;
    o->done = true;
    o->err = err;
    if (reply == NULL)
        return;
    o->code = envelope_code(reply);
    results = value_get(envelope_body_peek(reply), ENV_KEY_RESULTS);
    for (size_t i = 0; i < 2 && i < value_count(results); i++) {
        const char *f = value_get_str(value_at(results, i), "file");

        o->rcode[i] = (int)value_get_int(value_at(results, i), ENV_KEY_CODE, 0);
        snprintf(o->file[i], sizeof(o->file[i]), "%s", f ? f : "");
    }
}

static void
on_quit(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

START_TEST(test_burst_group_commit)
{
    enum { N = 40 };
    static struct outcome o[N];
    struct rig r;
    loop_t *loop = loop_new();
    bus_client_t *c;
    char why[256], path[256], line[1024], msgs[N][64], boxes[N][2][64];
    struct stat first;
    FILE *log;
    long commits = -1, requests = -1;
    int delivers = 0, max_batch = 0, fd;

    memset(o, 0, sizeof(o));
    mailbox_log = "on";
    rig_start(&r, 18450);
    snprintf(path, sizeof(path), "%s/mail/example.test", r.data);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/mail/example.test/broken", r.data);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/mail/example.test/broken/new", r.data);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    c = bus_client_new(loop, r.clients, 16 << 20, why, sizeof(why));
    ck_assert_msg(c != NULL, "bus_client_new: %s", why);
    for (int i = 0; i < N; i++) {
        struct to to[2];
        envelope_t *req;

        /* Every request goes to alice, and to one more: bob, a mailbox
         * of its own, or (every fourth) the broken one. */
        snprintf(msgs[i], sizeof(msgs[i]), "Subject: %d\r\n\r\nbody %d\r\n", i,
                 i);
        snprintf(boxes[i][0], sizeof(boxes[i][0]), "alice@example.test");
        if (i % 4 == 3)
            snprintf(boxes[i][1], sizeof(boxes[i][1]), "broken@example.test");
        else if (i % 2)
            snprintf(boxes[i][1], sizeof(boxes[i][1]), "bob@example.test");
        else
            snprintf(boxes[i][1], sizeof(boxes[i][1]), "u%d@example.test", i);
        to[0] = (struct to){boxes[i][0], NULL};
        to[1] = (struct to){boxes[i][1], NULL};
        req = deliver_new(FROM, msgs[i], strlen(msgs[i]), to, 2);
        ck_assert_int_eq(bus_client_send_take(c, &req, on_outcome, &o[i]), 0);
    }
    for (int64_t until = test_now_ms() + 20000; test_now_ms() < until;) {
        int done = 0;

        for (int i = 0; i < N; i++)
            done += o[i].done;
        if (done == N)
            break;
        loop_timer_add(loop, 10, on_quit, NULL);
        loop_run(loop);
    }
    for (int i = 0; i < N; i++) {
        bool broken = i % 4 == 3;

        ck_assert_msg(o[i].done && o[i].err == 0, "request %d: done %d err %s",
                      i, o[i].done, err_name(o[i].err));
        ck_assert_msg(o[i].code == (broken ? 451 : 250),
                      "request %d: got %d, want %d", i, o[i].code,
                      broken ? 451 : 250);
        ck_assert_int_eq(o[i].rcode[0], 250);
        ck_assert_int_eq(o[i].rcode[1], broken ? 451 : 250);
        first = want_copy(copy_path(&r, boxes[i][0], NULL, o[i].file[0]),
                          msgs[i], strlen(msgs[i]));
        ck_assert_msg(first.st_nlink == (broken ? 1u : 2u),
                      "request %d: st_nlink %lu", i,
                      (unsigned long)first.st_nlink);
        for (int j = 0; j < i; j++)
            ck_assert_msg(strcmp(o[i].file[0], o[j].file[0]) != 0,
                          "requests %d and %d share a file", j, i);
        if (!broken)
            ck_assert_str_eq(o[i].file[1], o[i].file[0]);
    }
    snprintf(path, sizeof(path), "%s/mail/example.test/alice/tmp", r.data);
    ck_assert_msg(rmdir(path) == 0, "alice's tmp/ is not empty: %s",
                  strerror(errno));
    bus_client_destroy(&c);
    loop_destroy(&loop);
    rig_stop(&r);
    log = fopen(r.log, "r");
    ck_assert_ptr_nonnull(log);
    while (fgets(line, sizeof(line), log) != NULL) {
        const char *b = strstr(line, " batch=");
        const char *cm = strstr(line, " commits=");

        if (strstr(line, "deliver") != NULL && b != NULL) {
            delivers++;
            if (atoi(b + 7) > max_batch)
                max_batch = atoi(b + 7);
        }
        if (cm != NULL)
            sscanf(cm, " commits=%ld requests=%ld", &commits, &requests);
    }
    fclose(log);
    ck_assert_int_eq(delivers, N);
    ck_assert_int_eq(requests, N);
    ck_assert_msg(commits >= 1 && commits < N && max_batch > 1,
                  "%ld commits for %d requests, largest %d: no group commit",
                  commits, N, max_batch);
    mailbox_log = NULL;
    test_rm_tree(r.base);
}
END_TEST

static Suite *
mailbox_deliver_suite(void)
{
    Suite *s = suite_create("mailbox_deliver");
    TCase *tc = tcase_create("deliver");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_three_mailboxes);
    tcase_add_test(tc, test_results_in_order);
    tcase_add_test(tc, test_large_message);
    tcase_add_test(tc, test_invalid_mailbox);
    tcase_add_test(tc, test_broken_mailbox_defers);
    tcase_add_loop_test(tc, test_bad_request, 0, NROWS(bad_rows));
    tcase_add_test(tc, test_schema_refused);
    tcase_add_test(tc, test_burst_group_commit);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(mailbox_deliver_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
