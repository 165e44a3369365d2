/*
 * test_envelope.c - the envelope codec (bus/envelope.h) and the values its
 * bodies are made of (bus/value.h).
 *
 * Round trips cover every value kind at every msgpack format boundary, and
 * check that the encoder picked the format the boundary calls for. Each kind
 * of bad input must be refused with its own ERR_* code and a reason naming
 * the field; every prefix of a valid encoding must be refused; no mutation
 * of a valid encoding may crash the decoder; and the JSON for the tap must
 * be valid JSON whatever bytes the body holds. Bad inputs are built by hand
 * with msgpack-c's packer so that they do not depend on the encoder under
 * test.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <msgpack.h>

#include "bus/envelope.h"
#include "bus/value.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "json_check.h"

/* The decode limit used throughout: room for the largest test values. */
#define LIMIT ((size_t)1 << 20)
#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

/* Helpers. */

static void
same_str(const char *label, const char *field, const char *got,
         const char *want)
{
    if (want == NULL) {
        ck_assert_msg(got == NULL, "%s: %s: got \"%s\", want NULL", label,
                      field, got);
        return;
    }
    ck_assert_msg(got != NULL && strcmp(got, want) == 0,
                  "%s: %s: got \"%s\", want \"%s\"", label, field,
                  got ? got : "(null)", want);
}

static void
same_header(const char *label, const envelope_t *got, const envelope_t *want)
{
    ck_assert_msg(envelope_version(got) == envelope_version(want),
                  "%s: v: got %d, want %d", label, envelope_version(got),
                  envelope_version(want));
    same_str(label, "id", envelope_id(got), envelope_id(want));
    same_str(label, "re", envelope_re(got), envelope_re(want));
    same_str(label, "trace", envelope_trace(got), envelope_trace(want));
    same_str(label, "type", envelope_type(got), envelope_type(want));
    same_str(label, "from", envelope_from(got), envelope_from(want));
    ck_assert_msg(envelope_ts(got) == envelope_ts(want),
                  "%s: ts: got %lld, want %lld", label,
                  (long long)envelope_ts(got), (long long)envelope_ts(want));
    ck_assert_msg(envelope_deadline(got) == envelope_deadline(want),
                  "%s: deadline: got %lld, want %lld", label,
                  (long long)envelope_deadline(got),
                  (long long)envelope_deadline(want));
    ck_assert_msg(envelope_type_id(got) == envelope_type_id(want),
                  "%s: type id: got %d, want %d", label,
                  (int)envelope_type_id(got), (int)envelope_type_id(want));
}

/* Encodes env and decodes the bytes, checking that the header and body
 * came back unchanged. The encoding is handed back when buf_out is not
 * NULL. Returns the decoded envelope. */
static envelope_t *
round_trip(const char *label, const envelope_t *env, char **buf_out,
           size_t *len_out)
{
    envelope_t *out = NULL;
    char *buf = NULL, why[256];
    size_t len = 0;
    int rc;

    rc = envelope_encode(env, &buf, &len);
    ck_assert_msg(rc == 0, "%s: encode: got %d, want 0", label, rc);
    rc = envelope_decode(buf, len, LIMIT, &out, why, sizeof(why));
    ck_assert_msg(rc == 0, "%s: decode: got %s (%s), want OK", label,
                  err_name(rc), why);
    ck_assert_msg(out != NULL, "%s: decode gave no envelope", label);
    same_header(label, out, env);
    ck_assert_msg(value_equal(envelope_body_peek(out),
                              envelope_body_peek(env)),
                  "%s: the body changed in the round trip", label);
    if (buf_out) {
        *buf_out = buf;
        *len_out = len;
    } else {
        free(buf);
    }
    return out;
}

/* The first byte of the encoding of body field "x" (the body holding only
 * that field): the msgpack format the encoder chose, or -1. */
static int
format_of_x(const char *buf, size_t len)
{
    static const char pat[] = "\xa4"
                              "body"
                              "\x81\xa1"
                              "x";
    const char *p = memmem(buf, len, pat, sizeof(pat) - 1);

    if (p == NULL || p + sizeof(pat) - 1 >= buf + len)
        return -1;
    return (unsigned char)p[sizeof(pat) - 1];
}

/* Round-trips a body {"x": v} (taking v) and checks the format byte when
 * want_fmt is not -1. Returns the decoded envelope. */
static envelope_t *
round_trip_x(const char *label, value_t *v, int want_fmt)
{
    envelope_t *env = envelope_new("test.op", NULL, 1000), *out;
    char *buf;
    size_t len;

    value_set_take(envelope_body(env), "x", &v);
    out = round_trip(label, env, &buf, &len);
    if (want_fmt >= 0) {
        int fmt = format_of_x(buf, len);

        ck_assert_msg(fmt == want_fmt,
                      "%s: msgpack format: got 0x%02x, want 0x%02x", label,
                      fmt, want_fmt);
    }
    free(buf);
    envelope_destroy(&env);
    return out;
}

static void
pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void
pk_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* Writes bytes that the packer would refuse to produce. */
static void
pk_raw(msgpack_packer *pk, const void *p, size_t n)
{
    msgpack_sbuffer_write(pk->data, p, n);
}

static bool
is_decode_error(int rc)
{
    switch (rc) {
    case ERR_TOO_BIG: case ERR_TRUNCATED: case ERR_MALFORMED:
    case ERR_TRAILING: case ERR_UNSUPPORTED: case ERR_DEPTH: case ERR_KEY:
    case ERR_NOT_MAP: case ERR_VERSION: case ERR_MISSING: case ERR_TYPE:
        return true;
    }
    return false;
}

/* Decodes and checks the documented contract on failure: *env_out NULLed,
 * a code from the documented list, a reason written. */
static int
decode(const void *buf, size_t len, size_t max, envelope_t **env_out,
       char *why, size_t whylen)
{
    static envelope_t *const poison = (envelope_t *)(uintptr_t)0x1;
    int rc;

    *env_out = poison;
    why[0] = '\0';
    rc = envelope_decode(buf, len, max, env_out, why, whylen);
    ck_assert_msg(*env_out != poison, "decode left *env_out unset");
    if (rc != 0) {
        ck_assert_msg(*env_out == NULL, "decode failed with %s but gave "
                      "an envelope", err_name(rc));
        ck_assert_msg(is_decode_error(rc), "decode: got %d (%s), not a "
                      "documented code", rc, err_name(rc));
        ck_assert_msg(why[0] != '\0', "decode: %s without a reason",
                      err_name(rc));
    } else {
        ck_assert_msg(*env_out != NULL, "decode: OK without an envelope");
    }
    return rc;
}

/* A bigger envelope, every msgpack format up to the 16-bit ones. */
static envelope_t *
rich_envelope(void)
{
    envelope_t *env = envelope_new("test.op", "trace-rich", 5000);
    value_t *b = envelope_body(env), *arr = value_new_array(), *m;
    static const int64_t ints[] = {0, 1, -1, 127, 128, -32, -33, 255, 256,
                                   65535, 65536, INT32_MAX, INT32_MIN,
                                   INT64_MAX, INT64_MIN};
    char s[300];

    for (size_t i = 0; i < NROWS(ints); i++) {
        value_t *v = value_new_int(ints[i]);

        value_push_take(arr, &v);
    }
    value_set_take(b, "ints", &arr);
    memset(s, 's', sizeof(s));
    m = value_new_strn(s, 40); /* str8 */
    value_set_take(b, "str8", &m);
    m = value_new_strn(s, 300); /* str16 */
    value_set_take(b, "str16", &m);
    m = value_new_bin(s, 300); /* bin16 */
    value_set_take(b, "bin16", &m);
    m = value_new_float(-1e300);
    value_set_take(b, "f", &m);
    m = value_new_nil();
    value_set_take(b, "nil", &m);
    value_set_bool(b, "t", true);
    value_set_bool(b, "f2", false);
    m = value_new_map();
    for (int i = 0; i < 17; i++) { /* map16, array16 inside */
        char k[8];
        value_t *a = value_new_array();

        for (int j = 0; j < (i == 0 ? 17 : 1); j++) {
            value_t *v = value_new_int(j);

            value_push_take(a, &v);
        }
        snprintf(k, sizeof(k), "k%d", i);
        value_set_take(m, k, &a);
    }
    value_set_take(b, "map16", &m);
    value_set_str(b, "utf8", "h\xc3\xa9llo \xe2\x82\xac");
    return env;
}

/* Round trips: scalars. */

static const struct scalar_row {
    const char *label;
    value_kind_t kind;
    int64_t i;
    double d;
    int fmt;
} scalar_rows[] = {
    {"nil", VAL_NIL, 0, 0, 0xc0},
    {"true", VAL_BOOL, 1, 0, 0xc3},
    {"false", VAL_BOOL, 0, 0, 0xc2},
    {"int 0", VAL_INT, 0, 0, 0x00},
    {"int 1", VAL_INT, 1, 0, 0x01},
    {"int -1", VAL_INT, -1, 0, 0xff},
    {"int 127", VAL_INT, 127, 0, 0x7f},
    {"int 128", VAL_INT, 128, 0, 0xcc},
    {"int -32", VAL_INT, -32, 0, 0xe0},
    {"int -33", VAL_INT, -33, 0, 0xd0},
    {"int -128", VAL_INT, -128, 0, 0xd0},
    {"int -129", VAL_INT, -129, 0, 0xd1},
    {"int 255", VAL_INT, 255, 0, 0xcc},
    {"int 256", VAL_INT, 256, 0, 0xcd},
    {"int 65535", VAL_INT, 65535, 0, 0xcd},
    {"int 65536", VAL_INT, 65536, 0, 0xce},
    {"int -32768", VAL_INT, -32768, 0, 0xd1},
    {"int -32769", VAL_INT, -32769, 0, 0xd2},
    {"int INT32_MAX", VAL_INT, INT32_MAX, 0, 0xce},
    {"int INT32_MIN", VAL_INT, INT32_MIN, 0, 0xd2},
    {"int UINT32_MAX", VAL_INT, UINT32_MAX, 0, 0xce},
    {"int 2^32", VAL_INT, (int64_t)UINT32_MAX + 1, 0, 0xcf},
    {"int INT32_MIN-1", VAL_INT, (int64_t)INT32_MIN - 1, 0, 0xd3},
    {"int INT64_MAX", VAL_INT, INT64_MAX, 0, 0xcf},
    {"int INT64_MIN", VAL_INT, INT64_MIN, 0, 0xd3},
    {"float 0.5", VAL_FLOAT, 0, 0.5, 0xcb},
    {"float -1e300", VAL_FLOAT, 0, -1e300, 0xcb},
    {"float 0", VAL_FLOAT, 0, 0.0, 0xcb},
    {"float -0", VAL_FLOAT, 0, -0.0, 0xcb},
    {"float 1/3", VAL_FLOAT, 0, 1.0 / 3.0, 0xcb},
    {"float DBL_MAX", VAL_FLOAT, 0, DBL_MAX, 0xcb},
    {"float DBL_MIN", VAL_FLOAT, 0, DBL_MIN, 0xcb},
    {"float denormal", VAL_FLOAT, 0, DBL_TRUE_MIN, 0xcb},
    {"float inf", VAL_FLOAT, 0, INFINITY, 0xcb},
    {"float -inf", VAL_FLOAT, 0, -INFINITY, 0xcb},
    {"float nan", VAL_FLOAT, 0, NAN, 0xcb},
};

START_TEST(test_round_trip_scalar)
{
    const struct scalar_row *r = &scalar_rows[_i];
    value_t *v = NULL;
    const value_t *x;
    envelope_t *out;

    switch (r->kind) {
    case VAL_NIL: v = value_new_nil(); break;
    case VAL_BOOL: v = value_new_bool(r->i != 0); break;
    case VAL_INT: v = value_new_int(r->i); break;
    case VAL_FLOAT: v = value_new_float(r->d); break;
    default: ck_abort_msg("%s: bad row", r->label);
    }
    out = round_trip_x(r->label, v, r->fmt);
    x = value_get(envelope_body_peek(out), "x");
    ck_assert_msg(x != NULL, "%s: x missing after the round trip", r->label);
    ck_assert_msg(value_kind(x) == r->kind, "%s: kind: got %s, want %s",
                  r->label, value_kind_name(value_kind(x)),
                  value_kind_name(r->kind));
    if (r->kind == VAL_INT)
        ck_assert_msg(value_int(x) == r->i, "%s: got %lld, want %lld",
                      r->label, (long long)value_int(x), (long long)r->i);
    if (r->kind == VAL_BOOL)
        ck_assert_msg(value_bool(x) == (r->i != 0), "%s: got %d, want %d",
                      r->label, value_bool(x), r->i != 0);
    if (r->kind == VAL_FLOAT) {
        double d = value_float(x);

        ck_assert_msg(memcmp(&d, &r->d, sizeof(d)) == 0,
                      "%s: got %.17g, want %.17g", r->label, d, r->d);
    }
    envelope_destroy(&out);
}
END_TEST

