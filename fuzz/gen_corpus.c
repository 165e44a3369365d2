/*
 * gen_corpus.c - writes the seed corpus of fuzz_envelope.
 *
 * usage: fuzz_gen_corpus DIR
 *
 * Each seed is one valid envelope with a fixed header (no random ids or
 * clocks), so that the files only change when the encoding does: a
 * request, a ping, replies, an auth.verify with secrets, a body with every
 * value kind at the msgpack format boundaries, a body at the depth limit,
 * and one written by hand in the long formats (str32, bin32, array32,
 * map32 and friends) with short payloads. Regression inputs from crashes
 * are added to the same folder by hand and never rewritten here.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/envelope.h"
#include "bus/value.h"

static const char *dir;

static envelope_t *
fixed(const char *type)
{
    envelope_t *env = envelope_new(type, "5d41402abc4b2a76", 0);

    envelope_set_id(env, "9f3c2a1b00d4e811-1");
    envelope_set_from(env, "listener/1");
    envelope_set_ts(env, 1795951254000000);
    envelope_set_deadline(env, 1795951259000000);
    return env;
}

static envelope_t *
fixed_reply(const char *req_type, int code, const char *ecode,
            const char *text)
{
    envelope_t *req = fixed(req_type);
    envelope_t *rep = envelope_new_reply(req, code, ecode, text);

    envelope_set_id(rep, "7c1e-2");
    envelope_set_from(rep, "guard/1");
    envelope_set_ts(rep, 1795951254001000);
    envelope_destroy(&req);
    return rep;
}

/* A valid envelope in msgpack's long formats with short payloads. The
 * decoder takes msgpack that is not minimal and the encoder never writes
 * it, so without this seed the fuzzer reaches the 32-bit formats only
 * through 64 KiB inputs, a hundred times slower to run. */
static const char long_formats[] =
    "\xde\x00\x08"                                   /* map16 of 8 */
    "\xd9\x01" "v" "\xcc\x01"                        /* str8, uint8 */
    "\xda\x00\x02" "id" "\xdb\x00\x00\x00\x01" "i"   /* str16, str32 */
    "\xa5" "trace" "\xd9\x01" "t"
    "\xa4" "type" "\xa9" "test.long"
    "\xa4" "from" "\xa1" "f"
    "\xa2" "ts" "\xd3\x00\x00\x00\x00\x00\x00\x03\xe8" /* int64 */
    "\xa8" "deadline" "\xcf\x00\x00\x00\x00\x00\x00\x07\xd0" /* uint64 */
    "\xa4" "body" "\xdf\x00\x00\x00\x06"           /* map32 of 6 */
    "\xa1" "s" "\xdb\x00\x00\x00\x02" "hi"          /* str32 */
    "\xa1" "b" "\xc6\x00\x00\x00\x02\x00\x01"       /* bin32 */
    "\xa1" "a" "\xdd\x00\x00\x00\x03"               /* array32 of 3 */
    "\xd1\x00\x05" "\xce\x00\x00\x00\x07" "\xca\x3f\x80\x00\x00"
    "\xa1" "m" "\xde\x00\x01" "\xa1" "k" "\xc0"        /* map16 of 1 */
    "\xa3" "a16" "\xdc\x00\x01" "\xc3"               /* array16 of 1 */
    "\xa2" "e8" "\xc5\x00\x00";                      /* empty bin16 */

static int
write_raw(const char *name, const void *p, size_t len)
{
    char path[4096];
    FILE *f;
    int rc = 0;

    snprintf(path, sizeof(path), "%s/%s.msgpack", dir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, len, f) != len) {
        fprintf(stderr, "fuzz_gen_corpus: %s: %s\n", path, strerror(errno));
        rc = 1;
    }
    if (f && fclose(f) != 0)
        rc = 1;
    return rc;
}

static int
write_seed(const char *name, envelope_t **env_p)
{
    char *buf;
    size_t len;
    int rc;

    envelope_encode(*env_p, &buf, &len);
    rc = write_raw(name, buf, len);
    free(buf);
    envelope_destroy(env_p);
    return rc;
}

