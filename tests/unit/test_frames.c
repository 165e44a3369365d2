/*
 * test_frames.c - routing headers and batches (bus/frames.h).
 *
 * Records go through batch_add() and come back through batch_next() with
 * every field and envelope intact, at the limits (HDR_MAX, HDR_FIELDS,
 * BATCH_ENV_MAX) and one past them; batch_add() refuses what a batch cannot
 * take (BATCH_SEND_RECORDS, BATCH_BYTES) and leaves the batch as it was;
 * batch_next() refuses each kind of malformed record, built here by hand
 * from the header comment's layout so that the reader is not checked
 * against the writer alone. batch_send() is checked over real ZeroMQ
 * sockets: nothing for an empty batch, a lone message for one record, the
 * BATCH header and one frame for more, with a routing identity first when
 * a ROUTER sends.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <zmq.h>

#include "bus/frames.h"
#include "bus/proto.h"
#include "lib/err.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

/* Helpers. */

/* A record as the test means it: fields and an envelope. */
struct rec {
    int n;
    const char *f[HDR_FIELDS + 1];
    size_t len[HDR_FIELDS + 1];
    const void *env;
    size_t envlen;
};

static char big_field[HDR_MAX + 2];     /* 'h' * (HDR_MAX + 1), NUL */
static unsigned char big_env[BATCH_ENV_MAX + 1]; /* a byte pattern */

static void
fill_buffers(void)
{
    memset(big_field, 'h', HDR_MAX + 1);
    big_field[HDR_MAX + 1] = '\0';
    for (size_t i = 0; i < sizeof(big_env); i++)
        big_env[i] = (unsigned char)(i * 7 + i / 251);
}

/* Appends v as 4 bytes, big-endian: the layout the header comment gives,
 * written here on its own so that a reader bug is not masked by the same
 * bug in the writer. */
static size_t
put_be32(unsigned char *p, size_t at, uint32_t v)
{
    p[at] = (unsigned char)(v >> 24);
    p[at + 1] = (unsigned char)(v >> 16);
    p[at + 2] = (unsigned char)(v >> 8);
    p[at + 3] = (unsigned char)v;
    return at + 4;
}

static size_t
put_bytes(unsigned char *p, size_t at, const void *s, size_t n)
{
    if (n > 0)
        memcpy(p + at, s, n);
    return at + n;
}

/* A whole record by hand: header text (hl bytes) and envelope. */
static size_t
put_record(unsigned char *p, size_t at, const char *hdr, size_t hl,
           const void *env, size_t el)
{
    at = put_be32(p, at, (uint32_t)hl);
    at = put_bytes(p, at, hdr, hl);
    at = put_be32(p, at, (uint32_t)el);
    return put_bytes(p, at, env, el);
}

static void
check_record(const char *label, int i, const struct rec *r,
             const struct hdr *h, const void *env, size_t envlen)
{
    int want_n = r->n == 0 ? 1 : r->n; /* no fields reads as one empty */

    ck_assert_msg(h->n == want_n, "%s: record %d: %d fields, want %d", label,
                  i, h->n, want_n);
    for (int k = 0; k < r->n; k++) {
        ck_assert_msg(h->len[k] == r->len[k] &&
                          memcmp(h->f[k], r->f[k], r->len[k]) == 0 &&
                          h->f[k][h->len[k]] == '\0',
                      "%s: record %d: field %d differs (len %zu, want %zu)",
                      label, i, k, h->len[k], r->len[k]);
    }
    ck_assert_msg(envlen == r->envlen, "%s: record %d: envelope of %zu bytes,"
                  " want %zu", label, i, envlen, r->envlen);
    ck_assert_msg(envlen == 0 || memcmp(env, r->env, envlen) == 0,
                  "%s: record %d: envelope bytes differ", label, i);
}