/* Round trips: strings and bins at every length boundary of msgpack. */

static const struct len_row {
    size_t len;
    int str_fmt, bin_fmt;
} len_rows[] = {
    {0, 0xa0, 0xc4},     {1, 0xa1, 0xc4},     {31, 0xbf, 0xc4},
    {32, 0xd9, 0xc4},    {255, 0xd9, 0xc4},   {256, 0xda, 0xc5},
    {65535, 0xda, 0xc5}, {65536, 0xdb, 0xc6}, {100000, 0xdb, 0xc6},
};

static void
check_bytes_round_trip(value_kind_t kind, size_t idx)
{
    const struct len_row *r = &len_rows[idx];
    char *p = malloc(r->len + 1), label[64];
    const value_t *x;
    envelope_t *out;
    const char *got;
    size_t n = 0;

    for (size_t i = 0; i < r->len; i++) /* bins get every byte value */
        p[i] = kind == VAL_STR ? (char)('a' + i % 26) : (char)(i * 7 + 3);
    snprintf(label, sizeof(label), "%s of %zu bytes",
             value_kind_name(kind), r->len);
    out = round_trip_x(label,
                       kind == VAL_STR ? value_new_strn(p, r->len)
                                       : value_new_bin(p, r->len),
                       kind == VAL_STR ? r->str_fmt : r->bin_fmt);
    x = value_get(envelope_body_peek(out), "x");
    ck_assert_msg(x && value_kind(x) == kind, "%s: kind changed", label);
    got = value_str(x, &n);
    ck_assert_msg(n == r->len, "%s: length: got %zu, want %zu", label, n,
                  r->len);
    ck_assert_msg(memcmp(got, p, n) == 0, "%s: bytes changed", label);
    free(p);
    envelope_destroy(&out);
}

START_TEST(test_round_trip_str_len)
{
    check_bytes_round_trip(VAL_STR, (size_t)_i);
}
END_TEST

START_TEST(test_round_trip_bin_len)
{
    check_bytes_round_trip(VAL_BIN, (size_t)_i);
}
END_TEST

static const struct text_row {
    const char *label, *s;
    size_t n;
} text_rows[] = {
    {"empty", "", 0},
    {"ASCII", "hello, world", 12},
    {"UTF-8", "h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e \xf0\x9f\x98\x80",
     21},
    {"embedded NUL", "a\0b", 3},
    {"trailing NUL", "ab\0", 3},
    {"invalid UTF-8 is still a str", "\xff\xfe\xc0\x80", 4},
    {"JSON specials", "\"\\/\b\f\n\r\t", 8},
};

START_TEST(test_round_trip_text)
{
    const struct text_row *r = &text_rows[_i];
    envelope_t *out = round_trip_x(r->label, value_new_strn(r->s, r->n),
                                   -1);
    const value_t *x = value_get(envelope_body_peek(out), "x");
    size_t n = 0;
    const char *got = value_str(x, &n);

    ck_assert_msg(value_kind(x) == VAL_STR, "%s: kind: got %s, want str",
                  r->label, value_kind_name(value_kind(x)));
    ck_assert_msg(n == r->n, "%s: length: got %zu, want %zu", r->label, n,
                  r->n);
    ck_assert_msg(memcmp(got, r->s, n) == 0 && got[n] == '\0',
                  "%s: bytes changed or not NUL-terminated", r->label);
    envelope_destroy(&out);
}
END_TEST

/* Round trips: arrays and maps. */

static value_t *
mk_array(size_t n)
{
    value_t *a = value_new_array();

    for (size_t i = 0; i < n; i++) {
        value_t *v = value_new_int((int64_t)(i % 100));

        value_push_take(a, &v);
    }
    return a;
}

static value_t *
mk_map(size_t n)
{
    value_t *m = value_new_map();

    for (size_t i = 0; i < n; i++) {
        char k[24];
        int kl = snprintf(k, sizeof(k), "k%zu", i);
        value_t *v = value_new_int((int64_t)i);

        /* Appending: value_set_take() would look each key up first. */
        value_map_append_take(m, k, (size_t)kl, &v);
    }
    return m;
}

static value_t *
mk_mixed(size_t n)
{
    value_t *a = value_new_array(), *v, *m;

    (void)n;
    v = value_new_nil();
    value_push_take(a, &v);
    v = value_new_bool(true);
    value_push_take(a, &v);
    v = value_new_bool(false);
    value_push_take(a, &v);
    v = value_new_int(INT64_MIN);
    value_push_take(a, &v);
    v = value_new_float(0.25);
    value_push_take(a, &v);
    v = value_new_str("s");
    value_push_take(a, &v);
    v = value_new_bin("\0\1", 2);
    value_push_take(a, &v);
    v = value_new_array();
    value_push_take(a, &v);
    v = value_new_map();
    value_push_take(a, &v);
    m = value_new_map();
    v = mk_array(2);
    value_set_take(m, "a", &v);
    value_push_take(a, &m);
    return a;
}

/* levels nested containers, maps and arrays in turn, the innermost holding
 * an int (or nothing when empty). */
static value_t *
mk_nest(size_t levels, bool empty)
{
    value_t *v = empty ? NULL : value_new_int(1);

    for (size_t i = levels; i > 0; i--) {
        value_t *c = i % 2 ? value_new_map() : value_new_array();

        if (v && i % 2)
            value_set_take(c, "d", &v);
        else if (v)
            value_push_take(c, &v);
        v = c;
    }
    return v;
}

static value_t *
mk_nest_full(size_t levels)
{
    return mk_nest(levels, false);
}

static value_t *
mk_nest_empty(size_t levels)
{
    return mk_nest(levels, true);
}

static value_t *
mk_tree(size_t n)
{
    value_t *m = value_new_map();

    for (size_t i = 0; i < n; i++) {
        char k[24];
        value_t *v = i % 2 ? mk_map(i + 1) : mk_mixed(0);

        snprintf(k, sizeof(k), "t%zu", i);
        value_set_take(m, k, &v);
    }
    return m;
}

/* The body is level 1, so "x" may hold ENVELOPE_MAX_DEPTH - 1 levels. */
static const struct cont_row {
    const char *label;
    value_t *(*make)(size_t n);
    size_t n;
    int fmt;
} cont_rows[] = {
    {"empty array", mk_array, 0, 0x90},
    {"array of 1", mk_array, 1, 0x91},
    {"array of 15", mk_array, 15, 0x9f},
    {"array of 16", mk_array, 16, 0xdc},
    {"array of 65535", mk_array, 65535, 0xdc},
    {"array of 65536", mk_array, 65536, 0xdd},
    {"empty map", mk_map, 0, 0x80},
    {"map of 1", mk_map, 1, 0x81},
    {"map of 15", mk_map, 15, 0x8f},
    {"map of 16", mk_map, 16, 0xde},
    {"map of 65535", mk_map, 65535, 0xde},
    {"map of 65536", mk_map, 65536, 0xdf},
    {"array of every kind", mk_mixed, 0, 0x9a},
    {"maps of arrays of maps", mk_tree, 6, 0x86},
    {"nested to the depth limit", mk_nest_full, ENVELOPE_MAX_DEPTH - 1,
     0x81},
    {"nested to the limit, innermost empty", mk_nest_empty,
     ENVELOPE_MAX_DEPTH - 1, 0x81},
};

START_TEST(test_round_trip_container)
{
    const struct cont_row *r = &cont_rows[_i];
    envelope_t *out = round_trip_x(r->label, r->make(r->n), r->fmt);
    const value_t *x = value_get(envelope_body_peek(out), "x");

    if (r->make == mk_array || r->make == mk_map)
        ck_assert_msg(value_count(x) == r->n, "%s: count: got %zu, want %zu",
                      r->label, value_count(x), r->n);
    envelope_destroy(&out);
}
END_TEST

/* Round trips: the header. */

START_TEST(test_round_trip_header)
{
    envelope_t *env = envelope_new("guard.ping", "5d41402abc4b2a76", 2500);
    envelope_t *out;
    char name[ENVELOPE_MAX_NAME + 1];

    memset(name, 'n', ENVELOPE_MAX_NAME);
    name[ENVELOPE_MAX_NAME] = '\0';
    envelope_set_from(env, name); /* the longest name accepted */
    envelope_set_ts(env, -5);     /* negative times are still integers */
    envelope_set_deadline(env, INT64_MAX);
    value_set_str(envelope_body(env), ENV_KEY_ECHO, "hello");
    out = round_trip("request header", env, NULL, NULL);
    ck_assert_msg(envelope_type_id(out) == ENV_PING,
                  "type id: got %d, want %d", (int)envelope_type_id(out),
                  (int)ENV_PING);
    ck_assert_msg(envelope_re(out) == NULL, "re: got \"%s\", want NULL",
                  envelope_re(out));
    same_str("request header", "echo", envelope_get_str(out, ENV_KEY_ECHO),
             "hello");
    envelope_destroy(&out);
    envelope_destroy(&env);
}
END_TEST

/* Round trips: replies. */

static const struct reply_row {
    const char *label, *req_type;
    int code;
    const char *ecode, *text;
    bool pong; /* add the fields a successful ping reply must carry */
    const char *want_type;
    enum env_type want_id;
} reply_rows[] = {
    {"x.reply", "x", 250, "2.0.0", "ok", false, "x.reply", ENV_ERROR_REPLY},
    {"rcpt refused", "guard.rcpt", 550, "5.1.1", "no such user", false,
     "guard.rcpt.reply", ENV_GUARD_RCPT_REPLY},
    {"ping answered", "guard.ping", 250, "2.0.0", "pong", true,
     "guard.ping.reply", ENV_PING_REPLY},
    {"ping failed", "guard.ping", 451, "4.3.0", "deadline passed", false,
     "guard.ping.reply", ENV_PING_REPLY},
    {"UTF-8 text", "mailbox.deliver", 452, "4.2.2",
     "bo\xc3\xaete pleine \xe2\x80\x94 r\xc3\xa9" "essayez", false,
     "mailbox.deliver.reply", ENV_MAILBOX_DELIVER_REPLY},
    {"empty text", "nosuch.submit", 250, "2.0.0", "", false,
     "nosuch.submit.reply", ENV_ERROR_REPLY},
};

START_TEST(test_round_trip_reply)
{
    const struct reply_row *r = &reply_rows[_i];
    envelope_t *req = envelope_new(r->req_type, NULL, 3000);
    envelope_t *rep = envelope_new_reply(req, r->code, r->ecode, r->text);
    envelope_t *out;

    if (r->pong) {
        value_set_str(envelope_body(rep), ENV_KEY_ACTOR, "guard/1");
        value_set_int(envelope_body(rep), ENV_KEY_PID, 4242);
        value_set_int(envelope_body(rep), ENV_KEY_UPTIME_MS, 1200);
    }
    same_str(r->label, "type", envelope_type(rep), r->want_type);
    same_str(r->label, "re", envelope_re(rep), envelope_id(req));
    same_str(r->label, "trace", envelope_trace(rep), envelope_trace(req));
    ck_assert_msg(strcmp(envelope_id(rep), envelope_id(req)) != 0,
                  "%s: the reply reuses the request's id", r->label);
    ck_assert_msg(envelope_deadline(rep) == envelope_deadline(req),
                  "%s: deadline: got %lld, want %lld", r->label,
                  (long long)envelope_deadline(rep),
                  (long long)envelope_deadline(req));
    out = round_trip(r->label, rep, NULL, NULL);
    ck_assert_msg(envelope_type_id(out) == r->want_id,
                  "%s: type id: got %d, want %d", r->label,
                  (int)envelope_type_id(out), (int)r->want_id);
    ck_assert_msg(envelope_code(out) == r->code, "%s: code: got %d, want %d",
                  r->label, envelope_code(out), r->code);
    same_str(r->label, "ecode", envelope_get_str(out, ENV_KEY_ECODE),
             r->ecode);
    same_str(r->label, "text", envelope_get_str(out, ENV_KEY_TEXT),
             r->text);
    envelope_destroy(&out);
    envelope_destroy(&rep);
    envelope_destroy(&req);
}
END_TEST

/* Rejections: envelopes built by hand, one header field changed. */

enum alt {
    ALT_INT,      /* 7 */
    ALT_NEG,      /* -1 */
    ALT_ZERO,     /* unsigned 0 */
    ALT_TWO,      /* unsigned 2 */
    ALT_U64_MAX,  /* 2^64-1 */
    ALT_FLOAT,    /* 1.0 */
    ALT_STR,      /* the row's str */
    ALT_LONG,     /* ENVELOPE_MAX_NAME + 1 bytes */
    ALT_MAXLEN,   /* ENVELOPE_MAX_NAME bytes */
    ALT_NUL,      /* "a\0b" */
    ALT_BIN,      /* bin "abc" */
    ALT_NIL,
    ALT_TRUE,
    ALT_ARRAY,    /* [1] */
    ALT_MAP,      /* {} */
};