static void
push(value_t *arr, value_t *v)
{
    value_push_take(arr, &v);
}

static void
set(value_t *map, const char *key, value_t *v)
{
    value_set_take(map, key, &v);
}

int
main(int argc, char **argv)
{
    static const int64_t ints[] = {0, 1, -1, 127, 128, -32, -33, 255, 256,
                                   65535, 65536, INT32_MAX, INT32_MIN,
                                   INT64_MAX, INT64_MIN};
    static char big[256];
    envelope_t *env;
    value_t *b, *a, *m;
    int rc = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_gen_corpus DIR\n");
        return 2;
    }
    dir = argv[1];
    memset(big, 'a', sizeof(big));

    env = fixed("guard.rcpt");
    rc |= write_seed("request-empty-body", &env);

    env = fixed("guard.ping");
    value_set_str(envelope_body(env), "echo", "hello");
    rc |= write_seed("ping", &env);

    env = fixed_reply("guard.ping", 250, "2.0.0", "pong");
    b = envelope_body(env);
    value_set_str(b, "actor", "guard/1");
    value_set_int(b, "pid", 4242);
    value_set_int(b, "uptime_ms", 1200);
    value_set_str(b, "echo", "hello");
    rc |= write_seed("ping-reply", &env);

    env = fixed_reply("guard.rcpt", 550, "5.1.1", "no such user");
    value_set_str(envelope_body(env), "error", "NOTFOUND");
    rc |= write_seed("error-reply", &env);

    env = fixed("auth.verify");
    b = envelope_body(env);
    value_set_str(b, "mechanism", "LOGIN");
    value_set_str(b, "username", "user@example.org");
    value_set_str(b, "password", "hunter2");
    value_set_str(b, "client_ip", "127.0.0.1");
    rc |= write_seed("auth-verify", &env);

    /* Every kind, at the format boundaries up to 16 bits. */
    env = fixed("test.kinds");
    b = envelope_body(env);
    a = value_new_array();
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
        push(a, value_new_int(ints[i]));
    set(b, "ints", a);
    a = value_new_array();
    push(a, value_new_float(0.5));
    push(a, value_new_float(-1e300));
    push(a, value_new_nil());
    push(a, value_new_bool(true));
    push(a, value_new_bool(false));
    set(b, "misc", a);
    set(b, "s31", value_new_strn(big, 31));
    set(b, "s32", value_new_strn(big, 32));
    set(b, "s256", value_new_strn(big, 256));
    set(b, "b1", value_new_bin("\0\1\2", 3));
    set(b, "b256", value_new_bin(big, 256));
    set(b, "utf8", value_new_str("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"));
    set(b, "odd", value_new_strn("\"\\\n\0\xff\xed\xa0\x80", 8));
    a = value_new_array();
    for (int i = 0; i < 16; i++)
        push(a, value_new_int(i));
    set(b, "a16", a);
    m = value_new_map();
    for (int i = 0; i < 16; i++) {
        char k[8];

        snprintf(k, sizeof(k), "k%d", i);
        value_set_int(m, k, i);
    }
    set(b, "m16", m);
    set(b, "empty_a", value_new_array());
    set(b, "empty_m", value_new_map());
    rc |= write_seed("every-kind", &env);

    /* A body ENVELOPE_MAX_DEPTH deep: the body and 15 levels below. */
    env = fixed("test.deep");
    m = value_new_int(1);
    for (int i = ENVELOPE_MAX_DEPTH - 1; i > 0; i--) {
        value_t *c = i % 2 ? value_new_array() : value_new_map();

        if (i % 2)
            value_push_take(c, &m);
        else
            value_set_take(c, "d", &m);
        m = c;
    }
    set(envelope_body(env), "d", m);
    rc |= write_seed("depth-limit", &env);

    rc |= write_raw("long-formats", long_formats, sizeof(long_formats) - 1);
    return rc;
}