/* Reads every record of data, checking them against want[0..n). */
static void
check_batch(const char *label, const void *data, size_t len,
            const struct rec *want, int n)
{
    static struct hdr h;
    size_t pos = 0, last;
    int count = 0, rc;
    const void *env;
    size_t envlen;

    for (int i = 0; i < n; i++) {
        last = pos;
        rc = batch_next(data, len, &pos, &count, &h, &env, &envlen);
        ck_assert_msg(rc == 1, "%s: record %d: batch_next returned %d",
                      label, i, rc);
        ck_assert_msg(pos > last && pos <= len, "%s: record %d: pos %zu "
                      "after %zu (len %zu)", label, i, pos, last, len);
        ck_assert_msg((const char *)env >= (const char *)data &&
                          (const char *)env + envlen <=
                              (const char *)data + len,
                      "%s: record %d: envelope outside the data", label, i);
        check_record(label, i, &want[i], &h, env, envlen);
    }
    ck_assert_msg(count == n, "%s: count %d, want %d", label, count, n);
    rc = batch_next(data, len, &pos, &count, &h, &env, &envlen);
    ck_assert_msg(rc == 0 && pos == len, "%s: at the end: batch_next "
                  "returned %d, pos %zu of %zu", label, rc, pos, len);
}

static bool
add_rec(struct batch *b, const struct rec *r)
{
    return batch_add(b, r->n, r->f, r->len, r->env, r->envlen);
}

/* hdr_parse_mem. */

START_TEST(test_hdr_parse_mem)
{
    static struct hdr h;
    char six[] = "a\0bb\0\0ccc\0d\0e";       /* 6 fields, one empty */
    char seven[] = "a\0b\0c\0d\0e\0f\0g";     /* 7 fields */
    char trailing[] = "W2\0READY\0";          /* a last, empty field */

    ck_assert_int_eq(hdr_parse_mem("", 0, &h), 1);
    ck_assert_msg(h.n == 1 && h.len[0] == 0 && h.f[0][0] == '\0',
                  "empty header: n %d, len %zu", h.n, h.len[0]);

    ck_assert_int_eq(hdr_parse_mem("C2\0BATCH", 8, &h), 2);
    ck_assert(hdr_is(&h, 0, PROTO_CLIENT) && hdr_is(&h, 1, PROTO_BATCH));
    ck_assert(!hdr_is(&h, 2, "") && !hdr_is(&h, 1, "BATC"));

    ck_assert_int_eq(hdr_parse_mem(six, sizeof(six) - 1, &h), HDR_FIELDS);
    ck_assert_msg(h.len[0] == 1 && h.len[1] == 2 && h.len[2] == 0 &&
                      h.len[3] == 3 && strcmp(h.f[3], "ccc") == 0 &&
                      strcmp(h.f[5], "e") == 0,
                  "six fields: lengths %zu %zu %zu %zu", h.len[0], h.len[1],
                  h.len[2], h.len[3]);

    ck_assert_int_eq(hdr_parse_mem(seven, sizeof(seven) - 1, &h), -1);
    ck_assert_int_eq(hdr_parse_mem(trailing, sizeof(trailing) - 1, &h), 3);
    ck_assert_msg(h.len[2] == 0, "trailing NUL: last field of %zu bytes",
                  h.len[2]);

    /* The bytes are copied: the header outlives its source. */
    {
        char src[] = "x\0yz";

        ck_assert_int_eq(hdr_parse_mem(src, 4, &h), 2);
        memset(src, '!', sizeof(src));
        ck_assert(hdr_is(&h, 0, "x") && hdr_is(&h, 1, "yz"));
    }

    ck_assert_int_eq(hdr_parse_mem(big_field, HDR_MAX, &h), 1);
    ck_assert_msg(h.len[0] == HDR_MAX && h.f[0][HDR_MAX] == '\0',
                  "HDR_MAX header: field of %zu bytes", h.len[0]);
    ck_assert_int_eq(hdr_parse_mem(big_field, HDR_MAX + 1, &h), -1);
}
END_TEST

/* Round trips. */