static void
pk_alt(msgpack_packer *pk, enum alt alt, const char *str)
{
    char name[ENVELOPE_MAX_NAME + 1];

    memset(name, 'a', sizeof(name));
    switch (alt) {
    case ALT_INT: msgpack_pack_int(pk, 7); break;
    case ALT_NEG: msgpack_pack_int(pk, -1); break;
    case ALT_ZERO: msgpack_pack_uint64(pk, 0); break;
    case ALT_TWO: msgpack_pack_uint64(pk, 2); break;
    case ALT_U64_MAX: msgpack_pack_uint64(pk, UINT64_MAX); break;
    case ALT_FLOAT: msgpack_pack_double(pk, 1.0); break;
    case ALT_STR: pk_str(pk, str); break;
    case ALT_LONG: pk_strn(pk, name, ENVELOPE_MAX_NAME + 1); break;
    case ALT_MAXLEN: pk_strn(pk, name, ENVELOPE_MAX_NAME); break;
    case ALT_NUL: pk_strn(pk, "a\0b", 3); break;
    case ALT_BIN:
        msgpack_pack_bin(pk, 3);
        msgpack_pack_bin_body(pk, "abc", 3);
        break;
    case ALT_NIL: msgpack_pack_nil(pk); break;
    case ALT_TRUE: msgpack_pack_true(pk); break;
    case ALT_ARRAY:
        msgpack_pack_array(pk, 1);
        msgpack_pack_int(pk, 1);
        break;
    case ALT_MAP: msgpack_pack_map(pk, 0); break;
    }
}

/* Bodies. */

static void
b_echo_int(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_str(pk, "echo");
    msgpack_pack_int(pk, 5);
}

static void
b_echo_bin(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_str(pk, "echo");
    msgpack_pack_bin(pk, 1);
    msgpack_pack_bin_body(pk, "e", 1);
}

static void
b_echo_str(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_str(pk, "echo");
    pk_str(pk, "hi");
}

/* A reply body: code (or none when code is 0, or a string when it is
 * negative), ecode, text, and the pong fields when pong. */
static void
pk_reply(msgpack_packer *pk, int code, bool ecode, bool pong,
         bool pid_str)
{
    msgpack_pack_map(pk, (code != 0) + ecode + 1 + (pong ? 3 : 0));
    if (code > 0) {
        pk_str(pk, "code");
        msgpack_pack_int(pk, code);
    } else if (code < 0) {
        pk_str(pk, "code");
        pk_str(pk, "250");
    }
    if (ecode) {
        pk_str(pk, "ecode");
        pk_str(pk, "2.0.0");
    }
    pk_str(pk, "text");
    pk_str(pk, "ok");
    if (pong) {
        pk_str(pk, "actor");
        pk_str(pk, "guard/1");
        pk_str(pk, "pid");
        if (pid_str)
            pk_str(pk, "1");
        else
            msgpack_pack_int(pk, 1);
        pk_str(pk, "uptime_ms");
        msgpack_pack_int(pk, 5);
    }
}

static void b_pong(msgpack_packer *pk) { pk_reply(pk, 250, true, true, false); }
static void b_no_code(msgpack_packer *pk) { pk_reply(pk, 0, true, true, false); }
static void b_no_ecode(msgpack_packer *pk) { pk_reply(pk, 250, false, true, false); }
static void b_pong_no_actor(msgpack_packer *pk) { pk_reply(pk, 250, true, false, false); }
static void b_error_no_actor(msgpack_packer *pk) { pk_reply(pk, 451, true, false, false); }
static void b_code_str(msgpack_packer *pk) { pk_reply(pk, -1, true, true, false); }
static void b_pid_str(msgpack_packer *pk) { pk_reply(pk, 250, true, true, true); }

static void
b_unknown_keys(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    pk_str(pk, "zzz");
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 1);
    msgpack_pack_map(pk, 1);
    pk_str(pk, "q");
    msgpack_pack_nil(pk);
    pk_str(pk, "echo");
    pk_str(pk, "x");
}

static void
b_int_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_int(pk, 1);
    pk_str(pk, "x");
}

static void
b_nested_int_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_str(pk, "a");
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 1);
    msgpack_pack_int(pk, 2);
    msgpack_pack_int(pk, 3);
}

static void
b_bin_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_bin(pk, 1);
    msgpack_pack_bin_body(pk, "k", 1);
    msgpack_pack_int(pk, 1);
}

static void
b_nil_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_nil(pk);
    msgpack_pack_int(pk, 1);
}

static void
b_map_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_map(pk, 0);
    msgpack_pack_int(pk, 1);
}

/* A key holding NUL would alias the key before it ("echo\0x" is "echo" to
 * every C string function), so it is refused. */
static void
b_nul_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_strn(pk, "echo\0x", 6);
    pk_str(pk, "y");
}

static void
pk_ext(msgpack_packer *pk, size_t n)
{
    char *data = calloc(1, n);

    msgpack_pack_map(pk, 1);
    pk_str(pk, "x");
    msgpack_pack_ext(pk, n, 1);
    msgpack_pack_ext_body(pk, data, n);
    free(data);
}

static void b_fixext1(msgpack_packer *pk) { pk_ext(pk, 1); }
static void b_fixext2(msgpack_packer *pk) { pk_ext(pk, 2); }
static void b_fixext4(msgpack_packer *pk) { pk_ext(pk, 4); }
static void b_fixext8(msgpack_packer *pk) { pk_ext(pk, 8); }
static void b_fixext16(msgpack_packer *pk) { pk_ext(pk, 16); }
static void b_ext8(msgpack_packer *pk) { pk_ext(pk, 3); }
static void b_ext16(msgpack_packer *pk) { pk_ext(pk, 256); }
static void b_ext32(msgpack_packer *pk) { pk_ext(pk, 65536); }

static void
b_u64(msgpack_packer *pk, uint64_t u)
{
    msgpack_pack_map(pk, 1);
    pk_str(pk, "n");
    msgpack_pack_uint64(pk, u);
}

static void b_u64_over(msgpack_packer *pk) { b_u64(pk, (uint64_t)INT64_MAX + 1); }
static void b_u64_max(msgpack_packer *pk) { b_u64(pk, UINT64_MAX); }
static void b_u64_int64_max(msgpack_packer *pk) { b_u64(pk, INT64_MAX); }

static void
b_u64_in_array(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_str(pk, "a");
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 1);
    msgpack_pack_uint64(pk, UINT64_MAX);
}

static void
b_c1(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_str(pk, "x");
    pk_raw(pk, "\xc1", 1);
}

static void
b_c1_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    pk_raw(pk, "\xc1", 1);
    msgpack_pack_int(pk, 1);
}

/* A body levels deep (the body itself is level 1): maps and arrays in
 * turn, the innermost holding an int, or nothing when empty. */
static void
pk_nest(msgpack_packer *pk, int levels, bool empty)
{
    for (int i = 0; i < levels; i++) {
        size_t items = empty && i == levels - 1 ? 0 : 1;

        if (i % 2 == 0) {
            msgpack_pack_map(pk, items);
            if (items)
                pk_str(pk, "d");
        } else {
            msgpack_pack_array(pk, items);
        }
    }
    if (!empty)
        msgpack_pack_int(pk, 1);
}

static void b_depth_max(msgpack_packer *pk) { pk_nest(pk, ENVELOPE_MAX_DEPTH, false); }
static void b_depth_max_empty(msgpack_packer *pk) { pk_nest(pk, ENVELOPE_MAX_DEPTH, true); }
static void b_depth_over(msgpack_packer *pk) { pk_nest(pk, ENVELOPE_MAX_DEPTH + 1, false); }
static void b_depth_over_empty(msgpack_packer *pk) { pk_nest(pk, ENVELOPE_MAX_DEPTH + 1, true); }
static void b_depth_200(msgpack_packer *pk) { pk_nest(pk, 200, false); }

