/*
 * fuzz_envelope.c - libFuzzer target for the envelope codec.
 *
 * Whatever the bytes, envelope_decode() must return 0 or one of its
 * documented ERR_* codes, with no envelope on failure, and never crash,
 * leak or allocate by a declared count. What it accepts must pass its own
 * schema check, encode, decode again to an equal envelope, encode again to
 * the very same bytes (the encoding is canonical), copy equal, and print
 * as valid JSON under every flag.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/envelope.h"
#include "bus/value.h"
#include "lib/err.h"
#include "tests/unit/json_check.h"

/* The decode limit: the envelope size the target accepts. */
#define FUZZ_MAX ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_envelope: %s: %s\n", what, detail ? detail : "-");
    abort();
}

static bool
documented(int rc)
{
    switch (rc) {
    case ERR_TOO_BIG: case ERR_TRUNCATED: case ERR_MALFORMED:
    case ERR_TRAILING: case ERR_UNSUPPORTED: case ERR_DEPTH: case ERR_KEY:
    case ERR_NOT_MAP: case ERR_VERSION: case ERR_MISSING: case ERR_TYPE:
        return true;
    }
    return false;
}

static bool
same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static void
check_same(const char *what, const envelope_t *a, const envelope_t *b)
{
    if (envelope_version(a) != envelope_version(b) ||
        !same_str(envelope_id(a), envelope_id(b)) ||
        !same_str(envelope_re(a), envelope_re(b)) ||
        !same_str(envelope_trace(a), envelope_trace(b)) ||
        !same_str(envelope_type(a), envelope_type(b)) ||
        !same_str(envelope_from(a), envelope_from(b)) ||
        envelope_ts(a) != envelope_ts(b) ||
        envelope_deadline(a) != envelope_deadline(b) ||
        envelope_type_id(a) != envelope_type_id(b))
        fail(what, "header differs");
    if (!value_equal(envelope_body_peek(a), envelope_body_peek(b)))
        fail(what, "body differs");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    envelope_t *env = (envelope_t *)(uintptr_t)1, *again = NULL, *dup;
    char why[256], *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    int rc;

    rc = envelope_decode(data, size, FUZZ_MAX, &env, why, sizeof(why));
    if (rc != 0) {
        if (env != NULL)
            fail("refused but gave an envelope", why);
        if (!documented(rc))
            fail("undocumented error code", err_name(rc));
        if (why[0] == '\0')
            fail("refused without a reason", err_name(rc));
        return 0;
    }
    if (env == NULL)
        fail("accepted without an envelope", NULL);
    if (envelope_check_body(env, why, sizeof(why)) != 0)
        fail("accepted a body its schema refuses", why);

    /* No limit on the way back: a float32 comes back as a float64. */
    if (envelope_encode(env, &buf, &len) != 0)
        fail("encode failed", NULL);
    rc = envelope_decode(buf, len, SIZE_MAX, &again, why, sizeof(why));
    if (rc != 0)
        fail("its own encoding refused", why);
    check_same("round trip", env, again);
    if (envelope_encode(again, &buf2, &len2) != 0)
        fail("second encode failed", NULL);
    if (len2 != len || memcmp(buf, buf2, len) != 0)
        fail("encoding not canonical", "second encoding differs");

    dup = envelope_dup(env);
    check_same("dup", env, dup);

    for (int flags = 0; flags < 4; flags++) {
        char *json = envelope_to_json(env, flags);

        if (json == NULL || !json_valid(json, strlen(json), why, sizeof(why)))
            fail("invalid JSON", why);
        free(json);
    }
    envelope_destroy(&dup);
    envelope_destroy(&again);
    envelope_destroy(&env);
    free(buf);
    free(buf2);
    return 0;
}