START_TEST(test_round_trip)
{
    static char f255[256], f256[257], f1000[1001], six_max[HDR_MAX];
    static unsigned char nuls[300];
    struct batch b = {0};
    struct rec r[12];
    int n = 0;
    size_t each = (HDR_MAX - (HDR_FIELDS - 1)) / HDR_FIELDS;

    memset(f255, 'a', 255);
    memset(f256, 'b', 256);
    memset(f1000, 'c', 1000);
    memset(six_max, 's', sizeof(six_max));
    for (size_t i = 0; i < sizeof(nuls); i++)
        nuls[i] = (unsigned char)(i % 3 ? 0 : i); /* NULs in an envelope */

    /* Built as C strings (lens NULL) below; listed with their lengths. */
    r[n++] = (struct rec){2, {"C2", "PING"}, {2, 4}, NULL, 0};
    r[n++] = (struct rec){1, {""}, {0}, "x", 1};
    r[n++] = (struct rec){3, {"W2", "", "REPLY"}, {2, 0, 5}, nuls,
                          sizeof(nuls)};
    r[n++] = (struct rec){2, {f255, f256}, {255, 256}, big_env, 100};
    r[n++] = (struct rec){1, {f1000}, {1000}, big_env, BATCH_ENV_MAX};
    /* HDR_FIELDS fields whose joined text is exactly HDR_MAX bytes. */
    r[n] = (struct rec){HDR_FIELDS, {0}, {0}, "", 0};
    for (int k = 0; k < HDR_FIELDS; k++) {
        r[n].f[k] = six_max;
        r[n].len[k] = each;
    }
    r[n].len[HDR_FIELDS - 1] = HDR_MAX - (HDR_FIELDS - 1) -
                               each * (HDR_FIELDS - 1);
    n++;
    /* One field of exactly HDR_MAX bytes. */
    r[n++] = (struct rec){1, {big_field}, {HDR_MAX}, big_env + 1, 4096};
    r[n++] = (struct rec){2, {"a", "b"}, {1, 1}, big_env, 0};

    for (int i = 0; i < n; i++)
        ck_assert_msg(add_rec(&b, &r[i]), "round trip: batch_add refused "
                      "record %d", i);
    ck_assert_int_eq(b.n, n);
    check_batch("round trip", b.buf, b.len, r, n);

    /* The layout of the first record, byte by byte. */
    ck_assert_msg(b.len > 16 && memcmp(b.buf, "\0\0\0\7C2\0PING\0\0\0\0", 15) == 0,
                  "round trip: first record is not [len 7][C2 NUL PING]"
                  "[len 0]");

    /* C strings (lens NULL) give the same bytes as explicit lengths. */
    {
        struct batch c = {0};
        const char *f[] = {"W2", "", "REPLY"};

        ck_assert(batch_add(&c, 3, f, NULL, nuls, sizeof(nuls)));
        check_batch("C strings", c.buf, c.len, &r[2], 1);
        batch_free(&c);
    }

    /* No fields at all, or more than HDR_FIELDS: refused, since the
     * reader would read no fields as one empty one, and refuse more than
     * HDR_FIELDS with the whole batch. */
    batch_reset(&b);
    ck_assert_int_eq(b.n, 0);
    ck_assert_int_eq((int)b.len, 0);
    {
        struct rec none = {0, {0}, {0}, "e", 1};
        const char *seven[HDR_FIELDS + 1] = {"W2", "ERR", "00aa", "1",
                                             "NOTFOUND", "text", "extra"};

        ck_assert(!add_rec(&b, &none));
        ck_assert(!batch_add(&b, HDR_FIELDS + 1, seven, NULL, NULL, 0));
        ck_assert_int_eq(b.n, 0);
        ck_assert_int_eq((int)b.len, 0);
    }
    batch_free(&b);
    ck_assert(b.buf == NULL && b.n == 0 && b.len == 0 && b.cap == 0);
}
END_TEST

/* What batch_add refuses, leaving the batch as it was. */