static const struct hdr_row {
    const char *label;
    const char *type; /* NULL: "test.op" */
    const char *omit; /* a header key left out */
    const char *key;  /* a header key given alt (any other key is added) */
    enum alt alt;
    const char *str;  /* for ALT_STR */
    void (*body)(msgpack_packer *pk); /* NULL: {} */
    int want;
    const char *why; /* in the reason */
} hdr_rows[] = {
    /* What is accepted, so that the rows below differ in one thing. */
    {"valid request", NULL, NULL, NULL, 0, NULL, NULL, 0, "ok"},
    {"valid ping", "guard.ping", NULL, NULL, 0, NULL, b_echo_str, 0, "ok"},
    {"valid pong", "guard.ping.reply", NULL, NULL, 0, NULL, b_pong, 0, "ok"},
    {"error reply needs no pong fields", "guard.ping.reply", NULL, NULL, 0,
     NULL, b_error_no_actor, 0, "ok"},
    {"unknown header key skipped", NULL, NULL, "zz", ALT_ARRAY, NULL, NULL,
     0, "ok"},
    {"unknown body keys skipped", "guard.ping", NULL, NULL, 0, NULL,
     b_unknown_keys, 0, "ok"},
    {"re in a request is allowed", NULL, NULL, "re", ALT_STR, "r-1", NULL, 0,
     "ok"},
    {"longest id", NULL, NULL, "id", ALT_MAXLEN, NULL, NULL, 0, "ok"},
    {"uint64 up to INT64_MAX", NULL, NULL, NULL, 0, NULL, b_u64_int64_max, 0,
     "ok"},
    {"body at the depth limit", NULL, NULL, NULL, 0, NULL, b_depth_max, 0,
     "ok"},
    {"body at the depth limit, innermost empty", NULL, NULL, NULL, 0, NULL,
     b_depth_max_empty, 0, "ok"},

    /* ERR_MISSING */
    {"v missing", NULL, "v", NULL, 0, NULL, NULL, ERR_MISSING, "v"},
    {"id missing", NULL, "id", NULL, 0, NULL, NULL, ERR_MISSING, "id"},
    {"trace missing", NULL, "trace", NULL, 0, NULL, NULL, ERR_MISSING,
     "trace"},
    {"type missing", NULL, "type", NULL, 0, NULL, NULL, ERR_MISSING, "type"},
    {"from missing", NULL, "from", NULL, 0, NULL, NULL, ERR_MISSING, "from"},
    {"ts missing", NULL, "ts", NULL, 0, NULL, NULL, ERR_MISSING, "ts"},
    {"deadline missing", NULL, "deadline", NULL, 0, NULL, NULL, ERR_MISSING,
     "deadline"},
    {"body missing", NULL, "body", NULL, 0, NULL, NULL, ERR_MISSING, "body"},
    {"re missing in a reply", "test.reply", "re", NULL, 0, NULL, NULL,
     ERR_MISSING, "re"},
    {"re missing in a pong", "guard.ping.reply", "re", NULL, 0, NULL, b_pong,
     ERR_MISSING, "re"},
    {"pong without code", "guard.ping.reply", NULL, NULL, 0, NULL, b_no_code,
     ERR_MISSING, "code"},
    {"pong without ecode", "guard.ping.reply", NULL, NULL, 0, NULL,
     b_no_ecode, ERR_MISSING, "ecode"},
    {"pong 250 without actor", "guard.ping.reply", NULL, NULL, 0, NULL,
     b_pong_no_actor, ERR_MISSING, "actor"},
    {"any reply without code", "queue.submit.reply", NULL, NULL, 0, NULL,
     NULL, ERR_MISSING, "code"},

    /* ERR_VERSION */
    {"v = 2", NULL, NULL, "v", ALT_TWO, NULL, NULL, ERR_VERSION, "v"},
    {"v = 0", NULL, NULL, "v", ALT_ZERO, NULL, NULL, ERR_VERSION, "v"},
    {"v = 2^64-1", NULL, NULL, "v", ALT_U64_MAX, NULL, NULL, ERR_VERSION,
     "v"},

    /* ERR_TYPE: header fields */
    {"v as string", NULL, NULL, "v", ALT_STR, "1", NULL, ERR_TYPE, "v"},
    {"v negative", NULL, NULL, "v", ALT_NEG, NULL, NULL, ERR_TYPE, "v"},
    {"v as float", NULL, NULL, "v", ALT_FLOAT, NULL, NULL, ERR_TYPE, "v"},
    {"id as int", NULL, NULL, "id", ALT_INT, NULL, NULL, ERR_TYPE, "id"},
    {"id as bin", NULL, NULL, "id", ALT_BIN, NULL, NULL, ERR_TYPE, "id"},
    {"id as nil", NULL, NULL, "id", ALT_NIL, NULL, NULL, ERR_TYPE, "id"},
    {"id empty", NULL, NULL, "id", ALT_STR, "", NULL, ERR_TYPE, "id"},
    {"id too long", NULL, NULL, "id", ALT_LONG, NULL, NULL, ERR_TYPE, "id"},
    {"id holding NUL", NULL, NULL, "id", ALT_NUL, NULL, NULL, ERR_TYPE,
     "id"},
    {"re as int", "test.reply", NULL, "re", ALT_INT, NULL, NULL, ERR_TYPE,
     "re"},
    {"re empty", "test.reply", NULL, "re", ALT_STR, "", NULL, ERR_TYPE,
     "re"},
    {"trace as array", NULL, NULL, "trace", ALT_ARRAY, NULL, NULL, ERR_TYPE,
     "trace"},
    {"trace too long", NULL, NULL, "trace", ALT_LONG, NULL, NULL, ERR_TYPE,
     "trace"},
    {"type as int", NULL, NULL, "type", ALT_INT, NULL, NULL, ERR_TYPE,
     "type"},
    {"type \"Bad Type\"", NULL, NULL, "type", ALT_STR, "Bad Type", NULL,
     ERR_TYPE, "type"},
    {"type without a dot", NULL, NULL, "type", ALT_STR, "ping", NULL,
     ERR_TYPE, "type"},
    {"type with an empty part", NULL, NULL, "type", ALT_STR, "a..b", NULL,
     ERR_TYPE, "type"},
    {"type starting with a dot", NULL, NULL, "type", ALT_STR, ".a.b", NULL,
     ERR_TYPE, "type"},
    {"type ending with a dot", NULL, NULL, "type", ALT_STR, "a.b.", NULL,
     ERR_TYPE, "type"},
    {"type in capitals", NULL, NULL, "type", ALT_STR, "Guard.Ping", NULL,
     ERR_TYPE, "type"},
    {"from as map", NULL, NULL, "from", ALT_MAP, NULL, NULL, ERR_TYPE,
     "from"},
    {"from as true", NULL, NULL, "from", ALT_TRUE, NULL, NULL, ERR_TYPE,
     "from"},
    {"ts as string", NULL, NULL, "ts", ALT_STR, "1000", NULL, ERR_TYPE,
     "ts"},
    {"ts as float", NULL, NULL, "ts", ALT_FLOAT, NULL, NULL, ERR_TYPE, "ts"},
    {"ts over INT64_MAX", NULL, NULL, "ts", ALT_U64_MAX, NULL, NULL,
     ERR_TYPE, "ts"},
    {"deadline as nil", NULL, NULL, "deadline", ALT_NIL, NULL, NULL,
     ERR_TYPE, "deadline"},
    {"deadline as bin", NULL, NULL, "deadline", ALT_BIN, NULL, NULL,
     ERR_TYPE, "deadline"},
    {"body as array", NULL, NULL, "body", ALT_ARRAY, NULL, NULL, ERR_TYPE,
     "body"},
    {"body as string", NULL, NULL, "body", ALT_STR, "{}", NULL, ERR_TYPE,
     "body"},
    {"body as nil", NULL, NULL, "body", ALT_NIL, NULL, NULL, ERR_TYPE,
     "body"},

    /* ERR_TYPE: body fields of known types */
    {"ping echo as int", "guard.ping", NULL, NULL, 0, NULL, b_echo_int,
     ERR_TYPE, "echo"},
    {"ping echo as bin", "guard.ping", NULL, NULL, 0, NULL, b_echo_bin,
     ERR_TYPE, "echo"},
    {"pong code as string", "guard.ping.reply", NULL, NULL, 0, NULL,
     b_code_str, ERR_TYPE, "code"},
    {"pong pid as string", "guard.ping.reply", NULL, NULL, 0, NULL,
     b_pid_str, ERR_TYPE, "pid"},

    /* ERR_KEY */
    {"int key in body", NULL, NULL, NULL, 0, NULL, b_int_key, ERR_KEY,
     "key"},
    {"int key in a nested map", NULL, NULL, NULL, 0, NULL, b_nested_int_key,
     ERR_KEY, "key"},
    {"bin key in body", NULL, NULL, NULL, 0, NULL, b_bin_key, ERR_KEY,
     "key"},
    {"nil key in body", NULL, NULL, NULL, 0, NULL, b_nil_key, ERR_KEY,
     "key"},
    {"map key in body", NULL, NULL, NULL, 0, NULL, b_map_key, ERR_KEY,
     "key"},
    {"key holding NUL", "guard.ping", NULL, NULL, 0, NULL, b_nul_key,
     ERR_KEY, "key"},

    /* ERR_UNSUPPORTED */
    {"fixext1", NULL, NULL, NULL, 0, NULL, b_fixext1, ERR_UNSUPPORTED, "ext"},
    {"fixext2", NULL, NULL, NULL, 0, NULL, b_fixext2, ERR_UNSUPPORTED, "ext"},
    {"fixext4", NULL, NULL, NULL, 0, NULL, b_fixext4, ERR_UNSUPPORTED, "ext"},
    {"fixext8", NULL, NULL, NULL, 0, NULL, b_fixext8, ERR_UNSUPPORTED, "ext"},
    {"fixext16", NULL, NULL, NULL, 0, NULL, b_fixext16, ERR_UNSUPPORTED,
     "ext"},
    {"ext8", NULL, NULL, NULL, 0, NULL, b_ext8, ERR_UNSUPPORTED, "ext"},
    {"ext16", NULL, NULL, NULL, 0, NULL, b_ext16, ERR_UNSUPPORTED, "ext"},
    {"ext32", NULL, NULL, NULL, 0, NULL, b_ext32, ERR_UNSUPPORTED, "ext"},
    {"uint64 INT64_MAX+1", NULL, NULL, NULL, 0, NULL, b_u64_over,
     ERR_UNSUPPORTED, "9223372036854775808"},
    {"uint64 max", NULL, NULL, NULL, 0, NULL, b_u64_max, ERR_UNSUPPORTED,
     "18446744073709551615"},
    {"uint64 max in an array", NULL, NULL, NULL, 0, NULL, b_u64_in_array,
     ERR_UNSUPPORTED, "18446744073709551615"},

    /* ERR_MALFORMED */
    {"0xc1 in body", NULL, NULL, NULL, 0, NULL, b_c1, ERR_MALFORMED, "0xc1"},
    {"0xc1 as a body key", NULL, NULL, NULL, 0, NULL, b_c1_key,
     ERR_MALFORMED, "0xc1"},

    /* ERR_DEPTH */
    {"body one level too deep", NULL, NULL, NULL, 0, NULL, b_depth_over,
     ERR_DEPTH, "deeper"},
    {"body one level too deep, innermost empty", NULL, NULL, NULL, 0, NULL,
     b_depth_over_empty, ERR_DEPTH, "deeper"},
    {"body 200 levels deep", NULL, NULL, NULL, 0, NULL, b_depth_200,
     ERR_DEPTH, "deeper"},
};

static bool
ends_with_reply(const char *type)
{
    size_t n = strlen(type);

    return n >= 6 && strcmp(type + n - 6, ".reply") == 0;
}

/* The header in DESIGN.md's order, with r's change. */
static void
pack_hdr_row(msgpack_packer *pk, const struct hdr_row *r)
{
    static const char *const keys[] = {"v",    "id", "re", "trace", "type",
                                       "from", "ts", "deadline", "body"};
    const char *type = r->type ? r->type : "test.op";
    bool extra = r->key != NULL;
    bool want[NROWS(keys)];
    size_t n = 0;

    for (size_t i = 0; i < NROWS(keys); i++) {
        bool is_key = r->key && strcmp(r->key, keys[i]) == 0;

        if (is_key)
            extra = false;
        want[i] = !(r->omit && strcmp(r->omit, keys[i]) == 0) &&
                  (strcmp(keys[i], "re") != 0 || ends_with_reply(type) ||
                   is_key);
        n += want[i];
    }
    msgpack_pack_map(pk, n + extra);
    for (size_t i = 0; i < NROWS(keys); i++) {
        const char *k = keys[i];

        if (!want[i])
            continue;
        pk_str(pk, k);
        if (r->key && strcmp(r->key, k) == 0)
            pk_alt(pk, r->alt, r->str);
        else if (strcmp(k, "v") == 0)
            msgpack_pack_uint64(pk, 1);
        else if (strcmp(k, "id") == 0)
            pk_str(pk, "id-1");
        else if (strcmp(k, "re") == 0)
            pk_str(pk, "req-1");
        else if (strcmp(k, "trace") == 0)
            pk_str(pk, "trace-1");
        else if (strcmp(k, "type") == 0)
            pk_str(pk, type);
        else if (strcmp(k, "from") == 0)
            pk_str(pk, "test/1");
        else if (strcmp(k, "ts") == 0)
            msgpack_pack_int64(pk, 1000);
        else if (strcmp(k, "deadline") == 0)
            msgpack_pack_int64(pk, 2000);
        else if (r->body)
            r->body(pk);
        else
            msgpack_pack_map(pk, 0);
    }
    if (extra) {
        pk_str(pk, r->key);
        pk_alt(pk, r->alt, r->str);
    }
}

