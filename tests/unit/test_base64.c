/*
 * test_base64.c - lib/base64.h: the strict decoder against a table of
 * canonical and non-canonical texts in both forms, the encoder against
 * OpenSSL's EVP_EncodeBlock (an independent implementation) for every
 * length up to 64, round trips, and output buffers that are too small.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <openssl/evp.h>

#include "lib/base64.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

struct b64_row {
    const char *label;
    const char *in;
    enum base64_form form;
    long want; /* bytes, or -1 */
    const char *bytes;
};

#define P BASE64_PADDED
#define U BASE64_UNPADDED

static const struct b64_row b64_rows[] = {
    {"empty", "", P, 0, ""},
    {"one byte", "QQ==", P, 1, "A"},
    {"two bytes", "QUI=", P, 2, "AB"},
    {"three bytes", "QUJD", P, 3, "ABC"},
    {"all of the alphabet's tail", "+/+/", P, 3, "\xfb\xff\xbf"},
    {"a NUL byte", "AA==", P, 1, ""},
    {"no padding", "QQ", P, -1, NULL},
    {"short padding", "QQ=", P, -1, NULL},
    {"three pads", "Q===", P, -1, NULL},
    {"four pads", "====", P, -1, NULL},
    {"pad in the middle", "QQ==QUJD", P, -1, NULL},
    {"pad inside a group", "Q=Q=", P, -1, NULL},
    {"unused bits set", "QR==", P, -1, NULL},
    {"unused bits set, one pad", "QUJ=", P, -1, NULL},
    {"space", "QU JD", P, -1, NULL},
    {"newline", "QUJD\n", P, -1, NULL},
    {"url alphabet", "-_-_", P, -1, NULL},
    {"garbage", "!!!!", P, -1, NULL},
    {"unpadded empty", "", U, 0, ""},
    {"unpadded one byte", "QQ", U, 1, "A"},
    {"unpadded two bytes", "QUI", U, 2, "AB"},
    {"unpadded three bytes", "QUJD", U, 3, "ABC"},
    {"unpadded four bytes", "QUJDRA", U, 4, "ABCD"},
    {"unpadded given padding", "QQ==", U, -1, NULL},
    {"unpadded one character over", "QUJDR", U, -1, NULL},
    {"unpadded unused bits set", "QR", U, -1, NULL},
    {"unpadded unused bits set, three", "QUJ", U, -1, NULL},
    {"unpadded garbage", "QU*D", U, -1, NULL},
};

START_TEST(test_decode_table)
{
    const struct b64_row *row = &b64_rows[_i];
    unsigned char out[64];
    long n =
        base64_decode(row->in, strlen(row->in), out, sizeof(out), row->form);

    ck_assert_msg(n == row->want, "%s: got %ld, want %ld", row->label, n,
                  row->want);
    if (n > 0)
        ck_assert_msg(memcmp(out, row->bytes, (size_t)n) == 0,
                      "%s: wrong bytes", row->label);
}
END_TEST

/* Every length 0..64 of pseudo-random bytes: the padded text is what
 * OpenSSL writes, the unpadded one is it without "=", both decode back,
 * and base64_encoded_len() is the length written. */
START_TEST(test_encode_round_trip)
{
    uint32_t seed = 0x5a3c0b64u;

    for (size_t n = 0; n <= 64; n++) {
        unsigned char in[64], back[64];
        char ours[100], theirs[100];
        size_t want_len;

        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            in[i] = (unsigned char)(seed >> 16);
        }
        EVP_EncodeBlock((unsigned char *)theirs, in, (int)n);
        base64_encode(in, n, ours, BASE64_PADDED);
        ck_assert_str_eq(ours, theirs);
        ck_assert_uint_eq(strlen(ours), base64_encoded_len(n, BASE64_PADDED));
        ck_assert_int_eq(base64_decode(ours, strlen(ours), back, sizeof(back),
                                       BASE64_PADDED),
                         (long)n);
        ck_assert(memcmp(back, in, n) == 0);

        theirs[strcspn(theirs, "=")] = '\0';
        base64_encode(in, n, ours, BASE64_UNPADDED);
        ck_assert_str_eq(ours, theirs);
        want_len = base64_encoded_len(n, BASE64_UNPADDED);
        ck_assert_uint_eq(strlen(ours), want_len);
        ck_assert_int_eq(base64_decode(ours, strlen(ours), back, sizeof(back),
                                       BASE64_UNPADDED),
                         (long)n);
        ck_assert(memcmp(back, in, n) == 0);
    }
}
END_TEST

/* A buffer one byte short is refused, never overrun; the exact size fits. */
START_TEST(test_decode_small_buffer)
{
    unsigned char out[4] = {0, 0, 0, 0x77};

    ck_assert_int_eq(base64_decode("QUJD", 4, out, 2, BASE64_PADDED), -1);
    ck_assert_int_eq(out[2], 0);
    ck_assert_int_eq(out[3], 0x77);
    ck_assert_int_eq(base64_decode("QUJD", 4, out, 3, BASE64_PADDED), 3);
    ck_assert(memcmp(out, "ABC\x77", 4) == 0);
    ck_assert_int_eq(base64_decode("QUI", 3, out, 1, BASE64_UNPADDED), -1);
    ck_assert_int_eq(base64_decode("", 0, out, 0, BASE64_PADDED), 0);
}
END_TEST

/* The digit table, with its 64th character chosen: '/' (RFC 4648) or
 * ',' (IMAP's modified base64, RFC 3501 5.1.3). */
START_TEST(test_digit)
{
    ck_assert_int_eq(base64_digit('A', '/'), 0);
    ck_assert_int_eq(base64_digit('z', '/'), 51);
    ck_assert_int_eq(base64_digit('9', ','), 61);
    ck_assert_int_eq(base64_digit('+', ','), 62);
    ck_assert_int_eq(base64_digit('/', '/'), 63);
    ck_assert_int_eq(base64_digit(',', ','), 63);
    ck_assert_int_eq(base64_digit('/', ','), -1);
    ck_assert_int_eq(base64_digit(',', '/'), -1);
    ck_assert_int_eq(base64_digit('=', '/'), -1);
    ck_assert_int_eq(base64_digit('\0', '/'), -1);
}
END_TEST

static Suite *
base64_suite(void)
{
    Suite *s = suite_create("base64");
    TCase *tc = tcase_create("base64");

    tcase_add_loop_test(tc, test_decode_table, 0, NROWS(b64_rows));
    tcase_add_test(tc, test_encode_round_trip);
    tcase_add_test(tc, test_decode_small_buffer);
    tcase_add_test(tc, test_digit);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(base64_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