START_TEST(test_add_refusals)
{
    struct batch b = {0};
    const char *hfields[2] = {big_field, big_field};
    size_t hlens[2] = {HDR_MAX / 2, HDR_MAX - HDR_MAX / 2}; /* +1 for NUL */
    size_t one_over = HDR_MAX + 1;
    const char *one = "x";
    size_t before_len;

    /* Even an empty batch refuses these. */
    ck_assert_msg(!batch_add(&b, 1, hfields, &one_over, NULL, 0),
                  "a header of HDR_MAX + 1 bytes was taken");
    ck_assert_msg(!batch_add(&b, 2, hfields, hlens, NULL, 0),
                  "two fields joined to HDR_MAX + 1 bytes were taken");
    ck_assert_msg(!batch_add(&b, 1, &one, NULL, big_env, BATCH_ENV_MAX + 1),
                  "an envelope of BATCH_ENV_MAX + 1 bytes was taken");
    ck_assert_msg(b.n == 0 && b.len == 0, "refused records left %d records,"
                  " %zu bytes", b.n, b.len);
    /* And a non-empty one too, unchanged. */
    ck_assert(batch_add(&b, 1, &one, NULL, "e", 1));
    before_len = b.len;
    ck_assert(!batch_add(&b, 1, &one, NULL, big_env, BATCH_ENV_MAX + 1));
    ck_assert(!batch_add(&b, 1, hfields, &one_over, NULL, 0));
    ck_assert_msg(b.n == 1 && b.len == before_len,
                  "refusals changed the batch: %d records, %zu bytes", b.n,
                  b.len);

    /* BATCH_SEND_RECORDS small records, then no more. */
    batch_reset(&b);
    for (int i = 0; i < BATCH_SEND_RECORDS; i++)
        ck_assert_msg(batch_add(&b, 1, &one, NULL, "e", 1),
                      "small record %d refused", i);
    before_len = b.len;
    ck_assert_msg(!batch_add(&b, 1, &one, NULL, NULL, 0),
                  "record %d of a batch of BATCH_SEND_RECORDS taken",
                  BATCH_SEND_RECORDS + 1);
    ck_assert_msg(b.n == BATCH_SEND_RECORDS && b.len == before_len,
                  "the refusal changed the batch");
    batch_reset(&b);
    ck_assert(batch_add(&b, 1, &one, NULL, NULL, 0));

    /* Big records until BATCH_BYTES: refused exactly when the frame would
     * pass it, before the record count is reached (checked, so that a change
     * of the limits that makes this test moot shows). */
    batch_reset(&b);
    {
        size_t need = 8 + 1 + BATCH_ENV_MAX;
        bool refused = false;
        int added = 0;

        while (!refused) {
            bool fits = b.n == 0 || (b.n < BATCH_SEND_RECORDS &&
                                     b.len + need <= BATCH_BYTES);

            before_len = b.len;
            refused = !batch_add(&b, 1, &one, NULL, big_env, BATCH_ENV_MAX);
            ck_assert_msg(refused == !fits, "big record %d: batch_add %s it "
                          "at %zu bytes", added, refused ? "refused" : "took",
                          before_len);
            added += !refused;
        }
        ck_assert_msg(added < BATCH_SEND_RECORDS,
                      "BATCH_BYTES never reached: %d big records fit", added);
        ck_assert_msg(b.n == added && b.len == before_len &&
                          b.len <= BATCH_BYTES,
                      "the refusal changed the batch");
        /* A small record still fits in what is left. */
        ck_assert_msg(b.len + 9 <= BATCH_BYTES &&
                          batch_add(&b, 1, &one, NULL, NULL, 0),
                      "a small record did not fit after the big ones");
        /* An empty batch takes the big one. */
        batch_reset(&b);
        ck_assert(batch_add(&b, 1, &one, NULL, big_env, BATCH_ENV_MAX));
        ck_assert_int_eq(b.n, 1);
    }
    batch_free(&b);
}
END_TEST

/* batch_next on bytes built by hand. */

enum bad {
    BAD_PREFIX1,
    BAD_PREFIX3,
    BAD_HDR_PAST_END,
    BAD_HDR_OVER_MAX,
    BAD_HDR_HUGE,
    BAD_NO_ENV_LEN,
    BAD_ENV_LEN_SHORT,
    BAD_ENV_PAST_END,
    BAD_ENV_OVER_MAX,
    BAD_ENV_HUGE,
    BAD_FIELDS,
};

static const struct bad_row {
    const char *label;
    enum bad kind;
} bad_rows[] = {
    {"one byte of a length", BAD_PREFIX1},
    {"three bytes of a length", BAD_PREFIX3},
    {"header length past the end", BAD_HDR_PAST_END},
    {"header length HDR_MAX + 1, all there", BAD_HDR_OVER_MAX},
    {"header length 0xffffffff", BAD_HDR_HUGE},
    {"no envelope length", BAD_NO_ENV_LEN},
    {"two bytes of the envelope length", BAD_ENV_LEN_SHORT},
    {"envelope length past the end", BAD_ENV_PAST_END},
    {"envelope length BATCH_ENV_MAX + 1, all there", BAD_ENV_OVER_MAX},
    {"envelope length 0xffffffff", BAD_ENV_HUGE},
    {"header of HDR_FIELDS + 1 fields", BAD_FIELDS},
};