START_TEST(test_reject_header)
{
    const struct hdr_row *r = &hdr_rows[_i];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    envelope_t *env;
    char why[256];
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_hdr_row(&pk, r);
    rc = decode(sb.data, sb.size, LIMIT, &env, why, sizeof(why));
    ck_assert_msg(rc == r->want, "%s: got %s (%s), want %s", r->label,
                  err_name(rc), why, err_name(r->want));
    ck_assert_msg(strstr(why, r->why) != NULL,
                  "%s: reason \"%s\" does not name \"%s\"", r->label, why,
                  r->why);
    if (rc == 0) { /* what was accepted must survive a round trip */
        envelope_t *out = round_trip(r->label, env, NULL, NULL);

        envelope_destroy(&out);
    }
    envelope_destroy(&env);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* Rejections: raw bytes. */

static const struct raw_row {
    const char *label, *bytes;
    size_t len;
    int want;
    const char *why;
} raw_rows[] = {
    {"empty input", "", 0, ERR_TRUNCATED, "empty"},
    {"0xc1 alone", "\xc1", 1, ERR_MALFORMED, "0xc1"},
    {"0xc1 as a value", "\x81\xa1v\xc1", 4, ERR_MALFORMED, "0xc1"},
    {"top-level int", "\x05", 1, ERR_NOT_MAP, "not a map"},
    {"top-level negative int", "\xd3\x80\0\0\0\0\0\0\0", 9, ERR_NOT_MAP,
     "not a map"},
    {"top-level array", "\x92\x01\x02", 3, ERR_NOT_MAP, "not a map"},
    {"top-level empty array", "\x90", 1, ERR_NOT_MAP, "not a map"},
    {"top-level string", "\xa1x", 2, ERR_NOT_MAP, "not a map"},
    {"top-level nil", "\xc0", 1, ERR_NOT_MAP, "not a map"},
    {"top-level true", "\xc3", 1, ERR_NOT_MAP, "not a map"},
    {"top-level float", "\xcb\x3f\xe0\0\0\0\0\0\0", 9, ERR_NOT_MAP,
     "not a map"},
    {"top-level bin", "\xc4\x01x", 3, ERR_NOT_MAP, "not a map"},
    {"top-level ext", "\xd4\x01\x00", 3, ERR_UNSUPPORTED, "ext"},
    {"int key at the top", "\x81\x01\x01", 3, ERR_KEY, "key"},
    {"bin key at the top", "\x81\xc4\x01v\x01", 5, ERR_KEY, "key"},
    {"float key at the top", "\x81\xca\0\0\0\0\x01", 7, ERR_KEY, "key"},
    {"second key not a string", "\x82\xa1v\x01\x02\x01", 6, ERR_KEY, "key"},
    {"empty map", "\x80", 1, ERR_MISSING, "v"},
    {"only v", "\x81\xa1v\x01", 4, ERR_MISSING, "id"},
    {"cut inside a length", "\xdc\x00", 2, ERR_TRUNCATED, "length"},
    {"cut inside a str", "\x81\xa5" "ab", 4, ERR_TRUNCATED, "ends"},
    {"cut inside an int", "\x81\xa1v\xcd\x01", 5, ERR_TRUNCATED, "ends"},
    {"cut inside a float", "\x81\xa1v\xcb\x01", 5, ERR_TRUNCATED, "ends"},
    {"map of one key, no value", "\x81\xa1v", 3, ERR_TRUNCATED, ""},
};

START_TEST(test_reject_raw)
{
    const struct raw_row *r = &raw_rows[_i];
    envelope_t *env;
    char why[256];
    int rc = decode(r->bytes, r->len, LIMIT, &env, why, sizeof(why));

    ck_assert_msg(rc == r->want, "%s: got %s (%s), want %s", r->label,
                  err_name(rc), why, err_name(r->want));
    ck_assert_msg(strstr(why, r->why) != NULL,
                  "%s: reason \"%s\" does not name \"%s\"", r->label, why,
                  r->why);
}
END_TEST

/* Size limit and trailing bytes. */

static const struct max_row {
    const char *label;
    long delta; /* max = encoded length + delta */
    int want;
} max_rows[] = {
    {"max = len", 0, 0},
    {"max = len + 1", 1, 0},
    {"max = len - 1", -1, ERR_TOO_BIG},
    {"max = 0", -100000, ERR_TOO_BIG},
};

START_TEST(test_too_big)
{
    const struct max_row *r = &max_rows[_i];
    envelope_t *env = rich_envelope(), *out;
    char *buf, why[256];
    size_t len, max;
    int rc;

    envelope_encode(env, &buf, &len);
    max = r->delta < 0 && (size_t)-r->delta > len ? 0
                                                  : len + (size_t)r->delta;
    rc = decode(buf, len, max, &out, why, sizeof(why));
    ck_assert_msg(rc == r->want, "%s: got %s (%s), want %s", r->label,
                  err_name(rc), why, err_name(r->want));
    envelope_destroy(&out);
    if (rc == ERR_TOO_BIG) {
        char want[64];

        snprintf(want, sizeof(want), "%zu", max);
        ck_assert_msg(strstr(why, want) != NULL,
                      "%s: reason \"%s\" does not give the limit %s",
                      r->label, why, want);
    }
    /* The size is checked before a single byte is looked at. */
    memset(buf, 0xc1, len);
    rc = decode(buf, len, max, &out, why, sizeof(why));
    ck_assert_msg(rc == (r->want ? ERR_TOO_BIG : ERR_MALFORMED),
                  "%s, garbage: got %s, want %s", r->label, err_name(rc),
                  err_name(r->want ? ERR_TOO_BIG : ERR_MALFORMED));
    envelope_destroy(&out);
    envelope_destroy(&env);
    free(buf);
}
END_TEST

static const struct trail_row {
    const char *label, *bytes;
    size_t len; /* 0: a whole second envelope */
} trail_rows[] = {
    {"a zero byte", "\x00", 1},
    {"nil", "\xc0", 1},
    {"0xc1", "\xc1", 1},
    {"an empty map", "\x80", 1},
    {"a cut str header", "\xdb\xff", 2},
    {"a second envelope", NULL, 0},
};

START_TEST(test_trailing)
{
    const struct trail_row *r = &trail_rows[_i];
    envelope_t *env = envelope_new("test.op", NULL, 100), *out;
    char *buf, *both, why[256], want[64];
    size_t len, extra;
    int rc;

    envelope_encode(env, &buf, &len);
    extra = r->bytes ? r->len : len;
    both = malloc(len + extra);
    memcpy(both, buf, len);
    memcpy(both + len, r->bytes ? r->bytes : buf, extra);
    rc = decode(both, len + extra, LIMIT, &out, why, sizeof(why));
    ck_assert_msg(rc == ERR_TRAILING, "%s: got %s (%s), want TRAILING",
                  r->label, err_name(rc), why);
    snprintf(want, sizeof(want), "%zu bytes after", extra);
    ck_assert_msg(strstr(why, want) != NULL,
                  "%s: reason \"%s\" does not say \"%s\"", r->label, why,
                  want);
    free(both);
    free(buf);
    envelope_destroy(&env);
}
END_TEST

/* Truncation: every prefix of a valid encoding is refused. */

static envelope_t *
trunc_request(void)
{
    return rich_envelope();
}

static envelope_t *
trunc_reply(void)
{
    envelope_t *req = envelope_new("guard.ping", NULL, 100);
    envelope_t *rep = envelope_new_reply(req, 250, "2.0.0", "pong");

    value_set_str(envelope_body(rep), ENV_KEY_ACTOR, "guard/1");
    value_set_int(envelope_body(rep), ENV_KEY_PID, 1);
    value_set_int(envelope_body(rep), ENV_KEY_UPTIME_MS, 2);
    envelope_destroy(&req);
    return rep;
}

/* The 32-bit formats: str32, bin32, array32, map32. */
static envelope_t *
trunc_big(void)
{
    envelope_t *env = envelope_new("test.op", NULL, 100);
    value_t *b = envelope_body(env), *v;
    char *p = calloc(1, 65536);

    v = value_new_strn(p, 65536);
    value_set_take(b, "s", &v);
    v = value_new_bin(p, 65536);
    value_set_take(b, "b", &v);
    v = mk_array(65536);
    value_set_take(b, "a", &v);
    v = mk_map(65536);
    value_set_take(b, "m", &v);
    free(p);
    return env;
}

static const struct trunc_row {
    const char *label;
    envelope_t *(*make)(void);
    size_t stride; /* test every stride-th prefix past the first 512 */
} trunc_rows[] = {
    {"request", trunc_request, 1},
    {"reply", trunc_reply, 1},
    {"32-bit formats", trunc_big, 4099},
};

START_TEST(test_truncated)
{
    const struct trunc_row *r = &trunc_rows[_i];
    envelope_t *env = r->make(), *out;
    char *buf, why[256];
    size_t len, tried = 0;

    envelope_encode(env, &buf, &len);
    for (size_t n = 0; n < len; n++) {
        int rc;

        if (n > 512 && n + 512 < len && n % r->stride != 0)
            continue;
        rc = decode(buf, n, LIMIT, &out, why, sizeof(why));
        ck_assert_msg(rc == ERR_TRUNCATED,
                      "%s: prefix %zu of %zu: got %s (%s), want TRUNCATED",
                      r->label, n, len, err_name(rc), why);
        tried++;
    }
    ck_assert_msg(decode(buf, len, LIMIT, &out, why, sizeof(why)) == 0,
                  "%s: the whole encoding: %s", r->label, why);
    ck_assert_msg(tried >= (len < 1024 ? len : 1024),
                  "%s: only %zu prefixes tried", r->label, tried);
    envelope_destroy(&out);
    envelope_destroy(&env);
    free(buf);
}
END_TEST

/* Containers that declare far more items than the input holds are refused
 * from the declaration alone: no allocation sized by the declared count.
 * The address space is capped a little above what the process uses, so
 * that such an allocation would abort the test instead of succeeding
 * lazily. */

static const struct huge_row {
    const char *label, *bytes;
    size_t len;
} huge_rows[] = {
    {"array32 of 2^32-1", "\xdd\xff\xff\xff\xff\0\0\0\0\0", 10},
    {"map32 of 2^32-1", "\xdf\xff\xff\xff\xff\0\0\0\0\0", 10},
    {"str32 of 2^32-1", "\xdb\xff\xff\xff\xff\0\0\0\0\0", 10},
    {"bin32 of 2^32-1", "\xc6\xff\xff\xff\xff\0\0\0\0\0", 10},
    {"array16 of 65535", "\xdc\xff\xff\0\0\0\0\0\0\0", 10},
    {"map16 of 65535", "\xde\xff\xff\xa1v\x01\0\0\0\0", 10},
    {"array32 under a key", "\x81\xa1x\xdd\xff\xff\xff\xff\0\0", 10},
    {"map32 in an array", "\x91\xdf\xff\xff\xff\xff\0\0\0\0", 10},
    {"map16 in map32", "\xdf\0\0\0\x01\xa1m\xde\xff\xff", 10},
};

static void
cap_address_space(size_t headroom)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    struct rlimit rl;

    ck_assert_msg(f != NULL, "cannot read /proc/self/status");
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmSize: %llu kB", &kb) == 1)
            break;
    fclose(f);
    ck_assert_msg(kb > 0, "no VmSize in /proc/self/status");
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &rl), 0);
    rl.rlim_cur = (rlim_t)(kb * 1024 + headroom);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)
        rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
}

START_TEST(test_huge_declaration)
{
    const struct huge_row *r = &huge_rows[_i];
    envelope_t *env;
    char why[256];
    int64_t t0;
    int rc;

    cap_address_space((size_t)256 << 20);
    t0 = clock_mono_us();
    rc = decode(r->bytes, r->len, LIMIT, &env, why, sizeof(why));
    ck_assert_msg(rc == ERR_TRUNCATED, "%s: got %s (%s), want TRUNCATED",
                  r->label, err_name(rc), why);
    ck_assert_msg(clock_mono_us() - t0 < 250000,
                  "%s: took %lld us", r->label,
                  (long long)(clock_mono_us() - t0));
}
END_TEST

/* No single-byte change to a valid encoding crashes the decoder, and what
 * it accepts encodes and decodes again to the same thing. */
START_TEST(test_mutations)
{
    static const unsigned char subst[] = {
        0x00, 0x01, 0x7f, 0x80, 0x81, 0x8f, 0x90, 0x9f, 0xa0, 0xa1, 0xbf,
        0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xca, 0xcb, 0xcc,
        0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde,
        0xdf, 0xe0, 0xff};
    envelope_t *env = trunc_reply(), *out;
    char *buf, why[256];
    size_t len, accepted = 0, refused = 0;

    envelope_encode(env, &buf, &len);
    for (size_t i = 0; i < len; i++) {
        unsigned char orig = (unsigned char)buf[i];

        for (size_t s = 0; s < sizeof(subst); s++) {
            char label[64];
            int rc;

            if (subst[s] == orig)
                continue;
            buf[i] = (char)subst[s];
            rc = decode(buf, len, LIMIT, &out, why, sizeof(why));
            if (rc == 0) {
                envelope_t *again;

                snprintf(label, sizeof(label), "byte %zu = 0x%02x", i,
                         subst[s]);
                again = round_trip(label, out, NULL, NULL);
                envelope_destroy(&again);
                envelope_destroy(&out);
                accepted++;
            } else {
                refused++;
            }
        }
        buf[i] = (char)orig;
    }
    ck_assert_msg(refused > 0 && accepted > 0,
                  "mutations: %zu accepted, %zu refused", accepted, refused);
    free(buf);
    envelope_destroy(&env);
}
END_TEST

/* The rest of envelope.h. */

static bool
is_hex16(const char *s)
{
    if (strlen(s) != 16)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

START_TEST(test_new)
{
    int64_t before = clock_wall_us(), after;
    envelope_t *env = envelope_new("guard.ping", NULL, 1500);

    after = clock_wall_us();
    ck_assert_msg(envelope_version(env) == ENVELOPE_VERSION,
                  "v: got %d, want %d", envelope_version(env),
                  ENVELOPE_VERSION);
    ck_assert_msg(*envelope_id(env) != '\0', "id: empty");
    ck_assert_msg(is_hex16(envelope_trace(env)),
                  "trace: got \"%s\", want 16 hex digits",
                  envelope_trace(env));
    same_str("new", "type", envelope_type(env), "guard.ping");
    same_str("new", "from", envelope_from(env), log_actor());
    ck_assert_msg(envelope_re(env) == NULL, "re: got \"%s\", want NULL",
                  envelope_re(env));
    ck_assert_msg(envelope_ts(env) >= before && envelope_ts(env) <= after,
                  "ts: got %lld, want %lld..%lld",
                  (long long)envelope_ts(env), (long long)before,
                  (long long)after);
    ck_assert_msg(envelope_deadline(env) == envelope_ts(env) + 1500000,
                  "deadline: got %lld, want %lld",
                  (long long)envelope_deadline(env),
                  (long long)envelope_ts(env) + 1500000);
    ck_assert_msg(value_kind(envelope_body_peek(env)) == VAL_MAP &&
                      value_count(envelope_body_peek(env)) == 0,
                  "body: not an empty map");
    envelope_destroy(&env);
    ck_assert_msg(env == NULL, "envelope_destroy left the pointer set");
    envelope_destroy(&env); /* NULL is fine */
}
END_TEST

static const struct type_row {
    const char *type;
    enum env_type want;
} type_rows[] = {
    {"guard.ping", ENV_PING},
    {"a.b.ping", ENV_PING},
    {"guard.ping.reply", ENV_PING_REPLY},
    {"guard.rcpt.reply", ENV_GUARD_RCPT_REPLY},
    {"nosuch.thing.reply", ENV_ERROR_REPLY},
    {"x.reply", ENV_ERROR_REPLY},
    {"guard.rcpt", ENV_GUARD_RCPT},
    {"nosuch.thing", ENV_NONE},
    {"reply", ENV_NONE},
    {"guard.pingx", ENV_NONE},
    {"ping", ENV_NONE},
};

START_TEST(test_type_id)
{
    const struct type_row *r = &type_rows[_i];
    envelope_t *env = envelope_new(r->type, "t", 0);

    ck_assert_msg(envelope_type_id(env) == r->want, "%s: got %d, want %d",
                  r->type, (int)envelope_type_id(env), (int)r->want);
    envelope_destroy(&env);
}
END_TEST

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(test_ids_unique)
{
    enum { N = 2000 };
    char **ids = calloc(N, sizeof(*ids));
    char t1[ENVELOPE_TRACE_LEN], t2[ENVELOPE_TRACE_LEN];

    for (int i = 0; i < N; i++) {
        envelope_t *env = envelope_new("test.op", "t", 0);

        ids[i] = strdup(envelope_id(env));
        envelope_destroy(&env);
    }
    qsort(ids, N, sizeof(*ids), cmp_str);
    for (int i = 1; i < N; i++)
        ck_assert_msg(strcmp(ids[i - 1], ids[i]) != 0, "id %s given twice",
                      ids[i]);
    for (int i = 0; i < N; i++)
        free(ids[i]);
    free(ids);
    envelope_new_trace(t1);
    envelope_new_trace(t2);
    ck_assert_msg(is_hex16(t1), "trace: got \"%s\", want 16 hex digits", t1);
    ck_assert_msg(strcmp(t1, t2) != 0, "two traces are both %s", t1);
}
END_TEST

/* A child must not repeat its parent's ids: both start counting from the
 * same point after fork(). */
START_TEST(test_ids_after_fork)
{
    envelope_t *env = envelope_new("test.op", "t", 0);
    char parent[64], child[64] = "";
    int fds[2], status;
    ssize_t n, got = 0;
    pid_t pid;

    envelope_destroy(&env); /* the prefix is drawn now */
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork failed");
    if (pid == 0) {
        env = envelope_new("test.op", "t", 0);
        n = write(fds[1], envelope_id(env), strlen(envelope_id(env)));
        _exit(n > 0 ? 0 : 1);
    }
    close(fds[1]);
    while ((n = read(fds[0], child + got, sizeof(child) - 1 - (size_t)got)) > 0)
        got += n;
    close(fds[0]);
    waitpid(pid, &status, 0);
    env = envelope_new("test.op", "t", 0);
    snprintf(parent, sizeof(parent), "%s", envelope_id(env));
    envelope_destroy(&env);
    ck_assert_msg(got > 0, "no id from the child");
    ck_assert_msg(strcmp(parent, child) != 0,
                  "parent and child both made id %s", parent);
    ck_assert_msg(strncmp(parent, child, 16) != 0,
                  "parent %s and child %s share an id prefix", parent, child);
}
END_TEST

START_TEST(test_dup)
{
    envelope_t *env = trunc_reply(), *d = envelope_dup(env);

    same_header("dup", d, env);
    ck_assert_msg(value_equal(envelope_body_peek(d), envelope_body_peek(env)),
                  "dup: body differs");
    value_set_str(envelope_body(d), ENV_KEY_TEXT, "changed");
    envelope_set_id(d, "other");
    same_str("dup", "original text", envelope_get_str(env, ENV_KEY_TEXT),
             "pong");
    ck_assert_msg(strcmp(envelope_id(env), "other") != 0,
                  "dup shares the id with the original");
    envelope_destroy(&d);
    envelope_destroy(&env);
}
END_TEST

/* A decoded envelope is built in one block and its body is read-only
 * until envelope_body() asks for it: then it is a copy that takes every
 * change, while what was peeked before stays readable, and header setters
 * work on strings inside the block as on others. */
START_TEST(test_decoded_mutable)
{
    envelope_t *orig = rich_envelope(), *env, *again;
    const char *peeked;
    value_t *body, *v;
    char *buf, *buf2;
    size_t len, len2;

    env = round_trip("decoded mutable", orig, &buf, &len);
    ck_assert_msg(value_in_arena(envelope_body_peek(env)),
                  "a decoded body is not in its arena");
    peeked = envelope_get_str(env, "str8");
    ck_assert_msg(peeked != NULL, "str8 missing after decode");
    body = envelope_body(env);
    ck_assert_msg(!value_in_arena(body), "envelope_body() gave the arena");
    ck_assert_msg(value_equal(body, envelope_body_peek(orig)),
                  "the mutable copy differs from the decoded body");
    value_set_str(body, "str8", "changed");
    ck_assert_msg(value_del(body, "bin16"), "bin16 not deleted");
    v = value_new_int(7);
    value_set_take(body, "new", &v);
    envelope_set_id(env, "id-set-later");
    envelope_set_from(env, "from-set-later");
    ck_assert_msg(peeked[0] == 's' && strlen(peeked) == 40,
                  "a value peeked before the copy changed");
    same_str("decoded mutable", "str8", envelope_get_str(env, "str8"),
             "changed");
    ck_assert_msg(envelope_get_int(env, "new", 0) == 7, "new field lost");
    ck_assert_msg(envelope_body(env) == body,
                  "envelope_body() copied the body twice");
    /* The changes travel: encode, decode, compare. */
    again = round_trip("decoded mutable again", env, &buf2, &len2);
    same_str("decoded mutable", "id", envelope_id(again), "id-set-later");
    same_str("decoded mutable", "from", envelope_from(again),
             "from-set-later");
    ck_assert_msg(value_get(envelope_body_peek(again), "bin16") == NULL,
                  "a deleted field came back");
    envelope_destroy(&again);
    envelope_destroy(&env);
    envelope_destroy(&orig);
    free(buf);
    free(buf2);
}
END_TEST

/* Arena values are read-only: a mutator leaves them as they are and frees
 * the item it was handed (ASan would see a leak). */
START_TEST(test_arena_read_only)
{
    envelope_t *env = trunc_reply(), *out = round_trip("arena", env, NULL,
                                                       NULL);
    value_t *body = (value_t *)envelope_body_peek(out), *v;
    size_t n = value_count(body);

    v = value_new_str("x");
    value_set_take(body, ENV_KEY_TEXT, &v);
    ck_assert_msg(v == NULL, "set_take on the arena kept the item");
    v = value_new_str("x");
    value_map_append_take(body, "k", 1, &v);
    ck_assert_msg(v == NULL, "append_take on the arena kept the item");
    ck_assert_msg(!value_del(body, ENV_KEY_TEXT), "del changed the arena");
    ck_assert_msg(value_count(body) == n, "the arena body changed size");
    same_str("arena", "text", envelope_get_str(out, ENV_KEY_TEXT), "pong");
    envelope_destroy(&out);
    envelope_destroy(&env);
}
END_TEST

/* The scratch encoding is the same bytes as envelope_encode()'s, also
 * after a big envelope grew (and gave back) the buffer. */
START_TEST(test_encode_scratch)
{
    envelope_t *small = trunc_reply(), *big = envelope_new("test.op", NULL,
                                                           100);
    char *want, *p = calloc(1, 1 << 20);
    const char *got;
    size_t wlen, glen;
    value_t *v = value_new_bin(p, 1 << 20);

    value_set_take(envelope_body(big), "b", &v);
    for (int round = 0; round < 2; round++) {
        envelope_t *env = round ? big : small;

        envelope_encode(env, &want, &wlen);
        envelope_encode_scratch(env, &got, &glen);
        ck_assert_msg(glen == wlen && memcmp(got, want, wlen) == 0,
                      "round %d: scratch bytes differ", round);
        free(want);
    }
    envelope_encode(small, &want, &wlen);
    envelope_encode_scratch(small, &got, &glen);
    ck_assert_msg(glen == wlen && memcmp(got, want, wlen) == 0,
                  "after the big one: scratch bytes differ");
    free(want);
    free(p);
    envelope_destroy(&big);
    envelope_destroy(&small);
}
END_TEST

static void
b_duplicate_keys(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    pk_str(pk, "k");
    msgpack_pack_int(pk, 1);
    pk_str(pk, "k");
    msgpack_pack_int(pk, 2);
}

/* A decoder may hand over a body holding a key twice (msgpack allows it);
 * a copy must be the same body, not a merged one. */
START_TEST(test_dup_duplicate_keys)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    envelope_t *env, *d;
    char why[256];
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_hdr_row(&pk, &(struct hdr_row){.label = "duplicate keys",
                                        .body = b_duplicate_keys});
    rc = decode(sb.data, sb.size, LIMIT, &env, why, sizeof(why));
    ck_assert_msg(rc == 0, "duplicate keys: got %s (%s), want OK",
                  err_name(rc), why);
    d = envelope_dup(env);
    ck_assert_msg(value_count(envelope_body_peek(d)) == 2,
                  "dup: got %zu keys, want 2",
                  value_count(envelope_body_peek(d)));
    ck_assert_msg(value_equal(envelope_body_peek(d), envelope_body_peek(env)),
                  "dup: body differs");
    envelope_destroy(&d);
    envelope_destroy(&env);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_check_body)
{
    envelope_t *env = envelope_new("guard.ping", "t", 0);
    envelope_t *req = envelope_new("guard.ping", "t", 0), *rep;
    char why[256];
    int rc;

    ck_assert_int_eq(envelope_check_body(env, why, sizeof(why)), 0);
    value_set_int(envelope_body(env), ENV_KEY_ECHO, 5);
    rc = envelope_check_body(env, why, sizeof(why));
    ck_assert_msg(rc == ERR_TYPE, "echo as int: got %s, want TYPE",
                  err_name(rc));
    ck_assert_msg(strstr(why, "echo"), "reason \"%s\" lacks echo", why);
    rep = envelope_new_reply(req, 250, "2.0.0", "pong");
    rc = envelope_check_body(rep, why, sizeof(why));
    ck_assert_msg(rc == ERR_MISSING, "pong without actor: got %s, want "
                  "MISSING", err_name(rc));
    ck_assert_msg(strstr(why, "actor"), "reason \"%s\" lacks actor", why);
    value_del(envelope_body(rep), ENV_KEY_CODE);
    rc = envelope_check_body(rep, why, sizeof(why));
    ck_assert_msg(rc == ERR_MISSING && strstr(why, "code"),
                  "pong without code: got %s (%s), want MISSING code",
                  err_name(rc), why);
    envelope_destroy(&rep);
    envelope_destroy(&req);
    envelope_destroy(&env);
}
END_TEST

START_TEST(test_getters)
{
    envelope_t *env = envelope_new("test.op", "t", 0);
    value_t *b = envelope_body(env);

    value_set_str(b, "s", "str");
    value_set_int(b, "i", 42);
    ck_assert_msg(envelope_code(env) == 0, "code: got %d, want 0",
                  envelope_code(env));
    value_set_int(b, ENV_KEY_CODE, 451);
    ck_assert_msg(envelope_code(env) == 451, "code: got %d, want 451",
                  envelope_code(env));
    same_str("getters", "s", envelope_get_str(env, "s"), "str");
    same_str("getters", "i as str", envelope_get_str(env, "i"), NULL);
    same_str("getters", "missing", envelope_get_str(env, "nope"), NULL);
    ck_assert_msg(envelope_get_int(env, "i", -1) == 42, "i: got %lld",
                  (long long)envelope_get_int(env, "i", -1));
    ck_assert_msg(envelope_get_int(env, "s", -1) == -1,
                  "s as int: got %lld, want the fallback -1",
                  (long long)envelope_get_int(env, "s", -1));
    envelope_destroy(&env);
}
END_TEST

/* value.h */

static value_t *
v_str(const char *s, size_t n)
{
    return value_new_strn(s, n);
}

static const struct eq_row {
    const char *label;
    int a, b; /* indexes into eq_make() */
    bool want;
} eq_rows[] = {
    {"int 1 = int 1", 0, 0, true},
    {"int 1 != int 2", 0, 1, false},
    {"int 1 != float 1.0", 0, 2, false},
    {"0.0 != -0.0", 3, 4, false},
    {"NaN = the same NaN", 5, 5, true},
    {"str a != bin a", 6, 7, false},
    {"str a != str ab", 6, 8, false},
    {"a\\0b != a\\0c", 9, 10, false},
    {"nil != false", 11, 12, false},
    {"true != false", 13, 12, false},
    {"[1,2] != [1]", 14, 15, false},
    {"[1,2] != [2,1]", 14, 16, false},
    {"{a,b} != {b,a}", 17, 18, false},
    {"{a:1} != {b:1}", 19, 20, false},
    {"{a:1} != {a:2}", 19, 21, false},
    {"nested equal", 22, 22, true},
    {"empty array != empty map", 23, 24, false},
};