START_TEST(test_next_malformed)
{
    const struct bad_row *r = &bad_rows[_i];
    static unsigned char buf[2 * (HDR_MAX + BATCH_ENV_MAX) + 64];
    static struct hdr h;
    size_t at, len, pos = 0, first;
    int count = 0, rc;
    const void *env;
    size_t envlen;

    /* One good record first: the bad one is found at its own offset. */
    at = put_record(buf, 0, "C2\0OK", 5, "env", 3);
    first = at;
    switch (r->kind) {
    case BAD_PREFIX1:
        buf[at++] = 0;
        break;
    case BAD_PREFIX3:
        at = put_bytes(buf, at, "\0\0\0", 3);
        break;
    case BAD_HDR_PAST_END:
        at = put_be32(buf, at, 10);
        at = put_bytes(buf, at, "C2\0PI", 5);
        break;
    case BAD_HDR_OVER_MAX:
        at = put_record(buf, at, big_field, HDR_MAX + 1, NULL, 0);
        break;
    case BAD_HDR_HUGE:
        at = put_be32(buf, at, 0xffffffffu);
        at = put_bytes(buf, at, "C2\0PING\0\0\0\0", 11);
        break;
    case BAD_NO_ENV_LEN:
        at = put_be32(buf, at, 4);
        at = put_bytes(buf, at, "C2\0X", 4);
        break;
    case BAD_ENV_LEN_SHORT:
        at = put_be32(buf, at, 4);
        at = put_bytes(buf, at, "C2\0X\0\0", 6);
        break;
    case BAD_ENV_PAST_END:
        at = put_be32(buf, at, 4);
        at = put_bytes(buf, at, "C2\0X", 4);
        at = put_be32(buf, at, 5);
        at = put_bytes(buf, at, "abcd", 4);
        break;
    case BAD_ENV_OVER_MAX:
        at = put_record(buf, at, "C2\0X", 4, big_env, BATCH_ENV_MAX + 1);
        break;
    case BAD_ENV_HUGE:
        at = put_be32(buf, at, 4);
        at = put_bytes(buf, at, "C2\0X", 4);
        at = put_be32(buf, at, 0xffffffffu);
        at = put_bytes(buf, at, "abcd", 4);
        break;
    case BAD_FIELDS:
        at = put_record(buf, at, "a\0b\0c\0d\0e\0f\0g", 13, "e", 1);
        break;
    }
    len = at;

    rc = batch_next(buf, len, &pos, &count, &h, &env, &envlen);
    ck_assert_msg(rc == 1 && pos == first && count == 1 && h.n == 2 &&
                      envlen == 3 && memcmp(env, "env", 3) == 0,
                  "%s: the good record first: rc %d, pos %zu", r->label, rc,
                  pos);
    rc = batch_next(buf, len, &pos, &count, &h, &env, &envlen);
    ck_assert_msg(rc == -1, "%s: batch_next returned %d, want -1", r->label,
                  rc);
    /* The same bytes alone, as the first record, are refused as well. */
    pos = 0;
    count = 0;
    rc = batch_next(buf + first, len - first, &pos, &count, &h, &env,
                    &envlen);
    ck_assert_msg(rc == -1, "%s (alone): batch_next returned %d, want -1",
                  r->label, rc);
}
END_TEST

/* The limits themselves are accepted; the end is 0, not -1. */
START_TEST(test_next_limits)
{
    static unsigned char buf[HDR_MAX + BATCH_ENV_MAX + 64];
    static struct hdr h;
    size_t len, pos = 0;
    int count = 0, rc;
    const void *env;
    size_t envlen;

    len = put_record(buf, 0, big_field, HDR_MAX, big_env, BATCH_ENV_MAX);
    rc = batch_next(buf, len, &pos, &count, &h, &env, &envlen);
    ck_assert_msg(rc == 1 && pos == len && envlen == BATCH_ENV_MAX &&
                      h.n == 1 && h.len[0] == HDR_MAX &&
                      memcmp(env, big_env, BATCH_ENV_MAX) == 0,
                  "HDR_MAX header and BATCH_ENV_MAX envelope: rc %d", rc);
    rc = batch_next(buf, len, &pos, &count, &h, &env, &envlen);
    ck_assert_msg(rc == 0 && pos == len && count == 1,
                  "at the exact end: rc %d, pos %zu, count %d", rc, pos,
                  count);

    /* HDR_FIELDS fields, and an empty frame. */
    pos = 0;
    count = 0;
    len = put_record(buf, 0, "a\0b\0c\0d\0e\0f", 11, NULL, 0);
    rc = batch_next(buf, len, &pos, &count, &h, &env, &envlen);
    ck_assert_msg(rc == 1 && h.n == HDR_FIELDS && envlen == 0,
                  "HDR_FIELDS fields: rc %d, n %d", rc, h.n);
    pos = 0;
    ck_assert_int_eq(batch_next(buf, 0, &pos, &count, &h, &env, &envlen), 0);
    /* pos already past the end is the end, too. */
    pos = len + 1;
    ck_assert_int_eq(batch_next(buf, len, &pos, &count, &h, &env, &envlen),
                     0);
}
END_TEST