static value_t *
eq_make(int i)
{
    value_t *v, *w;

    switch (i) {
    case 0: return value_new_int(1);
    case 1: return value_new_int(2);
    case 2: return value_new_float(1.0);
    case 3: return value_new_float(0.0);
    case 4: return value_new_float(-0.0);
    case 5: return value_new_float(NAN);
    case 6: return value_new_str("a");
    case 7: return value_new_bin("a", 1);
    case 8: return value_new_str("ab");
    case 9: return v_str("a\0b", 3);
    case 10: return v_str("a\0c", 3);
    case 11: return value_new_nil();
    case 12: return value_new_bool(false);
    case 13: return value_new_bool(true);
    case 14: case 15: case 16:
        v = value_new_array();
        w = value_new_int(i == 16 ? 2 : 1);
        value_push_take(v, &w);
        if (i != 15) {
            w = value_new_int(i == 16 ? 1 : 2);
            value_push_take(v, &w);
        }
        return v;
    case 17: case 18:
        v = value_new_map();
        value_set_int(v, i == 17 ? "a" : "b", 1);
        value_set_int(v, i == 17 ? "b" : "a", 1);
        return v;
    case 19: case 20: case 21:
        v = value_new_map();
        value_set_int(v, i == 20 ? "b" : "a", i == 21 ? 2 : 1);
        return v;
    case 22: return mk_tree(4);
    case 23: return value_new_array();
    case 24: return value_new_map();
    }
    return NULL;
}

START_TEST(test_value_equal)
{
    const struct eq_row *r = &eq_rows[_i];
    value_t *a = eq_make(r->a), *b = eq_make(r->b), *d = value_dup(a);

    ck_assert_msg(value_equal(a, b) == r->want, "%s: got %d, want %d",
                  r->label, value_equal(a, b), r->want);
    ck_assert_msg(value_equal(b, a) == r->want, "%s (swapped): got %d, "
                  "want %d", r->label, value_equal(b, a), r->want);
    ck_assert_msg(value_equal(a, d), "%s: a copy differs", r->label);
    value_destroy(&a);
    value_destroy(&b);
    value_destroy(&d);
}
END_TEST

START_TEST(test_value_map)
{
    value_t *m = value_new_map(), *v;
    size_t n;

    value_set_int(m, "a", 1);
    value_set_int(m, "b", 2);
    value_set_int(m, "c", 3);
    value_set_str(m, "a", "one"); /* replaces, keeps the position */
    ck_assert_msg(value_count(m) == 3, "count: got %zu, want 3",
                  value_count(m));
    same_str("map", "key 0", value_key_at(m, 0), "a");
    same_str("map", "a", value_get_str(m, "a"), "one");
    ck_assert_msg(value_del(m, "b"), "del b: got false, want true");
    ck_assert_msg(!value_del(m, "b"), "del b again: got true, want false");
    ck_assert_msg(value_count(m) == 2, "count: got %zu, want 2",
                  value_count(m));
    same_str("map", "key 1", value_key_at(m, 1), "c");
    ck_assert_msg(value_get_int(m, "c", 0) == 3, "c: got %lld, want 3",
                  (long long)value_get_int(m, "c", 0));
    ck_assert_msg(value_get_int(m, "a", 7) == 7,
                  "a (a str) as int: got %lld, want the fallback 7",
                  (long long)value_get_int(m, "a", 7));
    ck_assert_msg(value_get_bool(m, "c", true),
                  "c (an int) as bool: want the fallback true");
    value_set_bool(m, "t", false);
    ck_assert_msg(!value_get_bool(m, "t", true), "t: got true, want false");
    ck_assert_msg(value_get(m, "nope") == NULL, "nope: found");
    ck_assert_msg(value_key_at(m, 99) == NULL, "key 99: found");
    ck_assert_msg(value_at(m, 99) == NULL, "item 99: found");
    v = value_new_array();
    ck_assert_msg(value_key_at(v, 0) == NULL, "array key: found");
    ck_assert_msg(value_get(v, "a") == NULL, "array lookup: found");
    value_destroy(&v);
    v = value_new_int(5);
    ck_assert_msg(value_str(v, &n) == NULL, "str of an int: not NULL");
    ck_assert_msg(value_count(v) == 0, "count of an int: got %zu",
                  value_count(v));
    value_destroy(&v);
    value_destroy(&m);
    ck_assert_msg(m == NULL, "value_destroy left the pointer set");
}
END_TEST

START_TEST(test_value_take)
{
    void *p = malloc(3);
    value_t *v, *a = value_new_array(), *item = value_new_int(1);

    memcpy(p, "xyz", 3);
    v = value_new_bin_take(&p, 3);
    ck_assert_msg(p == NULL, "bin_take left the pointer set");
    ck_assert_msg(memcmp(value_str(v, NULL), "xyz", 3) == 0,
                  "bin_take: bytes changed");
    value_push_take(a, &item);
    ck_assert_msg(item == NULL, "push_take left the pointer set");
    value_destroy(&v);
    v = value_new_map();
    value_set_take(v, "k", &a);
    ck_assert_msg(a == NULL, "set_take left the pointer set");
    ck_assert_msg(value_int(value_at(value_get(v, "k"), 0)) == 1,
                  "the taken item is lost");
    value_destroy(&v);
}
END_TEST

/* A map past several growths keeps keys and items paired, in order,
 * through replacements and deletions. */
START_TEST(test_value_map_grow)
{
    value_t *m = value_new_map();
    char key[16];

    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        value_set_int(m, key, i);
    }
    for (int i = 0; i < 100; i += 3) {
        snprintf(key, sizeof(key), "k%d", i);
        ck_assert_msg(value_del(m, key), "%s not deleted", key);
    }
    value_set_str(m, "k1", "one");
    for (size_t j = 0, i = 0; i < 100; i++) {
        if (i % 3 == 0)
            continue;
        snprintf(key, sizeof(key), "k%zu", i);
        ck_assert_msg(strcmp(value_key_at(m, j), key) == 0,
                      "key %zu: got %s, want %s", j, value_key_at(m, j), key);
        if (i == 1)
            same_str("grow", "k1", value_get_str(m, "k1"), "one");
        else
            ck_assert_msg(value_get_int(m, key, -1) == (int64_t)i,
                          "%s: wrong item", key);
        j++;
    }
    value_destroy(&m);
}
END_TEST

START_TEST(test_value_kind_name)
{
    static const char *const want[] = {"nil", "bool", "int", "float",
                                       "str", "bin",  "array", "map"};

    for (int k = VAL_NIL; k <= VAL_MAP; k++)
        ck_assert_msg(strcmp(value_kind_name((value_kind_t)k), want[k]) == 0,
                      "kind %d: got %s, want %s", k,
                      value_kind_name((value_kind_t)k), want[k]);
    ck_assert_str_eq(value_kind_name((value_kind_t)99), "?");
}
END_TEST

/* JSON. */

static envelope_t *
json_env(const char *type)
{
    envelope_t *env = envelope_new(type, "trace-1", 0);

    envelope_set_id(env, "id-1");
    envelope_set_from(env, "test/1");
    envelope_set_ts(env, 1000);
    envelope_set_deadline(env, 2000);
    return env;
}

#define JSON_HEAD                                                            \
    "{\"v\":1,\"id\":\"id-1\",\"trace\":\"trace-1\",\"type\":\"test.op\","  \
    "\"from\":\"test/1\",\"ts\":1000,\"deadline\":2000,\"body\":"

/* envelope_to_json() of env, checked to be valid JSON. */
static char *
to_json(const char *label, const envelope_t *env, int flags)
{
    char *json = envelope_to_json(env, flags), why[128];

    ck_assert_msg(json != NULL, "%s: no JSON", label);
    ck_assert_msg(json_valid(json, strlen(json), why, sizeof(why)),
                  "%s: invalid JSON (%s): %s", label, why, json);
    return json;
}

#define U "\\ufffd"
static const struct json_row {
    const char *label;
    value_kind_t kind;
    const char *s;
    size_t n;
    int64_t i;
    double d;
    const char *want;
} json_rows[] = {
    {"plain", VAL_STR, "hello", 5, 0, 0, "\"hello\""},
    {"empty string", VAL_STR, "", 0, 0, 0, "\"\""},
    {"double quote", VAL_STR, "a\"b", 3, 0, 0, "\"a\\\"b\""},
    {"backslash", VAL_STR, "a\\b", 3, 0, 0, "\"a\\\\b\""},
    {"slash", VAL_STR, "a/b", 3, 0, 0, "\"a/b\""},
    {"newline, tab, CR", VAL_STR, "\n\t\r", 3, 0, 0,
     "\"\\u000a\\u0009\\u000d\""},
    {"NUL", VAL_STR, "a\0b", 3, 0, 0, "\"a\\u0000b\""},
    {"0x1f and DEL", VAL_STR, "\x1f\x7f", 2, 0, 0, "\"\\u001f\\u007f\""},
    {"UTF-8 of 2, 3 and 4 bytes", VAL_STR,
     "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, 0, 0,
     "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""},
    {"U+10FFFF", VAL_STR, "\xf4\x8f\xbf\xbf", 4, 0, 0,
     "\"\xf4\x8f\xbf\xbf\""},
    {"U+E000 after the surrogates", VAL_STR, "\xee\x80\x80", 3, 0, 0,
     "\"\xee\x80\x80\""},
    {"lone continuation byte", VAL_STR, "\x80", 1, 0, 0, "\"" U "\""},
    {"0xff", VAL_STR, "a\xff" "b", 3, 0, 0, "\"a" U "b\""},
    {"sequence cut at the end", VAL_STR, "\xe2\x82", 2, 0, 0,
     "\"" U U "\""},
    {"sequence cut by ASCII", VAL_STR, "\xe2x", 2, 0, 0, "\"" U "x\""},
    {"overlong NUL", VAL_STR, "\xc0\x80", 2, 0, 0, "\"" U U "\""},
    {"overlong 3 bytes", VAL_STR, "\xe0\x80\xaf", 3, 0, 0, "\"" U U U "\""},
    {"overlong 4 bytes", VAL_STR, "\xf0\x80\x80\xaf", 4, 0, 0,
     "\"" U U U U "\""},
    {"UTF-16 surrogate", VAL_STR, "\xed\xa0\x80", 3, 0, 0, "\"" U U U "\""},
    {"over U+10FFFF", VAL_STR, "\xf4\x90\x80\x80", 4, 0, 0,
     "\"" U U U U "\""},
    {"lead byte 0xf5", VAL_STR, "\xf5\x80\x80\x80", 4, 0, 0,
     "\"" U U U U "\""},
    {"bin empty", VAL_BIN, "", 0, 0, 0, "\"\""},
    {"bin f", VAL_BIN, "f", 1, 0, 0, "\"Zg==\""},
    {"bin fo", VAL_BIN, "fo", 2, 0, 0, "\"Zm8=\""},
    {"bin foo", VAL_BIN, "foo", 3, 0, 0, "\"Zm9v\""},
    {"bin foob", VAL_BIN, "foob", 4, 0, 0, "\"Zm9vYg==\""},
    {"bin fooba", VAL_BIN, "fooba", 5, 0, 0, "\"Zm9vYmE=\""},
    {"bin foobar", VAL_BIN, "foobar", 6, 0, 0, "\"Zm9vYmFy\""},
    {"bin high bytes", VAL_BIN, "\xff\xfe\xfd", 3, 0, 0, "\"//79\""},
    {"bin NUL", VAL_BIN, "\0", 1, 0, 0, "\"AA==\""},
    {"nil", VAL_NIL, NULL, 0, 0, 0, "null"},
    {"true", VAL_BOOL, NULL, 0, 1, 0, "true"},
    {"false", VAL_BOOL, NULL, 0, 0, 0, "false"},
    {"int -1", VAL_INT, NULL, 0, -1, 0, "-1"},
    {"int INT64_MIN", VAL_INT, NULL, 0, INT64_MIN, 0,
     "-9223372036854775808"},
    {"int INT64_MAX", VAL_INT, NULL, 0, INT64_MAX, 0,
     "9223372036854775807"},
    {"float 0.5", VAL_FLOAT, NULL, 0, 0, 0.5, "0.5"},
    {"float -1e300", VAL_FLOAT, NULL, 0, 0, -1e300,
     "-1.0000000000000001e+300"},
    {"float -0", VAL_FLOAT, NULL, 0, 0, -0.0, "-0"},
    {"float NaN", VAL_FLOAT, NULL, 0, 0, NAN, "null"},
    {"float inf", VAL_FLOAT, NULL, 0, 0, INFINITY, "null"},
    {"float -inf", VAL_FLOAT, NULL, 0, 0, -INFINITY, "null"},
};
#undef U

START_TEST(test_json_value)
{
    const struct json_row *r = &json_rows[_i];
    envelope_t *env = json_env("test.op");
    value_t *v = NULL;
    char *json, *want;

    switch (r->kind) {
    case VAL_STR: v = value_new_strn(r->s, r->n); break;
    case VAL_BIN: v = value_new_bin(r->s, r->n); break;
    case VAL_NIL: v = value_new_nil(); break;
    case VAL_BOOL: v = value_new_bool(r->i != 0); break;
    case VAL_INT: v = value_new_int(r->i); break;
    case VAL_FLOAT: v = value_new_float(r->d); break;
    default: ck_abort_msg("%s: bad row", r->label);
    }
    value_set_take(envelope_body(env), "x", &v);
    json = to_json(r->label, env, 0);
    if (asprintf(&want, "%s{\"x\":%s}}", JSON_HEAD, r->want) < 0)
        ck_abort_msg("asprintf");
    ck_assert_msg(strcmp(json, want) == 0, "%s: got %s, want %s", r->label,
                  json, want);
    free(want);
    free(json);
    envelope_destroy(&env);
}
END_TEST

START_TEST(test_json_structure)
{
    envelope_t *req = json_env("test.op"), *rep;
    value_t *b = envelope_body(req), *a = mk_array(2), *m = value_new_map();
    char *json;

    value_set_take(m, "k\"", &a);
    value_set_take(b, "m", &m);
    a = value_new_array();
    value_set_take(b, "e", &a);
    m = value_new_map();
    value_set_take(b, "o", &m);
    json = to_json("structure", req, 0);
    ck_assert_str_eq(json, JSON_HEAD
                     "{\"m\":{\"k\\\"\":[0,1]},\"e\":[],\"o\":{}}}");
    free(json);

    rep = envelope_new_reply(req, 451, "4.3.0", "try \"later\"");
    envelope_set_id(rep, "id-2");
    envelope_set_from(rep, "test/2");
    envelope_set_ts(rep, 1500);
    json = to_json("reply", rep, 0);
    ck_assert_str_eq(json,
                     "{\"v\":1,\"id\":\"id-2\",\"re\":\"id-1\",\"trace\":"
                     "\"trace-1\",\"type\":\"test.op.reply\",\"from\":"
                     "\"test/2\",\"ts\":1500,\"deadline\":2000,\"body\":"
                     "{\"code\":451,\"ecode\":\"4.3.0\",\"text\":"
                     "\"try \\\"later\\\"\"}}");
    free(json);
    envelope_destroy(&rep);
    envelope_destroy(&req);
}
END_TEST

START_TEST(test_json_abbrev)
{
    envelope_t *env = json_env("test.op");
    char s[300], *json, *want;
    value_t *v;

    memset(s, 'a', sizeof(s));
    v = value_new_strn(s, 300);
    value_set_take(envelope_body(env), "long", &v);
    v = value_new_strn(s, 256);
    value_set_take(envelope_body(env), "edge", &v);
    v = value_new_bin(s, 300);
    value_set_take(envelope_body(env), "bin", &v);
    json = to_json("abbrev", env, ENVELOPE_JSON_ABBREV);
    if (asprintf(&want, "%s{\"long\":\"%.256s...(300 bytes)\",\"edge\":"
                 "\"%.256s\",\"bin\":\"(300 bytes)\"}}", JSON_HEAD, s,
                 s) < 0)
        ck_abort_msg("asprintf");
    ck_assert_msg(strcmp(json, want) == 0, "abbrev: got %s, want %s", json,
                  want);
    free(want);
    free(json);
    json = to_json("no abbrev", env, 0);
    ck_assert_msg(strlen(json) > 300 + 300 + 400,
                  "without the flag the JSON is shortened: %zu bytes",
                  strlen(json));
    free(json);
    envelope_destroy(&env);
}
END_TEST

/* The schemas may or may not mark a key secret today: test the masking
 * with a real secret key when there is one, and always that the flag
 * leaves ordinary keys alone. */
START_TEST(test_json_mask)
{
    envelope_t *env = json_env("test.op");
    value_t *b = envelope_body(env), *inner = value_new_map();
    const char *secret = env_secret_keys[0];
    char *plain, *masked;

    ck_assert_msg(!envelope_key_is_secret("echo"), "echo is a secret");
    ck_assert_msg(!envelope_key_is_secret(""), "the empty key is a secret");
    value_set_str(b, "echo", "visible");
    value_set_str(inner, "text", "also visible");
    if (secret) {
        ck_assert_msg(envelope_key_is_secret(secret),
                      "%s: listed but not secret", secret);
        value_set_str(b, secret, "hunter2");
        value_set_str(inner, secret, "hunter3");
    }
    value_set_take(b, "inner", &inner);
    plain = to_json("unmasked", env, 0);
    masked = to_json("masked", env, ENVELOPE_JSON_MASK);
    ck_assert_msg(strstr(masked, "\"echo\":\"visible\"") &&
                      strstr(masked, "\"text\":\"also visible\""),
                  "mask hid an ordinary key: %s", masked);
    if (secret) {
        ck_assert_msg(strstr(plain, "hunter2") && strstr(plain, "hunter3"),
                      "without the flag the secret is gone: %s", plain);
        ck_assert_msg(!strstr(masked, "hunter2") && !strstr(masked, "hunter3"),
                      "the secret %s leaked: %s", secret, masked);
        ck_assert_msg(strstr(masked, "\"***\""), "no mask in %s", masked);
    } else {
        ck_assert_msg(strcmp(plain, masked) == 0,
                      "with no secret keys the mask changed the JSON: %s "
                      "vs %s", plain, masked);
    }
    free(plain);
    free(masked);
    envelope_destroy(&env);
}
END_TEST

/* A small deterministic generator: the same bytes on every run. */
static uint32_t
rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Byte strings biased towards what is hard to print as JSON. */
static size_t
random_bytes(uint32_t *seed, char *out, size_t max)
{
    static const unsigned char hard[] = {
        0x00, 0x01, 0x1f, '"', '\\', 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0,
        0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xee, 0xef, 0xf0, 0xf4,
        0xf5, 0xf8, 0xfe, 0xff, 'a', '/'};
    size_t n = rnd(seed) % (max + 1);

    for (size_t i = 0; i < n; i++) {
        uint32_t r = rnd(seed);

        out[i] = (char)(r % 3 ? hard[(r >> 8) % sizeof(hard)] : r >> 8);
    }
    return n;
}

START_TEST(test_json_random_strings)
{
    uint32_t seed = 0x5a17;

    for (int iter = 0; iter < 3000; iter++) {
        envelope_t *env = json_env("test.op");
        char s[40], k[40], label[32];
        size_t n = random_bytes(&seed, s, sizeof(s));
        size_t kn = random_bytes(&seed, k, sizeof(k) - 1);
        value_t *v = value_new_strn(s, n);
        char *json;

        for (size_t i = 0; i < kn; i++) /* keys are C strings */
            if (k[i] == '\0')
                k[i] = 'k';
        k[kn] = '\0';
        value_set_take(envelope_body(env), k, &v);
        snprintf(label, sizeof(label), "random string %d", iter);
        json = to_json(label, env, iter % 2 ? ENVELOPE_JSON_ABBREV : 0);
        free(json);
        envelope_destroy(&env);
    }
}
END_TEST

static int
b64_digit(char c)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(tbl, c) : NULL;

    return p ? (int)(p - tbl) : -1;
}

/* Decodes padded base64 of len bytes (a multiple of 4); returns the
 * length, or -1 when the text is not base64. */
static long
b64_decode(const char *s, size_t len, unsigned char *out)
{
    long n = 0;

    if (len % 4)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int d[4], pad = 0;

        for (int j = 0; j < 4; j++) {
            if (s[i + j] == '=' && i + 4 == len && j >= 2) {
                d[j] = 0;
                pad++;
            } else if ((d[j] = b64_digit(s[i + j])) < 0 || pad) {
                return -1;
            }
        }
        out[n++] = (unsigned char)(d[0] << 2 | d[1] >> 4);
        if (pad < 2)
            out[n++] = (unsigned char)((d[1] & 15) << 4 | d[2] >> 2);
        if (pad < 1)
            out[n++] = (unsigned char)((d[2] & 3) << 6 | d[3]);
    }
    return n;
}

START_TEST(test_json_base64)
{
    uint32_t seed = 0xb64;

    for (size_t len = 0; len <= 70; len++) {
        envelope_t *env = json_env("test.op");
        unsigned char bin[70], back[72];
        char label[32], *json, *start, *end;
        value_t *v;
        long n;

        for (size_t i = 0; i < len; i++)
            bin[i] = (unsigned char)rnd(&seed);
        v = value_new_bin(bin, len);
        value_set_take(envelope_body(env), "b", &v);
        snprintf(label, sizeof(label), "bin of %zu bytes", len);
        json = to_json(label, env, 0);
        start = strstr(json, "\"b\":\"");
        ck_assert_msg(start != NULL, "%s: no \"b\" in %s", label, json);
        start += 5;
        end = strchr(start, '"');
        n = b64_decode(start, (size_t)(end - start), back);
        ck_assert_msg(n == (long)len, "%s: got %ld bytes back, want %zu",
                      label, n, len);
        ck_assert_msg(memcmp(back, bin, len) == 0, "%s: bytes changed",
                      label);
        free(json);
        envelope_destroy(&env);
    }
}
END_TEST

/* The checker itself must refuse what it is there to catch. */
static const struct jc_row {
    const char *label, *json;
    bool want;
} jc_rows[] = {
    {"object", "{\"a\":[1,-2.5e3,true,null,\"\\u00e9\"]}", true},
    {"surrogate pair escape", "\"\\ud83d\\ude00\"", true},
    {"raw newline", "\"a\nb\"", false},
    {"bad escape", "\"\\x41\"", false},
    {"lone surrogate escape", "\"\\ud800\"", false},
    {"invalid UTF-8", "\"\xff\"", false},
    {"raw surrogate", "\"\xed\xa0\x80\"", false},
    {"trailing comma", "[1,]", false},
    {"leading zero", "01", false},
    {"two values", "{} {}", false},
    {"unquoted key", "{a:1}", false},
    {"NaN", "NaN", false},
};

START_TEST(test_json_checker)
{
    const struct jc_row *r = &jc_rows[_i];
    char why[128] = "";
    bool got = json_valid(r->json, strlen(r->json), why, sizeof(why));

    ck_assert_msg(got == r->want, "%s: got %d, want %d (%s)", r->label, got,
                  r->want, why);
}
END_TEST

static Suite *
envelope_suite(void)
{
    Suite *s = suite_create("envelope");
    TCase *tc;

    tc = tcase_create("round_trip");
    tcase_add_loop_test(tc, test_round_trip_scalar, 0, NROWS(scalar_rows));
    tcase_add_loop_test(tc, test_round_trip_str_len, 0, NROWS(len_rows));
    tcase_add_loop_test(tc, test_round_trip_bin_len, 0, NROWS(len_rows));
    tcase_add_loop_test(tc, test_round_trip_text, 0, NROWS(text_rows));
    tcase_add_loop_test(tc, test_round_trip_container, 0, NROWS(cont_rows));
    tcase_add_test(tc, test_round_trip_header);
    tcase_add_loop_test(tc, test_round_trip_reply, 0, NROWS(reply_rows));
    suite_add_tcase(s, tc);

    tc = tcase_create("reject");
    tcase_add_loop_test(tc, test_reject_header, 0, NROWS(hdr_rows));
    tcase_add_loop_test(tc, test_reject_raw, 0, NROWS(raw_rows));
    tcase_add_loop_test(tc, test_too_big, 0, NROWS(max_rows));
    tcase_add_loop_test(tc, test_trailing, 0, NROWS(trail_rows));
    tcase_add_loop_test(tc, test_truncated, 0, NROWS(trunc_rows));
    tcase_add_loop_test(tc, test_huge_declaration, 0, NROWS(huge_rows));
    tcase_add_test(tc, test_mutations);
    suite_add_tcase(s, tc);

    tc = tcase_create("envelope");
    tcase_add_test(tc, test_new);
    tcase_add_loop_test(tc, test_type_id, 0, NROWS(type_rows));
    tcase_add_test(tc, test_ids_unique);
    tcase_add_test(tc, test_ids_after_fork);
    tcase_add_test(tc, test_dup);
    tcase_add_test(tc, test_dup_duplicate_keys);
    tcase_add_test(tc, test_decoded_mutable);
    tcase_add_test(tc, test_arena_read_only);
    tcase_add_test(tc, test_encode_scratch);
    tcase_add_test(tc, test_check_body);
    tcase_add_test(tc, test_getters);
    suite_add_tcase(s, tc);

    tc = tcase_create("value");
    tcase_add_loop_test(tc, test_value_equal, 0, NROWS(eq_rows));
    tcase_add_test(tc, test_value_map);
    tcase_add_test(tc, test_value_take);
    tcase_add_test(tc, test_value_map_grow);
    tcase_add_test(tc, test_value_kind_name);
    suite_add_tcase(s, tc);

    tc = tcase_create("json");
    tcase_add_loop_test(tc, test_json_value, 0, NROWS(json_rows));
    tcase_add_test(tc, test_json_structure);
    tcase_add_test(tc, test_json_abbrev);
    tcase_add_test(tc, test_json_mask);
    tcase_add_test(tc, test_json_random_strings);
    tcase_add_test(tc, test_json_base64);
    tcase_add_loop_test(tc, test_json_checker, 0, NROWS(jc_rows));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(envelope_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