/* BATCH_RECORDS_MAX: the reader takes that many, kept in *count across
 * calls, and refuses one more. */
START_TEST(test_next_count)
{
    static unsigned char buf[(BATCH_RECORDS_MAX + 2) * 8];
    static struct hdr h;
    size_t len = 0, pos = 0;
    int count = 0, rc = 1, got = 0;
    const void *env;
    size_t envlen;

    for (int i = 0; i < BATCH_RECORDS_MAX + 1; i++)
        len = put_record(buf, len, "", 0, NULL, 0);
    while ((rc = batch_next(buf, len, &pos, &count, &h, &env, &envlen)) == 1)
        got++;
    ck_assert_msg(rc == -1 && got == BATCH_RECORDS_MAX &&
                      count == BATCH_RECORDS_MAX,
                  "read %d records (count %d), then %d; want %d, then -1",
                  got, count, rc, BATCH_RECORDS_MAX);

    /* A caller starting count elsewhere gets what is left. */
    pos = 0;
    count = BATCH_RECORDS_MAX - 1;
    ck_assert_int_eq(batch_next(buf, len, &pos, &count, &h, &env, &envlen),
                     1);
    ck_assert_int_eq(count, BATCH_RECORDS_MAX);
    ck_assert_int_eq(batch_next(buf, len, &pos, &count, &h, &env, &envlen),
                     -1);
}
END_TEST

/* batch_send over ZeroMQ. */

#define MAXF 8

struct msg {
    int n;
    zmq_msg_t f[MAXF];
};

/* Receives one whole message, waiting up to 2 s. */
static void
recv_msg(const char *label, void *sock, struct msg *m)
{
    int more = 1;

    m->n = 0;
    while (more) {
        ck_assert_msg(m->n < MAXF, "%s: more than %d frames", label, MAXF);
        zmq_msg_init(&m->f[m->n]);
        ck_assert_msg(zmq_msg_recv(&m->f[m->n], sock, 0) >= 0,
                      "%s: recv: %s", label, zmq_strerror(errno));
        more = zmq_msg_more(&m->f[m->n]);
        m->n++;
    }
}

static void
close_msg(struct msg *m)
{
    for (int i = 0; i < m->n; i++)
        zmq_msg_close(&m->f[i]);
    m->n = 0;
}

static void
check_frame(const char *label, struct msg *m, int i, const void *p,
            size_t len)
{
    ck_assert_msg(i < m->n, "%s: no frame %d (%d frames)", label, i, m->n);
    ck_assert_msg(zmq_msg_size(&m->f[i]) == len &&
                      memcmp(zmq_msg_data(&m->f[i]), p, len) == 0,
                  "%s: frame %d: %zu bytes, want %zu", label, i,
                  zmq_msg_size(&m->f[i]), len);
}

struct zpeers {
    void *ctx, *a, *b;
};

static void
peers_open(struct zpeers *z, int ta, int tb, const char *name,
           const char *b_id)
{
    int timeout = 2000, zero = 0;
    char ep[128];
    size_t eplen = sizeof(ep);

    z->ctx = zmq_ctx_new();
    z->a = zmq_socket(z->ctx, ta);
    z->b = zmq_socket(z->ctx, tb);
    ck_assert_msg(z->ctx && z->a && z->b, "zmq: %s", zmq_strerror(errno));
    zmq_setsockopt(z->a, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    zmq_setsockopt(z->b, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    zmq_setsockopt(z->a, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(z->b, ZMQ_LINGER, &zero, sizeof(zero));
    if (b_id != NULL)
        zmq_setsockopt(z->b, ZMQ_ROUTING_ID, b_id, strlen(b_id));
    ck_assert_msg(zmq_bind(z->a, name) == 0, "bind %s: %s", name,
                  zmq_strerror(errno));
    /* The bound endpoint: tcp://127.0.0.1:* gets its port here. */
    ck_assert_int_eq(zmq_getsockopt(z->a, ZMQ_LAST_ENDPOINT, ep, &eplen), 0);
    ck_assert_msg(zmq_connect(z->b, ep) == 0, "connect %s: %s", ep,
                  zmq_strerror(errno));
}

static void
peers_close(struct zpeers *z)
{
    zmq_close(z->a);
    zmq_close(z->b);
    zmq_ctx_term(z->ctx);
}

/* Three records for the batch cases. */
static void
three_records(struct rec *r)
{
    r[0] = (struct rec){2, {PROTO_CLIENT, "ONE"}, {2, 3}, "first", 5};
    r[1] = (struct rec){3, {PROTO_CLIENT, "TWO", "id-2"}, {2, 3, 4}, NULL,
                        0};
    r[2] = (struct rec){2, {PROTO_CLIENT, "THREE"}, {2, 5}, big_env,
                        BATCH_ENV_MAX};
}

static void
check_batch_msg(const char *label, struct msg *m, int at, const char *proto,
                const struct rec *r, int n)
{
    char hdr[64];
    int hl = snprintf(hdr, sizeof(hdr), "%s%c%s", proto, 0, PROTO_BATCH);

    ck_assert_msg(m->n == at + 2, "%s: %d frames, want %d", label, m->n,
                  at + 2);
    check_frame(label, m, at, hdr, (size_t)hl);
    check_batch(label, zmq_msg_data(&m->f[at + 1]),
                zmq_msg_size(&m->f[at + 1]), r, n);
}

START_TEST(test_send_pair)
{
    struct zpeers z;
    struct batch b = {0};
    struct msg m;
    struct rec r[3];

    three_records(r);
    peers_open(&z, ZMQ_PAIR, ZMQ_PAIR, "inproc://frames-pair", NULL);

    /* Nothing for an empty batch: the marker sent after it comes first. */
    ck_assert_int_eq(batch_send(z.a, NULL, 0, PROTO_CLIENT, &b), 0);
    ck_assert_int_eq(zmq_send(z.a, "marker", 6, 0), 6);
    recv_msg("empty batch", z.b, &m);
    ck_assert_int_eq(m.n, 1);
    check_frame("empty batch", &m, 0, "marker", 6);
    close_msg(&m);

    /* One record: its own header and envelope frames. */
    ck_assert(add_rec(&b, &r[0]));
    ck_assert_int_eq(batch_send(z.a, NULL, 0, PROTO_CLIENT, &b), 0);
    ck_assert_msg(b.n == 0 && b.len == 0, "sent batch not emptied");
    recv_msg("one record", z.b, &m);
    ck_assert_int_eq(m.n, 2);
    check_frame("one record", &m, 0, "C2\0ONE", 6);
    check_frame("one record", &m, 1, "first", 5);
    close_msg(&m);

    /* One record without an envelope: no envelope frame. */
    ck_assert(add_rec(&b, &r[1]));
    ck_assert_int_eq(batch_send(z.a, NULL, 0, PROTO_CLIENT, &b), 0);
    recv_msg("one record, no envelope", z.b, &m);
    ck_assert_msg(m.n == 1, "one record, no envelope: %d frames", m.n);
    check_frame("one record, no envelope", &m, 0, "C2\0TWO\0id-2", 11);
    close_msg(&m);

    /* Several: the BATCH header, then one frame of the records. */
    for (int i = 0; i < 3; i++)
        ck_assert(add_rec(&b, &r[i]));
    ck_assert_int_eq(batch_send(z.a, NULL, 0, PROTO_CLIENT, &b), 0);
    ck_assert_msg(b.n == 0 && b.len == 0, "sent batch not emptied");
    recv_msg("three records", z.b, &m);
    check_batch_msg("three records", &m, 0, PROTO_CLIENT, r, 3);
    close_msg(&m);

    /* The emptied batch is reused: two more, the other way round. */
    ck_assert(add_rec(&b, &r[2]));
    ck_assert(add_rec(&b, &r[0]));
    ck_assert_int_eq(batch_send(z.b, NULL, 0, PROTO_WORKER, &b), 0);
    recv_msg("reused", z.a, &m);
    {
        struct rec back[2] = {r[2], r[0]};

        check_batch_msg("reused", &m, 0, PROTO_WORKER, back, 2);
    }
    close_msg(&m);

    batch_free(&b);
    peers_close(&z);
}
END_TEST

START_TEST(test_send_router)
{
    struct zpeers z;
    struct batch b = {0};
    struct msg m;
    struct rec r[3];
    const char *id = "dealer-7";
    int one = 1;

    three_records(r);
    peers_open(&z, ZMQ_ROUTER, ZMQ_DEALER, "tcp://127.0.0.1:*", id);
    zmq_setsockopt(z.a, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));

    /* The dealer speaks first, so that the router knows its identity: the
     * router sees it before the header. */
    ck_assert(add_rec(&b, &r[0]));
    ck_assert(add_rec(&b, &r[1]));
    ck_assert_int_eq(batch_send(z.b, NULL, 0, PROTO_CLIENT, &b), 0);
    recv_msg("dealer to router", z.a, &m);
    check_frame("dealer to router", &m, 0, id, strlen(id));
    check_batch_msg("dealer to router", &m, 1, PROTO_CLIENT, r, 2);
    close_msg(&m);

    /* The router's batch is routed by the identity, which is not
     * delivered. */
    for (int i = 0; i < 3; i++)
        ck_assert(add_rec(&b, &r[i]));
    ck_assert_int_eq(batch_send(z.a, id, strlen(id), PROTO_WORKER, &b), 0);
    recv_msg("router to dealer", z.b, &m);
    check_batch_msg("router to dealer", &m, 0, PROTO_WORKER, r, 3);
    close_msg(&m);

    /* One record through the router: the lone message form. */
    ck_assert(add_rec(&b, &r[0]));
    ck_assert_int_eq(batch_send(z.a, id, strlen(id), PROTO_WORKER, &b), 0);
    recv_msg("router, one record", z.b, &m);
    ck_assert_int_eq(m.n, 2);
    check_frame("router, one record", &m, 0, "C2\0ONE", 6);
    check_frame("router, one record", &m, 1, "first", 5);
    close_msg(&m);

    /* An unknown identity: ERR_CLOSED, and the batch is kept. */
    ck_assert(add_rec(&b, &r[0]));
    ck_assert(add_rec(&b, &r[1]));
    {
        size_t len = b.len;

        ck_assert_int_eq(batch_send(z.a, "nobody", 6, PROTO_WORKER, &b),
                         ERR_CLOSED);
        ck_assert_msg(b.n == 2 && b.len == len,
                      "unsent batch changed: %d records, %zu bytes", b.n,
                      b.len);
        /* Still sendable to the right peer afterwards. */
        ck_assert_int_eq(batch_send(z.a, id, strlen(id), PROTO_WORKER, &b),
                         0);
        recv_msg("after a refusal", z.b, &m);
        check_batch_msg("after a refusal", &m, 0, PROTO_WORKER, r, 2);
        close_msg(&m);
    }

    batch_free(&b);
    peers_close(&z);
}
END_TEST

static Suite *
frames_suite(void)
{
    Suite *s = suite_create("frames");
    TCase *tc;

    tc = tcase_create("headers");
    tcase_add_unchecked_fixture(tc, fill_buffers, NULL);
    tcase_add_test(tc, test_hdr_parse_mem);
    suite_add_tcase(s, tc);

    tc = tcase_create("batches");
    tcase_add_unchecked_fixture(tc, fill_buffers, NULL);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_add_refusals);
    tcase_add_loop_test(tc, test_next_malformed, 0, NROWS(bad_rows));
    tcase_add_test(tc, test_next_limits);
    tcase_add_test(tc, test_next_count);
    suite_add_tcase(s, tc);

    tc = tcase_create("send");
    tcase_add_unchecked_fixture(tc, fill_buffers, NULL);
    tcase_add_test(tc, test_send_pair);
    tcase_add_test(tc, test_send_router);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(frames_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
